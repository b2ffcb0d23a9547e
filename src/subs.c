#include "stockalert/subs.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/dict.h"
#include "stockalert/errbuf.h"
#include "stockalert/keys.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"

#define MOD		"subs"
/* Rows per rebuild batch: large enough to finish 1M subscriptions in
 * seconds, small enough that one batch never holds the loop noticeably. */
#define REBUILD_BATCH	500
/* How often the index marker is checked, so a FLUSHALL is noticed even
 * when the connection survived it. */
#define MARKER_CHECK_MS 2000
/* A deleted subscription's hash stays as a tombstone this long, so a late,
 * older update cannot resurrect it. */
#define TOMBSTONE_MS	86400000
/* User ids kept per operation (longer ones are cut: the JWT layer allows
 * no longer). */
#define USER_MAX	64
/* Times a write that InnoDB chose as a deadlock victim is run again. */
#define WRITE_RETRIES	5

/* Compiled in from src/lua/subs_apply.lua (what it is sent and returns). */
extern const char sa_lua_subs_apply[];

static const char *const kind_names[] = {"back_in_stock", "low_stock", "sold_out"};

struct subs {
	struct redis *redis;
	struct store *store;
	char *prefix;
	int max_per_user;
	int max_inflight_per_user;
	struct dict *user_ops; /* user -> struct user_inflight, while > 0 */
	uv_timer_t marker_timer;
	bool rebuilding;
	bool closing;
	int inflight; /* operations holding a pointer to us */
	/* rebuild cursor */
	char *cursor_user;
	int64_t cursor_product;
	int batch_pending; /* Redis replies outstanding in this batch */
	bool batch_failed;
	uint64_t rebuilt_rows;
};

/* The state of one (user, product) row as MySQL has it. */
struct row_state {
	bool exists;
	bool active;
	unsigned kinds;
	int threshold;
	int64_t version;
	int64_t created_ms;
};

enum op_kind { OP_PUT, OP_DELETE };

struct user_inflight {
	int n; /* the user's operations under way */
};

struct op {
	struct subs *s;
	enum op_kind kind;
	char user[USER_MAX + 1];
	char *user_sql; /* escaped */
	int64_t product;
	unsigned kinds;
	int threshold;
	struct row_state before, after;
	enum subs_status result;
	int retries; /* deadlocked writes run again */
	subs_done_fn done;
	void *arg;
};

unsigned subs_kind_parse(const char *name)
{
	for (unsigned i = 0; i < 3; i++)
		if (strcmp(name, kind_names[i]) == 0)
			return 1u << i;
	return 0;
}

const char *subs_kind_name(unsigned kind)
{
	for (unsigned i = 0; i < 3; i++)
		if (kind == 1u << i)
			return kind_names[i];
	return "unknown";
}

unsigned subs_kinds_from_csv(const char *csv)
{
	unsigned kinds = 0;
	char name[32];
	while (csv && *csv) {
		size_t n = strcspn(csv, ",");
		if (n < sizeof name) {
			memcpy(name, csv, n);
			name[n] = '\0';
			kinds |= subs_kind_parse(name);
		}
		csv += n;
		if (*csv == ',')
			csv++;
	}
	return kinds;
}

void subs_kinds_to_csv(unsigned kinds, char *out, size_t outlen)
{
	size_t used = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < 3; i++) {
		if (!(kinds & (1u << i)))
			continue;
		int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", kind_names[i]);
		if (n < 0 || (size_t)n >= outlen - used)
			return;
		used += (size_t)n;
	}
}

bool subs_product_id_valid(long long id)
{
	return id >= 1 && id <= SUBS_PRODUCT_ID_MAX;
}

int subs_parse_id(const char *p, size_t len, int64_t *out)
{
	int64_t v = 0;
	if (len == 0 || len > 16 || p[0] == '0')
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0'); /* 16 digits cannot overflow */
	}
	if (!subs_product_id_valid(v))
		return -1;
	*out = v;
	return 0;
}

