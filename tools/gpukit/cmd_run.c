/* gpukit run: run a command under observation (host, process tree, GPUs, the metrics it sends),
 * record everything as JSON Lines, print the report with advice, exit with the command's status. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static const char run_usage[] =
    "usage: gpukit run [--interval S] [--out RUN.jsonl | --no-record] [--html REPORT.html] "
    "[--json]\n"
    "                  [--no-gpu] [--alert RULE]... -- CMD [ARGS...]\n"
    "\n"
    "Runs CMD and watches it: the host's CPU and memory, CMD's whole process tree (CPU, RSS,\n"
    "threads, processes, storage I/O) and the GPUs when an NVIDIA driver is present, sampled\n"
    "every S seconds. CMD may send its own metrics as StatsD lines to the Unix datagram socket\n"
    "named by GK_METRICS_SOCKET in its environment (name:value|g, |c, |ms or |h, optional\n"
    "|#tag:value). At the end gpukit prints a report with advice to stderr, and on its last line\n"
    "where the recording is: gpukit-runs/DATE-TIME-CMD-PID.jsonl in the current folder unless\n"
    "--out says otherwise; 'gpukit report' reads the newest one there.\n"
    "\n"
    "  --interval S   sampling interval in seconds, 0.05 to 3600 (default 0.5)\n"
    "  --out FILE     keep the recording (JSON Lines) in FILE; 'gpukit report FILE' reads it\n"
    "  --no-record    keep no recording (the report is still printed)\n"
    "  --html FILE    also write the report as a self-contained HTML page\n"
    "  --json         print the report as one JSON object on stdout instead of text on stderr;\n"
    "                 CMD's own stdout then goes to stderr, so stdout holds the JSON alone\n"
    "  --no-gpu       do not read GPU telemetry\n"
    "  --alert RULE   [NAME: ]METRIC{labels} OP VALUE [for DURATION], e.g.\n"
    "                 'gpu_hot: gpukit_gpu_temperature_celsius > 85 for 30s' (metric names in\n"
    "                 docs/monitor.md); firing alerts are logged, recorded and reported\n"
    "  --help         this text\n"
    "  --version      gpukit's version\n"
    "\n"
    "SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group, each followed by SIGCONT;\n"
    "a second one kills CMD (SIGKILL). QUIT, USR1, USR2, ALRM and the other signals that would\n"
    "end gpukit are forwarded as they are; PIPE is ignored. The recording is always completed\n"
    "and the report written. Exits with CMD's exit status (also when gpukit's stdout is a pipe\n"
    "closed early), 128+N when a signal N ended it, 127 when CMD could not be started, 1 when\n"
    "gpukit failed, 2 on a usage error.\n";

/* The recording's default place: gpukit-runs/DATE-TIME-CMD-PID.jsonl in the current folder
 * (created when missing). Returns 0, or -1 after saying why it cannot be kept there (the run
 * then keeps no recording). */
