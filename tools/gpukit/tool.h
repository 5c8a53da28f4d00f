/* Shared pieces of the gpukit command-line tool. The tool uses only the public API
 * (include/gpukit); each subcommand lives in its own cmd_<name>.c and is listed in main.c. */
#ifndef GK_TOOL_H
#define GK_TOOL_H

#include <stdio.h>

#include "gpukit/gpukit.h"

/* Exit codes of the tool: 0 success, 1 a failure, 2 a usage error. Subcommands that run a child
 * (gpukit run) return the child's status instead. */
enum { GK_TOOL_OK = 0, GK_TOOL_FAIL = 1, GK_TOOL_USAGE = 2 };

/* Where `gpukit run` keeps its recordings by default, relative to the current folder, and where
 * `gpukit report` without a file looks for the newest one. */
#define GK_TOOL_RUNS_DIR "gpukit-runs"

/* Prints "gpukit: message" to stderr. */
void gk_tool_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Handles --help and --version for a subcommand: returns 1 (and prints) when argv[1] is one of
 * them, 0 otherwise. `usage` is the subcommand's full help text. */
int gk_tool_help_or_version(int argc, char **argv, const char *usage);

/* Writes the file `path` through gk_output (gpukit/output.h): fn(f, ctx) writes to the stream f
 * and returns 0 or a negative code. On any failure prints "gpukit: WHAT PATH: reason" and
 * returns -1, leaving an existing file as it was. */
int gk_tool_write_file(const char *path, const char *what, int (*fn)(FILE *f, void *ctx),
                       void *ctx);

/* A gk_tool_write_file writer of a gk_report's HTML page (ctx is the gk_report). */
int gk_tool_write_html(FILE *f, void *report);

/* Flushes stdout and says whether everything printed arrived: 0, or (after one line naming the
 * cause, and dropping what was not written) the negative errno, -EPIPE for a reader that went
 * away. main() calls it after every command. */
int gk_tool_check_stdout(void);

/* JSON string escaping into `out` (quotes not included). */
void gk_tool_json_escape(FILE *out, const char *s);

/* Subcommands: argv[0] is the subcommand's name. */
int gk_tool_info(int argc, char **argv);
int gk_tool_run(int argc, char **argv);
int gk_tool_report(int argc, char **argv);
int gk_tool_top(int argc, char **argv);
int gk_tool_pool(int argc, char **argv);
int gk_tool_batch(int argc, char **argv);
int gk_tool_sample(int argc, char **argv);
int gk_tool_serve(int argc, char **argv);
int gk_tool_data(int argc, char **argv);
int gk_tool_loader(int argc, char **argv);

#endif
