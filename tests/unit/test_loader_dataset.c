/* Loader datasets: the in-memory dataset, fixed-record files (writer, inspect, mmap and pread
 * reads, every corrupt or truncated file gives an error naming it), llm.c token shards (header
 * checks, glob, and batches equal to what llm.c's loader reads for the same B, T, rank, world). */
/* gk-labels: unit */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gk_test.h"

static char dir[1024];

static const char *path_in(const char *name)
{
    static char p[2][1200];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s", gk_test_tmpdir("loader_dataset"));
    return 0;
}

/* Writes `count` records of `rs` bytes where record i is filled with (i * 31 + j) & 0xff. */
static void write_records(const char *path, uint64_t rs, uint64_t count)
{
    gk_records_writer *w;
    GK_ASSERT_OK(gk_records_writer_open(path, rs, NULL, 0, NULL, &w));
    unsigned char *buf = malloc(rs);
    for (uint64_t i = 0; i < count; i++) {
        for (uint64_t j = 0; j < rs; j++)
            buf[j] = (unsigned char)(i * 31 + j);
        GK_ASSERT_OK(gk_records_writer_write(w, buf, 1));
    }
    free(buf);
    GK_ASSERT_OK(gk_records_writer_close(w));
}

static void check_record(const unsigned char *p, uint64_t rs, uint64_t i)
{
    for (uint64_t j = 0; j < rs; j++)
        if (p[j] != (unsigned char)(i * 31 + j))
            fail_msg("record %llu byte %llu is %u", (unsigned long long)i, (unsigned long long)j,
                     p[j]);
}

static void test_memory_dataset(void **state)
{
    (void)state;
    uint32_t data[10];
    for (int i = 0; i < 10; i++)
        data[i] = (uint32_t)i * 3;
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_memory(data, 4, 10, &ds));
    assert_int_equal(gk_dataset_count(ds), 10);
    assert_int_equal(gk_dataset_item_size(ds), 4);
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.workers = 0;
    cfg.batch_size = 4;
    cfg.epochs = 1;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    uint32_t want = 0;
    while (gk_loader_next(ld, NULL, 1, &b) == 0) {
        const uint32_t *v = b.host;
        for (size_t i = 0; i < b.count; i++, want++)
            assert_int_equal(v[i], want * 3);
    }
    assert_int_equal(want, 10);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    GK_ASSERT_ERR(gk_dataset_memory(NULL, 4, 10, &ds), -EINVAL);
    GK_ASSERT_ERR(gk_dataset_memory(data, 0, 10, &ds), -EINVAL);
    gk_dataset_destroy(NULL);
}

static void read_all_records(const char *path, gk_records_access access, uint64_t rs,
                             uint64_t count)
{
    gk_records_options opt = {
        .size = sizeof(gk_records_options), .access = access, .random = 1, .readahead = 1};
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_records(path, &opt, &ds));
    assert_int_equal(gk_dataset_count(ds), count);
    assert_int_equal(gk_dataset_item_size(ds), rs);
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.workers = 1;
    cfg.batch_size = 3;
    cfg.shuffle = 1;
    cfg.seed = 9;
    cfg.epochs = 1;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    uint64_t seen = 0;
    while (gk_loader_next(ld, NULL, 5, &b) == 0) {
        for (size_t i = 0; i < b.count; i++)
            check_record((const unsigned char *)b.host + i * rs, rs, b.indices[i]);
        seen += b.count;
    }
    assert_int_equal(seen, count);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
}

