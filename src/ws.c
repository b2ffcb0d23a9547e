#include "stockalert/ws.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "stockalert/alert.h"
#include "stockalert/alerts.h"
#include "stockalert/auth.h"
#include "stockalert/buf.h"
#include "stockalert/http.h"
#include "stockalert/hub.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"
#include "stockalert/peers.h"
#include "stockalert/presence.h"
#include "stockalert/subs.h"
#include "stockalert/wheel.h"

#define MOD	       "ws"
/* Malformed client frames tolerated (each answered with an error frame)
 * before the socket is closed with 1008. */
#define BAD_FRAMES_MAX 10
/* Alerts replayed on resume at most; GET /api/me/alerts pages the rest. */
#define WS_REPLAY_MAX  1000

enum {
	CLOSE_NORMAL = 1000,
	CLOSE_GOING_AWAY = 1001,
	CLOSE_POLICY = 1008,
	CLOSE_TOO_BIG = 1009,
	CLOSE_INTERNAL = 1011,
	CLOSE_TOKEN_EXPIRED = 4001,
	CLOSE_TOO_SLOW = 4008,
	CLOSE_TOO_MANY = 4029,
};

/*
 * What an asynchronous operation (a subscribe going to MySQL and Redis)
 * holds on to instead of the session, which lws frees when the socket
 * closes: the session clears `s` then, and the last reference frees it.
 */
struct ws_ticket {
	struct ws_session *s;
	unsigned refs;
};

struct ws_pending {
	struct ws_ticket *ticket;
	int64_t product;
	bool subscribe;
};

/*
 * Frames that go out before anything queued in the hub: hello, then a
 * resume's replay (live alerts queue in the hub meanwhile), and the resume
 * point until the replay starts. Freed once sent: idle sockets hold none.
 */
struct ws_pre {
	char *since;
	uint32_t n, pos;
	struct hub_msg *msg[];
};

/*
 * One per socket, allocated by lws: 136 bytes, which an idle socket keeps
 * for its lifetime, so what only some sockets need for a while (the
 * frames before the live ones, a message arriving in fragments) hangs off
 * a pointer.
 */
struct ws_session {
	struct lws *wsi;
	struct ws_ticket *ticket;    /* lazily, for the first async operation */
	struct hub_conn *conn;	     /* NULL until registered, and after */
	struct wheel_node expiry;    /* token exp + leeway */
	struct wheel_node heartbeat; /* next look at the peer's silence */
	int64_t last_rx;	     /* second of the last frame from the peer */
	struct buf *rx;		     /* fragments of a message being received */
	struct ws_pre *pre;	     /* NULL once sent */
	uint64_t floor;		     /* live alerts up to this order were replayed */
	uint64_t conn_no;	     /* this instance's number for the connection */
	uint16_t close_code;	     /* non-zero: close at the next WRITEABLE */
	uint16_t inflight;	     /* subscription changes awaiting their answer */
	uint8_t bad_frames;
	bool ping_due : 1;  /* send a protocol ping at WRITEABLE */
	bool tls : 1;	    /* lws_is_ssl(wsi), asked once, not per message */
	bool replaying : 1; /* hold all output until the replay is in */
	bool in_rx : 1;	    /* inside this socket's RECEIVE callback */
	bool counted : 1;   /* included in the open-socket gauge */
};

/* conn_id as hello tells it: the instance's tag, then conn_no. */
#define CONN_ID_LEN 26

/*
 * The claims verified in ws_confirm_upgrade(), handed to the ESTABLISHED
 * callback of the same wsi. Both run back to back on the loop thread, so
 * one slot suffices; anything else re-verifies.
 */
static struct {
	const struct lws *wsi;
	struct auth_claims claims;
	bool has_since;
	char since[48]; /* ?since= (headers are gone by ESTABLISHED) */
} pending_claims;

static uint64_t conn_counter;
static char instance_tag[9];

size_t ws_session_size(void)
{
	return sizeof(struct ws_session);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct http_env *env_of(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

/* Writes a complete refusal response from inside CONFIRM_UPGRADE. */
static int refuse(struct lws *wsi, unsigned status, const char *code, const char *message)
{
	unsigned char buf[LWS_PRE + 1024];
	unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
	char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	size_t blen = body ? strlen(body) : 0;
	int rc = 1;

	metrics_inc(METRICS_WS_UPGRADES_REFUSED);
	metrics_http_response((int)status);
	if (lws_add_http_common_headers(wsi, status, "application/json", blen, &p, end) ||
	    (status == 401 &&
	     lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
					 (const unsigned char *)"Bearer", 6, &p, end)) ||
	    lws_finalize_write_http_header(wsi, start, &p, end)) {
		rc = -1;
		goto out;
	}
	if (blen) {
		unsigned char *b = mem_alloc(LWS_PRE + blen);
		memcpy(b + LWS_PRE, body, blen);
		if (lws_write(wsi, b + LWS_PRE, blen, LWS_WRITE_HTTP_FINAL) < (int)blen)
			rc = -1;
		mem_free(b);
	}
out:
	free(body);
	json_decref(j);
	return rc;
}

static bool origin_allowed(struct lws *wsi, const struct config *cfg)
{
	char origin[256], host[256], self[300];
	int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
	if (n <= 0)
		return lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) == 0; /* none: not a browser */
	if (config_origin_listed(cfg, origin))
		return true;
	/* The daemon's own origin, as the Host header names it, so the page it
	 * serves works on whatever name it was reached by. */
	if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) > 0) {
		snprintf(self, sizeof self, "%s://%s", lws_is_ssl(wsi) ? "https" : "http", host);
		if (strcmp(origin, self) == 0)
			return true;
	}
	return false;
}

