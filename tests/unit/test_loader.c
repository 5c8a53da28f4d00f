/* The loader's ring and workers: identical output for any number of workers (also with batches
 * split across workers and random per-item delays), resume equal to an uninterrupted run, errors at
 * exactly their batch, skip policy, timeouts with their diagnostic, shutdown mid-epoch, failed
 * create, held batches, the host device stage, the statistics, workers = -1 and the usable-CPU
 * count behind it (affinity, cgroup v1 and v2 quotas). */
/* gk-labels: unit threads */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gk_test.h"
#include "loader/loader_int.h"

/* A synthetic dataset: item i is {i, gk_item_seed(seed, epoch, i), epoch, ~i}. */
typedef struct synth {
    uint64_t count;
    int64_t fail_index[2]; /* -1: none */
    int64_t block_index;   /* read of this index waits until unblocked */
    atomic_int unblocked;
    int delays;           /* small per-item sleeps that vary with the index */
    int fail_open_worker; /* -1: none */
    atomic_int opens, closes;
    int use_batch; /* provide read_batch */
} synth;

#define ITEM_WORDS 4

static uint64_t synth_count(void *ctx)
{
    return ((synth *)ctx)->count;
}

static size_t synth_item_size(void *ctx)
{
    (void)ctx;
    return ITEM_WORDS * sizeof(uint64_t);
}

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static int synth_read_item(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    synth *s = ctx;
    if ((int64_t)index == s->fail_index[0] || (int64_t)index == s->fail_index[1]) {
        snprintf(rc->err, rc->err_len, "synth: item %llu is bad", (unsigned long long)index);
        return -EIO;
    }
    if ((int64_t)index == s->block_index)
        while (!atomic_load(&s->unblocked))
            nap_us(200);
    if (s->delays && index % 5 == 0)
        nap_us((long)(index % 3) * 150);
    uint64_t *v = dst;
    v[0] = index;
    v[1] = seed;
    v[2] = rc->epoch;
    v[3] = ~index;
    return 0;
}

static int synth_read_batch(void *ctx, gk_read_ctx *rc, const uint64_t *idx, size_t n, void *dst)
{
    for (size_t i = 0; i < n; i++) {
        int e = synth_read_item(ctx, rc, idx[i], gk_item_seed(rc->seed, rc->epoch, idx[i]),
                                (uint64_t *)dst + i * ITEM_WORDS);
        if (e) {
            rc->failed_index = idx[i];
            return e;
        }
    }
    return 0;
}

static int synth_open(void *ctx, int worker, void **state, char *err, size_t len)
{
    synth *s = ctx;
    atomic_fetch_add(&s->opens, 1);
    if (worker == s->fail_open_worker) {
        snprintf(err, len, "no scratch for worker %d", worker);
        return -ENOMEM;
    }
    *state = s;
    return 0;
}

static void synth_close(void *ctx, int worker, void *state)
{
    (void)worker;
    synth *s = ctx;
    assert_ptr_equal(state, s);
    atomic_fetch_add(&s->closes, 1);
}

static const gk_dataset_ops synth_ops = {
    .size = sizeof(gk_dataset_ops),
    .count = synth_count,
    .item_size = synth_item_size,
    .read_item = synth_read_item,
    .worker_open = synth_open,
    .worker_close = synth_close,
};

static const gk_dataset_ops synth_batch_ops = {
    .size = sizeof(gk_dataset_ops),
    .count = synth_count,
    .item_size = synth_item_size,
    .read_item = synth_read_item,
    .read_batch = synth_read_batch,
    .worker_open = synth_open,
    .worker_close = synth_close,
};

static void synth_init(synth *s, uint64_t count)
{
    memset(s, 0, sizeof *s);
    s->count = count;
    s->fail_index[0] = s->fail_index[1] = -1;
    s->block_index = -1;
    s->fail_open_worker = -1;
    atomic_store(&s->unblocked, 0);
}

static gk_dataset *synth_dataset(synth *s)
{
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(s->use_batch ? &synth_batch_ops : &synth_ops, s, "synth", &ds));
    return ds;
}

