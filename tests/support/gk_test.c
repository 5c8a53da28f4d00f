/* Shared helpers for the unit tests (see gk_test.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gk_test.h"

void gk_test_setenv(const char *name, const char *value)
{
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

const char *gk_test_tmpdir(const char *tag)
{
    static char path[1024];
    char cmd[1200];
    snprintf(path, sizeof path, "%s/tests/tmp/%s-%ld", GK_TEST_BINARY_DIR, tag, (long)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", path, path);
    if (system(cmd) != 0)
        fail_msg("cannot make %s", path);
    return path;
}

const char *gk_test_fake_cuda(void)
{
    return GK_TEST_FAKE_CUDA;
}
