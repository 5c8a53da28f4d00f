/* The metrics registry: name and label validation, families with a cap on label sets, the
 * process-default registry, and the lock-free update functions (C11 atomics on the bit pattern
 * of a double; counters and sums add with a compare-and-swap loop). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "metrics_int.h"

static const double default_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1.0,  2.5,   5.0,  10.0};

double gk__bits_to_double(uint64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

uint64_t gk__double_to_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

void(gk_metrics_config_default)(gk_metrics_config *out, size_t size)
{
    gk_metrics_config c = {.size = sizeof c,
                           .max_families = 1024,
                           .max_series_per_family = 1000,
                           .max_labels = 16,
                           .log_capacity = 4096,
                           .max_logs = 1024};
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_metrics_config");
}

int gk_metrics_create(const gk_metrics_config *cfg, gk_metrics **out)
{
    if (!out)
        return gk__error(-EINVAL, "gk_metrics_create: out is NULL");
    *out = NULL;
    gk_metrics_config c;
    gk_metrics_config_default(&c);
    if (cfg && gk__sized_in(&c, sizeof c, cfg, "gk_metrics_config") != 0)
        return -EINVAL;
    if (!c.max_families || !c.max_series_per_family || !c.log_capacity || !c.max_logs)
        return gk__error(-EINVAL, "metrics config: max_families, max_series_per_family, "
                                  "log_capacity and max_logs must be at least 1");
    gk_metrics *m = gk__calloc(1, sizeof *m);
    if (!m)
        return gk__error(-ENOMEM, "gk_metrics_create: out of host memory");
    m->cfg = c;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->log_lock, NULL);
    pthread_mutex_init(&m->collect_lock, NULL);
    *out = m;
    return 0;
}

static void series_free(gk_metric *s, size_t nlabels)
{
    if (!s)
        return;
    for (size_t i = 0; i < nlabels && s->label_values; i++)
        free(s->label_values[i]);
    free(s->label_values);
    free((void *)s->buckets);
    free(s);
}

static void family_free(gk__family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nseries; i++)
        series_free(f->series[i], f->nlabels);
    free(f->series);
    for (size_t i = 0; i < f->nlabels && f->label_names; i++)
        free(f->label_names[i]);
    free(f->label_names);
    free(f->bounds);
    free(f->help);
    free(f->name);
    free(f);
}

void gk_metrics_destroy(gk_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfams; i++)
        family_free(m->fams[i]);
    free(m->fams);
    gk__metrics_logs_free(m);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->log_lock);
    pthread_mutex_destroy(&m->collect_lock);
    free(m);
}

/* --- validation ---------------------------------------------------------------------------- */

static int is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int gk_metrics_check_name(const char *name)
{
    if (!name || !*name)
        return gk__error(-EINVAL, "gk_metrics_check_name: invalid argument (!name || !*name)");
    if (!is_alpha_(name[0]) && name[0] != ':')
        return gk__error(
            -EINVAL,
            "gk_metrics_check_name: invalid argument (!is_alpha_(name[0]) && name[0] != ':')");
    for (const char *p = name + 1; *p; p++) {
        if (!is_alpha_(*p) && !is_digit(*p) && *p != ':')
            return gk__error(-EINVAL, "gk_metrics_check_name: invalid argument (!is_alpha_(*p) && "
                                      "!is_digit(*p) && *p != ':')");
    }
    return 0;
}

