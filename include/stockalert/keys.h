#ifndef STOCKALERT_KEYS_H
#define STOCKALERT_KEYS_H
/*
 * The Redis key layout, in one place (conf/README.md, Redis and MySQL
 * layout, is the operator's copy of this table). Every key and channel
 * starts with redis.prefix; instances sharing a prefix share state.
 *
 *   user:{user}:subs         set: the user's product ids (live index)
 *   product:{id}:subs        sorted set: users by subscription time, ms
 *   sub:{user}:{id}          hash: kinds, threshold, created, active, v;
 *                            a deleted one stays a day (active 0, TTL) so
 *                            an older write cannot bring it back. subs.c
 *                            writes and reads it (subs.h)
 *   product:{id}:thr         sorted set: users with a custom low-stock
 *                            threshold, scored by it
 *   index:ready              marker: the index is complete; missing ->
 *                            rebuilt from MySQL
 *   online:{user}            set + TTL: instances holding a socket of the
 *                            user (presence.h)
 *   inventory                channel: inventory events
 *   inventory:stream         stream: the durable input (stream.h)
 *   inventory:dead           stream: durable entries that failed, with why
 *   subs:changes             channel: subscription changes (subs.h)
 *   event:{event_id}         hash + TTL: an event's outcome (kind, alert
 *                            id, prev, ts, name), written once by whichever
 *                            instance ran it first; TTL alerts.history_s
 *   event:{event_id}:i       set + TTL: instances that delivered it
 *                            ({event_id} is events_id_key()'s form, so no
 *                            id's keys meet another id's)
 *   stock:{id}               string + TTL: the shared stock state (last
 *                            level seen); TTL alerts.stock_ttl_s
 *   alerts                   stream: every alert, trimmed to history_s;
 *                            entry ids are the alert ids
 *   alerts:start             id of the first alert of the history as it
 *                            stands: moved to the newest alert whenever the
 *                            stream, the index or this marker was missing
 *   alerts:index             sorted set (scores 0) of "<product>:<alert id>",
 *                            each id part a letter for its number of digits
 *                            ('A' = 1) then the digits, so byte order is id
 *                            order ("7:M1700000000000A0"); trimmed with
 *                            the stream
 *   alerts:index:sweep       product whose stale index members were
 *                            dropped last (round robin)
 *   rate:{user}:{window}     hash + TTL: the user's count in the window (_n)
 *                            and a verdict per alert
 *   rate:sync                channel: an instance joined a user online
 *                            elsewhere; the others hand over their count
 *   fair:{id}                hash: fair-release cycle (offset, alert, active)
 *   fair:due                 sorted set: products by next wave time
 *   fair:rel:{alert id}      set + TTL: users a fair-released alert reached
 *   fair:waves               channel: fair-release waves to deliver
 *
 * The C side builds its keys here. The Lua scripts of alerts.c and subs.c
 * build some of the same keys from the prefix they are given (history,
 * fair release, the roster load): a change to a name changes them too.
 *
 * Each builder writes the key into out and returns 0, or -1 when it did not
 * fit (out then holds a truncated key).
 */
#include <stddef.h>
#include <stdint.h>

/* The names without an id (after the prefix). */
#define KEYS_INDEX_READY      "index:ready"
#define KEYS_INVENTORY	      "inventory"
#define KEYS_INVENTORY_STREAM "inventory:stream"
#define KEYS_INVENTORY_DEAD   "inventory:dead"
#define KEYS_SUBS_CHANGES     "subs:changes"
#define KEYS_ALERTS	      "alerts"
#define KEYS_ALERTS_START     "alerts:start"
#define KEYS_ALERTS_INDEX     "alerts:index"
#define KEYS_RATE_SYNC	      "rate:sync"
#define KEYS_FAIR_WAVES	      "fair:waves"

/* prefix + one of the names above. */
int keys_name(char *out, size_t outlen, const char *prefix, const char *name);

int keys_user_subs(char *out, size_t outlen, const char *prefix, const char *user);
int keys_product_subs(char *out, size_t outlen, const char *prefix, int64_t product);
int keys_sub(char *out, size_t outlen, const char *prefix, const char *user, int64_t product);
/* "sub:{user}:": what a script appends a product id to for keys_sub(). */
int keys_sub_of(char *out, size_t outlen, const char *prefix, const char *user);
int keys_product_thr(char *out, size_t outlen, const char *prefix, int64_t product);
int keys_online(char *out, size_t outlen, const char *prefix, const char *user);
/* idk: the event id in events_id_key()'s form. */
int keys_event(char *out, size_t outlen, const char *prefix, const char *idk);
int keys_event_instances(char *out, size_t outlen, const char *prefix, const char *idk);
int keys_stock(char *out, size_t outlen, const char *prefix, int64_t product);
int keys_rate(char *out, size_t outlen, const char *prefix, const char *user, int64_t window);

#endif
