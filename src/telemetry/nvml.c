/* The NVML loader: loads libnvidia-ml.so.1 with dlopen, resolves the newest symbol versions with
 * fallbacks, reads each device's identity once, and keeps the failure bookkeeping (every failure
 * counted, its reason kept per device and metric; NOT_SUPPORTED disables a metric for good and
 * GPU_IS_LOST retires the device while the others keep working). Sampling: nvml_sample.c. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/telemetry.h"
#include "nvml_int.h"

static const char *const field_names[] = {
#define GK__FIELD_NAME(e, name, tier, call) name,
    GK_GPU_FIELD_MAP(GK__FIELD_NAME)
#undef GK__FIELD_NAME
};

const char *gk_gpu_field_name(gk_gpu_field field)
{
    return (unsigned)field < GK_GPU_NFIELDS ? field_names[field] : "unknown";
}

const char *gk_nvml_code_name(int code)
{
    static const char *const names[] = {"Success",
                                        "Uninitialized",
                                        "Invalid Argument",
                                        "Not Supported",
                                        "Insufficient Permissions",
                                        "Already Initialized",
                                        "Not Found",
                                        "Insufficient Size",
                                        "Insufficient External Power",
                                        "Driver Not Loaded",
                                        "Timeout",
                                        "Interrupt Request Issue",
                                        "NVML Shared Library Not Found",
                                        "Function Not Found",
                                        "Corrupted infoROM",
                                        "GPU is lost",
                                        "GPU requires restart",
                                        "The operating system has blocked the request",
                                        "RM has detected an NVML/RM version mismatch",
                                        "In use by another client",
                                        "Insufficient Memory",
                                        "No data",
                                        "ECC is not supported in vGPU",
                                        "Insufficient resources",
                                        "Frequency not supported",
                                        "Argument version mismatch",
                                        "Deprecated",
                                        "Not ready",
                                        "GPU not found",
                                        "Invalid state",
                                        "Reset type not supported"};
    if (code >= 0 && (size_t)code < sizeof names / sizeof names[0])
        return names[code];
    return "Unknown Error";
}

void(gk_nvml_config_default)(gk_nvml_config *out, size_t size)
{
    gk_nvml_config c = {.size = sizeof c, .library = NULL};
    gk_logger_default(&c.logger);
    (void)gk__sized_put(out, size, &c, sizeof c, "gk_nvml_config");
}

const char *const gk__nvml_proc_names[3] = {"nvmlDeviceGetComputeRunningProcesses_v3",
                                            "nvmlDeviceGetComputeRunningProcesses_v2",
                                            "nvmlDeviceGetComputeRunningProcesses"};

void gk__nvml_count_error(gk_nvml *n, const char *call, int code)
{
    n->nerrors++;
    for (size_t i = 0; i < n->nstats; i++) {
        if (n->stats[i].code == code && strcmp(n->stats[i].call, call) == 0) {
            n->stats[i].count++;
            return;
        }
    }
    if (n->nstats < MAX_STATS) {
        gk_nvml_error_stat *st = &n->stats[n->nstats++];
        snprintf(st->call, sizeof st->call, "%s", call);
        st->code = code;
        st->count = 1;
    }
}

int gk__nvml_field_failed(gk_nvml *n, nvml_device *d, gk_gpu_field field, const char *call,
                          int code)
{
    gk__nvml_count_error(n, call, code);
    snprintf(d->reason[field], REASON_LEN, "%s: %s (%d)", call, gk_nvml_code_name(code), code);
    gk_log(&n->logger, GK_LOG_DEBUG, "nvml", "gpu %u: %s", d->index, d->reason[field]);
    if (code == GK__NVML_ERROR_GPU_IS_LOST) {
        d->lost = 1;
        snprintf(d->lost_reason, REASON_LEN, "%s", d->reason[field]);
        gk_log(&n->logger, GK_LOG_WARN, "nvml", "gpu %u is lost (%s); its metrics are off",
               d->index, call);
        return 1;
    }
    if (code == GK__NVML_ERROR_NOT_SUPPORTED || code == GK__NVML_ERROR_FUNCTION_NOT_FOUND) {
        d->disabled |= 1u << field;
        gk_log(&n->logger, GK_LOG_INFO, "nvml", "gpu %u: %s not supported: %s", d->index,
               field_names[field], d->reason[field]);
    }
    return 0;
}

/* Marks a field unavailable because its symbol is missing. */
static void field_missing(nvml_device *d, gk_gpu_field field, const char *call)
{
    d->disabled |= 1u << field;
    snprintf(d->reason[field], REASON_LEN, "%s: not exported by the NVML library", call);
}

