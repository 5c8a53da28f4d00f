/* Renders a registry as Prometheus text 0.0.4 or OpenMetrics 1.0: HELP and TYPE lines, escaped
 * label values, "_total" on counters, cumulative "le" buckets ending in +Inf for histograms, and
 * "# EOF" at the end of OpenMetrics. Also the Accept-header negotiation and content types. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/errtext.h"
#include "gpukit/error.h"
#include "metrics_int.h"

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
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
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
static void put_escaped(FILE *out, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", out);
        else if (*s == '\n')
            fputs("\\n", out);
        else if (quote && *s == '"')
            fputs("\\\"", out);
        else
            fputc(*s, out);
    }
}

/* Writes "{a="x",b="y"}" for a series, with an extra le label when `le` is not NULL. */
static void put_labels(FILE *out, const gk__family *f, const gk_metric *s, const char *le)
{
    if (f->nlabels == 0 && !le)
        return;
    fputc('{', out);
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i)
            fputc(',', out);
        fprintf(out, "%s=\"", f->label_names[i]);
        put_escaped(out, s->label_values[i], 1);
        fputc('"', out);
    }
    if (le)
        fprintf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    fputc('}', out);
}

static void put_sample(FILE *out, const gk__family *f, const gk_metric *s, const char *suffix,
                       const char *le, double v)
{
    char num[64];
    gk__metrics_format_number(v, num, sizeof num);
    fprintf(out, "%s%s", f->name, suffix);
    put_labels(out, f, s, le);
    fprintf(out, " %s\n", num);
}

static void render_family(FILE *out, const gk__family *f, gk_metrics_format fmt)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    int om = fmt == GK_METRICS_OPENMETRICS;
    /* 0.0.4 names the counter family by its sample name; OpenMetrics by the base. */
    const char *meta_suffix = (f->type == GK_METRIC_COUNTER && !om) ? "_total" : "";
    if (om)
        fprintf(out, "# TYPE %s%s %s\n", f->name, meta_suffix, type_names[f->type]);
    if (*f->help) {
        fprintf(out, "# HELP %s%s ", f->name, meta_suffix);
        put_escaped(out, f->help, om);
        fputc('\n', out);
    }
    if (!om)
        fprintf(out, "# TYPE %s%s %s\n", f->name, meta_suffix, type_names[f->type]);
    for (size_t i = 0; i < f->nseries; i++) {
        const gk_metric *s = f->series[i];
        double v = gk_metric_value(s);
        if (f->type == GK_METRIC_COUNTER) {
            put_sample(out, f, s, "_total", NULL, v);
        } else if (f->type == GK_METRIC_GAUGE) {
            put_sample(out, f, s, "", NULL, v);
        } else {
            uint64_t cum = 0;
            char le[64];
            for (size_t b = 0; b <= f->nbounds; b++) {
                cum += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
                if (b < f->nbounds)
                    gk__metrics_format_number(f->bounds[b], le, sizeof le);
                else
                    snprintf(le, sizeof le, "+Inf");
                put_sample(out, f, s, "_bucket", le, (double)cum);
            }
            put_sample(out, f, s, "_sum", NULL, v);
            put_sample(out, f, s, "_count", NULL, (double)cum);
        }
    }
}

int gk_metrics_render(gk_metrics *m, gk_metrics_format fmt, char **out, size_t *len)
{
    if (!m || !out || !len || (fmt != GK_METRICS_PROMETHEUS && fmt != GK_METRICS_OPENMETRICS))
        return gk__error(-EINVAL, "gk_metrics_render: invalid argument (!m || !out || !len || (fmt "
                                  "!= GK_METRICS_PROMETHEUS && fmt != GK_METRICS_OPENMETRICS))");
    *out = NULL;
    *len = 0;
    gk_metrics_collect(m);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return gk__error(-ENOMEM, "gk_metrics_render: out of host memory (!f)");
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nfams; i++)
        render_family(f, m->fams[i], fmt);
    gk__metrics_render_logs(m, f, fmt);
    pthread_mutex_unlock(&m->lock);
    if (fmt == GK_METRICS_OPENMETRICS)
        fputs("# EOF\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || !buf) {
        free(buf);
        return gk__error(-ENOMEM, "gk_metrics_render: out of host memory");
    }
    *out = buf;
    *len = n;
    return 0;
}