int subs_parse_body(const char *body, size_t len, unsigned *kinds, int *threshold, char *err,
		    size_t errlen)
{
	json_error_t jerr;
	json_t *j, *v;
	const char *key;

	*kinds = SUBS_ALL_KINDS;
	*threshold = -1;
	while (len && (body[len - 1] == ' ' || body[len - 1] == '\n' || body[len - 1] == '\r' ||
		       body[len - 1] == '\t'))
		len--;
	if (len == 0)
		return 0;
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		errbuf_json(err, errlen, "body: ", &jerr, body, len);
		return -1;
	}
	if (!json_is_object(j)) {
		errbuf_set(err, errlen, "body: expected a JSON object");
		goto err;
	}
	json_object_foreach(j, key, v)
	{
		if (strcmp(key, "kinds") == 0) {
			size_t i;
			json_t *k;
			if (!json_is_array(v) || json_array_size(v) == 0) {
				errbuf_set(err, errlen,
					   "kinds: expected a non-empty array of "
					   "\"back_in_stock\", \"low_stock\", \"sold_out\"");
				goto err;
			}
			*kinds = 0;
			json_array_foreach(v, i, k)
			{
				unsigned bit =
				    json_is_string(k) ? subs_kind_parse(json_string_value(k)) : 0;
				if (!bit) {
					errbuf_set(err, errlen,
						   "kinds[%zu]: unknown kind (expected "
						   "back_in_stock, low_stock or sold_out)",
						   i);
					goto err;
				}
				*kinds |= bit;
			}
		} else if (strcmp(key, "threshold") == 0) {
			if (json_is_null(v)) {
				*threshold = -1;
				continue;
			}
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 1000000000) {
				errbuf_set(err, errlen,
					   "threshold: expected an integer from 0 to 1000000000");
				goto err;
			}
			*threshold = (int)json_integer_value(v);
		} else {
			/* A long key is cut short so the message still says why. */
			errbuf_set(err, errlen, "%.48s%s: unknown field", key,
				   strlen(key) > 48 ? "..." : "");
			goto err;
		}
	}
	json_decref(j);
	return 0;
err:
	json_decref(j);
	return -1;
}

static void on_timer_closed(uv_handle_t *h);

/* Frees s once it is closing and nothing refers to it any more. */
static void maybe_free(struct subs *s)
{
	if (s->closing && s->inflight == 0 && !s->rebuilding &&
	    !uv_is_closing((uv_handle_t *)&s->marker_timer))
		uv_close((uv_handle_t *)&s->marker_timer, on_timer_closed);
}

static void op_finish(struct op *op, enum subs_status st)
{
	struct subs *s = op->s;
	struct subs_entry e = {
	    .product_id = op->product,
	    .kinds = op->after.kinds,
	    .threshold = op->after.threshold,
	    .created_ms = op->after.created_ms,
	};
	struct user_inflight *u = dict_get(s->user_ops, op->user);
	if (u && --u->n == 0)
		mem_free(dict_del(s->user_ops, op->user));
	if (op->done)
		op->done(st, st == SUBS_CREATED || st == SUBS_UPDATED ? &e : NULL, op->arg);
	mem_free(op->user_sql);
	mem_free(op);
	s->inflight--;
	maybe_free(s);
}

static int64_t parse_i64(const char *v, int64_t dflt)
{
	if (!v || !*v)
		return dflt;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	return errno || *end ? dflt : (int64_t)n;
}

static const char *reply_str(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_STRING ? r->str : "";
}

bool subs_hash_parse(const redisReply *fields, struct subs_entry *e)
{
	if (fields->type != REDIS_REPLY_ARRAY || fields->elements != 4 ||
	    strcmp(reply_str(fields->element[3]), "1") != 0)
		return false;
	e->kinds = subs_kinds_from_csv(reply_str(fields->element[0]));
	const char *thr = reply_str(fields->element[1]);
	e->threshold = *thr ? (int)strtol(thr, NULL, 10) : -1;
	e->created_ms = strtoll(reply_str(fields->element[2]), NULL, 10);
	return true;
}

