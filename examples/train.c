/* examples/train.c: a complete training loop that uses every part of gpukit.
 *
 * It fits a linear regression y = x.w + noise by minibatch gradient descent with momentum on a
 * generated dataset stored as a fixed-record file, and checks at the end that the loss reached
 * the noise floor of the weights that generated the data. Along the way:
 *   - the device is `auto` (cuda when a GPU answers, else host); on host and sim the math runs
 *     through CBLAS, on cuda through cuBLAS loaded at run time (no CUDA needed to build);
 *   - the batch size comes from the batch finder (model mode) against the device's memory, with
 *     the weights and optimizer state (fixed part) and the per-sample buffers allocated from the
 *     pool;
 *   - the loader feeds shuffled batches with worker threads, pinned slots and its copy stream; the
 *     position is checkpointed every --save-every steps and --resume continues exactly there;
 *   - the pressure policy shrinks the micro-batch when memory runs low, keeping the effective
 *     batch through gradient accumulation (try --squeeze 30:12K);
 *   - loss, step time and samples/s go to `gpukit run` (GK_METRICS_SOCKET); the pool and the
 *     loader publish their own figures there without any code here.
 *
 * Run `train --help` for the flags. Exit status: 0 converged, 1 error or not converged, 2 usage,
 * 75 stopped by --stop-at (an interruption to resume from). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gpukit/gpukit.h>

#include "train_math.h"

#define NOISE      0.1  /* standard deviation of the noise in y */
#define TOLERANCE  0.01 /* converged: loss within 1% of the noise floor */
#define CKPT_MAGIC "GKTRAIN1"

typedef struct opts {
    const char *device, *data, *checkpoint, *loss_log;
    uint64_t generate; /* records to generate when the file is absent; 0 = never */
    uint32_t dim;      /* features per record, the first one the constant 1 (bias) */
    uint64_t seed, steps, save_every, stop_at, squeeze_step, squeeze_bytes;
    double lr, momentum;
    long max_batch;
    int workers, epochs, resume, quiet, generate_only;
} opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: train [options]\n"
               "  --device SPEC       gpukit device (default auto; sim needs backed=1)\n"
               "  --data FILE         fixed-record dataset (default train.gkr)\n"
               "  --generate N        write N records to FILE first when it does not exist\n"
               "  --generate-only     stop after that\n"
               "  --dim D             features per record, bias included (default 64)\n"
               "  --seed S            data and shuffling seed (default 1)\n"
               "  --epochs E          epochs to train (default 3)\n"
               "  --steps N           stop after N steps in all (default: the epochs)\n"
               "  --lr X              learning rate (default 0.1); --momentum M (default 0.9)\n"
               "  --max-batch B       largest batch the finder may choose (default 8192)\n"
               "  --workers W         loader worker threads (default 2)\n"
               "  --checkpoint FILE   where the state is saved (default FILE.ckpt)\n"
               "  --save-every N      save the state every N steps (default 50; 0 = never)\n"
               "  --resume            continue from the checkpoint\n"
               "  --stop-at K         stop after step K with status 75, as if interrupted\n"
               "  --squeeze S:BYTES   at step S cap the pool at BYTES (K/M/G): the pressure demo\n"
               "  --loss-log FILE     append \"step loss\" lines (loss in exact hex)\n"
               "  --quiet             print only the summary\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

