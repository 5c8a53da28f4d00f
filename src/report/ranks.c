/* The per-rank view of a multi-process run: which series belong to which rank (their `rank` tag
 * or label), one row per rank (step time, loader wait, GPU memory, GPU utilization, CPU), and the
 * straggler rule that compares each rank with the median of the others. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "report/report_int.h"

/* The straggler rule's thresholds (docs/advice.md keeps the same numbers). */
#define STRAGGLER_STEP_RATIO  1.25 /* a rank's median step over the others' median ... */
#define STRAGGLER_STEP_MIN_MS 1.0  /* ... and at least this much slower */
#define STRAGGLER_WAIT_RATIO  2.0  /* a rank's loader-wait share over twice the others' ... */
#define STRAGGLER_WAIT_MIN    0.10 /* ... and at least 10 points higher */

/* The value of tag or label `key` in a series name ("x{device:cuda:0,rank:3}" or
 * "x{gpu=\"0\",rank=\"3\"}"), copied into buf; 0 when absent. */
int gk__series_tag(const char *name, const char *key, char *buf, size_t len)
{
    const char *p = strchr(name, '{');
    size_t kl = strlen(key);
    while (p && *p) {
        p++;
        if (strncmp(p, key, kl) == 0 && (p[kl] == ':' || p[kl] == '=')) {
            const char *v = p + kl + 1;
            int quoted = *v == '"';
            v += quoted;
            size_t n = 0;
            while (v[n] && v[n] != (quoted ? '"' : ',') && v[n] != '}' && n + 1 < len) {
                buf[n] = v[n];
                n++;
            }
            buf[n] = '\0';
            return 1;
        }
        p = strchr(p, ',');
    }
    return 0;
}

/* The base name of a series ("x" for "x{...}") in buf. */
static void base_of(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s", name);
    char *b = strchr(buf, '{');
    if (b)
        *b = '\0';
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static gk_rank_summary *row_for(gk_report *rep, int rank)
{
    for (size_t i = 0; i < rep->nranks; i++)
        if (rep->ranks[i].rank == rank)
            return &rep->ranks[i];
    return NULL;
}

/* The program's step timer, sent by the ranks: a timer whose name mentions "compute" (the part
 * of a step before the gradient synchronization: in synchronous data parallelism every rank's
 * whole step lasts as long as the slowest's, and only the time before the collective tells the
 * straggler), else one that mentions "step"; the one the most ranks sent. */
static void step_timer(const gk_report *rep, char *best, size_t len)
{
    best[0] = '\0';
    size_t best_n = 0;
    int best_compute = 0;
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk_series *s = &rep->sums[i].s;
        char base[256], r[16];
        base_of(s->name, base, sizeof base);
        int compute = strstr(base, "compute") != NULL;
        if (s->kind != GK_SERIES_TIMER || (!compute && !strstr(base, "step")) ||
            !gk__series_tag(s->name, "rank", r, sizeof r) || compute < best_compute)
            continue;
        size_t n = 0;
        for (size_t j = 0; j < rep->nsums; j++) {
            char b2[256];
            base_of(rep->sums[j].s.name, b2, sizeof b2);
            n += strcmp(b2, base) == 0 && rep->sums[j].s.kind == GK_SERIES_TIMER;
        }
        if (n > best_n || compute > best_compute) {
            best_n = n;
            best_compute = compute;
            snprintf(best, len, "%s", base);
        }
    }
}

/* The GPU index of a device label "cuda:N", or -1. */
static int gpu_index(const char *device)
{
    if (strncmp(device, "cuda:", 5) != 0)
        return -1;
    char *end;
    long g = strtol(device + 5, &end, 10);
    return *end || g < 0 || g > 1024 ? -1 : (int)g;
}

