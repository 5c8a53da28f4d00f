/* The handoff between the workers and the consumer, without a mutex (see loader_int.h): per-slot
 * sequence numbers published with release and read with acquire; a consumer that finds its batch
 * not ready spins for about one fill time when every thread has a CPU, then sleeps on a futex
 * that a worker wakes only when the consumer said it waits for that very batch; a worker that
 * finds the ring full sleeps until enough slots are free to be worth waking for (how many comes
 * from the measured fill time and the consumer's pace), or until the consumer needs it. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_int.h"

/* A sleeping worker's wake-up latency assumed when deciding how early to wake it. */
#define WAKE_LATENCY_NS 20000ULL
/* The consumer's spin: twice the average fill time (it often arrives as a fill starts), at least
 * SPIN_MIN_NS, at most SPIN_MAX_NS. */
#define SPIN_MIN_NS 2000ULL
#define SPIN_MAX_NS 200000ULL
/* A sleeping worker rechecks at least this often (a lost wake-up cannot hang it). */
#define WORKER_NAP_NS 1000000000ULL

void gk__futex_wait(_Atomic uint32_t *word, uint32_t expect, uint64_t timeout_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000ULL),
                          .tv_nsec = (long)(timeout_ns % 1000000000ULL)};
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expect, &ts, NULL, 0);
}

void gk__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void gk__wake_workers(gk_loader *ld)
{
    ld->frees_unwoken = 0;
    atomic_fetch_add_explicit(&ld->wk_word, 1, memory_order_seq_cst);
    gk__futex_wake(&ld->wk_word, INT_MAX);
}

int gk__wait_free(gk_loader *ld, gk__worker *w, gk__slot *s, int64_t seq)
{
    int64_t want = seq - ld->K;
    if (atomic_load_explicit(&s->freed, memory_order_acquire) == want)
        return 0;
    uint64_t t0 = gk__loader_now_ns();
    int rc = 0;
    for (;;) {
        if (atomic_load_explicit(&s->freed, memory_order_acquire) == want)
            break;
        if (atomic_load_explicit(&ld->halt, memory_order_acquire)) {
            rc = -1;
            break;
        }
        /* Read the word first: a wake after this read changes it, and the futex call then
         * returns at once instead of sleeping through it. */
        uint32_t gen = atomic_load_explicit(&ld->wk_word, memory_order_seq_cst);
        atomic_fetch_add_explicit(&ld->wk_sleepers, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&s->freed, memory_order_seq_cst) != want &&
            !atomic_load_explicit(&ld->halt, memory_order_seq_cst))
            gk__futex_wait(&ld->wk_word, gen, WORKER_NAP_NS);
        atomic_fetch_sub_explicit(&ld->wk_sleepers, 1, memory_order_seq_cst);
    }
    gk__own_add(&w->st.idle_ns, gk__loader_now_ns() - t0);
    return rc;
}

void gk__publish_ready(gk_loader *ld, gk__slot *s, int64_t seq)
{
    atomic_store_explicit(&s->ready, seq, memory_order_seq_cst);
    if (atomic_load_explicit(&ld->cs_waiting, memory_order_seq_cst) == seq) {
        atomic_fetch_add_explicit(&ld->cs_word, 1, memory_order_seq_cst);
        gk__futex_wake(&ld->cs_word, 1);
    }
}

/* Frees a sleeping worker may wait for before it is woken. Woken after h frees, it has about
 * (K - h) of the consumer's periods (the batches still ready, and the one being used) to make the
 * next batch ready; that must cover twice the wake-up latency plus one fill. At least 1, at most
 * K - 1. */
static unsigned wake_after(const gk_loader *ld)
{
    uint64_t period = ld->period_avg_ns;
    if (!period || ld->K <= 2)
        return 1;
    uint64_t fill = atomic_load_explicit(&ld->fill_avg_ns, memory_order_relaxed);
    uint64_t need = (2 * (fill + WAKE_LATENCY_NS) + period - 1) / period; /* periods */
    if (need >= (uint64_t)ld->K - 1)
        return 1;
    uint64_t h = (uint64_t)ld->K - need;
    return (unsigned)(h > (uint64_t)ld->K - 1 ? (uint64_t)ld->K - 1 : h);
}

void gk__publish_free(gk_loader *ld, gk__slot *s, int64_t seq)
{
    atomic_store_explicit(&s->freed, seq, memory_order_seq_cst);
    if (atomic_load_explicit(&ld->wk_sleepers, memory_order_seq_cst) == 0) {
        ld->frees_unwoken = 0;
        return;
    }
    if (++ld->frees_unwoken >= wake_after(ld))
        gk__wake_workers(ld);
}

int gk__wait_ready(gk_loader *ld, gk__slot *s, int64_t seq, double timeout)
{
    if (atomic_load_explicit(&s->ready, memory_order_acquire) == seq)
        return 0;
    /* The consumer waits: a worker sleeping for a free slot is needed now. */
    if (atomic_load_explicit(&ld->wk_sleepers, memory_order_seq_cst))
        gk__wake_workers(ld);
    if (timeout <= 0)
        return -ETIMEDOUT;
    uint64_t t0 = gk__loader_now_ns();
    if (ld->spin) {
        uint64_t budget = 2 * atomic_load_explicit(&ld->fill_avg_ns, memory_order_relaxed);
        budget = budget < SPIN_MIN_NS ? SPIN_MIN_NS : budget > SPIN_MAX_NS ? SPIN_MAX_NS : budget;
        do {
            for (int i = 0; i < 64; i++) {
                if (atomic_load_explicit(&s->ready, memory_order_acquire) == seq)
                    return 0;
                gk__cpu_relax();
            }
        } while (gk__loader_now_ns() - t0 < budget);
    }
    uint64_t limit = timeout >= 1e9 ? UINT64_MAX / 2 : (uint64_t)(timeout * 1e9);
    for (;;) {
        if (atomic_load_explicit(&s->ready, memory_order_acquire) == seq)
            return 0;
        uint64_t spent = gk__loader_now_ns() - t0;
        if (spent >= limit)
            return -ETIMEDOUT;
        uint32_t gen = atomic_load_explicit(&ld->cs_word, memory_order_seq_cst);
        atomic_store_explicit(&ld->cs_waiting, seq, memory_order_seq_cst);
        if (atomic_load_explicit(&s->ready, memory_order_seq_cst) != seq)
            gk__futex_wait(&ld->cs_word, gen, limit - spent);
        atomic_store_explicit(&ld->cs_waiting, -1, memory_order_relaxed);
    }
}
