/* The device layer against the real CUDA driver on cuda:0 (default library, or GK_CUDA_LIBRARY):
 * memory, pinned memory, copies through streams and events, cross-stream waits, host functions,
 * virtual memory and out-of-memory behaviour. Skipped (exit 77) on a machine without a GPU.
 * gk-labels: gpu */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define MiB ((size_t)1 << 20)

static gk_device *dev;
static gk_device_props props;

static int group_setup(void **state)
{
    (void)state;
    int rc = gk_device_open("cuda:0", &dev);
    if (rc)
        fail_msg("gk_device_open(cuda:0): %s: %s", gk_err_name(rc), gk_last_error());
    GK_ASSERT_OK(gk_device_get_props(dev, &props));
    printf("# %s: %s, %.1f GiB, cc %d.%d, %d SMs, driver %d, vm %s (granularity %zu)\n", props.spec,
           props.name, (double)props.total_memory / (1 << 30), props.cc_major, props.cc_minor,
           props.multiprocessors, props.driver_version, props.has_vm ? "yes" : "no",
           props.vm_granularity);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    gk_device_close(dev);
    return 0;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
}

static void test_props(void **state)
{
    (void)state;
    assert_int_equal(props.backend, GK_BACKEND_CUDA);
    assert_string_equal(props.spec, "cuda:0");
    assert_true(strlen(props.name) > 0);
    assert_true(props.total_memory >= (uint64_t)1 << 30);
    assert_true(props.cc_major >= 3);
    assert_true(props.multiprocessors > 0);
    assert_true(props.driver_version >= 11000);
    assert_int_equal(props.pinned_is_real, 1);
    assert_int_equal(props.alloc_alignment, 256);
    if (props.has_vm) {
        assert_true(props.vm_granularity > 0);
        assert_int_equal(props.vm_granularity % 4096, 0);
    }
}

static void test_malloc_mem_info(void **state)
{
    (void)state;
    size_t free0, total;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free0, &total));
    assert_true(total > 0);
    assert_true(free0 <= total);
    assert_int_equal(total, props.total_memory);

    void *d = NULL;
    size_t n = 512 * MiB;
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d));
    assert_non_null(d);
    assert_int_equal((uintptr_t)d % 256, 0);
    size_t free1;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free1, NULL));
    printf("# free %zu MiB -> %zu MiB after a 512 MiB allocation\n", free0 / MiB, free1 / MiB);
    assert_true(free1 + 256 * MiB <= free0);
    GK_ASSERT_OK(gk_device_free(dev, d));
    GK_ASSERT_ERR(gk_device_free(dev, d), -EINVAL);

    /* Out of memory is an error code, never a crash. */
    void *big = NULL;
    GK_ASSERT_ERR(gk_device_malloc(dev, total + ((size_t)1 << 30), &big), GK_EDEVOOM);
    assert_null(big);
    printf("# oversized malloc: %s\n", gk_last_error());
    GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_OUT_OF_MEMORY");

    /* And the device still works afterwards. */
    GK_ASSERT_OK(gk_device_malloc(dev, MiB, &d));
    GK_ASSERT_OK(gk_device_free(dev, d));
}

static void test_roundtrip(void **state)
{
    (void)state;
    size_t n = 8 * MiB;
    unsigned char *src = NULL, *dst = NULL;
    void *d = NULL;
    gk_stream *s = NULL;
    gk_event *e = NULL;
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&src));
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&dst));
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d));
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    fill(src, n, 1);
    memset(dst, 0, n);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, n, s));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, d, n, s));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_event_synchronize(dev, e, 30));
    GK_ASSERT_OK(gk_event_query(dev, e));
    assert_memory_equal(src, dst, n);

    /* The default stream, and pageable host memory. */
    unsigned char *pageable = malloc(n);
    assert_non_null(pageable);
    memset(pageable, 0, n);
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, pageable, d, n, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 30));
    assert_memory_equal(src, pageable, n);
    free(pageable);

    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    GK_ASSERT_OK(gk_device_free(dev, d));
    GK_ASSERT_OK(gk_device_host_free(dev, src));
    GK_ASSERT_OK(gk_device_host_free(dev, dst));
}

