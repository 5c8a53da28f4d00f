/* The settings table (gpukit/options.h) and the value parsers every part shares. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/options.h"

static const gk_option_info option_rows[] = {
#define GK__OPT_ROW(field, name, env, flag, type, def, help) {name, env, flag, type, def, help},
    GK_OPTION_MAP(GK__OPT_ROW)
#undef GK__OPT_ROW
};

static const size_t option_offsets[] = {
#define GK__OPT_OFF(field, name, env, flag, type, def, help) offsetof(gk_options, field),
    GK_OPTION_MAP(GK__OPT_OFF)
#undef GK__OPT_OFF
};

static const size_t option_sizes[] = {
#define GK__OPT_SIZE(field, name, env, flag, type, def, help) sizeof(((gk_options *)0)->field),
    GK_OPTION_MAP(GK__OPT_SIZE)
#undef GK__OPT_SIZE
};

#define NOPTIONS (sizeof option_rows / sizeof option_rows[0])

size_t gk_option_count(void)
{
    return NOPTIONS;
}

const gk_option_info *gk_option_at(size_t index)
{
    return index < NOPTIONS ? &option_rows[index] : NULL;
}

/* --- parsers ------------------------------------------------------------------------------ */

static const char *skip_space(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return s;
}

/* Parses a non-negative decimal number with an optional fraction; returns the end or NULL. */
static const char *parse_number(const char *s, double *value, int *had_fraction)
{
    char *end;
    s = skip_space(s);
    if (!isdigit((unsigned char)*s) && *s != '.')
        return NULL;
    *value = strtod(s, &end);
    if (end == s || !isfinite(*value))
        return NULL;
    *had_fraction = memchr(s, '.', (size_t)(end - s)) != NULL ||
                    memchr(s, 'e', (size_t)(end - s)) || memchr(s, 'E', (size_t)(end - s));
    return end;
}

/* "0x" followed by hex digits only (no unit: "0x1b" would be ambiguous), as a byte count. */
static int parse_hex_size(const char *s, uint64_t *out)
{
    const char *d = s + 2;
    uint64_t v = 0;
    if (!isxdigit((unsigned char)*d))
        return gk__error(-EINVAL, "\"%s\" is not a size: no hex digits after 0x", s);
    for (; isxdigit((unsigned char)*d); d++) {
        unsigned x = isdigit((unsigned char)*d) ? (unsigned)(*d - '0')
                                                : (unsigned)(tolower((unsigned char)*d) - 'a' + 10);
        if (v > (UINT64_MAX >> 4))
            return gk__error(-ERANGE, "size \"%s\" is above 2^64 bytes", s);
        v = v << 4 | x;
    }
    if (*skip_space(d))
        return gk__error(-EINVAL,
                         "\"%s\" is not a size: a hex byte count takes no unit (try 0x8000000)", s);
    *out = v;
    return 0;
}

int gk_parse_size(const char *text, uint64_t *out)
{
    static const struct {
        const char *suffix;
        int shift;
    } units[] = {{"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
                 {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},
                 {"tb", 40}, {"tib", 40}, {"p", 50}, {"pb", 50}, {"pib", 50}};
    double v;
    int frac;
    if (!text || !out)
        return gk__error(-EINVAL, "gk_parse_size: text or out is NULL");
    const char *h = skip_space(text);
    if (h[0] == '0' && (h[1] == 'x' || h[1] == 'X'))
        return parse_hex_size(h, out);
    const char *p = parse_number(text, &v, &frac);
    if (!p)
        return gk__error(-EINVAL, "\"%s\" is not a size (try 512MiB or 16GiB)", text);
    char suffix[8];
    size_t n = 0;
    p = skip_space(p);
    while (*p && !isspace((unsigned char)*p) && n + 1 < sizeof suffix)
        suffix[n++] = (char)tolower((unsigned char)*p++);
    suffix[n] = '\0';
    if (*skip_space(p))
        return gk__error(-EINVAL, "\"%s\" is not a size (try 512MiB or 16GiB)", text);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(suffix, units[i].suffix) != 0)
            continue;
        if (units[i].shift == 0 && frac)
            return -EINVAL; /* "1.5" bytes is not a size */
        if (!frac && units[i].shift == 0) {
            /* Exact path for plain integers (a double loses precision above 2^53). */
            errno = 0;
            unsigned long long u = strtoull(skip_space(text), NULL, 10);
            if (errno == ERANGE)
                return gk__error(-ERANGE, "size \"%s\" is above 2^64 bytes", text);
            *out = (uint64_t)u;
            return 0;
        }
        double bytes = ldexp(v, units[i].shift);
        if (bytes >= 18446744073709551616.0)
            return gk__error(-ERANGE, "size \"%s\" is above 2^64 bytes", text);
        *out = (uint64_t)bytes;
        return 0;
    }
    return gk__error(-EINVAL,
                     "\"%s\" is not a size: unknown unit (try B, KiB, MiB, GiB, TiB or PiB)", text);
}

