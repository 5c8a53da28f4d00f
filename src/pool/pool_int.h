/* Private structures of the caching pool: blocks, segments, the free-block tree (tree.c), the
 * pointer map (ptrmap.c), the per-stream event queues (events.c), statistics updates (stats.c),
 * the history ring and the CSV trace buffer (history.c), and the work done outside the lock
 * (release.c, expand.c). Everything here is used under the pool lock unless a comment says
 * otherwise. */
#ifndef GK_POOL_INT_H
#define GK_POOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "gpukit/pool.h"
#include "gpukit/trace.h"

typedef struct gk__segment gk__segment;

/* Exact products and sums of 64-bit figures (GC ages, hostile trace sizes). */
__extension__ typedef unsigned __int128 gk__u128;

/* What a block is. Only FREE blocks are in the free tree. The transient states mark blocks that
 * a thread works on outside the lock: nobody else touches them until it is back. */
typedef enum gk__bstate {
    GK__FREE,      /* cached: mapped, free, in the tree */
    GK__LIVE,      /* handed out, or freed and waiting on events (event_count > 0) */
    GK__UNMAPPED,  /* expandable: address space without memory (whole pages; not in the tree) */
    GK__MAPPING,   /* expandable: unmapped, being mapped */
    GK__HELD,      /* expandable: free and mapped, joining a block being mapped */
    GK__UNMAPPING, /* expandable: free pages being unmapped */
    GK__RELEASING  /* classic: the whole segment is going back to the device */
} gk__bstate;

/* A block: a piece of a segment. What the free tree reads comes first, in one cache line (block
 * structs come from 64-byte aligned slabs). */
typedef struct gk__block {
    uintptr_t stream; /* stream key: the gk_stream pointer, 0 for the default stream */
    size_t size;      /* rounded size (the piece of the segment) */
    uintptr_t addr;
    struct gk__block *left, *right; /* free tree (treap) */
    size_t maxsz;                   /* free tree: the largest size in this subtree */
    uint32_t prio;
    uint8_t state;    /* gk__bstate */
    int event_count;  /* pending events before the block is free */
    size_t requested; /* bytes asked for (live blocks) */
    gk__segment *seg;
    struct gk__block *prev, *next; /* neighbours in the segment, by address */
    gk_stream **uses;              /* streams recorded with record_stream */
    int nuses, cap_uses;
    struct gk__block *unext, *uprev; /* UNMAPPED blocks of the segment; the spare list */
    char tag[32];
} gk__block;

struct gk__segment {
    uintptr_t base;
    size_t size; /* bytes reserved (classic) or address space (expandable) */
    int kind;    /* GK_POOL_SMALL or GK_POOL_LARGE */
    uintptr_t stream;
    bool expandable;
    size_t page;                /* expandable: page size (a multiple of the device granularity) */
    size_t mapped;              /* expandable: bytes mapped */
    int busy;                   /* expandable: blocks in a transient state */
    gk__block *head;            /* first block by address */
    gk__block *unmapped;        /* expandable: its UNMAPPED blocks (any order) */
    gk__segment *next, *prev;   /* every segment, oldest first */
    gk__segment *rnext, *rprev; /* classic: releasable segments of its kind, by age */
    bool releasable;
    uint64_t free_tick; /* releasable: pool->ticks[kind] when its block was cached whole */
};

/* The free-block index of a pool kind (tree.c): per stream, 512 size classes (8 per power of
 * two) with a bitmap of the non-empty ones, each class a treap ordered by (size, address) whose
 * nodes know the largest size below them. Exact best fit in (stream, size, address) order. */
#define GK__CLASSES 512
typedef struct gk__fidx {
    uintptr_t stream;
    uint64_t words;                  /* bit w: bits[w] is not 0 */
    uint64_t bits[GK__CLASSES / 64]; /* bit c: class c holds blocks */
    gk__block *cls[GK__CLASSES];     /* treap roots */
    struct gk__fidx *next;
} gk__fidx;

typedef struct gk__tree {
    gk__fidx *head; /* one index per stream, the last one used first */
    uint32_t seed;
} gk__tree;

