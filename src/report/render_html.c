/* The report as one self-contained HTML page, organised for reading: the summary, the advice
 * with the per-rank table right after it, alerts and the baseline comparison; then the series
 * part by part (GPU, host, pool, loader, batch finder, program; layout.c decides), single values
 * in a table and the rest in inline SVG charts that put related series on one set of axes; last
 * the statistics of every series. No scripts, no external resources; print styles keep charts
 * whole on a page. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/errtext.h"
#include "report/report_int.h"

#define CHART_W      760
#define CHART_H      170 /* without a legend */
#define PLOT_X0      72
#define PLOT_X1      750
#define PLOT_Y0      12
#define PLOT_Y1      140
#define ZERO_BAND    14 /* log scale: the band below the lowest decade where values <= 0 sit */
#define LEGEND_Y0    180
#define LEGEND_ROW   16
#define LEGEND_COLS  4
#define LEGEND_W     170
#define LEGEND_CHARS 24  /* longer legend entries are cut (the desc has them whole) */
#define MAX_BUCKETS  600 /* a long series is drawn as min/max per bucket */
#define MAX_MARKERS  1500
#define MAX_DECADES  6 /* decade ticks on a log axis, at most */

/* Line colours (distinct for colour-blind readers) and dashes (distinct in grey on paper). */
static const char *const colours[] = {"#2f6db5", "#d55e00", "#009e73", "#cc79a7",
                                      "#b08600", "#56b4e9", "#555555", "#8c564b"};
static const char *const dashes[] = {"", "6 3", "2 2", "8 3 2 3"};

/* The stroke of line m of a chart (its colour and dash), as attributes. */
static void stroke(gk__sbuf *b, size_t m, const char *width)
{
    gk__sbuf_printf(b, " stroke=\"%s\" stroke-width=\"%s\"", colours[m % 8], width);
    if (dashes[m % 4][0])
        gk__sbuf_printf(b, " stroke-dasharray=\"%s\"", dashes[m % 4]);
}

