/* Run recordings and reports.
 *
 * A recording is a JSON Lines file (schema 1) written while a command runs under `gpukit run`:
 *
 *   {"type":"meta","schema":1,"gpukit":"0.1.0","command":["python3","train.py"],"host":"box",
 *    "start_unix":1764198000.25,"start":"2026-11-26T23:00:00Z","interval_s":0.5,"cores":2,
 *    "memory_total_bytes":8.3e9,"gpu":{"enabled":false,"reason":"..."},"devices":[...]}
 *   {"type":"sample","t":0.5,"v":{"host.cpu_ratio":0.52,"tree.rss_bytes":1.2e8,...}}
 *   {"type":"metric","t":0.61,"name":"step_time","kind":"ms","value":12.5,"tags":"phase:train"}
 *   {"type":"end","t":3.2,"exit_status":0,"exit_code":0,"signal":0,"duration_s":3.2,...}
 *
 * `t` is seconds since the start. Each line is written with one write(2) as soon as it is known,
 * so a run that is killed leaves every complete line readable; a reader skips a cut last line
 * with a warning. Sample values use the series names listed in docs/run.md ("host.cpu_ratio",
 * "tree.cpu_cores", "gpu.0.utilization_ratio", ...); received metrics keep the name the program
 * sent, with tags appended as "name{tags}".
 *
 * A report summarises a recording (count, mean, std, min, p50, p90, p99, max per series; time
 * above thresholds; energy; peaks), derives advice from the rules in docs/advice.md, optionally
 * compares it with a baseline recording, and renders as text, JSON or a self-contained HTML page.
 *
 * Thread-safety: a gk_recorder may be shared between threads (each call takes its lock). A
 * gk_recording and a gk_report are immutable after creation and may be read from any thread. */
#ifndef GPUKIT_REPORT_H
#define GPUKIT_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The recording schema this library writes and reads. Newer schemas are refused (GK_EVERSION). */
#define GK_RECORDING_SCHEMA 1

/* --- Writing ------------------------------------------------------------------------------- */

typedef struct gk_recorder gk_recorder;

/* A GPU as the metadata line describes it. */
typedef struct gk_recording_device {
    unsigned index;
    const char *name;          /* "NVIDIA A100-SXM4-40GB"; may be NULL */
    const char *uuid;          /* may be NULL */
    double memory_total_bytes; /* 0 when unknown */
} gk_recording_device;

/* What the metadata line holds. Strings are copied while writing; NULL strings are written as
 * empty. Set `.size = sizeof(gk_recording_meta)`. */
typedef struct gk_recording_meta {
    size_t size;
    int argc; /* the command: argv[0..argc-1] */
    const char *const *argv;
    const char *host;          /* host name */
    double start_unix;         /* CLOCK_REALTIME at the start, seconds */
    double interval_s;         /* the sampling interval */
    int cores;                 /* online CPU cores */
    double memory_total_bytes; /* host memory */
    int gpu_enabled;           /* 1 when GPU metrics are recorded */
    const char *gpu_reason;    /* why GPU metrics are off ("" or NULL when on) */
    int ndevices;
    const gk_recording_device *devices;
} gk_recording_meta;

/* What the last line holds. Set `.size = sizeof(gk_recording_end)` when writing one. */
typedef struct gk_recording_end {
    size_t size;
    double t;                  /* seconds since the start */
    int exit_status;           /* shell-style: the exit code, or 128+signal */
    int exit_code;             /* the code passed to exit(), or -1 when killed by a signal */
    int signal;                /* the signal that ended the command, or 0 */
    double duration_s;         /* wall time of the command */
    uint64_t samples;          /* samples taken */
    uint64_t overruns;         /* sample deadlines missed */
    uint64_t metric_lines;     /* StatsD lines accepted */
    uint64_t metric_malformed; /* StatsD lines refused */
    uint64_t metric_dropped;   /* StatsD values over the recording cap (not recorded) */
    double cpu_seconds;        /* user+system CPU of the command and its waited-for children */
    double max_rss_bytes;      /* the largest RSS of one process of the tree (rusage) */
} gk_recording_end;

