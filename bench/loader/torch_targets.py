#!/usr/bin/env python3
"""The PyTorch targets of the loader, repeated: ROUNDS rounds on one 4 KiB x 32 Ki record file,
batch 64, shuffled, each side measured as bench/loader/torch_compare.py measures it, the ratio
taken within each round:
  - warm: gpukit with 2 workers against PyTorch's batched form with 0 workers (target 1.5x);
  - cold (the file dropped from the page cache before each side's run): gpukit with 1 and with 2
    workers against the better of PyTorch's naive and batched forms with 1 worker (targets 1x
    and 2x).

usage: bench/loader/torch_targets.py GPUKIT [SECONDS] [ROUNDS]   (default 2 s, 5 rounds)
"""
import os
import statistics
import sys
import tempfile

import torch

import torch_compare as tc


def main():
    tc.GPUKIT = sys.argv[1] if len(sys.argv) > 1 else "build/rel/gpukit"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="gk-torch-targets-")
    rows = {"warm 4 KiB x 64: gpukit 2 workers / PyTorch batched 0 workers (target 1.5x)": [],
            "cold 4 KiB x 64: gpukit 1 worker / best PyTorch 1 worker (target 1x)": [],
            "cold 4 KiB x 64: gpukit 2 workers / best PyTorch 1 worker (target 2x)": []}
    warm, cold1, cold2 = rows.values()
    try:
        path = tc.make_file(tmp, 4096, 1 << 15)
        for i in range(rounds):
            with open(path, "rb") as f:  # warm the page cache
                while f.read(1 << 24):
                    pass
            torch0 = tc.torch_rate(path, 64, 0, True, seconds)[0]
            warm.append((torch0, tc.gpukit_rate(path, 64, 2, seconds)[0]))
            tc.drop_cache(path)
            naive = tc.torch_rate(path, 64, 1, False, seconds)[0]
            tc.drop_cache(path)
            best = max(naive, tc.torch_rate(path, 64, 1, True, seconds)[0])
            cold1.append((best, tc.gpukit_rate(path, 64, 1, seconds, cold=True)[0]))
            cold2.append((best, tc.gpukit_rate(path, 64, 2, seconds, cold=True)[0]))
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            print("round %d of %d, load average %s" % (i + 1, rounds, load), file=sys.stderr,
                  flush=True)
        os.unlink(path)
    finally:
        os.rmdir(tmp)
    med = statistics.median
    print("| target | PyTorch items/s | gpukit items/s | ratio: median (min to max) |")
    print("|---|---|---|---|")
    for name, xs in rows.items():
        ratios = [g / t for t, g in xs]
        print("| %s | %s | %s | %.2fx (%.2fx to %.2fx) |" % (
            name, tc.fmt(med(t for t, _ in xs)), tc.fmt(med(g for _, g in xs)), med(ratios),
            min(ratios), max(ratios)))


if __name__ == "__main__":
    main()
