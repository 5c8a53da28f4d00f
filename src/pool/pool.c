/* The caching pool's core: creation and destruction, the allocation ladder, free with stream
 * events, and the block bookkeeping (cache insert and merge, the recycled block structs, the age
 * list of releasable segments). Segments come from the device (classic) or are address ranges
 * whose pages are mapped on demand (expandable, see expand.c). Every device allocation, mapping,
 * free and unmapping runs outside the pool lock (release.c, expand.c); an allocation or a free
 * that the cache serves takes the lock once and makes no device call. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

uint64_t gk__pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --- sizes -------------------------------------------------------------------------------- */

/* Rounds v up to a multiple of m. Callers keep v at most the device's memory and m at most 1 TiB
 * (the settings' ranges), so this never wraps. */
static size_t round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

/* Rounds v up to a multiple of the power of two m. */
static inline size_t round_up2(size_t v, size_t m)
{
    return (v + m - 1) & ~(m - 1);
}

/* round_bytes and divisions are powers of two (the settings' ranges), so are the steps. */
size_t gk__pool_round_size(const gk_pool_config *c, size_t size)
{
    if (size <= c->round_bytes)
        return c->round_bytes;
    if (c->divisions > 1 && size > c->round_bytes * c->divisions) {
        size_t floor2 = (size_t)1 << (63 - __builtin_clzll((unsigned long long)size));
        if (floor2 == size)
            return size;
        size_t step = floor2 / c->divisions;
        if (step < c->round_bytes)
            step = c->round_bytes;
        return round_up2(size, step);
    }
    return round_up2(size, c->round_bytes);
}

static size_t segment_size(const gk_pool_config *c, size_t rsize)
{
    if (rsize <= c->small_max)
        return c->small_segment;
    if (rsize < c->min_large_alloc)
        return c->large_segment;
    return round_up(rsize, c->round_large);
}

/* --- block structs ------------------------------------------------------------------------ */

#define SLAB 64 /* block structs per slab */

/* A new slab of block structs, 64-byte aligned, onto the spare list. */
static int grow_spare(gk_pool *p)
{
    if (p->nslabs == p->capslabs) {
        size_t n = p->capslabs ? p->capslabs * 2 : 8;
        void **a = gk__realloc(p->slabs, n * sizeof *a);
        if (!a)
            return -ENOMEM;
        p->slabs = a;
        p->capslabs = n;
    }
    void *mem = NULL;
    if (gk__posix_memalign(&mem, 64, SLAB * sizeof(gk__block)) != 0)
        return -ENOMEM;
    p->slabs[p->nslabs++] = mem;
    gk__block *v = mem;
    for (int i = SLAB - 1; i >= 0; i--) {
        v[i].unext = p->spare;
        p->spare = &v[i];
    }
    return 0;
}

gk__block *gk__block_new(gk_pool *p)
{
    if (!p->spare && grow_spare(p) != 0)
        return NULL;
    gk__block *b = p->spare;
    p->spare = b->unext;
    /* Every field a new block's user does not set itself (addr, size, stream, seg, prev and
     * next are always set; the tree fields when it is cached). */
    b->state = GK__FREE;
    b->event_count = 0;
    b->requested = 0;
    b->uses = NULL;
    b->nuses = b->cap_uses = 0;
    b->unext = b->uprev = NULL;
    b->tag[0] = '\0';
    b->left = b->right = NULL;
    b->prev = b->next = NULL;
    b->seg = NULL;
    return b;
}

void gk__block_absorb(gk_pool *p, gk__block *a)
{
    gk__block *b = a->next;
    a->size += b->size;
    a->next = b->next;
    if (b->next)
        b->next->prev = a;
    gk__block_recycle(p, b);
}

void gk__block_recycle(gk_pool *p, gk__block *b)
{
    free(b->uses);
    b->uses = NULL;
    b->unext = p->spare;
    p->spare = b;
}

