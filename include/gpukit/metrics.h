/* Metrics: counters, gauges and histograms in a registry, rendered as Prometheus text 0.0.4 or
 * OpenMetrics 1.0; logged values with timestamps; streaming summaries (count, mean, std, min,
 * max and quantiles from a mergeable log-linear histogram).
 *
 * Names follow Prometheus rules: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and may not start with "__" ("le" is reserved for histograms). Label
 * values are any text; the renderers escape backslash, double quote and newline. Counters are
 * registered with or without the "_total" suffix; both renderers print the samples as
 * NAME_total. Use base units (seconds, bytes, ratios 0-1).
 *
 * Updates (gk_counter_add, gk_gauge_set, gk_histogram_observe) are lock-free C11 atomics and may
 * run on any thread at any time; registration and rendering take the registry's mutex. */
#ifndef GPUKIT_METRICS_H
#define GPUKIT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_metrics gk_metrics; /* a registry of metric families */
typedef struct gk_metric gk_metric;   /* one series: a family plus one label set */

typedef enum gk_metric_type {
    GK_METRIC_COUNTER = 0,
    GK_METRIC_GAUGE = 1,
    GK_METRIC_HISTOGRAM = 2
} gk_metric_type;

typedef enum gk_metrics_format {
    GK_METRICS_PROMETHEUS = 0, /* text/plain; version=0.0.4 */
    GK_METRICS_OPENMETRICS = 1 /* application/openmetrics-text; version=1.0.0 */
} gk_metrics_format;

typedef struct gk_metrics_config {
    size_t size;                  /* sizeof(gk_metrics_config) (set by gk_metrics_config_default) */
    size_t max_families;          /* distinct metric names; default 1024 */
    size_t max_series_per_family; /* label sets per name; default 1000 (cardinality cap) */
    size_t max_labels;            /* label pairs per series; default 16 */
    size_t log_capacity;          /* points kept per logged name (a ring); default 4096 */
    size_t max_logs;              /* distinct logged names; default 1024 */
} gk_metrics_config;

/* A streaming summary's figures. Quantiles come from the log-linear histogram (relative error
 * at most 1% for |v| in [1e-9, 1e15]); all fields are 0 when count is 0 (std is 0 for count < 2).
 */
typedef struct gk_summary_stats {
    size_t size; /* bytes filled (see gpukit/version.h) */
    uint64_t count;
    double sum, mean, std, min, max;
    double p50, p90, p99;
} gk_summary_stats;

/* One logged point: realtime timestamp (ns since the Unix epoch) and value. */
typedef struct gk_metric_point {
    int64_t t_ns;
    double value;
} gk_metric_point;

/* Fills `cfg` with the defaults listed above. */
GK_API void gk_metrics_config_default(gk_metrics_config *cfg, size_t size);
#define gk_metrics_config_default(cfg) (gk_metrics_config_default)((cfg), sizeof *(cfg))

/* Creates an empty registry. `cfg` may be NULL (defaults). Returns 0, -EINVAL (a zero limit) or
 * -ENOMEM. Free with gk_metrics_destroy. */
GK_API int gk_metrics_create(const gk_metrics_config *cfg, gk_metrics **out);

/* Frees the registry and every gk_metric it handed out. NULL is a no-op. No other thread may use
 * the registry or its metrics during or after the call. Never call it on gk_metrics_default(). */
GK_API void gk_metrics_destroy(gk_metrics *m);

/* The process-default registry, created with the default config on first call (thread-safe,
 * pthread_once) and kept for the life of the process. The library's parts (pool, loader,
 * monitor) publish into it when their config names no registry. Returns NULL only if that first
 * allocation failed. */
GK_API gk_metrics *gk_metrics_default(void);

/* Registers (or finds) the series `name` with `labels`, a NULL-terminated array of alternating
 * label names and values ({"gpu", "0", "uuid", "GPU-1", NULL}; NULL for none). The first
 * registration of a name fixes its type and help (help may be NULL); a later call with the same
 * name and labels returns the same series. Returns 0 and sets *out (owned by the registry),
 * -EINVAL (bad name, label name, odd label array, type clash with the name's suffix), -EEXIST
 * (the name exists with another type or other label names, or is a logged name, or a logged
 * name's _sum/_count), -ENOSPC (a cap in the config reached) or -ENOMEM. Thread-safe. */
GK_API int gk_metrics_counter(gk_metrics *m, const char *name, const char *help,
                              const char *const *labels, gk_metric **out);
GK_API int gk_metrics_gauge(gk_metrics *m, const char *name, const char *help,
                            const char *const *labels, gk_metric **out);

