/* The pool on the cuda backend through the fake driver (tests/support/fake_cuda.c): cached reuse
 * with no new driver allocation, stream-aware reuse through pooled events, expandable segments
 * over the driver's virtual-memory API, the out-of-memory ladder when cuMemAlloc_v2 or cuMemCreate
 * fails, a driver without the virtual-memory API (expandable segments fall back to classic ones),
 * and a failure injected at every call of every driver function the pool reaches, each leaving no
 * leak and a usable pool.
 * gk-labels: unit */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda_api.h"
#include "fake_cuda.h"
#include "gk_test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* The fake's control API, found with dlsym in the library the backend loads. */
typedef struct fake_api {
    void *lib;
#define FK_FIELD(ret, name, params) ret(*name) params;
    FAKECUDA_CONTROL_FUNCS(FK_FIELD)
#undef FK_FIELD
} fake_api;

static fake_api fk, fk_novmm;

static void load_fake(fake_api *api, const char *path)
{
    api->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!api->lib)
        fail_msg("cannot load the fake driver %s: %s", path, dlerror());
    void *p;
#define FK_LOAD(ret, name, params)                                                                 \
    p = dlsym(api->lib, #name);                                                                    \
    assert_non_null(p);                                                                            \
    memcpy(&api->name, &p, sizeof p);
    FAKECUDA_CONTROL_FUNCS(FK_LOAD)
#undef FK_LOAD
}

static int group_setup(void **state)
{
    (void)state;
    gk_test_setenv("GK_CUDA_LIBRARY", NULL);
    gk_test_setenv("GK_SYNC_TIMEOUT", NULL);
    load_fake(&fk, gk_test_fake_cuda());
    load_fake(&fk_novmm, GK_TEST_FAKE_CUDA_NOVMM);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fk.fakecuda_reset();
    fk_novmm.fakecuda_reset();
    dlclose(fk.lib);
    dlclose(fk_novmm.lib);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    fk.fakecuda_reset();
    fk_novmm.fakecuda_reset();
    fk.fakecuda_set_total_memory(256 * MIB);
    return 0;
}

/* Every test destroys its pools and closes its devices: the fakes must hold nothing afterwards. */
static int teardown(void **state)
{
    (void)state;
    long live = fk.fakecuda_live_objects() + fk_novmm.fakecuda_live_objects();
    fk.fakecuda_reset();
    fk_novmm.fakecuda_reset();
    if (live != 0)
        fail_msg("%ld driver objects still alive after the test", live);
    return 0;
}

static gk_device *open_fake(const char *library)
{
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.cuda_library = library;
    cfg.sync_timeout = 5;
    gk_device *dev = NULL;
    int rc = gk_device_open_ex("cuda:0", &cfg, &dev);
    if (rc)
        fail_msg("gk_device_open_ex(cuda:0, %s): %s: %s", library, gk_err_name(rc),
                 gk_last_error());
    return dev;
}

static gk_pool *make_pool(gk_device *dev, const char *preset, const char *set)
{
    gk_pool_config c;
    GK_ASSERT_OK(gk_pool_config_preset(&c, preset));
    c.logger.level = GK_LOG_OFF;
    char err[256] = "";
    if (set && gk_pool_config_parse(&c, set, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    gk_pool *p = NULL;
    GK_ASSERT_OK(gk_pool_create(dev, &c, &p));
    return p;
}

static gk_pool_stats st(gk_pool *p)
{
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(p, &s));
    return s;
}

/* Writes a pattern through the driver and reads it back: all of [ptr, ptr+n) when small, else
 * three 256 KiB windows (the start, across the first 2 MiB granule boundary inside the block,
 * and the end), which keeps the test fast under valgrind. */
static void check_window(gk_device *dev, char *ptr, size_t n, unsigned seed)
{
    unsigned char *src = malloc(n), *dst = calloc(1, n);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)((i * 2654435761u + seed) >> 11);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, ptr, src, n, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, ptr, n, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 5.0));
    assert_memory_equal(src, dst, n);
    free(src);
    free(dst);
}

