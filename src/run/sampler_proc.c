/* The sampler's readers: host CPU and memory from /proc/stat and /proc/meminfo, and the process
 * tree rooted at the command from /proc/<pid>/stat and /proc/<pid>/io (CPU seconds, RSS,
 * threads, processes, storage I/O). Rates are deltas between consecutive readings. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run/sampler_int.h"

#define MAX_CORES 1024

typedef struct cpu_times {
    unsigned long long busy, total;
} cpu_times;

struct gk__sampler {
    gk_logger logger;
    long ticks, page;
    int ncores;
    cpu_times prev_all, prev_core[MAX_CORES];
    int have_prev;
    double prev_t, prev_tree_cpu, prev_read, prev_write;
    pid_t *pids, *ppids;
    size_t cap;
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

/* Reads /proc/stat: the "cpu" line into *all, "cpuN" lines into core[]; returns cores read. */
static int read_stat(cpu_times *all, cpu_times *core, int maxcores)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "cpu", 3) != 0)
            break;
        unsigned long long v[10] = {0};
        char *p = line + 3;
        int idx = -1;
        if (isdigit((unsigned char)*p))
            idx = (int)strtol(p, &p, 10);
        for (int i = 0; i < 10; i++)
            v[i] = strtoull(p, &p, 10);
        /* user nice system idle iowait irq softirq steal guest guest_nice; guests are already
         * in user and nice */
        unsigned long long total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        cpu_times t = {total - v[3] - v[4], total};
        if (idx < 0)
            *all = t;
        else if (idx < maxcores && n < maxcores)
            core[n++] = t;
    }
    fclose(f);
    return n;
}

static double ratio(cpu_times now, cpu_times before)
{
    if (now.total <= before.total || now.busy < before.busy)
        return NAN;
    double r = (double)(now.busy - before.busy) / (double)(now.total - before.total);
    return r > 1 ? 1 : r;
}

static int read_meminfo(double *total, double *avail)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return -1;
    char line[256];
    unsigned long long t = 0, a = 0, fr = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            t = kb;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            a = kb;
        else if (sscanf(line, "MemFree: %llu kB", &kb) == 1)
            fr = kb;
    }
    fclose(f);
    *total = (double)t * 1024;
    *avail = (double)(a ? a : fr) * 1024;
    return t ? 0 : -1;
}

/* One process's /proc/<pid>/stat: parent, CPU ticks (self + waited-for children), threads, RSS
 * pages. Returns 0 or -1 (gone, unreadable). */
typedef struct proc_stat {
    pid_t ppid;
    unsigned long long ticks;
    long threads, rss_pages;
} proc_stat;

static int read_proc_stat(pid_t pid, proc_stat *ps)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
    if (!p)
        return -1;
    p++;
    /* fields from 3: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss */
    char state;
    int ppid;
    unsigned long long ut, st, cut, cst, skip;
    long threads, rss;
    int got = sscanf(p,
                     " %c %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu "
                     "%llu %llu %ld %llu %llu %llu %ld",
                     &state, &ppid, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip,
                     &ut, &st, &cut, &cst, &skip, &skip, &threads, &skip, &skip, &skip, &rss);
    if (got != 22)
        return -1;
    ps->ppid = ppid;
    ps->ticks = ut + st + cut + cst;
    ps->threads = threads;
    ps->rss_pages = rss;
    return 0;
}

static void read_proc_io(pid_t pid, double *rd, double *wr, int *ok)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) {
        *ok = 0;
        return;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "read_bytes: %llu", &v) == 1)
            *rd += (double)v;
        else if (sscanf(line, "write_bytes: %llu", &v) == 1)
            *wr += (double)v;
    }
    fclose(f);
}

/* Lists every (pid, ppid) on the machine into s->pids/ppids; returns the count. */
static size_t list_processes(gk__sampler *s)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        proc_stat ps;
        if (read_proc_stat(pid, &ps))
            continue;
        if (n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 512;
            pid_t *a = realloc(s->pids, cap * sizeof *a);
            if (!a)
                break;
            s->pids = a;
            pid_t *b = realloc(s->ppids, cap * sizeof *b);
            if (!b)
                break;
            s->ppids = b;
            s->cap = cap;
        }
        s->pids[n] = pid;
        s->ppids[n] = ps.ppid;
        n++;
    }
    closedir(d);
    return n;
}

