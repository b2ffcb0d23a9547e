#ifndef STOCKALERT_ROSTER_H
#define STOCKALERT_ROSTER_H
/*
 * The subscriptions of the users connected to this instance, indexed both
 * ways: user -> products, product -> local users. An event costs a lookup
 * of its product and a walk over local subscribers, with no Redis round
 * trip per user. Users appear when their first socket opens (loaded from
 * Redis) and go with their last one; changes arrive from every instance over
 * pub/sub. Pure data structure, no I/O.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stockalert/rate.h"

struct roster_sub {
	int64_t product_id;
	unsigned kinds; /* enum subs_kind bits */
	int threshold;	/* < 0: the product's low_stock_threshold */
	int64_t created_ms;
};

/* What the alert pipeline keeps with each present user, so a delivery
 * costs no lookup: where to send, and the user's rate count. The roster only
 * stores it. */
struct roster_slot {
	void *target;		/* the caller's delivery handle */
	struct rate_state rate; /* see rate.h */
};

struct roster;

struct roster *roster_new(void);
void roster_free(struct roster *r);

/* Adds user (or replaces all of its subscriptions) with subs[0..n). */
void roster_set_user(struct roster *r, const char *user, const struct roster_sub *subs, size_t n);
/* Present users start with a zeroed slot, which replacing their
 * subscriptions keeps. Removes user and every index entry of it (release
 * what the slot holds first). */
void roster_drop_user(struct roster *r, const char *user);
bool roster_has_user(const struct roster *r, const char *user);
size_t roster_users(const struct roster *r);

/* Applies one change to a present user (ignored for absent users):
 * active adds or updates sub, !active removes it. */
void roster_update(struct roster *r, const char *user, const struct roster_sub *sub, bool active);

const struct roster_sub *roster_get(const struct roster *r, const char *user, int64_t product_id);
/* The slot of a present user, or NULL. */
struct roster_slot *roster_slot(struct roster *r, const char *user);
/* Number of local users subscribed to product_id. */
size_t roster_subscribers(const struct roster *r, int64_t product_id);
/* Calls fn for each local subscriber of product_id, in subscription order,
 * with the user's slot; fn must not modify r otherwise. */
void roster_each_subscriber(struct roster *r, int64_t product_id,
			    void (*fn)(const char *user, const struct roster_sub *sub,
				       struct roster_slot *slot, void *arg),
			    void *arg);
/* Calls fn for each subscription of user; fn must not modify r. */
void roster_each_sub(const struct roster *r, const char *user,
		     void (*fn)(const struct roster_sub *sub, void *arg), void *arg);

/*
 * Who hears of an alert of kind (enum subs_kind) for the change prev -> stock
 * of a product whose own low-stock threshold is default_threshold: the
 * subscription sub (NULL = none) if it asks for the kind and the change is
 * that kind by its threshold; with ops (the operations view, which admins
 * have whatever they subscribed to), every sold_out and the low_stock of the
 * product's own threshold. Live delivery and the history both ask this.
 */
bool roster_hears(const struct roster_sub *sub, bool ops, unsigned kind, int64_t prev,
		  int64_t stock, int default_threshold);

#endif
