/* The NVML sampler: reads the metrics of one device per call, tier by tier, with the newest-first
 * fallbacks (memory _v2 -> v1, clocks-event -> throttle reasons, processes _v3 -> _v2 -> v1),
 * MIG enumeration, and a validity bit per metric. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "nvml_int.h"

static const int field_tiers[] = {
#define GK__FIELD_TIER(e, name, tier, call) tier,
    GK_GPU_FIELD_MAP(GK__FIELD_TIER)
#undef GK__FIELD_TIER
};

static int64_t now_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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
            return gk__nvml_field_failed(n, d, GK_GPU_MEMORY, "nvmlDeviceGetMemoryInfo_v2", rc)
                       ? MEM_LOST
                       : MEM_FAILED;
        gk__nvml_count_error(n, "nvmlDeviceGetMemoryInfo_v2", rc);
        gk_log(&n->logger, GK_LOG_INFO, "nvml",
               "gpu %u: nvmlDeviceGetMemoryInfo_v2 refused (%s); using v1 (used includes the "
               "driver reserve)",
               d->index, gk_nvml_code_name(rc));
        d->mem_v1_only = 1;
    }
    gk__nvmlMemory_t m1;
    rc = n->s.mem1(d->h, &m1);
    if (rc != GK__NVML_SUCCESS)
        return gk__nvml_field_failed(n, d, GK_GPU_MEMORY, "nvmlDeviceGetMemoryInfo", rc)
                   ? MEM_LOST
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
    void *p = gk__realloc(n->procbuf, (size_t)want * sizeof(gk__nvmlProcessInfo_t));
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
            gk__nvml_count_error(n, gk__nvml_proc_names[lvl], rc);
            d->proc_level++;
            continue;
        }
        return gk__nvml_field_failed(n, d, GK_GPU_PROCESSES, gk__nvml_proc_names[lvl], rc);
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
        gk__nvml_count_error(n, "nvmlDeviceGetMaxMigDeviceCount", rc);
        return rc == GK__NVML_ERROR_GPU_IS_LOST &&
               gk__nvml_field_failed(n, d, GK_GPU_MIG, "nvmlDeviceGetMaxMigDeviceCount", rc);
    }
    for (unsigned i = 0; i < max && o->nmig < GK_GPU_MAX_MIG; i++) {
        dev_t_ h;
        rc = n->s.mig_handle(d->h, i, &h);
        if (rc == GK__NVML_ERROR_NOT_FOUND || rc == GK__NVML_ERROR_INVALID_ARGUMENT)
            continue; /* empty slot */
        if (rc != GK__NVML_SUCCESS) {
            if (gk__nvml_field_failed(n, d, GK_GPU_MIG, "nvmlDeviceGetMigDeviceHandleByIndex", rc))
                return 1;
            continue;
        }
        gk_mig_instance *mi = &o->mig[o->nmig++];
        memset(mi, 0, sizeof *mi);
        mi->gpu_instance_id = mi->compute_instance_id = 0xFFFFFFFFu;
        if (n->s.gi_id && (rc = n->s.gi_id(h, &mi->gpu_instance_id)) != GK__NVML_SUCCESS)
            gk__nvml_count_error(n, "nvmlDeviceGetGpuInstanceId", rc);
        if (n->s.ci_id && (rc = n->s.ci_id(h, &mi->compute_instance_id)) != GK__NVML_SUCCESS)
            gk__nvml_count_error(n, "nvmlDeviceGetComputeInstanceId", rc);
        if (n->s.uuid && (rc = n->s.uuid(h, mi->uuid, sizeof mi->uuid)) != GK__NVML_SUCCESS) {
            gk__nvml_count_error(n, "nvmlDeviceGetUUID", rc);
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
            gk__nvml_count_error(n, "nvmlDeviceGetMemoryInfo", rc);
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
            } else if (gk__nvml_field_failed(n, d, field, callname, rc_)) {                        \
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
            gk__nvml_count_error(n, "nvmlDeviceGetCurrentClocksEventReasons", rc);
            d->events_old = 1;
        } else if (gk__nvml_field_failed(n, d, GK_GPU_CLOCK_EVENTS,
                                         "nvmlDeviceGetCurrentClocksEventReasons", rc)) {
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
        } else if (gk__nvml_field_failed(n, d, GK_GPU_ECC, "nvmlDeviceGetTotalEccErrors", rc)) {
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
        } else if (gk__nvml_field_failed(n, d, GK_GPU_PCIE, "nvmlDeviceGetPcieThroughput", rc)) {
            goto out_lost;
        }
    }
    return 0;
out_lost:
    o->lost = 1;
    o->valid = 0;
    return GK_EDEVLOST;
}

int(gk_nvml_sample)(gk_nvml *n, unsigned dev, unsigned tiers, gk_gpu_sample *user, size_t size)
{
    if (!n)
        return gk__error(-EINVAL, "gk_nvml_sample: handle is NULL");
    int rc = gk__sized_check(user, size, "gk_gpu_sample");
    if (rc)
        return rc;
    if (dev >= n->ndev)
        return gk__error(-ERANGE, "gk_nvml_sample: device %u does not exist (%u devices)", dev,
                         n->ndev);
    gk_gpu_sample sample, *out = &sample;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&n->lock);
    nvml_device *d = &n->devs[dev];
    out->index = d->index;
    memcpy(out->name, d->name, sizeof out->name);
    memcpy(out->uuid, d->uuid, sizeof out->uuid);
    memcpy(out->pci_bus_id, d->bus, sizeof out->pci_bus_id);
    out->t_ns = now_realtime_ns();
    if (d->lost) {
        out->lost = 1;
        rc = GK_EDEVLOST;
    } else {
        rc = sample_device(n, d, tiers, out);
    }
    pthread_mutex_unlock(&n->lock);
    (void)gk__sized_put(user, size, out, sizeof *out, "gk_gpu_sample");
    if (rc == GK_EDEVLOST)
        return gk__error(rc, "GPU %u (%s) is lost", out->index, out->uuid);
    return rc;
}
