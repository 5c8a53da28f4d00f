/* The loader's consumer side: next (in-order delivery, errors, skips, timeouts with their
 * diagnostic, the caller's wait for the copy), release, the resumable position (state, seek,
 * restore) and the statistics. The ring and the workers are in ring.c. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "loader/loader_int.h"

/* --- consumer side -------------------------------------------------------------------------- */

static int release_slot(gk_loader *ld, gk__slot *s, gk_stream *stream)
{
    int e = 0;
    if (ld->cfg.device)
        e = gk_event_record(ld->cfg.device, s->consumed, stream);
    pthread_mutex_lock(&ld->mu);
    gk__slot_set_free(s);
    if (ld->have_held && ld->held_seq == s->seq)
        ld->have_held = 0;
    pthread_mutex_unlock(&ld->mu);
    pthread_cond_broadcast(&ld->cv_work); /* after unlocking, as in gk__fill_part */
    if (e)
        return gk__loader_error(ld, e, "loader: recording the release of batch %" PRIu64 ": %s",
                                s->index, gk_last_error());
    return 0;
}

/* With pool slots: marks `stream` as a user of slot s's device memory, so the pool never hands
 * that memory out again before the work queued there is done. The pool keeps each stream once
 * (a repeat allocates nothing) and forgets a stream when it is destroyed, so the call is made for
 * every batch rather than cached here by stream address (a new stream may reuse an old address). */
static int mark_stream(gk_loader *ld, gk__slot *s, gk_stream *stream)
{
    if (!ld->cfg.pool)
        return 0;
    int e = gk_pool_record_stream(ld->cfg.pool, s->dev, stream);
    if (e)
        return gk__loader_error(ld, e, "loader: marking slot %d's device memory in the pool: %s",
                                (int)(s - ld->slots), gk_strerror(e));
    return 0;
}

int gk_loader_release(gk_loader *ld, const gk_batch *b, gk_stream *stream)
{
    if (!ld || !b)
        return gk__error(-EINVAL, "gk_loader_release: ld or b is NULL");
    if (b->slot < 0 || b->slot >= ld->K)
        return gk__loader_error(ld, -EINVAL,
                                "loader: release of a batch with slot %d (not a batch of "
                                "this loader)",
                                b->slot);
    gk__slot *s = &ld->slots[b->slot];
    pthread_mutex_lock(&ld->mu);
    int ok = s->state == GK__SLOT_HELD && s->seq == (int64_t)b->seq;
    pthread_mutex_unlock(&ld->mu);
    if (!ok)
        return gk__loader_error(ld, -EINVAL,
                                "loader: batch %" PRIu64 " (epoch %" PRIu64 ", batch %" PRIu64
                                ") is not held: released twice or never delivered",
                                b->seq, b->epoch, b->index);
    int e = mark_stream(ld, s, stream);
    if (e)
        return e;
    return release_slot(ld, s, stream);
}

static void timeout_diag(gk_loader *ld, int64_t seq, double waited)
{
    gk__slot *s = &ld->slots[seq % ld->K];
    uint64_t pos = ld->origin + (uint64_t)seq;
    char what[400] = "";
    uint64_t now = gk__loader_now_ns();
    for (int i = 0; i < ld->nworkers; i++) {
        gk__worker *w = &ld->workers[i];
        uint64_t t0 = atomic_load_explicit(&w->read_start_ns, memory_order_relaxed);
        if (atomic_load_explicit(&w->cur_seq, memory_order_relaxed) == seq && t0) {
            snprintf(what, sizeof what,
                     "worker %d has been inside the read of dataset index %" PRIu64 " for %.3f s",
                     i, atomic_load_explicit(&w->cur_index, memory_order_relaxed),
                     (double)(now - t0) / 1e9);
            break;
        }
    }
    if (!what[0]) {
        if (s->seq == seq && s->state == GK__SLOT_FILLING)
            snprintf(what, sizeof what, "its slot is being filled (%u of %u parts done)",
                     s->parts_done, ld->parts);
        else if (s->seq + ld->K == seq && s->state == GK__SLOT_HELD)
            snprintf(what, sizeof what, "its slot %d still holds unreleased batch %" PRId64,
                     (int)(seq % ld->K), s->seq);
        else
            snprintf(what, sizeof what, "no worker has started it yet");
    }
    gk__loader_error(ld, -ETIMEDOUT,
                     "loader: batch %" PRId64 " (epoch %" PRIu64 ", batch %" PRIu64
                     ") not ready after %.3f s: %s",
                     seq, pos / ld->smp.batches, pos % ld->smp.batches, waited, what);
}

