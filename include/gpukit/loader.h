/* The prefetching data loader: datasets, a stateless seeded sampler, worker threads filling a ring
 * of pre-allocated (pinned) host slots in order, and a device stage that copies each batch on the
 * loader's own stream with the three ordering edges in place.
 *
 * A typical loop (see docs/loader.md for a complete program):
 *
 *     gk_dataset *ds;  gk_dataset_open_records("train.gkr", NULL, &ds);
 *     gk_loader_config cfg;  gk_loader_config_default(&cfg);
 *     cfg.batch_size = 256;  cfg.workers = 2;  cfg.shuffle = 1;  cfg.device = dev;
 *     gk_loader *ld;  gk_loader_create(&cfg, ds, &ld);
 *     gk_batch b;
 *     while (gk_loader_next(ld, stream, -1, &b) == 0)
 *         launch_step(b.device, b.count, stream);   // b is released by the next call
 *     gk_loader_destroy(ld);  gk_dataset_destroy(ds);
 *
 * Order. The epoch order is a keyed permutation of [0, N) computed from (seed, epoch); ranks take
 * positions rank, rank+world, ... of it exactly as PyTorch's DistributedSampler does (padding by
 * wrapping, or dropping the tail); batches are cut from that, and delivery is strictly in order.
 * The delivered sequence depends only on (seed, epoch, rank, world, batch size, flags), never on
 * the number of workers or on timing.
 *
 * Ordering edges with a device (events per slot s):
 *   (a) the caller's stream waits for the copy into slot s before the caller's work reads it
 *       (gk_loader_next enqueues the wait);
 *   (b) the next copy into device slot s waits until the caller's work that read it is done
 *       (gk_loader_release records an event on the caller's stream; the copy stream waits on it);
 *   (c) host slot s is not refilled until the copy out of it has finished (the worker waits on the
 *       copy's event).
 *
 * Threads. A loader is driven by one consumer thread (next/release/state/seek are not meant to be
 * called concurrently); gk_loader_get_stats may be called from any thread. The worker threads run
 * the dataset's callbacks concurrently, so read callbacks must be thread-safe. A crash inside a
 * callback crashes the process (threads cannot be isolated). Do not fork() while a loader exists.
 * Workers and consumer hand batches over without a mutex (per-slot sequence numbers); a side that
 * waits spins briefly only when every thread has a CPU of its own, then sleeps on a futex.
 */
#ifndef GPUKIT_LOADER_H
#define GPUKIT_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Datasets                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct gk_dataset gk_dataset;

/* What a read callback receives besides the item. */
typedef struct gk_read_ctx {
    size_t size;           /* sizeof(gk_read_ctx) in the library (fields may be added) */
    void *worker_state;    /* what worker_open stored for this worker, else NULL */
    int worker;            /* worker number 0..workers-1 (0 also for a loader without workers) */
    uint64_t seed, epoch;  /* for per-item randomness: gk_item_seed(seed, epoch, index) */
    char *err;             /* a failing read writes a one-line message here */
    size_t err_len;        /* size of err */
    uint64_t failed_index; /* read_batch sets the dataset index that failed */
} gk_read_ctx;

/* A dataset is a table of callbacks over a user context. Every item has the same size. Set
 * `.size = sizeof(gk_dataset_ops)`; callbacks beyond the size are taken as NULL. */
typedef struct gk_dataset_ops {
    size_t size;
    /* Number of items and bytes per item; called once by gk_dataset_create. Required. */
    uint64_t (*count)(void *ctx);
    size_t (*item_size)(void *ctx);
    /* Reads item `index` into dst (item_size bytes). `item_seed` is gk_item_seed(rc->seed,
     * rc->epoch, index). Returns 0 or a negative code (and writes rc->err). Required. */
    int (*read_item)(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t item_seed, void *dst);
    /* Optional: reads n items into dst (n * item_size bytes, in the given order). Used instead of
     * read_item when present. On failure sets rc->failed_index. */
    int (*read_batch)(void *ctx, gk_read_ctx *rc, const uint64_t *indices, size_t n, void *dst);
    /* Optional: a hint that these items will be read soon (read-ahead). */
    void (*will_need)(void *ctx, const uint64_t *indices, size_t n);
    /* Optional: run on each worker thread when it starts and before it exits; open may store
     * per-worker state (file descriptors, scratch) in *state. A failing open fails the loader's
     * create with the message written to err. */
    int (*worker_open)(void *ctx, int worker, void **state, char *err, size_t err_len);
    void (*worker_close)(void *ctx, int worker, void *state);
    /* Optional: frees ctx; called by gk_dataset_destroy. */
    void (*destroy)(void *ctx);
} gk_dataset_ops;

