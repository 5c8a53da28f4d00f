/* RMM-CSV allocation traces: the reader (every malformed line is reported with its line number),
 * the writer, and L_peak, the peak of live requested bytes. The pool's own logger
 * (gk_pool_set_trace_log) writes the same format. */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

static const char header[] = "Thread,Time,Action,Pointer,Size,Stream";

static int parse_u64(const char *s, int base, uint64_t *out)
{
    if (!*s || *s == '-' || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* A pointer, size or stream: 0x-prefixed hex, or decimal. */
static int parse_addr(const char *s, uint64_t *out)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        return s[2] ? parse_u64(s + 2, 16, out) : -1;
    return parse_u64(s, 10, out);
}

/* Seconds, or RMM's H:M:S.f. */
static int parse_time(const char *s, double *out)
{
    char *end;
    if (strchr(s, ':')) {
        long h = strtol(s, &end, 10);
        if (*end != ':')
            return -1;
        long m = strtol(end + 1, &end, 10);
        if (*end != ':')
            return -1;
        double sec = strtod(end + 1, &end);
        if (*end || h < 0 || m < 0 || m > 59 || sec < 0)
            return -1;
        *out = (double)h * 3600 + (double)m * 60 + sec;
        return 0;
    }
    if (!*s)
        return -1;
    *out = strtod(s, &end);
    return *end ? -1 : 0;
}

static int fail_line(char *err, size_t errlen, const char *name, size_t line, const char *what,
                     const char *field)
{
    if (err && errlen)
        snprintf(err, errlen, "%s:%zu: %s \"%s\"", name, line, what, field);
    return GK_ESYNTAX;
}

static int parse_line(char *line, gk_trace_event *e, const char *name, size_t lineno, char *err,
                      size_t errlen)
{
    char *f[6];
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == 6)
            return fail_line(err, errlen, name, lineno, "too many fields (want 6) in", line);
        f[n++] = p;
        char *c = strchr(p, ',');
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    if (n != 6)
        return fail_line(err, errlen, name, lineno, "too few fields (want 6) in line starting",
                         f[0]);
    if (parse_u64(f[0], 10, &e->thread) && parse_addr(f[0], &e->thread))
        return fail_line(err, errlen, name, lineno, "bad thread id", f[0]);
    if (parse_time(f[1], &e->time))
        return fail_line(err, errlen, name, lineno, "bad time (seconds or H:M:S.f)", f[1]);
    if (strcmp(f[2], "allocate") == 0)
        e->action = GK_TRACE_ALLOCATE;
    else if (strcmp(f[2], "free") == 0)
        e->action = GK_TRACE_FREE;
    else if (strcmp(f[2], "allocate failure") == 0)
        e->action = GK_TRACE_ALLOCATE_FAILURE;
    else
        return fail_line(err, errlen, name, lineno,
                         "unknown action (allocate, free or allocate failure)", f[2]);
    if (parse_addr(f[3], &e->ptr))
        return fail_line(err, errlen, name, lineno, "bad pointer (0x... hex)", f[3]);
    if (parse_addr(f[4], &e->size))
        return fail_line(err, errlen, name, lineno, "bad size (bytes, decimal or 0x hex)", f[4]);
    if (parse_addr(f[5], &e->stream))
        return fail_line(err, errlen, name, lineno, "bad stream (0x... hex)", f[5]);
    if (e->action == GK_TRACE_ALLOCATE && (e->size == 0 || e->ptr == 0))
        return fail_line(err, errlen, name, lineno, "allocation of 0 bytes or at address 0:", f[3]);
    return 0;
}

static int trace_parse(FILE *in, const char *name, gk_trace **out, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    if (!in || !out)
        return gk__error(-EINVAL, "gk_trace_parse: in or out is NULL");
    if (!name)
        name = "trace";
    gk_trace *t = gk__calloc(1, sizeof *t);
    if (!t)
        return gk__error(-ENOMEM, "gk_trace_parse: out of host memory (!t)");
    size_t cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    bool seen_header = false;
    while ((len = getline(&line, &lcap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (!seen_header) {
            if (strcmp(line, header) != 0) {
                rc = fail_line(err, errlen, name, lineno,
                               "not an RMM trace: the header must be "
                               "\"Thread,Time,Action,"
                               "Pointer,Size,Stream\", found",
                               line);
                goto out_fail;
            }
            seen_header = true;
            continue;
        }
        if (t->count == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            gk_trace_event *ev = gk__realloc(t->events, ncap * sizeof *ev);
            if (!ev) {
                rc = -ENOMEM;
                goto out_fail;
            }
            t->events = ev;
            cap = ncap;
        }
        rc = parse_line(line, &t->events[t->count], name, lineno, err, errlen);
        if (rc)
            goto out_fail;
        t->count++;
    }
    if (ferror(in)) {
        rc = -EIO;
        if (err && errlen)
            snprintf(err, errlen, "%s: read error", name);
        goto out_fail;
    }
    if (!seen_header) {
        rc = GK_ESYNTAX;
        if (err && errlen)
            snprintf(err, errlen, "%s:1: empty trace (no header line)", name);
        goto out_fail;
    }
    free(line);
    *out = t;
    return 0;
out_fail:
    free(line);
    gk_trace_free(t);
    return rc;
}

static int trace_read(const char *path, gk_trace **out, char *err, size_t errlen);
static int trace_parse(FILE *in, const char *name, gk_trace **out, char *err, size_t errlen);

int gk_trace_read(const char *path, gk_trace **out, char *err, size_t errlen)
{
    char msg[GK__ERROR_MAX] = "";
    int rc = trace_read(path, out, msg, sizeof msg);
    if (rc)
        return gk__error_buf(rc, err, errlen, "%s", msg[0] ? msg : gk_strerror(rc));
    return 0;
}

int gk_trace_parse(FILE *in, const char *name, gk_trace **out, char *err, size_t errlen)
{
    char msg[GK__ERROR_MAX] = "";
    int rc = trace_parse(in, name, out, msg, sizeof msg);
    if (rc)
        return gk__error_buf(rc, err, errlen, "%s", msg[0] ? msg : gk_strerror(rc));
    return 0;
}

static int trace_read(const char *path, gk_trace **out, char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return gk__error(-EINVAL, "gk_trace_read: path or out is NULL");
    FILE *f = gk__fopen(path, "r");
    if (!f) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return e == ENOENT ? -ENOENT : -EIO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        if (err && errlen)
            snprintf(err, errlen, "%s: is a directory (name an RMM CSV trace file)", path);
        return -EIO;
    }
    int rc = trace_parse(f, path, out, err, errlen);
    fclose(f);
    return rc;
}

void gk_trace_free(gk_trace *t)
{
    if (!t)
        return;
    free(t->events);
    free(t);
}

int gk_trace_write(const gk_trace *t, FILE *out)
{
    if (!t || !out)
        return gk__error(-EINVAL, "gk_trace_write: t or out is NULL");
    static const char *names[] = {"allocate", "free", "allocate failure"};
    fprintf(out, "%s\n", header);
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        fprintf(out, "%" PRIu64 ",%.9f,%s,0x%" PRIx64 ",%" PRIu64 ",0x%" PRIx64 "\n", e->thread,
                e->time, names[e->action], e->ptr, e->size, e->stream);
    }
    return ferror(out) ? -EIO : 0;
}

