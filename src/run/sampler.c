/* gk_run_execute's sampler over the monitor (see sampler_int.h): one tick per run sample, and the
 * gauges of that tick as named values. Counters stay in the monitor (the recording keeps the
 * derived rates: CPU busy shares, the tree's cores and I/O rates) but for the tree's CPU seconds;
 * constant series go to the metadata, the host's memory figures other than "used" are left out,
 * and per-process labels that never change in a run are dropped from the names. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gpukit/telemetry.h"
#include "run/sampler_int.h"

struct gk__sampler {
    gk_metrics *reg;
    gk_monitor *mon;
    gk_alert_fn alert_fn;
    void *alert_user;
};

void gk__values_add(gk__values *vals, const char *name, double v)
{
    if (vals->n >= GK__SAMPLER_MAX_VALUES)
        return;
    snprintf(vals->namebuf[vals->n], sizeof vals->namebuf[0], "%s", name);
    vals->names[vals->n] = vals->namebuf[vals->n];
    vals->v[vals->n] = v;
    vals->n++;
}

static void on_alert(void *user, const char *rule, const char *labels, gk_alert_state state,
                     double value)
{
    gk__sampler *s = user;
    if (s->alert_fn)
        s->alert_fn(s->alert_user, rule, labels, state, value);
}

/* Series that a run does not record: constants (in the metadata), the monitor's own figures,
 * and filesystem sizes. */
static int skipped(const char *name)
{
    static const char *const skip[] = {"gpukit_build_info",
                                       "gpukit_gpu_info",
                                       "gpukit_nvml_up",
                                       "gpukit_cpus_online",
                                       "gpukit_memory_total_bytes",
                                       "gpukit_gpu_memory_total_bytes",
                                       "gpukit_gpu_power_limit_watts",
                                       "gpukit_swap_total_bytes",
                                       "gpukit_filesystem_",
                                       "gpukit_sampler_",
                                       "process_",
                                       "gpukit_gpu_mig_mode",
                                       "gpukit_load",
                                       "gpukit_memory_available_bytes",
                                       "gpukit_memory_free_bytes",
                                       "gpukit_swap_free_bytes"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strncmp(name, skip[i], strlen(skip[i])) == 0)
            return 1;
    return 0;
}

/* The label text without the labels a run keeps in its metadata (uuid, the tree's pid). */
static void run_labels(const char *name, const char *in, char *out, size_t len)
{
    int tree = strncmp(name, "gpukit_process_tree_", 20) == 0;
    size_t n = 0;
    out[0] = '\0';
    const char *p = in;
    while (*p) {
        const char *end = p;
        int quoted = 0;
        while (*end && (quoted || *end != ',')) {
            if (*end == '"' && (end == p || end[-1] != '\\'))
                quoted = !quoted;
            end++;
        }
        size_t l = (size_t)(end - p);
        if (strncmp(p, "uuid=", 5) != 0 && (!tree || strncmp(p, "pid=", 4) != 0) &&
            n + l + 2 < len) {
            if (n)
                out[n++] = ',';
            memcpy(out + n, p, l);
            n += l;
            out[n] = '\0';
        }
        p = *end ? end + 1 : end;
    }
}

