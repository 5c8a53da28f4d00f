/* Unit tests of the device layer on the host backend, and of what device.c does for every
 * backend: spec parsing, argument checks, the allocation registry, counters, stream hooks and
 * cleanup at close. gk-labels: unit */
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

static gk_device *open_host(void)
{
    gk_device *dev = NULL;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    assert_non_null(dev);
    return dev;
}

static void test_open_specs(void **state)
{
    (void)state;
    gk_device *dev = NULL;
    gk_device_props p;

    dev = open_host();
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_HOST);
    assert_string_equal(p.backend_name, "host");
    assert_string_equal(p.spec, "host");
    assert_true(p.total_memory > 0);
    assert_int_equal(p.has_vm, 0);
    assert_int_equal(p.cc_major, 0);
    assert_string_equal(gk_device_auto_reason(dev), "");
    gk_device_close(dev);

    /* Whitespace around the spec is ignored. */
    GK_ASSERT_OK(gk_device_open("  host ", &dev));
    gk_device_close(dev);

    /* Bad specs: -EINVAL, no handle, a message that names the problem and the fix. */
    dev = (gk_device *)1;
    GK_ASSERT_ERR(gk_device_open("tpu:0", &dev), -EINVAL);
    assert_null(dev);
    GK_ASSERT_CONTAINS(gk_last_error(), "unknown backend \"tpu\"");
    GK_ASSERT_CONTAINS(gk_last_error(), "try auto, host, cuda:0");
    GK_ASSERT_ERR(gk_device_open("host:capacity=1G", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "host takes no arguments");
    GK_ASSERT_ERR(gk_device_open(":0", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "expected auto, host, cuda[:N]");
    GK_ASSERT_ERR(gk_device_open("sim:capacity", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "is not key=value");
    GK_ASSERT_ERR(gk_device_open("sim:a=1,,b=2", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "empty item");
    GK_ASSERT_ERR(gk_device_open("sim:a=1,a=2", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "given twice");
    GK_ASSERT_ERR(gk_device_open("cuda:0x", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "bad device index");
    GK_ASSERT_ERR(gk_device_open("auto:1", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "auto takes no arguments");
    GK_ASSERT_ERR(gk_device_open("host", NULL), -EINVAL);

    /* GK_DEVICE is used when the spec is empty. */
    gk_test_setenv("GK_DEVICE", "host");
    GK_ASSERT_OK(gk_device_open(NULL, &dev));
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_string_equal(p.backend_name, "host");
    gk_device_close(dev);
    gk_test_setenv("GK_DEVICE", "bogus");
    GK_ASSERT_ERR(gk_device_open("", &dev), -EINVAL);
    gk_test_setenv("GK_DEVICE", NULL);

    gk_device_close(NULL);
}

static void test_auto_without_driver(void **state)
{
    (void)state;
    gk_device *dev = NULL;
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.cuda_library = "/nonexistent/libcuda.so.1";
    GK_ASSERT_OK(gk_device_open_ex("auto", &cfg, &dev));
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_string_equal(p.backend_name, "host");
    GK_ASSERT_CONTAINS(gk_device_auto_reason(dev), "cuda:0 unavailable");
    GK_ASSERT_CONTAINS(gk_device_auto_reason(dev), "using host");
    gk_device_close(dev);
}

static void test_memory(void **state)
{
    (void)state;
    gk_device *dev = open_host();
    size_t free_b = 0, total = 0;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free_b, &total));
    assert_true(total > 0 && free_b <= total);
    GK_ASSERT_OK(gk_device_mem_info(dev, NULL, NULL));

    void *p = NULL, *q = NULL;
    GK_ASSERT_OK(gk_device_malloc(dev, 1000, &p));
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 256, 0);
    memset(p, 0xab, 1000);
    GK_ASSERT_ERR(gk_device_malloc(dev, 0, &q), -EINVAL);
    assert_null(q);
    GK_ASSERT_CONTAINS(gk_last_error(), "size is 0");
    GK_ASSERT_ERR(gk_device_malloc(dev, 8, NULL), -EINVAL);
    GK_ASSERT_OK(gk_device_free(dev, p));
    /* Double free and foreign pointers are refused, not passed to the backend. */
    GK_ASSERT_ERR(gk_device_free(dev, p), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "not a live device allocation");
    int local;
    GK_ASSERT_ERR(gk_device_free(dev, &local), -EINVAL);
    GK_ASSERT_OK(gk_device_free(dev, NULL));

    void *h = NULL;
    GK_ASSERT_OK(gk_device_host_alloc(dev, 5000, &h));
    assert_non_null(h);
    memset(h, 1, 5000);
    GK_ASSERT_ERR(gk_device_host_alloc(dev, 0, &q), -EINVAL);
    GK_ASSERT_OK(gk_device_host_free(dev, h));
    GK_ASSERT_ERR(gk_device_host_free(dev, h), -EINVAL);
    GK_ASSERT_OK(gk_device_host_free(dev, NULL));

    /* Many live allocations exercise the registry's growth and deletion. */
    void *ptrs[500];
    for (int i = 0; i < 500; i++)
        GK_ASSERT_OK(gk_device_malloc(dev, (size_t)(i + 1) * 16, &ptrs[i]));
    for (int i = 0; i < 500; i += 2)
        GK_ASSERT_OK(gk_device_free(dev, ptrs[i]));
    for (int i = 0; i < 500; i += 2)
        GK_ASSERT_OK(gk_device_malloc(dev, 64, &ptrs[i]));
    for (int i = 0; i < 500; i++)
        GK_ASSERT_OK(gk_device_free(dev, ptrs[i]));

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.malloc_calls, 1 + 500 + 250);
    assert_int_equal(c.free_calls, 1 + 250 + 500);
    assert_int_equal(c.host_alloc_calls, 1);
    assert_int_equal(c.host_free_calls, 1);
    assert_int_equal(c.errors, 5);
    gk_device_close(dev);
}

static void test_streams_events_copies(void **state)
{
    (void)state;
    gk_device *dev = open_host();
    gk_stream *s = NULL;
    gk_event *e = NULL;
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));

    char src[64], back[64];
    void *d = NULL, *d2 = NULL;
    for (int i = 0; i < 64; i++)
        src[i] = (char)i;
    GK_ASSERT_OK(gk_device_malloc(dev, 64, &d));
    GK_ASSERT_OK(gk_device_malloc(dev, 64, &d2));
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, 64, s));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d2, d, 64, s));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, back, d2, 64, NULL));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_event_query(dev, e));
    GK_ASSERT_OK(gk_event_synchronize(dev, e, 1.0));
    GK_ASSERT_OK(gk_stream_wait_event(dev, NULL, e));
    GK_ASSERT_OK(gk_stream_synchronize(dev, s, -1));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 0));
    GK_ASSERT_OK(gk_device_synchronize(dev, -1));
    assert_memory_equal(src, back, 64);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d, src, 0, s));
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, NULL, src, 8, s), -EINVAL);
    GK_ASSERT_ERR(gk_event_record(dev, NULL, s), -EINVAL);
    GK_ASSERT_ERR(gk_stream_wait_event(dev, s, NULL), -EINVAL);

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.copies_htod, 1);
    assert_int_equal(c.copies_dtod, 1);
    assert_int_equal(c.copies_dtoh, 1);
    assert_int_equal(c.copy_bytes, 192);
    assert_int_equal(c.event_records, 1);
    assert_int_equal(c.event_queries, 1);
    assert_int_equal(c.event_syncs, 1);
    assert_int_equal(c.stream_waits, 1);
    assert_int_equal(c.stream_syncs, 3);
    assert_int_equal(c.stream_creates, 1);
    assert_int_equal(c.event_creates, 1);

    GK_ASSERT_OK(gk_event_destroy(dev, e));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    GK_ASSERT_OK(gk_stream_destroy(dev, NULL));
    GK_ASSERT_OK(gk_event_destroy(dev, NULL));
    GK_ASSERT_OK(gk_device_free(dev, d));
    GK_ASSERT_OK(gk_device_free(dev, d2));
    gk_device_close(dev);
}

