/* Tests of the NVML reader against the fake libnvidia-ml.so.1: loading and its failures, values
 * and units, newest-first fallbacks, NOT_SUPPORTED disabling a metric for good, transient
 * errors, GPU_IS_LOST, process lists, tiers, and the struct-version check of memory _v2. */
/* gk-labels: unit */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "gk_test.h"
#include "telemetry/nvml_api.h"

typedef struct fake_api {
    void *h;
    void (*reset)(void);
    void (*set_devices)(unsigned);
    void (*set_init_error)(int);
    int (*set)(unsigned, const char *, unsigned long long, unsigned long long);
    void (*inject)(const char *, int, int, int);
    unsigned (*calls)(const char *);
    int (*initialized)(void);
} fake_api;

static fake_api fake, fake_old;

static void load_fake(fake_api *f, const char *path)
{
    f->h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!f->h)
        fail_msg("cannot load %s: %s", path, dlerror());
    *(void **)&f->reset = dlsym(f->h, "fakenvml_reset");
    *(void **)&f->set_devices = dlsym(f->h, "fakenvml_set_devices");
    *(void **)&f->set_init_error = dlsym(f->h, "fakenvml_set_init_error");
    *(void **)&f->set = dlsym(f->h, "fakenvml_set");
    *(void **)&f->inject = dlsym(f->h, "fakenvml_fail");
    *(void **)&f->calls = dlsym(f->h, "fakenvml_calls");
    *(void **)&f->initialized = dlsym(f->h, "fakenvml_initialized");
    assert_non_null(f->reset);
    assert_non_null(f->initialized);
}

static int setup(void **state)
{
    (void)state;
    fake.reset();
    fake_old.reset();
    return 0;
}

static gk_nvml *open_lib(const char *path)
{
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    cfg.library = path;
    cfg.logger.level = GK_LOG_OFF;
    gk_nvml *n = NULL;
    gk_nvml_info info;
    int rc = gk_nvml_open(&cfg, &n, &info);
    if (rc != 0)
        fail_msg("gk_nvml_open(%s): %s: %s", path, gk_err_name(rc), info.reason);
    return n;
}

static unsigned all_tiers(void)
{
    return GK_TIER_FAST | GK_TIER_SLOW | GK_TIER_PCIE;
}

#define VALID(s, f) (((s).valid >> (f)) & 1u)

static void test_missing_library(void **state)
{
    (void)state;
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    cfg.library = "/nonexistent/libnvidia-ml.so.1";
    gk_nvml *n = (gk_nvml *)&cfg; /* must be reset to NULL */
    gk_nvml_info info;
    GK_ASSERT_ERR(gk_nvml_open(&cfg, &n, &info), GK_ENOGPU);
    assert_null(n);
    assert_int_equal(info.available, 0);
    GK_ASSERT_CONTAINS(info.reason, "/nonexistent/libnvidia-ml.so.1 not found");
    GK_ASSERT_CONTAINS(info.reason, "GPU metrics are off");
    assert_null(strchr(info.reason, '\n'));
    /* The probe gives the same answer. */
    GK_ASSERT_ERR(gk_nvml_probe(&cfg, &info), GK_ENOGPU);
    GK_ASSERT_CONTAINS(info.reason, "not found");
    GK_ASSERT_ERR(gk_nvml_open(&cfg, NULL, &info), -EINVAL);
    /* GK_NVML_LIBRARY reaches the default config. */
    gk_test_setenv("GK_NVML_LIBRARY", "/nonexistent/from-env.so");
    GK_ASSERT_ERR(gk_nvml_probe(NULL, &info), GK_ENOGPU);
    GK_ASSERT_CONTAINS(info.library, "from-env.so");
    gk_test_setenv("GK_NVML_LIBRARY", NULL);
}

static void test_library_without_symbols(void **state)
{
    (void)state;
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    cfg.library = gk_test_fake_cuda(); /* a library, but not NVML */
    gk_nvml_info info;
    gk_nvml *n = NULL;
    GK_ASSERT_ERR(gk_nvml_open(&cfg, &n, &info), GK_ENOGPU);
    GK_ASSERT_CONTAINS(info.reason, "lacks nvmlInit");
}