static enum auth_result authenticate(struct lws *wsi, struct http_env *env,
				     struct auth_claims *claims)
{
	const char *tok = http_request_token(wsi, true);
	if (!tok)
		return AUTH_ERR_MALFORMED;
	return auth_verify(env->auth, tok, strlen(tok), (int64_t)time(NULL), claims);
}

int ws_confirm_upgrade(struct lws *wsi, struct http_env *env)
{
	char path[64];
	struct auth_claims claims;

	/* Never read `in` here: lws 4.1.6 may hand a freed pointer
	 * (CVE-2025-11677). Everything comes from the headers. */
	char upgrade[16];
	if (lws_hdr_copy(wsi, upgrade, sizeof upgrade, WSI_TOKEN_UPGRADE) <= 0 ||
	    strcasecmp(upgrade, "websocket") != 0)
		return refuse(wsi, 400, "bad_upgrade", "only WebSocket upgrades are served");
	if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0 ||
	    strcmp(path, "/ws") != 0)
		return refuse(wsi, 404, "not_found", "WebSockets are served at /ws");
	if (env->shutting_down)
		return refuse(wsi, 503, "shutting_down", "server is shutting down");
	if (!origin_allowed(wsi, env->cfg))
		return refuse(wsi, 403, "origin_refused", "Origin not allowed");
	enum auth_result ar = authenticate(wsi, env, &claims);
	if (ar != AUTH_OK) {
		log_info(MOD, "upgrade refused: %s", auth_result_str(ar));
		return refuse(wsi, 401, "unauthorized",
			      ar == AUTH_ERR_MALFORMED ? "missing or malformed token"
						       : auth_result_str(ar));
	}
	if (hub_total_conns(env->hub) >= (size_t)env->cfg->ws.max_connections)
		return refuse(wsi, 503, "too_many_connections", "server connection limit reached");
	pending_claims.wsi = wsi;
	pending_claims.claims = claims;
	/* A since too long to be an alert id is kept as "", which the replay
	 * answers with bad_since. */
	int n = http_query_arg(wsi, "since", pending_claims.since, sizeof pending_claims.since);
	pending_claims.has_since = n != -1;
	if (n < 0)
		pending_claims.since[0] = '\0';
	return 0;
}

/* Encodes j and queues it on this session only. */
static void send_json(struct ws_session *s, struct http_env *env, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text || !s->conn) {
		free(text);
		return;
	}
	struct hub_msg *m = hub_msg_new(env->hub, text, strlen(text));
	free(text);
	hub_push(env->hub, s->conn, m);
	hub_msg_unref(m);
}

/* Writes s's conn_id into out (CONN_ID_LEN bytes) and returns it. */
static const char *conn_id(const struct ws_session *s, char *out)
{
	snprintf(out, CONN_ID_LEN, "%s-%llx", instance_tag, (unsigned long long)s->conn_no);
	return out;
}

static void rx_free(struct ws_session *s)
{
	if (s->rx) {
		buf_free(s->rx);
		mem_free(s->rx);
		s->rx = NULL;
	}
}

static bool pre_pending(const struct ws_session *s)
{
	return s->pre && s->pre->pos < s->pre->n;
}

static void pre_add(struct ws_session *s, struct hub_msg *m)
{
	uint32_t n = s->pre ? s->pre->n : 0;
	struct ws_pre *p = mem_realloc(s->pre, sizeof *p + (n + 1) * sizeof p->msg[0]);
	if (!s->pre) {
		p->since = NULL;
		p->pos = 0;
	}
	p->msg[n] = m;
	p->n = n + 1;
	s->pre = p;
}

static void pre_add_json(struct ws_session *s, struct http_env *env, json_t *j, uint64_t order)
{
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return;
	struct hub_msg *m = hub_msg_new(env->hub, text, strlen(text));
	m->order = order;
	free(text);
	pre_add(s, m);
}

