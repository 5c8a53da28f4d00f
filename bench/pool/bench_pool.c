/* The caching pool against host allocators, in one run:
 *   A. alloc+free pairs of one size with 32 blocks live (samples of 64 pairs: median and p99 of
 *      ns per pair): the pool on host and sim, glibc malloc/free, and mimalloc and jemalloc when
 *      their shared libraries are installed (measured in a child run with LD_PRELOAD, so glibc's
 *      own figure is not disturbed);
 *   B. replay of whole event sequences (the real CNN trace, a synthetic transformer trace and
 *      RMM's random-allocations pattern): ns per allocation+free, and device calls per event
 *      after warm-up;
 *   C. F_cap (C_min / L_peak on sim) per preset and trace;
 *   D. trials-to-answer of every batch-finder mode on simulated linear models.
 * Usage: bench_pool [CNN_TRACE.csv]   (default tests/data/cnn_train_trace.csv) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "gpukit/gpukit.h"
#include "pool_seq.h"

#define ROUNDS     9
#define SAMPLES    2000
#define PER_SAMPLE 64
#define LIVE       32

static void *volatile sink;

/* --- event sequences ------------------------------------------------------------------------ */

/* RMM's random_allocations: 73% allocate (uniform 1 B .. max), else free a random live block;
 * live bytes capped at 16,000 MiB; 2N steps. */
static int seq_random(size_t n, size_t max_size, seq *s)
{
    char *name = malloc(64);
    if (!name)
        return -1;
    snprintf(name, 64, "RMM random allocations, %zu x up to %zu MiB", n, max_size >> 20);
    s->name = name;
    s->ops = malloc((2 * n + n) * sizeof *s->ops);
    unsigned *live = malloc(2 * n * sizeof *live);
    size_t *live_size = malloc(2 * n * sizeof *live_size);
    if (!s->ops || !live || !live_size)
        return -1;
    uint64_t rng = 42, used = 0, cap = (uint64_t)16000 << 20;
    size_t nlive = 0;
    s->n = s->allocs = 0;
    s->slots = 0;
    for (size_t step = 0; step < 2 * n; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int do_alloc = (rng >> 33) % 100 < 73;
        size_t size = 1 + (size_t)((rng >> 11) % max_size);
        if (do_alloc && used + size <= cap) {
            live[nlive] = s->slots;
            live_size[nlive++] = size;
            s->ops[s->n++] = (op){size, s->slots++};
            s->allocs++;
            used += size;
        } else if (nlive) {
            size_t i = (size_t)((rng >> 20) % nlive);
            s->ops[s->n++] = (op){0, live[i]};
            used -= live_size[i];
            live[i] = live[--nlive];
            live_size[i] = live_size[nlive];
        }
    }
    for (size_t i = 0; i < nlive; i++)
        s->ops[s->n++] = (op){0, live[i]};
    free(live);
    free(live_size);
    return 0;
}

/* ns per allocation+free over the whole sequence, median of rounds. */
static double replay_malloc(const seq *s)
{
    void **p = calloc(s->slots + 1, sizeof *p);
    double r[ROUNDS];
    for (int k = 0; k < ROUNDS; k++) {
        uint64_t t0 = gk_bench_now_ns();
        for (size_t i = 0; i < s->n; i++) {
            if (s->ops[i].size)
                p[s->ops[i].slot] = malloc(s->ops[i].size);
            else
                free(p[s->ops[i].slot]);
        }
        r[k] = (double)(gk_bench_now_ns() - t0) / (double)s->allocs;
    }
    free(p);
    return gk_bench_median(r, ROUNDS);
}

