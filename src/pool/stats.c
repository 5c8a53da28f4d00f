/* Pool statistics: updates (with the peaks of open scopes), resets, scopes, and the two printed
 * forms: PyTorch's memory_summary table and a flat JSON object with PyTorch's key names. The list
 * of statistics lives once in pool.h (GK_POOL_STAT_MAP / GK_POOL_COUNTER_MAP). */
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "pool/pool_int.h"

void gk__scope_peaks(gk_pool *p, const gk_pool_stat *s)
{
    size_t off = (size_t)((const char *)s - (const char *)&p->stats);
    for (int i = 0; i < p->nscopes; i++) {
        gk_pool_stat *t = (gk_pool_stat *)((char *)&p->scopes[i].peaks + off);
        if (s->current > t->peak)
            t->peak = s->current;
    }
}

/* The free-block figures are kept up to date as blocks come and go (free_bytes, and the largest
 * size at each tree's root), so reading them costs the same whatever the pool's size. */
static void fill_derived(gk_pool *p, gk_pool_stats *out)
{
    size_t a = gk__tree_max(&p->free[GK_POOL_SMALL]), b = gk__tree_max(&p->free[GK_POOL_LARGE]);
    out->largest_free_block = a > b ? a : b;
    out->free_cached_bytes = p->free_bytes;
    out->frag_external = out->free_cached_bytes ? 1.0 - (double)out->largest_free_block /
                                                            (double)out->free_cached_bytes
                                                : 0.0;
    out->limit = p->limit;
    out->max_split_size = p->cfg.max_split_size;
}

int(gk_pool_get_stats)(gk_pool *p, gk_pool_stats *out, size_t size)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_get_stats: pool is NULL");
    gk_pool_stats st;
    pthread_mutex_lock(&p->lock);
    st = p->stats;
    fill_derived(p, &st);
    pthread_mutex_unlock(&p->lock);
    return gk__sized_put(out, size, &st, sizeof st, "gk_pool_stats");
}

/* A caller's stats struct widened to the library's: fields beyond its size count as 0. */
static int widen(const gk_pool_stats *s, gk_pool_stats *full, const char *fn)
{
    memset(full, 0, sizeof *full);
    if (!s)
        return gk__error(-EINVAL, "%s: stats is NULL", fn);
    return gk__sized_in(full, sizeof *full, s, "gk_pool_stats");
}

/* Applies fn to every gk_pool_stat of a stats struct (arrays and the oversize pair). */
static void each_stat(gk_pool_stats *s, void (*fn)(gk_pool_stat *st))
{
#define EACH(name, desc)                                                                           \
    for (int k = 0; k < GK_POOL_KINDS; k++)                                                        \
        fn(&s->name[k]);
    GK_POOL_STAT_MAP(EACH)
#undef EACH
    fn(&s->oversize_allocations);
    fn(&s->oversize_segments);
}

static void peak_to_current(gk_pool_stat *s)
{
    s->peak = s->current;
}

static void clear_accumulated(gk_pool_stat *s)
{
    s->allocated = s->freed = 0;
}

void gk_pool_reset_peak(gk_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    each_stat(&p->stats, peak_to_current);
    pthread_mutex_unlock(&p->lock);
}

void gk_pool_reset_accumulated(gk_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    each_stat(&p->stats, clear_accumulated);
    p->stats.num_alloc_retries = 0;
    p->stats.num_ooms = 0;
    pthread_mutex_unlock(&p->lock);
}

