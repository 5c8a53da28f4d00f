/* The scenario shared by test_loader_sim.c (every ordering edge in place, under ThreadSanitizer)
 * and test_loader_edges.c (each edge removed in turn): a synthetic dataset whose items encode
 * their index, a consumer "kernel" (a host function on the caller's stream) that checks the device
 * slot's bytes when it runs, and run(), which drives a loader on a sim (or cuda) device and counts
 * wrong bytes. Included by those two tests only. */
#ifndef GK_LOADER_SCENARIO_H
#define GK_LOADER_SCENARIO_H

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define ITEM_WORDS 4
#define BATCH      5
#define NBATCHES   40

static inline uint64_t synth_count(void *ctx)
{
    (void)ctx;
    return 1000;
}

static inline size_t synth_item_size(void *ctx)
{
    (void)ctx;
    return ITEM_WORDS * sizeof(uint64_t);
}

static inline int synth_read_item(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed,
                                  void *dst)
{
    (void)ctx;
    uint64_t *v = dst;
    v[0] = index;
    v[1] = seed;
    v[2] = rc->epoch;
    v[3] = ~index;
    return 0;
}

static const gk_dataset_ops synth_ops = {
    .size = sizeof(gk_dataset_ops),
    .count = synth_count,
    .item_size = synth_item_size,
    .read_item = synth_read_item,
};

/* What one consumer kernel checks: the batch's device slot against its expected items. */
typedef struct check {
    const uint64_t *dev;
    uint64_t seed, epoch;
    uint64_t indices[BATCH];
    size_t count;
    atomic_int *bad, *ran;
} check;

static inline void check_fn(void *user)
{
    check *c = user;
    int ok = 1;
    for (size_t i = 0; i < c->count; i++) {
        const uint64_t *v = c->dev + i * ITEM_WORDS;
        uint64_t idx = c->indices[i];
        ok &= v[0] == idx && v[1] == gk_item_seed(c->seed, c->epoch, idx) && v[2] == c->epoch &&
              v[3] == ~idx;
    }
    if (!ok)
        atomic_fetch_add(c->bad, 1);
    atomic_fetch_add(c->ran, 1);
}

/* Runs NBATCHES batches through a loader on `spec` and returns how many consumer checks saw
 * wrong bytes. sync_each_step: the consumer waits for its stream after each batch (as a training
 * step that reads its loss does); otherwise only at the end. use_pool: the device slots come from
 * a caching pool, whose figures must show them live while the loader runs and none after. */
static inline int run(const char *spec, unsigned drop, int workers, int sync_each_step,
                      int use_pool)
{
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open(spec, &dev));
    gk_pool *pool = NULL;
    if (use_pool)
        GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    gk_stream *stream;
    GK_ASSERT_OK(gk_stream_create(dev, &stream));
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, NULL, "synth", &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = BATCH;
    cfg.workers = workers;
    cfg.depth = 3;
    cfg.shuffle = 1;
    cfg.seed = 77;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    cfg.timeout = 20;
    cfg.test_drop_edges = drop;
    cfg.pool = pool;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_pool_stats ps;
    if (pool) {
        GK_ASSERT_OK(gk_pool_get_stats(pool, &ps));
        assert_int_equal(ps.allocation[GK_POOL_ALL].current, cfg.depth);
        assert_int_equal(ps.requested_bytes[GK_POOL_ALL].current,
                         cfg.depth * BATCH * ITEM_WORDS * sizeof(uint64_t));
    }
    static check checks[NBATCHES];
    atomic_int bad, ran;
    atomic_init(&bad, 0);
    atomic_init(&ran, 0);
    for (int k = 0; k < NBATCHES; k++) {
        gk_batch b;
        GK_ASSERT_OK(gk_loader_next(ld, stream, -1, &b));
        check *c = &checks[k];
        c->dev = b.device;
        c->seed = cfg.seed;
        c->epoch = b.epoch;
        c->count = b.count;
        memcpy(c->indices, b.indices, b.count * sizeof(uint64_t));
        c->bad = &bad;
        c->ran = &ran;
        GK_ASSERT_OK(gk_stream_host_fn(dev, stream, check_fn, c));
        if (sync_each_step)
            GK_ASSERT_OK(gk_stream_synchronize(dev, stream, 20));
    }
    GK_ASSERT_OK(gk_stream_synchronize(dev, stream, 20));
    assert_int_equal(atomic_load(&ran), NBATCHES);
    gk_loader_destroy(ld);
    if (pool) {
        /* Destroy gave every slot back: nothing live, the K blocks counted as freed. */
        GK_ASSERT_OK(gk_pool_get_stats(pool, &ps));
        assert_int_equal(ps.allocation[GK_POOL_ALL].current, 0);
        assert_int_equal(ps.allocation[GK_POOL_ALL].allocated, cfg.depth);
        assert_int_equal(ps.allocation[GK_POOL_ALL].freed, cfg.depth);
        assert_int_equal(ps.num_invalid_free + ps.num_double_free, 0);
    }
    gk_dataset_destroy(ds);
    GK_ASSERT_OK(gk_stream_destroy(dev, stream));
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return atomic_load(&bad);
}

#endif
