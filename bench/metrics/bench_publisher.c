/* The process publisher's cost inside a training process, in one run:
 * each round is a child process holding 1 pool (on host), 2 loaders (in-memory dataset, 1 worker
 * each) and 20 series of its own (8 gauges, 8 counters, 4 histograms) in gk_metrics_default();
 * its main thread sleeps, waking every 100 ms to update its own series. Rounds alternate between
 *   on:  GK_METRICS_SOCKET names a Unix datagram socket read by a receiver thread of this parent
 *        (it reads every datagram and counts lines), so the publisher sends every 250 ms;
 *   off: the variable is unset, so no publisher runs (the baseline).
 * After one second of warm-up each child measures, over the window: the publisher thread's own
 * CPU time (its thread CPU clock; it is the thread that appears when the first series is
 * registered), and the whole process's CPU time. Printed: medians over the rounds, the
 * publisher's share of one core, per tick, and the process's CPU on against off.
 * Usage: bench_publisher [SECONDS_PER_ROUND [ROUNDS]]   (default 20 s, 5 rounds of each) */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "gpukit/gpukit.h"
#include "receiver.h"

#define MAX_TASKS 256

typedef struct result {
    double window_s;
    double publisher_cpu_s; /* -1 when no publisher thread was found */
    double process_cpu_s;
} result;

/* --- the child's threads ------------------------------------------------------------------- */

static size_t tasks(pid_t *out, size_t cap)
{
    DIR *d = opendir("/proc/self/task");
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < cap) {
        if (e->d_name[0] != '.')
            out[n++] = (pid_t)atoi(e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* A thread's CPU clock from its id (as the kernel builds per-thread CPU clocks). */
static double thread_cpu_s(pid_t tid)
{
    clockid_t clk = (clockid_t)((~(unsigned)tid << 3) | 6);
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int child(double seconds, int out_fd)
{
    gk_metrics *reg = gk_metrics_default();
    if (!reg)
        return 1;
    pid_t before[MAX_TASKS], after[MAX_TASKS];
    size_t nb = tasks(before, MAX_TASKS);
    /* The program's own series: the first one starts the publisher when the variable is set. */
    gk_metric *g[8], *c[8], *h[4];
    char name[64];
    const char *labels[] = {"phase", "train", NULL};
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "train_gauge_%d", i);
        if (gk_metrics_gauge(reg, name, "A gauge of the program.", labels, &g[i]))
            return 1;
    }
    size_t na = tasks(after, MAX_TASKS);
    pid_t publisher = 0;
    for (size_t i = 0; i < na && !publisher; i++) {
        size_t j = 0;
        while (j < nb && before[j] != after[i])
            j++;
        if (j == nb)
            publisher = after[i];
    }
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "train_counter_%d", i);
        if (gk_metrics_counter(reg, name, "A counter of the program.", labels, &c[i]))
            return 1;
    }
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "train_hist_%d_seconds", i);
        if (gk_metrics_histogram(reg, name, "A histogram of the program.", labels, NULL, 0, &h[i]))
            return 1;
    }
    gk_device *dev;
    gk_pool *pool;
    if (gk_device_open("host", &dev) || gk_pool_create(dev, NULL, &pool)) {
        fprintf(stderr, "bench_publisher: pool: %s\n", gk_last_error());
        return 1;
    }
    void *blk;
    if (gk_pool_malloc(pool, 1 << 20, NULL, &blk) == 0)
        gk_pool_free(pool, blk);
    static unsigned char data[4096 * 64];
    gk_dataset *ds;
    gk_loader *ld[2];
    if (gk_dataset_memory(data, 64, 4096, &ds))
        return 1;
    for (int i = 0; i < 2; i++) {
        gk_loader_config lc;
        gk_loader_config_default(&lc);
        lc.workers = 1;
        lc.name = i ? "eval" : "train";
        if (gk_loader_create(&lc, ds, &ld[i])) {
            fprintf(stderr, "bench_publisher: loader: %s\n", gk_last_error());
            return 1;
        }
        gk_batch b;
        (void)gk_loader_next(ld[i], NULL, 5.0, &b);
    }
    /* Warm-up, then the window. The main thread updates its series every 100 ms. */
    struct timespec tick = {0, 100 * 1000 * 1000};
    int warm = 10, steps = (int)(seconds * 10 + 0.5);
    double w0 = 0, p0 = 0, c0 = 0;
    for (int k = 0; k < warm + steps; k++) {
        if (k == warm) {
            w0 = clock_s(CLOCK_MONOTONIC);
            c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            p0 = publisher ? thread_cpu_s(publisher) : 0;
        }
        nanosleep(&tick, NULL);
        for (int i = 0; i < 8; i++) {
            gk_gauge_set(g[i], k * 0.5 + i);
            gk_counter_add(c[i], 1 + i);
        }
        for (int i = 0; i < 4; i++)
            gk_histogram_observe(h[i], 0.001 * (k % 50));
    }
    double p1 = publisher ? thread_cpu_s(publisher) : 0;
    result r = {.window_s = clock_s(CLOCK_MONOTONIC) - w0,
                .publisher_cpu_s = publisher && p0 >= 0 && p1 >= 0 ? p1 - p0 : -1,
                .process_cpu_s = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0};
    if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r)
        return 1;
    /* _exit: the loaders and pool stay as they were (the atexit send would only add lines). */
    _exit(0);
}

