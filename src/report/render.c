/* The report as text (for people, like `time -v` or `perf stat`) and as one JSON object (for
 * programs; keys in docs/run.md). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/output.h"
#include "report/report_int.h"

/* Every string of a recording (command, host, series and alert names, labels, advice built from
 * them) reaches the terminal through these: control characters come out escaped (\e, \x07). */
typedef char esc_buf[512];

static const char *esc(esc_buf buf, const char *s)
{
    gk_text_escape(buf, sizeof(esc_buf), s ? s : "");
    return buf;
}

/* fprintf(out, "%s%s%s", before, escaped s, after), for fields of any length. */
static void put(FILE *out, const char *before, const char *s, const char *after)
{
    fputs(before, out);
    gk_text_fputs(s ? s : "", out);
    fputs(after, out);
}

static const char *kind_name(gk_series_kind k)
{
    static const char *const names[] = {"sample", "gauge", "counter", "timer", "histogram"};
    return (unsigned)k < 5 ? names[k] : "unknown";
}

static const char *verdict_name(gk_change_verdict v)
{
    static const char *const names[] = {"unchanged", "regression", "improvement", "changed"};
    return (unsigned)v < 4 ? names[v] : "unknown";
}

/* The display name of a series, escaped: timers are in milliseconds. */
static void unit_name(char *buf, size_t len, const gk_series *s)
{
    esc_buf e;
    if (s->kind == GK_SERIES_TIMER)
        snprintf(buf, len, "%s (ms)", esc(e, s->name));
    else
        snprintf(buf, len, "%s", esc(e, s->name));
}

static void fmt(char *buf, size_t len, const gk_series *s, double v)
{
    if (s->kind == GK_SERIES_TIMER)
        snprintf(buf, len, "%.4g", v);
    else
        gk__fmt_value(buf, len, s->name, v);
}

static void write_header(const gk_report *rep, FILE *out)
{
    const gk_recording_info *in = &rep->info;
    esc_buf e1, e2;
    put(out, "gpukit report: ", in->command, "\n");
    fprintf(out, "  host %s, started %s, %d cores", esc(e1, in->host), esc(e2, in->start),
            in->cores);
    if (in->memory_total_bytes > 0) {
        char b[32];
        gk__fmt_bytes(b, sizeof b, in->memory_total_bytes);
        fprintf(out, ", %s memory", b);
    }
    fputc('\n', out);
    if (in->gpu_enabled)
        fprintf(out, "  GPU metrics on (%d device%s)\n", in->ndevices,
                in->ndevices == 1 ? "" : "s");
    else
        put(out, "  GPU metrics off: ", in->gpu_reason, "\n");
    if (in->has_end) {
        const gk_recording_end *e = in->end;
        if (e->signal)
            fprintf(out, "  killed by signal %d (%s), exit status %d, after %.2f s\n", e->signal,
                    strsignal(e->signal), e->exit_status, e->duration_s);
        else
            fprintf(out, "  exit status %d after %.2f s\n", e->exit_status, e->duration_s);
        fprintf(out, "  %llu samples every %g s (%llu missed), %llu metric lines received",
                (unsigned long long)e->samples, in->interval_s, (unsigned long long)e->overruns,
                (unsigned long long)e->metric_lines);
        if (e->metric_malformed)
            fprintf(out, ", %llu malformed", (unsigned long long)e->metric_malformed);
        if (e->metric_dropped)
            fprintf(out, ", %llu over the cap (not recorded)",
                    (unsigned long long)e->metric_dropped);
        fputc('\n', out);
        if (isfinite(e->cpu_seconds)) {
            char b[32];
            gk__fmt_bytes(b, sizeof b, e->max_rss_bytes);
            fprintf(out, "  CPU %.2f s (user+system, children included), largest process RSS %s\n",
                    e->cpu_seconds, b);
        }
    } else {
        fprintf(out, "  the run did not finish: %.2f s recorded\n", rep->duration_s);
    }
    size_t ni = gk_recording_issue_count(rep->rec);
    for (size_t i = 0; i < ni; i++)
        put(out, "  warning: ", gk_recording_issue(rep->rec, i), "\n");
}

