/* The monitor: a sampler thread on absolute monotonic deadlines that reads telemetry (NVML and
 * the host), keeps one fixed-size ring per series, publishes every reading into a metrics
 * registry (for /metrics), evaluates alert rules, and reports its own cost.
 *
 * Tiers: the fast tier (GPU utilization, memory, power, temperature, clocks, clock-event reasons;
 * host CPU, memory, load, disks, network, the process tree) runs every `interval`; the slow tier
 * (GPU processes, ECC, energy, power limit, MIG; filesystems) every `slow_every` ticks; PCIe
 * throughput only when `pcie` is set (each read blocks ~40 ms per GPU).
 *
 * Series are named like the Prometheus metrics they feed ("gpukit_gpu_power_watts") with a
 * label text ("gpu=\"0\",uuid=\"GPU-...\""). Counters (names ending in _total) are stored raw in
 * the rings and turned into per-second rates on read (gk_monitor_rate), a decrease counting as a
 * reset. Metric names: docs/monitor.md.
 *
 * Threads: gk_monitor_start runs the sampler on its own thread; every read function may be
 * called from any thread meanwhile (the rings are guarded by one mutex held only to copy). */
#ifndef GPUKIT_MONITOR_H
#define GPUKIT_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "telemetry.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_monitor gk_monitor;

/* Whether the monitor reads GPUs. */
typedef enum gk_monitor_gpu_mode {
    GK_MONITOR_GPU_AUTO = 0,   /* use NVML when it loads; otherwise host-only with one log line */
    GK_MONITOR_GPU_OFF = 1,    /* never load NVML */
    GK_MONITOR_GPU_REQUIRE = 2 /* gk_monitor_create fails with GK_ENOGPU without NVML */
} gk_monitor_gpu_mode;

/* An alert changed state (see gk_monitor_add_alert). Called on the sampler thread (or the
 * thread calling gk_monitor_tick); must not call gk_monitor_stop/destroy. */
typedef enum gk_alert_state {
    GK_ALERT_INACTIVE = 0,
    GK_ALERT_PENDING = 1,
    GK_ALERT_FIRING = 2,
    GK_ALERT_RESOLVED = 3 /* reported once when a firing alert's condition ends */
} gk_alert_state;

typedef void (*gk_alert_fn)(void *user, const char *rule_name, const char *series_labels,
                            gk_alert_state state, double value);

typedef struct gk_monitor_config {
    size_t size;              /* sizeof(gk_monitor_config) (set by gk_monitor_config_default) */
    double interval;          /* fast tier period, seconds; default 1; at least 0.001 */
    unsigned slow_every;      /* slow tier every N fast ticks; default 5 */
    double retention;         /* seconds of history kept per series; default 600 */
    gk_monitor_gpu_mode gpu;  /* default AUTO */
    int host;                 /* read the host (default 1) */
    int pcie;                 /* opt-in PCIe throughput (default 0) */
    int pid;                  /* root of a process tree to watch (0: none) */
    const char *nvml_library; /* NULL: libnvidia-ml.so.1 (copied) */
    const char *proc_root;    /* NULL: /proc (copied) */
    gk_metrics *metrics;      /* registry to publish into; NULL: gk_metrics_default() */
    gk_logger logger;         /* default gk_logger_default() */
    gk_alert_fn on_alert;     /* NULL: alerts only log */
    void *alert_user;
    unsigned max_process_series; /* gpukit_gpu_process_memory_used_bytes series (one per process
                                    and GPU) exported at most; the others are counted in
                                    gpukit_gpu_process_series_dropped_total; default 256 */
} gk_monitor_config;

/* Fills `cfg` with the defaults above. Reads no environment variable. */
GK_API void gk_monitor_config_default(gk_monitor_config *cfg, size_t size);
#define gk_monitor_config_default(cfg) (gk_monitor_config_default)((cfg), sizeof *(cfg))

/* Applies the environment to `cfg`: GK_LOG (the logger's level), GK_NVML_LIBRARY
 * (nvml_library) and GK_PROC_ROOT (proc_root), the last two pointing into the environment.
 * Returns 0 or -EINVAL naming the bad variable. */
GK_API int gk_monitor_config_from_env(gk_monitor_config *cfg);

/* Creates a monitor (not yet sampling). Loads NVML per cfg->gpu: in AUTO mode a missing library
 * or driver logs one info line with the reason and the monitor runs host-only. Returns 0,
 * -EINVAL (bad config), GK_ENOGPU (REQUIRE without NVML), -ENOENT (proc root unreadable) or
 * -ENOMEM, with the message in gk_last_error(). `cfg` NULL is the environment's form:
 * gk_monitor_config_default() + gk_monitor_config_from_env(). Destroy with gk_monitor_destroy. */
GK_API int gk_monitor_create(const gk_monitor_config *cfg, gk_monitor **out);

/* Starts the sampler thread (the first tick runs at once). Returns 0, -EBUSY when already
 * running, or a pthread error (negative). */
GK_API int gk_monitor_start(gk_monitor *m);

/* Stops and joins the sampler thread; returns within one tick's duration. 0 also when it was
 * not running. */
GK_API int gk_monitor_stop(gk_monitor *m);

/* Stops if needed and frees everything. NULL is a no-op. */
GK_API void gk_monitor_destroy(gk_monitor *m);

/* Runs one tick now on the calling thread (all tiers due on that tick). Returns 0, -EBUSY while
 * the sampler thread runs, or -EINVAL. */
GK_API int gk_monitor_tick(gk_monitor *m);

/* Watches the process tree rooted at `pid` from the next tick on (0: none), as cfg.pid does: its
 * gpukit_process_tree_* series, and one set of gpukit_rank_* series per launcher's worker in it.
 * For a monitor created before the process it watches exists (`gpukit run` starts the command
 * after opening its readers). Returns 0, -EINVAL or -ENOMEM. Thread-safe. */
