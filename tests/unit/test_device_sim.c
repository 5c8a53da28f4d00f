/* Tests of the sim backend through the public device API: spec keys and errors, the first-fit
 * address space, virtual memory, lazily executed streams and events, fault injection, the
 * latency clock, and concurrent use from many threads.
 * gk-labels: unit threads */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)

static gk_device *open_sim(const char *spec)
{
    gk_device *dev = NULL;
    int rc = gk_device_open(spec, &dev);
    if (rc)
        fail_msg("gk_device_open(\"%s\") returned %s: %s", spec, gk_err_name(rc), gk_last_error());
    return dev;
}

static uintptr_t addr_of(const void *p)
{
    return (uintptr_t)p;
}

static size_t used_by_mem_info(gk_device *dev)
{
    size_t free_b = 0, total = 0;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free_b, &total));
    return total - free_b;
}

/* --- spec -------------------------------------------------------------------------------- */

static void test_defaults_and_props(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_SIM);
    assert_string_equal(p.backend_name, "sim");
    assert_string_equal(p.spec, "sim:capacity=16GiB");
    assert_string_equal(p.name, "gpukit sim");
    assert_int_equal(p.index, 0);
    assert_true(p.total_memory == 16 * (uint64_t)GIB);
    assert_int_equal(p.alloc_alignment, 256);
    assert_int_equal(p.vm_granularity, 2 * MIB);
    assert_int_equal(p.has_vm, 1);
    assert_int_equal(p.pinned_is_real, 0);
    assert_int_equal(p.cc_major, 0);
    assert_int_equal(p.driver_version, 0);
    size_t free_b, total;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free_b, &total));
    assert_true(total == 16 * GIB && free_b == total);
    assert_string_equal(gk_device_auto_reason(dev), "");
    assert_string_equal(gk_last_error(), "");
    assert_int_equal(gk_device_sim_used(dev), 0);
    assert_true(gk_device_sim_clock_ns(dev) == 0);
    gk_device_close(dev);
}

static void test_canonical_spec(void **state)
{
    (void)state;
    gk_device *dev =
        open_sim("sim:name=test gpu,capacity=1536MiB,backed=yes,clock=virtual,latency_us=2.5,"
                 "event_polls=3,fail_above=1MiB,va_size=1GiB");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_string_equal(p.spec, "sim:capacity=1536MiB,va_size=1GiB,backed=1,"
                                "latency_us=2.5,clock=virtual,event_polls=3,fail_above=1MiB,"
                                "name=test gpu");
    assert_string_equal(p.name, "test gpu");
    assert_int_equal(p.alloc_alignment, 256);
    gk_device_close(dev);

    /* The canonical spec opens the same device. */
    dev = open_sim("sim:capacity=4097,fail_alloc_nth=3,fail_prob=0.25,fail_after_bytes=3KiB,"
                   "fail_event_query_nth=2,granularity=64KiB");
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_string_equal(p.spec, "sim:capacity=4097,granularity=64KiB,fail_alloc_nth=3,"
                                "fail_prob=0.25,fail_after_bytes=3KiB,fail_event_query_nth=2");
    gk_device *again = open_sim(p.spec);
    gk_device_props q;
    GK_ASSERT_OK(gk_device_get_props(again, &q));
    assert_string_equal(q.spec, p.spec);
    gk_device_close(again);
    gk_device_close(dev);

    /* Different latencies stay apart. */
    dev = open_sim("sim:alloc_latency_us=3,free_latency_us=0.5");
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_string_equal(p.spec, "sim:capacity=16GiB,alloc_latency_us=3,free_latency_us=0.5");
    gk_device_close(dev);

    /* A spec longer than props.spec holds loses whole keys from its end, never half of one. */
    dev = open_sim("sim:capacity=1GiB,alignment=1KiB,granularity=4MiB,va_size=2GiB,backed=1,"
                   "clock=virtual,alloc_latency_us=30,event_polls=2,fail_prob=0.001,seed=42,"
                   "name=a rather long device name for a test");
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_true(strlen(p.spec) < sizeof p.spec);
    assert_string_equal(p.spec, "sim:capacity=1GiB,alignment=1KiB,granularity=4MiB,va_size=2GiB,"
                                "backed=1,alloc_latency_us=30,clock=virtual,event_polls=2");
    gk_device_close(dev);
}

static void expect_spec_error(const char *spec, const char *needle1, const char *needle2)
{
    gk_device *dev = (gk_device *)1;
    int rc = gk_device_open(spec, &dev);
    if (rc != -EINVAL)
        fail_msg("gk_device_open(\"%s\") returned %s, expected EINVAL", spec, gk_err_name(rc));
    assert_null(dev);
    GK_ASSERT_CONTAINS(gk_last_error(), needle1);
    if (needle2)
        GK_ASSERT_CONTAINS(gk_last_error(), needle2);
}

