/* Where each delivery falls. Delivery seq (counted from create or the last seek) is batch
 * org_batch + seq of epoch org_epoch while that epoch lasts, then the batches of the following
 * epochs in order. Every epoch follows the sampler (DistributedSampler's layout for this rank),
 * except a resumed epoch: one continued from a global position saved under another world size,
 * whose remaining positions [start, end) of the permutation are dealt to the ranks round-robin,
 * without padding, so across all ranks each remaining sample comes exactly once. */
#include <string.h>

#include "loader/loader_int.h"

uint64_t gk__epoch_batches(const gk_loader *ld, uint64_t epoch)
{
    if (ld->res.active && epoch == ld->res.epoch)
        return ld->res.batches;
    return ld->smp.batches;
}

static uint64_t epoch_items(const gk_loader *ld, uint64_t epoch)
{
    if (ld->res.active && epoch == ld->res.epoch)
        return ld->res.per_rank;
    return ld->smp.per_rank;
}

void gk__set_origin(gk_loader *ld, uint64_t epoch, uint64_t batch)
{
    ld->org_epoch = epoch;
    ld->org_batch = batch;
    uint64_t first = gk__epoch_batches(ld, epoch);
    uint64_t left = first > batch ? first - batch : 0;
    if (!ld->cfg.epochs) {
        ld->seq_end = INT64_MAX;
        return;
    }
    uint64_t end = ld->cfg.epoch + ld->cfg.epochs;
    if (end < ld->cfg.epoch)
        end = UINT64_MAX;
    if (epoch >= end) {
        ld->seq_end = 0;
        return;
    }
    uint64_t more = end - epoch - 1; /* whole epochs after the first */
    if (left > (uint64_t)INT64_MAX || more > ((uint64_t)INT64_MAX - left) / ld->smp.batches)
        ld->seq_end = INT64_MAX;
    else
        ld->seq_end = (int64_t)(left + more * ld->smp.batches);
}

void gk__locate(const gk_loader *ld, int64_t seq, gk__pos *p)
{
    uint64_t first = gk__epoch_batches(ld, ld->org_epoch);
    uint64_t left = first > ld->org_batch ? first - ld->org_batch : 0;
    uint64_t u = (uint64_t)seq;
    if (u < left) {
        p->epoch = ld->org_epoch;
        p->index = ld->org_batch + u;
    } else {
        u -= left;
        p->epoch = ld->org_epoch + 1 + u / ld->smp.batches;
        p->index = u % ld->smp.batches;
    }
    uint64_t per = epoch_items(ld, p->epoch), done = p->index * ld->smp.batch_size;
    uint64_t left_items = per > done ? per - done : 0;
    p->count = (size_t)(left_items < ld->smp.batch_size ? left_items : ld->smp.batch_size);
    p->last = p->index + 1 == gk__epoch_batches(ld, p->epoch);
}

void gk__rank_items(const gk_loader *ld, uint64_t epoch, uint64_t first, size_t n, uint64_t *out)
{
    const gk_sampler *s = &ld->smp;
    uint64_t key = gk__sampler_key(s, epoch); /* once per call, not per item */
    /* DistributedSampler's layout: position rank + j * world of the padded list (padding wraps);
     * a resumed epoch: start + rank + j * world, never past its end. */
    int resumed = ld->res.active && epoch == ld->res.epoch;
    uint64_t base = resumed ? ld->res.start + s->rank : s->rank;
    for (size_t i = 0; i < n; i++) {
        uint64_t pos = base + (first + i) * s->world;
        out[i] = gk__sampler_permute_keyed(s, key, resumed ? pos : pos % s->count);
    }
}

size_t gk__batch_indices(const gk_loader *ld, int64_t seq, uint64_t *out)
{
    gk__pos p;
    gk__locate(ld, seq, &p);
    gk__rank_items(ld, p.epoch, p.index * ld->smp.batch_size, p.count, out);
    return p.count;
}

void gk__resumed_init(const gk_loader *ld, uint64_t epoch, uint64_t g, gk__resumed *out)
{
    memset(out, 0, sizeof *out);
    if (g == 0)
        return; /* nothing consumed: the new world's own epoch, exactly */
    const gk_sampler *s = &ld->smp;
    if (g > s->count)
        g = s->count;
    uint64_t end = s->count;
    if (s->shard_drop_last) /* equal shares: the tail that does not divide is dropped */
        end = g + (s->count - g) / s->world * s->world;
    uint64_t rem = end - g;
    out->active = 1;
    out->epoch = epoch;
    out->start = g;
    out->end = end;
    out->per_rank = rem > s->rank ? (rem - 1 - s->rank) / s->world + 1 : 0;
    out->batches = s->drop_last ? out->per_rank / s->batch_size
                                : (out->per_rank + s->batch_size - 1) / s->batch_size;
}

uint64_t gk__global_position(const gk_loader *ld, uint64_t epoch, uint64_t batch,
                             uint64_t *epoch_start)
{
    const gk_sampler *s = &ld->smp;
    uint64_t start = 0, end = s->shard_drop_last ? s->per_rank * s->world : s->count;
    if (ld->res.active && epoch == ld->res.epoch) {
        start = ld->res.start;
        end = ld->res.end;
    }
    *epoch_start = start;
    /* every rank released `batch` batches of batch_size: batch * B * world positions, capped at
     * the epoch's end (the old world's padding is not a sample) */
    uint64_t room = end - start;
    uint64_t step = s->batch_size > UINT64_MAX / s->world ? UINT64_MAX : s->batch_size * s->world;
    uint64_t took = batch > room / step ? room : batch * step;
    return start + (took < room ? took : room);
}