static void test_records_roundtrip(void **state)
{
    (void)state;
    const char *p = path_in("a.gkr");
    write_records(p, 100, 37);
    gk_records_info info;
    char err[512];
    GK_ASSERT_OK(gk_records_inspect(p, &info, err, sizeof err));
    assert_int_equal(info.version, 1);
    assert_int_equal(info.record_size, 100);
    assert_int_equal(info.record_count, 37);
    assert_int_equal(info.data_offset, 4096);
    assert_int_equal(info.file_size, 4096 + 3700);
    assert_string_equal(info.dtype, "|u1");
    assert_int_equal(info.ndim, 1);
    assert_int_equal(info.shape[0], 100);
    read_all_records(p, GK_RECORDS_MMAP, 100, 37);
    read_all_records(p, GK_RECORDS_PREAD, 100, 37);
    /* dtype and shape are kept */
    gk_records_writer *w;
    uint64_t shape[2] = {2, 3};
    float f[6] = {0};
    GK_ASSERT_OK(gk_records_writer_open(path_in("f.gkr"), 24, "<f4", 2, shape, &w));
    GK_ASSERT_OK(gk_records_writer_write(w, f, 1));
    GK_ASSERT_OK(gk_records_writer_close(w));
    GK_ASSERT_OK(gk_records_inspect(path_in("f.gkr"), &info, err, sizeof err));
    assert_string_equal(info.dtype, "<f4");
    assert_int_equal(info.ndim, 2);
    assert_int_equal(info.shape[1], 3);
    GK_ASSERT_ERR(gk_records_writer_open(path_in("g.gkr"), 0, NULL, 0, NULL, &w), -EINVAL);
    GK_ASSERT_ERR(gk_records_writer_open(path_in("no/such/dir.gkr"), 4, NULL, 0, NULL, &w),
                  -ENOENT);
    GK_ASSERT_CONTAINS(gk_last_error(), "no/such/dir.gkr");
}

/* Patches `len` bytes at `off` of a file. */
static void patch(const char *path, long off, const void *bytes, size_t len)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, len, off), (ssize_t)len);
    close(fd);
}

static void expect_bad(const char *path, int want, const char *needle)
{
    gk_records_info info;
    char err[512];
    GK_ASSERT_ERR(gk_records_inspect(path, &info, err, sizeof err), want);
    GK_ASSERT_CONTAINS(err, path);
    GK_ASSERT_CONTAINS(err, needle);
    gk_dataset *ds = NULL;
    GK_ASSERT_ERR(gk_dataset_open_records(path, NULL, &ds), want);
    assert_null(ds);
    GK_ASSERT_CONTAINS(gk_last_error(), path);
    GK_ASSERT_CONTAINS(gk_last_error(), needle);
}

static void test_records_corrupt(void **state)
{
    (void)state;
    const char *p = path_in("c.gkr");
    write_records(p, 16, 10);
    patch(p, 0, "GKRECORX", 8);
    expect_bad(p, GK_ECORRUPT, "bad magic");
    write_records(p, 16, 10);
    uint32_t v = 9;
    patch(p, 8, &v, 4);
    expect_bad(p, GK_EVERSION, "version 9");
    write_records(p, 16, 10);
    uint64_t off = 100;
    patch(p, 32, &off, 8);
    expect_bad(p, GK_ECORRUPT, "data offset 100");
    write_records(p, 16, 10);
    uint64_t zero = 0;
    patch(p, 16, &zero, 8);
    expect_bad(p, GK_ECORRUPT, "record size is 0");
    write_records(p, 16, 10);
    uint64_t many = 11;
    patch(p, 24, &many, 8);
    expect_bad(p, GK_ECORRUPT, "truncated");
    write_records(p, 16, 10);
    assert_int_equal(truncate(p, 4096 + 150), 0);
    expect_bad(p, GK_ECORRUPT, "truncated");
    write_records(p, 16, 10);
    assert_int_equal(truncate(p, 4096 + 170), 0);
    expect_bad(p, GK_ECORRUPT, "trailing bytes");
    assert_int_equal(truncate(p, 20), 0);
    expect_bad(p, GK_ECORRUPT, "bad magic");
    expect_bad(path_in("missing.gkr"), -ENOENT, "cannot open");
}

/* A file truncated while the loader uses it gives an error naming it at the next batch. */
static void test_records_truncated_in_use(void **state)
{
    (void)state;
    for (int access = 0; access < 2; access++) {
        const char *p = path_in("t.gkr");
        write_records(p, 64, 100);
        gk_records_options opt = {.size = sizeof(gk_records_options),
                                  .access = (gk_records_access)access};
        gk_dataset *ds;
        GK_ASSERT_OK(gk_dataset_open_records(p, &opt, &ds));
        gk_loader_config cfg;
        gk_loader_config_default(&cfg);
        cfg.workers = 0;
        cfg.batch_size = 10;
        gk_loader *ld;
        GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
        gk_batch b;
        GK_ASSERT_OK(gk_loader_next(ld, NULL, 1, &b));
        assert_int_equal(truncate(p, 4096 + 64 * 50), 0);
        GK_ASSERT_ERR(gk_loader_next(ld, NULL, 1, &b), GK_ECORRUPT);
        GK_ASSERT_CONTAINS(gk_last_error(), p);
        GK_ASSERT_CONTAINS(gk_last_error(), "truncated");
        GK_ASSERT_CONTAINS(gk_last_error(), "batch 1 of epoch 0");
        /* fail policy: the error sticks */
        GK_ASSERT_ERR(gk_loader_next(ld, NULL, 1, &b), GK_ECORRUPT);
        gk_loader_destroy(ld);
        gk_dataset_destroy(ds);
    }
}

