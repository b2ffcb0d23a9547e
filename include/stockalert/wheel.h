#ifndef STOCKALERT_WHEEL_H
#define STOCKALERT_WHEEL_H
/*
 * A hashed timing wheel of one-second slots for per-connection deadlines
 * (token expiry, heartbeat). Adding and removing are O(1) with an intrusive
 * node; a sweep visits the slots of the seconds that passed since the last
 * one and fires the nodes that are due, leaving those of later laps.
 *
 * lws's own timers are a sorted list: a new connection's deadline is always
 * the latest, so every insert walked all connections (O(N) per connect).
 * Pure data structure: the caller supplies the clock.
 */
#include <stdbool.h>
#include <stdint.h>

#define WHEEL_SLOTS 256

struct wheel_node {
	struct wheel_node *prev, *next;
	int64_t at; /* due second */
	bool linked;
};

struct wheel {
	struct wheel_node *slot[WHEEL_SLOTS];
	int64_t swept; /* last second swept */
};

void wheel_init(struct wheel *w, int64_t now);
/* (Re)schedules n at second at (moved if already scheduled). */
void wheel_add(struct wheel *w, struct wheel_node *n, int64_t at);
void wheel_del(struct wheel *w, struct wheel_node *n);
/* Fires fn for every node due by now (unlinked before fn runs, so fn may
 * add it again or free it). Returns how many fired. */
unsigned wheel_sweep(struct wheel *w, int64_t now, void (*fn)(struct wheel_node *n, void *arg),
		     void *arg);

#endif
