/* The memory-pressure policy: watermark conditions with hysteresis over device free memory and
 * the pool's reserved and peak bytes, and the actions they trigger, cheapest first (collect old
 * cached blocks, trim, ask the application to shrink). It never empties the cache because
 * allocated memory is high. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/pressure.h"

struct gk_pressure {
    gk_pool *pool;
    gk_pressure_config cfg;
    pthread_mutex_t lock;
    int hot_collect, hot_trim, hot_shrink; /* consecutive samples with the condition true */
};

void(gk_pressure_config_default)(gk_pressure_config *out, size_t size)
{
    gk_pressure_config d, *c = &d;
    memset(c, 0, sizeof *c);
    c->gc_high = 0.85;
    c->free_low = 0.05;
    c->trim_margin = (uint64_t)64 << 20;
    c->shrink_high = 0.95;
    c->hysteresis = 3;
    c->margin = 0.05;
    (void)gk__sized_put(out, size, c, sizeof *c, "gk_pressure_config");
}

static int frac_ok(double v)
{
    return v >= 0 && v <= 1;
}

int gk_pressure_create(gk_pool *pool, const gk_pressure_config *cfg, gk_pressure **out)
{
    if (out)
        *out = NULL;
    if (!pool || !out)
        return gk__error(-EINVAL, "gk_pressure_create: pool or out is NULL");
    gk_pressure_config c;
    gk_pressure_config_default(&c);
    if (cfg && gk__sized_in(&c, sizeof c, cfg, "gk_pressure_config") != 0)
        return -EINVAL;
    if (!frac_ok(c.gc_high) || !frac_ok(c.free_low) || !frac_ok(c.shrink_high) ||
        !(c.margin >= 0 && c.margin < 1) || c.hysteresis < 1 || c.fit_k < 0 || c.batch < 0)
        return gk__error(-EINVAL, "pressure config: gc_high, free_low and shrink_high must be in "
                                  "[0,1], margin in [0,1), hysteresis at least 1, fit_k and "
                                  "batch not negative");
    gk_pressure *pr = gk__calloc(1, sizeof *pr);
    if (!pr)
        return gk__error(-ENOMEM, "gk_pressure_create: out of host memory");
    if (pthread_mutex_init(&pr->lock, NULL) != 0) {
        free(pr);
        return gk__error(-ENOMEM, "gk_pressure_create: out of host memory");
    }
    pr->pool = pool;
    pr->cfg = c;
    *out = pr;
    return 0;
}

void gk_pressure_destroy(gk_pressure *pr)
{
    if (!pr)
        return;
    pthread_mutex_destroy(&pr->lock);
    free(pr);
}

static uint64_t budget_of(const gk_pool_stats *st, uint64_t device_free)
{
    if (st->limit)
        return st->limit;
    return (uint64_t)st->reserved_bytes[GK_POOL_ALL].current + device_free;
}

static void advise(gk_pressure *pr, const gk_pool_stats *st, uint64_t device_free,
                   gk_pressure_advice *a)
{
    const gk_pressure_config *c = &pr->cfg;
    memset(a, 0, sizeof *a);
    a->size = sizeof *a;
    a->device_free = device_free;
    a->reserved = (uint64_t)st->reserved_bytes[GK_POOL_ALL].current;
    a->allocated = (uint64_t)st->allocated_bytes[GK_POOL_ALL].current;
    a->peak_allocated = (uint64_t)st->allocated_bytes[GK_POOL_ALL].peak;
    a->budget = budget_of(st, device_free);
    double usable = (double)a->budget * (1.0 - c->margin);
    double b = 0;
    if (c->fit_k > 0)
        b = floor((usable - c->fit_a) / c->fit_k);
    else if (c->batch > 0 && a->peak_allocated > 0)
        b = floor((double)c->batch * usable / (double)a->peak_allocated);
    else
        b = 1;
    if (b < 1) {
        a->checkpointing = 1;
        b = 1;
    }
    a->suggested_batch = (long)(b > 1e15 ? 1e15 : b);
}

