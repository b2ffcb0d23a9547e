#include "alerts_int.h"

#include <unistd.h>

/* Compiled in from src/lua/process.lua. */
extern const char sa_lua_process[];

/* Events held while Redis commands cannot run; at most BACKLOG_MAX. */
#define BACKLOG_MAX 10000

struct backlog_event {
	struct backlog_event *next;
	size_t len;
	char payload[];
};

/* --- event processing -------------------------------------------------------- */

struct ev_job {
	struct alerts *a;
	struct inv_event ev;
	char *name;
	int threshold;
	int64_t received_ms;
	/* The receipt again, for the histograms: wall clock (event to socket)
	 * and uv_hrtime() (processing time). */
	int64_t received_us;
	uint64_t received_ns;
	alerts_done_fn done; /* the durable input waits for the outcome */
	void *done_arg;
	int status; /* ALERTS_* */
};

static void job_free(struct ev_job *j)
{
	if (j->done)
		j->done(j->status, j->status == ALERTS_FAILED ? "redis unavailable" : NULL,
			j->done_arg);
	mem_free(j->name);
	mem_free(j);
}

static void on_processed(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct ev_job *j = arg;
	struct alerts *a = j->a;

	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 8) {
		if (!a->closing)
			log_warn(MOD,
				 "event %s: not processed (%s); it is delivered from the "
				 "history once Redis is back, if another instance recorded it",
				 j->ev.event_id,
				 reply && reply->type == REDIS_REPLY_ERROR ? reply->str
									   : "no reply");
		j->status = ALERTS_FAILED;
		goto out;
	}
	j->status = ALERTS_PROCESSED;
	metrics_observe(METRICS_H_EVENT_PROCESS, 0, metrics_seconds(j->received_ns, uv_hrtime()));
	const char *kind_name = alerts_reply_str(reply->element[0]);
	const char *id = alerts_reply_str(reply->element[1]);
	const char *prev = alerts_reply_str(reply->element[2]);
	bool first = alerts_reply_int(reply->element[3]) == 1;
	bool mine = alerts_reply_int(reply->element[4]) == 1;
	int64_t ts = alerts_reply_int(reply->element[5]);
	const char *name = alerts_reply_str(reply->element[6]);

	if (first)
		catalog_set_stock(a->catalog, j->ev.product_id, j->ev.stock);
	alerts_fair_count(alerts_reply_int(reply->element[7]));
	if (!mine) {
		metrics_inc(METRICS_EVENTS_DUPLICATE);
		log_debug(MOD, "event %s: already delivered here", j->ev.event_id);
		goto out;
	}
	unsigned kind = subs_kind_parse(kind_name);
	struct alert al = {.kind = kind, .product_id = j->ev.product_id, .stock = j->ev.stock};
	if (!kind || alert_id_parse(id, &al.order) != 0)
		goto out;
	snprintf(al.id, sizeof al.id, "%s", id);
	al.prev = strtoll(prev, NULL, 10);
	al.default_threshold = j->threshold;
	al.msg = alerts_encode(a,
			       alert_json(al.id, kind, al.product_id, *name ? name : NULL, al.stock,
					  al.prev, j->ev.event_id, ts),
			       al.order);
	if (al.msg) {
		al.msg->origin_us = j->ev.has_ts ? j->ev.ts_ms * 1000 : j->received_us;
		al.msg->origin = j->ev.has_ts ? METRICS_ORIGIN_TS : METRICS_ORIGIN_RECEIPT;
		alerts_note_seen(a, al.id, al.order);
		alerts_deliver(a, &al);
		hub_msg_unref(al.msg);
	}
out:
	job_free(j);
	alerts_op_done(a);
}

