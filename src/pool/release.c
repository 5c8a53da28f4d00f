/* How the pool gives memory back: the GC pass over old cached blocks, oversize release, the
 * release of every unsplit cached block (empty_cache and the ladder), trim, and the stream-destroy
 * hook that hands a stream's cache back; plus the small setters (limit, pressure callbacks, the
 * CSV trace log). */
#include <stdlib.h>
#include <unistd.h>

#include "common/errtext.h"
#include "pool/pool_int.h"

/* --- giving memory back ----------------------------------------------------------------------- */

/* Frees the oldest cached unsplit large blocks (age: best-fit lookups on the large pool since the
 * block was cached; each round frees those at least as old as the average) until reserved bytes
 * are at most `threshold`. */
static int collect_to(gk_pool *p, size_t threshold)
{
    int first = 0;
    while (p->reserved > threshold) {
        uint64_t now = p->ticks[GK_POOL_LARGE], sum = 0, n = 0;
        for (gk__segment *s = p->segments; s; s = s->next) {
            if (s->kind == GK_POOL_LARGE && gk__releasable(s)) {
                sum += now - s->head->free_tick;
                n++;
            }
        }
        if (n == 0)
            break;
        uint64_t avg = sum / n;
        bool freed = false;
        for (gk__segment *s = p->segments, *next; s && p->reserved > threshold; s = next) {
            next = s->next;
            if (s->kind != GK_POOL_LARGE || !gk__releasable(s) || now - s->head->free_tick < avg)
                continue;
            int rc = gk__release_segment(p, s);
            if (rc == 0)
                freed = true;
            else if (!first)
                first = rc;
        }
        if (!freed)
            break;
    }
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
    collect_to(p, threshold);
}

int gk_pool_collect(gk_pool *p, size_t target, size_t *released)
{
    if (released)
        *released = 0;
    if (!p)
        return gk__error(-EINVAL, "gk_pool_collect: p is NULL");
    pthread_mutex_lock(&p->lock);
    size_t before = p->reserved;
    gk__process_events(p);
    p->stats.num_gc_runs++;
    int rc = collect_to(p, target);
    if (released)
        *released = before - p->reserved;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

gk_device *gk_pool_device(gk_pool *p)
{
    return p ? p->dev : NULL;
}

/* Rung 5: frees cached oversize blocks of r's stream: the smallest that covers the request, else
 * the largest ones until enough is free. */
void gk__release_oversize(gk_pool *p, const gk__request *r)
{
    for (;;) {
        gk__segment *best = NULL, *largest = NULL;
        for (gk__segment *s = p->segments; s; s = s->next) {
            if (s->kind != r->kind || s->stream != r->stream || !gk__releasable(s) ||
                s->size < p->cfg.max_split_size)
                continue;
            if (s->size >= r->alloc && (!best || s->size < best->size))
                best = s;
            if (!largest || s->size > largest->size)
                largest = s;
        }
        if (best) {
            gk__release_segment(p, best);
            return;
        }
        if (!largest || gk__release_segment(p, largest) != 0)
            return;
    }
}

/* Rung 6 and empty_cache: waits for events, frees every unsplit cached block, unmaps free pages
 * and drops empty address ranges. Returns the first device error. */
int gk__release_cached(gk_pool *p)
{
    int first = 0;
    gk__sync_events(p);
    for (gk__segment *s = p->segments, *next; s; s = next) {
        next = s->next;
        int rc = 0;
        if (s->expandable)
            rc = gk__expand_release(p, s, true, true);
        else if (gk__releasable(s))
            rc = gk__release_segment(p, s);
        if (rc && !first)
            first = rc;
    }
    return first;
}

/* A stream is being destroyed (its work is done): forget it as a user of live blocks, give its
 * unsplit cached segments back to the device, and re-key the rest of its segments to the default
 * stream so the memory is not stranded. */
void gk__stream_hook(void *user, gk_stream *stream)
{
    gk_pool *p = user;
    uintptr_t key = (uintptr_t)stream;
    if (!key)
        return;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->npending;) {
        if (gk_event_query(p->dev, p->pending[i].event) == 0)
            gk__pending_done(p, i);
        else
            i++;
    }
    for (gk__segment *s = p->segments, *next; s; s = next) {
        next = s->next;
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
        if (gk__releasable(s)) {
            gk__release_segment(p, s); /* gone even when the device reports an error */
            continue;
        }
        if (s->expandable)
            gk__expand_release(p, s, false, false);
        s->stream = 0;
        for (gk__block *b = s->head; b; b = b->next) {
            bool cached = b->in_tree;
            if (cached)
                gk__tree_remove(&p->free[s->kind], b);
            b->stream = 0;
            if (cached)
                gk__tree_insert(&p->free[s->kind], b);
        }
    }
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

int gk_pool_trim(gk_pool *p, size_t target, size_t *released)
{
    if (released)
        *released = 0;
    if (!p)
        return gk__error(-EINVAL, "gk_pool_trim: p is NULL");
    pthread_mutex_lock(&p->lock);
    size_t before = p->reserved;
    int first = 0;
    gk__process_events(p);
    while (p->reserved > target) {
        gk__segment *largest = NULL;
        for (gk__segment *s = p->segments; s; s = s->next)
            if (gk__releasable(s) && (!largest || s->size > largest->size))
                largest = s;
        if (!largest)
            break;
        int rc = gk__release_segment(p, largest);
        if (rc) {
            first = rc;
            break;
        }
    }
    for (gk__segment *s = p->segments; s && p->reserved > target; s = s->next) {
        if (s->expandable) {
            int rc = gk__expand_release(p, s, true, false);
            if (rc && !first)
                first = rc;
        }
    }
    if (released)
        *released = before - p->reserved;
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
        return gk__error(-EINVAL, "gk_pool_add_pressure_callback: invalid argument (!p || !fn)");
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    if (p->npressure == GK__MAX_PRESSURE) {
        rc = -ENOSPC;
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

int gk_pool_set_trace_log(gk_pool *p, FILE *out)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_set_trace_log: p is NULL");
    pthread_mutex_lock(&p->lock);
    p->trace = out;
    int rc = 0;
    if (out && fputs("Thread,Time,Action,Pointer,Size,Stream\n", out) == EOF)
        rc = -EIO;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void gk__pool_trace_line(gk_pool *p, const char *action, uintptr_t addr, size_t size,
                         uintptr_t stream)
{
    if (!p->trace)
        return;
    double t = (double)(gk__pool_now_ns() - p->t0_ns) / 1e9;
    fprintf(p->trace, "%ld,%.9f,%s,0x%lx,%zu,0x%lx\n", (long)gettid(), t, action,
            (unsigned long)addr, size, (unsigned long)stream);
}