static void pre_free(struct ws_session *s)
{
	if (!s->pre)
		return;
	for (uint32_t i = s->pre->pos; i < s->pre->n; i++)
		hub_msg_unref(s->pre->msg[i]);
	mem_free(s->pre->since);
	mem_free(s->pre);
	s->pre = NULL;
}

static void send_error(struct ws_session *s, struct http_env *env, const char *code,
		       const char *message)
{
	send_json(s, env,
		  json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message));
}

static const char *close_reason_text(uint16_t code)
{
	switch (code) {
	case CLOSE_GOING_AWAY: return "server shutting down";
	case CLOSE_POLICY: return "policy violation";
	case CLOSE_TOKEN_EXPIRED: return "token expired";
	case CLOSE_TOO_SLOW: return "too slow: send queue overflow";
	case CLOSE_TOO_MANY: return "too many connections for this user";
	default: return "";
	}
}

/*
 * A graceful stop closes the sockets a batch at a time. Each close puts its
 * wsi on lws 4.1.6's sorted timer list twice (the close timer below, then
 * lws's wait for the close acknowledgement), and lws inserts by walking that
 * list from its head: closing 19,000 sockets at once spent 12 s in
 * lws_dll2_add_sorted, far past any shutdown grace. With at most
 * STOP_INFLIGHT closes under way, the list stays short. A peer that never
 * acknowledges holds its place for lws's 5 s, so STOP_TRICKLE closes a tick
 * start regardless: silent peers cannot hold back the others.
 */
#define STOP_BATCH    256
#define STOP_INFLIGHT 1024
#define STOP_TRICKLE  16
#define STOP_TICK_MS  1
#define STOP_IDLE_MS  100 /* once every socket is closing: sockets opened late */

static struct {
	uv_timer_t timer;
	size_t closing; /* sockets with a close under way */
} stop_;

static void close_because(struct ws_session *s, uint16_t code, const char *reason)
{
	if (s->close_code)
		return;
	s->close_code = code;
	stop_.closing++;
	metrics_ws_close(code);
	lws_close_reason(s->wsi, (enum lws_close_status)code, (unsigned char *)reason,
			 strlen(reason));
	/*
	 * Close from the wsi's own timer callback (LWS_CALLBACK_TIMER returns
	 * -1): lws then runs its close handshake, sending the close frame with
	 * the reason above and dropping a peer that will not take it after 5 s.
	 * Both other ways drop the socket without a close frame in lws 4.1.6:
	 * returning -1 from WRITEABLE (taken for a failed write) and a timeout
	 * kill (taken for a dead peer).
	 */
	lws_set_timer_usecs(s->wsi, 1);
	/* From outside lws's own callbacks (the expiry wheel, a fan-out from a
	 * Redis reply), lws would not look at its timers again until its next
	 * event: wake it. */
	lws_cancel_service(lws_get_context(s->wsi));
}

static void close_with(struct ws_session *s, uint16_t code)
{
	close_because(s, code, close_reason_text(code));
}

/*
 * Token expiry and heartbeat on timing wheels swept once a second (see
 * wheel.h for why not lws's timers). The heartbeat replaces lws's
 * retry_and_idle_policy for the same reason: lws re-inserted each
 * connection's validity timer into its sorted list on every frame received.
 */
static struct {
	uv_timer_t timer;
	struct wheel expiry, heartbeat;
	int64_t now; /* seconds, updated at each tick */
	struct http_env *env;
	bool running;
} clock_;

static int64_t now_s(void)
{
	return clock_.now;
}

static void schedule_expiry(struct ws_session *s, struct http_env *env, int64_t exp)
{
	wheel_add(&clock_.expiry, &s->expiry, exp + env->cfg->auth.leeway_s);
}

static void on_expired(struct wheel_node *n, void *arg)
{
	(void)arg;
	struct ws_session *s = lws_container_of(n, struct ws_session, expiry);
	char id[CONN_ID_LEN];
	log_debug(MOD, "conn %s: token expired", conn_id(s, id));
	close_with(s, CLOSE_TOKEN_EXPIRED);
}

/* Looks at a peer's silence: ping it after ping_interval_s, drop it after
 * idle_timeout_s (a dead peer cannot take a close frame). */
static void on_heartbeat(struct wheel_node *n, void *arg)
{
	(void)arg;
	struct ws_session *s = lws_container_of(n, struct ws_session, heartbeat);
	const struct config_ws *ws = &clock_.env->cfg->ws;
	int64_t now = now_s(), silent = now - s->last_rx;

	if (s->close_code)
		return;
	if (silent >= ws->idle_timeout_s) {
		char id[CONN_ID_LEN];
		log_debug(MOD, "conn %s: silent for %lld s: dropped", conn_id(s, id),
			  (long long)silent);
		lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		lws_cancel_service(lws_get_context(s->wsi));
		return;
	}
	if (silent < ws->ping_interval_s) {
		wheel_add(&clock_.heartbeat, n, s->last_rx + ws->ping_interval_s);
		return;
	}
	s->ping_due = true;
	lws_callback_on_writable(s->wsi);
	lws_cancel_service(lws_get_context(s->wsi));
	int64_t left = ws->idle_timeout_s - silent;
	wheel_add(&clock_.heartbeat, n,
		  now + (left < ws->ping_interval_s ? left : ws->ping_interval_s));
}

