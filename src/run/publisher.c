/* The process's default metrics registry and the one publisher that sends it to `gpukit run` (or
 * a node's `gpukit serve`). The library's parts register their series in the registry and know
 * nothing else; when GK_METRICS_SOCKET is set, the first series registered starts one thread that
 * sends every series over StatsD every GK__PUBLISH_INTERVAL_MS and once more at exit, tagged with
 * the launcher's rank and local rank. Arrows: pool/loader/batch -> metrics <- this publisher. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/metrics.h"
#include "run/run_int.h"

#define GK__PUBLISH_INTERVAL_MS 250
#define GK__PUBLISH_MAX_LINES   4096 /* series sent per tick (the registry caps them too) */
/* Lines go out joined by newlines, up to this many bytes a datagram: one send wakes the receiver
 * once for a whole tick of a typical process instead of once per series (receivers read
 * datagrams of up to 64 KiB). */
#define GK__PUBLISH_DGRAM_BYTES 8192
_Static_assert(GK__STATSD_MAX_LINE < GK__PUBLISH_DGRAM_BYTES, "a line fits a datagram");

/* What was last delivered for a counter or a histogram, so only increments are sent. */
typedef struct sent {
    const gk_metric *metric; /* NULL: empty slot */
    uint64_t serial;         /* the series' serial: another series at a reused address starts
                                afresh */
    double value;            /* counter value, or histogram sum */
    uint64_t count;          /* histogram count */
    int announced;           /* delivered once (the first tick sends every series, 0 included) */
} sent;

/* One line to send, built under the registry's lock and sent after it. */
typedef struct line {
    char name[GK__STATSD_MAX_NAME + 1];
    char tags[GK__STATSD_MAX_TAGS + 1];
    const char *type; /* "g" or "c" */
    double value;
    sent *slot; /* counters and histograms: the slot to advance once delivered */
    int what;   /* 0 gauge, 1 counter value, 2 histogram sum, 3 histogram count */
    double now; /* the value (or count) the slot holds once delivered */
    int packed; /* formatted into the datagram being filled */
} line;

typedef struct publisher {
    gk_metrics *reg;
    gk_statsd *client;
    sent *table; /* open addressing by series address */
    size_t cap, used;
    line *lines;
    size_t nlines;
    char *dgram; /* GK__PUBLISH_DGRAM_BYTES: the datagram being filled */
    pthread_t thread;
    pthread_mutex_t send_mu; /* one publish_once at a time, and the client's replacement */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    pid_t pid;      /* the process that started the thread (a forked child has no thread) */
    char path[256]; /* where it sends ("" while the variable is unset) */
} publisher;

static gk_metrics *default_registry;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static publisher *the_publisher;
static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER; /* starting and retargeting */

/* The slot of series `m` (the table grows at half full); NULL when out of memory. */
static sent *slot_of(publisher *p, const gk_metric *m)
{
    if (p->used * 2 >= p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        sent *t = gk__calloc(cap, sizeof *t);
        if (!t)
            return NULL;
        for (size_t i = 0; i < p->cap; i++) {
            if (!p->table[i].metric)
                continue;
            size_t h = ((uintptr_t)p->table[i].metric >> 4) & (cap - 1);
            while (t[h].metric)
                h = (h + 1) & (cap - 1);
            t[h] = p->table[i];
        }
        free(p->table);
        p->table = t;
        p->cap = cap;
    }
    size_t h = ((uintptr_t)m >> 4) & (p->cap - 1);
    while (p->table[h].metric && p->table[h].metric != m)
        h = (h + 1) & (p->cap - 1);
    if (!p->table[h].metric) {
        p->table[h] = (sent){.metric = m};
        p->used++;
    }
    return &p->table[h];
}

/* Copies `s` into dst as StatsD tag text: letters, digits and _ . - / : kept, others become _. */
static size_t tag_text(char *dst, size_t room, const char *s)
{
    size_t n = 0;
    for (; *s && n + 1 < room; s++, n++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-' || c == '/' || c == ':';
        dst[n] = ok ? c : '_';
    }
    dst[n] = '\0';
    return n;
}

/* The series' labels as StatsD tags ("device:cuda:0,pool:main"); the client adds the rank. */
static void make_tags(const gk_metric_sample *s, char *tags, size_t len)
{
    size_t n = 0;
    tags[0] = '\0';
    for (size_t i = 0; i < s->nlabels && n + 4 < len; i++) {
        if (n)
            tags[n++] = ',';
        n += tag_text(tags + n, len - n, s->label_names[i]);
        if (n + 2 < len)
            tags[n++] = ':';
        n += tag_text(tags + n, len - n, s->label_values[i][0] ? s->label_values[i] : "none");
    }
    tags[n] = '\0';
}

