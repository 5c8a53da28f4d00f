/* Trace replay through a pool (with latency percentiles) and the capacity search behind F_cap:
 * the smallest device, at 2 MiB resolution, on which a trace replays without an out-of-memory
 * failure, divided by the trace's peak of live requested bytes. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

#define MAX_STREAMS 64
#define FCAP_STEP   ((uint64_t)2 << 20)

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t pct(uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

typedef struct streams {
    uint64_t ids[MAX_STREAMS];
    gk_stream *s[MAX_STREAMS];
    int n;
} streams;

static int stream_for(gk_device *dev, streams *ss, uint64_t id, gk_stream **out)
{
    *out = NULL;
    if (id == 0)
        return 0;
    for (int i = 0; i < ss->n; i++) {
        if (ss->ids[i] == id) {
            *out = ss->s[i];
            return 0;
        }
    }
    if (ss->n == MAX_STREAMS)
        return -ENOSPC;
    int rc = gk_stream_create(dev, &ss->s[ss->n]);
    if (rc)
        return rc;
    ss->ids[ss->n] = id;
    *out = ss->s[ss->n++];
    return 0;
}

int(gk_trace_replay)(const gk_trace *t, gk_pool *pool, int stop_on_oom, int timed,
                     gk_replay_result *user, size_t size)
{
    if (!t || !pool)
        return gk__error(-EINVAL, "gk_trace_replay: trace or pool is NULL");
    int rc = gk__sized_check(user, size, "gk_replay_result");
    if (rc)
        return rc;
    gk_replay_result result, *out = &result;
    memset(out, 0, sizeof *out);
    gk__tmap live;
    rc = gk__tmap_init(&live, 1024);
    if (rc)
        return rc;
    uint64_t *at = NULL, *ft = NULL;
    size_t nat = 0, nft = 0;
    streams ss = {.n = 0}; /* before the first goto: out_free destroys ss.n streams */
    if (timed) {
        at = gk__malloc((t->count + 1) * sizeof *at);
        ft = gk__malloc((t->count + 1) * sizeof *ft);
        if (!at || !ft) {
            rc = -ENOMEM;
            goto out_free;
        }
    }
    uint64_t live_bytes = 0, v, sz;
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        if (e->action == GK_TRACE_ALLOCATE) {
            gk_stream *s;
            if ((rc = stream_for(pool->dev, &ss, e->stream, &s)) != 0)
                goto out_free;
            if (gk__tmap_take(&live, e->ptr + 2, &v, &sz) == 0) {
                gk_pool_free(pool, (void *)(uintptr_t)v); /* reused without a free */
                live_bytes -= sz;
            }
            void *p = NULL;
            uint64_t t0 = timed ? gk__pool_now_ns() : 0;
            int arc = gk_pool_malloc(pool, (size_t)e->size, s, &p);
            if (timed)
                at[nat++] = gk__pool_now_ns() - t0;
            out->allocs++;
            if (arc == -ENOMEM) {
                rc = arc;
                goto out_free;
            }
            if (arc != 0) {
                out->failed_allocs++;
                if (stop_on_oom)
                    break;
                continue;
            }
            if ((rc = gk__tmap_put(&live, e->ptr + 2, (uint64_t)(uintptr_t)p, e->size)) < 0) {
                gk_pool_free(pool, p);
                goto out_free;
            }
            rc = 0;
            live_bytes += e->size;
            if (live_bytes > out->live_peak)
                out->live_peak = live_bytes;
        } else if (e->action == GK_TRACE_FREE) {
            if (gk__tmap_take(&live, e->ptr + 2, &v, &sz) != 0) {
                out->unknown_frees++;
                continue;
            }
            uint64_t t0 = timed ? gk__pool_now_ns() : 0;
            gk_pool_free(pool, (void *)(uintptr_t)v);
            if (timed)
                ft[nft++] = gk__pool_now_ns() - t0;
            out->frees++;
            live_bytes -= sz;
        }
    }
    for (size_t i = 0; i < live.cap; i++) {
        if (live.keys[i] > 1) {
            out->leaks++;
            out->leak_bytes += live.sizes[i];
            gk_pool_free(pool, (void *)(uintptr_t)live.vals[i]);
        }
    }
    if (timed) {
        qsort(at, nat, sizeof *at, cmp_u64);
        qsort(ft, nft, sizeof *ft, cmp_u64);
        out->alloc_ns_p50 = pct(at, nat, 0.50);
        out->alloc_ns_p99 = pct(at, nat, 0.99);
        out->free_ns_p50 = pct(ft, nft, 0.50);
        out->free_ns_p99 = pct(ft, nft, 0.99);
    }
