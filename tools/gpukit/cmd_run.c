/* gpukit run: run a command under observation (host, process tree, GPUs, the metrics it sends),
 * record everything as JSON Lines, print the report with advice, exit with the command's status. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

static const char run_usage[] =
    "usage: gpukit run [--interval S] [--out RUN.jsonl] [--html REPORT.html] [--json] [--no-gpu]\n"
    "                  [--alert RULE]... -- CMD [ARGS...]\n"
    "\n"
    "Runs CMD and watches it: the host's CPU and memory, CMD's whole process tree (CPU, RSS,\n"
    "threads, processes, storage I/O) and the GPUs when an NVIDIA driver is present, sampled\n"
    "every S seconds. CMD may send its own metrics as StatsD lines to the Unix datagram socket\n"
    "named by GK_METRICS_SOCKET in its environment (name:value|g, |c, |ms or |h, optional\n"
    "|#tag:value). At the end gpukit prints a report with advice to stderr.\n"
    "\n"
    "  --interval S   sampling interval in seconds, 0.05 to 3600 (default 0.5)\n"
    "  --out FILE     keep the recording (JSON Lines) in FILE; 'gpukit report FILE' reads it\n"
    "  --html FILE    also write the report as a self-contained HTML page\n"
    "  --json         print the report as one JSON object on stdout instead of text on stderr\n"
    "  --no-gpu       do not read GPU telemetry\n"
    "  --alert RULE   [NAME: ]METRIC{labels} OP VALUE [for DURATION], e.g.\n"
    "                 'gpu_hot: gpukit_gpu_temperature_celsius > 85 for 30s' (metric names in\n"
    "                 docs/monitor.md); firing alerts are logged, recorded and reported\n"
    "  --help         this text\n"
    "  --version      gpukit's version\n"
    "\n"
    "SIGINT, SIGTERM and SIGHUP are forwarded to CMD (a third interrupt kills it); the report is\n"
    "still written. Exits with CMD's exit status, 128+N when a signal N ended it, 127 when CMD\n"
    "could not be started, 1 when gpukit failed, 2 on a usage error.\n";

static int parse_interval(const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= 0.05 && v <= 3600))
        return -1;
    *out = v;
    return 0;
}

/* Writes the report of `path` (text to stderr, or JSON to stdout; HTML to html_path). */
static int report_recording(const char *path, int json, const char *html_path)
{
    char err[512];
    gk_recording *rec = NULL;
    int rc = gk_recording_load(path, &rec, err, sizeof err);
    if (rc) {
        gk_tool_error("cannot read the recording: %s", err);
        return -1;
    }
    gk_report *rep = NULL;
    rc = gk_report_create(rec, NULL, &rep);
    if (rc) {
        gk_tool_error("cannot build the report: %s", gk_strerror(rc));
        gk_recording_free(rec);
        return -1;
    }
    if (json) {
        gk_report_write_json(rep, stdout);
        fflush(stdout);
    } else {
        fputc('\n', stderr);
        gk_report_write_text(rep, stderr);
    }
    int ok = 0;
    if (html_path) {
        FILE *f = fopen(html_path, "w");
        if (!f || gk_report_write_html(rep, f) != 0) {
            gk_tool_error("cannot write %s (check the directory exists and is writable)",
                          html_path);
            ok = -1;
        }
        if (f && fclose(f) != 0 && ok == 0) {
            gk_tool_error("cannot write %s", html_path);
            ok = -1;
        }
    }
    gk_report_destroy(rep);
    gk_recording_free(rec);
    return ok;
}

int gk_tool_run(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, run_usage))
        return GK_TOOL_OK;
    gk_run_config cfg;
    gk_run_config_default(&cfg);
    (void)gk_logger_from_env(&cfg.logger); /* a bad GK_LOG was already reported by main */
    const char *out = NULL, *html = NULL;
    const char **alerts = calloc((size_t)argc, sizeof *alerts);
    if (!alerts) {
        gk_tool_error("out of memory");
        return GK_TOOL_FAIL;
    }
    int json = 0, i, status = GK_TOOL_USAGE;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-')
            break;
        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--no-gpu") == 0) {
            cfg.gpu = 0;
        } else if (strcmp(a, "--interval") == 0 || strcmp(a, "--out") == 0 ||
                   strcmp(a, "--html") == 0 || strcmp(a, "--alert") == 0) {
            if (i + 1 >= argc) {
                gk_tool_error("%s needs a value (see 'gpukit run --help')", a);
                goto out;
            }
            const char *v = argv[++i];
            if (strcmp(a, "--interval") == 0 && parse_interval(v, &cfg.interval_s)) {
                gk_tool_error("--interval: \"%s\" is not a number of seconds from 0.05 to 3600 "
                              "(try 0.5)",
                              v);
                goto out;
            }
            if (strcmp(a, "--alert") == 0)
                alerts[cfg.nalerts++] = v;
            if (strcmp(a, "--out") == 0)
                out = v;
            if (strcmp(a, "--html") == 0)
                html = v;
        } else {
            gk_tool_error("unknown option \"%s\" (see 'gpukit run --help')", a);
            goto out;
        }
    }
    if (i >= argc) {
        gk_tool_error("no command to run: gpukit run [OPTIONS] -- CMD [ARGS...]");
        goto out;
    }
    cfg.alerts = alerts;
    char tmp[4096] = "";
    if (!out) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/gpukit-run-XXXXXX.jsonl", dir && *dir ? dir : "/tmp");
        int fd = mkstemps(tmp, 6);
        if (fd < 0) {
            gk_tool_error("cannot create a temporary recording in %s (set TMPDIR or use --out)",
                          dir && *dir ? dir : "/tmp");
            status = GK_TOOL_FAIL;
            goto out;
        }
        close(fd);
        out = tmp;
    }
    cfg.record_path = out;
    /* A file-size limit (ulimit -f) reached by the recording must end the recording with an
     * error (EFBIG), not kill gpukit with SIGXFSZ and orphan the command; the command gets the
     * default back. */
    signal(SIGXFSZ, SIG_IGN);
    gk_run_result res;
    int rc = gk_run_execute(&cfg, argv + i, &res);
    /* The command has ended: a late interrupt must not cut the report short. */
    sigset_t late;
    sigemptyset(&late);
    sigaddset(&late, SIGINT);
    sigaddset(&late, SIGTERM);
    sigaddset(&late, SIGHUP);
    sigprocmask(SIG_BLOCK, &late, NULL);
    status = res.exit_status;
    if (rc == GK_ESYNTAX) {
        gk_tool_error("%s", res.error);
        status = GK_TOOL_USAGE;
    } else if (rc && !res.started && res.error[0]) {
        gk_tool_error("%s", res.error);
        status = res.error[0] && strstr(res.error, "cannot run") ? 127 : GK_TOOL_FAIL;
    } else if (rc) {
        gk_tool_error("run failed: %s", gk_strerror(rc));
        status = GK_TOOL_FAIL;
    }
    if (res.started && res.record_error)
        gk_tool_error("the recording %s is incomplete: writing it failed (%s); the command ran to "
                      "its end (free space there, or choose another place with --out)",
                      out, strerror(-res.record_error));
    if (res.started || !rc) {
        if (report_recording(out, json, html) != 0 && status == 0)
            status = GK_TOOL_FAIL;
    }
    if (tmp[0])
        unlink(tmp);
    else if (res.started && !json)
        fprintf(stderr, "recording: %s (gpukit report %s)\n", out, out);
out:
    free(alerts);
    return status;
}
