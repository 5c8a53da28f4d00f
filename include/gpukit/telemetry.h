/* Telemetry: readers of the machine.
 *
 *   NVML   GPU state through libnvidia-ml.so.1, loaded at run time with dlopen
 *          (gk_nvml_config.library, or GK_NVML_LIBRARY through gk_nvml_config_from_env,
 *          overrides). No NVIDIA header or library is needed to build.
 *          Newest symbol versions are tried first (memory _v2, clocks-event reasons, processes
 *          _v3), with fallbacks for older drivers.
 *   host   CPU, memory, swap, load, filesystems, disks, network and a process tree from /proc
 *          and statvfs (gk_host_config.proc_root, or GK_PROC_ROOT through
 *          gk_host_config_from_env, replaces "/proc" for tests).
 *
 * Every GPU metric has a validity bit: a reading that failed is not valid in that sample; a
 * metric whose call answered NOT_SUPPORTED (or whose symbol is missing) is disabled for good and
 * never asked again; GPU_IS_LOST marks the device lost, and the other devices keep working. The
 * reason of every failure is kept per device and metric (gk_nvml_field_reason). Units are base
 * units: bytes, ratios 0-1, degrees Celsius, watts, joules, hertz. */
#ifndef GPUKIT_TELEMETRY_H
#define GPUKIT_TELEMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- NVML ---------------------------------------------------------------------------------- */

typedef struct gk_nvml gk_nvml;

/* The GPU metrics: XX(ENUM, short name, tier, NVML call). Tiers: 0 fast (every tick), 1 slow
 * (every few ticks), 2 opt-in (PCIe throughput: each counter blocks for 20 ms). */
#define GK_GPU_FIELD_MAP(XX)                                                                       \
    XX(MEMORY, "memory", 0, "nvmlDeviceGetMemoryInfo")                                             \
    XX(UTILIZATION, "utilization", 0, "nvmlDeviceGetUtilizationRates")                             \
    XX(TEMPERATURE, "temperature", 0, "nvmlDeviceGetTemperature")                                  \
    XX(POWER, "power", 0, "nvmlDeviceGetPowerUsage")                                               \
    XX(POWER_LIMIT, "power_limit", 1, "nvmlDeviceGetEnforcedPowerLimit")                           \
    XX(CLOCK_SM, "clock_sm", 0, "nvmlDeviceGetClockInfo")                                          \
    XX(CLOCK_MEM, "clock_mem", 0, "nvmlDeviceGetClockInfo")                                        \
    XX(CLOCK_GRAPHICS, "clock_graphics", 0, "nvmlDeviceGetClockInfo")                              \
    XX(CLOCK_EVENTS, "clock_events", 0, "nvmlDeviceGetCurrentClocksEventReasons")                  \
    XX(FAN, "fan", 0, "nvmlDeviceGetFanSpeed")                                                     \
    XX(ENERGY, "energy", 1, "nvmlDeviceGetTotalEnergyConsumption")                                 \
    XX(ECC, "ecc", 1, "nvmlDeviceGetTotalEccErrors")                                               \
    XX(PROCESSES, "processes", 1, "nvmlDeviceGetComputeRunningProcesses")                          \
    XX(MIG, "mig", 1, "nvmlDeviceGetMigMode")                                                      \
    XX(PCIE, "pcie", 2, "nvmlDeviceGetPcieThroughput")

typedef enum gk_gpu_field {
#define GK__GPU_FIELD_ENUM(e, name, tier, call) GK_GPU_##e,
    GK_GPU_FIELD_MAP(GK__GPU_FIELD_ENUM)
#undef GK__GPU_FIELD_ENUM
        GK_GPU_NFIELDS
} gk_gpu_field;

/* Tier masks for gk_nvml_sample. */
enum { GK_TIER_FAST = 1u << 0, GK_TIER_SLOW = 1u << 1, GK_TIER_PCIE = 1u << 2 };

#define GK_GPU_MAX_PROCESSES 64
#define GK_GPU_MAX_MIG       8

/* One MIG device (a GPU instance with a compute instance) of a GPU in MIG mode. */
typedef struct gk_mig_instance {
    unsigned gpu_instance_id, compute_instance_id;
    char uuid[96];                                   /* "MIG-..." ("" when unreadable) */
    int has_memory;                                  /* 1 when the memory fields were read */
    uint64_t memory_total, memory_used, memory_free; /* bytes */
} gk_mig_instance;

