/*
 * sa_bench_load: the load generator of scripts/bench.sh.
 *
 * One process, one epoll loop, up to ~19,000 WebSocket clients (the fd hard
 * limit here is 20,000 per process). It speaks just enough of RFC 6455 to be
 * a client: a fixed Sec-WebSocket-Key, a 101 check, masked pongs. The same
 * code measures stockalertd (--mode sa: one HS256 token per connection, or
 * RS256 with --rsa-key, signed before the clock starts; events PUBLISHed on
 * Redis) and Nchan (--mode nchan: channels in the URL,
 * events POSTed to its HTTP publisher), so the two numbers are comparable.
 *
 * Every event carries its own sequence number in its event_id; the time it
 * was sent is kept here, indexed by that number, so latency is measured on
 * one monotonic clock with microsecond resolution.
 *
 * Tests (--test):
 *   fanout   connect N (connects/s), idle RSS of the server per connection,
 *            R rounds of one event to all N (publish -> last receipt), server
 *            CPU per delivery; with --restart-cmd, then a reconnect storm:
 *            daemon restarted, K alerts published while nobody is connected,
 *            N clients reconnect with ?since= (time to every replay_done, and
 *            how many alerts went missing).
 *   connect  connect N, each with a fresh token: connects/s and server CPU
 *            per connect (for RS256: --rsa-key), the server's RSS per idle
 *            socket once they are all up, and how many were refused (an
 *            HTTP answer other than 101, or ECONNREFUSED) or failed (reset,
 *            closed or timed out before the hello).
 *   latency  connect N, each client subscribed to --per of --products, events
 *            on random products at --rate for --duration: publish -> receive
 *            percentiles, deliveries missing.
 * --window W keeps at most W handshakes in flight (a polite client, or a page
 * with jittered reconnects); --window 0 is no window at all: all N connect()
 * calls go out at once, as after a deploy, a proxy restart or a network blip.
 *
 * Prints one JSON object on stdout; progress on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_proc.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define PUB_TAG	  UINT64_MAX
#define RBUF_SIZE (256 * 1024)
#define PART_MAX  (128 * 1024)

enum mode { MODE_SA, MODE_NCHAN };
enum cstate { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN };

struct conn {
	int fd;
	uint8_t state;
	bool ready; /* hello (sa) or 101 (nchan) seen */
	bool replay_done;
	bool want_since;
	uint32_t got; /* alerts received */
	uint32_t replayed;
	uint32_t plen;
	char *part; /* bytes of an incomplete header or frame */
};

static struct {
	enum mode mode;
	const char *test;
	int n;
	int src;
	int window;
	const char *secret_file;
	const char *rsa_key_file; /* sa: RS256 tokens, signed before connecting */
	const char *user_prefix;
	char pub_host[64];
	int pub_port;
	const char *prefix; /* sa: Redis key prefix */
	int rounds;
	int fan_product;
	double rate;
	double duration;
	int products;
	int per;
	const char *restart_cmd;
	int storm_events;
	const char *rounds_begin_cmd; /* run just before / after the fan-out rounds */
	const char *rounds_end_cmd;   /* (profilers attach there) */
	double settle_s;	      /* connect: wait before reading the RSS */
} opt = {
    .mode = MODE_SA,
    .test = "fanout",
    .n = 1000,
    .src = 8,
    .window = 256,
    .user_prefix = "u",
    .prefix = "stockalert:",
    .rounds = 10,
    .fan_product = 1,
    .rate = 200,
    .duration = 10,
    .products = 1000,
    .per = 10,
    .storm_events = 3,
    .settle_s = 1.0,
};

/* --url and --server-pid may be given up to MAX_TARGETS times (several
 * instances): connection i goes to target i mod ntargets, and the server
 * figures are summed over every pid. */
#define MAX_TARGETS 8
static struct target {
	char host[64];
	int port;
	char path[256];
} targets[MAX_TARGETS];
static int ntargets;
static int server_pids[MAX_TARGETS];
static int nservers;

static struct bench_cpu servers_cpu(void)
{
	struct bench_cpu sum = {0, 0};
	for (int k = 0; k < nservers; k++) {
		struct bench_cpu c = bench_proc_cpu(server_pids[k]);
		sum.sched_ns += c.sched_ns;
		sum.stat_us += c.stat_us;
	}
	return sum;
}

static long servers_rss_kb(void)
{
	long sum = 0;
	for (int k = 0; k < nservers; k++)
		sum += bench_proc_rss_kb(server_pids[k]);
	return sum;
}

static struct conn *conns;
static int epfd = -1, pubfd = -1;
static unsigned char secret[4096];
static size_t secret_len;
static char nonce[24];
static char rbuf[RBUF_SIZE];

/* events sent: seq -> monotonic send time in us */
static int64_t *sent_us;
static uint32_t nsent, sent_cap;
static int8_t *pstate; /* per product: 0 sold out, 1 in stock */

