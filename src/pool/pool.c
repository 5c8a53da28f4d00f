/* The caching pool's core: creation and destruction, the allocation ladder, free with stream
 * events, the stream-destroy hook, and the paths that give memory back (GC, oversize release,
 * empty_cache, trim). Segments come from the device (classic) or are address ranges whose pages
 * are mapped on demand (expandable, see expand.c). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static size_t round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

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
        return round_up(size, step);
    }
    return round_up(size, c->round_bytes);
}

static size_t segment_size(const gk_pool_config *c, size_t rsize)
{
    if (rsize <= c->small_max)
        return c->small_segment;
    if (rsize < c->min_large_alloc)
        return c->large_segment;
    return round_up(rsize, c->round_large);
}

/* --- tree with statistics ----------------------------------------------------------------- */

static bool counts_as_split(const gk__block *b)
{
    return !b->seg->expandable && (b->prev || b->next);
}

void gk__cache_insert(gk_pool *p, gk__block *b)
{
    gk__tree_insert(&p->free[b->seg->kind], b);
    if (counts_as_split(b)) {
        gk__stat_add(p, p->stats.inactive_split, b->seg->kind, 1);
        gk__stat_add(p, p->stats.inactive_split_bytes, b->seg->kind, (int64_t)b->size);
    }
}

void gk__cache_remove(gk_pool *p, gk__block *b)
{
    if (counts_as_split(b)) {
        gk__stat_add(p, p->stats.inactive_split, b->seg->kind, -1);
        gk__stat_add(p, p->stats.inactive_split_bytes, b->seg->kind, -(int64_t)b->size);
    }
    gk__tree_remove(&p->free[b->seg->kind], b);
}

/* --- device calls --------------------------------------------------------------------------- */

static void note_device_error(gk_pool *p, const char *what)
{
    (void)p;
    gk__error(0, "%s: %s", what, gk_last_error());
}

static void segment_link(gk_pool *p, gk__segment *s)
{
    s->next = p->segments;
    s->prev = NULL;
    if (p->segments)
        p->segments->prev = s;
    p->segments = s;
    p->nsegments++;
}

static void segment_unlink(gk_pool *p, gk__segment *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        p->segments = s->next;
    if (s->next)
        s->next->prev = s->prev;
    p->nsegments--;
}

