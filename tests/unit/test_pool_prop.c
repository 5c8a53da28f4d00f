/* The pool against its executable model (tests/support/pool_model.h), on random cases: settings
 * drawn over every key's whole valid range and in combinations, simulated devices of every shape,
 * and traces that are random, cut from the real CNN trace (tests/data), synthetic transformer
 * steps, or mixes of those. After every event the pool must do what the model does and keep its
 * own structure straight. A failing case is shrunk to a small (settings, device, trace) and
 * printed as a `gpukit pool replay` command plus the command that checks it again.
 *
 * The pytorch preset is also held step by step to PyTorch's rules on the real traces: the model's
 * classic rules follow PyTorch's caching allocator (and reproduce its documented C_min of the CNN
 * trace), and reserved bytes must be equal after every event.
 *
 *   test_pool_prop                     the bounded, seeded run of `make test` (GK_PROP_CASES,
 *                                      GK_PROP_SEED)
 *   test_pool_prop --seconds N         the long run of `make fuzz`: random seeds for N seconds
 *   test_pool_prop --replay TRACE.csv --device SPEC --preset NAME [--set k=v,...]
 *                                      checks one case (what a failure prints)
 */
/* gk-labels: unit */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gk_test.h"
#include "pool/pool_int.h"
#include "pool_model.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)

static bool under_valgrind(void)
{
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "vgpreload");
}

/* --- random numbers ------------------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(rng *r, uint64_t n)
{
    return n ? next(r) % n : 0;
}

static double unit(rng *r)
{
    return (double)(next(r) >> 11) * 0x1.0p-53;
}

static bool chance(rng *r, double p)
{
    return unit(r) < p;
}

/* Log-uniform in [lo, hi] (lo >= 1). */
static uint64_t logu(rng *r, uint64_t lo, uint64_t hi)
{
    if (lo < 1)
        lo = 1;
    if (hi <= lo)
        return lo;
    double a = __builtin_log((double)lo), b = __builtin_log((double)hi);
    double v = __builtin_exp(a + unit(r) * (b - a));
    uint64_t x = v >= (double)hi ? hi : (uint64_t)v;
    return x < lo ? lo : x;
}

static uint64_t pow2_floor(uint64_t v)
{
    uint64_t p = 1;
    while (p <= v / 2)
        p *= 2;
    return p;
}

/* --- traces ------------------------------------------------------------------------------------ */

typedef struct tbuf {
    gk_trace *t;
    size_t cap;
} tbuf;

static void emit(tbuf *b, gk_trace_action a, uint64_t ptr, uint64_t size, uint64_t stream)
{
    if (b->t->count == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->t->events = realloc(b->t->events, b->cap * sizeof *b->t->events);
    }
    b->t->events[b->t->count++] =
        (gk_trace_event){1, (double)b->t->count * 1e-6, a, ptr, size, stream};
}

static gk_trace *new_trace(void)
{
    return calloc(1, sizeof(gk_trace));
}

/* The oversize rule's edge: a segment of *big cached whole, then a request of *small = *big -
 * max_non_split_rounding, which must not take it. */
static void oversize_edge(const gk_pool_config *c, uint64_t *big, uint64_t *small)
{
    uint64_t msplit = c->max_split_size == SIZE_MAX ? 64 * MIB : c->max_split_size;
    uint64_t slack = c->max_non_split_rounding > GIB ? GIB : c->max_non_split_rounding;
    uint64_t rl = c->round_large ? c->round_large : 1;
    *big = (msplit + slack + rl - 1) / rl * rl;
    *small = *big - slack;
}

/* Sizes users meet: small tensors, activations, weights; sometimes exactly at a rule's edge or
 * absurdly large. */
