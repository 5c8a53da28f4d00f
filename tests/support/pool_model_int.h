/* The model's structures, shared by pool_model.c (the rules) and pool_check.c (the side-by-side
 * run and the checks). */
#ifndef GK_POOL_MODEL_INT_H
#define GK_POOL_MODEL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "pool_model.h"

__extension__ typedef unsigned __int128 pm_u128;

/* --- the sim device ------------------------------------------------------------------------------ */

typedef struct pm_range {
    uint64_t addr, size;
} pm_range;

typedef struct pm_space { /* first fit over free ranges sorted by address */
    uint64_t base, size;
    pm_range *f;
    size_t n, cap;
} pm_space;

typedef struct pm_dev {
    pm_device cfg;
    pm_space heap, va;
    uint64_t used; /* allocations and mapped bytes */
} pm_dev;

void pm_dev_open(pm_dev *d, const pm_device *cfg);
void pm_dev_close(pm_dev *d);
uint64_t pm_dev_malloc(pm_dev *d, uint64_t size); /* 0: out of memory */
void pm_dev_free(pm_dev *d, uint64_t addr, uint64_t size);
uint64_t pm_dev_reserve(pm_dev *d, uint64_t size); /* 0: no address space */
void pm_dev_release(pm_dev *d, uint64_t addr, uint64_t size);
bool pm_dev_map(pm_dev *d, uint64_t size);
void pm_dev_unmap(pm_dev *d, uint64_t size);

/* --- the pool ------------------------------------------------------------------------------------ */

enum { PM_FREE, PM_LIVE, PM_UNMAPPED, PM_HELD, PM_MAPPING };

typedef struct pm_block {
    uint64_t addr, size, requested, stream;
    uint8_t state;
} pm_block;

typedef struct pm_seg {
    uint64_t base, size, page, stream, mapped;
    int kind;
    bool exp;
    pm_block *b; /* sorted by address, tiling the segment */
    size_t nb, cap;
    bool rel;           /* classic, its only block cached: releasable */
    uint64_t free_tick; /* lookups on its pool when it became releasable */
    uint64_t rel_seq;   /* order in which segments became releasable */
} pm_seg;

typedef struct pm_pool {
    gk_pool_config cfg;
    pm_dev *dev;
    uint64_t total, max_request, limit, reserved;
    bool exp;
    pm_seg **segs; /* oldest first */
    size_t nsegs, capsegs;
    uint64_t ticks[GK_POOL_KINDS];
    uint64_t rel_counter;
    gk_pool_stats st;
} pm_pool;

/* The model's own request rounding (round, divisions). */
uint64_t pm_round_size(const gk_pool_config *c, uint64_t size);
int pm_pool_open(pm_pool *p, const gk_pool_config *cfg, pm_dev *dev);
void pm_pool_close(pm_pool *p);
/* 0 with the address in *out, or -1 when the ladder fails. */
int pm_malloc(pm_pool *p, uint64_t size, uint64_t stream, uint64_t *out);
void pm_free(pm_pool *p, uint64_t addr);
void pm_release_cached(pm_pool *p);
void pm_stream_destroyed(pm_pool *p, uint64_t stream);
/* The statistics, with largest_free_block and free_cached_bytes summed over the blocks. */
void pm_pool_stats(const pm_pool *p, gk_pool_stats *out);

#endif
