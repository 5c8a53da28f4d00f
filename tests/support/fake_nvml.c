/* A fake libnvidia-ml.so.1 for the tests: the NVML functions gpukit uses, with scripted values
 * per device (a value plus a step added after each read), error injection per function (and per
 * device), call counters, and struct-version checks that fail like the real library on a wrong
 * version. Built twice: the full library, and with FAKE_NVML_OLD an "old driver" that lacks the
 * newest symbols (memory _v2, clocks-event reasons, processes _v3 and _v2).
 *
 * Tests reach the control functions (fakenvml_*) by dlopen'ing the same path as the library
 * under test: the loader returns the same instance. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "telemetry/nvml_api.h"

#define EXPORT __attribute__((visibility("default")))

#define MAX_DEV   8
#define MAX_MIG   7
#define MAX_FAILS 32
#define MAX_CALLS 64

struct gk__nvmlDevice_st {
    unsigned idx;
};

/* The scripted keys. */
/* clang-format off */
#define FAKE_KEYS(XX)                                                                              \
    XX(mem_total) XX(mem_used) XX(mem_free) XX(mem_reserved) XX(util_gpu) XX(util_mem)            \
    XX(temp) XX(power_mw) XX(power_limit_mw) XX(energy_mj) XX(clock_sm) XX(clock_mem)             \
    XX(clock_gr) XX(events) XX(fan) XX(ecc_corr) XX(ecc_uncorr) XX(pcie_tx_kb) XX(pcie_rx_kb)     \
    XX(mig_cur) XX(mig_pending) XX(nproc) XX(proc_mem_na) XX(mig_count) XX(proc_pid_base)
/* clang-format on */

enum {
#define FAKE_KEY_ENUM(k) K_##k,
    FAKE_KEYS(FAKE_KEY_ENUM)
#undef FAKE_KEY_ENUM
        NKEYS
};

static const char *const key_names[] = {
#define FAKE_KEY_NAME(k) #k,
    FAKE_KEYS(FAKE_KEY_NAME)
#undef FAKE_KEY_NAME
};

typedef struct fake_fail {
    char func[64];
    int dev; /* -1: any */
    int code;
    int remaining; /* < 0: forever */
} fake_fail;

typedef struct fake_call {
    char func[64];
    unsigned count;
} fake_call;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct gk__nvmlDevice_st devs[MAX_DEV];
/* MIG devices: migs[d][k] has idx 1000 + d * MAX_MIG + k. */
static struct gk__nvmlDevice_st migs[MAX_DEV][MAX_MIG];
static unsigned ndev = 2;
static int initialized;
static int init_code;
static unsigned long long values[MAX_DEV][NKEYS], steps[MAX_DEV][NKEYS];
static fake_fail fails[MAX_FAILS];
static size_t nfails;
static fake_call calls[MAX_CALLS];
static size_t ncalls;

static void defaults(void)
{
    ndev = 2;
    init_code = 0;
    initialized = 0;
    nfails = ncalls = 0;
    memset(steps, 0, sizeof steps);
    for (unsigned d = 0; d < MAX_DEV; d++) {
        devs[d].idx = d;
        unsigned long long *v = values[d];
        v[K_mem_total] = 40ULL << 30;
        v[K_mem_reserved] = 512ULL << 20;
        v[K_mem_used] = (1ULL << 30) * (d + 1);
        v[K_mem_free] = v[K_mem_total] - v[K_mem_reserved] - v[K_mem_used];
        v[K_util_gpu] = 50 + d;
        v[K_util_mem] = 20;
        v[K_temp] = 60 + d;
        v[K_power_mw] = 250500;
        v[K_power_limit_mw] = 400000;
        v[K_energy_mj] = 1000000;
        v[K_clock_sm] = 1410;
        v[K_clock_mem] = 1215;
        v[K_clock_gr] = 1400;
        v[K_events] = 0;
        v[K_fan] = 30;
        v[K_ecc_corr] = 2;
        v[K_ecc_uncorr] = 0;
        v[K_pcie_tx_kb] = 1000;
        v[K_pcie_rx_kb] = 2000;
        v[K_mig_cur] = 0;
        v[K_mig_pending] = 0;
        v[K_nproc] = 2;
        v[K_proc_mem_na] = 0;
        v[K_proc_pid_base] = 1000;
        v[K_mig_count] = 2;
        for (unsigned k = 0; k < MAX_MIG; k++)
            migs[d][k].idx = 1000 + d * MAX_MIG + k;
    }
}