static uint64_t draw_size(rng *r, const gk_pool_config *c)
{
    double u = unit(r);
    if (u < 0.05) {
        uint64_t big, small;
        oversize_edge(c, &big, &small);
        uint64_t edges[] = {c->small_max,
                            c->small_max + 1,
                            c->min_large_alloc,
                            c->min_large_alloc + 1,
                            c->large_segment,
                            c->round_bytes,
                            c->round_bytes + 1,
                            c->page_size,
                            c->page_size + 1,
                            c->max_split_size == SIZE_MAX ? 64 * MIB : c->max_split_size,
                            big,
                            small};
        uint64_t e = edges[below(r, sizeof edges / sizeof edges[0])];
        return e ? e : 1;
    }
    if (u < 0.07)
        return logu(r, 1ull << 40, 1ull << 63); /* larger than any device */
    if (u < 0.50)
        return logu(r, 1, MIB);
    if (u < 0.90)
        return logu(r, MIB, 64 * MIB);
    return logu(r, 64 * MIB, GIB);
}

static gk_trace *random_trace(rng *r, const gk_pool_config *c)
{
    tbuf b = {new_trace(), 0};
    size_t n = 50 + below(r, 600);
    uint64_t *live = malloc(n * sizeof *live), next_ptr = 0x1000;
    size_t nlive = 0;
    int streams = chance(r, 0.6) ? 1 : 2 + (int)below(r, 3);
    for (size_t i = 0; i < n; i++) {
        if (nlive && (nlive > 150 || chance(r, 0.42))) {
            size_t k = below(r, nlive);
            emit(&b, GK_TRACE_FREE, live[k], 0, 0);
            live[k] = live[--nlive];
        } else if (chance(r, 0.01)) { /* the oversize edge, in order */
            uint64_t big, small, st = below(r, (uint64_t)streams);
            oversize_edge(c, &big, &small);
            emit(&b, GK_TRACE_ALLOCATE, next_ptr, big, st);
            emit(&b, GK_TRACE_FREE, next_ptr, 0, 0);
            next_ptr += 0x1000;
            emit(&b, GK_TRACE_ALLOCATE, next_ptr, small, st);
            live[nlive++] = next_ptr;
            next_ptr += 0x1000;
        } else {
            uint64_t p = next_ptr;
            next_ptr += 0x1000;
            emit(&b, GK_TRACE_ALLOCATE, p, draw_size(r, c), below(r, (uint64_t)streams));
            live[nlive++] = p;
        }
    }
    free(live);
    return b.t;
}

static gk_trace *cut(rng *r, const gk_trace *src)
{
    size_t len = 100 + below(r, src->count);
    if (len > src->count)
        len = src->count;
    size_t from = below(r, src->count - len + 1);
    gk_trace *t = new_trace();
    t->events = malloc(len * sizeof *t->events);
    memcpy(t->events, src->events + from, len * sizeof *t->events);
    t->count = len;
    return t;
}

static gk_trace *transformer(rng *r)
{
    gk_synth_config sc;
    gk_synth_config_default(&sc);
    sc.layers = 1 + (int)below(r, 3);
    sc.heads = 1 << below(r, 3);
    sc.hidden = sc.heads * 32 * (1 + (int)below(r, 4));
    sc.seq = 16 << below(r, 5);
    sc.batch = 1 + (int)below(r, 4);
    sc.steps = 1 + (int)below(r, 3);
    sc.vocab = 256 + (int)below(r, 4000);
    sc.vary = 0.25 + 0.75 * unit(r);
    sc.seed = next(r);
    gk_trace *t = NULL;
    if (gk_trace_synth_transformer(&sc, &t) != 0)
        return new_trace();
    return t;
}

/* Two traces interleaved at random; the second's pointers (and maybe streams) moved apart. */
static gk_trace *mix(rng *r, gk_trace *a, gk_trace *b)
{
    gk_trace *t = new_trace();
    t->count = a->count + b->count;
    t->events = malloc((t->count + 1) * sizeof *t->events);
    bool other_stream = chance(r, 0.5);
    size_t i = 0, j = 0, k = 0;
    while (i < a->count || j < b->count) {
        if (j == b->count || (i < a->count && chance(r, 0.5))) {
            t->events[k++] = a->events[i++];
        } else {
            gk_trace_event e = b->events[j++];
            e.ptr += 1ull << 48;
            if (other_stream)
                e.stream += 7;
            t->events[k++] = e;
        }
    }
    gk_trace_free(a);
    gk_trace_free(b);
    return t;
}

