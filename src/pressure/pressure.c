/* The memory-pressure policy: watermark conditions with hysteresis over device free memory and
 * the pool's reserved and peak bytes (or the same figures of another allocator, given by the
 * caller), and the actions they trigger, cheapest first (collect old cached blocks, trim, ask the
 * application to shrink). It never empties the cache because allocated memory is high. */
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
    if (!out)
        return gk__error(-EINVAL, "gk_pressure_create: out is NULL");
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

static uint64_t budget_of(const gk_pressure_figures *f)
{
    if (f->limit)
        return f->limit;
    return f->reserved + f->device_free;
}

/* The figures of the policy's pool with the device's free and total memory given. */
static int pool_figures(gk_pressure *pr, uint64_t device_free, uint64_t device_total,
                        gk_pressure_figures *f, const char *fn)
{
    if (!pr->pool)
        return gk__error(-EINVAL,
                         "%s: this policy was created without a pool; give it the allocator's "
                         "figures with gk_pressure_sample_figures",
                         fn);
    gk_pool_stats st;
    int rc = gk_pool_get_stats(pr->pool, &st);
    if (rc)
        return rc;
    memset(f, 0, sizeof *f);
    f->size = sizeof *f;
    f->device_free = device_free;
    f->device_total = device_total;
    f->reserved = (uint64_t)st.reserved_bytes[GK_POOL_ALL].current;
    f->allocated = (uint64_t)st.allocated_bytes[GK_POOL_ALL].current;
    f->peak_allocated = (uint64_t)st.allocated_bytes[GK_POOL_ALL].peak;
    f->limit = st.limit;
    return 0;
}

static void advise(gk_pressure *pr, const gk_pressure_figures *f, gk_pressure_advice *a)
{
    const gk_pressure_config *c = &pr->cfg;
    memset(a, 0, sizeof *a);
    a->size = sizeof *a;
    a->device_free = f->device_free;
    a->device_total = f->device_total;
    a->reserved = f->reserved;
    a->allocated = f->allocated;
    a->peak_allocated = f->peak_allocated;
    a->budget = budget_of(f);
    a->collect_target = (uint64_t)(c->gc_high * (double)a->budget);
    a->trim_target = f->allocated;
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
    gk_pressure_figures f;
    rc = pool_figures(pr, device_free, 0, &f, "gk_pressure_advise");
    if (rc)
        return rc;
    gk_pressure_advice a;
    pthread_mutex_lock(&pr->lock);
    advise(pr, &f, &a);
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

/* One sample over `f`: decides what is due, runs COLLECT and TRIM on the pool when the policy
 * has one, calls on_shrink, and fills *adv (always) and *actions. */
static int sample(gk_pressure *pr, const gk_pressure_figures *f, unsigned *actions,
                  gk_pressure_advice *adv)
{
    const gk_pressure_config *c = &pr->cfg;
    unsigned due_bits = 0;
    int rc = 0;
    pthread_mutex_lock(&pr->lock);
    uint64_t budget = budget_of(f);
    advise(pr, f, adv);
    if (due(&pr->hot_collect, c->gc_high > 0 && f->reserved > adv->collect_target, c->hysteresis))
        due_bits |= GK_PRESSURE_COLLECT;
    if (due(&pr->hot_trim,
            (double)f->device_free < c->free_low * (double)f->device_total &&
                f->reserved > f->allocated + c->trim_margin,
            c->hysteresis))
        due_bits |= GK_PRESSURE_TRIM;
    if (due(&pr->hot_shrink,
            c->shrink_high > 0 && (double)f->peak_allocated > c->shrink_high * (double)budget,
            c->hysteresis))
        due_bits |= GK_PRESSURE_SHRINK;
    gk_pressure_shrink_fn cb = c->on_shrink;
    void *user = c->user;
    pthread_mutex_unlock(&pr->lock);
    if ((due_bits & GK_PRESSURE_COLLECT) && pr->pool)
        rc = gk_pool_collect(pr->pool, (size_t)adv->collect_target, NULL);
    if ((due_bits & GK_PRESSURE_TRIM) && pr->pool) {
        int trc = gk_pool_trim(pr->pool, (size_t)adv->trim_target, NULL);
        if (!rc)
            rc = trc;
    }
    if ((due_bits & GK_PRESSURE_SHRINK) && cb)
        cb(user, adv);
    if (actions)
        *actions = due_bits;
    return rc;
}

int gk_pressure_sample_with(gk_pressure *pr, uint64_t device_free, uint64_t device_total,
                            unsigned *actions)
{
    if (actions)
        *actions = 0;
    if (!pr)
        return gk__error(-EINVAL, "gk_pressure_sample_with: pr is NULL");
    gk_pressure_figures f;
    int rc = pool_figures(pr, device_free, device_total, &f, "gk_pressure_sample_with");
    if (rc)
        return rc;
    gk_pressure_advice adv;
    return sample(pr, &f, actions, &adv);
}

int gk_pressure_sample(gk_pressure *pr, unsigned *actions)
{
    if (actions)
        *actions = 0;
    if (!pr)
        return gk__error(-EINVAL, "gk_pressure_sample: pr is NULL");
    if (!pr->pool)
        return gk__error(-EINVAL, "gk_pressure_sample: this policy was created without a pool; "
                                  "give it the allocator's figures with "
                                  "gk_pressure_sample_figures");
    size_t free_b = 0, total = 0;
    int rc = gk_device_mem_info(gk_pool_device(pr->pool), &free_b, &total);
    if (rc)
        return rc;
    return gk_pressure_sample_with(pr, free_b, total, actions);
}

int(gk_pressure_sample_figures)(gk_pressure *pr, const gk_pressure_figures *fig, unsigned *actions,
                                gk_pressure_advice *out, size_t size)
{
    if (actions)
        *actions = 0;
    if (!pr || !fig)
        return gk__error(-EINVAL, "gk_pressure_sample_figures: policy or figures is NULL");
    if (out) {
        int rc = gk__sized_check(out, size, "gk_pressure_advice");
        if (rc)
            return rc;
    }
    gk_pressure_figures f;
    memset(&f, 0, sizeof f);
    if (gk__sized_in(&f, sizeof f, fig, "gk_pressure_figures") != 0)
        return -EINVAL;
    if (f.device_free > f.device_total || f.allocated > f.reserved ||
        f.allocated > f.peak_allocated)
        return gk__error(-EINVAL,
                         "pressure figures: device_free %llu > device_total %llu, or allocated "
                         "%llu above reserved %llu or peak_allocated %llu (read them from one "
                         "snapshot of the allocator)",
                         (unsigned long long)f.device_free, (unsigned long long)f.device_total,
                         (unsigned long long)f.allocated, (unsigned long long)f.reserved,
                         (unsigned long long)f.peak_allocated);
    gk_pressure_advice adv;
    int rc = sample(pr, &f, actions, &adv);
    if (out) {
        int prc = gk__sized_put(out, size, &adv, sizeof adv, "gk_pressure_advice");
        if (!rc)
            rc = prc;
    }
    return rc;
}
