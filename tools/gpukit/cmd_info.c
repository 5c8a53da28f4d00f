/* gpukit info: which backends work (and why not), the devices, the driver and the host, as text
 * or JSON; --settings lists every setting with its variable, flag and current value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

static const char info_usage[] =
    "usage: gpukit info [--device SPEC] [--json] [--settings]\n"
    "\n"
    "Shows the backends gpukit can use and why any is unavailable, the devices (name, total and\n"
    "free memory, compute capability, driver version), live GPU values read through NVML\n"
    "(memory, utilization, temperature, power, clocks) and the host (CPU model, cores, memory).\n"
    "\n"
    "  --device SPEC  describe only this device (auto, host, cuda:N, sim:key=value,...)\n"
    "  --json         one JSON object instead of text\n"
    "  --settings     list every setting: name, environment variable, flag, value\n"
    "  --help         this text\n"
    "  --version      gpukit's version\n"
    "\n"
    "Exits 0 when the information could be gathered, even without a GPU; 1 when --device names\n"
    "a device that cannot be opened; 2 on a usage error.\n";

#define MAX_DEVICES 16

typedef struct dev_row {
    gk_device_props props;
    size_t free_bytes, total_bytes;
    int mem_ok;
} dev_row;

typedef struct info {
    dev_row devs[MAX_DEVICES];
    int ndevs;
    gk_nvml_info nvml;
    gk_gpu_sample gpus[MAX_DEVICES]; /* live values read through NVML */
    int ngpus;
    int cuda_ok;
    char cuda_reason[512];
    char host_cpu[128];
    long cores;
    size_t host_free, host_total;
} info;

static void describe(gk_device *dev, dev_row *row)
{
    memset(row, 0, sizeof *row);
    gk_device_get_props(dev, &row->props);
    row->mem_ok = gk_device_mem_info(dev, &row->free_bytes, &row->total_bytes) == 0;
}

/* Opens cuda:0, cuda:1, ... until one fails; records why cuda:0 failed. */
static void gather_cuda(info *in)
{
    for (int i = 0; i < MAX_DEVICES && in->ndevs < MAX_DEVICES; i++) {
        char spec[32];
        gk_device *dev = NULL;
        snprintf(spec, sizeof spec, "cuda:%d", i);
        int rc = gk_device_open(spec, &dev);
        if (rc) {
            if (i == 0)
                snprintf(in->cuda_reason, sizeof in->cuda_reason, "%s", gk_last_error());
            break;
        }
        in->cuda_ok = 1;
        describe(dev, &in->devs[in->ndevs++]);
        gk_device_close(dev);
    }
}

/* Opens NVML (telemetry) and reads the fast and slow tiers of every GPU once. */
static void gather_nvml(info *in)
{
    gk_nvml *n = NULL;
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    (void)gk_nvml_config_from_env(&cfg); /* a bad GK_LOG was already reported by main */
    cfg.logger.level = GK_LOG_OFF;       /* the reason is shown below instead */
    if (gk_nvml_open(&cfg, &n, &in->nvml) != 0)
        return;
    unsigned count = gk_nvml_device_count(n);
    for (unsigned i = 0; i < count && in->ngpus < MAX_DEVICES; i++) {
        if (gk_nvml_sample(n, i, GK_TIER_FAST | GK_TIER_SLOW, &in->gpus[in->ngpus]) == 0 ||
            in->gpus[in->ngpus].lost)
            in->ngpus++;
    }
    gk_nvml_close(n);
}

static int has(const gk_gpu_sample *g, gk_gpu_field f)
{
    return (g->valid >> f) & 1u;
}

static void print_gpu_text(const gk_gpu_sample *g)
{
    char a[32], b[32];
    printf("  gpu %u: %s  %s  %s\n", g->index, g->name, g->uuid, g->pci_bus_id);
    if (g->lost) {
        printf("    lost     the device stopped answering (GPU_IS_LOST)\n");
        return;
    }
    if (has(g, GK_GPU_MEMORY))
        printf("    memory   %s used of %s\n", gk_format_size(g->memory_used, a, sizeof a),
               gk_format_size(g->memory_total, b, sizeof b));
    if (has(g, GK_GPU_UTILIZATION))
        printf("    busy     %.0f%% GPU, %.0f%% memory\n", 100 * g->utilization_gpu,
               100 * g->utilization_memory);
    if (has(g, GK_GPU_TEMPERATURE))
        printf("    temp     %.0f C\n", g->temperature_celsius);
    if (has(g, GK_GPU_POWER))
        printf("    power    %.0f W%s", g->power_watts, has(g, GK_GPU_POWER_LIMIT) ? "" : "\n");
    if (has(g, GK_GPU_POWER) && has(g, GK_GPU_POWER_LIMIT))
        printf(" of %.0f W limit\n", g->power_limit_watts);
    if (has(g, GK_GPU_CLOCK_SM))
        printf("    clocks   SM %.0f MHz, memory %.0f MHz\n", g->clock_sm_hz / 1e6,
               g->clock_mem_hz / 1e6);
    if (has(g, GK_GPU_PROCESSES))
        printf("    procs    %u compute process%s\n", g->processes_total,
               g->processes_total == 1 ? "" : "es");
}