/* Wraps `ops` over `ctx` (ctx borrowed until destroy; ops is copied up to ops->size). `name` is
 * used in messages (copied; NULL gives "dataset"). Returns 0, -EINVAL (missing callback, zero
 * count or size, ops->size not set) or -ENOMEM. On failure ops->destroy is not called. */
GK_API int gk_dataset_create(const gk_dataset_ops *ops, void *ctx, const char *name,
                             gk_dataset **out);

/* An in-memory dataset over `data` (count * item_size bytes, borrowed: it must outlive the
 * dataset). Returns 0, -EINVAL or -ENOMEM. */
GK_API int gk_dataset_memory(const void *data, size_t item_size, uint64_t count, gk_dataset **out);

/* Destroys the dataset (calls ops->destroy). NULL is a no-op. A dataset must outlive every loader
 * created over it. */
GK_API void gk_dataset_destroy(gk_dataset *ds);

GK_API uint64_t gk_dataset_count(const gk_dataset *ds);
GK_API size_t gk_dataset_item_size(const gk_dataset *ds);
GK_API const char *gk_dataset_name(const gk_dataset *ds);

/* Deprecated alias of gk_last_error(), kept for one release. */
GK_API const char *gk_dataset_error(void) GK_DEPRECATED("use gk_last_error()");

/* --- fixed-record files -------------------------------------------------------------------
 *
 * Layout (all integers little-endian):
 *   offset  0  char[8]   magic "GKRECORD"
 *           8  uint32    version (1)
 *          12  uint32    header bytes used (128)
 *          16  uint64    record size in bytes (>= 1)
 *          24  uint64    record count
 *          32  uint64    data offset (a multiple of 4096, >= 4096)
 *          40  char[16]  element type, numpy style ("|u1" for raw bytes, "<f4", ...)
 *          56  uint32    number of dimensions of one record (0..8)
 *          60  uint32    zero
 *          64  uint64[8] shape of one record (unused entries 0)
 *  then zeros up to the data offset, then count * record_size bytes of records. The file size must
 *  be exactly data_offset + count * record_size. */
#define GK_RECORDS_MAGIC      "GKRECORD"
#define GK_RECORDS_VERSION    1
#define GK_RECORDS_DATA_ALIGN 4096
#define GK_RECORDS_MAX_DIMS   8

typedef struct gk_records_info {
    size_t size; /* bytes filled (see gpukit/version.h) */
    uint32_t version;
    uint64_t record_size, record_count, data_offset, file_size;
    char dtype[17]; /* NUL-terminated */
    uint32_t ndim;
    uint64_t shape[GK_RECORDS_MAX_DIMS];
} gk_records_info;

/* Reads and checks the header of `path`. Returns 0, -ENOENT/-EACCES/-EIO (cannot open or read),
 * GK_ECORRUPT (bad magic, bad field, size not matching the header) or GK_EVERSION; the message
 * names the file and the problem (in gk_last_error(), and in err when err_len > 0). */
GK_API int gk_records_inspect(const char *path, gk_records_info *info, char *err, size_t err_len,
                              size_t size);
#define gk_records_inspect(path, info, err, err_len)                                               \
    (gk_records_inspect)((path), (info), (err), (err_len), sizeof *(info))

typedef enum gk_records_access {
    GK_RECORDS_MMAP = 0, /* memory-map the file (default) */
    GK_RECORDS_PREAD = 1 /* pread each record (cold or very large files) */
} gk_records_access;

typedef struct gk_records_options {
    size_t size; /* sizeof(gk_records_options) (set by gk_records_options_default) */
    gk_records_access access;
    /* 1 (shuffled reads): the kernel's read-around stays on (MADV_NORMAL, POSIX_FADV_NORMAL);
     * 0: MADV_SEQUENTIAL / POSIX_FADV_SEQUENTIAL */
    int random;
    /* 1: honour will_need hints (records >= 4 KiB, the loader's threshold): the records' pages,
     * coalesced into ranges, go to posix_fadvise(WILLNEED); a mapped file is probed first (one
     * page, mincore) and a batch found cached is not hinted */
    int readahead;
} gk_records_options;

