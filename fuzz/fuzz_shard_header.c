/* Fuzz target: fixed-record file and llm.c token shard headers. The input is a whole file: its
 * first bytes are the header and its length is the file size the header is checked against. */
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "loader/loader_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[600];
    gk_records_info ri;
    err[0] = '\0';
    int rc = gk__records_parse("fuzz.gkr", data, size, size, &ri, err, sizeof err);
    if (rc == 0) {
        /* An accepted header describes exactly this file, with sane fields. */
        if (ri.record_size == 0 || ri.data_offset % GK_RECORDS_DATA_ALIGN ||
            ri.ndim > GK_RECORDS_MAX_DIMS ||
            ri.data_offset + ri.record_count * ri.record_size != size ||
            !memchr(ri.dtype, 0, sizeof ri.dtype))
            __builtin_trap();
    } else if (!strstr(err, "fuzz.gkr")) {
        __builtin_trap(); /* every refusal names the file */
    }
    gk_tokens_info ti;
    err[0] = '\0';
    rc = gk__tokens_parse("fuzz.bin", data, size, size, &ti, err, sizeof err);
    if (rc == 0) {
        if ((ti.token_bytes != 2 && ti.token_bytes != 4) ||
            GK_TOKENS_HEADER_BYTES + ti.tokens * ti.token_bytes != size)
            __builtin_trap();
    } else if (!strstr(err, "fuzz.bin")) {
        __builtin_trap();
    }
    return 0;
}
