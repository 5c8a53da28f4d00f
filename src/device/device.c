/* The device layer's public functions: spec dispatch, argument checks, counters, the registry of
 * live allocations, and the handle lists that gk_device_close() cleans up. The backends
 * (backend_host.c, backend_sim.c, backend_cuda.c) do the raw work. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "device/device_int.h"
#include "gpukit/options.h"

static const gk__backend_ops *const backends[] = {&gk__backend_host, &gk__backend_sim,
                                                  &gk__backend_cuda};

#define COUNT(dev, name, n)                                                                        \
    atomic_fetch_add_explicit(&(dev)->counters.name, (n), memory_order_relaxed)

uint64_t gk__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void gk__poll_backoff(unsigned *round)
{
    unsigned r = *round < 10 ? *round : 10;
    struct timespec ts = {0, 1000L << r}; /* 1 us .. ~1 ms */
    nanosleep(&ts, NULL);
    (*round)++;
}

double gk__device_timeout(const gk_device *dev, double timeout)
{
    return timeout >= 0 ? timeout : dev->cfg.sync_timeout;
}

int gk__device_error(gk_device *dev, int rc, const char *fmt, ...)
{
    (void)dev;
    va_list ap;
    va_start(ap, fmt);
    gk__verror(rc, fmt, ap);
    va_end(ap);
    return rc;
}

/* Counts a failure; returns rc unchanged. */
static int failed(gk_device *dev, int rc)
{
    if (rc != 0 && rc != GK_ENOTREADY)
        COUNT(dev, errors, 1);
    return rc;
}

/* --- pointer registry ---------------------------------------------------------------------- */

static size_t ptr_hash(uintptr_t p, size_t cap)
{
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static int ptrmap_grow(gk__ptrmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    uintptr_t *keys = gk__calloc(ncap, sizeof *keys);
    size_t *sizes = gk__calloc(ncap, sizeof *sizes);
    if (!keys || !sizes) {
        free(keys);
        free(sizes);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] <= 1)
            continue;
        size_t j = ptr_hash(m->keys[i], ncap);
        while (keys[j])
            j = (j + 1) & (ncap - 1);
        keys[j] = m->keys[i];
        sizes[j] = m->sizes[i];
    }
    free(m->keys);
    free(m->sizes);
    m->keys = keys;
    m->sizes = sizes;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

int gk__ptrmap_put(gk__ptrmap *m, const void *ptr, size_t size)
{
    if ((m->used + 1) * 4 >= m->cap * 3) {
        int rc = ptrmap_grow(m);
        if (rc)
            return rc;
    }
    uintptr_t k = (uintptr_t)ptr;
    size_t j = ptr_hash(k, m->cap);
    while (m->keys[j] > 1)
        j = (j + 1) & (m->cap - 1);
    if (m->keys[j] == 0)
        m->used++;
    m->keys[j] = k;
    m->sizes[j] = size;
    m->count++;
    return 0;
}