static void ensure_defaults(void)
{
    static int done;
    if (!done) {
        defaults();
        done = 1;
    }
}

/* --- control API -------------------------------------------------------------------------- */

EXPORT void fakenvml_reset(void);
EXPORT void fakenvml_set_devices(unsigned n);
EXPORT void fakenvml_set_init_error(int code);
EXPORT int fakenvml_set(unsigned dev, const char *key, unsigned long long value,
                        unsigned long long step);
EXPORT void fakenvml_fail(const char *func, int dev, int code, int times);
EXPORT unsigned fakenvml_calls(const char *func);
EXPORT int fakenvml_initialized(void);

void fakenvml_reset(void)
{
    pthread_mutex_lock(&lock);
    defaults();
    pthread_mutex_unlock(&lock);
}

void fakenvml_set_devices(unsigned n)
{
    pthread_mutex_lock(&lock);
    ensure_defaults();
    ndev = n > MAX_DEV ? MAX_DEV : n;
    pthread_mutex_unlock(&lock);
}

void fakenvml_set_init_error(int code)
{
    pthread_mutex_lock(&lock);
    ensure_defaults();
    init_code = code;
    pthread_mutex_unlock(&lock);
}

int fakenvml_set(unsigned dev, const char *key, unsigned long long value, unsigned long long step)
{
    if (dev >= MAX_DEV)
        return -1;
    pthread_mutex_lock(&lock);
    ensure_defaults();
    int found = -1;
    for (int k = 0; k < NKEYS; k++) {
        if (strcmp(key_names[k], key) == 0) {
            values[dev][k] = value;
            steps[dev][k] = step;
            found = 0;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

void fakenvml_fail(const char *func, int dev, int code, int times)
{
    pthread_mutex_lock(&lock);
    ensure_defaults();
    if (nfails < MAX_FAILS) {
        fake_fail *f = &fails[nfails++];
        snprintf(f->func, sizeof f->func, "%s", func);
        f->dev = dev;
        f->code = code;
        f->remaining = times > 0 ? times : -1;
    }
    pthread_mutex_unlock(&lock);
}

unsigned fakenvml_calls(const char *func)
{
    unsigned c = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < ncalls; i++) {
        if (strcmp(calls[i].func, func) == 0)
            c = calls[i].count;
    }
    pthread_mutex_unlock(&lock);
    return c;
}

int fakenvml_initialized(void)
{
    pthread_mutex_lock(&lock);
    int v = initialized;
    pthread_mutex_unlock(&lock);
    return v;
}

/* --- helpers ------------------------------------------------------------------------------- */

/* Counts the call and returns an injected error for (func, dev), or 0. Caller holds the lock. */
static int enter(const char *func, int dev)
{
    ensure_defaults();
    size_t i;
    for (i = 0; i < ncalls; i++) {
        if (strcmp(calls[i].func, func) == 0)
            break;
    }
    if (i == ncalls && ncalls < MAX_CALLS) {
        snprintf(calls[ncalls].func, sizeof calls[ncalls].func, "%s", func);
        calls[ncalls++].count = 0;
    }
    if (i < ncalls)
        calls[i].count++;
    for (size_t k = 0; k < nfails; k++) {
        fake_fail *f = &fails[k];
        if (f->remaining == 0 || strcmp(f->func, func) != 0 || (f->dev >= 0 && f->dev != dev))
            continue;
        if (f->remaining > 0)
            f->remaining--;
        return f->code;
    }
    return 0;
}

static unsigned long long take(unsigned dev, int key)
{
    unsigned long long v = values[dev][key];
    values[dev][key] += steps[dev][key];
    return v;
}

static int dev_of(gk__nvmlDevice_t h)
{
    if (!h || h < devs || h >= devs + MAX_DEV || h->idx >= ndev)
        return -1;
    return (int)h->idx;
}

/* For a MIG handle: its parent's index and slot; -1 for anything else. */
static int mig_of(gk__nvmlDevice_t h, unsigned *slot)
{
    if (!h || h < &migs[0][0] || h >= &migs[0][0] + MAX_DEV * MAX_MIG)
        return -1;
    unsigned off = h->idx - 1000;
    *slot = off % MAX_MIG;
    return (int)(off / MAX_MIG);
}

/* Common prologue of a device query: lock, validate, count, inject. */
#define DEVICE_CALL(name, h, out_ok)                                                               \
    pthread_mutex_lock(&lock);                                                                     \
    int d_ = dev_of(h);                                                                            \
    int rc_ = enter(name, d_);                                                                     \
    if (rc_ == 0 && !initialized)                                                                  \
        rc_ = GK__NVML_ERROR_UNINITIALIZED;                                                        \
    if (rc_ == 0 && d_ < 0)                                                                        \
        rc_ = GK__NVML_ERROR_INVALID_ARGUMENT;                                                     \
    if (rc_ == 0 && !(out_ok))                                                                     \
        rc_ = GK__NVML_ERROR_INVALID_ARGUMENT;                                                     \
    if (rc_ != 0) {                                                                                \
        pthread_mutex_unlock(&lock);                                                               \
        return rc_;                                                                                \
    }                                                                                              \
    unsigned dev = (unsigned)d_;

#define DEVICE_DONE()                                                                              \
    pthread_mutex_unlock(&lock);                                                                   \
    return GK__NVML_SUCCESS;

/* --- NVML ---------------------------------------------------------------------------------- */

EXPORT gk__nvmlReturn_t nvmlInit_v2(void);
EXPORT gk__nvmlReturn_t nvmlInit(void);
EXPORT gk__nvmlReturn_t nvmlShutdown(void);
EXPORT const char *nvmlErrorString(gk__nvmlReturn_t r);
EXPORT gk__nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned len);
EXPORT gk__nvmlReturn_t nvmlSystemGetNVMLVersion(char *buf, unsigned len);
EXPORT gk__nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v);
EXPORT gk__nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n);
EXPORT gk__nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, gk__nvmlDevice_t *h);
EXPORT gk__nvmlReturn_t nvmlDeviceGetIndex(gk__nvmlDevice_t h, unsigned *i);
EXPORT gk__nvmlReturn_t nvmlDeviceGetName(gk__nvmlDevice_t h, char *buf, unsigned len);
EXPORT gk__nvmlReturn_t nvmlDeviceGetUUID(gk__nvmlDevice_t h, char *buf, unsigned len);
EXPORT gk__nvmlReturn_t nvmlDeviceGetPciInfo_v3(gk__nvmlDevice_t h, gk__nvmlPciInfo_t *p);
EXPORT gk__nvmlReturn_t nvmlDeviceGetMemoryInfo(gk__nvmlDevice_t h, gk__nvmlMemory_t *m);
EXPORT gk__nvmlReturn_t nvmlDeviceGetUtilizationRates(gk__nvmlDevice_t h, gk__nvmlUtilization_t *u);
EXPORT gk__nvmlReturn_t nvmlDeviceGetTemperature(gk__nvmlDevice_t h, int sensor, unsigned *t);
EXPORT gk__nvmlReturn_t nvmlDeviceGetPowerUsage(gk__nvmlDevice_t h, unsigned *mw);
EXPORT gk__nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(gk__nvmlDevice_t h, unsigned *mw);
EXPORT gk__nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(gk__nvmlDevice_t h,
                                                            unsigned long long *mj);
