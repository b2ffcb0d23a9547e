/*
 * The per-user alert limit, the local half (see rate.h for why it holds
 * across instances).
 */
#include "stockalert/rate.h"

int64_t rate_window(int64_t now_ms, int window_s)
{
	return now_ms / ((int64_t)window_s * 1000);
}

/* Moves r to window, which starts from nothing. */
static void enter(struct rate_state *r, int64_t window)
{
	if (r->window != window)
		*r = (struct rate_state){.window = window};
}

bool rate_count(struct rate_state *r, int64_t window, uint32_t max_per_window, bool held,
		uint32_t *seed)
{
	enter(r, window);
	*seed = r->count++;
	if (!r->shared && !held && *seed < max_per_window / 2)
		return true;
	r->shared = true;
	return false;
}

void rate_seed(struct rate_state *r, int64_t window, uint32_t count)
{
	if (window < r->window)
		return;
	enter(r, window);
	if (r->count < count)
		r->count = count;
}

void rate_share(struct rate_state *r, int64_t window)
{
	enter(r, window);
	r->shared = true;
}

uint32_t rate_unshared_count(const struct rate_state *r, int64_t window)
{
	return r->window == window && !r->shared ? r->count : 0;
}
