/* Fuzz target: setting values and the size, duration, number and boolean parsers. The first
 * byte picks the setting; the rest is the value. */
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "gpukit/options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char value[512], err[256], out[GK_OPT_STRING_MAX];
    if (size == 0)
        return 0;
    gk_fuzz_cstr(value, sizeof value, data + 1, size - 1);
    size_t row = data[0] % gk_option_count();
    gk_options o;
    gk_options_default(&o);
    err[0] = '\0';
    int rc = gk_options_set(&o, gk_option_at(row)->env, value, err, sizeof err);
    if (rc != 0 && strncmp(err, gk_option_at(row)->env, strlen(gk_option_at(row)->env)) != 0)
        __builtin_trap(); /* the message names the setting */
    gk_options_format(&o, row, out, sizeof out);

    uint64_t sz;
    double d;
    long long ll;
    int b;
    if (gk_parse_size(value, &sz) == 0) {
        char buf[32];
        gk_format_size(sz, buf, sizeof buf);
    }
    (void)gk_parse_duration(value, &d);
    (void)gk_parse_double(value, &d);
    (void)gk_parse_int(value, &ll);
    (void)gk_parse_bool(value, &b);
    return 0;
}
