/* gpukit batch find: runs the batch-size finder against a simulated device and a parametric
 * model (a training step that holds `a` fixed bytes plus `k` bytes per sample), so the modes'
 * answers and trial counts can be compared before any GPU time is spent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char batch_usage[] =
    "usage: gpukit batch find --model a=BYTES,k=BYTES --capacity SIZE [--mode MODE]\n"
    "                         [--margin F] [--max N] [--multiple N] [--preset NAME] [--json]\n"
    "\n"
    "Finds the largest batch whose step fits a simulated device of SIZE bytes. A trial at batch\n"
    "b allocates `a` bytes (weights, optimizer state) and four activation tensors of k*b/4 bytes\n"
    "each from a pool (preset default) on sim:capacity=SIZE, then frees them.\n"
    "\n"
    "  --mode MODE    model (default: two trials, fit peak = a + k*b, predict, verify), power,\n"
    "                 binsearch (as Lightning) or decay (x0.9 from 128, as accelerate)\n"
    "  --margin F     headroom the model mode keeps: a fraction of the budget left after the\n"
    "                 fixed bytes a (0.04)\n"
    "  --max N        largest batch considered (65535)\n"
    "  --multiple N   round the answer down to a multiple of N (1); at most --max\n"
    "  --json         one JSON object instead of text\n"
    "\n"
    "Prints the answer, the trials it took (and which ran out of memory), and the true largest\n"
    "batch, found by an uncounted search, for comparison. Exits 0 on an answer, 1 when nothing\n"
    "fits or the search fails, 2 on a usage error.\n";

typedef struct trial_ctx {
    gk_pool *pool;
    uint64_t a, k;
} trial_ctx;

static int step(void *user, long b, uint64_t *peak)
{
    (void)peak;
    trial_ctx *t = user;
    void *w = NULL, *act[4] = {NULL, NULL, NULL, NULL};
    int rc = gk_pool_malloc(t->pool, (size_t)t->a, NULL, &w);
    for (int i = 0; rc == 0 && i < 4; i++) {
        size_t n = (size_t)(t->k * (uint64_t)b / 4);
        rc = gk_pool_malloc(t->pool, n ? n : 1, NULL, &act[i]);
    }
    for (int i = 0; i < 4; i++)
        gk_pool_free(t->pool, act[i]);
    gk_pool_free(t->pool, w);
    /* Every trial starts from an empty cache (as Lightning's finder empties it between trials),
     * so an answer does not depend on the order of the trials before it. */
    gk_pool_empty_cache(t->pool);
    return rc;
}

