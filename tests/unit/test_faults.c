/* Fault injection over every create and run path of every part (device, pool, pressure, batch
 * finder, loader, metrics, telemetry, monitor, exporter, recorder, report, gpukit run): the Nth
 * host allocation and the Nth file operation (gpukit/testing.h), also with the monitor over the
 * fake libnvidia-ml and the device over the fake libcuda; and the Nth backend call of the sim
 * device and of the fake CUDA driver. N = 1, 2, ... until the path runs clean. Each faulted run
 * must return an error or cope (never crash), leak nothing (ASan and valgrind check) and leave its
 * objects usable or destroyed. The faults injected per path are printed. */
/* gk-labels: unit threads */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fake_cuda.h"
#include "gk_test.h"
#include "gpukit/testing.h"

/* Faults tried per path at most: every path but the monitor's with NVML ends before this; that
 * one (hundreds of series, each a few allocations) is walked up to NVML_FAULTS, or GK_SOAK_SCALE
 * times that under `make soak`. */
#define MAX_FAULTS  500
#define NVML_FAULTS 150

enum { FAULT_ALLOC, FAULT_FILE };

typedef int (*path_fn)(void *ctx);

static const char *dir;
static char records_path[512], shard_glob[512], trace_path[512], textfile_path[512];

/* Runs `fn` with the Nth fault of `kind` armed for N = 1.. until a run sees no fault (the path
 * has no more fault points; that run must succeed) or MAX_FAULTS. After each faulted run the same
 * path must work again at once. Returns the faults injected. */
static long walk_upto(const char *name, int kind, path_fn fn, void *ctx, long cap)
{
    long injected = 0, errors = 0;
    gk_fault_reset();
    GK_ASSERT_OK(fn(ctx)); /* the path works without faults */
    for (long n = 1; n <= cap; n++) {
        if (kind == FAULT_ALLOC)
            gk_fault_host_alloc_nth(n);
        else
            gk_fault_file_op_nth(n);
        int rc = fn(ctx);
        gk_fault_counts c;
        gk_fault_counts_get(&c);
        gk_fault_reset();
        long hit = kind == FAULT_ALLOC ? c.host_injected : c.file_injected;
        if (!hit) {
            if (rc != 0)
                fail_msg("%s: failed with %s and no fault injected at N=%ld", name, gk_err_name(rc),
                         n);
            printf("faults: %-18s %-5s %4ld injected, %4ld returned an error\n", name,
                   kind == FAULT_ALLOC ? "alloc" : "file", injected, errors);
            return injected;
        }
        injected++;
        errors += rc != 0;
        GK_ASSERT_OK(fn(ctx)); /* nothing left broken: the same path works again at once */
    }
    printf("faults: %-18s %-5s %4ld injected, %4ld returned an error (capped)\n", name,
           kind == FAULT_ALLOC ? "alloc" : "file", injected, errors);
    return injected;
}

/* Under valgrind (its preload library is in LD_PRELOAD) each run is about 30 times slower: the
 * long walks stop at VALGRIND_FAULTS so the test stays within a minute there; the other builds
 * walk them to the end. */
#define VALGRIND_FAULTS 60

static long tool_cap(long cap)
{
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "vgpreload") && cap > VALGRIND_FAULTS ? VALGRIND_FAULTS : cap;
}

static long walk(const char *name, int kind, path_fn fn, void *ctx)
{
    return walk_upto(name, kind, fn, ctx, tool_cap(MAX_FAULTS));
}

/* The soak multiplier: GK_SOAK_SCALE (default 1). */
static long soak_scale(void)
{
    const char *s = getenv("GK_SOAK_SCALE");
    long v = s ? strtol(s, NULL, 10) : 1;
    return v >= 1 ? v : 1;
}

/* ---- device ---- */

static int exercise_device(gk_device *dev)
{
    void *d = NULL, *h = NULL;
    gk_stream *s = NULL;
    gk_event *e = NULL;
    int rc = gk_device_malloc(dev, 1 << 16, &d);
    if (rc)
        return rc;
    if ((rc = gk_device_host_alloc(dev, 1 << 12, &h)) != 0)
        goto out_free;
    if ((rc = gk_stream_create(dev, &s)) != 0)
        goto out_host;
    if ((rc = gk_event_create(dev, &e)) != 0)
        goto out_stream;
    memset(h, 7, 1 << 12);
    if ((rc = gk_memcpy_htod_async(dev, d, h, 1 << 12, s)) == 0 &&
        (rc = gk_event_record(dev, e, s)) == 0 && (rc = gk_event_synchronize(dev, e, 5)) == 0)
        rc = gk_stream_synchronize(dev, s, 5);
    gk_event_destroy(dev, e);
out_stream:
    gk_stream_destroy(dev, s);
out_host:
    gk_device_host_free(dev, h);
out_free:
    gk_device_free(dev, d);
    return rc;
}

