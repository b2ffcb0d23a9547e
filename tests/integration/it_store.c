/*
 * The MySQL store against the fixture's real mariadbd: schema applied on
 * connect, escaping round trip, SQL errors that keep the connection, FIFO
 * order, query timeout, lost connections (KILL from a second connection),
 * a server that is not there yet (a proxy appears on the port later), and
 * store_close from inside a result callback.
 *
 * Run through tests/integration/run-with-servers.sh, which exports the
 * SA_TEST_MYSQL_* variables. Every test works in a private database.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "stockalert/log.h"
#include "stockalert/store.h"

static uv_loop_t *loop;
static int failed;
static int passed;
static char dbname[64];
static struct store_options base;

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "FAIL %s:%d: %s: ", __func__, __LINE__, #cond);            \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

/* --- loop helpers ---------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

/* Runs the loop until cond holds or ms pass; a 5 ms tick keeps UV_RUN_ONCE
 * from sleeping forever when nothing else is due. */
static bool wait_for(bool (*cond)(void *), void *arg, unsigned ms)
{
	uv_timer_t tick;
	uint64_t deadline;
	bool ok;

	uv_update_time(loop);
	deadline = uv_now(loop) + ms;
	uv_timer_init(loop, &tick);
	uv_timer_start(&tick, on_tick, 5, 5);
	while (!(ok = cond(arg)) && uv_now(loop) < deadline)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&tick, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return ok;
}

struct watch {
	enum store_state state;
	unsigned n[4]; /* transitions into each state */
};

static void on_state(struct store *s, enum store_state st, void *arg)
{
	struct watch *w = arg;

	(void)s;
	w->state = st;
	w->n[st]++;
}

static bool is_ready(void *arg)
{
	return ((struct watch *)arg)->state == STORE_STATE_READY;
}

static bool is_not_ready(void *arg)
{
	return ((struct watch *)arg)->state != STORE_STATE_READY;
}

static bool flag_set(void *arg)
{
	return *(bool *)arg;
}

static void on_closed(void *arg)
{
	*(bool *)arg = true;
}

static int close_store(struct store *s)
{
	bool closed = false;

	store_close(s, on_closed, &closed);
	CHECK(wait_for(flag_set, &closed, 2000), "store not closed");
	return 0;
}

/* --- synchronous-looking queries -------------------------------------------- */

struct qres {
	bool done;
	bool ok;
	char err[256];
	size_t rows, cols;
	char val[4][512];
	bool null[4];
	uint64_t affected, insert_id;
	uint64_t at_ms; /* when the callback ran */
};

static void on_q(struct store *s, const struct store_result *r, const char *err, void *arg)
{
	struct qres *q = arg;

	(void)s;
	q->done = true;
	q->at_ms = uv_now(loop);
	if (!r) {
		snprintf(q->err, sizeof(q->err), "%s", err ? err : "(no err)");
		return;
	}
	q->ok = true;
	q->rows = store_result_rows(r);
	q->cols = store_result_cols(r);
	q->affected = store_result_affected(r);
	q->insert_id = store_result_insert_id(r);
	for (size_t c = 0; c < q->cols && c < 4 && q->rows; c++) {
		const char *v = store_result_value(r, 0, c);

		q->null[c] = !v;
		snprintf(q->val[c], sizeof(q->val[c]), "%s", v ? v : "");
	}
}

static bool q_done(void *arg)
{
	return ((struct qres *)arg)->done;
}

static int sql(struct store *s, const char *stmt, struct qres *q)
{
	memset(q, 0, sizeof(*q));
	CHECK(store_query(s, stmt, on_q, q) == 0, "store_query(%s) refused", stmt);
	CHECK(wait_for(q_done, q, 5000), "no answer to %s", stmt);
	return 0;
}

/* Runs stmt and requires success. */
static int sql_ok(struct store *s, const char *stmt, struct qres *q)
{
	if (sql(s, stmt, q))
		return -1;
	CHECK(q->ok, "%s failed: %s", stmt, q->err);
	return 0;
}

static struct store *open_store(const struct store_options *o, struct watch *w)
{
	struct store *s;

	memset(w, 0, sizeof(*w));
	s = store_new(loop, o, on_state, w);
	store_start(s);
	if (!wait_for(is_ready, w, 10000)) {
		fprintf(stderr, "FAIL: store for %s:%d never became ready\n", o->host, o->port);
		return NULL;
	}
	return s;
}

