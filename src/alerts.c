#include "stockalert/alerts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stockalert/alert.h"
#include "stockalert/buf.h"
#include "stockalert/catalog.h"
#include "stockalert/dict.h"
#include "stockalert/hub.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"
#include "stockalert/rate.h"
#include "stockalert/roster.h"
#include "stockalert/subs.h"

#define MOD	     "alerts"
/* Alerts read from the history per Redis round trip. */
#define HISTORY_PAGE 500

/* The Lua scripts, compiled in from src/lua/ (CMakeLists.txt, sa_embed_lua):
 * each file says what it is sent and what it returns. */
extern const char sa_lua_process[];
extern const char sa_lua_fair_due[];
extern const char sa_lua_rate[];
extern const char sa_lua_rate_note[];
extern const char sa_lua_history_read[];
extern const char sa_lua_fair_released[];
extern const char sa_lua_load[];

/* Events held while Redis commands cannot run; at most BACKLOG_MAX. */
#define BACKLOG_MAX 10000

struct backlog_event {
	struct backlog_event *next;
	size_t len;
	char payload[];
};

/* One alert as delivered: encoded once, shared by every recipient. */
struct alert {
	char id[32];
	uint64_t order;
	unsigned kind;
	int64_t product_id;
	int64_t stock;
	int64_t prev;
	int default_threshold;
	struct hub_msg *msg;
};

/* A user's alerts held back by the rate limit: the newest per product. */
struct held {
	struct dict *by_product; /* decimal product id -> struct held_msg */
};

struct held_msg {
	struct hub_msg *msg;
	int64_t product_id;
	char id[32];
};

/* A user whose subscriptions are being loaded into the roster: changes
 * that arrive meanwhile are replayed over the loaded state, and sockets
 * wait for it before their hello. */
struct loading_change {
	struct roster_sub sub;
	bool active;
	struct loading_change *next;
};

struct loading_waiter {
	void (*fn)(void *arg);
	void *arg;
	struct loading_waiter *next;
};

struct loading {
	struct loading_change *changes, *changes_tail;
	struct loading_waiter *waiters;
};

