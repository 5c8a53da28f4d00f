/* Comparing a recording with a baseline: per series the change of the median and p90, against
 * the run-to-run noise seen inside each recording (the spread of the medians of consecutive
 * blocks of the series). Verdicts use the median; docs/advice.md explains the rules. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "report/report_int.h"

#define MIN_NOISE_PCT 1.0 /* changes below 1% are never reported */
#define MAX_CHANGE    1e4 /* percent, when the baseline is 0 */

/* Counters compare their rate per second; other series their values. The noise is the range of
 * the medians of 4 (or 2) consecutive blocks, relative to the whole median, in percent. */
static void measures(const gk_series *s, double duration, double *p50, double *p90, double *noise)
{
    gk_stats st;
    *noise = 0;
    if (s->kind == GK_SERIES_COUNTER) {
        double sum = 0;
        for (size_t i = 0; i < s->n; i++)
            sum += s->v[i];
        *p50 = *p90 = duration > 0 ? sum / duration : sum;
        /* rate noise: the counts in 4 equal time slices */
        if (duration > 0 && s->n >= 8) {
            double slice[4] = {0};
            for (size_t i = 0; i < s->n; i++) {
                double q = s->t[i] / duration * 4;
                int k = q >= 3 ? 3 : q >= 0 ? (int)q : 0; /* NaN and negatives: slice 0 */
                slice[k] += s->v[i];
            }
            double lo = slice[0], hi = slice[0];
            for (int k = 1; k < 4; k++) {
                lo = fmin(lo, slice[k]);
                hi = fmax(hi, slice[k]);
            }
            double mean = sum / 4;
            *noise = mean != 0 ? fmin(MAX_CHANGE, 100 * (hi - lo) / fabs(mean)) : 0;
        }
        return;
    }
    if (gk_stats_compute(s->v, s->n, &st)) {
        *p50 = *p90 = NAN;
        return;
    }
    *p50 = st.p50;
    *p90 = st.p90;
    size_t blocks = s->n >= 8 ? 4 : s->n >= 4 ? 2 : 0;
    if (!blocks || st.p50 == 0)
        return;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t b = 0; b < blocks; b++) {
        size_t from = s->n * b / blocks, to = s->n * (b + 1) / blocks;
        gk_stats bs;
        if (gk_stats_compute(s->v + from, to - from, &bs))
            return;
        lo = fmin(lo, bs.p50);
        hi = fmax(hi, bs.p50);
    }
    *noise = fmin(MAX_CHANGE, 100 * (hi - lo) / fabs(st.p50)); /* a tiny median: no inf% */
}

static double change_pct(double base, double now)
{
    if (base == now)
        return 0;
    if (base == 0)
        return now > 0 ? MAX_CHANGE : -MAX_CHANGE;
    double c = 100 * (now - base) / fabs(base);
    return fmax(-MAX_CHANGE, fmin(MAX_CHANGE, c));
}

static int dir_of(const gk_comparison *c)
{
    return strcmp(c->direction, "time-like") == 0         ? -1
           : strcmp(c->direction, "throughput-like") == 0 ? 1
                                                          : 0;
}

/* How much worse the median got, in percent (negative: better). */
static double worse_pct(const gk_comparison *c)
{
    int d = dir_of(c);
    return d < 0 ? c->p50_change_pct : d > 0 ? -c->p50_change_pct : 0;
}

static int rank(const gk_comparison *c)
{
    switch (c->verdict) {
    case GK_CHANGE_REGRESSION:
        return 0;
    case GK_CHANGE_IMPROVEMENT:
        return 1;
    case GK_CHANGE_CHANGED:
        return 2;
    default:
        return 3;
    }
}

static int cmp_order(const void *a, const void *b)
{
    const gk_comparison *x = a, *y = b;
    if (rank(x) != rank(y))
        return rank(x) - rank(y);
    double mx = fabs(x->p50_change_pct) - x->noise_pct, my = fabs(y->p50_change_pct) - y->noise_pct;
    if (mx != my)
        return mx > my ? -1 : 1;
    return strcmp(x->name, y->name);
}

int gk__report_compare(gk_report *rep)
{
    gk_recording_info binfo;
    gk_recording_get_info(rep->base, &binfo);
    double bdur = binfo.has_end ? binfo.end->duration_s : binfo.last_t;
    rep->cmp = gk__calloc(rep->nsums ? rep->nsums : 1, sizeof *rep->cmp);
    if (!rep->cmp)
        return -ENOMEM;
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk_series *s = &rep->sums[i].s;
        gk_series bs;
        const gk_series *b = NULL;
        for (size_t k = 0; k < gk_recording_series_count(rep->base) && !b; k++) {
            gk_recording_series(rep->base, k, &bs);
            if (bs.kind == s->kind && strcmp(bs.name, s->name) == 0)
                b = &bs;
        }
        if (!b || b->n == 0 || s->n == 0)
            continue;
        gk_comparison *c = &rep->cmp[rep->ncmp];
        double nb, nn;
        c->name = s->name;
        c->direction = gk__direction_name(gk__series_direction(s->name, s->kind));
        measures(b, bdur, &c->base_p50, &c->base_p90, &nb);
        measures(s, rep->duration_s, &c->p50, &c->p90, &nn);
        if (!isfinite(c->p50) || !isfinite(c->base_p50))
            continue;
        c->p50_change_pct = change_pct(c->base_p50, c->p50);
        c->p90_change_pct = change_pct(c->base_p90, c->p90);
        c->noise_pct = fmax(nb, nn);
        double limit = fmax(c->noise_pct, MIN_NOISE_PCT);
        int d = dir_of(c);
        double worse = worse_pct(c);
        if (d != 0 && worse > limit)
            c->verdict = GK_CHANGE_REGRESSION;
        else if (d != 0 && -worse > limit)
            c->verdict = GK_CHANGE_IMPROVEMENT;
        else if (d == 0 && fabs(c->p50_change_pct) > limit)
            c->verdict = GK_CHANGE_CHANGED;
        else
            c->verdict = GK_CHANGE_UNCHANGED;
        rep->ncmp++;
    }
    qsort(rep->cmp, rep->ncmp, sizeof *rep->cmp, cmp_order);
    return 0;
}

size_t gk_report_regressions_over(const gk_report *rep, double pct)
{
    size_t n = 0;
    for (size_t i = 0; rep && i < rep->ncmp; i++) {
        const gk_comparison *c = &rep->cmp[i];
        if (c->verdict == GK_CHANGE_REGRESSION && worse_pct(c) - c->noise_pct > pct)
            n++;
    }
    return n;
}
