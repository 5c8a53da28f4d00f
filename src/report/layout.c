/* How the HTML report organises a run's series for a reader: the part of the run each belongs to
 * (GPU, host, the pool, the loader, the batch finder, the program), which series share a chart
 * (a pool's bytes in use against reserved; the same metric per GPU, rank, process or device),
 * which charts need a log scale, and which series hold one value and go to a table instead. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "report/report_int.h"

static const struct {
    const char *id, *title;
} parts[GK__PART_COUNT] = {
    {"gpu", "GPU"},       {"host", "Host and process tree"}, {"pool", "Pool memory"},
    {"loader", "Loader"}, {"batch", "Batch finder"},         {"program", "The program's series"},
};

/* Name prefixes, tried in order; the program's series are the ones no prefix matches (a
 * gpukit_ name the program sends itself, such as gpukit_math_library, included). */
static const struct {
    const char *prefix;
    gk__part part;
} prefixes[] = {
    {"gpukit_loader_", GK__PART_LOADER},
    {"gpukit_alloc_", GK__PART_POOL},
    {"gpukit_batch_", GK__PART_BATCH},
    {"gpukit_gpu_", GK__PART_GPU},
    {"gpukit_nvml_", GK__PART_GPU},
    {"gpukit_rank_gpu_", GK__PART_GPU},
    {"gpukit_rank_", GK__PART_HOST},
    {"gpukit_cpu", GK__PART_HOST}, /* _cpu_ and _cpus_online */
    {"gpukit_memory_", GK__PART_HOST},
    {"gpukit_swap_", GK__PART_HOST},
    {"gpukit_load", GK__PART_HOST}, /* load1, load5, load15 (the loader is matched first) */
    {"gpukit_disk_", GK__PART_HOST},
    {"gpukit_network_", GK__PART_HOST},
    {"gpukit_filesystem_", GK__PART_HOST},
    {"gpukit_process_tree_", GK__PART_HOST},
    {"gpukit_sampler_", GK__PART_HOST},
    {"gpukit_statsd_", GK__PART_HOST},
};

/* Labels that tell instances of one metric apart: series that differ only in these are drawn as
 * lines of one chart. Their order is the order of the words in a legend. */
static const struct {
    const char *key, *noun;
} instance[] = {
    {"gpu", "GPU"},
    {"rank", "rank"},
    {"pid", "pid"},
    {"device", "device"},
    {"local_rank", "local rank"},
};
#define NINSTANCE     (sizeof instance / sizeof instance[0])
#define INSTANCE_RANK 1 /* instance[1] */

/* A pool's bytes in use and reserved (same labels) share a chart, in this order. */
static const char *const pool_roles[] = {"gpukit_alloc_in_use_bytes",
                                         "gpukit_alloc_reserved_bytes"};

const char *gk__part_id(gk__part p)
{
    return (unsigned)p < GK__PART_COUNT ? parts[p].id : "program";
}

const char *gk__part_title(gk__part p)
{
    return (unsigned)p < GK__PART_COUNT ? parts[p].title : parts[GK__PART_PROGRAM].title;
}

gk__part gk__series_part(const char *name)
{
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        if (strncmp(name, prefixes[i].prefix, strlen(prefixes[i].prefix)) == 0)
            return prefixes[i].part;
    }
    return GK__PART_PROGRAM;
}

/* --- labels of a series name ------------------------------------------------------------- */

/* One label of "name{k:v,k2:v2}" (StatsD tags: the value runs to the next comma) or
 * "name{k=\"v\",k2=\"v2\"}" (Prometheus labels: quoted, with backslash escapes). */
typedef struct label {
    const char *item, *key, *val;
    size_t item_len, key_len, val_len;
} label;

/* Reads the label at *p (just after '{' or ','); 0 at the end of the labels. */
static int next_label(const char **p, label *l)
{
    const char *s = *p;
    if (!s || !*s || *s == '}')
        return 0;
    l->item = l->key = s;
    while (*s && *s != ':' && *s != '=' && *s != ',' && *s != '}')
        s++;
    l->key_len = (size_t)(s - l->key);
    l->val = s;
    l->val_len = 0;
    if (*s == ':' || *s == '=') {
        int quoted = *++s == '"';
        s += quoted;
        l->val = s;
        while (*s && (quoted ? *s != '"' : *s != ',' && *s != '}'))
            s += quoted && *s == '\\' && s[1] ? 2 : 1;
        l->val_len = (size_t)(s - l->val);
    }
    while (*s && *s != ',' && *s != '}')
        s++;
    l->item_len = (size_t)(s - l->item);
    *p = *s == ',' ? s + 1 : s;
    return 1;
}