static void check_memory(gk_device *dev, void *ptr, size_t n, unsigned seed)
{
    const size_t w = 256 * KIB;
    char *p = ptr;
    if (n <= 3 * w) {
        check_window(dev, p, n, seed);
        return;
    }
    uintptr_t boundary = ((uintptr_t)p / (2 * MIB) + 1) * (2 * MIB);
    size_t mid = boundary - (uintptr_t)p >= w / 2 && boundary - (uintptr_t)p + w / 2 <= n
                     ? boundary - (uintptr_t)p - w / 2
                     : n / 2 - w / 2;
    check_window(dev, p, w, seed);
    check_window(dev, p + mid, w, seed + 1);
    check_window(dev, p + n - w, w, seed + 2);
}

/* --- cached reuse ------------------------------------------------------------------------ */

static void test_cached_reuse(void **state)
{
    (void)state;
    gk_device *dev = open_fake(gk_test_fake_cuda());
    gk_pool *p = make_pool(dev, "pytorch", NULL);
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(p, 4 * KIB, NULL, &a));  /* a 2 MiB small segment */
    GK_ASSERT_OK(gk_pool_malloc(p, 12 * MIB, NULL, &b)); /* its own 12 MiB segment */
    assert_int_equal(fk.fakecuda_calls("cuMemAlloc_v2"), 2);
    assert_int_equal(fk.fakecuda_used_memory(), 14 * MIB);
    check_memory(dev, a, 4 * KIB, 1);
    check_memory(dev, b, 12 * MIB, 2);
    GK_ASSERT_OK(gk_pool_free(p, a));
    GK_ASSERT_OK(gk_pool_free(p, b));
    assert_int_equal(fk.fakecuda_calls("cuMemFree_v2"), 0);

    /* A steady loop makes no driver allocation: every request is a cache hit. */
    for (int i = 0; i < 100; i++) {
        GK_ASSERT_OK(gk_pool_malloc(p, 4 * KIB, NULL, &c));
        assert_ptr_equal(c, a);
        GK_ASSERT_OK(gk_pool_malloc(p, 12 * MIB - 100, NULL, &b));
        GK_ASSERT_OK(gk_pool_free(p, c));
        GK_ASSERT_OK(gk_pool_free(p, b));
    }
    assert_int_equal(fk.fakecuda_calls("cuMemAlloc_v2"), 2);
    assert_int_equal(fk.fakecuda_calls("cuMemFree_v2"), 0);
    gk_pool_stats s = st(p);
    assert_int_equal(s.num_device_alloc, 2);
    assert_int_equal(s.num_cache_hits, 200);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 14 * MIB);
    assert_int_equal(s.reserved_bytes[GK_POOL_SMALL].current, 2 * MIB);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].peak, 12 * MIB + 4 * KIB);
    assert_int_equal(s.requested_bytes[GK_POOL_LARGE].allocated, 12 * MIB + 100 * (12 * MIB - 100));
    assert_true(s.backend_ns > 0);

    /* The device counters agree with the driver. */
    gk_device_counters dc;
    GK_ASSERT_OK(gk_device_get_counters(dev, &dc));
    assert_int_equal(dc.malloc_calls, 2);

    GK_ASSERT_OK(gk_pool_empty_cache(p));
    assert_int_equal(fk.fakecuda_calls("cuMemFree_v2"), 2);
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    assert_int_equal(st(p).reserved_bytes[GK_POOL_ALL].current, 0);
    gk_pool_destroy(p);
    gk_device_close(dev);
}

/* --- streams and events ------------------------------------------------------------------ */

