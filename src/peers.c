#include "stockalert/peers.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "stockalert/dict.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"

#define MOD	    "peers"
/* Reads of what a refused client already sent, so that closing does not
 * answer its request with a reset that could discard our 503 (RFC 9293
 * §3.6: a close with unread data resets). */
#define DRAIN_READS 4

struct peer {
	unsigned count;
	char key[INET6_ADDRSTRLEN]; /* found again by it at close: the socket is gone */
};

struct peers {
	struct dict *by_addr; /* address text -> struct peer */
	unsigned max;	      /* 0: no limit */
	/* Handshakes under way, and the door they may close. */
	unsigned max_pending; /* 0: no bound */
	unsigned limit;	      /* the bound now: max_pending, more after stalls */
	unsigned pending;
	uint64_t ended;	      /* handshakes ended (settled or closed), ever */
	uint64_t ended_tick;  /* ... at the last tick that saw one end */
	unsigned still_ticks; /* ticks paused with none ended since */
	struct lws *listener; /* its wsi, learnt from the filter */
	/* Or, with socket activation, the accept loop of listener.c. */
	void (*set_accepting)(bool accepting, void *arg);
	void *set_accepting_arg;
	bool paused;	  /* not accepting */
	char **unlimited; /* as addr_key() writes them */
	size_t n_unlimited;
	/* The filter admitted a socket; lws adopts it next. */
	bool bind_pending;
	struct peer *admitted; /* NULL for an unlimited address */
	uint64_t churn;
	char refusal[512];
	size_t refusal_len;
};

/* Marks the wsi of an unlimited address: not counted per address. */
static _Alignas(16) struct peer unlimited_peer;

/*
 * A wsi's opaque pointer: its entry, with the low bit set once its handshake
 * is over (entries are at least 16-byte aligned: the bit is free). A bit
 * there rather than a field elsewhere keeps a connection's state at zero
 * bytes of its own.
 */
#define SETTLED ((uintptr_t)1)

static struct peer *entry_of(void *opaque)
{
	return (struct peer *)((uintptr_t)opaque & ~SETTLED);
}

static bool is_settled(void *opaque)
{
	return ((uintptr_t)opaque & SETTLED) != 0;
}

/* The address as text, IPv4-mapped IPv6 written as IPv4, so that one client
 * is one key whichever way the socket sees it. */
static bool addr_key(const struct sockaddr *sa, socklen_t salen, char *out, size_t outlen)
{
	if (sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		return inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)outlen) != NULL;
	}
	if (sa->sa_family == AF_INET6 && salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], out,
					 (socklen_t)outlen) != NULL;
		return inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)outlen) != NULL;
	}
	return false;
}

/* A configured address in the form addr_key() writes, or NULL. */
static char *normalize(const char *text)
{
	char out[INET6_ADDRSTRLEN];
	struct sockaddr_in in = {.sin_family = AF_INET};
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};

	if (inet_pton(AF_INET, text, &in.sin_addr) == 1 &&
	    addr_key((struct sockaddr *)&in, sizeof in, out, sizeof out))
		return mem_strdup(out);
	if (inet_pton(AF_INET6, text, &in6.sin6_addr) == 1 &&
	    addr_key((struct sockaddr *)&in6, sizeof in6, out, sizeof out))
		return mem_strdup(out);
	return NULL;
}

struct peers *peers_new(const struct peers_options *o)
{
	static const char body[] = "{\"error\":{\"code\":\"too_many_connections\","
				   "\"message\":\"connection limit for this address reached\"}}";
	struct peers *p = mem_calloc(1, sizeof *p);

	p->by_addr = dict_new();
	p->max = o->max_per_address > 0 ? (unsigned)o->max_per_address : 0;
	p->max_pending = o->max_pending > 0 ? (unsigned)o->max_pending : 0;
	p->limit = p->max_pending;
	p->unlimited = mem_calloc(o->n_unlimited ? o->n_unlimited : 1, sizeof *p->unlimited);
	for (size_t i = 0; i < o->n_unlimited; i++) {
		char *a = normalize(o->unlimited[i]);
		if (!a) {
			log_warn(MOD, "listen.unlimited_addresses: %s is not an address; ignored",
				 o->unlimited[i]);
			continue;
		}
		p->unlimited[p->n_unlimited++] = a;
	}
	int n = snprintf(p->refusal, sizeof p->refusal,
			 "HTTP/1.1 503 Service Unavailable\r\n"
			 "content-type: application/json\r\n"
			 "content-length: %zu\r\n"
			 "retry-after: 5\r\n"
			 "connection: close\r\n\r\n%s",
			 sizeof body - 1, body);
	p->refusal_len = n > 0 && (size_t)n < sizeof p->refusal ? (size_t)n : 0;
	return p;
}

static int free_peer(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	mem_free(value);
	return 0;
}

void peers_free(struct peers *p)
{
	if (!p)
		return;
	dict_each(p->by_addr, free_peer, NULL);
	dict_free(p->by_addr);
	for (size_t i = 0; i < p->n_unlimited; i++)
		mem_free(p->unlimited[i]);
	mem_free(p->unlimited);
	mem_free(p);
}

static void release_entry(struct peers *p, struct peer *e)
{
	if (e == &unlimited_peer)
		return;
	if (--e->count == 0) {
		dict_del(p->by_addr, e->key);
		mem_free(e);
	}
}