static void on_product_info(const struct product_info *p, void *arg)
{
	struct ev_job *j = arg;
	struct alerts *a = j->a;
	char k_event[256], k_stock[128], k_stream[96], k_thr[128], k_inst[272], k_start[112];
	char pid[24], stock[24], prev[24], fallback[24], thr[16], ts[24], minid[32], ttl[16];
	char factor[32], interval[24], now[24], stock_ttl[16];

	j->name = p->name ? mem_strdup(p->name) : NULL;
	j->threshold = p->threshold;
	char idk[EVENTS_ID_KEY_MAX + 1];
	events_id_key(j->ev.event_id, idk, sizeof idk);
	keys_event(k_event, sizeof k_event, a->prefix, idk);
	keys_stock(k_stock, sizeof k_stock, a->prefix, j->ev.product_id);
	keys_name(k_stream, sizeof k_stream, a->prefix, KEYS_ALERTS);
	keys_product_thr(k_thr, sizeof k_thr, a->prefix, j->ev.product_id);
	keys_event_instances(k_inst, sizeof k_inst, a->prefix, idk);
	keys_name(k_start, sizeof k_start, a->prefix, KEYS_ALERTS_START);
	snprintf(pid, sizeof pid, "%" PRId64, j->ev.product_id);
	snprintf(stock, sizeof stock, "%" PRId64, j->ev.stock);
	if (j->ev.has_prev)
		snprintf(prev, sizeof prev, "%" PRId64, j->ev.prev_stock);
	else
		prev[0] = '\0';
	/* Without prev_stock and without shared state yet (first event for
	 * the product since Redis started), MySQL's products.stock is the
	 * previous level. */
	if (p->has_stock)
		snprintf(fallback, sizeof fallback, "%" PRId64, p->stock);
	else
		fallback[0] = '\0';
	snprintf(thr, sizeof thr, "%d", p->threshold);
	snprintf(ts, sizeof ts, "%" PRId64, j->ev.has_ts ? j->ev.ts_ms : j->received_ms);
	snprintf(minid, sizeof minid, "%" PRId64,
		 alerts_now_ms() - (int64_t)a->cfg->alerts.history_s * 1000);
	snprintf(ttl, sizeof ttl, "%d", a->cfg->alerts.history_s);
	snprintf(factor, sizeof factor, "%.6f", a->cfg->alerts.fair_release_factor);
	snprintf(interval, sizeof interval, "%d", a->cfg->alerts.fair_release_interval_s * 1000);
	snprintf(now, sizeof now, "%" PRId64, alerts_now_ms());
	snprintf(stock_ttl, sizeof stock_ttl, "%d", a->cfg->alerts.stock_ttl_s);

	const char *argv[] = {"EVAL",
			      sa_lua_process,
			      "6",
			      k_event,
			      k_stock,
			      k_stream,
			      k_thr,
			      k_inst,
			      k_start,
			      a->instance,
			      pid,
			      stock,
			      prev,
			      fallback,
			      thr,
			      j->name ? j->name : "",
			      j->ev.event_id,
			      ts,
			      minid,
			      ttl,
			      a->prefix,
			      factor,
			      interval,
			      now,
			      stock_ttl};
	if (a->closing || redis_command_argv(a->env->redis, on_processed, j,
					     (int)(sizeof argv / sizeof argv[0]), argv, NULL) != 0)
		on_processed(NULL, NULL, j);
}

void alerts_process(struct alerts *a, const char *payload, size_t len, alerts_done_fn done,
		    void *arg)
{
	char err[256];
	struct ev_job *j = mem_calloc(1, sizeof *j);

	metrics_inc(METRICS_EVENTS_RECEIVED);
	if (events_parse(payload, len, false, &j->ev, err, sizeof err) != 0) {
		metrics_inc(METRICS_EVENTS_MALFORMED);
		log_warn(MOD, "malformed event skipped: %s (%zu bytes: %.80s%s)", err, len, payload,
			 len > 80 ? "..." : "");
		mem_free(j);
		if (done)
			done(ALERTS_MALFORMED, err, arg);
		return;
	}
	j->a = a;
	j->received_ms = alerts_now_ms();
	j->received_us = metrics_wall_us();
	j->received_ns = uv_hrtime();
	j->done = done;
	j->done_arg = arg;
	j->status = ALERTS_FAILED;
	a->inflight++;
	catalog_get(a->catalog, j->ev.product_id, on_product_info, j);
}

static void drain_backlog(struct alerts *a);

