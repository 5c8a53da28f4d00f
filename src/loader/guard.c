/* Copies out of a file mapping that turn a fault into an error. A record file truncated (or
 * replaced in place) while it is mapped makes the next access to a page past its new end raise
 * SIGBUS. The copy arms a per-thread jump target, and a SIGBUS handler installed once per process
 * jumps back to it when the kernel raised the signal for a fault on that thread while it was
 * armed; every other SIGBUS goes to the handler that was installed before (or takes the default
 * action), so the process behaves as it would without gpukit. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <ucontext.h>

#include "loader/loader_int.h"

/* The armed thread's jump target. Initial-exec TLS: the handler reads it without a call into the
 * dynamic loader (which may allocate, and allocating is not allowed in a signal handler). */
static __thread sigjmp_buf *armed __attribute__((tls_model("initial-exec")));

static struct sigaction previous;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_rc;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    sigjmp_buf *env = armed;
    /* si_code > 0: raised by the kernel for a fault (BUS_ADRERR, ...), not sent with kill(). */
    if (env && si && si->si_code > 0) {
        armed = NULL;
        /* Jumping out skips sigreturn, which would restore the interrupted code's signal mask:
         * restore it here (SA_NODEFER keeps SIGBUS unblocked, but a wrapper such as a sanitizer
         * may install its own handler that blocks every signal while it runs). */
        if (uc)
            pthread_sigmask(SIG_SETMASK, &((ucontext_t *)uc)->uc_sigmask, NULL);
        siglongjmp(*env, 1);
    }
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) {
            previous.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* The default action (a SIGBUS from a fault cannot be ignored): restore it and raise again,
     * so the process ends as it would have without this handler. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
    raise(SIGBUS);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    /* SA_NODEFER: SIGBUS is not blocked while the handler runs, so jumping out of it with a
     * sigsetjmp(env, 0) target (no signal-mask syscall per copy) leaves the mask as it was. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    install_rc = sigaction(SIGBUS, &sa, &previous) == 0 ? 0 : -errno;
}

int gk__guard_install(void)
{
    pthread_once(&install_once, install);
    return install_rc;
}

int gk__guard_installed(void)
{
    struct sigaction cur;
    if (sigaction(SIGBUS, NULL, &cur) != 0)
        return 0;
    return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigbus;
}

/* Large records are copied in pieces of this size: glibc's memcpy of a 1 MiB block took its
 * non-temporal path on the AMD EPYC development VM (3.6 GB/s), 64 KiB pieces its cached one
 * (9 to 11.5 GB/s), measured in the same run. */
#define COPY_PIECE 65536

/* noinline: the jump target must be this function's frame, whatever the caller inlines. */
__attribute__((noinline)) int gk__guarded_gather(unsigned char *dst, const unsigned char *base,
                                                 size_t size, const uint64_t *idx, size_t n,
                                                 const unsigned char *canary, uint64_t *seen,
                                                 size_t *failed)
{
    sigjmp_buf env;
    volatile size_t i = 0; /* read after the jump: kept in memory */
    if (sigsetjmp(env, 0)) {
        atomic_signal_fence(memory_order_seq_cst);
        *failed = i;
        return -EFAULT;
    }
    armed = &env;
    atomic_signal_fence(memory_order_seq_cst);
    if (size <= COPY_PIECE) {
        for (; i < n; i++)
            memcpy(dst + i * size, base + idx[i] * size, size);
    } else {
        for (; i < n; i++)
            for (size_t off = 0; off < size; off += COPY_PIECE)
                memcpy(dst + i * size + off, base + idx[i] * size + off,
                       size - off < COPY_PIECE ? size - off : COPY_PIECE);
    }
    /* The canary is read after every record (a fence orders the loads): if it still holds its
     * value, the file was not cut before this read, so not during the copies either. */
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t v;
    memcpy(&v, (const void *)canary, sizeof v);
    *seen = v;
    atomic_signal_fence(memory_order_seq_cst);
    armed = NULL;
    return 0;
}