/* An index for the stream's free blocks (before any block of that stream is cached). */
int gk__tree_reserve(gk__tree *t, uintptr_t stream);
/* Frees the stream's index when it holds nothing (its stream is gone). */
void gk__tree_drop(gk__tree *t, uintptr_t stream);
void gk__tree_fini(gk__tree *t);
void gk__tree_insert(gk__tree *t, gk__block *b);
void gk__tree_remove(gk__tree *t, gk__block *b);
/* The first block with key >= (stream, size, 0), or NULL. */
gk__block *gk__tree_lower_bound(gk__tree *t, uintptr_t stream, size_t size);
/* The block after b in key order (same stream), or NULL. */
gk__block *gk__tree_after(gk__tree *t, const gk__block *b);
/* The last block of the stream with key < (size, 0) / (size, addr), or NULL. */
gk__block *gk__tree_below(gk__tree *t, uintptr_t stream, size_t size);
gk__block *gk__tree_below_key(gk__tree *t, uintptr_t stream, size_t size, uintptr_t addr);
/* The largest free block size (0 when none): one look per stream. */
size_t gk__tree_max(const gk__tree *t);
/* The size class of a size (for checks). */
unsigned gk__tree_class(size_t size);

/* The map of live blocks by address (open addressing, under the pool lock). */
typedef struct gk__ptrslot {
    uintptr_t key; /* 0 = empty (no device pointer is 0) */
    gk__block *val;
} gk__ptrslot;

typedef struct gk__ptrmap {
    gk__ptrslot *slots;
    size_t cap, count;
} gk__ptrmap;

void gk__ptrmap_fini(gk__ptrmap *m);
int gk__ptrmap_insert(gk__ptrmap *m, gk__block *b);
gk__block *gk__ptrmap_remove(gk__ptrmap *m, uintptr_t addr);
gk__block *gk__ptrmap_find(const gk__ptrmap *m, uintptr_t addr);

/* History ring entries. */
typedef enum gk__action {
    GK__ACT_ALLOC,
    GK__ACT_FREE_REQUESTED,
    GK__ACT_FREE_COMPLETED,
    GK__ACT_SEGMENT_ALLOC,
    GK__ACT_SEGMENT_FREE,
    GK__ACT_SEGMENT_MAP,
    GK__ACT_SEGMENT_UNMAP,
    GK__ACT_OOM
} gk__action;

typedef struct gk__hist_entry {
    gk__action action;
    uintptr_t addr;
    size_t size;
    uintptr_t stream;
    uint64_t time_us;
} gk__hist_entry;

/* A line of the CSV trace log, kept under the lock and written after it. */
typedef struct gk__trace_rec {
    long tid;
    uint64_t t_ns;
    int action; /* 0 allocate, 1 free, 2 allocate failure */
    uintptr_t addr;
    size_t size;
    uintptr_t stream;
} gk__trace_rec;

/* Pending events: one FIFO per stream (events of one stream complete in order, so polling stops
 * at the first that is not done), plus the events of destroyed streams, polled one by one. */
typedef struct gk__pending {
    gk_event *event;
    gk__block *block;
} gk__pending;

typedef struct gk__equeue {
    gk_stream *stream;
    gk__pending *ring;
    size_t head, len, cap; /* cap is a power of two */
} gk__equeue;

typedef struct gk__events {
    gk__equeue *q;
    size_t nq, capq;
    gk__pending *orphans;
    size_t norphans, caporphans;
    size_t npending; /* in all queues and orphans */
    gk_event **idle; /* pooled events */
    size_t nidle, capidle;
} gk__events;

#define GK__MAX_SCOPES   16
#define GK__MAX_PRESSURE 8

typedef struct gk__scope {
    gk_pool_stats start; /* stats when pushed */
    gk_pool_stats peaks; /* peaks reached within the scope (peak fields only) */
} gk__scope;

/* Releasable classic segments of one kind, oldest (cached first) at the head. */
typedef struct gk__agelist {
    gk__segment *head, *tail;
    uint64_t n;
    uint64_t tick_sum; /* sum of their free_tick */
} gk__agelist;

struct gk_pool {
    gk_device *dev;
    gk_pool_config cfg;
    gk_device_props props;
    size_t total_memory;
    size_t max_request; /* larger requests fail at once: the device's memory (or 2^62) */
    pthread_mutex_t lock;
    pthread_cond_t idle;          /* signalled when `inflight` drops to 0 */
    int inflight;                 /* threads working outside the lock on the pool's behalf */
    gk__tree free[GK_POOL_KINDS]; /* index SMALL and LARGE */
    gk__segment *seg_head, *seg_tail;
    gk__agelist rel[GK_POOL_KINDS];
    gk__ptrmap map;
    gk__block *spare; /* recycled block structs */
    void **slabs;     /* where block structs come from, 64 at a time */
    size_t nslabs, capslabs;
    size_t limit;      /* effective cap; 0 = none */
    size_t reserved;   /* reserved bytes (mirrors stats) plus in-flight device allocations */
    size_t free_bytes; /* bytes in FREE blocks */
    uint64_t ticks[GK_POOL_KINDS]; /* best-fit lookups per pool, for GC ages */
    gk__events ev;
    struct {
        gk_pool_pressure_fn fn;
        void *user;
    } pressure[GK__MAX_PRESSURE];
    int npressure;
    gk_pool_stats stats;
    gk__scope scopes[GK__MAX_SCOPES];
    int nscopes;
    FILE *trace;
    atomic_int trace_on; /* read without the lock: whether to fetch the thread id first */
    gk__trace_rec *tbuf;
    size_t tlen, tcap;
    pthread_mutex_t trace_lock; /* serializes writers of the trace file; taken before `lock` */
    uint64_t t0_ns;
    gk__hist_entry *hist;
    size_t hist_cap, hist_len, hist_head;
    char *oom_report;
    bool hook_added;
    struct gk__pool_metrics *pm; /* the published series; NULL when none */
};