/* --- settings and devices ---------------------------------------------------------------------- */

static void append(char *buf, size_t len, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t len, const char *key, const char *fmt, ...)
{
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, len - n, "%s%s=", n ? "," : "", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
}

/* Draws a value for one key: near its preset value (x 2^-3 .. 2^3) or anywhere in its range. */
static void draw_key(rng *r, const gk__pool_key *k, const gk_pool_config *base, uint64_t lpeak,
                     char *set, size_t len)
{
    if (k->type == GK__KEY_BOOL) {
        append(set, len, k->key, "%d", (int)below(r, 2));
        return;
    }
    if (k->type == GK__KEY_DOUBLE) {
        bool gc = strcmp(k->key, "gc_threshold") == 0;
        double v = chance(r, 0.2) ? 0 : gc ? 0.02 + 0.96 * unit(r) : 0.05 + 0.95 * unit(r);
        if (!gc && chance(r, 0.1))
            v = 1;
        append(set, len, k->key, "%.6f", v);
        return;
    }
    if (strcmp(k->key, "divisions") == 0) {
        append(set, len, k->key, "%llu", chance(r, 0.3) ? 0ull : 1ull << below(r, 11));
        return;
    }
    if (strcmp(k->key, "history") == 0) {
        append(set, len, k->key, "%llu", (unsigned long long)below(r, 300));
        return;
    }
    if (k->unlimited != GK__UNLIMITED_NO && chance(r, 0.15)) {
        append(set, len, k->key, "unlimited");
        return;
    }
    uint64_t v;
    if (strcmp(k->key, "limit") == 0) {
        v = (uint64_t)((double)lpeak * (0.5 + 3 * unit(r)));
    } else if (chance(r, 0.65)) {
        uint64_t d = *(const size_t *)((const char *)base + k->offset);
        if (d == SIZE_MAX || d == 0)
            d = 64 * MIB;
        int sh = (int)below(r, 7) - 3;
        v = sh < 0 ? d >> -sh : d << sh;
    } else {
        v = logu(r, k->min, k->max);
    }
    if (v < k->min)
        v = k->min;
    if (v > k->max)
        v = k->max;
    if (k->pow2)
        v = pow2_floor(v);
    append(set, len, k->key, "%llu", (unsigned long long)v);
}

/* A valid combination most of the time: the rules across keys repaired after drawing. */
static void draw_settings(rng *r, pm_case *c, uint64_t lpeak)
{
    snprintf(c->preset, sizeof c->preset, "%s", chance(r, 0.5) ? "default" : "pytorch");
    gk_pool_config base;
    gk_pool_config_preset(&base, c->preset);
    c->set[0] = '\0';
    size_t n;
    const gk__pool_key *keys = gk__pool_config_keys(&n);
    double p = chance(r, 0.3) ? 0.05 : 0.3;
    for (size_t i = 0; i < n; i++)
        if (chance(r, p))
            draw_key(r, &keys[i], &base, lpeak, c->set, sizeof c->set);
    if (chance(r, 0.1))
        return; /* sometimes as drawn: a refusal is a result too */
    gk_pool_config cfg = base;
    char err[256];
    if (gk_pool_config_parse(&cfg, c->set, err, sizeof err) != 0)
        return;
    char fix[512] = "";
    if (cfg.small_max < cfg.round_bytes)
        cfg.small_max = cfg.round_bytes, append(fix, sizeof fix, "small_max", "%zu", cfg.small_max);
    if (cfg.small_segment < cfg.small_max)
        append(fix, sizeof fix, "small_segment", "%zu", cfg.small_segment = cfg.small_max);
    if (cfg.large_segment <= cfg.small_max)
        append(fix, sizeof fix, "large_segment", "%zu", cfg.large_segment = cfg.small_max * 2);
    if (cfg.min_large_alloc > cfg.large_segment)
        append(fix, sizeof fix, "min_large_alloc", "%zu", cfg.large_segment);
    if (cfg.round_large < cfg.round_bytes || cfg.round_large % cfg.round_bytes)
        append(fix, sizeof fix, "round_large", "%zu",
               (cfg.round_large + cfg.round_bytes - 1) / cfg.round_bytes * cfg.round_bytes);
    if (cfg.max_split_size != SIZE_MAX && cfg.max_split_size <= cfg.large_segment)
        append(fix, sizeof fix, "max_split_size", "%zu", cfg.large_segment + cfg.round_bytes);
    if (fix[0]) {
        size_t l = strlen(c->set);
        snprintf(c->set + l, sizeof c->set - l, "%s%s", l ? "," : "", fix);
    }
}

