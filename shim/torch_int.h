/* Between the shim's C part and its raising entry point (torch_raise.cc). */
#ifndef GK_SHIM_TORCH_INT_H
#define GK_SHIM_TORCH_INT_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gk_torch_malloc without the error log. On failure (NULL for size != 0), *text receives a
 * malloc'd copy of the text kept for gk_torch_last_report (NULL when none could be copied) and
 * *code its status; the caller frees *text. */
void *gk__torch_malloc_quiet(ssize_t size, int device, void *stream, char **text, int *code);

#ifdef __cplusplus
}
#endif
#endif
