/* Synthetic transformer training traces (RMM events, no device needed): the allocation pattern
 * of a GPT-like model's training steps with a sequence length that varies per step, the case
 * that fragments fixed-size segments and that expandable segments exist for. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

typedef struct synth {
    gk_trace *t;
    size_t cap;
    uint64_t next_id;
    double clock;
    int rc;
} synth;

static uint64_t emit(synth *s, gk_trace_action a, uint64_t ptr, uint64_t size)
{
    if (s->rc)
        return 0;
    if (s->t->count == s->cap) { /* the count is exact: this is a bug, not a big input */
        s->rc = -EOVERFLOW;
        return 0;
    }
    if (a == GK_TRACE_ALLOCATE)
        ptr = 0x10000 + (s->next_id++) * 0x1000;
    s->clock += 1e-6;
    s->t->events[s->t->count++] =
        (gk_trace_event){.thread = 1, .time = s->clock, .action = a, .ptr = ptr, .size = size};
    return ptr;
}

static uint64_t alloc(synth *s, uint64_t size)
{
    return emit(s, GK_TRACE_ALLOCATE, 0, size);
}

static void release(synth *s, uint64_t ptr, uint64_t size)
{
    emit(s, GK_TRACE_FREE, ptr, size);
}

void(gk_synth_config_default)(gk_synth_config *out, size_t size)
{
    gk_synth_config d = {.size = sizeof d,
                         .layers = 12,
                         .hidden = 768,
                         .heads = 12,
                         .seq = 1024,
                         .batch = 8,
                         .steps = 4,
                         .vocab = 32000,
                         .vary = 0.5,
                         .seed = 1};
    (void)gk__sized_put(out, size, &d, sizeof d, "gk_synth_config");
}

#define ACTS   8 /* activations kept per layer */
#define PARAMS 4 /* weight tensors per layer */

/* Ranges of the settings (docs/pool.md). The largest tensor and the event count are checked too,
 * so no size wraps and no trace outgrows memory. */
#define SYNTH_MAX_LAYERS 1024
#define SYNTH_MAX_HIDDEN 65536
#define SYNTH_MAX_SEQ    (1 << 20)
#define SYNTH_MAX_BATCH  65536
#define SYNTH_MAX_STEPS  (1 << 20)
#define SYNTH_MAX_VOCAB  (1 << 24)
#define SYNTH_MAX_TENSOR (1ull << 50)  /* 1 PiB: no device is near it */
#define SYNTH_MAX_EVENTS (64ull << 20) /* 3 GiB of events in memory */

/* a * b, or SYNTH_MAX_TENSOR + 1 when it would pass the limit (so chains stay saturated) */
static uint64_t smul(uint64_t a, uint64_t b)
{
    if (a && b > SYNTH_MAX_TENSOR / a)
        return SYNTH_MAX_TENSOR + 1;
    return a * b;
}

/* Events of a trace: 3 + 12L to set up, 16 + 52L per step, 3 + 12L to tear down (see below). */
static uint64_t synth_events(uint64_t L, uint64_t steps)
{
    return 6 + 24 * L + steps * (16 + 52 * L);
}

/* -EINVAL for a setting out of range, -EOVERFLOW when a tensor would pass SYNTH_MAX_TENSOR,
 * -ERANGE when the trace would pass SYNTH_MAX_EVENTS; each with its message. */