static void draw_device(rng *r, pm_device *d, uint64_t lpeak)
{
    double f = __builtin_exp(__builtin_log(0.3) + unit(r) * __builtin_log(6.0 / 0.3));
    uint64_t cap = (uint64_t)((double)(lpeak ? lpeak : 64 * MIB) * f);
    cap = cap < MIB ? MIB : cap & ~(64 * KIB - 1);
    if (cap > (1ull << 50))
        cap = 1ull << 50;
    static const uint64_t aligns[] = {256, 256, 256, 512, 4096, 65536};
    static const uint64_t grans[] = {2 * MIB, 2 * MIB, 2 * MIB, 4 * KIB, 64 * KIB, 32 * MIB};
    d->capacity = cap;
    d->alignment = aligns[below(r, 6)];
    d->granularity = grans[below(r, 6)];
    d->va_size = chance(r, 0.75) ? 4 * cap : (uint64_t)((double)cap * (0.5 + 7.5 * unit(r)));
    d->va_size = (d->va_size + d->granularity - 1) / d->granularity * d->granularity;
}

static gk_trace *cnn;

static gk_trace *draw_trace(rng *r, const gk_pool_config *c)
{
    switch (below(r, 6)) {
    case 0:
    case 1:
        return random_trace(r, c);
    case 2:
        return cut(r, cnn);
    case 3:
        return transformer(r);
    case 4:
        return mix(r, cut(r, cnn), random_trace(r, c));
    default:
        return mix(r, transformer(r), chance(r, 0.5) ? cut(r, cnn) : random_trace(r, c));
    }
}

/* --- shrinking and reporting ------------------------------------------------------------------- */

static bool fails(const pm_case *c, char *why, size_t len)
{
    pm_result res;
    return pm_check_case(c, &res, why, len) < 0;
}