int gk_pool_scope_push(gk_pool *p)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_scope_push: p is NULL");
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    if (p->nscopes == GK__MAX_SCOPES) {
        rc = gk__error(-ENOSPC, "gk_pool_scope_push: more than %d scopes open (pop some first)",
                       GK__MAX_SCOPES);
    } else {
        gk__scope *s = &p->scopes[p->nscopes++];
        s->start = p->stats;
        s->peaks = p->stats;
        each_stat(&s->peaks, peak_to_current);
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static uint64_t since(uint64_t now, uint64_t start)
{
    return now >= start ? now - start : now;
}

static void scope_view(gk_pool_stat *out, const gk_pool_stat *start, const gk_pool_stat *peak)
{
    out->peak = peak->peak;
    out->allocated = since(out->allocated, start->allocated);
    out->freed = since(out->freed, start->freed);
}

int(gk_pool_scope_pop)(gk_pool *p, gk_pool_stats *user, size_t size)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_scope_pop: pool is NULL");
    if (user && size < sizeof(size_t))
        return gk__sized_check(user, size, "gk_pool_stats");
    gk_pool_stats view, *out = &view;
    pthread_mutex_lock(&p->lock);
    if (p->nscopes == 0) {
        pthread_mutex_unlock(&p->lock);
        return gk__error(-ENOENT, "gk_pool_scope_pop: no scope is open (call gk_pool_scope_push)");
    }
    gk__scope *s = &p->scopes[--p->nscopes];
    if (user) {
        *out = p->stats;
#define VIEW(name, desc)                                                                           \
    for (int k = 0; k < GK_POOL_KINDS; k++)                                                        \
        scope_view(&out->name[k], &s->start.name[k], &s->peaks.name[k]);
        GK_POOL_STAT_MAP(VIEW)
#undef VIEW
        scope_view(&out->oversize_allocations, &s->start.oversize_allocations,
                   &s->peaks.oversize_allocations);
        scope_view(&out->oversize_segments, &s->start.oversize_segments,
                   &s->peaks.oversize_segments);
#define DELTA(name, desc) out->name = since(out->name, s->start.name);
        GK_POOL_COUNTER_MAP(DELTA)
#undef DELTA
        fill_derived(p, out);
    }
    pthread_mutex_unlock(&p->lock);
    return user ? gk__sized_put(user, size, out, sizeof *out, "gk_pool_stats") : 0;
}

/* --- printing ------------------------------------------------------------------------------- */

/* PyTorch's _format_size: the unit steps up while the reference value is >= 768 of the unit. */
static void fmt_size(char *buf, size_t len, int64_t v, int64_t ref)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (u < 5 && ref >= 768 * 1024) {
        v /= 1024;
        ref /= 1024;
        u++;
    }
    snprintf(buf, len, "%6lld %-3s", (long long)v, units[u]);
}

static void fmt_count(char *buf, size_t len, int64_t v, int64_t ref)
{
    static const char *units[] = {"", "K", "M"};
    int u = 0;
    while (u < 2 && ref >= 750000) {
        v /= 1000;
        ref /= 1000;
        u++;
    }
    snprintf(buf, len, "%7lld %-2s", (long long)v, units[u]);
}

static void row(FILE *out, const char *name, const gk_pool_stat *s, bool bytes)
{
    char c[32], pk[32], a[32], f[32];
    void (*fmt)(char *, size_t, int64_t, int64_t) = bytes ? fmt_size : fmt_count;
    fmt(c, sizeof c, s->current, s->peak);
    fmt(pk, sizeof pk, s->peak, s->peak);
    fmt(a, sizeof a, (int64_t)s->allocated, (int64_t)s->allocated);
    fmt(f, sizeof f, (int64_t)s->freed, (int64_t)s->freed);
    fprintf(out, "| %-21s | %s | %s | %s | %s |\n", name, c, pk, a, f);
}

static void rows3(FILE *out, const char *name, const gk_pool_stat *arr, bool bytes)
{
    row(out, name, &arr[GK_POOL_ALL], bytes);
    row(out, "      from large pool", &arr[GK_POOL_LARGE], bytes);
    row(out, "      from small pool", &arr[GK_POOL_SMALL], bytes);
    fputs("|---------------------------------------------------------------------------|\n", out);
}