/* One allocation request as the ladder sees it. */
typedef struct gk__request {
    size_t size;      /* bytes asked for */
    size_t rsize;     /* rounded */
    int kind;         /* GK_POOL_SMALL / GK_POOL_LARGE */
    uintptr_t stream; /* stream key */
    gk_stream *sptr;
} gk__request;

/* metrics.c: registers the pool's series and a collector in cfg.metrics (or the process
 * registry); stop removes the collector after a last reading. */
void gk__pool_metrics_start(gk_pool *p);
void gk__pool_metrics_stop(gk_pool *p);

/* Out-of-memory-class results: the ladder goes on. Anything else is returned as it is. */
static inline bool gk__is_oom(int rc)
{
    return rc == GK_EDEVOOM || rc == -ENOSPC;
}

/* pool.c */
size_t gk__pool_round_size(const gk_pool_config *c, size_t size);
gk__block *gk__block_new(gk_pool *p);
void gk__block_recycle(gk_pool *p, gk__block *b);
/* a takes its next block's bytes; that block's struct is recycled. */
void gk__block_absorb(gk_pool *p, gk__block *a);
void gk__cache_insert(gk_pool *p, gk__block *b);
void gk__cache_remove(gk_pool *p, gk__block *b);
void gk__cache_merge(gk_pool *p, gk__block *b);
void gk__free_completed(gk_pool *p, gk__block *b);
/* Hands out the first r->rsize bytes of the free block b (`cached`: b is in the tree), splitting
 * off and caching the rest. 0 or -ENOMEM. */
int gk__take_block(gk_pool *p, const gk__request *r, gk__block *b, bool cached);
void gk__note_device_error(gk_pool *p, const char *what);
void gk__segment_link(gk_pool *p, gk__segment *s);
void gk__segment_unlink(gk_pool *p, gk__segment *s);
/* Marks the start and end of work outside the lock (unlocks and relocks). */
void gk__unlock_for_device(gk_pool *p);
void gk__relock_after_device(gk_pool *p);

/* events.c */
int gk__events_defer(gk_pool *p, gk__block *b, gk_stream *stream);
void gk__events_process(gk_pool *p);
void gk__events_sync_all(gk_pool *p); /* drops the lock while it waits */
void gk__events_stream_gone(gk_pool *p, gk_stream *stream);
void gk__events_fini(gk_pool *p);

/* release.c: memory given back, with the device calls outside the lock. */
void gk__collect_garbage(gk_pool *p);
bool gk__release_oversize(gk_pool *p, const gk__request *r);
int gk__release_cached(gk_pool *p);
void gk__stream_hook(void *user, gk_stream *stream);

/* The work list of one release: classic segments to free, expandable runs to unmap, address
 * ranges to release. Built under the lock (the pieces are detached), run outside it, finished
 * under it again. */
typedef struct gk__rel_item {
    int what; /* GK__REL_FREE, GK__REL_UNMAP, GK__REL_VA */
    gk__segment *seg;
    gk__block *blk;   /* FREE: the segment's block; UNMAP: the UNMAPPING block */
    gk__block *spare; /* UNMAP: for the part left mapped when only a prefix could be unmapped */
    uintptr_t addr;   /* copied under the lock: what the device call works on */
    size_t size, page;
    uintptr_t stream;
    int rc;
    size_t done; /* UNMAP: bytes actually unmapped (a prefix of the run) */
} gk__rel_item;

enum { GK__REL_FREE, GK__REL_UNMAP, GK__REL_VA };

typedef struct gk__rel {
    gk__rel_item *items;
    size_t n, cap;
    bool sync;       /* synchronize the streams of unmapped runs first */
    int rc;          /* the first error */
    size_t released; /* bytes given back */
} gk__rel;

gk__rel_item *gk__rel_push(gk__rel *rel);
int gk__rel_run(gk_pool *p, gk__rel *rel);
void gk__rel_free(gk__rel *rel);
/* Unmaps [addr, addr+size) of pages of `page` bytes outside the lock; returns how many bytes (a
 * prefix) are unmapped and sets *rc to the first error. */
