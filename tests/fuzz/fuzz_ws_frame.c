/*
 * libFuzzer target for WebSocket client messages. The parser lives inline
 * (static) in src/ws.c, so this mirrors what handle_message,
 * handle_subscribe and handle_refresh do with a frame's bytes through
 * jansson: load with JSON_REJECT_DUPLICATES, read "type", then "product_id"
 * or "token", and build the reply the server would send. Keep it in step
 * with src/ws.c.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "stockalert/subs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encodes a reply as ws.c's send_json does, and checks it is one line of JSON. */
static void reply(json_t *j)
{
	char *text;

	if (!j)
		__builtin_trap();
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text || text[0] != '{' || strchr(text, '\n'))
		__builtin_trap();
	free(text);
}

static void on_refresh(json_t *msg)
{
	const char *tok = json_string_value(json_object_get(msg, "token"));

	if (!tok) {
		reply(json_pack("{s:s,s:s,s:s}", "type", "error", "code", "bad_message", "message",
				"refresh needs a string \"token\""));
		return;
	}
	/* ws.c hands auth_verify(tok, strlen(tok)); jansson refuses \u0000 in
	 * strings by default, so strlen must see the whole token. */
	if (strlen(tok) != json_string_length(json_object_get(msg, "token")))
		__builtin_trap();
}

static void on_subscribe(json_t *msg, bool subscribe)
{
	json_t *pid = json_object_get(msg, "product_id");
	int64_t product;

	if (!json_is_integer(pid) || json_integer_value(pid) <= 0 ||
	    json_integer_value(pid) > SUBS_PRODUCT_ID_MAX) {
		reply(json_pack("{s:s,s:s,s:s}", "type", "error", "code", "bad_message", "message",
				SUBS_PRODUCT_ID_EXPECTED));
		return;
	}
	product = (int64_t)json_integer_value(pid);
	if (product <= 0 || product > SUBS_PRODUCT_ID_MAX)
		__builtin_trap();
	reply(json_pack("{s:s,s:I}", "type", subscribe ? "subscribed" : "unsubscribed",
			"product_id", (json_int_t)product));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *msg = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = json_string_value(json_object_get(msg, "type"));

	if (!json_is_object(msg) || !type) {
		json_decref(msg);
		reply(json_pack("{s:s,s:s,s:s}", "type", "error", "code", "bad_message", "message",
				"expected a JSON object with a string \"type\""));
		return 0;
	}
	if (strcmp(type, "ping") == 0)
		reply(json_pack("{s:s}", "type", "pong"));
	else if (strcmp(type, "refresh") == 0)
		on_refresh(msg);
	else if (strcmp(type, "subscribe") == 0 || strcmp(type, "unsubscribe") == 0)
		on_subscribe(msg, type[0] == 's');
	else
		reply(json_pack("{s:s,s:s,s:s}", "type", "error", "code", "unknown_type", "message",
				"unknown message type"));
	json_decref(msg);
	return 0;
}
