/* The device layer: one small API over three backends.
 *
 *   host   plain host memory; streams and events are always complete; copies are memcpy.
 *   sim    a simulated GPU: a set capacity, a first-fit address space (optionally backed by host
 *          memory so copies move real bytes), a latency model, lazily executed streams with
 *          deterministic events, and fault injection. Used by the tests and benchmarks.
 *   cuda   the CUDA driver API, loaded at run time with dlopen("libcuda.so.1") (GK_CUDA_LIBRARY
 *          overrides), on the device's primary context so pointers interoperate with programs
 *          that use the CUDA runtime.
 *
 * Device specs (the same strings for the API, GK_DEVICE and --device):
 *   auto                  cuda:0 when a driver and a GPU answer, else host (the reason is kept)
 *   host                  the host backend
 *   cuda | cuda:N         GPU N through the driver API
 *   sim[:key=value,...]   keys: capacity, alignment, granularity, backed, va_size,
 *                         alloc_latency_us, free_latency_us, latency_us (both), clock
 *                         (real|virtual), event_polls, fail_alloc_nth, fail_prob, seed,
 *                         fail_above, fail_after_bytes, fail_event_query_nth, name.
 *                         See docs/devices.md.
 *
 * Device pointers are void * values in the device's address space. On sim without `backed=1` they
 * must not be dereferenced. All functions are thread-safe unless stated otherwise; a stream or
 * event must not be destroyed while another thread uses it. */
#ifndef GPUKIT_DEVICE_H
#define GPUKIT_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "log.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_device gk_device;
typedef struct gk_stream gk_stream; /* NULL means the device's default stream */
typedef struct gk_event gk_event;

typedef enum gk_backend_kind {
    GK_BACKEND_HOST = 0,
    GK_BACKEND_SIM = 1,
    GK_BACKEND_CUDA = 2
} gk_backend_kind;

typedef struct gk_device_config {
    size_t size;              /* sizeof(gk_device_config) (set by gk_device_config_default) */
    gk_logger logger;         /* where the device logs; default: gk_logger_default() */
    const char *cuda_library; /* the CUDA driver to dlopen; NULL: "libcuda.so.1" (copied) */
    double sync_timeout;      /* seconds a blocking wait lasts when given timeout < 0 (60) */
} gk_device_config;

/* Fills `cfg` with the defaults above. Reads no environment variable. */
GK_API void gk_device_config_default(gk_device_config *cfg, size_t size);
#define gk_device_config_default(cfg) (gk_device_config_default)((cfg), sizeof *(cfg))

/* Applies the environment to `cfg`: GK_LOG (the logger's level), GK_CUDA_LIBRARY (cuda_library,
 * pointing into the environment) and GK_SYNC_TIMEOUT. Returns 0, or -EINVAL on the first bad
 * value, with a message naming the variable, the value and the fix; the fields before it keep
 * their new values. */
GK_API int gk_device_config_from_env(gk_device_config *cfg);

/* Opens the device named by `spec`. On success stores a handle in *out and returns 0. On failure
 * *out is NULL and the return is -EINVAL (bad spec; the message names the key or value and the
 * fix), GK_ENOGPU (no driver or no such GPU), GK_EDRIVER, or -ENOMEM, with the message in
 * gk_last_error(). The caller closes the handle with gk_device_close(). `cfg` is copied.
 *
 * gk_device_open is the environment's form: it opens `spec` (NULL or "" means GK_DEVICE, else
 * "auto") with gk_device_config_default() + gk_device_config_from_env(). gk_device_open_ex with a
 * config reads no environment variable (spec NULL or "" means "auto"); with cfg NULL it is
 * gk_device_open. */
GK_API int gk_device_open(const char *spec, gk_device **out);
GK_API int gk_device_open_ex(const char *spec, const gk_device_config *cfg, gk_device **out);

/* Deprecated alias of gk_last_error(), kept for one release. */
GK_API const char *gk_device_open_error(void) GK_DEPRECATED("use gk_last_error()");

/* Closes the device: destroys streams and events still open, frees device and pinned memory still
 * allocated (and logs how much at warn level). NULL is a no-op. */
GK_API void gk_device_close(gk_device *dev);

/* Deprecated alias of gk_last_error() (the message of this thread's last failing call, whatever
 * its handle), kept for one release. */
GK_API const char *gk_device_last_error(const gk_device *dev) GK_DEPRECATED("use gk_last_error()");

/* Why `auto` chose this backend ("cuda:0 unavailable: libcuda.so.1 not found; using host"), or ""
 * for a device not opened through auto. */
GK_API const char *gk_device_auto_reason(const gk_device *dev);