struct alerts {
	uv_loop_t *loop;
	struct http_env *env;
	const struct config *cfg;
	struct roster *roster;
	struct catalog *catalog;
	struct dict *held;    /* user -> struct held */
	struct dict *loading; /* user -> struct loading */
	size_t nheld;	      /* users with held alerts */
	uv_timer_t window_timer;
	uv_timer_t fair_timer; /* polls for due fair-release waves */
	bool fair_polling;     /* a poll is in flight */
	char instance[32];
	char prefix[80];
	char last_id[32]; /* newest alert this instance delivered or saw */
	/* Pub/sub events that arrived while the command connection was not
	 * ready (the subscriber may reconnect first): run once it is. */
	struct backlog_event *backlog, *backlog_tail;
	size_t nbacklog;
	bool catching_up;
	bool closing;
	int inflight; /* async operations holding a pointer */
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_window_timer_closed(uv_handle_t *h);

static void maybe_free(struct alerts *a)
{
	if (a->closing && a->inflight == 0 && !uv_is_closing((uv_handle_t *)&a->window_timer))
		uv_close((uv_handle_t *)&a->window_timer, on_window_timer_closed);
}

static void op_done(struct alerts *a)
{
	a->inflight--;
	maybe_free(a);
}

static void key(char *out, size_t outlen, const struct alerts *a, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void key(char *out, size_t outlen, const struct alerts *a, const char *fmt, ...)
{
	int n = snprintf(out, outlen, "%s", a->prefix);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out + n, outlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static int64_t reply_int(const redisReply *r)
{
	if (!r)
		return 0;
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return 0;
}

static const char *reply_str(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_STRING ? r->str : "";
}

/* A string member of a JSON object, "" if absent or not a string. */
static const char *jstr(const json_t *obj, const char *k)
{
	const char *v = json_string_value(json_object_get(obj, k));
	return v ? v : "";
}

static bool fair_enabled(const struct alerts *a)
{
	return a->cfg->alerts.fair_release_factor > 0;
}

/* --- the alert object ------------------------------------------------------ */

static struct hub_msg *encode(struct alerts *a, json_t *j, uint64_t order)
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

/* --- rate limit -------------------------------------------------------------- *
 *
 * Each instance counts a user's alerts itself (rate.c, kept in the user's
 * roster slot) and lets them through alone while the user is below half the
 * limit. From there on, and while alerts are held for the user, the shared
 * counter in Redis decides alert by alert (src/lua/rate.lua). A user's last socket
 * on an instance leaves its count in Redis (src/lua/rate_note.lua) and the next
 * instance's roster load reads it back, so a user who moves between
 * instances cannot restart the window; an instance that joins a user online
 * elsewhere makes every instance of the user use the shared counter for the
 * rest of the window (rate_join, alerts_on_rate_sync). What is left inexact
 * is in rate.h.
 */

static int64_t window_ms(const struct alerts *a)
{
	return (int64_t)a->cfg->alerts.window_s * 1000;
}

static int64_t window_now(const struct alerts *a)
{
	return rate_window(now_ms(), a->cfg->alerts.window_s);
}

/* prefix (< 80) + "rate:" + user (<= AUTH_SUB_MAX) + ":" + window, and NUL. */
#define RATE_KEY_MAX 192

static void rate_key(const struct alerts *a, const char *user, int64_t window, char *out,
		     size_t outlen)
{
	key(out, outlen, a, "rate:%s:%" PRId64, user, window);
}

static void on_window(uv_timer_t *t);

static void arm_window_timer(struct alerts *a)
{
	if (a->nheld == 0 || a->closing || uv_is_active((uv_handle_t *)&a->window_timer))
		return;
	int64_t w = window_ms(a);
	/* Just past the next window boundary, when the limit allows again. */
	uv_timer_start(&a->window_timer, on_window, (uint64_t)(w - now_ms() % w + 5), 0);
}

static void hold(struct alerts *a, const char *user, struct hub_msg *msg, int64_t product,
		 const char *id)
{
	char pid[24];
	struct held *h = dict_get(a->held, user);
	if (!h) {
		h = mem_calloc(1, sizeof *h);
		h->by_product = dict_new();
		dict_set(a->held, user, h);
		a->nheld++;
	}
	snprintf(pid, sizeof pid, "%" PRId64, product);
	struct held_msg *hm = dict_get(h->by_product, pid);
	if (hm) {
		/* The newer alert for the product replaces the one waiting:
		 * the user hears the last word, not a backlog. */
		hub_msg_unref(hm->msg);
		metrics_inc(METRICS_ALERTS_COALESCED);
	} else {
		hm = mem_calloc(1, sizeof *hm);
		hm->product_id = product;
		dict_set(h->by_product, pid, hm);
		metrics_inc(METRICS_ALERTS_DELAYED);
	}
	hub_msg_ref(msg);
	hm->msg = msg;
	snprintf(hm->id, sizeof hm->id, "%s", id);
	arm_window_timer(a);
}

static int free_held_msg(const char *k, void *v, void *arg)
{
	(void)k;
	(void)arg;
	struct held_msg *hm = v;
	hub_msg_unref(hm->msg);
	mem_free(hm);
	return 0;
}

static void drop_held(struct alerts *a, const char *user)
{
	struct held *h = dict_del(a->held, user);
	if (!h)
		return;
	dict_each(h->by_product, free_held_msg, NULL);
	dict_free(h->by_product);
	mem_free(h);
	a->nheld--;
}

/* Forgets the held alert of user for product if it is still id (a newer one
 * may have replaced it while we asked Redis). */
static void release_held(struct alerts *a, const char *user, int64_t product, const char *id)
{
	char pid[24];
	struct held *h = dict_get(a->held, user);
	if (!h)
		return;
	snprintf(pid, sizeof pid, "%" PRId64, product);
	struct held_msg *hm = dict_get(h->by_product, pid);
	if (!hm || strcmp(hm->id, id) != 0)
		return;
	dict_del(h->by_product, pid);
	free_held_msg(pid, hm, NULL);
	if (dict_size(h->by_product) == 0)
		drop_held(a, user);
}

static void deliver_to_user(struct alerts *a, const char *user, struct hub_msg *m)
{
	metrics_add(METRICS_ALERTS_DELIVERED, hub_send_to_user(a->env->hub, user, m));
}

/* The same for a user of the roster, without the lookup. */
static void deliver_to_slot(struct alerts *a, const struct roster_slot *slot, struct hub_msg *m)
{
	metrics_add(METRICS_ALERTS_DELIVERED, hub_send_to(a->env->hub, slot->target, m));
}

/* (user, alert) pairs waiting for the rate script's verdict. */
struct rate_pair {
	char *user;
	struct hub_msg *msg;
	int64_t product_id;
	uint32_t seed;
	char id[32];
};

struct rate_batch {
	struct alerts *a;
	int64_t window; /* the window its alerts were counted in */
	bool from_held; /* re-asking for held alerts at a new window */
	size_t n, cap;
	struct rate_pair *pairs;
};

static void batch_add(struct rate_batch *b, const char *user, struct hub_msg *msg, int64_t product,
		      const char *id, uint32_t seed)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 16;
		b->pairs = mem_realloc(b->pairs, b->cap * sizeof *b->pairs);
	}
	struct rate_pair *p = &b->pairs[b->n++];
	p->user = mem_strdup(user);
	hub_msg_ref(msg);
	p->msg = msg;
	p->product_id = product;
	p->seed = seed;
	snprintf(p->id, sizeof p->id, "%s", id);
}

static void batch_free(struct rate_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		mem_free(b->pairs[i].user);
		hub_msg_unref(b->pairs[i].msg);
	}
	mem_free(b->pairs);
	mem_free(b);
}