/* --- releasable segments, by age ---------------------------------------------------------- */

static void age_add(gk_pool *p, gk__segment *s)
{
    gk__agelist *l = &p->rel[s->kind];
    s->free_tick = p->ticks[s->kind];
    s->rnext = NULL;
    s->rprev = l->tail;
    if (l->tail)
        l->tail->rnext = s;
    else
        l->head = s;
    l->tail = s;
    l->n++;
    l->tick_sum += s->free_tick;
    s->releasable = true;
}

static void age_del(gk_pool *p, gk__segment *s)
{
    gk__agelist *l = &p->rel[s->kind];
    if (s->rprev)
        s->rprev->rnext = s->rnext;
    else
        l->head = s->rnext;
    if (s->rnext)
        s->rnext->rprev = s->rprev;
    else
        l->tail = s->rprev;
    l->n--;
    l->tick_sum -= s->free_tick;
    s->releasable = false;
    s->rnext = s->rprev = NULL;
}

/* --- the cache ---------------------------------------------------------------------------- */

static bool counts_as_split(const gk__block *b)
{
    return !b->seg->expandable && (b->prev || b->next);
}

#define HOT static inline __attribute__((always_inline))

HOT void cache_insert(gk_pool *p, gk__block *b)
{
    gk__segment *s = b->seg;
    b->state = GK__FREE;
    gk__tree_insert(&p->free[s->kind], b);
    p->free_bytes += b->size;
    if (counts_as_split(b)) {
        gk__stat_add(p, p->stats.inactive_split, s->kind, 1);
        gk__stat_add(p, p->stats.inactive_split_bytes, s->kind, (int64_t)b->size);
    } else if (!s->expandable) {
        age_add(p, s); /* the whole segment is cached: it may go back to the device */
    }
}

HOT void cache_remove(gk_pool *p, gk__block *b)
{
    gk__segment *s = b->seg;
    if (counts_as_split(b)) {
        gk__stat_add(p, p->stats.inactive_split, s->kind, -1);
        gk__stat_add(p, p->stats.inactive_split_bytes, s->kind, -(int64_t)b->size);
    } else if (s->releasable) {
        age_del(p, s);
    }
    gk__tree_remove(&p->free[s->kind], b);
    p->free_bytes -= b->size;
}

/* b (not in the tree) becomes free: it merges with its free neighbours and is cached. */
HOT void cache_merge(gk_pool *p, gk__block *b)
{
    gk__block *a = b->prev;
    if (a && a->state == GK__FREE) {
        cache_remove(p, a);
        gk__block_absorb(p, a);
        b = a;
    }
    if (b->next && b->next->state == GK__FREE) {
        cache_remove(p, b->next);
        gk__block_absorb(p, b);
    }
    cache_insert(p, b);
}

void gk__cache_insert(gk_pool *p, gk__block *b)
{
    cache_insert(p, b);
}

void gk__cache_remove(gk_pool *p, gk__block *b)
{
    cache_remove(p, b);
}

void gk__cache_merge(gk_pool *p, gk__block *b)
{
    cache_merge(p, b);
}

/* The block's last event completed (or it had none): it becomes free and merges. */
HOT void free_completed(gk_pool *p, gk__block *b)
{
    int kind = b->seg->kind;
    gk__stat_add(p, p->stats.active, kind, -1);
    gk__stat_add(p, p->stats.active_bytes, kind, -(int64_t)b->size);
    if (p->hist_cap)
        gk__hist_push(p, GK__ACT_FREE_COMPLETED, b->addr, b->size, b->stream);
    b->requested = 0;
    b->tag[0] = '\0';
    if (b->uses) {
        free(b->uses);
        b->uses = NULL;
        b->nuses = b->cap_uses = 0;
    }
    cache_merge(p, b);
}

void gk__free_completed(gk_pool *p, gk__block *b)
{
    free_completed(p, b);
}