/* Fills `opt` with the defaults: mmap, random, readahead. */
GK_API void gk_records_options_default(gk_records_options *opt, size_t size);
#define gk_records_options_default(opt) (gk_records_options_default)((opt), sizeof *(opt))

/* Opens a fixed-record file as a dataset (one item = one record). opt NULL = the defaults.
 * Errors as gk_records_inspect; message in gk_last_error().
 *
 * A file changed while in use is an error naming it and what changed (GK_ECORRUPT, or -EIO for
 * an I/O error), never a SIGBUS:
 *  - mapped reads copy under a fault guard: the first open of a mapped record file installs a
 *    SIGBUS handler for the process, which turns a fault inside gpukit's copy into an error for
 *    the batch and passes every other SIGBUS to the handler installed before it (or the default
 *    action). After each batch an 8-byte canary near the file's end is read: a cut anywhere that
 *    changes bytes a record could return faults or changes it, so the first batch read after a
 *    cut fails (a cut that only drops trailing zero bytes changes no record). If another handler
 *    replaces gpukit's later, the dataset notices at the next epoch and reads with pread instead.
 *  - pread reads see a cut as a short read (and read the canary too).
 *  - once per epoch (at its first read, not per batch) the size, modification time and identity
 *    are compared with the file as opened: "grown", "modified while in use" (rewritten in place)
 *    and "replaced" (the path now names another file; the run still reads the one it opened) are
 *    found there. */
GK_API int gk_dataset_open_records(const char *path, const gk_records_options *opt,
                                   gk_dataset **out);

/* Writes a fixed-record file: open, write records (any number of calls), close. The header is
 * written by close. dtype NULL = "|u1"; shape NULL with ndim 0 = one dimension of record_size.
 * The file is written through gk_output (gpukit/output.h) with GK_OUTPUT_SEEKABLE: into a
 * temporary file beside `path` that close renames over it, so an existing file stays whole until
 * the new one is complete; a device, pipe or directory is refused. Returns 0 or a negative code
 * (-ENOSPC for a full disk, -EFBIG at a file-size limit, ...) with the message (naming the file)
 * in gk_last_error(). close frees the writer even on failure; abort removes the temporary file
 * and never touches `path`. */
typedef struct gk_records_writer gk_records_writer;
GK_API int gk_records_writer_open(const char *path, uint64_t record_size, const char *dtype,
                                  uint32_t ndim, const uint64_t *shape, gk_records_writer **out);
GK_API int gk_records_writer_write(gk_records_writer *w, const void *records, uint64_t count);
GK_API int gk_records_writer_close(gk_records_writer *w);
GK_API void gk_records_writer_abort(gk_records_writer *w);

/* Checks that about `records` more records fit on the file's filesystem before they are written
 * (gk_output_reserve). Returns 0, or -ENOSPC with the figures in gk_last_error(). */
GK_API int gk_records_writer_reserve(gk_records_writer *w, uint64_t records);

/* --- NumPy .npy arrays -----------------------------------------------------------------------
 *
 * `gpukit data pack --npy` turns an array into a record file, one record per row (the first
 * dimension). The header is read strictly: format versions 1 to 3, a dict with exactly 'descr',
 * 'fortran_order' and 'shape'; element types b, i, u, f, c of 1 to 64 bytes; C order (or a
 * Fortran order that is the same in memory); at most GK_NPY_MAX_DIMS dimensions; no dimension 0;
 * records of at most GK_NPY_MAX_RECORD bytes and at most 2^62 bytes in all (every product is
 * overflow-checked). */
#define GK_NPY_MAX_DIMS   (GK_RECORDS_MAX_DIMS + 1)
#define GK_NPY_MAX_RECORD (1ull << 40)

typedef struct gk_npy_info {
    size_t size;        /* bytes filled (see gpukit/version.h) */
    char dtype[17];     /* "<f4" */
    uint32_t item_size; /* bytes per element */
    int fortran_order;  /* as the header says */
    uint32_t ndim;      /* 1 .. GK_NPY_MAX_DIMS */
    uint64_t shape[GK_NPY_MAX_DIMS];
    uint64_t header_bytes; /* where the data starts */
    uint64_t record_size;  /* item_size times shape[1..ndim-1] */
    uint64_t data_bytes;   /* shape[0] times record_size */
} gk_npy_info;

