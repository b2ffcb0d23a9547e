#include "stockalert/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "stockalert/backoff.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

enum pending_kind {
	PENDING_USER,	   /* redis_command(): the caller's callback gets the reply */
	PENDING_HANDSHAKE, /* AUTH / SELECT / PING sent before READY */
	PENDING_ROLE,	   /* Sentinel mode: is this node the master? (handshake or health) */
	PENDING_SUBSCRIBE, /* one per channel of the initial SUBSCRIBE */
	PENDING_HEALTH	   /* the periodic liveness probe */
};

/*
 * Redis answers in order, so one FIFO of what we are waiting for gives both
 * the callback for each reply and the oldest deadline for the timeout timer.
 * hiredis's own callback lists are never trusted for failure delivery: every
 * entry here is failed by us, exactly once, when the connection goes.
 */
struct pending {
	struct pending *next;
	enum pending_kind kind;
	bool last;	   /* last reply of the handshake or of the SUBSCRIBE batch */
	uint64_t deadline; /* uv_now() time after which the connection is dropped */
	uint64_t sent_ns;  /* uv_hrtime() when queued, for the round-trip histogram */
	redis_reply_fn cb;
	void *arg;
};

struct channel {
	char *name;
	size_t len;
	redis_message_fn on_message;
	void *arg;
};

struct sentinel {
	char *host;
	int port;
};

/* A name lookup in flight; it may outlive the attempt that started it. */
struct resolve {
	uv_getaddrinfo_t req;
	struct redis *r;
	unsigned attempt;
};

struct redis {
	uv_loop_t *loop;
	char *name;
	char *host; /* with Sentinel: the master last announced, or NULL */
	char *password;
	int port;
	int db;
	unsigned connect_timeout_ms;
	unsigned command_timeout_ms;
	unsigned health_interval_ms;
	redis_state_fn on_state;
	void *arg;

	enum metrics_dep dep;
	enum redis_state state;
	bool started;
	unsigned attempt;      /* counts connection steps, to spot stale lookups */
	redisAsyncContext *ac; /* NULL unless a connection is open or opening */

	char *master_name; /* NULL: no Sentinel */
	struct sentinel *sentinels;
	size_t nsentinels;
	size_t sentinel_first;	/* the one that answered last is asked first */
	size_t sentinel_tried;	/* asked during this attempt */
	size_t sentinel_cur;	/* the one being asked */
	bool asking;		/* CONNECTING, still looking for the master */
	redisAsyncContext *sac; /* the query to sentinel_cur */
	char sentinel_why[512]; /* why the last sentinel gave no master */
	struct backoff backoff;
	struct pending *head;
	struct pending *tail;
	struct channel *channels; /* non-empty makes this a pub/sub client */
	size_t nchannels;

	uv_timer_t reconnect_timer;
	uv_timer_t connect_timer;
	uv_timer_t command_timer;
	uv_timer_t health_timer;
	unsigned open_handles;	 /* timers not yet closed by redis_close() */
	unsigned resolves;	 /* lookups whose callback has not run yet */
	struct resolve *resolve; /* the current attempt's lookup, to cancel on close */
	struct pending *failed;	 /* failed by redis_close(), delivered before on_closed */
	bool draining;		 /* closed, still waiting for the replies in flight */
	void (*on_closed)(void *arg);
	void *closed_arg;
};

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void on_subscribe_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void start_attempt(struct redis *r);
static void maybe_finish_close(struct redis *r);
static void ask_sentinel(struct redis *r);
static void sentinel_failed(struct redis *r, const char *why);

const char *redis_state_name(enum redis_state s)
{
	switch (s) {
	case REDIS_STATE_DISCONNECTED: return "disconnected";
	case REDIS_STATE_CONNECTING: return "connecting";
	case REDIS_STATE_READY: return "ready";
	case REDIS_STATE_CLOSED: return "closed";
	}
	return "unknown";
}

enum redis_state redis_state(const struct redis *r)
{
	return r->state;
}

bool redis_is_ready(const struct redis *r)
{
	return r->state == REDIS_STATE_READY;
}

static bool is_pubsub(const struct redis *r)
{
	return r->nchannels > 0;
}

/* The on_state call is always the last thing a handler does: the callee may
 * call redis_close(). */
static void notify(struct redis *r, enum redis_state state)
{
	if (r->on_state)
		r->on_state(r, state, r->arg);
}

static void arm_command_timer(struct redis *r);
static void on_command_timeout(uv_timer_t *t);
static void end_drain(struct redis *r, const char *why);
static void on_health(uv_timer_t *t);
static void on_reconnect_timer(uv_timer_t *t);

static void push_pending(struct redis *r, struct pending *p)
{
	p->next = NULL;
	if (r->tail)
		r->tail->next = p;
	else
		r->head = p;
	r->tail = p;
	if (r->head == p)
		arm_command_timer(r);
}

static struct pending *pop_pending(struct redis *r)
{
	struct pending *p = r->head;
	if (!p)
		return NULL;
	r->head = p->next;
	if (!r->head)
		r->tail = NULL;
	arm_command_timer(r);
	return p;
}

static struct pending *take_pending(struct redis *r)
{
	struct pending *list = r->head;
	r->head = r->tail = NULL;
	uv_timer_stop(&r->command_timer);
	return list;
}

