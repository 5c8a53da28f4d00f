/* Tests of gk_output, the one way gpukit writes a file: a regular file is replaced whole or not at
 * all; devices, symbolic links to them and pipes are written in place and never renamed over,
 * truncated or deleted; directories and block devices are refused; nothing that existed is ever
 * removed; a full disk and a file-size limit come back as errors that name the file. The device
 * nodes are private ones made with mknod in the test's own folder (as root; skipped otherwise),
 * never the system's. Also gk_text_escape. */
/* gk-labels: unit */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "gk_test.h"

static char dir[4096];

static const char *at(const char *name)
{
    static char paths[4][4200];
    static int k;
    k = (k + 1) % 4;
    snprintf(paths[k], sizeof paths[k], "%s/%s", dir, name);
    return paths[k];
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static char *slurp(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Files of the folder other than those named: temporary files left behind. */
static int strays(void)
{
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '\\.gk-' >/dev/null", dir);
    return system(cmd) == 0;
}

/* A character device with the numbers of /dev/null (1,3) or /dev/full (1,7), made here. Returns
 * 0, or -1 when this user may not make device nodes (the caller skips). */
static int make_node(const char *name, mode_t type, unsigned minor)
{
    unlink(at(name));
    return mknod(at(name), type | 0666, makedev(1, minor)) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s", gk_test_tmpdir("output"));
    return 0;
}

static void write_text(const char *path, unsigned flags, const char *text, int *rc_open,
                       int *rc_commit, char *err, size_t errlen)
{
    gk_output *o = NULL;
    *rc_open = gk_output_open(path, flags, &o, err, errlen);
    *rc_commit = -1;
    if (*rc_open)
        return;
    gk_output_write(o, text, strlen(text));
    *rc_commit = gk_output_commit(o, err, errlen);
}

static void test_regular_file_replaced_whole(void **state)
{
    (void)state;
    char err[512];
    int ro, rc;
    put_file(at("a.txt"), "old");
    chmod(at("a.txt"), 0640);
    write_text(at("a.txt"), 0, "new content", &ro, &rc, err, sizeof err);
    GK_ASSERT_OK(ro);
    GK_ASSERT_OK(rc);
    assert_string_equal(slurp(at("a.txt")), "new content");
    struct stat st;
    assert_int_equal(stat(at("a.txt"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640); /* the permissions are kept */
    /* until commit the old file is untouched; abort leaves it as it was */
    gk_output *o = NULL;
    GK_ASSERT_OK(gk_output_open(at("a.txt"), 0, &o, err, sizeof err));
    GK_ASSERT_OK(gk_output_write(o, "half", 4));
    assert_string_equal(slurp(at("a.txt")), "new content");
    gk_output_abort(o);
    assert_string_equal(slurp(at("a.txt")), "new content");
    assert_false(strays());
    /* a new path is created */
    write_text(at("new.txt"), 0, "x", &ro, &rc, err, sizeof err);
    GK_ASSERT_OK(rc);
    assert_string_equal(slurp(at("new.txt")), "x");
    /* abort of a new path leaves no file at all */
    GK_ASSERT_OK(gk_output_open(at("never.txt"), 0, &o, err, sizeof err));
    gk_output_abort(o);
    assert_int_equal(access(at("never.txt"), F_OK), -1);
}

static void test_symlink_to_file_kept(void **state)
{
    (void)state;
    char err[512];
    int ro, rc;
    put_file(at("target.txt"), "old");
    unlink(at("link.txt"));
    assert_int_equal(symlink("target.txt", at("link.txt")), 0);
    write_text(at("link.txt"), 0, "through the link", &ro, &rc, err, sizeof err);
    GK_ASSERT_OK(rc);
    struct stat st;
    assert_int_equal(lstat(at("link.txt"), &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* still a link */
    assert_string_equal(slurp(at("target.txt")), "through the link");
    /* a link to nothing is refused, and stays */
    unlink(at("dangling"));
    assert_int_equal(symlink("nowhere", at("dangling")), 0);
    write_text(at("dangling"), 0, "x", &ro, &rc, err, sizeof err);
    GK_ASSERT_ERR(ro, -ENOENT);
    GK_ASSERT_CONTAINS(err, "a symbolic link to a missing file");
    assert_int_equal(lstat(at("dangling"), &st), 0);
}

static void test_devices_written_in_place(void **state)
{
    (void)state;
    if (make_node("null", S_IFCHR, 3) != 0 || make_node("full", S_IFCHR, 7) != 0)
        skip();
    char err[512];
    int ro, rc;
    struct stat st;
    /* a null device takes the data and stays a device */
    write_text(at("null"), 0, "data", &ro, &rc, err, sizeof err);
    GK_ASSERT_OK(ro);
    GK_ASSERT_OK(rc);
    assert_int_equal(stat(at("null"), &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    /* a full device: ENOSPC named, the node survives */
    write_text(at("full"), 0, "data", &ro, &rc, err, sizeof err);
    GK_ASSERT_OK(ro);
    GK_ASSERT_ERR(rc, -ENOSPC);
    GK_ASSERT_CONTAINS(err, at("full"));
    GK_ASSERT_CONTAINS(err, "No space left on device");
    assert_int_equal(stat(at("full"), &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    /* the same through a symbolic link: both stay */
    unlink(at("full-link"));
    assert_int_equal(symlink("full", at("full-link")), 0);
    write_text(at("full-link"), 0, "data", &ro, &rc, err, sizeof err);
    GK_ASSERT_ERR(rc, -ENOSPC);
    assert_int_equal(lstat(at("full-link"), &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(stat(at("full"), &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    /* a writer that seeks refuses devices, and leaves them */
    write_text(at("full"), GK_OUTPUT_SEEKABLE, "data", &ro, &rc, err, sizeof err);
    GK_ASSERT_ERR(ro, -EINVAL);
    GK_ASSERT_CONTAINS(err, "is a character device");
    /* abort of a device never deletes it */
    gk_output *o = NULL;
    GK_ASSERT_OK(gk_output_open(at("null"), 0, &o, err, sizeof err));
    gk_output_abort(o);
    assert_int_equal(stat(at("null"), &st), 0);
    /* a block device is refused */
    unlink(at("blk"));
    if (mknod(at("blk"), S_IFBLK | 0600, makedev(7, 200)) == 0) {
        write_text(at("blk"), 0, "data", &ro, &rc, err, sizeof err);
        GK_ASSERT_ERR(ro, -EINVAL);
        GK_ASSERT_CONTAINS(err, "is a block device");
        assert_int_equal(stat(at("blk"), &st), 0);
    }
    /* a stream the caller owns, on the full device: the write error is reported */
    FILE *f = fopen(at("full"), "w");
    assert_non_null(f);
    fputs("data", f);
    GK_ASSERT_ERR(gk_output_check_stream(f, "the stream", err, sizeof err), -ENOSPC);
    GK_ASSERT_CONTAINS(err, "cannot write to the stream: No space left on device");
    fclose(f);
    assert_false(strays());
}

static void test_directories_and_fifos(void **state)
{
    (void)state;
    char err[512];
    int ro, rc;
    write_text(dir, 0, "x", &ro, &rc, err, sizeof err);
    GK_ASSERT_ERR(ro, -EISDIR);
    GK_ASSERT_CONTAINS(err, "is a directory");
    write_text(at("no/such/folder/x.txt"), 0, "x", &ro, &rc, err, sizeof err);
    GK_ASSERT_ERR(ro, -ENOENT);
    GK_ASSERT_CONTAINS(err, "does not exist");
    /* a FIFO without a reader is refused at once, not waited for */
    unlink(at("fifo"));
    assert_int_equal(mkfifo(at("fifo"), 0600), 0);
    write_text(at("fifo"), 0, "x", &ro, &rc, err, sizeof err);
    GK_ASSERT_ERR(ro, -ENXIO);
    GK_ASSERT_CONTAINS(err, "no reader");
    /* with a reader it is written in place and stays a FIFO */
    int rd = open(at("fifo"), O_RDONLY | O_NONBLOCK);
    assert_true(rd >= 0);
    write_text(at("fifo"), 0, "through", &ro, &rc, err, sizeof err);
    GK_ASSERT_OK(rc);
    char buf[16] = "";
    assert_int_equal(read(rd, buf, sizeof buf - 1), 7);
    assert_string_equal(buf, "through");
    close(rd);
    struct stat st;
    assert_int_equal(stat(at("fifo"), &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
}

static void test_file_size_limit(void **state)
{
    (void)state;
    char err[512];
    put_file(at("big.txt"), "the old one");
    struct rlimit old, lim = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
    getrlimit(RLIMIT_FSIZE, &old);
    lim.rlim_max = old.rlim_max;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    gk_output *o = NULL;
    GK_ASSERT_OK(gk_output_open(at("big.txt"), 0, &o, err, sizeof err));
    static char block[8192];
    memset(block, 'x', sizeof block);
    int wrc = gk_output_write(o, block, sizeof block);
    int rc = gk_output_commit(o, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    GK_ASSERT_ERR(wrc, -EFBIG);
    GK_ASSERT_ERR(rc, -EFBIG);
    GK_ASSERT_CONTAINS(err, "File too large");
    GK_ASSERT_CONTAINS(err, "ulimit -f");
    assert_string_equal(slurp(at("big.txt")), "the old one"); /* never half a file */
    assert_false(strays());
}

static void test_log_mode(void **state)
{
    (void)state;
    char err[512];
    /* a new log is written in place: readable before commit */
    unlink(at("run.jsonl"));
    gk_output *o = NULL;
    GK_ASSERT_OK(gk_output_open(at("run.jsonl"), GK_OUTPUT_LOG, &o, err, sizeof err));
    GK_ASSERT_OK(gk_output_write(o, "line 1\n", 7));
    assert_string_equal(slurp(at("run.jsonl")), "line 1\n");
    gk_output_abort(o); /* kept: a log created in place holds what was written */
    assert_string_equal(slurp(at("run.jsonl")), "line 1\n");
    /* an existing log is replaced only at commit */
    GK_ASSERT_OK(gk_output_open(at("run.jsonl"), GK_OUTPUT_LOG, &o, err, sizeof err));
    GK_ASSERT_OK(gk_output_write(o, "line A\n", 7));
    assert_string_equal(slurp(at("run.jsonl")), "line 1\n");
    GK_ASSERT_OK(gk_output_commit(o, err, sizeof err));
    assert_string_equal(slurp(at("run.jsonl")), "line A\n");
}

static void test_reserve(void **state)
{
    (void)state;
    char err[512];
    gk_output *o = NULL;
    GK_ASSERT_OK(gk_output_open(at("r.bin"), 0, &o, err, sizeof err));
    GK_ASSERT_OK(gk_output_reserve(o, 1, err, sizeof err));
    GK_ASSERT_ERR(gk_output_reserve(o, UINT64_MAX / 2, err, sizeof err), -ENOSPC);
    GK_ASSERT_CONTAINS(err, "the output needs about");
    GK_ASSERT_CONTAINS(err, "is free there");
    gk_output_abort(o);
    assert_int_equal(access(at("r.bin"), F_OK), -1);
}

static void test_stream(void **state)
{
    (void)state;
    char err[512];
    gk_output *o = NULL;
    GK_ASSERT_OK(gk_output_open(at("s.txt"), 0, &o, err, sizeof err));
    FILE *f = gk_output_stream(o);
    assert_non_null(f);
    for (int i = 0; i < 1000; i++)
        fprintf(f, "line %d\n", i);
    GK_ASSERT_OK(gk_output_commit(o, err, sizeof err));
    char *s = slurp(at("s.txt"));
    assert_true(strncmp(s, "line 0\nline 1\n", 14) == 0);
    if (make_node("full2", S_IFCHR, 7) != 0)
        return;
    GK_ASSERT_OK(gk_output_open(at("full2"), 0, &o, err, sizeof err));
    f = gk_output_stream(o);
    for (int i = 0; i < 100000; i++)
        fprintf(f, "line %d\n", i);
    fflush(f);
    GK_ASSERT_ERR(gk_output_error(o), -ENOSPC); /* the errno of the stream's write is kept */
    GK_ASSERT_ERR(gk_output_commit(o, err, sizeof err), -ENOSPC);
}

static void test_text_escape(void **state)
{
    (void)state;
    char buf[128];
    assert_int_equal(gk_text_escape(buf, sizeof buf, "plain é ✓"), strlen("plain é ✓"));
    assert_string_equal(buf, "plain é ✓");
    gk_text_escape(buf, sizeof buf, "a\x1b]0;x\x07\x1b[31mb\n\t\r\x7f");
    assert_string_equal(buf, "a\\e]0;x\\x07\\e[31mb\\n\\t\\r\\x7f");
    gk_text_escape(buf, sizeof buf, "c1 \xc2\x9b bad \xff \xc3");
    assert_string_equal(buf, "c1 \\u009b bad \\xff \\xc3");
    /* truncation never cuts an escape or a character, and says what was needed */
    char small[6];
    size_t need = gk_text_escape(small, sizeof small, "ab\x1b\x1b");
    assert_int_equal(need, 6);
    assert_string_equal(small, "ab\\e");
    need = gk_text_escape(small, sizeof small, "abcé");
    assert_string_equal(small, "abcé");
    need = gk_text_escape(small, sizeof small, "abcdé");
    assert_string_equal(small, "abcd");
    /* gk_text_fputs writes the same */
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    GK_ASSERT_OK(gk_text_fputs("x\x1by\n", f));
    fclose(f);
    assert_string_equal(mem, "x\\ey\\n");
    free(mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regular_file_replaced_whole),
        cmocka_unit_test(test_symlink_to_file_kept),
        cmocka_unit_test(test_devices_written_in_place),
        cmocka_unit_test(test_directories_and_fifos),
        cmocka_unit_test(test_file_size_limit),
        cmocka_unit_test(test_log_mode),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_text_escape),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
