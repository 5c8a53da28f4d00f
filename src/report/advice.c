/* The advice rules of docs/advice.md. Each rule looks only at series that were recorded and
 * fires only when their numbers cross its thresholds; the evidence quotes those numbers. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report_int.h"

#define MAX_GPUS 16

/* Thresholds (docs/advice.md keeps the same numbers). */
#define LOADER_WAIT_SHARE     0.20 /* loader wait / wall time */
#define GPU_IDLE_P50          0.50 /* GPU utilization median below this ... */
#define CORE_SATURATED        0.90 /* ... while the busiest core is above this ... */
#define CORE_SATURATED_SHARE  0.50 /* ... for this share of the run */
#define OOM_RISK_PEAK         0.90 /* GPU memory peak / total */
#define HEADROOM_PEAK         0.50 /* GPU memory peak below this ... */
#define HEADROOM_UTIL_P50     0.80 /* ... with utilization median above this */
#define HEADROOM_TARGET       0.85 /* no model: the batch factor that would fit under this */
#define HEADROOM_MODEL_MARGIN 0.05 /* model without gpukit_batch_margin_ratio: headroom kept */
#define FRAG_RATIO            1.50 /* pool reserved / in use (p90) */
#define FRAG_MIN_BYTES        (256.0 * 1024 * 1024)
#define THROTTLE_SHARE        0.05 /* share of samples with a throttle reason */
#define UNDERUSED_P50         0.30 /* GPU utilization median */
#define SINGLE_THREAD_LO      0.85 /* tree CPU cores median in [LO, HI] ... */
#define SINGLE_THREAD_HI      1.15
#define HOST_MEMORY_PEAK      0.90 /* host memory used / total */
#define WAITING_CPU_P50       0.10 /* tree CPU cores median below this */
#define HOST_BOUND_CORES      0.90 /* tree CPU cores median at least this share of the cores ... */
#define HOST_BOUND_CPU_P50    0.90 /* ... with all cores' busy ratio median at least this */
#define MIN_SAMPLES           3    /* rules over samples need at least this many */

#define THROTTLE_THERMAL_BITS 0x68ull /* HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40 */
#define THROTTLE_BRAKE_BITS   0x80ull /* HW power brake */
#define THROTTLE_POWER_BITS   0x04ull /* SW power cap */

/* The series `name`, or when the program sent it with tags (the library's own series carry
 * device, pool or loader labels, and rank under a launcher), its first tagged series
 * "name{...}". */
static const gk__series_summary *find(const gk_report *rep, const char *name, size_t min_n)
{
    const gk__series_summary *sm = gk__report_find(rep, name);
    size_t nl = strlen(name);
    for (size_t i = 0; !sm && i < rep->nsums; i++) {
        const char *n = rep->sums[i].s.name;
        if (strncmp(n, name, nl) == 0 && n[nl] == '{')
            sm = &rep->sums[i];
    }
    return sm && sm->st.count >= min_n ? sm : NULL;
}

/* The tags of a series name ("{device:cuda:0,pool:default}"), or "" without. */
static const char *tags_of(const char *name)
{
    const char *b = strchr(name, '{');
    return b ? b : "";
}

/* GPU `gpu`'s series "gpukit_gpu_<what>{gpu="N"}" with enough samples, or NULL. */
static const gk__series_summary *gpu_series(const gk_report *rep, int gpu, const char *what)
{
    const gk__series_summary *sm = gk__report_gpu_series(rep, gpu, what);
    return sm && sm->st.count >= MIN_SAMPLES ? sm : NULL;
}

/* Seconds of waiting the program reported through a *loader_wait* / *data_wait* metric. */
static double loader_wait_seconds(const gk_report *rep, char *which, size_t len)
{
    double total = 0;
    which[0] = '\0';
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        const char *n = sm->s.name;
        if (sm->s.kind == GK_SERIES_SAMPLE || sm->s.kind == GK_SERIES_GAUGE ||
            (!strstr(n, "loader_wait") && !strstr(n, "data_wait")))
            continue;
        char base[256];
        snprintf(base, sizeof base, "%s", n);
        char *brace = strchr(base, '{');
        if (brace)
            *brace = '\0';
        size_t bl = strlen(base);
        int ms = sm->s.kind == GK_SERIES_TIMER || (bl > 3 && strcmp(base + bl - 3, "_ms") == 0);
        total += ms ? sm->st.sum / 1000 : sm->st.sum;
        if (!which[0])
            snprintf(which, len, "%s", n);
    }
    return total;
}

