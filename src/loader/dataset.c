/* Datasets: the callback table wrapper every loader reads through, and the in-memory dataset.
 * File-backed datasets live in records.c (fixed-record files) and tokens.c (llm.c shards). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "loader/loader_int.h"

int gk__dataset_fail(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gk__verror(rc, fmt, ap);
    va_end(ap);
    return rc;
}

const char *gk_dataset_error(void)
{
    return gk_last_error();
}

uint64_t gk__loader_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int gk_dataset_create(const gk_dataset_ops *ops, void *ctx, const char *name, gk_dataset **out)
{
    if (!out)
        return gk__dataset_fail(-EINVAL, "gk_dataset_create: out is NULL");
    *out = NULL;
    gk_dataset_ops full;
    memset(&full, 0, sizeof full);
    if (!ops)
        return gk__dataset_fail(-EINVAL, "gk_dataset_create: ops is NULL");
    int rc = gk__sized_in(&full, sizeof full, ops, "gk_dataset_ops");
    if (rc)
        return rc;
    ops = &full;
    if (!ops->count || !ops->item_size || !ops->read_item)
        return gk__dataset_fail(-EINVAL, "gk_dataset_create: ops must provide count, item_size "
                                         "and read_item");
    if (!!ops->worker_open != !!ops->worker_close)
        return gk__dataset_fail(-EINVAL, "gk_dataset_create: worker_open and worker_close come "
                                         "together");
    uint64_t n = ops->count(ctx);
    size_t isz = ops->item_size(ctx);
    if (n == 0 || isz == 0)
        return gk__dataset_fail(-EINVAL, "dataset %s: %s is 0", name ? name : "dataset",
                                n == 0 ? "the item count" : "the item size");
    gk_dataset *ds = gk__calloc(1, sizeof *ds);
    if (!ds)
        return gk__dataset_fail(-ENOMEM, "gk_dataset_create: out of memory");
    ds->ops = *ops;
    ds->ctx = ctx;
    ds->count = n;
    ds->item_size = isz;
    snprintf(ds->name, sizeof ds->name, "%s", name ? name : "dataset");
    *out = ds;
    return 0;
}

void gk_dataset_destroy(gk_dataset *ds)
{
    if (!ds)
        return;
    if (ds->ops.destroy)
        ds->ops.destroy(ds->ctx);
    free(ds);
}

uint64_t gk_dataset_count(const gk_dataset *ds)
{
    return ds ? ds->count : 0;
}

size_t gk_dataset_item_size(const gk_dataset *ds)
{
    return ds ? ds->item_size : 0;
}

const char *gk_dataset_name(const gk_dataset *ds)
{
    return ds ? ds->name : "";
}

uint32_t gk_dataset_token_bytes(const gk_dataset *ds)
{
    return ds ? ds->token_bytes : 0;
}

/* --- in-memory dataset ------------------------------------------------------------------- */

typedef struct mem_ctx {
    const unsigned char *data;
    size_t item_size;
    uint64_t count;
} mem_ctx;

static uint64_t mem_count(void *ctx)
{
    return ((mem_ctx *)ctx)->count;
}

static size_t mem_item_size(void *ctx)
{
    return ((mem_ctx *)ctx)->item_size;
}

static int mem_read_item(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)seed;
    mem_ctx *m = ctx;
    if (index >= m->count) {
        snprintf(rc->err, rc->err_len, "memory dataset: index %llu past the end (%llu items)",
                 (unsigned long long)index, (unsigned long long)m->count);
        return -ERANGE;
    }
    memcpy(dst, m->data + index * m->item_size, m->item_size);
    return 0;
}

static int mem_read_batch(void *ctx, gk_read_ctx *rc, const uint64_t *idx, size_t n, void *dst)
{
    mem_ctx *m = ctx;
    unsigned char *d = dst;
    size_t isz = m->item_size;
    for (size_t i = 0; i < n; i++) {
        if (idx[i] >= m->count) {
            rc->failed_index = idx[i];
            return mem_read_item(ctx, rc, idx[i], 0, d);
        }
        memcpy(d + i * isz, m->data + idx[i] * isz, isz);
    }
    return 0;
}

static void mem_destroy(void *ctx)
{
    free(ctx);
}

static const gk_dataset_ops mem_ops = {
    .size = sizeof(gk_dataset_ops),
    .count = mem_count,
    .item_size = mem_item_size,
    .read_item = mem_read_item,
    .read_batch = mem_read_batch,
    .destroy = mem_destroy,
};

int gk_dataset_memory(const void *data, size_t item_size, uint64_t count, gk_dataset **out)
{
    if (!out)
        return gk__dataset_fail(-EINVAL, "gk_dataset_memory: out is NULL");
    *out = NULL;
    if (!data || item_size == 0 || count == 0)
        return gk__dataset_fail(-EINVAL, "gk_dataset_memory: data must be non-NULL with a "
                                         "non-zero item size and count");
    if (count > SIZE_MAX / item_size)
        return gk__dataset_fail(-EOVERFLOW, "gk_dataset_memory: %llu items of %zu bytes overflow",
                                (unsigned long long)count, item_size);
    mem_ctx *m = gk__malloc(sizeof *m);
    if (!m)
        return gk__dataset_fail(-ENOMEM, "gk_dataset_memory: out of memory");
    m->data = data;
    m->item_size = item_size;
    m->count = count;
    int rc = gk_dataset_create(&mem_ops, m, "memory", out);
    if (rc)
        free(m);
    return rc;
}
