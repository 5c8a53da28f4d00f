/* Fault injection for tests: make the Nth host allocation or the Nth file operation that gpukit
 * makes fail, so a test can walk every error path of a create or run call and check that each
 * returns an error, leaks nothing and leaves its object usable or cleanly destroyed.
 *
 * For tests only, and not part of gpukit.h: include "gpukit/testing.h" explicitly. The state is
 * process-wide (atomic counters shared by every thread): it is the one exception to gpukit's rule
 * of no hidden global state, because a fault must reach allocations made deep inside any part and
 * on its threads. When no fault is armed its cost is one relaxed atomic load per allocation or
 * file operation. Arming a fault while other threads of the process call gpukit is allowed (they
 * may be the ones that fail); the test decides what that means.
 *
 * Host allocations are every malloc, calloc, realloc, strdup and posix_memalign that the
 * library makes. File operations are every open, fopen, opendir and mmap of a file or of anonymous
 * memory that the library makes (not read/write/close). A failed allocation returns NULL (ENOMEM);
 * a failed file operation returns its failure value with errno EIO (mmap: MAP_FAILED, ENOMEM). */
#ifndef GPUKIT_TESTING_H
#define GPUKIT_TESTING_H

#include <stddef.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the fault hook has seen since the last arm or reset. */
typedef struct gk_fault_counts {
    size_t size;        /* bytes filled (see gpukit/version.h) */
    long host_allocs;   /* host allocations attempted while an allocation fault was armed */
    long file_ops;      /* file operations attempted while a file fault was armed */
    long host_injected; /* allocations failed on purpose (0 or 1 per arm) */
    long file_injected; /* file operations failed on purpose (0 or 1 per arm) */
} gk_fault_counts;

/* Arms the host-allocation fault: counting starts at 0 and the nth allocation from now (n >= 1)
 * fails, once; later ones succeed. n <= 0 disarms it. Resets the allocation counters.
 * Thread-safe. */
GK_API void gk_fault_host_alloc_nth(long n);

/* Arms the file-operation fault in the same way: the nth file operation from now fails, once.
 * n <= 0 disarms it. Resets the file-operation counters. Thread-safe. */
GK_API void gk_fault_file_op_nth(long n);

/* Disarms both faults and zeroes every counter. Thread-safe. */
GK_API void gk_fault_reset(void);

/* Copies the counters into *out. Returns 0 or -EINVAL. Thread-safe. */
GK_API int gk_fault_counts_get(gk_fault_counts *out, size_t size);
#define gk_fault_counts_get(out) (gk_fault_counts_get)((out), sizeof *(out))

#ifdef __cplusplus
}
#endif

#endif