int gk_report_write_text(const gk_report *rep, FILE *out)
{
    if (!rep || !out)
        return gk__error(-EINVAL, "gk_report_write_text: rep or out is NULL");
    write_header(rep, out);
    /* The name column fits the longest name (labels included), within reason. */
    int w = 40;
    for (size_t i = 0; i < rep->nsums; i++) {
        char name[256];
        unit_name(name, sizeof name, &rep->sums[i].s);
        int l = (int)strlen(name);
        w = l > w ? (l < 72 ? l : 72) : w;
    }
    fprintf(out, "\n%-*s %7s %10s %10s %10s %10s %10s %10s %10s\n", w, "series", "count", "mean",
            "std", "min", "p50", "p90", "p99", "max");
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        const gk_series *s = &sm->s;
        char name[256], v[8][32];
        unit_name(name, sizeof name, s);
        double vals[8] = {sm->st.mean, sm->st.std, sm->st.min, sm->st.p50,
                          sm->st.p90,  sm->st.p99, sm->st.max, 0};
        for (int k = 0; k < 7; k++) {
            if (sm->st.count == 0 && s->overflow)
                snprintf(v[k], sizeof v[k], "overflow");
            else
                fmt(v[k], sizeof v[k], s, vals[k]);
        }
        fprintf(out, "%-*s %7zu %10s %10s %10s %10s %10s %10s %10s\n", w, name, sm->st.count, v[0],
                v[1], v[2], v[3], v[4], v[5], v[6]);
        if (s->kind == GK_SERIES_COUNTER)
            fprintf(out, "%-*s %7s total %.6g, %.4g per second\n", w, "", "", sm->st.sum,
                    sm->rate_per_s);
        if (s->overflow)
            fprintf(out, "%-*s %7s overflow: %zu value%s beyond +-%.0e left out\n", w, "", "",
                    s->overflow, s->overflow == 1 ? "" : "s", GK_RECORDING_VALUE_MAX);
    }
    int header = 0;
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        if (!sm->has_threshold || sm->above_s <= 0)
            continue;
        if (!header++)
            fprintf(out, "\ntime above thresholds:\n");
        char thr[32];
        esc_buf e;
        gk__fmt_value(thr, sizeof thr, sm->s.name, sm->threshold);
        double pct = rep->duration_s > 0 ? fmin(100, 100 * sm->above_s / rep->duration_s) : 0;
        fprintf(out, "  %s > %s: %.2f s (%.0f%% of the run)\n", esc(e, sm->s.name), thr,
                sm->above_s, pct);
    }
    if (rep->energy_j >= 0)
        fprintf(out, "\nGPU energy: %.1f J (%.4g Wh)\n", rep->energy_j, rep->energy_j / 3600);
    header = 0;
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        if (strncmp(sm->s.name, "gpukit_gpu_process_memory_used_bytes{", 37) != 0)
            continue;
        if (!header++)
            fprintf(out, "\npeak GPU memory per process:\n");
        char b[32];
        esc_buf e;
        gk__fmt_bytes(b, sizeof b, sm->st.max);
        fprintf(out, "  %s: %s\n", esc(e, sm->s.name), b);
    }
    size_t nal = gk_recording_alert_count(rep->rec);
    if (nal)
        fprintf(out, "\nalerts:\n");
    for (size_t i = 0; i < nal; i++) {
        gk_alert_event a;
        gk_recording_alert(rep->rec, i, &a);
        esc_buf n, l, st;
        char val[32];
        if (isfinite(a.value))
            snprintf(val, sizeof val, "%.6g", a.value);
        else
            snprintf(val, sizeof val, "overflow");
        fprintf(out, "  %8.2f s  %s%s%s%s %s (value %s)\n", a.t, esc(n, a.name),
                a.labels[0] ? "{" : "", esc(l, a.labels), a.labels[0] ? "}" : "", esc(st, a.state),
                val);
    }
    gk__report_ranks_text(rep, out);
    fprintf(out, "\nadvice:\n");
    if (rep->nadvice == 0)
        fprintf(out, "  none: no rule of docs/advice.md fired on the recorded data\n");
    for (size_t i = 0; i < rep->nadvice; i++) {
        const gk_advice *a = &rep->advice[i];
        fprintf(out, "  %zu. ", i + 1);
        put(out, "", a->title, " [");
        put(out, "", a->rule, "]\n");
        put(out, "     evidence: ", a->evidence, "\n");
        put(out, "     fix: ", a->fix, "\n");
    }
    if (rep->base) {
        size_t reg = 0, imp = 0;
        for (size_t i = 0; i < rep->ncmp; i++) {
            reg += rep->cmp[i].verdict == GK_CHANGE_REGRESSION;
            imp += rep->cmp[i].verdict == GK_CHANGE_IMPROVEMENT;
        }
        fprintf(out,
                "\nagainst the baseline: %zu regression%s, %zu improvement%s, %zu series "
                "compared\n",
                reg, reg == 1 ? "" : "s", imp, imp == 1 ? "" : "s", rep->ncmp);
        for (size_t i = 0; i < rep->ncmp; i++) {
            const gk_comparison *c = &rep->cmp[i];
            esc_buf n;
            fprintf(out,
                    "  %-11s %s (%s): median %.6g -> %.6g (%+.1f%%), p90 %.6g -> %.6g "
                    "(%+.1f%%), noise %.1f%%\n",
                    verdict_name(c->verdict), esc(n, c->name), c->direction, c->base_p50, c->p50,
                    c->p50_change_pct, c->base_p90, c->p90, c->p90_change_pct, c->noise_pct);
        }
    }
    return ferror(out) ? -EIO : 0;
}