static void test_stream_reuse_with_events(void **state)
{
    (void)state;
    gk_device *dev = open_fake(gk_test_fake_cuda());
    gk_pool *p = make_pool(dev, "pytorch", NULL);
    gk_stream *s1;
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    void *a, *x, *y;

    /* A block used on s1: freeing it records an event there; while s1's work is queued (the
     * fake stalled) the block is not handed out again. */
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_record_stream(p, a, s1));
    fk.fakecuda_stall(1);
    GK_ASSERT_OK(gk_pool_free(p, a));
    assert_int_equal(fk.fakecuda_calls("cuEventCreate"), 1);
    assert_int_equal(fk.fakecuda_calls("cuEventRecord"), 1);
    gk_pool_stats s = st(p);
    assert_int_equal(s.allocation[GK_POOL_ALL].current, 0);
    assert_int_equal(s.active[GK_POOL_ALL].current, 1);
    long queries = fk.fakecuda_calls("cuEventQuery");
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &x));
    assert_ptr_not_equal(x, a);
    assert_true(fk.fakecuda_calls("cuEventQuery") > queries); /* polled, not ready */

    /* Once s1's work has run, the next allocation polls the event and reuses the block. */
    fk.fakecuda_stall(0);
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &y));
    assert_ptr_equal(y, a);
    assert_int_equal(st(p).active[GK_POOL_ALL].current, 2);

    /* The second round takes the pooled event: no new driver event. */
    GK_ASSERT_OK(gk_pool_record_stream(p, y, s1));
    GK_ASSERT_OK(gk_pool_free(p, y));
    assert_int_equal(fk.fakecuda_calls("cuEventCreate"), 1);
    assert_int_equal(fk.fakecuda_calls("cuEventRecord"), 2);
    GK_ASSERT_OK(gk_pool_free(p, x));

    /* A block of s1's own pool is not reused by the default stream. */
    void *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(p, 4 * MIB, s1, &b));
    GK_ASSERT_OK(gk_pool_free(p, b));
    long allocs = fk.fakecuda_calls("cuMemAlloc_v2");
    GK_ASSERT_OK(gk_pool_malloc(p, 4 * MIB, NULL, &c));
    assert_ptr_not_equal(b, c);
    assert_int_equal(fk.fakecuda_calls("cuMemAlloc_v2"), allocs + 1);
    GK_ASSERT_OK(gk_pool_free(p, c));

    /* Destroying s1 hands its cached segment back to the driver. */
    long frees = fk.fakecuda_calls("cuMemFree_v2");
    GK_ASSERT_OK(gk_stream_destroy(dev, s1));
    assert_int_equal(fk.fakecuda_calls("cuMemFree_v2"), frees + 1);
    s = st(p);
    assert_int_equal(s.active[GK_POOL_ALL].current, 0);
    assert_int_equal(s.num_device_free, 1);
    gk_pool_destroy(p);
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    gk_device_close(dev);
}

/* --- expandable segments ----------------------------------------------------------------- */

