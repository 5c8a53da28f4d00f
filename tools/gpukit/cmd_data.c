/* gpukit data: build fixed-record files from raw bytes or a .npy array (`pack`) and print the
 * header of a record file or an llm.c token shard (`inspect`). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tool.h"

static const char data_usage[] =
    "usage: gpukit data pack --record-size N IN OUT   pack raw bytes, N bytes per record\n"
    "       gpukit data pack --npy IN.npy OUT         pack a .npy array, one record per row\n"
    "       gpukit data inspect [--json] FILE         print a record file's or token shard's "
    "header\n\n"
    "A record file is a header (magic GKRECORD, version, record size, record count, element\n"
    "type, shape, data offset aligned to 4096) followed by the records; see docs/loader.md.\n";

#define CHUNK (8u << 20)

static int parse_u64(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!text[0] || text[0] == '-')
        return -1;
    unsigned long long v = strtoull(text, &end, 10);
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024;
    else if (*end == 'M')
        mul = 1024 * 1024;
    else if (*end == 'G')
        mul = 1024ULL * 1024 * 1024;
    if (mul > 1) {
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
            end += strlen(end);
    }
    if (*end || errno || v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* Copies `bytes` bytes from `in` (positioned) into the writer as records. */
static int copy_records(FILE *in, const char *in_path, gk_records_writer *w, uint64_t rs,
                        uint64_t count)
{
    size_t per = rs >= CHUNK ? 1 : CHUNK / rs;
    unsigned char *buf = malloc(per * rs);
    if (!buf) {
        gk_tool_error("out of memory");
        return GK_TOOL_FAIL;
    }
    uint64_t left = count;
    while (left) {
        size_t n = left < per ? (size_t)left : per;
        if (fread(buf, rs, n, in) != n) {
            gk_tool_error("%s: short read (%s)", in_path, ferror(in) ? strerror(errno) : "end");
            free(buf);
            return GK_TOOL_FAIL;
        }
        if (gk_records_writer_write(w, buf, n)) {
            gk_tool_error("%s", gk_last_error());
            free(buf);
            return GK_TOOL_FAIL;
        }
        left -= n;
    }
    free(buf);
    return GK_TOOL_OK;
}

static int pack_raw(uint64_t rs, const char *in_path, const char *out_path)
{
    FILE *in = fopen(in_path, "rb");
    if (!in) {
        gk_tool_error("%s: cannot open: %s", in_path, strerror(errno));
        return GK_TOOL_FAIL;
    }
    fseeko(in, 0, SEEK_END);
    uint64_t size = (uint64_t)ftello(in);
    rewind(in);
    if (size == 0 || size % rs) {
        gk_tool_error("%s: %llu bytes is not a whole number of %llu-byte records (%llu left "
                      "over); pick a record size that divides the file",
                      in_path, (unsigned long long)size, (unsigned long long)rs,
                      (unsigned long long)(size % rs));
        fclose(in);
        return GK_TOOL_FAIL;
    }
    gk_records_writer *w;
    if (gk_records_writer_open(out_path, rs, NULL, 0, NULL, &w)) {
        gk_tool_error("%s", gk_last_error());
        fclose(in);
        return GK_TOOL_FAIL;
    }
    int rc = copy_records(in, in_path, w, rs, size / rs);
    fclose(in);
    if (rc) {
        gk_records_writer_abort(w);
        return rc;
    }
    if (gk_records_writer_close(w)) {
        gk_tool_error("%s", gk_last_error());
        return GK_TOOL_FAIL;
    }
    printf("%s: %llu records of %llu bytes\n", out_path, (unsigned long long)(size / rs),
           (unsigned long long)rs);
    return GK_TOOL_OK;
}

