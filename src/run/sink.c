/* The node's StatsD sink: `gpukit serve` receives StatsD lines from every process on the node (a
 * Unix datagram socket that training jobs find through GK_METRICS_SOCKET, and 127.0.0.1 UDP when
 * asked) and turns each series into a metric of its registry, labelled with the line's tags, so
 * pools, loaders and step times reach Prometheus with no exporter in the job. Memory is bounded:
 * past the series cap new series are dropped and counted, never stored. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/export.h"
#include "run/run_int.h"

#define SINK_BATCH 64 /* datagrams per recvmmsg */

/* A received series: its key ("name|type|tags") and the registry's metric. */
typedef struct entry {
    char *key;
    gk_metric *metric;
    double last; /* a gauge's last value (relative updates add to it) */
} entry;

struct gk_statsd_sink {
    gk_statsd_sink_config cfg;
    gk_metrics *reg;
    char path[108];
    int ufd, udp; /* -1 when not used */
    int wake[2];  /* a pipe that stop writes to */
    pthread_t thread;
    entry *table; /* open addressing on the key's hash */
    size_t cap, used;
    char *buf; /* SINK_BATCH datagrams */
    _Atomic uint64_t datagrams, lines, malformed, dropped_series, dropped_labels, lost, series;
    double self_sent[4];     /* the sink's own counters already added to its series */
    uint64_t udp_drops_seen; /* the kernel's SO_RXQ_OVFL count already added to lost */
    gk_metric *m_lines, *m_malformed, *m_dropped_series, *m_dropped_labels, *m_lost, *m_series;
};

void(gk_statsd_sink_config_default)(gk_statsd_sink_config *out, size_t size)
{
    gk_statsd_sink_config c;
    memset(&c, 0, sizeof c);
    c.max_series = 10000;
    c.max_tags = 8;
    gk_logger_default(&c.logger);
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_statsd_sink_config");
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The table's slot for `key` (empty when absent); the table grows at half full. */
static entry *slot(gk_statsd_sink *s, const char *key)
{
    if (s->used * 2 >= s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        entry *t = gk__calloc(cap, sizeof *t);
        if (!t)
            return NULL;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->table[i].key)
                continue;
            size_t h = hash(s->table[i].key) & (cap - 1);
            while (t[h].key)
                h = (h + 1) & (cap - 1);
            t[h] = s->table[i];
        }
        free(s->table);
        s->table = t;
        s->cap = cap;
    }
    size_t h = hash(key) & (s->cap - 1);
    while (s->table[h].key && strcmp(s->table[h].key, key) != 0)
        h = (h + 1) & (s->cap - 1);
    return &s->table[h];
}

/* A StatsD name as a Prometheus name: '.', '-' and '/' become '_', a leading digit gets '_'. */
static void prom_name(const char *in, size_t len, const char *suffix, char *out, size_t room)
{
    size_t n = 0;
    if (len && in[0] >= '0' && in[0] <= '9' && n + 1 < room)
        out[n++] = '_';
    for (size_t i = 0; i < len && n + 1 < room; i++) {
        char c = in[i];
        out[n++] = (c == '.' || c == '-' || c == '/') ? '_' : c;
    }
    out[n] = '\0';
    snprintf(out + n, room - n, "%s", suffix);
}

/* Splits "k:v,k2:v2" into label pairs (names made Prometheus-valid; repeats and reserved names
 * dropped); at most max pairs. Returns the number of pairs, and counts what was dropped. */
static size_t labels_of(gk_statsd_sink *s, const char *tags, size_t len, char *store, size_t room,
                        const char **labels, size_t max)
{
    size_t n = 0, used = 0, pos = 0;
    while (tags && pos < len) {
        const char *t = tags + pos;
        const char *comma = memchr(t, ',', len - pos);
        size_t tl = comma ? (size_t)(comma - t) : len - pos;
        pos += tl + 1;
        const char *colon = memchr(t, ':', tl);
        size_t kl = colon ? (size_t)(colon - t) : tl;
        const char *v = colon ? colon + 1 : "";
        size_t vl = colon ? tl - kl - 1 : 0;
        if (n == max || kl == 0 || used + kl + vl + 3 > room) {
            atomic_fetch_add(&s->dropped_labels, 1);
            continue;
        }
        char *k = store + used;
        prom_name(t, kl, "", k, kl + 2);
        used += strlen(k) + 1;
        char *val = store + used;
        memcpy(val, v, vl);
        val[vl] = '\0';
        used += vl + 1;
        int dup = gk_metrics_check_label_name(k) != 0 || strcmp(k, "le") == 0;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(labels[2 * i], k) == 0;
        if (dup) {
            atomic_fetch_add(&s->dropped_labels, 1);
            continue;
        }
        labels[2 * n] = k;
        labels[2 * n + 1] = val;
        n++;
    }
    labels[2 * n] = NULL;
    return n;
}

