/* Private structures of the caching pool: blocks, segments, the free-block tree (tree.c), the
 * sharded pointer map (ptrmap.c), statistics updates (stats.c) and the history ring (history.c).
 * Everything here is used under the pool lock unless a comment says otherwise. */
#ifndef GK_POOL_INT_H
#define GK_POOL_INT_H

#include <pthread.h>
#include <stdbool.h>

#include "gpukit/pool.h"
#include "gpukit/trace.h"

typedef struct gk__segment gk__segment;

/* A block: a piece of a segment, allocated or free. */
typedef struct gk__block {
    uintptr_t addr;
    size_t size;      /* rounded size (the piece of the segment) */
    size_t requested; /* bytes asked for (allocated blocks) */
    uintptr_t stream; /* stream key: the gk_stream pointer, 0 for the default stream */
    gk__segment *seg;
    struct gk__block *prev, *next;  /* neighbours in the segment, by address */
    struct gk__block *left, *right; /* free tree (treap) */
    uint32_t prio;
    bool allocated; /* handed out (or waiting on events) */
    bool in_tree;
    int event_count;    /* pending events before the block is free */
    uint64_t free_tick; /* pool->ticks when cached, for GC ages */
    gk_stream **uses;   /* streams recorded with record_stream */
    int nuses, cap_uses;
    struct gk__block *hnext; /* pointer map chain */
    char tag[32];
} gk__block;

struct gk__segment {
    uintptr_t base;
    size_t size; /* bytes reserved (classic) or address space (expandable) */
    int kind;    /* GK_POOL_SMALL or GK_POOL_LARGE */
    uintptr_t stream;
    bool expandable;
    size_t page;     /* expandable: page size */
    size_t npages;   /* expandable: pages in the range */
    uint8_t *mapped; /* expandable: 1 per mapped page */
    size_t mapped_pages;
    gk__block *head; /* first block by address */
    gk__segment *next, *prev;
};

/* The free-block tree: a treap ordered by (stream, size, address). */
typedef struct gk__tree {
    gk__block *root;
    size_t count;
    uint32_t seed;
} gk__tree;

void gk__tree_insert(gk__tree *t, gk__block *b);
void gk__tree_remove(gk__tree *t, gk__block *b);
/* The first block with key >= (stream, size, 0), or NULL. */
gk__block *gk__tree_lower_bound(const gk__tree *t, uintptr_t stream, size_t size);
/* Calls fn on every block in key order. */
void gk__tree_walk(const gk__tree *t, void (*fn)(gk__block *b, void *arg), void *arg);

/* The sharded pointer map of live blocks. Each shard has its own lock (taken after the pool
 * lock, never before it). */
#define GK__SHARDS 64
typedef struct gk__shard {
    pthread_mutex_t lock;
    gk__block **buckets;
    size_t nbuckets, count;
} gk__shard;

typedef struct gk__ptrmap {
    gk__shard shards[GK__SHARDS];
} gk__ptrmap;

int gk__ptrmap_init(gk__ptrmap *m);
void gk__ptrmap_fini(gk__ptrmap *m);
int gk__ptrmap_insert(gk__ptrmap *m, gk__block *b);
gk__block *gk__ptrmap_remove(gk__ptrmap *m, uintptr_t addr);
gk__block *gk__ptrmap_find(gk__ptrmap *m, uintptr_t addr);

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

typedef struct gk__pending {
    gk_event *event;
    gk__block *block;
} gk__pending;

#define GK__MAX_SCOPES   16
#define GK__MAX_PRESSURE 8

typedef struct gk__scope {
    gk_pool_stats start; /* stats when pushed */
    gk_pool_stats peaks; /* peaks reached within the scope (peak fields only) */
} gk__scope;

struct gk_pool {
    gk_device *dev;
    gk_pool_config cfg;
    gk_device_props props;
    size_t total_memory;
    pthread_mutex_t lock;
    gk__tree free[GK_POOL_KINDS]; /* index SMALL and LARGE */
    gk__segment *segments;
    size_t nsegments;
    gk__ptrmap map;
    size_t limit;    /* effective cap; 0 = none */
    size_t reserved; /* reserved bytes (mirrors stats) plus in-flight device allocations */
    uint64_t ticks[GK_POOL_KINDS]; /* best-fit lookups per pool, for GC ages */
    gk__pending *pending;
    size_t npending, cap_pending;
    gk_event **events; /* pooled idle events */
    size_t nevents, cap_events;
    struct {
        gk_pool_pressure_fn fn;
        void *user;
    } pressure[GK__MAX_PRESSURE];
    int npressure;
    gk_pool_stats stats;
    gk__scope scopes[GK__MAX_SCOPES];
    int nscopes;
    FILE *trace;
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
    size_t alloc;     /* classic segment size for it */
    int kind;         /* GK_POOL_SMALL / GK_POOL_LARGE */
    uintptr_t stream; /* stream key */
    gk_stream *sptr;
    bool expandable;
} gk__request;

