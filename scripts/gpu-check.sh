#!/usr/bin/env bash
# gpu-check.sh: build gpukit on a machine with an NVIDIA GPU and check it against the real driver.
# Needs no network and installs nothing. With cmocka: a Release build (benchmarks on) in build/gpu,
# the tests labelled gpu (ctest -L gpu), the standalone smoke check, `gpukit info --json`, the
# pool's GPU benchmark (bench/pool/bench_pool_gpu: the pool against cuMemAlloc and
# cuMemAllocAsync), when python3 has torch, the same traces through PyTorch's allocator
# (bench/pool/torch_replay.py, default settings and expandable segments), and
# examples/train_torch.py on cuda:0 through the Python package, the loader feeding CUDA tensors. Without cmocka (or cmake)
# it still builds the library, the tool and the benchmark and runs the smoke check (scripts/
# gpu_smoke.c) against the real driver. Every step is logged and has a time limit; a failing step
# does not stop the others; the exit status is 0 only when all passed. Logs go to
# build/gpu/gpu-check/; when OUT is set the summary is written to "$OUT/summary.txt" as it grows
# and the logs are archived in "$OUT/gpu-check-logs.tar.gz". GK_GPU_CHECK_SECONDS caps the whole
# run (steps past it are skipped and reported). Run from the repository root:
# bash scripts/gpu-check.sh
# GK_GPU_BUILD_DIR overrides the build folder.
#
# cmocka on a machine without it: put the Debian packages in .gpu-deps/ (ignored by git) with
#   mkdir -p .gpu-deps && (cd .gpu-deps && apt-get download libcmocka0 libcmocka-dev)
# on a machine with network, and carry that folder along. The script unpacks every .deb there
# (dpkg -x, or ar + tar without dpkg) into $BUILD/deps and points CMake at the cmocka inside.
# GK_GPU_DEPS names another folder of .deb files.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${GK_GPU_BUILD_DIR:-build/gpu}
LOGS="$BUILD/gpu-check"
JOBS=$(nproc 2>/dev/null || echo 4)
START=$(date +%s)
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.txt"
# With OUT set the summary is written there as it grows, so a run cut short still leaves it.
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && SUMMARY="$OUT/summary.txt"
fi
: >"$SUMMARY"
FAILED=()
SKIPPED=()
# GK_GPU_CHECK_SECONDS: a time budget for the whole script (0: none). Steps that would start past
# it are skipped, and each step's limit is cut to what is left, so the logs always come back.
BUDGET=${GK_GPU_CHECK_SECONDS:-0}

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with a time limit, its output in $LOGS/NAME.log.
step() {
    local name=$1 limit=$2
    shift 2
    local t0 rc
    t0=$(date +%s)
    if [ "$BUDGET" -gt 0 ]; then
        local left=$((BUDGET - (t0 - START)))
        if [ "$left" -le 5 ]; then
            say "== $name: skipped, the time budget of $BUDGET s is spent"
            SKIPPED+=("$name")
            return 1
        fi
        [ "$limit" -gt "$left" ] && limit=$left
    fi
    echo "== $name: $*" | tee -a "$SUMMARY"
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        say "   ok ($(($(date +%s) - t0)) s)"
    else
        [ "$rc" -eq 124 ] && say "   timed out after $limit s"
        say "   FAILED (exit $rc, $(($(date +%s) - t0)) s); last lines of $LOGS/$name.log:"
        tail -n 40 "$LOGS/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
        FAILED+=("$name")
    fi
    return "$rc"
}

finish() {
    say "== total $(($(date +%s) - START)) s"
    [ "${#SKIPPED[@]}" -gt 0 ] && say "gpu-check: skipped for time: ${SKIPPED[*]}"
    if [ "${#FAILED[@]}" -eq 0 ] && [ "${#SKIPPED[@]}" -eq 0 ]; then
        say "gpu-check: all steps passed"
    else
        [ "${#FAILED[@]}" -gt 0 ] && say "gpu-check: FAILED steps: ${FAILED[*]}"
    fi
    if [ -n "${OUT:-}" ]; then
        # One archive: the device tool brings back only a few files.
        tar -czf "$OUT/gpu-check-logs.tar.gz" -C "$LOGS" . 2>/dev/null ||
            echo "gpu-check: could not archive the logs into $OUT"
    fi
    [ "${#FAILED[@]}" -eq 0 ] && [ "${#SKIPPED[@]}" -eq 0 ]
    exit $?
}