typedef struct gk_gpu_process {
    uint32_t pid;                 /* host pid as NVML reports it */
    uint64_t used_memory;         /* bytes; valid when has_memory */
    int has_memory;               /* 0 when NVML gave "not available" */
    uint32_t gpu_instance_id;     /* 0xFFFFFFFF when MIG is off or unknown */
    uint32_t compute_instance_id; /* 0xFFFFFFFF when MIG is off or unknown */
} gk_gpu_process;

/* One reading of one GPU. Fields are meaningful only where (valid >> GK_GPU_x) & 1. */
typedef struct gk_gpu_sample {
    size_t size;         /* bytes filled (see gpukit/version.h) */
    unsigned index;      /* NVML index */
    char name[96];       /* "NVIDIA A100-SXM4-40GB" */
    char uuid[96];       /* "GPU-..." */
    char pci_bus_id[32]; /* "00000000:07:00.0" */
    int lost;            /* the device answered GPU_IS_LOST; nothing else is read */
    uint32_t valid;      /* bit per gk_gpu_field read successfully in this sample */
    int64_t t_ns;        /* CLOCK_REALTIME of the reading, ns */
    uint64_t memory_total, memory_used, memory_free, memory_reserved; /* bytes */
    int memory_v2; /* 1 when read with the _v2 call (used excludes the reserve) */
    double utilization_gpu, utilization_memory; /* 0-1 */
    double temperature_celsius;
    double power_watts, power_limit_watts;
    double energy_joules; /* since the driver loaded (a counter) */
    double clock_sm_hz, clock_mem_hz, clock_graphics_hz;
    uint64_t clock_event_reasons; /* NVML bitmask (0x4 SW power cap, 0x20 SW thermal, ...) */
    double fan_ratio;             /* 0-1 */
    uint64_t ecc_corrected, ecc_uncorrected; /* volatile totals (counters) */
    double pcie_tx_bytes_per_second, pcie_rx_bytes_per_second;
    unsigned mig_current, mig_pending; /* 1 enabled, 0 disabled */
    unsigned nmig;                     /* MIG devices found (with the MIG field, mode on) */
    gk_mig_instance mig[GK_GPU_MAX_MIG];
    unsigned nprocesses;      /* entries in processes[] */
    unsigned processes_total; /* processes NVML reported (may exceed the array) */
    gk_gpu_process processes[GK_GPU_MAX_PROCESSES];
} gk_gpu_sample;

typedef struct gk_nvml_config {
    size_t size;         /* sizeof(gk_nvml_config) (set by gk_nvml_config_default) */
    const char *library; /* NULL: "libnvidia-ml.so.1" (copied) */
    gk_logger logger;    /* where failures are logged (debug level) */
} gk_nvml_config;

/* What is known about NVML: for `gpukit info` and logs. */
typedef struct gk_nvml_info {
    size_t size;             /* bytes filled (see gpukit/version.h) */
    int available;           /* 1 when the library loaded and nvmlInit succeeded */
    char library[256];       /* the path or name given to dlopen */
    char reason[256];        /* why it is unavailable ("" when available) */
    char driver_version[80]; /* "550.54.15"; "" when unknown */
    char nvml_version[80];   /* "12.550.54.15"; "" when unknown */
    int cuda_driver_version; /* 12040 for CUDA 12.4; 0 when unknown */
    unsigned device_count;
} gk_nvml_info;

/* Fills `cfg` with the defaults (library NULL, logger gk_logger_default()). Reads no environment
 * variable. */
GK_API void gk_nvml_config_default(gk_nvml_config *cfg, size_t size);
#define gk_nvml_config_default(cfg) (gk_nvml_config_default)((cfg), sizeof *(cfg))

/* Applies the environment to `cfg`: GK_LOG (the logger's level) and GK_NVML_LIBRARY (library,
 * pointing into the environment). Returns 0 or -EINVAL naming the bad variable. */
GK_API int gk_nvml_config_from_env(gk_nvml_config *cfg);

