/* The loader's ring and workers: K slots filled in order by worker threads (or by the consumer
 * when there are none), each a pre-touched host buffer plus, with a device, a device buffer, a
 * copy event and a release event enforcing the three ordering edges (see loader.h); creation,
 * stop and destruction. The consumer side is in consumer.c. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "loader/loader_int.h"

const char *gk_loader_create_error(void)
{
    return gk_last_error();
}

int gk__loader_error(gk_loader *ld, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)ld;
    gk__verror(rc, fmt, ap);
    va_end(ap);
    return rc;
}

void(gk_loader_config_default)(gk_loader_config *out, size_t size)
{
    gk_loader_config c;
    memset(&c, 0, sizeof c);
    gk_logger_default(&c.logger);
    c.batch_size = 32;
    c.workers = 1;
    c.depth = 4;
    c.rank = 0;
    c.world = 1;
    c.timeout = 300;
    c.on_error = GK_LOADER_FAIL;
    c.max_skips = 16;
    c.auto_release = 1;
    c.split_bytes = 4u << 20;
    c.readahead = 1;
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_loader_config");
}

/* --- filling ------------------------------------------------------------------------------ */

/* Sorts a[0..n) ascending in place (heapsort: no allocation, n log n). */
static void sort_u64(uint64_t *a, size_t n)
{
    for (size_t start = n / 2; n > 1;) {
        size_t root;
        if (start > 0) {
            root = --start;
        } else {
            n--;
            uint64_t t = a[0];
            a[0] = a[n];
            a[n] = t;
            root = 0;
        }
        for (size_t child; (child = 2 * root + 1) < n; root = child) {
            if (child + 1 < n && a[child + 1] > a[child])
                child++;
            if (a[root] >= a[child])
                break;
            uint64_t t = a[root];
            a[root] = a[child];
            a[child] = t;
        }
    }
}

/* Batches whose hints are skipped after a probe found the data cached, before the next probe. */
#define HINT_PROBE_EVERY 16

/* Passes the items of the batches after ld->hinted up to `upto` to the dataset's will_need, each
 * batch sorted so the dataset can coalesce its items into page ranges. Each batch is hinted once,
 * by whichever worker claims it. While the dataset reports the hinted items already cached, only
 * every HINT_PROBE_EVERY-th batch is computed and passed (a probe). */
static void hint_upto(gk_loader *ld, gk__worker *w, int64_t upto)
{
    if (upto >= ld->seq_end)
        upto = ld->seq_end - 1;
    int64_t h = atomic_load_explicit(&ld->hinted, memory_order_relaxed);
    while (h < upto && !atomic_compare_exchange_weak_explicit(
                           &ld->hinted, &h, upto, memory_order_relaxed, memory_order_relaxed))
        ;
    for (int64_t b = h + 1; b <= upto; b++) {
        if (atomic_load_explicit(&ld->ds->cached, memory_order_relaxed)) {
            uint64_t left = atomic_load_explicit(&ld->hint_skips, memory_order_relaxed);
            if (left) {
                atomic_store_explicit(&ld->hint_skips, left - 1, memory_order_relaxed);
                continue;
            }
        }
        size_t n = gk__batch_indices(ld, b, w->ahead);
        sort_u64(w->ahead, n);
        ld->ds->ops.will_need(ld->ds->ctx, w->ahead, n);
        atomic_store_explicit(
            &ld->hint_skips,
            atomic_load_explicit(&ld->ds->cached, memory_order_relaxed) ? HINT_PROBE_EVERY : 0,
            memory_order_relaxed);
    }
}

