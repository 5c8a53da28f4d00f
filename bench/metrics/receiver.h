/* A StatsD receiver for the metrics benchmarks: a Unix datagram socket in a fresh folder under
 * /tmp, read by a thread that counts datagrams and lines (as a real reader, it takes every
 * datagram off the queue as soon as it arrives); and the rounds' child processes, which publish
 * to it or not. */
#ifndef GK_BENCH_RECEIVER_H
#define GK_BENCH_RECEIVER_H

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct bench_receiver {
    char dir[32], path[108];
    int fd;
    pthread_t thread;
    atomic_int stop;
    _Atomic uint64_t datagrams, lines;
} bench_receiver;

static void *bench_receiver_run(void *arg)
{
    bench_receiver *r = arg;
    static char buf[65536];
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    while (!atomic_load(&r->stop)) {
        if (poll(&p, 1, 100) <= 0)
            continue;
        for (;;) {
            ssize_t n = recv(r->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n <= 0)
                break;
            uint64_t lines = 1;
            for (ssize_t i = 0; i + 1 < n; i++)
                lines += buf[i] == '\n';
            atomic_fetch_add(&r->datagrams, 1);
            atomic_fetch_add(&r->lines, lines);
        }
    }
    return NULL;
}

/* Binds the socket and starts the thread. Returns 0 or -1 (with a message on stderr). */
static int bench_receiver_start(bench_receiver *r)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/gk-bench-rx-XXXXXX");
    if (!mkdtemp(r->dir)) {
        perror("bench receiver: mkdtemp");
        return -1;
    }
    snprintf(r->path, sizeof r->path, "%s/sock", r->dir);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", r->path);
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0 || bind(r->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("bench receiver: socket");
        return -1;
    }
    int big = 4 << 20;
    setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    atomic_init(&r->stop, 0);
    atomic_init(&r->datagrams, 0);
    atomic_init(&r->lines, 0);
    if (pthread_create(&r->thread, NULL, bench_receiver_run, r) != 0) {
        perror("bench receiver: thread");
        return -1;
    }
    return 0;
}

static void bench_receiver_stop(bench_receiver *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    close(r->fd);
    unlink(r->path);
    rmdir(r->dir);
}

/* One round in a child process: GK_METRICS_SOCKET names `sock` when `on`, else it is unset (no
 * publisher starts), and fn(arg, fd) measures and writes `size` bytes of figures to fd. Returns 0
 * when the figures arrived whole into `out` and the child exited 0, else -1. */
static int bench_run_child(int on, const char *sock, int (*fn)(void *arg, int fd), void *arg,
                           void *out, size_t size)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        if (on)
            setenv("GK_METRICS_SOCKET", sock, 1);
        else
            unsetenv("GK_METRICS_SOCKET");
        _exit(fn(arg, fds[1]));
    }
    close(fds[1]);
    ssize_t n = read(fds[0], out, size);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return n == (ssize_t)size && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

#endif
