/* Tests of the exporter's web configuration file (the Prometheus exporter convention): what is
 * read, what is refused by name (never ignored), the line numbers in messages, relative paths, and
 * the start of an exporter that requires credentials. */
/* gk-labels: unit */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "export/export_int.h"
#include "gk_test.h"

/* A valid bcrypt hash (cost 4) of "secret". */
#define HASH "$2y$04$Rn3hcrOTZ7GKE84P9V.2wOakz5ZvPj7d.U.uaJ/t/tHCDUBEkGE2m"

static int parse(const char *text, gk__web_config *c, char *err, size_t errlen)
{
    return gk__web_config_parse(text, strlen(text), "/etc/gk", c, err, errlen);
}

static void test_accepted(void **state)
{
    (void)state;
    char err[512];
    gk__web_config c;
    const char *text = "# the exporter's web config\n"
                       "---\n"
                       "tls_server_config:\n"
                       "  cert_file: server.crt   # relative to the file\n"
                       "  key_file: '/abs/server.key'\n"
                       "  min_version: TLS13\n"
                       "  client_auth_type: NoClientCert\n"
                       "\n"
                       "basic_auth_users:\n"
                       "    prometheus: " HASH "\n"
                       "    \"grafana user\": '" HASH "'\r\n";
    GK_ASSERT_OK(parse(text, &c, err, sizeof err));
    assert_string_equal(c.cert_file, "/etc/gk/server.crt");
    assert_string_equal(c.key_file, "/abs/server.key");
    assert_int_equal(c.min_tls13, 1);
    assert_int_equal(c.nusers, 2);
    assert_string_equal(c.users[0].name, "prometheus");
    assert_string_equal(c.users[1].name, "grafana user");
    assert_string_equal(c.users[1].hash, HASH);
    gk__web_config_free(&c);
    /* users only: no TLS */
    GK_ASSERT_OK(parse("basic_auth_users:\n  a: " HASH "\n", &c, err, sizeof err));
    assert_null(c.cert_file);
    assert_int_equal(c.nusers, 1);
    gk__web_config_free(&c);
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "configures nothing"},
        {"tls_server_config:\n  cert_file: a.crt\n", "needs both cert_file and key_file"},
        {"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: "
         "RequireAndVerifyClientCert\n",
         "line 4: client_auth_type RequireAndVerifyClientCert is not supported"},
        {"tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: x\n",
         "line 4: tls_server_config.cipher_suites is not supported"},
        {"tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
         "min_version \"TLS10\" is not TLS12 or TLS13"},
        {"tls_server_config:\n  cert_file: a\n  cert_file: b\n",
         "line 3: cert_file is given twice"},
        {"http_server_config:\n  http2: false\n", "line 1: http_server_config is not supported"},
        {"basic_auth_users:\n  bob: plaintext\n",
         "line 2: the password of \"bob\" is not a bcrypt"},
        {"basic_auth_users:\n  bob: $1$abc$defghijklmnop\n", "is not a bcrypt hash"},
        {"basic_auth_users:\n  bob: " HASH "\n  bob: " HASH "\n",
         "line 3: user \"bob\" is listed twice"},
        {"basic_auth_users: {bob: x}\n", "line 1: flow mappings and lists"},
        {"tls_server_config: yes\n", "takes an indented block"},
        {"basic_auth_users:\n  - bob\n", "line 2: expected \"key: value\""},
        {"basic_auth_users:\n  bob: 'unclosed\n", "line 2: the value of \"bob\" is malformed"},
        {"basic_auth_users:\n\tbob: " HASH "\n", "line 2: indent with spaces, not tabs"},
        {"basic_auth_users:\n  bob: " HASH "\n    eve: " HASH "\n", "line 3: indented by 4"},
        {"  bob: x\n", "line 1: indented, but under no section"},
        {"tls_server_config:\n  cert_file: a\n  key_file: b\nweb_users:\n", "line 4: unknown key"},
        {"tls_server_config:\n  cert_file: a\x1b[31m\n", "line 2: a control character"},
        {"tls_server_config:\n  pem: a\n  key_file: b\n", "unknown key \"pem\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        gk__web_config c;
        int rc = parse(cases[i].text, &c, err, sizeof err);
        if (rc != GK_ESYNTAX)
            fail_msg("case %zu: returned %d, expected GK_ESYNTAX", i, rc);
        GK_ASSERT_CONTAINS(err, cases[i].want);
        assert_null(c.users);
        assert_null(c.cert_file);
    }
}