/* Waits (under ld->mu) until slot s holds batch seq ready. */
static int wait_ready(gk_loader *ld, gk__slot *s, int64_t seq, double timeout)
{
    struct timespec dl;
    gk__abs_deadline(&dl, timeout);
    while (!(s->seq == seq && s->state == GK__SLOT_READY)) {
        if (ld->stop)
            return -ECANCELED;
        if (s->state == GK__SLOT_HELD && s->seq + ld->K == seq)
            return gk__loader_error(ld, -EBUSY,
                                    "loader: every slot is held; release a batch before "
                                    "asking for the next (depth %d)",
                                    ld->K);
        if (timeout <= 0 || pthread_cond_timedwait(&ld->cv_ready, &ld->mu, &dl) == ETIMEDOUT) {
            if (s->seq == seq && s->state == GK__SLOT_READY)
                break;
            timeout_diag(ld, seq, timeout);
            return -ETIMEDOUT;
        }
    }
    return 0;
}

/* Fills batch seq on the consumer thread (no workers). Called without ld->mu. */
static int consumer_fill(gk_loader *ld, gk__slot *s, int64_t seq)
{
    pthread_mutex_lock(&ld->mu);
    if (s->seq != seq) {
        if (!gk__slot_free_for(ld, s, seq)) {
            pthread_mutex_unlock(&ld->mu);
            return gk__loader_error(ld, -EBUSY,
                                    "loader: every slot is held; release a batch before "
                                    "asking for the next (depth %d)",
                                    ld->K);
        }
        gk__slot_begin(ld, s, seq);
    }
    pthread_mutex_unlock(&ld->mu);
    if (s->state == GK__SLOT_FILLING)
        gk__fill_part(ld, &ld->consumer, seq, 0);
    return 0;
}

/* Delivers the next batch into the library's own gk_batch; gk_loader_next copies it out. */
static int next_batch(gk_loader *ld, gk_stream *stream, double timeout, gk_batch *b);

int(gk_loader_next)(gk_loader *ld, gk_stream *stream, double timeout, gk_batch *out, size_t size)
{
    if (!ld)
        return gk__error(-EINVAL, "gk_loader_next: loader is NULL");
    int rc = gk__sized_check(out, size, "gk_batch");
    if (rc)
        return rc;
    gk_batch b;
    rc = next_batch(ld, stream, timeout, &b);
    if (rc)
        return rc;
    return gk__sized_put(out, size, &b, sizeof b, "gk_batch");
}

