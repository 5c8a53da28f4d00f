/* The sim's spec keys: defaults, parsing with the shared value parsers (every error names the
 * key, the value and the fix), the checks across keys, and the canonical spec string. */
#include <stdio.h>
#include <string.h>

#include "device/sim_int.h"
#include "gpukit/options.h"

#define KIB (1ull << 10)
#define MIB (1ull << 20)
#define GIB (1ull << 30)

#define MAX_CAPACITY    (1ull << 50) /* 1 PiB */
#define MAX_VA_SIZE     (1ull << 52) /* 4 PiB */
#define MAX_ALIGN       GIB
#define MAX_LATENCY_US  1e7 /* 10 s */
#define MAX_EVENT_POLLS 1000000000ull

static const char valid_keys[] =
    "capacity, alignment, granularity, va_size, backed, alloc_latency_us, free_latency_us, "
    "latency_us, clock, event_polls, fail_alloc_nth, fail_prob, seed, fail_above, "
    "fail_after_bytes, fail_event_query_nth, name";

static const char fault_keys[] =
    "fail_alloc_nth, fail_prob, seed, fail_above, fail_after_bytes, fail_event_query_nth";

void gk__sim_config_default(gk__sim_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->capacity = 16 * GIB;
    cfg->alignment = 256;
    cfg->granularity = 2 * MIB;
    cfg->event_polls = 1;
    cfg->faults.seed = 1;
}

static int is_pow2(uint64_t v)
{
    return v && (v & (v - 1)) == 0;
}

static int bad(char *err, size_t errlen, const char *key, const char *value, const char *why)
{
    snprintf(err, errlen, "%s: \"%s\" %s", key, value, why);
    return -EINVAL;
}

static int get_size(const char *key, const char *value, uint64_t *out, char *err, size_t errlen)
{
    if (gk_parse_size(value, out) != 0)
        return bad(err, errlen, key, value, "is not a size (try 16GiB, 2MiB or 4096)");
    return 0;
}

static int get_count(const char *key, const char *value, uint64_t max, uint64_t *out, char *err,
                     size_t errlen)
{
    long long v;
    if (gk_parse_int(value, &v) != 0 || v < 0 || (uint64_t)v > max) {
        char why[96];
        snprintf(why, sizeof why, "is not a whole number from 0 to %llu", (unsigned long long)max);
        return bad(err, errlen, key, value, why);
    }
    *out = (uint64_t)v;
    return 0;
}

static int get_latency(const char *key, const char *value, double *out, char *err, size_t errlen)
{
    double v;
    if (gk_parse_double(value, &v) != 0 || v < 0 || v > MAX_LATENCY_US)
        return bad(err, errlen, key, value,
                   "is not a latency in microseconds from 0 to 10000000 (try 30)");
    *out = v;
    return 0;
}

static int is_fault_key(const char *key)
{
    static const char *const keys[] = {
        "fail_alloc_nth", "fail_prob",        "seed",
        "fail_above",     "fail_after_bytes", "fail_event_query_nth"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(key, keys[i]) == 0)
            return 1;
    }
    return 0;
}

static int apply_fault(gk__sim_faults *f, const char *key, const char *value, char *err,
                       size_t errlen)
{
    if (strcmp(key, "fail_alloc_nth") == 0)
        return get_count(key, value, UINT64_MAX >> 1, &f->alloc_nth, err, errlen);
    if (strcmp(key, "fail_event_query_nth") == 0)
        return get_count(key, value, UINT64_MAX >> 1, &f->event_query_nth, err, errlen);
    if (strcmp(key, "seed") == 0)
        return get_count(key, value, UINT64_MAX >> 1, &f->seed, err, errlen);
    if (strcmp(key, "fail_prob") == 0) {
        double p;
        if (gk_parse_double(value, &p) != 0 || p < 0 || p > 1)
            return bad(err, errlen, key, value, "is not a probability from 0 to 1 (try 0.01)");
        f->prob = p;
        return 0;
    }
    if (strcmp(key, "fail_above") == 0) {
        f->above_set = 1;
        return get_size(key, value, &f->above, err, errlen);
    }
    /* fail_after_bytes */
    f->after_set = 1;
    return get_size(key, value, &f->after_bytes, err, errlen);
}