static void test_hash_check(void **state)
{
    (void)state;
    assert_true(gk__bcrypt_hash_ok(HASH));
    assert_true(gk__bcrypt_hash_ok("$2b$31$"
                                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"));
    assert_false(
        gk__bcrypt_hash_ok("$2y$03$Rn3hcrOTZ7GKE84P9V.2wOYzLqXSl5VJfyYq8vHBdrnd6oXjT/aPi"));
    assert_false(
        gk__bcrypt_hash_ok("$2x$10$Rn3hcrOTZ7GKE84P9V.2wOYzLqXSl5VJfyYq8vHBdrnd6oXjT/aPi"));
    assert_false(gk__bcrypt_hash_ok("$2y$10$Rn3hcrOTZ7GKE84P9V.2wOYzLqXSl5VJfyYq8vHBdrnd6oXjT/aP"));
    assert_false(
        gk__bcrypt_hash_ok("$2y$10$Rn3hcrOTZ7GKE84P9V.2wOYzLqXSl5VJfyYq8vHBdrnd6oXjT/a!i"));
    assert_false(gk__bcrypt_hash_ok(""));
}

/* Sends a GET of /metrics with an Authorization header (or none); returns the status code. */
static int get_status(int port, const char *auth_b64)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[512], buf[256] = "";
    int n = snprintf(
        req, sizeof req, "GET /metrics HTTP/1.1\r\nHost: t\r\n%s%s%sConnection: close\r\n\r\n",
        auth_b64 ? "Authorization: Basic " : "", auth_b64 ? auth_b64 : "", auth_b64 ? "\r\n" : "");
    assert_int_equal(send(fd, req, (size_t)n, 0), n);
    ssize_t got = recv(fd, buf, sizeof buf - 1, MSG_WAITALL);
    close(fd);
    int status = 0;
    if (got > 12)
        sscanf(buf, "HTTP/1.1 %d", &status);
    return status;
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* The defaults, on `listen`, rendering `reg`. */
static void config(gk_exporter_config *cfg, gk_metrics *reg, const char *listen)
{
    gk_exporter_config_default(cfg);
    cfg->listen = listen;
    cfg->metrics = reg;
}

static void test_exporter_with_users(void **state)
{
    (void)state;
    const char *dir = gk_test_tmpdir("webconfig");
    char path[4200];
    snprintf(path, sizeof path, "%s/web.yml", dir);
    put_file(path, "basic_auth_users:\n  prom: " HASH "\n");
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_exporter_config cfg;
    config(&cfg, reg, "127.0.0.1:0");
    cfg.web_config = path;
    gk_exporter *e = NULL;
    char err[512];
    GK_ASSERT_OK(gk_exporter_start(&cfg, &e, err, sizeof err));
    int port = gk_exporter_port(e);
    assert_int_equal(get_status(port, NULL), 401);
    assert_int_equal(get_status(port, "cHJvbTp3cm9uZw=="), 401); /* prom:wrong */
    assert_int_equal(get_status(port, "cHJvbTpzZWNyZXQ="), 200); /* prom:secret */
    assert_int_equal(get_status(port, "cHJvbTpzZWNyZXQ="), 200); /* from the cache */
    assert_int_equal(get_status(port, "ZXZlOnNlY3JldA=="), 401); /* eve:secret */
    gk_exporter_stats st;
    gk_exporter_get_stats(e, &st);
    assert_int_equal(st.auth, 1);
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.insecure, 0);
    gk_exporter_destroy(e);
    /* a file that does not parse stops the start, naming the file and the line */
    put_file(path, "basic_auth_users:\n  prom: hunter2\n");
    GK_ASSERT_ERR(gk_exporter_start(&cfg, &e, err, sizeof err), GK_ESYNTAX);
    GK_ASSERT_CONTAINS(err, path);
    GK_ASSERT_CONTAINS(err, "line 2");
    /* PEM files that are not there or not PEM */
    put_file(path, "tls_server_config:\n  cert_file: web.yml\n  key_file: none.key\n");
    GK_ASSERT_ERR(gk_exporter_start(&cfg, &e, err, sizeof err), -EINVAL);
    GK_ASSERT_CONTAINS(err, "is not a PEM file");
    gk_metrics_destroy(reg);
}

/* Off loopback without credentials: gk_exporter_insecure and its gauge say so from the start. */
static void test_insecure(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_exporter_config cfg;
    config(&cfg, reg, "0.0.0.0:0");
    gk_exporter *e = NULL;
    char err[512];
    if (gk_exporter_start(&cfg, &e, err, sizeof err) != 0)
        skip(); /* no wildcard bind in this sandbox */
    assert_int_equal(gk_exporter_insecure(e), 1);
    char *text = NULL;
    size_t len = 0;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    GK_ASSERT_CONTAINS(text, "\ngpukit_exporter_insecure 1\n");
    free(text);
    gk_exporter_destroy(e);
    cfg.listen = "127.0.0.1:0";
    GK_ASSERT_OK(gk_exporter_start(&cfg, &e, err, sizeof err));
    assert_int_equal(gk_exporter_insecure(e), 0);
    gk_exporter_destroy(e);
    gk_metrics_destroy(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),   cmocka_unit_test(test_refused),
        cmocka_unit_test(test_hash_check), cmocka_unit_test(test_exporter_with_users),
        cmocka_unit_test(test_insecure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
