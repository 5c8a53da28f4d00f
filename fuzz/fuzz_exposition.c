/* Fuzz target: label values and help text of any bytes must never break the exposition: the
 * rendered text keeps its line structure in both formats, and Accept headers of any shape pick a
 * known format. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gpukit/metrics.h"

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[512];
    gk_fuzz_cstr(text, sizeof text, data, size);
    gk_metrics_format f = gk_metrics_negotiate(text);
    if (f != GK_METRICS_PROMETHEUS && f != GK_METRICS_OPENMETRICS)
        __builtin_trap();
    gk_metrics *reg = NULL;
    if (gk_metrics_create(NULL, &reg) != 0)
        return 0;
    gk_metric *g = NULL, *c = NULL;
    const char *labels[] = {"value", text, NULL};
    if (gk_metrics_gauge(reg, "fuzz_gauge", text, labels, &g) == 0 &&
        gk_metrics_counter(reg, "fuzz_events_total", NULL, labels, &c) == 0) {
        gk_gauge_set(g, (double)size);
        gk_counter_add(c, 1);
        char *out = NULL;
        size_t len = 0;
        /* TYPE + sample per family, HELP for the gauge when its help is not empty. */
        size_t want = 4 + (text[0] != '\0');
        if (gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &out, &len) == 0) {
            if (count_lines(out) != want || strlen(out) != len)
                __builtin_trap();
            free(out);
        }
        if (gk_metrics_render(reg, GK_METRICS_OPENMETRICS, &out, &len) == 0) {
            if (count_lines(out) != want + 1 || strcmp(out + len - 6, "# EOF\n") != 0)
                __builtin_trap();
            free(out);
        }
    }
    gk_metrics_destroy(reg);
    return 0;
}