static void test_spec_errors(void **state)
{
    (void)state;
    expect_spec_error("sim:capacityy=1GiB", "unknown key \"capacityy\"", "valid keys: capacity");
    expect_spec_error("sim:capacity=12Q", "capacity: \"12Q\" is not a size", "try 16GiB");
    expect_spec_error("sim:capacity=0", "capacity", "1PiB");
    expect_spec_error("sim:capacity=1025TiB", "capacity: \"1025TiB\"", "1PiB");
    expect_spec_error("sim:capacity=2PiB", "capacity: \"2PiB\"", "from 1 byte to 1PiB");
    /* A hex capacity is read as what it says (it was once read as 0). */
    expect_spec_error("sim:capacity=0x10", "capacity: \"16\"", "smaller than the alignment");
    gk_device *big;
    GK_ASSERT_OK(gk_device_open("sim:capacity=1PiB", &big));
    gk_device_props bp;
    GK_ASSERT_OK(gk_device_get_props(big, &bp));
    assert_true(bp.total_memory == 1ull << 50);
    assert_string_equal(bp.spec, "sim:capacity=1PiB");
    gk_device_close(big);
    GK_ASSERT_OK(gk_device_open("sim:capacity=0x40000000", &big));
    GK_ASSERT_OK(gk_device_get_props(big, &bp));
    assert_true(bp.total_memory == 1ull << 30);
    gk_device_close(big);
    expect_spec_error("sim:alignment=300", "alignment: \"300\"", "power of two");
    expect_spec_error("sim:alignment=0", "alignment", "power of two");
    expect_spec_error("sim:alignment=2GiB", "alignment", "1GiB");
    expect_spec_error("sim:granularity=1KiB", "granularity: \"1KiB\"", "4KiB");
    expect_spec_error("sim:granularity=3MiB", "granularity", "power of two");
    expect_spec_error("sim:capacity=128,alignment=256", "capacity", "smaller than the alignment");
    expect_spec_error("sim:va_size=4097TiB", "va_size", "at most 4PiB");
    expect_spec_error("sim:va_size=lots", "va_size: \"lots\" is not a size", NULL);
    expect_spec_error("sim:backed=maybe", "backed: \"maybe\" is not a boolean", "0 or 1");
    expect_spec_error("sim:clock=fast", "clock: \"fast\"", "real or virtual");
    expect_spec_error("sim:alloc_latency_us=-1", "alloc_latency_us: \"-1\"", "microseconds");
    expect_spec_error("sim:free_latency_us=x", "free_latency_us: \"x\"", NULL);
    expect_spec_error("sim:latency_us=1e9", "latency_us", NULL);
    expect_spec_error("sim:event_polls=0", "event_polls: \"0\"", "at least 1");
    expect_spec_error("sim:event_polls=two", "event_polls: \"two\"", "whole number");
    expect_spec_error("sim:fail_alloc_nth=-3", "fail_alloc_nth: \"-3\"", NULL);
    expect_spec_error("sim:fail_prob=1.5", "fail_prob: \"1.5\"", "probability");
    expect_spec_error("sim:seed=abc", "seed: \"abc\"", NULL);
    expect_spec_error("sim:fail_above=big", "fail_above: \"big\"", NULL);
    expect_spec_error("sim:fail_after_bytes=-1", "fail_after_bytes", NULL);
    expect_spec_error("sim:fail_event_query_nth=1.5", "fail_event_query_nth", NULL);
    expect_spec_error("sim:2", "not a device index", "sim:capacity=16GiB");
    expect_spec_error("sim:capacity", "is not key=value", NULL);
    /* Every spec error names the spec. */
    expect_spec_error("sim:capacity=12Q", "device spec \"sim:capacity=12Q\"", NULL);
}

static void test_backed_too_large(void **state)
{
    (void)state;
    /* 1 PiB + 4 PiB of address space is more than a 47-bit user space holds. */
    gk_device *dev = NULL;
    int rc = gk_device_open("sim:capacity=1024TiB,va_size=4096TiB,backed=1", &dev);
    GK_ASSERT_ERR(rc, -ENOMEM);
    assert_null(dev);
    GK_ASSERT_CONTAINS(gk_last_error(), "backed=1");
    GK_ASSERT_CONTAINS(gk_last_error(), "lower capacity or va_size");
}

/* --- device memory ----------------------------------------------------------------------- */

static void test_first_fit_and_coalescing(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=4KiB");
    void *a, *b, *c, *d, *e, *f;
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &a));
    uintptr_t base = addr_of(a);
    assert_int_equal(base % 256, 0);
    GK_ASSERT_OK(gk_device_malloc(dev, 300, &b)); /* rounds to 512 */
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &c));
    GK_ASSERT_OK(gk_device_malloc(dev, 1, &d));
    assert_true(addr_of(b) == base + 256);
    assert_true(addr_of(c) == base + 768);
    assert_true(addr_of(d) == base + 1024);
    assert_int_equal(gk_device_sim_used(dev), 256 + 512 + 256 + 256);
    assert_int_equal(used_by_mem_info(dev), 1280);

    /* A hole of 512 at +256: the first fit takes its start. */
    GK_ASSERT_OK(gk_device_free(dev, b));
    GK_ASSERT_OK(gk_device_malloc(dev, 100, &e));
    assert_true(addr_of(e) == base + 256);
    /* Free a and e: they merge with the rest of the hole into [0, 768). */
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_OK(gk_device_free(dev, e));
    GK_ASSERT_OK(gk_device_malloc(dev, 768, &f));
    assert_true(addr_of(f) == base);
    /* Free everything: one range again, the whole capacity fits. */
    GK_ASSERT_OK(gk_device_free(dev, f));
    GK_ASSERT_OK(gk_device_free(dev, d));
    GK_ASSERT_OK(gk_device_free(dev, c));
    assert_int_equal(gk_device_sim_used(dev), 0);
    GK_ASSERT_OK(gk_device_malloc(dev, 4 * KIB, &a));
    assert_true(addr_of(a) == base);
    GK_ASSERT_OK(gk_device_free(dev, a));
    gk_device_close(dev);
}

static void test_alignment(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,alignment=4KiB");
    void *a, *b;
    GK_ASSERT_OK(gk_device_malloc(dev, 10, &a));
    GK_ASSERT_OK(gk_device_malloc(dev, 10, &b));
    assert_int_equal(addr_of(a) % 4096, 0);
    assert_true(addr_of(b) == addr_of(a) + 4096);
    assert_int_equal(gk_device_sim_used(dev), 8192);
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_OK(gk_device_free(dev, b));
    gk_device_close(dev);
}

static void test_capacity_exhaustion(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB");
    void *a, *b;
    GK_ASSERT_OK(gk_device_malloc(dev, MIB, &a));
    GK_ASSERT_ERR(gk_device_malloc(dev, 256, &b), GK_EDEVOOM);
    assert_null(b);
    GK_ASSERT_CONTAINS(gk_last_error(), "device full");
    GK_ASSERT_CONTAINS(gk_last_error(), "256 bytes");
    GK_ASSERT_CONTAINS(gk_last_error(), "0 bytes (0 B) free of 1048576 (1.00 MiB) capacity");
    GK_ASSERT_ERR(gk_device_malloc(dev, (size_t)-1, &b), GK_EDEVOOM);
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &b));
    GK_ASSERT_OK(gk_device_free(dev, b));
    gk_device_close(dev);

    /* Fragmented: enough bytes free, no range large enough. */
    dev = open_sim("sim:capacity=1KiB");
    void *p[4];
    for (int i = 0; i < 4; i++)
        GK_ASSERT_OK(gk_device_malloc(dev, 256, &p[i]));
    GK_ASSERT_OK(gk_device_free(dev, p[0]));
    GK_ASSERT_OK(gk_device_free(dev, p[2]));
    GK_ASSERT_ERR(gk_device_malloc(dev, 512, &a), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "largest free range is 256 bytes (256 B): fragmented");
    gk_device_counters ctr;
    GK_ASSERT_OK(gk_device_get_counters(dev, &ctr));
    assert_true(ctr.errors == 1);
    gk_device_close(dev); /* p[1] and p[3] are freed by close */
}

