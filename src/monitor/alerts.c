/* Alert rules: "METRIC{label="value",...} OP VALUE for DURATION". Each tick every rule is
 * checked against the newest point (gauges) or the newest rate (counters) of every matching
 * series, moving that series' instance through inactive -> pending -> firing -> resolved. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "gpukit/error.h"
#include "gpukit/options.h"
#include "monitor_int.h"

const char *gk_alert_state_name(gk_alert_state s)
{
    static const char *const names[] = {"inactive", "pending", "firing", "resolved"};
    return (unsigned)s <= GK_ALERT_RESOLVED ? names[s] : "unknown";
}

static int syntax(char *err, size_t errlen, const char *rule, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int syntax(char *err, size_t errlen, const char *rule, const char *at, const char *fmt, ...)
{
    if (err && errlen) {
        char what[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        snprintf(
            err, errlen,
            "alert rule \"%s\": %s at column %d (try gpukit_gpu_temperature_celsius > 85 for 5m)",
            rule, what, (int)(at - rule) + 1);
    }
    return GK_ESYNTAX;
}

static const char *skip_ws(const char *p)
{
    while (*p && isspace((unsigned char)*p))
        p++;
    return p;
}

static int name_char(char c, int first)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':' ||
           (!first && isdigit((unsigned char)c));
}

/* Parses a rule into r. */
static int parse_rule(const char *rule, gk__rule *r, char *err, size_t errlen)
{
    const char *p = skip_ws(rule);
    size_t n = 0;
    while (name_char(p[n], n == 0))
        n++;
    if (n == 0 || n >= sizeof r->metric)
        return syntax(err, errlen, rule, p, "expected a metric name");
    memcpy(r->metric, p, n);
    r->metric[n] = '\0';
    p = skip_ws(p + n);
    if (*p == '{') {
        p = skip_ws(p + 1);
        while (*p != '}') {
            if (r->nmatchers == GK__MAX_MATCHERS)
                return syntax(err, errlen, rule, p, "more than %d labels", GK__MAX_MATCHERS);
            size_t k = 0;
            while (name_char(p[k], k == 0) && p[k] != ':')
                k++;
            if (k == 0)
                return syntax(err, errlen, rule, p, "expected a label name");
            char *out = r->matchers[r->nmatchers];
            size_t cap = sizeof r->matchers[0], w = 0;
            if (k + 3 >= cap)
                return syntax(err, errlen, rule, p, "label too long");
            memcpy(out, p, k);
            w = k;
            p = skip_ws(p + k);
            if (*p != '=')
                return syntax(err, errlen, rule, p, "expected =");
            p = skip_ws(p + 1);
            if (*p != '"')
                return syntax(err, errlen, rule, p, "expected a quoted value");
            out[w++] = '=';
            out[w++] = '"';
            for (p++; *p && *p != '"'; p++) {
                if (w + 4 >= cap)
                    return syntax(err, errlen, rule, p, "label value too long");
                if (*p == '\\' && p[1]) {
                    out[w++] = *p++; /* keep escapes as written: series labels are escaped too */
                }
                out[w++] = *p;
            }
            if (*p != '"')
                return syntax(err, errlen, rule, p, "unterminated label value");
            out[w++] = '"';
            out[w] = '\0';
            r->nmatchers++;
            p = skip_ws(p + 1);
            if (*p == ',')
                p = skip_ws(p + 1);
            else if (*p != '}')
                return syntax(err, errlen, rule, p, "expected , or }");
        }
        p = skip_ws(p + 1);
    }
    static const struct {
        const char *text;
        gk__op op;
    } ops[] = {{">=", OP_GE}, {"<=", OP_LE}, {"==", OP_EQ},
               {"!=", OP_NE}, {">", OP_GT},  {"<", OP_LT}};
    size_t i;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strncmp(p, ops[i].text, strlen(ops[i].text)) == 0)
            break;
    }
    if (i == sizeof ops / sizeof ops[0])
        return syntax(err, errlen, rule, p, "expected one of > >= < <= == !=");
    r->op = ops[i].op;
    p = skip_ws(p + strlen(ops[i].text));
    char *end;
    r->threshold = strtod(p, &end);
    if (end == p || !isfinite(r->threshold))
        return syntax(err, errlen, rule, p, "expected a number");
    p = skip_ws(end);
    r->for_seconds = 0;
    if (strncmp(p, "for", 3) == 0 && (isspace((unsigned char)p[3]))) {
        p = skip_ws(p + 3);
        char dur[64];
        size_t d = 0;
        while (p[d] && !isspace((unsigned char)p[d]) && d + 1 < sizeof dur) {
            dur[d] = p[d];
            d++;
        }
        dur[d] = '\0';
        if (d == 0 || gk_parse_duration(dur, &r->for_seconds) != 0)
            return syntax(err, errlen, rule, p, "expected a duration such as 30s or 5m");
        p = skip_ws(p + d);
    }
    if (*p)
        return syntax(err, errlen, rule, p, "unexpected text");
    return 0;
}

