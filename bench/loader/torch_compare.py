#!/usr/bin/env python3
"""gpukit's loader against PyTorch's DataLoader on the same gpukit record file.

For each record size (64 B x 256, 4 KiB x 64, 1 MiB x 8 per batch) and worker count (0, 1, 2),
shuffled, warm cache, it measures in the same run:
  - PyTorch naive: Dataset.__getitem__(i) -> torch.from_numpy(np.array(mm[i])),
    DataLoader(batch_size=B, shuffle=True, drop_last=True, num_workers=w);
  - PyTorch batched (its best form): sampler=BatchSampler(RandomSampler(ds), B, True),
    batch_size=None, __getitem__(list) does one vectorized np.take;
  - numpy gather into a reused buffer (np.take(..., out=buf, mode='wrap'));
  - `gpukit loader bench` with the same file, batch, workers and shuffle;
and prints items/s for each and gpukit's ratio to the best PyTorch form. The memmap is opened
lazily in each worker; torch.set_num_threads(1); pin_memory=False; the first batch is timed apart.

Cold cache (4 KiB x 64 and 1 MiB x 8, 1 and 2 workers): before each side's run the file is
dropped from the page cache (fdatasync, then posix_fadvise DONTNEED, as `gpukit loader bench
--cold` does) and the run starts from there, so it reads from the disk until the pages it has
touched are cached; each cell runs REPEAT times (default 3) and the medians are printed.

usage: bench/loader/torch_compare.py GPUKIT [SECONDS]   (needs python3-torch and python3-numpy)
  CACHES="warm cold" (default) picks the tables; REPEAT sets the cold repeats.
"""
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

GPUKIT = sys.argv[1] if len(sys.argv) > 1 else "build/rel/gpukit"
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0


def header(path):
    with open(path, "rb") as f:
        h = f.read(40)
    assert h[:8] == b"GKRECORD", path
    rs, count, off = struct.unpack("<QQQ", h[16:40])
    return rs, count, off


class Records(Dataset):
    def __init__(self, path, batched):
        self.path, self.batched = path, batched
        self.rs, self.count, self.off = header(path)
        self.mm = None

    def _map(self):
        if self.mm is None:  # lazily, in each worker
            self.mm = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.off,
                                shape=(self.count, self.rs))
        return self.mm

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        mm = self._map()
        if self.batched:
            return torch.from_numpy(np.take(mm, np.asarray(i), axis=0))
        return torch.from_numpy(np.array(mm[i]))


def time_loader(make, batch, seconds):
    t0 = time.perf_counter()
    it = iter(make())
    next(it)
    first = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            next(it)
        except StopIteration:
            it = iter(make())
            continue
        n += 1
    return n * batch / (time.perf_counter() - t0), first


def torch_rate(path, batch, workers, batched, seconds):
    ds = Records(path, batched)
    kw = dict(num_workers=workers, pin_memory=False)
    if workers:
        kw["prefetch_factor"] = 2
    if batched:
        make = lambda: DataLoader(ds, sampler=BatchSampler(RandomSampler(ds), batch, True),
                                  batch_size=None, **kw)
    else:
        make = lambda: DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, **kw)
    return time_loader(make, batch, seconds)


def gather_rate(path, batch, seconds):
    rs, count, off = header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", offset=off, shape=(count, rs))
    buf = np.empty((batch, rs), dtype=np.uint8)
    rng = np.random.default_rng(1)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = rng.integers(0, count, batch)
        np.take(mm, idx, axis=0, out=buf, mode="wrap")
        n += 1
    return n * batch / (time.perf_counter() - t0)