int gk_metrics_check_label_name(const char *name)
{
    if (!name || !*name || !is_alpha_(name[0]))
        return gk__error(-EINVAL, "gk_metrics_check_label_name: invalid argument (!name || !*name "
                                  "|| !is_alpha_(name[0]))");
    if (name[0] == '_' && name[1] == '_')
        return gk__error(
            -EINVAL,
            "gk_metrics_check_label_name: invalid argument (name[0] == '_' && name[1] == '_')");
    for (const char *p = name + 1; *p; p++) {
        if (!is_alpha_(*p) && !is_digit(*p))
            return gk__error(
                -EINVAL,
                "gk_metrics_check_label_name: invalid argument (!is_alpha_(*p) && !is_digit(*p))");
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Checks the label array: even length, valid distinct names, no "le" on histograms. Sets *n to
 * the number of pairs. */
static int check_labels(const gk_metrics *m, const char *const *labels, gk_metric_type type,
                        size_t *n)
{
    size_t count = 0;
    while (labels && labels[count])
        count++;
    if (count % 2)
        return -EINVAL;
    count /= 2;
    if (count > m->cfg.max_labels)
        return -ENOSPC;
    for (size_t i = 0; i < count; i++) {
        const char *ln = labels[2 * i];
        if (gk_metrics_check_label_name(ln) != 0)
            return -EINVAL;
        if (type == GK_METRIC_HISTOGRAM && strcmp(ln, "le") == 0)
            return -EINVAL;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ln, labels[2 * j]) == 0)
                return -EINVAL;
        }
    }
    *n = count;
    return 0;
}

/* The family's base name for `name`, in buf: counters lose a trailing "_total". Rejects names
 * whose suffix clashes with the type. */
static int base_name(const char *name, gk_metric_type type, char *buf, size_t len)
{
    if (gk_metrics_check_name(name) != 0 || strlen(name) >= len)
        return -EINVAL;
    strcpy(buf, name);
    if (type == GK_METRIC_COUNTER) {
        if (ends_with(buf, "_total"))
            buf[strlen(buf) - 6] = '\0';
        if (!*buf)
            return -EINVAL;
    } else if (ends_with(buf, "_total")) {
        return -EINVAL;
    }
    if (type == GK_METRIC_HISTOGRAM &&
        (ends_with(buf, "_bucket") || ends_with(buf, "_count") || ends_with(buf, "_sum")))
        return -EINVAL;
    return 0;
}

static char *dup_str(const char *s)
{
    return gk__strdup(s ? s : "");
}

/* 1 when a logged name would clash with a family named `base` (the same name, or the name of
 * a log's _sum/_count sample). Caller holds m->lock. */
static int clashes_with_log(gk_metrics *m, const char *base)
{
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base);
    pthread_mutex_lock(&m->log_lock);
    int clash = gk__metrics_has_log(m, stem);
    static const char *const suffixes[] = {"_sum", "_count"};
    for (size_t i = 0; i < 2 && !clash; i++) {
        if (ends_with(base, suffixes[i])) {
            stem[strlen(base) - strlen(suffixes[i])] = '\0';
            clash = gk__metrics_has_log(m, stem);
            snprintf(stem, sizeof stem, "%s", base);
        }
    }
    pthread_mutex_unlock(&m->log_lock);
    return clash;
}

int gk__metrics_has_family(gk_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nfams; i++) {
        if (strcmp(m->fams[i]->name, name) == 0)
            return 1;
    }
    return 0;
}

static gk__family *find_family(gk_metrics *m, const char *base)
{
    for (size_t i = 0; i < m->nfams; i++) {
        if (strcmp(m->fams[i]->name, base) == 0)
            return m->fams[i];
    }
    return NULL;
}

static int new_family(gk_metrics *m, const char *base, const char *help, gk_metric_type type,
                      const char *const *labels, size_t nlabels, const double *bounds,
                      size_t nbounds, gk__family **out)
{
    if (m->nfams >= m->cfg.max_families)
        return -ENOSPC;
    if (m->nfams == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        gk__family **fams = gk__realloc(m->fams, cap * sizeof *fams);
        if (!fams)
            return -ENOMEM;
        m->fams = fams;
        m->cap = cap;
    }
    gk__family *f = gk__calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->type = type;
    f->name = dup_str(base);
    f->help = dup_str(help);
    f->nlabels = nlabels;
    f->label_names = nlabels ? gk__calloc(nlabels, sizeof(char *)) : NULL;
    if (!f->name || !f->help || (nlabels && !f->label_names))
        goto out_free;
    for (size_t i = 0; i < nlabels; i++) {
        f->label_names[i] = dup_str(labels[2 * i]);
        if (!f->label_names[i])
            goto out_free;
    }
    if (type == GK_METRIC_HISTOGRAM) {
        f->nbounds = nbounds;
        f->bounds = gk__malloc(nbounds * sizeof(double));
        if (!f->bounds)
            goto out_free;
        memcpy(f->bounds, bounds, nbounds * sizeof(double));
    }
    m->fams[m->nfams++] = f;
    *out = f;
    return 0;
out_free:
    family_free(f);
    return -ENOMEM;
}

