/* The sampler: creates the readers, runs ticks on a thread that waits for absolute deadlines on
 * CLOCK_MONOTONIC (a condition variable on that clock, so stop wakes it at once), counts
 * overruns, and turns each tick's readings into series points and registry metrics. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "monitor_int.h"

static const double duration_bounds[] = {1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3,
                                         1e-2, 5e-2, 0.1,  0.5,  1.0};

void(gk_monitor_config_default)(gk_monitor_config *out, size_t size)
{
    gk_monitor_config c;
    memset(&c, 0, sizeof c);
    c.interval = 1.0;
    c.slow_every = 5;
    c.retention = 600.0;
    c.gpu = GK_MONITOR_GPU_AUTO;
    c.host = 1;
    c.max_process_series = 256;
    gk_logger_default(&c.logger);
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_monitor_config");
}

int gk_monitor_create(const gk_monitor_config *cfg_in, gk_monitor **out)
{
    if (!out)
        return gk__error(-EINVAL, "gk_monitor_create: out is NULL");
    *out = NULL;
    gk_monitor_config cfg;
    gk_monitor_config_default(&cfg);
    int rc = cfg_in ? gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_monitor_config")
                    : gk_monitor_config_from_env(&cfg);
    if (rc)
        return rc;
    if (!(cfg.interval >= 0.001) || !isfinite(cfg.interval))
        return gk__error(-EINVAL, "monitor config: interval %g is below 0.001 s (try 1)",
                         cfg.interval);
    if (cfg.slow_every == 0 || !(cfg.retention > 0) || cfg.pid < 0 ||
        (unsigned)cfg.gpu > GK_MONITOR_GPU_REQUIRE)
        return gk__error(-EINVAL, "monitor config: %s",
                         cfg.slow_every == 0    ? "slow_every must be at least 1"
                         : !(cfg.retention > 0) ? "retention must be positive"
                         : cfg.pid < 0          ? "pid must not be negative"
                                                : "gpu must be a gk_monitor_gpu_mode");
    gk_monitor *m = gk__calloc(1, sizeof *m);
    if (!m)
        return gk__error(-ENOMEM, "gk_monitor_create: out of host memory");
    rc = -ENOMEM;
    m->cfg = cfg;
    atomic_init(&m->watch_pid, cfg.pid);
    m->interval_ns = (int64_t)(cfg.interval * 1e9);
    if (cfg.nvml_library)
        snprintf(m->nvml_library, sizeof m->nvml_library, "%s", cfg.nvml_library);
    if (cfg.proc_root)
        snprintf(m->proc_root, sizeof m->proc_root, "%s", cfg.proc_root);
    m->cfg.nvml_library = cfg.nvml_library ? m->nvml_library : NULL;
    m->cfg.proc_root = cfg.proc_root ? m->proc_root : NULL;
    m->metrics = cfg.metrics ? cfg.metrics : gk_metrics_default();
    if (!m->metrics)
        goto out_free;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->run_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->wake, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&m->stop, 0);
    atomic_init(&m->ticking, 0);

    if (cfg.host) {
        gk_host_config hc;
        gk_host_config_default(&hc);
        hc.proc_root = m->cfg.proc_root;
        rc = gk_host_open(&hc, &m->host);
        if (rc)
            goto out_destroy;
        m->host_sample = gk__malloc(sizeof *m->host_sample);
        if (m->host_sample)
            m->workers = gk__calloc(GK__MAX_WORKERS, sizeof *m->workers);
        if (!m->host_sample || !m->workers) {
            rc = -ENOMEM;
            goto out_destroy;
        }
    }
    if (cfg.gpu != GK_MONITOR_GPU_OFF) {
        gk_nvml_config nc;
        gk_nvml_config_default(&nc);
        nc.library = m->cfg.nvml_library;
        nc.logger = cfg.logger;
        gk_nvml_info info;
        rc = gk_nvml_open(&nc, &m->nvml, &info);
        if (rc == -ENOMEM)
            goto out_destroy;
        if (rc) {
            snprintf(m->gpu_reason, sizeof m->gpu_reason, "%s", info.reason);
            if (cfg.gpu == GK_MONITOR_GPU_REQUIRE)
                goto out_destroy;
            gk_log(&m->cfg.logger, GK_LOG_WARN, "monitor", "%s", info.reason);
        } else if (gk_nvml_device_count(m->nvml) > 0) {
            m->gpu = gk__calloc(gk_nvml_device_count(m->nvml), sizeof *m->gpu);
            if (!m->gpu) {
                rc = -ENOMEM;
                goto out_destroy;
            }
        }
    } else {
        snprintf(m->gpu_reason, sizeof m->gpu_reason, "GPU monitoring is off");
    }
    if ((rc = gk__monitor_processes_init(m)) != 0)
        goto out_destroy;
    rc = gk_metrics_histogram(
        m->metrics, "gpukit_sampler_duration_seconds", "Time one sampler tick took.", NULL,
        duration_bounds, sizeof duration_bounds / sizeof duration_bounds[0], &m->duration_hist);
    if (rc)
        m->duration_hist = NULL; /* a clash in a shared registry: keep sampling */
    *out = m;
    return 0;