static void test_expandable_vmm(void **state)
{
    (void)state;
    gk_device *dev = open_fake(gk_test_fake_cuda());
    gk_pool *p = make_pool(dev, "default", NULL);
    void *a, *b, *c;
    /* Creating the pool checked that a full range can be reserved (and gave it back). */
    assert_int_equal(fk.fakecuda_calls("cuMemAddressReserve"), 1);
    assert_int_equal(fk.fakecuda_calls("cuMemAddressFree"), 1);
    GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &a)); /* pages 0-1 of the large range */
    assert_int_equal(fk.fakecuda_calls("cuMemAddressReserve"), 2);
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), 2); /* one per 2 MiB granule */
    assert_int_equal(fk.fakecuda_calls("cuMemMap"), 2);
    assert_int_equal(fk.fakecuda_calls("cuMemSetAccess"), 1); /* one per contiguous run */
    assert_int_equal(fk.fakecuda_calls("cuMemAlloc_v2"), 0);
    assert_int_equal(fk.fakecuda_used_memory(), 4 * MIB);
    GK_ASSERT_OK(gk_pool_malloc(p, KIB, NULL, &b));     /* the small range: one page */
    GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &c)); /* [3, 6) MiB: maps page 2 only */
    assert_ptr_equal((char *)a + 3 * MIB, c);
    assert_int_equal(fk.fakecuda_calls("cuMemAddressReserve"), 3);
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), 4);
    gk_pool_stats s = st(p);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 8 * MIB);
    assert_int_equal(s.segment[GK_POOL_ALL].current, 2);
    assert_int_equal(fk.fakecuda_used_memory(), 8 * MIB);
    /* The blocks are real memory across granule boundaries. */
    check_memory(dev, a, 3 * MIB, 3);
    check_memory(dev, c, 3 * MIB, 4);
    check_memory(dev, b, KIB, 5);

    /* a's first page is under no live block once a is freed: empty_cache unmaps it alone. */
    GK_ASSERT_OK(gk_pool_free(p, a));
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    assert_int_equal(fk.fakecuda_calls("cuMemUnmap"), 1);
    assert_int_equal(fk.fakecuda_used_memory(), 6 * MIB);
    assert_int_equal(st(p).reserved_bytes[GK_POOL_ALL].current, 6 * MIB);
    check_memory(dev, c, 3 * MIB, 6);

    /* Mapped memory is reused before anything is mapped: the 3 MiB fit in the mapped pages 1-2
     * (the unmapped page 0 stays unmapped). */
    long creates = fk.fakecuda_calls("cuMemCreate");
    GK_ASSERT_OK(gk_pool_free(p, c));
    GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &c));
    assert_ptr_equal(c, (char *)a + 2 * MIB);
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), creates);
    check_memory(dev, c, 3 * MIB, 11);
    GK_ASSERT_OK(gk_pool_free(p, c));
    GK_ASSERT_OK(gk_pool_free(p, b));
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    gk_pool_destroy(p);
    assert_int_equal(fk.fakecuda_calls("cuMemAddressFree"), 3);
    gk_device_close(dev);
}

/* Without the driver's virtual-memory API (an old driver or a device without the attribute)
 * `expandable_segments=1` is ignored: the pool uses classic segments, as the pytorch preset. */
static void test_no_vmm_falls_back(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        fake_api *api = variant == 0 ? &fk_novmm : &fk;
        if (variant == 1)
            fk.fakecuda_set_vmm_supported(0);
        gk_device *dev = open_fake(variant == 0 ? GK_TEST_FAKE_CUDA_NOVMM : gk_test_fake_cuda());
        gk_pool *p = make_pool(dev, "default", "expandable_segments=1");
        void *a, *b;
        GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &a));
        GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &b));
        assert_int_equal(api->fakecuda_calls("cuMemAlloc_v2"), 1); /* one 20 MiB segment */
        assert_true(api->fakecuda_calls("cuMemAddressReserve") <= 0);
        gk_pool_stats s = st(p);
        assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 20 * MIB);
        assert_int_equal(s.inactive_split[GK_POOL_ALL].current, 1);
        check_memory(dev, b, 3 * MIB, 7);
        GK_ASSERT_OK(gk_pool_free(p, a));
        GK_ASSERT_OK(gk_pool_free(p, b));
        gk_pool_destroy(p);
        assert_int_equal(api->fakecuda_used_memory(), 0);
        gk_device_close(dev);
    }
}

/* --- out of memory ------------------------------------------------------------------------ */

