/* Allocation traces as slot-numbered operations for the pool benchmarks: each allocation gets a
 * slot, a free names the slot of its allocation, and what the trace never frees is freed at its
 * end, so a round can be replayed again and again against an array of pointers. */
#ifndef GK_BENCH_POOL_SEQ_H
#define GK_BENCH_POOL_SEQ_H

#include <stdio.h>
#include <stdlib.h>

#include "gpukit/gpukit.h"

typedef struct op {
    size_t size; /* 0 for a free */
    unsigned slot;
} op;

typedef struct seq {
    const char *name;
    op *ops;
    size_t n, allocs;
    unsigned slots;
} seq;

/* Turns a trace into slot-numbered operations (a free names the slot its allocation used). */
static int seq_from_trace(const gk_trace *t, const char *name, seq *s)
{
    s->name = name;
    s->ops = malloc(2 * t->count * sizeof *s->ops);
    size_t cap = 1;
    while (cap < t->count * 2)
        cap *= 2;
    uint64_t *keys = calloc(cap, sizeof *keys);
    unsigned *vals = calloc(cap, sizeof *vals), *free_slots = malloc(t->count * sizeof *free_slots);
    if (!s->ops || !keys || !vals || !free_slots)
        return -1;
    size_t nfree = 0;
    s->n = s->allocs = 0;
    s->slots = 0;
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        uint64_t k = e->ptr + 1;
        size_t h = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
        if (e->action == GK_TRACE_ALLOCATE) {
            while (keys[h] && keys[h] != k)
                h = (h + 1) & (cap - 1);
            if (keys[h] == k || e->size == 0)
                continue; /* reused without a free, or empty (a size of 0 means a free): skip */
            unsigned slot = nfree ? free_slots[--nfree] : s->slots++;
            keys[h] = k;
            vals[h] = slot;
            s->ops[s->n++] = (op){(size_t)e->size, slot};
            s->allocs++;
        } else if (e->action == GK_TRACE_FREE) {
            while (keys[h] && keys[h] != k)
                h = (h + 1) & (cap - 1);
            if (keys[h] != k)
                continue;
            unsigned slot = vals[h];
            /* Delete by re-inserting the rest of the cluster. */
            keys[h] = 0;
            for (size_t j = (h + 1) & (cap - 1); keys[j]; j = (j + 1) & (cap - 1)) {
                uint64_t kk = keys[j];
                unsigned vv = vals[j];
                keys[j] = 0;
                size_t hh = (size_t)((kk * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
                while (keys[hh])
                    hh = (hh + 1) & (cap - 1);
                keys[hh] = kk;
                vals[hh] = vv;
            }
            s->ops[s->n++] = (op){0, slot};
            free_slots[nfree++] = slot;
        }
    }
    /* Allocations the trace never frees are freed at its end, so every round starts clean. */
    for (size_t h = 0; h < cap; h++)
        if (keys[h])
            s->ops[s->n++] = (op){0, vals[h]};
    free(keys);
    free(vals);
    free(free_slots);
    return 0;
}

/* The two traces the pool benchmarks replay: the real CNN trace at `path` and the synthetic
 * transformer (8 layers, d=1024, 16 heads, seq 512-1024, batch 8, 8 steps). 0 or -1 (said). */
static inline int load_traces(const char *path, const char *who, gk_trace **cnn, gk_trace **tf)
{
    char err[256];
    if (gk_trace_read(path, cnn, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", who, err);
        return -1;
    }
    gk_synth_config sc;
    gk_synth_config_default(&sc);
    sc.layers = 8;
    sc.hidden = 1024;
    sc.heads = 16;
    sc.seq = 1024;
    sc.steps = 8;
    if (gk_trace_synth_transformer(&sc, tf) != 0) {
        fprintf(stderr, "%s: cannot build the synthetic transformer trace\n", who);
        gk_trace_free(*cnn);
        return -1;
    }
    return 0;
}

#endif
