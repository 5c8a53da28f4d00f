"""Metrics for ``gpukit run``: gauges, counters and timings sent through the library's StatsD
client to the socket named by GK_METRICS_SOCKET.

Outside ``gpukit run`` (the variable unset) every call returns at once and sends nothing; the
library is asked once, at the first call. A metric the receiver's rules refuse (a bad name or
tag) is reported once per name as a warning and never raises, so a program behaves the same
under ``gpukit run`` and without it. Values that the receiver's queue cannot take within 20 ms
are dropped and counted by the library (:func:`dropped`). All functions are thread-safe.

    import gpukit.metrics as gm
    gm.gauge("train_loss", loss)
    gm.counter("samples_total", batch_size, phase="train")
    with gm.timer("train_step_time"):
        step()
"""
import errno
import threading
from typing import Any
import time
import warnings
from ctypes import byref, c_void_p

from ._lib import cstr, lib

_lock = threading.Lock()
_client = None     # the gk_statsd * (c_void_p) while active
_active = None     # None: not asked yet; False: sends do nothing; True: sending
_refused = set()   # names already warned about


def _open():
    global _client, _active
    with _lock:
        if _active is None:
            # The library's own series (pools, loaders, the batch finder, allocator figures) go
            # through its process publisher: let it follow the variable as this client does.
            lib.gk_metrics_publisher_refresh()
            c = c_void_p()
            rc = lib.gk_statsd_open(None, byref(c))
            if rc == 0 and lib.gk_statsd_active(c):
                _client, _active = c, True
            else:
                if rc == 0:
                    lib.gk_statsd_close(c)
                else:
                    warnings.warn("gpukit.metrics: cannot open the metrics socket: %s; metrics "
                                  "are off" % lib.last_error(), RuntimeWarning, stacklevel=3)
                _active = False
    return _active


def active() -> bool:
    """True when metrics go to ``gpukit run`` (GK_METRICS_SOCKET was set)."""
    return _open() if _active is None else _active


def _send(name, value, kind, tags):
    tag_text = ",".join("%s:%s" % kv for kv in tags.items()).encode() if tags else None
    with _lock:
        rc = lib.gk_statsd_client_send(_client, cstr(name, "metric name"), float(value), kind,
                                       tag_text)
        message = lib.last_error() if rc == -errno.EINVAL else ""
    if message and name not in _refused:
        _refused.add(name)
        warnings.warn("gpukit.metrics: %s was not sent: %s" % (name, message or "invalid"),
                      RuntimeWarning, stacklevel=3)


def gauge(name: str, value: float, **tags: Any) -> None:
    """Sets gauge `name` to `value` (the report keeps every value and summarizes them)."""
    if _active is False or (_active is None and not _open()):
        return
    _send(name, value, b"g", tags)


def counter(name: str, value: float = 1, **tags: Any) -> None:
    """Adds `value` to counter `name`."""
    if _active is False or (_active is None and not _open()):
        return
    _send(name, value, b"c", tags)


def timing(name: str, ms: float, **tags: Any) -> None:
    """Records a duration of `ms` milliseconds under `name`."""
    if _active is False or (_active is None and not _open()):
        return
    _send(name, ms, b"ms", tags)


class timer:
    """``with timer(name, **tags):`` times the block and sends it as a timing in milliseconds
    (also when the block raises). Outside ``gpukit run`` it does not even read the clock."""

    __slots__ = ("name", "tags", "t0")

    def __init__(self, name, **tags):
        self.name, self.tags, self.t0 = name, tags, None

    def __enter__(self):
        if _active is not False and (_active is not None or _open()):
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.t0 is not None:
            _send(self.name, (time.perf_counter() - self.t0) * 1e3, b"ms", self.tags)
        return False


def dropped():
    """Values the library could not deliver (the receiver's queue stayed full)."""
    if not active():
        return 0
    with _lock:
        return lib.gk_statsd_dropped(_client)


def _publish_alloc(device, name, figures):
    """Publishes an allocator's figures (a filled gk_alloc_figures) as a pool's series, labelled
    device=`device` and pool=`name`, through the library's registry and its publisher; used by
    gpukit.torch.report_memory and the memory manager."""
    if not active():
        return
    rc = lib.gk_alloc_figures_publish(None, device.encode(), name.encode(), byref(figures))
    if rc and "alloc" not in _refused:
        _refused.add("alloc")
        warnings.warn("gpukit.metrics: allocator figures not published: %s" % lib.last_error(),
                      RuntimeWarning, stacklevel=3)


def _reset_for_tests():
    """Forgets the client so the next call asks the environment again (tests only)."""
    global _client, _active
    with _lock:
        if _client is not None:
            lib.gk_statsd_close(_client)
        _client, _active = None, None
        _refused.clear()
        lib.gk_metrics_publisher_refresh()
