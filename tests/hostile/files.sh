#!/usr/bin/env bash
# Hostile files: a write never destroys what was there. Device nodes (private ones, made with
# mknod here), links to them, directories and pipes are never renamed over, truncated or deleted;
# a failed write leaves an existing file whole; a full disk or a file-size limit is an error that
# names the file, on stdout too.
source "$(dirname "$0")/lib.sh"
: "${GK_SOURCE_DIR:?}"
trace="$GK_SOURCE_DIR/tests/data/cnn_train_trace.csv"
cd "$tmp"
head -c 64 /dev/urandom >ok.bin
"$G" data pack --record-size 4 ok.bin ok.gkr >/dev/null
"$G" run --no-gpu --interval 0.05 --out run.jsonl -- true 2>/dev/null

if node full 7 && node null 3; then
    # data pack onto a device: refused, and the node is still there (it used to be deleted).
    status 1 "$G" data pack --record-size 4 ok.bin full 2>err
    expect err "full: is a character device"
    is_char full
    ok "data pack onto a device node keeps the node"

    # serve --textfile onto a device: written in place, the full disk reported, the node kept
    # (a regular file used to be renamed over it).
    status 1 timeout 20 "$G" serve --interval 0.1 --textfile full 2>err
    expect err "cannot write full: no space left"
    is_char full
    ok "serve --textfile onto a device node keeps the node"
    ln -s full full-link
    status 1 timeout 20 "$G" serve --interval 0.1 --textfile full-link 2>err
    [ -L full-link ] || fail "the link to the device was replaced"
    is_char full
    ok "serve --textfile through a link to a device keeps both"
    timeout 20 "$G" serve --interval 0.05 --textfile null 2>err &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 100); do grep -q "writing null" err && break; sleep 0.05; done
    sleep 0.3
    kill -TERM "$pid"
    wait "$pid" || fail "serve --textfile onto a null device failed: $(cat err)"
    is_char null
    ok "serve --textfile onto a null device runs"

    # Every command's stdout on a full disk: an error naming the cause, never exit 0.
    for cmd in "pool replay $trace" "pool fcap $trace" "report run.jsonl" "report --json run.jsonl" \
        "info" "data inspect ok.gkr" "pool synth --model transformer --steps 1" "--version"; do
        # shellcheck disable=SC2086
        status 1 "$G" $cmd >full 2>err
        expect err "cannot write to standard output: No space left on device"
        ok "gpukit $cmd > full device fails"
    done
    status 1 "$G" pool replay "$trace" --snapshot full >/dev/null 2>err
    expect err "No space left on device"
    refuse err "input/output error"
    is_char full
    ok "--snapshot onto a full device names the full disk"
    status 1 "$G" report run.jsonl --html full 2>err
    expect err "No space left on device"
    is_char full
    ok "--html onto a full device"
else
    echo "cannot make device nodes here (not root): the device cases are skipped"
fi

# data pack of a .npy whose shape times item size wraps: refused before the output is touched
# (precious.txt used to be deleted).
python3 - <<'PY'
import struct
h = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 65536, 281474976710657), }"
h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
open("wrap.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + b"\0" * 64)
PY
echo "keep me" >precious.txt
status 1 "$G" data pack --npy wrap.npy precious.txt 2>err
expect err "wrap.npy: .npy shape makes records larger than 1 TiB (dimension 2 is 281474976710657)"
[ "$(cat precious.txt)" = "keep me" ] || fail "precious.txt was changed"
ok "a wrapping .npy shape leaves the output alone"

# A write cut by a file-size limit: the existing file stays whole, the limit is named.
head -c 200000 /dev/urandom >big.bin
cp ok.gkr before.gkr
status 1 bash -c "ulimit -f 64; exec \"$G\" data pack --record-size 4 big.bin ok.gkr" 2>err
expect err "File too large"
cmp -s ok.gkr before.gkr || fail "ok.gkr was changed by a failed pack"
no_temp_files .
ok "data pack cut by a file-size limit keeps the old file"
echo "<html>old report</html>" >report.html
status 1 bash -c "ulimit -f 1; exec \"$G\" report run.jsonl --html report.html" 2>err
expect err "File too large"
[ "$(cat report.html)" = "<html>old report</html>" ] || fail "report.html was cut"
no_temp_files .
ok "report --html cut by a file-size limit keeps the old page"

# A directory, a missing folder: refused at once with the reason.
status 1 timeout 20 "$G" serve --interval 0.1 --textfile "$tmp" 2>err
expect err "is a directory; name a regular file inside it"
refuse err "unknown error"
ok "serve --textfile onto a directory says so"
status 1 "$G" data pack --record-size 4 ok.bin nowhere/out.gkr 2>err
expect err "the folder nowhere/ does not exist"
ok "data pack into a missing folder says so"

# A FIFO with no reader is refused, not waited for.
mkfifo fifo
status 1 timeout 20 "$G" report run.jsonl --html fifo 2>err
expect err "a named pipe with no reader"
[ -p fifo ] || fail "the FIFO was replaced"
ok "--html onto a FIFO without a reader is refused at once"

# --textfile /dev/stdout appends to what stdout is (>>), never replacing the file behind it.
echo "first line" >log.txt
ino=$(stat -c %i log.txt)
GK_NVML_LIBRARY=/nonexistent timeout 20 "$G" serve --interval 0.05 --textfile /dev/stdout >>log.txt 2>err &
pid=$!
pids+=("$pid")
for _ in $(seq 1 100); do grep -q "^gpukit_" log.txt && break; sleep 0.05; done
kill -TERM "$pid"
wait "$pid" || true
[ "$(stat -c %i log.txt)" = "$ino" ] || fail "log.txt was replaced"
[ "$(head -n 1 log.txt)" = "first line" ] || fail "log.txt lost its first line"
grep -q "^gpukit_memory_total_bytes" log.txt || fail "no metrics appended to log.txt"
ok "--textfile /dev/stdout appends to stdout's file"

# The replaced file keeps its permissions.
chmod 600 ok.gkr
"$G" data pack --record-size 4 ok.bin ok.gkr >/dev/null
[ "$(stat -c %a ok.gkr)" = 600 ] || fail "ok.gkr lost its permissions: $(stat -c %a ok.gkr)"
ok "a replaced file keeps its permissions"

no_temp_files .
clean_tmpdir
done_cases
