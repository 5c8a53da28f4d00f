/* The model of the caching pool and of the sim device (pool_model.h). Every structure is an array
 * and every choice a linear scan, so each rule reads as it is documented in docs/pool.md. */
#include "pool_model.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_model_int.h"

/* --- sizes ------------------------------------------------------------------------------------ */

static uint64_t up(uint64_t v, uint64_t m)
{
    return (v + m - 1) / m * m;
}

/* --- the device: first-fit spaces ---------------------------------------------------------------- */

static void space_init(pm_space *s, uint64_t base, uint64_t size)
{
    memset(s, 0, sizeof *s);
    s->base = base;
    s->size = size;
    if (size) {
        s->f = malloc(sizeof *s->f);
        s->f[0] = (pm_range){base, size};
        s->n = s->cap = 1;
    }
}

/* First fit: the lowest free range that is large enough; 0 when none. */
static uint64_t space_alloc(pm_space *s, uint64_t size)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->f[i].size < size)
            continue;
        uint64_t a = s->f[i].addr;
        s->f[i].addr += size;
        s->f[i].size -= size;
        if (s->f[i].size == 0) {
            memmove(&s->f[i], &s->f[i + 1], (s->n - i - 1) * sizeof s->f[0]);
            s->n--;
        }
        return a;
    }
    return 0;
}

static void space_free(pm_space *s, uint64_t addr, uint64_t size)
{
    size_t i = 0;
    while (i < s->n && s->f[i].addr < addr)
        i++;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->f = realloc(s->f, s->cap * sizeof *s->f);
    }
    memmove(&s->f[i + 1], &s->f[i], (s->n - i) * sizeof s->f[0]);
    s->f[i] = (pm_range){addr, size};
    s->n++;
    if (i + 1 < s->n && s->f[i].addr + s->f[i].size == s->f[i + 1].addr) {
        s->f[i].size += s->f[i + 1].size;
        memmove(&s->f[i + 1], &s->f[i + 2], (s->n - i - 2) * sizeof s->f[0]);
        s->n--;
    }
    if (i > 0 && s->f[i - 1].addr + s->f[i - 1].size == s->f[i].addr) {
        s->f[i - 1].size += s->f[i].size;
        memmove(&s->f[i], &s->f[i + 1], (s->n - i - 1) * sizeof s->f[0]);
        s->n--;
    }
}

#define FAKE_BASE ((uint64_t)1 << 55) /* where an unbacked sim puts its memory */

void pm_dev_open(pm_dev *d, const pm_device *cfg)
{
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    uint64_t heap = cfg->capacity & ~(cfg->alignment - 1);
    space_init(&d->heap, FAKE_BASE, heap);
    space_init(&d->va, up(FAKE_BASE + heap, cfg->granularity), cfg->va_size);
}

void pm_dev_close(pm_dev *d)
{
    free(d->heap.f);
    free(d->va.f);
}

/* Admission of an allocation or a mapping (the sim's capacity check). */
static bool admit(pm_dev *d, uint64_t size)
{
    return size <= d->cfg.capacity - d->used;
}

uint64_t pm_dev_malloc(pm_dev *d, uint64_t size)
{
    uint64_t r = size > d->cfg.capacity ? size : up(size, d->cfg.alignment);
    if (!admit(d, r))
        return 0;
    uint64_t a = space_alloc(&d->heap, r);
    if (a)
        d->used += r;
    return a;
}

void pm_dev_free(pm_dev *d, uint64_t addr, uint64_t size)
{
    uint64_t r = up(size, d->cfg.alignment);
    space_free(&d->heap, addr, r);
    d->used -= r;
}

uint64_t pm_dev_reserve(pm_dev *d, uint64_t size)
{
    if (size > d->cfg.va_size)
        return 0;
    return space_alloc(&d->va, size);
}

void pm_dev_release(pm_dev *d, uint64_t addr, uint64_t size)
{
    space_free(&d->va, addr, size);
}

