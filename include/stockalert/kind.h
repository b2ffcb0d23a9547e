#ifndef STOCKALERT_KIND_H
#define STOCKALERT_KIND_H
/*
 * What the modules say about alerts in common: the kinds of alert (bits, so
 * a subscription's kinds are a set) and the range of a product id. No
 * functions and no dependencies, so a pure module (events.c) has them
 * without subs.h's Redis and MySQL. The kinds' names (their text form) are
 * subs.h's.
 */

enum subs_kind {
	SUBS_BACK_IN_STOCK = 1u << 0,
	SUBS_LOW_STOCK = 1u << 1,
	SUBS_SOLD_OUT = 1u << 2,
	SUBS_ALL_KINDS = (1u << 3) - 1
};

/*
 * Product ids are 1..2^53-1 everywhere (REST paths, WebSocket frames,
 * inventory events, the subscription change notice): the largest range
 * every encoder on the way carries exactly (JavaScript clients, and
 * Redis's Lua, whose numbers are doubles).
 */
#define SUBS_PRODUCT_ID_MAX	 9007199254740991LL
/* What a refused id is told (test_subs checks it names the bound). */
#define SUBS_PRODUCT_ID_EXPECTED "product_id: expected an integer from 1 to 9007199254740991"

#endif
