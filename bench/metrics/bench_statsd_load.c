/* `gpukit serve` receiving StatsD from many processes, in one run:
 *   - starts `gpukit serve --listen 127.0.0.1:0 --statsd SOCK --statsd-udp 127.0.0.1:PORT`;
 *   - scrapes /metrics without load (the baseline): latency of each scrape from connect to the
 *     end of the body (what curl calls time_total), p50 and p90;
 *   - for each transport (the Unix socket, UDP on 127.0.0.1) and each total rate: forks SENDERS
 *     processes that send one StatsD line per datagram, paced in 1 ms slots, for SECONDS. On the
 *     Unix socket they send with gpukit's client (gk_statsd_client_send: it waits up to 20 ms for
 *     room in the receiver's queue, then drops and counts); on UDP with a plain socket, as a
 *     StatsD client does (the kernel drops what the receiver's buffer cannot hold). Each process
 *     sends 16 series (4 gauges, 4 counters, 4 timers, 4 histograms) tagged with its rank.
 *     Meanwhile this process scrapes every 20 ms. Afterwards it waits until the sink's counters
 *     settle and compares the lines sent with gpukit_statsd_lines_total and
 *     gpukit_statsd_lost_datagrams_total (deltas over the phase): sent = received + lost when
 *     nothing goes missing uncounted. It also prints the server's CPU time during the phase.
 * Usage: bench_statsd_load [PATH/TO/gpukit [SECONDS [RATE,RATE,...]]]
 *        (default: the gpukit of this build tree; 5 s; 50000,100000,200000,400000 lines/s;
 *        SENDERS is 8) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "gpukit/gpukit.h"

#define SENDERS    8
#define SERIES     16
#define MAX_SCRAPE 20000

typedef struct sender_result {
    uint64_t attempted, sent, dropped; /* lines */
    double seconds;
} sender_result;

static int http_port;

/* --- scraping -------------------------------------------------------------------------------- */

static char *body;
static size_t body_cap;

/* GETs /metrics (HTTP/1.0: the server closes after the body). Returns the time taken in ms, or
 * -1. The response stays in `body`. */
static double scrape(void)
{
    uint64_t t0 = gk_bench_now_ns();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return -1;
    }
    size_t used = 0;
    for (;;) {
        if (used + 65536 > body_cap) {
            body_cap = body_cap ? body_cap * 2 : 1 << 20;
            body = realloc(body, body_cap);
            if (!body)
                exit(1);
        }
        ssize_t n = read(fd, body + used, body_cap - used - 1);
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    body[used] = '\0';
    double ms = (double)(gk_bench_now_ns() - t0) / 1e6;
    return strncmp(body, "HTTP/1.", 7) == 0 && strstr(body, " 200 ") ? ms : -1;
}

/* The value of the unlabelled sample `name` in the last scrape; -1 when absent. */
static double sample(const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = body ? strstr(body, key) : NULL;
    return p ? strtod(p + strlen(key), NULL) : -1;
}

/* Scrapes until the sink's lines and lost counters stop moving (the sink copies them into its
 * series after each batch it reads, or every second when idle). */
