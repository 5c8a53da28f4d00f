#!/usr/bin/env bash
# The monitor's GPU check (run on a machine with an NVIDIA driver): nvidia-smi's view of each GPU,
# then bench/monitor/gpu_check (gpukit's NVML reader, per-metric status, read costs, a monitor
# tick and the exported gpukit_gpu_* lines). Builds gpu_check with gcc when it is not given.
# Usage: scripts/gpu-check-monitor.sh [PATH/TO/gpu_check]
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    bin=$(mktemp -d)/gpu_check
    gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc src/common/*.c src/metrics/*.c \
        src/telemetry/*.c src/monitor/*.c bench/monitor/gpu_check.c -ldl -lpthread -lm \
        -o "$bin" || exit 1
fi
echo "=== nvidia-smi"
nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total,memory.used,memory.free,utilization.gpu,utilization.memory,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.mem,clocks.gr,fan.speed,clocks_event_reasons.active --format=csv,nounits
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,nounits
echo "=== gpukit"
"$bin"