/* Parses argv into o. Returns 0, 1 for --help, 2 for a usage error (message printed). */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){.device = "auto",
                .data = "train.gkr",
                .dim = 64,
                .seed = 1,
                .save_every = 50,
                .lr = 0.1,
                .momentum = 0.9,
                .max_batch = 8192,
                .workers = 2,
                .epochs = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u = 0;
        int bad = 0, takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return 1;
        if (!strcmp(a, "--resume")) {
            o->resume = 1;
            takes = 0;
        } else if (!strcmp(a, "--generate-only")) {
            o->generate_only = 1;
            takes = 0;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            takes = 0;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "--device")) {
            o->device = v;
        } else if (!strcmp(a, "--data")) {
            o->data = v;
        } else if (!strcmp(a, "--checkpoint")) {
            o->checkpoint = v;
        } else if (!strcmp(a, "--loss-log")) {
            o->loss_log = v;
        } else if (!strcmp(a, "--squeeze")) {
            char *colon = strchr(v, ':');
            char head[32];
            if (!colon || (size_t)(colon - v) >= sizeof head) {
                bad = 1;
            } else {
                memcpy(head, v, (size_t)(colon - v));
                head[colon - v] = '\0';
                char *end;
                o->squeeze_bytes = strtoull(colon + 1, &end, 10);
                int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
                if (shift)
                    o->squeeze_bytes <<= shift, end += 1 + (end[1] == 'i' && end[2] == 'B') * 2;
                bad = parse_u64(head, &o->squeeze_step) || *end || end == colon + 1;
            }
        } else if (!strcmp(a, "--lr") || !strcmp(a, "--momentum")) {
            char *end;
            double x = strtod(v, &end);
            bad = *end || end == v || !(x >= 0 && x < 10);
            *(!strcmp(a, "--lr") ? &o->lr : &o->momentum) = x;
        } else if (parse_u64(v, &u)) {
            bad = 1;
        } else if (!strcmp(a, "--generate")) {
            o->generate = u;
        } else if (!strcmp(a, "--dim")) {
            bad = u < 2 || u > 4096;
            o->dim = (uint32_t)u;
        } else if (!strcmp(a, "--seed")) {
            o->seed = u;
        } else if (!strcmp(a, "--epochs")) {
            bad = u < 1 || u > 1000000;
            o->epochs = (int)u;
        } else if (!strcmp(a, "--steps")) {
            o->steps = u;
        } else if (!strcmp(a, "--max-batch")) {
            bad = u < 1 || u > 1000000;
            o->max_batch = (long)u;
        } else if (!strcmp(a, "--workers")) {
            bad = u > 64;
            o->workers = (int)u;
        } else if (!strcmp(a, "--save-every")) {
            o->save_every = u;
        } else if (!strcmp(a, "--stop-at")) {
            o->stop_at = u;
        } else {
            fprintf(stderr, "train: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "train: bad or missing value for %s (see --help)\n", a);
            return 2;
        }
        i += takes;
    }
    return 0;
}

/* --- the dataset --------------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) * 0x1.0p-53;
}

/* The weights that generate the data: a fixed pattern everyone can recompute. */
static double true_weight(uint32_t j)
{
    return j == 0 ? 0.5 : sin(0.7 * (double)j) / sqrt(1.0 + 0.1 * (double)j);
}

/* Writes `count` records of dim+1 floats: x (x[0] = 1, the others uniform with unit variance)
 * then y = x.w* + NOISE * gaussian. */
static int generate(const char *path, uint64_t count, uint32_t dim, uint64_t seed)
{
    uint64_t shape[1] = {dim + 1u};
    gk_records_writer *w;
    int rc = gk_records_writer_open(path, (dim + 1u) * sizeof(float), "<f4", 1, shape, &w);
    if (rc) {
        fprintf(stderr, "train: %s\n", gk_last_error());
        return rc;
    }
    enum { CHUNK = 4096 };
    float *buf = malloc((size_t)CHUNK * (dim + 1u) * sizeof(float));
    if (!buf) {
        gk_records_writer_abort(w);
        return -ENOMEM;
    }
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    for (uint64_t done = 0; done < count && rc == 0;) {
        uint64_t n = count - done < CHUNK ? count - done : CHUNK;
        for (uint64_t i = 0; i < n; i++) {
            float *r = buf + i * (dim + 1u);
            double y = 0;
            for (uint32_t j = 0; j < dim; j++) {
                double x = j == 0 ? 1.0 : (uniform(&s) * 2 - 1) * sqrt(3.0);
                r[j] = (float)x;
                y += (double)r[j] * true_weight(j);
            }
            double u1 = uniform(&s), u2 = uniform(&s); /* Box-Muller */
            y += NOISE * sqrt(-2 * log(1 - u1)) * cos(2 * M_PI * u2);
            r[dim] = (float)y;
        }
        rc = gk_records_writer_write(w, buf, n);
        done += n;
    }
    free(buf);
    if (rc) {
        fprintf(stderr, "train: %s\n", gk_last_error());
        gk_records_writer_abort(w);
        return rc;
    }
    rc = gk_records_writer_close(w);
    if (rc)
        fprintf(stderr, "train: %s\n", gk_last_error());
    return rc;
}

/* Mean of (x.w - y)^2 / 2 over the first `limit` records, for the weights `w` (NULL: the
 * generating weights), in double precision on the host. */
