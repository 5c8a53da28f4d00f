/* Allocation traces: CSV round trip, the pool's own CSV logger, malformed lines reported with
 * their line numbers, L_peak by hand, replay counts (leaks, unknown frees), the synthetic
 * transformer trace, and F_cap on the real CNN training trace (tests/data). */
/* gk-labels: unit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

static gk_trace *parse(const char *text, int want, const char *want_err)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(f);
    gk_trace *t = NULL;
    char err[256] = "";
    int rc = gk_trace_parse(f, "t.csv", &t, err, sizeof err);
    fclose(f);
    GK_ASSERT_ERR(rc, want);
    if (want_err)
        GK_ASSERT_CONTAINS(err, want_err);
    return t;
}

static const char small_trace[] = "Thread,Time,Action,Pointer,Size,Stream\r\n"
                                  "7,0.5,allocate,0x1000,100,0x0\n"
                                  "7,0.6,allocate,0x2000,300,0x0\n"
                                  "\n"
                                  "7,0.7,free,0x1000,100,0x0\n"
                                  "7,00:00:01.25,allocate,0x3000,50,0x0\n"
                                  "7,0.9,allocate failure,0x0,999,0x0\n"
                                  "7,1.0,free,0x9999,8,0x0\n";

static void test_parse_and_round_trip(void **state)
{
    (void)state;
    gk_trace *t = parse(small_trace, 0, NULL);
    assert_int_equal(t->count, 6);
    assert_int_equal(t->events[1].ptr, 0x2000);
    assert_int_equal(t->events[1].size, 300);
    assert_int_equal(t->events[3].action, GK_TRACE_ALLOCATE);
    assert_true(t->events[3].time > 1.24 && t->events[3].time < 1.26);
    assert_int_equal(t->events[4].action, GK_TRACE_ALLOCATE_FAILURE);
    /* live: 100, 400, 300, 350 -> peak 400 */
    assert_int_equal(gk_trace_live_peak(t), 400);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_trace_write(t, m));
    fclose(m);
    gk_trace *u = parse(buf, 0, NULL);
    assert_int_equal(u->count, t->count);
    for (size_t i = 0; i < t->count; i++) {
        assert_int_equal(u->events[i].action, t->events[i].action);
        assert_int_equal(u->events[i].ptr, t->events[i].ptr);
        assert_int_equal(u->events[i].size, t->events[i].size);
        assert_int_equal(u->events[i].stream, t->events[i].stream);
    }
    free(buf);
    gk_trace_free(u);
    gk_trace_free(t);
}

static void test_malformed_lines(void **state)
{
    (void)state;
    assert_null(parse("Thread,Time,Action\n", GK_ESYNTAX, "t.csv:1: not an RMM trace"));
    assert_null(parse("", GK_ESYNTAX, "empty trace"));
    assert_null(parse("Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x10,5,0x0\n"
                      "1,0.2,alloc,0x10,5,0x0\n",
                      GK_ESYNTAX, "t.csv:3: unknown action"));
    assert_null(parse("Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x10,-5,0x0\n",
                      GK_ESYNTAX, "t.csv:2: bad size"));
    assert_null(parse("Thread,Time,Action,Pointer,Size,Stream\n\n1,0.1,allocate,zz,5,0x0\n",
                      GK_ESYNTAX, "t.csv:3: bad pointer"));
    assert_null(parse("Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x10\n", GK_ESYNTAX,
                      "t.csv:2: too few fields"));
    assert_null(parse("Thread,Time,Action,Pointer,Size,Stream\n1,0.1,free,0x10,5,0x0,9\n",
                      GK_ESYNTAX, "t.csv:2: too many fields"));
    assert_null(parse("Thread,Time,Action,Pointer,Size,Stream\n1,x,free,0x10,5,0x0\n", GK_ESYNTAX,
                      "t.csv:2: bad time"));
    gk_trace *t = NULL;
    char err[256];
    GK_ASSERT_ERR(gk_trace_read("/nonexistent/trace.csv", &t, err, sizeof err), -ENOENT);
    GK_ASSERT_CONTAINS(err, "/nonexistent/trace.csv");
}

static void test_replay_counts(void **state)
{
    (void)state;
    gk_trace *t = parse(small_trace, 0, NULL);
    gk_device *dev;
    gk_pool *pool;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool_config c;
    gk_pool_config_preset(&c, "pytorch");
    c.logger.level = GK_LOG_OFF;
    GK_ASSERT_OK(gk_pool_create(dev, &c, &pool));
    gk_replay_result r;
    GK_ASSERT_OK(gk_trace_replay(t, pool, 0, 1, &r));
    assert_int_equal(r.allocs, 3);
    assert_int_equal(r.frees, 1);
    assert_int_equal(r.unknown_frees, 1);
    assert_int_equal(r.leaks, 2);
    assert_int_equal(r.leak_bytes, 350);
    assert_int_equal(r.live_peak, 400);
    assert_true(r.alloc_ns_p50 > 0);
    /* The leaks were freed at the end. */
    gk_pool_stats s;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &s));
    assert_int_equal(s.requested_bytes[GK_POOL_ALL].peak, 400);
    assert_int_equal(s.allocated_bytes[GK_POOL_ALL].peak, 1024);
    assert_int_equal(s.allocation[GK_POOL_ALL].current, 0);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    gk_trace_free(t);
}

