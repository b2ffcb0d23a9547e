/*
 * libFuzzer target for inventory events (events_parse): any bytes a
 * producer publishes must be refused cleanly or accepted within the
 * contract, and what is accepted must survive encode -> parse unchanged,
 * since the stream and the dead-letter list carry the re-encoded form.
 * An accepted id's key form (events_id_key) is the id or "{id}", never one
 * that ends in ":i"; and the bytes as a log line carries them (log_escape)
 * hold no control character, in JSON decode to the text form. The
 * subscription change notice (subs_change_parse) is a pub/sub payload too:
 * what it accepts names a user and a product id within the contract.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "stockalert/buf.h"
#include "stockalert/events.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/subs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool id_ok(const char *id, bool allow_missing_id)
{
	size_t n = strnlen(id, EVENTS_ID_MAX + 1);

	if (n == 0)
		return allow_missing_id;
	if (n > EVENTS_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-",
			    id[i]))
			return false;
	return true;
}

static void check(const char *json, size_t size, bool allow_missing_id)
{
	struct inv_event ev, back;
	char err[256];
	char *text;

	memset(err, 'x', sizeof err);
	if (events_parse(json, size, allow_missing_id, &ev, err, sizeof err) != 0) {
		/* A refusal explains itself: a NUL-terminated, non-empty message. */
		if (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0')
			__builtin_trap();
		return;
	}
	if (!id_ok(ev.event_id, allow_missing_id))
		__builtin_trap();
	if (ev.product_id < 1 || ev.product_id > SUBS_PRODUCT_ID_MAX)
		__builtin_trap();
	if (ev.stock < -EVENTS_STOCK_LIMIT || ev.stock > EVENTS_STOCK_LIMIT)
		__builtin_trap();
	if (ev.has_prev &&
	    (ev.prev_stock < -EVENTS_STOCK_LIMIT || ev.prev_stock > EVENTS_STOCK_LIMIT))
		__builtin_trap();
	if (ev.has_ts && ev.ts_ms < 0)
		__builtin_trap();

	if (ev.event_id[0]) {
		char k[EVENTS_ID_KEY_MAX + 1];
		size_t n = strlen(ev.event_id);
		events_id_key(ev.event_id, k, sizeof k);
		size_t kn = strlen(k);
		bool braced = kn == n + 2 && k[0] == '{' && k[kn - 1] == '}' &&
			      memcmp(k + 1, ev.event_id, n) == 0;
		if (!braced && strcmp(k, ev.event_id) != 0)
			__builtin_trap();
		if (kn >= 2 && strcmp(k + kn - 2, ":i") == 0)
			__builtin_trap();
	}

	text = events_encode(&ev);
	if (!text)
		__builtin_trap();
	if (events_parse(text, strlen(text), allow_missing_id, &back, err, sizeof err) != 0)
		__builtin_trap();
	if (strcmp(ev.event_id, back.event_id) != 0 || ev.product_id != back.product_id ||
	    ev.stock != back.stock || ev.has_prev != back.has_prev ||
	    (ev.has_prev && ev.prev_stock != back.prev_stock) || ev.has_ts != back.has_ts ||
	    (ev.has_ts && ev.ts_ms != back.ts_ms))
		__builtin_trap();
	mem_free(text);
}

static void check_log(const char *bytes, size_t size)
{
	struct buf text, json;
	buf_init(&text);
	buf_init(&json);
	log_escape(&text, bytes, size, false);
	log_escape(&json, bytes, size, true);
	for (size_t i = 0; i < text.len; i++)
		if ((unsigned char)text.data[i] < 0x20 || text.data[i] == 0x7f)
			__builtin_trap();
	buf_puts(&text, "");
	char *doc = mem_alloc(json.len + 3);
	doc[0] = '"';
	memcpy(doc + 1, json.data ? json.data : "", json.len);
	doc[json.len + 1] = '"';
	doc[json.len + 2] = '\0';
	json_t *v = json_loads(doc, JSON_DECODE_ANY, NULL);
	if (!v || strcmp(json_string_value(v), text.data) != 0)
		__builtin_trap();
	json_decref(v);
	mem_free(doc);
	buf_free(&text);
	buf_free(&json);
}

static void check_change(const char *payload, size_t size)
{
	struct subs_change c;

	if (subs_change_parse(payload, size, &c) != 0)
		return;
	if (!c.user || !subs_product_id_valid(c.entry.product_id) ||
	    (c.entry.kinds & ~(unsigned)SUBS_ALL_KINDS) != 0)
		__builtin_trap();
	subs_change_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_log((const char *)data, size);
	check_change((const char *)data, size);
	check((const char *)data, size, false);
	check((const char *)data, size, true);
	return 0;
}
