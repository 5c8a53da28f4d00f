/* Run recordings: the writer's lines read back exactly, escaping survives, a cut last line is a
 * warning, malformed lines are listed with their numbers, and bad files fail with a reason. */
/* gk-labels: unit threads */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "gk_test.h"
#include "report/report_int.h"

static char *path_in(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static gk_recording_meta sample_meta(void)
{
    static const char *const argv[] = {
        "python3", "-c", "print(\"hi\")\n\tx", "bad\xff utf8 \xc3\xa9", "it's", "--lr=0.1", ""};
    static const gk_recording_device devs[] = {{0, "Fake \"GPU\"", "GPU-1", 16e9}};
    gk_recording_meta m = {.size = sizeof(gk_recording_meta),
                           .argc = 7,
                           .argv = argv,
                           .host = "box",
                           .start_unix = 1764198000.25,
                           .interval_s = 0.5,
                           .cores = 2,
                           .memory_total_bytes = 8e9,
                           .gpu_enabled = 0,
                           .gpu_reason = "no driver",
                           .ndevices = 1,
                           .devices = devs};
    return m;
}

/* Numbers in recordings: integers (byte counts) stay exact, others keep 12 digits. */
static void test_json_numbers(void **state)
{
    (void)state;
    gk__sbuf b = {0};
    gk__sbuf_json_num(&b, 85520809984.0);
    gk__sbuf_puts(&b, " ");
    gk__sbuf_json_num(&b, 0.25);
    gk__sbuf_puts(&b, " ");
    gk__sbuf_json_num(&b, -3.0);
    gk__sbuf_puts(&b, " ");
    gk__sbuf_json_num(&b, 1e300);
    gk__sbuf_puts(&b, " ");
    gk__sbuf_json_num(&b, NAN);
    assert_string_equal(b.s, "85520809984 0.25 -3 1e+300 null");
    gk__sbuf_free(&b);
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *dir = gk_test_tmpdir("rec_rt");
    const char *p = path_in(dir, "run.jsonl");
    gk_recording_meta m = sample_meta();
    gk_recorder *r = NULL;
    GK_ASSERT_OK(gk_recorder_open(p, &m, &r));
    const char *names[] = {"gpukit_cpu_busy_ratio", "gpukit_process_tree_resident_memory_bytes",
                           "gpukit_gpu_power_watts{gpu=\"0\"}"};
    for (int i = 0; i < 10; i++) {
        double v[] = {i / 10.0, 1e6 * (i + 1), i == 3 ? NAN : 100.0};
        GK_ASSERT_OK(gk_recorder_sample(r, 0.5 * (i + 1), 3, names, v));
    }
    GK_ASSERT_OK(gk_recorder_metric(r, 0.7, "step_time", "ms", 12.5, NULL));
    GK_ASSERT_OK(gk_recorder_metric(r, 0.9, "step_time", "ms", 13.5, ""));
    GK_ASSERT_OK(gk_recorder_metric(r, 1.0, "batches", "c", 1, "phase:train"));
    GK_ASSERT_OK(gk_recorder_alert(r, 1.5, "gpu_hot", "gpu=\"0\"", "firing", 91));
    GK_ASSERT_ERR(gk_recorder_alert(r, 1.5, "", NULL, "firing", 1), -EINVAL);
    GK_ASSERT_ERR(gk_recorder_metric(r, 1.0, "x", "q", 1, NULL), -EINVAL);
    GK_ASSERT_ERR(gk_recorder_metric(r, 1.0, "", "g", 1, NULL), -EINVAL);
    gk_recording_end e = {.size = sizeof(gk_recording_end),
                          .t = 5.2,
                          .exit_status = 3,
                          .exit_code = 3,
                          .duration_s = 5.2,
                          .samples = 10,
                          .metric_lines = 3,
                          .metric_malformed = 2};
    GK_ASSERT_OK(gk_recorder_close(r, &e));

    gk_recording *rec = NULL;
    char err[256];
    GK_ASSERT_OK(gk_recording_load(p, &rec, err, sizeof err));
    gk_recording_info in;
    gk_recording_get_info(rec, &in);
    assert_int_equal(in.schema, 1);
    assert_string_equal(in.host, "box");
    GK_ASSERT_CONTAINS(in.command, "print(\"hi\")\n\tx");
    GK_ASSERT_CONTAINS(in.command, "bad\xef\xbf\xbd utf8 \xc3\xa9");
    /* Shell-quoted, so it pastes back: plain words as they are, the others in single quotes. */
    GK_ASSERT_CONTAINS(in.command, "python3 -c 'print(\"hi\")\n\tx' 'bad");
    GK_ASSERT_CONTAINS(in.command, "\xc3\xa9' 'it'\\''s' --lr=0.1 ''");
    assert_string_equal(in.gpu_reason, "no driver");
    assert_int_equal(in.gpu_enabled, 0);
    assert_int_equal(in.ndevices, 1);
    assert_int_equal(in.cores, 2);
    assert_true(in.has_end);
    assert_int_equal(in.end->exit_status, 3);
    assert_int_equal(in.end->metric_malformed, 2);
    assert_true(fabs(in.end->duration_s - 5.2) < 1e-9);
    assert_int_equal(gk_recording_issue_count(rec), 0);

    assert_int_equal(gk_recording_series_count(rec), 5);
    const gk_series *s = gk_recording_find(rec, "gpukit_process_tree_resident_memory_bytes");
    assert_non_null(s);
    assert_int_equal(s->n, 10);
    assert_true(s->v[9] == 1e7 && fabs(s->t[9] - 5.0) < 1e-9);
    s = gk_recording_find(rec, "gpukit_gpu_power_watts{gpu=\"0\"}");
    assert_int_equal(s->n, 9); /* the NaN was written as null and is missing */
    s = gk_recording_find(rec, "step_time");
    assert_int_equal(s->kind, GK_SERIES_TIMER);
    assert_int_equal(s->n, 2);
    s = gk_recording_find(rec, "batches{phase:train}");
    assert_non_null(s);
    assert_int_equal(s->kind, GK_SERIES_COUNTER);
    gk_series sv;
    GK_ASSERT_ERR(gk_recording_series(rec, 99, &sv), -ERANGE);
    assert_int_equal(gk_recording_alert_count(rec), 1);
    gk_alert_event ae;
    GK_ASSERT_OK(gk_recording_alert(rec, 0, &ae));
    assert_string_equal(ae.name, "gpu_hot");
    assert_string_equal(ae.labels, "gpu=\"0\"");
    assert_string_equal(ae.state, "firing");
    assert_true(ae.value == 91 && ae.t == 1.5);
    GK_ASSERT_ERR(gk_recording_alert(rec, 1, &ae), -ERANGE);
    gk_recording_free(rec);
}

static void test_cut_and_malformed(void **state)
{
    (void)state;
    const char *dir = gk_test_tmpdir("rec_cut");
    const char *p = path_in(dir, "cut.jsonl");
    write_file(p, "{\"type\":\"meta\",\"schema\":1,\"command\":[\"x\"],\"host\":\"h\"}\n"
                  "{\"type\":\"sample\",\"t\":0.5,\"v\":{\"a\":1}}\n"
                  "this is not json\n"
                  "{\"type\":\"sample\",\"v\":{\"a\":2}}\n"
                  "[1,2]\n"
                  "{\"type\":\"weird\",\"t\":1}\n"
                  "{\"type\":\"metric\",\"t\":1,\"name\":\"m\",\"kind\":\"zz\",\"value\":1}\n"
                  "{\"type\":\"alert\",\"t\":1,\"state\":\"firing\"}\n"
                  "{\"type\":\"sample\",\"t\":1.0,\"v\":{\"a\":3}}\n"
                  "{\"type\":\"sample\",\"t\":1.5,\"v\":{\"a\":");
    gk_recording *rec = NULL;
    GK_ASSERT_OK(gk_recording_load(p, &rec, NULL, 0));
    const gk_series *s = gk_recording_find(rec, "a");
    assert_non_null(s);
    assert_int_equal(s->n, 2);
    gk_recording_info in;
    gk_recording_get_info(rec, &in);
    assert_false(in.has_end);
    assert_int_equal(in.lines, 10);
    size_t n = gk_recording_issue_count(rec);
    assert_int_equal(n, 8);
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 0), "line 3: not JSON");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 1), "line 4:");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 2), "line 5: not a JSON object");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 3), "line 6: unknown type");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 4), "line 7: metric");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 5), "line 8: alert without a name");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 6), "line 10: the last line is cut off");
    GK_ASSERT_CONTAINS(gk_recording_issue(rec, 7), "no end line");
    assert_null(gk_recording_issue(rec, 8));
    assert_int_equal(gk_recording_alert_count(rec), 0);
    gk_recording_free(rec);
}

