#include "alerts_int.h"

/* Compiled in from src/lua/load.lua. */
extern const char sa_lua_load[];

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

static void on_load_details(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct load *l = arg;
	struct roster_sub *subs = mem_calloc(l->n ? l->n : 1, sizeof *subs);
	size_t m = 0;
	bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == l->n + 2;

	if (ok) {
		long long seed = strtoll(alerts_reply_str(reply->element[l->n]), NULL, 10);
		l->count = seed > 0 && seed < UINT32_MAX ? (uint32_t)seed : 0;
		l->elsewhere = alerts_reply_int(reply->element[l->n + 1]) > 0;
	}
	for (size_t i = 0; ok && i < l->n; i++) {
		struct subs_entry e;
		if (!subs_hash_parse(reply->element[i], &e))
			continue;
		subs[m++] = (struct roster_sub){l->products[i], e.kinds, e.threshold, e.created_ms};
	}
	l->done(l, subs, m, ok);
	mem_free(subs);
	mem_free(l->products);
	struct alerts *a = l->a;
	mem_free(l);
	alerts_op_done(a);
}

static void on_load_members(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct load *l = arg;
	struct alerts *a = l->a;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || a->closing) {
		l->done(l, NULL, 0, false);
		mem_free(l);
		alerts_op_done(a);
		return;
	}
	l->n = reply->elements;
	l->products = mem_calloc(l->n ? l->n : 1, sizeof *l->products);
	const char **argv = mem_calloc(7 + l->n, sizeof *argv);
	char prefix[256], k_rate[RATE_KEY_MAX], k_online[256];
	keys_sub_of(prefix, sizeof prefix, a->prefix, l->user);
	keys_rate(k_rate, sizeof k_rate, a->prefix, l->user, l->window);
	keys_online(k_online, sizeof k_online, a->prefix, l->user);
	argv[0] = "EVAL";
	argv[1] = sa_lua_load;
	argv[2] = "3";
	argv[3] = prefix;
	argv[4] = k_rate;
	argv[5] = k_online;
	argv[6] = a->instance;
	for (size_t i = 0; i < l->n; i++) {
		argv[7 + i] = alerts_reply_str(reply->element[i]);
		l->products[i] = strtoll(argv[7 + i], NULL, 10);
	}
	/* One more hop: the reply (and argv's strings) die when we return,
	 * and hiredis copies argv before that. */
	if (redis_command_argv(a->env->redis, on_load_details, l, (int)(7 + l->n), argv, NULL) != 0)
		on_load_details(NULL, NULL, l);
	mem_free(argv);
}

void alerts_load_user(struct alerts *a, const char *user,
		      void (*done)(struct load *l, struct roster_sub *subs, size_t n, bool ok),
		      void *arg)
{
	char k[200];
	struct load *l = mem_calloc(1, sizeof *l);
	l->a = a;
	snprintf(l->user, sizeof l->user, "%s", user);
	l->window = alerts_window_now(a);
	l->done = done;
	l->arg = arg;
	keys_user_subs(k, sizeof k, a->prefix, user);
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
			alerts_rate_join(a, l->user, rs, l->window);
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
	alerts_load_user(a, user, on_roster_loaded, NULL);
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
		alerts_rate_note(a, user, &slot->rate, alerts_window_now(a));
		hub_user_release(slot->target);
		roster_drop_user(a->roster, user);
	}
	alerts_drop_held(a, user);
}

void alerts_on_subs_change(struct alerts *a, const char *payload, size_t len)
{
	struct subs_change ch;
	if (subs_change_parse(payload, len, &ch) != 0) {
		log_warn(MOD, "bad subscription change notice ignored");
		return;
	}
	const char *user = ch.user;
	const struct subs_entry *e = &ch.entry;
	struct roster_sub sub = {e->product_id, e->kinds, e->threshold, e->created_ms};
	bool active = ch.active;
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
	subs_change_free(&ch);
}

/* The part's teardown: loads finish (failing) before it runs, so nothing is
 * loading. */
void alerts_roster_free(struct alerts *a)
{
	dict_free(a->loading);
	roster_free(a->roster);
}