static double replay_pool(const seq *s, const char *spec, double *calls_per_event)
{
    gk_device *dev;
    gk_pool *pool;
    gk_pool_config c;
    gk_pool_config_default(&c);
    if (gk_device_open(spec, &dev) || gk_pool_create(dev, &c, &pool))
        return -1;
    void **p = calloc(s->slots + 1, sizeof *p);
    double r[ROUNDS];
    gk_pool_stats st0, st1;
    for (int k = 0; k < ROUNDS + 1; k++) {
        if (k == 1)
            gk_pool_get_stats(pool, &st0); /* round 0 warms the cache up */
        uint64_t t0 = gk_bench_now_ns();
        for (size_t i = 0; i < s->n; i++) {
            if (s->ops[i].size) {
                if (gk_pool_malloc(pool, s->ops[i].size, NULL, &p[s->ops[i].slot]))
                    p[s->ops[i].slot] = NULL;
            } else {
                gk_pool_free(pool, p[s->ops[i].slot]);
            }
        }
        if (k)
            r[k - 1] = (double)(gk_bench_now_ns() - t0) / (double)s->allocs;
    }
    gk_pool_get_stats(pool, &st1);
    *calls_per_event = (double)((st1.num_device_alloc - st0.num_device_alloc) +
                                (st1.num_device_free - st0.num_device_free)) /
                       ((double)s->n * ROUNDS);
    free(p);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return gk_bench_median(r, ROUNDS);
}

/* --- alloc+free pairs ------------------------------------------------------------------------ */

typedef struct pair_fig {
    double median, p99;
} pair_fig;

static pair_fig pair_stats(double *v)
{
    pair_fig f;
    f.median = gk_bench_median(v, SAMPLES);
    f.p99 = v[(size_t)(0.99 * (SAMPLES - 1))];
    return f;
}

static pair_fig pairs_malloc(size_t size)
{
    static double v[SAMPLES];
    void *live[LIVE];
    for (int i = 0; i < LIVE; i++)
        live[i] = malloc(size);
    for (int k = 0; k < SAMPLES; k++) {
        uint64_t t0 = gk_bench_now_ns();
        for (int i = 0; i < PER_SAMPLE; i++) {
            void *q = malloc(size);
            sink = q;
            free(q);
        }
        v[k] = (double)(gk_bench_now_ns() - t0) / PER_SAMPLE;
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    return pair_stats(v);
}

static pair_fig pairs_pool(size_t size, const char *spec)
{
    static double v[SAMPLES];
    pair_fig bad = {-1, -1};
    gk_device *dev;
    gk_pool *pool;
    if (gk_device_open(spec, &dev))
        return bad;
    if (gk_pool_create(dev, NULL, &pool)) {
        gk_device_close(dev);
        return bad;
    }
    void *live[LIVE], *q;
    for (int i = 0; i < LIVE; i++)
        gk_pool_malloc(pool, size, NULL, &live[i]);
    for (int k = 0; k < SAMPLES; k++) {
        uint64_t t0 = gk_bench_now_ns();
        for (int i = 0; i < PER_SAMPLE; i++) {
            gk_pool_malloc(pool, size, NULL, &q);
            gk_pool_free(pool, q);
        }
        v[k] = (double)(gk_bench_now_ns() - t0) / PER_SAMPLE;
    }
    for (int i = 0; i < LIVE; i++)
        gk_pool_free(pool, live[i]);
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return pair_stats(v);
}

static const size_t pair_sizes[] = {512, 64 << 10, 1 << 20, 32 << 20};
#define NPAIR (sizeof pair_sizes / sizeof pair_sizes[0])

/* --- peers through LD_PRELOAD ----------------------------------------------------------------- */

typedef struct peer {
    const char *name, *lib;
    int ok;
    pair_fig pair[NPAIR];
    double replay[8];
} peer;

static const char *find_lib(const char *const *cands)
{
    for (; *cands; cands++)
        if (access(*cands, R_OK) == 0)
            return *cands;
    return NULL;
}

/* Runs this program with `lib` preloaded in malloc-only mode and reads its figures. */
static void run_peer(peer *pe, const char *self, const char *trace_path, size_t nseq)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LD_PRELOAD=%s %s --malloc-only %s", pe->lib, self, trace_path);
    FILE *f = popen(cmd, "r");
    if (!f)
        return;
    size_t i = 0, j = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        double a, b;
        if (sscanf(line, "pair %lf %lf", &a, &b) == 2 && i < NPAIR)
            pe->pair[i++] = (pair_fig){a, b};
        else if (sscanf(line, "replay %lf", &a) == 1 && j < nseq && j < 8)
            pe->replay[j++] = a;
    }
    pe->ok = pclose(f) == 0 && i == NPAIR && j == nseq;
}