/* --- tests ------------------------------------------------------------------ */

static int t_schema(void)
{
	struct store_options o = base;
	struct watch w, w2;
	struct store *s, *s2;
	struct qres q;

	s = open_store(&o, &w);
	CHECK(s, "not ready");
	CHECK(store_is_ready(s) && store_state(s) == STORE_STATE_READY, "state");
	CHECK(!strcmp(store_state_name(STORE_STATE_READY), "ready"), "state name");
	if (sql_ok(s,
		   "SELECT GROUP_CONCAT(table_name ORDER BY table_name), "
		   "GROUP_CONCAT(DISTINCT engine) FROM information_schema.tables "
		   "WHERE table_schema = DATABASE()",
		   &q))
		return -1;
	CHECK(!strcmp(q.val[0], "products,subscriptions"), "tables: %s", q.val[0]);
	CHECK(!strcmp(q.val[1], "InnoDB"), "engines: %s", q.val[1]);
	if (sql_ok(s,
		   "SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position) "
		   "FROM information_schema.columns WHERE table_schema = DATABASE() "
		   "AND table_name = 'products'",
		   &q))
		return -1;
	CHECK(!strcmp(q.val[0], "id,sku,name,stock,low_stock_threshold,updated_at"),
	      "products columns: %s", q.val[0]);
	if (sql_ok(s,
		   "SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position) "
		   "FROM information_schema.columns WHERE table_schema = DATABASE() "
		   "AND table_name = 'subscriptions'",
		   &q))
		return -1;
	CHECK(!strcmp(q.val[0], "user_id,product_id,kinds,threshold,created_at,active,version"),
	      "subscriptions columns: %s", q.val[0]);
	if (sql_ok(s, "SELECT @@character_set_client, @@character_set_connection", &q))
		return -1;
	CHECK(!strcmp(q.val[0], "utf8mb4") && !strcmp(q.val[1], "utf8mb4"), "charset %s/%s",
	      q.val[0], q.val[1]);

	/* The schema is applied on every connect: a second store on the same
	 * database must get READY too (idempotent statements). */
	s2 = open_store(&o, &w2);
	CHECK(s2, "second store not ready: schema not idempotent?");
	if (close_store(s2) || close_store(s))
		return -1;
	CHECK(w.state == STORE_STATE_CLOSED && w.n[STORE_STATE_CLOSED] == 1, "closed state");
	return 0;
}

static int t_escape_roundtrip(void)
{
	static const char v[] = "it's \"quoted\" \\ back\\\\slash\n\r\t\032 "
				"\xc3\xbcn\xc3\xaf \xf0\x9f\x98\x80 '); DROP TABLE products; --";
	char esc[2 * sizeof(v) + 1], esc_off[2 * sizeof(v) + 1], stmt[1024];
	struct store_options o = base;
	struct store *s, *idle;
	struct watch w, wi;
	struct qres q;
	size_t n;

	s = open_store(&o, &w);
	CHECK(s, "not ready");
	n = store_escape(s, esc, v, sizeof(v) - 1);
	CHECK(n == strlen(esc) && n > sizeof(v) - 1, "escaped length %zu", n);
	/* Without a connection the same bytes come out. */
	memset(&wi, 0, sizeof(wi));
	idle = store_new(loop, &o, on_state, &wi);
	CHECK(store_escape(idle, esc_off, v, sizeof(v) - 1) == n && !strcmp(esc, esc_off),
	      "offline escape differs: %s vs %s", esc_off, esc);
	CHECK(store_query(idle, "SELECT 1", on_q, &q) == -ENOTCONN, "query before start");
	if (close_store(idle))
		return -1;

	snprintf(stmt, sizeof(stmt),
		 "INSERT INTO products (id, sku, name, stock) VALUES (1001, 'sku-1', '%s', 3)",
		 esc);
	if (sql_ok(s, stmt, &q))
		return -1;
	CHECK(q.affected == 1, "affected %" PRIu64, q.affected);
	if (sql_ok(s,
		   "SELECT name, stock, low_stock_threshold, updated_at IS NOT NULL "
		   "FROM products WHERE id = 1001",
		   &q))
		return -1;
	CHECK(q.rows == 1 && q.cols == 4, "rows %zu cols %zu", q.rows, q.cols);
	CHECK(!strcmp(q.val[0], v), "name came back as <%s>", q.val[0]);
	CHECK(!strcmp(q.val[1], "3") && !strcmp(q.val[2], "5") && !strcmp(q.val[3], "1"),
	      "stock %s threshold %s updated %s", q.val[1], q.val[2], q.val[3]);
	if (sql_ok(s, "SELECT COUNT(*) FROM products", &q))
		return -1;
	CHECK(!strcmp(q.val[0], "1"), "products count %s", q.val[0]);

	if (sql_ok(s, "SELECT NULL, 'x'", &q))
		return -1;
	CHECK(q.null[0] && !q.null[1] && !strcmp(q.val[1], "x"), "NULL handling");
	if (sql_ok(s, "SELECT 1 FROM products WHERE id = -1", &q))
		return -1;
	CHECK(q.rows == 0 && q.cols == 1, "empty result rows %zu cols %zu", q.rows, q.cols);

	if (sql_ok(s, "CREATE TEMPORARY TABLE t_auto (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
		   &q) ||
	    sql_ok(s, "INSERT INTO t_auto (v) VALUES (7)", &q))
		return -1;
	CHECK(q.insert_id == 1 && q.affected == 1, "insert_id %" PRIu64, q.insert_id);
	if (sql_ok(s, "INSERT INTO t_auto (v) VALUES (8), (9)", &q))
		return -1;
	CHECK(q.affected == 2 && q.rows == 0, "multi insert affected %" PRIu64, q.affected);
	return close_store(s);
}

