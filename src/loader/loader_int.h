/* Private pieces shared by the loader's files: the dataset object, thread-local error text, the
 * small hash used by the sampler, and the loader's state shared by ring.c, handoff.c, position.c
 * and consumer.c. */
#ifndef GK_LOADER_INT_H
#define GK_LOADER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "gpukit/loader.h"

struct gk_dataset {
    gk_dataset_ops ops;
    void *ctx;
    uint64_t count;
    size_t item_size;
    uint32_t token_bytes; /* token datasets only */
    /* Set by a built-in dataset's will_need when its probe found the hinted items already in the
     * page cache (0 when they were not): the loader then computes hints less often. */
    _Atomic int cached;
    char name[256];
};

/* Sets the thread's message (gk_last_error, printf-style); returns rc. */
int gk__dataset_fail(int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* SplitMix64 finalizer: a fast 64-bit mixing function. */
static inline uint64_t gk__mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Header parsers over bytes already read (`got` of them) from a file of `file_size` bytes named
 * `path` (for messages). Same returns as gk_records_inspect / gk_tokens_inspect. */
int gk__records_parse(const char *path, const unsigned char *h, size_t got, uint64_t file_size,
                      gk_records_info *info, char *err, size_t len);
int gk__tokens_parse(const char *path, const unsigned char *h, size_t got, uint64_t file_size,
                     gk_tokens_info *info, char *err, size_t len);

/* The sampler's permutation with the epoch's key computed once (gk__sampler_key) for many
 * positions: gk_sampler_permute(s, epoch, pos) == gk__sampler_permute_keyed(s, key, pos). */
uint64_t gk__sampler_key(const gk_sampler *s, uint64_t epoch);
uint64_t gk__sampler_permute_keyed(const gk_sampler *s, uint64_t key, uint64_t pos);

/* Monotonic clock in nanoseconds. */
uint64_t gk__loader_now_ns(void);

/* --- the loader's state, shared by ring.c (workers, filling, create/destroy), handoff.c (the
 * lock-free handoff between workers and the consumer), position.c (where each delivery falls) and
 * consumer.c (next, release, position, statistics).
 *
 * Handoff. Slot s carries batches s, s+K, s+2K, ... Two sequence numbers on cache lines of their
 * own say where it is: `ready` (the last batch made ready there; stored with release by the
 * worker that finishes it, loaded with acquire by the consumer) and `freed` (the last batch the
 * consumer released or skipped there; stored with release by the consumer, loaded with acquire by
 * the workers). Slot s may start batch seq when freed == seq - K; batch seq may be delivered when
 * ready == seq. Between ready and freed the slot belongs to the consumer; between freed and ready
 * to the worker(s) filling it. No mutex is taken on either path. A side that must wait spins
 * (only when every thread has a CPU, for about one fill time) and then sleeps on a futex; the
 * other side makes the futex call only when a sleeper flag says someone sleeps. ------------- */

#define GK__LINE 64

/* Every one of these is written by one thread only (its owner) and summed when read. */
typedef struct gk__tstats {
    _Atomic uint64_t busy_ns, idle_ns, fill_ns, fill_max_ns, copy_ns, copy_max_ns;
} gk__tstats;

static inline void gk__own_add(_Atomic uint64_t *v, uint64_t x)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + x,
                          memory_order_relaxed);
}

static inline void gk__own_max(_Atomic uint64_t *v, uint64_t x)
{
    if (x > atomic_load_explicit(v, memory_order_relaxed))
        atomic_store_explicit(v, x, memory_order_relaxed);
}

typedef struct gk__slot {
    _Alignas(GK__LINE) _Atomic int64_t ready; /* last batch made ready here */
    _Alignas(GK__LINE) _Atomic int64_t freed; /* last batch released or skipped here */
    /* The batch being filled: parts finished, whether a part's error is recorded, fill time. */
    _Alignas(GK__LINE) _Atomic unsigned parts_done;
    _Atomic int err_claimed;
    _Atomic uint64_t fill_ns;
    /* The batch: written by its filler(s) before `ready`, read by the consumer after. */
    uint64_t epoch, index;
    size_t count;
    int last;
    int err;
    uint64_t err_index;
    char msg[512];
    unsigned char *host;
    void *dev;
    uint64_t *indices;
    gk_event *copied;   /* recorded on the copy stream after the copy out of host (edges a, c) */
    gk_event *consumed; /* recorded on the caller's stream at release (edge b) */
    int copy_issued;
    /* Consumer side: held by the caller (atomic only so get_stats may read it from any thread),
     * and the stream the batch was delivered on. */
    _Atomic int held;
    gk_stream *stream;
} gk__slot;

