/* Expandable segments: address ranges reserved per stream and pool into which physical pages are
 * mapped as blocks need them, and from which free pages are unmapped when the pool gives memory
 * back. Reserved bytes count mapped pages only, so a growing working set never strands a
 * half-used segment the way fixed segments do.
 *
 * A range is a list of blocks as a classic segment is, plus UNMAPPED blocks (whole pages with no
 * memory) kept on a list of the segment and never in the free tree: best fit sees only memory
 * that exists, and the oversize rule never meets address space. When no cached block fits, a
 * chain of free and unmapped blocks that is long enough is found (the lowest such chain of the
 * oldest range of the request's stream and pool), its unmapped parts are mapped outside the pool
 * lock, one device call per contiguous run, and the block is cut from its start. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/options.h"
#include "pool/pool_int.h"

static size_t round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

/* The page of a pool kind: small_segment for the small pool, page_size for the large one, each
 * rounded up to the device's granularity. */
static size_t page_for(const gk_pool *p, int kind)
{
    size_t g = p->props.vm_granularity ? p->props.vm_granularity : 1;
    return round_up(kind == GK_POOL_SMALL ? p->cfg.small_segment : p->cfg.page_size, g);
}

/* The address space a new range gets: 1.125 x the device's memory (PyTorch's figure), at least
 * `need`. */
static size_t range_size(const gk_pool *p, size_t page, size_t need)
{
    size_t va = p->total_memory ? round_up(p->total_memory / 8 * 9, page) : need;
    return va < need ? need : va;
}

bool gk__expand_supported(gk_pool *p, char *why, size_t len)
{
    char a[32], b[32], c[32];
    size_t g = p->props.vm_granularity;
    if (!p->props.has_vm || g == 0) {
        snprintf(why, len, "the device has no virtual-memory API");
        return false;
    }
    for (int kind = GK_POOL_SMALL; kind <= GK_POOL_LARGE; kind++) {
        size_t page = page_for(p, kind);
        if (p->total_memory && page > p->total_memory / 8) {
            snprintf(why, len,
                     "its %s page of %s (%s rounded up to the device's granularity of %s) is "
                     "more than 1/8 of the device's %s; lower %s or the granularity",
                     kind == GK_POOL_SMALL ? "small-pool" : "large-pool",
                     gk_format_size(page, a, sizeof a),
                     kind == GK_POOL_SMALL ? "small_segment" : "page_size",
                     gk_format_size(g, b, sizeof b), gk_format_size(p->total_memory, c, sizeof c),
                     kind == GK_POOL_SMALL ? "small_segment" : "page_size");
            return false;
        }
    }
    if (!p->total_memory)
        return true;
    /* A range of the full size must fit the device's address space (a sim's va_size may not). */
    size_t va = range_size(p, page_for(p, GK_POOL_LARGE), 0);
    void *base = NULL;
    int rc = gk_device_vm_reserve(p->dev, va, &base);
    if (rc != 0) {
        snprintf(why, len, "cannot reserve %s of address space for a range: %s",
                 gk_format_size(va, a, sizeof a), gk_last_error());
        return false;
    }
    gk_device_vm_release(p->dev, base, va);
    return true;
}

/* --- unmapped blocks ---------------------------------------------------------------------------- */

void gk__unmapped_add(gk__segment *s, gk__block *b)
{
    b->uprev = NULL;
    b->unext = s->unmapped;
    if (s->unmapped)
        s->unmapped->uprev = b;
    s->unmapped = b;
}

void gk__unmapped_del(gk__segment *s, gk__block *b)
{
    if (b->uprev)
        b->uprev->unext = b->unext;
    else
        s->unmapped = b->unext;
    if (b->unext)
        b->unext->uprev = b->uprev;
    b->unext = b->uprev = NULL;
}

/* Cuts b after `keep` bytes; n becomes the rest. */
static void split_at(gk__block *b, size_t keep, gk__block *n)
{
    n->addr = b->addr + keep;
    n->size = b->size - keep;
    n->stream = b->stream;
    n->seg = b->seg;
    n->prev = b;
    n->next = b->next;
    if (b->next)
        b->next->prev = n;
    b->next = n;
    b->size = keep;
}