/* Gives every caller's command in list its NULL reply, one at a time so that
 * a callback may call back into the client. */
static void fail_pending(struct redis *r, struct pending *list)
{
	while (list) {
		struct pending *p = list;
		list = p->next;
		if (p->kind == PENDING_USER && p->cb)
			p->cb(r, NULL, p->arg);
		mem_free(p);
	}
}

/* Detaches the hiredis context first (data = NULL), so that the callbacks
 * hiredis runs while freeing it, now or after the current callback returns
 * (REDIS_IN_CALLBACK), find nothing to act on. */
static void free_context(redisAsyncContext **acp)
{
	redisAsyncContext *ac = *acp;
	if (!ac)
		return;
	*acp = NULL;
	ac->data = NULL;
	redisAsyncFree(ac);
}

static void drop_context(struct redis *r)
{
	free_context(&r->ac);
}

static void drop_sentinel(struct redis *r)
{
	free_context(&r->sac);
}

/* Where we connect, for logs: host:port, or the master's name while the
 * sentinels are being asked. */
static const char *peer(const struct redis *r, char *buf, size_t n)
{
	if (r->master_name && (r->asking || !r->host))
		snprintf(buf, n, "master '%s'", r->master_name);
	else if (strchr(r->host, ':'))
		snprintf(buf, n, "[%s]:%d", r->host, r->port);
	else
		snprintf(buf, n, "%s:%d", r->host, r->port);
	return buf;
}

/* Any failure while connecting or connected ends here: drop the connection,
 * schedule the next attempt, then tell the caller. */
static void connection_failed(struct redis *r, const char *why)
{
	if (r->state == REDIS_STATE_CLOSED || r->state == REDIS_STATE_DISCONNECTED)
		return;
	enum redis_state prev = r->state;
	char where[300];
	peer(r, where, sizeof where);
	drop_context(r);
	drop_sentinel(r);
	r->asking = false;
	uv_timer_stop(&r->connect_timer);
	uv_timer_stop(&r->health_timer);
	struct pending *failed = take_pending(r);

	r->state = REDIS_STATE_DISCONNECTED;
	uint32_t delay = backoff_next(&r->backoff);
	uv_timer_start(&r->reconnect_timer, on_reconnect_timer, delay, 0);
	if (prev == REDIS_STATE_READY) {
		log_warn(r->name, "connection to %s lost (%s); retry in %u ms", where, why, delay);
	} else {
		/* A long outage says so every tenth attempt, not every attempt. */
		enum log_level level = r->backoff.attempt == 1 || r->backoff.attempt % 10 == 0
					   ? LOG_LEVEL_WARN
					   : LOG_LEVEL_DEBUG;
		log_at(level, r->name, "cannot connect to %s (%s, attempt %u); retry in %u ms",
		       where, why, r->backoff.attempt, delay);
	}

	notify(r, REDIS_STATE_DISCONNECTED);
	fail_pending(r, failed);
}

static void arm_command_timer(struct redis *r)
{
	if (r->state == REDIS_STATE_CLOSED && !r->draining)
		return;
	if (!r->head) {
		uv_timer_stop(&r->command_timer);
		return;
	}
	uint64_t now = uv_now(r->loop);
	uint64_t delay = r->head->deadline > now ? r->head->deadline - now : 0;
	uv_timer_start(&r->command_timer, on_command_timeout, delay, 0);
}

static void on_command_timeout(uv_timer_t *t)
{
	struct redis *r = t->data;
	struct pending *p = r->head;
	if (!p)
		return;
	if (p->deadline > uv_now(r->loop)) {
		arm_command_timer(r);
		return;
	}
	if (r->draining) {
		end_drain(r, "replies still missing at the command timeout");
		return;
	}
	char why[64];
	if (r->state == REDIS_STATE_CONNECTING)
		snprintf(why, sizeof why, "no answer within %u ms", r->connect_timeout_ms);
	else
		snprintf(why, sizeof why, "command timed out after %u ms", r->command_timeout_ms);
	connection_failed(r, why);
}

static void on_connect_timeout(uv_timer_t *t)
{
	struct redis *r = t->data;
	if (r->state != REDIS_STATE_CONNECTING)
		return;
	char why[64];
	if (r->asking) {
		snprintf(why, sizeof why, "no answer within %u ms", r->connect_timeout_ms);
		sentinel_failed(r, why);
		return;
	}
	snprintf(why, sizeof why, "not ready within %u ms", r->connect_timeout_ms);
	connection_failed(r, why);
}

static struct pending *new_pending(struct redis *r, enum pending_kind kind, unsigned timeout_ms)
{
	struct pending *p = mem_calloc(1, sizeof *p);
	p->kind = kind;
	p->deadline = uv_now(r->loop) + timeout_ms;
	p->sent_ns = uv_hrtime();
	return p;
}

/* Sends an internal command; on failure the connection is dropped and false
 * is returned. */
static bool send_internal(struct redis *r, struct pending *p, redisCallbackFn *fn, int argc,
			  const char **argv)
{
	if (redisAsyncCommandArgv(r->ac, fn, r, argc, argv, NULL) != REDIS_OK) {
		mem_free(p);
		connection_failed(r, "cannot queue a command");
		return false;
	}
	push_pending(r, p);
	return true;
}