/* The notice is apply_lua's PUBLISH. */
int subs_change_parse(const char *payload, size_t len, struct subs_change *c)
{
	json_error_t jerr;
	json_t *j = json_loadb(payload, len, 0, &jerr);
	const char *user = json_string_value(json_object_get(j, "user"));
	json_t *pid = json_object_get(j, "product_id");
	if (!user || !json_is_integer(pid) || !subs_product_id_valid(json_integer_value(pid))) {
		json_decref(j);
		return -1;
	}
	*c = (struct subs_change){
	    .user = user,
	    .entry =
		{
		    .product_id = (int64_t)json_integer_value(pid),
		    .kinds = subs_kinds_from_csv(json_string_value(json_object_get(j, "kinds"))),
		    .threshold = json_is_integer(json_object_get(j, "threshold"))
				     ? (int)json_integer_value(json_object_get(j, "threshold"))
				     : -1,
		    .created_ms = (int64_t)json_integer_value(json_object_get(j, "created")),
		},
	    .active = json_is_true(json_object_get(j, "active")),
	    .notice_ = j,
	};
	return 0;
}

void subs_change_free(struct subs_change *c)
{
	json_decref(c->notice_);
	c->notice_ = NULL;
	c->user = NULL;
}

/* Columns: active, kinds, threshold, version, created_ms */
#define ROW_COLUMNS                                                                                \
	"active, kinds, IFNULL(threshold, -1), version, "                                          \
	"CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED)"

static void row_from_result(const struct store_result *res, struct row_state *st)
{
	memset(st, 0, sizeof *st);
	st->threshold = -1;
	if (!res || store_result_rows(res) == 0)
		return;
	st->exists = true;
	st->active = parse_i64(store_result_value(res, 0, 0), 0) != 0;
	st->kinds = subs_kinds_from_csv(store_result_value(res, 0, 1));
	st->threshold = (int)parse_i64(store_result_value(res, 0, 2), -1);
	st->version = parse_i64(store_result_value(res, 0, 3), 0);
	st->created_ms = parse_i64(store_result_value(res, 0, 4), 0);
}

static int query_row(struct op *op, store_result_fn cb)
{
	char sql[512];
	snprintf(sql, sizeof sql,
		 "SELECT " ROW_COLUMNS " FROM subscriptions WHERE user_id = '%s' AND product_id = "
		 "%" PRId64,
		 op->user_sql, op->product);
	return store_query(op->s->store, sql, cb, op);
}

/* Sends the row state to Redis through the versioned script. */
static int redis_apply(struct subs *s, const char *user, int64_t product,
		       const struct row_state *st, redis_reply_fn cb, void *arg)
{
	char k_user[160], k_product[160], k_sub[200], k_thr[160], channel[96], pid[24], ver[24],
	    thr[16], created[24], kinds[64], tomb[16];
	keys_user_subs(k_user, sizeof k_user, s->prefix, user);
	keys_product_subs(k_product, sizeof k_product, s->prefix, product);
	keys_sub(k_sub, sizeof k_sub, s->prefix, user, product);
	keys_product_thr(k_thr, sizeof k_thr, s->prefix, product);
	keys_name(channel, sizeof channel, s->prefix, KEYS_SUBS_CHANGES);
	snprintf(pid, sizeof pid, "%" PRId64, product);
	snprintf(ver, sizeof ver, "%" PRId64, st->version);
	if (st->threshold >= 0)
		snprintf(thr, sizeof thr, "%d", st->threshold);
	else
		thr[0] = '\0';
	snprintf(created, sizeof created, "%" PRId64, st->created_ms);
	snprintf(tomb, sizeof tomb, "%d", TOMBSTONE_MS);
	subs_kinds_to_csv(st->kinds, kinds, sizeof kinds);
	const char *argv[] = {
	    "EVAL", sa_lua_subs_apply,	    "4",   k_user, k_product, k_sub, k_thr,  user, pid,
	    ver,    st->active ? "1" : "0", kinds, thr,	   created,   tomb,  channel};
	return redis_command_argv(s->redis, cb, arg, (int)(sizeof argv / sizeof argv[0]), argv,
				  NULL);
}

static bool reply_ok(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_INTEGER;
}