int gk_pool_stats_table(const gk_pool_stats *stats, FILE *out)
{
    gk_pool_stats full, *s = &full;
    int rc = widen(stats, &full, "gk_pool_stats_table");
    if (rc)
        return rc;
    if (!out)
        return gk__error(-EINVAL, "gk_pool_stats_table: out is NULL");
    const char *eq =
        "|===========================================================================|\n";
    const char *dash =
        "|---------------------------------------------------------------------------|\n";
    char l[64], r[64];
    fputs(eq, out);
    fprintf(out, "|%-75s|\n", "                     gpukit pool memory summary");
    fputs(dash, out);
    snprintf(l, sizeof l, "OOMs: %llu", (unsigned long long)s->num_ooms);
    snprintf(r, sizeof r, "device alloc retries: %llu", (unsigned long long)s->num_alloc_retries);
    fprintf(out, "| %-35s | %-35s |\n", l, r);
    fputs(eq, out);
    fprintf(out, "| %-21s | %-10s | %-10s | %-10s | %-10s |\n", "       Metric", "Cur Usage",
            "Peak Usage", "Tot Alloc", "Tot Freed");
    fputs(dash, out);
    rows3(out, "Allocated memory", s->allocated_bytes, true);
    rows3(out, "Active memory", s->active_bytes, true);
    rows3(out, "Requested memory", s->requested_bytes, true);
    rows3(out, "GPU reserved memory", s->reserved_bytes, true);
    rows3(out, "Non-releasable memory", s->inactive_split_bytes, true);
    rows3(out, "Allocations", s->allocation, false);
    rows3(out, "Active allocs", s->active, false);
    rows3(out, "GPU reserved segments", s->segment, false);
    rows3(out, "Non-releasable allocs", s->inactive_split, false);
    row(out, "Oversize allocations", &s->oversize_allocations, false);
    row(out, "Oversize GPU segments", &s->oversize_segments, false);
    fputs(eq, out);
    char lf[32], fb[32];
    fmt_size(lf, sizeof lf, (int64_t)s->largest_free_block, (int64_t)s->largest_free_block);
    fmt_size(fb, sizeof fb, (int64_t)s->free_cached_bytes, (int64_t)s->free_cached_bytes);
    fprintf(out, "| %-21s | %s | %-10s | %-10s | %-10s |\n", "Largest free block", lf, "", "", "");
    fprintf(out, "| %-21s | %s | %-10s | %-10s | %-10s |\n", "Free cached memory", fb, "", "", "");
    fprintf(out, "| %-21s | %9.1f%% | %-10s | %-10s | %-10s |\n", "External frag.",
            100.0 * s->frag_external, "", "", "");
    fputs(eq, out);
    return ferror(out) ? -EIO : 0;
}

int gk_pool_summary(gk_pool *p, FILE *out)
{
    gk_pool_stats s;
    int rc = gk_pool_get_stats(p, &s);
    return rc ? rc : gk_pool_stats_table(&s, out);
}

static void json_stat(FILE *out, const char *name, const char *pool, const gk_pool_stat *s,
                      bool *first)
{
    fprintf(out,
            "%s\"%s%s%s.current\":%lld,\"%s%s%s.peak\":%lld,\"%s%s%s.allocated\":%llu,"
            "\"%s%s%s.freed\":%llu",
            *first ? "" : ",", name, pool[0] ? "." : "", pool, (long long)s->current, name,
            pool[0] ? "." : "", pool, (long long)s->peak, name, pool[0] ? "." : "", pool,
            (unsigned long long)s->allocated, name, pool[0] ? "." : "", pool,
            (unsigned long long)s->freed);
    *first = false;
}

int gk_pool_stats_json(const gk_pool_stats *stats, FILE *out)
{
    gk_pool_stats full, *s = &full;
    int rc = widen(stats, &full, "gk_pool_stats_json");
    if (rc)
        return rc;
    if (!out)
        return gk__error(-EINVAL, "gk_pool_stats_json: out is NULL");
    static const char *pools[GK_POOL_KINDS] = {"all", "small_pool", "large_pool"};
    bool first = true;
    fputc('{', out);
#define JSTAT(name, desc)                                                                          \
    for (int k = 0; k < GK_POOL_KINDS; k++)                                                        \
        json_stat(out, #name, pools[k], &s->name[k], &first);
    GK_POOL_STAT_MAP(JSTAT)
#undef JSTAT
    json_stat(out, "oversize_allocations", "", &s->oversize_allocations, &first);
    json_stat(out, "oversize_segments", "", &s->oversize_segments, &first);
#define JCOUNT(name, desc) fprintf(out, ",\"%s\":%llu", #name, (unsigned long long)s->name);
    GK_POOL_COUNTER_MAP(JCOUNT)
#undef JCOUNT
    fprintf(out,
            ",\"max_split_size\":%llu,\"largest_free_block\":%llu,\"free_cached_bytes\":%llu,"
            "\"frag_external\":%.6f,\"limit\":%llu,\"expandable_segments\":%llu,"
            "\"expandable_fallback\":%llu}",
            (unsigned long long)s->max_split_size, (unsigned long long)s->largest_free_block,
            (unsigned long long)s->free_cached_bytes, s->frag_external,
            (unsigned long long)s->limit, (unsigned long long)s->expandable_segments,
            (unsigned long long)s->expandable_fallback);
    return ferror(out) ? -EIO : 0;
}