static int settle(double *lines, double *lost)
{
    double l = -2, o = -2;
    int same = 0;
    for (int i = 0; i < 100 && same < 3; i++) {
        struct timespec ts = {0, 400 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (scrape() < 0)
            return -1;
        double nl = sample("gpukit_statsd_lines_total"),
               no = sample("gpukit_statsd_lost_datagrams_total");
        same = nl == l && no == o ? same + 1 : 0;
        l = nl;
        o = no;
    }
    *lines = l;
    *lost = o;
    return same >= 3 && l >= 0 && o >= 0 ? 0 : -1;
}

/* --- senders ------------------------------------------------------------------------------- */

static int udp_port;
static char unix_path[108];

static int sender(int rank, int udp, double rate, double seconds, int out_fd)
{
    gk_statsd *client = NULL;
    int fd = -1;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)udp_port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (udp) {
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return 1;
    } else if (gk_statsd_open(unix_path, &client) != 0) {
        return 1;
    }
    static const char *const types[4] = {"g", "c", "ms", "h"};
    static const char *const kinds[4] = {"gauge", "count", "time", "hist"};
    char names[SERIES][48], tags[64];
    for (int i = 0; i < SERIES; i++)
        snprintf(names[i], sizeof names[i], "bench.load.%s_%d", kinds[i % 4], i / 4);
    snprintf(tags, sizeof tags, "rank:%d,job:bench", rank);
    sender_result r = {0};
    double per_ms = rate / 1000.0;
    long slots = (long)(seconds * 1000);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t t0 = gk_bench_now_ns();
    char line[256];
    for (long j = 0; j < slots; j++) {
        uint64_t n = (uint64_t)((double)(j + 1) * per_ms) - (uint64_t)((double)j * per_ms);
        for (uint64_t k = 0; k < n; k++) {
            int i = (int)(r.attempted % SERIES);
            double v = (double)(r.attempted % 1000) * 0.25;
            r.attempted++;
            if (!udp) {
                if (gk_statsd_client_send(client, names[i], v, types[i % 4], tags) == 0)
                    r.sent++;
                else
                    r.dropped++;
                continue;
            }
            int len = snprintf(line, sizeof line, "%s:%g|%s|#%s", names[i], v, types[i % 4], tags);
            if (sendto(fd, line, (size_t)len, 0, (struct sockaddr *)&to, sizeof to) == len)
                r.sent++;
            else
                r.dropped++;
        }
        struct timespec due = start;
        long ns = (j + 1) * 1000000L;
        due.tv_sec += ns / 1000000000L;
        due.tv_nsec += ns % 1000000000L;
        if (due.tv_nsec >= 1000000000L) {
            due.tv_sec++;
            due.tv_nsec -= 1000000000L;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
    }
    r.seconds = (double)(gk_bench_now_ns() - t0) / 1e9;
    if (client)
        gk_statsd_close(client);
    if (fd >= 0)
        close(fd);
    return write(out_fd, &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1;
}

/* --- the server ---------------------------------------------------------------------------- */

static pid_t server;

static double server_cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)server);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int free_udp_port(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static int start_server(const char *gpukit, const char *dir)
{
    char err_path[256], udp[64];
    snprintf(err_path, sizeof err_path, "%s/serve.err", dir);
    snprintf(unix_path, sizeof unix_path, "%s/statsd.sock", dir);
    udp_port = free_udp_port();
    snprintf(udp, sizeof udp, "127.0.0.1:%d", udp_port);
    server = fork();
    if (server < 0)
        return -1;
    if (server == 0) {
        if (!freopen(err_path, "w", stderr))
            _exit(127);
        execl(gpukit, gpukit, "serve", "--listen", "127.0.0.1:0", "--statsd", unix_path,
              "--statsd-udp", udp, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(err_path, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "serving http://127.0.0.1:");
            if (p)
                http_port = atoi(p + strlen("serving http://127.0.0.1:"));
        }
        if (f)
            fclose(f);
        if (http_port > 0 && access(unix_path, F_OK) == 0)
            return 0;
    }
    fprintf(stderr, "bench_statsd_load: gpukit serve did not start (see %s)\n", err_path);
    return -1;
}

/* --- phases -------------------------------------------------------------------------------- */

static double lat[MAX_SCRAPE];

static void quantiles(double *v, size_t n, double *p50, double *p90)
{
    gk_bench_median(v, n); /* sorts */
    *p50 = n ? v[n / 2] : 0;
    *p90 = n ? v[(size_t)((double)(n - 1) * 0.9)] : 0;
}

static int baseline(void)
{
    size_t n = 0;
    for (int i = 0; i < 300; i++) {
        double ms = scrape();
        if (ms < 0)
            return -1;
        lat[n++] = ms;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    double p50, p90;
    quantiles(lat, n, &p50, &p90);
    printf("| none (baseline) | - | - | - | - | - | - | - | %.3f / %.3f | %zu | - |\n", p50, p90,
           n);
    fflush(stdout);
    return 0;
}

static int phase(int udp, double rate, double seconds)
{
    double lines0, lost0;
    if (settle(&lines0, &lost0) != 0)
        return -1;
    double cpu0 = server_cpu_s();
    int fds[SENDERS][2];
    pid_t pids[SENDERS];
    for (int r = 0; r < SENDERS; r++) {
        if (pipe(fds[r]))
            return -1;
        pids[r] = fork();
        if (pids[r] < 0)
            return -1;
        if (pids[r] == 0) {
            close(fds[r][0]);
            _exit(sender(r, udp, rate / SENDERS, seconds, fds[r][1]));
        }
        close(fds[r][1]);
    }
    /* Scrape while they send. */
    size_t n = 0;
    int failed_scrapes = 0;
    uint64_t t_end = gk_bench_now_ns() + (uint64_t)(seconds * 1e9);
    while (gk_bench_now_ns() < t_end && n < MAX_SCRAPE) {
        double ms = scrape();
        if (ms < 0)
            failed_scrapes++;
        else
            lat[n++] = ms;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    sender_result tot = {0};
    double slowest = 0;
    for (int r = 0; r < SENDERS; r++) {
        sender_result sr;
        ssize_t got = read(fds[r][0], &sr, sizeof sr);
        close(fds[r][0]);
        int st;
        waitpid(pids[r], &st, 0);
        if (got != (ssize_t)sizeof sr || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "bench_statsd_load: sender %d failed\n", r);
            return -1;
        }
        tot.attempted += sr.attempted;
        tot.sent += sr.sent;
        tot.dropped += sr.dropped;
        slowest = sr.seconds > slowest ? sr.seconds : slowest;
    }
    double cpu1 = server_cpu_s();
    double lines1, lost1;
    if (settle(&lines1, &lost1) != 0)
        return -1;
    double received = lines1 - lines0, lost = lost1 - lost0;
    double missing = (double)tot.sent - received - lost;
    double p50, p90;
    quantiles(lat, n, &p50, &p90);
    printf("| %s | %.0f | %.0f | %llu | %.0f | %.0f | %llu | %.0f | %.3f / %.3f | %zu%s | %.1f%% "
           "|\n",
           udp ? "UDP" : "Unix", rate, (double)tot.sent / slowest, (unsigned long long)tot.sent,
           received, lost, (unsigned long long)tot.dropped, missing, p50, p90, n,
           failed_scrapes ? " (some failed)" : "", 100 * (cpu1 - cpu0) / slowest);
    fflush(stdout);
    return 0;
}

/* The tool of this build tree: benchmarks are built into BUILD/bench/, the tool is BUILD/gpukit. */
static const char *tool_of_build(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(buf, '/');
        if (!slash)
            return NULL;
        *slash = '\0';
    }
    size_t used = strlen(buf);
    if (used + sizeof "/gpukit" > len)
        return NULL;
    memcpy(buf + used, "/gpukit", sizeof "/gpukit");
    return buf;
}

int main(int argc, char **argv)
{
    char own[4096];
    const char *gpukit = argc > 1 ? argv[1] : tool_of_build(own, sizeof own);
    if (!gpukit || access(gpukit, X_OK) != 0) {
        fprintf(stderr,
                "bench_statsd_load: %s is not an executable gpukit\n"
                "usage: bench_statsd_load [PATH/TO/gpukit [SECONDS [RATE,RATE,...]]]\n"
                "  (default: BUILD/gpukit for this program in BUILD/bench/)\n",
                gpukit ? gpukit : "the build tree's tool");
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 5;
    const char *rates = argc > 3 ? argv[3] : "50000,100000,200000,400000";
    if (seconds < 1) {
        fprintf(stderr, "bench_statsd_load: SECONDS must be at least 1\n");
        return 2;
    }
    unsetenv("RANK");
    unsetenv("SLURM_PROCID");
    unsetenv("OMPI_COMM_WORLD_RANK");
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/gk-bench-load-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    if (start_server(gpukit, dir) != 0)
        return 1;
    printf("%d sender processes, one line a datagram, %.0f s a phase; scrapes every 20 ms "
           "(latency: connect to end of body, ms)\n\n",
           SENDERS, seconds);
    printf("| transport | target lines/s | sent lines/s | sent | received (lines_total) | "
           "lost (lost_datagrams) | dropped by the client | unaccounted | scrape p50 / p90 ms | "
           "scrapes | serve CPU |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    int rc = baseline();
    for (int udp = 0; udp <= 1 && rc == 0; udp++) {
        char list[256];
        snprintf(list, sizeof list, "%s", rates);
        for (char *save, *t = strtok_r(list, ",", &save); t && rc == 0;
             t = strtok_r(NULL, ",", &save))
            rc = phase(udp, atof(t), seconds);
    }
    if (rc == 0)
        rc = baseline();
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    char p[300];
    snprintf(p, sizeof p, "%s/serve.err", dir);
    unlink(p);
    rmdir(dir);
    return rc ? 1 : 0;
}
