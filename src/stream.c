#include "stockalert/stream.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/backoff.h"
#include "stockalert/keys.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"

#define MOD		"stream"
/* Entries read per XREADGROUP. */
#define READ_COUNT	100
/* How long XREADGROUP waits for new entries; below the client's command
 * timeout, so a blocked read is not taken for a dead server. */
#define BLOCK_MS	1000
/* How often pending entries are claimed and the counters refreshed. */
#define HOUSEKEEPING_MS 5000
/* Retry delays after a Redis error: the bounds redis.c reconnects with, so
 * a stream Redis keeps refusing (a demoted primary, the key of the wrong
 * type) costs what a Redis that is down costs. */
#define RETRY_MIN_MS	100
#define RETRY_MAX_MS	5000

struct stream {
	struct redis *conn;
	struct alerts *alerts;
	char key[128];
	char dead_key[128];
	char consumer[64];
	uv_timer_t timer;
	uv_timer_t retry; /* armed while waiting out the backoff after an error */
	int open_timers;  /* the struct is freed when both have closed */
	bool reading;	  /* an XREADGROUP (or claim) is in flight */
	bool group_ok;
	bool closing;
	int inflight; /* entries in the pipeline, replies outstanding */
	struct stream_stats stats;
	/* Redis refuses to serve the stream: error holds its last answer,
	 * logged once per change, and readiness says so. */
	bool failing;
	bool recreating; /* NOGROUP seen, no read served since */
	char error[160];
	struct backoff backoff;
	stream_health_fn on_health;
	void *health_arg;
};

/* One stream entry on its way through the pipeline. */
struct entry {
	struct stream *s;
	char id[48];
	int64_t deliveries; /* times the group delivered it (from XPENDING) */
};

static void read_more(struct stream *s);

static void on_timer_closed(uv_handle_t *h)
{
	struct stream *s = h->data;
	if (--s->open_timers == 0)
		mem_free(s);
}

static void maybe_free(struct stream *s)
{
	if (s->closing && s->inflight == 0 && !s->reading &&
	    !uv_is_closing((uv_handle_t *)&s->timer)) {
		uv_close((uv_handle_t *)&s->timer, on_timer_closed);
		uv_close((uv_handle_t *)&s->retry, on_timer_closed);
	}
}

static void on_retry(uv_timer_t *t)
{
	stream_ready(t->data);
}

/*
 * Redis answered a command the input depends on with an error. Whatever it
 * is (a replica refusing writes, the key holding another type, the group
 * gone), asking again at once would get the same answer thousands of times a
 * second: wait with the reconnect's capped, jittered backoff instead. The
 * warning is written when the error changes, not on every retry.
 */
static void input_failed(struct stream *s, const char *what, const char *error)
{
	char msg[sizeof s->error];
	snprintf(msg, sizeof msg, "%s: %s", what, error);
	uint32_t delay = backoff_next(&s->backoff);
	if (!s->failing || strcmp(msg, s->error) != 0)
		log_warn(MOD, "%s: input not working (%s); retrying with backoff", s->key, msg);
	snprintf(s->error, sizeof s->error, "%s", msg);
	bool was = s->failing;
	s->failing = true;
	if (!was && s->on_health)
		s->on_health(false, s->health_arg);
	uv_timer_start(&s->retry, on_retry, delay, 0);
}

static void input_working(struct stream *s)
{
	backoff_reset(&s->backoff);
	if (!s->failing)
		return;
	s->failing = false;
	s->error[0] = '\0';
	log_info(MOD, "%s: input working again", s->key);
	if (s->on_health)
		s->on_health(true, s->health_arg);
}

static void on_acked(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	(void)reply;
	struct stream *s = arg;
	s->inflight--;
	maybe_free(s);
}

static void ack(struct stream *s, const char *id)
{
	s->inflight++;
	if (redis_command(s->conn, on_acked, s, "XACK %s %s %s", s->key, STREAM_GROUP, id) != 0)
		on_acked(NULL, NULL, s);
}

/* Moves the entry to the dead-letter stream with its reason, then acks it:
 * in that order, so a crash in between leaves it pending, not lost. */
