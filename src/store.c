#include "stockalert/store.h"

#include <errmsg.h>
#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "stockalert/backoff.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"

#define MOD "store"

/* Generated from conf/schema.sql by CMake (scripts/embed.cmake). */
extern const char sa_schema_sql[];
extern const size_t sa_schema_sql_len;

/* The non-blocking call in progress; its _cont is called when the poll or
 * the library's own timer fires. */
enum op {
	OP_NONE,
	OP_CONNECT,
	OP_QUERY,
	OP_STORE,
	OP_NEXT,  /* further result sets of one statement (CALL) */
	OP_DRAIN, /* storing such a further result, to discard it */
};

struct job {
	struct job *next;
	const char *sql;
	size_t len;
	store_result_fn cb; /* NULL for the store's own setup statements */
	void *arg;
};

struct store_result {
	MYSQL_RES *res; /* NULL for statements without a result set */
	MYSQL_ROW *rows;
	size_t nrows;
	size_t ncols;
	uint64_t affected;
	uint64_t insert_id;
};

struct store {
	uv_loop_t *loop;
	char *host;
	char *user;
	char *password;
	char *database;
	int port;
	unsigned connect_timeout_ms;
	unsigned query_timeout_ms;
	store_state_fn on_state;
	void *arg;

	enum store_state state;
	struct backoff backoff;
	unsigned connect_errno;
	bool started;

	MYSQL *mysql;
	/* One poll handle per connection: a uv_poll_t is bound to its fd, and
	 * every connection (even every connect attempt) gets a new socket. */
	uv_poll_t *poll;
	int poll_fd;
	int wait;	     /* MYSQL_WAIT_* bits the library asked for */
	uv_timer_t io_timer; /* the library's own MYSQL_WAIT_TIMEOUT */
	uv_timer_t deadline; /* connect or query deadline */
	uv_timer_t retry;    /* backoff before the next connect attempt */
	uv_timer_t kick;     /* starts queued queries outside the caller's stack */
	uv_getaddrinfo_t gai;
	bool gai_busy;
	char addr[64];	   /* numeric address the connection goes to */
	unsigned addr_rot; /* failed connects: picks the next resolved address */

	enum op op;
	MYSQL *conn_ret;
	int int_ret;
	MYSQL_RES *res_ret;
	struct store_result *result; /* built while further results drain */

	char **setup; /* SET NAMES, then the schema statements */
	size_t nsetup;
	size_t setup_i;
	struct job setup_job;

	struct job *cur; /* the job whose statement is on the wire */
	uint64_t cur_ns; /* uv_hrtime() when it went, for the round-trip histogram */
	struct job *head;
	struct job *tail;
	struct job *urgent_tail; /* last queued urgent job; they run first */
	unsigned in_cb;		 /* depth of user callbacks on the stack */
	char errbuf[512];	 /* err handed to callbacks; outlives mysql_close */

	bool closing;
	unsigned handles; /* libuv handles not yet closed */
	void (*on_closed)(void *arg);
	void *closed_arg;
};

static void op_after(struct store *s, int status);
static void run_next(struct store *s);

const char *store_state_name(enum store_state st)
{
	switch (st) {
	case STORE_STATE_DISCONNECTED: return "disconnected";
	case STORE_STATE_CONNECTING: return "connecting";
	case STORE_STATE_READY: return "ready";
	case STORE_STATE_CLOSED: return "closed";
	}
	return "unknown";
}

enum store_state store_state(const struct store *s)
{
	return s->state;
}

unsigned store_last_connect_error(const struct store *s)
{
	return s->connect_errno;
}

bool store_is_ready(const struct store *s)
{
	return s->state == STORE_STATE_READY;
}

static void set_state(struct store *s, enum store_state st)
{
	if (s->state == st)
		return;
	s->state = st;
	if (s->on_state) {
		s->in_cb++;
		s->on_state(s, st, s->arg);
		s->in_cb--;
	}
}

/* Errors after which the protocol state is unknown or the socket is gone:
 * every client-side error (CR_*), and the server's goodbyes. */
static bool is_conn_error(unsigned e)
{
	if (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR)
		return true;
	switch (e) {
	case ER_SERVER_SHUTDOWN:
	case ER_CONNECTION_KILLED:
	case ER_ABORTING_CONNECTION:
	case ER_NEW_ABORTING_CONNECTION:
	case ER_NET_PACKET_TOO_LARGE:
	case ER_NET_PACKETS_OUT_OF_ORDER:
	case ER_NET_READ_ERROR:
	case ER_NET_READ_INTERRUPTED:
	case ER_NET_ERROR_ON_WRITE:
	case ER_NET_WRITE_INTERRUPTED: return true;
	}
	return false;
}

