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
 */
#include <stdint.h>
#include <uv.h>

#include "stockalert/alerts.h"
#include "stockalert/redis.h"

#define STREAM_GROUP	     "stockalert"
#define STREAM_MAX_ATTEMPTS  5
#define STREAM_CLAIM_IDLE_MS 15000

struct stream;

struct stream_stats {
	int64_t lag;	 /* entries not yet delivered to the group (-1 unknown) */
	int64_t pending; /* delivered, not yet acknowledged */
	int64_t dead;	 /* entries in the dead-letter stream */
};

/* conn is a command client used for nothing else (XREADGROUP blocks it). */
struct stream *stream_new(uv_loop_t *loop, struct redis *conn, struct alerts *alerts,
			  const char *prefix, const char *consumer);
/* conn became ready: (re)create the group if needed and start reading. */
void stream_ready(struct stream *s);
void stream_stats(const struct stream *s, struct stream_stats *out);
void stream_close(struct stream *s);

#endif
