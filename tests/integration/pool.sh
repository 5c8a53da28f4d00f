#!/usr/bin/env bash
# gpukit pool and gpukit batch end to end: replay and fcap of the real CNN trace (text and JSON),
# a synthetic trace written and replayed, the batch finder on sim, and the errors users see for a
# malformed trace, a bad preset and a bad setting.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
trace="$GK_SOURCE_DIR/tests/data/cnn_train_trace.csv"

"$GPUKIT" pool --help >"$tmp/out"
expect "$tmp/out" "usage: gpukit pool replay"
"$GPUKIT" pool replay "$trace" --device sim:capacity=4GiB --preset pytorch >"$tmp/out"
expect "$tmp/out" "(2561 allocations, 2560 frees)"
expect "$tmp/out" "leaks            1 allocations"
expect "$tmp/out" "0 out of memory"
"$GPUKIT" pool replay "$trace" --device sim:capacity=4GiB --summary >"$tmp/out"
expect "$tmp/out" "| Allocated memory      |"
expect "$tmp/out" "| External frag."
"$GPUKIT" pool replay "$trace" --preset pytorch --json >"$tmp/replay.json"
python3 - "$tmp/replay.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["allocations"] == 2561 and d["frees"] == 2560, d
assert d["l_peak"] == 258505369 and d["leaks"] == 1, d
assert d["peak_reserved"] >= d["peak_allocated"] >= d["peak_requested"], d
assert d["alloc_ns_p99"] >= d["alloc_ns_p50"] > 0, d
assert d["stats"]["allocation.all.current"] == 0, d["stats"]  # the leak was freed after the replay
assert d["stats"]["allocation.all.peak"] >= 1, d["stats"]
PY

"$GPUKIT" pool replay "$trace" --device sim:capacity=1GiB --snapshot "$tmp/snap.json" >/dev/null
python3 - "$tmp/snap.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["segments"], d
seg = d["segments"][0]
for key in ("address", "total_size", "stream", "segment_type", "allocated_size", "active_size", "blocks"):
    assert key in seg, seg
assert seg["blocks"][0]["state"] in ("active_allocated", "active_awaiting_free", "inactive"), seg
acts = {e["action"] for e in d["device_traces"][0]}
assert {"alloc", "free_requested", "free_completed", "segment_map"} <= acts, acts
assert 5000 < len(d["device_traces"][0]) <= 10000, len(d["device_traces"][0])
PY

"$GPUKIT" pool fcap "$trace" --preset pytorch --json >"$tmp/py.json"
"$GPUKIT" pool fcap "$trace" --json >"$tmp/def.json"
python3 - "$tmp/py.json" "$tmp/def.json" <<'PY'
import json, sys
py, de = (json.load(open(p)) for p in sys.argv[1:3])
assert py["l_peak"] == 258505369 and py["c_min"] % (2 << 20) == 0, py
assert abs(py["f_cap"] - 1.34) < 0.04, py
assert de["f_cap"] < py["f_cap"], (de, py)
PY
"$GPUKIT" pool fcap "$trace" --preset pytorch >"$tmp/out"
expect "$tmp/out" "F_cap                 1.3"

"$GPUKIT" pool synth --model transformer --layers 2 --hidden 256 --heads 4 --seq 256 --steps 3 \
    --out "$tmp/synth.csv"
expect "$tmp/synth.csv" "^Thread,Time,Action,Pointer,Size,Stream$"
"$GPUKIT" pool replay "$tmp/synth.csv" --device sim:capacity=8GiB --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["leaks"]==0 and d["failed_allocations"]==0, d'

# Errors: a malformed line names the file and line; usage errors exit 2.
printf 'Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x10,5,0x0\n1,0.2,grab,0x10,5,0x0\n' >"$tmp/bad.csv"
rc=0
"$GPUKIT" pool replay "$tmp/bad.csv" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "malformed trace: exit $rc, want 1"
expect "$tmp/err" "^gpukit: .*bad.csv:3: unknown action"
rc=0
"$GPUKIT" pool replay "$trace" --preset tensorflow 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] || fail "bad preset: exit $rc, want 2"
expect "$tmp/err" "unknown preset \"tensorflow\""
rc=0
"$GPUKIT" pool fcap "$trace" --set max_split_size=lots 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] || fail "bad setting: exit $rc, want 2"
expect "$tmp/err" "max_split_size: \"lots\" is not a size"
rc=0
"$GPUKIT" pool replay /nonexistent.csv 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "missing trace: exit $rc, want 1"

# The batch finder: model mode needs few trials and never answers above the true maximum.
"$GPUKIT" batch find --model a=1GiB,k=29MiB --capacity 16GiB --json >"$tmp/model.json"
"$GPUKIT" batch find --model a=1GiB,k=29MiB --capacity 16GiB --mode binsearch --json >"$tmp/bs.json"
python3 - "$tmp/model.json" "$tmp/bs.json" <<'PY'
import json, sys
m, b = (json.load(open(p)) for p in sys.argv[1:3])
assert m["mode"] == "model" and m["trials"] <= 4, m
assert m["batch"] <= m["true_max"] and m["below_true_max_pct"] <= 5.0, m
assert b["batch"] == b["true_max"] and b["trials"] > m["trials"], b
PY
"$GPUKIT" batch find --model a=1GiB,k=29MiB --capacity 16GiB --mode decay >"$tmp/out"
expect "$tmp/out" "trials      1"
rc=0
"$GPUKIT" batch find --model a=20GiB,k=1MiB --capacity 16GiB 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "nothing fits: exit $rc, want 1"
expect "$tmp/err" "not even the smallest batch fits"
rc=0
"$GPUKIT" batch find --model k=1MiB --capacity 16GiB 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] || fail "bad model: exit $rc, want 2"
echo "pool.sh: ok"
