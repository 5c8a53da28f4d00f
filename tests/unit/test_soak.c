/* Concurrency soak with fixed operation counts (for ThreadSanitizer): the pool with 8 threads over
 * 4 streams and random sizes; the loader with 4 workers across 20 epochs, destroyed and resumed
 * from its saved state in the middle, giving exactly the batches of an uninterrupted run; the
 * monitor sampling while the exporter is scraped in a loop. GK_SOAK_SCALE (default 1) multiplies
 * the counts for `make soak`; the figures reached are printed. */
/* gk-labels: unit threads */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "gk_test.h"

static long scale = 1;

/* ---- pool: 8 threads x 4 streams ---- */

#define POOL_THREADS 8
#define POOL_STREAMS 4
#define POOL_OPS     1500 /* per thread, times the scale */
#define POOL_SLOTS   16

typedef struct pool_shared {
    gk_device *dev;
    gk_pool *pool;
    gk_stream *streams[POOL_STREAMS];
    atomic_long ops, ooms, errors;
} pool_shared;

typedef struct pool_worker {
    pool_shared *sh;
    unsigned seed;
} pool_worker;

static size_t random_size(unsigned *seed)
{
    unsigned r = (unsigned)rand_r(seed);
    switch (r % 4) {
    case 0:
        return 1 + r % 512; /* tiny */
    case 1:
        return 512 + r % (1 << 16); /* small */
    case 2:
        return (size_t)(1 << 20) + r % (4 << 20); /* large */
    default:
        return (size_t)(64 << 10) * (1 + r % 8); /* round */
    }
}

static void *pool_thread(void *arg)
{
    pool_worker *w = arg;
    pool_shared *sh = w->sh;
    void *ptr[POOL_SLOTS] = {0};
    size_t size[POOL_SLOTS] = {0};
    unsigned char tag = (unsigned char)(w->seed & 0xff);
    for (long op = 0; op < POOL_OPS * scale; op++) {
        int slot = rand_r(&w->seed) % POOL_SLOTS;
        if (ptr[slot]) {
            const unsigned char *p = ptr[slot];
            if (p[0] != tag || p[size[slot] - 1] != tag)
                atomic_fetch_add(&sh->errors, 1); /* someone else wrote our block */
            if (rand_r(&w->seed) % 8 == 0)
                gk_pool_record_stream(sh->pool, ptr[slot],
                                      sh->streams[rand_r(&w->seed) % POOL_STREAMS]);
            if (gk_pool_free(sh->pool, ptr[slot]) != 0)
                atomic_fetch_add(&sh->errors, 1);
            ptr[slot] = NULL;
        } else {
            size[slot] = random_size(&w->seed);
            gk_stream *s = sh->streams[rand_r(&w->seed) % POOL_STREAMS];
            int rc = gk_pool_malloc(sh->pool, size[slot], s, &ptr[slot]);
            if (rc == GK_EDEVOOM || rc == -ENOMEM) {
                atomic_fetch_add(&sh->ooms, 1);
                ptr[slot] = NULL;
            } else if (rc != 0) {
                atomic_fetch_add(&sh->errors, 1);
            } else {
                unsigned char *p = ptr[slot];
                p[0] = p[size[slot] - 1] = tag;
            }
        }
        if (op % 500 == 0) {
            gk_pool_stats st;
            gk_pool_get_stats(sh->pool, &st);
        }
        atomic_fetch_add(&sh->ops, 1);
    }
    for (int i = 0; i < POOL_SLOTS; i++)
        if (ptr[i])
            gk_pool_free(sh->pool, ptr[i]);
    return NULL;
}

