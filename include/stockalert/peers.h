#ifndef STOCKALERT_PEERS_H
#define STOCKALERT_PEERS_H
/*
 * Connections per peer address, counted from accept to close, so that one
 * address cannot take every descriptor (about 21,000 half-open connections
 * from two addresses once made the daemon unreachable, its open sockets
 * included). A connection over listen.max_connections_per_address is
 * answered 503 and closed at accept, before it costs more than the accept.
 * Addresses in listen.unlimited_addresses (a reverse proxy on the same host
 * connects from loopback) are never refused.
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

/* max_per_address 0 = no limit. unlimited: numeric addresses (IPv4 or
 * IPv6; the config loader has checked that they parse). */
struct peers *peers_new(int max_per_address, char *const *unlimited, size_t n_unlimited);
void peers_free(struct peers *p);

/*
 * At accept (LWS_CALLBACK_FILTER_NETWORK_CONNECTION), before lws adopts the
 * socket fd. Returns true to let it in. Returns false when its address holds
 * its limit already: the 503 is written on fd, and lws closes it.
 */
bool peers_admit(struct peers *p, int fd, const struct sockaddr *sa, socklen_t salen);

/* The wsi lws adopted the socket admitted last into
 * (LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED, issued within the same
 * accept, once the adoption is complete: earlier, the adoption would reset
 * the wsi's opaque pointer). */
void peers_bind(struct peers *p, struct lws *wsi);

/* Any wsi going away (LWS_CALLBACK_WSI_DESTROY). */
void peers_release(struct peers *p, struct lws *wsi);

/* Connections admitted plus connections closed, since the start. */
uint64_t peers_churn(const struct peers *p);

/* Addresses with at least one connection counted. */
size_t peers_addresses(const struct peers *p);

#endif