bool pm_dev_map(pm_dev *d, uint64_t size)
{
    if (!admit(d, size))
        return false;
    d->used += size;
    return true;
}

void pm_dev_unmap(pm_dev *d, uint64_t size)
{
    d->used -= size;
}

/* --- statistics -------------------------------------------------------------------------------- */

static void bump(gk_pool_stat *s, int64_t d)
{
    s->current += d;
    if (d > 0)
        s->allocated += (uint64_t)d;
    else
        s->freed += (uint64_t)-d;
    if (s->current > s->peak)
        s->peak = s->current;
}

static void bump2(gk_pool_stat *arr, int kind, int64_t d)
{
    bump(&arr[GK_POOL_ALL], d);
    bump(&arr[kind], d);
}

/* --- segments and blocks ----------------------------------------------------------------------- */

static void insert_block(pm_seg *s, size_t at, pm_block b)
{
    if (s->nb == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->b = realloc(s->b, s->cap * sizeof *s->b);
    }
    memmove(&s->b[at + 1], &s->b[at], (s->nb - at) * sizeof s->b[0]);
    s->b[at] = b;
    s->nb++;
}

static void erase_block(pm_seg *s, size_t at)
{
    memmove(&s->b[at], &s->b[at + 1], (s->nb - at - 1) * sizeof s->b[0]);
    s->nb--;
}

static pm_seg *add_seg(pm_pool *p)
{
    if (p->nsegs == p->capsegs) {
        p->capsegs = p->capsegs ? p->capsegs * 2 : 8;
        p->segs = realloc(p->segs, p->capsegs * sizeof *p->segs);
    }
    pm_seg *s = calloc(1, sizeof *s);
    p->segs[p->nsegs++] = s;
    return s;
}

static void drop_seg(pm_pool *p, pm_seg *s)
{
    for (size_t i = 0; i < p->nsegs; i++) {
        if (p->segs[i] == s) {
            memmove(&p->segs[i], &p->segs[i + 1], (p->nsegs - i - 1) * sizeof p->segs[0]);
            p->nsegs--;
            break;
        }
    }
    free(s->b);
    free(s);
}

/* A block becomes cached (FREE): the counts that depend on it. A classic segment whose only
 * block is cached may go back to the device and gets its age. */
static void cache_add(pm_pool *p, pm_seg *s, size_t i)
{
    s->b[i].state = PM_FREE;
    if (s->exp)
        return;
    if (s->nb > 1) {
        bump2(p->st.inactive_split, s->kind, 1);
        bump2(p->st.inactive_split_bytes, s->kind, (int64_t)s->b[i].size);
    } else {
        s->rel = true;
        s->free_tick = p->ticks[s->kind];
        s->rel_seq = ++p->rel_counter;
    }
}

/* A cached block leaves the cache (to be handed out, merged, or given back). */
static void cache_del(pm_pool *p, pm_seg *s, size_t i)
{
    if (s->exp)
        return;
    if (s->nb > 1) {
        bump2(p->st.inactive_split, s->kind, -1);
        bump2(p->st.inactive_split_bytes, s->kind, -(int64_t)s->b[i].size);
    } else {
        s->rel = false;
    }
}

/* Block i (not cached) becomes free: merge with free neighbours (PyTorch's try_merge_blocks),
 * then cache the result. */
static void cache_merge(pm_pool *p, pm_seg *s, size_t i)
{
    if (i + 1 < s->nb && s->b[i + 1].state == PM_FREE) {
        cache_del(p, s, i + 1);
        s->b[i].size += s->b[i + 1].size;
        erase_block(s, i + 1);
    }
    if (i > 0 && s->b[i - 1].state == PM_FREE) {
        cache_del(p, s, i - 1);
        s->b[i - 1].size += s->b[i].size;
        erase_block(s, i);
        i--;
    }
    cache_add(p, s, i);
}

/* --- the pool ---------------------------------------------------------------------------------- */

