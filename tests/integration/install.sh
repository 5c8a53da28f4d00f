#!/usr/bin/env bash
# `cmake --install` gives a usable package: headers, shared and static libraries, the tool, a
# pkg-config file and a CMake package config. A small program is built against it both ways.
set -euo pipefail
: "${GK_BINARY_DIR:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$GK_BINARY_DIR" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "install"; }
libdir=$(ls -d "$tmp"/prefix/lib*/ | head -1)
for f in include/gpukit/gpukit.h include/gpukit/device.h bin/gpukit; do
    [ -e "$tmp/prefix/$f" ] || fail "missing $f"
done
ls "$libdir"/libgpukit.so* >/dev/null || fail "no shared library"
[ -e "$libdir/libgpukit.a" ] || fail "no static library"
[ -e "$libdir/pkgconfig/gpukit.pc" ] || fail "no pkg-config file"
[ -e "$libdir/cmake/gpukit/gpukitConfig.cmake" ] || fail "no CMake package config"
"$tmp/prefix/bin/gpukit" --version | grep -q '^gpukit '

cat >"$tmp/app.c" <<'C'
#include <gpukit/gpukit.h>
#include <stdio.h>
int main(void)
{
    gk_device *dev;
    void *p;
    if (gk_device_open("host", &dev) != 0 || gk_device_malloc(dev, 64, &p) != 0)
        return 1;
    gk_device_free(dev, p);
    gk_device_close(dev);
    printf("gpukit %s ok\n", gk_version_string());
    return 0;
}
C
# pkg-config, shared library.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
san=${GK_SAN_FLAGS:-}
# shellcheck disable=SC2046,SC2086
cc -std=c11 $san -o "$tmp/app_pc" "$tmp/app.c" $(pkg-config --cflags --libs gpukit)
LD_LIBRARY_PATH="$libdir" "$tmp/app_pc" | grep -q "ok$" || fail "pkg-config build does not run"
# Only gk_ symbols are exported from the shared library.
if nm -D --defined-only "$libdir"/libgpukit.so | awk '$2 ~ /[TDB]/ {print $3}' | grep -v '^gk_' | grep -q .; then
    nm -D --defined-only "$libdir"/libgpukit.so | awk '$2 ~ /[TDB]/ {print $3}' | grep -v '^gk_' | head
    fail "symbols other than gk_* are exported"
fi

# CMake find_package.
mkdir -p "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.25)
project(app C)
find_package(gpukit REQUIRED)
add_executable(app ../app.c)
target_link_libraries(app PRIVATE gpukit::gpukit)
CM
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_C_FLAGS="$san" >"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; fail "find_package"; }
cmake --build "$tmp/cm/build" >>"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; fail "CMake build"; }
"$tmp/cm/build/app" | grep -q "ok$" || fail "find_package build does not run"
echo "install: ok"