static int apply_key(gk__sim_config *cfg, const char *key, const char *value, char *err,
                     size_t errlen)
{
    if (is_fault_key(key))
        return apply_fault(&cfg->faults, key, value, err, errlen);
    if (strcmp(key, "capacity") == 0)
        return get_size(key, value, &cfg->capacity, err, errlen);
    if (strcmp(key, "alignment") == 0)
        return get_size(key, value, &cfg->alignment, err, errlen);
    if (strcmp(key, "granularity") == 0)
        return get_size(key, value, &cfg->granularity, err, errlen);
    if (strcmp(key, "va_size") == 0) {
        cfg->va_size_set = 1;
        return get_size(key, value, &cfg->va_size, err, errlen);
    }
    if (strcmp(key, "backed") == 0) {
        if (gk_parse_bool(value, &cfg->backed) != 0)
            return bad(err, errlen, key, value, "is not a boolean (try 0 or 1)");
        return 0;
    }
    if (strcmp(key, "alloc_latency_us") == 0)
        return get_latency(key, value, &cfg->alloc_latency_us, err, errlen);
    if (strcmp(key, "free_latency_us") == 0)
        return get_latency(key, value, &cfg->free_latency_us, err, errlen);
    if (strcmp(key, "latency_us") == 0) {
        int rc = get_latency(key, value, &cfg->alloc_latency_us, err, errlen);
        cfg->free_latency_us = cfg->alloc_latency_us;
        return rc;
    }
    if (strcmp(key, "clock") == 0) {
        if (strcmp(value, "real") == 0)
            cfg->virtual_clock = 0;
        else if (strcmp(value, "virtual") == 0)
            cfg->virtual_clock = 1;
        else
            return bad(err, errlen, key, value, "is not a clock (try real or virtual)");
        return 0;
    }
    if (strcmp(key, "event_polls") == 0) {
        int rc = get_count(key, value, MAX_EVENT_POLLS, &cfg->event_polls, err, errlen);
        if (rc == 0 && cfg->event_polls == 0)
            return bad(err, errlen, key, value, "must be at least 1 (1: ready at the first query)");
        return rc;
    }
    if (strcmp(key, "name") == 0) {
        snprintf(cfg->name, sizeof cfg->name, "%s", value);
        return 0;
    }
    snprintf(err, errlen, "unknown key \"%s\" (valid keys: %s)", key, valid_keys);
    return -EINVAL;
}

static void format_size(uint64_t v, char *buf, size_t len);

/* Whole granules only: va_size rounds up to the granularity. */
static uint64_t default_va_size(uint64_t va, uint64_t granularity)
{
    return (va + granularity - 1) & ~(granularity - 1);
}

/* Checks across keys, after all of them are applied. */
static int check(gk__sim_config *cfg, char *err, size_t errlen)
{
    char v[32];
    if (cfg->capacity == 0 || cfg->capacity > MAX_CAPACITY) {
        format_size(cfg->capacity, v, sizeof v);
        return bad(err, errlen, "capacity", v, "must be from 1 byte to 1PiB (try 16GiB)");
    }
    if (!is_pow2(cfg->alignment) || cfg->alignment > MAX_ALIGN) {
        format_size(cfg->alignment, v, sizeof v);
        return bad(err, errlen, "alignment", v, "must be a power of two up to 1GiB (try 256)");
    }
    if (!is_pow2(cfg->granularity) || cfg->granularity < 4 * KIB || cfg->granularity > GIB) {
        format_size(cfg->granularity, v, sizeof v);
        return bad(err, errlen, "granularity", v,
                   "must be a power of two from 4KiB to 1GiB (try 2MiB)");
    }
    if (cfg->capacity < cfg->alignment) {
        format_size(cfg->capacity, v, sizeof v);
        return bad(err, errlen, "capacity", v, "is smaller than the alignment");
    }
    if (!cfg->va_size_set)
        cfg->va_size = 4 * cfg->capacity;
    if (cfg->va_size > MAX_VA_SIZE) {
        format_size(cfg->va_size, v, sizeof v);
        return bad(err, errlen, "va_size", v, "must be at most 4PiB (try 64GiB, or 0 for no VM)");
    }
    cfg->va_size = default_va_size(cfg->va_size, cfg->granularity);
    return 0;
}

