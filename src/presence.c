#include "stockalert/presence.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "stockalert/keys.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

#define MOD "presence"

struct presence {
	struct redis *redis;
	struct hub *hub;
	char *prefix;
	uv_timer_t timer;
	char *instance;
};

static void announce(struct presence *p, const char *user, bool online)
{
	char key[256];
	keys_online(key, sizeof key, p->prefix, user);
	/* Fire and forget: a lost update heals at the next refresh, and a
	 * Redis that is down gets everything re-announced when it returns. */
	if (online) {
		redis_command(p->redis, NULL, NULL, "SADD %s %s", key, p->instance);
		redis_command(p->redis, NULL, NULL, "EXPIRE %s %d", key, PRESENCE_TTL_S);
	} else {
		redis_command(p->redis, NULL, NULL, "SREM %s %s", key, p->instance);
	}
}

static void announce_cb(const char *user, void *arg)
{
	announce(arg, user, true);
}

void presence_refresh(struct presence *p)
{
	if (redis_is_ready(p->redis))
		hub_each_user(p->hub, announce_cb, p);
}

static void on_timer(uv_timer_t *t)
{
	presence_refresh(t->data);
}

struct presence *presence_new(uv_loop_t *loop, struct redis *redis, struct hub *hub,
			      const char *prefix, const char *instance)
{
	struct presence *p = mem_calloc(1, sizeof *p);

	p->redis = redis;
	p->hub = hub;
	p->prefix = mem_strdup(prefix);
	p->instance = mem_strdup(instance);
	uv_timer_init(loop, &p->timer);
	p->timer.data = p;
	uv_timer_start(&p->timer, on_timer, PRESENCE_REFRESH_S * 1000, PRESENCE_REFRESH_S * 1000);
	return p;
}

void presence_online(struct presence *p, const char *user)
{
	announce(p, user, true);
}

void presence_offline(struct presence *p, const char *user)
{
	announce(p, user, false);
}

static void on_closed(uv_handle_t *h)
{
	struct presence *p = h->data;
	mem_free(p->prefix);
	mem_free(p->instance);
	mem_free(p);
}

void presence_close(struct presence *p)
{
	uv_timer_stop(&p->timer);
	uv_close((uv_handle_t *)&p->timer, on_closed);
}
