/* gpukit pool: replay an RMM-CSV allocation trace through the caching pool (peaks, device calls,
 * latency, leaks), find the trace's F_cap (the smallest simulated device it fits, over its peak of
 * live bytes), and write synthetic training traces. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char pool_usage[] =
    "usage: gpukit pool replay TRACE.csv [--device SPEC] [--preset NAME] [--set k=v,...] [--json]\n"
    "                          [--snapshot FILE] [--summary]\n"
    "       gpukit pool fcap TRACE.csv [--device SPEC] [--preset NAME] [--set k=v,...] [--json]\n"
    "       gpukit pool synth --model transformer [--layers L] [--hidden H] [--heads A]\n"
    "                         [--seq S] [--vary F] [--batch B] [--steps K] [--seed N] [--out "
    "FILE]\n"
    "\n"
    "replay  runs the trace (RMM CSV: Thread,Time,Action,Pointer,Size,Stream) through a pool on\n"
    "        the device (default sim) and prints peak reserved, allocated and requested bytes,\n"
    "        device allocations and frees, retries, out-of-memory failures, allocation and free\n"
    "        latency (p50, p99 in ns) and the allocations still live at the end (leaks).\n"
    "        --snapshot FILE writes the pool's snapshot at the end (JSON: segments, blocks and\n"
    "        the last 10,000 history entries, PyTorch's field and action names); --summary\n"
    "        adds the memory_summary table of the pool at the end of the trace.\n"
    "fcap    finds C_min, the smallest sim capacity (2 MiB steps) on which the trace replays\n"
    "        without failure, L_peak (peak of live requested bytes) and F_cap = C_min / L_peak;\n"
    "        a capacity in a sim --device is replaced by each probe's; with a non-sim --device\n"
    "        the pool limit plays the capacity. With gc_threshold or fraction set (settings that\n"
    "        scale with the capacity) it tries every 2 MiB step instead of bisecting.\n"
    "synth   writes a synthetic transformer training trace (parameters, optimizer state,\n"
    "        activations kept for backward, temporaries, gradients; the sequence length drawn\n"
    "        per step in [vary*seq, seq]) to --out or stdout.\n"
    "\n"
    "  --preset NAME  default (ours) or pytorch (PyTorch's default policy)\n"
    "  --set k=v,...  pool settings (docs/pool.md), e.g. "
    "expandable_segments=0,max_split_size=64MiB\n"
    "  --json         one JSON object instead of text\n"
    "\n"
    "Exits 0 on success (replay: also when allocations failed; see the counts), 1 when the trace\n"
    "or device cannot be used, 2 on a usage error.\n";

typedef struct pool_args {
    const char *trace, *device, *preset, *set, *out, *model, *snapshot;
    int json, summary;
    long layers, hidden, heads, seq, batch, steps, seed;
    double vary;
} pool_args;

static int need_value(int argc, char **argv, int i)
{
    if (i + 1 >= argc) {
        gk_tool_error("%s needs a value (see 'gpukit pool --help')", argv[i]);
        return 0;
    }
    return 1;
}

static int parse_long(const char *flag, const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < lo || v > hi) {
        gk_tool_error("%s: \"%s\" is not a whole number in %ld..%ld", flag, text, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_args(int argc, char **argv, pool_args *a)
{
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--json") == 0) {
            a->json = 1;
            continue;
        }
        if (strcmp(s, "--summary") == 0) {
            a->summary = 1;
            continue;
        }
        const char **str = NULL;
        long *num = NULL, lo = 1, hi = 1L << 40;
        if (strcmp(s, "--device") == 0)
            str = &a->device;
        else if (strcmp(s, "--preset") == 0)
            str = &a->preset;
        else if (strcmp(s, "--set") == 0)
            str = &a->set;
        else if (strcmp(s, "--out") == 0)
            str = &a->out;
        else if (strcmp(s, "--snapshot") == 0)
            str = &a->snapshot;
        else if (strcmp(s, "--model") == 0)
            str = &a->model;
        else if (strcmp(s, "--layers") == 0)
            num = &a->layers, hi = 1024;
        else if (strcmp(s, "--hidden") == 0)
            num = &a->hidden, hi = 65536;
        else if (strcmp(s, "--heads") == 0)
            num = &a->heads, hi = 65536;
        else if (strcmp(s, "--seq") == 0)
            num = &a->seq, hi = 1L << 20;
        else if (strcmp(s, "--batch") == 0)
            num = &a->batch, hi = 65536;
        else if (strcmp(s, "--steps") == 0)
            num = &a->steps, hi = 1L << 20;
        else if (strcmp(s, "--seed") == 0) {
            num = &a->seed;
            lo = 0;
            hi = LONG_MAX;
        } else if (strcmp(s, "--vary") == 0) {
            if (!need_value(argc, argv, i))
                return 0;
            char *end;
            a->vary = strtod(argv[++i], &end);
            if (*end || !(a->vary > 0 && a->vary <= 1)) {
                gk_tool_error("--vary: \"%s\" is not a fraction in (0,1]", argv[i]);
                return 0;
            }
            continue;
        } else if (s[0] == '-') {
            gk_tool_error("pool: unknown option \"%s\" (see 'gpukit pool --help')", s);
            return 0;
        } else if (!a->trace) {
            a->trace = s;
            continue;
        } else {
            gk_tool_error("pool: unexpected argument \"%s\"", s);
            return 0;
        }
        if (!need_value(argc, argv, i))
            return 0;
        i++;
        if (str)
            *str = argv[i];
        else if (!parse_long(s, argv[i], lo, hi, num))
            return 0;
    }
    return 1;
}

static int make_config(const pool_args *a, gk_pool_config *cfg)
{
    if (gk_pool_config_preset(cfg, a->preset) != 0) {
        gk_tool_error("--preset: unknown preset \"%s\" (use default or pytorch)", a->preset);
        return 0;
    }
    if (gk_pool_config_from_env(cfg) != 0) {
        gk_tool_error("%s", gk_last_error());
        return 0;
    }
    char err[256];
    if (a->set && gk_pool_config_parse(cfg, a->set, err, sizeof err) != 0) {
        gk_tool_error("--set: %s", err);
        return 0;
    }
    return 1;
}

static gk_trace *load_trace(const char *path)
{
    gk_trace *t = NULL;
    char err[512] = "";
    if (gk_trace_read(path, &t, err, sizeof err) != 0) {
        gk_tool_error("%s", err);
        return NULL;
    }
    return t;
}

static int write_snapshot(FILE *f, void *pool)
{
    return gk_pool_snapshot_json(pool, f);
}

static int cmd_replay(const pool_args *a)
{
    gk_pool_config cfg;
    if (!make_config(a, &cfg))
        return GK_TOOL_USAGE;
    if (a->snapshot && cfg.history == 0)
        cfg.history = 10000;
    gk_trace *t = load_trace(a->trace);
    if (!t)
        return GK_TOOL_FAIL;
    int ret = GK_TOOL_FAIL;
    gk_device *dev = NULL;
    gk_pool *pool = NULL;
    if (gk_device_open(a->device, &dev) != 0) {
        gk_tool_error("--device %s: %s", a->device, gk_last_error());
        goto out_trace;
    }
    if (gk_pool_create(dev, &cfg, &pool) != 0) {
        gk_tool_error("pool: %s", gk_last_error());
        goto out_dev;
    }
    gk_replay_result r;
    int rc = gk_trace_replay(t, pool, 0, 1, &r);
    if (rc != 0) {
        gk_tool_error("replay of %s: %s", a->trace, gk_last_error());
        goto out_pool;
    }
    gk_pool_stats st;
    if (gk_pool_get_stats(pool, &st) != 0) {
        gk_tool_error("replay of %s: %s", a->trace, gk_last_error());
        goto out_pool;
    }
    if (a->snapshot && gk_tool_write_file(a->snapshot, "--snapshot", write_snapshot, pool) != 0)
        goto out_pool;
    const gk_pool_stats *s = &st;
    if (a->json) {
        printf("{\"trace\":\"");
        gk_tool_json_escape(stdout, a->trace);
        printf("\",\"device\":\"");
        gk_tool_json_escape(stdout, a->device);
        printf("\",\"preset\":\"%s\",\"allocations\":%zu,\"frees\":%zu,\"failed_allocations\":%zu,"
               "\"unknown_frees\":%zu,\"peak_reserved\":%lld,\"peak_allocated\":%lld,"
               "\"peak_requested\":%lld,\"l_peak\":%llu,\"num_device_alloc\":%llu,"
               "\"num_device_free\":%llu,\"num_alloc_retries\":%llu,\"num_ooms\":%llu,"
               "\"alloc_ns_p50\":%llu,\"alloc_ns_p99\":%llu,\"free_ns_p50\":%llu,"
               "\"free_ns_p99\":%llu,\"leaks\":%zu,\"leak_bytes\":%llu,\"stats\":",
               a->preset, r.allocs, r.frees, r.failed_allocs, r.unknown_frees,
               (long long)s->reserved_bytes[GK_POOL_ALL].peak,
               (long long)s->allocated_bytes[GK_POOL_ALL].peak,
               (long long)s->requested_bytes[GK_POOL_ALL].peak, (unsigned long long)r.live_peak,
               (unsigned long long)s->num_device_alloc, (unsigned long long)s->num_device_free,
               (unsigned long long)s->num_alloc_retries, (unsigned long long)s->num_ooms,
               (unsigned long long)r.alloc_ns_p50, (unsigned long long)r.alloc_ns_p99,
               (unsigned long long)r.free_ns_p50, (unsigned long long)r.free_ns_p99, r.leaks,
               (unsigned long long)r.leak_bytes);
        gk_pool_stats_json(s, stdout);
        printf("}\n");
    } else {
        char b1[32], b2[32], b3[32], b4[32];
        printf("trace            %s (%zu allocations, %zu frees)\n", a->trace, r.allocs, r.frees);
        printf("device           %s, preset %s\n", a->device, a->preset);
        printf("peak reserved    %s\n",
               gk_format_size((uint64_t)s->reserved_bytes[GK_POOL_ALL].peak, b1, sizeof b1));
        printf("peak allocated   %s\n",
               gk_format_size((uint64_t)s->allocated_bytes[GK_POOL_ALL].peak, b2, sizeof b2));
        printf("peak requested   %s (L_peak %s)\n",
               gk_format_size((uint64_t)s->requested_bytes[GK_POOL_ALL].peak, b3, sizeof b3),
               gk_format_size(r.live_peak, b4, sizeof b4));
        printf("device calls     %llu allocations, %llu frees\n",
               (unsigned long long)s->num_device_alloc, (unsigned long long)s->num_device_free);
        printf("failures         %llu retries, %llu out of memory, %zu allocations refused, "
               "%zu unknown frees\n",
               (unsigned long long)s->num_alloc_retries, (unsigned long long)s->num_ooms,
               r.failed_allocs, r.unknown_frees);
        printf(
            "latency          allocate p50 %llu ns, p99 %llu ns; free p50 %llu ns, p99 %llu ns\n",
            (unsigned long long)r.alloc_ns_p50, (unsigned long long)r.alloc_ns_p99,
            (unsigned long long)r.free_ns_p50, (unsigned long long)r.free_ns_p99);
        printf("leaks            %zu allocations, %s still live at the end\n", r.leaks,
               gk_format_size(r.leak_bytes, b1, sizeof b1));
        if (a->summary) {
            printf("\n");
            gk_pool_stats_table(s, stdout);
        }
    }
    ret = GK_TOOL_OK;
out_pool:
    gk_pool_destroy(pool);
out_dev:
    gk_device_close(dev);
out_trace:
    gk_trace_free(t);
    return ret;
}

static int cmd_fcap(const pool_args *a)
{
    gk_pool_config cfg;
    if (!make_config(a, &cfg))
        return GK_TOOL_USAGE;
    cfg.logger.level = GK_LOG_OFF;
    gk_trace *t = load_trace(a->trace);
    if (!t)
        return GK_TOOL_FAIL;
    gk_fcap_result r;
    int rc = gk_trace_fcap(t, a->device, &cfg, &r);
    gk_trace_free(t);
    if (rc != 0) {
        if (rc == -ERANGE)
            gk_tool_error("fcap: %s does not replay even on 64 x its live peak (or on the "
                          "largest device the search can try: 1PiB for sim)",
                          a->trace);
        else if (rc == -ENODATA)
            gk_tool_error("fcap: %s has no allocations", a->trace);
        else
            gk_tool_error("fcap on %s: %s", a->device, gk_last_error());
        return GK_TOOL_FAIL;
    }
    double ratio = r.peak_allocated ? (double)r.peak_reserved / (double)r.peak_allocated : 0;
    if (a->json) {
        printf("{\"trace\":\"");
        gk_tool_json_escape(stdout, a->trace);
        printf("\",\"preset\":\"%s\",\"c_min\":%llu,\"l_peak\":%llu,\"f_cap\":%.4f,"
               "\"peak_reserved\":%llu,\"peak_allocated\":%llu,"
               "\"reserved_over_allocated\":%.4f,\"probes\":%d}\n",
               a->preset, (unsigned long long)r.c_min, (unsigned long long)r.l_peak, r.f_cap,
               (unsigned long long)r.peak_reserved, (unsigned long long)r.peak_allocated, ratio,
               r.probes);
    } else {
        char b1[32], b2[32];
        printf("trace                 %s, preset %s\n", a->trace, a->preset);
        printf("C_min                 %llu B (%s)\n", (unsigned long long)r.c_min,
               gk_format_size(r.c_min, b1, sizeof b1));
        printf("L_peak                %llu B (%s)\n", (unsigned long long)r.l_peak,
               gk_format_size(r.l_peak, b2, sizeof b2));
        printf("F_cap                 %.3f\n", r.f_cap);
        printf("reserved / allocated  %.3f (peaks at C_min)\n", ratio);
        printf("probes                %d replays\n", r.probes);
    }
    return GK_TOOL_OK;
}

/* The most events gk_trace_synth_transformer builds (docs/pool.md). */
#define SYNTH_MAX_EVENTS (64ull << 20)

