/* The conventions of the public API that bindings and compiled programs rely on: sized structs
 * (a program built against an older, smaller struct keeps working), one thread-local error text
 * (gk_last_error, fresh after every failing call, private to each thread), the environment read
 * only by the _from_env functions, and the status codes (no positive returns). */
/* gk-labels: unit threads */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gk_test.h"

#define MIB ((size_t)1 << 20)

/* --- sized structs ------------------------------------------------------------------------- */

/* gk_pool_config as a program built against an older gpukit saw it: the same leading fields,
 * nothing after max_split_size. */
typedef struct old_pool_config {
    size_t size;
    gk_logger logger;
    size_t round_bytes;
    unsigned divisions;
    size_t small_max;
    size_t small_segment;
    size_t large_segment;
    size_t min_large_alloc;
    size_t round_large;
    size_t max_split_size;
} old_pool_config;

/* gk_pool_stats as an older program saw it: the arrays and the counters, no derived figures. */
typedef struct old_pool_stats {
    size_t size;
#define OLD_STAT(name, desc) gk_pool_stat name[GK_POOL_KINDS];
    GK_POOL_STAT_MAP(OLD_STAT)
#undef OLD_STAT
#define OLD_COUNTER(name, desc) uint64_t name;
    GK_POOL_COUNTER_MAP(OLD_COUNTER)
#undef OLD_COUNTER
} old_pool_stats;

/* The old structs are real prefixes of the current ones. */
static void test_old_layouts_are_prefixes(void **state)
{
    (void)state;
    assert_int_equal(offsetof(old_pool_config, max_split_size),
                     offsetof(gk_pool_config, max_split_size));
    assert_true(sizeof(old_pool_config) < sizeof(gk_pool_config));
    assert_int_equal(offsetof(old_pool_stats, num_cache_hits),
                     offsetof(gk_pool_stats, num_cache_hits));
    assert_true(sizeof(old_pool_stats) < sizeof(gk_pool_stats));
}

/* An older, smaller config: _default fills only its bytes, and create takes the library's
 * defaults for every field beyond it, whatever lies in memory after the caller's struct. */
static void test_old_config(void **state)
{
    (void)state;
    union {
        old_pool_config old;
        unsigned char bytes[sizeof(gk_pool_config) + 64];
    } u;
    memset(u.bytes, 0xAB, sizeof u.bytes);
    (gk_pool_config_default)((gk_pool_config *)&u.old, sizeof u.old);
    assert_int_equal(u.old.size, sizeof u.old);
    assert_int_equal(u.old.round_bytes, 512);
    for (size_t i = sizeof u.old; i < sizeof u.bytes; i++)
        assert_int_equal(u.bytes[i], 0xAB); /* nothing written past the caller's struct */
    u.old.max_split_size = 64 * MIB;
    u.old.logger.level = GK_LOG_OFF;

    gk_device *dev;
    gk_pool *pool;
    GK_ASSERT_OK(gk_device_open("sim:capacity=1GiB", &dev));
    GK_ASSERT_OK(gk_pool_create(dev, (const gk_pool_config *)&u.old, &pool));
    /* The bytes after the struct (0xAB...) would be a limit of ~12 EB and a history of
     * billions of entries had they been read. */
    assert_int_equal(gk_pool_get_limit(pool), 0);
    void *p;
    GK_ASSERT_OK(gk_pool_malloc(pool, 100 * MIB, NULL, &p));
    gk_pool_stats st;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &st));
    assert_int_equal(st.max_split_size, 64 * MIB);
    assert_int_equal(st.oversize_allocations.current, 1);
    GK_ASSERT_OK(gk_pool_free(pool, p));

    /* A key whose field lies beyond the caller's struct is refused, not written. */
    char err[256];
    GK_ASSERT_ERR(gk_pool_config_set((gk_pool_config *)&u.old, "limit", "1GiB", err, sizeof err),
                  -ENOENT);
    for (size_t i = sizeof u.old; i < sizeof u.bytes; i++)
        assert_int_equal(u.bytes[i], 0xAB);
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

