/* The handoff between the workers and the consumer, without a mutex (see loader_int.h): per-slot
 * sequence numbers published with release and read with acquire; a consumer that finds its batch
 * not ready spins for up to twice the fill time when every thread has a CPU, then sleeps on a
 * futex that a worker wakes only when the consumer said it waits for that very batch; a worker
 * that finds the ring full sleeps until enough slots are free to be worth waking for: on a timer
 * set from the consumer's pace and the measured fill time (no system call for the consumer),
 * else until the consumer wakes it after enough frees, or at once when the consumer must wait.
 * Measured on the development VM, waking a sleeping thread cost the waker 5 us, and the woken
 * worker often ran on the waker's CPU and delayed it by a whole fill. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_int.h"

/* A sleeping worker's wake-up latency assumed until one is measured. */
#define WAKE_LATENCY_NS 20000ULL
/* The least lateness assumed for a worker's timed nap (a timer wake-up is never on time). */
#define NAP_LATE_MIN_NS 10000ULL
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

/* A moving average (1/8 weight) of delays, each sample capped at twice the current average (or
 * twice `floor`), so one stall of the whole machine cannot poison it: a spike raises it slowly,
 * and the average never stops moving (a huge one would stop the naps that sample it). */
static uint64_t robust_avg(uint64_t avg, uint64_t sample, uint64_t floor)
{
    uint64_t cap = 2 * (avg > floor ? avg : floor);
    if (sample > cap)
        sample = cap;
    return avg ? avg - avg / 8 + sample / 8 : sample;
}

void gk__wake_workers(gk_loader *ld)
{
    ld->frees_unwoken = 0;
    atomic_store_explicit(&ld->wake_ns, gk__loader_now_ns(), memory_order_relaxed);
    atomic_fetch_add_explicit(&ld->wk_word, 1, memory_order_seq_cst);
    gk__futex_wake(&ld->wk_word, INT_MAX);
}

/* A worker woken by the consumer: the time from the wake call to running again, averaged. This
 * is what a wake costs in reserve (the scheduler may take far longer than the system call). */
static void note_wake_latency(gk_loader *ld, uint64_t slept_at)
{
    uint64_t sent = atomic_load_explicit(&ld->wake_ns, memory_order_relaxed);
    if (sent < slept_at)
        return; /* not woken by the consumer since it slept (a timeout, or a spurious return) */
    uint64_t lat = gk__loader_now_ns() - sent;
    uint64_t avg = atomic_load_explicit(&ld->wake_lat_avg_ns, memory_order_relaxed);
    atomic_store_explicit(&ld->wake_lat_avg_ns, robust_avg(avg, lat, WAKE_LATENCY_NS),
                          memory_order_relaxed);
}

/* How late timed naps return, averaged (the scheduler's and the timer's delay). */
static void note_nap_lateness(gk_loader *ld, uint64_t until)
{
    uint64_t now = gk__loader_now_ns();
    if (now < until)
        return; /* woken before its time (the consumer needed the workers) */
    uint64_t late = now - until;
    uint64_t avg = atomic_load_explicit(&ld->nap_late_avg_ns, memory_order_relaxed);
    atomic_store_explicit(&ld->nap_late_avg_ns, robust_avg(avg, late, NAP_LATE_MIN_NS),
                          memory_order_relaxed);
}

/* When a worker waiting to fill batch seq should be back, from the consumer's pace: the consumer
 * takes one batch per period, so it asks for batch seq (seq - taken) periods after it took
 * `taken`. The worker wakes a lead before that: one fill plus the naps' lateness, twice. By then
 * the consumer has freed every slot but the one it holds, so one timed wake-up fills K - 1
 * batches, and the consumer makes no system call for it. 0 when there is no prediction (the
 * consumer's pace is not known yet, it is late against it, or the ring is too short for the
 * lead): the worker then sleeps until the consumer wakes it. */
static uint64_t nap_until(gk_loader *ld, int64_t seq, uint64_t now)
{
    uint64_t period = atomic_load_explicit(&ld->cs_period_ns, memory_order_relaxed);
    int64_t taken = atomic_load_explicit(&ld->cs_taken, memory_order_relaxed);
    uint64_t last = atomic_load_explicit(&ld->cs_last_ns, memory_order_relaxed);
    if (!period || taken < 0 || seq <= taken || (uint64_t)(seq - taken) > 1000000)
        return 0;
    uint64_t late = atomic_load_explicit(&ld->nap_late_avg_ns, memory_order_relaxed);
    uint64_t lead = 2 * (atomic_load_explicit(&ld->fill_avg_ns, memory_order_relaxed) +
                         (late > NAP_LATE_MIN_NS ? late : NAP_LATE_MIN_NS));
    uint64_t need_at = last + (uint64_t)(seq - taken) * period;
    /* the slot is free once the consumer took batch seq - K + 1 */
    uint64_t free_at = last + (uint64_t)(seq - taken - ld->K + 1) * period;
    if (need_at < lead || need_at - lead <= now || need_at - lead < free_at)
        return 0;
    uint64_t until = need_at - lead;
    return until - now > WORKER_NAP_NS ? now + WORKER_NAP_NS : until;
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
        uint64_t now = gk__loader_now_ns(), until = nap_until(ld, seq, now);
        /* A timed nap (counted as a napper: the consumer wakes it only if it must wait itself),
         * else a sleep the consumer ends once enough slots are free (counted as a sleeper). */
        _Atomic int *count = until ? &ld->wk_nappers : &ld->wk_sleepers;
        atomic_fetch_add_explicit(count, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&s->freed, memory_order_seq_cst) != want &&
            !atomic_load_explicit(&ld->halt, memory_order_seq_cst)) {
            gk__futex_wait(&ld->wk_word, gen, until ? until - now : WORKER_NAP_NS);
            if (until)
                note_nap_lateness(ld, until);
            else
                note_wake_latency(ld, now);
        }
        atomic_fetch_sub_explicit(count, 1, memory_order_seq_cst);
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
 * next batch ready; that must cover the measured wake-up latency plus one fill, with half again
 * as margin. At least 1, at most K - 1. */
static unsigned wake_after(const gk_loader *ld)
{
    uint64_t period = ld->period_avg_ns;
    if (!period || ld->K <= 2)
        return 1;
    uint64_t fill = atomic_load_explicit(&ld->fill_avg_ns, memory_order_relaxed);
    uint64_t lat = atomic_load_explicit(&ld->wake_lat_avg_ns, memory_order_relaxed);
    uint64_t cover = (fill + (lat ? lat : WAKE_LATENCY_NS)) * 3 / 2;
    uint64_t need = (cover + period - 1) / period; /* periods */
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
    /* The consumer waits: a worker sleeping or napping until a slot is free is needed now. */
    if (atomic_load_explicit(&ld->wk_sleepers, memory_order_seq_cst) ||
        atomic_load_explicit(&ld->wk_nappers, memory_order_seq_cst))
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
