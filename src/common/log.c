/* Loggers: level filtering, formatting and the default stderr sink. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/log.h"

static const char *const level_names[] = {"off", "error", "warn", "info", "debug", "trace"};

const char *gk_log_level_name(gk_log_level level)
{
    if ((int)level < 0 || (int)level > GK_LOG_TRACE)
        return "unknown";
    return level_names[level];
}

int gk_parse_log_level(const char *text, gk_log_level *out)
{
    if (!text || !out)
        return gk__error(-EINVAL, "gk_parse_log_level: text or out is NULL");
    for (int i = 0; i <= GK_LOG_TRACE; i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            *out = (gk_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *out = GK_LOG_WARN;
        return 0;
    }
    if (text[0] >= '0' && text[0] <= '5' && text[1] == '\0') {
        *out = (gk_log_level)(text[0] - '0');
        return 0;
    }
    return gk__error(
        -EINVAL, "\"%s\" is not a log level (try off, error, warn, info, debug or trace)", text);
}

void gk_logger_default(gk_logger *lg)
{
    if (!lg)
        return;
    lg->fn = NULL;
    lg->user = NULL;
    lg->level = GK_LOG_WARN;
}

void gk_log(const gk_logger *lg, gk_log_level level, const char *component, const char *fmt, ...)
{
    if (!lg || level == GK_LOG_OFF || level > lg->level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (lg->fn) {
        lg->fn(lg->user, level, component ? component : "", msg);
        return;
    }
    /* One fprintf per message so concurrent lines do not interleave. */
    fprintf(stderr, "gpukit: %s: %s%s%s\n", gk_log_level_name(level), component ? component : "",
            component ? ": " : "", msg);
}
