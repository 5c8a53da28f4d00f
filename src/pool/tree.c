/* The free-block tree: a treap (a binary search tree kept balanced by random heap priorities)
 * ordered by (stream, size, address). Insert, remove and lower_bound take O(log n) expected time;
 * nodes live inside the blocks, so the tree never allocates. */
#include "pool/pool_int.h"

static int key_cmp(uintptr_t s1, size_t z1, uintptr_t a1, const gk__block *b)
{
    if (s1 != b->stream)
        return s1 < b->stream ? -1 : 1;
    if (z1 != b->size)
        return z1 < b->size ? -1 : 1;
    if (a1 != b->addr)
        return a1 < b->addr ? -1 : 1;
    return 0;
}

static uint32_t next_prio(gk__tree *t)
{
    /* xorshift32: deterministic, so replays are reproducible. */
    uint32_t x = t->seed ? t->seed : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t->seed = x;
    return x;
}

/* Splits `n` into keys < b's key (*l) and keys > it (*r). */
static void split(gk__block *n, const gk__block *b, gk__block **l, gk__block **r)
{
    while (n) {
        if (key_cmp(b->stream, b->size, b->addr, n) > 0) {
            *l = n;
            l = &n->right;
            n = n->right;
        } else {
            *r = n;
            r = &n->left;
            n = n->left;
        }
    }
    *l = NULL;
    *r = NULL;
}

/* Joins two treaps where every key of a is below every key of b. */
static gk__block *join(gk__block *a, gk__block *b)
{
    gk__block *root = NULL, **link = &root;
    while (a && b) {
        if (a->prio >= b->prio) {
            *link = a;
            link = &a->right;
            a = a->right;
        } else {
            *link = b;
            link = &b->left;
            b = b->left;
        }
    }
    *link = a ? a : b;
    return root;
}

void gk__tree_insert(gk__tree *t, gk__block *b)
{
    b->prio = next_prio(t);
    b->left = b->right = NULL;
    gk__block **link = &t->root;
    while (*link && (*link)->prio >= b->prio)
        link = key_cmp(b->stream, b->size, b->addr, *link) < 0 ? &(*link)->left : &(*link)->right;
    split(*link, b, &b->left, &b->right);
    *link = b;
    b->in_tree = true;
    t->count++;
}

void gk__tree_remove(gk__tree *t, gk__block *b)
{
    gk__block **link = &t->root;
    while (*link && *link != b)
        link = key_cmp(b->stream, b->size, b->addr, *link) < 0 ? &(*link)->left : &(*link)->right;
    if (!*link)
        return;
    *link = join(b->left, b->right);
    b->left = b->right = NULL;
    b->in_tree = false;
    t->count--;
}

gk__block *gk__tree_lower_bound(const gk__tree *t, uintptr_t stream, size_t size)
{
    gk__block *n = t->root, *best = NULL;
    while (n) {
        if (key_cmp(stream, size, 0, n) <= 0) {
            best = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best;
}

static void walk(gk__block *n, void (*fn)(gk__block *b, void *arg), void *arg)
{
    while (n) {
        walk(n->left, fn, arg);
        gk__block *right = n->right; /* fn must not change the tree */
        fn(n, arg);
        n = right;
    }
}

void gk__tree_walk(const gk__tree *t, void (*fn)(gk__block *b, void *arg), void *arg)
{
    walk(t->root, fn, arg);
}
