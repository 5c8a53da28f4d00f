/* The few vector operations examples/train.c needs, on the device's memory: CBLAS on host and
 * sim (whose backed memory is host memory), cuBLAS loaded with dlopen on cuda. */
#ifndef TRAIN_MATH_H
#define TRAIN_MATH_H

#include <stddef.h>

#include <gpukit/gpukit.h>

typedef struct train_math train_math;
struct train_math {
    const char *name;    /* "CBLAS (OpenBLAS)" or "cuBLAS (libcublas.so.12)" */
    const char *library; /* the same as a metric tag: "openblas", "cublas" or "loops" */
    int threads;         /* the host library's threads (1 for cuBLAS and loops) */
    gk_device *dev;
    void *lib, *handle;  /* cuBLAS only */
    void (*fn[8])(void); /* cuBLAS entry points */
    /* r = X w for the n rows of X (row-major, cols floats each) */
    int (*forward)(train_math *m, const float *X, long n, unsigned cols, const float *w, float *r);
    /* *out = sum of r[i]^2 (waits for the result) */
    int (*sumsq)(train_math *m, const float *r, long n, double *out);
    /* g = alpha X^T r, plus g when accumulate */
    int (*backward)(train_math *m, const float *X, long n, unsigned cols, const float *r,
                    float alpha, int accumulate, float *g);
    /* v = mu v + g; w = w - lr v (first n entries) */
    int (*update)(train_math *m, unsigned n, float lr, float mu, const float *g, float *v,
                  float *w);
    int (*zero)(train_math *m, void *p, size_t bytes);
    int (*upload)(train_math *m, float *dst, const float *src, unsigned n);
    int (*download)(train_math *m, float *dst, const float *src, unsigned n);
    /* waits for the work queued on the default stream (the loader's copies included) */
    int (*sync)(train_math *m);
};

/* Fills `m` for `dev`. Returns 0, or -ENOENT with a message in err (cuBLAS not found). */
int train_math_open(train_math *m, gk_device *dev, char *err, size_t errlen);
void train_math_close(train_math *m);

#endif
