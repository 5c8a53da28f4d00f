"""gpukit's pool as CuPy's allocator: the same pools as PyTorch's in one process.

``gpukit.cupy.use_gpukit_allocator()`` makes every CuPy allocation come from the pool of its
device in the shim libgpukit_torch.so, the pools gpukit.torch.use_gpukit_allocator() gives
PyTorch, so a process running both shares one cache per GPU. It goes through
``cupy.cuda.memory.PythonFunctionAllocator``, so each allocation is made for CuPy's current stream
(``cupy.cuda.get_current_stream()``), with the same stream-aware reuse as PyTorch's tensors.
The statistics, summary, snapshot and empty_cache of gpukit.torch describe these pools too (they
need PyTorch only for the device's number; pass it). Importing gpukit.cupy imports cupy.
"""
import cupy

from . import _shim


def _malloc(size, device_id):
    return _shim.malloc(size, device_id, cupy.cuda.get_current_stream().ptr or None)


def _free(ptr, device_id):
    _shim.free(ptr, device_id)


def use_gpukit_allocator(preset: str = "default", conf=None):
    """Makes gpukit's pool CuPy's allocator (``cupy.cuda.set_allocator``) for this process.

    `preset` and `conf` are those of gpukit.torch.use_gpukit_allocator; when PyTorch already
    uses the pools, pass the same ones (others raise gpukit.Error: the pools exist). A failed
    allocation raises gpukit.OutOfMemoryError with the pool's report. Returns the allocator.
    ``cupy.cuda.set_allocator(cupy.get_default_memory_pool().malloc)`` switches back to CuPy's
    own pool (blocks already made stay gpukit's until they are freed).
    """
    _shim.configure(preset, conf)
    alloc = cupy.cuda.memory.PythonFunctionAllocator(_malloc, _free)
    cupy.cuda.set_allocator(alloc.malloc)
    _shim.mark_active("cupy")
    return alloc
