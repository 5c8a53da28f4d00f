/* libgpukit_torch.so: gpukit's pool behind PyTorch's pluggable-allocator entry points (see
 * gpukit/torch.h). One slot per CUDA ordinal holds the device, its pool and the streams wrapped
 * for it; a slot is filled once, under its lock, by the first call that needs it, and read
 * without the lock afterwards (an acquire load of the pool pointer). The settings, the test
 * switch and the last failure's text are process-wide, under one lock. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/device.h"
#include "gpukit/log.h"
#include "gpukit/pool.h"
#include "gpukit/torch.h"
#include "pool/pool_int.h"
#include "torch_int.h"

/* A CUstream and the gpukit handle that wraps it. */
typedef struct wrapped {
    void *native;
    gk_stream *stream;
} wrapped;

typedef struct slot {
    pthread_mutex_t lock;        /* creation, and the wrapped-stream table */
    gk_device *dev;              /* under lock */
    _Atomic(gk_pool *) pool;     /* set once, after dev, with release order */
    wrapped *streams;            /* under lock */
    size_t nstreams, capstreams; /* under lock */
} slot;

static slot g_slots[GK_TORCH_MAX_DEVICES];
static pthread_once_t g_slots_once = PTHREAD_ONCE_INIT;

static void init_slots(void)
{
    for (int d = 0; d < GK_TORCH_MAX_DEVICES; d++)
        pthread_mutex_init(&g_slots[d].lock, NULL);
}

/* Process-wide state, under g_lock. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char *g_preset;      /* NULL: "default" */
static char *g_conf;        /* NULL: none */
static char *g_sim_spec;    /* the test switch; NULL: cuda */
static atomic_int g_sim_on; /* g_sim_spec != NULL, read without the lock on every call */
static char *g_report;      /* the last failure's text; NULL: none */
static size_t g_report_len;
static int g_report_code;
static int g_pools; /* pools created or being created (configure and the switch refuse then) */

static gk_logger shim_logger(void)
{
    gk_logger lg;
    gk_logger_default(&lg);
    (void)gk_logger_from_env(&lg);
    return lg;
}

/* Keeps `text` as the last failure's text and logs it at error level. */
/* Set while gk_torch_malloc_raise's call is on this thread: its failure travels in the exception,
 * so it is not logged as well. */
static _Thread_local int t_raising;
static _Thread_local char *t_text; /* that call's failure: its text (malloc'd) and status */
static _Thread_local int t_code;

static void keep_report(int device, int code, const char *text)
{
    char *copy = strdup(text);
    pthread_mutex_lock(&g_lock);
    free(g_report);
    g_report = copy;
    g_report_len = copy ? strlen(copy) : 0;
    g_report_code = code;
    pthread_mutex_unlock(&g_lock);
    if (t_raising) {
        free(t_text);
        t_text = strdup(text);
        t_code = code;
        return;
    }
    gk_logger lg = shim_logger();
    gk_log(&lg, GK_LOG_ERROR, "torch", "allocation on device %d failed (the caller gets NULL): %s",
           device, text);
}

static int check_device(int device, const char *fn)
{
    if (device < 0 || device >= GK_TORCH_MAX_DEVICES)
        return gk__error(-EINVAL, "%s: device %d is not a CUDA ordinal in [0, %d)", fn, device,
                         GK_TORCH_MAX_DEVICES);
    return 0;
}

/* The pool config the settings give: preset, then GK_LOG and GK_POOL_CONF, then conf. */
static int make_config(const char *preset, const char *conf, gk_pool_config *cfg)
{
    int rc = gk_pool_config_preset(cfg, preset ? preset : "default");
    if (rc)
        return rc;
    rc = gk_pool_config_from_env(cfg);
    if (rc)
        return rc;
    char err[512];
    if (conf && *conf) {
        rc = gk_pool_config_parse(cfg, conf, err, sizeof err);
        if (rc)
            return gk__error(rc, "gpukit allocator settings \"%s\": %s", conf, err);
    }
    cfg->name = "torch"; /* the pool label of its series (device="cuda:N" comes from the device) */
    /* The rules across keys, which gk_pool_create would check only when the first tensor is
     * made. */
    rc = gk__pool_config_check(cfg, err, sizeof err);
    if (rc)
        return gk__error(rc, "gpukit allocator settings (preset %s, GK_POOL_CONF, then \"%s\"): %s",
                         preset ? preset : "default", conf ? conf : "", err);
    return 0;
}

