/* gpukit report: the report of a recording made by gpukit run, as text, JSON or HTML, optionally
 * compared with a baseline recording (a CI guard with --fail-on-regression). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char report_usage[] =
    "usage: gpukit report [RUN.jsonl] [--json | --html FILE]\n"
    "                     [--baseline BASE.jsonl [--fail-on-regression PCT]]\n"
    "\n"
    "Summarises a recording made by 'gpukit run' (without RUN.jsonl: the newest in\n"
    "./gpukit-runs/, where 'gpukit run' keeps them): duration and exit status;\n"
    "count, mean, std, min, p50, p90, p99 and max of every series and received metric; time\n"
    "above thresholds; GPU energy; advice from the rules in docs/advice.md. A cut last line (a\n"
    "killed run) is skipped with a warning.\n"
    "\n"
    "  --json                    one JSON object on stdout instead of text\n"
    "  --html FILE               write a self-contained HTML page with charts to FILE\n"
    "  --baseline BASE.jsonl     compare every series with an earlier recording of the same\n"
    "                            job: change of median and p90 against the run-to-run noise\n"
    "  --fail-on-regression PCT  exit 1 when a time-like metric rose or a throughput-like one\n"
    "                            fell by more than PCT percent beyond the noise\n"
    "  --help                    this text\n"
    "  --version                 gpukit's version\n"
    "\n"
    "Exits 0; 1 when a recording cannot be read, a file cannot be written, or a regression\n"
    "exceeds --fail-on-regression; 2 on a usage error.\n";

/* The newest recording in GK_TOOL_RUNS_DIR: names start with their date and time, so the
 * greatest name is the newest (two of the same second: either). */
static int newest_recording(char *path, size_t len)
{
    DIR *d = opendir(GK_TOOL_RUNS_DIR);
    if (!d)
        return -1;
    char best[256] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 6 && n < sizeof best && strcmp(e->d_name + n - 6, ".jsonl") == 0 &&
            e->d_name[0] != '.' && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    if (!best[0])
        return -1;
    snprintf(path, len, "%s/%s", GK_TOOL_RUNS_DIR, best);
    return 0;
}

static gk_recording *load(const char *path)
{
    char err[512];
    gk_recording *rec = NULL;
    if (gk_recording_load(path, &rec, err, sizeof err) != 0) {
        gk_tool_error("%s", err);
        return NULL;
    }
    return rec;
}

int gk_tool_report(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, report_usage))
        return GK_TOOL_OK;
    const char *run = NULL, *html = NULL, *base = NULL;
    int json = 0;
    double fail_pct = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--html") == 0 || strcmp(a, "--baseline") == 0 ||
                   strcmp(a, "--fail-on-regression") == 0) {
            if (i + 1 >= argc) {
                gk_tool_error("%s needs a value (see 'gpukit report --help')", a);
                return GK_TOOL_USAGE;
            }
            const char *v = argv[++i];
            if (strcmp(a, "--html") == 0) {
                html = v;
            } else if (strcmp(a, "--baseline") == 0) {
                base = v;
            } else {
                char *end;
                fail_pct = strtod(v, &end);
                if (end == v || *end || !(fail_pct >= 0 && fail_pct < 1e6)) {
                    gk_tool_error("--fail-on-regression: \"%s\" is not a percentage (try 5)", v);
                    return GK_TOOL_USAGE;
                }
            }
        } else if (a[0] == '-' && a[1]) {
            gk_tool_error("unknown option \"%s\" (see 'gpukit report --help')", a);
            return GK_TOOL_USAGE;
        } else if (!run) {
            run = a;
        } else {
            gk_tool_error("one recording at a time (got \"%s\" and \"%s\")", run, a);
            return GK_TOOL_USAGE;
        }
    }
    char newest[512];
    if (!run) {
        if (newest_recording(newest, sizeof newest) != 0) {
            gk_tool_error("no recording given and none in ./%s/: gpukit report RUN.jsonl (make "
                          "one with gpukit run -- CMD)",
                          GK_TOOL_RUNS_DIR);
            return GK_TOOL_USAGE;
        }
        run = newest;
        fprintf(stderr, "gpukit: the newest recording: ");
        gk_text_fputs(run, stderr);
        fprintf(stderr, "\n");
    }
    if (json && html) {
        gk_tool_error("--json and --html are exclusive: choose one");
        return GK_TOOL_USAGE;
    }
    if (fail_pct >= 0 && !base) {
        gk_tool_error("--fail-on-regression needs --baseline BASE.jsonl");
        return GK_TOOL_USAGE;
    }
    int status = GK_TOOL_FAIL;
    gk_recording *rec = load(run), *brec = NULL;
    gk_report *rep = NULL;
    if (!rec || (base && !(brec = load(base))))
        goto out;
    int rc = gk_report_create(rec, brec, &rep);
    if (rc) {
        gk_tool_error("cannot build the report: %s", gk_strerror(rc));
        goto out;
    }
    if (html) {
        if (gk_tool_write_file(html, "--html", gk_tool_write_html, rep) != 0)
            goto out;
    } else if (json) {
        gk_report_write_json(rep, stdout);
    } else {
        gk_report_write_text(rep, stdout);
    }
    status = GK_TOOL_OK;
    if (fail_pct >= 0) {
        size_t n = gk_report_regressions_over(rep, fail_pct);
        if (n) {
            gk_tool_error("%zu metric%s regressed by more than %g%% beyond noise against %s", n,
                          n == 1 ? "" : "s", fail_pct, base);
            status = GK_TOOL_FAIL;
        }
    }
out:
    gk_report_destroy(rep);
    gk_recording_free(rec);
    gk_recording_free(brec);
    return status;
}