static void bump(void *user)
{
    int *v = user;
    *v = *v * 10 + 1;
}

static void test_host_fn(void **state)
{
    (void)state;
    gk_device *dev = open_host();
    int v = 0;
    GK_ASSERT_OK(gk_stream_host_fn(dev, NULL, bump, &v));
    GK_ASSERT_OK(gk_stream_host_fn(dev, NULL, bump, &v));
    assert_int_equal(v, 11);
    GK_ASSERT_ERR(gk_stream_host_fn(dev, NULL, NULL, &v), -EINVAL);
    gk_device_close(dev);
}

static int hook_calls;
static gk_stream *hook_stream;

static void on_destroy(void *user, gk_stream *s)
{
    (void)user;
    hook_calls++;
    hook_stream = s;
}

static void test_stream_hooks(void **state)
{
    (void)state;
    gk_device *dev = open_host();
    gk_stream *s = NULL;
    hook_calls = 0;
    GK_ASSERT_OK(gk_device_add_stream_hook(dev, on_destroy, &hook_calls));
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    assert_int_equal(hook_calls, 1);
    assert_ptr_equal(hook_stream, s);
    GK_ASSERT_OK(gk_device_remove_stream_hook(dev, on_destroy, &hook_calls));
    GK_ASSERT_ERR(gk_device_remove_stream_hook(dev, on_destroy, &hook_calls), -ENOENT);
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_stream_destroy(dev, s));
    assert_int_equal(hook_calls, 1);
    for (int i = 0; i < 16; i++)
        GK_ASSERT_OK(gk_device_add_stream_hook(dev, on_destroy, (void *)(intptr_t)(i + 1)));
    GK_ASSERT_ERR(gk_device_add_stream_hook(dev, on_destroy, NULL), -ENOSPC);
    GK_ASSERT_ERR(gk_device_add_stream_hook(dev, NULL, NULL), -EINVAL);
    gk_device_close(dev);
}