/* b is UNMAPPED and listed: merges it with UNMAPPED neighbours. */
static void unmapped_merge(gk_pool *p, gk__segment *s, gk__block *b)
{
    gk__block *a = b->prev;
    if (a && a->state == GK__UNMAPPED) {
        gk__unmapped_del(s, b);
        gk__block_absorb(p, a);
        b = a;
    }
    if (b->next && b->next->state == GK__UNMAPPED) {
        gk__unmapped_del(s, b->next);
        gk__block_absorb(p, b);
    }
}

/* --- growth ------------------------------------------------------------------------------------- */

/* Reserves a new range for r's stream and pool (outside the lock) and lists it. */
static int new_range(gk_pool *p, const gk__request *r, size_t page)
{
    size_t need = round_up(r->rsize, page), va = range_size(p, page, need);
    gk__segment *s = gk__calloc(1, sizeof *s);
    gk__block *b = gk__block_new(p);
    if (!s || !b || gk__tree_reserve(&p->free[r->kind], r->stream) != 0) {
        free(s);
        if (b)
            gk__block_recycle(p, b);
        return -ENOMEM;
    }
    void *base = NULL;
    int rc;
    bool unlock = p->cfg.release_lock_on_device_alloc;
    uint64_t t0 = gk__pool_now_ns();
    if (unlock)
        gk__unlock_for_device(p);
    /* Address space may be tight (a sim has 4 x its capacity, shared by every range): when the
     * full range cannot be reserved, halve it down to what this request needs. */
    for (;;) {
        rc = gk_device_vm_reserve(p->dev, va, &base);
        if (rc == 0 || va == need || !gk__is_oom(rc))
            break;
        va = round_up(va / 2, page);
        if (va < need)
            va = need;
    }
    uint64_t t1 = gk__pool_now_ns();
    if (unlock)
        gk__relock_after_device(p);
    p->stats.backend_ns += t1 - t0;
    if (rc != 0) {
        gk__note_device_error(p, "address reserve");
        free(s);
        gk__block_recycle(p, b);
        return rc;
    }
    s->base = (uintptr_t)base;
    s->size = va;
    s->kind = r->kind;
    s->stream = r->stream;
    s->expandable = true;
    s->page = page;
    s->head = b;
    b->addr = s->base;
    b->size = va;
    b->stream = r->stream;
    b->seg = s;
    b->state = GK__UNMAPPED;
    gk__unmapped_add(s, b);
    gk__segment_link(p, s);
    gk__stat_add(p, p->stats.segment, s->kind, 1);
    return 0;
}

/* Bytes of free and unmapped blocks from c on (a chain ends at a block in use). */
static size_t chain_room(const gk__block *c)
{
    size_t total = 0;
    for (; c && (c->state == GK__FREE || c->state == GK__UNMAPPED); c = c->next)
        total += c->size;
    return total;
}

/* The start of the chain that will hold r: best fit among the chains of r's stream and pool that
 * contain unmapped space (a chain starts at an unmapped block, or at the free block just before
 * it, and runs over free and unmapped blocks): the one with the least room that is enough, the
 * lowest address on a tie. A hole left by unmapping is filled before the end of a range. */
static gk__block *find_chain(gk_pool *p, const gk__request *r)
{
    gk__block *best = NULL;
    size_t best_room = 0;
    for (gk__segment *s = p->seg_head; s; s = s->next) {
        if (!s->expandable || s->kind != r->kind || s->stream != r->stream)
            continue;
        for (gk__block *u = s->unmapped; u; u = u->unext) {
            gk__block *start = u->prev && u->prev->state == GK__FREE ? u->prev : u;
            size_t room = chain_room(start);
            if (room < r->rsize)
                continue;
            if (!best || room < best_room || (room == best_room && start->addr < best->addr)) {
                best = start;
                best_room = room;
            }
        }
    }
    return best;
}

typedef struct run {
    uintptr_t addr;
    size_t size;
} run;

/* Maps the unmapped parts of the chain from `start` (outside the lock) and hands out its first
 * r->rsize bytes. A run the device refuses stays unmapped; runs mapped before it stay mapped and
 * cached. */
