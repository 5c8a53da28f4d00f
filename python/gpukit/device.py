"""Devices and the caching pool: gpukit.Device and gpukit.Pool over gk_device and gk_pool."""
import ctypes
import errno
import json
import threading
from typing import Any, Optional, Union
from ctypes import byref, c_size_t, c_void_p

from . import _structs as S
from ._lib import capture, cstr, lib
from .errors import Error, check, error_from


class _Resource:
    """A C handle closed once its owner asked and every user released it.

    Python's garbage collector finalizes a reference cycle in any order, so a device could be
    closed before the pool or loader that still uses it. Users acquire the resource; ``close``
    then only marks it, and the last release closes it."""

    def __init__(self, handle, close_fn):
        self.handle, self._close_fn = handle, close_fn
        self._users, self._closing = 0, False
        self._lock = threading.Lock()

    def acquire(self):
        with self._lock:
            self._users += 1

    def release(self):
        with self._lock:
            self._users -= 1
        self._maybe_close()

    def close(self):
        with self._lock:
            self._closing = True
        self._maybe_close()

    def _maybe_close(self):
        with self._lock:
            h = self.handle if self._closing and self._users == 0 else None
            if h is not None:
                self.handle = None
        if h is not None:
            self._close_fn(h)


class _Closeable:
    """close() through ``with`` blocks and the garbage collector."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Device(_Closeable):
    """A gpukit device: ``"host"``, ``"sim[:key=value,...]"``, ``"cuda[:N]"`` or ``"auto"``.

    ``Device()`` opens what GK_DEVICE names, else ``auto`` (cuda:0 when a driver and a GPU
    answer, else host); the device settings of the environment (GK_LOG, GK_CUDA_LIBRARY,
    GK_SYNC_TIMEOUT) apply. The cuda backend works on the GPU's primary context, the one PyTorch
    uses, so pointers are valid on both sides. Close it with :meth:`close` or a ``with`` block
    (after every pool and loader on it).
    """

    def __init__(self, spec: Optional[str] = None):
        handle = c_void_p()
        rc = lib.gk_device_open(None if spec is None else cstr(spec, "device spec"),
                                byref(handle))
        check(rc)
        self._h = handle
        self._res = _Resource(handle, lib.gk_device_close)
        props = S.new(S.gk_device_props)
        check(lib.gk_device_get_props(self._h, byref(props), ctypes.sizeof(props)))
        self.backend = props.backend_name.decode()
        self.spec = props.spec.decode()
        self.name = props.name.decode()
        self.index = props.index
        self.total_memory = props.total_memory
        self._props = props

    @property
    def handle(self):
        """The gk_device * as a ctypes c_void_p (for other bindings)."""
        if not self._h:
            raise Error(-errno.EBADF, "gpukit.Device: the device is closed")
        return self._h

    def props(self):
        """gk_device_props as a dict (backend, spec, name, total_memory, compute capability,
        alloc_alignment, has_vm, ...)."""
        d = S.as_dict(self._props)
        for k in ("backend_name", "spec", "name"):
            d[k] = d[k].decode()
        return d

    @property
    def auto_reason(self):
        """Why ``auto`` chose this backend, or "" for a device not opened through auto."""
        return lib.gk_device_auto_reason(self.handle).decode()

    def mem_info(self):
        """(free, total) device memory in bytes, as the backend reports them now."""
        free, total = c_size_t(), c_size_t()
        check(lib.gk_device_mem_info(self.handle, byref(free), byref(total)))
        return free.value, total.value

    def copy_to_host(self, ptr, nbytes, stream=None):
        """The `nbytes` at device address `ptr` as bytes, copied on `stream` (a gk_stream *, None
        for the default stream) after the work queued there, then synchronized."""
        out = ctypes.create_string_buffer(nbytes)
        check(lib.gk_memcpy_dtoh_async(self.handle, out, ptr, nbytes, stream))
        check(lib.gk_stream_synchronize(self.handle, stream, -1.0))
        return out.raw

    def close(self):
        """Closes the device (idempotent). Pools and loaders still using it keep it open until
        they are closed or collected."""
        if getattr(self, "_h", None):
            self._h = None
            self._res.close()

    def __repr__(self):
        return "gpukit.Device(%r, name=%r)" % (self.spec, self.name)


def as_device(device):
    """(Device, owned) for a Device or a spec string."""
    if isinstance(device, Device):
        return device, False
    return Device(device), True


class Pool(_Closeable):
    """gpukit's caching device-memory pool on `device` (a Device or a spec).

    Settings start from `preset` ("default" or "pytorch"), then GK_POOL_CONF when `from_env`
    (as the gpukit tool does), then `settings` by their gk_pool_config_set keys with values as
    text or numbers (``Pool("sim:capacity=1GiB", limit="512MiB", max_split_size="64MiB")``).
    Under ``gpukit run`` the pool publishes its figures (gpukit_alloc_*) by itself.
    """

    def __init__(self, device: Union[str, "Device"], preset: str = "default",
                 from_env: bool = True, **settings: Any):
        self.device, self._owns_device = as_device(device)
        cfg = S.new(S.gk_pool_config)
        check(lib.gk_pool_config_preset(byref(cfg), cstr(preset, "pool preset"),
                                        ctypes.sizeof(cfg)))
        if from_env:
            check(lib.gk_pool_config_from_env(byref(cfg)))
        for key, value in settings.items():
            if isinstance(value, bool):
                value = int(value)
            check(lib.gk_pool_config_set(byref(cfg), cstr(key, "pool setting"),
                                         cstr(str(value), "pool setting value"), None, 0))
        handle = c_void_p()
        check(lib.gk_pool_create(self.device.handle, byref(cfg), byref(handle)))
        self._h = handle
        dev_res = self.device._res
        dev_res.acquire()

        def destroy(h):
            lib.gk_pool_destroy(h)
            dev_res.release()
        self._res = _Resource(handle, destroy)

    @property
    def handle(self):
        """The gk_pool * as a ctypes c_void_p."""
        if not self._h:
            raise Error(-errno.EBADF, "gpukit.Pool: the pool is closed")
        return self._h

    def malloc(self, nbytes: int, tag: Optional[str] = None) -> int:
        """Allocates `nbytes` (on the default stream) and returns the device address as an int.
        Raises gpukit.OutOfMemoryError (with the pool's report) when the device is full."""
        ptr = c_void_p()
        rc = lib.gk_pool_malloc_tagged(self.handle, nbytes, None,
                                       None if tag is None else cstr(tag, "tag"), byref(ptr))
        if rc:
            raise error_from(rc, self._h)
        return ptr.value

    def free(self, ptr):
        """Returns a block to the pool."""
        check(lib.gk_pool_free(self.handle, ptr))

    def empty_cache(self):
        """Gives every unsplit cached block back to the device."""
        check(lib.gk_pool_empty_cache(self.handle))

    def trim(self, target):
        """Gives cached memory back until at most `target` bytes are reserved; returns the bytes
        given back."""
        released = c_size_t()
        check(lib.gk_pool_trim(self.handle, target, byref(released)))
        return released.value

    @property
    def limit(self):
        """The effective cap on reserved bytes (0: none); settable."""
        return lib.gk_pool_get_limit(self.handle)

    @limit.setter
    def limit(self, nbytes):
        check(lib.gk_pool_set_limit(self.handle, nbytes))

    def reset_peak(self):
        """Sets every peak to its current value."""
        lib.gk_pool_reset_peak(self.handle)

    def memory_stats(self):
        """The statistics with PyTorch's flat keys ("allocated_bytes.all.current",
        "reserved_bytes.all.peak", "num_ooms", ...) plus gpukit's, as written by
        gk_pool_stats_json."""
        buf = ctypes.create_string_buffer(16384)  # room for any gk_pool_stats
        ctypes.memmove(buf, byref(c_size_t(len(buf))), ctypes.sizeof(c_size_t))
        check(lib.gk_pool_get_stats(self.handle, buf, len(buf)))
        rc, text = capture(lambda f: lib.gk_pool_stats_json(buf, f))
        check(rc)
        return json.loads(text)

    def summary(self):
        """A table laid out like PyTorch's memory_summary()."""
        rc, text = capture(lambda f: lib.gk_pool_summary(self.handle, f))
        check(rc)
        return text

    def snapshot(self):
        """The segments and blocks with PyTorch's snapshot field names (a dict)."""
        rc, text = capture(lambda f: lib.gk_pool_snapshot_json(self.handle, f))
        check(rc)
        return json.loads(text)

    def oom_report(self):
        """The text of the last out-of-memory report ("" when none)."""
        size = lib.gk_pool_oom_report(self.handle, None, 0)
        buf = ctypes.create_string_buffer(size + 1)
        lib.gk_pool_oom_report(self.handle, buf, size + 1)
        return buf.value.decode("utf-8", "replace")

    def close(self):
        """Destroys the pool (idempotent; loaders whose device slots come from it keep it until
        they are closed or collected), then the device if the pool opened it."""
        if getattr(self, "_h", None):
            self._h = None
            self._res.close()
        if getattr(self, "_owns_device", False):
            self.device.close()
            self._owns_device = False
