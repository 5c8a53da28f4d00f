/* The NVML reader against a real driver: every GPU answers its identity and the basic metrics
 * with plausible values, and a monitor tick publishes them. Exits 77 (skipped) without a driver. */
/* gk-labels: gpu */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

static gk_nvml *nvml;

static void test_devices(void **state)
{
    (void)state;
    assert_true(gk_nvml_device_count(nvml) >= 1);
    for (unsigned d = 0; d < gk_nvml_device_count(nvml); d++) {
        gk_gpu_sample s;
        GK_ASSERT_OK(gk_nvml_sample(nvml, d, GK_TIER_FAST | GK_TIER_SLOW, &s));
        assert_true(s.name[0] != '\0');
        assert_true(strncmp(s.uuid, "GPU-", 4) == 0 || strncmp(s.uuid, "MIG-", 4) == 0);
        assert_true((s.valid >> GK_GPU_MEMORY) & 1u);
        assert_int_equal(s.memory_v2, 1); /* drivers since 515 take the 0x02000028 version */
        assert_true(s.memory_total > 0 && s.memory_used <= s.memory_total);
        if ((s.valid >> GK_GPU_TEMPERATURE) & 1u)
            assert_true(s.temperature_celsius > 0 && s.temperature_celsius < 120);
        if ((s.valid >> GK_GPU_POWER) & 1u)
            assert_true(s.power_watts > 0 && s.power_watts < 2000);
        if ((s.valid >> GK_GPU_CLOCK_SM) & 1u)
            assert_true(s.clock_sm_hz > 1e7 && s.clock_sm_hz < 1e10);
        if ((s.valid >> GK_GPU_UTILIZATION) & 1u)
            assert_true(s.utilization_gpu >= 0 && s.utilization_gpu <= 1);
    }
}

static void test_monitor_tick(void **state)
{
    (void)state;
    gk_metrics *reg = NULL;
    GK_ASSERT_OK(gk_metrics_create(NULL, &reg));
    gk_monitor_config cfg;
    gk_monitor_config_default(&cfg);
    cfg.metrics = reg;
    cfg.gpu = GK_MONITOR_GPU_REQUIRE;
    gk_monitor *m = NULL;
    GK_ASSERT_OK(gk_monitor_create(&cfg, &m));
    GK_ASSERT_OK(gk_monitor_tick(m));
    char *text = NULL;
    size_t len;
    GK_ASSERT_OK(gk_metrics_render(reg, GK_METRICS_PROMETHEUS, &text, &len));
    GK_ASSERT_CONTAINS(text, "gpukit_gpu_memory_total_bytes{gpu=\"0\"");
    GK_ASSERT_CONTAINS(text, "gpukit_nvml_up 1\n");
    free(text);
    gk_monitor_destroy(m);
    gk_metrics_destroy(reg);
}

int main(void)
{
    gk_nvml_info info;
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    if (gk_nvml_open(&cfg, &nvml, &info) != 0) {
        printf("skipped: %s\n", info.reason);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_monitor_tick),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    gk_nvml_close(nvml);
    return rc;
}
