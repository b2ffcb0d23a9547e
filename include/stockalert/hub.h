#ifndef STOCKALERT_HUB_H
#define STOCKALERT_HUB_H
/*
 * The hub: who is connected, and the push path. It knows nothing of
 * libwebsockets: a connection is an opaque sink with two callbacks, so the
 * hub is unit-tested with a stub sink.
 *
 * Indexed both ways: user -> its connections (multi-device), connection ->
 * its user. Detaching a connection touches only its own entries.
 *
 * A message is encoded once and shared by every recipient (refcounted), with
 * `headroom` spare bytes before the payload that the transport may use for
 * its frame header (lws needs LWS_PRE). Each connection has a queue capped at
 * queue_max; a push that would exceed it drops that connection's queue and
 * reports the overflow, so a slow reader costs nobody else memory.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hub;
struct hub_conn;

struct hub_msg {
	uint32_t refs;
	/* For alerts, the alert id as a number ((ms << 22) | seq), so that a
	 * socket that resumed can skip what its replay already carried; 0 for
	 * everything else. */
	uint64_t order;
	/* For the alert of an event delivered live: when the event happened,
	 * wall clock in us (its ts, or its receipt: origin, enum
	 * metrics_origin), for the event-to-socket histogram; 0 otherwise. */
	int64_t origin_us;
	unsigned origin;
	size_t len; /* payload bytes */
	char *data; /* payload; data - headroom .. data is writable */
};

/* The callbacks run synchronously inside hub_push / hub_send_*, possibly
 * in the middle of a fan-out loop: they must not attach, detach or push (the
 * transport writes, requests a writable callback or schedules the close). */
struct hub_sink_ops {
	/* Optional. The connection's queue is empty: take m now if the
	 * transport can (write it whole, or drop it as not wanted) and return
	 * true; false queues it (and wakes). The fan-out's fast path: no
	 * queue, no reference taken. */
	bool (*send_now)(void *sink, const struct hub_msg *m);
	/* The connection's queue went from empty to non-empty. */
	void (*wake)(void *sink);
	/* The queue overflowed: it has been emptied; the sink should close
	 * the connection (4008). Called once per connection. */
	void (*overflow)(void *sink);
};

struct hub *hub_new(const struct hub_sink_ops *ops, size_t headroom, size_t queue_max);
/* All connections must have been detached. */
void hub_free(struct hub *h);

/* A message of len bytes copied from data, with one reference held by the
 * caller. */
struct hub_msg *hub_msg_new(const struct hub *h, const char *data, size_t len);
void hub_msg_ref(struct hub_msg *m);
void hub_msg_unref(struct hub_msg *m);

/* Registers a connection of user (1-64 chars; NULL if not). sink is passed
 * to the ops. */
struct hub_conn *hub_attach(struct hub *h, const char *user, unsigned roles, void *sink);
/* Unregisters and frees the connection, releasing its queued messages. */
void hub_detach(struct hub *h, struct hub_conn *c);

/* Queues m (taking a reference) on c. Returns 0, or -ENOBUFS when the queue
 * overflowed (see hub_sink_ops.overflow). */
int hub_push(struct hub *h, struct hub_conn *c, struct hub_msg *m);
/* Queues m on every connection of user; returns how many took it. */
size_t hub_send_to_user(struct hub *h, const char *user, struct hub_msg *m);

/* A held reference to the entry of a user who has connections now (NULL if
 * none), for a caller that sends to the same user often: hub_send_to skips
 * the lookup of hub_send_to_user. The entry stays valid until released,
 * also after the user's last connection is gone (it then reaches nobody,
 * and a reconnecting user gets a new entry: hold that one). */
struct hub_user *hub_user_hold(struct hub *h, const char *user);
void hub_user_release(struct hub_user *u);
/* Same as hub_send_to_user, for a held entry (or NULL: nobody). */
size_t hub_send_to(struct hub *h, struct hub_user *u, struct hub_msg *m);
/* Queues m on every connection whose roles include any of role_mask.
 * Walks only connections holding some role, not every connection. */
size_t hub_send_to_role(struct hub *h, unsigned role_mask, struct hub_msg *m);
/* Same, leaving out the connections of users for whom skip() is true (they
 * got m some other way). */
size_t hub_send_to_role_except(struct hub *h, unsigned role_mask, struct hub_msg *m,
			       bool (*skip)(const char *user, void *arg), void *arg);

/* The next queued message of c (NULL if none), still queued. */
struct hub_msg *hub_peek(const struct hub_conn *c);
/* Drops the head of c's queue (after it was written). */
void hub_pop(struct hub_conn *c);
size_t hub_queue_len(const struct hub_conn *c);
bool hub_overflowed(const struct hub_conn *c);

const char *hub_conn_user(const struct hub_conn *c);
unsigned hub_conn_roles(const struct hub_conn *c);
void hub_conn_set_roles(struct hub_conn *c, unsigned roles);

/* Connections of user on this instance (0 if none). */
size_t hub_user_conns(const struct hub *h, const char *user);
size_t hub_total_conns(const struct hub *h);
size_t hub_total_users(const struct hub *h);

/* Calls fn for every user with at least one connection (for presence
 * refresh). fn must not attach or detach. */
void hub_each_user(const struct hub *h, void (*fn)(const char *user, void *arg), void *arg);
/* Calls fn with the sink of every connection, until fn returns non-zero
 * (returned). fn must not attach or detach. */
int hub_each_conn(const struct hub *h, int (*fn)(void *sink, void *arg), void *arg);

#endif
