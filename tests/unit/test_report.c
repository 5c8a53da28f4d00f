/* Reports: statistics, time above thresholds and energy from known series; each advice rule
 * fires on data that supports it and stays silent otherwise; the baseline comparison finds the
 * right regressions with the right sign; the renderers produce valid JSON and a complete HTML
 * page. Recordings are written with gk_recorder from known values. */
/* gk-labels: unit */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

#include "gk_test.h"
#include "report/report_int.h"

typedef struct spec {
    int n;           /* samples, every 0.5 s */
    double cores;    /* gpukit_process_tree_cpu_cores */
    double core_max; /* gpukit_cpu_busiest_core_ratio */
    double host_mem; /* gpukit_memory_used_ratio */
    double host_cpu; /* gpukit_cpu_busy_ratio (0: not recorded) */
    int gpu;         /* record gpukit_gpu_*{gpu="0"} */
    double gpu_util, gpu_mem, power, events;
    double step_ms;          /* step_time timer values (0: none) */
    double throughput;       /* samples_per_second gauge (0: none) */
    double wait_ms;          /* loader_wait_ms timer per sample (0: none) */
    double reserved, in_use; /* pool gauges (0: none) */
    double gpu_capacity;     /* bytes: also record GPU 0's memory used in bytes (0: not) */
    double batch_a, batch_k; /* the batch finder's gauges, sent once (batch_b 0: none) */
    double batch_b, batch_margin;
    int malformed, signal;
    const char *math_lib; /* gpukit_math_library{library:...} = math_threads (NULL: none) */
    double math_threads;
} spec;

static const char *record(const char *name, const spec *sp)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s.jsonl", gk_test_tmpdir(name), name);
    static const char *const argv[] = {"train", "--fast"};
    gk_recording_meta m = {.size = sizeof(gk_recording_meta),
                           .argc = 2,
                           .argv = argv,
                           .host = "h",
                           .start_unix = 1.7e9,
                           .interval_s = 0.5,
                           .cores = 2,
                           .memory_total_bytes = 8e9,
                           .gpu_enabled = sp->gpu,
                           .gpu_reason = sp->gpu ? "" : "no driver"};
    gk_recorder *r = NULL;
    GK_ASSERT_OK(gk_recorder_open(path, &m, &r));
    for (int i = 0; i < sp->n; i++) {
        double t = 0.5 * (i + 1);
        /* deterministic jitter and a 2% step halfway, so the noise estimate is not zero */
        double j = 1 + 0.01 * ((i % 3) - 1) + (i >= sp->n / 2 ? 0.02 : 0);
        const char *all[] = {"gpukit_process_tree_cpu_cores",
                             "gpukit_cpu_busiest_core_ratio",
                             "gpukit_memory_used_ratio",
                             "gpukit_cpu_busy_ratio",
                             "gpukit_gpu_utilization_ratio{gpu=\"0\"}",
                             "gpukit_gpu_memory_used_ratio{gpu=\"0\"}",
                             "gpukit_gpu_power_watts{gpu=\"0\"}",
                             "gpukit_gpu_clock_event_reasons{gpu=\"0\"}",
                             "gpukit_gpu_memory_used_bytes{gpu=\"0\"}"};
        double allv[] = {sp->cores * j, sp->core_max, sp->host_mem,
                         sp->host_cpu,  sp->gpu_util, sp->gpu_mem,
                         sp->power,     sp->events,   sp->gpu_mem * sp->gpu_capacity};
        int keep[] = {1,
                      1,
                      1,
                      sp->host_cpu > 0,
                      sp->gpu,
                      sp->gpu,
                      sp->gpu,
                      sp->gpu,
                      sp->gpu && sp->gpu_capacity > 0};
        const char *names[9];
        double v[9];
        size_t nv = 0;
        for (size_t k = 0; k < 9; k++) {
            if (keep[k]) {
                names[nv] = all[k];
                v[nv++] = allv[k];
            }
        }
        GK_ASSERT_OK(gk_recorder_sample(r, t, nv, names, v));
        if (i == 0 && sp->batch_b > 0) {
            GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_batch_size", "g", sp->batch_b, NULL));
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_batch_fixed_bytes", "g", sp->batch_a, NULL));
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_batch_per_sample_bytes", "g", sp->batch_k, NULL));
            if (sp->batch_margin > 0)
                GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_batch_margin_ratio", "g",
                                                sp->batch_margin, NULL));
        }
        if (sp->math_lib) {
            char tags[64];
            snprintf(tags, sizeof tags, "library:%s", sp->math_lib);
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_math_library", "g", sp->math_threads, tags));
        }
        if (sp->step_ms > 0)
            GK_ASSERT_OK(gk_recorder_metric(r, t, "step_time", "ms", sp->step_ms * j, NULL));
        if (sp->throughput > 0)
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "samples_per_second", "g", sp->throughput * j, NULL));
        if (sp->wait_ms > 0)
            GK_ASSERT_OK(gk_recorder_metric(r, t, "loader_wait", "ms", sp->wait_ms, NULL));
        if (sp->reserved > 0) {
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_alloc_reserved_bytes", "g", sp->reserved, NULL));
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_alloc_in_use_bytes", "g", sp->in_use, NULL));
        }
    }
    gk_recording_end e = {.size = sizeof(gk_recording_end),
                          .t = 0.5 * sp->n,
                          .duration_s = 0.5 * sp->n,
                          .exit_status = sp->signal ? 128 + sp->signal : 0,
                          .exit_code = sp->signal ? -1 : 0,
                          .signal = sp->signal,
                          .samples = (uint64_t)sp->n,
                          .metric_malformed = (uint64_t)sp->malformed,
                          .cpu_seconds = 1,
                          .max_rss_bytes = 1e6};
    GK_ASSERT_OK(gk_recorder_close(r, &e));
    return path;
}

static gk_report *report_of(const char *path, const char *base, gk_recording **rec,
                            gk_recording **brec)
{
    GK_ASSERT_OK(gk_recording_load(path, rec, NULL, 0));
    *brec = NULL;
    if (base)
        GK_ASSERT_OK(gk_recording_load(base, brec, NULL, 0));
    gk_report *rep = NULL;
    GK_ASSERT_OK(gk_report_create(*rec, *brec, &rep));
    return rep;
}

static void done(gk_report *rep, gk_recording *rec, gk_recording *brec)
{
    gk_report_destroy(rep);
    gk_recording_free(rec);
    gk_recording_free(brec);
}

/* The rules that fired, joined by spaces. */
static const char *rules(const gk_report *rep)
{
    static char buf[512];
    buf[0] = '\0';
    for (size_t i = 0; i < gk_report_advice_count(rep); i++) {
        gk_advice a;
        GK_ASSERT_OK(gk_report_advice(rep, i, &a));
        assert_true(a.evidence[0] && a.fix[0] && a.title[0]);
        strncat(buf, a.rule, sizeof buf - strlen(buf) - 2);
        strcat(buf, " ");
    }
    return buf;
}

