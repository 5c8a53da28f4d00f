/* Fixed-record files: the header (see loader.h), checks that name the file and the problem, the
 * dataset over a memory map or pread, and the writer used by `gpukit data pack`. A file cut while
 * in use is an error naming it, never a SIGBUS: mapped reads go through the fault guard (guard.c),
 * pread reads see the short read; size, modification time and identity are checked once per
 * epoch. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/output.h"
#include "loader/loader_int.h"

#define HEADER_USED 128

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static int open_error(const char *path, int e, char *err, size_t len)
{
    snprintf(err, len, "%s: cannot open: %s", path, strerror(e));
    return e == ENOENT || e == EACCES ? -e : -EIO;
}

int gk__records_parse(const char *path, const unsigned char *h, size_t got, uint64_t file_size,
                      gk_records_info *info, char *err, size_t len)
{
    memset(info, 0, sizeof *info);
    if (got < HEADER_USED || memcmp(h, GK_RECORDS_MAGIC, 8) != 0) {
        snprintf(err, len, "%s: not a gpukit record file (bad magic; expected \"%s\")", path,
                 GK_RECORDS_MAGIC);
        return GK_ECORRUPT;
    }
    info->version = rd32(h + 8);
    if (info->version != GK_RECORDS_VERSION) {
        snprintf(err, len, "%s: record file version %u is not supported (this gpukit reads %d)",
                 path, info->version, GK_RECORDS_VERSION);
        return GK_EVERSION;
    }
    info->record_size = rd64(h + 16);
    info->record_count = rd64(h + 24);
    info->data_offset = rd64(h + 32);
    memcpy(info->dtype, h + 40, 16);
    info->dtype[16] = '\0';
    info->ndim = rd32(h + 56);
    info->file_size = file_size;
    if (info->record_size == 0) {
        snprintf(err, len, "%s: corrupt header: record size is 0", path);
        return GK_ECORRUPT;
    }
    if (info->data_offset < GK_RECORDS_DATA_ALIGN || info->data_offset % GK_RECORDS_DATA_ALIGN) {
        snprintf(err, len, "%s: corrupt header: data offset %llu is not a multiple of %d", path,
                 (unsigned long long)info->data_offset, GK_RECORDS_DATA_ALIGN);
        return GK_ECORRUPT;
    }
    if (info->ndim > GK_RECORDS_MAX_DIMS) {
        snprintf(err, len, "%s: corrupt header: %u dimensions (at most %d)", path, info->ndim,
                 GK_RECORDS_MAX_DIMS);
        return GK_ECORRUPT;
    }
    for (uint32_t i = 0; i < GK_RECORDS_MAX_DIMS; i++)
        info->shape[i] = i < info->ndim ? rd64(h + 64 + 8 * i) : 0;
    if (info->record_count > (UINT64_MAX - info->data_offset) / info->record_size) {
        snprintf(err, len, "%s: corrupt header: %llu records of %llu bytes overflow", path,
                 (unsigned long long)info->record_count, (unsigned long long)info->record_size);
        return GK_ECORRUPT;
    }
    uint64_t want = info->data_offset + info->record_count * info->record_size;
    if (file_size != want) {
        snprintf(err, len,
                 "%s: file is %llu bytes but the header says %llu (%llu records of %llu bytes at "
                 "offset %llu): %s",
                 path, (unsigned long long)file_size, (unsigned long long)want,
                 (unsigned long long)info->record_count, (unsigned long long)info->record_size,
                 (unsigned long long)info->data_offset,
                 file_size < want ? "truncated" : "trailing bytes");
        return GK_ECORRUPT;
    }
    return 0;
}

static int read_header_fd(int fd, const char *path, gk_records_info *info, char *err, size_t len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, len, "%s: cannot stat: %s", path, strerror(errno));
        return -EIO;
    }
    unsigned char h[HEADER_USED];
    ssize_t got = pread(fd, h, sizeof h, 0);
    if (got < 0) {
        snprintf(err, len, "%s: cannot read the header: %s", path, strerror(errno));
        return -EIO;
    }
    return gk__records_parse(path, h, (size_t)got, (uint64_t)st.st_size, info, err, len);
}

int(gk_records_inspect)(const char *path, gk_records_info *out, char *err, size_t err_len,
                        size_t size)
{
    char msg[600];
    if (!path)
        return gk__error_buf(-EINVAL, err, err_len, "gk_records_inspect: path is NULL");
    int rc = gk__sized_check(out, size, "gk_records_info");
    if (rc)
        return gk__error_buf(rc, err, err_len, "%s", gk_last_error());
    gk_records_info info;
    int fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = open_error(path, errno, msg, sizeof msg);
    } else {
        rc = read_header_fd(fd, path, &info, msg, sizeof msg);
        close(fd);
    }
    if (rc)
        return gk__error_buf(rc, err, err_len, "%s", msg);
    return gk__sized_put(out, size, &info, sizeof info, "gk_records_info");
}

void(gk_records_options_default)(gk_records_options *opt, size_t size)
{
    gk_records_options d = {
        .size = sizeof d, .access = GK_RECORDS_MMAP, .random = 1, .readahead = 1};
    (void)gk__sized_put(opt, size, &d, sizeof d, "gk_records_options");
}

/* --- the dataset --------------------------------------------------------------------------- */

