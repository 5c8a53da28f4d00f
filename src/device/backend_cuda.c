/* The cuda backend: the CUDA driver API loaded at run time with dlopen (no CUDA headers or
 * libraries at build time), working on the device's primary context so that pointers and streams
 * interoperate with programs that use the CUDA runtime. Every wait polls a query function, so
 * each one honours its timeout. Virtual memory (reserve/map/unmap/release) is offered when the
 * driver exports the API and the device supports it. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda_api.h"
#include "device/device_int.h"

#define CUDA_ALLOC_ALIGN 256

typedef struct cuda_fns {
#define CUDA_FN_FIELD(field, sym, params) CUresult(*field) params;
    CUDA_CORE_FUNCS(CUDA_FN_FIELD)
    CUDA_VMM_FUNCS(CUDA_FN_FIELD)
#undef CUDA_FN_FIELD
} cuda_fns;

/* A stream the backend created; all of them are listed so device_sync can poll each. */
typedef struct cuda_stream {
    CUstream stream;
    struct cuda_stream *next, *prev;
} cuda_stream;

typedef struct cuda_dev {
    void *lib;
    cuda_fns fn;
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
    cuda_stream *streams;
    gk__ptrmap mapped_size;   /* mapped address -> bytes mapped there */
    gk__ptrmap mapped_handle; /* mapped address -> CUmemGenericAllocationHandle */
    gk__ptrmap reserved;      /* reserved base -> bytes */
} cuda_dev;

/* --- errors ------------------------------------------------------------------------------- */

/* Errors after which the context is unusable: the process must start over to use the GPU. */
static int is_sticky(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_NVLINK_UNCORRECTABLE:
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_CONTEXT_IS_DESTROYED:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_DEINITIALIZED:
        return 1;
    default:
        return 0;
    }
}

static int map_result(CUresult r)
{
    if (r == CUDA_SUCCESS)
        return 0;
    if (r == CUDA_ERROR_OUT_OF_MEMORY)
        return GK_EDEVOOM;
    if (r == CUDA_ERROR_NOT_READY)
        return GK_ENOTREADY;
    if (is_sticky(r))
        return GK_EDEVLOST;
    return GK_EDRIVER;
}

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory", from the driver's own tables. */
static void result_text(const cuda_dev *c, CUresult r, char *buf, size_t len)
{
    const char *name = NULL, *text = NULL;
    if (c->fn.error_name && c->fn.error_name(r, &name) != CUDA_SUCCESS)
        name = NULL;
    if (c->fn.error_string && c->fn.error_string(r, &text) != CUDA_SUCCESS)
        text = NULL;
    if (name && text)
        snprintf(buf, len, "%s: %s", name, text);
    else if (name)
        snprintf(buf, len, "%s", name);
    else
        snprintf(buf, len, "CUDA error %d", r);
}

/* Records "<call>: <name>: <text>" as the device's last error; returns `rc`. */
static int fail_rc(gk_device *dev, CUresult r, int rc, const char *call_fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int fail_rc(gk_device *dev, CUresult r, int rc, const char *call_fmt, ...)
{
    char call[160], text[256];
    va_list ap;
    va_start(ap, call_fmt);
    vsnprintf(call, sizeof call, call_fmt, ap);
    va_end(ap);
    result_text(dev->impl, r, text, sizeof text);
    return gk__device_error(dev, rc, "%s: %s", call, text);
}

#define FAIL(dev, r, ...) fail_rc((dev), (r), map_result(r), __VA_ARGS__)

/* --- context ------------------------------------------------------------------------------ */

/* Makes the primary context current on this thread. A thread without a context keeps ours
 * afterwards (as the CUDA runtime does); a thread with another context gets it back in
 * ctx_leave. */
static int ctx_enter(gk_device *dev, int *pushed)
{
    cuda_dev *c = dev->impl;
    CUcontext cur = NULL;
    *pushed = 0;
    CUresult r = c->fn.ctx_get_current(&cur);
    if (r != CUDA_SUCCESS)
        return FAIL(dev, r, "cuCtxGetCurrent");
    if (cur == c->ctx)
        return 0;
    if (cur == NULL) {
        r = c->fn.ctx_set_current(c->ctx);
        if (r != CUDA_SUCCESS)
            return FAIL(dev, r, "cuCtxSetCurrent(cuda:%d primary context)", c->ordinal);
        return 0;
    }
    r = c->fn.ctx_push(c->ctx);
    if (r != CUDA_SUCCESS)
        return FAIL(dev, r, "cuCtxPushCurrent_v2(cuda:%d primary context)", c->ordinal);
    *pushed = 1;
    return 0;
}

/* Undoes ctx_enter and returns `rc`, the operation's result: the operation has happened (memory
 * may be allocated), so a failing pop is recorded and logged but does not turn it into a
 * failure. */
static int ctx_leave(gk_device *dev, int pushed, int rc)
{
    cuda_dev *c = dev->impl;
    if (!pushed)
        return rc;
    CUcontext popped = NULL;
    CUresult r = c->fn.ctx_pop(&popped);
    if (r != CUDA_SUCCESS) {
        (void)FAIL(dev, r, "cuCtxPopCurrent_v2");
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "%s: cannot restore the calling thread's CUDA context: %s", dev->spec,
               gk_device_last_error(dev));
    }
    return rc;
}

