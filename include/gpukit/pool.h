/* The caching device-memory pool: a drop-in for gk_device_malloc/free that keeps freed blocks and
 * hands them out again without a device call.
 *
 * Rules (each one a setting in gk_pool_config, with its valid range in docs/pool.md):
 *   - Requests round up to a multiple of `round_bytes` (512 B), or to one of `divisions` equal
 * steps between two powers of two when divisions > 1 and the request is above
 * round_bytes*divisions.
 *   - Rounded requests of at most `small_max` (1 MiB) come from the small pool, packed into
 *     `small_segment` (2 MiB) segments; larger ones from the large pool, in `large_segment`
 *     (20 MiB) segments when below `min_large_alloc` (10 MiB), else in a segment of their own size
 *     rounded up to `round_large` (2 MiB).
 *   - Free blocks are kept per pool in an index ordered by (stream, size, address); a
 *     request takes the smallest free block of its stream that fits (best fit), splits off the
 *     rest when the split rule allows it, and a freed block merges with its free neighbours.
 *     Split rule: small pool or expandable segment, remainder >= round_bytes; large pool, request
 *     below max_split_size and remainder > small_max.
 *   - Oversize rule (classic segments): a request below `max_split_size` never takes a free block of
 *     max_split_size or more; a request at or above it takes a block only if the block is smaller
 *     than request + `max_non_split_rounding`. Oversize blocks are never split.
 *   - Streams: a block is reused only by the stream it was allocated on, unless
 *     gk_pool_record_stream() marked other streams as users: then freeing it records one event per
 *     user stream and the block returns to the cache only when all of them have completed (polled
 *     at the start of every allocation, per stream and in order). When a stream is destroyed, its
 *     cache is handed back.
 *   - Expandable segments (`expandable_segments`, devices with has_vm): per stream and pool the
 *     pool reserves address space and maps `page_size` chunks of physical memory on demand. Only
 *     mapped memory is cached; when no cached block fits, pages are mapped at the end of a free
 *     block (one device call per contiguous run). Free pages are unmapped by empty_cache, trim and
 *     the out-of-memory ladder. Devices that cannot support them well (no virtual memory, a page
 *     above 1/8 of the device, too little address space) get classic segments, said once in the
 *     log and in the statistics (expandable_fallback).
 *
 * Out-of-memory ladder (gk_pool_malloc, in this order; each rung only when the ones before failed
 * for lack of memory; any other device error is returned as it is, its text in
 * gk_pool_last_error):
 *   1. best fit in the cache (after polling pending events);
 *   2. the pressure callbacks (gk_pool_add_pressure_callback), then best fit again;
 *   3. when gc_threshold > 0 and reserved bytes exceed gc_threshold * limit (the limit defaults to
 *      the device's total memory), free every cached unsplit large segment at least as old as the
 *      average, in passes, until below it (PyTorch's collection);
 *   4. a backend allocation (a new segment, or a mapping of expandable pages); the limit applies;
 *   5. when max_split_size is set, free cached oversize blocks, then the backend again;
 *   6. synchronize pending events and free every unsplit cached block (unmap every free page)
 *      (num_sync_all_streams), then best fit and the backend again (num_alloc_retries);
 *   7. fail: num_ooms, an out-of-memory report (gk_pool_oom_report), return GK_EDEVOOM.
 *
 * Threads: every function is thread-safe unless it says otherwise. Each pool has one lock, taken
 * once per allocation or free (live pointers are in a map under it). Device allocations, mappings,
 * frees, unmappings and the synchronizations before them run after the lock is dropped, on pieces
 * taken out of the pool first (with release_lock=0 allocations and mappings keep it); only event
 * records and queries, which do not block, run under it. Pressure callbacks run without it and may
 * call gk_pool_free. A stream's destroy hook waits for work in progress outside the lock. */
#ifndef GPUKIT_POOL_H
#define GPUKIT_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "device.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_pool gk_pool;

/* Settings. Start from gk_pool_config_default() or gk_pool_config_preset(); sizes in bytes. The
 * string keys accepted by gk_pool_config_set() are given per field. */
