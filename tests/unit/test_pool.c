/* The caching pool's rules, one test each, against hand-computed figures: rounding, small and
 * large pools, best fit, split and merge, the oversize rule, streams, limits, every rung of the
 * out-of-memory ladder, trim, empty_cache, invalid and double frees, statistics and scopes. */
/* gk-labels: unit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

typedef struct fx {
    gk_device *dev;
    gk_pool *pool;
} fx;

static gk_pool_stats st(gk_pool *p)
{
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(p, &s));
    return s;
}

static void open_pool(fx *f, const char *preset, const char *set)
{
    GK_ASSERT_OK(gk_device_open("host", &f->dev));
    gk_pool_config c;
    GK_ASSERT_OK(gk_pool_config_preset(&c, preset));
    c.logger.level = GK_LOG_OFF;
    char err[256] = "";
    if (set && gk_pool_config_parse(&c, set, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    GK_ASSERT_OK(gk_pool_create(f->dev, &c, &f->pool));
}

static void close_pool(fx *f)
{
    gk_pool_destroy(f->pool);
    gk_device_close(f->dev);
}

static void test_rounding_and_small_pool(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 1, NULL, &a));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 1000, NULL, &b));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, MIB, NULL, &c));
    gk_pool_stats s = st(f.pool);
    /* 512 + 1024 + 1 MiB, all in one 2 MiB small segment, packed by address. */
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].current, 512 + 1024 + MIB);
    assert_int_equal(s.allocated_bytes[GK_POOL_SMALL].current, 512 + 1024 + MIB);
    assert_int_equal(s.requested_bytes[GK_POOL_ALL].current, 1 + 1000 + MIB);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 2 * MIB);
    assert_int_equal(s.segment[GK_POOL_SMALL].current, 1);
    assert_int_equal(s.allocation[GK_POOL_ALL].current, 3);
    assert_int_equal(s.num_device_alloc, 1);
    assert_ptr_equal((char *)a + 512, b);
    assert_ptr_equal((char *)b + 1024, c);
    /* The rest of the segment is one free split block. */
    assert_int_equal(s.inactive_split[GK_POOL_SMALL].current, 1);
    assert_int_equal(s.inactive_split_bytes[GK_POOL_SMALL].current, 2 * MIB - 512 - 1024 - MIB);
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    /* Best fit: a 600 B request (1024 rounded) takes the 1 KiB hole, not the segment's tail. */
    void *d;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 600, NULL, &d));
    assert_ptr_equal(d, b);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_free(f.pool, c));
    GK_ASSERT_OK(gk_pool_free(f.pool, d));
    s = st(f.pool);
    /* Everything merged back into one unsplit block. */
    assert_int_equal(s.inactive_split[GK_POOL_ALL].current, 0);
    assert_int_equal(s.largest_free_block, 2 * MIB);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].peak, 512 + 1024 + MIB);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].allocated, 512 + 1024 + MIB + 1024);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].freed, 512 + 1024 + MIB + 1024);
    assert_int_equal(s.num_cache_hits, 3);
    GK_ASSERT_OK(gk_pool_empty_cache(f.pool));
    s = st(f.pool);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(s.num_device_free, 1);
    close_pool(&f);
}