static void become_ready(struct redis *r)
{
	uv_timer_stop(&r->connect_timer);
	backoff_reset(&r->backoff);
	r->state = REDIS_STATE_READY;
	uv_timer_start(&r->health_timer, on_health, r->health_interval_ms, r->health_interval_ms);
	char where[300];
	peer(r, where, sizeof where);
	const char *what = r->master_name ? " (master)" : "";
	if (is_pubsub(r))
		log_info(r->name, "connected to %s%s, subscribed to %zu channel(s)", where, what,
			 r->nchannels);
	else
		log_info(r->name, "connected to %s%s", where, what);
	notify(r, REDIS_STATE_READY);
}

static void handshake_done(struct redis *r)
{
	if (!is_pubsub(r)) {
		become_ready(r);
		return;
	}
	/* One SUBSCRIBE for all channels: Redis acknowledges each channel in
	 * order, and READY waits for the last acknowledgement. */
	const char **argv = mem_calloc(r->nchannels + 1, sizeof *argv);
	size_t *lens = mem_calloc(r->nchannels + 1, sizeof *lens);
	argv[0] = "SUBSCRIBE";
	lens[0] = strlen(argv[0]);
	for (size_t i = 0; i < r->nchannels; i++) {
		argv[i + 1] = r->channels[i].name;
		lens[i + 1] = r->channels[i].len;
	}
	int rc =
	    redisAsyncCommandArgv(r->ac, on_subscribe_reply, r, (int)r->nchannels + 1, argv, lens);
	mem_free(argv);
	mem_free(lens);
	if (rc != REDIS_OK) {
		connection_failed(r, "cannot queue SUBSCRIBE");
		return;
	}
	for (size_t i = 0; i < r->nchannels; i++) {
		struct pending *p = new_pending(r, PENDING_SUBSCRIBE, r->connect_timeout_ms);
		p->last = i + 1 == r->nchannels;
		push_pending(r, p);
	}
}

static bool is_master_role(const redisReply *reply)
{
	return reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
	       reply->element[0]->type == REDIS_REPLY_STRING &&
	       strcmp(reply->element[0]->str, "master") == 0;
}

/* A write refused because the node is (now) a replica. Scripts wrap it. */
static bool is_readonly(const redisReply *reply)
{
	return reply->type == REDIS_REPLY_ERROR && reply->str &&
	       (strncmp(reply->str, "READONLY", 8) == 0 || strstr(reply->str, "-READONLY"));
}

/* Replies to everything but SUBSCRIBE: callers' commands, the handshake and
 * PING. */
static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
	(void)privdata;
	struct redis *r = ac->data;
	redisReply *reply = reply_;
	/* NULL: hiredis is failing its callbacks on the way down; our own FIFO
	 * is failed by connection_failed() or redis_close(). */
	if (!r || !reply)
		return;
	if (r->draining) {
		mem_free(pop_pending(r));
		if (!r->head)
			end_drain(r, NULL);
		return;
	}
	struct pending *p = pop_pending(r);
	if (!p || p->kind == PENDING_SUBSCRIBE) {
		mem_free(p);
		connection_failed(r, "reply out of order");
		return;
	}
	char why[160];
	if (p->kind == PENDING_USER || p->kind == PENDING_HEALTH)
		metrics_observe(METRICS_H_DEP_COMMAND, r->dep,
				metrics_seconds(p->sent_ns, uv_hrtime()));
	switch (p->kind) {
	case PENDING_USER: {
		/* Sentinel demoted the node under us: the caller gets its error,
		 * then the next attempt asks where the master went. */
		bool demoted = r->master_name && is_readonly(reply);
		if (p->cb)
			p->cb(r, reply, p->arg);
		if (demoted)
			connection_failed(r, "the node is no longer the master (READONLY)");
		break;
	}
	case PENDING_HANDSHAKE:
		if (reply->type == REDIS_REPLY_ERROR) {
			/* Redis's error text never echoes the password. */
			snprintf(why, sizeof why, "handshake refused: %.*s", (int)reply->len,
				 reply->str);
			connection_failed(r, why);
		} else if (p->last) {
			handshake_done(r);
		}
		break;
	case PENDING_ROLE:
		if (!is_master_role(reply)) {
			const redisReply *e = reply->type == REDIS_REPLY_ARRAY && reply->elements
						  ? reply->element[0]
						  : reply;
			snprintf(why, sizeof why, "the node is not the master (ROLE %.*s)",
				 e->str ? (int)e->len : 1, e->str ? e->str : "?");
			connection_failed(r, why);
		} else if (p->last) {
			handshake_done(r);
		}
		break;
	case PENDING_HEALTH:
		if (reply->type == REDIS_REPLY_ERROR) {
			snprintf(why, sizeof why, "PING failed: %.*s", (int)reply->len, reply->str);
			connection_failed(r, why);
		}
		break;
	case PENDING_SUBSCRIBE: break;
	}
	mem_free(p);
}

static const struct channel *find_channel(const struct redis *r, const redisReply *name)
{
	if (name->type != REDIS_REPLY_STRING)
		return NULL;
	for (size_t i = 0; i < r->nchannels; i++) {
		const struct channel *c = &r->channels[i];
		if (c->len == name->len && memcmp(c->name, name->str, c->len) == 0)
			return c;
	}
	return NULL;
}