/* Finds 'key': in a .npy header dict and returns a pointer just past the colon. */
static const char *npy_field(const char *h, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p)
        return NULL;
    p = strchr(p + strlen(pat), ':');
    if (!p)
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static int pack_npy(const char *in_path, const char *out_path)
{
    FILE *in = fopen(in_path, "rb");
    if (!in) {
        gk_tool_error("%s: cannot open: %s", in_path, strerror(errno));
        return GK_TOOL_FAIL;
    }
    unsigned char pre[12];
    char *h = NULL;
    int rc = GK_TOOL_FAIL;
    if (fread(pre, 1, 10, in) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        gk_tool_error("%s: not a .npy file (bad magic)", in_path);
        goto out;
    }
    uint32_t hlen;
    if (pre[6] == 1) {
        hlen = pre[8] | (uint32_t)pre[9] << 8;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, in) != 2) {
            gk_tool_error("%s: truncated .npy header", in_path);
            goto out;
        }
        hlen = pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    } else {
        gk_tool_error("%s: .npy format version %u is not supported (1 to 3)", in_path, pre[6]);
        goto out;
    }
    if (hlen > (1u << 20)) {
        gk_tool_error("%s: .npy header of %u bytes is too large", in_path, hlen);
        goto out;
    }
    h = calloc(1, hlen + 1);
    if (!h || fread(h, 1, hlen, in) != hlen) {
        gk_tool_error("%s: truncated .npy header", in_path);
        goto out;
    }
    const char *descr = npy_field(h, "descr"), *fo = npy_field(h, "fortran_order"),
               *shape = npy_field(h, "shape");
    if (!descr || !fo || !shape || *descr != '\'' || *shape != '(') {
        gk_tool_error("%s: .npy header lacks descr, fortran_order or shape", in_path);
        goto out;
    }
    char dtype[17] = "";
    const char *q = strchr(descr + 1, '\'');
    if (!q || q - descr - 1 > 16 || q - descr - 1 < 2) {
        gk_tool_error("%s: unsupported element type (structured or too long)", in_path);
        goto out;
    }
    memcpy(dtype, descr + 1, (size_t)(q - descr - 1));
    char *end;
    unsigned long isz = strtoul(dtype + 2, &end, 10);
    if (!strchr("<>|=", dtype[0]) || !strchr("biufcmM", dtype[1]) || *end || isz == 0) {
        gk_tool_error("%s: element type '%s' is not a fixed-size number type", in_path, dtype);
        goto out;
    }
    uint64_t dims[GK_RECORDS_MAX_DIMS + 1];
    uint32_t nd = 0;
    const char *p = shape + 1;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            break;
        if (!isdigit((unsigned char)*p) || nd > GK_RECORDS_MAX_DIMS) {
            gk_tool_error("%s: cannot read the shape (at most %d dimensions per record)", in_path,
                          GK_RECORDS_MAX_DIMS);
            goto out;
        }
        dims[nd++] = strtoull(p, &end, 10);
        p = end;
    }
    if (nd == 0 || dims[0] == 0) {
        gk_tool_error("%s: a scalar or empty array has no records", in_path);
        goto out;
    }
    uint64_t rs = isz;
    for (uint32_t i = 1; i < nd; i++)
        rs *= dims[i];
    uint32_t wide = 0;
    for (uint32_t i = 0; i < nd; i++)
        wide += dims[i] > 1;
    if (strncmp(fo, "True", 4) == 0 && wide > 1) {
        gk_tool_error("%s: Fortran-ordered arrays are not supported (save with "
                      "np.ascontiguousarray)",
                      in_path);
        goto out;
    }
    long data_at = ftell(in);
    fseeko(in, 0, SEEK_END);
    uint64_t have = (uint64_t)ftello(in) - (uint64_t)data_at;
    fseeko(in, data_at, SEEK_SET);
    if (rs == 0 || have != dims[0] * rs) {
        gk_tool_error("%s: %llu data bytes, but the shape and element type need %llu", in_path,
                      (unsigned long long)have, (unsigned long long)(dims[0] * rs));
        goto out;
    }
    gk_records_writer *w;
    uint64_t rec_shape[GK_RECORDS_MAX_DIMS];
    for (uint32_t i = 1; i < nd; i++)
        rec_shape[i - 1] = dims[i];
    if (gk_records_writer_open(out_path, rs, dtype, nd - 1, nd > 1 ? rec_shape : NULL, &w)) {
        gk_tool_error("%s", gk_last_error());
        goto out;
    }
    rc = copy_records(in, in_path, w, rs, dims[0]);
    if (rc) {
        gk_records_writer_abort(w);
        goto out;
    }
    if (gk_records_writer_close(w)) {
        gk_tool_error("%s", gk_last_error());
        rc = GK_TOOL_FAIL;
        goto out;
    }
    printf("%s: %llu records of %llu bytes (%s)\n", out_path, (unsigned long long)dims[0],
           (unsigned long long)rs, dtype);
out:
    free(h);
    fclose(in);
    return rc;
}

