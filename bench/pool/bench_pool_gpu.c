/* The caching pool against the CUDA driver's own allocators on a real GPU, in one run: each trace
 * (the real CNN training trace and a synthetic transformer trace) is replayed on the default
 * stream through (a) the pool's `default` preset, (b) its `pytorch` preset, (c) cuMemAlloc_v2 /
 * cuMemFree_v2 per call, and (d) cuMemAllocAsync / cuMemFreeAsync on a stream (the driver's
 * stream-ordered pool, release threshold raised so it keeps its memory, as PyTorch's
 * cudaMallocAsync backend does) when the driver has them. Per allocator: ns per allocation and per
 * free (median and p99 over the warm rounds), peak reserved bytes, peak device memory in use
 * (cuMemGetInfo during the first round), driver allocator calls in the first round and per warm
 * round, and the ratios against (c). No CUDA headers: the baselines load libcuda.so.1
 * (GK_CUDA_LIBRARY overrides) with local declarations.
 * Usage: bench_pool_gpu [--device SPEC] [--rounds N] [--layers L] [--batch B] [CNN_TRACE.csv]
 *        (defaults cuda:0, 5 rounds (the first one cold), the synthetic trace's defaults of
 *        gk_synth_config_default, tests/data/cnn_train_trace.csv) */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "gpukit/gpukit.h"
#include "pool_seq.h"

/* --- the driver, loaded by hand --------------------------------------------------------------- */

typedef int cu_result;
typedef unsigned long long cu_ptr;
typedef void *cu_handle;

typedef struct cu_api {
    void *lib;
    cu_result (*init)(unsigned);
    cu_result (*device_get)(int *, int);
    cu_result (*primary_retain)(cu_handle *, int);
    cu_result (*primary_release)(int);
    cu_result (*ctx_set_current)(cu_handle);
    cu_result (*mem_get_info)(size_t *, size_t *);
    cu_result (*mem_alloc)(cu_ptr *, size_t);
    cu_result (*mem_free)(cu_ptr);
    cu_result (*stream_create)(cu_handle *, unsigned);
    cu_result (*stream_destroy)(cu_handle);
    cu_result (*stream_query)(cu_handle);
    /* optional: stream-ordered allocation */
    cu_result (*alloc_async)(cu_ptr *, size_t, cu_handle);
    cu_result (*free_async)(cu_ptr, cu_handle);
    cu_result (*default_pool)(cu_handle *, int);
    cu_result (*pool_set_attr)(cu_handle, int, void *);
    cu_result (*pool_get_attr)(cu_handle, int, void *);
    cu_result (*pool_trim)(cu_handle, size_t);
    int device;
    cu_handle ctx, stream, mempool;
} cu_api;

#define CU_ERROR_NOT_READY                600
#define CU_STREAM_NON_BLOCKING            1
#define CU_MEMPOOL_ATTR_RELEASE_THRESHOLD 4
#define CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH 6

static void *sym(cu_api *cu, const char *name, int required)
{
    void *p = dlsym(cu->lib, name);
    if (!p && required)
        fprintf(stderr, "bench_pool_gpu: the driver library lacks %s\n", name);
    return p;
}

#define LOAD(field, name, req)                                                                     \
    do {                                                                                           \
        void *p_ = sym(cu, name, req);                                                             \
        if (!p_ && (req))                                                                          \
            return -1;                                                                             \
        memcpy(&cu->field, &p_, sizeof p_);                                                        \
    } while (0)