/* --- a map from trace pointers to values (open addressing, backward-shift deletion) ---------- */

int gk__tmap_init(gk__tmap *m, size_t expect)
{
    size_t cap = 64;
    while (cap < expect * 2)
        cap *= 2;
    m->keys = gk__malloc(cap * sizeof *m->keys);
    m->vals = gk__malloc(cap * sizeof *m->vals);
    m->sizes = gk__malloc(cap * sizeof *m->sizes);
    m->used = gk__calloc(cap, sizeof *m->used);
    m->cap = cap;
    m->count = 0;
    if (!m->keys || !m->vals || !m->sizes || !m->used) {
        gk__tmap_fini(m);
        return -ENOMEM;
    }
    return 0;
}

void gk__tmap_fini(gk__tmap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->sizes);
    free(m->used);
    m->keys = m->vals = m->sizes = NULL;
    m->used = NULL;
}

/* Every key bit reaches the slot (pointers i << 40 spread as well as consecutive ones). */
static size_t tslot(uint64_t k, size_t cap)
{
    return (size_t)gk__mix64(k) & (cap - 1);
}

static int tmap_grow(gk__tmap *m)
{
    gk__tmap n;
    int rc = gk__tmap_init(&n, m->cap);
    if (rc)
        return rc;
    for (size_t i = 0; i < m->cap; i++)
        if (m->used[i])
            gk__tmap_put(&n, m->keys[i], m->vals[i], m->sizes[i]);
    gk__tmap_fini(m);
    *m = n;
    return 0;
}

int gk__tmap_put(gk__tmap *m, uint64_t key, uint64_t val, uint64_t size)
{
    if ((m->count + 1) * 2 > m->cap) {
        int rc = tmap_grow(m);
        if (rc)
            return rc;
    }
    size_t i = tslot(key, m->cap);
    for (; m->used[i]; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key) {
            m->vals[i] = val;
            m->sizes[i] = size;
            return 1; /* replaced */
        }
    }
    m->used[i] = 1;
    m->keys[i] = key;
    m->vals[i] = val;
    m->sizes[i] = size;
    m->count++;
    return 0;
}

int gk__tmap_take(gk__tmap *m, uint64_t key, uint64_t *val, uint64_t *size)
{
    size_t mask = m->cap - 1, i = tslot(key, m->cap);
    while (m->used[i] && m->keys[i] != key)
        i = (i + 1) & mask;
    if (!m->used[i])
        return -ENOENT;
    *val = m->vals[i];
    *size = m->sizes[i];
    for (size_t j = (i + 1) & mask; m->used[j]; j = (j + 1) & mask) {
        size_t home = tslot(m->keys[j], m->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->sizes[i] = m->sizes[j];
            i = j;
        }
    }
    m->used[i] = 0;
    m->count--;
    return 0;
}

uint64_t gk_trace_live_peak(const gk_trace *t)
{
    if (!t)
        return 0;
    gk__tmap m;
    if (gk__tmap_init(&m, 1024))
        return 0;
    /* Exact sums (hostile traces add sizes past 2^64); the peak saturates at UINT64_MAX. */
    gk__u128 live = 0, peak = 0;
    uint64_t v, sz;
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        if (e->action == GK_TRACE_ALLOCATE) {
            if (gk__tmap_take(&m, e->ptr, &v, &sz) == 0)
                live -= sz; /* reused without a free: the old one is gone */
            if (gk__tmap_put(&m, e->ptr, 0, e->size) < 0)
                break;
            live += e->size;
            if (live > peak)
                peak = live;
        } else if (e->action == GK_TRACE_FREE && gk__tmap_take(&m, e->ptr, &v, &sz) == 0) {
            live -= sz;
        }
    }
    gk__tmap_fini(&m);
    return peak > UINT64_MAX ? UINT64_MAX : (uint64_t)peak;
}
