/* The allocator shim: gpukit's pool as PyTorch's (and CuPy's) CUDA allocator.
 *
 * These functions live in their own library, libgpukit_torch.so, built and installed beside
 * libgpukit. It carries its own copy of the library (nothing else is exported), so PyTorch can
 * load it by path with no other gpukit library on the search path; this header is not part of
 * gpukit.h. Python reaches it through gpukit.torch.use_gpukit_allocator() and gpukit.cupy.
 *
 * PyTorch loads two entry points by name (torch.cuda.memory.CUDAPluggableAllocator(path,
 * "gk_torch_malloc_raise", "gk_torch_free")): gk_torch_malloc_raise(size, device, stream) and
 * gk_torch_free(ptr, size, device, stream). gk_torch_malloc is the same allocation for C callers
 * (CuPy's path, ctypes, tests): it returns NULL where gk_torch_malloc_raise throws.
 * Behind them there is one gpukit pool per CUDA device,
 * created by the first call that needs it on the `cuda` backend (device "cuda:N", which works in
 * the device's primary context, the one PyTorch uses, so pointers are valid on both sides). The
 * stream PyTorch passes is the stream the block is allocated for: a CUstream is wrapped once per
 * device with gk_stream_wrap (never owned, never destroyed), 0 is the default stream, so a freed
 * block is reused at once by its own stream and by another only after gk_torch_record_stream's
 * events, exactly as for gk_pool_malloc.
 *
 * Settings of a pool: gk_pool_config_preset(preset), then gk_pool_config_from_env (GK_LOG and
 * GK_POOL_CONF), then the `conf` text of gk_torch_configure, each on top of the one before; the
 * device is opened with gk_device_config_from_env (GK_CUDA_LIBRARY, GK_SYNC_TIMEOUT, GK_LOG).
 * GK_DEVICE is not read: device N is always cuda:N.
 *
 * Every function is thread-safe; `device` is a CUDA ordinal in [0, GK_TORCH_MAX_DEVICES). The
 * functions that return int return 0 or a negative code with the message in
 * gk_torch_last_error(). */
#ifndef GPUKIT_TORCH_H
#define GPUKIT_TORCH_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "pool.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Devices the shim serves (CUDA ordinals 0 .. GK_TORCH_MAX_DEVICES-1). */
#define GK_TORCH_MAX_DEVICES 64

/* --- PyTorch's entry points ----------------------------------------------------------------- */

/* Allocates `size` bytes on CUDA device `device` for use on `stream` (a cudaStream_t / CUstream;
 * NULL: the default stream) from that device's pool, creating it first when needed. Returns the
 * pointer, or NULL: for size 0 (nothing is recorded, as PyTorch's own allocator does), and when the
 * allocation fails. A failure keeps its text for gk_torch_last_report (the pool's out-of-memory
 * report, or why the device or pool could not be made or the arguments are wrong) and logs it at
 * error level. PyTorch's pluggable path does not check the pointer it gets, which is why PyTorch is
 * given gk_torch_malloc_raise. */
GK_API void *gk_torch_malloc(ssize_t size, int device, void *stream);

/* gk_torch_malloc for PyTorch: where gk_torch_malloc would return NULL for size > 0, it throws a
 * C++ std::runtime_error instead (nothing is logged: the exception carries the text), whose
 * message starts "CUDA out of memory. " for the pool's out-of-memory report (as PyTorch's own
 * message does, so code that looks for it still works) or "CUDA allocation failed. " for any other
 * failure, followed by the text gk_torch_last_report keeps. PyTorch's Python bindings raise it as
 * a RuntimeError where the tensor was allocated. Only a C++ caller that catches exceptions may
 * call it: from C or ctypes an exception ends the process. */
GK_API void *gk_torch_malloc_raise(ssize_t size, int device, void *stream);

/* Returns `ptr` to the pool of `device`. `size` and `stream` are PyTorch's record of the
 * allocation and are not needed (the pool knows the block's stream). NULL is a no-op. A pointer
 * the pool did not hand out is counted by the pool (num_invalid_free) and logged. */
GK_API void gk_torch_free(void *ptr, ssize_t size, int device, void *stream);

/* --- settings and the side API ------------------------------------------------------------- */

/* Chooses the settings of the pools created from now on: a preset ("default" or "pytorch"; NULL
 * means "default") and `conf`, "key=value,..." with gk_pool_config_set's keys (NULL or ""
 * means none), applied after GK_POOL_CONF. Both are checked at once against a full config (the
 * message names the key, the value and the fix). Returns 0, -EINVAL, or -EBUSY when a pool
 * already exists (settings cannot change under live memory: call it before the first allocation).
 */
