/* How the pool gives memory back: the GC pass over old cached blocks, oversize release, the
 * release of every unsplit cached block (empty_cache and the ladder), trim, and the stream-destroy
 * hook that hands a stream's cache back; plus the small setters (limit, pressure callbacks).
 *
 * Every release runs in three steps: under the lock the pieces to give back are chosen and
 * detached (nobody else can use them), the device calls run without the lock (stream
 * synchronizations, frees, unmappings, address releases), and under the lock again the statistics
 * are updated. Reserved bytes drop only once the device has the memory back, so the limit holds. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

/* --- the release work list -------------------------------------------------------------------- */

gk__rel_item *gk__rel_push(gk__rel *rel)
{
    if (rel->n == rel->cap) {
        size_t n = rel->cap ? rel->cap * 2 : 16;
        gk__rel_item *a = gk__realloc(rel->items, n * sizeof *a);
        if (!a)
            return NULL;
        rel->items = a;
        rel->cap = n;
    }
    gk__rel_item *it = &rel->items[rel->n++];
    memset(it, 0, sizeof *it);
    return it;
}

void gk__rel_free(gk__rel *rel)
{
    free(rel->items);
    rel->items = NULL;
    rel->n = rel->cap = 0;
}

static bool releasable(const gk__segment *s)
{
    return s->releasable;
}

/* Detaches a releasable classic segment: its block leaves the cache; the segment stays listed
 * (RELEASING) until the device has it back. */
static int add_segment(gk_pool *p, gk__rel *rel, gk__segment *s)
{
    gk__rel_item *it = gk__rel_push(rel);
    if (!it)
        return -ENOMEM;
    gk__cache_remove(p, s->head);
    s->head->state = GK__RELEASING;
    it->what = GK__REL_FREE;
    it->seg = s;
    it->blk = s->head;
    it->addr = s->base;
    it->size = s->size;
    return 0;
}

size_t gk__unmap_run(gk_pool *p, uintptr_t addr, size_t size, size_t page, int *rc)
{
    *rc = gk_device_vm_unmap(p->dev, (void *)addr, size);
    if (*rc == 0)
        return size;
    /* Page by page, granule by granule: a granule the device reports as not mapped (-EINVAL)
     * counts as unmapped (the device forgets a granule whose physical release failed, and a run
     * left half unmapped by the failed call is finished this way). */
    size_t g = p->props.vm_granularity ? p->props.vm_granularity : page;
    for (size_t off = 0; off < size; off += page) {
        for (size_t go = 0; go < page; go += g) {
            int r = gk_device_vm_unmap(p->dev, (void *)(addr + off + go), g);
            if (r != 0 && r != -EINVAL) {
                *rc = r;
                return off;
            }
        }
    }
    *rc = 0;
    return size;
}

static void finish_free(gk_pool *p, gk__rel_item *it)
{
    gk__segment *s = it->seg;
    if (it->rc != 0)
        gk__note_device_error(p, "device free");
    /* The device forgets the pointer even when the driver fails to free it: drop it either way. */
    p->reserved -= s->size;
    p->stats.num_device_free++;
    gk__stat_add(p, p->stats.segment, s->kind, -1);
    gk__stat_add(p, p->stats.reserved_bytes, s->kind, -(int64_t)s->size);
    if (s->size >= p->cfg.max_split_size)
        gk__stat_one(p, &p->stats.oversize_segments, -1);
    if (p->hist_cap)
        gk__hist_push(p, GK__ACT_SEGMENT_FREE, s->base, s->size, s->stream);
    gk__segment_unlink(p, s);
    gk__block_recycle(p, s->head);
    free(s);
}

/* Runs the device calls of `rel` without the lock, then finishes every item under it. Returns
 * the first error (also kept in rel->rc). */
