/* The NVML reader: loads libnvidia-ml.so.1 with dlopen, resolves the newest symbol versions with
 * fallbacks, reads each device's identity once and its metrics on demand. Every failure is
 * counted and its reason kept per device and metric; NOT_SUPPORTED disables a metric for good and
 * GPU_IS_LOST retires the device while the others keep working. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpukit/error.h"
#include "gpukit/telemetry.h"
#include "nvml_api.h"

typedef gk__nvmlDevice_t dev_t_;
typedef gk__nvmlReturn_t (*fn_void)(void);
typedef gk__nvmlReturn_t (*fn_str)(char *, unsigned);
typedef gk__nvmlReturn_t (*fn_int)(int *);
typedef gk__nvmlReturn_t (*fn_uint)(unsigned *);
typedef gk__nvmlReturn_t (*fn_handle)(unsigned, dev_t_ *);
typedef gk__nvmlReturn_t (*fn_dev_str)(dev_t_, char *, unsigned);
typedef gk__nvmlReturn_t (*fn_dev_uint)(dev_t_, unsigned *);
typedef gk__nvmlReturn_t (*fn_dev_ull)(dev_t_, unsigned long long *);
typedef gk__nvmlReturn_t (*fn_dev_int_uint)(dev_t_, int, unsigned *);
typedef gk__nvmlReturn_t (*fn_dev_pci)(dev_t_, gk__nvmlPciInfo_t *);
typedef gk__nvmlReturn_t (*fn_dev_mem)(dev_t_, gk__nvmlMemory_t *);
typedef gk__nvmlReturn_t (*fn_dev_mem2)(dev_t_, gk__nvmlMemory_v2_t *);
typedef gk__nvmlReturn_t (*fn_dev_util)(dev_t_, gk__nvmlUtilization_t *);
typedef gk__nvmlReturn_t (*fn_dev_ecc)(dev_t_, int, int, unsigned long long *);
typedef gk__nvmlReturn_t (*fn_dev_procs)(dev_t_, unsigned *, void *);
typedef gk__nvmlReturn_t (*fn_dev_mig)(dev_t_, unsigned *, unsigned *);
typedef gk__nvmlReturn_t (*fn_dev_uint_dev)(dev_t_, unsigned, dev_t_ *);

enum { PROC_V3, PROC_V2, PROC_V1, PROC_NONE };
static const char *const proc_names[] = {"nvmlDeviceGetComputeRunningProcesses_v3",
                                         "nvmlDeviceGetComputeRunningProcesses_v2",
                                         "nvmlDeviceGetComputeRunningProcesses"};

typedef struct nvml_syms {
    fn_void init, shutdown;
    fn_str driver_version, nvml_version;
    fn_int cuda_version;
    fn_uint count;
    fn_handle handle;
    fn_dev_str name, uuid;
    fn_dev_pci pci;
    fn_dev_uint index;
    fn_dev_mem2 mem2;
    fn_dev_mem mem1;
    fn_dev_util util;
    fn_dev_int_uint temp, clock, pcie;
    fn_dev_uint power, power_limit, fan;
    fn_dev_ull energy, events_new, events_old;
    fn_dev_ecc ecc;
    fn_dev_procs procs[3];
    fn_dev_mig mig;
    fn_dev_uint mig_max, gi_id, ci_id;
    fn_dev_uint_dev mig_handle;
} nvml_syms;

#define REASON_LEN 160
#define MAX_STATS  64

typedef struct nvml_device {
    dev_t_ h;
    unsigned index;
    char name[96], uuid[96], bus[32];
    int lost;
    char lost_reason[REASON_LEN];
    uint32_t disabled;
    char reason[GK_GPU_NFIELDS][REASON_LEN];
    int mem_v1_only; /* the _v2 memory call was refused: use v1 */
    int events_old;  /* use the throttle-reasons name */
    int proc_level;  /* PROC_V3 .. PROC_NONE */
} nvml_device;

