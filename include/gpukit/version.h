/* gpukit version and the export macro shared by every public header.
 *
 * GK_API marks a symbol exported from libgpukit; everything else is built with
 * -fvisibility=hidden. Define GK_STATIC before including when linking the static library on
 * platforms that need it (on Linux it changes nothing). */
#ifndef GPUKIT_VERSION_H
#define GPUKIT_VERSION_H

#if defined(__GNUC__) || defined(__clang__)
#define GK_API __attribute__((visibility("default")))
#else
#define GK_API
#endif

#define GK_VERSION_MAJOR 0
#define GK_VERSION_MINOR 1
#define GK_VERSION_PATCH 0
#define GK_VERSION_HEX   ((GK_VERSION_MAJOR << 16) | (GK_VERSION_MINOR << 8) | GK_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version as "MAJOR.MINOR.PATCH". Static storage; thread-safe. */
GK_API const char *gk_version_string(void);

/* GK_VERSION_HEX of the library actually loaded (may differ from the header's). */
GK_API unsigned gk_version_hex(void);

#ifdef __cplusplus
}
#endif
#endif
