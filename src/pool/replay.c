/* Trace replay through a pool (with latency percentiles) and the capacity search behind F_cap:
 * the smallest device, at 2 MiB resolution, on which a trace replays without an out-of-memory
 * failure, divided by the trace's peak of live requested bytes. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

#define FCAP_STEP   ((uint64_t)2 << 20)
#define SIM_MAX_CAP ((uint64_t)1 << 50) /* the sim's largest capacity (1 PiB) */
#define LIMIT_MAX   ((uint64_t)1 << 62) /* the largest pool limit */
#define FCAP_FACTOR 64                  /* the search gives up above 64 x L_peak */

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

/* The trace's streams: stream id -> gk_stream (created on first use, destroyed at the end). */
typedef struct streams {
    gk__tmap map;
    gk_stream **all;
    size_t n, cap;
} streams;

static int stream_for(gk_device *dev, streams *ss, uint64_t id, gk_stream **out)
{
    uint64_t v, unused;
    *out = NULL;
    if (id == 0)
        return 0;
    if (gk__tmap_take(&ss->map, id, &v, &unused) == 0) {
        gk__tmap_put(&ss->map, id, v, 0); /* the slot just freed: cannot fail */
        *out = (gk_stream *)(uintptr_t)v;
        return 0;
    }
    if (ss->n == ss->cap) {
        size_t n = ss->cap ? ss->cap * 2 : 16;
        gk_stream **a = gk__realloc(ss->all, n * sizeof *a);
        if (!a)
            return -ENOMEM;
        ss->all = a;
        ss->cap = n;
    }
    gk_stream *s;
    int rc = gk_stream_create(dev, &s);
    if (rc)
        return rc;
    if ((rc = gk__tmap_put(&ss->map, id, (uint64_t)(uintptr_t)s, 0)) < 0) {
        gk_stream_destroy(dev, s);
        return rc;
    }
    ss->all[ss->n++] = s;
    *out = s;
    return 0;
}

