/* The monitor's per-process GPU memory: one gpukit_gpu_process_memory_used_bytes series per
 * process in NVML's process lists, labelled by GPU, pid, the launcher's rank and the container
 * where they can be known. The series live in the registry only (not in the monitor's history):
 * processes come and go, so a process that left NVML's list has its series removed. At most
 * cfg.max_process_series are exported; the others are counted in
 * gpukit_gpu_process_series_dropped_total, once per process while it lives. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "monitor_int.h"

#define MAX_DROPPED_TRACKED 4096 /* processes past the cap remembered so each counts once */

struct gk__proc_entry {
    unsigned gpu;
    uint32_t pid;
    gk_metric *metric; /* NULL: past the cap (counted as dropped) */
    double bytes;      /* this tick's figure */
    int seen;          /* in this tick's lists */
    int counted;       /* counted as dropped */
};

/* The short id (12 hex digits) of the container a process runs in, from the 64-hex-digit id in
 * its cgroup path (Docker, containerd, CRI-O, Podman and Kubernetes all put it there); "" when
 * none. */
static void container_of(const char *proc_root, uint32_t pid, char *out, size_t len)
{
    out[0] = '\0';
    char path[512];
    snprintf(path, sizeof path, "%s/%u/cgroup", proc_root, pid);
    FILE *f = gk__fopen(path, "re");
    if (!f)
        return;
    char line[1024];
    while (!out[0] && fgets(line, sizeof line, f)) {
        size_t run = 0;
        for (const char *p = line;; p++) {
            if (isxdigit((unsigned char)*p) && !isupper((unsigned char)*p)) {
                run++;
                continue;
            }
            if (run == 64) {
                snprintf(out, len, "%.12s", p - 64);
                break;
            }
            run = 0;
            if (!*p)
                break;
        }
    }
    fclose(f);
}

/* The rank of NVML's pid: a watched worker's (pids with their NSpid), else, when this monitor
 * shares the GPU driver's pid namespace, the process's own environment. */
static void rank_of(gk_monitor *m, uint32_t pid, const gk_proc_worker *w, size_t nw, char *out,
                    size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < nw; i++)
        for (unsigned j = 0; j < w[i].npids; j++)
            if ((uint32_t)w[i].pids[j] == pid) {
                snprintf(out, len, "%d", w[i].rank);
                return;
            }
    int rank = -1;
    if (m->host && m->host_pidns && gk_host_proc_rank(m->host, (int)pid, &rank, NULL) == 0 &&
        rank >= 0)
        snprintf(out, len, "%d", rank);
}

static gk__proc_entry *entry_of(gk_monitor *m, unsigned gpu, uint32_t pid)
{
    for (size_t i = 0; i < m->nprocs; i++)
        if (m->procs[i].gpu == gpu && m->procs[i].pid == pid)
            return &m->procs[i];
    return NULL;
}

/* Registers the series of one process; 0 or the registry's error. */
static int export(gk_monitor *m, gk__proc_entry *e, const gk_gpu_sample *g, const gk_proc_worker *w,
                  size_t nw)
{
    char gpu[16], pid[16], rank[16], container[16];
    snprintf(gpu, sizeof gpu, "%u", g->index);
    snprintf(pid, sizeof pid, "%u", e->pid);
    rank_of(m, e->pid, w, nw, rank, sizeof rank);
    container[0] = '\0';
    if (m->host && m->host_pidns)
        container_of(m->cfg.proc_root ? m->cfg.proc_root : "/proc", e->pid, container,
                     sizeof container);
    const char *l[] = {"gpu",  gpu,  "uuid",      g->uuid,   "pid", pid,
                       "rank", rank, "container", container, NULL};
    return gk_metrics_gauge(m->metrics, "gpukit_gpu_process_memory_used_bytes",
                            "Device memory of one process on a GPU (NVML's process list).", l,
                            &e->metric);
}

