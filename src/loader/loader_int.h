/* Private pieces shared by the loader's files: the dataset object, thread-local error text and
 * the small hash used by the sampler. */
#ifndef GK_LOADER_INT_H
#define GK_LOADER_INT_H

#include <stdint.h>

#include "gpukit/loader.h"

struct gk_dataset {
    gk_dataset_ops ops;
    void *ctx;
    uint64_t count;
    size_t item_size;
    uint32_t token_bytes; /* token datasets only */
    char name[256];
};

/* Sets the thread-local message returned by gk_dataset_error (printf-style); returns rc. */
int gk__dataset_fail(int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* SplitMix64 finalizer: a fast 64-bit mixing function. */
static inline uint64_t gk__mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Header parsers over bytes already read (`got` of them) from a file of `file_size` bytes named
 * `path` (for messages). Same returns as gk_records_inspect / gk_tokens_inspect. */
int gk__records_parse(const char *path, const unsigned char *h, size_t got, uint64_t file_size,
                      gk_records_info *info, char *err, size_t len);
int gk__tokens_parse(const char *path, const unsigned char *h, size_t got, uint64_t file_size,
                     gk_tokens_info *info, char *err, size_t len);

/* Monotonic clock in nanoseconds. */
uint64_t gk__loader_now_ns(void);

#endif
