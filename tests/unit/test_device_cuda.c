/* The cuda backend against the fake driver (tests/support/fake_cuda.c): every public device
 * function, an error from every driver call the backend makes, missing libraries and symbols,
 * device selection, auto, virtual memory present and absent, timeouts, per-thread contexts.
 * gk-labels: unit threads */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda_api.h"
#include "fake_cuda.h"
#include "gk_test.h"

#define GRAN ((size_t)2 << 20)
#define MiB  ((size_t)1 << 20)

/* The fake's control API and a few of its driver functions, found with dlsym. */
typedef struct fake_api {
    void *lib;
#define FK_FIELD(ret, name, params) ret(*name) params;
    FAKECUDA_CONTROL_FUNCS(FK_FIELD)
#undef FK_FIELD
    CUresult (*cuInit)(unsigned int);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
    CUresult (*cuCtxPushCurrent_v2)(CUcontext);
    CUresult (*cuCtxPopCurrent_v2)(CUcontext *);
    CUresult (*cuCtxGetCurrent)(CUcontext *);
} fake_api;

static fake_api fk, fk_novmm;

static void load_fake(fake_api *api, const char *path)
{
    api->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!api->lib)
        fail_msg("cannot load the fake driver %s: %s", path, dlerror());
    void *p;
#define FK_LOAD(ret, name, params)                                                                 \
    p = dlsym(api->lib, #name);                                                                    \
    assert_non_null(p);                                                                            \
    memcpy(&api->name, &p, sizeof p);
    FAKECUDA_CONTROL_FUNCS(FK_LOAD)
    FK_LOAD(x, cuInit, x)
    FK_LOAD(x, cuDevicePrimaryCtxRetain, x)
    FK_LOAD(x, cuDevicePrimaryCtxRelease_v2, x)
    FK_LOAD(x, cuCtxPushCurrent_v2, x)
    FK_LOAD(x, cuCtxPopCurrent_v2, x)
    FK_LOAD(x, cuCtxGetCurrent, x)
#undef FK_LOAD
}

static int group_setup(void **state)
{
    (void)state;
    gk_test_setenv("GK_CUDA_LIBRARY", gk_test_fake_cuda());
    gk_test_setenv("GK_DEVICE", NULL);
    gk_test_setenv("GK_SYNC_TIMEOUT", NULL);
    load_fake(&fk, gk_test_fake_cuda());
    load_fake(&fk_novmm, GK_TEST_FAKE_CUDA_NOVMM);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fk.fakecuda_reset();
    fk_novmm.fakecuda_reset();
    dlclose(fk.lib);
    dlclose(fk_novmm.lib);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    fk.fakecuda_reset();
    fk_novmm.fakecuda_reset();
    return 0;
}

/* Every test closes what it opened: the fake must hold nothing afterwards. */
static int teardown(void **state)
{
    (void)state;
    long live = fk.fakecuda_live_objects();
    fk.fakecuda_reset();
    if (live != 0)
        fail_msg("%ld driver objects still alive after the test", live);
    return 0;
}

static gk_device *open_cuda(const char *spec)
{
    gk_device *dev = NULL;
    int rc = gk_device_open(spec, &dev);
    if (rc)
        fail_msg("gk_device_open(%s): %s: %s", spec ? spec : "(default)", gk_err_name(rc),
                 gk_last_error());
    return dev;
}

/* --- open, props, selection -------------------------------------------------------------- */

static void test_open_props(void **state)
{
    (void)state;
    gk_device *dev = open_cuda("cuda");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_CUDA);
    assert_string_equal(p.backend_name, "cuda");
    assert_string_equal(p.spec, "cuda:0");
    assert_string_equal(p.name, "gpukit fake GPU 0");
    assert_int_equal(p.index, 0);
    assert_int_equal(p.total_memory, (uint64_t)1 << 30);
    assert_int_equal(p.cc_major, 9);
    assert_int_equal(p.cc_minor, 0);
    assert_int_equal(p.multiprocessors, 132);
    assert_int_equal(p.driver_version, 12040);
    assert_int_equal(p.alloc_alignment, 256);
    assert_int_equal(p.has_vm, 1);
    assert_int_equal(p.vm_granularity, GRAN);
    assert_int_equal(p.pinned_is_real, 1);
    assert_string_equal(gk_device_auto_reason(dev), "");
    assert_string_equal(gk_last_error(), "");
    assert_int_equal(fk.fakecuda_calls("cuDevicePrimaryCtxRetain"), 1);
    gk_device_close(dev);
    assert_int_equal(fk.fakecuda_calls("cuDevicePrimaryCtxRelease_v2"), 1);
    gk_device_close(NULL);
}

static void test_select_device(void **state)
{
    (void)state;
    gk_device *dev = NULL;
    fk.fakecuda_set_device_count(2);
    dev = open_cuda("cuda:1");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_string_equal(p.spec, "cuda:1");
    assert_string_equal(p.name, "gpukit fake GPU 1");
    assert_int_equal(p.index, 1);
    gk_device_close(dev);

    GK_ASSERT_ERR(gk_device_open("cuda:5", &dev), GK_ENOGPU);
    assert_null(dev);
    GK_ASSERT_CONTAINS(gk_last_error(), "cuda:5");
    GK_ASSERT_CONTAINS(gk_last_error(), "cuda:0 to cuda:1");

    GK_ASSERT_ERR(gk_device_open("cuda:0,capacity=1GiB", &dev), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "cuda takes no keys");
}

static void test_missing_library(void **state)
{
    (void)state;
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.cuda_library = "/nonexistent/gpukit/libcuda.so.1";
    gk_device *dev = NULL;
    GK_ASSERT_ERR(gk_device_open_ex("cuda:0", &cfg, &dev), GK_ENOGPU);
    assert_null(dev);
    GK_ASSERT_CONTAINS(gk_last_error(), "/nonexistent/gpukit/libcuda.so.1 not found");
    GK_ASSERT_CONTAINS(gk_last_error(), "install the NVIDIA driver");
    GK_ASSERT_CONTAINS(gk_last_error(), "GK_CUDA_LIBRARY");

    /* The same through the environment. */
    gk_test_setenv("GK_CUDA_LIBRARY", "/nonexistent/other/libcuda.so.1");
    GK_ASSERT_ERR(gk_device_open("cuda", &dev), GK_ENOGPU);
    GK_ASSERT_CONTAINS(gk_last_error(), "/nonexistent/other/libcuda.so.1");
    gk_test_setenv("GK_CUDA_LIBRARY", gk_test_fake_cuda());
}