static void add_line(publisher *p, const gk_metric_sample *s, const char *suffix, const char *tags,
                     double value, sent *slot, int what, double now)
{
    if (p->nlines == GK__PUBLISH_MAX_LINES)
        return;
    line *l = &p->lines[p->nlines];
    if (snprintf(l->name, sizeof l->name, "%s%s", s->name, suffix) >= (int)sizeof l->name)
        return;
    snprintf(l->tags, sizeof l->tags, "%s", tags);
    l->type = what == 0 ? "g" : "c";
    l->value = value;
    l->slot = slot;
    l->what = what;
    l->now = now;
    p->nlines++;
}

/* Turns one series into lines: a gauge's value; the increments of a counter, or of a
 * histogram's sum and count, since they were last delivered. */
static int visit(void *user, const gk_metric_sample *s)
{
    publisher *p = user;
    char tags[GK__STATSD_MAX_TAGS + 1];
    make_tags(s, tags, sizeof tags);
    if (s->type == GK_METRIC_GAUGE) {
        add_line(p, s, "", tags, s->value, NULL, 0, 0);
        return 0;
    }
    sent *slot = slot_of(p, s->metric);
    if (!slot)
        return 0; /* out of host memory: this series waits for the next tick */
    if (slot->serial != s->serial)
        *slot = (sent){.metric = s->metric, .serial = s->serial};
    double inc = s->value > slot->value ? s->value - slot->value : 0;
    if (s->type == GK_METRIC_COUNTER) {
        if (inc > 0 || !slot->announced)
            add_line(p, s, "", tags, inc, slot, 1, s->value);
        return 0;
    }
    uint64_t n = s->count > slot->count ? s->count - slot->count : 0;
    if (n > 0 || !slot->announced) {
        add_line(p, s, "_sum", tags, inc, slot, 2, s->value);
        add_line(p, s, "_count", tags, (double)n, slot, 3, (double)s->count);
    }
    return 0;
}

/* Sends the datagram holding lines [from, to) (those formatted) and, once delivered, advances
 * their slots. Returns the number of lines it held when it could not be delivered, else 0. */
static size_t flush(publisher *p, size_t from, size_t to, size_t len)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++)
        n += p->lines[i].packed != 0;
    if (n == 0)
        return 0;
    if (gk__statsd_send_datagram(p->client, p->dgram, len, n) != 0)
        return n;
    for (size_t i = from; i < to; i++) {
        line *l = &p->lines[i];
        if (!l->packed || !l->slot)
            continue;
        if (l->what == 3)
            l->slot->count = (uint64_t)l->now;
        else
            l->slot->value = l->now;
        l->slot->announced = 1;
    }
    return 0;
}

/* Sends the registry once, many lines a datagram. Returns the number of lines that could not be
 * delivered (their increments stay pending for the next call). Called by one thread at a time. */
static size_t publish_once(publisher *p)
{
    p->nlines = 0;
    if (!gk_statsd_active(p->client))
        return 0; /* the variable was unset: nothing to format (a new socket starts afresh) */
    (void)gk_metrics_foreach(p->reg, visit, p);
    size_t failed = 0, from = 0, len = 0;
    char text[GK__STATSD_MAX_LINE];
    for (size_t i = 0; i < p->nlines; i++) {
        line *l = &p->lines[i];
        int n = gk__statsd_format(p->client, text, sizeof text, l->name, l->value, l->type,
                                  l->tags[0] ? l->tags : NULL);
        l->packed = n > 0;
        if (n <= 0) {
            failed++; /* a name StatsD cannot carry */
            continue;
        }
        if (len && len + 1 + (size_t)n > GK__PUBLISH_DGRAM_BYTES) {
            failed += flush(p, from, i, len);
            from = i;
            len = 0;
        }
        if (len)
            p->dgram[len++] = '\n';
        memcpy(p->dgram + len, text, (size_t)n);
        len += (size_t)n;
    }
    failed += flush(p, from, p->nlines, len);
    return failed;
}

static void *run(void *arg)
{
    publisher *p = arg;
    (void)pthread_setname_np(pthread_self(), "gk-publisher"); /* as top -H and perf show it */
    struct timespec due;
    clock_gettime(CLOCK_MONOTONIC, &due);
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        due.tv_nsec += GK__PUBLISH_INTERVAL_MS * 1000000L;
        while (due.tv_nsec >= 1000000000L) {
            due.tv_nsec -= 1000000000L;
            due.tv_sec++;
        }
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &due) != ETIMEDOUT)
            ;
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->mu);
        pthread_mutex_lock(&p->send_mu);
        (void)publish_once(p);
        pthread_mutex_unlock(&p->send_mu);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* At exit: stops the thread and sends everything once more, retrying for up to 100 ms while the
 * receiver's queue is full. */