static int next_batch(gk_loader *ld, gk_stream *stream, double timeout, gk_batch *b)
{
    if (ld->stopped)
        return gk__loader_error(ld, -ECANCELED, "loader: stopped");
    if (ld->failed)
        return gk__loader_error(ld, ld->failed, "%s", ld->failed_msg);
    if (timeout < 0)
        timeout = ld->cfg.timeout;
    if (ld->cfg.auto_release && ld->have_held) {
        gk__slot *h = &ld->slots[ld->held_slot];
        int e = release_slot(ld, h, h->stream);
        if (e)
            return e;
    }
    uint64_t t0 = gk__loader_now_ns();
    for (;;) {
        int64_t seq = ld->next_seq;
        if (ld->origin + (uint64_t)seq >= ld->end_pos)
            return gk__error(GK_LOADER_END, "loader %s: end of the configured epochs (%" PRIu64 ")",
                             ld->name, ld->cfg.epochs);
        gk__slot *s = &ld->slots[seq % ld->K];
        if (ld->nworkers == 0) {
            int e = consumer_fill(ld, s, seq);
            if (e)
                return e;
        } else {
            for (int i = 0; i < ld->spin; i++) {
                if (atomic_load_explicit(&s->ready_seq, memory_order_acquire) == seq)
                    break;
                gk__cpu_relax();
            }
        }
        pthread_mutex_lock(&ld->mu);
        int e = wait_ready(ld, s, seq, timeout);
        if (e) {
            pthread_mutex_unlock(&ld->mu);
            return e;
        }
        uint32_t ready = 0;
        for (int i = 0; i < ld->K; i++)
            ready += ld->slots[i].state == GK__SLOT_READY;
        if (s->err) {
            if (ld->cfg.on_error == GK_LOADER_SKIP &&
                atomic_load(&ld->st.skips) < ld->cfg.max_skips) {
                gk_log(&ld->cfg.logger, GK_LOG_WARN, "loader",
                       "skipping batch %" PRIu64 " of epoch %" PRIu64 ": %s", s->index, s->epoch,
                       s->msg);
                gk__stat_add(&ld->st.skips, 1);
                gk__slot_set_free(s);
                pthread_cond_broadcast(&ld->cv_work);
                pthread_mutex_unlock(&ld->mu);
                ld->next_seq++;
                continue;
            }
            ld->failed = s->err;
            snprintf(ld->failed_msg, sizeof ld->failed_msg,
                     "batch %" PRIu64 " of epoch %" PRIu64 " (dataset index %" PRIu64 "): %s",
                     s->index, s->epoch, s->err_index, s->msg);
            pthread_cond_broadcast(&ld->cv_work);
            pthread_mutex_unlock(&ld->mu);
            return gk__loader_error(ld, ld->failed, "%s", ld->failed_msg);
        }
        s->state = GK__SLOT_HELD;
        s->stream = stream;
        ld->next_seq++;
        ld->have_held = 1;
        ld->held_seq = seq;
        ld->held_slot = (int)(seq % ld->K);
        pthread_mutex_unlock(&ld->mu);
        e = mark_stream(ld, s, stream);
        if (!e && ld->cfg.device && !(ld->cfg.test_drop_edges & GK_LOADER_DROP_EDGE_A)) {
            e = gk_stream_wait_event(ld->cfg.device, stream, s->copied);
            if (e)
                gk__loader_error(ld, e, "loader: making the stream wait for batch %" PRIu64 ": %s",
                                 s->index, gk_last_error());
        }
        if (e) {
            pthread_mutex_lock(&ld->mu);
            s->state = GK__SLOT_READY;
            ld->have_held = 0;
            ld->next_seq--;
            pthread_mutex_unlock(&ld->mu);
            return e;
        }
        b->size = sizeof *b;
        b->seq = (uint64_t)seq;
        b->epoch = s->epoch;
        b->index = s->index;
        b->count = s->count;
        b->item_size = ld->item_size;
        b->bytes = s->count * ld->item_size;
        b->host = s->host;
        b->device = s->dev;
        b->indices = s->indices;
        b->last_in_epoch = s->last;
        b->slot = (int)(seq % ld->K);
        uint64_t now = gk__loader_now_ns(), w = now - t0;
        gk__stat_add(&ld->st.items, s->count);
        gk__stat_add(&ld->st.bytes, b->bytes);
        gk__stat_add(&ld->st.wait_ns, w);
        gk__stat_max(&ld->st.wait_max_ns, w);
        gk__stat_add(&ld->st.occupancy_sum, ready);
        unsigned bucket = 0;
        for (uint64_t us = w / 1000; us && bucket < 31; us >>= 1)
            bucket++;
        gk__stat_add(&ld->st.wait_hist[bucket], 1);
        gk__stat_add(&ld->st.batches, 1);
        if (!atomic_load(&ld->st.first_batch_ns)) {
            atomic_store(&ld->st.first_batch_ns, now - ld->seek_ns);
        }
        return 0;
    }
}

