#ifndef STOCKALERT_BACKOFF_H
#define STOCKALERT_BACKOFF_H
/*
 * Exponential backoff with full jitter (AWS "Exponential Backoff And
 * Jitter"): the n-th delay is uniform in [min, min(max, base * 2^n)], so a
 * fleet of instances that lost Redis together does not reconnect in step.
 */
#include <stdint.h>

struct backoff {
	uint32_t min_ms;  /* lower bound of every delay */
	uint32_t max_ms;  /* cap of the exponential growth */
	uint32_t attempt; /* failures since the last success */
	uint64_t rng;	  /* xorshift state; seeded by backoff_init */
};

void backoff_init(struct backoff *b, uint32_t min_ms, uint32_t max_ms, uint64_t seed);
/* Returns the delay before the next attempt and counts the attempt. */
uint32_t backoff_next(struct backoff *b);
/* Call after a success: the next failure starts from min_ms again. */
void backoff_reset(struct backoff *b);

#endif
