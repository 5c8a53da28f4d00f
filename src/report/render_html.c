/* The report as one self-contained HTML page: summary, advice, tables and an inline SVG chart per
 * series. No scripts, no external resources; print styles keep charts whole on a page. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/errtext.h"
#include "report/report_int.h"

#define CHART_W     760
#define CHART_H     170
#define PLOT_X0     70
#define PLOT_X1     750
#define PLOT_Y0     12
#define PLOT_Y1     140
#define MAX_BUCKETS 600 /* a long series is drawn as min/max per bucket */
#define MAX_MARKERS 1500

static const char style[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;"
    "max-width:1100px;color:#1d1d1f;padding:0 1em}"
    "h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;"
    "border-bottom:1px solid #ddd}"
    "code{background:#f2f2f2;padding:1px 4px;border-radius:3px;word-break:break-all}"
    "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
    "th,td{border:1px solid #d0d0d0;padding:2px 5px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}"
    ".advice{border-left:5px solid #d9822b;background:#fff7ee;padding:6px 12px;margin:10px 0}"
    ".advice p{margin:.3em 0}.rule{color:#777;font-size:.85em}"
    ".regression td{background:#fde8e8}.improvement td{background:#e8f6ea}"
    ".warn{color:#a33}figure.chart{margin:14px 0}figcaption{font-size:13px;font-weight:600}"
    "svg{background:#fbfbfb;border:1px solid #e4e4e4;max-width:100%;height:auto}"
    "svg text{font-size:11px;fill:#555;font-family:inherit}"
    "@media print{body{margin:0;max-width:none}figure.chart,.advice,tr{break-inside:avoid;"
    "page-break-inside:avoid}.advice{background:none}h2{break-after:avoid}"
    "svg{border:1px solid #999}}";

static void fmt_axis(char *buf, size_t len, const gk_series *s, double v)
{
    if (s->kind == GK_SERIES_TIMER)
        snprintf(buf, len, "%.4g ms", v);
    else
        gk__fmt_value(buf, len, s->name, v);
}

static double px(double t, double tmax)
{
    return PLOT_X0 + (tmax > 0 ? t / tmax : 0) * (PLOT_X1 - PLOT_X0);
}

static double py(double v, double lo, double hi)
{
    return PLOT_Y1 - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * (PLOT_Y1 - PLOT_Y0);
}

static void chart(gk__sbuf *b, const gk__series_summary *sm, double duration, size_t id)
{
    const gk_series *s = &sm->s;
    int cumulative = s->kind == GK_SERIES_COUNTER;
    double lo = sm->st.min, hi = sm->st.max;
    if (cumulative) {
        lo = 0;
        hi = sm->st.sum;
    }
    if (lo > 0 && s->kind == GK_SERIES_SAMPLE)
        lo = 0; /* levels read best from zero */
    if (hi == lo)
        hi = lo + (lo == 0 ? 1 : fabs(lo) * 0.1);
    double tmax = duration;
    if (s->n && s->t[s->n - 1] > tmax)
        tmax = s->t[s->n - 1];
    gk__sbuf_printf(b, "<figure class=\"chart\" id=\"chart-%zu\"><figcaption>", id);
    gk__sbuf_html(b, s->name);
    gk__sbuf_printf(b, "%s</figcaption>\n",
                    cumulative                   ? " (cumulative)"
                    : s->kind == GK_SERIES_TIMER ? " (ms)"
                                                 : "");
    gk__sbuf_printf(b,
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"",
                    CHART_W, CHART_H, CHART_W, CHART_H);
    gk__sbuf_html(b, s->name);
    gk__sbuf_puts(b, " over time\">\n");
    for (int k = 0; k <= 4; k++) {
        double y = PLOT_Y0 + (PLOT_Y1 - PLOT_Y0) * k / 4.0;
        gk__sbuf_printf(b,
                        "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e2e2e2\"/>\n",
                        PLOT_X0, y, PLOT_X1, y);
    }
    char lab[48];
    fmt_axis(lab, sizeof lab, s, hi);
    gk__sbuf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", PLOT_X0 - 4, PLOT_Y0 + 4);
    gk__sbuf_html(b, lab);
    fmt_axis(lab, sizeof lab, s, lo);
    gk__sbuf_printf(b, "</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">", PLOT_X0 - 4,
                    PLOT_Y1 + 4);
    gk__sbuf_html(b, lab);
    gk__sbuf_printf(b,
                    "</text><text x=\"%d\" y=\"%d\">0 s</text><text x=\"%d\" y=\"%d\" "
                    "text-anchor=\"end\">%.3g s</text>\n",
                    PLOT_X0, CHART_H - 12, PLOT_X1, CHART_H - 12, tmax);
    if (s->kind == GK_SERIES_SAMPLE || s->kind == GK_SERIES_GAUGE || cumulative) {
        gk__sbuf_puts(b, "<polyline fill=\"none\" stroke=\"#2f6db5\" stroke-width=\"1.5\" "
                         "points=\"");
        double acc = 0;
        if (s->n <= 2 * MAX_BUCKETS || cumulative) {
            size_t step = s->n > 4 * MAX_BUCKETS ? s->n / (2 * MAX_BUCKETS) : 1;
            for (size_t i = 0; i < s->n; i++) {
                acc += s->v[i];
                if (i % step && i + 1 != s->n)
                    continue;
                gk__sbuf_printf(b, "%.1f,%.1f ", px(s->t[i], tmax),
                                py(cumulative ? acc : s->v[i], lo, hi));
            }
        } else {
            for (size_t k = 0; k < MAX_BUCKETS; k++) {
                size_t from = s->n * k / MAX_BUCKETS, to = s->n * (k + 1) / MAX_BUCKETS;
                double mn = INFINITY, mx = -INFINITY;
                for (size_t i = from; i < to; i++) {
                    mn = fmin(mn, s->v[i]);
                    mx = fmax(mx, s->v[i]);
                }
                if (from < to)
                    gk__sbuf_printf(b, "%.1f,%.1f %.1f,%.1f ", px(s->t[from], tmax), py(mn, lo, hi),
                                    px(s->t[to - 1], tmax), py(mx, lo, hi));
            }
        }
        gk__sbuf_puts(b, "\"/>\n");
    } else {
        size_t step = s->n > MAX_MARKERS ? s->n / MAX_MARKERS + 1 : 1;
        gk__sbuf_puts(b, "<g fill=\"#2f6db5\" fill-opacity=\"0.6\">");
        for (size_t i = 0; i < s->n; i += step)
            gk__sbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"1.8\"/>", px(s->t[i], tmax),
                            py(s->v[i], lo, hi));
        gk__sbuf_puts(b, "</g>\n");
    }
    gk__sbuf_puts(b, "</svg></figure>\n");
}

