#!/usr/bin/env bash
# gpu-check.sh: build gpukit on a machine with an NVIDIA GPU and check it against the real driver.
# Needs no network and installs nothing. With cmocka: a Release build in build/gpu, the tests
# labelled gpu (ctest -L gpu), the standalone smoke check and `gpukit info --json`. Without cmocka
# (or cmake) it still builds the library and the tool and runs the smoke check (scripts/gpu_smoke.c)
# against the real driver. Every step is logged; a failing step does not stop the others; the exit
# status is 0 only when all passed. Logs go to build/gpu/gpu-check/ and, when OUT is set, to
# "$OUT/gpu-check/". Run from the repository root: bash scripts/gpu-check.sh
# GK_GPU_BUILD_DIR overrides the build folder.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${GK_GPU_BUILD_DIR:-build/gpu}
LOGS="$BUILD/gpu-check"
JOBS=$(nproc 2>/dev/null || echo 4)
START=$(date +%s)
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.txt"
: >"$SUMMARY"
FAILED=()

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with a time limit, its output in $LOGS/NAME.log.
step() {
    local name=$1 limit=$2
    shift 2
    local t0 rc
    t0=$(date +%s)
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
    if [ "${#FAILED[@]}" -eq 0 ]; then
        say "gpu-check: all steps passed"
    else
        say "gpu-check: FAILED steps: ${FAILED[*]}"
    fi
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT/gpu-check" && cp -r "$LOGS"/. "$OUT/gpu-check/" 2>/dev/null ||
            echo "gpu-check: could not copy the logs to $OUT"
    fi
    [ "${#FAILED[@]}" -eq 0 ]
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
HAVE_CMOCKA=0
if printf '#include <setjmp.h>\n#include <stdarg.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <cmocka.h>\nint main(void) { return 0; }\n' |
    cc -x c - -lcmocka -o "$LOGS/cmocka-probe" >/dev/null 2>&1; then
    HAVE_CMOCKA=1
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
say "cmake: $([ $HAVE_CMAKE = 1 ] && cmake --version | head -n1 || echo missing); cmocka: $([ $HAVE_CMOCKA = 1 ] && echo yes || echo 'missing (only the smoke check runs)'); libmicrohttpd: $([ $HTTP = ON ] && echo yes || echo 'missing (built without the HTTP exporter)')"

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
        cc -std=c11 -O2 -D_GNU_SOURCE -I'$ROOT/include' '$ROOT'/tools/gpukit/*.c ../libgpukit.a \
            $MHD_LINK -lcjson -ldl -lpthread -lm -o ../gpukit"
}

LIB=""
TOOL=""
BUILT_WITH_CMAKE=0
if [ "$HAVE_CMAKE" = 1 ]; then
    TESTS=OFF
    [ "$HAVE_CMOCKA" = 1 ] && TESTS=ON
    if step configure 120 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGK_TESTS=$TESTS \
        -DGK_HTTP=$HTTP -DGK_EXAMPLES=$EXAMPLES &&
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
    step train-cuda 120 "$tdir/train" --device cuda:0 "${args[@]}"
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
            grep -E '^(  GPU|gpu\.|GPU energy|peak GPU|  gpu\.|  [0-9]+\. )' "$LOGS/run-gpu.log" |
                sed 's/^/   | /' | head -n 60 | tee -a "$SUMMARY"
            if ! grep -q '"gpu.0.utilization_ratio"' "$LOGS/run-gpu.jsonl" 2>/dev/null; then
                say "   no GPU series in the recording"
                FAILED+=("run-gpu-series")
            fi
        fi
        step top-plain 60 "$TOOL" top --count 3 --interval 0.5 --plain
        sed 's/^/   | /' "$LOGS/top-plain.log" | tee -a "$SUMMARY"
        train_check
    else
        say "== the tool was not built"
        FAILED+=("tool")
    fi
fi
finish