static int path_device(void *ctx)
{
    gk_device *dev = NULL;
    int rc = gk_device_open((const char *)ctx, &dev);
    if (rc)
        return rc;
    rc = exercise_device(dev);
    gk_device_close(dev);
    return rc;
}

static void test_device(void **state)
{
    (void)state;
    walk("device host", FAULT_ALLOC, path_device, "host");
    walk("device host", FAULT_FILE, path_device, "host");
    walk("device sim", FAULT_ALLOC, path_device, "sim:capacity=64MiB,backed=1");
    walk("device sim", FAULT_FILE, path_device, "sim:capacity=64MiB,backed=1");
}

/* ---- pool ---- */

static int pool_work(gk_pool *pool, gk_device *dev)
{
    gk_stream *s2 = NULL;
    void *p[16] = {0};
    int rc = gk_stream_create(dev, &s2);
    if (rc)
        return rc;
    for (int i = 0; i < 16 && rc == 0; i++)
        rc = gk_pool_malloc_tagged(pool, (size_t)(1 + i * 37) << 12, i % 2 ? s2 : NULL,
                                   i % 3 ? "act" : NULL, &p[i]);
    for (int i = 0; i < 16; i += 2)
        if (p[i]) {
            gk_pool_free(pool, p[i]);
            p[i] = NULL;
        }
    gk_pool_stats st;
    if (rc == 0)
        rc = gk_pool_get_stats(pool, &st);
    FILE *out = tmpfile();
    if (rc == 0 && out)
        rc = gk_pool_snapshot_json(pool, out);
    if (rc == 0 && out)
        rc = gk_pool_summary(pool, out);
    if (rc == 0 && (rc = gk_pool_scope_push(pool)) == 0)
        rc = gk_pool_scope_pop(pool, &st);
    if (out)
        fclose(out);
    for (int i = 0; i < 16; i++)
        if (p[i])
            gk_pool_free(pool, p[i]);
    size_t released = 0;
    if (rc == 0)
        rc = gk_pool_trim(pool, 0, &released);
    gk_stream_destroy(dev, s2);
    return rc;
}

static int path_pool(void *ctx)
{
    gk_device *dev = NULL;
    gk_pool *pool = NULL;
    int rc = gk_device_open((const char *)ctx, &dev);
    if (rc)
        return rc;
    gk_pool_config cfg;
    gk_pool_config_default(&cfg);
    if ((rc = gk_pool_create(dev, &cfg, &pool)) == 0) {
        if ((rc = gk_pool_record_history(pool, 64)) == 0)
            rc = pool_work(pool, dev);
        gk_pool_destroy(pool);
    }
    gk_device_close(dev);
    return rc;
}

static int path_trace(void *ctx)
{
    (void)ctx;
    gk_trace *tr = NULL;
    char err[256];
    int rc = gk_trace_read(trace_path, &tr, err, sizeof err);
    if (rc)
        return rc;
    gk_device *dev = NULL;
    gk_pool *pool = NULL;
    if ((rc = gk_device_open("sim:capacity=64MiB", &dev)) == 0) {
        if ((rc = gk_pool_create(dev, NULL, &pool)) == 0) {
            gk_replay_result res;
            rc = gk_trace_replay(tr, pool, 0, 1, &res);
            gk_pool_destroy(pool);
        }
        gk_device_close(dev);
    }
    FILE *out = tmpfile();
    if (rc == 0 && out)
        rc = gk_trace_write(tr, out);
    if (out)
        fclose(out);
    gk_trace_free(tr);
    return rc;
}

static void test_pool(void **state)
{
    (void)state;
    walk("pool host", FAULT_ALLOC, path_pool, "host");
    walk("pool sim", FAULT_ALLOC, path_pool, "sim:capacity=64MiB");
    walk("pool sim", FAULT_FILE, path_pool, "sim:capacity=64MiB");
    walk("trace replay", FAULT_ALLOC, path_trace, NULL);
    walk("trace replay", FAULT_FILE, path_trace, NULL);
}

