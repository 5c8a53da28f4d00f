/* gpukit: every public header in one include. */
#ifndef GPUKIT_GPUKIT_H
#define GPUKIT_GPUKIT_H

#include "batch.h"
#include "device.h"
#include "error.h"
#include "export.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "options.h"
#include "output.h"
#include "pool.h"
#include "pressure.h"
#include "report.h"
#include "run.h"
#include "telemetry.h"
#include "trace.h"
#include "version.h"

#endif