static void cell(gk__sbuf *b, const gk_series *s, double v)
{
    char buf[48];
    if (s->kind == GK_SERIES_TIMER)
        snprintf(buf, sizeof buf, "%.4g ms", v);
    else
        gk__fmt_value(buf, sizeof buf, s->name, v);
    gk__sbuf_puts(b, "<td>");
    gk__sbuf_html(b, buf);
    gk__sbuf_puts(b, "</td>");
}

static void header(gk__sbuf *b, const gk_report *rep)
{
    const gk_recording_info *in = &rep->info;
    gk__sbuf_puts(b, "<h1>gpukit report</h1>\n<p><code>");
    gk__sbuf_html(b, in->command);
    gk__sbuf_puts(b, "</code></p>\n<ul id=\"overview\">\n<li>host ");
    gk__sbuf_html(b, in->host);
    gk__sbuf_printf(b, ", %d cores, started ", in->cores);
    gk__sbuf_html(b, in->start);
    gk__sbuf_puts(b, "</li>\n<li>");
    if (in->has_end && in->end->signal)
        gk__sbuf_printf(b, "killed by signal %d (%s), exit status %d, after %.2f s",
                        in->end->signal, strsignal(in->end->signal), in->end->exit_status,
                        in->end->duration_s);
    else if (in->has_end)
        gk__sbuf_printf(b, "exit status %d after %.2f s", in->end->exit_status,
                        in->end->duration_s);
    else
        gk__sbuf_printf(b, "did not finish: %.2f s recorded", rep->duration_s);
    gk__sbuf_puts(b, "</li>\n<li>");
    if (in->gpu_enabled) {
        gk__sbuf_printf(b, "GPU metrics on (%d devices)", in->ndevices);
    } else {
        gk__sbuf_puts(b, "GPU metrics off: ");
        gk__sbuf_html(b, in->gpu_reason);
    }
    gk__sbuf_puts(b, "</li>\n");
    if (in->has_end && isfinite(in->end->cpu_seconds)) {
        char rss[32];
        gk__fmt_bytes(rss, sizeof rss, in->end->max_rss_bytes);
        gk__sbuf_printf(b,
                        "<li>CPU %.2f s, largest process RSS %s, %llu metric lines (%llu "
                        "malformed)</li>\n",
                        in->end->cpu_seconds, rss, (unsigned long long)in->end->metric_lines,
                        (unsigned long long)in->end->metric_malformed);
    }
    if (rep->energy_j >= 0)
        gk__sbuf_printf(b, "<li>GPU energy %.1f J</li>\n", rep->energy_j);
    for (size_t i = 0; i < gk_recording_issue_count(rep->rec); i++) {
        gk__sbuf_puts(b, "<li class=\"warn\">warning: ");
        gk__sbuf_html(b, gk_recording_issue(rep->rec, i));
        gk__sbuf_puts(b, "</li>\n");
    }
    gk__sbuf_puts(b, "</ul>\n");
}