/* --- position ------------------------------------------------------------------------------- */

/* The position in the library's own gk_loader_state: after the batches released, or with
 * `held_done` after every batch delivered (held ones count as consumed). */
static void get_state(gk_loader *ld, gk_loader_state *st, int held_done)
{
    pthread_mutex_lock(&ld->mu);
    int64_t done = ld->next_seq;
    for (int i = 0; i < ld->K && !held_done; i++)
        if (ld->slots[i].state == GK__SLOT_HELD && ld->slots[i].seq < done)
            done = ld->slots[i].seq;
    pthread_mutex_unlock(&ld->mu);
    uint64_t pos = ld->origin + (uint64_t)done;
    memset(st, 0, sizeof *st);
    st->size = sizeof *st;
    st->version = GK_LOADER_STATE_VERSION;
    st->flags = (uint32_t)(ld->smp.shuffle | ld->smp.drop_last << 1 | ld->smp.shard_drop_last << 2);
    st->seed = ld->smp.seed;
    st->epoch = pos / ld->smp.batches;
    st->batch = pos % ld->smp.batches;
    st->count = ld->smp.count;
    st->batch_size = ld->smp.batch_size;
    st->world = ld->smp.world;
    st->rank = ld->smp.rank;
}

int(gk_loader_get_state)(gk_loader *ld, gk_loader_state *out, size_t size)
{
    if (!ld)
        return gk__error(-EINVAL, "gk_loader_get_state: loader is NULL");
    gk_loader_state st;
    get_state(ld, &st, 0);
    return gk__sized_put(out, size, &st, sizeof st, "gk_loader_state");
}

int(gk_loader_get_state_delivered)(gk_loader *ld, gk_loader_state *out, size_t size)
{
    if (!ld)
        return gk__error(-EINVAL, "gk_loader_get_state_delivered: loader is NULL");
    gk_loader_state st;
    get_state(ld, &st, 1);
    return gk__sized_put(out, size, &st, sizeof st, "gk_loader_state");
}

int gk_loader_seek(gk_loader *ld, uint64_t epoch, uint64_t batch)
{
    if (!ld)
        return gk__error(-EINVAL, "gk_loader_seek: ld is NULL");
    if (ld->stopped)
        return gk__loader_error(ld, -ECANCELED, "loader: stopped");
    if (batch >= ld->smp.batches)
        return gk__loader_error(ld, -EINVAL,
                                "loader: batch %" PRIu64 " is past the epoch (%" PRIu64
                                " batches per epoch)",
                                batch, ld->smp.batches);
    gk__join_workers(ld);
    /* Outstanding batches count as released on the stream they were delivered on. */
    gk__release_held(ld);
    gk__drain_copies(ld);
    for (int i = 0; i < ld->K; i++) {
        ld->slots[i].seq = i - ld->K;
        gk__slot_set_free(&ld->slots[i]);
        atomic_store(&ld->slots[i].ready_seq, INT64_MIN);
    }
    ld->origin = epoch * ld->smp.batches + batch;
    ld->next_seq = 0;
    ld->have_held = 0;
    ld->failed = 0;
    ld->stop = 0;
    atomic_store(&ld->next_unit, 0);
    atomic_store(&ld->st.first_batch_ns, 0);
    ld->seek_ns = gk__loader_now_ns();
    char err[512];
    int rc = gk__start_workers(ld, err, sizeof err);
    if (rc) {
        gk__join_workers(ld);
        ld->failed = rc;
        snprintf(ld->failed_msg, sizeof ld->failed_msg, "%s", err);
        return gk__loader_error(ld, rc, "%s", err);
    }
    return 0;
}

