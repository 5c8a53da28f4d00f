/* The monitor's derived gauges: what a report or a dashboard wants as a level rather than a
 * counter (the share of CPU busy, the busiest core, host memory used, the cores a process tree
 * keeps busy and its I/O rate, GPU memory used as a share), and, when the watched tree is a
 * launcher's, one set of series per rank (cores, resident memory, GPU memory by pid). Each is
 * computed from two consecutive readings, so the first tick publishes only the levels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "monitor_int.h"

#define PUB(name, help, labels, value) gk__monitor_publish(m, name, help, labels, value, 0)

static double busy(const gk_cpu_times *c)
{
    return c->user + c->nice + c->system + c->irq + c->softirq + c->steal;
}

/* The busy share between two readings of one CPU (or of all), NAN when no time passed. */
static double busy_ratio(const gk_cpu_times *now, const gk_cpu_times *before)
{
    double db = busy(now) - busy(before);
    double dt = db + (now->idle + now->iowait) - (before->idle + before->iowait);
    if (!(dt > 0) || db < 0)
        return NAN;
    return db / dt > 1 ? 1 : db / dt;
}

static void host(gk_monitor *m, const gk_host_sample *h, double dt)
{
    gk__derived *d = &m->derived;
    if ((h->valid & GK_HOST_CPU) && d->have_cpu && dt > 0) {
        PUB("gpukit_cpu_busy_ratio", "Share of all cores' time spent busy since the last tick.",
            NULL, busy_ratio(&h->cpu, &d->cpu));
        double maxr = NAN;
        for (unsigned i = 0; i < h->ncpus && i < d->ncpus; i++) {
            double r = busy_ratio(&h->per_cpu[i], &d->per_cpu[i]);
            if (isfinite(r) && !(r <= maxr))
                maxr = r;
        }
        PUB("gpukit_cpu_busiest_core_ratio",
            "Busy share of the busiest core since the last tick (a single-threaded bottleneck).",
            NULL, maxr);
    }
    if (h->valid & GK_HOST_CPU) {
        d->cpu = h->cpu;
        d->ncpus = h->ncpus < GK_HOST_MAX_CPUS ? h->ncpus : GK_HOST_MAX_CPUS;
        memcpy(d->per_cpu, h->per_cpu, d->ncpus * sizeof d->per_cpu[0]);
        d->have_cpu = 1;
    }
    if ((h->valid & GK_HOST_MEMORY) && h->mem_total > 0) {
        double used = (double)h->mem_total - (double)h->mem_available;
        PUB("gpukit_memory_used_bytes", "Host memory in use (total less available).", NULL, used);
        PUB("gpukit_memory_used_ratio", "Host memory in use as a share of the total.", NULL,
            used / (double)h->mem_total);
    }
}

static void tree(gk_monitor *m, const gk_proc_tree *t, double dt)
{
    gk__derived *d = &m->derived;
    char pid[16];
    snprintf(pid, sizeof pid, "%d", t->root_pid);
    const char *l[] = {"pid", pid, NULL};
    if (t->root_pid != d->tree_root) { /* another tree (gk_monitor_watch): start afresh */
        d->have_tree = 0;
        d->tree_cpu = 0;
        d->tree_root = t->root_pid;
    }
    double cpu = t->cpu_seconds; /* kept from dipping by gk__monitor_tree_cpu */
    if (d->have_tree && dt > 0) {
        PUB("gpukit_process_tree_cpu_cores",
            "Cores the watched tree kept busy since the last tick.", l, (cpu - d->tree_cpu) / dt);
        if (t->io_complete) {
            double rd = (double)t->read_bytes, wr = (double)t->write_bytes;
            PUB("gpukit_process_tree_read_bytes_per_second", "Storage read rate of the tree.", l,
                rd >= d->tree_read ? (rd - d->tree_read) / dt : 0);
            PUB("gpukit_process_tree_written_bytes_per_second", "Storage write rate of the tree.",
                l, wr >= d->tree_write ? (wr - d->tree_write) / dt : 0);
        }
    }
    d->tree_cpu = cpu;
    d->tree_read = (double)t->read_bytes;
    d->tree_write = (double)t->write_bytes;
    d->have_tree = 1;
}