/* Removes chunks of events, then settings, then device keys, while the case still fails. */
static void shrink(pm_case *c, gk_trace *t, char *why, size_t len)
{
    bool changed = true;
    for (int round = 0; changed && round < 8; round++) {
        changed = false;
        for (size_t chunk = t->count / 2; chunk >= 1; chunk /= 2) {
            for (size_t at = 0; at + chunk <= t->count;) {
                gk_trace_event *saved = malloc(chunk * sizeof *saved);
                memcpy(saved, t->events + at, chunk * sizeof *saved);
                memmove(t->events + at, t->events + at + chunk,
                        (t->count - at - chunk) * sizeof *t->events);
                t->count -= chunk;
                if (fails(c, why, len)) {
                    changed = true;
                } else {
                    memmove(t->events + at + chunk, t->events + at,
                            (t->count - at) * sizeof *t->events);
                    memcpy(t->events + at, saved, chunk * sizeof *saved);
                    t->count += chunk;
                    at += chunk;
                }
                free(saved);
            }
        }
        /* Settings one by one. */
        for (char *item = c->set; *item;) {
            char *end = strchr(item, ',');
            size_t ilen = end ? (size_t)(end - item) + 1 : strlen(item);
            char saved[sizeof c->set];
            memcpy(saved, c->set, sizeof saved);
            memmove(item, item + ilen, strlen(item + ilen) + 1);
            size_t l = strlen(c->set);
            if (l && c->set[l - 1] == ',')
                c->set[l - 1] = '\0';
            if (fails(c, why, len)) {
                changed = true;
            } else {
                memcpy(c->set, saved, sizeof saved);
                item += ilen;
            }
        }
        pm_device d0 = c->dev;
        pm_device tries[3] = {d0, d0, d0};
        tries[0].va_size = 4 * d0.capacity;
        tries[1].granularity = 2 * MIB;
        tries[2].alignment = 256;
        for (int i = 0; i < 3; i++) {
            tries[i].va_size = (tries[i].va_size + tries[i].granularity - 1) /
                               tries[i].granularity * tries[i].granularity;
            if (memcmp(&tries[i], &c->dev, sizeof c->dev) == 0)
                continue;
            pm_device keep = c->dev;
            c->dev = tries[i];
            if (fails(c, why, len))
                changed = true;
            else
                c->dev = keep;
        }
    }
    fails(c, why, len); /* the message of the final case */
}

static void report(pm_case *c, gk_trace *t, uint64_t seed, const char *why)
{
    char dir[512], path[600], spec[256];
    snprintf(dir, sizeof dir, "%s/pool_prop", GK_TEST_BINARY_DIR);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/fail-%llu.csv", dir, (unsigned long long)seed);
    FILE *f = fopen(path, "w");
    if (f) {
        gk_trace_write(t, f);
        fclose(f);
    }
    pm_device_spec(&c->dev, spec, sizeof spec);
    fprintf(stderr,
            "property failed (seed %llu), shrunk to %zu events: %s\n"
            "  reproduce: gpukit pool replay %s --device %s --preset %s%s%s\n"
            "  check:     %s/tests/test_pool_prop --replay %s --device %s --preset %s%s%s\n",
            (unsigned long long)seed, t->count, why, path, spec, c->preset,
            c->set[0] ? " --set " : "", c->set, GK_TEST_BINARY_DIR, path, spec, c->preset,
            c->set[0] ? " --set " : "", c->set);
}

typedef struct tally {
    size_t cases, refused, events, failed_allocs, with_ooms, expandable, fallback, retries, gc;
} tally;

/* One random case from `seed`. Returns false (after shrinking and reporting) on a failure. */
static bool run_case(uint64_t seed, tally *ty)
{
    rng r = {seed};
    pm_case c;
    memset(&c, 0, sizeof c);
    gk_pool_config peek;
    gk_pool_config_preset(&peek, "default");
    gk_trace *t = draw_trace(&r, &peek);
    uint64_t lpeak = gk_trace_live_peak(t);
    draw_settings(&r, &c, lpeak > (1ull << 45) ? 64 * MIB : lpeak);
    draw_device(&r, &c.dev, lpeak > (1ull << 45) ? 64 * MIB : lpeak);
    c.trace = t;
    char why[1024];
    pm_result res;
    int rc = pm_check_case(&c, &res, why, sizeof why);
    ty->cases++;
    if (rc > 0)
        ty->refused++;
    ty->events += res.events;
    ty->failed_allocs += res.failed;
    ty->with_ooms += res.failed > 0;
    ty->expandable += res.expandable;
    ty->fallback += res.fallback;
    ty->retries += res.retries > 0;
    ty->gc += res.gc_runs > 0;
    if (rc < 0) {
        fprintf(stderr, "seed %llu: %s\n", (unsigned long long)seed, why);
        shrink(&c, t, why, sizeof why);
        report(&c, t, seed, why);
    }
    gk_trace_free(t);
    return rc >= 0;
}

