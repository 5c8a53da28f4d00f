/* gk_torch_malloc_raise, the entry point PyTorch is given: where gk_torch_malloc returns NULL it
 * throws std::runtime_error carrying the failure, which PyTorch's bindings raise in Python. Here a
 * C++ caller stands in for PyTorch, on the shim's sim test switch. Plain C++ (cmocka is C): each
 * check prints what failed and the program exits 1. */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "gpukit/error.h"
#include "gpukit/pool.h"
#include "gpukit/torch.h"

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static const size_t MIB = 1024 * 1024;

/* Calls gk_torch_malloc_raise; returns the pointer, or NULL with the exception's text in *what. */
static void *alloc(ssize_t size, int device, std::string *what)
{
    what->clear();
    try {
        return gk_torch_malloc_raise(size, device, nullptr);
    } catch (const std::runtime_error &e) {
        *what = e.what();
        return nullptr;
    }
}

static bool contains(const std::string &s, const char *part)
{
    if (s.find(part) != std::string::npos)
        return true;
    std::fprintf(stderr, "expected \"%s\" in: %s\n", part, s.c_str());
    return false;
}

int main()
{
    setenv("GK_POOL_CONF", "", 1);
    setenv("GK_LOG", "error", 1); /* a failure of the raising call must not be logged */
    CHECK(gk_torch_shutdown() == 0);
    CHECK(gk_torch_test_use_sim("sim:capacity=64MiB") == 0);
    std::string what;

    /* Success and size 0 behave as gk_torch_malloc: a pointer, and NULL without an exception. */
    void *keep = alloc((ssize_t)(40 * MIB), 0, &what);
    CHECK(keep != nullptr && what.empty());
    CHECK(alloc(0, 0, &what) == nullptr && what.empty());

    /* Out of memory: an exception with PyTorch's opening words, the request and the report. */
    CHECK(alloc((ssize_t)(48 * MIB), 0, &what) == nullptr);
    CHECK(what.rfind("CUDA out of memory. ", 0) == 0);
    CHECK(contains(what, "50331648 bytes on CUDA device 0"));
    CHECK(contains(what, "out of device memory"));
    int code = 0;
    size_t n = gk_torch_last_report(nullptr, 0, &code);
    CHECK(code == GK_EDEVOOM && n > 100);
    std::string kept(n + 1, '\0');
    gk_torch_last_report(&kept[0], kept.size(), nullptr);
    kept.resize(n);
    CHECK(contains(what, kept.c_str())); /* the same text Python's last_oom_report() returns */
    gk_pool_stats st;
    CHECK(gk_torch_get_stats(0, &st) == 0 && st.num_ooms == 1);

    /* Other failures: their own opening words and the reason. */
    CHECK(alloc(-1, 0, &what) == nullptr);
    CHECK(what.rfind("CUDA allocation failed. ", 0) == 0);
    CHECK(contains(what, "negative"));
    CHECK(alloc(1024, GK_TORCH_MAX_DEVICES, &what) == nullptr);
    CHECK(contains(what, "is not a CUDA ordinal"));

    /* The pool goes on after an exception: the memory is handed out again. */
    void *p = alloc((ssize_t)(8 * MIB), 0, &what);
    CHECK(p != nullptr && what.empty());
    gk_torch_free(p, 0, 0, nullptr);
    gk_torch_free(keep, 0, 0, nullptr);
    CHECK(gk_torch_get_stats(0, &st) == 0 && st.allocated_bytes[GK_POOL_ALL].current == 0);
    CHECK(gk_torch_shutdown() == 0);
    if (failures)
        std::fprintf(stderr, "test_torch_raise: %d checks failed\n", failures);
    else
        std::printf("test_torch_raise: all checks passed\n");
    return failures ? 1 : 0;
}
