/* Interim sim backend: reports itself unavailable until the real one replaces this file. */
#include "device/device_int.h"

static int sim_open(gk_device *dev, const gk__spec *spec)
{
    (void)spec;
    return gk__device_error(dev, GK_EUNAVAIL, "the sim backend is not built in this tree");
}

const gk__backend_ops gk__backend_sim = {.name = "sim", .kind = GK_BACKEND_SIM, .open = sim_open};

int gk_device_sim_set_faults(gk_device *dev, const char *faults)
{
    (void)faults;
    return dev ? GK_EUNAVAIL : -EINVAL;
}

uint64_t gk_device_sim_clock_ns(gk_device *dev)
{
    (void)dev;
    return 0;
}

size_t gk_device_sim_used(gk_device *dev)
{
    (void)dev;
    return 0;
}