static void test_logger_round_trip(void **state)
{
    (void)state;
    gk_device *dev;
    gk_pool *pool;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_pool_set_trace_log(pool, m));
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(pool, 1000, NULL, &a));
    GK_ASSERT_OK(gk_pool_malloc(pool, 5 << 20, NULL, &b));
    GK_ASSERT_OK(gk_pool_free(pool, a));
    GK_ASSERT_OK(gk_pool_set_limit(pool, 1 << 20));
    void *c;
    GK_ASSERT_ERR(gk_pool_malloc(pool, 64 << 20, NULL, &c), GK_EDEVOOM);
    GK_ASSERT_OK(gk_pool_free(pool, b));
    GK_ASSERT_OK(gk_pool_set_trace_log(pool, NULL));
    fclose(m);
    gk_trace *t = parse(buf, 0, NULL);
    assert_int_equal(t->count, 5);
    assert_int_equal(t->events[0].action, GK_TRACE_ALLOCATE);
    assert_int_equal(t->events[0].ptr, (uintptr_t)a);
    assert_int_equal(t->events[0].size, 1000);
    assert_int_equal(t->events[2].action, GK_TRACE_FREE);
    assert_int_equal(t->events[3].action, GK_TRACE_ALLOCATE_FAILURE);
    assert_int_equal(t->events[3].size, 64 << 20);
    assert_int_equal(gk_trace_live_peak(t), 1000 + (5 << 20));
    free(buf);
    gk_trace_free(t);
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

static void test_synth(void **state)
{
    (void)state;
    gk_synth_config c;
    gk_synth_config_default(&c);
    c.layers = 2;
    c.hidden = 64;
    c.heads = 4;
    c.seq = 128;
    c.vocab = 1000;
    c.steps = 3;
    gk_trace *t = NULL;
    GK_ASSERT_OK(gk_trace_synth_transformer(&c, &t));
    size_t allocs = 0, frees = 0;
    for (size_t i = 0; i < t->count; i++)
        *(t->events[i].action == GK_TRACE_ALLOCATE ? &allocs : &frees) += 1;
    assert_int_equal(allocs, frees); /* everything is freed at the end */
    assert_true(gk_trace_live_peak(t) > 0);
    gk_trace_free(t);
    c.heads = 5;
    GK_ASSERT_ERR(gk_trace_synth_transformer(&c, &t), -EINVAL);
}

static gk_fcap_result fcap(const gk_trace *t, const char *preset, const char *set)
{
    gk_pool_config c;
    GK_ASSERT_OK(gk_pool_config_preset(&c, preset));
    c.logger.level = GK_LOG_OFF;
    char err[256] = "";
    if (set && gk_pool_config_parse(&c, set, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    gk_fcap_result r;
    GK_ASSERT_OK(gk_trace_fcap(t, "sim", &c, &r));
    assert_int_equal(r.l_peak, 258505369);
    assert_int_equal(r.c_min % (2 << 20), 0);
    return r;
}

/* The real CNN trace (tests/data/README.md): PyTorch's rules need 1.34 x L_peak on a device with
 * a first-fit address space; expandable segments need about 1.08 (20 MiB pages) and less with
 * 2 MiB pages. */
static void test_fcap_cnn_trace(void **state)
{
    (void)state;
    gk_trace *t = NULL;
    char err[256] = "";
    GK_ASSERT_OK(
        gk_trace_read(GK_TEST_SOURCE_DIR "/tests/data/cnn_train_trace.csv", &t, err, sizeof err));
    assert_int_equal(gk_trace_live_peak(t), 258505369);
    gk_fcap_result py = fcap(t, "pytorch", NULL);
    assert_true(py.f_cap > 1.34 * 0.97 && py.f_cap < 1.34 * 1.03);
    double ratio = (double)py.peak_reserved / (double)py.peak_allocated;
    assert_true(ratio > 1.334 * 0.97 && ratio < 1.334 * 1.03);
    gk_fcap_result ex20 = fcap(t, "default", "page_size=20MiB");
    assert_true(ex20.f_cap > 1.08 * 0.97 && ex20.f_cap < 1.08 * 1.03);
    gk_fcap_result def = fcap(t, "default", NULL);
    assert_true(def.f_cap < ex20.f_cap);
    assert_true(def.f_cap < py.f_cap);
    assert_true(def.f_cap >= 1.0 && def.f_cap < 1.05);
    /* A non-sim device: the pool limit plays the capacity (a byte budget, no address space). */
    gk_pool_config c;
    gk_pool_config_preset(&c, "pytorch");
    c.logger.level = GK_LOG_OFF;
    gk_fcap_result host;
    GK_ASSERT_OK(gk_trace_fcap(t, "host", &c, &host));
    assert_true(host.f_cap >= 1.0 && host.f_cap <= py.f_cap);
    gk_trace_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_round_trip),
        cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_replay_counts),
        cmocka_unit_test(test_logger_round_trip),
        cmocka_unit_test(test_synth),
        cmocka_unit_test(test_fcap_cnn_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
