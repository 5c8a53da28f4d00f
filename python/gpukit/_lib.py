"""Finding, loading and checking libgpukit, and the prototypes of the functions the package calls.

The library is looked for, in this order:
  1. the path in the GPUKIT_LIBRARY environment variable (when it is set, nothing else is tried);
  2. beside the package: a libgpukit.so.1 inside the package folder, or the library that
     `make install` / `cmake --install` installed with the package (recorded in _install.py);
  3. the build tree, when the package is imported from a source checkout (python/gpukit): the
     library of build/release, build/dev, build/ci-gcc, build/gpu or build, in that order;
  4. the system loader (libgpukit.so.1 on the default search path, LD_LIBRARY_PATH included).
A library is used only if its gk_abi_version() and gk_version_string() match the package.
"""
import ctypes
import os
from ctypes import (
    POINTER,
    c_char_p,
    c_double,
    c_int,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)

from . import _structs as S
from ._version import ABI_VERSION, __version__

SONAME = "libgpukit.so.1"
BUILD_DIRS = ("build/release", "build/dev", "build/ci-gcc", "build/gpu", "build")
_HERE = os.path.dirname(os.path.abspath(__file__))

_p = POINTER


def _ptr(cls):
    return POINTER(cls)


# name: (restype, argtypes). Sized-struct functions are the real symbols (no C macros here):
# their last argument is the caller's struct size, ctypes.sizeof of the mirror.
PROTOTYPES = {
    # version.h, error.h
    "gk_version_string": (c_char_p, []),
    "gk_abi_version": (c_uint, []),
    "gk_last_error": (c_char_p, []),
    "gk_err_name": (c_char_p, [c_int]),
    "gk_strerror": (c_char_p, [c_int]),
    # device.h
    "gk_device_open": (c_int, [c_char_p, _p(c_void_p)]),
    "gk_device_close": (None, [c_void_p]),
    "gk_device_auto_reason": (c_char_p, [c_void_p]),
    "gk_device_get_props": (c_int, [c_void_p, _ptr(S.gk_device_props), c_size_t]),
    "gk_device_mem_info": (c_int, [c_void_p, _p(c_size_t), _p(c_size_t)]),
    "gk_stream_wrap": (c_int, [c_void_p, c_void_p, _p(c_void_p)]),
    "gk_stream_destroy": (c_int, [c_void_p, c_void_p]),
    "gk_stream_synchronize": (c_int, [c_void_p, c_void_p, c_double]),
    "gk_memcpy_dtoh_async": (c_int, [c_void_p, c_void_p, c_void_p, c_size_t, c_void_p]),
    # pool.h
    "gk_pool_config_preset": (c_int, [_ptr(S.gk_pool_config), c_char_p, c_size_t]),
    "gk_pool_config_from_env": (c_int, [_ptr(S.gk_pool_config)]),
    "gk_pool_config_set": (c_int, [_ptr(S.gk_pool_config), c_char_p, c_char_p, c_char_p,
                                   c_size_t]),
    "gk_pool_create": (c_int, [c_void_p, _ptr(S.gk_pool_config), _p(c_void_p)]),
    "gk_pool_destroy": (None, [c_void_p]),
    "gk_pool_malloc_tagged": (c_int, [c_void_p, c_size_t, c_void_p, c_char_p, _p(c_void_p)]),
    "gk_pool_free": (c_int, [c_void_p, c_void_p]),
    "gk_pool_empty_cache": (c_int, [c_void_p]),
    "gk_pool_trim": (c_int, [c_void_p, c_size_t, _p(c_size_t)]),
    "gk_pool_set_limit": (c_int, [c_void_p, c_size_t]),
    "gk_pool_get_limit": (c_size_t, [c_void_p]),
    "gk_pool_reset_peak": (None, [c_void_p]),
    "gk_pool_oom_report": (c_size_t, [c_void_p, c_char_p, c_size_t]),
    "gk_pool_summary": (c_int, [c_void_p, c_void_p]),
    "gk_pool_snapshot_json": (c_int, [c_void_p, c_void_p]),
    "gk_pool_device": (c_void_p, [c_void_p]),
    # gk_pool_stats_json takes a gk_pool_stats filled by gk_pool_get_stats; the package passes a
    # buffer it never reads field by field (the JSON carries the names).
    "gk_pool_get_stats": (c_int, [c_void_p, c_void_p, c_size_t]),
    "gk_pool_stats_json": (c_int, [c_void_p, c_void_p]),
    # loader.h: datasets
    "gk_dataset_memory": (c_int, [c_void_p, c_size_t, c_uint64, _p(c_void_p)]),
    "gk_dataset_open_records": (c_int, [c_char_p, _ptr(S.gk_records_options), _p(c_void_p)]),
    "gk_dataset_open_tokens": (c_int, [c_char_p, c_uint32, c_uint32, c_uint32, _p(c_void_p)]),
    "gk_dataset_destroy": (None, [c_void_p]),
    "gk_dataset_count": (c_uint64, [c_void_p]),
    "gk_dataset_item_size": (c_size_t, [c_void_p]),
    "gk_dataset_token_bytes": (c_uint32, [c_void_p]),
    "gk_records_options_default": (None, [_ptr(S.gk_records_options), c_size_t]),
    "gk_records_inspect": (c_int, [c_char_p, _ptr(S.gk_records_info), c_char_p, c_size_t,
                                   c_size_t]),
    "gk_tokens_inspect": (c_int, [c_char_p, _ptr(S.gk_tokens_info), c_char_p, c_size_t,
                                  c_size_t]),
    "gk_records_writer_open": (c_int, [c_char_p, c_uint64, c_char_p, c_uint32, _p(c_uint64),
                                       _p(c_void_p)]),
    "gk_records_writer_write": (c_int, [c_void_p, c_void_p, c_uint64]),
    "gk_records_writer_close": (c_int, [c_void_p]),
    "gk_records_writer_abort": (None, [c_void_p]),
    # loader.h: the loader
    "gk_loader_config_default": (None, [_ptr(S.gk_loader_config), c_size_t]),
    "gk_loader_config_from_env": (c_int, [_ptr(S.gk_loader_config), c_char_p, c_size_t]),
    "gk_loader_create": (c_int, [_ptr(S.gk_loader_config), c_void_p, _p(c_void_p)]),
    "gk_loader_next": (c_int, [c_void_p, c_void_p, c_double, _ptr(S.gk_batch), c_size_t]),
    "gk_loader_get_state_delivered": (c_int, [c_void_p, _ptr(S.gk_loader_state), c_size_t]),
    "gk_loader_restore": (c_int, [c_void_p, _ptr(S.gk_loader_state)]),
    "gk_loader_set_epoch": (c_int, [c_void_p, c_uint64]),
    "gk_loader_batches_per_epoch": (c_uint64, [c_void_p]),
    "gk_loader_get_stats": (c_int, [c_void_p, _ptr(S.gk_loader_stats), c_size_t]),
    "gk_loader_stop": (None, [c_void_p]),
    "gk_loader_destroy": (None, [c_void_p]),
    # batch.h
    "gk_batch_config_default": (None, [_ptr(S.gk_batch_config), c_size_t]),
    "gk_batch_mode_parse": (c_int, [c_char_p, _p(c_int)]),
    "gk_batch_find": (c_int, [_ptr(S.gk_batch_config), S.gk_batch_trial_fn, c_void_p,
                              _ptr(S.gk_batch_result), c_size_t]),
    # pressure.h
    "gk_pressure_config_default": (None, [_ptr(S.gk_pressure_config), c_size_t]),
    "gk_pressure_create": (c_int, [c_void_p, _ptr(S.gk_pressure_config), _p(c_void_p)]),
    "gk_pressure_destroy": (None, [c_void_p]),
    "gk_pressure_sample": (c_int, [c_void_p, _p(c_uint)]),
    "gk_pressure_sample_figures": (c_int, [c_void_p, _ptr(S.gk_pressure_figures), _p(c_uint),
                                           _ptr(S.gk_pressure_advice), c_size_t]),
    "gk_alloc_figures_publish": (c_int, [c_void_p, c_char_p, c_char_p,
                                         _ptr(S.gk_alloc_figures)]),
    # run.h
    "gk_statsd_open": (c_int, [c_char_p, _p(c_void_p)]),
    "gk_statsd_close": (None, [c_void_p]),
    "gk_statsd_active": (c_int, [c_void_p]),
    "gk_metrics_publisher_refresh": (c_int, []),
    "gk_metrics_publish_now": (c_int, []),
    "gk_statsd_dropped": (c_uint64, [c_void_p]),
    "gk_statsd_client_send": (c_int, [c_void_p, c_char_p, c_double, c_char_p, c_char_p]),
}