static void gather_host(info *in)
{
    gk_device *dev = NULL;
    in->cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (gk_device_open("host", &dev) == 0) {
        dev_row row;
        describe(dev, &row);
        snprintf(in->host_cpu, sizeof in->host_cpu, "%s", row.props.name);
        in->host_free = row.free_bytes;
        in->host_total = row.total_bytes;
        gk_device_close(dev);
    }
}

static void print_text(const info *in, int only_device)
{
    char a[32], b[32];
    printf("gpukit %s\n\n", gk_version_string());
    if (!only_device) {
        printf("backends:\n");
        printf("  host   usable\n");
        printf("  sim    usable (simulated GPU for tests and planning)\n");
        if (in->cuda_ok)
            printf("  cuda   usable (%d device%s)\n", in->ndevs, in->ndevs == 1 ? "" : "s");
        else
            printf("  cuda   unavailable: %s\n", in->cuda_reason);
        if (in->nvml.available)
            printf("  nvml   usable (driver %s, %u GPU%s): GPU metrics are on\n",
                   in->nvml.driver_version, in->nvml.device_count,
                   in->nvml.device_count == 1 ? "" : "s");
        else
            printf("  nvml   unavailable: %s\n", in->nvml.reason);
        printf("\n");
    }
    if (in->ndevs == 0 && !only_device) {
        printf("devices: none: no NVIDIA driver or GPU was found; GPU features are off and the\n"
               "         host backend is used (gpukit run still records the host and processes)\n");
    } else {
        printf("devices:\n");
    }
    for (int i = 0; i < in->ndevs; i++) {
        const dev_row *r = &in->devs[i];
        printf("  %s: %s\n", r->props.spec, r->props.name);
        if (r->mem_ok)
            printf("    memory   %s total, %s free\n", gk_format_size(r->total_bytes, a, sizeof a),
                   gk_format_size(r->free_bytes, b, sizeof b));
        if (r->props.cc_major)
            printf("    compute  capability %d.%d, %d multiprocessors\n", r->props.cc_major,
                   r->props.cc_minor, r->props.multiprocessors);
        if (r->props.driver_version)
            printf("    driver   CUDA %d.%d\n", r->props.driver_version / 1000,
                   (r->props.driver_version % 1000) / 10);
        if (r->props.has_vm)
            printf("    vm       virtual memory API, %s granularity\n",
                   gk_format_size(r->props.vm_granularity, a, sizeof a));
    }
    if (in->ngpus) {
        printf("\ngpus (live, through NVML):\n");
        for (int i = 0; i < in->ngpus; i++)
            print_gpu_text(&in->gpus[i]);
    }
    if (!only_device) {
        printf("\nhost:\n");
        printf("  cpu      %s, %ld cores\n", in->host_cpu, in->cores);
        printf("  memory   %s total, %s available\n", gk_format_size(in->host_total, a, sizeof a),
               gk_format_size(in->host_free, b, sizeof b));
    }
}

static void json_str(const char *key, const char *value, int comma)
{
    printf("\"%s\":\"", key);
    gk_tool_json_escape(stdout, value);
    printf("\"%s", comma ? "," : "");
}

/* One GPU's live values; a metric the GPU cannot give is null, never 0. */
static void print_gpu_json(const gk_gpu_sample *g, int comma)
{
    printf("%s{\"index\":%u,", comma ? "," : "", g->index);
    json_str("name", g->name, 1);
    json_str("uuid", g->uuid, 1);
    json_str("pci_bus_id", g->pci_bus_id, 1);
    printf("\"lost\":%s", g->lost ? "true" : "false");
#define NUM(field, key, fmt, value)                                                                \
    do {                                                                                           \
        if (has(g, field))                                                                         \
            printf(",\"" key "\":" fmt, value);                                                    \
        else                                                                                       \
            printf(",\"" key "\":null");                                                           \
    } while (0)
    NUM(GK_GPU_MEMORY, "memory_used_bytes", "%llu", (unsigned long long)g->memory_used);
    NUM(GK_GPU_MEMORY, "memory_total_bytes", "%llu", (unsigned long long)g->memory_total);
    NUM(GK_GPU_UTILIZATION, "utilization_gpu_ratio", "%.2f", g->utilization_gpu);
    NUM(GK_GPU_UTILIZATION, "utilization_memory_ratio", "%.2f", g->utilization_memory);
    NUM(GK_GPU_TEMPERATURE, "temperature_celsius", "%.0f", g->temperature_celsius);
    NUM(GK_GPU_POWER, "power_watts", "%.1f", g->power_watts);
    NUM(GK_GPU_POWER_LIMIT, "power_limit_watts", "%.1f", g->power_limit_watts);
    NUM(GK_GPU_CLOCK_SM, "clock_sm_hz", "%.0f", g->clock_sm_hz);
    NUM(GK_GPU_CLOCK_MEM, "clock_mem_hz", "%.0f", g->clock_mem_hz);
    NUM(GK_GPU_PROCESSES, "processes", "%u", g->processes_total);
#undef NUM
    printf("}");
}