typedef struct gk_device_props {
    size_t size; /* bytes filled (see gpukit/version.h) */
    gk_backend_kind backend;
    const char *backend_name; /* "host", "sim", "cuda" */
    char spec[128];           /* canonical spec, "cuda:0", "sim:capacity=16GiB,..." */
    char name[128];           /* "NVIDIA H100 80GB HBM3", "gpukit sim", host CPU model */
    int index;                /* device ordinal (0 for host and sim) */
    uint64_t total_memory;    /* bytes */
    int cc_major, cc_minor;   /* compute capability; 0 when not a GPU */
    int multiprocessors;      /* 0 when unknown */
    int driver_version;       /* CUDA driver version as 1000*major + 10*minor; 0 when none */
    size_t alloc_alignment;   /* alignment of gk_device_malloc results */
    size_t vm_granularity;    /* physical mapping granularity; 0 when no virtual memory API */
    int has_vm;               /* reserve/map/unmap are available */
    int pinned_is_real;       /* pinned host memory is page-locked by a driver */
} gk_device_props;

/* Fills `props`. Returns 0 or -EINVAL. */
GK_API int gk_device_get_props(gk_device *dev, gk_device_props *props, size_t size);
#define gk_device_get_props(dev, props) (gk_device_get_props)((dev), (props), sizeof *(props))

/* Free and total device memory in bytes, as the backend reports them now. */
GK_API int gk_device_mem_info(gk_device *dev, size_t *free_bytes, size_t *total_bytes);

/* Device memory. malloc returns GK_EDEVOOM when the device is full (nothing is logged: the caller,
 * typically the pool, decides), -EINVAL for size 0. free of NULL is a no-op returning 0; free of a
 * pointer the backend does not know returns -EINVAL. */
GK_API int gk_device_malloc(gk_device *dev, size_t size, void **ptr);
GK_API int gk_device_free(gk_device *dev, void *ptr);

/* Page-locked host memory (plain host memory on host and sim). Same rules as malloc/free;
 * failures return -ENOMEM. */
GK_API int gk_device_host_alloc(gk_device *dev, size_t size, void **ptr);
GK_API int gk_device_host_free(gk_device *dev, void *ptr);

/* Streams: ordered queues of work. create makes a non-blocking stream. destroy waits up to the
 * sync timeout for the stream's work, runs the stream-destroy hooks, then frees it; NULL is a
 * no-op. */
GK_API int gk_stream_create(gk_device *dev, gk_stream **out);
GK_API int gk_stream_destroy(gk_device *dev, gk_stream *stream);

/* A handle over a stream that someone else created and owns: on cuda, a CUstream (for example
 * PyTorch's current stream, torch.cuda.current_stream().cuda_stream), so gpukit's ordering
 * (gk_loader_next's wait, gk_event_record, gk_pool_malloc's stream-aware reuse,
 * gk_pool_record_stream) can be given the stream the caller's work runs on. gk_stream_destroy releases the handle only (after waiting for the
 * stream's work, as for any stream) and never destroys the native stream, which must outlive the
 * handle. Returns 0; -EINVAL for a NULL native stream (a NULL gk_stream already means the
 * device's default stream); GK_EUNAVAIL on host and sim, whose streams are gpukit's own; or
 * -ENOMEM. Message in gk_last_error().
 * Each call makes a new handle, and the pool keeps its cache per handle: wrap a native stream once
 * and keep the handle (gpukit's allocator shim, gpukit/torch.h, keeps one per CUstream and
 * device). A handle may be used from any thread, like any gk_stream. */
GK_API int gk_stream_wrap(gk_device *dev, void *native, gk_stream **out);

/* Waits until all work queued on `stream` is done. timeout in seconds; < 0 uses the device's
 * sync timeout. Returns 0, -ETIMEDOUT or a driver error. */
GK_API int gk_stream_synchronize(gk_device *dev, gk_stream *stream, double timeout);

/* Work queued on `stream` after this call waits until `event` has completed. */
GK_API int gk_stream_wait_event(gk_device *dev, gk_stream *stream, gk_event *event);

/* Queues fn(user) on `stream`; it runs after the work queued before it. fn must not call gpukit
 * device functions. On host it runs at once. */
GK_API int gk_stream_host_fn(gk_device *dev, gk_stream *stream, void (*fn)(void *user), void *user);

/* Waits for all work on every stream of the device (same timeout rules). */
GK_API int gk_device_synchronize(gk_device *dev, double timeout);

/* Called with the stream just before it is destroyed; the pool uses it to hand back the
 * stream's cache. Returns 0, -ENOMEM, or -ENOSPC past 16 hooks. remove returns -ENOENT when the
 * pair is not registered. */
typedef void (*gk_stream_hook_fn)(void *user, gk_stream *stream);
GK_API int gk_device_add_stream_hook(gk_device *dev, gk_stream_hook_fn fn, void *user);
GK_API int gk_device_remove_stream_hook(gk_device *dev, gk_stream_hook_fn fn, void *user);

/* Events: markers in a stream. record captures the work queued so far on `stream`; query returns
 * 0 when that work is done and GK_ENOTREADY when not (an event never recorded is done);
 * synchronize waits with the timeout rules above. */