/* --- segments and device calls ------------------------------------------------------------ */

void gk__note_device_error(gk_pool *p, const char *what)
{
    (void)p;
    gk__error(0, "%s: %s", what, gk_last_error());
}

void gk__segment_link(gk_pool *p, gk__segment *s)
{
    s->next = NULL;
    s->prev = p->seg_tail;
    if (p->seg_tail)
        p->seg_tail->next = s;
    else
        p->seg_head = s;
    p->seg_tail = s;
}

void gk__segment_unlink(gk_pool *p, gk__segment *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        p->seg_head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        p->seg_tail = s->prev;
}

void gk__unlock_for_device(gk_pool *p)
{
    p->inflight++;
    pthread_mutex_unlock(&p->lock);
}

void gk__relock_after_device(gk_pool *p)
{
    pthread_mutex_lock(&p->lock);
    if (--p->inflight == 0)
        pthread_cond_broadcast(&p->idle);
}

/* Reserves a classic segment of r->alloc bytes and returns its single block (FREE, not cached). */
static int new_segment(gk_pool *p, const gk__request *r, gk__block **out)
{
    size_t size = segment_size(&p->cfg, r->rsize);
    if (p->limit && (size > p->limit || p->reserved > p->limit - size))
        return GK_EDEVOOM;
    gk__segment *s = gk__calloc(1, sizeof *s);
    gk__block *b = gk__block_new(p);
    if (!s || !b) {
        free(s);
        if (b)
            gk__block_recycle(p, b);
        return -ENOMEM;
    }
    if (gk__tree_reserve(&p->free[r->kind], r->stream) != 0) {
        free(s);
        gk__block_recycle(p, b);
        return -ENOMEM;
    }
    p->reserved += size; /* counted while in flight so other threads see the limit */
    void *ptr = NULL;
    bool unlock = p->cfg.release_lock_on_device_alloc;
    uint64_t t0 = gk__pool_now_ns();
    if (unlock)
        gk__unlock_for_device(p);
    int rc = gk_device_malloc(p->dev, size, &ptr);
    uint64_t t1 = gk__pool_now_ns();
    if (unlock)
        gk__relock_after_device(p);
    p->stats.backend_ns += t1 - t0;
    if (rc != 0) {
        p->reserved -= size;
        gk__note_device_error(p, "device allocation");
        free(s);
        gk__block_recycle(p, b);
        return rc;
    }
    s->base = (uintptr_t)ptr;
    s->size = size;
    s->kind = r->kind;
    s->stream = r->stream;
    s->head = b;
    b->addr = s->base;
    b->size = size;
    b->stream = r->stream;
    b->seg = s;
    b->state = GK__FREE;
    gk__segment_link(p, s);
    p->stats.num_device_alloc++;
    gk__stat_add(p, p->stats.segment, s->kind, 1);
    gk__stat_add(p, p->stats.reserved_bytes, s->kind, (int64_t)size);
    if (size >= p->cfg.max_split_size)
        gk__stat_one(p, &p->stats.oversize_segments, 1);
    if (p->hist_cap)
        gk__hist_push(p, GK__ACT_SEGMENT_ALLOC, s->base, size, s->stream);
    *out = b;
    return 0;
}

/* --- allocation ----------------------------------------------------------------------------- */

static bool should_split(const gk_pool *p, const gk__block *b, size_t size)
{
    size_t rest = b->size - size;
    if (b->seg->kind == GK_POOL_SMALL || b->seg->expandable)
        return rest >= p->cfg.round_bytes;
    return size < p->cfg.max_split_size && rest > p->cfg.small_max;
}

/* What a free block of an expandable segment can grow to: itself plus the unmapped space after
 * it. */
static size_t expandable_size(const gk__block *b)
{
    return b->size + (b->next && b->next->state == GK__UNMAPPED ? b->next->size : 0);
}

