#!/usr/bin/env bash
# Every command the documentation shows, run against this build, with the output lines the
# documentation shows (or promises) checked. A maintained list: each entry names its document.
# (The pkg-config and find_package(gpukit) lines of README.md and docs/tutorial.md are run by
# install.sh; docs/gpukit.1.md's help texts are compared with the tool's below.)
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}" "${GK_BINARY_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
src=$GK_SOURCE_DIR
n=0

# doc DOC STATUS EXPECT... -- CMD...: runs CMD (gpukit is $GPUKIT) in $tmp with stdout and
# stderr together; its exit status must be STATUS and each EXPECT (a grep -E pattern) must match.
doc() {
    local file=$1 want=$2
    shift 2
    local pats=()
    while [ "$1" != "--" ]; do
        pats+=("$1")
        shift
    done
    shift
    grep -q . "$src/$file" || fail "$file is missing"
    local status=0
    (cd "$tmp" && timeout 120 "$@") >"$tmp/out" 2>&1 || status=$?
    [ "$status" -eq "$want" ] || { cat "$tmp/out"; fail "$file: \`$*\` exited $status, expected $want"; }
    for p in "${pats[@]}"; do
        grep -qE -- "$p" "$tmp/out" || { cat "$tmp/out"; fail "$file: \`$*\` printed no line matching /$p/"; }
    done
    n=$((n + 1))
}
# shown DOC TEXT: the document still shows TEXT (so the entry below tests what readers see).
shown() { grep -qF -- "$2" "$src/$1" || fail "$1 no longer shows: $2"; }

G=$GPUKIT
train="$GK_BINARY_DIR/examples/train"

# --- README.md -------------------------------------------------------------------------------
demo_line='$ build/release/gpukit run --interval 0.1 --out build/demo/run.jsonl --html build/report.html -- build/release/examples/train --data build/demo/train.gkr --epochs 40 --save-every 500'
shown README.md "$demo_line"
grep -qF -- '--interval 0.1 --out build/demo/run.jsonl --html build/report.html --' "$src/scripts/demo.sh" &&
    grep -qF -- '--data "$data" --epochs 40 --save-every 500' "$src/scripts/demo.sh" ||
    fail "README.md shows a demo command that scripts/demo.sh no longer runs"
if [ -x "$train" ]; then
    # The demo's command on a small training set (so a smaller batch cap): the lines README.md shows.
    "$train" --data "$tmp/demo.gkr" --generate 20000 --generate-only >/dev/null
    doc README.md 0 '^batch [0-9]+ \(finder: 3 trials' '^converged: the loss is within 1% of the noise floor' \
        '^gpukit report: .*train' '^gpukit_loader_batches_total\{device:host,loader:train\}' \
        '^gpukit_alloc_reserved_bytes' '^advice:' -- \
        "$G" run --interval 0.1 --out run.jsonl --html report.html -- "$train" --data demo.gkr --epochs 4 --max-batch 512 --save-every 500
fi
shown README.md "gpukit run --html report.html -- python3 train.py"
doc README.md 0 '^gpukit report: python3' '^advice:' '^recording: gpukit-runs/.*-python3-' -- \
    "$G" run --html report.html -- python3 "$src/examples/send_metrics.py" 5
[ -s "$tmp/report.html" ] || fail "README.md: gpukit run --html wrote no report"
shown README.md "gpukit report                                        # the report again"
doc README.md 0 '^gpukit report: python3 .*send_metrics.py 5' '^py_loss +5 ' '^advice:' -- "$G" report

# --- docs/python.md (and README.md) ---------------------------------------------------------
shown README.md 'gpukit run -- /usr/bin/python3 examples/train_torch.py        # a PyTorch CNN'
shown docs/python.md 'gpukit run -- /usr/bin/python3 examples/train_torch.py'
# Under a sanitizer's runtime (preloaded into python3) torch trains several times slower;
# python_example.sh runs the example there with smaller settings.
if [ -z "${GK_SAN_PRELOAD:-}" ]; then
    doc docs/python.md 0 '^converged: loss' '^train_loss ' '^train_step_time \(ms\) ' \
        '^gpukit_alloc_reserved_bytes\{device:unknown,pool:custom\} ' \
        '^gpukit_loader_wait_seconds_total\{device:host,loader:train\} ' -- \
        env PYTHONPATH="$src/python" PYTHONDONTWRITEBYTECODE=1 \
        "$G" run -- /usr/bin/python3 "$src/examples/train_torch.py"
fi

# --- docs/tutorial.md ------------------------------------------------------------------------
shown docs/tutorial.md '$ gpukit info'
doc docs/tutorial.md 0 '^gpukit [0-9]' '^backends:' '^  host +usable' '^  sim +usable' -- "$G" info
shown docs/tutorial.md '$ gpukit run --interval 0.1 --out run.jsonl --html report.html -- python3 examples/send_metrics.py 30'
doc docs/tutorial.md 0 '^sent 30 steps of metrics to ' '^py_loss +30 ' '^py_step_time \(ms\) +30 ' \
    '^py_steps_total\{phase:train\} +30 ' -- \
    "$G" run --interval 0.1 --out run.jsonl --html report.html -- python3 "$src/examples/send_metrics.py" 30
# The C program of the tutorial, built the way §5 says (installed package, pkg-config), on the
# data §4 makes, under gpukit run: its own metric and the loader's arrive.
awk '/^```c$/ {on = 1; next} /^```$/ {on = 0} on' "$src/docs/tutorial.md" >"$tmp/app.c"
grep -q gk_loader_next "$tmp/app.c" || fail "docs/tutorial.md: no C program found"
cmake --install "$GK_BINARY_DIR" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "install"; }
libdir=$(ls -d "$tmp"/prefix/lib*/ | head -1)
shown docs/tutorial.md 'cc -std=c11 app.c $(pkg-config --cflags --libs gpukit) -o app'
# shellcheck disable=SC2046,SC2086
PKG_CONFIG_PATH="$libdir/pkgconfig" cc -std=c11 ${GK_SAN_FLAGS:-} "$tmp/app.c" \
    $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs gpukit) -o "$tmp/app" ||
    fail "docs/tutorial.md: the C program does not build"
