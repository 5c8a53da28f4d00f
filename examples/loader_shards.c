/* examples/loader_shards.c: the loader over llm.c token shards.
 *
 *   loader_shards [PATTERN]   (default: write two small GPT-2 shards into /tmp and read those)
 *
 * Each item is a window of B*T+1 tokens (inputs and targets are two views of it), read by two
 * worker threads into pinned slots in shuffled order. The loop checks what llm.c checks: the
 * targets are the inputs shifted by one token. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gpukit/gpukit.h>

enum { B = 4, T = 64 };

/* Writes a GPT-2 shard (magic 20240520, version 1, uint16 tokens) counting up from `first`. */
static int write_shard(const char *path, uint32_t tokens, uint16_t first)
{
    int32_t header[256] = {GK_TOKENS_MAGIC, 1, (int32_t)tokens};
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(header, sizeof header, 1, f) == 1;
    for (uint32_t i = 0; ok && i < tokens; i++) {
        uint16_t tok = (uint16_t)(first + i);
        ok = fwrite(&tok, sizeof tok, 1, f) == 1;
    }
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    char pattern[256], paths[2][256];
    if (argc > 1) {
        snprintf(pattern, sizeof pattern, "%s", argv[1]);
    } else {
        for (int s = 0; s < 2; s++) {
            snprintf(paths[s], sizeof paths[s], "/tmp/gk-shards-%ld_%06d.bin", (long)getpid(), s);
            if (write_shard(paths[s], 40 * B * T + 1, (uint16_t)(s * 20000)) != 0) {
                fprintf(stderr, "loader_shards: cannot write %s\n", paths[s]);
                return 1;
            }
        }
        snprintf(pattern, sizeof pattern, "/tmp/gk-shards-%ld_*.bin", (long)getpid());
    }

    gk_dataset *ds;
    if (gk_dataset_open_tokens(pattern, B, T, 1, &ds) != 0) {
        fprintf(stderr, "loader_shards: %s\n", gk_last_error());
        return 1;
    }
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    if (gk_loader_config_from_env(&cfg, NULL, 0) != 0) { /* this rank's share under a launcher */
        fprintf(stderr, "loader_shards: %s\n", gk_last_error());
        return 1;
    }
    cfg.batch_size = 1; /* one item = one B x T training batch, as llm.c reads it */
    cfg.workers = 2;
    cfg.shuffle = 1;
    cfg.seed = 42;
    cfg.epochs = 1;
    gk_loader *ld;
    int rc = gk_loader_create(&cfg, ds, &ld);
    if (rc) {
        fprintf(stderr, "loader_shards: %s\n", gk_last_error());
        gk_dataset_destroy(ds);
        return 1;
    }
    uint32_t width = gk_dataset_token_bytes(ds);
    gk_batch b;
    int batches = 0, bad = 0;
    while ((rc = gk_loader_next(ld, NULL, -1, &b)) == 0) {
        /* inputs = tokens [0, B*T), targets = tokens [1, B*T+1) of the same window */
        const unsigned char *win = b.host;
        for (size_t i = 0; i < (size_t)B * T; i++) {
            uint32_t in = 0, tg = 0;
            memcpy(&in, win + i * width, width);
            memcpy(&tg, win + (i + 1) * width, width);
            bad += (uint16_t)(tg - in) != 1 && width == 2;
        }
        if (batches < 3)
            printf("batch %d: item %llu, first token %u\n", batches,
                   (unsigned long long)b.indices[0], (unsigned)((const uint16_t *)win)[0]);
        batches++;
    }
    gk_loader_stats st;
    gk_loader_get_stats(ld, &st);
    printf("%d batches of %d x %d tokens from %llu items, %llu bytes; waited %.3f ms for data\n",
           batches, B, T, (unsigned long long)gk_dataset_count(ds), (unsigned long long)st.bytes,
           (double)st.wait_ns / 1e6);
    printf("targets are the inputs shifted by one: %s\n", bad ? "NO" : "yes");
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    if (argc <= 1)
        for (int s = 0; s < 2; s++)
            unlink(paths[s]);
    return rc == GK_LOADER_END && !bad ? 0 : 1;
}