static void print_tally(const tally *t, const char *what)
{
    printf("%s: %zu cases (%zu refused by their settings or device), %zu events checked; cases "
           "with failed allocations %zu (%zu allocations), with ladder retries %zu, with GC %zu; "
           "expandable %zu, fell back to classic %zu\n",
           what, t->cases, t->refused, t->events, t->with_ooms, t->failed_allocs, t->retries, t->gc,
           t->expandable, t->fallback);
}

/* --- the tests ---------------------------------------------------------------------------------- */

static void test_random_cases(void **state)
{
    (void)state;
    const char *env = getenv("GK_PROP_CASES");
    size_t n = env ? strtoull(env, NULL, 10) : under_valgrind() ? 4 : 150;
    env = getenv("GK_PROP_SEED");
    uint64_t seed0 = env ? strtoull(env, NULL, 10) : 1;
    tally ty = {0};
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !run_case(seed0 * 1000003ull + i, &ty);
    print_tally(&ty, "pool model");
    assert_int_equal(bad, 0);
    assert_true(ty.cases - ty.refused > ty.cases / 2); /* most cases must run */
}

/* The pytorch preset against PyTorch's rules on the real trace: the model (whose classic rules
 * are PyTorch's) finds the documented C_min of 346,030,080 B; the pool matches it event by event,
 * reserved bytes included, at C_min, just below it (where the ladder runs), and on a large
 * device; the synthetic transformer too. */
static void test_pytorch_reference(void **state)
{
    (void)state;
    pm_case c;
    memset(&c, 0, sizeof c);
    snprintf(c.preset, sizeof c.preset, "pytorch");
    c.trace = cnn;
    pm_device_parse("sim", &c.dev);
    uint64_t lo = gk_trace_live_peak(cnn) / (2 * MIB), hi = lo + 200; /* 2 MiB units */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        c.dev.capacity = mid * 2 * MIB;
        c.dev.va_size = 4 * c.dev.capacity;
        size_t failed = 0;
        assert_int_equal(pm_model_replay(&c, NULL, &failed), 0);
        if (failed)
            lo = mid;
        else
            hi = mid;
    }
    assert_int_equal(hi * 2 * MIB, 346030080);
    uint64_t caps[] = {346030080, 346030080 - 2 * MIB, 300 * MIB, 8 * GIB};
    size_t ncaps = under_valgrind() ? 2 : sizeof caps / sizeof caps[0];
    for (size_t i = 0; i < ncaps; i++) {
        c.dev.capacity = caps[i];
        c.dev.va_size = 4 * caps[i];
        char why[1024];
        pm_result res;
        if (pm_check_case(&c, &res, why, sizeof why) != 0)
            fail_msg("CNN trace on %llu B: %s", (unsigned long long)caps[i], why);
        if (i == 0)
            assert_int_equal(res.failed, 0);
        if (i == 1)
            assert_true(res.failed > 0);
    }
    gk_synth_config sc;
    gk_synth_config_default(&sc);
    sc.layers = 2;
    sc.hidden = 256;
    sc.heads = 4;
    sc.seq = 256;
    gk_trace *tf = NULL;
    GK_ASSERT_OK(gk_trace_synth_transformer(&sc, &tf));
    c.trace = tf;
    uint64_t lp = gk_trace_live_peak(tf);
    for (int i = 0; i < (under_valgrind() ? 1 : 3); i++) {
        c.dev.capacity = (lp + lp / 4 * (uint64_t)i) & ~(MIB - 1);
        c.dev.va_size = 4 * c.dev.capacity;
        for (int pr = 0; pr < 2; pr++) {
            snprintf(c.preset, sizeof c.preset, "%s", pr ? "default" : "pytorch");
            char why[1024];
            pm_result res;
            if (pm_check_case(&c, &res, why, sizeof why) != 0)
                fail_msg("transformer (%s) on %llu B: %s", c.preset,
                         (unsigned long long)c.dev.capacity, why);
        }
    }
    gk_trace_free(tf);
}

