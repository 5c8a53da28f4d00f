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


def alloc_figures(device=None):
    """torch.cuda.memory_stats(device) as a filled gk_alloc_figures (ctypes struct); with
    gpukit's allocator installed, gpukit.torch.memory_stats(device)."""
    if _shim.active("torch"):
        from .allocator import memory_stats
        st = memory_stats(device)
    else:
        st = torch.cuda.memory_stats(device)
    f = S.new(S.gk_alloc_figures)
    for key, name in _KEYS:
        setattr(f, name, float(st[key]) if key in st else float("nan"))
    return f


def report_memory(device=None):
    """Sends PyTorch's allocator figures for `device` (default: the current CUDA device) to
    ``gpukit run`` as gauges: gpukit_alloc_in_use_bytes (allocated), gpukit_alloc_reserved_bytes,
    gpukit_alloc_active_bytes, and the OOM, retry and device-allocation totals. Call it once per
    step (or every few). The report's fragmentation rule compares reserved with in-use bytes.

    Returns True when figures were sent; False outside ``gpukit run`` (nothing is read: the
    call costs a flag test), without CUDA, or with gpukit's allocator installed
    (use_gpukit_allocator), whose pools send their own figures under ``gpukit run``.
    """
    if not metrics.active() or not torch.cuda.is_available() or _shim.active("torch"):
        return False
    metrics._send_alloc(alloc_figures(device))
    return True
