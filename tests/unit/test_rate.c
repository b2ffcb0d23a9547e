/* Unit tests for the local half of the per-user alert limit (rate.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>

#include "stockalert/rate.h"

#define MAX 10

/* Counts n alerts in window; returns how many were let through locally. */
static int count_n(struct rate_state *r, int64_t window, int n, bool held)
{
	int local = 0;
	uint32_t seed;

	for (int i = 0; i < n; i++)
		local += rate_count(r, window, MAX, held, &seed);
	return local;
}

static void test_window(void **state)
{
	(void)state;
	assert_int_equal(rate_window(0, 60), 0);
	assert_int_equal(rate_window(59999, 60), 0);
	assert_int_equal(rate_window(60000, 60), 1);
	assert_int_equal(rate_window(1795462602142, 1), 1795462602);
}

/* Below half the limit the instance decides alone; from there on the
 * shared counter does, for the rest of the window, with the count before
 * each alert as its seed. */
static void test_half_the_limit(void **state)
{
	struct rate_state r = {0};
	uint32_t seed = 99;

	(void)state;
	assert_int_equal(count_n(&r, 7, MAX / 2, false), MAX / 2);
	assert_false(r.shared);
	assert_false(rate_count(&r, 7, MAX, false, &seed));
	assert_int_equal(seed, MAX / 2);
	assert_true(r.shared);
	assert_false(rate_count(&r, 7, MAX, false, &seed));
	assert_int_equal(seed, MAX / 2 + 1);
	assert_int_equal(r.count, MAX / 2 + 2);

	/* A new window starts from nothing. */
	assert_true(rate_count(&r, 8, MAX, false, &seed));
	assert_int_equal(seed, 0);
	assert_false(r.shared);
	assert_int_equal(r.window, 8);
}

/* With a limit of 1 (half of it is 0) every alert is the shared counter's. */
static void test_limit_of_one(void **state)
{
	struct rate_state r = {0};
	uint32_t seed;

	(void)state;
	assert_false(rate_count(&r, 1, 1, false, &seed));
	assert_int_equal(seed, 0);
	assert_false(rate_count(&r, 1, 1, false, &seed));
	assert_int_equal(seed, 1);
}

/* While alerts wait for the user, new ones must not overtake them. */
static void test_held_goes_shared(void **state)
{
	struct rate_state r = {0};
	uint32_t seed;

	(void)state;
	assert_false(rate_count(&r, 3, MAX, true, &seed));
	assert_true(r.shared);
	/* ... and stays so for the window even once nothing is held. */
	assert_false(rate_count(&r, 3, MAX, false, &seed));
	assert_int_equal(seed, 1);
}

/* A joining instance starts from the count Redis had, never lowers its
 * own, and ignores a count of a window that is already over. */
static void test_seed(void **state)
{
	struct rate_state r = {0};

	(void)state;
	rate_seed(&r, 5, 3);
	assert_int_equal(r.window, 5);
	assert_int_equal(r.count, 3);
	assert_int_equal(count_n(&r, 5, 10, false), MAX / 2 - 3);
	assert_int_equal(r.count, 13);
	rate_seed(&r, 5, 1);
	assert_int_equal(r.count, 13);
	rate_seed(&r, 4, 50);
	assert_int_equal(r.window, 5);
	assert_int_equal(r.count, 13);
	assert_true(r.shared);
	/* A newer window's count replaces everything. */
	rate_seed(&r, 6, 2);
	assert_int_equal(r.window, 6);
	assert_int_equal(r.count, 2);
	assert_false(r.shared);
	/* A count at or above half the limit goes straight to the shared counter. */
	rate_seed(&r, 6, MAX / 2);
	assert_int_equal(count_n(&r, 6, 1, false), 0);
}

/* Held alerts released at a window's start put the whole window in the
 * shared counter's hands, keeping what was counted in it already. */
static void test_share(void **state)
{
	struct rate_state r = {0};

	(void)state;
	assert_int_equal(count_n(&r, 2, 2, false), 2);
	rate_share(&r, 2);
	assert_true(r.shared);
	assert_int_equal(r.count, 2);
	rate_share(&r, 3);
	assert_int_equal(r.window, 3);
	assert_int_equal(r.count, 0);
	assert_true(r.shared);
	assert_int_equal(count_n(&r, 3, 1, false), 0);
}

/* Leaving: only a count the shared counter does not have, of this window. */
static void test_leave(void **state)
{
	struct rate_state r = {0};

	(void)state;
	assert_int_equal(rate_unshared_count(&r, 9), 0);
	count_n(&r, 9, 3, false);
	assert_int_equal(rate_unshared_count(&r, 9), 3);
	assert_int_equal(rate_unshared_count(&r, 10), 0);
	count_n(&r, 9, MAX, false);
	assert_true(r.shared);
	assert_int_equal(rate_unshared_count(&r, 9), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_window),	 cmocka_unit_test(test_half_the_limit),
	    cmocka_unit_test(test_limit_of_one), cmocka_unit_test(test_held_goes_shared),
	    cmocka_unit_test(test_seed),	 cmocka_unit_test(test_share),
	    cmocka_unit_test(test_leave),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