static inline void gk__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef struct gk__worker {
    _Alignas(GK__LINE) gk_loader *ld;
    int id;
    pthread_t thread;
    int started;
    int open_done, open_rc;
    char open_msg[256];
    void *state;
    uint64_t *ahead; /* scratch for read-ahead indices: K batches */
    _Atomic int64_t cur_seq;
    _Atomic uint64_t cur_index;
    _Atomic uint64_t read_start_ns; /* 0 when not inside a read */
    gk__tstats st;
} gk__worker;

/* Where a delivery falls: epoch, batch number in it, items, and whether it ends the epoch. */
typedef struct gk__pos {
    uint64_t epoch, index;
    size_t count;
    int last;
} gk__pos;

/* A resumed epoch that continues from a global position (an elastic restore: another world size
 * saved it). Positions [start, end) of the epoch's permutation remain; rank r takes start + r,
 * start + r + world, ... */
typedef struct gk__resumed {
    int active;
    uint64_t epoch, start, end;
    uint64_t per_rank, batches; /* this rank's items and batches in it */
} gk__resumed;

struct gk_loader {
    gk_loader_config cfg;
    gk_dataset *ds;
    gk_sampler smp;
    size_t item_size, slot_bytes;
    int K;
    unsigned parts;
    int cpus;      /* CPUs this process may use */
    int spin;      /* the consumer may spin: every thread (workers and consumer) has a CPU */
    int readahead; /* pass will_need hints: cfg.readahead, a will_need callback, items large enough */
    gk__slot *slots;
    gk__worker *workers;
    int nworkers;
    gk_stream *copy;
    pthread_mutex_t mu; /* start-up only: workers report their worker_open */
    pthread_cond_t cv_open;
    /* Position: delivery seq falls at batch org_batch + seq of epoch org_epoch, then runs on
     * through the epochs; deliveries at or past seq_end are past cfg.epochs. */
    uint64_t org_epoch, org_batch;
    int64_t seq_end;
    gk__resumed res;
    /* Shared by the workers: the next unit (a batch, or a part of one) to fill, the read-ahead
     * frontier, and the fill-time average that sizes the spins. */
    _Alignas(GK__LINE) _Atomic uint64_t next_unit;
    _Alignas(GK__LINE) _Atomic int64_t hinted; /* batches up to this one were hinted */
    _Atomic uint64_t fill_avg_ns;              /* moving average of a batch's fill time */
    _Atomic int cold;                          /* the dataset's last probe found data uncached */
    _Atomic uint64_t hint_skips;               /* batches left before the next warm probe */
    /* Workers sleeping for a free slot: the futex word, how many sleep, and a stop flag. */
    _Alignas(GK__LINE) _Atomic uint32_t wk_word;
    _Atomic int wk_sleepers;          /* sleeping until the consumer wakes them */
    _Atomic int wk_nappers;           /* on a timed nap (woken early only if the consumer waits) */
    _Atomic int halt;                 /* stop or failed: workers leave their loop */
    _Atomic uint64_t wake_ns;         /* when the consumer last woke the workers */
    _Atomic uint64_t wake_lat_avg_ns; /* moving average of wake call to worker running */
    _Atomic uint64_t nap_late_avg_ns; /* moving average of how late a timed nap returns */
    /* The consumer's pace, published at each delivery for the workers' timed naps: the batch it
     * took last, when, and its moving average period between next calls. */
    _Alignas(GK__LINE) _Atomic int64_t cs_taken;
    _Atomic uint64_t cs_last_ns, cs_period_ns;
    /* The consumer sleeping for a batch: the futex word and the batch it waits for (-1: none). */
    _Alignas(GK__LINE) _Atomic uint32_t cs_word;
    _Atomic int64_t cs_waiting;
    /* Consumer only. */
    _Alignas(GK__LINE) int64_t next_seq;
    int have_held;
    int64_t held_seq;
    int held_slot;
    unsigned frees_unwoken; /* frees since sleeping workers were last woken */
    uint64_t last_next_ns, period_avg_ns;
    int stopped;
    int failed;
    char failed_msg[600];
    gk__worker consumer; /* the fill context when there are no workers */
    int consumer_open;
    uint64_t created_ns, seek_ns;
    char name[64];
    struct {
        _Atomic uint64_t items, bytes, batches, skips, wait_ns, wait_max_ns, occupancy_sum,
            first_batch_ns;
        _Atomic uint64_t wait_hist[32];
    } st;                          /* written by the consumer only */
    struct gk__loader_metrics *lm; /* the published series; NULL when none */
};

/* The least item size for which the loader passes will_need hints and the record dataset acts on
 * them (one value for both). */
#define GK__READAHEAD_MIN_ITEM 4096

