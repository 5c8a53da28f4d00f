/* gpukit: the command-line tool. Dispatches to one subcommand per file (cmd_*.c). */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

typedef struct tool_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} tool_command;

/* One line per subcommand, in the order `gpukit --help` lists them. */
static const tool_command commands[] = {
    {"info", gk_tool_info, "backends, devices, driver and host; what is unavailable and why"},
    {"run", gk_tool_run, "run a command, watch it, record it and report with advice"},
    {"report", gk_tool_report, "the report of a recording, optionally against a baseline"},
    {"top", gk_tool_top, "live view of the GPUs, their processes and the host"},
    {"batch", gk_tool_batch, "find the largest batch that fits a simulated device"},
    {"pool", gk_tool_pool, "replay allocation traces through the caching pool; F_cap; traces"},
    {"sample", gk_tool_sample, "one line per GPU per sample, like nvidia-smi --query-gpu / dmon"},
    {"serve", gk_tool_serve, "Prometheus /metrics endpoint or textfile for GPU and host metrics"},
    {"data", gk_tool_data, "pack record files, inspect record files and token shards"},
    {"loader", gk_tool_loader, "benchmark the prefetching data loader on a file"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

void gk_tool_error(const char *fmt, ...)
{
    /* Messages quote file names, recordings and arguments: their control bytes are escaped so
     * that none reaches the terminal raw. */
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    fputs("gpukit: ", stderr);
    if (n >= 0)
        gk_text_fputs(msg, stderr);
    else
        fputs(fmt, stderr);
    fputc('\n', stderr);
    free(msg);
}

int gk_tool_help_or_version(int argc, char **argv, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("gpukit %s\n", gk_version_string());
            return 1;
        }
    }
    return 0;
}

void gk_tool_json_escape(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
}

int gk_tool_write_file(const char *path, const char *what, int (*fn)(FILE *f, void *ctx), void *ctx)
{
    gk_output *o = NULL;
    char err[700];
    int rc = gk_output_open(path, 0, &o, err, sizeof err);
    if (rc) {
        gk_tool_error("%s %s", what, err);
        return -1;
    }
    FILE *f = gk_output_stream(o);
    int wrc = f ? fn(f, ctx) : -ENOMEM;
    if (wrc && !(f && ferror(f))) {
        gk_output_abort(o);
        gk_tool_error("%s %s: cannot write: %s", what, path, gk_strerror(wrc));
        return -1;
    }
    rc = gk_output_commit(o, err, sizeof err);
    if (rc || wrc) {
        gk_tool_error("%s %s", what, rc ? err : "the output is incomplete");
        return -1;
    }
    return 0;
}

int gk_tool_write_html(FILE *f, void *report)
{
    return gk_report_write_html(report, f);
}

/* stdout goes through a gk_output (a duplicate of descriptor 1), so the errno of a failed
 * write is kept: a full disk and a reader that went away are told apart. */
static gk_output *stdout_out;
static FILE *plain_stdout;
static int stdout_reported;

static void wrap_stdout(void)
{
    if (gk_output_open("/dev/stdout", 0, &stdout_out, NULL, 0) != 0)
        return; /* descriptor 1 is closed: the plain stream fails and says so */
    FILE *f = gk_output_stream(stdout_out);
    if (!f) {
        gk_output_abort(stdout_out);
        stdout_out = NULL;
        return;
    }
    if (isatty(STDOUT_FILENO))
        setvbuf(f, NULL, _IOLBF, 0);
    plain_stdout = stdout;
    stdout = f;
}

static void unwrap_stdout(void)
{
    if (!stdout_out)
        return;
    fflush(stdout);
    stdout = plain_stdout;
    gk_output_abort(stdout_out); /* a duplicate descriptor: closing it touches nothing */
    stdout_out = NULL;
}