/* Reserves a classic segment of r->alloc bytes and returns its single free block (not cached). */
static int new_segment(gk_pool *p, const gk__request *r, gk__block **out)
{
    size_t size = r->alloc;
    if (p->limit && p->reserved + size > p->limit)
        return GK_EDEVOOM;
    gk__segment *s = gk__calloc(1, sizeof *s);
    gk__block *b = gk__calloc(1, sizeof *b);
    if (!s || !b) {
        free(s);
        free(b);
        return -ENOMEM;
    }
    p->reserved += size; /* counted while in flight so other threads see the limit */
    void *ptr = NULL;
    bool unlock = p->cfg.release_lock_on_device_alloc;
    uint64_t t0 = gk__pool_now_ns();
    if (unlock)
        pthread_mutex_unlock(&p->lock);
    int rc = gk_device_malloc(p->dev, size, &ptr);
    if (unlock)
        pthread_mutex_lock(&p->lock);
    p->stats.backend_ns += gk__pool_now_ns() - t0;
    if (rc != 0) {
        p->reserved -= size;
        note_device_error(p, "device allocation");
        free(s);
        free(b);
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
    segment_link(p, s);
    p->stats.num_device_alloc++;
    gk__stat_add(p, p->stats.segment, s->kind, 1);
    gk__stat_add(p, p->stats.reserved_bytes, s->kind, (int64_t)size);
    if (size >= p->cfg.max_split_size)
        gk__stat_one(p, &p->stats.oversize_segments, 1);
    gk__hist_push(p, GK__ACT_SEGMENT_ALLOC, s->base, size, s->stream);
    *out = b;
    return 0;
}

/* Gives an unsplit classic segment (its single block cached) back to the device. The segment is
 * gone afterwards even when the device reports an error: gk_device_free forgets the pointer either
 * way (a driver that fails to free keeps what it keeps), so the pool must not free it again. */
int gk__release_segment(gk_pool *p, gk__segment *s)
{
    gk__block *b = s->head;
    uint64_t t0 = gk__pool_now_ns();
    int rc = gk_device_free(p->dev, (void *)s->base);
    p->stats.backend_ns += gk__pool_now_ns() - t0;
    if (rc != 0)
        note_device_error(p, "device free");
    gk__cache_remove(p, b);
    p->reserved -= s->size;
    p->stats.num_device_free++;
    gk__stat_add(p, p->stats.segment, s->kind, -1);
    gk__stat_add(p, p->stats.reserved_bytes, s->kind, -(int64_t)s->size);
    if (s->size >= p->cfg.max_split_size)
        gk__stat_one(p, &p->stats.oversize_segments, -1);
    gk__hist_push(p, GK__ACT_SEGMENT_FREE, s->base, s->size, s->stream);
    segment_unlink(p, s);
    free(b);
    free(s);
    return rc;
}

bool gk__releasable(const gk__segment *s)
{
    return !s->expandable && !s->head->next && s->head->in_tree;
}

/* --- allocation ----------------------------------------------------------------------------- */

static bool should_split(const gk_pool *p, const gk__block *b, size_t size)
{
    size_t rest = b->size - size;
    if (b->seg->kind == GK_POOL_SMALL || b->seg->expandable)
        return rest >= p->cfg.round_bytes;
    return size < p->cfg.max_split_size && rest > p->cfg.small_max;
}

/* Best fit for r in its pool and stream, with the oversize rules; NULL when none. */
static gk__block *find_fit(gk_pool *p, const gk__request *r)
{
    p->ticks[r->kind]++;
    gk__block *b = gk__tree_lower_bound(&p->free[r->kind], r->stream, r->rsize);
    if (!b || b->stream != r->stream)
        return NULL;
    size_t msplit = p->cfg.max_split_size;
    if (r->rsize < msplit && b->size >= msplit)
        return NULL;
    if (r->rsize >= msplit && b->size >= r->rsize + p->cfg.max_non_split_rounding)
        return NULL;
    return b;
}

/* Hands out the first r->rsize bytes of the free block b (removed from the cache here), splitting
 * off the rest. For expandable segments maps the pages first. On failure b stays cached. */
static int take_block(gk_pool *p, const gk__request *r, gk__block *b, bool cached, int *mapped)
{
    gk__block *rest = NULL;
    if (should_split(p, b, r->rsize)) {
        rest = gk__calloc(1, sizeof *rest);
        if (!rest)
            return -ENOMEM;
    }
    if (b->seg->expandable) {
        int rc = gk__expand_map(p, b->seg, b->addr, r->rsize, mapped);
        if (rc != 0) {
            free(rest);
            return rc;
        }
    }
    if (cached)
        gk__cache_remove(p, b);
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
        rest->free_tick = p->ticks[b->seg->kind];
        gk__cache_insert(p, rest);
    }
    b->allocated = true;
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

/* Rung 1: the cache. Returns 0 (block in *out), -ENOENT when no block fits, or the map error. */
static int try_cache(gk_pool *p, const gk__request *r, gk__block **out)
{
    gk__block *b = find_fit(p, r);
    if (!b)
        return -ENOENT;
    int mapped = 0;
    int rc = take_block(p, r, b, true, &mapped);
    if (rc == 0) {
        if (!mapped)
            p->stats.num_cache_hits++;
        *out = b;
    }
    return rc;
}

/* Rung 4: the backend. A new classic segment, or for expandable pools a fit in a new address
 * range when none fits in the existing ones. */
static int try_backend(gk_pool *p, const gk__request *r, gk__block **out)
{
    gk__block *b = NULL;
    int rc;
    if (r->expandable) {
        rc = try_cache(p, r, out);
        if (rc != -ENOENT)
            return rc;
        rc = gk__expand_new_segment(p, r, &b);
        if (rc != 0)
            return rc;
        gk__cache_insert(p, b);
        int mapped = 0;
        rc = take_block(p, r, b, true, &mapped);
        if (rc == 0)
            *out = b;
        return rc;
    }
    rc = new_segment(p, r, &b);
    if (rc != 0)
        return rc;
    int mapped = 0;
    rc = take_block(p, r, b, false, &mapped);
    if (rc != 0) {
        gk__cache_insert(p, b);
        return rc;
    }
    *out = b;
    return 0;
}

/* --- events --------------------------------------------------------------------------------- */

static void merge_into_cache(gk_pool *p, gk__block *b)
{
    if (b->prev && b->prev->in_tree) {
        gk__block *a = b->prev;
        gk__cache_remove(p, a);
        a->size += b->size;
        a->next = b->next;
        if (b->next)
            b->next->prev = a;
        free(b);
        b = a;
    }
    if (b->next && b->next->in_tree) {
        gk__block *c = b->next;
        gk__cache_remove(p, c);
        b->size += c->size;
        b->next = c->next;
        if (c->next)
            c->next->prev = b;
        free(c);
    }
    b->free_tick = p->ticks[b->seg->kind];
    gk__cache_insert(p, b);
}

/* The block's last event completed (or it had none): it becomes free and merges. */
static void free_completed(gk_pool *p, gk__block *b)
{
    int kind = b->seg->kind;
    gk__stat_add(p, p->stats.active, kind, -1);
    gk__stat_add(p, p->stats.active_bytes, kind, -(int64_t)b->size);
    gk__hist_push(p, GK__ACT_FREE_COMPLETED, b->addr, b->size, b->stream);
    b->allocated = false;
    b->requested = 0;
    b->tag[0] = '\0';
    free(b->uses);
    b->uses = NULL;
    b->nuses = b->cap_uses = 0;
    merge_into_cache(p, b);
}

static void event_return(gk_pool *p, gk_event *ev)
{
    if (p->nevents == p->cap_events) {
        size_t n = p->cap_events ? p->cap_events * 2 : 16;
        gk_event **a = gk__realloc(p->events, n * sizeof *a);
        if (!a) {
            gk_event_destroy(p->dev, ev);
            return;
        }
        p->events = a;
        p->cap_events = n;
    }
    p->events[p->nevents++] = ev;
}

void gk__pending_done(gk_pool *p, size_t i)
{
    gk__pending e = p->pending[i];
    p->pending[i] = p->pending[--p->npending];
    event_return(p, e.event);
    if (--e.block->event_count == 0)
        free_completed(p, e.block);
}

/* Polls every pending event (no head-of-line wait: each is looked at). */
void gk__process_events(gk_pool *p)
{
    for (size_t i = 0; i < p->npending;) {
        if (gk_event_query(p->dev, p->pending[i].event) == 0)
            gk__pending_done(p, i);
        else
            i++;
    }
}

/* Waits for every pending event. An event that cannot be waited for stays pending. */
void gk__sync_events(gk_pool *p)
{
    p->stats.num_sync_all_streams++;
    for (size_t i = 0; i < p->npending;) {
        if (gk_event_synchronize(p->dev, p->pending[i].event, -1) == 0)
            gk__pending_done(p, i);
        else
            i++;
    }
}

/* Records an event on `stream` for block b; on any failure waits for the stream instead. */
static void defer_on_stream(gk_pool *p, gk__block *b, gk_stream *stream)
{
    gk_event *ev = NULL;
    if (p->npending == p->cap_pending) {
        size_t n = p->cap_pending ? p->cap_pending * 2 : 16;
        gk__pending *a = gk__realloc(p->pending, n * sizeof *a);
        if (!a)
            goto out_sync;
        p->pending = a;
        p->cap_pending = n;
    }
    if (p->nevents)
        ev = p->events[--p->nevents];
    else if (gk_event_create(p->dev, &ev) != 0)
        goto out_sync;
    if (gk_event_record(p->dev, ev, stream) != 0) {
        event_return(p, ev);
        goto out_sync;
    }
    p->pending[p->npending].event = ev;
    p->pending[p->npending].block = b;
    p->npending++;
    b->event_count++;
    return;
out_sync:
    gk_stream_synchronize(p->dev, stream, -1);
}

/* --- public --------------------------------------------------------------------------------- */

const char *gk_pool_create_error(void)
{
    return gk_last_error();
}

static size_t effective_limit(const gk_pool_config *c, size_t total)
{
    size_t lim = c->limit_bytes;
    if (c->limit_fraction > 0) {
        size_t f = (size_t)(c->limit_fraction * (double)total);
        if (!lim || f < lim)
            lim = f;
    }
    return lim;
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
        return gk__error(-ENOMEM, "gk_pool_create: out of host memory (!p)");
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
    if (!p->props.has_vm || p->props.vm_granularity == 0)
        p->cfg.expandable_segments = 0;
    p->limit = effective_limit(&p->cfg, total);
    p->stats.max_split_size = p->cfg.max_split_size;
    p->t0_ns = gk__pool_now_ns();
    for (int k = 0; k < GK_POOL_KINDS; k++)
        p->free[k].seed = 0x2545F491u + (uint32_t)k;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        rc = -ENOMEM;
        goto out_free;
    }
    rc = gk__ptrmap_init(&p->map);
    if (rc)
        goto out_mutex;
    if (p->cfg.history && (rc = gk_pool_record_history(p, p->cfg.history)) != 0)
        goto out_map;
    rc = gk_device_add_stream_hook(dev, gk__stream_hook, p);
    if (rc) {
        gk__error(rc, "gk_pool_create: stream hook: %s", gk_last_error());
        goto out_map;
    }
    p->hook_added = true;
    gk__pool_metrics_start(p); /* best effort: the pool works without its series */
    *out = p;
    return 0;
out_map:
    free(p->hist);
    gk__ptrmap_fini(&p->map);
out_mutex:
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
    pthread_mutex_lock(&p->lock);
    gk__sync_events(p);
    size_t leaks = 0, leak_bytes = 0;
    for (gk__segment *s = p->segments, *next; s; s = next) {
        next = s->next;
        for (gk__block *b = s->head, *bn; b; b = bn) {
            bn = b->next;
            if (b->allocated) {
                leaks++;
                leak_bytes += b->size;
            }
            free(b->uses);
            free(b);
        }
        if (s->expandable)
            gk__expand_destroy(p, s);
        else
            gk_device_free(p->dev, (void *)s->base);
        free(s);
    }
    if (leaks)
        gk_log(&p->cfg.logger, GK_LOG_WARN, "pool",
               "destroyed with %zu live blocks (%zu bytes) still allocated", leaks, leak_bytes);
    for (size_t i = 0; i < p->npending; i++)
        gk_event_destroy(p->dev, p->pending[i].event);
    for (size_t i = 0; i < p->nevents; i++)
        gk_event_destroy(p->dev, p->events[i]);
    pthread_mutex_unlock(&p->lock);
    free(p->pending);
    free(p->events);
    free(p->hist);
    free(p->oom_report);
    gk__ptrmap_fini(&p->map);
    pthread_mutex_destroy(&p->lock);
    free(p);
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

static int ladder(gk_pool *p, gk__request *r, gk__block **b)
{
    int rc = try_cache(p, r, b);
    if (rc == 0 || rc == -ENOMEM)
        return rc;
    if (p->npressure && run_pressure(p, r->rsize)) {
        gk__process_events(p);
        if ((rc = try_cache(p, r, b)) == 0)
            return 0;
    }
    gk__collect_garbage(p);
    if ((rc = try_backend(p, r, b)) == 0 || rc == -ENOMEM)
        return rc;
    if (p->cfg.max_split_size != SIZE_MAX && !r->expandable) {
        gk__release_oversize(p, r);
        if ((rc = try_backend(p, r, b)) == 0 || rc == -ENOMEM)
            return rc;
    }
    gk__release_cached(p);
    p->stats.num_alloc_retries++;
    if ((rc = try_cache(p, r, b)) == 0)
        return 0;
    return try_backend(p, r, b);
}

int gk_pool_malloc_tagged(gk_pool *p, size_t size, gk_stream *stream, const char *tag, void **ptr)
{
    if (ptr)
        *ptr = NULL;
    if (!p || !ptr || size == 0 || size > ((size_t)1 << 62))
        return gk__error(-EINVAL, "gk_pool_malloc: %s",
                         !p || !ptr  ? "pool or ptr is NULL"
                         : size == 0 ? "size is 0"
                                     : "size is above 2^62 bytes");
    gk__request r = {0};
    r.size = size;
    r.rsize = gk__pool_round_size(&p->cfg, size);
    r.kind = r.rsize <= p->cfg.small_max ? GK_POOL_SMALL : GK_POOL_LARGE;
    r.alloc = segment_size(&p->cfg, r.rsize);
    r.stream = (uintptr_t)stream;
    r.sptr = stream;
    r.expandable = p->cfg.expandable_segments != 0;
    gk__block *b = NULL;
    unsigned long seq = gk__error_seq();
    pthread_mutex_lock(&p->lock);
    gk__process_events(p);
    int rc = ladder(p, &r, &b);
    if (rc != 0) {
        if (rc != -ENOMEM) {
            p->stats.num_ooms++;
            gk__hist_push(p, GK__ACT_OOM, 0, r.rsize, r.stream);
            gk__pool_build_oom_report(p, &r);
            gk__pool_trace_line(p, "allocate failure", 0, size, r.stream);
            rc = GK_EDEVOOM;
        }
        pthread_mutex_unlock(&p->lock);
        if (rc == GK_EDEVOOM)
            return gk__error(
                rc,
                "gk_pool_malloc: out of device memory for %zu bytes (%zu rounded)%s%s; "
                "gk_pool_oom_report() has the pool's state and a hint",
                size, r.rsize, gk__error_seq() != seq ? ": " : "",
                gk__error_seq() != seq ? gk_last_error() : "");
        return gk__error(rc, "gk_pool_malloc: out of host memory for the pool's bookkeeping");
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
        free_completed(p, b);
        pthread_mutex_unlock(&p->lock);
        return gk__error(rc, "gk_pool_malloc: out of host memory for the pointer map");
    }
    gk__hist_push(p, GK__ACT_ALLOC, b->addr, b->size, b->stream);
    gk__pool_trace_line(p, "allocate", b->addr, size, r.stream);
    *ptr = (void *)b->addr;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int gk_pool_malloc(gk_pool *p, size_t size, gk_stream *stream, void **ptr)
{
    return gk_pool_malloc_tagged(p, size, stream, NULL, ptr);
}

/* Is addr the start of a free block in one of the pool's segments? */
static bool is_free_block(gk_pool *p, uintptr_t addr)
{
    for (gk__segment *s = p->segments; s; s = s->next) {
        if (addr < s->base || addr >= s->base + s->size)
            continue;
        for (gk__block *b = s->head; b; b = b->next)
            if (b->addr == addr)
                return !b->allocated || b->event_count > 0;
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
    gk__block *b = gk__ptrmap_remove(&p->map, (uintptr_t)ptr);
    pthread_mutex_lock(&p->lock);
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
    gk__hist_push(p, GK__ACT_FREE_REQUESTED, b->addr, b->size, b->stream);
    gk__pool_trace_line(p, "free", b->addr, b->requested, b->stream);
    for (int i = 0; i < b->nuses; i++)
        defer_on_stream(p, b, b->uses[i]);
    if (b->event_count == 0)
        free_completed(p, b);
    pthread_mutex_unlock(&p->lock);
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
