/* The allocator shim (gpukit/torch.h, shim/torch_alloc.c, compiled into this test) on `sim`
 * through the test switch: PyTorch's entry points, lazy per-device pools, stream-aware reuse,
 * record_stream, the settings (preset, GK_POOL_CONF, conf, in that order), statistics against the
 * pool's rules, out-of-memory returning NULL with the report kept, bad arguments, 4 threads at
 * once racing the pool's creation; then the cuda path through the fake driver: the pool in the
 * primary context and a foreign CUstream wrapped once and never destroyed.
 * gk-labels: unit threads */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda_api.h"
#include "fake_cuda.h"
#include "gk_test.h"
#include "gpukit/torch.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* PyTorch loads the entry points with dlsym and calls them as void *(size_t, int, cudaStream_t)
 * and void (void *, size_t, int, cudaStream_t), so nothing checks them at run time: these pointers
 * fail to compile when a signature drifts. */
static void *(*const torch_alloc)(ssize_t, int, void *) = gk_torch_malloc;
static void (*const torch_free)(void *, ssize_t, int, void *) = gk_torch_free;
_Static_assert(sizeof(ssize_t) == sizeof(size_t), "PyTorch passes a size_t");

static int setup(void **state)
{
    (void)state;
    gk_test_setenv("GK_POOL_CONF", NULL);
    gk_test_setenv("GK_CUDA_LIBRARY", NULL);
    gk_test_setenv("GK_LOG", "off"); /* the shim logs every failed allocation at error level */
    GK_ASSERT_OK(gk_torch_shutdown());
    GK_ASSERT_OK(gk_torch_test_use_sim("sim:capacity=64MiB"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return gk_torch_shutdown();
}

static gk_pool_stats stats(int device)
{
    gk_pool_stats st;
    GK_ASSERT_OK(gk_torch_get_stats(device, &st));
    return st;
}

static const char *report(void)
{
    static char buf[8192];
    gk_torch_last_report(buf, sizeof buf, NULL);
    return buf;
}

static void test_alloc_free_reuse(void **state)
{
    (void)state;
    void *p = torch_alloc(1000, 0, NULL);
    assert_non_null(p);
    gk_pool_stats st = stats(0);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 1024); /* rounded to 512 B */
    assert_int_equal(st.requested_bytes[GK_POOL_ALL].current, 1000);
    assert_int_equal(st.allocation[GK_POOL_SMALL].current, 1);
    assert_int_equal(st.reserved_bytes[GK_POOL_ALL].current, 2 * MIB); /* one small segment */
    torch_free(p, 1000, 0, NULL);
    st = stats(0);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(st.reserved_bytes[GK_POOL_ALL].current, 2 * MIB); /* cached */
    void *q = gk_torch_malloc(1000, 0, NULL);
    assert_ptr_equal(p, q);
    assert_int_equal(stats(0).num_cache_hits, 1);
    assert_int_equal(stats(0).num_device_alloc, 1);
    gk_torch_free(q, 1000, 0, NULL);
    GK_ASSERT_OK(gk_torch_empty_cache(0));
    assert_int_equal(stats(0).reserved_bytes[GK_POOL_ALL].current, 0);
    /* Size 0 is NULL with nothing kept, as PyTorch's own allocator answers; NULL frees nothing. */
    assert_null(gk_torch_malloc(0, 0, NULL));
    gk_torch_free(NULL, 0, 0, NULL);
    assert_int_equal(gk_torch_last_report(NULL, 0, NULL), 0);
    assert_string_equal(report(), "");
}

static void test_streams(void **state)
{
    (void)state;
    void *s1, *s2;
    GK_ASSERT_OK(gk_torch_test_stream_create(0, &s1));
    GK_ASSERT_OK(gk_torch_test_stream_create(0, &s2));
    void *p = gk_torch_malloc(4 * MIB, 0, s1);
    assert_non_null(p);
    gk_torch_free(p, 4 * MIB, 0, s1);
    /* Another stream never takes the block freed on s1; s1 takes it again at once. */
    void *q = gk_torch_malloc(4 * MIB, 0, s2);
    assert_non_null(q);
    assert_ptr_not_equal(p, q);
    void *r = gk_torch_malloc(4 * MIB, 0, s1);
    assert_ptr_equal(p, r);
    /* record_stream: the block is used on s2 too; its free waits for s2's event. */
    GK_ASSERT_OK(gk_torch_record_stream(r, 0, s2));
    gk_torch_free(r, 4 * MIB, 0, s1);
    assert_int_equal(stats(0).active_bytes[GK_POOL_ALL].current, 8 * MIB);
    void *again = gk_torch_malloc(4 * MIB, 0, s1); /* polls the event first: s2 is idle */
    assert_ptr_equal(p, again);
    gk_torch_free(again, 4 * MIB, 0, s1);
    gk_torch_free(q, 4 * MIB, 0, s2);
    /* Unknown pointers, bad devices. */
    int x;
    GK_ASSERT_ERR(gk_torch_record_stream(&x, 0, s2), -EINVAL);
    GK_ASSERT_ERR(gk_torch_record_stream(p, 7, s2), -EINVAL);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "device 7 has no pool");
    /* Destroying a stream hands its cache back to the pool (the pool's stream hook). */
    GK_ASSERT_OK(gk_torch_test_stream_destroy(0, s2));
    GK_ASSERT_OK(gk_torch_test_stream_destroy(0, s1));
    gk_pool_stats st = stats(0);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(st.active_bytes[GK_POOL_ALL].current, 0);
}