static void test_divisions(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "divisions=4");
    void *a, *b;
    /* 5000 B with 4 divisions: between 4096 and 8192 the steps are 1024 B -> 5120. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 5000, NULL, &a));
    /* 1200 B is below 512*4, so plain 512 B rounding -> 1536. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 1200, NULL, &b));
    assert_int_equal(st(f.pool).allocated_bytes[GK_POOL_ALL].current, 5120 + 1536);
    gk_pool_free(f.pool, a);
    gk_pool_free(f.pool, b);
    close_pool(&f);
}

static void test_large_pool_segments(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 11 * MIB + 1, NULL, &b));         /* own 12 MiB segment */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 3 * MIB, NULL, &a));              /* 20 MiB segment */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 19 * MIB + 512 * KIB, NULL, &c)); /* another 20 MiB */
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.segment[GK_POOL_LARGE].current, 3);
    assert_int_equal(s.reserved_bytes[GK_POOL_LARGE].current, 20 * MIB + 12 * MIB + 20 * MIB);
    /* 11 MiB + 512 leaves < 1 MiB of its segment: not split (12 MiB allocated). 3 MiB is split
     * off its segment (17 MiB left > 1 MiB); 19.5 MiB is not (0.5 MiB left). */
    assert_int_equal(s.allocated_bytes[GK_POOL_LARGE].current, 12 * MIB + 3 * MIB + 20 * MIB);
    assert_int_equal(s.requested_bytes[GK_POOL_LARGE].current,
                     (11 * MIB + 1) + 3 * MIB + 19 * MIB + 512 * KIB);
    assert_int_equal(s.inactive_split_bytes[GK_POOL_LARGE].current, 17 * MIB);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    GK_ASSERT_OK(gk_pool_free(f.pool, c));
    /* The same request again is served from the cache. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 3 * MIB, NULL, &a));
    assert_int_equal(st(f.pool).num_device_alloc, 3);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    close_pool(&f);
}

static void test_oversize_rule(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "max_split_size=40MiB");
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 50 * MIB, NULL, &a));
    assert_int_equal(st(f.pool).oversize_allocations.current, 1);
    assert_int_equal(st(f.pool).oversize_segments.current, 1);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    /* Below max_split_size: never takes the 50 MiB oversize block. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 5 * MIB, NULL, &b));
    assert_ptr_not_equal(a, b);
    assert_int_equal(st(f.pool).num_device_alloc, 2);
    /* At/above it: takes the block only when block < request + 20 MiB (50 < 45 + 20). */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 45 * MIB, NULL, &c));
    assert_ptr_equal(a, c);
    assert_int_equal(st(f.pool).allocated_bytes[GK_POOL_ALL].current, 5 * MIB + 50 * MIB);
    GK_ASSERT_OK(gk_pool_free(f.pool, c));
    /* 50 >= 28 + 20: a 28 MiB request does not take it. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 28 * MIB, NULL, &c));
    assert_ptr_not_equal(a, c);
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    GK_ASSERT_OK(gk_pool_free(f.pool, c));
    close_pool(&f);
}

static void test_streams_keep_caches_apart(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    gk_stream *s1;
    GK_ASSERT_OK(gk_stream_create(f.dev, &s1));
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, s1, &a));
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, NULL, &b));
    assert_ptr_not_equal(a, b); /* s1's cache is not given to the default stream */
    assert_int_equal(st(f.pool).segment[GK_POOL_ALL].current, 2);
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    /* Destroying s1 hands its unsplit cached segment back to the device. */
    GK_ASSERT_OK(gk_stream_destroy(f.dev, s1));
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.segment[GK_POOL_ALL].current, 1);
    assert_int_equal(s.num_device_free, 1);
    close_pool(&f);
}

