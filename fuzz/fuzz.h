/* The entry point every fuzz target defines. With -DGK_FUZZ=ON and clang each target is a
 * libFuzzer binary; in every build each is also linked with replay_main.c into a program that
 * runs its committed corpus as a test. */
#ifndef GK_FUZZ_H
#define GK_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Copies the input into a NUL-terminated string (at most cap-1 bytes). */
static inline void gk_fuzz_cstr(char *dst, size_t cap, const uint8_t *data, size_t size)
{
    size_t n = size < cap - 1 ? size : cap - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)data[i];
    dst[n] = '\0';
}

#endif
