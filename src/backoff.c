#include "stockalert/backoff.h"

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

void backoff_init(struct backoff *b, uint32_t min_ms, uint32_t max_ms, uint64_t seed)
{
	b->min_ms = min_ms;
	b->max_ms = max_ms < min_ms ? min_ms : max_ms;
	b->attempt = 0;
	b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint32_t backoff_next(struct backoff *b)
{
	/* 2^attempt overflows quickly; past 2^20 the cap has long been reached. */
	uint32_t shift = b->attempt < 20 ? b->attempt : 20;
	uint64_t ceiling = (uint64_t)b->min_ms << shift;
	if (ceiling > b->max_ms)
		ceiling = b->max_ms;
	if (b->attempt < UINT32_MAX)
		b->attempt++;
	uint64_t span = ceiling - b->min_ms + 1;
	return b->min_ms + (uint32_t)(xorshift64(&b->rng) % span);
}

void backoff_reset(struct backoff *b)
{
	b->attempt = 0;
}
