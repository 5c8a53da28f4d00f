/* The batch-size finder on simulated models: a linear one (the model mode answers within a few
 * percent below the true maximum in at most 4 trials, where binsearch needs many more), one that
 * grows faster than linear (the verify trial fails and bisection finds the exact limit), the
 * compatibility modes' answers, errors, and a run against a real pool with a limit. */
/* gk-labels: unit */
#include <string.h>

#include "gk_test.h"

#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)

typedef struct model {
    double a, k, q; /* peak(b) = a + k*b + q*b^2 */
    uint64_t capacity;
    int calls;
    int error_at; /* return -EIO on this call (1-based); 0 = never */
} model;

static uint64_t peak_of(const model *m, long b)
{
    return (uint64_t)(m->a + m->k * (double)b + m->q * (double)b * (double)b);
}

static int run_model(void *user, long b, uint64_t *peak)
{
    model *m = user;
    if (++m->calls == m->error_at)
        return -EIO;
    uint64_t p = peak_of(m, b);
    if (p > m->capacity)
        return GK_EDEVOOM;
    *peak = p;
    return 0;
}

static long true_max(const model *m)
{
    long b = 0;
    while (peak_of(m, b + 1) <= m->capacity)
        b++;
    return b;
}

static gk_batch_result find(gk_batch_mode mode, model *m, int want)
{
    gk_batch_config c;
    gk_batch_config_default(&c);
    c.mode = mode;
    c.budget = m->capacity;
    c.margin = 0.02;
    gk_batch_result r;
    m->calls = 0;
    GK_ASSERT_ERR(gk_batch_find(&c, run_model, m, &r), want);
    assert_int_equal(r.trials, m->calls);
    return r;
}

static void test_linear_model(void **state)
{
    (void)state;
    model m = {1.0 * GIB, 29.0 * MIB, 0, 16 * GIB, 0, 0};
    long best = true_max(&m);
    assert_int_equal(best, 529);
    gk_batch_result r = find(GK_BATCH_MODEL, &m, 0);
    assert_true(r.batch <= best);
    assert_true(r.batch >= best * 95 / 100);
    assert_true(r.trials <= 4);
    assert_true(r.fit_k > 28.9 * MIB && r.fit_k < 29.1 * MIB);
    gk_batch_result bs = find(GK_BATCH_BINSEARCH, &m, 0);
    assert_int_equal(bs.batch, best);
    assert_true(bs.trials >= 15);
    gk_batch_result pw = find(GK_BATCH_POWER, &m, 0);
    assert_int_equal(pw.batch, 512);
    assert_int_equal(pw.trials, 10); /* 2..512 fit, 1024 does not */
    gk_batch_result dc = find(GK_BATCH_DECAY, &m, 0);
    assert_int_equal(dc.batch, 128); /* accelerate never grows */
    assert_int_equal(dc.trials, 1);
}

static void test_superlinear_model_bisects(void **state)
{
    (void)state;
    /* Attention-like growth: the linear fit from b=2 and b=8 overshoots. */
    model m = {1.0 * GIB, 8.0 * MIB, 0.05 * MIB, 16 * GIB, 0, 0};
    long best = true_max(&m);
    gk_batch_result r = find(GK_BATCH_MODEL, &m, 0);
    assert_true(r.predicted > best);
    assert_int_equal(r.batch, best);
    assert_int_equal(r.tried_ok[2], 0); /* the verify trial failed */
    assert_int_equal(r.ooms >= 1, 1);
}

static void test_decay_and_small_limits(void **state)
{
    (void)state;
    model m = {1.0 * GIB, 100.0 * MIB, 0, 11 * GIB, 0, 0}; /* true max 102 */
    gk_batch_result dc = find(GK_BATCH_DECAY, &m, 0);
    assert_int_equal(true_max(&m), 102);
    assert_int_equal(dc.batch, 92); /* 128, 115, 103 fail; 92 fits: 10% below the limit */
    assert_int_equal(dc.trials, 4);
    /* Nothing fits. */
    model none = {20.0 * GIB, 1.0 * MIB, 0, 16 * GIB, 0, 0};
    find(GK_BATCH_MODEL, &none, GK_EDEVOOM);
    find(GK_BATCH_POWER, &none, GK_EDEVOOM);
    find(GK_BATCH_BINSEARCH, &none, GK_EDEVOOM);
    /* ×0.9 from 128 down to 1 takes more than the 25 trials allowed. */
    find(GK_BATCH_DECAY, &none, -ERANGE);
    /* Only batch 1..3 fit: model halves below b1=2? b1 fits, b2 = 8 does not: bisect. */
    model tiny = {1.0 * GIB, 1.0 * GIB, 0, 4 * GIB, 0, 0};
    gk_batch_result t = find(GK_BATCH_MODEL, &tiny, 0);
    assert_int_equal(t.batch, 3);
}

