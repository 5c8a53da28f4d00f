/* StatsD: the line parser's rules (types, rates, tags, refusals), datagram splitting and
 * counting, and the sender delivering to a real Unix datagram socket (or doing nothing when
 * GK_METRICS_SOCKET is unset). */
/* gk-labels: unit */
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gk_test.h"
#include "run/run_int.h"

static int parse(const char *line, gk__statsd_msg *m)
{
    return gk__statsd_parse_line(line, strlen(line), m);
}

static void test_parse_good(void **state)
{
    (void)state;
    gk__statsd_msg m;
    GK_ASSERT_OK(parse("step_time:12.5|ms", &m));
    assert_int_equal(m.name_len, 9);
    assert_memory_equal(m.name, "step_time", 9);
    assert_true(m.value == 12.5);
    assert_string_equal(m.kind, "ms");
    assert_true(m.rate == 1);
    assert_null(m.tags);
    GK_ASSERT_OK(parse("gpukit.loader/queue-depth:3|g", &m));
    assert_string_equal(m.kind, "g");
    assert_false(m.relative);
    GK_ASSERT_OK(parse("temp:-4|g", &m));
    assert_true(m.relative && m.value == -4);
    GK_ASSERT_OK(parse("temp:+2.5e1|g", &m));
    assert_true(m.relative && m.value == 25);
    GK_ASSERT_OK(parse("reqs:1|c|@0.25", &m));
    assert_true(m.rate == 0.25);
    GK_ASSERT_OK(parse("lat:3|h|#env:prod,shard:2|@0.5", &m));
    assert_string_equal(m.kind, "h");
    assert_int_equal(m.tags_len, 16);
    assert_memory_equal(m.tags, "env:prod,shard:2", 16);
    assert_true(m.rate == 0.5);
    GK_ASSERT_OK(parse("x:-1|c|#solo", &m));
    assert_true(m.value == -1 && !m.relative);
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "noval",
        "x:1",
        "x:|g",
        ":1|g",
        "x:1|q",
        "x:1|msx",
        "x:abc|g",
        "x:1e999|g",
        "x:nan|g",
        "x:inf|g",
        "x:0x10|g",
        "x:1|g|",
        "x:1|g|@0",
        "x:1|g|@1.5",
        "x:1|g|@",
        "x:1|g|#",
        "x:1|g|#a,,b",
        "x:1|g|#a b",
        "x:1|g|junk",
        "x y:1|g",
        "x{a}:1|g",
        "x:1 |g",
        "x:-3|ms",
        "x:1|g|@0.5|@0.5",
        "x:1|g|#a|#b",
        "x\":1|g",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gk__statsd_msg m;
        if (parse(bad[i], &m) != GK_ESYNTAX)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    char longname[GK__STATSD_MAX_NAME + 10];
    memset(longname, 'a', GK__STATSD_MAX_NAME + 1);
    strcpy(longname + GK__STATSD_MAX_NAME + 1, ":1|g");
    gk__statsd_msg m;
    GK_ASSERT_ERR(parse(longname, &m), GK_ESYNTAX);
    GK_ASSERT_ERR(gk__statsd_parse_line(NULL, 0, &m), GK_ESYNTAX);
}

typedef struct seen {
    int n;
    double sum;
} seen;

static void on_msg(void *user, const gk__statsd_msg *m)
{
    seen *s = user;
    s->n++;
    s->sum += m->value;
}

static void test_datagram(void **state)
{
    (void)state;
    const char dg[] = "a:1|c\nb:2|g\r\n\n\nbad\nc:3|ms\nx:|g\nd:4|h";
    uint64_t good = 0, bad = 0;
    seen s = {0};
    gk__statsd_parse_datagram(dg, sizeof dg - 1, on_msg, &s, &good, &bad);
    assert_int_equal(good, 4);
    assert_int_equal(bad, 2);
    assert_int_equal(s.n, 4);
    assert_true(s.sum == 10);
    /* NUL bytes inside a datagram make that line malformed, not a crash */
    const char nul[] = "a:1|c\nb\0:2|g\nc:3|c";
    good = bad = 0;
    gk__statsd_parse_datagram(nul, sizeof nul - 1, NULL, NULL, &good, &bad);
    assert_int_equal(good, 2);
    assert_int_equal(bad, 1);
}