static void json_kv_num(gk__sbuf *b, const char *key, double v)
{
    gk__sbuf_printf(b, ",\"%s\":", key);
    gk__sbuf_json_num(b, v);
}

int gk_report_write_json(const gk_report *rep, FILE *out)
{
    if (!rep || !out)
        return gk__error(-EINVAL, "gk_report_write_json: rep or out is NULL");
    const gk_recording_info *in = &rep->info;
    gk__sbuf b = {0};
    gk__sbuf_printf(&b, "{\"schema\":%d,\"command\":", GK_RECORDING_SCHEMA);
    gk__sbuf_json_str(&b, in->command);
    gk__sbuf_puts(&b, ",\"host\":");
    gk__sbuf_json_str(&b, in->host);
    gk__sbuf_puts(&b, ",\"start\":");
    gk__sbuf_json_str(&b, in->start);
    gk__sbuf_printf(&b, ",\"cores\":%d,\"finished\":%s", in->cores, in->has_end ? "true" : "false");
    json_kv_num(&b, "duration_s", rep->duration_s);
    if (in->has_end) {
        gk__sbuf_printf(&b, ",\"exit_status\":%d,\"exit_code\":%d,\"signal\":%d",
                        in->end->exit_status, in->end->exit_code, in->end->signal);
        gk__sbuf_printf(&b,
                        ",\"samples\":%llu,\"overruns\":%llu,\"metric_lines\":%llu,"
                        "\"metric_malformed\":%llu,\"metric_dropped\":%llu",
                        (unsigned long long)in->end->samples, (unsigned long long)in->end->overruns,
                        (unsigned long long)in->end->metric_lines,
                        (unsigned long long)in->end->metric_malformed,
                        (unsigned long long)in->end->metric_dropped);
        json_kv_num(&b, "cpu_seconds", in->end->cpu_seconds);
        json_kv_num(&b, "max_rss_bytes", in->end->max_rss_bytes);
    }
    gk__sbuf_printf(&b, ",\"gpu\":{\"enabled\":%s,\"reason\":", in->gpu_enabled ? "true" : "false");
    gk__sbuf_json_str(&b, in->gpu_reason);
    gk__sbuf_puts(&b, "},\"warnings\":[");
    for (size_t i = 0; i < gk_recording_issue_count(rep->rec); i++) {
        if (i)
            gk__sbuf_add(&b, ",", 1);
        gk__sbuf_json_str(&b, gk_recording_issue(rep->rec, i));
    }
    gk__sbuf_puts(&b, "],\"series\":[");
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        gk__sbuf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        gk__sbuf_json_str(&b, sm->s.name);
        gk__sbuf_printf(&b, ",\"kind\":\"%s\",\"count\":%zu", kind_name(sm->s.kind), sm->st.count);
        json_kv_num(&b, "mean", sm->st.mean);
        json_kv_num(&b, "std", sm->st.std);
        json_kv_num(&b, "min", sm->st.min);
        json_kv_num(&b, "p50", sm->st.p50);
        json_kv_num(&b, "p90", sm->st.p90);
        json_kv_num(&b, "p99", sm->st.p99);
        json_kv_num(&b, "max", sm->st.max);
        json_kv_num(&b, "sum", sm->st.sum);
        if (sm->s.overflow)
            gk__sbuf_printf(&b, ",\"overflow\":%zu", sm->s.overflow);
        if (sm->s.kind == GK_SERIES_COUNTER)
            json_kv_num(&b, "rate_per_second", sm->rate_per_s);
        if (sm->has_threshold) {
            json_kv_num(&b, "threshold", sm->threshold);
            json_kv_num(&b, "seconds_above", sm->above_s);
        }
        gk__sbuf_add(&b, "}", 1);
    }
    gk__sbuf_puts(&b, "]");
    if (rep->energy_j >= 0)
        json_kv_num(&b, "gpu_energy_joules", rep->energy_j);
    gk__sbuf_puts(&b, ",\"alerts\":[");
    for (size_t i = 0; i < gk_recording_alert_count(rep->rec); i++) {
        gk_alert_event a;
        gk_recording_alert(rep->rec, i, &a);
        gk__sbuf_puts(&b, i ? ",{\"t\":" : "{\"t\":");
        gk__sbuf_json_num(&b, a.t);
        gk__sbuf_puts(&b, ",\"name\":");
        gk__sbuf_json_str(&b, a.name);
        gk__sbuf_puts(&b, ",\"labels\":");
        gk__sbuf_json_str(&b, a.labels);
        gk__sbuf_puts(&b, ",\"state\":");
        gk__sbuf_json_str(&b, a.state);
        json_kv_num(&b, "value", a.value);
        gk__sbuf_add(&b, "}", 1);
    }
    gk__sbuf_puts(&b, "],\"advice\":[");
    for (size_t i = 0; i < rep->nadvice; i++) {
        const gk_advice *a = &rep->advice[i];
        gk__sbuf_puts(&b, i ? ",{\"rule\":" : "{\"rule\":");
        gk__sbuf_json_str(&b, a->rule);
        gk__sbuf_puts(&b, ",\"title\":");
        gk__sbuf_json_str(&b, a->title);
        gk__sbuf_puts(&b, ",\"evidence\":");
        gk__sbuf_json_str(&b, a->evidence);
        gk__sbuf_puts(&b, ",\"fix\":");
        gk__sbuf_json_str(&b, a->fix);
        gk__sbuf_add(&b, "}", 1);
    }
    gk__sbuf_puts(&b, "]");
    gk__report_ranks_json(rep, &b);
    if (rep->base) {
        gk__sbuf_puts(&b, ",\"comparison\":[");
        for (size_t i = 0; i < rep->ncmp; i++) {
            const gk_comparison *c = &rep->cmp[i];
            gk__sbuf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
            gk__sbuf_json_str(&b, c->name);
            gk__sbuf_printf(&b, ",\"direction\":\"%s\",\"verdict\":\"%s\"", c->direction,
                            verdict_name(c->verdict));
            json_kv_num(&b, "base_p50", c->base_p50);
            json_kv_num(&b, "p50", c->p50);
            json_kv_num(&b, "p50_change_pct", c->p50_change_pct);
            json_kv_num(&b, "base_p90", c->base_p90);
            json_kv_num(&b, "p90", c->p90);
            json_kv_num(&b, "p90_change_pct", c->p90_change_pct);
            json_kv_num(&b, "noise_pct", c->noise_pct);
            gk__sbuf_add(&b, "}", 1);
        }
        gk__sbuf_puts(&b, "]");
    }
    gk__sbuf_puts(&b, "}\n");
    int rc = b.oom ? -ENOMEM : (fwrite(b.s, 1, b.len, out) == b.len ? 0 : -EIO);
    gk__sbuf_free(&b);
    return rc;
}
