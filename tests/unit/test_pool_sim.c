/* The pool on the simulated GPU: expandable segments (map on demand, unmap free pages on the
 * out-of-memory ladder, against the classic segments that a fragmented device defeats),
 * cross-stream reuse only once the recorded events complete, fraction limits, and fault injection
 * at every backend call (each allocation and each event query failing in turn) leaving no leak and
 * a usable pool. */
/* gk-labels: unit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

static gk_pool_stats st(gk_pool *p)
{
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(p, &s));
    return s;
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

static void test_expandable_map_and_unmap(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool *p = make_pool(dev, "default", NULL);
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &a)); /* pages 0-1 of the large range */
    gk_pool_stats s = st(p);
    assert_int_equal(s.reserved_bytes[GK_POOL_LARGE].current, 4 * MIB);
    assert_int_equal(s.allocated_bytes[GK_POOL_LARGE].current, 3 * MIB);
    assert_int_equal(s.num_device_alloc, 1);
    assert_int_equal(gk_device_sim_used(dev), 4 * MIB);
    GK_ASSERT_OK(gk_pool_malloc(p, KIB, NULL, &b));     /* the small range: one 2 MiB page */
    GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &c)); /* [3, 6) MiB: maps page 2 only */
    assert_ptr_equal((char *)a + 3 * MIB, c);
    s = st(p);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 8 * MIB);
    assert_int_equal(s.num_device_alloc, 3);
    assert_int_equal(s.segment[GK_POOL_ALL].current, 2);
    /* Freeing a leaves page 0 wholly free and page 1 shared with c: empty_cache unmaps page 0. */
    GK_ASSERT_OK(gk_pool_free(p, a));
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    s = st(p);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 6 * MIB);
    assert_int_equal(s.num_device_free, 1);
    assert_int_equal(gk_device_sim_used(dev), 6 * MIB);
    /* The largest free mapped piece: page 1 up to c (1 MiB). */
    assert_int_equal(s.largest_free_block, 2 * MIB - KIB);
    GK_ASSERT_OK(gk_pool_free(p, b));
    GK_ASSERT_OK(gk_pool_free(p, c));
    size_t released;
    GK_ASSERT_OK(gk_pool_trim(p, 0, &released));
    assert_int_equal(released, 6 * MIB);
    assert_int_equal(gk_device_sim_used(dev), 0);
    /* empty_cache also gives the address ranges back. */
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    assert_int_equal(st(p).segment[GK_POOL_ALL].current, 0);
    gk_pool_destroy(p);
    gk_device_close(dev);
}

static void test_history_ring(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool *p = make_pool(dev, "default", "history=4");
    void *a;
    GK_ASSERT_OK(gk_pool_malloc(p, 3 * MIB, NULL, &a)); /* segment_map, alloc */
    GK_ASSERT_OK(gk_pool_free(p, a));                   /* free_requested, free_completed */
    GK_ASSERT_OK(gk_pool_empty_cache(p));               /* segment_unmap (the 5th: ring of 4) */
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_snapshot_json(p, m));
    fclose(m);
    GK_ASSERT_CONTAINS(buf, "\"device_traces\":[[{\"action\":\"alloc\"");
    GK_ASSERT_CONTAINS(buf, "{\"action\":\"free_requested\"");
    GK_ASSERT_CONTAINS(buf, "{\"action\":\"free_completed\"");
    GK_ASSERT_CONTAINS(buf, "{\"action\":\"segment_unmap\"");
    assert_null(strstr(buf, "segment_map\""));
    free(buf);
    /* OOM entries. */
    GK_ASSERT_OK(gk_pool_record_history(p, 8));
    GK_ASSERT_ERR(gk_pool_malloc(p, 65 * MIB, NULL, &a), GK_EDEVOOM);
    m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_snapshot_json(p, m));
    fclose(m);
    GK_ASSERT_CONTAINS(buf, "{\"action\":\"oom\"");
    free(buf);
    GK_ASSERT_OK(gk_pool_record_history(p, 0));
    gk_pool_destroy(p);
    gk_device_close(dev);
}

