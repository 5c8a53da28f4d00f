/* Fuzz target: RMM-CSV allocation traces (gk_trace_parse), then L_peak over what parsed. */
#include <stdio.h>

#include "fuzz.h"
#include "gpukit/pool.h"
#include "gpukit/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fmemopen((void *)data, size ? size : 1, "r");
    if (!f)
        return 0;
    if (size == 0)
        fgetc(f); /* fmemopen needs a size of 1 or more: consume it to read an empty file */
    gk_trace *t = NULL;
    char err[256] = "";
    int rc = gk_trace_parse(f, "fuzz.csv", &t, err, sizeof err);
    fclose(f);
    if (rc == 0) {
        if (!t)
            __builtin_trap();
        (void)gk_trace_live_peak(t);
        gk_trace_free(t);
    } else if (t || (rc == GK_ESYNTAX && err[0] == '\0')) {
        __builtin_trap(); /* a refusal leaves no trace behind and says why */
    }
    return 0;
}