static const char style[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;"
    "max-width:1100px;color:#1d1d1f;padding:0 1em}"
    "h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;"
    "border-bottom:1px solid #ddd}"
    "code{background:#f2f2f2;padding:1px 4px;border-radius:3px;word-break:break-all}"
    "nav ul{list-style:none;padding:0;margin:.4em 0;font-size:.9em}nav li{display:inline;"
    "margin-right:1em}"
    "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
    "th,td{border:1px solid #d0d0d0;padding:2px 5px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}"
    ".wide{overflow-x:auto}"
    "tr.part th{background:#e6ecf4}"
    ".advice{border-left:5px solid #d9822b;background:#fff7ee;padding:6px 12px;margin:10px 0}"
    ".advice p{margin:.3em 0}.rule{color:#777;font-size:.85em}"
    ".regression td{background:#fde8e8}.improvement td{background:#e8f6ea}"
    ".warn{color:#a33}figure.chart{margin:14px 0}figcaption{font-size:13px;font-weight:600}"
    ".scale{font-weight:400;color:#a35a00;margin-left:.5em}"
    "svg{background:#fbfbfb;border:1px solid #e4e4e4;max-width:100%;height:auto}"
    "svg text{font-size:11px;fill:#555;font-family:inherit}"
    "@media print{body{margin:0;max-width:none}figure.chart,.advice,tr{break-inside:avoid;"
    "page-break-inside:avoid}.advice{background:none}h2{break-after:avoid}nav{display:none}"
    ".wide{overflow:visible}td:first-child{white-space:normal;overflow-wrap:anywhere}"
    "svg{border:1px solid #999}}";

/* A value for people: timers in ms, others by the unit of their name. */
static void fmt(char *buf, size_t len, const gk_series *s, double v)
{
    if (s->kind == GK_SERIES_TIMER)
        snprintf(buf, len, "%.4g ms", v);
    else
        gk__fmt_value(buf, len, s->name, v);
}

static void html_fmt(gk__sbuf *b, const gk_series *s, double v)
{
    char buf[48];
    fmt(buf, sizeof buf, s, v);
    gk__sbuf_html(b, buf);
}

/* --- charts ------------------------------------------------------------------------------ */

/* A chart's axes: linear in value, or log in decades (values <= 0 then sit in a band below). */
typedef struct scale {
    int log, zero_band;
    double lo, hi; /* linear: values; log: powers of ten */
    double step;   /* log: decades between ticks */
    double tmax;
} scale;

static double px(const scale *sc, double t)
{
    return PLOT_X0 + (sc->tmax > 0 ? t / sc->tmax : 0) * (PLOT_X1 - PLOT_X0);
}

static double py(const scale *sc, double v)
{
    double bottom = PLOT_Y1;
    if (!sc->log)
        return bottom - (v - sc->lo) / (sc->hi - sc->lo) * (bottom - PLOT_Y0);
    if (!(v > 0))
        return bottom;
    bottom -= sc->zero_band ? ZERO_BAND : 0;
    return bottom - (log10(v) - sc->lo) / (sc->hi - sc->lo) * (bottom - PLOT_Y0);
}

static const gk_series *member(const gk_report *rep, const gk__layout *l, const gk__chart *c,
                               size_t m)
{
    return &rep->sums[l->members[c->first + m]].s;
}

static scale chart_scale(const gk_report *rep, const gk__layout *l, const gk__chart *c)
{
    scale sc = {.log = c->log_scale, .tmax = rep->duration_s};
    double lo = INFINITY, hi = -INFINITY;
    int levels = 1; /* levels (sampled, bytes, shares) read best from zero */
    for (size_t m = 0; m < c->n; m++) {
        const gk__series_summary *sm = &rep->sums[l->members[c->first + m]];
        const gk_series *s = &sm->s;
        if (s->n && s->t[s->n - 1] > sc.tmax)
            sc.tmax = s->t[s->n - 1];
        levels &= s->kind == GK_SERIES_SAMPLE || gk__series_unit_level(s->name);
        double acc = 0;
        for (size_t i = 0; i < s->n && (c->cumulative || sc.log); i++) {
            double v = c->cumulative ? (acc += s->v[i]) : s->v[i];
            if (sc.log && !(v > 0)) {
                sc.zero_band = 1;
                continue;
            }
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
        if (!c->cumulative && !sc.log) {
            lo = fmin(lo, sm->st.min);
            hi = fmax(hi, sm->st.max);
        }
    }
    if (sc.log) {
        sc.lo = floor(log10(lo));
        sc.hi = ceil(log10(hi));
        double decades = sc.hi > sc.lo ? sc.hi - sc.lo : 1;
        sc.step = ceil(decades / MAX_DECADES);
        sc.hi = sc.lo + sc.step * ceil(decades / sc.step);
        return sc;
    }
    if (c->cumulative || (levels && lo > 0))
        lo = fmin(lo, 0);
    if (!(hi > lo))
        hi = lo + (lo == 0 ? 1 : fabs(lo) * 0.1);
    sc.lo = lo;
    sc.hi = hi;
    return sc;
}

/* A grid line at y, labelled with `label` or the value v (unless the label just above, in
 * `last`, reads the same: a narrow range at the unit's precision). */
static void tick(gk__sbuf *b, const gk_series *s, double y, double v, const char *label,
                 char last[48])
{
    char buf[48];
    fmt(buf, sizeof buf, s, v);
    gk__sbuf_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e2e2e2\"/>",
                    PLOT_X0, y, PLOT_X1, y);
    if (!label && strcmp(buf, last) == 0) {
        gk__sbuf_puts(b, "\n");
        return;
    }
    snprintf(last, 48, "%s", buf);
    gk__sbuf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", PLOT_X0 - 4, y + 4);
    if (label)
        gk__sbuf_puts(b, label);
    else
        gk__sbuf_html(b, buf);
    gk__sbuf_puts(b, "</text>\n");
}

static void axes(gk__sbuf *b, const gk_series *s, const scale *sc)
{
    char last[48] = "";
    if (sc->log) {
        for (double d = sc->hi; d >= sc->lo - 1e-9; d -= sc->step)
            tick(b, s, py(sc, pow(10, d)), pow(10, d), NULL, last);
        if (sc->zero_band)
            tick(b, s, PLOT_Y1, 0, "&#8804; 0", last);
    } else {
        for (int k = 4; k >= 0; k--) {
            double v = sc->lo + (sc->hi - sc->lo) * k / 4.0;
            tick(b, s, py(sc, v), v, NULL, last);
        }
    }
    gk__sbuf_printf(b,
                    "<text x=\"%d\" y=\"%d\">0 s</text><text x=\"%d\" y=\"%d\" "
                    "text-anchor=\"end\">%.3g s</text>\n",
                    PLOT_X0, CHART_H - 12, PLOT_X1, CHART_H - 12, sc->tmax);
    if (sc->log)
        gk__sbuf_printf(b,
                        "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" class=\"scale\">log "
                        "scale</text>\n",
                        (PLOT_X0 + PLOT_X1) / 2, CHART_H - 12);
}

static int drawn_as_line(const gk_series *s, int cumulative)
{
    return cumulative || s->kind == GK_SERIES_SAMPLE || s->kind == GK_SERIES_GAUGE;
}

/* One series of a chart: a line (levels, running totals) or markers (timers, histograms). */
static void draw(gk__sbuf *b, const gk_series *s, const scale *sc, int cumulative, size_t m,
                 size_t markers)
{
    gk__sbuf_puts(b, "<g class=\"series\" data-series=\"");
    gk__sbuf_html(b, s->name);
    gk__sbuf_puts(b, "\"><title>");
    gk__sbuf_html(b, s->name);
    gk__sbuf_puts(b, "</title>");
    if (!drawn_as_line(s, cumulative)) {
        size_t step = s->n > markers ? s->n / markers + 1 : 1;
        gk__sbuf_printf(b, "<g fill=\"%s\" fill-opacity=\"0.6\">", colours[m % 8]);
        for (size_t i = 0; i < s->n; i += step)
            gk__sbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"1.8\"/>", px(sc, s->t[i]),
                            py(sc, s->v[i]));
        gk__sbuf_puts(b, "</g></g>\n");
        return;
    }
    gk__sbuf_puts(b, "<polyline fill=\"none\"");
    stroke(b, m, "1.5");
    gk__sbuf_puts(b, " points=\"");
    double acc = 0;
    if (s->n <= 2 * MAX_BUCKETS || cumulative) {
        size_t step = s->n > 4 * MAX_BUCKETS ? s->n / (2 * MAX_BUCKETS) : 1;
        for (size_t i = 0; i < s->n; i++) {
            acc += s->v[i];
            if (i % step && i + 1 != s->n)
                continue;
            gk__sbuf_printf(b, "%.1f,%.1f ", px(sc, s->t[i]), py(sc, cumulative ? acc : s->v[i]));
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
                gk__sbuf_printf(b, "%.1f,%.1f %.1f,%.1f ", px(sc, s->t[from]), py(sc, mn),
                                px(sc, s->t[to - 1]), py(sc, mx));
        }
    }
    gk__sbuf_puts(b, "\"/></g>\n");
}

