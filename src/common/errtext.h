/* The thread-local error text behind gk_last_error(), and the checks of sized structs (see
 * gpukit/version.h). Every public call that fails stores its message through gk__error, and every
 * public call that takes or fills a sized struct goes through gk__sized_in / gk__sized_out. */
#ifndef GK_COMMON_ERRTEXT_H
#define GK_COMMON_ERRTEXT_H

#include <stdarg.h>
#include <stddef.h>

/* Longest message kept, including the NUL. */
#define GK__ERROR_MAX 1024

/* Formats the calling thread's message and returns `rc`, so a failing path can end with
 * `return gk__error(-EINVAL, "pool config: round %zu is not a power of two", v);`. The arguments
 * may point into the current message (it is formatted into a scratch buffer first). fmt NULL
 * stores gk_strerror(rc). */
int gk__error(int rc, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int gk__verror(int rc, const char *fmt, va_list ap)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 0)))
#endif
    ;

/* How many messages this thread has stored: a call compares it before and after an inner call to
 * tell whether the message is fresh (set during the inner call) or left from an earlier one. */
unsigned long gk__error_seq(void);

/* Copies `text` as the message (truncated to GK__ERROR_MAX - 1) and returns rc. */
int gk__error_text(int rc, const char *text);

/* Error text for functions that also take an err/errlen buffer: formats the message into the
 * thread's slot and copies it into err (when err is not NULL and errlen > 0). Returns rc. */
int gk__error_buf(int rc, char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Reads a caller's sized input struct into `dst`, which already holds the library's defaults and
 * is `full` bytes long: the caller's bytes up to min(its size, full) replace the defaults, and
 * dst's size becomes full. Returns 0, or -EINVAL with a message naming `type` when the caller's
 * size is below sizeof(size_t) (it did not come from the _default() function, and the caller did
 * not set it). */
int gk__sized_in(void *dst, size_t full, const void *src, const char *type);

/* Copies the library's filled struct `src` (`full` bytes; its size field is ignored) into the
 * caller's `out`, whose size is `size` (what the public macro passed: sizeof *out in the caller's
 * build), and sets out's size field to the bytes filled, min(size, full). Returns 0, or -EINVAL
 * with a message naming `type` when out is NULL or size is below sizeof(size_t). */
int gk__sized_put(void *out, size_t size, const void *src, size_t full, const char *type);

/* Checks an output before it is filled (for functions that validate first): as gk__sized_put. */
int gk__sized_check(const void *out, size_t size, const char *type);

/* The size a sized struct declares. */
static inline size_t gk__sized_size(const void *p)
{
    return *(const size_t *)p;
}

/* Whether the caller's sized struct at `p` holds the field at [off, off + len). */
static inline int gk__sized_has(const void *p, size_t off, size_t len)
{
    return gk__sized_size(p) >= off + len;
}
#define GK__SIZED_HAS(p, type, field)                                                              \
    gk__sized_has((p), offsetof(type, field), sizeof(((type *)0)->field))

#endif
