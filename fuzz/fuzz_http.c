/* Fuzz target: HTTP requests as the exporter sees them. One exporter on 127.0.0.1 (any free port)
 * serves a small registry for the whole run; each input is sent as the raw bytes of a request
 * (method, path, headers such as Accept, anything else), the writing side is shut so a partial
 * request ends, and the answer must be nothing or an HTTP status line. Afterwards a well-formed
 * scrape must still get its 200: no input breaks the server. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz.h"
#include "gpukit/export.h"
#include "gpukit/metrics.h"

static gk_exporter *server;
static gk_metrics *registry;

static int start_server(void)
{
    if (server)
        return 0;
    if (gk_metrics_create(NULL, &registry) != 0)
        return -1;
    gk_metric *c = NULL;
    const char *labels[] = {"path", "/metrics", NULL};
    if (gk_metrics_counter(registry, "gpukit_fuzz_requests_total", "Requests.", labels, &c) != 0)
        return -1;
    gk_counter_add(c, 1);
    gk_exporter_config cfg;
    gk_exporter_config_default(&cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.metrics = registry;
    cfg.timeout = 2;
    return gk_exporter_start(&cfg, &server, NULL, 0);
}

/* Sends `len` bytes, half-closes, reads the answer's status line into `out` (waiting at most
 * wait_ms for it: an unfinished request gets no answer); returns the bytes read or -1 when the
 * exchange itself failed. */
static long exchange(const void *req, size_t len, char *out, size_t cap, long wait_ms)
{
    out[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0}, wait = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)gk_exporter_port(server))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long got = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        size_t sent = 0;
        while (sent < len) {
            ssize_t n = send(fd, (const char *)req + sent, len - sent, MSG_NOSIGNAL);
            if (n <= 0)
                break; /* the server may close early on a bad request */
            sent += (size_t)n;
        }
        shutdown(fd, SHUT_WR);
        got = 0;
        while ((size_t)got < cap - 1) {
            ssize_t n = recv(fd, out + got, cap - 1 - (size_t)got, 0);
            if (n <= 0)
                break;
            got += n;
            out[got] = '\0';
            if (strstr(out, "\r\n"))
                break; /* the status line is all we check; a kept-alive connection stays open */
        }
        out[got] = '\0';
    }
    /* Reset rather than close: the server drops the connection at once instead of keeping an
     * unfinished request until its timeout. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (start_server() != 0)
        __builtin_trap();
    if (size > 8192)
        return 0;
    char answer[512];
    long n = -1;
    for (int attempt = 0; attempt < 3 && n < 0; attempt++)
        n = exchange(data, size, answer, sizeof answer, 20);
    if (n < 0)
        __builtin_trap(); /* the server stopped accepting */
    if (n > 0 && strncmp(answer, "HTTP/1.", 7) != 0)
        __builtin_trap(); /* something other than an HTTP answer */
    /* The server still answers a scrape: at the third try at the latest. A connect fails now and
     * then at a thousand connections a second on one host (a new client port meets the server's
     * TIME_WAIT of an earlier connection on it); that is the test's load, not the server. */
    static const char scrape[] = "GET /metrics HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
    for (int attempt = 0; attempt < 3; attempt++) {
        n = exchange(scrape, sizeof scrape - 1, answer, sizeof answer, 5000);
        if (n >= 12 && strncmp(answer, "HTTP/1.1 200", 12) == 0)
            return 0;
        fprintf(stderr, "fuzz_http: scrape %d got %ld bytes: %.40s\n", attempt + 1, n, answer);
    }
    __builtin_trap();
}