/* One received line: finds (or registers) its series and updates it. */
static void on_line(void *user, const gk__statsd_msg *m)
{
    gk_statsd_sink *s = user;
    atomic_fetch_add_explicit(&s->lines, 1, memory_order_relaxed);
    const char *suffix = strcmp(m->kind, "ms") == 0 ? "_seconds" : "";
    char name[GK__STATSD_MAX_NAME + 16];
    prom_name(m->name, m->name_len, suffix, name, sizeof name);
    /* The key "name|kind|tags", built without printf (this runs for every line). */
    char key[sizeof name + GK__STATSD_MAX_TAGS + 8];
    size_t nl = strlen(name), kl = strlen(m->kind), tl = m->tags ? m->tags_len : 0;
    memcpy(key, name, nl);
    key[nl] = '|';
    memcpy(key + nl + 1, m->kind, kl);
    key[nl + 1 + kl] = '|';
    if (tl)
        memcpy(key + nl + kl + 2, m->tags, tl);
    key[nl + kl + 2 + tl] = '\0';
    entry *e = slot(s, key);
    if (!e)
        return;
    if (!e->key) {
        if (s->used >= s->cfg.max_series) {
            atomic_fetch_add(&s->dropped_series, 1);
            return;
        }
        char store[GK__STATSD_MAX_TAGS * 2];
        const char *labels[2 * 32 + 1];
        size_t max = s->cfg.max_tags < 32 ? s->cfg.max_tags : 32;
        labels_of(s, m->tags, m->tags_len, store, sizeof store, labels, max);
        gk_metric *metric = NULL;
        int rc;
        if (m->kind[0] == 'g')
            rc = gk_metrics_gauge(s->reg, name, NULL, labels, &metric);
        else if (m->kind[0] == 'c')
            rc = gk_metrics_counter(s->reg, name, NULL, labels, &metric);
        else
            rc = gk_metrics_histogram(s->reg, name, NULL, labels, NULL, 0, &metric);
        if (rc) {
            /* A name clash, a bad name or the registry's caps: counted, and not asked again. */
            atomic_fetch_add(&s->dropped_series, 1);
            gk_log(&s->cfg.logger, GK_LOG_DEBUG, "sink", "%s", gk_last_error());
        }
        e->key = gk__strdup(key);
        if (!e->key)
            return;
        e->metric = metric;
        s->used++;
        atomic_store(&s->series, s->used);
        gk_gauge_set(s->m_series, (double)s->used);
    }
    if (!e->metric)
        return;
    double v = m->value;
    switch (m->kind[0]) {
    case 'g':
        e->last = m->relative ? e->last + v : v;
        gk_gauge_set(e->metric, e->last);
        break;
    case 'c':
        gk_counter_add(e->metric, m->rate > 0 ? v / m->rate : v);
        break;
    default: /* ms (seconds in the registry) and h */
        gk_histogram_observe(e->metric, m->kind[0] == 'm' ? v / 1000 : v);
        break;
    }
}

