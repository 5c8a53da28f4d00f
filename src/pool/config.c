/* Pool settings: the presets, the key=value syntax shared by the API, GK_POOL_CONF and the tool's
 * --set, and the checks gk_pool_create applies. Each key is listed once in KEY_MAP. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/options.h"
#include "pool/pool_int.h"

#define MIB ((size_t)1 << 20)

enum key_type { K_SIZE, K_UINT, K_BOOL, K_DOUBLE };

/* XX(key, field, type) */
#define KEY_MAP(XX)                                                                                \
    XX("round", round_bytes, K_SIZE)                                                               \
    XX("divisions", divisions, K_UINT)                                                             \
    XX("small_max", small_max, K_SIZE)                                                             \
    XX("small_segment", small_segment, K_SIZE)                                                     \
    XX("large_segment", large_segment, K_SIZE)                                                     \
    XX("min_large_alloc", min_large_alloc, K_SIZE)                                                 \
    XX("round_large", round_large, K_SIZE)                                                         \
    XX("max_split_size", max_split_size, K_SIZE)                                                   \
    XX("max_non_split_rounding", max_non_split_rounding, K_SIZE)                                   \
    XX("expandable_segments", expandable_segments, K_BOOL)                                         \
    XX("page_size", page_size, K_SIZE)                                                             \
    XX("limit", limit_bytes, K_SIZE)                                                               \
    XX("fraction", limit_fraction, K_DOUBLE)                                                       \
    XX("gc_threshold", gc_threshold, K_DOUBLE)                                                     \
    XX("release_lock", release_lock_on_device_alloc, K_BOOL)                                       \
    XX("history", history, K_SIZE)

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

int gk_pool_config_set(gk_pool_config *c, const char *key, const char *value, char *err,
                       size_t errlen)
{
    if (!c || !key || !value)
        return gk__error(-EINVAL, "gk_pool_config_set: c, key or value is NULL");
    uint64_t sz;
    long long ll;
    int b;
    double d;
    int type = -1;
    void *field = NULL;
#define FIND(k, f, t)                                                                              \
    if (!field && strcmp(key, k) == 0 && GK__SIZED_HAS(c, gk_pool_config, f)) {                    \
        field = &c->f;                                                                             \
        type = t;                                                                                  \
    }
    KEY_MAP(FIND)
#undef FIND
    if (!field) {
        return gk__error_buf(-ENOENT, err, errlen,
                             "unknown pool setting \"%s\" (see docs/pool.md for the keys)", key);
    }
    switch (type) {
    case K_SIZE:
        if (strcmp(value, "unlimited") == 0) {
            sz = SIZE_MAX;
        } else if (gk_parse_size(value, &sz) != 0) {
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting %s: \"%s\" is not a size (try 20MiB)", key, value);
        }
        *(size_t *)field = (size_t)sz;
        return 0;
    case K_UINT:
        if (gk_parse_int(value, &ll) != 0 || ll < 0 || ll > 1024) {
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting %s: \"%s\" is not a count 0-1024", key, value);
        }
        *(unsigned *)field = (unsigned)ll;
        return 0;
    case K_BOOL:
        if (gk_parse_bool(value, &b) != 0) {
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting %s: \"%s\" is not a boolean (try 1 or 0)", key,
                                 value);
        }
        *(int *)field = b;
        return 0;
    default:
        if (gk_parse_double(value, &d) != 0 || d < 0 || d >= 1) {
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting %s: \"%s\" is not a fraction in [0,1)", key, value);
        }
        *(double *)field = d;
        return 0;
    }
}

int gk_pool_config_parse(gk_pool_config *c, const char *text, char *err, size_t errlen)
{
    if (!c || !text)
        return gk__error(-EINVAL, "gk_pool_config_parse: c or text is NULL");
    char buf[1024];
    if (strlen(text) >= sizeof buf) {
        return gk__error_buf(-EINVAL, err, errlen,
                             "pool settings too long (%zu characters, at most %zu)", strlen(text),
                             sizeof buf - 1);
    }
    strcpy(buf, text);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq)
            eq = strchr(item, ':');
        if (!eq) {
            return gk__error_buf(-EINVAL, err, errlen,
                                 "pool setting \"%s\" has no value (write key=value)", item);
        }
        *eq = '\0';
        int rc = gk_pool_config_set(c, item, eq + 1, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

static bool pow2(size_t v)
{
    return v && !(v & (v - 1));
}

int gk__pool_config_check(gk_pool_config *c, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (!pow2(c->round_bytes) || c->round_bytes < 256)
        bad = "round must be a power of two of at least 256";
    else if (c->divisions > 1 && !pow2(c->divisions))
        bad = "divisions must be a power of two";
    else if (c->small_max < c->round_bytes || c->small_segment < c->small_max)
        bad = "small_segment must be at least small_max, which must be at least round";
    else if (c->large_segment <= c->small_max || c->min_large_alloc > c->large_segment)
        bad = "large_segment must exceed small_max and be at least min_large_alloc";
    else if (c->round_large < c->round_bytes || c->round_large % c->round_bytes)
        bad = "round_large must be a multiple of round";
    else if (c->max_split_size != SIZE_MAX && c->max_split_size <= c->large_segment)
        bad = "max_split_size must exceed large_segment (or be unlimited)";
    else if (c->page_size == 0)
        bad = "page_size must be positive";
    else if (c->limit_fraction < 0 || c->limit_fraction > 1)
        bad = "fraction must be in [0,1]";
    else if (c->gc_threshold < 0 || c->gc_threshold >= 1)
        bad = "gc_threshold must be in [0,1)";
    if (bad) {
        snprintf(err, errlen, "pool settings: %s", bad);
        return -EINVAL;
    }
    return 0;
}