/* Writes the 503 on a socket lws has not adopted, which it then closes. */
static void refuse(struct peers *p, int fd)
{
	char sink[4096];
	if (p->refusal_len)
		(void)send(fd, p->refusal, p->refusal_len, MSG_NOSIGNAL | MSG_DONTWAIT);
	for (int i = 0; i < DRAIN_READS; i++)
		if (recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
			break;
	shutdown(fd, SHUT_WR);
}

/* Accepting stops: lws leaves the listen socket unpolled, and its accept
 * loop, which polls the socket itself, ends after the current one. */
static void pause_accepting(struct peers *p)
{
	if (p->paused || (!p->listener && !p->set_accepting))
		return;
	p->paused = true;
	if (p->listener)
		lws_rx_flow_control(p->listener, 0);
	else
		p->set_accepting(false, p->set_accepting_arg);
}

static void resume_accepting(struct peers *p)
{
	if (!p->paused || (!p->listener && !p->set_accepting))
		return;
	p->paused = false;
	if (p->listener)
		lws_rx_flow_control(p->listener, 1);
	else
		p->set_accepting(true, p->set_accepting_arg);
}

void peers_set_acceptor(struct peers *p, void (*set_accepting)(bool accepting, void *arg),
			void *arg)
{
	p->set_accepting = set_accepting;
	p->set_accepting_arg = arg;
	if (!set_accepting && !p->listener)
		p->paused = false;
}

static void handshake_ended(struct peers *p)
{
	p->pending--;
	p->ended++;
	if (p->pending <= p->max_pending / 2)
		p->limit = p->max_pending;
	if (p->pending <= p->limit / 2)
		resume_accepting(p);
}

/* A socket let in, e its address's entry (NULL: not counted per address). */
static bool admitted(struct peers *p, struct peer *e)
{
	p->bind_pending = true;
	p->admitted = e;
	p->churn++;
	p->pending++;
	if (p->max_pending && p->pending >= p->limit)
		pause_accepting(p);
	return true;
}

bool peers_admit(struct peers *p, struct lws *listener, int fd, const struct sockaddr *sa,
		 socklen_t salen)
{
	char key[INET6_ADDRSTRLEN];

	p->listener = listener;
	/* A socket admitted earlier whose wsi never came (its adoption
	 * failed): it is closed already. */
	if (p->bind_pending) {
		p->bind_pending = false;
		release_entry(p, p->admitted ? p->admitted : &unlimited_peer);
		handshake_ended(p);
	}
	p->admitted = NULL;

	/* Not IP (a Unix socket, say): nothing to count it against. */
	if (!addr_key(sa, salen, key, sizeof key) || !p->max)
		return admitted(p, NULL);
	for (size_t i = 0; i < p->n_unlimited; i++)
		if (strcmp(key, p->unlimited[i]) == 0)
			return admitted(p, NULL);
	struct peer *e = dict_get(p->by_addr, key);
	if (e && e->count >= p->max) {
		metrics_inc(METRICS_CONNECTIONS_REFUSED_ADDRESS);
		metrics_http_response(503);
		refuse(p, fd);
		return false;
	}
	if (!e) {
		e = mem_calloc(1, sizeof *e);
		memcpy(e->key, key, sizeof e->key);
		dict_set(p->by_addr, key, e);
	}
	if (++e->count == p->max)
		log_info(MOD, "%s holds %u connections, the limit: more are refused", key, p->max);
	return admitted(p, e);
}

void peers_bind(struct peers *p, struct lws *wsi)
{
	if (!p->bind_pending)
		return; /* a wsi lws made for itself */
	lws_set_opaque_user_data(wsi, p->admitted ? (void *)p->admitted : (void *)&unlimited_peer);
	p->bind_pending = false;
	p->admitted = NULL;
}

void peers_settled(struct peers *p, struct lws *wsi)
{
	void *o = lws_get_opaque_user_data(wsi);
	if (!o || is_settled(o))
		return;
	lws_set_opaque_user_data(wsi, (void *)((uintptr_t)o | SETTLED));
	handshake_ended(p);
}

void peers_release(struct peers *p, struct lws *wsi)
{
	if (wsi == p->listener) {
		/* The listen socket goes (the stop): nothing to resume. */
		p->listener = NULL;
		p->paused = false;
		return;
	}
	void *o = lws_get_opaque_user_data(wsi);
	if (!o)
		return;
	lws_set_opaque_user_data(wsi, NULL);
	p->churn++;
	if (!is_settled(o))
		handshake_ended(p);
	release_entry(p, entry_of(o));
}

void peers_tick(struct peers *p)
{
	if (!p->paused || p->ended != p->ended_tick) {
		p->ended_tick = p->ended;
		p->still_ticks = 0;
		return;
	}
	if (++p->still_ticks < PEERS_STALL_TICKS)
		return;
	/* Nobody got through for a while: slow clients hold the places. Let
	 * as many again in rather than keep the others out until those time
	 * out; the bound returns to its size once half the backlog is through. */
	p->still_ticks = 0;
	p->limit += p->max_pending;
	log_warn(MOD,
		 "%u handshakes under way, none ended in %d ms (slow clients?): "
		 "%u may be under way now",
		 p->pending, PEERS_STALL_TICKS * PEERS_TICK_MS, p->limit);
	resume_accepting(p);
}

uint64_t peers_churn(const struct peers *p)
{
	return p->churn;
}

size_t peers_addresses(const struct peers *p)
{
	return dict_size(p->by_addr);
}