/* Parses a .npy header from the first `len` bytes of a file. Returns 0, GK_ECORRUPT (not .npy, a
 * malformed or truncated header), GK_EVERSION (format version), -ENOTSUP (a type, order or shape
 * that cannot be records) or -EINVAL; the reason is in gk_last_error() and `err`. */
GK_API int gk_npy_parse_header(const void *buf, size_t len, gk_npy_info *info, char *err,
                               size_t errlen, size_t size);
#define gk_npy_parse_header(buf, len, info, err, errlen)                                           \
    (gk_npy_parse_header)((buf), (len), (info), (err), (errlen), sizeof *(info))

/* Reads the header of the .npy file `path` and checks the file's size against it. Errors as
 * gk_npy_parse_header, plus -EINVAL for a path that is not a regular file (a pipe, a directory)
 * and the negative errno of open or read; `err` names the file. */
GK_API int gk_npy_inspect(const char *path, gk_npy_info *info, char *err, size_t errlen,
                          size_t size);
#define gk_npy_inspect(path, info, err, errlen)                                                    \
    (gk_npy_inspect)((path), (info), (err), (errlen), sizeof *(info))

/* --- llm.c token shards -------------------------------------------------------------------
 *
 * A shard is a 256 x int32 header (1024 bytes: [0] magic, [1] version, [2] token count) followed
 * by the tokens. Accepted: magic 20240520 version 1 (uint16 tokens, llm.c's GPT-2 format), magic
 * 20240520 version 2 (uint32 tokens, gpukit's extension), magic 20240801 version 7 (uint32 tokens,
 * llm.c's Llama-3 format). The file size must be exactly 1024 + count * token bytes. */
#define GK_TOKENS_MAGIC        20240520
#define GK_TOKENS_MAGIC_LLAMA3 20240801
#define GK_TOKENS_HEADER_BYTES 1024

typedef struct gk_tokens_info {
    size_t size; /* bytes filled (see gpukit/version.h) */
    int32_t magic, version;
    uint64_t tokens;      /* token count from the header */
    uint32_t token_bytes; /* 2 or 4 */
    uint64_t file_size;
} gk_tokens_info;

/* Reads and checks one shard's header (errors as gk_records_inspect). */
GK_API int gk_tokens_inspect(const char *path, gk_tokens_info *info, char *err, size_t err_len,
                             size_t size);
#define gk_tokens_inspect(path, info, err, err_len)                                                \
    (gk_tokens_inspect)((path), (info), (err), (err_len), sizeof *(info))

/* Opens the shards matching `pattern` (glob(3), sorted by name) as a dataset whose items are
 * windows of B*T+1 contiguous tokens (inputs = tokens [0, B*T), targets = tokens [1, B*T+1): two
 * views of one slot). Shard k contributes floor((tokens_k - 1) / (group*B*T)) * group items; item j
 * of a shard starts at token j*B*T. With group = world and a loader of batch size 1, shuffle off,
 * rank r receives exactly the windows llm.c's dataloader gives rank r (its per-shard sample layout
 * and its skip of each shard's tail). All shards must share one token width. Offsets are 64-bit.
 * Every shard is checked at open (magic, version, size against the count, at least group*B*T+1
 * tokens); errors name the shard. group 0 means 1. Reads use pread. */
GK_API int gk_dataset_open_tokens(const char *pattern, uint32_t B, uint32_t T, uint32_t group,
                                  gk_dataset **out);

/* Bytes per token of a token dataset (2 or 4), 0 for any other dataset. */
GK_API uint32_t gk_dataset_token_bytes(const gk_dataset *ds);

/* ------------------------------------------------------------------------------------------ */
/* Sampler                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The sampler is a plain value with O(1) state: any batch of any epoch is computed directly. */
typedef struct gk_sampler {
    size_t size;         /* bytes filled by gk_sampler_init (see gpukit/version.h) */
    uint64_t count;      /* N, dataset items */
    uint64_t batch_size; /* B */
    uint64_t seed;
    uint32_t rank, world;
    int shuffle;         /* 1: keyed permutation per epoch; 0: identity order */
    int shard_drop_last; /* DistributedSampler's drop_last: drop the tail instead of padding */
    int drop_last;       /* BatchSampler's drop_last: drop the last partial batch */
    uint64_t per_rank;   /* items per rank per epoch (DistributedSampler's num_samples) */
    uint64_t batches;    /* batches per rank per epoch */
    uint32_t half_bits;  /* Feistel half width */
} gk_sampler;