void alerts_on_inventory(struct alerts *a, const char *payload, size_t len)
{
	if (redis_is_ready(a->env->redis)) {
		drain_backlog(a); /* older events first */
		alerts_process(a, payload, len, NULL, NULL);
		return;
	}
	/* The subscriber is back before the command connection: hold the
	 * event rather than fail it (pub/sub will not send it again). */
	if (a->nbacklog >= BACKLOG_MAX) {
		log_warn(MOD,
			 "event backlog full (%d) while Redis commands are unavailable: "
			 "dropping the oldest event",
			 BACKLOG_MAX);
		struct backlog_event *old = a->backlog;
		a->backlog = old->next;
		if (!a->backlog)
			a->backlog_tail = NULL;
		mem_free(old);
		a->nbacklog--;
	}
	struct backlog_event *e = mem_alloc(sizeof *e + len + 1);
	e->next = NULL;
	e->len = len;
	memcpy(e->payload, payload, len);
	e->payload[len] = '\0';
	if (a->backlog_tail)
		a->backlog_tail->next = e;
	else
		a->backlog = e;
	a->backlog_tail = e;
	a->nbacklog++;
}

static void drain_backlog(struct alerts *a)
{
	if (a->backlog)
		log_info(MOD, "running %zu events held while Redis commands were unavailable",
			 a->nbacklog);
	while (a->backlog && redis_is_ready(a->env->redis) && !a->closing) {
		struct backlog_event *e = a->backlog;
		a->backlog = e->next;
		if (!a->backlog)
			a->backlog_tail = NULL;
		a->nbacklog--;
		alerts_process(a, e->payload, e->len, NULL, NULL);
		mem_free(e);
	}
}

static void free_backlog(struct alerts *a)
{
	while (a->backlog) {
		struct backlog_event *e = a->backlog;
		a->backlog = e->next;
		mem_free(e);
	}
	a->backlog_tail = NULL;
	a->nbacklog = 0;
}

/* --- catch-up after Redis came back ------------------------------------------ */

struct catchup {
	struct alerts *a;
	struct alert al;
	char *name;
	char event_id[EVENTS_ID_MAX + 1];
	int64_t ts;
};

static void on_catchup_mark(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct catchup *c = arg;
	struct alerts *a = c->a;
	if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1 && !a->closing) {
		c->al.msg =
		    alerts_encode(a,
				  alert_json(c->al.id, c->al.kind, c->al.product_id, c->name,
					     c->al.stock, c->al.prev, c->event_id, c->ts),
				  c->al.order);
		if (c->al.msg) {
			log_info(MOD, "catch-up: delivering %s (event %s)", c->al.id, c->event_id);
			alerts_deliver(a, &c->al);
			hub_msg_unref(c->al.msg);
		}
	}
	mem_free(c->name);
	mem_free(c);
	alerts_op_done(a);
}

static void on_catchup_range(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct alerts *a = arg;
	a->catching_up = false;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || a->closing) {
		alerts_op_done(a);
		return;
	}
	for (size_t i = 0; i < reply->elements; i++) {
		struct alert_entry en;
		if (!alert_entry_parse(reply->element[i], &en))
			continue;
		struct catchup *c = mem_calloc(1, sizeof *c);
		c->a = a;
		snprintf(c->al.id, sizeof c->al.id, "%s", en.id);
		c->al.order = en.order;
		c->al.kind = en.kind;
		c->al.product_id = en.product_id;
		c->al.stock = en.stock;
		c->al.prev = en.prev;
		c->al.default_threshold = en.thr;
		c->name = mem_strdup(en.name);
		snprintf(c->event_id, sizeof c->event_id, "%s", en.event_id);
		c->ts = en.ts;
		alerts_note_seen(a, c->al.id, c->al.order);
		/* Claim it for this instance; whoever delivered it live already
		 * holds the claim, so nothing is delivered twice. */
		char k_inst[300], idk[EVENTS_ID_KEY_MAX + 1];
		events_id_key(c->event_id, idk, sizeof idk);
		keys_event_instances(k_inst, sizeof k_inst, a->prefix, idk);
		a->inflight++;
		if (redis_command(a->env->redis, on_catchup_mark, c, "SADD %s %s", k_inst,
				  a->instance) != 0)
			on_catchup_mark(NULL, NULL, c);
	}
	alerts_op_done(a);
}

