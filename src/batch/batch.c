/* The batch-size finder: the model mode (fit peak(b) = a + k*b from two trials, predict, verify,
 * bisect) and the compatibility modes that behave like Lightning's power and binsearch and
 * accelerate's decay, so their trial counts can be compared on the same model. Under `gpukit
 * run` the answer and the fitted model are published as gauges once the search ends. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/batch.h"

void(gk_batch_config_default)(gk_batch_config *out, size_t size)
{
    gk_batch_config d, *c = &d;
    memset(c, 0, sizeof *c);
    c->mode = GK_BATCH_MODEL;
    c->b1 = 2;
    c->b2 = 8;
    c->margin = 0.04;
    c->max_batch = 65535;
    c->multiple = 1;
    c->max_trials = 25;
    c->decay = 0.9;
    (void)gk__sized_put(out, size, c, sizeof *c, "gk_batch_config");
}

static const char *const mode_names[] = {"model", "power", "binsearch", "decay"};

int gk_batch_mode_parse(const char *text, gk_batch_mode *out)
{
    for (int i = 0; text && i < 4; i++) {
        if (strcmp(text, mode_names[i]) == 0) {
            *out = (gk_batch_mode)i;
            return 0;
        }
    }
    return gk__error(-EINVAL, "batch mode \"%s\" is unknown (try model, power, binsearch or decay)",
                     text ? text : "(null)");
}

const char *gk_batch_mode_name(gk_batch_mode m)
{
    return (unsigned)m < 4 ? mode_names[m] : "unknown";
}

typedef struct search {
    const gk_batch_config *cfg;
    gk_batch_trial_fn fn;
    void *user;
    gk_batch_result *out;
    double budget; /* model: the budget the prediction used (0 when no fit was made) */
    int fitted;    /* model: a and k were measured */
} search;

/* Runs one trial: 1 fits, 0 out of memory, < 0 another error or -ERANGE when out of trials. */
static int trial(search *s, long b, uint64_t *peak)
{
    if (s->out->trials >= s->cfg->max_trials)
        return -ERANGE;
    uint64_t pk = 0;
    if (s->cfg->pool)
        gk_pool_reset_peak(s->cfg->pool);
    int rc = s->fn(s->user, b, &pk);
    if (s->cfg->pool && rc == 0) {
        gk_pool_stats st;
        if (gk_pool_get_stats(s->cfg->pool, &st) == 0)
            pk = (uint64_t)st.allocated_bytes[GK_POOL_ALL].peak;
    }
    int i = s->out->trials++;
    if (i < GK_BATCH_MAX_LOG) {
        s->out->tried[i] = b;
        s->out->tried_ok[i] = rc == 0;
        s->out->tried_peak[i] = pk;
    }
    if (peak)
        *peak = pk;
    if (rc == 0)
        return 1;
    if (rc == GK_EDEVOOM || rc == -ENOMEM) {
        s->out->ooms++;
        return 0;
    }
    return rc < 0 ? rc : -EINVAL;
}

static long clamp_round(const gk_batch_config *c, long b)
{
    if (c->max_batch > 0 && b > c->max_batch)
        b = c->max_batch;
    if (c->multiple > 1 && b >= c->multiple)
        b = b / c->multiple * c->multiple;
    return b;
}

/* Bisects (lo fits, hi does not) down to adjacent sizes (or multiples). */
static int bisect(search *s, long lo, long hi, long *answer)
{
    long step = s->cfg->multiple > 1 && lo >= s->cfg->multiple ? s->cfg->multiple : 1;
    while (hi - lo > step) {
        long mid = lo + (hi - lo) / 2;
        if (step > 1)
            mid = mid / step * step;
        if (mid <= lo)
            break;
        int r = trial(s, mid, NULL);
        if (r < 0)
            return r;
        if (r)
            lo = mid;
        else
            hi = mid;
    }
    *answer = lo;
    return 0;
}

/* The largest fitting size below `hi` (which failed) when nothing has fitted yet: halve. */
static int halve_down(search *s, long hi, long *answer)
{
    for (long b = hi / 2; b >= 1; b /= 2) {
        int r = trial(s, b, NULL);
        if (r < 0)
            return r;
        if (r)
            return bisect(s, b, hi, answer);
        hi = b;
    }
    return GK_EDEVOOM;
}

