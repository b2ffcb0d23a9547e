/*
 * One alert: its id, its JSON frame, its history record (see alert.h).
 */
#include "stockalert/alert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/subs.h"

/* Digits only, at least one: strtoull alone would take a sign or spaces. */
static bool digits_start(const char *s)
{
	return *s >= '0' && *s <= '9';
}

int alert_id_parse(const char *id, uint64_t *order)
{
	char *end;

	if (!id || !digits_start(id))
		return -1;
	errno = 0;
	unsigned long long ms = strtoull(id, &end, 10);
	if (errno || *end != '-' || ms >= (1ull << (64 - ALERT_SEQ_BITS)))
		return -1;
	const char *s = end + 1;
	if (!digits_start(s))
		return -1;
	unsigned long long seq = strtoull(s, &end, 10);
	if (errno || *end || seq >= (1ull << ALERT_SEQ_BITS))
		return -1;
	*order = (ms << ALERT_SEQ_BITS) | seq;
	return 0;
}

json_t *alert_json(const char *id, unsigned kind, int64_t product_id, const char *name,
		   int64_t stock, int64_t prev_stock, const char *event_id, int64_t ts)
{
	json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:I}", "type", "alert", "id", id,
			      "kind", subs_kind_name(kind), "product_id", (json_int_t)product_id,
			      "stock", (json_int_t)stock, "prev_stock", (json_int_t)prev_stock,
			      "event_id", event_id, "ts", (json_int_t)ts);
	if (j && name && *name)
		json_object_set_new(j, "name", json_string(name));
	return j;
}

static const char *reply_str(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_STRING ? r->str : "";
}

static const char *field(const redisReply *fields, const char *name)
{
	if (fields->type != REDIS_REPLY_ARRAY)
		return "";
	for (size_t i = 0; i + 1 < fields->elements; i += 2)
		if (fields->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(fields->element[i]->str, name) == 0)
			return reply_str(fields->element[i + 1]);
	return "";
}

bool alert_entry_parse(const redisReply *e, struct alert_entry *out)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    alert_id_parse(reply_str(e->element[0]), &out->order) != 0)
		return false;
	const redisReply *f = e->element[1];
	out->id = reply_str(e->element[0]);
	out->kind = subs_kind_parse(field(f, "kind"));
	out->product_id = strtoll(field(f, "product_id"), NULL, 10);
	out->stock = strtoll(field(f, "stock"), NULL, 10);
	out->prev = strtoll(field(f, "prev"), NULL, 10);
	out->thr = (int)strtol(field(f, "thr"), NULL, 10);
	out->name = field(f, "name");
	out->event_id = field(f, "event_id");
	out->ts = strtoll(field(f, "ts"), NULL, 10);
	out->fair = strcmp(field(f, "fair"), "1") == 0;
	return out->kind != 0;
}