static void test_init_failures(void **state)
{
    (void)state;
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    cfg.library = GK_TEST_FAKE_NVML;
    gk_nvml_info info;
    gk_nvml *n = NULL;
    fake.set_init_error(GK__NVML_ERROR_DRIVER_NOT_LOADED);
    GK_ASSERT_ERR(gk_nvml_open(&cfg, &n, &info), GK_ENOGPU);
    GK_ASSERT_CONTAINS(info.reason, "Driver Not Loaded");
    GK_ASSERT_CONTAINS(info.reason, "kernel driver is not loaded");
    fake.set_init_error(GK__NVML_ERROR_NO_PERMISSION);
    GK_ASSERT_ERR(gk_nvml_open(&cfg, &n, &info), GK_ENOGPU);
    GK_ASSERT_CONTAINS(info.reason, "Insufficient Permissions (4)");
    fake.set_init_error(0);
    fake.inject("nvmlDeviceGetCount_v2", -1, GK__NVML_ERROR_UNKNOWN, 1);
    GK_ASSERT_ERR(gk_nvml_open(&cfg, &n, &info), GK_ENOGPU);
    GK_ASSERT_CONTAINS(info.reason, "nvmlDeviceGetCount failed: Unknown Error (999)");
    assert_int_equal(fake.initialized(), 0); /* shut down again after the failure */
    /* Version queries failing is not fatal. */
    fake.inject("nvmlSystemGetDriverVersion", -1, GK__NVML_ERROR_UNKNOWN, 1);
    fake.inject("nvmlSystemGetCudaDriverVersion", -1, GK__NVML_ERROR_UNKNOWN, 1);
    fake.inject("nvmlSystemGetNVMLVersion", -1, GK__NVML_ERROR_UNKNOWN, 1);
    GK_ASSERT_OK(gk_nvml_open(&cfg, &n, &info));
    assert_string_equal(info.driver_version, "");
    assert_int_equal(info.cuda_driver_version, 0);
    gk_nvml_close(n);
    assert_int_equal(fake.initialized(), 0);
}

static void test_values_and_units(void **state)
{
    (void)state;
    gk_nvml_info info;
    gk_nvml_config fakecfg;
    gk_nvml_config_default(&fakecfg);
    fakecfg.library = GK_TEST_FAKE_NVML;
    GK_ASSERT_OK(gk_nvml_probe(&fakecfg, &info));
    assert_int_equal(info.available, 1);
    assert_string_equal(info.driver_version, "550.54.15");
    assert_string_equal(info.nvml_version, "12.550.54.15");
    assert_int_equal(info.cuda_driver_version, 12040);
    assert_int_equal(info.device_count, 2);
    assert_int_equal(fake.initialized(), 0);

    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    assert_int_equal(gk_nvml_device_count(n), 2);
    fake.set(1, "energy_mj", 5000000, 250000);
    gk_gpu_sample s;
    GK_ASSERT_OK(gk_nvml_sample(n, 1, all_tiers(), &s));
    assert_int_equal(s.index, 1);
    assert_string_equal(s.name, "Fake GPU 1");
    assert_string_equal(s.uuid, "GPU-fake-0001");
    assert_string_equal(s.pci_bus_id, "00000000:08:00.0");
    assert_int_equal(s.lost, 0);
    for (int f = 0; f < GK_GPU_NFIELDS; f++) {
        if (!VALID(s, f))
            fail_msg("field %s not valid", gk_gpu_field_name((gk_gpu_field)f));
    }
    assert_int_equal(s.memory_v2, 1);
    assert_true(s.memory_total == 40ULL << 30);
    assert_true(s.memory_used == 2ULL << 30); /* v2: the reserve is not "used" */
    assert_true(s.memory_reserved == 512ULL << 20);
    assert_true(s.utilization_gpu == 0.51 && s.utilization_memory == 0.20);
    assert_true(s.temperature_celsius == 61.0);
    assert_true(s.power_watts == 250.5 && s.power_limit_watts == 400.0);
    assert_true(s.energy_joules == 5000.0);
    assert_true(s.clock_sm_hz == 1410e6 && s.clock_mem_hz == 1215e6 &&
                s.clock_graphics_hz == 1400e6);
    assert_true(s.fan_ratio == 0.30);
    assert_true(s.ecc_corrected == 2 && s.ecc_uncorrected == 0);
    assert_true(s.pcie_tx_bytes_per_second == 1000 * 1024.0);
    assert_true(s.pcie_rx_bytes_per_second == 2000 * 1024.0);
    assert_int_equal(s.nprocesses, 2);
    assert_int_equal(s.processes[1].pid, 1001);
    assert_true(s.processes[1].used_memory == 2ULL << 20);
    assert_int_equal(s.processes[0].has_memory, 1);
    assert_true(s.processes[0].gpu_instance_id == 0xFFFFFFFFu);
    assert_true(s.t_ns > 0);
    /* Scripted steps: energy advances 250 J per read. */
    GK_ASSERT_OK(gk_nvml_sample(n, 1, GK_TIER_SLOW, &s));
    assert_true(s.energy_joules == 5250.0);
    assert_false(VALID(s, GK_GPU_POWER)); /* fast tier not asked */
    assert_int_equal(gk_nvml_error_count(n), 0);
    GK_ASSERT_ERR(gk_nvml_sample(n, 2, all_tiers(), &s), -ERANGE);
    GK_ASSERT_ERR((gk_nvml_sample)(n, 0, all_tiers(), NULL, 0), -EINVAL);
    GK_ASSERT_ERR(gk_nvml_sample(NULL, 0, all_tiers(), &s), -EINVAL);
    gk_nvml_info live;
    gk_nvml_get_info(n, &live);
    assert_int_equal(live.device_count, 2);
    gk_nvml_close(n);
    gk_nvml_close(NULL);
}

