#!/usr/bin/env python3
"""examples/train_torch.py: a small CNN trained with PyTorch on generated images, fed and sized by
gpukit.

    /usr/bin/python3 examples/train_torch.py                      # CPU
    /usr/bin/python3 examples/train_torch.py --device cuda:0      # a GPU
    gpukit run -- /usr/bin/python3 examples/train_torch.py        # with a report

The images (16x16, one channel) show stripes in one of four orientations under noise; the CNN
learns to tell the orientation. Along the way:
  - gpukit.data.pack writes the dataset as a gpukit record file (image and label in one record);
  - gpukit.Loader feeds shuffled batches with worker threads as torch tensors over its ring slots
    (on a GPU: CUDA tensors over its device slots, ordered on torch's current stream);
  - gpukit.find_batch_size picks the batch: on a GPU from torch.cuda.max_memory_allocated, on the
    CPU from the tensor bytes each trial step keeps for backward (a saved-tensor hook) against
    --memory-budget, a pretend device;
  - gpukit.MemoryManager watches each step and, when memory runs short (try --squeeze 20:3MiB),
    switches to micro-batches with gradient accumulation, keeping the batch;
  - gpukit.metrics sends the loss, step time and samples/s to `gpukit run`; the memory manager
    sends the memory figures it read; the loader sends its own wait.
At the end it checks that the loss fell below --target-loss and the accuracy on held-out images
is at least 90%. Exit status: 0 converged, 1 not converged or an error, 2 usage.
"""
import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import gpukit
except ImportError:  # running from a checkout: the package is in python/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import gpukit
import gpukit.metrics as gm

SIDE = 16
PIXELS = SIDE * SIDE
CLASSES = 4


def parse_size(text):
    units = {"": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30,
             "GIB": 1 << 30}
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    if not num or t[len(num):] not in units:
        raise argparse.ArgumentTypeError("%r is not a size (try 8MiB)" % text)
    return int(float(num) * units[t[len(num):]])


def parse_squeeze(text):
    step, _, size = text.partition(":")
    if not step.isdigit() or not size:
        raise argparse.ArgumentTypeError("--squeeze takes STEP:BYTES, like 20:3MiB")
    return int(step), parse_size(size)


