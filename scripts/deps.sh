#!/usr/bin/env bash
# Installs the Debian packages a gpukit job needs, if any are missing.
#   scripts/deps.sh test|demo|bench
# As root, missing packages are installed with apt-get. Otherwise the exact apt-get line is
# printed and the script exits 1, so `make` stops before a confusing build error.
set -euo pipefail

group=${1:-test}

build_pkgs=(cmake make gcc g++ pkg-config libcmocka-dev libcjson-dev libmicrohttpd-dev libcrypt-dev
    libncurses-dev libopenblas-dev)
test_pkgs=("${build_pkgs[@]}" clang libclang-rt-14-dev clang-format valgrind curl python3 chromium prometheus tmux
    openssl apache2-utils python3-numpy python3-torch python3-pytest python3-venv python3-html5lib)
demo_pkgs=("${build_pkgs[@]}")
bench_pkgs=("${build_pkgs[@]}" libmimalloc-dev libjemalloc-dev python3-psutil curl python3
    prometheus-node-exporter python3-numpy python3-torch time bc)

case "$group" in
test) want=("${test_pkgs[@]}") ;;
demo) want=("${demo_pkgs[@]}") ;;
bench) want=("${bench_pkgs[@]}") ;;
*)
    echo "scripts/deps.sh: unknown group \"$group\" (use test, demo or bench)" >&2
    exit 2
    ;;
esac

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "gpukit needs these Debian packages: ${missing[*]}" >&2
    echo "install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/gpukit-apt.log 2>&1; then
    apt-get update -q >/tmp/gpukit-apt-update.log 2>&1 || true
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/gpukit-apt.log 2>&1; then
        tail -n 20 /tmp/gpukit-apt.log >&2
        echo "deps: apt-get install ${missing[*]} failed (log above)" >&2
        exit 1
    fi
fi
