/* Internals of gk_run_execute: the StatsD line parser (statsd.c, fuzzed by fuzz/fuzz_statsd.c)
 * and the rules names and tags follow, shared by the sender and the receiver. */
#ifndef GK_RUN_INT_H
#define GK_RUN_INT_H

#include <stddef.h>
#include <stdint.h>

#include "gpukit/run.h"

#define GK__STATSD_MAX_NAME  200
#define GK__STATSD_MAX_TAGS  400
#define GK__STATSD_MAX_DGRAM 65536
/* The longest text one value makes: a negative gauge is two lines (set 0, then add). */
#define GK__STATSD_MAX_LINE (2 * (GK__STATSD_MAX_NAME + GK__STATSD_MAX_TAGS) + 96)

/* One parsed StatsD line. name and tags point into the parsed text (not NUL-terminated). */
typedef struct gk__statsd_msg {
    const char *name;
    size_t name_len;
    double value;     /* as sent (before the sample rate) */
    char kind[3];     /* "g", "c", "ms" or "h" */
    int relative;     /* a gauge sent with an explicit + or - sign: add to the last value */
    double rate;      /* the |@rate sample rate (0 < rate <= 1), 1 when absent */
    const char *tags; /* "k:v,k2:v2" without the '#', or NULL */
    size_t tags_len;
} gk__statsd_msg;

/* Parses one line (without its newline). Returns 0 or GK_ESYNTAX. */
int gk__statsd_parse_line(const char *line, size_t len, gk__statsd_msg *out);

/* Splits a datagram into lines ('\n'; a trailing '\r' is dropped; empty lines ignored), parses
 * each and calls fn for the good ones. Adds to *good and *bad. */
typedef void (*gk__statsd_fn)(void *user, const gk__statsd_msg *m);
void gk__statsd_parse_datagram(const char *buf, size_t len, gk__statsd_fn fn, void *user,
                               uint64_t *good, uint64_t *bad);

/* The launcher's rank as tags ("rank:3,local_rank:1"; "" without a launcher), from RANK and
 * LOCAL_RANK, else Slurm's or Open MPI's variables: every client adds them to its lines. */
void gk__statsd_process_tags(char *out, size_t len);

/* The text gk_statsd_client_send sends for one value, checked as it checks it, into buf (no
 * trailing newline; GK__STATSD_MAX_LINE bytes always suffice). Returns its length, or -EINVAL
 * with the message in gk_last_error(). */
int gk__statsd_format(const gk_statsd *c, char *buf, size_t room, const char *name, double value,
                      const char *type, const char *tags);

/* Sends buf[0..len) (one or more lines joined by '\n') as one datagram, waiting for room in the
 * receiver's queue as gk_statsd_client_send does; on failure `values` are counted as dropped.
 * Returns 0 (also for an inactive client), -EAGAIN or the negative errno of send. */
int gk__statsd_send_datagram(gk_statsd *c, const char *buf, size_t len, uint64_t values);

/* 1 when name[0..len) / tags[0..len) follow the rules (see gpukit/run.h). */
int gk__statsd_name_ok(const char *name, size_t len);
int gk__statsd_tags_ok(const char *tags, size_t len);

#endif
