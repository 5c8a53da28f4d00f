/* The process tree of a pid: scans proc_root/[0-9]* once for (pid, ppid), finds every
 * descendant of the root, and sums CPU time (own + reaped children), RSS, PSS (smaps_rollup, where readable), threads
 * and storage I/O (/proc/PID/io, where readable). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "host_int.h"

typedef struct proc_entry {
    int pid, ppid;
    int in_tree;
} proc_entry;

/* The first entry of v[0..n) (sorted by ppid) whose parent is `parent`, or n. */
static size_t first_child(const proc_entry *v, size_t n, int parent)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid].ppid < parent)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The fields of /proc/PID/stat gpukit uses. */
typedef struct proc_stat {
    int ppid;
    char comm[64];
    unsigned long long utime, stime;
    long long cutime, cstime; /* CPU of the children it has waited for (reaped) */
    long threads;
    long long rss_pages;
} proc_stat;

static int parse_stat(const char *text, proc_stat *st)
{
    const char *open = strchr(text, '(');
    const char *close = strrchr(text, ')'); /* comm may itself hold parentheses */
    if (!open || !close || close < open)
        return GK_ECORRUPT;
    size_t cl = (size_t)(close - open - 1);
    if (cl >= sizeof st->comm)
        cl = sizeof st->comm - 1;
    memcpy(st->comm, open + 1, cl);
    st->comm[cl] = '\0';
    /* After ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss */
    char state;
    long long skip;
    int n = sscanf(close + 1,
                   " %c %d %lld %lld %lld %lld %lld %lld %lld %lld %lld %llu %llu %lld %lld %lld "
                   "%lld %ld %lld %lld %lld %lld",
                   &state, &st->ppid, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip,
                   &st->utime, &st->stime, &st->cutime, &st->cstime, &skip, &skip, &st->threads,
                   &skip, &skip, &skip, &st->rss_pages);
    return n == 22 ? 0 : GK_ECORRUPT;
}

static int read_stat(gk_host *h, int pid, proc_stat *st)
{
    char rel[64], buf[1024];
    snprintf(rel, sizeof rel, "%d/stat", pid);
    long n = gk__host_read_into(h, rel, buf, sizeof buf);
    if (n < 0)
        return (int)n;
    return parse_stat(buf, st);
}

/* Value of "key" (with its colon) in a "Key: value" file, or -1 when absent. */
static long long field_value(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, key, kl) == 0)
            return strtoll(line + kl, NULL, 10);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

static int by_ppid(const void *a, const void *b)
{
    const proc_entry *x = a, *y = b;
    return (x->ppid > y->ppid) - (x->ppid < y->ppid);
}

