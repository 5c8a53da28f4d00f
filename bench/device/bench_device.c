/* Cost of the device layer's own calls: a malloc/free pair and an event record/query on the host
 * and sim backends, against glibc malloc/free measured in the same run. The layer adds argument
 * checks, counters and the allocation registry to every call; this shows what that costs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "gpukit/gpukit.h"

#define ROUNDS 9
#define PAIRS  200000
#define LIVE   32

static void *volatile sink;

static double bench_libc(void)
{
    double r[ROUNDS];
    void *live[LIVE];
    for (int i = 0; i < LIVE; i++)
        live[i] = malloc(4096);
    for (int k = 0; k < ROUNDS; k++) {
        uint64_t t0 = gk_bench_now_ns();
        for (int i = 0; i < PAIRS; i++) {
            void *p = malloc(1 << 20);
            sink = p;
            free(p);
        }
        r[k] = (double)(gk_bench_now_ns() - t0) / PAIRS;
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    return gk_bench_median(r, ROUNDS);
}

static double bench_device(const char *spec)
{
    gk_device *dev;
    double r[ROUNDS];
    void *live[LIVE];
    if (gk_device_open(spec, &dev) != 0) {
        fprintf(stderr, "bench_device: %s\n", gk_last_error());
        exit(1);
    }
    for (int i = 0; i < LIVE; i++)
        gk_device_malloc(dev, 4096, &live[i]);
    for (int k = 0; k < ROUNDS; k++) {
        uint64_t t0 = gk_bench_now_ns();
        for (int i = 0; i < PAIRS; i++) {
            void *p;
            if (gk_device_malloc(dev, 1 << 20, &p) != 0)
                exit(1);
            gk_device_free(dev, p);
        }
        r[k] = (double)(gk_bench_now_ns() - t0) / PAIRS;
    }
    for (int i = 0; i < LIVE; i++)
        gk_device_free(dev, live[i]);
    gk_device_close(dev);
    return gk_bench_median(r, ROUNDS);
}

static double bench_events(const char *spec)
{
    gk_device *dev;
    gk_stream *s;
    gk_event *e;
    double r[ROUNDS];
    if (gk_device_open(spec, &dev) != 0 || gk_stream_create(dev, &s) != 0 ||
        gk_event_create(dev, &e) != 0)
        exit(1);
    for (int k = 0; k < ROUNDS; k++) {
        uint64_t t0 = gk_bench_now_ns();
        for (int i = 0; i < PAIRS; i++) {
            gk_event_record(dev, e, s);
            while (gk_event_query(dev, e) == GK_ENOTREADY)
                ;
        }
        r[k] = (double)(gk_bench_now_ns() - t0) / PAIRS;
    }
    gk_device_close(dev);
    return gk_bench_median(r, ROUNDS);
}

int main(void)
{
    double libc = bench_libc();
    double host = bench_device("host");
    double sim = bench_device("sim:capacity=64GiB");
    double ev_host = bench_events("host");
    double ev_sim = bench_events("sim");
    printf("device layer, median of %d rounds of %d operations\n", ROUNDS, PAIRS);
    printf("  glibc malloc+free 1 MiB      %8.1f ns   (baseline)\n", libc);
    printf("  host  malloc+free 1 MiB      %8.1f ns   %.2fx baseline\n", host, host / libc);
    printf("  sim   malloc+free 1 MiB      %8.1f ns   %.2fx baseline\n", sim, sim / libc);
    printf("  host  event record+query     %8.1f ns\n", ev_host);
    printf("  sim   event record+query     %8.1f ns\n", ev_sim);
    return 0;
}