uint64_t pm_round_size(const gk_pool_config *c, uint64_t size)
{
    if (size <= c->round_bytes)
        return c->round_bytes;
    if (c->divisions > 1 && size > (uint64_t)c->round_bytes * c->divisions) {
        uint64_t f = 1;
        while (f <= size / 2)
            f *= 2; /* the power of two at or below size */
        if (f == size)
            return size;
        uint64_t step = f / c->divisions;
        return up(size, step < c->round_bytes ? c->round_bytes : step);
    }
    return up(size, c->round_bytes);
}

/* PyTorch's get_allocation_size. */
static uint64_t alloc_size(const gk_pool_config *c, uint64_t rsize)
{
    if (rsize <= c->small_max)
        return c->small_segment;
    if (rsize < c->min_large_alloc)
        return c->large_segment;
    return up(rsize, c->round_large);
}

static uint64_t page_for(const pm_pool *p, int kind)
{
    uint64_t g = p->dev->cfg.granularity;
    return up(kind == GK_POOL_SMALL ? p->cfg.small_segment : p->cfg.page_size, g);
}

int pm_pool_open(pm_pool *p, const gk_pool_config *cfg, pm_dev *dev)
{
    memset(p, 0, sizeof *p);
    p->cfg = *cfg;
    p->dev = dev;
    p->total = dev->cfg.capacity;
    p->max_request = p->total;
    p->exp = cfg->expandable_segments != 0;
    if (p->exp) {
        /* Expandable segments need virtual memory, pages of at most 1/8 of the device, and room
         * for one full range (1.125 x the device) in its address space. */
        bool ok = dev->cfg.va_size > 0;
        for (int k = GK_POOL_SMALL; ok && k <= GK_POOL_LARGE; k++)
            ok = page_for(p, k) <= p->total / 8;
        if (ok) {
            uint64_t va = up(p->total / 8 * 9, page_for(p, GK_POOL_LARGE));
            uint64_t a = pm_dev_reserve(dev, va);
            ok = a != 0;
            if (ok)
                pm_dev_release(dev, a, va);
        }
        if (!ok) {
            p->exp = false;
            p->st.expandable_fallback = 1;
        }
    }
    p->st.expandable_segments = p->exp;
    uint64_t lim = cfg->limit_bytes;
    if (cfg->limit_fraction > 0) {
        double f = cfg->limit_fraction * (double)p->total;
        uint64_t fl = (uint64_t)f;
        if (fl == 0)
            fl = 1;
        if (!lim || fl < lim)
            lim = fl;
    }
    p->limit = lim;
    p->st.max_split_size = cfg->max_split_size;
    p->st.limit = lim;
    return 0;
}

void pm_pool_close(pm_pool *p)
{
    for (size_t i = 0; i < p->nsegs; i++) {
        free(p->segs[i]->b);
        free(p->segs[i]);
    }
    free(p->segs);
}

typedef struct req {
    uint64_t size, rsize, alloc, stream;
    int kind;
} req;

/* Hands out the first rsize bytes of free block i of s (PyTorch's alloc_found_block), splitting
 * off the rest when should_split allows it. `cached`: the block was in the cache. */
static void take(pm_pool *p, pm_seg *s, size_t i, const req *r, bool cached, uint64_t *out)
{
    if (cached)
        cache_del(p, s, i);
    pm_block *b = &s->b[i];
    uint64_t rest = b->size - r->rsize;
    bool split = s->kind == GK_POOL_SMALL || s->exp
                     ? rest >= p->cfg.round_bytes
                     : r->rsize < p->cfg.max_split_size && rest > p->cfg.small_max;
    b->state = PM_LIVE;
    b->requested = r->size;
    if (split) {
        b->size = r->rsize;
        pm_block nb = {b->addr + r->rsize, rest, 0, b->stream, PM_FREE};
        insert_block(s, i + 1, nb);
        b = &s->b[i];
        cache_merge(p, s, i + 1);
    }
    bump2(p->st.allocation, s->kind, 1);
    bump2(p->st.allocated_bytes, s->kind, (int64_t)b->size);
    bump2(p->st.active, s->kind, 1);
    bump2(p->st.active_bytes, s->kind, (int64_t)b->size);
    bump2(p->st.requested_bytes, s->kind, (int64_t)r->size);
    if (b->size >= p->cfg.max_split_size)
        bump(&p->st.oversize_allocations, 1);
    *out = b->addr;
}