static void test_bad_files(void **state)
{
    (void)state;
    const char *dir = gk_test_tmpdir("rec_bad");
    gk_recording *rec = (gk_recording *)1;
    char err[256];
    GK_ASSERT_ERR(gk_recording_load(path_in(dir, "missing.jsonl"), &rec, err, sizeof err), -ENOENT);
    assert_null(rec);
    GK_ASSERT_CONTAINS(err, "missing.jsonl");
    write_file(path_in(dir, "empty"), "");
    GK_ASSERT_ERR(gk_recording_load(path_in(dir, "empty"), &rec, err, sizeof err), GK_ECORRUPT);
    GK_ASSERT_CONTAINS(err, "empty");
    write_file(path_in(dir, "csv"), "a,b,c\n1,2,3\n");
    GK_ASSERT_ERR(gk_recording_load(path_in(dir, "csv"), &rec, err, sizeof err), GK_ECORRUPT);
    GK_ASSERT_CONTAINS(err, "not JSON");
    write_file(path_in(dir, "other"), "{\"type\":\"sample\",\"t\":1}\n");
    GK_ASSERT_ERR(gk_recording_load(path_in(dir, "other"), &rec, err, sizeof err), GK_ECORRUPT);
    GK_ASSERT_CONTAINS(err, "not gpukit metadata");
    write_file(path_in(dir, "new"), "{\"type\":\"meta\",\"schema\":7}\n");
    GK_ASSERT_ERR(gk_recording_load(path_in(dir, "new"), &rec, err, sizeof err), GK_EVERSION);
    GK_ASSERT_CONTAINS(err, "schema 7");
    GK_ASSERT_ERR(gk_recording_load(NULL, &rec, err, sizeof err), -EINVAL);
    gk_recorder *r = NULL;
    gk_recording_meta m = sample_meta();
    GK_ASSERT_ERR(gk_recorder_open("/nonexistent/dir/x.jsonl", &m, &r), -ENOENT);
    assert_null(r);
    GK_ASSERT_ERR(gk_recorder_open(path_in(dir, "x"), NULL, &r), -EINVAL);
    assert_int_equal(gk_recorder_close(NULL, NULL), 0);
    gk_recording_free(NULL);
}