/* --- results ------------------------------------------------------------ */

size_t store_result_rows(const struct store_result *res)
{
	return res ? res->nrows : 0;
}

size_t store_result_cols(const struct store_result *res)
{
	return res ? res->ncols : 0;
}

const char *store_result_value(const struct store_result *res, size_t row, size_t col)
{
	if (!res || row >= res->nrows || col >= res->ncols)
		return NULL;
	return res->rows[row][col];
}

uint64_t store_result_affected(const struct store_result *res)
{
	return res ? res->affected : 0;
}

uint64_t store_result_insert_id(const struct store_result *res)
{
	return res ? res->insert_id : 0;
}

static void result_free(struct store_result *r)
{
	if (!r)
		return;
	if (r->res)
		mysql_free_result(r->res);
	mem_free(r->rows);
	mem_free(r);
}

/* A stored result is complete in memory: fetching its rows never touches
 * the socket, so it is safe on the loop thread. */
static struct store_result *result_new(MYSQL *m, MYSQL_RES *res)
{
	struct store_result *r = mem_calloc(1, sizeof(*r));

	r->res = res;
	r->insert_id = mysql_insert_id(m);
	if (!res) {
		r->affected = mysql_affected_rows(m);
		return r;
	}
	r->ncols = mysql_num_fields(res);
	r->nrows = (size_t)mysql_num_rows(res);
	r->affected = r->nrows;
	if (r->nrows) {
		r->rows = mem_alloc(r->nrows * sizeof(*r->rows));
		for (size_t i = 0; i < r->nrows; i++)
			r->rows[i] = mysql_fetch_row(res);
	}
	return r;
}

/* --- connection teardown -------------------------------------------------- */