/* Loads NVML, initialises it and reads each device's identity. On success *out is a handle
 * (close with gk_nvml_close) and 0 is returned. Failures: GK_ENOGPU (library not found, a
 * required symbol missing, or nvmlInit failed: no driver, no permission...), -EINVAL, -ENOMEM;
 * *out is then NULL. `info` (may be NULL) is filled either way, with the reason on failure, e.g.
 * "no NVIDIA driver: libnvidia-ml.so.1 not found (...); GPU metrics are off". A device whose
 * handle cannot be obtained, or that answers GPU_IS_LOST while its identity is read, is counted
 * but marked lost; a name or UUID that cannot be read is left empty. `cfg` NULL is the
 * environment's form: gk_nvml_config_default() + gk_nvml_config_from_env(). */
GK_API int gk_nvml_open(const gk_nvml_config *cfg, gk_nvml **out, gk_nvml_info *info, size_t size);
#define gk_nvml_open(cfg, out, info) (gk_nvml_open)((cfg), (out), (info), sizeof *(info))

/* Shuts NVML down and unloads it. NULL is a no-op. */
GK_API void gk_nvml_close(gk_nvml *n);

/* The info of an open handle (thread-safe). Returns 0 or -EINVAL. */
GK_API int gk_nvml_get_info(gk_nvml *n, gk_nvml_info *out, size_t size);
#define gk_nvml_get_info(n, out) (gk_nvml_get_info)((n), (out), sizeof *(out))

/* Devices found at open. */
GK_API unsigned gk_nvml_device_count(const gk_nvml *n);

/* Reads device `dev`: identity always, then the metrics of the tiers in `tiers` (GK_TIER_*)
 * that are still supported. Returns 0 (check out->valid per metric), GK_EDEVLOST when the device
 * is lost (now or before; out->lost is 1), -ERANGE for a bad index or -EINVAL. Thread-safe
 * (serialised by the handle's mutex); PCIe blocks about 40 ms. */
GK_API int gk_nvml_sample(gk_nvml *n, unsigned dev, unsigned tiers, gk_gpu_sample *out,
                          size_t size);
#define gk_nvml_sample(n, dev, tiers, out)                                                         \
    (gk_nvml_sample)((n), (dev), (tiers), (out), sizeof *(out))

/* 1 while `field` of device `dev` may still be read; 0 once disabled (NOT_SUPPORTED, missing
 * symbol) or when the device is lost or out of range. Thread-safe. */
GK_API int gk_nvml_field_supported(gk_nvml *n, unsigned dev, gk_gpu_field field);

/* The last failure of `field` on `dev` as text ("nvmlDeviceGetPowerUsage: Not Supported (3)"),
 * copied into buf; "" when it never failed. Returns buf. Thread-safe. */
GK_API char *gk_nvml_field_reason(gk_nvml *n, unsigned dev, gk_gpu_field field, char *buf,
                                  size_t len);

/* Why device `dev` is lost ("" when it is not). Copies into buf; returns buf. Thread-safe. */
GK_API char *gk_nvml_device_reason(gk_nvml *n, unsigned dev, char *buf, size_t len);

/* Count of failed NVML calls since open (self-metric). Thread-safe. */
GK_API uint64_t gk_nvml_error_count(gk_nvml *n);

/* Failed calls grouped by NVML function and return code. */
typedef struct gk_nvml_error_stat {
    char call[64]; /* NVML function name */
    int code;      /* nvmlReturn_t value */
    uint64_t count;
} gk_nvml_error_stat;

/* Copies up to `cap` groups into buf; returns how many exist (may exceed cap). Thread-safe. */
GK_API size_t gk_nvml_error_stats(gk_nvml *n, gk_nvml_error_stat *buf, size_t cap);

/* The short name of a field ("memory", "power"); "unknown" when out of range. */
GK_API const char *gk_gpu_field_name(gk_gpu_field field);

/* NVML's text for a return code ("Not Supported"), from gpukit's own table. Static storage. */
GK_API const char *gk_nvml_code_name(int code);

/* Probes NVML for `gpukit info`: opens it with `cfg` (NULL: as gk_nvml_open), fills `out`
 * (availability, reason, versions, device count) and closes it. Returns what gk_nvml_open
 * returned. */
GK_API int gk_nvml_probe(const gk_nvml_config *cfg, gk_nvml_info *out, size_t size);
#define gk_nvml_probe(cfg, out) (gk_nvml_probe)((cfg), (out), sizeof *(out))

