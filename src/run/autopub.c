/* The automatic metrics publisher behind pools and loaders (see autopub_int.h): one thread per
 * object, started only under `gpukit run`, waking on an absolute monotonic deadline so the
 * object's own hot paths pay nothing for it; and the one-shot publish of the batch finder. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "common/alloc.h"
#include "run/autopub_int.h"

struct gk__autopub {
    gk__autopub_fn fn;
    void *user;
    gk_statsd *client;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static void *publisher(void *arg)
{
    gk__autopub *p = arg;
    struct timespec due;
    clock_gettime(CLOCK_MONOTONIC, &due);
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        due.tv_nsec += GK__AUTOPUB_INTERVAL_MS * 1000000L;
        while (due.tv_nsec >= 1000000000L) {
            due.tv_nsec -= 1000000000L;
            due.tv_sec++;
        }
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &due) != ETIMEDOUT)
            ;
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->mu);
        p->fn(p->user, p->client);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int gk__autopub_start(gk__autopub_fn fn, void *user, gk__autopub **out)
{
    *out = NULL;
    const char *path = getenv(GK_METRICS_SOCKET_ENV);
    if (!fn || !path || !*path)
        return 0;
    gk__autopub *p = gk__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->user = user;
    int rc = gk_statsd_open(path, &p->client);
    if (rc)
        goto out_free;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        rc = -ENOMEM;
        goto out_client;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (e) {
        rc = -e;
        goto out_client;
    }
    if ((e = pthread_mutex_init(&p->mu, NULL)) != 0) {
        rc = -e;
        goto out_cond;
    }
    if ((e = pthread_create(&p->thread, NULL, publisher, p)) != 0) {
        rc = -e;
        goto out_mutex;
    }
    *out = p;
    return 0;
out_mutex:
    pthread_mutex_destroy(&p->mu);
out_cond:
    pthread_cond_destroy(&p->cv);
out_client:
    gk_statsd_close(p->client);
out_free:
    free(p);
    return rc;
}

/* Calls fn until it delivers everything, for up to 20 tries 5 ms apart; fn's last result. */
static int publish_retrying(gk__autopub_fn fn, void *user, gk_statsd *c)
{
    struct timespec pause = {0, 5 * 1000 * 1000};
    int rc = fn(user, c);
    for (int i = 1; i < 20 && rc != 0; i++) {
        nanosleep(&pause, NULL);
        rc = fn(user, c);
    }
    return rc;
}

int gk__autopub_once(gk__autopub_fn fn, void *user)
{
    const char *path = getenv(GK_METRICS_SOCKET_ENV);
    if (!fn || !path || !*path)
        return 0;
    gk_statsd *c = NULL;
    int rc = gk_statsd_open(path, &c);
    if (rc)
        return rc;
    rc = publish_retrying(fn, user, c);
    gk_statsd_close(c);
    return rc;
}

void gk__autopub_stop(gk__autopub *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    (void)publish_retrying(p->fn, p->user, p->client);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    gk_statsd_close(p->client);
    free(p);
}
