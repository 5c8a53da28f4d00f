/* The loader: a ring of K slots filled in order by worker threads (or by the consumer when there
 * are none), each slot a pre-touched host buffer plus, with a device, a device buffer, a copy event
 * and a release event that enforce the three ordering edges (see loader.h). One mutex guards the
 * slot states; device calls are made outside it. Lock order: ld->mu only (never held across a
 * dataset callback or a device call). */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_int.h"

typedef enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD } slot_state;

typedef struct slot {
    int64_t seq; /* the batch this slot holds or last held; starts at index - K */
    slot_state state;
    unsigned parts_done;
    uint64_t epoch, index;
    size_t count;
    int last;
    int err;
    uint64_t err_index;
    char msg[512];
    uint64_t fill_ns;
    unsigned char *host;
    void *dev;
    uint64_t *indices;
    gk_event *copied;   /* recorded on the copy stream after the copy out of host (edges a, c) */
    gk_event *consumed; /* recorded on the caller's stream at release (edge b) */
    int copy_issued;
    gk_stream *stream; /* the stream the batch was delivered on */
    /* The last batch made ready here, for the consumer's short spin before sleeping (a futex
     * sleep and wake costs more than a batch of small items). */
    _Atomic int64_t ready_seq;
} slot;

#define SPIN_ITERS 1000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Marks slot s free (under ld->mu). */
static void slot_set_free(slot *s)
{
    s->state = SLOT_FREE;
}

typedef struct worker {
    gk_loader *ld;
    int id;
    pthread_t thread;
    int started;
    int open_done, open_rc;
    char open_msg[256];
    void *state;
    uint64_t *ahead; /* scratch for read-ahead indices */
    _Atomic int64_t cur_seq;
    _Atomic uint64_t cur_index;
    _Atomic uint64_t read_start_ns; /* 0 when not inside a read */
} worker;

struct gk_loader {
    gk_loader_config cfg;
    gk_dataset *ds;
    gk_sampler smp;
    size_t item_size, slot_bytes;
    int K;
    unsigned parts;
    int spin; /* consumer spins before sleeping: 0 when the threads outnumber the CPUs */
    slot *slots;
    worker *workers;
    int nworkers;
    gk_stream *copy;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready;
    int stop, failed;
    char failed_msg[600];
    _Atomic uint64_t next_unit;
    uint64_t origin, end_pos;
    int64_t next_seq;
    int have_held;
    int64_t held_seq;
    int held_slot;
    worker consumer; /* the fill context when there are no workers */
    int consumer_open;
    int stopped;
    uint64_t created_ns, seek_ns;
    char last_error[768];
    struct {
        _Atomic uint64_t items, bytes, batches, skips, wait_ns, wait_max_ns, fill_ns, fill_max_ns,
            copy_ns, copy_max_ns, busy_ns, idle_ns, occupancy_sum, first_batch_ns;
        _Atomic uint64_t wait_hist[32];
    } st;
};

static _Thread_local char create_err[768];

const char *gk_loader_create_error(void)
{
    return create_err;
}

static void stat_add(_Atomic uint64_t *v, uint64_t x)
{
    atomic_fetch_add_explicit(v, x, memory_order_relaxed);
}