size_t gk__unmap_run(gk_pool *p, uintptr_t addr, size_t size, size_t page, int *rc);

/* expand.c: expandable segments. */
int gk__expand_grow(gk_pool *p, const gk__request *r, gk__block **out);
/* Adds the whole free pages of s (under no live block) to rel; with `drop` and nothing mapped,
 * the range itself. */
int gk__expand_plan_release(gk_pool *p, gk__segment *s, gk__rel *rel, bool drop);
void gk__expand_finish_unmap(gk_pool *p, gk__rel_item *it);
void gk__expand_finish_va(gk_pool *p, gk__rel_item *it);
void gk__expand_destroy(gk_pool *p, gk__segment *s);
void gk__unmapped_add(gk__segment *s, gk__block *b);
void gk__unmapped_del(gk__segment *s, gk__block *b);
/* Whether the expandable segments may be used on this device; fills why when not. */
bool gk__expand_supported(gk_pool *p, char *why, size_t len);

/* config.c */
typedef enum { GK__KEY_SIZE, GK__KEY_COUNT, GK__KEY_BOOL, GK__KEY_DOUBLE } gk__key_type;
typedef enum { GK__UNLIMITED_NO, GK__UNLIMITED_MAX, GK__UNLIMITED_ZERO } gk__unlimited;
typedef struct gk__pool_key {
    const char *key;
    size_t offset;
    gk__key_type type;
    uint64_t min, max; /* sizes and counts; doubles are in [0,1] ([0,1) for gc_threshold) */
    int pow2;
    gk__unlimited unlimited; /* what "unlimited" stores, if accepted */
} gk__pool_key;
int gk__pool_config_check(gk_pool_config *c, char *err, size_t errlen);
const gk__pool_key *gk__pool_config_keys(size_t *n);
int gk__pool_config_range(const char *key, char *buf, size_t len);

/* oom.c */
void gk__pool_build_oom_report(gk_pool *p, const gk__request *r);

/* trace.c: a map from trace pointers to a value and a size (open addressing; any 64-bit key).
 * put returns 1 when it replaced a key, 0 when it added one, -ENOMEM. */
typedef struct gk__tmap {
    uint64_t *keys, *vals, *sizes;
    uint8_t *used; /* 1 for a live slot */
    size_t cap, count;
} gk__tmap;
int gk__tmap_init(gk__tmap *m, size_t expect);
void gk__tmap_fini(gk__tmap *m);
int gk__tmap_put(gk__tmap *m, uint64_t key, uint64_t val, uint64_t size);
int gk__tmap_take(gk__tmap *m, uint64_t key, uint64_t *val, uint64_t *size);
uint64_t gk__mix64(uint64_t x);

/* stats.c: statistics updates, inline (they are on every allocation and free). */
void gk__scope_peaks(gk_pool *p, const gk_pool_stat *s); /* raises the peaks of open scopes */

static inline void gk__bump(gk_pool_stat *s, int64_t delta)
{
    s->current += delta;
    if (delta > 0) {
        s->allocated += (uint64_t)delta;
        if (s->current > s->peak)
            s->peak = s->current;
    } else {
        s->freed += (uint64_t)-delta;
    }
}

static inline void gk__stat_one(gk_pool *p, gk_pool_stat *s, int64_t delta)
{
    gk__bump(s, delta);
    if (p->nscopes)
        gk__scope_peaks(p, s);
}

static inline void gk__stat_add(gk_pool *p, gk_pool_stat *arr, int kind, int64_t delta)
{
    gk__bump(&arr[GK_POOL_ALL], delta);
    gk__bump(&arr[kind], delta);
    if (p->nscopes) {
        gk__scope_peaks(p, &arr[GK_POOL_ALL]);
        gk__scope_peaks(p, &arr[kind]);
    }
}

/* history.c; live_blocks returns the handed-out blocks largest first (caller frees) or -ENOMEM. */
long gk__pool_live_blocks(gk_pool *p, gk__block ***out);
void gk__hist_push(gk_pool *p, gk__action a, uintptr_t addr, size_t size, uintptr_t stream);
void gk__trace_add(gk_pool *p, long tid, int action, uintptr_t addr, size_t size, uintptr_t stream);
void gk__trace_flush(gk_pool *p); /* called without the lock */
long gk__thread_id(void);

static inline bool gk__block_handed_out(const gk__block *b)
{
    return b->state == GK__LIVE && b->event_count == 0;
}

/* pool.c */
uint64_t gk__pool_now_ns(void);

#endif
