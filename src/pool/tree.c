/* The free-block index of a pool kind: exact best fit in the order (stream, size, address), in
 * near-constant time. Each stream has an index of 512 size classes (8 per power of two) with a
 * bitmap of the classes that hold blocks; each class is a small treap ordered by (size, address)
 * whose nodes know the largest size below them. A lookup goes to the request's class, takes the
 * first block there that is large enough, or else the smallest block of the next class the bitmap
 * names; every block of a later class is larger than any of an earlier one, so the answer is the
 * same as one ordered tree over all blocks would give. Nodes live inside the blocks. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "pool/pool_int.h"

#define MAXD 128

/* The size class: 8 per power of two (the three bits after the leading one). */
static inline unsigned cls_of(size_t s)
{
    unsigned m = 63u - (unsigned)__builtin_clzll((unsigned long long)s);
    if (m < 3)
        return (unsigned)s;
    return (m - 2) * 8 + (unsigned)((s >> (m - 3)) & 7);
}

static inline int key_cmp(size_t z1, uintptr_t a1, const gk__block *b)
{
    if (z1 != b->size)
        return z1 < b->size ? -1 : 1;
    if (a1 != b->addr)
        return a1 < b->addr ? -1 : 1;
    return 0;
}

static inline bool less(const gk__block *a, const gk__block *b)
{
    return key_cmp(a->size, a->addr, b) < 0;
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

static inline void update(gk__block *n)
{
    size_t m = n->size;
    if (n->left && n->left->maxsz > m)
        m = n->left->maxsz;
    if (n->right && n->right->maxsz > m)
        m = n->right->maxsz;
    n->maxsz = m;
}

/* The slow, complete fix of the largest sizes (after a path too deep to remember, which a treap
 * reaches with negligible probability). */
static size_t recompute(gk__block *n)
{
    if (!n)
        return 0;
    size_t l = recompute(n->left), r = recompute(n->right), m = n->size;
    m = l > m ? l : m;
    n->maxsz = r > m ? r : m;
    return n->maxsz;
}

/* --- one class: a treap ----------------------------------------------------------------------- */

static void treap_insert(gk__block **root, gk__block *b)
{
    gk__block **link = root;
    while (*link && (*link)->prio >= b->prio) {
        gk__block *n = *link;
        if (b->size > n->maxsz)
            n->maxsz = b->size;
        link = less(b, n) ? &n->left : &n->right;
    }
    gk__block *lc[MAXD], *rc[MAXD], *n = *link, **l = &b->left, **r = &b->right;
    int nl = 0, nr = 0;
    bool deep = false;
    while (n) {
        if (less(n, b)) {
            *l = n;
            if (nl < MAXD)
                lc[nl++] = n;
            else
                deep = true;
            l = &n->right;
            n = n->right;
        } else {
            *r = n;
            if (nr < MAXD)
                rc[nr++] = n;
            else
                deep = true;
            r = &n->left;
            n = n->left;
        }
    }
    *l = *r = NULL;
    *link = b;
    if (deep) {
        recompute(*root);
        return;
    }
    while (nl > 0)
        update(lc[--nl]);
    while (nr > 0)
        update(rc[--nr]);
    update(b);
}

static void treap_remove(gk__block **root, gk__block *b)
{
    gk__block *path[MAXD], **link = root;
    int depth = 0;
    bool deep = false;
    while (*link && *link != b) {
        gk__block *n = *link;
        if (depth < MAXD)
            path[depth++] = n;
        else
            deep = true;
        link = less(b, n) ? &n->left : &n->right;
    }
    if (!*link)
        return;
    gk__block *a = b->left, *c = b->right, *chain[MAXD], **out = link;
    int nc = 0;
    while (a && c) {
        gk__block *top;
        if (a->prio >= c->prio) {
            top = a;
            *out = a;
            out = &a->right;
            a = a->right;
        } else {
            top = c;
            *out = c;
            out = &c->left;
            c = c->left;
        }
        if (nc < MAXD)
            chain[nc++] = top;
        else
            deep = true;
    }
    *out = a ? a : c;
    b->left = b->right = NULL;
    if (deep) {
        recompute(*root);
        return;
    }
    while (nc > 0)
        update(chain[--nc]);
    while (depth > 0) {
        gk__block *n = path[--depth];
        size_t old = n->maxsz;
        update(n);
        if (n->maxsz == old)
            break;
    }
}

/* First block with key >= (size, addr) in one class, or NULL. */
static gk__block *treap_ceil(gk__block *n, size_t size, uintptr_t addr)
{
    gk__block *best = NULL;
    while (n) {
        if (key_cmp(size, addr, n) <= 0) {
            best = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best;
}

/* Last block with key < (size, addr) in one class, or NULL. */
static gk__block *treap_floor(gk__block *n, size_t size, uintptr_t addr)
{
    gk__block *best = NULL;
    while (n) {
        if (key_cmp(size, addr, n) > 0) {
            best = n;
            n = n->right;
        } else {
            n = n->left;
        }
    }
    return best;
}

static gk__block *treap_min(gk__block *n)
{
    while (n && n->left)
        n = n->left;
    return n;
}

static gk__block *treap_max(gk__block *n)
{
    while (n && n->right)
        n = n->right;
    return n;
}

/* --- the class bitmap --------------------------------------------------------------------------- */

static inline void mark(gk__fidx *x, unsigned c, bool on)
{
    uint64_t bit = 1ull << (c & 63);
    if (on) {
        x->bits[c >> 6] |= bit;
        x->words |= 1ull << (c >> 6);
    } else {
        x->bits[c >> 6] &= ~bit;
        if (!x->bits[c >> 6])
            x->words &= ~(1ull << (c >> 6));
    }
}

/* The first class after c that holds blocks, or GK__CLASSES. */
static unsigned next_class(const gk__fidx *x, unsigned c)
{
    unsigned w = (c + 1) >> 6;
    if (c + 1 >= GK__CLASSES)
        return GK__CLASSES;
    uint64_t m = x->bits[w] & (~0ull << ((c + 1) & 63));
    if (m)
        return w * 64 + (unsigned)__builtin_ctzll(m);
    uint64_t ws = x->words & (w + 1 < 64 ? ~0ull << (w + 1) : 0);
    if (!ws)
        return GK__CLASSES;
    w = (unsigned)__builtin_ctzll(ws);
    return w * 64 + (unsigned)__builtin_ctzll(x->bits[w]);
}

/* The last class before c that holds blocks, or GK__CLASSES. */
static unsigned prev_class(const gk__fidx *x, unsigned c)
{
    if (c == 0)
        return GK__CLASSES;
    unsigned w = (c - 1) >> 6, b = (c - 1) & 63;
    uint64_t m = x->bits[w] & (b == 63 ? ~0ull : (2ull << b) - 1);
    if (m)
        return w * 64 + 63u - (unsigned)__builtin_clzll(m);
    uint64_t ws = x->words & ((1ull << w) - 1);
    if (!ws)
        return GK__CLASSES;
    w = 63u - (unsigned)__builtin_clzll(ws);
    return w * 64 + 63u - (unsigned)__builtin_clzll(x->bits[w]);
}

/* --- the index of a pool kind ------------------------------------------------------------------- */

/* The stream's index (moved to the front: the stream just used is the one looked for next). */
static gk__fidx *find(gk__tree *t, uintptr_t stream)
{
    gk__fidx **link = &t->head;
    for (gk__fidx *x = t->head; x; link = &x->next, x = x->next) {
        if (x->stream != stream)
            continue;
        if (x != t->head) {
            *link = x->next;
            x->next = t->head;
            t->head = x;
        }
        return x;
    }
    return NULL;
}

int gk__tree_reserve(gk__tree *t, uintptr_t stream)
{
    if (find(t, stream))
        return 0;
    gk__fidx *x = gk__calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->stream = stream;
    x->next = t->head;
    t->head = x;
    return 0;
}

void gk__tree_drop(gk__tree *t, uintptr_t stream)
{
    for (gk__fidx **link = &t->head; *link; link = &(*link)->next) {
        gk__fidx *x = *link;
        if (x->stream == stream && !x->words) {
            *link = x->next;
            free(x);
            return;
        }
    }
}

void gk__tree_fini(gk__tree *t)
{
    for (gk__fidx *x = t->head, *n; x; x = n) {
        n = x->next;
        free(x);
    }
    t->head = NULL;
}

void gk__tree_insert(gk__tree *t, gk__block *b)
{
    gk__fidx *x = find(t, b->stream); /* reserved when the block's segment got its stream */
    unsigned c = cls_of(b->size);
    b->prio = next_prio(t);
    b->left = b->right = NULL;
    b->maxsz = b->size;
    if (!x->cls[c])
        mark(x, c, true);
    treap_insert(&x->cls[c], b);
}

void gk__tree_remove(gk__tree *t, gk__block *b)
{
    gk__fidx *x = find(t, b->stream);
    unsigned c = cls_of(b->size);
    treap_remove(&x->cls[c], b);
    if (!x->cls[c])
        mark(x, c, false);
}

gk__block *gk__tree_lower_bound(gk__tree *t, uintptr_t stream, size_t size)
{
    gk__fidx *x = find(t, stream);
    if (!x || size == 0)
        return NULL;
    unsigned c = cls_of(size);
    gk__block *b = treap_ceil(x->cls[c], size, 0);
    if (b)
        return b;
    c = next_class(x, c);
    return c < GK__CLASSES ? treap_min(x->cls[c]) : NULL;
}

gk__block *gk__tree_after(gk__tree *t, const gk__block *b)
{
    gk__fidx *x = find(t, b->stream);
    unsigned c = cls_of(b->size);
    gk__block *n = treap_ceil(x->cls[c], b->size, b->addr + 1);
    if (n)
        return n;
    c = next_class(x, c);
    return c < GK__CLASSES ? treap_min(x->cls[c]) : NULL;
}

gk__block *gk__tree_below_key(gk__tree *t, uintptr_t stream, size_t size, uintptr_t addr)
{
    gk__fidx *x = find(t, stream);
    if (!x || size == 0)
        return NULL;
    unsigned c = cls_of(size);
    gk__block *b = treap_floor(x->cls[c], size, addr);
    if (b)
        return b;
    c = prev_class(x, c);
    return c < GK__CLASSES ? treap_max(x->cls[c]) : NULL;
}

gk__block *gk__tree_below(gk__tree *t, uintptr_t stream, size_t size)
{
    return gk__tree_below_key(t, stream, size, 0);
}

size_t gk__tree_max(const gk__tree *t)
{
    size_t m = 0;
    for (const gk__fidx *x = t->head; x; x = x->next) {
        if (!x->words)
            continue;
        unsigned w = 63u - (unsigned)__builtin_clzll(x->words);
        unsigned c = w * 64 + 63u - (unsigned)__builtin_clzll(x->bits[w]);
        if (x->cls[c]->maxsz > m)
            m = x->cls[c]->maxsz;
    }
    return m;
}

unsigned gk__tree_class(size_t size)
{
    return cls_of(size);
}
