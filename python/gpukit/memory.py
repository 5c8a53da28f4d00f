"""MemoryManager: the C memory-pressure policy (gk_pressure_*) for a training loop.

Call ``mm.step()`` once per training step. It reads the memory figures (gpukit's pool, PyTorch's
``torch.cuda.memory_stats()``, or a ``read`` callable), lets the policy decide, carries out what
the allocator can do itself, and calls ``on_pressure(level, suggested_batch)`` when the step's peak
comes too close to the budget, so the application can turn on gradient checkpointing or switch
to smaller micro-batches with gradient accumulation. It never empties the cache merely because
allocated memory is high (cached memory can never lower allocated memory).
"""
import ctypes
import sys
from ctypes import byref, c_uint, c_void_p
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, Optional

from . import _shim
from . import _structs as S
from ._lib import lib
from .device import Pool, _Closeable
from .errors import check

COLLECT, TRIM, SHRINK = 1, 2, 4
_NAMES = ((COLLECT, "collect"), (TRIM, "trim"), (SHRINK, "shrink"))


@dataclass
class MemoryFigures:
    """One snapshot of an allocator's memory in bytes (what the policy reads each step).
    `peak_allocated` is the highest allocated since the application last reset it; `limit` is
    the allocator's cap (0: none, the budget is then device_free + reserved)."""
    device_free: int
    device_total: int
    reserved: int
    allocated: int
    peak_allocated: int
    limit: int = 0


@dataclass
class PressureStep:
    """What one ``mm.step()`` saw and did.

    Attributes:
        actions: the actions due, of "collect", "trim" and "shrink".
        figures: the MemoryFigures read (None for a gpukit pool, which the library reads).
        suggested_batch: with "shrink": the batch size the policy suggests (else 0).
        checkpointing: with "shrink": not even batch 1 fits the budget (turn on checkpointing).
        budget: with "shrink", or for figures: the bytes the step may use.
    """
    actions: FrozenSet[str] = field(default_factory=frozenset)
    figures: Optional[MemoryFigures] = None
    suggested_batch: int = 0
    checkpointing: bool = False
    budget: int = 0