/* What a free block of an expandable segment could grow to. */
static uint64_t exp_size(const pm_seg *s, size_t i)
{
    return s->b[i].size +
           (i + 1 < s->nb && s->b[i + 1].state == PM_UNMAPPED ? s->b[i + 1].size : 0);
}

typedef struct cand {
    pm_seg *s;
    size_t i;
} cand;

static int by_size_addr(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    uint64_t sa = a->s->b[a->i].size, sb = b->s->b[b->i].size;
    if (sa != sb)
        return sa < sb ? -1 : 1;
    uint64_t aa = a->s->b[a->i].addr, ab = b->s->b[b->i].addr;
    return (aa > ab) - (aa < ab);
}

/* The cached blocks of r's pool and stream of at least `min` bytes, sorted by (size, address). */
static cand *cached(pm_pool *p, const req *r, uint64_t min, size_t *count)
{
    size_t n = 0, cap = 16;
    cand *v = malloc(cap * sizeof *v);
    for (size_t k = 0; k < p->nsegs; k++) {
        pm_seg *s = p->segs[k];
        for (size_t i = 0; s->kind == r->kind && i < s->nb; i++) {
            const pm_block *b = &s->b[i];
            if (b->state != PM_FREE || b->stream != r->stream || b->size < min)
                continue;
            if (n == cap)
                v = realloc(v, (cap *= 2) * sizeof *v);
            v[n++] = (cand){s, i};
        }
    }
    qsort(v, n, sizeof *v, by_size_addr);
    *count = n;
    return v;
}

/* PyTorch's get_free_block: the smallest cached block of the request's pool and stream that is
 * large enough (then, in expandable segments, moving on while the next could grow less), and
 * for classic blocks the oversize rules. One lookup ages the pool's cached blocks by one. */
static bool find_fit(pm_pool *p, const req *r, cand *out)
{
    p->ticks[r->kind]++;
    size_t n;
    cand *v = cached(p, r, r->rsize, &n);
    bool found = false;
    if (n) {
        size_t j = 0;
        if (v[0].s->exp) {
            while (j + 1 < n && exp_size(v[j + 1].s, v[j + 1].i) < exp_size(v[j].s, v[j].i))
                j++;
            found = true;
        } else {
            uint64_t sz = v[0].s->b[v[0].i].size, ms = p->cfg.max_split_size;
            found = !(r->rsize < ms && sz >= ms) &&
                    !(r->rsize >= ms && sz - r->rsize >= p->cfg.max_non_split_rounding);
        }
        *out = v[j];
    }
    free(v);
    return found;
}

/* --- giving memory back --------------------------------------------------------------------------- */

static void release_classic(pm_pool *p, pm_seg *s)
{
    cache_del(p, s, 0);
    pm_dev_free(p->dev, s->base, s->size);
    p->reserved -= s->size;
    p->st.num_device_free++;
    bump2(p->st.segment, s->kind, -1);
    bump2(p->st.reserved_bytes, s->kind, -(int64_t)s->size);
    if (s->size >= p->cfg.max_split_size)
        bump(&p->st.oversize_segments, -1);
    drop_seg(p, s);
}

/* An expandable segment after a change: adjacent free blocks merge, and so do adjacent unmapped
 * ones (there are no statistics to keep for them: expandable blocks are never "split"). */
