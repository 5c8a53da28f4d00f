/* Renders a registry as Prometheus text 0.0.4 or OpenMetrics 1.0: HELP and TYPE lines, escaped
 * label values, "_total" on counters, cumulative "le" buckets ending in +Inf for histograms, and
 * "# EOF" at the end of OpenMetrics. Also the Accept-header negotiation and content types. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "metrics_int.h"

/* Writes |v| < 1e15, integral, as its digits: what "%.15g" writes for such a value. */
static void format_integer(double v, char *buf)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = (unsigned long long)(v < 0 ? -v : v);
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t k = 0;
    if (v < 0)
        buf[k++] = '-';
    while (n)
        buf[k++] = tmp[--n];
    buf[k] = '\0';
}

void gk__metrics_format_number(double v, char *buf, size_t len)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, len, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0.0) {
        snprintf(buf, len, "0");
        return;
    }
    /* Counts and byte figures, most of what a registry holds: digits, without printf. */
    if (len >= 18 && fabs(v) < 1e15 && v == trunc(v)) {
        format_integer(v, buf);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* --- the text buffer ---------------------------------------------------------------------- */

static int text_room(gk__text *t, size_t n)
{
    if (t->failed)
        return 0;
    if (t->len + n + 1 <= t->cap)
        return 1;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + n + 1)
        cap *= 2;
    char *p = gk__realloc(t->p, cap);
    if (!p) {
        t->failed = 1;
        return 0;
    }
    t->p = p;
    t->cap = cap;
    return 1;
}

void gk__text_put(gk__text *t, const char *s, size_t n)
{
    if (n == 0 || !text_room(t, n))
        return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

void gk__text_puts(gk__text *t, const char *s)
{
    gk__text_put(t, s, strlen(s));
}

void gk__text_printf(gk__text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->failed = 1;
        return;
    }
    if (!text_room(t, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

const char *gk_metrics_content_type(gk_metrics_format fmt)
{
    return fmt == GK_METRICS_OPENMETRICS
               ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
               : "text/plain; version=0.0.4; charset=utf-8";
}

/* The q value of the media range starting at `p` (up to the next comma); 1 when absent. */
static double accept_q(const char *p)
{
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    for (size_t i = 0; i + 2 < n; i++) {
        if (p[i] == ';') {
            const char *q = p + i + 1;
            while (*q == ' ')
                q++;
            if ((*q == 'q' || *q == 'Q') && q[1] == '=')
                return strtod(q + 2, NULL);
        }
    }
    return 1.0;
}

/* The best q among media ranges in `accept` that start with `type`; -1 when none. */
static double best_q(const char *accept, const char *type)
{
    double best = -1.0;
    size_t tn = strlen(type);
    const char *p = accept;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (strncasecmp(p, type, tn) == 0) {
            double q = accept_q(p);
            if (q > best)
                best = q;
        }
        p = strchr(p, ',');
    }
    return best;
}

gk_metrics_format gk_metrics_negotiate(const char *accept)
{
    if (!accept)
        return GK_METRICS_PROMETHEUS;
    double om = best_q(accept, "application/openmetrics-text");
    if (om <= 0.0)
        return GK_METRICS_PROMETHEUS;
    double text = best_q(accept, "text/plain");
    return om >= text ? GK_METRICS_OPENMETRICS : GK_METRICS_PROMETHEUS;
}

/* Writes `s` escaping backslash, newline and (when quote) double quote. */
static void put_escaped(gk__text *out, const char *s, int quote)
{
    const char *special = quote ? "\\\n\"" : "\\\n";
    for (;;) {
        size_t n = strcspn(s, special);
        gk__text_put(out, s, n);
        s += n;
        if (!*s)
            return;
        gk__text_puts(out, *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : "\\\"");
        s++;
    }
}

/* Writes a series' labels, a="x",b="y" (without braces), into `out` (emptied first). */
static void series_labels(gk__text *out, const gk__family *f, const gk_metric *s)
{
    out->len = 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i)
            gk__text_put(out, ",", 1);
        gk__text_puts(out, f->label_names[i]);
        gk__text_put(out, "=\"", 2);
        put_escaped(out, s->label_values[i], 1);
        gk__text_put(out, "\"", 1);
    }
}

