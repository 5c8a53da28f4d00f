/* The CPUs this process may actually use: the CPUs in its affinity mask (sched_getaffinity),
 * capped by the CPU quota of its cgroup and of every cgroup above it (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us / cpu.cfs_period_us). The loader sizes `workers = -1` and decides whether its
 * threads may spin from this figure. */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "loader/loader_int.h"

/* Reads a small text file into buf; returns the bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
    int fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, len - 1);
    close(fd);
    if (got < 0)
        return -1;
    buf[got] = '\0';
    return got;
}

/* CPUs allowed by one cgroup directory's quota (0: no limit there, or unreadable). */
static double quota_in(const char *dir, int v2)
{
    char path[4200], buf[128];
    if (v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (read_small(path, buf, sizeof buf) <= 0 || strncmp(buf, "max", 3) == 0)
            return 0;
        double q = 0, p = 0;
        if (sscanf(buf, "%lf %lf", &q, &p) != 2 || q <= 0 || p <= 0)
            return 0;
        return q / p;
    }
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (read_small(path, buf, sizeof buf) <= 0)
        return 0;
    double q = strtod(buf, NULL);
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    if (q <= 0 || read_small(path, buf, sizeof buf) <= 0)
        return 0;
    double p = strtod(buf, NULL);
    return p > 0 ? q / p : 0;
}

/* The tightest quota from `root`/`rel` up to `root` (0: none). */
static double quota_up(const char *root, const char *rel, int v2)
{
    char dir[4096];
    int n = snprintf(dir, sizeof dir, "%s%s", root, rel);
    if (n < 0 || (size_t)n >= sizeof dir)
        return 0;
    size_t rootlen = strlen(root);
    double best = 0;
    for (;;) {
        double q = quota_in(dir, v2);
        if (q > 0 && (best == 0 || q < best))
            best = q;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < rootlen)
            break;
        *slash = '\0';
    }
    return best;
}

/* The tightest CPU quota, in CPUs, of the cgroups listed in `cgroup_file` (/proc/self/cgroup's
 * format) under the cgroup mount `fs_root` (0: no quota found). */
static double cgroup_quota(const char *cgroup_file, const char *fs_root)
{
    char buf[4096];
    if (read_small(cgroup_file, buf, sizeof buf) <= 0)
        return 0;
    double best = 0;
    char *lines = NULL;
    for (char *line = strtok_r(buf, "\n", &lines); line; line = strtok_r(NULL, "\n", &lines)) {
        /* "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1) */
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrl = c1 + 1, *rel = c2 + 1;
        if (strcmp(rel, "/") == 0)
            rel = "";
        double q = 0;
        if (!*ctrl) {
            q = quota_up(fs_root, rel, 1);
        } else {
            int has_cpu = 0;
            char list[256];
            snprintf(list, sizeof list, "%s", ctrl);
            char *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
                has_cpu |= strcmp(t, "cpu") == 0;
            if (!has_cpu)
                continue;
            char root[4400];
            snprintf(root, sizeof root, "%s/%s", fs_root, ctrl);
            q = quota_up(root, rel, 0);
            if (q == 0) {
                snprintf(root, sizeof root, "%s/cpu", fs_root);
                q = quota_up(root, rel, 0);
            }
        }
        if (q > 0 && (best == 0 || q < best))
            best = q;
    }
    return best;
}

int gk__cpus_limit(const char *cgroup_file, const char *fs_root, int affinity_cpus)
{
    int n = affinity_cpus > 0 ? affinity_cpus : 1;
    double q = cgroup_quota(cgroup_file, fs_root);
    if (q > 0) {
        int by_quota = (int)q; /* whole CPUs: a quota of 1.5 gives no second thread a CPU */
        if (by_quota < 1)
            by_quota = 1;
        if (by_quota < n)
            n = by_quota;
    }
    return n;
}

int gk__usable_cpus(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
    }
    return gk__cpus_limit("/proc/self/cgroup", "/sys/fs/cgroup", n);
}