static void test_devices(void **state)
{
    (void)state;
    void *a = gk_torch_malloc(3 * MIB, 0, NULL), *b = gk_torch_malloc(5 * MIB, 1, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(stats(0).allocated_bytes[GK_POOL_ALL].current, 3 * MIB);
    assert_int_equal(stats(1).allocated_bytes[GK_POOL_ALL].current, 5 * MIB);
    /* A device never used reads as zeros; the side calls on a device without a pool do nothing. */
    assert_int_equal(stats(3).reserved_bytes[GK_POOL_ALL].peak, 0);
    GK_ASSERT_OK(gk_torch_empty_cache(5));
    GK_ASSERT_OK(gk_torch_reset_peak(5));
    GK_ASSERT_OK(gk_torch_reset_accumulated(5));
    /* A pointer the device's pool did not hand out is refused and counted by that pool. */
    gk_torch_free((char *)b + 4096, 3 * MIB, 1, NULL);
    assert_int_equal(stats(1).num_invalid_free, 1);
    assert_int_equal(stats(1).allocated_bytes[GK_POOL_ALL].current, 5 * MIB);
    gk_torch_free(a, 3 * MIB, 6, NULL); /* device 6 has no pool: logged, nothing else */
    gk_torch_free(a, 3 * MIB, 0, NULL);
    gk_torch_free(b, 5 * MIB, 1, NULL);
    /* Peaks and accumulated counts reset per device. */
    assert_int_equal(stats(0).allocated_bytes[GK_POOL_ALL].peak, 3 * MIB);
    GK_ASSERT_OK(gk_torch_reset_peak(0));
    assert_int_equal(stats(0).allocated_bytes[GK_POOL_ALL].peak, 0);
    assert_int_equal(stats(1).allocated_bytes[GK_POOL_ALL].peak, 5 * MIB);
    assert_int_equal(stats(1).allocation[GK_POOL_ALL].allocated, 1);
    GK_ASSERT_OK(gk_torch_reset_accumulated(1));
    assert_int_equal(stats(1).allocation[GK_POOL_ALL].allocated, 0);
    /* Bad ordinals. */
    gk_pool_stats st;
    GK_ASSERT_ERR(gk_torch_get_stats(-1, &st), -EINVAL);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "device -1 is not a CUDA ordinal");
    GK_ASSERT_ERR(gk_torch_get_stats(GK_TORCH_MAX_DEVICES, &st), -EINVAL);
    GK_ASSERT_ERR(gk_torch_empty_cache(-2), -EINVAL);
    assert_null(gk_torch_malloc(64, GK_TORCH_MAX_DEVICES, NULL));
    GK_ASSERT_CONTAINS(report(), "device 64 is not a CUDA ordinal");
    assert_null(gk_torch_malloc(-5, 0, NULL));
    GK_ASSERT_CONTAINS(report(), "size -5 is negative");
    int code = 0;
    gk_torch_last_report(NULL, 0, &code);
    assert_int_equal(code, -EINVAL);
    size_t free_b = 0, total_b = 0;
    GK_ASSERT_OK(gk_torch_mem_info(0, &free_b, &total_b));
    assert_int_equal(total_b, 64 * MIB);
    assert_true(free_b <= total_b);
    GK_ASSERT_ERR(gk_torch_mem_info(-1, &free_b, &total_b), -EINVAL);
}

