#ifndef STOCKALERT_ALERT_H
#define STOCKALERT_ALERT_H
/*
 * One alert (README.md, WebSocket protocol): its id, its JSON frame, and its record in the history
 * stream <prefix>alerts. Pure: no I/O (the pipeline is alerts.c).
 *
 * An alert id is the id of its history stream entry, "<ms>-<seq>". Clients
 * send it back as ?since=, so alert_id_parse() is a parser of client input.
 * Ordered as a number, (ms << ALERT_SEQ_BITS) | seq, it compares like the
 * stream ids do.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define ALERT_SEQ_BITS 22

/* "1700000000000-3" -> ((ms << 22) | seq) in *order; -1 (and *order
 * untouched) if id is anything else: no sign, space, leading junk or
 * trailing bytes, ms < 2^42, seq < 2^22. */
int alert_id_parse(const char *id, uint64_t *order);

/* The milliseconds part of an order number. */
static inline uint64_t alert_order_ms(uint64_t order)
{
	return order >> ALERT_SEQ_BITS;
}

/* The alert frame {"type":"alert","id",...}; name is left out when NULL or
 * empty. NULL only if out of memory. */
json_t *alert_json(const char *id, unsigned kind, int64_t product_id, const char *name,
		   int64_t stock, int64_t prev_stock, const char *event_id, int64_t ts);

/* One entry of the history stream; the strings point into the reply. */
struct alert_entry {
	const char *id;
	uint64_t order;
	unsigned kind; /* enum subs_kind */
	int64_t product_id, stock, prev, ts;
	int thr;	      /* the product's low_stock_threshold then */
	const char *name;     /* "" when unknown */
	const char *event_id; /* "" when unknown */
	bool fair;	      /* reaches users through fair-release waves */
};

/* Reads one XRANGE element, [id, [field, value, ...]]; false for anything
 * that is not an alert entry (wrong shape, bad id, unknown kind). */
bool alert_entry_parse(const redisReply *e, struct alert_entry *out);

#endif
