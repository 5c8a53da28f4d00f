/* Tests of the exporter: /metrics with content negotiation, /healthz, /, errors, listen-address
 * parsing and bind failures, over real loopback sockets; and the atomic textfile. */
/* gk-labels: unit threads */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "gk_test.h"

/* Sends one request to 127.0.0.1:port and returns the whole response (malloc'd). */
static char *http(int port, const char *method, const char *path, const char *accept)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s%sConnection: close\r\n\r\n", method,
                     path, accept ? "Accept: " : "", accept ? accept : "", accept ? "\r\n" : "");
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static gk_metrics *sample_registry(void)
{
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_metric *c = NULL;
    GK_ASSERT_OK(gk_metrics_counter(reg, "gpukit_test_requests_total", "Requests.", NULL, &c));
    gk_counter_add(c, 3);
    return reg;
}

static void test_serve(void **state)
{
    (void)state;
    gk_metrics *reg = sample_registry();
    gk_exporter_config cfg;
    gk_exporter_config_default(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:9430");
    cfg.listen = "127.0.0.1:0";
    cfg.metrics = reg;
    gk_exporter *e = NULL;
    char err[256];
    int rc = gk_exporter_start(&cfg, &e, err, sizeof err);
    if (rc == GK_EUNAVAIL) { /* built with GK_HTTP=OFF */
        GK_ASSERT_CONTAINS(err, "without libmicrohttpd");
        gk_metrics_destroy(reg);
        skip();
    }
    GK_ASSERT_OK(rc);
    int port = gk_exporter_port(e);
    assert_true(port > 0);

    char *r = http(port, "GET", "/metrics", NULL);
    GK_ASSERT_CONTAINS(r, "HTTP/1.1 200");
    GK_ASSERT_CONTAINS(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
    GK_ASSERT_CONTAINS(r, "\r\n\r\n# HELP gpukit_test_requests_total Requests.\n");
    GK_ASSERT_CONTAINS(r, "gpukit_test_requests_total 3\n");
    assert_null(strstr(r, "# EOF"));
    free(r);
    r = http(port, "GET", "/metrics",
             "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5");
    GK_ASSERT_CONTAINS(r, "Content-Type: application/openmetrics-text; version=1.0.0");
    GK_ASSERT_CONTAINS(r, "# TYPE gpukit_test_requests counter\n");
    GK_ASSERT_CONTAINS(r, "# EOF\n");
    free(r);
    r = http(port, "HEAD", "/metrics", NULL);
    GK_ASSERT_CONTAINS(r, "HTTP/1.1 200");
    assert_null(strstr(r, "gpukit_test_requests_total 3"));
    free(r);
    r = http(port, "GET", "/healthz", NULL);
    GK_ASSERT_CONTAINS(r, "HTTP/1.1 200");
    GK_ASSERT_CONTAINS(r, "\r\n\r\nok\n");
    free(r);
    r = http(port, "GET", "/", NULL);
    GK_ASSERT_CONTAINS(r, "text/html");
    GK_ASSERT_CONTAINS(r, "href=\"/metrics\"");
    free(r);
    r = http(port, "GET", "/nope", NULL);
    GK_ASSERT_CONTAINS(r, "HTTP/1.1 404");
    free(r);
    r = http(port, "DELETE", "/metrics", NULL);
    GK_ASSERT_CONTAINS(r, "HTTP/1.1 405");
    free(r);
    assert_int_equal(gk_exporter_scrapes(e), 3);

    /* The same port again: a clear error. */
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    cfg.listen = listen;
    gk_exporter *e2 = NULL;
    GK_ASSERT_ERR(gk_exporter_start(&cfg, &e2, err, sizeof err), -EADDRINUSE);
    GK_ASSERT_CONTAINS(err, "cannot listen on 127.0.0.1:");
    assert_null(e2);
    gk_exporter_destroy(e);
    gk_exporter_destroy(NULL);
    gk_metrics_destroy(reg);
}

static void test_health_with_monitor(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    mc.metrics = reg;
    mc.gpu = GK_MONITOR_GPU_OFF;
    mc.logger.level = GK_LOG_OFF;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&mc, &m));
    GK_ASSERT_OK(gk_monitor_tick(m));
    gk_exporter_config cfg;
    gk_exporter_config_default(&cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.metrics = reg;
    cfg.monitor = m;
    gk_exporter *e = NULL;
    int rc = gk_exporter_start(&cfg, &e, NULL, 0);
    if (rc == GK_EUNAVAIL) { /* built with GK_HTTP=OFF */
        gk_monitor_destroy(m);
        gk_metrics_destroy(reg);
        skip();
    }
    GK_ASSERT_OK(rc);
    char *r = http(gk_exporter_port(e), "GET", "/healthz", NULL);
    GK_ASSERT_CONTAINS(r, "HTTP/1.1 200");
    free(r);
    r = http(gk_exporter_port(e), "GET", "/metrics", NULL);
    GK_ASSERT_CONTAINS(r, "gpukit_memory_total_bytes ");
    free(r);
    gk_exporter_destroy(e);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
}

static void test_listen_parsing(void **state)
{
    (void)state;
    char host[64], err[200];
    int port = -1;
    GK_ASSERT_OK(
        gk_exporter_parse_listen("127.0.0.1:9430", host, sizeof host, &port, err, sizeof err));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9430);
    GK_ASSERT_OK(gk_exporter_parse_listen("[::1]:80", host, sizeof host, &port, err, sizeof err));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 80);
    static const char *const bad[] = {"9430",          "127.0.0.1:", ":9430", "127.0.0.1:99999",
                                      "127.0.0.1:12x", "[::1]9430",  "[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        GK_ASSERT_ERR(gk_exporter_parse_listen(bad[i], host, sizeof host, &port, err, sizeof err),
                      -EINVAL);
        GK_ASSERT_CONTAINS(err, "is not HOST:PORT");
    }
    gk_exporter_config cfg;
    gk_exporter_config_default(&cfg);
    cfg.listen = "example.com:9430";
    gk_exporter *e = NULL;
    int rc = gk_exporter_start(&cfg, &e, err, sizeof err);
    if (rc != GK_EUNAVAIL) { /* GK_EUNAVAIL: built without libmicrohttpd */
        GK_ASSERT_ERR(rc, -EINVAL);
        GK_ASSERT_CONTAINS(err, "not a numeric IP address");
    }
}

static void test_textfile(void **state)
{
    (void)state;
    gk_metrics *reg = sample_registry();
    const char *dir = gk_test_tmpdir("textfile");
    char path[1200];
    snprintf(path, sizeof path, "%s/gpukit.prom", dir);
    GK_ASSERT_OK(gk_metrics_write_textfile(reg, path));
    GK_ASSERT_OK(gk_metrics_write_textfile(reg, path)); /* replaces */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    char *want = NULL;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &want, &len));
    assert_string_equal(buf, want);
    free(want);
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0); /* no temporary left behind */
    snprintf(path, sizeof path, "%s/missing/gpukit.prom", dir);
    GK_ASSERT_ERR(gk_metrics_write_textfile(reg, path), -ENOENT);
    GK_ASSERT_ERR(gk_metrics_write_textfile(reg, ""), -EINVAL);
    gk_metrics_destroy(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve),
        cmocka_unit_test(test_health_with_monitor),
        cmocka_unit_test(test_listen_parsing),
        cmocka_unit_test(test_textfile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
