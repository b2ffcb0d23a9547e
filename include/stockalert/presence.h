#ifndef STOCKALERT_PRESENCE_H
#define STOCKALERT_PRESENCE_H
/*
 * Presence in Redis: <prefix>online:{user_id} exists while the user has a
 * socket on any instance. It is a set of instance ids with a TTL: each
 * instance adds itself when a user's first local socket opens, removes
 * itself when the last one closes (Redis drops the empty set), and refreshes
 * the TTL of all its users periodically, so a crashed instance's entries
 * lapse by themselves.
 */
#include <uv.h>

#include "stockalert/hub.h"
#include "stockalert/redis.h"

#define PRESENCE_TTL_S	   90
#define PRESENCE_REFRESH_S 30

struct presence;

/* instance: this daemon's id (the one the alert pipeline uses too). */
struct presence *presence_new(uv_loop_t *loop, struct redis *redis, struct hub *hub,
			      const char *prefix, const char *instance);
/* The first local socket of user opened / the last one closed. */
void presence_online(struct presence *p, const char *user);
void presence_offline(struct presence *p, const char *user);
/* Re-announces every local user now (after Redis came back). */
void presence_refresh(struct presence *p);
/* Stops the refresh timer; frees p once libuv has closed it. */
void presence_close(struct presence *p);

#endif
