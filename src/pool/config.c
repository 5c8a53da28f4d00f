/* Pool settings: the presets, the key=value syntax shared by the API, GK_POOL_CONF and the tool's
 * --set, and the checks gk_pool_create applies. Each key is listed once in KEY_MAP with its valid
 * range; the parser refuses a value outside it (naming the key, the range and the value) and
 * gk_pool_create checks the same ranges for fields set directly, then the rules across keys. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/options.h"
#include "pool/pool_int.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
#define TIB ((uint64_t)1 << 40)
#define PIB ((uint64_t)1 << 50)

#define K_SIZE   GK__KEY_SIZE
#define K_COUNT  GK__KEY_COUNT
#define K_BOOL   GK__KEY_BOOL
#define K_DOUBLE GK__KEY_DOUBLE
#define U_NO     GK__UNLIMITED_NO
#define U_MAX    GK__UNLIMITED_MAX
#define U_ZERO   GK__UNLIMITED_ZERO

/* XX(key, field, type, min, max, pow2, unlimited). Sizes and counts are whole numbers in
 * [min, max]; doubles are in [min, max] with max exclusive for gc_threshold (see check_double). */
#define KEY_MAP(XX)                                                                                \
    XX("round", round_bytes, K_SIZE, 256, 16 * MIB, 1, U_NO)                                       \
    XX("divisions", divisions, K_COUNT, 0, 1024, 0, U_NO)                                          \
    XX("small_max", small_max, K_SIZE, 256, 4 * GIB, 0, U_NO)                                      \
    XX("small_segment", small_segment, K_SIZE, 4 * KIB, 64 * GIB, 0, U_NO)                         \
    XX("large_segment", large_segment, K_SIZE, 4 * KIB, 1 * TIB, 0, U_NO)                          \
    XX("min_large_alloc", min_large_alloc, K_SIZE, 0, 1 * TIB, 0, U_NO)                            \
    XX("round_large", round_large, K_SIZE, 256, 1 * TIB, 0, U_NO)                                  \
    XX("max_split_size", max_split_size, K_SIZE, 4 * KIB, 1 * PIB, 0, U_MAX)                       \
    XX("max_non_split_rounding", max_non_split_rounding, K_SIZE, 0, 1 * PIB, 0, U_MAX)             \
    XX("expandable_segments", expandable_segments, K_BOOL, 0, 1, 0, U_NO)                          \
    XX("page_size", page_size, K_SIZE, 4 * KIB, 1 * TIB, 0, U_NO)                                  \
    XX("limit", limit_bytes, K_SIZE, 0, 4096 * PIB, 0, U_ZERO)                                     \
    XX("fraction", limit_fraction, K_DOUBLE, 0, 1, 0, U_NO)                                        \
    XX("gc_threshold", gc_threshold, K_DOUBLE, 0, 1, 0, U_NO)                                      \
    XX("release_lock", release_lock_on_device_alloc, K_BOOL, 0, 1, 0, U_NO)                        \
    XX("history", history, K_COUNT, 0, 1 << 20, 0, U_NO)

typedef gk__pool_key key_info;

static const key_info keys[] = {
#define ROW(k, f, t, lo, hi, p2, u) {k, offsetof(gk_pool_config, f), t, lo, hi, p2, u},
    KEY_MAP(ROW)
#undef ROW
};

#define NKEYS (sizeof keys / sizeof keys[0])

static void pytorch_rules(gk_pool_config *c)
{
    gk_logger_default(&c->logger);
    c->round_bytes = 512;
    c->divisions = 0;
    c->small_max = MIB;
    c->small_segment = 2 * MIB;
    c->large_segment = 20 * MIB;
    c->min_large_alloc = 10 * MIB;
    c->round_large = 2 * MIB;
    c->max_split_size = SIZE_MAX;
    c->max_non_split_rounding = 20 * MIB;
    c->expandable_segments = 0;
    c->page_size = 20 * MIB;
    c->limit_bytes = 0;
    c->limit_fraction = 0;
    c->gc_threshold = 0;
    c->release_lock_on_device_alloc = 1;
    c->history = 0;
}

static void default_rules(gk_pool_config *c)
{
    pytorch_rules(c);
    c->expandable_segments = 1;
    c->page_size = 2 * MIB;
}

void(gk_pool_config_default)(gk_pool_config *c, size_t size)
{
    gk_pool_config d;
    memset(&d, 0, sizeof d);
    default_rules(&d);
    (void)gk__sized_put(c, size, &d, sizeof d, "gk_pool_config");
}

