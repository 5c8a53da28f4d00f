/* The recording reader: JSON Lines parsed with cJSON into one array pair (t, v) per series.
 * Unusable lines are skipped and listed with their line number; a cut last line (a killed run)
 * is a warning, never an error. Only a missing or newer metadata line makes the load fail. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "report/report_int.h"

#define MAX_SERIES      4096
#define MAX_ISSUES_KEPT 50

typedef struct rseries {
    char *name;
    gk_series_kind kind;
    size_t n, cap;
    double *t, *v;
    size_t overflow; /* values beyond GK_RECORDING_VALUE_MAX, left out */
} rseries;

struct gk_recording {
    gk_recording_info info;
    gk_recording_end end; /* info.end points here once the end line is read */
    char *version, *command, *host, *start, *gpu_reason;
    rseries *series;
    size_t nseries, cap;
    size_t *table; /* open addressing: index+1 into series, 0 empty */
    size_t table_cap;
    gk_series *views;
    char **issues;
    size_t nissues;
    size_t issues_more; /* issues not kept */
    int full_warned;
    int closing; /* the last notes are kept even past the cap */
    gk_alert_event *alerts;
    size_t nalerts;
};

static uint64_t hash_key(const char *name, gk_series_kind kind)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static int add_issue(gk_recording *rec, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int add_issue(gk_recording *rec, const char *fmt, ...)
{
    if (rec->nissues >= MAX_ISSUES_KEPT && !rec->closing) {
        rec->issues_more++;
        return 0;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **is = gk__realloc(rec->issues, (rec->nissues + 2) * sizeof *is);
    if (!is)
        return -ENOMEM;
    rec->issues = is;
    if (!(is[rec->nissues] = gk__strdup(buf)))
        return -ENOMEM;
    rec->nissues++;
    return 0;
}

static int grow_table(gk_recording *rec)
{
    size_t cap = rec->table_cap ? rec->table_cap * 2 : 64;
    size_t *t = gk__calloc(cap, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < rec->nseries; i++) {
        size_t h = (size_t)hash_key(rec->series[i].name, rec->series[i].kind) & (cap - 1);
        while (t[h])
            h = (h + 1) & (cap - 1);
        t[h] = i + 1;
    }
    free(rec->table);
    rec->table = t;
    rec->table_cap = cap;
    return 0;
}

/* Finds or creates the series (name, kind). *out is NULL when the series cap is reached. */
static int get_series(gk_recording *rec, const char *name, gk_series_kind kind, rseries **out)
{
    *out = NULL;
    if (rec->table_cap) {
        size_t h = (size_t)hash_key(name, kind) & (rec->table_cap - 1);
        while (rec->table[h]) {
            rseries *s = &rec->series[rec->table[h] - 1];
            if (s->kind == kind && strcmp(s->name, name) == 0) {
                *out = s;
                return 0;
            }
            h = (h + 1) & (rec->table_cap - 1);
        }
    }
    if (rec->nseries >= MAX_SERIES) {
        if (!rec->full_warned) {
            rec->full_warned = 1;
            return add_issue(rec, "more than %d series; values of further series are skipped",
                             MAX_SERIES);
        }
        return 0;
    }
    if ((rec->nseries + 1) * 2 > rec->table_cap && grow_table(rec))
        return -ENOMEM;
    if (rec->nseries == rec->cap) {
        size_t cap = rec->cap ? rec->cap * 2 : 32;
        rseries *s = gk__realloc(rec->series, cap * sizeof *s);
        if (!s)
            return -ENOMEM;
        rec->series = s;
        rec->cap = cap;
    }
    rseries *s = &rec->series[rec->nseries];
    memset(s, 0, sizeof *s);
    if (!(s->name = gk__strdup(name)))
        return -ENOMEM;
    s->kind = kind;
    size_t h = (size_t)hash_key(name, kind) & (rec->table_cap - 1);
    while (rec->table[h])
        h = (h + 1) & (rec->table_cap - 1);
    rec->table[h] = ++rec->nseries;
    *out = s;
    return 0;
}

static int push(gk_recording *rec, const char *name, gk_series_kind kind, double t, double v)
{
    rseries *s;
    int rc = get_series(rec, name, kind, &s);
    if (rc || !s)
        return rc;
    if (!(fabs(v) <= GK_RECORDING_VALUE_MAX)) {
        s->overflow++; /* sums and squares of such values overflow: counted, not used */
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *nt = gk__realloc(s->t, cap * sizeof *nt);
        if (!nt)
            return -ENOMEM;
        s->t = nt;
        double *nv = gk__realloc(s->v, cap * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        s->v = nv;
        s->cap = cap;
    }
    s->t[s->n] = t;
    s->v[s->n] = v;
    s->n++;
    return 0;
}

/* Recordings made before gpukit sampled through its monitor named their samples with dots; the
 * reader gives them the monitor's names, so old and new recordings report and compare alike. */
static const struct {
    const char *old, *now;
} renamed[] = {
    {"host.cpu_ratio", "gpukit_cpu_busy_ratio"},
    {"host.cpu_max_core_ratio", "gpukit_cpu_busiest_core_ratio"},
    {"host.memory_used_bytes", "gpukit_memory_used_bytes"},
    {"host.memory_used_ratio", "gpukit_memory_used_ratio"},
    {"tree.processes", "gpukit_process_tree_processes"},
    {"tree.cpu_seconds", "gpukit_process_tree_cpu_seconds_total"},
    {"tree.cpu_cores", "gpukit_process_tree_cpu_cores"},
    {"tree.rss_bytes", "gpukit_process_tree_resident_memory_bytes"},
    {"tree.pss_bytes", "gpukit_process_tree_pss_bytes"},
    {"tree.threads", "gpukit_process_tree_threads"},
    {"tree.read_bytes_per_second", "gpukit_process_tree_read_bytes_per_second"},
    {"tree.write_bytes_per_second", "gpukit_process_tree_written_bytes_per_second"},
};

/* GPU fields of old recordings ("gpu.0.fan_ratio") and their names now. */
static const struct {
    const char *old, *now;
} renamed_gpu[] = {
    {"utilization_ratio", "gpukit_gpu_utilization_ratio"},
    {"memory_utilization_ratio", "gpukit_gpu_memory_utilization_ratio"},
    {"memory_used_bytes", "gpukit_gpu_memory_used_bytes"},
    {"memory_reserved_bytes", "gpukit_gpu_memory_reserved_bytes"},
    {"memory_used_ratio", "gpukit_gpu_memory_used_ratio"},
    {"temperature_celsius", "gpukit_gpu_temperature_celsius"},
    {"power_watts", "gpukit_gpu_power_watts"},
    {"power_limit_watts", "gpukit_gpu_power_limit_watts"},
    {"energy_joules", "gpukit_gpu_energy_joules_total"},
    {"clock_event_reasons", "gpukit_gpu_clock_event_reasons"},
    {"fan_ratio", "gpukit_gpu_fan_speed_ratio"},
};

/* The current name of a sample series (the name itself when it is not an old one), in buf. */
static const char *current_name(const char *name, char *buf, size_t len)
{
    for (size_t i = 0; i < sizeof renamed / sizeof renamed[0]; i++)
        if (strcmp(name, renamed[i].old) == 0)
            return renamed[i].now;
    unsigned gpu;
    int at = 0;
    if (strncmp(name, "gpu.", 4) == 0 && sscanf(name, "gpu.%u.%n", &gpu, &at) == 1 && at > 0) {
        const char *what = name + at;
        unsigned pid;
        int end = 0;
        if (sscanf(what, "process.%u.memory_bytes%n", &pid, &end) == 1 && what[end] == '\0') {
            snprintf(buf, len, "gpukit_gpu_process_memory_used_bytes{gpu=\"%u\",pid=\"%u\"}", gpu,
                     pid);
            return buf;
        }
        if (strcmp(what, "clock_sm_hz") == 0 || strcmp(what, "clock_mem_hz") == 0) {
            snprintf(buf, len, "gpukit_gpu_clock_hertz{gpu=\"%u\",clock=\"%s\"}", gpu,
                     what[6] == 's' ? "sm" : "mem");
            return buf;
        }
        for (size_t i = 0; i < sizeof renamed_gpu / sizeof renamed_gpu[0]; i++)
            if (strcmp(what, renamed_gpu[i].old) == 0) {
                snprintf(buf, len, "%s{gpu=\"%u\"}", renamed_gpu[i].now, gpu);
                return buf;
            }
    }
    return name;
}

/* Appends `arg` as a POSIX shell reads it back: as it is when it holds only characters no shell
 * treats specially, else in single quotes (a quote inside written '\''). */
static void shell_quote(gk__sbuf *b, const char *arg)
{
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "_@%+=:,./-";
    size_t n = strlen(arg);
    if (n && strspn(arg, safe) == n) {
        gk__sbuf_add(b, arg, n);
        return;
    }
    gk__sbuf_add(b, "'", 1);
    for (const char *p = arg; *p; p++) {
        if (*p == '\'')
            gk__sbuf_add(b, "'\\''", 4);
        else
            gk__sbuf_add(b, p, 1);
    }
    gk__sbuf_add(b, "'", 1);
}

static char *dup_str(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return gk__strdup(cJSON_IsString(it) && it->valuestring ? it->valuestring : "");
}

static double get_num(const cJSON *obj, const char *key, double dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(it) ? it->valuedouble : dflt;
}

/* Clamped conversions: a recording may hold any number, and out-of-range casts are undefined. */
static int to_int(double v)
{
    return v > -2147483648.0 && v < 2147483647.0 ? (int)v : (v >= 2147483647.0 ? 2147483647 : 0);
}

static uint64_t to_u64(double v)
{
    return v >= 0 && v < 18446744073709551616.0 ? (uint64_t)v : 0;
}

/* v when lo <= v <= hi, else NaN (shown as unknown). */
static double in_range(double v, double lo, double hi)
{
    return v >= lo && v <= hi ? v : NAN;
}

static int read_meta(gk_recording *rec, const cJSON *j, char *err, size_t errlen)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(j, "schema");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "meta") != 0 ||
        !cJSON_IsNumber(schema)) {
        snprintf(err, errlen, "line 1 is not gpukit metadata (is this a gpukit run recording?)");
        return GK_ECORRUPT;
    }
    if (schema->valueint > GK_RECORDING_SCHEMA || schema->valueint < 1) {
        snprintf(err, errlen, "recording schema %d is not supported (this gpukit reads %d)",
                 schema->valueint, GK_RECORDING_SCHEMA);
        return GK_EVERSION;
    }
    gk_recording_info *in = &rec->info;
    in->schema = schema->valueint;
    rec->version = dup_str(j, "gpukit");
    rec->host = dup_str(j, "host");
    rec->start = dup_str(j, "start");
    const cJSON *gpu = cJSON_GetObjectItemCaseSensitive(j, "gpu");
    rec->gpu_reason = dup_str(gpu, "reason");
    in->gpu_enabled = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(gpu, "enabled"));
    in->start_unix = get_num(j, "start_unix", 0);
    in->interval_s = get_num(j, "interval_s", 0);
    in->cores = to_int(get_num(j, "cores", 0));
    in->memory_total_bytes = get_num(j, "memory_total_bytes", 0);
    if (!(in->start_unix >= 0 && in->start_unix <= 1e11))
        in->start_unix = 0;
    if (!(in->interval_s >= 0 && in->interval_s <= GK_RECORDING_TIME_MAX))
        in->interval_s = 0;
    if (!(in->memory_total_bytes >= 0 && in->memory_total_bytes <= GK_RECORDING_VALUE_MAX))
        in->memory_total_bytes = 0;
    in->ndevices = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "devices"));
    gk__sbuf cmd = {0};
    const cJSON *arg;
    int first = 1;
    cJSON_ArrayForEach(arg, cJSON_GetObjectItemCaseSensitive(j, "command"))
    {
        if (!cJSON_IsString(arg))
            continue;
        if (!first)
            gk__sbuf_add(&cmd, " ", 1);
        shell_quote(&cmd, arg->valuestring);
        first = 0;
    }
    if (!cmd.s)
        gk__sbuf_puts(&cmd, "");
    rec->command = cmd.oom ? NULL : cmd.s;
    if (!rec->command)
        free(cmd.s);
    if (!rec->version || !rec->host || !rec->start || !rec->gpu_reason || !rec->command)
        return -ENOMEM;
    return 0;
}

