/*
 * Inventory events: strict parsing of what producers publish, and the
 * classification of a stock change.
 *
 * Every instance must reach the same verdict on the same bytes, so nothing
 * here is lenient: a real where an integer belongs, a string "5", or a
 * number jansson cannot hold exactly is refused rather than coerced.
 */
#include "stockalert/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "stockalert/errbuf.h"
#include "stockalert/kind.h"
#include "stockalert/mem.h"

/* Matches the HTTP body limit: an event is a few dozen bytes, anything
 * this big is a mistake or an attack, and jansson would build the whole
 * tree before we could look at it. */
#define EVENTS_INPUT_MAX (64 * 1024)
/* 3000-01-01T00:00:00Z in ms: later than any honest clock, and small
 * enough that ts arithmetic downstream never overflows. */
#define EVENTS_TS_MAX	 32503680000000LL

static bool id_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == ':' || c == '-';
}

static int parse_id(json_t *v, struct inv_event *ev, char *err, size_t errlen)
{
	const char *s = json_string_value(v);
	size_t n = s ? json_string_length(v) : 0;

	if (!s || n == 0 || n > EVENTS_ID_MAX)
		goto err;
	for (size_t i = 0; i < n; i++)
		if (!id_char_ok(s[i]))
			goto err;
	memcpy(ev->event_id, s, n);
	ev->event_id[n] = '\0';
	return 0;
err:
	errbuf_set(err, errlen, "event_id: expected a string of 1-%d characters of [A-Za-z0-9_.:-]",
		   EVENTS_ID_MAX);
	return -1;
}

/* Reads an integer field in [lo, hi]; v may be NULL only if the caller
 * has already handled absence. */
static int parse_int(json_t *v, const char *field, long long lo, long long hi, int64_t *out,
		     char *err, size_t errlen)
{
	json_int_t x;

	if (!json_is_integer(v))
		goto err;
	x = json_integer_value(v);
	if (x < lo || x > hi)
		goto err;
	*out = (int64_t)x;
	return 0;
err:
	errbuf_set(err, errlen, "%s: expected an integer between %lld and %lld", field, lo, hi);
	return -1;
}

void events_id_key(const char *id, char *out, size_t outlen)
{
	size_t n = strlen(id);
	if (n >= 2 && strcmp(id + n - 2, ":i") == 0)
		snprintf(out, outlen, "{%s}", id);
	else
		snprintf(out, outlen, "%s", id);
}

int events_parse(const char *json, size_t len, bool allow_missing_id, struct inv_event *ev,
		 char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = NULL;
	json_t *v;

	memset(ev, 0, sizeof *ev);
	if (len > EVENTS_INPUT_MAX) {
		errbuf_set(err, errlen, "event: larger than %d bytes", EVENTS_INPUT_MAX);
		goto err;
	}
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		errbuf_json(err, errlen, "", &jerr, json, len);
		goto err;
	}
	if (!json_is_object(root)) {
		errbuf_set(err, errlen, "event: expected a JSON object");
		goto err;
	}

	v = json_object_get(root, "event_id");
	if (v) {
		if (parse_id(v, ev, err, errlen) < 0)
			goto err;
	} else if (!allow_missing_id) {
		errbuf_set(err, errlen, "event_id: required");
		goto err;
	}

	v = json_object_get(root, "product_id");
	if (!v) {
		errbuf_set(err, errlen, "product_id: required");
		goto err;
	}
	if (parse_int(v, "product_id", 1, SUBS_PRODUCT_ID_MAX, &ev->product_id, err, errlen) < 0)
		goto err;

	v = json_object_get(root, "stock");
	if (!v) {
		errbuf_set(err, errlen, "stock: required");
		goto err;
	}
	if (parse_int(v, "stock", -EVENTS_STOCK_LIMIT, EVENTS_STOCK_LIMIT, &ev->stock, err,
		      errlen) < 0)
		goto err;

	/* null is how many serialisers spell "not known": same as absent. */
	v = json_object_get(root, "prev_stock");
	if (v && !json_is_null(v)) {
		if (parse_int(v, "prev_stock", -EVENTS_STOCK_LIMIT, EVENTS_STOCK_LIMIT,
			      &ev->prev_stock, err, errlen) < 0)
			goto err;
		ev->has_prev = true;
	}

	v = json_object_get(root, "ts");
	if (v && !json_is_null(v)) {
		if (parse_int(v, "ts", 0, EVENTS_TS_MAX, &ev->ts_ms, err, errlen) < 0)
			goto err;
		ev->has_ts = true;
	}

	json_decref(root);
	return 0;
err:
	json_decref(root);
	memset(ev, 0, sizeof *ev);
	return -1;
}

char *events_encode(const struct inv_event *ev)
{
	json_t *o = json_object();
	char *text = NULL;
	char *out = NULL;

	/* An id-less event (allowed only before the HTTP API names it) is
	 * encoded without the field rather than as "", which would not parse. */
	if (ev->event_id[0] &&
	    json_object_set_new(o, "event_id",
				json_stringn(ev->event_id, strnlen(ev->event_id, EVENTS_ID_MAX))) <
		0)
		goto err;
	if (json_object_set_new(o, "product_id", json_integer((json_int_t)ev->product_id)) < 0 ||
	    json_object_set_new(o, "stock", json_integer((json_int_t)ev->stock)) < 0)
		goto err;
	if (ev->has_prev &&
	    json_object_set_new(o, "prev_stock", json_integer((json_int_t)ev->prev_stock)) < 0)
		goto err;
	if (ev->has_ts && json_object_set_new(o, "ts", json_integer((json_int_t)ev->ts_ms)) < 0)
		goto err;
	text = json_dumps(o, JSON_COMPACT);
	if (!text)
		goto err;
	out = mem_strdup(text);
	/* jansson allocated it with its own (default: malloc) allocator. */
	free(text);
err:
	json_decref(o);
	return out;
}

/* The rule's twin is the processing script (src/lua/process.lua), which
 * decides once in Redis which alert an event is; it_classify runs both over
 * tests/cases/classify.txt. Change them together. */
unsigned events_classify(int64_t prev, int64_t stock, int64_t threshold)
{
	if (prev <= 0 && stock > 0)
		return SUBS_BACK_IN_STOCK;
	if (prev > 0 && stock <= 0)
		return SUBS_SOLD_OUT;
	/* Only the crossing alerts: a drop that starts already at or below
	 * the threshold was announced when it crossed. */
	if (prev > threshold && threshold >= stock && stock > 0)
		return SUBS_LOW_STOCK;
	return 0;
}
