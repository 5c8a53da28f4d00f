/* gk_last_error's thread-local slot and the sized-struct helpers (gpukit/version.h explains the
 * sizing rule; docs/architecture.md the error rule). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/error.h"

static _Thread_local char last_error[GK__ERROR_MAX];
static _Thread_local unsigned long error_seq;

unsigned long gk__error_seq(void)
{
    return error_seq;
}

const char *gk_last_error(void)
{
    return last_error;
}

int gk__verror(int rc, const char *fmt, va_list ap)
{
    char scratch[GK__ERROR_MAX];
    if (!fmt)
        snprintf(scratch, sizeof scratch, "%s", gk_strerror(rc));
    else
        vsnprintf(scratch, sizeof scratch, fmt, ap);
    memcpy(last_error, scratch, sizeof scratch);
    error_seq++;
    return rc;
}

int gk__error(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gk__verror(rc, fmt, ap);
    va_end(ap);
    return rc;
}

int gk__error_buf(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gk__verror(rc, fmt, ap);
    va_end(ap);
    if (err && errlen)
        snprintf(err, errlen, "%s", last_error);
    return rc;
}

int gk__error_text(int rc, const char *text)
{
    if (text != last_error)
        snprintf(last_error, sizeof last_error, "%s", text ? text : gk_strerror(rc));
    error_seq++;
    return rc;
}

int gk__sized_in(void *dst, size_t full, const void *src, const char *type)
{
    size_t n = gk__sized_size(src);
    if (n < sizeof(size_t))
        return gk__error(-EINVAL,
                         "%s: size is %zu (start from its _default() function, which sets size)",
                         type, n);
    if (n > full)
        n = full;
    if (n > sizeof(size_t))
        memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
               n - sizeof(size_t));
    *(size_t *)dst = full;
    return 0;
}

int gk__sized_check(const void *out, size_t size, const char *type)
{
    if (!out)
        return gk__error(-EINVAL, "%s: the output pointer is NULL", type);
    if (size < sizeof(size_t))
        return gk__error(-EINVAL, "%s: size %zu is too small (pass sizeof(%s))", type, size, type);
    return 0;
}

int gk__sized_put(void *out, size_t size, const void *src, size_t full, const char *type)
{
    int rc = gk__sized_check(out, size, type);
    if (rc)
        return rc;
    size_t n = size < full ? size : full;
    if (n > sizeof(size_t) && out != src)
        memmove((char *)out + sizeof(size_t), (const char *)src + sizeof(size_t),
                n - sizeof(size_t));
    *(size_t *)out = n;
    return 0;
}
