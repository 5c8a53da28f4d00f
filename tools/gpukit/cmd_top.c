/* gpukit top: a live view of the GPUs (utilization and memory bars, temperature, power, clocks,
 * throttle flags, a one-minute sparkline), their processes, and the host. A sampler thread reads
 * telemetry on absolute deadlines into a snapshot; the drawing thread only copies and draws it.
 * When stdout is not a terminal it prints plain lines instead. */
#include <curses.h>
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static const char top_usage[] =
    "usage: gpukit top [--interval S] [--count N] [--plain] [--no-gpu]\n"
    "\n"
    "A live view: one line per GPU (utilization and memory bars, temperature, power and limit,\n"
    "SM and memory clocks, throttle flags, a sparkline of the last minute), the processes on the\n"
    "GPUs (pid, user, memory, command), then the host's CPU, memory and load. Keys: q quits,\n"
    "m sorts processes by GPU memory, p by pid. When stdout is not a terminal (or with --plain)\n"
    "it prints one plain line per sample instead.\n"
    "\n"
    "  --interval S  refresh interval in seconds, 0.1 to 60 (default 1)\n"
    "  --count N     stop after N samples (default: until q or Ctrl-C)\n"
    "  --plain       plain lines even on a terminal\n"
    "  --no-gpu      do not read GPU telemetry\n"
    "  --help        this text\n"
    "  --version     gpukit's version\n"
    "\n"
    "Exits 0; 1 when the host cannot be read; 2 on a usage error.\n";

#define MAX_GPUS 16
#define HISTORY  600 /* sparkline points kept (the last minute at 0.1 s) */

typedef struct history {
    double v[HISTORY];
    size_t n, head;
} history;

/* What the sampler publishes; the drawing side copies it under the lock. */
typedef struct snapshot {
    uint64_t seq; /* samples taken */
    double cpu, mem_used, mem_total, swap_used, swap_total, load1, load5, load15;
    unsigned ncpus;
    double core[GK_HOST_MAX_CPUS];
    unsigned ngpus;
    gk_gpu_sample gpu[MAX_GPUS];
    int gpu_ok[MAX_GPUS];
    history gpu_hist[MAX_GPUS], cpu_hist;
} snapshot;

typedef struct top_state {
    double interval;
    int want_gpu;
    gk_host *host;
    gk_nvml *nvml;
    char gpu_reason[256];
    pthread_mutex_t lock;
    snapshot snap;
    atomic_int stop;
    gk_host_sample *prev, *cur;
    int have_prev;
    gk_gpu_sample gbuf[MAX_GPUS]; /* the sampler thread's own readings */
} top_state;

static void hist_push(history *h, double v, size_t keep)
{
    if (keep > HISTORY)
        keep = HISTORY;
    h->v[h->head] = v;
    h->head = (h->head + 1) % HISTORY;
    if (h->n < keep)
        h->n++;
}

static double busy(const gk_cpu_times *c)
{
    return c->user + c->nice + c->system + c->irq + c->softirq + c->steal;
}

static double cpu_ratio(const gk_cpu_times *a, const gk_cpu_times *b)
{
    double db = busy(a) - busy(b);
    double dt = db + (a->idle + a->iowait) - (b->idle + b->iowait);
    return dt > 0 && db >= 0 ? (db / dt > 1 ? 1 : db / dt) : 0;
}