static void normalize(pm_seg *s)
{
    for (size_t i = 0; i + 1 < s->nb;) {
        uint8_t a = s->b[i].state, b = s->b[i + 1].state;
        if (a == b && (a == PM_FREE || a == PM_UNMAPPED)) {
            s->b[i].size += s->b[i + 1].size;
            erase_block(s, i + 1);
        } else {
            i++;
        }
    }
}

/* Unmaps the whole pages inside every free block of an expandable segment (PyTorch's
 * unmap_block): the partial pages at a free block's ends are shared with live neighbours. */
static void unmap_free_pages(pm_pool *p, pm_seg *s)
{
    for (size_t i = 0; i < s->nb; i++) {
        pm_block b = s->b[i];
        if (b.state != PM_FREE)
            continue;
        uint64_t lo = s->base + up(b.addr - s->base, s->page);
        uint64_t hi = s->base + (b.addr + b.size - s->base) / s->page * s->page;
        if (hi <= lo)
            continue;
        size_t mid = i;
        if (lo > b.addr) {
            s->b[i].size = lo - b.addr;
            insert_block(s, i + 1, (pm_block){lo, b.addr + b.size - lo, 0, b.stream, PM_FREE});
            mid = i + 1;
        }
        if (hi < b.addr + b.size) {
            s->b[mid].size = hi - lo;
            insert_block(s, mid + 1, (pm_block){hi, b.addr + b.size - hi, 0, b.stream, PM_FREE});
        }
        s->b[mid].state = PM_UNMAPPED;
        pm_dev_unmap(p->dev, hi - lo);
        s->mapped -= hi - lo;
        p->reserved -= hi - lo;
        p->st.num_device_free++;
        bump2(p->st.reserved_bytes, s->kind, -(int64_t)(hi - lo));
        i = mid; /* the piece after it (if any) is a partial page: nothing to unmap there */
    }
    normalize(s);
}

static bool empty_range(const pm_seg *s)
{
    return s->exp && s->nb == 1 && s->b[0].state == PM_UNMAPPED;
}

static void release_range(pm_pool *p, pm_seg *s)
{
    pm_dev_release(p->dev, s->base, s->size);
    bump2(p->st.segment, s->kind, -1);
    drop_seg(p, s);
}

/* PyTorch's release_cached_blocks (the ladder's rung 6 and empty_cache): wait for every event,
 * free every unsplit cached classic segment, unmap every free page, give back every address
 * range with nothing mapped (those empty before, then those the unmapping emptied). */
void pm_release_cached(pm_pool *p)
{
    p->st.num_sync_all_streams++;
    for (size_t k = 0; k < p->nsegs;) {
        pm_seg *s = p->segs[k];
        if (s->exp && empty_range(s)) {
            release_range(p, s);
            continue;
        }
        if (s->exp)
            unmap_free_pages(p, s);
        else if (s->rel) {
            release_classic(p, s);
            continue;
        }
        k++;
    }
    for (size_t k = 0; k < p->nsegs;) {
        pm_seg *s = p->segs[k];
        if (s->exp && s->mapped == 0 && empty_range(s)) {
            release_range(p, s);
            continue;
        }
        k++;
    }
}

/* PyTorch's garbage_collect_cached_blocks: when reserved bytes pass gc_threshold x the limit (the
 * device without one), free every releasable large segment at least as old as the average, in
 * passes with the average of the rest, until the excess is reclaimed. */
