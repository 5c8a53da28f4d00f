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

#include "common/alloc.h"
#include "device/cuda_int.h"

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

int gk__cuda_map_result(CUresult r)
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
void gk__cuda_result_text(const gk__cuda_dev *c, CUresult r, char *buf, size_t len)
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

int gk__cuda_fail(gk_device *dev, CUresult r, int rc, const char *call_fmt, ...)
{
    char call[160], text[256];
    va_list ap;
    va_start(ap, call_fmt);
    vsnprintf(call, sizeof call, call_fmt, ap);
    va_end(ap);
    gk__cuda_result_text(dev->impl, r, text, sizeof text);
    return gk__device_error(dev, rc, "%s: %s", call, text);
}

/* --- context ------------------------------------------------------------------------------ */

/* Makes the primary context current on this thread. A thread without a context keeps ours
 * afterwards (as the CUDA runtime does); a thread with another context gets it back in
 * ctx_leave. */
int gk__cuda_ctx_enter(gk_device *dev, int *pushed)
{
    gk__cuda_dev *c = dev->impl;
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
int gk__cuda_ctx_leave(gk_device *dev, int pushed, int rc)
{
    gk__cuda_dev *c = dev->impl;
    if (!pushed)
        return rc;
    CUcontext popped = NULL;
    CUresult r = c->fn.ctx_pop(&popped);
    if (r != CUDA_SUCCESS) {
        (void)FAIL(dev, r, "cuCtxPopCurrent_v2");
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "%s: cannot restore the calling thread's CUDA context: %s", dev->spec,
               gk_last_error());
    }
    return rc;
}

/* --- open and close ----------------------------------------------------------------------- */

/* Resolves the symbols. Returns 0, or GK_ENOGPU naming the first missing required one. */
static int load_symbols(gk_device *dev, gk__cuda_dev *c)
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

/* Is `r`, returned while opening, a sign that there is no usable GPU rather than a fault? */
static int means_no_gpu(CUresult r)
{
    return r == CUDA_ERROR_NO_DEVICE || r == CUDA_ERROR_NOT_INITIALIZED ||
           r == CUDA_ERROR_INVALID_DEVICE || r == CUDA_ERROR_STUB_LIBRARY ||
           r == CUDA_ERROR_INSUFFICIENT_DRIVER || r == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH ||
           r == CUDA_ERROR_DEVICE_UNAVAILABLE || r == CUDA_ERROR_DEINITIALIZED;
}

/* Reads what the props report; they do not change while the device is open. */
static int query_device(gk_device *dev, gk__cuda_dev *c)
{
    CUresult r = c->fn.device_get(&c->device, c->ordinal);
    if (r != CUDA_SUCCESS)
        return gk__cuda_fail(dev, r, means_no_gpu(r) ? GK_ENOGPU : GK_EDRIVER, "cuDeviceGet(%d)",
                             c->ordinal);
    r = c->fn.device_name(c->name, (int)sizeof c->name, c->device);
    if (r != CUDA_SUCCESS)
        return gk__cuda_fail(dev, r, GK_EDRIVER, "cuDeviceGetName(cuda:%d)", c->ordinal);
    c->name[sizeof c->name - 1] = '\0';
    r = c->fn.device_total_mem(&c->total_memory, c->device);
    if (r != CUDA_SUCCESS)
        return gk__cuda_fail(dev, r, GK_EDRIVER, "cuDeviceTotalMem_v2(cuda:%d)", c->ordinal);
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
            return gk__cuda_fail(dev, r, GK_EDRIVER, "cuDeviceGetAttribute(%s, cuda:%d)",
                                 attrs[i].what, c->ordinal);
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
    gk__cuda_dev *c = gk__calloc(1, sizeof *c);
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
        gk__cuda_result_text(c, r, text, sizeof text);
        rc = gk__device_error(dev, GK_ENOGPU,
                              "cuInit(0) via %s: %s; check that an NVIDIA GPU is visible "
                              "(nvidia-smi) and its driver is loaded",
                              dev->cuda_library, text);
        goto out_close;
    }
    r = c->fn.driver_version(&c->driver_version);
    if (r != CUDA_SUCCESS) {
        rc = gk__cuda_fail(dev, r, GK_EDRIVER, "cuDriverGetVersion");
        goto out_close;
    }
    int count = 0;
    r = c->fn.device_count(&count);
    if (r != CUDA_SUCCESS) {
        rc = gk__cuda_fail(dev, r, means_no_gpu(r) ? GK_ENOGPU : GK_EDRIVER, "cuDeviceGetCount");
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
        rc = gk__cuda_fail(dev, r, means_no_gpu(r) ? GK_ENOGPU : GK_EDRIVER,
                           "cuDevicePrimaryCtxRetain(cuda:%d)", c->ordinal);
        goto out_close;
    }
    c->ctx_retained = 1;
    gk__cuda_vm_detect(dev, c);
    snprintf(dev->spec, sizeof dev->spec, "cuda:%d", c->ordinal);
    return 0;

