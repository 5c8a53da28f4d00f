/* The free-block tree: a treap (a binary search tree kept balanced by random heap priorities)
 * ordered by (stream, size, address). Insert, remove and lower_bound take O(log n) expected time;
 * every node also keeps the largest size in its subtree, so the largest free block is read at the
 * root in O(1). Nodes live inside the blocks, so the tree never allocates. */
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

static bool less(const gk__block *a, const gk__block *b)
{
    return key_cmp(a->stream, a->size, a->addr, b) < 0;
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

static void update(gk__block *n)
{
    size_t m = n->size;
    if (n->left && n->left->maxsz > m)
        m = n->left->maxsz;
    if (n->right && n->right->maxsz > m)
        m = n->right->maxsz;
    n->maxsz = m;
}

/* Splits `n` into keys below b's (*l) and keys above it (*r). */
static void split(gk__block *n, const gk__block *b, gk__block **l, gk__block **r)
{
    if (!n) {
        *l = *r = NULL;
        return;
    }
    if (less(n, b)) {
        split(n->right, b, &n->right, r);
        *l = n;
    } else {
        split(n->left, b, l, &n->left);
        *r = n;
    }
    update(n);
}

/* Joins two treaps where every key of a is below every key of b. */
static gk__block *join(gk__block *a, gk__block *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (a->prio >= b->prio) {
        a->right = join(a->right, b);
        update(a);
        return a;
    }
    b->left = join(a, b->left);
    update(b);
    return b;
}

static gk__block *insert(gk__block *n, gk__block *b)
{
    if (!n)
        return b;
    if (b->prio > n->prio) {
        split(n, b, &b->left, &b->right);
        update(b);
        return b;
    }
    if (less(b, n))
        n->left = insert(n->left, b);
    else
        n->right = insert(n->right, b);
    if (b->maxsz > n->maxsz)
        n->maxsz = b->maxsz;
    return n;
}

static gk__block *erase(gk__block *n, const gk__block *b)
{
    if (!n)
        return NULL;
    if (n == b)
        return join(n->left, n->right);
    if (less(b, n))
        n->left = erase(n->left, b);
    else
        n->right = erase(n->right, b);
    update(n);
    return n;
}

void gk__tree_insert(gk__tree *t, gk__block *b)
{
    b->prio = next_prio(t);
    b->left = b->right = NULL;
    b->maxsz = b->size;
    t->root = insert(t->root, b);
}

void gk__tree_remove(gk__tree *t, gk__block *b)
{
    t->root = erase(t->root, b);
    b->left = b->right = NULL;
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

gk__block *gk__tree_after(const gk__tree *t, const gk__block *b)
{
    gk__block *n = t->root, *best = NULL;
    while (n) {
        if (key_cmp(b->stream, b->size, b->addr, n) < 0) {
            best = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best;
}

gk__block *gk__tree_below_key(const gk__tree *t, uintptr_t stream, size_t size, uintptr_t addr)
{
    gk__block *n = t->root, *best = NULL;
    while (n) {
        if (key_cmp(stream, size, addr, n) > 0) {
            best = n;
            n = n->right;
        } else {
            n = n->left;
        }
    }
    return best;
}

gk__block *gk__tree_below(const gk__tree *t, uintptr_t stream, size_t size)
{
    return gk__tree_below_key(t, stream, size, 0);
}