static void test_oom_cumemalloc(void **state)
{
    (void)state;
    gk_device *dev = open_fake(gk_test_fake_cuda());
    gk_pool *p = make_pool(dev, "pytorch", NULL);
    void *a, *b;
    /* A cached 12 MiB segment: when the driver refuses once, the ladder frees it and retries. */
    GK_ASSERT_OK(gk_pool_malloc(p, 12 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(p, a));
    assert_int_equal(fk.fakecuda_fail("cuMemAlloc_v2", 1, CUDA_ERROR_OUT_OF_MEMORY), 0);
    GK_ASSERT_OK(gk_pool_malloc(p, 14 * MIB, NULL, &b));
    gk_pool_stats s = st(p);
    assert_int_equal(s.num_alloc_retries, 1);
    assert_int_equal(s.num_sync_all_streams, 1);
    assert_int_equal(s.num_ooms, 0);
    assert_int_equal(fk.fakecuda_calls("cuMemAlloc_v2"), 3);
    assert_int_equal(fk.fakecuda_calls("cuMemFree_v2"), 1);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 14 * MIB);

    /* A driver that keeps refusing: the ladder ends in GK_EDEVOOM and a report. */
    assert_int_equal(fk.fakecuda_fail("cuMemAlloc_v2", 0, CUDA_ERROR_OUT_OF_MEMORY), 0);
    GK_ASSERT_ERR(gk_pool_malloc_tagged(p, 30 * MIB, NULL, "weights", &a), GK_EDEVOOM);
    assert_null(a);
    s = st(p);
    assert_int_equal(s.num_ooms, 1);
    assert_int_equal(s.num_alloc_retries, 2);
    char rep[4096];
    size_t n = gk_pool_oom_report(p, rep, sizeof rep);
    assert_true(n > 0 && n < sizeof rep);
    GK_ASSERT_CONTAINS(rep, "out of device memory. Tried to allocate 30.00 MiB");
    GK_ASSERT_CONTAINS(rep, "Device cuda:0 has a total capacity of 256.00 MiB");
    GK_ASSERT_CONTAINS(rep, "Largest live blocks:");
    GK_ASSERT_CONTAINS(rep, "Hint:");
    GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_OUT_OF_MEMORY");
    /* b is untouched and the pool works again once the driver does. */
    check_memory(dev, b, 14 * MIB, 8);
    assert_int_equal(fk.fakecuda_fail("cuMemAlloc_v2", 0, CUDA_SUCCESS), 0);
    GK_ASSERT_OK(gk_pool_malloc(p, 30 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(p, a));
    GK_ASSERT_OK(gk_pool_free(p, b));

    /* A request above the driver's capacity fails the same way, without injection. */
    GK_ASSERT_ERR(gk_pool_malloc(p, 300 * MIB, NULL, &a), GK_EDEVOOM);
    gk_pool_oom_report(p, rep, sizeof rep);
    GK_ASSERT_CONTAINS(rep, "Tried to allocate 300.00 MiB");
    assert_int_equal(st(p).num_ooms, 2);
    gk_pool_destroy(p);
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    gk_device_close(dev);
}

static void test_oom_cumemcreate(void **state)
{
    (void)state;
    gk_device *dev = open_fake(gk_test_fake_cuda());
    gk_pool *p = make_pool(dev, "default", NULL);
    void *a, *b, *s1;
    GK_ASSERT_OK(gk_pool_malloc(p, 6 * MIB, NULL, &a)); /* pages 0-2 */
    GK_ASSERT_OK(gk_pool_malloc(p, KIB, NULL, &s1));    /* a small page, kept live */
    GK_ASSERT_OK(gk_pool_free(p, a));
    /* The mapping of pages 3-4 (after a's free pages 0-2) fails once: the driver rolls the run
     * back, and the ladder goes on to rung 6, which unmaps the free pages 0-2 and gives the
     * emptied range back; the retry maps all five pages in a new range. */
    long creates = fk.fakecuda_calls("cuMemCreate");
    long reserves = fk.fakecuda_calls("cuMemAddressReserve");
    assert_int_equal(fk.fakecuda_fail("cuMemCreate", 1, CUDA_ERROR_OUT_OF_MEMORY), 0);
    GK_ASSERT_OK(gk_pool_malloc(p, 10 * MIB, NULL, &b));
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), creates + 1 + 5);
    assert_int_equal(fk.fakecuda_calls("cuMemAddressReserve"), reserves + 1);
    gk_pool_stats s = st(p);
    assert_int_equal(s.num_ooms, 0);
    assert_int_equal(s.num_alloc_retries, 1);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 12 * MIB);
    assert_int_equal(fk.fakecuda_used_memory(), 12 * MIB);
    check_memory(dev, b, 10 * MIB, 9);

    /* A driver that keeps refusing: the ladder unmaps the free pages (rung 6), retries, and ends
     * in GK_EDEVOOM with a report; nothing stays mapped half way. */
    GK_ASSERT_OK(gk_pool_free(p, b));
    assert_int_equal(fk.fakecuda_fail("cuMemCreate", 0, CUDA_ERROR_OUT_OF_MEMORY), 0);
    void *c;
    GK_ASSERT_ERR(gk_pool_malloc(p, 40 * MIB, NULL, &c), GK_EDEVOOM);
    s = st(p);
    assert_int_equal(s.num_ooms, 1);
    assert_int_equal(s.num_alloc_retries, 2);
    assert_int_equal(s.num_sync_all_streams, 2);
    assert_true(fk.fakecuda_calls("cuMemUnmap") >= 1);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 2 * MIB);
    assert_int_equal(fk.fakecuda_used_memory(), 2 * MIB);
    char rep[4096];
    gk_pool_oom_report(p, rep, sizeof rep);
    GK_ASSERT_CONTAINS(rep, "Tried to allocate 40.00 MiB");
    GK_ASSERT_CONTAINS(rep, "Hint:");
    GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_OUT_OF_MEMORY");
    assert_int_equal(fk.fakecuda_fail("cuMemCreate", 0, CUDA_SUCCESS), 0);
    GK_ASSERT_OK(gk_pool_malloc(p, 40 * MIB, NULL, &c));
    check_memory(dev, c, 40 * MIB, 10);
    GK_ASSERT_OK(gk_pool_free(p, c));
    GK_ASSERT_OK(gk_pool_free(p, s1));
    gk_pool_destroy(p);
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    gk_device_close(dev);
}

