/* The library's host allocations and file operations go through these wrappers so tests can fail
 * the Nth one (gpukit/testing.h). Unarmed, each costs one relaxed atomic load on top of the call it
 * wraps, and behaves exactly like it. */
#ifndef GK_COMMON_ALLOC_H
#define GK_COMMON_ALLOC_H

#include <dirent.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Nonzero while a fault of that kind is armed. */
extern atomic_int gk__fault_alloc_armed;
extern atomic_int gk__fault_file_armed;

/* Counts one call of the armed kind; returns 1 when this call must fail. */
int gk__fault_alloc_hit(void);
int gk__fault_file_hit(void);

static inline int gk__fault_alloc(void)
{
    return atomic_load_explicit(&gk__fault_alloc_armed, memory_order_relaxed) &&
           gk__fault_alloc_hit();
}

static inline int gk__fault_file(void)
{
    return atomic_load_explicit(&gk__fault_file_armed, memory_order_relaxed) &&
           gk__fault_file_hit();
}

void *gk__malloc(size_t size);
void *gk__calloc(size_t n, size_t size);
void *gk__realloc(void *p, size_t size);
char *gk__strdup(const char *s);
int gk__posix_memalign(void **out, size_t align, size_t size);

int gk__open(const char *path, int flags, ...);
FILE *gk__fopen(const char *path, const char *mode);
DIR *gk__opendir(const char *path);
void *gk__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

#endif