out_destroy:
    gk_monitor_destroy(m);
    return rc;
out_free:
    free(m);
    return rc;
}

void gk_monitor_destroy(gk_monitor *m)
{
    if (!m)
        return;
    gk_monitor_stop(m);
    gk_nvml_close(m->nvml);
    gk_host_close(m->host);
    free(m->host_sample);
    gk__monitor_processes_free(m);
    free(m->workers);
    free(m->gpu);
    for (size_t i = 0; i < m->nseries; i++) {
        free(m->series[i]->ring);
        free(m->series[i]);
    }
    free(m->series);
    gk__alerts_free(m);
    free(m->events);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->run_lock);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int gk_monitor_gpu_available(gk_monitor *m, char *reason, size_t len)
{
    if (!m)
        return 0;
    if (reason && len)
        snprintf(reason, len, "%s", m->nvml ? "" : m->gpu_reason);
    return m->nvml != NULL;
}

gk_nvml *gk_monitor_nvml(gk_monitor *m)
{
    return m ? m->nvml : NULL;
}

gk_metrics *gk_monitor_metrics(gk_monitor *m)
{
    return m ? m->metrics : NULL;
}

int(gk_monitor_get_stats)(gk_monitor *m, gk_monitor_stats *user, size_t size)
{
    if (!m)
        return gk__error(-EINVAL, "gk_monitor_get_stats: monitor is NULL");
    gk_monitor_stats st, *out = &st;
    pthread_mutex_lock(&m->lock);
    *out = m->stats;
    int64_t last = m->last_tick_end_ns;
    pthread_mutex_unlock(&m->lock);
    out->interval = m->cfg.interval;
    out->seconds_since_tick = last ? (double)(gk__mono_ns() - last) / 1e9 : -1.0;
    pthread_mutex_lock(&m->run_lock);
    out->running = m->running;
    pthread_mutex_unlock(&m->run_lock);
    return gk__sized_put(user, size, out, sizeof *out, "gk_monitor_stats");
}

/* --- publishing ----------------------------------------------------------------------------- */

#define PUB(name, help, labels, value)  gk__monitor_publish(m, name, help, labels, value, 0)
#define PUBC(name, help, labels, value) gk__monitor_publish(m, name, help, labels, value, 1)
#define VALID(s, f)                     (((s)->valid >> (f)) & 1u)

