#include "alerts_int.h"

/* Compiled in from src/lua/fair_due.lua. */
extern const char sa_lua_fair_due[];

/* Counts what a process script did for fair release: n >= 0 users released
 * by a first wave, -2 a cycle stopped by a sold_out, -1 nothing. */
void alerts_fair_count(int64_t n)
{
	if (n >= 0) {
		metrics_inc(METRICS_FAIR_WAVES);
		metrics_add(METRICS_FAIR_RELEASED, (uint64_t)n);
	} else if (n == -2) {
		metrics_inc(METRICS_FAIR_STOPPED);
	}
}

static void on_fair_due(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct alerts *a = arg;
	a->fair_polling = false;
	if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
		metrics_add(METRICS_FAIR_WAVES, (uint64_t)alerts_reply_int(reply->element[0]));
		metrics_add(METRICS_FAIR_RELEASED, (uint64_t)alerts_reply_int(reply->element[1]));
		metrics_add(METRICS_FAIR_STOPPED, (uint64_t)alerts_reply_int(reply->element[2]));
	}
	alerts_op_done(a);
}

static void on_fair_timer(uv_timer_t *t)
{
	struct alerts *a = t->data;
	char factor[32], now[24], interval[24], ttl[16];
	if (a->fair_polling || a->closing || !redis_is_ready(a->env->redis))
		return;
	snprintf(factor, sizeof factor, "%.6f", a->cfg->alerts.fair_release_factor);
	snprintf(now, sizeof now, "%" PRId64, alerts_now_ms());
	snprintf(interval, sizeof interval, "%d", a->cfg->alerts.fair_release_interval_s * 1000);
	snprintf(ttl, sizeof ttl, "%d", a->cfg->alerts.history_s);
	const char *argv[] = {"EVAL", sa_lua_fair_due, "0", a->prefix, factor, now, interval, ttl};
	a->fair_polling = true;
	a->inflight++;
	if (redis_command_argv(a->env->redis, on_fair_due, a, 8, argv, NULL) != 0)
		on_fair_due(NULL, NULL, a);
}

void alerts_on_fair_wave(struct alerts *a, const char *payload, size_t len)
{
	json_error_t jerr;
	json_t *j = json_loadb(payload, len, 0, &jerr);
	json_t *users = json_object_get(j, "users");
	const char *id = json_string_value(json_object_get(j, "id"));
	struct alert al = {.kind = SUBS_BACK_IN_STOCK};
	const char *s_pid = json_string_value(json_object_get(j, "product_id"));
	if (!id || !s_pid || !json_is_array(users) || alert_id_parse(id, &al.order) != 0) {
		log_warn(MOD, "bad fair-release wave notice ignored");
		json_decref(j);
		return;
	}
	snprintf(al.id, sizeof al.id, "%s", id);
	al.product_id = strtoll(s_pid, NULL, 10);
	al.stock = strtoll(alerts_jstr(j, "stock"), NULL, 10);
	al.prev = strtoll(alerts_jstr(j, "prev"), NULL, 10);
	const char *name = alerts_jstr(j, "name");
	al.msg = alerts_encode(a,
			       alert_json(al.id, al.kind, al.product_id, *name ? name : NULL,
					  al.stock, al.prev, alerts_jstr(j, "event_id"),
					  strtoll(alerts_jstr(j, "ts"), NULL, 10)),
			       al.order);
	if (!al.msg) {
		json_decref(j);
		return;
	}
	alerts_note_seen(a, al.id, al.order);
	struct rate_batch *b = mem_calloc(1, sizeof *b);
	b->a = a;
	b->window = alerts_window_now(a);
	size_t i;
	json_t *u;
	json_array_foreach(users, i, u)
	{
		const char *user = json_string_value(u);
		const struct roster_sub *sub =
		    user ? roster_get(a->roster, user, al.product_id) : NULL;
		if (sub && (sub->kinds & SUBS_BACK_IN_STOCK))
			alerts_deliver_limited(a, b, user, roster_slot(a->roster, user), &al);
	}
	hub_msg_unref(al.msg);
	json_decref(j);
	alerts_rate_check(a, b);
}

/* Polls for due fair-release waves while fair release is on. */
void alerts_fair_arm(struct alerts *a)
{
	if (!alerts_fair_enabled(a)) {
		uv_timer_stop(&a->fair_timer);
		return;
	}
	/* Waves are due every fair_release_interval_s; polling at a tenth of
	 * it (at most every 100 ms) keeps them on time. */
	uv_timer_start(&a->fair_timer, on_fair_timer, 100,
		       (uint64_t)(a->cfg->alerts.fair_release_interval_s < 10
				      ? 100
				      : a->cfg->alerts.fair_release_interval_s * 100));
}

static void on_fair_timer_closed(uv_handle_t *h)
{
	(void)h;
}

/* The part's teardown, from alerts_close: its close callback runs before the
 * window timer's, which frees a. */
void alerts_fair_close(struct alerts *a)
{
	uv_close((uv_handle_t *)&a->fair_timer, on_fair_timer_closed);
}