static void on_clock_tick(uv_timer_t *t)
{
	(void)t;
	clock_.now = (int64_t)time(NULL);
	wheel_sweep(&clock_.expiry, clock_.now, on_expired, NULL);
	wheel_sweep(&clock_.heartbeat, clock_.now, on_heartbeat, NULL);
}

void ws_init(struct http_env *env, uv_loop_t *loop)
{
	clock_.now = (int64_t)time(NULL);
	wheel_init(&clock_.expiry, clock_.now);
	wheel_init(&clock_.heartbeat, clock_.now);
	clock_.env = env;
	metrics_gauge_set(METRICS_WS_MAX_CONNECTIONS, env->cfg->ws.max_connections);
	uv_timer_init(loop, &clock_.timer);
	uv_timer_start(&clock_.timer, on_clock_tick, 1000, 1000);
	clock_.running = true;
	uv_timer_init(loop, &stop_.timer);
	stop_.closing = 0;
}

void ws_fini(void)
{
	if (clock_.running) {
		uv_close((uv_handle_t *)&clock_.timer, NULL);
		uv_close((uv_handle_t *)&stop_.timer, NULL);
	}
	clock_.running = false;
}

static struct ws_ticket *ticket_of(struct ws_session *s)
{
	if (!s->ticket) {
		s->ticket = mem_calloc(1, sizeof *s->ticket);
		s->ticket->s = s;
		s->ticket->refs = 1;
	}
	s->ticket->refs++;
	return s->ticket;
}

static void ticket_unref(struct ws_ticket *t);

static void on_replay(int status, json_t *alerts, bool recovered, json_t *snapshot, void *arg)
{
	struct ws_ticket *t = arg;
	struct ws_session *s = t->s;
	size_t count = 0, i;
	json_t *al;

	if (s && s->conn) {
		struct http_env *env = env_of(s->wsi);
		if (status != 0) {
			pre_add_json(s, env,
				     json_pack("{s:s,s:s,s:s}", "type", "error", "code",
					       "replay_unavailable", "message",
					       "the alert history is unavailable right now"),
				     0);
			recovered = false;
		} else if (recovered) {
			json_array_foreach(alerts, i, al)
			{
				uint64_t order = 0;
				alert_id_parse(json_string_value(json_object_get(al, "id")),
					       &order);
				if (order > s->floor)
					s->floor = order;
				pre_add_json(s, env, json_incref(al), order);
				count++;
			}
			metrics_observe(METRICS_H_REPLAY_ALERTS, 0, (double)count);
		} else {
			/* Not pretending: the state now instead of a history
			 * with holes. */
			pre_add_json(s, env,
				     json_pack("{s:s,s:O}", "type", "snapshot", "products",
					       snapshot ? snapshot : json_array()),
				     0);
			s->floor = 0;
		}
		pre_add_json(s, env,
			     json_pack("{s:s,s:I,s:b}", "type", "replay_done", "count",
				       (json_int_t)count, "recovered", recovered),
			     0);
		s->replaying = false;
		lws_callback_on_writable(s->wsi);
	}
	ticket_unref(t);
}

static void start_replay(struct ws_session *s, struct http_env *env, const char *since,
			 unsigned roles);

static void on_user_ready(void *arg)
{
	struct ws_ticket *t = arg;
	struct ws_session *s = t->s;
	if (s && s->conn) {
		struct http_env *env = env_of(s->wsi);
		if (s->pre && s->pre->since) {
			char *since = s->pre->since;
			s->pre->since = NULL;
			start_replay(s, env, since, hub_conn_roles(s->conn));
			mem_free(since);
		} else {
			s->replaying = false;
			lws_callback_on_writable(s->wsi);
		}
	}
	ticket_unref(t);
}

/* Queues, after hello, what user missed since the alert id since. */
static void start_replay(struct ws_session *s, struct http_env *env, const char *since,
			 unsigned roles)
{
	uint64_t order;
	if (alert_id_parse(since, &order) != 0) {
		pre_add_json(s, env,
			     json_pack("{s:s,s:s,s:s}", "type", "error", "code", "bad_since",
				       "message",
				       "since: expected an alert id like 1700000000000-0"),
			     0);
		s->replaying = false;
		lws_callback_on_writable(s->wsi);
		return;
	}
	s->replaying = true;
	s->floor = order;
	/* At most this many alerts are replayed; older ones are in
	 * GET /api/me/alerts. */
	alerts_history(env->alerts, hub_conn_user(s->conn), roles, since, WS_REPLAY_MAX, true,
		       on_replay, ticket_of(s));
}