static void test_pool_soak(void **state)
{
    (void)state;
    pool_shared sh = {0};
    GK_ASSERT_OK(gk_device_open("host", &sh.dev));
    gk_pool_config cfg;
    gk_pool_config_default(&cfg);
    cfg.limit_bytes = (size_t)40 << 20; /* small enough that some allocations are refused */
    GK_ASSERT_OK(gk_pool_create(sh.dev, &cfg, &sh.pool));
    for (int i = 0; i < POOL_STREAMS; i++)
        GK_ASSERT_OK(gk_stream_create(sh.dev, &sh.streams[i]));
    pthread_t th[POOL_THREADS];
    pool_worker w[POOL_THREADS];
    for (int i = 0; i < POOL_THREADS; i++) {
        w[i] = (pool_worker){&sh, 0x9e37u * (unsigned)(i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, pool_thread, &w[i]), 0);
    }
    for (int i = 0; i < POOL_THREADS; i++)
        pthread_join(th[i], NULL);
    gk_pool_stats st;
    GK_ASSERT_OK(gk_pool_get_stats(sh.pool, &st));
    assert_int_equal(atomic_load(&sh.errors), 0);
    assert_int_equal(atomic_load(&sh.ops), POOL_THREADS * POOL_OPS * scale);
    printf("soak: pool %d threads x %d streams, %ld operations, %ld refused for the limit\n",
           POOL_THREADS, POOL_STREAMS, atomic_load(&sh.ops), atomic_load(&sh.ooms));
    for (int i = 0; i < POOL_STREAMS; i++)
        GK_ASSERT_OK(gk_stream_destroy(sh.dev, sh.streams[i]));
    gk_pool_destroy(sh.pool);
    gk_device_close(sh.dev);
}

/* ---- loader: 4 workers, 20 epochs, resume in the middle ---- */

#define LD_ITEMS  90
#define LD_EPOCHS 20
#define LD_BATCH  8

/* Item i of epoch e: {i, e-independent mix} (the loader's item seed changes per epoch). */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    return x ^ (x >> 27);
}

static int ld_read(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)ctx;
    uint64_t v[2] = {index, mix(seed ^ rc->epoch)};
    memcpy(dst, v, sizeof v);
    return 0;
}

static uint64_t ld_count(void *ctx)
{
    (void)ctx;
    return LD_ITEMS;
}

static size_t ld_size(void *ctx)
{
    (void)ctx;
    return 16;
}

static const gk_dataset_ops ld_ops = {
    .size = sizeof(gk_dataset_ops), .count = ld_count, .item_size = ld_size, .read_item = ld_read};

/* A digest of every batch delivered: order, epoch, index and bytes. */
static uint64_t digest_batch(uint64_t h, const gk_batch *b)
{
    h = mix(h ^ b->epoch) ^ mix(b->index + 1);
    const uint64_t *v = b->host;
    for (size_t i = 0; i < b->count * 2; i++)
        h = mix(h ^ v[i]);
    return h;
}

static gk_loader_config ld_config(void)
{
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.logger.level = GK_LOG_OFF;
    cfg.workers = 4;
    cfg.depth = 4;
    cfg.batch_size = LD_BATCH;
    cfg.shuffle = 1;
    cfg.seed = 42;
    cfg.epochs = (uint64_t)LD_EPOCHS * (uint64_t)scale;
    cfg.split_bytes = 64; /* split batches across workers too */
    cfg.timeout = 30;
    return cfg;
}

/* Runs to the end, or stops after `stop_after` batches and saves the state. */
static uint64_t run_loader(gk_dataset *ds, const gk_loader_state *from, long stop_after,
                           gk_loader_state *saved, uint64_t h, long *batches)
{
    gk_loader_config cfg = ld_config();
    gk_loader *ld = NULL;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    if (from)
        GK_ASSERT_OK(gk_loader_restore(ld, from));
    gk_batch b;
    int rc;
    long n = 0;
    while ((rc = gk_loader_next(ld, NULL, 30, &b)) == 0) {
        h = digest_batch(h, &b);
        (*batches)++;
        if (++n == stop_after) {
            GK_ASSERT_OK(gk_loader_release(ld, &b, NULL));
            GK_ASSERT_OK(gk_loader_get_state(ld, saved));
            break;
        }
    }
    if (stop_after < 0 || n != stop_after)
        GK_ASSERT_ERR(rc, GK_LOADER_END);
    gk_loader_destroy(ld);
    return h;
}

