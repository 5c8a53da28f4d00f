/* The recording writer: JSON Lines, one write(2) per line, so a run that is killed leaves every
 * complete line on disk. The first line is the metadata, the last the end of the run. The file
 * is a gk_output log: a new path is written in place; an existing file is replaced at the end. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/output.h"
#include "report/report_int.h"

struct gk_recorder {
    gk_output *out;
    int first_err;
    pthread_mutex_t lock;
    gk__sbuf line;
};

/* Ends the line in r->line and writes it; the caller holds the lock. */
static int flush_line(gk_recorder *r)
{
    gk__sbuf_add(&r->line, "\n", 1);
    int rc = r->line.oom ? -ENOMEM : gk_output_write(r->out, r->line.s, r->line.len);
    r->line.len = 0;
    r->line.oom = 0;
    if (r->line.s)
        r->line.s[0] = '\0';
    if (rc && !r->first_err)
        r->first_err = rc;
    return rc;
}

static void iso_time(double unix_s, char *buf, size_t len)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "unknown");
}

int gk_recorder_open(const char *path, const gk_recording_meta *meta_in, gk_recorder **out)
{
    gk_recording_meta full, *meta = &full;
    memset(&full, 0, sizeof full);
    if (!path || !meta_in || !out)
        return gk__error(-EINVAL, "gk_recorder_open: path, meta or out is NULL");
    if (gk__sized_in(&full, sizeof full, meta_in, "gk_recording_meta") != 0)
        return -EINVAL;
    if (meta->argc < 0 || (meta->argc > 0 && !meta->argv) || meta->ndevices < 0 ||
        (meta->ndevices > 0 && !meta->devices))
        return gk__error(-EINVAL, "gk_recorder_open: argc/argv or ndevices/devices disagree");
    *out = NULL;
    gk_recorder *r = gk__calloc(1, sizeof *r);
    if (!r)
        return gk__error(-ENOMEM, "gk_recorder_open: out of host memory");
    char err[700];
    int orc = gk_output_open(path, GK_OUTPUT_LOG, &r->out, err, sizeof err);
    if (orc) {
        free(r);
        return gk__error(orc, "cannot create the recording %s", err);
    }
    pthread_mutex_init(&r->lock, NULL);
    gk__sbuf *b = &r->line;
    char iso[64];
    iso_time(meta->start_unix, iso, sizeof iso);
    gk__sbuf_printf(b, "{\"type\":\"meta\",\"schema\":%d,\"gpukit\":", GK_RECORDING_SCHEMA);
    gk__sbuf_json_str(b, gk_version_string());
    gk__sbuf_puts(b, ",\"command\":[");
    for (int i = 0; i < meta->argc; i++) {
        if (i)
            gk__sbuf_add(b, ",", 1);
        gk__sbuf_json_str(b, meta->argv[i]);
    }
    gk__sbuf_puts(b, "],\"host\":");
    gk__sbuf_json_str(b, meta->host);
    gk__sbuf_puts(b, ",\"start_unix\":");
    gk__sbuf_printf(b, "%.3f", meta->start_unix);
    gk__sbuf_puts(b, ",\"start\":");
    gk__sbuf_json_str(b, iso);
    gk__sbuf_puts(b, ",\"interval_s\":");
    gk__sbuf_json_num(b, meta->interval_s);
    gk__sbuf_printf(b, ",\"cores\":%d,\"memory_total_bytes\":", meta->cores);
    gk__sbuf_json_num(b, meta->memory_total_bytes);
    gk__sbuf_printf(b,
                    ",\"gpu\":{\"enabled\":%s,\"reason\":", meta->gpu_enabled ? "true" : "false");
    gk__sbuf_json_str(b, meta->gpu_reason);
    gk__sbuf_puts(b, "},\"devices\":[");
    for (int i = 0; i < meta->ndevices; i++) {
        const gk_recording_device *d = &meta->devices[i];
        gk__sbuf_printf(b, "%s{\"index\":%u,\"name\":", i ? "," : "", d->index);
        gk__sbuf_json_str(b, d->name);
        gk__sbuf_puts(b, ",\"uuid\":");
        gk__sbuf_json_str(b, d->uuid);
        gk__sbuf_puts(b, ",\"memory_total_bytes\":");
        gk__sbuf_json_num(b, d->memory_total_bytes);
        gk__sbuf_add(b, "}", 1);
    }
    gk__sbuf_puts(b, "]}");
    int rc = flush_line(r);
    if (rc) {
        gk_recorder_close(r, NULL);
        return rc;
    }
    *out = r;
    return 0;
}

