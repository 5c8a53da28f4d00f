/* The exporter's web configuration file, in the convention of Prometheus's exporters: a YAML
 * file with tls_server_config (cert_file, key_file) and basic_auth_users (user: bcrypt hash).
 * Only the subset such files use is read (comments, two levels of block mappings, plain and
 * quoted scalars); every key gpukit does not implement is refused by name rather than ignored,
 * since an ignored security setting is worse than an error. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "export/export_int.h"
#include "gpukit/error.h"

void gk__web_config_free(gk__web_config *c)
{
    if (!c)
        return;
    free(c->cert_file);
    free(c->key_file);
    for (size_t i = 0; i < c->nusers; i++) {
        free(c->users[i].name);
        free(c->users[i].hash);
    }
    free(c->users);
    memset(c, 0, sizeof *c);
}

int gk__bcrypt_hash_ok(const char *h)
{
    static const char b64[] = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    if (!h || strlen(h) != 60 || h[0] != '$' || h[1] != '2' || !strchr("aby", h[2]) || !h[2] ||
        h[3] != '$' || h[6] != '$')
        return 0;
    if (h[4] < '0' || h[4] > '3' || h[5] < '0' || h[5] > '9')
        return 0;
    int cost = (h[4] - '0') * 10 + (h[5] - '0');
    if (cost < 4 || cost > 31)
        return 0;
    for (int i = 7; i < 60; i++)
        if (!strchr(b64, h[i]) || !h[i])
            return 0;
    return 1;
}

/* One scalar: plain (trimmed), 'single' ('' is a quote) or "double" (\" and \\). Writes it to
 * out (outlen bytes); returns 0 or -1 when malformed or too long. */
