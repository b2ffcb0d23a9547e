/* Unit tests for the string-keyed hash table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "stockalert/dict.h"
#include "stockalert/mem.h"

/* Distinct, recognisable value pointers without allocating. */
static char vals[8];

static void test_empty(void **state)
{
	struct dict *d = dict_new();

	(void)state;
	assert_int_equal(dict_size(d), 0);
	assert_null(dict_get(d, "x"));
	assert_null(dict_del(d, "x"));
	assert_null(dict_get(d, ""));
	dict_free(d);
	dict_free(NULL);
}

static void test_set_get_replace_del(void **state)
{
	struct dict *d = dict_new();

	(void)state;
	assert_null(dict_set(d, "alice", &vals[0]));
	assert_null(dict_set(d, "bob", &vals[1]));
	assert_null(dict_set(d, "", &vals[2]));
	assert_int_equal(dict_size(d), 3);
	assert_ptr_equal(dict_get(d, "alice"), &vals[0]);
	assert_ptr_equal(dict_get(d, "bob"), &vals[1]);
	assert_ptr_equal(dict_get(d, ""), &vals[2]);
	assert_null(dict_get(d, "alic"));
	assert_null(dict_get(d, "alicee"));
	assert_null(dict_get(d, "Alice"));

	/* Replace returns the old value and does not add an entry. */
	assert_ptr_equal(dict_set(d, "alice", &vals[3]), &vals[0]);
	assert_int_equal(dict_size(d), 3);
	assert_ptr_equal(dict_get(d, "alice"), &vals[3]);

	/* A NULL value is stored like any other. */
	assert_ptr_equal(dict_set(d, "bob", NULL), &vals[1]);
	assert_null(dict_get(d, "bob"));
	assert_int_equal(dict_size(d), 3);

	assert_ptr_equal(dict_del(d, "alice"), &vals[3]);
	assert_int_equal(dict_size(d), 2);
	assert_null(dict_get(d, "alice"));
	assert_null(dict_del(d, "alice"));
	assert_int_equal(dict_size(d), 2);

	/* Re-insert after delete. */
	assert_null(dict_set(d, "alice", &vals[4]));
	assert_ptr_equal(dict_get(d, "alice"), &vals[4]);
	assert_int_equal(dict_size(d), 3);
	dict_free(d);
}

static void test_key_is_copied(void **state)
{
	struct dict *d = dict_new();
	char key[16];

	(void)state;
	strcpy(key, "user-1");
	dict_set(d, key, &vals[0]);
	strcpy(key, "user-2");
	assert_null(dict_get(d, "user-2"));
	assert_ptr_equal(dict_get(d, "user-1"), &vals[0]);
	dict_set(d, key, &vals[1]);
	memset(key, 0, sizeof key);
	assert_ptr_equal(dict_get(d, "user-1"), &vals[0]);
	assert_ptr_equal(dict_get(d, "user-2"), &vals[1]);
	dict_free(d);
}

#define NKEYS 100000

/* Values are the key's index + 1 so every key maps to a different pointer. */
static void *ival(size_t i)
{
	return (void *)(uintptr_t)(i + 1);
}

static int sum_cb(const char *key, void *value, void *arg)
{
	uint64_t *sum = arg;
	size_t i;

	assert_int_equal(sscanf(key, "key:%zu", &i), 1);
	assert_ptr_equal(value, ival(i));
	*sum += (uint64_t)(uintptr_t)value;
	return 0;
}

