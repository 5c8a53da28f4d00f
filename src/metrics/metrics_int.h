/* Private structures of the metrics registry, shared by the registry, the renderers and the
 * value log. */
#ifndef GK_METRICS_INT_H
#define GK_METRICS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "gpukit/metrics.h"

typedef struct gk__family gk__family;

struct gk_metric {
    gk__family *fam;
    char **label_values;         /* fam->nlabels strings */
    _Atomic uint64_t value_bits; /* counter or gauge value, or histogram sum, as double bits */
    _Atomic uint64_t *buckets;   /* histogram: nbounds + 1 counts (last is +Inf), not cumulative */
    uint64_t serial;             /* unique in the registry: a removed series' address may be
                                    reused, its serial never */
};

struct gk__family {
    char *name; /* base name: a counter's without "_total" */
    char *help; /* "" when none */
    gk_metric_type type;
    size_t nlabels;
    char **label_names;
    double *bounds; /* histogram upper bounds, ascending, finite */
    size_t nbounds;
    gk_metric **series;
    size_t nseries, cap;
};

typedef struct gk__log gk__log;

/* A registered collector. */
typedef struct gk__collector {
    gk_metrics_collect_fn fn;
    void *user;
} gk__collector;

#define GK__MAX_COLLECTORS 256

struct gk_metrics {
    gk_metrics_config cfg;
    pthread_mutex_t lock; /* families and their series lists */
    gk__family **fams;
    size_t nfams, cap;
    size_t nseries; /* all families' series */
    uint64_t next_serial;
    /* Collectors: collect_lock serializes running them with adding and removing them; lock
     * order: collect_lock, then lock (a collector may update series but not register them). */
    pthread_mutex_t collect_lock;
    gk__collector collectors[GK__MAX_COLLECTORS];
    size_t ncollectors;
    gk_metrics_first_fn first_fn; /* guarded by lock */
    void *first_user;
    int first_fired;
    pthread_mutex_t log_lock; /* logged values; lock order: lock, then log_lock */
    gk__log **logs;
    size_t nlogs, logs_cap;
};

/* Double <-> bits for the atomics. */
double gk__bits_to_double(uint64_t bits);
uint64_t gk__double_to_bits(double v);

/* Writes a number the way Prometheus parses it: shortest round-trip form, "+Inf", "-Inf", "NaN". */
void gk__metrics_format_number(double v, char *buf, size_t len);

/* A growing text for the renderers. Once memory runs out `failed` is set and later writes do
 * nothing (the caller discards the text). p is NUL-terminated once anything was written. */
typedef struct gk__text {
    char *p;
    size_t len, cap;
    int failed;
} gk__text;

void gk__text_put(gk__text *t, const char *s, size_t n);
void gk__text_puts(gk__text *t, const char *s);
void gk__text_printf(gk__text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 when `name` is a family's base name. Caller holds m->lock. */
int gk__metrics_has_family(gk_metrics *m, const char *name);

/* 1 when `name` is a logged name. Caller holds m->log_lock. */
int gk__metrics_has_log(gk_metrics *m, const char *name);

/* Renders the logged names as summaries (quantiles 0.5, 0.9, 0.99, _sum, _count). Caller holds
 * m->lock; takes m->log_lock. */
void gk__metrics_render_logs(gk_metrics *m, gk__text *out, gk_metrics_format fmt);

/* Frees the value log of a registry (called by gk_metrics_destroy). */
void gk__metrics_logs_free(gk_metrics *m);

#endif
