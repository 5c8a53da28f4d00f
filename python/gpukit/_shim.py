"""The allocator shim, libgpukit_torch.so (gpukit/torch.h): loading it, its prototypes, and the
calls gpukit.torch and gpukit.cupy share. Importing this module imports neither torch nor cupy.

The shim is looked for at GPUKIT_TORCH_LIBRARY when set, else beside the libgpukit the package
loaded (the build tree's folder, or the installed libdir), else through the system loader. It
carries its own copy of gpukit, so every call about its pools goes through it (never through
libgpukit with a pool pointer): gk_torch_last_error() holds its messages.
"""
import ctypes
import errno
import json
import os
import threading
from ctypes import POINTER, c_char_p, c_int, c_size_t, c_ssize_t, c_void_p

from ._lib import LibraryNotFound, capture, cstr, lib
from .errors import GK_EDEVOOM, Error, OutOfMemoryError

NAME = "libgpukit_torch.so"

PROTOTYPES = {
    "gk_torch_malloc": (c_void_p, [c_ssize_t, c_int, c_void_p]),
    "gk_torch_free": (None, [c_void_p, c_ssize_t, c_int, c_void_p]),
    "gk_torch_configure": (c_int, [c_char_p, c_char_p]),
    "gk_torch_get_stats": (c_int, [c_int, c_void_p, c_size_t]),
    "gk_torch_stats_json": (c_int, [c_int, c_void_p]),
    "gk_torch_summary": (c_int, [c_int, c_void_p]),
    "gk_torch_snapshot_json": (c_int, [c_int, c_void_p]),
    "gk_torch_reset_peak": (c_int, [c_int]),
    "gk_torch_reset_accumulated": (c_int, [c_int]),
    "gk_torch_empty_cache": (c_int, [c_int]),
    "gk_torch_mem_info": (c_int, [c_int, POINTER(c_size_t), POINTER(c_size_t)]),
    "gk_torch_record_stream": (c_int, [c_void_p, c_int, c_void_p]),
    "gk_torch_last_report": (c_size_t, [c_char_p, c_size_t, POINTER(c_int)]),
    "gk_torch_last_error": (c_char_p, []),
    "gk_torch_shutdown": (c_int, []),
    "gk_torch_test_use_sim": (c_int, [c_char_p]),
    "gk_torch_test_stream_create": (c_int, [c_int, POINTER(c_void_p)]),
    "gk_torch_test_stream_destroy": (c_int, [c_int, c_void_p]),
}

_lock = threading.RLock()
_loaded = None
_active = set()  # "torch", "cupy": who installed the shim as their allocator
_settings = None  # (preset, conf) last accepted by gk_torch_configure


def path():
    """Where the shim is looked for first (GPUKIT_TORCH_LIBRARY, else beside libgpukit)."""
    env = os.environ.get("GPUKIT_TORCH_LIBRARY")
    if env:
        return env
    d = os.path.dirname(lib.path)
    return os.path.join(d, NAME) if d else NAME


def load():
    """The loaded shim (a ctypes.CDLL with prototypes); raises LibraryNotFound with the fix."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        p = path()
        try:
            cdll = ctypes.CDLL(p)
            for name, (restype, argtypes) in PROTOTYPES.items():
                fn = getattr(cdll, name)
                fn.restype, fn.argtypes = restype, argtypes
        except (OSError, AttributeError) as e:
            raise LibraryNotFound(
                "gpukit cannot use the allocator shim %s: %s. It is built with libgpukit (cmake "
                "--build ... builds libgpukit_torch.so beside libgpukit.so.1) and installed with "
                "it; set GPUKIT_TORCH_LIBRARY=/path/to/libgpukit_torch.so to name another one."
                % (p, e)) from None
        cdll.path = p
        _loaded = cdll
        return cdll


def check(rc):
    """Raises gpukit.Error with the shim's message for a negative rc."""
    if rc < 0:
        raise Error(rc, (load().gk_torch_last_error() or b"").decode("utf-8", "replace"))
    return rc


def mark_active(who):
    _active.add(who)


def active(who=None):
    """Whether gpukit's pool was installed as an allocator (by `who`, or by anyone)."""
    return bool(_active) if who is None else who in _active


def configure(preset, conf):
    """Checks and sets the settings of the pools to come (gk_torch_configure). Once pools exist,
    the settings they were made with are accepted again (PyTorch and CuPy share the pools) and
    others raise gpukit.Error (EBUSY)."""
    global _settings
    if isinstance(conf, dict):
        conf = ",".join("%s=%s" % (k, int(v) if isinstance(v, bool) else v)
                        for k, v in conf.items())
    key = (cstr(preset, "preset"), b"" if conf is None else cstr(conf, "conf"))
    with _lock:
        rc = load().gk_torch_configure(key[0], key[1])
        if rc == -errno.EBUSY and key == _settings:
            return
        check(rc)
        _settings = key


def shutdown():
    """gk_torch_shutdown (tests): every pool destroyed, the shim as loaded."""
    global _settings
    with _lock:
        check(load().gk_torch_shutdown())
        _settings = None
        _active.clear()


def _written(fn, device):
    """The text a gk_torch_* writer (int fn(int device, FILE *)) writes for `device`."""
    rc, text = capture(lambda f: fn(device, f))
    check(rc)
    return text


def stats(device):
    """The pool's statistics with PyTorch's flat keys (gk_torch_stats_json) as a dict."""
    return json.loads(_written(load().gk_torch_stats_json, device))


def summary(device):
    return _written(load().gk_torch_summary, device)


def snapshot(device):
    return json.loads(_written(load().gk_torch_snapshot_json, device))


def mem_info(device):
    free, total = c_size_t(), c_size_t()
    check(load().gk_torch_mem_info(device, ctypes.byref(free), ctypes.byref(total)))
    return free.value, total.value


def last_report():
    """(code, text) of the last failed allocation ((0, "") when none)."""
    shim = load()
    code = c_int()
    n = shim.gk_torch_last_report(None, 0, None)
    buf = ctypes.create_string_buffer(n + 1)
    shim.gk_torch_last_report(buf, n + 1, ctypes.byref(code))
    return code.value, buf.value.decode("utf-8", "replace")


def malloc(size, device, stream):
    """gk_torch_malloc for a caller that raises: the pointer as an int, or OutOfMemoryError with
    the report kept by the shim (size 0 gives 0)."""
    if size == 0:
        return 0
    ptr = load().gk_torch_malloc(size, device, stream)
    if not ptr:
        code, report = last_report()
        if code == GK_EDEVOOM:
            raise OutOfMemoryError(code, report.split("\n", 1)[0], report)
        raise Error(code or -errno.EIO, report)
    return ptr


def free(ptr, device, stream=None):
    load().gk_torch_free(ptr, 0, device, stream)