/* counters for the running measurement */
static int nready, nopen, nreplay_done, nerrors;
static int nrefused, nfailed; /* nerrors while connecting, by kind */
static uint64_t nalerts;
static uint32_t round_seq = UINT32_MAX;
static int round_recv;
static int64_t round_last_us;
static uint32_t *lat_us;
static size_t nlat, lat_cap;
static bool collect_latency;
static uint64_t last_order;
static char last_id[48];  /* newest alert id seen */
static char since_id[48]; /* what reconnects resume from */

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
	fprintf(stderr, "sa_bench_load: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p && n) {
		fprintf(stderr, "sa_bench_load: out of memory\n");
		exit(1);
	}
	return p;
}

/* --- tokens -------------------------------------------------------------------- */

static size_t b64url(const unsigned char *in, size_t len, char *out)
{
	size_t n = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	while (n && out[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	out[n] = '\0';
	return n;
}

static EVP_PKEY *rsa_key;
static char **rs_tokens; /* RS256: signed up front, the signing is not timed */

/* A token for user <prefix><i>: HS256 with the daemon's secret, or RS256
 * with --rsa-key. */
static void sign_token(int i, char *out, size_t outlen)
{
	char claims[160], seg[512];
	unsigned char mac[512];
	size_t maclen = sizeof mac;
	unsigned hlen = 0;
	static const char hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	static const char rs256[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	int cl = snprintf(claims, sizeof claims, "{\"sub\":\"%s%d\",\"exp\":%lld}", opt.user_prefix,
			  i, (long long)(time(NULL) + 7200));
	size_t n = rsa_key ? b64url((const unsigned char *)rs256, sizeof rs256 - 1, out)
			   : b64url((const unsigned char *)hs256, sizeof hs256 - 1, out);
	out[n++] = '.';
	n += b64url((const unsigned char *)claims, (size_t)cl, out + n);
	if (rsa_key) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, rsa_key) != 1 ||
		    EVP_DigestSign(md, mac, &maclen, (unsigned char *)out, n) != 1) {
			fprintf(stderr, "RS256 signing failed\n");
			exit(1);
		}
		EVP_MD_CTX_free(md);
	} else {
		HMAC(EVP_sha256(), secret, (int)secret_len, (unsigned char *)out, n, mac, &hlen);
		maclen = hlen;
	}
	size_t m = b64url(mac, maclen, seg);
	if (n + 1 + m + 1 > outlen) {
		fprintf(stderr, "token too long\n");
		exit(1);
	}
	out[n++] = '.';
	memcpy(out + n, seg, m + 1);
}

static void make_token(int i, char *out, size_t outlen)
{
	if (rs_tokens)
		snprintf(out, outlen, "%s", rs_tokens[i]);
	else
		sign_token(i, out, outlen);
}

/* Loads the RS256 key and signs every connection's token; returns the
 * seconds it took. */
static double presign_rs256(void)
{
	FILE *f = fopen(opt.rsa_key_file, "r");
	if (!f)
		die(opt.rsa_key_file);
	rsa_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!rsa_key) {
		fprintf(stderr, "%s: not a PEM private key\n", opt.rsa_key_file);
		exit(1);
	}
	int64_t t0 = mono_us();
	char tok[1024];
	rs_tokens = calloc((size_t)opt.n, sizeof *rs_tokens);
	if (!rs_tokens)
		die("calloc");
	for (int i = 0; i < opt.n; i++) {
		sign_token(i, tok, sizeof tok);
		rs_tokens[i] = strdup(tok);
		if (!rs_tokens[i])
			die("strdup");
	}
	return (double)(mono_us() - t0) / 1e6;
}

/* --- subscriptions of the latency test (the script loads the same) ------------- */

static int sub_product(int i, int j)
{
	int stride = opt.products / opt.per;
	return (i + stride * j) % opt.products + 1;
}

/* --- connections ----------------------------------------------------------------- */

static void conn_close(int i)
{
	struct conn *c = &conns[i];
	if (c->fd < 0)
		return;
	close(c->fd); /* SO_LINGER {1,0}: a RST, no TIME-WAIT */
	c->fd = -1;
	if (c->state != C_IDLE)
		nopen--;
	c->state = C_IDLE;
	free(c->part);
	c->part = NULL;
	c->plen = 0;
}

static void conn_start(int i)
{
	struct conn *c = &conns[i];
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	struct linger lg = {1, 0};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % opt.src));
	if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
		die("bind");
	const struct target *tg = &targets[i % ntargets];
	dst.sin_port = htons((uint16_t)tg->port);
	inet_pton(AF_INET, tg->host, &dst.sin_addr);
	if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
		die("connect");
	struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = (uint64_t)i};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
	c->fd = fd;
	c->state = C_CONNECTING;
	c->ready = c->replay_done = false;
	nopen++;
}

