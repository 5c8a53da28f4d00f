#!/usr/bin/env bash
# A real two-rank data-parallel job (Debian's python3-torch, gloo on the CPU) under gpukit run:
# the report has a per-rank table, and the straggler rule fires, naming the rank, only when one
# rank is slowed on purpose.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -qE -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
/usr/bin/python3 -c 'import torch.distributed as d; assert d.is_gloo_available()' 2>/dev/null ||
    fail "python3-torch with gloo is needed (scripts/deps.sh test installs python3-torch)"
launch=$GK_SOURCE_DIR/tests/support/launch_ranks.py
job=$GK_SOURCE_DIR/tests/support/ddp_job.py

# One rank computes 40 ms longer per step: the other waits for it in every all-reduce.
timeout 300 "$GPUKIT" run --interval 0.2 --out "$tmp/slow.jsonl" -- \
    /usr/bin/python3 "$launch" 2 "$job" --steps 40 --slow-rank 1 --slow-ms 40 \
    >"$tmp/slow.out" 2>"$tmp/slow.err" || { cat "$tmp/slow.err"; fail "the slowed job failed"; }
expect "$tmp/slow.err" "^ranks \(step: train_compute_time, median"
expect "$tmp/slow.err" "^ +0 +[0-9.]+ ms"
expect "$tmp/slow.err" "^ +1 +[0-9.]+ ms"
expect "$tmp/slow.err" "Rank 1 is a straggler"
expect "$tmp/slow.err" "rank 1's median compute time \(train_compute_time\) took"
expect "$tmp/slow.out" "rank 0: loss"

# The same job, balanced: the table, and no straggler.
timeout 300 "$GPUKIT" run --interval 0.2 --out "$tmp/even.jsonl" -- \
    /usr/bin/python3 "$launch" 2 "$job" --steps 40 \
    >"$tmp/even.out" 2>"$tmp/even.err" || { cat "$tmp/even.err"; fail "the balanced job failed"; }
expect "$tmp/even.err" "^ranks \(step: train_compute_time"
if grep -q "straggler" "$tmp/even.err"; then cat "$tmp/even.err"; fail "straggler on a balanced job"; fi

# The report of the recording again, as JSON: both ranks, and the straggler in the advice.
"$GPUKIT" report --json "$tmp/slow.jsonl" >"$tmp/slow.json"
python3 - "$tmp/slow.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ranks = {r["rank"]: r for r in d["ranks"]}
assert set(ranks) == {0, 1}, ranks
assert ranks[1]["step_p50_ms"] > 1.25 * ranks[0]["step_p50_ms"], ranks
assert [a for a in d["advice"] if a["rule"] == "straggler"], d["advice"]
PY
echo "run_ranks: ok"