static void read_tree(gk__sampler *s, pid_t root, double t, gk__values *out)
{
    size_t n = list_processes(s);
    /* Breadth-first from root over the parent links: tree[] holds the members found so far. */
    pid_t *tree = malloc((n + 1) * sizeof *tree);
    if (!tree)
        return;
    size_t nt = 0;
    tree[nt++] = root;
    for (size_t head = 0; head < nt; head++) {
        for (size_t i = 0; i < n; i++) {
            if (s->ppids[i] == tree[head] && s->pids[i] != root)
                tree[nt++] = s->pids[i];
        }
    }
    unsigned long long ticks = 0;
    double rss = 0, threads = 0, rd = 0, wr = 0;
    int procs = 0, io_ok = 1;
    for (size_t i = 0; i < nt; i++) {
        proc_stat ps;
        if (read_proc_stat(tree[i], &ps))
            continue;
        procs++;
        ticks += ps.ticks;
        threads += (double)ps.threads;
        rss += (double)ps.rss_pages * (double)s->page;
        read_proc_io(tree[i], &rd, &wr, &io_ok);
    }
    free(tree);
    double cpu = (double)ticks / (double)s->ticks;
    double dt = t - s->prev_t;
    gk__values_add(out, "tree.processes", procs);
    if (procs == 0)
        return;
    gk__values_add(out, "tree.cpu_seconds", cpu);
    if (dt > 0) {
        double rate = (cpu - s->prev_tree_cpu) / dt;
        gk__values_add(out, "tree.cpu_cores", rate < 0 ? 0 : rate);
    }
    gk__values_add(out, "tree.rss_bytes", rss);
    gk__values_add(out, "tree.threads", threads);
    if (io_ok && dt > 0) {
        gk__values_add(out, "tree.read_bytes_per_second",
                       rd >= s->prev_read ? (rd - s->prev_read) / dt : 0);
        gk__values_add(out, "tree.write_bytes_per_second",
                       wr >= s->prev_write ? (wr - s->prev_write) / dt : 0);
    }
    s->prev_tree_cpu = cpu;
    if (io_ok) {
        s->prev_read = rd;
        s->prev_write = wr;
    }
}

static void read_host(gk__sampler *s, gk__values *out)
{
    cpu_times all, core[MAX_CORES];
    int n = read_stat(&all, core, MAX_CORES);
    if (n >= 0 && s->have_prev) {
        gk__values_add(out, "host.cpu_ratio", ratio(all, s->prev_all));
        double maxr = NAN;
        for (int i = 0; i < n && i < s->ncores; i++) {
            double r = ratio(core[i], s->prev_core[i]);
            if (isfinite(r) && !(r <= maxr))
                maxr = r;
        }
        gk__values_add(out, "host.cpu_max_core_ratio", maxr);
    }
    if (n >= 0) {
        s->prev_all = all;
        memcpy(s->prev_core, core, (size_t)n * sizeof core[0]);
        s->ncores = n;
        s->have_prev = 1;
    }
    double total, avail;
    if (read_meminfo(&total, &avail) == 0) {
        gk__values_add(out, "host.memory_used_bytes", total - avail);
        gk__values_add(out, "host.memory_used_ratio", (total - avail) / total);
    }
}

int gk__sampler_create(int want_gpu, const gk_logger *lg, gk__sampler **out, gk__sampler_info *info)
{
    *out = NULL;
    memset(info, 0, sizeof *info);
    gk__sampler *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    if (lg)
        s->logger = *lg;
    else
        gk_logger_default(&s->logger);
    s->ticks = sysconf(_SC_CLK_TCK);
    s->page = sysconf(_SC_PAGESIZE);
    if (s->ticks <= 0)
        s->ticks = 100;
    if (s->page <= 0)
        s->page = 4096;
    info->cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    double total = 0, avail = 0;
    if (read_meminfo(&total, &avail) == 0)
        info->memory_total_bytes = total;
    info->gpu_enabled = 0;
    snprintf(info->gpu_reason, sizeof info->gpu_reason, "%s",
             want_gpu ? "this gpukit build reads no GPU telemetry (NVML reader not built in)"
                      : "turned off (--no-gpu)");
    *out = s;
    return 0;
}

void gk__sampler_start(gk__sampler *s, double t_mono)
{
    cpu_times all, core[MAX_CORES];
    int n = read_stat(&all, core, MAX_CORES);
    if (n >= 0) {
        s->prev_all = all;
        memcpy(s->prev_core, core, (size_t)n * sizeof core[0]);
        s->ncores = n;
        s->have_prev = 1;
    }
    s->prev_t = t_mono;
    s->prev_tree_cpu = 0;
    s->prev_read = s->prev_write = 0;
}

void gk__sampler_read(gk__sampler *s, pid_t root, double t_mono, gk__values *out)
{
    out->n = 0;
    read_host(s, out);
    read_tree(s, root, t_mono, out);
    s->prev_t = t_mono;
}

void gk__sampler_destroy(gk__sampler *s)
{
    if (!s)
        return;
    free(s->pids);
    free(s->ppids);
    free(s);
}
