/* Private parts of the NVML reader shared by the loader (nvml.c) and the sampler
 * (nvml_sample.c): the resolved symbols, the per-device state and failure bookkeeping. */
#ifndef GK_NVML_INT_H
#define GK_NVML_INT_H

#include <pthread.h>
#include <stdint.h>

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

/* NVML's names of the process calls, newest first (indexed by PROC_*). */
extern const char *const gk__nvml_proc_names[3];

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

/* Counts a failed call in the per-(call, code) table. Caller holds the lock. */
void gk__nvml_count_error(gk_nvml *n, const char *call, int code);

/* Records a failure of `field` on `d`: NOT_SUPPORTED (or FUNCTION_NOT_FOUND) disables the field,
 * GPU_IS_LOST the device. Returns 1 when the device is now lost. Caller holds the lock. */
int gk__nvml_field_failed(gk_nvml *n, nvml_device *d, gk_gpu_field field, const char *call,
                          int code);

#endif