static int map_chain(gk_pool *p, const gk__request *r, gk__block *start, size_t page,
                     gk__block **out)
{
    gk__segment *s = start->seg;
    size_t total = 0, need = 0, nruns = 0;
    for (gk__block *c = start; total < r->rsize; c = c->next) {
        if (c->state == GK__FREE) {
            total += c->size;
        } else {
            size_t len = round_up(r->rsize - total, page);
            len = len < c->size ? len : c->size;
            total += len;
            need += len;
            nruns++;
        }
    }
    if (p->limit && (need > p->limit || p->reserved > p->limit - need))
        return GK_EDEVOOM;
    run stack_runs[8];
    run *runs = nruns <= 8 ? stack_runs : gk__malloc(nruns * sizeof *runs);
    gk__block *spare = gk__block_new(p);
    if (!runs || !spare) {
        if (runs != stack_runs)
            free(runs);
        if (spare)
            gk__block_recycle(p, spare);
        return -ENOMEM;
    }
    /* Take the chain: free blocks leave the cache (HELD), unmapped ones are cut to what is needed
     * (MAPPING); nobody else touches them until they are back. */
    gk__block *last = NULL;
    size_t k = 0;
    total = 0;
    for (gk__block *c = start; total < r->rsize; c = c->next) {
        if (c->state == GK__FREE) {
            gk__cache_remove(p, c);
            c->state = GK__HELD;
        } else {
            size_t len = round_up(r->rsize - total, page);
            gk__unmapped_del(s, c);
            if (len < c->size) {
                split_at(c, len, spare);
                spare->state = GK__UNMAPPED;
                gk__unmapped_add(s, spare);
                spare = NULL;
            }
            c->state = GK__MAPPING;
            runs[k++] = (run){c->addr, c->size};
        }
        total += c->size;
        s->busy++;
        last = c;
    }
    if (spare)
        gk__block_recycle(p, spare);
    p->reserved += need;
    size_t ok = 0;
    int rc = 0;
    if (nruns) {
        bool unlock = p->cfg.release_lock_on_device_alloc;
        uint64_t t0 = gk__pool_now_ns();
        if (unlock)
            gk__unlock_for_device(p);
        for (; ok < nruns; ok++)
            if ((rc = gk_device_vm_map(p->dev, (void *)runs[ok].addr, runs[ok].size)) != 0)
                break;
        uint64_t t1 = gk__pool_now_ns();
        if (unlock)
            gk__relock_after_device(p);
        p->stats.backend_ns += t1 - t0;
        if (rc)
            gk__note_device_error(p, "map");
    }
    size_t mapped = 0;
    for (size_t i = 0; i < ok; i++) {
        mapped += runs[i].size;
        if (p->hist_cap)
            gk__hist_push(p, GK__ACT_SEGMENT_MAP, runs[i].addr, runs[i].size, s->stream);
    }
    if (runs != stack_runs)
        free(runs);
    p->reserved -= need - mapped;
    s->mapped += mapped;
    p->stats.num_device_alloc += ok;
    if (mapped)
        gk__stat_add(p, p->stats.reserved_bytes, s->kind, (int64_t)mapped);
    if (rc == 0) {
        /* One free block from the chain, cut at its start. */
        while (start != last) {
            bool end = start->next == last;
            gk__block_absorb(p, start);
            s->busy--;
            if (end)
                break;
        }
        s->busy--;
        start->state = GK__FREE;
        rc = gk__take_block(p, r, start, false);
        if (rc)
            gk__cache_merge(p, start);
        else
            *out = start;
        return rc;
    }
    /* Runs the device refused go back to unmapped; everything else is cached. */
    size_t j = 0;
    for (gk__block *c = start, *n;; c = n) {
        n = c->next;
        bool end = c == last;
        s->busy--;
        if (c->state == GK__MAPPING && j++ >= ok) {
            c->state = GK__UNMAPPED;
            gk__unmapped_add(s, c);
            unmapped_merge(p, s, c);
        } else {
            gk__cache_merge(p, c);
        }
        if (end)
            break;
    }
    return rc;
}

int gk__expand_grow(gk_pool *p, const gk__request *r, gk__block **out)
{
    size_t page = page_for(p, r->kind);
    gk__block *start = find_chain(p, r);
    if (!start) {
        int rc = new_range(p, r, page);
        if (rc)
            return rc;
        start = find_chain(p, r);
        if (!start)
            return GK_EDEVOOM;
    }
    return map_chain(p, r, start, page, out);
}

/* --- giving pages back -------------------------------------------------------------------------- */

