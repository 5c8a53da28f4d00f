/* Alert rules evaluated while gk_run_execute watches a command (alerts.c). */
#ifndef GK_ALERTS_INT_H
#define GK_ALERTS_INT_H

#include <stdint.h>
#include <sys/types.h>

#include "gpukit/report.h"
#include "gpukit/run.h"
#include "run/sampler_int.h"

typedef struct gk__run_alerts gk__run_alerts;

/* Parses every rule of cfg->alerts without starting anything. Returns 0 or the error of the
 * first bad rule (GK_ESYNTAX, -ENOSPC), described in err. */
int gk__alerts_check(const gk_run_config *cfg, char *err, size_t errlen);

/* Adds the rules to the sampler's monitor: they are evaluated at every sample, and state
 * changes go to rec with times relative to t0 (monotonic seconds). *out is NULL when there are
 * no rules. */
int gk__alerts_start(const gk_run_config *cfg, gk__sampler *smp, gk_recorder *rec, double t0,
                     gk__run_alerts **out, char *err, size_t errlen);

/* Transitions to firing so far. */
uint64_t gk__alerts_fired(const gk__run_alerts *a);

/* Stops recording state changes and frees. NULL is a no-op. */
void gk__alerts_stop(gk__run_alerts *a);

#endif
