/* The host backend: device memory is host memory, every stream and event is always complete,
 * copies are memcpy and host functions run at once. It lets every part of gpukit run, and be
 * tested, on a machine without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "common/alloc.h"
#include "device/device_int.h"

#define HOST_ALIGN 256

/* A dummy non-NULL handle for streams and events: the host has no state for them. */
static char host_token;

static int host_open(gk_device *dev, const gk__spec *spec)
{
    if (spec->index > 0 || spec->nkeys > 0)
        return gk__device_error(
            dev, -EINVAL, "device spec \"%s\": host takes no arguments (try host)", dev->spec);
    snprintf(dev->spec, sizeof dev->spec, "host");
    dev->impl = &host_token;
    return 0;
}

static void host_close(gk_device *dev)
{
    dev->impl = NULL;
}

/* The CPU model from /proc/cpuinfo, or "host CPU". */
static void cpu_model(char *buf, size_t len)
{
    snprintf(buf, len, "host CPU");
    FILE *f = gk__fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ' || *c == '\t')
                    c++;
                snprintf(buf, len, "%s", c);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

static int host_mem_info(gk_device *dev, size_t *free_bytes, size_t *total_bytes)
{
    struct sysinfo si;
    if (sysinfo(&si) != 0)
        return gk__device_error(dev, -EIO, "sysinfo failed");
    *total_bytes = (size_t)si.totalram * si.mem_unit;
    /* MemAvailable counts reclaimable cache; sysinfo's freeram does not. */
    size_t avail = (size_t)si.freeram * si.mem_unit;
    FILE *f = gk__fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                avail = (size_t)kb * 1024;
                break;
            }
        }
        fclose(f);
    }
    *free_bytes = avail;
    return 0;
}

static int host_props(gk_device *dev, gk_device_props *p)
{
    size_t free_b, total;
    cpu_model(p->name, sizeof p->name);
    if (host_mem_info(dev, &free_b, &total) == 0)
        p->total_memory = total;
    p->index = 0;
    p->alloc_alignment = HOST_ALIGN;
    return 0;
}

static int host_malloc(gk_device *dev, size_t size, void **ptr)
{
    void *p = NULL;
    if (gk__posix_memalign(&p, HOST_ALIGN, size) != 0)
        return gk__device_error(dev, GK_EDEVOOM, "host: cannot allocate %zu bytes", size);
    *ptr = p;
    return 0;
}

static int host_free(gk_device *dev, void *ptr, size_t size)
{
    (void)dev;
    (void)size;
    free(ptr);
    return 0;
}

static int host_host_alloc(gk_device *dev, size_t size, void **ptr)
{
    void *p = NULL;
    if (gk__posix_memalign(&p, 4096, size) != 0)
        return gk__device_error(dev, -ENOMEM, "host: cannot allocate %zu bytes of host memory",
                                size);
    *ptr = p;
    return 0;
}

static int host_stream_create(gk_device *dev, void **impl)
{
    (void)dev;
    *impl = &host_token;
    return 0;
}

static int host_nothing(gk_device *dev, void *impl)
{
    (void)dev;
    (void)impl;
    return 0;
}

static int host_sync(gk_device *dev, void *impl, double timeout)
{
    (void)dev;
    (void)impl;
    (void)timeout;
    return 0;
}

static int host_stream_wait(gk_device *dev, void *s, void *e)
{
    (void)dev;
    (void)s;
    (void)e;
    return 0;
}

static int host_host_fn(gk_device *dev, void *s, void (*fn)(void *), void *user)
{
    (void)dev;
    (void)s;
    fn(user);
    return 0;
}

static int host_device_sync(gk_device *dev, double timeout)
{
    (void)dev;
    (void)timeout;
    return 0;
}

static int host_event_record(gk_device *dev, void *e, void *s)
{
    (void)dev;
    (void)e;
    (void)s;
    return 0;
}

static int host_memcpy(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                       void *s)
{
    (void)dev;
    (void)kind;
    (void)s;
    memmove(dst, src, size);
    return 0;
}

const gk__backend_ops gk__backend_host = {
    .name = "host",
    .kind = GK_BACKEND_HOST,
    .open = host_open,
    .close = host_close,
    .props = host_props,
    .mem_info = host_mem_info,
    .malloc = host_malloc,
    .free = host_free,
    .host_alloc = host_host_alloc,
    .host_free = host_free,
    .stream_create = host_stream_create,
    .stream_destroy = host_nothing,
    .stream_sync = host_sync,
    .stream_wait = host_stream_wait,
    .host_fn = host_host_fn,
    .device_sync = host_device_sync,
    .event_create = host_stream_create,
    .event_destroy = host_nothing,
    .event_record = host_event_record,
    .event_query = host_nothing,
    .event_sync = host_sync,
    .memcpy_async = host_memcpy,
};