/* --- F_cap and the batch finder -------------------------------------------------------------- */

static void fcap_row(const gk_trace *t, const char *name)
{
    struct {
        const char *label, *preset, *set;
    } rows[] = {{"pytorch", "pytorch", NULL},
                {"default, 20 MiB pages", "default", "page_size=20MiB"},
                {"default", "default", NULL}};
    double py = 0;
    for (size_t i = 0; i < 3; i++) {
        gk_pool_config c;
        gk_pool_config_preset(&c, rows[i].preset);
        c.logger.level = GK_LOG_OFF;
        char err[128];
        if (rows[i].set)
            gk_pool_config_parse(&c, rows[i].set, err, sizeof err);
        gk_fcap_result r;
        if (gk_trace_fcap(t, "sim", &c, &r) != 0) {
            printf("| %s | %s | failed | | |\n", name, rows[i].label);
            continue;
        }
        if (i == 0)
            py = r.f_cap;
        printf("| %s | %s | %.3f | %.3f | %.2fx |\n", name, rows[i].label, r.f_cap,
               (double)r.peak_reserved / (double)r.peak_allocated, py / r.f_cap);
    }
}

typedef struct lin {
    double a, k;
    uint64_t cap;
} lin;

static int lin_trial(void *user, long b, uint64_t *peak)
{
    lin *m = user;
    double p = m->a + m->k * (double)b;
    if (p > (double)m->cap)
        return GK_EDEVOOM;
    *peak = (uint64_t)p;
    return 0;
}

