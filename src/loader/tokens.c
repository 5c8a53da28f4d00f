/* llm.c token shards: header checks (magic, version, size against the token count), a glob of
 * shards sorted by name, and items of B*T+1 contiguous tokens read with pread at 64-bit offsets,
 * laid out so that rank r of `group` ranks sees what llm.c's dataloader gives rank r. */
#include <fcntl.h>
#include <glob.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "loader/loader_int.h"

int gk__tokens_parse(const char *path, const unsigned char *bytes, size_t got, uint64_t file_size,
                     gk_tokens_info *info, char *err, size_t len)
{
    memset(info, 0, sizeof *info);
    info->file_size = file_size;
    int32_t h[3];
    if (file_size < GK_TOKENS_HEADER_BYTES || got < sizeof h) {
        snprintf(err, len, "%s: %llu bytes is shorter than the %d-byte token shard header", path,
                 (unsigned long long)file_size, GK_TOKENS_HEADER_BYTES);
        return GK_ECORRUPT;
    }
    memcpy(h, bytes, sizeof h);
    info->magic = h[0];
    info->version = h[1];
    if (h[0] == GK_TOKENS_MAGIC && (h[1] == 1 || h[1] == 2)) {
        info->token_bytes = h[1] == 1 ? 2 : 4;
    } else if (h[0] == GK_TOKENS_MAGIC_LLAMA3 && h[1] == 7) {
        info->token_bytes = 4;
    } else if (h[0] == GK_TOKENS_MAGIC || h[0] == GK_TOKENS_MAGIC_LLAMA3) {
        snprintf(err, len, "%s: token shard version %d is not supported (magic %d takes %s)", path,
                 h[1], h[0], h[0] == GK_TOKENS_MAGIC ? "1 or 2" : "7");
        return GK_EVERSION;
    } else {
        snprintf(err, len, "%s: not a token shard (bad magic %d; expected %d or %d)", path, h[0],
                 GK_TOKENS_MAGIC, GK_TOKENS_MAGIC_LLAMA3);
        return GK_ECORRUPT;
    }
    if (h[2] < 0) {
        snprintf(err, len, "%s: corrupt header: negative token count %d", path, h[2]);
        return GK_ECORRUPT;
    }
    info->tokens = (uint64_t)(uint32_t)h[2];
    uint64_t want = GK_TOKENS_HEADER_BYTES + info->tokens * info->token_bytes;
    if (info->file_size != want) {
        snprintf(err, len,
                 "%s: file is %llu bytes but the header's %llu tokens of %u bytes need %llu (%s)",
                 path, (unsigned long long)info->file_size, (unsigned long long)info->tokens,
                 info->token_bytes, (unsigned long long)want,
                 info->file_size < want ? "token count past the end: truncated" : "trailing bytes");
        return GK_ECORRUPT;
    }
    return 0;
}

static int check_header(const char *path, int fd, gk_tokens_info *info, char *err, size_t len)
{
    memset(info, 0, sizeof *info);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, len, "%s: cannot stat: %s", path, strerror(errno));
        return -EIO;
    }
    unsigned char h[12];
    ssize_t got = pread(fd, h, sizeof h, 0);
    if (got < 0) {
        snprintf(err, len, "%s: cannot read the header: %s", path, strerror(errno));
        return -EIO;
    }
    return gk__tokens_parse(path, h, (size_t)got, (uint64_t)st.st_size, info, err, len);
}

int(gk_tokens_inspect)(const char *path, gk_tokens_info *out, char *err, size_t err_len,
                       size_t size)
{
    char msg[600];
    if (!path)
        return gk__error_buf(-EINVAL, err, err_len, "gk_tokens_inspect: path is NULL");
    int rc = gk__sized_check(out, size, "gk_tokens_info");
    if (rc)
        return gk__error_buf(rc, err, err_len, "%s", gk_last_error());
    gk_tokens_info info;
    int fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return gk__error_buf(e == ENOENT || e == EACCES ? -e : -EIO, err, err_len,
                             "%s: cannot open: %s", path, strerror(e));
    }
    rc = check_header(path, fd, &info, msg, sizeof msg);
    close(fd);
    if (rc)
        return gk__error_buf(rc, err, err_len, "%s", msg);
    return gk__sized_put(out, size, &info, sizeof info, "gk_tokens_info");
}

typedef struct shard {
    int fd;
    uint64_t first_item; /* global index of its first item */
    uint64_t items;
    uint64_t file_size;
    char *path;
} shard;

typedef struct tok_ctx {
    shard *shards;
    size_t nshards;
    uint64_t items;
    uint64_t window; /* B*T */
    uint32_t token_bytes;
    _Atomic uint64_t checked; /* 1 + the epoch whose first read checked the shards' sizes */
} tok_ctx;

static uint64_t tok_count(void *ctx)
{
    return ((tok_ctx *)ctx)->items;
}

static size_t tok_item_size(void *ctx)
{
    tok_ctx *t = ctx;
    return (size_t)((t->window + 1) * t->token_bytes);
}

static const shard *find_shard(const tok_ctx *t, uint64_t index)
{
    size_t lo = 0, hi = t->nshards;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (t->shards[mid].first_item <= index)
            lo = mid;
        else
            hi = mid;
    }
    return &t->shards[lo];
}

