/*
 * libFuzzer target for inventory events (events_parse): any bytes a
 * producer publishes must be refused cleanly or accepted within the
 * contract, and what is accepted must survive encode -> parse unchanged,
 * since the stream and the dead-letter list carry the re-encoded form.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stockalert/events.h"
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check((const char *)data, size, false);
	check((const char *)data, size, true);
	return 0;
}