static void test_missing_symbol(void **state)
{
    (void)state;
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.cuda_library = "libm.so.6"; /* loads, but is no driver */
    gk_device *dev = NULL;
    GK_ASSERT_ERR(gk_device_open_ex("cuda:0", &cfg, &dev), GK_ENOGPU);
    GK_ASSERT_CONTAINS(gk_last_error(), "libm.so.6 has no cuInit");
    GK_ASSERT_CONTAINS(gk_last_error(), "GK_CUDA_LIBRARY");
}

static void test_no_devices(void **state)
{
    (void)state;
    gk_device *dev = NULL;
    fk.fakecuda_set_device_count(0);
    GK_ASSERT_ERR(gk_device_open("cuda:0", &dev), GK_ENOGPU);
    GK_ASSERT_CONTAINS(gk_last_error(), "cuInit(0)");
    GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected");
    fk.fakecuda_set_device_count(1);

    fk.fakecuda_fail("cuInit", 1, CUDA_ERROR_NOT_INITIALIZED);
    GK_ASSERT_ERR(gk_device_open("cuda:0", &dev), GK_ENOGPU);
    GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_NOT_INITIALIZED");

    fk.fakecuda_fail("cuDeviceGetCount", 1, CUDA_ERROR_NO_DEVICE);
    GK_ASSERT_ERR(gk_device_open("cuda:0", &dev), GK_ENOGPU);
    GK_ASSERT_CONTAINS(gk_last_error(), "cuDeviceGetCount: CUDA_ERROR_NO_DEVICE");
    assert_int_equal(fk.fakecuda_live_objects(), 0);
}

static void test_auto(void **state)
{
    (void)state;
    gk_device *dev = open_cuda("auto");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_CUDA);
    assert_string_equal(p.spec, "cuda:0");
    assert_string_equal(gk_device_auto_reason(dev), "");
    gk_device_close(dev);

    /* GK_DEVICE unset and spec NULL also mean auto. */
    dev = open_cuda(NULL);
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_CUDA);
    gk_device_close(dev);

    fk.fakecuda_set_device_count(0);
    dev = open_cuda("auto");
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_HOST);
    GK_ASSERT_CONTAINS(gk_device_auto_reason(dev), "cuda:0 unavailable");
    GK_ASSERT_CONTAINS(gk_device_auto_reason(dev), "CUDA_ERROR_NO_DEVICE");
    GK_ASSERT_CONTAINS(gk_device_auto_reason(dev), "using host");
    gk_device_close(dev);

    gk_test_setenv("GK_CUDA_LIBRARY", "/nonexistent/libcuda.so.1");
    dev = open_cuda("auto");
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.backend, GK_BACKEND_HOST);
    GK_ASSERT_CONTAINS(gk_device_auto_reason(dev), "/nonexistent/libcuda.so.1 not found");
    gk_device_close(dev);
    gk_test_setenv("GK_CUDA_LIBRARY", gk_test_fake_cuda());
}

/* --- memory ------------------------------------------------------------------------------ */

static void test_memory(void **state)
{
    (void)state;
    gk_device *dev = open_cuda("cuda:0");
    size_t free0, total;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free0, &total));
    assert_int_equal(total, (size_t)1 << 30);
    assert_int_equal(free0, total);

    void *d = NULL;
    GK_ASSERT_OK(gk_device_malloc(dev, 64 * MiB, &d));
    assert_non_null(d);
    assert_int_equal((uintptr_t)d % 256, 0);
    size_t free1;
    GK_ASSERT_OK(gk_device_mem_info(dev, &free1, NULL));
    assert_int_equal(free0 - free1, 64 * MiB);

    void *big = (void *)1;
    GK_ASSERT_ERR(gk_device_malloc(dev, (size_t)1 << 30, &big), GK_EDEVOOM);
    assert_null(big);
    assert_string_equal(gk_last_error(),
                        "cuMemAlloc_v2(1073741824): CUDA_ERROR_OUT_OF_MEMORY: out of memory");
    GK_ASSERT_ERR(gk_device_malloc(dev, 0, &big), -EINVAL);

    GK_ASSERT_OK(gk_device_free(dev, d));
    GK_ASSERT_OK(gk_device_free(dev, NULL));
    GK_ASSERT_ERR(gk_device_free(dev, d), -EINVAL);

    void *h = NULL;
    GK_ASSERT_OK(gk_device_host_alloc(dev, 3 * MiB, &h));
    memset(h, 0x5a, 3 * MiB);
    GK_ASSERT_OK(gk_device_host_free(dev, h));
    GK_ASSERT_ERR(gk_device_host_free(dev, h), -EINVAL);
    assert_int_equal(fk.fakecuda_calls("cuMemHostAlloc"), 1);
    assert_int_equal(fk.fakecuda_calls("cuMemFreeHost"), 1);

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.malloc_calls, 2); /* the 0-byte request never reached the backend */
    assert_int_equal(c.free_calls, 1);
    assert_int_equal(c.malloc_bytes, 64 * MiB);
    assert_int_equal(c.host_alloc_calls, 1);
    assert_int_equal(c.host_free_calls, 1);
    assert_true(c.errors >= 3);
    gk_device_close(dev);
}

/* --- streams, events, copies ------------------------------------------------------------- */

static int order[8], norder;

static void record_order(void *user)
{
    order[norder++] = (int)(intptr_t)user;
}

static int hook_calls;

static void count_hook(void *user, gk_stream *s)
{
    (void)s;
    *(int *)user += 1;
}