/* An older, smaller output: the library fills only its bytes and says how many. */
static void test_old_output(void **state)
{
    (void)state;
    gk_device *dev;
    gk_pool *pool;
    GK_ASSERT_OK(gk_device_open("sim:capacity=1GiB", &dev));
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    void *p;
    GK_ASSERT_OK(gk_pool_malloc(pool, 3 * MIB, NULL, &p));
    union {
        old_pool_stats old;
        unsigned char bytes[sizeof(gk_pool_stats) + 64];
    } u;
    memset(u.bytes, 0xCD, sizeof u.bytes);
    GK_ASSERT_OK((gk_pool_get_stats)(pool, (gk_pool_stats *)&u.old, sizeof u.old));
    assert_int_equal(u.old.size, sizeof u.old);
    assert_int_equal(u.old.allocation[GK_POOL_ALL].current, 1);
    assert_int_equal(u.old.num_device_alloc, 1);
    for (size_t i = sizeof u.old; i < sizeof u.bytes; i++)
        assert_int_equal(u.bytes[i], 0xCD);
    /* The table and JSON writers take such a struct and count the missing fields as 0. */
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(devnull);
    GK_ASSERT_OK(gk_pool_stats_json((const gk_pool_stats *)&u.old, devnull));
    GK_ASSERT_OK(gk_pool_stats_table((const gk_pool_stats *)&u.old, devnull));
    fclose(devnull);

    /* GK_HAS_FIELD tells which fields the library filled. */
    gk_pool_stats full;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &full));
    assert_true(GK_HAS_FIELD(&full, gk_pool_stats, limit));
    assert_false(GK_HAS_FIELD(&u.old, gk_pool_stats, limit));
    assert_true(GK_HAS_FIELD(&u.old, gk_pool_stats, num_ooms));

    /* A bigger struct (a newer header, this library): the library fills its own size. */
    union {
        gk_pool_stats st;
        unsigned char bytes[sizeof(gk_pool_stats) + 32];
    } big;
    memset(big.bytes, 0xEE, sizeof big.bytes);
    GK_ASSERT_OK((gk_pool_get_stats)(pool, &big.st, sizeof big.bytes));
    assert_int_equal(big.st.size, sizeof(gk_pool_stats));
    for (size_t i = sizeof(gk_pool_stats); i < sizeof big.bytes; i++)
        assert_int_equal(big.bytes[i], 0xEE);
    GK_ASSERT_OK(gk_pool_free(pool, p));
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

/* Every filling function stops at the caller's size: each is called with a struct cut after
 * its first field, inside a buffer of canary bytes. */
