#ifndef STOCKALERT_SUBS_H
#define STOCKALERT_SUBS_H
/*
 * Subscriptions: MySQL is the durable truth, Redis the live index: the
 * user's set, the product's sorted set and one hash per subscription (their
 * layout is in keys.h). This module writes them, and is the only reader of
 * the formats it writes: the hash (subs_hash_parse) and the change notice
 * every instance hears (subs_change_parse).
 *
 * A write goes to MySQL first, bumping the row's version, then to Redis by a
 * Lua script that applies it only when its version is newer than the one
 * Redis holds. Writers on several instances therefore converge on MySQL's
 * state whatever order their Redis updates arrive in. If Redis fails after
 * MySQL succeeded, the MySQL change is undone (guarded by its version) and
 * the caller gets "unavailable": nothing is left half-written.
 *
 * If Redis loses the index (FLUSHALL, failover to an empty replica), the
 * missing marker key <prefix>index:ready gives it away; the index is rebuilt
 * from MySQL in batches, without blocking the loop.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stockalert/kind.h"
#include "stockalert/redis.h"
#include "stockalert/store.h"

struct json_t;

enum subs_status {
	SUBS_CREATED,	     /* 201 */
	SUBS_UPDATED,	     /* 200 */
	SUBS_DELETED,	     /* 204 */
	SUBS_NO_PRODUCT,     /* 404: unknown product */
	SUBS_NOT_SUBSCRIBED, /* 404 on delete */
	SUBS_OVER_LIMIT,     /* 409: subscriptions.max_per_user */
	SUBS_UNAVAILABLE,    /* 503: MySQL or Redis down or failed */
	SUBS_BUSY	     /* 429: the user has max_inflight_per_user under way */
};

/* One subscription as the API shows it. threshold < 0 means "the
 * product's low_stock_threshold". */
struct subs_entry {
	int64_t product_id;
	unsigned kinds;
	int threshold;
	int64_t created_ms;
};

struct subs;

/* e is the subscription as stored after a successful put (NULL otherwise). */
typedef void (*subs_done_fn)(enum subs_status st, const struct subs_entry *e, void *arg);

/* max_inflight_per_user bounds the changes one user can have under way
 * here; one more is answered SUBS_BUSY at once. */
struct subs *subs_new(uv_loop_t *loop, struct redis *redis, struct store *store, const char *prefix,
		      int max_per_user, int max_inflight_per_user);
void subs_close(struct subs *s);

void subs_put(struct subs *s, const char *user, int64_t product_id, unsigned kinds, int threshold,
	      subs_done_fn done, void *arg);
void subs_delete(struct subs *s, const char *user, int64_t product_id, subs_done_fn done,
		 void *arg);

/* Redis (re)connected: check the index marker now. */
void subs_redis_ready(struct subs *s);
/* True while the index is being rebuilt from MySQL. */
bool subs_rebuilding(const struct subs *s);

/* "back_in_stock" -> SUBS_BACK_IN_STOCK; 0 if unknown. */
unsigned subs_kind_parse(const char *name);
const char *subs_kind_name(unsigned kind);
/* "a,b" <-> bits; the text form is what MySQL and Redis store. */
unsigned subs_kinds_from_csv(const char *csv);
void subs_kinds_to_csv(unsigned kinds, char *out, size_t outlen);

/*
 * Parses an optional PUT body {"kinds":[...],"threshold":N}. Empty body =
 * defaults (all kinds, product threshold). Returns 0, or -1 with a message
 * naming the field in err.
 */
int subs_parse_body(const char *body, size_t len, unsigned *kinds, int *threshold, char *err,
		    size_t errlen);

/*
 * The subscription hash, read back: a reader asks for the fields 'kinds',
 * 'threshold', 'created', 'active' with HMGET, in that order (the roster's
 * src/lua/load.lua does), and subs_hash_parse() parses the reply into e (all
 * but product_id). True for a
 * live subscription; false for a deleted one (its hash stays a while as a
 * tombstone), a missing hash or a reply of another shape. */
bool subs_hash_parse(const redisReply *fields, struct subs_entry *e);

/* A change notice on <prefix>subs:changes, parsed. */
struct subs_change {
	const char *user; /* valid until subs_change_free() */
	struct subs_entry entry;
	bool active;		/* false: the subscription was deleted */
	struct json_t *notice_; /* owns user */
};
/* Returns 0, or -1 for a notice that is not one (nothing to free then). */
int subs_change_parse(const char *payload, size_t len, struct subs_change *c);
void subs_change_free(struct subs_change *c);

/* True for an id in 1..SUBS_PRODUCT_ID_MAX. */
bool subs_product_id_valid(long long id);

/* Strict decimal product id in 1..SUBS_PRODUCT_ID_MAX (no sign, no spaces,
 * no leading zeros). */
int subs_parse_id(const char *s, size_t len, int64_t *out);

#endif