/* One sample line: NAME SUFFIX{labels[,le="LE"]} VALUE. */
static void put_sample(gk__text *out, const gk__family *f, const gk__text *labels,
                       const char *suffix, const char *le, double v)
{
    char num[64];
    gk__metrics_format_number(v, num, sizeof num);
    gk__text_puts(out, f->name);
    gk__text_puts(out, suffix);
    if (labels->len || le) {
        gk__text_put(out, "{", 1);
        gk__text_put(out, labels->p, labels->len);
        if (le) {
            gk__text_puts(out, labels->len ? ",le=\"" : "le=\"");
            gk__text_puts(out, le);
            gk__text_put(out, "\"", 1);
        }
        gk__text_put(out, "}", 1);
    }
    gk__text_put(out, " ", 1);
    gk__text_puts(out, num);
    gk__text_put(out, "\n", 1);
}

static void render_family(gk__text *out, gk__text *labels, const gk__family *f,
                          gk_metrics_format fmt)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    int om = fmt == GK_METRICS_OPENMETRICS;
    /* 0.0.4 names the counter family by its sample name; OpenMetrics by the base. */
    const char *meta_suffix = (f->type == GK_METRIC_COUNTER && !om) ? "_total" : "";
    if (om)
        gk__text_printf(out, "# TYPE %s%s %s\n", f->name, meta_suffix, type_names[f->type]);
    if (*f->help) {
        gk__text_printf(out, "# HELP %s%s ", f->name, meta_suffix);
        put_escaped(out, f->help, om);
        gk__text_put(out, "\n", 1);
    }
    if (!om)
        gk__text_printf(out, "# TYPE %s%s %s\n", f->name, meta_suffix, type_names[f->type]);
    /* A histogram's bounds, formatted once for all its series. */
    char(*les)[32] = NULL;
    if (f->type == GK_METRIC_HISTOGRAM && f->nseries) {
        les = gk__malloc((f->nbounds + 1) * sizeof *les);
        if (!les) {
            out->failed = 1;
            return;
        }
        for (size_t b = 0; b < f->nbounds; b++)
            gk__metrics_format_number(f->bounds[b], les[b], sizeof les[b]);
        snprintf(les[f->nbounds], sizeof les[f->nbounds], "+Inf");
    }
    for (size_t i = 0; i < f->nseries; i++) {
        const gk_metric *s = f->series[i];
        double v = gk_metric_value(s);
        series_labels(labels, f, s);
        if (f->type == GK_METRIC_COUNTER) {
            put_sample(out, f, labels, "_total", NULL, v);
        } else if (f->type == GK_METRIC_GAUGE) {
            put_sample(out, f, labels, "", NULL, v);
        } else {
            uint64_t cum = 0;
            for (size_t b = 0; b <= f->nbounds; b++) {
                cum += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
                put_sample(out, f, labels, "_bucket", les[b], (double)cum);
            }
            put_sample(out, f, labels, "_sum", NULL, v);
            put_sample(out, f, labels, "_count", NULL, (double)cum);
        }
    }
    free(les);
}

int gk_metrics_render(gk_metrics *m, gk_metrics_format fmt, char **out, size_t *len)
{
    if (!m || !out || !len || (fmt != GK_METRICS_PROMETHEUS && fmt != GK_METRICS_OPENMETRICS))
        return gk__error(-EINVAL, "gk_metrics_render: invalid argument (!m || !out || !len || (fmt "
                                  "!= GK_METRICS_PROMETHEUS && fmt != GK_METRICS_OPENMETRICS))");
    *out = NULL;
    *len = 0;
    gk_metrics_collect(m);
    gk__text text = {0}, labels = {0};
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nfams; i++)
        render_family(&text, &labels, m->fams[i], fmt);
    gk__metrics_render_logs(m, &text, fmt);
    pthread_mutex_unlock(&m->lock);
    if (fmt == GK_METRICS_OPENMETRICS)
        gk__text_puts(&text, "# EOF\n");
    free(labels.p);
    /* text_room also gives an empty registry's render its buffer */
    if (labels.failed || !text_room(&text, 0)) {
        free(text.p);
        return gk__error(-ENOMEM, "gk_metrics_render: out of host memory");
    }
    text.p[text.len] = '\0';
    *out = text.p;
    *len = text.len;
    return 0;
}
