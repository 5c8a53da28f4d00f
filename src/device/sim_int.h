/* Private pieces of the sim backend shared by its files: the parsed configuration (sim_spec.c),
 * the first-fit address space used for device memory and for virtual-memory reservations
 * (sim_space.c), the device state (backend_sim.c) and its streams and events (sim_stream.c). */
#ifndef GK_SIM_INT_H
#define GK_SIM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "device/device_int.h"

/* Fault keys: every one can also be changed at run time with gk_device_sim_set_faults. */
typedef struct gk__sim_faults {
    uint64_t alloc_nth;       /* 0: off; else the Nth allocation-type call fails once */
    double prob;              /* 0: off; else each allocation fails with this probability */
    uint64_t seed;            /* PRNG seed for prob */
    int above_set;            /* fail_above given */
    uint64_t above;           /* allocations larger than this fail */
    int after_set;            /* fail_after_bytes given */
    uint64_t after_bytes;     /* allocations fail once used + new would exceed this */
    uint64_t event_query_nth; /* 0: off; else the Nth event query returns GK_EDRIVER once */
} gk__sim_faults;

typedef struct gk__sim_config {
    uint64_t capacity;    /* bytes */
    uint64_t alignment;   /* power of two */
    uint64_t granularity; /* power of two, >= 4096 */
    uint64_t va_size;     /* bytes of address space for vm_reserve; 0: no virtual memory */
    int va_size_set;
    int backed;              /* device memory is real host memory */
    double alloc_latency_us; /* per malloc and vm_map */
    double free_latency_us;  /* per free and vm_unmap */
    int virtual_clock;       /* clock=virtual */
    uint64_t event_polls;    /* K >= 1 */
    gk__sim_faults faults;
    char name[64];
} gk__sim_config;

/* Fills `cfg` with the defaults. */
void gk__sim_config_default(gk__sim_config *cfg);

/* Applies the keys of `spec` to `cfg` and checks the result. With faults_only, keys other than
 * the fault keys are refused. On error returns -EINVAL with a message naming the key, the value
 * and the fix in err. */
int gk__sim_config_apply(gk__sim_config *cfg, const gk__spec *spec, int faults_only, char *err,
                         size_t errlen);

/* Writes the canonical spec ("sim:capacity=16GiB" plus every key that differs from its default,
 * in a fixed order) into buf. */
void gk__sim_config_format(const gk__sim_config *cfg, char *buf, size_t len);

/* A contiguous address range. */
typedef struct gk__sim_range {
    uint64_t addr, size;
} gk__sim_range;

/* A first-fit address space over [base, base + size): free ranges sorted by address, coalesced
 * on free. Callers keep every address and size a multiple of the space's unit, so no padding is
 * ever needed. Not thread-safe (the sim's lock covers it). */
typedef struct gk__sim_space {
    uint64_t base, size;
    gk__sim_range *free; /* sorted by addr, disjoint, never adjacent */
    size_t nfree, cap;
    size_t nlive; /* allocated ranges */
} gk__sim_space;

/* Starts with one free range covering the space. Returns 0 or -ENOMEM. */
int gk__sim_space_init(gk__sim_space *sp, uint64_t base, uint64_t size);
void gk__sim_space_destroy(gk__sim_space *sp);

/* Takes the first free range of at least `size` bytes. Returns its address, or 0 when none fits
 * (-ENOMEM in *rc when the bookkeeping cannot grow, else 0). */
uint64_t gk__sim_space_alloc(gk__sim_space *sp, uint64_t size, int *rc);

/* Gives [addr, addr + size) back, merging with its neighbours. Returns -EINVAL when the range is
 * outside the space or overlaps a free range. */
int gk__sim_space_free(gk__sim_space *sp, uint64_t addr, uint64_t size);

/* Whether [addr, addr + size) lies in the space and overlaps no free range. */
int gk__sim_space_is_allocated(const gk__sim_space *sp, uint64_t addr, uint64_t size);

/* The largest free range in bytes (for error messages). */
uint64_t gk__sim_space_largest_free(const gk__sim_space *sp);

/* A reserved virtual address range and which of its granules are mapped. */
typedef struct gk__sim_reservation {
    uint64_t base, size;
    uint64_t *bits;   /* one bit per granule: mapped */
    uint64_t nmapped; /* granules mapped */
} gk__sim_reservation;

typedef struct gk__sim_stream gk__sim_stream;

/* The state of one sim device (dev->impl). `mu` guards everything but clock_ns and the
 * read-only cfg fields. */
typedef struct gk__sim {
    gk__sim_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an op finished or a stream stopped being busy (CLOCK_MONOTONIC) */
    int waiters;
    gk__sim_space heap, va;
    uint64_t used;            /* live allocations (rounded) + mapped chunks */
    gk__sim_reservation *res; /* sorted by base */
    size_t nres, rescap;
    gk__sim_stream *streams; /* every live stream, the default one included */
    gk__sim_stream *default_stream;
    uint64_t alloc_calls, event_queries, prng; /* fault state, reset by set_faults */
    uint64_t alloc_latency_ns, free_latency_ns;
    _Atomic uint64_t clock_ns;
    void *map; /* backed=1: the host memory behind the device */
    size_t map_len;
    size_t page;
} gk__sim;

/* Whether [p, p + size) is live device memory: inside an allocation, or mapped VM. Lock held. */
int gk__sim_is_device_memory(const gk__sim *s, const void *p, size_t size);

/* Streams and events (sim_stream.c). init creates the default stream; fini frees the streams
 * left, after device.c destroyed the user's streams and synchronized. */
int gk__sim_streams_init(gk__sim *s);
void gk__sim_streams_fini(gk__sim *s);
int gk__sim_stream_create(gk_device *dev, void **impl);
int gk__sim_stream_destroy(gk_device *dev, void *impl);
int gk__sim_stream_sync(gk_device *dev, void *impl, double timeout);
int gk__sim_stream_wait(gk_device *dev, void *stream_impl, void *event_impl);
int gk__sim_host_fn(gk_device *dev, void *impl, void (*fn)(void *), void *user);
int gk__sim_device_sync(gk_device *dev, double timeout);
int gk__sim_memcpy(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                   void *impl);
int gk__sim_event_create(gk_device *dev, void **impl);
int gk__sim_event_destroy(gk_device *dev, void *impl);
int gk__sim_event_record(gk_device *dev, void *event_impl, void *stream_impl);
int gk__sim_event_query(gk_device *dev, void *impl);
int gk__sim_event_sync(gk_device *dev, void *impl, double timeout);

#endif