class MemoryManager(_Closeable):
    """The memory-pressure policy over gpukit's pool, PyTorch's allocator, or figures you read.

    Args:
        pool: a gpukit.Pool: the library reads its statistics and the device's free memory, and
            collects and trims the pool itself.
        device: with PyTorch, the CUDA device whose ``torch.cuda.memory_stats()`` and
            ``mem_get_info()`` are read (default: the current one), when no pool or `read` is
            given; with gpukit's pool as PyTorch's allocator (gpukit.torch.use_gpukit_allocator)
            gpukit.torch's functions of the same names, which read the pool. A trim runs ``torch.cuda.empty_cache()``; PyTorch's allocator cannot give back
            only its oldest blocks, so "collect" is off unless `gc_high` is given (it is then only
            reported; PyTorch's own garbage_collection_threshold setting does that job).
        read: a callable returning :class:`MemoryFigures`, for any other allocator; "collect"
            and "trim" are then only reported in the step's actions.
        on_pressure: ``on_pressure(level, suggested_batch)``, called from ``step()`` when the
            peak stayed above `shrink_high` of the budget for `hysteresis` steps. `level` is
            "shrink" (use ``suggested_batch`` per step, e.g. micro-batches with gradient
            accumulation) or "checkpoint" (not even batch 1 fits: turn on activation
            checkpointing). The peak is reset after the call (pool or PyTorch), so the next steps
            judge the new setting.
        batch: the current batch size (for advice proportional to the peak).
        model: a :class:`gpukit.BatchSizeResult` from find_batch_size (or an ``(a, k)`` pair):
            the suggestion then comes from ``peak(b) = a + k*b``.
        gc_high, free_low, trim_margin, shrink_high, hysteresis, margin: the policy's settings
            (gpukit/pressure.h; defaults 0.85, 0.05, 64 MiB, 0.95, 3, 0.05).
        publish: under ``gpukit run``, send the figures read each step as the allocator gauges
            (gpukit_alloc_in_use_bytes, _reserved_bytes, ...; a gpukit pool sends its own).
    """

    def __init__(self, *, pool: Optional[Pool] = None, device=None,
                 read: Optional[Callable[[], MemoryFigures]] = None,
                 on_pressure: Optional[Callable[[str, int], object]] = None,
                 batch: Optional[int] = None, model=None, gc_high=None, free_low=None,
                 trim_margin=None, shrink_high=None, hysteresis=None, margin=None,
                 publish: bool = True):
        self.on_pressure = on_pressure
        self.publish = publish
        self._pool, self._read, self._torch = pool, read, None
        self._label = str(device) if device is not None else "unknown"  # read=: the series' device
        if pool is not None:
            if not isinstance(pool, Pool):
                raise TypeError("MemoryManager pool must be a gpukit.Pool")
        elif read is None:
            torch = sys.modules.get("torch")
            if torch is not None and _shim.active("torch"):
                from .torch import allocator
                self._torch, self._device = allocator, allocator.device_index(device)
            else:
                if torch is None or not torch.cuda.is_available():
                    raise ValueError("MemoryManager needs pool= (a gpukit.Pool), read= (a "
                                     "callable returning MemoryFigures), or PyTorch with a CUDA "
                                     "device")
                self._torch = torch.cuda
                self._device = torch.device(device) if device is not None else \
                    torch.device("cuda", torch.cuda.current_device())
            if gc_high is None:
                gc_high = 0.0
        cfg = S.new(S.gk_pressure_config)
        lib.gk_pressure_config_default(byref(cfg), ctypes.sizeof(cfg))
        for name, value in (("gc_high", gc_high), ("free_low", free_low),
                            ("trim_margin", trim_margin), ("shrink_high", shrink_high),
                            ("hysteresis", hysteresis), ("margin", margin)):
            if value is not None:
                setattr(cfg, name, value)
        if model is not None:
            a, k = (model.fit_a, model.fit_k) if hasattr(model, "fit_k") else model
            cfg.fit_a, cfg.fit_k = float(a), float(k)
        if batch is not None:
            cfg.batch = int(batch)
        self._advice = None
        if pool is not None:
            # The library samples the pool itself and calls this back with the advice; the
            # callback only copies it, and step() calls the application afterwards.
            self._cb = ctypes.CFUNCTYPE(None, c_void_p, ctypes.POINTER(S.gk_pressure_advice))(
                self._keep_advice)
            cfg.on_shrink = ctypes.cast(self._cb, c_void_p)
        self._cfg = cfg
        self._pr = None
        self._make()

    def _keep_advice(self, _user, advice):
        a = advice.contents
        self._advice = (a.suggested_batch, a.checkpointing, a.budget)

    def _make(self):
        pr = c_void_p()
        check(lib.gk_pressure_create(self._pool.handle if self._pool is not None else None,
                                     byref(self._cfg), byref(pr)))
        self._close()
        if self._pool is not None:
            self._pool._res.acquire()  # the pool outlives the policy, whatever the collector does
        self._pr = pr

    @property
    def batch(self):
        """The batch size the proportional advice starts from; set it when you change it."""
        return self._cfg.batch

    @batch.setter
    def batch(self, value):
        self._cfg.batch = int(value)
        self._make()

    def figures(self):
        """The figures this manager reads (None for a gpukit pool)."""
        if self._read is not None:
            return self._read()
        if self._torch is not None:
            cuda, dev = self._torch, self._device
            st = cuda.memory_stats(dev)
            free, total = cuda.mem_get_info(dev)
            return MemoryFigures(device_free=free, device_total=total,
                                 reserved=st.get("reserved_bytes.all.current", 0),
                                 allocated=st.get("allocated_bytes.all.current", 0),
                                 peak_allocated=st.get("allocated_bytes.all.peak", 0))
        return None

    def step(self) -> PressureStep:
        """Samples once (call it once per training step) and acts; returns what it saw."""
        actions = c_uint()
        fig = self.figures()
        self._advice = None
        if fig is None:  # a gpukit pool: the library reads it, collects and trims it
            rc = lib.gk_pressure_sample(self._pr, byref(actions))
            check(rc)
            advice = self._advice
        else:
            f = S.new(S.gk_pressure_figures)
            for name in ("device_free", "device_total", "reserved", "allocated",
                         "peak_allocated", "limit"):
                setattr(f, name, int(getattr(fig, name)))
            out = S.new(S.gk_pressure_advice)
            check(lib.gk_pressure_sample_figures(self._pr, byref(f), byref(actions), byref(out),
                                                 ctypes.sizeof(out)))
            advice = (out.suggested_batch, out.checkpointing, out.budget)
            if self.publish:
                self._publish(fig)
        bits = actions.value
        if self._torch is not None and bits & TRIM:
            self._torch.empty_cache()
        result = PressureStep(actions=frozenset(n for b, n in _NAMES if bits & b), figures=fig)
        if bits & SHRINK and advice is not None:
            result.suggested_batch, result.checkpointing = int(advice[0]), bool(advice[1])
            result.budget = int(advice[2])
            if self.on_pressure is not None:
                self.on_pressure("checkpoint" if result.checkpointing else "shrink",
                                 result.suggested_batch)
            self._reset_peak()
        elif advice is not None:
            result.budget = int(advice[2])
        return result

    def _reset_peak(self):
        if self._pool is not None:
            self._pool.reset_peak()
        elif self._torch is not None:
            self._torch.reset_peak_memory_stats(self._device)

    def _publish(self, fig):
        from . import metrics
        if not metrics.active() or _shim.active("torch"):
            return  # gpukit's pools under PyTorch publish their own series (pool="torch")
        if self._torch is not None:
            from .torch import alloc_figures
            f = alloc_figures(self._device)
            device, name = "cuda:%d" % self._device.index, "torch"
        else:
            f = S.new(S.gk_alloc_figures)
            nan = float("nan")
            f.in_use_bytes, f.reserved_bytes = fig.allocated, fig.reserved
            f.active_bytes = f.ooms = f.retries = f.device_mallocs = nan
            device, name = self._label, "custom"
        metrics._publish_alloc(device, name, f)

    def _close(self):
        if getattr(self, "_pr", None):
            lib.gk_pressure_destroy(self._pr)
            self._pr = None
            if self._pool is not None:
                self._pool._res.release()

    def close(self):
        """Frees the policy (idempotent)."""
        self._close()
