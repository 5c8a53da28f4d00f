/* The side-by-side run of a real pool and the model (pool_model.h): a trace replayed through both
 * the way gk_trace_replay replays it, and after every event a comparison of what they did plus a
 * check of the pool's own structure and of the promises that need no model. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool_int.h"
#include "pool_model.h"
#include "pool_model_int.h"

void pm_device_spec(const pm_device *d, char *buf, size_t len)
{
    snprintf(buf, len, "sim:capacity=%llu,alignment=%llu,granularity=%llu,va_size=%llu",
             (unsigned long long)d->capacity, (unsigned long long)d->alignment,
             (unsigned long long)d->granularity, (unsigned long long)d->va_size);
}

int pm_device_parse(const char *spec, pm_device *d)
{
    d->capacity = 16ull << 30;
    d->alignment = 256;
    d->granularity = 2u << 20;
    d->va_size = 0;
    bool va_set = false;
    if (strncmp(spec, "sim", 3) != 0 || (spec[3] && spec[3] != ':'))
        return -EINVAL;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec[3] ? spec + 4 : "");
    char *save = NULL;
    for (char *it = strtok_r(buf, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(it, '=');
        uint64_t v;
        if (!eq || gk_parse_size(eq + 1, &v) != 0)
            return -EINVAL;
        *eq = '\0';
        if (strcmp(it, "capacity") == 0)
            d->capacity = v;
        else if (strcmp(it, "alignment") == 0)
            d->alignment = v;
        else if (strcmp(it, "granularity") == 0)
            d->granularity = v;
        else if (strcmp(it, "va_size") == 0) {
            d->va_size = v;
            va_set = true;
        } else
            return -EINVAL;
    }
    if (!va_set)
        d->va_size = 4 * d->capacity;
    d->va_size = (d->va_size + d->granularity - 1) / d->granularity * d->granularity;
    return 0;
}

/* --- messages ---------------------------------------------------------------------------------- */

typedef struct ctx {
    char *why;
    size_t len;
    bool failed;
    size_t event;
} ctx;

static bool fail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(ctx *c, const char *fmt, ...)
{
    if (c->failed)
        return false;
    c->failed = true;
    int n = snprintf(c->why, c->len, "event %zu: ", c->event);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < c->len)
        vsnprintf(c->why + n, c->len - (size_t)n, fmt, ap);
    va_end(ap);
    return false;
}

/* --- the pool's own structure -------------------------------------------------------------------- */

typedef struct walk {
    size_t count;
    bool ok;
    const gk__block *prev;
} walk;

static int key_cmp(const gk__block *a, const gk__block *b)
{
    if (a->size != b->size)
        return a->size < b->size ? -1 : 1;
    return (a->addr > b->addr) - (a->addr < b->addr);
}

/* One class in order: keys strictly increasing, heap order of priorities, maxsz right, every node
 * FREE, of the class and stream. */
static size_t class_walk(const gk__block *n, walk *w, unsigned cls, uintptr_t stream)
{
    if (!n)
        return 0;
    size_t m = n->size;
    if (n->left) {
        if (n->left->prio > n->prio)
            w->ok = false;
        size_t l = class_walk(n->left, w, cls, stream);
        m = l > m ? l : m;
    }
    if (w->prev && key_cmp(w->prev, n) >= 0)
        w->ok = false;
    if (n->state != GK__FREE || gk__tree_class(n->size) != cls || n->stream != stream)
        w->ok = false;
    w->prev = n;
    w->count++;
    if (n->right) {
        if (n->right->prio > n->prio)
            w->ok = false;
        size_t r = class_walk(n->right, w, cls, stream);
        m = r > m ? r : m;
    }
    if (n->maxsz != m)
        w->ok = false;
    return m;
}

/* Every stream's index of a kind: the bitmap names exactly the non-empty classes. */
static void index_walk(const gk__tree *t, walk *w)
{
    for (const gk__fidx *x = t->head; x; x = x->next) {
        for (unsigned c = 0; c < GK__CLASSES; c++) {
            bool bit = (x->bits[c / 64] >> (c % 64)) & 1;
            if (bit != (x->cls[c] != NULL))
                w->ok = false;
            w->prev = NULL;
            class_walk(x->cls[c], w, c, x->stream);
        }
        for (unsigned k = 0; k < GK__CLASSES / 64; k++)
            if (((x->words >> k) & 1) != (x->bits[k] != 0))
                w->ok = false;
    }
}

