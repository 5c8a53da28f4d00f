/* gpukit's own declarations of the parts of the NVML C API it uses (no NVIDIA header needed).
 * Layouts and values follow NVML's public nvml.h (API 12/13); sizes are checked at compile time.
 * The fake library used by the tests includes this header too. */
#ifndef GK_NVML_API_H
#define GK_NVML_API_H

#include <assert.h>

typedef struct gk__nvmlDevice_st *gk__nvmlDevice_t;
typedef int gk__nvmlReturn_t;

enum {
    GK__NVML_SUCCESS = 0,
    GK__NVML_ERROR_UNINITIALIZED = 1,
    GK__NVML_ERROR_INVALID_ARGUMENT = 2,
    GK__NVML_ERROR_NOT_SUPPORTED = 3,
    GK__NVML_ERROR_NO_PERMISSION = 4,
    GK__NVML_ERROR_NOT_FOUND = 6,
    GK__NVML_ERROR_INSUFFICIENT_SIZE = 7,
    GK__NVML_ERROR_DRIVER_NOT_LOADED = 9,
    GK__NVML_ERROR_TIMEOUT = 10,
    GK__NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    GK__NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    GK__NVML_ERROR_GPU_IS_LOST = 15,
    GK__NVML_ERROR_NO_DATA = 21,
    GK__NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    GK__NVML_ERROR_UNKNOWN = 999
};

enum { GK__NVML_TEMPERATURE_GPU = 0 };
enum { GK__NVML_CLOCK_GRAPHICS = 0, GK__NVML_CLOCK_SM = 1, GK__NVML_CLOCK_MEM = 2 };
enum { GK__NVML_PCIE_TX_BYTES = 0, GK__NVML_PCIE_RX_BYTES = 1 };
enum { GK__NVML_MEMORY_ERROR_CORRECTED = 0, GK__NVML_MEMORY_ERROR_UNCORRECTED = 1 };
enum { GK__NVML_VOLATILE_ECC = 0, GK__NVML_AGGREGATE_ECC = 1 };

/* NVML_VALUE_NOT_AVAILABLE as an unsigned long long. */
#define GK__NVML_VALUE_NOT_AVAILABLE 0xFFFFFFFFFFFFFFFFULL

typedef struct gk__nvmlMemory_t {
    unsigned long long total, free, used;
} gk__nvmlMemory_t;

typedef struct gk__nvmlMemory_v2_t {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} gk__nvmlMemory_v2_t;

/* NVML_STRUCT_VERSION(Memory, 2) = sizeof | 2 << 24 = 0x02000028. */
#define GK__NVML_MEMORY_V2_VERSION ((unsigned int)(sizeof(gk__nvmlMemory_v2_t) | (2u << 24)))

typedef struct gk__nvmlUtilization_t {
    unsigned int gpu, memory;
} gk__nvmlUtilization_t;

/* The process struct of the _v2 and _v3 calls (24 bytes). */
typedef struct gk__nvmlProcessInfo_t {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} gk__nvmlProcessInfo_t;

/* The process struct of the original call (16 bytes). */
typedef struct gk__nvmlProcessInfo_v1_t {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} gk__nvmlProcessInfo_v1_t;

typedef struct gk__nvmlPciInfo_t {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} gk__nvmlPciInfo_t;

static_assert(sizeof(gk__nvmlMemory_t) == 24, "nvmlMemory_t is 24 bytes");
static_assert(sizeof(gk__nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t is 40 bytes");
static_assert(GK__NVML_MEMORY_V2_VERSION == 0x02000028u, "nvmlMemory_v2 version");
static_assert(sizeof(gk__nvmlUtilization_t) == 8, "nvmlUtilization_t is 8 bytes");
static_assert(sizeof(gk__nvmlProcessInfo_t) == 24, "nvmlProcessInfo_t is 24 bytes");
static_assert(sizeof(gk__nvmlProcessInfo_v1_t) == 16, "nvmlProcessInfo_v1_t is 16 bytes");
static_assert(sizeof(gk__nvmlPciInfo_t) == 68, "nvmlPciInfo_t is 68 bytes");

#define GK__NVML_DEVICE_NAME_BUFFER_SIZE    96
#define GK__NVML_DEVICE_UUID_BUFFER_SIZE    96
#define GK__NVML_SYSTEM_VERSION_BUFFER_SIZE 80

#endif