/* --- open and close ----------------------------------------------------------------------- */

/* Resolves the symbols. Returns 0, or GK_ENOGPU naming the first missing required one. */
static int load_symbols(gk_device *dev, cuda_dev *c)
{
    struct {
        const char *sym;
        void **slot;
        int required;
    } table[] = {
#define CUDA_FN_CORE(field, sym, params) {#sym, (void **)&c->fn.field, 1},
#define CUDA_FN_VMM(field, sym, params)  {#sym, (void **)&c->fn.field, 0},
        CUDA_CORE_FUNCS(CUDA_FN_CORE) CUDA_VMM_FUNCS(CUDA_FN_VMM)
#undef CUDA_FN_CORE
#undef CUDA_FN_VMM
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        void *p = dlsym(c->lib, table[i].sym);
        /* An object pointer converted to a function pointer: POSIX guarantees this works. */
        memcpy(table[i].slot, &p, sizeof p);
        if (!p && table[i].required)
            return gk__device_error(dev, GK_ENOGPU,
                                    "%s has no %s (an NVIDIA driver older than CUDA 11?); install "
                                    "a current NVIDIA driver or set GK_CUDA_LIBRARY",
                                    dev->cuda_library, table[i].sym);
    }
    return 0;
}

static int has_vmm_symbols(const cuda_dev *c)
{
    return c->fn.mem_granularity && c->fn.mem_address_reserve && c->fn.mem_address_free &&
           c->fn.mem_create && c->fn.mem_release && c->fn.mem_map && c->fn.mem_unmap &&
           c->fn.mem_set_access;
}

static void fill_alloc_prop(const cuda_dev *c, CUmemAllocationProp *prop)
{
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop->location.id = c->ordinal;
}

/* Turns virtual memory on when the driver and the device have it. A driver that cannot say
 * leaves it off (logged), which is not an error. */
static void detect_vm(gk_device *dev, cuda_dev *c)
{
    int supported = 0;
    if (!has_vmm_symbols(c)) {
        gk_log(&dev->cfg.logger, GK_LOG_INFO, "device",
               "%s: the driver has no virtual-memory API; vm_* calls are unavailable",
               dev->cuda_library);
        return;
    }
    CUresult r = c->fn.device_attribute(
        &supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, c->device);
    if (r != CUDA_SUCCESS || !supported) {
        gk_log(&dev->cfg.logger, GK_LOG_INFO, "device",
               "cuda:%d does not support virtual memory management; vm_* calls are unavailable",
               c->ordinal);
        return;
    }
    CUmemAllocationProp prop;
    fill_alloc_prop(c, &prop);
    size_t gran = 0;
    r = c->fn.mem_granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r != CUDA_SUCCESS || gran == 0) {
        char text[256];
        result_text(c, r, text, sizeof text);
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "cuMemGetAllocationGranularity: %s; vm_* calls are unavailable", text);
        return;
    }
    c->vm_granularity = gran;
    c->has_vm = 1;
}