static void test_stream_destroy_rekeys_split_segment(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    gk_stream *s1;
    GK_ASSERT_OK(gk_stream_create(f.dev, &s1));
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, s1, &a));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, s1, &b));
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    GK_ASSERT_OK(gk_stream_destroy(f.dev, s1));
    /* The segment still holds a; its free part now serves the default stream. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, NULL, &c));
    assert_ptr_equal(b, c);
    assert_int_equal(st(f.pool).segment[GK_POOL_ALL].current, 1);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_free(f.pool, c));
    close_pool(&f);
}

static void test_record_stream_host(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    gk_stream *s1;
    GK_ASSERT_OK(gk_stream_create(f.dev, &s1));
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 8192, NULL, &a));
    GK_ASSERT_OK(gk_pool_record_stream(f.pool, a, s1));
    GK_ASSERT_OK(gk_pool_record_stream(f.pool, a, NULL)); /* own stream: ignored */
    GK_ASSERT_ERR(gk_pool_record_stream(f.pool, (char *)a + 512, s1), -EINVAL);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    /* host events complete at once: the next allocation polls and reuses the block. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 8192, NULL, &b));
    assert_ptr_equal(a, b);
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    GK_ASSERT_OK(gk_stream_destroy(f.dev, s1));
    close_pool(&f);
}

static void test_limit_and_oom_report(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "limit=30MiB");
    assert_int_equal(gk_pool_get_limit(f.pool), 30 * MIB);
    void *a, *b, *c;
    GK_ASSERT_OK(gk_pool_malloc_tagged(f.pool, 3 * MIB, NULL, "weights", &a));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 3 * MIB, NULL, &b));
    /* 14 MiB are free in the segment; 15 MiB needs a 16 MiB segment: 20 + 16 > 30. */
    GK_ASSERT_ERR(gk_pool_malloc(f.pool, 15 * MIB, NULL, &c), GK_EDEVOOM);
    assert_null(c);
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.num_ooms, 1);
    assert_int_equal(s.num_alloc_retries, 1);
    assert_int_equal(s.num_sync_all_streams, 1);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 20 * MIB);
    char rep[2048];
    size_t n = gk_pool_oom_report(f.pool, rep, sizeof rep);
    assert_true(n > 0 && n < sizeof rep);
    GK_ASSERT_CONTAINS(rep, "Tried to allocate 15.00 MiB");
    GK_ASSERT_CONTAINS(rep, "requested 15728640 B, rounded 15728640 B");
    GK_ASSERT_CONTAINS(rep, "30.00 MiB allowed");
    GK_ASSERT_CONTAINS(rep, "Largest free block: 14.00 MiB");
    GK_ASSERT_CONTAINS(rep, "tag \"weights\"");
    GK_ASSERT_CONTAINS(rep, "Hint: the pool limit is reached");
    /* Raising the limit lets the same request through. */
    GK_ASSERT_OK(gk_pool_set_limit(f.pool, 40 * MIB));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 15 * MIB, NULL, &c));
    gk_pool_free(f.pool, a);
    gk_pool_free(f.pool, b);
    gk_pool_free(f.pool, c);
    close_pool(&f);
}

static void test_ladder_release_cached(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "limit=40MiB");
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 12 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    /* 12 MiB cached + 30 MiB new > 40 MiB: rung 6 frees the cached segment, then retries. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 30 * MIB, NULL, &b));
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.num_alloc_retries, 1);
    assert_int_equal(s.num_sync_all_streams, 1);
    assert_int_equal(s.num_device_free, 1);
    assert_int_equal(s.num_ooms, 0);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 30 * MIB);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].peak, 30 * MIB);
    gk_pool_free(f.pool, b);
    close_pool(&f);
}

static void test_ladder_release_oversize(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "limit=100MiB,max_split_size=40MiB");
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 86 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    /* 86 >= 60 + 20: the cache cannot serve 60 MiB, and 86 + 60 > 100. Rung 5 (PyTorch's
     * release_available_cached_blocks) frees the smallest cached oversize block of at least
     * max(60, 40) MiB: the 86 MiB; no full retry. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 60 * MIB, NULL, &b));
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.num_alloc_retries, 0);
    assert_int_equal(s.num_device_free, 1);
    assert_int_equal(s.oversize_segments.current, 1);
    gk_pool_free(f.pool, b);
    /* A cached 50 MiB block is below the 70 MiB asked for: rung 5 frees it, largest first, but
     * that is not enough by PyTorch's rule (50 < 70), so rung 6 runs too and retries. */
    GK_ASSERT_OK(gk_pool_empty_cache(f.pool));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 50 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 70 * MIB, NULL, &b));
    s = st(f.pool);
    assert_int_equal(s.num_alloc_retries, 1);
    assert_int_equal(s.num_device_free, 3);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 70 * MIB);
    gk_pool_free(f.pool, b);
    close_pool(&f);
}

typedef struct pressure_ctx {
    gk_pool *pool;
    void *held;
    int calls;
    size_t asked;
} pressure_ctx;

static int on_pressure(void *user, size_t bytes)
{
    pressure_ctx *c = user;
    c->calls++;
    c->asked = bytes;
    if (!c->held)
        return 0;
    gk_pool_free(c->pool, c->held);
    c->held = NULL;
    return 1;
}

