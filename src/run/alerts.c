/* Alert rules for gk_run_execute: a gk_monitor (no thread of its own) watches the command's tree
 * and the GPUs, is ticked at every sample, and records each alert-state change in the
 * recording. Rules are checked before the command starts, so a typo costs nothing. */
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
    gk_monitor *mon;
    gk_metrics *reg;
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

int gk__alerts_start(const gk_run_config *cfg, int gpu, pid_t pid, gk_recorder *rec, double t0,
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
    int rc = gk_metrics_create(NULL, &a->reg);
    if (rc)
        goto out_fail;
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    (void)gk_monitor_config_from_env(&mc); /* GK_NVML_LIBRARY and GK_PROC_ROOT, as the run */
    mc.interval = cfg->interval_s;
    mc.retention = cfg->interval_s * 120 > 60 ? cfg->interval_s * 120 : 60;
    /* GPUs only when the sampler found them: the run says once why GPU metrics are off */
    mc.gpu = gpu ? GK_MONITOR_GPU_AUTO : GK_MONITOR_GPU_OFF;
    mc.pid = (int)pid;
    mc.metrics = a->reg;
    mc.logger = cfg->logger;
    mc.on_alert = on_alert;
    mc.alert_user = a;
    if ((rc = gk_monitor_create(&mc, &a->mon)))
        goto out_fail;
    if ((rc = add_all(a->mon, cfg, err, errlen)))
        goto out_fail;
    *out = a;
    return 0;
out_fail:
    if (!err[0])
        snprintf(err, errlen, "cannot set up alert rules: %s", gk_strerror(rc));
    gk__alerts_stop(a);
    return rc;
}

void gk__alerts_tick(gk__run_alerts *a)
{
    if (a)
        gk_monitor_tick(a->mon);
}

uint64_t gk__alerts_fired(const gk__run_alerts *a)
{
    return a ? a->fired : 0;
}

void gk__alerts_stop(gk__run_alerts *a)
{
    if (!a)
        return;
    gk_monitor_destroy(a->mon);
    gk_metrics_destroy(a->reg);
    free(a);
}
