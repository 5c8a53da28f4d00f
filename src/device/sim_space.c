/* The sim's first-fit address space: a sorted array of free ranges, coalesced on free. The sim
 * uses one for device memory (unit: the allocation alignment) and one for virtual-memory
 * reservations (unit: the mapping granularity). Free never needs to grow the array, because
 * alloc keeps room for one more free range than there can ever be. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "device/sim_int.h"

int gk__sim_space_init(gk__sim_space *sp, uint64_t base, uint64_t size)
{
    memset(sp, 0, sizeof *sp);
    sp->base = base;
    sp->size = size;
    sp->cap = 16;
    sp->free = gk__malloc(sp->cap * sizeof *sp->free);
    if (!sp->free)
        return -ENOMEM;
    if (size) {
        sp->free[0].addr = base;
        sp->free[0].size = size;
        sp->nfree = 1;
    }
    return 0;
}

void gk__sim_space_destroy(gk__sim_space *sp)
{
    free(sp->free);
    memset(sp, 0, sizeof *sp);
}

/* Free ranges are separated by live ones, so there are at most nlive + 1 of them. */
static int reserve_room(gk__sim_space *sp, size_t nlive)
{
    if (sp->cap >= nlive + 1)
        return 0;
    size_t ncap = sp->cap * 2;
    while (ncap < nlive + 1)
        ncap *= 2;
    gk__sim_range *r = gk__realloc(sp->free, ncap * sizeof *r);
    if (!r)
        return -ENOMEM;
    sp->free = r;
    sp->cap = ncap;
    return 0;
}

uint64_t gk__sim_space_alloc(gk__sim_space *sp, uint64_t size, int *rc)
{
    *rc = 0;
    for (size_t i = 0; i < sp->nfree; i++) {
        gk__sim_range *r = &sp->free[i];
        if (r->size < size)
            continue;
        *rc = reserve_room(sp, sp->nlive + 1);
        if (*rc)
            return 0;
        r = &sp->free[i]; /* the array may have moved */
        uint64_t addr = r->addr;
        r->addr += size;
        r->size -= size;
        if (r->size == 0) {
            memmove(r, r + 1, (sp->nfree - i - 1) * sizeof *r);
            sp->nfree--;
        }
        sp->nlive++;
        return addr;
    }
    return 0;
}

/* Index of the first free range that ends after `addr`. */
static size_t first_ending_after(const gk__sim_space *sp, uint64_t addr)
{
    size_t lo = 0, hi = sp->nfree;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->free[mid].addr + sp->free[mid].size <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int in_space(const gk__sim_space *sp, uint64_t addr, uint64_t size)
{
    return size && addr >= sp->base && addr - sp->base <= sp->size &&
           size <= sp->size - (addr - sp->base);
}

int gk__sim_space_free(gk__sim_space *sp, uint64_t addr, uint64_t size)
{
    if (!in_space(sp, addr, size) || sp->nlive == 0)
        return -EINVAL;
    size_t i = first_ending_after(sp, addr);
    uint64_t end = addr + size;
    if (i < sp->nfree && sp->free[i].addr < end)
        return -EINVAL; /* overlaps a free range */
    gk__sim_range *prev = i > 0 ? &sp->free[i - 1] : NULL;
    gk__sim_range *next = i < sp->nfree ? &sp->free[i] : NULL;
    int join_prev = prev && prev->addr + prev->size == addr;
    int join_next = next && next->addr == end;
    if (join_prev && join_next) {
        prev->size += size + next->size;
        memmove(next, next + 1, (sp->nfree - i - 1) * sizeof *next);
        sp->nfree--;
    } else if (join_prev) {
        prev->size += size;
    } else if (join_next) {
        next->addr = addr;
        next->size += size;
    } else {
        /* reserve_room guarantees the slot. */
        memmove(&sp->free[i + 1], &sp->free[i], (sp->nfree - i) * sizeof sp->free[0]);
        sp->free[i].addr = addr;
        sp->free[i].size = size;
        sp->nfree++;
    }
    sp->nlive--;
    return 0;
}

int gk__sim_space_is_allocated(const gk__sim_space *sp, uint64_t addr, uint64_t size)
{
    if (!in_space(sp, addr, size))
        return 0;
    size_t i = first_ending_after(sp, addr);
    return !(i < sp->nfree && sp->free[i].addr < addr + size);
}

uint64_t gk__sim_space_largest_free(const gk__sim_space *sp)
{
    uint64_t best = 0;
    for (size_t i = 0; i < sp->nfree; i++) {
        if (sp->free[i].size > best)
            best = sp->free[i].size;
    }
    return best;
}
