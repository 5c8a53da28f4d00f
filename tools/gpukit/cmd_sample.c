/* gpukit sample: one line per GPU per sample (like nvidia-smi --query-gpu and dmon), with the
 * host's CPU, memory and load on each line; one host-only line per sample without a GPU. Output
 * as an aligned table, CSV (base units, header first) or JSON Lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

static const char sample_usage[] =
    "usage: gpukit sample [--count N] [--interval S] [--csv | --json]\n\n"
    "Prints one line per GPU per sample (one host-only line without a GPU).\n\n"
    "  --count N      samples to take (default 1; 0 means until interrupted)\n"
    "  --interval S   time between samples (default 1s)\n"
    "  --csv          comma-separated values with a header, base units (bytes, ratios, W, Hz)\n"
    "  --json         one JSON object per line, the same fields; null where unavailable\n";

enum { FMT_TABLE, FMT_CSV, FMT_JSON };

/* The columns, in order: name and whether it is text. */
static const char *const columns[] = {"timestamp",
                                      "gpu",
                                      "name",
                                      "uuid",
                                      "utilization_gpu_ratio",
                                      "utilization_memory_ratio",
                                      "memory_used_bytes",
                                      "memory_total_bytes",
                                      "temperature_celsius",
                                      "power_watts",
                                      "power_limit_watts",
                                      "clock_sm_hertz",
                                      "clock_mem_hertz",
                                      "clock_event_reasons",
                                      "cpu_busy_ratio",
                                      "host_memory_available_bytes",
                                      "host_memory_total_bytes",
                                      "load1"};
#define NCOLS (sizeof columns / sizeof columns[0])

typedef struct cell {
    int present;
    int text;
    char s[128];
    double v;
} cell;

static void set_num(cell *c, double v)
{
    c->present = isfinite(v);
    c->text = 0;
    c->v = v;
}

static void set_text(cell *c, const char *s)
{
    c->present = 1;
    c->text = 1;
    snprintf(c->s, sizeof c->s, "%s", s);
}

static void format_number(double v, char *buf, size_t len)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.6g", v);
}

static void csv_field(const char *s)
{
    if (strpbrk(s, ",\"\n")) {
        putchar('"');
        for (; *s; s++) {
            if (*s == '"')
                putchar('"');
            putchar(*s);
        }
        putchar('"');
    } else {
        fputs(s, stdout);
    }
}

/* One right-aligned table cell, scaled; "-" when absent. */
static void table_cell(const cell *c, int width, int prec, double scale)
{
    if (c->present)
        printf(" %*.*f", width, prec, c->v * scale);
    else
        printf(" %*s", width, "-");
}

static void print_row(const cell *row, int fmt)
{
    char num[64];
    if (fmt == FMT_JSON) {
        fputs("{\"schema_version\":1", stdout);
        for (size_t i = 0; i < NCOLS; i++) {
            printf(",\"%s\":", columns[i]);
            if (!row[i].present) {
                fputs("null", stdout);
            } else if (row[i].text) {
                putchar('"');
                gk_tool_json_escape(stdout, row[i].s);
                putchar('"');
            } else {
                format_number(row[i].v, num, sizeof num);
                fputs(num, stdout);
            }
        }
        fputs("}\n", stdout);
        return;
    }
    if (fmt == FMT_CSV) {
        for (size_t i = 0; i < NCOLS; i++) {
            if (i)
                putchar(',');
            if (row[i].present && row[i].text) {
                csv_field(row[i].s);
            } else if (row[i].present) {
                format_number(row[i].v, num, sizeof num);
                fputs(num, stdout);
            }
        }
        putchar('\n');
        return;
    }
    /* Table: time gpu util% mem% temp pwr sm_clk cpu% avail_GiB load1 */
    char t[16] = "";
    if (row[0].present)
        snprintf(t, sizeof t, "%.8s", row[0].s + 11);
    printf("%-9s", t);
    if (row[1].present)
        printf("%4.0f", row[1].v);
    else
        printf("%4s", "-");
    table_cell(&row[4], 5, 0, 100);
    table_cell(&row[5], 5, 0, 100);
    table_cell(&row[8], 5, 0, 1);
    table_cell(&row[9], 7, 1, 1);
    table_cell(&row[11], 7, 0, 1e-6);
    table_cell(&row[14], 5, 1, 100);
    table_cell(&row[15], 8, 2, 1.0 / 1073741824.0);
    table_cell(&row[17], 6, 2, 1);
    putchar('\n');
}

static void print_header(int fmt)
{
    if (fmt == FMT_CSV) {
        for (size_t i = 0; i < NCOLS; i++)
            printf("%s%s", i ? "," : "", columns[i]);
        putchar('\n');
    } else if (fmt == FMT_TABLE) {
        printf("%-9s%4s %5s %5s %5s %7s %7s %5s %8s %6s\n", "# time", "gpu", "sm", "mem", "temp",
               "pwr", "sm_clk", "cpu", "avail", "load1");
        printf("%-9s%4s %5s %5s %5s %7s %7s %5s %8s %6s\n", "# UTC", "idx", "%", "%", "C", "W",
               "MHz", "%", "GiB", "");
    }
}

static double cpu_total(const gk_cpu_times *c)
{
    return c->user + c->nice + c->system + c->idle + c->iowait + c->irq + c->softirq + c->steal;
}

