/* The part of the CUDA driver API that the cuda backend uses, declared here so that gpukit builds
 * without CUDA headers: handle types, the result codes it names, the attribute and flag values, and
 * the virtual-memory property structs with the driver's layout (checked below). The fake driver
 * built by the tests includes this file too, so both sides agree on every signature. */
#ifndef GK_CUDA_API_H
#define GK_CUDA_API_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef void (*CUhostFn)(void *user);

/* Result codes gpukit names (the driver's values). */
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_STUB_LIBRARY = 34,
    CUDA_ERROR_INSUFFICIENT_DRIVER = 35,
    CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_ECC_UNCORRECTABLE = 214,
    CUDA_ERROR_NVLINK_UNCORRECTABLE = 220,
    CUDA_ERROR_OPERATING_SYSTEM = 304,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_LAUNCH_TIMEOUT = 702,
    CUDA_ERROR_CONTEXT_IS_DESTROYED = 709,
    CUDA_ERROR_ASSERT = 710,
    CUDA_ERROR_HARDWARE_STACK_ERROR = 714,
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715,
    CUDA_ERROR_MISALIGNED_ADDRESS = 716,
    CUDA_ERROR_INVALID_ADDRESS_SPACE = 717,
    CUDA_ERROR_INVALID_PC = 718,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_PERMITTED = 800,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803,
    CUDA_ERROR_UNKNOWN = 999
};

/* cuDeviceGetAttribute */
enum {
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102
};

#define CU_STREAM_NON_BLOCKING        0x1u
#define CU_EVENT_DISABLE_TIMING       0x2u
#define CU_MEMHOSTALLOC_PORTABLE      0x1u
#define CU_MEMHOSTALLOC_DEVICEMAP     0x2u
#define CU_MEMHOSTALLOC_WRITECOMBINED 0x4u

/* Virtual memory management (CUDA 10.2 and later). */
enum { CU_MEM_ALLOCATION_TYPE_PINNED = 0x1 };
enum { CU_MEM_HANDLE_TYPE_NONE = 0x0, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 0x1 };
enum { CU_MEM_LOCATION_TYPE_DEVICE = 0x1 };
enum {
    CU_MEM_ACCESS_FLAGS_PROT_NONE = 0x0,
    CU_MEM_ACCESS_FLAGS_PROT_READ = 0x1,
    CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3
};
enum { CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0x0, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 0x1 };

typedef struct CUmemLocation {
    int type; /* CU_MEM_LOCATION_TYPE_* */
    int id;   /* device ordinal */
} CUmemLocation;

typedef struct CUmemAllocationProp {
    int type;                 /* CU_MEM_ALLOCATION_TYPE_PINNED */
    int requestedHandleTypes; /* CU_MEM_HANDLE_TYPE_NONE */
    CUmemLocation location;
    void *win32HandleMetaData;
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
} CUmemAllocationProp;

typedef struct CUmemAccessDesc {
    CUmemLocation location;
    int flags; /* CU_MEM_ACCESS_FLAGS_PROT_* */
} CUmemAccessDesc;

#if defined(__LP64__)
_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp layout");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc layout");
_Static_assert(sizeof(CUdeviceptr) == sizeof(void *), "CUdeviceptr width");
#endif

/* Every driver function the backend loads, all returning CUresult: XX(field, symbol, parameters).
 * The core set is required (CUDA 11.0 drivers and later export all of it). */
