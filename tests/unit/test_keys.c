/* The Redis key layout: the names other programs (producers, operators'
 * scripts, older instances sharing the prefix) rely on, built exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "stockalert/keys.h"

#define P "stockalert:"

static void test_layout(void **state)
{
	(void)state;
	char k[256];
	static const struct {
		const char *name, *want;
	} fixed[] = {
	    {KEYS_INDEX_READY, P "index:ready"},
	    {KEYS_INVENTORY, P "inventory"},
	    {KEYS_INVENTORY_STREAM, P "inventory:stream"},
	    {KEYS_INVENTORY_DEAD, P "inventory:dead"},
	    {KEYS_SUBS_CHANGES, P "subs:changes"},
	    {KEYS_ALERTS, P "alerts"},
	    {KEYS_ALERTS_START, P "alerts:start"},
	    {KEYS_ALERTS_INDEX, P "alerts:index"},
	    {KEYS_RATE_SYNC, P "rate:sync"},
	    {KEYS_FAIR_WAVES, P "fair:waves"},
	};
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		assert_int_equal(keys_name(k, sizeof k, P, fixed[i].name), 0);
		assert_string_equal(k, fixed[i].want);
	}
	keys_user_subs(k, sizeof k, P, "u-1");
	assert_string_equal(k, P "user:u-1:subs");
	keys_product_subs(k, sizeof k, P, 9007199254740991LL);
	assert_string_equal(k, P "product:9007199254740991:subs");
	keys_sub(k, sizeof k, P, "u-1", 42);
	assert_string_equal(k, P "sub:u-1:42");
	keys_sub_of(k, sizeof k, P, "u-1");
	assert_string_equal(k, P "sub:u-1:");
	keys_product_thr(k, sizeof k, P, 42);
	assert_string_equal(k, P "product:42:thr");
	keys_online(k, sizeof k, P, "u-1");
	assert_string_equal(k, P "online:u-1");
	keys_event(k, sizeof k, P, "order-7");
	assert_string_equal(k, P "event:order-7");
	keys_event_instances(k, sizeof k, P, "order-7");
	assert_string_equal(k, P "event:order-7:i");
	keys_stock(k, sizeof k, P, 42);
	assert_string_equal(k, P "stock:42");
	keys_rate(k, sizeof k, P, "u-1", 28333333);
	assert_string_equal(k, P "rate:u-1:28333333");
	/* An empty prefix is allowed (redis.prefix ""). */
	keys_sub(k, sizeof k, "", "u", 1);
	assert_string_equal(k, "sub:u:1");
}

static void test_too_long_is_said(void **state)
{
	(void)state;
	char k[16];
	memset(k, 'x', sizeof k);
	assert_int_equal(keys_user_subs(k, sizeof k, P, "someone-long"), -1);
	assert_non_null(memchr(k, '\0', sizeof k));
	assert_int_equal(keys_stock(k, sizeof k, "p:", 1), 0);
	assert_string_equal(k, "p:stock:1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layout),
	    cmocka_unit_test(test_too_long_is_said),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