static void test_errors_and_options(void **state)
{
    (void)state;
    model m = {1.0 * GIB, 29.0 * MIB, 0, 16 * GIB, 0, 2};
    find(GK_BATCH_MODEL, &m, -EIO); /* the callback's own error ends the search */
    m.error_at = 0;
    gk_batch_config c;
    gk_batch_result r;
    gk_batch_config_default(&c);
    GK_ASSERT_ERR(gk_batch_find(&c, run_model, &m, &r), -EINVAL); /* no budget, no pool */
    c.budget = m.capacity;
    c.b2 = 2;
    GK_ASSERT_ERR(gk_batch_find(&c, run_model, &m, &r), -EINVAL);
    gk_batch_config_default(&c);
    c.budget = m.capacity;
    c.multiple = 8;
    c.max_batch = 300;
    GK_ASSERT_OK(gk_batch_find(&c, run_model, &m, &r));
    assert_int_equal(r.batch, 296);
    c.mode = GK_BATCH_BINSEARCH;
    c.max_trials = 5;
    c.max_batch = 0;
    GK_ASSERT_ERR(gk_batch_find(&c, run_model, &m, &r), -ERANGE);
    gk_batch_mode mode;
    GK_ASSERT_OK(gk_batch_mode_parse("binsearch", &mode));
    assert_int_equal(mode, GK_BATCH_BINSEARCH);
    GK_ASSERT_ERR(gk_batch_mode_parse("halving", &mode), -EINVAL);
    assert_string_equal(gk_batch_mode_name(GK_BATCH_DECAY), "decay");
}

typedef struct pool_model {
    gk_pool *pool;
    size_t a, k;
} pool_model;

/* A training step on a real pool: weights of a bytes, then four activation tensors of k*b/4. */
static int run_pool(void *user, long b, uint64_t *peak)
{
    (void)peak;
    pool_model *pm = user;
    void *w = NULL, *act[4] = {0};
    int rc = gk_pool_malloc(pm->pool, pm->a, NULL, &w);
    for (int i = 0; rc == 0 && i < 4; i++)
        rc = gk_pool_malloc(pm->pool, pm->k * (size_t)b / 4, NULL, &act[i]);
    for (int i = 0; i < 4; i++)
        gk_pool_free(pm->pool, act[i]);
    gk_pool_free(pm->pool, w);
    return rc;
}

static void test_finder_on_pool(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool_config pc;
    gk_pool_config_preset(&pc, "pytorch");
    pc.logger.level = GK_LOG_OFF;
    pc.limit_bytes = 1024 * MIB;
    pool_model pm = {NULL, 100 * MIB, 4 * MIB};
    GK_ASSERT_OK(gk_pool_create(dev, &pc, &pm.pool));
    gk_batch_config c;
    gk_batch_config_default(&c);
    c.pool = pm.pool;
    gk_batch_result r;
    GK_ASSERT_OK(gk_batch_find(&c, run_pool, &pm, &r));
    assert_true(r.trials <= 4);
    assert_true(r.fit_k > 3.9 * MIB && r.fit_k < 4.1 * MIB);
    /* The answer fits and is within 10% of the largest size that does. */
    long best = r.batch;
    while (run_pool(&pm, best + 1, NULL) == 0)
        best++;
    assert_true(r.batch <= best && r.batch >= best * 90 / 100);
    gk_pool_destroy(pm.pool);
    gk_device_close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_model),
        cmocka_unit_test(test_superlinear_model_bisects),
        cmocka_unit_test(test_decay_and_small_limits),
        cmocka_unit_test(test_errors_and_options),
        cmocka_unit_test(test_finder_on_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
