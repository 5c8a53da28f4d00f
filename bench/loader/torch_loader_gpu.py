#!/usr/bin/env python3
"""gpukit's loader against PyTorch's DataLoader feeding the same GPU from the same record file.

PyTorch side, in its best form (reference/loader.md): a batched sampler whose __getitem__ does one
vectorized np.take, pin_memory=True, num_workers=W, persistent workers, and each batch moved with
.to('cuda', non_blocking=True) then synchronized, as a training step would. gpukit side:
`gpukit loader bench --device cuda:0` with the same file, batch, workers and shuffle. Both report
items/s in the same run; the ratio is printed. Exits 0 with a line saying so when torch or a GPU
is missing.

usage: torch_loader_gpu.py GPUKIT [RECORD_SIZE] [BATCH] [WORKERS] [SECONDS]
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

GPUKIT = sys.argv[1] if len(sys.argv) > 1 else "build/release/gpukit"
RS = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 256
WORKERS = int(sys.argv[4]) if len(sys.argv) > 4 else 2
SECONDS = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0

try:
    import numpy as np
    import torch
    from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
except ImportError as e:
    print(f"torch not available ({e}); the comparison is skipped")
    sys.exit(0)
if not torch.cuda.is_available():
    print("torch sees no GPU; the comparison is skipped")
    sys.exit(0)


class Records(Dataset):
    def __init__(self, path):
        with open(path, "rb") as f:
            h = f.read(40)
        assert h[:8] == b"GKRECORD", path
        self.rs, self.count, self.off = struct.unpack("<QQQ", h[16:40])
        self.path, self.mm = path, None

    def __len__(self):
        return self.count

    def __getitem__(self, idx):
        if self.mm is None:  # opened lazily in each worker
            self.mm = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.off,
                                shape=(self.count, self.rs))
        return torch.from_numpy(np.take(self.mm, np.asarray(idx), axis=0))


def torch_rate(path):
    ds = Records(path)
    loader = DataLoader(ds, sampler=BatchSampler(RandomSampler(ds), BATCH, True), batch_size=None,
                        num_workers=WORKERS, pin_memory=True,
                        persistent_workers=WORKERS > 0)
    items, t0, first = 0, None, None
    start = time.perf_counter()
    while True:
        for b in loader:
            g = b.to("cuda", non_blocking=True)
            torch.cuda.current_stream().synchronize()
            if first is None:
                first = time.perf_counter() - start
                t0 = time.perf_counter()
                continue
            items += g.shape[0]
            if time.perf_counter() - t0 >= SECONDS:
                return items / (time.perf_counter() - t0), first


def main():
    with tempfile.TemporaryDirectory() as tmp:
        raw, rec = os.path.join(tmp, "raw.bin"), os.path.join(tmp, "data.gkr")
        records = max(BATCH * 64, (256 << 20) // RS)
        with open(raw, "wb") as f:
            f.write(os.urandom(records * RS))
        subprocess.run([GPUKIT, "data", "pack", "--record-size", str(RS), raw, rec], check=True,
                       stdout=subprocess.DEVNULL)
        torch_items, torch_first = torch_rate(rec)
        out = subprocess.run([GPUKIT, "loader", "bench", "--file", rec, "--batch", str(BATCH),
                              "--workers", str(WORKERS), "--shuffle", "--device", "cuda:0",
                              "--seconds", str(SECONDS), "--json"],
                             check=True, capture_output=True, text=True).stdout
        g = json.loads(out)
        gk_items = g.get("items_per_second") or g.get("items_per_s")
        print(f"record {RS} B, batch {BATCH}, {WORKERS} workers, shuffled, to cuda:0, {SECONDS:.0f} s")
        print(f"  PyTorch DataLoader (batched, pin_memory) {torch_items:14,.0f} items/s"
              f"  first batch {torch_first * 1e3:.1f} ms")
        print(f"  gpukit loader                            {gk_items:14,.0f} items/s")
        print(f"  ratio gpukit / PyTorch                   {gk_items / torch_items:14.1f}x")


if __name__ == "__main__":
    main()