static int t_sql_error_keeps_connection(void)
{
	struct store_options o = base;
	struct qres a, b, c;
	struct watch w;
	struct store *s;

	s = open_store(&o, &w);
	CHECK(s, "not ready");
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	CHECK(store_query(s, "SELECT CONNECTION_ID()", on_q, &a) == 0, "queue a");
	CHECK(store_query(s, "SELEC nonsense FROM", on_q, &b) == 0, "queue b");
	CHECK(store_query(s, "SELECT CONNECTION_ID()", on_q, &c) == 0, "queue c");
	CHECK(wait_for(q_done, &c, 5000), "c not answered");
	CHECK(a.ok && !b.ok && c.ok, "ok flags %d %d %d", a.ok, b.ok, c.ok);
	CHECK(strstr(b.err, "SQL syntax"), "err: %s", b.err);
	CHECK(!strcmp(a.val[0], c.val[0]), "reconnected after an SQL error: %s -> %s", a.val[0],
	      c.val[0]);
	CHECK(w.n[STORE_STATE_READY] == 1 && store_is_ready(s), "state changed");
	/* An error from the server on a statement without result set too. */
	if (sql(s, "INSERT INTO products (id) VALUES ('x')", &b))
		return -1;
	CHECK(!b.ok && b.err[0], "bad insert succeeded");
	if (sql_ok(s, "SELECT CONNECTION_ID()", &c))
		return -1;
	CHECK(!strcmp(a.val[0], c.val[0]), "connection changed");
	return close_store(s);
}

#define NQ 200

struct order {
	int next;
	int bad;
};

struct order_item {
	struct order *o;
	int i;
};

static void on_order(struct store *s, const struct store_result *r, const char *err, void *arg)
{
	struct order_item *it = arg;
	char want[16];

	(void)s;
	snprintf(want, sizeof(want), "%d", it->i);
	if (!r || it->i != it->o->next || strcmp(store_result_value(r, 0, 0), want))
		it->o->bad++;
	(void)err;
	it->o->next++;
}

static bool order_done(void *arg)
{
	return ((struct order *)arg)->next == NQ;
}

static int t_fifo(void)
{
	static struct order_item items[NQ];
	struct store_options o = base;
	struct order ord = {0, 0};
	char stmt[32];
	struct watch w;
	struct store *s;

	s = open_store(&o, &w);
	CHECK(s, "not ready");
	for (int i = 0; i < NQ; i++) {
		items[i].o = &ord;
		items[i].i = i;
		snprintf(stmt, sizeof(stmt), "SELECT %d", i);
		CHECK(store_query(s, stmt, on_order, &items[i]) == 0, "queue %d", i);
	}
	CHECK(wait_for(order_done, &ord, 10000), "only %d of %d answered", ord.next, NQ);
	CHECK(ord.bad == 0, "%d answers out of order or wrong", ord.bad);
	return close_store(s);
}