static int data_loading(gk_report *rep, int *fired)
{
    char ev[512] = "", which[200];
    double dur = rep->duration_s;
    double wait = loader_wait_seconds(rep, which, sizeof which);
    /* Several ranks each wait on their own loader: the rank that waited most speaks. */
    double rank_wait = -1;
    for (size_t i = 0; i < rep->nranks; i++) {
        if (!isnan(rep->ranks[i].loader_wait_share) &&
            rep->ranks[i].loader_wait_share * dur > rank_wait) {
            rank_wait = rep->ranks[i].loader_wait_share * dur;
            snprintf(which, sizeof which, "gpukit_loader_wait_seconds_total of rank %d",
                     rep->ranks[i].rank);
        }
    }
    if (rank_wait >= 0)
        wait = rank_wait;
    if (dur > 0 && wait / dur >= LOADER_WAIT_SHARE) {
        snprintf(ev, sizeof ev,
                 "the program waited for data %.2f s of %.2f s (%.0f%%, reported as %s; "
                 "threshold %.0f%%)",
                 wait, dur, 100 * wait / dur, which, 100 * LOADER_WAIT_SHARE);
    }
    const gk__series_summary *core = find(rep, "gpukit_cpu_busiest_core_ratio", MIN_SAMPLES);
    for (int g = 0; g < MAX_GPUS && !ev[0] && core; g++) {
        const gk__series_summary *u = gpu_series(rep, g, "utilization_ratio");
        if (!u || u->st.p50 >= GPU_IDLE_P50 || dur <= 0)
            continue;
        double share = core->above_s / dur;
        if (share >= CORE_SATURATED_SHARE)
            snprintf(ev, sizeof ev,
                     "GPU %d utilization median %.0f%% (below %.0f%%) while the busiest host "
                     "core was above %.0f%% for %.0f%% of the run",
                     g, 100 * u->st.p50, 100 * GPU_IDLE_P50, 100 * CORE_SATURATED, 100 * share);
    }
    if (!ev[0])
        return 0;
    *fired = 1;
    return gk__report_add_advice(
        rep, "data-loading-bound", "Data loading is the bottleneck: the device waits for input", ev,
        "Use more loader workers (threads or processes), pin host memory for copies, deepen "
        "prefetching (two or more batches ahead), and move decoding or augmentation off the "
        "critical path (pre-decode, cache, or do it on the device).");
}

/* The last value of a gauge the program sent, or NAN when absent. */
static double last_gauge(const gk_report *rep, const char *name)
{
    const gk__series_summary *sm = find(rep, name, 1);
    return sm && sm->s.n > 0 ? sm->s.v[sm->s.n - 1] : NAN;
}

/* GPU g's memory capacity in bytes from its used bytes and used ratio (ratio = used / total, so
 * the two peaks give the total); 0 when either was not recorded. */
static double gpu_capacity(const gk_report *rep, int g, const gk__series_summary *ratio)
{
    const gk__series_summary *used = gpu_series(rep, g, "memory_used_bytes");
    if (!used || !(ratio->st.max > 0) || !(used->st.max > 0))
        return 0;
    return used->st.max / ratio->st.max;
}

/* batch-headroom: memory mostly unused while the GPU is busy. With the batch finder's model in
 * the recording (a, k, the chosen batch) and the GPU's capacity, the estimate is the model's
 * largest batch under the capacity less the margin; otherwise memory is assumed to grow in
 * proportion to the batch. */
