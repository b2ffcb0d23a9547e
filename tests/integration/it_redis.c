/*
 * The Redis client against its own redis-server child: connect, commands,
 * pub/sub, the server killed, restarted, frozen (SIGSTOP), AUTH and SELECT,
 * a refused password, and redis_close() from inside callbacks.
 *
 * Needs no fixture: it starts redis-server on a free port in a private
 * directory and kills it on every way out.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "stockalert/log.h"
#include "stockalert/redis.h"

#define PASSWORD "it-S3cret-pw"
#define CHANNEL	 "it:chan"

static char tmpdir[64];
static char logpath[128];
static volatile pid_t children[4];
static uv_loop_t loop;
static bool in_api; /* set around redis_* calls: no callback may run then */

static void kill_children(void)
{
	for (size_t i = 0; i < sizeof children / sizeof children[0]; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void cleanup(void)
{
	kill_children();
	for (size_t i = 0; i < sizeof children / sizeof children[0]; i++)
		if (children[i] > 0)
			waitpid(children[i], NULL, 0);
	if (tmpdir[0])
		nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void on_fatal_signal(int sig)
{
	kill_children();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void dump_log(void)
{
	FILE *f = fopen(logpath, "r");
	char line[512];
	if (!f)
		return;
	printf("---- client log ----\n");
	while (fgets(line, sizeof line, f))
		fputs(line, stdout);
	fclose(f);
}

__attribute__((format(printf, 3, 4), noreturn)) static void fail(const char *file, int line,
								 const char *fmt, ...)
{
	va_list ap;
	printf("FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	dump_log();
	exit(1);
}

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail(__FILE__, __LINE__, __VA_ARGS__);                                     \
	} while (0)

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
		  getsockname(fd, (struct sockaddr *)&sa, &len) == 0,
	      "free port: %s", strerror(errno));
	close(fd);
	return ntohs(sa.sin_port);
}

/* A blocking probe, used only while no client is being measured. */
static bool redis_answers(int port, const char *password)
{
	struct timeval tv = {0, 200000};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	bool ok = false;
	if (c && !c->err) {
		redisSetTimeout(c, tv);
		redisReply *rep =
		    password ? redisCommand(c, "AUTH %s", password) : redisCommand(c, "PING");
		ok = rep && rep->type != REDIS_REPLY_ERROR;
		freeReplyObject(rep);
	}
	redisFree(c);
	return ok;
}

static pid_t start_redis(int slot, int port, const char *password)
{
	char portstr[16], log[160];
	snprintf(portstr, sizeof portstr, "%d", port);
	snprintf(log, sizeof log, "%s/redis-%d.log", tmpdir, slot);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		const char *argv[20] = {
		    "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
		    "--appendonly", "no",     "--dir", tmpdir,	 "--logfile", log};
		int n = 13;
		if (password) {
			argv[n++] = "--requirepass";
			argv[n++] = password;
		}
		argv[n] = NULL;
		execvp("redis-server", (char *const *)argv);
		_exit(127);
	}
	children[slot] = pid;
	uint64_t deadline = now_ms() + 10000;
	while (!redis_answers(port, password)) {
		int st;
		CHECK(waitpid(pid, &st, WNOHANG) == 0, "redis-server exited early (see %s)", log);
		CHECK(now_ms() < deadline, "redis-server on port %d never answered", port);
		struct timespec ts = {0, 20 * 1000000};
		nanosleep(&ts, NULL);
	}
	return pid;
}

static void stop_redis(int slot)
{
	pid_t pid = children[slot];
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	children[slot] = 0;
}

/* ---- loop driving ---- */

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

typedef bool (*cond_fn)(void *arg);

/* Runs the loop until cond holds; fails the test after timeout_ms. */
static void run_until_(const char *file, int line, cond_fn cond, void *arg, unsigned timeout_ms,
		       const char *what)
{
	uint64_t deadline = now_ms() + timeout_ms;
	while (!cond(arg)) {
		if (now_ms() > deadline)
			fail(file, line, "timed out after %u ms waiting for %s", timeout_ms, what);
		uv_run(&loop, UV_RUN_ONCE);
	}
}
#define run_until(cond, arg, ms) run_until_(__FILE__, __LINE__, cond, arg, ms, #cond)

/* Lets the loop run for ms, to give wrong behaviour (a second callback, a
 * reconnect storm) the chance to show. */
static void run_for(unsigned ms)
{
	uint64_t end = now_ms() + ms;
	while (now_ms() < end)
		uv_run(&loop, UV_RUN_ONCE);
}

/* ---- clients ---- */

struct client {
	const char *label;
	struct redis *r;
	enum redis_state state;
	int n_connecting, n_ready, n_disconnected;
	int n_messages;
	char last_message[64];
	bool close_in_message; /* redis_close() from inside on_message */
	bool close_on_failure; /* redis_close() from inside on_state(DISCONNECTED) */
	bool closed;
};

static void on_closed(void *arg)
{
	struct client *c = arg;
	CHECK(!c->closed, "%s: on_closed twice", c->label);
	c->closed = true;
}

static void on_state(struct redis *r, enum redis_state st, void *arg)
{
	struct client *c = arg;
	CHECK(!in_api, "%s: on_state ran inside a redis_* call", c->label);
	CHECK(r == c->r, "%s: wrong client", c->label);
	CHECK(st != c->state, "%s: on_state without a change (%s)", c->label, redis_state_name(st));
	c->state = st;
	if (st == REDIS_STATE_CONNECTING)
		c->n_connecting++;
	else if (st == REDIS_STATE_READY)
		c->n_ready++;
	else if (st == REDIS_STATE_DISCONNECTED)
		c->n_disconnected++;
	if (st == REDIS_STATE_DISCONNECTED && c->close_on_failure) {
		in_api = true;
		redis_close(r, on_closed, c);
		in_api = false;
	}
}

static void on_message(struct redis *r, const char *channel, const char *payload, size_t len,
		       void *arg)
{
	struct client *c = arg;
	CHECK(!in_api, "%s: on_message ran inside a redis_* call", c->label);
	CHECK(strcmp(channel, CHANNEL) == 0, "%s: message on %s", c->label, channel);
	c->n_messages++;
	snprintf(c->last_message, sizeof c->last_message, "%.*s", (int)len, payload);
	if (c->close_in_message) {
		in_api = true;
		redis_close(r, on_closed, c);
		in_api = false;
	}
}

static struct client *client_host_new(const char *label, const char *host, int port,
				      const char *password, int db, bool pubsub)
{
	struct client *c = calloc(1, sizeof *c);
	c->label = label;
	c->state = REDIS_STATE_DISCONNECTED;
	struct redis_options o = {
	    .name = label,
	    .host = host,
	    .port = port,
	    .password = password,
	    .db = db,
	    .connect_timeout_ms = 500,
	    .command_timeout_ms = 300,
	    .health_interval_ms = 150,
	    .backoff_min_ms = 100,
	    .backoff_max_ms = 400,
	};
	c->r = redis_new(&loop, &o, on_state, c);
	CHECK(c->r, "redis_new");
	if (pubsub)
		redis_subscribe(c->r, CHANNEL, on_message, c);
	in_api = true;
	redis_start(c->r);
	in_api = false;
	return c;
}

static struct client *client_new(const char *label, int port, const char *password, int db,
				 bool pubsub)
{
	return client_host_new(label, "127.0.0.1", port, password, db, pubsub);
}

static bool is_ready(void *arg)
{
	return ((struct client *)arg)->state == REDIS_STATE_READY;
}

static bool not_ready(void *arg)
{
	return ((struct client *)arg)->state != REDIS_STATE_READY;
}

static bool is_closed(void *arg)
{
	return ((struct client *)arg)->closed;
}

/* One command's outcome. */
struct call {
	int calls;
	bool got_null;
	int type;
	long long integer;
	char str[256];
	uint64_t done_at;
	/* redis_close() the client from inside this reply callback. */
	struct client *close_client;
	int command_after_close;
};

static void on_reply(struct redis *r, redisReply *reply, void *arg)
{
	struct call *k = arg;
	CHECK(!in_api, "reply callback ran inside a redis_* call");
	k->calls++;
	k->done_at = now_ms();
	k->got_null = reply == NULL;
	if (reply) {
		k->type = reply->type;
		k->integer = reply->integer;
		if (reply->str)
			snprintf(k->str, sizeof k->str, "%.*s", (int)reply->len, reply->str);
	}
	if (k->close_client) {
		in_api = true;
		redis_close(r, on_closed, k->close_client);
		k->command_after_close = redis_command(r, on_reply, k, "PING");
		in_api = false;
	}
}

static bool call_done(void *arg)
{
	return ((struct call *)arg)->calls > 0;
}

static int command(struct client *c, struct call *k, const char *fmt, const char *a, const char *b)
{
	memset(k, 0, sizeof *k);
	in_api = true;
	int rc = redis_command(c->r, on_reply, k, fmt, a, b);
	in_api = false;
	return rc;
}

/* Sends a command and waits for its reply, which must not be NULL. */
static void roundtrip_(int line, struct client *c, struct call *k, const char *fmt, const char *a,
		       const char *b)
{
	int rc = command(c, k, fmt, a, b);
	if (rc != 0)
		fail(__FILE__, line, "%s: redis_command(%s) = %d", c->label, fmt, rc);
	run_until_(__FILE__, line, call_done, k, 3000, fmt);
	if (k->got_null)
		fail(__FILE__, line, "%s: %s got no reply", c->label, fmt);
}
#define roundtrip(c, k, fmt, a, b) roundtrip_(__LINE__, c, k, fmt, a, b)

struct msg_wait {
	struct client *c;
	int n;
};

static bool got_messages(void *arg)
{
	struct msg_wait *w = arg;
	return w->c->n_messages >= w->n;
}

static bool file_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	bool found = false;
	if (!f)
		return false;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* ---- the scenario ---- */

static void publish(struct client *cmd, struct client *sub, const char *payload)
{
	struct call k;
	int before = sub->n_messages;
	roundtrip(cmd, &k, "PUBLISH %s %s", CHANNEL, payload);
	CHECK(k.type == REDIS_REPLY_INTEGER && k.integer == 1, "PUBLISH reached %lld subscribers",
	      k.integer);
	struct msg_wait w = {sub, before + 1};
	run_until(got_messages, &w, 2000);
	CHECK(strcmp(sub->last_message, payload) == 0, "%s received '%s', not '%s'", sub->label,
	      sub->last_message, payload);
}

static void test_basics(struct client *cmd, struct client *sub)
{
	struct call k;
	in_api = true;
	int rc = redis_command(sub->r, on_reply, &k, "PING");
	in_api = false;
	CHECK(rc == -EINVAL || rc == -ENOTCONN, "command on a pub/sub client: %d", rc);

	run_until(is_ready, cmd, 5000);
	run_until(is_ready, sub, 5000);
	CHECK(cmd->n_connecting == 1 && cmd->n_ready == 1, "one attempt was enough");

	in_api = true;
	rc = redis_command(sub->r, on_reply, &k, "PING");
	in_api = false;
	CHECK(rc == -EINVAL, "command on a ready pub/sub client: %d", rc);

	roundtrip(cmd, &k, "SET %s %s", "it:key", "hello world");
	CHECK(k.type == REDIS_REPLY_STATUS && strcmp(k.str, "OK") == 0, "SET: %s", k.str);
	roundtrip(cmd, &k, "GET %s", "it:key", NULL);
	CHECK(k.type == REDIS_REPLY_STRING && strcmp(k.str, "hello world") == 0, "GET: %s", k.str);
	roundtrip(cmd, &k, "NOSUCHCOMMAND", NULL, NULL);
	CHECK(k.type == REDIS_REPLY_ERROR, "an error reply is a reply");

	/* Binary-safe argv form. */
	const char *argv[] = {"SET", "it:bin", "a\0b"};
	const size_t lens[] = {3, 6, 3};
	memset(&k, 0, sizeof k);
	in_api = true;
	rc = redis_command_argv(cmd->r, on_reply, &k, 3, argv, lens);
	in_api = false;
	CHECK(rc == 0, "redis_command_argv: %d", rc);
	run_until(call_done, &k, 2000);
	roundtrip(cmd, &k, "STRLEN %s", "it:bin", NULL);
	CHECK(k.integer == 3, "STRLEN it:bin = %lld", k.integer);

	/* Health PINGs keep flowing while idle and nothing breaks. */
	run_for(500);
	CHECK(cmd->state == REDIS_STATE_READY && sub->state == REDIS_STATE_READY,
	      "idle clients stay ready");
	CHECK(cmd->n_disconnected == 0 && sub->n_disconnected == 0, "no spurious disconnect");

	publish(cmd, sub, "payload-1");
}

static void test_kill_and_restart(struct client *cmd, struct client *sub, int port)
{
	struct call k[3];
	for (int i = 0; i < 3; i++)
		CHECK(command(cmd, &k[i], "GET %s", "it:key", NULL) == 0, "queue GET");
	stop_redis(0);

	run_until(not_ready, cmd, 3000);
	run_until(not_ready, sub, 3000);
	for (int i = 0; i < 3; i++)
		run_until(call_done, &k[i], 2000);
	struct call late;
	CHECK(command(cmd, &late, "PING", NULL, NULL) == -ENOTCONN, "command while down");

	/* Retrying by itself meanwhile, with backoff. */
	run_for(600);
	for (int i = 0; i < 3; i++)
		CHECK(k[i].calls == 1 && k[i].got_null, "pending GET %d: %d calls, null %d", i,
		      k[i].calls, k[i].got_null);
	CHECK(cmd->n_connecting >= 2, "no reconnect attempt while down");
	CHECK(late.calls == 0, "callback of a refused command ran");

	start_redis(0, port, NULL);
	run_until(is_ready, cmd, 5000);
	run_until(is_ready, sub, 5000);
	for (int i = 0; i < 3; i++)
		CHECK(k[i].calls == 1, "pending GET %d called again after reconnect", i);
	/* Resubscribed on the new server. */
	publish(cmd, sub, "payload-2");
	struct call set;
	roundtrip(cmd, &set, "SET %s %s", "it:key", "after restart");
}

static void test_frozen_server(struct client *cmd, struct client *sub)
{
	int ready_before = cmd->n_ready;
	kill(children[0], SIGSTOP);
	struct call k;
	uint64_t t0 = now_ms();
	CHECK(command(cmd, &k, "GET %s", "it:key", NULL) == 0, "GET on a frozen server");
	run_until(call_done, &k, 3000);
	CHECK(k.got_null, "a frozen server answered");
	CHECK(k.done_at - t0 >= 250 && k.done_at - t0 < 1500, "timed out after %llu ms",
	      (unsigned long long)(k.done_at - t0));
	CHECK(cmd->state != REDIS_STATE_READY, "still READY after a timeout");
	/* The subscriber only has its health check to notice. */
	run_until(not_ready, sub, 3000);

	/* Attempts while frozen connect (the kernel accepts) but must time out. */
	run_for(800);
	CHECK(cmd->n_ready == ready_before, "READY while the server is frozen");

	kill(children[0], SIGCONT);
	run_until(is_ready, cmd, 5000);
	run_until(is_ready, sub, 5000);
	roundtrip(cmd, &k, "GET %s", "it:key", NULL);
	CHECK(strcmp(k.str, "after restart") == 0, "GET after SIGCONT: %s", k.str);
	publish(cmd, sub, "payload-3");
}

static void test_close_in_reply(struct client *cmd)
{
	/* Close from a reply callback with another command pipelined behind. */
	struct call first, second;
	CHECK(command(cmd, &first, "PING", NULL, NULL) == 0, "PING");
	CHECK(command(cmd, &second, "PING", NULL, NULL) == 0, "PING");
	first.close_client = cmd;
	run_until(is_closed, cmd, 3000);
	CHECK(first.calls == 1 && !first.got_null, "first PING answered once");
	CHECK(first.command_after_close == -ENOTCONN, "command after close: %d",
	      first.command_after_close);
	CHECK(second.calls == 1, "second PING: %d calls", second.calls);
}

/* Close a subscriber from its message callback: a second message already on
 * the wire must not be delivered. */
static void test_close_in_message(struct client *sub, int port)
{
	struct client *pub = client_new("it-pub", port, NULL, 0, false);
	run_until(is_ready, pub, 5000);
	sub->close_in_message = true;
	int before = sub->n_messages;
	struct call k1, k2;
	CHECK(command(pub, &k1, "PUBLISH %s %s", CHANNEL, "bye-1") == 0, "PUBLISH");
	CHECK(command(pub, &k2, "PUBLISH %s %s", CHANNEL, "bye-2") == 0, "PUBLISH");
	run_until(is_closed, sub, 3000);
	run_until(call_done, &k2, 2000);
	run_for(200);
	CHECK(sub->n_messages == before + 1, "%d messages after close in callback",
	      sub->n_messages - before);
	in_api = true;
	redis_close(pub->r, on_closed, pub);
	in_api = false;
	run_until(is_closed, pub, 3000);
	free(pub);
}

static void drain_and_close(struct client *c)
{
	in_api = true;
	redis_drain_and_close(c->r, on_closed, c);
	in_api = false;
}

/* A fresh client on port whose PING (into *k) hangs in a SIGSTOPped Redis. */
static struct client *client_with_hung_ping(const char *label, int port, struct call *k)
{
	struct client *c = client_new(label, port, NULL, 0, false);
	run_until(is_ready, c, 5000);
	kill(children[0], SIGSTOP);
	CHECK(command(c, k, "PING", NULL, NULL) == 0, "%s: PING", label);
	return c;
}

/* redis_drain_and_close() right after queueing: what was queued still lands,
 * callers get NULL, nothing new is accepted. Then against a frozen server:
 * the close waits no longer than the command timeout. */
static void test_drain_and_close(int port)
{
	enum { N = 100 };
	struct client *check = client_new("it-check", port, NULL, 0, false);
	struct client *c = client_new("it-drain", port, NULL, 0, false);
	run_until(is_ready, check, 5000);
	run_until(is_ready, c, 5000);
	struct call k;
	roundtrip(check, &k, "DEL %s", "it:drained", NULL);

	in_api = true;
	for (int i = 0; i < N; i++)
		CHECK(redis_command(c->r, NULL, NULL, "RPUSH it:drained %d", i) == 0, "RPUSH");
	in_api = false;
	struct call last, after;
	CHECK(command(c, &last, "RPUSH %s %s", "it:drained", "last") == 0, "RPUSH last");
	drain_and_close(c);
	CHECK(command(c, &after, "PING", NULL, NULL) == -ENOTCONN, "command after the close");
	run_until(is_closed, c, 3000);
	CHECK(last.calls == 1 && last.got_null, "the caller's callback: %d calls, null %d",
	      last.calls, last.got_null);
	roundtrip(check, &k, "LLEN %s", "it:drained", NULL);
	CHECK(k.integer == N + 1, "%lld of %d queued commands landed", k.integer, N + 1);
	free(c);

	c = client_with_hung_ping("it-drain-frozen", port, &last);
	uint64_t t0 = now_ms();
	drain_and_close(c);
	run_until(is_closed, c, 3000);
	uint64_t took = now_ms() - t0;
	kill(children[0], SIGCONT);
	CHECK(last.calls == 1 && last.got_null, "frozen: the caller got NULL once");
	CHECK(took >= 250 && took < 2000, "frozen: closed after %llu ms (command timeout 300)",
	      (unsigned long long)took);
	CHECK(file_contains(logpath, "it-drain-frozen: closing without the last replies "
				     "(replies still missing"),
	      "frozen: no log line for the timeout");
	free(c);

	/* The server dies while the close waits: the close ends on the spot. */
	c = client_with_hung_ping("it-drain-killed", port, &last);
	drain_and_close(c);
	run_for(50);
	CHECK(!c->closed, "killed: closed before the server went");
	stop_redis(0);
	run_until(is_closed, c, 3000);
	CHECK(last.calls == 1 && last.got_null, "killed: the caller got NULL once");
	CHECK(file_contains(logpath, "it-drain-killed: closing without the last replies"),
	      "killed: no log line for the lost connection");
	CHECK(!file_contains(logpath, "it-drain-killed: closing without the last replies "
				      "(replies still missing"),
	      "killed: waited for the timeout instead of noticing the loss");
	free(c);

	in_api = true;
	redis_close(check->r, on_closed, check);
	in_api = false;
	run_until(is_closed, check, 3000);
	free(check);
}

static void test_auth(void)
{
	int port = free_port();
	start_redis(1, port, PASSWORD);

	struct client *good = client_new("it-auth", port, PASSWORD, 2, false);
	/* By name: the lookup runs off the loop. */
	struct client *sub = client_host_new("it-auth-sub", "localhost", port, PASSWORD, 0, true);
	struct client *bad = client_new("it-badpw", port, "wrong-password", 0, false);
	struct client *none = client_new("it-nopw", port, NULL, 0, false);
	struct client *quitter = client_new("it-quitter", port, "wrong-password", 0, false);
	quitter->close_on_failure = true;
	run_until(is_ready, good, 5000);
	run_until(is_ready, sub, 5000);

	struct call k;
	roundtrip(good, &k, "CLIENT INFO", NULL, NULL);
	CHECK(strstr(k.str, " db=2 ") != NULL, "SELECT 2 not in effect: %s", k.str);
	publish(good, sub, "auth-payload");

	/* Refused credentials: retried with backoff, never a storm. */
	int c0 = bad->n_connecting, n0 = none->n_connecting;
	uint64_t t0 = now_ms();
	run_for(1000);
	int attempts = bad->n_connecting - c0;
	CHECK(attempts >= 2 && attempts <= 12, "%d attempts with a wrong password in %llu ms",
	      attempts, (unsigned long long)(now_ms() - t0));
	CHECK(none->n_connecting - n0 <= 12, "no-password client spins");
	CHECK(bad->n_ready == 0 && none->n_ready == 0, "READY without the right password");
	CHECK(bad->state != REDIS_STATE_READY, "bad client ready");
	CHECK(quitter->closed && quitter->n_connecting == 1 && quitter->n_disconnected == 1,
	      "close from on_state: closed %d, %d attempts", quitter->closed,
	      quitter->n_connecting);
	free(quitter);

	struct client *all[] = {good, sub, bad, none};
	for (size_t i = 0; i < 4; i++) {
		in_api = true;
		redis_close(all[i]->r, on_closed, all[i]);
		in_api = false;
		CHECK(!all[i]->closed, "on_closed ran inside redis_close()");
	}
	for (size_t i = 0; i < 4; i++) {
		run_until(is_closed, all[i], 3000);
		free(all[i]);
	}
	stop_redis(1);
}

int main(void)
{
	uint64_t started = now_ms();
	setvbuf(stdout, NULL, _IONBF, 0);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/it_redis.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	atexit(cleanup);
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGHUP, on_fatal_signal);
	signal(SIGABRT, on_fatal_signal);
	signal(SIGPIPE, SIG_IGN);

	/* The clients' log goes to a file: it is shown on failure and checked
	 * for the password. */
	snprintf(logpath, sizeof logpath, "%s/client.log", tmpdir);
	CHECK(freopen(logpath, "w", stderr), "freopen");
	setvbuf(stderr, NULL, _IONBF, 0);
	log_setup(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);

	CHECK(uv_loop_init(&loop) == 0, "uv_loop_init");
	uv_timer_t tick;
	uv_timer_init(&loop, &tick);
	uv_timer_start(&tick, on_tick, 10, 10);

	int port = free_port();
	start_redis(0, port, NULL);
	struct client *cmd = client_new("it-cmd", port, NULL, 0, false);
	struct client *sub = client_new("it-sub", port, NULL, 0, true);
	CHECK(cmd->n_connecting == 0, "on_state ran inside redis_start()");

	printf("basics\n");
	test_basics(cmd, sub);
	printf("kill -9 and restart\n");
	test_kill_and_restart(cmd, sub, port);
	printf("SIGSTOP / SIGCONT\n");
	test_frozen_server(cmd, sub);
	printf("redis_close from callbacks\n");
	test_close_in_reply(cmd);
	test_close_in_message(sub, port);
	printf("redis_drain_and_close\n");
	test_drain_and_close(port);
	printf("AUTH and SELECT\n");
	test_auth();

	free(cmd);
	free(sub);
	uv_close((uv_handle_t *)&tick, NULL);
	uint64_t deadline = now_ms() + 3000;
	while (uv_run(&loop, UV_RUN_NOWAIT))
		CHECK(now_ms() < deadline, "handles left open on the loop");
	CHECK(uv_loop_close(&loop) == 0, "uv_loop_close: handles left");

	CHECK(!file_contains(logpath, PASSWORD), "the password appears in the log");
	CHECK(file_contains(logpath, "it-cmd: connected to 127.0.0.1:"), "no 'connected' line");
	CHECK(file_contains(logpath, "it-cmd: connection to 127.0.0.1:"),
	      "no 'connection lost' line");
	if (getenv("IT_REDIS_LOG"))
		dump_log();
	printf("ok: %llu ms\n", (unsigned long long)(now_ms() - started));
	return 0;
}