static int kind_of(const char *k, gk_series_kind *out)
{
    static const struct {
        const char *name;
        gk_series_kind kind;
    } kinds[] = {{"g", GK_SERIES_GAUGE},
                 {"c", GK_SERIES_COUNTER},
                 {"ms", GK_SERIES_TIMER},
                 {"h", GK_SERIES_HISTOGRAM}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(k, kinds[i].name) == 0) {
            *out = kinds[i].kind;
            return 0;
        }
    }
    return -1;
}

/* One line after the metadata. Returns 0 (used or described as an issue) or -ENOMEM. */
static int read_line(gk_recording *rec, const cJSON *j, size_t lineno)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "t");
    if (!cJSON_IsString(type) || !cJSON_IsNumber(t) || !isfinite(t->valuedouble))
        return add_issue(rec, "line %zu: no \"type\" or \"t\" (skipped)", lineno);
    double tt = t->valuedouble;
    if (!(fabs(tt) <= GK_RECORDING_TIME_MAX))
        return add_issue(rec, "line %zu: t %.6g s is out of range (skipped)", lineno, tt);
    if (tt > rec->info.last_t)
        rec->info.last_t = tt;
    const char *ty = type->valuestring;
    if (strcmp(ty, "sample") == 0) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "v");
        if (!cJSON_IsObject(v))
            return add_issue(rec, "line %zu: sample without values (skipped)", lineno);
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            if (!cJSON_IsNumber(it) || !it->string || !isfinite(it->valuedouble))
                continue; /* null: not available in this sample */
            char now[256];
            int rc = push(rec, current_name(it->string, now, sizeof now), GK_SERIES_SAMPLE, tt,
                          it->valuedouble);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (strcmp(ty, "metric") == 0) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
        const cJSON *value = cJSON_GetObjectItemCaseSensitive(j, "value");
        const cJSON *tags = cJSON_GetObjectItemCaseSensitive(j, "tags");
        gk_series_kind k;
        if (!cJSON_IsString(name) || !*name->valuestring || !cJSON_IsString(kind) ||
            kind_of(kind->valuestring, &k) || !cJSON_IsNumber(value) ||
            !isfinite(value->valuedouble))
            return add_issue(rec, "line %zu: metric without a name, kind or value (skipped)",
                             lineno);
        if (cJSON_IsString(tags) && *tags->valuestring) {
            gk__sbuf key = {0};
            gk__sbuf_printf(&key, "%s{%s}", name->valuestring, tags->valuestring);
            int rc = key.oom ? -ENOMEM : push(rec, key.s, k, tt, value->valuedouble);
            gk__sbuf_free(&key);
            return rc;
        }
        return push(rec, name->valuestring, k, tt, value->valuedouble);
    }
    if (strcmp(ty, "end") == 0) {
        gk_recording_end *e = &rec->end;
        e->size = sizeof *e;
        rec->info.end = e;
        rec->info.has_end = 1;
        e->t = tt;
        e->exit_status = to_int(get_num(j, "exit_status", 0));
        e->exit_code = to_int(get_num(j, "exit_code", -1));
        e->signal = to_int(get_num(j, "signal", 0));
        e->duration_s = get_num(j, "duration_s", tt);
        if (!(e->duration_s >= 0 && e->duration_s <= GK_RECORDING_TIME_MAX)) {
            int rc = add_issue(rec,
                               "line %zu: duration_s %.6g is out of range (overflow); the "
                               "recorded time span is used",
                               lineno, e->duration_s);
            e->duration_s = fmax(tt, 0);
            if (rc)
                return rc;
        }
        e->samples = to_u64(get_num(j, "samples", 0));
        e->overruns = to_u64(get_num(j, "overruns", 0));
        e->metric_lines = to_u64(get_num(j, "metric_lines", 0));
        e->metric_malformed = to_u64(get_num(j, "metric_malformed", 0));
        e->metric_dropped = to_u64(get_num(j, "metric_dropped", 0));
        e->cpu_seconds = in_range(get_num(j, "cpu_seconds", NAN), 0, GK_RECORDING_VALUE_MAX);
        e->max_rss_bytes = in_range(get_num(j, "max_rss_bytes", NAN), 0, GK_RECORDING_VALUE_MAX);
        return 0;
    }
    if (strcmp(ty, "alert") == 0) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(j, "state");
        if (!cJSON_IsString(name) || !*name->valuestring || !cJSON_IsString(state))
            return add_issue(rec, "line %zu: alert without a name or state (skipped)", lineno);
        gk_alert_event *a = gk__realloc(rec->alerts, (rec->nalerts + 1) * sizeof *a);
        if (!a)
            return -ENOMEM;
        rec->alerts = a;
        a = &rec->alerts[rec->nalerts];
        a->t = tt;
        a->value =
            in_range(get_num(j, "value", NAN), -GK_RECORDING_VALUE_MAX, GK_RECORDING_VALUE_MAX);
        a->name = gk__strdup(name->valuestring);
        a->labels = gk__strdup(cJSON_IsString(labels) ? labels->valuestring : "");
        a->state = gk__strdup(state->valuestring);
        rec->nalerts++;
        if (!a->name || !a->labels || !a->state)
            return -ENOMEM;
        return 0;
    }
    if (strcmp(ty, "meta") == 0)
        return add_issue(rec, "line %zu: a second metadata line (skipped)", lineno);
    return add_issue(rec, "line %zu: unknown type \"%.40s\" (skipped)", lineno, ty);
}

