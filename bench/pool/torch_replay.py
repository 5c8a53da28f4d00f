#!/usr/bin/env python3
"""Replays RMM-CSV allocation traces (Thread,Time,Action,Pointer,Size,Stream) through PyTorch's
caching allocator: every `allocate` becomes torch.empty(size, dtype=torch.uint8, device='cuda'),
every `free` drops that tensor. The same traces go through gpukit's pool in bench_pool_gpu, so the
two can be compared on one machine.

Per trace: ns per allocation and per free (median and p99 over the warm rounds; the first round is
cold), torch.cuda.max_memory_reserved() and max_memory_allocated() over the whole replay, and the
allocator's device calls (num_device_alloc / num_device_free of torch.cuda.memory_stats()) in the
cold round and per warm round.

Usage: torch_replay.py [--rounds N] [--alloc-conf CONF | --gpukit] TRACE.csv [TRACE.csv ...]
--alloc-conf sets PYTORCH_CUDA_ALLOC_CONF (for example expandable_segments:True) before torch is
loaded; --gpukit makes gpukit's pool PyTorch's allocator first (gpukit.torch.use_gpukit_allocator,
PyTorch 2.x, the package on PYTHONPATH) and reads its statistics from gpukit.torch. Uses only the standard library and torch; without torch (or without a GPU) it says so on
one line and exits 0.
"""
import argparse
import os
import sys
import time


def read_trace(path):
    """Returns a list of (is_alloc, pointer, size); raises ValueError naming the line."""
    events = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip()
        if header.replace(" ", "") != "Thread,Time,Action,Pointer,Size,Stream":
            raise ValueError(f"{path}:1: not an RMM CSV header: {header!r}")
        for lineno, line in enumerate(f, start=2):
            line = line.strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(",")]
            if len(fields) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 fields, got {len(fields)}")
            action = fields[2]
            try:
                ptr = int(fields[3], 0)
                size = int(fields[4], 0)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: bad pointer or size") from None
            if action == "allocate":
                events.append((True, ptr, size))
            elif action == "free":
                events.append((False, ptr, size))
            elif action != "allocate failure":
                raise ValueError(f"{path}:{lineno}: unknown action {action!r}")
    return events


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    return sorted_values[int(q * (len(sorted_values) - 1) + 0.5)]


def replay(torch, mem, events, rounds):
    """`mem` answers memory_stats, empty_cache, ... (torch.cuda or gpukit.torch)."""
    clock = time.perf_counter_ns
    alloc_ns, free_ns = [], []
    calls = []
    torch.cuda.synchronize()
    mem.empty_cache()
    mem.reset_peak_memory_stats()
    for rnd in range(rounds):
        stats = mem.memory_stats()
        before = stats.get("num_device_alloc", 0) + stats.get("num_device_free", 0)
        live = {}
        for is_alloc, ptr, size in events:
            if is_alloc:
                if ptr in live or size <= 0:
                    continue
                t0 = clock()
                t = torch.empty(size, dtype=torch.uint8, device="cuda")
                t1 = clock()
                live[ptr] = t
                if rnd:
                    alloc_ns.append(t1 - t0)
            else:
                t = live.pop(ptr, None)
                if t is None:
                    continue
                t0 = clock()
                del t
                t1 = clock()
                if rnd:
                    free_ns.append(t1 - t0)
        live.clear()
        torch.cuda.synchronize()
        stats = mem.memory_stats()
        calls.append(stats.get("num_device_alloc", 0) + stats.get("num_device_free", 0) - before)
    alloc_ns.sort()
    free_ns.sort()
    warm = calls[1:] or [0]
    return {
        "alloc_p50": percentile(alloc_ns, 0.50),
        "alloc_p99": percentile(alloc_ns, 0.99),
        "free_p50": percentile(free_ns, 0.50),
        "free_p99": percentile(free_ns, 0.99),
        "max_reserved": mem.max_memory_reserved(),
        "max_allocated": mem.max_memory_allocated(),
        "calls_cold": calls[0],
        "calls_warm": sum(warm) / len(warm),
    }


def main(argv):
    ap = argparse.ArgumentParser(description="Replay RMM CSV traces through torch.empty.")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per trace, the first cold (5)")
    ap.add_argument("--alloc-conf", default=None, help="PYTORCH_CUDA_ALLOC_CONF for this run")
    ap.add_argument("--gpukit", action="store_true", help="gpukit's pool as PyTorch's allocator")
    ap.add_argument("traces", nargs="+")
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (one cold round, then warm ones)")
    if args.gpukit and args.alloc_conf is not None:
        ap.error("--gpukit and --alloc-conf choose different allocators: give one")
    traces = []
    for path in args.traces:
        try:
            traces.append((path, read_trace(path)))
        except (OSError, ValueError) as e:
            print(f"torch_replay: {e}", file=sys.stderr)
            return 1
    if args.alloc_conf is not None:
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = args.alloc_conf
    try:
        import torch  # noqa: PLC0415 (after the allocator setting on purpose)
    except ImportError as e:
        print(f"torch_replay: torch not available ({e}); nothing replayed")
        return 0
    if not torch.cuda.is_available():
        print(f"torch_replay: torch {torch.__version__} is available but CUDA is not; nothing replayed")
        return 0
    mem = torch.cuda
    if args.gpukit:
        import gpukit.torch  # noqa: PLC0415
        gpukit.torch.use_gpukit_allocator()
        mem = gpukit.torch
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    which = "gpukit's pool (the shim)" if args.gpukit else f"PYTORCH_CUDA_ALLOC_CONF={conf!r}"
    print(
        f"torch_replay: torch {torch.__version__} (CUDA {torch.version.cuda}) on "
        f"{torch.cuda.get_device_name(0)}, {which}, {args.rounds} rounds "
        f"(1 cold + {args.rounds - 1} timed)"
    )
    print(
        f"  {'trace':40s} {'alloc p50':>9s} {'alloc p99':>9s} {'free p50':>9s} {'free p99':>9s} "
        f"{'max resv':>10s} {'max alloc':>10s} {'calls/1':>8s} {'calls/w':>8s}"
    )
    for path, events in traces:
        r = replay(torch, mem, events, args.rounds)
        print(
            f"  {os.path.basename(path)[:40]:40s} {r['alloc_p50']:9d} {r['alloc_p99']:9d} "
            f"{r['free_p50']:9d} {r['free_p99']:9d} {r['max_reserved'] / 2**20:9.1f}M "
            f"{r['max_allocated'] / 2**20:9.1f}M {r['calls_cold']:8d} {r['calls_warm']:8.1f}"
        )
    print("  (ns per call; the free is the `del` of the last reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