static void on_rate(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct rate_batch *b = arg;
	struct alerts *a = b->a;
	bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == b->n;

	if (!ok && !a->closing)
		log_warn(MOD, "rate limit check failed (%s): delivering without it",
			 reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no reply");
	for (size_t i = 0; i < b->n && !a->closing; i++) {
		struct rate_pair *p = &b->pairs[i];
		/* Without an answer we deliver: a late alert is worse than one
		 * over the limit. */
		bool allow = !ok || (reply->element[i]->type == REDIS_REPLY_INTEGER &&
				     reply->element[i]->integer == 1);
		if (allow) {
			deliver_to_user(a, p->user, p->msg);
			if (b->from_held)
				release_held(a, p->user, p->product_id, p->id);
		} else if (!b->from_held) {
			hold(a, p->user, p->msg, p->product_id, p->id);
		}
	}
	if (b->from_held)
		arm_window_timer(a);
	batch_free(b);
	op_done(a);
}

/* Sends the batch to the rate script (or delivers at once if Redis is not
 * there). Takes ownership of b. */
static void rate_check(struct alerts *a, struct rate_batch *b)
{
	if (b->n == 0) {
		batch_free(b);
		return;
	}
	size_t argc = 5 + 3 * b->n;
	const char **argv = mem_calloc(argc, sizeof *argv);
	char(*keys)[RATE_KEY_MAX] = mem_alloc(b->n * sizeof *keys);
	char(*seeds)[12] = mem_alloc(b->n * sizeof *seeds);
	char nkeys[24], max[16], ttl[24];

	snprintf(nkeys, sizeof nkeys, "%zu", b->n);
	snprintf(max, sizeof max, "%d", a->cfg->alerts.max_per_window);
	snprintf(ttl, sizeof ttl, "%d", 2 * a->cfg->alerts.window_s + 1);
	argv[0] = "EVAL";
	argv[1] = sa_lua_rate;
	argv[2] = nkeys;
	argv[3 + b->n] = max;
	argv[4 + b->n] = ttl;
	for (size_t i = 0; i < b->n; i++) {
		rate_key(a, b->pairs[i].user, b->window, keys[i], sizeof keys[i]);
		snprintf(seeds[i], sizeof seeds[i], "%" PRIu32, b->pairs[i].seed);
		argv[3 + i] = keys[i];
		argv[5 + b->n + i] = b->pairs[i].id;
		argv[5 + 2 * b->n + i] = seeds[i];
	}
	a->inflight++;
	if (!b->from_held)
		metrics_add(METRICS_ALERTS_RATE_SHARED, b->n);
	int rc = redis_command_argv(a->env->redis, on_rate, b, (int)argc, argv, NULL);
	mem_free(seeds);
	mem_free(keys);
	mem_free(argv);
	if (rc != 0)
		on_rate(NULL, NULL, b);
}

struct collect_held {
	struct rate_batch *b;
	const char *user;
};

static int collect_held_msg(const char *k, void *v, void *arg)
{
	(void)k;
	struct collect_held *c = arg;
	struct held_msg *hm = v;
	batch_add(c->b, c->user, hm->msg, hm->product_id, hm->id, 0);
	return 0;
}

static int collect_held_user(const char *user, void *v, void *arg)
{
	struct held *h = v;
	struct rate_batch *b = arg;
	struct collect_held c = {b, user};
	/* What is released counts in the new window, in Redis: the shared
	 * counter decides the user's whole window. */
	struct roster_slot *slot = roster_slot(b->a->roster, user);
	if (slot)
		rate_share(&slot->rate, b->window);
	dict_each(h->by_product, collect_held_msg, &c);
	return 0;
}

static void on_window(uv_timer_t *t)
{
	struct alerts *a = t->data;
	struct rate_batch *b = mem_calloc(1, sizeof *b);
	b->a = a;
	b->window = window_now(a);
	b->from_held = true;
	dict_each(a->held, collect_held_user, b);
	rate_check(a, b);
}

/* --- delivery ---------------------------------------------------------------- */

struct recipients {
	struct alerts *a;
	const struct alert *al;
	struct rate_batch *b;
};

/* Delivers al to user now, or leaves it to the shared counter in b. */
static void deliver_limited(struct alerts *a, struct rate_batch *b, const char *user,
			    struct roster_slot *slot, const struct alert *al)
{
	uint32_t seed;
	bool held = a->nheld && dict_get(a->held, user);
	if (rate_count(&slot->rate, b->window, (uint32_t)a->cfg->alerts.max_per_window, held,
		       &seed))
		deliver_to_slot(a, slot, al->msg);
	else
		batch_add(b, user, al->msg, al->product_id, al->id, seed);
}

/* Whether user's subscription sub asks for al. */
static bool wants(const struct roster_sub *sub, const struct alert *al)
{
	int64_t thr = sub->threshold >= 0 ? sub->threshold : al->default_threshold;
	return (sub->kinds & al->kind) && events_classify(al->prev, al->stock, thr) == al->kind;
}

static void consider_subscriber(const char *user, const struct roster_sub *sub,
				struct roster_slot *slot, void *arg)
{
	struct recipients *rc = arg;
	if (wants(sub, rc->al))
		deliver_limited(rc->a, rc->b, user, slot, rc->al);
}

/* An admin who subscribed to the product and wants al had it that way. */
static bool already_reached(const char *user, void *arg)
{
	const struct recipients *rc = arg;
	const struct roster_sub *sub = roster_get(rc->a->roster, user, rc->al->product_id);
	return sub && wants(sub, rc->al);
}

static void deliver(struct alerts *a, const struct alert *al)
{
	struct rate_batch *b = mem_calloc(1, sizeof *b);
	/* The operations view: every sold_out, and low_stock by the
	 * product's own threshold, to admins; not rate limited, not twice to
	 * an admin who also subscribed. */
	bool to_admins =
	    al->kind == SUBS_SOLD_OUT ||
	    (al->kind == SUBS_LOW_STOCK &&
	     events_classify(al->prev, al->stock, al->default_threshold) == SUBS_LOW_STOCK);
	struct recipients rc = {a, al, b};

	b->a = a;
	/* One window for the whole alert: the clock is read once, and no
	 * alert straddles a boundary. */
	b->window = window_now(a);
	/* With fair release, back_in_stock reaches subscribers in waves
	 * (alerts_on_fair_wave), not all at once. */
	if (!(al->kind == SUBS_BACK_IN_STOCK && fair_enabled(a)))
		roster_each_subscriber(a->roster, al->product_id, consider_subscriber, &rc);
	if (to_admins)
		metrics_add(METRICS_ALERTS_DELIVERED,
			    hub_send_to_role_except(a->env->hub, AUTH_ROLE_ADMIN, al->msg,
						    already_reached, &rc));
	rate_check(a, b);
}

static void note_seen(struct alerts *a, const char *id, uint64_t order)
{
	uint64_t last;
	if (alert_id_parse(a->last_id, &last) != 0 || order > last)
		snprintf(a->last_id, sizeof a->last_id, "%s", id);
}

/* --- fair release -------------------------------------------------------------- */

/* Counts what a process script did for fair release: n >= 0 users released
 * by a first wave, -2 a cycle stopped by a sold_out, -1 nothing. */
static void fair_count(int64_t n)
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
		metrics_add(METRICS_FAIR_WAVES, (uint64_t)reply_int(reply->element[0]));
		metrics_add(METRICS_FAIR_RELEASED, (uint64_t)reply_int(reply->element[1]));
		metrics_add(METRICS_FAIR_STOPPED, (uint64_t)reply_int(reply->element[2]));
	}
	op_done(a);
}