/* A driver error that is not about memory (here a launch failure, which CUDA reports on any later
 * call) goes straight back to the caller with the driver's text: no synchronization of every
 * stream, no cache emptied, no out-of-memory count or report. A lost device is not a full one. */
static void test_non_oom_error_returned(void **state)
{
    (void)state;
    const char *presets[] = {"pytorch", "default"}, *fns[] = {"cuMemAlloc_v2", "cuMemCreate"};
    for (int i = 0; i < 2; i++) {
        gk_device *dev = open_fake(gk_test_fake_cuda());
        gk_pool *p = make_pool(dev, presets[i], NULL);
        void *a, *b;
        GK_ASSERT_OK(gk_pool_malloc(p, 12 * MIB, NULL, &a));
        GK_ASSERT_OK(gk_pool_free(p, a)); /* something cached the ladder could have freed */
        gk_pool_stats before = st(p);
        assert_int_equal(fk.fakecuda_fail(fns[i], 1, CUDA_ERROR_LAUNCH_FAILED), 0);
        GK_ASSERT_ERR(gk_pool_malloc(p, 40 * MIB, NULL, &b), GK_EDEVLOST);
        assert_null(b);
        gk_pool_stats s = st(p);
        assert_int_equal(s.num_ooms, 0);
        assert_int_equal(s.num_alloc_retries, 0);
        assert_int_equal(s.num_sync_all_streams, 0);
        assert_int_equal(s.num_device_free, before.num_device_free);
        assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current,
                         before.reserved_bytes[GK_POOL_ALL].current);
        GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_LAUNCH_FAILED");
        assert_int_equal(gk_pool_oom_report(p, NULL, 0), 0);
        /* The next call works once the driver does. */
        GK_ASSERT_OK(gk_pool_malloc(p, 40 * MIB, NULL, &b));
        GK_ASSERT_OK(gk_pool_free(p, b));
        gk_pool_destroy(p);
        gk_device_close(dev);
    }
}