int gk_parse_duration(const char *text, double *seconds)
{
    static const struct {
        const char *suffix;
        double scale;
    } units[] = {{"", 1},      {"s", 1},  {"sec", 1},  {"ms", 1e-3}, {"us", 1e-6},
                 {"ns", 1e-9}, {"m", 60}, {"min", 60}, {"h", 3600}};
    double v;
    int frac;
    if (!text || !seconds)
        return gk__error(-EINVAL, "gk_parse_duration: text or seconds is NULL");
    const char *p = parse_number(text, &v, &frac);
    if (!p)
        return gk__error(-EINVAL, "\"%s\" is not a duration (try 30s or 500ms)", text);
    p = skip_space(p);
    char suffix[8];
    size_t n = 0;
    while (*p && !isspace((unsigned char)*p) && n + 1 < sizeof suffix)
        suffix[n++] = (char)tolower((unsigned char)*p++);
    suffix[n] = '\0';
    if (*skip_space(p))
        return gk__error(-EINVAL, "\"%s\" is not a duration (try 30s or 500ms)", text);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(suffix, units[i].suffix) == 0) {
            double s = v * units[i].scale;
            if (s > 1e9)
                return gk__error(-ERANGE, "duration \"%s\" is above 1e9 seconds", text);
            *seconds = s;
            return 0;
        }
    }
    return gk__error(-EINVAL, "\"%s\" is not a duration: unknown unit (try s, ms, us, ns, m or h)",
                     text);
}

int gk_parse_bool(const char *text, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    if (!text || !out)
        return gk__error(-EINVAL, "gk_parse_bool: text or out is NULL");
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return gk__error(-EINVAL, "\"%s\" is not a boolean (try 1, 0, true, false, yes, no, on or off)",
                     text);
}

int gk_parse_int(const char *text, long long *out)
{
    char *end;
    if (!text || !out)
        return gk__error(-EINVAL, "gk_parse_int: text or out is NULL");
    const char *s = skip_space(text);
    if (!*s)
        return gk__error(-EINVAL, "an empty value is not an integer (try 4)");
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno == ERANGE)
        return gk__error(-ERANGE, "integer \"%s\" does not fit in 64 bits", text);
    if (end == s || *skip_space(end))
        return gk__error(-EINVAL, "\"%s\" is not an integer (try 4)", text);
    *out = v;
    return 0;
}

int gk_parse_double(const char *text, double *out)
{
    char *end;
    if (!text || !out)
        return gk__error(-EINVAL, "gk_parse_double: text or out is NULL");
    const char *s = skip_space(text);
    if (!*s)
        return gk__error(-EINVAL, "an empty value is not a number (try 0.5)");
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *skip_space(end) || !isfinite(v))
        return gk__error(-EINVAL, "\"%s\" is not a finite number (try 0.5)", text);
    if (errno == ERANGE)
        return gk__error(-ERANGE, "number \"%s\" is out of range", text);
    *out = v;
    return 0;
}

char *gk_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (!buf || len == 0)
        return buf;
    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, len, "%.2f %s", v, units[u]);
    return buf;
}

/* --- the table ---------------------------------------------------------------------------- */

static const char *type_hint(gk_option_type type)
{
    switch (type) {
    case GK_OPT_SIZE:
        return "is not a size (try 12GiB, 512MiB or 4096)";
    case GK_OPT_DURATION:
        return "is not a duration (try 30s or 500ms)";
    case GK_OPT_LOG_LEVEL:
        return "is not a log level (try off, error, warn, info, debug or trace)";
    case GK_OPT_BOOL:
        return "is not a boolean (try 1/0, true/false, yes/no or on/off)";
    case GK_OPT_INT:
        return "is not an integer (try 4)";
    case GK_OPT_DOUBLE:
        return "is not a number (try 0.5)";
    case GK_OPT_STRING:
    default:
        return "is too long (at most 255 characters)";
    }
}

