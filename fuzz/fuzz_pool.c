/* Fuzz target: (settings, device, trace) cases for the caching pool, checked against its model
 * (tests/support/pool_model.h) after every event. The input is decoded, never refused: a preset,
 * up to eight settings (a key and a position in its valid range), a sim device, then events of
 * four bytes (allocate a size on one of four streams, or free one of the live blocks). Any
 * difference between pool and model, or in the pool's own structure, is a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pool/pool_int.h"
#include "pool_model.h"

typedef struct in {
    const uint8_t *d;
    size_t n, at;
} in;

static unsigned byte(in *s)
{
    return s->at < s->n ? s->d[s->at++] : 0;
}

static unsigned u16(in *s)
{
    unsigned a = byte(s);
    return a << 8 | byte(s);
}

/* A value of key k at position u (0..65535) of its range, log-spaced for sizes. */
static void key_value(const gk__pool_key *k, unsigned u, char *buf, size_t len)
{
    double f = u / 65535.0;
    switch (k->type) {
    case GK__KEY_BOOL:
        snprintf(buf, len, "%u", u & 1);
        return;
    case GK__KEY_DOUBLE:
        snprintf(buf, len, "%.6f", strcmp(k->key, "gc_threshold") == 0 ? f * 0.999 : f);
        return;
    default:
        break;
    }
    if (k->unlimited != GK__UNLIMITED_NO && u == 65535) {
        snprintf(buf, len, "unlimited");
        return;
    }
    double lo = k->min ? (double)k->min : 1, hi = (double)k->max;
    uint64_t v = (uint64_t)exp(log(lo) + f * (log(hi) - log(lo)));
    if (k->type == GK__KEY_COUNT)
        v = k->min + (uint64_t)u % (k->max - k->min + 1);
    if (v < k->min)
        v = k->min;
    if (v > k->max)
        v = k->max;
    if (k->pow2) {
        uint64_t p = 1;
        while (p <= v / 2)
            p *= 2;
        v = p;
    }
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in s = {data, size, 0};
    pm_case c;
    memset(&c, 0, sizeof c);
    unsigned head = byte(&s);
    snprintf(c.preset, sizeof c.preset, "%s", head & 1 ? "pytorch" : "default");
    size_t nkeys;
    const gk__pool_key *keys = gk__pool_config_keys(&nkeys);
    for (unsigned i = 0, n = (head >> 1) % 9; i < n; i++) {
        const gk__pool_key *k = &keys[byte(&s) % nkeys];
        char v[64];
        key_value(k, u16(&s), v, sizeof v);
        size_t l = strlen(c.set);
        snprintf(c.set + l, sizeof c.set - l, "%s%s=%s", l ? "," : "", k->key, v);
    }
    static const uint64_t grans[] = {4096, 65536, 2u << 20, 32u << 20};
    static const uint64_t aligns[] = {256, 512, 4096, 65536};
    unsigned dv = u16(&s);
    c.dev.capacity = ((uint64_t)(64 + (dv & 0x3ff)) << (14 + ((dv >> 10) & 15))) & ~0xffffull;
    unsigned g = byte(&s);
    c.dev.granularity = grans[g & 3];
    c.dev.alignment = aligns[(g >> 2) & 3];
    c.dev.va_size = (g >> 4) ? c.dev.capacity * ((g >> 4) % 8 + 1) / 2 : 4 * c.dev.capacity;
    c.dev.va_size = (c.dev.va_size + c.dev.granularity - 1) / c.dev.granularity * c.dev.granularity;
    /* Events. */
    gk_trace t = {NULL, 0};
    size_t cap = 0, nlive = 0;
    uint64_t live[256], next_ptr = 0x1000;
    while (s.at + 4 <= s.n && t.count < 2000) {
        unsigned op = byte(&s), a = byte(&s), b = u16(&s);
        if (t.count == cap) {
            cap = cap ? cap * 2 : 64;
            gk_trace_event *e = realloc(t.events, cap * sizeof *e);
            if (!e)
                break;
            t.events = e;
        }
        gk_trace_event *e = &t.events[t.count];
        memset(e, 0, sizeof *e);
        if ((op & 1) && nlive) {
            size_t k = a % nlive;
            e->action = GK_TRACE_FREE;
            e->ptr = live[k];
            live[k] = live[--nlive];
        } else {
            e->action = GK_TRACE_ALLOCATE;
            e->ptr = next_ptr;
            next_ptr += 0x1000;
            /* 1 B .. 2^40 B, log-spaced; the low bits keep odd sizes. */
            e->size = ((uint64_t)1 << (a % 41)) + (b % ((uint64_t)1 << (a % 41)));
            e->stream = (op >> 1) & 3;
            if (nlive < 256)
                live[nlive++] = e->ptr;
        }
        t.count++;
    }
    c.trace = &t;
    char why[1024];
    pm_result res;
    if (pm_check_case(&c, &res, why, sizeof why) < 0) {
        char spec[256];
        pm_device_spec(&c.dev, spec, sizeof spec);
        fprintf(stderr, "pool and model differ (%s, preset %s, set \"%s\"): %s\n", spec, c.preset,
                c.set, why);
        __builtin_trap();
    }
    free(t.events);
    return 0;
}
