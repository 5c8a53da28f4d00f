/* Fuzz target: pool synth's arguments as gk_trace_synth_transformer receives them (layers,
 * hidden, heads, seq, batch, steps, vocab, vary, seed taken from the input). A model of the
 * documented ranges says which settings are valid; the function must agree, and a trace it
 * builds must hold only positive sizes within 1 PiB, each allocation freed once. Settings whose
 * trace would be large are checked for acceptance without being built, to keep runs fast. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gpukit/error.h"
#include "gpukit/trace.h"

__extension__ typedef unsigned __int128 u128; /* exact products, no overflow */

static int32_t take32(const uint8_t **p, size_t *left)
{
    uint32_t v = 0;
    for (int i = 0; i < 4 && *left; i++, (*p)++, (*left)--)
        v |= (uint32_t) * *p << (8 * i);
    return (int32_t)v;
}

/* The documented ranges (docs/pool.md): 0 when valid, else the expected error. */
static int model(const gk_synth_config *c, u128 *events)
{
    if (c->layers < 1 || c->layers > 1024 || c->hidden < 1 || c->hidden > 65536 || c->heads < 1 ||
        c->hidden % c->heads || c->seq < 1 || c->seq > (1 << 20) || c->batch < 1 ||
        c->batch > 65536 || c->steps < 1 || c->steps > (1 << 20) || c->vocab < 1 ||
        c->vocab > (1 << 24) || !(c->vary > 0 && c->vary <= 1))
        return -EINVAL;
    u128 d = (unsigned)c->hidden, h = (unsigned)c->heads, b = (unsigned)c->batch;
    u128 S = c->seq < 8 ? 8 : (unsigned)c->seq, V = (unsigned)c->vocab;
    u128 big[] = {16 * d * d, 4 * V * d, 2 * b * h * S * S, 4 * b * S * V, 8 * b * S * d};
    for (int i = 0; i < 5; i++)
        if (big[i] > ((u128)1 << 50))
            return -EOVERFLOW;
    *events = 6 + 24 * (u128)c->layers + (u128)c->steps * (16 + 52 * (u128)c->layers);
    if (*events > (64u << 20))
        return -ERANGE;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gk_synth_config c;
    gk_synth_config_default(&c);
    const uint8_t *p = data;
    size_t left = size;
    /* Small values are the common case: the low bits pick a small number, a flag a raw one. */
    int32_t *fields[] = {&c.layers, &c.hidden, &c.heads, &c.seq, &c.batch, &c.steps, &c.vocab};
    for (int i = 0; i < 7; i++) {
        int32_t raw = take32(&p, &left);
        *fields[i] = (raw & 1) ? raw >> 1 : (raw >> 1) % 97;
    }
    int32_t v = take32(&p, &left);
    c.vary = v == 0 ? 0.5 : (double)v / 1073741824.0;
    c.seed = (uint64_t)take32(&p, &left);
    u128 events = 0;
    int want = model(&c, &events);
    if (want == 0 && events > 200000) {
        c.steps = 1; /* valid: build a one-step trace of the same shapes instead */
        if (model(&c, &events) != 0 || events > 200000)
            return 0;
    }
    gk_trace *t = NULL;
    int rc = gk_trace_synth_transformer(&c, &t);
    if (rc != want)
        __builtin_trap();
    if (rc) {
        if (t)
            __builtin_trap(); /* a refusal builds nothing */
        return 0;
    }
    if (t->count != (size_t)events)
        __builtin_trap();
    size_t live = 0;
    for (size_t i = 0; i < t->count; i++) {
        const gk_trace_event *e = &t->events[i];
        if (e->size == 0 || e->size > (1ull << 50) || !isfinite(e->time))
            __builtin_trap();
        live += e->action == GK_TRACE_ALLOCATE ? 1 : 0;
        live -= e->action == GK_TRACE_FREE ? 1 : 0;
    }
    if (live != 0) /* every allocation is freed by the end */
        __builtin_trap();
    gk_trace_free(t);
    return 0;
}