static void test_stats_energy_threshold(void **state)
{
    (void)state;
    spec sp = {.n = 20,
               .cores = 0.5,
               .core_max = 0.95,
               .host_mem = 0.3,
               .gpu = 1,
               .gpu_util = 0.6,
               .gpu_mem = 0.7,
               .power = 100};
    gk_recording *rec, *brec;
    gk_report *rep = report_of(record("stats", &sp), NULL, &rec, &brec);
    gk_stats st;
    GK_ASSERT_OK(gk_report_stats(rep, "gpukit_gpu_power_watts{gpu=\"0\"}", &st));
    assert_int_equal(st.count, 20);
    assert_true(st.p50 == 100 && st.std == 0);
    GK_ASSERT_ERR(gk_report_stats(rep, "nope", &st), -ENOENT);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    GK_ASSERT_OK(gk_report_write_json(rep, f));
    fclose(f);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    /* 100 W over 9.5 s between the first and last sample */
    double joules = cJSON_GetObjectItem(j, "gpu_energy_joules")->valuedouble;
    assert_true(fabs(joules - 950) < 1e-6);
    const cJSON *s;
    int found = 0;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "series"))
    {
        if (strcmp(cJSON_GetObjectItem(s, "name")->valuestring, "gpukit_cpu_busiest_core_ratio") ==
            0) {
            found = 1;
            /* every sample above 90%: 20 x 0.5 s */
            assert_true(fabs(cJSON_GetObjectItem(s, "seconds_above")->valuedouble - 10) < 1e-6);
        }
    }
    assert_true(found);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "warnings")), 0);
    cJSON_Delete(j);
    free(text);
    done(rep, rec, brec);
}

/* The batch-headroom estimate: the memory-proportional guess without the batch finder's model,
 * the model's batch size with it and the GPU's capacity, and the fallback (saying why) when the
 * capacity is missing or the model disagrees with the observed memory. */
static void test_batch_headroom_estimates(const spec *room)
{
    gk_recording *rec, *brec;
    gk_report *rep;
    gk_advice a;
    rep = report_of(record("room_guess", room), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "batch-headroom ");
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.evidence, "estimate without a batch model");
    GK_ASSERT_CONTAINS(a.evidence, "peaked at 30.0%");
    GK_ASSERT_CONTAINS(a.evidence, "about 2.8x the batch"); /* 0.85 / 0.30 */
    GK_ASSERT_CONTAINS(a.fix, "about 2.8x");
    done(rep, rec, brec);

    /* 16 GiB, a = 1 GiB, k = 40 MiB, b = 64, margin 0.04:
     * floor((16384 MiB x 0.96 - 1024 MiB) / 40 MiB) = floor(367.6) = 367 */
    spec model = *room;
    model.gpu_capacity = 16.0 * (1 << 30);
    model.batch_a = 1.0 * (1 << 30);
    model.batch_k = 40.0 * (1 << 20);
    model.batch_b = 64;
    model.batch_margin = 0.04;
    rep = report_of(record("room_model", &model), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "batch-headroom ");
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.evidence, "estimate from the batch model");
    GK_ASSERT_CONTAINS(a.evidence, "of 16.0 GiB");
    GK_ASSERT_CONTAINS(a.evidence, "a = 1.00 GiB fixed, k = 40.0 MiB per sample, current batch 64");
    GK_ASSERT_CONTAINS(a.evidence, "(1 - 0.04)");
    GK_ASSERT_CONTAINS(a.evidence, "= 367 samples fit");
    GK_ASSERT_CONTAINS(a.fix, "Raise the batch to about 367");
    done(rep, rec, brec);

    /* Without the margin gauge the rule keeps 5%: floor((15564.8 - 1024) / 40) = 363. */
    spec nomargin = model;
    nomargin.batch_margin = 0;
    rep = report_of(record("room_nomargin", &nomargin), NULL, &rec, &brec);
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.fix, "Raise the batch to about 363");
    done(rep, rec, brec);

    /* The model without the GPU's capacity: the guess, saying why. */
    spec nocap = model;
    nocap.gpu_capacity = 0;
    rep = report_of(record("room_nocap", &nocap), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "batch-headroom ");
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.evidence, "estimate without a batch model");
    GK_ASSERT_CONTAINS(a.evidence, "not GPU 0's capacity");
    done(rep, rec, brec);

    /* A model that says the current batch is already the largest: not used. */
    spec stale = model;
    stale.batch_b = 400;
    rep = report_of(record("room_stale", &stale), NULL, &rec, &brec);
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.evidence, "estimate without a batch model");
    GK_ASSERT_CONTAINS(a.evidence, "(367) was not above the current batch 400");
    done(rep, rec, brec);

    /* The model alone never makes the rule fire: memory is busy here. */
    spec full = model;
    full.gpu_mem = 0.6;
    rep = report_of(record("room_full", &full), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "");
    done(rep, rec, brec);
}