typedef struct gk_pool_config {
    size_t size;                      /* sizeof(gk_pool_config) (set by _default and _preset) */
    gk_logger logger;                 /* where the pool logs; default gk_logger_default() */
    size_t round_bytes;               /* "round": request rounding; a power of two >= 256 (512) */
    unsigned divisions;               /* "divisions": power-of-two divisions; 0 or 1 = off */
    size_t small_max;                 /* "small_max": largest small request (1 MiB) */
    size_t small_segment;             /* "small_segment": small-pool segment size (2 MiB) */
    size_t large_segment;             /* "large_segment": segment for mid requests (20 MiB) */
    size_t min_large_alloc;           /* "min_large_alloc": own segment from here (10 MiB) */
    size_t round_large;               /* "round_large": rounding of own segments (2 MiB) */
    size_t max_split_size;            /* "max_split_size": SIZE_MAX = unlimited (the default) */
    size_t max_non_split_rounding;    /* "max_non_split_rounding": oversize slack (20 MiB) */
    int expandable_segments;          /* "expandable_segments": 0/1; ignored without has_vm */
    size_t page_size;                 /* "page_size": expandable large-pool page (2 MiB) */
    size_t limit_bytes;               /* "limit": hard cap on reserved bytes; 0 = none */
    double limit_fraction;            /* "fraction": cap as a fraction of total memory; 0 = none */
    double gc_threshold;              /* "gc_threshold": in (0,1) to collect old blocks; 0 = off */
    int release_lock_on_device_alloc; /* "release_lock": backend segment allocation unlocked (1) */
    size_t history;                   /* "history": history ring entries; 0 = off */
    /* Where the pool's figures are published: NULL (default) for the process registry
     * (gk_metrics_default(), which `gpukit run` receives). Series gpukit_alloc_in_use_bytes,
     * _reserved_bytes, _active_bytes, _limit_bytes, _largest_free_block_bytes (gauges) and
     * gpukit_alloc_ooms_total, _retries_total, _device_mallocs_total, _device_frees_total
     * (counters), labelled device="cuda:0" (or "host", "sim") and pool=<name>; they are read
     * from the pool's statistics only when the registry is read, so allocation pays nothing. */
    gk_metrics *metrics;
    const char *name; /* the pool label (copied; default "default"); give each pool its own */
} gk_pool_config;

/* Fills `cfg` with the `default` preset. Reads no environment variable. */
GK_API void gk_pool_config_default(gk_pool_config *cfg, size_t size);
#define gk_pool_config_default(cfg) (gk_pool_config_default)((cfg), sizeof *(cfg))

/* Fills `cfg` with a named preset: "default" (PyTorch's rules with expandable segments of 2 MiB
 * pages where the device has virtual memory) or "pytorch" (PyTorch's documented default policy:
 * the rules above with no expandable segments, no limit, no GC). Reads no environment variable.
 * Returns 0 or -EINVAL (an unknown name; the message lists the presets). */
GK_API int gk_pool_config_preset(gk_pool_config *cfg, const char *name, size_t size);
#define gk_pool_config_preset(cfg, name) (gk_pool_config_preset)((cfg), (name), sizeof *(cfg))

/* Applies the environment to `cfg`: GK_LOG (the logger's level), then GK_POOL_CONF
 * ("key=value,..." with the keys of gk_pool_config_set, on top of what cfg holds). Returns 0, or
 * the first error with a message naming the variable, the key and the fix; the keys before it
 * keep their new values. The tool calls it on every pool it makes, so GK_POOL_CONF reaches every
 * pool of `gpukit`; a program decides for itself whether its pools read it. */
GK_API int gk_pool_config_from_env(gk_pool_config *cfg);

/* Sets one field by its key ("max_split_size", "limit", ... as listed in gk_pool_config) from
 * text (sizes as gk_parse_size reads them; "unlimited" only for max_split_size,
 * max_non_split_rounding and limit). Each key has a valid range (docs/pool.md); gk_pool_create
 * checks the same ranges for fields set directly. Returns 0, -ENOENT for an unknown key (or one
 * whose field lies beyond cfg->size, in a program built against an older header) or -EINVAL for a
 * bad value or one out of range; the message names the key, the value and the range or fix, in
 * gk_last_error() and in err (when errlen > 0). */
GK_API int gk_pool_config_set(gk_pool_config *cfg, const char *key, const char *value, char *err,
                              size_t errlen);

/* Applies "key=value,key=value,..." with gk_pool_config_set. Stops at the first error. */
GK_API int gk_pool_config_parse(gk_pool_config *cfg, const char *text, char *err, size_t errlen);

/* Creates a pool on `dev` (which must outlive it). `cfg` NULL means gk_pool_config_default(); it
 * is copied, up to cfg->size. Registers a stream-destroy hook on the device, and its series in
 * cfg->metrics (see gk_pool_config; a registry that refuses them only costs the pool its
 * figures). Starts no thread. Returns 0, -EINVAL (bad setting), -ENOMEM or the device's error,
 * with the message in gk_last_error(). */
