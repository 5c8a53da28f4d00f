/* Private parts of the host reader shared by the system sampler and the process-tree walker. */
#ifndef GK_HOST_INT_H
#define GK_HOST_INT_H

#include <stddef.h>

#include "gpukit/telemetry.h"

#define GK__HOST_BUF (256 * 1024)

struct gk_host {
    char root[256]; /* "/proc" or the override */
    char *buf;      /* GK__HOST_BUF bytes for file contents */
    double clk_tck; /* USER_HZ */
    long page_size; /* bytes */
};

/* Reads proc_root/rel (rel without a leading slash) into h->buf, NUL-terminated; a file larger
 * than the buffer is cut at its last complete line. Returns the length or a negative errno. */
long gk__host_read(gk_host *h, const char *rel);

/* Reads proc_root/rel into a caller buffer, NUL-terminated. Returns the length or -errno. */
long gk__host_read_into(const gk_host *h, const char *rel, char *buf, size_t cap);

#endif
