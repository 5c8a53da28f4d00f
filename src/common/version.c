/* The library's version, for callers that may run against a different build than they compiled
 * with. */
#include "gpukit/version.h"

#define GK__STR2(x) #x
#define GK__STR(x)  GK__STR2(x)

const char *gk_version_string(void)
{
    return GK__STR(GK_VERSION_MAJOR) "." GK__STR(GK_VERSION_MINOR) "." GK__STR(GK_VERSION_PATCH);
}

unsigned gk_version_hex(void)
{
    return GK_VERSION_HEX;
}

unsigned gk_abi_version(void)
{
    return GK_ABI_VERSION;
}
