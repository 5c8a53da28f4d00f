/* Fuzz target: device spec strings ("sim:capacity=16GiB,fail_prob=0.1", "cuda:3", ...). */
#include <string.h>

#include "device/device_int.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[512], err[256];
    gk__spec spec;
    gk_fuzz_cstr(text, sizeof text, data, size);
    if (gk__spec_parse(text, &spec, err, sizeof err) == 0) {
        /* A parsed spec keeps its promises: bounded key count, NUL-terminated fields. */
        if (spec.nkeys < 0 || spec.nkeys > GK__SPEC_MAX_KEYS)
            __builtin_trap();
        for (int i = 0; i < spec.nkeys; i++) {
            if (!memchr(spec.keys[i], 0, sizeof spec.keys[i]) ||
                !memchr(spec.values[i], 0, sizeof spec.values[i]))
                __builtin_trap();
        }
    } else if (err[0] == '\0') {
        __builtin_trap(); /* every refusal says why */
    }
    return 0;
}
