/* Streaming summaries: Welford's running mean and variance (merged with Chan's formula), min and
 * max, and a log-linear histogram for quantiles. Each power of two [2^(e-1), 2^e) is split into
 * 64 equal buckets, so a bucket is at most 1/64 of its lower edge wide and its midpoint is within
 * 1/128 (0.8%) of any value in it. Octaves are allocated on first use, so a series that spans a
 * few octaves costs a few KiB; merging adds bucket counts, which is exact. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "metrics_int.h"

#define SUB_BITS 6
#define SUBS     (1 << SUB_BITS)
#define EXP_MIN  (-31) /* frexp exponent of the smallest tracked magnitude (~4.7e-10) */
#define EXP_MAX  51    /* frexp exponent of the largest tracked magnitude (~2.3e15) */
#define NEXP     (EXP_MAX - EXP_MIN + 1)

struct gk_summary {
    uint64_t n;
    double mean, m2, min, max, sum;
    uint64_t zero;       /* |v| below the tracked range, and 0 itself */
    uint64_t *pos[NEXP]; /* pos[e - EXP_MIN][sub]: counts of positive values */
    uint64_t *neg[NEXP]; /* the same for negative values, by magnitude */
    uint64_t lost;       /* values counted in the moments but not the buckets (ENOMEM) */
};

int gk_summary_create(gk_summary **out)
{
    if (!out)
        return gk__error(-EINVAL, "gk_summary_create: out is NULL");
    gk_summary *s = gk__calloc(1, sizeof *s);
    if (!s)
        return gk__error(-ENOMEM, "gk_summary_create: out of host memory (!s)");
    *out = s;
    return 0;
}

void gk_summary_destroy(gk_summary *s)
{
    if (!s)
        return;
    for (int i = 0; i < NEXP; i++) {
        free(s->pos[i]);
        free(s->neg[i]);
    }
    free(s);
}

void gk_summary_reset(gk_summary *s)
{
    if (!s)
        return;
    s->n = 0;
    s->mean = s->m2 = s->min = s->max = s->sum = 0;
    s->zero = s->lost = 0;
    for (int i = 0; i < NEXP; i++) {
        if (s->pos[i])
            memset(s->pos[i], 0, SUBS * sizeof(uint64_t));
        if (s->neg[i])
            memset(s->neg[i], 0, SUBS * sizeof(uint64_t));
    }
}

/* Finds the bucket of magnitude `a` (> 0): *exp_slot and *sub. Returns 0 when `a` is below the
 * tracked range (counted as zero). Magnitudes above it go to the top bucket. */
static int bucket_of(double a, int *exp_slot, int *sub)
{
    int e;
    if (!(a > 0.0))
        return 0;
    double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    if (e < EXP_MIN)
        return 0;
    if (e > EXP_MAX) {
        *exp_slot = NEXP - 1;
        *sub = SUBS - 1;
        return 1;
    }
    int k = (int)((m - 0.5) * 2.0 * SUBS);
    if (k >= SUBS)
        k = SUBS - 1;
    *exp_slot = e - EXP_MIN;
    *sub = k;
    return 1;
}

/* The midpoint of a bucket, as a magnitude. */
static double bucket_mid(int exp_slot, int sub)
{
    double lo = 0.5 + (double)sub / (2.0 * SUBS);
    double hi = lo + 1.0 / (2.0 * SUBS);
    return ldexp((lo + hi) / 2.0, exp_slot + EXP_MIN);
}

static int bucket_add(gk_summary *s, double v, uint64_t count)
{
    int slot, sub;
    if (!bucket_of(fabs(v), &slot, &sub)) {
        s->zero += count;
        return 0;
    }
    uint64_t **set = v > 0 ? s->pos : s->neg;
    if (!set[slot]) {
        set[slot] = gk__calloc(SUBS, sizeof(uint64_t));
        if (!set[slot])
            return -ENOMEM;
    }
    set[slot][sub] += count;
    return 0;
}

