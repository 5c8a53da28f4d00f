/* The StatsD sender: a non-blocking Unix datagram socket connected to GK_METRICS_SOCKET. A
 * program not running under `gpukit run` gets an inactive client whose sends cost nothing.
 *
 * Linux queues only net.unix.max_dgram_qlen datagrams (10 by default) on the receiver, so a
 * program that sends in a tight loop fills the queue faster than `gpukit run` drains it. A send
 * that finds the queue full therefore waits for room, in short sleeps, for at most
 * GK__STATSD_SEND_WAIT_NS; only then is the value dropped and counted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "run/run_int.h"

/* The longest a send waits for room in the receiver's queue. */
#define GK__STATSD_SEND_WAIT_NS 20000000L

struct gk_statsd {
    int fd;        /* -1: inactive */
    int connected; /* fd is connected to addr: sends skip the path lookup */
    struct sockaddr_un addr;
    uint64_t dropped;
    char process_tags[96]; /* "rank:3,local_rank:1" or "" */
};

void gk__statsd_process_tags(char *out, size_t len)
{
    static const char *const ranks[] = {"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"};
    static const char *const locals[] = {"LOCAL_RANK", "SLURM_LOCALID",
                                         "OMPI_COMM_WORLD_LOCAL_RANK"};
    out[0] = '\0';
    for (size_t i = 0; i < 3; i++) {
        const char *r = getenv(ranks[i]);
        char *end;
        if (!r || !*r || strtoul(r, &end, 10) >= 1u << 30 || *end)
            continue;
        snprintf(out, len, "rank:%s", r);
        const char *l = getenv(locals[i]);
        if (l && *l && strtoul(l, &end, 10) < 1u << 30 && !*end)
            snprintf(out + strlen(out), len - strlen(out), ",local_rank:%s", l);
        return;
    }
}