/* Best fit for r in its pool and stream, with the oversize rules; NULL when none. As PyTorch's
 * get_free_block, only the smallest block that fits is considered, except that in expandable
 * segments a block followed by unmapped space counts as large as it could grow: the walk moves on
 * to larger blocks while the next one could grow less, so memory at the end of a range is used
 * last and the range keeps growing from one place. */
static gk__block *find_fit(gk_pool *p, const gk__request *r)
{
    p->ticks[r->kind]++;
    gk__tree *t = &p->free[r->kind];
    gk__block *b = gk__tree_lower_bound(t, r->stream, r->rsize);
    if (!b || b->stream != r->stream)
        return NULL;
    if (b->seg->expandable) {
        /* Only a block that could grow can give way to a larger one that could grow less. */
        gk__block *n;
        while (b->next && b->next->state == GK__UNMAPPED && (n = gk__tree_after(t, b)) &&
               n->stream == r->stream && expandable_size(n) < expandable_size(b))
            b = n;
        /* The oversize rule keeps large classic segments whole; an expandable segment gives its
         * free pages back instead, so it splits any block (kept, it would only grow the pool). */
        return b;
    }
    size_t msplit = p->cfg.max_split_size;
    if (r->rsize < msplit && b->size >= msplit)
        return NULL;
    if (r->rsize >= msplit && b->size - r->rsize >= p->cfg.max_non_split_rounding)
        return NULL;
    return b;
}

int gk__take_block(gk_pool *p, const gk__request *r, gk__block *b, bool cached)
{
    gk__block *rest = NULL;
    if (should_split(p, b, r->rsize)) {
        rest = gk__block_new(p);
        if (!rest)
            return -ENOMEM;
    }
    if (cached)
        cache_remove(p, b);
    b->state = GK__LIVE; /* before the rest is cached: it must not merge back into b */
    if (rest) {
        rest->addr = b->addr + r->rsize;
        rest->size = b->size - r->rsize;
        rest->stream = b->stream;
        rest->seg = b->seg;
        rest->prev = b;
        rest->next = b->next;
        if (b->next)
            b->next->prev = rest;
        b->next = rest;
        b->size = r->rsize;
        cache_merge(p, rest);
    }
    b->requested = r->size;
    int kind = b->seg->kind;
    gk__stat_add(p, p->stats.allocation, kind, 1);
    gk__stat_add(p, p->stats.allocated_bytes, kind, (int64_t)b->size);
    gk__stat_add(p, p->stats.active, kind, 1);
    gk__stat_add(p, p->stats.active_bytes, kind, (int64_t)b->size);
    gk__stat_add(p, p->stats.requested_bytes, kind, (int64_t)r->size);
    if (b->size >= p->cfg.max_split_size)
        gk__stat_one(p, &p->stats.oversize_allocations, 1);
    return 0;
}

/* Rungs 1 and the retries: the cache. 0 (block in *out), -ENOENT when no block fits, -ENOMEM. */
static int try_cache(gk_pool *p, const gk__request *r, gk__block **out)
{
    gk__block *b = find_fit(p, r);
    if (!b)
        return -ENOENT;
    int rc = gk__take_block(p, r, b, true);
    if (rc == 0) {
        p->stats.num_cache_hits++;
        *out = b;
    }
    return rc;
}

/* Rung 4: the device. Pages mapped in an expandable range, or a new classic segment: always
 * without expandable segments, and for a request that finds no room in a range when the device's
 * address space cannot take another range (a sim's va_size shared by many streams). */
