#!/usr/bin/env bash
# The Grafana dashboard (contrib/grafana/gpukit.json) against a real scrape: gpukit serve with
# fake GPUs and its StatsD sink, fed by a training job (examples/train under a launcher's RANK);
# every metric every panel queries must be in /metrics. Also the sink's drop counters.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}" "${GK_BINARY_DIR:?}" "${GK_TEST_FAKE_NVML:?}"
tmp=$(mktemp -d)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
train="$GK_BINARY_DIR/examples/train"
[ -x "$train" ] || { echo "examples/train not built: skipping"; exit 77; }

GK_NVML_LIBRARY=$GK_TEST_FAKE_NVML "$GPUKIT" serve --listen 127.0.0.1:0 --interval 0.2 \
    --statsd "$tmp/statsd.sock" 2>"$tmp/serve.err" &
serve_pid=$!
for _ in $(seq 100); do grep -q 'serving http' "$tmp/serve.err" && [ -S "$tmp/statsd.sock" ] && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*/metrics' "$tmp/serve.err" | cut -d: -f2 | cut -d/ -f1)
[ -n "$port" ] || { cat "$tmp/serve.err"; fail "gpukit serve did not start"; }

"$train" --data "$tmp/train.gkr" --generate 20000 --generate-only >/dev/null
GK_METRICS_SOCKET=$tmp/statsd.sock RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 \
    "$train" --device host --data "$tmp/train.gkr" --epochs 3 --max-batch 512 --quiet \
    >"$tmp/train.out" 2>&1 || { cat "$tmp/train.out"; fail "the training job failed"; }
sleep 0.5
curl -sf "http://127.0.0.1:$port/metrics" >"$tmp/metrics" || fail "scrape failed"

python3 - "$GK_SOURCE_DIR/contrib/grafana/gpukit.json" "$tmp/metrics" <<'PY'
import json, re, sys
dash = json.load(open(sys.argv[1]))
scraped = set()
for line in open(sys.argv[2]):
    if line.strip() and not line.startswith("#"):
        scraped.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
defaults = {v["name"]: v.get("current", {}).get("value", "")
            for v in dash["templating"]["list"]}
missing, checked = [], 0
for p in dash["panels"]:
    for t in p.get("targets", []):
        expr = t["expr"].replace("$__rate_interval", "1m")
        expr = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), expr)
        for name in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr):
            checked += 1
            if name not in scraped:
                missing.append(f'{p["title"]}: {name}')
assert checked >= 20, checked
assert not missing, "queried but not exported:\n  " + "\n  ".join(missing)
# The job's series carry their labels and rank; GPUs come from the fake NVML.
text = open(sys.argv[2]).read()
for want in ['gpukit_alloc_reserved_bytes{device="host",pool="default",rank="0",local_rank="0"}',
             'gpukit_loader_wait_seconds_total{device="host",loader="train",rank="0",local_rank="0"}',
             'train_step_time_seconds_count{rank="0",local_rank="0"}',
             'gpukit_gpu_utilization_ratio{gpu="0"',
             'gpukit_gpu_process_memory_used_bytes{gpu="0",uuid="GPU-fake-0000",pid="1001",',
             'gpukit_gpu_process_series_dropped_total 0']:
    assert want in text, want
print(f"dashboard: {checked} metric references, all exported")
PY

# A flood past the series cap is counted, not stored.
python3 - "$tmp/statsd.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(12000):
    s.sendto(f"flood_series_{i}:1|g".encode(), sys.argv[1])
PY
sleep 0.5
curl -sf "http://127.0.0.1:$port/metrics" >"$tmp/metrics2"
dropped=$(awk '/^gpukit_statsd_dropped_series_total /{print $2}' "$tmp/metrics2")
series=$(awk '/^gpukit_statsd_series /{print $2}' "$tmp/metrics2")
[ "${series%.*}" -le 10000 ] || fail "the sink kept $series series past its cap of 10000"
[ "${dropped%.*}" -gt 0 ] || fail "no dropped series counted after a flood past the cap"
echo "dashboard: ok ($series series kept, $dropped dropped)"
