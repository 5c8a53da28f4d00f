/* The loader makes no heap allocation in steady state: this executable is linked with the
 * allocator's entry points wrapped (the gk-link line below), and the wrappers count the calls
 * made while `counting` is set. After a warm-up, 1,000 batches go through next/release with 0, 1
 * and 2 workers, on the host device, the sim device and the sim device with slots from a pool,
 * with 4 KiB records (read-ahead hints) and after a restore from another world size (a resumed
 * epoch), and not one allocation or free may happen. */
/* gk-labels: unit threads */
/* gk-link: -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,--wrap=free */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gk_test.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
void __wrap_free(void *p);

static atomic_int counting;
static atomic_ulong calls;
static void *_Atomic first_caller; /* return address of the first counted call */

static void count(void *caller)
{
    if (!atomic_load_explicit(&counting, memory_order_relaxed))
        return;
    if (atomic_fetch_add(&calls, 1) == 0)
        atomic_store(&first_caller, caller);
}

void *__wrap_malloc(size_t n)
{
    count(__builtin_return_address(0));
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    count(__builtin_return_address(0));
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    count(__builtin_return_address(0));
    return __real_realloc(p, n);
}

int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
    count(__builtin_return_address(0));
    return __real_posix_memalign(p, align, n);
}

void __wrap_free(void *p)
{
    if (p)
        count(__builtin_return_address(0));
    __real_free(p);
}

#define RECORDS 4096
#define RECORD  256
#define BATCH   16
#define WARMUP  64
#define STEADY  1000

/* A record file of RECORDS records (record i filled with the byte i) at `path`. */
static void write_records(const char *path, size_t size, int count)
{
    gk_records_writer *w;
    GK_ASSERT_OK(gk_records_writer_open(path, size, NULL, 0, NULL, &w));
    unsigned char rec[4096];
    for (int i = 0; i < count; i++) {
        memset(rec, i & 0xff, size);
        GK_ASSERT_OK(gk_records_writer_write(w, rec, 1));
    }
    GK_ASSERT_OK(gk_records_writer_close(w));
}

/* Takes WARMUP batches, then STEADY batches while counting; returns the calls counted. Every
 * batch is checked (record i holds byte i) so the loop cannot be empty. explicit_release: the
 * caller releases each batch itself (auto_release 0) instead of the next call doing it. */
static unsigned long steady_calls_from(gk_dataset *ds, gk_device *dev, gk_pool *pool, int workers,
                                       int explicit_release, gk_metrics *reg,
                                       const gk_loader_state *from)
{
    size_t rs = gk_dataset_item_size(ds);
    gk_stream *stream = NULL;
    if (dev)
        GK_ASSERT_OK(gk_stream_create(dev, &stream));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = BATCH;
    cfg.workers = workers;
    cfg.depth = 4;
    cfg.shuffle = 1;
    cfg.seed = 9;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    cfg.pool = pool;
    cfg.timeout = 30;
    cfg.metrics = reg;
    cfg.auto_release = !explicit_release;
    cfg.split_bytes = BATCH * RECORD / 2; /* with 2 workers, batches are split in two parts */
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    if (from)
        GK_ASSERT_OK(gk_loader_restore(ld, from));
    unsigned long before = 0;
    for (int k = 0; k < WARMUP + STEADY; k++) {
        if (k == WARMUP) {
            before = atomic_load(&calls);
            atomic_store(&counting, 1);
        }
        gk_batch b;
        GK_ASSERT_OK(gk_loader_next(ld, stream, -1, &b));
        const unsigned char *h = b.host;
        for (size_t i = 0; i < b.count; i++)
            assert_int_equal(h[i * rs + rs / 2], b.indices[i] & 0xff);
        if (explicit_release)
            GK_ASSERT_OK(gk_loader_release(ld, &b, stream));
        if (dev && k % 50 == 0)
            GK_ASSERT_OK(gk_stream_synchronize(dev, stream, 30));
    }
    atomic_store(&counting, 0);
    unsigned long n = atomic_load(&calls) - before;
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    assert_int_equal(st.batches, WARMUP + STEADY);
    gk_loader_destroy(ld);
    if (stream)
        GK_ASSERT_OK(gk_stream_destroy(dev, stream));
    if (n)
        fprintf(stderr,
                "steady state: %lu allocator calls (device %s, pool %d, %d workers), the first "
                "from %p\n",
                n, dev ? "sim" : "none", pool != NULL, workers, atomic_load(&first_caller));
    return n;
}