static int try_backend(gk_pool *p, const gk__request *r, gk__block **out)
{
    int rc;
    if (p->cfg.expandable_segments) {
        rc = gk__expand_grow(p, r, out);
        if (rc != -ENOSPC)
            return rc;
        if (!p->stats.expandable_fallback) {
            p->stats.expandable_fallback = 1;
            gk_log(&p->cfg.logger, GK_LOG_WARN, "pool",
                   "%s: the address space is exhausted (%s): requests that find no room in an "
                   "expandable range get classic segments from now on",
                   p->props.spec, gk_last_error());
        }
    }
    gk__block *b = NULL;
    rc = new_segment(p, r, &b);
    if (rc != 0)
        return rc;
    rc = gk__take_block(p, r, b, false);
    if (rc != 0) {
        gk__cache_merge(p, b);
        return rc;
    }
    *out = b;
    return 0;
}

static int run_pressure(gk_pool *p, size_t bytes)
{
    int n = p->npressure, any = 0;
    gk_pool_pressure_fn fns[GK__MAX_PRESSURE];
    void *users[GK__MAX_PRESSURE];
    for (int i = 0; i < n; i++) {
        fns[i] = p->pressure[i].fn;
        users[i] = p->pressure[i].user;
    }
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < n; i++)
        any |= fns[i](users[i], bytes) != 0;
    pthread_mutex_lock(&p->lock);
    return any;
}

/* The out-of-memory ladder (pool.h). Returns 0, an out-of-memory-class code, -ENOMEM, or a
 * device error that is not about memory (returned as it is, with its text in gk_last_error). */
static int ladder(gk_pool *p, gk__request *r, gk__block **b)
{
    int rc = try_cache(p, r, b);
    if (rc != -ENOENT)
        return rc;
    if (p->npressure && run_pressure(p, r->rsize)) {
        gk__events_process(p);
        if ((rc = try_cache(p, r, b)) != -ENOENT)
            return rc;
    }
    gk__collect_garbage(p);
    if (!gk__is_oom(rc = try_backend(p, r, b)))
        return rc;
    if (p->cfg.max_split_size != SIZE_MAX && gk__release_oversize(p, r) &&
        !gk__is_oom(rc = try_backend(p, r, b)))
        return rc;
    gk__release_cached(p);
    p->stats.num_alloc_retries++;
    if ((rc = try_cache(p, r, b)) != -ENOENT)
        return rc;
    return try_backend(p, r, b);
}

int gk_pool_malloc_tagged(gk_pool *p, size_t size, gk_stream *stream, const char *tag, void **ptr)
{
    if (ptr)
        *ptr = NULL;
    if (!p || !ptr || size == 0)
        return gk__error(-EINVAL, "gk_pool_malloc: %s",
                         !p || !ptr ? "pool or ptr is NULL" : "size is 0");
    long tid = atomic_load_explicit(&p->trace_on, memory_order_relaxed) ? gk__thread_id() : 0;
    gk__request r;
    r.size = size;
    r.stream = (uintptr_t)stream;
    r.sptr = stream;
    gk__block *b = NULL;
    int rc;
    unsigned long seq = gk__error_seq();
    pthread_mutex_lock(&p->lock);
    gk__events_process(p);
    if (size > p->max_request) {
        /* Larger than the device: no rung can help (and the sizes below could not be rounded). */
        r.rsize = size;
        r.kind = GK_POOL_LARGE;
        rc = GK_EDEVOOM;
    } else {
        r.rsize = gk__pool_round_size(&p->cfg, size);
        r.kind = r.rsize <= p->cfg.small_max ? GK_POOL_SMALL : GK_POOL_LARGE;
        rc = ladder(p, &r, &b);
    }
    if (rc != 0) {
        if (gk__is_oom(rc)) {
            p->stats.num_ooms++;
            if (p->hist_cap)
                gk__hist_push(p, GK__ACT_OOM, 0, r.rsize, r.stream);
            gk__pool_build_oom_report(p, &r);
            if (p->trace)
                gk__trace_add(p, tid, 2, 0, size, r.stream);
            rc = GK_EDEVOOM;
        }
        pthread_mutex_unlock(&p->lock);
        if (tid)
            gk__trace_flush(p);
        bool fresh = gk__error_seq() != seq;
        if (rc == GK_EDEVOOM)
            return gk__error(
                rc,
                "gk_pool_malloc: out of device memory for %zu bytes (%zu rounded)%s%s; "
                "gk_pool_oom_report() has the pool's state and a hint",
                size, r.rsize, fresh ? ": " : "", fresh ? gk_last_error() : "");
        if (rc == -ENOMEM)
            return gk__error(rc, "gk_pool_malloc: out of host memory for the pool's bookkeeping");
        return gk__error(rc, "gk_pool_malloc of %zu bytes: %s", size,
                         fresh ? gk_last_error() : gk_strerror(rc));
    }
    if (tag)
        snprintf(b->tag, sizeof b->tag, "%s", tag);
    rc = gk__ptrmap_insert(&p->map, b);
    if (rc != 0) {
        /* Give the block straight back: it was never handed out. */
        gk__stat_add(p, p->stats.allocation, b->seg->kind, -1);
        gk__stat_add(p, p->stats.allocated_bytes, b->seg->kind, -(int64_t)b->size);
        gk__stat_add(p, p->stats.requested_bytes, b->seg->kind, -(int64_t)b->requested);
        if (b->size >= p->cfg.max_split_size)
            gk__stat_one(p, &p->stats.oversize_allocations, -1);
        gk__free_completed(p, b);
        pthread_mutex_unlock(&p->lock);
        return gk__error(rc, "gk_pool_malloc: out of host memory for the pointer map");
    }
    if (p->hist_cap)
        gk__hist_push(p, GK__ACT_ALLOC, b->addr, b->size, b->stream);
    if (p->trace)
        gk__trace_add(p, tid, 0, b->addr, size, r.stream);
    *ptr = (void *)b->addr;
    pthread_mutex_unlock(&p->lock);
    if (tid)
        gk__trace_flush(p);
    return 0;
}