static void test_bad_frees(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB");
    void *a;
    GK_ASSERT_OK(gk_device_free(dev, NULL));
    GK_ASSERT_ERR(gk_device_malloc(dev, 0, &a), -EINVAL);
    GK_ASSERT_OK(gk_device_malloc(dev, 512, &a));
    GK_ASSERT_ERR(gk_device_free(dev, (char *)a + 256), -EINVAL);
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_ERR(gk_device_free(dev, a), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "not a live device allocation");
    int local;
    GK_ASSERT_ERR(gk_device_free(dev, &local), -EINVAL);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_device_close(dev);
}

static void test_host_memory(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim");
    void *h;
    GK_ASSERT_ERR(gk_device_host_alloc(dev, 0, &h), -EINVAL);
    GK_ASSERT_OK(gk_device_host_alloc(dev, 10000, &h));
    assert_int_equal(addr_of(h) % 4096, 0);
    memset(h, 7, 10000); /* real host memory */
    GK_ASSERT_OK(gk_device_host_free(dev, h));
    GK_ASSERT_ERR(gk_device_host_free(dev, h), -EINVAL);
    GK_ASSERT_OK(gk_device_host_free(dev, NULL));
    GK_ASSERT_OK(gk_device_host_alloc(dev, 64, &h)); /* freed by close */
    gk_device_close(dev);
}

/* --- virtual memory ---------------------------------------------------------------------- */

static void test_vm(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=256KiB,granularity=64KiB,va_size=512KiB");
    const size_t g = 64 * KIB;
    char host[16] = {0};
    void *base, *base2, *m, *a;
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, g + 1, &base), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(),
                       "vm_reserve of 65537 bytes: the size must be a multiple of the granularity");
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 4 * g, &base));
    assert_int_equal(addr_of(base) % g, 0);
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 2 * g, &base2));
    assert_true(addr_of(base2) == addr_of(base) + 4 * g); /* first fit */
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, 4 * g, &m), -ENOSPC);
    GK_ASSERT_CONTAINS(gk_last_error(), "raise va_size");
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, (size_t)1 << 50, &m), -ENOSPC);
    GK_ASSERT_CONTAINS(gk_last_error(), "larger than the whole");
    /* A range that would wrap around the address space is refused, not walked. */
    GK_ASSERT_ERR(gk_device_vm_map(dev, base, (size_t)0 - g), -EINVAL);
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, base, (size_t)0 - g), -EINVAL);

    /* A reserved range is not memory until mapped. */
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, base, host, sizeof host, NULL), -EINVAL);
    GK_ASSERT_OK(gk_device_vm_map(dev, base, g));
    assert_int_equal(gk_device_sim_used(dev), g);
    assert_int_equal(used_by_mem_info(dev), g);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, base, host, sizeof host, NULL));
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, (char *)base + g - 8, host, sizeof host, NULL),
                  -EINVAL); /* runs into the unmapped granule */

    /* Map errors. */
    GK_ASSERT_ERR(gk_device_vm_map(dev, base, g), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "already mapped");
    GK_ASSERT_ERR(gk_device_vm_map(dev, (char *)base + g / 2, g), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "multiples of the granularity");
    GK_ASSERT_ERR(gk_device_vm_map(dev, base, 100), -EINVAL);
    GK_ASSERT_ERR(gk_device_vm_map(dev, (char *)base + 3 * g, 2 * g), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "not inside one reserved range");
    GK_ASSERT_ERR(gk_device_vm_map(dev, (char *)base - g, g), -EINVAL);
    GK_ASSERT_ERR(gk_device_vm_map(dev, NULL, g), -EINVAL);

    /* Mapping consumes capacity, shared with malloc. */
    GK_ASSERT_OK(gk_device_vm_map(dev, (char *)base + g, 3 * g));
    assert_int_equal(gk_device_sim_used(dev), 4 * g);
    GK_ASSERT_ERR(gk_device_vm_map(dev, base2, g), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "device full: vm_map");
    GK_ASSERT_ERR(gk_device_malloc(dev, 256, &a), GK_EDEVOOM);

    /* Unmap and release errors. */
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, base2, g), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "not mapped");
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, (char *)base + 1, g), -EINVAL);
    GK_ASSERT_ERR(gk_device_vm_release(dev, base, 4 * g), -EBUSY);
    GK_ASSERT_CONTAINS(gk_last_error(), "262144 bytes are still mapped");
    GK_ASSERT_ERR(gk_device_vm_release(dev, base, 2 * g), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "reserved with 262144 bytes");
    GK_ASSERT_ERR(gk_device_vm_release(dev, (char *)base + g, 3 * g), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "not the base of a reserved range");

    /* Unmap in pieces other than the maps: granules are what count. */
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, 2 * g));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, (char *)base + 2 * g, 2 * g));
    assert_int_equal(gk_device_sim_used(dev), 0);
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 4 * g));
    GK_ASSERT_OK(gk_device_vm_release(dev, base2, 2 * g));
    GK_ASSERT_ERR(gk_device_vm_release(dev, base2, 2 * g), -EINVAL);
    /* Released ranges merge: the whole space is one range again. */
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 8 * g, &m));
    assert_true(m == base);
    GK_ASSERT_OK(gk_device_vm_map(dev, (char *)m + 7 * g, g));

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.vm_reserves == 6 && c.vm_releases == 6);
    assert_true(c.vm_maps == 10 && c.vm_unmaps == 5);
    gk_device_close(dev); /* the reservation and its mapping are still held */
}

static void test_vm_off(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:va_size=0");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.has_vm, 0);
    assert_int_equal(p.vm_granularity, 0);
    assert_string_equal(p.spec, "sim:capacity=16GiB,va_size=0");
    void *b;
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, 2 * MIB, &b), GK_EUNAVAIL);
    GK_ASSERT_CONTAINS(gk_last_error(), "va_size=0");
    GK_ASSERT_ERR(gk_device_vm_map(dev, (void *)(uintptr_t)(2 * MIB), 2 * MIB), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, (void *)(uintptr_t)(2 * MIB), 2 * MIB), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_release(dev, (void *)(uintptr_t)(2 * MIB), 2 * MIB), GK_EUNAVAIL);
    gk_device_close(dev);
}

static void test_vm_backed(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,granularity=64KiB,backed=1");
    const size_t g = 64 * KIB;
    unsigned char *src = malloc(2 * g), *out = malloc(2 * g);
    assert_non_null(src);
    assert_non_null(out);
    for (size_t i = 0; i < 2 * g; i++)
        src[i] = (unsigned char)(i * 31 + 7);
    void *base, *d;
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 2 * g, &base));
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 2 * g));
    GK_ASSERT_OK(gk_device_malloc(dev, 2 * g, &d));
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, base, src, 2 * g, NULL));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d, base, 2 * g, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, d, 2 * g, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, -1));
    assert_memory_equal(out, src, 2 * g);
    /* Unmapping drops the physical memory: a new mapping starts empty. */
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, 2 * g));
    GK_ASSERT_OK(gk_device_vm_map(dev, base, g));
    memset(out, 0xAA, g);
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, base, g, NULL));
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    for (size_t i = 0; i < g; i++)
        assert_int_equal(out[i], 0);
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, g));
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 2 * g));
    GK_ASSERT_OK(gk_device_free(dev, d));
    free(src);
    free(out);
    gk_device_close(dev);
}

