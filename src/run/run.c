/* gk_run_execute: start the command in its own process group, then one loop on ppoll over the
 * metrics socket and a signalfd, sampling at absolute monotonic deadlines, until the command
 * exits. Single-threaded: the socket, the signals and the sampler are served in turn. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/report.h"
#include "run/alerts_int.h"
#include "run/run_int.h"
#include "run/sampler_int.h"

extern char **environ;

#define MAX_GAUGES        1024
#define DGRAMS_PER_WAKEUP 256

typedef struct gauge_slot {
    char name[GK__STATSD_MAX_NAME + GK__STATSD_MAX_TAGS + 4];
    double value;
} gauge_slot;

typedef struct run_state {
    const gk_run_config *cfg;
    gk_recorder *rec;
    gk__run_alerts *alerts;
    double t0;
    uint64_t values, dropped;
    gauge_slot *gauges; /* last value of each gauge, for relative (+/-) updates */
    size_t ngauges;
} run_state;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void(gk_run_config_default)(gk_run_config *out, size_t size)
{
    gk_run_config c;
    memset(&c, 0, sizeof c);
    c.interval_s = 0.5;
    c.gpu = 1;
    c.max_metric_values = 10000000;
    gk_logger_default(&c.logger);
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_run_config");
}

/* What happens to each signal gk_run_execute takes over. */
enum sig_action {
    SIG_CHILD,     /* SIGCHLD: wakes the loop */
    SIG_INTERRUPT, /* INT, TERM, HUP: forwarded then SIGCONT; the second one sends SIGKILL */
    SIG_FORWARD,   /* forwarded as it is (QUIT, USR1, USR2, ALRM, real-time signals, ...) */
    SIG_IGNORE     /* not forwarded (PIPE, XFSZ; faults sent with kill(2)) */
};

static enum sig_action action_of(int sig)
{
    switch (sig) {
    case SIGCHLD:
        return SIG_CHILD;
    case SIGINT:
    case SIGTERM:
    case SIGHUP:
        return SIG_INTERRUPT;
    case SIGPIPE:
    case SIGXFSZ:
    case SIGSTKFLT:
    case SIGILL:
    case SIGTRAP:
    case SIGABRT:
    case SIGBUS:
    case SIGFPE:
    case SIGSEGV:
    case SIGSYS:
        return SIG_IGNORE;
    default:
        return SIG_FORWARD;
    }
}

static const int owned_signals[] = {SIGHUP,    SIGINT,  SIGQUIT,   SIGILL,  SIGTRAP, SIGABRT,
                                    SIGBUS,    SIGFPE,  SIGUSR1,   SIGSEGV, SIGUSR2, SIGPIPE,
                                    SIGALRM,   SIGTERM, SIGSTKFLT, SIGCHLD, SIGXCPU, SIGXFSZ,
                                    SIGVTALRM, SIGPROF, SIGIO,     SIGPWR,  SIGSYS};

int gk_run_takes_signal(int sig)
{
    for (size_t i = 0; i < sizeof owned_signals / sizeof owned_signals[0]; i++)
        if (owned_signals[i] == sig)
            return 1;
    return sig >= SIGRTMIN && sig <= SIGRTMAX;
}

/* The signals of gk_run_takes_signal as a set. */
static void owned_set(sigset_t *set)
{
    sigemptyset(set);
    for (int sig = 1; sig <= SIGRTMAX; sig++)
        if (gk_run_takes_signal(sig))
            sigaddset(set, sig);
}

static double *gauge_value(run_state *st, const char *key)
{
    for (size_t i = 0; i < st->ngauges; i++) {
        if (strcmp(st->gauges[i].name, key) == 0)
            return &st->gauges[i].value;
    }
    if (st->ngauges >= MAX_GAUGES)
        return NULL;
    gauge_slot *g = &st->gauges[st->ngauges++];
    snprintf(g->name, sizeof g->name, "%s", key);
    g->value = 0;
    return &g->value;
}

/* One accepted StatsD line: counters are scaled by their sample rate, relative gauges added to
 * the last value; then the value is recorded. */
