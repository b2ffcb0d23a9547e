#include "alerts_int.h"

int64_t alerts_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void alerts_maybe_free(struct alerts *a)
{
	if (a->closing && a->inflight == 0 && !uv_is_closing((uv_handle_t *)&a->window_timer))
		uv_close((uv_handle_t *)&a->window_timer, a->on_closed);
}

void alerts_op_done(struct alerts *a)
{
	a->inflight--;
	alerts_maybe_free(a);
}

int64_t alerts_reply_int(const redisReply *r)
{
	if (!r)
		return 0;
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return 0;
}

const char *alerts_reply_str(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_STRING ? r->str : "";
}

/* A string member of a JSON object, "" if absent or not a string. */
const char *alerts_jstr(const json_t *obj, const char *k)
{
	const char *v = json_string_value(json_object_get(obj, k));
	return v ? v : "";
}

bool alerts_fair_enabled(const struct alerts *a)
{
	return a->cfg->alerts.fair_release_factor > 0;
}

struct hub_msg *alerts_encode(struct alerts *a, json_t *j, uint64_t order)
{
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return NULL;
	struct hub_msg *m = hub_msg_new(a->env->hub, text, strlen(text));
	m->order = order;
	free(text);
	return m;
}

void alerts_note_seen(struct alerts *a, const char *id, uint64_t order)
{
	uint64_t last;
	if (alert_id_parse(a->last_id, &last) != 0 || order > last)
		snprintf(a->last_id, sizeof a->last_id, "%s", id);
}
