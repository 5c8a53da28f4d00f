#!/usr/bin/env bash
# A recording made by gpukit 0.2.0, whose sampler named its series with dots ("host.cpu_ratio",
# "gpu.0.power_watts", "gpu.0.process.1001.memory_bytes"), still loads: `gpukit report` gives its
# series the monitor's names, so its report and its comparison with a new recording use one set
# of names.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
old="$GK_SOURCE_DIR/tests/data/recording-0.2.0.jsonl"
grep -q '"host.cpu_ratio"' "$old" || fail "$old is not in the old format"

"$GPUKIT" report "$old" --json >"$tmp/old.json"
"$GPUKIT" report "$old" >"$tmp/old.txt"
grep -q '^gpukit_gpu_utilization_ratio{gpu="0"} ' "$tmp/old.txt" || { cat "$tmp/old.txt"; fail "text report"; }
grep -q '^GPU energy: ' "$tmp/old.txt" || fail "energy from the old power series"
/usr/bin/python3 - "$tmp/old.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = {x["name"]: x for x in d["series"]}
assert not [n for n in s if n.startswith(("gpu.", "host.", "tree."))], sorted(s)
assert s["gpukit_cpu_busy_ratio"]["count"] >= 3
assert s["gpukit_process_tree_cpu_seconds_total"]["max"] > 0
assert s["gpukit_process_tree_resident_memory_bytes"]["max"] > 0
assert abs(s['gpukit_gpu_power_watts{gpu="1"}']["mean"] - 250.5) < 1e-9
assert s['gpukit_gpu_clock_hertz{gpu="0",clock="sm"}']["max"] == 1.41e9
assert s['gpukit_gpu_process_memory_used_bytes{gpu="0",pid="1001"}']["max"] == 2 << 20
assert d["gpu_energy_joules"] > 0
PY

# A new recording compared against the old one: the host and tree series line up by name.
timeout 60 "$GPUKIT" run --no-gpu --interval 0.1 --out "$tmp/new.jsonl" -- \
    python3 "$GK_SOURCE_DIR/tests/support/run_workload.py" --burn 0.5 --steps 8 --step-ms 20 \
    >/dev/null 2>&1
"$GPUKIT" report "$tmp/new.jsonl" --baseline "$old" --json >"$tmp/cmp.json"
/usr/bin/python3 - "$tmp/cmp.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
names = {c["name"] for c in d["comparison"]}
for n in ("step_time", "gpukit_cpu_busy_ratio", "gpukit_process_tree_cpu_cores"):
    assert n in names, (n, sorted(names))
PY
echo "report_old: ok"
