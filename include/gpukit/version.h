/* gpukit version and the export macro shared by every public header.
 *
 * GK_API marks a symbol exported from libgpukit; everything else is built with
 * -fvisibility=hidden. Define GK_STATIC before including when linking the static library on
 * platforms that need it (on Linux it changes nothing). */
#ifndef GPUKIT_VERSION_H
#define GPUKIT_VERSION_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define GK_API __attribute__((visibility("default")))
#else
#define GK_API
#endif

/* Marks a function kept for one release as an alias of its replacement. */
#if defined(__GNUC__) || defined(__clang__)
#define GK_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define GK_DEPRECATED(msg)
#endif

#define GK_VERSION_MAJOR 0
#define GK_VERSION_MINOR 2
#define GK_VERSION_PATCH 0
#define GK_VERSION_HEX   ((GK_VERSION_MAJOR << 16) | (GK_VERSION_MINOR << 8) | GK_VERSION_PATCH)

/* The binary interface: the layouts of the public structs and the signatures of the public
 * functions. It changes only when an existing layout or signature changes incompatibly (the
 * shared library's soname is libgpukit.so.GK_ABI_VERSION). Adding a function, or a field at the
 * end of a sized struct, does not change it.
 *
 * Sized structs. Every public struct that a caller fills in (configs, callback tables) or that
 * the library fills in (statistics, results, descriptions) starts with `size_t size`, holds the
 * struct's size in the build that made it, and only ever grows at the end. A sized struct is never
 * embedded by value in another struct. The library reads only the fields that fit within a
 * caller's size and writes only those, so a program built against an older header keeps working
 * with a newer library:
 *   - a function that fills a struct (every `_default()`, every getter) is declared with a
 *     trailing `size_t size` parameter and wrapped in a macro of the same name that passes
 *     sizeof *(ptr), so C callers write `gk_pool_get_stats(pool, &st)` and bindings pass the size
 *     of their own struct; the library fills min(size, its own size) bytes and stores that in
 *     the struct's size field;
 *   - a struct the library reads (a config from `_default()`, a table the caller fills) is read
 *     up to its size field; fields beyond it keep the library's defaults. A caller that builds
 *     one without `_default()` sets `.size = sizeof(T)`; a size below sizeof(size_t) is refused
 *     with -EINVAL;
 *   - GK_HAS_FIELD(&st, gk_pool_stats, limit) tells a caller built against a newer header
 *     whether an older library filled a field.
 * The exceptions (small frozen value types embedded in other structs or used in arrays, and
 * structs only the library allocates) are listed in tests/api/check_headers.py with their reasons;
 * their layouts never change. */
#define GK_ABI_VERSION 1

/* Whether the sized struct at `ptr` (of type `type`) holds `field` whole. */
#define GK_HAS_FIELD(ptr, type, field)                                                             \
    ((ptr)->size >= offsetof(type, field) + sizeof(((type *)0)->field))

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version as "MAJOR.MINOR.PATCH". Static storage; thread-safe. */
GK_API const char *gk_version_string(void);

/* GK_VERSION_HEX of the library actually loaded (may differ from the header's). */
GK_API unsigned gk_version_hex(void);

/* GK_ABI_VERSION of the library actually loaded. A program or binding built against a header
 * whose GK_ABI_VERSION differs must not use the library. */
GK_API unsigned gk_abi_version(void);

#ifdef __cplusplus
}
#endif
#endif
