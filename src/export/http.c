/* The /metrics HTTP server over libmicrohttpd: one internal polling thread, GET and HEAD only,
 * content negotiation between Prometheus 0.0.4 and OpenMetrics, a health check that notices a
 * stuck sampler, bound to 127.0.0.1 by default. Built without libmicrohttpd (GK_HTTP=OFF, or its
 * header missing in a plain cc build), gk_exporter_start answers GK_EUNAVAIL. */
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
#include <microhttpd.h>
#endif

void(gk_exporter_config_default)(gk_exporter_config *out, size_t size)
{
    gk_exporter_config c;
    memset(&c, 0, sizeof c);
    c.listen = GK_EXPORTER_DEFAULT_LISTEN;
    c.timeout = 10.0;
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

/* Connections served at once, and the kernel's queue of connections not yet accepted. Idle or slow
 * clients hold a slot until the connection timeout; with room for a few hundred of them a scrape
 * still finds a free slot at once (at 64, a burst of idle clients made scrapes wait for the
 * timeout plus TCP's SYN retries). Each slot costs at most the server's 32 KiB request memory. */
#define GK_HTTP_MAX_CONNECTIONS 512u
#define GK_HTTP_BACKLOG         512

struct gk_exporter {
    struct MHD_Daemon *daemon;
    gk_metrics *metrics;
    gk_monitor *monitor;
    int port;
    atomic_ulong scrapes;
};

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
    enum MHD_Result ret = MHD_queue_response(c, status, r);
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

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req)
{
    (void)version;
    (void)upload;
    gk_exporter *e = cls;
    /* The first call of a request only announces it. */
    static int announced;
    if (*req != &announced) {
        *req = &announced;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0;
        return text_reply(c, MHD_HTTP_BAD_REQUEST, "no request body expected\n");
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return text_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(e, c);
    if (strcmp(url, "/healthz") == 0)
        return serve_health(e, c);
    if (strcmp(url, "/") == 0)
        return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", (void *)index_page,
                     sizeof index_page - 1, MHD_RESPMEM_PERSISTENT);
    return text_reply(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
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
    char host[128];
    int port;
    int rc = gk_exporter_parse_listen(cfg.listen, host, sizeof host, &port, err, errlen);
    if (rc)
        return rc;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
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
    e->metrics = cfg.metrics ? cfg.metrics : gk_metrics_default();
    e->monitor = cfg.monitor;
    atomic_init(&e->scrapes, 0);
    if (!e->metrics) {
        free(e);
        return gk__error_buf(-ENOMEM, err, errlen, "gk_exporter_start: out of host memory");
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
    e->daemon =
        MHD_start_daemon(flags, 0, NULL, NULL, handle, e, MHD_OPTION_LISTEN_SOCKET, fd,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg.timeout,
                         MHD_OPTION_CONNECTION_LIMIT, GK_HTTP_MAX_CONNECTIONS, MHD_OPTION_END);
    if (!e->daemon) {
        close(fd);
        rc = -ENOMEM;
        if (err && errlen)
            snprintf(err, errlen, "cannot start the HTTP server on %s", cfg.listen);
        goto out_free;
    }
    *out = e;
    return 0;
out_free:
    free(e);
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

void gk_exporter_destroy(gk_exporter *e)
{
    if (!e)
        return;
    MHD_stop_daemon(e->daemon); /* closes the listening socket */
    free(e);
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

void gk_exporter_destroy(gk_exporter *e)
{
    (void)e;
}

#endif