int gk__sim_config_apply(gk__sim_config *cfg, const gk__spec *spec, int faults_only, char *err,
                         size_t errlen)
{
    for (int i = 0; i < spec->nkeys; i++) {
        const char *key = spec->keys[i];
        if (faults_only && !is_fault_key(key)) {
            snprintf(err, errlen, "\"%s\" is not a fault key (fault keys: %s)", key, fault_keys);
            return -EINVAL;
        }
        int rc = apply_key(cfg, key, spec->values[i], err, errlen);
        if (rc)
            return rc;
    }
    return faults_only ? 0 : check(cfg, err, errlen);
}

/* A size in the largest binary unit that divides it exactly: 16GiB, 1536MiB, 1PiB, 4097. */
static void format_size(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = {"PiB", "TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 5; i++) {
        unsigned shift = (unsigned)(50 - 10 * i);
        if (v && (v & ((1ull << shift) - 1)) == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(v >> shift), units[i]);
            return;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

static void append(char *buf, size_t len, size_t *pos, const char *key, const char *value)
{
    if (*pos >= len)
        return;
    int n = snprintf(buf + *pos, len - *pos, ",%s=%s", key, value);
    if (n < 0 || (size_t)n >= len - *pos) {
        buf[*pos] = '\0'; /* never leave half a key */
        *pos = len;
        return;
    }
    *pos += (size_t)n;
}

static void append_size(char *buf, size_t len, size_t *pos, const char *key, uint64_t v)
{
    char s[32];
    format_size(v, s, sizeof s);
    append(buf, len, pos, key, s);
}

static void append_num(char *buf, size_t len, size_t *pos, const char *key, double v)
{
    char s[32];
    snprintf(s, sizeof s, "%.15g", v);
    append(buf, len, pos, key, s);
}

static void append_u64(char *buf, size_t len, size_t *pos, const char *key, uint64_t v)
{
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    append(buf, len, pos, key, s);
}

void gk__sim_config_format(const gk__sim_config *cfg, char *buf, size_t len)
{
    gk__sim_config d;
    gk__sim_config_default(&d);
    char cap[32];
    format_size(cfg->capacity, cap, sizeof cap);
    int n = snprintf(buf, len, "sim:capacity=%s", cap);
    size_t pos = n < 0 ? len : (size_t)n;
    if (cfg->alignment != d.alignment)
        append_size(buf, len, &pos, "alignment", cfg->alignment);
    if (cfg->granularity != d.granularity)
        append_size(buf, len, &pos, "granularity", cfg->granularity);
    if (cfg->va_size != default_va_size(4 * cfg->capacity, cfg->granularity))
        append_size(buf, len, &pos, "va_size", cfg->va_size);
    if (cfg->backed)
        append(buf, len, &pos, "backed", "1");
    if (cfg->alloc_latency_us != 0 && cfg->alloc_latency_us == cfg->free_latency_us) {
        append_num(buf, len, &pos, "latency_us", cfg->alloc_latency_us);
    } else {
        if (cfg->alloc_latency_us != 0)
            append_num(buf, len, &pos, "alloc_latency_us", cfg->alloc_latency_us);
        if (cfg->free_latency_us != 0)
            append_num(buf, len, &pos, "free_latency_us", cfg->free_latency_us);
    }
    if (cfg->virtual_clock)
        append(buf, len, &pos, "clock", "virtual");
    if (cfg->event_polls != d.event_polls)
        append_u64(buf, len, &pos, "event_polls", cfg->event_polls);
    const gk__sim_faults *f = &cfg->faults;
    if (f->alloc_nth)
        append_u64(buf, len, &pos, "fail_alloc_nth", f->alloc_nth);
    if (f->prob != 0)
        append_num(buf, len, &pos, "fail_prob", f->prob);
    if (f->seed != d.faults.seed)
        append_u64(buf, len, &pos, "seed", f->seed);
    if (f->above_set)
        append_size(buf, len, &pos, "fail_above", f->above);
    if (f->after_set)
        append_size(buf, len, &pos, "fail_after_bytes", f->after_bytes);
    if (f->event_query_nth)
        append_u64(buf, len, &pos, "fail_event_query_nth", f->event_query_nth);
    if (cfg->name[0])
        append(buf, len, &pos, "name", cfg->name);
}