static void collect_garbage(pm_pool *p)
{
    if (p->cfg.gc_threshold <= 0)
        return;
    uint64_t lim = p->limit ? p->limit : p->total;
    uint64_t threshold = (uint64_t)(p->cfg.gc_threshold * (double)lim);
    if (p->reserved <= threshold)
        return;
    p->st.num_gc_runs++;
    uint64_t target = p->reserved - threshold, got = 0;
    while (got < target) {
        /* The releasable large segments, oldest first. */
        size_t n = 0;
        pm_seg **v = malloc((p->nsegs + 1) * sizeof *v);
        for (size_t k = 0; k < p->nsegs; k++)
            if (!p->segs[k]->exp && p->segs[k]->kind == GK_POOL_LARGE && p->segs[k]->rel)
                v[n++] = p->segs[k];
        for (size_t a = 1; a < n; a++) /* insertion sort by rel_seq */
            for (size_t b = a; b > 0 && v[b - 1]->rel_seq > v[b]->rel_seq; b--) {
                pm_seg *t = v[b];
                v[b] = v[b - 1];
                v[b - 1] = t;
            }
        pm_u128 sum = 0;
        for (size_t a = 0; a < n; a++)
            sum += v[a]->free_tick;
        size_t freed = 0;
        for (size_t a = 0; a < n && (pm_u128)v[a]->free_tick * n <= sum; a++) {
            got += v[a]->size;
            release_classic(p, v[a]);
            freed++;
        }
        free(v);
        if (!freed)
            break;
    }
}

/* PyTorch's release_available_cached_blocks (rung 5): with key = max(request, max_split_size),
 * free the smallest cached classic block of the request's pool and stream of at least key, else
 * the largest oversize ones below key until key bytes are freed. */
static bool release_oversize(pm_pool *p, const req *r)
{
    uint64_t ms = p->cfg.max_split_size, key = r->rsize > ms ? r->rsize : ms;
    size_t n;
    cand *v = cached(p, r, 0, &n);
    size_t j = 0;
    while (j < n && v[j].s->b[v[j].i].size < key)
        j++;
    bool enough = false;
    if (j < n && !v[j].s->exp && v[j].s->rel) {
        release_classic(p, v[j].s);
        enough = true;
    } else {
        uint64_t total = 0;
        for (size_t a = j; a-- > 0 && total < key;) {
            pm_seg *s = v[a].s;
            uint64_t sz = s->b[v[a].i].size;
            if (sz < ms)
                break;
            if (!s->exp && s->rel) {
                total += sz;
                release_classic(p, s);
            }
        }
        enough = total >= key;
    }
    free(v);
    return enough;
}

/* --- growth ------------------------------------------------------------------------------------ */

/* A new classic segment of r->alloc bytes (PyTorch's alloc_block): 0, or -1 out of memory. */
static int new_classic(pm_pool *p, const req *r, uint64_t *out)
{
    uint64_t size = r->alloc;
    if (p->limit && (size > p->limit || p->reserved > p->limit - size))
        return -1;
    uint64_t a = pm_dev_malloc(p->dev, size);
    if (!a)
        return -1;
    pm_seg *s = add_seg(p);
    s->base = a;
    s->size = size;
    s->kind = r->kind;
    s->stream = r->stream;
    insert_block(s, 0, (pm_block){a, size, 0, r->stream, PM_FREE});
    p->reserved += size;
    p->st.num_device_alloc++;
    bump2(p->st.segment, s->kind, 1);
    bump2(p->st.reserved_bytes, s->kind, (int64_t)size);
    if (size >= p->cfg.max_split_size)
        bump(&p->st.oversize_segments, 1);
    take(p, s, 0, r, false, out);
    return 0;
}

static uint64_t chain_room(const pm_seg *s, size_t i)
{
    uint64_t t = 0;
    for (; i < s->nb && (s->b[i].state == PM_FREE || s->b[i].state == PM_UNMAPPED); i++)
        t += s->b[i].size;
    return t;
}

/* Best fit among chains of free and unmapped blocks: each starts at an unmapped block or at the
 * free block just before it; the one with the least room that is enough, lowest address on a
 * tie. */
static bool find_chain(pm_pool *p, const req *r, cand *out)
{
    bool found = false;
    uint64_t best = 0;
    for (size_t k = 0; k < p->nsegs; k++) {
        pm_seg *s = p->segs[k];
        if (!s->exp || s->kind != r->kind || s->stream != r->stream)
            continue;
        for (size_t i = 0; i < s->nb; i++) {
            if (s->b[i].state != PM_UNMAPPED)
                continue;
            size_t st = i > 0 && s->b[i - 1].state == PM_FREE ? i - 1 : i;
            uint64_t room = chain_room(s, st);
            if (room < r->rsize)
                continue;
            if (!found || room < best || (room == best && s->b[st].addr < out->s->b[out->i].addr)) {
                found = true;
                best = room;
                *out = (cand){s, st};
            }
        }
    }
    return found;
}

