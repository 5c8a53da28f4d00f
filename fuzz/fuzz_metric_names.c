/* Fuzz target: metric names, label names and label values as users and the monitor's rules pass
 * them to the registry. Input: "name\nlabel\nvalue", the first byte picking counter, gauge or
 * histogram. A name or label name the checks refuse is never registered; whatever is registered
 * renders as lines that each start with "#" or the registered name. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gpukit/metrics.h"

static int lines_ok(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *s = text; *s;) {
        const char *eol = strchr(s, '\n');
        if (!eol)
            return 0; /* every line ends with a newline */
        if (*s != '#' && strncmp(s, name, nl) != 0)
            return 0;
        s = eol + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char buf[384];
    int kind = data[0] % 3;
    gk_fuzz_cstr(buf, sizeof buf, data + 1, size - 1);
    char *name = buf, *lname = NULL, *lvalue = NULL;
    char *nl = strchr(name, '\n');
    if (nl) {
        *nl = '\0';
        lname = nl + 1;
        if ((nl = strchr(lname, '\n')) != NULL) {
            *nl = '\0';
            lvalue = nl + 1;
        }
    }
    const char *labels[3] = {lname, lname ? (lvalue ? lvalue : "") : NULL, NULL};
    gk_metrics *reg = NULL;
    if (gk_metrics_create(NULL, &reg) != 0)
        return 0;
    gk_metric *m = NULL;
    int rc = kind == 0   ? gk_metrics_counter(reg, name, "fuzz", labels, &m)
             : kind == 1 ? gk_metrics_gauge(reg, name, "fuzz", labels, &m)
                         : gk_metrics_histogram(reg, name, NULL, labels, NULL, 0, &m);
    int bad_name = gk_metrics_check_name(name) != 0;
    int bad_label = lname && gk_metrics_check_label_name(lname) != 0;
    if ((bad_name || bad_label) && rc != -EINVAL)
        __builtin_trap(); /* a name the checks refuse is refused by registration too */
    if (rc == 0) {
        if (!m)
            __builtin_trap();
        gk_counter_add(m, 1);
        gk_gauge_set(m, 2);
        gk_histogram_observe(m, 0.25);
        for (int f = GK_METRICS_PROMETHEUS; f <= GK_METRICS_OPENMETRICS; f++) {
            char *out = NULL;
            size_t len = 0;
            if (gk_metrics_render(reg, (gk_metrics_format)f, &out, &len) != 0)
                continue;
            if (strlen(out) != len || !strstr(out, name) || !lines_ok(out, name))
                __builtin_trap();
            free(out);
        }
    }
    gk_metrics_destroy(reg);
    return 0;
}