/* Reads what one socket has queued, in batches. */
static void drain(gk_statsd_sink *s, int fd)
{
    struct mmsghdr msgs[SINK_BATCH];
    struct iovec iov[SINK_BATCH];
    char ctl[SINK_BATCH][CMSG_SPACE(sizeof(uint32_t))];
    for (;;) {
        for (int i = 0; i < SINK_BATCH; i++) {
            iov[i] =
                (struct iovec){s->buf + (size_t)i * GK__STATSD_MAX_DGRAM, GK__STATSD_MAX_DGRAM};
            msgs[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i],
                                              .msg_iovlen = 1,
                                              .msg_control = ctl[i],
                                              .msg_controllen = sizeof ctl[i]};
        }
        int n = recvmmsg(fd, msgs, SINK_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        atomic_fetch_add(&s->datagrams, (uint64_t)n);
        for (int i = 0; i < n; i++) {
            uint64_t bad = 0;
            gk__statsd_parse_datagram(iov[i].iov_base, msgs[i].msg_len, on_line, s, NULL, &bad);
            if (bad)
                atomic_fetch_add(&s->malformed, bad);
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c;
                 c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
                    uint32_t drops;
                    memcpy(&drops, CMSG_DATA(c), sizeof drops);
                    if (drops > s->udp_drops_seen) {
                        atomic_fetch_add(&s->lost, drops - s->udp_drops_seen);
                        s->udp_drops_seen = drops;
                    }
                }
            }
        }
        if (n < SINK_BATCH)
            return;
    }
}

/* Copies the sink's own counters into its series. */
static void publish_self(gk_statsd_sink *s)
{
    double *sent = s->self_sent;
    const double now[4] = {(double)atomic_load(&s->lines), (double)atomic_load(&s->malformed),
                           (double)atomic_load(&s->dropped_series), (double)atomic_load(&s->lost)};
    gk_metric *const m[4] = {s->m_lines, s->m_malformed, s->m_dropped_series, s->m_lost};
    for (int i = 0; i < 4; i++) {
        if (now[i] > sent[i])
            gk_counter_add(m[i], now[i] - sent[i]);
        sent[i] = now[i];
    }
}