static int cu_load(cu_api *cu, int device)
{
    const char *path = getenv("GK_CUDA_LIBRARY");
    if (!path || !*path)
        path = "libcuda.so.1";
    cu->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!cu->lib) {
        fprintf(stderr, "bench_pool_gpu: cannot load %s: %s\n", path, dlerror());
        return -1;
    }
    LOAD(init, "cuInit", 1);
    LOAD(device_get, "cuDeviceGet", 1);
    LOAD(primary_retain, "cuDevicePrimaryCtxRetain", 1);
    LOAD(primary_release, "cuDevicePrimaryCtxRelease_v2", 1);
    LOAD(ctx_set_current, "cuCtxSetCurrent", 1);
    LOAD(mem_get_info, "cuMemGetInfo_v2", 1);
    LOAD(mem_alloc, "cuMemAlloc_v2", 1);
    LOAD(mem_free, "cuMemFree_v2", 1);
    LOAD(stream_create, "cuStreamCreate", 1);
    LOAD(stream_destroy, "cuStreamDestroy_v2", 1);
    LOAD(stream_query, "cuStreamQuery", 1);
    LOAD(alloc_async, "cuMemAllocAsync", 0);
    LOAD(free_async, "cuMemFreeAsync", 0);
    LOAD(default_pool, "cuDeviceGetDefaultMemPool", 0);
    LOAD(pool_set_attr, "cuMemPoolSetAttribute", 0);
    LOAD(pool_get_attr, "cuMemPoolGetAttribute", 0);
    LOAD(pool_trim, "cuMemPoolTrimTo", 0);
    int dev = 0;
    if (cu->init(0) || cu->device_get(&dev, device) || cu->primary_retain(&cu->ctx, dev) ||
        cu->ctx_set_current(cu->ctx)) {
        fprintf(stderr, "bench_pool_gpu: the driver refused device %d\n", device);
        return -1;
    }
    cu->device = dev;
    return 0;
}

static int cu_stream_sync(cu_api *cu, cu_handle s)
{
    cu_result r;
    while ((r = cu->stream_query(s)) == CU_ERROR_NOT_READY)
        ;
    return r;
}

static size_t cu_used(cu_api *cu)
{
    size_t f = 0, t = 0;
    if (cu->mem_get_info(&f, &t) != 0)
        return 0;
    return t - f;
}

/* --- allocators --------------------------------------------------------------------------------- */

typedef enum kind { K_POOL_DEFAULT, K_POOL_PYTORCH, K_CU_ALLOC, K_CU_ASYNC, K_COUNT } kind;

static const char *const kind_name[K_COUNT] = {
    "(a) pool, default preset",
    "(b) pool, pytorch preset",
    "(c) cuMemAlloc/cuMemFree",
    "(d) cuMemAllocAsync/FreeAsync",
};

typedef struct impl {
    kind k;
    gk_pool *pool;
    cu_api *cu;
    uint64_t calls; /* driver allocator calls (c, d) */
} impl;

static int do_alloc(impl *m, size_t size, void **p)
{
    cu_ptr d = 0;
    cu_result r;
    switch (m->k) {
    case K_POOL_DEFAULT:
    case K_POOL_PYTORCH:
        return gk_pool_malloc(m->pool, size, NULL, p);
    case K_CU_ALLOC:
        m->calls++;
        r = m->cu->mem_alloc(&d, size);
        break;
    default:
        m->calls++;
        r = m->cu->alloc_async(&d, size, m->cu->stream);
        break;
    }
    *p = (void *)(uintptr_t)d;
    return r ? -1 : 0;
}

static int do_free(impl *m, void *p)
{
    switch (m->k) {
    case K_POOL_DEFAULT:
    case K_POOL_PYTORCH:
        return gk_pool_free(m->pool, p);
    case K_CU_ALLOC:
        m->calls++;
        return m->cu->mem_free((cu_ptr)(uintptr_t)p) ? -1 : 0;
    default:
        m->calls++;
        return m->cu->free_async((cu_ptr)(uintptr_t)p, m->cu->stream) ? -1 : 0;
    }
}

static uint64_t device_calls(impl *m)
{
    if (m->pool) {
        gk_pool_stats s;
        gk_pool_get_stats(m->pool, &s);
        return s.num_device_alloc + s.num_device_free;
    }
    return m->calls;
}

