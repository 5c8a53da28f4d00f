/* Tests of the monitor: host-only and GPU ticks through the fixtures and the fake NVML, series,
 * counter rates with resets, published metrics, alerts, and reads while the sampler thread runs
 * (TSan runs this file: label threads). */
/* gk-labels: unit threads */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gk_test.h"

typedef struct fake_api {
    void *h;
    void (*reset)(void);
    int (*set)(unsigned, const char *, unsigned long long, unsigned long long);
    void (*inject)(const char *, int, int, int);
} fake_api;

static fake_api fake;
static char proc1[1024];

static int setup(void **state)
{
    (void)state;
    fake.reset();
    return 0;
}

static gk_monitor_config base_config(gk_metrics *reg)
{
    gk_monitor_config cfg;
    gk_monitor_config_default(&cfg);
    cfg.logger.level = GK_LOG_OFF;
    cfg.metrics = reg;
    cfg.proc_root = proc1;
    cfg.gpu = GK_MONITOR_GPU_OFF;
    cfg.slow_every = 1;
    return cfg;
}

static double last_value(gk_monitor *m, const char *name, const char *labels)
{
    size_t idx, n;
    if (gk_monitor_find(m, name, labels, &idx) != 0)
        fail_msg("no series %s{%s}", name, labels ? labels : "");
    gk_series_point p;
    GK_ASSERT_OK(gk_monitor_read(m, idx, &p, 1, &n));
    assert_int_equal(n, 1);
    return p.value;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_config(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg = base_config(reg);
    gk_monitor *m = NULL;
    cfg.interval = 0;
    GK_ASSERT_ERR(gk_monitor_create(&cfg, &m), -EINVAL);
    cfg = base_config(reg);
    cfg.slow_every = 0;
    GK_ASSERT_ERR(gk_monitor_create(&cfg, &m), -EINVAL);
    cfg = base_config(reg);
    cfg.proc_root = "/nonexistent/proc";
    GK_ASSERT_ERR(gk_monitor_create(&cfg, &m), -ENOENT);
    cfg = base_config(reg);
    cfg.gpu = GK_MONITOR_GPU_REQUIRE;
    cfg.nvml_library = "/nonexistent/libnvidia-ml.so.1";
    GK_ASSERT_ERR(gk_monitor_create(&cfg, &m), GK_ENOGPU);
    assert_null(m);
    /* AUTO without a library: host-only, with the reason kept. */
    cfg.gpu = GK_MONITOR_GPU_AUTO;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    char why[256];
    assert_int_equal(gk_monitor_gpu_available(m, why, sizeof why), 0);
    GK_ASSERT_CONTAINS(why, "not found");
    assert_null(gk_monitor_nvml(m));
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_true(last_value(m, "gpukit_nvml_up", NULL) == 0.0);
    assert_ptr_equal(gk_monitor_metrics(m), reg);
    gk_monitor_destroy(m);
    gk_monitor_destroy(NULL);
    gk_metrics_destroy(reg);
    GK_ASSERT_ERR(gk_monitor_create(NULL, NULL), -EINVAL);
}

static void test_host_only(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg = base_config(reg);
    cfg.pid = 100;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_monitor_tick(m));
    assert_true(last_value(m, "gpukit_memory_total_bytes", NULL) == 8000000.0 * 1024);
    assert_true(last_value(m, "gpukit_load5", NULL) == 1.25);
    assert_true(last_value(m, "gpukit_disk_read_bytes_total", "device=\"sda\"") == 20000.0 * 512);
    assert_true(last_value(m, "gpukit_network_receive_bytes_total", "device=\"eth0\"") ==
                9876543.0);
    assert_true(last_value(m, "gpukit_process_tree_threads", "pid=\"100\"") == 7.0);
    assert_true(last_value(m, "gpukit_process_tree_pss_bytes", "pid=\"100\"") == 12000.0 * 1024);
    size_t idx, n;
    GK_ASSERT_OK(gk_monitor_find(m, "gpukit_cpu_seconds_total", "mode=\"user\"", &idx));
    gk_series_info info;
    GK_ASSERT_OK(gk_monitor_series_info(m, idx, &info));
    assert_int_equal(info.counter, 1);
    assert_int_equal(info.count, 3);
    assert_int_equal(info.capacity, 600);
    gk_series_point pts[8];
    GK_ASSERT_OK(gk_monitor_read(m, idx, pts, 8, &n));
    assert_int_equal(n, 3);
    assert_true(pts[0].t_ns < pts[1].t_ns && pts[1].t_ns < pts[2].t_ns);
    GK_ASSERT_OK(gk_monitor_rate(m, idx, pts, 8, &n));
    assert_int_equal(n, 2);
    assert_true(pts[0].value == 0.0 && pts[1].value == 0.0); /* the fixture does not move */
    GK_ASSERT_ERR(gk_monitor_rate(m, idx + 9999, pts, 8, &n), -ERANGE);
    size_t gidx;
    GK_ASSERT_OK(gk_monitor_find(m, "gpukit_memory_total_bytes", "", &gidx));
    GK_ASSERT_ERR(gk_monitor_rate(m, gidx, pts, 8, &n), -EINVAL);
    gk_summary_stats st;
    GK_ASSERT_OK(gk_monitor_summary(m, gidx, &st));
    assert_int_equal(st.count, 3);
    assert_true(st.mean == 8000000.0 * 1024 && st.std == 0.0);
    GK_ASSERT_ERR(gk_monitor_find(m, "gpukit_nope", NULL, &idx), -ENOENT);
    gk_monitor_stats ms;
    gk_monitor_get_stats(m, &ms);
    assert_int_equal(ms.ticks, 3);
    assert_true(ms.total_tick_seconds > 0 && ms.max_tick_seconds >= ms.last_tick_seconds);
    /* The registry carries the same readings. */
    char *text = NULL;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    GK_ASSERT_CONTAINS(text, "gpukit_memory_total_bytes 8192000000\n");
    GK_ASSERT_CONTAINS(text, "# TYPE gpukit_cpu_seconds_total counter\n");
    GK_ASSERT_CONTAINS(text, "gpukit_load1 0.5\n");
    GK_ASSERT_CONTAINS(text, "gpukit_filesystem_size_bytes{mountpoint=\"/\"");
    GK_ASSERT_CONTAINS(text, "gpukit_sampler_duration_seconds_count 3\n");
    GK_ASSERT_CONTAINS(text, "gpukit_sampler_ticks_total 3\n");
    GK_ASSERT_CONTAINS(text, "gpukit_build_info{version=\"");
    free(text);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
}