static void test_streams_copies(void **state)
{
    (void)state;
    gk_device *dev = open_cuda("cuda:0");
    GK_ASSERT_OK(gk_device_add_stream_hook(dev, count_hook, &hook_calls));
    hook_calls = 0;
    gk_stream *s1 = NULL, *s2 = NULL;
    GK_ASSERT_OK(gk_stream_create(dev, &s1));
    GK_ASSERT_OK(gk_stream_create(dev, &s2));
    gk_event *e1 = NULL, *e2 = NULL;
    GK_ASSERT_OK(gk_event_create(dev, &e1));
    GK_ASSERT_OK(gk_event_create(dev, &e2));
    GK_ASSERT_OK(gk_event_query(dev, e1)); /* never recorded: done */

    size_t n = 4 * MiB;
    unsigned char *src = NULL, *dst = NULL;
    void *d1 = NULL, *d2 = NULL;
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&src));
    GK_ASSERT_OK(gk_device_host_alloc(dev, n, (void **)&dst));
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d1));
    GK_ASSERT_OK(gk_device_malloc(dev, n, &d2));
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    memset(dst, 0, n);

    /* Stall the fake so ordering across streams is visible. */
    fk.fakecuda_stall(1);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d1, src, n, s1));
    GK_ASSERT_OK(gk_event_record(dev, e1, s1));
    GK_ASSERT_OK(gk_stream_wait_event(dev, s2, e1));
    GK_ASSERT_OK(gk_memcpy_dtod_async(dev, d2, d1, n, s2));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, d2, n, s2));
    norder = 0;
    GK_ASSERT_OK(gk_stream_host_fn(dev, s2, record_order, (void *)1));
    GK_ASSERT_OK(gk_stream_host_fn(dev, s2, record_order, (void *)2));
    GK_ASSERT_OK(gk_event_record(dev, e2, s2));
    GK_ASSERT_ERR(gk_event_query(dev, e1), GK_ENOTREADY);
    GK_ASSERT_ERR(gk_event_query(dev, e2), GK_ENOTREADY);
    assert_int_equal(norder, 0);
    fk.fakecuda_stall(0);
    GK_ASSERT_OK(gk_event_synchronize(dev, e2, 1.0));
    assert_int_equal(norder, 2);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_memory_equal(src, dst, n);

    /* The default stream (NULL) works too. */
    memset(dst, 0, n);
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, d1, n, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 1.0));
    GK_ASSERT_OK(gk_stream_synchronize(dev, s1, -1));
    GK_ASSERT_OK(gk_device_synchronize(dev, 1.0));
    assert_memory_equal(src, dst, n);
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, d1, src, 0, s1)); /* nothing to copy */

    /* A copy outside any allocation is refused by the driver. */
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, (char *)d1 + n - 16, src, 32, s1), GK_EDRIVER);
    GK_ASSERT_CONTAINS(gk_last_error(), "cuMemcpyHtoDAsync_v2(");
    GK_ASSERT_CONTAINS(gk_last_error(), "CUDA_ERROR_INVALID_VALUE: invalid argument");

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.copies_htod, 2);
    assert_int_equal(c.copies_dtoh, 2);
    assert_int_equal(c.copies_dtod, 1);
    assert_int_equal(c.copy_bytes, 4 * n + 32);
    assert_int_equal(c.stream_waits, 1);
    assert_int_equal(c.host_fns, 2);
    assert_int_equal(c.event_records, 2);

    GK_ASSERT_OK(gk_device_free(dev, d1));
    GK_ASSERT_OK(gk_device_free(dev, d2));
    GK_ASSERT_OK(gk_device_host_free(dev, src));
    GK_ASSERT_OK(gk_device_host_free(dev, dst));
    GK_ASSERT_OK(gk_event_destroy(dev, e1));
    GK_ASSERT_OK(gk_event_destroy(dev, e2));
    GK_ASSERT_OK(gk_stream_destroy(dev, s1));
    GK_ASSERT_OK(gk_stream_destroy(dev, s2));
    GK_ASSERT_OK(gk_stream_destroy(dev, NULL));
    assert_int_equal(hook_calls, 2);
    GK_ASSERT_OK(gk_device_remove_stream_hook(dev, count_hook, &hook_calls));
    GK_ASSERT_ERR(gk_device_remove_stream_hook(dev, count_hook, &hook_calls), -ENOENT);
    gk_device_close(dev);
}

static void test_timeouts(void **state)
{
    (void)state;
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.sync_timeout = 0.02;
    gk_device *dev = NULL;
    GK_ASSERT_OK(gk_device_open_ex("cuda:0", &cfg, &dev));
    gk_stream *s = NULL;
    gk_event *e = NULL;
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));

    fk.fakecuda_stall(1);
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_ERR(gk_event_synchronize(dev, e, 0.05), -ETIMEDOUT);
    GK_ASSERT_CONTAINS(gk_last_error(), "event not complete after 0.050 s");
    GK_ASSERT_ERR(gk_event_synchronize(dev, e, -1), -ETIMEDOUT); /* the device's 0.02 s */
    GK_ASSERT_CONTAINS(gk_last_error(), "after 0.020 s");
    GK_ASSERT_ERR(gk_stream_synchronize(dev, s, 0.01), -ETIMEDOUT);
    GK_ASSERT_CONTAINS(gk_last_error(), "stream still busy");
    GK_ASSERT_ERR(gk_device_synchronize(dev, 0), -ETIMEDOUT);
    GK_ASSERT_CONTAINS(gk_last_error(), "streams still busy");
    GK_ASSERT_ERR(gk_event_query(dev, e), GK_ENOTREADY);
    /* Destroying a busy stream waits the sync timeout, then still frees it. */
    GK_ASSERT_ERR(gk_stream_destroy(dev, s), -ETIMEDOUT);
    fk.fakecuda_stall(0);
    GK_ASSERT_OK(gk_event_synchronize(dev, e, 0.05));
    GK_ASSERT_OK(gk_device_synchronize(dev, 1.0));
    GK_ASSERT_OK(gk_event_destroy(dev, e));
    gk_device_close(dev);
}