# --- the machine -------------------------------------------------------------------------------
say "gpu-check on $(hostname) at $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
say "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) $(git -C "$ROOT" status --porcelain 2>/dev/null | head -c1 | grep -q . && echo '(modified)')"
say "kernel: $(uname -srm)"
say "compiler: $(cc --version 2>/dev/null | head -n1)"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$SUMMARY"
    nvidia-smi >"$LOGS/nvidia-smi.log" 2>&1
else
    say "nvidia-smi: not found"
fi
say "libcuda: $( (ldconfig -p 2>/dev/null | grep -m1 'libcuda.so.1') || echo 'not in the ldconfig cache')"

HAVE_CMAKE=0
command -v cmake >/dev/null 2>&1 && HAVE_CMAKE=1
# unpack_debs SRC DEST: unpacks every .deb in SRC into DEST (dpkg -x, else ar + tar).
unpack_debs() {
    local src=$1 dest=$2 deb tmp member
    rm -rf "$dest" && mkdir -p "$dest" || return 1
    for deb in "$src"/*.deb; do
        [ -f "$deb" ] || continue
        echo "unpacking $deb"
        if command -v dpkg >/dev/null 2>&1 && [ "${GK_GPU_CHECK_NO_DPKG:-0}" != 1 ]; then
            dpkg -x "$deb" "$dest" || return 1
        else
            tmp=$(mktemp -d) || return 1
            (cd "$tmp" && ar x "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")") || {
                rm -rf "$tmp"
                return 1
            }
            member=$(ls "$tmp" | grep -m1 '^data\.tar')
            [ -n "$member" ] && tar -xf "$tmp/$member" -C "$dest" || {
                echo "no data.tar member in $deb, or tar cannot read $member"
                rm -rf "$tmp"
                return 1
            }
            rm -rf "$tmp"
        fi
    done
}

# cmocka from carried .deb files: sets CMOCKA_INC and CMOCKA_LIB when they hold a usable cmocka.
CMOCKA_INC=""
CMOCKA_LIB=""
DEPS_SRC=${GK_GPU_DEPS:-$ROOT/.gpu-deps}
if ls "$DEPS_SRC"/*.deb >/dev/null 2>&1; then
    export -f unpack_debs
    if step deps-unpack 60 bash -c 'unpack_debs "$1" "$2"' unpack_debs "$DEPS_SRC" "$BUILD/deps"; then
        # Every carried library (cJSON, ncurses, cmocka, ...) is found by cc, cmake and the
        # loader: headers through CPATH, link-time libraries through LIBRARY_PATH and
        # CMAKE_PREFIX_PATH, run-time ones through LD_LIBRARY_PATH.
        DEPS_USR=$(cd "$BUILD/deps/usr" 2>/dev/null && pwd)
        if [ -n "$DEPS_USR" ]; then
            DEPS_LIBS=""
            for d in "$DEPS_USR"/lib/x86_64-linux-gnu "$DEPS_USR"/lib "$BUILD"/deps/lib/x86_64-linux-gnu; do
                [ -d "$d" ] && DEPS_LIBS="$DEPS_LIBS${DEPS_LIBS:+:}$(cd "$d" && pwd)"
            done
            export CPATH="$DEPS_USR/include${CPATH:+:$CPATH}"
            export LIBRARY_PATH="$DEPS_LIBS${LIBRARY_PATH:+:$LIBRARY_PATH}"
            export LD_LIBRARY_PATH="$DEPS_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            export CMAKE_PREFIX_PATH="$DEPS_USR${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
            say "   carried libraries: $(ls "$DEPS_SRC" | sed 's/_.*//' | tr '\n' ' ')"
        fi
        inc=$(find "$BUILD/deps" -name cmocka.h -path '*/include/*' | head -n1)
        lib=$(find "$BUILD/deps" -name 'libcmocka.so*' | sort | head -n1)
        if [ -n "$inc" ] && [ -n "$lib" ]; then
            CMOCKA_INC=$(cd "$(dirname "$inc")" && pwd)
            CMOCKA_LIB=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
            say "   cmocka from $DEPS_SRC: $CMOCKA_INC/cmocka.h, $CMOCKA_LIB"
        else
            say "   $DEPS_SRC holds no cmocka.h and libcmocka.so (need libcmocka0 and libcmocka-dev)"
        fi
    fi
fi

HAVE_CMOCKA=0
probe_cmocka() {
    printf '#include <setjmp.h>\n#include <stdarg.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <cmocka.h>\nint main(void) { return 0; }\n' |
        cc -x c - -x none "$@" -o "$LOGS/cmocka-probe" >/dev/null 2>&1 && "$LOGS/cmocka-probe"
}
if [ -n "$CMOCKA_LIB" ] &&
    probe_cmocka -I"$CMOCKA_INC" "$CMOCKA_LIB" -Wl,-rpath,"$(dirname "$CMOCKA_LIB")"; then
    HAVE_CMOCKA=1
elif probe_cmocka -lcmocka; then
    HAVE_CMOCKA=1
    CMOCKA_LIB=""
else
    [ -n "$CMOCKA_LIB" ] && say "   the carried cmocka does not link or run here"
    CMOCKA_LIB=""
fi
rm -f "$LOGS/cmocka-probe"
# libmicrohttpd (the /metrics server) is optional here: without it gpukit builds with GK_HTTP=OFF.
HTTP=ON MHD_DEF="" MHD_LINK="-lmicrohttpd"
if ! printf '#include <microhttpd.h>\nint main(void) { return 0; }\n' |
    cc -x c - -lmicrohttpd -o "$LOGS/mhd-probe" >/dev/null 2>&1; then
    HTTP=OFF MHD_DEF="-DGK_NO_MHD" MHD_LINK=""
fi
rm -f "$LOGS/mhd-probe"
# OpenBLAS (examples/train's host math) is optional here: without it the examples are not built
# by cmake, and the train step builds the example with plain C loops instead.
EXAMPLES=ON BLAS_DEF="" BLAS_LINK="-lopenblas"
if ! printf '#include <cblas.h>\nint main(void) { return 0; }\n' |
    cc -x c - -I/usr/include/openblas -lopenblas -o "$LOGS/blas-probe" >/dev/null 2>&1; then
    EXAMPLES=OFF BLAS_DEF="-DTRAIN_NO_CBLAS" BLAS_LINK=""
fi
rm -f "$LOGS/blas-probe"
# To try the fallbacks on a machine that has everything: GK_GPU_CHECK_NO_CMAKE=1 / _NO_CMOCKA=1.
[ "${GK_GPU_CHECK_NO_CMAKE:-0}" = 1 ] && HAVE_CMAKE=0
[ "${GK_GPU_CHECK_NO_CMOCKA:-0}" = 1 ] && HAVE_CMOCKA=0
say "cmake: $([ $HAVE_CMAKE = 1 ] && cmake --version | head -n1 || echo missing); cmocka: $([ $HAVE_CMOCKA = 1 ] && { [ -n "$CMOCKA_LIB" ] && echo "yes (carried: $CMOCKA_LIB)" || echo yes; } || echo 'missing (only the smoke check runs)'); libmicrohttpd: $([ $HTTP = ON ] && echo yes || echo 'missing (built without the HTTP exporter)')"

# --- build ---------------------------------------------------------------------------------------
# build_cc: compiles the library and the tool straight with cc (no cmake needed).
build_cc() {
    mkdir -p "$BUILD/cc"
    step build-cc 240 bash -c "cd '$BUILD/cc' && rm -f *.o &&
        for f in '$ROOT'/src/*/*.c; do
            o=\$(echo \"\$f\" | sed 's|.*/src/||; s|/|_|g; s|\\.c\$|.o|')
            cc -std=c11 -O2 -D_GNU_SOURCE $MHD_DEF -fPIC -fvisibility=hidden -I'$ROOT/include' -I'$ROOT/src' \
                -c \"\$f\" -o \"\$o\" || exit 1
        done && ar rcs ../libgpukit.a *.o &&
        cc -shared -Wl,-soname,libgpukit.so.1 *.o $MHD_LINK -lcjson -ldl -lpthread -lm \
            -o ../libgpukit.so.1 &&
        cc -std=c11 -O2 -D_GNU_SOURCE -I'$ROOT/include' '$ROOT'/tools/gpukit/*.c ../libgpukit.a \
            $MHD_LINK -lcjson -ldl -lpthread -lm -o ../gpukit"
}

LIB=""
TOOL=""
BUILT_WITH_CMAKE=0
if [ "$HAVE_CMAKE" = 1 ]; then
    TESTS=OFF
    [ "$HAVE_CMOCKA" = 1 ] && TESTS=ON
    CMOCKA_ARGS=()
    [ -n "$CMOCKA_LIB" ] && CMOCKA_ARGS=(-DCMOCKA_INCLUDE_DIR="$CMOCKA_INC" -DCMOCKA_LIBRARY="$CMOCKA_LIB")
    if step configure 120 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGK_TESTS=$TESTS \
        -DGK_HTTP=$HTTP -DGK_BENCH=ON -DGK_EXAMPLES=$EXAMPLES "${CMOCKA_ARGS[@]}" &&
        step build 240 cmake --build "$BUILD" -j "$JOBS"; then
        BUILT_WITH_CMAKE=1
    else
        say "   the cmake build failed; trying a plain cc build"
    fi
fi
if [ "$BUILT_WITH_CMAKE" = 1 ] || build_cc; then
    LIB="$BUILD/libgpukit.a"
    TOOL="$BUILD/gpukit"
fi

# train_check: examples/train on cuda (cuBLAS) and on host (CBLAS, or plain loops without
# OpenBLAS) with the same seed, data and batch; the final losses (evaluated in double precision on
# the host from each run's weights) must agree within a relative 1e-3. Both runs use float32 and
# differ only in the order of the sums inside the BLAS calls, which moves the weights by about
# 1e-6 relative per step under the decaying learning rate; 1e-3 is far above that and ten times
# below the example's own 1% convergence window, so a disagreement means a wrong result.
train_check() {
    local tdir="$BUILD/train-check"
    mkdir -p "$tdir"
    step train-build 180 cc -std=c11 -O2 -D_GNU_SOURCE $BLAS_DEF -I include -I/usr/include/openblas \
        examples/train.c examples/train_math.c "$LIB" $BLAS_LINK $MHD_LINK -lcjson -ldl -lpthread \
        -lm -o "$tdir/train" || return
    local args=(--data "$tdir/train.gkr" --generate 200000 --dim 64 --seed 3 --epochs 3
        --max-batch 4096 --save-every 0)
    step train-host 120 "$tdir/train" --device host "${args[@]}"
    # cuBLAS may sit in the CUDA toolkit or in the Python wheels rather than on the loader path.
    local extra="" d
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        $(python3 -c 'import nvidia.cublas as c; import os; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null); do
        [ -d "$d" ] && extra="$extra${extra:+:}$d"
    done
    step train-cuda 120 env LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}${LD_LIBRARY_PATH:+:}$extra" \
        "$tdir/train" --device cuda:0 "${args[@]}"
    # A run skipped by the time budget is reported as skipped already; nothing to compare.
    printf '%s\n' "${SKIPPED[@]}" | grep -qxE 'train-(host|cuda)' && return
    grep -E '^(device|batch|loss|converged|not converged)|cuBLAS' "$LOGS/train-cuda.log" |
        sed 's/^/   | cuda: /' | tee -a "$SUMMARY"
    if grep -q 'cuBLAS not found' "$LOGS/train-cuda.log"; then
        say "   cuBLAS is not installed on this machine: the cuda run of the example cannot run"
        return
    fi
    local lh lc bh bc
    lh=$(sed -n 's/^loss \([0-9.e+-]*\) .*/\1/p' "$LOGS/train-host.log")
    lc=$(sed -n 's/^loss \([0-9.e+-]*\) .*/\1/p' "$LOGS/train-cuda.log")
    bh=$(sed -n 's/^batch \([0-9]*\) .*/\1/p' "$LOGS/train-host.log")
    bc=$(sed -n 's/^batch \([0-9]*\) .*/\1/p' "$LOGS/train-cuda.log")
    say "   final loss: host $lh (batch $bh), cuda $lc (batch $bc)"
    if [ -z "$lh" ] || [ -z "$lc" ] || [ "$bh" != "$bc" ] ||
        ! awk -v h="$lh" -v c="$lc" 'BEGIN { d = (h - c) / h; if (d < 0) d = -d; exit !(d <= 1e-3) }'; then
        say "   host and cuda disagree (or a run failed): relative tolerance 1e-3, same batch"
        FAILED+=("train-compare")
    else
        say "   host and cuda agree within a relative 1e-3"
    fi
}

# torch_example_check: examples/train_torch.py (the Python package over the library just built)
# on cuda:0 under gpukit run: the loader copies each batch into its device slots and hands them to
# torch as CUDA tensors on torch's current stream, the finder measures torch.cuda's peaks against
# a 256 MiB budget, the memory manager reads torch.cuda.memory_stats(), and the run must converge
# and record the loader's and the allocator's series.
torch_example_check() {
    if ! python3 -c 'import numpy, torch; assert torch.cuda.is_available()' >"$LOGS/torch-probe.log" 2>&1; then
        say "== train-torch: python3 has no numpy, torch or CUDA device here ($(tail -n1 "$LOGS/torch-probe.log")); not run"
        SKIPPED+=("train-torch")
        return
    fi
    local lib
    lib="$(cd "$BUILD" && pwd)/libgpukit.so.1" # built by cmake, or by build_cc
    step train-torch 240 env GPUKIT_LIBRARY="$lib" PYTHONPATH="$ROOT/python" PYTHONDONTWRITEBYTECODE=1 \
        "$TOOL" run --interval 0.2 --out "$LOGS/train-torch.jsonl" -- python3 examples/train_torch.py \
        --device cuda:0 --samples 16384 --epochs 3 --memory-budget 256MiB --max-batch 4096
    grep -E '^(batch|loader|loss|converged|not converged)|device tensors|^gpukit_(alloc|loader|batch)|^train_|^gpu\.0\.memory' \
        "$LOGS/train-torch.log" | sed 's/^/   | /' | head -n 40 | tee -a "$SUMMARY"
    printf '%s\n' "${SKIPPED[@]}" | grep -qx train-torch && return
    if ! grep -q '^converged' "$LOGS/train-torch.log" ||
        ! grep -q 'device tensors: CUDA tensors over the loader.s device slots' "$LOGS/train-torch.log" ||
        ! grep -q '^gpukit_alloc_reserved_bytes' "$LOGS/train-torch.log" ||
        ! grep -q '^gpukit_loader_wait_seconds_total{loader:train}' "$LOGS/train-torch.log"; then
        say "   train_torch.py on cuda:0: not converged, or the device tensors or series are missing"
        FAILED+=("train-torch-check")
    fi
}

# torch_allocator_check: gpukit's pool as PyTorch's allocator (libgpukit_torch.so, from the cmake
# build). bench/python/torch_allocator.py trains the same seeded transformer, with a sequence
# length varying per step, once per process under PyTorch's allocator, PyTorch's with expandable
# segments, and gpukit's; the final losses must agree; the peaks, step times and largest batches
# go to the summary. Then whether cudnn.benchmark runs with gpukit's allocator, and the CNN and
# transformer traces replayed through torch.empty with gpukit's pool behind it.
torch_allocator_check() {
    if [ ! -e "$BUILD/libgpukit_torch.so" ]; then
        say "== torch-allocator: libgpukit_torch.so was not built (it needs the cmake build); not run"
        SKIPPED+=("torch-allocator")
        return
    fi
    if ! python3 -c 'import torch; assert torch.cuda.is_available(); torch.cuda.memory.CUDAPluggableAllocator' \
        >"$LOGS/torch-alloc-probe.log" 2>&1; then
        say "== torch-allocator: python3 has no PyTorch 2.x with CUDA here ($(tail -n1 "$LOGS/torch-alloc-probe.log")); not run"
        SKIPPED+=("torch-allocator")
        return
    fi
    local lib mode
    lib="$(cd "$BUILD" && pwd)/libgpukit.so.1"
    for mode in torch expandable gpukit cudnn; do
        rm -f "$LOGS/torch-alloc-$mode.json"
        step "torch-alloc-$mode" 240 env GPUKIT_LIBRARY="$lib" PYTHONPATH="$ROOT/python" \
            PYTHONDONTWRITEBYTECODE=1 python3 bench/python/torch_allocator.py "$mode" \
            "$LOGS/torch-alloc-$mode.json"
    done
    if ! python3 - "$LOGS" >"$LOGS/torch-alloc-compare.log" 2>&1 <<'PY'; then
import json, os, sys
runs = {}
for mode in ("torch", "expandable", "gpukit", "cudnn"):
    p = os.path.join(sys.argv[1], "torch-alloc-%s.json" % mode)
    runs[mode] = json.load(open(p)) if os.path.exists(p) else None
MiB = 2.0 ** 20
print("%-11s %12s %12s %12s %10s %10s" % ("allocator", "final loss", "peak resv", "peak alloc",
                                          "step ms", "max batch"))
for mode in ("torch", "expandable", "gpukit"):
    r = runs[mode]
    if r is None:
        print("%-11s (no result)" % mode)
        continue
    print("%-11s %12.6f %10.1f M %10.1f M %10.2f %10d" % (
        mode, r["final_loss"], r["peak_reserved"] / MiB, r["peak_allocated"] / MiB,
        r["step_ms_median"], r["max_batch_seq512_4GiB"]))
if runs["cudnn"]:
    print("cudnn.benchmark with gpukit's allocator:", runs["cudnn"]["cudnn_benchmark"])
t, g = runs["torch"], runs["gpukit"]
if t is None or g is None:
    sys.exit("the torch or gpukit run gave no result")
if abs(t["final_loss"] - g["final_loss"]) > 1e-4 * max(1.0, abs(t["final_loss"])):
    sys.exit("final losses differ: %r (torch) and %r (gpukit)" % (t["final_loss"], g["final_loss"]))
print("final losses agree; gpukit's peak reserved is %.3f of PyTorch's, step time %.3f of it" % (
    g["peak_reserved"] / t["peak_reserved"], g["step_ms_median"] / t["step_ms_median"]))
PY
        FAILED+=("torch-allocator-compare")
    fi
    sed 's/^/   | /' "$LOGS/torch-alloc-compare.log" | tee -a "$SUMMARY"
    local traces=(tests/data/cnn_train_trace.csv)
    [ -f "$BUILD/transformer_trace.csv" ] && traces+=("$BUILD/transformer_trace.csv")
    step torch-replay-gpukit 90 env GPUKIT_LIBRARY="$lib" PYTHONPATH="$ROOT/python" \
        PYTHONDONTWRITEBYTECODE=1 python3 bench/pool/torch_replay.py --gpukit "${traces[@]}"
    sed 's/^/   | /' "$LOGS/torch-replay-gpukit.log" | head -n 20 | tee -a "$SUMMARY"
}

# --- checks --------------------------------------------------------------------------------------
if [ -n "$LIB" ]; then
    if [ "$BUILT_WITH_CMAKE" = 1 ] && [ "$HAVE_CMOCKA" = 1 ]; then
        if step ctest-gpu 180 ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 150; then
            if grep -qE 'Not Run|\*\*\*Skipped|No tests were found' "$LOGS/ctest-gpu.log"; then
                say "   but the gpu tests were skipped or missing:"
                grep -E 'Skipped|skipping|Not Run|No tests' "$LOGS/ctest-gpu.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
                FAILED+=("ctest-gpu-skipped")
            fi
        fi
        grep -E '^# ' "$LOGS/ctest-gpu.log" | sed 's/^/   /' | tee -a "$SUMMARY"
    elif [ "$HAVE_CMOCKA" = 1 ]; then
        # No cmake build: compile each gpu-labelled test with cc and run it.
        if [ -n "$CMOCKA_LIB" ]; then
            CM_FLAGS=(-I"$CMOCKA_INC") CM_LINK=("$CMOCKA_LIB" -Wl,-rpath,"$(dirname "$CMOCKA_LIB")")
        else
            CM_FLAGS=() CM_LINK=(-lcmocka)
        fi
        for src in $(grep -l 'gk-labels:.*gpu' tests/unit/test_*.c); do
            name=$(basename "$src" .c)
            step "$name-build" 120 cc -std=c11 -O2 -D_GNU_SOURCE -I include -I src -I tests/support \
                "${CM_FLAGS[@]}" -DGK_TEST_FAKE_CUDA='""' -DGK_TEST_FAKE_CUDA_NOVMM='""' \
                -DGK_TEST_SOURCE_DIR="\"$ROOT\"" -DGK_TEST_BINARY_DIR="\"$ROOT/$BUILD\"" "$src" \
                tests/support/gk_test.c "$LIB" "${CM_LINK[@]}" $MHD_LINK -ldl -lpthread -lm \
                -o "$BUILD/$name" || continue
            step "$name" 150 env GK_LOG=error "$BUILD/$name"
            [ $? -eq 77 ] && say "   skipped: no GPU answered" && FAILED+=("$name-skipped")
            grep -E '^# ' "$LOGS/$name.log" | sed 's/^/   /' | tee -a "$SUMMARY"
        done
    fi
    if step smoke-build 120 cc -std=c11 -O2 -Wall -Wextra -I include scripts/gpu_smoke.c "$LIB" \
        -lcjson -ldl -lpthread -lm -o "$BUILD/gpu_smoke"; then
        step smoke 120 "$BUILD/gpu_smoke" cuda:0
        grep -E '^(INFO|FAIL|SKIP)|^      \(' "$LOGS/smoke.log" | sed 's/^/   /' | tee -a "$SUMMARY"
    fi
    # The monitor: nvidia-smi's view next to gpukit's NVML reader, read costs, a monitor tick.
    if step monitor-build 120 cc -std=c11 -O2 -D_GNU_SOURCE -I include bench/monitor/gpu_check.c \
        "$LIB" -ldl -lpthread -lm -o "$BUILD/gpu_check"; then
        step monitor 120 bash scripts/gpu-check-monitor.sh "$BUILD/gpu_check"
        grep -E '^(gpu |library=|  cost|monitor tick|  [a-z_]+ +-- )' "$LOGS/monitor.log" | sed 's/^/   /' | tee -a "$SUMMARY"
    fi
    # The pool on the GPU: gpukit's pool against the driver's allocators, then PyTorch's.
    BENCH="$BUILD/bench/bench_pool_gpu"
    if [ ! -x "$BENCH" ]; then
        mkdir -p "$BUILD/bench"
        step bench-build 120 cc -std=c11 -O2 -D_GNU_SOURCE -I include -I src -I bench \
            bench/pool/bench_pool_gpu.c "$LIB" $MHD_LINK -ldl -lpthread -lm -o "$BENCH"
    fi
    if [ -x "$BENCH" ]; then
        if step bench-pool-gpu 90 "$BENCH" --device cuda:0; then
            grep -vE '^$' "$LOGS/bench-pool-gpu.log" | sed 's/^/   | /' | head -n 40 | tee -a "$SUMMARY"
        elif grep -q 'cannot open cuda:0' "$LOGS/bench-pool-gpu.log"; then
            say "   (no GPU answered, so nothing was measured)"
        fi
    fi
    TX="$BUILD/transformer_trace.csv"
    if [ -x "$TOOL" ]; then
        step synth-trace 60 "$TOOL" pool synth --model transformer --out "$TX"
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        say "== torch replay: python3 not found, skipped"
    elif [ -f "$TX" ]; then
        step torch-replay 90 python3 bench/pool/torch_replay.py tests/data/cnn_train_trace.csv "$TX"
        sed 's/^/   | /' "$LOGS/torch-replay.log" | head -n 20 | tee -a "$SUMMARY"
        if ! grep -q 'not available' "$LOGS/torch-replay.log"; then
            step torch-replay-expandable 90 python3 bench/pool/torch_replay.py \
                --alloc-conf expandable_segments:True tests/data/cnn_train_trace.csv "$TX"
            sed 's/^/   | /' "$LOGS/torch-replay-expandable.log" | head -n 20 | tee -a "$SUMMARY"
        fi
    fi
    # The loader on the GPU: pinned against pageable copies, then the loader against PyTorch's
    # DataLoader with pin_memory feeding the same GPU from the same file.
    if [ -x "$BUILD/bench/bench_h2d" ]; then
        step loader-h2d 90 "$BUILD/bench/bench_h2d" --device cuda:0
        sed 's/^/   | /' "$LOGS/loader-h2d.log" | head -n 20 | tee -a "$SUMMARY"
    fi
    if [ -x "$TOOL" ] && command -v python3 >/dev/null 2>&1; then
        step loader-torch 150 python3 bench/loader/torch_loader_gpu.py "$TOOL" 4096 256 2 3
        sed 's/^/   | /' "$LOGS/loader-torch.log" | head -n 10 | tee -a "$SUMMARY"
    fi
    if [ -x "$TOOL" ]; then
        step info-json 60 "$TOOL" info --json
        sed 's/^/   | /' "$LOGS/info-json.log" | head -n 60 | tee -a "$SUMMARY"
        GK_DEVICE=cuda:0 step info-cuda 60 "$TOOL" info --device cuda:0
        sed 's/^/   | /' "$LOGS/info-cuda.log" | head -n 40 | tee -a "$SUMMARY"
        # gpukit run on the GPU: the smoke program, then a second of idle, under the recorder; the
        # recording must hold GPU series; the report's GPU lines go to the summary. Then top.
        if [ -x "$BUILD/gpu_smoke" ]; then
            step run-gpu 120 "$TOOL" run --interval 0.1 --out "$LOGS/run-gpu.jsonl" \
                --html "$LOGS/run-gpu.html" -- bash -c "'$BUILD/gpu_smoke' cuda:0 >/dev/null && sleep 1"
            grep -E '^(  GPU|gpukit_gpu_|GPU energy|peak GPU|  gpukit_gpu_|  [0-9]+\. )' "$LOGS/run-gpu.log" |
                sed 's/^/   | /' | head -n 60 | tee -a "$SUMMARY"
            if ! grep -q '"gpukit_gpu_utilization_ratio{gpu=\\"0\\"}"' "$LOGS/run-gpu.jsonl" 2>/dev/null; then
                say "   no GPU series in the recording"
                FAILED+=("run-gpu-series")
            fi
        fi
        step top-plain 60 "$TOOL" top --count 3 --interval 0.5 --plain
        sed 's/^/   | /' "$LOGS/top-plain.log" | tee -a "$SUMMARY"
        train_check
        torch_example_check
        torch_allocator_check
    else
        say "== the tool was not built"
        FAILED+=("tool")
    fi
fi
finish
