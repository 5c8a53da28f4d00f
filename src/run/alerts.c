/* Alert rules for gk_run_execute: added to the run's sampler monitor, which watches the command's
 * tree and the GPUs and is ticked at every sample (nothing is read twice), and each alert-state
 * change is recorded. Rules are checked before the command starts, so a typo costs nothing. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "gpukit/error.h"
#include "gpukit/monitor.h"
#include "run/alerts_int.h"

struct gk__run_alerts {
    gk__sampler *smp; /* whose monitor evaluates the rules at every sample */
    gk_recorder *rec;
    double t0;
    uint64_t fired;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "name: rule" gives name and rule; a rule without a name is called alert_<i+1>. */
static void split(const char *text, size_t i, char *name, size_t nlen, const char **rule)
{
    const char *colon = strstr(text, ": ");
    int named = colon && colon > text && (isalpha((unsigned char)text[0]) || text[0] == '_');
    for (const char *p = text; named && p < colon; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_')
            named = 0;
    }
    if (named && (size_t)(colon - text) < nlen) {
        snprintf(name, nlen, "%.*s", (int)(colon - text), text);
        *rule = colon + 2;
    } else {
        snprintf(name, nlen, "alert_%zu", i + 1);
        *rule = text;
    }
}

static void on_alert(void *user, const char *rule, const char *labels, gk_alert_state state,
                     double value)
{
    gk__run_alerts *a = user;
    if (state == GK_ALERT_FIRING)
        a->fired++;
    gk_recorder_alert(a->rec, mono_now() - a->t0, rule, labels, gk_alert_state_name(state), value);
}

static int add_all(gk_monitor *m, const gk_run_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nalerts; i++) {
        char name[64], why[256] = "";
        const char *rule;
        split(cfg->alerts[i], i, name, sizeof name, &rule);
        int rc = gk_monitor_add_alert(m, name, rule, why, sizeof why);
        if (rc) {
            snprintf(err, errlen, "--alert \"%s\": %s", cfg->alerts[i],
                     why[0] ? why : gk_strerror(rc));
            return rc;
        }
    }
    return 0;
}

int gk__alerts_check(const gk_run_config *cfg, char *err, size_t errlen)
{
    if (!cfg->nalerts)
        return 0;
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    (void)gk_monitor_config_from_env(&mc); /* GK_NVML_LIBRARY and GK_PROC_ROOT, as the run */
    mc.gpu = GK_MONITOR_GPU_OFF;
    mc.host = 0;
    mc.logger = cfg->logger;
    gk_monitor *m = NULL;
    int rc = gk_monitor_create(&mc, &m);
    if (rc) {
        snprintf(err, errlen, "cannot set up alert rules: %s", gk_strerror(rc));
        return rc;
    }
    rc = add_all(m, cfg, err, errlen);
    gk_monitor_destroy(m);
    return rc;
}

int gk__alerts_start(const gk_run_config *cfg, gk__sampler *smp, gk_recorder *rec, double t0,
                     gk__run_alerts **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->nalerts)
        return 0;
    gk__run_alerts *a = gk__calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->rec = rec;
    a->t0 = t0;
    a->smp = smp;
    int rc = add_all(gk__sampler_monitor(smp), cfg, err, errlen);
    if (rc) {
        free(a);
        return rc;
    }
    gk__sampler_on_alert(smp, on_alert, a);
    *out = a;
    return 0;
}

uint64_t gk__alerts_fired(const gk__run_alerts *a)
{
    return a ? a->fired : 0;
}

void gk__alerts_stop(gk__run_alerts *a)
{
    if (!a)
        return;
    gk__sampler_on_alert(a->smp, NULL, NULL);
    free(a);
}
