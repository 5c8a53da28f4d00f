/* Fuzz target: the /proc parsers of the host reader. The input becomes the content of every file
 * the reader opens (stat, meminfo, loadavg, diskstats, net/dev, 7/stat, 7/io, 7/smaps_rollup) in
 * a scratch proc root; a sample and the process tree of pid 7 must never crash, and counts stay
 * within their arrays. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "gpukit/telemetry.h"

static char root[64];

static void put(const char *rel, const uint8_t *data, size_t size)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(data, 1, size, f);
    fclose(f);
}

static const char *const files[] = {"stat",    "meminfo", "loadavg",        "diskstats",
                                    "net/dev", "7/stat",  "7/smaps_rollup", "7/io"};

/* Removes the scratch proc root when the process ends. */
static void cleanup(void)
{
    char path[128];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/net", root);
    rmdir(path);
    snprintf(path, sizeof path, "%s/7", root);
    rmdir(path);
    rmdir(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        snprintf(root, sizeof root, "/tmp/gk-fuzz-procfs-%ld", (long)getpid());
        char sub[96];
        mkdir(root, 0700);
        snprintf(sub, sizeof sub, "%s/net", root);
        mkdir(sub, 0700);
        snprintf(sub, sizeof sub, "%s/7", root);
        mkdir(sub, 0700);
        atexit(cleanup);
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        put(files[i], data, size);
    gk_host_config cfg = {.size = sizeof(gk_host_config), .proc_root = root};
    gk_host *h = NULL;
    if (gk_host_open(&cfg, &h) != 0)
        return 0;
    gk_host_sample *s = malloc(sizeof *s);
    if (s) {
        gk_host_sample_read(h, GK_HOST_ALL & ~(unsigned)GK_HOST_FS, s);
        if (s->ncpus > GK_HOST_MAX_CPUS || s->ndisks > GK_HOST_MAX_DISKS ||
            s->nnets > GK_HOST_MAX_NETS)
            __builtin_trap();
        free(s);
    }
    gk_proc_tree t;
    if (gk_host_proc_tree(h, 7, &t) == 0 &&
        (t.nprocs > 1 || !memchr(t.root_comm, 0, sizeof t.root_comm)))
        __builtin_trap();
    gk_host_close(h);
    return 0;
}