static void on_fair_timer(uv_timer_t *t)
{
	struct alerts *a = t->data;
	char factor[32], now[24], interval[24], ttl[16];
	if (a->fair_polling || a->closing || !redis_is_ready(a->env->redis))
		return;
	snprintf(factor, sizeof factor, "%.6f", a->cfg->alerts.fair_release_factor);
	snprintf(now, sizeof now, "%" PRId64, now_ms());
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
	al.stock = strtoll(jstr(j, "stock"), NULL, 10);
	al.prev = strtoll(jstr(j, "prev"), NULL, 10);
	const char *name = jstr(j, "name");
	al.msg = encode(a,
			alert_json(al.id, al.kind, al.product_id, *name ? name : NULL, al.stock,
				   al.prev, jstr(j, "event_id"), strtoll(jstr(j, "ts"), NULL, 10)),
			al.order);
	if (!al.msg) {
		json_decref(j);
		return;
	}
	note_seen(a, al.id, al.order);
	struct rate_batch *b = mem_calloc(1, sizeof *b);
	b->a = a;
	b->window = window_now(a);
	size_t i;
	json_t *u;
	json_array_foreach(users, i, u)
	{
		const char *user = json_string_value(u);
		const struct roster_sub *sub =
		    user ? roster_get(a->roster, user, al.product_id) : NULL;
		if (sub && (sub->kinds & SUBS_BACK_IN_STOCK))
			deliver_limited(a, b, user, roster_slot(a->roster, user), &al);
	}
	hub_msg_unref(al.msg);
	json_decref(j);
	rate_check(a, b);
}

/* --- event processing -------------------------------------------------------- */

struct ev_job {
	struct alerts *a;
	struct inv_event ev;
	char *name;
	int threshold;
	int64_t received_ms;
	/* The receipt again, for the histograms: wall clock (event to socket)
	 * and uv_hrtime() (processing time). */
	int64_t received_us;
	uint64_t received_ns;
	alerts_done_fn done; /* the durable input waits for the outcome */
	void *done_arg;
	int status; /* ALERTS_* */
};

static void job_free(struct ev_job *j)
{
	if (j->done)
		j->done(j->status, j->status == ALERTS_FAILED ? "redis unavailable" : NULL,
			j->done_arg);
	mem_free(j->name);
	mem_free(j);
}

static void on_processed(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct ev_job *j = arg;
	struct alerts *a = j->a;

	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 8) {
		if (!a->closing)
			log_warn(MOD,
				 "event %s: not processed (%s); it is delivered from the "
				 "history once Redis is back, if another instance recorded it",
				 j->ev.event_id,
				 reply && reply->type == REDIS_REPLY_ERROR ? reply->str
									   : "no reply");
		j->status = ALERTS_FAILED;
		goto out;
	}
	j->status = ALERTS_PROCESSED;
	metrics_observe(METRICS_H_EVENT_PROCESS, 0, metrics_seconds(j->received_ns, uv_hrtime()));
	const char *kind_name = reply_str(reply->element[0]);
	const char *id = reply_str(reply->element[1]);
	const char *prev = reply_str(reply->element[2]);
	bool first = reply_int(reply->element[3]) == 1;
	bool mine = reply_int(reply->element[4]) == 1;
	int64_t ts = reply_int(reply->element[5]);
	const char *name = reply_str(reply->element[6]);

	if (first)
		catalog_set_stock(a->catalog, j->ev.product_id, j->ev.stock);
	fair_count(reply_int(reply->element[7]));
	if (!mine) {
		metrics_inc(METRICS_EVENTS_DUPLICATE);
		log_debug(MOD, "event %s: already delivered here", j->ev.event_id);
		goto out;
	}
	unsigned kind = subs_kind_parse(kind_name);
	struct alert al = {.kind = kind, .product_id = j->ev.product_id, .stock = j->ev.stock};
	if (!kind || alert_id_parse(id, &al.order) != 0)
		goto out;
	snprintf(al.id, sizeof al.id, "%s", id);
	al.prev = strtoll(prev, NULL, 10);
	al.default_threshold = j->threshold;
	al.msg = encode(a,
			alert_json(al.id, kind, al.product_id, *name ? name : NULL, al.stock,
				   al.prev, j->ev.event_id, ts),
			al.order);
	if (al.msg) {
		al.msg->origin_us = j->ev.has_ts ? j->ev.ts_ms * 1000 : j->received_us;
		al.msg->origin = j->ev.has_ts ? METRICS_ORIGIN_TS : METRICS_ORIGIN_RECEIPT;
		note_seen(a, al.id, al.order);
		deliver(a, &al);
		hub_msg_unref(al.msg);
	}
out:
	job_free(j);
	op_done(a);
}