static void test_memory_v2_version_check(void **state)
{
    (void)state;
    /* The fake refuses a wrong version like the real library: nvtop's "version = 2" bug. */
    gk__nvmlReturn_t (*mem2)(gk__nvmlDevice_t, gk__nvmlMemory_v2_t *);
    gk__nvmlReturn_t (*handle)(unsigned, gk__nvmlDevice_t *);
    gk__nvmlReturn_t (*init)(void);
    gk__nvmlReturn_t (*shutdown)(void);
    *(void **)&mem2 = dlsym(fake.h, "nvmlDeviceGetMemoryInfo_v2");
    *(void **)&handle = dlsym(fake.h, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&init = dlsym(fake.h, "nvmlInit_v2");
    *(void **)&shutdown = dlsym(fake.h, "nvmlShutdown");
    assert_int_equal(init(), 0);
    gk__nvmlDevice_t d;
    assert_int_equal(handle(0, &d), 0);
    gk__nvmlMemory_v2_t m = {.version = 2};
    assert_int_equal(mem2(d, &m), GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    m.version = GK__NVML_MEMORY_V2_VERSION;
    assert_int_equal(mem2(d, &m), 0);
    assert_int_equal(m.version, 0x02000028);
    assert_int_equal(shutdown(), 0);

    /* A refusal of _v2 falls back to v1 for good. */
    fake.reset();
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    fake.inject("nvmlDeviceGetMemoryInfo_v2", -1, GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH, 0);
    gk_gpu_sample s;
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_FAST, &s));
    assert_true(VALID(s, GK_GPU_MEMORY));
    assert_int_equal(s.memory_v2, 0);
    assert_true(s.memory_used == (1ULL << 30) + (512ULL << 20)); /* v1 counts the reserve */
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_FAST, &s));
    assert_int_equal(fake.calls("nvmlDeviceGetMemoryInfo_v2"), 1);
    assert_int_equal(fake.calls("nvmlDeviceGetMemoryInfo"), 2);
    gk_nvml_close(n);
}