/* The whole real trace through both presets with common settings, checked at every event. */
static void test_real_trace_settings(void **state)
{
    (void)state;
    static const char *const sets[] = {"",
                                       "max_split_size=128MiB",
                                       "page_size=20MiB",
                                       "gc_threshold=0.6",
                                       "divisions=4",
                                       "max_split_size=64MiB,gc_threshold=0.8,page_size=4MiB"};
    size_t n = under_valgrind() ? 1 : sizeof sets / sizeof sets[0];
    for (size_t i = 0; i < n; i++) {
        for (int pr = 0; pr < 2; pr++) {
            pm_case c;
            memset(&c, 0, sizeof c);
            snprintf(c.preset, sizeof c.preset, "%s", pr ? "pytorch" : "default");
            snprintf(c.set, sizeof c.set, "%s", sets[i]);
            c.trace = cnn;
            pm_device_parse("sim:capacity=280MiB", &c.dev);
            char why[1024];
            pm_result res;
            if (pm_check_case(&c, &res, why, sizeof why) != 0)
                fail_msg("CNN trace, %s, %s: %s", c.preset, sets[i], why);
        }
    }
}

static int load_cnn(void **state)
{
    (void)state;
    char err[256] = "";
    return gk_trace_read(GK_TEST_SOURCE_DIR "/tests/data/cnn_train_trace.csv", &cnn, err,
                         sizeof err);
}

static int free_cnn(void **state)
{
    (void)state;
    gk_trace_free(cnn);
    return 0;
}

/* --- command line ------------------------------------------------------------------------------- */

static int replay_one(int argc, char **argv)
{
    const char *file = NULL, *spec = "sim", *pre = "default", *set = "";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--replay") == 0)
            file = argv[i + 1];
        else if (strcmp(argv[i], "--device") == 0)
            spec = argv[i + 1];
        else if (strcmp(argv[i], "--preset") == 0)
            pre = argv[i + 1];
        else if (strcmp(argv[i], "--set") == 0)
            set = argv[i + 1];
    }
    pm_case c;
    memset(&c, 0, sizeof c);
    snprintf(c.preset, sizeof c.preset, "%s", pre);
    snprintf(c.set, sizeof c.set, "%s", set);
    if (pm_device_parse(spec, &c.dev) != 0) {
        fprintf(stderr, "--device %s: the model knows sim:capacity,alignment,granularity,va_size\n",
                spec);
        return 2;
    }
    gk_trace *t = NULL;
    char err[512] = "";
    if (gk_trace_read(file, &t, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    c.trace = t;
    char why[1024];
    pm_result res;
    int rc = pm_check_case(&c, &res, why, sizeof why);
    if (rc < 0)
        printf("pool and model differ: %s\n", why);
    else if (rc > 0)
        printf("the settings or the device are refused\n");
    else
        printf("pool and model agree on all %zu events (%zu allocations refused by both)\n",
               res.events, res.failed);
    gk_trace_free(t);
    return rc < 0 ? 1 : 0;
}

static int long_run(double seconds)
{
    if (load_cnn(NULL) != 0)
        return 2;
    tally ty = {0};
    size_t bad = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t seed = (uint64_t)t0.tv_nsec ^ ((uint64_t)t0.tv_sec << 20) ^ (uint64_t)getpid() << 40;
    printf("long run: %g s from seed %llu\n", seconds, (unsigned long long)seed);
    for (;;) {
        bad += !run_case(seed++, &ty);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        if (el >= seconds)
            break;
        if (ty.cases % 1000 == 0) {
            print_tally(&ty, "so far");
            fflush(stdout);
        }
    }
    print_tally(&ty, "long run");
    printf("%zu failures\n", bad);
    free_cnn(NULL);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--seconds") == 0)
        return long_run(strtod(argv[2], NULL));
    if (argc > 2 && strcmp(argv[1], "--replay") == 0)
        return replay_one(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pytorch_reference),
        cmocka_unit_test(test_real_trace_settings),
        cmocka_unit_test(test_random_cases),
    };
    return cmocka_run_group_tests(tests, load_cnn, free_cnn);
}