/* metrics.c: registers the pool's series and a collector in cfg.metrics (or the process
 * registry); stop removes the collector after a last reading. */
void gk__pool_metrics_start(gk_pool *p);
void gk__pool_metrics_stop(gk_pool *p);

/* pool.c */
size_t gk__pool_round_size(const gk_pool_config *c, size_t size);
void gk__cache_insert(gk_pool *p, gk__block *b);
void gk__cache_remove(gk_pool *p, gk__block *b);
int gk__release_segment(gk_pool *p, gk__segment *s);
bool gk__releasable(const gk__segment *s);
void gk__process_events(gk_pool *p);
void gk__sync_events(gk_pool *p);
void gk__pending_done(gk_pool *p, size_t i);

/* release.c (called with the pool lock held, except the hook, which takes it) */
void gk__collect_garbage(gk_pool *p);
void gk__release_oversize(gk_pool *p, const gk__request *r);
int gk__release_cached(gk_pool *p);
void gk__stream_hook(void *user, gk_stream *stream);

/* expand.c: expandable segments. new_segment reserves an address range and returns its single
 * free block (not cached yet); map maps the pages under [addr, addr+size) (*mapped set when it
 * called the device); release unmaps pages under no live block (after synchronizing the stream
 * when `sync`) and, when `drop_empty`, releases a range with nothing mapped; destroy unmaps and
 * releases everything. */
int gk__expand_new_segment(gk_pool *p, const gk__request *r, gk__block **out);
int gk__expand_map(gk_pool *p, gk__segment *s, uintptr_t addr, size_t size, int *mapped);
int gk__expand_release(gk_pool *p, gk__segment *s, bool sync, bool drop_empty);
void gk__expand_destroy(gk_pool *p, gk__segment *s);
/* Largest contiguous mapped run and total mapped bytes inside [addr, addr+size). */
void gk__expand_mapped_in(const gk__segment *s, uintptr_t addr, size_t size, size_t *largest,
                          size_t *total);

/* config.c */
int gk__pool_config_check(gk_pool_config *c, char *err, size_t errlen);

/* oom.c */
void gk__pool_build_oom_report(gk_pool *p, const gk__request *r);

/* trace.c: a map from trace pointers (+2; 0 and 1 are reserved) to a value and a size. put
 * returns 1 when it replaced a key, 0 when it added one, -ENOMEM. */
typedef struct gk__tmap {
    uint64_t *keys, *vals, *sizes;
    size_t cap, count, used;
} gk__tmap;
int gk__tmap_init(gk__tmap *m, size_t expect);
void gk__tmap_fini(gk__tmap *m);
int gk__tmap_put(gk__tmap *m, uint64_t key, uint64_t val, uint64_t size);
int gk__tmap_take(gk__tmap *m, uint64_t key, uint64_t *val, uint64_t *size);

/* stats.c */
void gk__stat_add(gk_pool *p, gk_pool_stat *arr, int kind, int64_t delta);
void gk__stat_one(gk_pool *p, gk_pool_stat *s, int64_t delta);
void gk__pool_free_figures(gk_pool *p, uint64_t *largest, uint64_t *free_bytes);

static inline bool gk__block_handed_out(const gk__block *b)
{
    return b->allocated && b->event_count == 0;
}

/* history.c; live_blocks returns the handed-out blocks largest first (caller frees) or -ENOMEM. */
long gk__pool_live_blocks(gk_pool *p, gk__block ***out);
void gk__hist_push(gk_pool *p, gk__action a, uintptr_t addr, size_t size, uintptr_t stream);
const char *gk__action_name(gk__action a);

/* pool.c */
uint64_t gk__pool_now_ns(void);
void gk__pool_trace_line(gk_pool *p, const char *action, uintptr_t addr, size_t size,
                         uintptr_t stream);

#endif
