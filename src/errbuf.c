#include "stockalert/errbuf.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* The name of the object member whose value ends near pos: back to the ':'
 * before it, then the quoted key before that. Empty if there is none (an
 * array element, or a key with escapes). */
static void key_before(const char *text, size_t len, size_t pos, char *key, size_t keylen)
{
	key[0] = '\0';
	if (pos > len)
		pos = len;
	while (pos > 0 && text[pos - 1] != ':') {
		if (text[pos - 1] == ',' || text[pos - 1] == '{' || text[pos - 1] == '[')
			return;
		pos--;
	}
	if (pos == 0)
		return;
	pos--; /* the ':' */
	while (pos > 0 && (text[pos - 1] == ' ' || text[pos - 1] == '\t' || text[pos - 1] == '\n' ||
			   text[pos - 1] == '\r'))
		pos--;
	if (pos == 0 || text[pos - 1] != '"')
		return;
	size_t end = --pos;
	while (pos > 0 && text[pos - 1] != '"') {
		if (text[pos - 1] == '\\')
			return;
		pos--;
	}
	if (pos == 0)
		return;
	size_t n = end - pos;
	if (n == 0 || n >= keylen)
		return;
	memcpy(key, text + pos, n);
	key[n] = '\0';
}

void errbuf_json(char *err, size_t errlen, const char *what, const json_error_t *je,
		 const char *text, size_t len)
{
	if (json_error_code(je) == json_error_numeric_overflow) {
		char key[64];
		key_before(text, len, (size_t)(je->position > 0 ? je->position : 0), key,
			   sizeof key);
		if (key[0]) {
			errbuf_set(err, errlen, "%s: number out of range", key);
			return;
		}
	}
	errbuf_set(err, errlen, "%sinvalid JSON: %s (at byte %d)", what, je->text, je->position);
}