/* Appends `s` escaped, cut to `max` characters (UTF-8 aware) with an ellipsis. */
static void html_cut(gk__sbuf *b, const char *s, size_t max)
{
    size_t chars = 0, i = 0;
    for (; s[i] && chars < max; i++)
        chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    while (s[i] && ((unsigned char)s[i] & 0xC0) == 0x80)
        i++;
    gk__sbuf tmp = {0};
    gk__sbuf_add(&tmp, s, i);
    gk__sbuf_html(b, tmp.oom ? "" : tmp.s);
    b->oom |= tmp.oom; /* the page fails whole, never with a piece missing */
    gk__sbuf_free(&tmp);
    if (s[i])
        gk__sbuf_puts(b, "&#8230;");
}

static void legend(gk__sbuf *b, const gk_report *rep, const gk__layout *l, const gk__chart *c)
{
    for (size_t m = 0; m < c->n; m++) {
        const gk_series *s = member(rep, l, c, m);
        int x = PLOT_X0 + (int)(m % LEGEND_COLS) * LEGEND_W;
        int y = LEGEND_Y0 + (int)(m / LEGEND_COLS) * LEGEND_ROW;
        if (drawn_as_line(s, c->cumulative)) {
            gk__sbuf_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"", x, y - 4, x + 18,
                            y - 4);
            stroke(b, m, "2");
            gk__sbuf_puts(b, "/>");
        } else
            gk__sbuf_printf(b, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"%s\"/>", x + 9, y - 4,
                            colours[m % 8]);
        gk__sbuf legend_text = {0};
        gk__chart_legend(rep, l, c, m, &legend_text);
        gk__sbuf_printf(b, "<text x=\"%d\" y=\"%d\">", x + 24, y);
        html_cut(b, legend_text.oom ? "" : legend_text.s, LEGEND_CHARS);
        b->oom |= legend_text.oom;
        gk__sbuf_puts(b, "</text>\n");
        gk__sbuf_free(&legend_text);
    }
}