out_free:
    if (rc != 0) {
        for (size_t i = 0; i < live.cap; i++)
            if (live.keys[i] > 1)
                gk_pool_free(pool, (void *)(uintptr_t)live.vals[i]);
    }
    for (int i = 0; i < ss.n; i++)
        gk_stream_destroy(pool->dev, ss.s[i]);
    free(at);
    free(ft);
    gk__tmap_fini(&live);
    if (rc == -ENOMEM)
        return gk__error(rc, "gk_trace_replay: out of host memory");
    if (rc)
        return rc;
    return gk__sized_put(user, size, out, sizeof *out, "gk_replay_result");
}

/* One probe: 1 when the trace replays on capacity `cap`, 0 when it runs out, < 0 on error. */
static int probe(const gk_trace *t, const char *spec, bool sim, const gk_pool_config *cfg,
                 uint64_t cap, gk_replay_result *res, gk_pool_stats *st)
{
    char full[512];
    gk_pool_config c = *cfg;
    if (sim) {
        snprintf(full, sizeof full, "%s%scapacity=%llu", spec, strchr(spec, ':') ? "," : ":",
                 (unsigned long long)cap);
    } else {
        snprintf(full, sizeof full, "%s", spec);
        c.limit_bytes = (size_t)cap;
        c.limit_fraction = 0;
    }
    gk_device *dev;
    gk_device_config dc;
    gk_device_config_default(&dc);
    int rc = gk_device_open_ex(full, &dc, &dev);
    if (rc)
        return rc;
    gk_pool *pool;
    rc = gk_pool_create(dev, &c, &pool);
    if (rc) {
        gk_device_close(dev);
        return rc;
    }
    rc = gk_trace_replay(t, pool, 1, 0, res);
    if (rc == 0)
        rc = gk_pool_get_stats(pool, st);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    if (rc)
        return rc;
    return res->failed_allocs == 0;
}

int(gk_trace_fcap)(const gk_trace *t, const char *spec, const gk_pool_config *cfg,
                   gk_fcap_result *user, size_t size)
{
    if (!t)
        return gk__error(-EINVAL, "gk_trace_fcap: trace is NULL");
    int rc = gk__sized_check(user, size, "gk_fcap_result");
    if (rc)
        return rc;
    gk_fcap_result result, *out = &result;
    memset(out, 0, sizeof *out);
    if (!spec || !*spec)
        spec = "sim";
    gk_pool_config def;
    if (!cfg) {
        gk_pool_config_default(&def);
        cfg = &def;
    }
    bool sim = strncmp(spec, "sim", 3) == 0 && (spec[3] == '\0' || spec[3] == ':');
    out->l_peak = gk_trace_live_peak(t);
    if (out->l_peak == 0)
        return gk__error(-EINVAL, "gk_trace_fcap: the trace has no live allocations");
    /* Capacities are counted in 2 MiB units; lo fails (below L_peak), hi replays. */
    uint64_t lo = (out->l_peak - 1) / FCAP_STEP, hi = lo + 1;
    gk_replay_result res;
    gk_pool_stats st;
    for (;;) {
        out->probes++;
        rc = probe(t, spec, sim, cfg, hi * FCAP_STEP, &res, &st);
        if (rc < 0)
            return rc;
        if (rc == 1)
            break;
        lo = hi;
        hi = hi + (hi - (out->l_peak - 1) / FCAP_STEP) * 2;
        if (hi * FCAP_STEP > out->l_peak * 64)
            return gk__error(-ERANGE, "gk_trace_fcap: even 64 x L_peak does not run the trace");
    }
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        out->probes++;
        rc = probe(t, spec, sim, cfg, mid * FCAP_STEP, &res, &st);
        if (rc < 0)
            return rc;
        if (rc == 1)
            hi = mid;
        else
            lo = mid;
    }
    out->probes++;
    rc = probe(t, spec, sim, cfg, hi * FCAP_STEP, &res, &st);
    if (rc < 0)
        return rc;
    out->c_min = hi * FCAP_STEP;
    out->f_cap = (double)out->c_min / (double)out->l_peak;
    out->peak_reserved = (uint64_t)st.reserved_bytes[GK_POOL_ALL].peak;
    out->peak_allocated = (uint64_t)st.allocated_bytes[GK_POOL_ALL].peak;
    return gk__sized_put(user, size, out, sizeof *out, "gk_fcap_result");
}
