#ifndef STOCKALERT_STORE_H
#define STOCKALERT_STORE_H
/*
 * The MySQL/MariaDB store: one connection driven by MariaDB Connector/C's
 * non-blocking API (the _start and _cont calls) on a uv_poll_t and a uv_timer_t, so the
 * loop never blocks. Queries are queued and run one at a time in order
 * (urgent ones first).
 * On connect the schema (conf/schema.sql, compiled in) is applied; lost
 * connections are re-established with backoff and jitter.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum store_state {
	STORE_STATE_DISCONNECTED, /* waiting for the backoff timer */
	STORE_STATE_CONNECTING,	  /* connecting or applying the schema */
	STORE_STATE_READY,
	STORE_STATE_CLOSED
};

struct store;
struct store_result;

struct store_options {
	const char *host;
	int port;
	const char *user;
	const char *password;
	const char *database;
	unsigned connect_timeout_ms; /* 0 = 3000 */
	unsigned query_timeout_ms;   /* 0 = 5000; on expiry the connection is dropped */
	unsigned backoff_min_ms;     /* 0 = 200 */
	unsigned backoff_max_ms;     /* 0 = 10000 */
};

/* res is NULL on failure (not connected, timeout, server error); err then
 * holds the reason. res is freed after the callback returns. */
typedef void (*store_result_fn)(struct store *s, const struct store_result *res, const char *err,
				void *arg);
typedef void (*store_state_fn)(struct store *s, enum store_state state, void *arg);

struct store *store_new(uv_loop_t *loop, const struct store_options *opts, store_state_fn on_state,
			void *arg);
void store_start(struct store *s);

/* Queues one SQL statement. Returns 0 if queued, -ENOTCONN when not READY
 * (cb is not called). */
int store_query(struct store *s, const char *sql, store_result_fn cb, void *arg);
/*
 * The same, for a short read that must not wait behind queued writes (an
 * alert's catalog lookup behind a burst of subscription changes): it runs
 * before every queued store_query() job, after the urgent ones queued
 * before it, once the statement on the wire is done.
 */
int store_query_urgent(struct store *s, const char *sql, store_result_fn cb, void *arg);

/* Escapes len bytes of from into to (size 2*len+1) for use inside '...'.
 * Returns the escaped length. */
size_t store_escape(const struct store *s, char *to, const char *from, size_t len);

size_t store_result_rows(const struct store_result *res);
size_t store_result_cols(const struct store_result *res);
/* NULL for SQL NULL. */
const char *store_result_value(const struct store_result *res, size_t row, size_t col);
uint64_t store_result_affected(const struct store_result *res);
uint64_t store_result_insert_id(const struct store_result *res);

enum store_state store_state(const struct store *s);
/* MySQL error number of the last failed connect attempt (1045 access
 * denied, 1049 unknown database, 2003 refused...); 0 once READY. */
unsigned store_last_connect_error(const struct store *s);
bool store_is_ready(const struct store *s);
const char *store_state_name(enum store_state st);

/* Fails queued queries (err "closed"), closes the connection and frees s once
 * libuv has closed its handles; on_closed(arg) runs after that. */
void store_close(struct store *s, void (*on_closed)(void *arg), void *arg);

#endif