int gk_loader_set_epoch(gk_loader *ld, uint64_t epoch)
{
    return gk_loader_seek(ld, epoch, 0);
}

int gk_loader_restore(gk_loader *ld, const gk_loader_state *saved_in)
{
    if (!ld || !saved_in)
        return gk__error(-EINVAL, "gk_loader_restore: loader or state is NULL");
    gk_loader_state full, *st = &full;
    memset(&full, 0, sizeof full);
    if (gk__sized_in(&full, sizeof full, saved_in, "gk_loader_state") != 0)
        return -EINVAL;
    if (st->version != GK_LOADER_STATE_VERSION)
        return gk__loader_error(ld, GK_EVERSION,
                                "loader state: version %u is not supported (this gpukit "
                                "writes %d)",
                                st->version, GK_LOADER_STATE_VERSION);
    gk_loader_state cur;
    get_state(ld, &cur, 0);
    const char *field = NULL;
    uint64_t saved = 0, have = 0;
#define CHECK(f)                                                                                   \
    if (!field && st->f != cur.f) {                                                                \
        field = #f;                                                                                \
        saved = st->f;                                                                             \
        have = cur.f;                                                                              \
    }
    CHECK(count)
    CHECK(batch_size)
    CHECK(seed)
    CHECK(world)
    CHECK(rank)
    CHECK(flags)
#undef CHECK
    if (field)
        return gk__loader_error(ld, GK_EMISMATCH,
                                "loader state: saved %s is %" PRIu64 " but this loader "
                                "has %" PRIu64 " (restore with the configuration that saved it)",
                                field, saved, have);
    if (st->batch >= ld->smp.batches)
        return gk__loader_error(ld, GK_EMISMATCH,
                                "loader state: batch %" PRIu64 " is past the epoch (%" PRIu64
                                " batches)",
                                st->batch, ld->smp.batches);
    return gk_loader_seek(ld, st->epoch, st->batch);
}

uint64_t gk_loader_batches_per_epoch(const gk_loader *ld)
{
    return ld ? ld->smp.batches : 0;
}

const char *gk_loader_last_error(const gk_loader *ld)
{
    (void)ld;
    return gk_last_error();
}

int(gk_loader_get_stats)(gk_loader *ld, gk_loader_stats *user, size_t size)
{
    if (!ld)
        return gk__error(-EINVAL, "gk_loader_get_stats: loader is NULL");
    gk_loader_stats st, *out = &st;
    memset(out, 0, sizeof *out);
#define LOAD(f) atomic_load_explicit(&ld->st.f, memory_order_relaxed)
    out->items = LOAD(items);
    out->bytes = LOAD(bytes);
    out->batches = LOAD(batches);
    out->skips = LOAD(skips);
    out->wait_ns = LOAD(wait_ns);
    out->wait_max_ns = LOAD(wait_max_ns);
    out->fill_ns = LOAD(fill_ns);
    out->fill_max_ns = LOAD(fill_max_ns);
    out->copy_ns = LOAD(copy_ns);
    out->copy_max_ns = LOAD(copy_max_ns);
    out->worker_busy_ns = LOAD(busy_ns);
    out->worker_idle_ns = LOAD(idle_ns);
    out->occupancy_sum = LOAD(occupancy_sum);
    out->first_batch_ns = LOAD(first_batch_ns);
    for (int i = 0; i < 32; i++)
        out->wait_hist[i] = LOAD(wait_hist[i]);
#undef LOAD
    pthread_mutex_lock(&ld->mu);
    for (int i = 0; i < ld->K; i++)
        out->ring_ready += ld->slots[i].state == GK__SLOT_READY;
    pthread_mutex_unlock(&ld->mu);
    out->depth = (uint32_t)ld->K;
    out->uptime_ns = gk__loader_now_ns() - ld->created_ns;
    return gk__sized_put(user, size, out, sizeof *out, "gk_loader_stats");
}