/* --- a failure at every driver call ------------------------------------------------------- */

/* A fixed workload for a pool with FAULT_SETTINGS (every rule of the default sizes, scaled down by
 * 8 so that a run maps few granules and valgrind stays fast): mixed sizes, two streams,
 * record_stream, frees in between, a trim. Failures are allowed; everything it holds is freed at
 * the end. */
#define FAULT_SETTINGS                                                                             \
    "small_max=256KiB,small_segment=512KiB,large_segment=4MiB,min_large_alloc=2MiB"
#define FAULT_MEMORY (64 * MIB)
static void workload(gk_device *dev, gk_pool *p)
{
    gk_stream *s1 = NULL;
    gk_stream_create(dev, &s1);
    static const size_t sizes[] = {512,        384 * KIB,  88 * KIB,   1536 * KIB,
                                   100,        3328 * KIB, 256 * KIB,  8 * KIB,
                                   1400 * KIB, 4 * KIB,    3840 * KIB, 128 * KIB + 1};
    void *held[12] = {0};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 12; i++) {
            void *q = NULL;
            if (gk_pool_malloc(p, sizes[i], (i & 1) ? s1 : NULL, &q) == 0) {
                if (i % 3 == 0 && s1)
                    gk_pool_record_stream(p, q, s1);
                if (held[i])
                    gk_pool_free(p, held[i]);
                held[i] = q;
            }
            if (i % 4 == 3 && held[i - 2]) {
                gk_pool_free(p, held[i - 2]);
                held[i - 2] = NULL;
            }
        }
        if (round == 1)
            gk_pool_trim(p, 8 * MIB, NULL);
    }
    for (int i = 0; i < 12; i++)
        gk_pool_free(p, held[i]);
    gk_stream_destroy(dev, s1);
}

/* After the faulty run: the pool's figures are back to zero and empty_cache gives everything
 * back. A driver free, physical release or address release that failed keeps its object in the
 * driver (the device layer forgets it and reports the error); `leak_ok` allows that one object, of
 * at most the largest segment the workload uses (4 MiB), and nothing more. Then the pool runs the workload again
 * and ends clean. Returns the driver bytes lost to the failed call. */
static size_t check_clean_and_usable(gk_device *dev, gk_pool *p, const char *what, long n,
                                     bool leak_ok)
{
    gk_pool_stats s = st(p);
    if (s.allocation[GK_POOL_ALL].current != 0 || s.allocated_bytes[GK_POOL_ALL].current != 0 ||
        s.requested_bytes[GK_POOL_ALL].current != 0 || s.num_invalid_free || s.num_double_free)
        fail_msg("%s, fault %ld: stats not back to zero", what, n);
    int rc = gk_pool_empty_cache(p);
    if (rc != 0)
        fail_msg("%s, fault %ld: empty_cache: %s: %s", what, n, gk_err_name(rc), gk_last_error());
    s = st(p);
    size_t lost = fk.fakecuda_used_memory();
    if (s.reserved_bytes[GK_POOL_ALL].current != 0 || s.active[GK_POOL_ALL].current != 0 ||
        s.segment[GK_POOL_ALL].current != 0 || (!leak_ok && lost != 0) || lost > 4 * MIB)
        fail_msg("%s, fault %ld: %lld reserved, %zu used in the driver after empty_cache", what, n,
                 (long long)s.reserved_bytes[GK_POOL_ALL].current, lost);
    workload(dev, p);
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    if (fk.fakecuda_used_memory() != lost || st(p).allocation[GK_POOL_ALL].current != 0 ||
        st(p).reserved_bytes[GK_POOL_ALL].current != 0)
        fail_msg("%s, fault %ld: not reusable", what, n);
    return lost;
}

typedef struct fault_case {
    const char *fn;
    int cuda_error;
    bool loses_memory; /* a failure here leaves the object in the driver */
} fault_case;

