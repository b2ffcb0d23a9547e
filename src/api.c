#include "stockalert/api.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stockalert/alert.h"
#include "stockalert/alerts.h"
#include "stockalert/events.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/subs.h"

#define MOD "api"

void api_format_time(int64_t ms, char *out, size_t outlen)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, outlen - n, ".%03dZ", (int)(ms % 1000));
}

static int64_t to_i64(const char *v)
{
	return v ? strtoll(v, NULL, 10) : 0;
}

static json_t *kinds_json(unsigned kinds)
{
	json_t *a = json_array();
	for (unsigned bit = 1; bit <= SUBS_SOLD_OUT; bit <<= 1)
		if (kinds & bit)
			json_array_append_new(a, json_string(subs_kind_name(bit)));
	return a;
}

static json_t *time_json(int64_t ms)
{
	char when[40];
	api_format_time(ms, when, sizeof when);
	return json_string(when);
}

static json_t *entry_json(const struct subs_entry *e)
{
	return json_pack("{s:I,s:o,s:o,s:o}", "product_id", (json_int_t)e->product_id, "kinds",
			 kinds_json(e->kinds), "threshold",
			 e->threshold >= 0 ? json_integer(e->threshold) : json_null(), "created_at",
			 time_json(e->created_ms));
}

/* The id after prefix in the path; replies 400 and returns -1 if bad. */
static int path_id(struct http_req *r, const char *prefix, int64_t *id)
{
	const char *p = http_req_path(r) + strlen(prefix);
	if (subs_parse_id(p, strlen(p), id) != 0) {
		http_reply_error(r, 400, "bad_request", SUBS_PRODUCT_ID_EXPECTED);
		return -1;
	}
	return 0;
}

static void reply_unavailable(struct http_req *r, const char *what)
{
	http_reply_error(r, 503, "unavailable", what);
}

/* --- GET /api/products/{id} -------------------------------------------- */

static void on_product(struct store *st, const struct store_result *res, const char *err, void *arg)
{
	(void)st;
	struct http_req *r = http_async_finish(arg);
	if (!r)
		return;
	if (err) {
		log_warn(MOD, "reading a product failed: %s", err);
		reply_unavailable(r, "the product store is unavailable");
		return;
	}
	if (store_result_rows(res) == 0) {
		http_reply_error(r, 404, "not_found", "no such product");
		return;
	}
	http_reply_json(
	    r, 200,
	    json_pack("{s:I,s:s,s:s,s:I,s:I,s:o}", "id",
		      (json_int_t)to_i64(store_result_value(res, 0, 0)), "sku",
		      store_result_value(res, 0, 1), "name", store_result_value(res, 0, 2), "stock",
		      (json_int_t)to_i64(store_result_value(res, 0, 3)), "low_stock_threshold",
		      (json_int_t)to_i64(store_result_value(res, 0, 4)), "updated_at",
		      time_json(to_i64(store_result_value(res, 0, 5)))));
}

void api_get_product(struct http_req *r, struct http_env *env)
{
	struct auth_claims claims;
	int64_t id;
	char sql[256];

	if (http_authenticate(r, env, &claims) != 0 || path_id(r, "/api/products/", &id) != 0)
		return;
	snprintf(sql, sizeof sql,
		 "SELECT id, sku, name, stock, low_stock_threshold, "
		 "CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS UNSIGNED) FROM products WHERE id = "
		 "%" PRId64,
		 id);
	struct http_async *a = http_async_begin(r);
	if (store_query(env->store, sql, on_product, a) != 0) {
		http_async_end(a);
		reply_unavailable(r, "the product store is unavailable");
	}
}

/* --- GET /api/me/subscriptions ----------------------------------------- */

static void on_list(struct store *st, const struct store_result *res, const char *err, void *arg)
{
	(void)st;
	struct http_req *r = http_async_finish(arg);
	if (!r)
		return;
	if (err) {
		log_warn(MOD, "listing subscriptions failed: %s", err);
		reply_unavailable(r, "the subscription store is unavailable");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < store_result_rows(res); i++) {
		const char *thr = store_result_value(res, i, 2);
		struct subs_entry e = {
		    .product_id = to_i64(store_result_value(res, i, 0)),
		    .kinds = subs_kinds_from_csv(store_result_value(res, i, 1)),
		    .threshold = thr ? (int)to_i64(thr) : -1,
		    .created_ms = to_i64(store_result_value(res, i, 3)),
		};
		json_array_append_new(list, entry_json(&e));
	}
	http_reply_json(r, 200, json_pack("{s:o}", "subscriptions", list));
}

void api_list_subscriptions(struct http_req *r, struct http_env *env)
{
	struct auth_claims claims;
	char sql[512], esc[2 * AUTH_SUB_MAX + 1];

	if (http_authenticate(r, env, &claims) != 0)
		return;
	store_escape(env->store, esc, claims.sub, strlen(claims.sub));
	snprintf(sql, sizeof sql,
		 "SELECT product_id, kinds, threshold, "
		 "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED) FROM subscriptions "
		 "WHERE user_id = '%s' AND active = 1 ORDER BY created_at, product_id",
		 esc);
	struct http_async *a = http_async_begin(r);
	if (store_query(env->store, sql, on_list, a) != 0) {
		http_async_end(a);
		reply_unavailable(r, "the subscription store is unavailable");
	}
}

/* --- PUT / DELETE /api/me/subscriptions/{id} ----------------------------- */

