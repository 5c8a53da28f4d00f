/* The host reader: CPU time by mode (total and per core), memory and swap, load, filesystems,
 * disks and network interfaces from /proc and statvfs. The proc root can be replaced (GK_PROC_ROOT)
 * so the tests read fixture trees; statvfs always looks at the real mountpoints. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "host_int.h"

void(gk_host_config_default)(gk_host_config *out, size_t size)
{
    gk_host_config c = {.size = sizeof c, .proc_root = NULL};
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_host_config");
}

long gk__host_read_into(const gk_host *h, const char *rel, char *buf, size_t cap)
{
    char path[512];
    if (snprintf(path, sizeof path, "%s/%s", h->root, rel) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len + 1 >= cap) {
        /* Truncated: keep whole lines only. */
        while (len > 0 && buf[len - 1] != '\n')
            len--;
    }
    buf[len] = '\0';
    return (long)len;
}

long gk__host_read(gk_host *h, const char *rel)
{
    return gk__host_read_into(h, rel, h->buf, GK__HOST_BUF);
}

int gk_host_open(const gk_host_config *cfg, gk_host **out)
{
    if (!out)
        return gk__error(-EINVAL, "gk_host_open: out is NULL");
    *out = NULL;
    gk_host_config c;
    gk_host_config_default(&c);
    int rc = cfg ? gk__sized_in(&c, sizeof c, cfg, "gk_host_config") : gk_host_config_from_env(&c);
    if (rc)
        return rc;
    const char *root = c.proc_root && *c.proc_root ? c.proc_root : "/proc";
    if (strlen(root) >= sizeof((gk_host *)0)->root)
        return gk__error(-EINVAL,
                         "gk_host_open: proc root \"%.64s...\" is too long (at most %zu "
                         "characters)",
                         root, sizeof((gk_host *)0)->root - 1);
    gk_host *h = gk__calloc(1, sizeof *h);
    if (!h)
        return gk__error(-ENOMEM, "gk_host_open: out of host memory");
    h->buf = gk__malloc(GK__HOST_BUF);
    if (!h->buf) {
        free(h);
        return gk__error(-ENOMEM, "gk_host_open: out of host memory");
    }
    snprintf(h->root, sizeof h->root, "%s", root);
    long tck = sysconf(_SC_CLK_TCK);
    h->clk_tck = tck > 0 ? (double)tck : 100.0;
    h->page_size = sysconf(_SC_PAGESIZE);
    if (h->page_size <= 0)
        h->page_size = 4096;
    long n = gk__host_read(h, "stat");
    if (n < 0) {
        gk_host_close(h);
        return gk__error(-ENOENT, "gk_host_open: cannot read %s/stat (is %s a proc filesystem?)",
                         root, root);
    }
    *out = h;
    return 0;
}

void gk_host_close(gk_host *h)
{
    if (!h)
        return;
    free(h->buf);
    free(h);
}

const char *gk_host_proc_root(const gk_host *h)
{
    return h ? h->root : "";
}

/* --- sections ------------------------------------------------------------------------------ */

static int parse_cpu_line(const char *line, double tck, gk_cpu_times *t)
{
    unsigned long long v[8] = {0};
    const char *p = line;
    while (*p && *p != ' ')
        p++;
    int n = sscanf(p, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]);
    if (n < 4)
        return GK_ECORRUPT;
    t->user = v[0] / tck;
    t->nice = v[1] / tck;
    t->system = v[2] / tck;
    t->idle = v[3] / tck;
    t->iowait = v[4] / tck;
    t->irq = v[5] / tck;
    t->softirq = v[6] / tck;
    t->steal = v[7] / tck;
    return 0;
}

static int read_cpu(gk_host *h, gk_host_sample *o)
{
    long n = gk__host_read(h, "stat");
    if (n < 0)
        return (int)n;
    int have_total = 0;
    for (char *line = h->buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, "cpu ", 4) == 0) {
            if (parse_cpu_line(line, h->clk_tck, &o->cpu) != 0)
                return GK_ECORRUPT;
            have_total = 1;
        } else if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9') {
            if (o->ncpus < GK_HOST_MAX_CPUS &&
                parse_cpu_line(line, h->clk_tck, &o->per_cpu[o->ncpus]) == 0)
                o->ncpus++;
        }
        line = next;
    }
    return have_total ? 0 : GK_ECORRUPT;
}