/* Is `r`, returned while opening, a sign that there is no usable GPU rather than a fault? */
static int means_no_gpu(CUresult r)
{
    return r == CUDA_ERROR_NO_DEVICE || r == CUDA_ERROR_NOT_INITIALIZED ||
           r == CUDA_ERROR_INVALID_DEVICE || r == CUDA_ERROR_STUB_LIBRARY ||
           r == CUDA_ERROR_INSUFFICIENT_DRIVER || r == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH ||
           r == CUDA_ERROR_DEVICE_UNAVAILABLE || r == CUDA_ERROR_DEINITIALIZED;
}

/* Reads what the props report; they do not change while the device is open. */
static int query_device(gk_device *dev, cuda_dev *c)
{
    CUresult r = c->fn.device_get(&c->device, c->ordinal);
    if (r != CUDA_SUCCESS)
        return fail_rc(dev, r, means_no_gpu(r) ? GK_ENOGPU : GK_EDRIVER, "cuDeviceGet(%d)",
                       c->ordinal);
    r = c->fn.device_name(c->name, (int)sizeof c->name, c->device);
    if (r != CUDA_SUCCESS)
        return fail_rc(dev, r, GK_EDRIVER, "cuDeviceGetName(cuda:%d)", c->ordinal);
    c->name[sizeof c->name - 1] = '\0';
    r = c->fn.device_total_mem(&c->total_memory, c->device);
    if (r != CUDA_SUCCESS)
        return fail_rc(dev, r, GK_EDRIVER, "cuDeviceTotalMem_v2(cuda:%d)", c->ordinal);
    struct {
        int attr;
        int *out;
        const char *what;
    } attrs[] = {
        {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &c->cc_major, "COMPUTE_CAPABILITY_MAJOR"},
        {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &c->cc_minor, "COMPUTE_CAPABILITY_MINOR"},
        {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &c->multiprocessors, "MULTIPROCESSOR_COUNT"},
    };
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        r = c->fn.device_attribute(attrs[i].out, attrs[i].attr, c->device);
        if (r != CUDA_SUCCESS)
            return fail_rc(dev, r, GK_EDRIVER, "cuDeviceGetAttribute(%s, cuda:%d)", attrs[i].what,
                           c->ordinal);
    }
    return 0;
}

static void cuda_close(gk_device *dev);

static int cuda_open(gk_device *dev, const gk__spec *spec)
{
    if (spec->nkeys > 0)
        return gk__device_error(dev, -EINVAL,
                                "device spec \"%s\": cuda takes no keys, only an index (try "
                                "cuda:0)",
                                dev->spec);
    cuda_dev *c = calloc(1, sizeof *c);
    if (!c)
        return gk__device_error(dev, -ENOMEM, "cuda: out of host memory");
    pthread_mutex_init(&c->lock, NULL);
    c->ordinal = spec->index < 0 ? 0 : spec->index;
    dev->impl = c;
    int rc;

    /* RTLD_NODELETE: the driver starts threads of its own, so its code must stay mapped after
     * our dlclose. */
    dlerror();
    c->lib = dlopen(dev->cuda_library, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!c->lib) {
        const char *why = dlerror();
        why = why ? why : "unknown reason";
        rc = gk__device_error(dev, GK_ENOGPU,
                              "%s %s (dlopen: %s); install the NVIDIA driver or set "
                              "GK_CUDA_LIBRARY to the path of libcuda.so.1",
                              dev->cuda_library,
                              strstr(why, "No such file") ? "not found" : "cannot be loaded", why);
        goto out_close;
    }
    rc = load_symbols(dev, c);
    if (rc)
        goto out_close;

    CUresult r = c->fn.init(0);
    if (r != CUDA_SUCCESS) {
        char text[256];
        result_text(c, r, text, sizeof text);
        rc = gk__device_error(dev, GK_ENOGPU,
                              "cuInit(0) via %s: %s; check that an NVIDIA GPU is visible "
                              "(nvidia-smi) and its driver is loaded",
                              dev->cuda_library, text);
        goto out_close;
    }
    r = c->fn.driver_version(&c->driver_version);
    if (r != CUDA_SUCCESS) {
        rc = fail_rc(dev, r, GK_EDRIVER, "cuDriverGetVersion");
        goto out_close;
    }
    int count = 0;
    r = c->fn.device_count(&count);
    if (r != CUDA_SUCCESS) {
        rc = fail_rc(dev, r, means_no_gpu(r) ? GK_ENOGPU : GK_EDRIVER, "cuDeviceGetCount");
        goto out_close;
    }
    if (count <= 0) {
        rc = gk__device_error(dev, GK_ENOGPU,
                              "%s reports no CUDA device; check nvidia-smi and "
                              "CUDA_VISIBLE_DEVICES",
                              dev->cuda_library);
        goto out_close;
    }
    if (c->ordinal >= count) {
        rc = gk__device_error(dev, GK_ENOGPU,
                              "device spec \"%s\": no GPU %d; the driver sees %d (use cuda:0 to "
                              "cuda:%d)",
                              dev->spec, c->ordinal, count, count - 1);
        goto out_close;
    }
    rc = query_device(dev, c);
    if (rc)
        goto out_close;
    r = c->fn.primary_retain(&c->ctx, c->device);
    if (r != CUDA_SUCCESS) {
        rc = fail_rc(dev, r, means_no_gpu(r) ? GK_ENOGPU : GK_EDRIVER,
                     "cuDevicePrimaryCtxRetain(cuda:%d)", c->ordinal);
        goto out_close;
    }
    c->ctx_retained = 1;
    detect_vm(dev, c);
    snprintf(dev->spec, sizeof dev->spec, "cuda:%d", c->ordinal);
    return 0;

out_close:
    cuda_close(dev);
    return rc;
}

