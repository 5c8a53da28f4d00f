"""gpukit's exceptions: every failing C call becomes a gpukit.Error carrying the status code, its
name and the library's one-line message (gk_last_error(), read on the same thread right after the
failing call)."""
from ._lib import lib

GK_EDEVOOM = -4006
GK_EMISMATCH = -4007
GK_LOADER_END = -4011


class Error(RuntimeError):
    """A gpukit call failed.

    Attributes:
        code: the status the C function returned (a negative errno or a gpukit code <= -4000).
        name: its symbolic name ("GK_EDEVOOM", "EINVAL", ...).
        message: the library's message, which names the thing, the value and the fix.
    """

    def __init__(self, code, message):
        self.code = code
        self.name = lib.err_name(code)
        self.message = message
        super().__init__("%s (%s)" % (message, self.name) if message else self.name)


class OutOfMemoryError(Error):
    """Device memory ran out (GK_EDEVOOM).

    Attributes:
        report: the pool's out-of-memory report (gk_pool_oom_report: the request, the device's
            free and total memory, allocated, reserved and cached bytes, the largest free block,
            the largest live blocks and a hint), or "" when no pool was involved.
    """

    def __init__(self, code, message, report=""):
        super().__init__(code, message)
        self.report = report

    def __str__(self):
        base = super().__str__()
        return base + "\n" + self.report if self.report else base


def error_from(rc, pool=None):
    """The exception for status `rc`. Must be called right after the failing call, before any
    other gpukit call on this thread, so the message is that call's."""
    message = lib.last_error()
    if rc == GK_EDEVOOM:
        report = ""
        if pool:
            size = lib.gk_pool_oom_report(pool, None, 0)
            if size:
                import ctypes
                buf = ctypes.create_string_buffer(size + 1)
                lib.gk_pool_oom_report(pool, buf, size + 1)
                report = buf.value.decode("utf-8", "replace")
        return OutOfMemoryError(rc, message, report)
    return Error(rc, message)


def check(rc, pool=None):
    """Raises the exception for a negative `rc` (see error_from); returns rc otherwise."""
    if rc < 0:
        raise error_from(rc, pool)
    return rc