/* The sim's own faults: its Nth allocation fails (the pool frees its cache and retries, or
 * reports out of memory), for every N the path reaches. */
static void test_pool_backend_faults(void **state)
{
    (void)state;
    long injected = 0;
    for (int n = 1; n <= 64; n++) {
        char spec[64];
        snprintf(spec, sizeof spec, "sim:capacity=64MiB,fail_alloc_nth=%d", n);
        gk_device *dev = NULL;
        gk_pool *pool = NULL;
        GK_ASSERT_OK(gk_device_open(spec, &dev));
        GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
        int rc = pool_work(pool, dev);
        gk_device_counters c;
        GK_ASSERT_OK(gk_device_get_counters(dev, &c));
        gk_pool_destroy(pool);
        assert_int_equal(gk_device_sim_used(dev), 0);
        gk_device_close(dev);
        if (c.malloc_calls + c.vm_maps < (uint64_t)n) {
            GK_ASSERT_OK(rc); /* the Nth allocation never came: nothing failed */
            break;
        }
        injected++;
    }
    assert_true(injected > 0);
    printf("faults: %-18s %-5s %4ld injected\n", "pool sim", "sim", injected);
}

/* ---- pressure and batch finder ---- */

static int path_pressure(void *ctx)
{
    (void)ctx;
    gk_device *dev = NULL;
    gk_pool *pool = NULL;
    gk_pressure *pr = NULL;
    int rc = gk_device_open("sim:capacity=64MiB", &dev);
    if (rc)
        return rc;
    if ((rc = gk_pool_create(dev, NULL, &pool)) != 0)
        goto out_dev;
    gk_pressure_config cfg;
    gk_pressure_config_default(&cfg);
    if ((rc = gk_pressure_create(pool, &cfg, &pr)) == 0) {
        unsigned actions = 0;
        for (int i = 0; i < 4 && rc == 0; i++)
            rc = gk_pressure_sample(pr, &actions);
        gk_pressure_advice adv;
        if (rc == 0)
            rc = gk_pressure_advise(pr, 1 << 20, &adv);
        gk_pressure_destroy(pr);
    }
    gk_pool_destroy(pool);
out_dev:
    gk_device_close(dev);
    return rc;
}

/* A step that needs 1 MiB + 256 KiB per sample from the pool. */
static int batch_trial(void *user, long batch, uint64_t *peak)
{
    gk_pool *pool = user;
    void *p = NULL;
    int rc = gk_pool_malloc(pool, (size_t)(1 << 20) + (size_t)batch * (256 << 10), NULL, &p);
    if (rc)
        return rc;
    gk_pool_free(pool, p);
    *peak = 0;
    return 0;
}

static int path_batch(void *ctx)
{
    (void)ctx;
    gk_device *dev = NULL;
    gk_pool *pool = NULL;
    int rc = gk_device_open("sim:capacity=32MiB", &dev);
    if (rc)
        return rc;
    if ((rc = gk_pool_create(dev, NULL, &pool)) == 0) {
        gk_batch_config cfg;
        gk_batch_config_default(&cfg);
        cfg.mode = GK_BATCH_BINSEARCH;
        cfg.pool = pool;
        gk_batch_result res;
        rc = gk_batch_find(&cfg, batch_trial, pool, &res);
        gk_pool_destroy(pool);
    }
    gk_device_close(dev);
    return rc;
}

static void test_pressure_batch(void **state)
{
    (void)state;
    walk("pressure", FAULT_ALLOC, path_pressure, NULL);
    walk("batch finder", FAULT_ALLOC, path_batch, NULL);
}

/* ---- loader ---- */

static int run_loader(gk_dataset *ds, int workers, const char *device)
{
    gk_device *dev = NULL;
    gk_loader *ld = NULL;
    int rc = 0;
    if (device && (rc = gk_device_open(device, &dev)) != 0)
        return rc;
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.logger.level = GK_LOG_OFF;
    cfg.batch_size = 8;
    cfg.workers = workers;
    cfg.depth = 3;
    cfg.epochs = 2;
    cfg.shuffle = 1;
    cfg.timeout = 10;
    cfg.device = dev;
    if ((rc = gk_loader_create(&cfg, ds, &ld)) == 0) {
        gk_batch b;
        long got = 0;
        while ((rc = gk_loader_next(ld, NULL, 10, &b)) == 0)
            got++;
        if (rc == GK_LOADER_END)
            rc = got == 2 * (long)gk_loader_batches_per_epoch(ld) ? 0 : -EPROTO;
        gk_loader_stats st;
        gk_loader_get_stats(ld, &st);
        gk_loader_destroy(ld);
    }
    gk_device_close(dev);
    return rc;
}