/*
 * hiredis keeps a SUBSCRIBE callback for the life of the connection and calls
 * it for every "subscribe" acknowledgement and every "message". Only
 * acknowledgements answer something in our FIFO.
 */
static void on_subscribe_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
	(void)privdata;
	struct redis *r = ac->data;
	redisReply *reply = reply_;
	if (!r || !reply)
		return;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	const char *type = reply->element[0]->str;

	if (strcasecmp(type, "message") == 0) {
		const struct channel *c = find_channel(r, reply->element[1]);
		const redisReply *payload = reply->element[2];
		if (c && payload->type == REDIS_REPLY_STRING)
			c->on_message(r, c->name, payload->str, payload->len, c->arg);
		return;
	}
	if (strcasecmp(type, "subscribe") != 0)
		return;
	struct pending *p = pop_pending(r);
	if (!p || (p->kind != PENDING_SUBSCRIBE && p->kind != PENDING_HEALTH)) {
		mem_free(p);
		connection_failed(r, "subscription reply out of order");
		return;
	}
	bool ready = p->kind == PENDING_SUBSCRIBE && p->last;
	if (p->kind == PENDING_HEALTH)
		metrics_observe(METRICS_H_DEP_COMMAND, r->dep,
				metrics_seconds(p->sent_ns, uv_hrtime()));
	mem_free(p);
	if (ready)
		become_ready(r);
}

/*
 * Liveness probe. hiredis 0.14 loses the answer to a PING sent in subscribed
 * mode (it looks "pong" up as a channel and keeps the callback forever), so a
 * pub/sub client re-SUBSCRIBEs to its first channel instead: idempotent for
 * Redis, acknowledged in order, and it goes through the same FIFO timeout.
 */
static void on_health(uv_timer_t *t)
{
	struct redis *r = t->data;
	/* Commands in flight already carry a deadline. */
	if (r->state != REDIS_STATE_READY || !r->ac || r->head)
		return;
	struct pending *p = new_pending(r, PENDING_HEALTH, r->command_timeout_ms);
	if (is_pubsub(r)) {
		const char *argv[2] = {"SUBSCRIBE", r->channels[0].name};
		size_t lens[2] = {9, r->channels[0].len};
		if (redisAsyncCommandArgv(r->ac, on_subscribe_reply, r, 2, argv, lens) !=
		    REDIS_OK) {
			mem_free(p);
			connection_failed(r, "cannot queue the health check");
			return;
		}
		push_pending(r, p);
		return;
	}
	/* With Sentinel, ROLE also notices a demotion that came without a
	 * disconnect (a partition healed, a manual REPLICAOF). */
	const char *argv[1] = {r->master_name ? "ROLE" : "PING"};
	if (r->master_name)
		p->kind = PENDING_ROLE;
	send_internal(r, p, on_reply, 1, argv);
}

/* A context (the connection or a sentinel query) failed. hiredis frees it
 * itself after its connect and disconnect callbacks (freed); otherwise the
 * failure handler drops it. */
static void context_failed(struct redis *r, redisAsyncContext *ac, bool freed, const char *why)
{
	bool sentinel = ac == r->sac;
	if (!sentinel && ac != r->ac)
		return;
	if (freed) {
		ac->data = NULL;
		if (sentinel)
			r->sac = NULL;
		else
			r->ac = NULL;
	}
	if (r->draining && !sentinel) {
		end_drain(r, why);
		return;
	}
	if (sentinel)
		sentinel_failed(r, why);
	else
		connection_failed(r, why);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct redis *r = ac->data;
	if (!r || status == REDIS_OK)
		return;
	char why[128];
	snprintf(why, sizeof why, "%s", ac->errstr ? ac->errstr : "connect failed");
	context_failed(r, ac, true, why);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct redis *r = ac->data;
	if (!r)
		return;
	char why[128];
	if (status == REDIS_OK || !ac->errstr || !ac->errstr[0])
		snprintf(why, sizeof why, "server closed the connection");
	else
		snprintf(why, sizeof why, "%s", ac->errstr);
	context_failed(r, ac, true, why);
}

/*
 * hiredis 0.14's adapters/libuv.h ignores a poll error, and libuv reports
 * POLLERR (a refused connect, a reset connection) as UV_EBADF and stops the
 * watcher: the connection would hang until a timeout. We keep the adapter's
 * struct, attach and cleanup, and only swap in a poll callback that lets
 * hiredis find the socket error itself.
 */
static void on_poll(uv_poll_t *handle, int status, int events)
{
	redisLibuvEvents *p = handle->data;
	if (!p->context)
		return;
	if (status < 0) {
		redisAsyncContext *ac = p->context;
		if (ac->c.flags & REDIS_CONNECTED)
			redisAsyncHandleRead(ac);
		else
			redisAsyncHandleWrite(ac);
		/* hiredis saw no error (the watcher is stopped): drop it ourselves
		 * rather than wait for a timeout. */
		if (p->context) {
			struct redis *r = p->context->data;
			char why[64];
			snprintf(why, sizeof why, "socket error (%s)", uv_strerror(status));
			if (r)
				context_failed(r, p->context, false, why);
		}
		return;
	}
	if (events & UV_READABLE)
		redisAsyncHandleRead(p->context);
	if (p->context && (events & UV_WRITABLE))
		redisAsyncHandleWrite(p->context);
}

