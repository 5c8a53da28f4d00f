/* Host-to-device copy bandwidth from pinned and from pageable host memory, 64 KiB to 256 MiB,
 * through the device layer (one copy stream, synchronized after each copy). This is why the loader
 * fills pinned slots: on a GPU a pageable source goes through a driver staging buffer.
 *
 * usage: bench_h2d [--device SPEC] [--max SIZE]   (default cuda:0 falling back to host; 256MiB) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "gpukit/gpukit.h"

#define REPS 7

/* Median GB/s of REPS copies of `size` bytes from `src`. */
static double copy_rate(gk_device *dev, gk_stream *s, void *dst, const void *src, size_t size)
{
    double r[REPS];
    for (int k = 0; k < REPS; k++) {
        uint64_t t0 = gk_bench_now_ns();
        if (gk_memcpy_htod_async(dev, dst, src, size, s) != 0 ||
            gk_stream_synchronize(dev, s, 30.0) != 0) {
            fprintf(stderr, "bench_h2d: copy failed: %s\n", gk_last_error());
            exit(1);
        }
        r[k] = (double)size / (double)(gk_bench_now_ns() - t0); /* bytes/ns = GB/s */
    }
    return gk_bench_median(r, REPS);
}

int main(int argc, char **argv)
{
    const char *spec = "auto";
    uint64_t max = 256ull << 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--device") == 0)
            spec = argv[i + 1];
        else if (strcmp(argv[i], "--max") == 0 && gk_parse_size(argv[i + 1], &max) == 0)
            ;
        else {
            fprintf(stderr, "usage: bench_h2d [--device SPEC] [--max SIZE]\n");
            return 2;
        }
    }
    gk_device *dev;
    gk_stream *s;
    gk_device_props p;
    if (gk_device_open(spec, &dev) != 0) {
        fprintf(stderr, "bench_h2d: %s\n", gk_last_error());
        return 1;
    }
    gk_device_get_props(dev, &p);
    void *pinned = NULL, *dst = NULL;
    char *pageable = malloc(max);
    if (!pageable || gk_stream_create(dev, &s) != 0 ||
        gk_device_host_alloc(dev, max, &pinned) != 0 || gk_device_malloc(dev, max, &dst) != 0) {
        fprintf(stderr, "bench_h2d: cannot allocate %llu bytes: %s\n", (unsigned long long)max,
                gk_last_error());
        return 1;
    }
    memset(pageable, 1, max);
    memset(pinned, 1, max);
    printf("host-to-device copies on %s (%s), median of %d\n", p.spec, p.name, REPS);
    printf("%10s %14s %14s %8s\n", "size", "pinned GB/s", "pageable GB/s", "ratio");
    for (uint64_t size = 64u << 10; size <= max; size *= 4) {
        char b[32];
        double pin = copy_rate(dev, s, dst, pinned, size);
        double page = copy_rate(dev, s, dst, pageable, size);
        printf("%10s %14.2f %14.2f %7.2fx\n", gk_format_size(size, b, sizeof b), pin, page,
               pin / page);
    }
    free(pageable);
    gk_device_free(dev, dst);
    gk_device_host_free(dev, pinned);
    gk_device_close(dev);
    return 0;
}
