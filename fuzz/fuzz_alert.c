/* Fuzz target: alert rules ("gpukit_gpu_temperature_celsius{gpu=\"0\"} > 85 for 5m"), parsed by
 * gk_monitor_add_alert on a monitor that reads nothing, then evaluated by one tick. */
#include <string.h>

#include "fuzz.h"
#include "gpukit/monitor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char rule[512], err[300];
    gk_fuzz_cstr(rule, sizeof rule, data, size);
    gk_metrics *reg = NULL;
    if (gk_metrics_create(NULL, &reg) != 0)
        return 0;
    gk_monitor_config cfg;
    gk_monitor_config_default(&cfg);
    cfg.host = 0;
    cfg.gpu = GK_MONITOR_GPU_OFF;
    cfg.metrics = reg;
    cfg.logger.level = GK_LOG_OFF;
    gk_monitor *m = NULL;
    if (gk_monitor_create(&cfg, &m) == 0) {
        int rc = gk_monitor_add_alert(m, "fuzz_rule", rule, err, sizeof err);
        if (rc == GK_ESYNTAX && (err[0] == '\0' || !memchr(err, 0, sizeof err)))
            __builtin_trap(); /* every refusal says why */
        if (rc == 0 && gk_monitor_tick(m) != 0)
            __builtin_trap();
        gk_monitor_destroy(m);
    }
    gk_metrics_destroy(reg);
    return 0;
}