static void stat_max(_Atomic uint64_t *v, uint64_t x)
{
    uint64_t cur = atomic_load_explicit(v, memory_order_relaxed);
    while (cur < x && !atomic_compare_exchange_weak_explicit(v, &cur, x, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

static int set_error(gk_loader *ld, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int set_error(gk_loader *ld, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->last_error, sizeof ld->last_error, fmt, ap);
    va_end(ap);
    return rc;
}

void gk_loader_config_default(gk_loader_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    gk_logger_default(&cfg->logger);
    cfg->batch_size = 32;
    cfg->workers = 1;
    cfg->depth = 4;
    cfg->timeout = 300;
    cfg->on_error = GK_LOADER_FAIL;
    cfg->max_skips = 16;
    cfg->auto_release = 1;
    cfg->split_bytes = 4u << 20;
    cfg->readahead = 1;
    char err[256];
    if (gk_loader_rank_from_env(&cfg->rank, &cfg->world, err, sizeof err))
        gk_log(&cfg->logger, GK_LOG_WARN, "loader", "%s; using rank 0 of 1", err);
}

static void abs_deadline(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (seconds > 1e9)
        seconds = 1e9;
    double whole = (double)(time_t)seconds;
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* --- filling ------------------------------------------------------------------------------ */

/* Starts slot s for batch seq (under ld->mu). */
static void slot_begin(gk_loader *ld, slot *s, int64_t seq)
{
    uint64_t pos = ld->origin + (uint64_t)seq;
    s->seq = seq;
    s->state = SLOT_FILLING;
    s->parts_done = 0;
    s->err = 0;
    s->msg[0] = '\0';
    s->fill_ns = 0;
    s->epoch = pos / ld->smp.batches;
    s->index = pos % ld->smp.batches;
    s->last = s->index + 1 == ld->smp.batches;
    uint64_t first = s->index * ld->smp.batch_size;
    uint64_t left = ld->smp.per_rank - first;
    s->count = (size_t)(left < ld->smp.batch_size ? left : ld->smp.batch_size);
}

/* Fills items [lo, hi) of slot s. Returns 0 or the read error (message in msg). */
static int fill_range(gk_loader *ld, worker *w, slot *s, size_t lo, size_t hi, uint64_t *bad,
                      char *msg, size_t msglen)
{
    if (lo >= hi)
        return 0;
    const gk_sampler *smp = &ld->smp;
    uint64_t first = s->index * smp->batch_size;
    for (size_t i = lo; i < hi; i++)
        s->indices[i] = gk_sampler_rank_item(smp, s->epoch, first + i);
    gk_read_ctx rc = {.worker_state = w->state,
                      .worker = w->id,
                      .seed = smp->seed,
                      .epoch = s->epoch,
                      .err = msg,
                      .err_len = msglen,
                      .failed_index = s->indices[lo]};
    const gk_dataset_ops *ops = &ld->ds->ops;
    unsigned char *dst = s->host + lo * ld->item_size;
    int e = 0;
    uint64_t t0 = gk__loader_now_ns();
    atomic_store_explicit(&w->cur_seq, s->seq, memory_order_relaxed);
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
            e = ops->read_item(ld->ds->ctx, &rc, idx, gk_item_seed(smp->seed, s->epoch, idx),
                               dst + (i - lo) * ld->item_size);
            if (e)
                *bad = idx;
        }
    }
    atomic_store_explicit(&w->read_start_ns, 0, memory_order_relaxed);
    uint64_t dt = gk__loader_now_ns() - t0;
    stat_add(&ld->st.busy_ns, dt);
    if (e && !msg[0])
        snprintf(msg, msglen, "%s: reading item %" PRIu64 ": %s", ld->ds->name, *bad,
                 gk_strerror(e));
    return e;
}

/* Issues the copy of a completed slot (edge b before it, the copy event after it). */
static int issue_copy(gk_loader *ld, slot *s)
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
                 ld->ds->name, s->index, s->epoch, gk_device_last_error(dev));
        s->err = e;
        s->err_index = s->count ? s->indices[0] : 0;
        return e;
    }
    s->copy_issued = 1;
    uint64_t dt = gk__loader_now_ns() - t0;
    stat_add(&ld->st.copy_ns, dt);
    stat_max(&ld->st.copy_max_ns, dt);
    return 0;
}

/* Fills part `part` of batch seq into its slot (the caller has begun the slot). When it is the
 * last part, issues the copy and marks the slot ready. */
