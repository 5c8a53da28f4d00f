/* Private structures of the monitor: the series table with its rings, the alert rules, and the
 * sampler state. Lock order: gk_monitor.lock, then the registry's lock (taken inside publish). */
#ifndef GK_MONITOR_INT_H
#define GK_MONITOR_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "gpukit/monitor.h"

typedef struct gk__series {
    char name[96];
    char labels[256];
    int counter;
    gk_series_point *ring;
    size_t cap, head, count;
    gk_metric *metric; /* the registry's series (NULL if the registry refused it) */
    double last_raw;   /* counters: last raw value, to publish increments */
    int has_last;
} gk__series;

#define GK__MAX_RULES    64
#define GK__MAX_MATCHERS 8

typedef struct gk__alert_instance {
    size_t series;
    gk_alert_state state;
    int64_t since_ns; /* monotonic start of the pending period */
    double value;
} gk__alert_instance;

typedef enum gk__op { OP_GT, OP_GE, OP_LT, OP_LE, OP_EQ, OP_NE } gk__op;

typedef struct gk__rule {
    char name[96];
    char metric[96];
    size_t nmatchers;
    char matchers[GK__MAX_MATCHERS][160]; /* key="escaped value" */
    gk__op op;
    double threshold;
    double for_seconds;
    gk__alert_instance *inst;
    size_t ninst, cap;
} gk__rule;

/* A state change found during evaluation, reported after the lock is released. */
typedef struct gk__alert_event {
    char rule[96];
    char labels[256];
    gk_alert_state state;
    double value;
} gk__alert_event;

/* A rank's CPU seconds at the last tick (derived.c). */
typedef struct gk__rank_prev {
    int rank;
    double cpu; /* < 0: not seen yet */
} gk__rank_prev;

#define GK__MAX_RANKS   64
#define GK__MAX_WORKERS 64

/* What the derived gauges remember between ticks (derived.c). */
typedef struct gk__derived {
    int64_t mono_ns; /* the previous tick; 0 before the first */
    gk_cpu_times cpu, per_cpu[GK_HOST_MAX_CPUS];
    unsigned ncpus;
    int have_cpu, have_tree;
    int tree_root; /* the tree the tree_* figures are of */
    double tree_cpu, tree_read, tree_write;
    gk__rank_prev ranks[GK__MAX_RANKS];
    size_t nranks;
} gk__derived;

typedef struct gk__proc_entry gk__proc_entry;

struct gk_monitor {
    gk_monitor_config cfg;
    char nvml_library[256];
    char proc_root[256];
    gk_metrics *metrics;
    gk_nvml *nvml;
    char gpu_reason[256];
    gk_gpu_sample *gpu; /* one per device */
    gk_host *host;
    gk_host_sample *host_sample;
    int64_t interval_ns;

    pthread_mutex_t lock; /* series, rules, stats */
    gk__series **series;
    size_t nseries, series_cap, hint;
    gk__rule *rules[GK__MAX_RULES];
    size_t nrules;
    gk__alert_event *events; /* pending reports of this tick */
    size_t nevents, events_cap;
    gk_monitor_stats stats;
    uint64_t tickno;
    int64_t tick_t_ns; /* realtime stamp of the tick being published */
    int64_t tick_mono_ns;
    int64_t last_tick_end_ns; /* monotonic; 0 before the first tick */

    gk_metric *duration_hist; /* gpukit_sampler_duration_seconds */
    gk__derived derived;
    atomic_int watch_pid;    /* the watched tree's root (cfg.pid, or gk_monitor_watch) */
    gk_proc_worker *workers; /* GK__MAX_WORKERS, when cfg.pid is set */
    gk__proc_entry *procs;   /* per-process GPU memory series (procs.c); ticking thread only */
    size_t nprocs, procs_cap, nexported;
    gk_metric *procs_dropped; /* gpukit_gpu_process_series_dropped_total */
    int host_pidns;           /* NVML's pids are this monitor's /proc pids */

    pthread_mutex_t run_lock; /* thread start/stop and the sleep */
    pthread_cond_t wake;      /* CLOCK_MONOTONIC */
    pthread_t thread;
    int running;
    atomic_int stop;
    atomic_int ticking; /* a tick is in progress on some thread */
};

/* Appends a point for (name, labels) at the current tick, creating the series and its registry
 * metric on first use. labels: NULL-terminated name/value pairs. Caller holds m->lock. */
void gk__monitor_publish(gk_monitor *m, const char *name, const char *help,
                         const char *const *labels, double value, int counter);

/* Publishes the derived gauges of this tick (derived.c): host CPU and memory shares, the tree's
 * cores and I/O rates (t may be NULL), the per-rank series of the workers, GPU memory shares.
 * Caller holds m->lock. */
void gk__monitor_derived(gk_monitor *m, const gk_proc_tree *t, const gk_proc_worker *w, size_t nw,
                         unsigned ndev);

/* Sets up the per-process GPU memory series (procs.c) once the GPUs are known; 0 or -ENOMEM. */
int gk__monitor_processes_init(gk_monitor *m);

/* Updates them from this tick's process lists (w: the watched tree's workers, for ranks):
 * registers new processes' series up to the cap, removes those of processes gone. Called by the
 * ticking thread without m->lock. */
void gk__monitor_processes(gk_monitor *m, unsigned ndev, const gk_proc_worker *w, size_t nw);

/* Removes the series and frees the table. */
void gk__monitor_processes_free(gk_monitor *m);

/* Keeps the watched tree's CPU seconds from falling between ticks (a child reaped during the
 * read is missed by that read). */
void gk__monitor_tree_cpu(gk_monitor *m, gk_proc_tree *t);

/* Builds the label text of a label array into buf. */
void gk__labels_text(const char *const *labels, char *buf, size_t len);

/* Evaluates every rule on the newest points; queues state changes in m->events. Caller holds
 * m->lock. */
void gk__alerts_evaluate(gk_monitor *m);

/* Reports and clears the queued events (log + callback). Called without m->lock. */
void gk__alerts_report(gk_monitor *m, gk__alert_event *events, size_t n);

/* Frees the rules. */
void gk__alerts_free(gk_monitor *m);

/* Rate between two points of a counter, handling resets; returns 0 when dt <= 0. */
int gk__counter_rate(const gk_series_point *a, const gk_series_point *b, double *rate);

int64_t gk__mono_ns(void);

#endif
