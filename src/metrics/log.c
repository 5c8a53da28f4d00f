/* Logged values ("log a value with a timestamp"): per name, a ring of the newest points and a
 * running summary of every value logged. One mutex per registry guards all names. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "metrics_int.h"

struct gk__log {
    char *name;
    gk_metric_point *ring; /* cfg.log_capacity points */
    size_t head, count;    /* next write slot, points held */
    gk_summary *summary;
};

static void log_free(gk__log *l)
{
    if (!l)
        return;
    free(l->name);
    free(l->ring);
    gk_summary_destroy(l->summary);
    free(l);
}

void gk__metrics_logs_free(gk_metrics *m)
{
    for (size_t i = 0; i < m->nlogs; i++)
        log_free(m->logs[i]);
    free(m->logs);
    m->logs = NULL;
    m->nlogs = m->logs_cap = 0;
}

int gk__metrics_has_log(gk_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nlogs; i++) {
        if (strcmp(m->logs[i]->name, name) == 0)
            return 1;
    }
    return 0;
}

static gk__log *find_log(gk_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nlogs; i++) {
        if (strcmp(m->logs[i]->name, name) == 0)
            return m->logs[i];
    }
    return NULL;
}

static int new_log(gk_metrics *m, const char *name, gk__log **out)
{
    if (m->nlogs >= m->cfg.max_logs)
        return -ENOSPC;
    if (m->nlogs == m->logs_cap) {
        size_t cap = m->logs_cap ? m->logs_cap * 2 : 8;
        gk__log **logs = gk__realloc(m->logs, cap * sizeof *logs);
        if (!logs)
            return -ENOMEM;
        m->logs = logs;
        m->logs_cap = cap;
    }
    gk__log *l = gk__calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->name = gk__strdup(name);
    l->ring = gk__malloc(m->cfg.log_capacity * sizeof *l->ring);
    if (!l->name || !l->ring || gk_summary_create(&l->summary) != 0) {
        log_free(l);
        return -ENOMEM;
    }
    m->logs[m->nlogs++] = l;
    *out = l;
    return 0;
}

/* Names whose summary samples would look like another type's. */
static int reserved_suffix(const char *name)
{
    static const char *const suffixes[] = {"_total", "_sum", "_count", "_bucket", "_created"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && strcmp(name + n - k, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

int gk_metrics_log(gk_metrics *m, const char *name, double value)
{
    if (!m || gk_metrics_check_name(name) != 0 || reserved_suffix(name) || !isfinite(value))
        return gk__error(-EINVAL,
                         "gk_metrics_log: invalid argument (!m || gk_metrics_check_name(name) != 0 "
                         "|| reserved_suffix(name) || !isfinite(value))");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    int rc = 0;
    pthread_mutex_lock(&m->log_lock);
    gk__log *l = find_log(m, name);
    if (!l) {
        /* A new name: check it against the families, taking the locks in order. */
        pthread_mutex_unlock(&m->log_lock);
        pthread_mutex_lock(&m->lock);
        pthread_mutex_lock(&m->log_lock);
        l = find_log(m, name);
        if (!l && gk__metrics_has_family(m, name))
            rc = -EEXIST;
        else if (!l)
            rc = new_log(m, name, &l);
        pthread_mutex_unlock(&m->lock);
        if (rc)
            goto out_unlock;
    }
    l->ring[l->head] = (gk_metric_point){t, value};
    l->head = (l->head + 1) % m->cfg.log_capacity;
    if (l->count < m->cfg.log_capacity)
        l->count++;
    rc = gk_summary_add(l->summary, value);
out_unlock:
    pthread_mutex_unlock(&m->log_lock);
    return rc;
}

void gk__metrics_render_logs(gk_metrics *m, gk__text *out, gk_metrics_format fmt)
{
    char num[64];
    pthread_mutex_lock(&m->log_lock);
    for (size_t i = 0; i < m->nlogs; i++) {
        const gk__log *l = m->logs[i];
        gk_summary_stats st;
        gk_summary_get(l->summary, &st);
        if (fmt == GK_METRICS_OPENMETRICS)
            gk__text_printf(out, "# TYPE %s summary\n# HELP %s Values logged with gk_metric_log.\n",
                            l->name, l->name);
        else
            gk__text_printf(out, "# HELP %s Values logged with gk_metric_log.\n# TYPE %s summary\n",
                            l->name, l->name);
        const double qs[] = {st.p50, st.p90, st.p99};
        const char *const qn[] = {"0.5", "0.9", "0.99"};
        for (int q = 0; q < 3; q++) {
            gk__metrics_format_number(qs[q], num, sizeof num);
            gk__text_printf(out, "%s{quantile=\"%s\"} %s\n", l->name, qn[q], num);
        }
        gk__metrics_format_number(st.sum, num, sizeof num);
        gk__text_printf(out, "%s_sum %s\n", l->name, num);
        gk__text_printf(out, "%s_count %llu\n", l->name, (unsigned long long)st.count);
    }
    pthread_mutex_unlock(&m->log_lock);
}

int gk_metric_log(const char *name, double value)
{
    gk_metrics *m = gk_metrics_default();
    if (!m)
        return gk__error(-ENOMEM, "gk_metric_log: out of host memory (!m)");
    return gk_metrics_log(m, name, value);
}

int(gk_metrics_log_summary)(gk_metrics *m, const char *name, gk_summary_stats *out, size_t size)
{
    if (!m || !name)
        return gk__error(-EINVAL, "gk_metrics_log_summary: registry or name is NULL");
    int rc = gk__sized_check(out, size, "gk_summary_stats");
    if (rc)
        return rc;
    rc = -ENOENT;
    pthread_mutex_lock(&m->log_lock);
    const gk__log *l = find_log(m, name);
    if (l)
        rc = (gk_summary_get)(l->summary, out, size);
    pthread_mutex_unlock(&m->log_lock);
    if (rc == -ENOENT)
        return gk__error(rc, "gk_metrics_log_summary: nothing was logged under \"%s\"", name);
    return rc;
}

int gk_metrics_log_points(gk_metrics *m, const char *name, gk_metric_point *buf, size_t cap,
                          size_t *n)
{
    if (!m || !name || !n || (cap && !buf))
        return gk__error(
            -EINVAL,
            "gk_metrics_log_points: invalid argument (!m || !name || !n || (cap && !buf))");
    *n = 0;
    int rc = -ENOENT;
    pthread_mutex_lock(&m->log_lock);
    const gk__log *l = find_log(m, name);
    if (l) {
        size_t take = l->count < cap ? l->count : cap;
        size_t ringcap = m->cfg.log_capacity;
        size_t start = (l->head + ringcap - take) % ringcap;
        for (size_t i = 0; i < take; i++)
            buf[i] = l->ring[(start + i) % ringcap];
        *n = take;
        rc = 0;
    }
    pthread_mutex_unlock(&m->log_lock);
    return rc;
}
