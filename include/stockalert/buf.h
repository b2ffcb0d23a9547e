#ifndef STOCKALERT_BUF_H
#define STOCKALERT_BUF_H
/* A growable byte buffer, always NUL-terminated after len bytes. */
#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append */
	size_t len; /* bytes used, excluding the terminating NUL */
	size_t cap; /* bytes allocated */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string body (no quotes), escaping as RFC 8259 asks. */
void buf_json_escape(struct buf *b, const char *s);

#endif