/* Opens `path` as a gk_output log (gpukit/output.h) and writes the metadata line: a new file is
 * written in place, line by line, so a killed run leaves its lines at `path`; an existing regular
 * file is left as it was until gk_recorder_close renames the new recording over it (until then a
 * killed run's lines are in ".NAME.gk-XXXXXX" beside it); a device or pipe is written in place.
 * Returns 0 and *out, -EINVAL, -ENOMEM or the negative errno of open/write (-EACCES, -ENOENT,
 * -EISDIR, -ENOSPC, ...). Close with gk_recorder_close. */
GK_API int gk_recorder_open(const char *path, const gk_recording_meta *meta, gk_recorder **out);

/* Writes one sample line at `t` seconds: n values named names[i] (non-finite values are written
 * as null and read back as missing). Returns 0 or the negative errno of write. Thread-safe. */
GK_API int gk_recorder_sample(gk_recorder *r, double t, size_t n, const char *const *names,
                              const double *values);

/* Writes one received-metric line: `kind` is "g", "c", "ms" or "h"; `tags` may be NULL or "".
 * Returns 0, -EINVAL or the negative errno of write. Thread-safe. */
GK_API int gk_recorder_metric(gk_recorder *r, double t, const char *name, const char *kind,
                              double value, const char *tags);

/* Writes one alert-state line: rule `name` on the series with `labels` (may be NULL) went to
 * `state` ("pending", "firing", "resolved") with `value`. Returns 0, -EINVAL or the negative
 * errno of write. Thread-safe. */
GK_API int gk_recorder_alert(gk_recorder *r, double t, const char *name, const char *labels,
                             const char *state, double value);

/* Writes the end line (when `end` is not NULL), closes the file and frees `r`. Returns 0 or the
 * first write/close error seen in the recorder's life. NULL `r` is a no-op returning 0. */
GK_API int gk_recorder_close(gk_recorder *r, const gk_recording_end *end);

/* --- Reading ------------------------------------------------------------------------------- */

typedef struct gk_recording gk_recording;

/* What a series is: sampled by gpukit, or received from the program with a StatsD type. */
typedef enum gk_series_kind {
    GK_SERIES_SAMPLE = 0,
    GK_SERIES_GAUGE,     /* |g */
    GK_SERIES_COUNTER,   /* |c: each value is an increment */
    GK_SERIES_TIMER,     /* |ms: milliseconds */
    GK_SERIES_HISTOGRAM, /* |h */
} gk_series_kind;

/* Values of a larger magnitude are left out of their series when a recording is read (sums and
 * variances of such values overflow) and counted in gk_series.overflow; times (t, duration_s)
 * beyond GK_RECORDING_TIME_MAX seconds are refused the same way. */
#define GK_RECORDING_VALUE_MAX 1e18
#define GK_RECORDING_TIME_MAX  1e9

/* One series of a recording. The arrays belong to the recording. */
typedef struct gk_series {
    size_t size; /* bytes filled (see gpukit/version.h) */
    const char *name;
    gk_series_kind kind;
    size_t n;
    const double *t; /* seconds since the start, ascending as recorded */
    const double *v;
    size_t overflow; /* values beyond +-GK_RECORDING_VALUE_MAX, left out of t and v */
} gk_series;

/* The metadata and end of a recording. Strings belong to the recording. */
typedef struct gk_recording_info {
    size_t size; /* bytes filled (see gpukit/version.h) */
    int schema;
    const char *gpukit_version;
    const char *command; /* argv shell-quoted and joined with spaces: pastes back into a shell */
    const char *host;
    double start_unix;
    const char *start; /* ISO 8601 UTC */
    double interval_s;
    int cores;
    double memory_total_bytes;
    int gpu_enabled;
    const char *gpu_reason;
    int ndevices;
    int has_end;                 /* 0 when the run did not finish (no end line) */
    const gk_recording_end *end; /* the end line (belongs to the recording); NULL without one */
    double last_t;               /* the latest t seen on any line */
    size_t lines;                /* lines read */
} gk_recording_info;

/* Reads a recording. Lines that cannot be used are skipped and described in the issue list
 * ("line 12: not JSON"); a cut last line is skipped with a warning (the run was killed). Returns
 * 0 and *out; GK_ECORRUPT when the first line is not a gpukit metadata line, GK_EVERSION for a
 * newer schema, the negative errno of open/read, or -ENOMEM. `err` (may be NULL) receives a
 * one-line reason on failure. */