static int path_loader_records(void *ctx)
{
    gk_records_options opt = {.size = sizeof(gk_records_options),
                              .access = *(const int *)ctx ? GK_RECORDS_PREAD : GK_RECORDS_MMAP,
                              .random = 1,
                              .readahead = 1};
    gk_dataset *ds = NULL;
    int rc = gk_dataset_open_records(records_path, &opt, &ds);
    if (rc)
        return rc;
    rc = run_loader(ds, 2, "sim:capacity=64MiB");
    gk_dataset_destroy(ds);
    return rc;
}

static int path_loader_tokens(void *ctx)
{
    (void)ctx;
    gk_dataset *ds = NULL;
    int rc = gk_dataset_open_tokens(shard_glob, 2, 16, 1, &ds);
    if (rc)
        return rc;
    rc = run_loader(ds, 1, NULL);
    gk_dataset_destroy(ds);
    return rc;
}

static int path_records_writer(void *ctx)
{
    (void)ctx;
    char path[600];
    snprintf(path, sizeof path, "%s/w.gkr", dir);
    uint64_t shape[2] = {4, 4};
    gk_records_writer *w = NULL;
    int rc = gk_records_writer_open(path, 64, "<f4", 2, shape, &w);
    if (rc)
        return rc;
    float rec[16 * 10] = {0};
    rc = gk_records_writer_write(w, rec, 10);
    if (rc) {
        gk_records_writer_abort(w);
        return rc;
    }
    rc = gk_records_writer_close(w);
    gk_records_info info;
    char err[256];
    if (rc == 0)
        rc = gk_records_inspect(path, &info, err, sizeof err);
    return rc;
}

static void test_loader(void **state)
{
    (void)state;
    int mmap_access = 0, pread_access = 1;
    walk("loader records", FAULT_ALLOC, path_loader_records, &mmap_access);
    walk("loader records", FAULT_FILE, path_loader_records, &mmap_access);
    walk("loader pread", FAULT_FILE, path_loader_records, &pread_access);
    walk("loader shards", FAULT_ALLOC, path_loader_tokens, NULL);
    walk("loader shards", FAULT_FILE, path_loader_tokens, NULL);
    walk("records writer", FAULT_ALLOC, path_records_writer, NULL);
    walk("records writer", FAULT_FILE, path_records_writer, NULL);
}

/* ---- metrics, telemetry, monitor, exporter ---- */

static int path_metrics(void *ctx)
{
    (void)ctx;
    gk_metrics *m = NULL;
    int rc = gk_metrics_create(NULL, &m);
    if (rc)
        return rc;
    gk_metric *c = NULL, *g = NULL, *h = NULL;
    const char *labels[] = {"gpu", "0", "kind", "a\"b\n", NULL};
    const double bounds[] = {0.1, 1, 10};
    if ((rc = gk_metrics_counter(m, "gpukit_fault_events_total", "Events.", labels, &c)) == 0 &&
        (rc = gk_metrics_gauge(m, "gpukit_fault_level", "Level.", NULL, &g)) == 0 &&
        (rc = gk_metrics_histogram(m, "gpukit_fault_seconds", "Time.", labels, bounds, 3, &h)) ==
            0) {
        gk_counter_add(c, 2);
        gk_gauge_set(g, 3);
        gk_histogram_observe(h, 0.5);
        for (int i = 0; i < 40 && rc == 0; i++)
            rc = gk_metrics_log(m, "loss", 1.0 / (i + 1));
        gk_summary_stats sum;
        if (rc == 0)
            rc = gk_metrics_log_summary(m, "loss", &sum);
        for (int f = GK_METRICS_PROMETHEUS; f <= GK_METRICS_OPENMETRICS && rc == 0; f++) {
            char *out = NULL;
            size_t len = 0;
            if ((rc = gk_metrics_render(m, (gk_metrics_format)f, &out, &len)) == 0)
                free(out);
        }
        if (rc == 0)
            rc = gk_metrics_write_textfile(m, textfile_path);
    }
    gk_metrics_destroy(m);
    return rc;
}

