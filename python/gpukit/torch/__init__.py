"""gpukit for PyTorch programs.

* ``gpukit.torch.use_gpukit_allocator()`` makes gpukit's pool PyTorch's CUDA allocator (call it
  first thing in the script), and ``memory_stats()``, ``memory_summary()``,
  ``reset_peak_memory_stats()``, ``empty_cache()``, ``memory_snapshot()``, ``record_stream()`` and
  ``last_oom_report()`` give back what PyTorch's pluggable-allocator path lacks (allocator.py);
  ``gpukit_mem_pool()`` uses the pool for one block of code through ``torch.cuda.MemPool``.
* ``gpukit.torch.report_memory()`` sends PyTorch's allocator figures to ``gpukit run``, so the
  report of a plain PyTorch job gets the allocator series and the fragmentation advice
  (memory.py).

Importing gpukit.torch imports torch.
"""
from .allocator import (
    device_index,
    empty_cache,
    gpukit_mem_pool,
    is_active,
    last_oom_report,
    max_memory_allocated,
    max_memory_reserved,
    mem_get_info,
    memory_allocated,
    memory_reserved,
    memory_snapshot,
    memory_stats,
    memory_summary,
    record_stream,
    reset_accumulated_memory_stats,
    reset_peak_memory_stats,
    snapshot,
    synchronize,
    use_gpukit_allocator,
)
from .memory import alloc_figures, report_memory

__all__ = [
    "alloc_figures", "device_index", "empty_cache", "gpukit_mem_pool", "is_active",
    "last_oom_report", "max_memory_allocated", "max_memory_reserved", "mem_get_info",
    "memory_allocated", "memory_reserved", "memory_snapshot", "memory_stats", "memory_summary",
    "record_stream", "report_memory", "reset_accumulated_memory_stats",
    "reset_peak_memory_stats", "snapshot", "synchronize", "use_gpukit_allocator",
]
