#!/usr/bin/env bash
# What users see when they get gpukit run / gpukit report wrong: one line naming the problem
# and the fix, and the documented exit codes.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
code() { local s=0; "$@" >"$tmp/out" 2>"$tmp/err" || s=$?; echo "$s"; }

[ "$(code "$GPUKIT" run)" -eq 2 ] || fail "run without a command"
expect "$tmp/err" "no command to run"
[ "$(code "$GPUKIT" run --interval 0.01 -- true)" -eq 2 ] || fail "interval too small"
expect "$tmp/err" '--interval: "0.01" is not a number of seconds from 0.05 to 3600'
[ "$(code "$GPUKIT" run --interval)" -eq 2 ] || fail "missing value"
expect "$tmp/err" "needs a value"
[ "$(code "$GPUKIT" run --frobnicate -- true)" -eq 2 ] || fail "unknown option"
expect "$tmp/err" 'unknown option "--frobnicate"'
[ "$(code "$GPUKIT" run -- /nonexistent/cmd)" -eq 127 ] || fail "missing command must exit 127"
expect "$tmp/err" 'cannot run "/nonexistent/cmd"'
[ "$(code "$GPUKIT" run --out /nonexistent/dir/r.jsonl -- true)" -eq 1 ] || fail "bad --out"
expect "$tmp/err" "cannot write the recording /nonexistent/dir/r.jsonl"
[ "$(code "$GPUKIT" run -- true)" -eq 0 ] || fail "true must exit 0"
[ "$(code "$GPUKIT" run -- false)" -eq 1 ] || fail "false must exit 1"
[ "$(code "$GPUKIT" run -- sh -c 'exit 42')" -eq 42 ] || fail "exit 42"
expect "$tmp/err" "exit status 42"
# a command that is not ours to parse: options after -- belong to it
# shellcheck disable=SC2016 # $1 is the inner shell's
[ "$(code "$GPUKIT" run -- sh -c 'test "$1" = --json' x --json)" -eq 0 ] || fail "argument passing"

# without a file, report reads the newest of ./gpukit-runs/: none in an empty folder
mkdir "$tmp/empty"
[ "$(cd "$tmp/empty" && code "$GPUKIT" report)" -eq 2 ] || fail "report without a file"
expect "$tmp/err" "no recording given and none in ./gpukit-runs/"
[ "$(code "$GPUKIT" report "$tmp/missing.jsonl")" -eq 1 ] || fail "missing recording"
expect "$tmp/err" "cannot open .*missing.jsonl"
printf 'a,b\n1,2\n' >"$tmp/x.csv"
[ "$(code "$GPUKIT" report "$tmp/x.csv")" -eq 1 ] || fail "not a recording"
expect "$tmp/err" "x.csv: line 1 is not JSON (is this a gpukit run recording?)"
"$GPUKIT" run --out "$tmp/r.jsonl" -- true 2>/dev/null
[ "$(code "$GPUKIT" report "$tmp/r.jsonl" --fail-on-regression 5)" -eq 2 ] || fail "no baseline"
expect "$tmp/err" "needs --baseline"
[ "$(code "$GPUKIT" report "$tmp/r.jsonl" --baseline "$tmp/r.jsonl" --fail-on-regression lots)" -eq 2 ] || fail "bad pct"
expect "$tmp/err" "is not a percentage"
[ "$(code "$GPUKIT" report "$tmp/r.jsonl" --json --html "$tmp/x.html")" -eq 2 ] || fail "json+html"
[ "$(code "$GPUKIT" report "$tmp/r.jsonl" --html /nonexistent/dir/x.html)" -eq 1 ] || fail "bad html path"
expect "$tmp/err" "--html /nonexistent/dir/x.html: the folder /nonexistent/dir/ does not exist"
"$GPUKIT" run --help | grep -q "usage: gpukit run"
"$GPUKIT" report --help | grep -q "usage: gpukit report"
"$GPUKIT" run --version | grep -Eq "^gpukit [0-9]+\.[0-9]+\.[0-9]+$"
"$GPUKIT" --help | grep -q "^  run "
echo "run_errors: ok"