/* Statements answered, by their first column, in the order answered. */
struct seen {
	int n;
	int val[32];
};

static void on_seen(struct store *s, const struct store_result *r, const char *err, void *arg)
{
	struct seen *sn = arg;

	(void)s;
	(void)err;
	if (sn->n < 32)
		sn->val[sn->n++] = r ? atoi(store_result_value(r, 0, 0)) : -1;
}

static bool seen_all(void *arg)
{
	return ((struct seen *)arg)->n == 14;
}

/* An urgent statement (a catalog lookup) overtakes the queued ones (a burst
 * of subscription writes), waiting only for the one on the wire; urgent
 * ones keep their order among themselves, and so do the others. */
static int t_urgent_first(void)
{
	static const int want[14] = {0, 100, 101, 102, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	struct store_options o = base;
	struct seen sn = {0, {0}};
	char stmt[48];
	struct watch w;
	struct store *s;

	s = open_store(&o, &w);
	CHECK(s, "not ready");
	CHECK(store_query(s, "SELECT 0 FROM (SELECT SLEEP(0.2)) AS t", on_seen, &sn) == 0,
	      "queue the slow one");
	/* Let it reach the wire. */
	for (int i = 0; i < 5; i++)
		uv_run(loop, UV_RUN_NOWAIT);
	for (int i = 1; i <= 10; i++) {
		snprintf(stmt, sizeof(stmt), "SELECT %d", i);
		CHECK(store_query(s, stmt, on_seen, &sn) == 0, "queue %d", i);
		if (i == 5)
			CHECK(store_query_urgent(s, "SELECT 100", on_seen, &sn) == 0, "urgent 100");
	}
	CHECK(store_query_urgent(s, "SELECT 101", on_seen, &sn) == 0, "urgent 101");
	CHECK(store_query_urgent(s, "SELECT 102", on_seen, &sn) == 0, "urgent 102");
	CHECK(wait_for(seen_all, &sn, 10000), "only %d of 14 answered", sn.n);
	for (int i = 0; i < 14; i++)
		CHECK(sn.val[i] == want[i], "answer %d was %d, expected %d", i, sn.val[i], want[i]);
	return close_store(s);
}

static int t_timeout(void)
{
	struct store_options o = base;
	struct qres a, b, c;
	struct watch w;
	struct store *s;
	uint64_t t0;

	o.query_timeout_ms = 300;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 100;
	s = open_store(&o, &w);
	CHECK(s, "not ready");
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	uv_update_time(loop);
	t0 = uv_now(loop);
	CHECK(store_query(s, "SELECT SLEEP(3)", on_q, &a) == 0, "queue sleep");
	CHECK(store_query(s, "SELECT 1", on_q, &b) == 0, "queue b");
	CHECK(wait_for(q_done, &b, 3000), "no answer");
	CHECK(!a.ok && !strcmp(a.err, "timeout"), "sleep: ok %d err %s", a.ok, a.err);
	CHECK(a.at_ms - t0 >= 250 && a.at_ms - t0 < 1500, "timeout after %" PRIu64 " ms",
	      a.at_ms - t0);
	CHECK(!b.ok && !strcmp(b.err, "disconnected"), "queued: ok %d err %s", b.ok, b.err);
	CHECK(w.n[STORE_STATE_DISCONNECTED] >= 1, "never left READY");
	CHECK(wait_for(is_ready, &w, 5000), "did not reconnect after the timeout");
	CHECK(w.n[STORE_STATE_READY] == 2, "ready %u times", w.n[STORE_STATE_READY]);
	if (sql_ok(s, "SELECT 42", &c))
		return -1;
	CHECK(!strcmp(c.val[0], "42"), "after reconnect: %s", c.val[0]);
	return close_store(s);
}

static int t_kill(void)
{
	struct store_options o = base;
	struct watch w, w2;
	struct store *s, *killer;
	struct qres q, a, b;
	unsigned long long id;
	char stmt[160];
	uint64_t t0;

	o.backoff_min_ms = 20;
	o.backoff_max_ms = 100;
	o.query_timeout_ms = 10000;
	s = open_store(&o, &w);
	CHECK(s, "not ready");
	killer = open_store(&o, &w2);
	CHECK(killer, "killer not ready");

	/* Idle connection killed: the store notices by itself and reconnects;
	 * the next query simply works. */
	if (sql_ok(s, "SELECT CONNECTION_ID()", &q))
		return -1;
	id = strtoull(q.val[0], NULL, 10);
	snprintf(stmt, sizeof(stmt), "KILL %llu", id);
	if (sql_ok(killer, stmt, &q))
		return -1;
	CHECK(wait_for(is_not_ready, &w, 3000), "idle kill not noticed");
	CHECK(wait_for(is_ready, &w, 5000), "no reconnect after idle kill");
	if (sql_ok(s, "SELECT CONNECTION_ID()", &q))
		return -1;
	CHECK(strtoull(q.val[0], NULL, 10) != id, "same connection id %llu after KILL", id);
	id = strtoull(q.val[0], NULL, 10);

	/* Killed in the middle of a query: that query fails with the
	 * connection error, the queued one with "disconnected". */
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	uv_update_time(loop);
	t0 = uv_now(loop);
	CHECK(store_query(s, "SELECT SLEEP(5)", on_q, &a) == 0, "queue sleep");
	CHECK(store_query(s, "SELECT 1", on_q, &b) == 0, "queue b");
	snprintf(stmt, sizeof(stmt),
		 "SELECT COUNT(*) FROM information_schema.processlist WHERE id = %llu "
		 "AND info LIKE 'SELECT SLEEP%%'",
		 id);
	for (int i = 0; i < 100; i++) {
		if (sql_ok(killer, stmt, &q))
			return -1;
		if (!strcmp(q.val[0], "1"))
			break;
	}
	CHECK(!strcmp(q.val[0], "1"), "sleep never showed up in the processlist");
	snprintf(stmt, sizeof(stmt), "KILL %llu", id);
	if (sql_ok(killer, stmt, &q))
		return -1;
	CHECK(wait_for(q_done, &b, 4000), "no answer after kill");
	CHECK(!a.ok && a.err[0] && strcmp(a.err, "timeout"), "sleep: ok %d err %s", a.ok, a.err);
	CHECK(a.at_ms - t0 < 4000, "failed only after %" PRIu64 " ms", a.at_ms - t0);
	CHECK(!b.ok && !strcmp(b.err, "disconnected"), "queued: ok %d err %s", b.ok, b.err);
	CHECK(wait_for(is_ready, &w, 5000), "no reconnect after busy kill");
	if (sql_ok(s, "SELECT 7", &q))
		return -1;
	CHECK(!strcmp(q.val[0], "7"), "after reconnect: %s", q.val[0]);
	if (close_store(killer))
		return -1;
	return close_store(s);
}

/* --- a TCP proxy that appears on a closed port later ------------------------ */

struct proxy_conn {
	uv_tcp_t down, up;
	uv_connect_t creq;
	int open;
	bool closing;
};

static struct sockaddr_in upstream;

static void pc_closed(uv_handle_t *h)
{
	struct proxy_conn *c = h->data;

	if (--c->open == 0)
		free(c);
}

static void pc_close(struct proxy_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	uv_close((uv_handle_t *)&c->down, pc_closed);
	uv_close((uv_handle_t *)&c->up, pc_closed);
}

static void pc_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf)
{
	(void)h;
	buf->base = malloc(n);
	buf->len = buf->base ? n : 0;
}

