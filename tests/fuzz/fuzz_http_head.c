/*
 * libFuzzer target for the request-framing rules (hdrcheck.c). The input is
 * a request head as a client sends it; this harness files its lines the way
 * lws 4.1.6 does for the check (names lower-cased up to the first ':', the
 * two framing headers as known values, repeats joined by ',', every other
 * name as an unknown header stored verbatim) and holds the check to its
 * contract: what it accepts has a digits-only length and no
 * Transfer-Encoding, and no framing header hides behind blanks it probes.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stockalert/buf.h"
#include "stockalert/hdrcheck.h"
#include "stockalert/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_NAMES 64

struct head {
	struct buf cl, te;
	bool has_cl, has_te;
	const char *names[MAX_NAMES];
	size_t lens[MAX_NAMES];
	size_t n;
};

static bool has_name(void *arg, const char *name, size_t len)
{
	const struct head *h = arg;
	for (size_t i = 0; i < h->n; i++)
		if (h->lens[i] == len && memcmp(h->names[i], name, len) == 0)
			return true;
	return false;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Whether name (ending in ':') is field with up to lead_max blanks before
 * it and trail_max before the colon. */
static bool disguise_of(const char *name, size_t len, const char *field)
{
	size_t a = 0, b = len - 1, flen = strlen(field);
	while (a < b && blank(name[a]))
		a++;
	while (b > a && blank(name[b - 1]))
		b--;
	return b - a == flen && memcmp(name + a, field, flen) == 0 && a <= HDRCHECK_LEAD_MAX &&
	       len - 1 - b <= HDRCHECK_TRAIL_MAX;
}

static void file_line(struct head *h, char *line, size_t len)
{
	char *colon = memchr(line, ':', len);
	if (!colon)
		return;
	size_t nlen = (size_t)(colon - line) + 1;
	for (size_t i = 0; i < nlen; i++)
		if (line[i] >= 'A' && line[i] <= 'Z')
			line[i] = (char)(line[i] - 'A' + 'a');
	const char *v = colon + 1;
	size_t vlen = len - nlen;
	while (vlen && *v == ' ') {
		v++;
		vlen--;
	}
	struct buf *known = NULL;
	if (nlen == 15 && memcmp(line, "content-length:", 15) == 0) {
		known = &h->cl;
		if (h->has_cl)
			buf_puts(known, ",");
		h->has_cl = true;
	} else if (nlen == 18 && memcmp(line, "transfer-encoding:", 18) == 0) {
		known = &h->te;
		if (h->has_te)
			buf_puts(known, ",");
		h->has_te = true;
	}
	if (known) {
		buf_append(known, v, vlen);
		return;
	}
	if (h->n < MAX_NAMES) {
		h->names[h->n] = line;
		h->lens[h->n++] = nlen;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = mem_alloc(size + 1);
	struct head h = {.n = 0};
	long long clen;
	const char *why = NULL;

	memcpy(copy, data, size);
	copy[size] = '\0';
	if (hdrcheck_content_length(copy, &clen) == 0 && (clen < 0 || size == 0))
		__builtin_trap();

	buf_init(&h.cl);
	buf_init(&h.te);
	/* Lines end at LF (a CR before it dropped); the first is the request
	 * line. Values stop at a NUL, as lws hands them over as C strings. */
	size_t start = 0;
	bool first = true;
	for (size_t i = 0; i <= size; i++) {
		if (i < size && copy[i] != '\n')
			continue;
		size_t end = i;
		if (end > start && copy[end - 1] == '\r')
			end--;
		if (!first)
			file_line(&h, copy + start, end - start);
		first = false;
		start = i + 1;
	}
	struct hdrcheck_src src = {
	    .content_length = h.has_cl ? h.cl.data ? h.cl.data : "" : NULL,
	    .transfer_encoding = h.has_te ? h.te.data ? h.te.data : "" : NULL,
	    .has_unknown = has_name,
	    .arg = &h,
	};
	enum hdrcheck_result r = hdrcheck_framing(&src, &clen, &why);
	if (!why || (r != HDRCHECK_OK && !why[0]))
		__builtin_trap();
	if (r == HDRCHECK_OK) {
		if (h.has_te || (h.has_cl != (clen >= 0)))
			__builtin_trap();
		if (h.has_cl)
			for (const char *p = src.content_length; *p; p++)
				if (*p < '0' || *p > '9')
					__builtin_trap();
		for (size_t i = 0; i < h.n; i++)
			if (disguise_of(h.names[i], h.lens[i], "content-length") ||
			    disguise_of(h.names[i], h.lens[i], "transfer-encoding"))
				__builtin_trap();
	} else if (r == HDRCHECK_CHUNKED) {
		if (!h.has_te || h.has_cl)
			__builtin_trap();
	}
	buf_free(&h.cl);
	buf_free(&h.te);
	mem_free(copy);
	return 0;
}