static int read_memory(gk_host *h, gk_host_sample *o)
{
    long n = gk__host_read(h, "meminfo");
    if (n < 0)
        return (int)n;
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"MemTotal:", offsetof(gk_host_sample, mem_total)},
        {"MemFree:", offsetof(gk_host_sample, mem_free)},
        {"MemAvailable:", offsetof(gk_host_sample, mem_available)},
        {"Buffers:", offsetof(gk_host_sample, mem_buffers)},
        {"Cached:", offsetof(gk_host_sample, mem_cached)},
        {"SwapTotal:", offsetof(gk_host_sample, swap_total)},
        {"SwapFree:", offsetof(gk_host_sample, swap_free)},
    };
    int have_total = 0, have_avail = 0;
    for (const char *line = h->buf; line && *line;) {
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            size_t kl = strlen(keys[k].key);
            if (strncmp(line, keys[k].key, kl) == 0) {
                unsigned long long kb = strtoull(line + kl, NULL, 10);
                *(uint64_t *)((char *)o + keys[k].off) = (uint64_t)kb * 1024;
                have_total |= k == 0;
                have_avail |= k == 2;
                break;
            }
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    if (!have_total)
        return GK_ECORRUPT;
    if (!have_avail) /* kernels before 3.14: estimate as psutil does */
        o->mem_available = o->mem_free + o->mem_buffers + o->mem_cached;
    if (o->mem_available > o->mem_total) /* containers may report more than the total */
        o->mem_available = o->mem_free;
    return 0;
}

static int read_load(gk_host *h, gk_host_sample *o)
{
    long n = gk__host_read(h, "loadavg");
    if (n < 0)
        return (int)n;
    if (sscanf(h->buf, "%lf %lf %lf", &o->load1, &o->load5, &o->load15) != 3)
        return GK_ECORRUPT;
    return 0;
}

/* Filesystems that hold no user data, and network filesystems (statvfs on a dead server can
 * block for minutes, and the sampler must not). */
static int pseudo_fs(const char *type)
{
    static const char *const skip[] = {
        "proc",        "sysfs",      "cgroup",  "cgroup2",         "devpts",
        "securityfs",  "debugfs",    "tracefs", "pstore",          "bpf",
        "configfs",    "fusectl",    "mqueue",  "hugetlbfs",       "autofs",
        "binfmt_misc", "rpc_pipefs", "nsfs",    "efivarfs",        "selinuxfs",
        "devtmpfs",    "squashfs",   "ramfs",   "fuse.gvfsd-fuse", "fuse.portal"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++) {
        if (strcmp(type, skip[i]) == 0)
            return 1;
    }
    return 0;
}