/* Initializes `s`. Returns 0, or -EINVAL (zero count, batch or world, rank >= world, count above
 * 2^62, or no batch per epoch) with a message in gk_last_error() (and in err when err_len > 0). */
GK_API int gk_sampler_init(gk_sampler *s, uint64_t count, uint64_t batch_size, uint64_t seed,
                           uint32_t rank, uint32_t world, int shuffle, int shard_drop_last,
                           int drop_last, char *err, size_t err_len, size_t size);
#define gk_sampler_init(s, count, batch_size, seed, rank, world, shuffle, shard_drop_last,         \
                        drop_last, err, err_len)                                                   \
    (gk_sampler_init)((s), (count), (batch_size), (seed), (rank), (world), (shuffle),              \
                      (shard_drop_last), (drop_last), (err), (err_len), sizeof *(s))

/* The epoch's permutation: position pos in [0, N) -> dataset index (identity when shuffle is off).
 * A bijection of [0, N) for every (seed, epoch). */
GK_API uint64_t gk_sampler_permute(const gk_sampler *s, uint64_t epoch, uint64_t pos);

/* Dataset index of this rank's j-th item of `epoch` (j < per_rank). */
GK_API uint64_t gk_sampler_rank_item(const gk_sampler *s, uint64_t epoch, uint64_t j);

/* Writes the dataset indices of batch `batch` (< s->batches) of `epoch` into out (room for
 * batch_size) and returns how many (batch_size, or fewer for a last partial batch). */
GK_API size_t gk_sampler_batch(const gk_sampler *s, uint64_t epoch, uint64_t batch, uint64_t *out);

/* Per-item seed from (seed, epoch, dataset index), independent of workers. */
GK_API uint64_t gk_item_seed(uint64_t seed, uint64_t epoch, uint64_t index);

/* Rank and world from the launcher's environment: RANK/WORLD_SIZE, else SLURM_PROCID/SLURM_NTASKS,
 * else OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE, else 0/1. Returns 0, or -EINVAL with a message
 * naming the variable (in gk_last_error(), and in err when err_len > 0) when a value is not a
 * number or rank >= world (then 0/1 are stored). */
GK_API int gk_loader_rank_from_env(uint32_t *rank, uint32_t *world, char *err, size_t err_len);

/* ------------------------------------------------------------------------------------------ */
/* Loader                                                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct gk_loader gk_loader;

typedef enum gk_loader_error_policy {
    GK_LOADER_FAIL = 0, /* a failed batch is returned by next; every later next returns it too */
    GK_LOADER_SKIP = 1  /* a failed batch is dropped (counted in skips) up to max_skips */
} gk_loader_error_policy;

/* For tests only: drop one ordering edge, to prove that the tests detect its absence. */
enum {
    GK_LOADER_DROP_EDGE_A = 1, /* caller's stream does not wait for the copy */
    GK_LOADER_DROP_EDGE_B = 2, /* next copy into a device slot does not wait for the release */
    GK_LOADER_DROP_EDGE_C = 4  /* host slot refilled without waiting for its copy */
};