/* --- copies and lazy streams ------------------------------------------------------------- */

static void test_copy_reads_source_late(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,backed=1");
    gk_stream *s;
    char src[64], out[64], want[64];
    void *d;
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_device_malloc(dev, sizeof src, &d));
    memset(src, 'a', sizeof src);
    memset(out, 'z', sizeof out);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, sizeof src, s));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, d, sizeof out, s));
    /* Nothing has run: the destination is untouched, and the source may still change. */
    memset(want, 'z', sizeof want);
    assert_memory_equal(out, want, sizeof out);
    memset(src, 'b', sizeof src);
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, -1));
    memset(want, 'b', sizeof want);
    assert_memory_equal(out, want, sizeof out);
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    GK_ASSERT_OK(gk_device_free(dev, d));
    gk_device_close(dev);
}

static void test_unbacked_copies_only_count(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB");
    char src[32], out[32], want[32];
    void *d, *d2;
    memset(src, 1, sizeof src);
    memset(out, 2, sizeof out);
    memcpy(want, out, sizeof want);
    GK_ASSERT_OK(gk_device_malloc(dev, sizeof src, &d));
    GK_ASSERT_OK(gk_device_malloc(dev, sizeof src, &d2));
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, sizeof src, NULL));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d2, d, sizeof src, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, d2, sizeof out, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, d2, 0, NULL)); /* no-op */
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    assert_memory_equal(out, want, sizeof out);
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.copies_htod == 1 && c.copies_dtod == 1 && c.copies_dtoh == 1);
    assert_true(c.copy_bytes == 3 * sizeof src);
    gk_device_close(dev);
}

static void test_copy_validation(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB");
    char host[512];
    void *a, *b;
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &a));
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &b));
    GK_ASSERT_OK(gk_device_free(dev, b));
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, b, host, 16, NULL), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "htod copy of 16 bytes: the destination");
    GK_ASSERT_CONTAINS(gk_last_error(), "not live device memory");
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, a, host, 512, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_memcpy_dtoh_async(dev, host, b, 16, NULL), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "dtoh copy of 16 bytes: the source");
    GK_ASSERT_ERR(gk_memcpy_dtod_async(dev, a, b, 16, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_memcpy_dtod_async(dev, b, a, 16, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_memcpy_dtod_async(dev, host, a, 16, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, host, host, 16, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, a, NULL, 16, NULL), -EINVAL);
    /* Interior ranges of a live allocation are fine. */
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, (char *)a + 128, a, 128, NULL));
    GK_ASSERT_OK(gk_device_free(dev, a));
    gk_device_close(dev);
}

typedef struct log_buf {
    char text[64];
    int n;
} log_buf;

typedef struct log_item {
    log_buf *log;
    char c;
} log_item;

static void log_fn(void *user)
{
    log_item *it = user;
    it->log->text[it->log->n++] = it->c;
}

static void test_host_fn_order(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim");
    log_buf log = {{0}, 0};
    log_item one = {&log, '1'}, two = {&log, '2'}, three = {&log, '3'}, dflt = {&log, 'd'};
    gk_stream *s;
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, log_fn, &one));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, log_fn, &two));
    GK_ASSERT_OK(gk_stream_host_fn(dev, NULL, log_fn, &dflt));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, log_fn, &three));
    assert_string_equal(log.text, ""); /* nothing runs until forced */
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, -1));
    assert_string_equal(log.text, "123");
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, -1));
    assert_string_equal(log.text, "123d");
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, 0)); /* nothing left */
    GK_ASSERT_ERR(gk_stream_host_fn(dev, s, NULL, NULL), -EINVAL);
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    gk_device_close(dev);
}

static void test_device_sync_runs_all(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim");
    log_buf log = {{0}, 0};
    log_item a = {&log, 'a'}, b = {&log, 'b'}, d = {&log, 'd'};
    gk_stream *s1, *s2;
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    GK_ASSERT_OK(gk_stream_create(dev, &s2));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s1, log_fn, &a));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s2, log_fn, &b));
    GK_ASSERT_OK(gk_stream_host_fn(dev, NULL, log_fn, &d));
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    assert_int_equal(log.n, 3);
    assert_non_null(strchr(log.text, 'a'));
    assert_non_null(strchr(log.text, 'b'));
    assert_non_null(strchr(log.text, 'd'));
    GK_ASSERT_OK(gk_stream_destroy(dev, s1));
    GK_ASSERT_OK(gk_stream_destroy(dev, s2));
    gk_device_close(dev);
}

static int hook_calls;
static gk_stream *hook_stream;

static void hook_fn(void *user, gk_stream *s)
{
    assert_ptr_equal(user, &hook_calls);
    hook_calls++;
    hook_stream = s;
}

static void test_stream_destroy_runs_pending(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim");
    log_buf log = {{0}, 0};
    log_item a = {&log, 'a'};
    gk_stream *s;
    hook_calls = 0;
    GK_ASSERT_OK(gk_device_add_stream_hook(dev, hook_fn, &hook_calls));
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, log_fn, &a));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    assert_string_equal(log.text, "a");
    assert_int_equal(hook_calls, 1);
    assert_ptr_equal(hook_stream, s);
    GK_ASSERT_OK(gk_device_remove_stream_hook(dev, hook_fn, &hook_calls));
    GK_ASSERT_ERR(gk_device_remove_stream_hook(dev, hook_fn, &hook_calls), -ENOENT);
    GK_ASSERT_OK(gk_stream_destroy(dev, NULL));
    gk_device_close(dev);
}

static gk_device *reentry_dev;
static gk_stream *reentry_stream;
static int reentry_rc;

static void reentry_fn(void *user)
{
    (void)user;
    reentry_rc = gk_stream_synchronize(reentry_dev, reentry_stream, 1.0);
}

