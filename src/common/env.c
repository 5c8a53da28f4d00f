/* The environment, read in one place. `_default()` functions never read it; these `_from_env`
 * functions apply the variables a launcher or a user sets (GK_*, and the rank variables of
 * torchrun, Slurm and Open MPI) on top of a config the caller already has. The library parts
 * (pool, loader, batch, pressure) never call getenv themselves. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtext.h"
#include "gpukit/device.h"
#include "gpukit/loader.h"
#include "gpukit/log.h"
#include "gpukit/monitor.h"
#include "gpukit/options.h"
#include "gpukit/pool.h"
#include "gpukit/telemetry.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int gk_logger_from_env(gk_logger *lg)
{
    if (!lg)
        return gk__error(-EINVAL, "gk_logger_from_env: lg is NULL");
    const char *v = env("GK_LOG");
    gk_log_level level;
    if (!v)
        return 0;
    if (gk_parse_log_level(v, &level) != 0)
        return gk__error(-EINVAL,
                         "GK_LOG: \"%s\" is not a log level (try off, error, warn, info, debug or "
                         "trace)",
                         v);
    lg->level = level;
    return 0;
}

/* Checks that a config came from its _default() function. */
static int sized(const void *cfg, const char *type)
{
    if (!cfg)
        return gk__error(-EINVAL, "%s: the config pointer is NULL", type);
    if (gk__sized_size(cfg) < sizeof(size_t))
        return gk__error(-EINVAL, "%s: size is %zu (start from its _default() function)", type,
                         gk__sized_size(cfg));
    return 0;
}

int gk_device_config_from_env(gk_device_config *cfg)
{
    int rc = sized(cfg, "gk_device_config");
    if (rc || (rc = gk_logger_from_env(&cfg->logger)))
        return rc;
    const char *lib = env("GK_CUDA_LIBRARY");
    if (lib)
        cfg->cuda_library = lib;
    const char *t = env("GK_SYNC_TIMEOUT");
    double s;
    if (t) {
        if (gk_parse_duration(t, &s) != 0)
            return gk__error(-EINVAL,
                             "GK_SYNC_TIMEOUT: \"%s\" is not a duration (try 30s or 500ms)", t);
        cfg->sync_timeout = s;
    }
    return 0;
}

int gk_pool_config_from_env(gk_pool_config *cfg)
{
    int rc = sized(cfg, "gk_pool_config");
    if (rc || (rc = gk_logger_from_env(&cfg->logger)))
        return rc;
    const char *conf = env("GK_POOL_CONF");
    if (!conf)
        return 0;
    char err[512];
    rc = gk_pool_config_parse(cfg, conf, err, sizeof err);
    if (rc)
        return gk__error(rc, "GK_POOL_CONF: %s", err);
    return 0;
}

/* Reads one rank variable as a non-negative 32-bit integer. */
static int env_u32(const char *name, uint32_t *out, char *err, size_t len)
{
    const char *v = getenv(name);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || x > UINT32_MAX || v[0] == '-')
        return gk__error_buf(-EINVAL, err, len,
                             "%s=\"%s\" is not a non-negative integer (unset it or fix it)", name,
                             v);
    *out = (uint32_t)x;
    return 0;
}

/* The launchers' variables, in the order they are looked for. */
static const char *const rank_vars[][2] = {{"RANK", "WORLD_SIZE"},
                                           {"SLURM_PROCID", "SLURM_NTASKS"},
                                           {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}};

/* Finds rank and world; *source receives the index of the pair used, or -1 for none. */
static int rank_from_env(uint32_t *rank, uint32_t *world, int *source, char *err, size_t len)
{
    *rank = 0;
    *world = 1;
    *source = -1;
    for (size_t i = 0; i < sizeof rank_vars / sizeof rank_vars[0]; i++) {
        const char *r = getenv(rank_vars[i][0]), *w = getenv(rank_vars[i][1]);
        if (!r && !w)
            continue;
        if (!r || !w)
            return gk__error_buf(-EINVAL, err, len, "%s is set without %s (set both or neither)",
                                 r ? rank_vars[i][0] : rank_vars[i][1],
                                 r ? rank_vars[i][1] : rank_vars[i][0]);
        uint32_t rv = 0, wv = 0;
        int rc = env_u32(rank_vars[i][0], &rv, err, len);
        if (rc || (rc = env_u32(rank_vars[i][1], &wv, err, len)))
            return rc;
        if (wv == 0 || rv >= wv)
            return gk__error_buf(-EINVAL, err, len, "%s=%u is not below %s=%u (fix the launcher)",
                                 rank_vars[i][0], rv, rank_vars[i][1], wv);
        *rank = rv;
        *world = wv;
        *source = (int)i;
        return 0;
    }
    return 0;
}

int gk_loader_rank_from_env(uint32_t *rank, uint32_t *world, char *err, size_t err_len)
{
    int source;
    if (!rank || !world)
        return gk__error_buf(-EINVAL, err, err_len,
                             "gk_loader_rank_from_env: rank or world is NULL");
    return rank_from_env(rank, world, &source, err, err_len);
}

int gk_loader_config_from_env(gk_loader_config *cfg, char *found, size_t len)
{
    int rc = sized(cfg, "gk_loader_config");
    if (rc || (rc = gk_logger_from_env(&cfg->logger)))
        return rc;
    uint32_t rank, world;
    int source;
    rc = rank_from_env(&rank, &world, &source, NULL, 0);
    if (rc)
        return rc;
    cfg->rank = rank;
    cfg->world = world;
    char text[160];
    if (source < 0)
        snprintf(text, sizeof text,
                 "no launcher variables (RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS, "
                 "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE): rank 0 of 1, every item");
    else
        snprintf(text, sizeof text, "rank %u of %u from %s/%s: this loader reads 1/%u of the items",
                 rank, world, rank_vars[source][0], rank_vars[source][1], world);
    gk_log(&cfg->logger, GK_LOG_INFO, "loader", "%s", text);
    if (found && len)
        snprintf(found, len, "%s", text);
    return 0;
}

int gk_nvml_config_from_env(gk_nvml_config *cfg)
{
    int rc = sized(cfg, "gk_nvml_config");
    if (rc || (rc = gk_logger_from_env(&cfg->logger)))
        return rc;
    const char *lib = env("GK_NVML_LIBRARY");
    if (lib)
        cfg->library = lib;
    return 0;
}

int gk_host_config_from_env(gk_host_config *cfg)
{
    int rc = sized(cfg, "gk_host_config");
    if (rc)
        return rc;
    const char *root = env("GK_PROC_ROOT");
    if (root)
        cfg->proc_root = root;
    return 0;
}

int gk_monitor_config_from_env(gk_monitor_config *cfg)
{
    int rc = sized(cfg, "gk_monitor_config");
    if (rc || (rc = gk_logger_from_env(&cfg->logger)))
        return rc;
    const char *lib = env("GK_NVML_LIBRARY"), *root = env("GK_PROC_ROOT");
    if (lib)
        cfg->nvml_library = lib;
    if (root)
        cfg->proc_root = root;
    return 0;
}