/* The true largest batch (not counted as trials): doubling, then bisection. */
static long true_max(trial_ctx *t, long cap)
{
    long lo = 0, hi = 1;
    while (hi <= cap && step(t, hi, NULL) == 0) {
        lo = hi;
        hi *= 2;
    }
    if (hi > cap)
        hi = cap + 1;
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if (step(t, mid, NULL) == 0)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static int parse_model(const char *text, uint64_t *a, uint64_t *k)
{
    char buf[128];
    if (strlen(text) >= sizeof buf)
        return -EINVAL;
    strcpy(buf, text);
    int have = 0;
    char *save = NULL;
    for (char *it = strtok_r(buf, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
        uint64_t *dst = strncmp(it, "a=", 2) == 0 ? a : strncmp(it, "k=", 2) == 0 ? k : NULL;
        if (!dst || gk_parse_size(it + 2, dst) != 0)
            return -EINVAL;
        have |= dst == a ? 1 : 2;
    }
    return have == 3 && *k > 0 ? 0 : -EINVAL;
}

int gk_tool_batch(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, batch_usage))
        return GK_TOOL_OK;
    if (argc < 2 || strcmp(argv[1], "find") != 0) {
        gk_tool_error("batch: the action is \"find\" (see 'gpukit batch --help')");
        return GK_TOOL_USAGE;
    }
    const char *model = NULL, *capacity = NULL, *preset = "default";
    int json = 0;
    gk_batch_config bc;
    gk_batch_config_default(&bc);
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--json") == 0) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) {
            gk_tool_error("%s needs a value (see 'gpukit batch --help')", s);
            return GK_TOOL_USAGE;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(s, "--model") == 0) {
            model = v;
        } else if (strcmp(s, "--capacity") == 0) {
            capacity = v;
        } else if (strcmp(s, "--preset") == 0) {
            preset = v;
        } else if (strcmp(s, "--mode") == 0) {
            if (gk_batch_mode_parse(v, &bc.mode) != 0) {
                gk_tool_error("--mode: \"%s\" is not model, power, binsearch or decay", v);
                return GK_TOOL_USAGE;
            }
        } else if (strcmp(s, "--margin") == 0) {
            bc.margin = strtod(v, &end);
            if (*end || !(bc.margin >= 0 && bc.margin < 1)) {
                gk_tool_error("--margin: \"%s\" is not a fraction in [0,1)", v);
                return GK_TOOL_USAGE;
            }
        } else if (strcmp(s, "--max") == 0 || strcmp(s, "--multiple") == 0) {
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 1L << 30) {
                gk_tool_error("%s: \"%s\" is not a whole number >= 1", s, v);
                return GK_TOOL_USAGE;
            }
            *(strcmp(s, "--max") == 0 ? &bc.max_batch : &bc.multiple) = n;
        } else {
            gk_tool_error("batch find: unknown option \"%s\"", s);
            return GK_TOOL_USAGE;
        }
    }
    if (bc.multiple > bc.max_batch) {
        gk_tool_error("--multiple %ld is above --max %ld: no answer could be a multiple of it",
                      bc.multiple, bc.max_batch);
        return GK_TOOL_USAGE;
    }
    trial_ctx t = {NULL, 0, 0};
    uint64_t cap = 0;
    if (!model || parse_model(model, &t.a, &t.k) != 0) {
        gk_tool_error("--model: give a=BYTES,k=BYTES (sizes like 1GiB, 30MiB; k > 0)");
        return GK_TOOL_USAGE;
    }
    if (!capacity || gk_parse_size(capacity, &cap) != 0 || cap == 0) {
        gk_tool_error("--capacity: give the device size (like 16GiB)");
        return GK_TOOL_USAGE;
    }
    gk_pool_config pc;
    if (gk_pool_config_preset(&pc, preset) != 0) {
        gk_tool_error("--preset: unknown preset \"%s\" (use default or pytorch)", preset);
        return GK_TOOL_USAGE;
    }
    if (gk_pool_config_from_env(&pc) != 0) {
        gk_tool_error("%s", gk_last_error());
        return GK_TOOL_USAGE;
    }
    pc.logger.level = GK_LOG_OFF;
    char spec[96];
    snprintf(spec, sizeof spec, "sim:capacity=%llu", (unsigned long long)cap);
    gk_device *dev = NULL;
    if (gk_device_open(spec, &dev) != 0) {
        gk_tool_error("%s: %s", spec, gk_last_error());
        return GK_TOOL_FAIL;
    }
    int ret = GK_TOOL_FAIL;
    if (gk_pool_create(dev, &pc, &t.pool) != 0) {
        gk_tool_error("pool: %s", gk_last_error());
        goto out_dev;
    }
    bc.pool = t.pool;
    gk_batch_result r;
    int rc = gk_batch_find(&bc, step, &t, &r);
    long best = true_max(&t, bc.max_batch);
    if (rc != 0) {
        if (rc == GK_EDEVOOM && bc.multiple > 1 && best >= 1)
            gk_tool_error("batch find (%s): no multiple of %ld fits (the largest batch that fits "
                          "is %ld) after %d trials",
                          gk_batch_mode_name(bc.mode), bc.multiple, best, r.trials);
        else
            gk_tool_error("batch find (%s): %s after %d trials", gk_batch_mode_name(bc.mode),
                          rc == GK_EDEVOOM ? "not even the smallest batch fits" : gk_strerror(rc),
                          r.trials);
        goto out_pool;
    }
    double below = best ? 100.0 * (double)(best - r.batch) / (double)best : 0;
    if (json) {
        printf("{\"mode\":\"%s\",\"batch\":%ld,\"trials\":%d,\"ooms\":%d,\"true_max\":%ld,"
               "\"below_true_max_pct\":%.2f,\"fit_a\":%.0f,\"fit_k\":%.0f,\"predicted\":%ld,"
               "\"tried\":[",
               gk_batch_mode_name(bc.mode), r.batch, r.trials, r.ooms, best, below, r.fit_a,
               r.fit_k, r.predicted);
        for (int i = 0; i < r.trials && i < GK_BATCH_MAX_LOG; i++)
            printf("%s{\"batch\":%ld,\"fits\":%s}", i ? "," : "", r.tried[i],
                   r.tried_ok[i] ? "true" : "false");
        printf("]}\n");
    } else {
        printf("mode        %s\n", gk_batch_mode_name(bc.mode));
        printf("batch       %ld (true maximum %ld, %.1f%% below)\n", r.batch, best, below);
        printf("trials      %d (%d out of memory):", r.trials, r.ooms);
        for (int i = 0; i < r.trials && i < GK_BATCH_MAX_LOG; i++)
            printf(" %ld%s", r.tried[i], r.tried_ok[i] ? "" : "!");
        printf("\n");
        if (bc.mode == GK_BATCH_MODEL)
            printf("fit         peak(b) = %.0f + %.0f * b bytes; predicted %ld\n", r.fit_a, r.fit_k,
                   r.predicted);
    }
    ret = GK_TOOL_OK;
out_pool:
    gk_pool_destroy(t.pool);
out_dev:
    gk_device_close(dev);
    return ret;
}
