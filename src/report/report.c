/* Building a report from a recording: statistics per series, time above thresholds, energy,
 * then the advice rules (advice.c) and the baseline comparison (compare.c). Also the shared
 * formatting of values for people, chosen by the unit suffix of the series name. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "report/report_int.h"

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Thresholds for "time above": the series name (its labels aside) and the level. */
static const struct {
    const char *base;
    double level;
} thresholds[] = {
    {"gpukit_cpu_busy_ratio", 0.9},        {"gpukit_cpu_busiest_core_ratio", 0.9},
    {"gpukit_memory_used_ratio", 0.9},     {"gpukit_gpu_utilization_ratio", 0.9},
    {"gpukit_gpu_memory_used_ratio", 0.9}, {"gpukit_gpu_temperature_celsius", 80},
};

/* Whether series `name` is `base` or `base{...}`. */
static int is_series(const char *name, const char *base)
{
    size_t n = strlen(base);
    return strncmp(name, base, n) == 0 && (name[n] == '\0' || name[n] == '{');
}

void gk__fmt_bytes(char *buf, size_t len, double b)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    double v = b;
    while (fabs(v) >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%.0f B", v);
    else
        snprintf(buf, len, "%.*f %s", fabs(v) < 10 ? 2 : 1, v, units[u]);
}

void gk__fmt_value(char *buf, size_t len, const char *name, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, len, "-");
        return;
    }
    /* A tagged metric "name{tags}": the unit is in the part before the tags. */
    char base[256];
    snprintf(base, sizeof base, "%s", name);
    char *brace = strchr(base, '{');
    if (brace)
        *brace = '\0';
    if (ends_with(base, "_bytes"))
        gk__fmt_bytes(buf, len, v);
    else if (ends_with(base, "_bytes_per_second")) {
        gk__fmt_bytes(buf, len, v);
        size_t n = strlen(buf);
        snprintf(buf + n, len > n ? len - n : 0, "/s");
    } else if (ends_with(base, "_ratio"))
        snprintf(buf, len, "%.1f%%", v * 100);
    else if (ends_with(base, "_seconds") || ends_with(base, "_s"))
        snprintf(buf, len, v < 1 ? "%.3g s" : "%.4g s", v);
    else if (ends_with(base, "_celsius"))
        snprintf(buf, len, "%.0f C", v);
    else if (ends_with(base, "_watts"))
        snprintf(buf, len, "%.1f W", v);
    else if (ends_with(base, "_joules"))
        snprintf(buf, len, "%.4g J", v);
    else if (ends_with(base, "_hz") || ends_with(base, "_hertz"))
        snprintf(buf, len, "%.0f MHz", v / 1e6);
    else
        snprintf(buf, len, "%.4g", v);
}

/* Time-like (lower is better), throughput-like (higher is better) or neutral, by name and
 * kind; docs/advice.md lists the conventions. Sampled series are neutral. */
int gk__series_direction(const char *name, gk_series_kind kind)
{
    if (kind == GK_SERIES_SAMPLE)
        return 0;
    char low[256];
    size_t i;
    for (i = 0; name[i] && name[i] != '{' && i < sizeof low - 1; i++)
        low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    low[i] = '\0';
    static const char *const worse_words[] = {"error", "fail",    "miss",  "drop",   "retr",
                                              "oom",   "overrun", "stall", "timeout"};
    for (size_t k = 0; k < sizeof worse_words / sizeof worse_words[0]; k++) {
        if (strstr(low, worse_words[k]))
            return -1;
    }
    static const char *const better_words[] = {"per_second", "per_sec", "_per_s",    "throughput",
                                               "qps",        "rps",     "tps",       "fps",
                                               "_rate",      "speed",   "bandwidth", "per_s"};
    for (size_t k = 0; k < sizeof better_words / sizeof better_words[0]; k++) {
        if (strstr(low, better_words[k]))
            return 1;
    }
    if (kind == GK_SERIES_TIMER)
        return -1;
    static const char *const time_suffixes[] = {"_seconds", "_ms", "_us", "_ns", "_s"};
    for (size_t k = 0; k < sizeof time_suffixes / sizeof time_suffixes[0]; k++) {
        if (ends_with(low, time_suffixes[k]))
            return -1;
    }
    static const char *const time_words[] = {"time", "latency", "duration", "wait", "elapsed"};
    for (size_t k = 0; k < sizeof time_words / sizeof time_words[0]; k++) {
        if (strstr(low, time_words[k]))
            return -1;
    }
    if (kind == GK_SERIES_COUNTER)
        return 1; /* a counter's rate is work done per second */
    return 0;
}

