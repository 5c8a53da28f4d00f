/* One-line failure messages written into a caller's buffer, for the functions whose contract is
 * "returns a code, err receives the reason". */
#ifndef GK_COMMON_ERRBUF_H
#define GK_COMMON_ERRBUF_H

#include <stddef.h>

/* Formats the message into err (nothing when err is NULL or errlen 0) and returns rc. */
int gk__errbuf(char *err, size_t errlen, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