GK_API int gk_recording_load(const char *path, gk_recording **out, char *err, size_t errlen);

/* Frees a recording. NULL is a no-op. */
GK_API void gk_recording_free(gk_recording *rec);

/* Fills *out with the metadata and end. Returns 0 or -EINVAL. */
GK_API int gk_recording_get_info(const gk_recording *rec, gk_recording_info *out, size_t size);
#define gk_recording_get_info(rec, out) (gk_recording_get_info)((rec), (out), sizeof *(out))

/* Number of series; gk_recording_series fills *out for series i (0 <= i < count), returning 0 or
 * -ERANGE. gk_recording_find looks a series up by name; NULL when absent. */
GK_API size_t gk_recording_series_count(const gk_recording *rec);
GK_API int gk_recording_series(const gk_recording *rec, size_t i, gk_series *out, size_t size);
#define gk_recording_series(rec, i, out) (gk_recording_series)((rec), (i), (out), sizeof *(out))
GK_API const gk_series *gk_recording_find(const gk_recording *rec, const char *name);

/* Problems met while reading: "line 7: not JSON (skipped)", "line 40: the last line is cut off
 * (the run was probably killed); skipped". Strings belong to the recording. */
GK_API size_t gk_recording_issue_count(const gk_recording *rec);
GK_API const char *gk_recording_issue(const gk_recording *rec, size_t i);

/* One alert-state change recorded by `gpukit run --alert`. Strings belong to the recording. */
typedef struct gk_alert_event {
    size_t size; /* bytes filled (see gpukit/version.h) */
    double t;
    const char *name;   /* the rule's name */
    const char *labels; /* the series it fired on ("gpu=\"0\"", or "") */
    const char *state;  /* "pending", "firing" or "resolved" */
    double value;
} gk_alert_event;

/* The alert events in recorded order; gk_recording_alert returns 0 or -ERANGE. */
GK_API size_t gk_recording_alert_count(const gk_recording *rec);
GK_API int gk_recording_alert(const gk_recording *rec, size_t i, gk_alert_event *out, size_t size);
#define gk_recording_alert(rec, i, out) (gk_recording_alert)((rec), (i), (out), sizeof *(out))

/* --- Summaries ----------------------------------------------------------------------------- */

/* Exact statistics of a list of values (sorted copy; linear interpolation between ranks for the
 * quantiles). */
typedef struct gk_stats {
    size_t size; /* bytes filled (see gpukit/version.h) */
    size_t count;
    double mean, std; /* std: sample standard deviation (0 when count < 2) */
    double min, p50, p90, p99, max;
    double sum;
} gk_stats;

/* Computes *out from v[0..n-1]; non-finite values are ignored. Returns 0, -EINVAL or -ENOMEM. */
GK_API int gk_stats_compute(const double *v, size_t n, gk_stats *out, size_t size);
#define gk_stats_compute(v, n, out) (gk_stats_compute)((v), (n), (out), sizeof *(out))

/* --- Reports ------------------------------------------------------------------------------- */

typedef struct gk_report gk_report;

/* One piece of advice: the rule that fired (docs/advice.md), a title, the numbers that support
 * it and what to do. Strings belong to the report. */
typedef struct gk_advice {
    size_t size;          /* bytes filled (see gpukit/version.h) */
    const char *rule;     /* "data-loading-bound", "oom-risk", ... */
    const char *title;    /* one line */
    const char *evidence; /* numbers from the recording */
    const char *fix;      /* what to try */
} gk_advice;

/* How a series moved against the baseline. */
typedef enum gk_change_verdict {
    GK_CHANGE_UNCHANGED = 0, /* within the run-to-run noise */
    GK_CHANGE_REGRESSION,    /* worse beyond noise (time-like rose or throughput-like fell) */
    GK_CHANGE_IMPROVEMENT,   /* better beyond noise */
    GK_CHANGE_CHANGED,       /* moved beyond noise; no better/worse direction is known */
} gk_change_verdict;