static void fill_part(gk_loader *ld, worker *w, int64_t seq, unsigned part)
{
    slot *s = &ld->slots[seq % ld->K];
    char msg[512] = "";
    uint64_t bad = 0;
    int e = 0;
    /* Edge c: the copy out of this host slot (its previous batch) must be finished. */
    if (ld->cfg.device && s->copy_issued && !(ld->cfg.test_drop_edges & GK_LOADER_DROP_EDGE_C)) {
        e = gk_event_synchronize(ld->cfg.device, s->copied, ld->cfg.timeout);
        if (e)
            snprintf(msg, sizeof msg, "%s: waiting for the copy out of slot %d: %s", ld->ds->name,
                     (int)(seq % ld->K), gk_device_last_error(ld->cfg.device));
    }
    size_t lo = s->count * part / ld->parts, hi = s->count * (part + 1) / ld->parts;
    uint64_t t0 = gk__loader_now_ns();
    if (!e)
        e = fill_range(ld, w, s, lo, hi, &bad, msg, sizeof msg);
    uint64_t dt = gk__loader_now_ns() - t0;
    pthread_mutex_lock(&ld->mu);
    s->fill_ns += dt;
    if (e && !s->err) {
        s->err = e;
        s->err_index = bad;
        snprintf(s->msg, sizeof s->msg, "%s", msg);
    }
    int complete = ++s->parts_done == ld->parts;
    pthread_mutex_unlock(&ld->mu);
    if (!complete)
        return;
    stat_add(&ld->st.fill_ns, s->fill_ns);
    stat_max(&ld->st.fill_max_ns, s->fill_ns);
    if (ld->cfg.device && !s->err)
        issue_copy(ld, s);
    if (!s->err && ld->cfg.readahead && ld->ds->ops.will_need && ld->item_size >= 4096 &&
        w->ahead) {
        uint64_t pos = ld->origin + (uint64_t)seq + (uint64_t)ld->K;
        if (pos < ld->end_pos) {
            size_t n =
                gk_sampler_batch(&ld->smp, pos / ld->smp.batches, pos % ld->smp.batches, w->ahead);
            ld->ds->ops.will_need(ld->ds->ctx, w->ahead, n);
        }
    }
    pthread_mutex_lock(&ld->mu);
    s->state = SLOT_READY;
    atomic_store_explicit(&s->ready_seq, s->seq, memory_order_release);
    pthread_mutex_unlock(&ld->mu);
    /* After unlocking: a woken consumer does not then block on the mutex. Safe because a waiter
     * checks the state and starts waiting under the mutex. */
    pthread_cond_broadcast(&ld->cv_ready);
}

static int slot_free_for(const gk_loader *ld, const slot *s, int64_t seq)
{
    return s->state == SLOT_FREE && s->seq + ld->K == seq;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    gk_loader *ld = w->ld;
    const gk_dataset_ops *ops = &ld->ds->ops;
    int rc = 0;
    if (ops->worker_open)
        rc = ops->worker_open(ld->ds->ctx, w->id, &w->state, w->open_msg, sizeof w->open_msg);
    pthread_mutex_lock(&ld->mu);
    w->open_rc = rc;
    w->open_done = 1;
    pthread_cond_broadcast(&ld->cv_ready);
    pthread_mutex_unlock(&ld->mu);
    if (rc)
        return NULL;
    for (;;) {
        uint64_t u = atomic_fetch_add(&ld->next_unit, 1);
        int64_t seq = (int64_t)(u / ld->parts);
        unsigned part = (unsigned)(u % ld->parts);
        slot *s = &ld->slots[seq % ld->K];
        /* No spinning here: a worker waiting for a free slot is ahead of the consumer, and a spin
         * would only take the CPU from it. */
        uint64_t idle0 = gk__loader_now_ns();
        pthread_mutex_lock(&ld->mu);
        if (ld->origin + (uint64_t)seq >= ld->end_pos) {
            while (!ld->stop)
                pthread_cond_wait(&ld->cv_work, &ld->mu);
        }
        while (!ld->stop && !ld->failed && s->seq != seq && !slot_free_for(ld, s, seq))
            pthread_cond_wait(&ld->cv_work, &ld->mu);
        if (ld->stop || ld->failed) {
            pthread_mutex_unlock(&ld->mu);
            break;
        }
        if (s->seq != seq)
            slot_begin(ld, s, seq);
        pthread_mutex_unlock(&ld->mu);
        stat_add(&ld->st.idle_ns, gk__loader_now_ns() - idle0);
        fill_part(ld, w, seq, part);
    }
    if (ops->worker_close)
        ops->worker_close(ld->ds->ctx, w->id, w->state);
    w->state = NULL;
    return NULL;
}

