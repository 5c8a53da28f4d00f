/* Output: files written so that a failure never destroys what was there, and text made safe for a
 * terminal. Every file gpukit writes (recordings, reports, record files, snapshots, traces, the
 * node_exporter textfile) goes through gk_output.
 *
 * What happens to the target depends on what it is when gk_output_open looks at it:
 *   - a regular file, or a path that does not exist: the data goes to a temporary file beside it
 *     (".NAME.gk-XXXXXX" in the same folder, so the rename stays on one filesystem), which
 *     gk_output_commit flushes to disk (fsync) and renames over the target. Until then the old
 *     file is untouched; a failed or aborted write removes only the temporary file. A replaced
 *     file keeps its permission bits (and its owner, when run as root).
 *   - a symbolic link to a regular file: the file it names is replaced; the link stays a link.
 *   - a character device, a named pipe or a symbolic link to one (/dev/null, /dev/stdout on a
 *     terminal or pipe, a FIFO): written in place. It is never renamed over, truncated, deleted
 *     or fsync'ed. A named pipe without a reader is refused at once rather than waited for.
 *     Writers that seek (GK_OUTPUT_SEEKABLE) refuse these too.
 *   - a directory, a block device, a socket, or a symbolic link to nothing: refused.
 * Nothing that existed before gk_output_open is ever deleted.
 *
 * Every write, flush, fsync, close and rename is checked; the first failure is kept and returned
 * by gk_output_commit with a message naming the file: a full disk is -ENOSPC, a file-size limit
 * -EFBIG (a process that writes files should ignore SIGXFSZ, as the gpukit tool does, or the
 * limit kills it instead), a quota -EDQUOT, a pipe whose reader left -EPIPE.
 *
 * A gk_output is used by one thread at a time. */
#ifndef GPUKIT_OUTPUT_H
#define GPUKIT_OUTPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_output gk_output;

/* The writer seeks (gk_output_pwrite): only a regular file (or a new path) can be the target. */
#define GK_OUTPUT_SEEKABLE 0x1u
/* A log that must survive the writer being killed (a run recording): a path that does not exist
 * yet is created and written in place, so every line written is readable at PATH even if the
 * process dies; an existing file is still replaced only by gk_output_commit. */
#define GK_OUTPUT_LOG 0x2u

/* Opens `path` for writing as described above. Returns 0 and *out, or a negative errno with a
 * message naming the path and the fix in `err` (may be NULL): -EISDIR (a directory), -ENOENT
 * (the folder does not exist, or a link to nothing), -EACCES (not writable), -ENXIO (a named pipe
 * without a reader), -EINVAL (a block device or socket, or a non-regular target with
 * GK_OUTPUT_SEEKABLE), -ENOMEM, or the errno of open. */
GK_API int gk_output_open(const char *path, unsigned flags, gk_output **out, char *err,
                          size_t errlen);

/* Writes all `len` bytes (short writes and EINTR are retried). Returns 0 or the first error of
 * this output (negative errno); after an error every later call returns it again. */
GK_API int gk_output_write(gk_output *o, const void *buf, size_t len);

/* Writes `len` bytes at offset `off` (GK_OUTPUT_SEEKABLE outputs only). Errors as
 * gk_output_write. */
GK_API int gk_output_pwrite(gk_output *o, const void *buf, size_t len, uint64_t off);

/* A stdio stream whose writes go through gk_output_write, so their errors are kept with their
 * errno; created on the first call, owned by the output (never fclose it). NULL on -ENOMEM. */
GK_API FILE *gk_output_stream(gk_output *o);

/* Checks that about `bytes` more bytes fit on the target's filesystem (statvfs, the space an
 * unprivileged user may use) before a large output is written. Returns 0, or -ENOSPC with a
 * message giving both figures. Always 0 for devices and pipes. */
GK_API int gk_output_reserve(gk_output *o, uint64_t bytes, char *err, size_t errlen);

/* The first error met so far (a negative errno), or 0. Call fflush on gk_output_stream first to
 * include what the stream still holds. */
GK_API int gk_output_error(const gk_output *o);

/* The path as given to gk_output_open. */
GK_API const char *gk_output_path(const gk_output *o);

/* Finishes: flushes the stream, fsyncs and closes, and renames the temporary file over the
 * target. Returns 0, or the first error met since the open (the temporary file is then removed
 * and the target left as it was) with a message naming the file in `err`. Frees `o` either way;
 * NULL is -EINVAL. */
GK_API int gk_output_commit(gk_output *o, char *err, size_t errlen);

/* Gives up: closes and removes the temporary file (never the target, never a device, never a
 * path that existed before), and frees `o`. A log created in place (GK_OUTPUT_LOG) is kept with
 * what was written. NULL is a no-op. */
GK_API void gk_output_abort(gk_output *o);

/* Flushes a stream the caller owns (stdout, say) and reports whether everything written to it
 * arrived: 0, or the negative errno of the failed write (-EIO when stdio kept no errno), with
 * "cannot write to NAME: reason" in `err`. */
GK_API int gk_output_check_stream(FILE *f, const char *name, char *err, size_t errlen);

/* Copies `src` into `dst` (at most dstlen bytes with the NUL) with every byte that could steer a
 * terminal made visible: C0 controls and DEL as \n, \t, \r, \e or \xHH, C1 controls (U+0080 to
 * U+009F) as \u0080..\u009f, and bytes that are not UTF-8 as \xHH; a backslash stays a backslash.
 * Printable UTF-8 passes unchanged. Truncates at a character boundary. Returns the length
 * the whole escaped text needs (without the NUL), like snprintf. */
GK_API size_t gk_text_escape(char *dst, size_t dstlen, const char *src);

/* Writes `s` to `out` escaped as gk_text_escape does, without truncation. Returns 0 or -EIO. */
GK_API int gk_text_fputs(const char *s, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
