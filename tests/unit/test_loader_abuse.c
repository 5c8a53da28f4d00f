/* The loader fed badly: a read callback that hangs past the timeout while the loader is destroyed,
 * callbacks that fail at random on 4 workers (fail and skip policies), a record file truncated
 * while 4 workers prefetch from it (pread and, with the workers parked, mmap), and a token shard
 * set that changes on disk between epochs. Every wait is bounded. */
/* gk-labels: unit threads */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gk_test.h"

#define ITEM 16 /* bytes per synthetic item: index, then its complement */

typedef struct synth {
    uint64_t count;
    uint64_t hang_index; /* UINT64_MAX: none */
    atomic_int released;
    atomic_int inside; /* reads in progress of hang_index */
    uint64_t fail_mod; /* items with index % fail_mod == fail_mod - 1 fail (0: none) */
} synth;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t s_count(void *ctx)
{
    return ((synth *)ctx)->count;
}

static size_t s_size(void *ctx)
{
    (void)ctx;
    return ITEM;
}

static int s_read(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)seed;
    synth *s = ctx;
    if (index == s->hang_index) {
        atomic_fetch_add(&s->inside, 1);
        for (int i = 0; i < 20000 && !atomic_load(&s->released); i++)
            nap_ms(1); /* at most ~20 s: the test releases it long before */
        atomic_fetch_sub(&s->inside, 1);
    }
    if (s->fail_mod && index % s->fail_mod == s->fail_mod - 1) {
        snprintf(rc->err, rc->err_len, "synth: item %llu unreadable", (unsigned long long)index);
        return -EIO;
    }
    uint64_t v[2] = {index, ~index};
    memcpy(dst, v, sizeof v);
    return 0;
}

static const gk_dataset_ops synth_ops = {
    .size = sizeof(gk_dataset_ops), .count = s_count, .item_size = s_size, .read_item = s_read};

static gk_loader_config config(int workers, uint64_t batch)
{
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.logger.level = GK_LOG_OFF;
    cfg.workers = workers;
    cfg.batch_size = batch;
    cfg.depth = 3;
    cfg.timeout = 10;
    return cfg;
}

static void check_items(const gk_batch *b)
{
    const unsigned char *p = b->host;
    for (size_t i = 0; i < b->count; i++) {
        uint64_t v[2];
        memcpy(v, p + i * ITEM, sizeof v);
        assert_int_equal(v[0], b->indices[i]);
        assert_int_equal(v[1], ~b->indices[i]);
    }
}

static void *release_later(void *arg)
{
    synth *s = arg;
    nap_ms(200);
    atomic_store(&s->released, 1);
    return NULL;
}

/* A read that hangs: next times out with a diagnostic; destroy while the read is still inside
 * the callback waits for it to come back, then frees everything. */
static void test_hang_past_timeout(void **state)
{
    (void)state;
    synth s = {.count = 200, .hang_index = 5};
    gk_dataset *ds = NULL;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, &s, "hang", &ds));
    gk_loader_config cfg = config(4, 8);
    gk_loader *ld = NULL;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    GK_ASSERT_ERR(gk_loader_next(ld, NULL, 0.1, &b), -ETIMEDOUT);
    GK_ASSERT_CONTAINS(gk_last_error(), "dataset index 5");
    assert_int_equal(atomic_load(&s.inside), 1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &s), 0);
    gk_loader_destroy(ld); /* returns once the hung read does */
    assert_int_equal(atomic_load(&s.inside), 0);
    pthread_join(th, NULL);
    gk_dataset_destroy(ds);
}

/* Reads that fail on 4 workers: the fail policy stops at exactly the first bad batch; the skip
 * policy delivers every good batch intact and counts the skipped ones. */
static void test_failing_callbacks(void **state)
{
    (void)state;
    synth s = {.count = 400, .hang_index = UINT64_MAX, .fail_mod = 97};
    gk_dataset *ds = NULL;
    GK_ASSERT_OK(gk_dataset_create(&synth_ops, &s, "flaky", &ds));
    gk_loader_config cfg = config(4, 10);
    cfg.epochs = 1;
    gk_loader *ld = NULL;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    uint64_t good = 0;
    int rc;
    while ((rc = gk_loader_next(ld, NULL, 10, &b)) == 0) {
        check_items(&b);
        good++;
    }
    GK_ASSERT_ERR(rc, -EIO);
    assert_int_equal(good, 96 / 10); /* item 96 is in batch 9 */
    GK_ASSERT_CONTAINS(gk_last_error(), "item 96 unreadable");
    gk_loader_destroy(ld);

    cfg.on_error = GK_LOADER_SKIP;
    cfg.max_skips = 10;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    good = 0;
    while ((rc = gk_loader_next(ld, NULL, 10, &b)) == 0) {
        check_items(&b);
        for (size_t i = 0; i < b.count; i++)
            assert_true(b.indices[i] % 97 != 96);
        good++;
    }
    GK_ASSERT_ERR(rc, GK_LOADER_END);
    assert_int_equal(good, 40 - 4); /* items 96, 193, 290, 387: four bad batches */
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

static const char *dir;

static void write_records(const char *path, uint64_t n)
{
    gk_records_writer *w = NULL;
    GK_ASSERT_OK(gk_records_writer_open(path, ITEM, "<u8", 0, NULL, &w));
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v[2] = {i, ~i};
        GK_ASSERT_OK(gk_records_writer_write(w, v, 1));
    }
    GK_ASSERT_OK(gk_records_writer_close(w));
}

