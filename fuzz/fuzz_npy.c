/* Fuzz target: the header of a NumPy .npy file as `gpukit data pack --npy` reads it. The input
 * is the file's first bytes. An accepted header must describe records whose sizes were computed
 * without overflow; a refusal must say why. */
#include <string.h>

#include "fuzz.h"
#include "gpukit/error.h"
#include "gpukit/loader.h"

__extension__ typedef unsigned __int128 u128; /* exact products, no overflow */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gk_npy_info ni;
    char err[512];
    err[0] = '\0';
    int rc = gk_npy_parse_header(data, size, &ni, err, sizeof err);
    if (rc != 0) {
        if (!err[0] || (rc != GK_ECORRUPT && rc != GK_EVERSION && rc != -ENOTSUP))
            __builtin_trap(); /* every refusal says why, with a documented code */
        return 0;
    }
    if (ni.ndim < 1 || ni.ndim > GK_NPY_MAX_DIMS || ni.item_size < 1 || ni.item_size > 64 ||
        ni.header_bytes > size || !memchr(ni.dtype, 0, sizeof ni.dtype))
        __builtin_trap();
    /* record_size and data_bytes are the exact products: recompute them in 128 bits. */
    u128 rs = ni.item_size;
    for (uint32_t i = 1; i < ni.ndim; i++) {
        if (ni.shape[i] == 0)
            __builtin_trap();
        rs *= ni.shape[i];
        if (rs > GK_NPY_MAX_RECORD)
            __builtin_trap();
    }
    u128 all = rs * ni.shape[0];
    if (ni.shape[0] == 0 || rs != ni.record_size || all != ni.data_bytes || all > (1ull << 62))
        __builtin_trap();
    return 0;
}