/* --- undo, when Redis failed after MySQL succeeded ---------------------- */

static void on_undo_done(struct store *st, const struct store_result *res, const char *err,
			 void *arg)
{
	(void)st;
	(void)res;
	struct op *op = arg;
	if (err)
		log_warn(MOD,
			 "could not undo the MySQL change for %s/%" PRId64 ": %s; the index "
			 "will follow MySQL at the next write or rebuild",
			 op->user, op->product, err);
	op_finish(op, SUBS_UNAVAILABLE);
}

static void undo(struct op *op)
{
	char sql[768], kinds[64];
	const struct row_state *b = &op->before;

	/* Only if nobody wrote after us: their write, not ours, is then what
	 * MySQL and Redis should converge on. */
	if (!b->exists || !b->active) {
		snprintf(
		    sql, sizeof sql,
		    "UPDATE subscriptions SET active = 0, version = version + 1 WHERE user_id = "
		    "'%s' AND product_id = %" PRId64 " AND version = %" PRId64,
		    op->user_sql, op->product, op->after.version);
	} else {
		subs_kinds_to_csv(b->kinds, kinds, sizeof kinds);
		char thr[16];
		if (b->threshold >= 0)
			snprintf(thr, sizeof thr, "%d", b->threshold);
		else
			snprintf(thr, sizeof thr, "NULL");
		snprintf(sql, sizeof sql,
			 "UPDATE subscriptions SET active = 1, kinds = '%s', threshold = %s, "
			 "version = version + 1 WHERE user_id = '%s' AND product_id = %" PRId64
			 " AND version = %" PRId64,
			 kinds, thr, op->user_sql, op->product, op->after.version);
	}
	if (store_query(op->s->store, sql, on_undo_done, op) != 0)
		on_undo_done(op->s->store, NULL, "mysql not connected", op);
}

/* --- the write path -------------------------------------------------------- */