static void on_metric(void *user, const gk__statsd_msg *m)
{
    run_state *st = user;
    if (st->values >= st->cfg->max_metric_values) {
        st->dropped++;
        return;
    }
    char name[GK__STATSD_MAX_NAME + 1], tags[GK__STATSD_MAX_TAGS + 1] = "";
    memcpy(name, m->name, m->name_len);
    name[m->name_len] = '\0';
    if (m->tags) {
        memcpy(tags, m->tags, m->tags_len);
        tags[m->tags_len] = '\0';
    }
    double v = m->value;
    if (m->kind[0] == 'c')
        v /= m->rate;
    if (m->kind[0] == 'g') {
        char key[sizeof name + sizeof tags + 2];
        snprintf(key, sizeof key, "%s{%s}", name, tags);
        double *last = gauge_value(st, key);
        if (last) {
            if (m->relative)
                *last += v;
            else
                *last = v;
            v = *last;
        }
    }
    gk_recorder_metric(st->rec, mono_now() - st->t0, name, m->kind, v, tags);
    st->values++;
}

/* Reads up to DGRAMS_PER_WAKEUP datagrams; returns how many. */
static int drain_socket(int fd, run_state *st, gk_run_result *res, char *buf)
{
    int i;
    for (i = 0; i < DGRAMS_PER_WAKEUP; i++) {
        ssize_t n = recv(fd, buf, GK__STATSD_MAX_DGRAM, MSG_DONTWAIT);
        if (n < 0)
            break;
        gk__statsd_parse_datagram(buf, (size_t)n, on_metric, st, &res->metric_lines,
                                  &res->metric_malformed);
    }
    return i;
}

/* A private directory and a bound datagram socket in it. */
static int open_socket(char *dir, size_t dirlen, char *path, size_t pathlen, int *fd_out)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(dir, dirlen, "%s/gpukit-run-XXXXXX", tmp);
    if (!mkdtemp(dir))
        return -errno;
    snprintf(path, pathlen, "%s/metrics.sock", dir);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        rmdir(dir);
        return -ENAMETOOLONG;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        rmdir(dir);
        return rc;
    }
    int sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz); /* best effort: fewer drops */
    *fd_out = fd;
    return 0;
}

/* environ without GK_METRICS_SOCKET, plus ours. The strings are environ's except the last. */
static char **child_env(const char *sock, char **own)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **env = gk__calloc(n + 2, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    size_t plen = strlen(GK_METRICS_SOCKET_ENV);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, GK_METRICS_SOCKET_ENV, plen) == 0 && (*e)[plen] == '=')
            continue;
        env[k++] = *e;
    }
    size_t len = plen + strlen(sock) + 2;
    *own = gk__malloc(len);
    if (!*own) {
        free(env);
        return NULL;
    }
    snprintf(*own, len, "%s=%s", GK_METRICS_SOCKET_ENV, sock);
    env[k++] = *own;
    env[k] = NULL;
    return env;
}