static gk_loader_config base_config(int workers)
{
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.workers = workers;
    cfg.batch_size = 7;
    cfg.depth = 3;
    cfg.seed = 1234;
    cfg.shuffle = 1;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.timeout = 20;
    return cfg;
}

/* Checks a batch against the sampler directly: indices, then each item's bytes. */
static void check_batch(const gk_loader_config *cfg, uint64_t count, const gk_batch *b,
                        const void *data)
{
    gk_sampler smp;
    GK_ASSERT_OK(gk_sampler_init(&smp, count, cfg->batch_size, cfg->seed, cfg->rank, cfg->world,
                                 cfg->shuffle, cfg->shard_drop_last, cfg->drop_last, NULL, 0));
    uint64_t want[64];
    size_t n = gk_sampler_batch(&smp, b->epoch, b->index, want);
    assert_int_equal(b->count, n);
    assert_int_equal(b->bytes, n * ITEM_WORDS * 8);
    assert_int_equal(b->last_in_epoch, b->index + 1 == smp.batches);
    const uint64_t *v = data;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(b->indices[i], want[i]);
        assert_int_equal(v[i * ITEM_WORDS + 0], want[i]);
        assert_int_equal(v[i * ITEM_WORDS + 1], gk_item_seed(cfg->seed, b->epoch, want[i]));
        assert_int_equal(v[i * ITEM_WORDS + 2], b->epoch);
        assert_int_equal(v[i * ITEM_WORDS + 3], ~want[i]);
    }
}

/* Runs a loader to the end (cfg.epochs), checking every batch and its position; returns the
 * number of batches. */
static uint64_t run_all(gk_loader_config cfg, synth *s)
{
    gk_dataset *ds = synth_dataset(s);
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    uint64_t per = gk_loader_batches_per_epoch(ld), k = 0;
    gk_batch b;
    int rc;
    while ((rc = gk_loader_next(ld, NULL, -1, &b)) == 0) {
        assert_int_equal(b.epoch, cfg.epoch + k / per);
        assert_int_equal(b.index, k % per);
        assert_int_equal(b.seq, k);
        check_batch(&cfg, s->count, &b, b.host);
        k++;
    }
    GK_ASSERT_ERR(rc, GK_LOADER_END);
    GK_ASSERT_ERR(gk_loader_next(ld, NULL, -1, &b), GK_LOADER_END);
    assert_int_equal(k, per * cfg.epochs);
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    assert_int_equal(st.batches, k);
    assert_int_equal(st.depth, cfg.depth);
    assert_true(st.first_batch_ns > 0);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    return k;
}

static void test_same_output_any_workers(void **state)
{
    (void)state;
    static const int workers[] = {0, 1, 2, 4};
    for (int batch = 0; batch < 2; batch++) {
        for (size_t i = 0; i < 4; i++) {
            synth s;
            synth_init(&s, 100);
            s.delays = 1;
            s.use_batch = batch;
            gk_loader_config cfg = base_config(workers[i]);
            cfg.epochs = 3;
            cfg.epoch = 2;
            assert_int_equal(run_all(cfg, &s), 3 * 15);
            assert_int_equal(atomic_load(&s.opens), workers[i] ? workers[i] : 1);
            assert_int_equal(atomic_load(&s.closes), atomic_load(&s.opens));
        }
    }
}

static void test_split_batches_and_flags(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 103);
    gk_loader_config cfg = base_config(4);
    cfg.batch_size = 10;
    cfg.split_bytes = 1; /* every batch split over the 4 workers */
    cfg.epochs = 2;
    assert_int_equal(run_all(cfg, &s), 2 * 11);
    cfg.drop_last = 1;
    assert_int_equal(run_all(cfg, &s), 2 * 10);
    cfg.workers = 3;
    cfg.world = 3;
    cfg.rank = 2;
    cfg.drop_last = 0;
    cfg.shard_drop_last = 1; /* 34 per rank -> 4 batches */
    assert_int_equal(run_all(cfg, &s), 2 * 4);
    cfg.shuffle = 0;
    cfg.shard_drop_last = 0; /* 35 per rank -> 4 batches */
    assert_int_equal(run_all(cfg, &s), 2 * 4);
}