int gk__rel_run(gk_pool *p, gk__rel *rel)
{
    if (rel->n == 0)
        return rel->rc;
    gk__unlock_for_device(p);
    uint64_t t0 = gk__pool_now_ns();
    for (size_t i = 0; i < rel->n; i++) {
        gk__rel_item *it = &rel->items[i];
        if (it->what != GK__REL_UNMAP || !rel->sync)
            continue;
        /* cuMemUnmap does not wait for work still using the pages: wait for the stream first,
         * once per stream. A stream that cannot be waited for keeps its pages. */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = rel->items[j].what == GK__REL_UNMAP && rel->items[j].stream == it->stream;
        if (seen)
            continue;
        int rc = gk_stream_synchronize(p->dev, (gk_stream *)it->stream, -1);
        for (size_t j = i; rc && j < rel->n; j++)
            if (rel->items[j].what == GK__REL_UNMAP && rel->items[j].stream == it->stream)
                rel->items[j].rc = rc;
    }
    for (size_t i = 0; i < rel->n; i++) {
        gk__rel_item *it = &rel->items[i];
        if (it->what == GK__REL_FREE)
            it->rc = gk_device_free(p->dev, (void *)it->addr);
        else if (it->what == GK__REL_UNMAP && it->rc == 0)
            it->done = gk__unmap_run(p, it->addr, it->size, it->page, &it->rc);
        else if (it->what == GK__REL_VA)
            it->rc = gk_device_vm_release(p->dev, (void *)it->addr, it->size);
    }
    uint64_t t1 = gk__pool_now_ns();
    gk__relock_after_device(p);
    p->stats.backend_ns += t1 - t0;
    for (size_t i = 0; i < rel->n; i++) {
        gk__rel_item *it = &rel->items[i];
        if (it->rc && !rel->rc)
            rel->rc = it->rc;
        if (it->what == GK__REL_FREE) {
            rel->released += it->size;
            finish_free(p, it);
        } else if (it->what == GK__REL_UNMAP) {
            rel->released += it->done;
            gk__expand_finish_unmap(p, it);
        } else {
            gk__expand_finish_va(p, it);
        }
    }
    rel->n = 0;
    return rel->rc;
}

/* --- garbage collection ----------------------------------------------------------------------- */

/* Frees cached unsplit large segments until at least `target` bytes are reclaimed, PyTorch's way:
 * each pass frees every one whose age (best-fit lookups on the large pool since it was cached) is
 * at least the average age, without stopping at the target, so one collection makes room for
 * many allocations; passes repeat, with the average of the rest, until the target is reached or
 * nothing is left. The age list keeps them oldest first, so a pass frees a prefix. */
static int collect(gk_pool *p, size_t target, size_t *reclaimed)
{
    gk__rel rel = {0};
    int first = 0;
    *reclaimed = 0;
    while (*reclaimed < target) {
        gk__agelist *l = &p->rel[GK_POOL_LARGE];
        if (l->n == 0)
            break;
        /* age >= average age  <=>  free_tick * n <= sum of free_ticks */
        gk__u128 n = l->n, sum = l->tick_sum;
        for (gk__segment *s = l->head, *next; s && (gk__u128)s->free_tick * n <= sum; s = next) {
            next = s->rnext;
            if (add_segment(p, &rel, s) != 0)
                break;
        }
        if (rel.n == 0)
            break;
        rel.released = 0;
        int rc = gk__rel_run(p, &rel);
        *reclaimed += rel.released;
        if (rc && !first)
            first = rc;
    }
    gk__rel_free(&rel);
    return first;
}

/* Rung 3: collects when reserved bytes exceed gc_threshold * limit (the device's total memory
 * when no limit is set). */
void gk__collect_garbage(gk_pool *p)
{
    if (p->cfg.gc_threshold <= 0)
        return;
    size_t lim = p->limit ? p->limit : p->total_memory;
    size_t threshold = (size_t)(p->cfg.gc_threshold * (double)lim);
    if (p->reserved <= threshold)
        return;
    p->stats.num_gc_runs++;
    size_t got;
    collect(p, p->reserved - threshold, &got);
}

