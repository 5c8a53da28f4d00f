#!/usr/bin/env bash
# `gpukit loader bench` when its file changes or its run is cut short: a record file truncated at
# random moments under the bench (0, 1, 2 and 4 workers; during the loader's run and during the
# bench's own memcpy baseline) ends the bench with an error naming the file, or lets it finish,
# and never kills it with a signal; a generated file is refused when it cannot fit (overflow, free
# disk space) and is removed on every exit path (a write past `ulimit -f`, SIGTERM, SIGINT).
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }

# 16 records of 1 MiB.
head -c $((16 << 20)) /dev/urandom >"$tmp/raw"
"$GPUKIT" data pack --record-size 1048576 "$tmp/raw" "$tmp/orig.gkr" >/dev/null
rm -f "$tmp/raw"

# Cut under the bench at random moments. Run i: workers 0/1/2/4; the first half cut anywhere in
# the bench's life (warm, loader run, baseline), the second half late (mostly in the baseline,
# which runs max(0.2 s, seconds/2) after a 0.05 s loader run).
errors=0 finished=0
RANDOM=15
for i in $(seq 0 23); do
    w=$(((i % 4) == 3 ? 4 : i % 4))
    cp "$tmp/orig.gkr" "$tmp/f.gkr"
    if [ "$i" -lt 12 ]; then
        secs=0.3 delay=$(printf '0.%03d' $((RANDOM % 700)))
    else
        secs=0.05 delay=$(printf '0.%03d' $((80 + RANDOM % 150)))
    fi
    set +e
    "$GPUKIT" loader bench --file "$tmp/f.gkr" --seconds "$secs" --batch 2 --workers "$w" \
        --shuffle --json >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    sleep "$delay"
    truncate -s $(((RANDOM % 3) * 3000 + 4096)) "$tmp/f.gkr"
    wait "$pid"
    rc=$?
    set -e
    if [ "$rc" -ge 128 ]; then
        cat "$tmp/err"
        fail "run $i ($w workers, cut after $delay s): killed by signal $((rc - 128))"
    elif [ "$rc" = 1 ]; then
        expect "$tmp/err" "$tmp/f.gkr"
        expect "$tmp/err" "truncated"
        errors=$((errors + 1))
    elif [ "$rc" = 0 ]; then
        finished=$((finished + 1)) # cut after the loader's run: in the baseline or later
    else
        cat "$tmp/err"
        fail "run $i: exit status $rc"
    fi
done
echo "loader bench under truncation: $errors runs ended with the file's error, $finished finished"

# A generated file that cannot be: 64-bit overflow, more than the free disk space.
set +e
"$GPUKIT" loader bench --record-size 1e9 --records 1e12 2>"$tmp/err"
[ $? = 1 ] || fail "overflowing generated file accepted"
expect "$tmp/err" "too many"
"$GPUKIT" loader bench --record-size 1e9 --records 1e9 2>"$tmp/err"
[ $? = 1 ] || fail "generated file larger than the disk accepted"
expect "$tmp/err" "is free there"
set -e

# The generated file is removed on every exit path.
mkdir "$tmp/t"
set +e
(ulimit -f 1000 && TMPDIR="$tmp/t" exec "$GPUKIT" loader bench --record-size 4096 \
    --records 10000 --seconds 0.1) 2>"$tmp/err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "write past ulimit -f: exit status $rc"
expect "$tmp/err" "File too large"
[ -z "$(ls -A "$tmp/t")" ] || fail "file left after a write past ulimit -f: $(ls -A "$tmp/t")"
for sig in TERM INT; do
    TMPDIR="$tmp/t" "$GPUKIT" loader bench --record-size 4096 --records 4000 --seconds 30 \
        >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do # until the file exists (the bench is running)
        [ -n "$(ls -A "$tmp/t")" ] && break
        sleep 0.05
    done
    sleep 0.3
    kill -s "$sig" "$pid"
    set +e
    wait "$pid"
    rc=$?
    set -e
    [ "$rc" -ge 128 ] || fail "SIG$sig: exit status $rc"
    [ -z "$(ls -A "$tmp/t")" ] || fail "file left after SIG$sig: $(ls -A "$tmp/t")"
done
echo "ok"
