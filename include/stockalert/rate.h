#ifndef STOCKALERT_RATE_H
#define STOCKALERT_RATE_H
/*
 * The per-user alert limit (alerts.max_per_window per alerts.window_s,
 * across every instance), the part each instance decides by itself. Pure
 * logic, no I/O: the shared counter in Redis lives in alerts.c.
 *
 * Every instance a user is connected to considers the same alerts for that
 * user in the same order, so each can count them itself. While a user's
 * count is below half the limit, "deliver" is the answer wherever it is
 * asked; from half the limit on, and while alerts are held for the user,
 * the shared counter decides, seeded with the local count (the larger seed
 * wins), so the user's instances agree alert by alert. An instance that
 * joins a user mid-window starts from the count in Redis (rate_seed): the
 * shared counter if in use, or what the user's last instance left behind
 * (rate_unshared_count).
 *
 * A user online on another instance when an instance joins makes both use
 * the shared counter for the rest of the window: the joiner at once
 * (rate_share), the others when they hear of it on <prefix>rate:sync, after
 * handing over their own counts (alerts.c).
 *
 * What is not exact: alerts decided in the moment between a join and the
 * other instances' hand-over (one pub/sub hop), and a move whose new socket
 * opens before the old instance's count reaches Redis, see counts below the
 * truth by what the other instance counted alone (less than half the
 * limit): such a user can get up to that many more alerts in that window.
 * None is lost.
 */
#include <stdbool.h>
#include <stdint.h>

/* One user's count; all zero for a user just seen. */
struct rate_state {
	int64_t window; /* window number the count is for */
	uint32_t count; /* alerts counted for the user in it */
	bool shared;	/* the shared counter decides the rest of the window */
};

/* The number of the window that now_ms (ms since the epoch) falls in. */
int64_t rate_window(int64_t now_ms, int window_s);

/* Counts one alert for the user in window. True: deliver it now. False:
 * ask the shared counter, with *seed (the count before this alert).
 * held: alerts are waiting for the user (they go first). */
bool rate_count(struct rate_state *r, int64_t window, uint32_t max_per_window, bool held,
		uint32_t *seed);

/* The user's count in window as Redis had it when the user's load began:
 * raises the local count to it (a count of an older window is ignored). */
void rate_seed(struct rate_state *r, int64_t window, uint32_t count);

/* Held alerts are released at the start of window: they count there, in
 * the shared counter, so it decides the user's whole window. */
void rate_share(struct rate_state *r, int64_t window);

/* What to hand to the shared counter in Redis during window (when the
 * user's last socket here closes, or another instance joins the user): the
 * count, or 0 if there is nothing the shared counter does not know already. */
uint32_t rate_unshared_count(const struct rate_state *r, int64_t window);

#endif
