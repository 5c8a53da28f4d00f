/* Fuzz target: pool settings text ("max_split_size=64MiB,expandable_segments=1,..."). */
#include "fuzz.h"
#include "gpukit/pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[1100], err[256] = "";
    gk_pool_config c;
    gk_pool_config_default(&c);
    gk_fuzz_cstr(text, sizeof text, data, size);
    int rc = gk_pool_config_parse(&c, text, err, sizeof err);
    if (rc != 0 && rc != -EINVAL && rc != -ENOENT)
        __builtin_trap();
    if (rc != 0 && err[0] == '\0')
        __builtin_trap(); /* every refusal says why */
    return 0;
}
