#!/usr/bin/env bash
# Where gpukit run keeps its recording: gpukit-runs/DATE-TIME-CMD-PID.jsonl in the current folder
# by default, named on the last line; `gpukit report` alone reads the newest; --no-record keeps
# none; a folder it cannot write to is said once and the run goes on; --out wins.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

"$GPUKIT" run -- sh -c 'exit 3' 2>err1 && fail "the command's status 3 was not passed on" || [ $? -eq 3 ]
last=$(tail -n 1 err1)
case "$last" in
    "recording: gpukit-runs/"*"-sh-"*".jsonl (gpukit report gpukit-runs/"*) ;;
    *) cat err1; fail "the last line does not name the recording: $last" ;;
esac
first=$(ls gpukit-runs)
[ "$(echo "$first" | wc -l)" -eq 1 ] || fail "one run, one recording: $first"
sleep 1.1  # the names order by second
"$GPUKIT" run -- /bin/true 2>err2
second=$(ls gpukit-runs | grep -- '-true-')
"$GPUKIT" report --json >rep.json 2>rep.err
grep -q "the newest recording: gpukit-runs/$second" rep.err || { cat rep.err; fail "report read another recording"; }
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["command"] == "/bin/true", d["command"]' rep.json

# --no-record: the report, no recording, no last line about one.
"$GPUKIT" run --no-record -- /bin/true 2>err3
[ "$(ls gpukit-runs | wc -l)" -eq 2 ] || fail "--no-record kept a recording"
grep -q "^recording:" err3 && fail "--no-record named a recording"
grep -q "^advice:" err3 || fail "--no-record printed no report"

# --out wins; --out with --no-record is a usage error.
"$GPUKIT" run --out mine.jsonl -- /bin/true 2>err4
[ -s mine.jsonl ] && [ "$(ls gpukit-runs | wc -l)" -eq 2 ] || fail "--out did not take the recording"
s=0; "$GPUKIT" run --out x.jsonl --no-record -- /bin/true 2>err5 || s=$?
[ "$s" -eq 2 ] && grep -q "contradict" err5 || fail "--out with --no-record: status $s"

# A folder it cannot write to (/proc refuses a new folder even to root): said once, the command
# runs, the report is printed.
(cd /proc && "$GPUKIT" run -- /bin/true 2>"$tmp/err6") || fail "an unwritable folder failed the run"
grep -q "cannot create gpukit-runs/ in the current folder" err6 || { cat err6; fail "not said"; }
[ "$(grep -c "cannot create" err6)" -eq 1 ] || fail "said more than once"
grep -q "^advice:" err6 || fail "no report"

# Without any recording: a clear usage error.
mkdir empty && cd empty
s=0; "$GPUKIT" report 2>err7 || s=$?
[ "$s" -eq 2 ] && grep -q "none in ./gpukit-runs/" err7 || { cat err7; fail "report without a recording: status $s"; }
echo "run_record: ok"
