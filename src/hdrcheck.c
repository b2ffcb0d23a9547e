#include "stockalert/hdrcheck.h"

#include <string.h>

int hdrcheck_content_length(const char *v, long long *out)
{
	long long n = 0;
	size_t i = 0;

	/* RFC 9112: 1*DIGIT. strtoll would take a sign, blanks and more. */
	for (; v[i]; i++) {
		if (v[i] < '0' || v[i] > '9' || i == HDRCHECK_CL_DIGITS_MAX)
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	if (i == 0)
		return -1;
	*out = n;
	return 0;
}

/* The blank string number k (0 = ""), over {SP, HT}, shortest first; its
 * length, or -1 past the last one of at most max blanks. */
static int blanks(unsigned k, unsigned max, char *out)
{
	unsigned len = 0, first = 0;

	/* Strings of length len are numbers first .. first + 2^len - 1. */
	while (k >= first + (1u << len)) {
		first += 1u << len;
		if (++len > max)
			return -1;
	}
	for (unsigned i = 0; i < len; i++)
		out[i] = (k - first) >> i & 1u ? '\t' : ' ';
	return (int)len;
}

static bool disguised(const struct hdrcheck_src *src, const char *field)
{
	char name[HDRCHECK_LEAD_MAX + 32 + HDRCHECK_TRAIL_MAX + 2];
	size_t flen = strlen(field);

	if (!src->has_unknown)
		return false;
	for (unsigned lk = 0;; lk++) {
		int lead = blanks(lk, HDRCHECK_LEAD_MAX, name);
		if (lead < 0)
			return false;
		memcpy(name + lead, field, flen);
		for (unsigned tk = lk ? 0 : 1;; tk++) {
			char *t = name + (size_t)lead + flen;
			int trail = blanks(tk, HDRCHECK_TRAIL_MAX, t);
			if (trail < 0)
				break;
			t[trail] = ':';
			if (src->has_unknown(src->arg, name,
					     (size_t)lead + flen + (size_t)trail + 1))
				return true;
		}
	}
}

enum hdrcheck_result hdrcheck_framing(const struct hdrcheck_src *src, long long *content_length,
				      const char **why)
{
	*content_length = -1;
	if (disguised(src, "transfer-encoding") || disguised(src, "content-length")) {
		*why = "blanks in a Content-Length or Transfer-Encoding header name";
		return HDRCHECK_BAD;
	}
	if (src->transfer_encoding && src->content_length) {
		*why = "both Transfer-Encoding and Content-Length";
		return HDRCHECK_BAD;
	}
	if (src->transfer_encoding) {
		if (!src->transfer_encoding[0]) {
			*why = "empty Transfer-Encoding";
			return HDRCHECK_BAD;
		}
		*why = "chunked request bodies are not accepted; send Content-Length";
		return HDRCHECK_CHUNKED;
	}
	if (src->content_length && hdrcheck_content_length(src->content_length, content_length)) {
		*content_length = -1;
		*why = "invalid Content-Length (one value, digits only)";
		return HDRCHECK_BAD;
	}
	*why = "";
	return HDRCHECK_OK;
}
