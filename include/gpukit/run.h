/* Running a command under observation, and sending it metrics.
 *
 * gk_run_execute starts a command, samples the host and the command's whole process tree (and
 * the GPUs when NVML is available) on absolute monotonic deadlines, receives the StatsD metrics
 * the command sends to the Unix datagram socket named by GK_METRICS_SOCKET in its environment,
 * and records everything as JSON Lines (see gpukit/report.h). `gpukit run` is built on it.
 *
 * Programs publish metrics with gk_statsd_send (or a gk_statsd client): StatsD lines
 * `name:value|g` (gauge), `|c` (counter increment), `|ms` (a duration in milliseconds), `|h`
 * (a value for a distribution), with optional `|@rate` and `|#tag:value,tag2:value` suffixes.
 * Names use letters, digits and `_ . - /`; docs/run.md shows how to send from Python and shell. */
#ifndef GPUKIT_RUN_H
#define GPUKIT_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The environment variable that carries the socket path to the command. */
#define GK_METRICS_SOCKET_ENV "GK_METRICS_SOCKET"

/* --- Sending metrics ----------------------------------------------------------------------- */

typedef struct gk_statsd gk_statsd;

/* Opens a client on the socket at `path`, or on $GK_METRICS_SOCKET when `path` is NULL. When no
 * path is given and the variable is unset (the program is not running under gpukit run), *out
 * is a valid client whose sends do nothing. Returns 0, -EINVAL (path too long), -ENOMEM or the
 * negative errno of socket(2). A send that finds the receiver's queue full waits for room for
 * at most 20 ms (in short sleeps), then drops the value (counted); it never blocks longer. */
GK_API int gk_statsd_open(const char *path, gk_statsd **out);

/* Closes a client. NULL is a no-op. */
GK_API void gk_statsd_close(gk_statsd *c);

/* Sends one value: `type` is "g", "c", "ms" or "h"; `tags` is NULL or "k:v,k2:v2". Returns 0
 * (also when the client is inactive), -EINVAL for a bad name, type or tags (checked with the
 * receiver's rules), -EAGAIN when the receiver's queue stayed full for 20 ms (value dropped), or the negative
 * errno of send. A client may be used by one thread at a time. */
GK_API int gk_statsd_client_send(gk_statsd *c, const char *name, double value, const char *type,
                                 const char *tags);

/* Values this client could not deliver (full queue or send error). */
GK_API uint64_t gk_statsd_dropped(const gk_statsd *c);

/* 1 when the client sends somewhere (it was opened on a socket), 0 when its sends do nothing
 * (NULL, or no path and GK_METRICS_SOCKET unset). A binding asks once and then skips its own work
 * for every value outside `gpukit run`. */
GK_API int gk_statsd_active(const gk_statsd *c);

/* One-shot: opens a client from $GK_METRICS_SOCKET, sends one value and closes it (about the
 * cost of three system calls). A no-op returning 0 when the variable is unset. Thread-safe. */
GK_API int gk_statsd_send(const char *name, double value, const char *type);

/* --- The process publisher ----------------------------------------------------------------- */

/* Every series of gk_metrics_default() (the pools', loaders', batch finder's, and the program's
 * own) goes to GK_METRICS_SOCKET through one thread per process, every 250 ms and once more at
 * exit, tagged with the launcher's rank and local rank; it starts by itself when the variable is
 * set and the registry gets its first series. */

/* Reads GK_METRICS_SOCKET again: starts the publisher when the variable is set now (a program
 * that set it after its first series), sends to the new socket when it changed (announcing every
 * series afresh), and stops sending while it is unset; the same value changes nothing. Returns 0, or the error of opening the
 * socket or starting the thread (the message in gk_last_error()). Thread-safe. */
GK_API int gk_metrics_publisher_refresh(void);

/* Sends the registry now, on the calling thread (before a fork or exec, at the end of an epoch,
 * in a test). Returns the number of series whose lines the receiver could not take (they go with
 * the next send); 0 also when no publisher runs. Thread-safe. */
GK_API int gk_metrics_publish_now(void);

/* --- Receiving metrics: a node's sink ------------------------------------------------------ */

