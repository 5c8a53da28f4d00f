/* Host allocations and file operations of the library, with the test-only fault hook of
 * gpukit/testing.h: process-wide atomic counters (the one piece of global state in gpukit, for
 * tests) that make the Nth call of a kind fail once. */
#include "common/alloc.h"
#include "common/errtext.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gpukit/testing.h"

atomic_int gk__fault_alloc_armed;
atomic_int gk__fault_file_armed;

/* Per kind: calls counted since arming, the call to fail, and whether it was failed. */
typedef struct fault_kind {
    atomic_long seen;
    atomic_long nth;
    atomic_long injected;
} fault_kind;

static fault_kind alloc_fault, file_fault;

static int fault_hit(fault_kind *k)
{
    long n = atomic_fetch_add_explicit(&k->seen, 1, memory_order_relaxed) + 1;
    if (n != atomic_load_explicit(&k->nth, memory_order_relaxed))
        return 0;
    atomic_fetch_add_explicit(&k->injected, 1, memory_order_relaxed);
    return 1;
}

int gk__fault_alloc_hit(void)
{
    return fault_hit(&alloc_fault);
}

int gk__fault_file_hit(void)
{
    return fault_hit(&file_fault);
}

static void fault_arm(fault_kind *k, atomic_int *armed, long n)
{
    atomic_store(armed, 0);
    atomic_store(&k->seen, 0);
    atomic_store(&k->injected, 0);
    atomic_store(&k->nth, n > 0 ? n : 0);
    if (n > 0)
        atomic_store(armed, 1);
}

void gk_fault_host_alloc_nth(long n)
{
    fault_arm(&alloc_fault, &gk__fault_alloc_armed, n);
}

void gk_fault_file_op_nth(long n)
{
    fault_arm(&file_fault, &gk__fault_file_armed, n);
}

void gk_fault_reset(void)
{
    fault_arm(&alloc_fault, &gk__fault_alloc_armed, 0);
    fault_arm(&file_fault, &gk__fault_file_armed, 0);
}

int(gk_fault_counts_get)(gk_fault_counts *out, size_t size)
{
    gk_fault_counts c = {.size = sizeof c,
                         .host_allocs = atomic_load(&alloc_fault.seen),
                         .file_ops = atomic_load(&file_fault.seen),
                         .host_injected = atomic_load(&alloc_fault.injected),
                         .file_injected = atomic_load(&file_fault.injected)};
    return gk__sized_put(out, size, &c, sizeof c, "gk_fault_counts");
}

void *gk__malloc(size_t size)
{
    if (gk__fault_alloc()) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(size);
}

void *gk__calloc(size_t n, size_t size)
{
    if (gk__fault_alloc()) {
        errno = ENOMEM;
        return NULL;
    }
    return calloc(n, size);
}

void *gk__realloc(void *p, size_t size)
{
    if (gk__fault_alloc()) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, size);
}

char *gk__strdup(const char *s)
{
    if (gk__fault_alloc()) {
        errno = ENOMEM;
        return NULL;
    }
    return strdup(s);
}

int gk__posix_memalign(void **out, size_t align, size_t size)
{
    if (gk__fault_alloc())
        return ENOMEM;
    return posix_memalign(out, align, size);
}

int gk__open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (gk__fault_file()) {
        errno = EIO;
        return -1;
    }
    return open(path, flags, mode);
}

FILE *gk__fopen(const char *path, const char *mode)
{
    if (gk__fault_file()) {
        errno = EIO;
        return NULL;
    }
    return fopen(path, mode);
}

DIR *gk__opendir(const char *path)
{
    if (gk__fault_file()) {
        errno = EIO;
        return NULL;
    }
    return opendir(path);
}

void *gk__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (gk__fault_file()) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return mmap(addr, len, prot, flags, fd, off);
}