out_close:
    cuda_close(dev);
    return rc;
}

static void cuda_close(gk_device *dev)
{
    gk__cuda_dev *c = dev->impl;
    if (!c)
        return;
    if (c->ctx_retained) {
        int pushed;
        if (gk__cuda_ctx_enter(dev, &pushed) == 0) {
            gk__cuda_vm_cleanup(dev, c);
            (void)gk__cuda_ctx_leave(dev, pushed, 0);
        }
        (void)c->fn.primary_release(c->device);
    }
    gk__ptrmap_free(&c->mapped);
    gk__ptrmap_free(&c->reserved);
    if (c->lib)
        dlclose(c->lib);
    pthread_mutex_destroy(&c->lock);
    free(c);
    dev->impl = NULL;
}

static int cuda_props(gk_device *dev, gk_device_props *p)
{
    gk__cuda_dev *c = dev->impl;
    snprintf(p->name, sizeof p->name, "%s", c->name);
    p->index = c->ordinal;
    p->total_memory = c->total_memory;
    p->cc_major = c->cc_major;
    p->cc_minor = c->cc_minor;
    p->multiprocessors = c->multiprocessors;
    p->driver_version = c->driver_version;
    p->alloc_alignment = GK__CUDA_ALLOC_ALIGN;
    p->vm_granularity = c->has_vm ? c->vm_granularity : 0;
    p->has_vm = c->has_vm;
    p->pinned_is_real = 1;
    return 0;
}

/* --- memory ------------------------------------------------------------------------------- */

static int cuda_mem_info(gk_device *dev, size_t *free_bytes, size_t *total_bytes)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_get_info(free_bytes, total_bytes);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemGetInfo_v2");
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_malloc(gk_device *dev, size_t size, void **ptr)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUdeviceptr d = 0;
    CUresult r = c->fn.mem_alloc(&d, size);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemAlloc_v2(%zu)", size);
    else
        *ptr = (void *)(uintptr_t)d;
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_free(gk_device *dev, void *ptr, size_t size)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_free((CUdeviceptr)(uintptr_t)ptr);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemFree_v2(%p, %zu bytes)", ptr, size);
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_host_alloc(gk_device *dev, size_t size, void **ptr)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    void *p = NULL;
    /* Portable: the pages stay pinned for every context, not only this device's. */
    CUresult r = c->fn.mem_host_alloc(&p, size, CU_MEMHOSTALLOC_PORTABLE);
    if (r != CUDA_SUCCESS)
        rc = gk__cuda_fail(dev, r, r == CUDA_ERROR_OUT_OF_MEMORY ? -ENOMEM : gk__cuda_map_result(r),
                           "cuMemHostAlloc(%zu, PORTABLE)", size);
    else
        *ptr = p;
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_host_free(gk_device *dev, void *ptr, size_t size)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_free_host(ptr);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemFreeHost(%p, %zu bytes)", ptr, size);
    return gk__cuda_ctx_leave(dev, pushed, rc);
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
    return impl ? ((gk__cuda_stream *)impl)->stream : NULL;
}

static void stream_link(gk__cuda_dev *c, gk__cuda_stream *s)
{
    pthread_mutex_lock(&c->lock);
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    pthread_mutex_unlock(&c->lock);
}

