#!/usr/bin/env bash
# gpukit run when things break (what run_signals.sh does not cover): a command that dies of
# SIGSEGV, a command that forks a child away and exits, a recording that cannot be written at all
# (/dev/full), and a recording that stops growing mid-run (a file-size limit, and a full tmpfs when
# this user may mount one). The command always runs to its end; gpukit says what happened in one
# line; the complete lines of the recording stay readable. Every wait is bounded.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
mounted=""
orphan=""
cleanup() {
    if [ -n "$orphan" ]; then kill -9 "$orphan" 2>/dev/null || true; fi
    if [ -n "$mounted" ]; then umount "$mounted" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }

# 1. The command dies of SIGSEGV: status 139, the end line names signal 11, the report reads it.
status=0
timeout 60 "$GPUKIT" run --interval 0.05 --out "$tmp/segv.jsonl" -- \
    sh -c 'sleep 0.2; kill -SEGV $$' >"$tmp/segv.out" 2>&1 || status=$?
[ "$status" -eq 139 ] || { cat "$tmp/segv.out"; fail "SIGSEGV: status $status, expected 139"; }
tail -n 1 "$tmp/segv.jsonl" | grep -q '"type":"end".*"signal":11' || fail "SIGSEGV: no end line"
"$GPUKIT" report "$tmp/segv.jsonl" >"$tmp/segv.txt" 2>&1 || fail "report after SIGSEGV failed"
expect "$tmp/segv.txt" "killed by signal 11"

# 2. The command forks a child away and exits 3: gpukit ends with it (it does not wait for the
# orphan, which is still running afterwards), status 3.
status=0
timeout 60 "$GPUKIT" run --interval 0.05 --out "$tmp/fork.jsonl" -- \
    sh -c "sleep 60 & echo \$! >'$tmp/orphan.pid'; exit 3" >/dev/null 2>&1 || status=$?
[ "$status" -eq 3 ] || fail "forking command: status $status, expected 3"
orphan=$(cat "$tmp/orphan.pid")
kill -0 "$orphan" 2>/dev/null || fail "the forked-away child was killed"
tail -n 1 "$tmp/fork.jsonl" | grep -q '"type":"end".*"exit_status":3' || fail "fork: no end line"
kill -9 "$orphan" 2>/dev/null || true
orphan=""

# 3. A recording that cannot be written at all: one clear line, exit 1, the command not started.
status=0
timeout 60 "$GPUKIT" run --interval 0.05 --out /dev/full -- \
    sh -c "touch '$tmp/started'" >/dev/null 2>"$tmp/full.err" || status=$?
[ "$status" -eq 1 ] || { cat "$tmp/full.err"; fail "/dev/full: status $status, expected 1"; }
expect "$tmp/full.err" "gpukit: cannot write the recording /dev/full: No space left on device"
[ ! -e "$tmp/started" ] || fail "/dev/full: the command was started without a recording"

# 4. The recording hits a file-size limit mid-run (gpukit ignores SIGXFSZ, the command gets the
# default back): the command runs to its end and its status is kept, gpukit names the problem,
# and the lines written before it are readable.
status=0
(
    ulimit -f 4
    timeout 60 "$GPUKIT" run --interval 0.05 --out "$tmp/big.jsonl" -- \
        sh -c "sleep 1; touch '$tmp/finished'; exit 4" >"$tmp/big.out" 2>"$tmp/big.err"
) || status=$?
[ "$status" -eq 4 ] || { cat "$tmp/big.err"; fail "file-size limit: status $status, expected 4"; }
[ -e "$tmp/finished" ] || fail "file-size limit: the command did not run to its end"
expect "$tmp/big.err" "gpukit: the recording $tmp/big.jsonl is incomplete: writing it failed (File too large)"
"$GPUKIT" report "$tmp/big.jsonl" >"$tmp/big.txt" 2>&1 || fail "report of a cut recording failed"
expect "$tmp/big.txt" "the run did not finish"

# 5. The same on a full filesystem, when this user may mount a tiny tmpfs.
mkdir "$tmp/tiny"
if mount -t tmpfs -o size=8k tmpfs "$tmp/tiny" 2>/dev/null; then
    mounted="$tmp/tiny"
    rm -f "$tmp/finished"
    status=0
    timeout 60 "$GPUKIT" run --interval 0.05 --out "$tmp/tiny/r.jsonl" -- \
        sh -c "sleep 2; touch '$tmp/finished'; exit 5" >/dev/null 2>"$tmp/tiny.err" || status=$?
    [ "$status" -eq 5 ] || { cat "$tmp/tiny.err"; fail "full disk: status $status, expected 5"; }
    [ -e "$tmp/finished" ] || fail "full disk: the command did not run to its end"
    expect "$tmp/tiny.err" "is incomplete: writing it failed (No space left on device)"
    "$GPUKIT" report "$tmp/tiny/r.jsonl" >"$tmp/tiny.txt" 2>&1 || fail "report on a full disk failed"
    umount "$tmp/tiny"
    mounted=""
else
    echo "cannot mount a tmpfs here: the full-filesystem case is covered by the file-size limit"
fi
echo "run_crash: ok"