static void test_advice_rules(void **state)
{
    (void)state;
    gk_recording *rec, *brec;
    gk_report *rep;
    /* balanced: GPU busy, moderate memory: nothing fires */
    spec calm = {.n = 20,
                 .cores = 0.5,
                 .core_max = 0.5,
                 .host_mem = 0.3,
                 .gpu = 1,
                 .gpu_util = 0.7,
                 .gpu_mem = 0.6};
    rep = report_of(record("calm", &calm), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "");
    done(rep, rec, brec);

    spec loading = calm;
    loading.gpu_util = 0.2;
    loading.core_max = 0.97;
    rep = report_of(record("loading", &loading), NULL, &rec, &brec);
    GK_ASSERT_CONTAINS(rules(rep), "data-loading-bound");
    assert_null(strstr(rules(rep), "gpu-underused")); /* explained by loading already */
    done(rep, rec, brec);

    spec wait = calm;
    wait.wait_ms = 200; /* 200 ms of every 500 ms */
    rep = report_of(record("wait", &wait), NULL, &rec, &brec);
    GK_ASSERT_CONTAINS(rules(rep), "data-loading-bound");
    gk_advice a;
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.evidence, "40%");
    done(rep, rec, brec);

    spec oom = calm;
    oom.gpu_mem = 0.95;
    oom.power = 250;
    oom.events = 0x40 | 0x4; /* HW thermal and SW power cap */
    rep = report_of(record("oom", &oom), NULL, &rec, &brec);
    GK_ASSERT_CONTAINS(rules(rep), "oom-risk");
    GK_ASSERT_CONTAINS(rules(rep), "thermal-throttling");
    GK_ASSERT_CONTAINS(rules(rep), "power-capped");
    done(rep, rec, brec);

    spec room = calm;
    room.gpu_mem = 0.3;
    room.gpu_util = 0.9;
    rep = report_of(record("room", &room), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "batch-headroom ");
    done(rep, rec, brec);

    spec idle = calm;
    idle.gpu_util = 0.1;
    rep = report_of(record("idle", &idle), NULL, &rec, &brec);
    GK_ASSERT_CONTAINS(rules(rep), "gpu-underused");
    done(rep, rec, brec);

    test_batch_headroom_estimates(&room);

    spec frag = calm;
    frag.reserved = 4e9;
    frag.in_use = 1e9;
    rep = report_of(record("frag", &frag), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "fragmentation ");
    done(rep, rec, brec);

    /* host only */
    spec single = {
        .n = 20, .cores = 1.0, .core_max = 1.0, .host_mem = 0.95, .malformed = 3, .signal = 9};
    rep = report_of(record("single", &single), NULL, &rec, &brec);
    GK_ASSERT_CONTAINS(rules(rep), "single-thread-bound");
    GK_ASSERT_CONTAINS(rules(rep), "host-memory-pressure");
    GK_ASSERT_CONTAINS(rules(rep), "oom-killed");
    GK_ASSERT_CONTAINS(rules(rep), "metric-lines-refused");
    done(rep, rec, brec);

    /* every host core busy with the command's work and no GPU recorded */
    spec saturated = {.n = 20, .cores = 2.0, .core_max = 1.0, .host_mem = 0.3, .host_cpu = 0.97};
    rep = report_of(record("saturated", &saturated), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "host-cpu-bound ");
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.evidence, "2.02 cores (median) of the 2 on this host");
    GK_ASSERT_CONTAINS(a.evidence, "97%");
    GK_ASSERT_CONTAINS(a.evidence, "no GPU was recorded");
    GK_ASSERT_CONTAINS(a.fix, "GPU");
    GK_ASSERT_CONTAINS(a.fix, "BLAS");
    done(rep, rec, brec);
    /* ... a program that reports its math library is not told to use one */
    spec with_blas = saturated;
    with_blas.math_lib = "openblas";
    with_blas.math_threads = 2;
    rep = report_of(record("with_blas", &with_blas), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "host-cpu-bound ");
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    GK_ASSERT_CONTAINS(a.fix, "already does its math with openblas (2 threads)");
    assert_null(strstr(a.fix, "BLAS,"));
    done(rep, rec, brec);
    spec one_blas_thread = single;
    one_blas_thread.math_lib = "openblas";
    one_blas_thread.math_threads = 1;
    rep = report_of(record("blas1", &one_blas_thread), NULL, &rec, &brec);
    GK_ASSERT_CONTAINS(rules(rep), "single-thread-bound");
    GK_ASSERT_OK(gk_report_advice(rep, 0, &a));
    assert_string_equal(a.rule, "single-thread-bound");
    GK_ASSERT_CONTAINS(a.fix, "openblas, runs one thread");
    GK_ASSERT_CONTAINS(a.fix, "OPENBLAS_NUM_THREADS");
    done(rep, rec, brec);
    /* ... silent when the host is busy with other work, or when a GPU was recorded */
    spec others = saturated;
    others.cores = 1.2;
    rep = report_of(record("others", &others), NULL, &rec, &brec);
    assert_null(strstr(rules(rep), "host-cpu-bound"));
    done(rep, rec, brec);
    spec with_gpu = saturated;
    with_gpu.gpu = 1;
    with_gpu.gpu_util = 0.7;
    with_gpu.gpu_mem = 0.6;
    rep = report_of(record("with_gpu", &with_gpu), NULL, &rec, &brec);
    assert_null(strstr(rules(rep), "host-cpu-bound"));
    done(rep, rec, brec);

    spec sleepy = {.n = 20, .cores = 0.01, .core_max = 0.2, .host_mem = 0.2};
    rep = report_of(record("sleepy", &sleepy), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "mostly-waiting ");
    done(rep, rec, brec);

    /* too little data: no rule fires on two samples */
    spec tiny = single;
    tiny.n = 2;
    tiny.malformed = 0;
    tiny.signal = 0;
    rep = report_of(record("tiny", &tiny), NULL, &rec, &brec);
    assert_string_equal(rules(rep), "");
    done(rep, rec, brec);
}

static const gk_comparison *find_cmp(const gk_report *rep, const char *name, gk_comparison *c)
{
    for (size_t i = 0; i < gk_report_comparison_count(rep); i++) {
        GK_ASSERT_OK(gk_report_comparison(rep, i, c));
        if (strcmp(c->name, name) == 0)
            return c;
    }
    return NULL;
}

