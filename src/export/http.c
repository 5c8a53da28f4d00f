/* The /metrics HTTP server over libmicrohttpd: one serving thread of ours driving it in its
 * external epoll mode, GET and HEAD only, content negotiation between Prometheus 0.0.4 and
 * OpenMetrics, a health check that notices a stuck sampler, bound to 127.0.0.1 by default.
 * Against abuse: a header deadline per connection, a reserve of connection slots for new
 * scrapes, requests refused before their body is read. Optionally TLS (GnuTLS through
 * libmicrohttpd) and basic authentication (bcrypt through crypt(3)) from a web configuration
 * file. Built without libmicrohttpd (GK_HTTP=OFF, or its header missing in a plain cc build),
 * gk_exporter_start answers GK_EUNAVAIL. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/export.h"

#if defined(GK_NO_MHD)
#define GK__HTTP 0
#elif defined(__has_include)
#if __has_include(<microhttpd.h>)
#define GK__HTTP 1
#else
#define GK__HTTP 0
#endif
#else
#define GK__HTTP 1
#endif

#if GK__HTTP
#include <crypt.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>

#include "export/export_int.h"
#endif

void(gk_exporter_config_default)(gk_exporter_config *out, size_t size)
{
    gk_exporter_config c;
    memset(&c, 0, sizeof c);
    c.listen = GK_EXPORTER_DEFAULT_LISTEN;
    c.timeout = 10.0;
    c.header_timeout = 5.0;
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_exporter_config");
}

int gk_exporter_parse_listen(const char *listen, char *host, size_t hostlen, int *port, char *err,
                             size_t errlen)
{
    const char *fix = "(try 127.0.0.1:9430 or [::1]:9430)";
    if (!listen || !host || !port || hostlen == 0)
        return gk__error_buf(
            -EINVAL, err, errlen,
            "gk_exporter_parse_listen: listen, host or port is NULL or hostlen is 0");
    const char *colon;
    size_t hl;
    const char *h = listen;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            goto bad;
        h = listen + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            goto bad;
        hl = (size_t)(colon - listen);
    }
    if (hl == 0 || hl >= hostlen)
        goto bad;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end || p < 0 || p > 65535)
        goto bad;
    *port = (int)p;
    return 0;
bad:
    return gk__error_buf(-EINVAL, err, errlen, "listen address \"%s\" is not HOST:PORT %s", listen,
                         fix);
}

#if GK__HTTP

/* Connections libmicrohttpd serves at once, and the kernel's queue of connections not yet
 * accepted. The exporter keeps GK_HTTP_RESERVE of the slots free: when a new connection would
 * take one of them, the connection that has waited longest for its request (idle, trickling a
 * slowloris header, or kept alive between scrapes) is closed instead, so a new scrape always gets
 * a slot at once however many slow clients there are. Each slot costs at most libmicrohttpd's
 * 32 KiB of request memory. */
#define GK_HTTP_MAX_CONNECTIONS 512u
#define GK_HTTP_RESERVE         64u
#define GK_HTTP_BACKLOG         512
/* Password checks (bcrypt) that miss the cache, per second at most: each takes tens of
 * milliseconds of the serving thread, so a flood of wrong passwords must not starve scrapes. */
#define GK_HTTP_AUTH_PER_S 5

/* A connection as the exporter tracks it, from accept to close, in the order of `since`. */
typedef struct conn {
    struct conn *prev, *next;
    int fd;
    double since;   /* accepted, or its last request answered: the header deadline counts from it */
    int in_request; /* its request line and headers have arrived; being answered */
    int closing;    /* shut down by the exporter; libmicrohttpd closes it on its next turn */
} conn;