static int inspect(const char *path, int json)
{
    gk_records_info ri;
    char err[600], err2[600];
    int rc = gk_records_inspect(path, &ri, err, sizeof err);
    if (rc == 0) {
        if (json) {
            printf("{\"file\":\"");
            gk_tool_json_escape(stdout, path);
            printf("\",\"format\":\"records\",\"version\":%u,\"record_size\":%llu,"
                   "\"record_count\":%llu,\"data_offset\":%llu,\"file_size\":%llu,\"dtype\":\"",
                   ri.version, (unsigned long long)ri.record_size,
                   (unsigned long long)ri.record_count, (unsigned long long)ri.data_offset,
                   (unsigned long long)ri.file_size);
            gk_tool_json_escape(stdout, ri.dtype);
            printf("\",\"shape\":[");
            for (uint32_t i = 0; i < ri.ndim; i++)
                printf("%s%llu", i ? "," : "", (unsigned long long)ri.shape[i]);
            printf("]}\n");
        } else {
            printf("%s: gpukit record file, version %u\n", path, ri.version);
            printf("  records      %llu\n", (unsigned long long)ri.record_count);
            printf("  record size  %llu bytes\n", (unsigned long long)ri.record_size);
            printf("  element      %s, shape (", ri.dtype);
            for (uint32_t i = 0; i < ri.ndim; i++)
                printf("%s%llu", i ? ", " : "", (unsigned long long)ri.shape[i]);
            printf(")\n  data offset  %llu\n  file size    %llu bytes\n",
                   (unsigned long long)ri.data_offset, (unsigned long long)ri.file_size);
        }
        return GK_TOOL_OK;
    }
    gk_tokens_info ti;
    int rc2 = gk_tokens_inspect(path, &ti, err2, sizeof err2);
    if (rc2 == 0) {
        if (json) {
            printf("{\"file\":\"");
            gk_tool_json_escape(stdout, path);
            printf("\",\"format\":\"tokens\",\"magic\":%d,\"version\":%d,\"tokens\":%llu,"
                   "\"token_bytes\":%u,\"file_size\":%llu}\n",
                   ti.magic, ti.version, (unsigned long long)ti.tokens, ti.token_bytes,
                   (unsigned long long)ti.file_size);
        } else {
            printf("%s: llm.c token shard, magic %d, version %d\n", path, ti.magic, ti.version);
            printf("  tokens       %llu of %u bytes\n  file size    %llu bytes\n",
                   (unsigned long long)ti.tokens, ti.token_bytes, (unsigned long long)ti.file_size);
        }
        return GK_TOOL_OK;
    }
    /* Report the error of the format the file claims to be. */
    int rec_magic = strstr(err, "bad magic") != NULL;
    int tok_magic = strstr(err2, "bad magic") || strstr(err2, "shorter than");
    if (rec_magic && tok_magic)
        gk_tool_error("%s: neither a gpukit record file nor an llm.c token shard (bad magic)",
                      path);
    else
        gk_tool_error("%s", rec_magic ? err2 : err);
    return GK_TOOL_FAIL;
}

int gk_tool_data(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, data_usage))
        return GK_TOOL_OK;
    if (argc < 2) {
        fputs(data_usage, stderr);
        return GK_TOOL_USAGE;
    }
    if (strcmp(argv[1], "inspect") == 0) {
        int json = 0;
        const char *file = NULL;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0)
                json = 1;
            else if (!file && argv[i][0] != '-')
                file = argv[i];
            else {
                gk_tool_error("data inspect: unexpected argument \"%s\" (see --help)", argv[i]);
                return GK_TOOL_USAGE;
            }
        }
        if (!file) {
            gk_tool_error("data inspect: name a FILE (see --help)");
            return GK_TOOL_USAGE;
        }
        return inspect(file, json);
    }
    if (strcmp(argv[1], "pack") == 0) {
        uint64_t rs = 0;
        int npy = 0;
        const char *pos[2] = {NULL, NULL};
        int npos = 0;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--record-size") == 0 && i + 1 < argc) {
                if (parse_u64(argv[++i], &rs) || rs == 0) {
                    gk_tool_error("--record-size: \"%s\" is not a size in bytes (try 4096 or "
                                  "4KiB)",
                                  argv[i]);
                    return GK_TOOL_USAGE;
                }
            } else if (strcmp(argv[i], "--npy") == 0 && i + 1 < argc && npos == 0) {
                npy = 1;
                pos[npos++] = argv[++i];
            } else if (argv[i][0] != '-' && npos < 2) {
                pos[npos++] = argv[i];
            } else {
                gk_tool_error("data pack: unexpected argument \"%s\" (see --help)", argv[i]);
                return GK_TOOL_USAGE;
            }
        }
        if (npos != 2 || (npy && rs) || (!npy && !rs)) {
            gk_tool_error("data pack: give --record-size N IN OUT or --npy IN.npy OUT");
            return GK_TOOL_USAGE;
        }
        struct stat a, b;
        if (stat(pos[0], &a) == 0 && stat(pos[1], &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino) {
            gk_tool_error("data pack: %s is both the input and the output (name another OUT)",
                          pos[1]);
            return GK_TOOL_USAGE;
        }
        return npy ? pack_npy(pos[0], pos[1]) : pack_raw(rs, pos[0], pos[1]);
    }
    gk_tool_error("data: unknown action \"%s\" (pack or inspect)", argv[1]);
    return GK_TOOL_USAGE;
}
