#include "alerts_int.h"

/* Compiled in from src/lua/history_read.lua, src/lua/fair_released.lua. */
extern const char sa_lua_history_read[];
extern const char sa_lua_fair_released[];

/* Alerts read from the history per Redis round trip. */
#define HISTORY_PAGE 500

struct history {
	struct alerts *a;
	char user[AUTH_SUB_MAX + 1];
	unsigned roles;
	char since[40];
	bool resuming; /* since names an alert: recovered must be proven */
	size_t limit;
	bool want_snapshot;
	bool recovered;
	struct roster_sub *subs;
	size_t nsubs;
	json_t *alerts;
	json_t *snapshot;
	json_t *page;	    /* candidates of the page being read */
	char page_last[40]; /* last id of that page: where the next starts */
	bool page_full;	    /* it was a full page: there may be more */
	alerts_history_fn fn;
	void *arg;
	size_t pending; /* snapshot lookups outstanding */
};

static void history_finish(struct history *h, int status)
{
	struct alerts *a = h->a;
	h->fn(status, h->alerts, h->recovered, h->snapshot, h->arg);
	json_decref(h->page);
	json_decref(h->alerts);
	json_decref(h->snapshot);
	mem_free(h->subs);
	mem_free(h);
	alerts_op_done(a);
}

static const struct roster_sub *find_sub(const struct history *h, int64_t product)
{
	for (size_t i = 0; i < h->nsubs; i++)
		if (h->subs[i].product_id == product)
			return &h->subs[i];
	return NULL;
}

/* Whether roles hear of alerts of products they did not subscribe to (the
 * operations view of alerts_deliver()): then the history to read is all of it. */
static bool hears_every_product(unsigned roles)
{
	return (roles & AUTH_ROLE_ADMIN) != 0;
}

/* Would the user have received this history entry? */
static bool wanted(const struct history *h, unsigned kind, int64_t product, int64_t stock,
		   int64_t prev, int default_thr, uint64_t order)
{
	const struct roster_sub *sub = find_sub(h, product);
	/* A subscription made after the alert did not hear of it. */
	if (sub && (uint64_t)sub->created_ms > alert_order_ms(order))
		sub = NULL;
	return roster_hears(sub, hears_every_product(h->roles), kind, prev, stock, default_thr);
}

static void history_page(struct history *h, const char *after);
static void history_lost(struct history *h);

/* Marks, inside a history page, an alert whose fair-release waves must be
 * checked (never a field of the alerts we send). */
#define FAIR_MARK "_fair"

/* Ends a page (cut: the limit left some of its candidates out): more
 * pages, or the end. A replay (the caller wants a snapshot) carries at most
 * limit alerts, so one with more due after since is no recovery: the
 * snapshot stands in for what it cannot carry. */
static void history_page_done(struct history *h, bool cut)
{
	bool more = cut || (h->page_full && *h->page_last);
	if (more && json_array_size(h->alerts) < h->limit) {
		history_page(h, h->page_last);
		return;
	}
	if (more && h->want_snapshot && h->recovered && h->resuming) {
		history_lost(h);
		return;
	}
	history_finish(h, 0);
}

static void on_fair_released(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct history *h = arg;
	size_t n = json_array_size(h->page);
	bool checked = r != NULL || reply != NULL;
	if (checked && (!reply || reply->type != REDIS_REPLY_ARRAY)) {
		history_finish(h, -1);
		return;
	}
	size_t k = 0, i;
	for (i = 0; i < n && json_array_size(h->alerts) < h->limit; i++) {
		json_t *c = json_array_get(h->page, i);
		bool keep = true;
		if (json_is_true(json_object_get(c, FAIR_MARK))) {
			keep = checked && k < reply->elements &&
			       reply->element[k]->type == REDIS_REPLY_INTEGER &&
			       reply->element[k]->integer == 1;
			k++;
			json_object_del(c, FAIR_MARK);
		}
		if (keep)
			json_array_append(h->alerts, c);
	}
	json_decref(h->page);
	h->page = NULL;
	history_page_done(h, i < n);
}