static int same_bounds(const gk__family *f, const double *bounds, size_t nbounds)
{
    if (!bounds)
        return 1;
    if (nbounds != f->nbounds)
        return 0;
    for (size_t i = 0; i < nbounds; i++) {
        if (bounds[i] != f->bounds[i])
            return 0;
    }
    return 1;
}

static int new_series(gk_metrics *m, gk__family *f, const char *const *labels, gk_metric **out)
{
    if (f->nseries >= m->cfg.max_series_per_family)
        return -ENOSPC;
    if (f->nseries == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        gk_metric **series = gk__realloc(f->series, cap * sizeof *series);
        if (!series)
            return -ENOMEM;
        f->series = series;
        f->cap = cap;
    }
    gk_metric *s = gk__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->fam = f;
    if (f->nlabels) {
        s->label_values = gk__calloc(f->nlabels, sizeof(char *));
        if (!s->label_values)
            goto out_free;
        for (size_t i = 0; i < f->nlabels; i++) {
            s->label_values[i] = dup_str(labels[2 * i + 1]);
            if (!s->label_values[i])
                goto out_free;
        }
    }
    if (f->type == GK_METRIC_HISTOGRAM) {
        s->buckets = gk__calloc(f->nbounds + 1, sizeof(uint64_t));
        if (!s->buckets)
            goto out_free;
        for (size_t i = 0; i <= f->nbounds; i++)
            atomic_init(&s->buckets[i], 0);
    }
    atomic_init(&s->value_bits, gk__double_to_bits(0.0));
    s->serial = ++m->next_serial;
    f->series[f->nseries++] = s;
    m->nseries++;
    *out = s;
    return 0;
out_free:
    series_free(s, f->nlabels);
    return -ENOMEM;
}

static int do_register(gk_metrics *m, gk_metric_type type, const char *name, const char *help,
                       const char *const *labels, const double *bounds, size_t nbounds,
                       gk_metric **out)
{
    if (!m || !out)
        return -EINVAL;
    *out = NULL;
    char base[256];
    int rc = base_name(name, type, base, sizeof base);
    if (rc)
        return rc;
    size_t nlabels = 0;
    rc = check_labels(m, labels, type, &nlabels);
    if (rc)
        return rc;
    if (type == GK_METRIC_HISTOGRAM) {
        if (bounds && nbounds) {
            for (size_t i = 0; i < nbounds; i++) {
                if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
                    return -EINVAL;
            }
        } else {
            bounds = NULL;
            nbounds = 0;
        }
    }
    pthread_mutex_lock(&m->lock);
    gk__family *f = find_family(m, base);
    if (!f) {
        if (clashes_with_log(m, base)) {
            rc = -EEXIST;
            goto out_unlock;
        }
        const double *b = bounds ? bounds : default_bounds;
        size_t nb = bounds ? nbounds : sizeof default_bounds / sizeof default_bounds[0];
        rc = new_family(m, base, help, type, labels, nlabels, b, nb, &f);
        if (rc)
            goto out_unlock;
    } else {
        if (f->type != type || f->nlabels != nlabels) {
            rc = -EEXIST;
            goto out_unlock;
        }
        for (size_t i = 0; i < nlabels; i++) {
            if (strcmp(f->label_names[i], labels[2 * i]) != 0) {
                rc = -EEXIST;
                goto out_unlock;
            }
        }
        if (type == GK_METRIC_HISTOGRAM && !same_bounds(f, bounds, nbounds)) {
            rc = -EEXIST;
            goto out_unlock;
        }
    }
    for (size_t i = 0; i < f->nseries; i++) {
        gk_metric *s = f->series[i];
        size_t j = 0;
        while (j < nlabels && strcmp(s->label_values[j], labels[2 * j + 1]) == 0)
            j++;
        if (j == nlabels) {
            *out = s;
            goto out_unlock;
        }
    }
    rc = new_series(m, f, labels, out);
out_unlock:;
    /* The first series wakes the watcher (outside the lock: it may start a thread). */
    gk_metrics_first_fn first = NULL;
    void *first_user = NULL;
    if (rc == 0 && m->nseries > 0 && m->first_fn && !m->first_fired) {
        m->first_fired = 1;
        first = m->first_fn;
        first_user = m->first_user;
    }
    pthread_mutex_unlock(&m->lock);
    if (first)
        first(first_user, m);
    return rc;
}

