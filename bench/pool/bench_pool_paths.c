/* The pool's fast path, statistics and garbage collection, and max_split_size on the default
 * preset, in one run (public API only, so bench/pool/compare.sh can build the same program against
 * an earlier library and print both):
 *   A. replay of the real CNN trace and the synthetic transformer on sim, both presets: ns per
 *      allocation+free pair (median of rounds after a warm-up round; the cache serves them all);
 *   B. gk_pool_get_stats: ns per call (median) on expandable pools of 1, 8 and 80 GiB devices
 *      (address ranges of 1.125x that), with a thousand live blocks and free pages between them;
 *   C. garbage collection: a loop of recurring and new sizes above gc_threshold (the pytorch
 *      preset with max_split_size and a limit): collections, cache hits, device allocations and
 *      frees, ns per step;
 *   D. max_split_size on the default preset: failed allocations and peak reserved on the CNN
 *      trace at 1.1-4 x L_peak, beside the pytorch preset with the same setting.
 * Usage: bench_pool_paths [CNN_TRACE.csv] [SECTIONS]   (default tests/data/cnn_train_trace.csv,
 * sections ABCD). Times are the thread's CPU time (the machine may be shared), medians. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "gpukit/gpukit.h"
#include "pool_seq.h"

#define MIB    ((size_t)1 << 20)
#define GIB    ((size_t)1 << 30)
#define ROUNDS 15

/* --- A. replay ----------------------------------------------------------------------------------- */