static void test_old_driver_fallbacks(void **state)
{
    (void)state;
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML_OLD);
    fake_old.set(0, "events", 0x24, 0);
    gk_gpu_sample s;
    GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
    assert_true(VALID(s, GK_GPU_MEMORY) && VALID(s, GK_GPU_CLOCK_EVENTS) &&
                VALID(s, GK_GPU_PROCESSES));
    assert_int_equal(s.memory_v2, 0);
    assert_true(s.clock_event_reasons == 0x24);
    assert_int_equal(fake_old.calls("nvmlDeviceGetCurrentClocksThrottleReasons"), 1);
    assert_int_equal(s.nprocesses, 2);
    assert_int_equal(s.processes[0].pid, 1000);
    assert_true(s.processes[0].used_memory == 1ULL << 20);
    assert_true(s.processes[0].gpu_instance_id == 0xFFFFFFFFu);
    assert_int_equal(fake_old.calls("nvmlDeviceGetComputeRunningProcesses"), 1);
    assert_int_equal(gk_nvml_error_count(n), 0);
    gk_nvml_close(n);
}

static void test_runtime_fallbacks(void **state)
{
    (void)state;
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    fake.inject("nvmlDeviceGetCurrentClocksEventReasons", -1, GK__NVML_ERROR_FUNCTION_NOT_FOUND, 0);
    fake.inject("nvmlDeviceGetComputeRunningProcesses_v3", -1, GK__NVML_ERROR_NOT_SUPPORTED, 0);
    fake.inject("nvmlDeviceGetComputeRunningProcesses_v2", -1,
                GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH, 0);
    fake.set(0, "events", 0x8, 0);
    gk_gpu_sample s;
    for (int i = 0; i < 2; i++) {
        GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
        assert_true(VALID(s, GK_GPU_CLOCK_EVENTS) && s.clock_event_reasons == 0x8);
        assert_true(VALID(s, GK_GPU_PROCESSES) && s.nprocesses == 2);
        assert_true(s.processes[1].used_memory == 2ULL << 20);
    }
    assert_int_equal(fake.calls("nvmlDeviceGetCurrentClocksEventReasons"), 1);
    assert_int_equal(fake.calls("nvmlDeviceGetCurrentClocksThrottleReasons"), 2);
    assert_int_equal(fake.calls("nvmlDeviceGetComputeRunningProcesses_v3"), 1);
    assert_int_equal(fake.calls("nvmlDeviceGetComputeRunningProcesses_v2"), 1);
    assert_int_equal(fake.calls("nvmlDeviceGetComputeRunningProcesses"), 2);
    gk_nvml_error_stat st[8];
    size_t ns = gk_nvml_error_stats(n, st, 8);
    assert_int_equal(ns, 3);
    assert_string_equal(st[0].call, "nvmlDeviceGetCurrentClocksEventReasons");
    assert_int_equal(st[0].code, GK__NVML_ERROR_FUNCTION_NOT_FOUND);
    assert_int_equal(st[0].count, 1);
    gk_nvml_close(n);
}

