/* The allocation and batch paths with metrics published and without, in one run:
 *   pool:   alloc+free pairs of one size (512 B and 1 MiB) on host with 32 blocks live, in
 *           samples of 64 pairs;
 *   loader: gk_loader_next on an in-memory dataset (64 B items, batch 256, no workers: the batch
 *           is filled on the calling thread), in samples of 16 batches.
 * Each round is a child process per mode, alternated:
 *   on:  GK_METRICS_SOCKET names a socket read by a receiver thread of this parent, so the
 *        process publishes its pool's and loader's figures every 250 ms while it measures;
 *   off: the variable is unset (nothing is published).
 * Each child measures for about a second per figure (several publishing ticks), and reports the
 * median and the mean over its samples (a tick that delays the path shows in the mean). Printed:
 * medians over the rounds and the ratio on / off. The same source builds against other versions
 * of the library (only long-standing calls), so two builds can be compared.
 * Usage: bench_metrics_paths [ROUNDS]                  (default 5)
 *        bench_metrics_paths --count on|off PAIRS BATCHES
 *            runs the two paths a fixed number of times in this process (for
 *            valgrind --tool=callgrind --toggle-collect=pool_pairs --toggle-collect=loader_batches) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "gpukit/gpukit.h"
#include "receiver.h"

#define MAX_SAMPLES 200000
#define PER_PAIRS   64
#define PER_BATCHES 16
#define LIVE        32
#define NITEMS      65536
#define ITEM        64
#define BATCH       256

enum { POOL_SMALL, POOL_LARGE, LOADER, NFIG };
static const char *const fig_names[NFIG] = {"pool alloc+free 512 B, ns/pair",
                                            "pool alloc+free 1 MiB, ns/pair",
                                            "loader next (64 B x 256, 0 workers), ns/batch"};
static const size_t pair_sizes[2] = {512, 1 << 20};

typedef struct figs {
    double median[NFIG], mean[NFIG];
} figs;

static double samples[MAX_SAMPLES];
static unsigned char data[NITEMS * ITEM];

__attribute__((noinline)) static void pool_pairs(gk_pool *pool, size_t size, long n)
{
    void *q;
    for (long i = 0; i < n; i++) {
        if (gk_pool_malloc(pool, size, NULL, &q) == 0)
            gk_pool_free(pool, q);
    }
}

__attribute__((noinline)) static void loader_batches(gk_loader *ld, long n)
{
    gk_batch b;
    for (long i = 0; i < n; i++)
        (void)gk_loader_next(ld, NULL, 5.0, &b);
}

typedef struct objects {
    gk_device *dev;
    gk_pool *pool;
    void *live[LIVE];
    gk_dataset *ds;
    gk_loader *ld;
} objects;

static int make_objects(objects *o)
{
    if (gk_device_open("host", &o->dev) || gk_pool_create(o->dev, NULL, &o->pool)) {
        fprintf(stderr, "bench_metrics_paths: pool: %s\n", gk_last_error());
        return -1;
    }
    for (int i = 0; i < LIVE; i++)
        if (gk_pool_malloc(o->pool, pair_sizes[i % 2], NULL, &o->live[i]))
            return -1;
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.workers = 0;
    lc.batch_size = BATCH;
    lc.name = "train";
    if (gk_dataset_memory(data, ITEM, NITEMS, &o->ds) || gk_loader_create(&lc, o->ds, &o->ld)) {
        fprintf(stderr, "bench_metrics_paths: loader: %s\n", gk_last_error());
        return -1;
    }
    return 0;
}

/* Samples `fig` for about `seconds`: median and mean ns per operation. */
static void measure(objects *o, int fig, double seconds, figs *f)
{
    long per = fig == LOADER ? PER_BATCHES : PER_PAIRS;
    size_t n = 0;
    double sum = 0;
    uint64_t end = gk_bench_now_ns() + (uint64_t)(seconds * 1e9);
    while (n < MAX_SAMPLES && (n < 16 || gk_bench_now_ns() < end)) {
        uint64_t t0 = gk_bench_now_ns();
        if (fig == LOADER)
            loader_batches(o->ld, per);
        else
            pool_pairs(o->pool, pair_sizes[fig], per);
        samples[n] = (double)(gk_bench_now_ns() - t0) / (double)per;
        sum += samples[n++];
    }
    f->mean[fig] = sum / (double)n;
    f->median[fig] = gk_bench_median(samples, n);
}