int gk_statsd_open(const char *path, gk_statsd **out)
{
    if (!out)
        return gk__error(-EINVAL, "gk_statsd_open: out is NULL");
    *out = NULL;
    if (!path) {
        path = getenv(GK_METRICS_SOCKET_ENV);
        if (path && !*path)
            path = NULL;
    }
    gk_statsd *c = gk__calloc(1, sizeof *c);
    if (!c)
        return gk__error(-ENOMEM, "gk_statsd_open: out of host memory (!c)");
    c->fd = -1;
    gk__statsd_process_tags(c->process_tags, sizeof c->process_tags);
    if (path) {
        if (strlen(path) >= sizeof c->addr.sun_path) {
            free(c);
            return gk__error(-EINVAL, "gk_statsd_open: invalid argument");
        }
        c->addr.sun_family = AF_UNIX;
        memcpy(c->addr.sun_path, path, strlen(path) + 1);
        c->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            int rc = -errno;
            free(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

void gk_statsd_close(gk_statsd *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

int gk__statsd_format(const gk_statsd *c, char *buf, size_t room, const char *name, double value,
                      const char *type, const char *tags)
{
    if (!c || !name || !type)
        return gk__error(-EINVAL, "gk_statsd_client_send: client, name or type is NULL");
    if (!gk__statsd_name_ok(name, strlen(name)))
        return gk__error(-EINVAL, "statsd: name \"%.64s\" is not 1-%d letters, digits and _ . - /",
                         name, GK__STATSD_MAX_NAME);
    if (strcmp(type, "g") && strcmp(type, "c") && strcmp(type, "ms") && strcmp(type, "h"))
        return gk__error(-EINVAL, "statsd: type \"%.8s\" is not g, c, ms or h", type);
    if (tags && *tags && !gk__statsd_tags_ok(tags, strlen(tags)))
        return gk__error(-EINVAL,
                         "statsd: tags \"%.64s\" are not k:v pairs of letters, digits and "
                         "_ . - / :, separated by commas",
                         tags);
    if (value != value || value - value != 0) /* NaN or infinite */
        return gk__error(-EINVAL, "statsd: %s: the value %g is not a finite number", name, value);
    if (strcmp(type, "ms") == 0 && value < 0)
        return gk__error(-EINVAL, "statsd: %s: a duration cannot be negative", name);
    char sfx[GK__STATSD_MAX_TAGS + 100] = "";
    /* The process's rank rides along, unless the caller gave its own. */
    int own_rank = tags && (strncmp(tags, "rank:", 5) == 0 || strstr(tags, ",rank:"));
    const char *ptags = own_rank ? "" : c->process_tags;
    if ((tags && *tags) || *ptags)
        snprintf(sfx, sizeof sfx, "|#%s%s%s", tags && *tags ? tags : "",
                 tags && *tags && *ptags ? "," : "", ptags);
    int n;
    if (strcmp(type, "g") == 0 && value < 0) /* a leading sign means "relative": set 0, add */
        n = snprintf(buf, room, "%s:0|g%s\n%s:%.17g|g%s", name, sfx, name, value, sfx);
    else
        n = snprintf(buf, room, "%s:%.17g|%s%s", name, value, type, sfx);
    if (n < 0 || (size_t)n >= room)
        return gk__error(-EINVAL, "statsd: %s: the line is too long", name);
    return n;
}

/* One send on the socket connected to the path, connecting first (again after the receiver went
 * away: a receiver that comes back binds a new socket at the same path). Returns send's value,
 * with errno set. */
static ssize_t send_connected(gk_statsd *c, const char *buf, size_t len)
{
    for (int tries = 0;; tries++) {
        if (!c->connected) {
            if (connect(c->fd, (const struct sockaddr *)&c->addr, sizeof c->addr) != 0)
                return -1;
            c->connected = 1;
        }
        ssize_t w = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w >= 0 || tries > 0 ||
            (errno != ECONNREFUSED && errno != ENOTCONN && errno != ECONNRESET))
            return w;
        c->connected = 0; /* the receiver closed its socket: look the path up again */
    }
}

int gk__statsd_send_datagram(gk_statsd *c, const char *buf, size_t len, uint64_t values)
{
    if (c->fd < 0)
        return 0;
    long waited = 0, pause = 20000; /* ns: 20 us doubling to 1 ms */
    for (;;) {
        ssize_t w = send_connected(c, buf, len);
        if (w >= 0)
            return 0;
        int rc = -errno;
        if ((rc != -EAGAIN && rc != -EWOULDBLOCK) || waited >= GK__STATSD_SEND_WAIT_NS) {
            c->dropped += values;
            return rc == -EWOULDBLOCK ? -EAGAIN : rc;
        }
        struct timespec ts = {0, pause};
        nanosleep(&ts, NULL);
        waited += pause;
        if (pause < 1000000)
            pause *= 2;
    }
}

int gk_statsd_client_send(gk_statsd *c, const char *name, double value, const char *type,
                          const char *tags)
{
    char line[GK__STATSD_MAX_LINE];
    int n = gk__statsd_format(c, line, sizeof line, name, value, type, tags);
    if (n < 0)
        return n;
    return gk__statsd_send_datagram(c, line, (size_t)n, 1);
}

uint64_t gk_statsd_dropped(const gk_statsd *c)
{
    return c ? c->dropped : 0;
}

int gk_statsd_active(const gk_statsd *c)
{
    return c && c->fd >= 0;
}

int gk_statsd_send(const char *name, double value, const char *type)
{
    const char *path = getenv(GK_METRICS_SOCKET_ENV);
    if (!path || !*path)
        return name && type && gk__statsd_name_ok(name, strlen(name)) ? 0 : -EINVAL;
    gk_statsd *c = NULL;
    int rc = gk_statsd_open(path, &c);
    if (rc)
        return rc;
    rc = gk_statsd_client_send(c, name, value, type, NULL);
    gk_statsd_close(c);
    return rc;
}