static void poll_update(redisLibuvEvents *p, int add, int del)
{
	p->events = (p->events | add) & ~del;
	if (p->events)
		uv_poll_start(&p->handle, p->events, on_poll);
	else
		uv_poll_stop(&p->handle);
}

static void poll_add_read(void *privdata)
{
	poll_update(privdata, UV_READABLE, 0);
}

static void poll_del_read(void *privdata)
{
	poll_update(privdata, 0, UV_READABLE);
}

static void poll_add_write(void *privdata)
{
	poll_update(privdata, UV_WRITABLE, 0);
}

static void poll_del_write(void *privdata)
{
	poll_update(privdata, 0, UV_WRITABLE);
}

/* A hiredis context to ip:port on our loop, with our poll callback; NULL with
 * the reason in why. */
static redisAsyncContext *new_context(struct redis *r, const char *ip, int port, char *why,
				      size_t n)
{
	redisAsyncContext *ac = redisAsyncConnect(ip, port);
	if (!ac) {
		snprintf(why, n, "out of memory");
		return NULL;
	}
	if (ac->err) {
		snprintf(why, n, "%s", ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
		snprintf(why, n, "cannot attach to the loop");
		redisAsyncFree(ac);
		return NULL;
	}
	ac->ev.addRead = poll_add_read;
	ac->ev.delRead = poll_del_read;
	ac->ev.addWrite = poll_add_write;
	ac->ev.delWrite = poll_del_write;
	ac->data = r;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	return ac;
}

static void open_context(struct redis *r, const char *ip)
{
	char why[160];
	redisAsyncContext *ac = new_context(r, ip, r->port, why, sizeof why);
	if (!ac) {
		connection_failed(r, why);
		return;
	}
	r->ac = ac;

	/* The handshake is queued now and written once the TCP connect
	 * completes. There is always at least one command, so READY is only
	 * ever reached from a reply, where hiredis defers a free we may do. */
	const char *argv[2];
	char db[16];
	struct pending *p;
	bool role = r->master_name != NULL;
	if (r->password) {
		argv[0] = "AUTH";
		argv[1] = r->password;
		p = new_pending(r, PENDING_HANDSHAKE, r->connect_timeout_ms);
		p->last = r->db <= 0 && !role;
		if (!send_internal(r, p, on_reply, 2, argv))
			return;
	}
	if (r->db > 0) {
		snprintf(db, sizeof db, "%d", r->db);
		argv[0] = "SELECT";
		argv[1] = db;
		p = new_pending(r, PENDING_HANDSHAKE, r->connect_timeout_ms);
		p->last = !role;
		if (!send_internal(r, p, on_reply, 2, argv))
			return;
	}
	if (role) {
		/* A sentinel's answer may be stale (a failover under way, an old
		 * master back before being reconfigured): only a master will do. */
		argv[0] = "ROLE";
		p = new_pending(r, PENDING_ROLE, r->connect_timeout_ms);
		p->last = true;
		send_internal(r, p, on_reply, 1, argv);
	} else if (!r->password && r->db <= 0) {
		argv[0] = "PING";
		p = new_pending(r, PENDING_HANDSHAKE, r->connect_timeout_ms);
		p->last = true;
		send_internal(r, p, on_reply, 1, argv);
	}
}

static const struct sentinel *cur_sentinel(const struct redis *r)
{
	return &r->sentinels[r->sentinel_cur];
}

/* "host:port" with brackets around an IPv6 address. */
static const char *hostport(const char *host, int port, char *buf, size_t n)
{
	snprintf(buf, n, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
	return buf;
}

static void start_connect(struct redis *r, const char *host);

/* The sentinel named a master: connect there (ROLE will confirm it). */
static void master_found(struct redis *r, const char *host, int port)
{
	const struct sentinel *sn = cur_sentinel(r);
	char from[300], to[300], via[300];
	hostport(host, port, to, sizeof to);
	hostport(sn->host, sn->port, via, sizeof via);
	if (r->host && (strcmp(r->host, host) != 0 || r->port != port)) {
		log_warn(r->name, "failover: master '%s' moved from %s to %s (sentinel %s)",
			 r->master_name, hostport(r->host, r->port, from, sizeof from), to, via);
	} else {
		/* Said once per master, not on every reconnect. */
		log_at(r->host ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, r->name,
		       "sentinel %s says master '%s' is at %s", via, r->master_name, to);
	}
	/* Asked first next time: it knew. */
	r->sentinel_first = r->sentinel_cur;
	mem_free(r->host);
	r->host = mem_strdup(host);
	r->port = port;
	r->asking = false;
	r->attempt++;
	uv_timer_start(&r->connect_timer, on_connect_timeout, r->connect_timeout_ms, 0);
	start_connect(r, r->host);
}

static void on_sentinel_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
	(void)privdata;
	struct redis *r = ac->data;
	redisReply *reply = reply_;
	if (!r || !reply || ac != r->sac)
		return;
	char why[160];
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		const redisReply *h = reply->element[0];
		char *end;
		errno = 0;
		long port = strtol(reply->element[1]->str, &end, 10);
		if (h->len > 0 && h->len < 256 && strlen(h->str) == h->len && !errno &&
		    end != reply->element[1]->str && !*end && port > 0 && port <= 65535) {
			/* hiredis frees the query's context once we return, and
			 * the reply after that: both are usable until then. */
			drop_sentinel(r);
			master_found(r, h->str, (int)port);
			return;
		}
		snprintf(why, sizeof why, "bad address for the master");
	} else if (reply->type == REDIS_REPLY_NIL) {
		snprintf(why, sizeof why, "does not know master '%s'", r->master_name);
	} else if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof why, "%.*s", (int)reply->len, reply->str);
	} else {
		snprintf(why, sizeof why, "unexpected reply to SENTINEL get-master-addr-by-name");
	}
	sentinel_failed(r, why);
}

