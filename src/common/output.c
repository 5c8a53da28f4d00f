/* gk_output: the one way gpukit writes a file. A regular target is replaced by renaming a fully
 * written and fsync'ed temporary file over it; devices and pipes are written in place and never
 * renamed over, truncated or deleted; everything else is refused. Every error is kept with its
 * errno so the message can name the file and the cause (a full disk, a file-size limit). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/options.h"
#include "gpukit/output.h"

enum out_kind {
    OUT_TEMP,    /* a temporary file renamed over the target at commit */
    OUT_NEW_LOG, /* a new file created in place (GK_OUTPUT_LOG) */
    OUT_DEVICE   /* a character device or a FIFO, written in place */
};

struct gk_output {
    int fd;
    enum out_kind kind;
    unsigned flags;
    int err;          /* the first error, negative errno */
    uint64_t written; /* bytes written so far */
    char *path;       /* as given */
    char *target;     /* the file replaced at commit (a symbolic link resolved) */
    char *tmp;        /* the temporary file (OUT_TEMP) */
    FILE *stream;
};

/* What to do about an errno from writing: the fix a user can apply. */
static const char *write_hint(int e)
{
    switch (e) {
    case ENOSPC:
        return " (free space there, or choose another place)";
    case EDQUOT:
        return " (the disk quota is used up: free space, or choose another place)";
    case EFBIG:
        return " (a file-size limit: see 'ulimit -f', or choose another place)";
    case EPIPE:
        return " (the reader of the pipe went away)";
    case EROFS:
        return " (the filesystem is read-only: choose another place)";
    case EACCES:
    case EPERM:
        return " (check the permissions of the file and its folder)";
    default:
        return "";
    }
}

static const char *type_name(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISFIFO(m))
        return "a named pipe";
    return "not a regular file";
}

static void free_output(gk_output *o)
{
    free(o->path);
    free(o->target);
    free(o->tmp);
    free(o);
}

/* Opens a device or FIFO in place. A FIFO is opened without waiting for a reader. */
static int open_in_place(gk_output *o, const struct stat *st, char *err, size_t errlen)
{
    int flags = O_WRONLY | O_CLOEXEC | O_NOCTTY | (S_ISFIFO(st->st_mode) ? O_NONBLOCK : 0);
    int fd = gk__open(o->path, flags);
    if (fd < 0) {
        int e = errno;
        if (e == ENXIO && S_ISFIFO(st->st_mode))
            gk__error_buf(0, err, errlen,
                          "%s: a named pipe with no reader (start the reader first)", o->path);
        else
            gk__error_buf(0, err, errlen, "%s: cannot open for writing: %s%s", o->path, strerror(e),
                          write_hint(e));
        return -e;
    }
    struct stat now;
    if (fstat(fd, &now) != 0 || (!S_ISCHR(now.st_mode) && !S_ISFIFO(now.st_mode))) {
        close(fd);
        gk__error_buf(0, err, errlen, "%s: changed while it was being opened; try again", o->path);
        return -EAGAIN;
    }
    if (S_ISFIFO(st->st_mode))
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    o->fd = fd;
    o->kind = OUT_DEVICE;
    return 0;
}

/* The folder and the temporary name beside `target`: ".BASE.gk-XXXXXX" (BASE cut to keep the
 * name short). Creates it with O_EXCL; mode 0666 less the umask, like any new file. */
static int open_temp(gk_output *o, char *err, size_t errlen)
{
    const char *slash = strrchr(o->target, '/');
    size_t dirlen = slash ? (size_t)(slash - o->target) + 1 : 0;
    const char *base = slash ? slash + 1 : o->target;
    size_t cap = dirlen + 128;
    o->tmp = gk__malloc(cap);
    if (!o->tmp) {
        gk__error_buf(0, err, errlen, "%s: out of memory", o->path);
        return -ENOMEM;
    }
    static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)o;
    for (int attempt = 0; attempt < 100; attempt++) {
        char sfx[7];
        for (int i = 0; i < 6; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            sfx[i] = digits[(seed >> 33) % 36];
        }
        sfx[6] = '\0';
        snprintf(o->tmp, cap, "%.*s.%.80s.gk-%s", (int)dirlen, o->target, base, sfx);
        int fd = gk__open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd >= 0) {
            o->fd = fd;
            o->kind = OUT_TEMP;
            return 0;
        }
        if (errno != EEXIST) {
            int e = errno;
            if (e == ENOENT || e == ENOTDIR)
                gk__error_buf(0, err, errlen,
                              "%s: the folder %.*s does not exist (create it first)", o->path,
                              dirlen ? (int)dirlen : 1, dirlen ? o->target : ".");
            else
                gk__error_buf(0, err, errlen, "%s: cannot create a file in its folder: %s%s",
                              o->path, strerror(e), write_hint(e));
            free(o->tmp);
            o->tmp = NULL;
            return -e;
        }
    }
    gk__error_buf(0, err, errlen, "%s: cannot find a free temporary name beside it", o->path);
    free(o->tmp);
    o->tmp = NULL;
    return -EEXIST;
}

