/* Resume across a change of world size. For (W -> W') pairs, dataset sizes, batch sizes and cut
 * points: W ranks step together for some batches and save their states; W' ranks restore them.
 * Checked over the union of what all ranks receive: the old world consumed positions [0, G) of
 * the epoch's permutation, the new world delivers exactly positions [G, N) (with shard_drop_last,
 * the largest multiple of W' of them), no sample twice and none skipped; each rank's share
 * differs from another's by at most one item; the next epoch equals the new world's
 * DistributedSampler order (gk_sampler_batch); the same world resumes batch for batch, also in
 * the middle of a resumed epoch; a resumed epoch can be cut again and resumed under a third world
 * size; version 1 states (no global position) still restore. */
/* gk-labels: unit threads */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#define EPOCH 3
#define MAXN  200

typedef struct world_cfg {
    uint64_t n, b;
    uint32_t world;
    int sdl, drop_last, workers;
} world_cfg;

static gk_dataset *make_dataset(uint64_t n, uint64_t **data)
{
    *data = malloc(n * sizeof **data);
    assert_non_null(*data);
    for (uint64_t i = 0; i < n; i++)
        (*data)[i] = i * 1000003u + 17;
    gk_dataset *ds = NULL;
    GK_ASSERT_OK(gk_dataset_memory(*data, sizeof **data, n, &ds));
    return ds;
}

static gk_loader *make_loader(gk_dataset *ds, const world_cfg *c, uint32_t rank)
{
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = c->b;
    cfg.workers = c->workers;
    cfg.depth = 3;
    cfg.shuffle = 1;
    cfg.seed = 77;
    cfg.epoch = EPOCH;
    cfg.shard_drop_last = c->sdl;
    cfg.drop_last = c->drop_last;
    cfg.rank = rank;
    cfg.world = c->world;
    cfg.timeout = 30;
    gk_loader *ld = NULL;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    return ld;
}

/* Takes batches while they belong to `epoch` (at most max); adds their items to counts[] and
 * returns how many items. Checks each item's bytes. The last batch is released. */
static size_t take_epoch(gk_loader *ld, uint64_t epoch, size_t max, unsigned *counts)
{
    size_t items = 0, batches = 0;
    gk_batch b;
    while (batches < max) {
        gk_loader_state st;
        GK_ASSERT_OK(gk_loader_get_state(ld, &st));
        if (st.epoch != epoch)
            break;
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        assert_int_equal(b.epoch, epoch);
        const uint64_t *v = b.host;
        for (size_t i = 0; i < b.count; i++) {
            assert_int_equal(v[i], b.indices[i] * 1000003u + 17);
            counts[b.indices[i]]++;
        }
        items += b.count;
        batches++;
        GK_ASSERT_OK(gk_loader_release(ld, &b, NULL));
    }
    return items;
}

/* The next epoch of a loader equals gk_sampler_batch for its world and rank. */
static void check_next_epoch(gk_loader *ld, const world_cfg *c, uint32_t rank)
{
    gk_sampler s;
    GK_ASSERT_OK(
        gk_sampler_init(&s, c->n, c->b, 77, rank, c->world, 1, c->sdl, c->drop_last, NULL, 0));
    uint64_t want[64];
    gk_batch b;
    for (uint64_t k = 0; k < s.batches; k++) {
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
        assert_int_equal(b.epoch, EPOCH + 1);
        assert_int_equal(b.index, k);
        size_t n = gk_sampler_batch(&s, EPOCH + 1, k, want);
        assert_int_equal(b.count, n);
        assert_memory_equal(b.indices, want, n * sizeof *want);
    }
}

/* Runs W ranks for `cut` batches of EPOCH; fills states[] and the positions consumed. */
static void run_old_world(gk_dataset *ds, const world_cfg *c, uint64_t cut, gk_loader_state *states,
                          unsigned *counts)
{
    for (uint32_t r = 0; r < c->world; r++) {
        gk_loader *ld = make_loader(ds, c, r);
        take_epoch(ld, EPOCH, cut, counts);
        GK_ASSERT_OK(gk_loader_get_state(ld, &states[r]));
        assert_int_equal(states[r].version, GK_LOADER_STATE_VERSION);
        assert_int_equal(states[r].epoch, EPOCH);
        assert_int_equal(states[r].batch, cut);
        gk_loader_destroy(ld);
    }
    for (uint32_t r = 1; r < c->world; r++)
        assert_int_equal(states[r].position, states[0].position);
}