static void on_established(struct ws_session *s, struct lws *wsi, struct http_env *env)
{
	struct auth_claims claims;
	char since[sizeof pending_claims.since];
	bool has_since = false;

	memset(s, 0, sizeof *s);
	s->wsi = wsi;
	s->tls = lws_is_ssl(wsi) != 0;
	if (pending_claims.wsi == wsi) {
		claims = pending_claims.claims;
		has_since = pending_claims.has_since;
		snprintf(since, sizeof since, "%s", pending_claims.since);
		pending_claims.wsi = NULL;
	} else if (authenticate(wsi, env, &claims) != AUTH_OK) {
		close_with(s, CLOSE_POLICY);
		return;
	}
	if (!instance_tag[0])
		snprintf(instance_tag, sizeof instance_tag, "%08x",
			 (unsigned)(((uint64_t)now_ms() * 2654435761u) ^ (uint64_t)getpid()));
	s->conn_no = ++conn_counter;
	char id[CONN_ID_LEN];
	conn_id(s, id);

	metrics_inc(METRICS_WS_CONNECTIONS_OPENED);
	metrics_gauge_add(METRICS_WS_CONNECTIONS, 1);
	s->counted = true;

	if (hub_user_conns(env->hub, claims.sub) >= (size_t)env->cfg->ws.max_connections_per_user) {
		log_info(MOD, "user %s over %d connections: closing 4029", claims.sub,
			 env->cfg->ws.max_connections_per_user);
		close_with(s, CLOSE_TOO_MANY);
		return;
	}
	s->conn = hub_attach(env->hub, claims.sub, claims.roles, s);
	if (hub_user_conns(env->hub, claims.sub) == 1 && env->presence)
		presence_online(env->presence, claims.sub);
	schedule_expiry(s, env, claims.exp);
	s->last_rx = now_s();
	wheel_add(&clock_.heartbeat, &s->heartbeat, s->last_rx + env->cfg->ws.ping_interval_s);

	if (hub_user_conns(env->hub, claims.sub) == 1 && env->alerts)
		alerts_user_online(env->alerts, claims.sub);
	pre_add_json(s, env,
		     json_pack("{s:s,s:s,s:s,s:i,s:I}", "type", "hello", "user_id", claims.sub,
			       "conn_id", id, "heartbeat_s", env->cfg->ws.ping_interval_s,
			       "server_time", (json_int_t)now_ms()),
		     0);
	log_debug(MOD, "conn %s: user %s connected", id, claims.sub);

	if (!env->alerts) {
		lws_callback_on_writable(wsi);
		return;
	}
	/* Hold everything, hello included, until the user's subscriptions are
	 * loaded here: a client that publishes right after hello must not
	 * race the load. */
	s->replaying = true;
	if (has_since && s->pre) /* s->pre holds hello */
		s->pre->since = mem_strdup(since);
	alerts_when_ready(env->alerts, claims.sub, on_user_ready, ticket_of(s));
}

static void ticket_unref(struct ws_ticket *t)
{
	if (--t->refs == 0)
		mem_free(t);
}

static void on_closed(struct ws_session *s, struct http_env *env)
{
	wheel_del(&clock_.expiry, &s->expiry);
	wheel_del(&clock_.heartbeat, &s->heartbeat);
	pre_free(s);
	if (s->ticket) {
		s->ticket->s = NULL;
		ticket_unref(s->ticket);
		s->ticket = NULL;
	}
	rx_free(s);
	if (s->conn) {
		char user[AUTH_SUB_MAX + 1];
		snprintf(user, sizeof user, "%s", hub_conn_user(s->conn));
		hub_detach(env->hub, s->conn);
		s->conn = NULL;
		if (hub_user_conns(env->hub, user) == 0) {
			if (env->presence)
				presence_offline(env->presence, user);
			if (env->alerts)
				alerts_user_offline(env->alerts, user);
		}
	}
	if (s->close_code)
		stop_.closing--;
	if (s->counted) {
		s->counted = false;
		metrics_inc(METRICS_WS_CONNECTIONS_CLOSED);
		metrics_gauge_add(METRICS_WS_CONNECTIONS, -1);
	}
	if (env->shutting_down && hub_total_conns(env->hub) == 0 && env->drained) {
		void (*drained)(void *) = env->drained;
		env->drained = NULL;
		drained(env->drained_arg);
	}
}

static void handle_refresh(struct ws_session *s, struct http_env *env, json_t *msg)
{
	const char *tok = json_string_value(json_object_get(msg, "token"));
	struct auth_claims claims;
	if (!tok) {
		send_error(s, env, "bad_message", "refresh needs a string \"token\"");
		return;
	}
	enum auth_result ar =
	    auth_verify(env->auth, tok, strlen(tok), (int64_t)time(NULL), &claims);
	if (ar != AUTH_OK) {
		send_error(s, env, "bad_token", auth_result_str(ar));
		return;
	}
	if (strcmp(claims.sub, hub_conn_user(s->conn)) != 0) {
		send_error(s, env, "bad_token", "refresh token is for another user");
		return;
	}
	hub_conn_set_roles(s->conn, claims.roles);
	schedule_expiry(s, env, claims.exp);
}