int(gk_pool_config_preset)(gk_pool_config *c, const char *name, size_t size)
{
    gk_pool_config d;
    if (!name)
        return gk__error(-EINVAL, "gk_pool_config_preset: name is NULL");
    memset(&d, 0, sizeof d);
    if (strcmp(name, "default") == 0)
        default_rules(&d);
    else if (strcmp(name, "pytorch") == 0)
        pytorch_rules(&d);
    else
        return gk__error(-EINVAL, "pool preset \"%s\" is unknown (try default or pytorch)", name);
    return gk__sized_put(c, size, &d, sizeof d, "gk_pool_config");
}

/* A size in the largest binary unit that divides it: 2MiB, 1536KiB, 4097. */
static void size_text(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = {"PiB", "TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 5; i++) {
        unsigned shift = (unsigned)(50 - 10 * i);
        if (v && (v & (((uint64_t)1 << shift) - 1)) == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(v >> shift), units[i]);
            return;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* "from 256 to 16MiB, a power of two, or unlimited" for the messages and docs. */
static void range_text(const key_info *k, char *buf, size_t len)
{
    char lo[32], hi[32];
    switch (k->type) {
    case K_SIZE:
        size_text(k->min, lo, sizeof lo);
        size_text(k->max, hi, sizeof hi);
        snprintf(buf, len, "a size from %s to %s%s%s", lo, hi, k->pow2 ? ", a power of two" : "",
                 k->unlimited == U_MAX    ? ", or unlimited"
                 : k->unlimited == U_ZERO ? " (0 or unlimited: none)"
                                          : "");
        break;
    case K_COUNT:
        snprintf(buf, len, "a whole number from %llu to %llu", (unsigned long long)k->min,
                 (unsigned long long)k->max);
        break;
    case K_BOOL:
        snprintf(buf, len, "a boolean (1 or 0)");
        break;
    default:
        snprintf(buf, len, "a number in [0,1%s", strcmp(k->key, "gc_threshold") == 0 ? ")" : "]");
        break;
    }
}

/* "pool setting KEY: "VALUE" is WHAT (RANGE)" */
static int refuse_as(const key_info *k, const char *value, const char *what, char *err,
                     size_t errlen)
{
    char range[128];
    range_text(k, range, sizeof range);
    return gk__error_buf(-EINVAL, err, errlen, "pool setting %s: \"%.64s\" is %s (%s)", k->key,
                         value, what, range);
}

static int refuse(const key_info *k, const char *value, char *err, size_t errlen)
{
    return refuse_as(k, value, "out of range", err, errlen);
}

static bool pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Whether a size or count is in k's range (SIZE_MAX stands for "unlimited" where allowed). */
static bool in_range(const key_info *k, uint64_t v)
{
    if (k->unlimited == U_MAX && v == SIZE_MAX)
        return true;
    if (v < k->min || v > k->max)
        return false;
    return !k->pow2 || pow2(v);
}

static bool double_in_range(const key_info *k, double d)
{
    if (!(d >= 0))
        return false;
    return strcmp(k->key, "gc_threshold") == 0 ? d < 1 : d <= 1;
}

/* A decimal whole number (counts take no units, no hex, no octal). */
static int parse_count(const char *s, uint64_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    while (isspace((unsigned char)*s))
        s++;
    if (*s)
        return -EINVAL;
    *out = v;
    return 0;
}

static const key_info *find_key(const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(key, keys[i].key) == 0)
            return &keys[i];
    return NULL;
}

int gk_pool_config_set(gk_pool_config *c, const char *key, const char *value, char *err,
                       size_t errlen)
{
    if (!c || !key || !value)
        return gk__error(-EINVAL, "gk_pool_config_set: c, key or value is NULL");
    const key_info *k = find_key(key);
    size_t fsize = k && k->type == GK__KEY_BOOL                            ? sizeof(int)
                   : k && k->offset == offsetof(gk_pool_config, divisions) ? sizeof(unsigned)
                   : k && k->type == GK__KEY_DOUBLE                        ? sizeof(double)
                                                                           : sizeof(size_t);
    if (!k || !gk__sized_has(c, k->offset, fsize))
        return gk__error_buf(-ENOENT, err, errlen,
                             "unknown pool setting \"%s\" (see docs/pool.md for the keys)", key);
    void *field = (char *)c + k->offset;
    uint64_t v;
    int b, rc;
    double d;
    switch (k->type) {
    case K_SIZE:
        if (strcmp(value, "unlimited") == 0) {
            if (k->unlimited == U_NO)
                return refuse(k, value, err, errlen);
            v = k->unlimited == U_MAX ? SIZE_MAX : 0;
        } else if ((rc = gk_parse_size(value, &v)) != 0) {
            if (rc == -ERANGE)
                return refuse(k, value, err, errlen);
            return refuse_as(k, value, "not a size", err, errlen);
        } else if (!in_range(k, v)) {
            return refuse(k, value, err, errlen);
        }
        *(size_t *)field = (size_t)v;
        return 0;
    case K_COUNT:
        if ((rc = parse_count(value, &v)) != 0) {
            if (rc == -ERANGE)
                return refuse(k, value, err, errlen);
            return refuse_as(k, value, "not a whole number", err, errlen);
        }
        if (!in_range(k, v))
            return refuse(k, value, err, errlen);
        if (k->offset == offsetof(gk_pool_config, divisions))
            *(unsigned *)field = (unsigned)v;
        else
            *(size_t *)field = (size_t)v;
        return 0;
    case K_BOOL:
        if (gk_parse_bool(value, &b) != 0) {
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting %s: \"%.64s\" is not a boolean (try 1 or 0)", key,
                                 value);
        }
        *(int *)field = b;
        return 0;
    default:
        if (gk_parse_double(value, &d) != 0) {
            return refuse_as(k, value, "not a number", err, errlen);
        }
        if (!double_in_range(k, d))
            return refuse(k, value, err, errlen);
        *(double *)field = d;
        return 0;
    }
}