static void bury(struct stream *s, const char *id, const char *payload, size_t len,
		 const char *reason)
{
	log_warn(MOD, "entry %s moved to %s: %s", id, s->dead_key, reason);
	const char *argv[] = {"XADD",	s->dead_key, "*",     "id",   id,
			      "reason", reason,	     "event", payload};
	size_t lens[] = {4, strlen(s->dead_key), 1, 2, strlen(id), 6, strlen(reason), 5, len};
	s->inflight++;
	if (redis_command_argv(s->conn, on_acked, s, 9, argv, lens) != 0)
		on_acked(NULL, NULL, s);
	ack(s, id);
	s->stats.dead++;
}

struct processing {
	struct entry e;
	char *payload;
	size_t len;
};

static void on_processed(int status, const char *reason, void *arg)
{
	struct processing *p = arg;
	struct stream *s = p->e.s;

	if (status == ALERTS_PROCESSED)
		ack(s, p->e.id);
	else if (status == ALERTS_MALFORMED)
		bury(s, p->e.id, p->payload, p->len, reason ? reason : "malformed");
	else if (p->e.deliveries >= STREAM_MAX_ATTEMPTS)
		bury(s, p->e.id, p->payload, p->len, "failed 5 times");
	/* else: left pending; claimed again after STREAM_CLAIM_IDLE_MS */
	mem_free(p->payload);
	mem_free(p);
	s->inflight--;
	maybe_free(s);
}

/* Runs one [id, [field, value, ...]] entry. */
static void run_entry(struct stream *s, const redisReply *e, int64_t deliveries)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING)
		return;
	const char *id = e->element[0]->str;
	const redisReply *f = e->element[1];
	const char *payload = NULL;
	size_t len = 0;
	if (f->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i + 1 < f->elements; i += 2)
			if (f->element[i]->type == REDIS_REPLY_STRING &&
			    strcmp(f->element[i]->str, "event") == 0 &&
			    f->element[i + 1]->type == REDIS_REPLY_STRING) {
				payload = f->element[i + 1]->str;
				len = f->element[i + 1]->len;
			}
	if (!payload) {
		bury(s, id, "", 0, "no \"event\" field");
		return;
	}
	struct processing *p = mem_calloc(1, sizeof *p);
	p->e.s = s;
	snprintf(p->e.id, sizeof p->e.id, "%s", id);
	p->e.deliveries = deliveries;
	p->payload = mem_strndup(payload, len);
	p->len = len;
	s->inflight++;
	alerts_process(s->alerts, p->payload, p->len, on_processed, p);
}

static void on_read(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct stream *s = arg;
	s->reading = false;
	if (s->closing) {
		maybe_free(s);
		return;
	}
	if (!reply) {
		/* Connection trouble: stream_ready() starts again. */
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		bool nogroup = strstr(reply->str, "NOGROUP") != NULL;
		if (nogroup)
			s->group_ok = false;
		/* The stream or the group is gone (a Redis that restarted
		 * empty, a failover to a node that never had it): create them
		 * again at once, the first time. A group that keeps vanishing
		 * goes through the backoff like any other refusal. */
		if (nogroup && !s->recreating) {
			s->recreating = true;
			log_warn(MOD, "%s: consumer group missing; creating it again", s->key);
			stream_ready(s);
			return;
		}
		input_failed(s, "XREADGROUP", reply->str);
		return;
	}
	s->recreating = false;
	input_working(s);
	/* [[key, [entries...]]], or nil when BLOCK timed out. */
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
	    reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2) {
		const redisReply *entries = reply->element[0]->element[1];
		for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++)
			run_entry(s, entries->element[i], 1);
	}
	read_more(s);
}

static void read_more(struct stream *s)
{
	char count[16], block[16];
	if (s->reading || s->closing || !s->group_ok || !redis_is_ready(s->conn))
		return;
	snprintf(count, sizeof count, "%d", READ_COUNT);
	snprintf(block, sizeof block, "%d", BLOCK_MS);
	const char *argv[] = {"XREADGROUP", "GROUP", STREAM_GROUP, s->consumer, "COUNT", count,
			      "BLOCK",	    block,   "STREAMS",	   s->key,	">"};
	s->reading = true;
	if (redis_command_argv(s->conn, on_read, s, 11, argv, NULL) != 0)
		s->reading = false;
}