def gpukit_rate(path, batch, workers, seconds, cold=False):
    out = subprocess.run([GPUKIT, "loader", "bench", "--file", path, "--batch", str(batch),
                          "--workers", str(workers), "--shuffle", "--seconds", str(seconds),
                          "--json"] + (["--cold"] if cold else []),
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return r["items_per_s"], r["first_batch_s"]


def drop_cache(path):
    """Drops the file from the page cache, as `gpukit loader bench --cold` does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def make_file(tmp, rs, count):
    raw = os.path.join(tmp, "raw")
    path = os.path.join(tmp, "r.gkr")
    with open(raw, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, rs * count, np.uint8).tobytes())
    subprocess.run([GPUKIT, "data", "pack", "--record-size", str(rs), raw, path],
                   check=True, capture_output=True)
    os.unlink(raw)
    return path


TARGETS = {}  # figures for the targets, filled by the tables below (same run)


def cold_table(tmp, seconds, repeat):
    cells = [(4096, 1 << 15, 64, "4 KiB x 64"), (1 << 20, 256, 8, "1 MiB x 8")]
    print()
    print("Cold cache (the file dropped from the page cache before each side's run; medians of "
          "%d):" % repeat)
    print()
    print("| records x batch | workers | PyTorch naive | PyTorch batched | gpukit "
          "| gpukit / best PyTorch | first batch ms PyTorch batched / gpukit |")
    print("|---|---|---|---|---|---|---|")
    med = statistics.median
    for rs, count, batch, label in cells:
        path = make_file(tmp, rs, count)
        for w in (1, 2):
            naive, best, gk, ratio, tfirst, gfirst = [], [], [], [], [], []
            for _ in range(repeat):
                drop_cache(path)
                naive.append(torch_rate(path, batch, w, False, seconds)[0])
                drop_cache(path)
                b, f = torch_rate(path, batch, w, True, seconds)
                best.append(b)
                tfirst.append(f)
                g, gf = gpukit_rate(path, batch, w, seconds, cold=True)
                gk.append(g)
                gfirst.append(gf)
                ratio.append(g / max(naive[-1], b))
            print("| %s | %d | %s | %s | %s | %.1fx | %.1f / %.1f |" % (
                label, w, fmt(med(naive)), fmt(med(best)), fmt(med(gk)), med(ratio),
                med(tfirst) * 1e3, med(gfirst) * 1e3), flush=True)
            if rs == 4096:
                TARGETS["cold_torch_%d" % w] = max(med(naive), med(best))
                TARGETS["cold_gpukit_%d" % w] = med(gk)
        os.unlink(path)


def print_targets():
    t = TARGETS
    lines = []
    if "warm_gpukit_2" in t and "warm_torch_batched_0" in t:
        lines.append("warm 4 KiB x 64: gpukit with 2 workers / PyTorch batched with 0 workers = "
                     "%.2fx (target 1.5x)" % (t["warm_gpukit_2"] / t["warm_torch_batched_0"]))
    if "cold_gpukit_1" in t and "cold_torch_1" in t:
        lines.append("cold 4 KiB x 64: gpukit with 1 worker / best PyTorch with 1 worker = %.1fx "
                     "(target 1x)" % (t["cold_gpukit_1"] / t["cold_torch_1"]))
    if "cold_gpukit_2" in t and "cold_torch_1" in t:
        lines.append("cold 4 KiB x 64: gpukit with 2 workers / best PyTorch with 1 worker = %.1fx "
                     "(target 2x)" % (t["cold_gpukit_2"] / t["cold_torch_1"]))
    if lines:
        print()
        print("Targets (same run):")
        print()
        for line in lines:
            print("- " + line)


def fmt(x):
    return "%.2f M" % (x / 1e6) if x >= 1e6 else "%.1f k" % (x / 1e3)


def main():
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="gk-torch-")
    cells = [(64, 1 << 20, 256, "64 B x 256"), (4096, 1 << 15, 64, "4 KiB x 64"),
             (1 << 20, 256, 8, "1 MiB x 8")]
    print("torch %s, numpy %s, %d CPUs" % (torch.__version__, np.__version__, os.cpu_count()))
    print()
    caches = os.environ.get("CACHES", "warm cold").split()
    try:
        if "cold" in caches and "warm" not in caches:
            cells = []
        else:
            print("| records x batch | workers | PyTorch naive | PyTorch batched | numpy gather "
                  "| gpukit | gpukit / best PyTorch | PyTorch first batch ms |")
            print("|---|---|---|---|---|---|---|---|")
        for rs, count, batch, label in cells:
            path = make_file(tmp, rs, count)
            with open(path, "rb") as f:  # warm the page cache
                while f.read(1 << 24):
                    pass
            for w in (0, 1, 2):
                naive, _ = torch_rate(path, batch, w, False, SECONDS)
                best, first = torch_rate(path, batch, w, True, SECONDS)
                gather = gather_rate(path, batch, SECONDS)
                gk = gpukit_rate(path, batch, w, SECONDS)[0]
                top = max(naive, best)
                if rs == 4096:
                    TARGETS["warm_torch_batched_%d" % w] = best
                    TARGETS["warm_gpukit_%d" % w] = gk
                print("| %s | %d | %s | %s | %s | %s | %.1fx | %.1f |" % (
                    label, w, fmt(naive), fmt(best), fmt(gather), fmt(gk), gk / top,
                    first * 1e3), flush=True)
            os.unlink(path)
        if "cold" in caches:
            cold_table(tmp, SECONDS, int(os.environ.get("REPEAT", "3")))
        print_targets()
    finally:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