/* The chart in words (the SVG's desc): each series' range, median and count. */
static void describe(gk__sbuf *b, const gk_report *rep, const gk__layout *l, const gk__chart *c,
                     const scale *sc)
{
    for (size_t m = 0; m < c->n; m++) {
        const gk__series_summary *sm = &rep->sums[l->members[c->first + m]];
        gk__sbuf_html(b, sm->s.name);
        if (c->cumulative) {
            gk__sbuf_puts(b, ": total ");
            html_fmt(b, &sm->s, sm->st.sum);
            gk__sbuf_printf(b, " in %zu increments. ", sm->st.count);
            continue;
        }
        gk__sbuf_puts(b, ": from ");
        html_fmt(b, &sm->s, sm->st.min);
        gk__sbuf_puts(b, " to ");
        html_fmt(b, &sm->s, sm->st.max);
        gk__sbuf_puts(b, ", median ");
        html_fmt(b, &sm->s, sm->st.p50);
        gk__sbuf_printf(b, ", %zu values. ", sm->st.count);
    }
    if (sc->log)
        gk__sbuf_printf(b, "Log scale from 1e%.0f to 1e%.0f%s.", sc->lo, sc->hi,
                        sc->zero_band ? ", values of 0 or less at the bottom" : "");
}

static void chart(gk__sbuf *b, const gk_report *rep, const gk__layout *l, const gk__chart *c,
                  size_t id)
{
    const gk_series *first = member(rep, l, c, 0);
    scale sc = chart_scale(rep, l, c);
    int height = c->n > 1 ? LEGEND_Y0 + (int)((c->n - 1) / LEGEND_COLS) * LEGEND_ROW + 8 : CHART_H;
    gk__sbuf caption = {0};
    gk__chart_caption(rep, l, c, &caption);
    const char *cap = caption.oom ? "" : caption.s;
    b->oom |= caption.oom;
    gk__sbuf_printf(b,
                    "<figure class=\"chart\" id=\"chart-%zu\" data-part=\"%s\" "
                    "data-scale=\"%s\"><figcaption>",
                    id, gk__part_id(c->part), sc.log ? "log" : "linear");
    gk__sbuf_html(b, cap);
    gk__sbuf_puts(b, c->cumulative                    ? " (cumulative)"
                     : first->kind == GK_SERIES_TIMER ? " (ms)"
                                                      : "");
    if (sc.log)
        gk__sbuf_puts(b, "<span class=\"scale\">log scale</span>");
    gk__sbuf_printf(b,
                    "</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                    "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
                    "aria-labelledby=\"chart-%zu-title chart-%zu-desc\">\n<title "
                    "id=\"chart-%zu-title\">",
                    CHART_W, height, CHART_W, height, id, id, id);
    gk__sbuf_html(b, cap);
    gk__sbuf_puts(b, " over time</title>\n");
    gk__sbuf_printf(b, "<desc id=\"chart-%zu-desc\">", id);
    describe(b, rep, l, c, &sc);
    gk__sbuf_puts(b, "</desc>\n");
    gk__sbuf_free(&caption);
    axes(b, first, &sc);
    size_t markers = MAX_MARKERS / c->n;
    for (size_t m = 0; m < c->n; m++)
        draw(b, member(rep, l, c, m), &sc, c->cumulative, m, markers);
    if (c->n > 1)
        legend(b, rep, l, c);
    gk__sbuf_puts(b, "</svg></figure>\n");
}

/* --- sections ---------------------------------------------------------------------------- */

