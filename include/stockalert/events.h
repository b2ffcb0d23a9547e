#ifndef STOCKALERT_EVENTS_H
#define STOCKALERT_EVENTS_H
/*
 * Inventory events (conf/README.md, Inventory events): parsing and validation of what producers
 * publish, and the classification of a stock change. Pure functions.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVENTS_ID_MAX	   128
/* Stock levels outside this range are refused as malformed: no shop has
 * them, and they would overflow arithmetic downstream. */
#define EVENTS_STOCK_LIMIT 1000000000LL

struct inv_event {
	char event_id[EVENTS_ID_MAX + 1]; /* 1-128 chars of [A-Za-z0-9_.:-] */
	int64_t product_id;		  /* 1..SUBS_PRODUCT_ID_MAX (kind.h) */
	int64_t stock;			  /* |stock| <= EVENTS_STOCK_LIMIT */
	bool has_prev;
	int64_t prev_stock; /* valid when has_prev */
	bool has_ts;
	int64_t ts_ms; /* producer's time, ms; valid when has_ts */
};

/*
 * Parses one event. Unknown fields are ignored (producers may add their
 * own). With allow_missing_id, a missing event_id is not an error and
 * event_id is left empty (the HTTP API generates one). Returns 0, or -1
 * with a reason naming the field in err.
 */
int events_parse(const char *json, size_t len, bool allow_missing_id, struct inv_event *ev,
		 char *err, size_t errlen);

/*
 * The form of event id in Redis key names (alerts.h): the id itself, or
 * "{id}" when the id ends in ":i", the suffix of an event's delivered-by
 * set. So the keys of one id never meet another's: "event:order-7:i" is
 * only ever order-7's set, and "order-7:i"'s record is "event:{order-7:i}".
 * Ids cannot hold braces, so the two forms never meet either; every other
 * id keeps the key it always had. out holds EVENTS_ID_KEY_MAX + 1 bytes.
 */
#define EVENTS_ID_KEY_MAX (EVENTS_ID_MAX + 2)
void events_id_key(const char *id, char *out, size_t outlen);

/* Encodes ev as the canonical event JSON; returns a malloc'd string
 * (free with mem_free). */
char *events_encode(const struct inv_event *ev);

/*
 * The alert a change prev -> stock means for a subscriber whose low-stock
 * threshold is threshold: SUBS_BACK_IN_STOCK (prev <= 0 < stock),
 * SUBS_SOLD_OUT (prev > 0 >= stock), SUBS_LOW_STOCK (prev > threshold >=
 * stock > 0), or 0. The bits are enum subs_kind's (kind.h).
 */
unsigned events_classify(int64_t prev, int64_t stock, int64_t threshold);

#endif