static void open_sentinel(struct redis *r, const char *ip)
{
	char why[160];
	redisAsyncContext *ac = new_context(r, ip, cur_sentinel(r)->port, why, sizeof why);
	if (!ac) {
		sentinel_failed(r, why);
		return;
	}
	r->sac = ac;
	const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", r->master_name};
	if (redisAsyncCommandArgv(ac, on_sentinel_reply, NULL, 3, argv, NULL) != REDIS_OK)
		sentinel_failed(r, "cannot queue the query");
}

/* The current sentinel gave no master: ask the next one, and when all have
 * been asked, this attempt failed (the usual backoff follows). */
static void sentinel_failed(struct redis *r, const char *why)
{
	if (r->state != REDIS_STATE_CONNECTING || !r->asking)
		return;
	drop_sentinel(r);
	const struct sentinel *sn = cur_sentinel(r);
	char at[300];
	/* Formatted before log_debug, which skips its arguments below debug. */
	hostport(sn->host, sn->port, at, sizeof at);
	log_debug(r->name, "sentinel %s: %s", at, why);
	snprintf(r->sentinel_why, sizeof r->sentinel_why, "sentinel %s: %s", at, why);
	ask_sentinel(r);
}

static void ask_sentinel(struct redis *r)
{
	if (r->sentinel_tried == r->nsentinels) {
		char why[600];
		snprintf(why, sizeof why, "no sentinel gave its address; last: %s",
			 r->sentinel_why);
		connection_failed(r, why);
		return;
	}
	r->sentinel_cur = (r->sentinel_first + r->sentinel_tried++) % r->nsentinels;
	r->attempt++;
	uv_timer_start(&r->connect_timer, on_connect_timeout, r->connect_timeout_ms, 0);
	start_connect(r, cur_sentinel(r)->host);
}

/* The address of what we are connecting to now is known: open it. */
static void open_ip(struct redis *r, const char *ip)
{
	if (r->asking)
		open_sentinel(r, ip);
	else
		open_context(r, ip);
}

static void step_failed(struct redis *r, const char *why)
{
	if (r->asking)
		sentinel_failed(r, why);
	else
		connection_failed(r, why);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct resolve *rs = req->data;
	struct redis *r = rs->r;
	r->resolves--;
	if (r->resolve == rs)
		r->resolve = NULL;
	bool current = rs->attempt == r->attempt && r->state == REDIS_STATE_CONNECTING;
	mem_free(rs);
	if (!current) {
		uv_freeaddrinfo(res);
		/* redis_close() may be waiting for this lookup. */
		if (r->state == REDIS_STATE_CLOSED)
			maybe_finish_close(r);
		return;
	}
	/* IPv4 first, as hiredis does: "localhost" often lists ::1 first while
	 * Redis listens on 127.0.0.1 only. */
	char ip[INET6_ADDRSTRLEN] = "";
	const struct addrinfo *pick = NULL;
	for (const struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next) {
		if (a->ai_family == AF_INET) {
			pick = a;
			break;
		}
		if (a->ai_family == AF_INET6 && !pick)
			pick = a;
	}
	if (pick && pick->ai_family == AF_INET)
		uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, ip, sizeof ip);
	else if (pick)
		uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, ip, sizeof ip);
	uv_freeaddrinfo(res);
	if (!ip[0]) {
		char why[300];
		snprintf(why, sizeof why, "cannot resolve %s: %s",
			 r->asking ? cur_sentinel(r)->host : r->host,
			 status ? uv_strerror(status) : "no address");
		step_failed(r, why);
		return;
	}
	open_ip(r, ip);
}

