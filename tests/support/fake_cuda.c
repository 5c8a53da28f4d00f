/* A fake libcuda.so.1 for the tests: exactly the driver functions the cuda backend loads, over host
 * memory, with the argument checks of the real driver, a memory capacity, a per-thread context
 * stack, streams that run their work at once unless stalled, and a control API (fake_cuda.h) to
 * inject errors, count calls and change the devices. Built once with the virtual-memory symbols
 * and once (FAKECUDA_NO_VMM) without them. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "device/cuda_api.h"
#include "fake_cuda.h"

#define FK_MAXDEV      8
#define FK_GRANULARITY ((size_t)2 << 20)
#define FK_MAGIC_S     0x5354524du
#define FK_MAGIC_E     0x45564e54u

/* Prototypes of the exported driver functions (the backend finds them with dlsym). */
#define FK_PROTO(field, sym, params) CUresult sym params;
CUDA_CORE_FUNCS(FK_PROTO)
CUDA_VMM_FUNCS(FK_PROTO)
#undef FK_PROTO

enum {
#define FK_ENUM(field, sym, params) FKID_##sym,
    CUDA_CORE_FUNCS(FK_ENUM) CUDA_VMM_FUNCS(FK_ENUM)
#undef FK_ENUM
        FK_NFUNCS
};

static const char *const fk_names[FK_NFUNCS] = {
#define FK_NAME(field, sym, params) #sym,
    CUDA_CORE_FUNCS(FK_NAME) CUDA_VMM_FUNCS(FK_NAME)
#undef FK_NAME
};

#define FK_ERRORS(XX)                                                                              \
    XX(CUDA_SUCCESS, "no error")                                                                   \
    XX(CUDA_ERROR_INVALID_VALUE, "invalid argument")                                               \
    XX(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")                                                  \
    XX(CUDA_ERROR_NOT_INITIALIZED, "initialization error")                                         \
    XX(CUDA_ERROR_DEINITIALIZED, "driver shutting down")                                           \
    XX(CUDA_ERROR_STUB_LIBRARY, "CUDA driver is a stub library")                                   \
    XX(CUDA_ERROR_INSUFFICIENT_DRIVER, "CUDA driver version is insufficient")                      \
    XX(CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA-capable device(s) is/are busy or unavailable")         \
    XX(CUDA_ERROR_NO_DEVICE, "no CUDA-capable device is detected")                                 \
    XX(CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal")                                        \
    XX(CUDA_ERROR_INVALID_CONTEXT, "invalid device context")                                       \
    XX(CUDA_ERROR_ECC_UNCORRECTABLE, "uncorrectable ECC error encountered")                        \
    XX(CUDA_ERROR_NVLINK_UNCORRECTABLE, "uncorrectable NVLink error detected")                     \
    XX(CUDA_ERROR_OPERATING_SYSTEM, "OS call failed or operation not supported on this OS")        \
    XX(CUDA_ERROR_INVALID_HANDLE, "invalid resource handle")                                       \
    XX(CUDA_ERROR_NOT_FOUND, "named symbol not found")                                             \
    XX(CUDA_ERROR_NOT_READY, "device not ready")                                                   \
    XX(CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered")                     \
    XX(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "too many resources requested for launch")              \
    XX(CUDA_ERROR_LAUNCH_TIMEOUT, "the launch timed out and was terminated")                       \
    XX(CUDA_ERROR_CONTEXT_IS_DESTROYED, "context is destroyed")                                    \
    XX(CUDA_ERROR_ASSERT, "device-side assert triggered")                                          \
    XX(CUDA_ERROR_HARDWARE_STACK_ERROR, "hardware stack error")                                    \
    XX(CUDA_ERROR_ILLEGAL_INSTRUCTION, "an illegal instruction was encountered")                   \
    XX(CUDA_ERROR_MISALIGNED_ADDRESS, "misaligned address")                                        \
    XX(CUDA_ERROR_INVALID_ADDRESS_SPACE, "operation not supported on global/shared address space") \
    XX(CUDA_ERROR_INVALID_PC, "invalid program counter")                                           \
    XX(CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure")                                     \
    XX(CUDA_ERROR_NOT_PERMITTED, "operation not permitted")                                        \
    XX(CUDA_ERROR_NOT_SUPPORTED, "operation not supported")                                        \
    XX(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, "system has unsupported display driver / cuda driver "   \
                                          "combination")                                           \
    XX(CUDA_ERROR_UNKNOWN, "unknown error")

struct CUctx_st {
    int device;
};

typedef enum fk_op_kind { OP_COPY, OP_HOSTFN, OP_RECORD, OP_WAIT } fk_op_kind;

typedef struct fk_op {
    fk_op_kind kind;
    void *dst;
    const void *src;
    size_t n;
    CUhostFn fn;
    void *user;
    struct CUevent_st *ev;
    unsigned long gen;
    struct fk_op *next;
} fk_op;

struct CUstream_st {
    unsigned magic;
    int destroyed; /* by the caller; freed once its queue drains */
    fk_op *head, *tail;
    struct CUstream_st *next;
};

struct CUevent_st {
    unsigned magic;
    unsigned long gen, done; /* records made / completed; ready when equal */
    int refs;                /* queued ops naming it */
    int destroyed;
    struct CUevent_st *next;
};

typedef struct fk_block { /* cuMemAlloc memory or cuMemHostAlloc memory */
    char *base;
    size_t size;
    struct fk_block *next;
} fk_block;

typedef struct fk_phys { /* cuMemCreate */
    size_t size;
    int mapped, released;
    struct fk_phys *next;
} fk_phys;

typedef struct fk_map {
    char *addr;
    size_t size;
    fk_phys *phys;
    int access;
    struct fk_map *next;
} fk_map;

typedef struct fk_resv { /* cuMemAddressReserve */
    char *base;
    size_t size;
    void *raw;
    size_t rawsize;
    fk_map *maps;
    struct fk_resv *next;
} fk_resv;

static pthread_once_t fk_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fk_lock;
static struct CUctx_st fk_ctx[FK_MAXDEV];
static struct CUstream_st fk_default_stream = {FK_MAGIC_S, 0, NULL, NULL, NULL};
static _Thread_local CUcontext tls_ctx[16];
static _Thread_local int tls_depth;

static struct {
    long calls[FK_NFUNCS];
    long fail_at[FK_NFUNCS]; /* the call number that fails; 0 none */
    int fail_always[FK_NFUNCS];
    int fail_err[FK_NFUNCS];
    int initialized, device_count, vmm, stalled;
    size_t total, used;
    int ctx_refs[FK_MAXDEV];
    fk_block *allocs, *hosts;
    struct CUstream_st *streams;
    struct CUevent_st *events;
    fk_phys *phys;
    fk_resv *resvs;
} st = {.device_count = 1, .vmm = 1, .total = (size_t)1 << 30};

static void fk_init_lock(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&fk_lock, &a);
    pthread_mutexattr_destroy(&a);
    for (int i = 0; i < FK_MAXDEV; i++)
        fk_ctx[i].device = i;
}

