/* Automatic metrics: the pool, the loader and the batch finder register their series in the
 * process registry, and with GK_METRICS_SOCKET set one publisher thread per process sends them
 * every 250 ms with their labels, without any call from the program; with it unset no thread
 * starts and nothing is sent. The test binds the socket itself. */
/* gk-labels: unit threads */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gk_test.h"
#include "gpukit/batch.h"
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

static char text[1 << 18];

/* Reads datagrams for up to `seconds` or until `needle` shows up (after every earlier line). */
static void wait_for(sock *s, const char *needle, double seconds)
{
    size_t used = strlen(text);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (strstr(text, needle))
            return;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double left = seconds - ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9);
        if (left <= 0)
            fail_msg("\"%s\" did not arrive within %.1f s; got:\n%s", needle, seconds, text);
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) == 1) {
            ssize_t n = recv(s->fd, text + used, sizeof text - used - 2, 0);
            if (n > 0) {
                used += (size_t)n;
                text[used++] = '\n';
                text[used] = '\0';
            }
        }
    }
}

/* Reads whatever arrives during `seconds`. */
static void pump(sock *s, double seconds)
{
    size_t used = strlen(text);
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    while (poll(&p, 1, (int)(seconds * 1000)) == 1 && used + 2 < sizeof text) {
        ssize_t n = recv(s->fd, text + used, sizeof text - used - 2, 0);
        if (n <= 0)
            break;
        used += (size_t)n;
        text[used++] = '\n';
        text[used] = '\0';
    }
}

/* The number of threads of this process. */
static int threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static sock s;

/* The pool's figures arrive on their own, labelled with the device and the pool's name, and its
 * final figures are sent after it is destroyed. */
static void test_pool_publishes(void **state)
{
    (void)state;
    gk_device *dev;
    GK_ASSERT_OK(gk_device_open("sim:capacity=64MiB", &dev));
    gk_pool_config c;
    gk_pool_config_default(&c);
    c.name = "weights";
    gk_pool *pool;
    GK_ASSERT_OK(gk_pool_create(dev, &c, &pool));
    void *a, *b;
    GK_ASSERT_OK(gk_pool_malloc(pool, 3 << 20, NULL, &a));
    GK_ASSERT_OK(gk_pool_malloc(pool, 1000, NULL, &b));
    GK_ASSERT_OK(gk_pool_free(pool, b));
    gk_pool_stats st;
    GK_ASSERT_OK(gk_pool_get_stats(pool, &st));
    char want[256];
    snprintf(want, sizeof want, "gpukit_alloc_in_use_bytes:%lld|g|#device:sim,pool:weights\n",
             (long long)st.allocated_bytes[GK_POOL_ALL].current);
    wait_for(&s, want, 5);
    snprintf(want, sizeof want, "gpukit_alloc_reserved_bytes:%lld|g|#device:sim,pool:weights\n",
             (long long)st.reserved_bytes[GK_POOL_ALL].current);
    wait_for(&s, want, 5);
    wait_for(&s, "gpukit_alloc_ooms_total:0|c|#device:sim,pool:weights\n", 5);
    /* Destroyed with block a live: the last reading (a's bytes in use) is what stays. */
    gk_pool_destroy(pool);
    text[0] = '\0';
    snprintf(want, sizeof want, "gpukit_alloc_in_use_bytes:%d|g|#device:sim,pool:weights\n",
             3 << 20);
    wait_for(&s, want, 5);
    gk_device_close(dev);
}

static void test_loader_publishes(void **state)
{
    (void)state;
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
    text[0] = '\0';
    /* Counters arrive as increments that add up to the totals; the labels name the loader. */
    wait_for(&s, "gpukit_loader_batches_total:", 5);
    wait_for(&s, "|c|#device:host,loader:train_set", 5);
    gk_loader_destroy(ld);
    double batches = 0;
    for (int i = 0; i < 40 && batches < 37; i++) {
        pump(&s, 0.1);
        batches = value_of(text, "gpukit_loader_batches_total", 1);
    }
    double items = value_of(text, "gpukit_loader_items_total", 1);
    assert_true(batches == 37);
    assert_true(items == 37 * B);
    gk_dataset_destroy(ds);
    free(data);
}

/* A memory model for the finder: peak(b) = 100 MiB + 10 MiB * b, OOM above the capacity. */
static int linear_trial(void *user, long b, uint64_t *peak)
{
    (void)user;
    uint64_t p = (100ull << 20) + (uint64_t)b * (10ull << 20);
    if (p > (1ull << 30))
        return GK_EDEVOOM;
    *peak = p;
    return 0;
}