/* Fills items [lo, hi) of batch p into slot s. Returns 0 or the read error (message in msg). */
static int fill_range(gk_loader *ld, gk__worker *w, gk__slot *s, const gk__pos *p, int64_t seq,
                      size_t lo, size_t hi, uint64_t *bad, char *msg, size_t msglen)
{
    if (lo >= hi)
        return 0;
    const gk_sampler *smp = &ld->smp;
    gk__rank_items(ld, p->epoch, p->index * smp->batch_size + lo, hi - lo, s->indices + lo);
    gk_read_ctx rc = {.size = sizeof(gk_read_ctx),
                      .worker_state = w->state,
                      .worker = w->id,
                      .seed = smp->seed,
                      .epoch = p->epoch,
                      .err = msg,
                      .err_len = msglen,
                      .failed_index = s->indices[lo]};
    const gk_dataset_ops *ops = &ld->ds->ops;
    unsigned char *dst = s->host + lo * ld->item_size;
    int e = 0;
    uint64_t t0 = gk__loader_now_ns();
    atomic_store_explicit(&w->cur_seq, seq, memory_order_relaxed);
    if (ops->read_batch) {
        atomic_store_explicit(&w->cur_index, s->indices[lo], memory_order_relaxed);
        atomic_store_explicit(&w->read_start_ns, t0, memory_order_relaxed);
        e = ops->read_batch(ld->ds->ctx, &rc, s->indices + lo, hi - lo, dst);
        if (e)
            *bad = rc.failed_index;
    } else {
        for (size_t i = lo; i < hi && !e; i++) {
            uint64_t idx = s->indices[i];
            atomic_store_explicit(&w->cur_index, idx, memory_order_relaxed);
            atomic_store_explicit(&w->read_start_ns, gk__loader_now_ns(), memory_order_relaxed);
            e = ops->read_item(ld->ds->ctx, &rc, idx, gk_item_seed(smp->seed, p->epoch, idx),
                               dst + (i - lo) * ld->item_size);
            if (e)
                *bad = idx;
        }
    }
    atomic_store_explicit(&w->read_start_ns, 0, memory_order_relaxed);
    uint64_t dt = gk__loader_now_ns() - t0;
    gk__own_add(&w->st.busy_ns, dt);
    if (e && !msg[0])
        snprintf(msg, msglen, "%s: reading item %" PRIu64 ": %s", ld->ds->name, *bad,
                 gk_strerror(e));
    return e;
}

/* Issues the copy of a completed slot (edge b before it, the copy event after it). */
static int issue_copy(gk_loader *ld, gk__worker *w, gk__slot *s)
{
    gk_device *dev = ld->cfg.device;
    uint64_t t0 = gk__loader_now_ns();
    int e = 0;
    if (!(ld->cfg.test_drop_edges & GK_LOADER_DROP_EDGE_B))
        e = gk_stream_wait_event(dev, ld->copy, s->consumed);
    if (!e)
        e = gk_memcpy_htod_async(dev, s->dev, s->host, s->count * ld->item_size, ld->copy);
    if (!e)
        e = gk_event_record(dev, s->copied, ld->copy);
    if (e) {
        snprintf(s->msg, sizeof s->msg,
                 "%s: copying batch %" PRIu64 " of epoch %" PRIu64 " to the device: %s",
                 ld->ds->name, s->index, s->epoch, gk_last_error());
        s->err = e;
        s->err_index = s->count ? s->indices[0] : 0;
        return e;
    }
    s->copy_issued = 1;
    uint64_t dt = gk__loader_now_ns() - t0;
    gk__own_add(&w->st.copy_ns, dt);
    gk__own_max(&w->st.copy_max_ns, dt);
    return 0;
}

/* Fills part `part` of batch seq into its slot (free for it). The part that finishes last issues
 * the copy, marks the slot ready, then hints the batches up to K ahead. */