/* Opens the device and creates the pool of `s` (under s->lock). */
static int create_pool(slot *s, int device)
{
    char spec[512];
    gk_pool_config cfg;
    pthread_mutex_lock(&g_lock);
    if (g_sim_spec)
        snprintf(spec, sizeof spec, "%s", g_sim_spec);
    else
        snprintf(spec, sizeof spec, "cuda:%d", device);
    int rc = make_config(g_preset, g_conf, &cfg);
    if (rc == 0)
        g_pools++; /* from here the settings are taken */
    pthread_mutex_unlock(&g_lock);
    if (rc)
        return rc;
    gk_pool *pool = NULL;
    rc = gk_device_open(spec, &s->dev);
    if (rc) {
        rc = gk__error(rc, "gpukit allocator: cannot open %s for device %d: %s", spec, device,
                       gk_last_error());
    } else if ((rc = gk_pool_create(s->dev, &cfg, &pool)) != 0) {
        rc = gk__error(rc, "gpukit allocator: cannot create the pool of %s: %s", spec,
                       gk_last_error());
        gk_device_close(s->dev);
        s->dev = NULL;
    }
    if (rc) {
        pthread_mutex_lock(&g_lock);
        g_pools--;
        pthread_mutex_unlock(&g_lock);
        return rc;
    }
    atomic_store_explicit(&s->pool, pool, memory_order_release);
    return 0;
}

/* The pool of `device`: created when `create` and it has none; NULL with *rc 0 when it has none
 * and create is 0. */