typedef struct result {
    int ran;
    double alloc_p50, alloc_p99, free_p50, free_p99, ns_per_op;
    uint64_t peak_reserved, peak_used, calls_cold, calls_warm;
    size_t failed;
} result;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct(uint32_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

/* Replays s `rounds` times. Round 0 is cold and samples cuMemGetInfo after every allocation (not
 * timed); the other rounds are timed op by op. */
static int replay(impl *m, const seq *s, int rounds, result *out)
{
    memset(out, 0, sizeof *out);
    void **slots = calloc(s->slots ? s->slots : 1, sizeof *slots);
    size_t warm_allocs = s->allocs * (size_t)(rounds - 1),
           warm_frees = (s->n - s->allocs) * (size_t)(rounds - 1);
    uint32_t *ta = malloc((warm_allocs + 1) * sizeof *ta),
             *tf = malloc((warm_frees + 1) * sizeof *tf);
    if (!slots || !ta || !tf) {
        free(slots);
        free(ta);
        free(tf);
        return -1;
    }
    size_t na = 0, nf = 0, base = cu_used(m->cu);
    uint64_t total_ns = 0, c0 = device_calls(m);
    for (int round = 0; round < rounds; round++) {
        if (round == 1)
            out->calls_cold = device_calls(m) - c0;
        uint64_t r0 = gk_bench_now_ns();
        for (size_t i = 0; i < s->n; i++) {
            const op *o = &s->ops[i];
            uint64_t t0 = gk_bench_now_ns();
            if (o->size) {
                void *p = NULL;
                int rc = do_alloc(m, o->size, &p);
                uint64_t t1 = gk_bench_now_ns();
                slots[o->slot] = rc == 0 ? p : NULL;
                if (rc != 0)
                    out->failed++;
                if (round > 0)
                    ta[na++] = (uint32_t)(t1 - t0 > UINT32_MAX ? UINT32_MAX : t1 - t0);
                else {
                    size_t used = cu_used(m->cu);
                    if (used > base && used - base > out->peak_used)
                        out->peak_used = used - base;
                }
            } else {
                if (slots[o->slot])
                    do_free(m, slots[o->slot]);
                uint64_t t1 = gk_bench_now_ns();
                slots[o->slot] = NULL;
                if (round > 0)
                    tf[nf++] = (uint32_t)(t1 - t0 > UINT32_MAX ? UINT32_MAX : t1 - t0);
            }
        }
        for (unsigned i = 0; i < s->slots; i++) { /* what the trace never frees */
            if (slots[i])
                do_free(m, slots[i]);
            slots[i] = NULL;
        }
        if (m->k == K_CU_ASYNC)
            cu_stream_sync(m->cu, m->cu->stream);
        if (round > 0)
            total_ns += gk_bench_now_ns() - r0;
    }
    uint64_t all = device_calls(m) - c0;
    out->calls_warm = rounds > 1 ? (all - out->calls_cold) / (uint64_t)(rounds - 1) : 0;
    qsort(ta, na, sizeof *ta, cmp_u32);
    qsort(tf, nf, sizeof *tf, cmp_u32);
    out->alloc_p50 = pct(ta, na, 0.50);
    out->alloc_p99 = pct(ta, na, 0.99);
    out->free_p50 = pct(tf, nf, 0.50);
    out->free_p99 = pct(tf, nf, 0.99);
    out->ns_per_op = na + nf ? (double)total_ns / (double)(na + nf) : 0;
    out->ran = 1;
    free(slots);
    free(ta);
    free(tf);
    return 0;
}

static int run_one(kind k, gk_device *dev, cu_api *cu, const seq *s, int rounds, result *out)
{
    impl m = {.k = k, .cu = cu};
    memset(out, 0, sizeof *out);
    if (k == K_POOL_DEFAULT || k == K_POOL_PYTORCH) {
        gk_pool_config c;
        gk_pool_config_preset(&c, k == K_POOL_DEFAULT ? "default" : "pytorch");
        c.logger.level = GK_LOG_ERROR;
        if (gk_pool_create(dev, &c, &m.pool) != 0) {
            fprintf(stderr, "bench_pool_gpu: pool: %s\n", gk_last_error());
            return -1;
        }
        int rc = replay(&m, s, rounds, out);
        gk_pool_stats st;
        gk_pool_get_stats(m.pool, &st);
        out->peak_reserved = (uint64_t)st.reserved_bytes[GK_POOL_ALL].peak;
        gk_pool_destroy(m.pool);
        return rc;
    }
    if (k == K_CU_ASYNC) {
        uint64_t zero = 0;
        if (cu->pool_set_attr(cu->mempool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &zero) != 0)
            return -1;
    }
    int rc = replay(&m, s, rounds, out);
    if (k == K_CU_ALLOC) {
        out->peak_reserved = out->peak_used;
    } else {
        uint64_t high = 0;
        if (cu->pool_get_attr(cu->mempool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &high) == 0)
            out->peak_reserved = high;
        cu->pool_trim(cu->mempool, 0);
    }
    return rc;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void report(const seq *s, const result *r)
{
    printf("\n%s: %zu allocations, %zu frees per round\n", s->name, s->allocs, s->n - s->allocs);
    printf("  %-30s %9s %9s %9s %9s %9s %11s %11s %8s %8s\n", "allocator", "alloc p50", "alloc p99",
           "free p50", "free p99", "ns/op", "peak resv", "peak used", "calls/1", "calls/w");
    for (int k = 0; k < K_COUNT; k++) {
        if (!r[k].ran)
            continue;
        printf("  %-30s %9.0f %9.0f %9.0f %9.0f %9.0f %10.1fM %10.1fM %8llu %8llu%s\n",
               kind_name[k], r[k].alloc_p50, r[k].alloc_p99, r[k].free_p50, r[k].free_p99,
               r[k].ns_per_op, (double)r[k].peak_reserved / (1 << 20),
               (double)r[k].peak_used / (1 << 20), (unsigned long long)r[k].calls_cold,
               (unsigned long long)r[k].calls_warm, r[k].failed ? "  (allocations failed)" : "");
    }
    const result *c = &r[K_CU_ALLOC];
    printf("  ratios vs (c) cuMemAlloc/cuMemFree (below 1: faster or smaller):\n");
    for (int k = 0; k < K_COUNT; k++) {
        if (!r[k].ran || k == K_CU_ALLOC)
            continue;
        printf("  %-30s alloc p50 x%.3f, free p50 x%.3f, ns/op x%.3f, peak reserved x%.3f\n",
               kind_name[k], ratio(r[k].alloc_p50, c->alloc_p50), ratio(r[k].free_p50, c->free_p50),
               ratio(r[k].ns_per_op, c->ns_per_op),
               ratio((double)r[k].peak_reserved, (double)c->peak_reserved));
    }
}

int main(int argc, char **argv)
{
    const char *spec = "cuda:0", *cnn = "tests/data/cnn_train_trace.csv";
    int rounds = 5;
    gk_synth_config sc;
    gk_synth_config_default(&sc);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
            spec = argv[++i];
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc)
            sc.layers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            sc.batch = atoi(argv[++i]);
        else if (argv[i][0] != '-')
            cnn = argv[i];
        else {
            fprintf(stderr, "usage: bench_pool_gpu [--device SPEC] [--rounds N] [--layers L] "
                            "[--batch B] [CNN_TRACE.csv]\n");
            return 2;
        }
    }
    if (rounds < 2 || rounds > 100) {
        fprintf(stderr, "bench_pool_gpu: --rounds must be 2..100 (one cold round, then warm)\n");
        return 2;
    }
    gk_device *dev = NULL;
    int rc = gk_device_open(spec, &dev);
    if (rc) {
        fprintf(stderr, "bench_pool_gpu: cannot open %s: %s\n", spec, gk_last_error());
        return rc == GK_ENOGPU ? 77 : 1;
    }
    gk_device_props props;
    gk_device_get_props(dev, &props);
    if (props.backend != GK_BACKEND_CUDA) {
        fprintf(stderr, "bench_pool_gpu: %s is not a cuda device\n", spec);
        gk_device_close(dev);
        return 2;
    }
    cu_api cu = {0};
    if (cu_load(&cu, props.index) != 0) {
        gk_device_close(dev);
        return 1;
    }
    int have_async = cu.alloc_async && cu.free_async && cu.default_pool && cu.pool_set_attr &&
                     cu.pool_get_attr && cu.pool_trim;
    char async_note[160] = "";
    if (have_async) {
        uint64_t keep = UINT64_MAX;
        if (cu.default_pool(&cu.mempool, cu.device) != 0 ||
            cu.pool_set_attr(cu.mempool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep) != 0) {
            have_async = 0;
            snprintf(async_note, sizeof async_note, "the device has no default memory pool");
        }
    } else {
        snprintf(async_note, sizeof async_note, "the driver library has no cuMemAllocAsync");
    }
    if (cu.stream_create(&cu.stream, CU_STREAM_NON_BLOCKING) != 0) {
        fprintf(stderr, "bench_pool_gpu: cuStreamCreate failed\n");
        return 1;
    }
    printf("bench_pool_gpu on %s (%s, %.1f GiB, driver %d), %d rounds (1 cold + %d timed)\n",
           props.spec, props.name, (double)props.total_memory / (1 << 30), props.driver_version,
           rounds, rounds - 1);
    printf("ns per call, median and p99 over the timed rounds; peak resv: the pool's peak reserved "
           "bytes, for (c) the peak of device memory in use, for (d) the driver pool's reserved "
           "high-water mark; peak used: cuMemGetInfo during the cold round; calls/1 and calls/w: "
           "driver allocator calls in the cold round and per warm round\n");
    if (!have_async)
        printf("(d) skipped: %s\n", async_note);

    char err[512];
    gk_trace *tc = NULL, *tt = NULL;
    if ((rc = gk_trace_read(cnn, &tc, err, sizeof err)) != 0) {
        if (rc == GK_ESYNTAX)
            fprintf(stderr, "bench_pool_gpu: %s\n", err);
        else
            fprintf(stderr, "bench_pool_gpu: cannot read %s: %s (give the CNN trace's path)\n", cnn,
                    gk_strerror(rc));
        return 1;
    }
    if (gk_trace_synth_transformer(&sc, &tt) != 0) {
        fprintf(stderr, "bench_pool_gpu: --layers and --batch must be positive\n");
        return 2;
    }
    seq seqs[2];
    char tname[160];
    snprintf(tname, sizeof tname,
             "transformer (synthetic: %d layers, hidden %d, seq %d, batch %d, %d steps)", sc.layers,
             sc.hidden, sc.seq, sc.batch, sc.steps);
    if (seq_from_trace(tc, "CNN training (tests/data/cnn_train_trace.csv)", &seqs[0]) ||
        seq_from_trace(tt, tname, &seqs[1]))
        return 1;
    int status = 0;
    for (int t = 0; t < 2; t++) {
        result r[K_COUNT];
        for (int k = 0; k < K_COUNT; k++) {
            if (k == K_CU_ASYNC && !have_async) {
                memset(&r[k], 0, sizeof r[k]);
                continue;
            }
            if (run_one((kind)k, dev, &cu, &seqs[t], rounds, &r[k]) != 0) {
                fprintf(stderr, "bench_pool_gpu: %s on %s failed\n", kind_name[k], seqs[t].name);
                status = 1;
            }
            if (r[k].failed)
                status = 1;
        }
        report(&seqs[t], r);
    }
    for (int t = 0; t < 2; t++)
        free(seqs[t].ops);
    gk_trace_free(tc);
    gk_trace_free(tt);
    cu.stream_destroy(cu.stream);
    cu.primary_release(cu.device);
    gk_device_close(dev);
    dlclose(cu.lib);
    return status;
}