/* `gpukit serve --statsd PATH` runs one of these: it receives StatsD lines from every process on
 * the node and turns each series into a metric of a registry (which the exporter serves), so a
 * training job's pool, loader and step metrics reach Prometheus with no exporter in the job. A
 * line's tags become labels (a tag's name made Prometheus-valid; repeats, "le" and tags past
 * max_tags dropped and counted). Names keep their StatsD spelling with '.', '-' and '/' turned
 * into '_': `|g` becomes a gauge, `|c` a counter (rendered NAME_total, scaled by its sample
 * rate), `|ms` a histogram NAME_seconds (in seconds), `|h` a histogram. Past max_series, new
 * series are dropped and counted (gpukit_statsd_dropped_series_total), never stored; the sink's
 * own counters are gpukit_statsd_lines_total, _malformed_total, _lost_datagrams_total (UDP
 * datagrams the kernel dropped) and the gauge gpukit_statsd_series. */
typedef struct gk_statsd_sink gk_statsd_sink;

typedef struct gk_statsd_sink_config {
    size_t size;             /* sizeof(gk_statsd_sink_config) (set by _default) */
    const char *socket_path; /* a Unix datagram socket to create (mode 0666), or NULL */
    const char *udp_listen;  /* "127.0.0.1:8125" to also listen on UDP, or NULL */
    gk_metrics *metrics;     /* where series go; NULL: gk_metrics_default() */
    size_t max_series;       /* received series kept (10000) */
    size_t max_tags;         /* labels kept per series (8; at most 32) */
    gk_logger logger;
} gk_statsd_sink_config;

/* Fills `cfg` with the defaults above (no socket, no UDP). */
GK_API void gk_statsd_sink_config_default(gk_statsd_sink_config *cfg, size_t size);
#define gk_statsd_sink_config_default(cfg) (gk_statsd_sink_config_default)((cfg), sizeof *(cfg))

/* Binds the socket(s) (a socket file left at socket_path by a sink that died is replaced; any
 * other file is not) and starts the receiving thread. Returns 0, -EINVAL (no address, bad UDP
 * address, path too long), the negative errno of bind (-EADDRINUSE, -EACCES, ...) or -ENOMEM,
 * with the message in gk_last_error(). */
GK_API int gk_statsd_sink_start(const gk_statsd_sink_config *cfg, gk_statsd_sink **out);

/* Stops the thread, closes the sockets and removes the socket file. The series stay in the
 * registry. NULL is a no-op. */
GK_API void gk_statsd_sink_stop(gk_statsd_sink *s);

typedef struct gk_statsd_sink_stats {
    size_t size; /* bytes filled (see gpukit/version.h) */
    uint64_t datagrams, lines, malformed;
    uint64_t dropped_series; /* new series refused (cap, name clash, bad name) */
    uint64_t dropped_labels; /* tags left out (max_tags, repeats, reserved names) */
    uint64_t lost_datagrams; /* UDP datagrams the kernel dropped (its receive queue was full) */
    uint64_t series;         /* series received so far */
} gk_statsd_sink_stats;

/* The sink's counters. Returns 0 or -EINVAL. Thread-safe. */
GK_API int gk_statsd_sink_get_stats(gk_statsd_sink *s, gk_statsd_sink_stats *out, size_t size);
#define gk_statsd_sink_get_stats(s, out) (gk_statsd_sink_get_stats)((s), (out), sizeof *(out))

/* --- Running a command --------------------------------------------------------------------- */

typedef struct gk_run_config {
    size_t size;               /* sizeof(gk_run_config) (set by gk_run_config_default) */
    double interval_s;         /* sampling interval; default 0.5, 0.05 to 3600 */
    const char *record_path;   /* where the JSON Lines recording goes (required) */
    int gpu;                   /* 1: sample GPUs when NVML is available (default); 0: never */
    size_t max_metric_values;  /* received values recorded at most (default 10 000 000) */
    const char *const *alerts; /* alert rules "[NAME: ]METRIC{labels} OP VALUE [for DURATION]"
                                  (gpukit/monitor.h, metric names in docs/monitor.md); NULL */
    size_t nalerts;
    gk_logger logger;   /* warnings and the one "GPU metrics are off" line */
    int command_stdout; /* a descriptor (above 1) that becomes the command's stdout, e.g. 2 so
                           that the caller's stdout carries only what the caller prints
                           (gpukit run --json); 0 (default): the command inherits stdout */
} gk_run_config;