static void stop_at_exit(void)
{
    publisher *p = the_publisher;
    if (!p || p->pid != getpid())
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    struct timespec pause = {0, 5 * 1000 * 1000};
    pthread_mutex_lock(&p->send_mu);
    for (int i = 0; i < 20 && publish_once(p) != 0; i++)
        nanosleep(&pause, NULL);
    pthread_mutex_unlock(&p->send_mu);
}

/* Starts the publisher at GK_METRICS_SOCKET (set) for `reg`. Returns 0 or a negative errno.
 * Caller holds start_mu. */
static int start_locked(gk_metrics *reg)
{
    const char *path = getenv(GK_METRICS_SOCKET_ENV);
    if (!path || !*path || the_publisher)
        return 0;
    publisher *p = gk__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    int rc = -ENOMEM;
    p->reg = reg;
    p->pid = getpid();
    snprintf(p->path, sizeof p->path, "%s", path);
    p->lines = gk__calloc(GK__PUBLISH_MAX_LINES, sizeof *p->lines);
    p->dgram = gk__malloc(GK__PUBLISH_DGRAM_BYTES);
    pthread_condattr_t ca;
    if (!p->lines || !p->dgram || (rc = gk_statsd_open(path, &p->client)) != 0 ||
        (rc = -pthread_condattr_init(&ca)) != 0)
        goto out_free;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->send_mu, NULL);
    if ((rc = -pthread_create(&p->thread, NULL, run, p)) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        pthread_mutex_destroy(&p->send_mu);
        goto out_free;
    }
    the_publisher = p;
    static int registered;
    if (!registered++)
        atexit(stop_at_exit);
    return 0;
out_free:
    /* Without a publisher the program runs on; its figures are simply not sent. */
    gk_statsd_close(p->client);
    free(p->lines);
    free(p->dgram);
    free(p);
    return rc;
}

/* Starts the publisher when the default registry gets its first series (under gpukit run). */
static void start(void *user, gk_metrics *reg)
{
    (void)user;
    pthread_mutex_lock(&start_mu);
    (void)start_locked(reg);
    pthread_mutex_unlock(&start_mu);
}

int gk_metrics_publisher_refresh(void)
{
    gk_metrics *reg = gk_metrics_default();
    if (!reg)
        return gk__error(-ENOMEM, "gk_metrics_publisher_refresh: out of host memory");
    int rc = 0;
    pthread_mutex_lock(&start_mu);
    publisher *p = the_publisher;
    if (p && p->pid != getpid()) {
        /* A forked child inherits the structure but not the thread: its figures go unsent
         * (leaked on purpose: its locks may have been held at the fork). */
        p = the_publisher = NULL;
    }
    const char *path = getenv(GK_METRICS_SOCKET_ENV);
    if (!path)
        path = "";
    if (!p) {
        rc = start_locked(reg);
    } else if (strncmp(p->path, path, sizeof p->path) != 0) {
        gk_statsd *c = NULL;
        rc = gk_statsd_open(NULL, &c); /* inactive when the variable is unset */
        if (rc == 0) {
            pthread_mutex_lock(&p->send_mu);
            gk_statsd_close(p->client);
            p->client = c;
            snprintf(p->path, sizeof p->path, "%s", path);
            /* A new receiver has seen nothing: every series is announced again, counters and
             * histograms with their whole totals. */
            if (p->table)
                memset(p->table, 0, p->cap * sizeof *p->table);
            p->used = 0;
            pthread_mutex_unlock(&p->send_mu);
        }
    }
    pthread_mutex_unlock(&start_mu);
    if (rc)
        return gk__error(rc, "gk_metrics_publisher_refresh: %s: %s", GK_METRICS_SOCKET_ENV,
                         gk_strerror(rc));
    return 0;
}

int gk_metrics_publish_now(void)
{
    pthread_mutex_lock(&start_mu);
    publisher *p = the_publisher && the_publisher->pid == getpid() ? the_publisher : NULL;
    size_t failed = 0;
    if (p) {
        pthread_mutex_lock(&p->send_mu);
        failed = publish_once(p);
        pthread_mutex_unlock(&p->send_mu);
    }
    pthread_mutex_unlock(&start_mu);
    return failed > GK__PUBLISH_MAX_LINES ? GK__PUBLISH_MAX_LINES : (int)failed;
}

static void default_init(void)
{
    if (gk_metrics_create(NULL, &default_registry) != 0) {
        default_registry = NULL;
        return;
    }
    (void)gk_metrics_on_first_series(default_registry, start, NULL);
}

gk_metrics *gk_metrics_default(void)
{
    pthread_once(&default_once, default_init);
    return default_registry;
}
