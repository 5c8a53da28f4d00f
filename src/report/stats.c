/* Exact summary statistics of a recorded series: Welford mean and variance in one pass, then a
 * sorted copy for min, max and the quantiles (linear interpolation between closest ranks). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "report/report_int.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n)
        return sorted[n - 1];
    double frac = pos - (double)lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

int(gk_stats_compute)(const double *v, size_t n, gk_stats *user, size_t size)
{
    int rc = gk__sized_check(user, size, "gk_stats");
    if (rc)
        return rc;
    if (n > 0 && !v)
        return gk__error(-EINVAL, "gk_stats_compute: %zu values but v is NULL", n);
    gk_stats result, *out = &result;
    memset(out, 0, sizeof *out);
    if (n == 0)
        return gk__sized_put(user, size, out, sizeof *out, "gk_stats");
    double *s = gk__malloc(n * sizeof *s);
    if (!s)
        return gk__error(-ENOMEM, "gk_stats_compute: out of host memory");
    size_t k = 0;
    double mean = 0, m2 = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            continue;
        s[k++] = v[i];
        double d = v[i] - mean;
        mean += d / (double)k;
        m2 += d * (v[i] - mean);
        sum += v[i];
    }
    if (k > 0) {
        qsort(s, k, sizeof *s, cmp_double);
        out->count = k;
        out->mean = mean;
        out->std = k > 1 ? sqrt(m2 / (double)(k - 1)) : 0;
        out->min = s[0];
        out->max = s[k - 1];
        out->p50 = quantile(s, k, 0.50);
        out->p90 = quantile(s, k, 0.90);
        out->p99 = quantile(s, k, 0.99);
        out->sum = sum;
    }
    free(s);
    return gk__sized_put(user, size, out, sizeof *out, "gk_stats");
}
