#ifndef STOCKALERT_ERRBUF_H
#define STOCKALERT_ERRBUF_H
/*
 * The one way helpers report why they failed: they write a one-line reason
 * into the caller's buffer (like redis's anetSetError). A NULL or empty
 * buffer is allowed and left alone.
 */
#include <stddef.h>

void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Explains a jansson parse error of text[0..len): a number too big names the
 * member it belongs to ("stock: number out of range"), anything else is
 * "<what>invalid JSON: <reason> (at byte N)"; what may be "" or "body: ".
 */
struct json_error_t;
void errbuf_json(char *err, size_t errlen, const char *what, const struct json_error_t *je,
		 const char *text, size_t len);

#endif