/* Unmaps and releases what the caller left mapped or reserved. */
static void vm_cleanup(gk_device *dev, cuda_dev *c)
{
    for (size_t i = 0; i < c->mapped_size.cap; i++) {
        uintptr_t addr = c->mapped_size.keys[i];
        if (addr <= 1)
            continue;
        size_t size = c->mapped_size.sizes[i], handle = 0;
        (void)gk__ptrmap_take(&c->mapped_handle, (void *)addr, &handle);
        (void)c->fn.mem_unmap((CUdeviceptr)addr, size);
        (void)c->fn.mem_release((CUmemGenericAllocationHandle)handle);
    }
    size_t nres = 0;
    for (size_t i = 0; i < c->reserved.cap; i++) {
        if (c->reserved.keys[i] <= 1)
            continue;
        (void)c->fn.mem_address_free((CUdeviceptr)c->reserved.keys[i], c->reserved.sizes[i]);
        nres++;
    }
    if (nres)
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "%s closed with %zu reserved address ranges; released them", dev->spec, nres);
    gk__ptrmap_free(&c->mapped_size);
    gk__ptrmap_free(&c->mapped_handle);
    gk__ptrmap_free(&c->reserved);
}

static void cuda_close(gk_device *dev)
{
    cuda_dev *c = dev->impl;
    if (!c)
        return;
    if (c->ctx_retained) {
        int pushed;
        if (ctx_enter(dev, &pushed) == 0) {
            vm_cleanup(dev, c);
            (void)ctx_leave(dev, pushed, 0);
        }
        (void)c->fn.primary_release(c->device);
    }
    gk__ptrmap_free(&c->mapped_size);
    gk__ptrmap_free(&c->mapped_handle);
    gk__ptrmap_free(&c->reserved);
    if (c->lib)
        dlclose(c->lib);
    pthread_mutex_destroy(&c->lock);
    free(c);
    dev->impl = NULL;
}

static int cuda_props(gk_device *dev, gk_device_props *p)
{
    cuda_dev *c = dev->impl;
    snprintf(p->name, sizeof p->name, "%s", c->name);
    p->index = c->ordinal;
    p->total_memory = c->total_memory;
    p->cc_major = c->cc_major;
    p->cc_minor = c->cc_minor;
    p->multiprocessors = c->multiprocessors;
    p->driver_version = c->driver_version;
    p->alloc_alignment = CUDA_ALLOC_ALIGN;
    p->vm_granularity = c->has_vm ? c->vm_granularity : 0;
    p->has_vm = c->has_vm;
    p->pinned_is_real = 1;
    return 0;
}

/* --- memory ------------------------------------------------------------------------------- */

static int cuda_mem_info(gk_device *dev, size_t *free_bytes, size_t *total_bytes)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_get_info(free_bytes, total_bytes);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemGetInfo_v2");
    return ctx_leave(dev, pushed, rc);
}

