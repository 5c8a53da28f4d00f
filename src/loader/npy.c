/* The header of a NumPy .npy file (format versions 1 to 3), read strictly: the magic, the header
 * length, then a Python dict literal with exactly the keys 'descr' (a fixed-size number type),
 * 'fortran_order' and 'shape'. Every number is range-checked and every product overflow-checked
 * before it is used, so a hostile shape is refused instead of wrapping. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "loader/loader_int.h"

#define NPY_MAX_HEADER (1u << 20)
#define NPY_MAX_BYTES  (1ull << 62) /* no file is larger; keeps every sum below overflow */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int eat(cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted string without escapes into out (at most outlen-1 bytes). */
static int read_str(cursor *c, char *out, size_t outlen)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= outlen || (unsigned char)*c->p < 0x20)
            return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return -1;
    c->p++;
    out[n] = '\0';
    return 0;
}

/* A decimal integer of at most 19 digits (below 10^19, so no overflow). */
static int read_u64(cursor *c, uint64_t *out)
{
    skip_space(c);
    uint64_t v = 0;
    int digits = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (++digits > 19)
            return -1;
        v = v * 10 + (uint64_t)(*c->p++ - '0');
    }
    if (!digits)
        return -1;
    if (c->p < c->end && *c->p == 'L') /* Python 2 wrote longs with a suffix */
        c->p++;
    *out = v;
    return 0;
}

static int read_shape(cursor *c, gk_npy_info *info)
{
    if (!eat(c, '('))
        return -1;
    info->ndim = 0;
    if (eat(c, ')'))
        return 0;
    for (;;) {
        if (info->ndim == GK_NPY_MAX_DIMS)
            return -2;
        if (read_u64(c, &info->shape[info->ndim]) != 0)
            return -1;
        info->ndim++;
        int comma = eat(c, ',');
        if (eat(c, ')'))
            return info->ndim == 1 && !comma ? -1 : 0; /* (5) is not a tuple, (5,) is */
        if (!comma)
            return -1;
    }
}

/* 'descr': byte order, kind, item size, e.g. "<f4", "|u1", "<c16". */
static int parse_descr(const char *d, gk_npy_info *info)
{
    if (strlen(d) < 3 || !strchr("<>|=", d[0]) || !strchr("biufc", d[1]))
        return -1;
    uint64_t size = 0;
    for (const char *p = d + 2; *p; p++) {
        if (*p < '0' || *p > '9' || size > 1000)
            return -1;
        size = size * 10 + (uint64_t)(*p - '0');
    }
    if (size == 0 || size > 64)
        return -1;
    snprintf(info->dtype, sizeof info->dtype, "%s", d);
    info->item_size = (uint32_t)size;
    return 0;
}

static int npy_parse(const void *buf, size_t len, gk_npy_info *info, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!info || (!buf && len))
        return -EINVAL;
    memset(info, 0, sizeof *info);
    const unsigned char *b = buf;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return gk__error_buf(GK_ECORRUPT, err, errlen, "not a .npy file (bad magic)");
    unsigned major = b[6];
    size_t pre;
    uint64_t hlen;
    if (major == 1) {
        pre = 10;
        hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return gk__error_buf(GK_ECORRUPT, err, errlen, "truncated .npy header");
        pre = 12;
        hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
    } else {
        return gk__error_buf(GK_EVERSION, err, errlen,
                             ".npy format version %u is not supported (1 to 3)", major);
    }
    if (hlen > NPY_MAX_HEADER)
        return gk__error_buf(GK_ECORRUPT, err, errlen,
                             ".npy header of %llu bytes is larger than 1 MiB (corrupt?)",
                             (unsigned long long)hlen);
    if (len < pre + hlen)
        return gk__error_buf(GK_ECORRUPT, err, errlen,
                             "truncated .npy header (%llu bytes announced)",
                             (unsigned long long)hlen);
    info->header_bytes = pre + hlen;
    cursor c = {(const char *)b + pre, (const char *)b + pre + hlen};
    int seen_descr = 0, seen_fo = 0, seen_shape = 0;
    if (!eat(&c, '{'))
        return gk__error_buf(GK_ECORRUPT, err, errlen, ".npy header is not a dict");
    while (!eat(&c, '}')) {
        char key[32], val[32];
        if (read_str(&c, key, sizeof key) != 0 || !eat(&c, ':'))
            return gk__error_buf(GK_ECORRUPT, err, errlen, ".npy header: a key is malformed");
        if (strcmp(key, "descr") == 0 && !seen_descr++) {
            if (read_str(&c, val, sizeof val) != 0 || parse_descr(val, info) != 0)
                return gk__error_buf(
                    -ENOTSUP, err, errlen,
                    ".npy element type is not a fixed-size number type (b, i, u, f "
                    "or c with a size of 1 to 64 bytes; structured arrays are not "
                    "supported)");
        } else if (strcmp(key, "fortran_order") == 0 && !seen_fo++) {
            skip_space(&c);
            if ((size_t)(c.end - c.p) >= 4 && memcmp(c.p, "True", 4) == 0) {
                info->fortran_order = 1;
                c.p += 4;
            } else if ((size_t)(c.end - c.p) >= 5 && memcmp(c.p, "False", 5) == 0) {
                c.p += 5;
            } else {
                return gk__error_buf(GK_ECORRUPT, err, errlen,
                                     ".npy header: fortran_order is not True or False");
            }
        } else if (strcmp(key, "shape") == 0 && !seen_shape++) {
            int rc = read_shape(&c, info);
            if (rc == -2)
                return gk__error_buf(-ENOTSUP, err, errlen,
                                     ".npy shape has more than %d dimensions", GK_NPY_MAX_DIMS);
            if (rc)
                return gk__error_buf(GK_ECORRUPT, err, errlen,
                                     ".npy shape is not a tuple of whole numbers below 10^19");
        } else {
            return gk__error_buf(GK_ECORRUPT, err, errlen,
                                 ".npy header: unexpected or repeated key");
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return gk__error_buf(GK_ECORRUPT, err, errlen, ".npy header: expected , or }");
            break;
        }
    }
    if (!seen_descr || !seen_fo || !seen_shape)
        return gk__error_buf(GK_ECORRUPT, err, errlen,
                             ".npy header lacks descr, fortran_order or shape");
    while (c.p < c.end && (*c.p == ' ' || *c.p == '\n' || *c.p == '\t' || *c.p == '\r'))
        c.p++;
    if (c.p != c.end)
        return gk__error_buf(GK_ECORRUPT, err, errlen, ".npy header: text after the dict");
    /* One record per row: item size times every dimension but the first. */
    if (info->ndim == 0)
        return gk__error_buf(-ENOTSUP, err, errlen, "a scalar .npy array has no records");
    uint64_t rs = info->item_size;
    for (uint32_t i = 1; i < info->ndim; i++) {
        if (info->shape[i] == 0)
            return gk__error_buf(-ENOTSUP, err, errlen,
                                 ".npy shape has a dimension of 0: its records would be empty");
        if (rs > GK_NPY_MAX_RECORD / info->shape[i])
            return gk__error_buf(
                -ENOTSUP, err, errlen,
                ".npy shape makes records larger than 1 TiB (dimension %u is %llu)", i,
                (unsigned long long)info->shape[i]);
        rs *= info->shape[i];
    }
    if (info->shape[0] == 0)
        return gk__error_buf(-ENOTSUP, err, errlen, "an empty .npy array has no records");
    if (info->shape[0] > NPY_MAX_BYTES / rs)
        return gk__error_buf(-ENOTSUP, err, errlen,
                             ".npy shape holds more than 2^62 bytes (%llu rows of %llu bytes)",
                             (unsigned long long)info->shape[0], (unsigned long long)rs);
    info->record_size = rs;
    info->data_bytes = info->shape[0] * rs;
    uint32_t wide = 0;
    for (uint32_t i = 0; i < info->ndim; i++)
        wide += info->shape[i] > 1;
    if (info->fortran_order && wide > 1)
        return gk__error_buf(-ENOTSUP, err, errlen,
                             "Fortran-ordered arrays are not supported (save with "
                             "np.ascontiguousarray)");
    return 0;
}

