#!/usr/bin/env bash
# Baseline comparison: two recordings of the same workload compare as unchanged; a deliberately
# slowed copy is flagged as a regression of the right metrics with the right sign, and
# --fail-on-regression exits non-zero for it (and zero for the unchanged one).
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
workload="$GK_SOURCE_DIR/tests/support/run_workload.py"

run() { timeout 120 "$GPUKIT" run --interval 0.05 --out "$tmp/$1.jsonl" -- python3 "$workload" "${@:2}" 2>/dev/null; }
run base --steps 40 --step-ms 10 --throughput 1000
run same --steps 40 --step-ms 10 --throughput 1000
run slow --steps 40 --step-ms 25 --throughput 400

"$GPUKIT" report "$tmp/same.jsonl" --baseline "$tmp/base.jsonl" --fail-on-regression 5 >"$tmp/same.txt" ||
    { cat "$tmp/same.txt"; fail "the same workload was flagged"; }
expect "$tmp/same.txt" "against the baseline: 0 regressions, 0 improvements"
"$GPUKIT" report "$tmp/same.jsonl" --baseline "$tmp/base.jsonl" --json >"$tmp/same.json"
python3 - "$tmp/same.json" <<'PY'
import json, sys
c = {x["name"]: x for x in json.load(open(sys.argv[1]))["comparison"]}
for n in ("step_time", "samples_per_second{phase:train}", "batches"):
    assert c[n]["verdict"] == "unchanged", c[n]
PY

status=0
"$GPUKIT" report "$tmp/slow.jsonl" --baseline "$tmp/base.jsonl" --fail-on-regression 5 \
    >"$tmp/slow.txt" 2>"$tmp/slow.err" || status=$?
[ "$status" -eq 1 ] || { cat "$tmp/slow.txt"; fail "regression not failed: status $status"; }
expect "$tmp/slow.err" "regressed by more than 5% beyond noise"
expect "$tmp/slow.txt" "regression  step_time (time-like): median 10 -> 25 (+150.0%)"
expect "$tmp/slow.txt" "regression  samples_per_second{phase:train} (throughput-like): median 1000 -> 400 (-60.0%)"
# regressions are listed first
sed -n '/against the baseline/,$p' "$tmp/slow.txt" | sed -n 2p | grep -q "^  regression" ||
    fail "regressions must come first"
"$GPUKIT" report "$tmp/slow.jsonl" --baseline "$tmp/base.jsonl" --json >"$tmp/slow.json"
python3 - "$tmp/slow.json" <<'PY'
import json, sys
c = {x["name"]: x for x in json.load(open(sys.argv[1]))["comparison"]}
s = c["step_time"]
assert s["verdict"] == "regression" and s["direction"] == "time-like" and s["p50_change_pct"] > 100, s
t = c["samples_per_second{phase:train}"]
assert t["verdict"] == "regression" and t["direction"] == "throughput-like" and t["p50_change_pct"] < -50, t
PY
# A threshold above the change passes; the reverse comparison is an improvement.
"$GPUKIT" report "$tmp/slow.jsonl" --baseline "$tmp/base.jsonl" --fail-on-regression 500 >/dev/null
"$GPUKIT" report "$tmp/base.jsonl" --baseline "$tmp/slow.jsonl" >"$tmp/rev.txt"
expect "$tmp/rev.txt" "improvement step_time"
echo "run_baseline: ok"
