/* The memory-pressure policy: each action after `hysteresis` consecutive samples and not before,
 * a condition that comes and goes never acts, trim needs low device memory AND a reserved-
 * allocated gap, high allocated memory alone never gives the cache back, and the shrink advice
 * from the fitted batch model. Device free memory is given per sample (gk_pressure_sample_with). */
/* gk-labels: unit */
#include <string.h>

#include "gk_test.h"

#define MIB   ((size_t)1 << 20)
#define TOTAL ((uint64_t)1000 * MIB)

typedef struct fx {
    gk_device *dev;
    gk_pool *pool;
} fx;

static void open_pool(fx *f, size_t limit)
{
    GK_ASSERT_OK(gk_device_open("host", &f->dev));
    gk_pool_config c;
    gk_pool_config_preset(&c, "pytorch");
    c.logger.level = GK_LOG_OFF;
    c.limit_bytes = limit;
    GK_ASSERT_OK(gk_pool_create(f->dev, &c, &f->pool));
}

static void close_pool(fx *f)
{
    gk_pool_destroy(f->pool);
    gk_device_close(f->dev);
}

static gk_pool_stats st(gk_pool *p)
{
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(p, &s));
    return s;
}

static unsigned sample(gk_pressure *pr, uint64_t device_free)
{
    unsigned a = 99;
    GK_ASSERT_OK(gk_pressure_sample_with(pr, device_free, TOTAL, &a));
    return a;
}

static void test_collect_after_hysteresis(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, 100 * MIB);
    void *p[3], *hold;
    for (int i = 0; i < 3; i++)
        GK_ASSERT_OK(gk_pool_malloc(f.pool, 12 * MIB + (size_t)i * 2 * MIB, NULL, &p[i]));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 20 * MIB, NULL, &hold));
    for (int i = 0; i < 3; i++)
        gk_pool_free(f.pool, p[i]);
    gk_pressure_config c;
    gk_pressure_config_default(&c);
    c.gc_high = 0.5;
    c.shrink_high = 0;
    gk_pressure *pr;
    GK_ASSERT_OK(gk_pressure_create(f.pool, &c, &pr));
    assert_int_equal(sample(pr, 900 * MIB), 0);
    assert_int_equal(sample(pr, 900 * MIB), 0);
    assert_int_equal(sample(pr, 900 * MIB), GK_PRESSURE_COLLECT);
    assert_true(st(f.pool).reserved_bytes[GK_POOL_ALL].current <= (int64_t)(50 * MIB));
    assert_int_equal(sample(pr, 900 * MIB), 0); /* below the line now */
    gk_pool_free(f.pool, hold);
    gk_pressure_destroy(pr);
    close_pool(&f);
}

static void test_trim_needs_low_free_and_gap(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, 0);
    void *big, *keep;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 200 * MIB, NULL, &big));
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 4096, NULL, &keep));
    gk_pressure_config c;
    gk_pressure_config_default(&c);
    c.gc_high = 0;
    c.shrink_high = 0;
    c.trim_margin = 8 * MIB;
    gk_pressure *pr;
    GK_ASSERT_OK(gk_pressure_create(f.pool, &c, &pr));
    /* Allocated is high and free memory low, but nothing is cached: no action, ever. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(sample(pr, 10 * MIB), 0);
    assert_int_equal(st(f.pool).num_device_free, 0);
    gk_pool_free(f.pool, big);
    /* Cached 200 MiB but free memory plentiful: no action. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(sample(pr, 500 * MIB), 0);
    /* Low free memory that comes and goes never reaches 3 in a row. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(sample(pr, i % 2 ? 500 * MIB : 10 * MIB), 0);
    assert_int_equal(sample(pr, 10 * MIB), 0);
    assert_int_equal(sample(pr, 10 * MIB), 0);
    assert_int_equal(sample(pr, 10 * MIB), GK_PRESSURE_TRIM);
    gk_pool_stats s = st(f.pool);
    assert_int_equal(s.reserved_bytes[GK_POOL_ALL].current, 2 * MIB); /* `keep`'s segment */
    assert_int_equal(s.num_device_free, 1);
    gk_pool_free(f.pool, keep);
    gk_pressure_destroy(pr);
    close_pool(&f);
}

static gk_pressure_advice last_advice;
static int shrink_calls;

static void on_shrink(void *user, const gk_pressure_advice *a)
{
    (void)user;
    last_advice = *a;
    shrink_calls++;
}

static void test_shrink_advice(void **state)
{
    (void)state;
    fx f;
    open_pool(&f, 100 * MIB);
    void *p;
    GK_ASSERT_OK(gk_pool_malloc(f.pool, 97 * MIB, NULL, &p));
    gk_pressure_config c;
    gk_pressure_config_default(&c);
    c.gc_high = 0;
    c.fit_a = 10.0 * MIB;
    c.fit_k = 2.0 * MIB;
    c.on_shrink = on_shrink;
    gk_pressure *pr;
    GK_ASSERT_OK(gk_pressure_create(f.pool, &c, &pr));
    shrink_calls = 0;
    sample(pr, 900 * MIB);
    sample(pr, 900 * MIB);
    assert_int_equal(shrink_calls, 0);
    assert_int_equal(sample(pr, 900 * MIB), GK_PRESSURE_SHRINK);
    assert_int_equal(shrink_calls, 1);
    /* budget 100 MiB (the limit), 95 usable: (95 - 10) / 2 = 42. */
    assert_int_equal(last_advice.budget, 100 * MIB);
    assert_int_equal(last_advice.suggested_batch, 42);
    assert_int_equal(last_advice.checkpointing, 0);
    assert_int_equal(last_advice.peak_allocated, 98 * MIB);
    gk_pressure_destroy(pr);
    /* A fixed part above the budget: batch 1 and checkpointing. */
    c.fit_a = 120.0 * MIB;
    GK_ASSERT_OK(gk_pressure_create(f.pool, &c, &pr));
    gk_pressure_advice a;
    GK_ASSERT_OK(gk_pressure_advise(pr, 900 * MIB, &a));
    assert_int_equal(a.suggested_batch, 1);
    assert_int_equal(a.checkpointing, 1);
    gk_pressure_destroy(pr);
    /* Without a model: proportional to the peak (batch 64 at a 98 MiB peak -> 62). */
    c.fit_a = c.fit_k = 0;
    c.batch = 64;
    GK_ASSERT_OK(gk_pressure_create(f.pool, &c, &pr));
    GK_ASSERT_OK(gk_pressure_advise(pr, 900 * MIB, &a));
    assert_int_equal(a.suggested_batch, 62);
    unsigned acts;
    GK_ASSERT_OK(gk_pressure_sample(pr, &acts)); /* reads the device itself */
    gk_pressure_destroy(pr);
    c.hysteresis = 0;
    GK_ASSERT_ERR(gk_pressure_create(f.pool, &c, &pr), -EINVAL);
    gk_pool_free(f.pool, p);
    close_pool(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collect_after_hysteresis),
        cmocka_unit_test(test_trim_needs_low_free_and_gap),
        cmocka_unit_test(test_shrink_advice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