static int by_base(const void *a, const void *b)
{
    const gk__segment *x = *(const gk__segment *const *)a, *y = *(const gk__segment *const *)b;
    return (x->base > y->base) - (x->base < y->base);
}

typedef struct sums {
    int64_t alloc_n[GK_POOL_KINDS], alloc_b[GK_POOL_KINDS], active_n[GK_POOL_KINDS],
        active_b[GK_POOL_KINDS], req[GK_POOL_KINDS], resv[GK_POOL_KINDS], segs[GK_POOL_KINDS],
        split_n[GK_POOL_KINDS], split_b[GK_POOL_KINDS];
    int64_t over_alloc, over_seg;
    size_t free_blocks, free_bytes, largest, live;
} sums;

static void add(int64_t *arr, int kind, int64_t v)
{
    arr[GK_POOL_ALL] += v;
    arr[kind] += v;
}

/* Walks every segment and block of the pool and checks its structure against its statistics. */
static bool check_pool(gk_pool *p, ctx *c)
{
    sums s;
    memset(&s, 0, sizeof s);
    size_t nseg = 0;
    for (gk__segment *g = p->seg_head; g; g = g->next)
        nseg++;
    gk__segment **segs = malloc((nseg + 1) * sizeof *segs);
    size_t k = 0;
    bool rel_ok = true;
    for (gk__segment *g = p->seg_head; g; g = g->next) {
        segs[k++] = g;
        if (g->busy)
            return fail(c, "segment %#lx left busy (%d)", (unsigned long)g->base, g->busy);
        add(s.segs, g->kind, 1);
        add(s.resv, g->kind, (int64_t)(g->expandable ? g->mapped : g->size));
        if (!g->expandable && g->size >= p->cfg.max_split_size)
            s.over_seg++;
        uintptr_t at = g->base;
        size_t unmapped = 0, nunmapped = 0, nblocks = 0;
        for (gk__block *b = g->head, *prev = NULL; b; prev = b, b = b->next) {
            nblocks++;
            if (b->addr != at || b->prev != prev || b->seg != g || b->size == 0)
                return fail(c, "blocks do not tile segment %#lx at %#lx", (unsigned long)g->base,
                            (unsigned long)at);
            if (b->stream != g->stream)
                return fail(c, "block %#lx has another stream than its segment",
                            (unsigned long)b->addr);
            at += b->size;
            if (prev && prev->state == b->state &&
                (b->state == GK__FREE || b->state == GK__UNMAPPED))
                return fail(c, "two adjacent %s blocks at %#lx",
                            b->state == GK__FREE ? "free" : "unmapped", (unsigned long)b->addr);
            switch (b->state) {
            case GK__FREE:
                s.free_blocks++;
                s.free_bytes += b->size;
                s.largest = b->size > s.largest ? b->size : s.largest;
                if (!g->expandable && (b->prev || b->next)) {
                    add(s.split_n, g->kind, 1);
                    add(s.split_b, g->kind, (int64_t)b->size);
                }
                break;
            case GK__LIVE:
                add(s.active_n, g->kind, 1);
                add(s.active_b, g->kind, (int64_t)b->size);
                if (b->event_count == 0) {
                    s.live++;
                    add(s.alloc_n, g->kind, 1);
                    add(s.alloc_b, g->kind, (int64_t)b->size);
                    add(s.req, g->kind, (int64_t)b->requested);
                    if (b->size >= p->cfg.max_split_size)
                        s.over_alloc++;
                    if (gk__ptrmap_find(&p->map, b->addr) != b)
                        return fail(c, "live block %#lx not in the pointer map",
                                    (unsigned long)b->addr);
                }
                break;
            case GK__UNMAPPED:
                if (!g->expandable || (b->addr - g->base) % g->page || b->size % g->page)
                    return fail(c,
                                "unmapped block %#lx is not whole pages of an expandable "
                                "segment",
                                (unsigned long)b->addr);
                unmapped += b->size;
                nunmapped++;
                break;
            default:
                return fail(c, "block %#lx left in transient state %d", (unsigned long)b->addr,
                            b->state);
            }
        }
        if (at != g->base + g->size)
            return fail(c, "blocks of segment %#lx end at %#lx", (unsigned long)g->base,
                        (unsigned long)at);
        if (g->expandable) {
            size_t listed = 0;
            for (gk__block *u = g->unmapped; u; u = u->unext) {
                listed++;
                if (u->state != GK__UNMAPPED || u->seg != g)
                    return fail(c, "the unmapped list holds a block that is not unmapped");
            }
            if (listed != nunmapped)
                return fail(c, "the unmapped list has %zu blocks, the segment %zu", listed,
                            nunmapped);
            if (g->mapped != g->size - unmapped)
                return fail(c, "segment %#lx says %zu mapped, its blocks %zu",
                            (unsigned long)g->base, g->mapped, g->size - unmapped);
        }
        bool should_rel = !g->expandable && nblocks == 1 && g->head->state == GK__FREE;
        if (g->releasable != should_rel)
            rel_ok = false;
    }
    qsort(segs, k, sizeof *segs, by_base);
    for (size_t i = 1; i < k; i++)
        if (segs[i - 1]->base + segs[i - 1]->size > segs[i]->base)
            return fail(c, "segments %#lx and %#lx overlap", (unsigned long)segs[i - 1]->base,
                        (unsigned long)segs[i]->base);
    free(segs);
    if (!rel_ok)
        return fail(c, "a segment's releasable mark is wrong");
    for (int kind = GK_POOL_SMALL; kind <= GK_POOL_LARGE; kind++) {
        uint64_t n = 0, sum = 0, last = 0;
        for (gk__segment *g = p->rel[kind].head; g; g = g->rnext) {
            if (!g->releasable || g->kind != kind || g->free_tick < last)
                return fail(c, "the age list of pool %d is out of order or wrong", kind);
            last = g->free_tick;
            n++;
            sum += g->free_tick;
        }
        if (n != p->rel[kind].n || sum != p->rel[kind].tick_sum)
            return fail(c, "the age list of pool %d counts %llu/%llu, holds %llu/%llu", kind,
                        (unsigned long long)p->rel[kind].n,
                        (unsigned long long)p->rel[kind].tick_sum, (unsigned long long)n,
                        (unsigned long long)sum);
    }
    walk w = {0, true, NULL};
    index_walk(&p->free[GK_POOL_SMALL], &w);
    index_walk(&p->free[GK_POOL_LARGE], &w);
    if (!w.ok || w.count != s.free_blocks)
        return fail(c, "free trees hold %zu blocks (order %s), the segments %zu free", w.count,
                    w.ok ? "right" : "wrong", s.free_blocks);
    if (p->map.count != s.live)
        return fail(c, "pointer map holds %zu, %zu blocks are live", p->map.count, s.live);
    if (p->free_bytes != s.free_bytes)
        return fail(c, "free_bytes %zu, free blocks sum to %zu", p->free_bytes, s.free_bytes);
    gk_pool_stats st;
    gk_pool_get_stats(p, &st);
    for (int kind = 0; kind < GK_POOL_KINDS; kind++) {
        struct {
            const char *name;
            int64_t have, want;
        } f[] = {{"allocation", st.allocation[kind].current, s.alloc_n[kind]},
                 {"allocated_bytes", st.allocated_bytes[kind].current, s.alloc_b[kind]},
                 {"active", st.active[kind].current, s.active_n[kind]},
                 {"active_bytes", st.active_bytes[kind].current, s.active_b[kind]},
                 {"requested_bytes", st.requested_bytes[kind].current, s.req[kind]},
                 {"reserved_bytes", st.reserved_bytes[kind].current, s.resv[kind]},
                 {"segment", st.segment[kind].current, s.segs[kind]},
                 {"inactive_split", st.inactive_split[kind].current, s.split_n[kind]},
                 {"inactive_split_bytes", st.inactive_split_bytes[kind].current, s.split_b[kind]}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            if (f[i].have != f[i].want)
                return fail(c, "%s[%d] is %lld, the blocks sum to %lld", f[i].name, kind,
                            (long long)f[i].have, (long long)f[i].want);
    }
    if (st.oversize_allocations.current != s.over_alloc ||
        st.oversize_segments.current != s.over_seg)
        return fail(c, "oversize counts %lld/%lld, the blocks %lld/%lld",
                    (long long)st.oversize_allocations.current,
                    (long long)st.oversize_segments.current, (long long)s.over_alloc,
                    (long long)s.over_seg);
    if (st.largest_free_block != s.largest || st.free_cached_bytes != s.free_bytes)
        return fail(c, "free figures %llu/%llu, the blocks %zu/%zu",
                    (unsigned long long)st.largest_free_block,
                    (unsigned long long)st.free_cached_bytes, s.largest, s.free_bytes);
    if ((int64_t)p->reserved != st.reserved_bytes[GK_POOL_ALL].current)
        return fail(c, "pool->reserved %zu, statistics %lld", p->reserved,
                    (long long)st.reserved_bytes[GK_POOL_ALL].current);
    return true;
}

/* --- pool against model ---------------------------------------------------------------------------- */

static bool same_stat(ctx *c, const char *name, int kind, const gk_pool_stat *a,
                      const gk_pool_stat *b)
{
    if (a->current == b->current && a->peak == b->peak && a->allocated == b->allocated &&
        a->freed == b->freed)
        return true;
    return fail(c,
                "%s[%d]: pool {cur %lld, peak %lld, alloc %llu, freed %llu}, model {cur %lld, "
                "peak %lld, alloc %llu, freed %llu}",
                name, kind, (long long)a->current, (long long)a->peak,
                (unsigned long long)a->allocated, (unsigned long long)a->freed,
                (long long)b->current, (long long)b->peak, (unsigned long long)b->allocated,
                (unsigned long long)b->freed);
}

static bool compare(gk_pool *pool, gk_device *dev, pm_pool *m, ctx *c)
{
    if (!check_pool(pool, c))
        return false;
    gk_pool_stats a, b;
    gk_pool_get_stats(pool, &a);
    pm_pool_stats(m, &b);
#define CMP_STAT(name, desc)                                                                       \
    for (int k = 0; k < GK_POOL_KINDS; k++)                                                        \
        if (!same_stat(c, #name, k, &a.name[k], &b.name[k]))                                       \
            return false;
    GK_POOL_STAT_MAP(CMP_STAT)
#undef CMP_STAT
    if (!same_stat(c, "oversize_allocations", 0, &a.oversize_allocations,
                   &b.oversize_allocations) ||
        !same_stat(c, "oversize_segments", 0, &a.oversize_segments, &b.oversize_segments))
        return false;
    struct {
        const char *name;
        uint64_t x, y;
    } f[] = {{"num_alloc_retries", a.num_alloc_retries, b.num_alloc_retries},
             {"num_ooms", a.num_ooms, b.num_ooms},
             {"num_sync_all_streams", a.num_sync_all_streams, b.num_sync_all_streams},
             {"num_device_alloc", a.num_device_alloc, b.num_device_alloc},
             {"num_device_free", a.num_device_free, b.num_device_free},
             {"num_gc_runs", a.num_gc_runs, b.num_gc_runs},
             {"num_cache_hits", a.num_cache_hits, b.num_cache_hits},
             {"num_invalid_free", a.num_invalid_free, 0},
             {"num_double_free", a.num_double_free, 0},
             {"largest_free_block", a.largest_free_block, b.largest_free_block},
             {"free_cached_bytes", a.free_cached_bytes, b.free_cached_bytes},
             {"limit", a.limit, b.limit},
             {"max_split_size", a.max_split_size, b.max_split_size},
             {"expandable_segments", a.expandable_segments, b.expandable_segments},
             {"expandable_fallback", a.expandable_fallback, b.expandable_fallback},
             {"device bytes in use", gk_device_sim_used(dev), m->dev->used}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].x != f[i].y)
            return fail(c, "%s: pool %llu, model %llu", f[i].name, (unsigned long long)f[i].x,
                        (unsigned long long)f[i].y);
    return true;
}

/* Whether the model's cache holds a block that best fit would hand out for the request. */
static bool could_serve(const pm_pool *m, uint64_t size, uint64_t stream)
{
    const gk_pool_config *cfg = &m->cfg;
    if (size > m->max_request)
        return false;
    uint64_t rsize = pm_round_size(cfg, size);
    int kind = rsize <= cfg->small_max ? GK_POOL_SMALL : GK_POOL_LARGE;
    const pm_block *best = NULL;
    const pm_seg *bs = NULL;
    for (size_t k = 0; k < m->nsegs; k++) {
        const pm_seg *s = m->segs[k];
        for (size_t i = 0; s->kind == kind && i < s->nb; i++) {
            const pm_block *b = &s->b[i];
            if (b->state != PM_FREE || b->stream != stream || b->size < rsize)
                continue;
            if (!best || b->size < best->size || (b->size == best->size && b->addr < best->addr)) {
                best = b;
                bs = s;
            }
        }
    }
    if (!best)
        return false;
    if (bs->exp)
        return true;
    uint64_t ms = cfg->max_split_size;
    return !(rsize < ms && best->size >= ms) &&
           !(rsize >= ms && best->size - rsize >= cfg->max_non_split_rounding);
}

/* After a failed allocation the ladder's last rung has run: no unsplit cached classic segment and
 * no whole free page is left. */
static bool nothing_left(const pm_pool *m)
{
    for (size_t k = 0; k < m->nsegs; k++) {
        const pm_seg *s = m->segs[k];
        if (!s->exp && s->rel)
            return false;
        for (size_t i = 0; s->exp && i < s->nb; i++) {
            const pm_block *b = &s->b[i];
            uint64_t lo = (b->addr - s->base + s->page - 1) / s->page * s->page;
            uint64_t hi = (b->addr + b->size - s->base) / s->page * s->page;
            if (b->state == PM_FREE && hi > lo)
                return false;
        }
    }
    return true;
}

/* --- the run ----------------------------------------------------------------------------------- */

typedef struct streams {
    gk__tmap ids; /* trace stream id -> gk_stream */
    gk_stream **all;
    size_t n, cap;
} streams;

static gk_stream *stream_for(gk_device *dev, streams *ss, uint64_t id)
{
    uint64_t v, unused;
    if (id == 0)
        return NULL;
    if (gk__tmap_take(&ss->ids, id, &v, &unused) == 0) {
        gk__tmap_put(&ss->ids, id, v, 0);
        return (gk_stream *)(uintptr_t)v;
    }
    gk_stream *s = NULL;
    if (gk_stream_create(dev, &s) != 0)
        return NULL;
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 8;
        ss->all = realloc(ss->all, ss->cap * sizeof *ss->all);
    }
    ss->all[ss->n++] = s;
    gk__tmap_put(&ss->ids, id, (uint64_t)(uintptr_t)s, 0);
    return s;
}

static bool alloc_both(gk_pool *pool, pm_pool *m, gk__tmap *live, const gk_trace_event *e,
                       gk_stream *s, pm_result *res, ctx *c)
{
    uint64_t hits = m->st.num_device_alloc;
    bool could = could_serve(m, e->size, (uintptr_t)s);
    void *ptr = NULL;
    int rc = gk_pool_malloc(pool, (size_t)e->size, s, &ptr);
    uint64_t addr;
    int mrc = pm_malloc(m, e->size, (uintptr_t)s, &addr);
    if (rc != 0 && rc != GK_EDEVOOM)
        return fail(c, "allocation of %llu returned %s", (unsigned long long)e->size,
                    gk_err_name(rc));
    if ((rc == 0) != (mrc == 0))
        return fail(c, "allocation of %llu: pool %s, model %s", (unsigned long long)e->size,
                    rc ? "refused" : "served", mrc ? "refused" : "served");
    if (rc != 0) {
        res->failed++;
        if (e->size <= m->max_request && !nothing_left(m))
            return fail(c, "allocation of %llu failed with releasable cache left",
                        (unsigned long long)e->size);
        return true;
    }
    if ((uintptr_t)ptr != addr)
        return fail(c, "allocation of %llu: pool %p, model %#llx", (unsigned long long)e->size, ptr,
                    (unsigned long long)addr);
    if (m->st.num_device_alloc > hits && could)
        return fail(c, "allocation of %llu reserved memory though the cache could serve it",
                    (unsigned long long)e->size);
    gk__tmap_put(live, e->ptr, addr, e->size);
    return true;
}

/* The case's settings (0, or 1 when refused). */
static int case_config(const pm_case *cs, gk_pool_config *cfg)
{
    char err[256];
    if (gk_pool_config_preset(cfg, cs->preset) != 0 ||
        (cs->set[0] && gk_pool_config_parse(cfg, cs->set, err, sizeof err) != 0))
        return 1;
    cfg->logger.level = GK_LOG_OFF;
    return 0;
}

int pm_check_case(const pm_case *cs, pm_result *res, char *why, size_t len)
{
    memset(res, 0, sizeof *res);
    why[0] = '\0';
    ctx c = {why, len, false, 0};
    gk_pool_config cfg;
    if (case_config(cs, &cfg) != 0)
        return 1;
    char spec[256];
    pm_device_spec(&cs->dev, spec, sizeof spec);
    gk_device *dev = NULL;
    if (gk_device_open(spec, &dev) != 0)
        return 1;
    gk_pool *pool = NULL;
    int rc = gk_pool_create(dev, &cfg, &pool);
    if (rc != 0) {
        gk_device_close(dev);
        if (rc != -EINVAL || !gk_last_error()[0]) {
            snprintf(why, len, "gk_pool_create refused with %s and \"%s\"", gk_err_name(rc),
                     gk_last_error());
            return -1;
        }
        return 1;
    }
    pm_dev md;
    pm_dev_open(&md, &cs->dev);
    pm_pool m;
    pm_pool_open(&m, &cfg, &md);
    gk__tmap live;
    gk__tmap_init(&live, 256);
    streams ss = {0};
    gk__tmap_init(&ss.ids, 16);
    bool ok = compare(pool, dev, &m, &c);
    const gk_trace *t = cs->trace;
    for (size_t i = 0; ok && i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        uint64_t v, sz;
        c.event = i + 1;
        if (e->action == GK_TRACE_ALLOCATE) {
            gk_stream *s = stream_for(dev, &ss, e->stream);
            if (e->stream && !s) {
                ok = fail(&c, "cannot create a stream");
                break;
            }
            if (gk__tmap_take(&live, e->ptr, &v, &sz) == 0) { /* reused without a free */
                gk_pool_free(pool, (void *)(uintptr_t)v);
                pm_free(&m, v);
            }
            ok = alloc_both(pool, &m, &live, e, s, res, &c);
        } else if (e->action == GK_TRACE_FREE) {
            if (gk__tmap_take(&live, e->ptr, &v, &sz) != 0)
                continue;
            if (gk_pool_free(pool, (void *)(uintptr_t)v) != 0)
                ok = fail(&c, "free of %#llx refused", (unsigned long long)v);
            pm_free(&m, v);
        }
        res->events++;
        ok = ok && compare(pool, dev, &m, &c);
    }
    /* The end of a replay: what is live is freed, the streams are destroyed, the cache emptied. */
    c.event = t->count + 1;
    for (size_t i = 0; ok && i < live.cap; i++) {
        if (!live.used[i])
            continue;
        gk_pool_free(pool, (void *)(uintptr_t)live.vals[i]);
        pm_free(&m, live.vals[i]);
    }
    ok = ok && compare(pool, dev, &m, &c);
    for (size_t i = 0; i < ss.n; i++) {
        uintptr_t key = (uintptr_t)ss.all[i];
        gk_stream_destroy(dev, ss.all[i]);
        pm_stream_destroyed(&m, key);
        ok = ok && compare(pool, dev, &m, &c);
    }
    if (ok) {
        gk_pool_empty_cache(pool);
        pm_release_cached(&m);
        ok = compare(pool, dev, &m, &c);
    }
    gk_pool_stats st;
    gk_pool_get_stats(pool, &st);
    res->fallback = st.expandable_fallback != 0;
    res->expandable = st.expandable_segments != 0;
    res->retries = st.num_alloc_retries;
    res->gc_runs = st.num_gc_runs;
    gk_pool_destroy(pool);
    if (ok && gk_device_sim_used(dev) != 0)
        ok = fail(&c, "%zu device bytes still in use after the pool was destroyed",
                  gk_device_sim_used(dev));
    gk_device_close(dev);
    pm_pool_close(&m);
    pm_dev_close(&md);
    free(ss.all);
    gk__tmap_fini(&ss.ids);
    gk__tmap_fini(&live);
    return ok ? 0 : -1;
}

int pm_model_replay(const pm_case *cs, uint64_t *reserved, size_t *failed)
{
    gk_pool_config cfg;
    char err[256];
    if (case_config(cs, &cfg) != 0 || gk__pool_config_check(&cfg, err, sizeof err) != 0)
        return 1;
    pm_dev md;
    pm_dev_open(&md, &cs->dev);
    pm_pool m;
    pm_pool_open(&m, &cfg, &md);
    gk__tmap live;
    if (gk__tmap_init(&live, 256) != 0)
        return -ENOMEM;
    *failed = 0;
    const gk_trace *t = cs->trace;
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        uint64_t v, sz, addr;
        if (e->action == GK_TRACE_ALLOCATE) {
            if (gk__tmap_take(&live, e->ptr, &v, &sz) == 0)
                pm_free(&m, v);
            if (pm_malloc(&m, e->size, e->stream, &addr) == 0)
                gk__tmap_put(&live, e->ptr, addr, e->size);
            else
                (*failed)++;
        } else if (e->action == GK_TRACE_FREE && gk__tmap_take(&live, e->ptr, &v, &sz) == 0) {
            pm_free(&m, v);
        }
        if (reserved)
            reserved[i] = m.reserved;
    }
    gk__tmap_fini(&live);
    pm_pool_close(&m);
    pm_dev_close(&md);
    return 0;
}
