/* Unit tests for the alert object: ids (client input), frames, history records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "stockalert/alert.h"
#include "stockalert/subs.h"

static void test_id_valid(void **state)
{
	uint64_t order = 0;

	(void)state;
	assert_int_equal(alert_id_parse("1700000000000-3", &order), 0);
	assert_int_equal(order, (1700000000000ull << ALERT_SEQ_BITS) | 3);
	assert_int_equal(alert_order_ms(order), 1700000000000ull);
	assert_int_equal(alert_id_parse("0-0", &order), 0);
	assert_int_equal(order, 0);
	/* The largest of each part still fits. */
	assert_int_equal(alert_id_parse("4398046511103-4194303", &order), 0);
	assert_int_equal(order, UINT64_MAX);
	/* Ordered like the stream ids: by ms, then by seq. */
	uint64_t a, b, c;
	assert_int_equal(alert_id_parse("5-9", &a), 0);
	assert_int_equal(alert_id_parse("5-10", &b), 0);
	assert_int_equal(alert_id_parse("6-0", &c), 0);
	assert_true(a < b && b < c);
}

static void test_id_refused(void **state)
{
	static const char *const bad[] = {
	    "",
	    "-",
	    "1",
	    "1-",
	    "-1",
	    "+1-2",
	    " 1-2",
	    "1 -2",
	    "1- 2",
	    "1-+2",
	    "1--2",
	    "1-2 ",
	    "1-2x",
	    "x1-2",
	    "1-2-3",
	    "0x1-2",
	    "yesterday",
	    "4398046511104-0",		 /* ms >= 2^42 */
	    "1-4194304",		 /* seq >= 2^22 */
	    "99999999999999999999999-1", /* ms overflows */
	    "1-99999999999999999999999", /* seq overflows */
	};
	uint64_t order = 42;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (alert_id_parse(bad[i], &order) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_int_equal(order, 42);
	}
	assert_int_equal(alert_id_parse(NULL, &order), -1);
}

static void test_json(void **state)
{
	json_t *j = alert_json("5-1", SUBS_BACK_IN_STOCK, 7, "Blue mug", 3, 0, "e1", 1234);
	char *text;

	(void)state;
	assert_non_null(j);
	text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"event_id\":\"e1\",\"id\":\"5-1\",\"kind\":\"back_in_stock\","
				  "\"name\":\"Blue mug\",\"prev_stock\":0,\"product_id\":7,"
				  "\"stock\":3,\"ts\":1234,\"type\":\"alert\"}");
	free(text);
	json_decref(j);
	/* No name, no "name" member. */
	j = alert_json("5-2", SUBS_SOLD_OUT, 7, "", 0, 3, "e2", 1);
	assert_null(json_object_get(j, "name"));
	assert_string_equal(json_string_value(json_object_get(j, "kind")), "sold_out");
	json_decref(j);
}

/* A fake XRANGE element: [id, [k1, v1, k2, v2, ...]]. */
struct fake {
	redisReply entry, id, fields;
	redisReply *entry_elems[2];
	redisReply kv[20];
	redisReply *kv_ptrs[20];
};

static void set_str(redisReply *r, const char *s)
{
	memset(r, 0, sizeof *r);
	r->type = REDIS_REPLY_STRING;
	r->str = (char *)s;
	r->len = strlen(s);
}

static const redisReply *fake_entry(struct fake *f, const char *id, const char *const *kv,
				    size_t nkv)
{
	memset(f, 0, sizeof *f);
	set_str(&f->id, id);
	for (size_t i = 0; i < nkv; i++) {
		set_str(&f->kv[i], kv[i]);
		f->kv_ptrs[i] = &f->kv[i];
	}
	f->fields.type = REDIS_REPLY_ARRAY;
	f->fields.elements = nkv;
	f->fields.element = f->kv_ptrs;
	f->entry_elems[0] = &f->id;
	f->entry_elems[1] = &f->fields;
	f->entry.type = REDIS_REPLY_ARRAY;
	f->entry.elements = 2;
	f->entry.element = f->entry_elems;
	return &f->entry;
}

static void test_entry(void **state)
{
	static const char *const kv[] = {
	    "kind", "low_stock", "product_id", "12",	   "stock", "2",  "prev", "9",	  "thr",
	    "5",    "name",	 "Mug",	       "event_id", "ev-1",  "ts", "77",	  "fair", "1"};
	struct fake f;
	struct alert_entry e;

	(void)state;
	assert_true(alert_entry_parse(fake_entry(&f, "10-2", kv, 18), &e));
	assert_string_equal(e.id, "10-2");
	assert_int_equal(e.order, (10ull << ALERT_SEQ_BITS) | 2);
	assert_int_equal(e.kind, SUBS_LOW_STOCK);
	assert_int_equal(e.product_id, 12);
	assert_int_equal(e.stock, 2);
	assert_int_equal(e.prev, 9);
	assert_int_equal(e.thr, 5);
	assert_string_equal(e.name, "Mug");
	assert_string_equal(e.event_id, "ev-1");
	assert_int_equal(e.ts, 77);
	assert_true(e.fair);

	/* Missing fields read as empty / zero; an odd trailing key is ignored. */
	static const char *const few[] = {"kind", "sold_out", "product_id", "3", "name"};
	assert_true(alert_entry_parse(fake_entry(&f, "11-0", few, 5), &e));
	assert_string_equal(e.name, "");
	assert_string_equal(e.event_id, "");
	assert_false(e.fair);

	/* Not alerts: a bad id, an unknown kind, the wrong shape. */
	assert_false(alert_entry_parse(fake_entry(&f, "nope", kv, 18), &e));
	static const char *const odd[] = {"kind", "restocked", "product_id", "3"};
	assert_false(alert_entry_parse(fake_entry(&f, "12-0", odd, 4), &e));
	fake_entry(&f, "13-0", kv, 18);
	f.entry.elements = 1;
	assert_false(alert_entry_parse(&f.entry, &e));
	fake_entry(&f, "13-0", kv, 18);
	f.entry.type = REDIS_REPLY_STRING;
	assert_false(alert_entry_parse(&f.entry, &e));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_valid),
	    cmocka_unit_test(test_id_refused),
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_entry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
