/* The sim backend: a simulated GPU with a set capacity, a first-fit address space (optionally
 * backed by real host memory), virtual-memory reservations, a latency model and fault injection.
 * Its streams and events (sim_stream.c) run work lazily, so a missing ordering edge in a caller
 * shows up as wrong data in its tests. One mutex guards the state; it is never held while a
 * real-clock latency is spent. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "device/sim_int.h"
#include "gpukit/options.h"

/* Device addresses of an unbacked sim: bit 55 set, so they are non-canonical on x86-64 and in
 * the kernel half on arm64; dereferencing one faults instead of touching host memory. */
#define FAKE_BASE (1ull << 55)

static uint64_t round_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) & ~(align - 1);
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double draw(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* Bytes for people, in one of the buffers of a message. */
typedef struct human {
    char a[32], b[32], c[32];
} human;

/* Spends a latency: always on the clock, and in real time unless clock=virtual. Called without
 * the lock. Short waits spin (nanosleep overshoots them by tens of microseconds). */
static void spend(gk__sim *s, uint64_t ns)
{
    if (!ns)
        return;
    atomic_fetch_add_explicit(&s->clock_ns, ns, memory_order_relaxed);
    if (s->cfg.virtual_clock)
        return;
    if (ns >= 100000) {
        struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
        while (nanosleep(&ts, &ts) != 0)
            ;
        return;
    }
    uint64_t end = gk__now_ns() + ns;
    while (gk__now_ns() < end)
        ;
}

/* --- faults and capacity ------------------------------------------------------------------ */

/* Decides, with the lock held, whether an allocation-type call (malloc, vm_map) of `size` bytes
 * may take memory. Returns 0 or GK_EDEVOOM with the reason in last_error. */
static int admit(gk_device *dev, gk__sim *s, uint64_t size, const char *what)
{
    const gk__sim_faults *f = &s->cfg.faults;
    uint64_t n = ++s->alloc_calls;
    uint64_t cap = s->cfg.capacity, avail = cap - s->used;
    /* Draw on every call so the sequence depends only on the seed and the call count. */
    int unlucky = f->prob > 0 && draw(&s->prng) < f->prob;
    if (f->alloc_nth && n == f->alloc_nth)
        return gk__device_error(dev, GK_EDEVOOM,
                                "sim: injected fault: %s of %llu bytes is allocation call #%llu "
                                "(fail_alloc_nth=%llu)",
                                what, (unsigned long long)size, (unsigned long long)n,
                                (unsigned long long)f->alloc_nth);
    if (unlucky)
        return gk__device_error(dev, GK_EDEVOOM,
                                "sim: injected fault: %s of %llu bytes failed at random "
                                "(fail_prob=%g, seed=%llu)",
                                what, (unsigned long long)size, f->prob,
                                (unsigned long long)f->seed);
    if (f->above_set && size > f->above)
        return gk__device_error(dev, GK_EDEVOOM,
                                "sim: injected fault: %s of %llu bytes is above fail_above=%llu",
                                what, (unsigned long long)size, (unsigned long long)f->above);
    if (f->after_set && (size > f->after_bytes || s->used > f->after_bytes - size))
        return gk__device_error(dev, GK_EDEVOOM,
                                "sim: injected fault: %s of %llu bytes would exceed "
                                "fail_after_bytes=%llu (%llu bytes in use; capacity %llu)",
                                what, (unsigned long long)size, (unsigned long long)f->after_bytes,
                                (unsigned long long)s->used, (unsigned long long)cap);
    if (size > avail) {
        human h;
        return gk__device_error(dev, GK_EDEVOOM,
                                "sim: device full: %s of %llu bytes (%s) requested, %llu bytes "
                                "(%s) free of %llu (%s) capacity",
                                what, (unsigned long long)size,
                                gk_format_size(size, h.a, sizeof h.a), (unsigned long long)avail,
                                gk_format_size(avail, h.b, sizeof h.b), (unsigned long long)cap,
                                gk_format_size(cap, h.c, sizeof h.c));
    }
    return 0;
}

/* --- open, close, properties -------------------------------------------------------------- */

static void sim_free_state(gk__sim *s)
{
    for (size_t i = 0; i < s->nres; i++)
        free(s->res[i].bits);
    free(s->res);
    gk__sim_space_destroy(&s->heap);
    gk__sim_space_destroy(&s->va);
    if (s->map)
        munmap(s->map, s->map_len);
    free(s);
}

/* Lays out device memory then the VM range, in host memory (backed) or at FAKE_BASE. */
static int sim_layout(gk_device *dev, gk__sim *s)
{
    const gk__sim_config *c = &s->cfg;
    uint64_t heap = c->capacity & ~(c->alignment - 1);
    uint64_t align = c->alignment > c->granularity ? c->alignment : c->granularity;
    uint64_t base = FAKE_BASE;
    if (c->backed) {
        s->map_len = (size_t)(round_up(heap, c->granularity) + c->va_size + align);
        s->map = gk__mmap(NULL, s->map_len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s->map == MAP_FAILED) {
            s->map = NULL;
            return gk__device_error(dev, -ENOMEM,
                                    "device spec \"%s\": backed=1 needs %llu bytes of host address "
                                    "space and mmap refused (%s); lower capacity or va_size",
                                    dev->spec, (unsigned long long)s->map_len, strerror(errno));
        }
        base = round_up((uint64_t)(uintptr_t)s->map, align);
    }
    if (gk__sim_space_init(&s->heap, base, heap) != 0 ||
        gk__sim_space_init(&s->va, round_up(base + heap, c->granularity), c->va_size) != 0)
        return gk__device_error(dev, -ENOMEM, "sim: out of host memory");
    return 0;
}

static int sim_open(gk_device *dev, const gk__spec *spec)
{
    char err[400];
    if (spec->index >= 0)
        return gk__device_error(dev, -EINVAL,
                                "device spec \"%s\": sim takes key=value settings, not a device "
                                "index (try sim or sim:capacity=16GiB)",
                                dev->spec);
    gk__sim *s = gk__calloc(1, sizeof *s);
    if (!s)
        return gk__device_error(dev, -ENOMEM, "sim: out of host memory");
    gk__sim_config_default(&s->cfg);
    int rc = gk__sim_config_apply(&s->cfg, spec, 0, err, sizeof err);
    if (rc) {
        free(s);
        return gk__device_error(dev, rc, "device spec \"%s\": %s", dev->spec, err);
    }
    rc = sim_layout(dev, s);
    if (rc)
        goto out_free;
    if (gk__sim_streams_init(s) != 0) {
        rc = gk__device_error(dev, -ENOMEM, "sim: out of host memory");
        goto out_free;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->mu, NULL);
    s->prng = s->cfg.faults.seed;
    s->alloc_latency_ns = (uint64_t)(s->cfg.alloc_latency_us * 1000.0 + 0.5);
    s->free_latency_ns = (uint64_t)(s->cfg.free_latency_us * 1000.0 + 0.5);
    long page = sysconf(_SC_PAGESIZE);
    s->page = page > 0 ? (size_t)page : 4096;
    gk__sim_config_format(&s->cfg, dev->spec, sizeof dev->spec);
    dev->impl = s;
    return 0;

out_free:
    sim_free_state(s);
    return rc;
}

static void sim_close(gk_device *dev)
{
    gk__sim *s = dev->impl;
    if (!s)
        return;
    if (s->nres)
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "%s closed with %zu virtual-memory reservations still held; released them",
               dev->spec, s->nres);
    gk__sim_streams_fini(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    sim_free_state(s);
    dev->impl = NULL;
}

static int sim_props(gk_device *dev, gk_device_props *p)
{
    gk__sim *s = dev->impl;
    snprintf(p->name, sizeof p->name, "%s", s->cfg.name[0] ? s->cfg.name : "gpukit sim");
    p->index = 0;
    p->total_memory = s->cfg.capacity;
    p->alloc_alignment = (size_t)s->cfg.alignment;
    p->has_vm = s->cfg.va_size > 0;
    p->vm_granularity = p->has_vm ? (size_t)s->cfg.granularity : 0;
    p->pinned_is_real = 0;
    return 0;
}

static int sim_mem_info(gk_device *dev, size_t *free_bytes, size_t *total_bytes)
{
    gk__sim *s = dev->impl;
    pthread_mutex_lock(&s->mu);
    *free_bytes = (size_t)(s->cfg.capacity - s->used);
    pthread_mutex_unlock(&s->mu);
    *total_bytes = (size_t)s->cfg.capacity;
    return 0;
}

/* --- device and host memory --------------------------------------------------------------- */

static int sim_malloc(gk_device *dev, size_t size, void **ptr)
{
    gk__sim *s = dev->impl;
    uint64_t rsize = size > s->cfg.capacity ? size : round_up(size, s->cfg.alignment);
    pthread_mutex_lock(&s->mu);
    int rc = admit(dev, s, rsize, "malloc");
    if (rc == 0) {
        uint64_t addr = gk__sim_space_alloc(&s->heap, rsize, &rc);
        if (rc) {
            rc = gk__device_error(dev, rc, "sim: out of host memory");
        } else if (!addr) {
            uint64_t avail = s->cfg.capacity - s->used;
            human h;
            rc = gk__device_error(
                dev, GK_EDEVOOM,
                "sim: device full: malloc of %llu bytes (%s) requested, %llu "
                "bytes free of %llu capacity but the largest free range is %llu "
                "bytes (%s): fragmented",
                (unsigned long long)rsize, gk_format_size(rsize, h.a, sizeof h.a),
                (unsigned long long)avail, (unsigned long long)s->cfg.capacity,
                (unsigned long long)gk__sim_space_largest_free(&s->heap),
                gk_format_size(gk__sim_space_largest_free(&s->heap), h.b, sizeof h.b));
        } else {
            s->used += rsize;
            *ptr = (void *)(uintptr_t)addr;
        }
    }
    pthread_mutex_unlock(&s->mu);
    spend(s, s->alloc_latency_ns);
    return rc;
}

static int sim_free(gk_device *dev, void *ptr, size_t size)
{
    gk__sim *s = dev->impl;
    uint64_t rsize = round_up(size, s->cfg.alignment);
    pthread_mutex_lock(&s->mu);
    int rc = gk__sim_space_free(&s->heap, (uint64_t)(uintptr_t)ptr, rsize);
    if (rc == 0)
        s->used -= rsize;
    pthread_mutex_unlock(&s->mu);
    spend(s, s->free_latency_ns);
    if (rc)
        return gk__device_error(dev, rc, "sim: free of %p (%zu bytes): not a live allocation", ptr,
                                size);
    return 0;
}

static int sim_host_alloc(gk_device *dev, size_t size, void **ptr)
{
    void *p = NULL;
    if (gk__posix_memalign(&p, 4096, size) != 0)
        return gk__device_error(dev, -ENOMEM, "sim: cannot allocate %zu bytes of host memory",
                                size);
    *ptr = p;
    return 0;
}

static int sim_host_free(gk_device *dev, void *ptr, size_t size)
{
    (void)dev;
    (void)size;
    free(ptr);
    return 0;
}

/* --- virtual memory ----------------------------------------------------------------------- */

/* Index of the reservation containing addr, or -1. */
static long find_reservation(const gk__sim *s, uint64_t addr)
{
    size_t lo = 0, hi = s->nres;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->res[mid].base + s->res[mid].size <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < s->nres && s->res[lo].base <= addr)
        return (long)lo;
    return -1;
}