void gk__fill_part(gk_loader *ld, gk__worker *w, int64_t seq, unsigned part)
{
    gk__slot *s = &ld->slots[seq % ld->K];
    gk__pos p;
    gk__locate(ld, seq, &p);
    /* Not hinted yet (the first batches after create or seek): hint it and the K after it, so
     * their reads overlap instead of faulting one page at a time. */
    if (ld->readahead && seq > atomic_load_explicit(&ld->hinted, memory_order_relaxed))
        hint_upto(ld, w, seq + ld->K);
    char msg[512] = "";
    uint64_t bad = 0;
    int e = 0;
    /* Edge c: the copy out of this host slot (its previous batch) must be finished. */
    if (ld->cfg.device && s->copy_issued && !(ld->cfg.test_drop_edges & GK_LOADER_DROP_EDGE_C)) {
        e = gk_event_synchronize(ld->cfg.device, s->copied, ld->cfg.timeout);
        if (e)
            snprintf(msg, sizeof msg, "%s: waiting for the copy out of slot %d: %s", ld->ds->name,
                     (int)(seq % ld->K), gk_last_error());
    }
    size_t lo = p.count * part / ld->parts, hi = p.count * (part + 1) / ld->parts;
    uint64_t t0 = gk__loader_now_ns();
    if (!e)
        e = fill_range(ld, w, s, &p, seq, lo, hi, &bad, msg, sizeof msg);
    uint64_t fill = gk__loader_now_ns() - t0;
    if (e) {
        int none = 0;
        if (atomic_compare_exchange_strong_explicit(&s->err_claimed, &none, 1, memory_order_relaxed,
                                                    memory_order_relaxed)) {
            s->err = e;
            s->err_index = bad;
            snprintf(s->msg, sizeof s->msg, "%s", msg);
        }
    }
    if (ld->parts > 1) {
        /* acq_rel: the part that finishes last sees every other part's writes. */
        atomic_fetch_add_explicit(&s->fill_ns, fill, memory_order_relaxed);
        if (atomic_fetch_add_explicit(&s->parts_done, 1, memory_order_acq_rel) + 1 != ld->parts)
            return;
        fill = atomic_exchange_explicit(&s->fill_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&s->parts_done, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&s->err_claimed, 0, memory_order_relaxed);
    s->epoch = p.epoch;
    s->index = p.index;
    s->count = p.count;
    s->last = p.last;
    gk__own_add(&w->st.fill_ns, fill);
    gk__own_max(&w->st.fill_max_ns, fill);
    uint64_t avg = atomic_load_explicit(&ld->fill_avg_ns, memory_order_relaxed);
    atomic_store_explicit(&ld->fill_avg_ns, avg ? avg - avg / 8 + fill / 8 : fill,
                          memory_order_relaxed);
    if (ld->cfg.device && !s->err)
        issue_copy(ld, w, s);
    gk__publish_ready(ld, s, seq);
    if (ld->readahead)
        hint_upto(ld, w, seq + ld->K);
}

static void *worker_main(void *arg)
{
    gk__worker *w = arg;
    gk_loader *ld = w->ld;
    const gk_dataset_ops *ops = &ld->ds->ops;
    int rc = 0;
    if (ops->worker_open)
        rc = ops->worker_open(ld->ds->ctx, w->id, &w->state, w->open_msg, sizeof w->open_msg);
    pthread_mutex_lock(&ld->mu);
    w->open_rc = rc;
    w->open_done = 1;
    pthread_cond_broadcast(&ld->cv_open);
    pthread_mutex_unlock(&ld->mu);
    if (rc)
        return NULL;
    while (!atomic_load_explicit(&ld->halt, memory_order_acquire)) {
        uint64_t u = atomic_fetch_add_explicit(&ld->next_unit, 1, memory_order_relaxed);
        int64_t seq = (int64_t)(u / ld->parts);
        unsigned part = (unsigned)(u % ld->parts);
        if (seq >= ld->seq_end) {
            /* Past the configured epochs: park until stop (not counted as a sleeper, so the
             * consumer's releases do not wake it). */
            while (!atomic_load_explicit(&ld->halt, memory_order_acquire)) {
                uint32_t gen = atomic_load_explicit(&ld->wk_word, memory_order_seq_cst);
                if (!atomic_load_explicit(&ld->halt, memory_order_seq_cst))
                    gk__futex_wait(&ld->wk_word, gen, 1000000000ULL);
            }
            break;
        }
        /* No spinning here: a worker waiting for a free slot is ahead of the consumer, and a
         * spin would only take the CPU from it. */
        if (gk__wait_free(ld, w, &ld->slots[seq % ld->K], seq))
            break;
        gk__fill_part(ld, w, seq, part);
    }
    if (ops->worker_close)
        ops->worker_close(ld->ds->ctx, w->id, w->state);
    w->state = NULL;
    return NULL;
}

/* Starts the workers and waits until each has opened its dataset state. */
int gk__start_workers(gk_loader *ld, char *err, size_t errlen)
{
    int rc = 0;
    atomic_store(&ld->halt, 0);
    for (int i = 0; i < ld->nworkers; i++) {
        gk__worker *w = &ld->workers[i];
        w->open_done = 0;
        w->open_rc = 0;
        w->open_msg[0] = '\0';
        atomic_store(&w->cur_seq, -1);
        atomic_store(&w->read_start_ns, 0);
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e) {
            snprintf(err, errlen, "loader: cannot start worker %d: %s", i, strerror(e));
            return -e;
        }
        w->started = 1;
    }
    pthread_mutex_lock(&ld->mu);
    for (int i = 0; i < ld->nworkers; i++) {
        gk__worker *w = &ld->workers[i];
        while (!w->open_done)
            pthread_cond_wait(&ld->cv_open, &ld->mu);
        if (w->open_rc && !rc) {
            rc = w->open_rc;
            snprintf(err, errlen, "%s: worker_open of worker %d failed: %s", ld->ds->name, i,
                     w->open_msg[0] ? w->open_msg : gk_strerror(rc));
        }
    }
    pthread_mutex_unlock(&ld->mu);
    return rc;
}

