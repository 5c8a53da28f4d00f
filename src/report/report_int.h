/* Internals shared by the recording writer, reader, report analysis and renderers: a growable
 * string buffer with JSON and HTML escaping, and the report's private structure. */
#ifndef GK_REPORT_INT_H
#define GK_REPORT_INT_H

#include <stddef.h>
#include <stdio.h>

#include "gpukit/report.h"

/* A growable NUL-terminated string. A failed allocation sets `oom` and later appends do
 * nothing, so callers check once at the end. */
typedef struct gk__sbuf {
    char *s;
    size_t len, cap;
    int oom;
} gk__sbuf;

void gk__sbuf_free(gk__sbuf *b);
void gk__sbuf_add(gk__sbuf *b, const char *s, size_t n);
void gk__sbuf_puts(gk__sbuf *b, const char *s);
void gk__sbuf_printf(gk__sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A JSON string literal with its quotes; invalid UTF-8 bytes become U+FFFD. */
void gk__sbuf_json_str(gk__sbuf *b, const char *s);
/* A JSON number ("%.10g"), or null when not finite. */
void gk__sbuf_json_num(gk__sbuf *b, double v);
/* Text escaped for HTML (& < > " '); control characters come out as \xNN and bytes that are
 * not UTF-8 as U+FFFD, so any input makes valid HTML text. */
void gk__sbuf_html(gk__sbuf *b, const char *s);

/* The direction of a series name ("time-like", "throughput-like", "neutral"): -1 lower is better,
 * +1 higher is better, 0 neutral. Rules in docs/advice.md. */
int gk__series_direction(const char *name, gk_series_kind kind);
const char *gk__direction_name(int dir);

/* The statistics the report keeps for each series. */
typedef struct gk__series_summary {
    gk_series s;
    gk_stats st;
    double rate_per_s; /* counters: sum / duration; otherwise 0 */
    double above_s;    /* seconds above `threshold` (when has_threshold) */
    double threshold;
    int has_threshold;
} gk__series_summary;

struct gk_report {
    const gk_recording *rec, *base;
    gk_recording_info info;
    double duration_s;
    gk__series_summary *sums;
    size_t nsums;
    gk_advice *advice;
    char **advice_text; /* owned strings behind advice[] */
    size_t nadvice, nadvice_text;
    gk_comparison *cmp;
    size_t ncmp;
    double energy_j;        /* summed over GPUs; < 0 when no power was recorded */
    gk_rank_summary *ranks; /* the per-rank table (ranks.c) */
    size_t nranks;
    char step_series[256]; /* the step timer the table uses ("" when none) */
};

/* The value of tag or label `key` in a series name ("x{device:cuda:0,rank:3}" or
 * "x{gpu=\"0\"}") into buf; 0 when absent. */
int gk__series_tag(const char *name, const char *key, char *buf, size_t len);
/* Builds the per-rank table (ranks.c). Returns 0 or -ENOMEM. */
int gk__report_ranks(gk_report *rep);
/* The straggler rule over the per-rank table. Returns 0 or -ENOMEM. */
int gk__report_straggler(gk_report *rep);
/* The per-rank table as text (nothing for a single-process run), JSON members
 * (,"step_series":...,"ranks":[...]) and an HTML section. */
void gk__report_ranks_text(const gk_report *rep, FILE *out);
void gk__report_ranks_json(const gk_report *rep, gk__sbuf *b);
void gk__report_ranks_html(const gk_report *rep, gk__sbuf *b);

/* Reads a recording from an open stream (reader.c; `path` names it in messages). The contract
 * of gk_recording_load, without the open. */
int gk__recording_read(FILE *f, const char *path, gk_recording **out, char *err, size_t errlen);

/* Advice rules (advice.c): fills rep->advice. Returns 0 or -ENOMEM. */
int gk__report_advise(gk_report *rep);
/* Baseline comparison (compare.c). Returns 0 or -ENOMEM. */
int gk__report_compare(gk_report *rep);
/* The summary of `name`, or NULL. */
const gk__series_summary *gk__report_find(const gk_report *rep, const char *name);
/* GPU `gpu`'s series "gpukit_gpu_<what>{gpu="N",...}" ("utilization_ratio", ...), or NULL. */
const gk__series_summary *gk__report_gpu_series(const gk_report *rep, int gpu, const char *what);
/* Appends one piece of advice (strings copied). Returns 0 or -ENOMEM. */
int gk__report_add_advice(gk_report *rep, const char *rule, const char *title, const char *evidence,
                          const char *fix);
/* Human forms: "1.23 GiB", "512 KiB"; "12.3%"; seconds "1.25 s" / "15 ms". */
void gk__fmt_bytes(char *buf, size_t len, double bytes);
void gk__fmt_value(char *buf, size_t len, const char *name, double v);

/* --- The HTML report's organisation (layout.c) ------------------------------------------- */

/* The parts of a run the HTML report groups its series by, in page order. */
typedef enum gk__part {
    GK__PART_GPU = 0,
    GK__PART_HOST,    /* CPU, memory, the process tree, per-rank CPU and memory */
    GK__PART_POOL,    /* gpukit_alloc_* */
    GK__PART_LOADER,  /* gpukit_loader_* */
    GK__PART_BATCH,   /* gpukit_batch_* */
    GK__PART_PROGRAM, /* the program's own series */
    GK__PART_COUNT
} gk__part;

gk__part gk__series_part(const char *name);
const char *gk__part_id(gk__part p);    /* "gpu", "host", ... (HTML ids) */
const char *gk__part_title(gk__part p); /* "GPU", "Host and process tree", ... */

#define GK__CHART_MAX_LINES 8 /* more instances than this continue on another chart */

/* One chart: series drawn on one set of axes, a line each. */
typedef struct gk__chart {
    gk__part part;
    size_t first, n;      /* its series: layout members[first .. first + n - 1] */
    size_t order;         /* where its group's first series was recorded (page order) */
    size_t chunk, chunks; /* this chart of its group's charts (more than MAX_LINES series) */
    int log_scale;        /* positive values over more than two decades */
    int cumulative;       /* counters, drawn as running totals */
    int pool;             /* a pool's bytes in use against reserved */
} gk__chart;

typedef struct gk__layout {
    gk__chart *charts; /* by part, then in recorded order */
    size_t ncharts;
    size_t *members; /* indices into the report's series, chart by chart */
    size_t nmembers;
    size_t *values; /* series shown as one value in a table, by part */
    size_t nvalues;
} gk__layout;

/* Builds the layout of a report. Returns 0 or -ENOMEM (then *l holds nothing). */
int gk__report_layout(const gk_report *rep, gk__layout *l);
void gk__layout_free(gk__layout *l);
/* 1 when a series has nothing to draw over time: one value, all values equal, a counter that
 * never moves after its first increment, or no value within range. */
int gk__series_single_valued(const gk__series_summary *sm);
/* 1 when the series members[0..n-1] need a log scale: their positive values span more than two
 * decades (max > 100 x min), they are not shares (_ratio) and not counters. */
int gk__chart_log_scale(const gk_report *rep, const size_t *members, size_t n);
/* 1 when a series' unit (its name ends in _bytes or _ratio) is a level that reads from zero. */
int gk__series_unit_level(const char *name);
/* A chart's caption, and the legend of its series m (0 <= m < n), appended to b. */
void gk__chart_caption(const gk_report *rep, const gk__layout *l, const gk__chart *c, gk__sbuf *b);
void gk__chart_legend(const gk_report *rep, const gk__layout *l, const gk__chart *c, size_t m,
                      gk__sbuf *b);

#endif