static void test_sender(void **state)
{
    (void)state;
    const char *dir = gk_test_tmpdir("statsd");
    char path[512];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(path, sizeof path, "/tmp/gk-statsd-test-%ld.sock", (long)getpid());
    }
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    struct timeval tv = {5, 0}; /* every receive below has a timeout */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    gk_statsd *c = NULL;
    GK_ASSERT_OK(gk_statsd_open(path, &c));
    GK_ASSERT_OK(gk_statsd_client_send(c, "step_time", 12.5, "ms", NULL));
    GK_ASSERT_OK(gk_statsd_client_send(c, "loss", -0.25, "g", "phase:train"));
    GK_ASSERT_ERR(gk_statsd_client_send(c, "bad name", 1, "g", NULL), -EINVAL);
    GK_ASSERT_ERR(gk_statsd_client_send(c, "x", 1, "q", NULL), -EINVAL);
    GK_ASSERT_ERR(gk_statsd_client_send(c, "x", 1, "g", "a b"), -EINVAL);
    GK_ASSERT_ERR(gk_statsd_client_send(c, "x", -1, "ms", NULL), -EINVAL);
    GK_ASSERT_ERR(gk_statsd_client_send(c, "x", 0.0 / 0.0, "g", NULL), -EINVAL);
    char buf[1024];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "step_time:12.5|ms");
    n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "loss:0|g|#phase:train\nloss:-0.25|g|#phase:train");
    /* what was sent parses back to the same values */
    uint64_t good = 0, bad = 0;
    seen s = {0};
    gk__statsd_parse_datagram(buf, (size_t)n, on_msg, &s, &good, &bad);
    assert_int_equal(good, 2);
    assert_int_equal(bad, 0);
    assert_int_equal(gk_statsd_dropped(c), 0);
    gk_statsd_close(c);

    gk_test_setenv(GK_METRICS_SOCKET_ENV, path);
    GK_ASSERT_OK(gk_statsd_send("batches", 1, "c"));
    n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "batches:1|c");

    /* nobody listening: an error, never a block */
    close(fd);
    unlink(path);
    assert_true(gk_statsd_send("batches", 1, "c") < 0);

    /* unset: inactive client, sends succeed and do nothing */
    gk_test_setenv(GK_METRICS_SOCKET_ENV, NULL);
    GK_ASSERT_OK(gk_statsd_send("batches", 1, "c"));
    GK_ASSERT_ERR(gk_statsd_send("bad name", 1, "c"), -EINVAL);
    GK_ASSERT_OK(gk_statsd_open(NULL, &c));
    GK_ASSERT_OK(gk_statsd_client_send(c, "x", 1, "g", NULL));
    gk_statsd_close(c);
    char longpath[300];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    GK_ASSERT_ERR(gk_statsd_open(longpath, &c), -EINVAL);
    gk_statsd_close(NULL);
}

/* A receiver bound at `path` (replacing a socket file left there), with a receive timeout. */
static int bind_receiver(const char *path)
{
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void assert_received(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

/* The client keeps its socket connected to the receiver; when the receiver is restarted at the
 * same path (gpukit serve restarted on a node), the next send reaches the new one. */
static void test_sender_follows_restarted_receiver(void **state)
{
    (void)state;
    char path[108];
    snprintf(path, sizeof path, "/tmp/gk-statsd-restart-%ld.sock", (long)getpid());
    int a = bind_receiver(path);
    gk_statsd *c = NULL;
    GK_ASSERT_OK(gk_statsd_open(path, &c));
    GK_ASSERT_OK(gk_statsd_client_send(c, "first", 1, "c", NULL));
    assert_received(a, "first:1|c");
    /* restarted before the next send */
    close(a);
    int b = bind_receiver(path);
    GK_ASSERT_OK(gk_statsd_client_send(c, "second", 2, "c", NULL));
    assert_received(b, "second:2|c");
    /* gone for a while: sends fail at once (counted), then reach the next receiver */
    close(b);
    unlink(path);
    assert_true(gk_statsd_client_send(c, "lost", 3, "c", NULL) < 0);
    assert_true(gk_statsd_client_send(c, "lost", 4, "c", NULL) < 0);
    assert_int_equal(gk_statsd_dropped(c), 2);
    int d = bind_receiver(path);
    GK_ASSERT_OK(gk_statsd_client_send(c, "third", 5, "c", NULL));
    assert_received(d, "third:5|c");
    gk_statsd_close(c);
    close(d);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_datagram),
        cmocka_unit_test(test_sender),
        cmocka_unit_test(test_sender_follows_restarted_receiver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