GK_API int gk_pool_create(gk_device *dev, const gk_pool_config *cfg, gk_pool **out);

/* Deprecated alias of gk_last_error(), kept for one release. */
GK_API const char *gk_pool_create_error(void) GK_DEPRECATED("use gk_last_error()");

/* Another allocator's figures (PyTorch's torch.cuda.memory_stats(), say), published as a pool's.
 * A field that is NAN is not known and not published. Set `.size = sizeof(gk_alloc_figures)`;
 * fields beyond the size count as unknown. */
typedef struct gk_alloc_figures {
    size_t size;
    double in_use_bytes;   /* bytes handed out: gpukit_alloc_in_use_bytes */
    double reserved_bytes; /* bytes held from the device: gpukit_alloc_reserved_bytes */
    double active_bytes;   /* bytes allocated or waiting on events: gpukit_alloc_active_bytes */
    double ooms;           /* allocations that failed, a running total: gpukit_alloc_ooms_total */
    double retries;        /* allocations that freed the cache and retried: _retries_total */
    double device_mallocs; /* device allocations: gpukit_alloc_device_mallocs_total */
} gk_alloc_figures;

/* Sets the series a pool publishes (see gk_pool_config.metrics) from `f`, labelled
 * device=`device` ("cuda:0") and pool=`name` ("torch"), in registry `m` (NULL:
 * gk_metrics_default(), which the process publisher sends under `gpukit run` and to
 * `gpukit serve --statsd`). Gauges take the figures; the counters take the rise of the running
 * totals over what was published (a total that fell, after the allocator reset its statistics,
 * adds nothing until it passes the published one: counters never go down). The report's fragmentation rule and the dashboard read them as a pool's.
 * Returns 0, -EINVAL (NULL arguments, a size below sizeof(size_t), a negative or infinite figure,
 * with a message naming it), or the registry's error (a name clash, a cap). Thread-safe. */
GK_API int gk_alloc_figures_publish(gk_metrics *m, const char *device, const char *name,
                                    const gk_alloc_figures *f);

/* Frees every segment back to the device (live blocks are logged as leaks at warn level and
 * freed with their segments), destroys the pool's events and removes its stream hook. Waits for
 * pending events. NULL is a no-op. Not thread-safe against other calls on the same pool. */
GK_API void gk_pool_destroy(gk_pool *pool);

/* Allocates `size` bytes for use on `stream` (NULL: the default stream), following the ladder
 * above. Returns 0 and stores the pointer, -EINVAL for size 0, GK_EDEVOOM when the ladder fails or
 * `size` exceeds the device's memory (the report is kept: gk_pool_oom_report), -ENOMEM when host
 * memory for bookkeeping runs out, or a device error that is not about memory, unchanged (its text
 * in gk_pool_last_error).
 * The `tagged` form records `tag` (copied, up to 31 characters) for tracking and reports. */
GK_API int gk_pool_malloc(gk_pool *pool, size_t size, gk_stream *stream, void **ptr);
GK_API int gk_pool_malloc_tagged(gk_pool *pool, size_t size, gk_stream *stream, const char *tag,
                                 void **ptr);

/* Returns a block to the pool. NULL is a no-op. A pointer the pool never gave out, or one already
 * freed, is counted (num_invalid_free / num_double_free), logged at warn level and answered with
 * -EINVAL; nothing else changes. The block is reused at once by its stream, or after the events
 * of the streams recorded with gk_pool_record_stream have completed. */
GK_API int gk_pool_free(gk_pool *pool, void *ptr);

/* Marks `stream` as a user of the live block `ptr` (uses on the block's own stream are ignored).
 * Returns 0, or -EINVAL for an unknown pointer. */
GK_API int gk_pool_record_stream(gk_pool *pool, void *ptr, gk_stream *stream);

/* Waits for pending events, then gives every unsplit cached block back to the device and unmaps
 * every free expandable page. Live blocks are untouched. Returns 0 or the first device error. */
GK_API int gk_pool_empty_cache(gk_pool *pool);

/* Gives cached memory back, largest unsplit blocks first (then free expandable pages), until
 * reserved bytes are at most `target` or nothing more can go. *released (may be NULL) receives the
 * bytes given back. Returns 0 or a device error. */
GK_API int gk_pool_trim(gk_pool *pool, size_t target, size_t *released);

/* Sets the hard cap on reserved bytes (0 = none). Memory already reserved above it is not taken
 * back here (call gk_pool_trim). Returns 0. */