static int spawn_child(char *const argv[], const char *sock, const sigset_t *mask, int out_fd,
                       pid_t *pid)
{
    char *own = NULL;
    char **env = child_env(sock, &own);
    if (!env)
        return -ENOMEM;
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    /* Every signal gpukit run takes over starts at its default in the command (a caller that
     * ignores SIGPIPE or SIGXFSZ, as the tool does, must not pass that on). */
    sigset_t def;
    owned_set(&def);
    posix_spawnattr_setsigmask(&attr, mask);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out_fd > STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    int err = posix_spawnp(pid, argv[0], &fa, &attr, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(env);
    free(own);
    return -err;
}

static int write_end(run_state *st, const gk_run_result *res)
{
    gk_recording_end end = {.size = sizeof(gk_recording_end),
                            .t = mono_now() - st->t0,
                            .exit_status = res->exit_status,
                            .exit_code = res->exit_code,
                            .signal = res->signal,
                            .duration_s = res->duration_s,
                            .samples = res->samples,
                            .overruns = res->overruns,
                            .metric_lines = res->metric_lines,
                            .metric_malformed = res->metric_malformed,
                            .metric_dropped = res->metric_dropped,
                            .cpu_seconds = res->cpu_seconds,
                            .max_rss_bytes = res->max_rss_bytes};
    int rc = gk_recorder_close(st->rec, &end);
    st->rec = NULL;
    return rc;
}

static void take_sample(gk__sampler *smp, pid_t pid, run_state *st, gk__values *vals,
                        gk_run_result *res)
{
    (void)pid;
    gk__sampler_read(smp, vals);
    gk_recorder_sample(st->rec, mono_now() - st->t0, vals->n, vals->names, vals->v);
    res->samples++;
}

/* One signal sent to gpukit while the command runs (see gk_run_execute). */
static void on_signal(pid_t pid, int sig, int *interrupts, run_state *st, gk_run_result *res)
{
    const gk_logger *log = &st->cfg->logger;
    switch (action_of(sig)) {
    case SIG_CHILD:
        return;
    case SIG_INTERRUPT:
        res->forwarded = sig;
        if (++*interrupts >= 2) {
            kill(-pid, SIGKILL);
            gk_log(log, GK_LOG_WARN, "run", "%s again: killed the command (SIGKILL)",
                   strsignal(sig));
            return;
        }
        kill(-pid, sig);
        kill(-pid, SIGCONT); /* a stopped command must be able to act on it */
        gk_log(log, GK_LOG_WARN, "run",
               "forwarded %s to the command; a second interrupt kills it (SIGKILL)",
               strsignal(sig));
        return;
    case SIG_FORWARD:
        res->forwarded = sig;
        kill(-pid, sig);
        gk_log(log, GK_LOG_INFO, "run", "forwarded %s to the command", strsignal(sig));
        return;
    case SIG_IGNORE:
        gk_log(log, GK_LOG_INFO, "run", "ignored %s (not forwarded)", strsignal(sig));
        return;
    }
}

/* Waits for the command, forwarding signals and sampling, until it exits. */
static void supervise(pid_t pid, int sock, int sfd, gk__sampler *smp, run_state *st,
                      gk_run_result *res, char *buf, gk__values *vals)
{
    double interval = st->cfg->interval_s;
    uint64_t k = 1;
    int interrupts = 0;
    for (;;) {
        double next = st->t0 + (double)k * interval;
        double wait = next - mono_now();
        if (wait < 0)
            wait = 0;
        struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
        struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        int n = ppoll(fds, 2, &ts, NULL);
        if (n > 0 && (fds[0].revents & POLLIN))
            drain_socket(sock, st, res, buf);
        if (n > 0 && (fds[1].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                on_signal(pid, (int)si.ssi_signo, &interrupts, st, res);
        }
        int status;
        struct rusage ru;
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) {
            res->duration_s = mono_now() - st->t0;
            res->cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
                               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
            res->max_rss_bytes = (double)ru.ru_maxrss * 1024.0;
            if (WIFEXITED(status)) {
                res->exit_code = WEXITSTATUS(status);
                res->exit_status = res->exit_code;
            } else {
                res->exit_code = -1;
                res->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
                res->exit_status = 128 + res->signal;
            }
            /* What it sent just before exiting (bounded: descendants may still send). */
            for (int round = 0; round < 64; round++) {
                if (drain_socket(sock, st, res, buf) < DGRAMS_PER_WAKEUP)
                    break;
            }
            return;
        }
        double now = mono_now();
        if (now >= next) {
            take_sample(smp, pid, st, vals, res);
            uint64_t due = (uint64_t)((now - st->t0) / interval);
            if (due > k) /* deadlines missed while sampling or draining: skip, count */
                res->overruns += due - k;
            k = due + 1;
        }
    }
}

/* Consumes signals that arrived while blocked, so unblocking does not deliver them. */
static void discard_pending(const sigset_t *set)
{
    struct timespec zero = {0, 0};
    for (int i = 0; i < 64 && sigtimedwait(set, NULL, &zero) > 0; i++)
        ;
}

static int run_execute(const gk_run_config *cfg, char *const argv[], gk_run_result *res);

int(gk_run_execute)(const gk_run_config *cfg_in, char *const argv[], gk_run_result *user,
                    size_t size)
{
    gk_run_config cfg;
    gk_run_config_default(&cfg);
    if (!cfg_in)
        return gk__error(-EINVAL, "gk_run_execute: config is NULL");
    int rc = gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_run_config");
    if (rc || (rc = gk__sized_check(user, size, "gk_run_result")))
        return rc;
    if (!argv || !argv[0] || !*argv[0])
        return gk__error(-EINVAL, "gk_run_execute: the command is empty (give a program to run)");
    if (!cfg.record_path || !*cfg.record_path)
        return gk__error(-EINVAL, "gk_run_execute: record_path is required");
    if (!(cfg.interval_s >= 0.05 && cfg.interval_s <= 3600))
        return gk__error(-EINVAL, "gk_run_execute: interval %g s is outside 0.05 to 3600",
                         cfg.interval_s);
    if (cfg.nalerts && !cfg.alerts)
        return gk__error(-EINVAL, "gk_run_execute: nalerts is %zu but alerts is NULL", cfg.nalerts);
    gk_run_result res;
    rc = run_execute(&cfg, argv, &res);
    res.size = sizeof res;
    (void)gk__sized_put(user, size, &res, sizeof res, "gk_run_result");
    if (rc)
        return gk__error(rc, "%s", res.error[0] ? res.error : gk_strerror(rc));
    return 0;
}

/* The work of gk_run_execute on a checked config and command. */
static int run_execute(const gk_run_config *cfg, char *const argv[], gk_run_result *res)
{
    memset(res, 0, sizeof *res);
    res->exit_status = 127;
    res->exit_code = -1;
    int rc = gk__alerts_check(cfg, res->error, sizeof res->error);
    if (rc)
        return rc;
    /* Take the signals over before anything else, so no thread started below can receive one
     * and none is lost: from here on each is forwarded or ignored, never fatal. */
    sigset_t set, old;
    owned_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    run_state st = {.cfg = cfg};
    char dir[128], sockpath[160];
    char *buf = gk__malloc(GK__STATSD_MAX_DGRAM);
    gk__values *vals = gk__malloc(sizeof *vals);
    st.gauges = gk__calloc(MAX_GAUGES, sizeof *st.gauges);
    if (!buf || !vals || !st.gauges) {
        rc = -ENOMEM;
        goto out_free;
    }
    int sock = -1;
    rc = open_socket(dir, sizeof dir, sockpath, sizeof sockpath, &sock);
    if (rc) {
        snprintf(res->error, sizeof res->error, "cannot create the metrics socket: %s",
                 strerror(-rc));
        goto out_free;
    }
    gk__sampler *smp = NULL;
    gk__sampler_info si;
    rc = gk__sampler_create(cfg->gpu, &cfg->logger, &smp, &si);
    if (rc)
        goto out_socket;
    res->gpu_enabled = si.gpu_enabled;
    snprintf(res->gpu_reason, sizeof res->gpu_reason, "%s", si.gpu_reason);

    char host[256] = "";
    gethostname(host, sizeof host - 1);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int argc = 0;
    while (argv[argc])
        argc++;
    gk_recording_meta meta = {.size = sizeof(gk_recording_meta),
                              .argc = argc,
                              .argv = (const char *const *)argv,
                              .host = host,
                              .start_unix = (double)rt.tv_sec + rt.tv_nsec * 1e-9,
                              .interval_s = cfg->interval_s,
                              .cores = si.cores,
                              .memory_total_bytes = si.memory_total_bytes,
                              .gpu_enabled = si.gpu_enabled,
                              .gpu_reason = si.gpu_reason,
                              .ndevices = si.ndevices,
                              .devices = si.devices};
    rc = gk_recorder_open(cfg->record_path, &meta, &st.rec);
    if (rc) {
        snprintf(res->error, sizeof res->error, "cannot write the recording %s: %s",
                 cfg->record_path, strerror(-rc));
        goto out_sampler;
    }

    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        rc = -errno;
        goto out_recorder;
    }
    pid_t pid;
    st.t0 = mono_now();
    rc = spawn_child(argv, sockpath, &old, cfg->command_stdout, &pid);
    if (rc) {
        snprintf(res->error, sizeof res->error, "cannot run \"%s\": %s", argv[0], strerror(-rc));
        res->record_error = write_end(&st, res);
        goto out_sfd;
    }
    res->started = 1;
    gk__sampler_watch(smp, pid);
    if (gk__alerts_start(cfg, smp, st.rec, st.t0, &st.alerts, res->error, sizeof res->error)) {
        /* the rules parsed before the start: only resources can fail here; run without them */
        gk_log(&cfg->logger, GK_LOG_WARN, "run", "%s; alerts are off for this run", res->error);
        res->error[0] = '\0';
    }
    supervise(pid, sock, sfd, smp, &st, res, buf, vals);
    res->metric_dropped = st.dropped;
    res->alerts_fired = gk__alerts_fired(st.alerts);
    gk__alerts_stop(st.alerts);
    st.alerts = NULL;
    res->record_error = write_end(&st, res);
    rc = 0;
out_sfd:
    close(sfd);
out_recorder:
    if (st.rec)
        gk_recorder_close(st.rec, NULL);
out_sampler:
    gk__sampler_destroy(smp);
out_socket:
    close(sock);
    unlink(sockpath);
    rmdir(dir);
out_free:
    free(buf);
    free(vals);
    free(st.gauges);
    /* Signals that came after the command ended were meant for it: drop them. */
    discard_pending(&set);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
