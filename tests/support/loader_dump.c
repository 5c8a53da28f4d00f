/* gk_loader_dump: delivers batches from the C loader and writes them out, so the Python
 * package's tests can check that gpukit.Loader gives the same bytes for the same settings.
 *
 *   gk_loader_dump records|tokens|memory SOURCE OUT [key=value ...]
 *
 * SOURCE is a record file, a token shard pattern, or a raw file of items (memory: item=BYTES).
 * Keys: batch, workers, depth, shuffle, seed, drop_last, shard_drop_last, rank, world, epoch
 * (the first epoch), batches (how many to write; default one epoch), seq (tokens: T), device
 * (a device spec: the bytes are then read back from the device slot). OUT receives the bytes of
 * every batch in order; OUT.idx one line per batch: "epoch index count last i0 i1 ...". Exit
 * status 0, or 1 with the library's message on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gpukit/gpukit.h>

static int fail(const char *what)
{
    fprintf(stderr, "gk_loader_dump: %s: %s\n", what, gk_last_error());
    return 1;
}

static unsigned long long num(const char *text)
{
    return strtoull(text, NULL, 10);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: gk_loader_dump records|tokens|memory SOURCE OUT [key=value ...]\n");
        return 2;
    }
    const char *kind = argv[1], *source = argv[2], *out = argv[3], *spec = NULL;
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    unsigned long long batches = 0, seq = 0, item = 0;
    for (int i = 4; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "gk_loader_dump: %s is not key=value\n", argv[i]);
            return 2;
        }
        *eq = '\0';
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "batch"))
            cfg.batch_size = num(v);
        else if (!strcmp(k, "workers"))
            cfg.workers = (int)num(v);
        else if (!strcmp(k, "depth"))
            cfg.depth = (int)num(v);
        else if (!strcmp(k, "shuffle"))
            cfg.shuffle = (int)num(v);
        else if (!strcmp(k, "seed"))
            cfg.seed = num(v);
        else if (!strcmp(k, "drop_last"))
            cfg.drop_last = (int)num(v);
        else if (!strcmp(k, "shard_drop_last"))
            cfg.shard_drop_last = (int)num(v);
        else if (!strcmp(k, "rank"))
            cfg.rank = (uint32_t)num(v);
        else if (!strcmp(k, "world"))
            cfg.world = (uint32_t)num(v);
        else if (!strcmp(k, "epoch"))
            cfg.epoch = num(v);
        else if (!strcmp(k, "batches"))
            batches = num(v);
        else if (!strcmp(k, "seq"))
            seq = num(v);
        else if (!strcmp(k, "item"))
            item = num(v);
        else if (!strcmp(k, "device"))
            spec = v;
        else {
            fprintf(stderr, "gk_loader_dump: unknown key %s\n", k);
            return 2;
        }
    }
    gk_dataset *ds = NULL;
    void *mem = NULL;
    if (!strcmp(kind, "records")) {
        if (gk_dataset_open_records(source, NULL, &ds))
            return fail(source);
    } else if (!strcmp(kind, "tokens")) {
        /* Items are windows of batch*seq+1 tokens; the loader takes one per batch. */
        if (gk_dataset_open_tokens(source, (uint32_t)cfg.batch_size, (uint32_t)seq, cfg.world, &ds))
            return fail(source);
        cfg.batch_size = 1;
    } else if (!strcmp(kind, "memory")) {
        FILE *f = fopen(source, "rb");
        if (!f || !item) {
            fprintf(stderr, "gk_loader_dump: cannot read %s (or item= missing)\n", source);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        mem = malloc((size_t)n);
        if (!mem || fread(mem, 1, (size_t)n, f) != (size_t)n)
            return 1;
        fclose(f);
        if (gk_dataset_memory(mem, item, (uint64_t)n / item, &ds))
            return fail(source);
    } else {
        fprintf(stderr, "gk_loader_dump: unknown kind %s\n", kind);
        return 2;
    }
    gk_device *dev = NULL;
    if (spec && gk_device_open(spec, &dev))
        return fail(spec);
    cfg.device = dev;
    gk_loader *ld;
    if (gk_loader_create(&cfg, ds, &ld))
        return fail("loader");
    if (!batches)
        batches = gk_loader_batches_per_epoch(ld);
    char idx_path[4096];
    snprintf(idx_path, sizeof idx_path, "%s.idx", out);
    FILE *fo = fopen(out, "wb"), *fi = fopen(idx_path, "w");
    if (!fo || !fi) {
        fprintf(stderr, "gk_loader_dump: cannot write %s\n", out);
        return 1;
    }
    unsigned char *back = NULL;
    int rc = 0;
    for (unsigned long long i = 0; i < batches; i++) {
        gk_batch b;
        if (gk_loader_next(ld, NULL, -1, &b)) {
            rc = fail("next");
            break;
        }
        const void *bytes = b.host;
        if (dev) {
            back = realloc(back, b.bytes);
            if (!back || gk_memcpy_dtoh_async(dev, back, b.device, b.bytes, NULL) ||
                gk_stream_synchronize(dev, NULL, -1)) {
                rc = fail("reading the device slot");
                break;
            }
            bytes = back;
        }
        fwrite(bytes, 1, b.bytes, fo);
        fprintf(fi, "%llu %llu %zu %d", (unsigned long long)b.epoch, (unsigned long long)b.index,
                b.count, b.last_in_epoch);
        for (size_t j = 0; j < b.count; j++)
            fprintf(fi, " %llu", (unsigned long long)b.indices[j]);
        fprintf(fi, "\n");
    }
    free(back);
    if (fclose(fo) || fclose(fi))
        rc = 1;
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    gk_device_close(dev);
    free(mem);
    return rc;
}
