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

#endif