def make_images(n, seed):
    """n noisy stripe images and their orientation (0 horizontal, 1 vertical, 2 and 3 the two
    diagonals), float32 (n, 256) and int64 (n,)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    r, c = np.mgrid[0:SIDE, 0:SIDE]
    coord = np.stack([r, c, r + c, r - c])  # what each orientation's stripes follow
    period = rng.uniform(3.0, 6.0, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    img = np.sin(2 * np.pi * coord[y] / period + phase)
    img += rng.normal(0, 1.0, img.shape)
    return img.reshape(n, PIXELS).astype(np.float32), y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, CLASSES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class TensorMeter:
    """On the CPU, what a step keeps alive: parameters, gradients and optimizer state (fixed),
    plus the input and every tensor autograd saves for backward (grows with the batch). Counted
    with a saved-tensor hook, so it is the model's real footprint, not an estimate."""

    def __init__(self, model, budget):
        self.model, self.budget = model, budget
        self.params = {p.data_ptr() for p in model.parameters()}
        self.saved = 0
        self.seen = set()
        self.last_peak = self.fixed()

    def fixed(self, opt=None):
        n = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return 3 * n  # weights, gradients, momentum

    def pack(self, t):
        key = (t.data_ptr(), t.numel())
        if t.data_ptr() not in self.params and key not in self.seen:
            self.seen.add(key)
            self.saved += t.numel() * t.element_size()
        return t

    def step(self, fn, x):
        """Runs fn() under the hook; returns its result and records the step's peak."""
        self.saved, self.seen = x.numel() * x.element_size(), set()
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            out = fn()
        self.last_peak = self.fixed() + self.saved
        return out

    def figures(self):
        """The step's memory as a pretend device of `budget` bytes would see it."""
        used = min(self.last_peak, self.budget)
        return gpukit.MemoryFigures(device_free=self.budget - used, device_total=self.budget,
                                    reserved=used, allocated=min(self.fixed(), used),
                                    peak_allocated=used)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    ap.add_argument("--samples", type=int, default=8192, help="training images (8192)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="loader worker threads (2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--data", help="the record file (default: a temporary one)")
    ap.add_argument("--memory-budget", type=parse_size,
                    help="bytes a step may use (CPU default 8MiB; GPU default: the device)")
    ap.add_argument("--max-batch", type=int, default=512, help="largest batch to choose (512)")
    ap.add_argument("--squeeze", type=parse_squeeze, metavar="STEP:BYTES",
                    help="at STEP leave only BYTES to this job: the memory-pressure demo")
    ap.add_argument("--target-loss", type=float, default=0.35,
                    help="the last epoch's mean loss must end below this (0.35)")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    args = ap.parse_args(argv)
    if args.samples < 256 or args.epochs < 1:
        ap.error("--samples must be at least 256 and --epochs at least 1")
    say = (lambda *a: None) if args.quiet else print
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("train_torch: %s asked for but torch sees no CUDA device" % args.device,
              file=sys.stderr)
        return 1

    # The data: image and label in one float32 record of 257 values.
    tmp = None
    path = args.data
    if not path:
        tmp = tempfile.TemporaryDirectory(prefix="gk-train-")
        path = os.path.join(tmp.name, "stripes.gkr")
    if not os.path.exists(path):
        x, y = make_images(args.samples, args.seed)
        gpukit.data.pack(np.concatenate([x, y[:, None].astype(np.float32)], axis=1), path)
    info = gpukit.data.inspect(path)
    say("data %s: %d records of %s %s" % (path, info["record_count"], info["dtype"],
                                          info["shape"]))
    test_x, test_y = make_images(1024, args.seed + 1000)
    test_x = torch.from_numpy(test_x).view(-1, 1, SIDE, SIDE).to(dev)
    test_y = torch.from_numpy(test_y).to(dev)

    model = Net().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    # The batch size: the largest that fits the budget, from a few trial steps.
    meter = None
    if cuda:
        budget = args.memory_budget
        measure = None
    else:
        budget = args.memory_budget or (8 << 20)
        meter = TensorMeter(model, budget)
        measure = lambda: meter.last_peak

    def trial_step(b):
        xb = torch.randn(b, 1, SIDE, SIDE, device=dev)
        yb = torch.randint(0, CLASSES, (b,), device=dev)
        for _ in range(2):
            opt.zero_grad(set_to_none=False)
            if meter:
                loss = meter.step(lambda: F.cross_entropy(model(xb), yb), xb)
            else:
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
        opt.zero_grad(set_to_none=False)

    found = gpukit.find_batch_size(trial_step, budget=budget, measure=measure, margin=0.1,
                                   max_batch=args.max_batch, multiple_of=8,
                                   device=dev if cuda else None)
    for p in model.parameters():  # the trials must not leave momentum behind
        opt.state[p] = {}
    batch = found.batch
    say("batch %d (finder: %d trials %s, model %.0f B + %.0f B per sample, budget %.0f B)"
        % (batch, len(found.trials), [(t.batch, t.fitted) for t in found.trials], found.fit_a,
           found.fit_k, found.budget))

    # Memory pressure: smaller micro-batches with gradient accumulation keep the batch.
    state = {"micro": batch}

    def on_pressure(level, suggested):
        micro = max(1, min(batch, suggested))
        if level == "checkpoint":
            micro = 1
        state["micro"] = micro
        print("step %5d  memory pressure (%s): micro-batch now %d, %d accumulation steps keep "
              "the batch at %d" % (state["step"], level, micro, math.ceil(batch / micro), batch))

    mm = gpukit.MemoryManager(read=meter.figures if meter else None,
                              device=dev if cuda else None, model=found, batch=batch,
                              on_pressure=on_pressure, hysteresis=2)
    ballast = None

    loader = gpukit.Loader(path, batch, workers=args.workers, shuffle=True, seed=args.seed,
                           as_torch=True, device=args.device if cuda else None, name="train")
    say("loader: %d batches per epoch, %s" % (len(loader), loader.launcher))
    state["step"] = 0
    epoch_loss = float("nan")
    t_start = time.perf_counter()
    for epoch in range(args.epochs):
        total, seen = 0.0, 0
        for rec in loader:
            state["step"] += 1
            step = state["step"]
            if args.squeeze and step == args.squeeze[0]:
                keep = args.squeeze[1]
                if meter:
                    meter.budget = keep
                else:  # another tenant takes the rest of the GPU, outside torch's allocator
                    free, _ = torch.cuda.mem_get_info(dev)
                    take = free + torch.cuda.memory_reserved(dev) - keep
                    if take > 0:
                        ballast = gpukit.Pool(args.device, from_env=False)
                        ballast.malloc(take, tag="another tenant")
                say("step %5d  squeeze: %d bytes left for this job" % (step, keep))
            if cuda and step == 1:  # the batch is a CUDA tensor over the loader's device slot
                slot = loader.batch_info()["device"]
                assert rec.is_cuda and rec.data_ptr() == slot, (rec.device, rec.data_ptr(), slot)
                say("device tensors: CUDA tensors over the loader's device slots (batch %s on "
                    "%s at 0x%x)" % (tuple(rec.shape), rec.device, slot))
            t0 = time.perf_counter()
            with gm.timer("train_step_time"):
                n = rec.shape[0]
                opt.zero_grad(set_to_none=False)
                loss_sum = 0.0
                for lo in range(0, n, state["micro"]):
                    part = rec[lo:lo + state["micro"]]
                    xb = part[:, :PIXELS].reshape(-1, 1, SIDE, SIDE)
                    yb = part[:, PIXELS].long()

                    def fwd():
                        return F.cross_entropy(model(xb), yb) * (part.shape[0] / n)
                    loss = meter.step(fwd, xb) if meter else fwd()
                    loss.backward()
                    loss_sum += loss.item()
                opt.step()
            mm.step()
            total += loss_sum * n
            seen += n
            dt = time.perf_counter() - t0
            gm.gauge("train_loss", loss_sum)
            gm.gauge("train_samples_per_second", n / dt)
            if not args.quiet and step % 20 == 0:
                print("step %5d  epoch %d  loss %.4f  %.0f samples/s" % (step, epoch, loss_sum,
                                                                       n / dt))
        epoch_loss = total / max(seen, 1)
        gm.gauge("train_epoch_loss", epoch_loss)
        say("epoch %d  mean loss %.4f" % (epoch, epoch_loss))
    elapsed = time.perf_counter() - t_start
    wait_s = loader.stats()["wait_ns"] / 1e9
    loader.close()
    with torch.no_grad():
        acc = (model(test_x).argmax(1) == test_y).float().mean().item()
    print("loss %.4f  accuracy %.3f  batch %d  %d steps in %.1f s (loader wait %.2f s)"
          % (epoch_loss, acc, batch, state["step"], elapsed, wait_s))
    if ballast is not None:
        ballast.close()
    if tmp:
        tmp.cleanup()
    if epoch_loss < args.target_loss and acc >= 0.9:
        print("converged: loss %.4f below %.2f, held-out accuracy %.1f%%"
              % (epoch_loss, args.target_loss, 100 * acc))
        return 0
    print("not converged: loss %.4f (target %.2f), accuracy %.1f%% (target 90%%)"
          % (epoch_loss, args.target_loss, 100 * acc))
    return 1


if __name__ == "__main__":
    sys.exit(main())