static int cuda_malloc(gk_device *dev, size_t size, void **ptr)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUdeviceptr d = 0;
    CUresult r = c->fn.mem_alloc(&d, size);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemAlloc_v2(%zu)", size);
    else
        *ptr = (void *)(uintptr_t)d;
    return ctx_leave(dev, pushed, rc);
}

static int cuda_free(gk_device *dev, void *ptr, size_t size)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_free((CUdeviceptr)(uintptr_t)ptr);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemFree_v2(%p, %zu bytes)", ptr, size);
    return ctx_leave(dev, pushed, rc);
}

static int cuda_host_alloc(gk_device *dev, size_t size, void **ptr)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    void *p = NULL;
    /* Portable: the pages stay pinned for every context, not only this device's. */
    CUresult r = c->fn.mem_host_alloc(&p, size, CU_MEMHOSTALLOC_PORTABLE);
    if (r != CUDA_SUCCESS)
        rc = fail_rc(dev, r, r == CUDA_ERROR_OUT_OF_MEMORY ? -ENOMEM : map_result(r),
                     "cuMemHostAlloc(%zu, PORTABLE)", size);
    else
        *ptr = p;
    return ctx_leave(dev, pushed, rc);
}

static int cuda_host_free(gk_device *dev, void *ptr, size_t size)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_free_host(ptr);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemFreeHost(%p, %zu bytes)", ptr, size);
    return ctx_leave(dev, pushed, rc);
}

/* The monotonic time `timeout` seconds from now (timeouts beyond a year are a year). */
static uint64_t deadline_after(double timeout)
{
    if (!(timeout > 0))
        timeout = 0;
    if (timeout > 3.15e7)
        timeout = 3.15e7;
    return gk__now_ns() + (uint64_t)(timeout * 1e9);
}

/* --- streams ------------------------------------------------------------------------------ */

static CUstream cu_stream(void *impl)
{
    return impl ? ((cuda_stream *)impl)->stream : NULL;
}

static int cuda_stream_create(gk_device *dev, void **impl)
{
    cuda_dev *c = dev->impl;
    cuda_stream *s = calloc(1, sizeof *s);
    if (!s)
        return gk__device_error(dev, -ENOMEM, "gk_stream_create: out of host memory");
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc) {
        free(s);
        return rc;
    }
    CUresult r = c->fn.stream_create(&s->stream, CU_STREAM_NON_BLOCKING);
    rc = ctx_leave(dev, pushed,
                   r == CUDA_SUCCESS ? 0 : FAIL(dev, r, "cuStreamCreate(NON_BLOCKING)"));
    if (rc) {
        free(s);
        return rc;
    }
    pthread_mutex_lock(&c->lock);
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    pthread_mutex_unlock(&c->lock);
    *impl = s;
    return 0;
}

static int cuda_stream_destroy(gk_device *dev, void *impl)
{
    cuda_dev *c = dev->impl;
    cuda_stream *s = impl;
    pthread_mutex_lock(&c->lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&c->lock);
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc == 0) {
        CUresult r = c->fn.stream_destroy(s->stream);
        rc = ctx_leave(dev, pushed, r == CUDA_SUCCESS ? 0 : FAIL(dev, r, "cuStreamDestroy_v2"));
    }
    free(s);
    return rc;
}

/* Polls `stream` until it is idle or `timeout` seconds pass. */
static int cuda_stream_sync(gk_device *dev, void *impl, double timeout)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    uint64_t deadline = deadline_after(timeout);
    unsigned round = 0;
    for (;;) {
        CUresult r = c->fn.stream_query(cu_stream(impl));
        if (r == CUDA_SUCCESS)
            break;
        if (r != CUDA_ERROR_NOT_READY) {
            rc = FAIL(dev, r, "cuStreamQuery(%s stream)", impl ? "gpukit" : "default");
            break;
        }
        if (gk__now_ns() >= deadline) {
            rc = gk__device_error(dev, -ETIMEDOUT,
                                  "%s: %s stream still busy after %.3f s (raise the timeout or "
                                  "GK_SYNC_TIMEOUT)",
                                  dev->spec, impl ? "a" : "the default", timeout);
            break;
        }
        gk__poll_backoff(&round);
    }
    return ctx_leave(dev, pushed, rc);
}