struct gk_exporter {
    struct MHD_Daemon *daemon;
    gk_metrics *metrics;
    gk_monitor *monitor;
    int port;
    atomic_ulong scrapes, header_timeouts, evictions;
    pthread_t thread;
    int thread_started;
    int wake_fd; /* an eventfd that ends the serving loop */
    atomic_int stop;
    double header_timeout;
    /* Touched by the serving thread only (callbacks run there). */
    conn *head, *tail;
    size_t open; /* tracked connections not closing */
    gk__web_config web;
    char *cert_pem, *key_pem;
    char **auth_cache; /* per user: the last password that matched its hash, or NULL */
    struct crypt_data *crypt;
    double auth_window_start;
    int auth_checks;
    int insecure;
    gk_metric *m_closed_timeout, *m_closed_evicted, *m_auth_failed;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char index_page[] =
    "<!doctype html><html><head><title>gpukit</title></head><body>"
    "<h1>gpukit exporter</h1><p><a href=\"/metrics\">/metrics</a> (Prometheus, OpenMetrics) "
    "&middot; <a href=\"/healthz\">/healthz</a></p></body></html>\n";

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (status == MHD_HTTP_TOO_MANY_REQUESTS)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret;
    if (status == MHD_HTTP_UNAUTHORIZED)
        ret = MHD_queue_basic_auth_fail_response(c, "gpukit", r);
    else
        ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text_reply(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, "text/plain; charset=utf-8", (void *)text, strlen(text),
                 MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result serve_metrics(gk_exporter *e, struct MHD_Connection *c)
{
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    gk_metrics_format fmt = gk_metrics_negotiate(accept);
    char *body = NULL;
    size_t len = 0;
    if (gk_metrics_render(e->metrics, fmt, &body, &len) != 0)
        return text_reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot render the metrics\n");
    atomic_fetch_add(&e->scrapes, 1);
    return reply(c, MHD_HTTP_OK, gk_metrics_content_type(fmt), body, len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result serve_health(gk_exporter *e, struct MHD_Connection *c)
{
    if (e->monitor) {
        gk_monitor_stats st;
        gk_monitor_get_stats(e->monitor, &st);
        double limit = 3.0 * st.interval > 10.0 ? 3.0 * st.interval : 10.0;
        if (st.running && st.seconds_since_tick > limit) {
            char *msg = gk__malloc(128);
            if (!msg)
                return MHD_NO;
            int n =
                snprintf(msg, 128, "sampler stuck: no tick for %.1f s\n", st.seconds_since_tick);
            return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", msg,
                         (size_t)n, MHD_RESPMEM_MUST_FREE);
        }
    }
    return text_reply(c, MHD_HTTP_OK, "ok\n");
}

/* Compares without an early exit, so the time taken says nothing about where they differ. */
static int same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

enum auth_result { AUTH_OK, AUTH_DENIED, AUTH_BUSY };

/* Basic authentication against basic_auth_users: a password that matched before is answered
 * from the cache; any other costs a bcrypt check, at most GK_HTTP_AUTH_PER_S a second. */
static enum auth_result check_auth(gk_exporter *e, struct MHD_Connection *c)
{
    char *pass = NULL;
    char *user = MHD_basic_auth_get_username_password(c, &pass);
    enum auth_result res = AUTH_DENIED;
    if (!user || !pass)
        goto out;
    size_t k = 0;
    while (k < e->web.nusers && strcmp(e->web.users[k].name, user) != 0)
        k++;
    if (k < e->web.nusers && e->auth_cache[k] && same_secret(e->auth_cache[k], pass)) {
        res = AUTH_OK;
        goto out;
    }
    double now = mono_now();
    if (now - e->auth_window_start >= 1.0) {
        e->auth_window_start = now;
        e->auth_checks = 0;
    }
    if (e->auth_checks >= GK_HTTP_AUTH_PER_S) {
        res = AUTH_BUSY;
        goto out;
    }
    e->auth_checks++;
    /* An unknown user costs a check too (against a user's hash), so timing tells no names. */
    const char *hash = e->web.users[k < e->web.nusers ? k : 0].hash;
    const char *got = crypt_r(pass, hash, e->crypt);
    if (k < e->web.nusers && got && same_secret(got, hash)) {
        char *copy = gk__strdup(pass);
        if (copy) {
            free(e->auth_cache[k]);
            e->auth_cache[k] = copy;
        }
        res = AUTH_OK;
    }
out:
    if (res != AUTH_OK)
        gk_counter_add(e->m_auth_failed, 1);
    free(user);
    free(pass);
    return res;
}

static conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void list_remove(gk_exporter *e, conn *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        e->head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        e->tail = k->prev;
    k->prev = k->next = NULL;
}

static void list_append(gk_exporter *e, conn *k)
{
    k->prev = e->tail;
    k->next = NULL;
    if (e->tail)
        e->tail->next = k;
    else
        e->head = k;
    e->tail = k;
}

/* Closes a connection from outside libmicrohttpd: its next read sees the end of the stream. Runs
 * on the serving thread, before libmicrohttpd has closed the descriptor (it tells us first). */
static void shut(gk_exporter *e, conn *k)
{
    shutdown(k->fd, SHUT_RDWR);
    k->closing = 1;
    e->open--;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req)
{
    (void)version;
    (void)upload;
    gk_exporter *e = cls;
    /* The first call of a request comes when its headers are complete: everything that can be
     * refused is refused now, before any body is read. */
    static int announced;
    if (*req != &announced) {
        *req = &announced;
        conn *k = conn_of(c);
        if (k)
            k->in_request = 1;
        if (e->web.nusers) {
            enum auth_result a = check_auth(e, c);
            if (a == AUTH_BUSY)
                return text_reply(c, MHD_HTTP_TOO_MANY_REQUESTS,
                                  "too many password checks: try again in a second\n");
            if (a == AUTH_DENIED)
                return text_reply(c, MHD_HTTP_UNAUTHORIZED, "credentials required\n");
        }
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
            return text_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        const char *clen =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
            (clen && strtoull(clen, NULL, 10) != 0))
            return text_reply(c, MHD_HTTP_BAD_REQUEST, "no request body expected\n");
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0; /* a body that was not announced: read and dropped */
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(e, c);
    if (strcmp(url, "/healthz") == 0)
        return serve_health(e, c);
    if (strcmp(url, "/") == 0)
        return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", (void *)index_page,
                     sizeof index_page - 1, MHD_RESPMEM_PERSISTENT);
    return text_reply(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
}

/* A request has been answered (or dropped): the connection waits for its next request, and its
 * header deadline starts again. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req,
                         enum MHD_RequestTerminationCode toe)
{
    (void)req;
    (void)toe;
    gk_exporter *e = cls;
    conn *k = conn_of(c);
    if (!k)
        return;
    k->in_request = 0;
    k->since = mono_now();
    list_remove(e, k);
    list_append(e, k);
}

/* Connections come and go. A new one that would take a reserved slot closes the connection that
 * has waited longest for its request. */
static void on_connection(void *cls, struct MHD_Connection *c, void **ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    gk_exporter *e = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn *k = ci ? gk__calloc(1, sizeof *k) : NULL;
        *ctx = k;
        if (!k)
            return; /* untracked: it still has libmicrohttpd's idle timeout */
        k->fd = ci->connect_fd;
        k->since = mono_now();
        list_append(e, k);
        e->open++;
        if (e->open > GK_HTTP_MAX_CONNECTIONS - GK_HTTP_RESERVE) {
            for (conn *old = e->head; old; old = old->next) {
                if (!old->in_request && !old->closing && old != k) {
                    atomic_fetch_add(&e->evictions, 1);
                    gk_counter_add(e->m_closed_evicted, 1);
                    shut(e, old);
                    break;
                }
            }
        }
        return;
    }
    conn *k = *ctx;
    if (!k)
        return;
    if (!k->closing)
        e->open--;
    list_remove(e, k);
    free(k);
    *ctx = NULL;
}

/* Closes every connection that has waited longer than the header timeout for its request (a
 * slowloris client trickling its headers, an idle keep-alive): the list is in waiting order, so
 * the scan stops at the first one still in time. Returns the seconds until the next deadline. */
static double enforce_deadlines(gk_exporter *e, double now)
{
    for (conn *k = e->head; k; k = k->next) {
        if (k->in_request || k->closing)
            continue;
        double left = k->since + e->header_timeout - now;
        if (left > 0)
            return left;
        atomic_fetch_add(&e->header_timeouts, 1); /* counted before the client can see it */
        gk_counter_add(e->m_closed_timeout, 1);
        shut(e, k);
    }
    return e->header_timeout;
}

/* The serving thread: libmicrohttpd in its external epoll mode, woken by its epoll descriptor,
 * by the stop eventfd, by its own timeouts and by the next header deadline. */
static void *serve_loop(void *arg)
{
    gk_exporter *e = arg;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(e->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    int efd = di ? di->epoll_fd : -1;
    while (!atomic_load(&e->stop)) {
        double next = enforce_deadlines(e, mono_now());
        int wait_ms = (int)(next * 1000) + 1;
        MHD_UNSIGNED_LONG_LONG mhd_ms;
        if (MHD_get_timeout(e->daemon, &mhd_ms) == MHD_YES && mhd_ms < (unsigned)wait_ms)
            wait_ms = (int)mhd_ms;
        if (wait_ms > 1000)
            wait_ms = 1000;
        struct pollfd p[2] = {{.fd = efd, .events = POLLIN}, {.fd = e->wake_fd, .events = POLLIN}};
        if (poll(p, 2, wait_ms) < 0 && errno != EINTR)
            break;
        MHD_run(e->daemon);
    }
    return NULL;
}

/* 1 for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(a))
        return 1;
    return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
}

/* Reads a PEM file whole (at most 1 MiB). */
static char *read_pem(const char *path, const char *what, char *err, size_t errlen)
{
    FILE *f = gk__fopen(path, "re");
    char *buf = NULL;
    if (!f) {
        gk__error_buf(-errno, err, errlen, "web config: cannot open the %s %s: %s", what, path,
                      strerror(errno));
        return NULL;
    }
    buf = gk__malloc((1 << 20) + 1);
    size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n == (1 << 20) || !memmem(buf, n, "-----BEGIN ", 11)) {
        gk__error_buf(-EINVAL, err, errlen,
                      "web config: the %s %s is not a PEM file of at most 1 MiB", what, path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Registers the exporter's own series; a registry that refuses them costs only the series. */
static void register_metrics(gk_exporter *e)
{
    gk_metric *g = NULL;
    if (gk_metrics_gauge(e->metrics, "gpukit_exporter_insecure",
                         "1 when this exporter serves an address other than loopback without "
                         "authentication (anyone who reaches it reads the metrics)",
                         NULL, &g) == 0)
        gk_gauge_set(g, e->insecure);
    static const char *const timeout_l[] = {"reason", "header_timeout", NULL};
    static const char *const evict_l[] = {"reason", "evicted", NULL};
    const char *help = "Connections the exporter closed: header_timeout (no complete request "
                       "within the header timeout), evicted (the oldest waiting connection, to "
                       "keep slots free for new scrapes)";
    gk_metrics_counter(e->metrics, "gpukit_exporter_connections_closed_total", help, timeout_l,
                       &e->m_closed_timeout);
    gk_metrics_counter(e->metrics, "gpukit_exporter_connections_closed_total", help, evict_l,
                       &e->m_closed_evicted);
    if (e->web.nusers)
        gk_metrics_counter(e->metrics, "gpukit_exporter_auth_failures_total",
                           "Requests refused for missing or wrong credentials, or for too "
                           "many password checks at once",
                           NULL, &e->m_auth_failed);
}

/* Loads the web configuration: the PEM files and the users (their hashes checked against
 * crypt(3) once). */
static int load_web_config(gk_exporter *e, const char *path, char *err, size_t errlen)
{
    int rc = gk__web_config_load(path, &e->web, err, errlen);
    if (rc)
        return rc;
    if (e->web.cert_file) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS))
            return gk__error_buf(GK_EUNAVAIL, err, errlen,
                                 "web config %s: this libmicrohttpd has no TLS support (install "
                                 "Debian's libmicrohttpd12, built with GnuTLS)",
                                 path);
        e->cert_pem = read_pem(e->web.cert_file, "cert_file", err, errlen);
        e->key_pem = e->cert_pem ? read_pem(e->web.key_file, "key_file", err, errlen) : NULL;
        if (!e->cert_pem || !e->key_pem)
            return -EINVAL; /* read_pem said why */
    }
    if (e->web.nusers) {
        e->crypt = gk__calloc(1, sizeof *e->crypt);
        e->auth_cache = gk__calloc(e->web.nusers, sizeof *e->auth_cache);
        if (!e->crypt || !e->auth_cache)
            return gk__error_buf(-ENOMEM, err, errlen, "web config %s: out of host memory", path);
        for (size_t i = 0; i < e->web.nusers; i++) {
            const char *h = crypt_r("", e->web.users[i].hash, e->crypt);
            if (!h || h[0] == '*')
                return gk__error_buf(-EINVAL, err, errlen,
                                     "web config %s: the hash of \"%s\" is not one this system's "
                                     "crypt(3) checks (bcrypt $2y$ needs libxcrypt)",
                                     path, e->web.users[i].name);
        }
    }
    return 0;
}

static void exporter_free(gk_exporter *e)
{
    if (e->auth_cache)
        for (size_t i = 0; i < e->web.nusers; i++)
            free(e->auth_cache[i]);
    free(e->auth_cache);
    free(e->crypt);
    free(e->cert_pem);
    if (e->key_pem) {
        explicit_bzero(e->key_pem, strlen(e->key_pem));
        free(e->key_pem);
    }
    gk__web_config_free(&e->web);
    if (e->wake_fd >= 0)
        close(e->wake_fd);
    free(e);
}

int gk_exporter_start(const gk_exporter_config *cfg_in, gk_exporter **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return gk__error(-EINVAL, "gk_exporter_start: out is NULL");
    *out = NULL;
    gk_exporter_config cfg;
    gk_exporter_config_default(&cfg);
    if (cfg_in && gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_exporter_config") != 0)
        return gk__error_buf(-EINVAL, err, errlen, "%s", gk_last_error());
    if (!cfg.listen || !*cfg.listen)
        cfg.listen = GK_EXPORTER_DEFAULT_LISTEN;
    if (!(cfg.timeout > 0))
        cfg.timeout = 10.0;
    if (!(cfg.header_timeout > 0))
        cfg.header_timeout = 5.0;
    if (cfg.header_timeout > cfg.timeout)
        cfg.header_timeout = cfg.timeout;
    char host[128];
    int port;
    int rc = gk_exporter_parse_listen(cfg.listen, host, sizeof host, &port, err, errlen);
    if (rc)
        return rc;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ITC;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else {
        return gk__error_buf(
            -EINVAL, err, errlen,
            "listen address \"%s\": \"%s\" is not a numeric IP address (try 127.0.0.1)", cfg.listen,
            host);
    }
    gk_exporter *e = gk__calloc(1, sizeof *e);
    if (!e)
        return gk__error_buf(-ENOMEM, err, errlen, "gk_exporter_start: out of host memory");
    e->wake_fd = -1;
    e->metrics = cfg.metrics ? cfg.metrics : gk_metrics_default();
    e->monitor = cfg.monitor;
    e->header_timeout = cfg.header_timeout;
    atomic_init(&e->scrapes, 0);
    atomic_init(&e->header_timeouts, 0);
    atomic_init(&e->evictions, 0);
    atomic_init(&e->stop, 0);
    if (!e->metrics) {
        rc = gk__error_buf(-ENOMEM, err, errlen, "gk_exporter_start: out of host memory");
        goto out_free;
    }
    if (cfg.web_config && *cfg.web_config) {
        rc = load_web_config(e, cfg.web_config, err, errlen);
        if (rc)
            goto out_free;
    }
    e->insecure = !is_loopback(&ss) && e->web.nusers == 0;
    e->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->wake_fd < 0) {
        rc = -errno;
        goto out_free;
    }
    /* Bind ourselves so the error is the real errno, then hand the socket to the daemon. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t alen = ss.ss_family == AF_INET ? sizeof *v4 : sizeof *v6;
    if (bind(fd, (struct sockaddr *)&ss, alen) != 0 || listen(fd, GK_HTTP_BACKLOG) != 0) {
        rc = -errno;
        gk__error_buf(rc, err, errlen,
                      "cannot listen on %s: %s (choose another port with --listen)", cfg.listen,
                      strerror(errno));
        close(fd);
        goto out_free;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        e->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                   : ((struct sockaddr_in6 *)&bound)->sin6_port);
    /* TLS 1.2 and 1.3 only (1.3 alone with min_version: TLS13), GnuTLS's usual ciphers. */
    const char *prio = e->web.min_tls13 ? "NORMAL:-VERS-ALL:+VERS-TLS1.3"
                                        : "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
    struct MHD_OptionItem tls[] = {{MHD_OPTION_HTTPS_MEM_CERT, 0, e->cert_pem},
                                   {MHD_OPTION_HTTPS_MEM_KEY, 0, e->key_pem},
                                   {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)prio},
                                   {MHD_OPTION_END, 0, NULL}};
    if (e->cert_pem)
        flags |= MHD_USE_TLS;
    e->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, e, MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg.timeout,
                                 MHD_OPTION_CONNECTION_LIMIT, GK_HTTP_MAX_CONNECTIONS,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, e,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, e, MHD_OPTION_ARRAY,
                                 e->cert_pem ? tls : tls + 3, MHD_OPTION_END);
    if (!e->daemon) {
        close(fd);
        rc = gk__error_buf(e->cert_pem ? -EINVAL : -ENOMEM, err, errlen,
                           e->cert_pem ? "cannot start TLS on %s: check that cert_file and "
                                         "key_file are a PEM certificate and its private key"
                                       : "cannot start the HTTP server on %s",
                           cfg.listen);
        goto out_free;
    }
    register_metrics(e);
    int perr = pthread_create(&e->thread, NULL, serve_loop, e);
    if (perr) {
        MHD_stop_daemon(e->daemon);
        rc = -perr;
        goto out_free;
    }
    e->thread_started = 1;
    *out = e;
    return 0;
out_free:
    exporter_free(e);
    if (err && errlen && err[0])
        return gk__error_text(rc, err);
    return gk__error(rc, "cannot start the exporter on %s: %s", cfg.listen, gk_strerror(rc));
}