int gk__sampler_create(int want_gpu, const gk_logger *lg, gk__sampler **out, gk__sampler_info *info)
{
    *out = NULL;
    memset(info, 0, sizeof *info);
    gk__sampler *s = gk__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int rc = gk_metrics_create(NULL, &s->reg);
    if (rc)
        goto out_fail;
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    (void)gk_monitor_config_from_env(&mc); /* GK_NVML_LIBRARY, GK_PROC_ROOT: gk_run_execute
                                              reads the environment */
    mc.metrics = s->reg;
    mc.slow_every = 4;
    mc.retention = 3600;
    mc.gpu = want_gpu ? GK_MONITOR_GPU_AUTO : GK_MONITOR_GPU_OFF;
    if (lg)
        mc.logger = *lg;
    mc.logger.level = mc.logger.level > GK_LOG_ERROR ? GK_LOG_ERROR : mc.logger.level;
    mc.on_alert = on_alert;
    mc.alert_user = s;
    if ((rc = gk_monitor_create(&mc, &s->mon)) != 0)
        goto out_fail;
    info->cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    gk_host *h;
    gk_host_sample *hs = gk__malloc(sizeof *hs);
    if (hs && gk_host_open(NULL, &h) == 0) {
        if (gk_host_sample_read(h, GK_HOST_CPU | GK_HOST_MEMORY, hs) == 0 ||
            (hs->valid & GK_HOST_MEMORY)) {
            info->memory_total_bytes = (double)hs->mem_total;
            if (hs->ncpus)
                info->cores = (int)hs->ncpus;
        }
        gk_host_close(h);
    }
    free(hs);
    gk_nvml *nv = gk_monitor_nvml(s->mon);
    unsigned ngpus = nv ? gk_nvml_device_count(nv) : 0;
    if (!want_gpu) {
        snprintf(info->gpu_reason, sizeof info->gpu_reason, "turned off (--no-gpu)");
    } else if (!nv) {
        (void)gk_monitor_gpu_available(s->mon, info->gpu_reason, sizeof info->gpu_reason);
        char *tail = strstr(info->gpu_reason, "; GPU metrics are off"); /* the report says so */
        if (tail)
            *tail = '\0';
    } else if (ngpus == 0) {
        snprintf(info->gpu_reason, sizeof info->gpu_reason, "NVML found no GPU");
    } else {
        info->gpu_enabled = 1;
        gk_gpu_sample *g = gk__malloc(sizeof *g);
        for (unsigned d = 0; g && d < ngpus && d < GK__SAMPLER_MAX_DEVICES; d++) {
            if (gk_nvml_sample(nv, d, GK_TIER_FAST, g) != 0 && !g->name[0])
                continue;
            int k = info->ndevices++;
            snprintf(info->names[k], sizeof info->names[k], "%s", g->name);
            snprintf(info->uuids[k], sizeof info->uuids[k], "%s", g->uuid);
            info->devices[k] = (gk_recording_device){
                .index = d,
                .name = info->names[k],
                .uuid = info->uuids[k],
                .memory_total_bytes =
                    ((g->valid >> GK_GPU_MEMORY) & 1u) ? (double)g->memory_total : 0};
        }
        free(g);
    }
    *out = s;
    return 0;
out_fail:
    gk__sampler_destroy(s);
    return rc;
}

gk_monitor *gk__sampler_monitor(gk__sampler *s)
{
    return s->mon;
}

void gk__sampler_on_alert(gk__sampler *s, gk_alert_fn fn, void *user)
{
    s->alert_user = user;
    s->alert_fn = fn;
}

void gk__sampler_watch(gk__sampler *s, pid_t root)
{
    (void)gk_monitor_watch(s->mon, (int)root);
    (void)gk_monitor_tick(s->mon); /* the first reading, so the first sample has its rates */
}

/* The per-process GPU memory series (in the registry only: processes come and go), named with
 * their gpu, pid and rank labels. */
static int visit_process(void *user, const gk_metric_sample *smp)
{
    if (strcmp(smp->name, "gpukit_gpu_process_memory_used_bytes") != 0)
        return 0;
    char name[128];
    size_t n = (size_t)snprintf(name, sizeof name, "%s{", smp->name);
    for (size_t i = 0; i < smp->nlabels && n < sizeof name; i++) {
        const char *k = smp->label_names[i], *v = smp->label_values[i];
        if (!v[0] || (strcmp(k, "gpu") && strcmp(k, "pid") && strcmp(k, "rank")))
            continue;
        n += (size_t)snprintf(name + n, sizeof name - n, "%s%s=\"%s\"",
                              name[n - 1] == '{' ? "" : ",", k, v);
    }
    if (n + 2 > sizeof name)
        return 0;
    snprintf(name + n, sizeof name - n, "}");
    gk__values_add(user, name, smp->value);
    return 0;
}

void gk__sampler_read(gk__sampler *s, gk__values *out)
{
    out->n = 0;
    if (gk_monitor_tick(s->mon) != 0)
        return;
    size_t n = gk_monitor_series_count(s->mon);
    int64_t newest = 0;
    gk_series_point p;
    size_t got;
    for (size_t i = 0; i < n; i++)
        if (gk_monitor_read(s->mon, i, &p, 1, &got) == 0 && got && p.t_ns > newest)
            newest = p.t_ns;
    for (size_t i = 0; i < n; i++) {
        gk_series_info info;
        if (gk_monitor_series_info(s->mon, i, &info) != 0 || skipped(info.name) ||
            (info.counter && strcmp(info.name, "gpukit_process_tree_cpu_seconds_total") != 0))
            continue; /* counters are kept as rates, but for the tree's CPU seconds */
        if (gk_monitor_read(s->mon, i, &p, 1, &got) != 0 || !got || p.t_ns != newest)
            continue; /* not read in this tick (a slow-tier field, a device that answered no) */
        char labels[256], name[128];
        run_labels(info.name, info.labels, labels, sizeof labels);
        if (labels[0])
            snprintf(name, sizeof name, "%s{%s}", info.name, labels);
        else
            snprintf(name, sizeof name, "%s", info.name);
        gk__values_add(out, name, p.value);
    }
    (void)gk_metrics_foreach(s->reg, visit_process, out);
}

void gk__sampler_destroy(gk__sampler *s)
{
    if (!s)
        return;
    gk_monitor_destroy(s->mon);
    gk_metrics_destroy(s->reg);
    free(s);
}