static void test_ladder_pressure_callback(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "limit=20MiB");
    pressure_ctx ctx = {f.pool, NULL, 0, 0};
    void *b;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 15 * MIB, NULL, &ctx.held));
    GK_ASSERT_OK(gk_pool_add_pressure_callback(f.pool, on_pressure, &ctx));
    /* 15 MiB took a whole 16 MiB segment and the limit allows no other: a 6 MiB request calls
     * back, which frees the 15 MiB block, and the second best fit splits it: no device call. */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 6 * MIB, NULL, &b));
    assert_int_equal(ctx.calls, 1);
    assert_int_equal(ctx.asked, 6 * MIB);
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.num_device_alloc, 1);
    assert_int_equal(s.num_alloc_retries, 0);
    GK_ASSERT_OK(gk_pool_remove_pressure_callback(f.pool, on_pressure, &ctx));
    GK_ASSERT_ERR(gk_pool_remove_pressure_callback(f.pool, on_pressure, &ctx), -ENOENT);
    gk_pool_free(f.pool, b);
    close_pool(&f);
}

static void test_ladder_gc(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "limit=100MiB,gc_threshold=0.5");
    void *p[3], *q;
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_pool_malloc(f.pool, 12 * MIB + (size_t)i * 2 * MIB, NULL, &p[i]));
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_pool_free(f.pool, p[i]));
    /* 12+14+16 = 42 MiB cached; no cached block fits 20 MiB (own segment). */
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 20 * MIB, NULL, &q));
    gk_pool_stats s = st(f.pool);
    /* 42 MiB <= 50 MiB threshold: no GC yet. */
    assert_int_equal(s.num_gc_runs, 0);
    void *r;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 22 * MIB, NULL, &r));
    s = st(f.pool);
    /* 62 MiB > 50: GC ran and freed old blocks until reserved <= 50 MiB, before the new 22. */
    assert_int_equal(s.num_gc_runs, 1);
    assert_true(s.num_device_free >= 1);
    assert_int_equal(s.num_alloc_retries, 0);
    gk_pool_free(f.pool, q);
    gk_pool_free(f.pool, r);
    close_pool(&f);
}

static void test_trim(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    void *p[3], *keep;
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_pool_malloc(f.pool, 12 * MIB + (size_t)i * 2 * MIB, NULL, &p[i]));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, NULL, &keep));
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_pool_free(f.pool, p[i]));
    size_t released = 0;
    /* 42 MiB + 2 MiB reserved; trimming to 30 MiB frees the largest first: 16 is enough. */
    GK_ASSERT_OK(gk_pool_trim(f.pool, 30 * MIB, &released));
    assert_int_equal(released, 16 * MIB);
    assert_int_equal(st(f.pool).reserved_bytes[GK_POOL_ALL].current, 28 * MIB);
    GK_ASSERT_OK(gk_pool_trim(f.pool, 0, &released));
    assert_int_equal(released, 26 * MIB); /* the small segment holds `keep` */
    gk_pool_free(f.pool, keep);
    close_pool(&f);
}

static void test_invalid_and_double_free(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    void *a;
    int local;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 100, NULL, &a));
    GK_ASSERT_ERR(gk_pool_free(f.pool, &local), -EINVAL);
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_ERR(gk_pool_free(f.pool, a), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "double free");
    GK_ASSERT_OK(gk_pool_free(f.pool, NULL));
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.num_invalid_free, 1);
    assert_int_equal(s.num_double_free, 1);
    assert_int_equal(s.allocation[GK_POOL_ALL].current, 0);
    GK_ASSERT_ERR(gk_pool_malloc(f.pool, 0, NULL, &a), -EINVAL);
    close_pool(&f);
}

