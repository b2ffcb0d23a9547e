#ifndef STOCKALERT_ALERTS_INT_H
#define STOCKALERT_ALERTS_INT_H

/*
 * Inside the alerts module: what its files share, and nothing outside
 * them includes (include/stockalert/alerts.h is the module's contract).
 * The files, each calling only those above it:
 *
 *   alerts_base.c     struct alerts, keys, the clock, in-flight discipline,
 *                     frame encoding
 *   alerts_deliver.c  delivery to local sockets with the per-user rate limit
 *   alerts_fair.c     fair release: due waves, and waves to deliver
 *   alerts_roster.c   the roster: loading local users' subscriptions
 *   alerts_history.c  history, resume and snapshot
 *   alerts.c          event processing, backlog, catch-up, publishing,
 *                     lifecycle
 *
 * The Lua scripts they send are the .lua files of src/lua/, compiled in by
 * CMakeLists.txt (sa_embed_lua); each file declares those it sends.
 */

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stockalert/alert.h"
#include "stockalert/alerts.h"
#include "stockalert/auth.h"
#include "stockalert/catalog.h"
#include "stockalert/config.h"
#include "stockalert/dict.h"
#include "stockalert/hub.h"
#include "stockalert/keys.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"
#include "stockalert/rate.h"
#include "stockalert/roster.h"
#include "stockalert/subs.h"

#define MOD "alerts"

/* --- alerts_base.c -------------------------------------------------------------- */

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

struct backlog_event;

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
	/* The window timer's close callback, set by alerts_new: the
	 * lifecycle's teardown, so that the base calls nothing above it. */
	uv_close_cb on_closed;
};

int64_t alerts_now_ms(void);
/* Frees a (through on_closed) once it is closing and nothing is in flight. */
void alerts_maybe_free(struct alerts *a);
/* Ends an operation counted in a->inflight. */
void alerts_op_done(struct alerts *a);
int64_t alerts_reply_int(const redisReply *r);
const char *alerts_reply_str(const redisReply *r);
/* A string member of a JSON object, "" if absent or not a string. */
const char *alerts_jstr(const json_t *obj, const char *k);
bool alerts_fair_enabled(const struct alerts *a);
/* Encodes (and releases) j as the frame of an alert of that order. */
struct hub_msg *alerts_encode(struct alerts *a, json_t *j, uint64_t order);
/* Remembers id as the newest alert seen, if it is (catch-up starts there). */
void alerts_note_seen(struct alerts *a, const char *id, uint64_t order);

/* --- alerts_deliver.c ----------------------------------------------------------- */

/* prefix (< 80) + "rate:" + user (<= AUTH_SUB_MAX) + ":" + window, and NUL. */
#define RATE_KEY_MAX 192

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

int64_t alerts_window_now(const struct alerts *a);
void alerts_drop_held(struct alerts *a, const char *user);
void alerts_rate_check(struct alerts *a, struct rate_batch *b);
void alerts_deliver_limited(struct alerts *a, struct rate_batch *b, const char *user,
			    struct roster_slot *slot, const struct alert *al);
void alerts_deliver(struct alerts *a, const struct alert *al);
void alerts_rate_note(struct alerts *a, const char *user, const struct rate_state *r,
		      int64_t window);
void alerts_rate_join(struct alerts *a, const char *user, struct rate_state *r, int64_t window);
void alerts_deliver_free(struct alerts *a);

/* --- alerts_fair.c -------------------------------------------------------------- */

void alerts_fair_count(int64_t n);
void alerts_fair_arm(struct alerts *a);
void alerts_fair_close(struct alerts *a);

/* --- alerts_roster.c ------------------------------------------------------------ */

/* A read of a user's subscriptions (and rate count) from Redis. */
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

void alerts_load_user(struct alerts *a, const char *user,
		      void (*done)(struct load *l, struct roster_sub *subs, size_t n, bool ok),
		      void *arg);
void alerts_roster_free(struct alerts *a);

#endif