static double eval_loss(const char *path, const gk_records_info *info, uint32_t dim, const float *w,
                        uint64_t limit)
{
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, (long)info->data_offset, SEEK_SET) != 0) {
        if (f)
            fclose(f);
        return NAN;
    }
    uint64_t n = info->record_count < limit ? info->record_count : limit;
    float *r = malloc((dim + 1u) * sizeof(float));
    double sum = 0;
    uint64_t i = 0;
    for (; r && i < n && fread(r, sizeof(float), dim + 1u, f) == dim + 1u; i++) {
        double p = 0;
        for (uint32_t j = 0; j < dim; j++)
            p += (double)r[j] * (w ? (double)w[j] : true_weight(j));
        sum += (p - r[dim]) * (p - r[dim]) / 2;
    }
    free(r);
    fclose(f);
    return i == n && n ? sum / (double)n : NAN;
}

/* --- the training state -------------------------------------------------------------------- */

typedef struct trainer {
    opts o;
    gk_device *dev;
    gk_pool *pool;
    train_math math;
    uint32_t cols;     /* dim + 1: a record, and the weight vector with its fixed -1 */
    float *w, *v, *g;  /* device: weights (w[dim] = -1), momentum, gradient */
    float *r;          /* device: residuals of one micro-batch (per-sample part) */
    long batch, micro; /* effective batch (loader), micro-batch (accumulation) */
    long want_micro;   /* set by the pressure callback, applied between steps */
    uint64_t step;     /* steps done */
    gk_statsd *metrics;
    FILE *loss_log;
} trainer;

static void fail(const char *what, int rc, const char *detail)
{
    fprintf(stderr, "train: %s: %s%s%s\n", what, gk_strerror(rc), detail && *detail ? ": " : "",
            detail ? detail : "");
}

/* One step over `count` records at X (device memory): forward, loss, gradient accumulated over
 * micro-batches of t->micro, then the momentum update. Returns 0 and the mean loss. */
static int train_step(trainer *t, const float *X, long count, float lr, double *loss)
{
    double sq = 0;
    for (long at = 0; at < count; at += t->micro) {
        long m = count - at < t->micro ? count - at : t->micro;
        const float *Xm = X + (size_t)at * t->cols;
        int rc = t->math.forward(&t->math, Xm, m, t->cols, t->w, t->r);
        double part = 0;
        if (!rc)
            rc = t->math.sumsq(&t->math, t->r, m, &part);
        if (!rc)
            rc =
                t->math.backward(&t->math, Xm, m, t->cols, t->r, 1.0f / (float)count, at > 0, t->g);
        if (rc)
            return rc;
        sq += part;
    }
    *loss = sq / (2.0 * (double)count);
    /* Only the feature weights learn; w[dim] stays -1 (it picks y out of the record). */
    return t->math.update(&t->math, t->cols - 1, lr, (float)t->o.momentum, t->g, t->v, t->w);
}

/* (Re)allocates the residual buffer for micro-batches of `m` from the pool. */
static int alloc_micro(trainer *t, long m)
{
    if (t->r)
        gk_pool_free(t->pool, t->r);
    t->r = NULL;
    void *p;
    int rc = gk_pool_malloc_tagged(t->pool, (size_t)m * sizeof(float), NULL, "residuals", &p);
    if (rc)
        return rc;
    t->r = p;
    t->micro = m;
    return 0;
}

/* The batch finder's trial: the memory one step at batch b uses (the loader's ring of `depth`
 * device slots and the residuals, here from the pool) and one real step on it. */
#define RING_DEPTH 4
static int trial(void *user, long b, uint64_t *peak)
{
    trainer *t = user;
    (void)peak; /* the finder reads the pool's peak itself */
    void *ring = NULL;
    size_t bytes = (size_t)RING_DEPTH * (size_t)b * t->cols * sizeof(float);
    int rc = gk_pool_malloc_tagged(t->pool, bytes, NULL, "trial ring", &ring);
    if (rc)
        return rc;
    rc = alloc_micro(t, b);
    if (!rc) {
        rc = t->math.zero(&t->math, ring, bytes);
        double loss;
        if (!rc)
            rc = train_step(t, ring, b, 0.0f, &loss);
    }
    gk_pool_free(t->pool, ring);
    return rc;
}

static void on_shrink(void *user, const gk_pressure_advice *a)
{
    trainer *t = user;
    if (a->suggested_batch < t->micro)
        t->want_micro = a->suggested_batch;
}