static void print_json(const info *in, int only_device)
{
    printf("{\"version\":\"%s\",", gk_version_string());
    if (!only_device) {
        printf("\"backends\":{\"host\":{\"usable\":true},\"sim\":{\"usable\":true},"
               "\"cuda\":{\"usable\":%s",
               in->cuda_ok ? "true" : "false");
        if (!in->cuda_ok) {
            printf(",");
            json_str("reason", in->cuda_reason, 0);
        }
        printf("},\"nvml\":{\"usable\":%s,", in->nvml.available ? "true" : "false");
        json_str("library", in->nvml.library, 1);
        json_str("reason", in->nvml.reason, 1);
        json_str("driver_version", in->nvml.driver_version, 0);
        printf(",\"gpu_count\":%u}},", in->nvml.device_count);
    }
    printf("\"devices\":[");
    for (int i = 0; i < in->ndevs; i++) {
        const dev_row *r = &in->devs[i];
        printf("%s{", i ? "," : "");
        json_str("spec", r->props.spec, 1);
        json_str("backend", r->props.backend_name, 1);
        json_str("name", r->props.name, 1);
        printf("\"index\":%d,\"total_memory_bytes\":%zu,\"free_memory_bytes\":%zu,"
               "\"compute_capability\":\"%d.%d\",\"multiprocessors\":%d,\"driver_version\":%d,"
               "\"vm\":%s,\"vm_granularity_bytes\":%zu}",
               r->props.index, r->total_bytes, r->free_bytes, r->props.cc_major, r->props.cc_minor,
               r->props.multiprocessors, r->props.driver_version,
               r->props.has_vm ? "true" : "false", r->props.vm_granularity);
    }
    printf("]");
    if (!only_device) {
        printf(",\"gpus\":[");
        for (int i = 0; i < in->ngpus; i++)
            print_gpu_json(&in->gpus[i], i > 0);
        printf("]");
    }
    if (!only_device) {
        printf(",\"host\":{");
        json_str("cpu", in->host_cpu, 1);
        printf("\"cores\":%ld,\"memory_total_bytes\":%zu,\"memory_available_bytes\":%zu}",
               in->cores, in->host_total, in->host_free);
    }
    printf("}\n");
}

static int print_settings(int json)
{
    gk_options o;
    char err[256], value[GK_OPT_STRING_MAX];
    gk_options_default(&o);
    int rc = gk_options_from_env(&o, err, sizeof err);
    if (rc) {
        gk_tool_error("%s", err);
        return GK_TOOL_FAIL;
    }
    if (json)
        printf("[");
    else
        printf("%-14s %-18s %-16s %-14s %s\n", "setting", "variable", "flag", "value", "meaning");
    for (size_t i = 0; i < gk_option_count(); i++) {
        const gk_option_info *r = gk_option_at(i);
        gk_options_format(&o, i, value, sizeof value);
        if (json) {
            printf("%s{", i ? "," : "");
            json_str("name", r->name, 1);
            json_str("env", r->env, 1);
            json_str("flag", r->flag, 1);
            json_str("value", value, 1);
            json_str("default", r->default_value, 1);
            json_str("help", r->help, 0);
            printf("}");
        } else {
            printf("%-14s %-18s %-16s %-14s %s\n", r->name, r->env, r->flag, value, r->help);
        }
    }
    if (json)
        printf("]\n");
    return GK_TOOL_OK;
}

int gk_tool_info(int argc, char **argv)
{
    const char *spec = NULL;
    int json = 0, settings = 0;
    if (gk_tool_help_or_version(argc, argv, info_usage))
        return GK_TOOL_OK;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--settings") == 0) {
            settings = 1;
        } else if (strcmp(argv[i], "--device") == 0 || strncmp(argv[i], "--device=", 9) == 0) {
            if (argv[i][8] == '=')
                spec = argv[i] + 9;
            else if (i + 1 < argc)
                spec = argv[++i];
            else {
                gk_tool_error("info: --device needs a spec (try --device cuda:0)");
                return GK_TOOL_USAGE;
            }
        } else {
            gk_tool_error("info: unknown option \"%s\" (see 'gpukit info --help')", argv[i]);
            return GK_TOOL_USAGE;
        }
    }
    if (settings)
        return print_settings(json);

    info *in = calloc(1, sizeof *in);
    if (!in) {
        gk_tool_error("info: out of memory");
        return GK_TOOL_FAIL;
    }
    int status = GK_TOOL_OK;
    if (spec) {
        gk_device *dev = NULL;
        if (gk_device_open(spec, &dev) != 0) {
            gk_tool_error("info: %s", gk_last_error());
            status = GK_TOOL_FAIL;
            goto out_free;
        }
        describe(dev, &in->devs[in->ndevs++]);
        gk_device_close(dev);
    } else {
        gather_cuda(in);
        gather_nvml(in);
        gather_host(in);
    }
    if (json)
        print_json(in, spec != NULL);
    else
        print_text(in, spec != NULL);
out_free:
    free(in);
    return status;
}
