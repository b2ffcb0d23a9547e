/* Exponential backoff with full jitter: the delays a reconnecting client
 * actually waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stockalert/backoff.h"

#define SEEDS 2000

/* The delay of the n-th attempt (0-based) from a fresh backoff. */
static uint32_t nth_delay(uint32_t min, uint32_t max, uint64_t seed, unsigned n)
{
	struct backoff b;
	backoff_init(&b, min, max, seed);
	uint32_t d = 0;
	for (unsigned i = 0; i <= n; i++)
		d = backoff_next(&b);
	return d;
}

static void test_first_delay_is_min(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= SEEDS; seed++)
		assert_int_equal(nth_delay(100, 5000, seed, 0), 100);
}

static void test_every_delay_within_bounds(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 200; seed++) {
		struct backoff b;
		backoff_init(&b, 100, 5000, seed * 7919);
		for (int i = 0; i < 100; i++) {
			uint32_t d = backoff_next(&b);
			assert_in_range(d, 100, 5000);
		}
	}
}

/* The n-th delay may reach min * 2^n and never more, until the cap. */
static void test_ceiling_doubles(void **state)
{
	(void)state;
	for (unsigned n = 1; n <= 5; n++) {
		uint32_t ceiling = 100u << n;
		uint32_t lo = UINT32_MAX, hi = 0;
		for (uint64_t seed = 1; seed <= SEEDS; seed++) {
			uint32_t d = nth_delay(100, 100000, seed, n);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
		}
		assert_in_range(hi, ceiling - ceiling / 20, ceiling);
		assert_in_range(lo, 100, 100 + ceiling / 20);
	}
}

static void test_capped_at_max(void **state)
{
	(void)state;
	uint32_t hi = 0;
	for (uint64_t seed = 1; seed <= SEEDS; seed++) {
		uint32_t d = nth_delay(100, 5000, seed, 40);
		assert_in_range(d, 100, 5000);
		hi = d > hi ? d : hi;
	}
	/* Full jitter: capped delays still spread up to the cap. */
	assert_true(hi >= 4900);
}

static void test_many_attempts_do_not_overflow(void **state)
{
	(void)state;
	struct backoff b;
	backoff_init(&b, 1000, 60000, 42);
	b.attempt = UINT32_MAX - 2;
	for (int i = 0; i < 10; i++)
		assert_in_range(backoff_next(&b), 1000, 60000);
	assert_int_equal(b.attempt, UINT32_MAX);
}

static void test_reset_starts_over(void **state)
{
	(void)state;
	struct backoff b;
	backoff_init(&b, 250, 5000, 99);
	for (int i = 0; i < 12; i++)
		backoff_next(&b);
	backoff_reset(&b);
	assert_int_equal(b.attempt, 0);
	assert_int_equal(backoff_next(&b), 250);
	assert_in_range(backoff_next(&b), 250, 500);
}

static void test_max_below_min_is_min(void **state)
{
	(void)state;
	struct backoff b;
	backoff_init(&b, 300, 10, 5);
	for (int i = 0; i < 10; i++)
		assert_int_equal(backoff_next(&b), 300);
}

/* Capped delays are spread over [min, max], not bunched: a fleet that lost
 * Redis together must not reconnect in step. */
static void test_jitter_spreads(void **state)
{
	(void)state;
	enum { BUCKETS = 10, SAMPLES = 10000 };
	unsigned count[BUCKETS] = {0};
	struct backoff b;
	backoff_init(&b, 1, 1000, 12345);
	for (int i = 0; i < SAMPLES; i++) {
		b.attempt = 30;
		uint32_t d = backoff_next(&b);
		assert_in_range(d, 1, 1000);
		count[(d - 1) / 100]++;
	}
	for (int i = 0; i < BUCKETS; i++)
		assert_in_range(count[i], SAMPLES / BUCKETS * 8 / 10, SAMPLES / BUCKETS * 12 / 10);
}

static void test_seeds_differ(void **state)
{
	(void)state;
	struct backoff a, b;
	backoff_init(&a, 100, 5000, 1);
	backoff_init(&b, 100, 5000, 2);
	int same = 0;
	for (int i = 0; i < 20; i++)
		same += backoff_next(&a) == backoff_next(&b);
	/* Only the first, jitter-free delay may coincide by construction. */
	assert_true(same < 5);
}

static void test_zero_seed_still_jitters(void **state)
{
	(void)state;
	struct backoff b;
	backoff_init(&b, 100, 5000, 0);
	b.attempt = 30;
	uint32_t first = backoff_next(&b);
	int differ = 0;
	for (int i = 0; i < 20; i++) {
		b.attempt = 30;
		differ += backoff_next(&b) != first;
	}
	assert_true(differ > 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_delay_is_min),
	    cmocka_unit_test(test_every_delay_within_bounds),
	    cmocka_unit_test(test_ceiling_doubles),
	    cmocka_unit_test(test_capped_at_max),
	    cmocka_unit_test(test_many_attempts_do_not_overflow),
	    cmocka_unit_test(test_reset_starts_over),
	    cmocka_unit_test(test_max_below_min_is_min),
	    cmocka_unit_test(test_jitter_spreads),
	    cmocka_unit_test(test_seeds_differ),
	    cmocka_unit_test(test_zero_seed_still_jitters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