static void send_handshake(int i)
{
	struct conn *c = &conns[i];
	char req[2048], path[1024], tok[1024], auth[1100] = "";
	int err = 0;
	socklen_t el = sizeof err;

	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
	if (err) {
		errno = err;
		fprintf(stderr, "connect %d: %s\n", i, strerror(err));
		nerrors++;
		if (err == ECONNREFUSED)
			nrefused++;
		else
			nfailed++;
		conn_close(i);
		return;
	}
	const struct target *tg = &targets[i % ntargets];
	if (opt.mode == MODE_SA) {
		make_token(i, tok, sizeof tok);
		snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
		if (c->want_since && since_id[0])
			snprintf(path, sizeof path, "%s?since=%s", tg->path, since_id);
		else
			snprintf(path, sizeof path, "%s", tg->path);
	} else {
		int n = snprintf(path, sizeof path, "%s?chans=", tg->path);
		if (strcmp(opt.test, "latency") == 0)
			for (int j = 0; j < opt.per; j++)
				n += snprintf(path + n, sizeof path - (size_t)n, "%sp%d",
					      j ? "," : "", sub_product(i, j));
		else
			snprintf(path + n, sizeof path - (size_t)n, "p%d", opt.fan_product);
	}
	int len = snprintf(req, sizeof req,
			   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
			   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			   "Sec-WebSocket-Version: 13\r\n%s\r\n",
			   path, tg->host, tg->port, auth);
	if (write(c->fd, req, (size_t)len) != len) {
		nerrors++;
		nfailed++;
		conn_close(i);
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->state = C_HANDSHAKE;
}

static void send_pong(struct conn *c, const char *p, size_t len)
{
	unsigned char f[2 + 4 + 125];
	if (len > 125)
		len = 125;
	f[0] = 0x8A;
	f[1] = (unsigned char)(0x80 | len);
	memset(f + 2, 0, 4); /* a zero mask: masked, as a client must, and no XOR */
	memcpy(f + 6, p, len);
	if (write(c->fd, f, 6 + len) < 0)
		nerrors++;
}

/* "...\"key\":\"b<nonce>-<seq>\"": the sequence number of one of our events. */
static bool find_seq(const char *p, size_t len, uint32_t *seq)
{
	static const char k[] = "\"event_id\":\"";
	const char *s = memmem(p, len, k, sizeof k - 1);
	if (!s)
		return false;
	const char *end = p + len;
	s += sizeof k - 1;
	while (s < end && *s != '-' && *s != '"')
		s++;
	if (s >= end || *s != '-')
		return false;
	uint32_t v = 0;
	for (s++; s < end && *s >= '0' && *s <= '9'; s++)
		v = v * 10 + (uint32_t)(*s - '0');
	*seq = v;
	return true;
}

static void note_alert_id(const char *p, size_t len)
{
	static const char k[] = "\"id\":\"";
	const char *s = memmem(p, len, k, sizeof k - 1);
	if (!s)
		return;
	s += sizeof k - 1;
	const char *e = memchr(s, '"', (size_t)(p + len - s));
	if (!e || e - s >= (long)sizeof last_id)
		return;
	char id[48];
	memcpy(id, s, (size_t)(e - s));
	id[e - s] = '\0';
	char *dash;
	uint64_t ms = strtoull(id, &dash, 10), sq = *dash == '-' ? strtoull(dash + 1, NULL, 10) : 0;
	uint64_t order = (ms << 22) | sq;
	if (order > last_order) {
		last_order = order;
		memcpy(last_id, id, sizeof id);
	}
}

static void on_alert(struct conn *c, const char *p, size_t len)
{
	int64_t now = mono_us();
	uint32_t seq;

	c->got++;
	nalerts++;
	if (!c->replay_done)
		c->replayed++;
	if (opt.mode == MODE_SA)
		note_alert_id(p, len);
	if (!find_seq(p, len, &seq) || seq >= nsent)
		return;
	if (seq == round_seq) {
		round_recv++;
		round_last_us = now;
	}
	if (collect_latency) {
		if (nlat == lat_cap) {
			lat_cap = lat_cap ? 2 * lat_cap : 65536;
			lat_us = xrealloc(lat_us, lat_cap * sizeof *lat_us);
		}
		int64_t d = now - sent_us[seq];
		lat_us[nlat++] = d < 0 ? 0 : (uint32_t)d;
	}
}

static bool has_type(const char *p, size_t len, const char *type)
{
	char k[48];
	int n = snprintf(k, sizeof k, "\"type\":\"%s\"", type);
	return memmem(p, len, k, (size_t)n) != NULL;
}

static void on_text(struct conn *c, const char *p, size_t len)
{
	if (opt.mode == MODE_NCHAN) {
		on_alert(c, p, len);
		return;
	}
	if (has_type(p, len, "alert")) {
		on_alert(c, p, len);
	} else if (has_type(p, len, "hello")) {
		if (!c->ready) {
			c->ready = true;
			nready++;
		}
		if (!c->want_since)
			c->replay_done = true;
	} else if (has_type(p, len, "replay_done")) {
		if (!c->replay_done) {
			c->replay_done = true;
			nreplay_done++;
		}
	} else if (has_type(p, len, "error")) {
		fprintf(stderr, "error frame: %.*s\n", (int)len, p);
		nerrors++;
	}
}

/* Consumes complete frames from p; returns bytes used. */
static size_t parse_frames(int i, const char *p, size_t len)
{
	struct conn *c = &conns[i];
	size_t off = 0;

	while (c->fd >= 0 && len - off >= 2) {
		const unsigned char *h = (const unsigned char *)p + off;
		unsigned op = h[0] & 0x0f;
		uint64_t plen = h[1] & 0x7f;
		size_t hl = 2;
		if (plen == 126) {
			if (len - off < 4)
				break;
			plen = (uint64_t)h[2] << 8 | h[3];
			hl = 4;
		} else if (plen == 127) {
			if (len - off < 10)
				break;
			plen = 0;
			for (int k = 0; k < 8; k++)
				plen = plen << 8 | h[2 + k];
			hl = 10;
		}
		if (len - off < hl + plen)
			break;
		const char *pl = p + off + hl;
		off += hl + (size_t)plen;
		if (op == 1 || op == 0)
			on_text(c, pl, (size_t)plen);
		else if (op == 9)
			send_pong(c, pl, (size_t)plen);
		else if (op == 8) {
			if (!c->ready) {
				nerrors++;
				nfailed++;
			}
			conn_close(i);
		}
	}
	return off;
}

static void on_readable(int i)
{
	struct conn *c = &conns[i];
	size_t have = c->plen;
	if (have)
		memcpy(rbuf, c->part, have);
	ssize_t r = read(c->fd, rbuf + have, sizeof rbuf - have);
	if (r <= 0) {
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		/* Reset or closed before the hello: a failed connect, which the
		 * connect loop must not wait for. */
		if (!c->ready) {
			if (nfailed < 5)
				fprintf(stderr, "conn %d: %s before the hello\n", i,
					r < 0 ? strerror(errno) : "closed");
			nerrors++;
			nfailed++;
		}
		conn_close(i);
		return;
	}
	size_t len = have + (size_t)r, used = 0;
	if (c->state == C_HANDSHAKE) {
		char *e = memmem(rbuf, len, "\r\n\r\n", 4);
		if (!e) {
			used = 0;
			goto keep;
		}
		if (len < 12 || memcmp(rbuf, "HTTP/1.1 101", 12) != 0) {
			if (nrefused < 5)
				fprintf(stderr, "conn %d refused: %.*s\n", i,
					(int)(len > 60 ? 60 : len), rbuf);
			nerrors++;
			nrefused++;
			conn_close(i);
			return;
		}
		c->state = C_OPEN;
		if (opt.mode == MODE_NCHAN) {
			c->ready = c->replay_done = true;
			nready++;
		}
		used = (size_t)(e + 4 - rbuf);
	}
	used += parse_frames(i, rbuf + used, len - used);
	if (c->fd < 0)
		return;
keep:
	if (len - used > PART_MAX) {
		fprintf(stderr, "conn %d: frame too big\n", i);
		nerrors++;
		conn_close(i);
		return;
	}
	if (len - used) {
		c->part = xrealloc(c->part, len - used);
		memmove(c->part, rbuf + used, len - used);
	}
	c->plen = (uint32_t)(len - used);
}

/* --- the publisher --------------------------------------------------------------------- */

static void pub_connect(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.pub_port)};
	int one = 1;
	inet_pton(AF_INET, opt.pub_host, &a.sin_addr);
	pubfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (pubfd < 0 || connect(pubfd, (struct sockaddr *)&a, sizeof a) < 0)
		die("publisher connect");
	setsockopt(pubfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = PUB_TAG};
	epoll_ctl(epfd, EPOLL_CTL_ADD, pubfd, &ev);
}

