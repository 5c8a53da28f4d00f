/* Automatic metrics: when GK_METRICS_SOCKET is set (the program runs under `gpukit run`), a pool
 * or a loader starts one publisher thread that sends its figures to the socket every
 * GK__AUTOPUB_INTERVAL_MS, and once more when it is stopped. When the variable is unset nothing
 * is started and the object's own calls never see the publisher. */
#ifndef GK_RUN_AUTOPUB_INT_H
#define GK_RUN_AUTOPUB_INT_H

#include "gpukit/run.h"

#define GK__AUTOPUB_INTERVAL_MS 250

typedef struct gk__autopub gk__autopub;

/* Sends the object's figures through `c` (never blocks: sends drop when the socket is full).
 * Returns 0 when everything was sent, non-zero when something was dropped (a counter's increment
 * is then kept and sent with the next call). */
typedef int (*gk__autopub_fn)(void *user, gk_statsd *c);

/* Starts a publisher calling fn(user, client) every interval from its own thread. *out is NULL
 * (and 0 returned) when GK_METRICS_SOCKET is unset or empty. Returns 0, or -ENOMEM / the
 * negative errno of socket(2) or pthread_create (the caller goes on without metrics). */
int gk__autopub_start(gk__autopub_fn fn, void *user, gk__autopub **out);

/* Stops the thread (joins it), publishes once more from the calling thread (retrying for up to
 * 100 ms while the receiver's queue is full) and frees `p`. NULL is a no-op. */
void gk__autopub_stop(gk__autopub *p);

#endif
