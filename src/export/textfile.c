/* The node_exporter textfile: the registry in Prometheus text format, written to a temporary
 * file beside the target, flushed to disk and renamed over it, so a reader sees either the old
 * file or the new one, never half of one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/export.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int gk_metrics_write_textfile(gk_metrics *m, const char *path)
{
    if (!m || !path || !*path)
        return gk__error(-EINVAL, "gk_metrics_write_textfile: registry or path is missing");
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return gk__error(-ENAMETOOLONG, "gk_metrics_write_textfile: the path is too long");
    char *text = NULL;
    size_t len = 0;
    int rc = gk_metrics_render(m, GK_METRICS_PROMETHEUS, &text, &len);
    if (rc)
        return rc;
    int fd = gk__open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    rc = write_all(fd, text, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
out_free:
    free(text);
    if (rc)
        return gk__error(rc, "writing the textfile %s: %s", path, strerror(-rc));
    return 0;
}