static void maybe_free(struct store *s)
{
	if (!s->closing || s->handles || s->gai_busy)
		return;
	void (*on_closed)(void *) = s->on_closed;
	void *arg = s->closed_arg;

	for (size_t i = 0; i < s->nsetup; i++)
		mem_free(s->setup[i]);
	mem_free(s->setup);
	mem_free(s->host);
	mem_free(s->user);
	mem_free(s->password);
	mem_free(s->database);
	mem_free(s);
	if (on_closed)
		on_closed(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct store *s = h->data;

	if (h->type == UV_POLL)
		mem_free(h);
	s->handles--;
	maybe_free(s);
}

static void wait_stop(struct store *s)
{
	if (s->poll)
		uv_poll_stop(s->poll);
	uv_timer_stop(&s->io_timer);
}

/* Drops the connection. mysql_close says COM_QUIT (libmariadb writes with
 * MSG_DONTWAIT and no write timeout is set, so it cannot block). With a call
 * suspended mid-protocol the socket is shut down first, so that write fails
 * at once instead of landing in the middle of a packet. mysql_get_socket is
 * only trusted while a call is suspended: after a failed connect it reads a
 * freed pvio, and shutting down a stale fd number could hit another socket.
 * The poll handle is stopped and closed before the library closes the fd. */
static void conn_drop(struct store *s, bool polite)
{
	wait_stop(s);
	uv_timer_stop(&s->deadline);
	if (s->poll) {
		uv_close((uv_handle_t *)s->poll, on_handle_closed);
		s->poll = NULL;
	}
	if (s->mysql) {
		int fd = s->op != OP_NONE ? (int)mysql_get_socket(s->mysql) : -1;

		if (!polite && fd >= 0)
			shutdown(fd, SHUT_RDWR);
		mysql_close(s->mysql);
		s->mysql = NULL;
	}
	result_free(s->result);
	s->result = NULL;
	s->op = OP_NONE;
}

static void fail_jobs(struct store *s, struct job *j, const char *err)
{
	s->in_cb++;
	while (j) {
		struct job *next = j->next;

		if (j->cb)
			j->cb(s, NULL, err, j->arg);
		mem_free(j);
		j = next;
	}
	s->in_cb--;
}

static void on_retry(uv_timer_t *t);

static void retry_later(struct store *s, const char *why)
{
	uint32_t delay;

	if (s->closing)
		return;
	delay = backoff_next(&s->backoff);
	log_warn(MOD, "mysql %s:%d: %s; retrying in %u ms", s->host, s->port, why, (unsigned)delay);
	uv_timer_start(&s->retry, on_retry, delay, 0);
	set_state(s, STORE_STATE_DISCONNECTED);
}

/* The connection is unusable: the statement on the wire fails with cur_err,
 * queued ones with "disconnected" (they were never sent; replaying writes
 * blindly is the caller's call, not ours), and a reconnect is scheduled. */
static void conn_lost(struct store *s, const char *why, const char *cur_err)
{
	struct job *cur = s->cur, *queued = s->head;
	char reason[256];

	snprintf(reason, sizeof(reason), "%s", why);
	if (cur_err != s->errbuf)
		snprintf(s->errbuf, sizeof(s->errbuf), "%s", cur_err);
	s->cur = NULL;
	s->head = s->tail = s->urgent_tail = NULL;
	uv_timer_stop(&s->kick);
	conn_drop(s, false);
	retry_later(s, reason);
	if (cur && cur->cb) {
		cur->next = NULL;
		fail_jobs(s, cur, s->errbuf);
	}
	fail_jobs(s, queued, "disconnected");
}

/* --- connecting ----------------------------------------------------------- */

static void on_deadline(uv_timer_t *t)
{
	struct store *s = t->data;
	char why[96];

	if (s->state == STORE_STATE_CONNECTING) {
		s->addr_rot++;
		snprintf(why, sizeof(why), "connect timed out after %u ms",
			 s->op == OP_CONNECT ? s->connect_timeout_ms : s->query_timeout_ms);
		conn_lost(s, why, "timeout");
		return;
	}
	snprintf(why, sizeof(why), "query timed out after %u ms, dropping the connection",
		 s->query_timeout_ms);
	conn_lost(s, why, "timeout");
}

static void job_run(struct store *s, struct job *j)
{
	s->cur = j;
	s->cur_ns = uv_hrtime();
	wait_stop(s);
	uv_timer_start(&s->deadline, on_deadline, s->query_timeout_ms, 0);
	s->op = OP_QUERY;
	op_after(s, mysql_real_query_start(&s->int_ret, s->mysql, j->sql, j->len));
}

static void setup_step(struct store *s, const char *err)
{
	if (err) {
		char why[600];

		snprintf(why, sizeof(why), "schema statement %zu failed: %s", s->setup_i, err);
		log_error(MOD, "mysql %s:%d: %s", s->host, s->port, why);
		conn_drop(s, false);
		retry_later(s, why);
		return;
	}
	if (s->setup_i < s->nsetup) {
		struct job *j = &s->setup_job;

		memset(j, 0, sizeof(*j));
		j->sql = s->setup[s->setup_i++];
		j->len = strlen(j->sql);
		job_run(s, j);
		return;
	}
	backoff_reset(&s->backoff);
	s->connect_errno = 0;
	log_info(MOD, "mysql %s:%d: ready (schema applied)", s->host, s->port);
	set_state(s, STORE_STATE_READY);
	if (s->state == STORE_STATE_READY)
		run_next(s);
}

static void connect_addr(struct store *s)
{
	unsigned off = 0;
	my_bool no = 0;

	s->mysql = mysql_init(NULL);
	if (!s->mysql) {
		retry_later(s, "mysql_init: out of memory");
		return;
	}
	mysql_options(s->mysql, MYSQL_OPT_NONBLOCK, 0);
	/* Also on the handle, not only SET NAMES: mysql_real_escape_string
	 * escapes for the client-side character set. */
	mysql_options(s->mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	mysql_options(s->mysql, MYSQL_OPT_LOCAL_INFILE, &off);
	/* Its auto-reconnect would silently swap the socket under our poll
	 * and lose session state: reconnecting is ours, with backoff. */
	mysql_options(s->mysql, MYSQL_OPT_RECONNECT, &no);
	/* No MYSQL_OPT_CONNECT/READ/WRITE_TIMEOUT: libmariadb would turn them
	 * into blocking poll()s in its synchronous paths (mysql_close). The
	 * deadline timer bounds everything instead. */
	log_info(MOD, "mysql %s:%d: connecting", s->host, s->port);
	uv_timer_start(&s->deadline, on_deadline, s->connect_timeout_ms, 0);
	s->op = OP_CONNECT;
	op_after(s, mysql_real_connect_start(&s->conn_ret, s->mysql, s->addr, s->user, s->password,
					     s->database, (unsigned)s->port, NULL, 0));
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
	struct store *s = req->data;
	char why[160];
	int rc = status;

	s->gai_busy = false;
	if (s->closing) {
		uv_freeaddrinfo(ai);
		maybe_free(s);
		return;
	}
	if (!rc) {
		/* Each failed attempt moves on to the next address, as
		 * libmariadb's own loop over addresses would. */
		struct addrinfo *a = ai;
		unsigned n = 0;

		for (; a; a = a->ai_next)
			n++;
		a = ai;
		for (unsigned i = s->addr_rot % n; i; i--)
			a = a->ai_next;
		if (a->ai_family == AF_INET6)
			rc = uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, s->addr,
					 sizeof(s->addr));
		else
			rc =
			    uv_ip4_name((struct sockaddr_in *)a->ai_addr, s->addr, sizeof(s->addr));
	}
	uv_freeaddrinfo(ai);
	if (rc) {
		snprintf(why, sizeof(why), "cannot resolve host: %s", uv_strerror(rc));
		retry_later(s, why);
		return;
	}
	connect_addr(s);
}

/* libmariadb resolves names with a blocking getaddrinfo (retrying for up to
 * 30 s), so names are resolved on libuv's thread pool and the library only
 * ever sees a numeric address. "localhost" keeps its MySQL meaning: the
 * default Unix socket. */
static void connect_begin(struct store *s)
{
	unsigned char tmp[sizeof(struct in6_addr)];
	struct addrinfo hints;
	char why[160];
	int rc;

	set_state(s, STORE_STATE_CONNECTING);
	if (s->closing || s->state != STORE_STATE_CONNECTING)
		return;
	if (!strcmp(s->host, "localhost") || uv_inet_pton(AF_INET, s->host, tmp) == 0 ||
	    uv_inet_pton(AF_INET6, s->host, tmp) == 0) {
		snprintf(s->addr, sizeof(s->addr), "%s", s->host);
		connect_addr(s);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	s->gai.data = s;
	rc = uv_getaddrinfo(s->loop, &s->gai, on_gai, s->host, NULL, &hints);
	if (rc) {
		snprintf(why, sizeof(why), "cannot resolve host: %s", uv_strerror(rc));
		retry_later(s, why);
		return;
	}
	s->gai_busy = true;
}

static void on_retry(uv_timer_t *t)
{
	connect_begin(t->data);
}

static void connected(struct store *s)
{
	if (!s->conn_ret) {
		s->connect_errno = mysql_errno(s->mysql);
		s->addr_rot++;
		snprintf(s->errbuf, sizeof(s->errbuf), "connect failed: %s", mysql_error(s->mysql));
		conn_drop(s, false);
		retry_later(s, s->errbuf);
		return;
	}
	uv_timer_stop(&s->deadline);
	log_info(MOD, "mysql %s:%d: connected (server %s), applying schema", s->host, s->port,
		 mysql_get_server_info(s->mysql));
	s->setup_i = 0;
	setup_step(s, NULL);
}

/* --- running statements --------------------------------------------------- */

/* The statement finished (res) or failed with an SQL error (err) on a
 * connection that stays usable. */
static void job_complete(struct store *s, struct store_result *res, const char *err)
{
	struct job *j = s->cur;

	s->cur = NULL;
	uv_timer_stop(&s->deadline);
	metrics_observe(METRICS_H_DEP_COMMAND, METRICS_DEP_MYSQL,
			metrics_seconds(s->cur_ns, uv_hrtime()));
	if (!j->cb) {
		result_free(res);
		setup_step(s, err);
		return;
	}
	s->in_cb++;
	j->cb(s, err ? NULL : res, err, j->arg);
	s->in_cb--;
	result_free(res);
	mem_free(j);
	if (s->state == STORE_STATE_READY && !s->cur && !s->in_cb)
		run_next(s);
}

static void job_error(struct store *s)
{
	unsigned e = mysql_errno(s->mysql);

	snprintf(s->errbuf, sizeof(s->errbuf), "%s", mysql_error(s->mysql));
	/* No pvio: the library itself closed the socket. */
	if (is_conn_error(e) || !s->mysql->net.pvio) {
		char why[600];

		snprintf(why, sizeof(why), "connection lost (%u): %s", e, s->errbuf);
		conn_lost(s, why, s->errbuf);
		return;
	}
	result_free(s->result);
	s->result = NULL;
	job_complete(s, NULL, s->errbuf);
}

static void drain_or_finish(struct store *s)
{
	if (mysql_more_results(s->mysql)) {
		s->op = OP_NEXT;
		op_after(s, mysql_next_result_start(&s->int_ret, s->mysql));
		return;
	}
	struct store_result *r = s->result;

	s->result = NULL;
	job_complete(s, r, NULL);
}

static void op_done(struct store *s)
{
	enum op op = s->op;

	s->op = OP_NONE;
	switch (op) {
	case OP_NONE: break;
	case OP_CONNECT: connected(s); break;
	case OP_QUERY:
		if (s->int_ret) {
			job_error(s);
			break;
		}
		s->op = OP_STORE;
		op_after(s, mysql_store_result_start(&s->res_ret, s->mysql));
		break;
	case OP_STORE:
		if (!s->res_ret && mysql_field_count(s->mysql)) {
			job_error(s);
			break;
		}
		s->result = result_new(s->mysql, s->res_ret);
		drain_or_finish(s);
		break;
	case OP_NEXT:
		if (s->int_ret > 0) {
			job_error(s);
			break;
		}
		if (s->int_ret < 0) {
			drain_or_finish(s);
			break;
		}
		s->op = OP_DRAIN;
		op_after(s, mysql_store_result_start(&s->res_ret, s->mysql));
		break;
	case OP_DRAIN:
		if (!s->res_ret && mysql_field_count(s->mysql)) {
			job_error(s);
			break;
		}
		if (s->res_ret)
			mysql_free_result(s->res_ret);
		drain_or_finish(s);
		break;
	}
}

static void on_poll(uv_poll_t *p, int status, int events);
static void on_io_timer(uv_timer_t *t);

static void op_resume(struct store *s, int ready)
{
	int st = 0;

	switch (s->op) {
	case OP_NONE: return;
	case OP_CONNECT: st = mysql_real_connect_cont(&s->conn_ret, s->mysql, ready); break;
	case OP_QUERY: st = mysql_real_query_cont(&s->int_ret, s->mysql, ready); break;
	case OP_STORE:
	case OP_DRAIN: st = mysql_store_result_cont(&s->res_ret, s->mysql, ready); break;
	case OP_NEXT: st = mysql_next_result_cont(&s->int_ret, s->mysql, ready); break;
	}
	op_after(s, st);
}

/* Points s->poll at fd, an open socket of the current connection. The
 * library may have moved to a new socket (next address of a connect). On
 * failure the connection is dropped and false returned. */
static bool poll_ensure(struct store *s, int fd)
{
	char why[128];
	uv_poll_t *p;
	int rc;

	if (s->poll && s->poll_fd == fd)
		return true;
	if (s->poll) {
		uv_close((uv_handle_t *)s->poll, on_handle_closed);
		s->poll = NULL;
	}
	p = mem_alloc(sizeof(*p));
	rc = fd < 0 ? UV_EBADF : uv_poll_init(s->loop, p, fd);
	if (rc) {
		mem_free(p);
		snprintf(why, sizeof(why), "cannot poll socket: %s", uv_strerror(rc));
		conn_lost(s, why, "disconnected");
		return false;
	}
	p->data = s;
	s->handles++;
	s->poll = p;
	s->poll_fd = fd;
	return true;
}

/* Arms the poll and timer for what the suspended call waits for. */
static void op_wait(struct store *s, int status)
{
	int events = 0;

	s->wait = status;
	if (status & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT)) {
		if (!poll_ensure(s, (int)mysql_get_socket(s->mysql)))
			return;
		if (status & MYSQL_WAIT_READ)
			events |= UV_READABLE;
		if (status & MYSQL_WAIT_WRITE)
			events |= UV_WRITABLE;
		if (status & MYSQL_WAIT_EXCEPT)
			events |= UV_PRIORITIZED;
		uv_poll_start(s->poll, events, on_poll);
	}
	if (status & MYSQL_WAIT_TIMEOUT)
		uv_timer_start(&s->io_timer, on_io_timer, mysql_get_timeout_value_ms(s->mysql), 0);
}

static void op_after(struct store *s, int status)
{
	if (status)
		op_wait(s, status);
	else
		op_done(s);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct store *s = p->data;
	int ready = 0;

	if (s->op == OP_NONE) {
		/* Idle watch: the server never speaks unasked, so a readable idle
		 * socket means it closed the connection (KILL, shutdown,
		 * wait_timeout). Reconnect now rather than fail the next query. */
		conn_lost(s, "server closed the idle connection", "disconnected");
		return;
	}
	if (status < 0) {
		/* Let the library try the I/O and report the error itself. */
		ready = s->wait & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT);
	} else {
		if (events & UV_READABLE)
			ready |= MYSQL_WAIT_READ;
		if (events & UV_WRITABLE)
			ready |= MYSQL_WAIT_WRITE;
		if (events & UV_PRIORITIZED)
			ready |= MYSQL_WAIT_EXCEPT;
	}
	wait_stop(s);
	op_resume(s, ready);
}