/* What happened. */
typedef struct gk_run_result {
    size_t size;       /* bytes filled (see gpukit/version.h) */
    int started;       /* 0 when the command could not be started */
    int exit_status;   /* shell-style: exit code, or 128+signal; 127 when it could not start */
    int exit_code;     /* exit() value, or -1 when a signal ended it */
    int signal;        /* the signal that ended it, or 0 */
    int forwarded;     /* the last signal gpukit forwarded to it, or 0 */
    double duration_s; /* wall time from start to exit */
    uint64_t samples, overruns;
    uint64_t metric_lines, metric_malformed, metric_dropped;
    double cpu_seconds;   /* user+system of the command and its waited-for children (rusage) */
    double max_rss_bytes; /* largest RSS of any process in the tree (rusage maxrss) */
    int gpu_enabled;
    char gpu_reason[256];  /* why GPU metrics are off */
    uint64_t alerts_fired; /* alert transitions to firing */
    char error[512];       /* why the command could not be started, or the bad alert rule */
    /* The first error writing the recording (negative errno, e.g. -ENOSPC for a full disk), 0
     * when it is complete. The command runs on to its end either way; the recording then holds
     * the lines written before the error. */
    int record_error;
} gk_run_result;

/* Fills `cfg` with the defaults. */
GK_API void gk_run_config_default(gk_run_config *cfg, size_t size);
#define gk_run_config_default(cfg) (gk_run_config_default)((cfg), sizeof *(cfg))

/* 1 when gk_run_execute takes signal `sig` over while it runs, else 0. They are every catchable
 * signal whose default action ends a process (HUP, INT, QUIT, ILL, TRAP, ABRT, BUS, FPE, USR1,
 * SEGV, USR2, PIPE, ALRM, TERM, STKFLT, XCPU, XFSZ, VTALRM, PROF, IO, PWR, SYS and the real-time
 * signals), plus CHLD. A faulting instruction still ends the process: the kernel delivers such
 * faults even when they are blocked. */
GK_API int gk_run_takes_signal(int sig);

/* Runs argv[0] (searched in PATH) with argv as its arguments, in its own process group, with
 * GK_METRICS_SOCKET added to its environment, and waits for it. While it runs, the calling thread
 * blocks the signals of gk_run_takes_signal (call it from the main thread, before other threads
 * exist or with them blocking these signals too) and takes each from a signalfd:
 *   - SIGINT, SIGTERM, SIGHUP: forwarded to the command's process group, followed by SIGCONT so
 *     that a stopped command can act on it; a second one of these sends SIGKILL to the group;
 *   - SIGPIPE, SIGXFSZ, SIGSTKFLT and the fault signals (ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS)
 *     sent with kill(2): ignored;
 *   - every other one (QUIT, USR1, USR2, ALRM, XCPU, VTALRM, PROF, IO, PWR, real-time):
 *     forwarded to the group as it is.
 * None of them ends this process, so the recording always gets its end line and the socket's
 * folder is removed; signals still pending when the command has ended are discarded, and the
 * caller's mask is restored. The command starts with all of them at their default action and
 * the caller's signal mask. Returns 0 when the command ran (whatever its status) and *res says
 * how it ended; -EINVAL for a bad config, or an empty argv (gk_last_error() says so);
 * -ENOENT/-EACCES... when it could not be started (res->error says why, res->exit_status is
 * 127); GK_ESYNTAX for an alert
 * rule that does not parse (res->error names it; nothing is started); the negative errno of
 * creating the recording or the socket. Alert rules are evaluated at every sample by a
 * gk_monitor watching the command's tree; each state change is logged (warn) and recorded. The
 * message of a failure is also in gk_last_error(). */
GK_API int gk_run_execute(const gk_run_config *cfg, char *const argv[], gk_run_result *res,
                          size_t size);
#define gk_run_execute(cfg, argv, res) (gk_run_execute)((cfg), (argv), (res), sizeof *(res))

#ifdef __cplusplus
}
#endif
#endif
