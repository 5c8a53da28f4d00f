/* The entry points that language bindings (the Python package) build on: a gk_stream over a
 * native CUDA stream (the fake driver), the loader's position counting the held batch as
 * consumed, the pressure policy over another allocator's figures (differential against the
 * pool-based policy on random figures), the finder's per-trial peaks and budget, and the StatsD
 * client's activity flag and allocator figures. */
/* gk-labels: unit */
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "device/cuda_api.h"
#include "fake_cuda.h"
#include "gk_test.h"
#include "run/run_int.h"

#define MIB ((uint64_t)1 << 20)

/* --- gk_stream_wrap -------------------------------------------------------------------------- */

typedef struct fake {
    void *lib;
    void (*reset)(void);
    long (*calls)(const char *fn);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_destroy)(CUstream);
    CUresult (*stream_query)(CUstream);
    CUresult (*ctx_retain)(CUcontext *, CUdevice);
    CUresult (*ctx_release)(CUdevice);
    CUresult (*ctx_push)(CUcontext);
    CUresult (*ctx_pop)(CUcontext *);
} fake;

static void load_fake(fake *f)
{
    f->lib = dlopen(gk_test_fake_cuda(), RTLD_NOW | RTLD_LOCAL);
    if (!f->lib)
        fail_msg("cannot load the fake driver: %s", dlerror());
    void *p;
#define SYM(field, name)                                                                           \
    p = dlsym(f->lib, name);                                                                       \
    assert_non_null(p);                                                                            \
    memcpy(&f->field, &p, sizeof p);
    SYM(reset, "fakecuda_reset")
    SYM(calls, "fakecuda_calls")
    SYM(stream_create, "cuStreamCreate")
    SYM(stream_destroy, "cuStreamDestroy_v2")
    SYM(stream_query, "cuStreamQuery")
    SYM(ctx_retain, "cuDevicePrimaryCtxRetain")
    SYM(ctx_release, "cuDevicePrimaryCtxRelease_v2")
    SYM(ctx_push, "cuCtxPushCurrent_v2")
    SYM(ctx_pop, "cuCtxPopCurrent_v2")
#undef SYM
}

static void test_stream_wrap(void **state)
{
    (void)state;
    gk_test_setenv("GK_CUDA_LIBRARY", gk_test_fake_cuda());
    fake f;
    load_fake(&f);
    f.reset();
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("cuda:0", &dev));
    /* The caller's own stream, made through the driver on the primary context (which gpukit's
     * cuda backend shares) as PyTorch would. */
    CUcontext ctx;
    assert_int_equal(f.ctx_retain(&ctx, 0), CUDA_SUCCESS);
    assert_int_equal(f.ctx_push(ctx), CUDA_SUCCESS);
    CUstream native;
    assert_int_equal(f.stream_create(&native, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    gk_stream *s;
    GK_ASSERT_OK(gk_stream_wrap(dev, native, &s));

    /* The loader delivers on it: edge (a) is a wait enqueued on the native stream. */
    static uint32_t items[64];
    for (uint32_t i = 0; i < 64; i++)
        items[i] = i * 7;
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_memory(items, sizeof items[0], 64, &ds));
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.batch_size = 8;
    lc.device = dev;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&lc, ds, &ld));
    long waits = f.calls("cuStreamWaitEvent");
    gk_batch b;
    GK_ASSERT_OK(gk_loader_next(ld, s, -1, &b));
    assert_true(f.calls("cuStreamWaitEvent") > waits);
    uint32_t back[8];
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, back, b.device, sizeof back, s));
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, -1));
    assert_memory_equal(back, items, sizeof back);
    GK_ASSERT_OK(gk_loader_next(ld, s, -1, &b)); /* releases the first on the wrapped stream */
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);

    /* Destroying the handle leaves the native stream to its owner. */
    long destroys = f.calls("cuStreamDestroy_v2");
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    assert_int_equal(f.calls("cuStreamDestroy_v2"), destroys);
    assert_int_equal(f.stream_query(native), CUDA_SUCCESS);
    /* A handle still open when the device closes: the same. */
    GK_ASSERT_OK(gk_stream_wrap(dev, native, &s));
    gk_device_close(dev);
    assert_int_equal(f.calls("cuStreamDestroy_v2"), destroys);
    assert_int_equal(f.stream_destroy(native), CUDA_SUCCESS);
    assert_int_equal(f.ctx_pop(&ctx), CUDA_SUCCESS);
    assert_int_equal(f.ctx_release(0), CUDA_SUCCESS);

    /* No native stream on host and sim; a NULL native stream is the default stream's job. */
    GK_ASSERT_OK(gk_device_open("sim", &dev));
    GK_ASSERT_ERR(gk_stream_wrap(dev, (void *)&native, &s), GK_EUNAVAIL);
    GK_ASSERT_CONTAINS(gk_last_error(), "only cuda");
    assert_null(s);
    GK_ASSERT_ERR(gk_stream_wrap(dev, NULL, &s), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "NULL gk_stream");
    GK_ASSERT_ERR(gk_stream_wrap(NULL, (void *)&native, &s), -EINVAL);
    gk_device_close(dev);
    f.reset();
    dlclose(f.lib);
}

