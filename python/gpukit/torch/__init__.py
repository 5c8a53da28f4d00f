"""gpukit for PyTorch programs.

``gpukit.torch.report_memory()`` sends PyTorch's allocator figures to ``gpukit run``, so the
report of a plain PyTorch job gets the allocator series and the fragmentation advice. Each part
of this package lives in its own module (memory.py today) and is re-exported here; importing
gpukit.torch imports torch.
"""
from .memory import alloc_figures, report_memory

__all__ = ["alloc_figures", "report_memory"]