static void *sym(void *lib, const char *name)
{
    return dlsym(lib, name);
}

static void resolve(gk_nvml *n)
{
    void *l = n->lib;
    nvml_syms *s = &n->s;
    *(void **)&s->init = sym(l, "nvmlInit_v2");
    if (!s->init)
        *(void **)&s->init = sym(l, "nvmlInit");
    *(void **)&s->shutdown = sym(l, "nvmlShutdown");
    *(void **)&s->driver_version = sym(l, "nvmlSystemGetDriverVersion");
    *(void **)&s->nvml_version = sym(l, "nvmlSystemGetNVMLVersion");
    *(void **)&s->cuda_version = sym(l, "nvmlSystemGetCudaDriverVersion_v2");
    if (!s->cuda_version)
        *(void **)&s->cuda_version = sym(l, "nvmlSystemGetCudaDriverVersion");
    *(void **)&s->count = sym(l, "nvmlDeviceGetCount_v2");
    if (!s->count)
        *(void **)&s->count = sym(l, "nvmlDeviceGetCount");
    *(void **)&s->handle = sym(l, "nvmlDeviceGetHandleByIndex_v2");
    if (!s->handle)
        *(void **)&s->handle = sym(l, "nvmlDeviceGetHandleByIndex");
    *(void **)&s->name = sym(l, "nvmlDeviceGetName");
    *(void **)&s->uuid = sym(l, "nvmlDeviceGetUUID");
    *(void **)&s->pci = sym(l, "nvmlDeviceGetPciInfo_v3");
    if (!s->pci)
        *(void **)&s->pci = sym(l, "nvmlDeviceGetPciInfo_v2");
    *(void **)&s->index = sym(l, "nvmlDeviceGetIndex");
    *(void **)&s->mem2 = sym(l, "nvmlDeviceGetMemoryInfo_v2");
    *(void **)&s->mem1 = sym(l, "nvmlDeviceGetMemoryInfo");
    *(void **)&s->util = sym(l, "nvmlDeviceGetUtilizationRates");
    *(void **)&s->temp = sym(l, "nvmlDeviceGetTemperature");
    *(void **)&s->clock = sym(l, "nvmlDeviceGetClockInfo");
    *(void **)&s->pcie = sym(l, "nvmlDeviceGetPcieThroughput");
    *(void **)&s->power = sym(l, "nvmlDeviceGetPowerUsage");
    *(void **)&s->power_limit = sym(l, "nvmlDeviceGetEnforcedPowerLimit");
    *(void **)&s->fan = sym(l, "nvmlDeviceGetFanSpeed");
    *(void **)&s->energy = sym(l, "nvmlDeviceGetTotalEnergyConsumption");
    *(void **)&s->events_new = sym(l, "nvmlDeviceGetCurrentClocksEventReasons");
    *(void **)&s->events_old = sym(l, "nvmlDeviceGetCurrentClocksThrottleReasons");
    *(void **)&s->ecc = sym(l, "nvmlDeviceGetTotalEccErrors");
    for (int i = 0; i < 3; i++)
        *(void **)&s->procs[i] = sym(l, gk__nvml_proc_names[i]);
    *(void **)&s->mig = sym(l, "nvmlDeviceGetMigMode");
    *(void **)&s->mig_max = sym(l, "nvmlDeviceGetMaxMigDeviceCount");
    *(void **)&s->mig_handle = sym(l, "nvmlDeviceGetMigDeviceHandleByIndex");
    *(void **)&s->gi_id = sym(l, "nvmlDeviceGetGpuInstanceId");
    *(void **)&s->ci_id = sym(l, "nvmlDeviceGetComputeInstanceId");
}

