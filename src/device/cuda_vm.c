/* Virtual memory on the cuda backend: address ranges from cuMemAddressReserve, and physical memory
 * mapped into them one granule at a time (cuMemCreate + cuMemMap per granule), so that any
 * granule-aligned part of what was mapped can later be unmapped on its own, as on sim; access is
 * then granted with one cuMemSetAccess over the whole run. The backend remembers the allocation
 * handle behind every mapped granule. */
#include <stdio.h>
#include <string.h>

#include "device/cuda_int.h"

static int has_vmm_symbols(const gk__cuda_dev *c)
{
    return c->fn.mem_granularity && c->fn.mem_address_reserve && c->fn.mem_address_free &&
           c->fn.mem_create && c->fn.mem_release && c->fn.mem_map && c->fn.mem_unmap &&
           c->fn.mem_set_access;
}

static void fill_alloc_prop(const gk__cuda_dev *c, CUmemAllocationProp *prop)
{
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop->location.id = c->ordinal;
}

/* A driver or device without the API leaves virtual memory off (logged), which is no error. */
void gk__cuda_vm_detect(gk_device *dev, gk__cuda_dev *c)
{
    int supported = 0;
    if (!has_vmm_symbols(c)) {
        gk_log(&dev->cfg.logger, GK_LOG_INFO, "device",
               "%s: the driver has no virtual-memory API; vm_* calls are unavailable",
               dev->cuda_library);
        return;
    }
    CUresult r = c->fn.device_attribute(
        &supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, c->device);
    if (r != CUDA_SUCCESS || !supported) {
        gk_log(&dev->cfg.logger, GK_LOG_INFO, "device",
               "cuda:%d does not support virtual memory management; vm_* calls are unavailable",
               c->ordinal);
        return;
    }
    CUmemAllocationProp prop;
    fill_alloc_prop(c, &prop);
    size_t gran = 0;
    r = c->fn.mem_granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r != CUDA_SUCCESS || gran == 0) {
        char text[256];
        gk__cuda_result_text(c, r, text, sizeof text);
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "cuMemGetAllocationGranularity: %s; vm_* calls are unavailable", text);
        return;
    }
    c->vm_granularity = gran;
    c->has_vm = 1;
}

/* Called at close with the context current: unmaps, releases and frees what is left. */
void gk__cuda_vm_cleanup(gk_device *dev, gk__cuda_dev *c)
{
    size_t nmapped = 0, nres = 0;
    for (size_t i = 0; i < c->mapped.cap; i++) {
        if (c->mapped.keys[i] <= 1)
            continue;
        (void)c->fn.mem_unmap((CUdeviceptr)c->mapped.keys[i], c->vm_granularity);
        (void)c->fn.mem_release((CUmemGenericAllocationHandle)c->mapped.sizes[i]);
        nmapped++;
    }
    for (size_t i = 0; i < c->reserved.cap; i++) {
        if (c->reserved.keys[i] <= 1)
            continue;
        (void)c->fn.mem_address_free((CUdeviceptr)c->reserved.keys[i], c->reserved.sizes[i]);
        nres++;
    }
    if (nmapped || nres)
        gk_log(&dev->cfg.logger, GK_LOG_WARN, "device",
               "%s closed with %zu mapped granules in %zu reserved ranges; released them",
               dev->spec, nmapped, nres);
    gk__ptrmap_free(&c->mapped);
    gk__ptrmap_free(&c->reserved);
}

static int vm_check(gk_device *dev, const char *fn, const void *addr, size_t size)
{
    gk__cuda_dev *c = dev->impl;
    if (!c->has_vm)
        return gk__device_error(dev, GK_EUNAVAIL,
                                "%s: %s has no virtual memory (the driver lacks cuMemCreate or "
                                "the GPU does not support it); use gk_device_malloc",
                                fn, dev->spec);
    size_t g = c->vm_granularity;
    if (size % g != 0 || (uintptr_t)addr % g != 0)
        return gk__device_error(dev, -EINVAL,
                                "%s(%p, %zu): address and size must be multiples of the "
                                "granularity %zu (see gk_device_props.vm_granularity)",
                                fn, addr, size, g);
    return 0;
}