static int path_summary(void *ctx)
{
    (void)ctx;
    gk_summary *a = NULL, *b = NULL;
    int rc = gk_summary_create(&a);
    if (rc)
        return rc;
    if ((rc = gk_summary_create(&b)) == 0) {
        for (int i = 0; i < 2000 && rc == 0; i++)
            rc = gk_summary_add(i % 2 ? a : b, (double)(i * 7919 % 1000));
        if (rc == 0)
            rc = gk_summary_merge(a, b);
        gk_summary_destroy(b);
    }
    gk_summary_destroy(a);
    return rc;
}

static int path_host(void *ctx)
{
    (void)ctx;
    gk_host *h = NULL;
    int rc = gk_host_open(NULL, &h);
    if (rc)
        return rc;
    gk_host_sample s;
    rc = gk_host_sample_read(h, GK_HOST_ALL, &s);
    gk_proc_tree t;
    if (rc == 0)
        rc = gk_host_proc_tree(h, (int)getpid(), &t);
    gk_host_close(h);
    return rc;
}

/* The monitor's host-only or fake-NVML paths: create, one tick, an alert, start, stop. */
static int path_monitor(void *ctx)
{
    const char *nvml = ctx;
    gk_metrics *reg = NULL;
    gk_monitor *m = NULL;
    int rc = gk_metrics_create(NULL, &reg);
    if (rc)
        return rc;
    gk_monitor_config cfg;
    gk_monitor_config_default(&cfg);
    cfg.logger.level = GK_LOG_OFF;
    cfg.metrics = reg;
    cfg.interval = 30; /* start runs one tick at once; stop ends the wait */
    cfg.slow_every = 1;
    cfg.gpu = nvml ? GK_MONITOR_GPU_REQUIRE : GK_MONITOR_GPU_OFF;
    cfg.nvml_library = nvml;
    if ((rc = gk_monitor_create(&cfg, &m)) == 0) {
        char err[256];
        if ((rc = gk_monitor_add_alert(m, "busy", "gpukit_host_load1 > 1000 for 1s", err,
                                       sizeof err)) == 0 &&
            (rc = gk_monitor_tick(m)) == 0 && (rc = gk_monitor_start(m)) == 0)
            rc = gk_monitor_stop(m);
        gk_monitor_destroy(m);
    }
    gk_metrics_destroy(reg);
    return rc;
}

static int scrape(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = -EIO;
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n > 12) {
            buf[n] = '\0';
            /* 200 with the metrics, or 500 when rendering ran out of memory */
            rc = strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -ENOMEM;
        }
    }
    close(fd);
    return rc;
}

static int path_exporter(void *ctx)
{
    (void)ctx;
    gk_metrics *reg = NULL;
    int rc = gk_metrics_create(NULL, &reg);
    if (rc)
        return rc;
    gk_metric *c = NULL;
    if ((rc = gk_metrics_counter(reg, "gpukit_fault_scrapes_total", "S.", NULL, &c)) == 0) {
        gk_exporter_config cfg;
        gk_exporter_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.metrics = reg;
        gk_exporter *e = NULL;
        char err[256];
        if ((rc = gk_exporter_start(&cfg, &e, err, sizeof err)) == 0) {
            rc = scrape(gk_exporter_port(e));
            gk_exporter_destroy(e);
        }
    }
    gk_metrics_destroy(reg);
    return rc;
}

static void test_observe(void **state)
{
    (void)state;
    walk("metrics", FAULT_ALLOC, path_metrics, NULL);
    walk("metrics", FAULT_FILE, path_metrics, NULL);
    walk("summary", FAULT_ALLOC, path_summary, NULL);
    walk("host reader", FAULT_ALLOC, path_host, NULL);
    walk("host reader", FAULT_FILE, path_host, NULL);
    walk("monitor host", FAULT_ALLOC, path_monitor, NULL);
    walk("monitor host", FAULT_FILE, path_monitor, NULL);
    walk_upto("monitor nvml", FAULT_ALLOC, path_monitor, GK_TEST_FAKE_NVML,
              tool_cap(NVML_FAULTS * soak_scale()));
    walk("exporter", FAULT_ALLOC, path_exporter, NULL);
}

/* ---- NVML errors from the fake libnvidia-ml ---- */