static void on_io_timer(uv_timer_t *t)
{
	struct store *s = t->data;

	wait_stop(s);
	op_resume(s, MYSQL_WAIT_TIMEOUT);
}

static void run_next(struct store *s)
{
	struct job *j = s->head;

	if (s->state != STORE_STATE_READY || s->cur || s->closing)
		return;
	if (!j) {
		/* Idle watch; never poll an fd the library may have closed. */
		if (!s->mysql->net.pvio) {
			conn_lost(s, "connection closed by the client library", "disconnected");
			return;
		}
		if (poll_ensure(s, (int)mysql_get_socket(s->mysql)))
			uv_poll_start(s->poll, UV_READABLE, on_poll);
		return;
	}
	s->head = j->next;
	if (!s->head)
		s->tail = NULL;
	if (s->urgent_tail == j)
		s->urgent_tail = NULL;
	j->next = NULL;
	job_run(s, j);
}

static void on_kick(uv_timer_t *t)
{
	run_next(t->data);
}

static int enqueue(struct store *s, const char *sql, store_result_fn cb, void *arg, bool urgent)
{
	if (s->state != STORE_STATE_READY || s->closing)
		return -ENOTCONN;
	size_t len = strlen(sql);
	struct job *j = mem_alloc(sizeof(*j) + len + 1);
	char *copy = (char *)(j + 1);

	memcpy(copy, sql, len + 1);
	j->next = NULL;
	j->sql = copy;
	j->len = len;
	j->cb = cb;
	j->arg = arg;
	/* Urgent jobs go after the urgent ones already queued (they keep
	 * their order among themselves), before everything else. */
	struct job **at;
	if (urgent)
		at = s->urgent_tail ? &s->urgent_tail->next : &s->head;
	else
		at = s->tail ? &s->tail->next : &s->head;
	j->next = *at;
	*at = j;
	if (!j->next)
		s->tail = j;
	if (urgent)
		s->urgent_tail = j;
	/* Never start (and so never fail) a statement on the caller's stack:
	 * its callback would run before store_query returned. */
	if (!s->cur)
		uv_timer_start(&s->kick, on_kick, 0, 0);
	return 0;
}