typedef struct rec_ctx {
    int fd;
    gk_records_info info;
    gk_records_options opt;
    const unsigned char *map; /* the whole file, or NULL on the pread path */
    size_t map_len;
    _Atomic int guarded;      /* mapped reads go through the SIGBUS guard (else pread) */
    _Atomic uint64_t checked; /* 1 + the epoch whose first read checked the file */
    /* The canary: 8 bytes ending at or after the last non-zero byte of the file's last page, read
     * after every batch. A cut that changes any byte a record could read either removes its page
     * (a fault) or zeroes it (a different value); a cut that only drops trailing zero bytes
     * changes no record (they read as zeros either way). */
    uint64_t canary_off, canary;
    dev_t dev; /* the file as opened: device, inode, modification time */
    ino_t ino;
    struct timespec mtime;
    gk_dataset *self;
    size_t page;
    char path[4096];
    char *real; /* the absolute path as opened, for the identity check (NULL: not checked) */
} rec_ctx;

static uint64_t rec_count(void *ctx)
{
    return ((rec_ctx *)ctx)->info.record_count;
}

static size_t rec_item_size(void *ctx)
{
    return (size_t)((rec_ctx *)ctx)->info.record_size;
}

/* What changed in the file since it was opened, as an error naming it (0: nothing). A file
 * removed since is not a change: the open file keeps its data. */
static int file_changed(rec_ctx *r, char *err, size_t len)
{
    struct stat st, now;
    if (fstat(r->fd, &st) != 0) {
        snprintf(err, len, "%s: cannot stat: %s", r->path, strerror(errno));
        return -EIO;
    }
    if ((uint64_t)st.st_size != r->info.file_size) {
        snprintf(err, len,
                 "%s: file changed size while in use: now %llu bytes, the header says %llu (%s)",
                 r->path, (unsigned long long)st.st_size, (unsigned long long)r->info.file_size,
                 (uint64_t)st.st_size < r->info.file_size ? "truncated" : "grown");
        return GK_ECORRUPT;
    }
    if (st.st_mtim.tv_sec != r->mtime.tv_sec || st.st_mtim.tv_nsec != r->mtime.tv_nsec) {
        snprintf(err, len,
                 "%s: file modified while in use (its modification time changed since it was "
                 "opened): rewritten in place?",
                 r->path);
        return GK_ECORRUPT;
    }
    if (r->real && stat(r->real, &now) == 0 && (now.st_ino != r->ino || now.st_dev != r->dev)) {
        snprintf(err, len,
                 "%s: file replaced while in use (the path now names another file); this run "
                 "still reads the file it opened",
                 r->path);
        return GK_ECORRUPT;
    }
    return 0;
}