/* Whether every granule of [addr, addr + size) in r is mapped (want 1) or unmapped (want 0). */
static int granules_are(const gk__sim *s, const gk__sim_reservation *r, uint64_t addr,
                        uint64_t size, int want)
{
    uint64_t g = s->cfg.granularity;
    uint64_t first = (addr - r->base) / g, last = (addr + size - 1 - r->base) / g;
    for (uint64_t i = first; i <= last; i++) {
        int mapped = (r->bits[i / 64] >> (i % 64)) & 1;
        if (mapped != want)
            return 0;
    }
    return 1;
}

static void set_granules(const gk__sim *s, gk__sim_reservation *r, uint64_t addr, uint64_t size,
                         int on)
{
    uint64_t g = s->cfg.granularity;
    uint64_t first = (addr - r->base) / g, n = size / g;
    for (uint64_t i = first; i < first + n; i++) {
        if (on)
            r->bits[i / 64] |= 1ull << (i % 64);
        else
            r->bits[i / 64] &= ~(1ull << (i % 64));
    }
    if (on)
        r->nmapped += n;
    else
        r->nmapped -= n;
}

static int vm_off(gk_device *dev)
{
    return gk__device_error(dev, GK_EUNAVAIL,
                            "%s: virtual memory is off (va_size=0); open the sim without va_size=0",
                            dev->spec);
}