static int npy_inspect(const char *path, gk_npy_info *info, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!path || !info)
        return -EINVAL;
    memset(info, 0, sizeof *info);
    int fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return gk__error_buf(-e, err, errlen, "%s: cannot open: %s", path, strerror(e));
    }
    int rc;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc =
            gk__error_buf(-EINVAL, err, errlen,
                          "%s: not a regular file (a pipe, device or directory); save the array to "
                          "a file first",
                          path);
        goto out;
    }
    size_t want = 12 + NPY_MAX_HEADER;
    size_t have = (uint64_t)st.st_size < want ? (size_t)st.st_size : want;
    char *buf = gk__malloc(have ? have : 1);
    if (!buf) {
        rc = gk__error_buf(-ENOMEM, err, errlen, "%s: out of memory", path);
        goto out;
    }
    ssize_t got = pread(fd, buf, have, 0);
    char msg[400];
    rc = got < 0 ? -errno : npy_parse(buf, (size_t)got, info, msg, sizeof msg);
    free(buf);
    if (got < 0) {
        gk__error_buf(rc, err, errlen, "%s: cannot read: %s", path, strerror(-rc));
        goto out;
    }
    if (rc) {
        gk__error_buf(rc, err, errlen, "%s: %s", path, msg);
        goto out;
    }
    uint64_t data = (uint64_t)st.st_size - info->header_bytes;
    if (data != info->data_bytes) {
        rc = gk__error_buf(
            GK_ECORRUPT, err, errlen,
            "%s: %llu data bytes, but the shape and element type need %llu (truncated "
            "or not what the header says)",
            path, (unsigned long long)data, (unsigned long long)info->data_bytes);
        goto out;
    }
out:
    close(fd);
    return rc;
}

int(gk_npy_parse_header)(const void *buf, size_t len, gk_npy_info *out, char *err, size_t errlen,
                         size_t size)
{
    int rc = gk__sized_check(out, size, "gk_npy_info");
    if (rc)
        return gk__error_buf(rc, err, errlen, "%s", gk_last_error());
    gk_npy_info ni;
    rc = npy_parse(buf, len, &ni, err, errlen);
    return rc ? rc : gk__sized_put(out, size, &ni, sizeof ni, "gk_npy_info");
}

int(gk_npy_inspect)(const char *path, gk_npy_info *out, char *err, size_t errlen, size_t size)
{
    int rc = gk__sized_check(out, size, "gk_npy_info");
    if (rc)
        return gk__error_buf(rc, err, errlen, "%s", gk_last_error());
    gk_npy_info ni;
    rc = npy_inspect(path, &ni, err, errlen);
    return rc ? rc : gk__sized_put(out, size, &ni, sizeof ni, "gk_npy_info");
}