/* Starts the workers and waits until each has opened its dataset state. */
static int start_workers(gk_loader *ld, char *err, size_t errlen)
{
    int rc = 0;
    for (int i = 0; i < ld->nworkers; i++) {
        worker *w = &ld->workers[i];
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
        worker *w = &ld->workers[i];
        while (!w->open_done)
            pthread_cond_wait(&ld->cv_ready, &ld->mu);
        if (w->open_rc && !rc) {
            rc = w->open_rc;
            snprintf(err, errlen, "%s: worker_open of worker %d failed: %s", ld->ds->name, i,
                     w->open_msg[0] ? w->open_msg : gk_strerror(rc));
        }
    }
    pthread_mutex_unlock(&ld->mu);
    return rc;
}

/* Sets stop, wakes and joins every worker. */
static void join_workers(gk_loader *ld)
{
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    pthread_cond_broadcast(&ld->cv_work);
    pthread_cond_broadcast(&ld->cv_ready);
    pthread_mutex_unlock(&ld->mu);
    for (int i = 0; i < ld->nworkers; i++) {
        if (ld->workers[i].started) {
            pthread_join(ld->workers[i].thread, NULL);
            ld->workers[i].started = 0;
        }
    }
}

/* Waits for the copy stream so no copy touches a slot any more. */
static void drain_copies(gk_loader *ld)
{
    if (ld->cfg.device && ld->copy) {
        int e = gk_stream_synchronize(ld->cfg.device, ld->copy, ld->cfg.timeout);
        if (e)
            gk_log(&ld->cfg.logger, GK_LOG_WARN, "loader", "waiting for the copy stream: %s",
                   gk_device_last_error(ld->cfg.device));
    }
}

/* --- create / destroy ------------------------------------------------------------------------ */

