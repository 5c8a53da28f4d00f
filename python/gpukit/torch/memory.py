"""PyTorch's CUDA allocator figures as gpukit's allocator gauges."""
import torch

from .. import _shim
from .. import _structs as S
from .. import metrics

# torch.cuda.memory_stats() key -> gk_alloc_figures field (a key an older PyTorch lacks is sent
# as unknown).
_KEYS = (
    ("allocated_bytes.all.current", "in_use_bytes"),
    ("reserved_bytes.all.current", "reserved_bytes"),
    ("active_bytes.all.current", "active_bytes"),
    ("num_ooms", "ooms"),
    ("num_alloc_retries", "retries"),
    ("num_device_alloc", "device_mallocs"),
)


def device_index(device=None):
    """The CUDA ordinal of `device` (None: the current device, or 0 without CUDA; an int, "cuda",
    "cuda:1" or a torch.device)."""
    if device is None:
        return torch.cuda.current_device() if torch.cuda.is_available() else 0
    if isinstance(device, int):
        return device
    d = torch.device(device)
    if d.type != "cuda":
        raise ValueError("gpukit.torch: %s is not a CUDA device" % d)
    return d.index if d.index is not None else device_index(None)


def alloc_figures(device=None):
    """torch.cuda.memory_stats(device) as a filled gk_alloc_figures (ctypes struct); with
    gpukit's allocator installed, gpukit.torch.memory_stats(device)."""
    if _shim.active("torch"):
        from .allocator import memory_stats  # noqa: PLC0415 (allocator imports this module)
        st = memory_stats(device)
    else:
        st = torch.cuda.memory_stats(device)
    f = S.new(S.gk_alloc_figures)
    for key, name in _KEYS:
        setattr(f, name, float(st[key]) if key in st else float("nan"))
    return f


def report_memory(device=None):
    """Publishes PyTorch's allocator figures for `device` (default: the current CUDA device) as a
    pool's series, labelled device="cuda:N" and pool="torch": gpukit_alloc_in_use_bytes
    (allocated), gpukit_alloc_reserved_bytes, gpukit_alloc_active_bytes, and the OOM, retry and
    device-allocation totals as counters. The library's publisher sends them to ``gpukit run`` (or
    ``gpukit serve --statsd``) every 250 ms. Call it once per step (or every few). The report's
    fragmentation rule compares reserved with in-use bytes.

    Returns True when figures were sent; False outside ``gpukit run`` (nothing is read: the
    call costs a flag test), without CUDA, or with gpukit's allocator installed
    (use_gpukit_allocator), whose pools publish their own series (pool="torch").
    """
    if not metrics.active() or not torch.cuda.is_available() or _shim.active("torch"):
        return False
    metrics._publish_alloc("cuda:%d" % device_index(device), "torch", alloc_figures(device))
    return True
