#ifndef STOCKALERT_HDRCHECK_H
#define STOCKALERT_HDRCHECK_H
/*
 * The request-framing rules lws 4.1.6 does not enforce, as one pure check
 * over what lws exposes of a parsed request head (no raw header block and no
 * list of unknown header names: only the value of a header it knows and
 * whether it stored an unknown one under an exact name).
 *
 * Refused (400, then close: the bytes after such a head cannot be trusted
 * to be the next request):
 *   - Content-Length that is not 1*DIGIT ("+46", "4 6", "0x2e", ""), or
 *     given twice (lws joins repeats with ',');
 *   - Transfer-Encoding and Content-Length together, or an empty
 *     Transfer-Encoding (what a folded "Transfer-Encoding:\r\n chunked"
 *     leaves);
 *   - a framing header in disguise: "Content-Length" or "Transfer-Encoding"
 *     with blanks (SP/HT) before the colon or before the name (the
 *     obs-fold continuation " Transfer-Encoding: chunked"). lws stores those
 *     as unknown headers and frames the body by whatever else it sees.
 * A Transfer-Encoding alone is HDRCHECK_CHUNKED: lws 4.1.6 never completes
 * such a body, so the caller answers 411.
 */
#include <stdbool.h>
#include <stddef.h>

/* Blanks probed before a framing header's name, and before its colon. */
#define HDRCHECK_LEAD_MAX  2
#define HDRCHECK_TRAIL_MAX 3

/* The longest Content-Length accepted, in digits (fits a long long). */
#define HDRCHECK_CL_DIGITS_MAX 18

struct hdrcheck_src {
	const char *content_length;    /* lws's value (repeats joined by ','), NULL if absent */
	const char *transfer_encoding; /* NULL if absent; "" if present and empty */
	/* Whether lws stored an unknown header under exactly this name (lower
	 * case, ending in ':', len bytes); NULL: none is ever present. */
	bool (*has_unknown)(void *arg, const char *name, size_t len);
	void *arg;
};

enum hdrcheck_result {
	HDRCHECK_OK = 0,       /* *content_length set (-1: no body) */
	HDRCHECK_BAD = -1,     /* 400 and close; *why says which rule */
	HDRCHECK_CHUNKED = -2, /* Transfer-Encoding: 411 and close */
};

enum hdrcheck_result hdrcheck_framing(const struct hdrcheck_src *src, long long *content_length,
				      const char **why);

/* Parses a Content-Length value: 1 to HDRCHECK_CL_DIGITS_MAX digits and
 * nothing else. Returns 0 and sets *out, or -1. */
int hdrcheck_content_length(const char *v, long long *out);

#endif