int gk__report_ranks(gk_report *rep)
{
    /* The ranks: every value of a rank tag. */
    int seen[4096];
    size_t nseen = 0;
    for (size_t i = 0; i < rep->nsums && nseen < 4096; i++) {
        char r[16];
        if (!gk__series_tag(rep->sums[i].s.name, "rank", r, sizeof r))
            continue;
        char *end;
        long v = strtol(r, &end, 10);
        if (*end || v < 0 || v > 1 << 20)
            continue;
        int dup = 0;
        for (size_t j = 0; j < nseen && !dup; j++)
            dup = seen[j] == (int)v;
        if (!dup)
            seen[nseen++] = (int)v;
    }
    if (nseen == 0)
        return 0;
    qsort(seen, nseen, sizeof seen[0], cmp_int);
    rep->ranks = gk__calloc(nseen, sizeof *rep->ranks);
    if (!rep->ranks)
        return -ENOMEM;
    rep->nranks = nseen;
    for (size_t i = 0; i < nseen; i++)
        rep->ranks[i] = (gk_rank_summary){.size = sizeof(gk_rank_summary),
                                          .rank = seen[i],
                                          .step_p50_ms = NAN,
                                          .loader_wait_share = NAN,
                                          .gpu_memory_peak_bytes = NAN,
                                          .gpu_utilization_p50 = NAN,
                                          .cpu_cores_p50 = NAN,
                                          .gpu = -1};
    double *mem = gk__calloc(nseen * 3, sizeof *mem);
    if (!mem)
        return -ENOMEM;
    char step[256];
    step_timer(rep, step, sizeof step);
    snprintf(rep->step_series, sizeof rep->step_series, "%s", step);
    for (size_t i = 0; i < rep->nsums; i++) {
        const gk__series_summary *sm = &rep->sums[i];
        char r[16], base[256], dev[64];
        if (!gk__series_tag(sm->s.name, "rank", r, sizeof r))
            continue;
        gk_rank_summary *row = row_for(rep, atoi(r));
        if (!row || sm->st.count == 0)
            continue;
        base_of(sm->s.name, base, sizeof base);
        if (step[0] && strcmp(base, step) == 0 && sm->s.kind == GK_SERIES_TIMER)
            row->step_p50_ms = sm->st.p50;
        if (strcmp(base, "gpukit_loader_wait_seconds_total") == 0 && rep->duration_s > 0)
            row->loader_wait_share = (isnan(row->loader_wait_share) ? 0 : row->loader_wait_share) +
                                     sm->st.sum / rep->duration_s;
        /* GPU memory, best source first: NVML's per-rank sum, NVML's per-process series with
         * the rank, the rank's pools' reserved bytes; peaks summed over GPUs and pools. */
        int src = strcmp(base, "gpukit_rank_gpu_memory_bytes") == 0           ? 0
                  : strcmp(base, "gpukit_gpu_process_memory_used_bytes") == 0 ? 1
                  : strcmp(base, "gpukit_alloc_reserved_bytes") == 0          ? 2
                                                                              : -1;
        if (src >= 0)
            mem[(size_t)(row - rep->ranks) * 3 + (size_t)src] += sm->st.max;
        if (strcmp(base, "gpukit_rank_cpu_cores") == 0 ||
            (strcmp(base, "gpukit_process_tree_cpu_cores") == 0 && isnan(row->cpu_cores_p50)))
            row->cpu_cores_p50 = sm->st.p50;
        if (gk__series_tag(sm->s.name, "device", dev, sizeof dev) && gpu_index(dev) >= 0)
            row->gpu = gpu_index(dev);
        else if (src >= 0 && src < 2 && gk__series_tag(sm->s.name, "gpu", dev, sizeof dev))
            row->gpu = atoi(dev);
    }
    for (size_t i = 0; i < rep->nranks; i++) {
        gk_rank_summary *row = &rep->ranks[i];
        for (int k = 0; k < 3 && isnan(row->gpu_memory_peak_bytes); k++)
            if (mem[i * 3 + (size_t)k] > 0)
                row->gpu_memory_peak_bytes = mem[i * 3 + (size_t)k];
        const gk__series_summary *u =
            row->gpu >= 0 ? gk__report_gpu_series(rep, row->gpu, "utilization_ratio") : NULL;
        if (u && u->st.count)
            row->gpu_utilization_p50 = u->st.p50;
    }
    free(mem);
    return 0;
}

/* The median of a field over every rank but `skip`; NAN when fewer than one is known. */
static double others_median(const gk_report *rep, size_t skip, size_t off)
{
    double v[4096];
    size_t n = 0;
    for (size_t i = 0; i < rep->nranks && n < 4096; i++) {
        double x = *(const double *)((const char *)&rep->ranks[i] + off);
        if (i != skip && !isnan(x))
            v[n++] = x;
    }
    return median(v, n);
}