static int check_granular(gk_device *dev, gk__sim *s, const char *fn, const void *addr, size_t size)
{
    uint64_t g = s->cfg.granularity;
    if (!addr && (size & (g - 1)))
        return gk__device_error(dev, -EINVAL,
                                "sim: %s of %zu bytes: the size must be a multiple of the "
                                "granularity (%llu bytes)",
                                fn, size, (unsigned long long)g);
    if (((uint64_t)(uintptr_t)addr | size) & (g - 1))
        return gk__device_error(dev, -EINVAL,
                                "sim: %s(%p, %zu): address and size must be multiples of the "
                                "granularity (%llu bytes)",
                                fn, addr, size, (unsigned long long)g);
    return 0;
}

static int sim_vm_reserve(gk_device *dev, size_t size, void **base)
{
    gk__sim *s = dev->impl;
    if (!s->cfg.va_size)
        return vm_off(dev);
    int rc = check_granular(dev, s, "vm_reserve", NULL, size);
    if (rc)
        return rc;
    if (size > s->cfg.va_size)
        return gk__device_error(dev, -ENOSPC,
                                "sim: vm_reserve of %zu bytes: larger than the whole %llu-byte "
                                "virtual address space; raise va_size",
                                size, (unsigned long long)s->cfg.va_size);
    uint64_t words = (size / s->cfg.granularity + 63) / 64;
    uint64_t *bits = gk__calloc((size_t)words, sizeof *bits);
    if (!bits)
        return gk__device_error(dev, -ENOMEM, "sim: out of host memory");
    pthread_mutex_lock(&s->mu);
    if (s->nres == s->rescap) {
        size_t ncap = s->rescap ? s->rescap * 2 : 8;
        gk__sim_reservation *r = gk__realloc(s->res, ncap * sizeof *r);
        if (!r) {
            rc = gk__device_error(dev, -ENOMEM, "sim: out of host memory");
            goto out_unlock;
        }
        s->res = r;
        s->rescap = ncap;
    }
    uint64_t addr = gk__sim_space_alloc(&s->va, size, &rc);
    if (rc) {
        rc = gk__device_error(dev, rc, "sim: out of host memory");
        goto out_unlock;
    }
    if (!addr) {
        rc = gk__device_error(dev, -ENOSPC,
                              "sim: vm_reserve of %zu bytes: no free range that large in the "
                              "%llu-byte virtual address space (largest %llu); release ranges or "
                              "raise va_size",
                              size, (unsigned long long)s->cfg.va_size,
                              (unsigned long long)gk__sim_space_largest_free(&s->va));
        goto out_unlock;
    }
    long at = 0;
    while ((size_t)at < s->nres && s->res[at].base < addr)
        at++;
    memmove(&s->res[at + 1], &s->res[at], (s->nres - (size_t)at) * sizeof s->res[0]);
    s->res[at] = (gk__sim_reservation){.base = addr, .size = size, .bits = bits, .nmapped = 0};
    s->nres++;
    bits = NULL;
    *base = (void *)(uintptr_t)addr;
out_unlock:
    pthread_mutex_unlock(&s->mu);
    free(bits);
    return rc;
}

