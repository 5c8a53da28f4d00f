/* The pool against the real CUDA driver on cuda:0 (default library, or GK_CUDA_LIBRARY): both
 * presets allocate real memory and reuse it without driver calls, expandable segments over the
 * driver's virtual-memory API, stream-aware reuse held back by a stream that is really busy, the
 * out-of-memory path (more than the card has: GK_EDEVOOM, a report, a pool still usable), and the
 * statistics' arithmetic. Skipped (exit 77) on a machine without a GPU.
 * gk-labels: gpu */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gk_test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

static gk_device *dev;
static gk_device_props props;

static int group_setup(void **state)
{
    (void)state;
    int rc = gk_device_open("cuda:0", &dev);
    if (rc)
        fail_msg("gk_device_open(cuda:0): %s: %s", gk_err_name(rc), gk_last_error());
    GK_ASSERT_OK(gk_device_get_props(dev, &props));
    printf("# pool on %s: %s, %.1f GiB, vm %s (granularity %zu)\n", props.spec, props.name,
           (double)props.total_memory / (1 << 30), props.has_vm ? "yes" : "no",
           props.vm_granularity);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    gk_device_close(dev);
    return 0;
}

static gk_pool *make_pool(const char *preset)
{
    gk_pool_config c;
    GK_ASSERT_OK(gk_pool_config_preset(&c, preset));
    c.logger.level = GK_LOG_OFF;
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

/* Writes a pattern into [ptr, ptr+n) on the device and reads it back. */
static void check_memory(void *ptr, size_t n, unsigned seed)
{
    unsigned char *src = malloc(n), *dst = calloc(1, n);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, ptr, src, n, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, ptr, n, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 30.0));
    assert_memory_equal(src, dst, n);
    free(src);
    free(dst);
}

/* The statistics agree with each other whatever the preset. */
static void check_stats(const gk_pool_stats *s)
{
    for (int k = 0; k < GK_POOL_KINDS; k++) {
        assert_true(s->requested_bytes[k].current <= s->allocated_bytes[k].current);
        assert_true(s->allocated_bytes[k].current <= s->active_bytes[k].current);
        assert_true(s->active_bytes[k].current <= s->reserved_bytes[k].current);
        assert_true(s->allocated_bytes[k].peak <= s->reserved_bytes[k].peak);
        assert_true(s->reserved_bytes[k].current >= 0);
        assert_int_equal(s->allocated_bytes[k].allocated - s->allocated_bytes[k].freed,
                         (uint64_t)s->allocated_bytes[k].current);
    }
    assert_int_equal(s->reserved_bytes[GK_POOL_ALL].current,
                     s->reserved_bytes[GK_POOL_SMALL].current +
                         s->reserved_bytes[GK_POOL_LARGE].current);
    assert_true(s->frag_external >= 0 && s->frag_external <= 1);
    assert_true(s->largest_free_block <= s->free_cached_bytes);
}

static void test_presets_reuse(void **state)
{
    (void)state;
    static const size_t sizes[] = {512, 4 * KIB, 700 * KIB, 3 * MIB, 12 * MIB, 100 * MIB};
    enum { N = sizeof sizes / sizeof sizes[0] };
    const char *presets[] = {"default", "pytorch"};
    for (int pi = 0; pi < 2; pi++) {
        gk_pool *p = make_pool(presets[pi]);
        void *ptr[N], *again[N];
        for (int i = 0; i < N; i++) {
            GK_ASSERT_OK(gk_pool_malloc(p, sizes[i], NULL, &ptr[i]));
            check_memory(ptr[i], sizes[i] < 4 * MIB ? sizes[i] : 4 * MIB, (unsigned)i);
        }
        gk_pool_stats s = st(p);
        check_stats(&s);
        uint64_t device_allocs = s.num_device_alloc;
        assert_true(device_allocs >= 2);
        uint64_t want = 0;
        for (int i = 0; i < N; i++)
            want += sizes[i];
        assert_int_equal(s.requested_bytes[GK_POOL_ALL].current, want);
        for (int i = 0; i < N; i++)
            GK_ASSERT_OK(gk_pool_free(p, ptr[i]));
        /* The same requests again come from the cache. */
        for (int i = 0; i < N; i++)
            GK_ASSERT_OK(gk_pool_malloc(p, sizes[i], NULL, &again[i]));
        s = st(p);
        check_stats(&s);
        assert_int_equal(s.num_device_alloc, device_allocs);
        assert_true(s.num_cache_hits >= N);
        check_memory(again[N - 1], 4 * MIB, 99);
        for (int i = 0; i < N; i++)
            GK_ASSERT_OK(gk_pool_free(p, again[i]));
        s = st(p);
        assert_int_equal(s.allocated_bytes[GK_POOL_ALL].current, 0);
        assert_int_equal(s.allocation[GK_POOL_ALL].current, 0);
        GK_ASSERT_OK(gk_pool_empty_cache(p));
        s = st(p);
        assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 0);
        assert_int_equal(s.segment[GK_POOL_ALL].current, 0);
        printf("# %s: %llu device allocations, %llu frees, %.1f us in the driver\n", presets[pi],
               (unsigned long long)s.num_device_alloc, (unsigned long long)s.num_device_free,
               (double)s.backend_ns / 1000);
        gk_pool_destroy(p);
    }
}

