#!/usr/bin/env bash
# The process tree's CPU seconds under `gpukit run` for a command made of short-lived children (a
# shell loop): each child's CPU stays counted after it exits (it moves into the shell's reaped
# time), so the recorded gpukit_process_tree_cpu_seconds_total never falls and ends close to wait4's figure.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Each child burns 0.2 s of its own CPU time (process_time, not wall time), then exits; the
# shell lingers after the last one so a sample sees it reaped.
burn='import time
t = time.process_time()
while time.process_time() - t < 0.2:
    sum(range(1000))'
timeout 120 "$GPUKIT" run --interval 0.05 --out "$tmp/run.jsonl" -- \
    sh -c 'for i in 1 2 3 4; do python3 -c "$0"; done; sleep 0.3' "$burn" \
    >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err"; fail "gpukit run failed"; }

python3 - "$tmp/run.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
end = recs[-1]
assert end["type"] == "end" and end["exit_status"] == 0, end
wait4 = end["cpu_seconds"]
assert wait4 >= 0.8, end                     # four children x 0.2 s
cpu = [r["v"]["gpukit_process_tree_cpu_seconds_total"] for r in recs
       if r["type"] == "sample" and "gpukit_process_tree_cpu_seconds_total" in r["v"]]
assert len(cpu) >= 5, cpu
for a, b in zip(cpu, cpu[1:]):
    assert b >= a - 1e-9, ("tree CPU seconds fell", a, b, cpu)
assert abs(cpu[-1] - wait4) <= 0.25 * wait4, ("tree CPU vs wait4", cpu[-1], wait4, cpu)
PY
echo "run_tree_cpu: ok"
