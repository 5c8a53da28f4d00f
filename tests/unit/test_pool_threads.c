/* Many threads on one pool: allocations of mixed sizes on private and shared streams, frees on
 * other threads' blocks, record_stream, stream creation and destruction (the hand-back hook),
 * empty_cache, trim and statistics reads, all at once. Every block is filled with its owner's
 * pattern and checked before it is freed, so two threads ever holding the same bytes fails. */
/* gk-labels: unit threads */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define THREADS 4
#define ROUNDS  3000
#define SLOTS   32

typedef struct shared {
    gk_device *dev;
    gk_pool *pool;
    gk_stream *common;
    pthread_mutex_t handoff_lock;
    void *handoff[THREADS];
    size_t handoff_size[THREADS];
    int errors;
} shared;

typedef struct worker {
    shared *sh;
    int id;
} worker;

static uint32_t next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void fill(void *p, size_t n, unsigned char v)
{
    memset(p, v, n < 64 ? n : 64);
}

static int check(const void *p, size_t n, unsigned char v)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < (n < 64 ? n : 64); i++)
        if (c[i] != v)
            return 0;
    return 1;
}

static void *run(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    uint32_t rng = 0x1234567u + (uint32_t)w->id * 7919u;
    void *ptr[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    unsigned char tag = (unsigned char)(0x10 + w->id);
    gk_stream *own = NULL;
    for (int r = 0; r < ROUNDS; r++) {
        int slot = (int)(next_rand(&rng) % SLOTS);
        if (ptr[slot]) {
            if (!check(ptr[slot], size[slot], tag))
                __atomic_fetch_add(&sh->errors, 1, __ATOMIC_RELAXED);
            if (gk_pool_free(sh->pool, ptr[slot]) != 0)
                __atomic_fetch_add(&sh->errors, 1, __ATOMIC_RELAXED);
            ptr[slot] = NULL;
            continue;
        }
        uint32_t k = next_rand(&rng);
        size_t n = (k % 8 == 0) ? (size_t)(k % (24u << 20)) + 1 : (size_t)(k % 200000) + 1;
        gk_stream *s = (k & 0x100) ? sh->common : own;
        if (gk_pool_malloc(sh->pool, n, s, &ptr[slot]) != 0) {
            ptr[slot] = NULL;
            continue;
        }
        size[slot] = n;
        fill(ptr[slot], n, tag);
        if ((k & 0x600) == 0x600)
            gk_pool_record_stream(sh->pool, ptr[slot], sh->common);
        switch (r % 500) {
        case 100:
            gk_pool_empty_cache(sh->pool);
            break;
        case 200: {
            size_t released;
            gk_pool_trim(sh->pool, 64u << 20, &released);
            break;
        }
        case 300: {
            gk_pool_stats st;
            gk_pool_get_stats(sh->pool, &st);
            break;
        }
        case 400:
            /* Replace the private stream: its cache is handed back by the hook. */
            for (int i = 0; i < SLOTS; i++) {
                if (ptr[i]) {
                    gk_pool_free(sh->pool, ptr[i]);
                    ptr[i] = NULL;
                }
            }
            gk_stream_destroy(sh->dev, own);
            own = NULL;
            if (gk_stream_create(sh->dev, &own) != 0)
                own = NULL;
            break;
        case 450: {
            /* Hand one block to the next thread, which frees it. */
            pthread_mutex_lock(&sh->handoff_lock);
            int to = (w->id + 1) % THREADS;
            void *old = sh->handoff[to];
            sh->handoff[to] = NULL;
            if (!old && ptr[slot]) {
                fill(ptr[slot], size[slot], 0xEE);
                sh->handoff[to] = ptr[slot];
                sh->handoff_size[to] = size[slot];
                ptr[slot] = NULL;
            }
            void *mine = sh->handoff[w->id];
            size_t mine_size = sh->handoff_size[w->id];
            sh->handoff[w->id] = NULL;
            pthread_mutex_unlock(&sh->handoff_lock);
            if (old)
                gk_pool_free(sh->pool, old);
            if (mine) {
                if (!check(mine, mine_size, 0xEE))
                    __atomic_fetch_add(&sh->errors, 1, __ATOMIC_RELAXED);
                gk_pool_free(sh->pool, mine);
            }
            break;
        }
        default:
            break;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (ptr[i])
            gk_pool_free(sh->pool, ptr[i]);
    gk_stream_destroy(sh->dev, own);
    return NULL;
}

static void stress(const char *spec, const char *preset)
{
    shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.handoff_lock, NULL);
    GK_ASSERT_OK(gk_device_open(spec, &sh.dev));
    gk_pool_config c;
    gk_pool_config_preset(&c, preset);
    c.logger.level = GK_LOG_OFF;
    c.limit_bytes = (size_t)512 << 20;
    c.gc_threshold = 0.6;
    GK_ASSERT_OK(gk_pool_create(sh.dev, &c, &sh.pool));
    GK_ASSERT_OK(gk_stream_create(sh.dev, &sh.common));
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){&sh, i};
        assert_int_equal(pthread_create(&th[i], NULL, run, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        if (sh.handoff[i])
            GK_ASSERT_OK(gk_pool_free(sh.pool, sh.handoff[i]));
    assert_int_equal(sh.errors, 0);
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(sh.pool, &s));
    assert_int_equal(s.allocation[GK_POOL_ALL].current, 0);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(s.requested_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(s.num_invalid_free + s.num_double_free, 0);
    assert_true(s.reserved_bytes[GK_POOL_ALL].peak <= (int64_t)c.limit_bytes);
    GK_ASSERT_OK(gk_pool_empty_cache(sh.pool));
    GK_ASSERT_OK(gk_pool_get_stats(sh.pool, &s));
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(s.active[GK_POOL_ALL].current, 0);
    GK_ASSERT_OK(gk_stream_destroy(sh.dev, sh.common));
    gk_pool_destroy(sh.pool);
    gk_device_close(sh.dev);
    pthread_mutex_destroy(&sh.handoff_lock);
}

static void test_threads_host(void **state)
{
    (void)state;
    stress("host", "pytorch");
}

/* Expandable segments, events that need two polls, real bytes behind device addresses. */
static void test_threads_sim(void **state)
{
    (void)state;
    stress("sim:capacity=768MiB,backed=1,va_size=2GiB,event_polls=2", "default");
}

typedef struct tracer {
    gk_pool *pool;
    int id;
} tracer;

static void *trace_work(void *arg)
{
    tracer *t = arg;
    uint32_t rng = 0x9e3779b9u + (uint32_t)t->id;
    void *held[8] = {0};
    for (int i = 0; i < 2000; i++) {
        int k = (int)(next_rand(&rng) % 8);
        if (held[k]) {
            gk_pool_free(t->pool, held[k]);
            held[k] = NULL;
        } else if (gk_pool_malloc(t->pool, 1 + next_rand(&rng) % 300000, NULL, &held[k]) != 0) {
            held[k] = NULL;
        }
    }
    for (int k = 0; k < 8; k++)
        gk_pool_free(t->pool, held[k]);
    return NULL;
}

/* The CSV trace log with four threads at once: lines are written after the pool lock is dropped,
 * yet in the pool's order, so the log replays exactly (every free follows the allocation of its
 * pointer, no pointer is handed out twice while live). */
static void test_trace_log_threads(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool_config c;
    gk_pool_config_preset(&c, "pytorch");
    c.logger.level = GK_LOG_OFF;
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, &c, &pool));
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_set_trace_log(pool, m));
    pthread_t th[THREADS];
    tracer tr[THREADS];
    for (int i = 0; i < THREADS; i++) {
        tr[i] = (tracer){pool, i};
        assert_int_equal(pthread_create(&th[i], NULL, trace_work, &tr[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    GK_ASSERT_OK(gk_pool_set_trace_log(pool, NULL));
    fclose(m);
    FILE *in = fmemopen(buf, len, "r");
    gk_trace *t = NULL;
    char err[256] = "";
    GK_ASSERT_OK(gk_trace_parse(in, "log", &t, err, sizeof err));
    fclose(in);
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &s));
    assert_int_equal(t->count, s.allocation[GK_POOL_ALL].allocated * 2);
    /* Replay the log by hand: allocate only what is not live, free only what is. */
    size_t cap = 1 << 16, live = 0;
    uint64_t *set = calloc(cap, sizeof *set);
    assert_non_null(set);
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        size_t h = (size_t)((e->ptr * 0x9E3779B97F4A7C15ull) >> 48) & (cap - 1);
        while (set[h] && set[h] != e->ptr)
            h = (h + 1) & (cap - 1);
        if (e->action == GK_TRACE_ALLOCATE) {
            if (set[h] == e->ptr)
                fail_msg("line %zu: %#llx allocated while live", i + 2, (unsigned long long)e->ptr);
            set[h] = e->ptr;
            live++;
        } else {
            if (set[h] != e->ptr)
                fail_msg("line %zu: %#llx freed while not live", i + 2, (unsigned long long)e->ptr);
            /* Delete by re-inserting the rest of the cluster. */
            set[h] = 0;
            live--;
            for (size_t j = (h + 1) & (cap - 1); set[j]; j = (j + 1) & (cap - 1)) {
                uint64_t k = set[j];
                set[j] = 0;
                size_t hh = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 48) & (cap - 1);
                while (set[hh])
                    hh = (hh + 1) & (cap - 1);
                set[hh] = k;
            }
        }
    }
    assert_int_equal(live, 0);
    free(set);
    gk_trace_free(t);
    free(buf);
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_threads_host),
                                       cmocka_unit_test(test_threads_sim),
                                       cmocka_unit_test(test_trace_log_threads)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
