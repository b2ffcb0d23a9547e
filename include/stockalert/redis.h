#ifndef STOCKALERT_REDIS_H
#define STOCKALERT_REDIS_H
/*
 * A Redis connection on the loop: hiredis async through adapters/libuv.h,
 * wrapped in a state machine that hiredis 0.14 lacks: connect and command
 * timeouts, reconnect with exponential backoff and full jitter, AUTH and
 * SELECT on every connect, and a health PING.
 *
 * A client is either a command client or a pub/sub client (SUBSCRIBE needs a
 * connection of its own). A pub/sub client re-subscribes to its channels after
 * every reconnect.
 *
 * With Sentinel (sentinel_master set), every attempt first asks the sentinels,
 * in turn, where the master is (the one that answered last is asked first),
 * connects there, and checks with ROLE that the node really is the master; a
 * replica is a failed attempt. A -READONLY reply (the master was demoted while
 * we were connected) drops the connection, which then asks again. host/port
 * are ignored then.
 *
 * Callbacks never run inside redis_* calls made by the caller, and a caller
 * may call redis_close() from any callback: the client is freed later, from
 * the loop.
 */
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "stockalert/metrics.h"

enum redis_state {
	REDIS_STATE_DISCONNECTED, /* waiting for the backoff timer */
	REDIS_STATE_CONNECTING,	  /* Sentinel query, TCP connect, AUTH, SELECT, ROLE */
	REDIS_STATE_READY,	  /* commands are sent as they come */
	REDIS_STATE_CLOSED	  /* redis_close() was called */
};

struct redis;

struct redis_options {
	const char *name; /* for logs: "redis", "redis-pubsub" */
	const char *host; /* ignored with Sentinel */
	int port;
	const char *password;	      /* NULL = no AUTH */
	int db;			      /* SELECTed on connect when > 0 */
	unsigned connect_timeout_ms;  /* 0 = 2000 */
	unsigned command_timeout_ms;  /* 0 = 3000; on expiry the connection is dropped */
	unsigned health_interval_ms;  /* PING period while READY; 0 = 5000 */
	unsigned backoff_min_ms;      /* 0 = 100 */
	unsigned backoff_max_ms;      /* 0 = 5000 */
	const char *sentinel_master;  /* master name; NULL = connect to host:port */
	const char *const *sentinels; /* "host:port" or "[v6]:port", asked in turn */
	size_t n_sentinels;	      /* at least 1 when sentinel_master is set */
	enum metrics_dep dep;	      /* label of its command round trips in the metrics */
};

/* reply is NULL when the command failed: not connected, timed out, or the
 * connection dropped before the answer. A Redis error is a reply of type
 * REDIS_REPLY_ERROR. The reply is freed after the callback returns. */
typedef void (*redis_reply_fn)(struct redis *r, redisReply *reply, void *arg);
/* Called on every state change. */
typedef void (*redis_state_fn)(struct redis *r, enum redis_state state, void *arg);
/* A pub/sub message. payload is not NUL-terminated. */
typedef void (*redis_message_fn)(struct redis *r, const char *channel, const char *payload,
				 size_t len, void *arg);

struct redis *redis_new(uv_loop_t *loop, const struct redis_options *opts, redis_state_fn on_state,
			void *arg);
/* Starts connecting (and reconnecting, forever, with backoff). */
void redis_start(struct redis *r);
/* Makes r a pub/sub client for channel (call before redis_start; may be
 * called once per channel). */
void redis_subscribe(struct redis *r, const char *channel, redis_message_fn on_message, void *arg);

/* Sends a command when READY. Returns 0 if sent, -ENOTCONN if not READY (cb is
 * not called), -EINVAL for a pub/sub client. */
int redis_command(struct redis *r, redis_reply_fn cb, void *arg, const char *fmt, ...);
int redis_command_argv(struct redis *r, redis_reply_fn cb, void *arg, int argc, const char **argv,
		       const size_t *argvlen);

/* A client waiting out its backoff tries again now (another connection to
 * the same server just succeeded: the server is back). */
void redis_retry_now(struct redis *r);

enum redis_state redis_state(const struct redis *r);
bool redis_is_ready(const struct redis *r);
const char *redis_state_name(enum redis_state s);

/* Disconnects, fails pending commands (callbacks get NULL), stops timers and
 * frees r once libuv has closed its handles; on_closed(arg) runs after that.
 * on_state is not called for CLOSED: on_closed is the notification. */
void redis_close(struct redis *r, void (*on_closed)(void *arg), void *arg);
/* The same, except that commands already sent or queued still reach Redis:
 * the connection stays open until their replies are in (or the command
 * timeout passes, or it fails). Callers' callbacks get NULL all the same;
 * the point is that fire-and-forget writes made just before a shutdown
 * land. No new command is accepted meanwhile. */
void redis_drain_and_close(struct redis *r, void (*on_closed)(void *arg), void *arg);

#endif
