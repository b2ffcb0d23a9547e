#include "stockalert/server.h"

#include <errno.h>
#include <libwebsockets.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "stockalert/alerts.h"
#include "stockalert/api.h"
#include "stockalert/auth.h"
#include "stockalert/errbuf.h"
#include "stockalert/http.h"
#include "stockalert/keys.h"
#include "stockalert/listener.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"
#include "stockalert/notify.h"
#include "stockalert/ops.h"
#include "stockalert/peers.h"
#include "stockalert/presence.h"
#include "stockalert/redis.h"
#include "stockalert/store.h"
#include "stockalert/stream.h"
#include "stockalert/subs.h"
#include "stockalert/ws.h"

#define MOD			      "server"
/* File descriptors kept back from lws for Redis, MySQL, static files and
 * logs, so that at the limit lws stops accepting instead of us failing. */
#define FD_RESERVE		      64
/* Per-socket lws receive buffer (see create_lws): 125, the largest control
 * frame payload, because lws 4.1.6 hands a ping's payload to its pong a
 * buffer at a time: with 64, a 100-byte ping got two pongs (64 + 36). */
#define WS_RX_BUFFER		      125
/* Largest single send(): bigger than any frame we write but a replay. */
#define WS_TX_PACKET		      65536
/* Quiet moments, when freed memory goes back to the kernel: looked for
 * every QUIET_TICK_MS; one is a tick without a connect or close after at
 * least QUIET_CHURN of them (a burst worth the few ms it takes). */
#define QUIET_TICK_MS		      1000
#define QUIET_CHURN		      256
#define QUIET_EVERY		      (QUIET_TICK_MS / PEERS_TICK_MS)
/* MySQL's ER_ACCESS_DENIED_ERROR and ER_DBACCESS_DENIED_ERROR. */
#define ER_ACCESS_DENIED_ERROR_CODE   1045u
#define ER_DBACCESS_DENIED_ERROR_CODE 1044u

/* The pub/sub channels every instance listens on (after <prefix>, keys.h),
 * and the alert pipeline's entry for each. */
static const struct channel_route {
	const char *suffix;
	void (*deliver)(struct alerts *a, const char *payload, size_t len);
} channel_routes[] = {
    {KEYS_INVENTORY, alerts_on_inventory},
    {KEYS_SUBS_CHANGES, alerts_on_subs_change},
    {KEYS_FAIR_WAVES, alerts_on_fair_wave},
    {KEYS_RATE_SYNC, alerts_on_rate_sync},
};
#define N_CHANNELS (sizeof channel_routes / sizeof channel_routes[0])

/* What the HTTP transport serves: the operators' endpoints, the REST API,
 * and the WebSocket upgrade at /ws (anything else GET is a static file). */
static const struct http_route http_routes[] = {
    {"/healthz", HTTP_GET, ops_healthz, METRICS_ROUTE_HEALTHZ},
    {"/readyz", HTTP_GET, ops_readyz, METRICS_ROUTE_READYZ},
    {"/metrics", HTTP_GET, ops_metrics, METRICS_ROUTE_METRICS},
    {"/api/products/", HTTP_GET, api_get_product, METRICS_ROUTE_PRODUCT},
    {"/api/me/subscriptions", HTTP_GET, api_list_subscriptions, METRICS_ROUTE_SUBSCRIPTIONS},
    {"/api/me/subscriptions/", HTTP_PUT | HTTP_DELETE, api_subscription,
     METRICS_ROUTE_SUBSCRIPTION},
    {"/api/me/alerts", HTTP_GET, api_list_alerts, METRICS_ROUTE_ALERTS},
    {"/api/inventory/events", HTTP_POST, api_post_event, METRICS_ROUTE_EVENTS},
};
static const struct http_routes http_table = {
    .routes = http_routes,
    .n = sizeof http_routes / sizeof http_routes[0],
    .confirm_upgrade = ws_confirm_upgrade,
};