static void fk_lock_all(void)
{
    pthread_once(&fk_once, fk_init_lock);
    pthread_mutex_lock(&fk_lock);
}

/* Takes the lock and counts the call; returns an injected error (lock released) or 0. */
static CUresult fk_enter(int id)
{
    fk_lock_all();
    long n = ++st.calls[id];
    if (st.fail_always[id] || st.fail_at[id] == n) {
        CUresult r = st.fail_err[id];
        if (st.fail_at[id] == n)
            st.fail_at[id] = 0;
        pthread_mutex_unlock(&fk_lock);
        return r;
    }
    return CUDA_SUCCESS;
}

static CUresult fk_leave(CUresult r)
{
    pthread_mutex_unlock(&fk_lock);
    return r;
}

#define ENTER(sym)                                                                                 \
    do {                                                                                           \
        CUresult fk__r = fk_enter(FKID_##sym);                                                     \
        if (fk__r != CUDA_SUCCESS)                                                                 \
            return fk__r;                                                                          \
    } while (0)

/* The current context's device, or an error when there is none usable. */
static CUresult need_ctx(int *device)
{
    if (!st.initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (tls_depth == 0 || !tls_ctx[tls_depth - 1])
        return CUDA_ERROR_INVALID_CONTEXT;
    int d = tls_ctx[tls_depth - 1]->device;
    if (st.ctx_refs[d] <= 0)
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (device)
        *device = d;
    return CUDA_SUCCESS;
}

#define NEED_CTX()                                                                                 \
    do {                                                                                           \
        CUresult fk__c = need_ctx(NULL);                                                           \
        if (fk__c != CUDA_SUCCESS)                                                                 \
            return fk_leave(fk__c);                                                                \
    } while (0)

static CUresult need_device(CUdevice d)
{
    if (!st.initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (d < 0 || d >= st.device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    return CUDA_SUCCESS;
}

/* --- device memory lookups --------------------------------------------------------------- */

/* Is [p, p + n) device memory this process may touch (write: with write access)? */
static int dev_range_ok(CUdeviceptr dp, size_t n, int write)
{
    char *p = (char *)(uintptr_t)dp;
    for (fk_block *b = st.allocs; b; b = b->next)
        if (p >= b->base && n <= b->size && p - b->base <= (ptrdiff_t)(b->size - n))
            return 1;
    for (fk_resv *r = st.resvs; r; r = r->next) {
        if (p < r->base || p >= r->base + r->size)
            continue;
        if (n > (size_t)(r->base + r->size - p))
            return 0;
        char *x = p, *end = p + n;
        while (x < end) {
            fk_map *m = r->maps;
            while (m && !(x >= m->addr && x < m->addr + m->size))
                m = m->next;
            if (!m)
                return 0;
            int need = write ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE : CU_MEM_ACCESS_FLAGS_PROT_READ;
            if ((m->access & need) != need)
                return 0;
            x = m->addr + m->size;
        }
        return 1;
    }
    return 0;
}

/* --- streams and events ------------------------------------------------------------------ */

static struct CUstream_st *find_stream(CUstream s)
{
    if (!s)
        return &fk_default_stream;
    for (struct CUstream_st *x = st.streams; x; x = x->next)
        if (x == s && !x->destroyed && x->magic == FK_MAGIC_S)
            return x;
    return NULL;
}

static struct CUevent_st *find_event(CUevent e)
{
    for (struct CUevent_st *x = st.events; x; x = x->next)
        if (x == e && !x->destroyed && x->magic == FK_MAGIC_E)
            return x;
    return NULL;
}

/* Runs one op; returns 0 when it must wait. */
static int run_op(fk_op *op)
{
    switch (op->kind) {
    case OP_COPY:
        memmove(op->dst, op->src, op->n);
        break;
    case OP_HOSTFN:
        op->fn(op->user);
        break;
    case OP_RECORD:
        if (op->gen > op->ev->done)
            op->ev->done = op->gen;
        op->ev->refs--;
        break;
    case OP_WAIT:
        if (op->ev->done < op->gen)
            return 0;
        op->ev->refs--;
        break;
    }
    return 1;
}

static int drain(struct CUstream_st *s)
{
    int progressed = 0;
    while (s->head) {
        fk_op *op = s->head;
        if (!run_op(op))
            break;
        s->head = op->next;
        if (!s->head)
            s->tail = NULL;
        free(op);
        progressed = 1;
    }
    return progressed;
}

/* Runs queued work unless stalled, then frees destroyed streams and events nothing needs. */
static void progress(void)
{
    if (st.stalled)
        return;
    int again = 1;
    while (again) {
        again = drain(&fk_default_stream);
        for (struct CUstream_st *s = st.streams; s; s = s->next)
            again |= drain(s);
    }
    for (struct CUstream_st **pp = &st.streams; *pp;) {
        struct CUstream_st *s = *pp;
        if (s->destroyed && !s->head) {
            *pp = s->next;
            s->magic = 0;
            free(s);
        } else {
            pp = &s->next;
        }
    }
    for (struct CUevent_st **pp = &st.events; *pp;) {
        struct CUevent_st *e = *pp;
        if (e->destroyed && e->refs == 0) {
            *pp = e->next;
            e->magic = 0;
            free(e);
        } else {
            pp = &e->next;
        }
    }
}

static CUresult enqueue(struct CUstream_st *s, fk_op op)
{
    fk_op *o = malloc(sizeof *o);
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *o = op;
    o->next = NULL;
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    progress();
    return CUDA_SUCCESS;
}

/* --- control API ------------------------------------------------------------------------- */

static void free_queue(struct CUstream_st *s)
{
    while (s->head) {
        fk_op *op = s->head;
        s->head = op->next;
        free(op);
    }
    s->tail = NULL;
}

void fakecuda_reset(void)
{
    fk_lock_all();
    while (st.allocs) {
        fk_block *b = st.allocs;
        st.allocs = b->next;
        munmap(b->base, b->size);
        free(b);
    }
    while (st.hosts) {
        fk_block *b = st.hosts;
        st.hosts = b->next;
        free(b->base);
        free(b);
    }
    free_queue(&fk_default_stream);
    while (st.streams) {
        struct CUstream_st *s = st.streams;
        st.streams = s->next;
        free_queue(s);
        free(s);
    }
    while (st.events) {
        struct CUevent_st *e = st.events;
        st.events = e->next;
        free(e);
    }
    while (st.resvs) {
        fk_resv *r = st.resvs;
        st.resvs = r->next;
        while (r->maps) {
            fk_map *m = r->maps;
            r->maps = m->next;
            free(m);
        }
        munmap(r->raw, r->rawsize);
        free(r);
    }
    while (st.phys) {
        fk_phys *p = st.phys;
        st.phys = p->next;
        free(p);
    }
    memset(&st, 0, sizeof st);
    st.device_count = 1;
    st.vmm = 1;
    st.total = (size_t)1 << 30;
    tls_depth = 0;
    pthread_mutex_unlock(&fk_lock);
}

static int fk_find_name(const char *fn)
{
    for (int i = 0; fn && i < FK_NFUNCS; i++)
        if (strcmp(fk_names[i], fn) == 0)
            return i;
    return -1;
}

int fakecuda_fail(const char *fn, int nth, int cuda_error)
{
    int id = fk_find_name(fn);
    if (id < 0 || nth < 0)
        return -1;
    fk_lock_all();
    st.fail_err[id] = cuda_error;
    st.fail_always[id] = nth == 0;
    st.fail_at[id] = nth > 0 ? st.calls[id] + nth : 0;
    pthread_mutex_unlock(&fk_lock);
    return 0;
}

void fakecuda_set_device_count(int n)
{
    fk_lock_all();
    st.device_count = n < 0 ? 0 : n > FK_MAXDEV ? FK_MAXDEV : n;
    pthread_mutex_unlock(&fk_lock);
}

void fakecuda_set_total_memory(size_t bytes)
{
    fk_lock_all();
    st.total = bytes;
    pthread_mutex_unlock(&fk_lock);
}

void fakecuda_set_vmm_supported(int yes)
{
    fk_lock_all();
    st.vmm = yes != 0;
    pthread_mutex_unlock(&fk_lock);
}

long fakecuda_calls(const char *fn)
{
    int id = fk_find_name(fn);
    if (id < 0)
        return -1;
    fk_lock_all();
    long n = st.calls[id];
    pthread_mutex_unlock(&fk_lock);
    return n;
}

void fakecuda_stall(int on)
{
    fk_lock_all();
    st.stalled = on != 0;
    progress();
    pthread_mutex_unlock(&fk_lock);
}

long fakecuda_live_objects(void)
{
    long n = 0;
    fk_lock_all();
    for (fk_block *b = st.allocs; b; b = b->next)
        n++;
    for (fk_block *b = st.hosts; b; b = b->next)
        n++;
    for (struct CUstream_st *s = st.streams; s; s = s->next)
        n += !s->destroyed;
    for (struct CUevent_st *e = st.events; e; e = e->next)
        n += !e->destroyed;
    for (fk_phys *p = st.phys; p; p = p->next)
        n += !p->released;
    for (fk_resv *r = st.resvs; r; r = r->next)
        n++;
    for (int i = 0; i < FK_MAXDEV; i++)
        n += st.ctx_refs[i];
    pthread_mutex_unlock(&fk_lock);
    return n;
}

size_t fakecuda_used_memory(void)
{
    fk_lock_all();
    size_t n = st.used;
    pthread_mutex_unlock(&fk_lock);
    return n;
}

/* --- initialisation, devices, errors ------------------------------------------------------ */

CUresult cuInit(unsigned int flags)
{
    ENTER(cuInit);
    if (flags != 0)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    if (st.device_count == 0)
        return fk_leave(CUDA_ERROR_NO_DEVICE);
    st.initialized = 1;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuDriverGetVersion(int *version)
{
    ENTER(cuDriverGetVersion);
    if (!version)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    *version = 12040;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuDeviceGetCount(int *count)
{
    ENTER(cuDeviceGetCount);
    if (!count)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    if (!st.initialized)
        return fk_leave(CUDA_ERROR_NOT_INITIALIZED);
    *count = st.device_count;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    ENTER(cuDeviceGet);
    if (!device)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    CUresult r = need_device(ordinal);
    if (r == CUDA_SUCCESS)
        *device = ordinal;
    return fk_leave(r);
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    ENTER(cuDeviceGetName);
    if (!name || len <= 0)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    CUresult r = need_device(dev);
    if (r == CUDA_SUCCESS)
        snprintf(name, (size_t)len, "gpukit fake GPU %d", dev);
    return fk_leave(r);
}

CUresult cuDeviceGetAttribute(int *value, int attrib, CUdevice dev)
{
    ENTER(cuDeviceGetAttribute);
    if (!value)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    CUresult r = need_device(dev);
    if (r != CUDA_SUCCESS)
        return fk_leave(r);
    switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
        *value = 132;
        break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
        *value = 9;
        break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
        *value = 0;
        break;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
        *value = st.vmm;
        break;
    default:
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    }
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    ENTER(cuDeviceTotalMem_v2);
    if (!bytes)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    CUresult r = need_device(dev);
    if (r == CUDA_SUCCESS)
        *bytes = st.total;
    return fk_leave(r);
}

CUresult cuGetErrorName(CUresult error, const char **text)
{
    ENTER(cuGetErrorName);
    if (!text)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    switch (error) {
#define FK_ERR_NAME(code, str)                                                                     \
    case code:                                                                                     \
        *text = #code;                                                                             \
        return fk_leave(CUDA_SUCCESS);
        FK_ERRORS(FK_ERR_NAME)
#undef FK_ERR_NAME
    default:
        *text = NULL;
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    }
}

CUresult cuGetErrorString(CUresult error, const char **text)
{
    ENTER(cuGetErrorString);
    if (!text)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    switch (error) {
#define FK_ERR_TEXT(code, str)                                                                     \
    case code:                                                                                     \
        *text = str;                                                                               \
        return fk_leave(CUDA_SUCCESS);
        FK_ERRORS(FK_ERR_TEXT)
#undef FK_ERR_TEXT
    default:
        *text = NULL;
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    }
}

/* --- contexts ---------------------------------------------------------------------------- */

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
    ENTER(cuDevicePrimaryCtxRetain);
    if (!ctx)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    CUresult r = need_device(dev);
    if (r != CUDA_SUCCESS)
        return fk_leave(r);
    st.ctx_refs[dev]++;
    *ctx = &fk_ctx[dev];
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    ENTER(cuDevicePrimaryCtxRelease_v2);
    CUresult r = need_device(dev);
    if (r != CUDA_SUCCESS)
        return fk_leave(r);
    if (st.ctx_refs[dev] <= 0)
        return fk_leave(CUDA_ERROR_INVALID_CONTEXT);
    st.ctx_refs[dev]--;
    return fk_leave(CUDA_SUCCESS);
}

static int valid_ctx(CUcontext ctx)
{
    for (int i = 0; i < FK_MAXDEV; i++)
        if (ctx == &fk_ctx[i])
            return st.ctx_refs[i] > 0;
    return 0;
}

CUresult cuCtxGetCurrent(CUcontext *ctx)
{
    ENTER(cuCtxGetCurrent);
    if (!ctx)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    if (!st.initialized)
        return fk_leave(CUDA_ERROR_NOT_INITIALIZED);
    *ctx = tls_depth ? tls_ctx[tls_depth - 1] : NULL;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
    ENTER(cuCtxSetCurrent);
    if (!st.initialized)
        return fk_leave(CUDA_ERROR_NOT_INITIALIZED);
    if (ctx && !valid_ctx(ctx))
        return fk_leave(CUDA_ERROR_INVALID_CONTEXT);
    if (!ctx) {
        if (tls_depth)
            tls_depth--;
    } else if (tls_depth == 0) {
        tls_ctx[tls_depth++] = ctx;
    } else {
        tls_ctx[tls_depth - 1] = ctx;
    }
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    ENTER(cuCtxPushCurrent_v2);
    if (!st.initialized)
        return fk_leave(CUDA_ERROR_NOT_INITIALIZED);
    if (!ctx || !valid_ctx(ctx))
        return fk_leave(CUDA_ERROR_INVALID_CONTEXT);
    if (tls_depth == (int)(sizeof tls_ctx / sizeof tls_ctx[0]))
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    tls_ctx[tls_depth++] = ctx;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuCtxPopCurrent_v2(CUcontext *ctx)
{
    ENTER(cuCtxPopCurrent_v2);
    if (!st.initialized)
        return fk_leave(CUDA_ERROR_NOT_INITIALIZED);
    if (tls_depth == 0)
        return fk_leave(CUDA_ERROR_INVALID_CONTEXT);
    CUcontext top = tls_ctx[--tls_depth];
    if (ctx)
        *ctx = top;
    return fk_leave(CUDA_SUCCESS);
}

/* --- memory ------------------------------------------------------------------------------ */

CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes)
{
    ENTER(cuMemGetInfo_v2);
    NEED_CTX();
    if (!free_bytes || !total_bytes)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    *free_bytes = st.total > st.used ? st.total - st.used : 0;
    *total_bytes = st.total;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size)
{
    ENTER(cuMemAlloc_v2);
    NEED_CTX();
    if (!dptr || size == 0)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    if (size > st.total - st.used)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    fk_block *b = calloc(1, sizeof *b);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (!b || p == MAP_FAILED) {
        free(b);
        if (p != MAP_FAILED)
            munmap(p, size);
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    }
    b->base = p;
    b->size = size;
    b->next = st.allocs;
    st.allocs = b;
    st.used += size;
    *dptr = (CUdeviceptr)(uintptr_t)p;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    ENTER(cuMemFree_v2);
    NEED_CTX();
    for (fk_block **pp = &st.allocs; *pp; pp = &(*pp)->next) {
        fk_block *b = *pp;
        if ((uintptr_t)b->base == dptr) {
            *pp = b->next;
            st.used -= b->size;
            munmap(b->base, b->size);
            free(b);
            return fk_leave(CUDA_SUCCESS);
        }
    }
    return fk_leave(CUDA_ERROR_INVALID_VALUE);
}

CUresult cuMemHostAlloc(void **ptr, size_t size, unsigned int flags)
{
    ENTER(cuMemHostAlloc);
    NEED_CTX();
    unsigned known =
        CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED;
    if (!ptr || size == 0 || (flags & ~known))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    fk_block *b = calloc(1, sizeof *b);
    void *p = NULL;
    if (!b || posix_memalign(&p, 4096, size) != 0) {
        free(b);
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    }
    b->base = p;
    b->size = size;
    b->next = st.hosts;
    st.hosts = b;
    *ptr = p;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemFreeHost(void *ptr)
{
    ENTER(cuMemFreeHost);
    NEED_CTX();
    for (fk_block **pp = &st.hosts; *pp; pp = &(*pp)->next) {
        fk_block *b = *pp;
        if (b->base == ptr) {
            *pp = b->next;
            free(b->base);
            free(b);
            return fk_leave(CUDA_SUCCESS);
        }
    }
    return fk_leave(CUDA_ERROR_INVALID_VALUE);
}

/* --- streams ----------------------------------------------------------------------------- */

CUresult cuStreamCreate(CUstream *stream, unsigned int flags)
{
    ENTER(cuStreamCreate);
    NEED_CTX();
    if (!stream || (flags & ~CU_STREAM_NON_BLOCKING))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    s->magic = FK_MAGIC_S;
    s->next = st.streams;
    st.streams = s;
    *stream = s;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuStreamDestroy_v2(CUstream stream)
{
    ENTER(cuStreamDestroy_v2);
    NEED_CTX();
    struct CUstream_st *s = stream ? find_stream(stream) : NULL;
    if (!s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    s->destroyed = 1; /* its queued work still runs */
    progress();
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuStreamQuery(CUstream stream)
{
    ENTER(cuStreamQuery);
    NEED_CTX();
    struct CUstream_st *s = find_stream(stream);
    if (!s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    progress();
    return fk_leave(s->head ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS);
}

CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int flags)
{
    ENTER(cuStreamWaitEvent);
    NEED_CTX();
    struct CUstream_st *s = find_stream(stream);
    struct CUevent_st *e = find_event(event);
    if (!s || !e)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    if (flags != 0)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    if (e->done == e->gen)
        return fk_leave(CUDA_SUCCESS);
    e->refs++;
    return fk_leave(enqueue(s, (fk_op){.kind = OP_WAIT, .ev = e, .gen = e->gen}));
}

CUresult cuLaunchHostFunc(CUstream stream, CUhostFn fn, void *user)
{
    ENTER(cuLaunchHostFunc);
    NEED_CTX();
    struct CUstream_st *s = find_stream(stream);
    if (!s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    if (!fn)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    return fk_leave(enqueue(s, (fk_op){.kind = OP_HOSTFN, .fn = fn, .user = user}));
}

/* --- events ------------------------------------------------------------------------------ */

CUresult cuEventCreate(CUevent *event, unsigned int flags)
{
    ENTER(cuEventCreate);
    NEED_CTX();
    if (!event || (flags & ~0x7u))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    struct CUevent_st *e = calloc(1, sizeof *e);
    if (!e)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    e->magic = FK_MAGIC_E;
    e->next = st.events;
    st.events = e;
    *event = e;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuEventDestroy_v2(CUevent event)
{
    ENTER(cuEventDestroy_v2);
    NEED_CTX();
    struct CUevent_st *e = find_event(event);
    if (!e)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    e->destroyed = 1;
    progress();
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuEventRecord(CUevent event, CUstream stream)
{
    ENTER(cuEventRecord);
    NEED_CTX();
    struct CUevent_st *e = find_event(event);
    struct CUstream_st *s = find_stream(stream);
    if (!e || !s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    e->gen++;
    e->refs++;
    return fk_leave(enqueue(s, (fk_op){.kind = OP_RECORD, .ev = e, .gen = e->gen}));
}

CUresult cuEventQuery(CUevent event)
{
    ENTER(cuEventQuery);
    NEED_CTX();
    struct CUevent_st *e = find_event(event);
    if (!e)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    progress();
    return fk_leave(e->done == e->gen ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY);
}

/* --- copies ------------------------------------------------------------------------------ */

static CUresult copy(struct CUstream_st *s, void *dst, const void *src, size_t n)
{
    if (n == 0)
        return CUDA_SUCCESS;
    return enqueue(s, (fk_op){.kind = OP_COPY, .dst = dst, .src = src, .n = n});
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t size, CUstream stream)
{
    ENTER(cuMemcpyHtoDAsync_v2);
    NEED_CTX();
    struct CUstream_st *s = find_stream(stream);
    if (!s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    if (!src || !dev_range_ok(dst, size, 1))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    return fk_leave(copy(s, (void *)(uintptr_t)dst, src, size));
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t size, CUstream stream)
{
    ENTER(cuMemcpyDtoHAsync_v2);
    NEED_CTX();
    struct CUstream_st *s = find_stream(stream);
    if (!s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    if (!dst || !dev_range_ok(src, size, 0))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    return fk_leave(copy(s, dst, (const void *)(uintptr_t)src, size));
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t size, CUstream stream)
{
    ENTER(cuMemcpyDtoDAsync_v2);
    NEED_CTX();
    struct CUstream_st *s = find_stream(stream);
    if (!s)
        return fk_leave(CUDA_ERROR_INVALID_HANDLE);
    if (!dev_range_ok(dst, size, 1) || !dev_range_ok(src, size, 0))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    return fk_leave(copy(s, (void *)(uintptr_t)dst, (const void *)(uintptr_t)src, size));
}

/* --- virtual memory ---------------------------------------------------------------------- */
#ifndef FAKECUDA_NO_VMM

/* The checks the driver makes on an allocation property struct. */
static int prop_ok(const CUmemAllocationProp *p)
{
    if (!p || p->type != CU_MEM_ALLOCATION_TYPE_PINNED)
        return 0;
    if (p->requestedHandleTypes != CU_MEM_HANDLE_TYPE_NONE &&
        p->requestedHandleTypes != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return 0;
    if (p->location.type != CU_MEM_LOCATION_TYPE_DEVICE || p->location.id < 0 ||
        p->location.id >= st.device_count)
        return 0;
    if (p->win32HandleMetaData || p->allocFlags.compressionType > 1 || p->allocFlags.usage)
        return 0;
    for (size_t i = 0; i < sizeof p->allocFlags.reserved; i++)
        if (p->allocFlags.reserved[i])
            return 0;
    return st.vmm;
}

static fk_resv *find_resv(const char *p, size_t size)
{
    for (fk_resv *r = st.resvs; r; r = r->next)
        if (p >= r->base && p < r->base + r->size && size <= (size_t)(r->base + r->size - p))
            return r;
    return NULL;
}

CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                       int option)
{
    ENTER(cuMemGetAllocationGranularity);
    if (!st.initialized)
        return fk_leave(CUDA_ERROR_NOT_INITIALIZED);
    if (!granularity || !prop_ok(prop) ||
        (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
         option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    *granularity = FK_GRANULARITY;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags)
{
    ENTER(cuMemAddressReserve);
    NEED_CTX();
    (void)addr; /* a hint the driver may ignore */
    if (!ptr || size == 0 || size % FK_GRANULARITY || flags || (alignment & (alignment - 1)) != 0)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    size_t align = alignment > FK_GRANULARITY ? alignment : FK_GRANULARITY;
    fk_resv *r = calloc(1, sizeof *r);
    if (!r)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    r->rawsize = size + align;
    r->raw = mmap(NULL, r->rawsize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r->raw == MAP_FAILED) {
        free(r);
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    }
    uintptr_t base = ((uintptr_t)r->raw + align - 1) & ~(uintptr_t)(align - 1);
    r->base = (char *)base;
    r->size = size;
    r->next = st.resvs;
    st.resvs = r;
    *ptr = (CUdeviceptr)base;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    ENTER(cuMemAddressFree);
    NEED_CTX();
    for (fk_resv **pp = &st.resvs; *pp; pp = &(*pp)->next) {
        fk_resv *r = *pp;
        if ((uintptr_t)r->base != ptr)
            continue;
        if (r->size != size || r->maps) /* whole range, nothing mapped */
            return fk_leave(CUDA_ERROR_INVALID_VALUE);
        *pp = r->next;
        munmap(r->raw, r->rawsize);
        free(r);
        return fk_leave(CUDA_SUCCESS);
    }
    return fk_leave(CUDA_ERROR_INVALID_VALUE);
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                     const CUmemAllocationProp *prop, unsigned long long flags)
{
    ENTER(cuMemCreate);
    NEED_CTX();
    if (!handle || size == 0 || size % FK_GRANULARITY || flags || !prop_ok(prop))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    if (size > st.total - st.used)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    fk_phys *p = calloc(1, sizeof *p);
    if (!p)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    p->size = size;
    p->next = st.phys;
    st.phys = p;
    st.used += size;
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)p;
    return fk_leave(CUDA_SUCCESS);
}

static fk_phys *find_phys(CUmemGenericAllocationHandle h)
{
    for (fk_phys *p = st.phys; p; p = p->next)
        if ((uintptr_t)p == h && !p->released)
            return p;
    return NULL;
}

/* Frees a physical allocation once it is released and no longer mapped. */
static void phys_reap(fk_phys *dead)
{
    if (!dead->released || dead->mapped)
        return;
    for (fk_phys **pp = &st.phys; *pp; pp = &(*pp)->next) {
        if (*pp == dead) {
            *pp = dead->next;
            st.used -= dead->size;
            free(dead);
            return;
        }
    }
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    ENTER(cuMemRelease);
    NEED_CTX();
    fk_phys *p = find_phys(handle);
    if (!p)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    p->released = 1;
    phys_reap(p);
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags)
{
    ENTER(cuMemMap);
    NEED_CTX();
    char *addr = (char *)(uintptr_t)ptr;
    fk_phys *p = find_phys(handle);
    fk_resv *r = find_resv(addr, size);
    if (!p || !r || flags || size == 0 || size % FK_GRANULARITY || ptr % FK_GRANULARITY ||
        offset % FK_GRANULARITY || offset > p->size || size > p->size - offset)
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    for (fk_map *m = r->maps; m; m = m->next)
        if (addr < m->addr + m->size && m->addr < addr + size)
            return fk_leave(CUDA_ERROR_INVALID_VALUE); /* overlaps a mapping */
    fk_map *m = calloc(1, sizeof *m);
    if (!m)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    m->addr = addr;
    m->size = size;
    m->phys = p;
    m->next = r->maps;
    r->maps = m;
    p->mapped++;
    return fk_leave(CUDA_SUCCESS);
}

/* The mappings that exactly tile [addr, addr + size) in `r`, or 0 when they do not. */
static int tiles(fk_resv *r, char *addr, size_t size)
{
    char *x = addr;
    while (x < addr + size) {
        fk_map *m = r->maps;
        while (m && m->addr != x)
            m = m->next;
        if (!m || m->size > (size_t)(addr + size - x))
            return 0;
        x += m->size;
    }
    return 1;
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
    ENTER(cuMemSetAccess);
    NEED_CTX();
    char *addr = (char *)(uintptr_t)ptr;
    fk_resv *r = find_resv(addr, size);
    if (!r || !desc || count == 0 || size == 0 || !tiles(r, addr, size))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    int access = -1;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc[i].location.id < 0 ||
            desc[i].location.id >= st.device_count)
            return fk_leave(CUDA_ERROR_INVALID_VALUE);
        if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
            desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
            desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            return fk_leave(CUDA_ERROR_INVALID_VALUE);
        access = desc[i].flags;
    }
    int prot = access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE ? PROT_READ | PROT_WRITE
               : access == CU_MEM_ACCESS_FLAGS_PROT_READ    ? PROT_READ
                                                            : PROT_NONE;
    if (mprotect(addr, size, prot) != 0)
        return fk_leave(CUDA_ERROR_OUT_OF_MEMORY);
    for (fk_map *m = r->maps; m; m = m->next)
        if (m->addr >= addr && m->addr < addr + size)
            m->access = access;
    return fk_leave(CUDA_SUCCESS);
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    ENTER(cuMemUnmap);
    NEED_CTX();
    char *addr = (char *)(uintptr_t)ptr;
    fk_resv *r = find_resv(addr, size);
    if (!r || size == 0 || !tiles(r, addr, size))
        return fk_leave(CUDA_ERROR_INVALID_VALUE);
    for (fk_map **pp = &r->maps; *pp;) {
        fk_map *m = *pp;
        if (m->addr >= addr && m->addr < addr + size) {
            *pp = m->next;
            m->phys->mapped--;
            phys_reap(m->phys);
            free(m);
        } else {
            pp = &m->next;
        }
    }
    /* The pages lose their contents and become inaccessible again. */
    mprotect(addr, size, PROT_NONE);
    madvise(addr, size, MADV_DONTNEED);
    return fk_leave(CUDA_SUCCESS);
}

#endif /* FAKECUDA_NO_VMM */