/* One reading of everything, published into st->snap. */
static void sample_once(top_state *st)
{
    gk_host_sample *cur = st->cur;
    gk_host_sample_read(st->host, GK_HOST_CPU | GK_HOST_MEMORY | GK_HOST_LOAD, cur);
    gk_gpu_sample *g = st->gbuf;
    int ok[MAX_GPUS] = {0};
    unsigned ngpus = st->nvml ? gk_nvml_device_count(st->nvml) : 0;
    if (ngpus > MAX_GPUS)
        ngpus = MAX_GPUS;
    for (unsigned d = 0; d < ngpus; d++)
        ok[d] = gk_nvml_sample(st->nvml, d, GK_TIER_FAST | GK_TIER_SLOW, &g[d]) == 0;
    size_t keep = (size_t)(60 / st->interval);
    pthread_mutex_lock(&st->lock);
    snapshot *s = &st->snap;
    if ((cur->valid & GK_HOST_CPU) && st->have_prev) {
        s->cpu = cpu_ratio(&cur->cpu, &st->prev->cpu);
        s->ncpus = cur->ncpus < st->prev->ncpus ? cur->ncpus : st->prev->ncpus;
        for (unsigned i = 0; i < s->ncpus; i++)
            s->core[i] = cpu_ratio(&cur->per_cpu[i], &st->prev->per_cpu[i]);
        hist_push(&s->cpu_hist, s->cpu, keep);
    }
    if (cur->valid & GK_HOST_MEMORY) {
        s->mem_total = (double)cur->mem_total;
        s->mem_used = (double)cur->mem_total - (double)cur->mem_available;
        s->swap_total = (double)cur->swap_total;
        s->swap_used = (double)cur->swap_total - (double)cur->swap_free;
    }
    if (cur->valid & GK_HOST_LOAD) {
        s->load1 = cur->load1;
        s->load5 = cur->load5;
        s->load15 = cur->load15;
    }
    s->ngpus = ngpus;
    for (unsigned d = 0; d < ngpus; d++) {
        s->gpu[d] = g[d];
        s->gpu_ok[d] = ok[d];
        if (ok[d] && ((g[d].valid >> GK_GPU_UTILIZATION) & 1u))
            hist_push(&s->gpu_hist[d], g[d].utilization_gpu, keep);
    }
    s->seq++;
    pthread_mutex_unlock(&st->lock);
    if (cur->valid & GK_HOST_CPU) {
        st->cur = st->prev;
        st->prev = cur;
        st->have_prev = 1;
    }
}

static void *sampler_main(void *p)
{
    top_state *st = p;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long step_ns = (long)(st->interval * 1e9);
    while (!atomic_load(&st->stop)) {
        sample_once(st);
        next.tv_nsec += step_ns % 1000000000L;
        next.tv_sec += step_ns / 1000000000L + next.tv_nsec / 1000000000L;
        next.tv_nsec %= 1000000000L;
        /* sleep in slices of at most 100 ms so stop is seen quickly */
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left =
                (double)(next.tv_sec - now.tv_sec) + (double)(next.tv_nsec - now.tv_nsec) * 1e-9;
            if (left <= 0 || atomic_load(&st->stop))
                break;
            struct timespec nap = {0, (long)((left < 0.1 ? left : 0.1) * 1e9)};
            nanosleep(&nap, NULL);
        }
    }
    return NULL;
}