/* Changes found by the check at the first read of each epoch: a grown file, a file rewritten in
 * place (its modification time changed), a file replaced by another one at its path. Within the
 * epoch of the change, reads go on (the data they return is unchanged). */
static void test_records_changed_between_epochs(void **state)
{
    (void)state;
    const char *what[] = {"grown", "modified while in use", "replaced"};
    for (int change = 0; change < 3; change++) {
        for (int access = 0; access < 2; access++) {
            const char *p = path_in("e.gkr");
            write_records(p, 64, 40);
            gk_records_options opt;
            gk_records_options_default(&opt);
            opt.access = (gk_records_access)access;
            gk_dataset *ds;
            GK_ASSERT_OK(gk_dataset_open_records(p, &opt, &ds));
            gk_loader_config cfg;
            gk_loader_config_default(&cfg);
            cfg.workers = access; /* 0 and 1 */
            cfg.batch_size = 10;
            gk_loader *ld;
            GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
            gk_batch b;
            GK_ASSERT_OK(gk_loader_next(ld, NULL, 5, &b));
            if (change == 0) {
                FILE *f = fopen(p, "a");
                assert_non_null(f);
                fputc('x', f);
                fclose(f);
            } else if (change == 1) {
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                struct timespec t[2] = {st.st_atim, st.st_mtim};
                t[1].tv_sec += 10; /* the clock may not have moved since the write */
                assert_int_equal(utimensat(AT_FDCWD, p, t, 0), 0);
            } else {
                const char *q = path_in("e2.gkr");
                write_records(q, 64, 40);
                assert_int_equal(rename(q, p), 0);
            }
            int rc, n = 1;
            while ((rc = gk_loader_next(ld, NULL, 5, &b)) == 0) {
                check_record(b.host, 64, b.indices[0]);
                n++;
            }
            GK_ASSERT_ERR(rc, GK_ECORRUPT);
            GK_ASSERT_CONTAINS(gk_last_error(), p);
            GK_ASSERT_CONTAINS(gk_last_error(), what[change]);
            GK_ASSERT_CONTAINS(gk_last_error(), "batch 0 of epoch 1");
            assert_int_equal(n, 4); /* epoch 0 is read to its end */
            gk_loader_destroy(ld);
            gk_dataset_destroy(ds);
        }
    }
}

/* --- token shards -------------------------------------------------------------------------- */

static uint32_t token_at(int shard, uint64_t i)
{
    return (uint32_t)((i * 7 + (uint64_t)shard * 1000) & 0xffff);
}

static void write_shard(const char *path, int shard, int32_t magic, int32_t version, uint64_t ntok,
                        int32_t header_tokens)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int32_t h[256] = {0};
    h[0] = magic;
    h[1] = version;
    h[2] = header_tokens;
    assert_int_equal(fwrite(h, sizeof h, 1, f), 1);
    int wide = version != 1;
    for (uint64_t i = 0; i < ntok; i++) {
        uint32_t t = token_at(shard, i);
        if (wide) {
            fwrite(&t, 4, 1, f);
        } else {
            uint16_t s = (uint16_t)t;
            fwrite(&s, 2, 1, f);
        }
    }
    fclose(f);
}

/* What llm.c's dataloader gives rank r of world W (shuffle off) for one pass over the shards:
 * per shard (ntok - 1) / (W*B*T) samples; sample s of rank r starts at token s*W*B*T + r*B*T. */