static void on_group(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct stream *s = arg;
	s->inflight--;
	if (reply && (reply->type == REDIS_REPLY_STATUS ||
		      (reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "BUSYGROUP")))) {
		s->group_ok = true;
		/* Redis serves the stream again: no need to wait for the
		 * first read, which may block for BLOCK_MS. */
		input_working(s);
		read_more(s);
	} else if (reply && reply->type == REDIS_REPLY_ERROR && !s->closing) {
		input_failed(s, "XGROUP CREATE", reply->str);
	}
	maybe_free(s);
}

void stream_ready(struct stream *s)
{
	if (s->closing || !redis_is_ready(s->conn))
		return;
	/* Called early (the connection came back): this is the retry. */
	uv_timer_stop(&s->retry);
	if (s->group_ok) {
		read_more(s);
		return;
	}
	/* From the beginning of the stream: what producers added while no
	 * instance had ever run must be processed too. */
	s->inflight++;
	if (redis_command(s->conn, on_group, s, "XGROUP CREATE %s %s 0 MKSTREAM", s->key,
			  STREAM_GROUP) != 0) {
		s->inflight--;
	}
}

/* --- claiming what dead instances left, and the counters -------------------- */

struct claimed {
	struct stream *s;
	char id[48];
	char *payload;
	size_t len;
	bool has_payload;
};

static void on_claimed_count(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct claimed *c = arg;
	struct stream *s = c->s;
	int64_t deliveries = 1;
	/* [[id, consumer, idle, deliveries]] */
	if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
	    reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 4 &&
	    reply->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
		deliveries = reply->element[0]->element[3]->integer;
	s->inflight--;
	if (!c->has_payload) {
		bury(s, c->id, "", 0, "no \"event\" field");
	} else if (deliveries > STREAM_MAX_ATTEMPTS) {
		bury(s, c->id, c->payload, c->len, "failed 5 times");
	} else {
		struct processing *p = mem_calloc(1, sizeof *p);
		p->e.s = s;
		snprintf(p->e.id, sizeof p->e.id, "%s", c->id);
		p->e.deliveries = deliveries;
		p->payload = c->payload;
		p->len = c->len;
		c->payload = NULL;
		s->inflight++;
		log_info(MOD, "claimed %s (delivery %lld)", c->id, (long long)deliveries);
		alerts_process(s->alerts, p->payload, p->len, on_processed, p);
	}
	mem_free(c->payload);
	mem_free(c);
	maybe_free(s);
}

static void on_autoclaim(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct stream *s = arg;
	s->inflight--;
	/* [next cursor, [entries], [deleted ids]] */
	if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
	    reply->element[1]->type == REDIS_REPLY_ARRAY && !s->closing) {
		const redisReply *entries = reply->element[1];
		for (size_t i = 0; i < entries->elements; i++) {
			const redisReply *e = entries->element[i];
			if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
				continue;
			struct claimed *c = mem_calloc(1, sizeof *c);
			c->s = s;
			snprintf(c->id, sizeof c->id, "%s", e->element[0]->str);
			const redisReply *f = e->element[1];
			for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements;
			     k += 2)
				if (strcmp(f->element[k]->str, "event") == 0) {
					c->payload = mem_strndup(f->element[k + 1]->str,
								 f->element[k + 1]->len);
					c->len = f->element[k + 1]->len;
					c->has_payload = true;
				}
			/* How often it was delivered decides retry or bury. */
			s->inflight++;
			if (redis_command(s->conn, on_claimed_count, c,
					  "XPENDING %s %s IDLE 0 %s %s 1", s->key, STREAM_GROUP,
					  c->id, c->id) != 0)
				on_claimed_count(NULL, NULL, c);
		}
	}
	maybe_free(s);
}

