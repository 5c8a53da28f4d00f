#!/usr/bin/env bash
# gpukit run end to end on a known workload: CPU burnt by a parent and two children, memory
# held, known StatsD metrics plus malformed lines, a known exit status. The recording, the text
# and JSON reports and the exit status must say exactly that.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
workload="$GK_SOURCE_DIR/tests/support/run_workload.py"

status=0
timeout 120 "$GPUKIT" run --interval 0.1 --out "$tmp/run.jsonl" -- \
    python3 "$workload" --burn 0.6 --children 2 --child-burn 0.4 --alloc-mb 64 --steps 20 \
    --step-ms 10 --throughput 500 --malformed 3 --exit 7 >"$tmp/out" 2>"$tmp/err" || status=$?
[ "$status" -eq 7 ] || { cat "$tmp/err"; fail "exit status $status, expected the command's 7"; }
expect "$tmp/err" "^gpukit report: python3 .*run_workload.py"
expect "$tmp/err" "exit status 7 after"
expect "$tmp/err" "60 metric lines received, 3 malformed"
expect "$tmp/err" "metric-lines-refused"
expect "$tmp/err" "^step_time (ms) *20 "
expect "$tmp/err" "recording: $tmp/run.jsonl"
[ "$(grep -c "GPU metrics off" "$tmp/err")" -eq 1 ] || fail "GPU metrics off must be said once"

python3 - "$tmp/run.jsonl" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
recs = [json.loads(l) for l in lines]          # every line is complete JSON
meta, end = recs[0], recs[-1]
assert meta["type"] == "meta" and meta["schema"] == 1, meta
assert meta["command"][0] == "python3" and meta["command"][-1] == "7", meta
assert meta["interval_s"] == 0.1 and meta["cores"] >= 1, meta
assert end["type"] == "end" and end["exit_status"] == 7 and end["exit_code"] == 7, end
assert end["signal"] == 0 and end["metric_lines"] == 60 and end["metric_malformed"] == 3, end
# CPU by rusage covers the parent's 0.6 s and the children's 2 x 0.4 s
assert end["cpu_seconds"] >= 1.3, end
assert end["max_rss_bytes"] >= 64 << 20, end
samples = [r for r in recs if r["type"] == "sample"]
assert len(samples) >= 3 and end["samples"] == len(samples), (len(samples), end)
ts = [s["t"] for s in samples]
assert ts == sorted(ts), ts
assert max(s["v"].get("gpukit_process_tree_processes", 0) for s in samples) >= 3   # parent + 2 children
assert max(s["v"].get("gpukit_process_tree_resident_memory_bytes", 0) for s in samples) >= 64 << 20
metrics = [r for r in recs if r["type"] == "metric"]
steps = [m["value"] for m in metrics if m["name"] == "step_time"]
assert len(steps) == 20 and abs(sorted(steps)[10] - 10) < 1e-9, steps
tags = {m.get("tags") for m in metrics if m["name"] == "samples_per_second"}
assert tags == {"phase:train"}, tags
PY

# The same report later, as JSON.
"$GPUKIT" report "$tmp/run.jsonl" --json >"$tmp/rep.json"
python3 - "$tmp/rep.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["exit_status"] == 7 and d["finished"] is True and d["warnings"] == [], d
s = {x["name"]: x for x in d["series"]}
st = s["step_time"]
assert st["kind"] == "timer" and st["count"] == 20 and abs(st["p50"] - 10) < 1e-9, st
assert abs(st["min"] - 9.9) < 1e-9 and abs(st["max"] - 10.1) < 1e-9, st
b = s["batches"]
assert b["kind"] == "counter" and b["sum"] == 20 and b["rate_per_second"] > 0, b
assert s["samples_per_second{phase:train}"]["count"] == 20
for name in ("gpukit_cpu_busy_ratio", "gpukit_process_tree_cpu_cores", "gpukit_process_tree_resident_memory_bytes", "gpukit_process_tree_processes"):
    assert s[name]["count"] >= 3, name
assert s["gpukit_process_tree_processes"]["max"] >= 3
assert any(a["rule"] == "metric-lines-refused" and "3 StatsD lines" in a["evidence"] for a in d["advice"]), d["advice"]
assert d["gpu"]["enabled"] is False and d["gpu"]["reason"], d["gpu"]
PY

# --json on gpukit run puts the report on stdout.
timeout 60 "$GPUKIT" run --json --interval 0.05 -- python3 "$workload" --steps 3 >"$tmp/j.out" 2>"$tmp/j.err"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["exit_status"]==0 and d["metric_lines"]==6, d' "$tmp/j.out"

# A CPU-bound single process gets the single-thread advice (enough samples at 0.05 s).
timeout 60 "$GPUKIT" run --interval 0.05 --json -- python3 "$workload" --burn 1.0 >"$tmp/b.out" 2>/dev/null
python3 - "$tmp/b.out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = {x["name"]: x for x in d["series"]}
c = s["gpukit_process_tree_cpu_cores"]
cores = d["cores"]
# On a loaded machine the process may get less than a core; the rule fires only on evidence.
fired = any(a["rule"] == "single-thread-bound" for a in d["advice"])
if cores >= 2 and 0.85 <= c["p50"] <= 1.15:
    assert fired, d["advice"]
if not (0.85 <= c["p50"] <= 1.15):
    assert not fired, d["advice"]
assert d["cpu_seconds"] >= 1.0, d
PY
echo "run_workload: ok"