int store_query(struct store *s, const char *sql, store_result_fn cb, void *arg)
{
	return enqueue(s, sql, cb, arg, false);
}

int store_query_urgent(struct store *s, const char *sql, store_result_fn cb, void *arg)
{
	return enqueue(s, sql, cb, arg, true);
}

/* Same rules as mysql_real_escape_string with backslash escapes on; used
 * while there is no connection. utf8mb4 never has these bytes inside a
 * multi-byte character, so byte-wise escaping is exact. */
static size_t escape_plain(char *to, const char *from, size_t len)
{
	char *o = to;

	for (size_t i = 0; i < len; i++) {
		char c = from[i], e = 0;

		switch (c) {
		case '\0': e = '0'; break;
		case '\n': e = 'n'; break;
		case '\r': e = 'r'; break;
		case '\\': e = '\\'; break;
		case '\'': e = '\''; break;
		case '"': e = '"'; break;
		case '\032': e = 'Z'; break;
		}
		if (e) {
			*o++ = '\\';
			*o++ = e;
		} else {
			*o++ = c;
		}
	}
	*o = '\0';
	return (size_t)(o - to);
}

size_t store_escape(const struct store *s, char *to, const char *from, size_t len)
{
	if (s->mysql && s->state == STORE_STATE_READY) {
		unsigned long n = mysql_real_escape_string(s->mysql, to, from, len);

		if (n != (unsigned long)-1)
			return n;
	}
	return escape_plain(to, from, len);
}