/* Sets halt, wakes and joins every worker. */
void gk__join_workers(gk_loader *ld)
{
    atomic_store_explicit(&ld->halt, 1, memory_order_seq_cst);
    gk__wake_workers(ld);
    for (int i = 0; i < ld->nworkers; i++) {
        if (ld->workers[i].started) {
            pthread_join(ld->workers[i].thread, NULL);
            ld->workers[i].started = 0;
        }
    }
}

/* Waits for the copy stream so no copy touches a slot any more. */
void gk__drain_copies(gk_loader *ld)
{
    if (ld->cfg.device && ld->copy) {
        int e = gk_stream_synchronize(ld->cfg.device, ld->copy, ld->cfg.timeout);
        if (e)
            gk_log(&ld->cfg.logger, GK_LOG_WARN, "loader", "waiting for the copy stream: %s",
                   gk_last_error());
    }
}

/* --- create / destroy ------------------------------------------------------------------------ */

static void free_slots(gk_loader *ld)
{
    gk_device *dev = ld->cfg.device;
    for (int i = ld->K - 1; i >= 0; i--) {
        gk__slot *s = &ld->slots[i];
        if (s->consumed)
            gk_event_destroy(dev, s->consumed);
        if (s->copied)
            gk_event_destroy(dev, s->copied);
        if (s->dev) {
            if (ld->cfg.pool)
                gk_pool_free(ld->cfg.pool, s->dev);
            else
                gk_device_free(dev, s->dev);
        }
        free(s->indices);
        if (s->host) {
            if (dev)
                gk_device_host_free(dev, s->host);
            else
                free(s->host);
        }
    }
}

static void release_all(gk_loader *ld)
{
    gk__loader_metrics_stop(ld);
    for (int i = 0; ld->workers && i < ld->nworkers; i++)
        free(ld->workers[i].ahead);
    free(ld->workers);
    free(ld->consumer.ahead);
    if (ld->slots) {
        free_slots(ld);
        free(ld->slots);
    }
    if (ld->copy)
        gk_stream_destroy(ld->cfg.device, ld->copy);
    pthread_cond_destroy(&ld->cv_open);
    pthread_mutex_destroy(&ld->mu);
    free(ld);
}

static int alloc_slots(gk_loader *ld, char *err, size_t errlen)
{
    gk_device *dev = ld->cfg.device;
    /* Aligned: each slot's sequence numbers sit on cache lines of their own. */
    void *mem = NULL;
    if (gk__posix_memalign(&mem, GK__LINE, (size_t)ld->K * sizeof *ld->slots))
        goto out_nomem;
    ld->slots = mem;
    memset(ld->slots, 0, (size_t)ld->K * sizeof *ld->slots);
    if (dev) {
        int e = gk_stream_create(dev, &ld->copy);
        if (e) {
            snprintf(err, errlen, "loader: cannot create the copy stream: %s", gk_last_error());
            return e;
        }
    }
    for (int i = 0; i < ld->K; i++) {
        gk__slot *s = &ld->slots[i];
        atomic_init(&s->ready, (int64_t)i - ld->K);
        atomic_init(&s->freed, (int64_t)i - ld->K);
        s->indices = gk__calloc((size_t)ld->smp.batch_size, sizeof *s->indices);
        if (!s->indices)
            goto out_nomem;
        int e = 0;
        if (dev) {
            e = gk_device_host_alloc(dev, ld->slot_bytes, (void **)&s->host);
            if (e) {
                snprintf(err, errlen,
                         "loader: cannot allocate %zu bytes of pinned memory for "
                         "slot %d: %s",
                         ld->slot_bytes, i, gk_last_error());
                return e;
            }
            if (ld->cfg.pool) {
                e = gk_pool_malloc_tagged(ld->cfg.pool, ld->slot_bytes, ld->copy, "loader slot",
                                          &s->dev);
                if (e) {
                    snprintf(err, errlen,
                             "loader: cannot allocate device slot %d of %d (%zu bytes) from the "
                             "pool: %s; raise the pool's limit or lower depth or batch_size",
                             i, ld->K, ld->slot_bytes,
                             e == GK_EDEVOOM ? gk_strerror(e) : gk_last_error());
                    return e;
                }
            } else {
                e = gk_device_malloc(dev, ld->slot_bytes, &s->dev);
            }
            if (!e)
                e = gk_event_create(dev, &s->copied);
            if (!e)
                e = gk_event_create(dev, &s->consumed);
            if (e) {
                snprintf(err, errlen, "loader: cannot set up device slot %d (%zu bytes): %s", i,
                         ld->slot_bytes, gk_last_error());
                return e;
            }
        } else {
            void *p = NULL;
            if (gk__posix_memalign(&p, 4096, ld->slot_bytes))
                goto out_nomem;
            s->host = p;
        }
        /* Touch every page now so the first batches do not pay for page faults. */
        memset(s->host, 0, ld->slot_bytes);
    }
    return 0;
out_nomem:
    snprintf(err, errlen, "loader: out of memory for %d slots of %zu bytes", ld->K, ld->slot_bytes);
    return -ENOMEM;
}