/* --- gk_loader_get_state_delivered ----------------------------------------------------------- */

static gk_loader *make_loader(gk_dataset *ds, int workers)
{
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    lc.batch_size = 4;
    lc.workers = workers;
    lc.shuffle = 1;
    lc.seed = 9;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&lc, ds, &ld));
    return ld;
}

static void test_state_delivered(void **state)
{
    (void)state;
    static uint64_t items[40]; /* 10 batches of 4 per epoch */
    for (int i = 0; i < 40; i++)
        items[i] = (uint64_t)i;
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_memory(items, sizeof items[0], 40, &ds));
    for (int workers = 0; workers <= 2; workers += 2) {
        gk_loader *ld = make_loader(ds, workers);
        gk_loader_state released, delivered;
        GK_ASSERT_OK(gk_loader_get_state_delivered(ld, &delivered));
        assert_int_equal(delivered.size, sizeof delivered);
        assert_int_equal(delivered.batch, 0);
        gk_batch b;
        uint64_t want[4];
        for (int i = 0; i < 13; i++) /* into the second epoch */
            GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        GK_ASSERT_OK(gk_loader_get_state(ld, &released));
        GK_ASSERT_OK(gk_loader_get_state_delivered(ld, &delivered));
        assert_int_equal(released.epoch, 1);
        assert_int_equal(released.batch, 2); /* the held batch 2 is not released yet */
        assert_int_equal(delivered.epoch, 1);
        assert_int_equal(delivered.batch, 3); /* ... but it was delivered */
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        memcpy(want, b.host, sizeof want);

        /* A loader restored from the delivered position continues with the next batch. */
        gk_loader *again = make_loader(ds, workers);
        GK_ASSERT_OK(gk_loader_restore(again, &delivered));
        GK_ASSERT_OK(gk_loader_next(again, NULL, -1, &b));
        assert_int_equal(b.epoch, 1);
        assert_int_equal(b.index, 3);
        assert_memory_equal(b.host, want, sizeof want);
        gk_loader_destroy(again);

        /* The last batch of an epoch held: the position is the next epoch's start. */
        GK_ASSERT_OK(gk_loader_seek(ld, 2, 9));
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        assert_true(b.last_in_epoch);
        GK_ASSERT_OK(gk_loader_get_state_delivered(ld, &delivered));
        assert_int_equal(delivered.epoch, 3);
        assert_int_equal(delivered.batch, 0);
        GK_ASSERT_OK(gk_loader_get_state(ld, &released));
        assert_int_equal(released.epoch, 2);
        assert_int_equal(released.batch, 9);
        gk_loader_destroy(ld);
    }
    gk_loader_state st;
    GK_ASSERT_ERR(gk_loader_get_state_delivered(NULL, &st), -EINVAL);
    gk_dataset_destroy(ds);
}

/* --- gk_pressure_sample_figures --------------------------------------------------------------- */

static int shrink_calls;
static long shrink_batch;

static void on_shrink(void *user, const gk_pressure_advice *a)
{
    (void)user;
    shrink_calls++;
    shrink_batch = a->suggested_batch;
}

/* The figures path decides exactly as the pool path: both policies see the same random figures
 * (the pool's, read back) for many samples, and their actions and advice agree. */