/* The single values of one part: name, value with its unit, how many samples said so. */
static void values(gk__sbuf *b, const gk_report *rep, const gk__layout *l, gk__part part)
{
    int open = 0;
    for (size_t i = 0; i < l->nvalues; i++) {
        const gk__series_summary *sm = &rep->sums[l->values[i]];
        if (gk__series_part(sm->s.name) != part)
            continue;
        if (!open++)
            gk__sbuf_printf(b,
                            "<table class=\"values\" id=\"values-%s\"><thead><tr><th>series</th>"
                            "<th>value</th><th>samples</th></tr></thead><tbody>\n",
                            gk__part_id(part));
        gk__sbuf_puts(b, "<tr><td>");
        gk__sbuf_html(b, sm->s.name);
        gk__sbuf_puts(b, "</td><td>");
        if (sm->st.count == 0) {
            gk__sbuf_printf(b, "overflow</td><td>%zu beyond &#177;%.0e left out</td></tr>\n",
                            sm->s.overflow, GK_RECORDING_VALUE_MAX);
            continue;
        }
        int counter = sm->s.kind == GK_SERIES_COUNTER;
        html_fmt(b, &sm->s, counter ? sm->st.sum : sm->st.min);
        gk__sbuf_printf(b, "%s</td><td>%zu%s</td></tr>\n", counter ? " in total" : "", sm->st.count,
                        counter            ? (sm->st.count == 1 ? " increment" : " increments")
                        : sm->st.count > 1 ? ", all equal"
                                           : "");
    }
    if (open)
        gk__sbuf_puts(b, "</tbody></table>\n");
}

static int part_present(const gk_report *rep, gk__part part)
{
    for (size_t i = 0; i < rep->nsums; i++) {
        if (gk__series_part(rep->sums[i].s.name) == part)
            return 1;
    }
    return 0;
}

static void parts(gk__sbuf *b, const gk_report *rep, const gk__layout *l)
{
    size_t c = 0;
    for (int p = 0; p < GK__PART_COUNT; p++) {
        if (!part_present(rep, (gk__part)p))
            continue;
        gk__sbuf_printf(b, "<section class=\"part\" id=\"part-%s\">\n<h2>",
                        gk__part_id((gk__part)p));
        gk__sbuf_html(b, gk__part_title((gk__part)p));
        gk__sbuf_puts(b, "</h2>\n");
        values(b, rep, l, (gk__part)p);
        for (; c < l->ncharts && l->charts[c].part == (gk__part)p; c++)
            chart(b, rep, l, &l->charts[c], c);
        gk__sbuf_puts(b, "</section>\n");
    }
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
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        if (!sm->has_threshold || sm->above_s <= 0)
            continue;
        char thr[32];
        gk__fmt_value(thr, sizeof thr, sm->s.name, sm->threshold);
        gk__sbuf_puts(b, "<li class=\"above\">");
        gk__sbuf_html(b, sm->s.name);
        gk__sbuf_puts(b, " &gt; ");
        gk__sbuf_html(b, thr);
        gk__sbuf_printf(b, " for %.2f s (%.0f%% of the run)</li>\n", sm->above_s,
                        rep->duration_s > 0 ? fmin(100, 100 * sm->above_s / rep->duration_s) : 0);
    }
    for (size_t i = 0; i < gk_recording_issue_count(rep->rec); i++) {
        gk__sbuf_puts(b, "<li class=\"warn\">warning: ");
        gk__sbuf_html(b, gk_recording_issue(rep->rec, i));
        gk__sbuf_puts(b, "</li>\n");
    }
    gk__sbuf_puts(b, "</ul>\n");
}

static void contents(gk__sbuf *b, const gk_report *rep)
{
    gk__sbuf_puts(b,
                  "<nav aria-label=\"contents\"><ul>\n<li><a href=\"#advice\">Advice</a></li>\n");
    if (rep->nranks)
        gk__sbuf_puts(b, "<li><a href=\"#ranks\">Ranks</a></li>\n");
    if (gk_recording_alert_count(rep->rec))
        gk__sbuf_puts(b, "<li><a href=\"#alerts\">Alerts</a></li>\n");
    if (rep->base)
        gk__sbuf_puts(b, "<li><a href=\"#baseline\">Against the baseline</a></li>\n");
    for (int p = 0; p < GK__PART_COUNT; p++) {
        if (!part_present(rep, (gk__part)p))
            continue;
        gk__sbuf_printf(b, "<li><a href=\"#part-%s\">", gk__part_id((gk__part)p));
        gk__sbuf_html(b, gk__part_title((gk__part)p));
        gk__sbuf_puts(b, "</a></li>\n");
    }
    gk__sbuf_puts(b, "<li><a href=\"#statistics\">Statistics</a></li>\n</ul></nav>\n");
}