static const char *labels_of(const char *name)
{
    const char *b = strchr(name, '{');
    return b ? b + 1 : NULL;
}

static size_t base_len(const char *name)
{
    const char *b = strchr(name, '{');
    return b ? (size_t)(b - name) : strlen(name);
}

static int instance_of(const label *l)
{
    for (size_t k = 0; k < NINSTANCE; k++) {
        if (l->key_len == strlen(instance[k].key) &&
            strncmp(l->key, instance[k].key, l->key_len) == 0)
            return (int)k;
    }
    return -1;
}

/* The value of instance label k in `name` (*val, *len); 0 when absent. */
static int instance_value(const char *name, size_t k, const char **val, size_t *len)
{
    const char *p = labels_of(name);
    label l;
    while (next_label(&p, &l)) {
        if (instance_of(&l) == (int)k) {
            *val = l.val;
            *len = l.val_len;
            return 1;
        }
    }
    return 0;
}

/* The pool role of a series (its index in pool_roles), or -1. */
static int pool_role(const char *name)
{
    for (size_t r = 0; r < sizeof pool_roles / sizeof pool_roles[0]; r++) {
        if (base_len(name) == strlen(pool_roles[r]) &&
            strncmp(name, pool_roles[r], base_len(name)) == 0)
            return (int)r;
    }
    return -1;
}

/* The labels of `name` that are not instance labels (all of them for a pool's bytes), joined
 * with commas, into b. */
static void common_labels(gk__sbuf *b, const char *name)
{
    int pool = pool_role(name) >= 0;
    const char *p = labels_of(name);
    label l;
    int first = 1;
    while (next_label(&p, &l)) {
        if (!pool && instance_of(&l) >= 0)
            continue;
        if (!first)
            gk__sbuf_add(b, ",", 1);
        gk__sbuf_add(b, l.item, l.item_len);
        first = 0;
    }
}

/* The chart a series goes to: its kind, its name (a pool's bytes: one name for both) and its
 * labels other than instance labels. */
static char *chart_key(const gk__series_summary *sm)
{
    gk__sbuf b = {0};
    const char *name = sm->s.name;
    gk__sbuf_printf(&b, "%d|", (int)sm->s.kind);
    if (pool_role(name) >= 0)
        gk__sbuf_puts(&b, "gpukit_alloc_*_bytes");
    else
        gk__sbuf_add(&b, name, base_len(name));
    gk__sbuf_add(&b, "{", 1);
    common_labels(&b, name);
    if (b.oom) {
        gk__sbuf_free(&b);
        return NULL;
    }
    return b.s;
}

/* Compares names with runs of digits as numbers, so GPU 2 comes before GPU 10. */
static int natural_cmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            while (*a == '0' && a[1] >= '0' && a[1] <= '9')
                a++;
            while (*b == '0' && b[1] >= '0' && b[1] <= '9')
                b++;
            size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
            if (la != lb)
                return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c)
                return c;
            a += la;
            b += lb;
            continue;
        }
        if (*a != *b)
            return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return *a ? 1 : *b ? -1 : 0;
}

/* --- single values and scales ------------------------------------------------------------ */

int gk__series_single_valued(const gk__series_summary *sm)
{
    if (sm->st.count == 0)
        return 1; /* nothing to draw: its values overflowed */
    if (sm->s.kind == GK_SERIES_COUNTER) {
        /* drawn as a running total: flat when nothing is added after the first increment */
        for (size_t i = 1; i < sm->s.n; i++) {
            if (sm->s.v[i] != 0)
                return 0;
        }
        return 1;
    }
    return sm->st.min == sm->st.max;
}

static int base_ends_with(const char *name, const char *suffix)
{
    size_t n = base_len(name), k = strlen(suffix);
    return n >= k && strncmp(name + n - k, suffix, k) == 0;
}

int gk__series_unit_level(const char *name)
{
    return base_ends_with(name, "_bytes") || base_ends_with(name, "_ratio");
}

