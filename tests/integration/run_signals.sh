#!/usr/bin/env bash
# Endings: a command killed by SIGKILL, gpukit interrupted with SIGINT and SIGTERM (forwarded to
# the command), gpukit itself killed, and a recording cut in the middle of a line. Each leaves a
# readable recording and a report.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do
        if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
workload="$GK_SOURCE_DIR/tests/support/run_workload.py"

# Waits (bounded) until a file exists.
wait_for() {
    for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.05; done
    fail "timed out waiting for $1"
}

# 1. The command kills itself with SIGKILL: exit 137, end line with signal 9.
status=0
timeout 60 "$GPUKIT" run --interval 0.05 --out "$tmp/k.jsonl" -- python3 "$workload" --steps 5 \
    --kill-self 2>"$tmp/k.err" || status=$?
[ "$status" -eq 137 ] || { cat "$tmp/k.err"; fail "SIGKILLed command: status $status, expected 137"; }
expect "$tmp/k.err" "killed by signal 9"
python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1])]
e=r[-1]; assert e["type"]=="end" and e["signal"]==9 and e["exit_status"]==137 and e["exit_code"]==-1, e
assert e["metric_lines"]==10, e' "$tmp/k.jsonl"
"$GPUKIT" report "$tmp/k.jsonl" >"$tmp/k.txt"
expect "$tmp/k.txt" "killed by signal 9"

# 2 and 3. gpukit interrupted: the signal goes to the command, gpukit finishes the recording and
# exits with the command's status (128 + the signal).
for sig in INT TERM; do
    rm -f "$tmp/pid"
    # not under timeout(1): it would signal its whole process group, gpukit included; the wait
    # below is bounded by the command's 30 s sleep
    "$GPUKIT" run --interval 0.05 --out "$tmp/$sig.jsonl" -- python3 "$workload" \
        --steps 2 --sleep 30 --pidfile "$tmp/pid" 2>"$tmp/$sig.err" &
    gk=$!
    pids+=("$gk")
    wait_for "$tmp/pid"
    pids+=("$(cat "$tmp/pid")")
    kill -s "$sig" "$gk"
    status=0
    wait "$gk" || status=$?
    num=$(kill -l "$sig")
    [ "$status" -eq $((128 + num)) ] || { cat "$tmp/$sig.err"; fail "SIG$sig: status $status, expected $((128 + num))"; }
    kill -0 "$(cat "$tmp/pid")" 2>/dev/null && fail "SIG$sig was not forwarded: the command still runs"
    python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1])]
assert r[0]["type"]=="meta" and r[-1]["type"]=="end", r[-1]
assert r[-1]["signal"]==int(sys.argv[2]) and r[-1]["metric_lines"]==4, r[-1]' "$tmp/$sig.jsonl" "$num"
    expect "$tmp/$sig.err" "^gpukit report:"
    expect "$tmp/$sig.err" "killed by signal $num"
done

# 4. gpukit itself killed: no end line; the report says the run did not finish.
rm -f "$tmp/pid"
"$GPUKIT" run --interval 0.05 --out "$tmp/dead.jsonl" -- python3 "$workload" --steps 2 --sleep 30 \
    --pidfile "$tmp/pid" 2>/dev/null &
gk=$!
pids+=("$gk")
wait_for "$tmp/pid"
pids+=("$(cat "$tmp/pid")")
for _ in $(seq 1 100); do [ "$(wc -l <"$tmp/dead.jsonl")" -ge 4 ] && break; sleep 0.05; done
kill -9 "$gk"
wait "$gk" 2>/dev/null || true
kill -9 "$(cat "$tmp/pid")" 2>/dev/null || true
"$GPUKIT" report "$tmp/dead.jsonl" >"$tmp/dead.txt" 2>&1 || fail "report of an unfinished run failed"
expect "$tmp/dead.txt" "the run did not finish"
expect "$tmp/dead.txt" "warning: no end line"

# 5. A recording cut in the middle of a line: a warning, never an error.
head -c -7 "$tmp/k.jsonl" >"$tmp/cut.jsonl"
"$GPUKIT" report "$tmp/cut.jsonl" >"$tmp/cut.txt" 2>&1 || fail "report of a cut recording failed"
expect "$tmp/cut.txt" "warning: line [0-9]*: the last line is cut off"
"$GPUKIT" report "$tmp/cut.jsonl" --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d["finished"] is False and any("cut off" in w for w in d["warnings"]), d["warnings"]'

# A malformed line in the middle is named by its number.
{ head -n 2 "$tmp/k.jsonl"; echo '{"type": broken'; tail -n +3 "$tmp/k.jsonl"; } >"$tmp/bad.jsonl"
"$GPUKIT" report "$tmp/bad.jsonl" >"$tmp/bad.txt"
expect "$tmp/bad.txt" "warning: line 3: not JSON (skipped)"
echo "run_signals: ok"