/* --- schema ---------------------------------------------------------------- */

static bool only_comments(const char *p, const char *end)
{
	while (p < end) {
		if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
			p++;
		} else if (*p == '#' || (*p == '-' && p + 1 < end && p[1] == '-')) {
			while (p < end && *p != '\n')
				p++;
		} else {
			return false;
		}
	}
	return true;
}

static void setup_add(struct store *s, const char *sql, size_t len)
{
	s->setup = mem_realloc(s->setup, (s->nsetup + 1) * sizeof(*s->setup));
	s->setup[s->nsetup++] = mem_strndup(sql, len);
}

/* Splits at ';' ending a line (trailing blanks allowed): the schema file
 * promises no ';' inside strings or comments, so no SQL parser is needed. */
static void setup_build(struct store *s)
{
	const char *p = sa_schema_sql, *end = sa_schema_sql + sa_schema_sql_len;
	const char *start = p;

	setup_add(s, "SET NAMES utf8mb4", strlen("SET NAMES utf8mb4"));
	while (p < end) {
		if (*p != ';') {
			p++;
			continue;
		}
		const char *q = p + 1;

		while (q < end && (*q == ' ' || *q == '\t' || *q == '\r'))
			q++;
		if (q < end && *q != '\n') {
			p++;
			continue;
		}
		if (!only_comments(start, p))
			setup_add(s, start, (size_t)(p - start));
		start = p = q;
	}
	if (!only_comments(start, end))
		setup_add(s, start, (size_t)(end - start));
}