static void on_product_info(const struct product_info *p, void *arg)
{
	struct ev_job *j = arg;
	struct alerts *a = j->a;
	char k_event[256], k_stock[128], k_stream[96], k_thr[128], k_inst[272], k_start[112];
	char pid[24], stock[24], prev[24], fallback[24], thr[16], ts[24], minid[32], ttl[16];
	char factor[32], interval[24], now[24], stock_ttl[16];

	j->name = p->name ? mem_strdup(p->name) : NULL;
	j->threshold = p->threshold;
	char idk[EVENTS_ID_KEY_MAX + 1];
	events_id_key(j->ev.event_id, idk, sizeof idk);
	key(k_event, sizeof k_event, a, "event:%s", idk);
	key(k_stock, sizeof k_stock, a, "stock:%" PRId64, j->ev.product_id);
	key(k_stream, sizeof k_stream, a, "alerts");
	key(k_thr, sizeof k_thr, a, "product:%" PRId64 ":thr", j->ev.product_id);
	snprintf(k_inst, sizeof k_inst, "%s:i", k_event);
	key(k_start, sizeof k_start, a, "alerts:start");
	snprintf(pid, sizeof pid, "%" PRId64, j->ev.product_id);
	snprintf(stock, sizeof stock, "%" PRId64, j->ev.stock);
	if (j->ev.has_prev)
		snprintf(prev, sizeof prev, "%" PRId64, j->ev.prev_stock);
	else
		prev[0] = '\0';
	/* Without prev_stock and without shared state yet (first event for
	 * the product since Redis started), MySQL's products.stock is the
	 * previous level. */
	if (p->has_stock)
		snprintf(fallback, sizeof fallback, "%" PRId64, p->stock);
	else
		fallback[0] = '\0';
	snprintf(thr, sizeof thr, "%d", p->threshold);
	snprintf(ts, sizeof ts, "%" PRId64, j->ev.has_ts ? j->ev.ts_ms : j->received_ms);
	snprintf(minid, sizeof minid, "%" PRId64,
		 now_ms() - (int64_t)a->cfg->alerts.history_s * 1000);
	snprintf(ttl, sizeof ttl, "%d", a->cfg->alerts.history_s);
	snprintf(factor, sizeof factor, "%.6f", a->cfg->alerts.fair_release_factor);
	snprintf(interval, sizeof interval, "%d", a->cfg->alerts.fair_release_interval_s * 1000);
	snprintf(now, sizeof now, "%" PRId64, now_ms());
	snprintf(stock_ttl, sizeof stock_ttl, "%d", a->cfg->alerts.stock_ttl_s);

	const char *argv[] = {"EVAL",
			      sa_lua_process,
			      "6",
			      k_event,
			      k_stock,
			      k_stream,
			      k_thr,
			      k_inst,
			      k_start,
			      a->instance,
			      pid,
			      stock,
			      prev,
			      fallback,
			      thr,
			      j->name ? j->name : "",
			      j->ev.event_id,
			      ts,
			      minid,
			      ttl,
			      a->prefix,
			      factor,
			      interval,
			      now,
			      stock_ttl};
	if (a->closing || redis_command_argv(a->env->redis, on_processed, j,
					     (int)(sizeof argv / sizeof argv[0]), argv, NULL) != 0)
		on_processed(NULL, NULL, j);
}

void alerts_process(struct alerts *a, const char *payload, size_t len, alerts_done_fn done,
		    void *arg)
{
	char err[256];
	struct ev_job *j = mem_calloc(1, sizeof *j);

	metrics_inc(METRICS_EVENTS_RECEIVED);
	if (events_parse(payload, len, false, &j->ev, err, sizeof err) != 0) {
		metrics_inc(METRICS_EVENTS_MALFORMED);
		log_warn(MOD, "malformed event skipped: %s (%zu bytes: %.80s%s)", err, len, payload,
			 len > 80 ? "..." : "");
		mem_free(j);
		if (done)
			done(ALERTS_MALFORMED, err, arg);
		return;
	}
	j->a = a;
	j->received_ms = now_ms();
	j->received_us = metrics_wall_us();
	j->received_ns = uv_hrtime();
	j->done = done;
	j->done_arg = arg;
	j->status = ALERTS_FAILED;
	a->inflight++;
	catalog_get(a->catalog, j->ev.product_id, on_product_info, j);
}

static void drain_backlog(struct alerts *a);

void alerts_on_inventory(struct alerts *a, const char *payload, size_t len)
{
	if (redis_is_ready(a->env->redis)) {
		drain_backlog(a); /* older events first */
		alerts_process(a, payload, len, NULL, NULL);
		return;
	}
	/* The subscriber is back before the command connection: hold the
	 * event rather than fail it (pub/sub will not send it again). */
	if (a->nbacklog >= BACKLOG_MAX) {
		log_warn(MOD,
			 "event backlog full (%d) while Redis commands are unavailable: "
			 "dropping the oldest event",
			 BACKLOG_MAX);
		struct backlog_event *old = a->backlog;
		a->backlog = old->next;
		if (!a->backlog)
			a->backlog_tail = NULL;
		mem_free(old);
		a->nbacklog--;
	}
	struct backlog_event *e = mem_alloc(sizeof *e + len + 1);
	e->next = NULL;
	e->len = len;
	memcpy(e->payload, payload, len);
	e->payload[len] = '\0';
	if (a->backlog_tail)
		a->backlog_tail->next = e;
	else
		a->backlog = e;
	a->backlog_tail = e;
	a->nbacklog++;
}

static void drain_backlog(struct alerts *a)
{
	if (a->backlog)
		log_info(MOD, "running %zu events held while Redis commands were unavailable",
			 a->nbacklog);
	while (a->backlog && redis_is_ready(a->env->redis) && !a->closing) {
		struct backlog_event *e = a->backlog;
		a->backlog = e->next;
		if (!a->backlog)
			a->backlog_tail = NULL;
		a->nbacklog--;
		alerts_process(a, e->payload, e->len, NULL, NULL);
		mem_free(e);
	}
}

static void free_backlog(struct alerts *a)
{
	while (a->backlog) {
		struct backlog_event *e = a->backlog;
		a->backlog = e->next;
		mem_free(e);
	}
	a->backlog_tail = NULL;
	a->nbacklog = 0;
}

/* --- catch-up after Redis came back ------------------------------------------ */

struct catchup {
	struct alerts *a;
	struct alert al;
	char *name;
	char event_id[EVENTS_ID_MAX + 1];
	int64_t ts;
};

static void on_catchup_mark(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct catchup *c = arg;
	struct alerts *a = c->a;
	if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1 && !a->closing) {
		c->al.msg = encode(a,
				   alert_json(c->al.id, c->al.kind, c->al.product_id, c->name,
					      c->al.stock, c->al.prev, c->event_id, c->ts),
				   c->al.order);
		if (c->al.msg) {
			log_info(MOD, "catch-up: delivering %s (event %s)", c->al.id, c->event_id);
			deliver(a, &c->al);
			hub_msg_unref(c->al.msg);
		}
	}
	mem_free(c->name);
	mem_free(c);
	op_done(a);
}