static void free_slots(gk_loader *ld)
{
    gk_device *dev = ld->cfg.device;
    for (int i = ld->K - 1; i >= 0; i--) {
        slot *s = &ld->slots[i];
        if (s->consumed)
            gk_event_destroy(dev, s->consumed);
        if (s->copied)
            gk_event_destroy(dev, s->copied);
        if (s->dev)
            gk_device_free(dev, s->dev);
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
    for (int i = 0; i < ld->nworkers; i++)
        free(ld->workers[i].ahead);
    free(ld->workers);
    free(ld->consumer.ahead);
    if (ld->slots) {
        free_slots(ld);
        free(ld->slots);
    }
    if (ld->copy)
        gk_stream_destroy(ld->cfg.device, ld->copy);
    pthread_cond_destroy(&ld->cv_ready);
    pthread_cond_destroy(&ld->cv_work);
    pthread_mutex_destroy(&ld->mu);
    free(ld);
}

static int alloc_slots(gk_loader *ld, char *err, size_t errlen)
{
    gk_device *dev = ld->cfg.device;
    ld->slots = calloc((size_t)ld->K, sizeof *ld->slots);
    if (!ld->slots)
        goto out_nomem;
    if (dev) {
        int e = gk_stream_create(dev, &ld->copy);
        if (e) {
            snprintf(err, errlen, "loader: cannot create the copy stream: %s",
                     gk_device_last_error(dev));
            return e;
        }
    }
    for (int i = 0; i < ld->K; i++) {
        slot *s = &ld->slots[i];
        s->seq = i - ld->K;
        s->state = SLOT_FREE;
        atomic_init(&s->ready_seq, INT64_MIN);
        s->indices = calloc((size_t)ld->smp.batch_size, sizeof *s->indices);
        if (!s->indices)
            goto out_nomem;
        int e = 0;
        if (dev) {
            e = gk_device_host_alloc(dev, ld->slot_bytes, (void **)&s->host);
            if (e) {
                snprintf(err, errlen,
                         "loader: cannot allocate %zu bytes of pinned memory for "
                         "slot %d: %s",
                         ld->slot_bytes, i, gk_device_last_error(dev));
                return e;
            }
            e = gk_device_malloc(dev, ld->slot_bytes, &s->dev);
            if (!e)
                e = gk_event_create(dev, &s->copied);
            if (!e)
                e = gk_event_create(dev, &s->consumed);
            if (e) {
                snprintf(err, errlen, "loader: cannot set up device slot %d (%zu bytes): %s", i,
                         ld->slot_bytes, gk_device_last_error(dev));
                return e;
            }
        } else {
            void *p = NULL;
            if (posix_memalign(&p, 4096, ld->slot_bytes))
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
    create_err[0] = '\0';
    if (!out) {
        snprintf(create_err, sizeof create_err, "gk_loader_create: out is NULL");
        return -EINVAL;
    }
    *out = NULL;
    if (!ds) {
        snprintf(create_err, sizeof create_err, "gk_loader_create: dataset is NULL");
        return -EINVAL;
    }
    gk_loader_config cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        gk_loader_config_default(&cfg);
    const char *bad = NULL;
    if (cfg.workers < 0 || cfg.workers > 256)
        bad = "workers must be 0 to 256";
    else if (cfg.depth < 2 || cfg.depth > 1024)
        bad = "depth must be 2 to 1024";
    else if (cfg.on_error != GK_LOADER_FAIL && cfg.on_error != GK_LOADER_SKIP)
        bad = "on_error must be GK_LOADER_FAIL or GK_LOADER_SKIP";
    else if (!(cfg.timeout >= 0))
        bad = "timeout must be >= 0 seconds";
    else if (cfg.test_drop_edges & ~7u)
        bad = "test_drop_edges takes GK_LOADER_DROP_EDGE_* bits only";
    if (bad) {
        snprintf(create_err, sizeof create_err, "loader config: %s", bad);
        return -EINVAL;
    }
    gk_loader *ld = calloc(1, sizeof *ld);
    if (!ld) {
        snprintf(create_err, sizeof create_err, "loader: out of memory");
        return -ENOMEM;
    }
    ld->cfg = cfg;
    ld->ds = ds;
    ld->created_ns = ld->seek_ns = gk__loader_now_ns();
    /* Adaptive: spins briefly on a held mutex before sleeping; the critical sections are short. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&ld->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ld->cv_work, &ca);
    pthread_cond_init(&ld->cv_ready, &ca);
    pthread_condattr_destroy(&ca);
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
    ld->nworkers = cfg.workers;
    /* Spinning helps only when every thread (workers and the consumer) has a CPU; otherwise the
     * spinning consumer keeps the worker that fills its batch off the CPU. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ld->spin = cfg.workers + 1 <= cpus ? SPIN_ITERS : 0;
    ld->parts = 1;
    if (cfg.workers > 1 && cfg.split_bytes && ld->slot_bytes >= cfg.split_bytes)
        ld->parts = (unsigned)(cfg.batch_size < (uint64_t)cfg.workers ? cfg.batch_size
                                                                      : (uint64_t)cfg.workers);
    ld->origin = cfg.epoch * ld->smp.batches;
    ld->end_pos = cfg.epochs ? (cfg.epoch + cfg.epochs) * ld->smp.batches : UINT64_MAX;
    rc = alloc_slots(ld, create_err, sizeof create_err);
    if (rc)
        goto out_release;
    ld->consumer.ld = ld;
    atomic_store(&ld->consumer.cur_seq, -1);
    if (ld->nworkers == 0) {
        ld->consumer.ahead = calloc((size_t)cfg.batch_size, sizeof(uint64_t));
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
        ld->workers = calloc((size_t)ld->nworkers, sizeof *ld->workers);
        if (!ld->workers) {
            rc = -ENOMEM;
            snprintf(create_err, sizeof create_err, "loader: out of memory");
            goto out_release;
        }
        for (int i = 0; i < ld->nworkers; i++) {
            ld->workers[i].ld = ld;
            ld->workers[i].id = i;
            ld->workers[i].ahead = calloc((size_t)cfg.batch_size, sizeof(uint64_t));
            if (!ld->workers[i].ahead) {
                rc = -ENOMEM;
                snprintf(create_err, sizeof create_err, "loader: out of memory");
                goto out_release;
            }
        }
        rc = start_workers(ld, create_err, sizeof create_err);
        if (rc)
            goto out_stop;
    }
    *out = ld;
    return 0;
out_stop:
    join_workers(ld);
out_release:
    release_all(ld);
    return rc;
}

/* Records the release of every batch still held, on the stream it was delivered on. */
static void release_held(gk_loader *ld)
{
    for (int i = 0; i < ld->K; i++) {
        slot *s = &ld->slots[i];
        if (s->state == SLOT_HELD && ld->cfg.device)
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
                   "waiting for the caller's work on slot %d: %s", i,
                   gk_device_last_error(ld->cfg.device));
    }
}

void gk_loader_stop(gk_loader *ld)
{
    if (!ld || ld->stopped)
        return;
    join_workers(ld);
    release_held(ld);
    drain_copies(ld);
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

/* --- consumer side -------------------------------------------------------------------------- */

static int release_slot(gk_loader *ld, slot *s, gk_stream *stream)
{
    int e = 0;
    if (ld->cfg.device)
        e = gk_event_record(ld->cfg.device, s->consumed, stream);
    pthread_mutex_lock(&ld->mu);
    slot_set_free(s);
    if (ld->have_held && ld->held_seq == s->seq)
        ld->have_held = 0;
    pthread_mutex_unlock(&ld->mu);
    pthread_cond_broadcast(&ld->cv_work); /* after unlocking, as in fill_part */
    if (e)
        return set_error(ld, e, "loader: recording the release of batch %" PRIu64 ": %s", s->index,
                         gk_device_last_error(ld->cfg.device));
    return 0;
}

int gk_loader_release(gk_loader *ld, const gk_batch *b, gk_stream *stream)
{
    if (!ld || !b)
        return -EINVAL;
    if (b->slot < 0 || b->slot >= ld->K)
        return set_error(ld, -EINVAL,
                         "loader: release of a batch with slot %d (not a batch of "
                         "this loader)",
                         b->slot);
    slot *s = &ld->slots[b->slot];
    pthread_mutex_lock(&ld->mu);
    int ok = s->state == SLOT_HELD && s->seq == (int64_t)b->seq;
    pthread_mutex_unlock(&ld->mu);
    if (!ok)
        return set_error(ld, -EINVAL,
                         "loader: batch %" PRIu64 " (epoch %" PRIu64 ", batch %" PRIu64
                         ") is not held: released twice or never delivered",
                         b->seq, b->epoch, b->index);
    return release_slot(ld, s, stream);
}

static void timeout_diag(gk_loader *ld, int64_t seq, double waited)
{
    slot *s = &ld->slots[seq % ld->K];
    uint64_t pos = ld->origin + (uint64_t)seq;
    char what[400] = "";
    uint64_t now = gk__loader_now_ns();
    for (int i = 0; i < ld->nworkers; i++) {
        worker *w = &ld->workers[i];
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
        if (s->seq == seq && s->state == SLOT_FILLING)
            snprintf(what, sizeof what, "its slot is being filled (%u of %u parts done)",
                     s->parts_done, ld->parts);
        else if (s->seq + ld->K == seq && s->state == SLOT_HELD)
            snprintf(what, sizeof what, "its slot %d still holds unreleased batch %" PRId64,
                     (int)(seq % ld->K), s->seq);
        else
            snprintf(what, sizeof what, "no worker has started it yet");
    }
    set_error(ld, -ETIMEDOUT,
              "loader: batch %" PRId64 " (epoch %" PRIu64 ", batch %" PRIu64
              ") not ready after %.3f s: %s",
              seq, pos / ld->smp.batches, pos % ld->smp.batches, waited, what);
}

/* Waits (under ld->mu) until slot s holds batch seq ready. */
static int wait_ready(gk_loader *ld, slot *s, int64_t seq, double timeout)
{
    struct timespec dl;
    abs_deadline(&dl, timeout);
    while (!(s->seq == seq && s->state == SLOT_READY)) {
        if (ld->stop)
            return -ECANCELED;
        if (s->state == SLOT_HELD && s->seq + ld->K == seq)
            return set_error(ld, -EBUSY,
                             "loader: every slot is held; release a batch before "
                             "asking for the next (depth %d)",
                             ld->K);
        if (timeout <= 0 || pthread_cond_timedwait(&ld->cv_ready, &ld->mu, &dl) == ETIMEDOUT) {
            if (s->seq == seq && s->state == SLOT_READY)
                break;
            timeout_diag(ld, seq, timeout);
            return -ETIMEDOUT;
        }
    }
    return 0;
}

/* Fills batch seq on the consumer thread (no workers). Called without ld->mu. */
static int consumer_fill(gk_loader *ld, slot *s, int64_t seq)
{
    pthread_mutex_lock(&ld->mu);
    if (s->seq != seq) {
        if (!slot_free_for(ld, s, seq)) {
            pthread_mutex_unlock(&ld->mu);
            return set_error(ld, -EBUSY,
                             "loader: every slot is held; release a batch before "
                             "asking for the next (depth %d)",
                             ld->K);
        }
        slot_begin(ld, s, seq);
    }
    pthread_mutex_unlock(&ld->mu);
    if (s->state == SLOT_FILLING)
        fill_part(ld, &ld->consumer, seq, 0);
    return 0;
}

int gk_loader_next(gk_loader *ld, gk_stream *stream, double timeout, gk_batch *b)
{
    if (!ld || !b)
        return -EINVAL;
    if (ld->stopped)
        return set_error(ld, -ECANCELED, "loader: stopped");
    if (ld->failed)
        return set_error(ld, ld->failed, "%s", ld->failed_msg);
    if (timeout < 0)
        timeout = ld->cfg.timeout;
    if (ld->cfg.auto_release && ld->have_held) {
        slot *h = &ld->slots[ld->held_slot];
        int e = release_slot(ld, h, h->stream);
        if (e)
            return e;
    }
    uint64_t t0 = gk__loader_now_ns();
    for (;;) {
        int64_t seq = ld->next_seq;
        if (ld->origin + (uint64_t)seq >= ld->end_pos)
            return GK_LOADER_END;
        slot *s = &ld->slots[seq % ld->K];
        if (ld->nworkers == 0) {
            int e = consumer_fill(ld, s, seq);
            if (e)
                return e;
        } else {
            for (int i = 0; i < ld->spin; i++) {
                if (atomic_load_explicit(&s->ready_seq, memory_order_acquire) == seq)
                    break;
                cpu_relax();
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
            ready += ld->slots[i].state == SLOT_READY;
        if (s->err) {
            if (ld->cfg.on_error == GK_LOADER_SKIP &&
                atomic_load(&ld->st.skips) < ld->cfg.max_skips) {
                gk_log(&ld->cfg.logger, GK_LOG_WARN, "loader",
                       "skipping batch %" PRIu64 " of epoch %" PRIu64 ": %s", s->index, s->epoch,
                       s->msg);
                stat_add(&ld->st.skips, 1);
                slot_set_free(s);
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
            return set_error(ld, ld->failed, "%s", ld->failed_msg);
        }
        s->state = SLOT_HELD;
        s->stream = stream;
        ld->next_seq++;
        ld->have_held = 1;
        ld->held_seq = seq;
        ld->held_slot = (int)(seq % ld->K);
        pthread_mutex_unlock(&ld->mu);
        if (ld->cfg.device && !(ld->cfg.test_drop_edges & GK_LOADER_DROP_EDGE_A)) {
            e = gk_stream_wait_event(ld->cfg.device, stream, s->copied);
            if (e) {
                pthread_mutex_lock(&ld->mu);
                s->state = SLOT_READY;
                ld->have_held = 0;
                ld->next_seq--;
                pthread_mutex_unlock(&ld->mu);
                return set_error(ld, e, "loader: making the stream wait for batch %" PRIu64 ": %s",
                                 s->index, gk_device_last_error(ld->cfg.device));
            }
        }
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
        stat_add(&ld->st.items, s->count);
        stat_add(&ld->st.bytes, b->bytes);
        stat_add(&ld->st.wait_ns, w);
        stat_max(&ld->st.wait_max_ns, w);
        stat_add(&ld->st.occupancy_sum, ready);
        unsigned bucket = 0;
        for (uint64_t us = w / 1000; us && bucket < 31; us >>= 1)
            bucket++;
        stat_add(&ld->st.wait_hist[bucket], 1);
        stat_add(&ld->st.batches, 1);
        if (!atomic_load(&ld->st.first_batch_ns))
            atomic_store(&ld->st.first_batch_ns, now - ld->seek_ns);
        return 0;
    }
}

/* --- position ------------------------------------------------------------------------------- */

int gk_loader_get_state(gk_loader *ld, gk_loader_state *st)
{
    if (!ld || !st)
        return -EINVAL;
    pthread_mutex_lock(&ld->mu);
    int64_t done = ld->next_seq;
    for (int i = 0; i < ld->K; i++)
        if (ld->slots[i].state == SLOT_HELD && ld->slots[i].seq < done)
            done = ld->slots[i].seq;
    pthread_mutex_unlock(&ld->mu);
    uint64_t pos = ld->origin + (uint64_t)done;
    memset(st, 0, sizeof *st);
    st->version = GK_LOADER_STATE_VERSION;
    st->flags = (uint32_t)(ld->smp.shuffle | ld->smp.drop_last << 1 | ld->smp.shard_drop_last << 2);
    st->seed = ld->smp.seed;
    st->epoch = pos / ld->smp.batches;
    st->batch = pos % ld->smp.batches;
    st->count = ld->smp.count;
    st->batch_size = ld->smp.batch_size;
    st->world = ld->smp.world;
    st->rank = ld->smp.rank;
    return 0;
}

int gk_loader_seek(gk_loader *ld, uint64_t epoch, uint64_t batch)
{
    if (!ld)
        return -EINVAL;
    if (ld->stopped)
        return set_error(ld, -ECANCELED, "loader: stopped");
    if (batch >= ld->smp.batches)
        return set_error(ld, -EINVAL,
                         "loader: batch %" PRIu64 " is past the epoch (%" PRIu64
                         " batches per epoch)",
                         batch, ld->smp.batches);
    join_workers(ld);
    /* Outstanding batches count as released on the stream they were delivered on. */
    release_held(ld);
    drain_copies(ld);
    for (int i = 0; i < ld->K; i++) {
        ld->slots[i].seq = i - ld->K;
        slot_set_free(&ld->slots[i]);
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
    int rc = start_workers(ld, err, sizeof err);
    if (rc) {
        join_workers(ld);
        ld->failed = rc;
        snprintf(ld->failed_msg, sizeof ld->failed_msg, "%s", err);
        return set_error(ld, rc, "%s", err);
    }
    return 0;
}

int gk_loader_set_epoch(gk_loader *ld, uint64_t epoch)
{
    return gk_loader_seek(ld, epoch, 0);
}

int gk_loader_restore(gk_loader *ld, const gk_loader_state *st)
{
    if (!ld || !st)
        return -EINVAL;
    if (st->version != GK_LOADER_STATE_VERSION)
        return set_error(ld, GK_EVERSION,
                         "loader state: version %u is not supported (this gpukit "
                         "writes %d)",
                         st->version, GK_LOADER_STATE_VERSION);
    gk_loader_state cur;
    gk_loader_get_state(ld, &cur);
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
        return set_error(ld, GK_EMISMATCH,
                         "loader state: saved %s is %" PRIu64 " but this loader "
                         "has %" PRIu64 " (restore with the configuration that saved it)",
                         field, saved, have);
    if (st->batch >= ld->smp.batches)
        return set_error(ld, GK_EMISMATCH,
                         "loader state: batch %" PRIu64 " is past the epoch (%" PRIu64 " batches)",
                         st->batch, ld->smp.batches);
    return gk_loader_seek(ld, st->epoch, st->batch);
}

uint64_t gk_loader_batches_per_epoch(const gk_loader *ld)
{
    return ld ? ld->smp.batches : 0;
}

const char *gk_loader_last_error(const gk_loader *ld)
{
    return ld ? ld->last_error : "";
}

int gk_loader_get_stats(gk_loader *ld, gk_loader_stats *out)
{
    if (!ld || !out)
        return -EINVAL;
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
        out->ring_ready += ld->slots[i].state == SLOT_READY;
    pthread_mutex_unlock(&ld->mu);
    out->depth = (uint32_t)ld->K;
    out->uptime_ns = gk__loader_now_ns() - ld->created_ns;
    return 0;
}