/* As above for a histogram with `nbounds` strictly increasing finite upper bounds (the "le"
 * buckets; +Inf is added). bounds NULL / nbounds 0 gives Prometheus' defaults (5 ms .. 10 s). The
 * first registration of the name fixes the bounds; later ones must pass the same or NULL. */
GK_API int gk_metrics_histogram(gk_metrics *m, const char *name, const char *help,
                                const char *const *labels, const double *bounds, size_t nbounds,
                                gk_metric **out);

/* Updates. Lock-free and thread-safe; a NULL metric or one of the wrong type is ignored.
 * gk_counter_add ignores negative and NaN increments (counters only go up). */
GK_API void gk_counter_add(gk_metric *c, double v);
GK_API void gk_gauge_set(gk_metric *g, double v);
GK_API void gk_gauge_add(gk_metric *g, double v);
GK_API void gk_histogram_observe(gk_metric *h, double v);

/* Reads a series: the counter's or gauge's value, or a histogram's sum (NaN for NULL).
 * gk_metric_count gives a histogram's observation count (0 for other types). Thread-safe. */
GK_API double gk_metric_value(const gk_metric *s);
GK_API uint64_t gk_metric_count(const gk_metric *s);

/* Checks a metric name or a label name against the rules above; 0 or -EINVAL. */
GK_API int gk_metrics_check_name(const char *name);
GK_API int gk_metrics_check_label_name(const char *name);

/* Renders every family in registration order (series in registration order), then every logged
 * name as a summary (quantiles 0.5, 0.9, 0.99 with _sum and _count, over all values logged), into
 * a malloc'd, NUL-terminated buffer: *out (free() it) and *len (without the NUL). OpenMetrics
 * output ends with "# EOF". Returns 0, -EINVAL or -ENOMEM. Thread-safe (takes the registry's mutex; updates
 * continue meanwhile, so a render is not an atomic snapshot across series). */
GK_API int gk_metrics_render(gk_metrics *m, gk_metrics_format fmt, char **out, size_t *len);

/* The HTTP Content-Type of a format ("text/plain; version=0.0.4; charset=utf-8" or
 * "application/openmetrics-text; version=1.0.0; charset=utf-8"). Static storage. */
GK_API const char *gk_metrics_content_type(gk_metrics_format fmt);

/* Picks the format for an HTTP Accept header: OpenMetrics when it names
 * application/openmetrics-text (with a q greater than text/plain's, or text/plain absent),
 * otherwise Prometheus 0.0.4. NULL gives Prometheus. */
GK_API gk_metrics_format gk_metrics_negotiate(const char *accept);

/* --- collectors and readers ---------------------------------------------------------------- */

/* A collector refreshes some of the registry's series from an object's own state (a pool sets
 * its memory gauges from its statistics), so that object's hot paths never touch the registry:
 * the figures are read only when somebody reads the registry. */
typedef void (*gk_metrics_collect_fn)(void *user);

/* Adds a collector (at most 256 per registry). Returns 0, -EINVAL, -ENOSPC or -ENOMEM.
 * Thread-safe. */
GK_API int gk_metrics_add_collector(gk_metrics *m, gk_metrics_collect_fn fn, void *user);

/* Runs the collector a last time (so the series hold the object's final figures), then removes
 * it; once this returns it is never called again, so the object may be freed. Returns 0, -EINVAL
 * or -ENOENT. Thread-safe; must not be called from inside a collector. */
GK_API int gk_metrics_remove_collector(gk_metrics *m, gk_metrics_collect_fn fn, void *user);

/* Runs every collector, one at a time (collectors are serialized with each other and with
 * removal). gk_metrics_render and gk_metrics_foreach call it first; call it yourself before
 * reading single series with gk_metric_value. Thread-safe. */
GK_API void gk_metrics_collect(gk_metrics *m);

/* One series as gk_metrics_foreach presents it. Strings belong to the registry and are valid
 * during the callback. */
typedef struct gk_metric_sample {
    size_t size;             /* sizeof(gk_metric_sample) in the library */
    const gk_metric *metric; /* the series (its identity across calls) */
    const char *name;        /* the name as rendered: a counter's ends in "_total" */
    gk_metric_type type;
    size_t nlabels;                  /* label pairs */
    const char *const *label_names;  /* nlabels names */
    const char *const *label_values; /* nlabels values */
    double value;                    /* counter or gauge value; a histogram's sum */
    uint64_t count;                  /* a histogram's observation count; 0 for the others */
    uint64_t serial; /* unique among the registry's series, also across removals (a reader that
                        keeps per-series state by `metric` checks it: addresses are reused) */
} gk_metric_sample;

/* Calls fn(user, sample) for every series, in registration order, after running the collectors.
 * The registry's lock is held during the walk: fn must not register series or call back into
 * the registry (updates with gk_counter_add and friends are fine). A non-zero return from fn
 * stops the walk and is returned. Returns 0, -EINVAL or fn's value. Thread-safe. */