static void test_loader_soak(void **state)
{
    (void)state;
    gk_dataset *ds = NULL;
    GK_ASSERT_OK(gk_dataset_create(&ld_ops, NULL, "soak", &ds));
    long whole = 0, parts = 0;
    uint64_t h1 = run_loader(ds, NULL, -1, NULL, 1, &whole);
    gk_loader_state st;
    long per_epoch = (LD_ITEMS + LD_BATCH - 1) / LD_BATCH;
    long half = per_epoch * LD_EPOCHS * scale / 2 + 3; /* mid-epoch */
    uint64_t h2 = run_loader(ds, NULL, half, &st, 1, &parts);
    assert_int_equal(st.epoch, (uint64_t)(half / per_epoch));
    h2 = run_loader(ds, &st, -1, NULL, h2, &parts);
    assert_int_equal(whole, per_epoch * LD_EPOCHS * scale);
    assert_int_equal(parts, whole);
    assert_true(h1 == h2);
    printf("soak: loader 4 workers, %ld epochs, %ld batches, resumed at batch %ld\n",
           (long)LD_EPOCHS * scale, whole, half);
    gk_dataset_destroy(ds);
}

/* ---- monitor sampling while the exporter is scraped ---- */

#define SCRAPES 200

static int get(int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    size_t got = 0;
    char req[128];
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, (size_t)n) == n) {
        ssize_t r;
        while (got < cap - 1 && (r = read(fd, buf + got, cap - 1 - got)) > 0)
            got += (size_t)r;
    }
    buf[got] = '\0';
    close(fd);
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
}

static void test_monitor_scraped(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    mc.logger.level = GK_LOG_OFF;
    mc.metrics = reg;
    mc.interval = 0.005;
    mc.slow_every = 2;
    mc.gpu = GK_MONITOR_GPU_REQUIRE;
    mc.nvml_library = GK_TEST_FAKE_NVML;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&mc, &m));
    char err[256];
    GK_ASSERT_OK(
        gk_monitor_add_alert(m, "hot", "gpukit_gpu_temperature_celsius > 1000", err, sizeof err));
    GK_ASSERT_OK(gk_monitor_start(m));
    gk_exporter_config ec;
    gk_exporter_config_default(&ec);
    ec.listen = "127.0.0.1:0";
    ec.metrics = reg;
    ec.monitor = m;
    gk_exporter *e = NULL;
    GK_ASSERT_OK(gk_exporter_start(&ec, &e, err, sizeof err));
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    long ok = 0;
    for (long i = 0; i < SCRAPES * scale; i++) {
        if (get(gk_exporter_port(e), i % 10 == 9 ? "/healthz" : "/metrics", buf, 1 << 20) == 0)
            ok++;
        if (i % 10 == 0)
            GK_ASSERT_CONTAINS(buf, "gpukit_");
    }
    assert_int_equal(ok, SCRAPES * scale);
    GK_ASSERT_OK(gk_monitor_stop(m));
    gk_monitor_stats st;
    gk_monitor_get_stats(m, &st);
    printf("soak: monitor sampled %llu ticks while served %ld scrapes\n",
           (unsigned long long)st.ticks, ok);
    assert_true(st.ticks > 0);
    gk_exporter_destroy(e);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
    free(buf);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *s = getenv("GK_SOAK_SCALE");
    scale = s ? strtol(s, NULL, 10) : 1;
    if (scale < 1)
        scale = 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_soak),
        cmocka_unit_test(test_loader_soak),
        cmocka_unit_test(test_monitor_scraped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