typedef struct fake_nvml_api {
    void *lib;
    void (*reset)(void);
    void (*inject)(const char *func, int dev, int code, int times);
    void (*set_init_error)(int code);
} fake_nvml_api;

/* Every NVML function the monitor calls fails in turn, with "GPU is lost" (15) or "unknown" (999),
 * on the first call or on all of them: the monitor either refuses to start (GK_ENOGPU, for the
 * calls of its opening) or goes on sampling without that reading. */
static void test_nvml_errors(void **state)
{
    (void)state;
    static const char *const fns[] = {"nvmlInit_v2",
                                      "nvmlDeviceGetCount_v2",
                                      "nvmlDeviceGetHandleByIndex_v2",
                                      "nvmlDeviceGetName",
                                      "nvmlDeviceGetUUID",
                                      "nvmlDeviceGetPciInfo_v3",
                                      "nvmlDeviceGetMemoryInfo_v2",
                                      "nvmlDeviceGetUtilizationRates",
                                      "nvmlDeviceGetTemperature",
                                      "nvmlDeviceGetPowerUsage",
                                      "nvmlDeviceGetEnforcedPowerLimit",
                                      "nvmlDeviceGetTotalEnergyConsumption",
                                      "nvmlDeviceGetClockInfo",
                                      "nvmlDeviceGetCurrentClocksEventReasons",
                                      "nvmlDeviceGetFanSpeed",
                                      "nvmlDeviceGetTotalEccErrors",
                                      "nvmlDeviceGetComputeRunningProcesses_v3",
                                      "nvmlDeviceGetMigMode",
                                      "nvmlSystemGetDriverVersion"};
    fake_nvml_api fk;
    fk.lib = dlopen(GK_TEST_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(fk.lib);
    *(void **)&fk.reset = dlsym(fk.lib, "fakenvml_reset");
    *(void **)&fk.inject = dlsym(fk.lib, "fakenvml_fail");
    *(void **)&fk.set_init_error = dlsym(fk.lib, "fakenvml_set_init_error");
    assert_non_null(fk.reset);
    assert_non_null(fk.inject);
    assert_non_null(fk.set_init_error);
    long injected = 0, refused = 0;
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        for (int mode = 0; mode < 4; mode++) {
            fk.reset();
            fk.inject(fns[f], -1, mode % 2 ? 999 : 15, mode < 2 ? 1 : 0);
            int rc = path_monitor(GK_TEST_FAKE_NVML);
            if (rc != 0) {
                GK_ASSERT_ERR(rc, GK_ENOGPU);
                refused++;
            }
            injected++;
        }
    }
    fk.reset();
    fk.set_init_error(999);
    GK_ASSERT_ERR(path_monitor(GK_TEST_FAKE_NVML), GK_ENOGPU);
    fk.reset();
    GK_ASSERT_OK(path_monitor(GK_TEST_FAKE_NVML));
    printf("faults: %-18s %-5s %4ld injected, %4ld refused to start\n", "monitor nvml", "nvml",
           injected + 1, refused + 1);
    dlclose(fk.lib);
}

/* ---- recordings, reports and gpukit run ---- */

static char recording_path[512];

static int write_recording(const char *path, double scale)
{
    const char *argv[] = {"train", "--fast", NULL};
    gk_recording_meta meta = {.size = sizeof(gk_recording_meta),
                              .argc = 2,
                              .argv = argv,
                              .host = "h",
                              .interval_s = 0.5,
                              .cores = 2,
                              .memory_total_bytes = 1e9,
                              .gpu_reason = "none"};
    gk_recorder *r = NULL;
    int rc = gk_recorder_open(path, &meta, &r);
    if (rc)
        return rc;
    const char *names[] = {"cpu_percent", "rss_bytes"};
    for (int i = 0; i < 20 && rc == 0; i++) {
        double v[2] = {50 * scale + i, 1e6 * scale};
        rc = gk_recorder_sample(r, i * 0.5, 2, names, v);
        if (rc == 0)
            rc = gk_recorder_metric(r, i * 0.5, "loss", "g", 1.0 / (i + 1), "phase:train");
    }
    if (rc == 0)
        rc = gk_recorder_alert(r, 3, "busy", "", "firing", 99);
    gk_recording_end end = {.size = sizeof(gk_recording_end), .t = 10, .exit_status = 0};
    int crc = gk_recorder_close(r, &end);
    return rc ? rc : crc;
}