int gk__expand_plan_release(gk_pool *p, gk__segment *s, gk__rel *rel, bool drop)
{
    if (drop && !s->busy && s->head->state == GK__UNMAPPED && !s->head->next) {
        gk__rel_item *it = gk__rel_push(rel);
        if (!it)
            return -ENOMEM;
        gk__unmapped_del(s, s->head);
        s->head->state = GK__RELEASING;
        s->busy++;
        it->what = GK__REL_VA;
        it->seg = s;
        it->addr = s->base;
        it->size = s->size;
        return 0;
    }
    for (gk__block *b = s->head, *nb; b; b = nb) {
        nb = b->next;
        if (b->state != GK__FREE)
            continue;
        /* The whole pages inside the free block: the partial pages at its ends are shared with
         * live neighbours and stay mapped. */
        uintptr_t lo = s->base + round_up(b->addr - s->base, s->page);
        uintptr_t hi = s->base + (b->addr + b->size - s->base) / s->page * s->page;
        if (hi <= lo)
            continue;
        gk__block *head = lo > b->addr ? gk__block_new(p) : NULL;
        gk__block *tail = hi < b->addr + b->size ? gk__block_new(p) : NULL;
        gk__block *spare = gk__block_new(p);
        gk__rel_item *it = spare && (head || lo == b->addr) && (tail || hi == b->addr + b->size)
                               ? gk__rel_push(rel)
                               : NULL;
        if (!it) {
            gk__block *v[3] = {head, tail, spare};
            for (int i = 0; i < 3; i++)
                if (v[i])
                    gk__block_recycle(p, v[i]);
            return -ENOMEM;
        }
        gk__cache_remove(p, b);
        gk__block *mid = b;
        if (head) {
            split_at(b, lo - b->addr, head);
            mid = head;
            gk__cache_insert(p, b);
        }
        if (tail) {
            split_at(mid, hi - mid->addr, tail);
            gk__cache_insert(p, tail);
        }
        mid->state = GK__UNMAPPING;
        s->busy++;
        it->what = GK__REL_UNMAP;
        it->seg = s;
        it->blk = mid;
        it->spare = spare;
        it->addr = mid->addr;
        it->size = mid->size;
        it->page = s->page;
        it->stream = s->stream;
    }
    return 0;
}

void gk__expand_finish_unmap(gk_pool *p, gk__rel_item *it)
{
    gk__block *mid = it->blk;
    gk__segment *s = mid->seg;
    size_t done = it->done;
    s->busy--;
    if (it->rc)
        gk__error(it->rc, "unmap: %s", gk_last_error());
    if (done == 0) {
        gk__block_recycle(p, it->spare);
        gk__cache_merge(p, mid);
        return;
    }
    if (done < mid->size) {
        split_at(mid, done, it->spare);
        gk__cache_merge(p, it->spare);
    } else {
        gk__block_recycle(p, it->spare);
    }
    uintptr_t addr = mid->addr;
    mid->state = GK__UNMAPPED;
    gk__unmapped_add(s, mid);
    unmapped_merge(p, s, mid);
    s->mapped -= done;
    p->reserved -= done;
    p->stats.num_device_free++;
    gk__stat_add(p, p->stats.reserved_bytes, s->kind, -(int64_t)done);
    if (p->hist_cap)
        gk__hist_push(p, GK__ACT_SEGMENT_UNMAP, addr, done, s->stream);
}

void gk__expand_finish_va(gk_pool *p, gk__rel_item *it)
{
    gk__segment *s = it->seg;
    /* The device forgets the range even when the driver fails to free it: drop it either way. */
    if (it->rc)
        gk__error(it->rc, "address release: %s", gk_last_error());
    gk__stat_add(p, p->stats.segment, s->kind, -1);
    gk__segment_unlink(p, s);
    gk__block_recycle(p, s->head);
    free(s);
}

void gk__expand_destroy(gk_pool *p, gk__segment *s)
{
    for (gk__block *b = s->head; b;) {
        if (b->state == GK__UNMAPPED) {
            b = b->next;
            continue;
        }
        uintptr_t start = b->addr, end = start;
        while (b && b->state != GK__UNMAPPED) {
            end = b->addr + b->size;
            b = b->next;
        }
        int rc;
        gk__unmap_run(p, start, end - start, s->page, &rc);
    }
    gk_device_vm_release(p->dev, (void *)s->base, s->size);
}
