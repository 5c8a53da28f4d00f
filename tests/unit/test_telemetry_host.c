/* Tests of the host reader: fixture /proc trees (tests/data/proc1 complete, proc2 broken) for
 * exact values, and the real /proc for sanity; the process tree with PSS and I/O. */
/* gk-labels: unit */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gk_test.h"

static gk_host *open_fixture(const char *name)
{
    char root[1024];
    snprintf(root, sizeof root, "%s/tests/data/%s", GK_TEST_SOURCE_DIR, name);
    gk_host_config cfg = {.size = sizeof(gk_host_config), .proc_root = root};
    gk_host *h = NULL;
    GK_ASSERT_OK(gk_host_open(&cfg, &h));
    return h;
}

static int near(double a, double b)
{
    return fabs(a - b) <= 1e-9 * (fabs(b) + 1.0);
}

static void test_fixture_sample(void **state)
{
    (void)state;
    gk_host *h = open_fixture("proc1");
    static gk_host_sample s;
    GK_ASSERT_OK(gk_host_sample_read(h, GK_HOST_ALL, &s));
    assert_int_equal(s.valid, GK_HOST_ALL);
    double tck = (double)sysconf(_SC_CLK_TCK);
    assert_true(near(s.cpu.user, 10000 / tck) && near(s.cpu.idle, 50000 / tck));
    assert_true(near(s.cpu.steal, 7 / tck) && near(s.cpu.softirq, 60 / tck));
    assert_int_equal(s.ncpus, 2);
    assert_true(near(s.per_cpu[1].user, 4000 / tck) && near(s.per_cpu[0].iowait, 300 / tck));
    assert_true(s.mem_total == 8000000ULL * 1024 && s.mem_available == 5000000ULL * 1024);
    assert_true(s.mem_free == 1000000ULL * 1024 && s.mem_cached == 3000000ULL * 1024);
    assert_true(s.swap_total == 2000000ULL * 1024 && s.swap_free == 1500000ULL * 1024);
    assert_true(s.load1 == 0.5 && s.load5 == 1.25 && s.load15 == 2.0);
    /* "/" once (duplicate and pseudo filesystems skipped, the missing mountpoint too). */
    assert_int_equal(s.nfs, 1);
    assert_string_equal(s.fs[0].mountpoint, "/");
    assert_string_equal(s.fs[0].device, "/dev/root");
    assert_true(s.fs[0].size_bytes > 0 && s.fs[0].avail_bytes <= s.fs[0].free_bytes);
    assert_int_equal(s.ndisks, 2); /* loop0 skipped */
    assert_string_equal(s.disks[0].name, "sda");
    assert_true(s.disks[0].read_bytes == 20000ULL * 512 &&
                s.disks[0].written_bytes == 40000ULL * 512);
    assert_true(s.disks[0].reads == 1000 && s.disks[0].writes == 2000);
    assert_true(near(s.disks[0].io_time_seconds, 1.5));
    assert_int_equal(s.nnets, 2);
    assert_string_equal(s.nets[1].name, "eth0");
    assert_true(s.nets[1].rx_bytes == 9876543 && s.nets[1].tx_bytes == 1234567);
    assert_true(s.nets[1].rx_packets == 5000 && s.nets[1].tx_packets == 4000);
    assert_true(s.t_ns > 0);
    /* Only the asked sections. */
    GK_ASSERT_OK(gk_host_sample_read(h, GK_HOST_LOAD, &s));
    assert_int_equal(s.valid, GK_HOST_LOAD);
    assert_int_equal(s.ncpus, 0);
    GK_ASSERT_ERR(gk_host_sample_read(NULL, GK_HOST_ALL, &s), -EINVAL);
    gk_host_close(h);
    gk_host_close(NULL);
}

static void test_broken_fixture(void **state)
{
    (void)state;
    gk_host *h = open_fixture("proc2");
    static gk_host_sample s;
    GK_ASSERT_ERR(gk_host_sample_read(h, GK_HOST_ALL, &s), GK_ECORRUPT);
    assert_int_equal(s.valid, GK_HOST_MEMORY);
    /* No MemAvailable: estimated from free + buffers + cached. */
    assert_true(s.mem_available == 350ULL * 1024);
    GK_ASSERT_ERR(gk_host_sample_read(h, GK_HOST_DISK, &s), -ENOENT);
    GK_ASSERT_ERR(gk_host_sample_read(h, GK_HOST_FS, &s), -ENOENT);
    gk_proc_tree t;
    GK_ASSERT_ERR(gk_host_proc_tree(h, 1, &t), -ENOENT);
    gk_host_close(h);

    gk_host_config cfg = {.size = sizeof(gk_host_config), .proc_root = "/nonexistent/proc"};
    gk_host *bad = (gk_host *)&cfg;
    GK_ASSERT_ERR(gk_host_open(&cfg, &bad), -ENOENT);
    assert_null(bad);
    GK_ASSERT_ERR(gk_host_open(&cfg, NULL), -EINVAL);
}