static int default_recording(const char *cmd, char *path, size_t len)
{
    if (mkdir(GK_TOOL_RUNS_DIR, 0777) != 0 && errno != EEXIST) {
        gk_tool_error("warning: cannot create %s/ in the current folder (%s): this run keeps no "
                      "recording (use --out FILE to keep it elsewhere)",
                      GK_TOOL_RUNS_DIR, strerror(errno));
        return -1;
    }
    const char *base = strrchr(cmd, '/');
    base = base ? base + 1 : cmd;
    char name[33];
    size_t n = 0;
    for (const char *p = base; *p && n + 1 < sizeof name; p++)
        name[n++] = (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-') ? *p : '_';
    name[n] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    snprintf(path, len, "%s/%s-%s-%ld.jsonl", GK_TOOL_RUNS_DIR, stamp, n ? name : "cmd",
             (long)getpid());
    return 0;
}

/* A signal that arrives once the command has ended must not cut the report short: it is noted
 * and ignored (gk_run_execute forwards the ones that arrive while the command runs). */
static void late_signal(int sig)
{
    (void)sig;
}

/* gpukit run owns its signals: SIGPIPE is ignored (a closed stdout is an EPIPE it reports), and
 * every other signal that would end it (the faults aside) gets a handler that does nothing, so it
 * is never fatal before or after gk_run_execute takes it over. exec gives the command the
 * defaults back. */
static void take_signals(void)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, note = {.sa_handler = late_signal};
    note.sa_flags = SA_RESTART;
    sigemptyset(&note.sa_mask);
    sigemptyset(&ign.sa_mask);
    for (int sig = 1; sig <= SIGRTMAX; sig++) {
        if (!gk_run_takes_signal(sig) || sig == SIGCHLD || sig == SIGILL || sig == SIGTRAP ||
            sig == SIGABRT || sig == SIGBUS || sig == SIGFPE || sig == SIGSEGV || sig == SIGSYS)
            continue;
        sigaction(sig, sig == SIGPIPE || sig == SIGXFSZ ? &ign : &note, NULL);
    }
}

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
    if (html_path && gk_tool_write_file(html_path, "--html", gk_tool_write_html, rep) != 0)
        ok = -1;
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
    int json = 0, no_record = 0, i, status = GK_TOOL_USAGE;
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
        } else if (strcmp(a, "--no-record") == 0) {
            no_record = 1;
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
    if (!argv[i][0]) {
        gk_tool_error("the command to run is empty (\"\"): name a program, as in gpukit run -- "
                      "CMD [ARGS...]");
        goto out;
    }
    if (no_record && out) {
        gk_tool_error("--out and --no-record contradict each other: keep one");
        goto out;
    }
    cfg.alerts = alerts;
    /* With --json, gpukit's stdout carries the report alone: the command writes to stderr. */
    if (json)
        cfg.command_stdout = STDERR_FILENO;
    char dir[4096] = "", tmp[4200] = "", kept[512] = "";
    if (!out && !no_record && default_recording(argv[i], kept, sizeof kept) == 0)
        out = kept;
    if (!out) {
        /* The recording of a run without --out lives in a private folder, removed at the end. */
        const char *tdir = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/gpukit-run-XXXXXX", tdir && *tdir ? tdir : "/tmp");
        if (!mkdtemp(dir)) {
            gk_tool_error("cannot create a temporary recording in %s: %s (set TMPDIR or use "
                          "--out)",
                          tdir && *tdir ? tdir : "/tmp", strerror(errno));
            status = GK_TOOL_FAIL;
            goto out;
        }
        snprintf(tmp, sizeof tmp, "%s/recording.jsonl", dir);
        out = tmp;
    }
    cfg.record_path = out;
    take_signals();
    gk_run_result res;
    memset(&res, 0, sizeof res); /* an early refusal fills nothing */
    int rc = gk_run_execute(&cfg, argv + i, &res);
    status = res.exit_status;
    if (rc == GK_ESYNTAX) {
        gk_tool_error("%s", res.error);
        status = GK_TOOL_USAGE;
    } else if (rc && !res.started && res.error[0]) {
        gk_tool_error("%s", res.error);
        status = res.error[0] && strstr(res.error, "cannot run") ? 127 : GK_TOOL_FAIL;
    } else if (rc) {
        gk_tool_error("run failed: %s", gk_last_error());
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
    /* The report on stdout: a reader that went away (gpukit run --json ... | head) leaves the
     * command's status as it is; any other failure to deliver it (a full disk) is an error. */
    int out_rc = gk_tool_check_stdout();
    if (out_rc && out_rc != -EPIPE && status == 0)
        status = GK_TOOL_FAIL;
    if (tmp[0]) {
        unlink(tmp);
        rmdir(dir);
    } else if (res.started) {
        fprintf(stderr, "recording: ");
        gk_text_fputs(out, stderr);
        fprintf(stderr, " (gpukit report ");
        gk_text_fputs(out, stderr);
        fprintf(stderr, ")\n");
    }
out:
    free(alerts);
    return status;
}