int gk_pool_config_parse(gk_pool_config *c, const char *text, char *err, size_t errlen)
{
    if (!c || !text)
        return gk__error(-EINVAL, "gk_pool_config_parse: c or text is NULL");
    char buf[1024];
    if (strlen(text) >= sizeof buf)
        return gk__error_buf(-EINVAL, err, errlen,
                             "pool settings too long (%zu characters, at most %zu)", strlen(text),
                             sizeof buf - 1);
    strcpy(buf, text);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq)
            eq = strchr(item, ':');
        if (!eq)
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting \"%s\" has no value (write key=value)", item);
        *eq = '\0';
        int rc = gk_pool_config_set(c, item, eq + 1, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* The value of field k in c, as a u64 (sizes and counts) for the range check at create. */
static uint64_t field_value(const gk_pool_config *c, const key_info *k)
{
    const void *f = (const char *)c + k->offset;
    if (k->type == K_COUNT && k->offset == offsetof(gk_pool_config, divisions))
        return *(const unsigned *)f;
    if (k->type == K_BOOL)
        return (uint64_t) * (const int *)f;
    return *(const size_t *)f;
}

int gk__pool_config_check(gk_pool_config *c, char *err, size_t errlen)
{
    /* Each key in its range, as the parser would have required. */
    for (size_t i = 0; i < NKEYS; i++) {
        const key_info *k = &keys[i];
        char value[48];
        if (k->type == K_DOUBLE) {
            double d = *(const double *)((const char *)c + k->offset);
            if (!double_in_range(k, d)) {
                snprintf(value, sizeof value, "%g", d);
                return refuse(k, value, err, errlen);
            }
            continue;
        }
        if (k->type == K_BOOL)
            continue; /* any int: 0 is off, anything else on */
        uint64_t v = field_value(c, k);
        if (!in_range(k, v)) {
            snprintf(value, sizeof value, "%llu", (unsigned long long)v);
            return refuse(k, value, err, errlen);
        }
    }
    /* The rules across keys. */
    const char *bad = NULL;
    if (c->divisions > 1 && !pow2(c->divisions))
        bad = "divisions must be 0, 1 or a power of two";
    else if (c->small_max < c->round_bytes)
        bad = "small_max must be at least round";
    else if (c->small_segment < c->small_max)
        bad = "small_segment must be at least small_max";
    else if (c->large_segment <= c->small_max)
        bad = "large_segment must exceed small_max";
    else if (c->min_large_alloc > c->large_segment)
        bad = "min_large_alloc must be at most large_segment";
    else if (c->round_large < c->round_bytes || c->round_large % c->round_bytes)
        bad = "round_large must be a multiple of round";
    else if (c->max_split_size != SIZE_MAX && c->max_split_size <= c->large_segment)
        bad = "max_split_size must exceed large_segment (or be unlimited)";
    if (bad) {
        snprintf(err, errlen, "pool settings: %s", bad);
        return -EINVAL;
    }
    return 0;
}

const gk__pool_key *gk__pool_config_keys(size_t *n)
{
    *n = NKEYS;
    return keys;
}

int gk__pool_config_range(const char *key, char *buf, size_t len)
{
    const key_info *k = find_key(key);
    if (!k)
        return -ENOENT;
    range_text(k, buf, len);
    return 0;
}