static void test_host_fn_must_not_wait_on_its_stream(void **state)
{
    (void)state;
    reentry_dev = open_sim("sim");
    GK_ASSERT_OK(gk_stream_create(reentry_dev, &reentry_stream));
    reentry_rc = 0;
    GK_ASSERT_OK(gk_stream_host_fn(reentry_dev, reentry_stream, reentry_fn, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(reentry_dev, reentry_stream, -1));
    GK_ASSERT_ERR(reentry_rc, -EPERM);
    GK_ASSERT_CONTAINS(gk_last_error(), "host function");
    gk_device_close(reentry_dev);
}

/* --- events ------------------------------------------------------------------------------ */

static void flag_fn(void *user)
{
    (*(int *)user)++;
}

static void test_event_polls(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:event_polls=3");
    gk_stream *s;
    gk_event *e, *e2, *never;
    int flag = 0;
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_event_create(dev, &e2));
    GK_ASSERT_OK(gk_event_create(dev, &never));

    /* Ready at the third query after the record, and only then does the work run. */
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, flag_fn, &flag));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    assert_int_equal(flag, 0);
    GK_ASSERT_OK(gk_event_query(dev, e));
    assert_int_equal(flag, 1);
    GK_ASSERT_OK(gk_event_query(dev, e));

    /* Also on a stream with no work queued. */
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    /* A new record restarts the count. */
    GK_ASSERT_OK(gk_event_record(dev, e, NULL));
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    GK_ASSERT_OK(gk_event_query(dev, e));

    /* Never recorded: done. */
    GK_ASSERT_OK(gk_event_query(dev, never));
    GK_ASSERT_OK(gk_event_synchronize(dev, never, -1));

    /* Synchronizing completes it at once. */
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, flag_fn, &flag));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_event_synchronize(dev, e, -1));
    assert_int_equal(flag, 2);
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, -1));
    GK_ASSERT_OK(gk_event_query(dev, e));

    /* Events complete in stream order: when a later one is ready, so is an earlier one. */
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, flag_fn, &flag));
    GK_ASSERT_OK(gk_event_record(dev, e2, s));
    GK_ASSERT_OK(gk_event_synchronize(dev, e2, -1));
    GK_ASSERT_OK(gk_event_query(dev, e));
    /* Back-to-back records complete together. */
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_event_record(dev, e2, s));
    GK_ASSERT_ERR(gk_event_query(dev, e2), GK_ENOTREADY);
    GK_ASSERT_ERR(gk_event_query(dev, e2), GK_ENOTREADY);
    GK_ASSERT_OK(gk_event_query(dev, e2));
    GK_ASSERT_OK(gk_event_query(dev, e));

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.errors == 0); /* not-ready is not an error */
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_event_destroy(dev, e2));
    GK_ASSERT_OK(gk_event_destroy(dev, never));
    GK_ASSERT_OK(gk_event_destroy(dev, NULL));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    gk_device_close(dev);
}

static void test_cross_stream_wait(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:event_polls=1000");
    log_buf log = {{0}, 0};
    log_item a = {&log, 'A'}, b = {&log, 'B'}, c = {&log, 'C'}, d = {&log, 'D'};
    gk_stream *sa, *sb;
    gk_event *e, *never;
    GK_ASSERT_OK(gk_stream_create(dev, &sa));
    GK_ASSERT_OK(gk_stream_create(dev, &sb));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_event_create(dev, &never));
    GK_ASSERT_OK(gk_stream_host_fn(dev, sa, log_fn, &a));
    GK_ASSERT_OK(gk_event_record(dev, e, sa));
    GK_ASSERT_OK(gk_stream_wait_event(dev, sb, e));
    GK_ASSERT_OK(gk_stream_host_fn(dev, sb, log_fn, &b));
    /* Recording again later does not move what the queued wait waits for. */
    GK_ASSERT_OK(gk_stream_host_fn(dev, sa, log_fn, &c));
    GK_ASSERT_OK(gk_event_record(dev, e, sa));
    GK_ASSERT_OK(gk_stream_synchronize(dev, sb, -1));
    assert_string_equal(log.text, "AB");
    GK_ASSERT_OK(gk_stream_synchronize(dev, sa, -1));
    assert_string_equal(log.text, "ABC");
    /* Waiting on a never-recorded or complete event, or on the stream's own event, is free. */
    GK_ASSERT_OK(gk_stream_wait_event(dev, sb, never));
    GK_ASSERT_OK(gk_stream_wait_event(dev, sb, e));
    GK_ASSERT_OK(gk_event_record(dev, e, sb));
    GK_ASSERT_OK(gk_stream_wait_event(dev, sb, e));
    GK_ASSERT_OK(gk_stream_host_fn(dev, sb, log_fn, &d));
    GK_ASSERT_OK(gk_stream_synchronize(dev, sb, -1));
    assert_string_equal(log.text, "ABCD");
    /* Destroying a stream whose event is still waited on elsewhere is safe. */
    GK_ASSERT_OK(gk_stream_host_fn(dev, sa, log_fn, &a));
    GK_ASSERT_OK(gk_event_record(dev, e, sa));
    GK_ASSERT_OK(gk_stream_wait_event(dev, sb, e));
    GK_ASSERT_OK(gk_stream_host_fn(dev, sb, log_fn, &b));
    GK_ASSERT_OK(gk_stream_destroy(dev, sa));
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_OK(gk_stream_synchronize(dev, sb, -1));
    assert_string_equal(log.text, "ABCDAB");
    gk_event *other;
    gk_device *dev2 = open_sim("sim");
    GK_ASSERT_OK(gk_event_create(dev2, &other));
    GK_ASSERT_ERR(gk_stream_wait_event(dev, sb, other), -EINVAL);
    GK_ASSERT_ERR(gk_event_record(dev, other, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_stream_wait_event(dev, sb, NULL), -EINVAL);
    gk_device_close(dev2);
    GK_ASSERT_OK(gk_stream_destroy(dev, sb));
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_event_destroy(dev, never));
    gk_device_close(dev);
}

/* A missing ordering edge shows up as wrong data; the edge makes it right. */
static void test_wait_orders_data(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,backed=1,event_polls=5");
    unsigned char src[256], out[256], zero[256] = {0};
    void *d, *d2;
    gk_stream *copy, *compute;
    gk_event *e;
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(i + 1);
    GK_ASSERT_OK(gk_stream_create(dev, &copy));
    GK_ASSERT_OK(gk_stream_create(dev, &compute));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_device_malloc(dev, sizeof src, &d));
    GK_ASSERT_OK(gk_device_malloc(dev, sizeof src, &d2));

    /* Without the wait, the consumer reads d before the copy into it has run. */
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, sizeof src, copy));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d2, d, sizeof src, compute));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, d2, sizeof out, compute));
    GK_ASSERT_OK(gk_stream_synchronize(dev, compute, -1));
    assert_memory_equal(out, zero, sizeof out);
    GK_ASSERT_OK(gk_stream_synchronize(dev, copy, -1));

    /* With it, the consumer sees the data. */
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(255 - i);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, sizeof src, copy));
    GK_ASSERT_OK(gk_event_record(dev, e, copy));
    GK_ASSERT_OK(gk_stream_wait_event(dev, compute, e));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d2, d, sizeof src, compute));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, out, d2, sizeof out, compute));
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    GK_ASSERT_OK(gk_stream_synchronize(dev, compute, -1));
    assert_memory_equal(out, src, sizeof out);
    GK_ASSERT_OK(gk_event_query(dev, e)); /* the wait ran the copy stream past the record */

    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_stream_destroy(dev, copy));
    GK_ASSERT_OK(gk_stream_destroy(dev, compute));
    gk_device_close(dev); /* d and d2 are freed by close */
}

