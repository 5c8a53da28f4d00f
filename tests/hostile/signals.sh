#!/usr/bin/env bash
# gpukit run owns its signals: every signal that would end it is forwarded to the command or
# ignored, so the recording always gets its end line and the socket's folder is removed; INT,
# TERM and HUP are followed by SIGCONT (a stopped command acts on them) and a second one kills;
# --json keeps the command's stdout out of the report; a closed stdout keeps the command's status;
# an empty command is one clear error. Every wait is bounded.
source "$(dirname "$0")/lib.sh"
cd "$tmp"

wait_for() {
    for _ in $(seq 1 200); do [ -s "$1" ] && return 0; sleep 0.05; done
    fail "timed out waiting for $1"
}
# The last line of a recording (grep reads all of it: no early exit under pipefail).
end_line() { tail -n 1 "$1" | grep '"type":"end"' >/dev/null || fail "$1 has no end line: $(tail -n 1 "$1")"; }

# Starts `gpukit run --out $1.jsonl -- sh -c CMD` in the background once its command runs.
start_run() {
    local name=$1 cmd=$2
    rm -f pid
    "$G" run --no-gpu --interval 0.05 --out "$name.jsonl" -- sh -c "echo \$\$ >pid; $cmd" \
        >"$name.out" 2>"$name.err" &
    gk=$!
    pids+=("$gk")
    wait_for pid
    pids+=("$(cat pid)")
}

# 1. Signals that used to kill gpukit (the recording without its end line, the command
# orphaned, /tmp/gpukit-run-* left): forwarded to the command, which dies of them.
for sig in USR1 USR2 QUIT ALRM VTALRM; do
    start_run "$sig" "exec sleep 30"
    kill -s "$sig" "$gk"
    got=0
    wait "$gk" || got=$?
    num=$(kill -l "$sig")
    [ "$got" -eq $((128 + num)) ] || { cat "$sig.err"; fail "SIG$sig: status $got, expected $((128 + num))"; }
    end_line "$sig.jsonl"
    tail -n 1 "$sig.jsonl" | grep "\"signal\":$num" >/dev/null ||
        fail "SIG$sig: the end line names another signal"
    kill -0 "$(cat pid)" 2>/dev/null && fail "SIG$sig: the command still runs"
    clean_tmpdir
    ok "SIG$sig to gpukit run is forwarded; the recording ends, nothing is left"
done

# 2. SIGPIPE is ignored: the command runs to its end.
start_run pipe "sleep 0.5; exit 3"
kill -s PIPE "$gk"
status 3 wait "$gk"
end_line pipe.jsonl
clean_tmpdir
ok "SIGPIPE to gpukit run is ignored; the command's status is kept"

# 3. A stopped command gets SIGCONT after the forwarded SIGTERM, so it acts on it (it used to
# stay stopped until killed by hand).
start_run stop 'kill -STOP $$; sleep 30'
for _ in $(seq 1 100); do
    [ "$(ps -o stat= -p "$(cat pid)" 2>/dev/null | cut -c1)" = T ] && break
    sleep 0.05
done
kill -TERM "$gk"
got=0
timeout 30 tail --pid="$gk" -f /dev/null || fail "gpukit run did not end after SIGTERM to a stopped command"
wait "$gk" || got=$?
[ "$got" -eq 143 ] || { cat stop.err; fail "stopped command: status $got, expected 143"; }
end_line stop.jsonl
ok "SIGTERM reaches a stopped command (followed by SIGCONT)"

# 4. A second interrupt kills a command that ignores the first.
start_run stubborn 'trap "" TERM INT; sleep 30'
kill -TERM "$gk"
sleep 0.3
kill -0 "$gk" 2>/dev/null || fail "one SIGTERM ended gpukit run although the command ignores it"
kill -INT "$gk"
got=0
wait "$gk" || got=$?
[ "$got" -eq 137 ] || { cat stubborn.err; fail "second interrupt: status $got, expected 137"; }
end_line stubborn.jsonl
clean_tmpdir
ok "a second interrupt kills the command (SIGKILL)"

# 5. --json: stdout holds the JSON report alone; the command's own output goes to stderr.
"$G" run --no-gpu --json -- sh -c 'echo from-the-command' >json.out 2>json.err
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["exit_status"]==0' json.out ||
    fail "--json stdout is not one JSON object: $(head -c 300 json.out)"
expect json.err "from-the-command"
ok "--json keeps the command's stdout out of the report"

# 6. A closed stdout (the reader went away) keeps the command's status; it used to be 141.
set +o pipefail
"$G" run --no-gpu --json -- sh -c 'exit 7' 2>/dev/null | true
got=${PIPESTATUS[0]}
set -o pipefail
[ "$got" -eq 7 ] || fail "gpukit run --json ... | true exited $got, expected 7"
clean_tmpdir
ok "a broken pipe on stdout keeps the command's status"

# 7. ... but a full disk on stdout is an error when the command succeeded.
if node full 7; then
    status 1 "$G" run --no-gpu --json -- true >full 2>err
    expect err "cannot write to standard output: No space left on device"
    is_char full
    ok "gpukit run --json > full device fails"
fi

# 8. An empty or missing command: one line, exit 2, no recording read.
status 2 "$G" run -- "" 2>err
[ "$(wc -l <err)" -eq 1 ] || { cat err; fail "an empty command gave more than one line"; }
expect err 'the command to run is empty'
ok "an empty command is one clear error"
status 2 "$G" run --no-gpu 2>err
[ "$(wc -l <err)" -eq 1 ] || { cat err; fail "a missing command gave more than one line"; }
expect err "no command to run"
ok "a missing command is one clear error"
clean_tmpdir
done_cases