/* Checkpoint: magic, step, micro, loader state, momentum and weights (cols floats each). */
static int save(trainer *t, gk_loader *ld, const char *path)
{
    gk_loader_state st;
    int rc = gk_loader_get_state(ld, &st);
    float *hw = malloc(2 * t->cols * sizeof(float));
    if (rc || !hw) {
        free(hw);
        return rc ? rc : -ENOMEM;
    }
    rc = t->math.download(&t->math, hw, t->w, t->cols);
    if (!rc)
        rc = t->math.download(&t->math, hw + t->cols, t->v, t->cols);
    /* gk_output writes a temporary file beside the checkpoint and renames it over the old one
     * only once all of it is on disk: a crash or a full disk never leaves half a checkpoint. */
    gk_output *o = NULL;
    int64_t micro = t->micro;
    if (!rc)
        rc = gk_output_open(path, 0, &o, NULL, 0);
    if (!rc) {
        gk_output_write(o, CKPT_MAGIC, 8);
        gk_output_write(o, &t->step, 8);
        gk_output_write(o, &micro, 8);
        gk_output_write(o, &st, sizeof st);
        gk_output_write(o, hw, 2 * t->cols * sizeof(float));
        rc = gk_output_commit(o, NULL, 0);
    }
    free(hw);
    return rc;
}

static int load(trainer *t, gk_loader *ld, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        fprintf(stderr, "train: cannot open checkpoint %s: %s\n", path, strerror(e));
        return -e;
    }
    char magic[8];
    int64_t micro;
    gk_loader_state st;
    float *hw = malloc(2 * t->cols * sizeof(float));
    int rc = 0;
    if (!hw || fread(magic, 8, 1, f) != 1 || memcmp(magic, CKPT_MAGIC, 8) ||
        fread(&t->step, 8, 1, f) != 1 || fread(&micro, 8, 1, f) != 1 ||
        fread(&st, sizeof st, 1, f) != 1 ||
        fread(hw, sizeof(float), 2 * t->cols, f) != 2 * t->cols || micro < 1 || micro > t->batch) {
        fprintf(stderr, "train: %s is not a checkpoint of this run (other --dim or corrupt)\n",
                path);
        rc = GK_ECORRUPT;
    }
    fclose(f);
    if (!rc && (rc = gk_loader_restore(ld, &st)) != 0)
        fprintf(stderr, "train: checkpoint %s: %s\n", path, gk_last_error());
    if (!rc && micro != t->micro)
        rc = alloc_micro(t, micro);
    if (!rc)
        rc = t->math.upload(&t->math, t->w, hw, t->cols);
    if (!rc)
        rc = t->math.upload(&t->math, t->v, hw + t->cols, t->cols);
    free(hw);
    return rc;
}