typedef struct gk_loader_config {
    size_t size; /* sizeof(gk_loader_config) (set by gk_loader_config_default) */
    gk_logger logger;
    uint64_t batch_size;  /* items per batch (default 32) */
    int workers;          /* worker threads; 0 = the consumer fills in next() (default 1); -1 =
                             one per CPU this process may use (its affinity mask, capped by its
                             cgroup CPU quota) but one for the consumer, at least 1 */
    int depth;            /* ring slots K (default 4, at least 2) */
    uint64_t seed;        /* default 0 */
    uint64_t epoch;       /* first epoch (default 0) */
    uint64_t epochs;      /* epochs to deliver, then next returns GK_LOADER_END; 0 = forever */
    int shuffle;          /* default 0 */
    int drop_last;        /* drop the last partial batch of an epoch (default 0) */
    int shard_drop_last;  /* drop the tail instead of padding by wrapping (default 0) */
    uint32_t rank, world; /* this process's shard: default 0 of 1 (every item); a launcher's
                             values come from gk_loader_config_from_env */
    gk_device *device;    /* NULL: host only (batch.device is NULL); else pinned slots, device
                             slots and a copy stream on this device (borrowed) */
    /* NULL (default): device slots come from gk_device_malloc. Else they come from this pool
     * (borrowed; it must be on cfg.device and outlive the loader): allocated at create on the
     * loader's copy stream, tagged "loader slot", marked with gk_pool_record_stream for every
     * stream a batch is delivered on, and freed back to the pool by destroy (after the caller's
     * work on them is done). A pool out of memory at create fails it with GK_EDEVOOM. */
    gk_pool *pool;
    double timeout;                  /* seconds next waits when given timeout < 0 (default 300) */
    gk_loader_error_policy on_error; /* default GK_LOADER_FAIL */
    uint64_t max_skips; /* SKIP: batches that may be skipped before failing (default 16) */
    /* 1 (default): next releases the previous batch on the stream it was delivered on; 0: the
     * caller releases every batch itself. */
    int auto_release;
    /* Batches of at least this many bytes are split across workers by item ranges (default
     * 4 MiB; 0 never splits). */
    size_t split_bytes;
    /* 1 (default): pass the dataset's will_need the items of the batches up to K ahead, each
     * batch's indices sorted (so the dataset can coalesce them into page ranges): after batch n
     * is marked ready, batch n+K; at the start (create, seek, restore), batches 0..K before
     * batch 0 is read. Only for items of at least 4 KiB. While a built-in dataset reports the
     * hinted items already cached, only every 16th batch is hinted (a probe). */
    int readahead;
    /* Where to publish the loader's figures: NULL (the default) for the process registry
     * (gk_metrics_default(), which `gpukit run` receives); another registry must outlive the
     * loader. Series, labelled device="cuda:0" (or "host", "sim"; "host" also without a device) and loader="<name>":
     * gpukit_loader_items_total, _bytes_total, _batches_total, _skips_total,
     * _wait_seconds_total, _worker_busy_seconds_total, _fill_seconds_total, _copy_seconds_total
     * (counters), gpukit_loader_ring_ready, _first_batch_seconds, _depth (gauges). They are read
     * from gk_loader_get_stats only when the registry is read: next() and the workers never
     * touch them. */
    gk_metrics *metrics;
    const char *name; /* the loader label (copied; default "loader"); give each loader its own */
    unsigned test_drop_edges; /* tests only: GK_LOADER_DROP_EDGE_* (default 0) */
} gk_loader_config;

/* Fills `cfg` with the defaults listed above: rank 0 of 1, so the loader reads every item. Reads
 * no environment variable. */
GK_API void gk_loader_config_default(gk_loader_config *cfg, size_t size);
#define gk_loader_config_default(cfg) (gk_loader_config_default)((cfg), sizeof *(cfg))

/* Applies the environment to `cfg`: GK_LOG (the logger's level), and rank and world from the
 * launcher's variables as gk_loader_rank_from_env reads them (torchrun's RANK/WORLD_SIZE, Slurm,
 * Open MPI), so the loader reads this rank's 1/world share of every epoch, as PyTorch's
 * DistributedSampler does. `found` (may be NULL) receives one line saying what was found ("rank 3
 * of 8 from RANK/WORLD_SIZE: ..." or "no launcher variables ..."), which is also logged at info
 * level. Use it for training loaders; an evaluation loader that must see every item keeps the
 * default rank 0 of 1. Returns 0, or -EINVAL naming the bad variable (rank and world are then
 * unchanged). */
GK_API int gk_loader_config_from_env(gk_loader_config *cfg, char *found, size_t len);

/* Creates a loader over `ds` (borrowed; it must outlive the loader): allocates and touches K host
 * slots (pinned through cfg->device when given), K device slots, per-slot events and a copy
 * stream, then starts the workers, which open their dataset state and begin filling, and
 * registers its series in cfg->metrics (see gk_loader_config). Returns 0,
 * -EINVAL (bad config; the message says which field), -ENOMEM, GK_EDEVOOM, a worker_open error,
 * or a device error, with the message in gk_last_error(). `cfg` NULL means
 * gk_loader_config_default(); it is copied up to cfg->size. A failed create frees everything it
 * made, in reverse order. */
GK_API int gk_loader_create(const gk_loader_config *cfg, gk_dataset *ds, gk_loader **out);

/* Deprecated alias of gk_last_error(), kept for one release. */
GK_API const char *gk_loader_create_error(void) GK_DEPRECATED("use gk_last_error()");