/* Polls the default stream and every stream of the device until all are idle. The streams are
 * queried under the lock (the queries do not block) so none is destroyed meanwhile. */
static int cuda_device_sync(gk_device *dev, double timeout)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    uint64_t deadline = deadline_after(timeout);
    unsigned round = 0;
    for (;;) {
        int busy = 0;
        CUresult r = c->fn.stream_query(NULL);
        pthread_mutex_lock(&c->lock);
        for (cuda_stream *s = c->streams; s && (r == CUDA_SUCCESS || r == CUDA_ERROR_NOT_READY);
             s = s->next) {
            busy |= r == CUDA_ERROR_NOT_READY;
            r = c->fn.stream_query(s->stream);
        }
        pthread_mutex_unlock(&c->lock);
        busy |= r == CUDA_ERROR_NOT_READY;
        if (r != CUDA_SUCCESS && r != CUDA_ERROR_NOT_READY) {
            rc = FAIL(dev, r, "cuStreamQuery");
            break;
        }
        if (!busy)
            break;
        if (gk__now_ns() >= deadline) {
            rc = gk__device_error(dev, -ETIMEDOUT,
                                  "%s: streams still busy after %.3f s (raise the timeout or "
                                  "GK_SYNC_TIMEOUT)",
                                  dev->spec, timeout);
            break;
        }
        gk__poll_backoff(&round);
    }
    return ctx_leave(dev, pushed, rc);
}

static int cuda_stream_wait(gk_device *dev, void *stream_impl, void *event_impl)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.stream_wait_event(cu_stream(stream_impl), (CUevent)event_impl, 0);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuStreamWaitEvent");
    return ctx_leave(dev, pushed, rc);
}

static int cuda_host_fn(gk_device *dev, void *stream_impl, void (*fn)(void *), void *user)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.launch_host_func(cu_stream(stream_impl), fn, user);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuLaunchHostFunc");
    return ctx_leave(dev, pushed, rc);
}

/* --- events ------------------------------------------------------------------------------- */

static int cuda_event_create(gk_device *dev, void **impl)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUevent ev = NULL;
    CUresult r = c->fn.event_create(&ev, CU_EVENT_DISABLE_TIMING);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventCreate(DISABLE_TIMING)");
    else
        *impl = ev;
    return ctx_leave(dev, pushed, rc);
}

static int cuda_event_destroy(gk_device *dev, void *impl)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.event_destroy((CUevent)impl);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventDestroy_v2");
    return ctx_leave(dev, pushed, rc);
}

static int cuda_event_record(gk_device *dev, void *event_impl, void *stream_impl)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.event_record((CUevent)event_impl, cu_stream(stream_impl));
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventRecord");
    return ctx_leave(dev, pushed, rc);
}

static int cuda_event_query(gk_device *dev, void *impl)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.event_query((CUevent)impl);
    if (r == CUDA_ERROR_NOT_READY)
        rc = GK_ENOTREADY;
    else if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventQuery");
    return ctx_leave(dev, pushed, rc);
}

static int cuda_event_sync(gk_device *dev, void *impl, double timeout)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    uint64_t deadline = deadline_after(timeout);
    unsigned round = 0;
    for (;;) {
        CUresult r = c->fn.event_query((CUevent)impl);
        if (r == CUDA_SUCCESS)
            break;
        if (r != CUDA_ERROR_NOT_READY) {
            rc = FAIL(dev, r, "cuEventQuery");
            break;
        }
        if (gk__now_ns() >= deadline) {
            rc = gk__device_error(dev, -ETIMEDOUT,
                                  "%s: event not complete after %.3f s (raise the timeout or "
                                  "GK_SYNC_TIMEOUT)",
                                  dev->spec, timeout);
            break;
        }
        gk__poll_backoff(&round);
    }
    return ctx_leave(dev, pushed, rc);
}

/* --- copies ------------------------------------------------------------------------------- */