int gk__report_straggler(gk_report *rep)
{
    if (rep->nranks < 2)
        return 0;
    size_t worst = 0;
    double worst_score = 0, mine = 0, others = 0;
    int what = 0; /* 1 step time, 2 loader wait */
    for (size_t i = 0; i < rep->nranks; i++) {
        const gk_rank_summary *row = &rep->ranks[i];
        double o = others_median(rep, i, offsetof(gk_rank_summary, step_p50_ms));
        if (!isnan(row->step_p50_ms) && !isnan(o) && o > 0 &&
            row->step_p50_ms >= STRAGGLER_STEP_RATIO * o &&
            row->step_p50_ms - o >= STRAGGLER_STEP_MIN_MS && row->step_p50_ms / o > worst_score) {
            worst = i;
            worst_score = row->step_p50_ms / o;
            mine = row->step_p50_ms;
            others = o;
            what = 1;
        }
    }
    for (size_t i = 0; i < rep->nranks && !what; i++) {
        const gk_rank_summary *row = &rep->ranks[i];
        double o = others_median(rep, i, offsetof(gk_rank_summary, loader_wait_share));
        if (!isnan(row->loader_wait_share) && !isnan(o) &&
            row->loader_wait_share >= STRAGGLER_WAIT_RATIO * o &&
            row->loader_wait_share - o >= STRAGGLER_WAIT_MIN) {
            worst = i;
            mine = row->loader_wait_share;
            others = o;
            what = 2;
        }
    }
    if (!what)
        return 0;
    const gk_rank_summary *row = &rep->ranks[worst];
    char ev[512], title[128];
    snprintf(title, sizeof title, "Rank %d is a straggler: every other rank waits for it",
             row->rank);
    if (what == 1) {
        double wait_o = others_median(rep, worst, offsetof(gk_rank_summary, loader_wait_share));
        snprintf(ev, sizeof ev,
                 "rank %d's median %s (%s) took %.1f ms against %.1f ms for the median of the "
                 "other %zu ranks: %.2fx (threshold %.2fx)%s",
                 row->rank, strstr(rep->step_series, "compute") ? "compute time" : "step",
                 rep->step_series, mine, others, rep->nranks - 1, mine / others,
                 STRAGGLER_STEP_RATIO,
                 !isnan(row->loader_wait_share) && !isnan(wait_o) &&
                         row->loader_wait_share > wait_o + 0.05
                     ? "; it also waited longer for its loader"
                     : "");
    } else {
        snprintf(ev, sizeof ev,
                 "rank %d waited for its loader %.0f%% of the run against %.0f%% for the median "
                 "of the other %zu ranks (threshold: twice the others and 10 points more)",
                 row->rank, 100 * mine, 100 * others, rep->nranks - 1);
    }
    return gk__report_add_advice(
        rep, "straggler", title, ev,
        "Look at what differs on that rank: its data shard (uneven sample sizes or a slow "
        "file system), its GPU (throttling or another process on it), its host (CPU affinity, "
        "NUMA, a noisy neighbour). Balance the shards, pin each rank's loader workers to its "
        "NUMA node, and check the rank's GPU in the per-GPU table.");
}

size_t gk_report_rank_count(const gk_report *rep)
{
    return rep ? rep->nranks : 0;
}

int(gk_report_rank)(const gk_report *rep, size_t i, gk_rank_summary *out, size_t size)
{
    if (!rep)
        return gk__error(-EINVAL, "gk_report_rank: report is NULL");
    if (i >= rep->nranks)
        return gk__error(-ERANGE, "gk_report_rank: rank row %zu does not exist (%zu rows)", i,
                         rep->nranks);
    return gk__sized_put(out, size, &rep->ranks[i], sizeof rep->ranks[i], "gk_rank_summary");
}

/* --- rendering --------------------------------------------------------------------------- */

static void cell(char *buf, size_t len, double v, int kind)
{
    if (isnan(v)) {
        snprintf(buf, len, "-");
        return;
    }
    switch (kind) {
    case 0: /* ms */
        snprintf(buf, len, "%.1f ms", v);
        break;
    case 1: /* ratio */
        snprintf(buf, len, "%.0f%%", 100 * v);
        break;
    case 2: /* bytes */
        gk__fmt_bytes(buf, len, v);
        break;
    default:
        snprintf(buf, len, "%.2f", v);
        break;
    }
}

/* One row's cells: step, loader wait, GPU memory, GPU, GPU utilization, CPU cores. */
static void row_cells(const gk_rank_summary *r, char c[6][32])
{
    cell(c[0], 32, r->step_p50_ms, 0);
    cell(c[1], 32, r->loader_wait_share, 1);
    cell(c[2], 32, r->gpu_memory_peak_bytes, 2);
    if (r->gpu >= 0)
        snprintf(c[3], 32, "%d", r->gpu);
    else
        snprintf(c[3], 32, "-");
    cell(c[4], 32, r->gpu_utilization_p50, 1);
    cell(c[5], 32, r->cpu_cores_p50, 3);
}