static void pc_written(uv_write_t *req, int status)
{
	(void)status;
	free(req->data);
	free(req);
}

static void pc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct proxy_conn *c = st->data;
	uv_stream_t *peer =
	    st == (uv_stream_t *)&c->down ? (uv_stream_t *)&c->up : (uv_stream_t *)&c->down;

	if (n < 0) {
		free(buf->base);
		pc_close(c);
		return;
	}
	if (n == 0 || c->closing) {
		free(buf->base);
		return;
	}
	uv_write_t *req = malloc(sizeof(*req));
	uv_buf_t out = uv_buf_init(buf->base, (unsigned)n);

	req->data = buf->base;
	if (uv_write(req, peer, &out, 1, pc_written)) {
		free(buf->base);
		free(req);
		pc_close(c);
	}
}

static void pc_connected(uv_connect_t *req, int status)
{
	struct proxy_conn *c = req->data;

	if (status || c->closing) {
		pc_close(c);
		return;
	}
	uv_read_start((uv_stream_t *)&c->down, pc_alloc, pc_read);
	uv_read_start((uv_stream_t *)&c->up, pc_alloc, pc_read);
}

static void proxy_accept(uv_stream_t *server, int status)
{
	struct proxy_conn *c;

	if (status)
		return;
	c = calloc(1, sizeof(*c));
	uv_tcp_init(loop, &c->down);
	uv_tcp_init(loop, &c->up);
	c->down.data = c->up.data = c->creq.data = c;
	c->open = 2;
	if (uv_accept(server, (uv_stream_t *)&c->down) ||
	    uv_tcp_connect(&c->creq, &c->up, (struct sockaddr *)&upstream, pc_connected))
		pc_close(c);
}