static void publish_gpu(gk_monitor *m, const gk_gpu_sample *g, const char *driver)
{
    char idx[16];
    snprintf(idx, sizeof idx, "%u", g->index);
    const char *base[] = {"gpu", idx, "uuid", g->uuid, NULL};
    const char *info[] = {"gpu",        idx,           "uuid",           g->uuid, "name", g->name,
                          "pci_bus_id", g->pci_bus_id, "driver_version", driver,  NULL};
    PUB("gpukit_gpu_info", "GPU identity; always 1.", info, 1.0);
    PUB("gpukit_gpu_lost", "1 when the GPU answered GPU_IS_LOST.", base, g->lost ? 1.0 : 0.0);
    if (g->lost)
        return;
    if (VALID(g, GK_GPU_UTILIZATION)) {
        PUB("gpukit_gpu_utilization_ratio", "Time a kernel ran in the last sample period (0-1).",
            base, g->utilization_gpu);
        PUB("gpukit_gpu_memory_utilization_ratio", "Time device memory was read or written (0-1).",
            base, g->utilization_memory);
    }
    if (VALID(g, GK_GPU_MEMORY)) {
        PUB("gpukit_gpu_memory_total_bytes", "Device memory in total.", base,
            (double)g->memory_total);
        PUB("gpukit_gpu_memory_used_bytes", "Device memory in use (without the driver reserve).",
            base, (double)g->memory_used);
        PUB("gpukit_gpu_memory_free_bytes", "Device memory free.", base, (double)g->memory_free);
        PUB("gpukit_gpu_memory_reserved_bytes", "Device memory reserved by the driver.", base,
            (double)g->memory_reserved);
    }
    if (VALID(g, GK_GPU_TEMPERATURE))
        PUB("gpukit_gpu_temperature_celsius", "GPU core temperature.", base,
            g->temperature_celsius);
    if (VALID(g, GK_GPU_POWER))
        PUB("gpukit_gpu_power_watts", "Board power draw.", base, g->power_watts);
    if (VALID(g, GK_GPU_POWER_LIMIT))
        PUB("gpukit_gpu_power_limit_watts", "Enforced power limit.", base, g->power_limit_watts);
    if (VALID(g, GK_GPU_ENERGY))
        PUBC("gpukit_gpu_energy_joules_total", "Energy used since the driver loaded.", base,
             g->energy_joules);
    static const struct {
        gk_gpu_field f;
        const char *clock;
        size_t off;
    } clocks[] = {{GK_GPU_CLOCK_SM, "sm", offsetof(gk_gpu_sample, clock_sm_hz)},
                  {GK_GPU_CLOCK_MEM, "mem", offsetof(gk_gpu_sample, clock_mem_hz)},
                  {GK_GPU_CLOCK_GRAPHICS, "graphics", offsetof(gk_gpu_sample, clock_graphics_hz)}};
    for (size_t i = 0; i < 3; i++) {
        if (!VALID(g, clocks[i].f))
            continue;
        const char *l[] = {"gpu", idx, "uuid", g->uuid, "clock", clocks[i].clock, NULL};
        PUB("gpukit_gpu_clock_hertz", "Current clock frequency.", l,
            *(const double *)((const char *)g + clocks[i].off));
    }
    if (VALID(g, GK_GPU_CLOCK_EVENTS)) {
        PUB("gpukit_gpu_clock_event_reasons", "NVML clocks-event reasons bitmask.", base,
            (double)g->clock_event_reasons);
        static const struct {
            uint64_t bit;
            const char *reason;
        } reasons[] = {{0x4, "sw_power_cap"},
                       {0x8, "hw_slowdown"},
                       {0x20, "sw_thermal"},
                       {0x40, "hw_thermal"},
                       {0x80, "hw_power_brake"}};
        for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
            const char *l[] = {"gpu", idx, "uuid", g->uuid, "reason", reasons[i].reason, NULL};
            PUB("gpukit_gpu_throttled", "1 while clocks are held down for this reason.", l,
                (g->clock_event_reasons & reasons[i].bit) ? 1.0 : 0.0);
        }
    }
    if (VALID(g, GK_GPU_FAN))
        PUB("gpukit_gpu_fan_speed_ratio", "Fan speed as a fraction of its maximum.", base,
            g->fan_ratio);
    if (VALID(g, GK_GPU_ECC)) {
        const char *c[] = {"gpu", idx, "uuid", g->uuid, "type", "corrected", NULL};
        const char *u[] = {"gpu", idx, "uuid", g->uuid, "type", "uncorrected", NULL};
        PUBC("gpukit_gpu_ecc_errors_total", "ECC errors since the driver loaded (volatile).", c,
             (double)g->ecc_corrected);
        PUBC("gpukit_gpu_ecc_errors_total", "ECC errors since the driver loaded (volatile).", u,
             (double)g->ecc_uncorrected);
    }
    if (VALID(g, GK_GPU_PCIE)) {
        const char *tx[] = {"gpu", idx, "uuid", g->uuid, "direction", "tx", NULL};
        const char *rx[] = {"gpu", idx, "uuid", g->uuid, "direction", "rx", NULL};
        PUB("gpukit_gpu_pcie_throughput_bytes_per_second", "PCIe traffic over a 20 ms window.", tx,
            g->pcie_tx_bytes_per_second);
        PUB("gpukit_gpu_pcie_throughput_bytes_per_second", "PCIe traffic over a 20 ms window.", rx,
            g->pcie_rx_bytes_per_second);
    }
    if (VALID(g, GK_GPU_PROCESSES)) {
        PUB("gpukit_gpu_processes", "Compute processes on the GPU.", base,
            (double)g->processes_total);
    }
    if (VALID(g, GK_GPU_MIG)) {
        PUB("gpukit_gpu_mig_mode", "1 when MIG mode is enabled.", base, (double)g->mig_current);
        for (unsigned i = 0; i < g->nmig; i++) {
            const gk_mig_instance *mi = &g->mig[i];
            if (!mi->has_memory)
                continue;
            char gi[16], ci[16];
            snprintf(gi, sizeof gi, "%u", mi->gpu_instance_id);
            snprintf(ci, sizeof ci, "%u", mi->compute_instance_id);
            const char *l[] = {
                "gpu", idx, "uuid", g->uuid, "gpu_instance_id", gi, "compute_instance_id",
                ci,    NULL};
            PUB("gpukit_gpu_mig_memory_used_bytes", "Device memory in use by a MIG instance.", l,
                (double)mi->memory_used);
            PUB("gpukit_gpu_mig_memory_total_bytes", "Device memory of a MIG instance.", l,
                (double)mi->memory_total);
        }
    }
}