/* The reservation holding all of [addr, addr + size), or NULL with last_error set. */
static gk__sim_reservation *reservation_for(gk_device *dev, gk__sim *s, const char *fn,
                                            uint64_t addr, uint64_t size)
{
    long i = find_reservation(s, addr);
    if (i < 0 || size > s->res[i].base + s->res[i].size - addr) {
        gk__device_error(dev, -EINVAL,
                         "sim: %s(%p, %llu): the range is not inside one reserved range "
                         "(reserve it first with gk_device_vm_reserve)",
                         fn, (void *)(uintptr_t)addr, (unsigned long long)size);
        return NULL;
    }
    return &s->res[i];
}

static int sim_vm_map(gk_device *dev, void *addr, size_t size)
{
    gk__sim *s = dev->impl;
    if (!s->cfg.va_size)
        return vm_off(dev);
    int rc = check_granular(dev, s, "vm_map", addr, size);
    if (rc)
        return rc;
    uint64_t a = (uint64_t)(uintptr_t)addr;
    pthread_mutex_lock(&s->mu);
    gk__sim_reservation *r = reservation_for(dev, s, "vm_map", a, size);
    if (!r) {
        rc = -EINVAL;
    } else if (!granules_are(s, r, a, size, 0)) {
        rc = gk__device_error(dev, -EINVAL,
                              "sim: vm_map(%p, %zu): part of the range is already mapped (unmap "
                              "it first)",
                              addr, size);
    } else {
        rc = admit(dev, s, size, "vm_map");
        if (rc == 0) {
            set_granules(s, r, a, size, 1);
            s->used += size;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != -EINVAL)
        spend(s, s->alloc_latency_ns);
    return rc;
}

static int sim_vm_unmap(gk_device *dev, void *addr, size_t size)
{
    gk__sim *s = dev->impl;
    if (!s->cfg.va_size)
        return vm_off(dev);
    int rc = check_granular(dev, s, "vm_unmap", addr, size);
    if (rc)
        return rc;
    uint64_t a = (uint64_t)(uintptr_t)addr;
    pthread_mutex_lock(&s->mu);
    gk__sim_reservation *r = reservation_for(dev, s, "vm_unmap", a, size);
    if (!r) {
        rc = -EINVAL;
    } else if (!granules_are(s, r, a, size, 1)) {
        rc = gk__device_error(
            dev, -EINVAL, "sim: vm_unmap(%p, %zu): part of the range is not mapped", addr, size);
    } else {
        set_granules(s, r, a, size, 0);
        s->used -= size;
        if (s->map) {
            /* The physical memory goes away: its contents are lost, as on a GPU. */
            uint64_t lo = round_up(a, s->page), hi = (a + size) & ~((uint64_t)s->page - 1);
            if (hi > lo)
                (void)madvise((void *)(uintptr_t)lo, (size_t)(hi - lo), MADV_DONTNEED);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0)
        spend(s, s->free_latency_ns);
    return rc;
}

static int sim_vm_release(gk_device *dev, void *base, size_t size)
{
    gk__sim *s = dev->impl;
    if (!s->cfg.va_size)
        return vm_off(dev);
    uint64_t a = (uint64_t)(uintptr_t)base;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    long i = find_reservation(s, a);
    if (i < 0 || s->res[i].base != a || s->res[i].size != size) {
        if (i >= 0 && s->res[i].base == a)
            rc = gk__device_error(dev, -EINVAL,
                                  "sim: vm_release(%p, %zu): the range was reserved with %llu "
                                  "bytes; release it with that size",
                                  base, size, (unsigned long long)s->res[i].size);
        else
            rc = gk__device_error(dev, -EINVAL,
                                  "sim: vm_release(%p, %zu): not the base of a reserved range",
                                  base, size);
        goto out_unlock;
    }
    if (s->res[i].nmapped) {
        rc = gk__device_error(dev, -EBUSY,
                              "sim: vm_release(%p, %zu): %llu bytes are still mapped; unmap them "
                              "first",
                              base, size,
                              (unsigned long long)(s->res[i].nmapped * s->cfg.granularity));
        goto out_unlock;
    }
    rc = gk__sim_space_free(&s->va, a, size);
    free(s->res[i].bits);
    memmove(&s->res[i], &s->res[i + 1], (s->nres - (size_t)i - 1) * sizeof s->res[0]);
    s->nres--;
out_unlock:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Whether [p, p + size) is live device memory: inside an allocation, or mapped VM. */
int gk__sim_is_device_memory(const gk__sim *s, const void *p, size_t size)
{
    uint64_t a = (uint64_t)(uintptr_t)p;
    if (a >= s->heap.base && a - s->heap.base < s->heap.size)
        return gk__sim_space_is_allocated(&s->heap, a, size);
    long i = find_reservation(s, a);
    if (i < 0 || size > s->res[i].base + s->res[i].size - a)
        return 0;
    return granules_are(s, &s->res[i], a, size, 1);
}

const gk__backend_ops gk__backend_sim = {
    .name = "sim",
    .kind = GK_BACKEND_SIM,
    .open = sim_open,
    .close = sim_close,
    .props = sim_props,
    .mem_info = sim_mem_info,
    .malloc = sim_malloc,
    .free = sim_free,
    .host_alloc = sim_host_alloc,
    .host_free = sim_host_free,
    .stream_create = gk__sim_stream_create,
    .stream_destroy = gk__sim_stream_destroy,
    .stream_sync = gk__sim_stream_sync,
    .stream_wait = gk__sim_stream_wait,
    .host_fn = gk__sim_host_fn,
    .device_sync = gk__sim_device_sync,
    .event_create = gk__sim_event_create,
    .event_destroy = gk__sim_event_destroy,
    .event_record = gk__sim_event_record,
    .event_query = gk__sim_event_query,
    .event_sync = gk__sim_event_sync,
    .memcpy_async = gk__sim_memcpy,
    .vm_reserve = sim_vm_reserve,
    .vm_map = sim_vm_map,
    .vm_unmap = sim_vm_unmap,
    .vm_release = sim_vm_release,
};

/* --- sim-only public functions ------------------------------------------------------------ */

static gk__sim *sim_of(gk_device *dev)
{
    return dev && dev->ops == &gk__backend_sim ? dev->impl : NULL;
}

int gk_device_sim_set_faults(gk_device *dev, const char *faults)
{
    char text[1024], err[400];
    gk__spec spec;
    if (!dev)
        return gk__error(-EINVAL, "gk_device_sim_set_faults: dev is NULL");
    gk__sim *s = sim_of(dev);
    if (!s)
        return gk__device_error(dev, GK_EUNAVAIL,
                                "gk_device_sim_set_faults: %s is not a sim device", dev->spec);
    if (!faults)
        faults = "";
    int n = snprintf(text, sizeof text, "sim:%s", faults);
    if (n < 0 || (size_t)n >= sizeof text)
        return gk__device_error(dev, -EINVAL, "gk_device_sim_set_faults: the text is too long");
    int rc = gk__spec_parse(text, &spec, err, sizeof err);
    gk__sim_config cfg;
    gk__sim_config_default(&cfg);
    if (rc == 0)
        rc = gk__sim_config_apply(&cfg, &spec, 1, err, sizeof err);
    if (rc)
        return gk__device_error(dev, rc, "gk_device_sim_set_faults(\"%s\"): %s", faults, err);
    pthread_mutex_lock(&s->mu);
    s->cfg.faults = cfg.faults;
    s->alloc_calls = 0;
    s->event_queries = 0;
    s->prng = cfg.faults.seed;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

uint64_t gk_device_sim_clock_ns(gk_device *dev)
{
    gk__sim *s = sim_of(dev);
    return s ? atomic_load_explicit(&s->clock_ns, memory_order_relaxed) : 0;
}

size_t gk_device_sim_used(gk_device *dev)
{
    gk__sim *s = sim_of(dev);
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    size_t used = (size_t)s->used;
    pthread_mutex_unlock(&s->mu);
    return used;
}
