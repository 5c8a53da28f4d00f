/* examples/pool_only.c: the caching pool on its own, and what it says when memory runs out.
 *
 *   pool_only [DEVICE]      (default "sim:capacity=64MiB": a simulated 64 MiB GPU)
 *
 * It allocates tagged blocks until the device is full, prints the pool's out-of-memory report
 * (sizes, the largest live blocks with their tags, a hint), frees everything and shows that the
 * freed blocks are served again from the cache without a device call. */
#include <stdio.h>

#include <gpukit/gpukit.h>

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "sim:capacity=64MiB";
    gk_device *dev;
    if (gk_device_open(spec, &dev) != 0) {
        fprintf(stderr, "pool_only: %s\n", gk_last_error());
        return 1;
    }
    gk_pool *pool;
    int rc = gk_pool_create(dev, NULL, &pool);
    if (rc) {
        fprintf(stderr, "pool_only: %s\n", gk_last_error());
        gk_device_close(dev);
        return 1;
    }

    /* Fill the device with 12 MiB "activations" until the pool gives up. */
    void *blocks[64];
    int n = 0;
    char tag[32];
    for (; n < 64; n++) {
        snprintf(tag, sizeof tag, "activation %d", n);
        rc = gk_pool_malloc_tagged(pool, 12u << 20, NULL, tag, &blocks[n]);
        if (rc)
            break;
    }
    printf("allocated %d blocks of 12 MiB, then: %s\n", n, gk_strerror(rc));
    if (rc == GK_EDEVOOM) {
        char report[4096];
        gk_pool_oom_report(pool, report, sizeof report);
        printf("--- out-of-memory report ---\n%s\n", report);
    }

    /* Free everything: the memory stays reserved in the cache ... */
    for (int i = 0; i < n; i++)
        gk_pool_free(pool, blocks[i]);
    gk_pool_stats before, after;
    gk_pool_get_stats(pool, &before);
    /* ... so the same requests again are cache hits, not device allocations. */
    for (int i = 0; i < n; i++)
        gk_pool_malloc(pool, 12u << 20, NULL, &blocks[i]);
    gk_pool_get_stats(pool, &after);
    printf("second round: %llu cache hits, %llu new device allocations\n",
           (unsigned long long)(after.num_cache_hits - before.num_cache_hits),
           (unsigned long long)(after.num_device_alloc - before.num_device_alloc));
    for (int i = 0; i < n; i++)
        gk_pool_free(pool, blocks[i]);
    gk_pool_summary(pool, stdout);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return 0;
}
