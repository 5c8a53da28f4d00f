#!/usr/bin/env bash
# Benchmarks of gpukit run (make bench, or bash bench/run/run.sh BUILD_DIR):
#   1. overhead: wall time of a CPU-bound command alone and under `gpukit run` at the default
#      interval, alternated in the same run; medians and their ratio;
#   2. accuracy: peak RSS and CPU seconds of a single-process workload as gpukit records them
#      (sampled series and the end line) against /usr/bin/time -v in the same run.
set -euo pipefail
build=${1:-build/bench}
root="$(cd "$(dirname "$0")/../.." && pwd)"
gpukit="$build/gpukit"
[ -x "$gpukit" ] || gpukit="$build/tools/gpukit/gpukit"
[ -x "$gpukit" ] || { echo "bench/run: no gpukit binary in $build" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench/run: /usr/bin/time missing (Debian package: time)" >&2; exit 1; }
workload="$root/tests/support/run_workload.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rounds=${GK_BENCH_ROUNDS:-7}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

# 1. A fixed amount of work (not of CPU time), so the wall time shows any slowdown.
cpu_cmd=(python3 -c 'x=0
for i in range(12_000_000): x += i * i')
for _ in $(seq 1 "$rounds"); do
    t0=$(now); "${cpu_cmd[@]}"; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$tmp/bare"
    t0=$(now); "$gpukit" run -- "${cpu_cmd[@]}" 2>/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$tmp/run"
done
bare=$(median <"$tmp/bare")
run=$(median <"$tmp/run")
printf 'overhead: CPU-bound command, median of %d rounds: bare %.3f s, under gpukit run (0.5 s interval) %.3f s, ratio %.4f\n' \
    "$rounds" "$bare" "$run" "$(echo "$run / $bare" | bc -l)"

# 1b. gpukit's own CPU while it watches an idle command (sleep uses none): user+system per
# second of the run, at the default interval and at the fastest.
nprocs() { local d=(/proc/[0-9]*); echo "${#d[@]}"; }
for iv in 0.5 0.05; do
    /usr/bin/time -f "%U %S %e" -o "$tmp/cost" "$gpukit" run --interval "$iv" -- sleep 5 2>/dev/null
    read -r u s e <"$tmp/cost"
    printf 'cost: gpukit run --interval %s over sleep 5: %.2f s CPU in %.2f s = %.2f%% of one core (%d processes on the host)\n' \
        "$iv" "$(echo "$u + $s" | bc -l)" "$e" "$(echo "100 * ($u + $s) / $e" | bc -l)" "$(nprocs)"
done

# 2. Accuracy against /usr/bin/time -v on the bare workload (it burns a fixed amount of CPU time
#    and holds 200 MiB), and gpukit's own CPU while watching it: /usr/bin/time's total for
#    `gpukit run` minus the command's own rusage from the end line.
wl=(python3 "$workload" --alloc-mb 200 --burn 1.0 --sleep 0.3)
for iv in 0.5 0.05; do
    for _ in $(seq 1 3); do
        /usr/bin/time -v -o "$tmp/bare.txt" "${wl[@]}" 2>/dev/null
        /usr/bin/time -v -o "$tmp/time.txt" "$gpukit" run --interval "$iv" --out "$tmp/acc.jsonl" -- \
            "${wl[@]}" 2>/dev/null
        python3 - "$tmp/bare.txt" "$tmp/time.txt" "$tmp/acc.jsonl" "$iv" <<'PY'
import json, sys
def tv(path):
    t = {}
    for line in open(path):
        k, _, v = line.strip().rpartition(": ")
        t[k] = v
    return (int(t["Maximum resident set size (kbytes)"]) * 1024,
            float(t["User time (seconds)"]) + float(t["System time (seconds)"]),
            t["Elapsed (wall clock) time (h:mm:ss or m:ss)"])
bare_rss, bare_cpu, _ = tv(sys.argv[1])
_, total_cpu, wall = tv(sys.argv[2])
recs = [json.loads(l) for l in open(sys.argv[3])]
end = recs[-1]
samples = [r["v"] for r in recs if r["type"] == "sample"]
peak = max(s.get("gpukit_process_tree_resident_memory_bytes", 0) for s in samples)
own = total_cpu - end["cpu_seconds"]
print("interval %s: bare max RSS %.1f MiB, gpukit sampled peak %+.1f%%, end line %+.1f%%; "
      "bare CPU %.2f s, end line %+.1f%%; gpukit's own CPU %.2f s (%d samples, wall %s)"
      % (sys.argv[4], bare_rss / 2**20, 100 * (peak / bare_rss - 1),
         100 * (end["max_rss_bytes"] / bare_rss - 1), bare_cpu,
         100 * (end["cpu_seconds"] / bare_cpu - 1), own, end["samples"], wall))
PY
    done
done