int gk__ptrmap_take(gk__ptrmap *m, const void *ptr, size_t *size)
{
    uintptr_t k = (uintptr_t)ptr;
    if (!m->cap || k <= 1)
        return -ENOENT;
    size_t j = ptr_hash(k, m->cap);
    while (m->keys[j]) {
        if (m->keys[j] == k) {
            if (size)
                *size = m->sizes[j];
            m->keys[j] = 1;
            m->count--;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return -ENOENT;
}

void gk__ptrmap_free(gk__ptrmap *m)
{
    free(m->keys);
    free(m->sizes);
    memset(m, 0, sizeof *m);
}

/* --- open and close ------------------------------------------------------------------------ */

void(gk_device_config_default)(gk_device_config *cfg, size_t size)
{
    gk_device_config d;
    memset(&d, 0, sizeof d);
    gk_logger_default(&d.logger);
    d.sync_timeout = 60.0;
    (void)gk__sized_put(cfg, size, &d, sizeof d, "gk_device_config");
}

const char *gk_device_open_error(void)
{
    return gk_last_error();
}

static int open_backend(const gk__backend_ops *ops, const gk__spec *spec, const char *text,
                        const gk_device_config *cfg, gk_device **out)
{
    gk_device *dev = gk__calloc(1, sizeof *dev);
    if (!dev)
        return gk__device_error(NULL, -ENOMEM, "device: out of host memory");
    dev->ops = ops;
    dev->cfg = *cfg;
    const char *lib = cfg->cuda_library;
    if (!lib || !*lib)
        lib = "libcuda.so.1";
    snprintf(dev->cuda_library, sizeof dev->cuda_library, "%s", lib);
    dev->cfg.cuda_library = dev->cuda_library;
    snprintf(dev->spec, sizeof dev->spec, "%s", text);
    pthread_mutex_init(&dev->lock, NULL);
    int rc = ops->open(dev, spec);
    if (rc != 0) {
        /* The backend wrote the reason into the thread's message. */
        pthread_mutex_destroy(&dev->lock);
        free(dev);
        return rc;
    }
    *out = dev;
    return 0;
}

int gk_device_open_ex(const char *spec_text, const gk_device_config *cfg_in, gk_device **out)
{
    gk_device_config cfg;
    gk__spec spec;
    char err[256];
    if (!out)
        return gk__device_error(NULL, -EINVAL, "gk_device_open: out is NULL");
    *out = NULL;
    if (!cfg_in)
        return gk_device_open(spec_text, out);
    gk_device_config_default(&cfg);
    int rc = gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_device_config");
    if (rc)
        return rc;
    if (!(cfg.sync_timeout >= 0 && cfg.sync_timeout <= 1e9))
        return gk__error(-EINVAL,
                         "gk_device_config: sync_timeout %g is outside [0, 1e9] seconds (try 60)",
                         cfg.sync_timeout);
    if (!spec_text || !*spec_text)
        spec_text = "auto";
    rc = gk__spec_parse(spec_text, &spec, err, sizeof err);
    if (rc)
        return gk__device_error(NULL, rc, "%s", err);

    if (strcmp(spec.kind, "auto") == 0) {
        if (spec.nkeys || spec.index >= 0)
            return gk__device_error(NULL, -EINVAL,
                                    "device spec \"%s\": auto takes no arguments (try auto or "
                                    "cuda:1)",
                                    spec_text);
        gk__spec cuda_spec = spec, host_spec = spec;
        snprintf(cuda_spec.kind, sizeof cuda_spec.kind, "cuda");
        cuda_spec.index = 0;
        snprintf(host_spec.kind, sizeof host_spec.kind, "host");
        rc = open_backend(&gk__backend_cuda, &cuda_spec, "cuda:0", &cfg, out);
        if (rc == 0)
            return 0;
        char why[512];
        snprintf(why, sizeof why, "%s", gk_last_error());
        rc = open_backend(&gk__backend_host, &host_spec, "host", &cfg, out);
        if (rc)
            return rc;
        snprintf((*out)->auto_reason, sizeof(*out)->auto_reason,
                 "cuda:0 unavailable (%s); using host", why);
        gk_log(&cfg.logger, GK_LOG_INFO, "device", "auto: %s", (*out)->auto_reason);
        return 0;
    }
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        if (strcmp(spec.kind, backends[i]->name) == 0)
            return open_backend(backends[i], &spec, spec_text, &cfg, out);
    }
    return gk__device_error(NULL, -EINVAL,
                            "device spec \"%s\": unknown backend \"%s\" (try auto, host, cuda:0 "
                            "or sim:capacity=16GiB)",
                            spec_text, spec.kind);
}

int gk_device_open(const char *spec, gk_device **out)
{
    gk_device_config cfg;
    gk_device_config_default(&cfg);
    if (!out)
        return gk__device_error(NULL, -EINVAL, "gk_device_open: out is NULL");
    *out = NULL;
    int rc = gk_device_config_from_env(&cfg);
    if (rc)
        return rc;
    if (!spec || !*spec)
        spec = getenv("GK_DEVICE");
    return gk_device_open_ex(spec, &cfg, out);
}

void gk_device_close(gk_device *dev)
{
    if (!dev)
        return;
    while (dev->streams)
        (void)gk_stream_destroy(dev, (gk_stream *)dev->streams);
    while (dev->events)
        (void)gk_event_destroy(dev, (gk_event *)dev->events);
    (void)dev->ops->device_sync(dev, gk__device_timeout(dev, -1));
    size_t leaked = 0, nleaked = 0;
    for (size_t i = 0; i < dev->dmem.cap; i++) {
        if (dev->dmem.keys[i] > 1) {
            leaked += dev->dmem.sizes[i];
            nleaked++;
            (void)dev->ops->free(dev, (void *)dev->dmem.keys[i], dev->dmem.sizes[i]);
        }
    }
    if (nleaked)
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "%s closed with %zu device allocations (%zu bytes) still live; freed them",
               dev->spec, nleaked, leaked);
    for (size_t i = 0; i < dev->hmem.cap; i++) {
        if (dev->hmem.keys[i] > 1)
            (void)dev->ops->host_free(dev, (void *)dev->hmem.keys[i], dev->hmem.sizes[i]);
    }
    dev->ops->close(dev);
    gk__ptrmap_free(&dev->dmem);
    gk__ptrmap_free(&dev->hmem);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

const char *gk_device_last_error(const gk_device *dev)
{
    (void)dev;
    return gk_last_error();
}

const char *gk_device_auto_reason(const gk_device *dev)
{
    return dev ? dev->auto_reason : "";
}

int(gk_device_get_props)(gk_device *dev, gk_device_props *out, size_t size)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_device_get_props: dev is NULL");
    int rc = gk__sized_check(out, size, "gk_device_props");
    if (rc)
        return rc;
    gk_device_props props;
    memset(&props, 0, sizeof props);
    props.backend = dev->ops->kind;
    props.backend_name = dev->ops->name;
    snprintf(props.spec, sizeof props.spec, "%s", dev->spec);
    rc = failed(dev, dev->ops->props(dev, &props));
    if (rc == 0)
        rc = gk__sized_put(out, size, &props, sizeof props, "gk_device_props");
    return rc;
}