/* --- faults ------------------------------------------------------------------------------ */

static void test_fault_alloc_nth(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,granularity=64KiB,fail_alloc_nth=3");
    void *a, *b, *c, *base;
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &a));
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 128 * KIB, &base)); /* not an allocation */
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 64 * KIB));
    GK_ASSERT_ERR(gk_device_malloc(dev, 256, &b), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "injected fault");
    GK_ASSERT_CONTAINS(gk_last_error(), "fail_alloc_nth=3");
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &b)); /* once only */
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &c));
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_OK(gk_device_free(dev, b));
    GK_ASSERT_OK(gk_device_free(dev, c));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, 64 * KIB));
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 128 * KIB));
    gk_device_close(dev);

    /* vm_map counts as an allocation and can be the failing one. */
    dev = open_sim("sim:capacity=1MiB,granularity=64KiB,fail_alloc_nth=1");
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 64 * KIB, &base));
    GK_ASSERT_ERR(gk_device_vm_map(dev, base, 64 * KIB), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "vm_map of 65536 bytes");
    assert_int_equal(gk_device_sim_used(dev), 0);
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 64 * KIB));
    gk_device_close(dev);
}

/* Bit i set when allocation i failed. */
static uint64_t failure_pattern(const char *spec)
{
    gk_device *dev = open_sim(spec);
    uint64_t bits = 0;
    for (int i = 0; i < 64; i++) {
        void *p;
        int rc = gk_device_malloc(dev, 256, &p);
        if (rc == GK_EDEVOOM)
            bits |= 1ull << i;
        else
            GK_ASSERT_OK(gk_device_free(dev, p));
    }
    gk_device_close(dev);
    return bits;
}

static void test_fault_prob(void **state)
{
    (void)state;
    uint64_t a = failure_pattern("sim:fail_prob=0.5,seed=7");
    uint64_t b = failure_pattern("sim:fail_prob=0.5,seed=7");
    uint64_t c = failure_pattern("sim:fail_prob=0.5,seed=8");
    assert_true(a == b);
    assert_true(a != c);
    int n = __builtin_popcountll(a);
    assert_true(n > 10 && n < 54);
    assert_true(failure_pattern("sim:fail_prob=1") == UINT64_MAX);
    assert_true(failure_pattern("sim:fail_prob=0") == 0);
    gk_device *dev = open_sim("sim:fail_prob=1,seed=3");
    void *p;
    GK_ASSERT_ERR(gk_device_malloc(dev, 1, &p), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "at random (fail_prob=1, seed=3)");
    gk_device_close(dev);
}

static void test_fault_above_and_after_bytes(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:fail_above=1KiB");
    void *a, *b;
    GK_ASSERT_OK(gk_device_malloc(dev, 1024, &a));
    GK_ASSERT_ERR(gk_device_malloc(dev, 1025, &b), GK_EDEVOOM); /* rounds to 1280 */
    GK_ASSERT_CONTAINS(gk_last_error(), "1280 bytes is above fail_above=1024");
    GK_ASSERT_OK(gk_device_free(dev, a));
    gk_device_close(dev);

    dev = open_sim("sim:fail_after_bytes=4KiB");
    GK_ASSERT_OK(gk_device_malloc(dev, 4096, &a));
    GK_ASSERT_ERR(gk_device_malloc(dev, 1, &b), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "would exceed fail_after_bytes=4096");
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_OK(gk_device_malloc(dev, 1, &b));
    GK_ASSERT_ERR(gk_device_malloc(dev, 8192, &a), GK_EDEVOOM);
    GK_ASSERT_OK(gk_device_free(dev, b));
    gk_device_close(dev);

    dev = open_sim("sim:fail_above=0");
    GK_ASSERT_ERR(gk_device_malloc(dev, 1, &a), GK_EDEVOOM);
    gk_device_close(dev);
}

static void test_fault_event_query(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:fail_event_query_nth=2");
    gk_event *e;
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_event_record(dev, e, NULL));
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_EDRIVER);
    GK_ASSERT_CONTAINS(gk_last_error(), "event query #2");
    GK_ASSERT_OK(gk_event_query(dev, e));
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.errors == 1 && c.event_queries == 3);
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    gk_device_close(dev);
}

static void test_set_faults(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,fail_above=1,fail_alloc_nth=1");
    void *a, *b, *c;
    GK_ASSERT_ERR(gk_device_malloc(dev, 256, &a), GK_EDEVOOM);
    GK_ASSERT_ERR(gk_device_malloc(dev, 256, &a), GK_EDEVOOM);
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, "fail_alloc_nth=3"));
    /* The count restarts and the spec's fail_above is gone. */
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &a));
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, "fail_alloc_nth=2"));
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &b));
    GK_ASSERT_ERR(gk_device_malloc(dev, 256, &c), GK_EDEVOOM);
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &c));
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, "fail_after_bytes=1KiB"));
    GK_ASSERT_ERR(gk_device_malloc(dev, 512, &c), GK_EDEVOOM); /* 768 used + 512 */
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, ""));
    GK_ASSERT_OK(gk_device_malloc(dev, 512, &c));
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, NULL));

    GK_ASSERT_ERR(gk_device_sim_set_faults(dev, "capacity=1GiB"), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "\"capacity\" is not a fault key");
    GK_ASSERT_ERR(gk_device_sim_set_faults(dev, "bogus=1"), -EINVAL);
    GK_ASSERT_ERR(gk_device_sim_set_faults(dev, "fail_prob=2"), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "fail_prob: \"2\" is not a probability");
    GK_ASSERT_ERR(gk_device_sim_set_faults(dev, "fail_prob"), -EINVAL);

    /* fail_prob with its seed, and event queries, at run time. */
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, "fail_prob=1,fail_event_query_nth=1"));
    void *p;
    GK_ASSERT_ERR(gk_device_malloc(dev, 1, &p), GK_EDEVOOM);
    gk_event *e;
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_EDRIVER);
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    gk_device_close(dev);

    /* Other backends. */
    GK_ASSERT_ERR(gk_device_sim_set_faults(NULL, ""), -EINVAL);
    assert_true(gk_device_sim_clock_ns(NULL) == 0);
    assert_int_equal(gk_device_sim_used(NULL), 0);
    gk_device *host = open_sim("host");
    GK_ASSERT_ERR(gk_device_sim_set_faults(host, ""), GK_EUNAVAIL);
    GK_ASSERT_CONTAINS(gk_last_error(), "not a sim device");
    GK_ASSERT_OK(gk_device_malloc(host, 256, &p));
    assert_true(gk_device_sim_clock_ns(host) == 0);
    assert_int_equal(gk_device_sim_used(host), 0);
    GK_ASSERT_OK(gk_device_free(host, p));
    gk_device_close(host);
}