static int batch_headroom(gk_report *rep, int g, const gk__series_summary *mem,
                          const gk__series_summary *util)
{
    char ev[768], fix[512], note[160] = "";
    double a = last_gauge(rep, "gpukit_batch_fixed_bytes");
    double k = last_gauge(rep, "gpukit_batch_per_sample_bytes");
    double b = last_gauge(rep, "gpukit_batch_size");
    double margin = last_gauge(rep, "gpukit_batch_margin_ratio");
    if (!(margin >= 0 && margin < 1))
        margin = HEADROOM_MODEL_MARGIN;
    double cap = gpu_capacity(rep, g, mem);
    int have_model = isfinite(a) && a >= 0 && isfinite(k) && k > 0 && isfinite(b) && b >= 1;
    if (have_model && cap > 0) {
        double bmax = floor((cap * (1 - margin) - a) / k);
        if (bmax > b && bmax < 1e15) {
            char as[32], ks[32], cs[32];
            gk__fmt_bytes(as, sizeof as, a);
            gk__fmt_bytes(ks, sizeof ks, k);
            gk__fmt_bytes(cs, sizeof cs, cap);
            snprintf(ev, sizeof ev,
                     "GPU %d memory peaked at %.1f%% of %s (threshold %.0f%%) while utilization "
                     "median was %.0f%% (threshold %.0f%%); estimate from the batch model: "
                     "a = %s fixed, k = %s per sample, current batch %.0f, so floor((%s x "
                     "(1 - %.2f) - a) / k) = %.0f samples fit",
                     g, 100 * mem->st.max, cs, 100 * HEADROOM_PEAK, 100 * util->st.p50,
                     100 * HEADROOM_UTIL_P50, as, ks, b, cs, margin, bmax);
            snprintf(fix, sizeof fix,
                     "Raise the batch to about %.0f (%.1fx the current %.0f; the batch model's "
                     "estimate), confirm it with one trial at that size (gk_batch_find with the "
                     "whole device as its budget does so), and scale the learning rate with it.",
                     bmax, bmax / b, b);
            return gk__report_add_advice(rep, "batch-headroom",
                                         "Room for a larger batch: GPU memory is mostly unused", ev,
                                         fix);
        }
        snprintf(note, sizeof note,
                 "; the batch model's estimate (%.0f) was not above the current batch %.0f, so "
                 "it was not used",
                 bmax, b);
    } else if (have_model) {
        snprintf(note, sizeof note, "; the batch model was recorded but not GPU %d's capacity", g);
    }
    double factor = mem->st.max > 0 ? HEADROOM_TARGET / mem->st.max : 0;
    snprintf(ev, sizeof ev,
             "GPU %d memory peaked at %.1f%% (threshold %.0f%%) while utilization median was "
             "%.0f%% (threshold %.0f%%); estimate without a batch model: if memory grows in "
             "proportion to the batch, about %.1fx the batch would fit under %.0f%%%s",
             g, 100 * mem->st.max, 100 * HEADROOM_PEAK, 100 * util->st.p50, 100 * HEADROOM_UTIL_P50,
             factor, 100 * HEADROOM_TARGET, note);
    snprintf(fix, sizeof fix,
             "Try about %.1fx the batch, or a larger model; call gk_batch_find in the program (it "
             "fits the memory model from two short trials and, under gpukit run, records it so "
             "this advice can give a batch size).",
             factor);
    return gk__report_add_advice(rep, "batch-headroom",
                                 "Room for a larger batch: GPU memory is mostly unused", ev, fix);
}

