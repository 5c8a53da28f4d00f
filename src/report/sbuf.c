/* A small growable string with the escaping the recording writer and the report renderers need:
 * JSON string literals (valid UTF-8 out whatever comes in), JSON numbers, and HTML text. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "report/report_int.h"

void gk__sbuf_free(gk__sbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

static int reserve(gk__sbuf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *s = gk__realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void gk__sbuf_add(gk__sbuf *b, const char *s, size_t n)
{
    if (reserve(b, n))
        return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void gk__sbuf_puts(gk__sbuf *b, const char *s)
{
    gk__sbuf_add(b, s, strlen(s));
}

void gk__sbuf_printf(gk__sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && reserve(b, (size_t)n) == 0) {
        vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

/* Length of a valid UTF-8 sequence at s (1-4), or 0 when invalid; its code point in *cp_out
 * (may be NULL). */
static size_t utf8_len(const unsigned char *s, unsigned *cp_out)
{
    if (cp_out)
        *cp_out = s[0];
    if (s[0] < 0x80)
        return 1;
    size_t n;
    unsigned min;
    unsigned cp;
    if ((s[0] & 0xE0) == 0xC0) {
        n = 2, min = 0x80, cp = s[0] & 0x1F;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3, min = 0x800, cp = s[0] & 0x0F;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4, min = 0x10000, cp = s[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    if (cp_out)
        *cp_out = cp;
    return n;
}

void gk__sbuf_json_str(gk__sbuf *b, const char *s)
{
    gk__sbuf_add(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            gk__sbuf_add(b, esc, 2);
            p++;
        } else if (c == '\n') {
            gk__sbuf_add(b, "\\n", 2);
            p++;
        } else if (c == '\t') {
            gk__sbuf_add(b, "\\t", 2);
            p++;
        } else if (c == '\r') {
            gk__sbuf_add(b, "\\r", 2);
            p++;
        } else if (c < 0x20 || c == 0x7F) {
            gk__sbuf_printf(b, "\\u%04x", c);
            p++;
        } else {
            size_t n = utf8_len(p, NULL);
            if (n == 0) {
                gk__sbuf_puts(b, "\\ufffd");
                p++;
            } else {
                gk__sbuf_add(b, (const char *)p, n);
                p += n;
            }
        }
    }
    gk__sbuf_add(b, "\"", 1);
}

void gk__sbuf_json_num(gk__sbuf *b, double v)
{
    if (!isfinite(v))
        gk__sbuf_puts(b, "null");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        gk__sbuf_printf(b, "%.0f", v); /* byte counts and other integers stay exact */
    else
        gk__sbuf_printf(b, "%.12g", v);
}

void gk__sbuf_html(gk__sbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned cp;
        size_t n = utf8_len(p, &cp);
        if (n == 0 || (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE)
            gk__sbuf_puts(b, "&#xFFFD;"); /* not UTF-8, or a noncharacter */
        else if (cp == '&')
            gk__sbuf_puts(b, "&amp;");
        else if (cp == '<')
            gk__sbuf_puts(b, "&lt;");
        else if (cp == '>')
            gk__sbuf_puts(b, "&gt;");
        else if (cp == '"')
            gk__sbuf_puts(b, "&quot;");
        else if (cp == '\'')
            gk__sbuf_puts(b, "&#39;");
        else if ((cp < 0x20 && cp != '\t' && cp != '\n') || (cp >= 0x7F && cp <= 0x9F))
            gk__sbuf_printf(b, "\\x%02x", cp); /* control characters are not HTML text */
        else
            gk__sbuf_add(b, (const char *)p, n);
        p += n ? n : 1;
    }
}