/* Little address space (the sim's va_size): later ranges are reserved smaller, not refused. */
static void test_expandable_tight_address_space(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB,va_size=100MiB", &dev));
    gk_pool *p = make_pool(dev, "default", NULL);
    gk_stream *s[3];
    void *a[3];
    for (int i = 0; i < 3; i++) {
        GK_ASSERT_OK(gk_stream_create(dev, &s[i]));
        GK_ASSERT_OK(gk_pool_malloc(p, 8 * MIB, s[i], &a[i]));
    }
    assert_int_equal(st(p).segment[GK_POOL_LARGE].current, 3);
    assert_int_equal(gk_device_sim_used(dev), 24 * MIB);
    for (int i = 0; i < 3; i++) {
        gk_pool_free(p, a[i]);
        GK_ASSERT_OK(gk_stream_destroy(dev, s[i]));
    }
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    assert_int_equal(st(p).segment[GK_POOL_ALL].current, 0);
    gk_pool_destroy(p);
    gk_device_close(dev);
}

/* A: 40 MiB, B: 20 MiB, free A, then 42 MiB on a 64 MiB device. */
static int fragmenting_sequence(gk_pool *p, void **b, void **c)
{
    void *a;
    GK_ASSERT_OK(gk_pool_malloc(p, 40 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_malloc(p, 20 * MIB, NULL, b));
    GK_ASSERT_OK(gk_pool_free(p, a));
    return gk_pool_malloc(p, 42 * MIB, NULL, c);
}

static void test_expandable_beats_fragmented_device(void **state)
{
    (void)state;
    gk_device *dev;
    void *b, *c;
    /* Classic segments: the 40 MiB hole and the 4 MiB tail cannot hold 42 MiB. */
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool *p = make_pool(dev, "pytorch", NULL);
    GK_ASSERT_ERR(fragmenting_sequence(p, &b, &c), GK_EDEVOOM);
    gk_pool_stats s = st(p);
    assert_int_equal(s.num_ooms, 1);
    assert_int_equal(s.num_alloc_retries, 1);
    char rep[2048];
    gk_pool_oom_report(p, rep, sizeof rep);
    GK_ASSERT_CONTAINS(rep, "Tried to allocate 42.00 MiB");
    GK_ASSERT_CONTAINS(rep, "on the default stream");
    GK_ASSERT_CONTAINS(rep, "of which 44.00 MiB is free");
    GK_ASSERT_CONTAINS(rep, "Hint: the device has enough free bytes but not in one piece");
    gk_pool_free(p, b);
    gk_pool_destroy(p);
    gk_device_close(dev);
    /* Expandable: the ladder unmaps the free 40 MiB and maps 42 MiB elsewhere in the range. */
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    p = make_pool(dev, "default", NULL);
    GK_ASSERT_OK(fragmenting_sequence(p, &b, &c));
    s = st(p);
    assert_int_equal(s.num_ooms, 0);
    assert_int_equal(s.num_alloc_retries, 1);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 62 * MIB);
    assert_int_equal(gk_device_sim_used(dev), 62 * MIB);
    gk_pool_free(p, b);
    gk_pool_free(p, c);
    gk_pool_destroy(p);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_device_close(dev);
}