/* --- virtual memory ---------------------------------------------------------------------- */

static void test_vm(void **state)
{
    (void)state;
    fk.fakecuda_set_total_memory(16 * MiB); /* 8 granules */
    gk_device *dev = open_cuda("cuda:0");
    void *base = NULL;
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 16 * GRAN, &base));
    assert_non_null(base);
    assert_int_equal((uintptr_t)base % GRAN, 0);
    char *b = base;
    GK_ASSERT_OK(gk_device_vm_map(dev, b, GRAN));
    GK_ASSERT_OK(gk_device_vm_map(dev, b + GRAN, GRAN));
    GK_ASSERT_OK(gk_device_vm_map(dev, b + 2 * GRAN, 2 * GRAN));
    assert_int_equal(fk.fakecuda_used_memory(), 4 * GRAN);
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), 4);    /* one allocation per granule */
    assert_int_equal(fk.fakecuda_calls("cuMemSetAccess"), 3); /* one per call: per run */

    /* Copy across the four granules and back. */
    size_t n = 4 * GRAN;
    unsigned char *src = malloc(n), *dst = calloc(1, n);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)(i ^ (i >> 9));
    GK_ASSERT_OK(gk_memcpy_htod_async(dev, b, src, n, NULL));
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, b, n, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 1.0));
    assert_memory_equal(src, dst, n);

    /* Bad arguments change nothing. */
    GK_ASSERT_ERR(gk_device_vm_map(dev, b + 100, GRAN), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "multiples of the granularity 2097152");
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, b + 3 * GRAN, 2 * GRAN), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "part of the range is not mapped");
    GK_ASSERT_ERR(gk_device_vm_map(dev, b + 3 * GRAN, 2 * GRAN), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "part of the range is already mapped");
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), 4);

    /* More than is free fails at once: 4 of 8 granules are in use. */
    GK_ASSERT_ERR(gk_device_vm_map(dev, b + 4 * GRAN, 6 * GRAN), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(), "out of memory: 8388608 bytes free on cuda:0");
    assert_int_equal(fk.fakecuda_calls("cuMemCreate"), 4);

    /* A failure half way leaves the range as it was, with the driver's reason. */
    fk.fakecuda_fail("cuMemCreate", 2, CUDA_ERROR_OUT_OF_MEMORY);
    GK_ASSERT_ERR(gk_device_vm_map(dev, b + 4 * GRAN, 2 * GRAN), GK_EDEVOOM);
    GK_ASSERT_CONTAINS(gk_last_error(),
                       "cuMemCreate(2097152): CUDA_ERROR_OUT_OF_MEMORY: out of memory");
    assert_int_equal(fk.fakecuda_used_memory(), 4 * GRAN);
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, b + 4 * GRAN, GRAN), -EINVAL);

    /* Any granule can go on its own, even from the middle of one map call; the rest keeps its
     * contents. */
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b + 2 * GRAN, GRAN));
    memset(dst, 0, n);
    GK_ASSERT_OK(gk_memcpy_dtoh_async(dev, dst, b + 3 * GRAN, GRAN, NULL));
    GK_ASSERT_OK(gk_stream_synchronize(dev, NULL, 1.0));
    assert_memory_equal(src + 3 * GRAN, dst, GRAN);
    GK_ASSERT_ERR(gk_memcpy_htod_async(dev, b + 2 * GRAN, src, GRAN, NULL), GK_EDRIVER);
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b, 2 * GRAN));
    GK_ASSERT_OK(gk_device_vm_unmap(dev, b + 3 * GRAN, GRAN));
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    GK_ASSERT_ERR(gk_device_vm_release(dev, base, 8 * GRAN), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "reserved with size");
    GK_ASSERT_ERR(gk_device_vm_release(dev, b + GRAN, 15 * GRAN), -EINVAL);
    GK_ASSERT_OK(gk_device_vm_release(dev, base, 16 * GRAN));

    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.vm_reserves, 1);
    assert_int_equal(c.vm_maps, 7);
    assert_int_equal(c.vm_unmaps, 5);
    assert_int_equal(c.vm_releases, 3);

    /* What is left mapped or reserved at close is given back. */
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 4 * GRAN, &base));
    GK_ASSERT_OK(gk_device_vm_map(dev, base, 2 * GRAN));
    gk_device_close(dev);
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    free(src);
    free(dst);
}

static void test_vm_unsupported_device(void **state)
{
    (void)state;
    fk.fakecuda_set_vmm_supported(0);
    gk_device *dev = open_cuda("cuda:0");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.has_vm, 0);
    assert_int_equal(p.vm_granularity, 0);
    void *base = NULL;
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, GRAN, &base), GK_EUNAVAIL);
    GK_ASSERT_CONTAINS(gk_last_error(), "has no virtual memory");
    GK_ASSERT_ERR(gk_device_vm_map(dev, (void *)(uintptr_t)GRAN, GRAN), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_unmap(dev, (void *)(uintptr_t)GRAN, GRAN), GK_EUNAVAIL);
    GK_ASSERT_ERR(gk_device_vm_release(dev, (void *)(uintptr_t)GRAN, GRAN), GK_EUNAVAIL);
    assert_int_equal(fk.fakecuda_calls("cuMemGetAllocationGranularity"), 0);
    gk_device_close(dev);
}

static void test_vm_old_driver(void **state)
{
    (void)state;
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    cfg.cuda_library = GK_TEST_FAKE_CUDA_NOVMM;
    gk_device *dev = NULL;
    GK_ASSERT_OK(gk_device_open_ex("cuda:0", &cfg, &dev));
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.has_vm, 0);
    assert_int_equal(p.vm_granularity, 0);
    void *base = NULL, *d = NULL;
    GK_ASSERT_ERR(gk_device_vm_reserve(dev, GRAN, &base), GK_EUNAVAIL);
    GK_ASSERT_OK(gk_device_malloc(dev, MiB, &d)); /* the rest works */
    GK_ASSERT_OK(gk_device_free(dev, d));
    gk_device_close(dev);
    assert_int_equal(fk_novmm.fakecuda_live_objects(), 0);
}

