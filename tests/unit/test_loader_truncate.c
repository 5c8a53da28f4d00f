/* A record file cut or replaced under a running loader, at random moments, over many runs: 0, 1,
 * 2 and 4 workers, mapped and pread access, small unaligned records and 64 KiB ones (long copies,
 * so cuts land inside them), cuts to random sizes (inside the header, mid-record, page-aligned,
 * to zero) and replacement by rename. Every run must end with the first batch read after the
 * change failing with GK_ECORRUPT and a message naming the file and what changed; every batch
 * delivered before is intact (no zeros from a cut page); nothing crashes (a SIGBUS would end the
 * test). GK_SOAK_SCALE multiplies the runs; under valgrind they are fewer. */
/* gk-labels: unit threads */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gk_test.h"

#define DEPTH 4

static const char *dir;
static int seen_fault, seen_canary, seen_end, seen_epoch; /* how each run's change was found */

static unsigned char pattern(uint64_t record, size_t byte)
{
    return (unsigned char)(1 + (record * 131 + byte * 7 + (byte >> 8)) % 251); /* never 0 */
}

static void write_records(const char *path, size_t rs, uint64_t n)
{
    unsigned char *rec = malloc(rs);
    assert_non_null(rec);
    gk_records_writer *w = NULL;
    GK_ASSERT_OK(gk_records_writer_open(path, rs, NULL, 0, NULL, &w));
    for (uint64_t i = 0; i < n; i++) {
        for (size_t j = 0; j < rs; j++)
            rec[j] = pattern(i, j);
        GK_ASSERT_OK(gk_records_writer_write(w, rec, 1));
    }
    GK_ASSERT_OK(gk_records_writer_close(w));
    free(rec);
}

static void check_batch(const gk_batch *b)
{
    const unsigned char *p = b->host;
    for (size_t i = 0; i < b->count; i++)
        for (size_t j = 0; j < b->item_size; j += 61)
            if (p[i * b->item_size + j] != pattern(b->indices[i], j))
                fail_msg("record %llu byte %zu is %u, expected %u (read from a changed file?)",
                         (unsigned long long)b->indices[i], j, p[i * b->item_size + j],
                         pattern(b->indices[i], j));
}

typedef struct cutter {
    char path[512];
    long delay_us;
    long size; /* -1: replace the file by rename */
    int failed;
    atomic_int done;
} cutter;

static void *cut_main(void *arg)
{
    cutter *c = arg;
    struct timespec ts = {c->delay_us / 1000000, (c->delay_us % 1000000) * 1000};
    nanosleep(&ts, NULL);
    /* No cmocka asserts on this thread: a failure is recorded and checked by the test. */
    if (c->size >= 0) {
        c->failed = truncate(c->path, c->size) != 0;
    } else {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.new", c->path);
        FILE *f = fopen(tmp, "w");
        c->failed = !f || fputs("not a record file", f) < 0;
        if (f)
            c->failed |= fclose(f) != 0;
        c->failed |= rename(tmp, c->path) != 0;
    }
    atomic_store(&c->done, 1);
    return NULL;
}

/* One run: returns 1 when the change landed before the loader's first batch. */
static int one_run(int workers, gk_records_access access, size_t rs, uint64_t n, unsigned *seed)
{
    cutter c;
    memset(&c, 0, sizeof c);
    snprintf(c.path, sizeof c.path, "%s/cut.gkr", dir);
    write_records(c.path, rs, n);
    long full = 4096 + (long)(rs * n);
    c.delay_us = rand_r(seed) % 4000;
    switch (rand_r(seed) % 6) {
    case 0:
        c.size = -1; /* replaced */
        break;
    case 1:
        c.size = rand_r(seed) % 4096; /* inside the header (or to zero) */
        break;
    case 2:
        c.size = (4096 + rand_r(seed) % (full - 4096)) & ~4095L; /* page-aligned */
        break;
    default:
        c.size = 4096 + rand_r(seed) % (full - 4096); /* anywhere, mid-record */
        break;
    }
    gk_records_options opt;
    gk_records_options_default(&opt);
    opt.access = access;
    gk_dataset *ds = NULL;
    GK_ASSERT_OK(gk_dataset_open_records(c.path, &opt, &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = rs >= 65536 ? 4 : 16;
    cfg.workers = workers;
    cfg.depth = DEPTH;
    cfg.shuffle = 1;
    cfg.seed = *seed;
    cfg.timeout = 60;
    gk_loader *ld = NULL;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    uint64_t per_epoch = gk_loader_batches_per_epoch(ld);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cut_main, &c), 0);
    gk_batch b;
    int rc;
    long delivered = 0, after = 0;
    while ((rc = gk_loader_next(ld, NULL, -1, &b)) == 0) {
        check_batch(&b);
        delivered++;
        if (atomic_load(&c.done)) {
            after++;
            /* Read before the cut: at most the ring's ready batches. A replacement is seen at
             * the next epoch's check, so up to one more epoch. */
            long allowed = c.size >= 0 ? DEPTH : (long)per_epoch + DEPTH;
            if (after > allowed)
                fail_msg("%ld batches delivered after the file was %s (allowed %ld)", after,
                         c.size >= 0 ? "cut" : "replaced", allowed);
        }
        assert_true(delivered < 1000000);
    }
    pthread_join(t, NULL);
    assert_false(c.failed);
    GK_ASSERT_ERR(rc, GK_ECORRUPT);
    const char *msg = gk_last_error();
    GK_ASSERT_CONTAINS(msg, c.path);
    if (c.size >= 0) {
        if (!strstr(msg, "truncated"))
            fail_msg("cut to %ld of %ld bytes: expected \"truncated\" in \"%s\"", c.size, full,
                     msg);
    } else if (!strstr(msg, "replaced") && !strstr(msg, "changed size")) {
        fail_msg("expected \"replaced\" in \"%s\"", msg);
    }
    seen_fault += strstr(msg, "faulted in the mapping") != NULL;
    seen_canary += strstr(msg, "last bytes changed") != NULL;
    seen_end += strstr(msg, "met the end") != NULL;
    seen_epoch += strstr(msg, "; reading record") == NULL;
    /* the failure sticks, and stop/destroy work after it */
    GK_ASSERT_ERR(gk_loader_next(ld, NULL, -1, &b), GK_ECORRUPT);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    return delivered == 0;
}

static int runs_per_cell(void)
{
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "vgpreload"))
        return 2; /* valgrind: about 30 times slower */
    const char *s = getenv("GK_SOAK_SCALE");
    long scale = s ? strtol(s, NULL, 10) : 1;
    return 8 * (int)(scale >= 1 ? scale : 1);
}

static void test_cut_at_random_moments(void **state)
{
    (void)state;
    static const int worker_counts[] = {0, 1, 2, 4};
    unsigned seed = 12345;
    int runs = runs_per_cell(), total = 0, early = 0;
    for (size_t wi = 0; wi < 4; wi++)
        for (int access = 0; access < 2; access++)
            for (int big = 0; big < 2; big++)
                for (int i = 0; i < runs; i++) {
                    early += one_run(worker_counts[wi], (gk_records_access)access,
                                     big ? 65536 : 200, big ? 64 : 3000, &seed);
                    total++;
                }
    printf("truncate: %d runs, %d with the change before the first batch; found by a fault in the "
           "mapping %d, the canary %d, a short pread %d, an epoch's check %d\n",
           total, early, seen_fault, seen_canary, seen_end, seen_epoch);
    assert_true(seen_fault > 0); /* the SIGBUS path was exercised */
}

int main(void)
{
    dir = gk_test_tmpdir("loader_truncate");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_at_random_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