static gk_monitor *gpu_monitor(gk_metrics *reg)
{
    gk_monitor_config cfg = base_config(reg);
    cfg.gpu = GK_MONITOR_GPU_REQUIRE;
    cfg.nvml_library = GK_TEST_FAKE_NVML;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    return m;
}

static void test_gpu_series(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor *m = gpu_monitor(reg);
    assert_int_equal(gk_monitor_gpu_available(m, NULL, 0), 1);
    fake.set(0, "energy_mj", 5000000, 1000000); /* +1000 J per read */
    fake.set(0, "events", 0x24, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    GK_ASSERT_OK(gk_monitor_tick(m));
    const char *g0 = "gpu=\"0\",uuid=\"GPU-fake-0000\"";
    assert_true(last_value(m, "gpukit_gpu_power_watts", g0) == 250.5);
    assert_true(last_value(m, "gpukit_gpu_utilization_ratio", g0) == 0.5);
    assert_true(last_value(m, "gpukit_gpu_memory_reserved_bytes", g0) == 512.0 * 1048576);
    assert_true(last_value(m, "gpukit_gpu_clock_hertz",
                           "gpu=\"0\",uuid=\"GPU-fake-0000\",clock=\"sm\"") == 1410e6);
    assert_true(last_value(m, "gpukit_gpu_throttled",
                           "gpu=\"0\",uuid=\"GPU-fake-0000\",reason=\"sw_thermal\"") == 1.0);
    assert_true(last_value(m, "gpukit_gpu_throttled",
                           "gpu=\"0\",uuid=\"GPU-fake-0000\",reason=\"hw_slowdown\"") == 0.0);
    assert_true(last_value(m, "gpukit_gpu_energy_joules_total", g0) == 6000.0);
    /* A driver reload resets the counter: the rate stays positive and the exported counter
     * keeps growing by the new value. */
    fake.set(0, "energy_mj", 100000, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    size_t idx, n;
    GK_ASSERT_OK(gk_monitor_find(m, "gpukit_gpu_energy_joules_total", g0, &idx));
    gk_series_point r[4];
    GK_ASSERT_OK(gk_monitor_rate(m, idx, r, 4, &n));
    assert_int_equal(n, 2);
    assert_true(r[0].value > 0 && r[1].value > 0);
    char *text = NULL;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_OPENMETRICS, &text, &len));
    GK_ASSERT_CONTAINS(text, "gpukit_gpu_energy_joules_total{gpu=\"0\",uuid=\"GPU-fake-0000\"} "
                             "6100\n");
    GK_ASSERT_CONTAINS(text, "gpukit_gpu_info{gpu=\"1\",uuid=\"GPU-fake-0001\",name=\"Fake GPU "
                             "1\",pci_bus_id=\"00000000:08:00.0\",driver_version=\"550.54.15\"} 1");
    GK_ASSERT_CONTAINS(text, "gpukit_nvml_up 1\n");
    free(text);
    /* MIG instances get their own memory series. */
    fake.set(1, "mig_cur", 1, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_true(last_value(m, "gpukit_gpu_mig_memory_used_bytes",
                           "gpu=\"1\",uuid=\"GPU-fake-0001\",gpu_instance_id=\"2\","
                           "compute_instance_id=\"0\"") == 512.0 * 1048576);
    /* GPU 1 lost: marked, and GPU 0 keeps being read. */
    fake.inject("nvmlDeviceGetPowerUsage", 1, 15, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_true(last_value(m, "gpukit_gpu_lost", "gpu=\"1\",uuid=\"GPU-fake-0001\"") == 1.0);
    assert_true(last_value(m, "gpukit_gpu_lost", g0) == 0.0);
    assert_true(last_value(m, "gpukit_nvml_errors_total",
                           "call=\"nvmlDeviceGetPowerUsage\",code=\"15\"") == 1.0);
    gk_monitor_stats ms;
    gk_monitor_get_stats(m, &ms);
    assert_int_equal(ms.nvml_errors, 1);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
}

/* Per-process GPU memory: one registry series per process and GPU, labelled with the rank and
 * container read from the process (fixture pid 200: RANK=3 in its environment, a Docker cgroup);
 * capped by max_process_series with the rest counted once each; removed when the process leaves
 * NVML's list. */
typedef struct proc_find {
    char want_pid[16], want_gpu[16];
    int found;
    double value;
    char rank[16], container[32];
} proc_find;

static int visit_proc(void *user, const gk_metric_sample *s)
{
    proc_find *f = user;
    if (strcmp(s->name, "gpukit_gpu_process_memory_used_bytes") != 0)
        return 0;
    const char *pid = "", *gpu = "", *rank = "", *container = "";
    for (size_t i = 0; i < s->nlabels; i++) {
        const char *k = s->label_names[i], *v = s->label_values[i];
        if (!strcmp(k, "pid"))
            pid = v;
        else if (!strcmp(k, "gpu"))
            gpu = v;
        else if (!strcmp(k, "rank"))
            rank = v;
        else if (!strcmp(k, "container"))
            container = v;
    }
    f->found++;
    if (strcmp(pid, f->want_pid) == 0 && strcmp(gpu, f->want_gpu) == 0) {
        f->value = s->value;
        snprintf(f->rank, sizeof f->rank, "%s", rank);
        snprintf(f->container, sizeof f->container, "%s", container);
    }
    return 0;
}

static proc_find find_proc(gk_metrics *reg, const char *gpu, const char *pid)
{
    proc_find f = {.value = -1};
    snprintf(f.want_pid, sizeof f.want_pid, "%s", pid);
    snprintf(f.want_gpu, sizeof f.want_gpu, "%s", gpu);
    GK_ASSERT_OK(gk_metrics_foreach(reg, visit_proc, &f));
    return f;
}

static double dropped(gk_metrics *reg)
{
    gk_metric *c = NULL;
    GK_ASSERT_OK(
        gk_metrics_counter(reg, "gpukit_gpu_process_series_dropped_total", NULL, NULL, &c));
    return gk_metric_value(c);
}

static void test_process_series(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg = base_config(reg);
    cfg.gpu = GK_MONITOR_GPU_REQUIRE;
    cfg.nvml_library = GK_TEST_FAKE_NVML;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    fake.set(0, "proc_pid_base", 200, 0); /* GPU 0: pids 200 (1 MiB) and 201 (2 MiB) */
    GK_ASSERT_OK(gk_monitor_tick(m));
    proc_find f = find_proc(reg, "0", "200");
    assert_int_equal(f.found, 4); /* two processes on each of the two GPUs */
    assert_true(f.value == 1 << 20);
    assert_string_equal(f.rank, "3");
    assert_string_equal(f.container, "4f1c2a9e8b7d");
    f = find_proc(reg, "0", "201"); /* no such process in the fixture: no rank, no container */
    assert_true(f.value == 2 << 20);
    assert_string_equal(f.rank, "");
    assert_string_equal(f.container, "");
    assert_true(find_proc(reg, "1", "1001").value == 2 << 20);
    char *text = NULL;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    GK_ASSERT_CONTAINS(text,
                       "gpukit_gpu_process_memory_used_bytes{gpu=\"0\",uuid=\"GPU-fake-0000\","
                       "pid=\"200\",rank=\"3\",container=\"4f1c2a9e8b7d\"} 1048576\n");
    free(text);
    assert_true(dropped(reg) == 0);
    /* One process fewer on GPU 1: its series goes; the others stay. */
    fake.set(1, "nproc", 1, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_int_equal(find_proc(reg, "1", "1001").found, 3);
    assert_true(find_proc(reg, "1", "1001").value == -1);
    assert_true(find_proc(reg, "1", "1000").value == 1 << 20);
    gk_monitor_destroy(m);
    assert_int_equal(find_proc(reg, "0", "200").found, 0); /* a destroyed monitor leaves none */

    /* A cap of 2: the first two processes seen are exported, the others counted once each. The
     * lists are read on slow ticks (every third here): the ticks between keep the series. */
    cfg.max_process_series = 2;
    cfg.slow_every = 3;
    fake.reset();
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_monitor_tick(m));
    assert_int_equal(find_proc(reg, "0", "1000").found, 2);
    assert_true(dropped(reg) == 2);
    /* GPU 0's processes exit: GPU 1's, waiting past the cap, take their places. */
    fake.set(0, "nproc", 0, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_int_equal(find_proc(reg, "1", "1001").found, 2);
    assert_true(find_proc(reg, "1", "1001").value == 2 << 20);
    assert_true(dropped(reg) == 2);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
}

typedef struct alert_log {
    pthread_mutex_t lock;
    char lines[16][160];
    int n;
} alert_log;

static void on_alert(void *user, const char *rule, const char *labels, gk_alert_state state,
                     double value)
{
    alert_log *log = user;
    pthread_mutex_lock(&log->lock);
    if (log->n < 16)
        snprintf(log->lines[log->n++], sizeof log->lines[0], "%s %s {%s} %g", rule,
                 gk_alert_state_name(state), labels, value);
    pthread_mutex_unlock(&log->lock);
}

static void test_alerts(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg = base_config(reg);
    cfg.gpu = GK_MONITOR_GPU_REQUIRE;
    cfg.nvml_library = GK_TEST_FAKE_NVML;
    alert_log log = {.n = 0};
    pthread_mutex_init(&log.lock, NULL);
    cfg.on_alert = on_alert;
    cfg.alert_user = &log;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    char err[256];
    GK_ASSERT_ERR(gk_monitor_add_alert(m, "bad", "gpukit_x >> 3", err, sizeof err), GK_ESYNTAX);
    GK_ASSERT_CONTAINS(err, "column 11");
    GK_ASSERT_ERR(gk_monitor_add_alert(m, "bad", "gpukit_x{gpu=0} > 3", err, sizeof err),
                  GK_ESYNTAX);
    GK_ASSERT_CONTAINS(err, "quoted value");
    GK_ASSERT_ERR(gk_monitor_add_alert(m, "bad", "gpukit_x > 3 for soon", err, sizeof err),
                  GK_ESYNTAX);
    GK_ASSERT_ERR(gk_monitor_add_alert(m, "bad", "> 3", err, sizeof err), GK_ESYNTAX);
    GK_ASSERT_ERR(gk_monitor_add_alert(m, "bad", "gpukit_x > 3 extra", err, sizeof err),
                  GK_ESYNTAX);
    GK_ASSERT_ERR(gk_monitor_add_alert(m, "bad name", "gpukit_x > 3", err, sizeof err), -EINVAL);
    GK_ASSERT_OK(gk_monitor_add_alert(
        m, "gpu_hot", "gpukit_gpu_temperature_celsius{gpu=\"0\"} > 85", err, sizeof err));
    GK_ASSERT_OK(gk_monitor_add_alert(m, "power_high", "gpukit_gpu_power_watts >= 250 for 50ms",
                                      err, sizeof err));
    GK_ASSERT_OK(gk_monitor_add_alert(m, "energy_flowing", "gpukit_gpu_energy_joules_total > 0",
                                      err, sizeof err));
    const char *g0 = "gpu=\"0\",uuid=\"GPU-fake-0000\"";
    const char *g1 = "gpu=\"1\",uuid=\"GPU-fake-0001\"";
    fake.set(0, "temp", 90, 0);
    fake.set(0, "energy_mj", 1000, 1000);
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_int_equal(gk_monitor_alert_state(m, "gpu_hot", g0), GK_ALERT_FIRING);
    assert_int_equal(gk_monitor_alert_state(m, "gpu_hot", g1), GK_ALERT_INACTIVE);
    assert_int_equal(gk_monitor_alert_state(m, "power_high", g0), GK_ALERT_PENDING);
    assert_int_equal(gk_monitor_alert_state(m, "energy_flowing", g0), GK_ALERT_INACTIVE);
    sleep_ms(60);
    fake.set(0, "temp", 70, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_int_equal(gk_monitor_alert_state(m, "gpu_hot", g0), GK_ALERT_RESOLVED);
    assert_int_equal(gk_monitor_alert_state(m, "power_high", g0), GK_ALERT_FIRING);
    assert_int_equal(gk_monitor_alert_state(m, "energy_flowing", g0), GK_ALERT_FIRING);
    fake.set(0, "power_mw", 100000, 0);
    GK_ASSERT_OK(gk_monitor_tick(m));
    assert_int_equal(gk_monitor_alert_state(m, "gpu_hot", g0), GK_ALERT_INACTIVE);
    assert_int_equal(gk_monitor_alert_state(m, "power_high", g0), GK_ALERT_RESOLVED);
    assert_int_equal(gk_monitor_alert_state(m, "nope", g0), GK_ALERT_INACTIVE);
    assert_string_equal(log.lines[0], "gpu_hot firing {gpu=\"0\",uuid=\"GPU-fake-0000\"} 90");
    assert_string_equal(log.lines[1],
                        "power_high pending {gpu=\"0\",uuid=\"GPU-fake-0000\"} 250.5");
    assert_string_equal(log.lines[2],
                        "power_high pending {gpu=\"1\",uuid=\"GPU-fake-0001\"} 250.5");
    assert_string_equal(log.lines[3], "gpu_hot resolved {gpu=\"0\",uuid=\"GPU-fake-0000\"} 70");
    assert_int_equal(log.n, 8);
    assert_string_equal(log.lines[7], "power_high resolved {gpu=\"0\",uuid=\"GPU-fake-0000\"} 100");
    assert_string_equal(gk_alert_state_name((gk_alert_state)9), "unknown");
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
    pthread_mutex_destroy(&log.lock);
}

typedef struct reader_arg {
    gk_monitor *m;
    gk_metrics *reg;
    int iterations;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    gk_series_point pts[64];
    for (int i = 0; i < a->iterations; i++) {
        size_t count = gk_monitor_series_count(a->m), n;
        for (size_t s = 0; s < count; s++) {
            gk_series_info info;
            if (gk_monitor_series_info(a->m, s, &info) != 0)
                continue;
            if (info.counter)
                gk_monitor_rate(a->m, s, pts, 64, &n);
            else
                gk_monitor_read(a->m, s, pts, 64, &n);
        }
        char *text = NULL;
        size_t len;
        if (gk_metrics_render(a->reg, GK_METRICS_PROMETHEUS, &text, &len) == 0)
            free(text);
        gk_monitor_alert_state(a->m, "hot", "gpu=\"0\",uuid=\"GPU-fake-0000\"");
    }
    return NULL;
}

static void test_thread(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg = base_config(reg);
    cfg.gpu = GK_MONITOR_GPU_REQUIRE;
    cfg.nvml_library = GK_TEST_FAKE_NVML;
    cfg.interval = 0.005;
    cfg.retention = 0.1; /* 20-point rings: wrap around */
    cfg.slow_every = 3;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    char err[200];
    GK_ASSERT_OK(
        gk_monitor_add_alert(m, "hot", "gpukit_gpu_temperature_celsius > 60", err, sizeof err));
    GK_ASSERT_OK(gk_monitor_start(m));
    GK_ASSERT_ERR(gk_monitor_start(m), -EBUSY);
    GK_ASSERT_ERR(gk_monitor_tick(m), -EBUSY);
    reader_arg a = {m, reg, 40};
    pthread_t th[2];
    assert_int_equal(pthread_create(&th[0], NULL, reader, &a), 0);
    assert_int_equal(pthread_create(&th[1], NULL, reader, &a), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* Wait (bounded: 10 s) until the sampler has wrapped the rings. */
    gk_monitor_stats st;
    for (int i = 0; i < 2000; i++) {
        gk_monitor_get_stats(m, &st);
        if (st.ticks >= 25)
            break;
        sleep_ms(5);
    }
    GK_ASSERT_OK(gk_monitor_stop(m));
    GK_ASSERT_OK(gk_monitor_stop(m));
    gk_monitor_get_stats(m, &st);
    assert_true(st.ticks >= 25);
    size_t idx;
    GK_ASSERT_OK(
        gk_monitor_find(m, "gpukit_gpu_power_watts", "gpu=\"1\",uuid=\"GPU-fake-0001\"", &idx));
    gk_series_info info;
    GK_ASSERT_OK(gk_monitor_series_info(m, idx, &info));
    assert_int_equal(info.capacity, 20);
    assert_int_equal(info.count, 20);
    assert_int_equal(gk_monitor_alert_state(m, "hot", "gpu=\"1\",uuid=\"GPU-fake-0001\""),
                     GK_ALERT_FIRING);
    /* Manual ticks work again once stopped; restart works. */
    GK_ASSERT_OK(gk_monitor_tick(m));
    GK_ASSERT_OK(gk_monitor_start(m));
    gk_monitor_destroy(m); /* stops the running thread */
    gk_metrics_destroy(reg);
}

/* A launcher's tree: this process with two children that carry RANK in their environment. The
 * monitor publishes the derived host and tree gauges and one set of series per rank, and matches
 * NVML's process list to the rank by pid. */
static void test_ranks(void **state)
{
    (void)state;
    pid_t kids[2];
    for (int r = 0; r < 2; r++) {
        kids[r] = fork();
        assert_true(kids[r] >= 0);
        if (kids[r] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failing test never leaves them spinning */
            execle("/bin/sh", "sh", "-c", "while :; do :; done", (char *)NULL,
                   (char *[]){r ? "RANK=1" : "RANK=0", "LOCAL_RANK=0", "WORLD_SIZE=2", NULL});
            _exit(127);
        }
    }
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg = base_config(reg);
    cfg.proc_root = "/proc";
    cfg.pid = (int)getpid();
    cfg.gpu = GK_MONITOR_GPU_AUTO;
    cfg.nvml_library = GK_TEST_FAKE_NVML;
    fake.set(0, "nproc", 1, 0);
    fake.set(0, "proc_pid_base", (unsigned long long)kids[1], 0); /* rank 1 uses GPU 0 */
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    char pid[16];
    snprintf(pid, sizeof pid, "pid=\"%d\"", (int)getpid());
    /* Rates need two ticks; on a loaded machine the children may get little CPU in one
     * interval, so tick (bounded: 6 s) until both ranks show some. */
    GK_ASSERT_OK(gk_monitor_tick(m));
    for (int i = 0; i < 20; i++) {
        sleep_ms(300);
        GK_ASSERT_OK(gk_monitor_tick(m));
        if (last_value(m, "gpukit_rank_cpu_cores", "rank=\"0\"") > 0.02 &&
            last_value(m, "gpukit_rank_cpu_cores", "rank=\"1\"") > 0.02)
            break;
    }
    double busy = last_value(m, "gpukit_cpu_busy_ratio", NULL);
    assert_true(busy > 0 && busy <= 1);
    assert_true(last_value(m, "gpukit_cpu_busiest_core_ratio", NULL) >= busy - 1e-9);
    assert_true(last_value(m, "gpukit_memory_used_ratio", NULL) > 0);
    assert_true(last_value(m, "gpukit_process_tree_cpu_cores", pid) > 0.04); /* two busy loops */
    for (int r = 0; r < 2; r++) {
        char l[32];
        snprintf(l, sizeof l, "rank=\"%d\"", r);
        double cores = last_value(m, "gpukit_rank_cpu_cores", l);
        assert_true(cores > 0.02 && cores < 1.5);
        assert_true(last_value(m, "gpukit_rank_resident_memory_bytes", l) > 0);
    }
    /* NVML's one process on GPU 0 is rank 1's (1 MiB in the fake). */
    assert_true(last_value(m, "gpukit_rank_gpu_memory_bytes", "rank=\"1\",gpu=\"0\"") ==
                (double)(1 << 20));
    size_t idx;
    GK_ASSERT_ERR(gk_monitor_find(m, "gpukit_rank_gpu_memory_bytes", "rank=\"0\",gpu=\"0\"", &idx),
                  -ENOENT);
    assert_true(last_value(m, "gpukit_gpu_memory_used_ratio", "gpu=\"0\",uuid=\"GPU-fake-0000\"") >
                0);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
    for (int r = 0; r < 2; r++) {
        kill(kids[r], SIGKILL);
        waitpid(kids[r], NULL, 0);
    }
}

int main(void)
{
    snprintf(proc1, sizeof proc1, "%s/tests/data/proc1", GK_TEST_SOURCE_DIR);
    fake.h = dlopen(GK_TEST_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
    if (!fake.h) {
        fprintf(stderr, "cannot load the fake NVML: %s\n", dlerror());
        return 1;
    }
    *(void **)&fake.reset = dlsym(fake.h, "fakenvml_reset");
    *(void **)&fake.set = dlsym(fake.h, "fakenvml_set");
    *(void **)&fake.inject = dlsym(fake.h, "fakenvml_fail");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_config, setup),
        cmocka_unit_test_setup(test_host_only, setup),
        cmocka_unit_test_setup(test_gpu_series, setup),
        cmocka_unit_test_setup(test_alerts, setup),
        cmocka_unit_test_setup(test_thread, setup),
        cmocka_unit_test_setup(test_ranks, setup),
        cmocka_unit_test_setup(test_process_series, setup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dlclose(fake.h);
    return rc;
}