/* Undoes the octal escapes of /proc/mounts ("\040" for a space). */
static void unescape_mount(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static int read_fs(gk_host *h, gk_host_sample *o)
{
    long n = gk__host_read(h, "mounts");
    if (n < 0)
        n = gk__host_read(h, "self/mounts");
    if (n < 0)
        return (int)n;
    for (char *line = h->buf; line && *line && o->nfs < GK_HOST_MAX_FS;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char dev[128], mnt[256], type[32];
        if (sscanf(line, "%127s %255s %31s", dev, mnt, type) == 3 && !pseudo_fs(type)) {
            unescape_mount(mnt);
            int dup = 0;
            for (unsigned i = 0; i < o->nfs; i++)
                dup |= strcmp(o->fs[i].mountpoint, mnt) == 0;
            struct statvfs sv;
            if (!dup && statvfs(mnt, &sv) == 0 && sv.f_blocks > 0) {
                gk_fs_stat *f = &o->fs[o->nfs++];
                snprintf(f->mountpoint, sizeof f->mountpoint, "%s", mnt);
                snprintf(f->device, sizeof f->device, "%s", dev);
                snprintf(f->fstype, sizeof f->fstype, "%s", type);
                uint64_t fr = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
                f->size_bytes = (uint64_t)sv.f_blocks * fr;
                f->free_bytes = (uint64_t)sv.f_bfree * fr;
                f->avail_bytes = (uint64_t)sv.f_bavail * fr;
            }
        }
        line = next;
    }
    return 0;
}

static int read_disks(gk_host *h, gk_host_sample *o)
{
    long n = gk__host_read(h, "diskstats");
    if (n < 0)
        return (int)n;
    for (char *line = h->buf; line && *line && o->ndisks < GK_HOST_MAX_DISKS;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        unsigned major, minor;
        char name[32];
        unsigned long long rd, rdm, rds, rdt, wr, wrm, wrs, wrt, inprog, iot;
        int k = sscanf(line, "%u %u %31s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &major,
                       &minor, name, &rd, &rdm, &rds, &rdt, &wr, &wrm, &wrs, &wrt, &inprog, &iot);
        /* Loop and RAM disks carry no real I/O. */
        if (k == 13 && strncmp(name, "loop", 4) != 0 && strncmp(name, "ram", 3) != 0) {
            gk_disk_stat *d = &o->disks[o->ndisks++];
            snprintf(d->name, sizeof d->name, "%s", name);
            d->reads = rd;
            d->writes = wr;
            d->read_bytes = rds * 512ULL;
            d->written_bytes = wrs * 512ULL;
            d->io_time_seconds = iot / 1000.0;
        }
        line = next;
    }
    return 0;
}

static int read_nets(gk_host *h, gk_host_sample *o)
{
    long n = gk__host_read(h, "net/dev");
    if (n < 0)
        return (int)n;
    for (char *line = h->buf; line && *line && o->nnets < GK_HOST_MAX_NETS;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *colon = strchr(line, ':');
        if (colon && !strchr(line, '|')) {
            *colon = '\0';
            char *name = line;
            while (*name == ' ')
                name++;
            unsigned long long rxb, rxp, e1, d1, f1, fr, cp, mc, txb, txp;
            if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &rxb, &rxp,
                       &e1, &d1, &f1, &fr, &cp, &mc, &txb, &txp) == 10) {
                gk_net_stat *s = &o->nets[o->nnets++];
                snprintf(s->name, sizeof s->name, "%s", name);
                s->rx_bytes = rxb;
                s->rx_packets = rxp;
                s->tx_bytes = txb;
                s->tx_packets = txp;
            }
        }
        line = next;
    }
    return 0;
}

/* Reads into the library's own (full-size) gk_host_sample. */
static int sample_read(gk_host *h, unsigned what, gk_host_sample *out);

int(gk_host_sample_read)(gk_host *h, unsigned what, gk_host_sample *out, size_t size)
{
    if (!h)
        return gk__error(-EINVAL, "gk_host_sample_read: handle is NULL");
    int rc = gk__sized_check(out, size, "gk_host_sample");
    if (rc)
        return rc;
    if (size >= sizeof *out) { /* the common case: fill in place, no 50 KiB copy */
        rc = sample_read(h, what, out);
        out->size = sizeof *out;
        return rc;
    }
    gk_host_sample *full = gk__malloc(sizeof *full);
    if (!full)
        return gk__error(-ENOMEM, "gk_host_sample_read: out of host memory");
    rc = sample_read(h, what, full);
    (void)gk__sized_put(out, size, full, sizeof *full, "gk_host_sample");
    free(full);
    return rc;
}

static int sample_read(gk_host *h, unsigned what, gk_host_sample *out)
{
    memset(out, 0,
           offsetof(gk_host_sample, per_cpu)); /* the arrays are filled up to their counts */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    out->t_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    static const struct {
        unsigned bit;
        int (*fn)(gk_host *, gk_host_sample *);
        const char *file;
    } sections[] = {
        {GK_HOST_CPU, read_cpu, "stat"},         {GK_HOST_MEMORY, read_memory, "meminfo"},
        {GK_HOST_LOAD, read_load, "loadavg"},    {GK_HOST_FS, read_fs, "mounts"},
        {GK_HOST_DISK, read_disks, "diskstats"}, {GK_HOST_NET, read_nets, "net/dev"}};
    int first = 0;
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (!(what & sections[i].bit))
            continue;
        int rc = sections[i].fn(h, out);
        if (rc == 0) {
            out->valid |= sections[i].bit;
        } else if (!first) {
            first = rc;
            gk__error(rc, "host sample: %s/%s: %s", h->root, sections[i].file, gk_strerror(rc));
        }
    }
    return first;
}