static int free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		port = -1;
	else
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static bool three_attempts(void *arg)
{
	return ((struct watch *)arg)->n[STORE_STATE_CONNECTING] >= 3;
}

static int t_server_missing_then_up(void)
{
	struct store_options o = base;
	struct sockaddr_in addr;
	uv_tcp_t listener;
	struct watch w;
	struct store *s;
	struct qres q;
	int port = free_port();

	CHECK(port > 0, "no free port");
	o.port = port;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 80;
	memset(&w, 0, sizeof(w));
	s = store_new(loop, &o, on_state, &w);
	store_start(s);
	CHECK(wait_for(three_attempts, &w, 5000), "only %u connect attempts",
	      w.n[STORE_STATE_CONNECTING]);
	CHECK(w.n[STORE_STATE_READY] == 0 && !store_is_ready(s), "ready without a server");
	CHECK(w.n[STORE_STATE_DISCONNECTED] >= 2, "no backoff between attempts");
	CHECK(store_query(s, "SELECT 1", on_q, &q) == -ENOTCONN, "query accepted while down");

	/* The server "comes up": the store must find it by itself. */
	uv_ip4_addr("127.0.0.1", port, &addr);
	uv_ip4_addr(base.host, base.port, &upstream);
	uv_tcp_init(loop, &listener);
	CHECK(uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0) == 0, "bind %d", port);
	CHECK(uv_listen((uv_stream_t *)&listener, 16, proxy_accept) == 0, "listen");
	CHECK(wait_for(is_ready, &w, 5000), "not ready after the server came up");
	if (sql_ok(s, "SELECT 'through the proxy'", &q))
		return -1;
	CHECK(!strcmp(q.val[0], "through the proxy"), "got %s", q.val[0]);
	CHECK(store_last_connect_error(s) == 0, "error after READY");
	if (close_store(s))
		return -1;
	uv_close((uv_handle_t *)&listener, NULL);

	/* Closing while waiting for the backoff timer. */
	o.port = free_port();
	memset(&w, 0, sizeof(w));
	s = store_new(loop, &o, on_state, &w);
	store_start(s);
	CHECK(wait_for(three_attempts, &w, 5000), "no attempts");
	return close_store(s);
}

/* Wrong password: retried with backoff, never READY, the reason is there
 * for the caller, and the logs name host:port but never the password. */
static int t_wrong_password(void)
{
	struct store_options o = base;
	enum log_level saved_level = log_current_level;
	char logbuf[8192], hostport[80];
	struct watch w;
	struct store *s;
	FILE *cap = tmpfile();
	int saved_fd, ok;
	size_t n;

	CHECK(cap, "tmpfile");
	o.password = "not-the-password";
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 80;
	memset(&w, 0, sizeof(w));
	fflush(stderr);
	saved_fd = dup(2);
	dup2(fileno(cap), 2);
	log_current_level = LOG_LEVEL_DEBUG;
	s = store_new(loop, &o, on_state, &w);
	store_start(s);
	ok = wait_for(three_attempts, &w, 5000);
	log_current_level = saved_level;
	fflush(stderr);
	dup2(saved_fd, 2);
	close(saved_fd);
	rewind(cap);
	n = fread(logbuf, 1, sizeof(logbuf) - 1, cap);
	logbuf[n] = '\0';
	fclose(cap);
	fputs(logbuf, stderr);
	CHECK(ok, "only %u attempts", w.n[STORE_STATE_CONNECTING]);
	CHECK(w.n[STORE_STATE_READY] == 0, "ready with a wrong password");
	CHECK(store_last_connect_error(s) == 1045, "last error %u", store_last_connect_error(s));
	snprintf(hostport, sizeof(hostport), "%s:%d", o.host, o.port);
	CHECK(strstr(logbuf, hostport), "log does not name %s", hostport);
	CHECK(!strstr(logbuf, o.password) && !strstr(logbuf, base.password), "password in the log");
	return close_store(s);
}