static const char *flags_of(uint64_t bits, char *buf, size_t len)
{
    buf[0] = '\0';
    static const struct {
        uint64_t bit;
        const char *name;
    } names[] = {{0x4, "pwr-cap"},
                 {0x8, "hw-slow"},
                 {0x20, "sw-therm"},
                 {0x40, "hw-therm"},
                 {0x80, "pwr-brake"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (bits & names[i].bit) {
            size_t n = strlen(buf);
            snprintf(buf + n, len - n, "%s%s", n ? "," : "", names[i].name);
        }
    }
    return buf[0] ? buf : "-";
}

static void gib(char *buf, size_t len, double bytes)
{
    snprintf(buf, len, "%.1f", bytes / (1024.0 * 1024 * 1024));
}

/* The plain form: one line per sample. */
static void print_plain(const snapshot *s, FILE *out)
{
    char t[32], a[16], b[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(t, sizeof t, "%H:%M:%S", &tm);
    gib(a, sizeof a, s->mem_used);
    gib(b, sizeof b, s->mem_total);
    fprintf(out, "%s cpu %5.1f%% mem %s/%s GiB load %.2f", t, 100 * s->cpu, a, b, s->load1);
    for (unsigned d = 0; d < s->ngpus; d++) {
        const gk_gpu_sample *g = &s->gpu[d];
        if (!s->gpu_ok[d]) {
            fprintf(out, " | gpu%u lost", d);
            continue;
        }
        char f[64];
        gib(a, sizeof a, (double)g->memory_used);
        gib(b, sizeof b, (double)g->memory_total);
        fprintf(out, " | gpu%u util %3.0f%% mem %s/%s GiB %.0fC %.0f/%.0fW sm %.0fMHz %s", d,
                100 * g->utilization_gpu, a, b, g->temperature_celsius, g->power_watts,
                g->power_limit_watts, g->clock_sm_hz / 1e6,
                flags_of(g->clock_event_reasons, f, sizeof f));
    }
    fputc('\n', out);
    fflush(out);
}

static void bar(int width, double ratio)
{
    int fill = (int)lround(ratio * width);
    if (fill < 0)
        fill = 0;
    if (fill > width)
        fill = width;
    addch('[');
    for (int i = 0; i < width; i++)
        addch(i < fill ? '|' : ' ');
    addch(']');
}

static void sparkline(const history *h, int width, int utf8)
{
    static const char *const blocks[] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83",
                                         "\xe2\x96\x84", "\xe2\x96\x85", "\xe2\x96\x86",
                                         "\xe2\x96\x87", "\xe2\x96\x88"};
    static const char ascii[] = "_.-:=+*#";
    size_t n = h->n < (size_t)width ? h->n : (size_t)width;
    for (size_t i = 0; i < n; i++) {
        size_t idx = (h->head + HISTORY - n + i) % HISTORY;
        int k = (int)(h->v[idx] * 7.999);
        k = k < 0 ? 0 : k > 7 ? 7 : k;
        if (utf8)
            addstr(blocks[k]);
        else
            addch((chtype)(unsigned char)ascii[k]);
    }
}

typedef struct proc_row {
    unsigned gpu, pid;
    uint64_t mem;
    int has_mem;
} proc_row;

static int sort_by_mem;

static int cmp_rows(const void *a, const void *b)
{
    const proc_row *x = a, *y = b;
    if (sort_by_mem && x->mem != y->mem)
        return x->mem > y->mem ? -1 : 1;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

/* The user and command line of a process, from /proc (best effort). */
static void describe_pid(unsigned pid, char *user, size_t ulen, char *cmd, size_t clen)
{
    char path[64];
    struct stat sb;
    snprintf(path, sizeof path, "/proc/%u", pid);
    snprintf(user, ulen, "?");
    cmd[0] = '\0';
    if (stat(path, &sb) == 0) {
        struct passwd pw, *res = NULL;
        char buf[1024];
        if (getpwuid_r(sb.st_uid, &pw, buf, sizeof buf, &res) == 0 && res)
            snprintf(user, ulen, "%s", pw.pw_name);
        else
            snprintf(user, ulen, "%u", (unsigned)sb.st_uid);
    }
    snprintf(path, sizeof path, "/proc/%u/cmdline", pid);
    FILE *f = fopen(path, "re");
    if (f) {
        size_t n = fread(cmd, 1, clen - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            cmd[i] = cmd[i] ? cmd[i] : ' ';
        cmd[n] = '\0';
    }
    if (!cmd[0])
        snprintf(cmd, clen, "(no such process here: another container or pid namespace)");
}

static void draw(const top_state *st, const snapshot *s, int utf8)
{
    erase();
    int row = 0, cols = COLS;
    char a[16], b[16], f[64];
    mvprintw(row++, 0, "gpukit top - every %gs - q quit, m sort by memory, p by pid", st->interval);
    row++;
    if (!st->nvml) {
        mvprintw(row++, 0, "GPU metrics off: %.*s", cols > 20 ? cols - 18 : 2, st->gpu_reason);
    }
    for (unsigned d = 0; d < s->ngpus; d++) {
        const gk_gpu_sample *g = &s->gpu[d];
        if (!s->gpu_ok[d]) {
            mvprintw(row++, 0, "%u  lost", d);
            continue;
        }
        mvprintw(row, 0, "%u %-24.24s util ", d, g->name);
        bar(10, g->utilization_gpu);
        printw(" %3.0f%%  mem ", 100 * g->utilization_gpu);
        double mr = g->memory_total ? (double)g->memory_used / (double)g->memory_total : 0;
        bar(10, mr);
        gib(a, sizeof a, (double)g->memory_used);
        gib(b, sizeof b, (double)g->memory_total);
        printw(" %s/%s GiB", a, b);
        row++;
        mvprintw(row, 4, "%3.0fC  %5.0f/%-4.0f W  sm %4.0f MHz  mem %4.0f MHz  %-10s ",
                 g->temperature_celsius, g->power_watts, g->power_limit_watts, g->clock_sm_hz / 1e6,
                 g->clock_mem_hz / 1e6, flags_of(g->clock_event_reasons, f, sizeof f));
        sparkline(&s->gpu_hist[d], cols - 70 > 10 ? cols - 70 : 10, utf8);
        row++;
    }
    row++;
    proc_row rows[MAX_GPUS * GK_GPU_MAX_PROCESSES];
    size_t nrows = 0;
    for (unsigned d = 0; d < s->ngpus; d++) {
        for (unsigned k = 0; s->gpu_ok[d] && k < s->gpu[d].nprocesses; k++) {
            const gk_gpu_process *p = &s->gpu[d].processes[k];
            rows[nrows++] = (proc_row){d, p->pid, p->used_memory, p->has_memory};
        }
    }
    qsort(rows, nrows, sizeof rows[0], cmp_rows);
    if (s->ngpus) {
        attron(A_BOLD);
        mvprintw(row++, 0, "%-4s %-8s %-10s %10s  %s", "GPU", "PID", "USER", "MEMORY", "COMMAND");
        attroff(A_BOLD);
        if (!nrows)
            mvprintw(row++, 0, "no processes on the GPUs");
    }
    for (size_t i = 0; i < nrows && row < LINES - 5; i++) {
        char user[32], cmd[256], mem[32];
        describe_pid(rows[i].pid, user, sizeof user, cmd, sizeof cmd);
        if (rows[i].has_mem)
            snprintf(mem, sizeof mem, "%.0f MiB", (double)rows[i].mem / (1024.0 * 1024));
        else
            snprintf(mem, sizeof mem, "n/a");
        mvprintw(row++, 0, "%-4u %-8u %-10.10s %10s  %.*s", rows[i].gpu, rows[i].pid, user, mem,
                 cols > 40 ? cols - 38 : 2, cmd);
    }
    row++;
    mvprintw(row, 0, "cpu ");
    bar(20, s->cpu);
    printw(" %5.1f%%  %u cores  ", 100 * s->cpu, s->ncpus);
    sparkline(&s->cpu_hist, 30, utf8);
    row++;
    gib(a, sizeof a, s->mem_used);
    gib(b, sizeof b, s->mem_total);
    mvprintw(row, 0, "mem ");
    bar(20, s->mem_total > 0 ? s->mem_used / s->mem_total : 0);
    printw(" %s/%s GiB", a, b);
    if (s->swap_total > 0) {
        gib(a, sizeof a, s->swap_used);
        gib(b, sizeof b, s->swap_total);
        printw("  swap %s/%s GiB", a, b);
    }
    row++;
    mvprintw(row++, 0, "load %.2f %.2f %.2f", s->load1, s->load5, s->load15);
    refresh();
}

static int parse_args(int argc, char **argv, top_state *st, long *count, int *plain)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--plain") == 0) {
            *plain = 1;
        } else if (strcmp(a, "--no-gpu") == 0) {
            st->want_gpu = 0;
        } else if (strcmp(a, "--interval") == 0 || strcmp(a, "--count") == 0) {
            if (i + 1 >= argc) {
                gk_tool_error("%s needs a value (see 'gpukit top --help')", a);
                return -1;
            }
            const char *v = argv[++i];
            char *end;
            if (strcmp(a, "--interval") == 0) {
                st->interval = strtod(v, &end);
                if (end == v || *end || !(st->interval >= 0.1 && st->interval <= 60)) {
                    gk_tool_error("--interval: \"%s\" is not a number of seconds from 0.1 to 60 "
                                  "(try 1)",
                                  v);
                    return -1;
                }
            } else {
                *count = strtol(v, &end, 10);
                if (end == v || *end || *count < 1) {
                    gk_tool_error("--count: \"%s\" is not a positive whole number", v);
                    return -1;
                }
            }
        } else {
            gk_tool_error("unknown option \"%s\" (see 'gpukit top --help')", a);
            return -1;
        }
    }
    return 0;
}