int gk_device_mem_info(gk_device *dev, size_t *free_bytes, size_t *total_bytes)
{
    size_t f = 0, t = 0;
    if (!dev)
        return gk__error(-EINVAL, "gk_device_mem_info: dev is NULL");
    int rc = dev->ops->mem_info(dev, &f, &t);
    if (rc)
        return failed(dev, rc);
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return 0;
}

/* --- memory ------------------------------------------------------------------------------- */

int gk_device_malloc(gk_device *dev, size_t size, void **ptr)
{
    if (!dev || !ptr)
        return gk__error(-EINVAL, "gk_device_malloc: dev or ptr is NULL");
    *ptr = NULL;
    if (size == 0)
        return failed(dev, gk__device_error(dev, -EINVAL, "gk_device_malloc: size is 0"));
    uint64_t t0 = gk__now_ns();
    void *p = NULL;
    int rc = dev->ops->malloc(dev, size, &p);
    COUNT(dev, alloc_ns, gk__now_ns() - t0);
    COUNT(dev, malloc_calls, 1);
    if (rc)
        return failed(dev, rc);
    pthread_mutex_lock(&dev->lock);
    rc = gk__ptrmap_put(&dev->dmem, p, size);
    pthread_mutex_unlock(&dev->lock);
    if (rc) {
        (void)dev->ops->free(dev, p, size);
        return failed(dev, rc);
    }
    COUNT(dev, malloc_bytes, size);
    *ptr = p;
    return 0;
}

int gk_device_free(gk_device *dev, void *ptr)
{
    size_t size;
    if (!dev)
        return gk__error(-EINVAL, "gk_device_free: dev is NULL");
    if (!ptr)
        return 0;
    pthread_mutex_lock(&dev->lock);
    int rc = gk__ptrmap_take(&dev->dmem, ptr, &size);
    pthread_mutex_unlock(&dev->lock);
    if (rc)
        return failed(dev, gk__device_error(dev, -EINVAL,
                                            "gk_device_free: %p is not a live device allocation "
                                            "(double free or foreign pointer)",
                                            ptr));
    uint64_t t0 = gk__now_ns();
    rc = dev->ops->free(dev, ptr, size);
    COUNT(dev, alloc_ns, gk__now_ns() - t0);
    COUNT(dev, free_calls, 1);
    return failed(dev, rc);
}