static void test_growth_100k(void **state)
{
	struct dict *d = dict_new();
	char key[32];
	uint64_t sum = 0;

	(void)state;
	for (size_t i = 0; i < NKEYS; i++) {
		snprintf(key, sizeof key, "key:%zu", i);
		assert_null(dict_set(d, key, ival(i)));
	}
	assert_int_equal(dict_size(d), NKEYS);
	for (size_t i = 0; i < NKEYS; i++) {
		snprintf(key, sizeof key, "key:%zu", i);
		assert_ptr_equal(dict_get(d, key), ival(i));
	}
	snprintf(key, sizeof key, "key:%d", NKEYS);
	assert_null(dict_get(d, key));

	/* Every entry exactly once: the sum of 1..N. */
	assert_int_equal(dict_each(d, sum_cb, &sum), 0);
	assert_true(sum == (uint64_t)NKEYS * (NKEYS + 1) / 2);

	/* Delete the even half; the odd half survives the churn. */
	for (size_t i = 0; i < NKEYS; i += 2) {
		snprintf(key, sizeof key, "key:%zu", i);
		assert_ptr_equal(dict_del(d, key), ival(i));
	}
	assert_int_equal(dict_size(d), NKEYS / 2);
	for (size_t i = 0; i < NKEYS; i++) {
		snprintf(key, sizeof key, "key:%zu", i);
		if (i % 2)
			assert_ptr_equal(dict_get(d, key), ival(i));
		else
			assert_null(dict_get(d, key));
	}
	/* dict_free releases the remaining keys (checked by LSan). */
	dict_free(d);
}

struct stop_ctx {
	int calls;
	int stop_at;
};

static int stop_cb(const char *key, void *value, void *arg)
{
	struct stop_ctx *ctx = arg;

	(void)key;
	(void)value;
	if (++ctx->calls == ctx->stop_at)
		return 42;
	return 0;
}

static void test_each_early_stop(void **state)
{
	struct dict *d = dict_new();
	struct stop_ctx ctx = {0, 0};
	char key[16];

	(void)state;
	assert_int_equal(dict_each(d, stop_cb, &ctx), 0);
	assert_int_equal(ctx.calls, 0);

	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof key, "k%d", i);
		dict_set(d, key, &vals[0]);
	}
	ctx = (struct stop_ctx){0, 0};
	assert_int_equal(dict_each(d, stop_cb, &ctx), 0);
	assert_int_equal(ctx.calls, 50);

	ctx = (struct stop_ctx){0, 7};
	assert_int_equal(dict_each(d, stop_cb, &ctx), 42);
	assert_int_equal(ctx.calls, 7);

	ctx = (struct stop_ctx){0, 1};
	assert_int_equal(dict_each(d, stop_cb, &ctx), 42);
	assert_int_equal(ctx.calls, 1);
	dict_free(d);
}

/* Keys that differ in a single character, at the start, middle or end:
 * the worst case for a weak hash, and the shape of sequential user ids. */
static void test_one_char_differences(void **state)
{
	static const char alphabet[] =
	    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
	const size_t na = sizeof alphabet - 1;
	struct dict *d = dict_new();
	char key[65];
	size_t n = 0;

	(void)state;
	memset(key, 'u', 64);
	key[64] = '\0';
	for (size_t pos = 0; pos < 64; pos += 9) {
		for (size_t a = 0; a < na; a++) {
			key[pos] = alphabet[a];
			/* 'u' itself recurs at every position: only count new keys. */
			if (!dict_get(d, key)) {
				assert_null(dict_set(d, key, ival(pos * 256 + a)));
				n++;
			}
		}
		key[pos] = 'u';
	}
	assert_int_equal(dict_size(d), n);
	for (size_t pos = 0; pos < 64; pos += 9) {
		for (size_t a = 0; a < na; a++) {
			key[pos] = alphabet[a];
			if (alphabet[a] != 'u')
				assert_ptr_equal(dict_get(d, key), ival(pos * 256 + a));
		}
		key[pos] = 'u';
	}
	/* Prefixes of a stored key are different keys. */
	key[10] = '\0';
	assert_null(dict_get(d, key));
	dict_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty),	    cmocka_unit_test(test_set_get_replace_del),
	    cmocka_unit_test(test_key_is_copied),   cmocka_unit_test(test_growth_100k),
	    cmocka_unit_test(test_each_early_stop), cmocka_unit_test(test_one_char_differences),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