void gk__report_ranks_text(const gk_report *rep, FILE *out)
{
    if (!rep->nranks)
        return;
    fprintf(out, "\nranks (step: %s, median; loader wait: share of the run):\n",
            rep->step_series[0] ? rep->step_series : "no step timer recorded");
    fprintf(out, "  %5s %12s %12s %12s %4s %9s %9s\n", "rank", "step", "loader wait", "GPU memory",
            "GPU", "GPU util", "CPU cores");
    for (size_t i = 0; i < rep->nranks; i++) {
        char c[6][32];
        row_cells(&rep->ranks[i], c);
        fprintf(out, "  %5d %12s %12s %12s %4s %9s %9s\n", rep->ranks[i].rank, c[0], c[1], c[2],
                c[3], c[4], c[5]);
    }
}

static void json_num(gk__sbuf *b, const char *key, double v)
{
    gk__sbuf_printf(b, ",\"%s\":", key);
    gk__sbuf_json_num(b, v);
}

void gk__report_ranks_json(const gk_report *rep, gk__sbuf *b)
{
    gk__sbuf_puts(b, ",\"step_series\":");
    gk__sbuf_json_str(b, rep->step_series);
    gk__sbuf_puts(b, ",\"ranks\":[");
    for (size_t i = 0; i < rep->nranks; i++) {
        const gk_rank_summary *r = &rep->ranks[i];
        gk__sbuf_printf(b, "%s{\"rank\":%d,\"gpu\":%d", i ? "," : "", r->rank, r->gpu);
        json_num(b, "step_p50_ms", r->step_p50_ms);
        json_num(b, "loader_wait_share", r->loader_wait_share);
        json_num(b, "gpu_memory_peak_bytes", r->gpu_memory_peak_bytes);
        json_num(b, "gpu_utilization_p50", r->gpu_utilization_p50);
        json_num(b, "cpu_cores_p50", r->cpu_cores_p50);
        gk__sbuf_add(b, "}", 1);
    }
    gk__sbuf_add(b, "]", 1);
}

void gk__report_ranks_html(const gk_report *rep, gk__sbuf *b)
{
    if (!rep->nranks)
        return;
    gk__sbuf_puts(b, "<h2 id=\"ranks\">Ranks</h2>\n<table class=\"ranks\"><thead><tr><th>rank</th>"
                     "<th>step (median)</th><th>loader wait</th><th>GPU memory</th><th>GPU</th>"
                     "<th>GPU utilization</th><th>CPU cores</th></tr></thead><tbody>\n");
    /* The straggler, when the rule fired, is highlighted where its numbers are, and the rule's
     * evidence follows the table. */
    int straggler = -1;
    const gk_advice *why = NULL;
    for (size_t i = 0; i < rep->nadvice; i++) {
        if (strcmp(rep->advice[i].rule, "straggler") == 0) {
            why = &rep->advice[i];
            sscanf(why->title, "Rank %d", &straggler);
        }
    }
    for (size_t i = 0; i < rep->nranks; i++) {
        char c[6][32];
        row_cells(&rep->ranks[i], c);
        gk__sbuf_printf(b, "<tr%s><td>%d</td>",
                        rep->ranks[i].rank == straggler ? " class=\"regression\"" : "",
                        rep->ranks[i].rank);
        for (int k = 0; k < 6; k++) {
            gk__sbuf_puts(b, "<td>");
            gk__sbuf_html(b, c[k]);
            gk__sbuf_puts(b, "</td>");
        }
        gk__sbuf_puts(b, "</tr>\n");
    }
    gk__sbuf_puts(b, "</tbody></table>\n");
    if (why) {
        gk__sbuf_puts(b, "<p id=\"straggler\"><strong>");
        gk__sbuf_html(b, why->title);
        gk__sbuf_puts(b, ".</strong> Evidence: ");
        gk__sbuf_html(b, why->evidence);
        gk__sbuf_puts(b, ".</p>\n");
    }
    gk__sbuf_puts(b, "<p class=\"rule\">Step: ");
    gk__sbuf_html(b, rep->step_series[0] ? rep->step_series : "no step timer was recorded");
    gk__sbuf_puts(b,
                  " (a |ms series with \"step\" in its name, tagged with its rank). Loader wait: "
                  "share of the run spent in gk_loader_next.</p>\n");
}
