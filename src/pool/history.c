/* Diagnostics over the pool's state: the history ring (PyTorch's action names), the snapshot as
 * JSON with PyTorch's field names, the list of live blocks with their tags (leak hunting), and the
 * RMM-CSV trace log, whose lines are kept under the lock and written after it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/options.h"
#include "gpukit/output.h"
#include "pool/pool_int.h"

static const char *const action_names[] = {
    "alloc",        "free_requested", "free_completed", "segment_alloc",
    "segment_free", "segment_map",    "segment_unmap",  "oom"};

void gk__hist_push(gk_pool *p, gk__action a, uintptr_t addr, size_t size, uintptr_t stream)
{
    if (!p->hist_cap)
        return;
    gk__hist_entry *e = &p->hist[(p->hist_head + p->hist_len) % p->hist_cap];
    if (p->hist_len == p->hist_cap)
        p->hist_head = (p->hist_head + 1) % p->hist_cap;
    else
        p->hist_len++;
    e->action = a;
    e->addr = addr;
    e->size = size;
    e->stream = stream;
    e->time_us = (gk__pool_now_ns() - p->t0_ns) / 1000;
}

int gk_pool_record_history(gk_pool *p, size_t entries)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_record_history: p is NULL");
    if (entries > ((size_t)1 << 20))
        return gk__error(-EINVAL,
                         "gk_pool_record_history: %zu entries is above 1048576 (the range of "
                         "the history setting)",
                         entries);
    gk__hist_entry *h = NULL;
    if (entries && !(h = gk__calloc(entries, sizeof *h)))
        return gk__error(-ENOMEM, "gk_pool_record_history: out of host memory for %zu entries",
                         entries);
    pthread_mutex_lock(&p->lock);
    free(p->hist);
    p->hist = h;
    p->hist_cap = entries;
    p->hist_len = p->hist_head = 0;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* --- the CSV trace log ------------------------------------------------------------------------ */

long gk__thread_id(void)
{
    static _Thread_local long tid;
    if (!tid)
        tid = (long)gettid();
    return tid;
}

void gk__trace_add(gk_pool *p, long tid, int action, uintptr_t addr, size_t size, uintptr_t stream)
{
    if (p->tlen == p->tcap) {
        size_t n = p->tcap ? p->tcap * 2 : 64;
        gk__trace_rec *a = gk__realloc(p->tbuf, n * sizeof *a);
        if (!a)
            return; /* the line is lost; the pool goes on */
        p->tbuf = a;
        p->tcap = n;
    }
    p->tbuf[p->tlen++] =
        (gk__trace_rec){tid ? tid : gk__thread_id(), gk__pool_now_ns(), action, addr, size, stream};
}

/* Writes the lines kept so far, in the order the pool made them: the trace lock orders writers,
 * and each takes every line kept before it. */
void gk__trace_flush(gk_pool *p)
{
    static const char *const names[] = {"allocate", "free", "allocate failure"};
    pthread_mutex_lock(&p->trace_lock);
    pthread_mutex_lock(&p->lock);
    gk__trace_rec *recs = p->tbuf;
    size_t n = p->tlen;
    FILE *out = p->trace;
    p->tbuf = NULL;
    p->tlen = p->tcap = 0;
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; out && i < n; i++) {
        const gk__trace_rec *r = &recs[i];
        double t = (double)(r->t_ns - p->t0_ns) / 1e9;
        fprintf(out, "%ld,%.9f,%s,0x%lx,%zu,0x%lx\n", r->tid, t, names[r->action],
                (unsigned long)r->addr, r->size, (unsigned long)r->stream);
    }
    pthread_mutex_unlock(&p->trace_lock);
    free(recs);
}

int gk_pool_set_trace_log(gk_pool *p, FILE *out)
{
    if (!p)
        return gk__error(-EINVAL, "gk_pool_set_trace_log: p is NULL");
    gk__trace_flush(p); /* lines kept for the previous file go there */
    pthread_mutex_lock(&p->trace_lock);
    pthread_mutex_lock(&p->lock);
    p->trace = out;
    atomic_store_explicit(&p->trace_on, out != NULL, memory_order_relaxed);
    pthread_mutex_unlock(&p->lock);
    int rc = 0;
    if (out && fputs("Thread,Time,Action,Pointer,Size,Stream\n", out) == EOF)
        rc = -EIO;
    pthread_mutex_unlock(&p->trace_lock);
    return rc;
}

/* --- snapshot and live blocks ----------------------------------------------------------------- */