/* cpus.c: CPUs in this process's affinity mask, capped by its cgroup CPU quota (at least 1);
 * and the cap itself: affinity_cpus limited by the quotas of the cgroups listed in cgroup_file
 * (/proc/self/cgroup's format) under the cgroup mount fs_root (tests pass their own files). */
int gk__usable_cpus(void);
int gk__cpus_limit(const char *cgroup_file, const char *fs_root, int affinity_cpus);

/* guard.c: installs the process's SIGBUS handler once (0 or a negative errno); whether it is
 * still the installed handler; and a gather of n records of `size` bytes from base + idx[i]*size
 * into dst, followed by an 8-byte read of `canary` into *seen, that returns -EFAULT (with the
 * failing i in *failed, n for the canary) instead of dying when a page of the mapping faults. */
int gk__guard_install(void);
int gk__guard_installed(void);
int gk__guarded_gather(unsigned char *dst, const unsigned char *base, size_t size,
                       const uint64_t *idx, size_t n, const unsigned char *canary, uint64_t *seen,
                       size_t *failed);

/* position.c */
/* Sets the position to batch `batch` of `epoch` (with the resumed epoch `res` if active). */
void gk__set_origin(gk_loader *ld, uint64_t epoch, uint64_t batch);
/* Batches of `epoch` for this rank. */
uint64_t gk__epoch_batches(const gk_loader *ld, uint64_t epoch);
/* Where delivery seq falls. */
void gk__locate(const gk_loader *ld, int64_t seq, gk__pos *p);
/* Dataset indices of this rank's items first .. first+n-1 of `epoch` into out. */
void gk__rank_items(const gk_loader *ld, uint64_t epoch, uint64_t first, size_t n, uint64_t *out);
/* Fills out with the items of delivery seq (room for batch_size); returns how many. */
size_t gk__batch_indices(const gk_loader *ld, int64_t seq, uint64_t *out);
/* A resumed epoch continuing `epoch` from global position g for this loader's world and rank
 * (inactive when g is 0: the epoch then follows the sampler). */
void gk__resumed_init(const gk_loader *ld, uint64_t epoch, uint64_t g, gk__resumed *out);
/* The global position after every rank released `batch` batches of `epoch` (samples of the epoch
 * consumed by all ranks), and in *epoch_start where the epoch began (0 unless resumed). */
uint64_t gk__global_position(const gk_loader *ld, uint64_t epoch, uint64_t batch,
                             uint64_t *epoch_start);

/* handoff.c */
/* Futex sleeps and wakes on a 32-bit word (private to the process). */
void gk__futex_wait(_Atomic uint32_t *word, uint32_t expect, uint64_t timeout_ns);
void gk__futex_wake(_Atomic uint32_t *word, int n);
/* Worker: waits until slot s may start batch seq; returns 0, or -1 when the loader halts. */
int gk__wait_free(gk_loader *ld, gk__worker *w, gk__slot *s, int64_t seq);
/* Worker: publishes batch seq as ready in slot s and wakes the consumer if it sleeps for it. */
void gk__publish_ready(gk_loader *ld, gk__slot *s, int64_t seq);
/* Consumer: frees slot s (batch seq), waking sleeping workers when enough slots are free. */
void gk__publish_free(gk_loader *ld, gk__slot *s, int64_t seq);
/* Consumer: waits until batch seq is ready in slot s; 0, -ETIMEDOUT or -ECANCELED. */
int gk__wait_ready(gk_loader *ld, gk__slot *s, int64_t seq, double timeout);
/* Wakes every sleeping worker now (the consumer needs them, or the loader halts). */
void gk__wake_workers(gk_loader *ld);

/* Records the detail returned by gk_loader_last_error (printf-style); returns rc. */
int gk__loader_error(gk_loader *ld, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Fills part `part` of batch seq into its slot (free for it); the last part to finish issues the
 * copy, passes the read-ahead hints and marks the slot ready. */
void gk__fill_part(gk_loader *ld, gk__worker *w, int64_t seq, unsigned part);
/* Starts the workers and waits until each has opened its dataset state (message in err). */
int gk__start_workers(gk_loader *ld, char *err, size_t errlen);
/* Sets stop, wakes and joins every worker. */
void gk__join_workers(gk_loader *ld);
/* Waits for the copy stream. */
void gk__drain_copies(gk_loader *ld);
/* Records the release of every batch still held, on the stream it was delivered on. */
void gk__release_held(gk_loader *ld);

/* metrics.c: registers the loader's series and a collector in cfg.metrics (or the process
 * registry); stop removes the collector after a last reading. */
void gk__loader_metrics_start(gk_loader *ld);
void gk__loader_metrics_stop(gk_loader *ld);

#endif
