/* Device spec strings: "kind[:N][,key=value...]" or "kind:key=value,...". */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_int.h"

static int add_key(gk__spec *spec, const char *item, size_t n, char *err, size_t errlen)
{
    const char *eq = memchr(item, '=', n);
    if (!eq) {
        snprintf(err, errlen,
                 "device spec: \"%.*s\" is not key=value (example: sim:capacity=16GiB)", (int)n,
                 item);
        return -EINVAL;
    }
    size_t klen = (size_t)(eq - item), vlen = n - klen - 1;
    if (klen == 0 || klen >= sizeof spec->keys[0] || vlen == 0 || vlen >= sizeof spec->values[0]) {
        snprintf(err, errlen, "device spec: \"%.*s\" has an empty or too long key or value", (int)n,
                 item);
        return -EINVAL;
    }
    if (spec->nkeys == GK__SPEC_MAX_KEYS) {
        snprintf(err, errlen, "device spec: more than %d keys", GK__SPEC_MAX_KEYS);
        return -EINVAL;
    }
    for (int i = 0; i < spec->nkeys; i++) {
        if (strlen(spec->keys[i]) == klen && memcmp(spec->keys[i], item, klen) == 0) {
            snprintf(err, errlen, "device spec: key \"%.*s\" is given twice", (int)klen, item);
            return -EINVAL;
        }
    }
    memcpy(spec->keys[spec->nkeys], item, klen);
    spec->keys[spec->nkeys][klen] = '\0';
    memcpy(spec->values[spec->nkeys], eq + 1, vlen);
    spec->values[spec->nkeys][vlen] = '\0';
    spec->nkeys++;
    return 0;
}

int gk__spec_parse(const char *text, gk__spec *spec, char *err, size_t errlen)
{
    memset(spec, 0, sizeof *spec);
    spec->index = -1;
    if (!text)
        text = "";
    while (isspace((unsigned char)*text))
        text++;
    size_t len = strlen(text);
    while (len && isspace((unsigned char)text[len - 1]))
        len--;
    size_t klen = strcspn(text, ":,");
    if (klen > len)
        klen = len;
    if (klen == 0 || klen >= sizeof spec->kind) {
        snprintf(err, errlen,
                 "device spec \"%.*s\": expected auto, host, cuda[:N] or sim[:key=value,...]",
                 (int)len, text);
        return -EINVAL;
    }
    memcpy(spec->kind, text, klen);
    spec->kind[klen] = '\0';
    const char *p = text + klen, *end = text + len;
    if (p < end && *p == ':') {
        p++;
        /* A leading number is the device index. */
        if (p < end && isdigit((unsigned char)*p)) {
            char *num_end;
            long v = strtol(p, &num_end, 10);
            if (num_end > end || (num_end < end && *num_end != ',') || v > 1024) {
                snprintf(err, errlen, "device spec \"%.*s\": bad device index (example: cuda:0)",
                         (int)len, text);
                return -EINVAL;
            }
            spec->index = (int)v;
            p = num_end;
            if (p < end)
                p++; /* the comma */
        }
    } else if (p < end && *p == ',') {
        p++;
    }
    while (p < end) {
        size_t n = strcspn(p, ",");
        if (p + n > end)
            n = (size_t)(end - p);
        if (n == 0) {
            snprintf(err, errlen, "device spec \"%.*s\": empty item between commas", (int)len,
                     text);
            return -EINVAL;
        }
        int rc = add_key(spec, p, n, err, errlen);
        if (rc)
            return rc;
        p += n;
        if (p < end)
            p++;
    }
    return 0;
}