int gk_pool_malloc(gk_pool *p, size_t size, gk_stream *stream, void **ptr)
{
    return gk_pool_malloc_tagged(p, size, stream, NULL, ptr);
}

/* Is addr the start of a block in one of the pool's segments that is not handed out? (The error
 * path of free: a walk.) */
static bool is_free_block(gk_pool *p, uintptr_t addr)
{
    for (gk__segment *s = p->seg_head; s; s = s->next) {
        if (addr < s->base || addr - s->base >= s->size)
            continue;
        for (gk__block *b = s->head; b; b = b->next)
            if (b->addr == addr)
                return !gk__block_handed_out(b);
        return false;
    }
    return false;
}

int gk_pool_free(gk_pool *p, void *ptr)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_free: p is NULL");
    if (!ptr)
        return 0;
    long tid = atomic_load_explicit(&p->trace_on, memory_order_relaxed) ? gk__thread_id() : 0;
    pthread_mutex_lock(&p->lock);
    gk__block *b = gk__ptrmap_remove(&p->map, (uintptr_t)ptr);
    if (!b) {
        bool twice = is_free_block(p, (uintptr_t)ptr);
        if (twice)
            p->stats.num_double_free++;
        else
            p->stats.num_invalid_free++;
        pthread_mutex_unlock(&p->lock);
        gk_log(&p->cfg.logger, GK_LOG_WARN, "pool", "gk_pool_free(%p): %s", ptr,
               twice ? "double free ignored" : "unknown pointer ignored");
        return gk__error(-EINVAL, "gk_pool_free(%p): %s", ptr,
                         twice ? "double free (the block is already free)"
                               : "pointer not allocated by this pool");
    }
    int kind = b->seg->kind;
    gk__stat_add(p, p->stats.allocation, kind, -1);
    gk__stat_add(p, p->stats.allocated_bytes, kind, -(int64_t)b->size);
    gk__stat_add(p, p->stats.requested_bytes, kind, -(int64_t)b->requested);
    if (b->size >= p->cfg.max_split_size)
        gk__stat_one(p, &p->stats.oversize_allocations, -1);
    if (p->hist_cap)
        gk__hist_push(p, GK__ACT_FREE_REQUESTED, b->addr, b->size, b->stream);
    if (p->trace)
        gk__trace_add(p, tid, 1, b->addr, b->requested, b->stream);
    for (int i = 0; i < b->nuses; i++)
        gk__events_defer(p, b, b->uses[i]);
    if (b->event_count == 0)
        free_completed(p, b);
    pthread_mutex_unlock(&p->lock);
    if (tid)
        gk__trace_flush(p);
    return 0;
}