static void test_truncated_outputs(void **state)
{
    (void)state;
    enum { CUT = sizeof(size_t) + 8, ROOM = 1 << 17 };
    unsigned char *buf = malloc(ROOM);
    assert_non_null(buf);
    gk_device *dev;
    gk_pool *pool;
    GK_ASSERT_OK(gk_device_open("sim:capacity=1GiB", &dev));
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    static const uint64_t items[] = {1, 2, 3, 4, 5, 6, 7, 8};
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_memory(items, sizeof items[0], 8, &ds));
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.batch_size = 2;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&lc, ds, &ld));
    gk_host *host;
    GK_ASSERT_OK(gk_host_open(NULL, &host));
    gk_metrics *reg;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    GK_ASSERT_OK(gk_metrics_log(reg, "loss", 1.5));

    for (int i = 0;; i++) {
        memset(buf, 0x5A, ROOM);
        int rc;
        switch (i) {
        case 0:
            rc = (gk_device_get_props)(dev, (void *)buf, CUT);
            break;
        case 1:
            rc = (gk_device_get_counters)(dev, (void *)buf, CUT);
            break;
        case 2:
            rc = (gk_pool_get_stats)(pool, (void *)buf, CUT);
            break;
        case 3:
            rc = (gk_loader_get_stats)(ld, (void *)buf, CUT);
            break;
        case 4:
            rc = (gk_loader_get_state)(ld, (void *)buf, CUT);
            break;
        case 5:
            rc = (gk_loader_next)(ld, NULL, -1, (void *)buf, CUT);
            break;
        case 6:
            rc = (gk_host_sample_read)(host, GK_HOST_CPU, (void *)buf, CUT);
            break;
        case 7:
            rc = (gk_host_proc_tree)(host, (int)getpid(), (void *)buf, CUT);
            break;
        case 8:
            rc = (gk_metrics_log_summary)(reg, "loss", (void *)buf, CUT);
            break;
        case 9:
            (gk_pool_config_default)((void *)buf, CUT);
            rc = 0;
            break;
        case 10:
            (gk_loader_config_default)((void *)buf, CUT);
            rc = 0;
            break;
        case 11:
            (gk_monitor_config_default)((void *)buf, CUT);
            rc = 0;
            break;
        case 12:
            (gk_options_default)((void *)buf, CUT);
            rc = 0;
            break;
        case 13:
            rc = (gk_stats_compute)((const double[]){1, 2}, 2, (void *)buf, CUT);
            break;
        case 14:
            rc = (gk_sampler_init)((void *)buf, 10, 2, 0, 0, 1, 0, 0, 0, NULL, 0, CUT);
            break;
        case 15:
            rc = (gk_loader_get_state_delivered)(ld, (void *)buf, CUT);
            break;
        case 16: {
            gk_pressure *pr;
            GK_ASSERT_OK(gk_pressure_create(NULL, NULL, &pr));
            gk_pressure_figures f = {.size = sizeof f, .device_total = 1};
            rc = (gk_pressure_sample_figures)(pr, &f, NULL, (void *)buf, CUT);
            gk_pressure_destroy(pr);
            break;
        }
        default:
            rc = -1;
            break;
        }
        if (rc == -1)
            break;
        GK_ASSERT_OK(rc);
        size_t got;
        memcpy(&got, buf, sizeof got);
        if (got != CUT)
            fail_msg("case %d: size %zu, expected %d", i, got, (int)CUT);
        for (size_t k = CUT; k < ROOM; k++)
            if (buf[k] != 0x5A)
                fail_msg("case %d wrote byte %zu past the caller's %d", i, k, (int)CUT);
    }
    gk_metrics_destroy(reg);
    gk_host_close(host);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    free(buf);
}

/* A size of 0 is refused with a message that names the struct and the fix. */
static void test_unset_sizes(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool_config zero;
    memset(&zero, 0, sizeof zero);
    gk_pool *pool;
    GK_ASSERT_ERR(gk_pool_create(dev, &zero, &pool), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "gk_pool_config: size is 0");
    GK_ASSERT_CONTAINS(gk_last_error(), "_default()");
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    gk_pool_stats st;
    GK_ASSERT_ERR((gk_pool_get_stats)(pool, &st, 0), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "sizeof(gk_pool_stats)");
    gk_dataset_ops ops;
    memset(&ops, 0, sizeof ops);
    gk_dataset *ds;
    GK_ASSERT_ERR(gk_dataset_create(&ops, NULL, "x", &ds), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "gk_dataset_ops: size is 0");
    gk_recording_meta meta;
    memset(&meta, 0, sizeof meta);
    gk_recorder *rec;
    GK_ASSERT_ERR(gk_recorder_open("/dev/null", &meta, &rec), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "gk_recording_meta");
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

/* --- error text ---------------------------------------------------------------------------- */

static void test_status_codes(void **state)
{
    (void)state;
    assert_true(GK_LOADER_END < 0);
    assert_string_equal(gk_err_name(GK_LOADER_END), "GK_LOADER_END");
    assert_string_equal(gk_strerror(GK_LOADER_END), "end of the configured epochs");
    assert_int_equal(gk_abi_version(), GK_ABI_VERSION);
    assert_int_equal(gk_version_hex(), GK_VERSION_HEX);
    assert_non_null(gk_last_error());

    /* The loader's end is a failing call like any other: a negative code and a message. */
    static const uint32_t v[4] = {1, 2, 3, 4};
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_memory(v, sizeof v[0], 4, &ds));
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.batch_size = 2;
    lc.epochs = 1;
    lc.workers = 0;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&lc, ds, &ld));
    gk_batch b;
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    assert_int_equal(b.size, sizeof b);
    GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    GK_ASSERT_ERR(gk_loader_next(ld, NULL, -1, &b), GK_LOADER_END);
    GK_ASSERT_CONTAINS(gk_last_error(), "end of the configured epochs");
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