static void on_catchup_range(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct alerts *a = arg;
	a->catching_up = false;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || a->closing) {
		op_done(a);
		return;
	}
	for (size_t i = 0; i < reply->elements; i++) {
		struct alert_entry en;
		if (!alert_entry_parse(reply->element[i], &en))
			continue;
		struct catchup *c = mem_calloc(1, sizeof *c);
		c->a = a;
		snprintf(c->al.id, sizeof c->al.id, "%s", en.id);
		c->al.order = en.order;
		c->al.kind = en.kind;
		c->al.product_id = en.product_id;
		c->al.stock = en.stock;
		c->al.prev = en.prev;
		c->al.default_threshold = en.thr;
		c->name = mem_strdup(en.name);
		snprintf(c->event_id, sizeof c->event_id, "%s", en.event_id);
		c->ts = en.ts;
		note_seen(a, c->al.id, c->al.order);
		/* Claim it for this instance; whoever delivered it live already
		 * holds the claim, so nothing is delivered twice. */
		char k_inst[300], idk[EVENTS_ID_KEY_MAX + 1];
		events_id_key(c->event_id, idk, sizeof idk);
		key(k_inst, sizeof k_inst, a, "event:%s:i", idk);
		a->inflight++;
		if (redis_command(a->env->redis, on_catchup_mark, c, "SADD %s %s", k_inst,
				  a->instance) != 0)
			on_catchup_mark(NULL, NULL, c);
	}
	op_done(a);
}

void alerts_redis_ready(struct alerts *a)
{
	char k_stream[96], start[40];
	drain_backlog(a);
	if (a->catching_up || a->closing || !redis_is_ready(a->env->redis))
		return;
	key(k_stream, sizeof k_stream, a, "alerts");
	snprintf(start, sizeof start, "(%s", a->last_id);
	a->catching_up = true;
	a->inflight++;
	if (redis_command(a->env->redis, on_catchup_range, a, "XRANGE %s %s + COUNT 10000",
			  k_stream, start) != 0) {
		a->catching_up = false;
		op_done(a);
	}
}

/* --- rate limit: users on several instances ---------------------------------- */

/* Hands a count the shared counter does not have yet (rate_unshared_count) to
 * it: for the user's next instance, or for one that joined (see "rate
 * limit"). */
static void rate_note(struct alerts *a, const char *user, const struct rate_state *r,
		      int64_t window)
{
	uint32_t n = rate_unshared_count(r, window);
	if (n == 0 || a->closing || !redis_is_ready(a->env->redis))
		return;
	char k[RATE_KEY_MAX], count[12], ttl[24];
	rate_key(a, user, window, k, sizeof k);
	snprintf(count, sizeof count, "%" PRIu32, n);
	snprintf(ttl, sizeof ttl, "%d", 2 * a->cfg->alerts.window_s + 1);
	const char *argv[] = {"EVAL", sa_lua_rate_note, "1", k, count, ttl};
	redis_command_argv(a->env->redis, NULL, NULL, 6, argv, NULL);
}

/* The user is online on another instance too, so its counts and ours must
 * meet in the shared counter: ours from now on, and theirs once they hear
 * of us on <prefix>rate:sync (alerts_on_rate_sync). */
static void rate_join(struct alerts *a, const char *user, struct rate_state *r, int64_t window)
{
	rate_share(r, window);
	if (a->closing || !redis_is_ready(a->env->redis))
		return;
	char channel[128], w[24];
	key(channel, sizeof channel, a, "rate:sync");
	snprintf(w, sizeof w, "%" PRId64, window);
	json_t *j = json_pack("{s:s,s:s,s:s}", "user", user, "window", w, "from", a->instance);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (text)
		redis_command(a->env->redis, NULL, NULL, "PUBLISH %s %s", channel, text);
	free(text);
}

void alerts_on_rate_sync(struct alerts *a, const char *payload, size_t len)
{
	json_error_t jerr;
	json_t *j = json_loadb(payload, len, 0, &jerr);
	const char *user = json_string_value(json_object_get(j, "user"));
	const char *from = json_string_value(json_object_get(j, "from"));
	const char *w = json_string_value(json_object_get(j, "window"));
	struct roster_slot *slot = user ? roster_slot(a->roster, user) : NULL;
	int64_t window = w ? strtoll(w, NULL, 10) : -1;
	/* Ours to answer: a user we have, in the window we are in. */
	if (slot && from && strcmp(from, a->instance) != 0 && window == window_now(a)) {
		rate_note(a, user, &slot->rate, window);
		rate_share(&slot->rate, window);
	}
	json_decref(j);
}

/* --- the roster: local users' subscriptions ----------------------------------- */

struct load {
	struct alerts *a;
	char user[AUTH_SUB_MAX + 1];
	int64_t window; /* the rate window when the load began */
	uint32_t count; /* the user's rate count in it, from Redis */
	bool elsewhere; /* the user is online on another instance too */
	size_t n;
	int64_t *products;
	void (*done)(struct load *l, struct roster_sub *subs, size_t n, bool ok);
	void *arg;
};

static void on_load_details(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct load *l = arg;
	struct roster_sub *subs = mem_calloc(l->n ? l->n : 1, sizeof *subs);
	size_t m = 0;
	bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == l->n + 2;

	if (ok) {
		long long seed = strtoll(reply_str(reply->element[l->n]), NULL, 10);
		l->count = seed > 0 && seed < UINT32_MAX ? (uint32_t)seed : 0;
		l->elsewhere = reply_int(reply->element[l->n + 1]) > 0;
	}
	for (size_t i = 0; ok && i < l->n; i++) {
		redisReply *e = reply->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
		    strcmp(reply_str(e->element[3]), "1") != 0)
			continue;
		subs[m].product_id = l->products[i];
		subs[m].kinds = subs_kinds_from_csv(reply_str(e->element[0]));
		const char *thr = reply_str(e->element[1]);
		subs[m].threshold = *thr ? (int)strtol(thr, NULL, 10) : -1;
		subs[m].created_ms = strtoll(reply_str(e->element[2]), NULL, 10);
		m++;
	}
	l->done(l, subs, m, ok);
	mem_free(subs);
	mem_free(l->products);
	struct alerts *a = l->a;
	mem_free(l);
	op_done(a);
}