struct server {
	uv_loop_t loop;
	struct config *cfg;
	char *config_path;
	struct http_env env;
	struct lws_context *lws;
	struct lws_vhost *vhost;
	struct lws_protocols protocols[3]; /* http, ws, terminator */
	lws_retry_bo_t idle_policy;
	char *mysql_password;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t grace;
	uv_timer_t quiet; /* see on_quiet_tick */
	unsigned ticks;
	uint64_t churn_tick;	 /* peers_churn() at the last tick */
	uint64_t churn_released; /* ... at the last mem_release() */
	bool stopping;
	bool grace_expired;
	int exit_code;
	int open_deps; /* redis, pubsub, store still closing */
	bool ever_ready[METRICS_DEP_COUNT];
	/* The first attempt to reach each of Redis and MySQL has ended
	 * (either way): until both have, the service manager waits. */
	bool tried_redis, tried_mysql;
	struct notify *notify;
	struct listener *listener; /* socket activation only */
	struct channel_sub {
		struct server *s;
		size_t route; /* index in channel_routes */
		char name[128];
	} channels[N_CHANNELS];
};

static void dep_state(struct server *s, enum metrics_dep d, bool ready)
{
	metrics_dep_up(d, ready);
	if (!ready)
		return;
	if (s->ever_ready[d])
		metrics_dep_reconnect(d);
	s->ever_ready[d] = true;
}

/* "N sockets; redis up, ..., mysql down": what systemctl status shows. */
static void server_status(char *buf, size_t size, void *arg)
{
	(void)arg;
	int n =
	    snprintf(buf, size, "%lld sockets", (long long)metrics_gauge(METRICS_WS_CONNECTIONS));
	for (int d = 0; d < METRICS_DEP_COUNT && n >= 0 && (size_t)n < size; d++)
		n += snprintf(buf + n, size - (size_t)n, "%s %s %s", d == 0 ? ";" : ",",
			      metrics_dep_name((enum metrics_dep)d),
			      metrics_dep_is_up((enum metrics_dep)d) ? "up" : "down");
}

/*
 * Ready for the service manager once the port listens (it does before the
 * dependencies are created) and the first attempt to reach Redis and MySQL
 * has ended, whether or not it succeeded: a late Redis must not fail the
 * start, /readyz keeps the instance out of the balancer meanwhile, and the
 * status line names what is down.
 */
static void maybe_ready(struct server *s)
{
	if (!s->tried_redis || !s->tried_mysql || s->stopping || !s->notify)
		return;
	notify_ready(s->notify);
}

/* The stream input counts as up only when Redis also serves it: a
 * connection to a node that refuses XREADGROUP is no input at all. */
static void on_stream_health(bool working, void *arg)
{
	struct server *s = arg;
	metrics_dep_up(METRICS_DEP_REDIS_STREAM, working && redis_is_ready(s->env.streamconn));
}

static void on_redis_state(struct redis *r, enum redis_state st, void *arg)
{
	struct server *s = arg;
	dep_state(s,
		  r == s->env.pubsub	   ? METRICS_DEP_REDIS_PUBSUB
		  : r == s->env.streamconn ? METRICS_DEP_REDIS_STREAM
					   : METRICS_DEP_REDIS,
		  st == REDIS_STATE_READY &&
		      (r != s->env.streamconn || !s->env.stream || stream_working(s->env.stream)));
	/* After dep_state: the status line sent with READY=1 reads it. */
	if (r == s->env.redis && st != REDIS_STATE_CONNECTING && !s->tried_redis) {
		s->tried_redis = true;
		maybe_ready(s);
	}
	if (r == s->env.streamconn && st == REDIS_STATE_READY && s->env.stream)
		stream_ready(s->env.stream);
	/* One connection back means the server is back: the others need not
	 * wait out their own backoff (they drifted apart with the jitter). */
	if (st == REDIS_STATE_READY) {
		struct redis *all[] = {s->env.redis, s->env.pubsub, s->env.streamconn};
		for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
			if (all[i] && all[i] != r)
				redis_retry_now(all[i]);
	}
	/* Events published while either connection was away may have been
	 * recorded by another instance: deliver them from the history. */
	if (st == REDIS_STATE_READY && s->env.alerts)
		alerts_redis_ready(s->env.alerts);
	if (r == s->env.redis && st == REDIS_STATE_READY) {
		/* Presence written while Redis was away was lost: say it
		 * again; and the index may have gone with the server. */
		if (s->env.presence)
			presence_refresh(s->env.presence);
		if (s->env.subs)
			subs_redis_ready(s->env.subs);
	}
}