static uint64_t budget_of(const gk_batch_config *c)
{
    if (c->budget)
        return c->budget;
    if (!c->pool)
        return 0;
    size_t lim = gk_pool_get_limit(c->pool);
    if (lim)
        return lim;
    gk_pool_stats st;
    if (gk_pool_get_stats(c->pool, &st) != 0)
        return 0;
    size_t free_b = 0, total = 0;
    if (gk_device_mem_info(gk_pool_device(c->pool), &free_b, &total) != 0)
        return 0;
    return (uint64_t)st.reserved_bytes[GK_POOL_ALL].current + free_b;
}

static int find_model(search *s)
{
    const gk_batch_config *c = s->cfg;
    uint64_t p1, p2;
    int r = trial(s, c->b1, &p1);
    if (r < 0)
        return r;
    if (!r)
        return halve_down(s, c->b1, &s->out->batch);
    r = trial(s, c->b2, &p2);
    if (r < 0)
        return r;
    if (!r)
        return bisect(s, c->b1, c->b2, &s->out->batch);
    double k = ((double)p2 - (double)p1) / (double)(c->b2 - c->b1);
    double a = (double)p1 - k * (double)c->b1;
    s->out->fit_a = a;
    s->out->fit_k = k;
    double budget = (double)budget_of(c);
    s->budget = budget;
    s->fitted = 1;
    long pred;
    if (k <= 0)
        pred = c->max_batch > 0 ? c->max_batch : c->b2 * 2;
    else
        pred = (long)floor((budget - a) * (1.0 - c->margin) / k);
    pred = clamp_round(c, pred);
    s->out->predicted = pred;
    if (pred <= c->b2) {
        s->out->batch = c->b2;
        return 0;
    }
    r = trial(s, pred, NULL);
    if (r < 0)
        return r;
    if (r) {
        s->out->batch = pred;
        return 0;
    }
    return bisect(s, c->b2, pred, &s->out->batch);
}

static int find_power(search *s, bool then_bisect)
{
    const gk_batch_config *c = s->cfg;
    long b = c->init > 0 ? c->init : 2, last_ok = 0;
    for (;;) {
        int r = trial(s, b, NULL);
        if (r < 0)
            return r;
        if (r) {
            last_ok = b;
            if (c->max_batch > 0 && b >= c->max_batch) {
                s->out->batch = b;
                return 0;
            }
            b = b * 2;
            if (c->max_batch > 0 && b > c->max_batch)
                b = c->max_batch;
            continue;
        }
        if (last_ok) {
            if (!then_bisect) {
                s->out->batch = last_ok;
                return 0;
            }
            return bisect(s, last_ok, b, &s->out->batch);
        }
        return halve_down(s, b, &s->out->batch);
    }
}

static int find_decay(search *s)
{
    const gk_batch_config *c = s->cfg;
    long b = c->init > 0 ? c->init : 128;
    for (;;) {
        int r = trial(s, b, NULL);
        if (r < 0)
            return r;
        if (r) {
            s->out->batch = b;
            return 0;
        }
        long next = (long)((double)b * c->decay);
        if (next >= b)
            next = b - 1;
        if (next < 1)
            return GK_EDEVOOM;
        b = next;
    }
}

/* Publishes the answer in the registry as gauges (labelled by the pool's device): always
 * gpukit_batch_size, and with a fit gpukit_batch_fixed_bytes (a), gpukit_batch_per_sample_bytes
 * (k), gpukit_batch_budget_bytes and gpukit_batch_margin_ratio. The report's batch-headroom rule
 * reads them (docs/advice.md). Best effort: the answer stands without them. */
static void publish_batch(const search *s)
{
    gk_metrics *reg = s->cfg->metrics ? s->cfg->metrics : gk_metrics_default();
    if (!reg)
        return;
    char device[128] = "unknown"; /* a finder over a callback: no device known */
    gk_device_props props;
    if (s->cfg->pool && gk_device_get_props(gk_pool_device(s->cfg->pool), &props) == 0)
        snprintf(device, sizeof device, "%s",
                 props.backend == GK_BACKEND_CUDA ? props.spec : props.backend_name);
    const char *labels[] = {"device", device, NULL};
    const struct {
        const char *name, *help;
        double value;
        int fitted; /* needs the model */
    } gauges[] = {
        {"gpukit_batch_size", "The batch size the finder chose.", (double)s->out->batch, 0},
        {"gpukit_batch_fixed_bytes", "Fitted bytes a of peak(b) = a + k*b.", s->out->fit_a, 1},
        {"gpukit_batch_per_sample_bytes", "Fitted bytes per sample k.", s->out->fit_k, 1},
        {"gpukit_batch_budget_bytes", "Bytes the step could use.", s->budget, 1},
        {"gpukit_batch_margin_ratio", "Headroom the finder kept.", s->cfg->margin, 1},
    };
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++) {
        gk_metric *g;
        if ((!gauges[i].fitted || s->fitted) &&
            gk_metrics_gauge(reg, gauges[i].name, gauges[i].help, labels, &g) == 0)
            gk_gauge_set(g, gauges[i].value);
    }
}