static void advice(gk__sbuf *b, const gk_report *rep)
{
    gk__sbuf_puts(b, "<h2 id=\"advice\">Advice</h2>\n");
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

static void comparison(gk__sbuf *b, const gk_report *rep)
{
    if (!rep->base)
        return;
    static const char *const verdicts[] = {"unchanged", "regression", "improvement", "changed"};
    gk__sbuf_puts(b, "<h2 id=\"baseline\">Against the baseline</h2>\n<table id=\"comparison\">"
                     "<thead><tr><th>series</th><th>verdict</th><th>direction</th>"
                     "<th>median</th><th>change</th><th>p90</th><th>change</th><th>noise</th>"
                     "</tr></thead><tbody>\n");
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

/* The statistics of every series, part by part. */
static void statistics(gk__sbuf *b, const gk_report *rep)
{
    gk__sbuf_puts(b, "<h2 id=\"statistics\">Statistics</h2>\n<div class=\"wide\">"
                     "<table id=\"summary\"><thead><tr>"
                     "<th>series</th><th>count</th><th>mean</th><th>std</th><th>min</th>"
                     "<th>p50</th><th>p90</th><th>p99</th><th>max</th><th>above / total</th>"
                     "</tr></thead>\n");
    for (int p = 0; p < GK__PART_COUNT; p++) {
        if (!part_present(rep, (gk__part)p))
            continue;
        gk__sbuf_puts(b, "<tbody><tr class=\"part\"><th colspan=\"10\" scope=\"rowgroup\">");
        gk__sbuf_html(b, gk__part_title((gk__part)p));
        gk__sbuf_puts(b, "</th></tr>\n");
        for (size_t i = 0; i < rep->nsums; i++) {
            const gk__series_summary *sm = &rep->sums[i];
            if (gk__series_part(sm->s.name) != (gk__part)p)
                continue;
            gk__sbuf_puts(b, "<tr><td>");
            gk__sbuf_html(b, sm->s.name);
            gk__sbuf_printf(b, "</td><td>%zu</td>", sm->st.count);
            double v[] = {sm->st.mean, sm->st.std, sm->st.min, sm->st.p50,
                          sm->st.p90,  sm->st.p99, sm->st.max};
            for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
                gk__sbuf_puts(b, "<td>");
                html_fmt(b, &sm->s, v[k]);
                gk__sbuf_puts(b, "</td>");
            }
            if (sm->has_threshold)
                gk__sbuf_printf(b, "<td>%.2f s</td></tr>\n", sm->above_s);
            else if (sm->s.kind == GK_SERIES_COUNTER)
                gk__sbuf_printf(b, "<td>total %.6g, %.4g/s</td></tr>\n", sm->st.sum,
                                sm->rate_per_s);
            else
                gk__sbuf_puts(b, "<td></td></tr>\n");
        }
        gk__sbuf_puts(b, "</tbody>\n");
    }
    gk__sbuf_puts(b, "</table></div>\n");
}

int gk_report_write_html(const gk_report *rep, FILE *out)
{
    if (!rep || !out)
        return gk__error(-EINVAL, "gk_report_write_html: rep or out is NULL");
    gk__layout l;
    if (gk__report_layout(rep, &l) != 0)
        return gk__error(-ENOMEM, "gk_report_write_html: out of memory");
    gk__sbuf b = {0};
    gk__sbuf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
                      "<title>gpukit report: ");
    gk__sbuf_html(&b, rep->info.command);
    gk__sbuf_printf(&b, "</title>\n<style>%s</style>\n</head><body>\n", style);
    header(&b, rep);
    contents(&b, rep);
    advice(&b, rep);
    gk__report_ranks_html(rep, &b);
    alerts(&b, rep);
    comparison(&b, rep);
    parts(&b, rep, &l);
    statistics(&b, rep);
    gk__sbuf_printf(&b,
                    "<p class=\"rule\">Made by gpukit %s. Advice rules: docs/advice.md."
                    "</p>\n</body></html>\n",
                    gk_version_string());
    gk__layout_free(&l);
    int rc = b.oom ? -ENOMEM : (fwrite(b.s, 1, b.len, out) == b.len ? 0 : -EIO);
    gk__sbuf_free(&b);
    return rc;
}