int gk_device_host_alloc(gk_device *dev, size_t size, void **ptr)
{
    if (!dev || !ptr)
        return gk__error(-EINVAL, "gk_device_host_alloc: dev or ptr is NULL");
    *ptr = NULL;
    if (size == 0)
        return failed(dev, gk__device_error(dev, -EINVAL, "gk_device_host_alloc: size is 0"));
    void *p = NULL;
    int rc = dev->ops->host_alloc(dev, size, &p);
    COUNT(dev, host_alloc_calls, 1);
    if (rc)
        return failed(dev, rc);
    pthread_mutex_lock(&dev->lock);
    rc = gk__ptrmap_put(&dev->hmem, p, size);
    pthread_mutex_unlock(&dev->lock);
    if (rc) {
        (void)dev->ops->host_free(dev, p, size);
        return failed(dev, rc);
    }
    *ptr = p;
    return 0;
}

int gk_device_host_free(gk_device *dev, void *ptr)
{
    size_t size;
    if (!dev)
        return gk__error(-EINVAL, "gk_device_host_free: dev is NULL");
    if (!ptr)
        return 0;
    pthread_mutex_lock(&dev->lock);
    int rc = gk__ptrmap_take(&dev->hmem, ptr, &size);
    pthread_mutex_unlock(&dev->lock);
    if (rc)
        return failed(dev, gk__device_error(dev, -EINVAL,
                                            "gk_device_host_free: %p is not a live pinned "
                                            "allocation",
                                            ptr));
    COUNT(dev, host_free_calls, 1);
    return failed(dev, dev->ops->host_free(dev, ptr, size));
}

/* --- handles ------------------------------------------------------------------------------ */

/* Links `h` (whose impl is made) into `*list` as a handle of `dev`. */
static void handle_link(gk_device *dev, gk__handle **list, gk__handle *h)
{
    h->dev = dev;
    pthread_mutex_lock(&dev->lock);
    h->next = *list;
    if (*list)
        (*list)->prev = h;
    *list = h;
    pthread_mutex_unlock(&dev->lock);
}

/* Allocates a handle of `size` bytes (a gk_stream or gk_event), has the backend create its impl,
 * and links it into `*list`. */
static int handle_open(gk_device *dev, gk__handle **list, size_t size,
                       int (*create)(gk_device *, void **), const char *fn, gk__handle **out)
{
    gk__handle *h = gk__calloc(1, size);
    if (!h)
        return gk__device_error(dev, -ENOMEM, "%s: out of host memory", fn);
    int rc = create(dev, &h->impl);
    if (rc) {
        free(h);
        return rc;
    }
    handle_link(dev, list, h);
    *out = h;
    return 0;
}

/* Unlinks `h` from `*list`; the caller holds dev->lock. */
static void handle_unlink(gk__handle **list, gk__handle *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        *list = h->next;
    if (h->next)
        h->next->prev = h->prev;
}

/* --- streams ------------------------------------------------------------------------------ */

static void *stream_impl(gk_stream *s)
{
    return s ? s->h.impl : NULL;
}

/* A stream argument must belong to `dev`. */
static int check_stream(gk_device *dev, gk_stream *s, const char *fn)
{
    if (s && s->h.dev != dev)
        return gk__device_error(dev, -EINVAL, "%s: the stream belongs to another device", fn);
    return 0;
}

int gk_stream_create(gk_device *dev, gk_stream **out)
{
    gk__handle *h = NULL;
    if (!dev || !out)
        return gk__error(-EINVAL, "gk_stream_create: dev or out is NULL");
    *out = NULL;
    int rc = handle_open(dev, &dev->streams, sizeof(gk_stream), dev->ops->stream_create,
                         "gk_stream_create", &h);
    if (rc)
        return failed(dev, rc);
    COUNT(dev, stream_creates, 1);
    *out = (gk_stream *)h;
    return 0;
}

