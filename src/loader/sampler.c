/* The sampler: a keyed permutation of [0, N) per (seed, epoch) with O(1) state and random access
 * (a balanced Feistel network over the next even power of two, cycle-walking back into range),
 * DistributedSampler-exact sharding, batching, per-item seeds, and rank/world from the launcher. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "loader/loader_int.h"

#define FEISTEL_ROUNDS 6
#define MAX_COUNT      (1ULL << 62)

static uint64_t epoch_key(uint64_t seed, uint64_t epoch)
{
    return gk__mix64(seed ^ gk__mix64(epoch ^ 0x6c6f61646572ULL));
}

int(gk_sampler_init)(gk_sampler *out, uint64_t count, uint64_t batch_size, uint64_t seed,
                     uint32_t rank, uint32_t world, int shuffle, int shard_drop_last, int drop_last,
                     char *err, size_t err_len, size_t size)
{
    int rc = gk__sized_check(out, size, "gk_sampler");
    if (rc)
        return gk__error_buf(rc, err, err_len, "%s", gk_last_error());
    gk_sampler sampler, *s = &sampler;
    memset(s, 0, sizeof *s);
    if (count == 0 || count > MAX_COUNT) {
        return gk__error_buf(-EINVAL, err, err_len,
                             "sampler: item count %llu is out of range (1 to 2^62)",
                             (unsigned long long)count);
    }
    if (batch_size == 0) {
        return gk__error_buf(-EINVAL, err, err_len, "sampler: batch size must be at least 1");
    }
    if (world == 0 || rank >= world) {
        return gk__error_buf(-EINVAL, err, err_len, "sampler: rank %u is not below world size %u",
                             rank, world);
    }
    s->count = count;
    s->batch_size = batch_size;
    s->seed = seed;
    s->rank = rank;
    s->world = world;
    s->shuffle = !!shuffle;
    s->shard_drop_last = !!shard_drop_last;
    s->drop_last = !!drop_last;
    /* DistributedSampler: num_samples = ceil(N / W), or floor(N / W) when dropping the tail. */
    s->per_rank = shard_drop_last ? count / world : (count + world - 1) / world;
    s->batches = drop_last ? s->per_rank / batch_size : (s->per_rank + batch_size - 1) / batch_size;
    if (s->batches == 0) {
        return gk__error_buf(
            -EINVAL, err, err_len,
            "sampler: no batch per epoch (%llu items over %u ranks give %llu per rank, batch "
            "size %llu%s)",
            (unsigned long long)count, world, (unsigned long long)s->per_rank,
            (unsigned long long)batch_size, drop_last ? " with drop_last" : "");
    }
    uint32_t bits = 2;
    while (bits < 64 && (1ULL << bits) < count)
        bits++;
    bits += bits & 1;
    s->half_bits = bits / 2;
    return gk__sized_put(out, size, s, sizeof *s, "gk_sampler");
}

static uint64_t feistel(uint64_t x, uint32_t half, uint64_t key)
{
    uint64_t mask = (1ULL << half) - 1;
    uint64_t l = x >> half, r = x & mask;
    for (int i = 0; i < FEISTEL_ROUNDS; i++) {
        uint64_t f = gk__mix64(r ^ (key + (uint64_t)i * 0xd1b54a32d192ed03ULL)) & mask;
        uint64_t nl = r;
        r = l ^ f;
        l = nl;
    }
    return l << half | r;
}

uint64_t gk__sampler_key(const gk_sampler *s, uint64_t epoch)
{
    return epoch_key(s->seed, epoch);
}

uint64_t gk_sampler_permute(const gk_sampler *s, uint64_t epoch, uint64_t pos)
{
    return gk__sampler_permute_keyed(s, s->shuffle ? epoch_key(s->seed, epoch) : 0, pos);
}

uint64_t gk__sampler_permute_keyed(const gk_sampler *s, uint64_t key, uint64_t pos)
{
    if (!s->shuffle)
        return pos;
    uint64_t x = pos;
    /* Cycle-walking: the Feistel network permutes [0, 2^bits); iterating it from a point inside
     * [0, N) returns to [0, N) on the point's own cycle, which makes the restriction a bijection.
     */
    do
        x = feistel(x, s->half_bits, key);
    while (x >= s->count);
    return x;
}

uint64_t gk_sampler_rank_item(const gk_sampler *s, uint64_t epoch, uint64_t j)
{
    /* Position in the padded (or truncated) list: rank + j * world; padding wraps around. */
    uint64_t g = s->rank + j * s->world;
    return gk_sampler_permute(s, epoch, g % s->count);
}

size_t gk_sampler_batch(const gk_sampler *s, uint64_t epoch, uint64_t batch, uint64_t *out)
{
    if (batch >= s->batches)
        return 0;
    uint64_t first = batch * s->batch_size;
    uint64_t n = s->per_rank - first < s->batch_size ? s->per_rank - first : s->batch_size;
    for (uint64_t i = 0; i < n; i++)
        out[i] = gk_sampler_rank_item(s, epoch, first + i);
    return (size_t)n;
}

uint64_t gk_item_seed(uint64_t seed, uint64_t epoch, uint64_t index)
{
    return gk__mix64(epoch_key(seed, epoch) ^ gk__mix64(index ^ 0x6974656dULL));
}