static int set_row(gk_options *o, size_t i, const char *shown_key, const char *value, char *err,
                   size_t errlen)
{
    void *field = (char *)o + option_offsets[i];
    int rc = 0;
    switch (option_rows[i].type) {
    case GK_OPT_STRING:
        if (strlen(value) >= GK_OPT_STRING_MAX) {
            rc = -EINVAL;
            break;
        }
        memcpy(field, value, strlen(value) + 1);
        break;
    case GK_OPT_SIZE: {
        uint64_t v;
        rc = gk_parse_size(value, &v);
        if (rc == 0)
            memcpy(field, &v, sizeof v);
        break;
    }
    case GK_OPT_DURATION: {
        double v;
        rc = gk_parse_duration(value, &v);
        if (rc == 0)
            memcpy(field, &v, sizeof v);
        break;
    }
    case GK_OPT_LOG_LEVEL: {
        gk_log_level v;
        rc = gk_parse_log_level(value, &v);
        if (rc == 0)
            memcpy(field, &v, sizeof v);
        break;
    }
    case GK_OPT_BOOL: {
        int v;
        rc = gk_parse_bool(value, &v);
        if (rc == 0)
            memcpy(field, &v, sizeof v);
        break;
    }
    case GK_OPT_INT: {
        long long v;
        rc = gk_parse_int(value, &v);
        if (rc == 0)
            memcpy(field, &v, sizeof v);
        break;
    }
    case GK_OPT_DOUBLE: {
        double v;
        rc = gk_parse_double(value, &v);
        if (rc == 0)
            memcpy(field, &v, sizeof v);
        break;
    }
    }
    if (rc != 0)
        rc = gk__error_buf(-EINVAL, err, errlen, "%s: \"%.48s%s\" %s", shown_key, value,
                           strlen(value) > 48 ? "..." : "",
                           rc == -ERANGE ? "is out of range" : type_hint(option_rows[i].type));
    return rc;
}

/* Whether the caller's struct holds row i's field. */
static int has_row(const gk_options *o, size_t i)
{
    return gk__sized_has(o, option_offsets[i], option_sizes[i]);
}

void(gk_options_default)(gk_options *out, size_t size)
{
    gk_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    for (size_t i = 0; i < NOPTIONS; i++)
        (void)set_row(&o, i, option_rows[i].name, option_rows[i].default_value, NULL, 0);
    (void)gk__sized_put(out, size, &o, sizeof o, "gk_options");
}

int gk_options_set(gk_options *o, const char *key, const char *value, char *err, size_t errlen)
{
    if (!o || !key || !value)
        return gk__error_buf(-EINVAL, err, errlen, "gk_options_set: key and value are required");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const gk_option_info *r = &option_rows[i];
        if ((strcmp(key, r->name) == 0 || strcmp(key, r->env) == 0 || strcmp(key, r->flag) == 0) &&
            has_row(o, i))
            return set_row(o, i, key, value, err, errlen);
    }
    return gk__error_buf(-ENOENT, err, errlen,
                         "unknown setting \"%s\" (see 'gpukit info --settings' or docs/options.md)",
                         key);
}

int gk_options_from_env(gk_options *o, char *err, size_t errlen)
{
    if (!o)
        return gk__error(-EINVAL, "gk_options_from_env: o is NULL");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *v = getenv(option_rows[i].env);
        if (!v || !*v || !has_row(o, i))
            continue;
        int rc = set_row(o, i, option_rows[i].env, v, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int gk_options_format(const gk_options *o, size_t index, char *buf, size_t len)
{
    if (!o || !buf || index >= NOPTIONS)
        return gk__error(-ERANGE, "gk_options_format: %s",
                         !o || !buf ? "options or buf is NULL" : "no setting at that index");
    if (!has_row(o, index))
        return gk__error(-ERANGE,
                         "gk_options_format: setting %s is beyond this gk_options "
                         "(built against an older header)",
                         option_rows[index].name);
    const void *field = (const char *)o + option_offsets[index];
    switch (option_rows[index].type) {
    case GK_OPT_STRING:
        snprintf(buf, len, "%s", (const char *)field);
        break;
    case GK_OPT_SIZE: {
        uint64_t v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, len, "%llu", (unsigned long long)v);
        break;
    }
    case GK_OPT_DURATION:
    case GK_OPT_DOUBLE: {
        double v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, len, "%g", v);
        break;
    }
    case GK_OPT_LOG_LEVEL: {
        gk_log_level v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, len, "%s", gk_log_level_name(v));
        break;
    }
    case GK_OPT_BOOL: {
        int v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, len, "%s", v ? "true" : "false");
        break;
    }
    case GK_OPT_INT: {
        long long v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, len, "%lld", v);
        break;
    }
    }
    return 0;
}