const char *gk__direction_name(int dir)
{
    return dir < 0 ? "time-like" : dir > 0 ? "throughput-like" : "neutral";
}

static void time_above(gk__series_summary *sm, double interval)
{
    for (size_t k = 0; k < sizeof thresholds / sizeof thresholds[0]; k++) {
        if (!is_series(sm->s.name, thresholds[k].base))
            continue;
        sm->has_threshold = 1;
        sm->threshold = thresholds[k].level;
        double prev = sm->s.n ? sm->s.t[0] - interval : 0;
        for (size_t i = 0; i < sm->s.n; i++) {
            double dt = sm->s.t[i] - prev;
            prev = sm->s.t[i];
            if (sm->s.v[i] > sm->threshold && dt > 0)
                sm->above_s += dt;
        }
        return;
    }
}

/* Joules from each GPU's power series (trapezoids), summed; -1 when none was recorded. */
static double energy(const gk_report *rep)
{
    double total = -1;
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk_series *s = &rep->sums[i].s;
        if (s->kind != GK_SERIES_SAMPLE || !is_series(s->name, "gpukit_gpu_power_watts") ||
            s->n < 2)
            continue;
        double j = 0;
        for (size_t k = 1; k < s->n; k++)
            j += (s->v[k] + s->v[k - 1]) / 2 * (s->t[k] - s->t[k - 1]);
        total = (total < 0 ? 0 : total) + j;
    }
    return total;
}

const gk__series_summary *gk__report_find(const gk_report *rep, const char *name)
{
    for (size_t i = 0; i < rep->nsums; i++) {
        if (strcmp(rep->sums[i].s.name, name) == 0)
            return &rep->sums[i];
    }
    return NULL;
}

const gk__series_summary *gk__report_gpu_series(const gk_report *rep, int gpu, const char *what)
{
    char base[96], label[16];
    int bl = snprintf(base, sizeof base, "gpukit_gpu_%s{", what);
    for (size_t i = 0; i < rep->nsums; i++) {
        const char *n = rep->sums[i].s.name;
        if (strncmp(n, base, (size_t)bl) == 0 && gk__series_tag(n, "gpu", label, sizeof label) &&
            atoi(label) == gpu)
            return &rep->sums[i];
    }
    return NULL;
}

int gk__report_add_advice(gk_report *rep, const char *rule, const char *title, const char *evidence,
                          const char *fix)
{
    gk_advice *a = gk__realloc(rep->advice, (rep->nadvice + 1) * sizeof *a);
    if (!a)
        return -ENOMEM;
    rep->advice = a;
    char **t = gk__realloc(rep->advice_text, (rep->nadvice_text + 4) * sizeof *t);
    if (!t)
        return -ENOMEM;
    rep->advice_text = t;
    const char *src[4] = {rule, title, evidence, fix};
    char *dst[4];
    for (int k = 0; k < 4; k++) {
        dst[k] = gk__strdup(src[k] ? src[k] : "");
        if (!dst[k]) {
            for (int m = 0; m < k; m++)
                free(dst[m]);
            return -ENOMEM;
        }
        rep->advice_text[rep->nadvice_text++] = dst[k];
    }
    rep->advice[rep->nadvice++] = (gk_advice){sizeof(gk_advice), dst[0], dst[1], dst[2], dst[3]};
    return 0;
}