int gk_loader_create(const gk_loader_config *cfg_in, gk_dataset *ds, gk_loader **out)
{
    char create_err[768] = "";
    if (!out)
        return gk__error(-EINVAL, "gk_loader_create: out is NULL");
    *out = NULL;
    if (!ds)
        return gk__error(-EINVAL, "gk_loader_create: dataset is NULL");
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    if (cfg_in && gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_loader_config") != 0)
        return -EINVAL;
    const char *bad = NULL;
    if (cfg.workers < -1 || cfg.workers > 256)
        bad = "workers must be -1 (one per usable CPU but the consumer's) or 0 to 256";
    else if (cfg.depth < 2 || cfg.depth > 1024)
        bad = "depth must be 2 to 1024";
    else if (cfg.on_error != GK_LOADER_FAIL && cfg.on_error != GK_LOADER_SKIP)
        bad = "on_error must be GK_LOADER_FAIL or GK_LOADER_SKIP";
    else if (!(cfg.timeout >= 0))
        bad = "timeout must be >= 0 seconds";
    else if (cfg.test_drop_edges & ~7u)
        bad = "test_drop_edges takes GK_LOADER_DROP_EDGE_* bits only";
    else if (cfg.pool && gk_pool_device(cfg.pool) != cfg.device)
        bad = "pool is not on the loader's device: set device to the pool's device";
    if (bad)
        return gk__error(-EINVAL, "loader config: %s", bad);
    /* Aligned: the fields the workers and the consumer share sit on cache lines of their own. */
    void *mem = NULL;
    if (gk__posix_memalign(&mem, GK__LINE, sizeof(gk_loader)))
        return gk__error(-ENOMEM, "loader: out of host memory");
    gk_loader *ld = mem;
    memset(ld, 0, sizeof *ld);
    ld->cfg = cfg;
    ld->ds = ds;
    ld->created_ns = ld->seek_ns = gk__loader_now_ns();
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv_open, NULL);
    atomic_init(&ld->cs_waiting, -1);
    atomic_init(&ld->cs_taken, -1);
    atomic_init(&ld->hinted, -1);
    int rc = gk_sampler_init(&ld->smp, ds->count, cfg.batch_size, cfg.seed, cfg.rank, cfg.world,
                             cfg.shuffle, cfg.shard_drop_last, cfg.drop_last, create_err,
                             sizeof create_err);
    if (rc)
        goto out_release;
    ld->item_size = ds->item_size;
    if (cfg.batch_size > SIZE_MAX / ds->item_size / 2) {
        snprintf(create_err, sizeof create_err,
                 "loader: batch of %llu items of %zu bytes is too "
                 "large",
                 (unsigned long long)cfg.batch_size, ds->item_size);
        rc = -EOVERFLOW;
        goto out_release;
    }
    ld->slot_bytes = (size_t)cfg.batch_size * ds->item_size;
    ld->K = cfg.depth;
    ld->cpus = gk__usable_cpus();
    /* -1: one worker per CPU this process may use, leaving one for the consumer. */
    ld->nworkers = cfg.workers >= 0 ? cfg.workers : ld->cpus > 1 ? ld->cpus - 1 : 1;
    if (ld->nworkers > 256)
        ld->nworkers = 256;
    /* Spinning helps only when every thread (workers and the consumer) has a CPU of its own
     * (affinity and cgroup quota counted); otherwise the spinning consumer keeps the worker that
     * fills its batch off the CPU. */
    ld->spin = ld->nworkers > 0 && ld->nworkers + 1 <= ld->cpus;
    ld->readahead = cfg.readahead && ds->ops.will_need && ds->item_size >= GK__READAHEAD_MIN_ITEM;
    ld->parts = 1;
    if (ld->nworkers > 1 && cfg.split_bytes && ld->slot_bytes >= cfg.split_bytes)
        ld->parts = (unsigned)(cfg.batch_size < (uint64_t)ld->nworkers ? cfg.batch_size
                                                                       : (uint64_t)ld->nworkers);
    gk__set_origin(ld, cfg.epoch, 0);
    snprintf(ld->name, sizeof ld->name, "%s", cfg.name ? cfg.name : "loader");
    rc = alloc_slots(ld, create_err, sizeof create_err);
    if (rc)
        goto out_release;
    ld->consumer.ld = ld;
    atomic_store(&ld->consumer.cur_seq, -1);
    if (ld->nworkers == 0) {
        ld->consumer.ahead = gk__calloc((size_t)cfg.batch_size, sizeof(uint64_t));
        if (!ld->consumer.ahead) {
            rc = -ENOMEM;
            snprintf(create_err, sizeof create_err, "loader: out of memory");
            goto out_release;
        }
        if (ds->ops.worker_open) {
            char msg[256] = "";
            rc = ds->ops.worker_open(ds->ctx, 0, &ld->consumer.state, msg, sizeof msg);
            if (rc) {
                snprintf(create_err, sizeof create_err, "%s: worker_open failed: %s", ds->name,
                         msg[0] ? msg : gk_strerror(rc));
                goto out_release;
            }
            ld->consumer_open = 1;
        }
    } else {
        void *wmem = NULL;
        if (gk__posix_memalign(&wmem, GK__LINE, (size_t)ld->nworkers * sizeof *ld->workers)) {
            rc = -ENOMEM;
            snprintf(create_err, sizeof create_err, "loader: out of memory");
            goto out_release;
        }
        ld->workers = wmem;
        memset(ld->workers, 0, (size_t)ld->nworkers * sizeof *ld->workers);
        for (int i = 0; i < ld->nworkers; i++) {
            ld->workers[i].ld = ld;
            ld->workers[i].id = i;
            ld->workers[i].ahead = gk__calloc((size_t)cfg.batch_size, sizeof(uint64_t));
            if (!ld->workers[i].ahead) {
                rc = -ENOMEM;
                snprintf(create_err, sizeof create_err, "loader: out of memory");
                goto out_release;
            }
        }
        rc = gk__start_workers(ld, create_err, sizeof create_err);
        if (rc)
            goto out_stop;
    }
    gk__loader_metrics_start(ld); /* best effort: the loader works without its series */
    *out = ld;
    return 0;
out_stop:
    gk__join_workers(ld);
out_release:
    release_all(ld);
    return gk__error(rc, "%s", create_err[0] ? create_err : gk_strerror(rc));
}