static void begin_stop(struct server *s, int signum);

static void on_store_state(struct store *st, enum store_state state, void *arg)
{
	struct server *s = arg;
	dep_state(s, METRICS_DEP_MYSQL, state == STORE_STATE_READY);
	if (state != STORE_STATE_CONNECTING && !s->tried_mysql) {
		s->tried_mysql = true;
		maybe_ready(s);
	}

	/* A server that is down may come up later; one that refuses our
	 * credentials at start will not, and an operator must hear it: exit 2
	 * (conf/README.md, Exit codes). After a first success we keep retrying whatever happens,
	 * as a running service should. */
	unsigned e = store_last_connect_error(st);
	if (state == STORE_STATE_DISCONNECTED && !s->ever_ready[METRICS_DEP_MYSQL] &&
	    (e == ER_ACCESS_DENIED_ERROR_CODE || e == ER_DBACCESS_DENIED_ERROR_CODE)) {
		log_error(MOD,
			  "mysql refused our credentials (error %u): check mysql.user, "
			  "mysql.password_file and mysql.database",
			  e);
		s->exit_code = SERVER_EXIT_START;
		begin_stop(s, SIGTERM);
	}
}

static void on_channel_message(struct redis *r, const char *channel, const char *payload,
			       size_t len, void *arg)
{
	(void)r;
	(void)channel;
	const struct channel_sub *sub = arg;
	if (sub->s->env.alerts)
		channel_routes[sub->route].deliver(sub->s->env.alerts, payload, len);
}

/*
 * File descriptors for lws, leaving FD_RESERVE for Redis, MySQL, static
 * files and logs, so that at the limit lws refuses new sockets (closing
 * them) rather than accept() failing with EMFILE and spinning.
 *
 * lws sizes its fd -> wsi table from the soft limit at context creation.
 * Giving it fd_limit_per_thread instead would switch that lookup to a linear
 * scan of the whole table on every socket event. So: lower the soft limit
 * to hard - reserve while the context is created, and raise it back to the
 * hard limit afterwards (raise_fd_limit), for our own descriptors.
 */
static unsigned lower_fd_limit_for_lws(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	rlim_t hard = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1000000 ? 1000000 : rl.rlim_max;
	rl.rlim_cur = hard > 2 * FD_RESERVE ? hard - FD_RESERVE : hard;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		getrlimit(RLIMIT_NOFILE, &rl);
	return (unsigned)rl.rlim_cur;
}