static void on_load_members(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct load *l = arg;
	struct alerts *a = l->a;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || a->closing) {
		l->done(l, NULL, 0, false);
		mem_free(l);
		op_done(a);
		return;
	}
	l->n = reply->elements;
	l->products = mem_calloc(l->n ? l->n : 1, sizeof *l->products);
	const char **argv = mem_calloc(7 + l->n, sizeof *argv);
	char prefix[256], k_rate[RATE_KEY_MAX], k_online[256];
	key(prefix, sizeof prefix, a, "sub:%s:", l->user);
	rate_key(a, l->user, l->window, k_rate, sizeof k_rate);
	key(k_online, sizeof k_online, a, "online:%s", l->user);
	argv[0] = "EVAL";
	argv[1] = sa_lua_load;
	argv[2] = "3";
	argv[3] = prefix;
	argv[4] = k_rate;
	argv[5] = k_online;
	argv[6] = a->instance;
	for (size_t i = 0; i < l->n; i++) {
		argv[7 + i] = reply_str(reply->element[i]);
		l->products[i] = strtoll(argv[7 + i], NULL, 10);
	}
	/* One more hop: the reply (and argv's strings) die when we return,
	 * and hiredis copies argv before that. */
	if (redis_command_argv(a->env->redis, on_load_details, l, (int)(7 + l->n), argv, NULL) != 0)
		on_load_details(NULL, NULL, l);
	mem_free(argv);
}

static void load_user(struct alerts *a, const char *user,
		      void (*done)(struct load *l, struct roster_sub *subs, size_t n, bool ok),
		      void *arg)
{
	char k[200];
	struct load *l = mem_calloc(1, sizeof *l);
	l->a = a;
	snprintf(l->user, sizeof l->user, "%s", user);
	l->window = window_now(a);
	l->done = done;
	l->arg = arg;
	key(k, sizeof k, a, "user:%s:subs", user);
	a->inflight++;
	if (redis_command(a->env->redis, on_load_members, l, "SMEMBERS %s", k) != 0)
		on_load_members(NULL, NULL, l);
}

static void on_roster_loaded(struct load *l, struct roster_sub *subs, size_t n, bool ok)
{
	struct alerts *a = l->a;
	struct loading *ld = dict_del(a->loading, l->user);

	if (!ok)
		log_warn(MOD,
			 "could not load the subscriptions of %s; they are loaded at their "
			 "next connection",
			 l->user);
	/* Still connected? The socket may have closed while we asked. */
	else if (hub_user_conns(a->env->hub, l->user) > 0) {
		roster_set_user(a->roster, l->user, subs, n);
		/* Alerts the user had in this window elsewhere count here too. */
		struct rate_state *rs = &roster_slot(a->roster, l->user)->rate;
		rate_seed(rs, l->window, l->count);
		if (l->elsewhere)
			rate_join(a, l->user, rs, l->window);
	}
	if (!ld)
		return;
	for (struct loading_change *c = ld->changes, *next; c; c = next) {
		next = c->next;
		if (ok)
			roster_update(a->roster, l->user, &c->sub, c->active);
		mem_free(c);
	}
	for (struct loading_waiter *w = ld->waiters, *next; w; w = next) {
		next = w->next;
		w->fn(w->arg);
		mem_free(w);
	}
	mem_free(ld);
}

void alerts_user_online(struct alerts *a, const char *user)
{
	/* Present at once (empty), and changes that arrive while the load is
	 * in flight are kept to be replayed over it. */
	roster_set_user(a->roster, user, NULL, 0);
	struct roster_slot *slot = roster_slot(a->roster, user);
	struct hub_user *target = hub_user_hold(a->env->hub, user);
	hub_user_release(slot->target); /* an entry of an earlier connection */
	slot->target = target;
	if (dict_get(a->loading, user))
		return; /* a load is already on its way */
	dict_set(a->loading, user, mem_calloc(1, sizeof(struct loading)));
	load_user(a, user, on_roster_loaded, NULL);
}

void alerts_when_ready(struct alerts *a, const char *user, void (*fn)(void *arg), void *arg)
{
	struct loading *ld = dict_get(a->loading, user);
	if (!ld) {
		fn(arg);
		return;
	}
	struct loading_waiter *w = mem_alloc(sizeof *w);
	w->fn = fn;
	w->arg = arg;
	w->next = ld->waiters;
	ld->waiters = w;
}

void alerts_user_offline(struct alerts *a, const char *user)
{
	struct roster_slot *slot = roster_slot(a->roster, user);
	if (slot) {
		rate_note(a, user, &slot->rate, window_now(a));
		hub_user_release(slot->target);
		roster_drop_user(a->roster, user);
	}
	drop_held(a, user);
}

void alerts_on_subs_change(struct alerts *a, const char *payload, size_t len)
{
	json_error_t jerr;
	json_t *j = json_loadb(payload, len, 0, &jerr);
	const char *user = json_string_value(json_object_get(j, "user"));
	json_t *pid = json_object_get(j, "product_id");
	/* Written by subs.c's apply script. */
	if (!user || !json_is_integer(pid) || !subs_product_id_valid(json_integer_value(pid))) {
		log_warn(MOD, "bad subscription change notice ignored");
		json_decref(j);
		return;
	}
	struct roster_sub sub = {
	    .product_id = (int64_t)json_integer_value(pid),
	    .kinds = subs_kinds_from_csv(json_string_value(json_object_get(j, "kinds"))),
	    .threshold = json_is_integer(json_object_get(j, "threshold"))
			     ? (int)json_integer_value(json_object_get(j, "threshold"))
			     : -1,
	    .created_ms = (int64_t)json_integer_value(json_object_get(j, "created")),
	};
	bool active = json_is_true(json_object_get(j, "active"));
	roster_update(a->roster, user, &sub, active);
	struct loading *ld = dict_get(a->loading, user);
	if (ld) {
		struct loading_change *c = mem_calloc(1, sizeof *c);
		c->sub = sub;
		c->active = active;
		if (ld->changes_tail)
			ld->changes_tail->next = c;
		else
			ld->changes = c;
		ld->changes_tail = c;
	}
	json_decref(j);
}

