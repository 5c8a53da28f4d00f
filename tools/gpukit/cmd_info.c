/* gpukit info: which backends work, the devices, the driver and the host. */
#include <stdio.h>
#include <string.h>

#include "tool.h"

static const char info_usage[] = "usage: gpukit info [--device SPEC] [--json]\n";

int gk_tool_info(int argc, char **argv)
{
    if (gk_tool_help_or_version(argc, argv, info_usage))
        return GK_TOOL_OK;
    gk_device *dev = NULL;
    int rc = gk_device_open("host", &dev);
    if (rc) {
        gk_tool_error("%s", gk_device_open_error());
        return GK_TOOL_FAIL;
    }
    gk_device_props p;
    gk_device_get_props(dev, &p);
    printf("host: %s\n", p.name);
    gk_device_close(dev);
    return GK_TOOL_OK;
}
