/* Unit tests for the timing wheel (src/wheel.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "stockalert/wheel.h"

struct item {
	struct wheel_node node;
	int fired;
	int64_t readd_at; /* re-add from the callback when non-zero */
};

static struct wheel *current;

static void fire(struct wheel_node *n, void *arg)
{
	(void)arg;
	struct item *it = (struct item *)n;
	it->fired++;
	if (it->readd_at) {
		wheel_add(current, n, it->readd_at);
		it->readd_at = 0;
	}
}

static void test_fires_when_due_not_before(void **state)
{
	(void)state;
	struct wheel w;
	struct item a = {0}, b = {0};
	wheel_init(&w, 1000);
	current = &w;
	wheel_add(&w, &a.node, 1005);
	wheel_add(&w, &b.node, 1005 + WHEEL_SLOTS); /* same slot, next lap */
	assert_int_equal(wheel_sweep(&w, 1004, fire, NULL), 0);
	assert_int_equal(wheel_sweep(&w, 1005, fire, NULL), 1);
	assert_int_equal(a.fired, 1);
	assert_int_equal(b.fired, 0);
	assert_true(b.node.linked);
	assert_int_equal(wheel_sweep(&w, 1005 + WHEEL_SLOTS, fire, NULL), 1);
	assert_int_equal(b.fired, 1);
	assert_false(b.node.linked);
}

static void test_del_and_move(void **state)
{
	(void)state;
	struct wheel w;
	struct item a = {0}, b = {0}, c = {0};
	wheel_init(&w, 0);
	current = &w;
	wheel_add(&w, &a.node, 10);
	wheel_add(&w, &b.node, 10);
	wheel_add(&w, &c.node, 10);
	wheel_del(&w, &b.node);
	wheel_del(&w, &b.node);	    /* twice is harmless */
	wheel_add(&w, &c.node, 20); /* moved */
	assert_int_equal(wheel_sweep(&w, 15, fire, NULL), 1);
	assert_int_equal(a.fired, 1);
	assert_int_equal(b.fired, 0);
	assert_int_equal(c.fired, 0);
	assert_int_equal(wheel_sweep(&w, 20, fire, NULL), 1);
	assert_int_equal(c.fired, 1);
}

static void test_past_deadline_fires_next_sweep(void **state)
{
	(void)state;
	struct wheel w;
	struct item a = {0};
	wheel_init(&w, 100);
	current = &w;
	wheel_add(&w, &a.node, 50); /* already past */
	assert_int_equal(wheel_sweep(&w, 101, fire, NULL), 1);
	assert_int_equal(a.fired, 1);
}

static void test_stall_longer_than_a_lap(void **state)
{
	(void)state;
	struct wheel w;
	struct item it[10];
	memset(it, 0, sizeof it);
	wheel_init(&w, 0);
	current = &w;
	for (int i = 0; i < 10; i++)
		wheel_add(&w, &it[i].node, 1 + i * 37);
	/* The loop stalled for 3 laps: everything due fires exactly once. */
	assert_int_equal(wheel_sweep(&w, 3 * WHEEL_SLOTS, fire, NULL), 10);
	for (int i = 0; i < 10; i++)
		assert_int_equal(it[i].fired, 1);
}

static void test_readd_from_callback(void **state)
{
	(void)state;
	struct wheel w;
	struct item a = {0}, b = {0};
	wheel_init(&w, 0);
	current = &w;
	wheel_add(&w, &a.node, 5);
	wheel_add(&w, &b.node, 5);
	a.readd_at = 5 + WHEEL_SLOTS; /* back into the same slot, next lap */
	b.readd_at = 7;
	assert_int_equal(wheel_sweep(&w, 5, fire, NULL), 2);
	assert_int_equal(wheel_sweep(&w, 7, fire, NULL), 1);
	assert_int_equal(b.fired, 2);
	assert_int_equal(a.fired, 1);
	assert_true(a.node.linked);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fires_when_due_not_before),
	    cmocka_unit_test(test_del_and_move),
	    cmocka_unit_test(test_past_deadline_fires_next_sweep),
	    cmocka_unit_test(test_stall_longer_than_a_lap),
	    cmocka_unit_test(test_readd_from_callback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