static void test_pressure_figures_match_pool(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool_config pc;
    gk_pool_config_preset(&pc, "pytorch");
    pc.logger.level = GK_LOG_OFF;
    pc.limit_bytes = 512 * MIB;
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, &pc, &pool));
    gk_pressure_config c;
    gk_pressure_config_default(&c);
    c.hysteresis = 2;
    c.shrink_high = 0.6;
    c.fit_a = 20.0 * MIB;
    c.fit_k = 1.5 * MIB;
    c.gc_high = 0; /* COLLECT changes the pool under the pool-based policy; decide, never act */
    gk_pressure *with_pool, *without;
    GK_ASSERT_OK(gk_pressure_create(pool, &c, &with_pool));
    c.gc_high = 0.5;
    gk_pressure *collecting;
    GK_ASSERT_OK(gk_pressure_create(NULL, &c, &collecting));
    c.gc_high = 0;
    c.on_shrink = on_shrink;
    GK_ASSERT_OK(gk_pressure_create(NULL, &c, &without));
    unsigned seed = 12345;
    void *live[16] = {0};
    int shrinks = 0, trims = 0, collects = 0;
    for (int i = 0; i < 400; i++) {
        /* Random allocations and frees move allocated, reserved and the peak. */
        int k = (int)(rand_r(&seed) % 16);
        if (live[k]) {
            gk_pool_free(pool, live[k]);
            live[k] = NULL;
        } else {
            size_t sz = ((size_t)(rand_r(&seed) % 96) + 1) * MIB;
            if (gk_pool_malloc(pool, sz, NULL, &live[k]) != 0)
                live[k] = NULL;
        }
        if (rand_r(&seed) % 7 == 0)
            gk_pool_reset_peak(pool);
        uint64_t total = 1024 * MIB, device_free = (uint64_t)(rand_r(&seed) % 1024) * MIB;
        unsigned a1 = 0, a2 = 0, a3 = 0;
        gk_pool_stats st;
        GK_ASSERT_OK(gk_pool_get_stats(pool, &st));
        gk_pressure_figures f = {.size = sizeof f,
                                 .device_free = device_free,
                                 .device_total = total,
                                 .reserved = (uint64_t)st.reserved_bytes[GK_POOL_ALL].current,
                                 .allocated = (uint64_t)st.allocated_bytes[GK_POOL_ALL].current,
                                 .peak_allocated = (uint64_t)st.allocated_bytes[GK_POOL_ALL].peak,
                                 .limit = st.limit};
        gk_pressure_advice adv, ref;
        int calls = shrink_calls;
        GK_ASSERT_OK(gk_pressure_sample_figures(without, &f, &a2, &adv));
        assert_int_equal(shrink_calls - calls, (a2 & GK_PRESSURE_SHRINK) ? 1 : 0);
        /* The pool-based policy reads the same pool (a trim it runs changes it afterwards). */
        GK_ASSERT_OK(gk_pressure_advise(with_pool, device_free, &ref));
        GK_ASSERT_OK(gk_pressure_sample_with(with_pool, device_free, total, &a1));
        if (a1 != a2)
            fail_msg("sample %d: the pool path did %u, the figures path %u", i, a1, a2);
        assert_int_equal(adv.suggested_batch, ref.suggested_batch);
        assert_int_equal(adv.checkpointing, ref.checkpointing);
        assert_int_equal(adv.budget, ref.budget);
        assert_int_equal(adv.trim_target, f.allocated);
        assert_int_equal(adv.collect_target, 0);
        if (a2 & GK_PRESSURE_SHRINK)
            assert_int_equal(shrink_batch, adv.suggested_batch);
        /* Without a pool nothing is collected, only reported, with its target. */
        GK_ASSERT_OK(gk_pressure_sample_figures(collecting, &f, &a3, &adv));
        assert_int_equal(adv.collect_target, (uint64_t)(0.5 * (double)adv.budget));
        shrinks += (a2 & GK_PRESSURE_SHRINK) != 0;
        trims += (a2 & GK_PRESSURE_TRIM) != 0;
        collects += (a3 & GK_PRESSURE_COLLECT) != 0;
    }
    /* The random walk reached every action (else the comparison proved little). */
    assert_true(shrinks > 0);
    assert_true(trims > 0);
    assert_true(collects > 0);
    for (int k = 0; k < 16; k++)
        gk_pool_free(pool, live[k]);
    gk_pressure_destroy(with_pool);
    gk_pressure_destroy(without);
    gk_pressure_destroy(collecting);
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