static int cuda_stream_create(gk_device *dev, void **impl)
{
    gk__cuda_dev *c = dev->impl;
    gk__cuda_stream *s = gk__calloc(1, sizeof *s);
    if (!s)
        return gk__device_error(dev, -ENOMEM, "gk_stream_create: out of host memory");
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc) {
        free(s);
        return rc;
    }
    CUresult r = c->fn.stream_create(&s->stream, CU_STREAM_NON_BLOCKING);
    rc = gk__cuda_ctx_leave(dev, pushed,
                            r == CUDA_SUCCESS ? 0 : FAIL(dev, r, "cuStreamCreate(NON_BLOCKING)"));
    if (rc) {
        free(s);
        return rc;
    }
    stream_link(c, s);
    *impl = s;
    return 0;
}

/* A stream impl over a CUstream the caller made (PyTorch's current stream, ...): nothing is
 * created, and destroy leaves the CUstream alone. */
static int cuda_stream_wrap(gk_device *dev, void *native, void **impl)
{
    gk__cuda_stream *s = gk__calloc(1, sizeof *s);
    if (!s)
        return gk__device_error(dev, -ENOMEM, "gk_stream_wrap: out of host memory");
    s->stream = (CUstream)native;
    s->borrowed = 1;
    stream_link(dev->impl, s);
    *impl = s;
    return 0;
}

static int cuda_stream_destroy(gk_device *dev, void *impl)
{
    gk__cuda_dev *c = dev->impl;
    gk__cuda_stream *s = impl;
    pthread_mutex_lock(&c->lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&c->lock);
    if (s->borrowed) {
        free(s);
        return 0;
    }
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc == 0) {
        CUresult r = c->fn.stream_destroy(s->stream);
        rc = gk__cuda_ctx_leave(dev, pushed,
                                r == CUDA_SUCCESS ? 0 : FAIL(dev, r, "cuStreamDestroy_v2"));
    }
    free(s);
    return rc;
}

/* Polls `stream` until it is idle or `timeout` seconds pass. */
static int cuda_stream_sync(gk_device *dev, void *impl, double timeout)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
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
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

/* Polls the default stream and every stream of the device until all are idle. The streams are
 * queried under the lock (the queries do not block) so none is destroyed meanwhile. */
static int cuda_device_sync(gk_device *dev, double timeout)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    uint64_t deadline = deadline_after(timeout);
    unsigned round = 0;
    for (;;) {
        int busy = 0;
        CUresult r = c->fn.stream_query(NULL);
        pthread_mutex_lock(&c->lock);
        for (gk__cuda_stream *s = c->streams; s && (r == CUDA_SUCCESS || r == CUDA_ERROR_NOT_READY);
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
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_stream_wait(gk_device *dev, void *stream_impl, void *event_impl)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.stream_wait_event(cu_stream(stream_impl), (CUevent)event_impl, 0);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuStreamWaitEvent");
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_host_fn(gk_device *dev, void *stream_impl, void (*fn)(void *), void *user)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.launch_host_func(cu_stream(stream_impl), fn, user);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuLaunchHostFunc");
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

/* --- events ------------------------------------------------------------------------------- */

static int cuda_event_create(gk_device *dev, void **impl)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUevent ev = NULL;
    CUresult r = c->fn.event_create(&ev, CU_EVENT_DISABLE_TIMING);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventCreate(DISABLE_TIMING)");
    else
        *impl = ev;
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_event_destroy(gk_device *dev, void *impl)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.event_destroy((CUevent)impl);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventDestroy_v2");
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_event_record(gk_device *dev, void *event_impl, void *stream_impl)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.event_record((CUevent)event_impl, cu_stream(stream_impl));
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventRecord");
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_event_query(gk_device *dev, void *impl)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.event_query((CUevent)impl);
    if (r == CUDA_ERROR_NOT_READY)
        rc = GK_ENOTREADY;
    else if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuEventQuery");
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

static int cuda_event_sync(gk_device *dev, void *impl, double timeout)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
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
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

/* --- copies ------------------------------------------------------------------------------- */

static int cuda_memcpy(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                       void *stream_impl)
{
    gk__cuda_dev *c = dev->impl;
    int pushed, rc = gk__cuda_ctx_enter(dev, &pushed);
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
    return gk__cuda_ctx_leave(dev, pushed, rc);
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
    .vm_reserve = gk__cuda_vm_reserve,
    .vm_map = gk__cuda_vm_map,
    .vm_unmap = gk__cuda_vm_unmap,
    .vm_release = gk__cuda_vm_release,
    .stream_wrap = cuda_stream_wrap,
};