/* The learning rate decays linearly to zero over the run, so the last steps settle. */
static float lr_at(const trainer *t, uint64_t total)
{
    return (float)(t->o.lr * (1.0 - (double)t->step / (double)total));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void metric(trainer *t, const char *name, double value, const char *type)
{
    gk_statsd_client_send(t->metrics, name, value, type, NULL);
}

/* --- main ---------------------------------------------------------------------------------- */

static int run(trainer *t)
{
    opts *o = &t->o;
    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s", o->checkpoint ? o->checkpoint : "");
    if (!o->checkpoint)
        snprintf(ckpt, sizeof ckpt, "%s.ckpt", o->data);

    /* The dataset: generated once, then reused. */
    struct stat sb;
    if (o->generate && stat(o->data, &sb) != 0) {
        if (!o->quiet)
            printf("generating %llu records of %u features into %s\n",
                   (unsigned long long)o->generate, o->dim, o->data);
        int rc = generate(o->data, o->generate, o->dim, o->seed);
        if (rc)
            return 1;
    }
    if (o->generate_only)
        return 0;
    gk_records_info info;
    char err[512];
    int rc = gk_records_inspect(o->data, &info, err, sizeof err);
    if (rc) {
        fprintf(stderr, "train: %s (make one with --generate N)\n", err);
        return 1;
    }
    if (strcmp(info.dtype, "<f4") || info.record_size != (o->dim + 1u) * sizeof(float)) {
        fprintf(stderr, "train: %s holds records of %llu bytes (%s); --dim %u needs %zu of <f4\n",
                o->data, (unsigned long long)info.record_size, info.dtype, o->dim,
                (o->dim + 1u) * sizeof(float));
        return 1;
    }
    t->cols = o->dim + 1u;

    /* The device, its math and the pool. */
    rc = gk_device_open(o->device, &t->dev);
    if (rc) {
        fprintf(stderr, "train: %s\n", gk_last_error());
        return 1;
    }
    gk_device_props props;
    gk_device_get_props(t->dev, &props);
    if (props.backend == GK_BACKEND_SIM && !strstr(props.spec, "backed=1")) {
        fprintf(stderr,
                "train: device %s: the math reads device memory on the host, so a sim "
                "device needs backed=1\n",
                props.spec);
        return 1;
    }
    rc = train_math_open(&t->math, t->dev, err, sizeof err);
    if (rc) {
        fprintf(stderr, "train: %s\n", err);
        return 1;
    }
    if (!o->quiet) {
        const char *why = gk_device_auto_reason(t->dev);
        printf("device %s (%s)%s%s; math: %s\n", props.spec, props.name, *why ? "; " : "", why,
               t->math.name);
    }
    /* The pool's settings: the default preset, then GK_POOL_CONF if the user set it. */
    gk_pool_config pcfg;
    gk_pool_config_default(&pcfg);
    if ((rc = gk_pool_config_from_env(&pcfg)) != 0 ||
        (rc = gk_pool_create(t->dev, &pcfg, &t->pool)) != 0) {
        fail("pool", rc, gk_last_error());
        return 1;
    }
    gk_statsd_open(NULL, &t->metrics);
    /* Which math library does the work, so the report's advice does not suggest one. */
    char lib_tag[64];
    snprintf(lib_tag, sizeof lib_tag, "library:%s", t->math.library);
    gk_statsd_client_send(t->metrics, "gpukit_math_library", t->math.threads, "g", lib_tag);

    /* Fixed part: weights, momentum, gradient. */
    void *p[3];
    for (int i = 0; i < 3; i++) {
        static const char *const tags[] = {"weights", "momentum", "gradient"};
        rc = gk_pool_malloc_tagged(t->pool, t->cols * sizeof(float), NULL, tags[i], &p[i]);
        if (rc) {
            fail("allocating the model", rc, gk_last_error());
            return 1;
        }
    }
    t->w = p[0];
    t->v = p[1];
    t->g = p[2];
    float *init = calloc(t->cols, sizeof(float));
    if (!init)
        return 1;
    rc = t->math.upload(&t->math, t->v, init, t->cols);
    init[o->dim] = -1.0f;
    if (!rc)
        rc = t->math.upload(&t->math, t->w, init, t->cols);
    free(init);
    if (rc) {
        fail("initializing the model", rc, gk_last_error());
        return 1;
    }

    /* The batch size: the largest that fits, from the fitted memory model. */
    gk_batch_config bc;
    gk_batch_config_default(&bc);
    bc.pool = t->pool;
    long cap = (long)(info.record_count < (uint64_t)o->max_batch ? info.record_count
                                                                 : (uint64_t)o->max_batch);
    bc.max_batch = cap;
    if (bc.b2 > cap) {
        bc.b1 = 1;
        bc.b2 = cap > 1 ? cap : 2;
    }
    gk_batch_result br;
    rc = gk_batch_find(&bc, trial, t, &br);
    if (rc) {
        fail("batch finder", rc, gk_last_error());
        return 1;
    }
    t->batch = br.batch;
    if (!o->quiet)
        printf("batch %ld (finder: %d trials; memory %.0f B + %.0f B per sample; cap %ld)\n",
               t->batch, br.trials, br.fit_a, br.fit_k, cap);
    if ((rc = alloc_micro(t, t->batch)) != 0) {
        fail("allocating the residuals", rc, gk_last_error());
        return 1;
    }
    gk_pool_empty_cache(t->pool); /* the trial ring's memory goes to the loader's ring */
    float *zeros = calloc(t->cols, sizeof(float)); /* the trials left no momentum behind */
    rc = zeros ? t->math.upload(&t->math, t->v, zeros, t->cols) : -ENOMEM;
    free(zeros);
    if (rc) {
        fail("resetting the momentum", rc, gk_last_error());
        return 1;
    }

    /* The loader: shuffled, workers, pinned slots and the copy stream on the device. */
    gk_dataset *ds;
    if ((rc = gk_dataset_open_records(o->data, NULL, &ds)) != 0) {
        fprintf(stderr, "train: %s\n", gk_last_error());
        return 1;
    }
    gk_loader_config lc;
    gk_loader_config_default(&lc);
    /* A training loader reads this rank's share when a launcher (torchrun, Slurm, MPI) set one. */
    if ((rc = gk_loader_config_from_env(&lc, NULL, 0)) != 0) {
        fprintf(stderr, "train: %s\n", gk_last_error());
        return 1;
    }
    lc.batch_size = (uint64_t)t->batch;
    lc.workers = o->workers;
    lc.depth = RING_DEPTH;
    lc.shuffle = 1;
    lc.drop_last = 1;
    lc.seed = o->seed;
    lc.epochs = (uint64_t)o->epochs;
    lc.device = t->dev;
    lc.pool = t->pool;   /* the device slots come from the pool (the finder counted them) */
    lc.auto_release = 0; /* released after each step, so a checkpoint counts that step */
    lc.name = "train";
    gk_loader *ld;
    if ((rc = gk_loader_create(&lc, ds, &ld)) != 0) {
        fprintf(stderr, "train: loader: %s\n", gk_last_error());
        gk_dataset_destroy(ds);
        return 1;
    }
    if (o->resume && (rc = load(t, ld, ckpt)) != 0) {
        gk_loader_destroy(ld);
        gk_dataset_destroy(ds);
        return 1;
    }
    if (o->resume && !o->quiet)
        printf("resumed at step %llu from %s\n", (unsigned long long)t->step, ckpt);

    /* The pressure policy: samples once a step, shrinks the micro-batch when memory runs low. */
    gk_pressure_config pc;
    gk_pressure_config_default(&pc);
    pc.fit_a = br.fit_a;
    pc.fit_k = br.fit_k;
    pc.batch = t->batch;
    pc.on_shrink = on_shrink;
    pc.user = t;
    gk_pressure *pr = NULL;
    if ((rc = gk_pressure_create(t->pool, &pc, &pr)) != 0)
        fail("pressure policy", rc, NULL);

    uint64_t total = o->steps ? o->steps : gk_loader_batches_per_epoch(ld) * (uint64_t)o->epochs;
    double loss = NAN, first_loss = NAN, t0 = now_s(), seen = 0;
    double last_metrics = t0, window_samples = 0;
    uint64_t every = total / 10 ? total / 10 : 1; /* about ten progress lines */
    gk_batch b;
    int exit_code = 0;
    while (!rc && t->step < total) {
        double ts = now_s();
        rc = gk_loader_next(ld, NULL, -1, &b);
        if (rc == GK_LOADER_END) {
            rc = 0;
            break;
        }
        if (rc) {
            fprintf(stderr, "train: loader: %s\n", gk_last_error());
            break;
        }
        if ((rc = t->math.sync(&t->math)) != 0 ||
            (rc = train_step(t, b.device, (long)b.count, lr_at(t, total), &loss)) != 0) {
            fail("step", rc, gk_last_error());
            break;
        }
        if ((rc = gk_loader_release(ld, &b, NULL)) != 0) {
            fprintf(stderr, "train: loader: %s\n", gk_last_error());
            break;
        }
        t->step++;
        seen += (double)b.count;
        if (isnan(first_loss))
            first_loss = loss;
        double dt = now_s() - ts;
        /* Metrics at most every 20 ms: this toy step takes about a millisecond, and a real
         * program sends a handful of lines per step, not thousands per second. */
        window_samples += (double)b.count;
        if (t->step == 1 || ts + dt - last_metrics >= 0.02) {
            metric(t, "train_loss", loss, "g");
            metric(t, "train_step_time", dt * 1000, "ms");
            metric(t, "train_samples_per_second", window_samples / (ts + dt - last_metrics), "g");
            metric(t, "train_micro_batch", (double)t->micro, "g");
            last_metrics = ts + dt;
            window_samples = 0;
        }
        if (t->loss_log)
            fprintf(t->loss_log, "%llu %a\n", (unsigned long long)t->step, loss);
        if (!o->quiet && (t->step % every == 0 || t->step == 1))
            printf("step %5llu  loss %.6f  micro-batch %ld x %ld\n", (unsigned long long)t->step,
                   loss, t->micro, (t->batch + t->micro - 1) / t->micro);
        if (o->squeeze_step && t->step == o->squeeze_step) {
            /* A memory cap arriving mid-run (a co-tenant, a fraction limit): the pressure
             * policy sees the smaller budget and asks for a smaller micro-batch. */
            gk_pool_set_limit(t->pool, (size_t)o->squeeze_bytes);
            if (!o->quiet)
                printf("step %5llu  the pool's memory budget drops to %llu bytes\n",
                       (unsigned long long)t->step, (unsigned long long)o->squeeze_bytes);
        }
        unsigned acted = 0;
        if (pr && gk_pressure_sample(pr, &acted) == 0 && t->want_micro &&
            t->want_micro < t->micro) {
            long m = t->want_micro;
            t->want_micro = 0;
            if ((rc = alloc_micro(t, m)) != 0) {
                fail("shrinking the micro-batch", rc, gk_last_error());
                break;
            }
            gk_pool_trim(t->pool, 0, NULL);
            gk_pool_reset_peak(t->pool);
            printf("step %5llu  memory pressure: micro-batch now %ld, %ld accumulation steps "
                   "keep the batch at %ld\n",
                   (unsigned long long)t->step, m, (t->batch + m - 1) / m, t->batch);
        }
        if (o->save_every && t->step % o->save_every == 0 && (rc = save(t, ld, ckpt)) != 0) {
            fail("saving the checkpoint", rc, ckpt);
            break;
        }
        if (o->stop_at && t->step == o->stop_at) {
            printf("stopped at step %llu (resume with --resume)\n", (unsigned long long)t->step);
            exit_code = 75;
            break;
        }
    }
    double elapsed = now_s() - t0;
    gk_loader_stats ls;
    gk_loader_get_stats(ld, &ls);
    float *hw = malloc(t->cols * sizeof(float));
    if (!rc && hw)
        rc = t->math.download(&t->math, hw, t->w, t->cols);
    gk_loader_destroy(ld);
    gk_dataset_destroy(ds);
    gk_pressure_destroy(pr);
    if (rc || !hw || exit_code) {
        free(hw);
        return rc || !hw ? 1 : exit_code;
    }

    /* The verdict: the model's loss against the noise floor of the generating weights. */
    uint64_t n_eval = 100000;
    double l_model = eval_loss(o->data, &info, o->dim, hw, n_eval);
    double l_true = eval_loss(o->data, &info, o->dim, NULL, n_eval);
    double dw = 0;
    for (uint32_t j = 0; j < o->dim; j++)
        dw += (hw[j] - true_weight(j)) * (hw[j] - true_weight(j));
    free(hw);
    printf("trained %llu steps of batch %ld in %.2f s (%.0f samples/s, loader wait %.2f s)\n",
           (unsigned long long)t->step, t->batch, elapsed, seen / (elapsed > 0 ? elapsed : 1),
           (double)ls.wait_ns / 1e9);
    printf("loss %.8f (first step %.6f); noise floor of the generating weights %.8f; "
           "|w - w*| = %.4f\n",
           l_model, first_loss, l_true, sqrt(dw));
    if (l_model <= l_true * (1 + TOLERANCE)) {
        printf("converged: the loss is within %.0f%% of the noise floor\n", 100 * TOLERANCE);
        return 0;
    }
    printf("not converged: the loss is %.1f%% above the noise floor (tolerance %.0f%%)\n",
           100 * (l_model / l_true - 1), 100 * TOLERANCE);
    return 1;
}

int main(int argc, char **argv)
{
    trainer t = {0};
    int rc = parse_args(argc, argv, &t.o);
    if (rc) {
        usage(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : 2;
    }
    if (t.o.loss_log && !(t.loss_log = fopen(t.o.loss_log, "a"))) {
        fprintf(stderr, "train: cannot open %s: %s\n", t.o.loss_log, strerror(errno));
        return 1;
    }
    int code = run(&t);
    if (t.pool) {
        if (t.r)
            gk_pool_free(t.pool, t.r);
        if (t.w) {
            gk_pool_free(t.pool, t.w);
            gk_pool_free(t.pool, t.v);
            gk_pool_free(t.pool, t.g);
        }
    }
    train_math_close(&t.math);
    gk_pool_destroy(t.pool);
    gk_statsd_close(t.metrics);
    gk_device_close(t.dev);
    if (t.loss_log)
        fclose(t.loss_log);
    return code;
}