static int scalar(const char *s, const char *end, char *out, size_t outlen)
{
    while (s < end && *s == ' ')
        s++;
    while (end > s && end[-1] == ' ')
        end--;
    size_t n = 0;
    if (s < end && (*s == '\'' || *s == '"')) {
        char q = *s++;
        for (;;) {
            if (s >= end)
                return -1; /* no closing quote */
            char c = *s++;
            if (c == q) {
                if (q == '\'' && s < end && *s == '\'') {
                    s++;
                } else {
                    break;
                }
            } else if (c == '\\' && q == '"') {
                if (s >= end || (*s != '"' && *s != '\\'))
                    return -1;
                c = *s++;
            }
            if (n + 1 >= outlen)
                return -1;
            out[n++] = c;
        }
        if (s != end)
            return -1; /* text after the closing quote */
    } else {
        if (s < end && strchr("{[&*!|>%@`", *s))
            return -1; /* flow collections, anchors, tags, block scalars: not in the subset */
        for (; s < end; s++) {
            if (n + 1 >= outlen)
                return -1;
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return 0;
}

/* The end of the content of a line: before a comment ('#' at the start or after a space, not
 * inside quotes). */
static const char *content_end(const char *s, const char *end)
{
    char q = 0;
    for (const char *p = s; p < end; p++) {
        if (q) {
            if (*p == q)
                q = 0;
        } else if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (*p == '#' && (p == s || p[-1] == ' ')) {
            return p;
        }
    }
    return end;
}

/* The position of the ':' that ends the key of "key: value" / "key:", or NULL. */
static const char *key_colon(const char *s, const char *end)
{
    char q = 0;
    for (const char *p = s; p < end; p++) {
        if (q) {
            if (*p == q)
                q = 0;
        } else if ((*p == '\'' || *p == '"') && p == s) {
            q = *p;
        } else if (*p == ':' && (p + 1 == end || p[1] == ' ')) {
            return p;
        }
    }
    return NULL;
}

static char *join_path(const char *dir, const char *file)
{
    if (file[0] == '/' || !dir || !*dir)
        return gk__strdup(file);
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = gk__malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static const char *const tls_unsupported[] = {"cert",
                                              "key",
                                              "client_ca_file",
                                              "client_ca",
                                              "client_allowed_sans",
                                              "max_version",
                                              "cipher_suites",
                                              "curve_preferences",
                                              "prefer_server_cipher_suites"};

enum section { SEC_NONE, SEC_TLS, SEC_USERS };

/* One "key: value" line inside tls_server_config. */
static int tls_key(gk__web_config *c, const char *key, const char *val, const char *dir,
                   size_t lineno, char *err, size_t errlen)
{
    char **slot = strcmp(key, "cert_file") == 0  ? &c->cert_file
                  : strcmp(key, "key_file") == 0 ? &c->key_file
                                                 : NULL;
    if (slot) {
        if (*slot)
            return gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: %s is given twice", lineno,
                                 key);
        if (!*val)
            return gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: %s needs a file name", lineno,
                                 key);
        *slot = join_path(dir, val);
        return *slot ? 0 : -ENOMEM;
    }
    if (strcmp(key, "client_auth_type") == 0) {
        if (strcmp(val, "NoClientCert") == 0)
            return 0; /* the default: nothing to do */
        return gk__error_buf(GK_ESYNTAX, err, errlen,
                             "line %zu: client_auth_type %s is not supported by gpukit (client "
                             "certificates are not checked; use basic_auth_users)",
                             lineno, val);
    }
    if (strcmp(key, "min_version") == 0) {
        if (strcmp(val, "TLS12") == 0 || strcmp(val, "TLS13") == 0) {
            c->min_tls13 = strcmp(val, "TLS13") == 0;
            return 0;
        }
        return gk__error_buf(GK_ESYNTAX, err, errlen,
                             "line %zu: min_version \"%s\" is not TLS12 or TLS13 (gpukit never "
                             "serves older versions)",
                             lineno, val);
    }
    for (size_t i = 0; i < sizeof tls_unsupported / sizeof tls_unsupported[0]; i++)
        if (strcmp(key, tls_unsupported[i]) == 0)
            return gk__error_buf(GK_ESYNTAX, err, errlen,
                                 "line %zu: tls_server_config.%s is not supported by gpukit (it "
                                 "reads cert_file, key_file, min_version and client_auth_type "
                                 "NoClientCert)",
                                 lineno, key);
    return gk__error_buf(GK_ESYNTAX, err, errlen,
                         "line %zu: unknown key \"%s\" in tls_server_config (cert_file, key_file, "
                         "min_version)",
                         lineno, key);
}

/* One "user: hash" line inside basic_auth_users. */
static int user_key(gk__web_config *c, const char *user, const char *hash, size_t lineno, char *err,
                    size_t errlen)
{
    if (!*user || strchr(user, ':'))
        return gk__error_buf(GK_ESYNTAX, err, errlen,
                             "line %zu: a user name must be non-empty and without ':'", lineno);
    for (size_t i = 0; i < c->nusers; i++)
        if (strcmp(c->users[i].name, user) == 0)
            return gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: user \"%s\" is listed twice",
                                 lineno, user);
    if (!gk__bcrypt_hash_ok(hash))
        return gk__error_buf(
            GK_ESYNTAX, err, errlen,
            "line %zu: the password of \"%s\" is not a bcrypt hash ($2y$10$ and 53 "
            "more characters); make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'",
            lineno, user);
    if (c->nusers == GK__WEB_MAX_USERS)
        return gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: more than %d users", lineno,
                             GK__WEB_MAX_USERS);
    gk__web_user *u = gk__realloc(c->users, (c->nusers + 1) * sizeof *u);
    if (!u)
        return -ENOMEM;
    c->users = u;
    u[c->nusers].name = gk__strdup(user);
    u[c->nusers].hash = gk__strdup(hash);
    c->nusers++;
    return u[c->nusers - 1].name && u[c->nusers - 1].hash ? 0 : -ENOMEM;
}

/* The key of a top-level line. */
static int top_key(enum section *sec, int *seen, const char *key, const char *rest, size_t lineno,
                   char *err, size_t errlen)
{
    if (*rest)
        return gk__error_buf(
            GK_ESYNTAX, err, errlen,
            "line %zu: %s takes an indented block of \"key: value\" lines below it", lineno, key);
    if (strcmp(key, "tls_server_config") == 0)
        *sec = SEC_TLS;
    else if (strcmp(key, "basic_auth_users") == 0)
        *sec = SEC_USERS;
    else if (strcmp(key, "http_server_config") == 0 || strcmp(key, "rate_limit") == 0)
        return gk__error_buf(GK_ESYNTAX, err, errlen,
                             "line %zu: %s is not supported by gpukit (it reads tls_server_config "
                             "and basic_auth_users)",
                             lineno, key);
    else
        return gk__error_buf(GK_ESYNTAX, err, errlen,
                             "line %zu: unknown key \"%s\" (tls_server_config or basic_auth_users)",
                             lineno, key);
    if (seen[*sec]++)
        return gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: %s is given twice", lineno, key);
    return 0;
}

