/* gpukit serve: a Prometheus endpoint (/metrics, /healthz, /) fed by the monitor, and/or a
 * node_exporter textfile rewritten atomically every interval. Runs until SIGINT or SIGTERM. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

static const char serve_usage[] =
    "usage: gpukit serve [--listen ADDR:PORT] [--web-config FILE] [--interval S]\n"
    "                    [--textfile PATH] [--pcie] [--pid PID] [--alert NAME=RULE]...\n"
    "                    [--statsd PATH] [--statsd-udp ADDR:PORT] [--max-process-series N]\n\n"
    "Samples the GPUs (NVML) and the host every interval and serves the readings as\n"
    "Prometheus metrics until interrupted (SIGINT or SIGTERM).\n\n"
    "  --listen ADDR:PORT  HTTP address (default 127.0.0.1:9430; port 0 picks a free one).\n"
    "                      /metrics answers Prometheus 0.0.4 or OpenMetrics (Accept header),\n"
    "                      /healthz says whether the sampler is alive.\n"
    "  --web-config FILE   TLS and basic authentication, in the Prometheus exporter format:\n"
    "                      tls_server_config (cert_file, key_file) and basic_auth_users\n"
    "                      (user: bcrypt hash); see docs/monitor.md. Serving an address\n"
    "                      other than loopback without it prints a warning.\n"
    "  --interval S        sampling period (default 1s; 500ms, 2s, ...)\n"
    "  --textfile PATH     also write the metrics to PATH every interval for node_exporter's\n"
    "                      textfile collector (a temporary file renamed over it; a device or\n"
    "                      pipe is written in place); without --listen, no HTTP\n"
    "  --pcie              read PCIe throughput too (each read blocks 20 ms per GPU)\n"
    "  --pid PID           also watch the process tree rooted at PID\n"
    "  --alert NAME=RULE   log when RULE holds, e.g.\n"
    "                      gpu_hot='gpukit_gpu_temperature_celsius > 85 for 5m'\n"
    "  --statsd PATH       also receive StatsD on a Unix datagram socket at PATH and serve\n"
    "                      what arrives; jobs on the node send to it with\n"
    "                      GK_METRICS_SOCKET=PATH (gpukit pools, loaders and your metrics)\n"
    "  --statsd-udp ADDR:PORT  also receive StatsD on UDP (e.g. 127.0.0.1:8125)\n"
    "  --max-process-series N  per-process GPU memory series exported at most (default\n"
    "                      256; 0: none); the others are counted in\n"
    "                      gpukit_gpu_process_series_dropped_total\n\n"
    "Without an NVIDIA driver it says so in one line and serves the host metrics.\n";

#define MAX_ALERTS 16

typedef struct serve_args {
    const char *listen;
    int listen_given;
    double interval;
    const char *textfile;
    const char *web_config;
    int pcie;
    int pid;
    const char *alerts[MAX_ALERTS];
    int nalerts;
    const char *statsd, *statsd_udp;
    long long max_process_series; /* -1: the monitor's default */
} serve_args;

