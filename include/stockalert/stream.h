#ifndef STOCKALERT_STREAM_H
#define STOCKALERT_STREAM_H
/*
 * Durable input (conf/README.md, Inventory events): inventory events that producers XADD to
 * <prefix>inventory:stream, read as consumer group "stockalert" on a Redis
 * connection of their own (XREADGROUP blocks). Each entry goes through the
 * alert pipeline and is acknowledged once processed; entries left pending by
 * a dead instance are claimed (XAUTOCLAIM) after STREAM_CLAIM_IDLE_MS; an
 * entry that is malformed, or failed STREAM_MAX_ATTEMPTS times, moves to
 * <prefix>inventory:dead with its reason, and is acknowledged.
 *
 * When Redis answers the reader with an error (a demoted primary refusing
 * XREADGROUP, the key holding another type, the group deleted), the input
 * is "not working": it retries with the reconnect's capped, jittered
 * backoff, logs once per change, and says so through on_health.
 */
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "stockalert/alerts.h"
#include "stockalert/redis.h"

#define STREAM_GROUP	     "stockalert"
#define STREAM_MAX_ATTEMPTS  5
#define STREAM_CLAIM_IDLE_MS 15000

struct stream;

struct stream_stats {
	int64_t lag;	   /* entries not yet delivered to the group (-1 unknown) */
	int64_t pending;   /* delivered, not yet acknowledged */
	int64_t dead;	   /* entries in the dead-letter stream */
	const char *error; /* Redis's last refusal while not working, else NULL;
			      valid until the next loop turn */
};

/* The input stopped (working false) or started again working. */
typedef void (*stream_health_fn)(bool working, void *arg);

/* conn is a command client used for nothing else (XREADGROUP blocks it).
 * on_health (may be NULL) hears of every change of stream_working(). */
struct stream *stream_new(uv_loop_t *loop, struct redis *conn, struct alerts *alerts,
			  const char *prefix, const char *consumer, stream_health_fn on_health,
			  void *arg);
/* conn became ready: (re)create the group if needed and start reading. */
void stream_ready(struct stream *s);
void stream_stats(const struct stream *s, struct stream_stats *out);
/* False while Redis keeps refusing the reader (see above); true otherwise,
 * including while the connection itself is down (redis.c reports that). */
bool stream_working(const struct stream *s);
void stream_close(struct stream *s);

#endif