static int build_views(gk_recording *rec)
{
    rec->views = gk__calloc(rec->nseries ? rec->nseries : 1, sizeof *rec->views);
    if (!rec->views)
        return -ENOMEM;
    for (size_t i = 0; i < rec->nseries; i++) {
        const rseries *s = &rec->series[i];
        rec->views[i] = (gk_series){.size = sizeof(gk_series),
                                    .name = s->name,
                                    .kind = s->kind,
                                    .n = s->n,
                                    .t = s->t,
                                    .v = s->v,
                                    .overflow = s->overflow};
        if (s->overflow) {
            int rc = add_issue(rec, "series %.200s: %zu value%s beyond +-%.0e left out (overflow)",
                               s->name, s->overflow, s->overflow == 1 ? "" : "s",
                               GK_RECORDING_VALUE_MAX);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int recording_load(const char *path, gk_recording **out, char *err, size_t errlen);

int gk_recording_load(const char *path, gk_recording **out, char *err, size_t errlen)
{
    char msg[GK__ERROR_MAX] = "";
    if (err && errlen)
        err[0] = '\0';
    int rc = recording_load(path, out, msg, sizeof msg);
    if (rc)
        return gk__error_buf(rc, err, errlen, "%s", msg[0] ? msg : gk_strerror(rc));
    return 0;
}

static int recording_load(const char *path, gk_recording **out, char *err, size_t errlen)
{
    if (!path || !out)
        return gk__error(-EINVAL, "gk_recording_load: path or out is NULL");
    *out = NULL;
    FILE *f = gk__fopen(path, "re");
    if (!f) {
        int rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(-rc));
        return rc;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        snprintf(err, errlen, "%s is a directory (name a recording file)", path);
        return -EISDIR;
    }
    int rc = gk__recording_read(f, path, out, err, errlen);
    fclose(f);
    return rc;
}

int gk__recording_read(FILE *f, const char *path, gk_recording **out, char *err, size_t errlen)
{
    *out = NULL;
    gk_recording *rec = gk__calloc(1, sizeof *rec);
    if (!rec)
        return -ENOMEM;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        int complete = n > 0 && line[n - 1] == '\n';
        if (complete)
            line[--n] = '\0';
        if (lineno > 1 && n == 0)
            continue;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)n);
        if (lineno == 1) {
            rc = j ? read_meta(rec, j, err, errlen) : GK_ECORRUPT;
            if (!j)
                snprintf(err, errlen, "%s: line 1 is not JSON (is this a gpukit run recording?)",
                         path);
            cJSON_Delete(j);
            if (rc)
                break;
            continue;
        }
        if (!j) {
            /* getline returns a line without its newline only at the end of the file. */
            if (!complete)
                rc = add_issue(rec,
                               "line %zu: the last line is cut off (the run was probably "
                               "killed while writing it); skipped",
                               lineno);
            else
                rc = add_issue(rec, "line %zu: not JSON (skipped)", lineno);
        } else {
            rc = cJSON_IsObject(j)
                     ? read_line(rec, j, lineno)
                     : add_issue(rec, "line %zu: not a JSON object (skipped)", lineno);
            cJSON_Delete(j);
        }
        if (rc)
            break;
    }
    if (!rc && ferror(f)) {
        rc = -EIO;
        snprintf(err, errlen, "%s: read error", path);
    }
    if (!rc && lineno == 0) {
        rc = GK_ECORRUPT;
        snprintf(err, errlen, "%s is empty (not a gpukit run recording)", path);
    }
    free(line);
    rec->info.lines = lineno;
    rec->closing = 1;
    if (!rc && !rec->info.has_end)
        rc = add_issue(rec, "no end line: the run did not finish (gpukit or the machine was "
                            "stopped); the report covers what was recorded");
    if (!rc && rec->issues_more)
        rc = add_issue(rec, "(%zu more problems not listed)", rec->issues_more);
    if (!rc)
        rc = build_views(rec);
    if (rc) {
        if (rc == -ENOMEM)
            snprintf(err, errlen, "out of memory reading %s", path);
        gk_recording_free(rec);
        return rc;
    }
    gk_recording_info *in = &rec->info;
    in->gpukit_version = rec->version;
    in->command = rec->command;
    in->host = rec->host;
    in->start = rec->start;
    in->gpu_reason = rec->gpu_reason;
    *out = rec;
    return 0;
}