int gk__chart_log_scale(const gk_report *rep, const size_t *members, size_t n)
{
    double lo = INFINITY, hi = 0;
    size_t positive = 0;
    for (size_t k = 0; k < n; k++) {
        const gk_series *s = &rep->sums[members[k]].s;
        /* shares read as percentages from 0; running totals read as totals */
        if (s->kind == GK_SERIES_COUNTER || base_ends_with(s->name, "_ratio"))
            return 0;
        for (size_t i = 0; i < s->n; i++) {
            if (s->v[i] > 0) {
                lo = fmin(lo, s->v[i]);
                hi = fmax(hi, s->v[i]);
                positive++;
            }
        }
    }
    return positive >= 2 && hi > 100 * lo;
}

/* --- the layout -------------------------------------------------------------------------- */

/* A series on its way to a chart: sorted by part, chart key, pool role (in use before
 * reserved), then by name with numbers in numeric order (GPU 2 before GPU 10). */
typedef struct entry {
    size_t idx;
    gk__part part;
    int role;
    const char *name;
    char *key;
} entry;

static int entry_cmp(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    if (a->part != b->part)
        return a->part < b->part ? -1 : 1;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    if (a->role != b->role)
        return a->role < b->role ? -1 : 1;
    if ((c = natural_cmp(a->name, b->name)) != 0)
        return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Charts and values in page order: by part, then by where their first series was recorded. */
typedef struct placed {
    gk__part part;
    size_t order, seq;
} placed;

static int placed_cmp(const placed *a, const placed *b)
{
    if (a->part != b->part)
        return a->part < b->part ? -1 : 1;
    if (a->order != b->order)
        return a->order < b->order ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int chart_cmp(const void *a, const void *b)
{
    const gk__chart *x = a, *y = b;
    placed px = {x->part, x->order, x->first}, py = {y->part, y->order, y->first};
    return placed_cmp(&px, &py);
}

typedef struct value_slot {
    placed at;
    size_t idx;
} value_slot;

static int value_cmp(const void *a, const void *b)
{
    return placed_cmp(&((const value_slot *)a)->at, &((const value_slot *)b)->at);
}

void gk__layout_free(gk__layout *l)
{
    if (!l)
        return;
    free(l->charts);
    free(l->members);
    free(l->values);
    memset(l, 0, sizeof *l);
}

/* Places one group of series that share a key: a table row each when none has two values to
 * draw, else charts of at most GK__CHART_MAX_LINES lines. */
static void place_group(const gk_report *rep, gk__layout *l, entry *e, size_t n, value_slot *vs)
{
    size_t order = e[0].idx;
    int single = 1;
    for (size_t k = 0; k < n; k++) {
        order = e[k].idx < order ? e[k].idx : order;
        single &= gk__series_single_valued(&rep->sums[e[k].idx]);
    }
    size_t drawn = 0, first_chart = l->ncharts;
    for (size_t k = 0; k < n; k++) {
        const gk__series_summary *sm = &rep->sums[e[k].idx];
        if (single || sm->st.count == 0) {
            vs[l->nvalues++] = (value_slot){{e[k].part, order, k}, e[k].idx};
            continue;
        }
        if (drawn % GK__CHART_MAX_LINES == 0)
            l->charts[l->ncharts++] = (gk__chart){.part = e[k].part,
                                                  .order = order,
                                                  .first = l->nmembers,
                                                  .chunk = drawn / GK__CHART_MAX_LINES};
        l->members[l->nmembers++] = e[k].idx;
        l->charts[l->ncharts - 1].n++;
        drawn++;
    }
    for (size_t c = first_chart; c < l->ncharts; c++) {
        gk__chart *ch = &l->charts[c];
        ch->chunks = (drawn + GK__CHART_MAX_LINES - 1) / GK__CHART_MAX_LINES;
        ch->cumulative = rep->sums[l->members[ch->first]].s.kind == GK_SERIES_COUNTER;
        ch->log_scale = gk__chart_log_scale(rep, &l->members[ch->first], ch->n);
        ch->pool = e[0].role >= 0;
    }
}

int gk__report_layout(const gk_report *rep, gk__layout *l)
{
    memset(l, 0, sizeof *l);
    size_t n = rep->nsums, alloc_n = n ? n : 1;
    entry *e = gk__calloc(alloc_n, sizeof *e);
    value_slot *vs = gk__calloc(alloc_n, sizeof *vs);
    l->charts = gk__calloc(alloc_n, sizeof *l->charts);
    l->members = gk__calloc(alloc_n, sizeof *l->members);
    l->values = gk__calloc(alloc_n, sizeof *l->values);
    int rc = -ENOMEM;
    if (!e || !vs || !l->charts || !l->members || !l->values)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *name = rep->sums[i].s.name;
        e[i] = (entry){i, gk__series_part(name), pool_role(name), name, chart_key(&rep->sums[i])};
        if (!e[i].key)
            goto out;
    }
    qsort(e, n, sizeof *e, entry_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && e[j].part == e[i].part && strcmp(e[j].key, e[i].key) == 0)
            j++;
        place_group(rep, l, e + i, j - i, vs);
        i = j;
    }
    qsort(l->charts, l->ncharts, sizeof *l->charts, chart_cmp);
    qsort(vs, l->nvalues, sizeof *vs, value_cmp);
    for (size_t i = 0; i < l->nvalues; i++)
        l->values[i] = vs[i].idx;
    rc = 0;
out:
    for (size_t i = 0; e && i < n; i++)
        free(e[i].key);
    free(e);
    free(vs);
    if (rc)
        gk__layout_free(l);
    return rc;
}

