/* The map from live pointers to their blocks: open addressing with linear probing over a
 * well-mixed hash, deletion by backward shift (no tombstones), doubling at half load. It lives
 * under the pool lock, so an allocation or a free takes exactly one lock. */
#include <stdlib.h>

#include "common/alloc.h"
#include "pool/pool_int.h"

/* A 64-bit finalizer (every input bit reaches every output bit), so pointers that differ only in
 * high bits (i << 40) spread as well as consecutive ones. */
uint64_t gk__mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

void gk__ptrmap_fini(gk__ptrmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}

static void put(gk__ptrmap *m, uintptr_t key, gk__block *b)
{
    size_t mask = m->cap - 1, i = (size_t)gk__mix64(key) & mask;
    while (m->slots[i].key)
        i = (i + 1) & mask;
    m->slots[i].key = key;
    m->slots[i].val = b;
}

static int grow(gk__ptrmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    gk__ptrslot *slots = gk__calloc(ncap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    gk__ptrmap old = *m;
    m->slots = slots;
    m->cap = ncap;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key)
            put(m, old.slots[i].key, old.slots[i].val);
    free(old.slots);
    return 0;
}

int gk__ptrmap_insert(gk__ptrmap *m, gk__block *b)
{
    if ((m->count + 1) * 2 > m->cap) {
        int rc = grow(m);
        if (rc)
            return rc;
    }
    put(m, b->addr, b);
    m->count++;
    return 0;
}

gk__block *gk__ptrmap_find(const gk__ptrmap *m, uintptr_t addr)
{
    if (!m->cap || !addr)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)gk__mix64(addr) & mask; m->slots[i].key; i = (i + 1) & mask)
        if (m->slots[i].key == addr)
            return m->slots[i].val;
    return NULL;
}

gk__block *gk__ptrmap_remove(gk__ptrmap *m, uintptr_t addr)
{
    if (!m->cap || !addr)
        return NULL;
    size_t mask = m->cap - 1, i = (size_t)gk__mix64(addr) & mask;
    while (m->slots[i].key && m->slots[i].key != addr)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        return NULL;
    gk__block *found = m->slots[i].val;
    /* Backward shift: move later members of the probe run into the hole when their home slot
     * does not lie strictly between the hole and them. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = (size_t)gk__mix64(m->slots[j].key) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->count--;
    return found;
}