void alerts_redis_ready(struct alerts *a)
{
	char k_stream[96], start[40];
	drain_backlog(a);
	if (a->catching_up || a->closing || !redis_is_ready(a->env->redis))
		return;
	keys_name(k_stream, sizeof k_stream, a->prefix, KEYS_ALERTS);
	snprintf(start, sizeof start, "(%s", a->last_id);
	a->catching_up = true;
	a->inflight++;
	if (redis_command(a->env->redis, on_catchup_range, a, "XRANGE %s %s + COUNT 10000",
			  k_stream, start) != 0) {
		a->catching_up = false;
		alerts_op_done(a);
	}
}

/* --- publishing ----------------------------------------------------------------- */

struct publish {
	struct alerts *a;
	void (*done)(int rc, void *arg);
	void *arg;
};

static void on_published(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct publish *p = arg;
	struct alerts *a = p->a;
	p->done(reply && reply->type == REDIS_REPLY_INTEGER ? 0 : -1, p->arg);
	mem_free(p);
	alerts_op_done(a);
}

void alerts_publish(struct alerts *a, const struct inv_event *ev, void (*done)(int rc, void *arg),
		    void *arg)
{
	char channel[96];
	char *json = events_encode(ev);
	struct publish *p = mem_calloc(1, sizeof *p);
	p->a = a;
	p->done = done;
	p->arg = arg;
	keys_name(channel, sizeof channel, a->prefix, KEYS_INVENTORY);
	a->inflight++;
	if (a->closing ||
	    redis_command(a->env->redis, on_published, p, "PUBLISH %s %s", channel, json) != 0)
		on_published(NULL, NULL, p);
	mem_free(json);
}

/* --- lifecycle -------------------------------------------------------------------- */
/* The window timer closes last (alerts_maybe_free): then every part tears
 * its state down and a is freed. */
static void on_window_timer_closed(uv_handle_t *h);

struct alerts *alerts_new(uv_loop_t *loop, struct http_env *env)
{
	struct alerts *a = mem_calloc(1, sizeof *a);
	struct timespec ts;

	a->loop = loop;
	a->env = env;
	a->cfg = env->cfg;
	a->roster = roster_new();
	a->catalog = catalog_new(loop, env->store, (size_t)env->cfg->catalog_max_entries);
	a->held = dict_new();
	a->loading = dict_new();
	snprintf(a->prefix, sizeof a->prefix, "%s", env->cfg->redis.prefix);
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(a->instance, sizeof a->instance, "%lx-%x-%x", (unsigned long)ts.tv_sec,
		 (unsigned)getpid(), (unsigned)ts.tv_nsec);
	/* Catch-up starts from now: older alerts reach clients through
	 * resume, not as live pushes. */
	snprintf(a->last_id, sizeof a->last_id, "%" PRId64 "-0", alerts_now_ms());
	uv_timer_init(loop, &a->window_timer);
	a->window_timer.data = a;
	a->on_closed = on_window_timer_closed;
	uv_timer_init(loop, &a->fair_timer);
	a->fair_timer.data = a;
	alerts_fair_arm(a);
	return a;
}

void alerts_config_changed(struct alerts *a)
{
	if (!a->closing)
		alerts_fair_arm(a);
}

const char *alerts_instance(const struct alerts *a)
{
	return a->instance;
}

static void on_window_timer_closed(uv_handle_t *h)
{
	struct alerts *a = h->data;
	alerts_deliver_free(a);
	free_backlog(a);
	alerts_roster_free(a);
	catalog_close(a->catalog);
	mem_free(a);
}

void alerts_close(struct alerts *a)
{
	a->closing = true;
	uv_timer_stop(&a->window_timer);
	alerts_fair_close(a); /* first: see alerts_fair_close */
	alerts_maybe_free(a);
}