int gk_recorder_sample(gk_recorder *r, double t, size_t n, const char *const *names,
                       const double *values)
{
    if (!r || (n > 0 && (!names || !values)))
        return gk__error(
            -EINVAL, "gk_recorder_sample: invalid argument (!r || (n > 0 && (!names || !values)))");
    pthread_mutex_lock(&r->lock);
    gk__sbuf *b = &r->line;
    gk__sbuf_puts(b, "{\"type\":\"sample\",\"t\":");
    gk__sbuf_printf(b, "%.4f", t);
    gk__sbuf_puts(b, ",\"v\":{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            gk__sbuf_add(b, ",", 1);
        gk__sbuf_json_str(b, names[i]);
        gk__sbuf_add(b, ":", 1);
        gk__sbuf_json_num(b, values[i]);
    }
    gk__sbuf_puts(b, "}}");
    int rc = flush_line(r);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int gk_recorder_metric(gk_recorder *r, double t, const char *name, const char *kind, double value,
                       const char *tags)
{
    if (!r || !name || !*name || !kind ||
        (strcmp(kind, "g") && strcmp(kind, "c") && strcmp(kind, "ms") && strcmp(kind, "h")))
        return gk__error(-EINVAL, "gk_recorder_metric: invalid argument");
    pthread_mutex_lock(&r->lock);
    gk__sbuf *b = &r->line;
    gk__sbuf_puts(b, "{\"type\":\"metric\",\"t\":");
    gk__sbuf_printf(b, "%.4f", t);
    gk__sbuf_puts(b, ",\"name\":");
    gk__sbuf_json_str(b, name);
    gk__sbuf_puts(b, ",\"kind\":");
    gk__sbuf_json_str(b, kind);
    gk__sbuf_puts(b, ",\"value\":");
    gk__sbuf_json_num(b, value);
    if (tags && *tags) {
        gk__sbuf_puts(b, ",\"tags\":");
        gk__sbuf_json_str(b, tags);
    }
    gk__sbuf_add(b, "}", 1);
    int rc = flush_line(r);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int gk_recorder_alert(gk_recorder *r, double t, const char *name, const char *labels,
                      const char *state, double value)
{
    if (!r || !name || !*name || !state || !*state)
        return gk__error(
            -EINVAL,
            "gk_recorder_alert: invalid argument (!r || !name || !*name || !state || !*state)");
    pthread_mutex_lock(&r->lock);
    gk__sbuf *b = &r->line;
    gk__sbuf_puts(b, "{\"type\":\"alert\",\"t\":");
    gk__sbuf_printf(b, "%.4f", t);
    gk__sbuf_puts(b, ",\"name\":");
    gk__sbuf_json_str(b, name);
    gk__sbuf_puts(b, ",\"labels\":");
    gk__sbuf_json_str(b, labels);
    gk__sbuf_puts(b, ",\"state\":");
    gk__sbuf_json_str(b, state);
    gk__sbuf_puts(b, ",\"value\":");
    gk__sbuf_json_num(b, value);
    gk__sbuf_add(b, "}", 1);
    int rc = flush_line(r);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int gk_recorder_close(gk_recorder *r, const gk_recording_end *end_in)
{
    if (!r)
        return 0;
    gk_recording_end full, *end = NULL;
    memset(&full, 0, sizeof full);
    if (end_in) {
        if (gk__sized_in(&full, sizeof full, end_in, "gk_recording_end") == 0)
            end = &full;
        else
            r->first_err = r->first_err ? r->first_err : -EINVAL;
    }
    pthread_mutex_lock(&r->lock);
    if (end) {
        gk__sbuf *b = &r->line;
        gk__sbuf_puts(b, "{\"type\":\"end\",\"t\":");
        gk__sbuf_printf(b, "%.4f", end->t);
        gk__sbuf_printf(b, ",\"exit_status\":%d,\"exit_code\":%d,\"signal\":%d,\"duration_s\":",
                        end->exit_status, end->exit_code, end->signal);
        gk__sbuf_json_num(b, end->duration_s);
        gk__sbuf_printf(b,
                        ",\"samples\":%llu,\"overruns\":%llu,\"metric_lines\":%llu,"
                        "\"metric_malformed\":%llu,\"metric_dropped\":%llu",
                        (unsigned long long)end->samples, (unsigned long long)end->overruns,
                        (unsigned long long)end->metric_lines,
                        (unsigned long long)end->metric_malformed,
                        (unsigned long long)end->metric_dropped);
        gk__sbuf_puts(b, ",\"cpu_seconds\":");
        gk__sbuf_json_num(b, end->cpu_seconds);
        gk__sbuf_puts(b, ",\"max_rss_bytes\":");
        gk__sbuf_json_num(b, end->max_rss_bytes);
        gk__sbuf_add(b, "}", 1);
        flush_line(r);
    }
    int crc = gk_output_commit(r->out, NULL, 0);
    if (crc && !r->first_err)
        r->first_err = crc;
    int rc = r->first_err;
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_destroy(&r->lock);
    gk__sbuf_free(&r->line);
    free(r);
    if (rc && rc != -EINVAL)
        return gk__error(rc, "writing the recording: %s", strerror(-rc));
    return rc;
}