static void batch_table(void)
{
    lin models[] = {{1.0 * (1 << 30), 29.0 * (1 << 20), 16ull << 30},
                    {6.0 * (1 << 30), 300.0 * (1 << 20), 80ull << 30},
                    {0.5 * (1 << 30), 3.0 * (1 << 20), 24ull << 30},
                    {20.0 * (1 << 30), 700.0 * (1 << 20), 40ull << 30}};
    printf("\n| model (a, k, capacity) | true max | model | power | binsearch | decay |\n");
    printf("|---|---:|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        lin *m = &models[i];
        long best = (long)(((double)m->cap - m->a) / m->k);
        printf("| %.1f GiB, %.0f MiB, %llu GiB | %ld |", m->a / (1 << 30), m->k / (1 << 20),
               (unsigned long long)(m->cap >> 30), best);
        for (int mode = 0; mode < 4; mode++) {
            gk_batch_config c;
            gk_batch_config_default(&c);
            c.mode = (gk_batch_mode)mode;
            c.budget = m->cap;
            c.max_trials = 60;
            gk_batch_result r;
            if (gk_batch_find(&c, lin_trial, m, &r) != 0)
                printf(" failed |");
            else
                printf(" %ld in %d trials (%.1f%% below) |", r.batch, r.trials,
                       100.0 * (double)(best - r.batch) / (double)best);
        }
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    int malloc_only = argc > 1 && strcmp(argv[1], "--malloc-only") == 0;
    const char *trace_path =
        argc > 1 + malloc_only ? argv[1 + malloc_only] : "tests/data/cnn_train_trace.csv";
    gk_trace *cnn = NULL, *tf = NULL;
    if (load_traces(trace_path, "bench_pool", &cnn, &tf) != 0)
        return 1;
    seq seqs[5];
    if (seq_from_trace(cnn, "CNN training (real)", &seqs[0]) ||
        seq_from_trace(tf, "transformer (synthetic)", &seqs[1]) ||
        seq_random(10000, (size_t)4 << 20, &seqs[2]) ||
        seq_random(10000, (size_t)64 << 20, &seqs[3]) ||
        seq_random(10000, (size_t)1024 << 20, &seqs[4]))
        return 1;
    size_t nseq = 5;
    if (malloc_only) {
        for (size_t i = 0; i < NPAIR; i++) {
            pair_fig f = pairs_malloc(pair_sizes[i]);
            printf("pair %.1f %.1f\n", f.median, f.p99);
        }
        for (size_t i = 0; i < nseq; i++)
            printf("replay %.1f\n", replay_malloc(&seqs[i]));
        return 0;
    }
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    static const char *const mi[] = {"/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
                                     "/usr/lib/aarch64-linux-gnu/libmimalloc.so.2", NULL};
    static const char *const je[] = {"/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                                     "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", NULL};
    peer peers[2] = {{"mimalloc", find_lib(mi), 0, {{0, 0}}, {0}},
                     {"jemalloc", find_lib(je), 0, {{0, 0}}, {0}}};
    for (int i = 0; i < 2; i++)
        if (peers[i].lib && n > 0)
            run_peer(&peers[i], self, trace_path, nseq);

    printf("A. alloc+free pairs, %d samples of %d pairs, %d blocks live: ns per pair, median "
           "(p99)\n\n",
           SAMPLES, PER_SAMPLE, LIVE);
    printf("| size | pool on host | pool on sim | glibc | mimalloc | jemalloc | glibc / pool |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < NPAIR; i++) {
        pair_fig ph = pairs_pool(pair_sizes[i], "host");
        pair_fig ps = pairs_pool(pair_sizes[i], "sim");
        pair_fig pm = pairs_malloc(pair_sizes[i]);
        char sz[32];
        printf("| %s | %.1f (%.1f) | %.1f (%.1f) | %.1f (%.1f) |",
               gk_format_size(pair_sizes[i], sz, sizeof sz), ph.median, ph.p99, ps.median, ps.p99,
               pm.median, pm.p99);
        for (int k = 0; k < 2; k++) {
            if (peers[k].ok)
                printf(" %.1f (%.1f) |", peers[k].pair[i].median, peers[k].pair[i].p99);
            else
                printf(" not installed |");
        }
        printf(" %.2fx |\n", pm.median / ph.median);
    }

    printf("\nB. replay, ns per allocation+free (median of %d rounds after one warm-up round); "
           "device calls per event after warm-up\n\n",
           ROUNDS);
    printf("| sequence | events | pool on host | pool on sim | device calls/event | glibc | "
           "mimalloc | jemalloc | glibc / pool |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < nseq; i++) {
        double calls_h, calls_s;
        double h = replay_pool(&seqs[i], "host", &calls_h);
        double s = replay_pool(&seqs[i], "sim:capacity=64GiB", &calls_s);
        double m = replay_malloc(&seqs[i]);
        printf("| %s | %zu | %.1f | %.1f | %.4f | %.1f |", seqs[i].name, seqs[i].n, h, s, calls_s,
               m);
        for (int k = 0; k < 2; k++) {
            if (peers[k].ok)
                printf(" %.1f |", peers[k].replay[i]);
            else
                printf(" not installed |");
        }
        printf(" %.2fx |\n", m / h);
    }

    printf("\nC. F_cap = C_min / L_peak on sim (2 MiB steps); peak reserved / peak allocated at "
           "C_min\n\n");
    printf("| trace | preset | F_cap | reserved/allocated | pytorch F_cap / this |\n");
    printf("|---|---|---:|---:|---:|\n");
    fcap_row(cnn, "CNN training (real)");
    fcap_row(tf, "transformer (synthetic)");
    printf("\nD. batch finder: answer and trials per mode (model margin 4%%)\n");
    batch_table();
    for (size_t i = 0; i < nseq; i++) {
        free(seqs[i].ops);
        if (i >= 2)
            free((char *)seqs[i].name);
    }
    gk_trace_free(cnn);
    gk_trace_free(tf);
    return 0;
}
