/* Expandable segments: one reserved address range per stream and pool, into which physical pages
 * are mapped as blocks need them and from which pages under no live block are unmapped when the
 * pool gives memory back. Reserved bytes count mapped pages only, so a growing working set never
 * strands a half-used segment the way fixed segments do. */
#include <stdlib.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

static size_t round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

static size_t page_for(const gk_pool *p, int kind)
{
    size_t g = p->props.vm_granularity ? p->props.vm_granularity : 1;
    size_t page = kind == GK_POOL_SMALL ? p->cfg.small_segment : p->cfg.page_size;
    return round_up(page ? page : g, g);
}

int gk__expand_new_segment(gk_pool *p, const gk__request *r, gk__block **out)
{
    size_t page = page_for(p, r->kind);
    size_t need = round_up(r->rsize, page);
    size_t va = round_up(p->total_memory / 8 * 9, page);
    if (va < need)
        va = need;
    gk__segment *s = gk__calloc(1, sizeof *s);
    gk__block *b = gk__calloc(1, sizeof *b);
    uint8_t *mapped = gk__calloc(va / page, 1);
    if (!s || !b || !mapped) {
        free(s);
        free(b);
        free(mapped);
        return -ENOMEM;
    }
    /* Address space is plentiful on a GPU but may be tight (a sim has 4 x its capacity): when
     * the full range cannot be reserved, halve it down to what this request needs. */
    void *base = NULL;
    int rc;
    for (;;) {
        uint64_t t0 = gk__pool_now_ns();
        rc = gk_device_vm_reserve(p->dev, va, &base);
        p->stats.backend_ns += gk__pool_now_ns() - t0;
        if (rc == 0 || va == need)
            break;
        va = round_up(va / 2, page);
        if (va < need)
            va = need;
    }
    if (rc != 0) {
        gk__error(rc, "address reserve: %s", gk_last_error());
        free(s);
        free(b);
        free(mapped);
        return rc;
    }
    s->base = (uintptr_t)base;
    s->size = va;
    s->kind = r->kind;
    s->stream = r->stream;
    s->expandable = true;
    s->page = page;
    s->npages = va / page;
    s->mapped = mapped;
    s->head = b;
    b->addr = s->base;
    b->size = va;
    b->stream = r->stream;
    b->seg = s;
    s->next = p->segments;
    if (p->segments)
        p->segments->prev = s;
    p->segments = s;
    p->nsegments++;
    gk__stat_add(p, p->stats.segment, s->kind, 1);
    *out = b;
    return 0;
}

static void account(gk_pool *p, gk__segment *s, size_t pages, size_t runs, bool map)
{
    int64_t bytes = (int64_t)(pages * s->page);
    if (map) {
        s->mapped_pages += pages;
        p->reserved += (size_t)bytes;
        p->stats.num_device_alloc += runs;
        gk__stat_add(p, p->stats.reserved_bytes, s->kind, bytes);
    } else {
        s->mapped_pages -= pages;
        p->reserved -= (size_t)bytes;
        p->stats.num_device_free += runs;
        gk__stat_add(p, p->stats.reserved_bytes, s->kind, -bytes);
    }
}

/* Unmaps page k one granule at a time. A granule the device reports as not mapped (-EINVAL) counts
 * as unmapped: the device forgets a granule whose physical release failed, and a page left half
 * unmapped by an earlier failure is finished this way. Returns 0 when the whole page is unmapped,
 * else the device error (the page stays marked mapped and a later call finishes it). */
static int unmap_page(gk_pool *p, gk__segment *s, size_t k)
{
    size_t g = p->props.vm_granularity ? p->props.vm_granularity : s->page;
    for (size_t off = 0; off < s->page; off += g) {
        int rc = gk_device_vm_unmap(p->dev, (void *)(s->base + k * s->page + off), g);
        if (rc != 0 && rc != -EINVAL)
            return rc;
    }
    return 0;
}

/* Unmaps the mapped pages [i, j); *done receives how many pages were unmapped (a prefix of the
 * run). Returns 0 or the first device error. */
static int unmap_run(gk_pool *p, gk__segment *s, size_t i, size_t j, size_t *done)
{
    uint64_t t0 = gk__pool_now_ns();
    int rc = 0;
    size_t k = i;
    for (; k < j; k++) {
        if ((rc = unmap_page(p, s, k)) != 0)
            break;
        s->mapped[k] = 0;
    }
    p->stats.backend_ns += gk__pool_now_ns() - t0;
    *done = k - i;
    if (k > i)
        gk__hist_push(p, GK__ACT_SEGMENT_UNMAP, s->base + i * s->page, (k - i) * s->page,
                      s->stream);
    if (rc != 0)
        gk__error(rc, "unmap: %s", gk_last_error());
    return rc;
}

