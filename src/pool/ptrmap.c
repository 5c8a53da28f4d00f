/* The sharded map from live pointers to their blocks. A free looks its block up (and removes it)
 * under one shard's lock only, so frees on different threads rarely contend before they need the
 * pool lock. Chains run through the blocks (hnext); a shard doubles its buckets at load 1. */
#include <stdlib.h>

#include "common/alloc.h"
#include "pool/pool_int.h"

static size_t hash_ptr(uintptr_t p)
{
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20);
}

static gk__shard *shard_of(gk__ptrmap *m, uintptr_t p)
{
    return &m->shards[(hash_ptr(p) >> 24) & (GK__SHARDS - 1)];
}

int gk__ptrmap_init(gk__ptrmap *m)
{
    for (int i = 0; i < GK__SHARDS; i++) {
        gk__shard *s = &m->shards[i];
        s->buckets = NULL;
        s->nbuckets = s->count = 0;
        if (pthread_mutex_init(&s->lock, NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&m->shards[i].lock);
            return -ENOMEM;
        }
    }
    return 0;
}

void gk__ptrmap_fini(gk__ptrmap *m)
{
    for (int i = 0; i < GK__SHARDS; i++) {
        free(m->shards[i].buckets);
        pthread_mutex_destroy(&m->shards[i].lock);
    }
}

static int shard_grow(gk__shard *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : 16;
    gk__block **nb = gk__calloc(n, sizeof *nb);
    if (!nb)
        return -ENOMEM;
    for (size_t i = 0; i < s->nbuckets; i++) {
        gk__block *b = s->buckets[i];
        while (b) {
            gk__block *next = b->hnext;
            size_t k = hash_ptr(b->addr) & (n - 1);
            b->hnext = nb[k];
            nb[k] = b;
            b = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
    return 0;
}

int gk__ptrmap_insert(gk__ptrmap *m, gk__block *b)
{
    gk__shard *s = shard_of(m, b->addr);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (s->count >= s->nbuckets && (rc = shard_grow(s)) != 0 && s->nbuckets == 0)
        goto out_unlock;
    rc = 0;
    size_t k = hash_ptr(b->addr) & (s->nbuckets - 1);
    b->hnext = s->buckets[k];
    s->buckets[k] = b;
    s->count++;
out_unlock:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

gk__block *gk__ptrmap_remove(gk__ptrmap *m, uintptr_t addr)
{
    gk__shard *s = shard_of(m, addr);
    gk__block *found = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->nbuckets) {
        gk__block **link = &s->buckets[hash_ptr(addr) & (s->nbuckets - 1)];
        for (; *link; link = &(*link)->hnext) {
            if ((*link)->addr == addr) {
                found = *link;
                *link = found->hnext;
                found->hnext = NULL;
                s->count--;
                break;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

gk__block *gk__ptrmap_find(gk__ptrmap *m, uintptr_t addr)
{
    gk__shard *s = shard_of(m, addr);
    gk__block *found = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->nbuckets) {
        for (gk__block *b = s->buckets[hash_ptr(addr) & (s->nbuckets - 1)]; b; b = b->hnext) {
            if (b->addr == addr) {
                found = b;
                break;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}
