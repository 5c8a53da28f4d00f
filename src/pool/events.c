/* Stream events of blocks freed while other streams still use them (gk_pool_record_stream).
 * Events recorded on one stream complete in the order they were recorded, so each stream keeps a
 * FIFO and polling stops at its first event that is not done: an allocation costs one query per
 * stream with pending events, never one per event. Events of a destroyed stream that were not done
 * yet move to a list polled one by one (their stream's address may be reused by a new stream). */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "pool/pool_int.h"

static void event_return(gk_pool *p, gk_event *ev)
{
    gk__events *e = &p->ev;
    if (e->nidle == e->capidle) {
        size_t n = e->capidle ? e->capidle * 2 : 16;
        gk_event **a = gk__realloc(e->idle, n * sizeof *a);
        if (!a) {
            gk_event_destroy(p->dev, ev);
            return;
        }
        e->idle = a;
        e->capidle = n;
    }
    e->idle[e->nidle++] = ev;
}

static void done(gk_pool *p, gk__pending pe)
{
    event_return(p, pe.event);
    p->ev.npending--;
    if (--pe.block->event_count == 0)
        gk__free_completed(p, pe.block);
}

static gk__equeue *queue_for(gk_pool *p, gk_stream *stream, bool create)
{
    gk__events *e = &p->ev;
    for (size_t i = 0; i < e->nq; i++)
        if (e->q[i].stream == stream)
            return &e->q[i];
    if (!create)
        return NULL;
    if (e->nq == e->capq) {
        size_t n = e->capq ? e->capq * 2 : 4;
        gk__equeue *a = gk__realloc(e->q, n * sizeof *a);
        if (!a)
            return NULL;
        e->q = a;
        e->capq = n;
    }
    gk__equeue *q = &e->q[e->nq++];
    memset(q, 0, sizeof *q);
    q->stream = stream;
    return q;
}

static int queue_push(gk__equeue *q, gk__pending pe)
{
    if (q->len == q->cap) {
        size_t n = q->cap ? q->cap * 2 : 8;
        gk__pending *r = gk__malloc(n * sizeof *r);
        if (!r)
            return -ENOMEM;
        for (size_t i = 0; i < q->len; i++)
            r[i] = q->ring[(q->head + i) & (q->cap - 1)];
        free(q->ring);
        q->ring = r;
        q->cap = n;
        q->head = 0;
    }
    q->ring[(q->head + q->len) & (q->cap - 1)] = pe;
    q->len++;
    return 0;
}

static gk__pending queue_pop(gk__equeue *q)
{
    gk__pending pe = q->ring[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return pe;
}

static int orphan_push(gk_pool *p, gk__pending pe)
{
    gk__events *e = &p->ev;
    if (e->norphans == e->caporphans) {
        size_t n = e->caporphans ? e->caporphans * 2 : 8;
        gk__pending *a = gk__realloc(e->orphans, n * sizeof *a);
        if (!a)
            return -ENOMEM;
        e->orphans = a;
        e->caporphans = n;
    }
    e->orphans[e->norphans++] = pe;
    return 0;
}

/* Records an event on `stream` for block b. On any failure it waits for the stream instead (the
 * block is then free of that stream at once). */
int gk__events_defer(gk_pool *p, gk__block *b, gk_stream *stream)
{
    gk__events *e = &p->ev;
    gk_event *ev = NULL;
    gk__equeue *q = queue_for(p, stream, true);
    if (!q)
        goto out_sync;
    if (e->nidle)
        ev = e->idle[--e->nidle];
    else if (gk_event_create(p->dev, &ev) != 0)
        goto out_sync;
    if (gk_event_record(p->dev, ev, stream) != 0) {
        event_return(p, ev);
        goto out_sync;
    }
    if (queue_push(q, (gk__pending){ev, b}) != 0) {
        event_return(p, ev);
        goto out_sync;
    }
    e->npending++;
    b->event_count++;
    return 0;
out_sync:
    return gk_stream_synchronize(p->dev, stream, -1);
}

void gk__events_process(gk_pool *p)
{
    gk__events *e = &p->ev;
    if (!e->npending)
        return;
    for (size_t i = 0; i < e->nq; i++) {
        gk__equeue *q = &e->q[i];
        while (q->len && gk_event_query(p->dev, q->ring[q->head].event) == 0)
            done(p, queue_pop(q));
    }
    for (size_t i = 0; i < e->norphans;) {
        if (gk_event_query(p->dev, e->orphans[i].event) == 0) {
            gk__pending pe = e->orphans[i];
            e->orphans[i] = e->orphans[--e->norphans];
            done(p, pe);
        } else {
            i++;
        }
    }
}

/* Waits for every pending event, without the lock (the events are taken out of the queues
 * first, so nobody else polls them meanwhile). An event that cannot be waited for goes back as
 * an orphan and stays pending. */
void gk__events_sync_all(gk_pool *p)
{
    gk__events *e = &p->ev;
    p->stats.num_sync_all_streams++;
    if (!e->npending)
        return;
    size_t n = e->npending, k = 0;
    gk__pending *all = gk__malloc(n * sizeof *all);
    if (!all) {
        /* No room to take them out: wait for them in place, under the lock. */
        for (size_t i = 0; i < e->nq; i++) {
            gk__equeue *q = &e->q[i];
            while (q->len && gk_event_synchronize(p->dev, q->ring[q->head].event, -1) == 0)
                done(p, queue_pop(q));
        }
        return;
    }
    for (size_t i = 0; i < e->nq; i++)
        while (e->q[i].len)
            all[k++] = queue_pop(&e->q[i]);
    for (size_t i = 0; i < e->norphans; i++)
        all[k++] = e->orphans[i];
    e->norphans = 0;
    int *ok = gk__malloc(k * sizeof *ok + 1);
    gk__unlock_for_device(p);
    for (size_t i = 0; i < k; i++)
        if (ok)
            ok[i] = gk_event_synchronize(p->dev, all[i].event, -1) == 0;
    gk__relock_after_device(p);
    for (size_t i = 0; i < k; i++) {
        if (ok && ok[i]) {
            done(p, all[i]);
        } else if (orphan_push(p, all[i]) != 0) {
            done(p, all[i]); /* no room to keep it pending: it was waited for as well as we could */
        }
    }
    free(ok);
    free(all);
}

/* The stream is being destroyed (its work has been waited for): its done events complete, the
 * others become orphans, and its queue goes so that a new stream at the same address starts a
 * fresh one. */
void gk__events_stream_gone(gk_pool *p, gk_stream *stream)
{
    gk__events *e = &p->ev;
    gk__equeue *q = queue_for(p, stream, false);
    if (!q)
        return;
    while (q->len) {
        gk__pending pe = queue_pop(q);
        if (gk_event_query(p->dev, pe.event) == 0 || orphan_push(p, pe) != 0)
            done(p, pe);
    }
    free(q->ring);
    *q = e->q[--e->nq];
}

void gk__events_fini(gk_pool *p)
{
    gk__events *e = &p->ev;
    for (size_t i = 0; i < e->nq; i++) {
        gk__equeue *q = &e->q[i];
        while (q->len)
            gk_event_destroy(p->dev, queue_pop(q).event);
        free(q->ring);
    }
    for (size_t i = 0; i < e->norphans; i++)
        gk_event_destroy(p->dev, e->orphans[i].event);
    for (size_t i = 0; i < e->nidle; i++)
        gk_event_destroy(p->dev, e->idle[i]);
    free(e->q);
    free(e->orphans);
    free(e->idle);
    memset(e, 0, sizeof *e);
}