/*
 * A socket (ws.max_inflight_per_socket) or its user
 * (subscriptions.max_inflight_per_user) has too many subscription changes
 * under way: each starts MySQL work on the one connection every user's
 * writes queue on, so a flood is refused, not queued. The client is told
 * why, then closed with 4029 (back off, as for too many connections).
 */
static void refuse_flood(struct ws_session *s, const char *limit)
{
	char text[160];
	if (s->close_code)
		return;
	char id[CONN_ID_LEN];
	log_info(MOD, "conn %s: %s subscription changes under way: closing 4029", conn_id(s, id),
		 limit);
	/* Written now, not queued: queued frames do not go out once the close
	 * has begun. Not if the socket still owes earlier bytes, or has not
	 * said hello yet: the close reason says it too. */
	if (!s->replaying && !pre_pending(s) && !lws_partial_buffered(s->wsi)) {
		json_t *j = json_pack("{s:s,s:s,s:s}", "type", "error", "code", "too_many_requests",
				      "message",
				      "too many subscription changes under way: wait for the "
				      "answers before sending more");
		char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
		size_t len = body ? strlen(body) : 0;
		json_decref(j);
		if (len) {
			unsigned char *b = mem_alloc(LWS_PRE + len);
			memcpy(b + LWS_PRE, body, len);
			(void)lws_write(s->wsi, b + LWS_PRE, len, LWS_WRITE_TEXT);
			mem_free(b);
		}
		free(body);
	}
	snprintf(text, sizeof text, "too many subscription changes under way (%s)", limit);
	close_because(s, CLOSE_TOO_MANY, text);
}

static void on_subs_done(enum subs_status st, const struct subs_entry *e, void *arg)
{
	(void)e;
	struct ws_pending *p = arg;
	struct ws_session *s = p->ticket->s;
	if (s)
		s->inflight--;
	if (s && s->conn && st == SUBS_BUSY) {
		refuse_flood(s, "subscriptions.max_inflight_per_user");
	} else if (s && s->conn) {
		struct http_env *env = env_of(s->wsi);
		const char *code = NULL, *msg = NULL;
		switch (st) {
		case SUBS_CREATED:
		case SUBS_UPDATED:
		case SUBS_DELETED:
		case SUBS_NOT_SUBSCRIBED: /* unsubscribed either way: idempotent */
			send_json(s, env,
				  json_pack("{s:s,s:I}", "type",
					    p->subscribe ? "subscribed" : "unsubscribed",
					    "product_id", (json_int_t)p->product));
			break;
		case SUBS_NO_PRODUCT:
			code = "not_found";
			msg = "no such product";
			break;
		case SUBS_OVER_LIMIT:
			code = "limit_reached";
			msg = "subscriptions.max_per_user reached";
			break;
		default:
			code = "unavailable";
			msg = "the subscription store is unavailable; retry";
			break;
		}
		if (code)
			send_json(s, env,
				  json_pack("{s:s,s:s,s:s,s:I}", "type", "error", "code", code,
					    "message", msg, "product_id", (json_int_t)p->product));
	}
	ticket_unref(p->ticket);
	mem_free(p);
}

static void handle_subscribe(struct ws_session *s, struct http_env *env, json_t *msg,
			     bool subscribe)
{
	json_t *pid = json_object_get(msg, "product_id");
	if (!json_is_integer(pid) || !subs_product_id_valid(json_integer_value(pid))) {
		send_error(s, env, "bad_message", SUBS_PRODUCT_ID_EXPECTED);
		return;
	}
	if (s->inflight >= env->cfg->ws.max_inflight_per_socket) {
		metrics_inc(METRICS_SUBS_CHANGES_REFUSED);
		refuse_flood(s, "ws.max_inflight_per_socket");
		return;
	}
	s->inflight++;
	struct ws_pending *p = mem_calloc(1, sizeof *p);
	p->ticket = ticket_of(s);
	p->product = (int64_t)json_integer_value(pid);
	p->subscribe = subscribe;
	if (subscribe)
		subs_put(env->subs, hub_conn_user(s->conn), p->product, SUBS_ALL_KINDS, -1,
			 on_subs_done, p);
	else
		subs_delete(env->subs, hub_conn_user(s->conn), p->product, on_subs_done, p);
}