static const char *block_state(const gk__block *b)
{
    if (b->state == GK__LIVE)
        return b->event_count > 0 ? "active_awaiting_free" : "active_allocated";
    return "inactive";
}

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* Blocks a snapshot shows: those with memory behind them (unmapped address space is left out, as
 * PyTorch leaves it out). */
static bool shown(const gk__block *b)
{
    return b->state != GK__UNMAPPED && b->state != GK__MAPPING && b->state != GK__UNMAPPING;
}

int gk_pool_snapshot_json(gk_pool *p, FILE *out)
{
    if (!p || !out)
        return gk__error(-EINVAL, "gk_pool_snapshot_json: p or out is NULL");
    pthread_mutex_lock(&p->lock);
    fputs("{\"segments\":[", out);
    bool first_seg = true;
    for (gk__segment *s = p->seg_head; s; s = s->next) {
        size_t allocated = 0, active = 0, requested = 0;
        for (gk__block *b = s->head; b; b = b->next) {
            if (b->state == GK__LIVE) {
                active += b->size;
                requested += b->requested;
                if (b->event_count == 0)
                    allocated += b->size;
            }
        }
        size_t total = s->expandable ? s->mapped : s->size;
        fprintf(out,
                "%s{\"address\":%llu,\"total_size\":%zu,\"stream\":%llu,\"segment_type\":\"%s\","
                "\"allocated_size\":%zu,\"active_size\":%zu,\"requested_size\":%zu,"
                "\"expandable\":%s,\"blocks\":[",
                first_seg ? "" : ",", (unsigned long long)s->base, total,
                (unsigned long long)s->stream, s->kind == GK_POOL_SMALL ? "small" : "large",
                allocated, active, requested, s->expandable ? "true" : "false");
        first_seg = false;
        bool first = true;
        for (gk__block *b = s->head; b; b = b->next) {
            if (!shown(b))
                continue;
            fprintf(out, "%s{\"address\":%llu,\"size\":%zu,\"requested_size\":%zu,\"state\":\"%s\"",
                    first ? "" : ",", (unsigned long long)b->addr, b->size, b->requested,
                    block_state(b));
            first = false;
            if (b->tag[0]) {
                fputs(",\"tag\":", out);
                json_str(out, b->tag);
            }
            fputc('}', out);
        }
        fputs("]}", out);
    }
    fputs("],\"device_traces\":[[", out);
    for (size_t i = 0; i < p->hist_len; i++) {
        const gk__hist_entry *e = &p->hist[(p->hist_head + i) % p->hist_cap];
        fprintf(out,
                "%s{\"action\":\"%s\",\"addr\":%llu,\"size\":%zu,\"stream\":%llu,"
                "\"time_us\":%llu}",
                i ? "," : "", action_names[e->action], (unsigned long long)e->addr, e->size,
                (unsigned long long)e->stream, (unsigned long long)e->time_us);
    }
    fputs("]]}\n", out);
    pthread_mutex_unlock(&p->lock);
    return ferror(out) ? -EIO : 0;
}

static int by_size_desc(const void *a, const void *b)
{
    const gk__block *x = *(const gk__block *const *)a, *y = *(const gk__block *const *)b;
    return x->size < y->size   ? 1
           : x->size > y->size ? -1
                               : (x->addr > y->addr) - (x->addr < y->addr);
}

long gk__pool_live_blocks(gk_pool *p, gk__block ***out)
{
    size_t n = p->map.count, i = 0;
    gk__block **v = gk__malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t k = 0; k < p->map.cap && i < n; k++)
        if (p->map.slots[k].key)
            v[i++] = p->map.slots[k].val;
    qsort(v, i, sizeof *v, by_size_desc);
    *out = v;
    return (long)i;
}

long gk_pool_report_live(gk_pool *p, FILE *out)
{
    if (!p || !out)
        return gk__error(-EINVAL, "gk_pool_report_live: p or out is NULL");
    pthread_mutex_lock(&p->lock);
    gk__block **v = NULL;
    long n = gk__pool_live_blocks(p, &v);
    for (long i = 0; i < n; i++) {
        char sz[32], tag[4 * sizeof v[i]->tag + 1];
        gk_text_escape(tag, sizeof tag, v[i]->tag); /* a tag is the caller's: no raw controls */
        fprintf(out, "%#llx %zu bytes (%s, requested %zu) stream %#llx%s%s\n",
                (unsigned long long)v[i]->addr, v[i]->size,
                gk_format_size(v[i]->size, sz, sizeof sz), v[i]->requested,
                (unsigned long long)v[i]->stream, v[i]->tag[0] ? " tag " : "", tag);
    }
    free(v);
    pthread_mutex_unlock(&p->lock);
    if (n < 0)
        return n;
    return ferror(out) ? -EIO : n;
}
