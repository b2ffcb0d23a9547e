#ifndef STOCKALERT_PEERS_H
#define STOCKALERT_PEERS_H
/*
 * Who gets in at accept, and how fast.
 *
 * Connections per peer address, counted from accept to close, so that one
 * address cannot take every descriptor (about 21,000 half-open connections
 * from two addresses once made the daemon unreachable, its open sockets
 * included). A connection over listen.max_connections_per_address is
 * answered 503 and closed at accept, before it costs more than the accept.
 * Addresses in listen.unlimited_addresses (a reverse proxy on the same host
 * connects from loopback) are never refused.
 *
 * Handshakes under way (accepted, request not yet read): at
 * listen.max_pending_handshakes the daemon stops accepting, and the kernel
 * keeps the next clients in the listen backlog (their SYNs retried past it)
 * until half of those are through. lws 4.1.6 would otherwise accept all N
 * of a simultaneous connect at once: N timers in its sorted list, N sockets
 * waiting for a header buffer, polled again and again, and the first ones'
 * 10 s header timeout expiring before their turn (19,000 at once: 2,500
 * connected). Slow clients cannot hold the door shut: when no handshake
 * ends for a second while accepting is paused, the bound grows by its size
 * and accepting resumes; it shrinks back once half the handshakes under way
 * are through.
 *
 * Also counts connections opened and closed, for the daemon to give freed
 * memory back once a burst of them is over.
 *
 * The state of a connection lives in lws's opaque user pointer of its wsi:
 * no allocation per connection, one entry per address with connections.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct lws;
struct peers;

struct peers_options {
	int max_per_address;	/* 0 = no limit */
	char *const *unlimited; /* numeric addresses (the config checked them) */
	size_t n_unlimited;
	int max_pending; /* handshakes under way; 0 = no bound */
};

struct peers *peers_new(const struct peers_options *o);
void peers_free(struct peers *p);

/*
 * At accept (LWS_CALLBACK_FILTER_NETWORK_CONNECTION), before lws adopts the
 * socket fd. Returns true to let it in. Returns false when its address holds
 * its limit already: the 503 is written on fd, and lws closes it.
 */
bool peers_admit(struct peers *p, struct lws *listener, int fd, const struct sockaddr *sa,
		 socklen_t salen);

/*
 * With socket activation lws has no listen socket: listener.c accepts and
 * calls peers_admit() with listener NULL (closing fd itself when it returns
 * false), and is told here to stop and resume accepting. NULL detaches it
 * (the stop).
 */
void peers_set_acceptor(struct peers *p, void (*set_accepting)(bool accepting, void *arg),
			void *arg);

/* The wsi lws adopted the socket admitted last into
 * (LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED, issued within the same
 * accept, once the adoption is complete: earlier, the adoption would reset
 * the wsi's opaque pointer). */
void peers_bind(struct peers *p, struct lws *wsi);

/* The connection's handshake is over: its request was read (an HTTP request,
 * or a WebSocket established). Later calls for it do nothing. */
void peers_settled(struct peers *p, struct lws *wsi);

/* Any wsi going away (LWS_CALLBACK_WSI_DESTROY). */
void peers_release(struct peers *p, struct lws *wsi);

/* Every PEERS_TICK_MS: when accepting has been paused for PEERS_STALL_TICKS
 * ticks without a handshake ending, the bound grows by its size and
 * accepting resumes (see above). A second: more than a slow client's round
 * trips for a TLS handshake and its request. */
#define PEERS_TICK_MS	  100
#define PEERS_STALL_TICKS 10
void peers_tick(struct peers *p);

/* Connections admitted plus connections closed, since the start. */
uint64_t peers_churn(const struct peers *p);

/* Addresses with at least one connection counted. */
size_t peers_addresses(const struct peers *p);

#endif