static void on_redis_applied(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct op *op = arg;
	if (!reply_ok(reply)) {
		log_warn(MOD, "redis update for %s/%" PRId64 " failed (%s): undoing", op->user,
			 op->product,
			 reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no reply");
		undo(op);
		return;
	}
	op_finish(op, op->result);
}

static void on_after_row(struct store *st, const struct store_result *res, const char *err,
			 void *arg)
{
	(void)st;
	struct op *op = arg;
	if (err) {
		/* MySQL has the change, but we cannot tell Redis what it is;
		 * the caller retries (the write is idempotent). */
		log_warn(MOD, "reading back %s/%" PRId64 " failed: %s", op->user, op->product, err);
		op_finish(op, SUBS_UNAVAILABLE);
		return;
	}
	row_from_result(res, &op->after);
	if (redis_apply(op->s, op->user, op->product, &op->after, on_redis_applied, op) != 0) {
		undo(op);
		return;
	}
}

static void on_product_check(struct store *st, const struct store_result *res, const char *err,
			     void *arg)
{
	(void)st;
	struct op *op = arg;
	if (err) {
		op_finish(op, SUBS_UNAVAILABLE);
		return;
	}
	bool exists = res && store_result_rows(res) > 0;
	op_finish(op, exists ? SUBS_OVER_LIMIT : SUBS_NO_PRODUCT);
}

static void write_put(struct op *op);
static void write_delete(struct op *op);

static void on_written(struct store *st, const struct store_result *res, const char *err, void *arg)
{
	struct op *op = arg;
	char sql[256];

	/* Concurrent writers for one user can deadlock on the guarded INSERT's
	 * subqueries; InnoDB rolled ours back, so running it again is safe. */
	if (err && strstr(err, "Deadlock") && op->retries++ < WRITE_RETRIES) {
		log_debug(MOD, "deadlock writing %s/%" PRId64 ": retrying", op->user, op->product);
		if (op->kind == OP_PUT)
			write_put(op);
		else
			write_delete(op);
		return;
	}
	if (err) {
		log_warn(MOD, "mysql write for %s/%" PRId64 " failed: %s", op->user, op->product,
			 err);
		op_finish(op, SUBS_UNAVAILABLE);
		return;
	}
	if (store_result_affected(res) == 0) {
		if (op->kind == OP_DELETE) {
			op_finish(op, SUBS_NOT_SUBSCRIBED);
			return;
		}
		/* The guarded INSERT wrote nothing: unknown product or over
		 * the per-user limit. Tell which. */
		snprintf(sql, sizeof sql, "SELECT 1 FROM products WHERE id = %" PRId64,
			 op->product);
		if (store_query(st, sql, on_product_check, op) != 0)
			op_finish(op, SUBS_UNAVAILABLE);
		return;
	}
	if (op->kind == OP_DELETE)
		op->result = SUBS_DELETED;
	else if (store_result_affected(res) == 1)
		op->result = SUBS_CREATED; /* a new row */
	else
		op->result = store_result_insert_id(res) == 1 ? SUBS_UPDATED : SUBS_CREATED;
	if (query_row(op, on_after_row) != 0)
		op_finish(op, SUBS_UNAVAILABLE);
}

static void write_put(struct op *op)
{
	char sql[1536], kinds[64], thr[16];
	subs_kinds_to_csv(op->kinds, kinds, sizeof kinds);
	if (op->threshold >= 0)
		snprintf(thr, sizeof thr, "%d", op->threshold);
	else
		snprintf(thr, sizeof thr, "NULL");
	/*
	 * One statement, so the product check and the per-user limit hold
	 * against concurrent writers: the row is written only if the product
	 * exists and the user is under the limit (or already subscribed).
	 * created_at keeps the original subscription time of an active row:
	 * the sorted set's order is first come, first served.
	 * LAST_INSERT_ID(active) hands back whether the row was active before
	 * this very statement (201 or 200), which a read before the write
	 * cannot tell when writers race.
	 */
	snprintf(sql, sizeof sql,
		 "INSERT INTO subscriptions (user_id, product_id, kinds, threshold, created_at, "
		 "active, version) "
		 "SELECT '%s', %" PRId64 ", '%s', %s, NOW(3), 1, 1 FROM DUAL "
		 "WHERE EXISTS (SELECT 1 FROM products WHERE id = %" PRId64 ") AND ("
		 "(SELECT COUNT(*) FROM subscriptions WHERE user_id = '%s' AND active = 1) < %d "
		 "OR EXISTS (SELECT 1 FROM subscriptions WHERE user_id = '%s' AND product_id = "
		 "%" PRId64 " AND active = 1)) "
		 "ON DUPLICATE KEY UPDATE created_at = IF(active = 1, created_at, NOW(3)), "
		 "active = 1 + 0 * LAST_INSERT_ID(active), kinds = VALUES(kinds), "
		 "threshold = VALUES(threshold), version = version + 1",
		 op->user_sql, op->product, kinds, thr, op->product, op->user_sql,
		 op->s->max_per_user, op->user_sql, op->product);
	if (store_query(op->s->store, sql, on_written, op) != 0)
		op_finish(op, SUBS_UNAVAILABLE);
}

static void write_delete(struct op *op)
{
	char sql[512];
	snprintf(sql, sizeof sql,
		 "UPDATE subscriptions SET active = 0, version = version + 1 WHERE user_id = '%s' "
		 "AND product_id = %" PRId64 " AND active = 1",
		 op->user_sql, op->product);
	if (store_query(op->s->store, sql, on_written, op) != 0)
		op_finish(op, SUBS_UNAVAILABLE);
}

static void on_before_row(struct store *st, const struct store_result *res, const char *err,
			  void *arg)
{
	(void)st;
	struct op *op = arg;
	if (err) {
		log_warn(MOD, "reading %s/%" PRId64 " failed: %s", op->user, op->product, err);
		op_finish(op, SUBS_UNAVAILABLE);
		return;
	}
	row_from_result(res, &op->before);
	if (op->kind == OP_PUT)
		write_put(op);
	else
		write_delete(op);
}

static void op_start(struct subs *s, enum op_kind kind, const char *user, int64_t product,
		     unsigned kinds, int threshold, subs_done_fn done, void *arg)
{
	/* One user's burst must not fill the one MySQL connection's queue
	 * that every other user's writes wait in. */
	char key[USER_MAX + 1]; /* cut as op->user is: op_finish() finds it */
	snprintf(key, sizeof key, "%s", user);
	struct user_inflight *u = dict_get(s->user_ops, key);
	if (u && u->n >= s->max_inflight_per_user) {
		metrics_inc(METRICS_SUBS_CHANGES_REFUSED);
		done(SUBS_BUSY, NULL, arg);
		return;
	}
	if (!u) {
		u = mem_calloc(1, sizeof *u);
		dict_set(s->user_ops, key, u);
	}
	u->n++;

	struct op *op = mem_calloc(1, sizeof *op);
	size_t ulen = strlen(user);

	op->s = s;
	op->kind = kind;
	snprintf(op->user, sizeof op->user, "%s", user);
	op->user_sql = mem_alloc(2 * ulen + 1);
	store_escape(s->store, op->user_sql, user, ulen);
	op->product = product;
	op->kinds = kinds ? kinds : SUBS_ALL_KINDS;
	op->threshold = threshold;
	op->done = done;
	op->arg = arg;
	s->inflight++;

	/* Both stores must be there: refusing now is better than writing
	 * MySQL and undoing it. */
	if (s->closing || !store_is_ready(s->store) || !redis_is_ready(s->redis) ||
	    query_row(op, on_before_row) != 0)
		op_finish(op, SUBS_UNAVAILABLE);
}

void subs_put(struct subs *s, const char *user, int64_t product_id, unsigned kinds, int threshold,
	      subs_done_fn done, void *arg)
{
	op_start(s, OP_PUT, user, product_id, kinds, threshold, done, arg);
}

void subs_delete(struct subs *s, const char *user, int64_t product_id, subs_done_fn done, void *arg)
{
	op_start(s, OP_DELETE, user, product_id, 0, -1, done, arg);
}

/* --- index rebuild --------------------------------------------------------- */

static void rebuild_next(struct subs *s);

static void rebuild_stop(struct subs *s, const char *why)
{
	s->rebuilding = false;
	mem_free(s->cursor_user);
	s->cursor_user = NULL;
	if (why)
		log_warn(MOD, "index rebuild interrupted (%s); retrying at the next check", why);
	maybe_free(s);
}

static void on_marker_set(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct subs *s = arg;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		rebuild_stop(s, "could not set the marker");
		return;
	}
	log_info(MOD, "index rebuilt from MySQL: %" PRIu64 " subscriptions", s->rebuilt_rows);
	rebuild_stop(s, NULL);
}