/* Handles one complete client message. */
static void handle_message(struct ws_session *s, struct http_env *env, const char *data, size_t len)
{
	json_error_t jerr;
	json_t *msg = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = json_string_value(json_object_get(msg, "type"));

	if (!json_is_object(msg) || !type) {
		json_decref(msg);
		if (++s->bad_frames > BAD_FRAMES_MAX) {
			close_with(s, CLOSE_POLICY);
			return;
		}
		send_error(s, env, "bad_message", "expected a JSON object with a string \"type\"");
		return;
	}
	if (strcmp(type, "ping") == 0) {
		send_json(s, env, json_pack("{s:s}", "type", "pong"));
	} else if (strcmp(type, "refresh") == 0) {
		handle_refresh(s, env, msg);
	} else if (strcmp(type, "subscribe") == 0 || strcmp(type, "unsubscribe") == 0) {
		handle_subscribe(s, env, msg, type[0] == 's');
	} else {
		if (++s->bad_frames > BAD_FRAMES_MAX)
			close_with(s, CLOSE_POLICY);
		else
			send_error(s, env, "unknown_type", "unknown message type");
	}
	json_decref(msg);
}

static int on_receive(struct ws_session *s, struct http_env *env, const char *in, size_t len)
{
	bool final = lws_is_final_fragment(s->wsi) && !lws_remaining_packet_payload(s->wsi);
	size_t max = (size_t)env->cfg->ws.max_message_bytes;

	if (s->close_code || !s->conn)
		return 0;
	if (lws_frame_is_binary(s->wsi)) {
		close_with(s, CLOSE_POLICY);
		return 0;
	}
	size_t have = s->rx ? s->rx->len : 0;
	if (have + len > max) {
		rx_free(s);
		metrics_ws_close(CLOSE_TOO_BIG);
		lws_close_reason(s->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
				 (unsigned char *)"message too big", 15);
		return -1;
	}
	if (final && have == 0) {
		/* The common case: a whole message in one piece, no copy. */
		handle_message(s, env, in, len);
		return 0;
	}
	if (!s->rx)
		s->rx = mem_calloc(1, sizeof *s->rx);
	buf_append(s->rx, in, len);
	if (final) {
		handle_message(s, env, s->rx->data, s->rx->len);
		rx_free(s);
	}
	return 0;
}

static int on_writeable(struct ws_session *s)
{
	if (s->close_code)
		return 0; /* lws is sending the close frame */
	if (s->ping_due) {
		/* Control frames go before queued data, so a long queue never
		 * starves the heartbeat. */
		/* A payload, because lws 4.1.6 passes an empty pong on to no
		 * one (LWS_CALLBACK_RECEIVE_PONG never comes for it). */
		unsigned char ping[LWS_PRE + 1];
		ping[LWS_PRE] = 'h';
		s->ping_due = false;
		if (lws_write(s->wsi, ping + LWS_PRE, 1, LWS_WRITE_PING) < 0)
			return -1;
		if ((s->conn && hub_peek(s->conn)) || pre_pending(s))
			lws_callback_on_writable(s->wsi);
		return 0;
	}
	if (!s->conn || s->replaying)
		return 0;
	struct hub_msg *m;
	bool from_pre = pre_pending(s);
	if (from_pre) {
		m = s->pre->msg[s->pre->pos];
	} else {
		/* Live alerts the replay already carried are skipped. */
		while ((m = hub_peek(s->conn)) && m->order && m->order <= s->floor)
			hub_pop(s->conn);
		if (!m)
			return 0;
	}
	/* The message is shared by every recipient; lws writes only the frame
	 * header into the headroom before it, identical for all of them. */
	int n = lws_write(s->wsi, (unsigned char *)m->data, m->len, LWS_WRITE_TEXT);
	if (n < (int)m->len)
		return -1;
	if (m->origin_us)
		metrics_alert_written(m->origin_us, m->origin);
	if (from_pre) {
		hub_msg_unref(m);
		if (++s->pre->pos == s->pre->n)
			pre_free(s);
	} else {
		hub_pop(s->conn);
	}
	if (pre_pending(s) || hub_peek(s->conn))
		lws_callback_on_writable(s->wsi);
	return 0;
}

int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct ws_session *s = user;
	struct http_env *env = env_of(wsi);

	switch (reason) {
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		/* New connections are bound to the vhost's default protocol
		 * (ours, see the "default" pvo), so the upgrade decision
		 * arrives here. Never touch `in` (CVE-2025-11677). */
		return ws_confirm_upgrade(wsi, env);
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		/* Every accepted socket, for the same reason: the per-address
		 * count (peers.h) learns its wsi. */
		if (env->peers)
			peers_bind(env->peers, wsi);
		return 0;
	case LWS_CALLBACK_ESTABLISHED:
		if (env->peers)
			peers_settled(env->peers, wsi);
		on_established(s, wsi, env);
		return 0;
	case LWS_CALLBACK_RECEIVE_PONG: s->last_rx = now_s(); return 0;
	case LWS_CALLBACK_RECEIVE: {
		s->last_rx = now_s();
		s->in_rx = true;
		int rc = on_receive(s, env, in, len);
		s->in_rx = false;
		return rc;
	}
	case LWS_CALLBACK_SERVER_WRITEABLE: return on_writeable(s);
	case LWS_CALLBACK_TIMER: return s->close_code ? -1 : 0; /* see close_with() */
	case LWS_CALLBACK_CLOSED: on_closed(s, env); return 0;
	default: return 0;
	}
}