int gk__cuda_vm_reserve(gk_device *dev, size_t size, void **base)
{
    gk__cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_reserve", NULL, size);
    if (rc)
        return rc;
    int pushed;
    rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUdeviceptr d = 0;
    CUresult r = c->fn.mem_address_reserve(&d, size, c->vm_granularity, 0, 0);
    if (r != CUDA_SUCCESS)
        return gk__cuda_ctx_leave(dev, pushed, FAIL(dev, r, "cuMemAddressReserve(%zu)", size));
    pthread_mutex_lock(&c->lock);
    rc = gk__ptrmap_put(&c->reserved, (void *)(uintptr_t)d, size);
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        (void)c->fn.mem_address_free(d, size);
        rc = gk__device_error(dev, rc, "gk_device_vm_reserve: out of host memory");
    } else {
        *base = (void *)(uintptr_t)d;
    }
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

int gk__cuda_vm_release(gk_device *dev, void *base, size_t size)
{
    gk__cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_release", base, size);
    if (rc)
        return rc;
    size_t reserved = 0;
    pthread_mutex_lock(&c->lock);
    rc = gk__ptrmap_take(&c->reserved, base, &reserved);
    if (rc == 0 && reserved != size) {
        (void)gk__ptrmap_put(&c->reserved, base, reserved); /* the slot just freed */
        rc = -ERANGE;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc == -ENOENT)
        return gk__device_error(
            dev, -EINVAL, "gk_device_vm_release: %p is not the base of a reserved range", base);
    if (rc)
        return gk__device_error(dev, -EINVAL,
                                "gk_device_vm_release(%p, %zu): the range was reserved with "
                                "size %zu",
                                base, size, reserved);
    int pushed;
    rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_address_free((CUdeviceptr)(uintptr_t)base, size);
    if (r != CUDA_SUCCESS)
        rc = FAIL(dev, r, "cuMemAddressFree(%p, %zu)", base, size);
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

/* Maps one new granule of physical memory at `g` and records its handle (access is granted
 * later, for the whole run). Undoes its own steps on failure. */
static int map_granule(gk_device *dev, gk__cuda_dev *c, char *g, const CUmemAllocationProp *prop)
{
    size_t gran = c->vm_granularity;
    CUdeviceptr d = (CUdeviceptr)(uintptr_t)g;
    CUmemGenericAllocationHandle h = 0;
    CUresult r = c->fn.mem_create(&h, gran, prop, 0);
    if (r != CUDA_SUCCESS)
        return FAIL(dev, r, "cuMemCreate(%zu)", gran);
    int rc;
    r = c->fn.mem_map(d, gran, 0, h, 0);
    if (r != CUDA_SUCCESS) {
        rc = FAIL(dev, r, "cuMemMap(%p, %zu)", (void *)g, gran);
        goto out_release;
    }
    pthread_mutex_lock(&c->lock);
    rc = gk__ptrmap_put(&c->mapped, g, (size_t)h);
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        rc = gk__device_error(dev, rc, "gk_device_vm_map: out of host memory");
        goto out_unmap;
    }
    return 0;

out_unmap:
    (void)c->fn.mem_unmap(d, gran);
out_release:
    (void)c->fn.mem_release(h);
    return rc;
}

/* Unmaps and releases the granule at `g` if it is mapped; returns 0, -ENOENT or a driver error
 * (the granule then stays mapped and recorded). */