int gk__expand_map(gk_pool *p, gk__segment *s, uintptr_t addr, size_t size, int *mapped)
{
    size_t first = (addr - s->base) / s->page, last = (addr + size - 1 - s->base) / s->page;
    size_t need = 0, runs = 0;
    for (size_t i = first; i <= last; i++)
        need += !s->mapped[i];
    if (need == 0)
        return 0;
    if (p->limit && p->reserved + need * s->page > p->limit)
        return GK_EDEVOOM;
    int rc = 0;
    for (size_t i = first; i <= last;) {
        if (s->mapped[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j <= last && !s->mapped[j])
            j++;
        uint64_t t0 = gk__pool_now_ns();
        rc = gk_device_vm_map(p->dev, (void *)(s->base + i * s->page), (j - i) * s->page);
        p->stats.backend_ns += gk__pool_now_ns() - t0;
        if (rc != 0) {
            gk__error(rc, "map: %s", gk_last_error());
            break;
        }
        for (size_t k = i; k < j; k++)
            s->mapped[k] = 2; /* mapped by this call */
        runs++;
        i = j;
    }
    if (rc != 0) {
        /* Roll back what this call mapped so a failure leaves the segment as it was. */
        for (size_t i = first; i <= last;) {
            if (s->mapped[i] != 2) {
                i++;
                continue;
            }
            size_t j = i;
            while (j <= last && s->mapped[j] == 2)
                j++;
            for (size_t k = i; k < j; k++) /* a page that stays mapped is kept counted */
                s->mapped[k] = unmap_page(p, s, k) ? 3 : 0;
            i = j;
        }
        size_t kept = 0;
        for (size_t i = first; i <= last; i++) {
            if (s->mapped[i] == 3) {
                s->mapped[i] = 1;
                kept++;
            }
        }
        if (kept)
            account(p, s, kept, 1, true);
        return rc;
    }
    for (size_t i = first; i <= last; i++)
        if (s->mapped[i] == 2)
            s->mapped[i] = 1;
    account(p, s, need, runs, true);
    gk__hist_push(p, GK__ACT_SEGMENT_MAP, s->base + first * s->page, (last - first + 1) * s->page,
                  s->stream);
    *mapped = 1;
    return 0;
}

int gk__expand_release(gk_pool *p, gk__segment *s, bool sync, bool drop_empty)
{
    int rc = 0;
    if (s->mapped_pages) {
        uint8_t *live = gk__calloc(s->npages, 1);
        if (!live)
            return -ENOMEM;
        for (gk__block *b = s->head; b; b = b->next) {
            if (b->in_tree)
                continue;
            size_t first = (b->addr - s->base) / s->page;
            size_t last = (b->addr + b->size - 1 - s->base) / s->page;
            for (size_t i = first; i <= last; i++)
                live[i] = 1;
        }
        size_t any = 0;
        for (size_t i = 0; i < s->npages; i++)
            any += s->mapped[i] && !live[i];
        if (any && sync && (rc = gk_stream_synchronize(p->dev, (gk_stream *)s->stream, -1)) != 0) {
            free(live);
            return rc;
        }
        size_t pages = 0, runs = 0;
        for (size_t i = 0; any && i < s->npages;) {
            if (!s->mapped[i] || live[i]) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < s->npages && s->mapped[j] && !live[j])
                j++;
            size_t done = 0;
            rc = unmap_run(p, s, i, j, &done);
            pages += done;
            runs += done > 0;
            if (rc != 0)
                break;
            i = j;
        }
        free(live);
        if (pages)
            account(p, s, pages, runs, false);
        if (rc)
            return rc;
    }
    if (drop_empty && s->mapped_pages == 0 && !s->head->next && s->head->in_tree) {
        uint64_t t0 = gk__pool_now_ns();
        rc = gk_device_vm_release(p->dev, (void *)s->base, s->size);
        p->stats.backend_ns += gk__pool_now_ns() - t0;
        /* The device forgets the range even when the driver fails to free it: drop it either way. */
        if (rc != 0)
            gk__error(rc, "address release: %s", gk_last_error());
        gk__cache_remove(p, s->head);
        gk__stat_add(p, p->stats.segment, s->kind, -1);
        if (s->prev)
            s->prev->next = s->next;
        else
            p->segments = s->next;
        if (s->next)
            s->next->prev = s->prev;
        p->nsegments--;
        free(s->head);
        free(s->mapped);
        free(s);
    }
    return rc;
}

void gk__expand_destroy(gk_pool *p, gk__segment *s)
{
    for (size_t i = 0; i < s->npages;) {
        if (!s->mapped[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < s->npages && s->mapped[j])
            j++;
        for (size_t k = i; k < j; k++)
            unmap_page(p, s, k);
        i = j;
    }
    gk_device_vm_release(p->dev, (void *)s->base, s->size);
    free(s->mapped);
}

void gk__expand_mapped_in(const gk__segment *s, uintptr_t addr, size_t size, size_t *largest,
                          size_t *total)
{
    size_t run = 0, best = 0, sum = 0;
    uintptr_t end = addr + size;
    for (uintptr_t a = addr; a < end;) {
        size_t i = (a - s->base) / s->page;
        uintptr_t page_end = s->base + (i + 1) * s->page;
        size_t piece = (page_end < end ? page_end : end) - a;
        if (s->mapped[i]) {
            run += piece;
            sum += piece;
            if (run > best)
                best = run;
        } else {
            run = 0;
        }
        a += piece;
    }
    *largest = best;
    *total = sum;
}