static void on_history_range(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct history *h = arg;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
		history_finish(h, -1);
		return;
	}
	if (alerts_reply_int(reply->element[0]) == 0) {
		history_lost(h);
		return;
	}
	const redisReply *entries = reply->elements == 4 ? reply->element[1] : NULL;
	if (!entries || entries->type != REDIS_REPLY_ARRAY) {
		history_finish(h, -1);
		return;
	}
	/* This page's candidates, in order; fair-released back_in_stock
	 * alerts count only if their wave reached the user, which one more
	 * round trip tells for the whole page. The next page starts after
	 * the last id read, whatever its entry held. */
	h->page = json_array();
	size_t nfair = 0;
	snprintf(h->page_last, sizeof h->page_last, "%s", alerts_reply_str(reply->element[2]));
	h->page_full = alerts_reply_int(reply->element[3]) == 1 && *h->page_last;
	for (size_t i = 0; i < entries->elements; i++) {
		const redisReply *e = entries->element[i];
		struct alert_entry en;
		if (!alert_entry_parse(e, &en) ||
		    !wanted(h, en.kind, en.product_id, en.stock, en.prev, en.thr, en.order))
			continue;
		json_t *c = alert_json(en.id, en.kind, en.product_id, *en.name ? en.name : NULL,
				       en.stock, en.prev, en.event_id, en.ts);
		if (en.fair) {
			json_object_set_new(c, FAIR_MARK, json_true());
			nfair++;
		}
		json_array_append_new(h->page, c);
	}
	if (nfair == 0) {
		on_fair_released(NULL, NULL, h);
		return;
	}
	const char **argv = mem_calloc(5 + nfair, sizeof *argv);
	size_t argc = 0;
	argv[argc++] = "EVAL";
	argv[argc++] = sa_lua_fair_released;
	argv[argc++] = "0";
	argv[argc++] = h->a->prefix;
	argv[argc++] = h->user;
	size_t i;
	json_t *c;
	json_array_foreach(h->page, i, c) if (json_object_get(c, FAIR_MARK)) argv[argc++] =
	    json_string_value(json_object_get(c, "id"));
	if (redis_command_argv(h->a->env->redis, on_fair_released, h, (int)argc, argv, NULL) != 0)
		history_finish(h, -1);
	mem_free(argv);
}

/* Reads the page after the alert id after ("" = from the beginning): the
 * whole stream for those who hear of every product, else only the user's
 * products through the index. While a resume is still recovered, each page
 * first checks that nothing after its starting point is missing. */
static void history_page(struct history *h, const char *after)
{
	char k_stream[96], k_index[104], k_start[112], count[16];
	char(*pids)[24] = mem_calloc(h->nsubs ? h->nsubs : 1, sizeof *pids);
	const char **argv = mem_calloc(10 + h->nsubs, sizeof *argv);
	int argc = 0;

	keys_name(k_stream, sizeof k_stream, h->a->prefix, KEYS_ALERTS);
	keys_name(k_index, sizeof k_index, h->a->prefix, KEYS_ALERTS_INDEX);
	keys_name(k_start, sizeof k_start, h->a->prefix, KEYS_ALERTS_START);
	snprintf(count, sizeof count, "%d", HISTORY_PAGE);
	argv[argc++] = "EVAL";
	argv[argc++] = sa_lua_history_read;
	argv[argc++] = "3";
	argv[argc++] = k_stream;
	argv[argc++] = k_index;
	argv[argc++] = k_start;
	argv[argc++] = after ? after : "";
	argv[argc++] = h->resuming && h->recovered && after && *after ? "1" : "0";
	argv[argc++] = count;
	if (hears_every_product(h->roles)) {
		argv[argc++] = "*";
	} else {
		for (size_t i = 0; i < h->nsubs; i++) {
			snprintf(pids[i], sizeof pids[i], "%" PRId64, h->subs[i].product_id);
			argv[argc++] = pids[i];
		}
	}
	if (redis_command_argv(h->a->env->redis, on_history_range, h, argc, argv, NULL) != 0)
		history_finish(h, -1);
	mem_free(argv);
	mem_free(pids);
}

static void on_snapshot_product(const struct product_info *p, void *arg)
{
	struct history *h = arg;
	json_t *entry = NULL;
	size_t i;
	json_array_foreach(h->snapshot, i, entry)
	{
		if (json_integer_value(json_object_get(entry, "product_id")) == p->id &&
		    !json_object_get(entry, "stock")) {
			json_object_set_new(entry, "stock",
					    p->has_stock ? json_integer(p->stock) : json_null());
			break;
		}
	}
	if (--h->pending == 0)
		history_finish(h, 0);
}

