/* Automatic metrics: with GK_METRICS_SOCKET set, a pool and a loader publish their figures to the
 * socket without any call from the program (periodically and once more when destroyed); with it
 * unset they start nothing and send nothing. The test binds the socket itself. */
/* gk-labels: unit threads */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gk_test.h"
#include "gpukit/loader.h"
#include "gpukit/pool.h"
#include "gpukit/run.h"

typedef struct sock {
    int fd;
    char path[108];
} sock;

static void sock_open(sock *s)
{
    snprintf(s->path, sizeof s->path, "/tmp/gk-autometrics-%ld.sock", (long)getpid());
    unlink(s->path);
    s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", s->path);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
}

static void sock_close(sock *s)
{
    close(s->fd);
    unlink(s->path);
}

/* Reads every datagram already queued into buf (lines joined by '\n'). */
static size_t drain(sock *s, char *buf, size_t cap)
{
    size_t used = 0;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    while (used + 1 < cap && poll(&p, 1, 0) == 1) {
        ssize_t n = recv(s->fd, buf + used, cap - used - 1, 0);
        if (n <= 0)
            break;
        used += (size_t)n;
        buf[used++] = '\n';
    }
    buf[used < cap ? used : cap - 1] = '\0';
    return used;
}

/* The last value sent for `name` (gauges) or the sum of its values (counters); -1 when absent. */
static double value_of(const char *text, const char *name, int sum)
{
    double v = -1;
    size_t nl = strlen(name);
    for (const char *p = text; (p = strstr(p, name)) != NULL; p += nl) {
        if ((p != text && p[-1] != '\n') || p[nl] != ':')
            continue;
        double x = strtod(p + nl + 1, NULL);
        v = sum ? (v < 0 ? 0 : v) + x : x;
    }
    return v;
}

static char text[1 << 16];

static void test_pool_publishes(void **state)
{
    (void)state;
    sock s;
    sock_open(&s);
    assert_int_equal(setenv(GK_METRICS_SOCKET_ENV, s.path, 1), 0);
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(pool, 3 << 20, NULL, &a));
    GK_ASSERT_OK(gk_pool_malloc(pool, 1000, NULL, &b));
    GK_ASSERT_OK(gk_pool_free(pool, b));
    gk_pool_stats st;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &st));
    /* The final publish happens in destroy, with block a still live. */
    gk_pool_destroy(pool);
    unsetenv(GK_METRICS_SOCKET_ENV);
    drain(&s, text, sizeof text);
    assert_true(value_of(text, "gpukit_alloc_in_use_bytes", 0) ==
                (double)st.allocated_bytes[GK_POOL_ALL].current);
    assert_true(value_of(text, "gpukit_alloc_reserved_bytes", 0) ==
                (double)st.reserved_bytes[GK_POOL_ALL].current);
    assert_true(value_of(text, "gpukit_alloc_ooms_total", 0) == 0);
    gk_device_close(dev);
    sock_close(&s);
}

static void test_pool_silent_without_socket(void **state)
{
    (void)state;
    sock s;
    sock_open(&s);
    unsetenv(GK_METRICS_SOCKET_ENV);
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("host", &dev));
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, NULL, &pool));
    void *a;
    GK_ASSERT_OK(gk_pool_malloc(pool, 4096, NULL, &a));
    GK_ASSERT_OK(gk_pool_free(pool, a));
    gk_pool_destroy(pool);
    assert_int_equal(drain(&s, text, sizeof text), 0);
    gk_device_close(dev);
    sock_close(&s);
}

static void test_loader_publishes(void **state)
{
    (void)state;
    sock s;
    sock_open(&s);
    assert_int_equal(setenv(GK_METRICS_SOCKET_ENV, s.path, 1), 0);
    enum { N = 1000, B = 10 };
    uint32_t *data = malloc(N * sizeof *data);
    assert_non_null(data);
    for (uint32_t i = 0; i < N; i++)
        data[i] = i;
    gk_dataset *ds;
    GK_ASSERT_OK(gk_dataset_memory(data, sizeof *data, N, &ds));
    gk_loader_config cfg;
    gk_loader_config_default(&cfg);
    cfg.batch_size = B;
    cfg.workers = 2;
    cfg.name = "train set";
    gk_loader *ld;
    GK_ASSERT_OK(gk_loader_create(&cfg, ds, &ld));
    gk_batch b;
    for (int i = 0; i < 37; i++)
        GK_ASSERT_OK(gk_loader_next(ld, NULL, -1, &b));
    gk_loader_stats st;
    GK_ASSERT_OK(gk_loader_get_stats(ld, &st));
    gk_loader_destroy(ld);
    unsetenv(GK_METRICS_SOCKET_ENV);
    drain(&s, text, sizeof text);
    /* Counters arrive as increments; their sum is the total. The tag names the loader. */
    assert_true(value_of(text, "gpukit_loader_batches_total", 1) == 37);
    assert_true(value_of(text, "gpukit_loader_items_total", 1) == 37 * B);
    assert_non_null(strstr(text, "gpukit_loader_batches_total:"));
    assert_non_null(strstr(text, "|c|#loader:train_set"));
    double wait = value_of(text, "gpukit_loader_wait_seconds_total", 1);
    assert_true(wait >= 0 && fabs(wait - (double)st.wait_ns / 1e9) < 1e-6);
    assert_true(value_of(text, "gpukit_loader_ring_ready", 0) >= 0);
    gk_dataset_destroy(ds);
    free(data);
    sock_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_publishes),
        cmocka_unit_test(test_pool_silent_without_socket),
        cmocka_unit_test(test_loader_publishes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