static void test_baseline(void **state)
{
    (void)state;
    spec base = {
        .n = 24, .cores = 0.9, .core_max = 0.5, .host_mem = 0.3, .step_ms = 10, .throughput = 1000};
    char bpath[1024];
    snprintf(bpath, sizeof bpath, "%s", record("base", &base));
    gk_recording *rec, *brec;
    gk_comparison c;

    /* the same workload: unchanged */
    gk_report *rep = report_of(record("same", &base), bpath, &rec, &brec);
    assert_true(gk_report_comparison_count(rep) >= 3);
    assert_non_null(find_cmp(rep, "step_time", &c));
    assert_int_equal(c.verdict, GK_CHANGE_UNCHANGED);
    assert_string_equal(c.direction, "time-like");
    assert_true(c.noise_pct > 1 && c.noise_pct < 5);
    assert_non_null(find_cmp(rep, "samples_per_second", &c));
    assert_string_equal(c.direction, "throughput-like");
    assert_int_equal(c.verdict, GK_CHANGE_UNCHANGED);
    assert_int_equal(gk_report_regressions_over(rep, 0), 0);
    done(rep, rec, brec);

    /* slowed down: step time x1.5, throughput / 1.5 */
    spec slow = base;
    slow.step_ms = 15;
    slow.throughput = 1000 / 1.5;
    rep = report_of(record("slow", &slow), bpath, &rec, &brec);
    GK_ASSERT_OK(gk_report_comparison(rep, 0, &c));
    assert_int_equal(c.verdict, GK_CHANGE_REGRESSION); /* regressions come first */
    assert_non_null(find_cmp(rep, "step_time", &c));
    assert_int_equal(c.verdict, GK_CHANGE_REGRESSION);
    assert_true(fabs(c.p50_change_pct - 50) < 1e-6);
    assert_non_null(find_cmp(rep, "samples_per_second", &c));
    assert_int_equal(c.verdict, GK_CHANGE_REGRESSION);
    assert_true(c.p50_change_pct < -30);
    assert_non_null(find_cmp(rep, "gpukit_process_tree_cpu_cores", &c));
    assert_string_equal(c.direction, "neutral");
    assert_int_equal(gk_report_regressions_over(rep, 5), 2);
    assert_int_equal(gk_report_regressions_over(rep, 60), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    GK_ASSERT_OK(gk_report_write_text(rep, f));
    fclose(f);
    GK_ASSERT_CONTAINS(text, "2 regressions, 0 improvements");
    GK_ASSERT_CONTAINS(text, "regression  step_time (time-like): median 10");
    free(text);
    done(rep, rec, brec);

    /* faster: improvements */
    spec fast = base;
    fast.step_ms = 5;
    fast.throughput = 2000;
    rep = report_of(record("fast", &fast), bpath, &rec, &brec);
    assert_non_null(find_cmp(rep, "step_time", &c));
    assert_int_equal(c.verdict, GK_CHANGE_IMPROVEMENT);
    assert_non_null(find_cmp(rep, "samples_per_second", &c));
    assert_int_equal(c.verdict, GK_CHANGE_IMPROVEMENT);
    assert_int_equal(gk_report_regressions_over(rep, 0), 0);
    done(rep, rec, brec);
}

/* Opens NAME.jsonl in a fresh folder of the test: the command argv (NULL-terminated) on `host`,
 * 8 cores, samples every 0.5 s, GPU metrics on when `gpu`. *path (static storage until the next
 * call) names it. */
static gk_recorder *open_recording(const char *name, const char *const *argv, const char *host,
                                   int gpu, const char **path)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s.jsonl", gk_test_tmpdir(name), name);
    int argc = 0;
    while (argv[argc])
        argc++;
    gk_recording_meta m = {.size = sizeof m,
                           .argc = argc,
                           .argv = argv,
                           .host = host,
                           .start_unix = 1.7e9,
                           .interval_s = 0.5,
                           .cores = 8,
                           .gpu_enabled = gpu};
    gk_recorder *r;
    GK_ASSERT_OK(gk_recorder_open(buf, &m, &r));
    *path = buf;
    return r;
}

/* Ends a recording that lasted `seconds` (a sample every 0.5 s). */
static void close_recording(gk_recorder *r, double seconds)
{
    gk_recording_end e = {
        .size = sizeof e, .t = seconds, .duration_s = seconds, .samples = (uint64_t)(2 * seconds)};
    GK_ASSERT_OK(gk_recorder_close(r, &e));
}

/* The report rendered as HTML into a string (free it). */
static char *html_of(const gk_report *rep)
{
    char *html = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&html, &len);
    assert_non_null(f);
    GK_ASSERT_OK(gk_report_write_html(rep, f));
    fclose(f);
    return html;
}

static size_t count_of(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_html(void **state)
{
    (void)state;
    spec sp = {.n = 3000,
               .cores = 1,
               .core_max = 0.9,
               .host_mem = 0.3,
               .gpu = 1,
               .gpu_util = 0.5,
               .gpu_mem = 0.5,
               .power = 80,
               .step_ms = 12,
               .throughput = 10};
    gk_recording *rec, *brec;
    gk_report *rep = report_of(record("html", &sp), NULL, &rec, &brec);
    char *html = html_of(rep);
    size_t len = strlen(html);
    GK_ASSERT_CONTAINS(html, "<!DOCTYPE html>");
    GK_ASSERT_CONTAINS(html, "<table id=\"summary\">");
    GK_ASSERT_CONTAINS(html, "@media print");
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http://www.w3.org/2000/svg\" href")); /* no external resource */
    /* Every series is on a chart or in a table of single values; the jittered ones are charts,
     * the constant ones (GPU power, busiest core, host memory, ...) values. */
    gk__layout l;
    GK_ASSERT_OK(gk__report_layout(rep, &l));
    assert_int_equal(l.nmembers + l.nvalues, gk_recording_series_count(rec));
    assert_int_equal(count_of(html, "<svg "), l.ncharts);
    assert_int_equal(count_of(html, "<g class=\"series\""), l.nmembers);
    GK_ASSERT_CONTAINS(html, "<g class=\"series\" data-series=\"gpukit_process_tree_cpu_cores\">");
    GK_ASSERT_CONTAINS(html, "<g class=\"series\" data-series=\"step_time\">");
    GK_ASSERT_CONTAINS(html, "<tr><td>gpukit_gpu_power_watts{gpu=&quot;0&quot;}</td><td>80.0 W</td>"
                             "<td>3000, all equal</td></tr>");
    assert_null(strstr(html, "data-series=\"gpukit_gpu_power_watts"));
    gk__layout_free(&l);
    assert_true(len < 2000000); /* long series are bucketed */
    /* The same report renders to the same bytes. */
    char *again = html_of(rep);
    assert_string_equal(html, again);
    free(again);
    free(html);
    done(rep, rec, brec);
}

/* --- the HTML report's organisation ------------------------------------------------------ */

typedef struct named {
    const char *name;
    double v;
} named;

/* A run with a series of every part, 40 samples every 0.5 s. */
static const char *record_parts(const char *name)
{
    static const char *const argv[] = {"python3", "train.py", NULL};
    const char *path;
    gk_recorder *r = open_recording(name, argv, "h", 1, &path);
    for (int i = 0; i < 40; i++) {
        double t = 0.5 * (i + 1), j = 0.01 * (i % 5);
        named samples[] = {
            {"gpukit_gpu_utilization_ratio{gpu=\"0\"}", 0.5 + j},
            {"gpukit_gpu_utilization_ratio{gpu=\"1\"}", 0.3 + j},
            {"gpukit_gpu_memory_used_bytes{gpu=\"0\"}", 1e9 * (1 + j)},
            {"gpukit_gpu_temperature_celsius{gpu=\"0\"}", 60},
            {"gpukit_gpu_clock_hertz{gpu=\"0\",clock=\"sm\"}", 1.4e9 + 1e7 * j},
            {"gpukit_gpu_clock_hertz{gpu=\"0\",clock=\"mem\"}", 1.2e9 + 1e7 * j},
            {"gpukit_cpu_busy_ratio", 0.4 + j},
            {"gpukit_process_tree_cpu_cores", 1.5 + j},
            {"gpukit_rank_cpu_cores{rank=\"0\"}", 0.7 + j},
            {"gpukit_rank_cpu_cores{rank=\"1\"}", 0.8 + j},
        };
        const char *names[16];
        double v[16];
        size_t n = sizeof samples / sizeof samples[0];
        for (size_t k = 0; k < n; k++) {
            names[k] = samples[k].name;
            v[k] = samples[k].v;
        }
        GK_ASSERT_OK(gk_recorder_sample(r, t, n, names, v));
        /* two pools (in use varies, reserved holds), and a limit that never moves */
        for (int d = 0; d < 2; d++) {
            char tags[64];
            snprintf(tags, sizeof tags, "device:cuda:%d,pool:default", d);
            GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_alloc_in_use_bytes", "g",
                                            1e9 * (1 + d) * (1 + j), tags));
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_alloc_reserved_bytes", "g", 4e9 * (1 + d), tags));
            GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_alloc_limit_bytes", "g", 3e10, tags));
        }
        const char *ld = "device:host,loader:train";
        GK_ASSERT_OK(
            gk_recorder_metric(r, t, "gpukit_loader_wait_seconds_total", "c", 0.01 + j, ld));
        GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_loader_depth", "g", 4, ld));
        /* the batch finder's answer, repeated unchanged */
        GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_batch_size", "g", 64, "device:cuda:0"));
        GK_ASSERT_OK(
            gk_recorder_metric(r, t, "gpukit_batch_fixed_bytes", "g", 1 << 30, "device:cuda:0"));
        /* the program: a loss over three decades, per-rank step times, two phases */
        GK_ASSERT_OK(
            gk_recorder_metric(r, t, "train_loss", "g", 1.4 * pow(0.0002 / 1.4, i / 39.0), NULL));
        for (int k = 0; k < 2; k++) {
            char tags[64];
            snprintf(tags, sizeof tags, "rank:%d,local_rank:%d", k, k);
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "train_step_time", "ms", 100 + 10 * k + i % 3, tags));
        }
        GK_ASSERT_OK(gk_recorder_metric(r, t, "samples_per_second", "g", 900 + i, "phase:train"));
        GK_ASSERT_OK(gk_recorder_metric(r, t, "samples_per_second", "g", 2000 + i, "phase:eval"));
        if (i == 0)
            GK_ASSERT_OK(gk_recorder_metric(r, t, "epochs", "g", 3, NULL));
    }
    close_recording(r, 20);
    return path;
}