static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void closed_dep(void *arg)
{
	struct server *s = arg;
	s->open_deps--;
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void on_drained(void *arg);
static void on_grace_expired(uv_timer_t *t);

/*
 * After N clients connect at the same moment (a deploy, a proxy restart),
 * the heap keeps the blocks their handshakes used and freed between the
 * sockets that live on: 3x the memory per idle socket of N connecting a few
 * hundred at a time (bench.sh, "N at once"). Once the burst is over, give
 * them back. Closes count too: a mass disconnect leaves the same holes.
 */
static void on_quiet_tick(uv_timer_t *t)
{
	struct server *s = t->data;
	/* The same timer runs the handshake bound's stall check (peers.h). */
	peers_tick(s->env.peers);
	if (++s->ticks % QUIET_EVERY)
		return;
	uint64_t churn = peers_churn(s->env.peers);
	if (churn == s->churn_tick && churn - s->churn_released >= QUIET_CHURN) {
		uint64_t t0 = uv_hrtime();
		mem_release();
		log_debug(MOD,
			  "gave freed memory back (%s) after %llu connects and closes, %.1f ms",
			  mem_allocator(), (unsigned long long)(churn - s->churn_released),
			  (double)(uv_hrtime() - t0) / 1e6);
		s->churn_released = churn;
	}
	s->churn_tick = churn;
}

static void begin_stop(struct server *s, int signum)
{
	if (s->stopping)
		return;
	s->stopping = true;
	notify_stopping(s->notify);
	/* What arrives from now on waits in the activated socket's backlog
	 * for the next instance rather than being refused by this one. */
	listener_close(s->listener);
	s->listener = NULL;
	/* The grace timer is the hard stop: whatever is still closing when it
	 * fires is abandoned. Unreferenced, so a clean close ends the loop
	 * without waiting for it. */
	uv_timer_start(&s->grace, on_grace_expired, (uint64_t)s->cfg->shutdown_grace_s * 1000, 0);
	uv_unref((uv_handle_t *)&s->grace);
	if (s->exit_code == SERVER_EXIT_OK)
		log_info(MOD, "received %s, stopping (grace %d s)", strsignal(signum),
			 s->cfg->shutdown_grace_s);

	ws_shutdown(&s->env, on_drained, s);
}

/* Every socket has closed (or there were none): tear down the rest. */
static void on_drained(void *arg)
{
	struct server *s = arg;

	/* With a foreign loop, lws closes its listen socket and handles
	 * asynchronously on this loop; server_run() finishes the job once the
	 * loop has run dry. */
	if (s->lws) {
		lws_context_destroy(s->lws);
		s->env.lws = NULL;
	}
	/* The signal handles would keep the loop alive. Once they are closed,
	 * a repeated TERM/INT must not kill us mid-cleanup (libuv restores
	 * the default action). */
	close_handle((uv_handle_t *)&s->sig_term);
	close_handle((uv_handle_t *)&s->sig_int);
	close_handle((uv_handle_t *)&s->sig_hup);
	close_handle((uv_handle_t *)&s->quiet);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	notify_close(s->notify);
	s->notify = NULL;
	ws_fini();
	if (s->env.presence) {
		presence_close(s->env.presence);
		s->env.presence = NULL;
	}
	if (s->env.subs) {
		subs_close(s->env.subs);
		s->env.subs = NULL;
	}
	if (s->env.stream) {
		stream_close(s->env.stream);
		s->env.stream = NULL;
	}
	if (s->env.alerts) {
		alerts_close(s->env.alerts);
		s->env.alerts = NULL;
	}
	if (s->env.redis) {
		/* Presence removals and rate notes queued by the sockets'
		 * closes must land: they are what the other instances see. */
		redis_drain_and_close(s->env.redis, closed_dep, s);
		s->env.redis = NULL;
	}
	if (s->env.pubsub) {
		redis_close(s->env.pubsub, closed_dep, s);
		s->env.pubsub = NULL;
	}
	if (s->env.streamconn) {
		redis_close(s->env.streamconn, closed_dep, s);
		s->env.streamconn = NULL;
	}
	if (s->env.store) {
		store_close(s->env.store, closed_dep, s);
		s->env.store = NULL;
	}
}

static void on_grace_expired(uv_timer_t *t)
{
	struct server *s = t->data;
	log_warn(MOD, "shutdown grace of %d s expired; exiting now", s->cfg->shutdown_grace_s);
	s->grace_expired = true;
	uv_stop(&s->loop);
}

/*
 * A renewed certificate at the same two paths: lws 4.1.6 can load it into
 * the running vhost (lws_tls_cert_updated() matches the vhost by its paths),
 * but reports no failure and would leave a half-loaded pair behind. So the
 * pair is loaded and matched here first, in a context of our own.
 */
static int tls_pair_check(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int rc = -1;

	if (!ctx) {
		errbuf_set(err, errlen, "tls: cannot create an OpenSSL context");
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		errbuf_set(err, errlen, "tls.cert_file: %s: no PEM certificate chain", cert);
		goto out;
	}
	/* OpenSSL refuses a key of another certificate while loading it. */
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		errbuf_set(
		    err, errlen,
		    "tls.key_file: %s: not a PEM private key, or does not match tls.cert_file",
		    key);
		goto out;
	}
	rc = 0;
out:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}