static int synth_check(const gk_synth_config *c)
{
    if (c->layers <= 0 || c->layers > SYNTH_MAX_LAYERS || c->hidden <= 0 ||
        c->hidden > SYNTH_MAX_HIDDEN || c->heads <= 0 || c->hidden % c->heads || c->seq <= 0 ||
        c->seq > SYNTH_MAX_SEQ || c->batch <= 0 || c->batch > SYNTH_MAX_BATCH || c->steps <= 0 ||
        c->steps > SYNTH_MAX_STEPS || c->vocab <= 0 || c->vocab > SYNTH_MAX_VOCAB ||
        !(c->vary > 0 && c->vary <= 1))
        return gk__error(-EINVAL,
                         "synthetic transformer: layers 1-1024, hidden 1-65536 (a multiple of "
                         "heads), seq 1-1048576, batch 1-65536, steps 1-1048576, vocab 1-16777216, "
                         "vary in (0,1]");
    uint64_t d = (uint64_t)c->hidden, h = (uint64_t)c->heads;
    uint64_t S = c->seq < 8 ? 8 : (uint64_t)c->seq; /* a step never goes below 8 tokens */
    uint64_t b = (uint64_t)c->batch, V = (uint64_t)c->vocab;
    uint64_t biggest[] = {smul(smul(4 * d, d), 4), smul(smul(V, d), 4),
                          smul(smul(smul(b, h), smul(S, S)), 2), smul(smul(b, S), smul(V, 4)),
                          smul(smul(b, S), smul(d, 8))};
    for (size_t i = 0; i < sizeof biggest / sizeof biggest[0]; i++)
        if (biggest[i] > SYNTH_MAX_TENSOR)
            return gk__error(-EOVERFLOW,
                             "synthetic transformer: a tensor would pass 1 PiB (lower seq, batch, "
                             "hidden or vocab)");
    if (synth_events((uint64_t)c->layers, (uint64_t)c->steps) > SYNTH_MAX_EVENTS)
        return gk__error(-ERANGE,
                         "synthetic transformer: %d layers and %d steps make more than %llu "
                         "events (lower steps or layers)",
                         c->layers, c->steps, (unsigned long long)SYNTH_MAX_EVENTS);
    return 0;
}