static int unmap_granule(gk_device *dev, gk__cuda_dev *c, char *g)
{
    size_t handle = 0;
    pthread_mutex_lock(&c->lock);
    int rc = gk__ptrmap_take(&c->mapped, g, &handle);
    pthread_mutex_unlock(&c->lock);
    if (rc)
        return rc;
    CUresult r = c->fn.mem_unmap((CUdeviceptr)(uintptr_t)g, c->vm_granularity);
    if (r != CUDA_SUCCESS) {
        pthread_mutex_lock(&c->lock);
        (void)gk__ptrmap_put(&c->mapped, g, handle);
        pthread_mutex_unlock(&c->lock);
        return FAIL(dev, r, "cuMemUnmap(%p, %zu)", (void *)g, c->vm_granularity);
    }
    r = c->fn.mem_release((CUmemGenericAllocationHandle)handle);
    if (r != CUDA_SUCCESS)
        return FAIL(dev, r, "cuMemRelease(%p)", (void *)g);
    return 0;
}

/* Is any granule of [addr, addr + size) mapped (want 1) or unmapped (want 0)? */
static int any_granule(gk__cuda_dev *c, char *addr, size_t size, int want_mapped)
{
    int found = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t off = 0; off < size && !found; off += c->vm_granularity) {
        size_t h;
        int mapped = gk__ptrmap_take(&c->mapped, addr + off, &h) == 0;
        if (mapped)
            (void)gk__ptrmap_put(&c->mapped, addr + off, h);
        found = mapped == want_mapped;
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

int gk__cuda_vm_map(gk_device *dev, void *addr, size_t size)
{
    gk__cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_map", addr, size);
    if (rc)
        return rc;
    char *base = addr;
    if (any_granule(c, base, size, 1))
        return gk__device_error(dev, -EINVAL,
                                "gk_device_vm_map(%p, %zu): part of the range is already mapped",
                                addr, size);
    int pushed;
    rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    /* A request beyond the free memory fails at once rather than after many granules. */
    size_t free_b = 0, total_b = 0;
    if (c->fn.mem_get_info(&free_b, &total_b) == CUDA_SUCCESS && size > free_b) {
        rc = gk__device_error(dev, GK_EDEVOOM,
                              "gk_device_vm_map(%p, %zu): out of memory: %zu bytes free on %s "
                              "(cuMemGetInfo_v2)",
                              addr, size, free_b, dev->spec);
        return gk__cuda_ctx_leave(dev, pushed, rc);
    }
    CUmemAllocationProp prop;
    fill_alloc_prop(c, &prop);
    CUmemAccessDesc access;
    memset(&access, 0, sizeof access);
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = c->ordinal;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    size_t off = 0;
    for (; off < size; off += c->vm_granularity) {
        rc = map_granule(dev, c, base + off, &prop);
        if (rc)
            break;
    }
    if (rc == 0) {
        CUresult r = c->fn.mem_set_access((CUdeviceptr)(uintptr_t)base, size, &access, 1);
        if (r != CUDA_SUCCESS)
            rc = FAIL(dev, r, "cuMemSetAccess(%p, %zu, READWRITE)", addr, size);
    }
    if (rc) {
        /* Leave the range as it was: unmap what this call mapped, keeping the first error. */
        char why[512];
        snprintf(why, sizeof why, "%s", gk_last_error());
        while (off > 0) {
            off -= c->vm_granularity;
            (void)unmap_granule(dev, c, base + off);
        }
        (void)gk__device_error(dev, rc, "%s", why);
    }
    return gk__cuda_ctx_leave(dev, pushed, rc);
}

int gk__cuda_vm_unmap(gk_device *dev, void *addr, size_t size)
{
    gk__cuda_dev *c = dev->impl;
    int rc = vm_check(dev, "gk_device_vm_unmap", addr, size);
    if (rc)
        return rc;
    char *base = addr;
    if (any_granule(c, base, size, 0))
        return gk__device_error(dev, -EINVAL,
                                "gk_device_vm_unmap(%p, %zu): part of the range is not mapped",
                                addr, size);
    int pushed;
    rc = gk__cuda_ctx_enter(dev, &pushed);
    if (rc)
        return rc;
    for (size_t off = 0; off < size && rc == 0; off += c->vm_granularity) {
        rc = unmap_granule(dev, c, base + off);
        if (rc == -ENOENT)
            rc = 0; /* another thread unmapped it meanwhile */
    }
    return gk__cuda_ctx_leave(dev, pushed, rc);
}