int gk_pool_collect(gk_pool *p, size_t target, size_t *released)
{
    if (released)
        *released = 0;
    if (!p)
        return gk__error(-EINVAL, "gk_pool_collect: p is NULL");
    pthread_mutex_lock(&p->lock);
    gk__events_process(p);
    p->stats.num_gc_runs++;
    size_t got = 0;
    int rc = p->reserved > target ? collect(p, p->reserved - target, &got) : 0;
    if (released)
        *released = got;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

gk_device *gk_pool_device(gk_pool *p)
{
    return p ? p->dev : NULL;
}

/* --- oversize release --------------------------------------------------------------------------- */

/* Rung 5 (PyTorch's release_available_cached_blocks): with key = max(request, max_split_size),
 * frees the smallest cached block of the request's stream and pool of at least key; when there is
 * none, frees the largest oversize blocks below key, largest first, until key bytes are free.
 * Blocks of expandable segments are never freed here. Returns whether enough was freed. */
bool gk__release_oversize(gk_pool *p, const gk__request *r)
{
    size_t msplit = p->cfg.max_split_size;
    size_t key = r->rsize > msplit ? r->rsize : msplit;
    gk__tree *t = &p->free[r->kind];
    gk__rel rel = {0};
    bool enough = false;
    gk__block *b = gk__tree_lower_bound(t, r->stream, key);
    if (b && b->stream == r->stream && !b->seg->expandable && releasable(b->seg)) {
        enough = add_segment(p, &rel, b->seg) == 0;
    } else {
        size_t total = 0;
        gk__block *it = gk__tree_below(t, r->stream, key);
        while (it && total < key && it->size >= msplit && it->stream == r->stream) {
            gk__block *prev = gk__tree_below_key(t, it->stream, it->size, it->addr);
            if (!it->seg->expandable && releasable(it->seg)) {
                total += it->size;
                if (add_segment(p, &rel, it->seg) != 0)
                    break;
            }
            it = prev;
        }
        enough = total >= key;
    }
    gk__rel_run(p, &rel);
    gk__rel_free(&rel);
    return enough;
}

/* Rung 6 and empty_cache: waits for events, frees every unsplit cached block, unmaps every free
 * page and gives back address ranges with nothing mapped. Returns the first device error. */
int gk__release_cached(gk_pool *p)
{
    gk__events_sync_all(p);
    gk__rel rel = {.sync = true};
    for (gk__segment *s = p->seg_head; s; s = s->next) {
        if (s->expandable)
            gk__expand_plan_release(p, s, &rel, true);
        else if (releasable(s))
            add_segment(p, &rel, s);
    }
    int first = gk__rel_run(p, &rel);
    /* Ranges the unmapping just emptied. */
    for (gk__segment *s = p->seg_head; s; s = s->next)
        if (s->expandable && s->mapped == 0)
            gk__expand_plan_release(p, s, &rel, true);
    int rc = gk__rel_run(p, &rel);
    gk__rel_free(&rel);
    return first ? first : rc;
}

/* A stream is being destroyed (its work is done): forget it as a user of live blocks, give its
 * unsplit cached segments back to the device, unmap the free pages of its expandable segments,
 * and re-key the rest of its segments to the default stream so the memory is not stranded. It
 * waits for work other threads do outside the lock, which may hold the stream. */
void gk__stream_hook(void *user, gk_stream *stream)
{
    gk_pool *p = user;
    uintptr_t key = (uintptr_t)stream;
    if (!key)
        return;
    pthread_mutex_lock(&p->lock);
    while (p->inflight)
        pthread_cond_wait(&p->idle, &p->lock);
    gk__events_stream_gone(p, stream);
    gk__rel rel = {0};
    for (gk__segment *s = p->seg_head; s; s = s->next) {
        for (gk__block *b = s->head; b; b = b->next) {
            for (int i = 0; i < b->nuses;) {
                if (b->uses[i] == stream)
                    b->uses[i] = b->uses[--b->nuses];
                else
                    i++;
            }
        }
        if (s->stream != key)
            continue;
        if (releasable(s)) {
            add_segment(p, &rel, s);
            continue;
        }
        if (s->expandable)
            gk__expand_plan_release(p, s, &rel, false);
        s->stream = 0;
        for (gk__block *b = s->head; b; b = b->next) {
            bool cached = b->state == GK__FREE;
            if (cached)
                gk__cache_remove(p, b);
            b->stream = 0;
            if (cached)
                gk__cache_insert(p, b);
        }
    }
    gk__rel_run(p, &rel);
    gk__rel_free(&rel);
    for (int k = GK_POOL_SMALL; k <= GK_POOL_LARGE; k++)
        gk__tree_drop(&p->free[k], key);
    pthread_mutex_unlock(&p->lock);
}

int gk_pool_empty_cache(gk_pool *p)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_empty_cache: p is NULL");
    pthread_mutex_lock(&p->lock);
    int rc = gk__release_cached(p);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static int by_size_then_age(const void *a, const void *b)
{
    const gk__segment *x = *(const gk__segment *const *)a, *y = *(const gk__segment *const *)b;
    if (x->size != y->size)
        return x->size < y->size ? 1 : -1;
    return (x->free_tick > y->free_tick) - (x->free_tick < y->free_tick);
}

int gk_pool_trim(gk_pool *p, size_t target, size_t *released)
{
    if (released)
        *released = 0;
    if (!p)
        return gk__error(-EINVAL, "gk_pool_trim: p is NULL");
    pthread_mutex_lock(&p->lock);
    gk__events_process(p);
    gk__rel rel = {.sync = true};
    size_t n = p->rel[GK_POOL_SMALL].n + p->rel[GK_POOL_LARGE].n, k = 0;
    gk__segment **v = gk__malloc((n ? n : 1) * sizeof *v);
    int first = v ? 0 : -ENOMEM;
    if (v) {
        for (int kind = GK_POOL_SMALL; kind <= GK_POOL_LARGE; kind++)
            for (gk__segment *s = p->rel[kind].head; s; s = s->rnext)
                v[k++] = s;
        qsort(v, k, sizeof *v, by_size_then_age);
    }
    /* Largest unsplit segments first, then free pages of expandable segments, oldest first. */
    size_t projected = p->reserved;
    for (size_t i = 0; i < k && projected > target; i++) {
        if (add_segment(p, &rel, v[i]) == 0)
            projected -= v[i]->size;
    }
    free(v);
    for (gk__segment *s = p->seg_head; s && projected > target; s = s->next) {
        if (!s->expandable)
            continue;
        size_t before = rel.n;
        gk__expand_plan_release(p, s, &rel, false);
        for (size_t i = before; i < rel.n; i++)
            projected -= projected > rel.items[i].size ? rel.items[i].size : projected;
    }
    int rc = gk__rel_run(p, &rel);
    if (rc && !first)
        first = rc;
    if (released)
        *released = rel.released;
    gk__rel_free(&rel);
    pthread_mutex_unlock(&p->lock);
    return first;
}

int gk_pool_set_limit(gk_pool *p, size_t bytes)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_set_limit: p is NULL");
    pthread_mutex_lock(&p->lock);
    p->cfg.limit_bytes = bytes;
    p->cfg.limit_fraction = 0;
    p->limit = bytes;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

size_t gk_pool_get_limit(gk_pool *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    size_t lim = p->limit;
    pthread_mutex_unlock(&p->lock);
    return lim;
}

int gk_pool_add_pressure_callback(gk_pool *p, gk_pool_pressure_fn fn, void *user)
{
    if (!p || !fn)
        return gk__error(-EINVAL, "gk_pool_add_pressure_callback: p or fn is NULL");
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    if (p->npressure == GK__MAX_PRESSURE) {
        rc = gk__error(-ENOSPC, "gk_pool_add_pressure_callback: %d callbacks already (the most)",
                       GK__MAX_PRESSURE);
    } else {
        p->pressure[p->npressure].fn = fn;
        p->pressure[p->npressure].user = user;
        p->npressure++;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int gk_pool_remove_pressure_callback(gk_pool *p, gk_pool_pressure_fn fn, void *user)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_remove_pressure_callback: p is NULL");
    int rc = -ENOENT;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->npressure; i++) {
        if (p->pressure[i].fn == fn && p->pressure[i].user == user) {
            p->pressure[i] = p->pressure[--p->npressure];
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

const char *gk_pool_last_error(gk_pool *p)
{
    (void)p;
    return gk_last_error();
}