static int child_round(void *arg, int fd)
{
    return child(*(double *)arg, fd);
}

static int run_round(int on, const char *sock, double seconds, result *r)
{
    return bench_run_child(on, sock, child_round, &seconds, r, sizeof *r);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 20;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (seconds < 1 || rounds < 1 || rounds > 100) {
        fprintf(stderr, "usage: bench_publisher [SECONDS_PER_ROUND >= 1 [ROUNDS 1-100]]\n");
        return 2;
    }
    unsetenv("RANK");
    bench_receiver rx;
    if (bench_receiver_start(&rx) != 0)
        return 1;
    const char *sock = rx.path;
    double pub_share[100], pub_tick_us[100], cpu_on[100], cpu_off[100], lines_tick[100];
    int n_on = 0, n_off = 0;
    printf("publisher cost: 1 pool, 2 loaders, 20 own series; %d rounds of %.0f s each, on and "
           "off alternated\n",
           rounds, seconds);
    for (int k = 0; k < rounds; k++) {
        for (int on = 1; on >= 0; on--) {
            result r;
            uint64_t l0 = atomic_load(&rx.lines), d0 = atomic_load(&rx.datagrams);
            if (run_round(on, sock, seconds, &r) != 0) {
                fprintf(stderr, "bench_publisher: a round failed\n");
                return 1;
            }
            uint64_t lines = atomic_load(&rx.lines) - l0, dgrams = atomic_load(&rx.datagrams) - d0;
            double ticks = (seconds + 1) * 4; /* warm-up included: what the receiver counted */
            if (on) {
                if (r.publisher_cpu_s < 0) {
                    fprintf(stderr, "bench_publisher: no publisher thread found\n");
                    return 1;
                }
                pub_share[n_on] = 100 * r.publisher_cpu_s / r.window_s;
                pub_tick_us[n_on] = 1e6 * r.publisher_cpu_s / (r.window_s * 4);
                lines_tick[n_on] = (double)lines / ticks;
                cpu_on[n_on++] = 100 * r.process_cpu_s / r.window_s;
                printf("  round %d on:  publisher %.4f%% of a core (%.1f us/tick), process "
                       "%.4f%%; received %llu lines in %llu datagrams\n",
                       k + 1, pub_share[n_on - 1], pub_tick_us[n_on - 1], cpu_on[n_on - 1],
                       (unsigned long long)lines, (unsigned long long)dgrams);
            } else {
                cpu_off[n_off++] = 100 * r.process_cpu_s / r.window_s;
                printf("  round %d off: process %.4f%%\n", k + 1, cpu_off[n_off - 1]);
            }
            fflush(stdout);
        }
    }
    bench_receiver_stop(&rx);
    double share = gk_bench_median(pub_share, (size_t)n_on);
    double per_tick = gk_bench_median(pub_tick_us, (size_t)n_on);
    double lt = gk_bench_median(lines_tick, (size_t)n_on);
    double on = gk_bench_median(cpu_on, (size_t)n_on),
           off = gk_bench_median(cpu_off, (size_t)n_off);
    printf("publisher thread: median %.4f%% of one core, %.1f us per tick, %.0f lines per tick "
           "received\n",
           share, per_tick, lt);
    printf("whole process (median): on %.4f%%, off %.4f%% of one core: difference %.4f%%, "
           "ratio %.2fx\n",
           on, off, on - off, off > 0 ? on / off : 0);
    printf("target <= 0.1%% of one core: %s\n", share <= 0.1 ? "met" : "NOT met");
    return 0;
}