/* A host name is resolved off the loop (uv_getaddrinfo) before libmariadb
 * sees it. The machine's own name must resolve to loopback for this. */
static int t_hostname(void)
{
	struct addrinfo hints, *ai = NULL, *a;
	struct store_options o = base;
	char name[256];
	struct watch w;
	struct store *s;
	struct qres q;
	bool loopback = true;

	CHECK(gethostname(name, sizeof(name)) == 0, "gethostname");
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(name, NULL, &hints, &ai))
		loopback = false;
	for (a = ai; a && loopback; a = a->ai_next)
		loopback =
		    a->ai_family == AF_INET &&
		    (ntohl(((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
	if (ai)
		freeaddrinfo(ai);
	if (!loopback) {
		printf("# skip hostname: %s does not resolve to 127.0.0.0/8 only\n", name);
		return 0;
	}
	o.host = name;
	s = open_store(&o, &w);
	CHECK(s, "not ready through host name %s", name);
	if (sql_ok(s, "SELECT 1", &q))
		return -1;
	return close_store(s);
}

static bool connecting(void *arg)
{
	struct watch *w = arg;

	return w->state == STORE_STATE_CONNECTING && w->n[STORE_STATE_CONNECTING] >= 3;
}

/* A server that accepts TCP but never greets: the connect deadline fires,
 * the attempt is dropped and retried, and closing mid-connect is clean. */
static int t_connect_timeout(void)
{
	struct store_options o = base;
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	struct watch w;
	struct store *s;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fd >= 0, "socket");
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 16) == 0 &&
		  getsockname(fd, (struct sockaddr *)&a, &len) == 0,
	      "listen");
	o.port = ntohs(a.sin_port);
	o.connect_timeout_ms = 150;
	o.backoff_min_ms = 10;
	o.backoff_max_ms = 20;
	memset(&w, 0, sizeof(w));
	s = store_new(loop, &o, on_state, &w);
	store_start(s);
	CHECK(wait_for(connecting, &w, 5000), "attempts %u state %s", w.n[STORE_STATE_CONNECTING],
	      store_state_name(w.state));
	CHECK(w.n[STORE_STATE_DISCONNECTED] >= 2 && w.n[STORE_STATE_READY] == 0,
	      "no timeouts seen");
	close(fd);
	return close_store(s);
}

/* --- closing from inside callbacks ------------------------------------------ */

struct close_ctx {
	struct store *s;
	bool closed;
	int order[3];
	int n;
	char errs[3][32];
	int requery;
};

struct close_item {
	struct close_ctx *c;
	int i;
};

static void on_close_q(struct store *s, const struct store_result *r, const char *err, void *arg)
{
	struct close_item *it = arg;
	struct close_ctx *c = it->c;

	c->order[c->n] = it->i;
	snprintf(c->errs[c->n], sizeof(c->errs[0]), "%s", r ? "ok" : err);
	c->n++;
	if (it->i == 0) {
		store_close(s, on_closed, &c->closed);
		/* A second close and a new query are harmless no-ops. */
		store_close(s, on_closed, &c->closed);
		c->requery = store_query(s, "SELECT 1", on_close_q, it);
		/* The result stays readable for the rest of the callback. */
		if (!r || strcmp(store_result_value(r, 0, 0), "1"))
			c->n += 100;
	}
}

