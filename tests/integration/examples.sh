#!/usr/bin/env bash
# The small examples: each runs and prints what its header comment promises.
set -euo pipefail
: "${GPUKIT:?}" "${GK_BINARY_DIR:?}" "${GK_SOURCE_DIR:?}"
ex="$GK_BINARY_DIR/examples"
[ -x "$ex/pool_only" ] || { echo "examples not built (GK_EXAMPLES=OFF)"; exit 77; }
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }

# pool_only: fills a 64 MiB sim, reports the OOM with tags, then reuses the cache.
timeout 60 "$ex/pool_only" >"$tmp/pool.out" 2>&1 || { cat "$tmp/pool.out"; fail "pool_only failed"; }
expect "$tmp/pool.out" "^allocated 5 blocks of 12 MiB, then: out of device memory"
expect "$tmp/pool.out" "^--- out-of-memory report ---"
expect "$tmp/pool.out" "Tried to allocate 12.00 MiB"
expect "$tmp/pool.out" 'tag "activation 0"'
expect "$tmp/pool.out" "^second round: 5 cache hits, 0 new device allocations"
expect "$tmp/pool.out" "gpukit pool memory summary"

# loader_shards: its own shards, then shards given on the command line.
timeout 60 "$ex/loader_shards" >"$tmp/shards.out" 2>&1 || { cat "$tmp/shards.out"; fail "loader_shards failed"; }
expect "$tmp/shards.out" "^80 batches of 4 x 64 tokens from 80 items"
expect "$tmp/shards.out" "^targets are the inputs shifted by one: yes"
python3 - "$tmp" <<'PY'
import struct, sys
for s in range(3):
    n = 10 * 256 + 1
    with open(f"{sys.argv[1]}/own_{s:06d}.bin", "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
        f.write(struct.pack(f"<{n}H", *[(s * 3000 + i) & 0xFFFF for i in range(n)]))
PY
timeout 60 "$ex/loader_shards" "$tmp/own_*.bin" >"$tmp/own.out" 2>&1 || { cat "$tmp/own.out"; fail "loader_shards on given shards failed"; }
expect "$tmp/own.out" "^30 batches of 4 x 64 tokens from 30 items"
status=0
"$ex/loader_shards" "$tmp/none_*.bin" >"$tmp/none.out" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "loader_shards accepted a pattern that matches nothing"

# monitor_embed: serves /metrics on a free loopback port for 4 s; one scrape sees the host
# series and the program's own counter.
if "$GPUKIT" serve --help 2>&1 | grep -q .; then
    "$ex/monitor_embed" 127.0.0.1:0 4 >"$tmp/mon.out" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 1 100); do
        port=$(sed -n 's|^serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/mon.out")
        [ -n "$port" ] && break
        sleep 0.05
    done
    if grep -q "built without libmicrohttpd\|GK_HTTP" "$tmp/mon.out"; then
        echo "monitor_embed: HTTP support not built; skipping the scrape"
    else
        [ -n "$port" ] || { cat "$tmp/mon.out"; fail "monitor_embed printed no port"; }
        sleep 1
        curl -sf --max-time 5 "http://127.0.0.1:$port/metrics" >"$tmp/metrics" || fail "scrape failed"
        expect "$tmp/metrics" "^example_steps_total "
        expect "$tmp/metrics" "^gpukit_memory_total_bytes "
        wait "$pid" || { cat "$tmp/mon.out"; fail "monitor_embed failed"; }
        pid=
        expect "$tmp/mon.out" "^served [1-9][0-9]* scrapes"
    fi
fi

# send_metrics.py under gpukit run: its StatsD lines reach the report.
timeout 60 "$GPUKIT" run --interval 0.1 --out "$tmp/py.jsonl" -- python3 \
    "$GK_SOURCE_DIR/examples/send_metrics.py" 20 >"$tmp/py.out" 2>"$tmp/py.err" ||
    { cat "$tmp/py.err"; fail "send_metrics.py under gpukit run failed"; }
expect "$tmp/py.out" "^sent 20 steps of metrics to "
expect "$tmp/py.err" "60 metric lines received"
expect "$tmp/py.err" "^py_loss  *20 "
expect "$tmp/py.err" "^py_step_time (ms)  *20 "
expect "$tmp/py.err" "^py_steps_total{phase:train}  *20 "
# Outside gpukit run it sends nothing and says so.
env -u GK_METRICS_SOCKET python3 "$GK_SOURCE_DIR/examples/send_metrics.py" 2 >"$tmp/py2.out"
expect "$tmp/py2.out" "GK_METRICS_SOCKET unset: nothing sent"
echo "examples: ok"