static int tok_read_item(void *ctx, gk_read_ctx *rc, uint64_t index, uint64_t seed, void *dst)
{
    (void)seed;
    tok_ctx *t = ctx;
    rc->failed_index = index;
    if (index >= t->items) {
        snprintf(rc->err, rc->err_len, "token dataset: item %llu past the end (%llu items)",
                 (unsigned long long)index, (unsigned long long)t->items);
        return -ERANGE;
    }
    /* Once per epoch (not per item): every shard still has the size it had at open. A shard cut
     * within the epoch shows up as a short read below. */
    if (atomic_load_explicit(&t->checked, memory_order_acquire) != rc->epoch + 1) {
        for (size_t i = 0; i < t->nshards; i++) {
            const shard *c = &t->shards[i];
            struct stat st;
            if (fstat(c->fd, &st) != 0 || (uint64_t)st.st_size != c->file_size) {
                snprintf(rc->err, rc->err_len, "%s: file changed size while in use (%s)", c->path,
                         "truncated or rewritten");
                return GK_ECORRUPT;
            }
        }
        atomic_store_explicit(&t->checked, rc->epoch + 1, memory_order_release);
    }
    const shard *s = find_shard(t, index);
    size_t n = tok_item_size(ctx);
    uint64_t off = GK_TOKENS_HEADER_BYTES + (index - s->first_item) * t->window * t->token_bytes;
    size_t done = 0;
    while (done < n) {
        ssize_t got = pread(s->fd, (char *)dst + done, n - done, (off_t)(off + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(rc->err, rc->err_len, "%s: reading tokens at byte %llu: %s", s->path,
                     (unsigned long long)(off + done), strerror(errno));
            return -EIO;
        }
        if (got == 0) {
            struct stat st;
            long long now = fstat(s->fd, &st) == 0 ? (long long)st.st_size : -1;
            snprintf(rc->err, rc->err_len,
                     "%s: file changed size while in use: now %lld bytes, was %llu (truncated); "
                     "reading tokens at byte %llu met its end",
                     s->path, now, (unsigned long long)s->file_size,
                     (unsigned long long)(off + done));
            return GK_ECORRUPT;
        }
        done += (size_t)got;
    }
    return 0;
}

static void tok_destroy(void *ctx)
{
    tok_ctx *t = ctx;
    for (size_t i = 0; i < t->nshards; i++) {
        close(t->shards[i].fd);
        free(t->shards[i].path);
    }
    free(t->shards);
    free(t);
}

static const gk_dataset_ops tok_ops = {
    .size = sizeof(gk_dataset_ops),
    .count = tok_count,
    .item_size = tok_item_size,
    .read_item = tok_read_item,
    .destroy = tok_destroy,
};

int gk_dataset_open_tokens(const char *pattern, uint32_t B, uint32_t T, uint32_t group,
                           gk_dataset **out)
{
    if (!out || !pattern)
        return gk__dataset_fail(-EINVAL, "gk_dataset_open_tokens: pattern and out are required");
    *out = NULL;
    if (B == 0 || T == 0)
        return gk__dataset_fail(-EINVAL, "token dataset %s: B and T must be at least 1", pattern);
    if (group == 0)
        group = 1;
    glob_t g;
    int grc = glob(pattern, GLOB_ERR, NULL, &g);
    if (grc == GLOB_NOMATCH)
        return gk__dataset_fail(-ENOENT, "token dataset %s: no file matches", pattern);
    if (grc != 0)
        return gk__dataset_fail(-EIO, "token dataset %s: glob failed", pattern);
    char err[600] = "";
    int rc = -ENOMEM;
    tok_ctx *t = gk__calloc(1, sizeof *t);
    if (!t)
        goto out_glob;
    t->shards = gk__calloc(g.gl_pathc, sizeof *t->shards);
    if (!t->shards)
        goto out_ctx;
    t->window = (uint64_t)B * T;
    uint64_t need = (uint64_t)group * t->window + 1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *path = g.gl_pathv[i];
        shard *s = &t->shards[i];
        s->fd = gk__open(path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) {
            int e = errno;
            snprintf(err, sizeof err, "%s: cannot open: %s", path, strerror(e));
            rc = e == ENOENT || e == EACCES ? -e : -EIO;
            goto out_shards;
        }
        t->nshards++;
        s->path = gk__strdup(path);
        if (!s->path) {
            rc = -ENOMEM;
            snprintf(err, sizeof err, "%s: out of memory", path);
            goto out_shards;
        }
        gk_tokens_info info;
        rc = check_header(path, s->fd, &info, err, sizeof err);
        if (rc)
            goto out_shards;
        if (t->token_bytes && info.token_bytes != t->token_bytes) {
            snprintf(err, sizeof err, "%s: %u-byte tokens, but %s has %u-byte tokens", path,
                     info.token_bytes, t->shards[0].path, t->token_bytes);
            rc = GK_EMISMATCH;
            goto out_shards;
        }
        t->token_bytes = info.token_bytes;
        if (info.tokens < need) {
            snprintf(err, sizeof err,
                     "%s: %llu tokens, fewer than group*B*T+1 = %llu needed for one item", path,
                     (unsigned long long)info.tokens, (unsigned long long)need);
            rc = -EINVAL;
            goto out_shards;
        }
        s->file_size = info.file_size;
        s->first_item = t->items;
        s->items = (info.tokens - 1) / (group * t->window) * group;
        t->items += s->items;
    }
    rc = gk_dataset_create(&tok_ops, t, pattern, out);
    if (rc) {
        snprintf(err, sizeof err, "%s", gk_last_error());
        goto out_shards;
    }
    (*out)->token_bytes = t->token_bytes;
    globfree(&g);
    return 0;
out_shards:
    for (size_t i = 0; i < t->nshards; i++) {
        close(t->shards[i].fd);
        free(t->shards[i].path);
    }
    free(t->shards);
out_ctx:
    free(t);
out_glob:
    globfree(&g);
    if (!err[0])
        snprintf(err, sizeof err, "token dataset %s: out of memory", pattern);
    return gk__dataset_fail(rc, "%s", err);
}