static int child(int out_fd)
{
    objects o;
    if (make_objects(&o))
        return 1;
    figs f;
    for (int fig = 0; fig < NFIG; fig++) {
        measure(&o, fig, 0.2, &f); /* warm-up */
        measure(&o, fig, 1.0, &f);
    }
    return write(out_fd, &f, sizeof f) == (ssize_t)sizeof f ? 0 : 1;
}

static int child_round(void *arg, int fd)
{
    (void)arg;
    return child(fd);
}

static int run_round(int on, const char *sock, figs *f)
{
    return bench_run_child(on, sock, child_round, NULL, f, sizeof *f);
}

/* --count: fixed work for an instruction count. */
static int count(int on, long pairs, long batches)
{
    bench_receiver rx;
    if (on) {
        if (bench_receiver_start(&rx) != 0)
            return 1;
        setenv("GK_METRICS_SOCKET", rx.path, 1);
    } else {
        unsetenv("GK_METRICS_SOCKET");
    }
    objects o;
    if (make_objects(&o))
        return 1;
    /* Let the publisher tick during the work too: the paths run in several slices. */
    struct timespec pause = {0, 300 * 1000 * 1000};
    for (int k = 0; k < 4; k++) {
        pool_pairs(o.pool, pair_sizes[0], pairs / 8);
        pool_pairs(o.pool, pair_sizes[1], pairs / 8);
        loader_batches(o.ld, batches / 4);
        nanosleep(&pause, NULL);
    }
    printf("%s: %ld pairs (half 512 B, half 1 MiB), %ld batches\n", on ? "on" : "off",
           pairs / 8 * 8, batches / 4 * 4);
    if (on)
        printf("received %llu lines\n", (unsigned long long)atomic_load(&rx.lines));
    gk_loader_destroy(o.ld);
    gk_dataset_destroy(o.ds);
    for (int i = 0; i < LIVE; i++)
        gk_pool_free(o.pool, o.live[i]);
    gk_pool_destroy(o.pool);
    gk_device_close(o.dev);
    if (on)
        bench_receiver_stop(&rx);
    return 0;
}

int main(int argc, char **argv)
{
    unsetenv("RANK");
    if (argc == 5 && strcmp(argv[1], "--count") == 0)
        return count(strcmp(argv[2], "on") == 0, atol(argv[3]), atol(argv[4]));
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > 100) {
        fprintf(stderr, "usage: bench_metrics_paths [ROUNDS 1-100]\n"
                        "       bench_metrics_paths --count on|off PAIRS BATCHES\n");
        return 2;
    }
    bench_receiver rx;
    if (bench_receiver_start(&rx) != 0)
        return 1;
    static double med[2][NFIG][100], mean[2][NFIG][100], ratio[NFIG][100], ratio_mean[NFIG][100];
    for (int k = 0; k < rounds; k++) {
        figs f[2];
        for (int on = 1; on >= 0; on--) {
            if (run_round(on, rx.path, &f[on]) != 0) {
                fprintf(stderr, "bench_metrics_paths: a round failed\n");
                return 1;
            }
        }
        for (int fig = 0; fig < NFIG; fig++) {
            for (int on = 0; on < 2; on++) {
                med[on][fig][k] = f[on].median[fig];
                mean[on][fig][k] = f[on].mean[fig];
            }
            ratio[fig][k] = f[1].median[fig] / f[0].median[fig];
            ratio_mean[fig][k] = f[1].mean[fig] / f[0].mean[fig];
        }
    }
    uint64_t lines = atomic_load(&rx.lines);
    bench_receiver_stop(&rx);
    printf("%d rounds, on and off alternated (median over rounds of each round's median and "
           "mean; ratios taken within each round)\n\n",
           rounds);
    printf("| path | off: median (mean) | on: median (mean) | on / off median | on / off mean "
           "|\n|---|---:|---:|---:|---:|\n");
    for (int fig = 0; fig < NFIG; fig++)
        printf("| %s | %.1f (%.1f) | %.1f (%.1f) | %.3fx | %.3fx |\n", fig_names[fig],
               gk_bench_median(med[0][fig], (size_t)rounds),
               gk_bench_median(mean[0][fig], (size_t)rounds),
               gk_bench_median(med[1][fig], (size_t)rounds),
               gk_bench_median(mean[1][fig], (size_t)rounds),
               gk_bench_median(ratio[fig], (size_t)rounds),
               gk_bench_median(ratio_mean[fig], (size_t)rounds));
    printf("\nlines received from the \"on\" rounds: %llu\n", (unsigned long long)lines);
    return 0;
}