static void test_cross_stream_reuse_waits_for_event(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB,event_polls=3", &dev));
    gk_pool *p = make_pool(dev, "pytorch", NULL);
    gk_stream *s1;
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    void *a, *x[2], *d;
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_record_stream(p, a, s1));
    GK_ASSERT_OK(gk_pool_free(p, a));
    gk_pool_stats s = st(p);
    assert_int_equal(s.allocation[GK_POOL_ALL].current, 0);
    assert_int_equal(s.active[GK_POOL_ALL].current, 1); /* waiting on s1's event */
    assert_int_equal(s.active_bytes[GK_POOL_ALL].current, 64 * KIB);
    /* The first two allocations poll the event (not ready) and must not get a's bytes. */
    for (int i = 0; i < 2; i++) {
        GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &x[i]));
        assert_ptr_not_equal(x[i], a);
    }
    /* The third poll completes it: the block is free and reused. */
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &d));
    assert_ptr_equal(d, a);
    assert_int_equal(st(p).active[GK_POOL_ALL].current, 3);
    gk_pool_free(p, x[0]);
    gk_pool_free(p, x[1]);
    gk_pool_free(p, d);
    GK_ASSERT_OK(gk_stream_destroy(dev, s1));
    gk_pool_destroy(p);
    gk_device_close(dev);
}

/* A block waiting on an event of a stream that is then destroyed: the destroy finishes the
 * stream's work, the hook completes the event and the block is free for the default stream. */
static void test_stream_destroy_completes_pending(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB,event_polls=5", &dev));
    gk_pool *p = make_pool(dev, "pytorch", NULL);
    gk_stream *s1, *s2;
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    GK_ASSERT_OK(gk_stream_create(dev, &s2));
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, s2, &a));
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, s2, &c)); /* keeps s2's segment split */
    GK_ASSERT_OK(gk_pool_record_stream(p, a, s1));
    GK_ASSERT_OK(gk_pool_free(p, a));
    assert_int_equal(st(p).active[GK_POOL_ALL].current, 2);
    GK_ASSERT_OK(gk_stream_destroy(dev, s1));
    assert_int_equal(st(p).active[GK_POOL_ALL].current, 1);
    /* s2 goes too: its segment (still holding c) moves to the default stream. */
    GK_ASSERT_OK(gk_stream_destroy(dev, s2));
    GK_ASSERT_OK(gk_pool_malloc(p, 64 * KIB, NULL, &b));
    assert_ptr_equal(a, b);
    gk_pool_free(p, b);
    gk_pool_free(p, c);
    gk_pool_destroy(p);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_device_close(dev);
}

static void test_fraction_limit(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool *p = make_pool(dev, "pytorch", "fraction=0.5");
    assert_int_equal(gk_pool_get_limit(p), 32 * MIB);
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(p, 20 * MIB, NULL, &a));
    GK_ASSERT_ERR(gk_pool_malloc(p, 14 * MIB, NULL, &b), GK_EDEVOOM);
    char rep[2048];
    gk_pool_oom_report(p, rep, sizeof rep);
    GK_ASSERT_CONTAINS(rep, "32.00 MiB allowed");
    GK_ASSERT_CONTAINS(rep, "Device sim:capacity=64MiB has a total capacity of 64.00 MiB");
    gk_pool_free(p, a);
    gk_pool_destroy(p);
    gk_device_close(dev);
}

/* A fixed workload: mixed sizes, two streams, record_stream, frees in between. Failures are
 * allowed (faults); everything it holds is freed at the end. */
static void workload(gk_device *dev, gk_pool *p)
{
    gk_stream *s1 = NULL;
    gk_stream_create(dev, &s1);
    static const size_t sizes[] = {512,     3 * MIB,  700 * KIB, 12 * MIB, 100,      25 * MIB,
                                   2 * MIB, 64 * KIB, 11 * MIB,  4 * KIB,  30 * MIB, 1 * MIB + 1};
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
    }
    for (int i = 0; i < 12; i++)
        gk_pool_free(p, held[i]);
    gk_stream_destroy(dev, s1);
}