static void test_env_root(void **state)
{
    (void)state;
    char root[1024];
    snprintf(root, sizeof root, "%s/tests/data/proc1", GK_TEST_SOURCE_DIR);
    gk_test_setenv("GK_PROC_ROOT", root);
    gk_host *h = NULL;
    GK_ASSERT_OK(gk_host_open(NULL, &h));
    assert_string_equal(gk_host_proc_root(h), root);
    gk_host_close(h);
    gk_test_setenv("GK_PROC_ROOT", NULL);
    GK_ASSERT_OK(gk_host_open(NULL, &h));
    assert_string_equal(gk_host_proc_root(h), "/proc");
    gk_host_close(h);
}

static void test_fixture_tree(void **state)
{
    (void)state;
    gk_host *h = open_fixture("proc1");
    double tck = (double)sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    gk_proc_tree t;
    GK_ASSERT_OK(gk_host_proc_tree(h, 100, &t));
    assert_string_equal(t.root_comm, "python3");
    assert_int_equal(t.nprocs, 3);
    assert_int_equal(t.children, 2);
    /* utime+stime of 100, 101, 102 (400 + 200 + 100) plus the reaped children's cutime+cstime
     * of 100 (30 + 10) and 101 (5 + 5); 200's are outside the tree. */
    assert_true(near(t.cpu_seconds, 750 / tck));
    assert_true(t.rss_bytes == (2500ULL + 1000 + 500) * (uint64_t)page);
    assert_int_equal(t.threads, 7);
    assert_true(t.pss_bytes == (8000ULL + 3000 + 1000) * 1024);
    assert_int_equal(t.pss_complete, 1);
    assert_int_equal(t.io_complete, 0); /* 102 has no io file */
    assert_true(t.read_bytes == 2010 && t.write_bytes == 4020);

    GK_ASSERT_OK(gk_host_proc_tree(h, 102, &t));
    assert_string_equal(t.root_comm, "odd (name) x");
    assert_int_equal(t.nprocs, 1);
    assert_int_equal(t.children, 0);
    assert_int_equal(t.pss_complete, 1);

    GK_ASSERT_OK(gk_host_proc_tree(h, 200, &t));
    assert_int_equal(t.nprocs, 1);
    assert_true(near(t.cpu_seconds, (999 + 999 + 77 + 77) / tck));
    assert_int_equal(t.pss_complete, 0);
    GK_ASSERT_ERR(gk_host_proc_tree(h, 999, &t), -ENOENT);
    GK_ASSERT_ERR(gk_host_proc_tree(h, 0, &t), -EINVAL);
    gk_host_close(h);
}

static void test_real_proc(void **state)
{
    (void)state;
    gk_host_config cfg = {.size = sizeof(gk_host_config), .proc_root = "/proc"};
    gk_host *h = NULL;
    GK_ASSERT_OK(gk_host_open(&cfg, &h));
    static gk_host_sample s;
    GK_ASSERT_OK(gk_host_sample_read(h, GK_HOST_CPU | GK_HOST_MEMORY | GK_HOST_LOAD, &s));
    assert_true(s.ncpus >= 1);
    assert_true(s.cpu.user + s.cpu.system + s.cpu.idle > 0);
    assert_true(s.mem_total > 0 && s.mem_available <= s.mem_total);
    gk_proc_tree t;
    GK_ASSERT_OK(gk_host_proc_tree(h, (int)getpid(), &t));
    assert_true(t.nprocs >= 1 && t.threads >= 1 && t.rss_bytes > 0);
    gk_host_close(h);
}

/* A child that burns CPU and is reaped still counts: its time moves into the parent's cutime and
 * cstime, so the tree's total does not fall when the child exits. */
static void test_reaped_child_counted(void **state)
{
    (void)state;
    gk_host *h = NULL;
    GK_ASSERT_OK(gk_host_open(NULL, &h));
    gk_proc_tree before, after;
    GK_ASSERT_OK(gk_host_proc_tree(h, (int)getpid(), &before));
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct rusage ru;
        volatile unsigned long x = 1;
        do {
            for (int i = 0; i < 1000000; i++)
                x = x * 6364136223846793005UL + 1442695040888963407UL;
            getrusage(RUSAGE_SELF, &ru);
        } while (ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec < 150000);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    struct rusage kids;
    assert_int_equal(getrusage(RUSAGE_CHILDREN, &kids), 0);
    double child_cpu = (double)(kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) +
                       (double)(kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6;
    GK_ASSERT_OK(gk_host_proc_tree(h, (int)getpid(), &after));
    assert_true(child_cpu >= 0.14);
    /* One clock tick of rounding per field at most. */
    assert_true(after.cpu_seconds - before.cpu_seconds >= child_cpu - 0.05);
    gk_host_close(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_sample), cmocka_unit_test(test_broken_fixture),
        cmocka_unit_test(test_env_root),       cmocka_unit_test(test_fixture_tree),
        cmocka_unit_test(test_real_proc),      cmocka_unit_test(test_reaped_child_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
