/* examples/monitor_embed.c: the monitor inside a program, serving /metrics itself.
 *
 *   monitor_embed [LISTEN [SECONDS]]   (default 127.0.0.1:9430, 10 s)
 *
 * A monitor samples the host (and the GPUs when NVML is there) into a registry; the program adds
 * a metric of its own to the same registry; an exporter serves it all to Prometheus at
 * http://LISTEN/metrics while the program works. Port 0 picks a free port (printed). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <gpukit/gpukit.h>

int main(int argc, char **argv)
{
    const char *listen = argc > 1 ? argv[1] : "127.0.0.1:9430";
    double seconds = argc > 2 ? atof(argv[2]) : 10;
    gk_metrics *reg = gk_metrics_default();

    gk_monitor_config mc;
    gk_monitor_config_default(&mc);
    (void)gk_monitor_config_from_env(&mc); /* GK_NVML_LIBRARY, GK_PROC_ROOT, GK_LOG when set */
    mc.interval = 0.5;
    mc.metrics = reg;
    gk_monitor *mon;
    if (gk_monitor_create(&mc, &mon) != 0 || gk_monitor_start(mon) != 0) {
        fprintf(stderr, "monitor_embed: cannot start the monitor\n");
        return 1;
    }

    gk_exporter_config ec;
    gk_exporter_config_default(&ec);
    ec.listen = listen;
    ec.metrics = reg;
    ec.monitor = mon;
    gk_exporter *ex;
    char err[256];
    if (gk_exporter_start(&ec, &ex, err, sizeof err) != 0) {
        fprintf(stderr, "monitor_embed: %s\n", err);
        gk_monitor_destroy(mon);
        return 1;
    }
    printf("serving http://127.0.0.1:%d/metrics for %.0f s\n", gk_exporter_port(ex), seconds);
    fflush(stdout);

    /* The program's own work, counted in the same registry. */
    gk_metric *steps;
    gk_metrics_counter(reg, "example_steps_total", "steps done by monitor_embed", NULL, &steps);
    struct timespec tick = {0, 100 * 1000 * 1000};
    for (double t = 0; t < seconds; t += 0.1) {
        gk_counter_add(steps, 1);
        nanosleep(&tick, NULL);
    }
    printf("served %lu scrapes\n", gk_exporter_scrapes(ex));
    gk_exporter_destroy(ex);
    gk_monitor_destroy(mon);
    return 0;
}
