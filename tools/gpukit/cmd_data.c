/* gpukit data: build fixed-record files from raw bytes or a .npy array (`pack`) and print the
 * header of a record file or an llm.c token shard (`inspect`). */
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

/* Copies `count` records of `rs` bytes from `in` (positioned) into the writer. */
static int copy_records(FILE *in, const char *in_path, gk_records_writer *w, uint64_t rs,
                        uint64_t count)
{
    size_t per = rs >= CHUNK ? 1 : CHUNK / rs;
    unsigned char *buf = malloc(per * rs);
    if (!buf) {
        gk_tool_error("out of memory for a %llu-byte record", (unsigned long long)rs);
        return GK_TOOL_FAIL;
    }
    uint64_t left = count;
    while (left) {
        size_t n = left < per ? (size_t)left : per;
        if (fread(buf, rs, n, in) != n) {
            gk_tool_error("%s: short read (%s)", in_path,
                          ferror(in) ? strerror(errno) : "the file shrank while being read");
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

/* Opens the input of data pack: it must be a regular file, since its size is checked first. */
static FILE *open_input(const char *path, uint64_t *size)
{
    FILE *in = fopen(path, "rb");
    if (!in) {
        gk_tool_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(in), &st) != 0 || !S_ISREG(st.st_mode)) {
        gk_tool_error("%s: is %s; data pack reads a regular file, whose size it checks first "
                      "(save the data to a file)",
                      path,
                      S_ISDIR(st.st_mode)    ? "a directory"
                      : S_ISFIFO(st.st_mode) ? "a pipe"
                                             : "not a regular file");
        fclose(in);
        return NULL;
    }
    *size = (uint64_t)st.st_size;
    return in;
}

/* Writes `count` records of `rs` bytes from `in` to OUT through a record writer, after checking
 * that they fit on OUT's filesystem. */
static int pack_into(FILE *in, const char *in_path, const char *out_path, uint64_t rs,
                     uint64_t count, const char *dtype, uint32_t ndim, const uint64_t *shape)
{
    gk_records_writer *w;
    if (gk_records_writer_open(out_path, rs, dtype, ndim, shape, &w)) {
        gk_tool_error("%s", gk_last_error());
        return GK_TOOL_FAIL;
    }
    if (gk_records_writer_reserve(w, count)) {
        gk_tool_error("%s", gk_last_error());
        gk_records_writer_abort(w);
        return GK_TOOL_FAIL;
    }
    int rc = copy_records(in, in_path, w, rs, count);
    if (rc) {
        gk_records_writer_abort(w);
        return rc;
    }
    if (gk_records_writer_close(w)) {
        gk_tool_error("%s", gk_last_error());
        return GK_TOOL_FAIL;
    }
    return GK_TOOL_OK;
}

static int pack_raw(uint64_t rs, const char *in_path, const char *out_path)
{
    uint64_t size;
    FILE *in = open_input(in_path, &size);
    if (!in)
        return GK_TOOL_FAIL;
    if (size == 0 || size % rs) {
        gk_tool_error("%s: %llu bytes is not a whole number of %llu-byte records (%llu left "
                      "over); pick a record size that divides the file",
                      in_path, (unsigned long long)size, (unsigned long long)rs,
                      (unsigned long long)(size % rs));
        fclose(in);
        return GK_TOOL_FAIL;
    }
    int rc = pack_into(in, in_path, out_path, rs, size / rs, NULL, 0, NULL);
    fclose(in);
    if (rc == GK_TOOL_OK) {
        gk_text_fputs(out_path, stdout);
        printf(": %llu records of %llu bytes\n", (unsigned long long)(size / rs),
               (unsigned long long)rs);
    }
    return rc;
}

static int pack_npy(const char *in_path, const char *out_path)
{
    gk_npy_info ni;
    char err[700];
    int rc = gk_npy_inspect(in_path, &ni, err, sizeof err);
    if (rc) {
        gk_tool_error("%s", err);
        return GK_TOOL_FAIL;
    }
    uint64_t size;
    FILE *in = open_input(in_path, &size);
    if (!in)
        return GK_TOOL_FAIL;
    if (fseeko(in, (off_t)ni.header_bytes, SEEK_SET) != 0) {
        gk_tool_error("%s: cannot seek to the data: %s", in_path, strerror(errno));
        fclose(in);
        return GK_TOOL_FAIL;
    }
    rc = pack_into(in, in_path, out_path, ni.record_size, ni.shape[0], ni.dtype, ni.ndim - 1,
                   ni.ndim > 1 ? ni.shape + 1 : NULL);
    fclose(in);
    if (rc == GK_TOOL_OK) {
        gk_text_fputs(out_path, stdout);
        printf(": %llu records of %llu bytes (", (unsigned long long)ni.shape[0],
               (unsigned long long)ni.record_size);
        gk_text_fputs(ni.dtype, stdout);
        printf(")\n");
    }
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
            gk_text_fputs(path, stdout);
            printf(": gpukit record file, version %u\n", ri.version);
            printf("  records      %llu\n", (unsigned long long)ri.record_count);
            printf("  record size  %llu bytes\n", (unsigned long long)ri.record_size);
            printf("  element      ");
            gk_text_fputs(ri.dtype, stdout);
            printf(", shape (");
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
            gk_text_fputs(path, stdout);
            printf(": llm.c token shard, magic %d, version %d\n", ti.magic, ti.version);
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