static void test_scopes_and_resets(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", NULL);
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 8 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_scope_push(f.pool));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 2 * MIB, NULL, &a));
    GK_ASSERT_OK(gk_pool_scope_push(f.pool));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4 * MIB, NULL, &b));
    GK_ASSERT_OK(gk_pool_free(f.pool, b));
    gk_pool_stats inner, outer;
    GK_ASSERT_OK(gk_pool_scope_pop(f.pool, &inner));
    GK_ASSERT_OK(gk_pool_free(f.pool, a));
    GK_ASSERT_OK(gk_pool_scope_pop(f.pool, &outer));
    GK_ASSERT_ERR((gk_pool_scope_pop)(f.pool, NULL, 0), -ENOENT);
    assert_int_equal(inner.allocated_bytes[GK_POOL_ALL].peak, 6 * MIB);
    assert_int_equal(inner.allocated_bytes[GK_POOL_ALL].allocated, 4 * MIB);
    assert_int_equal(outer.allocated_bytes[GK_POOL_ALL].peak, 6 * MIB);
    assert_int_equal(outer.allocated_bytes[GK_POOL_ALL].allocated, 6 * MIB);
    assert_int_equal(outer.allocated_bytes[GK_POOL_ALL].freed, 6 * MIB);
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].peak, 8 * MIB); /* the whole-run peak */
    gk_pool_reset_peak(f.pool);
    assert_int_equal(st(f.pool).allocated_bytes[GK_POOL_ALL].peak, 0);
    assert_int_equal(st(f.pool).reserved_bytes[GK_POOL_ALL].peak, 20 * MIB);
    gk_pool_reset_accumulated(f.pool);
    s = st(f.pool);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].allocated, 0);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].freed, 0);
    for (int i = 0; i < 16; i++)
        GK_ASSERT_OK(gk_pool_scope_push(f.pool));
    GK_ASSERT_ERR(gk_pool_scope_push(f.pool), -ENOSPC);
    close_pool(&f);
}

static void test_summary_json_snapshot(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, "pytorch", "history=64");
    void *a;
    GK_ASSERT_OK(gk_pool_malloc_tagged(f.pool, 3 * MIB, NULL, "act\"1", &a));
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_summary(f.pool, m));
    fclose(m);
    GK_ASSERT_CONTAINS(
        buf, "Allocated memory      |   3072 KiB |   3072 KiB |   3072 KiB |      0 B   |");
    GK_ASSERT_CONTAINS(buf, "GPU reserved memory   |  20480 KiB |");
    /* Every line of the table is 77 characters. */
    for (char *line = buf; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        assert_int_equal(nl - line, 77);
        line = nl + 1;
    }
    free(buf);
    gk_pool_stats s = st(f.pool);
    m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_stats_json(&s, m));
    fclose(m);
    GK_ASSERT_CONTAINS(buf, "\"allocated_bytes.all.current\":3145728");
    GK_ASSERT_CONTAINS(buf, "\"reserved_bytes.large_pool.peak\":20971520");
    GK_ASSERT_CONTAINS(buf, "\"num_device_alloc\":1");
    free(buf);
    m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_snapshot_json(f.pool, m));
    fclose(m);
    GK_ASSERT_CONTAINS(buf, "\"segment_type\":\"large\"");
    GK_ASSERT_CONTAINS(buf, "\"state\":\"active_allocated\",\"tag\":\"act\\\"1\"");
    GK_ASSERT_CONTAINS(buf, "{\"action\":\"segment_alloc\"");
    GK_ASSERT_CONTAINS(buf, "{\"action\":\"alloc\"");
    free(buf);
    m = open_memstream(&buf, &len);
    assert_int_equal(gk_pool_report_live(f.pool, m), 1);
    fclose(m);
    GK_ASSERT_CONTAINS(buf, "3145728 bytes");
    free(buf);
    /* a tag with control bytes reaches the terminal escaped */
    void *b = NULL;
    GK_ASSERT_OK(gk_pool_malloc_tagged(f.pool, MIB, NULL, "x\x1b[2J\x07", &b));
    m = open_memstream(&buf, &len);
    assert_int_equal(gk_pool_report_live(f.pool, m), 2);
    fclose(m);
    GK_ASSERT_CONTAINS(buf, " tag x\\e[2J\\x07\n");
    assert_null(strchr(buf, '\x1b'));
    free(buf);
    gk_pool_free(f.pool, b);
    gk_pool_free(f.pool, a);
    close_pool(&f);
}