typedef struct writer_arg {
    gk_recorder *r;
    int id;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *a = p;
    char name[32];
    snprintf(name, sizeof name, "w%d", a->id);
    for (int i = 0; i < 500; i++)
        gk_recorder_metric(a->r, i * 0.01, name, "g", i, NULL);
    return NULL;
}

/* Lines from several threads never interleave. */
static void test_threads(void **state)
{
    (void)state;
    const char *dir = gk_test_tmpdir("rec_thr");
    const char *p = path_in(dir, "t.jsonl");
    gk_recording_meta m = sample_meta();
    gk_recorder *r = NULL;
    GK_ASSERT_OK(gk_recorder_open(p, &m, &r));
    pthread_t th[3];
    writer_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (writer_arg){r, i};
        assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    GK_ASSERT_OK(gk_recorder_close(r, NULL));
    gk_recording *rec = NULL;
    GK_ASSERT_OK(gk_recording_load(p, &rec, NULL, 0));
    assert_int_equal(gk_recording_issue_count(rec), 1); /* only "no end line" */
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "w%d", i);
        assert_int_equal(gk_recording_find(rec, name)->n, 500);
    }
    gk_recording_free(rec);
}

static void test_stats(void **state)
{
    (void)state;
    double v[101];
    for (int i = 0; i <= 100; i++)
        v[i] = 100 - i;
    gk_stats st;
    GK_ASSERT_OK(gk_stats_compute(v, 101, &st));
    assert_int_equal(st.count, 101);
    assert_true(st.min == 0 && st.max == 100 && st.p50 == 50 && st.p90 == 90 && st.p99 == 99);
    assert_true(fabs(st.mean - 50) < 1e-12);
    assert_true(fabs(st.std - sqrt(858.5)) < 1e-9);
    double w[] = {1, NAN, 3, INFINITY};
    GK_ASSERT_OK(gk_stats_compute(w, 4, &st));
    assert_int_equal(st.count, 2);
    assert_true(st.p50 == 2 && st.sum == 4);
    GK_ASSERT_OK(gk_stats_compute(NULL, 0, &st));
    assert_int_equal(st.count, 0);
    GK_ASSERT_ERR(gk_stats_compute(NULL, 3, &st), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_numbers),      cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_cut_and_malformed), cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_threads),           cmocka_unit_test(test_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