static void publish_host(gk_monitor *m, const gk_host_sample *h)
{
    if (h->valid & GK_HOST_CPU) {
        static const char *const modes[] = {"user",   "nice", "system",  "idle",
                                            "iowait", "irq",  "softirq", "steal"};
        const double *v = &h->cpu.user;
        for (size_t i = 0; i < 8; i++) {
            const char *l[] = {"mode", modes[i], NULL};
            PUBC("gpukit_cpu_seconds_total", "CPU time of all cores by mode.", l, v[i]);
        }
        PUB("gpukit_cpus_online", "Online CPUs.", NULL, (double)h->ncpus);
    }
    if (h->valid & GK_HOST_MEMORY) {
        PUB("gpukit_memory_total_bytes", "Host memory in total.", NULL, (double)h->mem_total);
        PUB("gpukit_memory_available_bytes", "Host memory available without swapping.", NULL,
            (double)h->mem_available);
        PUB("gpukit_memory_free_bytes", "Host memory unused.", NULL, (double)h->mem_free);
        PUB("gpukit_swap_total_bytes", "Swap space in total.", NULL, (double)h->swap_total);
        PUB("gpukit_swap_free_bytes", "Swap space unused.", NULL, (double)h->swap_free);
    }
    if (h->valid & GK_HOST_LOAD) {
        PUB("gpukit_load1", "Load average over 1 minute.", NULL, h->load1);
        PUB("gpukit_load5", "Load average over 5 minutes.", NULL, h->load5);
        PUB("gpukit_load15", "Load average over 15 minutes.", NULL, h->load15);
    }
    for (unsigned i = 0; (h->valid & GK_HOST_FS) && i < h->nfs; i++) {
        const gk_fs_stat *f = &h->fs[i];
        const char *l[] = {"mountpoint", f->mountpoint, "device", f->device,
                           "fstype",     f->fstype,     NULL};
        PUB("gpukit_filesystem_size_bytes", "Filesystem size.", l, (double)f->size_bytes);
        PUB("gpukit_filesystem_avail_bytes", "Filesystem space available to users.", l,
            (double)f->avail_bytes);
    }
    for (unsigned i = 0; (h->valid & GK_HOST_DISK) && i < h->ndisks; i++) {
        const char *l[] = {"device", h->disks[i].name, NULL};
        PUBC("gpukit_disk_read_bytes_total", "Bytes read from the disk.", l,
             (double)h->disks[i].read_bytes);
        PUBC("gpukit_disk_written_bytes_total", "Bytes written to the disk.", l,
             (double)h->disks[i].written_bytes);
        PUBC("gpukit_disk_io_time_seconds_total", "Time the disk spent doing I/O.", l,
             h->disks[i].io_time_seconds);
    }
    for (unsigned i = 0; (h->valid & GK_HOST_NET) && i < h->nnets; i++) {
        const char *l[] = {"device", h->nets[i].name, NULL};
        PUBC("gpukit_network_receive_bytes_total", "Bytes received.", l,
             (double)h->nets[i].rx_bytes);
        PUBC("gpukit_network_transmit_bytes_total", "Bytes sent.", l, (double)h->nets[i].tx_bytes);
    }
}