/* The writers give the pool's own JSON, table and snapshot. */
static void test_writers(void **state)
{
    (void)state;
    void *p = gk_torch_malloc(3 * MIB, 0, NULL);
    assert_non_null(p);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    GK_ASSERT_OK(gk_torch_stats_json(0, f));
    fflush(f);
    GK_ASSERT_CONTAINS(buf, "\"allocated_bytes.all.current\":3145728,");
    GK_ASSERT_CONTAINS(buf, "\"num_ooms\":0,");
    GK_ASSERT_OK(gk_torch_summary(0, f));
    fflush(f);
    GK_ASSERT_CONTAINS(buf, "memory summary");
    GK_ASSERT_OK(gk_torch_snapshot_json(0, f));
    fflush(f);
    GK_ASSERT_CONTAINS(buf, "\"segments\"");
    GK_ASSERT_CONTAINS(buf, "\"requested_size\":3145728");
    fclose(f);
    free(buf);
    GK_ASSERT_ERR(gk_torch_stats_json(0, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_torch_summary(-1, stderr), -EINVAL);
    GK_ASSERT_ERR(gk_torch_snapshot_json(99, stderr), -EINVAL);
    gk_torch_free(p, 3 * MIB, 0, NULL);
}

static void test_oom(void **state)
{
    (void)state;
    void *keep = gk_torch_malloc(40 * MIB, 0, NULL);
    assert_non_null(keep);
    assert_null(gk_torch_malloc(48 * MIB, 0, NULL)); /* 64 MiB device, 40 held */
    size_t n = gk_torch_last_report(NULL, 0, NULL);
    assert_true(n > 100);
    GK_ASSERT_CONTAINS(report(), "out of device memory");
    GK_ASSERT_CONTAINS(report(), "50331648"); /* the request */
    char small[16];
    int code = 0;
    assert_int_equal(gk_torch_last_report(small, sizeof small, &code), n);
    assert_int_equal(code, GK_EDEVOOM);
    assert_int_equal(strlen(small), sizeof small - 1);
    gk_pool_stats st = stats(0);
    assert_int_equal(st.num_ooms, 1);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 40 * MIB);
    /* The pool still works, and the report stays until the next failure. */
    void *p = gk_torch_malloc(8 * MIB, 0, NULL);
    assert_non_null(p);
    assert_int_equal(gk_torch_last_report(NULL, 0, NULL), n);
    gk_torch_free(p, 0, 0, NULL);
    gk_torch_free(keep, 0, 0, NULL);
    GK_ASSERT_OK(gk_torch_shutdown());
    assert_int_equal(gk_torch_last_report(NULL, 0, NULL), 0);
}