static void test_config_errors(void **state)
{
    (void)state;
    gk_pool_config c;
    char err[256];
    gk_pool_config_default(&c);
    GK_ASSERT_ERR(gk_pool_config_set(&c, "nope", "1", err, sizeof err), -ENOENT);
    GK_ASSERT_CONTAINS(err, "unknown pool setting \"nope\"");
    GK_ASSERT_ERR(gk_pool_config_set(&c, "limit", "12Q", err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "\"12Q\" is not a size");
    GK_ASSERT_ERR(gk_pool_config_parse(&c, "limit", err, sizeof err), -EINVAL);
    GK_ASSERT_ERR(gk_pool_config_preset(&c, "tensorflow"), -EINVAL);
    GK_ASSERT_OK(gk_pool_config_parse(&c, "max_split_size=10MiB", err, sizeof err));
    gk_device *dev;
    gk_pool *p;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    GK_ASSERT_ERR(gk_pool_create(dev, &c, &p), -EINVAL);
    assert_null(p);
    GK_ASSERT_CONTAINS(gk_last_error(), "max_split_size");
    gk_device_close(dev);
}

static void test_env_settings(void **state)
{
    (void)state;
    gk_pool_config c;
    gk_test_setenv("GK_POOL_CONF", "max_split_size=64MiB,limit=1GiB");
    /* The defaults never read the environment ... */
    gk_pool_config_default(&c);
    assert_int_equal(c.max_split_size, SIZE_MAX);
    assert_int_equal(c.limit_bytes, 0);
    /* ... gk_pool_config_from_env applies it on top of whatever preset the caller chose. */
    GK_ASSERT_OK(gk_pool_config_from_env(&c));
    assert_int_equal(c.max_split_size, 64 * MIB);
    assert_int_equal(c.limit_bytes, 1024 * MIB);
    GK_ASSERT_OK(gk_pool_config_preset(&c, "pytorch"));
    assert_int_equal(c.max_split_size, SIZE_MAX);
    GK_ASSERT_OK(gk_pool_config_from_env(&c));
    assert_int_equal(c.max_split_size, 64 * MIB);
    assert_int_equal(c.expandable_segments, 0);
    /* A bad entry: an error naming the variable, and the entries before it kept. */
    gk_test_setenv("GK_POOL_CONF", "gc_threshold=0.8,limit=lots,fraction=0.5");
    gk_pool_config_default(&c);
    GK_ASSERT_ERR(gk_pool_config_from_env(&c), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "GK_POOL_CONF");
    GK_ASSERT_CONTAINS(gk_last_error(), "\"lots\" is not a size");
    assert_true(c.gc_threshold > 0.79 && c.gc_threshold < 0.81);
    assert_int_equal(c.limit_bytes, 0);
    assert_true(c.limit_fraction == 0);
    /* GK_LOG reaches the pool's logger through the same call. */
    gk_test_setenv("GK_POOL_CONF", NULL);
    gk_test_setenv("GK_LOG", "debug");
    gk_pool_config_default(&c);
    assert_int_equal(c.logger.level, GK_LOG_WARN);
    GK_ASSERT_OK(gk_pool_config_from_env(&c));
    assert_int_equal(c.logger.level, GK_LOG_DEBUG);
    assert_int_equal(c.max_split_size, SIZE_MAX);
    /* A pool created without a config reads nothing either. */
    gk_test_setenv("GK_POOL_CONF", "limit=1MiB");
    gk_device *dev;
    gk_pool *p;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &p));
    assert_int_equal(gk_pool_get_limit(p), 0);
    gk_pool_destroy(p);
    gk_device_close(dev);
    gk_test_setenv("GK_POOL_CONF", NULL);
    gk_test_setenv("GK_LOG", "error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding_and_small_pool),
        cmocka_unit_test(test_divisions),
        cmocka_unit_test(test_large_pool_segments),
        cmocka_unit_test(test_oversize_rule),
        cmocka_unit_test(test_streams_keep_caches_apart),
        cmocka_unit_test(test_stream_destroy_rekeys_split_segment),
        cmocka_unit_test(test_record_stream_host),
        cmocka_unit_test(test_limit_and_oom_report),
        cmocka_unit_test(test_ladder_release_cached),
        cmocka_unit_test(test_ladder_release_oversize),
        cmocka_unit_test(test_ladder_pressure_callback),
        cmocka_unit_test(test_ladder_gc),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_invalid_and_double_free),
        cmocka_unit_test(test_scopes_and_resets),
        cmocka_unit_test(test_summary_json_snapshot),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_env_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
