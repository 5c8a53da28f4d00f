/* The loader's three ordering edges on the sim device (lazily executed streams, device memory
 * backed by host memory): a consumer "kernel" (a host function on the caller's stream) checks the
 * device slot's bytes when it runs, and with every edge in place no check ever fails, with 0, 1 or
 * 2 workers. test_loader_edges.c shows that removing any one edge is detected. */
/* gk-labels: unit threads */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#include "loader_scenario.h"

#define SIM "sim:capacity=16MiB,va_size=16MiB,backed=1"

static void test_all_edges_hold(void **state)
{
    (void)state;
    for (int pool = 0; pool <= 1; pool++) {
        for (int workers = 0; workers <= 2; workers++) {
            assert_int_equal(run(SIM, 0, workers, 1, pool), 0);
            assert_int_equal(run(SIM, 0, workers, 0, pool), 0);
        }
    }
}

/* Destroy mid-epoch waits for the caller's queued work that reads a slot (released or still held)
 * before it frees the device slots: the checks have run, on the right bytes, before destroy
 * returns. */
static void test_destroy_waits_for_caller(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open(SIM, &dev));
    gk_stream *stream;
    GK_ASSERT_OK(gk_stream_create(dev, &stream));
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, NULL, "synth", &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = BATCH;
    cfg.workers = 1;
    cfg.depth = 3;
    cfg.seed = 3;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    static check checks[2];
    atomic_int bad, ran;
    atomic_init(&bad, 0);
    atomic_init(&ran, 0);
    for (int k = 0; k < 2; k++) {
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
    }
    assert_int_equal(atomic_load(&ran), 0); /* lazily queued */
    gk_loader_destroy(ld);
    assert_int_equal(atomic_load(&ran), 2);
    assert_int_equal(atomic_load(&bad), 0);
    GK_ASSERT_OK(gk_stream_synchronize(dev, stream, 20));
    gk_dataset_destroy(ds);
    GK_ASSERT_OK(gk_stream_destroy(dev, stream));
    gk_device_close(dev);
}

/* A create that runs out of device memory part-way (the ninth slot) fails with GK_EDEVOOM, says
 * which slot, and gives back everything it had allocated. */
static void test_failed_create_unwinds_device(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=1MiB,va_size=1MiB,backed=1", &dev));
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, NULL, "synth", &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = 4096; /* 128 KiB slots: 1 MiB holds 8 of the 12 asked for */
    cfg.workers = 2;
    cfg.depth = 12;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    gk_loader *ld = NULL;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), GK_EDEVOOM);
    assert_null(ld);
    GK_ASSERT_CONTAINS(gk_last_error(), "device slot");
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_true(c.malloc_calls > 0);
    assert_int_equal(c.malloc_calls - c.errors, c.free_calls);
    assert_int_equal(c.host_alloc_calls, c.host_free_calls);
    assert_int_equal(c.event_creates, c.event_destroys);
    assert_int_equal(c.stream_creates, c.stream_destroys);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_dataset_destroy(ds);
    gk_device_close(dev);
}

/* With device slots from a pool whose limit lets only 8 of the 12 slots in, create fails with
 * GK_EDEVOOM and a message naming the pool and the slot, and gives every block back. */
static void test_pool_oom_unwinds(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open(SIM, &dev));
    gk_pool_config pc;
    gk_pool_config_default(&pc);
    pc.limit_bytes = 4 << 20; /* two 2 MiB small-pool segments: 8 slots of 512 KiB */
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, &pc, &pool));
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, NULL, "synth", &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = (512 << 10) / (ITEM_WORDS * sizeof(uint64_t));
    cfg.workers = 2;
    cfg.depth = 12;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    cfg.pool = pool;
    gk_loader *ld = NULL;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), GK_EDEVOOM);
    assert_null(ld);
    GK_ASSERT_CONTAINS(gk_last_error(), "device slot 8 of 12");
    GK_ASSERT_CONTAINS(gk_last_error(), "from the pool");
    gk_pool_stats ps;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &ps));
    assert_int_equal(ps.allocation[GK_POOL_ALL].current, 0);
    assert_int_equal(ps.allocation[GK_POOL_ALL].allocated, 8);
    assert_int_equal(ps.num_ooms, 1);
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.host_alloc_calls, c.host_free_calls);
    assert_int_equal(c.event_creates, c.event_destroys);
    assert_int_equal(c.stream_creates, c.stream_destroys);
    /* The same pool then serves a loader that fits. */
    cfg.depth = 8;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    assert_non_null(b.device);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    gk_pool_destroy(pool);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_device_close(dev);
}

/* A pool on another device is refused with a message naming the field. */
static void test_pool_other_device(void **state)
{
    (void)state;
    gk_device *dev, *other;
    GK_ASSERT_OK(gk_device_open(SIM, &dev));
    GK_ASSERT_OK(gk_device_open(SIM, &other));
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(other, NULL, &pool));
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, NULL, "synth", &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    cfg.pool = pool;
    gk_loader *ld = NULL;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "pool");
    cfg.device = NULL;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -EINVAL);
    assert_null(ld);
    gk_dataset_destroy(ds);
    gk_pool_destroy(pool);
    gk_device_close(other);
    gk_device_close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_create_unwinds_device),
        cmocka_unit_test(test_all_edges_hold),
        cmocka_unit_test(test_destroy_waits_for_caller),
        cmocka_unit_test(test_pool_oom_unwinds),
        cmocka_unit_test(test_pool_other_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
