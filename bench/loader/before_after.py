#!/usr/bin/env python3
"""Two builds of `gpukit loader bench` on the issue's target cells, interleaved in one run.

For ROUNDS rounds, each cell runs once with BEFORE and once with AFTER (the order alternates
between rounds, so a drift in the machine's load falls on both sides), on the same files:
  - a 100 us training step (`--step-us 100`, 3 s) with 1 worker at 64 B x 256 and 4 KiB x 64: the
    stall, the median next(), and each thread's run-queue delay (time runnable but not running,
    from /proc/PID/task/TID/schedstat, sampled 1 s apart in the middle of the run), which tells a
    stall caused by the loader from one caused by other processes holding the CPUs;
  - warm 1 MiB x 8 with 1 worker: GB/s and the share of the same run's memcpy;
  - cold 4 KiB x 64 with 1 and 2 workers (`--cold`): items/s.
Prints the medians per side, the after/before ratio of items/s taken within each round, and the
load average seen during the runs.

usage: bench/loader/before_after.py BEFORE_GPUKIT AFTER_GPUKIT [ROUNDS]   (default 7)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def make(gpukit, tmp, rs, n, name):
    raw, path = os.path.join(tmp, "raw"), os.path.join(tmp, name)
    with open(raw, "wb") as f:
        f.write(os.urandom(rs * n))
    subprocess.run([gpukit, "data", "pack", "--record-size", str(rs), raw, path], check=True,
                   capture_output=True)
    os.unlink(raw)
    return path


def schedstat(pid):
    """Per thread: (ns on a CPU, ns runnable waiting for one)."""
    out = {}
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                run, delay, _ = f.read().split()
            out[int(tid)] = (int(run), int(delay))
    except OSError:
        pass
    return out


def bench(gpukit, args, step):
    cmd = [gpukit, "loader", "bench", "--file", args[0], "--batch", args[1], "--workers", args[2],
           "--shuffle", "--seconds", "3" if step else "1", "--json"] + args[3:]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    rq = None
    if step:  # the loader runs from about 0.1 s to 3.1 s; the window is [1 s, 2 s]
        time.sleep(1.0)
        a = schedstat(p.pid)
        time.sleep(1.0)
        b = schedstat(p.pid)
        nan = float("nan")
        consumer = (b[p.pid][1] - a[p.pid][1]) / 1e9 if p.pid in a and p.pid in b else nan
        workers = [(b[t][1] - a[t][1]) / 1e9 for t in a if t != p.pid and t in b]
        rq = (consumer, max(workers) if workers else nan)
    out, _ = p.communicate()
    if p.returncode:
        sys.exit("%s: exit status %d" % (" ".join(cmd), p.returncode))
    r = json.loads(out)
    r["rq"] = rq
    with open("/proc/loadavg") as f:
        r["load"] = float(f.read().split()[0])
    return r


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    tmp = tempfile.mkdtemp(prefix="gk-before-after-")
    try:
        r64 = make(after, tmp, 64, 1 << 20, "r64.gkr")
        r4k = make(after, tmp, 4096, 1 << 15, "r4k.gkr")
        r1m = make(after, tmp, 1 << 20, 256, "r1m.gkr")
        cells = {
            "step 100 us, 64 B x 256, 1 worker": [r64, "256", "1", "--step-us", "100"],
            "step 100 us, 4 KiB x 64, 1 worker": [r4k, "64", "1", "--step-us", "100"],
            "warm 1 MiB x 8, 1 worker": [r1m, "8", "1"],
            "cold 4 KiB x 64, 1 worker": [r4k, "64", "1", "--cold"],
            "cold 4 KiB x 64, 2 workers": [r4k, "64", "2", "--cold"],
        }
        res = {c: {"before": [], "after": []} for c in cells}
        for i in range(rounds):
            for name, args in cells.items():
                order = [("before", before), ("after", after)]
                for side, gk in order[::-1] if i % 2 else order:
                    res[name][side].append(bench(gk, args, "--step-us" in args))
            print("round %d of %d done" % (i + 1, rounds), file=sys.stderr, flush=True)
    finally:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)

    med = statistics.median
    print("| cell | build | items/s | GB/s | % of memcpy (memcpy GB/s) | stall | next() p50 us "
          "| run-queue delay ms per s, consumer / worker | after / before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in cells:
        step = "step" in name
        ratio = med(a["items_per_s"] / b["items_per_s"]
                    for a, b in zip(res[name]["after"], res[name]["before"]))
        for side in ("before", "after"):
            rs = res[name][side]
            m = lambda k: med(r[k] for r in rs)
            print("| %s | %s | %.0f | %.2f | %s | %s | %.2f | %s | %s |" % (
                name, side, m("items_per_s"), m("bytes_per_s") / 1e9,
                "" if step else "%.0f%% (%.1f)" % (100 * m("ratio_to_memcpy"),
                                                   m("memcpy_bytes_per_s") / 1e9),
                "%.1f%%" % (100 * m("stall")) if step else "", m("wait_p50_us"),
                "%.0f / %.0f" % (med(r["rq"][0] for r in rs) * 1e3,
                                 med(r["rq"][1] for r in rs) * 1e3) if step else "",
                "%.2fx" % ratio if side == "after" else ""))
    for name in cells:
        if "step" in name:
            print()
            print("%s, each round (stall before / after; run-queue delay consumer / worker, ms "
                  "per s, before / after):" % name)
            for b, a in zip(res[name]["before"], res[name]["after"]):
                print("  %.1f%% / %.1f%%   %.0f / %.0f   %.0f / %.0f" % (
                    100 * b["stall"], 100 * a["stall"], b["rq"][0] * 1e3, b["rq"][1] * 1e3,
                    a["rq"][0] * 1e3, a["rq"][1] * 1e3))
    loads = sorted(r["load"] for c in res.values() for s in c.values() for r in s)
    print()
    print("load average (1 min) during the runs: %.2f to %.2f, median %.2f" % (
        loads[0], loads[-1], med(loads)))


if __name__ == "__main__":
    main()