static int parse_args(int argc, char **argv, serve_args *a)
{
    a->listen = GK_EXPORTER_DEFAULT_LISTEN;
    a->interval = 1.0;
    a->max_process_series = -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--pcie") == 0) {
            a->pcie = 1;
            continue;
        }
        if (strcmp(arg, "--listen") && strcmp(arg, "--interval") && strcmp(arg, "--textfile") &&
            strcmp(arg, "--pid") && strcmp(arg, "--alert") && strcmp(arg, "--web-config") &&
            strcmp(arg, "--statsd") && strcmp(arg, "--statsd-udp") &&
            strcmp(arg, "--max-process-series")) {
            gk_tool_error("serve: unknown option \"%s\" (see 'gpukit serve --help')", arg);
            return -1;
        }
        if (!val) {
            gk_tool_error("serve: %s needs a value (see 'gpukit serve --help')", arg);
            return -1;
        }
        i++;
        if (strcmp(arg, "--listen") == 0) {
            a->listen = val;
            a->listen_given = 1;
        } else if (strcmp(arg, "--interval") == 0) {
            if (gk_parse_duration(val, &a->interval) != 0 || !(a->interval >= 0.01)) {
                gk_tool_error("serve: --interval \"%s\" is not a duration of at least 10ms "
                              "(try 1s or 500ms)",
                              val);
                return -1;
            }
        } else if (strcmp(arg, "--textfile") == 0) {
            a->textfile = val;
        } else if (strcmp(arg, "--web-config") == 0) {
            a->web_config = val;
        } else if (strcmp(arg, "--statsd") == 0) {
            a->statsd = val;
        } else if (strcmp(arg, "--statsd-udp") == 0) {
            a->statsd_udp = val;
        } else if (strcmp(arg, "--max-process-series") == 0) {
            if (gk_parse_int(val, &a->max_process_series) != 0 || a->max_process_series < 0 ||
                a->max_process_series > 1000) {
                gk_tool_error("serve: --max-process-series \"%s\" is not a count from 0 to "
                              "1000 (try 256)",
                              val);
                return -1;
            }
        } else if (strcmp(arg, "--pid") == 0) {
            long long pid;
            if (gk_parse_int(val, &pid) != 0 || pid <= 0 || pid > 0x7fffffff) {
                gk_tool_error("serve: --pid \"%s\" is not a process id (try --pid 1234)", val);
                return -1;
            }
            a->pid = (int)pid;
        } else {
            if (a->nalerts == MAX_ALERTS) {
                gk_tool_error("serve: more than %d --alert rules", MAX_ALERTS);
                return -1;
            }
            a->alerts[a->nalerts++] = val;
        }
    }
    return 0;
}

static int add_alerts(gk_monitor *m, const serve_args *a)
{
    for (int i = 0; i < a->nalerts; i++) {
        const char *eq = strchr(a->alerts[i], '=');
        char name[96], err[300];
        if (!eq || eq == a->alerts[i] || (size_t)(eq - a->alerts[i]) >= sizeof name) {
            gk_tool_error("serve: --alert \"%s\" is not NAME=RULE (try gpu_hot='"
                          "gpukit_gpu_temperature_celsius > 85 for 5m')",
                          a->alerts[i]);
            return -1;
        }
        memcpy(name, a->alerts[i], (size_t)(eq - a->alerts[i]));
        name[eq - a->alerts[i]] = '\0';
        int rc = gk_monitor_add_alert(m, name, eq + 1, err, sizeof err);
        if (rc) {
            gk_tool_error("serve: %s", *err ? err : gk_strerror(rc));
            return -1;
        }
    }
    return 0;
}

/* Says at once when the textfile cannot be written there (a directory, a missing folder, a
 * pipe with no reader), instead of after the first interval. */
static int check_textfile(const char *path)
{
    gk_output *o = NULL;
    char err[700];
    if (gk_output_open(path, 0, &o, err, sizeof err) != 0) {
        gk_tool_error("serve: --textfile %s", err);
        return -1;
    }
    gk_output_abort(o); /* nothing written: the target is untouched */
    return 0;
}