int gk_stream_wrap(gk_device *dev, void *native, gk_stream **out)
{
    if (out)
        *out = NULL;
    if (!dev || !out)
        return gk__error(-EINVAL, "gk_stream_wrap: dev or out is NULL");
    if (!native)
        return gk__device_error(dev, -EINVAL,
                                "gk_stream_wrap: the native stream is NULL (pass a NULL gk_stream "
                                "for the device's default stream instead)");
    if (!dev->ops->stream_wrap)
        return failed(dev, gk__device_error(dev, GK_EUNAVAIL,
                                            "gk_stream_wrap: a %s device has no native streams "
                                            "(only cuda wraps one)",
                                            dev->ops->name));
    gk__handle *h = gk__calloc(1, sizeof(gk_stream));
    if (!h)
        return gk__device_error(dev, -ENOMEM, "gk_stream_wrap: out of host memory");
    int rc = dev->ops->stream_wrap(dev, native, &h->impl);
    if (rc) {
        free(h);
        return failed(dev, rc);
    }
    handle_link(dev, &dev->streams, h);
    COUNT(dev, stream_creates, 1);
    *out = (gk_stream *)h;
    return 0;
}

int gk_stream_destroy(gk_device *dev, gk_stream *s)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_stream_destroy: dev is NULL");
    if (!s)
        return 0;
    int rc = check_stream(dev, s, "gk_stream_destroy");
    if (rc)
        return failed(dev, rc);
    /* Let the work finish so hooks can hand back memory the stream used. */
    int sync_rc = dev->ops->stream_sync(dev, s->h.impl, gk__device_timeout(dev, -1));
    gk_stream_hook_fn fns[GK__MAX_STREAM_HOOKS];
    void *users[GK__MAX_STREAM_HOOKS];
    pthread_mutex_lock(&dev->lock);
    int n = dev->nhooks;
    for (int i = 0; i < n; i++) {
        fns[i] = dev->hooks[i].fn;
        users[i] = dev->hooks[i].user;
    }
    handle_unlink(&dev->streams, &s->h);
    pthread_mutex_unlock(&dev->lock);
    for (int i = 0; i < n; i++)
        fns[i](users[i], s);
    rc = dev->ops->stream_destroy(dev, s->h.impl);
    free(s);
    COUNT(dev, stream_destroys, 1);
    return failed(dev, rc ? rc : sync_rc);
}

int gk_stream_synchronize(gk_device *dev, gk_stream *s, double timeout)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_stream_synchronize: dev is NULL");
    int rc = check_stream(dev, s, "gk_stream_synchronize");
    if (rc)
        return failed(dev, rc);
    COUNT(dev, stream_syncs, 1);
    return failed(dev,
                  dev->ops->stream_sync(dev, stream_impl(s), gk__device_timeout(dev, timeout)));
}

int gk_stream_wait_event(gk_device *dev, gk_stream *s, gk_event *ev)
{
    if (!dev || !ev)
        return gk__error(-EINVAL, "gk_stream_wait_event: dev or ev is NULL");
    int rc = check_stream(dev, s, "gk_stream_wait_event");
    if (rc)
        return failed(dev, rc);
    if (ev->h.dev != dev)
        return failed(dev, gk__device_error(dev, -EINVAL,
                                            "gk_stream_wait_event: the event belongs to another "
                                            "device"));
    COUNT(dev, stream_waits, 1);
    return failed(dev, dev->ops->stream_wait(dev, stream_impl(s), ev->h.impl));
}

int gk_stream_host_fn(gk_device *dev, gk_stream *s, void (*fn)(void *user), void *user)
{
    if (!dev || !fn)
        return gk__error(-EINVAL, "gk_stream_host_fn: dev or fn is NULL");
    int rc = check_stream(dev, s, "gk_stream_host_fn");
    if (rc)
        return failed(dev, rc);
    COUNT(dev, host_fns, 1);
    return failed(dev, dev->ops->host_fn(dev, stream_impl(s), fn, user));
}

int gk_device_synchronize(gk_device *dev, double timeout)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_device_synchronize: dev is NULL");
    COUNT(dev, stream_syncs, 1);
    return failed(dev, dev->ops->device_sync(dev, gk__device_timeout(dev, timeout)));
}

