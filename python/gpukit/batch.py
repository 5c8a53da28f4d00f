"""find_batch_size: the C batch-size finder over a Python training step.

The finder (gk_batch_find) decides every size to try and fits the memory model; Python runs the
step, measures its peak, and turns out-of-memory exceptions into failed trials.
"""
import ctypes
import gc
import sys
import traceback
from ctypes import byref, c_int
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from . import _shim
from . import _structs as S
from ._lib import cstr, lib
from .device import Pool
from .errors import GK_EDEVOOM, OutOfMemoryError, check

_EABORT = -125  # -ECANCELED: the step raised something else; the search stops


@dataclass
class Trial:
    """One trial: the batch size, whether it fitted, and the peak of allocated bytes measured
    (0 when the trial ran out of memory or nothing measured it)."""
    batch: int
    fitted: bool
    peak: int


@dataclass
class BatchSizeResult:
    """What find_batch_size found.

    Attributes:
        batch: the largest size found that fits (verified by a trial).
        mode: the search mode.
        trials: every trial in order, with its peak.
        ooms: trials that ran out of memory.
        fit_a, fit_k: model mode: the fitted ``peak(b) = fit_a + fit_k * b`` in bytes.
        predicted: model mode: the prediction before it was verified.
        budget: model mode: the bytes the prediction used.
    """
    batch: int
    mode: str
    trials: List[Trial] = field(default_factory=list)
    ooms: int = 0
    fit_a: float = 0.0
    fit_k: float = 0.0
    predicted: int = 0
    budget: float = 0.0

    def peak(self, b):
        """The model's peak for batch size `b` in bytes (model mode)."""
        return self.fit_a + self.fit_k * b


def _oom_classes(extra):
    classes = [OutOfMemoryError]
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda") and hasattr(torch.cuda, "OutOfMemoryError"):
        classes.append(torch.cuda.OutOfMemoryError)
    if extra:
        classes.extend(extra if isinstance(extra, (tuple, list)) else [extra])
    return tuple(classes)


def _is_oom(e, classes):
    """An out-of-memory failure: one of `classes`, or a RuntimeError whose message starts with
    "CUDA out of memory." (gpukit's allocator inside PyTorch raises that; so did PyTorch before
    torch.cuda.OutOfMemoryError)."""
    if isinstance(e, classes):
        return True
    return isinstance(e, RuntimeError) and str(e).startswith("CUDA out of memory.")