static int cuda_memcpy(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                       void *stream_impl)
{
    cuda_dev *c = dev->impl;
    int pushed, rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUstream s = cu_stream(stream_impl);
    CUresult r;
    const char *what;
    switch (kind) {
    case GK__HTOD:
        r = c->fn.memcpy_htod((CUdeviceptr)(uintptr_t)dst, src, size, s);
        what = "cuMemcpyHtoDAsync_v2";
        break;
    case GK__DTOH:
        r = c->fn.memcpy_dtoh(dst, (CUdeviceptr)(uintptr_t)src, size, s);
        what = "cuMemcpyDtoHAsync_v2";
        break;
    default:
        r = c->fn.memcpy_dtod((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, size, s);
        what = "cuMemcpyDtoDAsync_v2";
        break;
    }
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "%s(%p <- %p, %zu)", what, dst, src, size);
    return ctx_leave(dev, pushed, rc);
}

/* --- virtual memory ----------------------------------------------------------------------- */

static int vm_check(gk_device *dev, const char *fn, const void *addr, size_t size)
{
    cuda_dev *c = dev->impl;
    if (!c->has_vm)
        return gk__device_error(dev, GK_EUNAVAIL,
                                "%s: %s has no virtual memory (the driver lacks cuMemCreate or "
                                "the GPU does not support it); use gk_device_malloc",
                                fn, dev->spec);
    size_t g = c->vm_granularity;
    if (size % g != 0 || (uintptr_t)addr % g != 0)
        return gk__device_error(dev, -EINVAL,
                                "%s(%p, %zu): address and size must be multiples of the "
                                "granularity %zu (see gk_device_props.vm_granularity)",
                                fn, addr, size, g);
    return 0;
}

static int cuda_vm_reserve(gk_device *dev, size_t size, void **base)
{
    cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_reserve", NULL, size);
    if (rc)
        return rc;
    int pushed;
    rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUdeviceptr d = 0;
    CUresult r = c->fn.mem_address_reserve(&d, size, c->vm_granularity, 0, 0);
    if (r != CUDA_SUCCESS) {
        rc = FAIL(dev, r, "cuMemAddressReserve(%zu)", size);
        return ctx_leave(dev, pushed, rc);
    }
    pthread_mutex_lock(&c->lock);
    rc = gk__ptrmap_put(&c->reserved, (void *)(uintptr_t)d, size);
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        (void)c->fn.mem_address_free(d, size);
        rc = gk__device_error(dev, rc, "gk_device_vm_reserve: out of host memory");
    } else {
        *base = (void *)(uintptr_t)d;
    }
    return ctx_leave(dev, pushed, rc);
}

static int cuda_vm_release(gk_device *dev, void *base, size_t size)
{
    cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_release", base, size);
    if (rc)
        return rc;
    size_t reserved = 0;
    pthread_mutex_lock(&c->lock);
    rc = gk__ptrmap_take(&c->reserved, base, &reserved);
    if (rc == 0 && reserved != size) {
        (void)gk__ptrmap_put(&c->reserved, base, reserved); /* the slot is still free */
        rc = -ERANGE;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc == -ENOENT)
        return gk__device_error(
            dev, -EINVAL, "gk_device_vm_release: %p is not the base of a reserved range", base);
    if (rc)
        return gk__device_error(dev, -EINVAL,
                                "gk_device_vm_release(%p, %zu): the range was reserved with "
                                "size %zu",
                                base, size, reserved);
    int pushed;
    rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_address_free((CUdeviceptr)(uintptr_t)base, size);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemAddressFree(%p, %zu)", base, size);
    return ctx_leave(dev, pushed, rc);
}

/* Maps one new physical allocation of `size` bytes at `addr`, readable and writable by this
 * device. Undoes its own steps on failure. */