/* Reads identity and notes missing symbols for one device. */
static void device_setup(gk_nvml *n, unsigned i)
{
    nvml_device *d = &n->devs[i];
    d->index = i;
    snprintf(d->bus, sizeof d->bus, "unknown");
    int rc = n->s.handle(i, &d->h);
    if (rc != GK__NVML_SUCCESS) {
        gk__nvml_count_error(n, "nvmlDeviceGetHandleByIndex_v2", rc);
        d->lost = 1;
        snprintf(d->lost_reason, REASON_LEN, "nvmlDeviceGetHandleByIndex_v2: %s (%d)",
                 gk_nvml_code_name(rc), rc);
        return;
    }
    unsigned idx;
    if (n->s.index && n->s.index(d->h, &idx) == GK__NVML_SUCCESS)
        d->index = idx;
    if (n->s.name && (rc = n->s.name(d->h, d->name, sizeof d->name)) != GK__NVML_SUCCESS) {
        gk__nvml_count_error(n, "nvmlDeviceGetName", rc);
        d->name[0] = '\0';
    }
    if (n->s.uuid && (rc = n->s.uuid(d->h, d->uuid, sizeof d->uuid)) != GK__NVML_SUCCESS) {
        gk__nvml_count_error(n, "nvmlDeviceGetUUID", rc);
        d->uuid[0] = '\0';
    }
    gk__nvmlPciInfo_t pci;
    memset(&pci, 0, sizeof pci);
    if (n->s.pci && (rc = n->s.pci(d->h, &pci)) == GK__NVML_SUCCESS)
        snprintf(d->bus, sizeof d->bus, "%.*s", (int)sizeof pci.busId, pci.busId);
    else if (n->s.pci)
        gk__nvml_count_error(n, "nvmlDeviceGetPciInfo_v3", rc);
    if (rc == GK__NVML_ERROR_GPU_IS_LOST) {
        d->lost = 1;
        snprintf(d->lost_reason, REASON_LEN, "identity: %s (%d)", gk_nvml_code_name(rc), rc);
    }
    if (!n->s.mem2 && !n->s.mem1)
        field_missing(d, GK_GPU_MEMORY, "nvmlDeviceGetMemoryInfo");
    d->mem_v1_only = !n->s.mem2;
    if (!n->s.util)
        field_missing(d, GK_GPU_UTILIZATION, "nvmlDeviceGetUtilizationRates");
    if (!n->s.temp)
        field_missing(d, GK_GPU_TEMPERATURE, "nvmlDeviceGetTemperature");
    if (!n->s.power)
        field_missing(d, GK_GPU_POWER, "nvmlDeviceGetPowerUsage");
    if (!n->s.power_limit)
        field_missing(d, GK_GPU_POWER_LIMIT, "nvmlDeviceGetEnforcedPowerLimit");
    if (!n->s.clock) {
        field_missing(d, GK_GPU_CLOCK_SM, "nvmlDeviceGetClockInfo");
        field_missing(d, GK_GPU_CLOCK_MEM, "nvmlDeviceGetClockInfo");
        field_missing(d, GK_GPU_CLOCK_GRAPHICS, "nvmlDeviceGetClockInfo");
    }
    if (!n->s.events_new && !n->s.events_old)
        field_missing(d, GK_GPU_CLOCK_EVENTS, "nvmlDeviceGetCurrentClocksEventReasons");
    d->events_old = !n->s.events_new;
    if (!n->s.fan)
        field_missing(d, GK_GPU_FAN, "nvmlDeviceGetFanSpeed");
    if (!n->s.energy)
        field_missing(d, GK_GPU_ENERGY, "nvmlDeviceGetTotalEnergyConsumption");
    if (!n->s.ecc)
        field_missing(d, GK_GPU_ECC, "nvmlDeviceGetTotalEccErrors");
    if (!n->s.pcie)
        field_missing(d, GK_GPU_PCIE, "nvmlDeviceGetPcieThroughput");
    if (!n->s.mig)
        field_missing(d, GK_GPU_MIG, "nvmlDeviceGetMigMode");
    d->proc_level = PROC_NONE;
    for (int k = PROC_V3; k <= PROC_V1; k++) {
        if (n->s.procs[k]) {
            d->proc_level = k;
            break;
        }
    }
    if (d->proc_level == PROC_NONE)
        field_missing(d, GK_GPU_PROCESSES, "nvmlDeviceGetComputeRunningProcesses");
}