static void on_snapshot_stocks(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct history *h = arg;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != h->nsubs) {
		history_finish(h, -1);
		return;
	}
	h->snapshot = json_array();
	h->pending = 1; /* held until every lookup is issued */
	for (size_t i = 0; i < h->nsubs; i++) {
		json_t *entry = json_pack("{s:I}", "product_id", (json_int_t)h->subs[i].product_id);
		json_array_append_new(h->snapshot, entry);
		if (reply->element[i]->type == REDIS_REPLY_STRING) {
			json_object_set_new(
			    entry, "stock",
			    json_integer(strtoll(reply->element[i]->str, NULL, 10)));
		} else {
			/* No shared state yet: MySQL's level is the current one. */
			h->pending++;
			catalog_get(h->a->catalog, h->subs[i].product_id, on_snapshot_product, h);
		}
	}
	if (--h->pending == 0)
		history_finish(h, 0);
}

static void snapshot(struct history *h)
{
	if (h->nsubs == 0) {
		h->snapshot = json_array();
		history_finish(h, 0);
		return;
	}
	const char **argv = mem_calloc(1 + h->nsubs, sizeof *argv);
	char(*keys)[96] = mem_calloc(h->nsubs, sizeof *keys);
	argv[0] = "MGET";
	for (size_t i = 0; i < h->nsubs; i++) {
		keys_stock(keys[i], sizeof keys[i], h->a->prefix, h->subs[i].product_id);
		argv[1 + i] = keys[i];
	}
	if (redis_command_argv(h->a->env->redis, on_snapshot_stocks, h, (int)(1 + h->nsubs), argv,
			       NULL) != 0)
		history_finish(h, -1);
	mem_free(keys);
	mem_free(argv);
}

/*
 * The history no longer reaches back to since (or to where a page began):
 * nothing read so far counts. A caller that wants a snapshot gets the
 * current state instead of a history with holes; the others get what is
 * left, from the beginning.
 */
static void history_lost(struct history *h)
{
	h->recovered = false;
	h->since[0] = '\0';
	json_array_clear(h->alerts);
	if (h->want_snapshot)
		snapshot(h);
	else
		history_page(h, "");
}

static void on_history_subs(struct load *l, struct roster_sub *subs, size_t n, bool ok)
{
	struct history *h = l->arg;
	if (!ok) {
		history_finish(h, -1);
		return;
	}
	h->subs = mem_calloc(n ? n : 1, sizeof *h->subs);
	memcpy(h->subs, subs, n * sizeof *subs);
	h->nsubs = n;
	if (!h->recovered)
		history_lost(h);
	else
		history_page(h, h->since);
}

void alerts_history(struct alerts *a, const char *user, unsigned roles, const char *since,
		    size_t limit, bool want_snapshot, alerts_history_fn fn, void *arg)
{
	struct history *h = mem_calloc(1, sizeof *h);
	h->a = a;
	snprintf(h->user, sizeof h->user, "%s", user);
	h->roles = roles;
	h->limit = limit ? limit : SIZE_MAX;
	h->want_snapshot = want_snapshot;
	h->alerts = json_array();
	h->fn = fn;
	h->arg = arg;
	h->recovered = true;
	/* A since that is no alert id (the callers refuse it) cannot be
	 * resumed from. */
	if (since && *since) {
		uint64_t order;
		h->resuming = alert_id_parse(since, &order) == 0;
		/* Written back the way Redis writes ids (no leading zeros): the
		 * history scripts compare ids as strings of that form. */
		if (h->resuming)
			snprintf(h->since, sizeof h->since, "%" PRIu64 "-%" PRIu64,
				 alert_order_ms(order),
				 order & ((UINT64_C(1) << ALERT_SEQ_BITS) - 1));
		else
			h->recovered = false;
	}
	a->inflight++;
	if (a->closing || !redis_is_ready(a->env->redis)) {
		history_finish(h, -1);
		return;
	}
	/* The subscriptions come from Redis even for a connected user: the
	 * roster may still be loading. */
	alerts_load_user(a, user, on_history_subs, h);
}