int gk_trace_synth_transformer(const gk_synth_config *cfg, gk_trace **out)
{
    if (out)
        *out = NULL;
    gk_synth_config full, *c = &full;
    gk_synth_config_default(&full);
    if (!cfg || !out)
        return gk__error(-EINVAL, "gk_trace_synth_transformer: cfg or out is NULL");
    int rc = gk__sized_in(&full, sizeof full, cfg, "gk_synth_config");
    if (rc)
        return rc;
    rc = synth_check(c);
    if (rc)
        return rc;
    synth s = {.t = gk__calloc(1, sizeof(gk_trace))};
    if (!s.t)
        return gk__error(-ENOMEM, "gk_trace_synth_transformer: out of host memory");
    uint64_t d = (uint64_t)c->hidden, L = (uint64_t)c->layers, V = (uint64_t)c->vocab;
    s.cap = (size_t)synth_events(L, (uint64_t)c->steps);
    s.t->events = gk__malloc(s.cap * sizeof *s.t->events);
    if (!s.t->events) {
        free(s.t);
        return gk__error(-ENOMEM, "gk_trace_synth_transformer: out of host memory for %zu events",
                         s.cap);
    }
    uint64_t psize[PARAMS] = {3 * d * d * 4, d * d * 4, 4 * d * d * 4, 4 * d * d * 4};
    uint64_t(*params)[PARAMS] = gk__calloc(L, sizeof *params);
    uint64_t(*adam)[2 * PARAMS] = gk__calloc(L, sizeof *adam);
    uint64_t(*grads)[PARAMS] = gk__calloc(L, sizeof *grads);
    uint64_t(*acts)[ACTS] = gk__calloc(L, sizeof *acts);
    uint64_t(*asize)[ACTS] = gk__calloc(L, sizeof *asize);
    if (!params || !adam || !grads || !acts || !asize) {
        s.rc = -ENOMEM;
        goto out_free;
    }
    uint64_t emb = alloc(&s, V * d * 4);
    for (uint64_t l = 0; l < L; l++)
        for (int k = 0; k < PARAMS; k++)
            params[l][k] = alloc(&s, psize[k]);
    uint64_t emb_m = alloc(&s, V * d * 4), emb_v = alloc(&s, V * d * 4);
    for (uint64_t l = 0; l < L; l++)
        for (int k = 0; k < 2 * PARAMS; k++)
            adam[l][k] = alloc(&s, psize[k % PARAMS]);
    uint64_t rng = c->seed * 0x9E3779B97F4A7C15ull + 1;
    for (int step = 0; step < c->steps && !s.rc; step++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        double u = (double)(rng >> 11) / 9007199254740992.0;
        uint64_t lo = (uint64_t)(c->vary * c->seq);
        uint64_t seq = lo + (uint64_t)(u * (double)((uint64_t)c->seq - lo + 1));
        seq = seq < 8 ? 8 : seq / 8 * 8;
        uint64_t b = (uint64_t)c->batch, h = (uint64_t)c->heads, bsd = b * seq * d * 2;
        uint64_t att = b * h * seq * seq * 2;
        uint64_t input = alloc(&s, b * seq * 8);
        uint64_t x = alloc(&s, bsd);
        /* Forward: keep what backward needs, free temporaries at once. */
        for (uint64_t l = 0; l < L; l++) {
            uint64_t sizes[ACTS] = {bsd, 3 * bsd, att, att, bsd, bsd, 4 * bsd, 4 * bsd};
            for (int k = 0; k < ACTS; k++) {
                asize[l][k] = sizes[k];
                acts[l][k] = alloc(&s, sizes[k]);
                if (k == 3 || k == 6) {
                    uint64_t tmp = alloc(&s, sizes[k]);
                    release(&s, tmp, sizes[k]);
                }
            }
        }
        uint64_t logits = alloc(&s, b * seq * V * 4);
        uint64_t loss_tmp = alloc(&s, b * seq * 4);
        release(&s, loss_tmp, b * seq * 4);
        uint64_t dlogits = alloc(&s, b * seq * V * 4);
        release(&s, logits, b * seq * V * 4);
        uint64_t demb = alloc(&s, V * d * 4);
        release(&s, dlogits, b * seq * V * 4);
        uint64_t dx = alloc(&s, bsd);
        /* Backward: gradients appear while activations go, last layer first. */
        for (uint64_t l = L; l-- > 0;) {
            for (int k = ACTS; k-- > 0;) {
                uint64_t g = alloc(&s, asize[l][k]);
                release(&s, acts[l][k], asize[l][k]);
                release(&s, g, asize[l][k]);
            }
            for (int k = 0; k < PARAMS; k++)
                grads[l][k] = alloc(&s, psize[k]);
        }
        release(&s, dx, bsd);
        release(&s, x, bsd);
        release(&s, input, b * seq * 8);
        /* Optimizer: a temporary per parameter, then the gradients go (set_to_none). */
        for (uint64_t l = 0; l < L; l++) {
            for (int k = 0; k < PARAMS; k++) {
                uint64_t tmp = alloc(&s, psize[k]);
                release(&s, tmp, psize[k]);
                release(&s, grads[l][k], psize[k]);
            }
        }
        uint64_t tmp = alloc(&s, V * d * 4);
        release(&s, tmp, V * d * 4);
        release(&s, demb, V * d * 4);
    }
    for (uint64_t l = 0; l < L; l++) {
        for (int k = 0; k < 2 * PARAMS; k++)
            release(&s, adam[l][k], psize[k % PARAMS]);
        for (int k = 0; k < PARAMS; k++)
            release(&s, params[l][k], psize[k]);
    }
    release(&s, emb_m, V * d * 4);
    release(&s, emb_v, V * d * 4);
    release(&s, emb, V * d * 4);
out_free:
    free(params);
    free(adam);
    free(grads);
    free(acts);
    free(asize);
    if (!s.rc && s.t->count != s.cap)
        s.rc = -EOVERFLOW; /* synth_events and the generator disagree: a bug */
    if (s.rc) {
        gk_trace_free(s.t);
        return gk__error(s.rc, s.rc == -ENOMEM
                                   ? "gk_trace_synth_transformer: out of host memory"
                                   : "gk_trace_synth_transformer: the event count was miscounted "
                                     "(a bug in gpukit)");
    }
    *out = s.t;
    return 0;
}