int gk_pool_record_stream(gk_pool *p, void *ptr, gk_stream *stream)
{
    if (!p || !ptr)
        return gk__error(-EINVAL, "gk_pool_record_stream: p or ptr is NULL");
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    gk__block *b = gk__ptrmap_find(&p->map, (uintptr_t)ptr);
    if (!b) {
        rc = gk__error(-EINVAL, "gk_pool_record_stream(%p): not a live block of this pool", ptr);
        goto out_unlock;
    }
    if ((uintptr_t)stream == b->stream)
        goto out_unlock;
    for (int i = 0; i < b->nuses; i++)
        if (b->uses[i] == stream)
            goto out_unlock;
    if (b->nuses == b->cap_uses) {
        int n = b->cap_uses ? b->cap_uses * 2 : 2;
        gk_stream **a = gk__realloc(b->uses, (size_t)n * sizeof *a);
        if (!a) {
            rc = gk__error(-ENOMEM, "gk_pool_record_stream: out of host memory");
            goto out_unlock;
        }
        b->uses = a;
        b->cap_uses = n;
    }
    b->uses[b->nuses++] = stream;
out_unlock:
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* --- create and destroy --------------------------------------------------------------------- */

const char *gk_pool_create_error(void)
{
    return gk_last_error();
}

static size_t effective_limit(const gk_pool_config *c, size_t total)
{
    size_t lim = c->limit_bytes;
    if (c->limit_fraction > 0) {
        double f = c->limit_fraction * (double)total;
        size_t fl = f >= 18446744073709551615.0 ? SIZE_MAX : (size_t)f;
        if (fl == 0)
            fl = 1; /* a fraction is a cap, never "none" */
        if (!lim || fl < lim)
            lim = fl;
    }
    return lim;
}

/* Decides whether expandable segments are used, and says why once when they are not. */
static void choose_segments(gk_pool *p)
{
    if (!p->cfg.expandable_segments)
        return;
    char why[256] = "";
    bool ok = gk__expand_supported(p, why, sizeof why);
    if (ok) {
        p->stats.expandable_segments = 1;
        return;
    }
    p->cfg.expandable_segments = 0;
    p->stats.expandable_fallback = 1;
    /* A device without virtual memory (host, an old driver) is the expected case: info. */
    gk_log(&p->cfg.logger, p->props.has_vm ? GK_LOG_WARN : GK_LOG_INFO, "pool",
           "%s: expandable segments off, using classic segments: %s", p->props.spec, why);
}

int gk_pool_create(gk_device *dev, const gk_pool_config *cfg, gk_pool **out)
{
    if (out)
        *out = NULL;
    if (!dev || !out)
        return gk__error(-EINVAL, "gk_pool_create: dev or out is NULL");
    gk_pool_config c;
    gk_pool_config_default(&c);
    int rc = cfg ? gk__sized_in(&c, sizeof c, cfg, "gk_pool_config") : 0;
    if (rc)
        return rc;
    char err[256];
    rc = gk__pool_config_check(&c, err, sizeof err);
    if (rc)
        return gk__error(rc, "%s", err);
    gk_pool *p = gk__calloc(1, sizeof *p);
    if (!p)
        return gk__error(-ENOMEM, "gk_pool_create: out of host memory");
    p->dev = dev;
    p->cfg = c;
    rc = gk_device_get_props(dev, &p->props);
    if (rc) {
        gk__error(rc, "gk_pool_create: device properties: %s", gk_last_error());
        goto out_free;
    }
    size_t free_b = 0, total = 0;
    if (gk_device_mem_info(dev, &free_b, &total) != 0 || total == 0)
        total = (size_t)p->props.total_memory;
    p->total_memory = total;
    p->max_request = total && total < ((size_t)1 << 62) ? total : (size_t)1 << 62;
    choose_segments(p);
    p->limit = effective_limit(&p->cfg, total);
    p->stats.max_split_size = p->cfg.max_split_size;
    p->t0_ns = gk__pool_now_ns();
    for (int k = 0; k < GK_POOL_KINDS; k++) {
        p->free[k].seed = 0x2545F491u + (uint32_t)k;
        if (gk__tree_reserve(&p->free[k], 0) != 0) { /* the default stream's, never to fail */
            rc = -ENOMEM;
            gk__error(rc, "gk_pool_create: out of host memory");
            for (int j = 0; j < GK_POOL_KINDS; j++)
                gk__tree_fini(&p->free[j]);
            goto out_free;
        }
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        rc = -ENOMEM;
        gk__error(rc, "gk_pool_create: cannot create a mutex");
        goto out_free;
    }
    pthread_cond_init(&p->idle, NULL);
    pthread_mutex_init(&p->trace_lock, NULL);
    if (p->cfg.history && (rc = gk_pool_record_history(p, p->cfg.history)) != 0) {
        gk__error(rc, "gk_pool_create: history=%zu: cannot allocate the ring (%s)", p->cfg.history,
                  gk_strerror(rc));
        goto out_mutex;
    }
    rc = gk_device_add_stream_hook(dev, gk__stream_hook, p);
    if (rc) {
        gk__error(rc, "gk_pool_create: stream hook: %s", gk_last_error());
        goto out_mutex;
    }
    p->hook_added = true;
    gk__pool_metrics_start(p); /* best effort: the pool works without its series */
    *out = p;
    return 0;
out_mutex:
    for (int k = 0; k < GK_POOL_KINDS; k++)
        gk__tree_fini(&p->free[k]);
    free(p->hist);
    pthread_mutex_destroy(&p->trace_lock);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->lock);
out_free:
    free(p);
    return rc;
}

