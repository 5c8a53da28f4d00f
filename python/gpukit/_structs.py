"""ctypes mirrors of the C structs the package passes to libgpukit: the one place they are written.

Each mirror lists the C struct's fields in header order. Sized structs (gpukit/version.h) start
with ``size``; :func:`new` sets it to the mirror's ``ctypes.sizeof``, and the functions that fill a
struct are called with that size as their trailing argument, so the library fills (and reads) only
the fields the mirror has. A mirror may therefore lag behind its header: when the header gains a
field at the end, append it here when the package needs it (tests/test_structs.py compiles a
program that checks every mirrored field's offset and size against the header).
"""
import ctypes
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_long,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)

_u64 = c_uint64


def _sized(name, fields):
    """A sized struct: ``size`` first, then `fields`."""
    return type(name, (Structure,), {"_fields_": [("size", c_size_t)] + fields})


def new(cls):
    """A zeroed instance of the sized mirror `cls` whose size field is the mirror's size."""
    obj = cls()
    obj.size = ctypes.sizeof(cls)
    return obj


def as_dict(obj, skip=("size",)):
    """The fields of a filled struct as a dict (arrays become lists), in header order, for the
    fields the library filled (those within ``obj.size``)."""
    out = {}
    filled = getattr(obj, "size", ctypes.sizeof(obj))
    for name, _ in obj._fields_:
        if name in skip:
            continue
        desc = getattr(type(obj), name)
        if desc.offset + desc.size > filled:
            break
        value = getattr(obj, name)
        if isinstance(value, ctypes.Array):
            value = list(value)
        out[name] = value
    return out


# --- log.h ------------------------------------------------------------------------------------

class gk_logger(Structure):  # not sized: a frozen value type embedded in every config
    _fields_ = [("fn", c_void_p), ("user", c_void_p), ("level", c_int)]


# --- device.h ---------------------------------------------------------------------------------

gk_device_props = _sized("gk_device_props", [
    ("backend", c_int),
    ("backend_name", c_char_p),
    ("spec", c_char * 128),
    ("name", c_char * 128),
    ("index", c_int),
    ("total_memory", _u64),
    ("cc_major", c_int),
    ("cc_minor", c_int),
    ("multiprocessors", c_int),
    ("driver_version", c_int),
    ("alloc_alignment", c_size_t),
    ("vm_granularity", c_size_t),
    ("has_vm", c_int),
    ("pinned_is_real", c_int),
])

# --- pool.h -----------------------------------------------------------------------------------

gk_pool_config = _sized("gk_pool_config", [
    ("logger", gk_logger),
    ("round_bytes", c_size_t),
    ("divisions", c_uint),
    ("small_max", c_size_t),
    ("small_segment", c_size_t),
    ("large_segment", c_size_t),
    ("min_large_alloc", c_size_t),
    ("round_large", c_size_t),
    ("max_split_size", c_size_t),
    ("max_non_split_rounding", c_size_t),
    ("expandable_segments", c_int),
    ("page_size", c_size_t),
    ("limit_bytes", c_size_t),
    ("limit_fraction", c_double),
    ("gc_threshold", c_double),
    ("release_lock_on_device_alloc", c_int),
    ("history", c_size_t),
])

# --- loader.h ---------------------------------------------------------------------------------

GK_RECORDS_MAX_DIMS = 8

gk_records_info = _sized("gk_records_info", [
    ("version", c_uint32),
    ("record_size", _u64),
    ("record_count", _u64),
    ("data_offset", _u64),
    ("file_size", _u64),
    ("dtype", c_char * 17),
    ("ndim", c_uint32),
    ("shape", _u64 * GK_RECORDS_MAX_DIMS),
])

gk_records_options = _sized("gk_records_options", [
    ("access", c_int),
    ("random", c_int),
    ("readahead", c_int),
])

gk_tokens_info = _sized("gk_tokens_info", [
    ("magic", c_int32),
    ("version", c_int32),
    ("tokens", _u64),
    ("token_bytes", c_uint32),
    ("file_size", _u64),
])

gk_loader_config = _sized("gk_loader_config", [
    ("logger", gk_logger),
    ("batch_size", _u64),
    ("workers", c_int),
    ("depth", c_int),
    ("seed", _u64),
    ("epoch", _u64),
    ("epochs", _u64),
    ("shuffle", c_int),
    ("drop_last", c_int),
    ("shard_drop_last", c_int),
    ("rank", c_uint32),
    ("world", c_uint32),
    ("device", c_void_p),
    ("pool", c_void_p),
    ("timeout", c_double),
    ("on_error", c_int),
    ("max_skips", _u64),
    ("auto_release", c_int),
    ("split_bytes", c_size_t),
    ("readahead", c_int),
    ("metrics", c_void_p),
    ("name", c_char_p),
    ("test_drop_edges", c_uint),
])