static int cuda_vm_map(gk_device *dev, void *addr, size_t size)
{
    cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_map", addr, size);
    if (rc)
        return rc;
    int pushed;
    rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUdeviceptr d = (CUdeviceptr)(uintptr_t)addr;
    CUmemAllocationProp prop;
    fill_alloc_prop(c, &prop);
    CUmemGenericAllocationHandle h = 0;
    CUresult r = c->fn.mem_create(&h, size, &prop, 0);
    if (r != CUDA_SUCCESS) {
        rc = FAIL(dev, r, "cuMemCreate(%zu)", size);
        goto out_leave;
    }
    r = c->fn.mem_map(d, size, 0, h, 0);
    if (r != CUDA_SUCCESS) {
        rc = FAIL(dev, r, "cuMemMap(%p, %zu)", addr, size);
        goto out_release;
    }
    CUmemAccessDesc access;
    memset(&access, 0, sizeof access);
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = c->ordinal;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = c->fn.mem_set_access(d, size, &access, 1);
    if (r != CUDA_SUCCESS) {
        rc = FAIL(dev, r, "cuMemSetAccess(%p, %zu, READWRITE)", addr, size);
        goto out_unmap;
    }
    pthread_mutex_lock(&c->lock);
    rc = gk__ptrmap_put(&c->mapped_size, addr, size);
    if (rc == 0) {
        rc = gk__ptrmap_put(&c->mapped_handle, addr, (size_t)h);
        if (rc)
            (void)gk__ptrmap_take(&c->mapped_size, addr, NULL);
    }
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        rc = gk__device_error(dev, rc, "gk_device_vm_map: out of host memory");
        goto out_unmap;
    }
    return ctx_leave(dev, pushed, 0);

out_unmap:
    (void)c->fn.mem_unmap(d, size);
out_release:
    (void)c->fn.mem_release(h);
out_leave:
    return ctx_leave(dev, pushed, rc);
}

/* Unmaps [addr, addr + size), which must consist of whole pieces mapped by vm_map. */
static int cuda_vm_unmap(gk_device *dev, void *addr, size_t size)
{
    cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_unmap", addr, size);
    if (rc)
        return rc;
    /* Check the whole range first, so a bad call changes nothing. */
    pthread_mutex_lock(&c->lock);
    size_t off = 0;
    while (off < size) {
        char *p = (char *)addr + off;
        size_t piece = 0;
        if (gk__ptrmap_take(&c->mapped_size, p, &piece) != 0)
            break;
        (void)gk__ptrmap_put(&c->mapped_size, p, piece);
        off += piece;
    }
    pthread_mutex_unlock(&c->lock);
    if (off != size)
        return gk__device_error(dev, -EINVAL,
                                "gk_device_vm_unmap(%p, %zu): the range must consist of whole "
                                "pieces mapped by gk_device_vm_map (no piece at offset %zu)",
                                addr, size, off);
    int pushed;
    rc = ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    for (off = 0; off < size;) {
        char *p = (char *)addr + off;
        size_t piece = 0, handle = 0;
        pthread_mutex_lock(&c->lock);
        (void)gk__ptrmap_take(&c->mapped_size, p, &piece);
        (void)gk__ptrmap_take(&c->mapped_handle, p, &handle);
        pthread_mutex_unlock(&c->lock);
        if (piece == 0)
            break; /* another thread unmapped it meanwhile */
        CUresult r = c->fn.mem_unmap((CUdeviceptr)(uintptr_t)p, piece);
        if (r != CUDA_SUCCESS) {
            pthread_mutex_lock(&c->lock);
            (void)gk__ptrmap_put(&c->mapped_size, p, piece);
            (void)gk__ptrmap_put(&c->mapped_handle, p, handle);
            pthread_mutex_unlock(&c->lock);
            rc = FAIL(dev, r, "cuMemUnmap(%p, %zu)", (void *)p, piece);
            break;
        }
        r = c->fn.mem_release((CUmemGenericAllocationHandle)handle);
        if (r != CUDA_SUCCESS && rc == 0)
            rc = FAIL(dev, r, "cuMemRelease(%p)", (void *)p);
        off += piece;
    }
    return ctx_leave(dev, pushed, rc);
}

const gk__backend_ops gk__backend_cuda = {
    .name = "cuda",
    .kind = GK_BACKEND_CUDA,
    .open = cuda_open,
    .close = cuda_close,
    .props = cuda_props,
    .mem_info = cuda_mem_info,
    .malloc = cuda_malloc,
    .free = cuda_free,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_sync = cuda_stream_sync,
    .stream_wait = cuda_stream_wait,
    .host_fn = cuda_host_fn,
    .device_sync = cuda_device_sync,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .event_query = cuda_event_query,
    .event_sync = cuda_event_sync,
    .memcpy_async = cuda_memcpy,
    .vm_reserve = cuda_vm_reserve,
    .vm_map = cuda_vm_map,
    .vm_unmap = cuda_vm_unmap,
    .vm_release = cuda_vm_release,
};
