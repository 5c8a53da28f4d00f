/* gk_torch_malloc_raise (gpukit/torch.h): the entry point PyTorch is given. PyTorch's pluggable
 * path stores whatever pointer its allocation function returns, so a NULL would become a tensor at
 * address 0 and fail later, far from its cause. A C++ exception thrown here instead travels up
 * through PyTorch's C++ to its Python bindings, which raise it as a RuntimeError at the line that
 * allocated. This is the only C++ in gpukit: the exception is thrown from this frame, so it never
 * crosses a C frame. */
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "gpukit/error.h"
#include "gpukit/torch.h"
#include "torch_int.h"

extern "C" GK_API void *gk_torch_malloc_raise(ssize_t size, int device, void *stream)
{
    char *text = nullptr;
    int code = 0;
    void *p = gk__torch_malloc_quiet(size, device, stream, &text, &code);
    if (p || size == 0)
        return p;
    char head[256];
    std::snprintf(head, sizeof head,
                  "%sgpukit's pool could not allocate %zd bytes on CUDA device %d "
                  "(gpukit.torch.last_oom_report() returns this text): ",
                  code == GK_EDEVOOM ? "CUDA out of memory. " : "CUDA allocation failed. ", size,
                  device);
    std::string msg = head;
    msg += text ? text : "no host memory left for the reason";
    std::free(text);
    throw std::runtime_error(msg);
}