static bool same_str(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/*
 * SIGHUP: re-reads the configuration file. Nothing changes unless all of it
 * loads and checks (keys included); then the keys that can change live take
 * their new values in the running struct config, which every module reads
 * where it uses them, and the new key set replaces the old one (sockets keep
 * the claims they were opened with, and run until their own exp). Keys that
 * need a restart are named and left as they are. Sockets are not touched.
 */
/* Everything a reload needs, loaded and checked; nothing applied yet. The
 * caller frees *fresh and *auth either way. */
static int reload_prepare(struct server *s, struct config **fresh, struct auth **auth,
			  bool *new_cert, char *err, size_t errlen)
{
	*auth = NULL;
	*new_cert = false;
	if (config_load(s->config_path, fresh, err, errlen) != 0)
		return -1;
	*auth = auth_new(&(*fresh)->auth, err, errlen);
	if (!*auth || config_check_files(*fresh, err, errlen) != 0)
		return -1;
	/* Same paths as running: whatever they hold now is served next. */
	*new_cert = same_str((*fresh)->tls.cert_file, s->cfg->tls.cert_file) &&
		    same_str((*fresh)->tls.key_file, s->cfg->tls.key_file);
	if (*new_cert &&
	    tls_pair_check((*fresh)->tls.cert_file, (*fresh)->tls.key_file, err, errlen) != 0)
		return -1;
	return 0;
}

static void reload(struct server *s)
{
	char err[512], restart[512];
	struct config *fresh = NULL;
	struct auth *auth = NULL;
	bool new_cert, owe_ready = notify_reloading(s->notify);

	if (reload_prepare(s, &fresh, &auth, &new_cert, err, sizeof err) != 0) {
		log_error(MOD, "SIGHUP: keeping the running configuration: %s", err);
		metrics_config_reload(0);
		goto out;
	}
	size_t n_restart = config_apply_live(s->cfg, fresh, restart, sizeof restart);
	auth_free(s->env.auth);
	s->env.auth = auth;
	auth = NULL;
	log_setup((enum log_level)s->cfg->log.level, (enum log_format)s->cfg->log.format);
	log_route_lws();
	if (s->env.alerts)
		alerts_config_changed(s->env.alerts);
	/* New handshakes get it; open sockets keep the one they started with. */
	if (new_cert && s->lws) {
		lws_tls_cert_updated(s->lws, s->cfg->tls.cert_file, s->cfg->tls.key_file, NULL, 0,
				     NULL, 0);
		log_info(MOD, "SIGHUP: serving the certificate in %s", s->cfg->tls.cert_file);
	}
	if (n_restart)
		log_warn(MOD, "SIGHUP: left as they are until a restart: %s", restart);
	log_info(MOD, "SIGHUP: reloaded %s", s->config_path);
	metrics_config_reload(1);
out:
	auth_free(auth);
	config_free(fresh);
	if (owe_ready)
		notify_ready(s->notify);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct server *s = h->data;
	if (signum == SIGHUP) {
		reload(s);
		return;
	}
	begin_stop(s, signum);
}

static int start_signal(struct server *s, uv_signal_t *h, int signum)
{
	uv_signal_init(&s->loop, h);
	h->data = s;
	return uv_signal_start(h, on_signal, signum);
}

static int create_lws(struct server *s, int *exit_code)
{
	struct lws_context_creation_info info;
	void *foreign_loops[1] = {&s->loop};
	const struct config *cfg = s->cfg;

	memset(&info, 0, sizeof info);
	info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
		       LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (cfg->tls.cert_file)
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.foreign_loops = foreign_loops;
	info.user = &s->env;
	unsigned lws_fds = lower_fd_limit_for_lws();
	/* lws clears this when the context is wholly gone (see server_run). */
	info.pcontext = &s->lws;
	/* Requests must not sit half-received forever (slowloris). */
	info.timeout_secs = 10;
	/* Room for an 8 KiB token in a header or the query string, so that
	 * an oversized one is refused by auth with 401, not cut short. */
	info.max_http_header_data = 12 * 1024;
	/* Each handshake under way holds one, and listen.max_pending_handshakes
	 * bounds those (peers.h). lws's own bound, max_http_header_pool, stays
	 * off: the sockets past it are accepted all the same and wait, each on
	 * lws's timer list, and slow clients holding the pool would keep the
	 * others waiting until their header timeout. */
	s->lws = lws_create_context(&info);
	raise_fd_limit();
	s->env.lws = s->lws;
	if (!s->lws) {
		log_error(MOD, "could not create the libwebsockets context");
		*exit_code = SERVER_EXIT_START;
		return -1;
	}

	char err[256];
	int activated = listener_activated_fd(err, sizeof err);
	if (activated == -2) {
		log_error(MOD, "socket activation: %s", err);
		*exit_code = SERVER_EXIT_START;
		return -1;
	}
	struct lws_context_creation_info vinfo;
	memset(&vinfo, 0, sizeof vinfo);
	vinfo.vhost_name = "stockalertd";
	/* Activated: lws serves what listener.c accepts and binds nothing. */
	vinfo.port = activated >= 0 ? CONTEXT_PORT_NO_LISTEN_SERVER : cfg->listen.port;
	vinfo.iface = cfg->listen.host;
	s->protocols[0] = (struct lws_protocols){
	    .name = "http",
	    .callback = http_callback,
	    .per_session_data_size = http_session_size(),
	};
	s->protocols[1] = (struct lws_protocols){
	    .name = "stockalert",
	    .callback = ws_callback,
	    .per_session_data_size = ws_session_size(),
	    /* lws gives every socket a receive buffer of this size. Client
		 * messages are small and rare (a ping is 15 bytes, a subscribe
		 * about 70), longer ones are reassembled in ws.c up to
		 * ws.max_message_bytes, so a small buffer keeps idle sockets
		 * cheap. It cannot go below 125: lws echoes a ping whole only
		 * if it fits (see WS_RX_BUFFER). */
	    .rx_buffer_size = WS_RX_BUFFER,
	    /* Without it lws caps each send() at rx_buffer_size, splitting
		 * every alert in two and buffering the rest. */
	    .tx_packet_size = WS_TX_PACKET,
	};
	s->env.ws_protocol = &s->protocols[1];
	/* lws picks the WebSocket protocol by subprotocol name; "default"
	 * makes clients that name none land on ours too. */
	static const struct lws_protocol_vhost_options pvo_default = {NULL, NULL, "default", "1"};
	static const struct lws_protocol_vhost_options pvo = {NULL, &pvo_default, "stockalert", ""};
	vinfo.pvo = &pvo;
	vinfo.protocols = s->protocols;
	/* No lws validity timers (all zero): ws.c pings after ping_interval_s
	 * of silence and drops a peer silent for idle_timeout_s on its own
	 * wheel, without lws's O(N) timer insert on every frame. */
	vinfo.retry_and_idle_policy = &s->idle_policy;
	vinfo.options = info.options;
	vinfo.ssl_cert_filepath = cfg->tls.cert_file;
	vinfo.ssl_private_key_filepath = cfg->tls.key_file;
	vinfo.timeout_secs = info.timeout_secs;
	s->vhost = lws_create_vhost(s->lws, &vinfo);
	if (!s->vhost) {
		log_error(MOD, "could not listen on %s:%d (port busy, bad address or TLS files)",
			  cfg->listen.host, cfg->listen.port);
		*exit_code = SERVER_EXIT_START;
		return -1;
	}
	if (activated >= 0) {
		char addr[64];
		s->listener = listener_new(&s->loop, activated, s->vhost, s->env.peers);
		listener_address(s->listener, addr, sizeof addr);
		log_info(MOD,
			 "serving %s://%s on the socket from the service manager "
			 "(listen.host and listen.port unused; fd limit %u)",
			 cfg->tls.cert_file ? "https" : "http", addr, lws_fds);
		return 0;
	}
	log_info(MOD, "listening on %s://%s:%d (fd limit %u)",
		 cfg->tls.cert_file ? "https" : "http", cfg->listen.host,
		 lws_get_vhost_listen_port(s->vhost), lws_fds);
	return 0;
}

static void create_deps(struct server *s)
{
	const struct config *cfg = s->cfg;
	struct redis_options ro = {
	    .name = "redis",
	    .host = cfg->redis.host,
	    .port = cfg->redis.port,
	    .password = cfg->redis.password,
	    .db = cfg->redis.db,
	    .sentinel_master = cfg->redis.sentinel_master_name,
	    .sentinels = (const char *const *)cfg->redis.sentinel_addresses,
	    .n_sentinels = cfg->redis.n_sentinel_addresses,
	};
	s->env.redis = redis_new(&s->loop, &ro, on_redis_state, s);
	ro.name = "redis-pubsub";
	ro.dep = METRICS_DEP_REDIS_PUBSUB;
	s->env.pubsub = redis_new(&s->loop, &ro, on_redis_state, s);
	for (size_t i = 0; i < N_CHANNELS; i++) {
		struct channel_sub *c = &s->channels[i];
		c->s = s;
		c->route = i;
		keys_name(c->name, sizeof c->name, cfg->redis.prefix, channel_routes[i].suffix);
		redis_subscribe(s->env.pubsub, c->name, on_channel_message, c);
	}

	struct store_options so = {
	    .host = cfg->mysql.host,
	    .port = cfg->mysql.port,
	    .user = cfg->mysql.user,
	    .password = s->mysql_password,
	    .database = cfg->mysql.database,
	};
	s->env.store = store_new(&s->loop, &so, on_store_state, s);
	ro.name = "redis-stream";
	ro.dep = METRICS_DEP_REDIS_STREAM;
	/* XREADGROUP blocks up to 1 s: the timeout must leave room for it. */
	ro.command_timeout_ms = 5000;
	s->env.streamconn = redis_new(&s->loop, &ro, on_redis_state, s);
	s->env.subs =
	    subs_new(&s->loop, s->env.redis, s->env.store, cfg->redis.prefix,
		     cfg->subscriptions_max_per_user, cfg->subscriptions_max_inflight_per_user);
	s->env.alerts = alerts_new(&s->loop, &s->env);
	/* One id per daemon, for presence, delivery claims and the stream
	 * consumer alike. */
	s->env.presence = presence_new(&s->loop, s->env.redis, s->env.hub, cfg->redis.prefix,
				       alerts_instance(s->env.alerts));
	s->env.stream = stream_new(&s->loop, s->env.streamconn, s->env.alerts, cfg->redis.prefix,
				   alerts_instance(s->env.alerts), on_stream_health, s);
	s->open_deps = 4;
	redis_start(s->env.redis);
	redis_start(s->env.pubsub);
	redis_start(s->env.streamconn);
	store_start(s->env.store);
}

struct server *server_new(struct config *cfg, const char *config_path, int *exit_code)
{
	char err[512];
	struct server *s = mem_calloc(1, sizeof *s);

	s->cfg = cfg;
	s->config_path = mem_strdup(config_path);
	s->env.cfg = cfg;
	s->env.http = &http_table;
	*exit_code = SERVER_EXIT_CONFIG;

	/* A peer that vanishes mid-write must not kill the process. */
	signal(SIGPIPE, SIG_IGN);

	if (cfg->mysql.password_file) {
		s->mysql_password = config_read_secret(cfg->mysql.password_file, err, sizeof err);
		if (!s->mysql_password) {
			log_error(MOD, "mysql.password_file: %s", err);
			goto err;
		}
	} else if (cfg->mysql.password) {
		s->mysql_password = mem_strdup(cfg->mysql.password);
	}
	s->env.auth = auth_new(&cfg->auth, err, sizeof err);
	if (!s->env.auth || config_check_files(cfg, err, sizeof err) != 0) {
		log_error(MOD, "%s", err);
		goto err;
	}
	char real[PATH_MAX];
	if (realpath(cfg->static_dir, real))
		s->env.static_root = mem_strdup(real);
	else
		log_warn(MOD, "static_dir %s: %s; the demo page will not be served",
			 cfg->static_dir, strerror(errno));

	if (uv_loop_init(&s->loop) != 0) {
		*exit_code = SERVER_EXIT_START;
		goto err;
	}
	uv_timer_init(&s->loop, &s->grace);
	s->grace.data = s;
	if (start_signal(s, &s->sig_term, SIGTERM) || start_signal(s, &s->sig_int, SIGINT) ||
	    start_signal(s, &s->sig_hup, SIGHUP)) {
		*exit_code = SERVER_EXIT_START;
		goto err_loop;
	}
	metrics_init();
	s->env.hub = hub_new(&ws_sink_ops, LWS_PRE, (size_t)cfg->ws.send_queue_max);
	s->env.peers = peers_new(&(struct peers_options){
	    .max_per_address = cfg->listen.max_connections_per_address,
	    .unlimited = cfg->listen.unlimited_addresses,
	    .n_unlimited = cfg->listen.n_unlimited_addresses,
	    .max_pending = cfg->listen.max_pending_handshakes,
	});
	uv_timer_init(&s->loop, &s->quiet);
	s->quiet.data = s;
	uv_timer_start(&s->quiet, on_quiet_tick, PEERS_TICK_MS, PEERS_TICK_MS);
	uv_unref((uv_handle_t *)&s->quiet);
	if (create_lws(s, exit_code) != 0)
		goto err_loop;
	ws_init(&s->env, &s->loop);
	/* Before the dependencies, whose first state changes may make us
	 * ready. */
	s->notify = notify_new(&s->loop, server_status, s);
	create_deps(s);
	*exit_code = SERVER_EXIT_OK;
	return s;

err_loop:
	/* Tear down what was created on the loop and let it finish closing. */
	if (s->lws)
		lws_context_destroy(s->lws);
	close_handle((uv_handle_t *)&s->sig_term);
	close_handle((uv_handle_t *)&s->sig_int);
	close_handle((uv_handle_t *)&s->sig_hup);
	close_handle((uv_handle_t *)&s->grace);
	if (s->env.peers)
		close_handle((uv_handle_t *)&s->quiet);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	if (s->lws) /* the second half of a foreign-loop destroy */
		lws_context_destroy(s->lws);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
err:
	if (s->env.hub)
		hub_free(s->env.hub);
	peers_free(s->env.peers);
	auth_free(s->env.auth);
	mem_free(s->env.static_root);
	mem_free(s->mysql_password);
	mem_free(s->config_path);
	mem_free(s);
	config_free(cfg);
	return NULL;
}

int server_run(struct server *s)
{
	uv_run(&s->loop, UV_RUN_DEFAULT);
	if (s->grace_expired) {
		/* Whatever is still open is abandoned: tearing down thousands of
		 * sockets and handles one by one would overrun the grace we
		 * promised; the kernel closes them all at once. */
		fflush(stderr);
		_exit(s->exit_code);
	}
	close_handle((uv_handle_t *)&s->grace);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	/* With a foreign loop, lws_context_destroy() first closes lws's
	 * handles on the loop; once they are closed (the loop ran dry), a
	 * second call frees the context itself. */
	if (s->lws) {
		lws_context_destroy(s->lws);
		uv_run(&s->loop, UV_RUN_DEFAULT);
	}
	if (uv_loop_close(&s->loop) != 0)
		log_warn(MOD, "loop closed with handles still open");
	log_info(MOD, "stopped");
	return s->exit_code;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	if (s->env.hub && !s->grace_expired)
		hub_free(s->env.hub);
	peers_free(s->env.peers);
	auth_free(s->env.auth);
	mem_free(s->env.static_root);
	mem_free(s->mysql_password);
	mem_free(s->config_path);
	config_free(s->cfg);
	mem_free(s);
}
