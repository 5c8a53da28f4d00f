/* gk_strerror and gk_err_name, generated from the tables in gpukit/error.h. */
#include "gpukit/error.h"

const char *gk_strerror(int code)
{
    if (code == 0)
        return "success";
    switch (-code) {
#define GK__ERRNO_TEXT(name, text)                                                                 \
    case name:                                                                                     \
        return text;
        GK_ERRNO_MAP(GK__ERRNO_TEXT)
#undef GK__ERRNO_TEXT
    default:
        break;
    }
    switch (code) {
#define GK__CODE_TEXT(name, value, text)                                                           \
    case value:                                                                                    \
        return text;
        GK_CODE_MAP(GK__CODE_TEXT)
#undef GK__CODE_TEXT
    default:
        return "unknown error";
    }
}

const char *gk_err_name(int code)
{
    if (code == 0)
        return "OK";
    switch (-code) {
#define GK__ERRNO_NAME(name, text)                                                                 \
    case name:                                                                                     \
        return #name;
        GK_ERRNO_MAP(GK__ERRNO_NAME)
#undef GK__ERRNO_NAME
    default:
        break;
    }
    switch (code) {
#define GK__CODE_NAME(name, value, text)                                                           \
    case value:                                                                                    \
        return #name;
        GK_CODE_MAP(GK__CODE_NAME)
#undef GK__CODE_NAME
    default:
        return "UNKNOWN";
    }
}