int gk_exporter_port(const gk_exporter *e)
{
    return e ? e->port : 0;
}

unsigned long gk_exporter_scrapes(const gk_exporter *e)
{
    return e ? atomic_load(&((gk_exporter *)e)->scrapes) : 0;
}

int gk_exporter_insecure(const gk_exporter *e)
{
    return e ? e->insecure : 0;
}

int(gk_exporter_get_stats)(const gk_exporter *e, gk_exporter_stats *out, size_t size)
{
    gk_exporter_stats st;
    memset(&st, 0, sizeof st);
    if (e) {
        gk_exporter *m = (gk_exporter *)e;
        st.scrapes = atomic_load(&m->scrapes);
        st.header_timeouts = atomic_load(&m->header_timeouts);
        st.evictions = atomic_load(&m->evictions);
        st.tls = e->cert_pem != NULL;
        st.auth = e->web.nusers > 0;
        st.insecure = e->insecure;
    }
    return gk__sized_put(out, size, &st, sizeof st, "gk_exporter_stats");
}

void gk_exporter_destroy(gk_exporter *e)
{
    if (!e)
        return;
    atomic_store(&e->stop, 1);
    uint64_t one = 1;
    if (write(e->wake_fd, &one, sizeof one) < 0) {
        /* the loop also wakes within a second on its own */
    }
    if (e->thread_started)
        pthread_join(e->thread, NULL);
    MHD_stop_daemon(e->daemon); /* closes the listening socket and every connection */
    exporter_free(e);
}

#else /* no libmicrohttpd */

static const char no_http[] = "this gpukit was built without libmicrohttpd, so it has no HTTP "
                              "server (use --textfile, or rebuild with libmicrohttpd-dev)";

int gk_exporter_start(const gk_exporter_config *cfg, gk_exporter **out, char *err, size_t errlen)
{
    (void)cfg;
    if (out)
        *out = NULL;
    return gk__error_buf(GK_EUNAVAIL, err, errlen, "%s", no_http);
}

int gk_exporter_port(const gk_exporter *e)
{
    (void)e;
    return 0;
}

unsigned long gk_exporter_scrapes(const gk_exporter *e)
{
    (void)e;
    return 0;
}

int gk_exporter_insecure(const gk_exporter *e)
{
    (void)e;
    return 0;
}

int(gk_exporter_get_stats)(const gk_exporter *e, gk_exporter_stats *out, size_t size)
{
    (void)e;
    gk_exporter_stats st;
    memset(&st, 0, sizeof st);
    return gk__sized_put(out, size, &st, sizeof st, "gk_exporter_stats");
}

void gk_exporter_destroy(gk_exporter *e)
{
    (void)e;
}

#endif