static int gpu_rules(gk_report *rep, int loading_fired)
{
    int rc = 0;
    char ev[512];
    for (int g = 0; g < MAX_GPUS && !rc; g++) {
        const gk__series_summary *mem = gpu_series(rep, g, "memory_used_ratio");
        const gk__series_summary *util = gpu_series(rep, g, "utilization_ratio");
        const gk__series_summary *ev_bits = gpu_series(rep, g, "clock_event_reasons");
        if (mem && mem->st.max >= OOM_RISK_PEAK) {
            snprintf(ev, sizeof ev,
                     "GPU %d memory peaked at %.1f%% of its capacity (threshold %.0f%%)", g,
                     100 * mem->st.max, 100 * OOM_RISK_PEAK);
            rc = gk__report_add_advice(
                rep, "oom-risk", "Out-of-memory risk: GPU memory is nearly full", ev,
                "Reduce the batch size or sequence length, turn on activation checkpointing, "
                "use mixed precision, or let the allocator use expandable segments to avoid "
                "fragmentation failures.");
        }
        if (!rc && mem && util && mem->st.max < HEADROOM_PEAK && util->st.p50 >= HEADROOM_UTIL_P50)
            rc = batch_headroom(rep, g, mem, util);
        if (!rc && ev_bits) {
            size_t thermal = 0, power = 0;
            const gk_series *s = &ev_bits->s;
            for (size_t i = 0; i < s->n; i++) {
                double x = s->v[i]; /* a bitmask; anything else counts as no reason */
                unsigned long long bits =
                    x >= 0 && x < 18446744073709551616.0 ? (unsigned long long)x : 0;
                thermal += (bits & (THROTTLE_THERMAL_BITS | THROTTLE_BRAKE_BITS)) != 0;
                power += (bits & THROTTLE_POWER_BITS) != 0;
            }
            if ((double)thermal / (double)s->n >= THROTTLE_SHARE) {
                snprintf(ev, sizeof ev,
                         "GPU %d reported thermal or hardware slowdown in %zu of %zu samples "
                         "(%.0f%%; threshold %.0f%%)",
                         g, thermal, s->n, 100.0 * (double)thermal / (double)s->n,
                         100 * THROTTLE_SHARE);
                rc = gk__report_add_advice(
                    rep, "thermal-throttling", "The GPU slowed its clocks to protect itself", ev,
                    "Check cooling (fans, airflow, dust, room temperature) and the power supply; "
                    "compare with nvidia-smi -q -d PERFORMANCE.");
            }
            if (!rc && (double)power / (double)s->n >= THROTTLE_SHARE) {
                snprintf(ev, sizeof ev,
                         "GPU %d was held at its power cap in %zu of %zu samples (%.0f%%)", g,
                         power, s->n, 100.0 * (double)power / (double)s->n);
                rc = gk__report_add_advice(
                    rep, "power-capped", "The GPU is limited by its power cap", ev,
                    "Raise the power limit if the board allows it (nvidia-smi -pl), or accept "
                    "the clocks; lower precision work draws less power per operation.");
            }
        }
        if (!rc && util && !loading_fired && util->st.p50 < UNDERUSED_P50) {
            snprintf(ev, sizeof ev,
                     "GPU %d utilization median %.0f%%, p90 %.0f%% (threshold "
                     "%.0f%%)",
                     g, 100 * util->st.p50, 100 * util->st.p90, 100 * UNDERUSED_P50);
            rc = gk__report_add_advice(
                rep, "gpu-underused", "The GPU is mostly idle", ev,
                "If the program launches many small kernels it is launch-bound: fuse operations, "
                "use CUDA graphs or larger batches. If it waits for input, profile the loader "
                "(send its wait time as a loader_wait metric and rerun).");
        }
    }
    return rc;
}