/* Waits until the sampler has published a sample newer than `seen` (bounded by 10 intervals). */
static uint64_t wait_sample(top_state *st, uint64_t seen, snapshot *copy)
{
    for (int i = 0; i < (int)(10 * st->interval / 0.02) + 50; i++) {
        pthread_mutex_lock(&st->lock);
        uint64_t seq = st->snap.seq;
        if (seq > seen)
            *copy = st->snap;
        pthread_mutex_unlock(&st->lock);
        if (seq > seen)
            return seq;
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    return seen;
}

static void run_plain(top_state *st, long count, snapshot *copy)
{
    uint64_t seen = 0;
    if (!st->nvml && st->want_gpu)
        fprintf(stdout, "GPU metrics off: %s\n", st->gpu_reason);
    /* the first sample has no CPU delta yet: wait for the second */
    seen = wait_sample(st, seen, copy);
    for (long n = 0; count < 0 || n < count; n++) {
        uint64_t next = wait_sample(st, seen, copy);
        if (next == seen)
            break;
        seen = next;
        print_plain(copy, stdout);
    }
}

static void run_curses(top_state *st, long count, snapshot *copy)
{
    const char *cs = nl_langinfo(CODESET);
    int utf8 = cs && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
    initscr();
    cbreak();
    noecho();
    curs_set(0);
    keypad(stdscr, TRUE);
    timeout(50);
    uint64_t seen = 0;
    long drawn = 0;
    for (;;) {
        int ch = getch();
        if (ch == 'q' || ch == 'Q')
            break;
        if (ch == 'm')
            sort_by_mem = 1;
        if (ch == 'p')
            sort_by_mem = 0;
        pthread_mutex_lock(&st->lock);
        uint64_t seq = st->snap.seq;
        if (seq > seen || ch == 'm' || ch == 'p' || ch == KEY_RESIZE)
            *copy = st->snap;
        pthread_mutex_unlock(&st->lock);
        if (seq > seen || ch == 'm' || ch == 'p' || ch == KEY_RESIZE) {
            draw(st, copy, utf8);
            if (seq > seen && seq >= 2 && count > 0 && ++drawn >= count)
                break;
            seen = seq;
        }
    }
    endwin();
}

int gk_tool_top(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, top_usage))
        return GK_TOOL_OK;
    top_state *st = calloc(1, sizeof *st);
    snapshot *copy = calloc(1, sizeof *copy);
    if (!st || !copy) {
        free(st);
        free(copy);
        gk_tool_error("out of memory");
        return GK_TOOL_FAIL;
    }
    st->interval = 1;
    st->want_gpu = 1;
    long count = -1;
    int plain = 0, status = GK_TOOL_OK;
    if (parse_args(argc, argv, st, &count, &plain)) {
        status = GK_TOOL_USAGE;
        goto out_free;
    }
    setlocale(LC_ALL, "");
    st->prev = calloc(1, sizeof *st->prev);
    st->cur = calloc(1, sizeof *st->cur);
    int rc = st->prev && st->cur ? gk_host_open(NULL, &st->host) : -ENOMEM;
    if (rc) {
        gk_tool_error("cannot read the host (%s): %s", rc == -ENOMEM ? "memory" : "/proc",
                      gk_strerror(rc));
        status = GK_TOOL_FAIL;
        goto out_free;
    }
    if (st->want_gpu) {
        gk_nvml_info info;
        if (gk_nvml_open(NULL, &st->nvml, &info) != 0)
            snprintf(st->gpu_reason, sizeof st->gpu_reason, "%s", info.reason);
    } else {
        snprintf(st->gpu_reason, sizeof st->gpu_reason, "turned off (--no-gpu)");
    }
    pthread_mutex_init(&st->lock, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, sampler_main, st) != 0) {
        gk_tool_error("cannot start the sampler thread");
        status = GK_TOOL_FAIL;
        goto out_lock;
    }
    if (plain || !isatty(STDOUT_FILENO))
        run_plain(st, count, copy);
    else
        run_curses(st, count, copy);
    atomic_store(&st->stop, 1);
    pthread_join(th, NULL);
out_lock:
    pthread_mutex_destroy(&st->lock);
    gk_nvml_close(st->nvml);
    gk_host_close(st->host);
out_free:
    free(st->prev);
    free(st->cur);
    free(st);
    free(copy);
    return status;
}
