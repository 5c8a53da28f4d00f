/* The vector operations of examples/train.c: CBLAS on host and sim, cuBLAS on cuda. cuBLAS is
 * loaded at run time with dlopen and declared here, so building needs no CUDA at all. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TRAIN_NO_CBLAS
#include <cblas.h>
/* OpenBLAS's thread count (weak: another CBLAS lacks it, and the example then says 1). */
extern int openblas_get_num_threads(void) __attribute__((weak));
#else
/* Built without CBLAS (scripts/gpu-check.sh on a machine without libopenblas-dev): the same four
 * routines as plain loops, enough for the host reference run. */
enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
static void cblas_sgemv(int order, int trans, int rows, int cols, float alpha, const float *A,
                        int lda, const float *x, int incx, float beta, float *y, int incy)
{
    (void)order, (void)incx, (void)incy;
    if (trans == CblasNoTrans) {
        for (int i = 0; i < rows; i++) {
            float s = 0;
            for (int j = 0; j < cols; j++)
                s += A[(size_t)i * lda + j] * x[j];
            y[i] = alpha * s + (beta != 0 ? beta * y[i] : 0);
        }
        return;
    }
    for (int j = 0; j < cols; j++)
        y[j] = beta != 0 ? beta * y[j] : 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            y[j] += alpha * A[(size_t)i * lda + j] * x[i];
}
static float cblas_sdot(int n, const float *x, int incx, const float *y, int incy)
{
    (void)incx, (void)incy;
    float s = 0;
    for (int i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}
static void cblas_sscal(int n, float a, float *x, int incx)
{
    (void)incx;
    for (int i = 0; i < n; i++)
        x[i] *= a;
}
static void cblas_saxpy(int n, float a, const float *x, int incx, float *y, int incy)
{
    (void)incx, (void)incy;
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}
#endif

#include "train_math.h"

/* --- host and sim: CBLAS over host memory -------------------------------------------------- */

static int host_forward(train_math *m, const float *X, long n, unsigned cols, const float *w,
                        float *r)
{
    (void)m;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)cols, 1.0f, X, (int)cols, w, 1, 0.0f, r,
                1);
    return 0;
}

static int host_sumsq(train_math *m, const float *r, long n, double *out)
{
    (void)m;
    float s = cblas_sdot((int)n, r, 1, r, 1);
    *out = s;
    return 0;
}

static int host_backward(train_math *m, const float *X, long n, unsigned cols, const float *r,
                         float alpha, int accumulate, float *g)
{
    (void)m;
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, (int)cols, alpha, X, (int)cols, r, 1,
                accumulate ? 1.0f : 0.0f, g, 1);
    return 0;
}

static int host_update(train_math *m, unsigned n, float lr, float mu, const float *g, float *v,
                       float *w)
{
    (void)m;
    cblas_sscal((int)n, mu, v, 1);
    cblas_saxpy((int)n, 1.0f, g, 1, v, 1);
    cblas_saxpy((int)n, -lr, v, 1, w, 1);
    return 0;
}

static int host_zero(train_math *m, void *p, size_t bytes)
{
    (void)m;
    memset(p, 0, bytes);
    return 0;
}

static int host_copy(train_math *m, float *dst, const float *src, unsigned n)
{
    (void)m;
    memcpy(dst, src, n * sizeof(float));
    return 0;
}

static int any_sync(train_math *m)
{
    return gk_stream_synchronize(m->dev, NULL, -1);
}

/* --- cuda: cuBLAS, declared locally (column-major; handles and streams are pointers) ------- */

typedef int (*cublas_create_fn)(void **handle);
typedef int (*cublas_destroy_fn)(void *handle);
typedef int (*cublas_set_stream_fn)(void *handle, void *stream);
typedef int (*cublas_sgemv_fn)(void *handle, int trans, int m, int n, const float *alpha,
                               const float *A, int lda, const float *x, int incx, const float *beta,
                               float *y, int incy);
typedef int (*cublas_sdot_fn)(void *handle, int n, const float *x, int incx, const float *y,
                              int incy, float *result);
typedef int (*cublas_saxpy_fn)(void *handle, int n, const float *alpha, const float *x, int incx,
                               float *y, int incy);
typedef int (*cublas_sscal_fn)(void *handle, int n, const float *alpha, float *x, int incx);
enum { OP_N = 0, OP_T = 1 };
enum { F_CREATE, F_DESTROY, F_STREAM, F_SGEMV, F_SDOT, F_SAXPY, F_SSCAL };
#define FN(m, type, i) ((type)(m)->fn[i])

static int cublas_rc(int status)
{
    return status == 0 ? 0 : -EIO;
}

/* A row-major n x cols matrix is the column-major cols x n matrix A: X w = A^T w. */
static int cu_forward(train_math *m, const float *X, long n, unsigned cols, const float *w,
                      float *r)
{
    const float one = 1, zero = 0;
    return cublas_rc(FN(m, cublas_sgemv_fn, F_SGEMV)(m->handle, OP_T, (int)cols, (int)n, &one, X,
                                                     (int)cols, w, 1, &zero, r, 1));
}

