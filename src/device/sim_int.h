/* Private pieces of the sim backend shared by its files: the parsed configuration (sim_spec.c)
 * and the first-fit address space used for device memory and for virtual-memory reservations
 * (sim_space.c). backend_sim.c ties them to the device layer. */
#ifndef GK_SIM_INT_H
#define GK_SIM_INT_H

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

#endif