/* --- host ---------------------------------------------------------------------------------- */

typedef struct gk_host gk_host;

#define GK_HOST_MAX_CPUS  512
#define GK_HOST_MAX_FS    32
#define GK_HOST_MAX_DISKS 32
#define GK_HOST_MAX_NETS  32

/* Sections of a host sample (bits of gk_host_sample.valid and of the `what` argument). */
enum {
    GK_HOST_CPU = 1u << 0,    /* /proc/stat */
    GK_HOST_MEMORY = 1u << 1, /* /proc/meminfo */
    GK_HOST_LOAD = 1u << 2,   /* /proc/loadavg */
    GK_HOST_FS = 1u << 3,     /* /proc/mounts + statvfs (pseudo and network filesystems skipped) */
    GK_HOST_DISK = 1u << 4,   /* /proc/diskstats */
    GK_HOST_NET = 1u << 5,    /* /proc/net/dev */
    GK_HOST_ALL = 0x3F
};

/* CPU time by mode, in seconds (counters since boot). */
typedef struct gk_cpu_times {
    double user, nice, system, idle, iowait, irq, softirq, steal;
} gk_cpu_times;

typedef struct gk_fs_stat {
    char mountpoint[256];
    char device[128];
    char fstype[32];
    uint64_t size_bytes;  /* f_blocks * f_frsize */
    uint64_t free_bytes;  /* f_bfree * f_frsize (root's view) */
    uint64_t avail_bytes; /* f_bavail * f_frsize (users' view) */
} gk_fs_stat;

typedef struct gk_disk_stat {
    char name[32];
    uint64_t reads, writes;             /* completed operations (counters) */
    uint64_t read_bytes, written_bytes; /* sectors * 512 (counters) */
    double io_time_seconds;             /* time spent doing I/O (counter) */
} gk_disk_stat;

typedef struct gk_net_stat {
    char name[32];
    uint64_t rx_bytes, tx_bytes, rx_packets, tx_packets; /* counters */
} gk_net_stat;

/* One host reading. Sections are meaningful where (valid & GK_HOST_x). */
typedef struct gk_host_sample {
    size_t size; /* bytes filled (see gpukit/version.h) */
    uint32_t valid;
    int64_t t_ns;                                                         /* CLOCK_REALTIME, ns */
    gk_cpu_times cpu;                                                     /* all CPUs together */
    uint64_t mem_total, mem_free, mem_available, mem_buffers, mem_cached; /* bytes */
    uint64_t swap_total, swap_free;                                       /* bytes */
    double load1, load5, load15;
    unsigned ncpus;  /* entries in per_cpu */
    unsigned nfs;    /* entries in fs */
    unsigned ndisks; /* entries in disks */
    unsigned nnets;  /* entries in nets */
    gk_cpu_times per_cpu[GK_HOST_MAX_CPUS];
    gk_fs_stat fs[GK_HOST_MAX_FS];
    gk_disk_stat disks[GK_HOST_MAX_DISKS];
    gk_net_stat nets[GK_HOST_MAX_NETS];
} gk_host_sample;

/* A process and all its descendants, summed. */
typedef struct gk_proc_tree {
    size_t size; /* bytes filled (see gpukit/version.h) */
    int root_pid;
    char root_comm[64]; /* the root's command name */
    unsigned nprocs;    /* the root plus its descendants */
    unsigned children;  /* descendants (all generations) */
    /* user + system time of every process plus that of the children each has waited for
     * (cutime + cstime), so exited children stay counted while their reaper is in the tree;
     * a counter, except when a child re-parented outside the tree is reaped there */
    double cpu_seconds;
    uint64_t rss_bytes; /* resident set sizes added up (shared pages counted per process) */
    uint64_t pss_bytes; /* proportional set sizes of the processes whose smaps_rollup was read */
    int pss_complete;   /* 1 when PSS was readable for every process */
    unsigned threads;
    uint64_t read_bytes, write_bytes; /* storage I/O of the processes whose io file was read */
    int io_complete;                  /* 1 when /proc/PID/io was readable for every process */
} gk_proc_tree;