/* A new address range for r's stream and pool: 1.125 x the device (at least the request),
 * halved while the address space refuses it. 0, or -2 when the address space is exhausted. */
static int new_range(pm_pool *p, const req *r, uint64_t page)
{
    uint64_t need = up(r->rsize, page), va = up(p->total / 8 * 9, page);
    if (va < need)
        va = need;
    uint64_t a;
    for (;;) {
        a = pm_dev_reserve(p->dev, va);
        if (a || va == need)
            break;
        va = up(va / 2, page);
        if (va < need)
            va = need;
    }
    if (!a)
        return -2;
    pm_seg *s = add_seg(p);
    s->base = a;
    s->size = va;
    s->kind = r->kind;
    s->stream = r->stream;
    s->exp = true;
    s->page = page;
    insert_block(s, 0, (pm_block){a, va, 0, r->stream, PM_UNMAPPED});
    bump2(p->st.segment, s->kind, 1);
    return 0;
}

/* Maps what the chain from block i needs (one device call per unmapped block in it) and hands
 * out its start. A mapping the device refuses stays unmapped, the ones before it stay mapped and
 * cached: -1. */
static int map_chain(pm_pool *p, pm_seg *s, size_t i, const req *r, uint64_t page, uint64_t *out)
{
    uint64_t total = 0, need = 0;
    for (size_t j = i; total < r->rsize; j++) {
        uint64_t sz = s->b[j].size;
        if (s->b[j].state == PM_FREE) {
            total += sz;
        } else {
            uint64_t len = up(r->rsize - total, page);
            len = len < sz ? len : sz;
            total += len;
            need += len;
        }
    }
    if (p->limit && (need > p->limit || p->reserved > p->limit - need))
        return -1;
    /* Cut the last unmapped block to what is needed, and map in order. */
    size_t last = i;
    bool failed = false;
    total = 0;
    for (size_t j = i; total < r->rsize; j++) {
        pm_block *b = &s->b[j];
        if (b->state == PM_FREE) {
            cache_del(p, s, j);
            b->state = PM_HELD;
        } else {
            uint64_t len = up(r->rsize - total, page);
            if (len < b->size) {
                pm_block rest = {b->addr + len, b->size - len, 0, b->stream, PM_UNMAPPED};
                b->size = len;
                insert_block(s, j + 1, rest);
                b = &s->b[j];
            }
            if (!failed && pm_dev_map(p->dev, b->size)) {
                b->state = PM_HELD; /* now mapped */
                s->mapped += b->size;
                p->reserved += b->size;
                p->st.num_device_alloc++;
                bump2(p->st.reserved_bytes, s->kind, (int64_t)b->size);
            } else {
                failed = true;
                b->state = PM_MAPPING; /* not mapped */
            }
        }
        total += b->size;
        last = j;
    }
    if (!failed) {
        for (size_t j = last; j > i; j--) {
            s->b[i].size += s->b[j].size;
            erase_block(s, j);
        }
        s->b[i].state = PM_FREE;
        take(p, s, i, r, false, out);
        return 0;
    }
    /* Back: mapped pieces become free blocks, refused ones unmapped ones, each merging with its
     * kind. */
    for (size_t j = i; j <= last; j++)
        s->b[j].state = s->b[j].state == PM_HELD ? PM_FREE : PM_UNMAPPED;
    normalize(s);
    return -1;
}