static void advice(gk__sbuf *b, const gk_report *rep)
{
    gk__sbuf_puts(b, "<h2>Advice</h2>\n");
    if (rep->nadvice == 0)
        gk__sbuf_puts(b, "<p id=\"no-advice\">No rule of docs/advice.md fired on the recorded "
                         "data.</p>\n");
    for (size_t i = 0; i < rep->nadvice; i++) {
        const gk_advice *a = &rep->advice[i];
        gk__sbuf_puts(b, "<div class=\"advice\"><p><strong>");
        gk__sbuf_html(b, a->title);
        gk__sbuf_puts(b, "</strong> <span class=\"rule\">");
        gk__sbuf_html(b, a->rule);
        gk__sbuf_puts(b, "</span></p><p>Evidence: ");
        gk__sbuf_html(b, a->evidence);
        gk__sbuf_puts(b, "</p><p>Fix: ");
        gk__sbuf_html(b, a->fix);
        gk__sbuf_puts(b, "</p></div>\n");
    }
}

static void alerts(gk__sbuf *b, const gk_report *rep)
{
    size_t n = gk_recording_alert_count(rep->rec);
    if (!n)
        return;
    gk__sbuf_puts(b, "<h2>Alerts</h2>\n<table id=\"alerts\"><thead><tr><th>rule</th><th>series</th>"
                     "<th>state</th><th>at</th><th>value</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < n; i++) {
        gk_alert_event a;
        gk_recording_alert(rep->rec, i, &a);
        gk__sbuf_puts(b, "<tr><td>");
        gk__sbuf_html(b, a.name);
        gk__sbuf_puts(b, "</td><td>");
        gk__sbuf_html(b, a.labels);
        gk__sbuf_puts(b, "</td><td>");
        gk__sbuf_html(b, a.state);
        gk__sbuf_printf(b, "</td><td>%.2f s</td><td>%.6g</td></tr>\n", a.t, a.value);
    }
    gk__sbuf_puts(b, "</tbody></table>\n");
}

