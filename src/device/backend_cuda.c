/* Interim cuda backend: reports itself unavailable until the real one replaces this file. */
#include "device/device_int.h"

static int cuda_open(gk_device *dev, const gk__spec *spec)
{
    (void)spec;
    return gk__device_error(dev, GK_EUNAVAIL, "the cuda backend is not built in this tree");
}

const gk__backend_ops gk__backend_cuda = {
    .name = "cuda", .kind = GK_BACKEND_CUDA, .open = cuda_open};
