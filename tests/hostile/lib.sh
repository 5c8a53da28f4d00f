# Shared by the hostile-input tests (sourced, not run): a private folder (also TMPDIR, so that
# nothing gpukit leaves behind goes unnoticed), private device nodes, and checks.
set -euo pipefail
: "${GPUKIT:?GPUKIT must name the gpukit binary}"
G=$GPUKIT
tmp=$(mktemp -d)
export TMPDIR="$tmp/tmpdir"
mkdir -p "$TMPDIR"
pids=()
cases=0
cleanup() {
    for p in "${pids[@]:-}"; do
        if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; fi
    done
    if [ -n "${mounted:-}" ]; then umount "$mounted" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
exec 9>&2 # the test's stderr, for failures reported while a command's stderr is redirected
fail() {
    echo "FAIL: $*" >&9
    exit 1
}
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
refuse() { if grep -q -- "$2" "$1"; then echo "--- $1:"; cat "$1"; fail "did not expect \"$2\" in $1"; fi; }
# status WANT CMD...: runs CMD, which must exit with WANT ("nonzero" for any failure).
status() {
    local want=$1 got=0
    shift
    "$@" || got=$?
    if [ "$want" = nonzero ]; then
        [ "$got" -ne 0 ] || fail "\`$*\` exited 0, expected a failure"
    else
        [ "$got" -eq "$want" ] || fail "\`$*\` exited $got, expected $want"
    fi
}
# One regression case passed; the count is printed at the end (docs/reliability.md lists it).
ok() {
    cases=$((cases + 1))
    echo "ok $cases - $*"
}
# A private character device with the numbers of /dev/full (1,7) or /dev/null (1,3); never the
# system's node. Returns 1 when this user may not make device nodes.
node() { mknod "$tmp/$1" c 1 "$2" 2>/dev/null && chmod 666 "$tmp/$1"; }
is_char() { [ -c "$1" ] || fail "$1 is no longer a character device"; }
# Nothing left in the private TMPDIR (gpukit-run-* folders, recordings, temporary files).
clean_tmpdir() {
    local left
    left=$(ls -A "$TMPDIR")
    [ -z "$left" ] || fail "left behind in TMPDIR: $left"
}
# Nothing named .NAME.gk-XXXXXX left in a folder.
no_temp_files() {
    local left
    left=$(find "$1" -maxdepth 1 -name '.*.gk-*' | head -5)
    [ -z "$left" ] || fail "temporary files left in $1: $left"
}
done_cases() { echo "$(basename "$0" .sh): $cases cases passed"; }