static void tables(gk__sbuf *b, const gk_report *rep)
{
    gk__sbuf_puts(b, "<h2>Summary</h2>\n<table id=\"summary\"><thead><tr><th>series</th>"
                     "<th>count</th><th>mean</th><th>std</th><th>min</th><th>p50</th>"
                     "<th>p90</th><th>p99</th><th>max</th><th>above / total</th></tr></thead>"
                     "<tbody>\n");
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        gk__sbuf_puts(b, "<tr><td>");
        gk__sbuf_html(b, sm->s.name);
        gk__sbuf_printf(b, "</td><td>%zu</td>", sm->st.count);
        double v[] = {sm->st.mean, sm->st.std, sm->st.min, sm->st.p50,
                      sm->st.p90,  sm->st.p99, sm->st.max};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
            cell(b, &sm->s, v[k]);
        if (sm->has_threshold)
            gk__sbuf_printf(b, "<td>%.2f s</td></tr>\n", sm->above_s);
        else if (sm->s.kind == GK_SERIES_COUNTER)
            gk__sbuf_printf(b, "<td>total %.6g, %.4g/s</td></tr>\n", sm->st.sum, sm->rate_per_s);
        else
            gk__sbuf_puts(b, "<td></td></tr>\n");
    }
    gk__sbuf_puts(b, "</tbody></table>\n");
    if (!rep->base)
        return;
    static const char *const verdicts[] = {"unchanged", "regression", "improvement", "changed"};
    gk__sbuf_puts(b, "<h2>Against the baseline</h2>\n<table id=\"comparison\"><thead><tr>"
                     "<th>series</th><th>verdict</th><th>direction</th><th>median</th>"
                     "<th>change</th><th>p90</th><th>change</th><th>noise</th></tr></thead>"
                     "<tbody>\n");
    for (size_t i = 0; i < rep->ncmp; i++) {
        const gk_comparison *c = &rep->cmp[i];
        const char *v = verdicts[c->verdict];
        gk__sbuf_printf(b, "<tr class=\"%s\"><td>", v);
        gk__sbuf_html(b, c->name);
        gk__sbuf_printf(b,
                        "</td><td>%s</td><td>%s</td><td>%.6g &rarr; %.6g</td><td>%+.1f%%</td>"
                        "<td>%.6g &rarr; %.6g</td><td>%+.1f%%</td><td>%.1f%%</td></tr>\n",
                        v, c->direction, c->base_p50, c->p50, c->p50_change_pct, c->base_p90,
                        c->p90, c->p90_change_pct, c->noise_pct);
    }
    gk__sbuf_puts(b, "</tbody></table>\n");
}

int gk_report_write_html(const gk_report *rep, FILE *out)
{
    if (!rep || !out)
        return gk__error(-EINVAL, "gk_report_write_html: rep or out is NULL");
    gk__sbuf b = {0};
    gk__sbuf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
                      "<title>gpukit report: ");
    gk__sbuf_html(&b, rep->info.command);
    gk__sbuf_printf(&b, "</title>\n<style>%s</style>\n</head><body>\n", style);
    header(&b, rep);
    advice(&b, rep);
    gk__report_ranks_html(rep, &b);
    alerts(&b, rep);
    tables(&b, rep);
    gk__sbuf_puts(&b, "<h2>Charts</h2>\n");
    for (size_t i = 0; i < rep->nsums; i++) {
        if (rep->sums[i].st.count > 0)
            chart(&b, &rep->sums[i], rep->duration_s, i);
    }
    gk__sbuf_printf(&b,
                    "<p class=\"rule\">Made by gpukit %s. Advice rules: docs/advice.md."
                    "</p>\n</body></html>\n",
                    gk_version_string());
    int rc = b.oom ? -ENOMEM : (fwrite(b.s, 1, b.len, out) == b.len ? 0 : -EIO);
    gk__sbuf_free(&b);
    return rc;
}
