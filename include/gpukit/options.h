/* Settings: one table gives every setting's dotted name, config field, GK_* environment variable
 * and command-line flag, and the parsers for the value syntaxes they use.
 *
 * Sizes accept a plain byte count, a 0x-prefixed hexadecimal byte count (no unit), or a number with
 * K, M, G, T, P (powers of 1024, optional trailing B) or KiB, MiB, GiB, TiB, PiB; decimals are
 * allowed ("1.5GiB"). Durations accept s, ms, us, ns, m, h
 * (a bare number is seconds). Errors name the setting, the bad value and the fix, for example
 *     GK_SYNC_TIMEOUT: "fast" is not a duration (try 30s or 500ms) */
#ifndef GPUKIT_OPTIONS_H
#define GPUKIT_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gk_option_type {
    GK_OPT_STRING,
    GK_OPT_SIZE,
    GK_OPT_DURATION,
    GK_OPT_LOG_LEVEL,
    GK_OPT_BOOL,
    GK_OPT_INT,
    GK_OPT_DOUBLE
} gk_option_type;

#define GK_OPT_STRING_MAX 256

/* The table: XX(field, dotted name, environment variable, CLI flag, type, default, help). */
#define GK_OPTION_MAP(XX)                                                                          \
    XX(device, "device", "GK_DEVICE", "--device", GK_OPT_STRING, "auto",                           \
       "device spec: auto, host, cuda[:N] or sim[:key=value,...]")                                 \
    XX(log_level, "log", "GK_LOG", "--log", GK_OPT_LOG_LEVEL, "warn",                              \
       "log level: off, error, warn, info, debug or trace")                                        \
    XX(cuda_library, "cuda.library", "GK_CUDA_LIBRARY", "--cuda-library", GK_OPT_STRING,           \
       "libcuda.so.1", "CUDA driver library loaded with dlopen")                                   \
    XX(nvml_library, "nvml.library", "GK_NVML_LIBRARY", "--nvml-library", GK_OPT_STRING,           \
       "libnvidia-ml.so.1", "NVML library loaded with dlopen (GPU metrics)")                       \
    XX(sync_timeout, "sync.timeout", "GK_SYNC_TIMEOUT", "--sync-timeout", GK_OPT_DURATION, "60s",  \
       "longest wait of a blocking device call (event or stream synchronize)")                     \
    XX(pool_conf, "pool.conf", "GK_POOL_CONF", "--pool-conf", GK_OPT_STRING, "",                   \
       "caching-pool settings key=value,... applied on top of a preset (docs/pool.md)")

/* The settings, one field per table row. Strings are stored inline (no ownership). Field types
 * follow the row's type: STRING char[GK_OPT_STRING_MAX], SIZE uint64_t, DURATION and DOUBLE
 * double (seconds), LOG_LEVEL gk_log_level, BOOL int, INT long long. */
typedef struct gk_options {
    size_t size; /* sizeof(gk_options) (set by gk_options_default) */
    char device[GK_OPT_STRING_MAX];
    gk_log_level log_level;
    char cuda_library[GK_OPT_STRING_MAX];
    char nvml_library[GK_OPT_STRING_MAX];
    double sync_timeout; /* seconds */
    char pool_conf[GK_OPT_STRING_MAX];
} gk_options;

/* A row of the table, for tools that list or document the settings. */
typedef struct gk_option_info {
    const char *name; /* dotted name, "sync.timeout" */
    const char *env;  /* "GK_SYNC_TIMEOUT" */
    const char *flag; /* "--sync-timeout" */
    gk_option_type type;
    const char *default_value;
    const char *help;
} gk_option_info;

/* Fills every field with its default from the table. Reads no environment variable. */
GK_API void gk_options_default(gk_options *o, size_t size);
#define gk_options_default(o) (gk_options_default)((o), sizeof *(o))

/* Applies every GK_* variable of the table that is set in the environment. On the first bad value
 * returns -EINVAL with a one-line message naming the variable, the value and the fix (in
 * gk_last_error(), and in err when errlen > 0); the fields already applied keep their new values.
 * Fields beyond o->size (a program built against an older header) are skipped. */
GK_API int gk_options_from_env(gk_options *o, char *err, size_t errlen);

/* Sets one setting named by its dotted name, environment variable or flag. Returns 0, -ENOENT
 * for an unknown key (or one beyond o->size), or -EINVAL for a bad value; the message, which names
 * the key as given, is in gk_last_error() and in err. */
GK_API int gk_options_set(gk_options *o, const char *key, const char *value, char *err,
                          size_t errlen);

/* Writes the current value of row `index` as text (sizes in bytes, durations in seconds). Returns
 * 0, or -ERANGE for an index past the table. */
GK_API int gk_options_format(const gk_options *o, size_t index, char *buf, size_t len);

/* Number of rows and the row at `index` (NULL past the end). Static storage. */
GK_API size_t gk_option_count(void);
GK_API const gk_option_info *gk_option_at(size_t index);

/* Value parsers. Each returns 0, -EINVAL for bad syntax or -ERANGE for a value that does not fit;
 * `*out` is written only on success. */
GK_API int gk_parse_size(const char *text, uint64_t *out);
GK_API int gk_parse_duration(const char *text, double *seconds);
GK_API int gk_parse_bool(const char *text, int *out);
GK_API int gk_parse_int(const char *text, long long *out);
GK_API int gk_parse_double(const char *text, double *out);

/* Formats a byte count for people: "512 B", "1.50 KiB", "16.00 GiB". Returns buf. */
GK_API char *gk_format_size(uint64_t bytes, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