static void on_pending_info(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct stream *s = arg;
	s->inflight--;
	/* XINFO GROUPS: [[name, ..., pending, N, ..., lag, N], ...] */
	if (reply && reply->type == REDIS_REPLY_ARRAY) {
		for (size_t g = 0; g < reply->elements; g++) {
			const redisReply *grp = reply->element[g];
			bool ours = false;
			int64_t pending = 0, lag = -1;
			for (size_t i = 0; grp->type == REDIS_REPLY_ARRAY && i + 1 < grp->elements;
			     i += 2) {
				const char *k = grp->element[i]->str;
				const redisReply *v = grp->element[i + 1];
				if (strcmp(k, "name") == 0 && v->type == REDIS_REPLY_STRING)
					ours = strcmp(v->str, STREAM_GROUP) == 0;
				else if (strcmp(k, "pending") == 0 &&
					 v->type == REDIS_REPLY_INTEGER)
					pending = v->integer;
				else if (strcmp(k, "lag") == 0 && v->type == REDIS_REPLY_INTEGER)
					lag = v->integer;
			}
			if (ours) {
				s->stats.pending = pending;
				s->stats.lag = lag;
				metrics_gauge_set(METRICS_STREAM_PENDING, pending);
				metrics_gauge_set(METRICS_STREAM_LAG, lag);
			}
		}
	}
	maybe_free(s);
}

static void on_dead_len(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct stream *s = arg;
	s->inflight--;
	if (reply && reply->type == REDIS_REPLY_INTEGER) {
		s->stats.dead = reply->integer;
		metrics_gauge_set(METRICS_STREAM_DEAD, s->stats.dead);
	}
	maybe_free(s);
}

static void on_timer(uv_timer_t *t)
{
	struct stream *s = t->data;
	char idle[24];
	if (s->closing || !redis_is_ready(s->conn))
		return;
	/* Not while an error's backoff runs: the retry timer restarts. */
	if ((!s->group_ok || !s->reading) && !uv_is_active((uv_handle_t *)&s->retry))
		stream_ready(s);
	if (!s->group_ok)
		return;
	snprintf(idle, sizeof idle, "%d", STREAM_CLAIM_IDLE_MS);
	s->inflight += 3;
	if (redis_command(s->conn, on_autoclaim, s, "XAUTOCLAIM %s %s %s %s 0-0 COUNT 100", s->key,
			  STREAM_GROUP, s->consumer, idle) != 0)
		s->inflight--;
	if (redis_command(s->conn, on_pending_info, s, "XINFO GROUPS %s", s->key) != 0)
		s->inflight--;
	if (redis_command(s->conn, on_dead_len, s, "XLEN %s", s->dead_key) != 0)
		s->inflight--;
}

struct stream *stream_new(uv_loop_t *loop, struct redis *conn, struct alerts *alerts,
			  const char *prefix, const char *consumer, stream_health_fn on_health,
			  void *arg)
{
	struct stream *s = mem_calloc(1, sizeof *s);
	s->conn = conn;
	s->alerts = alerts;
	keys_name(s->key, sizeof s->key, prefix, KEYS_INVENTORY_STREAM);
	keys_name(s->dead_key, sizeof s->dead_key, prefix, KEYS_INVENTORY_DEAD);
	snprintf(s->consumer, sizeof s->consumer, "%s", consumer);
	s->stats.lag = -1;
	metrics_gauge_set(METRICS_STREAM_LAG, -1);
	s->on_health = on_health;
	s->health_arg = arg;
	backoff_init(&s->backoff, RETRY_MIN_MS, RETRY_MAX_MS,
		     (uint64_t)uv_hrtime() ^ (uint64_t)(uintptr_t)s);
	uv_timer_init(loop, &s->timer);
	uv_timer_init(loop, &s->retry);
	s->timer.data = s;
	s->retry.data = s;
	s->open_timers = 2;
	uv_timer_start(&s->timer, on_timer, HOUSEKEEPING_MS, HOUSEKEEPING_MS);
	return s;
}

void stream_stats(const struct stream *s, struct stream_stats *out)
{
	*out = s->stats;
	out->error = s->failing ? s->error : NULL;
}

bool stream_working(const struct stream *s)
{
	return !s->failing;
}

void stream_close(struct stream *s)
{
	s->closing = true;
	uv_timer_stop(&s->timer);
	uv_timer_stop(&s->retry);
	maybe_free(s);
}