/* The descriptor that /dev/stdout, /dev/stderr, /dev/fd/N or /proc/self/fd/N names, or -1. Such
 * a path means "the stream I already opened": it is written through a duplicate of that
 * descriptor (so `>>` keeps appending), never replaced, whatever file the descriptor is. */
static int named_descriptor(const char *path)
{
    if (strcmp(path, "/dev/stdout") == 0)
        return 1;
    if (strcmp(path, "/dev/stderr") == 0)
        return 2;
    const char *num = NULL;
    if (strncmp(path, "/dev/fd/", 8) == 0)
        num = path + 8;
    else if (strncmp(path, "/proc/self/fd/", 14) == 0)
        num = path + 14;
    if (!num || *num < '0' || *num > '9')
        return -1;
    char *end;
    long n = strtol(num, &end, 10);
    return *end || n > INT_MAX ? -1 : (int)n;
}

static int open_descriptor(gk_output *o, int n, unsigned flags, char *err, size_t errlen)
{
    if (flags & GK_OUTPUT_SEEKABLE) {
        gk__error_buf(0, err, errlen,
                      "%s: this output is written at several places, so it must be a regular "
                      "file; name the file itself",
                      o->path);
        return -EINVAL;
    }
    int fd = fcntl(n, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
        int e = errno;
        gk__error_buf(0, err, errlen, "%s: descriptor %d is not open (%s)", o->path, n,
                      strerror(e));
        return -e;
    }
    o->fd = fd;
    o->kind = OUT_DEVICE;
    return 0;
}