static int t_close_in_callback(void)
{
	struct store_options o = base;
	struct close_item items[3];
	struct close_ctx c;
	struct watch w;
	struct store *s;
	struct qres q;
	bool closed = false;

	memset(&c, 0, sizeof(c));
	s = open_store(&o, &w);
	CHECK(s, "not ready");
	for (int i = 0; i < 3; i++) {
		items[i].c = &c;
		items[i].i = i;
		CHECK(store_query(s, "SELECT 1", on_close_q, &items[i]) == 0, "queue %d", i);
	}
	CHECK(wait_for(flag_set, &c.closed, 5000), "on_closed never ran");
	CHECK(c.n == 3, "n %d", c.n);
	CHECK(c.order[0] == 0 && c.order[1] == 1 && c.order[2] == 2, "order");
	CHECK(!strcmp(c.errs[0], "ok") && !strcmp(c.errs[1], "closed") &&
		  !strcmp(c.errs[2], "closed"),
	      "errs %s %s %s", c.errs[0], c.errs[1], c.errs[2]);
	CHECK(c.requery == -ENOTCONN, "query after close: %d", c.requery);
	CHECK(w.state == STORE_STATE_CLOSED, "state %s", store_state_name(w.state));

	/* Closing with a statement on the wire fails it at once. */
	s = open_store(&o, &w);
	CHECK(s, "not ready");
	CHECK(sql_ok(s, "SELECT 1", &q) == 0, "warm up");
	memset(&q, 0, sizeof(q));
	CHECK(store_query(s, "SELECT SLEEP(2)", on_q, &q) == 0, "queue");
	uv_run(loop, UV_RUN_NOWAIT); /* let it reach the wire */
	store_close(s, on_closed, &closed);
	CHECK(q.done && !q.ok && !strcmp(q.err, "closed"), "in-flight: %d %s", q.done, q.err);
	CHECK(wait_for(flag_set, &closed, 2000), "not closed");
	return 0;
}

/* --- main --------------------------------------------------------------------- */

/* Creates (or drops) the private database through the fixture's database. */
static int admin(bool create)
{
	struct store_options o = base;
	char stmt[160];
	struct watch w;
	struct store *s;
	struct qres q;

	o.database = getenv("SA_TEST_MYSQL_DATABASE");
	s = open_store(&o, &w);
	CHECK(s, "admin store not ready");
	if (create)
		snprintf(stmt, sizeof(stmt), "CREATE DATABASE %s CHARACTER SET utf8mb4", dbname);
	else
		snprintf(stmt, sizeof(stmt), "DROP DATABASE %s", dbname);
	if (sql_ok(s, stmt, &q))
		return -1;
	return close_store(s);
}

static const char *need(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr,
			"it_store: %s is not set. Run this program through "
			"tests/integration/run-with-servers.sh (ctest does), which exports "
			"the SA_TEST_MYSQL_* variables of the fixture's mariadbd.\n",
			name);
		exit(1);
	}
	return v;
}

int main(void)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} tests[] = {
	    {"schema", t_schema},
	    {"escape_roundtrip", t_escape_roundtrip},
	    {"sql_error_keeps_connection", t_sql_error_keeps_connection},
	    {"fifo", t_fifo},
	    {"urgent_first", t_urgent_first},
	    {"timeout", t_timeout},
	    {"kill", t_kill},
	    {"server_missing_then_up", t_server_missing_then_up},
	    {"wrong_password", t_wrong_password},
	    {"hostname", t_hostname},
	    {"connect_timeout", t_connect_timeout},
	    {"close_in_callback", t_close_in_callback},
	};
	const char *lvl = getenv("SA_TEST_LOG_LEVEL");
	int rc;

	signal(SIGPIPE, SIG_IGN);
	log_setup(lvl ? (enum log_level)log_level_parse(lvl) : LOG_LEVEL_WARN, LOG_FORMAT_TEXT);
	base.host = need("SA_TEST_MYSQL_HOST");
	base.port = atoi(need("SA_TEST_MYSQL_PORT"));
	base.user = need("SA_TEST_MYSQL_USER");
	base.password = need("SA_TEST_MYSQL_PASSWORD");
	need("SA_TEST_MYSQL_DATABASE");
	snprintf(dbname, sizeof(dbname), "it_store_%ld", (long)getpid());
	base.database = dbname;
	loop = uv_default_loop();

	if (admin(true)) {
		fprintf(stderr, "cannot create the test database\n");
		return 1;
	}
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		rc = tests[i].fn();
		printf("%s %s\n", rc ? "not ok" : "ok", tests[i].name);
		fflush(stdout);
		if (rc)
			failed++;
		else
			passed++;
	}
	if (admin(false))
		failed++;
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