/* Sets the thread's message to a known text, so a test can tell a fresh message from a stale
 * one. */
static void set_sentinel(void)
{
    uint64_t v;
    assert_int_equal(gk_parse_size("sentinel-text", &v), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "sentinel-text");
}

#define FRESH(call, want_rc, needle)                                                               \
    do {                                                                                           \
        set_sentinel();                                                                            \
        GK_ASSERT_ERR((call), (want_rc));                                                          \
        if (strstr(gk_last_error(), "sentinel-text") || !gk_last_error()[0])                       \
            fail_msg("%s left no message of its own", #call);                                      \
        GK_ASSERT_CONTAINS(gk_last_error(), needle);                                               \
    } while (0)

static int never_called(void *user, long batch, uint64_t *peak)
{
    (void)user;
    (void)batch;
    (void)peak;
    return -EPERM;
}

/* Every failing call, across the parts, stores its own message. */
static void test_every_failure_has_a_message(void **state)
{
    (void)state;
    gk_device *dev, *out_dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    void *p = NULL;
    char err[256];
    uint64_t u64;
    double d;
    gk_pool *out_pool;
    gk_pool_config pc;
    gk_pool_config_default(&pc);
    gk_pool_stats st;

    FRESH(gk_device_open("sim:capacity=12Q", &out_dev), -EINVAL, "12Q");
    FRESH(gk_device_open("tpu:0", &out_dev), -EINVAL, "unknown backend");
    FRESH(gk_device_malloc(dev, 0, &p), -EINVAL, "size is 0");
    FRESH(gk_device_malloc(dev, (size_t)1 << 40, &p), GK_EDEVOOM, "");
    FRESH(gk_device_free(dev, (void *)(uintptr_t)0x1234), -EINVAL, "");
    FRESH(gk_stream_synchronize(NULL, NULL, 1), -EINVAL, "dev is NULL");
    FRESH(gk_pool_malloc(pool, 0, NULL, &p), -EINVAL, "size is 0");
    FRESH(gk_pool_malloc(pool, 1ull << 40, NULL, &p), GK_EDEVOOM, "out of device memory");
    FRESH(gk_pool_free(pool, (void *)(uintptr_t)0x1234), -EINVAL, "not allocated by this pool");
    FRESH(gk_pool_record_stream(pool, (void *)(uintptr_t)0x1234, NULL), -EINVAL, "");
    FRESH(gk_pool_config_set(&pc, "nope", "1", err, sizeof err), -ENOENT, "unknown pool setting");
    FRESH(gk_pool_config_set(&pc, "limit", "12Q", err, sizeof err), -EINVAL, "12Q");
    FRESH(gk_pool_config_preset(&pc, "tensorflow"), -EINVAL, "tensorflow");
    pc.round_bytes = 3;
    FRESH(gk_pool_create(dev, &pc, &out_pool), -EINVAL, "round");
    FRESH(gk_pool_scope_pop(pool, &st), -ENOENT, "no scope is open");
    FRESH(gk_parse_duration("soon", &d), -EINVAL, "soon");
    FRESH(gk_parse_bool("maybe", (int *)&u64), -EINVAL, "maybe");
    FRESH(gk_parse_log_level("loud", (gk_log_level *)&u64), -EINVAL, "loud");

    gk_dataset *ds;
    FRESH(gk_dataset_open_records("/nonexistent/x.gkr", NULL, &ds), -ENOENT, "/nonexistent/x.gkr");
    gk_records_info ri;
    FRESH(gk_records_inspect("/nonexistent/y.gkr", &ri, NULL, 0), -ENOENT, "/nonexistent/y.gkr");
    gk_tokens_info ti;
    FRESH(gk_tokens_inspect("/nonexistent/z.bin", &ti, NULL, 0), -ENOENT, "/nonexistent/z.bin");
    gk_sampler smp;
    FRESH(gk_sampler_init(&smp, 10, 4, 0, 3, 2, 0, 0, 0, NULL, 0), -EINVAL, "rank 3");
    static const uint8_t bytes[16] = {0};
    GK_ASSERT_OK(gk_dataset_memory(bytes, 1, 16, &ds));
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.depth = 1;
    gk_loader *ld;
    FRESH(gk_loader_create(&lc, ds, &ld), -EINVAL, "depth");
    gk_loader_config_default(&lc);
    lc.batch_size = 4;
    lc.workers = 0;
    GK_ASSERT_OK(gk_loader_create(&lc, ds, &ld));
    FRESH(gk_loader_seek(ld, 0, 99), -EINVAL, "past the epoch");
    gk_loader_state ls;
    GK_ASSERT_OK(gk_loader_get_state(ld, &ls));
    ls.seed = 7;
    FRESH(gk_loader_restore(ld, &ls), GK_EMISMATCH, "seed");
    GK_ASSERT_OK(gk_loader_get_state(ld, &ls));
    ls.world = 3;
    ls.position = 17; /* past the 16 samples */
    FRESH(gk_loader_restore(ld, &ls), GK_EMISMATCH, "global position 17");
    ls.version = 3;
    FRESH(gk_loader_restore(ld, &ls), GK_EVERSION, "version 3");
    gk_loader_config_default(&lc);
    lc.workers = -5;
    gk_loader *bad;
    FRESH(gk_loader_create(&lc, ds, &bad), -EINVAL, "workers");
    gk_batch b;
    b.slot = 99;
    b.size = sizeof b;
    FRESH(gk_loader_release(ld, &b, NULL), -EINVAL, "slot 99");
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);

    gk_batch_config bc;
    gk_batch_config_default(&bc);
    bc.margin = 2;
    gk_batch_result br;
    FRESH(gk_batch_find(&bc, never_called, NULL, &br), -EINVAL, "margin");
    FRESH(gk_batch_mode_parse("greedy", (gk_batch_mode *)&u64), -EINVAL, "greedy");

    gk_metrics *reg;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_summary_stats ss;
    FRESH(gk_metrics_log_summary(reg, "absent", &ss), -ENOENT, "absent");
    gk_metrics_destroy(reg);
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    mc.interval = 0;
    gk_monitor *mon;
    FRESH(gk_monitor_create(&mc, &mon), -EINVAL, "interval");
    gk_host_config hc;
    gk_host_config_default(&hc);
    hc.proc_root = "/nonexistent/proc";
    gk_host *host;
    FRESH(gk_host_open(&hc, &host), -ENOENT, "/nonexistent/proc");
    gk_nvml_config nc;
    gk_nvml_config_default(&nc);
    nc.library = "/nonexistent/libnvidia-ml.so.1";
    gk_nvml *nvml;
    gk_nvml_info ni;
    FRESH(gk_nvml_open(&nc, &nvml, &ni), GK_ENOGPU, "libnvidia-ml.so.1 not found");
    char host_s[64];
    int port;
    FRESH(gk_exporter_parse_listen("nowhere", host_s, sizeof host_s, &port, NULL, 0), -EINVAL,
          "HOST:PORT");
    gk_recording *rec;
    FRESH(gk_recording_load("/nonexistent/run.jsonl", &rec, NULL, 0), -ENOENT, "");
    gk_trace *tr;
    FRESH(gk_trace_read("/nonexistent/t.csv", &tr, NULL, 0), -ENOENT, "");
    gk_pressure_config prc;
    gk_pressure_config_default(&prc);
    prc.hysteresis = 0;
    gk_pressure *pr;
    FRESH(gk_pressure_create(pool, &prc, &pr), -EINVAL, "hysteresis");
    GK_ASSERT_OK(gk_pressure_create(NULL, NULL, &pr));
    FRESH(gk_pressure_sample(pr, NULL), -EINVAL, "without a pool");
    gk_pressure_figures pf = {.size = sizeof pf, .device_free = 2, .device_total = 1};
    FRESH((gk_pressure_sample_figures)(pr, &pf, NULL, NULL, 0), -EINVAL, "device_free 2");
    gk_pressure_destroy(pr);
    gk_stream *wrapped;
    FRESH(gk_stream_wrap(dev, (void *)&pf, &wrapped), GK_EUNAVAIL, "only cuda");
    FRESH(gk_stream_wrap(dev, NULL, &wrapped), -EINVAL, "native stream is NULL");
    FRESH(gk_loader_get_state_delivered(NULL, &ls), -EINVAL, "loader is NULL");
    gk_statsd *sd;
    GK_ASSERT_OK(gk_statsd_open("/nonexistent/gk.sock", &sd));
    gk_alloc_figures af = {.size = sizeof af, .in_use_bytes = -5};
    FRESH(gk_alloc_figures_publish(NULL, "cuda:0", "torch", &af), -EINVAL,
          "gpukit_alloc_in_use_bytes is -5");
    FRESH(gk_statsd_client_send(sd, "loss", NAN, "g", NULL), -EINVAL, "loss: the value nan");
    gk_statsd_close(sd);
    gk_options o;
    gk_options_default(&o);
    FRESH(gk_options_set(&o, "sync.timeout", "soon", NULL, 0), -EINVAL, "soon");
    FRESH(gk_options_set(&o, "warp.speed", "9", NULL, 0), -ENOENT, "warp.speed");
    gk_run_config rc;
    gk_run_config_default(&rc);
    char *argv[] = {"true", NULL};
    gk_run_result rr;
    FRESH(gk_run_execute(&rc, argv, &rr), -EINVAL, "record_path");
    (void)u64;
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

/* Two threads failing on one pool at once each read their own message. */
typedef struct failer {
    gk_pool *pool;
    uintptr_t bogus; /* a pointer this pool never gave out, distinct per thread */
    int mismatches;
} failer;

static void *fail_many(void *arg)
{
    failer *f = arg;
    char want[64];
    snprintf(want, sizeof want, "gk_pool_free(%p)", (void *)f->bogus);
    for (int i = 0; i < 2000; i++) {
        if (gk_pool_free(f->pool, (void *)f->bogus) != -EINVAL || !strstr(gk_last_error(), want))
            f->mismatches++;
        void *p;
        if (gk_pool_malloc(f->pool, 4096, NULL, &p) == 0) {
            if (!strstr(gk_last_error(), want)) /* a success leaves the message alone */
                f->mismatches++;
            gk_pool_free(f->pool, p);
        }
    }
    return NULL;
}

static void test_concurrent_errors(void **state)
{
    (void)state;
    gk_device *dev;
    gk_pool *pool;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool_config c;
    gk_pool_config_default(&c);
    c.logger.level = GK_LOG_OFF; /* each invalid free logs a warning */
    GK_ASSERT_OK(gk_pool_create(dev, &c, &pool));
    failer a = {pool, 0x1111000, 0}, b = {pool, 0x2222000, 0};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, fail_many, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, fail_many, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.mismatches, 0);
    assert_int_equal(b.mismatches, 0);
    /* The main thread saw none of it. */
    set_sentinel();
    gk_pool_stats st;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &st));
    assert_int_equal(st.num_invalid_free, 4000);
    GK_ASSERT_CONTAINS(gk_last_error(), "sentinel-text");
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