#define CUDA_CORE_FUNCS(XX)                                                                        \
    XX(init, cuInit, (unsigned int flags))                                                         \
    XX(driver_version, cuDriverGetVersion, (int *version))                                         \
    XX(device_count, cuDeviceGetCount, (int *count))                                               \
    XX(device_get, cuDeviceGet, (CUdevice * device, int ordinal))                                  \
    XX(device_name, cuDeviceGetName, (char *name, int len, CUdevice dev))                          \
    XX(device_attribute, cuDeviceGetAttribute, (int *value, int attrib, CUdevice dev))             \
    XX(device_total_mem, cuDeviceTotalMem_v2, (size_t * bytes, CUdevice dev))                      \
    XX(primary_retain, cuDevicePrimaryCtxRetain, (CUcontext * ctx, CUdevice dev))                  \
    XX(primary_release, cuDevicePrimaryCtxRelease_v2, (CUdevice dev))                              \
    XX(ctx_get_current, cuCtxGetCurrent, (CUcontext * ctx))                                        \
    XX(ctx_set_current, cuCtxSetCurrent, (CUcontext ctx))                                          \
    XX(ctx_push, cuCtxPushCurrent_v2, (CUcontext ctx))                                             \
    XX(ctx_pop, cuCtxPopCurrent_v2, (CUcontext * ctx))                                             \
    XX(error_name, cuGetErrorName, (CUresult error, const char **text))                            \
    XX(error_string, cuGetErrorString, (CUresult error, const char **text))                        \
    XX(mem_get_info, cuMemGetInfo_v2, (size_t * free_bytes, size_t * total_bytes))                 \
    XX(mem_alloc, cuMemAlloc_v2, (CUdeviceptr * dptr, size_t size))                                \
    XX(mem_free, cuMemFree_v2, (CUdeviceptr dptr))                                                 \
    XX(mem_host_alloc, cuMemHostAlloc, (void **ptr, size_t size, unsigned int flags))              \
    XX(mem_free_host, cuMemFreeHost, (void *ptr))                                                  \
    XX(stream_create, cuStreamCreate, (CUstream * stream, unsigned int flags))                     \
    XX(stream_destroy, cuStreamDestroy_v2, (CUstream stream))                                      \
    XX(stream_query, cuStreamQuery, (CUstream stream))                                             \
    XX(stream_wait_event, cuStreamWaitEvent, (CUstream stream, CUevent event, unsigned int flags)) \
    XX(launch_host_func, cuLaunchHostFunc, (CUstream stream, CUhostFn fn, void *user))             \
    XX(event_create, cuEventCreate, (CUevent * event, unsigned int flags))                         \
    XX(event_destroy, cuEventDestroy_v2, (CUevent event))                                          \
    XX(event_record, cuEventRecord, (CUevent event, CUstream stream))                              \
    XX(event_query, cuEventQuery, (CUevent event))                                                 \
    XX(memcpy_htod, cuMemcpyHtoDAsync_v2,                                                          \
       (CUdeviceptr dst, const void *src, size_t size, CUstream stream))                           \
    XX(memcpy_dtoh, cuMemcpyDtoHAsync_v2,                                                          \
       (void *dst, CUdeviceptr src, size_t size, CUstream stream))                                 \
    XX(memcpy_dtod, cuMemcpyDtoDAsync_v2,                                                          \
       (CUdeviceptr dst, CUdeviceptr src, size_t size, CUstream stream))

/* Optional: the virtual-memory API. */
#define CUDA_VMM_FUNCS(XX)                                                                         \
    XX(mem_granularity, cuMemGetAllocationGranularity,                                             \
       (size_t * granularity, const CUmemAllocationProp *prop, int option))                        \
    XX(mem_address_reserve, cuMemAddressReserve,                                                   \
       (CUdeviceptr * ptr, size_t size, size_t alignment, CUdeviceptr addr,                        \
        unsigned long long flags))                                                                 \
    XX(mem_address_free, cuMemAddressFree, (CUdeviceptr ptr, size_t size))                         \
    XX(mem_create, cuMemCreate,                                                                    \
       (CUmemGenericAllocationHandle * handle, size_t size, const CUmemAllocationProp *prop,       \
        unsigned long long flags))                                                                 \
    XX(mem_release, cuMemRelease, (CUmemGenericAllocationHandle handle))                           \
    XX(mem_map, cuMemMap,                                                                          \
       (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,          \
        unsigned long long flags))                                                                 \
    XX(mem_unmap, cuMemUnmap, (CUdeviceptr ptr, size_t size))                                      \
    XX(mem_set_access, cuMemSetAccess,                                                             \
       (CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count))

#endif