void gk__monitor_processes(gk_monitor *m, unsigned ndev, const gk_proc_worker *w, size_t nw)
{
    if (!m->procs)
        return;
    for (size_t i = 0; i < m->nprocs; i++)
        m->procs[i].seen = 0;
    for (unsigned d = 0; d < ndev; d++) {
        const gk_gpu_sample *g = &m->gpu[d];
        if (!((g->valid >> GK_GPU_PROCESSES) & 1u)) {
            /* The list is read on slow ticks only (and a GPU may fail one read): keep what the
             * last read found, unless the GPU is lost. */
            for (size_t i = 0; i < m->nprocs; i++)
                if (m->procs[i].gpu == d && !g->lost)
                    m->procs[i].seen = 1;
            continue;
        }
        for (unsigned k = 0; k < g->nprocesses && k < GK_GPU_MAX_PROCESSES; k++) {
            const gk_gpu_process *p = &g->processes[k];
            if (!p->has_memory)
                continue;
            gk__proc_entry *e = entry_of(m, d, p->pid);
            if (!e && m->nprocs == m->procs_cap) {
                gk_counter_add(m->procs_dropped, 1); /* too many to remember: once per tick */
                continue;
            }
            if (!e) {
                e = &m->procs[m->nprocs++];
                *e = (gk__proc_entry){.gpu = d, .pid = p->pid};
            }
            e->seen = 1;
            e->bytes = (double)p->used_memory;
        }
    }
    /* Processes that left the lists (or whose GPU is lost) go first, so their places are free
     * for processes waiting past the cap. */
    size_t keep = 0;
    for (size_t i = 0; i < m->nprocs; i++) {
        gk__proc_entry *e = &m->procs[i];
        if (!e->seen) {
            if (e->metric) {
                (void)gk_metrics_remove(m->metrics, e->metric);
                m->nexported--;
            }
            continue;
        }
        m->procs[keep++] = *e;
    }
    m->nprocs = keep;
    for (size_t i = 0; i < m->nprocs; i++) {
        gk__proc_entry *e = &m->procs[i];
        if (!e->metric && m->nexported < m->cfg.max_process_series &&
            export(m, e, &m->gpu[e->gpu], w, nw) == 0)
            m->nexported++;
        if (e->metric) {
            gk_gauge_set(e->metric, e->bytes);
        } else if (!e->counted) {
            gk_counter_add(m->procs_dropped, 1); /* counted once, while it waits */
            e->counted = 1;
        }
    }
}

int gk__monitor_processes_init(gk_monitor *m)
{
    if (!m->gpu)
        return 0;
    m->procs_cap = (size_t)m->cfg.max_process_series + MAX_DROPPED_TRACKED;
    m->procs = gk__calloc(m->procs_cap, sizeof *m->procs);
    if (!m->procs)
        return -ENOMEM;
    int rc = gk_metrics_counter(m->metrics, "gpukit_gpu_process_series_dropped_total",
                                "GPU processes not exported because max_process_series was "
                                "reached (each counted once while it runs).",
                                NULL, &m->procs_dropped);
    if (rc)
        m->procs_dropped = NULL; /* a clash in a shared registry: keep exporting */
    /* Whether NVML's pids (the driver's, the host's namespace) are this monitor's /proc pids. */
    m->host_pidns = 1;
    char path[300];
    snprintf(path, sizeof path, "%s/self/status", m->cfg.proc_root ? m->cfg.proc_root : "/proc");
    FILE *f = gk__fopen(path, "re");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "NSpid:", 6) == 0) {
                char *p = line + 6;
                strtol(p, &p, 10);
                m->host_pidns = strtol(p, NULL, 10) == 0; /* a second pid: a nested namespace */
                break;
            }
        fclose(f);
    }
    return 0;
}

void gk__monitor_processes_free(gk_monitor *m)
{
    for (size_t i = 0; i < m->nprocs; i++)
        if (m->procs[i].metric)
            (void)gk_metrics_remove(m->metrics, m->procs[i].metric);
    free(m->procs);
    m->procs = NULL;
    m->nprocs = 0;
}