static int pool_fragmentation(gk_report *rep)
{
    /* Each pool (and each rank's) reserved bytes against its own bytes in use: the worst. */
    const gk__series_summary *res = NULL, *use = NULL;
    static const char base[] = "gpukit_alloc_reserved_bytes";
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *r = &rep->sums[i];
        if (strncmp(r->s.name, base, sizeof base - 1) != 0 ||
            (r->s.name[sizeof base - 1] && r->s.name[sizeof base - 1] != '{') ||
            r->st.count < MIN_SAMPLES)
            continue;
        char name[512];
        snprintf(name, sizeof name, "gpukit_alloc_in_use_bytes%s", tags_of(r->s.name));
        const gk__series_summary *u = gk__report_find(rep, name);
        if (!u || u->st.count < MIN_SAMPLES || r->st.p90 < FRAG_RATIO * u->st.p90 ||
            r->st.p90 - u->st.p90 < FRAG_MIN_BYTES)
            continue;
        if (!res || r->st.p90 - u->st.p90 > res->st.p90 - use->st.p90) {
            res = r;
            use = u;
        }
    }
    if (!res)
        return 0;
    char ev[512], a[32], b[32];
    gk__fmt_bytes(a, sizeof a, res->st.p90);
    gk__fmt_bytes(b, sizeof b, use->st.p90);
    snprintf(ev, sizeof ev,
             "the pool reserved %s (p90) for %s in use (p90): %.1fx (threshold %.1fx and "
             "256 MiB)",
             a, b, use->st.p90 > 0 ? res->st.p90 / use->st.p90 : INFINITY, FRAG_RATIO);
    return gk__report_add_advice(
        rep, "fragmentation", "Allocator fragmentation: far more memory reserved than used", ev,
        "Turn on expandable segments, round allocation sizes, free the cache between phases "
        "(gk_pool_trim), or allocate long-lived buffers first.");
}

