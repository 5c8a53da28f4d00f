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
/* Text escaped for HTML (& < > " '). */
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
    double energy_j; /* summed over GPUs; < 0 when no power was recorded */
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

#endif
