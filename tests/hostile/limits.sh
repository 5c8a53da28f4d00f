#!/usr/bin/env bash
# Every count and size from the command line or a file is range-checked before use, and a
# generated output's size is checked against free memory and disk before writing starts.
source "$(dirname "$0")/lib.sh"
cd "$tmp"
synth() { "$G" pool synth --model transformer "$@"; }

# pool synth: each dimension has a range; nothing wraps.
status 2 synth --layers 4294967298 --out t.csv 2>err
expect err '\-\-layers: "4294967298" is not a whole number in 1..1024'
ok "--layers 4294967298 is refused (it used to act as --layers 2)"
status 2 synth --layers 2000 --out t.csv 2>err
expect err '\-\-layers: "2000" is not a whole number in 1..1024'
refuse err "hidden"
ok "--layers 2000 names --layers (it used to blame --hidden/--heads)"
status 2 synth --hidden 2147483520 --heads 1 --out t.csv 2>err
expect err '\-\-hidden: "2147483520" is not a whole number in 1..65536'
ok "--hidden 2147483520 is refused (sizes used to wrap to 1.8e19)"
status 2 synth --hidden 65536 --heads 1 --seq 1048576 --batch 65536 --out t.csv 2>err
expect err "a tensor would pass 1 PiB"
ok "dimensions whose tensors would pass 1 PiB are refused"
status 2 synth --hidden 100 --heads 3 --out t.csv 2>err
expect err "\-\-hidden 100 is not a multiple of \-\-heads 3"
ok "--hidden not a multiple of --heads names both"
# 1024 layers x 100000 steps: refused before anything is built (it grew to 7 GB of RSS).
status 2 timeout 30 "$G" pool synth --model transformer --layers 1024 --steps 100000 --hidden 64 \
    --heads 1 --out t.csv 2>err
expect err "make more than 67,108,864 events"
[ ! -e t.csv ] || fail "t.csv was created"
ok "a trace of billions of events is refused before it is built"
status 2 synth --steps 0 --out t.csv 2>err
status 2 synth --seed -1 --out t.csv 2>err
status 2 synth --seq 99999999999999999999 --out t.csv 2>err
ok "zero, negative and overflowing numbers are refused"
synth --layers 2 --hidden 64 --heads 2 --seq 64 --batch 2 --steps 2 --out t.csv
[ "$(head -n 1 t.csv)" = "Thread,Time,Action,Pointer,Size,Stream" ] || fail "t.csv is not a trace"
ok "a small trace is still written"

# .npy shapes: every product overflow-checked, every field range-checked.
npy() { # npy FILE HEADER-DICT DATA-BYTES
    python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
path, h, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + b"\1" * n)
PY
}
# refused_npy SHAPE-DICT DATA-BYTES EXPECTED: data pack --npy refuses it, saying EXPECTED.
refused_npy() {
    npy bad.npy "$1" "$2"
    status 1 "$G" data pack --npy bad.npy out.gkr 2>err
    expect err "$3"
    [ ! -e out.gkr ] || fail "out.gkr was created by a refused .npy"
}
f4="'descr': '<f4', 'fortran_order': False"
refused_npy "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 65536, 281474976710657), }" 64 \
    "shape makes records larger than 1 TiB"
ok ".npy shape (1,65536,281474976710657) is refused (it used to be packed overflowed)"
refused_npy "{'descr': '<u1', 'fortran_order': False, 'shape': (9223372036854775807, 4), }" 64 \
    "holds more than 2^62 bytes"
ok ".npy row count times record size beyond 2^62 is refused"
refused_npy "{$f4, 'shape': (99999999999999999999,), }" 64 "not a tuple of whole numbers below 10^19"
refused_npy "{$f4, 'shape': (-4,), }" 64 "not a tuple of whole numbers"
refused_npy "{$f4, 'shape': (1,1,1,1,1,1,1,1,1,1), }" 4 "more than 9 dimensions"
refused_npy "{$f4, 'shape': (4, 0), }" 0 "a dimension of 0"
refused_npy "{$f4, 'shape': (4, 2), }" 31 "31 data bytes, but the shape and element type need 32"
refused_npy "{'descr': '<f4', 'shape': (2,), 'fortran_order': False, 'shape': (4,), }" 16 \
    "unexpected or repeated key"
ok ".npy shapes: huge, negative, too deep, zero, short data and repeated keys are refused"
npy good.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }" 32
"$G" data pack --npy good.npy good.gkr >out
expect out "good.gkr: 4 records of 8 bytes (<f4)"
ok "a good .npy is still packed"

# Piped and directory inputs: a clear refusal (they used to give "18446744073709551615 bytes").
head -c 64 /dev/urandom >ok.bin
status 1 bash -c "cat ok.bin | \"$G\" data pack --record-size 4 /dev/stdin out.gkr" 2>err
expect err "/dev/stdin: is a pipe; data pack reads a regular file"
refuse err 18446744073709551615
status 1 "$G" data pack --record-size 4 . out.gkr 2>err
expect err "is a directory; data pack reads a regular file"
refuse err 18446744073709551615
status 1 "$G" data pack --npy . out.gkr 2>err
expect err "not a regular file"
status 1 "$G" pool replay . 2>err
expect err "is a directory (name an RMM CSV trace file)"
status 1 "$G" report . 2>err
expect err "is a directory (name a recording file)"
ok "piped and directory inputs are refused clearly"

# Record counts and sizes of a generated file: checked against the free disk first.
status 1 "$G" loader bench --records 1e12 --record-size 1e9 2>err
expect err "records of 1000000000 bytes are too many"
status 1 "$G" loader bench --records 1e9 --record-size 1e6 2>err
expect err "the output needs about .* but only .* is free there"
clean_tmpdir
ok "loader bench's test file is checked against the free disk before it is written"
mkdir tiny
if mount -t tmpfs -o size=64k tmpfs tiny 2>/dev/null; then
    mounted="$tmp/tiny"
    head -c 1000000 /dev/urandom >mb.bin
    status 1 "$G" data pack --record-size 4 mb.bin tiny/out.gkr 2>err
    expect err "the output needs about 976.56 KiB but only .* is free there"
    [ -z "$(ls -A tiny)" ] || fail "data pack left files on the full filesystem: $(ls -A tiny)"
    status 1 synth --steps 4 --out tiny/t.csv 2>err
    expect err "the output needs about"
    umount tiny
    mounted=""
    ok "an output larger than the free space is refused before writing"
else
    echo "cannot mount a tmpfs here: the free-space case is covered by loader bench"
fi
done_cases