EXPORT gk__nvmlReturn_t nvmlDeviceGetClockInfo(gk__nvmlDevice_t h, int type, unsigned *mhz);
EXPORT gk__nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(gk__nvmlDevice_t h,
                                                                  unsigned long long *r);
EXPORT gk__nvmlReturn_t nvmlDeviceGetFanSpeed(gk__nvmlDevice_t h, unsigned *pct);
EXPORT gk__nvmlReturn_t nvmlDeviceGetTotalEccErrors(gk__nvmlDevice_t h, int type, int counter,
                                                    unsigned long long *n);
EXPORT gk__nvmlReturn_t nvmlDeviceGetPcieThroughput(gk__nvmlDevice_t h, int counter, unsigned *kbs);
EXPORT gk__nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(gk__nvmlDevice_t h, unsigned *n,
                                                             gk__nvmlProcessInfo_v1_t *p);
EXPORT gk__nvmlReturn_t nvmlDeviceGetMigMode(gk__nvmlDevice_t h, unsigned *cur, unsigned *pending);

gk__nvmlReturn_t nvmlInit_v2(void)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlInit_v2", -1);
    if (rc == 0)
        rc = init_code;
    if (rc == 0)
        initialized++;
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlInit(void)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlInit", -1);
    if (rc == 0)
        rc = init_code;
    if (rc == 0)
        initialized++;
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlShutdown", -1);
    if (rc == 0 && initialized == 0)
        rc = GK__NVML_ERROR_UNINITIALIZED;
    if (rc == 0)
        initialized--;
    pthread_mutex_unlock(&lock);
    return rc;
}