static void llmc_expect(const uint64_t *ntoks, int nshards, uint32_t B, uint32_t T, uint32_t r,
                        uint32_t W, uint32_t *out, size_t *nout)
{
    size_t k = 0;
    uint64_t bt = (uint64_t)B * T;
    for (int sh = 0; sh < nshards; sh++) {
        uint64_t samples = (ntoks[sh] - 1) / (W * bt);
        for (uint64_t s = 0; s < samples; s++) {
            uint64_t start = s * W * bt + r * bt;
            for (uint64_t i = 0; i <= bt; i++)
                out[k++] = token_at(sh, start + i);
        }
    }
    *nout = k;
}

static void check_llmc_compat(int version)
{
    const uint64_t ntoks[3] = {1000, 777, 2049};
    char name[64];
    for (int sh = 0; sh < 3; sh++) {
        snprintf(name, sizeof name, "shard_%d_%03d.bin", version, sh);
        write_shard(path_in(name), sh, GK_TOKENS_MAGIC, version, ntoks[sh], (int32_t)ntoks[sh]);
    }
    char pattern[1200];
    snprintf(pattern, sizeof pattern, "%s/shard_%d_*.bin", dir, version);
    const uint32_t B = 2, T = 16;
    uint32_t *want = malloc(4000 * sizeof *want);
    for (uint32_t W = 1; W <= 3; W++) {
        for (uint32_t r = 0; r < W; r++) {
            size_t nwant;
            llmc_expect(ntoks, 3, B, T, r, W, want, &nwant);
            gk_dataset *ds;
            GK_ASSERT_OK(gk_dataset_open_tokens(pattern, B, T, W, &ds));
            assert_int_equal(gk_dataset_token_bytes(ds), version == 1 ? 2 : 4);
            assert_int_equal(gk_dataset_item_size(ds), (B * T + 1) * (version == 1 ? 2 : 4));
            gk_loader_config cfg;
            gk_loader_config_default(&cfg);
            cfg.workers = 0;
            cfg.batch_size = 1;
            cfg.rank = r;
            cfg.world = W;
            cfg.epochs = 1;
            gk_loader *ld;
            GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
            gk_batch b;
            size_t k = 0;
            int rc;
            while ((rc = gk_loader_next(ld, NULL, 1, &b)) == 0) {
                for (size_t i = 0; i <= B * T; i++, k++) {
                    uint32_t t = version == 1 ? ((const uint16_t *)b.host)[i]
                                              : ((const uint32_t *)b.host)[i];
                    assert_true(k < nwant);
                    assert_int_equal(t, want[k]);
                }
            }
            assert_int_equal(rc, GK_LOADER_END);
            assert_int_equal(k, nwant);
            gk_loader_destroy(ld);
            gk_dataset_destroy(ds);
        }
    }
    free(want);
}

static void test_tokens_match_llmc(void **state)
{
    (void)state;
    check_llmc_compat(1);
    check_llmc_compat(2);
}

static void expect_bad_shard(const char *path, int want, const char *needle)
{
    gk_tokens_info info;
    char err[512];
    GK_ASSERT_ERR(gk_tokens_inspect(path, &info, err, sizeof err), want);
    GK_ASSERT_CONTAINS(err, path);
    GK_ASSERT_CONTAINS(err, needle);
    gk_dataset *ds = NULL;
    GK_ASSERT_ERR(gk_dataset_open_tokens(path, 1, 4, 1, &ds), want);
    assert_null(ds);
    GK_ASSERT_CONTAINS(gk_last_error(), path);
    GK_ASSERT_CONTAINS(gk_last_error(), needle);
}