/* The positions [g, end) of EPOCH's permutation, as counts per dataset index. */
static void expect_positions(const world_cfg *c, uint64_t g, uint64_t end, unsigned *want)
{
    gk_sampler s;
    GK_ASSERT_OK(gk_sampler_init(&s, c->n, 1, 77, 0, 1, 1, 0, 0, NULL, 0));
    memset(want, 0, MAXN * sizeof *want);
    for (uint64_t p = g; p < end; p++)
        want[gk_sampler_permute(&s, EPOCH, p)]++;
}

/* One (W -> W') case: the union of the new ranks' deliveries in the resumed epoch is exactly the
 * remaining positions; then each new rank's next epoch follows its sampler. */
static void check_pair(gk_dataset *ds, world_cfg old, world_cfg neu, uint64_t cut)
{
    gk_loader_state states[8];
    unsigned before[MAXN] = {0}, after[MAXN] = {0}, want[MAXN];
    run_old_world(ds, &old, cut, states, before);
    uint64_t g = states[0].position;
    assert_int_equal(g, cut * old.b * old.world);
    /* the old world consumed exactly positions [0, g) */
    expect_positions(&old, 0, g, want);
    assert_memory_equal(before, want, sizeof want);
    uint64_t end = neu.sdl ? g + (old.n - g) / neu.world * neu.world : old.n;
    size_t lo = SIZE_MAX, hi = 0;
    for (uint32_t r = 0; r < neu.world; r++) {
        gk_loader *ld = make_loader(ds, &neu, r);
        GK_ASSERT_OK(gk_loader_restore(ld, &states[r % old.world]));
        size_t got = take_epoch(ld, EPOCH, SIZE_MAX, after);
        lo = got < lo ? got : lo;
        hi = got > hi ? got : hi;
        check_next_epoch(ld, &neu, r);
        gk_loader_destroy(ld);
    }
    expect_positions(&old, g, end, want);
    if (!neu.drop_last) {
        assert_memory_equal(after, want, sizeof want); /* every remaining sample exactly once */
        assert_true(hi - lo <= 1);
    } else {
        for (uint64_t i = 0; i < old.n; i++) /* a subset: no sample twice, none from outside */
            assert_true(after[i] <= want[i]);
    }
}

static void test_world_pairs(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {97, 120};
    static const uint64_t bsz[] = {4, 5};
    int k = 0;
    for (size_t si = 0; si < 2; si++) {
        uint64_t *data;
        gk_dataset *ds = make_dataset(sizes[si], &data);
        for (size_t bi = 0; bi < 2; bi++) {
            for (uint32_t w = 1; w <= 4; w++) {
                for (uint32_t w2 = 1; w2 <= 5; w2++) {
                    if (w2 == w)
                        continue;
                    k++;
                    /* drop_last (both worlds: the flags must match) in one case of five */
                    world_cfg old = {sizes[si],  bsz[bi],    w,
                                     k % 3 == 0, k % 5 == 0, k % 4 == 1 ? 2 : 0};
                    world_cfg neu = old;
                    neu.world = w2;
                    neu.workers = k % 4 == 2 ? 2 : 0;
                    gk_sampler s;
                    GK_ASSERT_OK(gk_sampler_init(&s, old.n, old.b, 77, 0, w, 1, old.sdl,
                                                 old.drop_last, NULL, 0));
                    uint64_t cuts[] = {1, s.batches / 2, s.batches - 1};
                    for (int c = 0; c < 3; c++)
                        if (cuts[c] >= 1 && cuts[c] < s.batches)
                            check_pair(ds, old, neu, cuts[c]);
                }
            }
        }
        gk_dataset_destroy(ds);
        free(data);
    }
}

/* In a resumed epoch: the same world resumes batch for batch; a third world size continues from
 * the new global position, and the three pieces cover the epoch exactly once. */
