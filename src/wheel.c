#include "stockalert/wheel.h"

#include <string.h>

static unsigned slot_of(int64_t at)
{
	return (unsigned)((uint64_t)at % WHEEL_SLOTS);
}

void wheel_init(struct wheel *w, int64_t now)
{
	memset(w->slot, 0, sizeof w->slot);
	w->swept = now;
}

void wheel_del(struct wheel *w, struct wheel_node *n)
{
	if (!n->linked)
		return;
	if (n->prev)
		n->prev->next = n->next;
	else
		w->slot[slot_of(n->at)] = n->next;
	if (n->next)
		n->next->prev = n->prev;
	n->prev = n->next = NULL;
	n->linked = false;
}

void wheel_add(struct wheel *w, struct wheel_node *n, int64_t at)
{
	wheel_del(w, n);
	/* Never behind the sweep: a deadline already past fires next sweep. */
	if (at <= w->swept)
		at = w->swept + 1;
	n->at = at;
	n->prev = NULL;
	n->next = w->slot[slot_of(at)];
	if (n->next)
		n->next->prev = n;
	w->slot[slot_of(at)] = n;
	n->linked = true;
}

unsigned wheel_sweep(struct wheel *w, int64_t now, void (*fn)(struct wheel_node *n, void *arg),
		     void *arg)
{
	unsigned fired = 0;
	int64_t from = w->swept + 1;
	/* After a stall longer than a lap every slot is visited once. */
	if (now - from >= WHEEL_SLOTS)
		from = now - WHEEL_SLOTS + 1;
	for (int64_t sec = from; sec <= now; sec++) {
		struct wheel_node *n = w->slot[slot_of(sec)], *next;
		for (; n; n = next) {
			next = n->next;
			if (n->at > now)
				continue; /* a later lap */
			wheel_del(w, n);
			fired++;
			fn(n, arg);
			/* fn may have re-added n to this very slot (a later lap) or
			 * freed others: restart the slot when it changed under us. */
			if (next && !next->linked)
				next = w->slot[slot_of(sec)];
		}
	}
	if (now > w->swept)
		w->swept = now;
	return fired;
}
