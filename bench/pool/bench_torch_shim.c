/* The allocator shim's cost per call: the same cached allocation+free pairs through
 * gk_pool_malloc/gk_pool_free on a pool of one's own (the baseline) and through PyTorch's entry
 * points gk_torch_malloc/gk_torch_free (shim/torch_alloc.c, compiled in) on the shim's pool of
 * device 0, both on sim:capacity=8GiB with the default preset. Sizes cycle through 64 small and
 * large requests (512 B .. 48 MiB), 16 live at a time, so every pair after the warm-up round is
 * served from the cache. Prints ns per pair (the thread's CPU time, median of 15 rounds of 200,000
 * pairs, the two paths' rounds interleaved) and the ratio shim/pool. The shim runs under its test switch (sim streams), so the
 * figure leaves out the wrapped-stream lookup of a non-default CUstream on cuda. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "gpukit/gpukit.h"
#include "gpukit/torch.h"

#define ROUNDS 15
#define PAIRS  200000
#define LIVE   16
#define NSIZES 64

static size_t sizes[NSIZES];

static void make_sizes(void)
{
    unsigned s = 12345;
    for (int i = 0; i < NSIZES; i++) {
        s = s * 1103515245u + 12345u;
        size_t kib = (i % 4 == 0) ? 1024 + (s >> 8) % (47 * 1024) : 1 + (s >> 8) % 900;
        sizes[i] = kib * 1024 - (s % 2 ? 0 : 512);
    }
}

typedef void *(*alloc_fn)(void *ctx, size_t size);
typedef void (*free_fn)(void *ctx, void *ptr);

static void *pool_alloc(void *ctx, size_t size)
{
    void *p = NULL;
    return gk_pool_malloc(ctx, size, NULL, &p) == 0 ? p : NULL;
}

static void pool_free(void *ctx, void *p)
{
    (void)gk_pool_free(ctx, p);
}

static void *shim_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return gk_torch_malloc((ssize_t)size, 0, NULL);
}

static void shim_free(void *ctx, void *p)
{
    (void)ctx;
    gk_torch_free(p, 0, 0, NULL);
}

/* ns per pair of one round (CPU time); -1 when an allocation failed. */
static double round_ns(alloc_fn a, free_fn f, void *ctx)
{
    void *live[LIVE] = {0};
    uint64_t t0 = gk_bench_cpu_ns();
    for (long i = 0; i < PAIRS; i++) {
        int k = (int)(i % LIVE);
        if (live[k])
            f(ctx, live[k]);
        live[k] = a(ctx, sizes[i % NSIZES]);
        if (!live[k])
            return -1;
    }
    uint64_t t1 = gk_bench_cpu_ns();
    for (int k = 0; k < LIVE; k++)
        f(ctx, live[k]);
    return (double)(t1 - t0) / PAIRS;
}

/* Medians of ROUNDS rounds of each path, the rounds interleaved so that both see the same
 * machine; 0 when an allocation failed. */
static int measure(void *pool, double *base, double *shim)
{
    double rb[ROUNDS], rs[ROUNDS];
    if (round_ns(pool_alloc, pool_free, pool) < 0 || round_ns(shim_alloc, shim_free, NULL) < 0)
        return 0; /* warm-up: fills both caches */
    for (int i = 0; i < ROUNDS; i++) {
        rb[i] = round_ns(pool_alloc, pool_free, pool);
        rs[i] = round_ns(shim_alloc, shim_free, NULL);
        if (rb[i] < 0 || rs[i] < 0)
            return 0;
    }
    *base = gk_bench_median(rb, ROUNDS);
    *shim = gk_bench_median(rs, ROUNDS);
    return 1;
}

int main(void)
{
    make_sizes();
    gk_device *dev = NULL;
    gk_pool *pool = NULL;
    gk_pool_config cfg;
    gk_pool_config_preset(&cfg, "default");
    if (gk_device_open("sim:capacity=8GiB", &dev) || gk_pool_create(dev, &cfg, &pool) ||
        gk_torch_test_use_sim("sim:capacity=8GiB")) {
        fprintf(stderr, "bench_torch_shim: %s\n", gk_last_error());
        return 1;
    }
    double base = 0, shim = 0;
    if (!measure(pool, &base, &shim)) {
        fprintf(stderr, "bench_torch_shim: an allocation failed: %s\n", gk_torch_last_error());
        return 1;
    }
    printf("cached allocation+free pairs on sim (default preset): ns per pair, thread CPU time, "
           "median of %d rounds of %d\n\n",
           ROUNDS, PAIRS);
    printf("| path | ns per pair |\n|---|---:|\n");
    printf("| gk_pool_malloc + gk_pool_free (baseline) | %.1f |\n", base);
    printf("| gk_torch_malloc + gk_torch_free (the shim) | %.1f |\n", shim);
    printf("\nratio shim / pool: %.3f\n", shim / base);
    gk_torch_shutdown();
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return 0;
}