static int path_recorder(void *ctx)
{
    (void)ctx;
    char path[600];
    snprintf(path, sizeof path, "%s/w.jsonl", dir);
    return write_recording(path, 1);
}

static int path_report(void *ctx)
{
    (void)ctx;
    gk_recording *rec = NULL, *base = NULL;
    char err[256];
    int rc = gk_recording_load(recording_path, &rec, err, sizeof err);
    if (rc)
        return rc;
    if ((rc = gk_recording_load(recording_path, &base, err, sizeof err)) == 0) {
        gk_report *rep = NULL;
        if ((rc = gk_report_create(rec, base, &rep)) == 0) {
            FILE *out = tmpfile();
            if (out) {
                if ((rc = gk_report_write_text(rep, out)) == 0 &&
                    (rc = gk_report_write_json(rep, out)) == 0)
                    rc = gk_report_write_html(rep, out);
                fclose(out);
            }
            gk_report_destroy(rep);
        }
        gk_recording_free(base);
    }
    gk_recording_free(rec);
    return rc;
}

static int path_run(void *ctx)
{
    (void)ctx;
    char path[600];
    snprintf(path, sizeof path, "%s/run.jsonl", dir);
    gk_run_config cfg;
    gk_run_config_default(&cfg);
    cfg.interval_s = 0.05;
    cfg.record_path = path;
    cfg.gpu = 0;
    cfg.logger.level = GK_LOG_OFF;
    char *const argv[] = {"true", NULL};
    gk_run_result res;
    int rc = gk_run_execute(&cfg, argv, &res);
    if (rc == 0 && res.exit_status != 0)
        rc = -ECHILD;
    return rc;
}

static void test_recording(void **state)
{
    (void)state;
    gk_fault_reset();
    GK_ASSERT_OK(write_recording(recording_path, 1));
    walk("recorder", FAULT_ALLOC, path_recorder, NULL);
    walk("recorder", FAULT_FILE, path_recorder, NULL);
    walk("report", FAULT_ALLOC, path_report, NULL);
    walk("report", FAULT_FILE, path_report, NULL);
    walk("gpukit run", FAULT_ALLOC, path_run, NULL);
    walk("gpukit run", FAULT_FILE, path_run, NULL);
}

/* ---- the CUDA backend over the fake driver ---- */

typedef struct fake_api {
    void *lib;
#define FK_FIELD(ret, name, params) ret(*name) params;
    FAKECUDA_CONTROL_FUNCS(FK_FIELD)
#undef FK_FIELD
} fake_api;

static void test_cuda(void **state)
{
    (void)state;
    fake_api fk;
    gk_test_setenv("GK_CUDA_LIBRARY", gk_test_fake_cuda());
    fk.lib = dlopen(gk_test_fake_cuda(), RTLD_NOW | RTLD_LOCAL);
    assert_non_null(fk.lib);
    void *p;
#define FK_LOAD(ret, name, params)                                                                 \
    p = dlsym(fk.lib, #name);                                                                      \
    assert_non_null(p);                                                                            \
    memcpy(&fk.name, &p, sizeof p);
    FAKECUDA_CONTROL_FUNCS(FK_LOAD)
#undef FK_LOAD
    fk.fakecuda_reset();
    walk("device cuda", FAULT_ALLOC, path_device, "cuda:0");
    walk("pool cuda", FAULT_ALLOC, path_pool, "cuda:0");
    assert_int_equal(fk.fakecuda_live_objects(), 0);

    /* Driver errors at the Nth call of each function the paths make. */
    static const char *const fns[] = {"cuMemAlloc_v2", "cuMemHostAlloc",       "cuStreamCreate",
                                      "cuEventCreate", "cuMemcpyHtoDAsync_v2", "cuEventRecord"};
    long injected = 0;
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        for (int n = 1; n <= 16; n++) {
            fk.fakecuda_reset();
            assert_int_equal(fk.fakecuda_fail(fns[f], n, 2 /* CUDA_ERROR_OUT_OF_MEMORY */), 0);
            int rc1 = path_device("cuda:0");
            long calls = fk.fakecuda_calls(fns[f]);
            int rc2 = path_pool("cuda:0");
            assert_int_equal(fk.fakecuda_live_objects(), 0);
            calls += fk.fakecuda_calls(fns[f]);
            if (calls < n) {
                GK_ASSERT_OK(rc1);
                break;
            }
            injected++;
            (void)rc2;
        }
    }
    fk.fakecuda_reset();
    GK_ASSERT_OK(path_pool("cuda:0"));
    printf("faults: %-18s %-5s %4ld injected\n", "device+pool cuda", "cuda", injected);
    dlclose(fk.lib);
    gk_test_setenv("GK_CUDA_LIBRARY", NULL);
}