static void iso_time(int64_t t_ns, char *buf, size_t len)
{
    time_t s = (time_t)(t_ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)((t_ns / 1000000) % 1000));
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Fills the host columns from two host samples (CPU busy needs the difference). */
static void host_cells(cell *row, const gk_host_sample *prev, const gk_host_sample *cur)
{
    if ((cur->valid & GK_HOST_CPU) && (prev->valid & GK_HOST_CPU)) {
        double dt = cpu_total(&cur->cpu) - cpu_total(&prev->cpu);
        double didle = (cur->cpu.idle + cur->cpu.iowait) - (prev->cpu.idle + prev->cpu.iowait);
        if (dt > 0)
            set_num(&row[14], (dt - didle) / dt);
    }
    if (cur->valid & GK_HOST_MEMORY) {
        set_num(&row[15], (double)cur->mem_available);
        set_num(&row[16], (double)cur->mem_total);
    }
    if (cur->valid & GK_HOST_LOAD)
        set_num(&row[17], cur->load1);
}

static void gpu_cells(cell *row, const gk_gpu_sample *g)
{
    set_num(&row[1], g->index);
    set_text(&row[2], g->name);
    set_text(&row[3], g->uuid);
#define HAS(f) ((g->valid >> (f)) & 1u)
    if (HAS(GK_GPU_UTILIZATION)) {
        set_num(&row[4], g->utilization_gpu);
        set_num(&row[5], g->utilization_memory);
    }
    if (HAS(GK_GPU_MEMORY)) {
        set_num(&row[6], (double)g->memory_used);
        set_num(&row[7], (double)g->memory_total);
    }
    if (HAS(GK_GPU_TEMPERATURE))
        set_num(&row[8], g->temperature_celsius);
    if (HAS(GK_GPU_POWER))
        set_num(&row[9], g->power_watts);
    if (HAS(GK_GPU_POWER_LIMIT))
        set_num(&row[10], g->power_limit_watts);
    if (HAS(GK_GPU_CLOCK_SM))
        set_num(&row[11], g->clock_sm_hz);
    if (HAS(GK_GPU_CLOCK_MEM))
        set_num(&row[12], g->clock_mem_hz);
    if (HAS(GK_GPU_CLOCK_EVENTS))
        set_num(&row[13], (double)g->clock_event_reasons);
#undef HAS
}

int gk_tool_sample(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, sample_usage))
        return GK_TOOL_OK;
    long long count = 1;
    double interval = 1.0;
    int fmt = FMT_TABLE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--csv") == 0 || strcmp(argv[i], "--json") == 0) {
            int want = argv[i][2] == 'c' ? FMT_CSV : FMT_JSON;
            if (fmt != FMT_TABLE && fmt != want) {
                gk_tool_error("sample: choose one of --csv and --json");
                return GK_TOOL_USAGE;
            }
            fmt = want;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            if (gk_parse_int(argv[++i], &count) != 0 || count < 0) {
                gk_tool_error("sample: --count \"%s\" is not a count (try --count 10; 0 runs "
                              "until interrupted)",
                              argv[i]);
                return GK_TOOL_USAGE;
            }
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (gk_parse_duration(argv[++i], &interval) != 0 || !(interval >= 0.001)) {
                gk_tool_error("sample: --interval \"%s\" is not a duration (try 1s or 200ms)",
                              argv[i]);
                return GK_TOOL_USAGE;
            }
        } else {
            gk_tool_error("sample: unknown option or missing value \"%s\" (see 'gpukit sample "
                          "--help')",
                          argv[i]);
            return GK_TOOL_USAGE;
        }
    }
    gk_nvml *nvml = NULL;
    gk_nvml_info info;
    if (gk_nvml_open(NULL, &nvml, &info) != 0)
        fprintf(stderr, "gpukit: %s\n", info.reason);
    gk_host *host = NULL;
    int rc = gk_host_open(NULL, &host);
    if (rc) {
        gk_tool_error("sample: cannot read %s: %s (set GK_PROC_ROOT to a proc tree)",
                      getenv("GK_PROC_ROOT") && *getenv("GK_PROC_ROOT") ? getenv("GK_PROC_ROOT")
                                                                        : "/proc",
                      gk_strerror(rc));
        gk_nvml_close(nvml);
        return GK_TOOL_FAIL;
    }
    int status = GK_TOOL_OK;
    gk_host_sample *hs = malloc(2 * sizeof *hs);
    gk_gpu_sample *g = malloc(sizeof *g);
    if (!hs || !g) {
        gk_tool_error("sample: out of memory");
        status = GK_TOOL_FAIL;
        goto out_free;
    }
    unsigned what = GK_HOST_CPU | GK_HOST_MEMORY | GK_HOST_LOAD;
    gk_host_sample_read(host, what, &hs[0]); /* baseline for the CPU busy ratio */
    sleep_seconds(interval < 0.1 ? interval : 0.1);
    print_header(fmt);
    unsigned ndev = gk_nvml_device_count(nvml);
    for (long long n = 0; count == 0 || n < count; n++) {
        if (n > 0)
            sleep_seconds(interval);
        gk_host_sample *prev = &hs[n % 2], *cur = &hs[(n + 1) % 2];
        gk_host_sample_read(host, what, cur);
        for (unsigned d = 0; d < (ndev ? ndev : 1); d++) {
            cell row[NCOLS];
            memset(row, 0, sizeof row);
            char ts[40];
            int64_t t = cur->t_ns;
            if (ndev && gk_nvml_sample(nvml, d, GK_TIER_FAST | GK_TIER_SLOW, g) != GK_EDEVLOST) {
                gpu_cells(row, g);
                t = g->t_ns;
            } else if (ndev) {
                gpu_cells(row, g); /* lost: identity only */
            }
            iso_time(t, ts, sizeof ts);
            set_text(&row[0], ts);
            host_cells(row, prev, cur);
            print_row(row, fmt);
        }
        fflush(stdout);
    }
out_free:
    free(hs);
    free(g);
    gk_host_close(host);
    gk_nvml_close(nvml);
    return status;
}