class LibraryNotFound(ImportError):
    """No usable libgpukit was found; the message lists every place tried and what to do."""


class Lib:
    """The loaded library: one attribute per prototyped function, plus `path` and `how`."""

    def __init__(self, cdll, path, how):
        self.path = path
        self.how = how
        self._cdll = cdll
        for name, (restype, argtypes) in PROTOTYPES.items():
            fn = getattr(cdll, name)  # AttributeError: an older library
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def last_error(self):
        return (self.gk_last_error() or b"").decode("utf-8", "replace")

    def err_name(self, code):
        return self.gk_err_name(code).decode()


def _source_root():
    """The checkout that holds this package (python/gpukit), or None for an installed package."""
    root = os.path.dirname(os.path.dirname(_HERE))
    if os.path.isfile(os.path.join(root, "include", "gpukit", "version.h")) and \
            os.path.isfile(os.path.join(root, "CMakeLists.txt")):
        return root
    return None


def candidates():
    """(where, path or soname) in search order, without GPUKIT_LIBRARY."""
    out = [("beside the package", os.path.join(_HERE, SONAME))]
    try:
        from . import _install  # written by `make install`
        out.append(("installed with the package",
                    os.path.normpath(os.path.join(_HERE, _install.LIBRARY))))
    except ImportError:
        pass
    root = _source_root()
    if root:
        for d in BUILD_DIRS:
            out.append(("build tree", os.path.join(root, d, SONAME)))
    out.append(("system loader", SONAME))
    return out