int gk_summary_add(gk_summary *s, double v)
{
    if (!s || !isfinite(v))
        return gk__error(-EINVAL, "gk_summary_add: invalid argument (!s || !isfinite(v))");
    if (s->n == 0) {
        s->min = s->max = v;
    } else {
        if (v < s->min)
            s->min = v;
        if (v > s->max)
            s->max = v;
    }
    s->n++;
    s->sum += v;
    double d = v - s->mean;
    s->mean += d / (double)s->n;
    s->m2 += d * (v - s->mean);
    int rc = bucket_add(s, v, 1);
    if (rc)
        s->lost++;
    return rc;
}

int gk_summary_merge(gk_summary *dst, const gk_summary *src)
{
    if (!dst || !src)
        return gk__error(-EINVAL, "gk_summary_merge: dst or src is NULL");
    if (src->n == 0)
        return 0;
    if (dst->n == 0) {
        dst->min = src->min;
        dst->max = src->max;
    } else {
        if (src->min < dst->min)
            dst->min = src->min;
        if (src->max > dst->max)
            dst->max = src->max;
    }
    double na = (double)dst->n, nb = (double)src->n, n = na + nb;
    double d = src->mean - dst->mean;
    dst->mean += d * nb / n;
    dst->m2 += src->m2 + d * d * na * nb / n;
    dst->n += src->n;
    dst->sum += src->sum;
    dst->zero += src->zero;
    dst->lost += src->lost;
    int rc = 0;
    for (int i = 0; i < NEXP; i++) {
        for (int sign = 0; sign < 2; sign++) {
            uint64_t *const *from = sign ? src->neg : src->pos;
            uint64_t **to = sign ? dst->neg : dst->pos;
            if (!from[i])
                continue;
            if (!to[i]) {
                to[i] = gk__calloc(SUBS, sizeof(uint64_t));
                if (!to[i]) {
                    rc = -ENOMEM;
                    continue;
                }
            }
            for (int k = 0; k < SUBS; k++)
                to[i][k] += from[i][k];
        }
    }
    return rc;
}

double gk_summary_quantile(const gk_summary *s, double q)
{
    if (!s || s->n == 0 || !(q >= 0.0 && q <= 1.0))
        return NAN;
    uint64_t total = s->n - s->lost;
    if (total == 0)
        return s->mean;
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    double est = s->max;
    int found = 0;
    /* Ascending order: negatives by decreasing magnitude, zero, then positives. */
    for (int i = NEXP - 1; i >= 0 && !found; i--) {
        if (!s->neg[i])
            continue;
        for (int k = SUBS - 1; k >= 0; k--) {
            seen += s->neg[i][k];
            if (seen >= rank) {
                est = -bucket_mid(i, k);
                found = 1;
                break;
            }
        }
    }
    if (!found) {
        seen += s->zero;
        if (seen >= rank) {
            est = 0.0;
            found = 1;
        }
    }
    for (int i = 0; i < NEXP && !found; i++) {
        if (!s->pos[i])
            continue;
        for (int k = 0; k < SUBS; k++) {
            seen += s->pos[i][k];
            if (seen >= rank) {
                est = bucket_mid(i, k);
                found = 1;
                break;
            }
        }
    }
    if (est < s->min)
        est = s->min;
    if (est > s->max)
        est = s->max;
    return est;
}

int(gk_summary_get)(const gk_summary *s, gk_summary_stats *user, size_t size)
{
    gk_summary_stats st, *out = &st;
    memset(out, 0, sizeof *out);
    if (!s || s->n == 0)
        return gk__sized_put(user, size, out, sizeof *out, "gk_summary_stats");
    out->count = s->n;
    out->sum = s->sum;
    out->mean = s->mean;
    out->std = s->n > 1 ? sqrt(s->m2 / (double)(s->n - 1)) : 0.0;
    out->min = s->min;
    out->max = s->max;
    out->p50 = gk_summary_quantile(s, 0.50);
    out->p90 = gk_summary_quantile(s, 0.90);
    out->p99 = gk_summary_quantile(s, 0.99);
    return gk__sized_put(user, size, out, sizeof *out, "gk_summary_stats");
}
