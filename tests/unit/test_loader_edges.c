/* Each of the loader's three ordering edges is enforced: on the sim device (lazily executed
 * streams, device memory backed by host memory) a consumer "kernel" (a host function on the
 * caller's stream) checks the device slot's bytes when it runs; removing any one edge (the loader
 * config's test-only switch test_drop_edges) makes checks see the wrong bytes. Removing an edge
 * creates a real data race between a copy and a check, which is the point, so this executable is
 * not labelled `threads` (ThreadSanitizer would rightly report it); test_loader_sim.c runs the
 * same scenario with every edge in place under ThreadSanitizer. */
/* gk-labels: unit */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gk_test.h"

#include "loader_scenario.h"

#define SIM "sim:capacity=16MiB,va_size=16MiB,backed=1"

/* The same runs with every edge in place see no wrong bytes (so a failure below is the edge's). */
static void test_control(void **state)
{
    (void)state;
    for (int pool = 0; pool <= 1; pool++) {
        for (int workers = 0; workers <= 1; workers++) {
            assert_int_equal(run(SIM, 0, workers, 1, pool), 0);
            assert_int_equal(run(SIM, 0, workers, 0, pool), 0);
        }
    }
}

/* Edge a: without the caller's wait, a step that runs at once reads a slot not yet copied. */
static void test_edge_a_detected(void **state)
{
    (void)state;
    for (int pool = 0; pool <= 1; pool++)
        for (int workers = 0; workers <= 1; workers++)
            assert_true(run(SIM, GK_LOADER_DROP_EDGE_A, workers, 1, pool) > 0);
}

/* Edge b: without the copy stream waiting for the release, a later copy overwrites a device slot
 * before the queued step that reads it has run. */
static void test_edge_b_detected(void **state)
{
    (void)state;
    for (int pool = 0; pool <= 1; pool++)
        for (int workers = 0; workers <= 1; workers++)
            assert_true(run(SIM, GK_LOADER_DROP_EDGE_B, workers, 0, pool) > 0);
}

/* Edge c: without the worker waiting for the copy out of a host slot, it refills the slot before
 * the (lazily executed) copy has read it. */
static void test_edge_c_detected(void **state)
{
    (void)state;
    for (int pool = 0; pool <= 1; pool++)
        for (int workers = 0; workers <= 1; workers++)
            assert_true(run(SIM, GK_LOADER_DROP_EDGE_C, workers, 0, pool) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control),
        cmocka_unit_test(test_edge_a_detected),
        cmocka_unit_test(test_edge_b_detected),
        cmocka_unit_test(test_edge_c_detected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
