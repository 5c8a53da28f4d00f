/* gpu_smoke: a standalone check of gpukit's cuda backend against the real driver, for GPU
 * machines without cmocka (scripts/gpu-check.sh builds it with cc against the static library).
 * Uses only the public API. Prints one line per check; exits 0 when all pass, 1 when any fails,
 * 77 when there is no GPU. Usage: gpu_smoke [SPEC] (default cuda:0). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpukit/gpukit.h"

#define MiB ((size_t)1 << 20)

static int failures;

/* Reports a check; returns `ok`. */
static int check(int ok, const char *what, gk_device *dev, int rc)
{
    if (ok) {
        printf("PASS  %s\n", what);
    } else {
        failures++;
        printf("FAIL  %s (rc %s: %s)\n", what, gk_err_name(rc), dev ? gk_last_error() : "");
    }
    return ok;
}

#define CHECK_OK(expr, what)                                                                       \
    do {                                                                                           \
        int smoke_rc = (expr);                                                                     \
        check(smoke_rc == 0, what, dev, smoke_rc);                                                 \
    } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int order[4], norder;

static void note(void *user)
{
    if (norder < 4)
        order[norder++] = (int)(intptr_t)user;
}

static void memory_checks(gk_device *dev, const gk_device_props *p)
{
    size_t free0 = 0, total = 0, free1 = 0;
    CHECK_OK(gk_device_mem_info(dev, &free0, &total), "mem_info");
    check(total == p->total_memory && free0 <= total, "mem_info: free <= total == props", dev, 0);
    void *d = NULL;
    CHECK_OK(gk_device_malloc(dev, 256 * MiB, &d), "malloc 256 MiB");
    CHECK_OK(gk_device_mem_info(dev, &free1, NULL), "mem_info after malloc");
    check(free1 + 128 * MiB <= free0, "free memory dropped after malloc", dev, 0);
    CHECK_OK(gk_device_free(dev, d), "free");
    void *big = NULL;
    int rc = gk_device_malloc(dev, total + ((size_t)1 << 30), &big);
    check(rc == GK_EDEVOOM && big == NULL, "oversized malloc -> GK_EDEVOOM", dev, rc);
    printf("      (%s)\n", gk_last_error());
}

static void copy_checks(gk_device *dev)
{
    size_t n = 16 * MiB;
    unsigned char *src = NULL, *dst = NULL;
    void *d1 = NULL, *d2 = NULL;
    gk_stream *a = NULL, *b = NULL;
    gk_event *ea = NULL, *eb = NULL;
    CHECK_OK(gk_device_host_alloc(dev, n, (void **)&src), "pinned alloc (src)");
    CHECK_OK(gk_device_host_alloc(dev, n, (void **)&dst), "pinned alloc (dst)");
    CHECK_OK(gk_device_malloc(dev, n, &d1), "malloc d1");
    CHECK_OK(gk_device_malloc(dev, n, &d2), "malloc d2");
    CHECK_OK(gk_stream_create(dev, &a), "stream a");
    CHECK_OK(gk_stream_create(dev, &b), "stream b");
    CHECK_OK(gk_event_create(dev, &ea), "event a");
    CHECK_OK(gk_event_create(dev, &eb), "event b");
    if (failures)
        return;
    fill(src, n, 5);
    memset(dst, 0, n);
    CHECK_OK(gk_memcpy_htod_async(dev, d1, src, n, a), "htod on stream a");
    CHECK_OK(gk_event_record(dev, ea, a), "record event a");
    CHECK_OK(gk_stream_wait_event(dev, b, ea), "stream b waits event a");
    CHECK_OK(gk_stream_host_fn(dev, b, note, (void *)1), "host fn 1");
    CHECK_OK(gk_memcpy_dtod_async(dev, d2, d1, n, b), "dtod on stream b");
    CHECK_OK(gk_stream_host_fn(dev, b, note, (void *)2), "host fn 2");
    CHECK_OK(gk_memcpy_dtoh_async(dev, dst, d2, n, b), "dtoh on stream b");
    CHECK_OK(gk_event_record(dev, eb, b), "record event b");
    CHECK_OK(gk_event_synchronize(dev, eb, 30), "event b synchronize");
    CHECK_OK(gk_event_query(dev, eb), "event b query -> done");
    CHECK_OK(gk_device_synchronize(dev, 30), "device synchronize");
    check(memcmp(src, dst, n) == 0, "16 MiB round trip through two streams", dev, 0);
    check(norder == 2 && order[0] == 1 && order[1] == 2, "host functions ran in order", dev, 0);
    CHECK_OK(gk_event_destroy(dev, ea), "event a destroy");
    CHECK_OK(gk_event_destroy(dev, eb), "event b destroy");
    CHECK_OK(gk_stream_destroy(dev, a), "stream a destroy");
    CHECK_OK(gk_stream_destroy(dev, b), "stream b destroy");
    CHECK_OK(gk_device_free(dev, d1), "free d1");
    CHECK_OK(gk_device_free(dev, d2), "free d2");
    CHECK_OK(gk_device_host_free(dev, src), "pinned free (src)");
    CHECK_OK(gk_device_host_free(dev, dst), "pinned free (dst)");
}