int gk_device_add_stream_hook(gk_device *dev, gk_stream_hook_fn fn, void *user)
{
    if (!dev || !fn)
        return gk__error(-EINVAL, "gk_device_add_stream_hook: dev or fn is NULL");
    int rc = 0;
    pthread_mutex_lock(&dev->lock);
    if (dev->nhooks == GK__MAX_STREAM_HOOKS) {
        rc = -ENOSPC;
    } else {
        dev->hooks[dev->nhooks].fn = fn;
        dev->hooks[dev->nhooks].user = user;
        dev->nhooks++;
    }
    pthread_mutex_unlock(&dev->lock);
    return rc;
}

int gk_device_remove_stream_hook(gk_device *dev, gk_stream_hook_fn fn, void *user)
{
    if (!dev || !fn)
        return gk__error(-EINVAL, "gk_device_remove_stream_hook: dev or fn is NULL");
    int rc = -ENOENT;
    pthread_mutex_lock(&dev->lock);
    for (int i = 0; i < dev->nhooks; i++) {
        if (dev->hooks[i].fn == fn && dev->hooks[i].user == user) {
            memmove(&dev->hooks[i], &dev->hooks[i + 1],
                    (size_t)(dev->nhooks - i - 1) * sizeof dev->hooks[0]);
            dev->nhooks--;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&dev->lock);
    return rc;
}

/* --- events ------------------------------------------------------------------------------- */

static int check_event(gk_device *dev, gk_event *ev, const char *fn)
{
    if (!ev)
        return gk__device_error(dev, -EINVAL, "%s: event is NULL", fn);
    if (ev->h.dev != dev)
        return gk__device_error(dev, -EINVAL, "%s: the event belongs to another device", fn);
    return 0;
}

int gk_event_create(gk_device *dev, gk_event **out)
{
    gk__handle *h = NULL;
    if (!dev || !out)
        return gk__error(-EINVAL, "gk_event_create: dev or out is NULL");
    *out = NULL;
    int rc = handle_open(dev, &dev->events, sizeof(gk_event), dev->ops->event_create,
                         "gk_event_create", &h);
    if (rc)
        return failed(dev, rc);
    COUNT(dev, event_creates, 1);
    *out = (gk_event *)h;
    return 0;
}

int gk_event_destroy(gk_device *dev, gk_event *ev)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_event_destroy: dev is NULL");
    if (!ev)
        return 0;
    int rc = check_event(dev, ev, "gk_event_destroy");
    if (rc)
        return failed(dev, rc);
    pthread_mutex_lock(&dev->lock);
    handle_unlink(&dev->events, &ev->h);
    pthread_mutex_unlock(&dev->lock);
    rc = dev->ops->event_destroy(dev, ev->h.impl);
    free(ev);
    COUNT(dev, event_destroys, 1);
    return failed(dev, rc);
}

int gk_event_record(gk_device *dev, gk_event *ev, gk_stream *s)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_event_record: dev is NULL");
    int rc = check_event(dev, ev, "gk_event_record");
    if (!rc)
        rc = check_stream(dev, s, "gk_event_record");
    if (rc)
        return failed(dev, rc);
    COUNT(dev, event_records, 1);
    return failed(dev, dev->ops->event_record(dev, ev->h.impl, stream_impl(s)));
}

int gk_event_query(gk_device *dev, gk_event *ev)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_event_query: dev is NULL");
    int rc = check_event(dev, ev, "gk_event_query");
    if (rc)
        return failed(dev, rc);
    COUNT(dev, event_queries, 1);
    return failed(dev, dev->ops->event_query(dev, ev->h.impl));
}

int gk_event_synchronize(gk_device *dev, gk_event *ev, double timeout)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_event_synchronize: dev is NULL");
    int rc = check_event(dev, ev, "gk_event_synchronize");
    if (rc)
        return failed(dev, rc);
    COUNT(dev, event_syncs, 1);
    return failed(dev, dev->ops->event_sync(dev, ev->h.impl, gk__device_timeout(dev, timeout)));
}

/* --- copies ------------------------------------------------------------------------------- */