static int add_alert(gk_monitor *m, const char *name, const char *rule, char *err, size_t errlen);

int gk_monitor_add_alert(gk_monitor *m, const char *name, const char *rule, char *err,
                         size_t errlen)
{
    char msg[GK__ERROR_MAX] = "";
    int rc = add_alert(m, name, rule, msg, sizeof msg);
    if (rc)
        return gk__error_buf(rc, err, errlen, "%s", msg[0] ? msg : gk_strerror(rc));
    if (err && errlen)
        err[0] = '\0';
    return 0;
}

static int add_alert(gk_monitor *m, const char *name, const char *rule, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!m || !rule || gk_metrics_check_name(name) != 0 || strlen(name) >= 96) {
        if (err && errlen)
            snprintf(err, errlen, "alert name \"%s\" is not a metric-style name (try gpu_hot)",
                     name ? name : "(null)");
        return -EINVAL;
    }
    gk__rule *r = gk__calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int rc = parse_rule(rule, r, err, errlen);
    if (rc) {
        free(r);
        return rc;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    pthread_mutex_lock(&m->lock);
    if (m->nrules == GK__MAX_RULES) {
        rc = -ENOSPC;
        free(r);
    } else {
        m->rules[m->nrules++] = r;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void gk__alerts_free(gk_monitor *m)
{
    for (size_t i = 0; i < m->nrules; i++) {
        free(m->rules[i]->inst);
        free(m->rules[i]);
    }
    m->nrules = 0;
}

/* 1 when the label text holds the item `key="value"` exactly. */
static int has_label(const char *labels, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = labels; (p = strstr(p, item)) != NULL; p++) {
        if ((p == labels || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    }
    return 0;
}

static int compare(gk__op op, double v, double t)
{
    switch (op) {
    case OP_GT:
        return v > t;
    case OP_GE:
        return v >= t;
    case OP_LT:
        return v < t;
    case OP_LE:
        return v <= t;
    case OP_EQ:
        return v == t;
    case OP_NE:
        return v != t;
    }
    return 0;
}

/* The value a rule sees: the newest point, or the newest rate of a counter. */
static int current_value(const gk__series *s, int64_t tick_ns, double *v)
{
    if (s->count == 0)
        return 0;
    const gk_series_point *last = &s->ring[(s->head + s->cap - 1) % s->cap];
    if (last->t_ns != tick_ns)
        return 0; /* not read on this tick */
    if (!s->counter) {
        *v = last->value;
        return 1;
    }
    if (s->count < 2)
        return 0;
    return gk__counter_rate(&s->ring[(s->head + s->cap - 2) % s->cap], last, v);
}

static gk__alert_instance *instance(gk__rule *r, size_t series)
{
    for (size_t i = 0; i < r->ninst; i++) {
        if (r->inst[i].series == series)
            return &r->inst[i];
    }
    if (r->ninst == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        gk__alert_instance *v = gk__realloc(r->inst, cap * sizeof *v);
        if (!v)
            return NULL;
        r->inst = v;
        r->cap = cap;
    }
    gk__alert_instance *in = &r->inst[r->ninst++];
    memset(in, 0, sizeof *in);
    in->series = series;
    return in;
}

static void queue_event(gk_monitor *m, const gk__rule *r, const gk__series *s, gk_alert_state state,
                        double value)
{
    if (m->nevents == m->events_cap) {
        size_t cap = m->events_cap ? m->events_cap * 2 : 8;
        gk__alert_event *v = gk__realloc(m->events, cap * sizeof *v);
        if (!v)
            return;
        m->events = v;
        m->events_cap = cap;
    }
    gk__alert_event *e = &m->events[m->nevents++];
    snprintf(e->rule, sizeof e->rule, "%s", r->name);
    snprintf(e->labels, sizeof e->labels, "%s", s->labels);
    e->state = state;
    e->value = value;
}

static void step(gk_monitor *m, gk__rule *r, size_t idx, const gk__series *s, double v)
{
    gk__alert_instance *in = instance(r, idx);
    if (!in)
        return;
    in->value = v;
    int holds = compare(r->op, v, r->threshold);
    int64_t now = m->tick_mono_ns;
    gk_alert_state before = in->state;
    if (holds) {
        if (in->state == GK_ALERT_INACTIVE || in->state == GK_ALERT_RESOLVED) {
            in->state = GK_ALERT_PENDING;
            in->since_ns = now;
        }
        if (in->state == GK_ALERT_PENDING && (double)(now - in->since_ns) / 1e9 >= r->for_seconds)
            in->state = GK_ALERT_FIRING;
    } else if (in->state == GK_ALERT_FIRING) {
        in->state = GK_ALERT_RESOLVED;
    } else {
        in->state = GK_ALERT_INACTIVE;
    }
    if (in->state != before && !(before == GK_ALERT_RESOLVED && in->state == GK_ALERT_INACTIVE))
        queue_event(m, r, s, in->state, v);
}

void gk__alerts_evaluate(gk_monitor *m)
{
    for (size_t ri = 0; ri < m->nrules; ri++) {
        gk__rule *r = m->rules[ri];
        for (size_t si = 0; si < m->nseries; si++) {
            const gk__series *s = m->series[si];
            if (strcmp(s->name, r->metric) != 0)
                continue;
            size_t k = 0;
            while (k < r->nmatchers && has_label(s->labels, r->matchers[k]))
                k++;
            double v;
            if (k == r->nmatchers && current_value(s, m->tick_t_ns, &v))
                step(m, r, si, s, v);
        }
    }
}

void gk__alerts_report(gk_monitor *m, gk__alert_event *events, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const gk__alert_event *e = &events[i];
        gk_log_level lvl = (e->state == GK_ALERT_FIRING || e->state == GK_ALERT_RESOLVED)
                               ? GK_LOG_WARN
                               : GK_LOG_INFO;
        gk_log(&m->cfg.logger, lvl, "monitor", "alert %s %s: {%s} value=%g", e->rule,
               gk_alert_state_name(e->state), e->labels, e->value);
        if (m->cfg.on_alert)
            m->cfg.on_alert(m->cfg.alert_user, e->rule, e->labels, e->state, e->value);
    }
}

gk_alert_state gk_monitor_alert_state(gk_monitor *m, const char *name, const char *labels)
{
    if (!m || !name)
        return GK_ALERT_INACTIVE;
    if (!labels)
        labels = "";
    gk_alert_state st = GK_ALERT_INACTIVE;
    pthread_mutex_lock(&m->lock);
    for (size_t ri = 0; ri < m->nrules; ri++) {
        const gk__rule *r = m->rules[ri];
        if (strcmp(r->name, name) != 0)
            continue;
        for (size_t i = 0; i < r->ninst; i++) {
            if (strcmp(m->series[r->inst[i].series]->labels, labels) == 0)
                st = r->inst[i].state;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return st;
}