/*
 * The fan-out fast path: write now instead of asking lws for a WRITEABLE
 * callback, which costs two epoll_ctl per message (POLLOUT on, then off).
 * Only when nothing must go first (hello, a replay, a close) and lws holds
 * no unsent bytes of ours; lws buffers what the socket does not take and
 * asks for POLLOUT itself then. Returns false to take the slow path.
 */
static bool can_write_now(const struct ws_session *s, const struct http_env *env)
{
	/* Replies to the client's own frames (pongs, acks) take the slow path:
	 * a client that sends without reading must fill its queue and be
	 * closed 4008, not be served by lws while it stops reading from it. */
	return !(s->in_rx || s->replaying || pre_pending(s) || s->close_code ||
		 env->shutting_down || !s->conn || s->tls || lws_partial_buffered(s->wsi));
}

/* Writes one live message now (can_write_now() was true); false if the
 * connection is broken (lws reaps it). */
static bool write_live(struct ws_session *s, const struct hub_msg *m)
{
	/* Already sent as part of a resume's replay. */
	if (m->order && m->order <= s->floor)
		return true;
	if (lws_write(s->wsi, (unsigned char *)m->data, m->len, LWS_WRITE_TEXT) < (int)m->len) {
		lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		return false;
	}
	if (m->origin_us)
		metrics_alert_written(m->origin_us, m->origin);
	return true;
}

static bool write_now(struct ws_session *s, struct http_env *env)
{
	if (!can_write_now(s, env))
		return false;
	struct hub_msg *m;
	while ((m = hub_peek(s->conn))) {
		bool ok = write_live(s, m);
		hub_pop(s->conn);
		if (!ok)
			return true;
		if (lws_partial_buffered(s->wsi))
			break;
	}
	if (hub_peek(s->conn))
		lws_callback_on_writable(s->wsi);
	return true;
}

/* The fan-out's path: nothing queued, so the message goes straight out. */
static bool sink_send_now(void *sink, const struct hub_msg *m)
{
	struct ws_session *s = sink;
	/* The env of ws_init(), not env_of(): this runs once per recipient of
	 * every fan-out, and the lws context lookup showed in profiles. */
	if (!can_write_now(s, clock_.env))
		return false;
	(void)write_live(s, m);
	return true;
}

static void sink_wake(void *sink)
{
	struct ws_session *s = sink;
	/* The env of ws_init(), not env_of(): this runs once per recipient of
	 * every fan-out, and the lws context lookup showed in profiles. */
	if (!write_now(s, clock_.env))
		lws_callback_on_writable(s->wsi);
}

static void sink_overflow(void *sink)
{
	struct ws_session *s = sink;
	char id[CONN_ID_LEN];
	log_info(MOD, "conn %s: send queue overflow: closing 4008", conn_id(s, id));
	close_with(s, CLOSE_TOO_SLOW);
}

const struct hub_sink_ops ws_sink_ops = {
    .send_now = sink_send_now, .wake = sink_wake, .overflow = sink_overflow};

static int close_going_away(void *sink, void *arg)
{
	struct ws_session *s = sink;
	size_t *budget = arg;

	if (s->close_code)
		return 0;
	close_with(s, CLOSE_GOING_AWAY);
	return --*budget == 0;
}

static void on_stop_tick(uv_timer_t *t)
{
	struct http_env *env = t->data;
	size_t budget = stop_.closing < STOP_INFLIGHT ? STOP_INFLIGHT - stop_.closing : 0;
	if (budget > STOP_BATCH)
		budget = STOP_BATCH;
	if (budget < STOP_TRICKLE)
		budget = STOP_TRICKLE;
	size_t want = budget;
	/* Every established socket is in the hub (or already closing). */
	hub_each_conn(env->hub, close_going_away, &budget);
	uv_timer_set_repeat(t, budget == want ? STOP_IDLE_MS : STOP_TICK_MS);
}

void ws_shutdown(struct http_env *env, void (*drained)(void *arg), void *arg)
{
	env->shutting_down = true;
	if (hub_total_conns(env->hub) == 0) {
		drained(arg);
		return;
	}
	env->drained = drained;
	env->drained_arg = arg;
	log_info(MOD, "closing %zu sockets with 1001", hub_total_conns(env->hub));
	stop_.timer.data = env;
	uv_timer_start(&stop_.timer, on_stop_tick, 0, STOP_TICK_MS);
}