/* Bytes a stream receives (for the size of a trace's CSV). */
static ssize_t count_bytes(void *cookie, const char *buf, size_t len)
{
    (void)buf;
    *(uint64_t *)cookie += len;
    return (ssize_t)len;
}

/* The size of the whole trace, from one- and two-step traces of the same model: events (and so
 * memory) grow by the same count every step; CSV bytes per event stay about the same. */
static int synth_estimate(const gk_synth_config *c, uint64_t *events, uint64_t *csv_bytes)
{
    gk_synth_config one = *c, two = *c;
    one.steps = 1;
    two.steps = 2;
    gk_trace *t1 = NULL, *t2 = NULL;
    int rc = gk_trace_synth_transformer(&one, &t1);
    if (!rc)
        rc = gk_trace_synth_transformer(&two, &t2);
    if (!rc) {
        uint64_t per_step = t2->count - t1->count, bytes = 0;
        *events = t1->count + (uint64_t)(c->steps - 1) * per_step;
        cookie_io_functions_t io = {.write = count_bytes};
        FILE *f = fopencookie(&bytes, "w", io);
        if (f) {
            gk_trace_write(t2, f);
            fclose(f);
        }
        *csv_bytes = (uint64_t)((double)bytes / (double)t2->count * (double)*events);
    }
    gk_trace_free(t1);
    gk_trace_free(t2);
    return rc;
}