static void on_rebuild_applied(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct subs *s = arg;
	if (!reply_ok(reply))
		s->batch_failed = true;
	if (--s->batch_pending > 0)
		return;
	if (s->batch_failed || s->closing) {
		rebuild_stop(s, s->closing ? NULL : "redis failed");
		return;
	}
	rebuild_next(s);
}

static void on_rebuild_rows(struct store *st, const struct store_result *res, const char *err,
			    void *arg)
{
	(void)st;
	struct subs *s = arg;
	char marker[160];

	if (err || s->closing) {
		rebuild_stop(s, err);
		return;
	}
	size_t rows = store_result_rows(res);
	if (rows == 0) {
		keys_name(marker, sizeof marker, s->prefix, KEYS_INDEX_READY);
		if (redis_command(s->redis, on_marker_set, s, "SET %s 1", marker) != 0)
			rebuild_stop(s, "redis not connected");
		return;
	}
	s->batch_pending = (int)rows;
	s->batch_failed = false;
	for (size_t i = 0; i < rows; i++) {
		struct row_state rs = {.exists = true, .active = true};
		const char *user = store_result_value(res, i, 0);
		int64_t product = parse_i64(store_result_value(res, i, 1), 0);
		rs.kinds = subs_kinds_from_csv(store_result_value(res, i, 2));
		rs.threshold = (int)parse_i64(store_result_value(res, i, 3), -1);
		rs.version = parse_i64(store_result_value(res, i, 4), 0);
		rs.created_ms = parse_i64(store_result_value(res, i, 5), 0);
		if (!user || redis_apply(s, user, product, &rs, on_rebuild_applied, s) != 0) {
			/* Account for the replies that will never come. */
			s->batch_failed = true;
			s->batch_pending -= (int)(rows - i);
			if (s->batch_pending == 0)
				rebuild_stop(s, "redis not connected");
			return;
		}
		if (i == rows - 1) {
			mem_free(s->cursor_user);
			s->cursor_user = mem_strdup(user);
			s->cursor_product = product;
		}
	}
	s->rebuilt_rows += rows;
}