GK_API int gk_pool_set_limit(gk_pool *pool, size_t bytes);

/* The device the pool was created on. */
GK_API gk_device *gk_pool_device(gk_pool *pool);

/* Frees cached unsplit large blocks, oldest (by allocations since they were cached) first, until
 * reserved bytes are at most `target`; the same pass the ladder's GC rung runs. *released (may be
 * NULL) receives the bytes given back. Returns 0 or a device error. */
GK_API int gk_pool_collect(gk_pool *pool, size_t target, size_t *released);

/* The effective cap in bytes: the smaller of limit_bytes and fraction * total; 0 = none. */
GK_API size_t gk_pool_get_limit(gk_pool *pool);

/* Called on rung 2 of the ladder with the rounded size wanted; returns non-zero if it freed
 * something. Runs without the pool lock on the allocating thread; it may call gk_pool_free. */
typedef int (*gk_pool_pressure_fn)(void *user, size_t bytes);
/* Returns 0, or -ENOSPC past 8 callbacks. remove returns -ENOENT when the pair is unknown. */
GK_API int gk_pool_add_pressure_callback(gk_pool *pool, gk_pool_pressure_fn fn, void *user);
GK_API int gk_pool_remove_pressure_callback(gk_pool *pool, gk_pool_pressure_fn fn, void *user);

/* The text of the last out-of-memory report ("" when none): the requested and rounded sizes, the
 * stream, the device's total and free memory, allocated, reserved and reserved-but-unallocated
 * bytes, the limit, the largest free block, external fragmentation, the five largest live blocks
 * with their tags, and a hint. Copies it into buf (truncated to len) and returns its full length.
 */
GK_API size_t gk_pool_oom_report(gk_pool *pool, char *buf, size_t len);

/* Deprecated alias of gk_last_error() (the message of this thread's last failing call), kept for
 * one release. */
GK_API const char *gk_pool_last_error(gk_pool *pool) GK_DEPRECATED("use gk_last_error()");

/* --- statistics --------------------------------------------------------------------------- */

/* PyTorch's arrays, each {current, peak, allocated, freed} per pool (all, small_pool,
 * large_pool): XX(name, description). */
#define GK_POOL_STAT_MAP(XX)                                                                       \
    XX(allocation, "blocks handed out")                                                            \
    XX(segment, "segments reserved from the device")                                               \
    XX(active, "blocks allocated or waiting on events")                                            \
    XX(inactive_split, "free blocks inside split segments")                                        \
    XX(allocated_bytes, "bytes handed out (rounded)")                                              \
    XX(reserved_bytes, "bytes reserved from the device")                                           \
    XX(active_bytes, "bytes allocated or waiting on events")                                       \
    XX(inactive_split_bytes, "free bytes inside split segments")                                   \
    XX(requested_bytes, "bytes asked for (before rounding)")

/* PyTorch's scalars plus gpukit's counters: XX(name, description). */
#define GK_POOL_COUNTER_MAP(XX)                                                                    \
    XX(num_alloc_retries, "allocations that freed the cache and retried")                          \
    XX(num_ooms, "allocations that failed")                                                        \
    XX(num_sync_all_streams, "synchronizations of all pending events")                             \
    XX(num_device_alloc, "device allocations and page mappings")                                   \
    XX(num_device_free, "device frees and page unmappings")                                        \
    XX(num_gc_runs, "garbage-collection passes")                                                   \
    XX(num_invalid_free, "frees of pointers the pool never gave out")                              \
    XX(num_double_free, "frees of blocks already free")                                            \
    XX(num_cache_hits, "allocations served from the cache")                                        \
    XX(backend_ns, "nanoseconds spent in device allocation, free, map and unmap")

enum { GK_POOL_ALL = 0, GK_POOL_SMALL = 1, GK_POOL_LARGE = 2, GK_POOL_KINDS = 3 };

typedef struct gk_pool_stat {
    int64_t current, peak;     /* value now, highest value since the last peak reset */
    uint64_t allocated, freed; /* sums of increases and decreases since the last reset */
} gk_pool_stat;