gk_batch = _sized("gk_batch", [
    ("seq", _u64),
    ("epoch", _u64),
    ("index", _u64),
    ("count", c_size_t),
    ("item_size", c_size_t),
    ("bytes", c_size_t),
    ("host", c_void_p),
    ("device", c_void_p),
    ("indices", POINTER(_u64)),
    ("last_in_epoch", c_int),
    ("slot", c_int),
])

# The resumable position. Loader.state_dict() carries every field after `size` by name, so a field
# appended here travels in saved states with no other change.
gk_loader_state = _sized("gk_loader_state", [
    ("version", c_uint32),
    ("flags", c_uint32),
    ("seed", _u64),
    ("epoch", _u64),
    ("batch", _u64),
    ("count", _u64),
    ("batch_size", _u64),
    ("world", c_uint32),
    ("rank", c_uint32),
    ("position", _u64),
    ("epoch_start", _u64),
])

gk_loader_stats = _sized("gk_loader_stats", [
    ("items", _u64),
    ("bytes", _u64),
    ("batches", _u64),
    ("skips", _u64),
    ("wait_ns", _u64),
    ("wait_max_ns", _u64),
    ("wait_hist", _u64 * 32),
    ("fill_ns", _u64),
    ("fill_max_ns", _u64),
    ("copy_ns", _u64),
    ("copy_max_ns", _u64),
    ("worker_busy_ns", _u64),
    ("worker_idle_ns", _u64),
    ("occupancy_sum", _u64),
    ("ring_ready", c_uint32),
    ("depth", c_uint32),
    ("first_batch_ns", _u64),
    ("uptime_ns", _u64),
    ("workers", c_uint32),
    ("cpus", c_uint32),
    ("spin", c_uint32),
])

# --- batch.h ----------------------------------------------------------------------------------

GK_BATCH_MAX_LOG = 64

gk_batch_config = _sized("gk_batch_config", [
    ("mode", c_int),
    ("init", c_long),
    ("b1", c_long),
    ("b2", c_long),
    ("margin", c_double),
    ("max_batch", c_long),
    ("multiple", c_long),
    ("max_trials", c_int),
    ("decay", c_double),
    ("budget", _u64),
    ("pool", c_void_p),
])

gk_batch_result = _sized("gk_batch_result", [
    ("batch", c_long),
    ("trials", c_int),
    ("ooms", c_int),
    ("fit_a", c_double),
    ("fit_k", c_double),
    ("predicted", c_long),
    ("tried", c_long * GK_BATCH_MAX_LOG),
    ("tried_ok", c_int * GK_BATCH_MAX_LOG),
    ("tried_peak", _u64 * GK_BATCH_MAX_LOG),
    ("budget", c_double),
])

# int (*)(void *user, long batch, uint64_t *peak_bytes)
gk_batch_trial_fn = ctypes.CFUNCTYPE(c_int, c_void_p, c_long, POINTER(_u64))

# --- pressure.h -------------------------------------------------------------------------------

gk_pressure_config = _sized("gk_pressure_config", [
    ("gc_high", c_double),
    ("free_low", c_double),
    ("trim_margin", _u64),
    ("shrink_high", c_double),
    ("hysteresis", c_int),
    ("fit_a", c_double),
    ("fit_k", c_double),
    ("batch", c_long),
    ("margin", c_double),
    ("on_shrink", c_void_p),
    ("user", c_void_p),
])

gk_pressure_advice = _sized("gk_pressure_advice", [
    ("suggested_batch", c_long),
    ("checkpointing", c_int),
    ("device_free", _u64),
    ("device_total", _u64),
    ("reserved", _u64),
    ("allocated", _u64),
    ("peak_allocated", _u64),
    ("budget", _u64),
    ("collect_target", _u64),
    ("trim_target", _u64),
])

gk_pressure_figures = _sized("gk_pressure_figures", [
    ("device_free", _u64),
    ("device_total", _u64),
    ("reserved", _u64),
    ("allocated", _u64),
    ("peak_allocated", _u64),
    ("limit", _u64),
])

# --- run.h ------------------------------------------------------------------------------------

gk_alloc_figures = _sized("gk_alloc_figures", [
    ("in_use_bytes", c_double),
    ("reserved_bytes", c_double),
    ("active_bytes", c_double),
    ("ooms", c_double),
    ("retries", c_double),
    ("device_mallocs", c_double),
])

#: Every mirror, for the layout test.
MIRRORS = [gk_logger, gk_device_props, gk_pool_config, gk_records_info, gk_records_options,
           gk_tokens_info, gk_loader_config, gk_batch, gk_loader_state, gk_loader_stats,
           gk_batch_config, gk_batch_result, gk_pressure_config, gk_pressure_advice,
           gk_pressure_figures, gk_alloc_figures]
