/* Internals of the exporter: the web configuration file (TLS and basic authentication, in the
 * Prometheus exporter convention) and its checks. */
#ifndef GK_EXPORT_INT_H
#define GK_EXPORT_INT_H

#include <stddef.h>

/* Users of basic authentication at most, and the size of a configuration file at most. */
#define GK__WEB_MAX_USERS 1024
#define GK__WEB_MAX_BYTES (1 << 20)
#define GK__WEB_MAX_VALUE 4096

typedef struct gk__web_user {
    char *name;
    char *hash; /* bcrypt: "$2a$", "$2b$" or "$2y$", cost, salt and hash */
} gk__web_user;

/* What a web configuration file says. Paths are resolved against the file's folder. */
typedef struct gk__web_config {
    char *cert_file, *key_file; /* both or neither */
    int min_tls13;              /* min_version: TLS13 (else TLS 1.2 and 1.3) */
    gk__web_user *users;
    size_t nusers;
} gk__web_config;

/* Parses the text of a web configuration file (a YAML subset: comments, two levels of
 * "key: value" mappings, plain or quoted scalars):
 *
 *   tls_server_config:
 *     cert_file: server.crt
 *     key_file: server.key
 *   basic_auth_users:
 *     prometheus: $2y$10$...
 *
 * `dir` is the folder relative paths are resolved against ("" for none). Keys the exporter
 * toolkit knows but gpukit does not implement (client_auth_type, min_version, ...) are refused by
 * name, never ignored. Returns 0, GK_ESYNTAX with "line N: what is wrong" in err, or -ENOMEM.
 * Free with gk__web_config_free. */
int gk__web_config_parse(const char *text, size_t len, const char *dir, gk__web_config *out,
                         char *err, size_t errlen);

/* Reads and parses the file `path`. Errors as gk__web_config_parse (with the path in err), or
 * the negative errno of reading it. */
int gk__web_config_load(const char *path, gk__web_config *out, char *err, size_t errlen);

void gk__web_config_free(gk__web_config *c);

/* 1 when `hash` is a bcrypt hash ($2a$, $2b$ or $2y$, a cost of 4 to 31, 53 more characters). */
int gk__bcrypt_hash_ok(const char *hash);

#endif