void gk_recording_free(gk_recording *rec)
{
    if (!rec)
        return;
    for (size_t i = 0; i < rec->nseries; i++) {
        free(rec->series[i].name);
        free(rec->series[i].t);
        free(rec->series[i].v);
    }
    for (size_t i = 0; i < rec->nissues; i++)
        free(rec->issues[i]);
    for (size_t i = 0; i < rec->nalerts; i++) {
        free((char *)rec->alerts[i].name);
        free((char *)rec->alerts[i].labels);
        free((char *)rec->alerts[i].state);
    }
    free(rec->alerts);
    free(rec->issues);
    free(rec->series);
    free(rec->table);
    free(rec->views);
    free(rec->version);
    free(rec->command);
    free(rec->host);
    free(rec->start);
    free(rec->gpu_reason);
    free(rec);
}

int(gk_recording_get_info)(const gk_recording *rec, gk_recording_info *out, size_t size)
{
    if (!rec)
        return gk__error(-EINVAL, "gk_recording_get_info: recording is NULL");
    return gk__sized_put(out, size, &rec->info, sizeof rec->info, "gk_recording_info");
}

size_t gk_recording_series_count(const gk_recording *rec)
{
    return rec ? rec->nseries : 0;
}

int(gk_recording_series)(const gk_recording *rec, size_t i, gk_series *out, size_t size)
{
    if (!rec)
        return gk__error(-EINVAL, "gk_recording_series: recording is NULL");
    if (i >= rec->nseries)
        return gk__error(-ERANGE, "gk_recording_series: series %zu does not exist (%zu series)", i,
                         rec->nseries);
    return gk__sized_put(out, size, &rec->views[i], sizeof rec->views[i], "gk_series");
}

const gk_series *gk_recording_find(const gk_recording *rec, const char *name)
{
    if (!rec || !name)
        return NULL;
    for (size_t i = 0; i < rec->nseries; i++) {
        if (strcmp(rec->views[i].name, name) == 0)
            return &rec->views[i];
    }
    return NULL;
}

size_t gk_recording_issue_count(const gk_recording *rec)
{
    return rec ? rec->nissues : 0;
}

const char *gk_recording_issue(const gk_recording *rec, size_t i)
{
    return rec && i < rec->nissues ? rec->issues[i] : NULL;
}

size_t gk_recording_alert_count(const gk_recording *rec)
{
    return rec ? rec->nalerts : 0;
}

int(gk_recording_alert)(const gk_recording *rec, size_t i, gk_alert_event *out, size_t size)
{
    if (!rec)
        return gk__error(-EINVAL, "gk_recording_alert: recording is NULL");
    if (i >= rec->nalerts)
        return gk__error(-ERANGE, "gk_recording_alert: alert %zu does not exist (%zu alerts)", i,
                         rec->nalerts);
    return gk__sized_put(out, size, &rec->alerts[i], sizeof rec->alerts[i], "gk_alert_event");
}