static void test_settings(void **state)
{
    (void)state;
    /* Errors name the thing and keep the settings as they were. */
    GK_ASSERT_ERR(gk_torch_configure("fast", NULL), -EINVAL);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "fast");
    GK_ASSERT_ERR(gk_torch_configure(NULL, "limt=1MiB"), -ENOENT);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "limt");
    GK_ASSERT_ERR(gk_torch_configure(NULL, "round=3"), -EINVAL);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "round");
    /* The rules across keys are checked at once too, not at the first allocation. */
    GK_ASSERT_ERR(gk_torch_configure(NULL, "max_split_size=8MiB"), -EINVAL);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "max_split_size must exceed large_segment");
    /* GK_POOL_CONF over the preset, conf over GK_POOL_CONF. */
    gk_test_setenv("GK_POOL_CONF", "limit=1MiB,max_split_size=32MiB");
    GK_ASSERT_OK(gk_torch_configure("pytorch", "limit=16MiB"));
    gk_pool_stats st = stats(0);
    assert_int_equal(st.limit, 16 * MIB);
    assert_int_equal(st.max_split_size, 32 * MIB);
    assert_int_equal(st.expandable_segments, 0); /* the pytorch preset */
    assert_null(gk_torch_malloc(20 * MIB, 0, NULL));
    GK_ASSERT_CONTAINS(report(), "out of device memory");
    /* A pool exists: the settings cannot change any more, nor the switch. */
    GK_ASSERT_ERR(gk_torch_configure("default", NULL), -EBUSY);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "before the first CUDA allocation");
    GK_ASSERT_ERR(gk_torch_test_use_sim("sim"), -EBUSY);
    /* After a shutdown the defaults apply again; a bad GK_POOL_CONF stops the pool's creation. */
    GK_ASSERT_OK(gk_torch_shutdown());
    GK_ASSERT_OK(gk_torch_test_use_sim("sim:capacity=64MiB"));
    gk_test_setenv("GK_POOL_CONF", "limit=lots");
    assert_null(gk_torch_malloc(1 * MIB, 0, NULL));
    GK_ASSERT_CONTAINS(report(), "GK_POOL_CONF");
    GK_ASSERT_ERR(gk_torch_configure(NULL, NULL), -EINVAL);
    gk_test_setenv("GK_POOL_CONF", NULL);
    void *p = gk_torch_malloc(1 * MIB, 0, NULL);
    assert_non_null(p);
    assert_int_equal(stats(0).limit, 0);
    gk_torch_free(p, 0, 0, NULL);
}

static void test_switch(void **state)
{
    (void)state;
    GK_ASSERT_ERR(gk_torch_test_use_sim("cuda:0"), -EINVAL);
    GK_ASSERT_CONTAINS(gk_torch_last_error(), "not a sim device spec");
    GK_ASSERT_ERR(gk_torch_test_stream_create(0, NULL), -EINVAL);
    /* A bad sim spec fails the allocation with the device's message. */
    GK_ASSERT_OK(gk_torch_test_use_sim("sim:capacity=nothing"));
    assert_null(gk_torch_malloc(64, 0, NULL));
    GK_ASSERT_CONTAINS(report(), "cannot open sim:capacity=nothing for device 0");
    /* Off: no test streams. */
    GK_ASSERT_OK(gk_torch_test_use_sim(NULL));
    void *s;
    GK_ASSERT_ERR(gk_torch_test_stream_create(0, &s), GK_EUNAVAIL);
    assert_null(s);
    GK_ASSERT_ERR(gk_torch_test_stream_destroy(0, NULL), GK_EUNAVAIL);
}

/* --- threads -------------------------------------------------------------------------------- */

#define THREADS 4
#define ROUNDS  2000
#define SLOTS   16

typedef struct worker {
    int id;
    void *stream;
    long allocations, errors;
} worker;

static pthread_barrier_t start;