/* The message for a failed registration. */
static int register_error(int rc, const char *kind, const char *name)
{
    switch (rc) {
    case 0:
        return 0;
    case -EINVAL:
        return gk__error(rc,
                         "metrics: %s \"%s\": a bad name, label name or label array (names match "
                         "[a-zA-Z_:][a-zA-Z0-9_:]*, labels come in name/value pairs, \"le\" and "
                         "\"__\" are reserved, _total only on counters)",
                         kind, name ? name : "(null)");
    case -EEXIST:
        return gk__error(rc,
                         "metrics: %s \"%s\": the name is taken by another type, other label "
                         "names or other buckets, or by a logged value",
                         kind, name);
    case -ENOSPC:
        return gk__error(rc,
                         "metrics: %s \"%s\": the registry's cap on families, series per family "
                         "or labels is reached (see gk_metrics_config)",
                         kind, name);
    default:
        return gk__error(rc, "metrics: %s \"%s\": out of host memory", kind, name);
    }
}

int gk_metrics_counter(gk_metrics *m, const char *name, const char *help, const char *const *labels,
                       gk_metric **out)
{
    return register_error(do_register(m, GK_METRIC_COUNTER, name, help, labels, NULL, 0, out),
                          "counter", name);
}

int gk_metrics_gauge(gk_metrics *m, const char *name, const char *help, const char *const *labels,
                     gk_metric **out)
{
    return register_error(do_register(m, GK_METRIC_GAUGE, name, help, labels, NULL, 0, out),
                          "gauge", name);
}

int gk_metrics_histogram(gk_metrics *m, const char *name, const char *help,
                         const char *const *labels, const double *bounds, size_t nbounds,
                         gk_metric **out)
{
    return register_error(
        do_register(m, GK_METRIC_HISTOGRAM, name, help, labels, bounds, nbounds, out), "histogram",
        name);
}

/* --- updates ------------------------------------------------------------------------------- */