/* A worker of a launcher: the topmost process of a tree with a rank in its environment (RANK,
 * SLURM_PROCID or OMPI_COMM_WORLD_RANK: what torchrun, srun and mpirun set), with its
 * descendants. */
#define GK_WORKER_MAX_PIDS 64
typedef struct gk_proc_worker {
    size_t size; /* bytes filled (see gpukit/version.h) */
    int pid;     /* the worker process */
    int rank;
    int local_rank;     /* -1 when not set */
    unsigned nprocs;    /* the worker and its descendants */
    double cpu_seconds; /* as gk_proc_tree's */
    uint64_t rss_bytes;
    unsigned threads;
    unsigned npids;               /* entries in pids */
    int pids[GK_WORKER_MAX_PIDS]; /* its processes' pids, with their pids in nested pid
                                     namespaces (NSpid), to match NVML's process list */
} gk_proc_worker;

typedef struct gk_host_config {
    size_t size;           /* sizeof(gk_host_config) (set by gk_host_config_default) */
    const char *proc_root; /* NULL: "/proc" (copied) */
} gk_host_config;

/* Fills `cfg` with the defaults. Reads no environment variable. */
GK_API void gk_host_config_default(gk_host_config *cfg, size_t size);
#define gk_host_config_default(cfg) (gk_host_config_default)((cfg), sizeof *(cfg))

/* Applies GK_PROC_ROOT (proc_root, pointing into the environment) to `cfg`. Returns 0 or
 * -EINVAL. */
GK_API int gk_host_config_from_env(gk_host_config *cfg);

/* Creates a host reader. Returns 0, -ENOENT when proc_root/stat cannot be read, -EINVAL or
 * -ENOMEM, with the message in gk_last_error(). `cfg` NULL is the environment's form:
 * gk_host_config_default() + gk_host_config_from_env(). Close with gk_host_close. */
GK_API int gk_host_open(const gk_host_config *cfg, gk_host **out);

/* Frees the reader; NULL is a no-op. */
GK_API void gk_host_close(gk_host *h);

/* The proc root in use ("/proc"). */
GK_API const char *gk_host_proc_root(const gk_host *h);

/* Reads the sections in `what` (GK_HOST_*) into `out` (which is zeroed first). Returns 0 when
 * every asked section was read, or the error of the first that failed (-ENOENT, -EIO, GK_ECORRUPT
 * for an unparsable file); sections read are still marked in out->valid. Not thread-safe per
 * handle (it reuses a buffer); use one handle per thread. */
GK_API int gk_host_sample_read(gk_host *h, unsigned what, gk_host_sample *out, size_t size);
#define gk_host_sample_read(h, what, out) (gk_host_sample_read)((h), (what), (out), sizeof *(out))

/* Sums the process tree rooted at `pid` (the root and every descendant found by scanning
 * proc_root/[0-9]*). Returns 0, -ENOENT when the root does not exist, -EINVAL or -ENOMEM.
 * Processes that exit during the scan are skipped. Not thread-safe per handle. */
GK_API int gk_host_proc_tree(gk_host *h, int pid, gk_proc_tree *out, size_t size);
#define gk_host_proc_tree(h, pid, out) (gk_host_proc_tree)((h), (pid), (out), sizeof *(out))

/* The workers in the tree rooted at `root` (see gk_proc_worker; none for a single process
 * without a launcher's rank), into out[0..cap) (elements `size` bytes apart: the macro passes
 * sizeof *out), breadth-first; *n receives how many. A process whose environment cannot be read
 * (another user's) counts as no worker. Returns 0, -ENOENT when root does not exist, -EINVAL or
 * -ENOMEM. Not thread-safe per handle. */
GK_API int gk_host_proc_workers(gk_host *h, int root, gk_proc_worker *out, size_t cap, size_t *n,
                                size_t size);
#define gk_host_proc_workers(h, root, out, cap, n)                                                 \
    (gk_host_proc_workers)((h), (root), (out), (cap), (n), sizeof *(out))

/* The rank (and local rank, may be NULL) of process `pid` from its environment; -1 when it has
 * none. Returns 0, or the error of reading /proc/PID/environ (-ENOENT, -EACCES). Not thread-safe
 * per handle. */
GK_API int gk_host_proc_rank(gk_host *h, int pid, int *rank, int *local_rank);

#ifdef __cplusplus
}
#endif
#endif
