#!/usr/bin/env bash
# gpukit data pack / inspect and loader bench end to end: raw bytes and .npy arrays become record
# files whose header inspect prints; bad inputs give one clear error line and the right exit code.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }

# Raw bytes: 10 records of 100 bytes.
head -c 1000 /dev/urandom >"$tmp/raw.bin"
"$GPUKIT" data pack --record-size 100 "$tmp/raw.bin" "$tmp/raw.gkr" >"$tmp/out"
expect "$tmp/out" "10 records of 100 bytes"
[ "$(stat -c %s "$tmp/raw.gkr")" = $((4096 + 1000)) ] || fail "record file size"
cmp <(tail -c 1000 "$tmp/raw.gkr") "$tmp/raw.bin" || fail "payload differs from the input"
"$GPUKIT" data inspect "$tmp/raw.gkr" >"$tmp/out"
expect "$tmp/out" "gpukit record file, version 1"
expect "$tmp/out" "records      10"
expect "$tmp/out" "record size  100 bytes"
"$GPUKIT" data inspect --json "$tmp/raw.gkr" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["format"] == "records" and d["record_count"] == 10 and d["record_size"] == 100, d
assert d["data_offset"] == 4096 and d["dtype"] == "|u1" and d["shape"] == [100], d'

# A size that does not divide the input.
if "$GPUKIT" data pack --record-size 300 "$tmp/raw.bin" "$tmp/x.gkr" 2>"$tmp/err"; then
    fail "pack accepted a record size that does not divide the file"
fi
expect "$tmp/err" "not a whole number of 300-byte records"
set +e
"$GPUKIT" data pack --record-size 100 "$tmp/raw.bin" "$tmp/raw.bin" 2>"$tmp/err"; [ $? = 2 ] || fail "pack onto its input"
expect "$tmp/err" "is both the input and the output"
"$GPUKIT" data pack --record-size 0 "$tmp/raw.bin" "$tmp/x.gkr" 2>/dev/null; [ $? = 2 ] || fail "usage exit code"
"$GPUKIT" data pack "$tmp/raw.bin" "$tmp/x.gkr" 2>/dev/null; [ $? = 2 ] || fail "usage exit code"
set -e

# A .npy array (version 1 header, little-endian float32, shape (6, 2, 3)), written by hand.
python3 - "$tmp/a.npy" <<'PY'
import struct, sys
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 2, 3), }"
pad = 64 - (10 + len(hdr) + 1) % 64
hdr = hdr + " " * pad + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<36f", *range(36)))
PY
"$GPUKIT" data pack --npy "$tmp/a.npy" "$tmp/a.gkr" >"$tmp/out"
expect "$tmp/out" "6 records of 24 bytes (<f4)"
"$GPUKIT" data inspect "$tmp/a.gkr" >"$tmp/out"
expect "$tmp/out" "element      <f4, shape (2, 3)"
python3 - "$tmp/a.gkr" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"GKRECORD"
assert struct.unpack("<36f", b[4096:]) == tuple(float(i) for i in range(36))
PY

# A .npy whose data does not match its shape, and a file that is not .npy.
head -c 100 "$tmp/a.npy" >"$tmp/short.npy"
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); open(sys.argv[2],"wb").write(d[:-8])' "$tmp/a.npy" "$tmp/short.npy"
if "$GPUKIT" data pack --npy "$tmp/short.npy" "$tmp/x.gkr" 2>"$tmp/err"; then fail "short npy accepted"; fi
expect "$tmp/err" "short.npy: 136 data bytes, but the shape and element type need 144"
if "$GPUKIT" data pack --npy "$tmp/raw.bin" "$tmp/x.gkr" 2>"$tmp/err"; then fail "raw accepted as npy"; fi
expect "$tmp/err" "not a .npy file"

# An llm.c token shard.
python3 - "$tmp/tok.bin" <<'PY'
import struct, sys
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, 50, *([0] * 253)))
    f.write(struct.pack("<50H", *range(50)))
PY
"$GPUKIT" data inspect "$tmp/tok.bin" >"$tmp/out"
expect "$tmp/out" "llm.c token shard, magic 20240520, version 1"
expect "$tmp/out" "tokens       50 of 2 bytes"

# Corrupt files: truncated record file, truncated shard, neither format.
head -c 4500 "$tmp/raw.gkr" >"$tmp/trunc.gkr"
if "$GPUKIT" data inspect "$tmp/trunc.gkr" 2>"$tmp/err"; then fail "truncated file accepted"; fi
expect "$tmp/err" "trunc.gkr: file is 4500 bytes but the header says 5096"
head -c 1050 "$tmp/tok.bin" >"$tmp/trunc.bin"
if "$GPUKIT" data inspect "$tmp/trunc.bin" 2>"$tmp/err"; then fail "truncated shard accepted"; fi
expect "$tmp/err" "trunc.bin: .*token count past the end"
if "$GPUKIT" data inspect "$tmp/raw.bin" 2>"$tmp/err"; then fail "raw bytes accepted"; fi
expect "$tmp/err" "neither a gpukit record file nor an llm.c token shard"
[ "$(wc -l <"$tmp/err")" = 1 ] || fail "error is not one line"

# The loader bench runs on the packed file and reports its figures as JSON.
"$GPUKIT" loader bench --file "$tmp/raw.gkr" --batch 3 --workers 2 --shuffle --seconds 0.05 \
    --device host --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["items_per_s"] > 0 and d["memcpy_bytes_per_s"] > 0 and d["batches"] >= 20, d
assert d["workers"] == 2 and d["record_size"] == 100, d'
TMPDIR="$tmp" "$GPUKIT" loader bench --record-size 64 --records 1000 --batch 10 --workers 0 \
    --seconds 0.05 >"$tmp/out"
expect "$tmp/out" "items/s"
expect "$tmp/out" "of memcpy"
# Through a simulated device whose copies really move bytes (lazily executed streams).
"$GPUKIT" loader bench --file "$tmp/raw.gkr" --batch 2 --workers 1 --seconds 0.05 \
    --device "sim:capacity=16MiB,va_size=16MiB,backed=1" --step-us 10 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["device"].startswith("sim:") and d["batches"] >= 20 and 0 <= d["stall"] <= 1, d'
if "$GPUKIT" loader bench --file "$tmp/raw.gkr" --device bogus 2>"$tmp/err"; then fail "bad device"; fi
expect "$tmp/err" "unknown backend \"bogus\""
if "$GPUKIT" loader bench --batch 3 2>"$tmp/err"; then fail "bench without a file"; fi
expect "$tmp/err" "give --file F"
echo "ok"