/* The check at the first read of each epoch (not each batch): the file's size, modification time
 * and identity against what was opened, and whether the SIGBUS guard still stands (another
 * handler installed since turns mapped reads into pread). */
static int check_epoch(rec_ctx *r, gk_read_ctx *rc)
{
    uint64_t want = rc->epoch + 1;
    if (atomic_load_explicit(&r->checked, memory_order_acquire) == want)
        return 0;
    int e = file_changed(r, rc->err, rc->err_len);
    if (e)
        return e;
    if (r->map && atomic_load_explicit(&r->guarded, memory_order_relaxed) && !gk__guard_installed())
        atomic_store_explicit(&r->guarded, 0, memory_order_relaxed);
    atomic_store_explicit(&r->checked, want, memory_order_release);
    return 0;
}

/* Sets the canary from the file's last page (read with pread, before any mapping). */
static int find_canary(rec_ctx *r, char *err, size_t len)
{
    uint64_t size = r->info.file_size; /* > 4096: a header page and at least one record */
    uint64_t start = (size - 1) & ~((uint64_t)r->page - 1);
    if (size - start < 8)
        start = size - 8;
    size_t n = (size_t)(size - start);
    unsigned char *last = gk__malloc(n);
    if (!last) {
        snprintf(err, len, "%s: out of memory", r->path);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(r->fd, last + got, n - got, (off_t)(start + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, len, "%s: cannot read its last page: %s", r->path,
                     k < 0 ? strerror(errno) : "unexpected end of file");
            free(last);
            return -EIO;
        }
        got += (size_t)k;
    }
    uint64_t q = size - 1; /* the last non-zero byte (the last byte when all are zero) */
    for (size_t i = n; i-- > 0;)
        if (last[i]) {
            q = start + i;
            break;
        }
    uint64_t off = q & ~(uint64_t)7;
    if (off < start)
        off = start;
    if (off + 8 > size)
        off = size - 8;
    r->canary_off = off;
    memcpy(&r->canary, last + (off - start), 8);
    free(last);
    return 0;
}

static int past_end(rec_ctx *r, gk_read_ctx *rc, uint64_t index)
{
    rc->failed_index = index;
    snprintf(rc->err, rc->err_len, "%s: record %llu past the end (%llu records)", r->path,
             (unsigned long long)index, (unsigned long long)r->info.record_count);
    return -ERANGE;
}

/* A read that met the end of the file (a short pread, or a fault in the mapping): says what
 * changed. */
static int cut_error(rec_ctx *r, gk_read_ctx *rc, uint64_t index, const char *how)
{
    rc->failed_index = index;
    char what[700];
    int e = file_changed(r, what, sizeof what);
    if (e == GK_ECORRUPT) {
        snprintf(rc->err, rc->err_len, "%s; reading record %llu %s", what,
                 (unsigned long long)index, how);
        return e;
    }
    snprintf(rc->err, rc->err_len, "%s: reading record %llu %s (an I/O error on the file?)",
             r->path, (unsigned long long)index, how);
    return e ? e : -EIO;
}