/* One delivered batch. Pointers stay valid until the batch is released. */
typedef struct gk_batch {
    size_t size;           /* bytes filled (see gpukit/version.h) */
    uint64_t seq;          /* delivery number since create or the last seek */
    uint64_t epoch, index; /* epoch and batch number within it */
    size_t count;          /* items (batch_size, or fewer for a last partial batch) */
    size_t item_size;
    size_t bytes;            /* count * item_size */
    const void *host;        /* the host slot */
    void *device;            /* the device slot (NULL without a device) */
    const uint64_t *indices; /* the dataset indices, count of them */
    int last_in_epoch;       /* 1 for the epoch's last batch */
    int slot;                /* ring slot */
} gk_batch;

/* GK_LOADER_END (gpukit/error.h) is returned by next after cfg.epochs epochs. */

/* Delivers the next batch in order. With a device, enqueues on `stream` (NULL = the device's
 * default stream) a wait for the batch's copy (edge a): work queued on `stream` afterwards may
 * read b->device. With auto_release, first releases the previously delivered batch on the stream
 * it was given. `timeout` in seconds (< 0: cfg.timeout; 0: do not wait); without workers the
 * batch is read inside this call, and the timeout covers only the wait, not the read.
 * Returns 0; GK_LOADER_END (a negative code, "end of the configured epochs") after the configured
 * epochs; -ETIMEDOUT with a diagnostic in gk_last_error() (batch, worker, dataset index, time
 * spent in the read); the batch's read error (e.g. GK_ECORRUPT, -EIO) exactly when the failing
 * batch is reached, with the dataset's message (met on a worker thread, copied into the
 * consumer's gk_last_error()); -EBUSY when every slot is held by unreleased batches
 * (auto_release 0). Consumer thread only. */
GK_API int gk_loader_next(gk_loader *ld, gk_stream *stream, double timeout, gk_batch *b,
                          size_t size);
#define gk_loader_next(ld, stream, timeout, b)                                                     \
    (gk_loader_next)((ld), (stream), (timeout), (b), sizeof *(b))

/* Releases a delivered batch after every piece of work that reads it has been queued on `stream`
 * (an event recorded there gates the next copy into its device slot: edge b). Releasing twice, or a
 * batch not delivered, returns -EINVAL. Consumer thread only. */
GK_API int gk_loader_release(gk_loader *ld, const gk_batch *b, gk_stream *stream);

/* The resumable position: batches the consumer released (not batches prefetched). Version 2
 * added the global position (position, epoch_start); restore still reads version 1. */
#define GK_LOADER_STATE_VERSION 2
typedef struct gk_loader_state {
    size_t size;      /* bytes filled (see gpukit/version.h) */
    uint32_t version; /* GK_LOADER_STATE_VERSION */
    uint32_t flags;   /* bit 0 shuffle, bit 1 drop_last, bit 2 shard_drop_last */
    uint64_t seed;
    uint64_t epoch; /* epoch of the next batch to consume */
    uint64_t batch; /* batches of that epoch released */
    uint64_t count; /* dataset items N */
    uint64_t batch_size;
    uint32_t world, rank;
    /* Version 2: the global position in `epoch`, samples consumed by all ranks together (every
     * rank released `batch` batches: epoch_start + batch * batch_size * world, capped at the
     * epoch's end), and where this loader's epoch began (0, or the position a restore under
     * another world size continued it from). */
    uint64_t position;
    uint64_t epoch_start;
} gk_loader_state;

/* Fills `st` with the current position. Consumer thread only. */
GK_API int gk_loader_get_state(gk_loader *ld, gk_loader_state *st, size_t size);
#define gk_loader_get_state(ld, st) (gk_loader_get_state)((ld), (st), sizeof *(st))

/* The same position with every delivered batch counted as consumed, the ones still held
 * included: what a program saves when it checkpoints after finishing its step on the batch it
 * holds (torchdata's StatefulDataLoader counts a yielded batch as consumed the same way). With
 * nothing held it equals gk_loader_get_state. Consumer thread only. */
GK_API int gk_loader_get_state_delivered(gk_loader *ld, gk_loader_state *st, size_t size);
#define gk_loader_get_state_delivered(ld, st)                                                      \
    (gk_loader_get_state_delivered)((ld), (st), sizeof *(st))