static size_t index_of(const gk_report *rep, const char *name)
{
    const gk__series_summary *sm = gk__report_find(rep, name);
    if (!sm)
        fail_msg("no series %s", name);
    return (size_t)(sm - rep->sums);
}

/* The chart that draws series `name`, or NULL. */
static const gk__chart *chart_of(const gk_report *rep, const gk__layout *l, const char *name)
{
    size_t idx = index_of(rep, name);
    for (size_t c = 0; c < l->ncharts; c++) {
        for (size_t m = 0; m < l->charts[c].n; m++) {
            if (l->members[l->charts[c].first + m] == idx)
                return &l->charts[c];
        }
    }
    return NULL;
}

static int is_value(const gk_report *rep, const gk__layout *l, const char *name)
{
    size_t idx = index_of(rep, name);
    for (size_t i = 0; i < l->nvalues; i++) {
        if (l->values[i] == idx)
            return 1;
    }
    return 0;
}

static const char *caption(const gk_report *rep, const gk__layout *l, const gk__chart *c)
{
    static char buf[512];
    gk__sbuf b = {0};
    gk__chart_caption(rep, l, c, &b);
    snprintf(buf, sizeof buf, "%s", b.s ? b.s : "");
    gk__sbuf_free(&b);
    return buf;
}

static const char *legend_of(const gk_report *rep, const gk__layout *l, const gk__chart *c,
                             size_t m)
{
    static char buf[512];
    gk__sbuf b = {0};
    gk__chart_legend(rep, l, c, m, &b);
    snprintf(buf, sizeof buf, "%s", b.s ? b.s : "");
    gk__sbuf_free(&b);
    return buf;
}

