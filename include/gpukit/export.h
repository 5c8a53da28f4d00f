/* Export: a small HTTP server for Prometheus (libmicrohttpd) and the node_exporter textfile.
 *
 * The server answers GET/HEAD on
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
} gk_exporter_config;

/* Fills `cfg` with the defaults. */
GK_API void gk_exporter_config_default(gk_exporter_config *cfg, size_t size);
#define gk_exporter_config_default(cfg) (gk_exporter_config_default)((cfg), sizeof *(cfg))

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port. Returns 0 or -EINVAL (the message, naming
 * the value and the fix, goes to err). */
GK_API int gk_exporter_parse_listen(const char *listen, char *host, size_t hostlen, int *port,
                                    char *err, size_t errlen);

/* Binds and starts serving. Returns 0, -EINVAL (bad address), -EADDRINUSE or another negative
 * errno from bind, -ENOMEM, or GK_EUNAVAIL when gpukit was built without libmicrohttpd
 * (GK_HTTP=OFF); the one-line message naming the address and the fix is in gk_last_error() and
 * in err (which may be NULL).
 * Stop with gk_exporter_destroy. */
GK_API int gk_exporter_start(const gk_exporter_config *cfg, gk_exporter **out, char *err,
                             size_t errlen);

/* The port actually bound (useful with port 0). */
GK_API int gk_exporter_port(const gk_exporter *e);

/* Scrapes served so far. Thread-safe. */
GK_API unsigned long gk_exporter_scrapes(const gk_exporter *e);

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
