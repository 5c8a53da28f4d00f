#!/usr/bin/env bash
# `cmake --install` gives a usable package: headers, shared and static libraries, the tool, a
# pkg-config file, a CMake package config and the Python package. A small program is built
# against it both ways, and Debian's python3 imports the installed package, which finds the
# installed library.
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

# The allocator shim beside it, exporting only gpukit/torch.h's functions (its copy of the
# library stays inside), and loadable with no other gpukit library on the search path.
[ -e "$libdir/libgpukit_torch.so" ] || fail "no allocator shim (libgpukit_torch.so)"
[ -e "$tmp/prefix/include/gpukit/torch.h" ] || fail "missing include/gpukit/torch.h"
if nm -D --defined-only "$libdir"/libgpukit_torch.so | awk '$2 ~ /[TDB]/ {print $3}' | grep -v '^gk_torch_' | grep -q .; then
    nm -D --defined-only "$libdir"/libgpukit_torch.so | awk '$2 ~ /[TDB]/ {print $3}' | grep -v '^gk_torch_' | head
    fail "the shim exports symbols other than gk_torch_*"
fi
for sym in gk_torch_malloc gk_torch_free; do
    nm -D --defined-only "$libdir"/libgpukit_torch.so | grep -q " T $sym$" || fail "the shim lacks $sym"
done
ldd "$libdir/libgpukit_torch.so" | grep -q libgpukit.so && fail "the shim needs libgpukit.so at run time"

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
# The Python package, beside the library: /usr/bin/python3 imports it from the prefix (what
# `make install` gives under /usr/local), with no GPUKIT_LIBRARY and outside the checkout.
init=$(find "$tmp/prefix" -path '*/dist-packages/gpukit/__init__.py' | head -1)
[ -n "$init" ] || fail "no Python package under lib/python3.X/dist-packages"
pydir=$(dirname "$(dirname "$init")")
case "$pydir" in "$tmp/prefix/lib/python3."*/dist-packages) ;; *) fail "Python package in $pydir" ;; esac
[ -e "$pydir/gpukit/_install.py" ] || fail "no _install.py beside the package"
[ -e "$pydir/gpukit/torch/memory.py" ] || fail "gpukit.torch not installed"
# shellcheck disable=SC2016
(cd "$tmp" && env -u GPUKIT_LIBRARY PYTHONPATH="$pydir" LD_PRELOAD="${GK_SAN_PRELOAD:-}" \
    ASAN_OPTIONS=detect_leaks=0 /usr/bin/python3 -c '
import os, sys, gpukit
assert gpukit.library_found_by == "installed with the package", gpukit.library_found_by
lib = os.path.realpath(gpukit.library_path)
assert lib.startswith(os.path.realpath(sys.argv[1])), lib
from gpukit import _shim
shim = os.path.realpath(_shim.load().path)
assert shim == os.path.join(os.path.dirname(lib), "libgpukit_torch.so"), shim
print("python", gpukit.__version__, lib)
' "$libdir") >"$tmp/py.log" 2>&1 || { cat "$tmp/py.log"; fail "the installed Python package does not import"; }
grep -q "^python $("$tmp/prefix/bin/gpukit" --version | awk '{print $2}') " "$tmp/py.log" ||
    { cat "$tmp/py.log"; fail "Python package and tool versions differ"; }
# A moved tree still works (the package finds the library relative to itself).
mv "$tmp/prefix" "$tmp/moved"
(cd "$tmp" && env -u GPUKIT_LIBRARY PYTHONPATH="${pydir/$tmp\/prefix/$tmp/moved}" \
    LD_PRELOAD="${GK_SAN_PRELOAD:-}" ASAN_OPTIONS=detect_leaks=0 /usr/bin/python3 -c \
    'import gpukit; print(gpukit.library_path)') >"$tmp/py2.log" 2>&1 ||
    { cat "$tmp/py2.log"; fail "the moved Python package does not import"; }
grep -q "$tmp/moved/" "$tmp/py2.log" || fail "the moved package loaded $(cat "$tmp/py2.log")"
echo "install: ok"