static void test_expandable_real_vmm(void **state)
{
    (void)state;
    if (!props.has_vm) {
        printf("# no virtual memory on %s: expandable segments are off (classic segments)\n",
               props.spec);
        return;
    }
    gk_pool *p = make_pool("default");
    size_t page = 2 * MIB > props.vm_granularity ? 2 * MIB : props.vm_granularity;
    page = (page + props.vm_granularity - 1) / props.vm_granularity * props.vm_granularity;
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(p, page + page / 2, NULL, &a)); /* two pages */
    GK_ASSERT_OK(gk_pool_malloc(p, page, NULL, &b));            /* shares a's second page */
    assert_ptr_equal((char *)a + page + page / 2, b);
    gk_pool_stats s = st(p);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 3 * page);
    assert_int_equal(s.num_device_alloc, 2);
    check_memory(a, page + page / 2, 1);
    check_memory(b, page, 2); /* across a page boundary */
    /* a's first page is under no live block once a is freed: empty_cache unmaps it alone. */
    GK_ASSERT_OK(gk_pool_free(p, a));
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    s = st(p);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 2 * page);
    assert_int_equal(s.num_device_free, 1);
    check_memory(b, page, 3);
    /* Mapped again on demand, at the same address. */
    GK_ASSERT_OK(gk_pool_malloc(p, page + page / 2, NULL, &a));
    assert_ptr_equal((char *)b - page - page / 2, a);
    check_memory(a, page + page / 2, 4);
    GK_ASSERT_OK(gk_pool_free(p, a));
    GK_ASSERT_OK(gk_pool_free(p, b));
    check_stats(&s);
    gk_pool_destroy(p);
}

static atomic_int gate;

/* Holds its stream until the test opens the gate (or 20 s pass). */
static void hold_stream(void *user)
{
    (void)user;
    struct timespec start, now, nap = {0, 100000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        if (atomic_load(&gate))
            return;
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 20);
}

static void test_stream_reuse(void **state)
{
    (void)state;
    gk_pool *p = make_pool("pytorch");
    gk_stream *s1;
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    void *a, *x, *y;
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_record_stream(p, a, s1));
    atomic_store(&gate, 0);
    GK_ASSERT_OK(gk_stream_host_fn(dev, s1, hold_stream, NULL));
    GK_ASSERT_OK(gk_pool_free(p, a)); /* records an event behind the held work */
    int pending = st(p).active[GK_POOL_ALL].current == 1;
    int rc = gk_pool_malloc(p, 64 * KIB, NULL, &x);
    atomic_store(&gate, 1); /* open before asserting, so a failure cannot hang the stream */
    GK_ASSERT_OK(rc);
    assert_true(pending);
    assert_ptr_not_equal(x, a);
    GK_ASSERT_OK(gk_stream_synchronize(dev, s1, 30.0));
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &y));
    assert_ptr_equal(y, a);
    /* A block of s1's pool is not handed to the default stream; destroying s1 returns its cache. */
    void *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(p, 4 * MIB, s1, &b));
    GK_ASSERT_OK(gk_pool_free(p, b));
    GK_ASSERT_OK(gk_pool_malloc(p, 4 * MIB, NULL, &c));
    assert_ptr_not_equal(b, c);
    uint64_t frees = st(p).num_device_free;
    GK_ASSERT_OK(gk_stream_destroy(dev, s1));
    assert_int_equal(st(p).num_device_free, frees + 1);
    gk_pool_free(p, x);
    gk_pool_free(p, y);
    gk_pool_free(p, c);
    gk_pool_stats s = st(p);
    check_stats(&s);
    assert_int_equal(s.active[GK_POOL_ALL].current, 0);
    gk_pool_destroy(p);
}

static void test_oom(void **state)
{
    (void)state;
    const char *presets[] = {"default", "pytorch"};
    for (int pi = 0; pi < 2; pi++) {
        gk_pool *p = make_pool(presets[pi]);
        void *keep, *big = NULL;
        GK_ASSERT_OK(gk_pool_malloc_tagged(p, 8 * MIB, NULL, "kept", &keep));
        size_t too_much = (size_t)props.total_memory + ((size_t)1 << 30);
        GK_ASSERT_ERR(gk_pool_malloc(p, too_much, NULL, &big), GK_EDEVOOM);
        assert_null(big);
        gk_pool_stats s = st(p);
        assert_int_equal(s.num_ooms, 1);
        assert_int_equal(s.num_alloc_retries, 1);
        char rep[4096];
        size_t n = gk_pool_oom_report(p, rep, sizeof rep);
        printf("# %s: %s\n", presets[pi], rep);
        assert_true(n > 0);
        GK_ASSERT_CONTAINS(rep, "out of device memory. Tried to allocate");
        GK_ASSERT_CONTAINS(rep, "Device cuda:0 has a total capacity of");
        GK_ASSERT_CONTAINS(rep, "tag \"kept\"");
        GK_ASSERT_CONTAINS(rep, "Hint:");
        /* Still usable, and what was live is intact. */
        check_memory(keep, 8 * MIB, 5);
        void *q;
        GK_ASSERT_OK(gk_pool_malloc(p, 64 * MIB, NULL, &q));
        check_memory(q, 4 * MIB, 6);
        GK_ASSERT_OK(gk_pool_free(p, q));
        GK_ASSERT_OK(gk_pool_free(p, keep));
        s = st(p);
        check_stats(&s);
        GK_ASSERT_OK(gk_pool_empty_cache(p));
        gk_pool_destroy(p);
    }
}

int main(void)
{
    gk_device *probe = NULL;
    int rc = gk_device_open("cuda:0", &probe);
    if (rc == GK_ENOGPU) {
        printf("skipping the pool GPU tests: %s\n", gk_last_error());
        return 77;
    }
    gk_device_close(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_reuse),
        cmocka_unit_test(test_expandable_real_vmm),
        cmocka_unit_test(test_stream_reuse),
        cmocka_unit_test(test_oom),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