/* Collects (epoch, index, first index) of up to n batches from ld. */
static size_t take(gk_loader *ld, const gk_loader_config *cfg, uint64_t count, size_t n,
                   uint64_t *out, gk_batch *last)
{
    gk_batch b;
    size_t k = 0;
    while (k < n && gk_loader_next(ld, NULL, -1, &b) == 0) {
        check_batch(cfg, count, &b, b.host);
        out[k++] = b.epoch * 1000 + b.index;
        *last = b;
    }
    return k;
}

static void test_resume_equals_uninterrupted(void **state)
{
    (void)state;
    for (int workers = 0; workers <= 2; workers += 2) {
        synth s;
        synth_init(&s, 60);
        gk_dataset *ds = synth_dataset(&s);
        gk_loader_config cfg = base_config(workers);
        cfg.epochs = 2;
        uint64_t whole[64], parts[64];
        gk_loader *ld;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch last;
        size_t n = take(ld, &cfg, 60, 64, whole, &last);
        assert_int_equal(n, 18);
        gk_loader_destroy(ld);
        /* 4 batches, save; 2 more, save (same epoch); then the rest. */
        static const size_t steps[] = {4, 2, 64};
        gk_loader_state st;
        size_t k = 0;
        for (int i = 0; i < 3; i++) {
            GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
            if (i)
                GK_ASSERT_OK(gk_loader_restore(ld, &st));
            k += take(ld, &cfg, 60, steps[i], parts + k, &last);
            GK_ASSERT_OK(gk_loader_get_state(ld, &st));
            if (i < 2) {
                /* the last batch taken is still held: the state counts released batches only */
                assert_int_equal(st.epoch * 1000 + st.batch, parts[k - 1]);
                GK_ASSERT_OK(gk_loader_release(ld, &last, NULL));
                GK_ASSERT_OK(gk_loader_get_state(ld, &st));
            } else {
                /* at the end, next released the last batch before returning GK_LOADER_END */
                assert_int_equal(st.epoch, 2);
                assert_int_equal(st.batch, 0);
            }
            gk_loader_destroy(ld);
            if (i == 0)
                assert_int_equal(st.batch, 4);
            else if (i == 1)
                assert_int_equal(st.batch, 6);
        }
        assert_int_equal(k, n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(parts[i], whole[i]);
        gk_dataset_destroy(ds);
    }
}

static void test_restore_refuses_mismatch(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 60);
    gk_dataset *ds = synth_dataset(&s);
    gk_loader_config cfg = base_config(1);
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_loader_state st;
    GK_ASSERT_OK(gk_loader_get_state(ld, &st));
    assert_int_equal(st.version, GK_LOADER_STATE_VERSION);
    assert_int_equal(st.count, 60);
    assert_int_equal(st.batch_size, 7);
    gk_loader_state bad = st;
    bad.batch_size = 8;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EMISMATCH);
    GK_ASSERT_CONTAINS(gk_last_error(), "saved batch_size is 8 but this loader has 7");
    bad = st;
    bad.seed = 1;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EMISMATCH);
    GK_ASSERT_CONTAINS(gk_last_error(), "seed");
    bad = st;
    bad.world = 2; /* another world size resumes from the global position (test_loader_elastic) */
    GK_ASSERT_OK(gk_loader_restore(ld, &bad));
    bad = st;
    bad.position = 61; /* past the epoch's 60 samples */
    bad.world = 3;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EMISMATCH);
    GK_ASSERT_CONTAINS(gk_last_error(), "global position 61");
    bad = st;
    bad.flags = 0;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EMISMATCH);
    GK_ASSERT_CONTAINS(gk_last_error(), "flags");
    bad = st;
    bad.version = GK_LOADER_STATE_VERSION + 1;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EVERSION);
    bad.version = 0;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EVERSION);
    bad = st;
    bad.batch = 9;
    GK_ASSERT_ERR(gk_loader_restore(ld, &bad), GK_EMISMATCH);
    /* set_epoch and seek move the position */
    GK_ASSERT_OK(gk_loader_set_epoch(ld, 4));
    gk_batch b;
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    assert_int_equal(b.epoch, 4);
    assert_int_equal(b.index, 0);
    assert_int_equal(b.seq, 0);
    GK_ASSERT_ERR(gk_loader_seek(ld, 0, 9), -EINVAL);
    GK_ASSERT_OK(gk_loader_seek(ld, 1, 8));
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    assert_int_equal(b.epoch, 1);
    assert_int_equal(b.index, 8);
    check_batch(&cfg, 60, &b, b.host);
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    assert_int_equal(b.epoch, 2);
    assert_int_equal(b.index, 0);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

