/* GPU check of the telemetry on a machine with an NVIDIA driver: prints what NVML answered for
 * every metric (or why not), the cost of a fast-tier, slow-tier and PCIe read per GPU and of a
 * whole monitor tick, and the gpukit_gpu_* lines of the Prometheus output, to be compared with
 * `nvidia-smi --query-gpu` run just before (scripts/gpu-check-monitor.sh). Exits 77 without a
 * driver. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpukit/metrics.h"
#include "gpukit/monitor.h"
#include "gpukit/telemetry.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_sample_us(gk_nvml *n, unsigned dev, unsigned tiers, int reps)
{
    double t[64];
    gk_gpu_sample s;
    for (int i = 0; i < reps; i++) {
        double t0 = now_us();
        gk_nvml_sample(n, dev, tiers, &s);
        t[i] = now_us() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    return t[reps / 2];
}

int main(void)
{
    gk_nvml *n = NULL;
    gk_nvml_info info;
    int rc = gk_nvml_open(NULL, &n, &info);
    if (rc) {
        printf("NVML unavailable: %s\n", info.reason);
        return 77;
    }
    printf("library=%s driver=%s nvml=%s cuda_driver=%d devices=%u\n", info.library,
           info.driver_version, info.nvml_version, info.cuda_driver_version, info.device_count);
    for (unsigned d = 0; d < gk_nvml_device_count(n); d++) {
        gk_gpu_sample s;
        rc = gk_nvml_sample(n, d, GK_TIER_FAST | GK_TIER_SLOW | GK_TIER_PCIE, &s);
        printf("\ngpu %u: rc=%d name=\"%s\" uuid=%s bus=%s lost=%d\n", s.index, rc, s.name, s.uuid,
               s.pci_bus_id, s.lost);
        printf("  memory total=%llu used=%llu free=%llu reserved=%llu v2=%d\n",
               (unsigned long long)s.memory_total, (unsigned long long)s.memory_used,
               (unsigned long long)s.memory_free, (unsigned long long)s.memory_reserved,
               s.memory_v2);
        printf("  util gpu=%.2f mem=%.2f temp=%.0f C power=%.3f W limit=%.3f W energy=%.3f J\n",
               s.utilization_gpu, s.utilization_memory, s.temperature_celsius, s.power_watts,
               s.power_limit_watts, s.energy_joules);
        printf("  clocks sm=%.0f mem=%.0f graphics=%.0f Hz events=0x%llx fan=%.2f\n", s.clock_sm_hz,
               s.clock_mem_hz, s.clock_graphics_hz, (unsigned long long)s.clock_event_reasons,
               s.fan_ratio);
        printf("  ecc corrected=%llu uncorrected=%llu pcie tx=%.0f rx=%.0f B/s mig=%u/%u nmig=%u\n",
               (unsigned long long)s.ecc_corrected, (unsigned long long)s.ecc_uncorrected,
               s.pcie_tx_bytes_per_second, s.pcie_rx_bytes_per_second, s.mig_current, s.mig_pending,
               s.nmig);
        printf("  processes=%u\n", s.processes_total);
        for (unsigned i = 0; i < s.nprocesses; i++)
            printf("    pid=%u mem=%llu gi=%u ci=%u\n", s.processes[i].pid,
                   (unsigned long long)s.processes[i].used_memory, s.processes[i].gpu_instance_id,
                   s.processes[i].compute_instance_id);
        for (int f = 0; f < GK_GPU_NFIELDS; f++) {
            char why[200];
            printf("  %-15s %s %s\n", gk_gpu_field_name((gk_gpu_field)f),
                   ((s.valid >> f) & 1u) ? "ok " : "-- ",
                   gk_nvml_field_reason(n, d, (gk_gpu_field)f, why, sizeof why));
        }
        printf("  cost: fast tier %.1f us, slow tier %.1f us, pcie %.1f us (medians)\n",
               median_sample_us(n, d, GK_TIER_FAST, 31), median_sample_us(n, d, GK_TIER_SLOW, 31),
               median_sample_us(n, d, GK_TIER_PCIE, 5));
    }
    printf("\nnvml errors: %llu\n", (unsigned long long)gk_nvml_error_count(n));
    gk_nvml_close(n);

    gk_metrics *reg = NULL;
    gk_metrics_create(NULL, &reg);
    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    mc.metrics = reg;
    mc.gpu = GK_MONITOR_GPU_REQUIRE;
    mc.slow_every = 1;
    gk_monitor *m = NULL;
    if (gk_monitor_create(&mc, &m) != 0) {
        printf("monitor: cannot create\n");
        return 1;
    }
    double t[21];
    for (int i = 0; i < 21; i++) {
        double t0 = now_us();
        gk_monitor_tick(m);
        t[i] = now_us() - t0;
    }
    qsort(t, 21, sizeof t[0], cmp);
    printf("monitor tick (GPU + host, all tiers but PCIe): median %.1f us, %zu series\n", t[10],
           gk_monitor_series_count(m));
    char *text = NULL;
    size_t len = 0;
    gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len);
    printf("\n--- gpukit_gpu_* lines ---\n");
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, "gpukit_gpu_", 11) == 0)
            printf("%.*s\n", (int)(nl ? nl - line : (long)strlen(line)), line);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
    return 0;
}