/* Every driver function the pool reaches through the device layer. */
static const fault_case fault_cases[] = {
    {"cuMemAlloc_v2", CUDA_ERROR_OUT_OF_MEMORY, false},
    {"cuMemFree_v2", CUDA_ERROR_LAUNCH_FAILED, true},
    {"cuEventCreate", CUDA_ERROR_OUT_OF_MEMORY, false},
    {"cuEventRecord", CUDA_ERROR_INVALID_HANDLE, false},
    {"cuEventQuery", CUDA_ERROR_LAUNCH_FAILED, false},
    {"cuStreamQuery", CUDA_ERROR_UNKNOWN, false},
    {"cuMemGetInfo_v2", CUDA_ERROR_UNKNOWN, false},
    {"cuMemAddressReserve", CUDA_ERROR_OUT_OF_MEMORY, false},
    {"cuMemCreate", CUDA_ERROR_OUT_OF_MEMORY, false},
    {"cuMemMap", CUDA_ERROR_OUT_OF_MEMORY, false},
    {"cuMemSetAccess", CUDA_ERROR_INVALID_VALUE, false},
    {"cuMemUnmap", CUDA_ERROR_INVALID_VALUE, false},
    {"cuMemRelease", CUDA_ERROR_INVALID_VALUE, true},
    {"cuMemAddressFree", CUDA_ERROR_INVALID_VALUE, true},
};

static void fault_loop(const char *preset)
{
    long total_faults = 0;
    for (size_t f = 0; f < sizeof fault_cases / sizeof fault_cases[0]; f++) {
        const fault_case *fc = &fault_cases[f];
        /* How often the workload calls fn, measured without faults. */
        fk.fakecuda_reset();
        fk.fakecuda_set_total_memory(FAULT_MEMORY);
        gk_device *dev = open_fake(gk_test_fake_cuda());
        gk_pool *p = make_pool(dev, preset, FAULT_SETTINGS);
        long before = fk.fakecuda_calls(fc->fn);
        workload(dev, p);
        GK_ASSERT_OK(gk_pool_empty_cache(p));
        long calls = fk.fakecuda_calls(fc->fn) - before;
        gk_pool_destroy(p);
        gk_device_close(dev);
        assert_true(calls >= 0);
        char what[96];
        snprintf(what, sizeof what, "%s, %s", preset, fc->fn);
        for (long n = 1; n <= calls + 1; n++) {
            fk.fakecuda_reset();
            fk.fakecuda_set_total_memory(FAULT_MEMORY);
            dev = open_fake(gk_test_fake_cuda());
            p = make_pool(dev, preset, FAULT_SETTINGS);
            assert_int_equal(fk.fakecuda_fail(fc->fn, (int)n, fc->cuda_error), 0);
            workload(dev, p);
            gk_pool_empty_cache(p); /* a fault may land here too */
            assert_int_equal(fk.fakecuda_fail(fc->fn, 0, CUDA_SUCCESS), 0);
            size_t lost = check_clean_and_usable(dev, p, what, n, fc->loses_memory);
            gk_pool_destroy(p);
            gk_device_close(dev);
            long live = fk.fakecuda_live_objects(), want = fc->loses_memory ? 1 : 0;
            if (live > want || (lost && live != 1))
                fail_msg("%s, fault %ld: %ld driver objects alive after close (want %ld)", what, n,
                         live, want);
            total_faults++;
        }
    }
    /* The workload reaches the allocation calls of its preset many times over. */
    assert_true(total_faults >= 40);
}

static void test_fault_every_call_pytorch(void **state)
{
    (void)state;
    fault_loop("pytorch");
}

static void test_fault_every_call_expandable(void **state)
{
    (void)state;
    fault_loop("default");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cached_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_reuse_with_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expandable_vmm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_vmm_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_cumemalloc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_cumemcreate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_oom_error_returned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_every_call_pytorch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_every_call_expandable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