shown docs/tutorial.md '$ head -c 25600000 /dev/urandom > raw.bin'
head -c 25600000 /dev/urandom >"$tmp/raw.bin"
shown docs/tutorial.md '$ gpukit data pack --record-size 256 raw.bin data.gkr'
doc docs/tutorial.md 0 '.' -- "$G" data pack --record-size 256 raw.bin data.gkr
shown docs/tutorial.md '$ gpukit run --out app.jsonl -- ./app data.gkr'
shown docs/tutorial.md '1563 batches'
LD_LIBRARY_PATH="$libdir" doc docs/tutorial.md 0 '^1563 batches$' '^app_batches +1563 ' \
    'total 1563,' '^gpukit_loader_batches_total\{device:host,loader:loader\}' -- "$G" run --out app.jsonl -- ./app data.gkr
grep -A1 '^gpukit_loader_batches_total{device:host,loader:loader}' "$tmp/out" | grep -q 'total 1563,' ||
    fail "docs/tutorial.md: the loader's own batch count did not reach the report"

# --- docs/options.md -------------------------------------------------------------------------
shown docs/options.md '$ GK_SYNC_TIMEOUT=fast gpukit info'
doc docs/options.md 2 '^gpukit: GK_SYNC_TIMEOUT: "fast" is not a duration \(try 30s or 500ms\)$' -- \
    env GK_SYNC_TIMEOUT=fast "$G" info
shown docs/options.md '$ gpukit --log loud info'
doc docs/options.md 2 '^gpukit: --log: "loud" is not a log level \(try off, error, warn, info, debug or trace\)$' -- \
    "$G" --log loud info
shown docs/options.md '$ gpukit --pool-size 1G info'
doc docs/options.md 2 "^gpukit: unknown setting \"--pool-size\" \\(see 'gpukit info --settings' or docs/options.md\\)$" -- \
    "$G" --pool-size 1G info

# --- docs/devices.md -------------------------------------------------------------------------
shown docs/devices.md 'gpukit info --device host'
doc docs/devices.md 0 '^devices:' '^  host: ' -- "$G" info --device host
shown docs/devices.md 'gpukit pool replay trace.csv --device sim:capacity=24GiB'
cp "$src/tests/data/cnn_train_trace.csv" "$tmp/trace.csv"
doc docs/devices.md 0 '^device +sim:capacity=24GiB' '^peak reserved ' -- \
    "$G" pool replay trace.csv --device sim:capacity=24GiB

