#!/usr/bin/env python3
"""PyTorch's CUDA allocator against gpukit's pool as PyTorch's allocator, one allocator per process.

Usage: torch_allocator.py MODE OUT.json [--steps N] [--seed S]
  MODE  torch       PyTorch's caching allocator as it comes
        expandable  PyTorch's allocator with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
        gpukit      gpukit.torch.use_gpukit_allocator() (the default preset)
        cudnn       gpukit's allocator with torch.backends.cudnn.benchmark = True on a small
                    convolution: records whether it runs or what PyTorch raises

Trains a small transformer encoder (2 layers, d_model 256) on seeded random data for N steps
(200) at batch 32 with the sequence length drawn per step from 64..512 (the same draws for every
mode), deterministic algorithms on, then writes to OUT.json: the final loss, the peak reserved
and allocated bytes of the training, the median step time of the second half (ms), and the
largest batch gpukit.find_batch_size finds at sequence length 512 within 4 GiB. Needs torch with
CUDA; without it, it says so on one line and exits 0 without writing OUT.json. The gpukit mode
needs PyTorch 2.x (CUDAPluggableAllocator) and the package on PYTHONPATH.
"""
import argparse
import json
import os
import random
import statistics
import sys
import time


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("torch", "expandable", "gpukit", "cudnn"))
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    if args.mode == "expandable":
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    try:
        import torch
    except ImportError as e:
        print("torch_allocator: torch not available (%s); nothing run" % e)
        return 0
    if not torch.cuda.is_available():
        print("torch_allocator: torch %s has no CUDA device here; nothing run" % torch.__version__)
        return 0
    import gpukit
    mem = torch.cuda
    if args.mode in ("gpukit", "cudnn"):
        import gpukit.torch
        gpukit.torch.use_gpukit_allocator()  # before the first CUDA tensor
        mem = gpukit.torch
    result = {"mode": args.mode, "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0)}
    if args.mode == "cudnn":
        torch.backends.cudnn.benchmark = True
        try:
            conv = torch.nn.Conv2d(16, 32, 3, padding=1).cuda()
            x = torch.randn(8, 16, 64, 64, device="cuda", requires_grad=True)
            conv(x).sum().backward()
            torch.cuda.synchronize()
            result["cudnn_benchmark"] = "ran"
        except RuntimeError as e:
            result["cudnn_benchmark"] = "raised: %s" % str(e).split("\n")[0]
        print(json.dumps(result))
        with open(args.out, "w") as f:
            json.dump(result, f)
        return 0

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    for name in ("enable_flash_sdp", "enable_mem_efficient_sdp"):  # the math attention only:
        if hasattr(torch.backends.cuda, name):                     # its backward is deterministic
            getattr(torch.backends.cuda, name)(False)
    d = 256
    layer = torch.nn.TransformerEncoderLayer(d_model=d, nhead=8, dim_feedforward=1024,
                                             dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, num_layers=2),
                                torch.nn.Linear(d, 1)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)

    def step(batch, seq):
        x = torch.randn(batch, seq, d, device="cuda", generator=gen)
        loss = (model(x).squeeze(-1) - x.mean(-1)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    rng = random.Random(args.seed)
    seqs = [rng.randrange(64, 513, 8) for _ in range(args.steps)]
    mem.reset_peak_memory_stats(0)
    times, loss = [], None
    for seq in seqs:
        t0 = time.perf_counter()
        loss = step(32, seq)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result["final_loss"] = float(loss)
    result["peak_reserved"] = int(mem.max_memory_reserved(0))
    result["peak_allocated"] = int(mem.max_memory_allocated(0))
    result["step_ms_median"] = 1000 * statistics.median(times[len(times) // 2:])
    found = gpukit.find_batch_size(lambda b: step(b, 512), budget=4 << 30, max_batch=8192)
    result["max_batch_seq512_4GiB"] = found.batch
    print(json.dumps(result))
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
