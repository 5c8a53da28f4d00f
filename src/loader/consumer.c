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

/* Frees slot s, whose batch the consumer held or skipped. */
static void free_slot(gk_loader *ld, gk__slot *s)
{
    int64_t seq = atomic_load_explicit(&s->ready, memory_order_relaxed);
    atomic_store_explicit(&s->held, 0, memory_order_relaxed);
    s->err = 0;
    if (ld->have_held && ld->held_seq == seq)
        ld->have_held = 0;
    gk__publish_free(ld, s, seq);
}

static int release_slot(gk_loader *ld, gk__slot *s, gk_stream *stream)
{
    int e = 0;
    if (ld->cfg.device)
        e = gk_event_record(ld->cfg.device, s->consumed, stream);
    free_slot(ld, s);
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
    int ok = atomic_load_explicit(&s->held, memory_order_relaxed) &&
             atomic_load_explicit(&s->ready, memory_order_relaxed) == (int64_t)b->seq;
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
    gk__pos p;
    gk__locate(ld, seq, &p);
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
        int64_t freed = atomic_load_explicit(&s->freed, memory_order_acquire);
        unsigned done = atomic_load_explicit(&s->parts_done, memory_order_relaxed);
        if (freed == seq - ld->K && done)
            snprintf(what, sizeof what, "its slot is being filled (%u of %u parts done)", done,
                     ld->parts);
        else if (freed < seq - ld->K && atomic_load_explicit(&s->held, memory_order_relaxed))
            snprintf(what, sizeof what, "its slot %d still holds unreleased batch %" PRId64,
                     (int)(seq % ld->K), seq - ld->K);
        else
            snprintf(what, sizeof what, "no worker has started it yet");
    }
    gk__loader_error(ld, -ETIMEDOUT,
                     "loader: batch %" PRId64 " (epoch %" PRIu64 ", batch %" PRIu64
                     ") not ready after %.3f s: %s",
                     seq, p.epoch, p.index, waited, what);
}

static int every_slot_held(gk_loader *ld)
{
    return gk__loader_error(ld, -EBUSY,
                            "loader: every slot is held; release a batch before asking for the "
                            "next (depth %d)",
                            ld->K);
}