/* Waits (bounded) until the ring holds `want` ready batches: the workers are parked. */
static void wait_ring_full(gk_loader *ld, uint32_t want)
{
    gk_loader_stats st;
    for (int i = 0; i < 5000; i++) {
        GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
        if (st.ring_ready >= want)
            return;
        nap_ms(1);
    }
    fail_msg("the ring never filled (%u of %u ready)", st.ring_ready, want);
}

/* A record file cut short while 4 workers read it: batches read before the cut are intact, the
 * first batch read after it fails with GK_ECORRUPT naming the file, and nothing crashes. With
 * mmap the cut is made while the workers are parked on a full ring (reading a cut mapping is what
 * the size check before each batch prevents). */
static void test_records_cut_under_workers(void **state)
{
    (void)state;
    char path[512];
    for (int access = 0; access < 2; access++) {
        snprintf(path, sizeof path, "%s/cut%d.gkr", dir, access);
        write_records(path, 1000);
        gk_records_options opt = {.size = sizeof(gk_records_options),
                                  .access = (gk_records_access)access};
        gk_dataset *ds = NULL;
        GK_ASSERT_OK(gk_dataset_open_records(path, &opt, &ds));
        gk_loader_config cfg = config(4, 10);
        cfg.depth = 4;
        gk_loader *ld = NULL;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch b;
        GK_ASSERT_OK(gk_loader_next(ld, NULL, 10, &b));
        check_items(&b);
        wait_ring_full(ld, 3); /* one slot held by the delivered batch */
        assert_int_equal(truncate(path, 4096 + ITEM * 300), 0);
        int rc, delivered = 1;
        while ((rc = gk_loader_next(ld, NULL, 10, &b)) == 0) {
            check_items(&b); /* read before the cut */
            delivered++;
            assert_true(delivered <= 4);
        }
        GK_ASSERT_ERR(rc, GK_ECORRUPT);
        GK_ASSERT_CONTAINS(gk_last_error(), path);
        GK_ASSERT_CONTAINS(gk_last_error(), "truncated");
        gk_loader_destroy(ld);
        gk_dataset_destroy(ds);
    }
}

static void write_shard(const char *path, int32_t tokens, uint16_t first)
{
    size_t len = 1024 + (size_t)tokens * 2;
    unsigned char *buf = calloc(1, len);
    assert_non_null(buf);
    int32_t h[3] = {20240520, 1, tokens};
    memcpy(buf, h, sizeof h);
    for (int32_t i = 0; i < tokens; i++) {
        uint16_t t = (uint16_t)(first + i);
        memcpy(buf + 1024 + (size_t)i * 2, &t, 2);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(buf);
}

/* Reads one epoch of the loader into `out` (batches * bytes); returns the batches read. */
static uint64_t read_epoch(gk_loader *ld, unsigned char *out, size_t cap)
{
    uint64_t n = gk_loader_batches_per_epoch(ld), got = 0;
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        gk_batch b;
        GK_ASSERT_OK(gk_loader_next(ld, NULL, 10, &b));
        assert_true(off + b.bytes <= cap);
        memcpy(out + off, b.host, b.bytes);
        off += b.bytes;
        got++;
    }
    return got;
}

/* The shard set changes on disk between epochs (a shard removed, a new one added, one rewritten
 * in place with other tokens of the same size): the open dataset keeps the set it opened, so
 * every epoch holds the same tokens; a fresh open sees the new set. */
static void test_shard_set_changes(void **state)
{
    (void)state;
    char a[512], b[512], c[512], pattern[512];
    snprintf(a, sizeof a, "%s/shard_000.bin", dir);
    snprintf(b, sizeof b, "%s/shard_001.bin", dir);
    snprintf(c, sizeof c, "%s/shard_002.bin", dir);
    snprintf(pattern, sizeof pattern, "%s/shard_*.bin", dir);
    write_shard(a, 400, 0);
    write_shard(b, 300, 5000);
    gk_dataset *ds = NULL;
    GK_ASSERT_OK(gk_dataset_open_tokens(pattern, 2, 8, 1, &ds));
    uint64_t items = gk_dataset_count(ds);
    gk_loader_config cfg = config(4, 3);
    gk_loader *ld = NULL;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    size_t cap = 1 << 20;
    unsigned char *e0 = malloc(cap), *e1 = malloc(cap);
    assert_non_null(e0);
    assert_non_null(e1);
    uint64_t n0 = read_epoch(ld, e0, cap);
    assert_int_equal(unlink(b), 0);
    write_shard(c, 900, 9000);
    uint64_t n1 = read_epoch(ld, e1, cap);
    assert_int_equal(n0, n1);
    assert_memory_equal(e0, e1, (size_t)n0 * cfg.batch_size * gk_dataset_item_size(ds));
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    GK_ASSERT_OK(gk_dataset_open_tokens(pattern, 2, 8, 1, &ds));
    assert_true(gk_dataset_count(ds) != items);
    gk_dataset_destroy(ds);
    /* A shard cut below its header's count is refused at open, naming it. */
    assert_int_equal(truncate(c, 1024 + 100), 0);
    assert_true(gk_dataset_open_tokens(pattern, 2, 8, 1, &ds) != 0);
    GK_ASSERT_CONTAINS(gk_last_error(), "shard_002.bin");
    free(e0);
    free(e1);
}

int main(void)
{
    dir = gk_test_tmpdir("loader_abuse");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hang_past_timeout),
        cmocka_unit_test(test_failing_callbacks),
        cmocka_unit_test(test_records_cut_under_workers),
        cmocka_unit_test(test_shard_set_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
