/* Logging: levels, a per-handle logger and the GK_LOG environment variable.
 *
 * gpukit never writes to stderr behind the user's back except through a logger. Each handle that
 * logs takes a gk_logger in its config; the default one writes "gpukit: LEVEL: COMPONENT: message"
 * to stderr at level warn, and gk_logger_from_env (called by every config's _from_env function)
 * applies the level named by GK_LOG. */
#ifndef GPUKIT_LOG_H
#define GPUKIT_LOG_H

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gk_log_level {
    GK_LOG_OFF = 0,
    GK_LOG_ERROR = 1,
    GK_LOG_WARN = 2,
    GK_LOG_INFO = 3,
    GK_LOG_DEBUG = 4,
    GK_LOG_TRACE = 5
} gk_log_level;

/* Receives one formatted message (no trailing newline). Called from whichever thread logged: it
 * must be thread-safe if the handle is used from several threads. */
typedef void (*gk_log_fn)(void *user, gk_log_level level, const char *component,
                          const char *message);

typedef struct gk_logger {
    gk_log_fn fn;       /* NULL: write to stderr */
    void *user;         /* passed to fn */
    gk_log_level level; /* messages above this level are dropped */
} gk_logger;

/* Fills `lg` with the default logger: stderr, level warn. Reads no environment variable. */
GK_API void gk_logger_default(gk_logger *lg);

/* Sets lg->level from GK_LOG (off, error, warn, info, debug, trace, or 0-5) when it is set.
 * Returns 0, or -EINVAL naming the value and the valid levels (the level is then unchanged). */
GK_API int gk_logger_from_env(gk_logger *lg);

/* Formats and delivers a message if `level` <= lg->level. `lg` may be NULL (then nothing is
 * logged). Thread-safe as far as lg->fn is. */
GK_API void gk_log(const gk_logger *lg, gk_log_level level, const char *component, const char *fmt,
                   ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* "error", "warn", ...; "off" for GK_LOG_OFF. Static storage. */
GK_API const char *gk_log_level_name(gk_log_level level);

/* Parses a level name (case-insensitive) or a digit 0-5. Returns 0 or -EINVAL. */
GK_API int gk_parse_log_level(const char *text, gk_log_level *out);

#ifdef __cplusplus
}
#endif
#endif
