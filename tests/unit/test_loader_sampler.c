/* The loader's sampler: the keyed permutation is a bijection, rank shards match PyTorch's
 * DistributedSampler (committed fixtures), batching, per-item seeds and rank/world from the
 * environment. */
/* gk-labels: unit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

static void test_permutation_is_bijection(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {1,  2,   3,   4,   5,   7,    8,    9,    15,   16,
                                     17, 100, 255, 256, 257, 1000, 4095, 4097, 65537};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint64_t n = sizes[k];
        unsigned char *seen = malloc(n);
        assert_non_null(seen);
        for (uint64_t seed = 0; seed < 3; seed++) {
            for (uint64_t epoch = 0; epoch < 3; epoch++) {
                gk_sampler s;
                GK_ASSERT_OK(gk_sampler_init(&s, n, 1, seed * 7919, 0, 1, 1, 0, 0, NULL, 0));
                memset(seen, 0, n);
                uint64_t fixed = 0;
                for (uint64_t p = 0; p < n; p++) {
                    uint64_t x = gk_sampler_permute(&s, epoch, p);
                    assert_true(x < n);
                    assert_int_equal(seen[x], 0);
                    seen[x] = 1;
                    fixed += x == p;
                }
                /* A shuffle, not the identity (for sizes where that is overwhelmingly likely). */
                if (n >= 100)
                    assert_true(fixed < n / 10);
            }
        }
        free(seen);
    }
}

static void test_permutation_depends_on_seed_and_epoch(void **state)
{
    (void)state;
    gk_sampler a, b;
    GK_ASSERT_OK(gk_sampler_init(&a, 1000, 10, 1, 0, 1, 1, 0, 0, NULL, 0));
    GK_ASSERT_OK(gk_sampler_init(&b, 1000, 10, 2, 0, 1, 1, 0, 0, NULL, 0));
    int same_seed = 0, same_epoch = 0, repeat = 1;
    for (uint64_t p = 0; p < 1000; p++) {
        same_seed += gk_sampler_permute(&a, 0, p) == gk_sampler_permute(&b, 0, p);
        same_epoch += gk_sampler_permute(&a, 0, p) == gk_sampler_permute(&a, 1, p);
        repeat &= gk_sampler_permute(&a, 5, p) == gk_sampler_permute(&a, 5, p);
    }
    assert_true(same_seed < 50);
    assert_true(same_epoch < 50);
    assert_true(repeat);
    /* shuffle off is the identity */
    GK_ASSERT_OK(gk_sampler_init(&a, 1000, 10, 1, 0, 1, 0, 0, 0, NULL, 0));
    for (uint64_t p = 0; p < 1000; p++)
        assert_int_equal(gk_sampler_permute(&a, 3, p), p);
}

/* Shards of all ranks are disjoint (up to the padding) and their union is the padded set. */
static void test_shards_partition_padded_set(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {1, 5, 10, 17, 64, 101};
    static const uint32_t worlds[] = {1, 2, 3, 4, 8};
    for (size_t i = 0; i < 6; i++) {
        for (size_t j = 0; j < 5; j++) {
            for (int drop = 0; drop < 2; drop++) {
                uint64_t n = sizes[i];
                uint32_t w = worlds[j];
                unsigned *hits = calloc(n, sizeof *hits);
                uint64_t total = 0, per = 0;
                for (uint32_t r = 0; r < w; r++) {
                    gk_sampler s;
                    int rc = gk_sampler_init(&s, n, 1, 42, r, w, 1, drop, 0, NULL, 0);
                    if (drop && n < w) {
                        GK_ASSERT_ERR(rc, -EINVAL);
                        continue;
                    }
                    GK_ASSERT_OK(rc);
                    per = s.per_rank;
                    for (uint64_t k = 0; k < s.per_rank; k++) {
                        hits[gk_sampler_rank_item(&s, 7, k)]++;
                        total++;
                    }
                }
                if (drop && n < w) {
                    free(hits);
                    continue;
                }
                uint64_t padded = drop ? n / w * w : (n + w - 1) / w * w;
                assert_int_equal(total, padded);
                assert_int_equal(per * w, padded);
                uint64_t extra = 0, missing = 0;
                for (uint64_t x = 0; x < n; x++) {
                    if (hits[x] == 0)
                        missing++;
                    else
                        extra += hits[x] - 1;
                }
                if (drop) {
                    assert_int_equal(extra, 0);
                    assert_int_equal(missing, n - padded);
                } else {
                    assert_int_equal(missing, 0);
                    assert_int_equal(extra, padded - n);
                }
                free(hits);
            }
        }
    }
}

/* Index lists equal PyTorch's DistributedSampler (shuffle off), from the committed fixture. */
static void test_matches_distributed_sampler_fixture(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/loader/distributed_sampler.txt", GK_TEST_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long n;
        unsigned w, r;
        int drop, used;
        assert_int_equal(sscanf(line, "%llu %u %u %d:%n", &n, &w, &r, &drop, &used), 4);
        uint64_t want[1024];
        size_t nw = 0;
        char *p = line + used, *end;
        for (;;) {
            unsigned long long v = strtoull(p, &end, 10);
            if (end == p)
                break;
            want[nw++] = v;
            p = end;
        }
        gk_sampler s;
        int rc = gk_sampler_init(&s, n, 1, 0, r, w, 0, drop, 0, NULL, 0);
        if (nw == 0) {
            GK_ASSERT_ERR(rc, -EINVAL);
            continue;
        }
        GK_ASSERT_OK(rc);
        assert_int_equal(s.per_rank, nw);
        for (size_t k = 0; k < nw; k++)
            assert_int_equal(gk_sampler_rank_item(&s, 0, k), want[k]);
        cases++;
    }
    fclose(f);
    assert_true(cases > 300);
}