static void publish_tree(gk_monitor *m, const gk_proc_tree *t)
{
    char pid[16];
    snprintf(pid, sizeof pid, "%d", t->root_pid);
    const char *l[] = {"pid", pid, NULL};
    PUBC("gpukit_process_tree_cpu_seconds_total", "CPU time of the watched process tree.", l,
         t->cpu_seconds);
    PUB("gpukit_process_tree_resident_memory_bytes", "RSS of the watched process tree.", l,
        (double)t->rss_bytes);
    if (t->pss_complete)
        PUB("gpukit_process_tree_pss_bytes", "PSS of the watched process tree.", l,
            (double)t->pss_bytes);
    PUB("gpukit_process_tree_threads", "Threads in the watched process tree.", l,
        (double)t->threads);
    PUB("gpukit_process_tree_processes", "Processes in the watched process tree.", l,
        (double)t->nprocs);
    if (t->io_complete) {
        PUBC("gpukit_process_tree_read_bytes_total", "Storage bytes read by the tree.", l,
             (double)t->read_bytes);
        PUBC("gpukit_process_tree_written_bytes_total", "Storage bytes written by the tree.", l,
             (double)t->write_bytes);
    }
}

/* The process's own CPU time and RSS (always the real /proc). */
static void publish_self(gk_monitor *m, double tick_seconds)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        PUBC("process_cpu_seconds_total", "CPU time of this process.", NULL,
             (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6);
    FILE *f = gk__fopen("/proc/self/statm", "re");
    if (f) {
        unsigned long long size, resident;
        if (fscanf(f, "%llu %llu", &size, &resident) == 2)
            PUB("process_resident_memory_bytes", "Resident memory of this process.", NULL,
                (double)resident * (double)sysconf(_SC_PAGESIZE));
        fclose(f);
    }
    const char *ver[] = {"version", gk_version_string(), NULL};
    PUB("gpukit_build_info", "gpukit version; always 1.", ver, 1.0);
    PUB("gpukit_nvml_up", "1 when NVML answers.", NULL, m->nvml ? 1.0 : 0.0);
    PUBC("gpukit_sampler_ticks_total", "Sampler ticks run.", NULL, (double)m->stats.ticks);
    PUBC("gpukit_sampler_overruns_total", "Sampler deadlines missed.", NULL,
         (double)m->stats.overruns);
    PUB("gpukit_sampler_last_duration_seconds", "Time the previous sampler tick took.", NULL,
        tick_seconds);
    if (m->nvml) {
        gk_nvml_error_stat st[32];
        size_t n = gk_nvml_error_stats(m->nvml, st, 32);
        for (size_t i = 0; i < n && i < 32; i++) {
            char code[16];
            snprintf(code, sizeof code, "%d", st[i].code);
            const char *l[] = {"call", st[i].call, "code", code, NULL};
            PUBC("gpukit_nvml_errors_total", "Failed NVML calls by function and return code.", l,
                 (double)st[i].count);
        }
    }
}