static void *work(void *arg)
{
    worker *w = arg;
    void *held[SLOTS] = {0};
    size_t sizes[SLOTS] = {0};
    unsigned seed = 12345u + (unsigned)w->id;
    pthread_barrier_wait(&start); /* every thread's first call races the pool's creation */
    for (int r = 0; r < ROUNDS; r++) {
        int k = (int)(rand_r(&seed) % SLOTS);
        if (held[k]) {
            if (r % 5 == 0 && gk_torch_record_stream(held[k], 0, NULL) != 0)
                w->errors++;
            gk_torch_free(held[k], (ssize_t)sizes[k], 0, w->stream);
            held[k] = NULL;
            continue;
        }
        size_t size = (rand_r(&seed) % 4 == 0) ? (1 + rand_r(&seed) % 3) * MIB
                                               : 256 + rand_r(&seed) % (64 * KIB);
        void *stream = (r % 7 == 0) ? NULL : w->stream;
        held[k] = gk_torch_malloc((ssize_t)size, 0, stream);
        sizes[k] = size;
        if (!held[k])
            w->errors++;
        else
            w->allocations++;
        if (r % 97 == 0) {
            gk_pool_stats st;
            if (gk_torch_get_stats(0, &st) != 0)
                w->errors++;
        }
    }
    for (int k = 0; k < SLOTS; k++)
        gk_torch_free(held[k], (ssize_t)sizes[k], 0, NULL);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    GK_ASSERT_OK(gk_torch_shutdown());
    GK_ASSERT_OK(gk_torch_test_use_sim("sim:capacity=1GiB"));
    /* First round: no pool yet, every thread on the default stream, so the first calls race
     * the pool's creation. */
    worker w[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.id = i};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    long total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].errors, 0);
        total += w[i].allocations;
    }
    pthread_barrier_destroy(&start);
    gk_pool_stats st = stats(0);
    assert_int_equal(st.allocation[GK_POOL_ALL].allocated, total);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(st.num_invalid_free + st.num_double_free, 0);

    /* Again on a pool that exists, each thread on its own stream. */
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.id = 10 + i};
        GK_ASSERT_OK(gk_torch_test_stream_create(0, &w[i].stream));
    }
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    total = (long)st.allocation[GK_POOL_ALL].allocated;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].errors, 0);
        total += w[i].allocations;
    }
    pthread_barrier_destroy(&start);
    for (int i = 0; i < THREADS; i++)
        GK_ASSERT_OK(gk_torch_test_stream_destroy(0, w[i].stream));
    st = stats(0);
    assert_int_equal(st.allocation[GK_POOL_ALL].allocated, total);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(st.active_bytes[GK_POOL_ALL].current, 0);
}

/* --- the cuda path through the fake driver ------------------------------------------------- */

typedef struct fake_api {
    void *lib;
#define FK_FIELD(ret, name, params) ret(*name) params;
    FAKECUDA_CONTROL_FUNCS(FK_FIELD)
#undef FK_FIELD
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_destroy)(CUstream);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*release)(CUdevice);
    CUresult (*init)(unsigned);
    CUresult (*set_current)(CUcontext);
} fake_api;

static void load_sym(void *lib, const char *name, void *fnp)
{
    void *p = dlsym(lib, name);
    if (!p)
        fail_msg("the fake driver lacks %s", name);
    memcpy(fnp, &p, sizeof p);
}

static void load_fake(fake_api *api)
{
    api->lib = dlopen(gk_test_fake_cuda(), RTLD_NOW | RTLD_LOCAL);
    if (!api->lib)
        fail_msg("cannot load the fake driver: %s", dlerror());
#define FK_LOAD(ret, name, params) load_sym(api->lib, #name, &api->name);
    FAKECUDA_CONTROL_FUNCS(FK_LOAD)
#undef FK_LOAD
    load_sym(api->lib, "cuStreamCreate", &api->stream_create);
    load_sym(api->lib, "cuStreamDestroy_v2", &api->stream_destroy);
    load_sym(api->lib, "cuDevicePrimaryCtxRetain", &api->retain);
    load_sym(api->lib, "cuDevicePrimaryCtxRelease_v2", &api->release);
    load_sym(api->lib, "cuInit", &api->init);
    load_sym(api->lib, "cuCtxSetCurrent", &api->set_current);
}

