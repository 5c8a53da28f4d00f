/* Unit tests of the shared pieces: status codes, the settings table and its parsers, logging and
 * the version. gk-labels: unit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

static void test_error_names(void **state)
{
    (void)state;
    assert_string_equal(gk_err_name(0), "OK");
    assert_string_equal(gk_strerror(0), "success");
    assert_string_equal(gk_err_name(-ENOMEM), "ENOMEM");
    assert_string_equal(gk_strerror(-ENOMEM), "out of host memory");
    assert_string_equal(gk_err_name(-ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(gk_err_name(GK_EDEVOOM), "GK_EDEVOOM");
    assert_string_equal(gk_strerror(GK_EDEVOOM), "out of device memory");
    assert_string_equal(gk_err_name(GK_ENOGPU), "GK_ENOGPU");
    assert_int_equal(GK_ENOGPU, -4000);
    assert_string_equal(gk_err_name(-99999), "UNKNOWN");
    assert_string_equal(gk_strerror(-99999), "unknown error");
    assert_string_equal(gk_err_name(12345), "UNKNOWN");
    /* Every gpukit code has a distinct name and text. */
    static const int codes[] = {
#define C(name, value, text) value,
        GK_CODE_MAP(C)
#undef C
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_true(codes[i] <= -4000);
        assert_string_not_equal(gk_err_name(codes[i]), "UNKNOWN");
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
}

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    GK_ASSERT_OK(gk_parse_size("4096", &v));
    assert_int_equal(v, 4096);
    GK_ASSERT_OK(gk_parse_size("4K", &v));
    assert_int_equal(v, 4096);
    GK_ASSERT_OK(gk_parse_size("4kib", &v));
    assert_int_equal(v, 4096);
    GK_ASSERT_OK(gk_parse_size("2M", &v));
    assert_int_equal(v, 2u << 20);
    GK_ASSERT_OK(gk_parse_size("16GiB", &v));
    assert_int_equal(v, 16ull << 30);
    GK_ASSERT_OK(gk_parse_size("1.5GiB", &v));
    assert_int_equal(v, 3ull << 29);
    GK_ASSERT_OK(gk_parse_size(" 12 MB ", &v));
    assert_int_equal(v, 12u << 20);
    GK_ASSERT_OK(gk_parse_size("1T", &v));
    assert_int_equal(v, 1ull << 40);
    GK_ASSERT_OK(gk_parse_size("18446744073709551615", &v));
    assert_true(v == UINT64_MAX);
    /* Petabytes, and hex byte counts read as what they say (they were once read as 0). */
    GK_ASSERT_OK(gk_parse_size("1PiB", &v));
    assert_true(v == 1ull << 50);
    GK_ASSERT_OK(gk_parse_size("2p", &v));
    assert_true(v == 2ull << 50);
    GK_ASSERT_OK(gk_parse_size("0x8000000", &v));
    assert_int_equal(v, 0x8000000);
    GK_ASSERT_OK(gk_parse_size(" 0XfF ", &v));
    assert_int_equal(v, 255);
    GK_ASSERT_OK(gk_parse_size("0xffffffffffffffff", &v));
    assert_true(v == UINT64_MAX);
    GK_ASSERT_ERR(gk_parse_size("0x1ffffffffffffffff", &v), -ERANGE);
    GK_ASSERT_ERR(gk_parse_size("0x", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("0x10MiB", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("0x1.8p3", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("16384P", &v), -ERANGE);
    v = 7;
    GK_ASSERT_ERR(gk_parse_size("12Q", &v), -EINVAL);
    assert_int_equal(v, 7);
    GK_ASSERT_ERR(gk_parse_size("", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("-1", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("1.5", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("GiB", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("4 K B", &v), -EINVAL);
    GK_ASSERT_ERR(gk_parse_size("99999999999T", &v), -ERANGE);
    GK_ASSERT_ERR(gk_parse_size("99999999999999999999", &v), -ERANGE);
    GK_ASSERT_ERR(gk_parse_size(NULL, &v), -EINVAL);
}

static void test_parse_other(void **state)
{
    (void)state;
    double d;
    GK_ASSERT_OK(gk_parse_duration("30s", &d));
    assert_true(d == 30.0);
    GK_ASSERT_OK(gk_parse_duration("500ms", &d));
    assert_true(d == 0.5);
    GK_ASSERT_OK(gk_parse_duration("2", &d));
    assert_true(d == 2.0);
    GK_ASSERT_OK(gk_parse_duration("1.5m", &d));
    assert_true(d == 90.0);
    GK_ASSERT_OK(gk_parse_duration("250us", &d));
    assert_true(d > 0.000249 && d < 0.000251);
    GK_ASSERT_ERR(gk_parse_duration("fast", &d), -EINVAL);
    GK_ASSERT_ERR(gk_parse_duration("5 parsecs", &d), -EINVAL);
    GK_ASSERT_ERR(gk_parse_duration("-1s", &d), -EINVAL);

    int b;
    GK_ASSERT_OK(gk_parse_bool("yes", &b));
    assert_int_equal(b, 1);
    GK_ASSERT_OK(gk_parse_bool("OFF", &b));
    assert_int_equal(b, 0);
    GK_ASSERT_ERR(gk_parse_bool("maybe", &b), -EINVAL);

    long long i;
    GK_ASSERT_OK(gk_parse_int("-42", &i));
    assert_true(i == -42);
    GK_ASSERT_OK(gk_parse_int("0x10", &i));
    assert_true(i == 16);
    GK_ASSERT_ERR(gk_parse_int("4x", &i), -EINVAL);
    GK_ASSERT_ERR(gk_parse_int("", &i), -EINVAL);
    GK_ASSERT_ERR(gk_parse_int("99999999999999999999999", &i), -ERANGE);

    GK_ASSERT_OK(gk_parse_double("0.25", &d));
    assert_true(d == 0.25);
    GK_ASSERT_ERR(gk_parse_double("nan", &d), -EINVAL);
    GK_ASSERT_ERR(gk_parse_double("1,5", &d), -EINVAL);

    char buf[32];
    assert_string_equal(gk_format_size(512, buf, sizeof buf), "512 B");
    assert_string_equal(gk_format_size(1536, buf, sizeof buf), "1.50 KiB");
    assert_string_equal(gk_format_size(16ull << 30, buf, sizeof buf), "16.00 GiB");
}

static void test_options_table(void **state)
{
    (void)state;
    gk_options o;
    char err[256], buf[64];
    gk_options_default(&o);
    assert_string_equal(o.device, "auto");
    assert_int_equal(o.log_level, GK_LOG_WARN);
    assert_true(o.sync_timeout == 60.0);
    assert_true(gk_option_count() >= 4);
    assert_null(gk_option_at(gk_option_count()));
    for (size_t i = 0; i < gk_option_count(); i++) {
        const gk_option_info *r = gk_option_at(i);
        assert_non_null(r);
        assert_int_equal(strncmp(r->env, "GK_", 3), 0);
        assert_int_equal(strncmp(r->flag, "--", 2), 0);
        GK_ASSERT_OK(gk_options_format(&o, i, buf, sizeof buf));
    }
    GK_ASSERT_ERR(gk_options_format(&o, gk_option_count(), buf, sizeof buf), -ERANGE);

    /* The same setting by dotted name, environment variable and flag. */
    GK_ASSERT_OK(gk_options_set(&o, "sync.timeout", "250ms", err, sizeof err));
    assert_true(o.sync_timeout == 0.25);
    GK_ASSERT_OK(gk_options_set(&o, "GK_SYNC_TIMEOUT", "2s", err, sizeof err));
    assert_true(o.sync_timeout == 2.0);
    GK_ASSERT_OK(gk_options_set(&o, "--device", "sim:capacity=1GiB", err, sizeof err));
    assert_string_equal(o.device, "sim:capacity=1GiB");
    GK_ASSERT_OK(gk_options_set(&o, "log", "debug", err, sizeof err));
    assert_int_equal(o.log_level, GK_LOG_DEBUG);

    /* Every parser error names the setting as given, the value and the fix. */
    GK_ASSERT_ERR(gk_options_set(&o, "GK_SYNC_TIMEOUT", "fast", err, sizeof err), -EINVAL);
    assert_string_equal(err, "GK_SYNC_TIMEOUT: \"fast\" is not a duration (try 30s or 500ms)");
    assert_true(o.sync_timeout == 2.0);
    GK_ASSERT_ERR(gk_options_set(&o, "--log", "loud", err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "--log: \"loud\" is not a log level (try off, error");
    char longval[400];
    memset(longval, 'x', sizeof longval - 1);
    longval[sizeof longval - 1] = '\0';
    GK_ASSERT_ERR(gk_options_set(&o, "device", longval, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "is too long");
    GK_ASSERT_ERR(gk_options_set(&o, "GK_NOPE", "1", err, sizeof err), -ENOENT);
    GK_ASSERT_CONTAINS(err, "unknown setting \"GK_NOPE\"");
    GK_ASSERT_ERR(gk_options_set(&o, NULL, "1", err, sizeof err), -EINVAL);
}

static void test_options_env(void **state)
{
    (void)state;
    gk_options o;
    char err[256];
    gk_options_default(&o);
    gk_test_setenv("GK_DEVICE", "host");
    gk_test_setenv("GK_SYNC_TIMEOUT", "5s");
    GK_ASSERT_OK(gk_options_from_env(&o, err, sizeof err));
    assert_string_equal(o.device, "host");
    assert_true(o.sync_timeout == 5.0);
    gk_test_setenv("GK_LOG", "chatty");
    GK_ASSERT_ERR(gk_options_from_env(&o, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "GK_LOG: \"chatty\" is not a log level");
    gk_test_setenv("GK_LOG", NULL);
    gk_test_setenv("GK_DEVICE", NULL);
    gk_test_setenv("GK_SYNC_TIMEOUT", NULL);
}

typedef struct captured {
    int count;
    gk_log_level level;
    char component[32];
    char message[256];
} captured;

static void capture(void *user, gk_log_level level, const char *component, const char *message)
{
    captured *c = user;
    c->count++;
    c->level = level;
    snprintf(c->component, sizeof c->component, "%s", component);
    snprintf(c->message, sizeof c->message, "%s", message);
}

static void test_logging(void **state)
{
    (void)state;
    captured c = {0};
    gk_logger lg = {capture, &c, GK_LOG_INFO};
    gk_log(&lg, GK_LOG_DEBUG, "pool", "dropped %d", 1);
    assert_int_equal(c.count, 0);
    gk_log(&lg, GK_LOG_WARN, "pool", "kept %d", 2);
    assert_int_equal(c.count, 1);
    assert_int_equal(c.level, GK_LOG_WARN);
    assert_string_equal(c.component, "pool");
    assert_string_equal(c.message, "kept 2");
    gk_log(NULL, GK_LOG_ERROR, "x", "nothing");
    lg.level = GK_LOG_OFF;
    gk_log(&lg, GK_LOG_ERROR, "pool", "off");
    assert_int_equal(c.count, 1);

    gk_log_level lvl;
    GK_ASSERT_OK(gk_parse_log_level("TRACE", &lvl));
    assert_int_equal(lvl, GK_LOG_TRACE);
    GK_ASSERT_OK(gk_parse_log_level("3", &lvl));
    assert_int_equal(lvl, GK_LOG_INFO);
    GK_ASSERT_ERR(gk_parse_log_level("9", &lvl), -EINVAL);
    assert_string_equal(gk_log_level_name(GK_LOG_ERROR), "error");
    assert_string_equal(gk_log_level_name((gk_log_level)42), "unknown");

    gk_test_setenv("GK_LOG", "debug");
    gk_logger_default(&lg);
    assert_int_equal(lg.level, GK_LOG_WARN); /* the default reads no variable */
    assert_null(lg.fn);
    GK_ASSERT_OK(gk_logger_from_env(&lg));
    assert_int_equal(lg.level, GK_LOG_DEBUG);
    gk_test_setenv("GK_LOG", "bogus");
    gk_logger_default(&lg);
    GK_ASSERT_ERR(gk_logger_from_env(&lg), -EINVAL);
    GK_ASSERT_CONTAINS(gk_last_error(), "GK_LOG: \"bogus\" is not a log level");
    assert_int_equal(lg.level, GK_LOG_WARN);
    gk_test_setenv("GK_LOG", NULL);
}

static void test_version(void **state)
{
    (void)state;
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", GK_VERSION_MAJOR, GK_VERSION_MINOR, GK_VERSION_PATCH);
    assert_string_equal(gk_version_string(), want);
    assert_int_equal(gk_version_hex(), GK_VERSION_HEX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names), cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_other), cmocka_unit_test(test_options_table),
        cmocka_unit_test(test_options_env), cmocka_unit_test(test_logging),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