struct gk_nvml {
    void *lib;
    pthread_mutex_t lock;
    gk_logger logger;
    gk_nvml_info info;
    nvml_syms s;
    unsigned ndev;
    nvml_device *devs;
    uint64_t nerrors;
    gk_nvml_error_stat stats[MAX_STATS];
    size_t nstats;
    void *procbuf; /* scratch for process lists */
    unsigned procbuf_cap;
};

static const char *const field_names[] = {
#define GK__FIELD_NAME(e, name, tier, call) name,
    GK_GPU_FIELD_MAP(GK__FIELD_NAME)
#undef GK__FIELD_NAME
};

static const int field_tiers[] = {
#define GK__FIELD_TIER(e, name, tier, call) tier,
    GK_GPU_FIELD_MAP(GK__FIELD_TIER)
#undef GK__FIELD_TIER
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

void gk_nvml_config_default(gk_nvml_config *cfg)
{
    if (!cfg)
        return;
    const char *env = getenv("GK_NVML_LIBRARY");
    cfg->library = (env && *env) ? env : NULL;
    gk_logger_default(&cfg->logger);
}

static int64_t now_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Counts a failed call in the per-(call, code) table. Caller holds the lock. */
static void count_error(gk_nvml *n, const char *call, int code)
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

/* Records a failure of `field` on `d`. NOT_SUPPORTED disables the field, GPU_IS_LOST the
 * device. Returns 1 when the device is now lost. Caller holds the lock. */
static int field_failed(gk_nvml *n, nvml_device *d, gk_gpu_field field, const char *call, int code)
{
    count_error(n, call, code);
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
        *(void **)&s->procs[i] = sym(l, proc_names[i]);
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
        count_error(n, "nvmlDeviceGetHandleByIndex_v2", rc);
        d->lost = 1;
        snprintf(d->lost_reason, REASON_LEN, "nvmlDeviceGetHandleByIndex_v2: %s (%d)",
                 gk_nvml_code_name(rc), rc);
        return;
    }
    unsigned idx;
    if (n->s.index && n->s.index(d->h, &idx) == GK__NVML_SUCCESS)
        d->index = idx;
    if (n->s.name && (rc = n->s.name(d->h, d->name, sizeof d->name)) != GK__NVML_SUCCESS) {
        count_error(n, "nvmlDeviceGetName", rc);
        d->name[0] = '\0';
    }
    if (n->s.uuid && (rc = n->s.uuid(d->h, d->uuid, sizeof d->uuid)) != GK__NVML_SUCCESS) {
        count_error(n, "nvmlDeviceGetUUID", rc);
        d->uuid[0] = '\0';
    }
    gk__nvmlPciInfo_t pci;
    memset(&pci, 0, sizeof pci);
    if (n->s.pci && (rc = n->s.pci(d->h, &pci)) == GK__NVML_SUCCESS)
        snprintf(d->bus, sizeof d->bus, "%.*s", (int)sizeof pci.busId, pci.busId);
    else if (n->s.pci)
        count_error(n, "nvmlDeviceGetPciInfo_v3", rc);
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

int gk_nvml_open(const gk_nvml_config *cfg_in, gk_nvml **out, gk_nvml_info *info_out)
{
    gk_nvml_info scratch;
    gk_nvml_info *info = info_out ? info_out : &scratch;
    memset(info, 0, sizeof *info);
    if (!out)
        return -EINVAL;
    *out = NULL;
    gk_nvml_config cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        gk_nvml_config_default(&cfg);
    if (!cfg.library || !*cfg.library) {
        const char *env = getenv("GK_NVML_LIBRARY");
        cfg.library = (env && *env) ? env : "libnvidia-ml.so.1";
    }
    snprintf(info->library, sizeof info->library, "%s", cfg.library);
    gk_nvml *n = calloc(1, sizeof *n);
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
        n->devs = calloc(count, sizeof *n->devs);
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

void gk_nvml_get_info(gk_nvml *n, gk_nvml_info *out)
{
    if (!n || !out)
        return;
    pthread_mutex_lock(&n->lock);
    *out = n->info;
    pthread_mutex_unlock(&n->lock);
}

unsigned gk_nvml_device_count(const gk_nvml *n)
{
    return n ? n->ndev : 0;
}

int gk_nvml_probe(const gk_nvml_config *cfg, gk_nvml_info *out)
{
    gk_nvml *n = NULL;
    int rc = gk_nvml_open(cfg, &n, out);
    gk_nvml_close(n);
    return rc;
}

/* --- sampling ------------------------------------------------------------------------------ */

static int enabled(const nvml_device *d, gk_gpu_field f, unsigned tiers)
{
    return ((tiers >> field_tiers[f]) & 1u) && !((d->disabled >> f) & 1u);
}

/* A refused newer call version: fall back to an older one. */
static int is_refusal(int code)
{
    return code == GK__NVML_ERROR_NOT_SUPPORTED || code == GK__NVML_ERROR_FUNCTION_NOT_FOUND ||
           code == GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
}

enum { MEM_OK, MEM_LOST, MEM_FAILED };

/* Memory, _v2 first (used excludes the driver reserve), v1 after a refusal. */
static int read_memory(gk_nvml *n, nvml_device *d, gk_gpu_sample *o)
{
    int rc;
    if (!d->mem_v1_only) {
        gk__nvmlMemory_v2_t m2;
        memset(&m2, 0, sizeof m2);
        m2.version = GK__NVML_MEMORY_V2_VERSION;
        rc = n->s.mem2(d->h, &m2);
        if (rc == GK__NVML_SUCCESS) {
            o->memory_total = m2.total;
            o->memory_used = m2.used;
            o->memory_free = m2.free;
            o->memory_reserved = m2.reserved;
            o->memory_v2 = 1;
            return MEM_OK;
        }
        if (!is_refusal(rc) || !n->s.mem1)
            return field_failed(n, d, GK_GPU_MEMORY, "nvmlDeviceGetMemoryInfo_v2", rc) ? MEM_LOST
                                                                                       : MEM_FAILED;
        count_error(n, "nvmlDeviceGetMemoryInfo_v2", rc);
        gk_log(&n->logger, GK_LOG_INFO, "nvml",
               "gpu %u: nvmlDeviceGetMemoryInfo_v2 refused (%s); using v1 (used includes the "
               "driver reserve)",
               d->index, gk_nvml_code_name(rc));
        d->mem_v1_only = 1;
    }
    gk__nvmlMemory_t m1;
    rc = n->s.mem1(d->h, &m1);
    if (rc != GK__NVML_SUCCESS)
        return field_failed(n, d, GK_GPU_MEMORY, "nvmlDeviceGetMemoryInfo", rc) ? MEM_LOST
                                                                                : MEM_FAILED;
    o->memory_total = m1.total;
    o->memory_used = m1.used;
    o->memory_free = m1.free;
    o->memory_reserved = 0;
    o->memory_v2 = 0;
    return MEM_OK;
}

static int grow_procbuf(gk_nvml *n, unsigned want)
{
    if (want <= n->procbuf_cap)
        return 0;
    void *p = realloc(n->procbuf, (size_t)want * sizeof(gk__nvmlProcessInfo_t));
    if (!p)
        return -ENOMEM;
    n->procbuf = p;
    n->procbuf_cap = want;
    return 0;
}

/* Reads compute processes, falling back _v3 -> _v2 -> v1 on a refusal. Returns 1 when lost. */
static int read_processes(gk_nvml *n, nvml_device *d, gk_gpu_sample *o)
{
    if (grow_procbuf(n, GK_GPU_MAX_PROCESSES) != 0)
        return 0;
    while (d->proc_level != PROC_NONE) {
        int lvl = d->proc_level;
        if (!n->s.procs[lvl]) {
            d->proc_level++;
            continue;
        }
        unsigned cnt = n->procbuf_cap;
        int rc = n->s.procs[lvl](d->h, &cnt, n->procbuf);
        for (int tries = 0; rc == GK__NVML_ERROR_INSUFFICIENT_SIZE && tries < 2; tries++) {
            /* Processes started between calls: grow with some slack and ask again. */
            if (cnt > 65536 || grow_procbuf(n, cnt + 16) != 0)
                break;
            cnt = n->procbuf_cap;
            rc = n->s.procs[lvl](d->h, &cnt, n->procbuf);
        }
        if (rc == GK__NVML_SUCCESS) {
            o->processes_total = cnt;
            o->nprocesses = cnt < GK_GPU_MAX_PROCESSES ? cnt : GK_GPU_MAX_PROCESSES;
            for (unsigned i = 0; i < o->nprocesses; i++) {
                gk_gpu_process *p = &o->processes[i];
                if (lvl == PROC_V1) {
                    const gk__nvmlProcessInfo_v1_t *e =
                        (const gk__nvmlProcessInfo_v1_t *)n->procbuf + i;
                    p->pid = e->pid;
                    p->used_memory = e->usedGpuMemory;
                    p->gpu_instance_id = p->compute_instance_id = 0xFFFFFFFFu;
                } else {
                    const gk__nvmlProcessInfo_t *e = (const gk__nvmlProcessInfo_t *)n->procbuf + i;
                    p->pid = e->pid;
                    p->used_memory = e->usedGpuMemory;
                    p->gpu_instance_id = e->gpuInstanceId;
                    p->compute_instance_id = e->computeInstanceId;
                }
                p->has_memory = p->used_memory != GK__NVML_VALUE_NOT_AVAILABLE;
                if (!p->has_memory)
                    p->used_memory = 0;
            }
            o->valid |= 1u << GK_GPU_PROCESSES;
            return 0;
        }
        if (is_refusal(rc) && lvl < PROC_V1) {
            count_error(n, proc_names[lvl], rc);
            d->proc_level++;
            continue;
        }
        return field_failed(n, d, GK_GPU_PROCESSES, proc_names[lvl], rc);
    }
    return 0;
}

/* Enumerates the MIG devices of a GPU in MIG mode: ids, UUID and memory of each. Slots without
 * a device answer NOT_FOUND. A failure is counted and kept as the MIG field's reason without
 * invalidating the mode. Returns 1 when the parent GPU was lost. */
static int read_mig(gk_nvml *n, nvml_device *d, gk_gpu_sample *o)
{
    if (!n->s.mig_max || !n->s.mig_handle)
        return 0;
    unsigned max = 0;
    int rc = n->s.mig_max(d->h, &max);
    if (rc != GK__NVML_SUCCESS) {
        count_error(n, "nvmlDeviceGetMaxMigDeviceCount", rc);
        return rc == GK__NVML_ERROR_GPU_IS_LOST &&
               field_failed(n, d, GK_GPU_MIG, "nvmlDeviceGetMaxMigDeviceCount", rc);
    }
    for (unsigned i = 0; i < max && o->nmig < GK_GPU_MAX_MIG; i++) {
        dev_t_ h;
        rc = n->s.mig_handle(d->h, i, &h);
        if (rc == GK__NVML_ERROR_NOT_FOUND || rc == GK__NVML_ERROR_INVALID_ARGUMENT)
            continue; /* empty slot */
        if (rc != GK__NVML_SUCCESS) {
            if (field_failed(n, d, GK_GPU_MIG, "nvmlDeviceGetMigDeviceHandleByIndex", rc))
                return 1;
            continue;
        }
        gk_mig_instance *mi = &o->mig[o->nmig++];
        memset(mi, 0, sizeof *mi);
        mi->gpu_instance_id = mi->compute_instance_id = 0xFFFFFFFFu;
        if (n->s.gi_id && (rc = n->s.gi_id(h, &mi->gpu_instance_id)) != GK__NVML_SUCCESS)
            count_error(n, "nvmlDeviceGetGpuInstanceId", rc);
        if (n->s.ci_id && (rc = n->s.ci_id(h, &mi->compute_instance_id)) != GK__NVML_SUCCESS)
            count_error(n, "nvmlDeviceGetComputeInstanceId", rc);
        if (n->s.uuid && (rc = n->s.uuid(h, mi->uuid, sizeof mi->uuid)) != GK__NVML_SUCCESS) {
            count_error(n, "nvmlDeviceGetUUID", rc);
            mi->uuid[0] = '\0';
        }
        gk__nvmlMemory_v2_t m2;
        memset(&m2, 0, sizeof m2);
        m2.version = GK__NVML_MEMORY_V2_VERSION;
        gk__nvmlMemory_t m1;
        if (!d->mem_v1_only && n->s.mem2 && n->s.mem2(h, &m2) == GK__NVML_SUCCESS) {
            mi->memory_total = m2.total;
            mi->memory_used = m2.used;
            mi->memory_free = m2.free;
            mi->has_memory = 1;
        } else if ((rc = n->s.mem1 ? n->s.mem1(h, &m1) : GK__NVML_ERROR_FUNCTION_NOT_FOUND) ==
                   GK__NVML_SUCCESS) {
            mi->memory_total = m1.total;
            mi->memory_used = m1.used;
            mi->memory_free = m1.free;
            mi->has_memory = 1;
        } else {
            count_error(n, "nvmlDeviceGetMemoryInfo", rc);
        }
    }
    return 0;
}

/* Reads one simple field through `call`; returns 1 when the device was lost. */
#define READ_FIELD(field, callname, expr, on_ok)                                                   \
    do {                                                                                           \
        if (enabled(d, field, tiers)) {                                                            \
            int rc_ = (expr);                                                                      \
            if (rc_ == GK__NVML_SUCCESS) {                                                         \
                on_ok;                                                                             \
                o->valid |= 1u << (field);                                                         \
            } else if (field_failed(n, d, field, callname, rc_)) {                                 \
                goto out_lost;                                                                     \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static int sample_device(gk_nvml *n, nvml_device *d, unsigned tiers, gk_gpu_sample *o)
{
    unsigned u = 0, u2 = 0;
    unsigned long long ull = 0, ull2 = 0;
    if (enabled(d, GK_GPU_MEMORY, tiers)) {
        int mrc = read_memory(n, d, o);
        if (mrc == MEM_LOST)
            goto out_lost;
        if (mrc == MEM_OK)
            o->valid |= 1u << GK_GPU_MEMORY;
    }
    gk__nvmlUtilization_t ut;
    READ_FIELD(GK_GPU_UTILIZATION, "nvmlDeviceGetUtilizationRates", n->s.util(d->h, &ut), {
        o->utilization_gpu = ut.gpu / 100.0;
        o->utilization_memory = ut.memory / 100.0;
    });
    READ_FIELD(GK_GPU_TEMPERATURE, "nvmlDeviceGetTemperature",
               n->s.temp(d->h, GK__NVML_TEMPERATURE_GPU, &u), o->temperature_celsius = u);
    READ_FIELD(GK_GPU_POWER, "nvmlDeviceGetPowerUsage", n->s.power(d->h, &u),
               o->power_watts = u / 1000.0);
    READ_FIELD(GK_GPU_POWER_LIMIT, "nvmlDeviceGetEnforcedPowerLimit", n->s.power_limit(d->h, &u),
               o->power_limit_watts = u / 1000.0);
    READ_FIELD(GK_GPU_CLOCK_SM, "nvmlDeviceGetClockInfo", n->s.clock(d->h, GK__NVML_CLOCK_SM, &u),
               o->clock_sm_hz = u * 1e6);
    READ_FIELD(GK_GPU_CLOCK_MEM, "nvmlDeviceGetClockInfo", n->s.clock(d->h, GK__NVML_CLOCK_MEM, &u),
               o->clock_mem_hz = u * 1e6);
    READ_FIELD(GK_GPU_CLOCK_GRAPHICS, "nvmlDeviceGetClockInfo",
               n->s.clock(d->h, GK__NVML_CLOCK_GRAPHICS, &u), o->clock_graphics_hz = u * 1e6);
    if (enabled(d, GK_GPU_CLOCK_EVENTS, tiers) && !d->events_old) {
        int rc = n->s.events_new(d->h, &ull);
        if (rc == GK__NVML_SUCCESS) {
            o->clock_event_reasons = ull;
            o->valid |= 1u << GK_GPU_CLOCK_EVENTS;
        } else if (is_refusal(rc) && n->s.events_old) {
            count_error(n, "nvmlDeviceGetCurrentClocksEventReasons", rc);
            d->events_old = 1;
        } else if (field_failed(n, d, GK_GPU_CLOCK_EVENTS, "nvmlDeviceGetCurrentClocksEventReasons",
                                rc)) {
            goto out_lost;
        }
    }
    if (d->events_old)
        READ_FIELD(GK_GPU_CLOCK_EVENTS, "nvmlDeviceGetCurrentClocksThrottleReasons",
                   n->s.events_old(d->h, &ull), o->clock_event_reasons = ull);
    READ_FIELD(GK_GPU_FAN, "nvmlDeviceGetFanSpeed", n->s.fan(d->h, &u), o->fan_ratio = u / 100.0);
    READ_FIELD(GK_GPU_ENERGY, "nvmlDeviceGetTotalEnergyConsumption", n->s.energy(d->h, &ull),
               o->energy_joules = (double)ull / 1000.0);
    if (enabled(d, GK_GPU_ECC, tiers)) {
        int rc = n->s.ecc(d->h, GK__NVML_MEMORY_ERROR_CORRECTED, GK__NVML_VOLATILE_ECC, &ull);
        if (rc == GK__NVML_SUCCESS)
            rc = n->s.ecc(d->h, GK__NVML_MEMORY_ERROR_UNCORRECTED, GK__NVML_VOLATILE_ECC, &ull2);
        if (rc == GK__NVML_SUCCESS) {
            o->ecc_corrected = ull;
            o->ecc_uncorrected = ull2;
            o->valid |= 1u << GK_GPU_ECC;
        } else if (field_failed(n, d, GK_GPU_ECC, "nvmlDeviceGetTotalEccErrors", rc)) {
            goto out_lost;
        }
    }
    if (enabled(d, GK_GPU_PROCESSES, tiers) && read_processes(n, d, o))
        goto out_lost;
    READ_FIELD(GK_GPU_MIG, "nvmlDeviceGetMigMode", n->s.mig(d->h, &u, &u2), {
        o->mig_current = u;
        o->mig_pending = u2;
    });
    if (((o->valid >> GK_GPU_MIG) & 1u) && o->mig_current == 1 && read_mig(n, d, o))
        goto out_lost;
    if (enabled(d, GK_GPU_PCIE, tiers)) {
        int rc = n->s.pcie(d->h, GK__NVML_PCIE_TX_BYTES, &u);
        if (rc == GK__NVML_SUCCESS)
            rc = n->s.pcie(d->h, GK__NVML_PCIE_RX_BYTES, &u2);
        if (rc == GK__NVML_SUCCESS) {
            o->pcie_tx_bytes_per_second = u * 1024.0;
            o->pcie_rx_bytes_per_second = u2 * 1024.0;
            o->valid |= 1u << GK_GPU_PCIE;
        } else if (field_failed(n, d, GK_GPU_PCIE, "nvmlDeviceGetPcieThroughput", rc)) {
            goto out_lost;
        }
    }
    return 0;
out_lost:
    o->lost = 1;
    o->valid = 0;
    return GK_EDEVLOST;
}

int gk_nvml_sample(gk_nvml *n, unsigned dev, unsigned tiers, gk_gpu_sample *out)
{
    if (!n || !out)
        return -EINVAL;
    if (dev >= n->ndev)
        return -ERANGE;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&n->lock);
    nvml_device *d = &n->devs[dev];
    out->index = d->index;
    memcpy(out->name, d->name, sizeof out->name);
    memcpy(out->uuid, d->uuid, sizeof out->uuid);
    memcpy(out->pci_bus_id, d->bus, sizeof out->pci_bus_id);
    out->t_ns = now_realtime_ns();
    int rc;
    if (d->lost) {
        out->lost = 1;
        rc = GK_EDEVLOST;
    } else {
        rc = sample_device(n, d, tiers, out);
    }
    pthread_mutex_unlock(&n->lock);
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