static void test_pressure_figures_errors(void **state)
{
    (void)state;
    gk_pressure *pr;
    GK_ASSERT_OK(gk_pressure_create(NULL, NULL, &pr));
    unsigned a = 7;
    GK_ASSERT_ERR(gk_pressure_sample(pr, &a), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "without a pool");
    assert_int_equal(a, 0);
    GK_ASSERT_ERR(gk_pressure_sample_with(pr, 1, 2, &a), -EINVAL);
    gk_pressure_advice adv;
    GK_ASSERT_ERR(gk_pressure_advise(pr, 1, &adv), -EINVAL);
    gk_pressure_figures f = {.size = sizeof f, .device_free = 10, .device_total = 5};
    GK_ASSERT_ERR(gk_pressure_sample_figures(pr, &f, &a, &adv), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "device_free 10 > device_total 5");
    f = (gk_pressure_figures){
        .size = sizeof f, .device_total = 9, .allocated = 5, .reserved = 4, .peak_allocated = 5};
    GK_ASSERT_ERR(gk_pressure_sample_figures(pr, &f, &a, &adv), -EINVAL);
    f.size = 0;
    GK_ASSERT_ERR(gk_pressure_sample_figures(pr, &f, &a, &adv), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "gk_pressure_figures");
    GK_ASSERT_ERR(gk_pressure_sample_figures(pr, NULL, &a, &adv), -EINVAL);
    /* An older, shorter figures struct: the missing fields count as 0; advice may be omitted. */
    f = (gk_pressure_figures){.size = offsetof(gk_pressure_figures, limit),
                              .device_total = 100,
                              .device_free = 50,
                              .reserved = 40,
                              .allocated = 30,
                              .peak_allocated = 35,
                              .limit = 1};
    GK_ASSERT_OK((gk_pressure_sample_figures)(pr, &f, &a, NULL, 0));
    GK_ASSERT_OK(gk_pressure_sample_figures(pr, &f, &a, &adv));
    assert_int_equal(adv.budget, 90); /* reserved + free: the limit beyond the size was not read */
    gk_pressure_destroy(pr);
}

/* --- the finder's peaks -------------------------------------------------------------------------- */

static int linear_step(void *user, long batch, uint64_t *peak)
{
    (void)user;
    uint64_t need = 10 * MIB + (uint64_t)batch * 3 * MIB;
    if (need > 700 * MIB)
        return GK_EDEVOOM;
    *peak = need;
    return 0;
}

typedef struct pool_step {
    gk_pool *pool;
} pool_step;

static int pool_alloc_step(void *user, long batch, uint64_t *peak)
{
    pool_step *ps = user;
    (void)peak; /* the finder reads the pool */
    void *p;
    int rc = gk_pool_malloc(ps->pool, (size_t)(10 * MIB + (uint64_t)batch * 3 * MIB), NULL, &p);
    if (rc)
        return rc;
    return gk_pool_free(ps->pool, p);
}