typedef int (*gk_metrics_visit_fn)(void *user, const gk_metric_sample *sample);
GK_API int gk_metrics_foreach(gk_metrics *m, gk_metrics_visit_fn fn, void *user);

/* Removes one series (its family stays, with its other series) and frees it: for series whose
 * subject has gone, such as a process that exited. Only the code that registered the series may
 * remove it, and nothing may use the pointer afterwards (registering the same name and labels
 * again returns a new series). Returns 0, -EINVAL, or -ENOENT when it is not in this registry.
 * Thread-safe; must not be called from a collector or from inside gk_metrics_foreach. */
GK_API int gk_metrics_remove(gk_metrics *m, gk_metric *series);

/* Number of series registered (every family's label sets). Thread-safe. */
GK_API size_t gk_metrics_series_count(gk_metrics *m);

/* Asks for fn(user, m) to be called once, on the registering thread and without the registry's
 * lock, right after the registry's first series is registered (at once when it already has
 * one). One such watcher per registry; a second call replaces it. This is how a reader that
 * should exist only for a registry in use (the process publisher) starts lazily. Returns 0 or
 * -EINVAL. Thread-safe. */
typedef void (*gk_metrics_first_fn)(void *user, gk_metrics *m);
GK_API int gk_metrics_on_first_series(gk_metrics *m, gk_metrics_first_fn fn, void *user);

/* --- logged values ------------------------------------------------------------------------ */

/* Logs `value` under `name` with the current realtime timestamp: keeps the point in a ring of
 * cfg.log_capacity points (the oldest dropped) and adds it to the name's running summary (which
 * covers every value ever logged; gk_metrics_render exports it as a Prometheus summary). Returns
 * 0, -EINVAL (bad name, a name ending in _total, _sum, _count, _bucket or _created, NaN or an
 * infinity), -EEXIST (a metric family has that name), -ENOSPC (max_logs names reached) or
 * -ENOMEM. Thread-safe (a mutex per registry). */
GK_API int gk_metrics_log(gk_metrics *m, const char *name, double value);

/* gk_metrics_log on gk_metrics_default(); -ENOMEM if that registry cannot be made. */
GK_API int gk_metric_log(const char *name, double value);

/* The summary of everything logged under `name`. Returns 0 or -ENOENT. Thread-safe. */
GK_API int gk_metrics_log_summary(gk_metrics *m, const char *name, gk_summary_stats *out,
                                  size_t size);
#define gk_metrics_log_summary(m, name, out)                                                       \
    (gk_metrics_log_summary)((m), (name), (out), sizeof *(out))

/* Copies up to `cap` of the newest points of `name`, oldest first, into buf and sets *n. Returns
 * 0 or -ENOENT. Thread-safe. */
GK_API int gk_metrics_log_points(gk_metrics *m, const char *name, gk_metric_point *buf, size_t cap,
                                 size_t *n);

/* --- summaries ---------------------------------------------------------------------------- */

/* A streaming summary: Welford's mean and variance, min, max, and a log-linear histogram (each
 * power of two split into 64 linear buckets, allocated as values arrive) for quantiles. Two
 * summaries merge exactly (the merged one equals one fed both streams, up to rounding). Not
 * thread-safe: one writer at a time, or an external lock. */
typedef struct gk_summary gk_summary;

/* Creates an empty summary. Returns 0 or -ENOMEM. */
GK_API int gk_summary_create(gk_summary **out);
/* Frees it; NULL is a no-op. */
GK_API void gk_summary_destroy(gk_summary *s);
/* Adds one value. Returns 0, -EINVAL for NaN or an infinity, or -ENOMEM (the value is then
 * counted in the moments but not the quantiles). */
GK_API int gk_summary_add(gk_summary *s, double v);
/* Adds every value of src into dst. Returns 0 or -ENOMEM. */
GK_API int gk_summary_merge(gk_summary *dst, const gk_summary *src);
/* Empties the summary (keeps its memory). */
GK_API void gk_summary_reset(gk_summary *s);
/* The q-quantile (0 <= q <= 1) by nearest rank: the value at rank ceil(q*count) (rank 1 for
 * q = 0), within 1% relative error and clamped to [min, max]. NaN when empty or q is outside
 * [0, 1]. */
GK_API double gk_summary_quantile(const gk_summary *s, double q);
/* Fills `out`. Returns 0 or -EINVAL. */
GK_API int gk_summary_get(const gk_summary *s, gk_summary_stats *out, size_t size);
#define gk_summary_get(s, out) (gk_summary_get)((s), (out), sizeof *(out))

#ifdef __cplusplus
}
#endif
#endif