static void test_html_parts_and_combined_charts(void **state)
{
    (void)state;
    gk_recording *rec, *brec;
    gk_report *rep = report_of(record_parts("parts"), NULL, &rec, &brec);
    gk__layout l;
    GK_ASSERT_OK(gk__report_layout(rep, &l));
    /* Parts by name; charts in part order. */
    static const struct {
        const char *name;
        gk__part part;
    } parts[] = {
        {"gpukit_gpu_power_watts{gpu=\"0\"}", GK__PART_GPU},
        {"gpukit_rank_gpu_memory_bytes{rank=\"1\",gpu=\"0\"}", GK__PART_GPU},
        {"gpukit_rank_resident_memory_bytes{rank=\"0\"}", GK__PART_HOST},
        {"gpukit_memory_used_ratio", GK__PART_HOST},
        {"gpukit_load1", GK__PART_HOST},
        {"gpukit_alloc_ooms_total{device:cuda:0,pool:default}", GK__PART_POOL},
        {"gpukit_loader_ring_ready{device:host,loader:train}", GK__PART_LOADER},
        {"gpukit_batch_margin_ratio", GK__PART_BATCH},
        {"gpukit_math_library{library:openblas}", GK__PART_PROGRAM},
        {"train_step_time{rank:0,local_rank:0}", GK__PART_PROGRAM},
    };
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        if (gk__series_part(parts[k].name) != parts[k].part)
            fail_msg("%s: part %s, expected %s", parts[k].name,
                     gk__part_id(gk__series_part(parts[k].name)), gk__part_id(parts[k].part));
    }
    for (size_t c = 1; c < l.ncharts; c++)
        assert_true(l.charts[c - 1].part <= l.charts[c].part);

    /* The same GPU metric: one chart, a line per GPU. */
    const gk__chart *c = chart_of(rep, &l, "gpukit_gpu_utilization_ratio{gpu=\"0\"}");
    assert_non_null(c);
    assert_ptr_equal(c, chart_of(rep, &l, "gpukit_gpu_utilization_ratio{gpu=\"1\"}"));
    assert_int_equal(c->n, 2);
    assert_int_equal(c->part, GK__PART_GPU);
    assert_string_equal(caption(rep, &l, c), "gpukit_gpu_utilization_ratio per GPU");
    assert_string_equal(legend_of(rep, &l, c, 0), "GPU 0");
    assert_string_equal(legend_of(rep, &l, c, 1), "GPU 1");
    /* ... but other labels keep their own chart: the SM and memory clocks. */
    assert_true(chart_of(rep, &l, "gpukit_gpu_clock_hertz{gpu=\"0\",clock=\"sm\"}") !=
                chart_of(rep, &l, "gpukit_gpu_clock_hertz{gpu=\"0\",clock=\"mem\"}"));

    /* Each pool: in use against reserved, the same labels on one chart. */
    const char *in0 = "gpukit_alloc_in_use_bytes{device:cuda:0,pool:default}";
    c = chart_of(rep, &l, in0);
    assert_non_null(c);
    assert_true(c->pool && c->n == 2 && c->part == GK__PART_POOL);
    assert_ptr_equal(c,
                     chart_of(rep, &l, "gpukit_alloc_reserved_bytes{device:cuda:0,pool:default}"));
    assert_string_equal(legend_of(rep, &l, c, 0), "in use");
    assert_string_equal(legend_of(rep, &l, c, 1), "reserved");
    assert_string_equal(caption(rep, &l, c),
                        "pool {device:cuda:0,pool:default} bytes: in use against reserved");
    const gk__chart *c1 =
        chart_of(rep, &l, "gpukit_alloc_in_use_bytes{device:cuda:1,pool:default}");
    assert_true(c1 && c1 != c && c1->n == 2);

    /* Per-rank step times of one timer: one chart, a line per rank. */
    c = chart_of(rep, &l, "train_step_time{rank:0,local_rank:0}");
    assert_non_null(c);
    assert_ptr_equal(c, chart_of(rep, &l, "train_step_time{rank:1,local_rank:1}"));
    assert_string_equal(caption(rep, &l, c), "train_step_time per rank");
    assert_string_equal(legend_of(rep, &l, c, 0), "rank 0");
    assert_string_equal(legend_of(rep, &l, c, 1), "rank 1");
    /* ... and the per-rank series of the host. */
    c = chart_of(rep, &l, "gpukit_rank_cpu_cores{rank=\"1\"}");
    assert_non_null(c);
    assert_ptr_equal(c, chart_of(rep, &l, "gpukit_rank_cpu_cores{rank=\"0\"}"));
    assert_int_equal(c->part, GK__PART_HOST);
    /* Tags that are not an instance (a phase) keep their own chart. */
    assert_true(chart_of(rep, &l, "samples_per_second{phase:train}") !=
                chart_of(rep, &l, "samples_per_second{phase:eval}"));
    assert_string_equal(caption(rep, &l, chart_of(rep, &l, "samples_per_second{phase:eval}")),
                        "samples_per_second{phase:eval}");

    /* Single values: a table row each, never a chart. */
    const char *single[] = {"gpukit_gpu_temperature_celsius{gpu=\"0\"}",
                            "gpukit_alloc_limit_bytes{device:cuda:0,pool:default}",
                            "gpukit_loader_depth{device:host,loader:train}",
                            "gpukit_batch_size{device:cuda:0}",
                            "gpukit_batch_fixed_bytes{device:cuda:0}",
                            "epochs"};
    for (size_t k = 0; k < sizeof single / sizeof single[0]; k++) {
        assert_true(is_value(rep, &l, single[k]));
        assert_null(chart_of(rep, &l, single[k]));
    }
    assert_false(is_value(rep, &l, in0));
    assert_int_equal(l.nmembers + l.nvalues, gk_recording_series_count(rec));

    /* The page: the summary, advice and contents first, then the parts in order, each with its
     * heading, then the statistics. */
    char *html = html_of(rep);
    const char *ids[] = {"id=\"overview\"",   "id=\"advice\"",       "id=\"part-gpu\"",
                         "id=\"part-host\"",  "id=\"part-pool\"",    "id=\"part-loader\"",
                         "id=\"part-batch\"", "id=\"part-program\"", "id=\"statistics\""};
    const char *at = html;
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        const char *p = strstr(html, ids[k]);
        if (!p || p < at)
            fail_msg("%s missing or out of order", ids[k]);
        at = p;
    }
    assert_true(strstr(html, "id=\"advice\"") < strstr(html, "<figure"));
    GK_ASSERT_CONTAINS(html, "<h2>Batch finder</h2>\n<table class=\"values\" id=\"values-batch\">");
    GK_ASSERT_CONTAINS(html, "<tr><td>gpukit_batch_size{device:cuda:0}</td><td>64</td>"
                             "<td>40, all equal</td></tr>");
    GK_ASSERT_CONTAINS(html, "<td>gpukit_batch_fixed_bytes{device:cuda:0}</td><td>1.00 GiB</td>");
    GK_ASSERT_CONTAINS(html, "<tr><td>epochs</td><td>3</td><td>1</td></tr>");
    assert_null(strstr(html, "data-series=\"gpukit_batch_"));
    /* the batch finder's part holds its values and no chart */
    const char *batch = strstr(html, "id=\"part-batch\"");
    char *part = strndup(batch, (size_t)(strstr(batch, "</section>") - batch));
    assert_null(strstr(part, "<svg"));
    free(part);
    /* legends on the combined charts; every chart has a title and a description */
    GK_ASSERT_CONTAINS(html, ">GPU 1</text>");
    GK_ASSERT_CONTAINS(html, ">reserved</text>");
    assert_int_equal(count_of(html, "<title id=\"chart-"), l.ncharts);
    assert_int_equal(count_of(html, "<desc id=\"chart-"), l.ncharts);
    free(html);
    gk__layout_free(&l);
    done(rep, rec, brec);
}

/* One recording of `n` gauges named names[k] with values v(k, i) for 40 samples. */
static const char *record_gauges(const char *name, size_t n, const char *const *names,
                                 double (*v)(size_t k, int i))
{
    static const char *const argv[] = {"x", NULL};
    const char *path;
    gk_recorder *r = open_recording(name, argv, "h", 0, &path);
    for (int i = 0; i < 40; i++) {
        for (size_t k = 0; k < n; k++) {
            const char *kind = strstr(names[k], "_total") ? "c" : "g";
            GK_ASSERT_OK(gk_recorder_metric(r, 0.5 * (i + 1), names[k], kind, v(k, i), NULL));
        }
    }
    close_recording(r, 20);
    return path;
}

static const char *const scale_names[] = {
    "loss",        /* 1.4 falling to 0.0002: log */
    "loss_short",  /* 1.4 falling to 0.5: linear */
    "edge",        /* exactly 100x: linear */
    "over",        /* 100.5x: log */
    "share_ratio", /* 0.001 to 0.9, a share: linear */
    "work_total",  /* a counter whose increments span decades: linear (a running total) */
    "spiky",       /* zeros, and positive values over three decades: log */
    "level",       /* one value repeated */
};

static double scale_value(size_t k, int i)
{
    double f = i / 39.0;
    switch (k) {
    case 0:
        return 1.4 * pow(0.0002 / 1.4, f);
    case 1:
        return 1.4 - 0.9 * f;
    case 2:
        return i == 0 ? 100 : 1;
    case 3:
        return i == 0 ? 100.5 : 1;
    case 4:
        return 0.001 + 0.899 * f;
    case 5:
        return i % 2 ? 1 : 1000;
    case 6:
        return i % 4 == 0 ? 0 : pow(10, 1.5 * (i % 4));
    default:
        return 7;
    }
}