/* ---- the hook itself ---- */

static void test_hook(void **state)
{
    (void)state;
    gk_fault_host_alloc_nth(2);
    gk_metrics *a = NULL;
    gk_summary *s = NULL;
    GK_ASSERT_OK(gk_summary_create(&s)); /* the first allocation succeeds */
    gk_summary_destroy(s);
    gk_fault_counts c;
    gk_fault_counts_get(&c);
    assert_true(c.host_allocs >= 1);
    gk_fault_host_alloc_nth(1);
    GK_ASSERT_ERR(gk_metrics_create(NULL, &a), -ENOMEM);
    assert_null(a);
    gk_fault_counts_get(&c);
    assert_int_equal(c.host_injected, 1);
    assert_int_equal(c.host_allocs, 1);
    GK_ASSERT_OK(gk_metrics_create(NULL, &a)); /* one-shot: the next one works */
    gk_metrics_destroy(a);
    gk_fault_reset();
    gk_fault_counts_get(&c);
    assert_int_equal(c.host_allocs + c.file_ops + c.host_injected + c.file_injected, 0);
    gk_fault_file_op_nth(1);
    gk_host *h = NULL;
    assert_true(gk_host_open(NULL, &h) != 0);
    assert_null(h);
    gk_fault_counts_get(&c);
    assert_int_equal(c.file_injected, 1);
    gk_fault_reset();
    GK_ASSERT_ERR((gk_fault_counts_get)(NULL, 0), -EINVAL);
}

/* ---- fixtures ---- */

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
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
    write_file(path, buf, len);
    free(buf);
}

static int group_setup(void **state)
{
    (void)state;
    gk_test_setenv("GK_LOG", "off");
    dir = gk_test_tmpdir("faults");
    snprintf(records_path, sizeof records_path, "%s/r.gkr", dir);
    snprintf(shard_glob, sizeof shard_glob, "%s/shard_*.bin", dir);
    snprintf(trace_path, sizeof trace_path, "%s/t.csv", dir);
    snprintf(textfile_path, sizeof textfile_path, "%s/metrics.prom", dir);
    snprintf(recording_path, sizeof recording_path, "%s/rec.jsonl", dir);
    gk_records_writer *w = NULL;
    uint64_t shape[1] = {8};
    GK_ASSERT_OK(gk_records_writer_open(records_path, 32, "<u4", 1, shape, &w));
    uint32_t rec[8 * 40];
    for (size_t i = 0; i < sizeof rec / sizeof rec[0]; i++)
        rec[i] = (uint32_t)i;
    GK_ASSERT_OK(gk_records_writer_write(w, rec, 40));
    GK_ASSERT_OK(gk_records_writer_close(w));
    char p[600];
    snprintf(p, sizeof p, "%s/shard_000.bin", dir);
    write_shard(p, 300, 0);
    snprintf(p, sizeof p, "%s/shard_001.bin", dir);
    write_shard(p, 200, 1000);
    static const char trace[] = "Thread,Time,Action,Pointer,Size,Stream\n"
                                "1,1,allocate,0x10,4096,0x0\n"
                                "1,2,allocate,0x20,1048576,0x1\n"
                                "1,3,allocate,0x30,65536,0x0\n"
                                "1,4,free,0x10,4096,0x0\n"
                                "1,5,allocate,0x40,2048,0x1\n"
                                "1,6,free,0x20,1048576,0x1\n"
                                "1,7,free,0x30,65536,0x0\n";
    write_file(trace_path, trace, sizeof trace - 1);
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook),           cmocka_unit_test(test_device),
        cmocka_unit_test(test_pool),           cmocka_unit_test(test_pool_backend_faults),
        cmocka_unit_test(test_pressure_batch), cmocka_unit_test(test_loader),
        cmocka_unit_test(test_observe),        cmocka_unit_test(test_nvml_errors),
        cmocka_unit_test(test_recording),      cmocka_unit_test(test_cuda),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