static atomic_int fn_seq;
static int fn_order[4];

static void note_order(void *user)
{
    fn_order[atomic_fetch_add(&fn_seq, 1)] = (int)(intptr_t)user;
}

/* Stream B waits for stream A's copy, copies on, and runs host functions in order. */
static void test_cross_stream(void **state)
{
    (void)state;
    size_t n = 32 * MiB;
    unsigned char *src = NULL, *dst = NULL;
    void *d1 = NULL, *d2 = NULL;
    gk_stream *a = NULL, *b = NULL;
    gk_event *ea = NULL, *eb = NULL;
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&src));
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&dst));
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d1));
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d2));
    GK_ASSERT_OK(gk_stream_create(dev, &a));
    GK_ASSERT_OK(gk_stream_create(dev, &b));
    GK_ASSERT_OK(gk_event_create(dev, &ea));
    GK_ASSERT_OK(gk_event_create(dev, &eb));
    fill(src, n, 7);
    memset(dst, 0, n);
    atomic_store(&fn_seq, 0);

    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d1, src, n, a));
    GK_ASSERT_OK(gk_event_record(dev, ea, a));
    GK_ASSERT_OK(gk_stream_wait_event(dev, b, ea));
    GK_ASSERT_OK(gk_stream_host_fn(dev, b, note_order, (void *)1));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d2, d1, n, b));
    GK_ASSERT_OK(gk_stream_host_fn(dev, b, note_order, (void *)2));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, d2, n, b));
    GK_ASSERT_OK(gk_stream_host_fn(dev, b, note_order, (void *)3));
    GK_ASSERT_OK(gk_event_record(dev, eb, b));
    GK_ASSERT_OK(gk_event_synchronize(dev, eb, 30));
    GK_ASSERT_OK(gk_device_synchronize(dev, 30));
    assert_int_equal(atomic_load(&fn_seq), 3);
    assert_int_equal(fn_order[0], 1);
    assert_int_equal(fn_order[1], 2);
    assert_int_equal(fn_order[2], 3);
    assert_memory_equal(src, dst, n);

    GK_ASSERT_OK(gk_event_destroy(dev, ea));
    GK_ASSERT_OK(gk_event_destroy(dev, eb));
    GK_ASSERT_OK(gk_stream_destroy(dev, a));
    GK_ASSERT_OK(gk_stream_destroy(dev, b));
    GK_ASSERT_OK(gk_device_free(dev, d1));
    GK_ASSERT_OK(gk_device_free(dev, d2));
    GK_ASSERT_OK(gk_device_host_free(dev, src));
    GK_ASSERT_OK(gk_device_host_free(dev, dst));
}