static void test_resumed_epoch_cut_again(void **state)
{
    (void)state;
    uint64_t *data;
    gk_dataset *ds = make_dataset(113, &data);
    world_cfg w3 = {113, 4, 3, 0, 0, 2}, w2 = w3, w5 = w3;
    w2.world = 2;
    w5.world = 5;
    w5.workers = 1;
    gk_loader_state s3[3], s2[2];
    unsigned counts[MAXN] = {0}, want[MAXN];
    run_old_world(ds, &w3, 2, s3, counts); /* positions [0, 24) */
    /* W = 2 takes 3 batches each of the resumed epoch, then saves */
    for (uint32_t r = 0; r < 2; r++) {
        gk_loader *ld = make_loader(ds, &w2, r);
        GK_ASSERT_OK(gk_loader_restore(ld, &s3[r]));
        take_epoch(ld, EPOCH, 3, counts);
        GK_ASSERT_OK(gk_loader_get_state(ld, &s2[r]));
        assert_int_equal(s2[r].epoch_start, 24);
        assert_int_equal(s2[r].batch, 3);
        assert_int_equal(s2[r].position, 24 + 3 * 4 * 2);
        /* the same world resumes it exactly: the rest equals an uninterrupted run */
        gk_batch b, c;
        gk_loader *again = make_loader(ds, &w2, r);
        GK_ASSERT_OK(gk_loader_restore(again, &s2[r]));
        gk_loader *whole = make_loader(ds, &w2, r);
        GK_ASSERT_OK(gk_loader_restore(whole, &s3[r]));
        for (int i = 0; i < 3; i++)
            GK_ASSERT_OK(gk_loader_next(whole, NULL, -1, &c));
        for (int i = 0; i < 12; i++) {
            GK_ASSERT_OK(gk_loader_next(again, NULL, -1, &b));
            GK_ASSERT_OK(gk_loader_next(whole, NULL, -1, &c));
            assert_int_equal(b.epoch, c.epoch);
            assert_int_equal(b.index, c.index);
            assert_int_equal(b.count, c.count);
            assert_int_equal(b.last_in_epoch, c.last_in_epoch);
            assert_memory_equal(b.indices, c.indices, b.count * sizeof *b.indices);
        }
        gk_loader_destroy(again);
        gk_loader_destroy(whole);
        gk_loader_destroy(ld);
    }
    /* W = 5 finishes the epoch from position 48 */
    for (uint32_t r = 0; r < 5; r++) {
        gk_loader *ld = make_loader(ds, &w5, r);
        GK_ASSERT_OK(gk_loader_restore(ld, &s2[r % 2]));
        take_epoch(ld, EPOCH, SIZE_MAX, counts);
        check_next_epoch(ld, &w5, r);
        gk_loader_destroy(ld);
    }
    expect_positions(&w3, 0, 113, want);
    assert_memory_equal(counts, want, sizeof want);
    gk_dataset_destroy(ds);
    free(data);
}

/* A version 1 state (the struct as gpukit 0.2 wrote it: no global position) restores: the same
 * world exactly, another world from batch * B * W. */
static void test_version1_state(void **state)
{
    (void)state;
    uint64_t *data;
    gk_dataset *ds = make_dataset(100, &data);
    world_cfg w2 = {100, 4, 2, 0, 0, 0}, w4 = w2;
    w4.world = 4;
    gk_loader_state st[2];
    unsigned counts[MAXN] = {0}, want[MAXN];
    run_old_world(ds, &w2, 5, st, counts);
    gk_loader_state v1[2];
    for (int r = 0; r < 2; r++) {
        v1[r] = st[r];
        v1[r].version = 1;
        v1[r].size = offsetof(gk_loader_state, position);
        v1[r].position = 999; /* beyond the old struct: ignored */
        v1[r].epoch_start = 999;
    }
    gk_loader *same = make_loader(ds, &w2, 1);
    GK_ASSERT_OK(gk_loader_restore(same, &v1[1]));
    gk_batch b;
    GK_ASSERT_OK(gk_loader_next(same, NULL, -1, &b));
    assert_int_equal(b.epoch, EPOCH);
    assert_int_equal(b.index, 5);
    gk_loader_destroy(same);
    for (uint32_t r = 0; r < 4; r++) {
        gk_loader *ld = make_loader(ds, &w4, r);
        GK_ASSERT_OK(gk_loader_restore(ld, &v1[r % 2]));
        take_epoch(ld, EPOCH, SIZE_MAX, counts);
        gk_loader_destroy(ld);
    }
    expect_positions(&w2, 0, 100, want);
    assert_memory_equal(counts, want, sizeof want);
    gk_dataset_destroy(ds);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_world_pairs),
        cmocka_unit_test(test_resumed_epoch_cut_again),
        cmocka_unit_test(test_version1_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
