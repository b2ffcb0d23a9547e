#include "alerts_int.h"

/* Compiled in from src/lua/rate.lua, src/lua/rate_note.lua. */
extern const char sa_lua_rate[];
extern const char sa_lua_rate_note[];

/* A user's alerts held back by the rate limit: the newest per product. */
struct held {
	struct dict *by_product; /* decimal product id -> struct held_msg */
};

struct held_msg {
	struct hub_msg *msg;
	int64_t product_id;
	char id[32];
};

/*
 * The rate limit.
 *
 * Each instance counts a user's alerts itself (rate.c, kept in the user's
 * roster slot) and lets them through alone while the user is below half the
 * limit. From there on, and while alerts are held for the user, the shared
 * counter in Redis decides alert by alert (src/lua/rate.lua). A user's last socket
 * on an instance leaves its count in Redis (src/lua/rate_note.lua) and the next
 * instance's roster load reads it back, so a user who moves between
 * instances cannot restart the window; an instance that joins a user online
 * elsewhere makes every instance of the user use the shared counter for the
 * rest of the window (alerts_rate_join, alerts_on_rate_sync). What is left inexact
 * is in rate.h.
 */

static int64_t window_ms(const struct alerts *a)
{
	return (int64_t)a->cfg->alerts.window_s * 1000;
}

int64_t alerts_window_now(const struct alerts *a)
{
	return rate_window(alerts_now_ms(), a->cfg->alerts.window_s);
}

static void on_window(uv_timer_t *t);

static void arm_window_timer(struct alerts *a)
{
	if (a->nheld == 0 || a->closing || uv_is_active((uv_handle_t *)&a->window_timer))
		return;
	int64_t w = window_ms(a);
	/* Just past the next window boundary, when the limit allows again. */
	uv_timer_start(&a->window_timer, on_window, (uint64_t)(w - alerts_now_ms() % w + 5), 0);
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

void alerts_drop_held(struct alerts *a, const char *user)
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
		alerts_drop_held(a, user);
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
	alerts_op_done(a);
}

/* Sends the batch to the rate script (or delivers at once if Redis is not
 * there). Takes ownership of b. */
void alerts_rate_check(struct alerts *a, struct rate_batch *b)
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
		keys_rate(keys[i], sizeof keys[i], a->prefix, b->pairs[i].user, b->window);
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
	b->window = alerts_window_now(a);
	b->from_held = true;
	dict_each(a->held, collect_held_user, b);
	alerts_rate_check(a, b);
}

struct recipients {
	struct alerts *a;
	const struct alert *al;
	struct rate_batch *b;
};

/* Delivers al to user now, or leaves it to the shared counter in b. */
void alerts_deliver_limited(struct alerts *a, struct rate_batch *b, const char *user,
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

/* Whether user's subscription sub (NULL = none) asks for al. */
static bool wants(const struct roster_sub *sub, const struct alert *al)
{
	return roster_hears(sub, false, al->kind, al->prev, al->stock, al->default_threshold);
}

static void consider_subscriber(const char *user, const struct roster_sub *sub,
				struct roster_slot *slot, void *arg)
{
	struct recipients *rc = arg;
	if (wants(sub, rc->al))
		alerts_deliver_limited(rc->a, rc->b, user, slot, rc->al);
}

/* An admin who subscribed to the product and wants al had it that way. */
static bool already_reached(const char *user, void *arg)
{
	const struct recipients *rc = arg;
	const struct roster_sub *sub = roster_get(rc->a->roster, user, rc->al->product_id);
	return wants(sub, rc->al);
}

void alerts_deliver(struct alerts *a, const struct alert *al)
{
	struct rate_batch *b = mem_calloc(1, sizeof *b);
	/* The operations view (roster_hears) goes to admins; not rate
	 * limited, not twice to an admin who also subscribed. */
	bool to_admins =
	    roster_hears(NULL, true, al->kind, al->prev, al->stock, al->default_threshold);
	struct recipients rc = {a, al, b};

	b->a = a;
	/* One window for the whole alert: the clock is read once, and no
	 * alert straddles a boundary. */
	b->window = alerts_window_now(a);
	/* With fair release, back_in_stock reaches subscribers in waves
	 * (alerts_on_fair_wave), not all at once. */
	if (!(al->kind == SUBS_BACK_IN_STOCK && alerts_fair_enabled(a)))
		roster_each_subscriber(a->roster, al->product_id, consider_subscriber, &rc);
	if (to_admins)
		metrics_add(METRICS_ALERTS_DELIVERED,
			    hub_send_to_role_except(a->env->hub, AUTH_ROLE_ADMIN, al->msg,
						    already_reached, &rc));
	alerts_rate_check(a, b);
}

/* Hands a count the shared counter does not have yet (rate_unshared_count) to
 * it: for the user's next instance, or for one that joined (see "rate
 * limit"). */
void alerts_rate_note(struct alerts *a, const char *user, const struct rate_state *r,
		      int64_t window)
{
	uint32_t n = rate_unshared_count(r, window);
	if (n == 0 || a->closing || !redis_is_ready(a->env->redis))
		return;
	char k[RATE_KEY_MAX], count[12], ttl[24];
	keys_rate(k, sizeof k, a->prefix, user, window);
	snprintf(count, sizeof count, "%" PRIu32, n);
	snprintf(ttl, sizeof ttl, "%d", 2 * a->cfg->alerts.window_s + 1);
	const char *argv[] = {"EVAL", sa_lua_rate_note, "1", k, count, ttl};
	redis_command_argv(a->env->redis, NULL, NULL, 6, argv, NULL);
}

/* The user is online on another instance too, so its counts and ours must
 * meet in the shared counter: ours from now on, and theirs once they hear
 * of us on <prefix>rate:sync (alerts_on_rate_sync). */
void alerts_rate_join(struct alerts *a, const char *user, struct rate_state *r, int64_t window)
{
	rate_share(r, window);
	if (a->closing || !redis_is_ready(a->env->redis))
		return;
	char channel[128], w[24];
	keys_name(channel, sizeof channel, a->prefix, KEYS_RATE_SYNC);
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
	if (slot && from && strcmp(from, a->instance) != 0 && window == alerts_window_now(a)) {
		alerts_rate_note(a, user, &slot->rate, window);
		rate_share(&slot->rate, window);
	}
	json_decref(j);
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

/* Drops every held alert: the part's teardown, once nothing is in flight. */
void alerts_deliver_free(struct alerts *a)
{
	dict_each(a->held, drop_held_cb, NULL);
	dict_free(a->held);
}