static unsigned long steady_calls(gk_dataset *ds, gk_device *dev, gk_pool *pool, int workers,
                                  int explicit_release, gk_metrics *reg)
{
    return steady_calls_from(ds, dev, pool, workers, explicit_release, reg, NULL);
}

static char path[64], path4k[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/gk_noalloc_%d.gkr", (int)getpid());
    write_records(path, RECORD, RECORDS);
    snprintf(path4k, sizeof path4k, "/tmp/gk_noalloc_%d_4k.gkr", (int)getpid());
    write_records(path4k, 4096, 512);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    unlink(path4k);
    return 0;
}

/* The wrappers see the library's calls (a control: without it a zero below proves nothing). */
static void test_wrappers_count(void **state)
{
    (void)state;
    unsigned long before = atomic_load(&calls);
    atomic_store(&counting, 1);
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_records(path, NULL, &ds));
    gk_dataset_destroy(ds);
    atomic_store(&counting, 0);
    assert_true(atomic_load(&calls) - before >= 2);
}

static void test_host_records(void **state)
{
    (void)state;
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_records(path, NULL, &ds));
    gk_metrics *reg;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    for (int workers = 0; workers <= 2; workers++) {
        assert_int_equal(steady_calls(ds, NULL, NULL, workers, 0, NULL), 0);
        assert_int_equal(steady_calls(ds, NULL, NULL, workers, 1, reg), 0);
    }
    gk_metrics_destroy(reg);
    gk_dataset_destroy(ds);
}

static void test_host_pread(void **state)
{
    (void)state;
    gk_records_options opt = {.size = sizeof(gk_records_options),
                              .access = GK_RECORDS_PREAD,
                              .random = 1,
                              .readahead = 1};
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_records(path, &opt, &ds));
    for (int workers = 0; workers <= 2; workers++)
        assert_int_equal(steady_calls(ds, NULL, NULL, workers, 0, NULL), 0);
    gk_dataset_destroy(ds);
}

/* 4 KiB records: the read-ahead path (sorted hints, the cache probe, posix_fadvise); and a loader
 * restored from a state saved under world size 2, whose first epoch is a resumed one. */
static void test_hints_and_resumed_epoch(void **state)
{
    (void)state;
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_records(path4k, NULL, &ds));
    for (int workers = 0; workers <= 2; workers++)
        assert_int_equal(steady_calls(ds, NULL, NULL, workers, 0, NULL), 0);
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = BATCH;
    cfg.workers = 0;
    cfg.shuffle = 1;
    cfg.seed = 9;
    cfg.world = 2;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    for (int k = 0; k < 3; k++)
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    GK_ASSERT_OK(gk_loader_release(ld, &b, NULL));
    gk_loader_state st;
    GK_ASSERT_OK(gk_loader_get_state(ld, &st));
    gk_loader_destroy(ld);
    assert_int_equal(st.position, 3 * BATCH * 2);
    for (int workers = 0; workers <= 2; workers++)
        assert_int_equal(steady_calls_from(ds, NULL, NULL, workers, 0, NULL, &st), 0);
    gk_dataset_destroy(ds);
}

static void test_sim(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB,va_size=64MiB,backed=1", &dev));
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_records(path, NULL, &ds));
    for (int workers = 0; workers <= 2; workers++) {
        assert_int_equal(steady_calls(ds, dev, NULL, workers, 0, NULL), 0);
        assert_int_equal(steady_calls(ds, dev, pool, workers, 1, NULL), 0);
    }
    gk_dataset_destroy(ds);
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrappers_count),
        cmocka_unit_test(test_host_records),
        cmocka_unit_test(test_host_pread),
        cmocka_unit_test(test_hints_and_resumed_epoch),
        cmocka_unit_test(test_sim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
