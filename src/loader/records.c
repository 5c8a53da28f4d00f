/* Fixed-record files: the header (see loader.h), checks that name the file and the problem, the
 * dataset over a memory map or pread, and the writer used by `gpukit data pack`. Before each batch
 * the file size is checked against the header, so a truncated file is an error, not a SIGBUS. */
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
    char path[4096];
} rec_ctx;

static uint64_t rec_count(void *ctx)
{
    return ((rec_ctx *)ctx)->info.record_count;
}

static size_t rec_item_size(void *ctx)
{
    return (size_t)((rec_ctx *)ctx)->info.record_size;
}

/* The size check done before each batch. */
static int check_size(rec_ctx *r, gk_read_ctx *rc)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        snprintf(rc->err, rc->err_len, "%s: cannot stat: %s", r->path, strerror(errno));
        return -EIO;
    }
    if ((uint64_t)st.st_size != r->info.file_size) {
        snprintf(rc->err, rc->err_len,
                 "%s: file changed size while in use: %llu bytes, the header says %llu (%s)",
                 r->path, (unsigned long long)st.st_size, (unsigned long long)r->info.file_size,
                 (uint64_t)st.st_size < r->info.file_size ? "truncated" : "grown");
        return GK_ECORRUPT;
    }
    return 0;
}

static int read_one(rec_ctx *r, gk_read_ctx *rc, uint64_t index, unsigned char *dst)
{
    size_t rs = (size_t)r->info.record_size;
    if (index >= r->info.record_count) {
        rc->failed_index = index;
        snprintf(rc->err, rc->err_len, "%s: record %llu past the end (%llu records)", r->path,
                 (unsigned long long)index, (unsigned long long)r->info.record_count);
        return -ERANGE;
    }
    uint64_t off = r->info.data_offset + index * r->info.record_size;
    if (r->map) {
        memcpy(dst, r->map + off, rs);
        return 0;
    }
    size_t done = 0;
    while (done < rs) {
        ssize_t got = pread(r->fd, dst + done, rs - done, (off_t)(off + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            rc->failed_index = index;
            snprintf(rc->err, rc->err_len, "%s: reading record %llu: %s", r->path,
                     (unsigned long long)index, got < 0 ? strerror(errno) : "unexpected end");
            return got < 0 ? -EIO : GK_ECORRUPT;
        }
        done += (size_t)got;
    }
    return 0;
}

static int rec_read_item(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)seed;
    rec_ctx *r = ctx;
    int e = check_size(r, rc);
    if (e) {
        rc->failed_index = index;
        return e;
    }
    return read_one(r, rc, index, dst);
}

static int rec_read_batch(void *ctx, gk_read_ctx *rc, const uint64_t *idx, size_t n, void *dst)
{
    rec_ctx *r = ctx;
    int e = check_size(r, rc);
    if (e) {
        rc->failed_index = n ? idx[0] : 0;
        return e;
    }
    unsigned char *d = dst;
    size_t rs = (size_t)r->info.record_size;
    if (r->map) {
        const unsigned char *base = r->map + r->info.data_offset;
        uint64_t cnt = r->info.record_count;
        for (size_t i = 0; i < n; i++) {
            if (idx[i] >= cnt)
                return read_one(r, rc, idx[i], d + i * rs);
            memcpy(d + i * rs, base + idx[i] * rs, rs);
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        e = read_one(r, rc, idx[i], d + i * rs);
        if (e)
            return e;
    }
    return 0;
}

static void rec_will_need(void *ctx, const uint64_t *idx, size_t n)
{
    rec_ctx *r = ctx;
    if (!r->opt.readahead || r->info.record_size < 65536)
        return;
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < n; i++) {
        if (idx[i] >= r->info.record_count)
            continue;
        uint64_t off = r->info.data_offset + idx[i] * r->info.record_size;
        uint64_t start = off & ~(uint64_t)(page - 1);
        if (r->map)
            madvise((void *)(r->map + start), (size_t)(off + r->info.record_size - start),
                    MADV_WILLNEED);
        else
            posix_fadvise(r->fd, (off_t)off, (off_t)r->info.record_size, POSIX_FADV_WILLNEED);
    }
}

static void rec_destroy(void *ctx)
{
    rec_ctx *r = ctx;
    if (r->map)
        munmap((void *)r->map, r->map_len);
    close(r->fd);
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
        madvise(m, r->map_len, r->opt.random ? MADV_RANDOM : MADV_SEQUENTIAL);
    } else {
        posix_fadvise(r->fd, 0, 0, r->opt.random ? POSIX_FADV_RANDOM : POSIX_FADV_SEQUENTIAL);
    }
    rc = gk_dataset_create(&rec_ops, r, path, out);
    if (rc) {
        snprintf(err, sizeof err, "%s", gk_last_error());
        goto out_unmap;
    }
    return 0;
out_unmap:
    if (r->map)
        munmap((void *)r->map, r->map_len);
out_close:
    close(r->fd);
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