/* --- driver errors ----------------------------------------------------------------------- */

typedef enum action {
    ACT_MEM_INFO,
    ACT_MALLOC,
    ACT_FREE,
    ACT_HOST_ALLOC,
    ACT_HOST_FREE,
    ACT_STREAM_CREATE,
    ACT_STREAM_DESTROY,
    ACT_STREAM_SYNC,
    ACT_DEVICE_SYNC,
    ACT_STREAM_WAIT,
    ACT_HOST_FN,
    ACT_EVENT_CREATE,
    ACT_EVENT_DESTROY,
    ACT_EVENT_RECORD,
    ACT_EVENT_QUERY,
    ACT_EVENT_SYNC,
    ACT_HTOD,
    ACT_DTOH,
    ACT_DTOD,
    ACT_VM_RESERVE,
    ACT_VM_MAP,
    ACT_VM_UNMAP,
    ACT_VM_RELEASE,
} action;

typedef struct error_case {
    const char *fn; /* the driver call that fails */
    int cuda_error;
    action act;
    int want;         /* gpukit code */
    const char *text; /* expected in last_error */
} error_case;

static const error_case error_cases[] = {
    {"cuCtxGetCurrent", CUDA_ERROR_UNKNOWN, ACT_MALLOC, GK_EDRIVER,
     "cuCtxGetCurrent: CUDA_ERROR_UNKNOWN: unknown error"},
    {"cuMemGetInfo_v2", CUDA_ERROR_INVALID_CONTEXT, ACT_MEM_INFO, GK_EDRIVER,
     "cuMemGetInfo_v2: CUDA_ERROR_INVALID_CONTEXT: invalid device context"},
    {"cuMemAlloc_v2", CUDA_ERROR_OUT_OF_MEMORY, ACT_MALLOC, GK_EDEVOOM,
     "cuMemAlloc_v2(4096): CUDA_ERROR_OUT_OF_MEMORY"},
    {"cuMemAlloc_v2", CUDA_ERROR_ILLEGAL_ADDRESS, ACT_MALLOC, GK_EDEVLOST,
     "CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered"},
    {"cuMemFree_v2", CUDA_ERROR_LAUNCH_FAILED, ACT_FREE, GK_EDEVLOST, "cuMemFree_v2(0x"},
    {"cuMemHostAlloc", CUDA_ERROR_OUT_OF_MEMORY, ACT_HOST_ALLOC, -ENOMEM,
     "cuMemHostAlloc(4096, PORTABLE): CUDA_ERROR_OUT_OF_MEMORY"},
    {"cuMemHostAlloc", CUDA_ERROR_INVALID_VALUE, ACT_HOST_ALLOC, GK_EDRIVER,
     "CUDA_ERROR_INVALID_VALUE"},
    {"cuMemFreeHost", CUDA_ERROR_INVALID_VALUE, ACT_HOST_FREE, GK_EDRIVER, "cuMemFreeHost("},
    {"cuStreamCreate", CUDA_ERROR_OUT_OF_MEMORY, ACT_STREAM_CREATE, GK_EDEVOOM,
     "cuStreamCreate(NON_BLOCKING): CUDA_ERROR_OUT_OF_MEMORY"},
    {"cuStreamDestroy_v2", CUDA_ERROR_INVALID_HANDLE, ACT_STREAM_DESTROY, GK_EDRIVER,
     "cuStreamDestroy_v2: CUDA_ERROR_INVALID_HANDLE: invalid resource handle"},
    {"cuStreamQuery", CUDA_ERROR_LAUNCH_FAILED, ACT_STREAM_SYNC, GK_EDEVLOST,
     "cuStreamQuery(gpukit stream): CUDA_ERROR_LAUNCH_FAILED: unspecified launch failure"},
    {"cuStreamQuery", CUDA_ERROR_ECC_UNCORRECTABLE, ACT_DEVICE_SYNC, GK_EDEVLOST,
     "cuStreamQuery: CUDA_ERROR_ECC_UNCORRECTABLE"},
    {"cuStreamWaitEvent", CUDA_ERROR_INVALID_HANDLE, ACT_STREAM_WAIT, GK_EDRIVER,
     "cuStreamWaitEvent: CUDA_ERROR_INVALID_HANDLE"},
    {"cuLaunchHostFunc", CUDA_ERROR_NOT_SUPPORTED, ACT_HOST_FN, GK_EDRIVER,
     "cuLaunchHostFunc: CUDA_ERROR_NOT_SUPPORTED: operation not supported"},
    {"cuEventCreate", CUDA_ERROR_OUT_OF_MEMORY, ACT_EVENT_CREATE, GK_EDEVOOM,
     "cuEventCreate(DISABLE_TIMING): CUDA_ERROR_OUT_OF_MEMORY"},
    {"cuEventDestroy_v2", CUDA_ERROR_INVALID_HANDLE, ACT_EVENT_DESTROY, GK_EDRIVER,
     "cuEventDestroy_v2: CUDA_ERROR_INVALID_HANDLE"},
    {"cuEventRecord", CUDA_ERROR_ILLEGAL_INSTRUCTION, ACT_EVENT_RECORD, GK_EDEVLOST,
     "cuEventRecord: CUDA_ERROR_ILLEGAL_INSTRUCTION"},
    {"cuEventQuery", CUDA_ERROR_MISALIGNED_ADDRESS, ACT_EVENT_QUERY, GK_EDEVLOST,
     "cuEventQuery: CUDA_ERROR_MISALIGNED_ADDRESS: misaligned address"},
    {"cuEventQuery", CUDA_ERROR_NOT_READY, ACT_EVENT_QUERY, GK_ENOTREADY, NULL},
    {"cuEventQuery", CUDA_ERROR_HARDWARE_STACK_ERROR, ACT_EVENT_SYNC, GK_EDEVLOST,
     "cuEventQuery: CUDA_ERROR_HARDWARE_STACK_ERROR"},
    {"cuMemcpyHtoDAsync_v2", CUDA_ERROR_ILLEGAL_ADDRESS, ACT_HTOD, GK_EDEVLOST,
     "cuMemcpyHtoDAsync_v2(0x"},
    {"cuMemcpyDtoHAsync_v2", CUDA_ERROR_INVALID_VALUE, ACT_DTOH, GK_EDRIVER,
     "cuMemcpyDtoHAsync_v2(0x"},
    {"cuMemcpyDtoDAsync_v2", CUDA_ERROR_LAUNCH_TIMEOUT, ACT_DTOD, GK_EDEVLOST,
     "cuMemcpyDtoDAsync_v2(0x"},
    {"cuMemAddressReserve", CUDA_ERROR_OUT_OF_MEMORY, ACT_VM_RESERVE, GK_EDEVOOM,
     "cuMemAddressReserve(4194304): CUDA_ERROR_OUT_OF_MEMORY"},
    {"cuMemCreate", CUDA_ERROR_INVALID_VALUE, ACT_VM_MAP, GK_EDRIVER,
     "cuMemCreate(2097152): CUDA_ERROR_INVALID_VALUE"},
    {"cuMemMap", CUDA_ERROR_OUT_OF_MEMORY, ACT_VM_MAP, GK_EDEVOOM, "cuMemMap(0x"},
    {"cuMemSetAccess", CUDA_ERROR_INVALID_VALUE, ACT_VM_MAP, GK_EDRIVER, "cuMemSetAccess(0x"},
    {"cuMemUnmap", CUDA_ERROR_INVALID_VALUE, ACT_VM_UNMAP, GK_EDRIVER, "cuMemUnmap(0x"},
    {"cuMemRelease", CUDA_ERROR_INVALID_VALUE, ACT_VM_UNMAP, GK_EDRIVER, "cuMemRelease(0x"},
    {"cuMemAddressFree", CUDA_ERROR_INVALID_VALUE, ACT_VM_RELEASE, GK_EDRIVER,
     "cuMemAddressFree(0x"},
};

