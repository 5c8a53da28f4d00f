/* Fuzz target: run recordings (JSON Lines) as gpukit report reads them, then the report built
 * and rendered from whatever was accepted. */
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "gpukit/error.h"
#include "report/report_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f)
        return 0;
    gk_recording *rec = NULL;
    char err[256] = "";
    int rc = gk__recording_read(f, "fuzz", &rec, err, sizeof err);
    fclose(f);
    if (rc) {
        if (rec || (rc != -ENOMEM && !err[0]))
            __builtin_trap(); /* a refusal returns nothing and says why */
        return 0;
    }
    /* Accepted: every series is consistent and the report renders. */
    for (size_t i = 0; i < gk_recording_series_count(rec); i++) {
        gk_series s;
        if (gk_recording_series(rec, i, &s) || !s.name || (s.n && (!s.t || !s.v)))
            __builtin_trap();
    }
    gk_report *rep = NULL;
    if (gk_report_create(rec, rec, &rep) == 0) {
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            gk_report_write_text(rep, null);
            gk_report_write_json(rep, null);
            gk_report_write_html(rep, null);
            fclose(null);
        }
        gk_report_destroy(rep);
    }
    gk_recording_free(rec);
    return 0;
}