static void set_reason(gk_nvml_info *info, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_reason(gk_nvml_info *info, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->reason, sizeof info->reason, fmt, ap);
    va_end(ap);
}

/* Opens NVML into the library's own gk_nvml_info; gk_nvml_open copies it out. */
static int nvml_open(const gk_nvml_config *cfg_in, gk_nvml **out, gk_nvml_info *info);

int(gk_nvml_open)(const gk_nvml_config *cfg, gk_nvml **out, gk_nvml_info *info_out, size_t size)
{
    gk_nvml_info info;
    if (info_out && size < sizeof(size_t))
        return gk__sized_check(info_out, size, "gk_nvml_info");
    int rc = nvml_open(cfg, out, &info);
    if (info_out)
        (void)gk__sized_put(info_out, size, &info, sizeof info, "gk_nvml_info");
    if (rc)
        return gk__error(rc, "%s", info.reason[0] ? info.reason : gk_last_error());
    return 0;
}

static int nvml_open(const gk_nvml_config *cfg_in, gk_nvml **out, gk_nvml_info *info)
{
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
    if (!out) {
        set_reason(info, "gk_nvml_open: out is NULL");
        return -EINVAL;
    }
    *out = NULL;
    gk_nvml_config cfg;
    gk_nvml_config_default(&cfg);
    if (!cfg_in) {
        if (gk_nvml_config_from_env(&cfg) != 0) {
            set_reason(info, "%s", gk_last_error());
            return -EINVAL;
        }
    } else if (gk__sized_in(&cfg, sizeof cfg, cfg_in, "gk_nvml_config") != 0) {
        set_reason(info, "%s", gk_last_error());
        return -EINVAL;
    }
    if (!cfg.library || !*cfg.library)
        cfg.library = "libnvidia-ml.so.1";
    snprintf(info->library, sizeof info->library, "%s", cfg.library);
    gk_nvml *n = gk__calloc(1, sizeof *n);
    if (!n) {
        snprintf(info->reason, sizeof info->reason, "out of host memory");
        return -ENOMEM;
    }
    n->logger = cfg.logger;
    pthread_mutex_init(&n->lock, NULL);
    int rc = GK_ENOGPU;
    n->lib = dlopen(cfg.library, RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        const char *err = dlerror();
        size_t ll = strlen(cfg.library);
        if (err && strncmp(err, cfg.library, ll) == 0 && strncmp(err + ll, ": ", 2) == 0)
            err += ll + 2; /* dlerror repeats the name */
        set_reason(info, "no NVIDIA driver: %s not found (%s); GPU metrics are off", cfg.library,
                   err ? err : "dlopen failed");
        goto out_free;
    }
    resolve(n);
    if (!n->s.init || !n->s.shutdown || !n->s.count || !n->s.handle) {
        set_reason(info,
                   "%s lacks nvmlInit/nvmlDeviceGetCount/GetHandleByIndex; GPU metrics are off",
                   cfg.library);
        goto out_close;
    }
    int nrc = n->s.init();
    if (nrc != GK__NVML_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "%s (%d)", gk_nvml_code_name(nrc), nrc);
        set_reason(info, "nvmlInit failed: %s%s", what,
                   nrc == GK__NVML_ERROR_DRIVER_NOT_LOADED
                       ? " (the NVIDIA kernel driver is not loaded); GPU metrics are off"
                       : "; GPU metrics are off");
        goto out_close;
    }
    unsigned count = 0;
    nrc = n->s.count(&count);
    if (nrc != GK__NVML_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "%s (%d)", gk_nvml_code_name(nrc), nrc);
        set_reason(info, "nvmlDeviceGetCount failed: %s%s", what, "; GPU metrics are off");
        goto out_shutdown;
    }
    if (count > 0) {
        n->devs = gk__calloc(count, sizeof *n->devs);
        if (!n->devs) {
            rc = -ENOMEM;
            set_reason(info, "out of host memory");
            goto out_shutdown;
        }
    }
    n->ndev = count;
    if (n->s.driver_version)
        n->s.driver_version(n->info.driver_version, sizeof n->info.driver_version);
    if (n->s.nvml_version)
        n->s.nvml_version(n->info.nvml_version, sizeof n->info.nvml_version);
    if (n->s.cuda_version)
        n->s.cuda_version(&n->info.cuda_driver_version);
    n->info.driver_version[sizeof n->info.driver_version - 1] = '\0';
    n->info.nvml_version[sizeof n->info.nvml_version - 1] = '\0';
    for (unsigned i = 0; i < count; i++)
        device_setup(n, i);
    n->info.available = 1;
    n->info.device_count = count;
    snprintf(n->info.library, sizeof n->info.library, "%s", cfg.library);
    n->info.size = sizeof n->info;
    *info = n->info;
    *out = n;
    return 0;