/* Sets up what `act` needs, injects the failure, runs it, and returns its code. */
static int run_action(gk_device *dev, const error_case *ec)
{
    void *d = NULL, *d2 = NULL, *h = NULL, *base = NULL;
    gk_stream *s = NULL;
    gk_event *e = NULL;
    char buf[64] = {0};
    size_t f, t;
    GK_ASSERT_OK(gk_device_malloc(dev, 4096, &d));
    GK_ASSERT_OK(gk_device_malloc(dev, 4096, &d2));
    GK_ASSERT_OK(gk_device_host_alloc(dev, 4096, &h));
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_event_record(dev, e, s));
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 2 * GRAN, &base));
    if (ec->act == ACT_VM_UNMAP)
        GK_ASSERT_OK(gk_device_vm_map(dev, base, GRAN));
    assert_int_equal(fk.fakecuda_fail(ec->fn, 1, ec->cuda_error), 0);
    int rc = 0;
    switch (ec->act) {
    case ACT_MEM_INFO:
        rc = gk_device_mem_info(dev, &f, &t);
        break;
    case ACT_MALLOC: {
        void *x = NULL;
        rc = gk_device_malloc(dev, 4096, &x);
        if (rc == 0)
            gk_device_free(dev, x);
        break;
    }
    case ACT_FREE:
        rc = gk_device_free(dev, d);
        break;
    case ACT_HOST_ALLOC: {
        void *x = NULL;
        rc = gk_device_host_alloc(dev, 4096, &x);
        break;
    }
    case ACT_HOST_FREE:
        rc = gk_device_host_free(dev, h);
        break;
    case ACT_STREAM_CREATE: {
        gk_stream *x = NULL;
        rc = gk_stream_create(dev, &x);
        assert_null(x);
        break;
    }
    case ACT_STREAM_DESTROY:
        rc = gk_stream_destroy(dev, s);
        break;
    case ACT_STREAM_SYNC:
        rc = gk_stream_synchronize(dev, s, 1.0);
        break;
    case ACT_DEVICE_SYNC:
        rc = gk_device_synchronize(dev, 1.0);
        break;
    case ACT_STREAM_WAIT:
        rc = gk_stream_wait_event(dev, NULL, e);
        break;
    case ACT_HOST_FN:
        rc = gk_stream_host_fn(dev, s, record_order, NULL);
        break;
    case ACT_EVENT_CREATE: {
        gk_event *x = NULL;
        rc = gk_event_create(dev, &x);
        assert_null(x);
        break;
    }
    case ACT_EVENT_DESTROY:
        rc = gk_event_destroy(dev, e);
        break;
    case ACT_EVENT_RECORD:
        rc = gk_event_record(dev, e, NULL);
        break;
    case ACT_EVENT_QUERY:
        rc = gk_event_query(dev, e);
        break;
    case ACT_EVENT_SYNC:
        rc = gk_event_synchronize(dev, e, 1.0);
        break;
    case ACT_HTOD:
        rc = gk_memcpy_htod_async(dev, d, buf, sizeof buf, s);
        break;
    case ACT_DTOH:
        rc = gk_memcpy_dtoh_async(dev, buf, d, sizeof buf, s);
        break;
    case ACT_DTOD:
        rc = gk_memcpy_dtod_async(dev, d2, d, sizeof buf, s);
        break;
    case ACT_VM_RESERVE: {
        void *x = NULL;
        rc = gk_device_vm_reserve(dev, 2 * GRAN, &x);
        assert_null(x);
        break;
    }
    case ACT_VM_MAP:
        rc = gk_device_vm_map(dev, base, GRAN);
        break;
    case ACT_VM_UNMAP:
        rc = gk_device_vm_unmap(dev, base, GRAN);
        break;
    case ACT_VM_RELEASE:
        rc = gk_device_vm_release(dev, base, 2 * GRAN);
        break;
    }
    return rc;
}

