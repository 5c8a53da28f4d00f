/* Private interface of the cuda backend, shared by backend_cuda.c (loading, devices, memory,
 * streams, events, copies) and cuda_vm.c (virtual memory): the loaded driver functions, the
 * backend's state, error reporting and the per-call context switch. */
#ifndef GK_CUDA_INT_H
#define GK_CUDA_INT_H

#include "device/cuda_api.h"
#include "device/device_int.h"

#define GK__CUDA_ALLOC_ALIGN 256

/* The driver functions, resolved with dlsym; the VMM ones may be NULL. */
typedef struct gk__cuda_fns {
#define GK__CUDA_FN_FIELD(field, sym, params) CUresult(*field) params;
    CUDA_CORE_FUNCS(GK__CUDA_FN_FIELD)
    CUDA_VMM_FUNCS(GK__CUDA_FN_FIELD)
#undef GK__CUDA_FN_FIELD
} gk__cuda_fns;

/* A stream the backend created; all of them are listed so device_sync can poll each. */
typedef struct gk__cuda_stream {
    CUstream stream;
    int borrowed; /* made by gk_stream_wrap: the caller owns the CUstream */
    struct gk__cuda_stream *next, *prev;
} gk__cuda_stream;

/* dev->impl of a cuda device. Everything but `lock`'s fields is written only while opening. */
typedef struct gk__cuda_dev {
    void *lib;
    gk__cuda_fns fn;
    CUdevice device;
    int ordinal;
    CUcontext ctx;
    int ctx_retained;
    char name[128];
    size_t total_memory;
    int cc_major, cc_minor, multiprocessors, driver_version;
    int has_vm;
    size_t vm_granularity;
    pthread_mutex_t lock; /* streams, mapped, reserved; held only around non-blocking calls */
    gk__cuda_stream *streams;
    gk__ptrmap mapped;   /* granule address -> CUmemGenericAllocationHandle mapped there */
    gk__ptrmap reserved; /* reserved base -> bytes */
} gk__cuda_dev;

/* The gpukit code for a driver result: GK_EDEVOOM, GK_ENOTREADY, GK_EDEVLOST (sticky errors) or
 * GK_EDRIVER; 0 for CUDA_SUCCESS. */
int gk__cuda_map_result(CUresult r);

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory", from the driver's own tables. */
void gk__cuda_result_text(const gk__cuda_dev *c, CUresult r, char *buf, size_t len);

/* Records "<call>: <name>: <text>" as the device's last error and returns `rc`. */
int gk__cuda_fail(gk_device *dev, CUresult r, int rc, const char *call_fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#define FAIL(dev, r, ...) gk__cuda_fail((dev), (r), gk__cuda_map_result(r), __VA_ARGS__)

/* Makes the device's primary context current on the calling thread for one operation; the
 * thread's own context, if it had one, comes back in ctx_leave, which returns `rc`. */
int gk__cuda_ctx_enter(gk_device *dev, int *pushed);
int gk__cuda_ctx_leave(gk_device *dev, int pushed, int rc);

/* cuda_vm.c: turns has_vm on when the driver and the device support virtual memory; gives back
 * what is still mapped or reserved at close; the four backend operations. */
void gk__cuda_vm_detect(gk_device *dev, gk__cuda_dev *c);
void gk__cuda_vm_cleanup(gk_device *dev, gk__cuda_dev *c);
int gk__cuda_vm_reserve(gk_device *dev, size_t size, void **base);
int gk__cuda_vm_map(gk_device *dev, void *addr, size_t size);
int gk__cuda_vm_unmap(gk_device *dev, void *addr, size_t size);
int gk__cuda_vm_release(gk_device *dev, void *base, size_t size);

#endif