static void on_subs_done(enum subs_status st, const struct subs_entry *e, void *arg)
{
	struct http_req *r = http_async_finish(arg);
	if (!r)
		return;
	switch (st) {
	case SUBS_CREATED:
	case SUBS_UPDATED: http_reply_json(r, st == SUBS_CREATED ? 201 : 200, entry_json(e)); break;
	case SUBS_DELETED: http_reply(r, 204, "application/json", NULL, 0, NULL); break;
	case SUBS_NO_PRODUCT: http_reply_error(r, 404, "not_found", "no such product"); break;
	case SUBS_NOT_SUBSCRIBED:
		http_reply_error(r, 404, "not_found", "not subscribed to this product");
		break;
	case SUBS_OVER_LIMIT:
		http_reply_error(
		    r, 409, "limit_reached",
		    "subscriptions.max_per_user reached: unsubscribe from something first");
		break;
	case SUBS_BUSY:
		http_reply_error(r, 429, "too_many_requests",
				 "subscriptions.max_inflight_per_user changes under way: wait for "
				 "their answers");
		break;
	case SUBS_UNAVAILABLE:
	default: reply_unavailable(r, "the subscription store is unavailable; retry"); break;
	}
}

void api_subscription(struct http_req *r, struct http_env *env)
{
	struct auth_claims claims;
	int64_t id;
	unsigned kinds;
	int threshold;
	char err[256];

	if (http_authenticate(r, env, &claims) != 0 ||
	    path_id(r, "/api/me/subscriptions/", &id) != 0)
		return;
	struct http_async *a;
	if (http_req_method(r) == LWSHUMETH_DELETE) {
		a = http_async_begin(r);
		subs_delete(env->subs, claims.sub, id, on_subs_done, a);
		return;
	}
	size_t len;
	const char *body = http_req_body(r, &len);
	if (subs_parse_body(body, len, &kinds, &threshold, err, sizeof err) != 0) {
		http_reply_error(r, 400, "bad_request", err);
		return;
	}
	a = http_async_begin(r);
	subs_put(env->subs, claims.sub, id, kinds, threshold, on_subs_done, a);
}

/* --- GET /api/me/alerts?since=ID&limit=N ---------------------------------- */

#define ALERTS_LIMIT_DEFAULT 100
#define ALERTS_LIMIT_MAX     1000

static void on_alerts(int status, json_t *alerts, bool recovered, json_t *snapshot, void *arg)
{
	(void)snapshot;
	struct http_req *r = http_async_finish(arg);
	if (!r)
		return;
	if (status != 0) {
		reply_unavailable(r, "the alert history is unavailable");
		return;
	}
	/* recovered=false: the history no longer reaches back to since; what
	 * is returned is all that is left. */
	http_reply_json(r, 200, json_pack("{s:O,s:b}", "alerts", alerts, "recovered", recovered));
}

void api_list_alerts(struct http_req *r, struct http_env *env)
{
	struct auth_claims claims;
	char since[48] = "", limit_s[24];
	long long limit = ALERTS_LIMIT_DEFAULT;

	if (http_authenticate(r, env, &claims) != 0)
		return;
	if (http_req_query(r, "since", since, sizeof since) >= 0 && since[0]) {
		uint64_t order;
		if (alert_id_parse(since, &order) != 0) {
			http_reply_error(r, 400, "bad_request",
					 "since: expected an alert id like 1700000000000-0");
			return;
		}
	}
	if (http_req_query(r, "limit", limit_s, sizeof limit_s) >= 0) {
		char *end;
		limit = strtoll(limit_s, &end, 10);
		if (!limit_s[0] || *end || limit < 1 || limit > ALERTS_LIMIT_MAX) {
			http_reply_error(r, 400, "bad_request",
					 "limit: expected an integer from 1 to 1000");
			return;
		}
	}
	struct http_async *a = http_async_begin(r);
	alerts_history(env->alerts, claims.sub, claims.roles, since, (size_t)limit, false,
		       on_alerts, a);
}

/* --- POST /api/inventory/events ------------------------------------------- */

struct publish_ctx {
	struct http_async *a;
	char event_id[EVENTS_ID_MAX + 1];
};

static void on_published(int rc, void *arg)
{
	struct publish_ctx *p = arg;
	struct http_req *r = http_async_finish(p->a);
	if (r) {
		if (rc == 0)
			http_reply_json(r, 202, json_pack("{s:s}", "event_id", p->event_id));
		else
			reply_unavailable(
			    r, "could not publish the event; retry with the same event_id");
	}
	mem_free(p);
}

void api_post_event(struct http_req *r, struct http_env *env)
{
	struct auth_claims claims;
	struct inv_event ev;
	char err[256];
	size_t len;

	if (http_authenticate(r, env, &claims) != 0)
		return;
	if (!(claims.roles & (AUTH_ROLE_SERVICE | AUTH_ROLE_ADMIN))) {
		http_reply_error(r, 403, "forbidden",
				 "publishing events needs role service or admin");
		return;
	}
	const char *body = http_req_body(r, &len);
	if (events_parse(body, len, true, &ev, err, sizeof err) != 0) {
		http_reply_error(r, 400, "bad_request", err);
		return;
	}
	if (!ev.event_id[0]) {
		/* Generated ids are unique per process and time; a client that
		 * needs retries to be idempotent sends its own. */
		static uint64_t counter;
		snprintf(ev.event_id, sizeof ev.event_id, "%s-%" PRIu64,
			 alerts_instance(env->alerts), ++counter);
	}
	struct publish_ctx *p = mem_calloc(1, sizeof *p);
	p->a = http_async_begin(r);
	snprintf(p->event_id, sizeof p->event_id, "%s", ev.event_id);
	alerts_publish(env->alerts, &ev, on_published, p);
}