int(gk_pressure_advise)(gk_pressure *pr, uint64_t device_free, gk_pressure_advice *out, size_t size)
{
    if (!pr)
        return gk__error(-EINVAL, "gk_pressure_advise: policy is NULL");
    int rc = gk__sized_check(out, size, "gk_pressure_advice");
    if (rc)
        return rc;
    gk_pool_stats st;
    rc = gk_pool_get_stats(pr->pool, &st);
    if (rc)
        return rc;
    gk_pressure_advice a;
    pthread_mutex_lock(&pr->lock);
    advise(pr, &st, device_free, &a);
    pthread_mutex_unlock(&pr->lock);
    return gk__sized_put(out, size, &a, sizeof a, "gk_pressure_advice");
}

/* Counts a condition; true when it has held for `hysteresis` samples (the count restarts). */
static int due(int *count, int cond, int hysteresis)
{
    if (!cond) {
        *count = 0;
        return 0;
    }
    if (++*count < hysteresis)
        return 0;
    *count = 0;
    return 1;
}

int gk_pressure_sample_with(gk_pressure *pr, uint64_t device_free, uint64_t device_total,
                            unsigned *actions)
{
    if (actions)
        *actions = 0;
    if (!pr)
        return gk__error(-EINVAL, "gk_pressure_sample_with: pr is NULL");
    gk_pool_stats st;
    int rc = gk_pool_get_stats(pr->pool, &st);
    if (rc)
        return rc;
    const gk_pressure_config *c = &pr->cfg;
    unsigned done = 0;
    gk_pressure_advice adv;
    int shrink = 0;
    pthread_mutex_lock(&pr->lock);
    uint64_t budget = budget_of(&st, device_free);
    uint64_t reserved = (uint64_t)st.reserved_bytes[GK_POOL_ALL].current;
    uint64_t allocated = (uint64_t)st.allocated_bytes[GK_POOL_ALL].current;
    uint64_t peak = (uint64_t)st.allocated_bytes[GK_POOL_ALL].peak;
    uint64_t gc_line = (uint64_t)(c->gc_high * (double)budget);
    int collect = due(&pr->hot_collect, c->gc_high > 0 && reserved > gc_line, c->hysteresis);
    int trim = due(&pr->hot_trim,
                   (double)device_free < c->free_low * (double)device_total &&
                       reserved > allocated + c->trim_margin,
                   c->hysteresis);
    shrink =
        due(&pr->hot_shrink, c->shrink_high > 0 && (double)peak > c->shrink_high * (double)budget,
            c->hysteresis);
    if (shrink) {
        advise(pr, &st, device_free, &adv);
        adv.device_total = device_total;
    }
    gk_pressure_shrink_fn cb = c->on_shrink;
    void *user = c->user;
    pthread_mutex_unlock(&pr->lock);
    if (collect) {
        rc = gk_pool_collect(pr->pool, (size_t)gc_line, NULL);
        done |= GK_PRESSURE_COLLECT;
    }
    if (trim) {
        int trc = gk_pool_trim(pr->pool, (size_t)allocated, NULL);
        if (!rc)
            rc = trc;
        done |= GK_PRESSURE_TRIM;
    }
    if (shrink) {
        if (cb)
            cb(user, &adv);
        done |= GK_PRESSURE_SHRINK;
    }
    if (actions)
        *actions = done;
    return rc;
}

int gk_pressure_sample(gk_pressure *pr, unsigned *actions)
{
    if (actions)
        *actions = 0;
    if (!pr)
        return gk__error(-EINVAL, "gk_pressure_sample: pr is NULL");
    size_t free_b = 0, total = 0;
    int rc = gk_device_mem_info(gk_pool_device(pr->pool), &free_b, &total);
    if (rc)
        return rc;
    return gk_pressure_sample_with(pr, free_b, total, actions);
}
