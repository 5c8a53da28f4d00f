/* Status codes and error text shared by every part of gpukit.
 *
 * Every function that can fail returns int: 0 on success, a negative errno (-ENOMEM, -EINVAL,
 * -ETIMEDOUT, ...) for failures that errno describes well, or a gpukit code at -4000 and below for
 * the rest. No function returns a positive status. Codes are never renumbered or removed; new ones
 * are added at the end of the table.
 *
 * Error text: every failing call stores a one-line message (naming the thing, the value and the
 * fix) in a thread-local slot that gk_last_error() returns. */
#ifndef GPUKIT_ERROR_H
#define GPUKIT_ERROR_H

#include <errno.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The errno values gpukit returns (negated), with the text gk_strerror() gives them. */
#define GK_ERRNO_MAP(XX)                                                                           \
    XX(EPERM, "operation not permitted")                                                           \
    XX(ENOENT, "no such file, device or entry")                                                    \
    XX(EINTR, "interrupted")                                                                       \
    XX(EIO, "input/output error")                                                                  \
    XX(EBADF, "bad handle or file descriptor")                                                     \
    XX(EAGAIN, "resource temporarily unavailable")                                                 \
    XX(ENOMEM, "out of host memory")                                                               \
    XX(EACCES, "permission denied")                                                                \
    XX(EFAULT, "bad address")                                                                      \
    XX(EBUSY, "resource busy")                                                                     \
    XX(EEXIST, "already exists")                                                                   \
    XX(ENODEV, "no such device")                                                                   \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(ENOSPC, "no space left")                                                                    \
    XX(EPIPE, "broken pipe")                                                                       \
    XX(ERANGE, "value out of range")                                                               \
    XX(ENOSYS, "function not available")                                                           \
    XX(ENOTSUP, "not supported")                                                                   \
    XX(EOVERFLOW, "value too large")                                                               \
    XX(ECANCELED, "canceled")                                                                      \
    XX(ETIMEDOUT, "timed out")                                                                     \
    XX(EFBIG, "file too large (a file-size limit)")                                                \
    XX(EISDIR, "is a directory")                                                                   \
    XX(ENOTDIR, "not a directory")                                                                 \
    XX(ENXIO, "no such device or address (a named pipe without a reader)")                         \
    XX(ENAMETOOLONG, "file name too long")                                                         \
    XX(EROFS, "read-only filesystem")                                                              \
    XX(EDQUOT, "disk quota exceeded")                                                              \
    XX(EADDRINUSE, "address already in use")

/* gpukit's own codes (name, value, text). */
#define GK_CODE_MAP(XX)                                                                            \
    XX(GK_ENOGPU, -4000, "no usable GPU or driver")                                                \
    XX(GK_EDRIVER, -4001, "the GPU driver returned an error")                                      \
    XX(GK_ECORRUPT, -4002, "corrupt or malformed data")                                            \
    XX(GK_EDEVLOST, -4003, "the device was lost")                                                  \
    XX(GK_ENOTREADY, -4004, "not complete yet")                                                    \
    XX(GK_EUNAVAIL, -4005, "not available on this backend or driver")                              \
    XX(GK_EDEVOOM, -4006, "out of device memory")                                                  \
    XX(GK_EMISMATCH, -4007, "saved state does not match")                                          \
    XX(GK_EVERSION, -4008, "unsupported format or driver version")                                 \
    XX(GK_ESYNTAX, -4009, "syntax error")                                                          \
    XX(GK_EFAULTINJ, -4010, "injected fault")                                                      \
    XX(GK_LOADER_END, -4011, "end of the configured epochs")

enum gk_status {
    GK_OK = 0,
#define GK__CODE_ENUM(name, value, text) name = (value),
    GK_CODE_MAP(GK__CODE_ENUM)
#undef GK__CODE_ENUM
};

/* A short English description of `code` ("out of device memory"). Unknown codes give
 * "unknown error". Static storage; thread-safe. */
GK_API const char *gk_strerror(int code);

/* The symbolic name of `code` ("GK_EDEVOOM", "ENOMEM", "OK"); "UNKNOWN" when unknown. Static
 * storage; thread-safe. */
GK_API const char *gk_err_name(int code);

/* The message of the last failing gpukit call on the calling thread ("" when none has failed):
 * one line naming what failed and how to fix it, for example
 *     device spec "sim:capacity=12Q": capacity: "12Q" is not a size (try 16GiB)
 * Thread-local: each thread sees only its own failures, so two threads failing on one handle at
 * once each read their own message. A successful call leaves it unchanged. The string is valid
 * until the next gpukit call on the same thread; copy it to keep it. Never NULL. Errors that a
 * loader's worker thread meets reach the consumer through gk_loader_next's return value, and
 * their message is copied into the consumer's slot then. */
GK_API const char *gk_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