static int pread_one(rec_ctx *r, gk_read_ctx *rc, uint64_t index, unsigned char *dst)
{
    size_t rs = (size_t)r->info.record_size;
    uint64_t off = r->info.data_offset + index * r->info.record_size;
    size_t done = 0;
    while (done < rs) {
        ssize_t got = pread(r->fd, dst + done, rs - done, (off_t)(off + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc->failed_index = index;
            snprintf(rc->err, rc->err_len, "%s: reading record %llu: %s", r->path,
                     (unsigned long long)index, strerror(errno));
            return -EIO;
        }
        if (got == 0)
            return cut_error(r, rc, index, "met the end of the file");
        done += (size_t)got;
    }
    return 0;
}

static int rec_read_batch(void *ctx, gk_read_ctx *rc, const uint64_t *idx, size_t n, void *dst)
{
    rec_ctx *r = ctx;
    int e = check_epoch(r, rc);
    if (e) {
        rc->failed_index = n ? idx[0] : 0;
        return e;
    }
    unsigned char *d = dst;
    size_t rs = (size_t)r->info.record_size;
    uint64_t cnt = r->info.record_count;
    for (size_t i = 0; i < n; i++)
        if (idx[i] >= cnt)
            return past_end(r, rc, idx[i]);
    uint64_t seen = 0;
    if (r->map && atomic_load_explicit(&r->guarded, memory_order_relaxed)) {
        size_t bad = 0;
        if (gk__guarded_gather(d, r->map + r->info.data_offset, rs, idx, n, r->map + r->canary_off,
                               &seen, &bad))
            return cut_error(r, rc, idx[bad < n ? bad : 0], "faulted in the mapping");
    } else {
        for (size_t i = 0; i < n; i++) {
            e = pread_one(r, rc, idx[i], d + i * rs);
            if (e)
                return e;
        }
        if (pread(r->fd, &seen, sizeof seen, (off_t)r->canary_off) != (ssize_t)sizeof seen)
            return cut_error(r, rc, n ? idx[0] : 0, "met the end of the file");
    }
    if (seen != r->canary)
        return cut_error(r, rc, n ? idx[0] : 0, "found the file's last bytes changed");
    return 0;
}

static int rec_read_item(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)seed;
    return rec_read_batch(ctx, rc, &index, 1, dst);
}

/* Read-ahead: the indices come sorted (the loader sorts them); their pages are coalesced into
 * ranges and each range is passed to posix_fadvise(WILLNEED), which starts reading it without
 * waiting. A mapped file is probed first: when the page of the first record is resident, the
 * batch is taken as cached, nothing is hinted, and the loader is told (it then probes only now
 * and then). */
static void rec_will_need(void *ctx, const uint64_t *idx, size_t n)
{
    rec_ctx *r = ctx;
    if (!r->opt.readahead || r->info.record_size < GK__READAHEAD_MIN_ITEM || n == 0)
        return;
    uint64_t rs = r->info.record_size, page = r->page, cnt = r->info.record_count;
    if (r->map && idx[0] < cnt) {
        uint64_t off = (r->info.data_offset + idx[0] * rs) & ~(page - 1);
        unsigned char vec = 0;
        int resident = mincore((void *)(r->map + off), (size_t)page, &vec) == 0 && (vec & 1);
        atomic_store_explicit(&r->self->cached, resident, memory_order_relaxed);
        if (resident)
            return;
    }
    uint64_t lo = 0, hi = 0; /* the range being built, [lo, hi) */
    for (size_t i = 0; i <= n; i++) {
        uint64_t a = 0, b = 0;
        if (i < n) {
            if (idx[i] >= cnt)
                continue;
            uint64_t off = r->info.data_offset + idx[i] * rs;
            a = off & ~(page - 1);
            b = (off + rs + page - 1) & ~(page - 1);
            if (hi && a <= hi) { /* touches or overlaps the range: extend it */
                if (b > hi)
                    hi = b;
                continue;
            }
        }
        if (hi)
            posix_fadvise(r->fd, (off_t)lo, (off_t)(hi - lo), POSIX_FADV_WILLNEED);
        lo = a;
        hi = b;
    }
}

static void rec_destroy(void *ctx)
{
    rec_ctx *r = ctx;
    if (r->map)
        munmap((void *)r->map, r->map_len);
    close(r->fd);
    free(r->real);
    free(r);
}

static const gk_dataset_ops rec_ops = {
    .size = sizeof(gk_dataset_ops),
    .count = rec_count,
    .item_size = rec_item_size,
    .read_item = rec_read_item,
    .read_batch = rec_read_batch,
    .will_need = rec_will_need,
    .destroy = rec_destroy,
};