/* A loader's worker meets the error; the consumer receives it in its own message. */
static int failing_read(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)ctx;
    (void)seed;
    if (index == 5) {
        snprintf(rc->err, rc->err_len, "item %llu is unreadable", (unsigned long long)index);
        return -EIO;
    }
    memset(dst, (int)index, 4);
    return 0;
}

static uint64_t eight(void *ctx)
{
    (void)ctx;
    return 8;
}

static size_t four(void *ctx)
{
    (void)ctx;
    return 4;
}

static void test_worker_error_reaches_consumer(void **state)
{
    (void)state;
    static const gk_dataset_ops ops = {.size = sizeof(gk_dataset_ops),
                                       .count = eight,
                                       .item_size = four,
                                       .read_item = failing_read};
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_create(&ops, NULL, "flaky", &ds));
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.batch_size = 2;
    lc.workers = 2;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&lc, ds, &ld));
    gk_batch b;
    int rc;
    set_sentinel();
    while ((rc = gk_loader_next(ld, NULL, -1, &b)) == 0)
        GK_ASSERT_CONTAINS(gk_last_error(), "sentinel-text");
    GK_ASSERT_ERR(rc, -EIO);
    GK_ASSERT_CONTAINS(gk_last_error(), "item 5 is unreadable");
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

