/* Private interface between the device layer (device.c) and its backends.
 *
 * device.c owns the public handles, argument checks, counters, the allocation registry and the
 * error text; a backend implements the raw operations on its own state (dev->impl, and the impl
 * pointers of streams and events). The backend never sees a gk_stream: it gets the stream's impl,
 * NULL for the default stream. */
#ifndef GK_DEVICE_INT_H
#define GK_DEVICE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "gpukit/device.h"

#define GK__MAX_STREAM_HOOKS 16
#define GK__SPEC_MAX_KEYS    32

/* A parsed spec: "kind[:arg][,key=value...]". For cuda, `index` holds N; for sim the keys. */
typedef struct gk__spec {
    char kind[16];
    int index; /* cuda:N; -1 when absent */
    int nkeys;
    char keys[GK__SPEC_MAX_KEYS][32];
    char values[GK__SPEC_MAX_KEYS][64];
} gk__spec;

/* Parses `text`. On error returns -EINVAL and writes a message naming the problem into err. */
int gk__spec_parse(const char *text, gk__spec *spec, char *err, size_t errlen);

typedef enum gk__copy_kind { GK__HTOD, GK__DTOH, GK__DTOD } gk__copy_kind;

typedef struct gk__backend_ops {
    const char *name;
    gk_backend_kind kind;
    /* Sets dev->impl. On failure writes the reason with gk__device_error and returns non-zero. */
    int (*open)(gk_device *dev, const gk__spec *spec);
    void (*close)(gk_device *dev);
    int (*props)(gk_device *dev, gk_device_props *props);
    int (*mem_info)(gk_device *dev, size_t *free_bytes, size_t *total_bytes);
    int (*malloc)(gk_device *dev, size_t size, void **ptr);
    int (*free)(gk_device *dev, void *ptr, size_t size);
    int (*host_alloc)(gk_device *dev, size_t size, void **ptr);
    int (*host_free)(gk_device *dev, void *ptr, size_t size);
    int (*stream_create)(gk_device *dev, void **impl);
    int (*stream_destroy)(gk_device *dev, void *impl);
    int (*stream_sync)(gk_device *dev, void *impl, double timeout);
    int (*stream_wait)(gk_device *dev, void *stream_impl, void *event_impl);
    int (*host_fn)(gk_device *dev, void *stream_impl, void (*fn)(void *), void *user);
    int (*device_sync)(gk_device *dev, double timeout);
    int (*event_create)(gk_device *dev, void **impl);
    int (*event_destroy)(gk_device *dev, void *impl);
    int (*event_record)(gk_device *dev, void *event_impl, void *stream_impl);
    int (*event_query)(gk_device *dev, void *impl);
    int (*event_sync)(gk_device *dev, void *impl, double timeout);
    int (*memcpy_async)(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                        void *stream_impl);
    /* Optional (NULL: GK_EUNAVAIL). */
    int (*vm_reserve)(gk_device *dev, size_t size, void **base);
    int (*vm_map)(gk_device *dev, void *addr, size_t size);
    int (*vm_unmap)(gk_device *dev, void *addr, size_t size);
    int (*vm_release)(gk_device *dev, void *base, size_t size);
    /* Optional (NULL: GK_EUNAVAIL): a stream impl over a native stream the caller owns; the
     * backend's stream_destroy must then leave the native stream alone. */
    int (*stream_wrap)(gk_device *dev, void *native, void **impl);
} gk__backend_ops;

extern const gk__backend_ops gk__backend_host;
extern const gk__backend_ops gk__backend_sim;
extern const gk__backend_ops gk__backend_cuda;

/* Streams and events share one shape: the device, the backend's impl, and a link in the device's
 * list of open handles (under dev->lock) so gk_device_close() can release what is left. */
typedef struct gk__handle {
    gk_device *dev;
    void *impl;
    struct gk__handle *next, *prev;
} gk__handle;

struct gk_stream {
    gk__handle h;
};

struct gk_event {
    gk__handle h;
};

/* Registry of live allocations: open addressing keyed by pointer. */
typedef struct gk__ptrmap {
    uintptr_t *keys; /* 0 = empty, 1 = deleted */
    size_t *sizes;
    size_t cap, count, used;
} gk__ptrmap;

struct gk_device {
    const gk__backend_ops *ops;
    void *impl;
    gk_device_config cfg;
    char cuda_library[256];
    char spec[128];
    char auto_reason[256];
    pthread_mutex_t lock; /* streams, events, registries, hooks; never held across a backend
                             call that can block */
    gk__handle *streams;  /* each is the h of a gk_stream */
    gk__handle *events;   /* each is the h of a gk_event */
    gk__ptrmap dmem, hmem;
    struct {
        gk_stream_hook_fn fn;
        void *user;
    } hooks[GK__MAX_STREAM_HOOKS];
    int nhooks;
    struct {
#define GK__COUNTER_ATOMIC(name, desc) _Atomic uint64_t name;
        GK_DEVICE_COUNTER_MAP(GK__COUNTER_ATOMIC)
#undef GK__COUNTER_ATOMIC
    } counters;
};

/* Records the calling thread's error message (gk_last_error, printf-style). Returns `rc` so a
 * backend can write `return gk__device_error(dev, GK_EDRIVER, "cuMemAlloc: %s", text);`. `dev`
 * may be NULL (open failures). */
int gk__device_error(gk_device *dev, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Monotonic clock in nanoseconds. */
uint64_t gk__now_ns(void);

/* The timeout a backend should use: `timeout` when >= 0, else the device's sync timeout. */
double gk__device_timeout(const gk_device *dev, double timeout);

/* Sleeps for a short, growing interval while polling (1 us doubling to 1 ms). */
void gk__poll_backoff(unsigned *round);

/* Pointer map used by the device layer and by backends that need their own registry. */
int gk__ptrmap_put(gk__ptrmap *m, const void *ptr, size_t size);
int gk__ptrmap_take(gk__ptrmap *m, const void *ptr, size_t *size); /* -ENOENT when absent */
void gk__ptrmap_free(gk__ptrmap *m);

#endif