GK_API int gk_event_create(gk_device *dev, gk_event **out);
GK_API int gk_event_destroy(gk_device *dev, gk_event *event);
GK_API int gk_event_record(gk_device *dev, gk_event *event, gk_stream *stream);
GK_API int gk_event_query(gk_device *dev, gk_event *event);
GK_API int gk_event_synchronize(gk_device *dev, gk_event *event, double timeout);

/* Asynchronous copies ordered on `stream`. The source must not change, and the destination must
 * not be read, until the copy has completed (record an event after it). */
GK_API int gk_memcpy_htod_async(gk_device *dev, void *dst, const void *src, size_t size,
                                gk_stream *stream);
GK_API int gk_memcpy_dtoh_async(gk_device *dev, void *dst, const void *src, size_t size,
                                gk_stream *stream);
GK_API int gk_memcpy_dtod_async(gk_device *dev, void *dst, const void *src, size_t size,
                                gk_stream *stream);

/* Virtual memory (has_vm in the props): reserve a range of address space, map physical memory
 * into granularity-aligned pieces of it, unmap them, release the range. Sizes and addresses must
 * be multiples of vm_granularity. map returns GK_EDEVOOM when no physical memory is left; the
 * others return GK_EUNAVAIL on a backend without the API. */
GK_API int gk_device_vm_reserve(gk_device *dev, size_t size, void **base);
GK_API int gk_device_vm_map(gk_device *dev, void *addr, size_t size);
GK_API int gk_device_vm_unmap(gk_device *dev, void *addr, size_t size);
GK_API int gk_device_vm_release(gk_device *dev, void *base, size_t size);

/* Per-device call counters: XX(name, description). */
#define GK_DEVICE_COUNTER_MAP(XX)                                                                  \
    XX(malloc_calls, "device allocations")                                                         \
    XX(free_calls, "device frees")                                                                 \
    XX(malloc_bytes, "bytes allocated on the device")                                              \
    XX(host_alloc_calls, "pinned host allocations")                                                \
    XX(host_free_calls, "pinned host frees")                                                       \
    XX(stream_creates, "streams created")                                                          \
    XX(stream_destroys, "streams destroyed")                                                       \
    XX(stream_syncs, "stream and device synchronizations")                                         \
    XX(stream_waits, "stream-waits-event calls")                                                   \
    XX(host_fns, "host functions queued")                                                          \
    XX(event_creates, "events created")                                                            \
    XX(event_destroys, "events destroyed")                                                         \
    XX(event_records, "event records")                                                             \
    XX(event_queries, "event queries")                                                             \
    XX(event_syncs, "event synchronizations")                                                      \
    XX(copies_htod, "host-to-device copies")                                                       \
    XX(copies_dtoh, "device-to-host copies")                                                       \
    XX(copies_dtod, "device-to-device copies")                                                     \
    XX(copy_bytes, "bytes copied")                                                                 \
    XX(vm_reserves, "address ranges reserved")                                                     \
    XX(vm_maps, "physical chunks mapped")                                                          \
    XX(vm_unmaps, "physical chunks unmapped")                                                      \
    XX(vm_releases, "address ranges released")                                                     \
    XX(errors, "calls that failed")                                                                \
    XX(alloc_ns, "nanoseconds spent in allocation, free, map and unmap calls")

typedef struct gk_device_counters {
    size_t size; /* bytes filled (see gpukit/version.h) */
#define GK__COUNTER_FIELD(name, desc) uint64_t name;
    GK_DEVICE_COUNTER_MAP(GK__COUNTER_FIELD)
#undef GK__COUNTER_FIELD
} gk_device_counters;

/* A snapshot of the device's counters (each read atomically). Returns 0 or -EINVAL. */
GK_API int gk_device_get_counters(gk_device *dev, gk_device_counters *out, size_t size);
#define gk_device_get_counters(dev, out) (gk_device_get_counters)((dev), (out), sizeof *(out))

/* --- sim only ----------------------------------------------------------------------------- */

/* Changes the sim's fault settings at run time with the spec's fault keys (fail_alloc_nth,
 * fail_prob, seed, fail_above, fail_after_bytes, fail_event_query_nth); "" clears them all.
 * Counting for *_nth restarts from this call. Returns -EINVAL (message in gk_last_error()) or
 * GK_EUNAVAIL on another backend. */
GK_API int gk_device_sim_set_faults(gk_device *dev, const char *faults);

/* The sim's virtual clock in nanoseconds (advanced by the latency model when clock=virtual);
 * 0 on other backends. */
GK_API uint64_t gk_device_sim_clock_ns(gk_device *dev);

/* Bytes of sim capacity in use (allocations and mapped chunks). 0 on other backends. */
GK_API size_t gk_device_sim_used(gk_device *dev);

#ifdef __cplusplus
}
#endif
#endif