int gk_tool_check_stdout(void)
{
    char err[300];
    int rc;
    if (stdout_out) {
        fflush(stdout);
        rc = gk_output_error(stdout_out);
        if (rc)
            snprintf(err, sizeof err, "cannot write to standard output: %s%s", strerror(-rc),
                     rc == -ENOSPC  ? " (free space there, or choose another place)"
                     : rc == -EPIPE ? " (the reader of the pipe went away)"
                                    : "");
    } else {
        rc = gk_output_check_stream(stdout, "standard output", err, sizeof err);
        if (rc) {
            __fpurge(stdout); /* what could not be written is dropped, not tried again */
            clearerr(stdout);
        }
    }
    if (rc && !stdout_reported++)
        gk_tool_error("%s", err);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: gpukit [SETTINGS] COMMAND [OPTIONS]\n\n"
                 "gpukit manages GPU memory, feeds data to the device, watches the GPU and the\n"
                 "host while work runs, and reports what it saw with advice.\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nSettings (GK_* variables, or flags before COMMAND such as --log debug) are\n"
                 "listed by 'gpukit info --settings'. 'gpukit COMMAND --help' describes a "
                 "command.\n");
}

/* Applies the settings given before the subcommand (`gpukit --log debug info`) by exporting their
 * GK_* variables, so the library and every subcommand see one value; then checks every GK_*
 * variable. Returns the index of the subcommand in argv, or -1 after printing an error. */
static int apply_settings(int argc, char **argv)
{
    gk_options o;
    char err[512];
    int i = 1;
    gk_options_default(&o);
    while (i < argc && strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i], "--help") != 0 &&
           strcmp(argv[i], "--version") != 0) {
        const char *flag = argv[i], *value = NULL;
        char name[64];
        const char *eq = strchr(flag, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - flag), flag);
            value = eq + 1;
            i++;
        } else {
            snprintf(name, sizeof name, "%s", flag);
            if (i + 1 >= argc) {
                gk_tool_error("%s needs a value (see 'gpukit info --settings')", name);
                return -1;
            }
            value = argv[i + 1];
            i += 2;
        }
        int rc = gk_options_set(&o, name, value, err, sizeof err);
        if (rc) {
            gk_tool_error("%s", err);
            return -1;
        }
        for (size_t k = 0; k < gk_option_count(); k++) {
            if (strcmp(gk_option_at(k)->flag, name) == 0)
                setenv(gk_option_at(k)->env, value, 1);
        }
    }
    if (gk_options_from_env(&o, err, sizeof err) != 0) {
        gk_tool_error("%s", err);
        return -1;
    }
    return i;
}

/* Runs one subcommand, then checks that what it printed reached stdout: a full disk or a closed
 * descriptor is an error (exit 1), never a silent loss. */
static int dispatch(const tool_command *c, int argc, char **argv)
{
    if (c->run != gk_tool_top) /* top hands stdout to curses, which needs its descriptor */
        wrap_stdout();
    int status = c->run(argc, argv);
    int rc = gk_tool_check_stdout();
    /* gpukit run reports its command's status even when its reader went away */
    if (rc && status == GK_TOOL_OK && !(rc == -EPIPE && c->run == gk_tool_run))
        status = GK_TOOL_FAIL;
    unwrap_stdout();
    return status;
}

int main(int argc, char **argv)
{
    /* A file-size limit (ulimit -f) must make a write fail with EFBIG, which names the file,
     * rather than kill gpukit half-way through it. Commands gpukit starts get the default back. */
    signal(SIGXFSZ, SIG_IGN);
    int first = apply_settings(argc, argv);
    if (first < 0)
        return GK_TOOL_USAGE;
    argv[first - 1] = argv[0];
    argc -= first - 1;
    argv += first - 1;
    if (argc < 2) {
        usage(stderr);
        return GK_TOOL_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return gk_tool_check_stdout() ? GK_TOOL_FAIL : GK_TOOL_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("gpukit %s\n", gk_version_string());
        return gk_tool_check_stdout() ? GK_TOOL_FAIL : GK_TOOL_OK;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return dispatch(&commands[i], argc - 1, argv + 1);
    }
    gk_tool_error("unknown command \"%s\" (see 'gpukit --help')", argv[1]);
    return GK_TOOL_USAGE;
}