static int cu_sumsq(train_math *m, const float *r, long n, double *out)
{
    float s = 0;
    int rc = cublas_rc(FN(m, cublas_sdot_fn, F_SDOT)(m->handle, (int)n, r, 1, r, 1, &s));
    *out = s;
    return rc;
}

static int cu_backward(train_math *m, const float *X, long n, unsigned cols, const float *r,
                       float alpha, int accumulate, float *g)
{
    const float beta = accumulate ? 1.0f : 0.0f;
    return cublas_rc(FN(m, cublas_sgemv_fn, F_SGEMV)(m->handle, OP_N, (int)cols, (int)n, &alpha, X,
                                                     (int)cols, r, 1, &beta, g, 1));
}

static int cu_update(train_math *m, unsigned n, float lr, float mu, const float *g, float *v,
                     float *w)
{
    const float one = 1, neg = -lr;
    int rc = cublas_rc(FN(m, cublas_sscal_fn, F_SSCAL)(m->handle, (int)n, &mu, v, 1));
    if (!rc)
        rc = cublas_rc(FN(m, cublas_saxpy_fn, F_SAXPY)(m->handle, (int)n, &one, g, 1, v, 1));
    if (!rc)
        rc = cublas_rc(FN(m, cublas_saxpy_fn, F_SAXPY)(m->handle, (int)n, &neg, v, 1, w, 1));
    return rc;
}

static int cu_upload(train_math *m, float *dst, const float *src, unsigned n)
{
    int rc = gk_memcpy_htod_async(m->dev, dst, src, n * sizeof(float), NULL);
    return rc ? rc : any_sync(m);
}

static int cu_download(train_math *m, float *dst, const float *src, unsigned n)
{
    int rc = gk_memcpy_dtoh_async(m->dev, dst, src, n * sizeof(float), NULL);
    return rc ? rc : any_sync(m);
}

static int cu_zero(train_math *m, void *p, size_t bytes)
{
    void *z = calloc(1, bytes);
    if (!z)
        return -ENOMEM;
    int rc = gk_memcpy_htod_async(m->dev, p, z, bytes, NULL);
    if (!rc)
        rc = any_sync(m);
    free(z);
    return rc;
}

static int open_cublas(train_math *m, char *err, size_t errlen)
{
    static const char *const libs[] = {"libcublas.so.12", "libcublas.so.13", "libcublas.so.11",
                                       "libcublas.so"};
    static const char *const names[] = {"cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2",
                                        "cublasSgemv_v2",  "cublasSdot_v2",    "cublasSaxpy_v2",
                                        "cublasSscal_v2"};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0] && !m->lib; i++) {
        m->lib = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
        if (m->lib)
            m->name = libs[i];
    }
    if (!m->lib) {
        snprintf(err, errlen,
                 "cuBLAS not found (libcublas.so.12/13/11): install the CUDA toolkit's cuBLAS "
                 "or run with --device host");
        return -ENOENT;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(m->lib, names[i]);
        memcpy(&m->fn[i], &sym, sizeof sym); /* object to function pointer, as POSIX allows */
        if (!sym) {
            snprintf(err, errlen, "%s has no %s", m->name, names[i]);
            return -ENOENT;
        }
    }
    /* cuBLAS works on the current context: the device's primary context, which gpukit made
     * current when it opened the device. The default stream is the one gpukit's NULL means. */
    int st = FN(m, cublas_create_fn, F_CREATE)(&m->handle);
    if (st != 0) {
        m->handle = NULL;
        snprintf(err, errlen,
                 "%s: cublasCreate failed with status %d (1: the CUDA runtime could not start "
                 "on this device)",
                 m->name, st);
        return -EIO;
    }
    FN(m, cublas_set_stream_fn, F_STREAM)(m->handle, NULL);
    return 0;
}

int train_math_open(train_math *m, gk_device *dev, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->dev = dev;
    m->sync = any_sync;
    gk_device_props props;
    int rc = gk_device_get_props(dev, &props);
    if (rc) {
        snprintf(err, errlen, "device properties: %s", gk_strerror(rc));
        return rc;
    }
    if (props.backend == GK_BACKEND_CUDA) {
        rc = open_cublas(m, err, errlen);
        if (rc) {
            train_math_close(m);
            return rc;
        }
        m->library = "cublas";
        m->threads = 1;
        m->forward = cu_forward;
        m->sumsq = cu_sumsq;
        m->backward = cu_backward;
        m->update = cu_update;
        m->zero = cu_zero;
        m->upload = cu_upload;
        m->download = cu_download;
        return 0;
    }
#ifndef TRAIN_NO_CBLAS
    m->name = "CBLAS (OpenBLAS)";
    m->library = "openblas";
    m->threads = openblas_get_num_threads ? openblas_get_num_threads() : 1;
#else
    m->name = "plain C loops (built without CBLAS)";
    m->library = "loops";
    m->threads = 1;
#endif
    m->forward = host_forward;
    m->sumsq = host_sumsq;
    m->backward = host_backward;
    m->update = host_update;
    m->zero = host_zero;
    m->upload = host_copy;
    m->download = host_copy;
    return 0;
}

void train_math_close(train_math *m)
{
    if (m->handle)
        FN(m, cublas_destroy_fn, F_DESTROY)(m->handle);
    if (m->lib)
        dlclose(m->lib);
    m->handle = m->lib = NULL;
}
