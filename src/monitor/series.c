/* The monitor's series: one fixed-size ring of (time, value) per series, created on first
 * publication together with its metric in the registry; raw reads, counter rates with reset
 * detection, and summaries. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "monitor_int.h"

int64_t gk__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void gk__labels_text(const char *const *labels, char *buf, size_t len)
{
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        w += (size_t)snprintf(buf + w, w < len ? len - w : 0, "%s%s=\"", i ? "," : "", labels[i]);
        for (const char *p = labels[i + 1]; *p && w + 3 < len; p++) {
            if (*p == '\\' || *p == '"') {
                buf[w++] = '\\';
                buf[w++] = *p;
            } else if (*p == '\n') {
                buf[w++] = '\\';
                buf[w++] = 'n';
            } else {
                buf[w++] = *p;
            }
        }
        if (w + 1 < len)
            buf[w++] = '"';
        if (w < len)
            buf[w] = '\0';
        else
            buf[len - 1] = '\0';
    }
}

static gk__series *find_series(gk_monitor *m, const char *name, const char *labels)
{
    /* Ticks publish in a stable order: try the slot after the last hit first. */
    if (m->hint < m->nseries) {
        gk__series *s = m->series[m->hint];
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) {
            m->hint++;
            return s;
        }
    }
    for (size_t i = 0; i < m->nseries; i++) {
        gk__series *s = m->series[i];
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) {
            m->hint = i + 1;
            return s;
        }
    }
    return NULL;
}

static gk__series *new_series(gk_monitor *m, const char *name, const char *help,
                              const char *const *labels, const char *text, int counter)
{
    if (m->nseries == m->series_cap) {
        size_t cap = m->series_cap ? m->series_cap * 2 : 64;
        gk__series **v = gk__realloc(m->series, cap * sizeof *v);
        if (!v)
            return NULL;
        m->series = v;
        m->series_cap = cap;
    }
    gk__series *s = gk__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    double pts = ceil(m->cfg.retention / m->cfg.interval - 1e-9);
    s->cap = pts < 2 ? 2 : pts > 1e6 ? 1000000 : (size_t)pts;
    s->ring = gk__malloc(s->cap * sizeof *s->ring);
    if (!s->ring) {
        free(s);
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->labels, sizeof s->labels, "%s", text);
    s->counter = counter;
    int rc = counter ? gk_metrics_counter(m->metrics, name, help, labels, &s->metric)
                     : gk_metrics_gauge(m->metrics, name, help, labels, &s->metric);
    if (rc != 0) {
        s->metric = NULL;
        gk_log(&m->cfg.logger, GK_LOG_DEBUG, "monitor", "metric %s{%s} not exported: %s", name,
               text, gk_strerror(rc));
    }
    m->series[m->nseries++] = s;
    m->hint = m->nseries;
    return s;
}

void gk__monitor_publish(gk_monitor *m, const char *name, const char *help,
                         const char *const *labels, double value, int counter)
{
    if (!isfinite(value))
        return;
    char text[256];
    gk__labels_text(labels, text, sizeof text);
    gk__series *s = find_series(m, name, text);
    if (!s)
        s = new_series(m, name, help, labels, text, counter);
    if (!s)
        return;
    s->ring[s->head] = (gk_series_point){m->tick_t_ns, value};
    s->head = (s->head + 1) % s->cap;
    if (s->count < s->cap)
        s->count++;
    if (!s->metric)
        return;
    if (counter) {
        double inc = !s->has_last ? value : value >= s->last_raw ? value - s->last_raw : value;
        gk_counter_add(s->metric, inc);
        s->last_raw = value;
        s->has_last = 1;
    } else {
        gk_gauge_set(s->metric, value);
    }
}

size_t gk_monitor_series_count(gk_monitor *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->lock);
    size_t n = m->nseries;
    pthread_mutex_unlock(&m->lock);
    return n;
}

int(gk_monitor_series_info)(gk_monitor *m, size_t idx, gk_series_info *user, size_t size)
{
    if (!m)
        return gk__error(-EINVAL, "gk_monitor_series_info: monitor is NULL");
    int rc = gk__sized_check(user, size, "gk_series_info");
    if (rc)
        return rc;
    gk_series_info info, *out = &info;
    memset(out, 0, sizeof *out);
    rc = -ERANGE;
    pthread_mutex_lock(&m->lock);
    if (idx < m->nseries) {
        const gk__series *s = m->series[idx];
        snprintf(out->name, sizeof out->name, "%s", s->name);
        snprintf(out->labels, sizeof out->labels, "%s", s->labels);
        out->counter = s->counter;
        out->count = s->count;
        out->capacity = s->cap;
        rc = 0;
    }
    size_t n = m->nseries;
    pthread_mutex_unlock(&m->lock);
    if (rc)
        return gk__error(rc, "gk_monitor_series_info: series %zu does not exist (%zu series)", idx,
                         n);
    return gk__sized_put(user, size, out, sizeof *out, "gk_series_info");
}