static int run_search(search *s)
{
    switch (s->cfg->mode) {
    case GK_BATCH_MODEL:
        return find_model(s);
    case GK_BATCH_POWER:
        return find_power(s, false);
    case GK_BATCH_BINSEARCH:
        return find_power(s, true);
    default:
        return find_decay(s);
    }
}

/* Why a batch config is refused, or NULL when it is valid. */
static const char *config_problem(const gk_batch_config *cfg)
{
    if (cfg->max_trials <= 0)
        return "max_trials must be at least 1";
    if (cfg->multiple < 1)
        return "multiple must be at least 1";
    if (cfg->max_batch < 0)
        return "max_batch must not be negative";
    if (!(cfg->margin >= 0 && cfg->margin < 1))
        return "margin must be in [0, 1)";
    if ((unsigned)cfg->mode > GK_BATCH_DECAY)
        return "mode must be a gk_batch_mode";
    if (cfg->mode == GK_BATCH_MODEL && (cfg->b1 < 1 || cfg->b2 <= cfg->b1))
        return "model mode needs 1 <= b1 < b2";
    if (cfg->mode == GK_BATCH_MODEL && !cfg->budget && !cfg->pool)
        return "model mode needs a budget or a pool to read it from";
    if (cfg->mode == GK_BATCH_DECAY && !(cfg->decay > 0 && cfg->decay < 1))
        return "decay must be in (0, 1)";
    if (cfg->multiple > 1 && cfg->max_batch > 0 && cfg->multiple > cfg->max_batch)
        return "multiple must be at most max_batch (no multiple of it would be allowed)";
    return NULL;
}

int(gk_batch_find)(const gk_batch_config *cfg_in, gk_batch_trial_fn fn, void *user,
                   gk_batch_result *user_out, size_t size)
{
    gk_batch_config full, *cfg = &full;
    gk_batch_config_default(&full);
    if (!cfg_in || !fn)
        return gk__error(-EINVAL, "gk_batch_find: config or trial function is NULL");
    int rc = gk__sized_in(&full, sizeof full, cfg_in, "gk_batch_config");
    if (rc || (rc = gk__sized_check(user_out, size, "gk_batch_result")))
        return rc;
    const char *bad = config_problem(cfg);
    if (bad)
        return gk__error(-EINVAL, "batch config: %s", bad);
    gk_batch_result result, *out = &result;
    memset(out, 0, sizeof *out);
    search s = {cfg, fn, user, out, 0, 0};
    rc = run_search(&s);
    long fits = out->batch;
    if (rc == 0 && cfg->multiple > 1) {
        /* The answer is a multiple: a smaller batch than one that fit fits too. */
        out->batch = out->batch / cfg->multiple * cfg->multiple;
        if (out->batch < 1)
            rc = GK_EDEVOOM;
    }
    out->budget = s.budget;
    if (rc == 0)
        publish_batch(&s);
    (void)gk__sized_put(user_out, size, out, sizeof *out, "gk_batch_result");
    if (rc == GK_EDEVOOM && cfg->multiple > 1 && fits >= 1)
        return gk__error(rc,
                         "batch finder: no multiple of %ld fits (the largest batch that fits is "
                         "%ld; %d trials)",
                         cfg->multiple, fits, out->trials);
    if (rc == GK_EDEVOOM)
        return gk__error(rc, "batch finder: not even batch %ld fits (%d trials)",
                         out->trials ? out->tried[0] : 1L, out->trials);
    if (rc == -ERANGE)
        return gk__error(rc, "batch finder: no answer after %d trials (raise max_trials)",
                         out->trials);
    if (rc)
        return gk__error(rc, "batch finder: the trial failed with %s (%s)", gk_err_name(rc),
                         gk_last_error()[0] ? gk_last_error() : gk_strerror(rc));
    return 0;
}