static void *run(void *arg)
{
    gk_statsd_sink *s = arg;
    struct pollfd p[3] = {{.fd = s->wake[0], .events = POLLIN},
                          {.fd = s->ufd, .events = POLLIN},
                          {.fd = s->udp, .events = POLLIN}};
    for (;;) {
        int n = poll(p, 3, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        if (s->ufd >= 0 && (p[1].revents & POLLIN))
            drain(s, s->ufd);
        if (s->udp >= 0 && (p[2].revents & POLLIN))
            drain(s, s->udp);
        publish_self(s);
    }
    return NULL;
}

static int open_unix(gk_statsd_sink *s, const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return gk__error(-EINVAL, "statsd sink: socket path %s is too long (at most %zu bytes)",
                         path, sizeof a.sun_path - 1);
    memcpy(a.sun_path, path, strlen(path) + 1);
    s->ufd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->ufd < 0)
        return gk__error(-errno, "statsd sink: socket: %s", strerror(errno));
    /* A socket file left by a sink that died is replaced; any other file is not. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    if (bind(s->ufd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        return gk__error(-e, "statsd sink: cannot bind %s: %s%s", path, strerror(e),
                         e == EADDRINUSE ? " (something else is there; remove it or choose another "
                                           "path)"
                                         : "");
    }
    chmod(path, 0666); /* any process on the node may send, like a StatsD port */
    int big = 8 << 20;
    setsockopt(s->ufd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    snprintf(s->path, sizeof s->path, "%s", path);
    return 0;
}

static int open_udp(gk_statsd_sink *s, const char *listen)
{
    char host[128];
    int port;
    char err[256];
    int rc = gk_exporter_parse_listen(listen, host, sizeof host, &port, err, sizeof err);
    if (rc)
        return gk__error(rc, "statsd sink: %s", err);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return gk__error(-EINVAL,
                         "statsd sink: UDP address \"%s\" is not an IPv4 address (try "
                         "127.0.0.1:8125)",
                         listen);
    s->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->udp < 0)
        return gk__error(-errno, "statsd sink: socket: %s", strerror(errno));
    int one = 1, big = 8 << 20;
    setsockopt(s->udp, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    setsockopt(s->udp, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(s->udp, (struct sockaddr *)&a, sizeof a) != 0)
        return gk__error(-errno, "statsd sink: cannot bind UDP %s: %s", listen, strerror(errno));
    return 0;
}

static int register_self(gk_statsd_sink *s)
{
    int rc = gk_metrics_counter(s->reg, "gpukit_statsd_lines_total", "StatsD lines received.", NULL,
                                &s->m_lines);
    if (!rc)
        rc = gk_metrics_counter(s->reg, "gpukit_statsd_malformed_total",
                                "StatsD lines that did not parse.", NULL, &s->m_malformed);
    if (!rc)
        rc = gk_metrics_counter(s->reg, "gpukit_statsd_dropped_series_total",
                                "New series refused at the series cap (or a name clash).", NULL,
                                &s->m_dropped_series);
    if (!rc)
        rc = gk_metrics_counter(s->reg, "gpukit_statsd_lost_datagrams_total",
                                "UDP datagrams the kernel dropped before the sink read them.", NULL,
                                &s->m_lost);
    if (!rc)
        rc = gk_metrics_gauge(s->reg, "gpukit_statsd_series", "Series received so far.", NULL,
                              &s->m_series);
    return rc;
}

int gk_statsd_sink_start(const gk_statsd_sink_config *cfg_in, gk_statsd_sink **out)
{
    if (!out)
        return gk__error(-EINVAL, "gk_statsd_sink_start: out is NULL");
    *out = NULL;
    gk_statsd_sink_config cfg;
    gk_statsd_sink_config_default(&cfg);
    int rc = cfg_in ? gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_statsd_sink_config") : 0;
    if (rc)
        return rc;
    if ((!cfg.socket_path || !*cfg.socket_path) && (!cfg.udp_listen || !*cfg.udp_listen))
        return gk__error(-EINVAL, "statsd sink: give a socket path or a UDP address");
    if (cfg.max_series == 0)
        return gk__error(-EINVAL, "statsd sink: max_series must be at least 1");
    gk_statsd_sink *s = gk__calloc(1, sizeof *s);
    if (!s)
        return gk__error(-ENOMEM, "statsd sink: out of host memory");
    s->cfg = cfg;
    s->ufd = s->udp = s->wake[0] = s->wake[1] = -1;
    s->reg = cfg.metrics ? cfg.metrics : gk_metrics_default();
    s->buf = gk__malloc((size_t)SINK_BATCH * GK__STATSD_MAX_DGRAM);
    if (!s->reg || !s->buf) {
        rc = gk__error(-ENOMEM, "statsd sink: out of host memory");
        goto out_free;
    }
    if ((rc = register_self(s)) != 0)
        goto out_free;
    if (cfg.socket_path && *cfg.socket_path && (rc = open_unix(s, cfg.socket_path)) != 0)
        goto out_free;
    if (cfg.udp_listen && *cfg.udp_listen && (rc = open_udp(s, cfg.udp_listen)) != 0)
        goto out_free;
    if (pipe2(s->wake, O_CLOEXEC) != 0) {
        rc = gk__error(-errno, "statsd sink: pipe: %s", strerror(errno));
        goto out_free;
    }
    if ((rc = pthread_create(&s->thread, NULL, run, s)) != 0) {
        rc = gk__error(-rc, "statsd sink: cannot start its thread: %s", strerror(rc));
        goto out_free;
    }
    *out = s;
    return 0;
out_free:
    gk_statsd_sink_stop(s);
    return rc;
}

void gk_statsd_sink_stop(gk_statsd_sink *s)
{
    if (!s)
        return;
    if (s->thread) {
        char c = 1;
        if (write(s->wake[1], &c, 1) == 1)
            pthread_join(s->thread, NULL);
    }
    if (s->ufd >= 0) {
        close(s->ufd);
        if (s->path[0])
            unlink(s->path);
    }
    if (s->udp >= 0)
        close(s->udp);
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    for (size_t i = 0; i < s->cap; i++)
        free(s->table[i].key);
    free(s->table);
    free(s->buf);
    free(s);
}

int(gk_statsd_sink_get_stats)(gk_statsd_sink *s, gk_statsd_sink_stats *out, size_t size)
{
    if (!s)
        return gk__error(-EINVAL, "gk_statsd_sink_get_stats: sink is NULL");
    gk_statsd_sink_stats st = {.size = sizeof st,
                               .datagrams = atomic_load(&s->datagrams),
                               .lines = atomic_load(&s->lines),
                               .malformed = atomic_load(&s->malformed),
                               .dropped_series = atomic_load(&s->dropped_series),
                               .dropped_labels = atomic_load(&s->dropped_labels),
                               .lost_datagrams = atomic_load(&s->lost),
                               .series = atomic_load(&s->series)};
    return gk__sized_put(out, size, &st, sizeof st, "gk_statsd_sink_stats");
}