/* Frees every allocation still live (counted as leaks when `count`). */
static void free_live(gk_pool *pool, gk__tmap *live, gk_replay_result *out, bool count)
{
    for (size_t i = 0; i < live->cap; i++) {
        if (!live->used[i])
            continue;
        if (count) {
            out->leaks++;
            out->leak_bytes += live->sizes[i];
        }
        gk_pool_free(pool, (void *)(uintptr_t)live->vals[i]);
    }
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
    streams ss = {0};
    uint64_t *at = NULL, *ft = NULL;
    size_t nat = 0, nft = 0;
    if ((rc = gk__tmap_init(&ss.map, 16)) != 0)
        goto out_live;
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
            if (gk__tmap_take(&live, e->ptr, &v, &sz) == 0) {
                gk_pool_free(pool, (void *)(uintptr_t)v); /* reused without a free */
                live_bytes -= sz;
            }
            void *p = NULL;
            uint64_t t0 = timed ? gk__pool_now_ns() : 0;
            int arc = gk_pool_malloc(pool, (size_t)e->size, s, &p);
            if (timed)
                at[nat++] = gk__pool_now_ns() - t0;
            out->allocs++;
            if (arc != 0 && arc != GK_EDEVOOM) {
                rc = arc; /* host memory, or a device error that is not about memory */
                goto out_free;
            }
            if (arc != 0) {
                out->failed_allocs++;
                if (stop_on_oom)
                    break;
                continue;
            }
            if ((rc = gk__tmap_put(&live, e->ptr, (uint64_t)(uintptr_t)p, e->size)) < 0) {
                gk_pool_free(pool, p);
                goto out_free;
            }
            rc = 0;
            live_bytes += e->size;
            if (live_bytes > out->live_peak)
                out->live_peak = live_bytes;
        } else if (e->action == GK_TRACE_FREE) {
            if (gk__tmap_take(&live, e->ptr, &v, &sz) != 0) {
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
    free_live(pool, &live, out, true);
    if (timed) {
        qsort(at, nat, sizeof *at, cmp_u64);
        qsort(ft, nft, sizeof *ft, cmp_u64);
        out->alloc_ns_p50 = pct(at, nat, 0.50);
        out->alloc_ns_p99 = pct(at, nat, 0.99);
        out->free_ns_p50 = pct(ft, nft, 0.50);
        out->free_ns_p99 = pct(ft, nft, 0.99);
    }
out_free:
    if (rc != 0)
        free_live(pool, &live, out, false);
    for (size_t i = 0; i < ss.n; i++)
        gk_stream_destroy(pool->dev, ss.all[i]);
    free(ss.all);
    gk__tmap_fini(&ss.map);
    free(at);
    free(ft);
out_live:
    gk__tmap_fini(&live);
    if (rc == -ENOMEM)
        return gk__error(rc, "gk_trace_replay: out of host memory");
    if (rc)
        return rc;
    return gk__sized_put(user, size, out, sizeof *out, "gk_replay_result");
}

/* The spec without a capacity key (each probe sets its own): "sim:capacity=8GiB,latency_us=3"
 * becomes "sim:latency_us=3". Returns -EINVAL when it does not fit. */
static int spec_without_capacity(const char *spec, char *buf, size_t len)
{
    const char *colon = strchr(spec, ':');
    size_t n = 0;
    if (!colon) {
        n = (size_t)snprintf(buf, len, "%s", spec);
        return n < len ? 0 : -EINVAL;
    }
    n = (size_t)(colon - spec);
    if (n + 1 >= len)
        return -EINVAL;
    memcpy(buf, spec, n);
    buf[n++] = ':';
    bool first = true;
    for (const char *it = colon + 1; *it;) {
        const char *end = strchr(it, ',');
        size_t ilen = end ? (size_t)(end - it) : strlen(it);
        if (!(ilen >= 9 && strncmp(it, "capacity", 8) == 0 && (it[8] == '=' || it[8] == ':')) &&
            ilen) {
            if (n + ilen + 2 >= len)
                return -EINVAL;
            if (!first)
                buf[n++] = ',';
            memcpy(buf + n, it, ilen);
            n += ilen;
            first = false;
        }
        it += ilen + (end ? 1 : 0);
    }
    if (first)
        n--; /* "sim:" with nothing left: "sim" */
    buf[n] = '\0';
    return 0;
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
    gk_pool_config full;
    gk_pool_config_default(&full);
    if (cfg && (rc = gk__sized_in(&full, sizeof full, cfg, "gk_pool_config")) != 0)
        return rc;
    cfg = &full;
    bool sim = strncmp(spec, "sim", 3) == 0 && (spec[3] == '\0' || spec[3] == ':');
    char base[256];
    if (sim && spec_without_capacity(spec, base, sizeof base) != 0)
        return gk__error(-EINVAL, "gk_trace_fcap: device spec \"%s\" is too long", spec);
    if (sim)
        spec = base;
    out->l_peak = gk_trace_live_peak(t);
    if (out->l_peak == 0)
        return gk__error(-ENODATA, "gk_trace_fcap: the trace has no allocations");
    /* Capacities in 2 MiB units: first > L_peak - 1, the largest tried 64 x L_peak, bounded by
     * what the device (sim: 1 PiB) or the pool limit (2^62) can be. */
    uint64_t max_cap = sim ? SIM_MAX_CAP : LIMIT_MAX;
    if (out->l_peak <= max_cap / FCAP_FACTOR)
        max_cap = out->l_peak * FCAP_FACTOR;
    uint64_t max_units = max_cap / FCAP_STEP;
    uint64_t lo0 = (out->l_peak - 1) / FCAP_STEP, lo = lo0, hi = lo + 1;
    if (hi > max_units)
        return gk__error(-ERANGE,
                         "gk_trace_fcap: L_peak of %llu bytes is beyond the largest "
                         "capacity the search can try",
                         (unsigned long long)out->l_peak);
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
        if (hi == max_units)
            return gk__error(-ERANGE,
                             "gk_trace_fcap: even %llu bytes (64 x L_peak, or the "
                             "largest capacity the device can have) does not run the "
                             "trace",
                             (unsigned long long)(max_units * FCAP_STEP));
        uint64_t step = (hi - lo0) * 2;
        hi = step > max_units - hi ? max_units : hi + step;
    }
    /* Settings that scale with the capacity (gc_threshold, fraction) can make a smaller device
     * replay where a larger one fails, so bisection could miss the minimum: scan upward instead
     * (one replay per 2 MiB step up to the capacity found). */
    bool scan = cfg->gc_threshold > 0 || cfg->limit_fraction > 0;
    if (scan) {
        for (uint64_t c = lo0 + 1; c < hi; c++) {
            out->probes++;
            rc = probe(t, spec, sim, cfg, c * FCAP_STEP, &res, &st);
            if (rc < 0)
                return rc;
            if (rc == 1) {
                hi = c;
                break;
            }
        }
        lo = hi - 1;
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