static void test_cuda_fake(void **state)
{
    (void)state;
    fake_api fk;
    load_fake(&fk);
    fk.fakecuda_reset();
    fk.fakecuda_set_total_memory(256 * MIB);
    GK_ASSERT_OK(gk_torch_test_use_sim(NULL));
    gk_test_setenv("GK_CUDA_LIBRARY", gk_test_fake_cuda());
    GK_ASSERT_OK(gk_torch_configure("pytorch", NULL));
    /* PyTorch's side: the CUDA runtime holds the primary context and makes streams in it. */
    CUcontext ctx = NULL;
    assert_int_equal(fk.init(0), CUDA_SUCCESS);
    assert_int_equal(fk.retain(&ctx, 0), CUDA_SUCCESS);
    assert_int_equal(fk.set_current(ctx), CUDA_SUCCESS);
    CUstream a = NULL, b = NULL;
    assert_int_equal(fk.stream_create(&a, 0), CUDA_SUCCESS);
    assert_int_equal(fk.stream_create(&b, 0), CUDA_SUCCESS);
    /* The first allocation opens cuda:0 in the same primary context. */
    void *p = gk_torch_malloc(4 * MIB, 0, NULL);
    assert_non_null(p);
    assert_int_equal(fk.fakecuda_calls("cuDevicePrimaryCtxRetain"), 2);
    assert_int_equal(fk.fakecuda_calls("cuMemAlloc_v2"), 1);
    void *pa = gk_torch_malloc(4 * MIB, 0, a);
    assert_non_null(pa);
    assert_ptr_not_equal(pa, p);
    gk_torch_free(pa, 4 * MIB, 0, a);
    void *pb = gk_torch_malloc(4 * MIB, 0, b); /* b never takes a's block */
    assert_ptr_not_equal(pb, pa);
    void *pa2 = gk_torch_malloc(4 * MIB, 0, a); /* a takes it again: the same wrapped handle */
    assert_ptr_equal(pa2, pa);
    GK_ASSERT_OK(gk_torch_record_stream(pa2, 0, b));
    gk_torch_free(pa2, 0, 0, a);
    gk_torch_free(pb, 0, 0, b);
    gk_torch_free(p, 0, 0, NULL);
    assert_int_equal(fk.fakecuda_calls("cuStreamCreate"), 2); /* wrapping creates nothing */
    gk_pool_stats st = stats(0);
    assert_int_equal(st.allocated_bytes[GK_POOL_ALL].current, 0);
    assert_int_equal(st.num_device_alloc, 3);
    GK_ASSERT_OK(gk_torch_empty_cache(0));
    assert_int_equal(fk.fakecuda_used_memory(), 0);
    /* Out of memory on the driver: NULL, the report kept. */
    assert_null(gk_torch_malloc(512 * MIB, 0, a));
    GK_ASSERT_CONTAINS(report(), "out of device memory");
    /* Shutdown releases the wrapped handles, not the streams; then the context. */
    GK_ASSERT_OK(gk_torch_shutdown());
    assert_int_equal(fk.fakecuda_calls("cuStreamDestroy_v2"), 0);
    assert_int_equal(fk.stream_destroy(a), CUDA_SUCCESS);
    assert_int_equal(fk.stream_destroy(b), CUDA_SUCCESS);
    assert_int_equal(fk.release(0), CUDA_SUCCESS);
    assert_int_equal(fk.fakecuda_live_objects(), 0);
    /* No driver: the allocation fails with the reason kept. */
    fk.fakecuda_set_device_count(0);
    assert_null(gk_torch_malloc(64, 0, NULL));
    GK_ASSERT_CONTAINS(report(), "cannot open cuda:0 for device 0");
    GK_ASSERT_OK(gk_torch_shutdown());
    fk.fakecuda_reset();
    dlclose(fk.lib);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alloc_free_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cuda_fake, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