static void test_batching(void **state)
{
    (void)state;
    gk_sampler s;
    uint64_t out[4];
    GK_ASSERT_OK(gk_sampler_init(&s, 10, 4, 0, 0, 1, 0, 0, 0, NULL, 0));
    assert_int_equal(s.batches, 3);
    assert_int_equal(gk_sampler_batch(&s, 0, 2, out), 2);
    assert_int_equal(out[0], 8);
    assert_int_equal(out[1], 9);
    assert_int_equal(gk_sampler_batch(&s, 0, 3, out), 0);
    GK_ASSERT_OK(gk_sampler_init(&s, 10, 4, 0, 0, 1, 0, 0, 1, NULL, 0));
    assert_int_equal(s.batches, 2);
    /* rank 1 of 3, padded: positions 1, 4, 7, 10 -> indices 1 4 7 0 */
    GK_ASSERT_OK(gk_sampler_init(&s, 10, 4, 0, 1, 3, 0, 0, 0, NULL, 0));
    assert_int_equal(gk_sampler_batch(&s, 0, 0, out), 4);
    assert_int_equal(out[3], 0);
    char err[256];
    GK_ASSERT_ERR(gk_sampler_init(&s, 10, 20, 0, 0, 1, 0, 0, 1, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "no batch per epoch");
    GK_ASSERT_ERR(gk_sampler_init(&s, 10, 2, 0, 3, 3, 0, 0, 0, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "rank 3");
    GK_ASSERT_ERR(gk_sampler_init(&s, 0, 2, 0, 0, 1, 0, 0, 0, err, sizeof err), -EINVAL);
    GK_ASSERT_ERR(gk_sampler_init(&s, 10, 0, 0, 0, 1, 0, 0, 0, err, sizeof err), -EINVAL);
}

static void test_item_seed(void **state)
{
    (void)state;
    assert_int_equal(gk_item_seed(1, 2, 3), gk_item_seed(1, 2, 3));
    assert_true(gk_item_seed(1, 2, 3) != gk_item_seed(1, 2, 4));
    assert_true(gk_item_seed(1, 2, 3) != gk_item_seed(1, 3, 3));
    assert_true(gk_item_seed(1, 2, 3) != gk_item_seed(2, 2, 3));
}

static void clear_env(void)
{
    static const char *const vars[] = {
        "RANK",         "WORLD_SIZE",           "SLURM_PROCID",
        "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < 6; i++)
        gk_test_setenv(vars[i], NULL);
}

static void test_rank_from_env(void **state)
{
    (void)state;
    uint32_t r, w;
    char err[256];
    clear_env();
    GK_ASSERT_OK(gk_loader_rank_from_env(&r, &w, err, sizeof err));
    assert_int_equal(r, 0);
    assert_int_equal(w, 1);
    gk_test_setenv("OMPI_COMM_WORLD_RANK", "3");
    gk_test_setenv("OMPI_COMM_WORLD_SIZE", "4");
    GK_ASSERT_OK(gk_loader_rank_from_env(&r, &w, err, sizeof err));
    assert_int_equal(r, 3);
    assert_int_equal(w, 4);
    gk_test_setenv("SLURM_PROCID", "1");
    gk_test_setenv("SLURM_NTASKS", "2");
    GK_ASSERT_OK(gk_loader_rank_from_env(&r, &w, err, sizeof err));
    assert_int_equal(r, 1);
    assert_int_equal(w, 2);
    gk_test_setenv("RANK", "5");
    gk_test_setenv("WORLD_SIZE", "8");
    GK_ASSERT_OK(gk_loader_rank_from_env(&r, &w, err, sizeof err));
    assert_int_equal(r, 5);
    assert_int_equal(w, 8);
    gk_test_setenv("RANK", "8");
    GK_ASSERT_ERR(gk_loader_rank_from_env(&r, &w, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "RANK=8 is not below WORLD_SIZE=8");
    gk_test_setenv("RANK", "x1");
    GK_ASSERT_ERR(gk_loader_rank_from_env(&r, &w, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "RANK=\"x1\"");
    gk_test_setenv("WORLD_SIZE", NULL);
    GK_ASSERT_ERR(gk_loader_rank_from_env(&r, &w, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "without WORLD_SIZE");
    assert_int_equal(r, 0);
    assert_int_equal(w, 1);
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permutation_is_bijection),
        cmocka_unit_test(test_permutation_depends_on_seed_and_epoch),
        cmocka_unit_test(test_shards_partition_padded_set),
        cmocka_unit_test(test_matches_distributed_sampler_fixture),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_item_seed),
        cmocka_unit_test(test_rank_from_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