static void test_html_log_scale(void **state)
{
    (void)state;
    size_t n = sizeof scale_names / sizeof scale_names[0];
    gk_recording *rec, *brec;
    gk_report *rep =
        report_of(record_gauges("scales", n, scale_names, scale_value), NULL, &rec, &brec);
    const int want[] = {1, 0, 0, 1, 0, 0, 1, 0};
    for (size_t k = 0; k < n; k++) {
        size_t idx = index_of(rep, scale_names[k]);
        if (gk__chart_log_scale(rep, &idx, 1) != want[k])
            fail_msg("%s: log scale %d, expected %d", scale_names[k], !want[k], want[k]);
    }
    /* A chart is log-scaled when its lines together span the decades. */
    size_t pair[] = {index_of(rep, "loss_short"), index_of(rep, "loss")};
    assert_true(gk__chart_log_scale(rep, pair, 2));

    gk__layout l;
    GK_ASSERT_OK(gk__report_layout(rep, &l));
    const gk__chart *c = chart_of(rep, &l, "loss");
    assert_true(c && c->log_scale && c->n == 1);
    assert_null(chart_of(rep, &l, "level"));
    gk__layout_free(&l);

    /* On the page: said in the caption and on the chart, labelled decades 1e-4 .. 1 (and 10),
     * the description names the range. */
    char *html = html_of(rep);
    const char *fig = strstr(html, "data-series=\"loss\"");
    assert_non_null(fig);
    const char *start = html;
    for (const char *p = html; (p = strstr(p, "<figure")) && p < fig; p++)
        start = p;
    char *chart = strndup(start, (size_t)(strstr(start, "</figure>") - start));
    GK_ASSERT_CONTAINS(chart, "data-scale=\"log\"");
    GK_ASSERT_CONTAINS(chart, "<span class=\"scale\">log scale</span>");
    GK_ASSERT_CONTAINS(chart, "class=\"scale\">log scale</text>");
    GK_ASSERT_CONTAINS(chart, "Log scale from 1e-4 to 1e1");
    const char *decades[] = {">10</text>",   ">1</text>",     ">0.1</text>",
                             ">0.01</text>", ">0.001</text>", ">0.0001</text>"};
    for (size_t k = 0; k < sizeof decades / sizeof decades[0]; k++)
        GK_ASSERT_CONTAINS(chart, decades[k]);
    free(chart);
    /* values of zero sit in their own band at the bottom of a log chart */
    GK_ASSERT_CONTAINS(html, "&#8804; 0</text>");
    assert_int_equal(count_of(html, "data-scale=\"log\""), 3);
    free(html);
    done(rep, rec, brec);
}

static void test_html_single_values(void **state)
{
    (void)state;
    gk_recording *rec, *brec;
    gk_report *rep = report_of(record_parts("singles"), NULL, &rec, &brec);
    const gk__series_summary *sm = gk__report_find(rep, "epochs"); /* one sample */
    assert_true(sm && gk__series_single_valued(sm));
    sm = gk__report_find(rep, "gpukit_batch_size{device:cuda:0}"); /* 40 equal samples */
    assert_true(sm && sm->st.count == 40 && gk__series_single_valued(sm));
    sm = gk__report_find(rep, "train_loss");
    assert_true(sm && !gk__series_single_valued(sm));
    sm = gk__report_find(rep, "gpukit_loader_wait_seconds_total{device:host,loader:train}");
    assert_true(sm && !gk__series_single_valued(sm)); /* a counter that grows */
    /* A counter is single-valued when nothing is added after its first increment. */
    gk__series_summary counter = *sm;
    double inc[] = {5, 0, 0}, t[] = {1, 2, 3};
    counter.s.v = inc;
    counter.s.t = t;
    counter.s.n = 3;
    assert_true(gk__series_single_valued(&counter));
    inc[2] = 1;
    assert_false(gk__series_single_valued(&counter));
    done(rep, rec, brec);

    /* More instances than a chart holds continue on another chart. */
    char names[10][64];
    const char *np[10];
    double v[10];
    for (int k = 0; k < 10; k++) {
        snprintf(names[k], sizeof names[k], "gpukit_gpu_utilization_ratio{gpu=\"%d\"}", k);
        np[k] = names[k];
    }
    static const char *const argv[] = {"x", NULL};
    const char *path;
    gk_recorder *r = open_recording("gpus", argv, "h", 1, &path);
    for (int i = 0; i < 20; i++) {
        for (int k = 0; k < 10; k++)
            v[k] = 0.05 * k + 0.01 * (i % 3);
        GK_ASSERT_OK(gk_recorder_sample(r, 0.5 * (i + 1), 10, np, v));
    }
    close_recording(r, 10);
    rep = report_of(path, NULL, &rec, &brec);
    gk__layout l;
    GK_ASSERT_OK(gk__report_layout(rep, &l));
    assert_int_equal(l.ncharts, 2);
    assert_int_equal(l.charts[0].n, GK__CHART_MAX_LINES);
    assert_int_equal(l.charts[1].n, 10 - GK__CHART_MAX_LINES);
    /* GPUs in numeric order: 0..7, then 8 and 9 */
    assert_string_equal(legend_of(rep, &l, &l.charts[0], 2), "GPU 2");
    assert_string_equal(legend_of(rep, &l, &l.charts[1], 0), "GPU 8");
    assert_string_equal(caption(rep, &l, &l.charts[1]),
                        "gpukit_gpu_utilization_ratio per GPU (chart 2 of 2)");
    gk__layout_free(&l);
    done(rep, rec, brec);
}

/* Names and labels come from the program: every one reaches the page escaped. */
static void test_html_escapes_names(void **state)
{
    (void)state;
    static const char *const argv[] = {"<b>run</b>", "&x", "bell\a\x01", "\xff\xfe", NULL};
    const char *path;
    gk_recorder *r = open_recording("hostile", argv, "h\"'<i>", 0, &path);
    for (int i = 0; i < 10; i++) {
        GK_ASSERT_OK(gk_recorder_metric(r, i + 1.0, "x<script>\"'&", "g", i, "rank:<b>"));
        GK_ASSERT_OK(gk_recorder_metric(r, i + 1.0, "x<script>\"'&", "g", 2 * i, "rank:</svg>"));
        GK_ASSERT_OK(gk_recorder_metric(r, i + 1.0, "y", "g", 1, "tag:<img src=x>"));
    }
    close_recording(r, 10);
    gk_recording *rec, *brec;
    gk_report *rep = report_of(path, NULL, &rec, &brec);
    char *html = html_of(rep);
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "<b>"));
    assert_null(strstr(html, "<i>"));
    assert_null(strstr(html, "<img"));
    assert_int_equal(count_of(html, "</svg>"), 1); /* the one chart's own */
    GK_ASSERT_CONTAINS(html, "x&lt;script&gt;&quot;&#39;&amp;{rank:&lt;b&gt;}");
    GK_ASSERT_CONTAINS(html, ">rank &lt;/svg&gt;</text>");
    GK_ASSERT_CONTAINS(html, "<td>y{tag:&lt;img src=x&gt;}</td>");
    /* control characters are shown, not sent; bytes that are not UTF-8 become U+FFFD */
    GK_ASSERT_CONTAINS(html, "bell\\x07\\x01");
    assert_null(strchr(html, '\a'));
    assert_null(strchr(html, '\xff'));
    free(html);
    done(rep, rec, brec);
}