def _try(path, how):
    """A Lib, or raises OSError/ValueError with the reason."""
    try:
        cdll = ctypes.CDLL(path)
    except OSError as e:
        raise OSError(str(e).split(": ", 1)[-1] if path in str(e) else str(e))
    try:
        abi = cdll.gk_abi_version
        ver = cdll.gk_version_string
    except AttributeError:
        raise ValueError("not a gpukit library of ABI %d (no gk_abi_version)" % ABI_VERSION)
    abi.restype, abi.argtypes = c_uint, []
    ver.restype, ver.argtypes = c_char_p, []
    got_abi, got_ver = abi(), ver().decode()
    if got_abi != ABI_VERSION:
        raise ValueError("ABI %d, the package needs ABI %d" % (got_abi, ABI_VERSION))
    if got_ver != __version__:
        raise ValueError("version %s, the package is %s" % (got_ver, __version__))
    try:
        return Lib(cdll, path, how)
    except AttributeError as e:
        raise ValueError("lacks %s" % e)


def load():
    """Finds and loads libgpukit; raises LibraryNotFound naming every place tried."""
    env = os.environ.get("GPUKIT_LIBRARY")
    if env:
        try:
            return _try(env, "GPUKIT_LIBRARY")
        except (OSError, ValueError) as e:
            raise LibraryNotFound(
                "gpukit: GPUKIT_LIBRARY=%s cannot be used: %s. Point GPUKIT_LIBRARY at the "
                "libgpukit.so.1 of gpukit %s (a build tree's build/<dir>/libgpukit.so.1), or unset "
                "it to search the usual places." % (env, e, __version__)) from None
    tried = ["GPUKIT_LIBRARY (not set)"]
    for how, path in candidates():
        if how != "system loader" and not os.path.exists(path):
            tried.append("%s (%s): not found" % (path, how))
            continue
        try:
            return _try(path, how)
        except (OSError, ValueError) as e:
            tried.append("%s (%s): %s" % (path, how, e))
    raise LibraryNotFound(
        "gpukit %s cannot find a usable libgpukit (ABI %d). Tried:\n  %s\nBuild it (make build, "
        "or cmake --build build/dev) and import gpukit from the checkout's python/ folder, install "
        "it (make install), or set GPUKIT_LIBRARY=/path/to/libgpukit.so.1."
        % (__version__, ABI_VERSION, "\n  ".join(tried)))


lib = load()


# --- C FILE* output captured into a Python string (for the writers that take a FILE *) ---------

_libc = ctypes.CDLL(None)
_libc.open_memstream.restype = c_void_p
_libc.open_memstream.argtypes = [POINTER(c_void_p), POINTER(c_size_t)]
_libc.fclose.restype = c_int
_libc.fclose.argtypes = [c_void_p]
_libc.free.restype = None
_libc.free.argtypes = [c_void_p]


def capture(write):
    """Runs write(FILE *) (a C writer) into memory and returns (its status, the text)."""
    buf, size = c_void_p(), c_size_t()
    f = _libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not f:
        raise MemoryError("open_memstream failed")
    rc = 0
    try:
        rc = write(f)
    finally:
        _libc.fclose(f)
        text = ctypes.string_at(buf, size.value).decode("utf-8", "replace") if buf else ""
        _libc.free(buf)
    return rc, text


def cstr(text, what):
    """`text` as bytes for a char * argument; NUL inside is refused."""
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if isinstance(text, str):
        text = text.encode()
    if not isinstance(text, bytes):
        raise TypeError("%s must be a string, not %s" % (what, type(text).__name__))
    if b"\0" in text:
        raise ValueError("%s contains a NUL character" % what)
    return text