static void check_clean_and_usable(gk_device *dev, gk_pool *p, const char *what, int n)
{
    gk_pool_stats s = st(p);
    if (s.allocation[GK_POOL_ALL].current != 0 || s.allocated_bytes[GK_POOL_ALL].current != 0 ||
        s.requested_bytes[GK_POOL_ALL].current != 0 || s.num_invalid_free || s.num_double_free)
        fail_msg("%s, fault %d: stats not back to zero", what, n);
    GK_ASSERT_OK(gk_device_sim_set_faults(dev, ""));
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    s = st(p);
    if (s.reserved_bytes[GK_POOL_ALL].current != 0 || s.active[GK_POOL_ALL].current != 0 ||
        gk_device_sim_used(dev) != 0)
        fail_msg("%s, fault %d: %lld reserved, %zu used on the device after empty_cache", what, n,
                 (long long)s.reserved_bytes[GK_POOL_ALL].current, gk_device_sim_used(dev));
    /* Still usable: the same workload runs without faults and ends clean again. */
    workload(dev, p);
    GK_ASSERT_OK(gk_pool_empty_cache(p));
    if (gk_device_sim_used(dev) != 0 || st(p).allocation[GK_POOL_ALL].current != 0)
        fail_msg("%s, fault %d: not reusable", what, n);
}

static void fault_loop(const char *preset, const char *key)
{
    /* How many backend calls of that kind the workload makes, measured without faults. */
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=96MiB,event_polls=2", &dev));
    gk_pool *p = make_pool(dev, preset, NULL);
    gk_device_counters before, after;
    gk_device_get_counters(dev, &before);
    workload(dev, p);
    gk_device_get_counters(dev, &after);
    gk_pool_destroy(p);
    gk_device_close(dev);
    uint64_t calls =
        strcmp(key, "fail_alloc_nth") == 0
            ? (after.malloc_calls - before.malloc_calls) + (after.vm_maps - before.vm_maps)
            : after.event_queries - before.event_queries;
    assert_true(calls >= 5); /* the loop below must exercise many distinct calls */
    for (uint64_t n = 1; n <= calls + 1; n++) {
        GK_ASSERT_OK(gk_device_open("sim:capacity=96MiB,event_polls=2", &dev));
        p = make_pool(dev, preset, NULL);
        char faults[64];
        snprintf(faults, sizeof faults, "%s=%llu", key, (unsigned long long)n);
        GK_ASSERT_OK(gk_device_sim_set_faults(dev, faults));
        workload(dev, p);
        check_clean_and_usable(dev, p, preset, (int)n);
        gk_pool_destroy(p);
        assert_int_equal(gk_device_sim_used(dev), 0);
        gk_device_close(dev);
    }
}

static void test_fault_every_allocation_pytorch(void **state)
{
    (void)state;
    fault_loop("pytorch", "fail_alloc_nth");
}

static void test_fault_every_allocation_expandable(void **state)
{
    (void)state;
    fault_loop("default", "fail_alloc_nth");
}

static void test_fault_every_event_query(void **state)
{
    (void)state;
    fault_loop("pytorch", "fail_event_query_nth");
}

static void test_fault_probability(void **state)
{
    (void)state;
    for (int seed = 1; seed <= 20; seed++) {
        gk_device *dev;
        char spec[96];
        snprintf(spec, sizeof spec, "sim:capacity=96MiB,fail_prob=0.3,seed=%d", seed);
        GK_ASSERT_OK(gk_device_open(spec, &dev));
        gk_pool *p = make_pool(dev, seed % 2 ? "default" : "pytorch", NULL);
        workload(dev, p);
        check_clean_and_usable(dev, p, "fail_prob", seed);
        gk_pool_destroy(p);
        gk_device_close(dev);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expandable_map_and_unmap),
        cmocka_unit_test(test_expandable_beats_fragmented_device),
        cmocka_unit_test(test_cross_stream_reuse_waits_for_event),
        cmocka_unit_test(test_stream_destroy_completes_pending),
        cmocka_unit_test(test_expandable_tight_address_space),
        cmocka_unit_test(test_fraction_limit),
        cmocka_unit_test(test_history_ring),
        cmocka_unit_test(test_fault_every_allocation_pytorch),
        cmocka_unit_test(test_fault_every_allocation_expandable),
        cmocka_unit_test(test_fault_every_event_query),
        cmocka_unit_test(test_fault_probability),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