static void vm_checks(gk_device *dev, const gk_device_props *p)
{
    if (!p->has_vm) {
        void *x = NULL;
        int rc = gk_device_vm_reserve(dev, 1 << 21, &x);
        check(rc == GK_EUNAVAIL, "no VM: vm_reserve -> GK_EUNAVAIL", dev, rc);
        return;
    }
    size_t g = p->vm_granularity, n = 4 * g;
    void *base = NULL;
    unsigned char *src = malloc(n), *dst = calloc(1, n);
    if (!check(src && dst, "host buffers", dev, -ENOMEM))
        goto out;
    CHECK_OK(gk_device_vm_reserve(dev, 8 * g, &base), "vm_reserve 8 granules");
    if (!base)
        goto out;
    CHECK_OK(gk_device_vm_map(dev, base, 2 * g), "vm_map two granules");
    CHECK_OK(gk_device_vm_map(dev, (char *)base + 2 * g, g), "vm_map one granule");
    CHECK_OK(gk_device_vm_map(dev, (char *)base + 3 * g, g), "vm_map one granule");
    fill(src, n, 9);
    CHECK_OK(gk_memcpy_htod_async(dev, base, src, n, NULL), "htod into mapped memory");
    CHECK_OK(gk_memcpy_dtoh_async(dev, dst, base, n, NULL), "dtoh from mapped memory");
    CHECK_OK(gk_stream_synchronize(dev, NULL, 30), "default stream synchronize");
    check(memcmp(src, dst, n) == 0, "round trip across 4 mapped granules", dev, 0);
    CHECK_OK(gk_device_vm_unmap(dev, (char *)base + g, g), "vm_unmap the middle of a mapping");
    memset(dst, 0, n);
    CHECK_OK(gk_memcpy_dtoh_async(dev, dst, base, g, NULL), "dtoh from the granule kept");
    CHECK_OK(gk_stream_synchronize(dev, NULL, 30), "default stream synchronize");
    check(memcmp(src, dst, g) == 0, "the granule kept keeps its contents", dev, 0);
    CHECK_OK(gk_device_vm_map(dev, (char *)base + g, g), "vm_map the granule again");
    CHECK_OK(gk_device_vm_unmap(dev, base, n), "vm_unmap 4 granules at once");
    CHECK_OK(gk_device_vm_release(dev, base, 8 * g), "vm_release");

    /* How long mapping and unmapping 1 GiB takes (one driver allocation per granule). */
    size_t big = (size_t)1 << 30;
    base = NULL;
    CHECK_OK(gk_device_vm_reserve(dev, big, &base), "vm_reserve 1 GiB");
    if (base) {
        double t0 = now_s();
        int rc = gk_device_vm_map(dev, base, big);
        double t1 = now_s();
        check(rc == 0, "vm_map 1 GiB", dev, rc);
        if (rc == 0) {
            rc = gk_device_vm_unmap(dev, base, big);
            check(rc == 0, "vm_unmap 1 GiB", dev, rc);
            printf("INFO  vm_map of 1 GiB (%zu granules): %.1f ms; vm_unmap: %.1f ms\n", big / g,
                   (t1 - t0) * 1e3, (now_s() - t1) * 1e3);
        }
        CHECK_OK(gk_device_vm_release(dev, base, big), "vm_release 1 GiB");
    }

    size_t want = ((size_t)p->total_memory / g + 2) * g;
    base = NULL;
    CHECK_OK(gk_device_vm_reserve(dev, want, &base), "vm_reserve more than the card has");
    if (base) {
        int rc = gk_device_vm_map(dev, base, want);
        check(rc == GK_EDEVOOM, "vm_map more than the card has -> GK_EDEVOOM", dev, rc);
        printf("      (%s)\n", gk_last_error());
        CHECK_OK(gk_device_vm_release(dev, base, want), "vm_release");
    }
out:
    free(src);
    free(dst);
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "cuda:0";
    gk_device *dev = NULL;
    int rc = gk_device_open(spec, &dev);
    if (rc == GK_ENOGPU) {
        printf("SKIP  no GPU: %s\n", gk_last_error());
        return 77;
    }
    if (rc) {
        printf("FAIL  gk_device_open(%s): %s: %s\n", spec, gk_err_name(rc), gk_last_error());
        return 1;
    }
    gk_device_props p;
    CHECK_OK(gk_device_get_props(dev, &p), "props");
    printf("INFO  %s: %s, %.1f GiB, cc %d.%d, %d SMs, driver %d, vm %s (granularity %zu)\n", p.spec,
           p.name, (double)p.total_memory / (1 << 30), p.cc_major, p.cc_minor, p.multiprocessors,
           p.driver_version, p.has_vm ? "yes" : "no", p.vm_granularity);
    memory_checks(dev, &p);
    copy_checks(dev);
    vm_checks(dev, &p);
    gk_device_counters c;
    CHECK_OK(gk_device_get_counters(dev, &c), "counters");
    check(c.malloc_calls >= 4 && c.copies_htod >= 1 && c.host_fns == 2, "counters add up", dev, 0);
    gk_device_close(dev);
    printf("%s: %d check(s) failed\n", failures ? "FAILED" : "OK", failures);
    return failures ? 1 : 0;
}