int gk_output_open(const char *path, unsigned flags, gk_output **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!path || !*path) {
        gk__error_buf(0, err, errlen, "the output file name is empty (name a file)");
        return -EINVAL;
    }
    gk_output *o = gk__calloc(1, sizeof *o);
    if (!o || !(o->path = gk__strdup(path))) {
        free(o);
        gk__error_buf(0, err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    o->fd = -1;
    o->flags = flags;
    int rc;
    int named = named_descriptor(path);
    if (named >= 0) {
        rc = open_descriptor(o, named, flags, err, errlen);
        if (rc)
            goto fail;
        *out = o;
        return 0;
    }
    struct stat lst, st;
    int exists = lstat(path, &lst) == 0;
    if (!exists && errno != ENOENT) {
        rc = -errno;
        gk__error_buf(0, err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (exists && S_ISLNK(lst.st_mode)) {
        if (stat(path, &st) != 0) {
            rc = -ENOENT;
            gk__error_buf(0, err, errlen,
                          "%s: a symbolic link to a missing file (remove the link, or name "
                          "the file itself)",
                          path);
            goto fail;
        }
    } else {
        st = lst;
    }
    if (exists && !S_ISREG(st.st_mode)) {
        int in_place = S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode);
        if (!in_place || (flags & GK_OUTPUT_SEEKABLE)) {
            rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
            gk__error_buf(0, err, errlen, "%s: is %s%s; name a regular file%s", path,
                          type_name(st.st_mode),
                          S_ISLNK(lst.st_mode) ? " (through a symbolic link)" : "",
                          S_ISDIR(st.st_mode) ? " inside it" : "");
            goto fail;
        }
        rc = open_in_place(o, &st, err, errlen);
        if (rc)
            goto fail;
        *out = o;
        return 0;
    }
    if (exists && S_ISLNK(lst.st_mode)) {
        o->target = realpath(path, NULL);
        if (!o->target) {
            rc = -errno;
            gk__error_buf(0, err, errlen, "%s: cannot resolve the symbolic link: %s", path,
                          strerror(errno));
            goto fail;
        }
    } else if (!(o->target = gk__strdup(path))) {
        rc = -ENOMEM;
        gk__error_buf(0, err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if (exists && access(o->target, W_OK) != 0) {
        rc = -errno;
        gk__error_buf(0, err, errlen, "%s: not writable: %s (check its permissions)", path,
                      strerror(errno));
        goto fail;
    }
    if (!exists && (flags & GK_OUTPUT_LOG)) {
        int fd = gk__open(o->target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
        if (fd >= 0) {
            o->fd = fd;
            o->kind = OUT_NEW_LOG;
            *out = o;
            return 0;
        }
        if (errno != EEXIST) {
            rc = -errno;
            if (errno == ENOENT || errno == ENOTDIR)
                gk__error_buf(0, err, errlen, "%s: its folder does not exist (create it first)",
                              path);
            else
                gk__error_buf(0, err, errlen, "%s: cannot create: %s%s", path, strerror(errno),
                              write_hint(errno));
            goto fail;
        }
        /* created by someone else meanwhile: replace it like any existing file */
    }
    rc = open_temp(o, err, errlen);
    if (rc)
        goto fail;
    if (exists) {
        fchmod(o->fd, st.st_mode & 07777);
        if (geteuid() == 0 && fchown(o->fd, st.st_uid, st.st_gid) != 0) {
            /* keep root's ownership rather than fail */
        }
    }
    *out = o;
    return 0;
fail:
    free_output(o);
    return rc;
}

static int keep(gk_output *o, int e)
{
    if (!o->err)
        o->err = -e;
    return o->err;
}

/* Writes all of buf, at `off` (pwrite) or at the descriptor's position (off < 0). */
static int write_at(gk_output *o, const void *buf, size_t len, int64_t off)
{
    if (o->err)
        return o->err;
    const char *p = buf;
    while (len > 0) {
        ssize_t w = off < 0 ? write(o->fd, p, len) : pwrite(o->fd, p, len, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return keep(o, errno);
        }
        if (w == 0)
            return keep(o, EIO);
        p += w;
        len -= (size_t)w;
        o->written += (uint64_t)w;
        if (off >= 0)
            off += w;
    }
    return 0;
}

int gk_output_write(gk_output *o, const void *buf, size_t len)
{
    if (!o || (!buf && len))
        return -EINVAL;
    return write_at(o, buf, len, -1);
}

int gk_output_pwrite(gk_output *o, const void *buf, size_t len, uint64_t off)
{
    if (!o || (!buf && len) || o->kind == OUT_DEVICE || off > (uint64_t)INT64_MAX - len)
        return -EINVAL;
    return write_at(o, buf, len, (int64_t)off);
}

static ssize_t stream_write(void *cookie, const char *buf, size_t len)
{
    gk_output *o = cookie;
    if (gk_output_write(o, buf, len) != 0) {
        errno = -o->err;
        return -1;
    }
    return (ssize_t)len;
}

FILE *gk_output_stream(gk_output *o)
{
    if (!o)
        return NULL;
    if (!o->stream) {
        cookie_io_functions_t io = {.write = stream_write};
        o->stream = fopencookie(o, "w", io);
    }
    return o->stream;
}

int gk_output_reserve(gk_output *o, uint64_t bytes, char *err, size_t errlen)
{
    if (!o)
        return -EINVAL;
    struct stat st;
    if (o->kind == OUT_DEVICE && (fstat(o->fd, &st) != 0 || !S_ISREG(st.st_mode)))
        return 0; /* a device or pipe; a descriptor to a regular file (stdout) is checked */
    struct statvfs vfs;
    if (fstatvfs(o->fd, &vfs) != 0)
        return 0; /* cannot tell: let the writes say */
    uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (bytes <= avail)
        return 0;
    char need[32], have[32];
    gk_format_size(bytes, need, sizeof need);
    gk_format_size(avail, have, sizeof have);
    return gk__error_buf(-ENOSPC, err, errlen,
                         "%s: the output needs about %s but only %s is free there (free space, "
                         "choose another place, or make the output smaller)",
                         o->path, need, have);
}

int gk_output_error(const gk_output *o)
{
    return o ? o->err : -EINVAL;
}

const char *gk_output_path(const gk_output *o)
{
    return o ? o->path : NULL;
}

/* Flushes and drops the stream (its writes land in o->err). */
static void close_stream(gk_output *o)
{
    if (!o->stream)
        return;
    if (fflush(o->stream) != 0 && !o->err)
        o->err = -EIO;
    fclose(o->stream);
    o->stream = NULL;
}

int gk_output_commit(gk_output *o, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!o)
        return -EINVAL;
    close_stream(o);
    const char *step = "cannot write";
    if (!o->err && o->kind != OUT_DEVICE && fsync(o->fd) != 0 && errno != EINVAL)
        keep(o, errno);
    if (close(o->fd) != 0 && errno != EINTR)
        keep(o, errno);
    o->fd = -1;
    /* A log keeps what was written before an error (a recording cut by a full disk is still a
     * recording); anything else is all or nothing. */
    int replace = !o->err || ((o->flags & GK_OUTPUT_LOG) && o->written > 0);
    int rc = o->err;
    if (replace && o->kind == OUT_TEMP) {
        if (rename(o->tmp, o->target) != 0) {
            keep(o, errno);
            rc = o->err;
            step = "cannot replace it";
        } else {
            free(o->tmp);
            o->tmp = NULL;
            /* make the rename itself durable */
            char *dir = gk__strdup(o->target);
            char *slash = dir ? strrchr(dir, '/') : NULL;
            if (dir) {
                if (slash)
                    slash[slash == dir] = '\0';
                int dfd = gk__open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                    fsync(dfd);
                    close(dfd);
                }
                free(dir);
            }
        }
    }
    if (!rc)
        rc = o->err;
    if (rc) {
        gk__error_buf(0, err, errlen, "%s: %s: %s%s", o->path, step, strerror(-rc),
                      write_hint(-rc));
        if (o->tmp)
            unlink(o->tmp);
    }
    free_output(o);
    return rc;
}

void gk_output_abort(gk_output *o)
{
    if (!o)
        return;
    close_stream(o);
    if (o->fd >= 0)
        close(o->fd);
    if (o->tmp)
        unlink(o->tmp);
    free_output(o);
}

int gk_output_check_stream(FILE *f, const char *name, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!f)
        return -EINVAL;
    errno = 0;
    int flushed = fflush(f);
    int e = errno;
    if (flushed == 0 && !ferror(f))
        return 0;
    if (!e)
        e = EIO;
    gk__error_buf(0, err, errlen, "cannot write to %s: %s%s", name ? name : "the output",
                  strerror(e), write_hint(e));
    return -e;
}

/* --- text for terminals ---------------------------------------------------------------------- */

/* The length of the UTF-8 sequence at s (1 to 4), or 0 when it is not valid UTF-8. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* The escape of the character at s into `rep` (NUL-terminated); *used gets its byte count (1 to
 * 4). Returns 1 when it must be escaped, 0 when it passes unchanged. */
static int escape_char(const unsigned char *s, size_t *used, char rep[8])
{
    unsigned c = s[0];
    size_t n = utf8_len(s);
    *used = n ? n : 1;
    if (c < 0x20 || c == 0x7f) {
        const char *named = c == '\n'   ? "\\n"
                            : c == '\t' ? "\\t"
                            : c == '\r' ? "\\r"
                            : c == 0x1b ? "\\e"
                                        : NULL;
        if (named)
            snprintf(rep, 8, "%s", named);
        else
            snprintf(rep, 8, "\\x%02x", c);
        return 1;
    }
    if (n == 0) {
        snprintf(rep, 8, "\\x%02x", c);
        return 1;
    }
    if (n == 2 && c == 0xc2 && s[1] < 0xa0) { /* C1 control, U+0080..U+009F */
        snprintf(rep, 8, "\\u%04x", (unsigned)s[1]);
        return 1;
    }
    return 0;
}

size_t gk_text_escape(char *dst, size_t dstlen, const char *src)
{
    size_t need = 0, at = 0;
    int full = 0;
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    while (*s) {
        char rep[8];
        size_t used;
        const char *piece = (const char *)s;
        size_t plen;
        if (escape_char(s, &used, rep)) {
            piece = rep;
            plen = strlen(rep);
        } else {
            plen = used;
        }
        if (!full && dst && at + plen < dstlen) {
            memcpy(dst + at, piece, plen);
            at += plen;
        } else {
            full = 1;
        }
        need += plen;
        s += used;
    }
    if (dst && dstlen)
        dst[at] = '\0';
    return need;
}

int gk_text_fputs(const char *s, FILE *out)
{
    if (!out)
        return -EINVAL;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        char rep[8];
        size_t used;
        int bad =
            escape_char(p, &used, rep) ? fputs(rep, out) < 0 : fwrite(p, 1, used, out) != used;
        if (bad)
            return -EIO;
        p += used;
    }
    return 0;
}