/* --- latency ----------------------------------------------------------------------------- */

static void test_clock(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:clock=virtual,alloc_latency_us=10,free_latency_us=5,"
                              "capacity=4MiB");
    void *a, *base;
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &a));
    assert_true(gk_device_sim_clock_ns(dev) == 10000);
    GK_ASSERT_OK(gk_device_free(dev, a));
    assert_true(gk_device_sim_clock_ns(dev) == 15000);
    /* A failed allocation costs its latency too. */
    GK_ASSERT_ERR(gk_device_malloc(dev, 8 * MIB, &a), GK_EDEVOOM);
    assert_true(gk_device_sim_clock_ns(dev) == 25000);
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 2 * MIB, &base));
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 2 * MIB));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, 2 * MIB));
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 2 * MIB));
    assert_true(gk_device_sim_clock_ns(dev) == 40000);
    gk_device_close(dev);

    /* clock=real spends the latency and counts it too. */
    dev = open_sim("sim:latency_us=1.5");
    GK_ASSERT_OK(gk_device_malloc(dev, 256, &a));
    GK_ASSERT_OK(gk_device_free(dev, a));
    assert_true(gk_device_sim_clock_ns(dev) == 3000);
    gk_device_close(dev);
}

/* --- counters and close ------------------------------------------------------------------ */

static void test_counters(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=1MiB,granularity=64KiB");
    gk_device_counters c;
    void *a, *b, *h, *base;
    gk_stream *s;
    gk_event *e;
    int flag = 0;
    GK_ASSERT_OK(gk_device_malloc(dev, 1000, &a));
    GK_ASSERT_OK(gk_device_malloc(dev, 24, &b));
    GK_ASSERT_OK(gk_device_free(dev, a));
    GK_ASSERT_OK(gk_device_host_alloc(dev, 100, &h));
    GK_ASSERT_OK(gk_device_host_free(dev, h));
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, flag_fn, &flag));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_stream_wait_event(dev, NULL, e));
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_OK(gk_event_synchronize(dev, e, -1));
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, -1));
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, b, b, 24, s));
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 64 * KIB, &base));
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 64 * KIB));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, base, 64 * KIB));
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 64 * KIB));
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    GK_ASSERT_ERR(gk_device_free(dev, a), -EINVAL);
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.malloc_calls == 2 && c.free_calls == 1 && c.malloc_bytes == 1024);
    assert_true(c.host_alloc_calls == 1 && c.host_free_calls == 1);
    assert_true(c.stream_creates == 1 && c.stream_destroys == 1);
    assert_true(c.stream_syncs == 2 && c.stream_waits == 1 && c.host_fns == 1);
    assert_true(c.event_creates == 1 && c.event_destroys == 1 && c.event_records == 1);
    assert_true(c.event_queries == 1 && c.event_syncs == 1);
    assert_true(c.copies_dtod == 1 && c.copy_bytes == 24);
    assert_true(c.vm_reserves == 1 && c.vm_maps == 1 && c.vm_unmaps == 1 && c.vm_releases == 1);
    assert_true(c.errors == 1);
    assert_int_equal(flag, 1);
    GK_ASSERT_ERR((gk_device_get_counters)(dev, NULL, 0), -EINVAL);
    GK_ASSERT_OK(gk_device_free(dev, b));
    gk_device_close(dev);
}

static void test_close_with_live_state(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=4MiB,granularity=64KiB,backed=1,event_polls=9");
    static char src[4096];
    void *d[8], *h, *base;
    gk_stream *s1, *s2;
    gk_event *e1, *e2;
    int flag = 0;
    for (int i = 0; i < 8; i++)
        GK_ASSERT_OK(gk_device_malloc(dev, 4096, &d[i]));
    GK_ASSERT_OK(gk_device_host_alloc(dev, 4096, &h));
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    GK_ASSERT_OK(gk_stream_create(dev, &s2));
    GK_ASSERT_OK(gk_event_create(dev, &e1));
    GK_ASSERT_OK(gk_event_create(dev, &e2));
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d[0], src, sizeof src, s1));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, h, d[0], 4096, s1));
    GK_ASSERT_OK(gk_event_record(dev, e1, s1));
    GK_ASSERT_OK(gk_stream_wait_event(dev, s2, e1));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s2, flag_fn, &flag));
    GK_ASSERT_OK(gk_event_record(dev, e2, s2));
    GK_ASSERT_OK(gk_stream_wait_event(dev, NULL, e2));
    GK_ASSERT_OK(gk_stream_host_fn(dev, NULL, flag_fn, &flag));
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 256 * KIB, &base));
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 64 * KIB));
    gk_device_close(dev);
    assert_int_equal(flag, 2); /* queued work ran before the memory went away */
    gk_device_close(NULL);
}

/* --- threads ----------------------------------------------------------------------------- */

#define STRESS_THREADS 4
#define STRESS_ITERS   200

typedef struct stress_arg {
    gk_device *dev;
    int id;
    atomic_int *host_fns_run;
    gk_event **shared; /* one per thread, recorded by its owner, waited on by its neighbour */
    int failures;
} stress_arg;

static void count_fn(void *user)
{
    atomic_fetch_add((atomic_int *)user, 1);
}