/* One series compared with the baseline. Strings belong to the report. */
typedef struct gk_comparison {
    size_t size; /* bytes filled (see gpukit/version.h) */
    const char *name;
    const char *direction; /* "time-like", "throughput-like" or "neutral" */
    double base_p50, p50, base_p90, p90;
    double p50_change_pct, p90_change_pct; /* (new - base) / |base| * 100 */
    double noise_pct;                      /* run-to-run noise seen within either recording */
    gk_change_verdict verdict;
} gk_comparison;

/* Builds the report of `rec`, compared with `baseline` when it is not NULL. Both must outlive
 * the report. Returns 0 and *out, -EINVAL or -ENOMEM. */
GK_API int gk_report_create(const gk_recording *rec, const gk_recording *baseline, gk_report **out);

/* Frees a report. NULL is a no-op. */
GK_API void gk_report_destroy(gk_report *rep);

/* The advice that fired, in order of importance. */
GK_API size_t gk_report_advice_count(const gk_report *rep);
GK_API int gk_report_advice(const gk_report *rep, size_t i, gk_advice *out, size_t size);
#define gk_report_advice(rep, i, out) (gk_report_advice)((rep), (i), (out), sizeof *(out))

/* The statistics of series `name` (for counters: of the increments). Returns 0 or -ENOENT. */
GK_API int gk_report_stats(const gk_report *rep, const char *name, gk_stats *out, size_t size);
#define gk_report_stats(rep, name, out) (gk_report_stats)((rep), (name), (out), sizeof *(out))

/* One rank of a multi-process run (series tagged with `rank`, as every gpukit StatsD client and
 * the process publisher send them under a launcher). A figure not recorded for that rank is NAN
 * (gpu is -1). */
typedef struct gk_rank_summary {
    size_t size; /* bytes filled (see gpukit/version.h) */
    int rank;
    double step_p50_ms;           /* median of the program's step timer (a |ms series with
                                     "step" in its name) */
    double loader_wait_share;     /* loader wait / wall time (gpukit_loader_wait_seconds_total) */
    double gpu_memory_peak_bytes; /* the rank's GPU memory (NVML per process), else its pools'
                                     reserved bytes */
    double gpu_utilization_p50;   /* median utilization of the GPU its pool or loader used */
    double cpu_cores_p50;         /* median cores its processes kept busy */
    int gpu;                      /* that GPU's index, or -1 */
} gk_rank_summary;

/* The per-rank table, by rank (0 rows for a single-process run). gk_report_rank returns 0,
 * -EINVAL or -ERANGE. The straggler rule (docs/advice.md) compares each row with the others. */
GK_API size_t gk_report_rank_count(const gk_report *rep);
GK_API int gk_report_rank(const gk_report *rep, size_t i, gk_rank_summary *out, size_t size);
#define gk_report_rank(rep, i, out) (gk_report_rank)((rep), (i), (out), sizeof *(out))

/* The comparisons with the baseline (0 when there is none), regressions first, then
 * improvements, then the rest. */
GK_API size_t gk_report_comparison_count(const gk_report *rep);
GK_API int gk_report_comparison(const gk_report *rep, size_t i, gk_comparison *out, size_t size);
#define gk_report_comparison(rep, i, out) (gk_report_comparison)((rep), (i), (out), sizeof *(out))

/* How many series regressed by more than `pct` percent beyond their noise (the worse of the
 * median and p90 changes, minus the noise, exceeds pct). Only time-like and throughput-like
 * series count (docs/advice.md gives the naming conventions). 0 without a baseline. */
GK_API size_t gk_report_regressions_over(const gk_report *rep, double pct);

/* Renders the report. Text is for people; JSON is one object (schema in docs/run.md); HTML is
 * one self-contained, valid HTML5 page with print styles (no scripts, no network), organised for
 * reading (docs/run.md, "The HTML report"): the summary, the advice and the per-rank table
 * first, then the series part by part (GPU, host, pool, loader, batch finder, the program), each
 * part's single values in a table and the rest in inline SVG charts that draw related series
 * together (a pool's in use against reserved; one metric per GPU, rank, process or device),
 * log-scaled past two decades. The same report always renders to the same bytes.
 * Return 0, -EIO when writing to `out` failed, or -ENOMEM (nothing is written then). */
GK_API int gk_report_write_text(const gk_report *rep, FILE *out);
GK_API int gk_report_write_json(const gk_report *rep, FILE *out);
GK_API int gk_report_write_html(const gk_report *rep, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