static void test_vm(void **state)
{
    (void)state;
    void *base = NULL;
    if (!props.has_vm) {
        GK_ASSERT_ERR(gk_device_vm_reserve(dev, 1 << 21, &base), GK_EUNAVAIL);
        printf("# no virtual memory on this device/driver: %s\n", gk_last_error());
        return;
    }
    size_t g = props.vm_granularity;
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 16 * g, &base));
    assert_int_equal((uintptr_t)base % g, 0);
    char *b = base;
    /* Four one-granule pieces and one of two granules, then a copy across all of them. */
    for (int i = 0; i < 4; i++)
        GK_ASSERT_OK(gk_device_vm_map(dev, b + (size_t)i * g, g));
    GK_ASSERT_OK(gk_device_vm_map(dev, b + 4 * g, 2 * g));
    size_t n = 6 * g;
    unsigned char *src = NULL, *dst = NULL;
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&src));
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&dst));
    fill(src, n, 3);
    memset(dst, 0, n);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, b, src, n, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, b, n, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 30));
    assert_memory_equal(src, dst, n);

    /* Device-to-device between a mapped range and a malloc'd buffer. */
    void *d = NULL;
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d, b, n, NULL));
    memset(dst, 0, n);
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, d, n, NULL));
    GK_ASSERT_OK(gk_device_synchronize(dev, 30));
    assert_memory_equal(src, dst, n);
    GK_ASSERT_OK(gk_device_free(dev, d));

    GK_ASSERT_ERR(gk_device_vm_map(dev, b + 1, g), -EINVAL);
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b, 2 * g)); /* two pieces at once */
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b + 2 * g, g));
    /* The second granule of the two-granule piece alone; the first keeps its contents. */
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b + 5 * g, g));
    memset(dst, 0, n);
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, b + 4 * g, g, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 30));
    assert_memory_equal(src + 4 * g, dst, g);
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b + 3 * g, 2 * g));
    /* Remapping after unmapping works. */
    GK_ASSERT_OK(gk_device_vm_map(dev, b, g));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b, g));
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 16 * g));
    GK_ASSERT_OK(gk_device_host_free(dev, src));
    GK_ASSERT_OK(gk_device_host_free(dev, dst));
}

/* Mapping more physical memory than the card has fails with GK_EDEVOOM and leaves the device
 * usable. */
static void test_vm_oom(void **state)
{
    (void)state;
    if (!props.has_vm)
        skip();
    size_t g = props.vm_granularity;
    size_t want = ((size_t)props.total_memory / g + 2) * g;
    void *base = NULL;
    GK_ASSERT_OK(gk_device_vm_reserve(dev, want, &base));
    int rc = gk_device_vm_map(dev, base, want);
    printf("# mapping %zu MiB: %s: %s\n", want / MiB, gk_err_name(rc), gk_last_error());
    GK_ASSERT_ERR(rc, GK_EDEVOOM);
    GK_ASSERT_OK(gk_device_vm_map(dev, base, g));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, g));
    GK_ASSERT_OK(gk_device_vm_release(dev, base, want));
    size_t free_b;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free_b, NULL));
    assert_true(free_b > 0);
}

static void test_counters(void **state)
{
    (void)state;
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    printf("# malloc %llu, free %llu, copies %llu/%llu/%llu (%llu bytes), maps %llu, errors %llu\n",
           (unsigned long long)c.malloc_calls, (unsigned long long)c.free_calls,
           (unsigned long long)c.copies_htod, (unsigned long long)c.copies_dtoh,
           (unsigned long long)c.copies_dtod, (unsigned long long)c.copy_bytes,
           (unsigned long long)c.vm_maps, (unsigned long long)c.errors);
    assert_true(c.malloc_calls >= 6);
    assert_int_equal(c.free_calls + 1, c.malloc_calls); /* the oversized one failed */
    assert_true(c.copies_htod >= (props.has_vm ? 3u : 2u));
    assert_true(c.copies_dtoh >= (props.has_vm ? 6u : 3u));
    assert_true(c.copies_dtod >= 1);
    assert_true(c.stream_creates == c.stream_destroys);
    assert_true(c.event_creates == c.event_destroys);
    assert_int_equal(c.host_fns, 3);
    assert_true(c.errors >= 2);
    assert_true(c.alloc_ns > 0);
}

int main(void)
{
    gk_device *probe = NULL;
    int rc = gk_device_open("cuda:0", &probe);
    if (rc == GK_ENOGPU) {
        printf("skipping the GPU tests: %s\n", gk_last_error());
        return 77;
    }
    gk_device_close(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_props),     cmocka_unit_test(test_malloc_mem_info),
        cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_cross_stream),
        cmocka_unit_test(test_vm),        cmocka_unit_test(test_vm_oom),
        cmocka_unit_test(test_counters),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
