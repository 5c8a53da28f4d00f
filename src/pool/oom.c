/* The out-of-memory report: what PyTorch's message says (sizes, device capacity and free memory,
 * allocated and reserved-but-unallocated bytes, the limit) plus what users ask for at an OOM: the
 * largest free block, external fragmentation, the stream, the five largest live blocks with their
 * tags, and a hint chosen from those figures. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gpukit/options.h"
#include "gpukit/output.h"
#include "pool/pool_int.h"

typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t add = (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1;
    if (b->len + add + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 1024) + add;
        char *ns = gk__realloc(b->s, nc);
        if (!ns)
            return;
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->len, tmp, add);
    b->len += add;
    b->s[b->len] = '\0';
}

void gk__pool_build_oom_report(gk_pool *p, const gk__request *r)
{
    sbuf b = {0};
    char s1[32], s2[32], s3[32], s4[32];
    size_t dev_free = 0, dev_total = 0;
    gk_device_mem_info(p->dev, &dev_free, &dev_total);
    size_t ls = gk__tree_max(&p->free[GK_POOL_SMALL]), ll = gk__tree_max(&p->free[GK_POOL_LARGE]);
    uint64_t largest = ls > ll ? ls : ll, free_bytes = p->free_bytes;
    int64_t allocated = p->stats.allocated_bytes[GK_POOL_ALL].current;
    int64_t reserved = p->stats.reserved_bytes[GK_POOL_ALL].current;
    char stream_name[40] = "the default stream";
    if (r->stream)
        snprintf(stream_name, sizeof stream_name, "stream %#llx", (unsigned long long)r->stream);
    double frag = free_bytes ? 1.0 - (double)largest / (double)free_bytes : 0.0;
    sb_printf(
        &b,
        "out of device memory. Tried to allocate %s (requested %zu B, rounded %zu B, %s pool) "
        "on %s.\n",
        gk_format_size(r->rsize, s1, sizeof s1), r->size, r->rsize,
        r->kind == GK_POOL_SMALL ? "small" : "large", stream_name);
    sb_printf(&b, "Device %s has a total capacity of %s of which %s is free. ", p->props.spec,
              gk_format_size(dev_total, s1, sizeof s1), gk_format_size(dev_free, s2, sizeof s2));
    if (p->limit)
        sb_printf(&b, "%s allowed (pool limit); ", gk_format_size(p->limit, s3, sizeof s3));
    sb_printf(&b,
              "Of the reserved memory %s is allocated by the pool and %s is reserved but "
              "unallocated.\n",
              gk_format_size((uint64_t)allocated, s3, sizeof s3),
              gk_format_size((uint64_t)(reserved - allocated), s4, sizeof s4));
    sb_printf(&b,
              "Largest free block: %s of %s free in the cache (external fragmentation %.1f%%).\n",
              gk_format_size(largest, s1, sizeof s1), gk_format_size(free_bytes, s2, sizeof s2),
              100.0 * frag);
    gk__block **v = NULL;
    long n = gk__pool_live_blocks(p, &v);
    if (n > 0) {
        sb_printf(&b, "Largest live blocks:\n");
        for (long i = 0; i < n && i < 5; i++) {
            char tag[4 * sizeof v[i]->tag + 1]; /* the caller's text: no raw control bytes */
            gk_text_escape(tag, sizeof tag, v[i]->tag);
            sb_printf(&b, "  %ld. %s at %#llx (requested %zu B)%s%s%s\n", i + 1,
                      gk_format_size(v[i]->size, s1, sizeof s1), (unsigned long long)v[i]->addr,
                      v[i]->requested, v[i]->tag[0] ? " tag \"" : "", tag,
                      v[i]->tag[0] ? "\"" : "");
        }
    }
    free(v);
    const char *hint;
    if (r->size > p->max_request)
        hint = "the request is larger than the device's whole memory: check the size (a negative "
               "number converted to size_t?) or split the tensor";
    else if (free_bytes >= r->rsize && largest < r->rsize)
        hint = p->cfg.expandable_segments
                   ? "the cache is fragmented: free blocks are split around live ones; free "
                     "long-lived blocks earlier or allocate them first"
                   : "the cache is fragmented: set expandable_segments=1 (devices with virtual "
                     "memory) or max_split_size to keep large blocks whole";
    else if (p->limit && (r->rsize > p->limit || (size_t)reserved > p->limit - r->rsize))
        hint = "the pool limit is reached: raise limit/fraction or use a smaller batch";
    else if (dev_free >= r->rsize && !p->cfg.expandable_segments)
        hint = "the device has enough free bytes but not in one piece (its memory is fragmented "
               "by segments of different sizes): set expandable_segments=1 on a device with "
               "virtual memory, or allocate the largest blocks first";
    else
        hint = "the device is full: use a smaller batch, free tensors earlier, or turn on "
               "activation checkpointing";
    sb_printf(&b, "Hint: %s.\n", hint);
    free(p->oom_report);
    p->oom_report = b.s;
}

size_t gk_pool_oom_report(gk_pool *p, char *buf, size_t len)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    const char *s = p->oom_report ? p->oom_report : "";
    size_t n = strlen(s);
    if (buf && len) {
        size_t c = n < len - 1 ? n : len - 1;
        memcpy(buf, s, c);
        buf[c] = '\0';
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}