static void test_tokens_corrupt(void **state)
{
    (void)state;
    const char *p = path_in("bad.bin");
    write_shard(p, 0, 12345, 1, 100, 100);
    expect_bad_shard(p, GK_ECORRUPT, "bad magic 12345");
    write_shard(p, 0, GK_TOKENS_MAGIC, 3, 100, 100);
    expect_bad_shard(p, GK_EVERSION, "version 3");
    write_shard(p, 0, GK_TOKENS_MAGIC, 1, 100, 101);
    expect_bad_shard(p, GK_ECORRUPT, "token count past the end");
    write_shard(p, 0, GK_TOKENS_MAGIC, 1, 100, 99);
    expect_bad_shard(p, GK_ECORRUPT, "trailing bytes");
    write_shard(p, 0, GK_TOKENS_MAGIC, 1, 100, -5);
    expect_bad_shard(p, GK_ECORRUPT, "negative token count");
    assert_int_equal(truncate(p, 100), 0);
    expect_bad_shard(p, GK_ECORRUPT, "shorter than");
    /* a valid shard too short for one window of B*T+1 tokens */
    write_shard(p, 0, GK_TOKENS_MAGIC, 1, 3, 3);
    gk_dataset *small = NULL;
    GK_ASSERT_ERR(gk_dataset_open_tokens(p, 1, 4, 1, &small), -EINVAL);
    assert_null(small);
    GK_ASSERT_CONTAINS(gk_last_error(), p);
    GK_ASSERT_CONTAINS(gk_last_error(), "fewer than");
    /* Llama-3 shards are read as uint32 */
    gk_tokens_info info;
    write_shard(p, 0, GK_TOKENS_MAGIC_LLAMA3, 7, 50, 50);
    GK_ASSERT_OK(gk_tokens_inspect(p, &info, NULL, 0));
    assert_int_equal(info.token_bytes, 4);
    assert_int_equal(info.tokens, 50);
    /* mixed widths in one glob */
    write_shard(path_in("mix_a.bin"), 0, GK_TOKENS_MAGIC, 1, 50, 50);
    write_shard(path_in("mix_b.bin"), 0, GK_TOKENS_MAGIC, 2, 50, 50);
    char pattern[1200];
    snprintf(pattern, sizeof pattern, "%s/mix_*.bin", dir);
    gk_dataset *ds;
    GK_ASSERT_ERR(gk_dataset_open_tokens(pattern, 1, 4, 1, &ds), GK_EMISMATCH);
    GK_ASSERT_CONTAINS(gk_last_error(), "mix_b.bin");
    snprintf(pattern, sizeof pattern, "%s/none_*.bin", dir);
    GK_ASSERT_ERR(gk_dataset_open_tokens(pattern, 1, 4, 1, &ds), -ENOENT);
    GK_ASSERT_CONTAINS(gk_last_error(), "no file matches");
}

/* A token shard larger than 2 GiB is read at its real (64-bit) offsets. Sparse file: only the
 * header and the last window hold data. */
static void test_tokens_64bit_offsets(void **state)
{
    (void)state;
    const char *p = path_in("big.bin");
    const uint64_t ntok = (3ULL << 30) / 2 + 1; /* 3 GiB of uint16 tokens, plus one */
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    int32_t h[256] = {GK_TOKENS_MAGIC, 1, (int32_t)ntok};
    assert_int_equal(pwrite(fd, h, sizeof h, 0), (ssize_t)sizeof h);
    const uint32_t B = 1, T = 1U << 20;
    uint64_t items = (ntok - 1) / T;
    uint64_t last_off = 1024 + (items - 1) * T * 2;
    uint16_t marker[2] = {0xbeef, 0xcafe};
    assert_int_equal(pwrite(fd, marker, sizeof marker, (off_t)last_off), (ssize_t)sizeof marker);
    assert_int_equal(ftruncate(fd, (off_t)(1024 + ntok * 2)), 0);
    close(fd);
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_open_tokens(p, B, T, 1, &ds));
    assert_int_equal(gk_dataset_count(ds), items);
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.workers = 0;
    cfg.batch_size = 1;
    cfg.depth = 2;
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    GK_ASSERT_OK(gk_loader_seek(ld, 0, items - 1));
    gk_batch b;
    GK_ASSERT_OK(gk_loader_next(ld, NULL, 5, &b));
    assert_int_equal(b.indices[0], items - 1);
    assert_int_equal(((const uint16_t *)b.host)[0], 0xbeef);
    assert_int_equal(((const uint16_t *)b.host)[1], 0xcafe);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    unlink(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_dataset),
        cmocka_unit_test(test_records_roundtrip),
        cmocka_unit_test(test_records_corrupt),
        cmocka_unit_test(test_records_truncated_in_use),
        cmocka_unit_test(test_records_changed_between_epochs),
        cmocka_unit_test(test_tokens_match_llmc),
        cmocka_unit_test(test_tokens_corrupt),
        cmocka_unit_test(test_tokens_64bit_offsets),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