static void test_error_at_its_batch(void **state)
{
    (void)state;
    for (int workers = 0; workers <= 2; workers++) {
        synth s;
        synth_init(&s, 100);
        s.fail_index[0] = 37;
        gk_dataset *ds = synth_dataset(&s);
        gk_loader_config cfg = base_config(workers);
        cfg.shuffle = 0;
        gk_loader *ld;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch b;
        for (int i = 0; i < 5; i++) {
            GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
            check_batch(&cfg, 100, &b, b.host);
        }
        GK_ASSERT_ERR(gk_loader_next(ld, NULL, -1, &b), -EIO);
        GK_ASSERT_CONTAINS(gk_last_error(), "batch 5 of epoch 0 (dataset index 37)");
        GK_ASSERT_CONTAINS(gk_last_error(), "synth: item 37 is bad");
        GK_ASSERT_ERR(gk_loader_next(ld, NULL, -1, &b), -EIO);
        /* a seek past the bad batch recovers */
        GK_ASSERT_OK(gk_loader_seek(ld, 0, 6));
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        assert_int_equal(b.index, 6);
        gk_loader_destroy(ld);
        gk_dataset_destroy(ds);
    }
}

static void test_skip_policy(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 100);
    s.fail_index[0] = 10;
    s.fail_index[1] = 50;
    s.use_batch = 1;
    gk_dataset *ds = synth_dataset(&s);
    gk_loader_config cfg = base_config(2);
    cfg.shuffle = 0;
    cfg.on_error = GK_LOADER_SKIP;
    cfg.max_skips = 1;
    cfg.logger.level = GK_LOG_OFF;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    uint64_t seen[20];
    int k = 0, rc;
    while ((rc = gk_loader_next(ld, NULL, -1, &b)) == 0)
        seen[k++] = b.index;
    GK_ASSERT_ERR(rc, -EIO);
    GK_ASSERT_CONTAINS(gk_last_error(), "dataset index 50");
    assert_int_equal(k, 6); /* batches 0, 2..6; batch 7 (items 49..55) fails */
    assert_int_equal(seen[0], 0);
    assert_int_equal(seen[1], 2); /* batch 1 (items 7..13) was skipped */
    assert_int_equal(seen[5], 6);
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    assert_int_equal(st.skips, 1);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

static void test_timeout_diagnostic(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 100);
    s.block_index = 3;
    gk_dataset *ds = synth_dataset(&s);
    gk_loader_config cfg = base_config(1);
    cfg.shuffle = 0;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    GK_ASSERT_ERR(gk_loader_next(ld, NULL, 0.05, &b), -ETIMEDOUT);
    const char *msg = gk_last_error();
    GK_ASSERT_CONTAINS(msg, "batch 0 (epoch 0, batch 0) not ready");
    GK_ASSERT_CONTAINS(msg, "worker 0 has been inside the read of dataset index 3");
    GK_ASSERT_ERR(gk_loader_next(ld, NULL, 0, &b), -ETIMEDOUT);
    atomic_store(&s.unblocked, 1);
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    check_batch(&cfg, 100, &b, b.host);
    assert_int_equal(b.index, 0);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