/* A job of `nranks` ranks, each sending its step time and its loader's wait with its rank tag;
 * `slow` (>= 0) steps 1.6x slower, `waiting` (>= 0) waits for its loader half the run. */
static const char *record_ranks(const char *name, int nranks, int slow, int waiting)
{
    static const char *const argv[] = {"launch", "--ranks", NULL};
    const char *path;
    gk_recorder *r = open_recording(name, argv, "h", 0, &path);
    for (int i = 0; i < 40; i++) {
        double t = 0.5 * (i + 1);
        for (int k = 0; k < nranks; k++) {
            char tags[64];
            snprintf(tags, sizeof tags, "rank:%d,local_rank:%d", k, k);
            double step = (k == slow ? 160 : 100) + (i % 3);
            GK_ASSERT_OK(gk_recorder_metric(r, t, "train_step_time", "ms", step, tags));
            snprintf(tags, sizeof tags, "device:cuda:%d,loader:train,rank:%d", k, k);
            GK_ASSERT_OK(gk_recorder_metric(r, t, "gpukit_loader_wait_seconds_total", "c",
                                            k == waiting ? 0.25 : 0.01, tags));
            snprintf(tags, sizeof tags, "device:cuda:%d,pool:default,rank:%d", k, k);
            GK_ASSERT_OK(
                gk_recorder_metric(r, t, "gpukit_alloc_reserved_bytes", "g", 1e9 * (k + 1), tags));
        }
        /* The monitor's per-rank series: cores for every rank, NVML's GPU memory for rank 0. */
        char names[9][64];
        const char *np[9];
        double v[9];
        size_t nv = 0;
        for (int k = 0; k < nranks && k < 8; k++) {
            snprintf(names[nv], sizeof names[nv], "gpukit_rank_cpu_cores{rank=\"%d\"}", k);
            np[nv] = names[nv];
            v[nv++] = 0.9 + 0.1 * k;
        }
        snprintf(names[nv], sizeof names[nv], "gpukit_rank_gpu_memory_bytes{rank=\"0\",gpu=\"0\"}");
        np[nv] = names[nv];
        v[nv++] = 5e9;
        GK_ASSERT_OK(gk_recorder_sample(r, t, nv, np, v));
    }
    close_recording(r, 20);
    return path;
}

static const gk_advice *advice_of(const gk_report *rep, const char *rule, gk_advice *a)
{
    for (size_t i = 0; i < gk_report_advice_count(rep); i++) {
        GK_ASSERT_OK(gk_report_advice(rep, i, a));
        if (strcmp(a->rule, rule) == 0)
            return a;
    }
    return NULL;
}

static void test_ranks_and_straggler(void **state)
{
    (void)state;
    gk_recording *rec, *brec;
    gk_advice a;
    /* Balanced: a per-rank table, no straggler. */
    gk_report *rep = report_of(record_ranks("ranks_balanced", 4, -1, -1), NULL, &rec, &brec);
    assert_int_equal(gk_report_rank_count(rep), 4);
    gk_rank_summary row;
    GK_ASSERT_OK(gk_report_rank(rep, 2, &row));
    assert_int_equal(row.rank, 2);
    assert_int_equal(row.gpu, 2);
    assert_true(row.step_p50_ms >= 100 && row.step_p50_ms <= 102);
    assert_true(fabs(row.loader_wait_share - 0.02) < 1e-9); /* 40 x 0.01 s over 20 s */
    assert_true(row.gpu_memory_peak_bytes == 3e9); /* its pool's: NVML had no rank 2 process */
    assert_true(fabs(row.cpu_cores_p50 - 1.1) < 1e-9);
    GK_ASSERT_OK(gk_report_rank(rep, 0, &row));
    assert_true(row.gpu_memory_peak_bytes == 5e9); /* NVML's figure before the pool's */
    assert_null(advice_of(rep, "straggler", &a));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    GK_ASSERT_OK(gk_report_write_text(rep, f));
    fclose(f);
    GK_ASSERT_CONTAINS(text, "ranks (step: train_step_time, median;");
    free(text);
    done(rep, rec, brec);

    /* Rank 2 steps 1.6x slower: the straggler names it and the step time. */
    rep = report_of(record_ranks("ranks_slow", 4, 2, -1), NULL, &rec, &brec);
    assert_non_null(advice_of(rep, "straggler", &a));
    GK_ASSERT_CONTAINS(a.title, "Rank 2 is a straggler");
    GK_ASSERT_CONTAINS(a.evidence, "rank 2's median step (train_step_time) took 161.0 ms against "
                                   "101.0 ms");
    text = NULL;
    f = open_memstream(&text, &len);
    GK_ASSERT_OK(gk_report_write_html(rep, f));
    fclose(f);
    GK_ASSERT_CONTAINS(text, "<tr class=\"regression\"><td>2</td>");
    free(text);
    done(rep, rec, brec);

    /* Rank 1 waits for its loader half the time, the others 2%: a straggler by its loader, and
     * the data-loading rule speaks of that rank. */
    rep = report_of(record_ranks("ranks_waiting", 3, -1, 1), NULL, &rec, &brec);
    assert_non_null(advice_of(rep, "straggler", &a));
    GK_ASSERT_CONTAINS(a.evidence, "rank 1 waited for its loader 50% of the run against 2%");
    assert_non_null(advice_of(rep, "data-loading-bound", &a));
    GK_ASSERT_CONTAINS(a.evidence, "of rank 1");
    done(rep, rec, brec);

    /* One rank: no table. */
    rep = report_of(record_ranks("ranks_one", 1, -1, -1), NULL, &rec, &brec);
    assert_int_equal(gk_report_rank_count(rep), 1);
    assert_null(advice_of(rep, "straggler", &a));
    done(rep, rec, brec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_energy_threshold),
        cmocka_unit_test(test_advice_rules),
        cmocka_unit_test(test_baseline),
        cmocka_unit_test(test_html),
        cmocka_unit_test(test_html_parts_and_combined_charts),
        cmocka_unit_test(test_html_log_scale),
        cmocka_unit_test(test_html_single_values),
        cmocka_unit_test(test_html_escapes_names),
        cmocka_unit_test(test_ranks_and_straggler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