/* Every metric: NOT_SUPPORTED from all the calls behind it disables it for good. */
static void test_not_supported_disables(void **state)
{
    (void)state;
    static const struct {
        gk_gpu_field field;
        const char *calls[3];
    } rows[] = {
        {GK_GPU_MEMORY, {"nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetMemoryInfo"}},
        {GK_GPU_UTILIZATION, {"nvmlDeviceGetUtilizationRates"}},
        {GK_GPU_TEMPERATURE, {"nvmlDeviceGetTemperature"}},
        {GK_GPU_POWER, {"nvmlDeviceGetPowerUsage"}},
        {GK_GPU_POWER_LIMIT, {"nvmlDeviceGetEnforcedPowerLimit"}},
        {GK_GPU_CLOCK_SM, {"nvmlDeviceGetClockInfo"}},
        {GK_GPU_CLOCK_EVENTS,
         {"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"}},
        {GK_GPU_FAN, {"nvmlDeviceGetFanSpeed"}},
        {GK_GPU_ENERGY, {"nvmlDeviceGetTotalEnergyConsumption"}},
        {GK_GPU_ECC, {"nvmlDeviceGetTotalEccErrors"}},
        {GK_GPU_PROCESSES,
         {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
          "nvmlDeviceGetComputeRunningProcesses"}},
        {GK_GPU_MIG, {"nvmlDeviceGetMigMode"}},
        {GK_GPU_PCIE, {"nvmlDeviceGetPcieThroughput"}},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        fake.reset();
        gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
        for (int c = 0; c < 3 && rows[r].calls[c]; c++)
            fake.inject(rows[r].calls[c], 0, GK__NVML_ERROR_NOT_SUPPORTED, 0);
        gk_gpu_sample s;
        GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
        gk_gpu_field f = rows[r].field;
        if (VALID(s, f))
            fail_msg("%s valid despite NOT_SUPPORTED", gk_gpu_field_name(f));
        assert_int_equal(gk_nvml_field_supported(n, 0, f), 0);
        assert_int_equal(gk_nvml_field_supported(n, 1, f), 1); /* the other GPU is unaffected */
        char why[200];
        GK_ASSERT_CONTAINS(gk_nvml_field_reason(n, 0, f, why, sizeof why), "Not Supported (3)");
        unsigned before = 0, after = 0;
        for (int c = 0; c < 3 && rows[r].calls[c]; c++)
            before += fake.calls(rows[r].calls[c]);
        GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
        for (int c = 0; c < 3 && rows[r].calls[c]; c++)
            after += fake.calls(rows[r].calls[c]);
        if (f == GK_GPU_CLOCK_SM) /* the same call serves the other two clocks */
            assert_int_equal(after, before);
        else if (after != before)
            fail_msg("%s asked again after NOT_SUPPORTED", gk_gpu_field_name(f));
        GK_ASSERT_OK(gk_nvml_sample(n, 1, all_tiers(), &s));
        assert_true(VALID(s, f));
        gk_nvml_close(n);
    }
}

/* A transient failure of each call: invalid once, valid again on the next sample. */
static void test_transient_errors(void **state)
{
    (void)state;
    static const struct {
        gk_gpu_field field;
        const char *call;
    } rows[] = {
        {GK_GPU_MEMORY, "nvmlDeviceGetMemoryInfo_v2"},
        {GK_GPU_UTILIZATION, "nvmlDeviceGetUtilizationRates"},
        {GK_GPU_TEMPERATURE, "nvmlDeviceGetTemperature"},
        {GK_GPU_POWER, "nvmlDeviceGetPowerUsage"},
        {GK_GPU_POWER_LIMIT, "nvmlDeviceGetEnforcedPowerLimit"},
        {GK_GPU_CLOCK_SM, "nvmlDeviceGetClockInfo"},
        {GK_GPU_CLOCK_EVENTS, "nvmlDeviceGetCurrentClocksEventReasons"},
        {GK_GPU_FAN, "nvmlDeviceGetFanSpeed"},
        {GK_GPU_ENERGY, "nvmlDeviceGetTotalEnergyConsumption"},
        {GK_GPU_ECC, "nvmlDeviceGetTotalEccErrors"},
        {GK_GPU_PROCESSES, "nvmlDeviceGetComputeRunningProcesses_v3"},
        {GK_GPU_MIG, "nvmlDeviceGetMigMode"},
        {GK_GPU_PCIE, "nvmlDeviceGetPcieThroughput"},
    };
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        uint64_t errs = gk_nvml_error_count(n);
        fake.inject(rows[r].call, 0, GK__NVML_ERROR_TIMEOUT, 1);
        gk_gpu_sample s;
        GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
        if (VALID(s, rows[r].field))
            fail_msg("%s valid despite a failure", rows[r].call);
        assert_int_equal(gk_nvml_error_count(n), errs + 1);
        char why[200];
        GK_ASSERT_CONTAINS(gk_nvml_field_reason(n, 0, rows[r].field, why, sizeof why),
                           "Timeout (10)");
        GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
        if (!VALID(s, rows[r].field))
            fail_msg("%s not valid after a transient failure", rows[r].call);
        assert_int_equal(gk_nvml_field_supported(n, 0, rows[r].field), 1);
    }
    gk_nvml_close(n);
}