int gk_tool_serve(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, serve_usage))
        return GK_TOOL_OK;
    serve_args a = {0};
    if (parse_args(argc, argv, &a) != 0)
        return GK_TOOL_USAGE;
    int http = a.listen_given || !a.textfile;
    if (a.web_config && !http) {
        gk_tool_error("serve: --web-config secures the HTTP server: give --listen too");
        return GK_TOOL_USAGE;
    }
    if (a.textfile && check_textfile(a.textfile) != 0)
        return GK_TOOL_FAIL;

    /* Signals are taken synchronously by the main thread; block them before any thread starts. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* The node's sink must not publish its own registry to itself: GK_METRICS_SOCKET set for the
     * jobs of the node is not for serve. */
    unsetenv(GK_METRICS_SOCKET_ENV);

    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    if (gk_monitor_config_from_env(&mc) != 0) {
        gk_tool_error("%s", gk_last_error());
        return GK_TOOL_USAGE;
    }
    mc.interval = a.interval;
    mc.pcie = a.pcie;
    mc.pid = a.pid;
    if (a.max_process_series >= 0)
        mc.max_process_series = (unsigned)a.max_process_series;
    mc.metrics = gk_metrics_default();
    /* Say once, ourselves, why GPU metrics are off (whatever GK_LOG says). */
    gk_nvml_info info;
    if (gk_nvml_probe(NULL, &info) != 0) {
        fprintf(stderr, "gpukit: %s\n", info.reason);
        mc.gpu = GK_MONITOR_GPU_OFF;
    }
    gk_monitor *m = NULL;
    int rc = gk_monitor_create(&mc, &m);
    if (rc) {
        gk_tool_error("serve: cannot start the monitor: %s", gk_strerror(rc));
        return GK_TOOL_FAIL;
    }
    int status = GK_TOOL_FAIL;
    gk_exporter *e = NULL;
    gk_statsd_sink *sink = NULL;
    if (a.statsd || a.statsd_udp) {
        gk_statsd_sink_config sc;
        gk_statsd_sink_config_default(&sc);
        sc.socket_path = a.statsd;
        sc.udp_listen = a.statsd_udp;
        sc.metrics = mc.metrics;
        if (gk_statsd_sink_start(&sc, &sink) != 0) {
            gk_tool_error("serve: %s", gk_last_error());
            status = GK_TOOL_USAGE;
            goto out_monitor;
        }
    }
    if (add_alerts(m, &a) != 0) {
        status = GK_TOOL_USAGE;
        goto out_monitor;
    }
    if (http) {
        gk_exporter_config ec;
        gk_exporter_config_default(&ec);
        ec.listen = a.listen;
        ec.web_config = a.web_config;
        ec.metrics = mc.metrics;
        ec.monitor = m;
        char err[300];
        rc = gk_exporter_start(&ec, &e, err, sizeof err);
        if (rc) {
            gk_tool_error("serve: %s", *err ? err : gk_strerror(rc));
            status = rc == -EINVAL || rc == GK_ESYNTAX ? GK_TOOL_USAGE : GK_TOOL_FAIL;
            goto out_monitor;
        }
    }
    rc = gk_monitor_start(m);
    if (rc) {
        gk_tool_error("serve: cannot start the sampler thread: %s", gk_strerror(rc));
        goto out_exporter;
    }
    if (e) {
        char host[128];
        int port;
        gk_exporter_parse_listen(a.listen, host, sizeof host, &port, NULL, 0);
        gk_exporter_stats es;
        gk_exporter_get_stats(e, &es);
        fprintf(stderr, "gpukit: serving http%s://%s%s%s:%d/metrics%s\n", es.tls ? "s" : "",
                strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                gk_exporter_port(e), es.auth ? " (basic authentication)" : "");
        if (es.insecure)
            fprintf(stderr,
                    "gpukit: warning: %s is not a loopback address and no credentials are "
                    "required: anyone who can reach it reads these metrics (add "
                    "basic_auth_users with --web-config, or listen on 127.0.0.1)\n",
                    host);
    }
    if (a.textfile)
        fprintf(stderr, "gpukit: writing %s every %g s\n", a.textfile, a.interval);
    if (a.statsd)
        fprintf(stderr, "gpukit: receiving StatsD on %s (jobs: GK_METRICS_SOCKET=%s)\n", a.statsd,
                a.statsd);
    if (a.statsd_udp)
        fprintf(stderr, "gpukit: receiving StatsD on udp://%s\n", a.statsd_udp);
    fflush(stderr);
    status = GK_TOOL_OK;
    struct timespec wait = {(time_t)a.interval,
                            (long)((a.interval - (double)(time_t)a.interval) * 1e9)};
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &wait);
        if (sig > 0)
            break;
        if (sig < 0 && errno != EAGAIN && errno != EINTR) {
            gk_tool_error("serve: waiting for signals failed: %s", strerror(errno));
            status = GK_TOOL_FAIL;
            break;
        }
        if (a.textfile) {
            rc = gk_metrics_write_textfile(mc.metrics, a.textfile);
            if (rc) {
                gk_tool_error("serve: cannot write %s: %s%s", a.textfile, gk_strerror(rc),
                              rc == -ENOSPC ? " (free space there, or choose another place)"
                                            : " (check the folder exists and is writable)");
                status = GK_TOOL_FAIL;
                break;
            }
        }
    }
    gk_monitor_stop(m);
out_exporter:
    gk_exporter_destroy(e);
out_monitor:
    gk_statsd_sink_stop(sink);
    gk_monitor_destroy(m);
    return status;
}