int gk_dataset_open_records(const char *path, const gk_records_options *opt, gk_dataset **out)
{
    char err[600];
    if (!out || !path)
        return gk__dataset_fail(-EINVAL, "gk_dataset_open_records: path and out are required");
    *out = NULL;
    rec_ctx *r = gk__calloc(1, sizeof *r);
    if (!r)
        return gk__dataset_fail(-ENOMEM, "%s: out of memory", path);
    snprintf(r->path, sizeof r->path, "%s", path);
    gk_records_options_default(&r->opt);
    if (opt && gk__sized_in(&r->opt, sizeof r->opt, opt, "gk_records_options") != 0) {
        free(r);
        return -EINVAL;
    }
    int rc;
    r->fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = open_error(path, errno, err, sizeof err);
        goto out_free;
    }
    rc = read_header_fd(r->fd, path, &r->info, err, sizeof err);
    if (rc)
        goto out_close;
    if (r->info.record_size > SIZE_MAX / 2 || r->info.file_size > SIZE_MAX) {
        snprintf(err, sizeof err, "%s: records too large for this machine", path);
        rc = -EOVERFLOW;
        goto out_close;
    }
    if (r->info.record_count == 0) {
        snprintf(err, sizeof err, "%s: the file holds no records", path);
        rc = -EINVAL;
        goto out_close;
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        snprintf(err, sizeof err, "%s: cannot stat: %s", path, strerror(errno));
        rc = -EIO;
        goto out_close;
    }
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->mtime = st.st_mtim;
    r->real = realpath(path, NULL); /* a later chdir must not make another file look like it */
    long page = sysconf(_SC_PAGESIZE);
    r->page = page > 0 ? (size_t)page : 4096;
    rc = find_canary(r, err, sizeof err);
    if (rc)
        goto out_close;
    /* The kernel's read-around stays on for shuffled reads (MADV_RANDOM would turn every record
     * into its own synchronous page read); the loader's hints fetch the pages of the batches
     * ahead. */
    if (r->opt.access == GK_RECORDS_MMAP) {
        r->map_len = (size_t)r->info.file_size;
        void *m = gk__mmap(NULL, r->map_len, PROT_READ, MAP_SHARED, r->fd, 0);
        if (m == MAP_FAILED) {
            snprintf(err, sizeof err, "%s: cannot map %zu bytes: %s", path, r->map_len,
                     strerror(errno));
            rc = -ENOMEM;
            goto out_close;
        }
        r->map = m;
        madvise(m, r->map_len, r->opt.random ? MADV_NORMAL : MADV_SEQUENTIAL);
        /* Without the guard a cut file could kill the process: read with pread instead. */
        atomic_init(&r->guarded, gk__guard_install() == 0);
    } else {
        posix_fadvise(r->fd, 0, 0, r->opt.random ? POSIX_FADV_NORMAL : POSIX_FADV_SEQUENTIAL);
    }
    rc = gk_dataset_create(&rec_ops, r, path, out);
    if (rc) {
        snprintf(err, sizeof err, "%s", gk_last_error());
        goto out_unmap;
    }
    r->self = *out;
    return 0;
out_unmap:
    if (r->map)
        munmap((void *)r->map, r->map_len);
out_close:
    close(r->fd);
    free(r->real);
out_free:
    free(r);
    return gk__dataset_fail(rc, "%s", err);
}

/* --- the writer ------------------------------------------------------------------------------ */

struct gk_records_writer {
    gk_output *out;
    uint64_t record_size, count;
    unsigned char header[GK_RECORDS_DATA_ALIGN];
    char path[4096];
};