/* One tick: read everything (without the lock), then publish and evaluate under it. */
static void run_tick(gk_monitor *m)
{
    int64_t t0 = gk__mono_ns();
    uint64_t tickno = m->tickno++;
    int slow = tickno % m->cfg.slow_every == 0;
    unsigned tiers = GK_TIER_FAST | (slow ? GK_TIER_SLOW : 0) | (m->cfg.pcie ? GK_TIER_PCIE : 0);
    unsigned ndev = m->gpu ? gk_nvml_device_count(m->nvml) : 0;
    for (unsigned i = 0; i < ndev; i++)
        gk_nvml_sample(m->nvml, i, tiers, &m->gpu[i]);
    if (m->host) {
        unsigned what = GK_HOST_CPU | GK_HOST_MEMORY | GK_HOST_LOAD | GK_HOST_DISK | GK_HOST_NET |
                        (slow ? GK_HOST_FS : 0);
        gk_host_sample_read(m->host, what, m->host_sample);
    }
    gk_proc_tree tree;
    int pid = atomic_load(&m->watch_pid);
    int have_tree = m->host && pid > 0 && gk_host_proc_tree(m->host, pid, &tree) == 0;
    size_t nworkers = 0;
    if (have_tree && m->workers &&
        gk_host_proc_workers(m->host, pid, m->workers, GK__MAX_WORKERS, &nworkers) != 0)
        nworkers = 0;
    gk__monitor_processes(m, ndev, m->workers, nworkers);
    gk_nvml_info info = {0};
    if (m->nvml)
        gk_nvml_get_info(m->nvml, &info);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);

    pthread_mutex_lock(&m->lock);
    m->tick_t_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    m->tick_mono_ns = gk__mono_ns();
    m->hint = 0;
    for (unsigned i = 0; i < ndev; i++)
        publish_gpu(m, &m->gpu[i], info.driver_version);
    if (m->host)
        publish_host(m, m->host_sample);
    if (have_tree) {
        gk__monitor_tree_cpu(m, &tree);
        publish_tree(m, &tree);
    }
    gk__monitor_derived(m, have_tree ? &tree : NULL, m->workers, nworkers, ndev);
    m->stats.ticks++;
    m->stats.nvml_errors = gk_nvml_error_count(m->nvml);
    publish_self(m, m->stats.last_tick_seconds);
    gk__alerts_evaluate(m);
    size_t nev = m->nevents;
    gk__alert_event *events = NULL;
    if (nev) {
        events = gk__malloc(nev * sizeof *events);
        if (events)
            memcpy(events, m->events, nev * sizeof *events);
        m->nevents = 0;
    }
    double secs = (double)(gk__mono_ns() - t0) / 1e9;
    m->stats.last_tick_seconds = secs;
    if (secs > m->stats.max_tick_seconds)
        m->stats.max_tick_seconds = secs;
    m->stats.total_tick_seconds += secs;
    m->last_tick_end_ns = gk__mono_ns();
    pthread_mutex_unlock(&m->lock);
    gk_histogram_observe(m->duration_hist, secs);
    if (events) {
        gk__alerts_report(m, events, nev);
        free(events);
    }
}