# --- docs/pool.md ----------------------------------------------------------------------------
shown docs/pool.md 'gpukit pool synth --model transformer'
doc docs/pool.md 0 -- "$G" pool synth --model transformer --layers 2 --hidden 256 --heads 4 --seq 128 \
    --batch 2 --steps 2 --out synth.csv
head -1 "$tmp/synth.csv" | grep -q '^Thread,Time,Action,Pointer,Size,Stream' || fail "docs/pool.md: synth wrote no RMM CSV"
shown docs/pool.md 'gpukit pool replay TRACE.csv'
doc docs/pool.md 0 '^peak allocated ' '^leaks ' -- "$G" pool replay synth.csv --summary
shown docs/pool.md 'gpukit pool fcap TRACE.csv'
doc docs/pool.md 0 'C_min' 'F_cap' -- "$G" pool fcap synth.csv
shown docs/pool.md 'gpukit batch find --model a=BYTES,k=BYTES --capacity SIZE'
doc docs/pool.md 0 '^mode +model' '^batch +[0-9]+ \(true maximum' '^trials +3 ' -- \
    "$G" batch find --model a=1GiB,k=100MiB --capacity 8GiB

# --- docs/loader.md --------------------------------------------------------------------------
shown docs/loader.md 'gpukit data pack --record-size N IN OUT'
head -c 65536 /dev/zero >"$tmp/small.bin"
doc docs/loader.md 0 -- "$G" data pack --record-size 64 small.bin small.gkr
shown docs/loader.md 'gpukit data inspect FILE'
doc docs/loader.md 0 '1024' -- "$G" data inspect small.gkr
shown docs/loader.md 'gpukit loader bench'
doc docs/loader.md 0 'items/s' -- "$G" loader bench --record-size 256 --records 20000 --seconds 0.3

# --- docs/monitor.md -------------------------------------------------------------------------
shown docs/monitor.md "gpukit serve --alert gpu_hot='gpukit_gpu_temperature_celsius > 85 for 5m'"
doc docs/monitor.md 124 -- timeout 1.5 "$G" serve --listen 127.0.0.1:0 --interval 0.2 --textfile metrics.prom \
    --alert gpu_hot='gpukit_gpu_temperature_celsius > 85 for 5m'
grep -q '^gpukit_memory_total_bytes ' "$tmp/metrics.prom" || fail "docs/monitor.md: serve --textfile wrote no metrics"
shown docs/monitor.md 'gpukit sample [--count N] [--interval S] [--csv | --json]'
doc docs/monitor.md 0 '^# time' -- "$G" sample --count 1
doc docs/monitor.md 0 '^timestamp,gpu,name,' -- "$G" sample --count 1 --csv

# --- docs/run.md -----------------------------------------------------------------------------
shown docs/run.md 'gpukit report new.jsonl --baseline base.jsonl --fail-on-regression 5'
doc docs/run.md 0 -- "$G" run --out base.jsonl -- python3 "$src/examples/send_metrics.py" 5
doc docs/run.md 0 -- "$G" run --out new.jsonl -- python3 "$src/examples/send_metrics.py" 5
status=0
(cd "$tmp" && "$G" report new.jsonl --baseline base.jsonl --fail-on-regression 5) >"$tmp/out" 2>&1 || status=$?
[ "$status" -le 1 ] || fail "docs/run.md: report --baseline exited $status"
grep -qE '^against the baseline: [0-9]+ regressions?, ' "$tmp/out" || { cat "$tmp/out"; fail "docs/run.md: no comparison with the baseline"; }
n=$((n + 1))
shown docs/run.md 'gpukit top [--interval S] [--count N] [--plain] [--no-gpu]'
doc docs/run.md 0 ' cpu ' -- "$G" top --plain --count 1 --interval 0.1

# --- docs/gpukit.1.md: each command's --help, verbatim ---------------------------------------
for c in "" run report top info sample serve batch pool data loader; do
    title="### gpukit${c:+ $c}"
    awk -v t="$title" '$0 == t {f = 1; next} f && /^```$/ {if (in_) exit; in_ = 1; next} f && in_' \
        "$src/docs/gpukit.1.md" >"$tmp/man"
    # shellcheck disable=SC2086
    "$G" $c --help >"$tmp/help" 2>&1 || true
    cmp -s "$tmp/man" "$tmp/help" || { diff "$tmp/man" "$tmp/help" || true; fail "docs/gpukit.1.md: \"$title\" differs from gpukit $c --help"; }
    n=$((n + 1))
done
echo "docs_commands: $n commands checked"