int gk_report_create(const gk_recording *rec, const gk_recording *baseline, gk_report **out)
{
    if (!rec || !out)
        return -EINVAL;
    *out = NULL;
    gk_report *rep = gk__calloc(1, sizeof *rep);
    if (!rep)
        return -ENOMEM;
    rep->rec = rec;
    rep->base = baseline;
    gk_recording_get_info(rec, &rep->info);
    rep->duration_s = rep->info.has_end ? rep->info.end->duration_s : rep->info.last_t;
    double interval = rep->info.interval_s > 0 ? rep->info.interval_s : 0.5;
    int rc = 0;
    rep->nsums = gk_recording_series_count(rec);
    rep->sums = gk__calloc(rep->nsums ? rep->nsums : 1, sizeof *rep->sums);
    if (!rep->sums) {
        rc = -ENOMEM;
        goto out_fail;
    }
    for (size_t i = 0; i < rep->nsums; i++) {
        gk__series_summary *sm = &rep->sums[i];
        gk_recording_series(rec, i, &sm->s);
        if ((rc = gk_stats_compute(sm->s.v, sm->s.n, &sm->st)))
            goto out_fail;
        if (sm->s.kind == GK_SERIES_COUNTER && rep->duration_s > 0)
            sm->rate_per_s = sm->st.sum / rep->duration_s;
        if (sm->s.kind == GK_SERIES_SAMPLE)
            time_above(sm, interval);
    }
    rep->energy_j = energy(rep);
    if ((rc = gk__report_ranks(rep)) || (rc = gk__report_advise(rep)))
        goto out_fail;
    if (baseline && (rc = gk__report_compare(rep)))
        goto out_fail;
    *out = rep;
    return 0;
out_fail:
    gk_report_destroy(rep);
    return rc;
}

void gk_report_destroy(gk_report *rep)
{
    if (!rep)
        return;
    for (size_t i = 0; i < rep->nadvice_text; i++)
        free(rep->advice_text[i]);
    free(rep->advice_text);
    free(rep->advice);
    free(rep->cmp);
    free(rep->ranks);
    free(rep->sums);
    free(rep);
}

size_t gk_report_advice_count(const gk_report *rep)
{
    return rep ? rep->nadvice : 0;
}

int(gk_report_advice)(const gk_report *rep, size_t i, gk_advice *out, size_t size)
{
    if (!rep)
        return gk__error(-EINVAL, "gk_report_advice: report is NULL");
    if (i >= rep->nadvice)
        return gk__error(-ERANGE, "gk_report_advice: advice %zu does not exist (%zu given)", i,
                         rep->nadvice);
    gk_advice a = rep->advice[i];
    a.size = sizeof a;
    return gk__sized_put(out, size, &a, sizeof a, "gk_advice");
}

int(gk_report_stats)(const gk_report *rep, const char *name, gk_stats *out, size_t size)
{
    if (!rep || !name)
        return gk__error(-EINVAL, "gk_report_stats: report or name is NULL");
    const gk__series_summary *sm = gk__report_find(rep, name);
    if (!sm)
        return gk__error(-ENOENT, "gk_report_stats: the recording has no series \"%s\"", name);
    gk_stats st = sm->st;
    st.size = sizeof st;
    return gk__sized_put(out, size, &st, sizeof st, "gk_stats");
}

size_t gk_report_comparison_count(const gk_report *rep)
{
    return rep ? rep->ncmp : 0;
}

int(gk_report_comparison)(const gk_report *rep, size_t i, gk_comparison *out, size_t size)
{
    if (!rep)
        return gk__error(-EINVAL, "gk_report_comparison: report is NULL");
    if (i >= rep->ncmp)
        return gk__error(-ERANGE, "gk_report_comparison: comparison %zu does not exist (%zu)", i,
                         rep->ncmp);
    gk_comparison c = rep->cmp[i];
    c.size = sizeof c;
    return gk__sized_put(out, size, &c, sizeof c, "gk_comparison");
}