/* Records the release of every batch still held, on the stream it was delivered on. */
void gk__release_held(gk_loader *ld)
{
    for (int i = 0; i < ld->K; i++) {
        gk__slot *s = &ld->slots[i];
        if (atomic_load_explicit(&s->held, memory_order_relaxed) && ld->cfg.device)
            gk_event_record(ld->cfg.device, s->consumed, s->stream);
    }
}

/* Waits until the caller's work queued before each release is done, so freeing the device slots
 * cannot pull memory from under it. */
static void drain_releases(gk_loader *ld)
{
    if (!ld->cfg.device)
        return;
    for (int i = 0; i < ld->K; i++) {
        int e = gk_event_synchronize(ld->cfg.device, ld->slots[i].consumed, ld->cfg.timeout);
        if (e)
            gk_log(&ld->cfg.logger, GK_LOG_WARN, "loader",
                   "waiting for the caller's work on slot %d: %s", i, gk_last_error());
    }
}

void gk_loader_stop(gk_loader *ld)
{
    if (!ld || ld->stopped)
        return;
    gk__join_workers(ld);
    gk__release_held(ld);
    gk__drain_copies(ld);
    drain_releases(ld);
    if (ld->consumer_open) {
        ld->ds->ops.worker_close(ld->ds->ctx, 0, ld->consumer.state);
        ld->consumer_open = 0;
    }
    ld->stopped = 1;
}

void gk_loader_destroy(gk_loader *ld)
{
    if (!ld)
        return;
    gk_loader_stop(ld);
    release_all(ld);
}