static void pub_drain(void)
{
	char b[16384];
	ssize_t r = recv(pubfd, b, sizeof b, MSG_DONTWAIT);
	if (r == 0 || (r < 0 && errno != EAGAIN)) {
		/* nginx closes keep-alive connections now and then */
		epoll_ctl(epfd, EPOLL_CTL_DEL, pubfd, NULL);
		close(pubfd);
		pubfd = -1;
		return;
	}
	if (r > 0 && opt.mode == MODE_SA && b[0] == '-')
		fprintf(stderr, "redis: %.*s\n", (int)r, b);
}

/* Publishes one event on product and returns its sequence number. The
 * stock flips between 0 and 10, so every event is an alert for every
 * subscriber (back_in_stock, then sold_out). */
static uint32_t publish(int product)
{
	char body[256], msg[1024];
	int stock = pstate[product] ? 0 : 10, prev = pstate[product] ? 10 : 0;
	int blen, mlen;

	if (nsent == sent_cap) {
		sent_cap = sent_cap ? 2 * sent_cap : 4096;
		sent_us = xrealloc(sent_us, sent_cap * sizeof *sent_us);
	}
	uint32_t seq = nsent;
	pstate[product] = (int8_t)!pstate[product];
	blen = snprintf(body, sizeof body,
			"{\"event_id\":\"b%s-%u\",\"product_id\":%d,\"stock\":%d,\"prev_stock\":%d,"
			"\"ts\":%lld}",
			nonce, seq, product, stock, prev, (long long)wall_ms());
	if (pubfd < 0)
		pub_connect();
	if (opt.mode == MODE_SA) {
		char chan[128];
		int cl = snprintf(chan, sizeof chan, "%sinventory", opt.prefix);
		mlen =
		    snprintf(msg, sizeof msg, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n",
			     cl, chan, blen, body);
	} else {
		mlen = snprintf(msg, sizeof msg,
				"POST /pub?id=p%d HTTP/1.1\r\nHost: %s\r\n"
				"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				product, opt.pub_host, blen, body);
	}
	sent_us[seq] = mono_us();
	nsent++;
	if (write(pubfd, msg, (size_t)mlen) != mlen)
		die("publish");
	return seq;
}

/* --- the loop ------------------------------------------------------------------------- */

static void pump(int timeout_ms)
{
	struct epoll_event evs[1024];
	int n = epoll_wait(epfd, evs, 1024, timeout_ms);
	for (int k = 0; k < n; k++) {
		uint64_t tag = evs[k].data.u64;
		if (tag == PUB_TAG) {
			if (pubfd >= 0)
				pub_drain();
			continue;
		}
		int i = (int)tag;
		struct conn *c = &conns[i];
		if (c->fd < 0)
			continue;
		if (c->state == C_CONNECTING) {
			if (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
				send_handshake(i);
			continue;
		}
		if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			on_readable(i);
	}
}

/* Runs the loop until done() or the deadline; false on timeout. */
static bool run_until(bool (*done)(void), double timeout_s)
{
	int64_t deadline = mono_us() + (int64_t)(timeout_s * 1e6);
	while (!done()) {
		int64_t left = deadline - mono_us();
		if (left <= 0)
			return false;
		pump((int)(left / 1000 + 1 > 100 ? 100 : left / 1000 + 1));
	}
	return true;
}

static int want_ready;
static bool none_open(void)
{
	return nopen == 0;
}

/* Opens connections [0, n) keeping at most opt.window handshakes in flight
 * (0: no limit, every connect() at once);
 * returns the seconds until the last one was ready (hello / 101), or
 * replay_done when since is set. */
static double connect_all(int n, bool since)
{
	int next = 0;
	int64_t t0 = mono_us();
	nready = nreplay_done = nerrors = nrefused = nfailed = 0;
	want_ready = n;
	int64_t deadline = t0 + 120 * 1000000LL;
	for (;;) {
		int done = since ? nreplay_done : nready;
		if (done + nerrors >= n)
			break;
		while (next < n && (opt.window == 0 || next - (done + nerrors) < opt.window)) {
			conns[next].want_since = since;
			conns[next].got = conns[next].replayed = 0;
			conn_start(next++);
		}
		if (mono_us() > deadline) {
			fprintf(stderr, "connect: timeout (%d of %d ready)\n", done, n);
			break;
		}
		pump(100);
	}
	return (double)(mono_us() - t0) / 1e6;
}

static void close_all(void)
{
	for (int i = 0; i < opt.n; i++)
		conn_close(i);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct_u32(const uint32_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t k = (size_t)(p * (double)(n - 1) + 0.5);
	return v[k];
}

/* --- tests -------------------------------------------------------------------------------- */

static bool round_done(void)
{
	return round_recv >= want_ready;
}

static int run_storm(void)
{
	char line[256];
	int newpid = 0;

	memcpy(since_id, last_id, sizeof since_id);
	fprintf(stderr, "storm: restarting the server after alert %s\n", since_id);
	FILE *f = popen(opt.restart_cmd, "r");
	if (!f)
		die("popen");
	/* The server closes every socket with 1001 and waits for the close
	 * handshake: keep answering while the command stops it. */
	if (!run_until(none_open, 30))
		close_all();
	while (fgets(line, sizeof line, f))
		if (atoi(line) > 0)
			newpid = atoi(line);
	if (pclose(f) != 0 || newpid <= 0) {
		fprintf(stderr, "storm: restart command failed\n");
		printf(",\"storm_error\":\"restart failed\"");
		return 0;
	}
	server_pids[0] = newpid;
	/* One witness connection sees the K alerts processed (and so in the
	 * history) while nobody else is connected. */
	connect_all(1, false);
	uint64_t before = conns[0].got;
	for (int k = 0; k < opt.storm_events; k++)
		publish(opt.fan_product);
	int64_t deadline = mono_us() + 15000000;
	while (conns[0].got < before + (uint64_t)opt.storm_events && mono_us() < deadline)
		pump(50);
	if (conns[0].got < before + (uint64_t)opt.storm_events)
		fprintf(stderr, "storm: the witness got %u of %d alerts\n", conns[0].got,
			opt.storm_events);
	close_all();
	struct bench_cpu c0 = servers_cpu();
	double t = connect_all(opt.n, true);
	struct bench_cpu c1 = servers_cpu();
	uint64_t replayed = 0;
	int incomplete = 0;
	for (int i = 0; i < opt.n; i++) {
		replayed += conns[i].replayed;
		if (!conns[i].replay_done)
			incomplete++;
	}
	uint64_t expected = (uint64_t)opt.n * (uint64_t)opt.storm_events;
	printf(",\"storm_s\":%.4f,\"storm_reconnects_per_s\":%.1f,\"storm_alerts_expected\":%llu,"
	       "\"storm_alerts_replayed\":%llu,\"storm_lost\":%lld,\"storm_incomplete\":%d,"
	       "\"storm_server_cpu_s\":%.4f",
	       t, opt.n / t, (unsigned long long)expected, (unsigned long long)replayed,
	       (long long)expected - (long long)replayed, incomplete,
	       (double)(c1.sched_ns - c0.sched_ns) / 1e9);
	return 0;
}

/* Connection rate alone (fresh token each): connect N, then the server's
 * memory per idle socket after --settle seconds, report, close. */
static int test_connect(void)
{
	long rss0 = servers_rss_kb();
	struct bench_cpu c0 = servers_cpu();
	double t = connect_all(opt.n, false);
	struct bench_cpu c1 = servers_cpu();
	int ok = nready;
	fprintf(stderr, "connect (window %d): %d connected in %.2f s (%d refused, %d failed)\n",
		opt.window, ok, t, nrefused, nfailed);
	/* Answer pings meanwhile; a server that gives memory back at quiet
	 * moments gets the same chance in every row. */
	run_until(none_open, opt.settle_s);
	long rss1 = servers_rss_kb();
	printf("{\"n\":%d,\"alg\":\"%s\",\"window\":%d,\"connected\":%d,\"connect_errors\":%d,"
	       "\"refused\":%d,\"failed\":%d,\"connect_s\":%.4f,\"connects_per_s\":%.1f,"
	       "\"connect_server_cpu_us\":%.2f,\"settle_s\":%.1f,\"rss_before_kb\":%ld,"
	       "\"rss_idle_kb\":%ld,\"rss_per_conn_bytes\":%.1f}\n",
	       opt.n, rsa_key ? "RS256" : "HS256", opt.window, ok, nerrors, nrefused, nfailed, t,
	       ok / t, (double)(c1.sched_ns - c0.sched_ns) / 1e3 / (ok ? ok : 1), opt.settle_s,
	       rss0, rss1, (double)(rss1 - rss0) * 1024.0 / (ok ? ok : 1));
	return ok == opt.n ? 0 : 1;
}

static int test_fanout(void)
{
	long rss0 = servers_rss_kb();
	struct bench_cpu c0 = servers_cpu();
	double t = connect_all(opt.n, false);
	struct bench_cpu c1 = servers_cpu();
	int ok = nready;
	fprintf(stderr, "fanout: %d connected in %.2f s (%d errors)\n", nready, t, nerrors);
	/* Let the server finish what the handshakes started (presence, roster)
	 * before its memory is read. */
	run_until(none_open, 1.0);
	long rss1 = servers_rss_kb();
	printf("{\"n\":%d,\"connected\":%d,\"connect_errors\":%d,\"connect_s\":%.4f,"
	       "\"connects_per_s\":%.1f,\"connect_server_cpu_us\":%.2f,"
	       "\"rss_before_kb\":%ld,\"rss_idle_kb\":%ld,\"rss_per_conn_bytes\":%.1f",
	       opt.n, ok, nerrors, t, ok / t,
	       (double)(c1.sched_ns - c0.sched_ns) / 1e3 / (ok ? ok : 1), rss0, rss1,
	       (double)(rss1 - rss0) * 1024.0 / (ok ? ok : 1));

	double *fan = calloc((size_t)opt.rounds, sizeof *fan);
	int missing = 0;
	want_ready = ok;
	/* one warm-up round, not counted */
	for (int r = -1; r < opt.rounds; r++) {
		if (r == 0) {
			if (opt.rounds_begin_cmd && system(opt.rounds_begin_cmd) != 0)
				fprintf(stderr, "--rounds-begin-cmd failed\n");
			c0 = servers_cpu();
		}
		round_recv = 0;
		round_seq = publish(opt.fan_product);
		if (!run_until(round_done, 20)) {
			fprintf(stderr, "fanout round %d: %d of %d received\n", r, round_recv, ok);
			missing += ok - round_recv;
		}
		if (r >= 0)
			fan[r] = (double)(round_last_us - sent_us[round_seq]) / 1e3;
		/* a pause so rounds do not overlap in the server */
		int64_t until = mono_us() + 30000;
		while (mono_us() < until)
			pump(10);
	}
	c1 = servers_cpu();
	if (opt.rounds_end_cmd && system(opt.rounds_end_cmd) != 0)
		fprintf(stderr, "--rounds-end-cmd failed\n");
	long rss2 = servers_rss_kb();
	qsort(fan, (size_t)opt.rounds, sizeof *fan, cmp_dbl);
	double deliveries = (double)opt.rounds * ok;
	/* the pauses are idle time for the server: nothing to subtract */
	printf(",\"rounds\":%d,\"fanout_ms_median\":%.3f,\"fanout_ms_min\":%.3f,"
	       "\"fanout_ms_max\":%.3f,\"fanout_missing\":%d,\"cpu_us_per_delivery\":%.3f,"
	       "\"cpu_us_per_delivery_stat\":%.3f,\"rss_after_fanout_kb\":%ld",
	       opt.rounds, fan[opt.rounds / 2], fan[0], fan[opt.rounds - 1], missing,
	       (double)(c1.sched_ns - c0.sched_ns) / 1e3 / deliveries,
	       (double)(c1.stat_us - c0.stat_us) / deliveries, rss2);
	free(fan);
	if (opt.restart_cmd && run_storm() != 0)
		return 1;
	printf("}\n");
	return 0;
}

static int test_latency(void)
{
	double t = connect_all(opt.n, false);
	int ok = nready;
	fprintf(stderr, "latency: %d connected in %.2f s (%d errors)\n", ok, t, nerrors);
	int *subs = calloc((size_t)opt.products + 1, sizeof *subs);
	for (int i = 0; i < opt.n; i++)
		if (conns[i].ready)
			for (int j = 0; j < opt.per; j++)
				subs[sub_product(i, j)]++;
	uint64_t expected = 0, before = nalerts;
	uint32_t first = nsent;
	int64_t t0 = mono_us(), period = (int64_t)(1e6 / opt.rate);
	int64_t end = t0 + (int64_t)(opt.duration * 1e6), next = t0;
	unsigned rnd = 12345;
	struct bench_cpu c0 = servers_cpu();
	collect_latency = true;
	while (mono_us() < end) {
		int64_t now = mono_us();
		while (next <= now) {
			rnd = rnd * 1103515245u + 12345u;
			int p = (int)((rnd >> 8) % (unsigned)opt.products) + 1;
			publish(p);
			expected += (uint64_t)subs[p];
			next += period;
		}
		int wait = (int)((next - now) / 1000);
		pump(wait < 1 ? 0 : wait);
	}
	/* stragglers */
	int64_t until = mono_us() + 2000000;
	while (nalerts - before < expected && mono_us() < until)
		pump(20);
	struct bench_cpu c1 = servers_cpu();
	collect_latency = false;
	qsort(lat_us, nlat, sizeof *lat_us, cmp_u32);
	uint64_t got = nalerts - before;
	printf("{\"n\":%d,\"connected\":%d,\"products\":%d,\"per_conn\":%d,\"rate\":%.1f,"
	       "\"events\":%u,\"deliveries_expected\":%llu,\"deliveries\":%llu,"
	       "\"lat_ms_p50\":%.3f,\"lat_ms_p90\":%.3f,\"lat_ms_p99\":%.3f,\"lat_ms_p999\":%.3f,"
	       "\"lat_ms_max\":%.3f,\"cpu_us_per_delivery\":%.3f}\n",
	       opt.n, ok, opt.products, opt.per, opt.rate, nsent - first,
	       (unsigned long long)expected, (unsigned long long)got,
	       pct_u32(lat_us, nlat, 0.5) / 1e3, pct_u32(lat_us, nlat, 0.9) / 1e3,
	       pct_u32(lat_us, nlat, 0.99) / 1e3, pct_u32(lat_us, nlat, 0.999) / 1e3,
	       nlat ? lat_us[nlat - 1] / 1e3 : 0.0,
	       got ? (double)(c1.sched_ns - c0.sched_ns) / 1e3 / (double)got : 0.0);
	free(subs);
	return 0;
}

/* --- main --------------------------------------------------------------------------------- */

static void parse_hostport(const char *s, char *host, size_t hl, int *port)
{
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= hl) {
		fprintf(stderr, "bad host:port %s\n", s);
		exit(2);
	}
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	*port = atoi(colon + 1);
}

static void parse_url(const char *url)
{
	/* ws://host:port/path */
	if (strncmp(url, "ws://", 5) != 0) {
		fprintf(stderr, "--url: expected ws://host:port/path\n");
		exit(2);
	}
	const char *hp = url + 5, *slash = strchr(hp, '/');
	char tmp[128];
	size_t n = slash ? (size_t)(slash - hp) : strlen(hp);
	if (n >= sizeof tmp)
		exit(2);
	memcpy(tmp, hp, n);
	tmp[n] = '\0';
	if (ntargets == MAX_TARGETS) {
		fprintf(stderr, "--url: at most %d\n", MAX_TARGETS);
		exit(2);
	}
	struct target *tg = &targets[ntargets++];
	parse_hostport(tmp, tg->host, sizeof tg->host, &tg->port);
	snprintf(tg->path, sizeof tg->path, "%s", slash ? slash : "/");
}

static void read_secret(const char *file)
{
	FILE *f = fopen(file, "rb");
	if (!f)
		die(file);
	secret_len = fread(secret, 1, sizeof secret, f);
	fclose(f);
	while (secret_len && (secret[secret_len - 1] == '\n' || secret[secret_len - 1] == '\r'))
		secret_len--;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: sa_bench_load --mode sa|nchan --test fanout|latency|connect --url "
		"ws://H:P/PATH\n"
		"  -n N --src K --window W (0: no window) --server-pid PID --pub HOST:PORT\n"
		"  (--url and --server-pid up to 8 times: several instances, sockets\n"
		"   spread over them round-robin, server CPU and RSS summed)\n"
		"  sa: --secret FILE | --rsa-key PEM, --user-prefix P --prefix REDIS_PREFIX\n"
		"  fanout: --rounds R --product ID [--restart-cmd CMD --storm-events K]\n"
		"          [--rounds-begin-cmd CMD --rounds-end-cmd CMD]\n"
		"  connect: [--settle S] (seconds before the RSS is read, default 1)\n"
		"  latency: --rate EV_PER_S --duration S --products P --per K\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {{"mode", 1, 0, 'm'},
					   {"test", 1, 0, 't'},
					   {"url", 1, 0, 'u'},
					   {"src", 1, 0, 's'},
					   {"window", 1, 0, 'w'},
					   {"server-pid", 1, 0, 'p'},
					   {"secret", 1, 0, 'S'},
					   {"rsa-key", 1, 0, 'A'},
					   {"user-prefix", 1, 0, 'U'},
					   {"pub", 1, 0, 'P'},
					   {"prefix", 1, 0, 'x'},
					   {"rounds", 1, 0, 'r'},
					   {"product", 1, 0, 'i'},
					   {"rate", 1, 0, 'R'},
					   {"duration", 1, 0, 'd'},
					   {"products", 1, 0, 'k'},
					   {"per", 1, 0, 'e'},
					   {"restart-cmd", 1, 0, 'c'},
					   {"storm-events", 1, 0, 'K'},
					   {"rounds-begin-cmd", 1, 0, 'B'},
					   {"rounds-end-cmd", 1, 0, 'E'},
					   {"settle", 1, 0, 'T'},
					   {0, 0, 0, 0}};
	int o;
	const char *pub = NULL;

	while ((o = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
		switch (o) {
		case 'm': opt.mode = strcmp(optarg, "nchan") == 0 ? MODE_NCHAN : MODE_SA; break;
		case 't': opt.test = optarg; break;
		case 'u': parse_url(optarg); break;
		case 'n': opt.n = atoi(optarg); break;
		case 's': opt.src = atoi(optarg); break;
		case 'w': opt.window = atoi(optarg); break;
		case 'p':
			if (nservers == MAX_TARGETS)
				usage();
			server_pids[nservers++] = atoi(optarg);
			break;
		case 'S': opt.secret_file = optarg; break;
		case 'A': opt.rsa_key_file = optarg; break;
		case 'U': opt.user_prefix = optarg; break;
		case 'P': pub = optarg; break;
		case 'x': opt.prefix = optarg; break;
		case 'r': opt.rounds = atoi(optarg); break;
		case 'i': opt.fan_product = atoi(optarg); break;
		case 'R': opt.rate = atof(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'k': opt.products = atoi(optarg); break;
		case 'e': opt.per = atoi(optarg); break;
		case 'c': opt.restart_cmd = optarg; break;
		case 'K': opt.storm_events = atoi(optarg); break;
		case 'B': opt.rounds_begin_cmd = optarg; break;
		case 'E': opt.rounds_end_cmd = optarg; break;
		case 'T': opt.settle_s = atof(optarg); break;
		default: usage();
		}
	}
	if (!ntargets || !pub || opt.n <= 0 || opt.src <= 0 || opt.window < 0 || opt.settle_s < 0 ||
	    opt.rounds <= 0 || opt.per <= 0 || opt.products < opt.per || !nservers ||
	    server_pids[0] <= 0 || (opt.restart_cmd && (ntargets > 1 || nservers > 1)) ||
	    (opt.mode == MODE_SA && !opt.secret_file && !opt.rsa_key_file))
		usage();
	parse_hostport(pub, opt.pub_host, sizeof opt.pub_host, &opt.pub_port);
	if (opt.secret_file)
		read_secret(opt.secret_file);
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)opt.n + 16) {
			fprintf(stderr, "fd limit %llu too low for %d connections\n",
				(unsigned long long)rl.rlim_cur, opt.n);
			return 1;
		}
	}
	snprintf(nonce, sizeof nonce, "%lx%x", (long)time(NULL), (unsigned)getpid());
	conns = calloc((size_t)opt.n, sizeof *conns);
	pstate = calloc(
	    (size_t)(opt.products > opt.fan_product ? opt.products : opt.fan_product) + 1, 1);
	if (!conns || !pstate)
		die("calloc");
	for (int i = 0; i < opt.n; i++)
		conns[i].fd = -1;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	if (opt.rsa_key_file && opt.mode == MODE_SA)
		fprintf(stderr, "signed %d RS256 tokens in %.2f s (not timed)\n", opt.n,
			presign_rs256());
	int rc = strcmp(opt.test, "latency") == 0   ? test_latency()
		 : strcmp(opt.test, "connect") == 0 ? test_connect()
						    : test_fanout();
	close_all();
	return rc;
}
