/* Tests of the metrics API: names and labels, caps, updates from several threads, summaries and
 * their quantile error bound, logged values, and golden Prometheus / OpenMetrics output. */
/* gk-labels: unit threads */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"
#include "metrics/metrics_int.h"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void assert_golden(const char *got, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/%s", GK_TEST_SOURCE_DIR, name);
    char *want = read_file(path);
    if (strcmp(got, want) != 0)
        fail_msg("output differs from %s:\n--- got ---\n%s--- want ---\n%s", path, got, want);
    free(want);
}

static void test_names(void **state)
{
    (void)state;
    GK_ASSERT_OK(gk_metrics_check_name("gpukit_gpu_power_watts"));
    GK_ASSERT_OK(gk_metrics_check_name(":recorded:rule"));
    GK_ASSERT_ERR(gk_metrics_check_name("9lives"), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_check_name("has-dash"), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_check_name(""), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_check_name(NULL), -EINVAL);
    GK_ASSERT_OK(gk_metrics_check_label_name("gpu"));
    GK_ASSERT_ERR(gk_metrics_check_label_name("__reserved"), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_check_label_name("a:b"), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_check_label_name("1a"), -EINVAL);
}

static void test_register_rules(void **state)
{
    (void)state;
    gk_metrics *m = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &m));
    gk_metric *a = NULL, *b = NULL, *c = NULL;
    const char *l0[] = {"gpu", "0", NULL};
    const char *l1[] = {"gpu", "1", NULL};
    const char *other[] = {"card", "0", NULL};
    const char *odd[] = {"gpu", NULL};
    const char *dup[] = {"gpu", "0", "gpu", "1", NULL};
    const char *le[] = {"le", "1", NULL};
    GK_ASSERT_OK(gk_metrics_counter(m, "x_requests_total", "help", l0, &a));
    GK_ASSERT_OK(gk_metrics_counter(m, "x_requests", "help", l0, &b));
    assert_ptr_equal(a, b); /* same family, same labels: same series */
    GK_ASSERT_OK(gk_metrics_counter(m, "x_requests", NULL, l1, &c));
    assert_ptr_not_equal(a, c);
    GK_ASSERT_ERR(gk_metrics_gauge(m, "x_requests", NULL, l0, &b), -EEXIST);
    GK_ASSERT_ERR(gk_metrics_counter(m, "x_requests", NULL, other, &b), -EEXIST);
    GK_ASSERT_ERR(gk_metrics_counter(m, "x_requests", NULL, NULL, &b), -EEXIST);
    assert_null(b);
    GK_ASSERT_ERR(gk_metrics_counter(m, "x_odd", NULL, odd, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_counter(m, "x_dup", NULL, dup, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_gauge(m, "x_gauge_total", NULL, NULL, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_histogram(m, "x_h", NULL, le, NULL, 0, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_histogram(m, "x_h_sum", NULL, NULL, NULL, 0, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_counter(m, "_total", NULL, NULL, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_counter(m, "bad name", NULL, NULL, &b), -EINVAL);
    double bad_bounds[] = {1.0, 0.5};
    double inf_bounds[] = {1.0, INFINITY};
    GK_ASSERT_ERR(gk_metrics_histogram(m, "x_h", NULL, NULL, bad_bounds, 2, &b), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_histogram(m, "x_h", NULL, NULL, inf_bounds, 2, &b), -EINVAL);
    double bounds[] = {1.0, 2.0};
    double bounds2[] = {1.0, 3.0};
    GK_ASSERT_OK(gk_metrics_histogram(m, "x_h", NULL, NULL, bounds, 2, &b));
    GK_ASSERT_ERR(gk_metrics_histogram(m, "x_h", NULL, l0, bounds2, 2, &c), -EEXIST);
    GK_ASSERT_ERR(gk_metrics_counter(NULL, "x", NULL, NULL, &b), -EINVAL);
    /* Updates of the wrong type are ignored. */
    gk_gauge_set(a, 5.0);
    gk_histogram_observe(a, 5.0);
    assert_true(gk_metric_value(a) == 0.0);
    gk_counter_add(a, -1.0);
    gk_counter_add(a, NAN);
    gk_counter_add(a, 2.5);
    assert_true(gk_metric_value(a) == 2.5);
    gk_counter_add(NULL, 1.0);
    assert_true(isnan(gk_metric_value(NULL)));
    gk_metrics_destroy(m);
    gk_metrics_destroy(NULL);
}

static void test_caps(void **state)
{
    (void)state;
    gk_metrics_config cfg;
    gk_metrics_config_default(&cfg);
    cfg.max_series_per_family = 3;
    cfg.max_families = 2;
    cfg.max_labels = 1;
    gk_metrics *m = NULL;
    GK_ASSERT_OK(gk_metrics_create(&cfg, &m));
    gk_metric *s = NULL;
    char v[8];
    const char *lab[] = {"id", v, NULL};
    for (int i = 0; i < 3; i++) {
        snprintf(v, sizeof v, "%d", i);
        GK_ASSERT_OK(gk_metrics_gauge(m, "cap_g", NULL, lab, &s));
    }
    snprintf(v, sizeof v, "3");
    GK_ASSERT_ERR(gk_metrics_gauge(m, "cap_g", NULL, lab, &s), -ENOSPC);
    snprintf(v, sizeof v, "1");
    GK_ASSERT_OK(gk_metrics_gauge(m, "cap_g", NULL, lab, &s)); /* existing set still found */
    const char *two[] = {"a", "1", "b", "2", NULL};
    GK_ASSERT_ERR(gk_metrics_gauge(m, "cap_two", NULL, two, &s), -ENOSPC);
    GK_ASSERT_OK(gk_metrics_gauge(m, "cap_h", NULL, NULL, &s));
    GK_ASSERT_ERR(gk_metrics_gauge(m, "cap_i", NULL, NULL, &s), -ENOSPC);
    gk_metrics_destroy(m);
    cfg.max_families = 0;
    GK_ASSERT_ERR(gk_metrics_create(&cfg, &m), -EINVAL);
}

/* A registry with every kind of series, fixed values and awkward label values. */
static gk_metrics *golden_registry(void)
{
    gk_metrics *m = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &m));
    gk_metric *s = NULL;
    const char *l0[] = {"gpu", "0", "uuid", "GPU-a", NULL};
    const char *l1[] = {"gpu", "1", "uuid", "quote\" back\\slash\nnewline", NULL};
    GK_ASSERT_OK(gk_metrics_counter(m, "gpukit_gpu_energy_joules_total",
                                    "Energy used since the driver loaded.", l0, &s));
    gk_counter_add(s, 1234.5);
    GK_ASSERT_OK(gk_metrics_counter(m, "gpukit_gpu_energy_joules_total", NULL, l1, &s));
    gk_counter_add(s, 1e12);
    GK_ASSERT_OK(gk_metrics_gauge(m, "gpukit_gpu_temperature_celsius",
                                  "GPU temperature. Help with a back\\slash\nand newline.", l0,
                                  &s));
    gk_gauge_set(s, 61);
    GK_ASSERT_OK(gk_metrics_gauge(m, "gpukit_nvml_up", NULL, NULL, &s));
    gk_gauge_set(s, 0.1);
    double bounds[] = {0.001, 0.01, 0.1};
    GK_ASSERT_OK(gk_metrics_histogram(m, "gpukit_alloc_latency_seconds", "Allocation latency.",
                                      NULL, bounds, 3, &s));
    gk_histogram_observe(s, 0.0005);
    gk_histogram_observe(s, 0.001); /* on a bound: counted in that bucket (le) */
    gk_histogram_observe(s, 0.05);
    gk_histogram_observe(s, 3.0);
    assert_int_equal(gk_metric_count(s), 4);
    GK_ASSERT_OK(gk_metrics_gauge(m, "gpukit_odd_values", "Special values.", NULL, &s));
    gk_gauge_set(s, -INFINITY);
    /* A logged name becomes a summary: 1..100 gives p50, p90, p99 near 50, 90, 99 (the
     * midpoints of their log-linear buckets: 50.25, 90.5, 99.5). */
    for (int i = 1; i <= 100; i++)
        GK_ASSERT_OK(gk_metrics_log(m, "train_step_seconds", i));
    return m;
}

static void test_golden_prometheus(void **state)
{
    (void)state;
    gk_metrics *m = golden_registry();
    char *out = NULL;
    size_t len = 0;
    GK_ASSERT_OK(gk_metrics_render(m, GK_METRICS_PROMETHEUS, &out, &len));
    assert_int_equal(strlen(out), len);
    assert_golden(out, "metrics_golden.prom");
    free(out);
    GK_ASSERT_OK(gk_metrics_render(m, GK_METRICS_OPENMETRICS, &out, &len));
    assert_golden(out, "metrics_golden.om");
    free(out);
    GK_ASSERT_ERR(gk_metrics_render(m, (gk_metrics_format)7, &out, &len), -EINVAL);
    gk_metrics_destroy(m);
}

/* The renderers' number text, as the model: the shortest of "%.15g", "%.16g", "%.17g" that reads
 * back as the same double ("0" for zero). */
static void model_number(double v, char *buf, size_t len)
{
    if (v == 0.0) {
        snprintf(buf, len, "0");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void check_number(double v)
{
    char got[64], want[64];
    gk__metrics_format_number(v, got, sizeof got);
    model_number(v, want, sizeof want);
    if (strcmp(got, want) != 0)
        fail_msg("%.17g renders as \"%s\", expected \"%s\"", v, got, want);
}

/* Whole numbers (counts, bytes) take a path of their own: it must write what the general one
 * writes, at the edges of its range and for random values of every size, and so must the
 * general path for fractions. */
static void test_number_text(void **state)
{
    (void)state;
    static const double edges[] = {1,      -1,    42,       1e14,   999999999999999.0,
                                   1e15,   -1e15, 1e15 + 2, 4.5e15, 9007199254740992.0,
                                   1e19,   1e300, -0.0,     0.5,    0.1,
                                   1234.5, 1e-7,  -2.25,    1e12,   123456789012345.0};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        check_number(edges[i]);
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift: a failure reproduces */
    for (int i = 0; i < 20000; i++) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            u[k] = (double)(x >> 11) / 9007199254740992.0;
        }
        double v = (u[1] < 0.5 ? -1 : 1) * pow(10.0, 18.0 * u[0]);
        check_number(v);
        check_number(trunc(v));
    }
    char buf[64];
    gk__metrics_format_number(NAN, buf, sizeof buf);
    assert_string_equal(buf, "NaN");
    gk__metrics_format_number(-INFINITY, buf, sizeof buf);
    assert_string_equal(buf, "-Inf");
}

static void test_negotiate(void **state)
{
    (void)state;
    assert_int_equal(gk_metrics_negotiate(NULL), GK_METRICS_PROMETHEUS);
    assert_int_equal(gk_metrics_negotiate("*/*"), GK_METRICS_PROMETHEUS);
    assert_int_equal(gk_metrics_negotiate("text/plain;version=0.0.4"), GK_METRICS_PROMETHEUS);
    assert_int_equal(gk_metrics_negotiate("application/openmetrics-text;version=1.0.0"),
                     GK_METRICS_OPENMETRICS);
    /* Prometheus 2.x scrape header: OpenMetrics preferred. */
    assert_int_equal(gk_metrics_negotiate("application/openmetrics-text;version=1.0.0,"
                                          "application/openmetrics-text;version=0.0.1;q=0.75,"
                                          "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                     GK_METRICS_OPENMETRICS);
    assert_int_equal(gk_metrics_negotiate("application/openmetrics-text;q=0.2, text/plain"),
                     GK_METRICS_PROMETHEUS);
    assert_int_equal(gk_metrics_negotiate("application/openmetrics-text;q=0"),
                     GK_METRICS_PROMETHEUS);
    GK_ASSERT_CONTAINS(gk_metrics_content_type(GK_METRICS_PROMETHEUS), "version=0.0.4");
    GK_ASSERT_CONTAINS(gk_metrics_content_type(GK_METRICS_OPENMETRICS), "openmetrics-text");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Deterministic pseudo-random numbers (xorshift) so a failure reproduces. */
static uint64_t rng_state = 88172645463325252ULL;
static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void check_quantiles(const double *sorted_src, size_t n, const gk_summary *s)
{
    static const double qs[] = {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        size_t rank = (size_t)ceil(qs[i] * (double)n);
        if (rank < 1)
            rank = 1;
        double exact = sorted_src[rank - 1];
        double got = gk_summary_quantile(s, qs[i]);
        double err = fabs(got - exact) / fabs(exact);
        if (!(err <= 0.01))
            fail_msg("q=%g: got %.9g, exact %.9g, relative error %.4f%%", qs[i], got, exact,
                     err * 100.0);
    }
}

static void test_summary_error_bound(void **state)
{
    (void)state;
    enum { N = 20000 };
    double *v = malloc(N * sizeof *v);
    assert_non_null(v);
    /* Three shapes: log-uniform over 12 decades, a narrow normal-ish band, all negative. */
    for (int shape = 0; shape < 3; shape++) {
        gk_summary *s = NULL;
        GK_ASSERT_OK(gk_summary_create(&s));
        double sum = 0;
        for (size_t i = 0; i < N; i++) {
            if (shape == 0)
                v[i] = pow(10.0, -6.0 + 12.0 * uniform());
            else if (shape == 1)
                v[i] = 1000.0 + (uniform() + uniform() + uniform() - 1.5) * 10.0;
            else
                v[i] = -pow(10.0, 3.0 * uniform());
            sum += v[i];
            GK_ASSERT_OK(gk_summary_add(s, v[i]));
        }
        qsort(v, N, sizeof *v, cmp_double);
        check_quantiles(v, N, s);
        gk_summary_stats st;
        gk_summary_get(s, &st);
        assert_int_equal(st.count, N);
        assert_true(st.min == v[0] && st.max == v[N - 1]);
        double mean = sum / N, m2 = 0;
        for (size_t i = 0; i < N; i++)
            m2 += (v[i] - mean) * (v[i] - mean);
        assert_true(fabs(st.mean - mean) <= 1e-9 * fabs(mean) + 1e-12);
        double sd = sqrt(m2 / (N - 1));
        assert_true(fabs(st.std - sd) <= 1e-6 * sd);
        gk_summary_destroy(s);
    }
    free(v);
}

static void test_summary_merge_and_edges(void **state)
{
    (void)state;
    gk_summary *a = NULL, *b = NULL, *all = NULL;
    GK_ASSERT_OK(gk_summary_create(&a));
    GK_ASSERT_OK(gk_summary_create(&b));
    GK_ASSERT_OK(gk_summary_create(&all));
    gk_summary_stats st;
    gk_summary_get(a, &st);
    assert_int_equal(st.count, 0);
    assert_true(isnan(gk_summary_quantile(a, 0.5)));
    GK_ASSERT_ERR(gk_summary_add(a, NAN), -EINVAL);
    GK_ASSERT_ERR(gk_summary_add(a, INFINITY), -EINVAL);
    for (int i = 1; i <= 1000; i++) {
        double x = i * 0.37;
        GK_ASSERT_OK(gk_summary_add(i % 3 ? a : b, x));
        GK_ASSERT_OK(gk_summary_add(all, x));
    }
    GK_ASSERT_OK(gk_summary_add(all, 0.0));
    GK_ASSERT_OK(gk_summary_add(b, 0.0));
    GK_ASSERT_OK(gk_summary_merge(a, b));
    gk_summary_stats sa, sall;
    gk_summary_get(a, &sa);
    gk_summary_get(all, &sall);
    assert_int_equal(sa.count, sall.count);
    assert_true(fabs(sa.mean - sall.mean) < 1e-9);
    assert_true(fabs(sa.std - sall.std) < 1e-9);
    assert_true(sa.min == 0.0 && sa.max == sall.max);
    /* Bucket counts merge exactly, so the quantiles are identical. */
    assert_true(sa.p50 == sall.p50 && sa.p90 == sall.p90 && sa.p99 == sall.p99);
    assert_true(gk_summary_quantile(a, 0.0) == 0.0);
    assert_true(isnan(gk_summary_quantile(a, 1.5)));
    gk_summary_reset(a);
    gk_summary_get(a, &sa);
    assert_int_equal(sa.count, 0);
    GK_ASSERT_OK(gk_summary_add(a, 7.0));
    gk_summary_get(a, &sa);
    assert_true(sa.p50 == 7.0 && sa.std == 0.0);
    gk_summary_destroy(a);
    gk_summary_destroy(b);
    gk_summary_destroy(all);
    gk_summary_destroy(NULL);
}

static void test_log(void **state)
{
    (void)state;
    gk_metrics_config cfg;
    gk_metrics_config_default(&cfg);
    cfg.log_capacity = 4;
    cfg.max_logs = 1;
    gk_metrics *m = NULL;
    GK_ASSERT_OK(gk_metrics_create(&cfg, &m));
    for (int i = 1; i <= 10; i++)
        GK_ASSERT_OK(gk_metrics_log(m, "train_loss", i));
    GK_ASSERT_ERR(gk_metrics_log(m, "other", 1), -ENOSPC);
    GK_ASSERT_ERR(gk_metrics_log(m, "bad name", 1), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_log(m, "train_loss", NAN), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_log(m, "train_loss_total", 1), -EINVAL);
    GK_ASSERT_ERR(gk_metrics_log(m, "train_loss_count", 1), -EINVAL);
    gk_metric_point pts[8];
    size_t n = 0;
    GK_ASSERT_OK(gk_metrics_log_points(m, "train_loss", pts, 8, &n));
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_true(pts[i].value == 7.0 + (double)i);
        assert_true(pts[i].t_ns > 1600000000LL * 1000000000LL);
        if (i)
            assert_true(pts[i].t_ns >= pts[i - 1].t_ns);
    }
    GK_ASSERT_OK(gk_metrics_log_points(m, "train_loss", pts, 2, &n));
    assert_int_equal(n, 2);
    assert_true(pts[0].value == 9.0 && pts[1].value == 10.0);
    GK_ASSERT_ERR(gk_metrics_log_points(m, "nope", pts, 2, &n), -ENOENT);
    gk_summary_stats st;
    GK_ASSERT_OK(gk_metrics_log_summary(m, "train_loss", &st));
    assert_int_equal(st.count, 10);
    assert_true(st.mean == 5.5 && st.min == 1.0 && st.max == 10.0);
    assert_true(fabs(st.p50 - 5.0) <= 0.05);
    GK_ASSERT_ERR(gk_metrics_log_summary(m, "nope", &st), -ENOENT);
    /* Logged names and families never share a name. */
    gk_metric *g = NULL;
    GK_ASSERT_ERR(gk_metrics_gauge(m, "train_loss", NULL, NULL, &g), -EEXIST);
    GK_ASSERT_ERR(gk_metrics_gauge(m, "train_loss_sum", NULL, NULL, &g), -EEXIST);
    GK_ASSERT_ERR(gk_metrics_counter(m, "train_loss_count", NULL, NULL, &g), -EEXIST);
    GK_ASSERT_OK(gk_metrics_gauge(m, "train_loss_avg", NULL, NULL, &g));
    gk_metrics_destroy(m);
    GK_ASSERT_OK(gk_metrics_create(NULL, &m));
    GK_ASSERT_OK(gk_metrics_gauge(m, "eval_accuracy", NULL, NULL, &g));
    GK_ASSERT_ERR(gk_metrics_log(m, "eval_accuracy", 0.5), -EEXIST);
    gk_metrics_destroy(m);
    /* The process-default registry. */
    gk_metrics *d = gk_metrics_default();
    assert_non_null(d);
    assert_ptr_equal(d, gk_metrics_default());
    GK_ASSERT_OK(gk_metric_log("test_default_log", 3.0));
    GK_ASSERT_OK(gk_metrics_log_summary(d, "test_default_log", &st));
    assert_int_equal(st.count, 1);
}

enum { THREAD_OPS = 200000 };

static gk_metrics *log_registry;

static void *hammer(void *arg)
{
    gk_metric **s = arg;
    for (int i = 0; i < THREAD_OPS; i++) {
        gk_counter_add(s[0], 1.0);
        gk_gauge_add(s[1], 2.0);
        gk_histogram_observe(s[2], (i % 4) * 0.5);
        if (i % 4096 == 0)
            gk_metrics_log(log_registry, "t_log", i);
    }
    return NULL;
}

static void *render_loop(void *arg)
{
    gk_metrics *m = arg;
    for (int i = 0; i < 50; i++) {
        char *out = NULL;
        size_t len = 0;
        if (gk_metrics_render(m, GK_METRICS_OPENMETRICS, &out, &len) == 0)
            free(out);
        gk_metric *s = NULL;
        char name[32];
        snprintf(name, sizeof name, "late_%d", i);
        gk_metrics_gauge(m, name, NULL, NULL, &s);
        snprintf(name, sizeof name, "late_log_%d", i); /* a new logged name: both locks */
        gk_metrics_log(m, name, i);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    gk_metrics *m = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &m));
    gk_metric *s[3];
    double bounds[] = {0.25, 0.75};
    GK_ASSERT_OK(gk_metrics_counter(m, "t_ops_total", NULL, NULL, &s[0]));
    GK_ASSERT_OK(gk_metrics_gauge(m, "t_level", NULL, NULL, &s[1]));
    GK_ASSERT_OK(gk_metrics_histogram(m, "t_obs", NULL, NULL, bounds, 2, &s[2]));
    log_registry = m;
    pthread_t th[3];
    assert_int_equal(pthread_create(&th[0], NULL, hammer, s), 0);
    assert_int_equal(pthread_create(&th[1], NULL, hammer, s), 0);
    assert_int_equal(pthread_create(&th[2], NULL, render_loop, m), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_true(gk_metric_value(s[0]) == 2.0 * THREAD_OPS);
    assert_true(gk_metric_value(s[1]) == 4.0 * THREAD_OPS);
    assert_int_equal(gk_metric_count(s[2]), 2 * THREAD_OPS);
    /* values 0, 0.5, 1, 1.5 in equal shares: sum = 2 threads * OPS/4 * 3 */
    assert_true(gk_metric_value(s[2]) == 2.0 * THREAD_OPS / 4 * 3.0);
    gk_summary_stats st;
    GK_ASSERT_OK(gk_metrics_log_summary(m, "t_log", &st));
    assert_int_equal(st.count, 2 * ((THREAD_OPS + 4095) / 4096));
    GK_ASSERT_OK(gk_metrics_log_summary(m, "late_log_49", &st));
    gk_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_register_rules),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_golden_prometheus),
        cmocka_unit_test(test_negotiate),
        cmocka_unit_test(test_number_text),
        cmocka_unit_test(test_summary_error_bound),
        cmocka_unit_test(test_summary_merge_and_edges),
        cmocka_unit_test(test_log),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