/* Collects (pid, ppid) of every process into a growing array. */
static int scan(gk_host *h, proc_entry **out, size_t *count)
{
    DIR *d = gk__opendir(h->root);
    if (!d)
        return -errno;
    size_t n = 0, cap = 256;
    proc_entry *v = gk__malloc(cap * sizeof *v);
    if (!v) {
        closedir(d);
        return -ENOMEM;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        int pid = atoi(e->d_name);
        proc_stat st;
        if (pid <= 0 || read_stat(h, pid, &st) != 0)
            continue; /* exited meanwhile, or unreadable */
        if (n == cap) {
            proc_entry *nv = gk__realloc(v, cap * 2 * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = (proc_entry){pid, st.ppid, 0};
    }
    closedir(d);
    *out = v;
    *count = n;
    return 0;
}

static void add_process(gk_host *h, int pid, gk_proc_tree *t)
{
    proc_stat st;
    if (read_stat(h, pid, &st) != 0)
        return;
    t->nprocs++;
    /* Own time plus the time of reaped children: a child's CPU moves into its parent's
     * cutime/cstime when the parent waits for it, so the sum does not drop when a child exits
     * (as long as its reaper is in the tree). */
    /* Summed in double: a corrupt or hostile stat line must not overflow an integer sum. */
    double ticks = (double)st.utime + (double)st.stime + (st.cutime > 0 ? (double)st.cutime : 0) +
                   (st.cstime > 0 ? (double)st.cstime : 0);
    t->cpu_seconds += ticks / h->clk_tck;
    t->rss_bytes += (uint64_t)(st.rss_pages > 0 ? st.rss_pages : 0) * (uint64_t)h->page_size;
    t->threads += st.threads > 0 ? (unsigned)st.threads : 0;
    if (pid == t->root_pid)
        snprintf(t->root_comm, sizeof t->root_comm, "%s", st.comm);
    char rel[64], buf[4096];
    snprintf(rel, sizeof rel, "%d/smaps_rollup", pid);
    long long pss = -1;
    if (gk__host_read_into(h, rel, buf, sizeof buf) >= 0)
        pss = field_value(buf, "Pss:");
    if (pss >= 0)
        t->pss_bytes += (uint64_t)pss * 1024;
    else
        t->pss_complete = 0;
    snprintf(rel, sizeof rel, "%d/io", pid);
    long long rb = -1, wb = -1;
    if (gk__host_read_into(h, rel, buf, sizeof buf) >= 0) {
        rb = field_value(buf, "read_bytes:");
        wb = field_value(buf, "write_bytes:");
    }
    if (rb >= 0 && wb >= 0) {
        t->read_bytes += (uint64_t)rb;
        t->write_bytes += (uint64_t)wb;
    } else {
        t->io_complete = 0;
    }
}

static int proc_tree(gk_host *h, int pid, gk_proc_tree *out);

int(gk_host_proc_tree)(gk_host *h, int pid, gk_proc_tree *user, size_t size)
{
    if (!h || pid <= 0)
        return gk__error(-EINVAL, "gk_host_proc_tree: %s",
                         !h ? "handle is NULL" : "pid must be positive");
    int rc = gk__sized_check(user, size, "gk_proc_tree");
    if (rc)
        return rc;
    gk_proc_tree tree;
    rc = proc_tree(h, pid, &tree);
    return rc ? rc : gk__sized_put(user, size, &tree, sizeof tree, "gk_proc_tree");
}

static int proc_tree(gk_host *h, int pid, gk_proc_tree *out)
{
    memset(out, 0, sizeof *out);
    out->root_pid = pid;
    proc_stat root;
    if (read_stat(h, pid, &root) != 0)
        return gk__error(-ENOENT, "gk_host_proc_tree: process %d does not exist", pid);
    proc_entry *v = NULL;
    size_t n = 0;
    int rc = scan(h, &v, &n);
    if (rc)
        return rc;
    /* Breadth-first from the root over the entries sorted by parent: each process's children
     * are one contiguous run found by binary search. The queue reuses in_tree as "visited". */
    qsort(v, n, sizeof *v, by_ppid);
    int *queue = gk__malloc((n + 1) * sizeof *queue);
    if (!queue) {
        free(v);
        return gk__error(-ENOMEM, "gk_host_proc_tree: out of host memory");
    }
    size_t qhead = 0, qtail = 0;
    queue[qtail++] = pid;
    while (qhead < qtail) {
        int parent = queue[qhead++];
        for (size_t i = first_child(v, n, parent); i < n && v[i].ppid == parent; i++) {
            if (!v[i].in_tree && v[i].pid != pid && qtail <= n) {
                v[i].in_tree = 1;
                queue[qtail++] = v[i].pid;
            }
        }
    }
    out->pss_complete = out->io_complete = 1;
    /* Breadth-first order reads every parent before its children: a child reaped during the
     * read is missed by this read at worst (never counted both live and in its parent's cutime). */
    for (size_t i = 0; i < qtail; i++)
        add_process(h, queue[i], out);
    out->children = out->nprocs ? out->nprocs - 1 : 0;
    free(queue);
    free(v);
    return 0;
}

/* --- workers of a launcher ----------------------------------------------------------------- */

/* The value of variable `name` in an environ block (NUL-separated NAME=VALUE), or NULL. */
static const char *environ_get(const char *env, long len, const char *name)
{
    size_t nl = strlen(name);
    for (long i = 0; i < len;) {
        const char *e = env + i;
        size_t el = strnlen(e, (size_t)(len - i));
        if (el > nl && strncmp(e, name, nl) == 0 && e[nl] == '=')
            return e + nl + 1;
        i += (long)el + 1;
    }
    return NULL;
}

static int rank_value(const char *v)
{
    if (!v || !*v)
        return -1;
    char *end;
    long r = strtol(v, &end, 10);
    return *end || r < 0 || r > 1 << 20 ? -1 : (int)r;
}

int gk_host_proc_rank(gk_host *h, int pid, int *rank, int *local_rank)
{
    if (!h || pid <= 0 || !rank)
        return gk__error(-EINVAL, "gk_host_proc_rank: %s",
                         !h      ? "handle is NULL"
                         : !rank ? "rank is NULL"
                                 : "pid must be positive");
    *rank = -1;
    if (local_rank)
        *local_rank = -1;
    char rel[64];
    snprintf(rel, sizeof rel, "%d/environ", pid);
    long n = gk__host_read_into(h, rel, h->buf, GK__HOST_BUF);
    if (n < 0)
        return gk__error((int)n, "gk_host_proc_rank: cannot read %s/%s: %s", h->root, rel,
                         gk_strerror((int)n));
    static const char *const ranks[] = {"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"};
    static const char *const locals[] = {"LOCAL_RANK", "SLURM_LOCALID",
                                         "OMPI_COMM_WORLD_LOCAL_RANK"};
    for (int i = 0; i < 3; i++) {
        int r = rank_value(environ_get(h->buf, n, ranks[i]));
        if (r < 0)
            continue;
        *rank = r;
        if (local_rank)
            *local_rank = rank_value(environ_get(h->buf, n, locals[i]));
        break;
    }
    return 0;
}

/* Appends the pids of `pid` as its NSpid line lists them (itself in each nested namespace). */
static void add_nspids(gk_host *h, int pid, gk_proc_worker *w)
{
    char rel[64], buf[4096];
    snprintf(rel, sizeof rel, "%d/status", pid);
    if (gk__host_read_into(h, rel, buf, sizeof buf) < 0)
        return;
    const char *p = strstr(buf, "\nNSpid:");
    if (!p)
        return;
    p += 7;
    while (*p && *p != '\n') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (v > 0 && v != pid && w->npids < GK_WORKER_MAX_PIDS)
            w->pids[w->npids++] = (int)v;
        p = end;
    }
}

static int workers(gk_host *h, int root, gk_proc_worker *out, size_t cap, size_t *count)
{
    *count = 0;
    proc_stat rs;
    if (read_stat(h, root, &rs) != 0)
        return gk__error(-ENOENT, "gk_host_proc_workers: process %d does not exist", root);
    proc_entry *v = NULL;
    size_t n = 0;
    int rc = scan(h, &v, &n);
    if (rc)
        return gk__error(rc, "gk_host_proc_workers: cannot list %s", h->root);
    qsort(v, n, sizeof *v, by_ppid);
    /* Breadth-first from the root; the first process on each path with a rank in its
     * environment is a worker, and its subtree (owner index in in_tree - 1) is its own. */
    int *queue = gk__malloc((n + 1) * sizeof *queue);
    int *owner = gk__malloc((n + 1) * sizeof *owner);
    if (!queue || !owner) {
        free(queue);
        free(owner);
        free(v);
        return gk__error(-ENOMEM, "gk_host_proc_workers: out of host memory");
    }
    size_t qhead = 0, qtail = 0;
    queue[qtail] = root;
    owner[qtail++] = -1;
    while (qhead < qtail) {
        int parent = queue[qhead], who = owner[qhead];
        qhead++;
        if (who < 0) {
            int rank, local;
            if (gk_host_proc_rank(h, parent, &rank, &local) == 0 && rank >= 0 && *count < cap) {
                gk_proc_worker *w = &out[*count];
                memset(w, 0, sizeof *w);
                w->pid = parent;
                w->rank = rank;
                w->local_rank = local;
                who = (int)(*count)++;
            }
        }
        if (who >= 0) {
            gk_proc_worker *w = &out[who];
            gk_proc_tree t;
            memset(&t, 0, sizeof t);
            t.root_pid = w->pid;
            add_process(h, parent, &t);
            w->nprocs += t.nprocs;
            w->cpu_seconds += t.cpu_seconds;
            w->rss_bytes += t.rss_bytes;
            w->threads += t.threads;
            if (w->npids < GK_WORKER_MAX_PIDS)
                w->pids[w->npids++] = parent;
            add_nspids(h, parent, w);
        }
        for (size_t i = first_child(v, n, parent); i < n && v[i].ppid == parent; i++) {
            if (!v[i].in_tree && v[i].pid != root && qtail <= n) {
                v[i].in_tree = 1;
                queue[qtail] = v[i].pid;
                owner[qtail++] = who;
            }
        }
    }
    free(queue);
    free(owner);
    free(v);
    return 0;
}

int(gk_host_proc_workers)(gk_host *h, int root, gk_proc_worker *out, size_t cap, size_t *n,
                          size_t size)
{
    if (!h || root <= 0 || !n)
        return gk__error(-EINVAL, "gk_host_proc_workers: %s",
                         !h   ? "handle is NULL"
                         : !n ? "n is NULL"
                              : "root must be positive");
    *n = 0;
    if (cap && (!out || size < sizeof(size_t)))
        return gk__sized_check(out, cap ? size : sizeof(size_t), "gk_proc_worker");
    gk_proc_worker *full = cap ? gk__calloc(cap, sizeof *full) : NULL;
    if (cap && !full)
        return gk__error(-ENOMEM, "gk_host_proc_workers: out of host memory");
    size_t count = 0;
    int rc = workers(h, root, full, cap, &count);
    /* The caller's elements are `size` bytes apart (a program built against an older header
     * has smaller ones): each gets what fits. */
    for (size_t i = 0; rc == 0 && i < count; i++) {
        full[i].size = sizeof full[i];
        (void)gk__sized_put((char *)out + i * size, size, &full[i], sizeof full[i],
                            "gk_proc_worker");
    }
    free(full);
    if (rc == 0)
        *n = count;
    return rc;
}