out_shutdown:
    n->s.shutdown();
out_close:
    dlclose(n->lib);
out_free:
    pthread_mutex_destroy(&n->lock);
    free(n);
    return rc;
}

void gk_nvml_close(gk_nvml *n)
{
    if (!n)
        return;
    n->s.shutdown();
    dlclose(n->lib);
    pthread_mutex_destroy(&n->lock);
    free(n->devs);
    free(n->procbuf);
    free(n);
}

int(gk_nvml_get_info)(gk_nvml *n, gk_nvml_info *out, size_t size)
{
    if (!n)
        return gk__error(-EINVAL, "gk_nvml_get_info: handle is NULL");
    gk_nvml_info info;
    pthread_mutex_lock(&n->lock);
    info = n->info;
    pthread_mutex_unlock(&n->lock);
    return gk__sized_put(out, size, &info, sizeof info, "gk_nvml_info");
}

unsigned gk_nvml_device_count(const gk_nvml *n)
{
    return n ? n->ndev : 0;
}

int(gk_nvml_probe)(const gk_nvml_config *cfg, gk_nvml_info *out, size_t size)
{
    gk_nvml *n = NULL;
    int rc = (gk_nvml_open)(cfg, &n, out, size);
    gk_nvml_close(n);
    return rc;
}

int gk_nvml_field_supported(gk_nvml *n, unsigned dev, gk_gpu_field field)
{
    if (!n || dev >= n->ndev || (unsigned)field >= GK_GPU_NFIELDS)
        return 0;
    pthread_mutex_lock(&n->lock);
    const nvml_device *d = &n->devs[dev];
    int ok = !d->lost && !((d->disabled >> field) & 1u);
    pthread_mutex_unlock(&n->lock);
    return ok;
}

char *gk_nvml_field_reason(gk_nvml *n, unsigned dev, gk_gpu_field field, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    buf[0] = '\0';
    if (!n || dev >= n->ndev || (unsigned)field >= GK_GPU_NFIELDS)
        return buf;
    pthread_mutex_lock(&n->lock);
    snprintf(buf, len, "%s", n->devs[dev].reason[field]);
    pthread_mutex_unlock(&n->lock);
    return buf;
}

char *gk_nvml_device_reason(gk_nvml *n, unsigned dev, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    buf[0] = '\0';
    if (!n || dev >= n->ndev)
        return buf;
    pthread_mutex_lock(&n->lock);
    snprintf(buf, len, "%s", n->devs[dev].lost_reason);
    pthread_mutex_unlock(&n->lock);
    return buf;
}

uint64_t gk_nvml_error_count(gk_nvml *n)
{
    if (!n)
        return 0;
    pthread_mutex_lock(&n->lock);
    uint64_t c = n->nerrors;
    pthread_mutex_unlock(&n->lock);
    return c;
}

size_t gk_nvml_error_stats(gk_nvml *n, gk_nvml_error_stat *buf, size_t cap)
{
    if (!n)
        return 0;
    pthread_mutex_lock(&n->lock);
    size_t total = n->nstats;
    for (size_t i = 0; i < total && i < cap && buf; i++)
        buf[i] = n->stats[i];
    pthread_mutex_unlock(&n->lock);
    return total;
}
