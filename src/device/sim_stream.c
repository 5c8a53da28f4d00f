/* The sim's streams and events: each stream is a FIFO of ops (copy, host function, event record,
 * wait) that runs only when the host forces it: a stream or device synchronize, an event
 * synchronize, an event query reaching its K-th poll, or a wait being reached in another stream.
 * Ops of one stream never overlap and run in order; the sim's lock is dropped while a host
 * function or a backed copy runs, so host functions may take their own locks. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "device/sim_int.h"

enum op_kind { OP_COPY, OP_HOST_FN, OP_RECORD, OP_WAIT };

typedef struct gk__sim_stream sim_stream;

typedef struct sim_op {
    int kind;
    union {
        struct {
            void *dst;
            const void *src;
            size_t size;
        } copy;
        struct {
            void (*fn)(void *);
            void *user;
        } host;
        struct {
            sim_stream *stream; /* holds a reference */
            uint64_t seq;       /* the waited stream's position when the wait was queued */
        } wait;
    } u;
} sim_op;

/* Positions count ops since creation: ops [popped, enq) are queued, [done, popped) running. */
struct gk__sim_stream {
    sim_op *ring; /* capacity mask + 1, a power of two; NULL until first use */
    size_t mask;
    uint64_t enq, popped, done;
    int refs; /* the handle, events recorded on it, queued waits, running forces */
    int busy; /* an op of this stream is running (or a wait of it is being resolved) */
    pthread_t owner;
    sim_stream *next, *prev; /* s->streams while not destroyed */
};

typedef struct sim_event {
    sim_stream *stream; /* NULL: never recorded; else holds a reference */
    uint64_t seq;       /* complete when stream->done >= seq */
    uint64_t polls;     /* queries since the record */
} sim_event;

static sim_stream *stream_new(void)
{
    sim_stream *st = gk__calloc(1, sizeof *st);
    if (st)
        st->refs = 1;
    return st;
}

static void stream_link(gk__sim *s, sim_stream *st)
{
    st->prev = NULL;
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
}

static void stream_unlink(gk__sim *s, sim_stream *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->next = st->prev = NULL;
}

/* Drops a reference; the last one frees the stream and the references its queued waits hold. */
static void stream_unref(sim_stream *st)
{
    if (--st->refs > 0)
        return;
    for (uint64_t i = st->popped; i < st->enq; i++) {
        sim_op *op = &st->ring[i & st->mask];
        if (op->kind == OP_WAIT)
            stream_unref(op->u.wait.stream);
    }
    free(st->ring);
    free(st);
}

int gk__sim_streams_init(gk__sim *s)
{
    s->default_stream = stream_new();
    if (!s->default_stream)
        return -ENOMEM;
    stream_link(s, s->default_stream);
    return 0;
}

void gk__sim_streams_fini(gk__sim *s)
{
    /* device.c destroyed every stream and synchronized; only the default stream is left. */
    while (s->streams) {
        sim_stream *st = s->streams;
        stream_unlink(s, st);
        stream_unref(st);
    }
    s->default_stream = NULL;
}

/* --- streams ------------------------------------------------------------------------------ */

static sim_stream *stream_of(gk__sim *s, void *impl)
{
    return impl ? impl : s->default_stream;
}

static int push(gk_device *dev, sim_stream *st, const sim_op *op)
{
    size_t cap = st->ring ? st->mask + 1 : 0;
    if (st->enq - st->popped == cap) {
        size_t ncap = cap ? cap * 2 : 16;
        sim_op *ring = gk__malloc(ncap * sizeof *ring);
        if (!ring)
            return gk__device_error(dev, -ENOMEM, "sim: out of host memory queueing work");
        for (uint64_t i = st->popped; i < st->enq; i++)
            ring[i & (ncap - 1)] = st->ring[i & st->mask];
        free(st->ring);
        st->ring = ring;
        st->mask = ncap - 1;
    }
    st->ring[st->enq & st->mask] = *op;
    st->enq++;
    return 0;
}

static uint64_t deadline_after(double seconds)
{
    if (seconds > 1e9)
        seconds = 1e9;
    return gk__now_ns() + (uint64_t)(seconds * 1e9);
}

/* NO_WAIT as a deadline: a query must not block, so work another thread is running makes the
 * event not ready yet instead. */
#define NO_WAIT 0

