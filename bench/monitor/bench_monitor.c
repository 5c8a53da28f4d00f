/* Monitor benchmarks. Prints medians of several rounds and ratios against baselines measured in
 * the same run:
 *   - one full host sample (gk_host_sample_read: CPU, memory, load, filesystems, disks, network)
 *     against the raw read (open/read/close, no parsing) of the same /proc files plus statvfs of
 *     the same mountpoints, and against psutil's equivalent calls (psutil_host.py);
 *   - one host-only monitor tick (publishing into a registry) and the CPU share it implies at a
 *     1 s interval;
 *   - ns per counter add, gauge set and histogram observe, with 1 and 2 threads on the same
 *     series, against a plain relaxed atomic_fetch_add on one uint64;
 *   - ns per gk_summary_add. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "gpukit/gpukit.h"

#define ROUNDS 9

/* psutil's side of the host-sample comparison; `make bench` runs from the source root. */
#ifndef GK_BENCH_PSUTIL_SCRIPT
#define GK_BENCH_PSUTIL_SCRIPT "bench/monitor/psutil_host.py"
#endif

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

/* --- host sample vs raw reads ---------------------------------------------------------------- */

static gk_host *host;
static gk_host_sample *hs;
static char mounts[GK_HOST_MAX_FS][256];
static unsigned nmounts;

static void host_sample(void)
{
    gk_host_sample_read(host, GK_HOST_ALL, hs);
}