GK_API int gk_monitor_watch(gk_monitor *m, int pid);

/* 1 when NVML is in use; reason receives why not ("" when in use). Thread-safe. */
GK_API int gk_monitor_gpu_available(gk_monitor *m, char *reason, size_t len);

/* The NVML handle in use (NULL when host-only), for callers that want raw samples. Owned by the
 * monitor. */
GK_API gk_nvml *gk_monitor_nvml(gk_monitor *m);

/* The registry the monitor publishes into. */
GK_API gk_metrics *gk_monitor_metrics(gk_monitor *m);

/* --- series -------------------------------------------------------------------------------- */

typedef struct gk_series_point {
    int64_t t_ns; /* CLOCK_REALTIME of the tick, ns */
    double value;
} gk_series_point;

typedef struct gk_series_info {
    size_t size;      /* bytes filled (see gpukit/version.h) */
    char name[96];    /* "gpukit_gpu_power_watts" */
    char labels[256]; /* "gpu=\"0\",uuid=\"GPU-...\"" ("" for none) */
    int counter;      /* 1 when stored raw and read as a rate */
    size_t count;     /* points held now */
    size_t capacity;  /* ring size */
} gk_series_info;

/* Number of series so far (grows as devices and mounts are seen). Thread-safe. */
GK_API size_t gk_monitor_series_count(gk_monitor *m);

/* Info of series `idx`. Returns 0, -EINVAL or -ERANGE. Thread-safe. */
GK_API int gk_monitor_series_info(gk_monitor *m, size_t idx, gk_series_info *out, size_t size);
#define gk_monitor_series_info(m, idx, out)                                                        \
    (gk_monitor_series_info)((m), (idx), (out), sizeof *(out))

/* Finds the series with this name and exact label text (NULL or "" for none). Returns 0 and sets
 * *idx, or -ENOENT. Thread-safe. */
GK_API int gk_monitor_find(gk_monitor *m, const char *name, const char *labels, size_t *idx);

/* Copies up to `cap` newest points of series `idx` (raw values), oldest first. Returns 0 (and
 * *n), -ERANGE or -EINVAL. Thread-safe. */
GK_API int gk_monitor_read(gk_monitor *m, size_t idx, gk_series_point *buf, size_t cap, size_t *n);

/* For a counter: per-second rates between consecutive points (newest up to `cap`), each stamped
 * with the later point's time; a decrease counts as a reset (the increase is the new value).
 * For a gauge: -EINVAL. Returns 0 (and *n), -ERANGE or -EINVAL. Thread-safe. */
GK_API int gk_monitor_rate(gk_monitor *m, size_t idx, gk_series_point *buf, size_t cap, size_t *n);

/* Summary (count, mean, std, min, max, p50/p90/p99) of the points held (gauges) or of the
 * rates (counters). Returns 0, -EINVAL, -ERANGE or -ENOMEM. Thread-safe. */
GK_API int gk_monitor_summary(gk_monitor *m, size_t idx, gk_summary_stats *out, size_t size);
#define gk_monitor_summary(m, idx, out) (gk_monitor_summary)((m), (idx), (out), sizeof *(out))

/* Self-metrics. */
typedef struct gk_monitor_stats {
    size_t size;              /* bytes filled (see gpukit/version.h) */
    uint64_t ticks;           /* ticks run */
    uint64_t overruns;        /* deadlines missed (a tick took longer than the interval) */
    uint64_t nvml_errors;     /* failed NVML calls */
    double last_tick_seconds; /* duration of the last tick */
    double max_tick_seconds;
    double total_tick_seconds; /* all ticks together (the monitor's sampling cost) */
    double interval;           /* the configured fast-tier period, seconds */
    int running;               /* 1 while the sampler thread runs */
    double seconds_since_tick; /* since the last tick ended; -1 before the first */
} gk_monitor_stats;

/* Copies the self-metrics. Returns 0 or -EINVAL. Thread-safe. */
GK_API int gk_monitor_get_stats(gk_monitor *m, gk_monitor_stats *out, size_t size);
#define gk_monitor_get_stats(m, out) (gk_monitor_get_stats)((m), (out), sizeof *(out))

/* --- alerts -------------------------------------------------------------------------------- */

/* Adds a rule "METRIC{label="value",...} OP VALUE for DURATION" (labels and "for" optional; OP
 * one of > >= < <= == !=; DURATION as in gk_parse_duration: 30s, 5m, 1h), named `name` (a
 * metric-style name, used in logs and callbacks). Counters compare their per-second rate. The
 * rule applies to every series whose name matches and whose labels include the given ones.
 * Each matching series goes inactive -> pending (condition true) -> firing (true for the whole
 * duration; immediately when it is 0) -> resolved (condition false again) -> inactive; every
 * change is logged at warn level ("alert NAME firing: gpu=... value=...") and passed to
 * cfg.on_alert. Returns 0, GK_ESYNTAX (the message, naming the position, goes to err), -ENOSPC
 * (64 rules) or -ENOMEM. Thread-safe. */
GK_API int gk_monitor_add_alert(gk_monitor *m, const char *name, const char *rule, char *err,
                                size_t errlen);

/* The state of rule `name` on the series with `labels` (exact label text). Returns the state,
 * or GK_ALERT_INACTIVE when unknown. Thread-safe. */
GK_API gk_alert_state gk_monitor_alert_state(gk_monitor *m, const char *name, const char *labels);

/* "inactive", "pending", "firing", "resolved". */
GK_API const char *gk_alert_state_name(gk_alert_state s);

#ifdef __cplusplus
}
#endif
#endif
