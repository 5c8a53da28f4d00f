#!/usr/bin/env python3
"""The gpukit Python package against its C core and against PyTorch, in the same run.

1. Loader: gpukit.Loader (numpy views) against `gpukit loader bench` (the C loader driven from
   C) and PyTorch's DataLoader in its best form (a BatchSampler over a RandomSampler, batch_size
   None, one vectorized np.take per batch), on the same gpukit record file, shuffled, warm cache,
   drop_last, 0 / 1 / 2 workers, batch 256 of 64 B and 64 of 4 KiB. Each round measures every
   side for SECONDS; the table gives the medians of ROUNDS rounds and the ratios taken within each
   round (median).
2. find_batch_size on a sim device: a step that allocates a + k*b bytes from a gpukit pool; the
   answer against the true maximum (found by bisection afterwards), and the trials.
3. gpukit.metrics outside `gpukit run`: the cost of a call (GK_METRICS_SOCKET unset).

usage: bench/python/bench_python.py GPUKIT [SECONDS] [ROUNDS]
  GPUKIT is the tool of a Release build (build/release/gpukit); the package loads the library of
  GPUKIT_LIBRARY, else the build tree's. Needs python3-numpy and python3-torch.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "python"))
os.environ.pop("GK_METRICS_SOCKET", None)
import gpukit  # noqa: E402
import gpukit.metrics as gm  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "loader"))
import torch_compare  # noqa: E402  (its argv: GPUKIT [SECONDS], the same as ours)

GPUKIT = sys.argv[1] if len(sys.argv) > 1 else "build/release/gpukit"
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
med = statistics.median


def python_rate(path, batch, workers):
    """items/s of gpukit.Loader over `path` for SECONDS, after the first batch."""
    ld = gpukit.Loader(path, batch, workers=workers, shuffle=True, seed=1, drop_last=True,
                       rank=0, world=1)
    it = iter(ld)
    next(it)
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(64):
            try:
                next(it)
            except StopIteration:
                it = iter(ld)
                next(it)
            n += 1
        t = time.perf_counter() - t0
        if t >= SECONDS:
            break
    ld.close()
    return n * batch / t


def c_rate(path, batch, workers):
    out = subprocess.run([GPUKIT, "loader", "bench", "--file", path, "--batch", str(batch),
                          "--workers", str(workers), "--shuffle", "--seconds", str(SECONDS),
                          "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["items_per_s"]


def torch_rate(path, batch, workers):
    """items/s of PyTorch's DataLoader in its best form, as bench/loader/torch_compare.py
    measures it (a BatchSampler, one vectorized np.take per batch, the memmap opened lazily in
    each worker, the first batch timed apart)."""
    return torch_compare.torch_rate(path, batch, workers, True, SECONDS)[0]


def fmt(x):
    return "%.2f M" % (x / 1e6) if x >= 1e6 else "%.1f k" % (x / 1e3)


def loader_table(tmp):
    import torch
    torch.set_num_threads(1)
    cells = [(64, 1 << 20, 256, "64 B x 256"), (4096, 1 << 15, 64, "4 KiB x 64")]
    print("| records x batch | workers | gpukit.Loader (Python) | gpukit loader bench (C) "
          "| Python / C | PyTorch DataLoader batched | Python / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for rs, count, batch, label in cells:
        path = os.path.join(tmp, "r%d.gkr" % rs)
        gpukit.data.pack(np.random.default_rng(0).integers(0, 256, (count, rs), np.uint8), path)
        with open(path, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        for w in (0, 1, 2):
            py, c, pt, r_c, r_pt = [], [], [], [], []
            for _ in range(ROUNDS):
                py.append(python_rate(path, batch, w))
                c.append(c_rate(path, batch, w))
                pt.append(torch_rate(path, batch, w))
                r_c.append(py[-1] / c[-1])
                r_pt.append(py[-1] / pt[-1])
            print("| %s | %d | %s | %s | %.0f%% | %s | %.1fx |" % (
                label, w, fmt(med(py)), fmt(med(c)), 100 * med(r_c), fmt(med(pt)), med(r_pt)),
                flush=True)
        os.unlink(path)


def finder_table():
    MiB = 1 << 20
    print()
    print("| step's peak a + k*b | device | trials | answer | true maximum | answer / maximum |")
    print("|---|---|---|---|---|---|")
    for a, k, cap in [(200 * MiB, 3 * MiB, 1024), (10 * MiB, 700 * 1024, 1024),
                      (1024 * MiB, 10 * MiB, 16384), (64 * MiB, 512 * 1024, 256)]:
        pool = gpukit.Pool("sim:capacity=%dMiB" % cap)

        def step(b):
            p = pool.malloc(a + k * b)
            pool.free(p)

        r = gpukit.find_batch_size(step, pool=pool)
        lo, hi = 0, 1 << 20
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                step(mid)
                lo = mid
            except gpukit.OutOfMemoryError:
                hi = mid
        print("| %s + %s x b | sim %d MiB | %d %s | %d | %d | %.3f |" % (
            gk_size(a), gk_size(k), cap, len(r.trials), [t.batch for t in r.trials], r.batch, lo,
            r.batch / lo), flush=True)
        pool.close()


def gk_size(n):
    return "%d MiB" % (n >> 20) if n % (1 << 20) == 0 else "%d KiB" % (n >> 10)


def metrics_table():
    gm._reset_for_tests()
    assert not gm.active()
    number = 200000
    cases = [
        ("gauge(name, value)", lambda: gm.gauge("train_loss", 0.5)),
        ("counter(name, value, phase=...)", lambda: gm.counter("samples", 32, phase="train")),
        ("timing(name, ms)", lambda: gm.timing("step_time", 1.5)),
        ("with timer(name): pass", lambda: _timer()),
        ("baseline: an empty Python call", lambda: None),
    ]
    print()
    print("| gpukit.metrics call outside gpukit run | ns per call (median of 7 x %d) |" % number)
    print("|---|---|")
    for label, fn in cases:
        runs = timeit.repeat(fn, number=number, repeat=7)
        print("| %s | %.0f |" % (label, med(runs) / number * 1e9), flush=True)


def _timer():
    with gm.timer("block"):
        pass


def main():
    print("gpukit %s (library %s), numpy %s, python %s, %d CPUs" % (
        gpukit.__version__, gpukit.library_path, np.__version__, sys.version.split()[0],
        os.cpu_count()))
    print()
    with tempfile.TemporaryDirectory(prefix="gk-pybench-") as tmp:
        loader_table(tmp)
    finder_table()
    metrics_table()


if __name__ == "__main__":
    main()