static void test_gpu_lost(void **state)
{
    (void)state;
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    fake.inject("nvmlDeviceGetTemperature", 1, GK__NVML_ERROR_GPU_IS_LOST, 0);
    gk_gpu_sample s;
    GK_ASSERT_ERR(gk_nvml_sample(n, 1, all_tiers(), &s), GK_EDEVLOST);
    assert_int_equal(s.lost, 1);
    assert_int_equal(s.valid, 0);
    unsigned calls = fake.calls("nvmlDeviceGetPowerUsage");
    GK_ASSERT_ERR(gk_nvml_sample(n, 1, all_tiers(), &s), GK_EDEVLOST);
    assert_int_equal(fake.calls("nvmlDeviceGetPowerUsage"), calls); /* not asked any more */
    assert_string_equal(s.uuid, "GPU-fake-0001");
    char why[200];
    GK_ASSERT_CONTAINS(gk_nvml_device_reason(n, 1, why, sizeof why), "GPU is lost (15)");
    assert_int_equal(gk_nvml_field_supported(n, 1, GK_GPU_POWER), 0);
    GK_ASSERT_OK(gk_nvml_sample(n, 0, all_tiers(), &s));
    assert_true(VALID(s, GK_GPU_TEMPERATURE));
    assert_string_equal(gk_nvml_device_reason(n, 0, why, sizeof why), "");
    gk_nvml_close(n);

    /* Lost while reading the identity or the handle at open. */
    fake.reset();
    fake.inject("nvmlDeviceGetPciInfo_v3", 0, GK__NVML_ERROR_GPU_IS_LOST, 0);
    fake.inject("nvmlDeviceGetHandleByIndex_v2", 1, GK__NVML_ERROR_UNKNOWN, 0);
    fake.inject("nvmlDeviceGetName", 0, GK__NVML_ERROR_UNKNOWN, 0);
    fake.inject("nvmlDeviceGetUUID", 0, GK__NVML_ERROR_UNKNOWN, 0);
    n = open_lib(GK_TEST_FAKE_NVML);
    GK_ASSERT_ERR(gk_nvml_sample(n, 0, all_tiers(), &s), GK_EDEVLOST);
    assert_string_equal(s.name, "");
    assert_string_equal(s.pci_bus_id, "unknown");
    GK_ASSERT_ERR(gk_nvml_sample(n, 1, all_tiers(), &s), GK_EDEVLOST);
    GK_ASSERT_CONTAINS(gk_nvml_device_reason(n, 1, why, sizeof why), "GetHandleByIndex");
    gk_nvml_close(n);
}

static void test_processes(void **state)
{
    (void)state;
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    fake.set(0, "nproc", 100, 0);
    gk_gpu_sample s;
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_true(VALID(s, GK_GPU_PROCESSES));
    assert_int_equal(s.processes_total, 100);
    assert_int_equal(s.nprocesses, GK_GPU_MAX_PROCESSES);
    assert_int_equal(s.processes[63].pid, 1063);
    fake.set(0, "nproc", 0, 0);
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_true(VALID(s, GK_GPU_PROCESSES));
    assert_int_equal(s.nprocesses, 0);
    fake.set(0, "nproc", 1, 0);
    fake.set(0, "proc_mem_na", 1, 0);
    fake.set(0, "mig_cur", 1, 0);
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_int_equal(s.processes[0].has_memory, 0);
    assert_true(s.processes[0].used_memory == 0);
    assert_int_equal(s.processes[0].gpu_instance_id, 1);
    assert_int_equal(s.mig_current, 1);
    gk_nvml_close(n);
}