/* Host memory available for new allocations (MemAvailable), or UINT64_MAX when unknown. */
static uint64_t memory_available(void)
{
    gk_host *h = NULL;
    gk_host_sample *smp = calloc(1, sizeof *smp);
    uint64_t avail = UINT64_MAX;
    if (smp && gk_host_open(NULL, &h) == 0 && gk_host_sample_read(h, GK_HOST_MEMORY, smp) == 0 &&
        (smp->valid & GK_HOST_MEMORY) && smp->mem_available)
        avail = smp->mem_available;
    gk_host_close(h);
    free(smp);
    return avail;
}

static int synth_error(int rc, const gk_synth_config *c)
{
    if (rc == -EINVAL)
        gk_tool_error("pool synth: --hidden %d is not a multiple of --heads %d (try --heads %d)",
                      c->hidden, c->heads, c->hidden % 64 == 0 ? c->hidden / 64 : 1);
    else if (rc == -EOVERFLOW)
        gk_tool_error("pool synth: with --hidden %d --heads %d --seq %d --batch %d a tensor "
                      "would pass 1 PiB; lower --seq, --batch or --hidden",
                      c->hidden, c->heads, c->seq, c->batch);
    else if (rc == -ERANGE)
        gk_tool_error("pool synth: --layers %d and --steps %d make more than 67,108,864 events "
                      "(a trace of several GiB); lower --steps or --layers",
                      c->layers, c->steps);
    else
        gk_tool_error("pool synth: %s", gk_strerror(rc));
    return rc == -ENOMEM ? GK_TOOL_FAIL : GK_TOOL_USAGE;
}