/* Waits, with the lock held, until another thread finishes an op (or the deadline passes). */
static int wait_other(gk_device *dev, gk__sim *s, sim_stream *st, uint64_t deadline)
{
    if (deadline == NO_WAIT)
        return GK_ENOTREADY;
    struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
    s->waiters++;
    int e = pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    s->waiters--;
    if (e == ETIMEDOUT && st->busy)
        return gk__device_error(dev, -ETIMEDOUT,
                                "sim: timed out waiting for another thread that is running work "
                                "of stream %p (a slow host function?)",
                                (void *)st);
    return 0;
}

static void wake(gk__sim *s)
{
    if (s->waiters)
        pthread_cond_broadcast(&s->cv);
}

static void run_op(const gk__sim *s, const sim_op *op)
{
    if (op->kind == OP_HOST_FN)
        op->u.host.fn(op->u.host.user);
    else if (op->kind == OP_COPY && s->map)
        memmove(op->u.copy.dst, op->u.copy.src, op->u.copy.size);
}

/* Runs the ops of `st` in order until st->done >= upto. Called and returns with the lock held;
 * drops it while a host function or a backed copy runs. A wait first runs the waited stream up
 * to the captured position. Other threads may run ops of the same stream in between; ops of one
 * stream never overlap. */
static int force(gk_device *dev, gk__sim *s, sim_stream *st, uint64_t upto, uint64_t deadline)
{
    int rc = 0;
    pthread_t self = pthread_self();
    st->refs++;
    while (st->done < upto) {
        if (st->busy) {
            if (pthread_equal(st->owner, self)) {
                rc = gk__device_error(dev, -EPERM,
                                      "sim: a host function queued on stream %p called a device "
                                      "function that waits for that stream",
                                      (void *)st);
                break;
            }
            rc = wait_other(dev, s, st, deadline);
            if (rc)
                break;
            continue;
        }
        sim_op op = st->ring[st->popped & st->mask];
        st->busy = 1;
        st->owner = self;
        if (op.kind == OP_WAIT && op.u.wait.stream->done < op.u.wait.seq) {
            /* The op stays queued (and keeps its reference) while the other stream runs. */
            rc = force(dev, s, op.u.wait.stream, op.u.wait.seq, deadline);
            st->busy = 0;
            wake(s);
            if (rc)
                break;
            continue;
        }
        st->popped++;
        if (op.kind == OP_HOST_FN || (op.kind == OP_COPY && s->map)) {
            pthread_mutex_unlock(&s->mu);
            run_op(s, &op);
            pthread_mutex_lock(&s->mu);
        } else if (op.kind == OP_WAIT) {
            stream_unref(op.u.wait.stream);
        }
        st->done++;
        st->busy = 0;
        wake(s);
    }
    stream_unref(st);
    return rc;
}

int gk__sim_stream_create(gk_device *dev, void **impl)
{
    gk__sim *s = dev->impl;
    sim_stream *st = stream_new();
    if (!st)
        return gk__device_error(dev, -ENOMEM, "sim: out of host memory");
    pthread_mutex_lock(&s->mu);
    stream_link(s, st);
    pthread_mutex_unlock(&s->mu);
    *impl = st;
    return 0;
}