static void test_driver_errors(void **state)
{
    (void)state;
    char what[128];
    for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
        const error_case *ec = &error_cases[i];
        fk.fakecuda_reset();
        gk_device *dev = open_cuda("cuda:0");
        int rc = run_action(dev, ec);
        snprintf(what, sizeof what, "case %zu (%s -> %d)", i, ec->fn, ec->cuda_error);
        if (rc != ec->want)
            fail_msg("%s: got %s, expected %s (%s)", what, gk_err_name(rc), gk_err_name(ec->want),
                     gk_last_error());
        if (ec->text && !strstr(gk_last_error(), ec->text))
            fail_msg("%s: last_error \"%s\" lacks \"%s\"", what, gk_last_error(), ec->text);
        gk_device_close(dev);
    }
    fk.fakecuda_reset(); /* failed frees and releases leave driver objects behind */
}

/* Failures while opening: each names the call, and nothing stays alive. */
static void test_open_errors(void **state)
{
    (void)state;
    static const struct {
        const char *fn;
        int nth, cuda_error, want;
        const char *text;
    } cases[] = {
        {"cuDriverGetVersion", 1, CUDA_ERROR_UNKNOWN, GK_EDRIVER, "cuDriverGetVersion: "},
        {"cuDeviceGet", 1, CUDA_ERROR_INVALID_DEVICE, GK_ENOGPU, "cuDeviceGet(0): "},
        {"cuDeviceGetName", 1, CUDA_ERROR_UNKNOWN, GK_EDRIVER, "cuDeviceGetName(cuda:0)"},
        {"cuDeviceTotalMem_v2", 1, CUDA_ERROR_UNKNOWN, GK_EDRIVER, "cuDeviceTotalMem_v2"},
        {"cuDeviceGetAttribute", 1, CUDA_ERROR_INVALID_VALUE, GK_EDRIVER,
         "COMPUTE_CAPABILITY_MAJOR"},
        {"cuDeviceGetAttribute", 3, CUDA_ERROR_INVALID_VALUE, GK_EDRIVER, "MULTIPROCESSOR_COUNT"},
        {"cuDevicePrimaryCtxRetain", 1, CUDA_ERROR_OUT_OF_MEMORY, GK_EDRIVER,
         "cuDevicePrimaryCtxRetain(cuda:0): CUDA_ERROR_OUT_OF_MEMORY"},
        {"cuDevicePrimaryCtxRetain", 1, CUDA_ERROR_DEVICE_UNAVAILABLE, GK_ENOGPU,
         "CUDA_ERROR_DEVICE_UNAVAILABLE"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fk.fakecuda_reset();
        fk.fakecuda_fail(cases[i].fn, cases[i].nth, cases[i].cuda_error);
        gk_device *dev = NULL;
        int rc = gk_device_open("cuda:0", &dev);
        if (rc != cases[i].want)
            fail_msg("%s: got %s, expected %s (%s)", cases[i].fn, gk_err_name(rc),
                     gk_err_name(cases[i].want), gk_last_error());
        assert_null(dev);
        GK_ASSERT_CONTAINS(gk_last_error(), cases[i].text);
        assert_int_equal(fk.fakecuda_live_objects(), 0);
    }

    /* An error the driver cannot name still gives a readable message. */
    fk.fakecuda_reset();
    gk_device *dev = open_cuda("cuda:0");
    fk.fakecuda_fail("cuGetErrorName", 1, CUDA_ERROR_INVALID_VALUE);
    fk.fakecuda_fail("cuGetErrorString", 1, CUDA_ERROR_INVALID_VALUE);
    fk.fakecuda_fail("cuMemAlloc_v2", 1, 12345);
    void *x = NULL;
    GK_ASSERT_ERR(gk_device_malloc(dev, 4096, &x), GK_EDRIVER);
    assert_string_equal(gk_last_error(), "cuMemAlloc_v2(4096): CUDA error 12345");
    gk_device_close(dev);

    /* Failing VM detection leaves VM off but the device usable. */
    fk.fakecuda_reset();
    fk.fakecuda_fail("cuDeviceGetAttribute", 4, CUDA_ERROR_INVALID_VALUE);
    dev = open_cuda("cuda:0");
    gk_device_props p;
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.has_vm, 0);
    gk_device_close(dev);
    fk.fakecuda_reset();
    fk.fakecuda_fail("cuMemGetAllocationGranularity", 1, CUDA_ERROR_NOT_SUPPORTED);
    dev = open_cuda("cuda:0");
    GK_ASSERT_OK(gk_device_get_props(dev, &p));
    assert_int_equal(p.has_vm, 0);
    gk_device_close(dev);

    /* A failing release at close is survived. */
    fk.fakecuda_reset();
    dev = open_cuda("cuda:0");
    fk.fakecuda_fail("cuDevicePrimaryCtxRelease_v2", 1, CUDA_ERROR_UNKNOWN);
    gk_device_close(dev);
    fk.fakecuda_reset();
}

/* --- contexts and threads ---------------------------------------------------------------- */

typedef struct thread_arg {
    gk_device *dev;
    int rc;
    int same_ctx; /* the thread's own context is current again afterwards */
    int iterations;
    char msg[1024]; /* the thread's gk_last_error() when it ends */
} thread_arg;

static void *bare_thread(void *p)
{
    thread_arg *a = p;
    void *d = NULL;
    a->rc = gk_device_malloc(a->dev, 4096, &d);
    if (a->rc == 0)
        a->rc = gk_device_free(a->dev, d);
    snprintf(a->msg, sizeof a->msg, "%s", gk_last_error());
    return NULL;
}

/* A thread with device 1's context current calls into cuda:0, and gets device 1 back. */
static void *foreign_ctx_thread(void *p)
{
    thread_arg *a = p;
    CUcontext other = NULL, cur = NULL;
    if (fk.cuDevicePrimaryCtxRetain(&other, 1) != CUDA_SUCCESS ||
        fk.cuCtxPushCurrent_v2(other) != CUDA_SUCCESS) {
        a->rc = -1;
        return NULL;
    }
    void *d = NULL;
    a->rc = gk_device_malloc(a->dev, 4096, &d);
    if (a->rc == 0)
        a->rc = gk_device_free(a->dev, d);
    fk.cuCtxGetCurrent(&cur);
    a->same_ctx = cur == other;
    fk.cuCtxPopCurrent_v2(&cur);
    fk.cuDevicePrimaryCtxRelease_v2(1);
    snprintf(a->msg, sizeof a->msg, "%s", gk_last_error());
    return NULL;
}

