/* The node_exporter textfile: the registry in Prometheus text format, written through gk_output
 * (a temporary file beside the target, flushed to disk and renamed over it), so a reader sees
 * either the old file or the new one, never half of one; a device or pipe is written in place. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/export.h"
#include "gpukit/output.h"

int gk_metrics_write_textfile(gk_metrics *m, const char *path)
{
    if (!m || !path || !*path)
        return gk__error(-EINVAL, "gk_metrics_write_textfile: registry or path is missing");
    char *text = NULL;
    size_t len = 0;
    int rc = gk_metrics_render(m, GK_METRICS_PROMETHEUS, &text, &len);
    if (rc)
        return rc;
    gk_output *o = NULL;
    rc = gk_output_open(path, 0, &o, NULL, 0);
    if (rc == 0) {
        gk_output_write(o, text, len);
        rc = gk_output_commit(o, NULL, 0);
    }
    free(text);
    return rc; /* gk_output's message names the file and the cause */
}
