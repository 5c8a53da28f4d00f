/* Helpers shared by the unit tests: cmocka plus assertions that print gpukit status names.
 *
 * cmocka's assert_int_equal prints negative codes as huge unsigned numbers; GK_ASSERT_OK and
 * GK_ASSERT_ERR print gk_err_name() of what came back instead. */
#ifndef GK_TEST_H
#define GK_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gpukit/gpukit.h"

#define GK_ASSERT_OK(expr)                                                                         \
    do {                                                                                           \
        int gk__rc = (expr);                                                                       \
        if (gk__rc != 0)                                                                           \
            fail_msg("%s returned %s (%d): %s", #expr, gk_err_name(gk__rc), gk__rc,                \
                     gk_strerror(gk__rc));                                                         \
    } while (0)

#define GK_ASSERT_ERR(expr, want)                                                                  \
    do {                                                                                           \
        int gk__rc = (expr), gk__want = (want);                                                    \
        if (gk__rc != gk__want)                                                                    \
            fail_msg("%s returned %s (%d), expected %s (%d)", #expr, gk_err_name(gk__rc), gk__rc,  \
                     gk_err_name(gk__want), gk__want);                                             \
    } while (0)

/* Asserts that `haystack` contains `needle`, printing both when not. */
#define GK_ASSERT_CONTAINS(haystack, needle)                                                       \
    do {                                                                                           \
        const char *gk__h = (haystack), *gk__n = (needle);                                         \
        if (!gk__h || !gk__n || !strstr(gk__h, gk__n))                                             \
            fail_msg("expected \"%s\" to contain \"%s\"", gk__h ? gk__h : "(null)", gk__n);        \
    } while (0)

/* Sets or unsets (value NULL) an environment variable for the rest of the test. */
void gk_test_setenv(const char *name, const char *value);

/* Makes a fresh empty directory under the build tree for this test and returns its path
 * (static storage, valid until the next call). */
const char *gk_test_tmpdir(const char *tag);

/* The path of the fake libcuda.so.1 built with the tests. */
const char *gk_test_fake_cuda(void);

#endif