static int host_rules(gk_report *rep)
{
    int rc = 0;
    char ev[512];
    const gk__series_summary *cores = find(rep, "gpukit_process_tree_cpu_cores", MIN_SAMPLES);
    const gk__series_summary *mem = find(rep, "gpukit_memory_used_ratio", MIN_SAMPLES);
    int any_gpu_util = 0;
    double gpu_p50_max = 0;
    for (int g = 0; g < MAX_GPUS; g++) {
        const gk__series_summary *u = gpu_series(rep, g, "utilization_ratio");
        if (u) {
            any_gpu_util = 1;
            if (u->st.p50 > gpu_p50_max)
                gpu_p50_max = u->st.p50;
        }
    }
    const gk__series_summary *host_cpu = find(rep, "gpukit_cpu_busy_ratio", MIN_SAMPLES);
    /* A program may say which math library it uses (gauge gpukit_math_library{library:NAME} =
     * its threads): the fixes then do not suggest what it already does. */
    const gk__series_summary *math = find(rep, "gpukit_math_library", 1);
    char lib[64] = "";
    int lib_threads = 0;
    if (math && gk__series_tag(math->s.name, "library", lib, sizeof lib) && lib[0])
        lib_threads = (int)math->st.max;
    else
        lib[0] = '\0';
    if (cores && host_cpu && !any_gpu_util && rep->info.cores >= 1 &&
        cores->st.p50 >= HOST_BOUND_CORES * rep->info.cores &&
        host_cpu->st.p50 >= HOST_BOUND_CPU_P50) {
        snprintf(ev, sizeof ev,
                 "the command's processes used %.2f cores (median) of the %d on this host "
                 "(threshold %.0f%% of them), all cores were busy %.0f%% of the time (median; "
                 "threshold %.0f%%), and no GPU was recorded",
                 cores->st.p50, rep->info.cores, 100 * HOST_BOUND_CORES, 100 * host_cpu->st.p50,
                 100 * HOST_BOUND_CPU_P50);
        char fix[512];
        if (lib[0])
            snprintf(fix, sizeof fix,
                     "It already does its math with %s (%d thread%s): run it where a GPU is "
                     "available and move that math there (gpukit run then records the GPU), use "
                     "lower precision, or give it more cores; perf top shows whether the time is "
                     "in %s or around it.",
                     lib, lib_threads, lib_threads == 1 ? "" : "s", lib);
        else
            snprintf(fix, sizeof fix, "%s",
                     "Run it where a GPU is available and move the hot math there (gpukit run "
                     "then records the GPU), use optimised host math (BLAS, vectorised or "
                     "compiled kernels, lower precision), or give it more cores; perf top shows "
                     "the hot functions.");
        rc = gk__report_add_advice(rep, "host-cpu-bound",
                                   "CPU-bound on the host: every core is busy with this job", ev,
                                   fix);
    }
    if (!rc && cores && rep->info.cores >= 2 && cores->st.p50 >= SINGLE_THREAD_LO &&
        cores->st.p50 <= SINGLE_THREAD_HI && (!any_gpu_util || gpu_p50_max < UNDERUSED_P50)) {
        snprintf(ev, sizeof ev,
                 "the command's processes used %.2f cores (median; p90 %.2f) of the %d on this "
                 "host: one thread did the work",
                 cores->st.p50, cores->st.p90, rep->info.cores);
        char fix[512];
        if (lib[0] && lib_threads <= 1)
            snprintf(fix, sizeof fix,
                     "Its math library, %s, runs one thread: let it use the host's %d cores "
                     "(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or MKL_NUM_THREADS), parallelise the "
                     "rest of the hot loop, or move the work to the GPU.",
                     lib, rep->info.cores);
        else if (lib[0])
            snprintf(fix, sizeof fix,
                     "Its math library, %s, has %d threads but one thread did the work: the time "
                     "is outside the library (or its calls are too small to split); profile with "
                     "perf top, batch the calls, parallelise the loop, or move the work to the "
                     "GPU.",
                     lib, lib_threads);
        else
            snprintf(fix, sizeof fix, "%s",
                     "Parallelise the hot loop (worker threads or processes, vectorised "
                     "libraries), or move the work to the GPU; profile it with perf top to find "
                     "the hot function.");
        rc = gk__report_add_advice(rep, "single-thread-bound", "The run is bound by one CPU thread",
                                   ev, fix);
    }
    if (!rc && mem && mem->st.max >= HOST_MEMORY_PEAK) {
        snprintf(ev, sizeof ev, "host memory use peaked at %.1f%% (threshold %.0f%%)",
                 100 * mem->st.max, 100 * HOST_MEMORY_PEAK);
        rc = gk__report_add_advice(
            rep, "host-memory-pressure", "Host memory is nearly exhausted", ev,
            "Lower the loader's prefetch depth or worker count, memory-map datasets instead of "
            "loading them, or run on a host with more memory; watch for swapping.");
    }
    if (!rc && rep->info.has_end && rep->info.end->signal == SIGKILL && mem &&
        mem->st.max >= HOST_MEMORY_PEAK) {
        snprintf(ev, sizeof ev,
                 "the command was killed by SIGKILL while host memory use was at %.1f%%",
                 100 * mem->st.max);
        rc = gk__report_add_advice(rep, "oom-killed",
                                   "The kernel's out-of-memory killer probably ended the run", ev,
                                   "Check `journalctl -k | grep -i oom`; reduce host memory use.");
    }
    if (!rc && cores && cores->st.p50 < WAITING_CPU_P50 && (!any_gpu_util || gpu_p50_max < 0.1)) {
        snprintf(ev, sizeof ev,
                 "the command's processes used %.2f cores (median)%s: neither the CPU nor the "
                 "GPU was busy",
                 cores->st.p50, any_gpu_util ? " and the GPUs were idle" : "");
        rc = gk__report_add_advice(
            rep, "mostly-waiting", "The run mostly waited (I/O, network, sleep or locks)", ev,
            "Find what it waits for: storage (read-ahead, faster disk, caching), the network, "
            "a lock, or a sleep; strace -c -f shows where the time goes.");
    }
    if (!rc && rep->info.has_end && rep->info.end->metric_malformed > 0) {
        snprintf(ev, sizeof ev, "%llu StatsD lines were refused (%llu accepted)",
                 (unsigned long long)rep->info.end->metric_malformed,
                 (unsigned long long)rep->info.end->metric_lines);
        rc = gk__report_add_advice(
            rep, "metric-lines-refused", "Some metrics the program sent were malformed", ev,
            "Send lines as name:value|type with type g, c, ms or h; names use letters, digits "
            "and _ . - /; tags go last as |#key:value,key2:value.");
    }
    return rc;
}

int gk__report_advise(gk_report *rep)
{
    int loading = 0;
    int rc = gk__report_straggler(rep);
    if (!rc)
        rc = data_loading(rep, &loading);
    if (!rc)
        rc = gpu_rules(rep, loading);
    if (!rc)
        rc = pool_fragmentation(rep);
    if (!rc)
        rc = host_rules(rep);
    return rc;
}