static void test_batch_finder_publishes(void **state)
{
    (void)state;
    gk_batch_config c;
    gk_batch_config_default(&c);
    c.budget = 1ull << 30;
    c.margin = 0.02;
    gk_batch_result r;
    GK_ASSERT_OK(gk_batch_find(&c, linear_trial, NULL, &r));
    assert_true(r.batch > 8);
    char want[128];
    text[0] = '\0';
    snprintf(want, sizeof want, "gpukit_batch_size:%ld|g|#device:unknown\n", r.batch);
    wait_for(&s, want, 5);
    wait_for(&s, "gpukit_batch_fixed_bytes:104857600|g", 5);
    wait_for(&s, "gpukit_batch_per_sample_bytes:10485760|g", 5);
    wait_for(&s, "gpukit_batch_budget_bytes:1073741824|g", 5);
    wait_for(&s, "gpukit_batch_margin_ratio:0.02|g", 5);
}

/* The publisher joins its lines into datagrams of at most 8 KiB, so a tick costs the receiver a
 * few wake-ups rather than one per series, and every series still arrives whole. */
static void test_publisher_packs_lines(void **state)
{
    (void)state;
    enum { N = 300 };
    gk_metrics *reg = gk_metrics_default();
    const char *labels[] = {"shard", "a", NULL};
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "pack_gauge_%d", i);
        gk_metric *g;
        GK_ASSERT_OK(gk_metrics_gauge(reg, name, NULL, labels, &g));
        gk_gauge_set(g, i);
    }
    (void)drain(&s, text, sizeof text);
    assert_int_equal(gk_metrics_publish_now(), 0);
    static char got[1 << 18];
    size_t used = 1, datagrams = 0, lines = 0, largest = 0;
    got[0] = '\n'; /* every line then starts after a newline */
    struct pollfd p = {.fd = s.fd, .events = POLLIN};
    while (poll(&p, 1, 300) == 1 && used + 2 < sizeof got) {
        ssize_t n = recv(s.fd, got + used, sizeof got - used - 2, 0);
        assert_true(n > 0);
        datagrams++;
        largest = (size_t)n > largest ? (size_t)n : largest;
        for (ssize_t i = 0; i < n; i++)
            lines += got[used + (size_t)i] == '\n';
        lines++;
        used += (size_t)n;
        got[used++] = '\n';
    }
    got[used] = '\0';
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "\npack_gauge_%d:%d|g|#shard:a\n", i, i);
        if (!strstr(got, want))
            fail_msg("%s did not arrive", want + 1);
    }
    assert_true(largest <= 8192);
    assert_true(lines >= N);
    if (datagrams * 20 > lines)
        fail_msg("%zu lines came in %zu datagrams: not joined", lines, datagrams);
}

/* Without GK_METRICS_SOCKET nothing starts: a child process (fresh registry) creates a pool and
 * a loader and still has one thread, and nothing reaches the socket. */
static const char *self_path; /* this program, for the child */

static void test_silent_without_socket(void **state)
{
    (void)state;
    sock quiet;
    snprintf(quiet.path, sizeof quiet.path, "/tmp/gk-autometrics-quiet-%ld.sock", (long)getpid());
    unlink(quiet.path);
    quiet.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(quiet.fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", quiet.path);
    assert_int_equal(bind(quiet.fd, (struct sockaddr *)&a, sizeof a), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child is a fresh process image only in its registry's state if the parent has not
         * created the registry: run it through exec to be sure (argv[0], not /proc/self/exe,
         * which is valgrind's own program under memcheck). */
        execl(self_path, "test_autometrics", "--quiet-child", (char *)NULL);
        _exit(3);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(drain(&quiet, text, sizeof text), 0);
    sock_close(&quiet);
}

/* The child of test_silent_without_socket: exits 0 when no thread was started. */
static int quiet_child(void)
{
    unsetenv(GK_METRICS_SOCKET_ENV);
    gk_device *dev;
    gk_pool *pool;
    if (gk_device_open("host", &dev) || gk_pool_create(dev, NULL, &pool))
        return 1;
    void *p;
    if (gk_pool_malloc(pool, 4096, NULL, &p) || gk_pool_free(pool, p))
        return 1;
    if (gk_metrics_series_count(gk_metrics_default()) == 0) /* the series exist ... */
        return 4;
    int n = threads(); /* ... but nothing publishes them */
    gk_pool_destroy(pool);
    gk_device_close(dev);
    return n == 1 ? 0 : 2;
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    if (argc > 1 && strcmp(argv[1], "--quiet-child") == 0)
        return quiet_child();
    /* Set before the first series is registered: the publisher starts with it. */
    sock_open(&s);
    if (setenv(GK_METRICS_SOCKET_ENV, s.path, 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_silent_without_socket), cmocka_unit_test(test_pool_publishes),
        cmocka_unit_test(test_loader_publishes),      cmocka_unit_test(test_batch_finder_publishes),
        cmocka_unit_test(test_publisher_packs_lines),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sock_close(&s);
    return rc;
}