static bool is_numeric_host(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Connects to host (the master, or the sentinel being asked), resolving the
 * name off the loop first when it is not an address. */
static void start_connect(struct redis *r, const char *host)
{
	if (is_numeric_host(host)) {
		open_ip(r, host);
		return;
	}
	/* getaddrinfo() blocks, and hiredis would call it on the loop. */
	struct resolve *rs = mem_calloc(1, sizeof *rs);
	rs->r = r;
	rs->attempt = r->attempt;
	rs->req.data = rs;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	int rc = uv_getaddrinfo(r->loop, &rs->req, on_resolved, host, NULL, &hints);
	if (rc) {
		mem_free(rs);
		char why[300];
		snprintf(why, sizeof why, "cannot resolve %s: %s", host, uv_strerror(rc));
		step_failed(r, why);
		return;
	}
	r->resolves++;
	r->resolve = rs;
}

static void start_attempt(struct redis *r)
{
	if (r->state != REDIS_STATE_DISCONNECTED)
		return;
	r->attempt++;
	r->state = REDIS_STATE_CONNECTING;
	r->asking = r->master_name != NULL;
	char where[300];
	log_debug(r->name, "connecting to %s (attempt %u)", peer(r, where, sizeof where),
		  r->backoff.attempt + 1);
	uv_timer_start(&r->connect_timer, on_connect_timeout, r->connect_timeout_ms, 0);
	notify(r, REDIS_STATE_CONNECTING);
	if (r->state != REDIS_STATE_CONNECTING)
		return;

	if (r->master_name) {
		/* Every attempt asks again: after a failover, the master we knew
		 * may be gone or a replica now. */
		r->sentinel_tried = 0;
		r->sentinel_why[0] = '\0';
		ask_sentinel(r);
		return;
	}
	start_connect(r, r->host);
}

static void on_reconnect_timer(uv_timer_t *t)
{
	start_attempt(t->data);
}

static unsigned or_default(unsigned v, unsigned def)
{
	return v ? v : def;
}

/* "host:port" or "[v6]:port" into a host and a port; false if malformed. */
static bool parse_hostport(const char *s, struct sentinel *out)
{
	const char *host = s, *colon;
	size_t len;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return false;
		host = s + 1;
		len = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return false;
		len = (size_t)(colon - s);
	}
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (len == 0 || errno || end == colon + 1 || *end || port <= 0 || port > 65535)
		return false;
	out->host = mem_alloc(len + 1);
	memcpy(out->host, host, len);
	out->host[len] = '\0';
	out->port = (int)port;
	return true;
}

static void free_sentinels(struct sentinel *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mem_free(s[i].host);
	mem_free(s);
}

struct redis *redis_new(uv_loop_t *loop, const struct redis_options *opts, redis_state_fn on_state,
			void *arg)
{
	if (!loop || !opts || opts->db < 0)
		return NULL;
	bool sentinel = opts->sentinel_master != NULL;
	if (sentinel && (!opts->sentinel_master[0] || !opts->sentinels || !opts->n_sentinels))
		return NULL;
	if (!sentinel && (!opts->host || !opts->host[0] || opts->port <= 0 || opts->port > 65535))
		return NULL;
	struct sentinel *sentinels = NULL;
	if (sentinel) {
		sentinels = mem_calloc(opts->n_sentinels, sizeof *sentinels);
		for (size_t i = 0; i < opts->n_sentinels; i++) {
			const char *a = opts->sentinels[i];
			if (!a || !parse_hostport(a, &sentinels[i])) {
				free_sentinels(sentinels, i);
				return NULL;
			}
		}
	}
	struct redis *r = mem_calloc(1, sizeof *r);
	r->loop = loop;
	r->name = mem_strdup(opts->name ? opts->name : "redis");
	r->dep = opts->dep;
	if (sentinel) {
		r->master_name = mem_strdup(opts->sentinel_master);
		r->sentinels = sentinels;
		r->nsentinels = opts->n_sentinels;
	} else {
		r->host = mem_strdup(opts->host);
		r->port = opts->port;
	}
	r->password = opts->password ? mem_strdup(opts->password) : NULL;
	r->db = opts->db;
	r->connect_timeout_ms = or_default(opts->connect_timeout_ms, 2000);
	r->command_timeout_ms = or_default(opts->command_timeout_ms, 3000);
	r->health_interval_ms = or_default(opts->health_interval_ms, 5000);
	r->on_state = on_state;
	r->arg = arg;
	r->state = REDIS_STATE_DISCONNECTED;

	/* Per process and per client, so that instances restarted together
	 * still spread their reconnects. */
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ uv_hrtime() ^
			(uint64_t)(uintptr_t)r;
	backoff_init(&r->backoff, or_default(opts->backoff_min_ms, 100),
		     or_default(opts->backoff_max_ms, 5000), seed);

	uv_timer_t *timers[] = {&r->reconnect_timer, &r->connect_timer, &r->command_timer,
				&r->health_timer};
	for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
		uv_timer_init(loop, timers[i]);
		timers[i]->data = r;
	}
	return r;
}

void redis_start(struct redis *r)
{
	if (r->started || r->state == REDIS_STATE_CLOSED)
		return;
	r->started = true;
	/* From the loop, so that on_state never runs inside redis_start(). */
	uv_timer_start(&r->reconnect_timer, on_reconnect_timer, 0, 0);
}

void redis_retry_now(struct redis *r)
{
	/* Only a client waiting out its backoff: one that is connecting is
	 * already doing what we would ask. */
	if (!r->started || r->state != REDIS_STATE_DISCONNECTED ||
	    !uv_is_active((uv_handle_t *)&r->reconnect_timer))
		return;
	uv_timer_start(&r->reconnect_timer, on_reconnect_timer, 0, 0);
}

void redis_subscribe(struct redis *r, const char *channel, redis_message_fn on_message, void *arg)
{
	if (r->started) {
		log_error(r->name, "subscribe to %s after start ignored", channel);
		return;
	}
	r->channels = mem_realloc(r->channels, (r->nchannels + 1) * sizeof *r->channels);
	struct channel *c = &r->channels[r->nchannels++];
	c->name = mem_strdup(channel);
	c->len = strlen(channel);
	c->on_message = on_message;
	c->arg = arg;
}