/* Moves to a saved position (version 1 or 2): refuses (GK_EMISMATCH, or GK_EVERSION for a version
 * it does not read; message in gk_last_error() naming the field, the saved and the configured
 * value) a state whose N, B, seed or flags differ from this loader's. Otherwise discards the ring
 * and:
 *  - same world size: continues at (epoch, batch) exactly, batch for batch (any rank's state
 *    works, since ranks step together);
 *  - another world size: continues `epoch` from the saved global position g. The remaining
 *    positions [g, N) of the epoch's permutation (with shard_drop_last, the largest multiple of
 *    the new world's size of them) are dealt round-robin without padding: rank r takes
 *    g + r, g + r + world, ... So across all ranks no sample of that epoch is delivered twice
 *    and none is skipped; ranks may differ by one item, and so by one batch (drop_last drops a
 *    rank's last partial batch as in any epoch). Later epochs follow the new world's
 *    DistributedSampler order exactly. Every new rank must restore a state with the same global
 *    position (ranks saved at the same step). g = 0 starts the new world's own epoch.
 * Outstanding batches become invalid. Consumer thread only. */
GK_API int gk_loader_restore(gk_loader *ld, const gk_loader_state *st);

/* Discards the ring and continues at `batch` of `epoch`. set_epoch(e) = seek(e, 0). Returns 0 or
 * -EINVAL (batch past the epoch). Consumer thread only. */
GK_API int gk_loader_seek(gk_loader *ld, uint64_t epoch, uint64_t batch);
GK_API int gk_loader_set_epoch(gk_loader *ld, uint64_t epoch);

/* Batches per epoch for this rank. */
GK_API uint64_t gk_loader_batches_per_epoch(const gk_loader *ld);

/* Deprecated alias of gk_last_error(), kept for one release. */
GK_API const char *gk_loader_last_error(const gk_loader *ld) GK_DEPRECATED("use gk_last_error()");

/* Statistics (cumulative since create). Times in nanoseconds. */
typedef struct gk_loader_stats {
    size_t size;                    /* bytes filled (see gpukit/version.h) */
    uint64_t items, bytes, batches; /* delivered by next */
    uint64_t skips;                 /* batches skipped under GK_LOADER_SKIP */
    uint64_t wait_ns, wait_max_ns;  /* consumer time inside next waiting for a batch */
    uint64_t wait_hist[32];         /* next waits by bucket: [0] < 1 us, [i] < 2^i us */
    uint64_t fill_ns, fill_max_ns;  /* worker time filling a batch (sum of its parts) */
    uint64_t copy_ns, copy_max_ns;  /* time issuing each batch's host-to-device copy */
    uint64_t worker_busy_ns;        /* all workers' time inside reads */
    uint64_t worker_idle_ns;        /* all workers' time waiting for a free slot */
    uint64_t occupancy_sum;         /* ready batches in the ring, summed at each next */
    uint32_t ring_ready;            /* ready batches now */
    uint32_t depth;                 /* K */
    uint64_t first_batch_ns;        /* create (or last seek) to first delivery; 0 before */
    uint64_t uptime_ns;             /* since create */
    uint32_t workers;               /* worker threads (what workers = -1 resolved to) */
    uint32_t cpus;                  /* CPUs this process may use (affinity, cgroup quota) */
    uint32_t spin;                  /* 1: the consumer spins about one fill time before sleeping
                                       (every thread has a CPU) */
} gk_loader_stats;

/* A snapshot of the statistics. Any thread. */
GK_API int gk_loader_get_stats(gk_loader *ld, gk_loader_stats *st, size_t size);
#define gk_loader_get_stats(ld, st) (gk_loader_get_stats)((ld), (st), sizeof *(st))

/* Stops the workers (joins every thread), waits for the copy stream, and (with a device) waits
 * until the caller's work queued before each release is done; batches still held count as
 * released on the stream they were delivered on. The loader then delivers nothing (next returns
 * -ECANCELED). Idempotent; works mid-epoch. Workers stop between reads, so a read in progress is
 * waited for (a read callback that never returns blocks stop). Consumer thread only. */
GK_API void gk_loader_stop(gk_loader *ld);

/* Stops (as above) and frees everything in reverse order of creation. NULL is a no-op. */
GK_API void gk_loader_destroy(gk_loader *ld);

#ifdef __cplusplus
}
#endif
#endif
