/* gpukit loader bench: runs the loader over a record file (given, or generated) and reports
 * items/s, GB/s, microseconds per batch, time to first batch and next() wait percentiles, next to
 * a single-core memcpy of the same bytes measured in the same run. The bench warms only what its
 * run reads, checks a generated file against the free disk space before writing it
 * (gk_records_writer_reserve) and removes it on every exit path (signals included), and never maps
 * the file itself (its baseline copies from private memory), so a file cut under it is an error,
 * not a crash. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static const char loader_usage[] =
    "usage: gpukit loader bench [--file F | --record-size N --records M] [--batch B]\n"
    "                           [--workers W] [--depth K] [--shuffle] [--cold] [--seconds S]\n"
    "                           [--step-us T] [--device SPEC] [--json]\n\n"
    "Delivers batches from a gpukit record file (or a generated one of M records of N bytes,\n"
    "removed afterwards) for S seconds (default 2) and prints items/s, GB/s, microseconds per\n"
    "batch, time to first batch, wait p50/p99 in next(), and a single-core memcpy of the same\n"
    "bytes measured in the same run, with the ratio. --cold drops the file from the page cache\n"
    "first (posix_fadvise DONTNEED); otherwise what the run reads is read once to warm it: the\n"
    "whole data when it fits in half the available memory, else the records of the first batches\n"
    "in the loader's order, and the run then stops at the end of that part. --device copies\n"
    "each batch to that device (host, sim:..., cuda:N) on the loader's copy stream. --step-us T\n"
    "emulates a training step: the consumer spins T microseconds per batch, and the stall\n"
    "(time waiting in next() over wait plus step time) is reported.\n";

typedef struct bench_opts {
    const char *file;
    uint64_t record_size, records, batch;
    int workers, depth, shuffle, cold, json;
    double seconds, step_us;
    const char *device;
} bench_opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024;
    else if (*end == 'M')
        mul = 1024 * 1024;
    else if (*end == 'G')
        mul = 1024ULL * 1024 * 1024;
    if (mul > 1) {
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
            end += strlen(end);
    }
    x *= (double)mul;
    if (!v[0] || *end || errno || !(x >= lo && x <= hi)) {
        gk_tool_error("%s: \"%s\" is not a number from %g to %g", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* The private folder of the generated file, removed with all it holds on every exit path (see
 * remove_temp): the file, or the writer's temporary file beside it. */
static char temp_dir[4096];

/* Empties and removes temp_dir. Only system calls (open, getdents64, unlinkat, rmdir), so a
 * signal handler may call it. */
static void remove_temp(void)
{
    if (!temp_dir[0])
        return;
    int dfd = open(temp_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        char buf[4096];
        long n;
        while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                /* struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), name */
                unsigned short reclen;
                memcpy(&reclen, buf + off + 16, sizeof reclen);
                const char *name = buf + off + 19;
                if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
                    unlinkat(dfd, name, 0);
                off += reclen;
            }
        }
        close(dfd);
    }
    rmdir(temp_dir);
}

/* A signal that ends the process removes the generated file first, then ends it as it would. */
static void on_fatal_signal(int sig)
{
    remove_temp();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Writes a record file of `records` records of `rs` bytes with deterministic content. */
static int make_file(const char *path, uint64_t rs, uint64_t records)
{
    gk_records_writer *w;
    if (gk_records_writer_open(path, rs, NULL, 0, NULL, &w)) {
        gk_tool_error("%s", gk_last_error());
        return -1;
    }
    if (gk_records_writer_reserve(w, records)) {
        gk_tool_error("loader bench: the test file of --records %llu x --record-size %llu does "
                      "not fit: %s",
                      (unsigned long long)records, (unsigned long long)rs, gk_last_error());
        gk_records_writer_abort(w);
        return -1;
    }
    uint64_t per = rs >= (4u << 20) ? 1 : (4u << 20) / rs;
    unsigned char *buf = malloc(per * rs);
    if (!buf) {
        gk_records_writer_abort(w);
        gk_tool_error("out of memory");
        return -1;
    }
    for (uint64_t i = 0; i < per * rs; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 9));
    for (uint64_t done = 0; done < records;) {
        uint64_t n = records - done < per ? records - done : per;
        if (gk_records_writer_write(w, buf, n)) {
            gk_tool_error("%s", gk_last_error());
            free(buf);
            gk_records_writer_abort(w);
            return -1;
        }
        done += n;
    }
    free(buf);
    if (gk_records_writer_close(w)) {
        gk_tool_error("%s", gk_last_error());
        return -1;
    }
    return 0;
}