static void test_contexts(void **state)
{
    (void)state;
    fk.fakecuda_set_device_count(2);
    gk_device *dev = open_cuda("cuda:0");
    pthread_t th;
    thread_arg a = {.dev = dev};

    long sets = fk.fakecuda_calls("cuCtxSetCurrent");
    assert_int_equal(pthread_create(&th, NULL, bare_thread, &a), 0);
    pthread_join(th, NULL);
    GK_ASSERT_OK(a.rc);
    assert_int_equal(fk.fakecuda_calls("cuCtxSetCurrent"), sets + 1);

    a.rc = -1;
    assert_int_equal(pthread_create(&th, NULL, foreign_ctx_thread, &a), 0);
    pthread_join(th, NULL);
    GK_ASSERT_OK(a.rc);
    assert_true(a.same_ctx);
    assert_int_equal(fk.fakecuda_calls("cuCtxPushCurrent_v2"), 3); /* 1 by the test */
    assert_int_equal(fk.fakecuda_calls("cuCtxPopCurrent_v2"), 3);

    /* Failures of the context calls themselves. */
    fk.fakecuda_fail("cuCtxSetCurrent", 1, CUDA_ERROR_INVALID_CONTEXT);
    assert_int_equal(pthread_create(&th, NULL, bare_thread, &a), 0);
    pthread_join(th, NULL);
    GK_ASSERT_ERR(a.rc, GK_EDRIVER);
    GK_ASSERT_CONTAINS(a.msg, "cuCtxSetCurrent(cuda:0 primary context)");

    fk.fakecuda_fail("cuCtxPushCurrent_v2", 2, CUDA_ERROR_INVALID_CONTEXT);
    assert_int_equal(pthread_create(&th, NULL, foreign_ctx_thread, &a), 0);
    pthread_join(th, NULL);
    GK_ASSERT_ERR(a.rc, GK_EDRIVER);
    GK_ASSERT_CONTAINS(a.msg, "cuCtxPushCurrent_v2");

    /* A failing pop is reported, but the allocation it follows stands (no leak). */
    fk.fakecuda_fail("cuCtxPopCurrent_v2", 1, CUDA_ERROR_INVALID_CONTEXT);
    assert_int_equal(pthread_create(&th, NULL, foreign_ctx_thread, &a), 0);
    pthread_join(th, NULL);
    GK_ASSERT_OK(a.rc);
    assert_false(a.same_ctx);
    GK_ASSERT_CONTAINS(a.msg, "cuCtxPopCurrent_v2"); /* in the failing thread's own message */
    gk_device_close(dev);
    fk.fakecuda_reset(); /* the failed pop left a device-1 reference behind in that thread */
}

static void *worker(void *p)
{
    thread_arg *a = p;
    gk_stream *s = NULL;
    gk_event *e = NULL;
    unsigned char in[512], out[512];
    int rc = gk_stream_create(a->dev, &s);
    if (!rc)
        rc = gk_event_create(a->dev, &e);
    for (int i = 0; i < a->iterations && !rc; i++) {
        void *d = NULL;
        memset(in, i & 0xff, sizeof in);
        rc = gk_device_malloc(a->dev, sizeof in, &d);
        if (!rc)
            rc = gk_memcpy_htod_async(a->dev, d, in, sizeof in, s);
        if (!rc)
            rc = gk_memcpy_dtoh_async(a->dev, out, d, sizeof out, s);
        if (!rc)
            rc = gk_event_record(a->dev, e, s);
        if (!rc)
            rc = gk_event_synchronize(a->dev, e, 5.0);
        if (!rc && memcmp(in, out, sizeof in) != 0)
            rc = -EIO;
        if (d) {
            int frc = gk_device_free(a->dev, d);
            rc = rc ? rc : frc;
        }
        if (!rc && i % 8 == 0)
            rc = gk_device_synchronize(a->dev, 5.0);
    }
    int drc = gk_event_destroy(a->dev, e);
    int src = gk_stream_destroy(a->dev, s);
    a->rc = rc ? rc : drc ? drc : src;
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    gk_device *dev = open_cuda("cuda:0");
    enum { NT = 4 };
    pthread_t th[NT];
    thread_arg a[NT];
    for (int i = 0; i < NT; i++) {
        a[i] = (thread_arg){.dev = dev, .iterations = 50};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &a[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        GK_ASSERT_OK(a[i].rc);
    }
    gk_device_counters c;
    GK_ASSERT_OK(gk_device_get_counters(dev, &c));
    assert_int_equal(c.malloc_calls, NT * 50);
    assert_int_equal(c.stream_creates, NT);
    gk_device_close(dev);
}

/* Whatever the caller leaves open is given back at close. */
static void test_close_cleans_up(void **state)
{
    (void)state;
    gk_device *dev = open_cuda("cuda:0");
    void *d = NULL, *h = NULL, *base = NULL;
    gk_stream *s = NULL;
    gk_event *e = NULL;
    GK_ASSERT_OK(gk_device_malloc(dev, MiB, &d));
    GK_ASSERT_OK(gk_device_host_alloc(dev, MiB, &h));
    GK_ASSERT_OK(gk_stream_create(dev, &s));
    GK_ASSERT_OK(gk_event_create(dev, &e));
    GK_ASSERT_OK(gk_device_vm_reserve(dev, 2 * GRAN, &base));
    GK_ASSERT_OK(gk_device_vm_map(dev, (char *)base + GRAN, GRAN));
    assert_true(fk.fakecuda_live_objects() >= 7);
    gk_device_close(dev);
    assert_int_equal(fk.fakecuda_live_objects(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_props, setup, teardown),
        cmocka_unit_test_setup_teardown(test_select_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_library, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_symbol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_unsupported_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_old_driver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_driver_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contexts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_cleans_up, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