static void *stress_thread(void *p)
{
    stress_arg *arg = p;
    gk_device *dev = arg->dev;
    gk_stream *copy = NULL, *use = NULL;
    gk_event *ready = NULL;
    unsigned char *src = NULL, *out = NULL;
    if (gk_stream_create(dev, &copy) || gk_stream_create(dev, &use) ||
        gk_event_create(dev, &ready) || gk_device_host_alloc(dev, 64 * KIB, (void **)&src) ||
        gk_device_host_alloc(dev, 64 * KIB, (void **)&out)) {
        arg->failures++;
        goto out;
    }
    unsigned seed = (unsigned)arg->id * 7919u + 1;
    for (int it = 0; it < STRESS_ITERS; it++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 8) % (64 * KIB);
        void *d = NULL, *d2 = NULL;
        if (gk_device_malloc(dev, n, &d) || gk_device_malloc(dev, n, &d2)) {
            arg->failures++;
            gk_device_free(dev, d);
            continue;
        }
        memset(src, (arg->id * 31 + it) & 0xFF, n);
        int rc = gk_memcpy_htod_async(dev, d, src, n, copy);
        rc = rc ? rc : gk_event_record(dev, ready, copy);
        rc = rc ? rc : gk_event_record(dev, arg->shared[arg->id], copy);
        rc = rc ? rc : gk_stream_wait_event(dev, use, ready);
        /* A cross-thread edge: forcing `use` may run the neighbour's copy stream. */
        rc = rc ? rc : gk_stream_wait_event(dev, use, arg->shared[(arg->id + 1) % STRESS_THREADS]);
        rc = rc ? rc : gk_memcpy_dtod_async(dev, d2, d, n, use);
        rc = rc ? rc : gk_memcpy_dtoh_async(dev, out, d2, n, use);
        rc = rc ? rc : gk_stream_host_fn(dev, NULL, count_fn, arg->host_fns_run);
        if (it % 3 == 0 && rc == 0) {
            do
                rc = gk_event_query(dev, ready);
            while (rc == GK_ENOTREADY);
        }
        if (it % 50 == 0)
            rc = rc ? rc : gk_device_synchronize(dev, -1);
        rc = rc ? rc : gk_stream_synchronize(dev, use, -1);
        if (rc || memcmp(out, src, n) != 0)
            arg->failures++;
        size_t free_b, total;
        if (gk_device_mem_info(dev, &free_b, &total) || free_b > total)
            arg->failures++;
        if (gk_device_free(dev, d) || gk_device_free(dev, d2))
            arg->failures++;
    }
out:
    gk_event_destroy(dev, ready);
    gk_stream_destroy(dev, copy);
    gk_stream_destroy(dev, use);
    gk_device_host_free(dev, src);
    gk_device_host_free(dev, out);
    return NULL;
}

static void test_threads_stress(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim:capacity=64MiB,backed=1,event_polls=2");
    atomic_int host_fns_run = 0;
    pthread_t t[STRESS_THREADS];
    stress_arg args[STRESS_THREADS];
    gk_event *shared[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++)
        GK_ASSERT_OK(gk_event_create(dev, &shared[i]));
    for (int i = 0; i < STRESS_THREADS; i++) {
        args[i] = (stress_arg){dev, i, &host_fns_run, shared, 0};
        assert_int_equal(pthread_create(&t[i], NULL, stress_thread, &args[i]), 0);
    }
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    for (int i = 0; i < STRESS_THREADS; i++) {
        GK_ASSERT_OK(gk_event_query(dev, shared[i]));
        GK_ASSERT_OK(gk_event_destroy(dev, shared[i]));
    }
    assert_int_equal(atomic_load(&host_fns_run), STRESS_THREADS * STRESS_ITERS);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.malloc_calls == 2 * STRESS_THREADS * STRESS_ITERS);
    assert_true(c.free_calls == c.malloc_calls && c.errors == 0);
    gk_device_close(dev);
}

typedef struct blocker {
    atomic_int started, release;
} blocker;

static void block_fn(void *user)
{
    blocker *b = user;
    atomic_store(&b->started, 1);
    while (!atomic_load(&b->release)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

typedef struct sync_arg {
    gk_device *dev;
    gk_stream *s;
    int rc;
} sync_arg;

static void *sync_thread(void *p)
{
    sync_arg *a = p;
    a->rc = gk_stream_synchronize(a->dev, a->s, -1);
    return NULL;
}

/* A wait for work another thread is running honours its timeout. */
static void test_timeout_on_busy_stream(void **state)
{
    (void)state;
    gk_device *dev = open_sim("sim");
    blocker b;
    atomic_init(&b.started, 0);
    atomic_init(&b.release, 0);
    gk_stream *s;
    gk_event *e;
    int flag = 0;
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, block_fn, &b));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s, flag_fn, &flag));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    sync_arg arg = {dev, s, 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sync_thread, &arg), 0);
    while (!atomic_load(&b.started)) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    GK_ASSERT_ERR(gk_stream_synchronize(dev, s, 0.02), -ETIMEDOUT);
    GK_ASSERT_CONTAINS(gk_last_error(), "timed out");
    GK_ASSERT_ERR(gk_event_synchronize(dev, e, 0.02), -ETIMEDOUT);
    GK_ASSERT_ERR(gk_device_synchronize(dev, 0.02), -ETIMEDOUT);
    /* A query never blocks: work another thread is running means not ready yet. */
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    atomic_store(&b.release, 1);
    pthread_join(t, NULL);
    GK_ASSERT_OK(arg.rc);
    assert_int_equal(flag, 1);
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    gk_device_close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_props),
        cmocka_unit_test(test_canonical_spec),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_backed_too_large),
        cmocka_unit_test(test_first_fit_and_coalescing),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_capacity_exhaustion),
        cmocka_unit_test(test_bad_frees),
        cmocka_unit_test(test_host_memory),
        cmocka_unit_test(test_vm),
        cmocka_unit_test(test_vm_off),
        cmocka_unit_test(test_vm_backed),
        cmocka_unit_test(test_copy_reads_source_late),
        cmocka_unit_test(test_unbacked_copies_only_count),
        cmocka_unit_test(test_copy_validation),
        cmocka_unit_test(test_host_fn_order),
        cmocka_unit_test(test_device_sync_runs_all),
        cmocka_unit_test(test_stream_destroy_runs_pending),
        cmocka_unit_test(test_host_fn_must_not_wait_on_its_stream),
        cmocka_unit_test(test_event_polls),
        cmocka_unit_test(test_cross_stream_wait),
        cmocka_unit_test(test_wait_orders_data),
        cmocka_unit_test(test_fault_alloc_nth),
        cmocka_unit_test(test_fault_prob),
        cmocka_unit_test(test_fault_above_and_after_bytes),
        cmocka_unit_test(test_fault_event_query),
        cmocka_unit_test(test_set_faults),
        cmocka_unit_test(test_clock),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_close_with_live_state),
        cmocka_unit_test(test_threads_stress),
        cmocka_unit_test(test_timeout_on_busy_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