int gk_monitor_tick(gk_monitor *m)
{
    if (!m)
        return gk__error(-EINVAL, "gk_monitor_tick: m is NULL");
    int expected = 0;
    if (!atomic_compare_exchange_strong(&m->ticking, &expected, 1))
        return gk__error(
            -EBUSY,
            "gk_monitor_tick: busy (!atomic_compare_exchange_strong(&m->ticking, &expected, 1))");
    pthread_mutex_lock(&m->run_lock);
    int running = m->running;
    pthread_mutex_unlock(&m->run_lock);
    if (running) {
        atomic_store(&m->ticking, 0);
        return gk__error(-EBUSY, "gk_monitor_tick: busy");
    }
    run_tick(m);
    atomic_store(&m->ticking, 0);
    return 0;
}

/* --- the thread ------------------------------------------------------------------------------ */

static struct timespec to_timespec(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    return ts;
}

static void *sampler_main(void *arg)
{
    gk_monitor *m = arg;
    int64_t next = gk__mono_ns();
    while (!atomic_load(&m->stop)) {
        run_tick(m);
        next += m->interval_ns;
        int64_t now = gk__mono_ns();
        if (now > next) {
            /* Missed deadlines: count them and stay on the original grid. */
            uint64_t missed = (uint64_t)((now - next) / m->interval_ns) + 1;
            next += (int64_t)missed * m->interval_ns;
            pthread_mutex_lock(&m->lock);
            m->stats.overruns += missed;
            pthread_mutex_unlock(&m->lock);
        }
        pthread_mutex_lock(&m->run_lock);
        struct timespec deadline = to_timespec(next);
        while (!atomic_load(&m->stop) && gk__mono_ns() < next)
            pthread_cond_timedwait(&m->wake, &m->run_lock, &deadline);
        pthread_mutex_unlock(&m->run_lock);
    }
    return NULL;
}

int gk_monitor_start(gk_monitor *m)
{
    if (!m)
        return gk__error(-EINVAL, "gk_monitor_start: m is NULL");
    pthread_mutex_lock(&m->run_lock);
    int rc = 0;
    if (m->running || atomic_load(&m->ticking)) {
        rc = -EBUSY;
        goto out_unlock;
    }
    atomic_store(&m->stop, 0);
    int e = pthread_create(&m->thread, NULL, sampler_main, m);
    if (e) {
        rc = -e;
        goto out_unlock;
    }
    m->running = 1;
out_unlock:
    pthread_mutex_unlock(&m->run_lock);
    return rc;
}

int gk_monitor_stop(gk_monitor *m)
{
    if (!m)
        return gk__error(-EINVAL, "gk_monitor_stop: m is NULL");
    pthread_mutex_lock(&m->run_lock);
    if (!m->running) {
        pthread_mutex_unlock(&m->run_lock);
        return 0;
    }
    atomic_store(&m->stop, 1);
    pthread_cond_broadcast(&m->wake);
    pthread_t t = m->thread;
    pthread_mutex_unlock(&m->run_lock);
    pthread_join(t, NULL);
    pthread_mutex_lock(&m->run_lock);
    m->running = 0;
    pthread_mutex_unlock(&m->run_lock);
    return 0;
}

int gk_monitor_watch(gk_monitor *m, int pid)
{
    if (!m || pid < 0)
        return gk__error(-EINVAL, "gk_monitor_watch: %s",
                         !m ? "monitor is NULL" : "pid must not be negative");
    if (pid > 0 && !m->host)
        return gk__error(-EINVAL, "gk_monitor_watch: the monitor reads no host (cfg.host = 0)");
    atomic_store(&m->watch_pid, pid);
    return 0;
}
