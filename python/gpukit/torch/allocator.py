"""gpukit's pool as PyTorch's CUDA allocator, and the memory API PyTorch's pluggable path lacks.

``use_gpukit_allocator()`` hands every CUDA allocation of the process to gpukit's pool (one per
device, in the shim libgpukit_torch.so) through ``torch.cuda.memory.CUDAPluggableAllocator``. A
pluggable allocator loses ``torch.cuda.memory_stats()``, ``empty_cache()``, ``record_stream`` and
snapshots; the functions here give them back from the pool: same names, same keys, same meaning.
The pool computes every figure; this module only names the device and converts the JSON.
"""
import contextlib
from collections import OrderedDict

import torch

from .. import _shim
from .memory import device_index

_TOO_LATE = (
    "gpukit.torch.use_gpukit_allocator() must run before CUDA is initialized in this process "
    "(before the first CUDA tensor, model.cuda(), torch.cuda.current_device(), ...): PyTorch "
    "cannot swap an allocator that is already in use. Call it at the top of the script, right "
    "after the imports:\n\n"
    "    import torch\n"
    "    import gpukit.torch\n"
    "    gpukit.torch.use_gpukit_allocator()\n")

_installed = None


def _pluggable():
    """(torch.cuda.memory, CUDAPluggableAllocator), or raises naming the PyTorch needed."""
    mem = getattr(torch.cuda, "memory", None)
    cls = getattr(mem, "CUDAPluggableAllocator", None)
    if cls is None or not hasattr(mem, "change_current_allocator"):
        raise RuntimeError(
            "gpukit.torch.use_gpukit_allocator needs torch.cuda.memory.CUDAPluggableAllocator, "
            "which PyTorch 2.0 added; this PyTorch is %s. Install PyTorch 2.x built with CUDA, or "
            "use gpukit.Pool directly." % getattr(torch, "__version__", "unknown"))
    return mem, cls


def _new_allocator(cls):
    return cls(_shim.load().path, "gk_torch_malloc_raise", "gk_torch_free")


def use_gpukit_allocator(preset: str = "default", conf=None):
    """Makes gpukit's pool PyTorch's CUDA allocator for the rest of the process.

    Args:
        preset: the pool's preset, "default" (PyTorch's rules with expandable segments where the
            GPU has virtual memory) or "pytorch" (PyTorch's documented default policy).
        conf: more settings, "key=value,..." or a dict, with the keys of gpukit's pool
            (docs/pool.md), applied after the preset and GK_POOL_CONF.

    Must run before CUDA is initialized (first thing in the script); afterwards it raises
    RuntimeError saying so. Calling it again with the same settings does nothing. Returns
    PyTorch's allocator object. The settings are checked at once (gpukit.Error names a bad key
    or value). Raises RuntimeError when this PyTorch has no CUDAPluggableAllocator, and
    gpukit.LibraryNotFound when the shim is missing.
    """
    global _installed
    mem, cls = _pluggable()
    if _installed is not None:
        _shim.configure(preset, conf)  # the same settings pass; others raise (the pool exists)
        return _installed
    if torch.cuda.is_initialized():
        raise RuntimeError(_TOO_LATE)
    _shim.configure(preset, conf)
    alloc = _new_allocator(cls)
    try:
        mem.change_current_allocator(alloc)
    except RuntimeError as e:
        if "already initialized" in str(e):
            raise RuntimeError(_TOO_LATE) from e
        raise
    _installed = alloc
    _shim.mark_active("torch")
    return alloc


@contextlib.contextmanager
def gpukit_mem_pool(preset: str = "default", conf=None, device=None):
    """Scoped use: tensors made inside ``with gpukit_mem_pool():`` get their memory from gpukit's
    pool, through ``torch.cuda.MemPool`` and ``torch.cuda.use_mem_pool`` (PyTorch versions that
    have them). PyTorch's caching allocator keeps doing the caching for that MemPool and asks
    gpukit's pool for its segments, so ``torch.cuda.memory_stats()`` stays PyTorch's and this
    module's functions describe the segments gpukit holds. Yields the MemPool, which must
    outlive the tensors made in it. Raises RuntimeError when this PyTorch lacks MemPool.
    """
    mem, cls = _pluggable()
    if not hasattr(torch.cuda, "MemPool") or not hasattr(torch.cuda, "use_mem_pool"):
        raise RuntimeError(
            "gpukit.torch.gpukit_mem_pool needs torch.cuda.MemPool and torch.cuda.use_mem_pool, "
            "which this PyTorch (%s) lacks; call gpukit.torch.use_gpukit_allocator() at the top "
            "of the script instead" % getattr(torch, "__version__", "unknown"))
    _shim.configure(preset, conf)
    pool = torch.cuda.MemPool(_new_allocator(cls).allocator())
    with torch.cuda.use_mem_pool(pool, device=device):
        yield pool


