"""A real data-parallel training job on the CPU: a small MLP under torch.distributed (gloo),
gradients averaged across ranks every step, each rank's step time (train_step_time) and the
part before the gradient all-reduce (train_compute_time) sent to gpukit as StatsD timers tagged
with its rank. --slow-rank R makes rank R compute --slow-ms longer per step: the others wait for
it in the all-reduce, so every rank's whole step slows and only the compute time shows who is
the straggler.

usage: ddp_job.py [--steps N] [--slow-rank R] [--slow-ms MS]
"""
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist


def statsd(line):
    path = os.environ.get("GK_METRICS_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(line.encode(), path)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--slow-rank", type=int, default=-1)
    ap.add_argument("--slow-ms", type=float, default=40.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=__import__("datetime").timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    for p in model.parameters():  # every rank starts from rank 0's weights
        dist.broadcast(p.data, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1 + rank)
    w_true = torch.randn(64, 1, generator=torch.Generator().manual_seed(7))
    tags = f"rank:{rank},local_rank:{os.environ.get('LOCAL_RANK', rank)}"
    first = last = None
    for step in range(a.steps):
        t0 = time.perf_counter()
        x = torch.randn(32, 64, generator=g)
        y = x @ w_true
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        if rank == a.slow_rank:
            time.sleep(a.slow_ms / 1000)
        compute_ms = (time.perf_counter() - t0) * 1000
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world
        opt.step()
        ms = (time.perf_counter() - t0) * 1000
        statsd(f"train_step_time:{ms:.3f}|ms|#{tags}")
        statsd(f"train_compute_time:{compute_ms:.3f}|ms|#{tags}")
        statsd(f"train_loss:{loss.item():.6f}|g|#{tags}")
        first = loss.item() if first is None else first
        last = loss.item()
    dist.destroy_process_group()
    print(f"rank {rank}: loss {first:.4f} -> {last:.4f}")
    if not last < first:
        raise SystemExit(f"rank {rank}: the loss did not fall")


if __name__ == "__main__":
    main()