static void test_destroy_mid_epoch(void **state)
{
    (void)state;
    for (int workers = 0; workers <= 4; workers += 2) {
        synth s;
        synth_init(&s, 5000);
        s.delays = 1;
        gk_dataset *ds = synth_dataset(&s);
        gk_loader_config cfg = base_config(workers);
        cfg.depth = 6;
        gk_loader *ld;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch b;
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        gk_loader_stop(ld);
        gk_loader_stop(ld);
        GK_ASSERT_ERR(gk_loader_next(ld, NULL, -1, &b), -ECANCELED);
        gk_loader_destroy(ld);
        assert_int_equal(atomic_load(&s.closes), atomic_load(&s.opens));
        /* destroy straight after create, workers running */
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_loader_destroy(ld);
        assert_int_equal(atomic_load(&s.closes), atomic_load(&s.opens));
        gk_dataset_destroy(ds);
    }
    gk_loader_destroy(NULL);
    gk_loader_stop(NULL);
}

static void test_failed_create_unwinds(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 100);
    s.fail_open_worker = 1;
    gk_dataset *ds = synth_dataset(&s);
    gk_loader_config cfg = base_config(3);
    gk_loader *ld = (gk_loader *)&s;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -ENOMEM);
    assert_null(ld);
    GK_ASSERT_CONTAINS(gk_last_error(), "worker_open of worker 1 failed");
    GK_ASSERT_CONTAINS(gk_last_error(), "no scratch for worker 1");
    assert_int_equal(atomic_load(&s.opens), 3);
    assert_int_equal(atomic_load(&s.closes), 2);
    s.fail_open_worker = 0;
    cfg.workers = 0;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -ENOMEM);
    /* config errors name the field */
    s.fail_open_worker = -1;
    cfg.depth = 1;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "depth");
    cfg = base_config(1);
    cfg.rank = 2;
    cfg.world = 2;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "rank 2");
    cfg = base_config(1);
    cfg.batch_size = 200;
    cfg.drop_last = 1;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "no batch per epoch");
    GK_ASSERT_ERR(gk_loader_create(&cfg, NULL, &ld), -EINVAL);
    gk_dataset_destroy(ds);
}

static void test_held_batches(void **state)
{
    (void)state;
    for (int workers = 0; workers <= 1; workers++) {
        synth s;
        synth_init(&s, 100);
        gk_dataset *ds = synth_dataset(&s);
        gk_loader_config cfg = base_config(workers);
        cfg.auto_release = 0;
        cfg.depth = 2;
        gk_loader *ld;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch a, b, c;
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &a));
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        GK_ASSERT_ERR(gk_loader_next(ld, NULL, 1, &c), -EBUSY);
        GK_ASSERT_CONTAINS(gk_last_error(), "every slot is held");
        check_batch(&cfg, 100, &a, a.host);
        check_batch(&cfg, 100, &b, b.host);
        gk_loader_state st;
        GK_ASSERT_OK(gk_loader_get_state(ld, &st));
        assert_int_equal(st.batch, 0);
        GK_ASSERT_OK(gk_loader_release(ld, &b, NULL));
        GK_ASSERT_ERR(gk_loader_release(ld, &b, NULL), -EINVAL);
        GK_ASSERT_CONTAINS(gk_last_error(), "not held");
        GK_ASSERT_OK(gk_loader_get_state(ld, &st));
        assert_int_equal(st.batch, 0); /* a is still held */
        GK_ASSERT_OK(gk_loader_release(ld, &a, NULL));
        GK_ASSERT_OK(gk_loader_get_state(ld, &st));
        assert_int_equal(st.batch, 2);
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &c));
        assert_int_equal(c.index, 2);
        check_batch(&cfg, 100, &c, c.host);
        gk_batch fake = c;
        fake.slot = 99;
        GK_ASSERT_ERR(gk_loader_release(ld, &fake, NULL), -EINVAL);
        gk_loader_destroy(ld);
        gk_dataset_destroy(ds);
    }
}

/* With the host device: pinned host slots, device slots and a copy stream; the device slot holds
 * the batch. */