/* Rung 4. 0, -1 out of memory. */
static int backend(pm_pool *p, const req *r, uint64_t *out)
{
    if (p->exp) {
        uint64_t page = page_for(p, r->kind);
        cand c;
        int rc = 0;
        if (!find_chain(p, r, &c)) {
            rc = new_range(p, r, page);
            if (rc == 0 && !find_chain(p, r, &c))
                rc = -1;
        }
        if (rc == 0)
            return map_chain(p, c.s, c.i, r, page, out);
        if (rc != -2)
            return rc;
        p->st.expandable_fallback = 1; /* no address space: a classic segment */
    }
    return new_classic(p, r, out);
}

int pm_malloc(pm_pool *p, uint64_t size, uint64_t stream, uint64_t *out)
{
    *out = 0;
    if (size > p->max_request) {
        p->st.num_ooms++;
        return -1;
    }
    req r = {size, pm_round_size(&p->cfg, size), 0, stream, 0};
    r.kind = r.rsize <= p->cfg.small_max ? GK_POOL_SMALL : GK_POOL_LARGE;
    r.alloc = alloc_size(&p->cfg, r.rsize);
    cand c;
    if (find_fit(p, &r, &c)) {
        take(p, c.s, c.i, &r, true, out);
        p->st.num_cache_hits++;
        return 0;
    }
    collect_garbage(p);
    if (backend(p, &r, out) == 0)
        return 0;
    if (p->cfg.max_split_size != SIZE_MAX && release_oversize(p, &r) && backend(p, &r, out) == 0)
        return 0;
    pm_release_cached(p);
    p->st.num_alloc_retries++;
    if (find_fit(p, &r, &c)) {
        take(p, c.s, c.i, &r, true, out);
        p->st.num_cache_hits++;
        return 0;
    }
    if (backend(p, &r, out) == 0)
        return 0;
    p->st.num_ooms++;
    return -1;
}

/* Frees a live block (the caller knows it is one). */
void pm_free(pm_pool *p, uint64_t addr)
{
    for (size_t k = 0; k < p->nsegs; k++) {
        pm_seg *s = p->segs[k];
        if (addr < s->base || addr - s->base >= s->size)
            continue;
        for (size_t i = 0; i < s->nb; i++) {
            pm_block *b = &s->b[i];
            if (b->addr != addr || b->state != PM_LIVE)
                continue;
            bump2(p->st.allocation, s->kind, -1);
            bump2(p->st.allocated_bytes, s->kind, -(int64_t)b->size);
            bump2(p->st.requested_bytes, s->kind, -(int64_t)b->requested);
            if (b->size >= p->cfg.max_split_size)
                bump(&p->st.oversize_allocations, -1);
            bump2(p->st.active, s->kind, -1);
            bump2(p->st.active_bytes, s->kind, -(int64_t)b->size);
            b->requested = 0;
            cache_merge(p, s, i);
            return;
        }
    }
}

/* The stream-destroy hook: give back the stream's unsplit cached segments, unmap the free pages
 * of its ranges, and hand the rest to the default stream. */
void pm_stream_destroyed(pm_pool *p, uint64_t stream)
{
    for (size_t k = 0; k < p->nsegs;) {
        pm_seg *s = p->segs[k];
        if (s->stream != stream) {
            k++;
            continue;
        }
        if (!s->exp && s->rel) {
            release_classic(p, s);
            continue;
        }
        if (s->exp)
            unmap_free_pages(p, s);
        s->stream = 0;
        for (size_t i = 0; i < s->nb; i++)
            s->b[i].stream = 0;
        k++;
    }
}

void pm_pool_stats(const pm_pool *p, gk_pool_stats *out)
{
    *out = p->st;
    uint64_t largest = 0, total = 0;
    for (size_t k = 0; k < p->nsegs; k++) {
        const pm_seg *s = p->segs[k];
        for (size_t i = 0; i < s->nb; i++) {
            if (s->b[i].state != PM_FREE)
                continue;
            total += s->b[i].size;
            largest = s->b[i].size > largest ? s->b[i].size : largest;
        }
    }
    out->largest_free_block = largest;
    out->free_cached_bytes = total;
}