/* --- lifecycle ------------------------------------------------------------- */

struct store *store_new(uv_loop_t *loop, const struct store_options *opts, store_state_fn on_state,
			void *arg)
{
	struct store *s = mem_calloc(1, sizeof(*s));
	uint64_t seed;

	s->loop = loop;
	s->host = mem_strdup(opts->host ? opts->host : "127.0.0.1");
	s->port = opts->port ? opts->port : 3306;
	s->user = opts->user ? mem_strdup(opts->user) : NULL;
	s->password = opts->password ? mem_strdup(opts->password) : NULL;
	s->database = opts->database ? mem_strdup(opts->database) : NULL;
	s->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 3000;
	s->query_timeout_ms = opts->query_timeout_ms ? opts->query_timeout_ms : 5000;
	s->on_state = on_state;
	s->arg = arg;
	s->state = STORE_STATE_DISCONNECTED;
	s->poll_fd = -1;
	seed = uv_hrtime() ^ (uint64_t)(uintptr_t)s;
	backoff_init(&s->backoff, opts->backoff_min_ms ? opts->backoff_min_ms : 200,
		     opts->backoff_max_ms ? opts->backoff_max_ms : 10000, seed);

	uv_timer_t *timers[] = {&s->io_timer, &s->deadline, &s->retry, &s->kick};
	for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
		uv_timer_init(loop, timers[i]);
		timers[i]->data = s;
		s->handles++;
	}
	setup_build(s);
	return s;
}

void store_start(struct store *s)
{
	if (s->started || s->closing)
		return;
	s->started = true;
	connect_begin(s);
}

void store_close(struct store *s, void (*on_closed)(void *arg), void *arg)
{
	struct job *cur = s->cur, *queued = s->head;
	bool idle = s->state == STORE_STATE_READY && !cur && s->op == OP_NONE;

	if (s->closing)
		return;
	s->closing = true;
	s->on_closed = on_closed;
	s->closed_arg = arg;
	s->cur = NULL;
	s->head = s->tail = s->urgent_tail = NULL;
	conn_drop(s, idle);
	if (s->gai_busy)
		uv_cancel((uv_req_t *)&s->gai);
	if (s->started)
		log_info(MOD, "mysql %s:%d: closed", s->host, s->port);
	set_state(s, STORE_STATE_CLOSED);
	if (cur && !cur->cb)
		cur = NULL;
	if (cur)
		cur->next = queued;
	fail_jobs(s, cur ? cur : queued, "closed");
	uv_close((uv_handle_t *)&s->io_timer, on_handle_closed);
	uv_close((uv_handle_t *)&s->deadline, on_handle_closed);
	uv_close((uv_handle_t *)&s->retry, on_handle_closed);
	uv_close((uv_handle_t *)&s->kick, on_handle_closed);
}