def is_active() -> bool:
    """Whether use_gpukit_allocator() made gpukit's pool PyTorch's allocator."""
    return _shim.active("torch")


def memory_stats(device=None):
    """The pool's statistics for `device` with torch.cuda.memory_stats()'s keys and meaning
    ("allocated_bytes.all.current", "reserved_bytes.large_pool.peak", "num_ooms", ...), plus
    gpukit's own (num_cache_hits, largest_free_block, frag_external, ...), sorted by key."""
    return OrderedDict(sorted(_shim.stats(device_index(device)).items()))


def memory_allocated(device=None) -> int:
    return memory_stats(device)["allocated_bytes.all.current"]


def max_memory_allocated(device=None) -> int:
    return memory_stats(device)["allocated_bytes.all.peak"]


def memory_reserved(device=None) -> int:
    return memory_stats(device)["reserved_bytes.all.current"]


def max_memory_reserved(device=None) -> int:
    return memory_stats(device)["reserved_bytes.all.peak"]


def memory_summary(device=None, abbreviated=False) -> str:
    """The table laid out like torch.cuda.memory_summary() (`abbreviated` is accepted for the
    same signature; the table is always the full one)."""
    return _shim.summary(device_index(device))


def reset_peak_memory_stats(device=None):
    """Sets every peak of the device's pool to its current value."""
    _shim.check(_shim.load().gk_torch_reset_peak(device_index(device)))


def reset_accumulated_memory_stats(device=None):
    """Clears the allocated/freed sums, num_alloc_retries and num_ooms."""
    _shim.check(_shim.load().gk_torch_reset_accumulated(device_index(device)))


def empty_cache(device=None):
    """Gives every unsplit cached block of the device's pool back to the GPU."""
    _shim.check(_shim.load().gk_torch_empty_cache(device_index(device)))


def mem_get_info(device=None):
    """(free, total) bytes of the device, as torch.cuda.mem_get_info."""
    return _shim.mem_info(device_index(device))


def synchronize(device=None):
    """torch.cuda.synchronize(device) when CUDA is present (a no-op without it)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize(device)


def snapshot(device=None):
    """The pool's snapshot with PyTorch's field names: {"segments": [...], "device_traces":
    [...]} (device_traces holds the history ring when the pool's history setting is on)."""
    snap = _shim.snapshot(device_index(device))
    for seg in snap.get("segments", []):
        seg.setdefault("device", device_index(device))
    return snap


def memory_snapshot(device=None):
    """The segments of snapshot(), as torch.cuda.memory_snapshot() returns them."""
    return snapshot(device)["segments"]


def record_stream(tensor, stream):
    """What ``tensor.record_stream(stream)`` does with PyTorch's own allocator (a pluggable one
    ignores it): the tensor's block is not reused until the work queued on `stream` before the
    tensor is freed has completed. `stream` is a torch.cuda.Stream (or a raw CUstream as int)."""
    handle = getattr(stream, "cuda_stream", stream)
    storage = tensor.untyped_storage() if hasattr(tensor, "untyped_storage") else tensor.storage()
    _shim.check(_shim.load().gk_torch_record_stream(storage.data_ptr(),
                                                    device_index(tensor.device), handle or None))


def last_oom_report() -> str:
    """The text kept by the last allocation that failed on any device: the pool's out-of-memory
    report (the request, the device's free and total memory, allocated, reserved and cached
    bytes, the largest free block, the largest live blocks, a hint), or the error that stopped
    it; "" when none failed. PyTorch's pluggable path does not check the pointer it gets, so
    a failure also shows in the log (error level) and the next kernel may fail on address 0."""
    return _shim.last_report()[1]