static int copy_async(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                      gk_stream *s)
{
    if (!dev)
        return -EINVAL;
    if (!dst || !src)
        return failed(dev, gk__device_error(dev, -EINVAL, "memcpy: NULL source or destination"));
    int rc = check_stream(dev, s, "memcpy");
    if (rc)
        return failed(dev, rc);
    if (size == 0)
        return 0;
    switch (kind) {
    case GK__HTOD:
        COUNT(dev, copies_htod, 1);
        break;
    case GK__DTOH:
        COUNT(dev, copies_dtoh, 1);
        break;
    case GK__DTOD:
        COUNT(dev, copies_dtod, 1);
        break;
    }
    COUNT(dev, copy_bytes, size);
    return failed(dev, dev->ops->memcpy_async(dev, kind, dst, src, size, stream_impl(s)));
}

int gk_memcpy_htod_async(gk_device *dev, void *dst, const void *src, size_t size, gk_stream *s)
{
    return copy_async(dev, GK__HTOD, dst, src, size, s);
}

int gk_memcpy_dtoh_async(gk_device *dev, void *dst, const void *src, size_t size, gk_stream *s)
{
    return copy_async(dev, GK__DTOH, dst, src, size, s);
}

int gk_memcpy_dtod_async(gk_device *dev, void *dst, const void *src, size_t size, gk_stream *s)
{
    return copy_async(dev, GK__DTOD, dst, src, size, s);
}

/* --- virtual memory ----------------------------------------------------------------------- */

static int vm_unavailable(gk_device *dev)
{
    return failed(dev, gk__device_error(dev, GK_EUNAVAIL,
                                        "%s has no virtual-memory API (use sim or a CUDA driver "
                                        "with cuMemCreate)",
                                        dev->spec));
}

int gk_device_vm_reserve(gk_device *dev, size_t size, void **base)
{
    if (!dev || !base || size == 0)
        return gk__error(-EINVAL, "gk_device_vm_reserve: dev is NULL or base is NULL or size is 0");
    *base = NULL;
    if (!dev->ops->vm_reserve)
        return vm_unavailable(dev);
    COUNT(dev, vm_reserves, 1);
    return failed(dev, dev->ops->vm_reserve(dev, size, base));
}

int gk_device_vm_map(gk_device *dev, void *addr, size_t size)
{
    if (!dev || !addr || size == 0)
        return gk__error(-EINVAL, "gk_device_vm_map: dev is NULL or addr is NULL or size is 0");
    if (!dev->ops->vm_map)
        return vm_unavailable(dev);
    uint64_t t0 = gk__now_ns();
    int rc = dev->ops->vm_map(dev, addr, size);
    COUNT(dev, alloc_ns, gk__now_ns() - t0);
    COUNT(dev, vm_maps, 1);
    return failed(dev, rc);
}

int gk_device_vm_unmap(gk_device *dev, void *addr, size_t size)
{
    if (!dev || !addr || size == 0)
        return gk__error(-EINVAL, "gk_device_vm_unmap: dev is NULL or addr is NULL or size is 0");
    if (!dev->ops->vm_unmap)
        return vm_unavailable(dev);
    uint64_t t0 = gk__now_ns();
    int rc = dev->ops->vm_unmap(dev, addr, size);
    COUNT(dev, alloc_ns, gk__now_ns() - t0);
    COUNT(dev, vm_unmaps, 1);
    return failed(dev, rc);
}

int gk_device_vm_release(gk_device *dev, void *base, size_t size)
{
    if (!dev || !base || size == 0)
        return gk__error(-EINVAL, "gk_device_vm_release: dev is NULL or base is NULL or size is 0");
    if (!dev->ops->vm_release)
        return vm_unavailable(dev);
    COUNT(dev, vm_releases, 1);
    return failed(dev, dev->ops->vm_release(dev, base, size));
}

int(gk_device_get_counters)(gk_device *dev, gk_device_counters *out, size_t size)
{
    if (!dev)
        return gk__error(-EINVAL, "gk_device_get_counters: dev is NULL");
    gk_device_counters c = {.size = sizeof c};
#define GK__COUNTER_READ(name, desc)                                                               \
    c.name = atomic_load_explicit(&dev->counters.name, memory_order_relaxed);
    GK_DEVICE_COUNTER_MAP(GK__COUNTER_READ)
#undef GK__COUNTER_READ
    return gk__sized_put(out, size, &c, sizeof c, "gk_device_counters");
}