typedef struct gk_pool_stats {
    size_t size; /* bytes filled (see gpukit/version.h) */
#define GK__POOL_STAT_FIELD(name, desc) gk_pool_stat name[GK_POOL_KINDS];
    GK_POOL_STAT_MAP(GK__POOL_STAT_FIELD)
#undef GK__POOL_STAT_FIELD
#define GK__POOL_COUNTER_FIELD(name, desc) uint64_t name;
    GK_POOL_COUNTER_MAP(GK__POOL_COUNTER_FIELD)
#undef GK__POOL_COUNTER_FIELD
    gk_pool_stat oversize_allocations; /* blocks of at least max_split_size */
    gk_pool_stat oversize_segments;
    uint64_t max_split_size;      /* the setting (SIZE_MAX when unlimited) */
    uint64_t largest_free_block;  /* largest free (mapped) cached block, bytes */
    uint64_t free_cached_bytes;   /* free bytes inside reserved memory */
    double frag_external;         /* 1 - largest_free_block / free_cached_bytes; 0 when none free */
    uint64_t limit;               /* the effective cap; 0 = none */
    uint64_t expandable_segments; /* 1 when the pool maps pages on demand, 0 for classic segments */
    uint64_t expandable_fallback; /* 1 when expandable segments were asked for but the device
                                     cannot support them (well): classic segments are used and
                                     the pool's log said why when it was created */
} gk_pool_stats;

/* Fills `out`. Every figure is kept up to date as blocks come and go: the cost does not depend on
 * the pool's size. Returns 0 or -EINVAL. */
GK_API int gk_pool_get_stats(gk_pool *pool, gk_pool_stats *out, size_t size);
#define gk_pool_get_stats(pool, out) (gk_pool_get_stats)((pool), (out), sizeof *(out))

/* Sets every peak to its current value. */
GK_API void gk_pool_reset_peak(gk_pool *pool);

/* Clears allocated and freed of every array, num_alloc_retries and num_ooms. */
GK_API void gk_pool_reset_accumulated(gk_pool *pool);

/* Nested measuring scopes (per-phase peaks), at most 16 deep. push starts a scope; pop ends the
 * innermost one and fills `out` with that scope's view: peaks reached during the scope,
 * allocated/freed accumulated during it, current values now, counters as deltas (a binding may
 * pass out NULL with size 0 to discard it). Returns 0, -ENOSPC when too deep, -ENOENT when no
 * scope is open. */
GK_API int gk_pool_scope_push(gk_pool *pool);
GK_API int gk_pool_scope_pop(gk_pool *pool, gk_pool_stats *out, size_t size);
#define gk_pool_scope_pop(pool, out) (gk_pool_scope_pop)((pool), (out), sizeof *(out))

/* Writes a table laid out like PyTorch's memory_summary() (75 columns) to `out`. Returns 0 or
 * -EIO. */
GK_API int gk_pool_summary(gk_pool *pool, FILE *out);

/* Writes the statistics as one JSON object with PyTorch's flat keys ("allocated_bytes.all.peak",
 * "num_ooms", ...) plus gpukit's. Fields beyond stats->size count as 0. Returns 0, -EINVAL or
 * -EIO. */
GK_API int gk_pool_stats_json(const gk_pool_stats *stats, FILE *out);

/* The memory_summary table for a stats struct (used by gk_pool_summary); fields beyond
 * stats->size count as 0. Returns 0, -EINVAL or -EIO. */
GK_API int gk_pool_stats_table(const gk_pool_stats *stats, FILE *out);

/* --- diagnostics -------------------------------------------------------------------------- */

/* Starts writing an RMM-style CSV log (Thread,Time,Action,Pointer,Size,Stream; actions allocate,
 * free, allocate failure) of every allocation and free to `out` (NULL stops). The header is
 * written at once. The FILE stays the caller's and must outlive the logging. */
GK_API int gk_pool_set_trace_log(gk_pool *pool, FILE *out);

/* Starts (entries > 0, replacing the ring) or stops (0) recording the history ring. Actions use
 * PyTorch's names: alloc, free_requested, free_completed, segment_alloc, segment_free,
 * segment_map, segment_unmap, oom. Returns 0 or -ENOMEM. */
GK_API int gk_pool_record_history(gk_pool *pool, size_t entries);

/* Writes a snapshot as JSON with PyTorch's field names: {"segments": [{address, total_size,
 * stream, segment_type, allocated_size, active_size, requested_size, blocks: [{address, size,
 * requested_size, state, tag}]}], "device_traces": [[{action, addr, size, stream, time_us}]]}.
 * Returns 0 or -EIO. */
GK_API int gk_pool_snapshot_json(gk_pool *pool, FILE *out);

/* Lists the live blocks (address, size, requested size, stream, tag with its control characters
 * escaped as gk_text_escape does), largest first, one per line.
 * Returns the number of live blocks, or -EIO. */
GK_API long gk_pool_report_live(gk_pool *pool, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