static gk_pool *get_pool(int device, int create, int *rc, const char *fn)
{
    *rc = check_device(device, fn);
    if (*rc)
        return NULL;
    pthread_once(&g_slots_once, init_slots);
    slot *s = &g_slots[device];
    gk_pool *pool = atomic_load_explicit(&s->pool, memory_order_acquire);
    if (pool || !create)
        return pool;
    pthread_mutex_lock(&s->lock);
    pool = atomic_load_explicit(&s->pool, memory_order_relaxed);
    if (!pool) {
        *rc = create_pool(s, device);
        pool = *rc ? NULL : atomic_load_explicit(&s->pool, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->lock);
    return pool;
}

static int sim_mode(void)
{
    return atomic_load_explicit(&g_sim_on, memory_order_relaxed);
}

/* The gpukit stream for a caller's stream on `device` (whose pool exists): NULL for NULL, the
 * handle itself under the test switch, else the wrapped CUstream (wrapped on first sight). */
static int stream_for(int device, void *native, gk_stream **out)
{
    *out = NULL;
    if (!native)
        return 0;
    if (sim_mode()) {
        *out = native;
        return 0;
    }
    slot *s = &g_slots[device];
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nstreams; i++)
        if (s->streams[i].native == native) {
            *out = s->streams[i].stream;
            goto done;
        }
    if (s->nstreams == s->capstreams) {
        size_t cap = s->capstreams ? 2 * s->capstreams : 8;
        wrapped *grown = realloc(s->streams, cap * sizeof *grown);
        if (!grown) {
            rc = gk__error(-ENOMEM, "gpukit allocator: out of host memory for a stream");
            goto done;
        }
        s->streams = grown;
        s->capstreams = cap;
    }
    rc = gk_stream_wrap(s->dev, native, out);
    if (rc == 0)
        s->streams[s->nstreams++] = (wrapped){native, *out};
done:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* --- PyTorch's entry points ----------------------------------------------------------------- */

/* Keeps the pool's out-of-memory report (gk_pool_malloc failed with GK_EDEVOOM) and returns
 * NULL. */
static void *oom(gk_pool *pool, int device)
{
    size_t n = gk_pool_oom_report(pool, NULL, 0);
    char *text = malloc(n + 1);
    if (!text) {
        keep_report(device, GK_EDEVOOM,
                    "out of device memory (no host memory left for the report)");
        return NULL;
    }
    gk_pool_oom_report(pool, text, n + 1);
    keep_report(device, GK_EDEVOOM, text);
    free(text);
    return NULL;
}

void *gk_torch_malloc(ssize_t size, int device, void *stream)
{
    if (size == 0)
        return NULL;
    int rc;
    if (size < 0) {
        rc = gk__error(-EINVAL, "gk_torch_malloc: size %zd is negative", size);
        keep_report(device, rc, gk_last_error());
        return NULL;
    }
    gk_pool *pool = get_pool(device, 1, &rc, "gk_torch_malloc");
    gk_stream *st = NULL;
    if (pool)
        rc = stream_for(device, stream, &st);
    void *ptr = NULL;
    if (pool && rc == 0) {
        rc = gk_pool_malloc(pool, (size_t)size, st, &ptr);
        if (rc == GK_EDEVOOM)
            return oom(pool, device);
    }
    if (rc) {
        keep_report(device, rc, gk_last_error());
        return NULL;
    }
    return ptr;
}

void *gk__torch_malloc_quiet(ssize_t size, int device, void *stream, char **text, int *code)
{
    t_raising = 1;
    t_text = NULL;
    t_code = 0;
    void *p = gk_torch_malloc(size, device, stream);
    t_raising = 0;
    *text = t_text; /* NULL on success, or when the copy failed */
    *code = t_code;
    t_text = NULL;
    return p;
}

void gk_torch_free(void *ptr, ssize_t size, int device, void *stream)
{
    (void)size;
    (void)stream;
    if (!ptr)
        return;
    int rc;
    gk_pool *pool = get_pool(device, 0, &rc, "gk_torch_free");
    if (!pool) {
        gk_logger lg = shim_logger();
        gk_log(&lg, GK_LOG_WARN, "torch", "gk_torch_free(%p) on device %d: %s", ptr, device,
               rc ? gk_last_error() : "the device has no pool (the pointer is not gpukit's)");
        return;
    }
    (void)gk_pool_free(pool, ptr); /* an unknown pointer is counted and logged by the pool */
}

/* --- settings and the side API ------------------------------------------------------------- */

static char *dup_or_null(const char *text)
{
    return text && *text ? strdup(text) : NULL;
}

int gk_torch_configure(const char *preset, const char *conf)
{
    gk_pool_config cfg;
    int rc = make_config(preset, conf, &cfg);
    if (rc)
        return rc;
    char *p = dup_or_null(preset), *c = dup_or_null(conf);
    if ((preset && *preset && !p) || (conf && *conf && !c)) {
        free(p);
        free(c);
        return gk__error(-ENOMEM, "gk_torch_configure: out of host memory");
    }
    pthread_mutex_lock(&g_lock);
    if (g_pools > 0) {
        pthread_mutex_unlock(&g_lock);
        free(p);
        free(c);
        return gk__error(-EBUSY,
                         "gk_torch_configure: a pool already exists; choose the settings before "
                         "the first CUDA allocation (gpukit.torch.use_gpukit_allocator at the top "
                         "of the script)");
    }
    free(g_preset);
    free(g_conf);
    g_preset = p;
    g_conf = c;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

int(gk_torch_get_stats)(int device, gk_pool_stats *out, size_t size)
{
    int rc;
    gk_pool *pool = get_pool(device, 1, &rc, "gk_torch_get_stats");
    return pool ? (gk_pool_get_stats)(pool, out, size) : rc;
}

int gk_torch_stats_json(int device, FILE *out)
{
    gk_pool_stats st;
    int rc = gk_torch_get_stats(device, &st);
    return rc ? rc : gk_pool_stats_json(&st, out);
}

int gk_torch_summary(int device, FILE *out)
{
    int rc;
    gk_pool *pool = get_pool(device, 1, &rc, "gk_torch_summary");
    return pool ? gk_pool_summary(pool, out) : rc;
}

int gk_torch_snapshot_json(int device, FILE *out)
{
    int rc;
    gk_pool *pool = get_pool(device, 1, &rc, "gk_torch_snapshot_json");
    return pool ? gk_pool_snapshot_json(pool, out) : rc;
}

/* Runs `fn` on the pool of `device` when it has one (nothing to reset otherwise). */
static int on_existing_pool(int device, void (*fn)(gk_pool *), const char *name)
{
    int rc;
    gk_pool *pool = get_pool(device, 0, &rc, name);
    if (pool)
        fn(pool);
    return rc;
}

int gk_torch_reset_peak(int device)
{
    return on_existing_pool(device, gk_pool_reset_peak, "gk_torch_reset_peak");
}

int gk_torch_reset_accumulated(int device)
{
    return on_existing_pool(device, gk_pool_reset_accumulated, "gk_torch_reset_accumulated");
}

int gk_torch_empty_cache(int device)
{
    int rc;
    gk_pool *pool = get_pool(device, 0, &rc, "gk_torch_empty_cache");
    return pool ? gk_pool_empty_cache(pool) : rc;
}

int gk_torch_record_stream(void *ptr, int device, void *stream)
{
    int rc;
    gk_pool *pool = get_pool(device, 0, &rc, "gk_torch_record_stream");
    if (!pool)
        return rc ? rc
                  : gk__error(-EINVAL,
                              "gk_torch_record_stream: device %d has no pool, so %p is not a "
                              "block of gpukit's allocator",
                              device, ptr);
    gk_stream *st;
    rc = stream_for(device, stream, &st);
    return rc ? rc : gk_pool_record_stream(pool, ptr, st);
}

int gk_torch_mem_info(int device, size_t *free_bytes, size_t *total_bytes)
{
    int rc;
    gk_pool *pool = get_pool(device, 1, &rc, "gk_torch_mem_info");
    return pool ? gk_device_mem_info(gk_pool_device(pool), free_bytes, total_bytes) : rc;
}

size_t gk_torch_last_report(char *buf, size_t len, int *code)
{
    pthread_mutex_lock(&g_lock);
    size_t n = g_report_len;
    if (code)
        *code = g_report_code;
    if (buf && len > 0) {
        size_t k = n < len - 1 ? n : len - 1;
        if (k)
            memcpy(buf, g_report, k);
        buf[k] = '\0';
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}

const char *gk_torch_last_error(void)
{
    return gk_last_error();
}

int gk_torch_shutdown(void)
{
    pthread_once(&g_slots_once, init_slots);
    for (int d = 0; d < GK_TORCH_MAX_DEVICES; d++) {
        slot *s = &g_slots[d];
        pthread_mutex_lock(&s->lock);
        gk_pool *pool = atomic_exchange(&s->pool, NULL);
        gk_pool_destroy(pool);
        for (size_t i = 0; i < s->nstreams; i++)
            (void)gk_stream_destroy(s->dev, s->streams[i].stream);
        free(s->streams);
        s->streams = NULL;
        s->nstreams = s->capstreams = 0;
        gk_device_close(s->dev);
        s->dev = NULL;
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_lock(&g_lock);
    g_pools = 0;
    free(g_preset);
    free(g_conf);
    free(g_sim_spec);
    free(g_report);
    g_preset = g_conf = g_sim_spec = g_report = NULL;
    atomic_store(&g_sim_on, 0);
    g_report_len = 0;
    g_report_code = 0;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* --- test-only switch ------------------------------------------------------------------------ */

int gk_torch_test_use_sim(const char *spec)
{
    if (spec && strncmp(spec, "sim", 3) != 0)
        return gk__error(-EINVAL,
                         "gk_torch_test_use_sim: \"%s\" is not a sim device spec (try "
                         "\"sim:capacity=1GiB\"; NULL switches back to cuda)",
                         spec);
    char *copy = spec ? strdup(spec) : NULL;
    if (spec && !copy)
        return gk__error(-ENOMEM, "gk_torch_test_use_sim: out of host memory");
    pthread_mutex_lock(&g_lock);
    if (g_pools > 0) {
        pthread_mutex_unlock(&g_lock);
        free(copy);
        return gk__error(-EBUSY, "gk_torch_test_use_sim: a pool already exists (call "
                                 "gk_torch_shutdown first)");
    }
    free(g_sim_spec);
    g_sim_spec = copy;
    atomic_store(&g_sim_on, copy != NULL);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

int gk_torch_test_stream_create(int device, void **stream)
{
    if (!stream)
        return gk__error(-EINVAL, "gk_torch_test_stream_create: stream is NULL");
    *stream = NULL;
    if (!sim_mode())
        return gk__error(GK_EUNAVAIL, "gk_torch_test_stream_create: the test switch is off "
                                      "(gk_torch_test_use_sim)");
    int rc;
    if (!get_pool(device, 1, &rc, "gk_torch_test_stream_create"))
        return rc;
    gk_stream *st = NULL;
    rc = gk_stream_create(g_slots[device].dev, &st);
    *stream = st;
    return rc;
}

int gk_torch_test_stream_destroy(int device, void *stream)
{
    if (!sim_mode())
        return gk__error(GK_EUNAVAIL, "gk_torch_test_stream_destroy: the test switch is off "
                                      "(gk_torch_test_use_sim)");
    int rc;
    if (!get_pool(device, 0, &rc, "gk_torch_test_stream_destroy"))
        return rc ? rc
                  : gk__error(-EINVAL, "gk_torch_test_stream_destroy: device %d has no pool",
                              device);
    return gk_stream_destroy(g_slots[device].dev, stream);
}
