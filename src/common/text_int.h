/* Text made safe for a terminal (the escapes of gk_text_escape in gpukit/output.h), for the
 * library's own text writers. */
#ifndef GK_COMMON_TEXT_INT_H
#define GK_COMMON_TEXT_INT_H

#include <stddef.h>
#include <stdio.h>

/* The escape of the character at s into `rep` (NUL-terminated); *used gets its byte count
 * (1 to 4). Returns 1 when it must be escaped, 0 when it passes unchanged. A newline passes
 * when keep_newline is set. s must hold a NUL or 4 readable bytes. */
int gk__text_escape_char(const unsigned char *s, size_t *used, char rep[8], int keep_newline);

/* A stream that writes to `out` with every control character but the newline escaped, for text
 * whose line structure is the writer's own (a report). Flush and fclose it before using `out`
 * again; fclose does not close `out`. NULL on -ENOMEM. */
FILE *gk__text_safe_stream(FILE *out);

#endif