/* Memory that may be used to warm the file: half of MemAvailable (or of the free pages). */
static uint64_t warm_budget(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    uint64_t avail = (uint64_t)kb * 1024;
    if (!avail) {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 1ULL << 30;
    }
    return avail / 2;
}

/* Reads [off, off + len) once (into the page cache) through buf; 0, or -1 when the file ended
 * early (it was cut: the run reports it). */
static int warm_range(int fd, unsigned char *buf, size_t cap, uint64_t off, uint64_t len)
{
    while (len) {
        ssize_t got = pread(fd, buf, len < cap ? (size_t)len : cap, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
    return 0;
}

/* Warms what the run will read: the whole data region when it fits in the budget (an epoch reads
 * every record), else the records of the first batches in the loader's order until the budget or
 * max(2 s, --seconds) runs out; *limit is then the batches warmed (0: no limit). */
static void warm(const char *path, const bench_opts *o, uint64_t *limit)
{
    *limit = 0;
    gk_records_info info;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || gk_records_inspect(path, &info, NULL, 0) != 0) {
        if (fd >= 0)
            close(fd);
        return; /* opening the dataset reports the problem */
    }
    static unsigned char buf[1 << 20];
    uint64_t budget = warm_budget(), data = info.record_count * info.record_size;
    if (data <= budget) {
        warm_range(fd, buf, sizeof buf, info.data_offset, data);
        close(fd);
        return;
    }
    gk_sampler smp;
    uint64_t *idx = malloc(o->batch * sizeof *idx);
    if (!idx || gk_sampler_init(&smp, info.record_count, o->batch, 1, 0, 1, o->shuffle, 0, 1, NULL,
                                0) != 0) {
        free(idx);
        close(fd);
        return;
    }
    double t0 = now_s(), cap = o->seconds > 2 ? o->seconds : 2;
    uint64_t bytes = 0, b = 0;
    for (; b < smp.batches && bytes + o->batch * info.record_size <= budget && now_s() - t0 < cap;
         b++) {
        size_t n = gk_sampler_batch(&smp, 0, b, idx);
        for (size_t i = 0; i < n; i++)
            if (warm_range(fd, buf, sizeof buf, info.data_offset + idx[i] * info.record_size,
                           info.record_size))
                break;
        bytes += n * info.record_size;
    }
    *limit = b < smp.batches ? (b ? b : 1) : 0;
    free(idx);
    close(fd);
}

/* Single-core memcpy of batch-sized pieces into a reused buffer, GB/s. The source is private
 * memory holding the file's first data bytes (up to 64 MiB, at least one batch; read with pread,
 * zeros where the file ends early), never the file's mapping, which a file cut during the run
 * would turn into a SIGBUS. */
static double memcpy_gbps(const char *path, size_t batch_bytes, double seconds)
{
    gk_records_info info;
    if (gk_records_inspect(path, &info, NULL, 0) != 0)
        memset(&info, 0, sizeof info);
    uint64_t data = info.record_count * info.record_size;
    size_t len = data < (64u << 20) ? (size_t)data : 64u << 20;
    if (len < batch_bytes)
        len = batch_bytes;
    unsigned char *src = calloc(1, len), *dst = malloc(batch_bytes);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!src || !dst || fd < 0) {
        if (fd >= 0)
            close(fd);
        free(src);
        free(dst);
        return 0;
    }
    for (size_t done = 0; done < len;) {
        ssize_t got = pread(fd, src + done, len - done, (off_t)(info.data_offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* cut under us: the rest stays zero (a memcpy's speed does not care) */
        done += (size_t)got;
    }
    close(fd);
    memset(dst, 0, batch_bytes);
    size_t off = 0;
    double t0 = now_s(), t;
    uint64_t moved = 0;
    do {
        for (int i = 0; i < 16; i++) {
            if (off + batch_bytes > len)
                off = 0;
            memcpy(dst, src + off, batch_bytes);
            off += batch_bytes;
            moved += batch_bytes;
        }
        t = now_s() - t0;
    } while (t < seconds);
    volatile unsigned char sink = dst[batch_bytes / 2];
    (void)sink;
    free(dst);
    free(src);
    return (double)moved / t / 1e9;
}

/* Drops the file from the page cache (no root needed). */
static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int run_bench(const bench_opts *o, const char *path)
{
    int rc = GK_TOOL_FAIL;
    gk_device *dev = NULL;
    gk_stream *stream = NULL;
    gk_dataset *ds = NULL;
    gk_loader *ld = NULL;
    uint32_t *waits = NULL;
    if (o->device) {
        if (gk_device_open(o->device, &dev)) {
            gk_tool_error("%s", gk_last_error());
            return GK_TOOL_FAIL;
        }
        if (gk_stream_create(dev, &stream)) {
            gk_tool_error("cannot create a stream: %s", gk_last_error());
            goto out;
        }
    }
    uint64_t limit = 0; /* batches warmed when only part of an epoch was (0: no limit) */
    if (o->cold)
        drop_cache(path);
    else
        warm(path, o, &limit);
    gk_records_options ro = {.size = sizeof(gk_records_options),
                             .access = GK_RECORDS_MMAP,
                             .random = o->shuffle,
                             .readahead = 1};
    if (gk_dataset_open_records(path, &ro, &ds)) {
        gk_tool_error("%s", gk_last_error());
        goto out;
    }
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = o->batch;
    cfg.workers = o->workers;
    cfg.depth = o->depth;
    cfg.shuffle = o->shuffle;
    cfg.drop_last = 1;
    cfg.rank = 0;
    cfg.world = 1;
    cfg.device = dev;
    cfg.seed = 1;
    if (gk_loader_create(&cfg, ds, &ld)) {
        gk_tool_error("%s", gk_last_error());
        goto out;
    }
    size_t cap = 1u << 16, n = 0;
    waits = malloc(cap * sizeof *waits);
    if (!waits) {
        gk_tool_error("out of memory");
        goto out;
    }
    gk_batch b;
    double t0 = now_s(), t = 0, wait_total = 0;
    uint64_t items = 0, bytes = 0;
    while ((t < o->seconds || n < 20) && (!limit || n < limit)) {
        double w0 = now_s();
        int e = gk_loader_next(ld, stream, -1, &b);
        double w1 = now_s();
        if (e) {
            gk_tool_error("loader: %s", gk_last_error());
            goto out;
        }
        if (dev && (b.seq + 1) % (uint64_t)o->depth == 0 &&
            gk_stream_synchronize(dev, stream, -1)) {
            gk_tool_error("stream: %s", gk_last_error());
            goto out;
        }
        if (n == cap) {
            uint32_t *nw = realloc(waits, 2 * cap * sizeof *waits);
            if (!nw) {
                gk_tool_error("out of memory");
                goto out;
            }
            waits = nw;
            cap *= 2;
        }
        double us = (w1 - w0) * 1e9;
        waits[n++] = us > 4e9 ? 4000000000u : (uint32_t)us;
        items += b.count;
        bytes += b.bytes;
        wait_total += w1 - w0;
        if (o->step_us > 0) {
            double until = w1 + o->step_us / 1e6;
            while (now_s() < until)
                ;
        }
        t = now_s() - t0;
    }
    gk_loader_stats st;
    gk_loader_get_stats(ld, &st);
    gk_loader_destroy(ld);
    ld = NULL;
    qsort(waits, n, sizeof *waits, cmp_u32);
    double p50 = waits[n / 2] / 1e3, p99 = waits[(size_t)((double)n * 0.99)] / 1e3;
    double items_s = (double)items / t, gbps = (double)bytes / t / 1e9;
    double base = memcpy_gbps(path, (size_t)(o->batch * gk_dataset_item_size(ds)),
                              o->seconds / 2 > 0.2 ? o->seconds / 2 : 0.2);
    double ratio = base > 0 ? gbps / base : 0;
    double stall = wait_total / t;
    if (o->json) {
        printf("{\"file\":\"");
        gk_tool_json_escape(stdout, path);
        printf("\",\"record_size\":%zu,\"records\":%llu,\"batch\":%llu,\"workers\":%d,"
               "\"depth\":%d,\"shuffle\":%s,\"cold\":%s,\"device\":\"",
               gk_dataset_item_size(ds), (unsigned long long)gk_dataset_count(ds),
               (unsigned long long)o->batch, o->workers, o->depth, o->shuffle ? "true" : "false",
               o->cold ? "true" : "false");
        gk_tool_json_escape(stdout, o->device ? o->device : "none");
        printf("\",\"seconds\":%.3f,\"batches\":%zu,\"items_per_s\":%.0f,\"bytes_per_s\":%.0f,"
               "\"us_per_batch\":%.2f,\"first_batch_s\":%.6f,\"wait_p50_us\":%.2f,"
               "\"wait_p99_us\":%.2f,\"memcpy_bytes_per_s\":%.0f,\"ratio_to_memcpy\":%.3f,"
               "\"worker_busy_s\":%.3f,\"worker_idle_s\":%.3f,\"step_us\":%.1f,\"stall\":%.4f,"
               "\"warm_batches\":%llu}\n",
               t, n, items_s, gbps * 1e9, t / (double)n * 1e6, (double)st.first_batch_ns / 1e9, p50,
               p99, base * 1e9, ratio, (double)st.worker_busy_ns / 1e9,
               (double)st.worker_idle_ns / 1e9, o->step_us, stall, (unsigned long long)limit);
    } else {
        printf("loader bench: %llu records of %zu bytes, batch %llu, %d workers, depth %d, %s, "
               "%s cache%s%s\n",
               (unsigned long long)gk_dataset_count(ds), gk_dataset_item_size(ds),
               (unsigned long long)o->batch, o->workers, o->depth,
               o->shuffle ? "shuffled" : "in order", o->cold ? "cold" : "warm",
               o->device ? ", device " : "", o->device ? o->device : "");
        printf("  items/s          %.0f\n", items_s);
        printf("  GB/s             %.3f\n", gbps);
        printf("  us per batch     %.2f (%zu batches in %.2f s)\n", t / (double)n * 1e6, n, t);
        printf("  first batch      %.3f ms\n", (double)st.first_batch_ns / 1e6);
        printf("  wait p50 / p99   %.2f / %.2f us\n", p50, p99);
        printf("  memcpy 1 core    %.3f GB/s (same bytes per batch, same run)\n", base);
        printf("  ratio            %.1f%% of memcpy\n", ratio * 100);
        if (o->step_us > 0)
            printf("  stall            %.1f%% of the run waiting in next() (step %.0f us)\n",
                   stall * 100, o->step_us);
        if (limit)
            printf("  note             the run stopped after the %llu batches warmed (the data "
                   "is larger than half the available memory)\n",
                   (unsigned long long)limit);
    }
    rc = GK_TOOL_OK;
out:
    free(waits);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    if (stream)
        gk_stream_destroy(dev, stream);
    gk_device_close(dev);
    return rc;
}

int gk_tool_loader(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, loader_usage))
        return GK_TOOL_OK;
    if (argc < 2 || strcmp(argv[1], "bench") != 0) {
        gk_tool_error("loader: unknown or missing action%s%s (try 'gpukit loader bench')",
                      argc >= 2 ? " " : "", argc >= 2 ? argv[1] : "");
        return GK_TOOL_USAGE;
    }
    bench_opts o = {.batch = 256, .workers = 1, .depth = 4, .seconds = 2};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        double v;
        int has = i + 1 < argc;
        if (strcmp(a, "--shuffle") == 0)
            o.shuffle = 1;
        else if (strcmp(a, "--cold") == 0)
            o.cold = 1;
        else if (strcmp(a, "--json") == 0)
            o.json = 1;
        else if (strcmp(a, "--file") == 0 && has)
            o.file = argv[++i];
        else if (strcmp(a, "--device") == 0 && has)
            o.device = argv[++i];
        else if (strcmp(a, "--record-size") == 0 && has) {
            if (parse_num(a, argv[++i], 1, 1e9, &v))
                return GK_TOOL_USAGE;
            o.record_size = (uint64_t)v;
        } else if (strcmp(a, "--records") == 0 && has) {
            if (parse_num(a, argv[++i], 1, 1e12, &v))
                return GK_TOOL_USAGE;
            o.records = (uint64_t)v;
        } else if (strcmp(a, "--batch") == 0 && has) {
            if (parse_num(a, argv[++i], 1, 1e8, &v))
                return GK_TOOL_USAGE;
            o.batch = (uint64_t)v;
        } else if (strcmp(a, "--workers") == 0 && has) {
            if (parse_num(a, argv[++i], 0, 256, &v))
                return GK_TOOL_USAGE;
            o.workers = (int)v;
        } else if (strcmp(a, "--depth") == 0 && has) {
            if (parse_num(a, argv[++i], 2, 1024, &v))
                return GK_TOOL_USAGE;
            o.depth = (int)v;
        } else if (strcmp(a, "--step-us") == 0 && has) {
            if (parse_num(a, argv[++i], 0, 1e7, &v))
                return GK_TOOL_USAGE;
            o.step_us = v;
        } else if (strcmp(a, "--seconds") == 0 && has) {
            if (parse_num(a, argv[++i], 0.01, 3600, &v))
                return GK_TOOL_USAGE;
            o.seconds = v;
        } else {
            gk_tool_error("loader bench: unexpected argument \"%s\" (see --help)", a);
            return GK_TOOL_USAGE;
        }
    }
    if (!o.file == !(o.record_size && o.records)) {
        gk_tool_error("loader bench: give --file F, or --record-size N and --records M");
        return GK_TOOL_USAGE;
    }
    if (o.file)
        return run_bench(&o, o.file);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    /* The test file lives in a private folder of its own, so nothing else is ever replaced or
     * removed. */
    snprintf(temp_dir, sizeof temp_dir, "%s/gpukit-bench-XXXXXX", tmp);
    if (!mkdtemp(temp_dir)) {
        gk_tool_error("loader bench: cannot create a folder in %s: %s (set TMPDIR)", tmp,
                      strerror(errno));
        temp_dir[0] = '\0';
        return GK_TOOL_FAIL;
    }
    char temp_file[4200];
    snprintf(temp_file, sizeof temp_file, "%s/bench.gkr", temp_dir);
    /* Every exit removes it: returns below, and the signals that end the process (a file-size
     * limit, ulimit -f, makes the write fail with EFBIG: main ignores SIGXFSZ). */
    static const int fatal[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT,
                                SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], on_fatal_signal);
    int rc =
        make_file(temp_file, o.record_size, o.records) ? GK_TOOL_FAIL : run_bench(&o, temp_file);
    remove_temp();
    return rc;
}