/* --- words for a chart ------------------------------------------------------------------- */

/* Whether instance label k differs between the series of a chart. */
static int varies(const gk_report *rep, const gk__layout *l, const gk__chart *c, size_t k)
{
    const char *v0 = NULL;
    size_t n0 = 0;
    int has0 = instance_value(rep->sums[l->members[c->first]].s.name, k, &v0, &n0);
    for (size_t m = 1; m < c->n; m++) {
        const char *v;
        size_t len;
        int has = instance_value(rep->sums[l->members[c->first + m]].s.name, k, &v, &len);
        if (has != has0 || (has && (len != n0 || strncmp(v, v0, len) != 0)))
            return 1;
    }
    return 0;
}

void gk__chart_caption(const gk_report *rep, const gk__layout *l, const gk__chart *c, gk__sbuf *b)
{
    const char *name = rep->sums[l->members[c->first]].s.name;
    if (c->pool) {
        const char *labels = labels_of(name);
        gk__sbuf_puts(b, "pool ");
        if (labels) {
            gk__sbuf_add(b, labels - 1, strlen(labels - 1));
            gk__sbuf_add(b, " ", 1);
        }
        gk__sbuf_puts(b, "bytes: in use against reserved");
    } else if (c->n == 1) {
        gk__sbuf_puts(b, name);
    } else {
        gk__sbuf common = {0};
        common_labels(&common, name);
        gk__sbuf_add(b, name, base_len(name));
        if (common.len)
            gk__sbuf_printf(b, "{%s}", common.s);
        b->oom |= common.oom;
        gk__sbuf_free(&common);
        for (size_t k = 0; k < NINSTANCE; k++) {
            if (varies(rep, l, c, k)) {
                gk__sbuf_printf(b, " per %s", instance[k].noun);
                break;
            }
        }
    }
    if (c->chunks > 1)
        gk__sbuf_printf(b, " (chart %zu of %zu)", c->chunk + 1, c->chunks);
}

void gk__chart_legend(const gk_report *rep, const gk__layout *l, const gk__chart *c, size_t m,
                      gk__sbuf *b)
{
    const char *name = rep->sums[l->members[c->first + m]].s.name;
    size_t start = b->len;
    if (c->pool) {
        gk__sbuf_puts(b, pool_role(name) == 0 ? "in use" : "reserved");
        return;
    }
    int rank_varies = varies(rep, l, c, INSTANCE_RANK);
    for (size_t k = 0; k < NINSTANCE; k++) {
        const char *v;
        size_t len;
        /* a local rank says nothing more where the rank differs */
        if ((rank_varies && strcmp(instance[k].key, "local_rank") == 0) || !varies(rep, l, c, k) ||
            !instance_value(name, k, &v, &len))
            continue;
        gk__sbuf_puts(b, b->len > start ? ", " : "");
        if (strcmp(instance[k].key, "device") != 0)
            gk__sbuf_printf(b, "%s ", instance[k].noun);
        gk__sbuf_add(b, v, len);
    }
    if (b->len == start)
        gk__sbuf_puts(b, name);
}