/* Fills batch seq on the consumer thread (no workers). */
static int consumer_fill(gk_loader *ld, gk__slot *s, int64_t seq)
{
    if (atomic_load_explicit(&s->ready, memory_order_relaxed) == seq)
        return 0; /* filled by an earlier call that then failed to deliver it */
    if (atomic_load_explicit(&s->freed, memory_order_relaxed) != seq - ld->K)
        return every_slot_held(ld);
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

/* Ready batches in the ring now (held ones excluded). */
static uint32_t ring_ready(gk_loader *ld)
{
    uint32_t n = 0;
    for (int i = 0; i < ld->K; i++) {
        gk__slot *s = &ld->slots[i];
        n += atomic_load_explicit(&s->ready, memory_order_relaxed) >
                 atomic_load_explicit(&s->freed, memory_order_relaxed) &&
             !atomic_load_explicit(&s->held, memory_order_relaxed);
    }
    return n;
}

/* Counts one delivery in the consumer's figures. */
static void count_delivery(gk_loader *ld, const gk_batch *b, uint64_t t0, uint32_t ready)
{
    uint64_t now = gk__loader_now_ns(), w = now - t0;
    gk__own_add(&ld->st.items, b->count);
    gk__own_add(&ld->st.bytes, b->bytes);
    gk__own_add(&ld->st.wait_ns, w);
    gk__own_max(&ld->st.wait_max_ns, w);
    gk__own_add(&ld->st.occupancy_sum, ready);
    unsigned bucket = 0;
    for (uint64_t us = w / 1000; us && bucket < 31; us >>= 1)
        bucket++;
    gk__own_add(&ld->st.wait_hist[bucket], 1);
    gk__own_add(&ld->st.batches, 1);
    if (!atomic_load_explicit(&ld->st.first_batch_ns, memory_order_relaxed)) {
        atomic_store_explicit(&ld->st.first_batch_ns, now - ld->seek_ns, memory_order_relaxed);
    }
}

static int next_batch(gk_loader *ld, gk_stream *stream, double timeout, gk_batch *b)
{
    if (ld->stopped)
        return gk__loader_error(ld, -ECANCELED, "loader: stopped");
    if (ld->failed)
        return gk__loader_error(ld, ld->failed, "%s", ld->failed_msg);
    if (timeout < 0)
        timeout = ld->cfg.timeout;
    uint64_t t0 = gk__loader_now_ns();
    /* The consumer's pace, for deciding how early to wake sleeping workers. */
    if (ld->last_next_ns) {
        uint64_t period = t0 - ld->last_next_ns, avg = ld->period_avg_ns;
        ld->period_avg_ns = avg ? avg - avg / 8 + period / 8 : period;
    }
    ld->last_next_ns = t0;
    if (ld->cfg.auto_release && ld->have_held) {
        gk__slot *h = &ld->slots[ld->held_slot];
        int e = release_slot(ld, h, h->stream);
        if (e)
            return e;
    }
    for (;;) {
        int64_t seq = ld->next_seq;
        if (seq >= ld->seq_end)
            return gk__error(GK_LOADER_END, "loader %s: end of the configured epochs (%" PRIu64 ")",
                             ld->name, ld->cfg.epochs);
        gk__slot *s = &ld->slots[seq % ld->K];
        int e;
        if (ld->nworkers == 0) {
            e = consumer_fill(ld, s, seq);
        } else if (atomic_load_explicit(&s->held, memory_order_relaxed) &&
                   atomic_load_explicit(&s->freed, memory_order_relaxed) < seq - ld->K) {
            e = every_slot_held(ld);
        } else {
            e = gk__wait_ready(ld, s, seq, timeout);
            if (e == -ETIMEDOUT)
                timeout_diag(ld, seq, timeout);
        }
        if (e)
            return e;
        uint32_t ready = ring_ready(ld);
        if (s->err) {
            if (ld->cfg.on_error == GK_LOADER_SKIP &&
                atomic_load_explicit(&ld->st.skips, memory_order_relaxed) < ld->cfg.max_skips) {
                gk_log(&ld->cfg.logger, GK_LOG_WARN, "loader",
                       "skipping batch %" PRIu64 " of epoch %" PRIu64 ": %s", s->index, s->epoch,
                       s->msg);
                gk__own_add(&ld->st.skips, 1);
                ld->next_seq++;
                free_slot(ld, s);
                continue;
            }
            ld->failed = s->err;
            snprintf(ld->failed_msg, sizeof ld->failed_msg,
                     "batch %" PRIu64 " of epoch %" PRIu64 " (dataset index %" PRIu64 "): %s",
                     s->index, s->epoch, s->err_index, s->msg);
            atomic_store_explicit(&ld->halt, 1, memory_order_seq_cst);
            gk__wake_workers(ld);
            return gk__loader_error(ld, ld->failed, "%s", ld->failed_msg);
        }
        e = mark_stream(ld, s, stream);
        if (!e && ld->cfg.device && !(ld->cfg.test_drop_edges & GK_LOADER_DROP_EDGE_A)) {
            e = gk_stream_wait_event(ld->cfg.device, stream, s->copied);
            if (e)
                gk__loader_error(ld, e, "loader: making the stream wait for batch %" PRIu64 ": %s",
                                 s->index, gk_last_error());
        }
        if (e)
            return e; /* the batch stays ready: the next call delivers it */
        atomic_store_explicit(&s->held, 1, memory_order_relaxed);
        s->stream = stream;
        atomic_store_explicit(&ld->cs_taken, seq, memory_order_relaxed);
        atomic_store_explicit(&ld->cs_last_ns, t0, memory_order_relaxed);
        atomic_store_explicit(&ld->cs_period_ns, ld->period_avg_ns, memory_order_relaxed);
        ld->next_seq++;
        ld->have_held = 1;
        ld->held_seq = seq;
        ld->held_slot = (int)(seq % ld->K);
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
        count_delivery(ld, b, t0, ready);
        return 0;
    }
}

/* --- position ------------------------------------------------------------------------------- */

/* The delivery the state starts from: the oldest batch still held, else the next one; with
 * `held_done`, the next one (every delivered batch counts as consumed). */
static int64_t first_unreleased(gk_loader *ld, int held_done)
{
    int64_t done = ld->next_seq;
    for (int i = 0; i < ld->K && !held_done; i++) {
        gk__slot *s = &ld->slots[i];
        int64_t seq = atomic_load_explicit(&s->ready, memory_order_relaxed);
        if (atomic_load_explicit(&s->held, memory_order_relaxed) && seq < done)
            done = seq;
    }
    return done;
}

/* The position in the library's own gk_loader_state: after the batches released, or with
 * `held_done` after every batch delivered (held ones count as consumed). */
static void get_state(gk_loader *ld, gk_loader_state *st, int held_done)
{
    gk__pos p;
    gk__locate(ld, first_unreleased(ld, held_done), &p);
    memset(st, 0, sizeof *st);
    st->size = sizeof *st;
    st->version = GK_LOADER_STATE_VERSION;
    st->flags = (uint32_t)(ld->smp.shuffle | ld->smp.drop_last << 1 | ld->smp.shard_drop_last << 2);
    st->seed = ld->smp.seed;
    st->epoch = p.epoch;
    st->batch = p.index;
    st->count = ld->smp.count;
    st->batch_size = ld->smp.batch_size;
    st->world = ld->smp.world;
    st->rank = ld->smp.rank;
    st->position = gk__global_position(ld, p.epoch, p.index, &st->epoch_start);
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

/* Discards the ring and continues at `batch` of `epoch`, laid out by `res` (a resumed epoch, or
 * inactive). */
static int reposition(gk_loader *ld, uint64_t epoch, uint64_t batch, const gk__resumed *res)
{
    gk__join_workers(ld);
    /* Outstanding batches count as released on the stream they were delivered on. */
    gk__release_held(ld);
    gk__drain_copies(ld);
    for (int i = 0; i < ld->K; i++) {
        gk__slot *s = &ld->slots[i];
        atomic_store(&s->ready, (int64_t)i - ld->K);
        atomic_store(&s->freed, (int64_t)i - ld->K);
        atomic_store(&s->held, 0);
        atomic_store(&s->parts_done, 0);
        atomic_store(&s->err_claimed, 0);
        atomic_store(&s->fill_ns, 0);
        s->err = 0;
    }
    ld->res = *res;
    gk__set_origin(ld, epoch, batch);
    ld->next_seq = 0;
    ld->have_held = 0;
    ld->failed = 0;
    ld->frees_unwoken = 0;
    atomic_store(&ld->cs_taken, -1);
    atomic_store(&ld->next_unit, 0);
    atomic_store(&ld->hinted, -1);
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
    gk__resumed none;
    memset(&none, 0, sizeof none);
    return reposition(ld, epoch, batch, &none);
}

int gk_loader_set_epoch(gk_loader *ld, uint64_t epoch)
{
    return gk_loader_seek(ld, epoch, 0);
}

int gk_loader_restore(gk_loader *ld, const gk_loader_state *saved_in)
{
    if (!ld || !saved_in)
        return gk__error(-EINVAL, "gk_loader_restore: loader or state is NULL");
    if (ld->stopped)
        return gk__loader_error(ld, -ECANCELED, "loader: stopped");
    gk_loader_state full, *st = &full;
    memset(&full, 0, sizeof full);
    if (gk__sized_in(&full, sizeof full, saved_in, "gk_loader_state") != 0)
        return -EINVAL;
    if (st->version < 1 || st->version > GK_LOADER_STATE_VERSION)
        return gk__loader_error(ld, GK_EVERSION,
                                "loader state: version %u is not supported (this gpukit "
                                "reads 1 to %d)",
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
    CHECK(flags)
#undef CHECK
    if (field)
        return gk__loader_error(ld, GK_EMISMATCH,
                                "loader state: saved %s is %" PRIu64 " but this loader "
                                "has %" PRIu64 " (restore with the configuration that saved it)",
                                field, saved, have);
    if (st->world == 0)
        return gk__loader_error(ld, GK_EMISMATCH, "loader state: saved world is 0");
    if (st->version == 1) {
        /* Version 1 has no global position: every rank released `batch` batches. */
        uint64_t step =
            st->batch_size > UINT64_MAX / st->world ? UINT64_MAX : st->batch_size * st->world;
        st->epoch_start = 0;
        st->position = st->batch > st->count / step ? st->count : st->batch * step;
        if (st->position > st->count)
            st->position = st->count;
    }
    if (st->epoch_start > st->count || st->position > st->count || st->position < st->epoch_start)
        return gk__loader_error(ld, GK_EMISMATCH,
                                "loader state: global position %" PRIu64 " (epoch began at %" PRIu64
                                ") is outside the epoch's %" PRIu64 " samples",
                                st->position, st->epoch_start, st->count);
    gk__resumed res;
    if (st->world == ld->smp.world) {
        /* The same world: exactly the batches the saving loader would have delivered next. */
        gk__resumed_init(ld, st->epoch, st->epoch_start, &res);
        uint64_t batches = res.active ? res.batches : ld->smp.batches;
        if (st->batch >= batches && !(batches == 0 && st->batch == 0))
            return gk__loader_error(ld, GK_EMISMATCH,
                                    "loader state: batch %" PRIu64 " is past the epoch (%" PRIu64
                                    " batches)",
                                    st->batch, batches);
        return reposition(ld, st->epoch, st->batch, &res);
    }
    /* Another world size: the remaining samples of the epoch, dealt to the new ranks. */
    gk__resumed_init(ld, st->epoch, st->position, &res);
    return reposition(ld, st->epoch, 0, &res);
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
#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
    out->items = LOAD(ld->st.items);
    out->bytes = LOAD(ld->st.bytes);
    out->batches = LOAD(ld->st.batches);
    out->skips = LOAD(ld->st.skips);
    out->wait_ns = LOAD(ld->st.wait_ns);
    out->wait_max_ns = LOAD(ld->st.wait_max_ns);
    out->occupancy_sum = LOAD(ld->st.occupancy_sum);
    out->first_batch_ns = LOAD(ld->st.first_batch_ns);
    for (int i = 0; i < 32; i++)
        out->wait_hist[i] = LOAD(ld->st.wait_hist[i]);
    /* Each filling thread keeps its own figures; they are summed here. */
    for (int i = -1; i < ld->nworkers; i++) {
        const gk__tstats *t = i < 0 ? &ld->consumer.st : &ld->workers[i].st;
        out->fill_ns += LOAD(t->fill_ns);
        out->copy_ns += LOAD(t->copy_ns);
        out->worker_busy_ns += LOAD(t->busy_ns);
        out->worker_idle_ns += LOAD(t->idle_ns);
        uint64_t fm = LOAD(t->fill_max_ns), cm = LOAD(t->copy_max_ns);
        if (fm > out->fill_max_ns)
            out->fill_max_ns = fm;
        if (cm > out->copy_max_ns)
            out->copy_max_ns = cm;
    }
#undef LOAD
    out->ring_ready = ring_ready(ld);
    out->depth = (uint32_t)ld->K;
    out->uptime_ns = gk__loader_now_ns() - ld->created_ns;
    out->workers = (uint32_t)ld->nworkers;
    out->cpus = (uint32_t)ld->cpus;
    out->spin = (uint32_t)ld->spin;
    return gk__sized_put(user, size, out, sizeof *out, "gk_loader_stats");
}