void gk_pool_destroy(gk_pool *p)
{
    if (!p)
        return;
    gk__pool_metrics_stop(p);
    if (p->hook_added)
        gk_device_remove_stream_hook(p->dev, gk__stream_hook, p);
    gk_pool_set_trace_log(p, NULL);
    pthread_mutex_lock(&p->lock);
    gk__events_sync_all(p);
    size_t leaks = 0, leak_bytes = 0;
    for (gk__segment *s = p->seg_head, *next; s; s = next) {
        next = s->next;
        for (gk__block *b = s->head; b; b = b->next) {
            if (b->state == GK__LIVE) {
                leaks++;
                leak_bytes += b->size;
            }
        }
        if (s->expandable)
            gk__expand_destroy(p, s);
        else
            gk_device_free(p->dev, (void *)s->base);
        for (gk__block *b = s->head; b; b = b->next)
            free(b->uses);
        free(s);
    }
    if (leaks)
        gk_log(&p->cfg.logger, GK_LOG_WARN, "pool",
               "destroyed with %zu live blocks (%zu bytes) still allocated", leaks, leak_bytes);
    gk__events_fini(p);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->nslabs; i++)
        free(p->slabs[i]);
    free(p->slabs);
    for (int k = 0; k < GK_POOL_KINDS; k++)
        gk__tree_fini(&p->free[k]);
    free(p->hist);
    free(p->tbuf);
    free(p->oom_report);
    gk__ptrmap_fini(&p->map);
    pthread_mutex_destroy(&p->trace_lock);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