static gk_pool *open_pool(const char *spec, const char *preset, const char *set, gk_device **dev)
{
    gk_pool_config c;
    gk_pool_config_preset(&c, preset);
    c.logger.level = GK_LOG_OFF;
    char err[256];
    if (set && gk_pool_config_parse(&c, set, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    gk_pool *p = NULL;
    if (gk_device_open(spec, dev) != 0)
        return NULL;
    if (gk_pool_create(*dev, &c, &p) != 0) {
        gk_device_close(*dev);
        return NULL;
    }
    return p;
}

/* ns per allocation+free pair over the whole sequence, median of rounds after one warm-up. */
static double replay(const seq *s, const char *spec, const char *preset)
{
    gk_device *dev;
    gk_pool *pool = open_pool(spec, preset, NULL, &dev);
    if (!pool)
        return -1;
    void **p = calloc(s->slots + 1, sizeof *p);
    double r[ROUNDS];
    for (int k = 0; k <= ROUNDS; k++) {
        uint64_t t0 = gk_bench_cpu_ns();
        for (size_t i = 0; i < s->n; i++) {
            const op *o = &s->ops[i];
            if (o->size) {
                if (gk_pool_malloc(pool, o->size, NULL, &p[o->slot]))
                    p[o->slot] = NULL;
            } else {
                gk_pool_free(pool, p[o->slot]);
            }
        }
        if (k)
            r[k - 1] = (double)(gk_bench_cpu_ns() - t0) / (double)s->allocs;
    }
    free(p);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return gk_bench_median(r, ROUNDS);
}

static void section_a(const gk_trace *cnn, const gk_trace *tf)
{
    seq s[2];
    if (seq_from_trace(cnn, "CNN training (real trace)", &s[0]) ||
        seq_from_trace(tf, "transformer (synthetic)", &s[1]))
        return;
    printf("A. replay on sim:capacity=64GiB: ns per allocation+free pair, median of %d rounds\n\n",
           ROUNDS);
    printf("| trace | events | default | pytorch |\n|---|---:|---:|---:|\n");
    for (int i = 0; i < 2; i++) {
        double d = replay(&s[i], "sim:capacity=64GiB", "default");
        double p = replay(&s[i], "sim:capacity=64GiB", "pytorch");
        printf("| %s | %zu | %.1f | %.1f |\n", s[i].name, s[i].n, d, p);
        free(s[i].ops);
    }
}

/* --- B. statistics ------------------------------------------------------------------------------- */

static void section_b(void)
{
    printf("\nB. gk_pool_get_stats on the default preset: ns per call, median of 201 rounds of "
           "100 calls\n\n");
    printf("| device | address range | mapped | live blocks | ns per call |\n"
           "|---|---:|---:|---:|---:|\n");
    static const size_t caps[] = {1, 8, 80};
    for (int i = 0; i < 3; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "sim:capacity=%zuGiB", caps[i]);
        gk_device *dev;
        gk_pool *pool = open_pool(spec, "default", NULL, &dev);
        if (!pool)
            continue;
        /* A thousand live 2 MiB blocks with a freed 6 MiB block between each two (cached, mapped
         * free pages), over a tenth of the device, then the rest of the range unmapped. */
        size_t n = 1000, span = caps[i] * GIB / 10 / n;
        if (span < 8 * MIB)
            span = 8 * MIB;
        void **live = calloc(n, sizeof *live), *gap;
        for (size_t k = 0; k < n; k++) {
            if (gk_pool_malloc(pool, 2 * MIB, NULL, &live[k]) != 0)
                break;
            if (gk_pool_malloc(pool, span - 2 * MIB, NULL, &gap) == 0)
                gk_pool_free(pool, gap);
        }
        gk_pool_stats st;
        gk_pool_get_stats(pool, &st);
        double r[201];
        for (int k = 0; k < 201; k++) {
            uint64_t t0 = gk_bench_cpu_ns();
            for (int j = 0; j < 100; j++)
                gk_pool_get_stats(pool, &st);
            r[k] = (double)(gk_bench_cpu_ns() - t0) / 100;
        }
        char a[32], m[32];
        printf("| %s | %s | %s | %lld | %.0f |\n", spec,
               gk_format_size(caps[i] * GIB / 8 * 9, a, sizeof a),
               gk_format_size((uint64_t)st.reserved_bytes[GK_POOL_ALL].current, m, sizeof m),
               (long long)st.allocation[GK_POOL_ALL].current, gk_bench_median(r, 201));
        for (size_t k = 0; k < n; k++)
            gk_pool_free(pool, live[k]);
        free(live);
        gk_pool_destroy(pool);
        gk_device_close(dev);
    }
}

/* --- C. garbage collection ------------------------------------------------------------------------ */

static void section_c(void)
{
    printf("\nC. garbage collection: pytorch preset, max_split_size 40 MiB, limit 4 GiB, "
           "gc_threshold 0.5, on sim:capacity=8GiB; 8 blocks live, each step frees the oldest and "
           "allocates one of 24 recurring sizes (40-224 MiB) or, one step in ten, a new size "
           "(20,000 steps, 3 rounds)\n\n");
    printf("| figure | value |\n|---|---:|\n");
    double r[3];
    gk_pool_stats st = {0};
    for (int round = 0; round < 3; round++) {
        gk_device *dev;
        gk_pool *pool = open_pool("sim:capacity=8GiB", "pytorch",
                                  "max_split_size=40MiB,limit=4GiB,gc_threshold=0.5", &dev);
        if (!pool)
            return;
        void *live[8] = {0};
        unsigned rng = 12345;
        uint64_t t0 = gk_bench_cpu_ns();
        for (int i = 0; i < 20000; i++) {
            rng = rng * 1103515245u + 12345u;
            size_t size = (40 + 8 * ((rng >> 8) % 24)) * MIB;
            if ((rng >> 4) % 10 == 0)
                size = (40 + (rng >> 12) % 300) * MIB + MIB / 2;
            gk_pool_free(pool, live[i % 8]);
            if (gk_pool_malloc(pool, size, NULL, &live[i % 8]) != 0)
                live[i % 8] = NULL;
        }
        r[round] = (double)(gk_bench_cpu_ns() - t0) / 20000;
        gk_pool_get_stats(pool, &st);
        for (int k = 0; k < 8; k++)
            gk_pool_free(pool, live[k]);
        gk_pool_destroy(pool);
        gk_device_close(dev);
    }
    printf("| collections (allocations that ran one) | %llu |\n",
           (unsigned long long)st.num_gc_runs);
    printf("| cache hits | %llu |\n", (unsigned long long)st.num_cache_hits);
    printf("| device allocations | %llu |\n", (unsigned long long)st.num_device_alloc);
    printf("| device frees | %llu |\n", (unsigned long long)st.num_device_free);
    printf("| failed allocations | %llu |\n", (unsigned long long)st.num_ooms);
    printf("| peak reserved | %.0f MiB |\n", (double)st.reserved_bytes[GK_POOL_ALL].peak / MIB);
    printf("| ns per step, no device latency (median of 3 rounds) | %.0f |\n",
           gk_bench_median(r, 3));
}

/* --- D. max_split_size ----------------------------------------------------------------------------- */

static void replay_stats(const gk_trace *t, const char *spec, const char *preset, const char *set,
                         size_t *failed, int64_t *peak)
{
    gk_device *dev;
    gk_pool *pool = open_pool(spec, preset, set, &dev);
    *failed = (size_t)-1;
    *peak = -1;
    if (!pool)
        return;
    gk_replay_result r;
    gk_pool_stats st;
    if (gk_trace_replay(t, pool, 0, 0, &r) == 0 && gk_pool_get_stats(pool, &st) == 0) {
        *failed = r.failed_allocs;
        *peak = st.reserved_bytes[GK_POOL_ALL].peak;
    }
    gk_pool_destroy(pool);
    gk_device_close(dev);
}

static void section_d(const gk_trace *cnn)
{
    printf("\nD. max_split_size on the CNN trace (sim; L_peak %.1f MiB): failed allocations and "
           "peak reserved (MiB), default preset / pytorch preset\n\n",
           (double)gk_trace_live_peak(cnn) / MIB);
    static const char *const sets[] = {"max_split_size=32MiB", "max_split_size=128MiB",
                                       "max_split_size=1GiB"};
    static const double f[] = {1.1, 1.25, 1.5, 2, 4};
    printf("| setting |");
    for (int j = 0; j < 5; j++)
        printf(" %.2f x L_peak |", f[j]);
    printf("\n|---|---:|---:|---:|---:|---:|\n");
    uint64_t lp = gk_trace_live_peak(cnn);
    for (int i = 0; i < 3; i++) {
        printf("| %s |", sets[i]);
        for (int j = 0; j < 5; j++) {
            char spec[64];
            snprintf(spec, sizeof spec, "sim:capacity=%llu",
                     (unsigned long long)((uint64_t)((double)lp * f[j]) & ~(uint64_t)(MIB - 1)));
            size_t fd, fp;
            int64_t pd, pp;
            replay_stats(cnn, spec, "default", sets[i], &fd, &pd);
            replay_stats(cnn, spec, "pytorch", sets[i], &fp, &pp);
            printf(" %zu, %.0f / %zu, %.0f |", fd, (double)pd / MIB, fp, (double)pp / MIB);
        }
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "tests/data/cnn_train_trace.csv";
    const char *sections = argc > 2 ? argv[2] : "ABCD";
    gk_trace *cnn = NULL, *tf = NULL;
    if (load_traces(path, "bench_pool_paths", &cnn, &tf) != 0)
        return 1;
    if (strchr(sections, 'A'))
        section_a(cnn, tf);
    if (strchr(sections, 'B'))
        section_b();
    if (strchr(sections, 'C'))
        section_c();
    if (strchr(sections, 'D'))
        section_d(cnn);
    gk_trace_free(cnn);
    gk_trace_free(tf);
    return 0;
}
