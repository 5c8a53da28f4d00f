"""gpukit: run GPU training well, from Python.

A thin layer over the C library libgpukit (ctypes, standard library only; numpy and torch are
imported when a feature needs them). The library does the work and makes the decisions:

* :class:`Loader` - the prefetching loader (worker threads, pinned slots, a copy stream), giving
  zero-copy numpy views, torch tensors or device arrays, with exact resume (``state_dict``);
* :func:`find_batch_size` - the largest batch that fits, usually in 3 trials;
* :class:`MemoryManager` - the memory-pressure policy, calling you back to shrink the batch;
* :mod:`gpukit.metrics` - gauges, counters and timings for ``gpukit run``;
* :class:`Device`, :class:`Pool` - devices and gpukit's caching pool;
* :mod:`gpukit.data` - record files (:func:`gpukit.data.pack`) and llm.c token shards;
* :mod:`gpukit.torch` - gpukit's pool as PyTorch's CUDA allocator (``use_gpukit_allocator``,
  with ``memory_stats``, ``empty_cache``, snapshots and ``record_stream`` from the pool), and
  ``report_memory``; :mod:`gpukit.cupy` - the same pool as CuPy's allocator.

Importing gpukit loads libgpukit (GPUKIT_LIBRARY, beside the package, the build tree, then the
system loader) and checks that its version is this package's; ``gpukit.library_path`` says which
library was loaded. Errors are :class:`Error` (with the library's message) and
:class:`OutOfMemoryError` (with the pool's out-of-memory report).
"""
from ._lib import LibraryNotFound, lib as _lib
from ._version import ABI_VERSION, __version__
from .batch import BatchSizeResult, Trial, find_batch_size
from .device import Device, Pool
from .errors import Error, OutOfMemoryError
from .loader import DeviceArray, Loader
from .memory import MemoryFigures, MemoryManager, PressureStep
from . import data, metrics

#: The path of the libgpukit this package loaded, and how it was found.
library_path = _lib.path
library_found_by = _lib.how

__all__ = [
    "ABI_VERSION", "BatchSizeResult", "Device", "DeviceArray", "Error", "LibraryNotFound",
    "Loader", "MemoryFigures", "MemoryManager", "OutOfMemoryError", "Pool", "PressureStep",
    "Trial", "__version__", "data", "find_batch_size", "library_path", "metrics",
]