static void test_batch_peaks(void **state)
{
    (void)state;
    gk_batch_config bc;
    gk_batch_config_default(&bc);
    bc.budget = 600 * MIB;
    gk_batch_result r;
    GK_ASSERT_OK(gk_batch_find(&bc, linear_step, NULL, &r));
    assert_true(r.budget == 600.0 * MIB);
    for (int i = 0; i < r.trials; i++)
        assert_int_equal(r.tried_peak[i], 10 * MIB + (uint64_t)r.tried[i] * 3 * MIB);

    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=1GiB", &dev));
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    pool_step ps = {pool};
    gk_batch_config_default(&bc);
    bc.pool = pool;
    GK_ASSERT_OK(gk_batch_find(&bc, pool_alloc_step, &ps, &r));
    assert_true(r.budget > 900.0 * MIB);
    for (int i = 0; i < r.trials; i++) {
        uint64_t want = 10 * MIB + (uint64_t)r.tried[i] * 3 * MIB;
        if (r.tried_ok[i]) /* the pool's rounding: at most one 2 MiB step above the request */
            assert_true(r.tried_peak[i] >= want && r.tried_peak[i] < want + 2 * MIB);
        else
            assert_int_equal(r.tried_peak[i], 0);
    }
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

/* --- StatsD activity; another allocator's figures in the registry ------------------------- */

static double series_value(gk_metrics *reg, const char *name, int counter)
{
    const char *labels[] = {"device", "cuda:1", "pool", "torch", NULL};
    gk_metric *s = NULL;
    GK_ASSERT_OK(counter ? gk_metrics_counter(reg, name, NULL, labels, &s)
                         : gk_metrics_gauge(reg, name, NULL, labels, &s));
    return gk_metric_value(s);
}

static void test_statsd_active(void **state)
{
    (void)state;
    gk_test_setenv(GK_METRICS_SOCKET_ENV, NULL);
    gk_statsd *c;
    GK_ASSERT_OK(gk_statsd_open(NULL, &c));
    assert_int_equal(gk_statsd_active(c), 0);
    assert_int_equal(gk_statsd_active(NULL), 0);
    gk_statsd_close(c);
    GK_ASSERT_OK(gk_statsd_open("/nonexistent/gk.sock", &c));
    assert_int_equal(gk_statsd_active(c), 1);
    gk_statsd_close(c);
}

static void test_alloc_figures(void **state)
{
    (void)state;
    gk_metrics *reg;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_alloc_figures f = {.size = sizeof f,
                          .in_use_bytes = 100,
                          .reserved_bytes = 300,
                          .active_bytes = NAN,
                          .ooms = 2,
                          .retries = NAN,
                          .device_mallocs = NAN};
    GK_ASSERT_OK(gk_alloc_figures_publish(reg, "cuda:1", "torch", &f));
    assert_true(series_value(reg, "gpukit_alloc_in_use_bytes", 0) == 100);
    assert_true(series_value(reg, "gpukit_alloc_reserved_bytes", 0) == 300);
    assert_true(series_value(reg, "gpukit_alloc_ooms", 1) == 2);
    /* The unknown figures are not published at all. */
    char *text = NULL;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    assert_null(strstr(text, "gpukit_alloc_active_bytes"));
    assert_null(strstr(text, "gpukit_alloc_retries_total"));
    GK_ASSERT_CONTAINS(text, "gpukit_alloc_ooms_total{device=\"cuda:1\",pool=\"torch\"} 2\n");
    free(text);
    /* Totals: the counter takes the rise; a total that fell (statistics reset) adds nothing. */
    f.ooms = 5;
    GK_ASSERT_OK(gk_alloc_figures_publish(reg, "cuda:1", "torch", &f));
    assert_true(series_value(reg, "gpukit_alloc_ooms", 1) == 5);
    f.ooms = 1;
    GK_ASSERT_OK(gk_alloc_figures_publish(reg, "cuda:1", "torch", &f));
    assert_true(series_value(reg, "gpukit_alloc_ooms", 1) == 5);
    /* A struct from an older header: the fields beyond its size are unknown. */
    f.size = offsetof(gk_alloc_figures, reserved_bytes);
    f.in_use_bytes = 150;
    f.reserved_bytes = 999;
    GK_ASSERT_OK(gk_alloc_figures_publish(reg, "cuda:1", "torch", &f));
    assert_true(series_value(reg, "gpukit_alloc_in_use_bytes", 0) == 150);
    assert_true(series_value(reg, "gpukit_alloc_reserved_bytes", 0) == 300);
    f.size = sizeof f;
    f.reserved_bytes = -1;
    GK_ASSERT_ERR(gk_alloc_figures_publish(reg, "cuda:1", "torch", &f), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "gpukit_alloc_reserved_bytes is -1");
    GK_ASSERT_ERR(gk_alloc_figures_publish(reg, "cuda:1", "torch", NULL), -EINVAL);
    GK_ASSERT_ERR(gk_alloc_figures_publish(reg, NULL, "torch", &f), -EINVAL);
    /* Beside a gpukit pool's series in the same registry: the same families. */
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool_config pc;
    gk_pool_config_default(&pc);
    pc.metrics = reg;
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, &pc, &pool));
    f.reserved_bytes = 400;
    GK_ASSERT_OK(gk_alloc_figures_publish(reg, "cuda:1", "torch", &f));
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    GK_ASSERT_CONTAINS(text, "gpukit_alloc_reserved_bytes{device=\"cuda:1\",pool=\"torch\"} 400");
    GK_ASSERT_CONTAINS(text, "gpukit_alloc_reserved_bytes{device=\"host\",pool=\"default\"} 0");
    free(text);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    gk_metrics_destroy(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_wrap),
        cmocka_unit_test(test_state_delivered),
        cmocka_unit_test(test_pressure_figures_match_pool),
        cmocka_unit_test(test_pressure_figures_errors),
        cmocka_unit_test(test_batch_peaks),
        cmocka_unit_test(test_statsd_active),
        cmocka_unit_test(test_alloc_figures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