int gk__sim_stream_destroy(gk_device *dev, void *impl)
{
    gk__sim *s = dev->impl;
    sim_stream *st = impl;
    pthread_mutex_lock(&s->mu);
    int rc = force(dev, s, st, st->enq, deadline_after(dev->cfg.sync_timeout));
    stream_unlink(s, st);
    stream_unref(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gk__sim_stream_sync(gk_device *dev, void *impl, double timeout)
{
    gk__sim *s = dev->impl;
    pthread_mutex_lock(&s->mu);
    sim_stream *st = stream_of(s, impl);
    int rc = force(dev, s, st, st->enq, deadline_after(timeout));
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gk__sim_device_sync(gk_device *dev, double timeout)
{
    gk__sim *s = dev->impl;
    uint64_t deadline = deadline_after(timeout);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    size_t n = 0;
    for (sim_stream *st = s->streams; st; st = st->next)
        n++;
    sim_stream **all = gk__malloc(n * sizeof *all);
    uint64_t *upto = gk__malloc(n * sizeof *upto);
    if (!all || !upto) {
        rc = gk__device_error(dev, -ENOMEM, "sim: out of host memory");
        goto out_unlock;
    }
    n = 0;
    for (sim_stream *st = s->streams; st; st = st->next) {
        st->refs++; /* the list may change while the lock is dropped */
        all[n] = st;
        upto[n++] = st->enq;
    }
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = force(dev, s, all[i], upto[i], deadline);
        stream_unref(all[i]);
    }
out_unlock:
    pthread_mutex_unlock(&s->mu);
    free(all);
    free(upto);
    return rc;
}

int gk__sim_host_fn(gk_device *dev, void *impl, void (*fn)(void *), void *user)
{
    gk__sim *s = dev->impl;
    sim_op op = {.kind = OP_HOST_FN, .u.host = {fn, user}};
    pthread_mutex_lock(&s->mu);
    int rc = push(dev, stream_of(s, impl), &op);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gk__sim_memcpy(gk_device *dev, gk__copy_kind kind, void *dst, const void *src, size_t size,
                   void *impl)
{
    static const char *const names[] = {"htod", "dtoh", "dtod"};
    gk__sim *s = dev->impl;
    sim_op op = {.kind = OP_COPY, .u.copy = {dst, src, size}};
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (kind != GK__HTOD && !gk__sim_is_device_memory(s, src, size))
        rc = gk__device_error(dev, -EINVAL,
                              "sim: %s copy of %zu bytes: the source %p is not live device "
                              "memory of %s",
                              names[kind], size, src, dev->spec);
    else if (kind != GK__DTOH && !gk__sim_is_device_memory(s, dst, size))
        rc = gk__device_error(dev, -EINVAL,
                              "sim: %s copy of %zu bytes: the destination %p is not live device "
                              "memory of %s",
                              names[kind], size, dst, dev->spec);
    else
        rc = push(dev, stream_of(s, impl), &op);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* --- events ------------------------------------------------------------------------------- */

int gk__sim_event_create(gk_device *dev, void **impl)
{
    sim_event *ev = gk__calloc(1, sizeof *ev);
    if (!ev)
        return gk__device_error(dev, -ENOMEM, "sim: out of host memory");
    *impl = ev;
    return 0;
}

int gk__sim_event_destroy(gk_device *dev, void *impl)
{
    gk__sim *s = dev->impl;
    sim_event *ev = impl;
    pthread_mutex_lock(&s->mu);
    if (ev->stream)
        stream_unref(ev->stream);
    pthread_mutex_unlock(&s->mu);
    free(ev);
    return 0;
}

int gk__sim_event_record(gk_device *dev, void *event_impl, void *stream_impl)
{
    gk__sim *s = dev->impl;
    sim_event *ev = event_impl;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    sim_stream *st = stream_of(s, stream_impl);
    /* Back-to-back records share one marker: nothing runs between them. */
    int merge = st->enq > st->popped && st->ring[(st->enq - 1) & st->mask].kind == OP_RECORD;
    if (!merge) {
        sim_op op = {.kind = OP_RECORD};
        rc = push(dev, st, &op);
    }
    if (rc == 0) {
        st->refs++;
        if (ev->stream)
            stream_unref(ev->stream);
        ev->stream = st;
        ev->seq = st->enq;
        ev->polls = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int event_done(const sim_event *ev)
{
    return !ev->stream || ev->stream->done >= ev->seq;
}

int gk__sim_stream_wait(gk_device *dev, void *stream_impl, void *event_impl)
{
    gk__sim *s = dev->impl;
    sim_event *ev = event_impl;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    sim_stream *st = stream_of(s, stream_impl);
    /* Nothing to wait for: never recorded, already complete, or the stream's own order. */
    if (!event_done(ev) && ev->stream != st) {
        sim_op op = {.kind = OP_WAIT, .u.wait = {ev->stream, ev->seq}};
        rc = push(dev, st, &op);
        if (rc == 0)
            ev->stream->refs++;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gk__sim_event_query(gk_device *dev, void *impl)
{
    gk__sim *s = dev->impl;
    sim_event *ev = impl;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    uint64_t n = ++s->event_queries, nth = s->cfg.faults.event_query_nth;
    if (nth && n == nth) {
        rc = gk__device_error(dev, GK_EDRIVER,
                              "sim: injected fault: event query #%llu fails "
                              "(fail_event_query_nth=%llu)",
                              (unsigned long long)n, (unsigned long long)nth);
    } else if (!event_done(ev)) {
        if (++ev->polls < s->cfg.event_polls)
            rc = GK_ENOTREADY;
        else
            rc = force(dev, s, ev->stream, ev->seq, NO_WAIT);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gk__sim_event_sync(gk_device *dev, void *impl, double timeout)
{
    gk__sim *s = dev->impl;
    sim_event *ev = impl;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (!event_done(ev))
        rc = force(dev, s, ev->stream, ev->seq, deadline_after(timeout));
    pthread_mutex_unlock(&s->mu);
    return rc;
}