int gk__web_config_parse(const char *text, size_t len, const char *dir, gk__web_config *out,
                         char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out || (!text && len))
        return -EINVAL;
    memset(out, 0, sizeof *out);
    enum section sec = SEC_NONE;
    int seen[3] = {0, 0, 0};
    size_t indent = 0, lineno = 0;
    char key[GK__WEB_MAX_VALUE], val[GK__WEB_MAX_VALUE];
    int rc = 0;
    const char *p = text, *end = text + len;
    while (p < end && !rc) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        lineno++;
        if (le > p && le[-1] == '\r')
            le--;
        for (const char *q = p; q < le; q++)
            if ((unsigned char)*q < 0x20 && *q != '\t') {
                rc =
                    gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: a control character", lineno);
                break;
            }
        if (rc)
            break;
        le = content_end(p, le);
        size_t sp = 0;
        while (p + sp < le && p[sp] == ' ')
            sp++;
        const char *s = p + sp;
        while (le > s && (le[-1] == ' ' || le[-1] == '\t'))
            le--;
        p = next;
        if (s == le || (sp == 0 && le - s == 3 && memcmp(s, "---", 3) == 0))
            continue;
        if (*s == '\t') {
            rc = gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: indent with spaces, not tabs",
                               lineno);
            break;
        }
        const char *colon = key_colon(s, le);
        if (!colon || scalar(s, colon, key, sizeof key) != 0) {
            rc = gk__error_buf(GK_ESYNTAX, err, errlen,
                               "line %zu: expected \"key: value\" (lists, flow mappings and "
                               "multi-line values are not supported)",
                               lineno);
            break;
        }
        const char *v0 = colon + 1;
        while (v0 < le && *v0 == ' ')
            v0++;
        if (v0 < le && (*v0 == '{' || *v0 == '[')) {
            rc =
                gk__error_buf(GK_ESYNTAX, err, errlen,
                              "line %zu: flow mappings and lists ({...}, [...]) are not supported: "
                              "write \"%s:\" and one indented \"key: value\" per line below it",
                              lineno, key);
            break;
        }
        if (scalar(colon + 1, le, val, sizeof val) != 0) {
            rc = gk__error_buf(GK_ESYNTAX, err, errlen,
                               "line %zu: the value of \"%s\" is malformed (an unclosed quote, or "
                               "YAML this file does not need)",
                               lineno, key);
            break;
        }
        if (sp == 0) {
            rc = top_key(&sec, seen, key, val, lineno, err, errlen);
            indent = 0;
            continue;
        }
        if (sec == SEC_NONE) {
            rc = gk__error_buf(GK_ESYNTAX, err, errlen, "line %zu: indented, but under no section",
                               lineno);
            break;
        }
        if (indent == 0)
            indent = sp;
        if (sp != indent) {
            rc = gk__error_buf(GK_ESYNTAX, err, errlen,
                               "line %zu: indented by %zu spaces, the block above by %zu (nested "
                               "mappings are not supported)",
                               lineno, sp, indent);
            break;
        }
        rc = sec == SEC_TLS ? tls_key(out, key, val, dir, lineno, err, errlen)
                            : user_key(out, key, val, lineno, err, errlen);
    }
    if (!rc && seen[SEC_TLS] && (!out->cert_file || !out->key_file))
        rc = gk__error_buf(GK_ESYNTAX, err, errlen,
                           "tls_server_config needs both cert_file and key_file");
    if (!rc && !seen[SEC_TLS] && !seen[SEC_USERS])
        rc = gk__error_buf(GK_ESYNTAX, err, errlen,
                           "no tls_server_config and no basic_auth_users: the file configures "
                           "nothing");
    if (rc == -ENOMEM)
        gk__error_buf(rc, err, errlen, "out of memory");
    if (rc)
        gk__web_config_free(out);
    return rc;
}

int gk__web_config_load(const char *path, gk__web_config *out, char *err, size_t errlen)
{
    if (!path || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    int fd = gk__open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return gk__error_buf(-e, err, errlen, "web config %s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    int rc = 0;
    char *text = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > GK__WEB_MAX_BYTES) {
        rc = gk__error_buf(-EINVAL, err, errlen,
                           "web config %s: not a regular file of at most 1 MiB", path);
        goto out;
    }
    text = gk__malloc((size_t)st.st_size + 1);
    if (!text) {
        rc = gk__error_buf(-ENOMEM, err, errlen, "web config %s: out of memory", path);
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    char dir[4096] = "";
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    char msg[512];
    rc = gk__web_config_parse(text, got, dir, out, msg, sizeof msg);
    if (rc)
        gk__error_buf(rc, err, errlen, "web config %s: %s", path, msg);
out:
    free(text);
    close(fd);
    return rc;
}
