/* The StatsD line parser: `name:value|type[|@rate][|#tags]`, several lines per datagram.
 * Anything that does not follow the rules is refused as a whole line (counted by the caller),
 * never guessed at. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpukit/error.h"
#include "run/run_int.h"

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == '/';
}

int gk__statsd_name_ok(const char *name, size_t len)
{
    if (!name || len == 0 || len > GK__STATSD_MAX_NAME)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!name_char(name[i]))
            return 0;
    }
    return 1;
}

/* Tags: comma-separated, each non-empty, of name characters and ':'. */
int gk__statsd_tags_ok(const char *tags, size_t len)
{
    if (!tags || len == 0 || len > GK__STATSD_MAX_TAGS)
        return 0;
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        if (tags[i] == ',') {
            if (run == 0)
                return 0;
            run = 0;
        } else if (name_char(tags[i]) || tags[i] == ':') {
            run++;
        } else {
            return 0;
        }
    }
    return run > 0;
}

/* A finite number filling exactly s[0..len). */
static int parse_number(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        /* digits, sign, point and exponent only: no hex, inf or nan spellings */
        if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E'))
            return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (end != buf + len || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int gk__statsd_parse_line(const char *line, size_t len, gk__statsd_msg *out)
{
    if (!line || !out)
        return GK_ESYNTAX;
    memset(out, 0, sizeof *out);
    const char *end = line + len;
    const char *colon = memchr(line, ':', len);
    if (!colon || !gk__statsd_name_ok(line, (size_t)(colon - line)))
        return GK_ESYNTAX;
    out->name = line;
    out->name_len = (size_t)(colon - line);
    const char *val = colon + 1;
    const char *bar = memchr(val, '|', (size_t)(end - val));
    if (!bar)
        return GK_ESYNTAX;
    if (parse_number(val, (size_t)(bar - val), &out->value))
        return GK_ESYNTAX;
    const char *type = bar + 1;
    const char *next = memchr(type, '|', (size_t)(end - type));
    size_t tlen = (size_t)((next ? next : end) - type);
    if (tlen == 1 && (*type == 'g' || *type == 'c' || *type == 'h')) {
        out->kind[0] = *type;
    } else if (tlen == 2 && type[0] == 'm' && type[1] == 's') {
        memcpy(out->kind, "ms", 2);
    } else {
        return GK_ESYNTAX;
    }
    if (out->kind[0] == 'g' && (*val == '+' || *val == '-'))
        out->relative = 1;
    if (out->kind[0] == 'm' && out->value < 0)
        return GK_ESYNTAX; /* a negative duration */
    out->rate = 1;
    int seen_rate = 0, seen_tags = 0;
    while (next) {
        const char *f = next + 1;
        next = memchr(f, '|', (size_t)(end - f));
        size_t flen = (size_t)((next ? next : end) - f);
        if (flen >= 1 && f[0] == '@' && !seen_rate) {
            double r;
            if (parse_number(f + 1, flen - 1, &r) || !(r > 0 && r <= 1))
                return GK_ESYNTAX;
            out->rate = r;
            seen_rate = 1;
        } else if (flen >= 1 && f[0] == '#' && !seen_tags) {
            if (!gk__statsd_tags_ok(f + 1, flen - 1))
                return GK_ESYNTAX;
            out->tags = f + 1;
            out->tags_len = flen - 1;
            seen_tags = 1;
        } else {
            return GK_ESYNTAX;
        }
    }
    return 0;
}

void gk__statsd_parse_datagram(const char *buf, size_t len, gk__statsd_fn fn, void *user,
                               uint64_t *good, uint64_t *bad)
{
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t llen = (nl ? (size_t)(nl - (buf + pos)) : len - pos);
        const char *line = buf + pos;
        pos += llen + (nl ? 1 : 0);
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        if (llen == 0)
            continue;
        gk__statsd_msg m;
        if (gk__statsd_parse_line(line, llen, &m) == 0) {
            if (good)
                (*good)++;
            if (fn)
                fn(user, &m);
        } else if (bad) {
            (*bad)++;
        }
    }
}