static void test_host_device_stage(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_stream *stream;
    GK_ASSERT_OK(gk_stream_create(dev, &stream));
    for (int workers = 0; workers <= 2; workers++) {
        synth s;
        synth_init(&s, 100);
        gk_dataset *ds = synth_dataset(&s);
        gk_loader_config cfg = base_config(workers);
        cfg.device = dev;
        cfg.epochs = 2;
        gk_loader *ld;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch b;
        int n = 0;
        while (gk_loader_next(ld, stream, -1, &b) == 0) {
            assert_non_null(b.device);
            assert_ptr_not_equal(b.device, b.host);
            check_batch(&cfg, 100, &b, b.device);
            n++;
        }
        assert_int_equal(n, 30);
        gk_loader_stats st;
        GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
        assert_int_equal(st.items, 200);
        assert_int_equal(st.bytes, 200 * ITEM_WORDS * 8);
        gk_loader_destroy(ld);
        gk_dataset_destroy(ds);
    }
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.host_alloc_calls, c.host_free_calls);
    assert_int_equal(c.malloc_calls, c.free_calls);
    assert_int_equal(c.event_creates, c.event_destroys);
    assert_true(c.copies_htod >= 90);
    gk_stream_destroy(dev, stream);
    gk_device_close(dev);
}

/* The statistics published as gpukit metrics: the registry's series agree with the stats. */
static void test_metrics(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 100);
    gk_dataset *ds = synth_dataset(&s);
    gk_metrics *reg;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_loader_config cfg = base_config(2);
    cfg.metrics = reg;
    cfg.name = "train";
    cfg.epochs = 2;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    while (gk_loader_next(ld, NULL, -1, &b) == 0)
        ;
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    const char *labels[] = {"device", "host", "loader", "train", NULL};
    gk_metric *items, *batches, *wait, *fill, *first;
    GK_ASSERT_OK(gk_metrics_counter(reg, "gpukit_loader_items_total", NULL, labels, &items));
    GK_ASSERT_OK(gk_metrics_counter(reg, "gpukit_loader_batches_total", NULL, labels, &batches));
    GK_ASSERT_OK(gk_metrics_counter(reg, "gpukit_loader_wait_seconds_total", NULL, labels, &wait));
    GK_ASSERT_OK(gk_metrics_counter(reg, "gpukit_loader_fill_seconds_total", NULL, labels, &fill));
    GK_ASSERT_OK(gk_metrics_gauge(reg, "gpukit_loader_first_batch_seconds", NULL, labels, &first));
    /* The series are read from the loader's statistics only when the registry is read. */
    assert_true(gk_metric_value(items) == 0);
    gk_metrics_collect(reg);
    assert_int_equal((uint64_t)gk_metric_value(items), st.items);
    assert_int_equal(st.items, 200);
    assert_int_equal((uint64_t)gk_metric_value(batches), 30);
    assert_true(fabs(gk_metric_value(wait) - (double)st.wait_ns / 1e9) < 1e-9);
    assert_true(fabs(gk_metric_value(fill) - (double)st.fill_ns / 1e9) < 1e-9);
    assert_true(gk_metric_value(first) > 0);
    char *text;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    GK_ASSERT_CONTAINS(text, "gpukit_loader_items_total{device=\"host\",loader=\"train\"} 200");
    GK_ASSERT_CONTAINS(text, "gpukit_loader_depth{device=\"host\",loader=\"train\"} ");
    free(text);
    gk_loader_destroy(ld);
    /* The final reading stays after destroy; the registry no longer calls the loader. */
    gk_metrics_collect(reg);
    assert_int_equal((uint64_t)gk_metric_value(batches), 30);
    /* A registry that refuses the series costs the loader only its figures. */
    gk_metrics *other;
    GK_ASSERT_OK(gk_metrics_create(NULL, &other));
    gk_metric *clash;
    GK_ASSERT_OK(gk_metrics_gauge(other, "gpukit_loader_ring_ready", NULL, NULL, &clash));
    cfg.metrics = other;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    gk_loader_destroy(ld);
    gk_metrics_destroy(other);
    gk_metrics_destroy(reg);
    gk_dataset_destroy(ds);
}