static void rebuild_next(struct subs *s)
{
	char sql[768], esc[2 * 64 + 1];
	if (s->cursor_user) {
		store_escape(s->store, esc, s->cursor_user, strnlen(s->cursor_user, 64));
		snprintf(sql, sizeof sql,
			 "SELECT user_id, product_id, kinds, IFNULL(threshold, -1), version, "
			 "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED) FROM subscriptions "
			 "WHERE active = 1 AND (user_id, product_id) > ('%s', %" PRId64 ") "
			 "ORDER BY user_id, product_id LIMIT %d",
			 esc, s->cursor_product, REBUILD_BATCH);
	} else {
		snprintf(sql, sizeof sql,
			 "SELECT user_id, product_id, kinds, IFNULL(threshold, -1), version, "
			 "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED) FROM subscriptions "
			 "WHERE active = 1 ORDER BY user_id, product_id LIMIT %d",
			 REBUILD_BATCH);
	}
	if (store_query(s->store, sql, on_rebuild_rows, s) != 0)
		rebuild_stop(s, "mysql not connected");
}

static void on_marker(struct redis *r, redisReply *reply, void *arg)
{
	(void)r;
	struct subs *s = arg;
	if (!reply || reply->type != REDIS_REPLY_INTEGER || reply->integer == 1 || s->rebuilding ||
	    s->closing)
		return;
	if (!store_is_ready(s->store))
		return; /* checked again at the next tick */
	log_warn(MOD, "the Redis subscription index is missing (flushed or a new server): "
		      "rebuilding it from MySQL");
	s->rebuilding = true;
	s->rebuilt_rows = 0;
	mem_free(s->cursor_user);
	s->cursor_user = NULL;
	rebuild_next(s);
}

static void check_marker(struct subs *s)
{
	char marker[160];
	if (s->rebuilding || s->closing || !redis_is_ready(s->redis))
		return;
	keys_name(marker, sizeof marker, s->prefix, KEYS_INDEX_READY);
	redis_command(s->redis, on_marker, s, "EXISTS %s", marker);
}

static void on_marker_timer(uv_timer_t *t)
{
	check_marker(t->data);
}

void subs_redis_ready(struct subs *s)
{
	check_marker(s);
}

bool subs_rebuilding(const struct subs *s)
{
	return s->rebuilding;
}

struct subs *subs_new(uv_loop_t *loop, struct redis *redis, struct store *store, const char *prefix,
		      int max_per_user, int max_inflight_per_user)
{
	struct subs *s = mem_calloc(1, sizeof *s);
	s->redis = redis;
	s->store = store;
	s->prefix = mem_strdup(prefix);
	s->max_per_user = max_per_user;
	s->max_inflight_per_user = max_inflight_per_user;
	s->user_ops = dict_new();
	uv_timer_init(loop, &s->marker_timer);
	s->marker_timer.data = s;
	uv_timer_start(&s->marker_timer, on_marker_timer, MARKER_CHECK_MS, MARKER_CHECK_MS);
	return s;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct subs *s = h->data;
	dict_free(s->user_ops); /* empty: every operation has finished */
	mem_free(s->cursor_user);
	mem_free(s->prefix);
	mem_free(s);
}

void subs_close(struct subs *s)
{
	/* Operations in flight hold s; they finish (failing, as the stores
	 * close) before the memory goes. */
	s->closing = true;
	uv_timer_stop(&s->marker_timer);
	maybe_free(s);
}
