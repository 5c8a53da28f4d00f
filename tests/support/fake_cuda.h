/* The control API of the fake CUDA driver (tests/support/fake_cuda.c, built as
 * tests/fakelib/libcuda.so.1, and without the virtual-memory symbols as
 * tests/fakelib-novmm/libcuda.so.1). A test dlopen()s the path the backend loads, which returns
 * the same handle, and finds these functions with dlsym.
 *
 * The fake keeps device memory in host memory (mmap), checks the arguments the real driver would
 * reject (CUDA_ERROR_INVALID_VALUE / INVALID_HANDLE / INVALID_CONTEXT / NOT_INITIALIZED), enforces
 * a memory capacity (CUDA_ERROR_OUT_OF_MEMORY) and runs stream work at once unless stalled. It is
 * thread-safe (one lock).
 *
 *   fakecuda_reset            back to defaults (1 device, 1 GiB, VMM supported, nothing stalled or
 *                             failing, counts zero) and frees every object still alive
 *   fakecuda_fail             makes call number `nth` (1-based, counted from now) of `fn` return
 *                             `cuda_error`; nth 0: every later call until reset. -1: unknown fn
 *   fakecuda_set_device_count devices cuInit finds (0: cuInit fails with CUDA_ERROR_NO_DEVICE)
 *   fakecuda_set_total_memory the capacity of every device
 *   fakecuda_set_vmm_supported the VMM device attribute (the symbols stay)
 *   fakecuda_calls            calls of `fn` since the last reset; -1 for an unknown name
 *   fakecuda_stall            1: stream work queues up and recorded events stay not ready;
 *                             0: runs what is queued
 *   fakecuda_live_objects     allocations, pinned buffers, streams, events, physical handles,
 *                             reservations and primary-context references alive now
 *   fakecuda_used_memory      device bytes in use (allocations and physical handles) */
#ifndef GK_FAKE_CUDA_H
#define GK_FAKE_CUDA_H

#include <stddef.h>

#define FAKECUDA_CONTROL_FUNCS(XX)                                                                 \
    XX(void, fakecuda_reset, (void))                                                               \
    XX(int, fakecuda_fail, (const char *fn, int nth, int cuda_error))                              \
    XX(void, fakecuda_set_device_count, (int n))                                                   \
    XX(void, fakecuda_set_total_memory, (size_t bytes))                                            \
    XX(void, fakecuda_set_vmm_supported, (int yes))                                                \
    XX(long, fakecuda_calls, (const char *fn))                                                     \
    XX(void, fakecuda_stall, (int on))                                                             \
    XX(long, fakecuda_live_objects, (void))                                                        \
    XX(size_t, fakecuda_used_memory, (void))

#define FAKECUDA_DECLARE(ret, name, params) ret name params;
FAKECUDA_CONTROL_FUNCS(FAKECUDA_DECLARE)
#undef FAKECUDA_DECLARE

#endif