def _torch_cuda(device):
    """(cuda, device) when the step's memory is PyTorch's on a CUDA device, else None. `cuda` is
    torch.cuda, or gpukit.torch when gpukit's pool is PyTorch's allocator (use_gpukit_allocator:
    PyTorch's pluggable path has no statistics); both have the calls used here."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if _shim.active("torch"):
        from .torch import allocator
        return allocator, allocator.device_index(device)
    if not torch.cuda.is_available():
        return None
    dev = torch.device(device) if device is not None else torch.device("cuda",
                                                                       torch.cuda.current_device())
    return (torch.cuda, dev) if dev.type == "cuda" else None


def _release(torch_dev):
    """Gives back what a failed trial held: the frames of its exception, then the cache."""
    gc.collect()
    if torch_dev is not None:
        torch_dev[0].empty_cache()


def find_batch_size(step: Callable[[int], object], *, budget: Optional[int] = None,
                    margin: Optional[float] = None, max_batch: Optional[int] = None,
                    multiple_of: Optional[int] = None, mode: str = "model",
                    pool: Optional[Pool] = None, measure: Optional[Callable[[], int]] = None,
                    device=None, oom=(), init: Optional[int] = None, b1: Optional[int] = None,
                    b2: Optional[int] = None, max_trials: Optional[int] = None,
                    decay: Optional[float] = None) -> BatchSizeResult:
    """The largest batch size whose training step fits in memory, with as few trials as
    possible.

    ``step(b)`` runs a few training steps at batch size b. Out-of-memory exceptions inside it
    (gpukit.OutOfMemoryError, torch.cuda.OutOfMemoryError, a RuntimeError whose message starts
    "CUDA out of memory.", and the classes in `oom`) are failed
    trials: the exception and its frames are dropped and memory released (``gc.collect()``, and
    ``torch.cuda.empty_cache()`` for PyTorch) before the next trial. Any other exception stops
    the search and is raised again.

    The model mode (default) measures two small sizes, fits ``peak(b) = a + k*b``, predicts the
    largest b under ``(budget - a) * (1 - margin)``, and verifies it with one trial (bisecting if
    it fails): usually 3 trials. The peak of each trial is read from, first to last:

    * `pool`: the gpukit.Pool the step allocates from (the C finder resets and reads its peak;
      the budget defaults to the pool's limit, else the device's free memory plus what the pool
      holds);
    * `measure`: a callable returning the peak bytes of the trial just run (the step resets
      its own counter); `budget` is then required;
    * PyTorch on CUDA (`device`, default the current CUDA device), when torch is imported and a
      GPU is present: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` and a
      synchronize; the budget defaults to the device's free memory plus what PyTorch reserved.
      With gpukit's pool as PyTorch's allocator (gpukit.torch.use_gpukit_allocator) the same
      figures come from gpukit.torch's functions, which read the pool.

    Other modes need no peak: "power" and "binsearch" behave like Lightning's BatchSizeFinder,
    "decay" like accelerate's find_executable_batch_size. `margin` (default 0.04 of the budget),
    `max_batch` (65535), `multiple_of` (1), `init`, `b1`/`b2` (2 and 8), `max_trials` (25) and
    `decay` (0.9) default to the library's settings.

    Returns a :class:`BatchSizeResult`. Raises gpukit.OutOfMemoryError when not even the
    smallest size fits, gpukit.Error for a bad setting (the message names it) or when the trials
    run out. Under ``gpukit run`` the answer and the model are published for the report.
    """
    cfg = S.new(S.gk_batch_config)
    lib.gk_batch_config_default(byref(cfg), ctypes.sizeof(cfg))
    m = c_int()
    check(lib.gk_batch_mode_parse(cstr(mode, "mode"), byref(m)))
    cfg.mode = m.value
    for name, value in (("margin", margin), ("max_batch", max_batch), ("multiple", multiple_of),
                        ("init", init), ("b1", b1), ("b2", b2), ("max_trials", max_trials),
                        ("decay", decay), ("budget", budget)):
        if value is not None:
            setattr(cfg, name, value)
    torch_dev = None
    if pool is not None:
        if not isinstance(pool, Pool):
            raise TypeError("find_batch_size pool must be a gpukit.Pool")
        cfg.pool = pool.handle
    elif measure is None:
        torch_dev = _torch_cuda(device)
        if torch_dev is not None and budget is None and mode == "model":
            # What PyTorch's allocator can reach: as the C finder counts a pool's budget.
            cuda, dev = torch_dev
            free, _total = cuda.mem_get_info(dev)
            cfg.budget = free + cuda.memory_reserved(dev)
    if mode == "model" and pool is None and measure is None and torch_dev is None:
        raise ValueError("find_batch_size: the model mode measures each trial's peak: give "
                         "pool= (a gpukit.Pool), measure= (a callable returning the peak bytes), "
                         "or run the step with PyTorch on a CUDA device")
    ooms = _oom_classes(oom)
    state = {"error": None}

    def trial(_user, batch, peak):
        try:
            if torch_dev is not None:
                cuda, dev = torch_dev
                cuda.reset_peak_memory_stats(dev)
            out_of_memory = False
            try:
                step(int(batch))
            except BaseException as e:
                if not _is_oom(e, ooms):
                    raise
                traceback.clear_frames(e.__traceback__)  # the step's tensors live in its frames
                out_of_memory = True
            if out_of_memory:  # the exception is gone here: its memory can be released
                _release(torch_dev)
                return GK_EDEVOOM
            if pool is not None:
                return 0  # the C finder reads the pool
            if measure is not None:
                peak[0] = int(measure())
            elif torch_dev is not None:
                cuda, dev = torch_dev
                cuda.synchronize(dev)
                peak[0] = int(cuda.max_memory_allocated(dev))
            return 0
        except BaseException as e:  # re-raised after the C finder returns
            state["error"] = e
            return _EABORT

    cb = S.gk_batch_trial_fn(trial)
    res = S.new(S.gk_batch_result)
    rc = lib.gk_batch_find(byref(cfg), cb, None, byref(res), ctypes.sizeof(res))
    if state["error"] is not None:
        lib.last_error()  # the finder's message is about the callback's code; the cause is ours
        raise state["error"]
    check(rc)
    n = min(res.trials, S.GK_BATCH_MAX_LOG)
    trials = [Trial(int(res.tried[i]), bool(res.tried_ok[i]), int(res.tried_peak[i]))
              for i in range(n)]
    return BatchSizeResult(batch=int(res.batch), mode=mode, trials=trials, ooms=int(res.ooms),
                           fit_a=res.fit_a, fit_k=res.fit_k, predicted=int(res.predicted),
                           budget=res.budget)