static void raw_reads(void)
{
    static const char *const files[] = {"/proc/stat",   "/proc/meminfo",   "/proc/loadavg",
                                        "/proc/mounts", "/proc/diskstats", "/proc/net/dev"};
    static char buf[256 * 1024];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        int fd = open(files[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        while (read(fd, buf, sizeof buf) > 0)
            ;
        close(fd);
    }
    struct statvfs sv;
    for (unsigned i = 0; i < nmounts; i++)
        statvfs(mounts[i], &sv);
}

static double time_per_call(void (*fn)(void), int iters)
{
    double t0 = now_ns();
    for (int i = 0; i < iters; i++)
        fn();
    return (now_ns() - t0) / iters;
}

static gk_monitor *mon;
static void monitor_tick(void)
{
    gk_monitor_tick(mon);
}

/* --- metric updates -------------------------------------------------------------------------- */

enum { OPS = 5000000 };

typedef struct job {
    int kind; /* 0 atomic baseline, 1 counter add, 2 gauge set, 3 histogram observe */
    gk_metric *metric;
    _Atomic uint64_t *word;
} job;

static void *run_job(void *p)
{
    job *j = p;
    switch (j->kind) {
    case 0:
        for (int i = 0; i < OPS; i++)
            atomic_fetch_add_explicit(j->word, 1, memory_order_relaxed);
        break;
    case 1:
        for (int i = 0; i < OPS; i++)
            gk_counter_add(j->metric, 1.0);
        break;
    case 2:
        for (int i = 0; i < OPS; i++)
            gk_gauge_set(j->metric, (double)i);
        break;
    default:
        for (int i = 0; i < OPS; i++)
            gk_histogram_observe(j->metric, (double)(i & 1023) * 1e-4);
        break;
    }
    return NULL;
}

/* ns per operation with `threads` threads updating the same series (wall time / ops of one
 * thread: the latency each thread sees). */
static double update_ns(int kind, gk_metric *metric, int threads)
{
    double r[ROUNDS];
    static _Atomic uint64_t word;
    for (int k = 0; k < ROUNDS; k++) {
        pthread_t th[2];
        job j = {kind, metric, &word};
        double t0 = now_ns();
        for (int t = 0; t < threads; t++)
            pthread_create(&th[t], NULL, run_job, &j);
        for (int t = 0; t < threads; t++)
            pthread_join(th[t], NULL);
        r[k] = (now_ns() - t0) / OPS;
    }
    return median(r, ROUNDS);
}

int main(void)
{
    gk_host_config hc = {.size = sizeof(gk_host_config), .proc_root = "/proc"};
    if (gk_host_open(&hc, &host) != 0 || !(hs = malloc(sizeof *hs))) {
        fprintf(stderr, "bench_monitor: cannot read /proc\n");
        return 1;
    }
    gk_host_sample_read(host, GK_HOST_ALL, hs);
    for (unsigned i = 0; i < hs->nfs; i++)
        snprintf(mounts[nmounts++], sizeof mounts[0], "%s", hs->fs[i].mountpoint);

    printf("gpukit monitor benchmarks (medians of %d rounds)\n\n", ROUNDS);
    double a[ROUNDS], b[ROUNDS];
    for (int k = 0; k < ROUNDS; k++) {
        a[k] = time_per_call(host_sample, 200);
        b[k] = time_per_call(raw_reads, 200);
    }
    double sample_us = median(a, ROUNDS) / 1e3, raw_us = median(b, ROUNDS) / 1e3;
    printf("host sample (cpu %u cores, %u filesystems, %u disks, %u interfaces)\n", hs->ncpus,
           hs->nfs, hs->ndisks, hs->nnets);
    printf("  gk_host_sample_read          %8.1f us\n", sample_us);
    printf("  raw read of the same files   %8.1f us\n", raw_us);
    printf("  ratio (gpukit / raw)         %8.2f\n", sample_us / raw_us);
    /* psutil doing the same reads, when python3-psutil is installed. */
    FILE *py = popen("python3 " GK_BENCH_PSUTIL_SCRIPT
                     " 2>/dev/null || /usr/bin/python3 " GK_BENCH_PSUTIL_SCRIPT " 2>/dev/null",
                     "r");
    double psutil_us = 0;
    if (py) {
        if (fscanf(py, "%lf", &psutil_us) != 1)
            psutil_us = 0;
        pclose(py);
    }
    if (psutil_us > 0)
        printf("  psutil, same reads           %8.1f us (psutil / gpukit: %.1fx)\n\n", psutil_us,
               psutil_us / sample_us);
    else
        printf("  psutil, same reads           (python3-psutil not installed)\n\n");

    gk_metrics *reg = NULL;
    gk_metrics_create(NULL, &reg);
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    mc.gpu = GK_MONITOR_GPU_OFF;
    mc.metrics = reg;
    mc.logger.level = GK_LOG_OFF;
    mc.slow_every = 1;
    if (gk_monitor_create(&mc, &mon) != 0) {
        fprintf(stderr, "bench_monitor: cannot create a monitor\n");
        return 1;
    }
    for (int k = 0; k < ROUNDS; k++)
        a[k] = time_per_call(monitor_tick, 100);
    double tick_us = median(a, ROUNDS) / 1e3;
    printf("host-only monitor tick (all tiers, %zu series)\n", gk_monitor_series_count(mon));
    printf("  gk_monitor_tick              %8.1f us\n", tick_us);
    printf("  ratio (tick / host sample)   %8.2f\n", tick_us / sample_us);
    printf("  CPU share at a 1 s interval  %8.4f %%\n\n", tick_us / 1e6 * 100.0);

    gk_metric *c, *g, *h;
    gk_metrics_counter(reg, "bench_ops_total", NULL, NULL, &c);
    gk_metrics_gauge(reg, "bench_level", NULL, NULL, &g);
    gk_metrics_histogram(reg, "bench_latency_seconds", NULL, NULL, NULL, 0, &h);
    printf("metric updates, ns per operation (same series)\n");
    printf("  %-26s %10s %10s\n", "", "1 thread", "2 threads");
    static const char *const names[] = {"atomic_fetch_add baseline", "gk_counter_add",
                                        "gk_gauge_set", "gk_histogram_observe"};
    gk_metric *metrics[] = {NULL, c, g, h};
    double base1 = 0, base2 = 0;
    for (int kind = 0; kind < 4; kind++) {
        double one = update_ns(kind, metrics[kind], 1), two = update_ns(kind, metrics[kind], 2);
        if (kind == 0) {
            base1 = one;
            base2 = two;
            printf("  %-26s %10.1f %10.1f\n", names[kind], one, two);
        } else {
            printf("  %-26s %10.1f %10.1f   (x%.1f, x%.1f of baseline)\n", names[kind], one, two,
                   one / base1, two / base2);
        }
    }
    gk_summary *s = NULL;
    gk_summary_create(&s);
    for (int k = 0; k < ROUNDS; k++) {
        double t0 = now_ns();
        for (int i = 0; i < OPS; i++)
            gk_summary_add(s, (double)(i & 4095) * 1.7e-3 + 1e-6);
        a[k] = (now_ns() - t0) / OPS;
    }
    printf("  %-26s %10.1f\n", "gk_summary_add", median(a, ROUNDS));
    gk_summary_destroy(s);
    gk_monitor_destroy(mon);
    gk_metrics_destroy(reg);
    gk_host_close(host);
    free(hs);
    return 0;
}