static void test_mig(void **state)
{
    (void)state;
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    gk_gpu_sample s;
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_true(VALID(s, GK_GPU_MIG));
    assert_int_equal(s.mig_current, 0);
    assert_int_equal(s.nmig, 0);
    assert_int_equal(fake.calls("nvmlDeviceGetMaxMigDeviceCount"), 0); /* not asked with MIG off */
    fake.set(0, "mig_cur", 1, 0);
    fake.set(0, "mig_count", 3, 0);
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_int_equal(s.nmig, 3);
    assert_int_equal(s.mig[2].gpu_instance_id, 3);
    assert_int_equal(s.mig[2].compute_instance_id, 0);
    assert_string_equal(s.mig[2].uuid, "MIG-fake-0-2");
    assert_int_equal(s.mig[2].has_memory, 1);
    assert_true(s.mig[2].memory_used == 3ULL << 28 && s.mig[2].memory_total == 10ULL << 30);
    /* A failing slot is skipped with its reason kept; the mode stays valid. */
    fake.inject("nvmlDeviceGetMigDeviceHandleByIndex", 0, GK__NVML_ERROR_UNKNOWN, 1);
    fake.inject("nvmlDeviceGetGpuInstanceId", 0, GK__NVML_ERROR_NO_PERMISSION, 1);
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_true(VALID(s, GK_GPU_MIG));
    assert_int_equal(s.nmig, 2);
    assert_true(s.mig[0].gpu_instance_id == 0xFFFFFFFFu);
    char why[200];
    GK_ASSERT_CONTAINS(gk_nvml_field_reason(n, 0, GK_GPU_MIG, why, sizeof why),
                       "nvmlDeviceGetMigDeviceHandleByIndex: Unknown Error (999)");
    /* Memory of a MIG device through v1 when _v2 fails. */
    fake.inject("nvmlDeviceGetMemoryInfo_v2", 0, GK__NVML_ERROR_UNKNOWN, 3);
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s));
    assert_int_equal(s.nmig, 3);
    assert_int_equal(s.mig[1].has_memory, 1);
    fake.inject("nvmlDeviceGetMaxMigDeviceCount", 0, GK__NVML_ERROR_GPU_IS_LOST, 1);
    GK_ASSERT_ERR(gk_nvml_sample(n, 0, GK_TIER_SLOW, &s), GK_EDEVLOST);
    gk_nvml_close(n);
}

static void test_tiers(void **state)
{
    (void)state;
    gk_nvml *n = open_lib(GK_TEST_FAKE_NVML);
    gk_gpu_sample s;
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_FAST, &s));
    assert_true(VALID(s, GK_GPU_POWER) && VALID(s, GK_GPU_CLOCK_EVENTS));
    assert_false(VALID(s, GK_GPU_ENERGY) || VALID(s, GK_GPU_PROCESSES) || VALID(s, GK_GPU_PCIE));
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_FAST | GK_TIER_SLOW, &s));
    assert_true(VALID(s, GK_GPU_ENERGY) && VALID(s, GK_GPU_ECC));
    assert_int_equal(fake.calls("nvmlDeviceGetPcieThroughput"), 0); /* opt-in only */
    GK_ASSERT_OK(gk_nvml_sample(n, 0, GK_TIER_PCIE, &s));
    assert_true(VALID(s, GK_GPU_PCIE));
    assert_int_equal(fake.calls("nvmlDeviceGetPcieThroughput"), 2);
    assert_string_equal(gk_gpu_field_name(GK_GPU_PCIE), "pcie");
    assert_string_equal(gk_gpu_field_name((gk_gpu_field)99), "unknown");
    assert_string_equal(gk_nvml_code_name(15), "GPU is lost");
    assert_string_equal(gk_nvml_code_name(999), "Unknown Error");
    gk_nvml_close(n);
}

int main(void)
{
    load_fake(&fake, GK_TEST_FAKE_NVML);
    load_fake(&fake_old, GK_TEST_FAKE_NVML_OLD);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_missing_library, setup),
        cmocka_unit_test_setup(test_library_without_symbols, setup),
        cmocka_unit_test_setup(test_init_failures, setup),
        cmocka_unit_test_setup(test_values_and_units, setup),
        cmocka_unit_test_setup(test_memory_v2_version_check, setup),
        cmocka_unit_test_setup(test_old_driver_fallbacks, setup),
        cmocka_unit_test_setup(test_runtime_fallbacks, setup),
        cmocka_unit_test_setup(test_not_supported_disables, setup),
        cmocka_unit_test_setup(test_transient_errors, setup),
        cmocka_unit_test_setup(test_gpu_lost, setup),
        cmocka_unit_test_setup(test_processes, setup),
        cmocka_unit_test_setup(test_mig, setup),
        cmocka_unit_test_setup(test_tiers, setup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dlclose(fake.h);
    dlclose(fake_old.h);
    return rc;
}