static void atomic_add_double(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    for (;;) {
        uint64_t want = gk__double_to_bits(gk__bits_to_double(old) + v);
        if (atomic_compare_exchange_weak_explicit(bits, &old, want, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}

void gk_counter_add(gk_metric *c, double v)
{
    if (!c || c->fam->type != GK_METRIC_COUNTER || !(v >= 0.0))
        return;
    atomic_add_double(&c->value_bits, v);
}

void gk_gauge_set(gk_metric *g, double v)
{
    if (!g || g->fam->type != GK_METRIC_GAUGE)
        return;
    atomic_store_explicit(&g->value_bits, gk__double_to_bits(v), memory_order_relaxed);
}

void gk_gauge_add(gk_metric *g, double v)
{
    if (!g || g->fam->type != GK_METRIC_GAUGE)
        return;
    atomic_add_double(&g->value_bits, v);
}

void gk_histogram_observe(gk_metric *h, double v)
{
    if (!h || h->fam->type != GK_METRIC_HISTOGRAM || isnan(v))
        return;
    const gk__family *f = h->fam;
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&h->value_bits, v);
}

double gk_metric_value(const gk_metric *s)
{
    if (!s)
        return NAN;
    return gk__bits_to_double(
        atomic_load_explicit(&((gk_metric *)s)->value_bits, memory_order_relaxed));
}

uint64_t gk_metric_count(const gk_metric *s)
{
    if (!s || s->fam->type != GK_METRIC_HISTOGRAM)
        return 0;
    uint64_t n = 0;
    for (size_t i = 0; i <= s->fam->nbounds; i++)
        n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return n;
}

/* --- collectors and readers ---------------------------------------------------------------- */

int gk_metrics_add_collector(gk_metrics *m, gk_metrics_collect_fn fn, void *user)
{
    if (!m || !fn)
        return gk__error(-EINVAL, "gk_metrics_add_collector: registry or function is NULL");
    int rc = 0;
    pthread_mutex_lock(&m->collect_lock);
    if (m->ncollectors == GK__MAX_COLLECTORS)
        rc = gk__error(-ENOSPC, "gk_metrics_add_collector: %d collectors already",
                       GK__MAX_COLLECTORS);
    else
        m->collectors[m->ncollectors++] = (gk__collector){fn, user};
    pthread_mutex_unlock(&m->collect_lock);
    return rc;
}

int gk_metrics_remove_collector(gk_metrics *m, gk_metrics_collect_fn fn, void *user)
{
    if (!m || !fn)
        return gk__error(-EINVAL, "gk_metrics_remove_collector: registry or function is NULL");
    int rc = gk__error(-ENOENT, "gk_metrics_remove_collector: no such collector");
    pthread_mutex_lock(&m->collect_lock);
    for (size_t i = 0; i < m->ncollectors; i++) {
        if (m->collectors[i].fn == fn && m->collectors[i].user == user) {
            fn(user); /* the object's final figures */
            memmove(&m->collectors[i], &m->collectors[i + 1],
                    (m->ncollectors - i - 1) * sizeof m->collectors[0]);
            m->ncollectors--;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&m->collect_lock);
    return rc;
}

void gk_metrics_collect(gk_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->collect_lock);
    for (size_t i = 0; i < m->ncollectors; i++)
        m->collectors[i].fn(m->collectors[i].user);
    pthread_mutex_unlock(&m->collect_lock);
}

int gk_metrics_foreach(gk_metrics *m, gk_metrics_visit_fn fn, void *user)
{
    if (!m || !fn)
        return gk__error(-EINVAL, "gk_metrics_foreach: registry or function is NULL");
    gk_metrics_collect(m);
    int rc = 0;
    char name[300];
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nfams && !rc; i++) {
        const gk__family *f = m->fams[i];
        snprintf(name, sizeof name, "%s%s", f->name, f->type == GK_METRIC_COUNTER ? "_total" : "");
        for (size_t j = 0; j < f->nseries && !rc; j++) {
            const gk_metric *s = f->series[j];
            gk_metric_sample smp = {.size = sizeof smp,
                                    .metric = s,
                                    .name = name,
                                    .type = f->type,
                                    .nlabels = f->nlabels,
                                    .label_names = (const char *const *)f->label_names,
                                    .label_values = (const char *const *)s->label_values,
                                    .value = gk_metric_value(s),
                                    .count = gk_metric_count(s),
                                    .serial = s->serial};
            rc = fn(user, &smp);
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int gk_metrics_remove(gk_metrics *m, gk_metric *series)
{
    if (!m || !series)
        return gk__error(-EINVAL, "gk_metrics_remove: registry or series is NULL");
    int rc = -ENOENT;
    pthread_mutex_lock(&m->lock);
    gk__family *f = series->fam;
    for (size_t i = 0; i < m->nfams && rc; i++) {
        if (m->fams[i] != f)
            continue;
        for (size_t j = 0; j < f->nseries; j++) {
            if (f->series[j] != series)
                continue;
            memmove(&f->series[j], &f->series[j + 1], (f->nseries - j - 1) * sizeof *f->series);
            f->nseries--;
            m->nseries--;
            series_free(series, f->nlabels);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (rc)
        return gk__error(rc, "gk_metrics_remove: the series is not in this registry");
    return 0;
}

size_t gk_metrics_series_count(gk_metrics *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->lock);
    size_t n = m->nseries;
    pthread_mutex_unlock(&m->lock);
    return n;
}

int gk_metrics_on_first_series(gk_metrics *m, gk_metrics_first_fn fn, void *user)
{
    if (!m || !fn)
        return gk__error(-EINVAL, "gk_metrics_on_first_series: registry or function is NULL");
    pthread_mutex_lock(&m->lock);
    m->first_fn = fn;
    m->first_user = user;
    int now = m->nseries > 0 && !m->first_fired;
    if (now)
        m->first_fired = 1;
    pthread_mutex_unlock(&m->lock);
    if (now)
        fn(user, m);
    return 0;
}
