/* Private pieces shared by the loader's files: the dataset object, thread-local error text, the
 * small hash used by the sampler, and the loader's state shared by ring.c and consumer.c. */
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

/* Monotonic clock in nanoseconds. */
uint64_t gk__loader_now_ns(void);

/* --- the loader's state, shared by ring.c (workers, filling, create/destroy) and consumer.c
 * (next, release, position, statistics). Lock order: ld->mu only, never held across a dataset
 * callback or a device call. --------------------------------------------------------------- */

typedef enum gk__slot_state {
    GK__SLOT_FREE,
    GK__SLOT_FILLING,
    GK__SLOT_READY,
    GK__SLOT_HELD
} gk__slot_state;

typedef struct gk__slot {
    int64_t seq; /* the batch this slot holds or last held; starts at index - K */
    gk__slot_state state;
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
} gk__slot;

#define GK__SPIN_ITERS 1000

static inline void gk__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Marks slot s free (under ld->mu). */
static inline void gk__slot_set_free(gk__slot *s)
{
    s->state = GK__SLOT_FREE;
}

typedef struct gk__worker {
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
} gk__worker;

struct gk_loader {
    gk_loader_config cfg;
    gk_dataset *ds;
    gk_sampler smp;
    size_t item_size, slot_bytes;
    int K;
    unsigned parts;
    int spin; /* consumer spins before sleeping: 0 when the threads outnumber the CPUs */
    gk__slot *slots;
    gk__worker *workers;
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
    gk__worker consumer; /* the fill context when there are no workers */
    int consumer_open;
    int stopped;
    uint64_t created_ns, seek_ns;
    char name[64];
    struct {
        _Atomic uint64_t items, bytes, batches, skips, wait_ns, wait_max_ns, fill_ns, fill_max_ns,
            copy_ns, copy_max_ns, busy_ns, idle_ns, occupancy_sum, first_batch_ns;
        _Atomic uint64_t wait_hist[32];
    } st;
    struct gk__loader_metrics *lm; /* the published series; NULL when none */
};

static inline void gk__stat_add(_Atomic uint64_t *v, uint64_t x)
{
    atomic_fetch_add_explicit(v, x, memory_order_relaxed);
}

static inline void gk__stat_max(_Atomic uint64_t *v, uint64_t x)
{
    uint64_t cur = atomic_load_explicit(v, memory_order_relaxed);
    while (cur < x && !atomic_compare_exchange_weak_explicit(v, &cur, x, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

/* Whether slot s may start batch seq (under ld->mu): free, and its last batch was seq - K. */
static inline int gk__slot_free_for(const gk_loader *ld, const gk__slot *s, int64_t seq)
{
    return s->state == GK__SLOT_FREE && s->seq + ld->K == seq;
}

/* Records the detail returned by gk_loader_last_error (printf-style); returns rc. */
int gk__loader_error(gk_loader *ld, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* An absolute CLOCK_MONOTONIC deadline `seconds` from now. */
void gk__abs_deadline(struct timespec *ts, double seconds);
/* Starts slot s for batch seq (under ld->mu). */
void gk__slot_begin(gk_loader *ld, gk__slot *s, int64_t seq);
/* Fills part `part` of batch seq into its (begun) slot; the last part issues the copy and marks
 * the slot ready. Called without ld->mu. */
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