const char *nvmlErrorString(gk__nvmlReturn_t r)
{
    return r == 0 ? "Success" : "fake error";
}

gk__nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned len)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlSystemGetDriverVersion", -1);
    if (rc == 0 && len < 16)
        rc = GK__NVML_ERROR_INSUFFICIENT_SIZE;
    if (rc == 0)
        snprintf(buf, len, "550.54.15");
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlSystemGetNVMLVersion(char *buf, unsigned len)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlSystemGetNVMLVersion", -1);
    if (rc == 0 && len < 16)
        rc = GK__NVML_ERROR_INSUFFICIENT_SIZE;
    if (rc == 0)
        snprintf(buf, len, "12.550.54.15");
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlSystemGetCudaDriverVersion", -1);
    if (rc == 0)
        *v = 12040;
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlDeviceGetCount_v2", -1);
    if (rc == 0 && !initialized)
        rc = GK__NVML_ERROR_UNINITIALIZED;
    if (rc == 0)
        *n = ndev;
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, gk__nvmlDevice_t *h)
{
    pthread_mutex_lock(&lock);
    int rc = enter("nvmlDeviceGetHandleByIndex_v2", (int)i);
    if (rc == 0 && i >= ndev)
        rc = GK__NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *h = &devs[i];
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlDeviceGetIndex(gk__nvmlDevice_t h, unsigned *i)
{
    DEVICE_CALL("nvmlDeviceGetIndex", h, i);
    *i = dev;
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetName(gk__nvmlDevice_t h, char *buf, unsigned len)
{
    DEVICE_CALL("nvmlDeviceGetName", h, buf && len >= GK__NVML_DEVICE_NAME_BUFFER_SIZE);
    snprintf(buf, len, "Fake GPU %u", dev);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetUUID(gk__nvmlDevice_t h, char *buf, unsigned len)
{
    unsigned slot;
    int parent = mig_of(h, &slot);
    if (parent >= 0 && buf && len >= GK__NVML_DEVICE_UUID_BUFFER_SIZE) {
        pthread_mutex_lock(&lock);
        int rc = enter("nvmlDeviceGetUUID", parent);
        if (rc == 0)
            snprintf(buf, len, "MIG-fake-%d-%u", parent, slot);
        pthread_mutex_unlock(&lock);
        return rc;
    }
    DEVICE_CALL("nvmlDeviceGetUUID", h, buf && len >= GK__NVML_DEVICE_UUID_BUFFER_SIZE);
    snprintf(buf, len, "GPU-fake-%04u", dev);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetPciInfo_v3(gk__nvmlDevice_t h, gk__nvmlPciInfo_t *p)
{
    DEVICE_CALL("nvmlDeviceGetPciInfo_v3", h, p);
    memset(p, 0, sizeof *p);
    p->bus = 7 + dev;
    snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", p->bus);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "0000:%02X:00.0", p->bus);
    DEVICE_DONE();
}

/* Memory of a MIG device: 10 GiB, (slot + 1) * 256 MiB used. */
static void mig_memory(unsigned slot, unsigned long long *total, unsigned long long *used,
                       unsigned long long *free_)
{
    *total = 10ULL << 30;
    *used = (slot + 1ULL) << 28;
    *free_ = *total - *used;
}

gk__nvmlReturn_t nvmlDeviceGetMemoryInfo(gk__nvmlDevice_t h, gk__nvmlMemory_t *m)
{
    unsigned slot;
    int parent = mig_of(h, &slot);
    if (parent >= 0 && m) {
        pthread_mutex_lock(&lock);
        int rc = enter("nvmlDeviceGetMemoryInfo", parent);
        if (rc == 0)
            mig_memory(slot, &m->total, &m->used, &m->free);
        pthread_mutex_unlock(&lock);
        return rc;
    }
    DEVICE_CALL("nvmlDeviceGetMemoryInfo", h, m);
    m->total = take(dev, K_mem_total);
    /* v1 counts the driver reserve as used. */
    m->used = take(dev, K_mem_used) + values[dev][K_mem_reserved];
    m->free = take(dev, K_mem_free);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetUtilizationRates(gk__nvmlDevice_t h, gk__nvmlUtilization_t *u)
{
    DEVICE_CALL("nvmlDeviceGetUtilizationRates", h, u);
    u->gpu = (unsigned)take(dev, K_util_gpu);
    u->memory = (unsigned)take(dev, K_util_mem);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetTemperature(gk__nvmlDevice_t h, int sensor, unsigned *t)
{
    DEVICE_CALL("nvmlDeviceGetTemperature", h, t && sensor == GK__NVML_TEMPERATURE_GPU);
    *t = (unsigned)take(dev, K_temp);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetPowerUsage(gk__nvmlDevice_t h, unsigned *mw)
{
    DEVICE_CALL("nvmlDeviceGetPowerUsage", h, mw);
    *mw = (unsigned)take(dev, K_power_mw);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(gk__nvmlDevice_t h, unsigned *mw)
{
    DEVICE_CALL("nvmlDeviceGetEnforcedPowerLimit", h, mw);
    *mw = (unsigned)take(dev, K_power_limit_mw);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(gk__nvmlDevice_t h, unsigned long long *mj)
{
    DEVICE_CALL("nvmlDeviceGetTotalEnergyConsumption", h, mj);
    *mj = take(dev, K_energy_mj);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetClockInfo(gk__nvmlDevice_t h, int type, unsigned *mhz)
{
    DEVICE_CALL("nvmlDeviceGetClockInfo", h, mhz && type >= 0 && type <= 3);
    int key = type == GK__NVML_CLOCK_SM    ? K_clock_sm
              : type == GK__NVML_CLOCK_MEM ? K_clock_mem
                                           : K_clock_gr;
    *mhz = (unsigned)take(dev, key);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(gk__nvmlDevice_t h,
                                                           unsigned long long *r)
{
    DEVICE_CALL("nvmlDeviceGetCurrentClocksThrottleReasons", h, r);
    *r = take(dev, K_events);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetFanSpeed(gk__nvmlDevice_t h, unsigned *pct)
{
    DEVICE_CALL("nvmlDeviceGetFanSpeed", h, pct);
    *pct = (unsigned)take(dev, K_fan);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetTotalEccErrors(gk__nvmlDevice_t h, int type, int counter,
                                             unsigned long long *n)
{
    DEVICE_CALL("nvmlDeviceGetTotalEccErrors", h,
                n && (type == 0 || type == 1) && (counter == 0 || counter == 1));
    *n = take(dev, type == GK__NVML_MEMORY_ERROR_CORRECTED ? K_ecc_corr : K_ecc_uncorr);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetPcieThroughput(gk__nvmlDevice_t h, int counter, unsigned *kbs)
{
    DEVICE_CALL("nvmlDeviceGetPcieThroughput", h, kbs && (counter == 0 || counter == 1));
    *kbs = (unsigned)take(dev, counter == GK__NVML_PCIE_TX_BYTES ? K_pcie_tx_kb : K_pcie_rx_kb);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetMigMode(gk__nvmlDevice_t h, unsigned *cur, unsigned *pending)
{
    DEVICE_CALL("nvmlDeviceGetMigMode", h, cur && pending);
    *cur = (unsigned)take(dev, K_mig_cur);
    *pending = (unsigned)take(dev, K_mig_pending);
    DEVICE_DONE();
}

/* Fills a process list of `entry` bytes per element; INSUFFICIENT_SIZE when *n is too small. */
static int fill_processes(unsigned dev, unsigned *n, void *buf, size_t entry)
{
    unsigned want = (unsigned)values[dev][K_nproc];
    if (*n < want) {
        *n = want;
        return GK__NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (want && !buf)
        return GK__NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < want; i++) {
        unsigned long long mem =
            values[dev][K_proc_mem_na] ? GK__NVML_VALUE_NOT_AVAILABLE : (i + 1ULL) << 20;
        if (entry == sizeof(gk__nvmlProcessInfo_v1_t)) {
            gk__nvmlProcessInfo_v1_t *p = (gk__nvmlProcessInfo_v1_t *)buf + i;
            p->pid = (unsigned)values[dev][K_proc_pid_base] + i;
            p->usedGpuMemory = mem;
        } else {
            gk__nvmlProcessInfo_t *p = (gk__nvmlProcessInfo_t *)buf + i;
            p->pid = (unsigned)values[dev][K_proc_pid_base] + i;
            p->usedGpuMemory = mem;
            p->gpuInstanceId = values[dev][K_mig_cur] ? 1 : 0xFFFFFFFFu;
            p->computeInstanceId = values[dev][K_mig_cur] ? 0 : 0xFFFFFFFFu;
        }
    }
    *n = want;
    return 0;
}

gk__nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(gk__nvmlDevice_t h, unsigned *n,
                                                      gk__nvmlProcessInfo_v1_t *p)
{
    DEVICE_CALL("nvmlDeviceGetComputeRunningProcesses", h, n);
    int rc = fill_processes(dev, n, p, sizeof *p);
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT gk__nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(gk__nvmlDevice_t h, unsigned *n);
EXPORT gk__nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(gk__nvmlDevice_t h, unsigned i,
                                                            gk__nvmlDevice_t *out);
EXPORT gk__nvmlReturn_t nvmlDeviceGetGpuInstanceId(gk__nvmlDevice_t h, unsigned *id);
EXPORT gk__nvmlReturn_t nvmlDeviceGetComputeInstanceId(gk__nvmlDevice_t h, unsigned *id);

gk__nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(gk__nvmlDevice_t h, unsigned *n)
{
    DEVICE_CALL("nvmlDeviceGetMaxMigDeviceCount", h, n);
    *n = dev < MAX_DEV ? MAX_MIG : 0;
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(gk__nvmlDevice_t h, unsigned i,
                                                     gk__nvmlDevice_t *out)
{
    DEVICE_CALL("nvmlDeviceGetMigDeviceHandleByIndex", h, out);
    if (!values[dev][K_mig_cur] || i >= values[dev][K_mig_count] || i >= MAX_MIG) {
        pthread_mutex_unlock(&lock);
        return GK__NVML_ERROR_NOT_FOUND;
    }
    *out = &migs[dev][i];
    DEVICE_DONE();
}

/* Instance ids answer only on MIG handles, as on real hardware. */
static int instance_id(const char *name, gk__nvmlDevice_t h, unsigned *id, int gpu_instance)
{
    unsigned slot = 0;
    pthread_mutex_lock(&lock);
    int parent = mig_of(h, &slot);
    int rc = enter(name, parent);
    if (rc == 0 && (parent < 0 || !id))
        rc = GK__NVML_ERROR_NOT_SUPPORTED;
    if (rc == 0)
        *id = gpu_instance ? slot + 1 : 0;
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlDeviceGetGpuInstanceId(gk__nvmlDevice_t h, unsigned *id)
{
    return instance_id("nvmlDeviceGetGpuInstanceId", h, id, 1);
}

gk__nvmlReturn_t nvmlDeviceGetComputeInstanceId(gk__nvmlDevice_t h, unsigned *id)
{
    return instance_id("nvmlDeviceGetComputeInstanceId", h, id, 0);
}

#ifndef FAKE_NVML_OLD
EXPORT gk__nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(gk__nvmlDevice_t h, gk__nvmlMemory_v2_t *m);
EXPORT gk__nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(gk__nvmlDevice_t h,
                                                               unsigned long long *r);
EXPORT gk__nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(gk__nvmlDevice_t h, unsigned *n,
                                                                gk__nvmlProcessInfo_t *p);
EXPORT gk__nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(gk__nvmlDevice_t h, unsigned *n,
                                                                gk__nvmlProcessInfo_t *p);

gk__nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(gk__nvmlDevice_t h, gk__nvmlMemory_v2_t *m)
{
    unsigned slot;
    int parent = mig_of(h, &slot);
    if (parent >= 0 && m) {
        pthread_mutex_lock(&lock);
        int rc = enter("nvmlDeviceGetMemoryInfo_v2", parent);
        if (rc == 0 && m->version != GK__NVML_MEMORY_V2_VERSION)
            rc = GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        if (rc == 0) {
            mig_memory(slot, &m->total, &m->used, &m->free);
            m->reserved = 0;
        }
        pthread_mutex_unlock(&lock);
        return rc;
    }
    DEVICE_CALL("nvmlDeviceGetMemoryInfo_v2", h, m);
    /* The real library checks the struct version: nvtop's "version = 2" fails here. */
    if (m->version != GK__NVML_MEMORY_V2_VERSION) {
        pthread_mutex_unlock(&lock);
        return GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    }
    m->total = take(dev, K_mem_total);
    m->reserved = take(dev, K_mem_reserved);
    m->used = take(dev, K_mem_used);
    m->free = take(dev, K_mem_free);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(gk__nvmlDevice_t h, unsigned long long *r)
{
    DEVICE_CALL("nvmlDeviceGetCurrentClocksEventReasons", h, r);
    *r = take(dev, K_events);
    DEVICE_DONE();
}

gk__nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(gk__nvmlDevice_t h, unsigned *n,
                                                         gk__nvmlProcessInfo_t *p)
{
    DEVICE_CALL("nvmlDeviceGetComputeRunningProcesses_v3", h, n);
    int rc = fill_processes(dev, n, p, sizeof *p);
    pthread_mutex_unlock(&lock);
    return rc;
}

gk__nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(gk__nvmlDevice_t h, unsigned *n,
                                                         gk__nvmlProcessInfo_t *p)
{
    DEVICE_CALL("nvmlDeviceGetComputeRunningProcesses_v2", h, n);
    int rc = fill_processes(dev, n, p, sizeof *p);
    pthread_mutex_unlock(&lock);
    return rc;
}
#endif