/* --- environment --------------------------------------------------------------------------- */

static void test_environment_is_explicit(void **state)
{
    (void)state;
    gk_test_setenv("RANK", "3");
    gk_test_setenv("WORLD_SIZE", "8");
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    assert_int_equal(lc.rank, 0); /* an evaluation loader sees every item */
    assert_int_equal(lc.world, 1);
    char found[160];
    GK_ASSERT_OK(gk_loader_config_from_env(&lc, found, sizeof found));
    assert_int_equal(lc.rank, 3);
    assert_int_equal(lc.world, 8);
    GK_ASSERT_CONTAINS(found, "rank 3 of 8 from RANK/WORLD_SIZE");
    gk_test_setenv("RANK", NULL);
    gk_test_setenv("WORLD_SIZE", NULL);
    gk_test_setenv("SLURM_PROCID", "1");
    gk_test_setenv("SLURM_NTASKS", "2");
    gk_loader_config_default(&lc);
    GK_ASSERT_OK(gk_loader_config_from_env(&lc, found, sizeof found));
    assert_int_equal(lc.rank, 1);
    GK_ASSERT_CONTAINS(found, "SLURM_PROCID/SLURM_NTASKS");
    gk_test_setenv("SLURM_NTASKS", "1");
    gk_loader_config_default(&lc);
    GK_ASSERT_ERR(gk_loader_config_from_env(&lc, found, sizeof found), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "SLURM_PROCID=1 is not below SLURM_NTASKS=1");
    assert_int_equal(lc.rank, 0);
    gk_test_setenv("SLURM_PROCID", NULL);
    gk_test_setenv("SLURM_NTASKS", NULL);
    GK_ASSERT_OK(gk_loader_config_from_env(&lc, found, sizeof found));
    GK_ASSERT_CONTAINS(found, "no launcher variables");

    gk_test_setenv("GK_NVML_LIBRARY", "/opt/nvml.so");
    gk_test_setenv("GK_PROC_ROOT", "/tmp/fakeproc");
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    assert_null(mc.nvml_library);
    assert_null(mc.proc_root);
    GK_ASSERT_OK(gk_monitor_config_from_env(&mc));
    assert_string_equal(mc.nvml_library, "/opt/nvml.so");
    assert_string_equal(mc.proc_root, "/tmp/fakeproc");
    gk_nvml_config nc;
    gk_nvml_config_default(&nc);
    assert_null(nc.library);
    GK_ASSERT_OK(gk_nvml_config_from_env(&nc));
    assert_string_equal(nc.library, "/opt/nvml.so");
    gk_host_config hc;
    gk_host_config_default(&hc);
    assert_null(hc.proc_root);
    GK_ASSERT_OK(gk_host_config_from_env(&hc));
    assert_string_equal(hc.proc_root, "/tmp/fakeproc");
    gk_test_setenv("GK_NVML_LIBRARY", NULL);
    gk_test_setenv("GK_PROC_ROOT", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_old_layouts_are_prefixes),
        cmocka_unit_test(test_old_config),
        cmocka_unit_test(test_old_output),
        cmocka_unit_test(test_truncated_outputs),
        cmocka_unit_test(test_unset_sizes),
        cmocka_unit_test(test_status_codes),
        cmocka_unit_test(test_every_failure_has_a_message),
        cmocka_unit_test(test_concurrent_errors),
        cmocka_unit_test(test_worker_error_reaches_consumer),
        cmocka_unit_test(test_environment_is_explicit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
