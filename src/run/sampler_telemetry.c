/* The sampler's readers, over gpukit's telemetry: the host (CPU, busiest core, memory) and the
 * command's process tree from the /proc reader, and each GPU from NVML when it is available
 * (fast metrics every sample; processes, energy and the power limit every few samples). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gpukit/telemetry.h"
#include "run/sampler_int.h"

#define SLOW_EVERY 4 /* samples between slow-tier GPU reads */

struct gk__sampler {
    gk_logger logger;
    gk_host *host;
    gk_nvml *nvml;
    unsigned ngpus;
    gk_host_sample *prev, *cur; /* two host readings, swapped */
    int have_prev;
    double prev_t, prev_tree_cpu, prev_read, prev_write;
    unsigned long ticks;
    gk_gpu_sample gpu;
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

static double busy(const gk_cpu_times *c)
{
    return c->user + c->nice + c->system + c->irq + c->softirq + c->steal;
}

static double ratio(const gk_cpu_times *now, const gk_cpu_times *before)
{
    double db = busy(now) - busy(before);
    double dt = db + (now->idle + now->iowait) - (before->idle + before->iowait);
    if (!(dt > 0) || db < 0)
        return NAN;
    return db / dt > 1 ? 1 : db / dt;
}

static void read_host(gk__sampler *s, gk__values *out)
{
    gk_host_sample *cur = s->cur;
    gk_host_sample_read(s->host, GK_HOST_CPU | GK_HOST_MEMORY, cur);
    if ((cur->valid & GK_HOST_CPU) && s->have_prev) {
        gk__values_add(out, "host.cpu_ratio", ratio(&cur->cpu, &s->prev->cpu));
        double maxr = NAN;
        for (unsigned i = 0; i < cur->ncpus && i < s->prev->ncpus; i++) {
            double r = ratio(&cur->per_cpu[i], &s->prev->per_cpu[i]);
            if (isfinite(r) && !(r <= maxr))
                maxr = r;
        }
        gk__values_add(out, "host.cpu_max_core_ratio", maxr);
    }
    if ((cur->valid & GK_HOST_MEMORY) && cur->mem_total > 0) {
        double used = (double)cur->mem_total - (double)cur->mem_available;
        gk__values_add(out, "host.memory_used_bytes", used);
        gk__values_add(out, "host.memory_used_ratio", used / (double)cur->mem_total);
    }
    if (cur->valid & GK_HOST_CPU) {
        s->cur = s->prev;
        s->prev = cur;
        s->have_prev = 1;
    }
}

static void read_tree(gk__sampler *s, pid_t root, double t, gk__values *out)
{
    gk_proc_tree tree;
    if (gk_host_proc_tree(s->host, (int)root, &tree) != 0) {
        gk__values_add(out, "tree.processes", 0);
        return;
    }
    double dt = t - s->prev_t;
    /* A child reaped while the tree is being read is missed by that one read (it left the list,
     * and its parent was read before its time moved there): the recorded counter keeps its last
     * value instead of dipping. Reaped children's time is otherwise in the sum (cutime). */
    if (tree.cpu_seconds < s->prev_tree_cpu)
        tree.cpu_seconds = s->prev_tree_cpu;
    gk__values_add(out, "tree.processes", tree.nprocs);
    gk__values_add(out, "tree.cpu_seconds", tree.cpu_seconds);
    if (dt > 0)
        gk__values_add(out, "tree.cpu_cores", (tree.cpu_seconds - s->prev_tree_cpu) / dt);
    gk__values_add(out, "tree.rss_bytes", (double)tree.rss_bytes);
    if (tree.pss_complete)
        gk__values_add(out, "tree.pss_bytes", (double)tree.pss_bytes);
    gk__values_add(out, "tree.threads", tree.threads);
    double rd = (double)tree.read_bytes, wr = (double)tree.write_bytes;
    if (tree.io_complete && dt > 0) {
        gk__values_add(out, "tree.read_bytes_per_second",
                       rd >= s->prev_read ? (rd - s->prev_read) / dt : 0);
        gk__values_add(out, "tree.write_bytes_per_second",
                       wr >= s->prev_write ? (wr - s->prev_write) / dt : 0);
    }
    s->prev_tree_cpu = tree.cpu_seconds;
    s->prev_read = rd;
    s->prev_write = wr;
}

static void add_gpu(gk__values *out, unsigned dev, const char *what, double v)
{
    char name[64];
    snprintf(name, sizeof name, "gpu.%u.%s", dev, what);
    gk__values_add(out, name, v);
}

static void read_gpus(gk__sampler *s, gk__values *out)
{
    unsigned tiers = GK_TIER_FAST | (s->ticks % SLOW_EVERY == 0 ? GK_TIER_SLOW : 0);
    gk_gpu_sample *g = &s->gpu;
    for (unsigned d = 0; d < s->ngpus; d++) {
        if (gk_nvml_sample(s->nvml, d, tiers, g) != 0)
            continue;
#define HAS(f) ((g->valid >> GK_GPU_##f) & 1u)
        if (HAS(UTILIZATION)) {
            add_gpu(out, d, "utilization_ratio", g->utilization_gpu);
            add_gpu(out, d, "memory_utilization_ratio", g->utilization_memory);
        }
        if (HAS(MEMORY)) {
            add_gpu(out, d, "memory_used_bytes", (double)g->memory_used);
            add_gpu(out, d, "memory_reserved_bytes", (double)g->memory_reserved);
            if (g->memory_total > 0)
                add_gpu(out, d, "memory_used_ratio",
                        (double)g->memory_used / (double)g->memory_total);
        }
        if (HAS(TEMPERATURE))
            add_gpu(out, d, "temperature_celsius", g->temperature_celsius);
        if (HAS(POWER))
            add_gpu(out, d, "power_watts", g->power_watts);
        if (HAS(POWER_LIMIT))
            add_gpu(out, d, "power_limit_watts", g->power_limit_watts);
        if (HAS(ENERGY))
            add_gpu(out, d, "energy_joules", g->energy_joules);
        if (HAS(CLOCK_SM))
            add_gpu(out, d, "clock_sm_hz", g->clock_sm_hz);
        if (HAS(CLOCK_MEM))
            add_gpu(out, d, "clock_mem_hz", g->clock_mem_hz);
        if (HAS(CLOCK_EVENTS))
            add_gpu(out, d, "clock_event_reasons", (double)g->clock_event_reasons);
        if (HAS(FAN))
            add_gpu(out, d, "fan_ratio", g->fan_ratio);
        if (HAS(PROCESSES)) {
            for (unsigned p = 0; p < g->nprocesses; p++) {
                if (!g->processes[p].has_memory)
                    continue;
                char what[48];
                snprintf(what, sizeof what, "process.%u.memory_bytes", g->processes[p].pid);
                add_gpu(out, d, what, (double)g->processes[p].used_memory);
            }
        }
#undef HAS
    }
}

static void open_gpus(gk__sampler *s, gk__sampler_info *info)
{
    gk_nvml_config nc;
    gk_nvml_config_default(&nc);
    (void)gk_nvml_config_from_env(&nc); /* GK_NVML_LIBRARY; gk_run_execute reads the environment */
    nc.logger = s->logger;
    gk_nvml_info ni;
    if (gk_nvml_open(&nc, &s->nvml, &ni) != 0) {
        snprintf(info->gpu_reason, sizeof info->gpu_reason, "%s",
                 ni.reason[0] ? ni.reason : "NVML could not be opened");
        /* the report already says "GPU metrics off: " */
        char *tail = strstr(info->gpu_reason, "; GPU metrics are off");
        if (tail)
            *tail = '\0';
        return;
    }
    s->ngpus = gk_nvml_device_count(s->nvml);
    if (s->ngpus == 0) {
        snprintf(info->gpu_reason, sizeof info->gpu_reason, "NVML found no GPU");
        gk_nvml_close(s->nvml);
        s->nvml = NULL;
        return;
    }
    info->gpu_enabled = 1;
    for (unsigned d = 0; d < s->ngpus && d < GK__SAMPLER_MAX_DEVICES; d++) {
        gk_gpu_sample *g = &s->gpu;
        if (gk_nvml_sample(s->nvml, d, GK_TIER_FAST, g) != 0 && !g->name[0])
            continue;
        int k = info->ndevices++;
        snprintf(info->names[k], sizeof info->names[k], "%s", g->name);
        snprintf(info->uuids[k], sizeof info->uuids[k], "%s", g->uuid);
        info->devices[k] = (gk_recording_device){
            .index = d,
            .name = info->names[k],
            .uuid = info->uuids[k],
            .memory_total_bytes = ((g->valid >> GK_GPU_MEMORY) & 1u) ? (double)g->memory_total : 0};
    }
}

int gk__sampler_create(int want_gpu, const gk_logger *lg, gk__sampler **out, gk__sampler_info *info)
{
    *out = NULL;
    memset(info, 0, sizeof *info);
    gk__sampler *s = gk__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->prev = gk__calloc(1, sizeof *s->prev);
    s->cur = gk__calloc(1, sizeof *s->cur);
    if (!s->prev || !s->cur) {
        gk__sampler_destroy(s);
        return -ENOMEM;
    }
    if (lg)
        s->logger = *lg;
    else
        gk_logger_default(&s->logger);
    int rc = gk_host_open(NULL, &s->host);
    if (rc) {
        gk__sampler_destroy(s);
        return rc;
    }
    gk_host_sample_read(s->host, GK_HOST_CPU | GK_HOST_MEMORY, s->cur);
    info->cores = (int)s->cur->ncpus;
    info->memory_total_bytes = (double)s->cur->mem_total;
    if (want_gpu)
        open_gpus(s, info);
    else
        snprintf(info->gpu_reason, sizeof info->gpu_reason, "turned off (--no-gpu)");
    *out = s;
    return 0;
}

void gk__sampler_start(gk__sampler *s, double t_mono)
{
    s->have_prev = 0;
    gk_host_sample_read(s->host, GK_HOST_CPU, s->prev);
    s->have_prev = (s->prev->valid & GK_HOST_CPU) != 0;
    s->prev_t = t_mono;
    s->prev_tree_cpu = 0;
    s->prev_read = s->prev_write = 0;
    s->ticks = 0;
}

void gk__sampler_read(gk__sampler *s, pid_t root, double t_mono, gk__values *out)
{
    out->n = 0;
    read_host(s, out);
    read_tree(s, root, t_mono, out);
    if (s->nvml)
        read_gpus(s, out);
    s->prev_t = t_mono;
    s->ticks++;
}

void gk__sampler_destroy(gk__sampler *s)
{
    if (!s)
        return;
    gk_nvml_close(s->nvml);
    gk_host_close(s->host);
    free(s->prev);
    free(s->cur);
    free(s);
}