/* The previous CPU seconds of a rank (0 and not found: a new rank). */
static gk__rank_prev *rank_prev(gk__derived *d, int rank)
{
    for (size_t i = 0; i < d->nranks; i++)
        if (d->ranks[i].rank == rank)
            return &d->ranks[i];
    if (d->nranks == GK__MAX_RANKS)
        return NULL;
    d->ranks[d->nranks] = (gk__rank_prev){.rank = rank, .cpu = -1};
    return &d->ranks[d->nranks++];
}

static void ranks(gk_monitor *m, const gk_proc_worker *w, size_t nw, unsigned ndev, double dt)
{
    for (size_t i = 0; i < nw; i++) {
        char rank[16];
        snprintf(rank, sizeof rank, "%d", w[i].rank);
        const char *l[] = {"rank", rank, NULL};
        gk__rank_prev *p = rank_prev(&m->derived, w[i].rank);
        if (p && p->cpu >= 0 && dt > 0)
            PUB("gpukit_rank_cpu_cores", "Cores a rank's processes kept busy since the last tick.",
                l, (w[i].cpu_seconds >= p->cpu ? w[i].cpu_seconds - p->cpu : 0) / dt);
        if (p)
            p->cpu = w[i].cpu_seconds;
        PUB("gpukit_rank_resident_memory_bytes", "Resident memory of a rank's processes.", l,
            (double)w[i].rss_bytes);
        for (unsigned g = 0; g < ndev; g++) {
            const gk_gpu_sample *s = &m->gpu[g];
            if (!((s->valid >> GK_GPU_PROCESSES) & 1u))
                continue;
            double used = 0;
            int found = 0;
            for (unsigned k = 0; k < s->nprocesses; k++)
                for (unsigned j = 0; j < w[i].npids; j++)
                    if ((int)s->processes[k].pid == w[i].pids[j] && s->processes[k].has_memory) {
                        used += (double)s->processes[k].used_memory;
                        found = 1;
                        break;
                    }
            if (!found)
                continue;
            char gpu[16];
            snprintf(gpu, sizeof gpu, "%u", s->index);
            const char *lg[] = {"rank", rank, "gpu", gpu, NULL};
            PUB("gpukit_rank_gpu_memory_bytes",
                "GPU memory of a rank's processes (NVML's process list, matched by pid).", lg,
                used);
        }
    }
}

void gk__monitor_tree_cpu(gk_monitor *m, gk_proc_tree *t)
{
    /* A child reaped during the read is missed by that read: keep the counter from dipping. */
    if (t->root_pid == m->derived.tree_root && t->cpu_seconds < m->derived.tree_cpu)
        t->cpu_seconds = m->derived.tree_cpu;
}

void gk__monitor_derived(gk_monitor *m, const gk_proc_tree *t, const gk_proc_worker *w, size_t nw,
                         unsigned ndev)
{
    gk__derived *d = &m->derived;
    double dt = d->mono_ns ? (double)(m->tick_mono_ns - d->mono_ns) / 1e9 : 0;
    if (m->host)
        host(m, m->host_sample, dt);
    if (t)
        tree(m, t, dt);
    ranks(m, w, nw, ndev, dt);
    for (unsigned g = 0; g < ndev; g++) {
        const gk_gpu_sample *s = &m->gpu[g];
        if (((s->valid >> GK_GPU_MEMORY) & 1u) && s->memory_total > 0) {
            char idx[16];
            snprintf(idx, sizeof idx, "%u", s->index);
            const char *l[] = {"gpu", idx, "uuid", s->uuid, NULL};
            PUB("gpukit_gpu_memory_used_ratio", "Device memory in use as a share of the total.", l,
                (double)s->memory_used / (double)s->memory_total);
        }
    }
    d->mono_ns = m->tick_mono_ns;
}
