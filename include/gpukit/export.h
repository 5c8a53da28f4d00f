/* Export: a small HTTP server for Prometheus (libmicrohttpd) and the node_exporter textfile.
 *
 * The server answers GET/HEAD (other methods get 405, a request with a body 400, both before
 * the body is read) on
 *   /metrics  the registry as Prometheus text 0.0.4 or OpenMetrics 1.0, chosen by the Accept
 *             header, with the matching Content-Type
 *   /healthz  "ok" (200), or 503 with the reason when the monitor's sampler is stuck
 *   /         a short HTML page linking the above
 * It binds to 127.0.0.1:9430 unless told otherwise, serves requests on its own thread (never the
 * sampler's), and reads the registry only through gk_metrics_render, so scrapes never wait for a
 * tick. */
#ifndef GPUKIT_EXPORT_H
#define GPUKIT_EXPORT_H

#include <stddef.h>

#include "metrics.h"
#include "monitor.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GK_EXPORTER_DEFAULT_LISTEN "127.0.0.1:9430"

typedef struct gk_exporter gk_exporter;

typedef struct gk_exporter_config {
    size_t size;         /* sizeof(gk_exporter_config) (set by gk_exporter_config_default) */
    const char *listen;  /* "HOST:PORT" or "[IPv6]:PORT"; port 0 picks a free one; default
                            GK_EXPORTER_DEFAULT_LISTEN (copied) */
    gk_metrics *metrics; /* what /metrics renders; NULL: gk_metrics_default() */
    gk_monitor *monitor; /* for /healthz (may be NULL: then always "ok") */
    double timeout;      /* seconds an idle connection is kept; default 10 */
    /* A web configuration file in the Prometheus exporter convention (docs/monitor.md):
     * tls_server_config (cert_file, key_file, min_version) turns on HTTPS; basic_auth_users
     * (user: bcrypt hash) requires credentials on every path. NULL: plain HTTP, no credentials. */
    const char *web_config;
    /* Seconds a connection may take to send a complete request line and headers, from its
     * accept or the end of its previous request (slowloris clients are closed at it); default
     * 5, at most `timeout`. */
    double header_timeout;
} gk_exporter_config;

/* Fills `cfg` with the defaults. */
GK_API void gk_exporter_config_default(gk_exporter_config *cfg, size_t size);
#define gk_exporter_config_default(cfg) (gk_exporter_config_default)((cfg), sizeof *(cfg))

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port. Returns 0 or -EINVAL (the message, naming
 * the value and the fix, goes to err). */
GK_API int gk_exporter_parse_listen(const char *listen, char *host, size_t hostlen, int *port,
                                    char *err, size_t errlen);

/* Binds and starts serving on a thread of its own. Up to 512 connections are served at once; a
 * connection waits at most header_timeout for a complete request, and past 448 open
 * connections each new one closes the one that has waited longest for its request, so a scrape
 * is answered at once whatever slow or idle clients hold. With basic authentication a password
 * that matched before is checked from memory; others cost one bcrypt check each, at most 5 a
 * second (beyond that: 429). Returns 0, -EINVAL (bad address; a web configuration file that does
 * not parse or names unusable PEM files or hashes), -EADDRINUSE or another negative errno from
 * bind, -ENOMEM, or GK_EUNAVAIL when gpukit was built without libmicrohttpd (GK_HTTP=OFF) or
 * TLS is asked of a libmicrohttpd without it; the one-line message naming the address or file
 * and the fix is in gk_last_error() and in err (which may be NULL). Stop with
 * gk_exporter_destroy. */
GK_API int gk_exporter_start(const gk_exporter_config *cfg, gk_exporter **out, char *err,
                             size_t errlen);

/* The port actually bound (useful with port 0). */
GK_API int gk_exporter_port(const gk_exporter *e);

/* Scrapes served so far. Thread-safe. */
GK_API unsigned long gk_exporter_scrapes(const gk_exporter *e);

/* 1 when the exporter serves an address other than loopback (127.0.0.0/8, ::1) without basic
 * authentication: anyone who can reach it reads the metrics. The same value is the gauge
 * gpukit_exporter_insecure, set before the first scrape; `gpukit serve` warns at start. */
GK_API int gk_exporter_insecure(const gk_exporter *e);

/* What the exporter has done so far. */
typedef struct gk_exporter_stats {
    size_t size;                   /* bytes filled (see gpukit/version.h) */
    unsigned long scrapes;         /* /metrics answered */
    unsigned long header_timeouts; /* connections closed at their header deadline */
    unsigned long evictions;       /* waiting connections closed to keep slots for scrapes */
    int tls, auth, insecure;       /* HTTPS on; basic authentication on; gk_exporter_insecure */
} gk_exporter_stats;

/* Fills *out (zeros for NULL e). Returns 0, or -EINVAL when out is NULL or its size is unset.
 * Thread-safe. */
GK_API int gk_exporter_get_stats(const gk_exporter *e, gk_exporter_stats *out, size_t size);
#define gk_exporter_get_stats(e, out) (gk_exporter_get_stats)((e), (out), sizeof *(out))

/* Stops the server (waits for requests in flight) and frees it. NULL is a no-op. */
GK_API void gk_exporter_destroy(gk_exporter *e);

/* Writes the registry in Prometheus text format to `path` atomically: a temporary file in the
 * same folder, fsync, then rename, so node_exporter's textfile collector never reads half a file.
 * Returns 0 or a negative errno (the temporary file is removed on failure). Thread-safe. */
GK_API int gk_metrics_write_textfile(gk_metrics *m, const char *path);

#ifdef __cplusplus
}
#endif
#endif
