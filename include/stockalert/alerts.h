#ifndef STOCKALERT_ALERTS_H
#define STOCKALERT_ALERTS_H
/*
 * The alert pipeline (conf/README.md, Inventory events): inventory event -> exactly-once
 * classification and history in Redis -> local recipients from the roster ->
 * per-user rate limit -> the hub.
 *
 * Its Redis keys (event records, stock state, the history stream and its
 * index, rate windows, fair release) are laid out in keys.h.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stockalert/env.h"
#include "stockalert/events.h"

struct alerts;

struct alerts *alerts_new(uv_loop_t *loop, struct http_env *env);
void alerts_close(struct alerts *a);
const char *alerts_instance(const struct alerts *a);
/* The alerts.* values of the configuration changed (SIGHUP): the rate limit
 * and history length are read where used; this restarts what runs on a
 * timer (fair release turned on, off, or to another interval). */
void alerts_config_changed(struct alerts *a);

/* The outcome of one event: processed (delivered, duplicate or alerting
 * nobody), malformed (reason says why; it never will be), or failed
 * (Redis did not answer; try again later). */
enum { ALERTS_PROCESSED = 0, ALERTS_MALFORMED = -1, ALERTS_FAILED = -2 };
typedef void (*alerts_done_fn)(int status, const char *reason, void *arg);

/* Runs one inventory event through the pipeline; done (may be NULL) is
 * called with the outcome, possibly before this returns. */
void alerts_process(struct alerts *a, const char *payload, size_t len, alerts_done_fn done,
		    void *arg);

/* Pub/sub input: <prefix>inventory and <prefix>subs:changes. */
void alerts_on_inventory(struct alerts *a, const char *payload, size_t len);
void alerts_on_subs_change(struct alerts *a, const char *payload, size_t len);
/* <prefix>fair:waves: a fair-release wave to deliver to local subscribers. */
void alerts_on_fair_wave(struct alerts *a, const char *payload, size_t len);
/* <prefix>rate:sync: another instance joined one of our users mid-window;
 * our count for the user goes to the shared counter, which decides the rest
 * of the window (see "rate limit" in alerts.c). */
void alerts_on_rate_sync(struct alerts *a, const char *payload, size_t len);
/* A Redis connection came back: deliver what was recorded meanwhile. */
void alerts_redis_ready(struct alerts *a);

/* The first socket of user opened here / the last one closed. */
void alerts_user_online(struct alerts *a, const char *user);
void alerts_user_offline(struct alerts *a, const char *user);
/* Calls fn(arg) once user's subscriptions are loaded here (at once if they
 * are), so that nothing published after a socket's hello can miss it. */
void alerts_when_ready(struct alerts *a, const char *user, void (*fn)(void *arg), void *arg);

/*
 * History of what user would have received after since (NULL or "" = the
 * whole history), oldest first, at most limit alerts; it costs what the
 * user's own products' alerts cost (an admin's is the whole stream).
 * recovered is true only when every alert after since is provably still
 * there: since is an alert of this history still in the stream, and
 * nothing newer was trimmed, deleted or lost (see "The history" in
 * alerts.c); else false, and then alerts is what is left from the
 * beginning, or, when a snapshot is asked for, empty with snapshot listing
 * {product_id, stock} for each subscribed product. status: 0, or -1 when
 * Redis is unavailable. The callee keeps no reference to alerts/snapshot
 * after fn returns.
 */
typedef void (*alerts_history_fn)(int status, json_t *alerts, bool recovered, json_t *snapshot,
				  void *arg);
void alerts_history(struct alerts *a, const char *user, unsigned roles, const char *since,
		    size_t limit, bool want_snapshot, alerts_history_fn fn, void *arg);

/* Publishes ev on <prefix>inventory (POST /api/inventory/events).
 * done(0 | -1, arg). */
void alerts_publish(struct alerts *a, const struct inv_event *ev, void (*done)(int rc, void *arg),
		    void *arg);

#endif