/* --- history and resume ------------------------------------------------------- */

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
	op_done(a);
}

static const struct roster_sub *find_sub(const struct history *h, int64_t product)
{
	for (size_t i = 0; i < h->nsubs; i++)
		if (h->subs[i].product_id == product)
			return &h->subs[i];
	return NULL;
}

/* Whether roles hear of alerts of products they did not subscribe to (the
 * operations view of deliver()): then the history to read is all of it. */
static bool hears_every_product(unsigned roles)
{
	return (roles & AUTH_ROLE_ADMIN) != 0;
}

/* Would the user have received this history entry? */
static bool wanted(const struct history *h, unsigned kind, int64_t product, int64_t stock,
		   int64_t prev, int default_thr, uint64_t order)
{
	const struct roster_sub *sub = find_sub(h, product);
	if (sub && (sub->kinds & kind) && (uint64_t)sub->created_ms <= alert_order_ms(order)) {
		int64_t thr = sub->threshold >= 0 ? sub->threshold : default_thr;
		if (events_classify(prev, stock, thr) == kind)
			return true;
	}
	return hears_every_product(h->roles) &&
	       (kind == SUBS_SOLD_OUT ||
		(kind == SUBS_LOW_STOCK && events_classify(prev, stock, default_thr) == kind));
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
	if (reply_int(reply->element[0]) == 0) {
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
	snprintf(h->page_last, sizeof h->page_last, "%s", reply_str(reply->element[2]));
	h->page_full = reply_int(reply->element[3]) == 1 && *h->page_last;
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

	key(k_stream, sizeof k_stream, h->a, "alerts");
	key(k_index, sizeof k_index, h->a, "alerts:index");
	key(k_start, sizeof k_start, h->a, "alerts:start");
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
		key(keys[i], sizeof keys[i], h->a, "stock:%" PRId64, h->subs[i].product_id);
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
	load_user(a, user, on_history_subs, h);
}

/* --- publishing ----------------------------------------------------------------- */

struct publish {
	struct alerts *a;
	void (*done)(int rc, void *arg);
	void *arg;
};

static void on_published(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct publish *p = arg;
	struct alerts *a = p->a;
	p->done(reply && reply->type == REDIS_REPLY_INTEGER ? 0 : -1, p->arg);
	mem_free(p);
	op_done(a);
}

void alerts_publish(struct alerts *a, const struct inv_event *ev, void (*done)(int rc, void *arg),
		    void *arg)
{
	char channel[96];
	char *json = events_encode(ev);
	struct publish *p = mem_calloc(1, sizeof *p);
	p->a = a;
	p->done = done;
	p->arg = arg;
	key(channel, sizeof channel, a, "inventory");
	a->inflight++;
	if (a->closing ||
	    redis_command(a->env->redis, on_published, p, "PUBLISH %s %s", channel, json) != 0)
		on_published(NULL, NULL, p);
	mem_free(json);
}

/* --- lifecycle -------------------------------------------------------------------- */

/* Polls for due fair-release waves while fair release is on. */
static void arm_fair_timer(struct alerts *a)
{
	if (!fair_enabled(a)) {
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

struct alerts *alerts_new(uv_loop_t *loop, struct http_env *env)
{
	struct alerts *a = mem_calloc(1, sizeof *a);
	struct timespec ts;

	a->loop = loop;
	a->env = env;
	a->cfg = env->cfg;
	a->roster = roster_new();
	a->catalog = catalog_new(loop, env->store, (size_t)env->cfg->catalog_max_entries);
	a->held = dict_new();
	a->loading = dict_new();
	snprintf(a->prefix, sizeof a->prefix, "%s", env->cfg->redis.prefix);
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(a->instance, sizeof a->instance, "%lx-%x-%x", (unsigned long)ts.tv_sec,
		 (unsigned)getpid(), (unsigned)ts.tv_nsec);
	/* Catch-up starts from now: older alerts reach clients through
	 * resume, not as live pushes. */
	snprintf(a->last_id, sizeof a->last_id, "%" PRId64 "-0", now_ms());
	uv_timer_init(loop, &a->window_timer);
	a->window_timer.data = a;
	uv_timer_init(loop, &a->fair_timer);
	a->fair_timer.data = a;
	arm_fair_timer(a);
	return a;
}

void alerts_config_changed(struct alerts *a)
{
	if (!a->closing)
		arm_fair_timer(a);
}

const char *alerts_instance(const struct alerts *a)
{
	return a->instance;
}

static int drop_held_cb(const char *user, void *v, void *arg)
{
	(void)user;
	(void)arg;
	struct held *h = v;
	dict_each(h->by_product, free_held_msg, NULL);
	dict_free(h->by_product);
	mem_free(h);
	return 0;
}

static void on_fair_timer_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_window_timer_closed(uv_handle_t *h)
{
	struct alerts *a = h->data;
	dict_each(a->held, drop_held_cb, NULL);
	dict_free(a->held);
	free_backlog(a);
	/* Loads finish (failing) before we get here: nothing is loading. */
	dict_free(a->loading);
	roster_free(a->roster);
	catalog_close(a->catalog);
	mem_free(a);
}

void alerts_close(struct alerts *a)
{
	a->closing = true;
	uv_timer_stop(&a->window_timer);
	/* Closed first: its close callback runs before the window timer's,
	 * which frees a. */
	uv_close((uv_handle_t *)&a->fair_timer, on_fair_timer_closed);
	maybe_free(a);
}
