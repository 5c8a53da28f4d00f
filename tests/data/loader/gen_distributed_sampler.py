#!/usr/bin/env python3
"""Writes distributed_sampler.txt: the index lists of PyTorch's DistributedSampler with
shuffle=False, derived by its documented rule (torch/utils/data/distributed.py):

  num_samples = ceil((N - W) / W) if drop_last and N % W else ceil(N / W)
  total_size  = num_samples * W
  indices     = list(range(N))
  not drop_last: pad with indices[:padding], or the list repeated ceil(padding / N) times
                 and cut, so that len(indices) == total_size
  drop_last:     indices = indices[:total_size]
  rank r takes indices[r:total_size:W]

When torch is importable the lists are also checked against torch itself (the committed file was
checked against Debian's python3-torch 1.13.1: run it with /usr/bin/python3).
Line format: N W rank drop_last: i0 i1 ..."""
import math
import sys

def rule(n, w, r, drop_last):
    if drop_last and n % w != 0:
        num_samples = math.ceil((n - w) / w)
    else:
        num_samples = math.ceil(n / w)
    total = num_samples * w
    idx = list(range(n))
    if not drop_last:
        pad = total - len(idx)
        if pad <= len(idx):
            idx += idx[:pad]
        else:
            idx += (idx * math.ceil(pad / len(idx)))[:pad]
    else:
        idx = idx[:total]
    assert len(idx) == total
    return idx[r:total:w]

try:
    import torch.utils.data as tud
except ImportError:
    tud = None

cases = [(n, w) for n in (1, 2, 3, 5, 7, 10, 16, 17, 31, 100) for w in (1, 2, 3, 4, 8)]
cases += [(3, 7), (5, 16), (1000, 6)]
out = open(sys.argv[1] if len(sys.argv) > 1 else "distributed_sampler.txt", "w")
for n, w in cases:
    for drop_last in (0, 1):
        for r in range(w):
            got = rule(n, w, r, drop_last)
            if tud is not None:
                s = tud.DistributedSampler(range(n), num_replicas=w, rank=r, shuffle=False,
                                           drop_last=bool(drop_last))
                assert list(s) == got, (n, w, r, drop_last)
            out.write("%d %d %d %d:%s\n" % (n, w, r, drop_last,
                                            "".join(" %d" % i for i in got)))