int gk_monitor_find(gk_monitor *m, const char *name, const char *labels, size_t *idx)
{
    if (!m || !name || !idx)
        return gk__error(-EINVAL, "gk_monitor_find: m, name or idx is NULL");
    if (!labels)
        labels = "";
    int rc = -ENOENT;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nseries; i++) {
        if (strcmp(m->series[i]->name, name) == 0 && strcmp(m->series[i]->labels, labels) == 0) {
            *idx = i;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* Copies the newest `take` points of s, oldest first. Caller holds the lock. */
static void copy_points(const gk__series *s, gk_series_point *buf, size_t take)
{
    size_t start = (s->head + s->cap - take) % s->cap;
    for (size_t i = 0; i < take; i++)
        buf[i] = s->ring[(start + i) % s->cap];
}

int gk_monitor_read(gk_monitor *m, size_t idx, gk_series_point *buf, size_t cap, size_t *n)
{
    if (!m || !n || (cap && !buf))
        return gk__error(-EINVAL, "gk_monitor_read: invalid argument (!m || !n || (cap && !buf))");
    *n = 0;
    int rc = -ERANGE;
    pthread_mutex_lock(&m->lock);
    if (idx < m->nseries) {
        const gk__series *s = m->series[idx];
        size_t take = s->count < cap ? s->count : cap;
        copy_points(s, buf, take);
        *n = take;
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int gk__counter_rate(const gk_series_point *a, const gk_series_point *b, double *rate)
{
    double dt = (double)(b->t_ns - a->t_ns) / 1e9;
    if (!(dt > 0))
        return 0;
    double inc = b->value >= a->value ? b->value - a->value : b->value; /* reset: start over */
    *rate = inc / dt;
    return 1;
}

int gk_monitor_rate(gk_monitor *m, size_t idx, gk_series_point *buf, size_t cap, size_t *n)
{
    if (!m || !n || (cap && !buf))
        return gk__error(-EINVAL, "gk_monitor_rate: invalid argument (!m || !n || (cap && !buf))");
    *n = 0;
    int rc = -ERANGE;
    pthread_mutex_lock(&m->lock);
    if (idx < m->nseries) {
        const gk__series *s = m->series[idx];
        if (!s->counter) {
            rc = -EINVAL;
        } else {
            /* cap rates need cap + 1 points. */
            size_t take = s->count < cap + 1 ? s->count : cap + 1;
            size_t start = (s->head + s->cap - take) % s->cap, k = 0;
            for (size_t i = 1; i < take; i++) {
                const gk_series_point *a = &s->ring[(start + i - 1) % s->cap];
                const gk_series_point *b = &s->ring[(start + i) % s->cap];
                double r;
                if (gk__counter_rate(a, b, &r))
                    buf[k++] = (gk_series_point){b->t_ns, r};
            }
            *n = k;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int(gk_monitor_summary)(gk_monitor *m, size_t idx, gk_summary_stats *out, size_t size)
{
    if (!m)
        return gk__error(-EINVAL, "gk_monitor_summary: monitor is NULL");
    int rc0 = gk__sized_check(out, size, "gk_summary_stats");
    if (rc0)
        return rc0;
    gk_summary *sum = NULL;
    if (gk_summary_create(&sum) != 0)
        return gk__error(-ENOMEM, "gk_monitor_summary: out of host memory");
    int rc = -ERANGE;
    pthread_mutex_lock(&m->lock);
    if (idx < m->nseries) {
        const gk__series *s = m->series[idx];
        size_t start = (s->head + s->cap - s->count) % s->cap;
        rc = 0;
        for (size_t i = 0; i < s->count && rc == 0; i++) {
            const gk_series_point *b = &s->ring[(start + i) % s->cap];
            if (!s->counter) {
                rc = gk_summary_add(sum, b->value);
            } else if (i > 0) {
                double r;
                if (gk__counter_rate(&s->ring[(start + i - 1) % s->cap], b, &r))
                    rc = gk_summary_add(sum, r);
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        rc = (gk_summary_get)(sum, out, size);
    else if (rc == -ERANGE)
        gk__error(rc, "gk_monitor_summary: series %zu does not exist", idx);
    gk_summary_destroy(sum);
    return rc;
}