int gk_records_writer_open(const char *path, uint64_t record_size, const char *dtype, uint32_t ndim,
                           const uint64_t *shape, gk_records_writer **out)
{
    if (!out || !path)
        return gk__dataset_fail(-EINVAL, "gk_records_writer_open: path and out are required");
    *out = NULL;
    if (record_size == 0)
        return gk__dataset_fail(-EINVAL, "%s: record size must be at least 1 byte", path);
    if (ndim > GK_RECORDS_MAX_DIMS || (ndim && !shape))
        return gk__dataset_fail(-EINVAL, "%s: at most %d dimensions, with a shape", path,
                                GK_RECORDS_MAX_DIMS);
    if (dtype && strlen(dtype) > 16)
        return gk__dataset_fail(-EINVAL, "%s: element type \"%s\" is longer than 16 characters",
                                path, dtype);
    gk_records_writer *w = gk__calloc(1, sizeof *w);
    if (!w)
        return gk__dataset_fail(-ENOMEM, "%s: out of memory", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->record_size = record_size;
    unsigned char *h = w->header;
    memcpy(h, GK_RECORDS_MAGIC, 8);
    wr32(h + 8, GK_RECORDS_VERSION);
    wr32(h + 12, HEADER_USED);
    wr64(h + 16, record_size);
    wr64(h + 32, GK_RECORDS_DATA_ALIGN);
    const char *dt = dtype ? dtype : "|u1";
    memcpy(h + 40, dt, strlen(dt));
    if (ndim == 0) {
        wr32(h + 56, 1);
        wr64(h + 64, record_size);
    } else {
        wr32(h + 56, ndim);
        for (uint32_t i = 0; i < ndim; i++)
            wr64(h + 64 + 8 * i, shape[i]);
    }
    char err[600];
    int rc = gk_output_open(path, GK_OUTPUT_SEEKABLE, &w->out, err, sizeof err);
    if (rc) {
        free(w);
        return gk__dataset_fail(rc, "%s", err);
    }
    /* The header goes in last, so a file left by a crash has no valid magic. */
    unsigned char zero[GK_RECORDS_DATA_ALIGN] = {0};
    rc = gk_output_pwrite(w->out, zero, sizeof zero, 0);
    if (rc) {
        gk_records_writer_abort(w);
        return gk__dataset_fail(rc, "%s: cannot write: %s", path, strerror(-rc));
    }
    *out = w;
    return 0;
}

int gk_records_writer_write(gk_records_writer *w, const void *records, uint64_t count)
{
    if (!w || (!records && count))
        return gk__dataset_fail(-EINVAL, "gk_records_writer_write: bad arguments");
    if (count > SIZE_MAX / w->record_size || w->count + count < w->count ||
        w->count + count > (UINT64_MAX - GK_RECORDS_DATA_ALIGN) / w->record_size)
        return gk__dataset_fail(-EOVERFLOW, "%s: too many records", w->path);
    uint64_t off = GK_RECORDS_DATA_ALIGN + w->count * w->record_size;
    int rc = gk_output_pwrite(w->out, records, (size_t)(count * w->record_size), off);
    if (rc)
        return gk__dataset_fail(rc, "%s: cannot write: %s", w->path, strerror(-rc));
    w->count += count;
    return 0;
}

int gk_records_writer_close(gk_records_writer *w)
{
    if (!w)
        return gk__dataset_fail(-EINVAL, "gk_records_writer_close: writer is NULL");
    wr64(w->header + 24, w->count);
    char err[600];
    gk_output_pwrite(w->out, w->header, HEADER_USED, 0);
    int rc = gk_output_commit(w->out, err, sizeof err);
    if (rc)
        gk__dataset_fail(rc, "%s", err);
    free(w);
    return rc;
}

int gk_records_writer_reserve(gk_records_writer *w, uint64_t records)
{
    if (!w)
        return gk__dataset_fail(-EINVAL, "gk_records_writer_reserve: writer is NULL");
    uint64_t rs = w->record_size;
    uint64_t have = GK_RECORDS_DATA_ALIGN + w->count * rs;
    if (records > (UINT64_MAX - have) / rs)
        return gk__dataset_fail(-EOVERFLOW, "%s: %llu records of %llu bytes are too many", w->path,
                                (unsigned long long)records, (unsigned long long)rs);
    char err[600];
    int rc = gk_output_reserve(w->out, records * rs, err, sizeof err);
    return rc ? gk__dataset_fail(rc, "%s", err) : 0;
}

void gk_records_writer_abort(gk_records_writer *w)
{
    if (!w)
        return;
    gk_output_abort(w->out);
    free(w);
}