static int command_check(const struct redis *r)
{
	if (r->state != REDIS_STATE_READY || !r->ac ||
	    (r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)))
		return -ENOTCONN;
	if (is_pubsub(r))
		return -EINVAL;
	return 0;
}

int redis_command(struct redis *r, redis_reply_fn cb, void *arg, const char *fmt, ...)
{
	if (is_pubsub(r))
		return -EINVAL;
	int rc = command_check(r);
	if (rc)
		return rc;
	va_list ap;
	va_start(ap, fmt);
	rc = redisvAsyncCommand(r->ac, on_reply, r, fmt, ap);
	va_end(ap);
	if (rc != REDIS_OK)
		return -EINVAL;
	struct pending *p = new_pending(r, PENDING_USER, r->command_timeout_ms);
	p->cb = cb;
	p->arg = arg;
	push_pending(r, p);
	return 0;
}

int redis_command_argv(struct redis *r, redis_reply_fn cb, void *arg, int argc, const char **argv,
		       const size_t *argvlen)
{
	if (is_pubsub(r) || argc <= 0 || !argv)
		return -EINVAL;
	int rc = command_check(r);
	if (rc)
		return rc;
	if (redisAsyncCommandArgv(r->ac, on_reply, r, argc, argv, argvlen) != REDIS_OK)
		return -EINVAL;
	struct pending *p = new_pending(r, PENDING_USER, r->command_timeout_ms);
	p->cb = cb;
	p->arg = arg;
	push_pending(r, p);
	return 0;
}

static void finish_close(struct redis *r)
{
	fail_pending(r, r->failed);
	r->failed = NULL;
	if (r->on_closed)
		r->on_closed(r->closed_arg);
	for (size_t i = 0; i < r->nchannels; i++)
		mem_free(r->channels[i].name);
	mem_free(r->channels);
	mem_free(r->name);
	mem_free(r->host);
	mem_free(r->master_name);
	free_sentinels(r->sentinels, r->nsentinels);
	if (r->password) {
		/* Keep the secret out of freed heap. */
		memset(r->password, 0, strlen(r->password));
		mem_free(r->password);
	}
	mem_free(r);
}

static void maybe_finish_close(struct redis *r)
{
	if (r->open_handles == 0 && r->resolves == 0 && !r->draining)
		finish_close(r);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct redis *r = h->data;
	r->open_handles--;
	maybe_finish_close(r);
}

/* Hands every caller's callback in the FIFO over to r->failed (they get
 * NULL before on_closed, as with any close) and leaves the entries behind
 * without one, to be matched with their replies. r->failed is empty: a
 * client is closed once. */
static void hand_over_callers(struct redis *r)
{
	struct pending **tail = &r->failed;
	for (struct pending *p = r->head; p; p = p->next) {
		if (p->kind != PENDING_USER || !p->cb)
			continue;
		struct pending *f = mem_calloc(1, sizeof *f);
		f->kind = PENDING_USER;
		f->cb = p->cb;
		f->arg = p->arg;
		p->cb = NULL;
		*tail = f;
		tail = &f->next;
	}
}

static void close_timers(struct redis *r, bool command_timer_too)
{
	uv_timer_t *timers[] = {&r->reconnect_timer, &r->connect_timer, &r->health_timer,
				&r->command_timer};
	size_t n = sizeof timers / sizeof timers[0] - (command_timer_too ? 0 : 1);
	for (size_t i = 0; i < n; i++) {
		r->open_handles++;
		uv_close((uv_handle_t *)timers[i], on_timer_closed);
	}
}

static void start_close(struct redis *r, void (*on_closed)(void *arg), void *arg, bool drain)
{
	char where[300];
	peer(r, where, sizeof where);
	r->on_closed = on_closed;
	r->closed_arg = arg;
	drain = drain && r->state == REDIS_STATE_READY && r->ac && r->head && !is_pubsub(r);
	r->state = REDIS_STATE_CLOSED;
	drop_sentinel(r);
	if (r->resolve)
		uv_cancel((uv_req_t *)&r->resolve->req);
	if (drain) {
		log_info(r->name,
			 "closing connection to %s once the commands in flight are answered",
			 where);
		r->draining = true;
		hand_over_callers(r);
		close_timers(r, false);
		return;
	}
	log_info(r->name, "closing connection to %s", where);
	drop_context(r);
	/* Failed from the loop, not from inside redis_close(). */
	r->failed = take_pending(r);
	close_timers(r, true);
}

/* The last reply of a draining close arrived, or it cannot arrive any more
 * (why says so): now the connection goes. */
static void end_drain(struct redis *r, const char *why)
{
	if (why)
		log_warn(r->name, "closing without the last replies (%s)", why);
	r->draining = false;
	drop_context(r);
	fail_pending(r, take_pending(r));
	r->open_handles++;
	uv_close((uv_handle_t *)&r->command_timer, on_timer_closed);
}

void redis_close(struct redis *r, void (*on_closed)(void *arg), void *arg)
{
	if (r && r->state != REDIS_STATE_CLOSED)
		start_close(r, on_closed, arg, false);
}

void redis_drain_and_close(struct redis *r, void (*on_closed)(void *arg), void *arg)
{
	if (r && r->state != REDIS_STATE_CLOSED)
		start_close(r, on_closed, arg, true);
}