/* workers = -1: one per usable CPU but the consumer's; the figures behind it in the stats. */
static void test_workers_auto(void **state)
{
    (void)state;
    synth s;
    synth_init(&s, 60);
    gk_dataset *ds = synth_dataset(&s);
    gk_loader_config cfg = base_config(-1);
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(st.cpus >= 1 && (long)st.cpus <= online);
    assert_int_equal(st.workers, st.cpus > 1 ? st.cpus - 1 : 1);
    assert_int_equal(st.spin, st.workers + 1 <= st.cpus);
    assert_int_equal(st.cpus, gk__usable_cpus());
    uint64_t got[18];
    gk_batch last;
    assert_int_equal(take(ld, &cfg, 60, 18, got, &last), 18); /* two epochs, each batch checked */
    gk_loader_destroy(ld);
    cfg.workers = -2;
    GK_ASSERT_ERR(gk_loader_create(&cfg, ds, &ld), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "workers must be -1");
    gk_dataset_destroy(ds);
}

static void put(const char *dir, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The cgroup CPU quota caps the affinity count: v2 cpu.max in the cgroup and every cgroup above
 * it (the tightest wins, whole CPUs), v1 cfs quota / period, no quota, no files. */
static void test_usable_cpus_from_cgroups(void **state)
{
    (void)state;
    const char *d = gk_test_tmpdir("loader_cpus");
    char cg[600], root[600], p[700];
    snprintf(cg, sizeof cg, "%s/cgroup", d);
    snprintf(root, sizeof root, "%s/fs", d);
    const char *dirs[] = {"fs", "fs/a", "fs/a/b", "fs/cpu,cpuacct", "fs/cpu,cpuacct/x"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", d, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    /* v2: 1.5 CPUs in the leaf -> 1; the parent unlimited */
    put(d, "cgroup", "0::/a/b\n");
    put(d, "fs/a/b/cpu.max", "150000 100000\n");
    put(d, "fs/a/cpu.max", "max 100000\n");
    assert_int_equal(gk__cpus_limit(cg, root, 8), 1);
    /* v2: the parent is tighter than the leaf */
    put(d, "fs/a/b/cpu.max", "max 100000\n");
    put(d, "fs/a/cpu.max", "300000 100000\n");
    assert_int_equal(gk__cpus_limit(cg, root, 8), 3);
    assert_int_equal(gk__cpus_limit(cg, root, 2), 2); /* affinity is tighter */
    /* v1: cpu,cpuacct controller, 2 CPUs; then no quota (-1) */
    put(d, "cgroup", "5:memory:/m\n4:cpu,cpuacct:/x\n1:name=systemd:/\n");
    put(d, "fs/cpu,cpuacct/x/cpu.cfs_quota_us", "200000\n");
    put(d, "fs/cpu,cpuacct/x/cpu.cfs_period_us", "100000\n");
    assert_int_equal(gk__cpus_limit(cg, root, 16), 2);
    put(d, "fs/cpu,cpuacct/x/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(gk__cpus_limit(cg, root, 16), 16);
    /* nothing readable: the affinity count */
    snprintf(p, sizeof p, "%s/missing", d);
    assert_int_equal(gk__cpus_limit(p, root, 5), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_same_output_any_workers),
        cmocka_unit_test(test_split_batches_and_flags),
        cmocka_unit_test(test_resume_equals_uninterrupted),
        cmocka_unit_test(test_restore_refuses_mismatch),
        cmocka_unit_test(test_error_at_its_batch),
        cmocka_unit_test(test_skip_policy),
        cmocka_unit_test(test_timeout_diagnostic),
        cmocka_unit_test(test_destroy_mid_epoch),
        cmocka_unit_test(test_failed_create_unwinds),
        cmocka_unit_test(test_held_batches),
        cmocka_unit_test(test_host_device_stage),
        cmocka_unit_test(test_workers_auto),
        cmocka_unit_test(test_usable_cpus_from_cgroups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