GK_API int gk_torch_configure(const char *preset, const char *conf);

/* The statistics of `device`'s pool (gk_pool_get_stats), creating the pool when it has none yet,
 * so a device never used reads as zeros. Returns 0, -EINVAL (bad device or out) or the error that
 * stopped the pool's creation. */
GK_API int gk_torch_get_stats(int device, gk_pool_stats *out, size_t size);
#define gk_torch_get_stats(device, out) (gk_torch_get_stats)((device), (out), sizeof *(out))

/* The same statistics as one JSON object with PyTorch's flat keys (gk_pool_stats_json), the
 * memory_summary() table (gk_pool_summary) and the snapshot with PyTorch's field names
 * (gk_pool_snapshot_json), written to `out`. Each creates the pool when needed. Returns 0,
 * -EINVAL, -EIO or the creation's error. */
GK_API int gk_torch_stats_json(int device, FILE *out);
GK_API int gk_torch_summary(int device, FILE *out);
GK_API int gk_torch_snapshot_json(int device, FILE *out);

/* gk_pool_reset_peak, gk_pool_reset_accumulated and gk_pool_empty_cache on `device`'s pool. A
 * device without a pool has nothing to reset or give back: 0. Returns 0, -EINVAL for a bad device,
 * or the first device error of empty_cache. */
GK_API int gk_torch_reset_peak(int device);
GK_API int gk_torch_reset_accumulated(int device);
GK_API int gk_torch_empty_cache(int device);

/* Marks `stream` (a CUstream; NULL: the default stream) as a user of the live block `ptr` of
 * `device`'s pool (gk_pool_record_stream): the block returns to the cache only once the work
 * queued on `stream` before the block is freed has completed. Returns 0, or -EINVAL for a bad
 * device or a pointer the pool did not hand out (the start of a block: a tensor's
 * untyped_storage().data_ptr(), not a view's data_ptr()). */
GK_API int gk_torch_record_stream(void *ptr, int device, void *stream);

/* Free and total memory of `device` as its backend reports them now (gk_device_mem_info), creating
 * its pool when needed. Returns 0, -EINVAL or the device's error. */
GK_API int gk_torch_mem_info(int device, size_t *free_bytes, size_t *total_bytes);

/* The text kept by the last gk_torch_malloc that failed, on any device and thread: the pool's
 * out-of-memory report, or the error that stopped the allocation. Copies it into buf (truncated to
 * len, NUL-terminated when len > 0), stores the failure's status in *code when code is not NULL
 * (GK_EDEVOOM for the pool's report, else the error's code) and returns the text's full length;
 * 0, "" and code 0 when no allocation has failed since the process started or since
 * gk_torch_shutdown. */
GK_API size_t gk_torch_last_report(char *buf, size_t len, int *code);

/* The message of this thread's last failing gk_torch_* call (libgpukit's gk_last_error() for the
 * shim's copy of the library). */
GK_API const char *gk_torch_last_error(void);

/* Destroys every pool (live blocks are logged as leaks and freed with their segments) and closes
 * the devices, then forgets the settings, the test switch and the last report: the shim is as
 * loaded. Only for a program that has stopped using the memory (tests, the end of a run); not
 * thread-safe against the other calls. The native streams wrapped must still exist. Returns 0. */
GK_API int gk_torch_shutdown(void);

/* --- test-only switch ------------------------------------------------------------------------ */

/* For tests without a GPU: from now on device N is a `sim` device opened with `spec` (a "sim..."
 * device spec; each ordinal gets its own), and the `stream` arguments of the calls above are
 * gk_stream handles made by gk_torch_test_stream_create (NULL: the default stream) instead of
 * CUstreams. NULL switches back to cuda. Returns 0, -EINVAL for a spec that is not sim's, or
 * -EBUSY when a pool already exists (call gk_torch_shutdown first). */
GK_API int gk_torch_test_use_sim(const char *spec);

/* Creates (destroys) a stream on the sim device serving `device`, creating its pool when needed.
 * Destroying it hands its cached blocks back to the pool (the pool's stream hook). Returns 0,
 * -EINVAL, GK_EUNAVAIL when the test switch is off, or the device's error. */
GK_API int gk_torch_test_stream_create(int device, void **stream);
GK_API int gk_torch_test_stream_destroy(int device, void *stream);

#ifdef __cplusplus
}
#endif
#endif