static int cmd_synth(const pool_args *a)
{
    if (!a->model || strcmp(a->model, "transformer") != 0) {
        gk_tool_error("pool synth: --model transformer is the model gpukit knows");
        return GK_TOOL_USAGE;
    }
    gk_synth_config c;
    gk_synth_config_default(&c);
    c.layers = (int)a->layers;
    c.hidden = (int)a->hidden;
    c.heads = (int)a->heads;
    c.seq = (int)a->seq;
    c.batch = (int)a->batch;
    c.steps = (int)a->steps;
    c.vary = a->vary;
    c.seed = (uint64_t)a->seed;
    uint64_t events = 0, csv = 0;
    int rc = synth_estimate(&c, &events, &csv);
    if (!rc && events > SYNTH_MAX_EVENTS)
        rc = -ERANGE; /* the library's cap, said before anything is built */
    if (rc)
        return synth_error(rc, &c);
    /* Refuse before building what would not fit: the events in memory, the CSV on disk. */
    uint64_t mem = events * sizeof(gk_trace_event), avail = memory_available();
    if (mem > avail) {
        char b1[32], b2[32];
        gk_tool_error("pool synth: the trace of %llu events needs about %s of memory but %s is "
                      "available; lower --steps or --layers",
                      (unsigned long long)events, gk_format_size(mem, b1, sizeof b1),
                      gk_format_size(avail, b2, sizeof b2));
        return GK_TOOL_FAIL;
    }
    const char *path = a->out ? a->out : "/dev/stdout";
    gk_output *o = NULL;
    char err[700];
    if (gk_output_open(path, 0, &o, err, sizeof err) != 0 ||
        gk_output_reserve(o, csv, err, sizeof err) != 0) {
        gk_output_abort(o);
        gk_tool_error("--out %s", err);
        return GK_TOOL_FAIL;
    }
    gk_trace *t = NULL;
    rc = gk_trace_synth_transformer(&c, &t);
    if (rc) {
        gk_output_abort(o);
        return synth_error(rc, &c);
    }
    FILE *f = gk_output_stream(o);
    if (f)
        gk_trace_write(t, f);
    gk_trace_free(t);
    if (!f) {
        gk_output_abort(o);
        gk_tool_error("pool synth: out of memory");
        return GK_TOOL_FAIL;
    }
    rc = gk_output_commit(o, err, sizeof err);
    if (rc && !a->out)
        gk_tool_error("cannot write to standard output: %s", strerror(-rc));
    else if (rc)
        gk_tool_error("pool synth: %s", err);
    if (rc)
        return GK_TOOL_FAIL;
    return GK_TOOL_OK;
}

int gk_tool_pool(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, pool_usage))
        return GK_TOOL_OK;
    if (argc < 2) {
        fputs(pool_usage, stderr);
        return GK_TOOL_USAGE;
    }
    pool_args a = {.device = "sim",
                   .preset = "default",
                   .model = NULL,
                   .layers = 12,
                   .hidden = 768,
                   .heads = 12,
                   .seq = 1024,
                   .batch = 8,
                   .steps = 4,
                   .seed = 1,
                   .vary = 0.5};
    if (!parse_args(argc, argv, &a))
        return GK_TOOL_USAGE;
    if (strcmp(argv[1], "synth") == 0)
        return cmd_synth(&a);
    if (strcmp(argv[1], "replay") != 0 && strcmp(argv[1], "fcap") != 0) {
        gk_tool_error("pool: unknown action \"%s\" (use replay, fcap or synth)", argv[1]);
        return GK_TOOL_USAGE;
    }
    if (!a.trace) {
        gk_tool_error("pool %s: give the trace file (RMM CSV)", argv[1]);
        return GK_TOOL_USAGE;
    }
    return strcmp(argv[1], "replay") == 0 ? cmd_replay(&a) : cmd_fcap(&a);
}