static void test_vm_unavailable(void **state)
{
    (void)state;
    gk_device *dev = open_host();
    void *base = NULL;
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, 2 << 20, &base), GK_EUNAVAIL);
    GK_ASSERT_CONTAINS(gk_last_error(), "no virtual-memory API");
    int x;
    GK_ASSERT_ERR(gk_device_vm_map(dev, &x, 2 << 20), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, &x, 2 << 20), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_release(dev, &x, 2 << 20), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, 0, &base), -EINVAL);
    GK_ASSERT_ERR(gk_device_sim_set_faults(dev, ""), GK_EUNAVAIL);
    assert_int_equal(gk_device_sim_clock_ns(dev), 0);
    assert_int_equal(gk_device_sim_used(dev), 0);
    gk_device_close(dev);
}

static void test_cross_device_handles(void **state)
{
    (void)state;
    gk_device *a = open_host(), *b = open_host();
    gk_stream *s = NULL;
    gk_event *e = NULL;
    GK_ASSERT_OK(gk_stream_create(a, &s));
    GK_ASSERT_OK(gk_event_create(a, &e));
    GK_ASSERT_ERR(gk_stream_synchronize(b, s, -1), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "belongs to another device");
    GK_ASSERT_ERR(gk_event_record(b, e, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_event_query(b, e), -EINVAL);
    GK_ASSERT_ERR(gk_stream_wait_event(b, NULL, e), -EINVAL);
    GK_ASSERT_ERR(gk_stream_destroy(b, s), -EINVAL);
    GK_ASSERT_ERR(gk_event_destroy(b, e), -EINVAL);
    gk_device_close(b);
    gk_device_close(a); /* frees s and e */
}

static void test_close_cleans_up(void **state)
{
    (void)state;
    /* Streams, events and memory left open are released by close; ASan and valgrind check. */
    gk_device *dev = NULL;
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.logger.level = GK_LOG_OFF;
    GK_ASSERT_OK(gk_device_open_ex("host", &cfg, &dev));
    gk_stream *s[3];
    gk_event *e[3];
    void *p[3], *h[3];
    for (int i = 0; i < 3; i++) {
        GK_ASSERT_OK(gk_stream_create(dev, &s[i]));
        GK_ASSERT_OK(gk_event_create(dev, &e[i]));
        GK_ASSERT_OK(gk_device_malloc(dev, 100, &p[i]));
        GK_ASSERT_OK(gk_device_host_alloc(dev, 100, &h[i]));
    }
    GK_ASSERT_OK(gk_stream_destroy(dev, s[1]));
    GK_ASSERT_OK(gk_event_destroy(dev, e[0]));
    gk_device_close(dev);
}

static void test_config_default(void **state)
{
    (void)state;
    gk_device_config cfg;
    gk_test_setenv("GK_SYNC_TIMEOUT", "250ms");
    gk_test_setenv("GK_CUDA_LIBRARY", "/nowhere/libcuda.so.1");
    gk_device_config_default(&cfg);
    assert_int_equal(cfg.size, sizeof cfg);
    assert_true(cfg.sync_timeout == 60.0); /* the defaults read no variable */
    assert_null(cfg.cuda_library);
    GK_ASSERT_OK(gk_device_config_from_env(&cfg));
    assert_true(cfg.sync_timeout == 0.25);
    assert_string_equal(cfg.cuda_library, "/nowhere/libcuda.so.1");
    gk_test_setenv("GK_SYNC_TIMEOUT", "soon");
    gk_device_config_default(&cfg);
    GK_ASSERT_ERR(gk_device_config_from_env(&cfg), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "GK_SYNC_TIMEOUT: \"soon\" is not a duration");
    assert_true(cfg.sync_timeout == 60.0);
    /* gk_device_open is the environment's form: it refuses the bad variable ... */
    gk_device *dev;
    GK_ASSERT_ERR(gk_device_open("host", &dev), -EINVAL);
    /* ... and open_ex with an explicit config does not read it. */
    gk_device_config_default(&cfg);
    GK_ASSERT_OK(gk_device_open_ex("host", &cfg, &dev));
    gk_device_close(dev);
    gk_test_setenv("GK_SYNC_TIMEOUT", NULL);
    gk_test_setenv("GK_CUDA_LIBRARY", NULL);
    (gk_device_config_default)(NULL, 0);
    /* A config that did not come from _default() is refused. */
    gk_device_config bad = {0};
    GK_ASSERT_ERR(gk_device_open_ex("host", &bad, &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "gk_device_config: size is 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_specs),      cmocka_unit_test(test_auto_without_driver),
        cmocka_unit_test(test_memory),          cmocka_unit_test(test_streams_events_copies),
        cmocka_unit_test(test_host_fn),         cmocka_unit_test(test_stream_hooks),
        cmocka_unit_test(test_vm_unavailable),  cmocka_unit_test(test_cross_device_handles),
        cmocka_unit_test(test_close_cleans_up), cmocka_unit_test(test_config_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
