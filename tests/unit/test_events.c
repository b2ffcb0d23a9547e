/* Unit tests for inventory event parsing, encoding and classification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/events.h"
#include "stockalert/kind.h"
#include "stockalert/mem.h"

static char err[256];

static int parse(const char *json, bool allow_missing_id, struct inv_event *ev)
{
	err[0] = '\0';
	return events_parse(json, strlen(json), allow_missing_id, ev, err, sizeof err);
}

/* Asserts that json is refused and that the reason starts with field. */
static void refused(const char *json, const char *field)
{
	struct inv_event ev;
	char prefix[64];

	if (parse(json, false, &ev) == 0)
		fail_msg("accepted: %s", json);
	snprintf(prefix, sizeof prefix, "%s:", field);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("%s: error \"%s\" does not name %s", json, err, field);
}

static void test_minimal(void **state)
{
	struct inv_event ev;

	(void)state;
	assert_int_equal(parse("{\"event_id\":\"e-1\",\"product_id\":42,\"stock\":7}", false, &ev),
			 0);
	assert_string_equal(ev.event_id, "e-1");
	assert_int_equal(ev.product_id, 42);
	assert_int_equal(ev.stock, 7);
	assert_false(ev.has_prev);
	assert_false(ev.has_ts);
}

static void test_full(void **state)
{
	struct inv_event ev;

	(void)state;
	assert_int_equal(parse("{\"event_id\":\"A.b:c_d-9\",\"product_id\":9007199254740991,"
			       "\"stock\":-1000000000,\"prev_stock\":1000000000,"
			       "\"ts\":32503680000000,\"extra\":{\"x\":[1,2.5,null]}}",
			       false, &ev),
			 0);
	assert_string_equal(ev.event_id, "A.b:c_d-9");
	assert_int_equal(ev.product_id, 9007199254740991LL);
	assert_int_equal(ev.stock, -1000000000LL);
	assert_true(ev.has_prev);
	assert_int_equal(ev.prev_stock, 1000000000LL);
	assert_true(ev.has_ts);
	assert_int_equal(ev.ts_ms, 32503680000000LL);

	/* null means "not given" for the optional fields. */
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":0,"
			       "\"prev_stock\":null,\"ts\":null}",
			       false, &ev),
			 0);
	assert_false(ev.has_prev);
	assert_false(ev.has_ts);
	assert_int_equal(ev.stock, 0);

	/* ts 0 and prev_stock 0 are values, not absence. */
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":0,"
			       "\"prev_stock\":0,\"ts\":0}",
			       false, &ev),
			 0);
	assert_true(ev.has_prev);
	assert_true(ev.has_ts);
}

static void test_event_id(void **state)
{
	struct inv_event ev;
	char json[512];
	char id[EVENTS_ID_MAX + 2];

	(void)state;
	memset(id, 'x', EVENTS_ID_MAX);
	id[EVENTS_ID_MAX] = '\0';
	snprintf(json, sizeof json, "{\"event_id\":\"%s\",\"product_id\":1,\"stock\":1}", id);
	assert_int_equal(parse(json, false, &ev), 0);
	assert_int_equal(strlen(ev.event_id), EVENTS_ID_MAX);

	id[EVENTS_ID_MAX] = 'x';
	id[EVENTS_ID_MAX + 1] = '\0';
	snprintf(json, sizeof json, "{\"event_id\":\"%s\",\"product_id\":1,\"stock\":1}", id);
	refused(json, "event_id");

	refused("{\"event_id\":\"\",\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":\"a b\",\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":\"a/b\",\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":\"\\u00e9\",\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":\"a\\nb\",\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":5,\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":null,\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":true,\"product_id\":1,\"stock\":1}", "event_id");
	refused("{\"event_id\":[\"a\"],\"product_id\":1,\"stock\":1}", "event_id");
}

static void test_missing_id(void **state)
{
	struct inv_event ev;

	(void)state;
	refused("{\"product_id\":1,\"stock\":1}", "event_id");
	assert_int_equal(parse("{\"product_id\":3,\"stock\":1}", true, &ev), 0);
	assert_string_equal(ev.event_id, "");
	assert_int_equal(ev.product_id, 3);
	/* Allowing a missing id does not allow a bad one. */
	assert_int_equal(parse("{\"event_id\":\"\",\"product_id\":1,\"stock\":1}", true, &ev), -1);
	assert_non_null(strstr(err, "event_id"));
	assert_int_equal(parse("{\"event_id\":\"ok\",\"product_id\":1,\"stock\":1}", true, &ev), 0);
	assert_string_equal(ev.event_id, "ok");
}

static void test_product_id(void **state)
{
	struct inv_event ev;

	(void)state;
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1}", false, &ev), 0);
	refused("{\"event_id\":\"e\",\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":0,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":-1,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":9007199254740992,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":1.0,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":1e3,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":\"1\",\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":true,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":null,\"stock\":1}", "product_id");
	refused("{\"event_id\":\"e\",\"product_id\":{},\"stock\":1}", "product_id");
	/* The message tells the producer the range. */
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":0,\"stock\":1}", false, &ev),
			 -1);
	assert_string_equal(err, "product_id: expected an integer between 1 and 9007199254740991");
}

static void test_stock(void **state)
{
	struct inv_event ev;

	(void)state;
	refused("{\"event_id\":\"e\",\"product_id\":1}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1000000001}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":-1000000001}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":2.5}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":\"5\"}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":false}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":null}", "stock");
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1.5}", false, &ev),
			 -1);
	assert_string_equal(err, "stock: expected an integer between -1000000000 and 1000000000");
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":-0}", false, &ev),
			 0);
	assert_int_equal(ev.stock, 0);
}

static void test_prev_stock_and_ts(void **state)
{
	(void)state;
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"prev_stock\":1000000001}",
		"prev_stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"prev_stock\":-1000000001}",
		"prev_stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"prev_stock\":3.0}",
		"prev_stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"prev_stock\":\"3\"}",
		"prev_stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"prev_stock\":true}",
		"prev_stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"ts\":-1}", "ts");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"ts\":32503680000001}", "ts");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"ts\":1.7e12}", "ts");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"ts\":\"1700000000000\"}", "ts");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"ts\":[]}", "ts");
}

static void test_not_an_object(void **state)
{
	struct inv_event ev;

	(void)state;
	assert_int_equal(parse("", false, &ev), -1);
	assert_true(err[0] != '\0');
	assert_int_equal(parse("[1,2]", false, &ev), -1);
	assert_true(err[0] != '\0');
	assert_int_equal(parse("\"x\"", false, &ev), -1);
	assert_int_equal(parse("42", false, &ev), -1);
	assert_int_equal(parse("{", false, &ev), -1);
	assert_non_null(strstr(err, "invalid JSON"));
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1} x", false, &ev),
			 -1);
	assert_int_equal(parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1}{}", false, &ev),
			 -1);
}

static void test_duplicates_refused(void **state)
{
	struct inv_event ev;

	(void)state;
	/* Two instances must never read different values from the same bytes. */
	assert_int_equal(
	    parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"stock\":0}", false, &ev), -1);
	assert_non_null(strstr(err, "invalid JSON"));
	assert_int_equal(parse("{\"event_id\":\"e\",\"event_id\":\"f\",\"product_id\":1,"
			       "\"stock\":1}",
			       false, &ev),
			 -1);
	/* Even in a field we ignore. */
	assert_int_equal(
	    parse("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"x\":1,\"x\":2}", false, &ev),
	    -1);
}

static void test_nul_bytes(void **state)
{
	static const char good[] = "{\"event_id\":\"e\",\"product_id\":1,\"stock\":1}";
	char buf[128];
	struct inv_event ev;

	(void)state;
	/* len is authoritative: a NUL after a valid object is trailing junk. */
	memcpy(buf, good, sizeof good);
	assert_int_equal(events_parse(buf, sizeof good, false, &ev, err, sizeof err), -1);
	/* ...and a NUL inside it breaks it, rather than ending the input early. */
	memcpy(buf, good, sizeof good);
	buf[15] = '\0';
	assert_int_equal(events_parse(buf, sizeof good - 1, false, &ev, err, sizeof err), -1);
	/* A NUL escaped inside a string is no id character either. */
	assert_int_equal(
	    parse("{\"event_id\":\"a\\u0000b\",\"product_id\":1,\"stock\":1}", false, &ev), -1);
	/* Not reading past len: the same bytes with a shorter len are cut off. */
	assert_int_equal(events_parse(good, sizeof good - 2, false, &ev, err, sizeof err), -1);
	assert_int_equal(events_parse(good, sizeof good - 1, false, &ev, err, sizeof err), 0);
}

static void test_huge_numbers(void **state)
{
	(void)state;
	/* Past int64: jansson refuses it at parse time rather than wrapping;
	 * the message still names the field. */
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":99999999999999999999999}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":18446744073709551617,\"stock\":1}",
		"product_id");
	refused("{\"event_id\":\"e\",\"product_id\":9223372036854775807,\"stock\":1}",
		"product_id");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":-9223372036854775808}", "stock");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"ts\":9223372036854775807}",
		"ts");
	refused("{\"event_id\":\"e\",\"product_id\":1,\"stock\":1e400}", "stock");
}

static void test_size_limit(void **state)
{
	size_t n = 64 * 1024 + 1;
	char *big = mem_alloc(n + 1);
	static const char head[] = "{\"event_id\":\"e\",\"product_id\":1,\"stock\":1,\"pad\":\"";
	struct inv_event ev;

	(void)state;
	/* A valid event padded to exactly 64 KiB passes; one byte more does not. */
	memset(big, 'a', n);
	memcpy(big, head, sizeof head - 1);
	big[n - 3] = '"';
	big[n - 2] = '}';
	big[n - 1] = ' ';
	big[n] = '\0';
	assert_int_equal(events_parse(big, n - 1, false, &ev, err, sizeof err), 0);
	assert_int_equal(events_parse(big, n, false, &ev, err, sizeof err), -1);
	assert_true(err[0] != '\0');
	mem_free(big);
}

static void assert_same_event(const struct inv_event *a, const struct inv_event *b)
{
	assert_string_equal(a->event_id, b->event_id);
	assert_int_equal(a->product_id, b->product_id);
	assert_int_equal(a->stock, b->stock);
	assert_int_equal(a->has_prev, b->has_prev);
	if (a->has_prev)
		assert_int_equal(a->prev_stock, b->prev_stock);
	assert_int_equal(a->has_ts, b->has_ts);
	if (a->has_ts)
		assert_int_equal(a->ts_ms, b->ts_ms);
}

static void test_encode_roundtrip(void **state)
{
	struct inv_event ev = {0}, back;
	char *s;

	(void)state;
	strcpy(ev.event_id, "shop-1:evt.42");
	ev.product_id = SUBS_PRODUCT_ID_MAX;
	ev.stock = -EVENTS_STOCK_LIMIT;
	s = events_encode(&ev);
	assert_non_null(s);
	assert_string_equal(s, "{\"event_id\":\"shop-1:evt.42\",\"product_id\":9007199254740991,"
			       "\"stock\":-1000000000}");
	assert_int_equal(events_parse(s, strlen(s), false, &back, err, sizeof err), 0);
	assert_same_event(&ev, &back);
	mem_free(s);

	ev.has_prev = true;
	ev.prev_stock = 0;
	ev.has_ts = true;
	ev.ts_ms = 1700000000123LL;
	s = events_encode(&ev);
	assert_non_null(s);
	assert_non_null(strstr(s, "\"prev_stock\":0"));
	assert_non_null(strstr(s, "\"ts\":1700000000123"));
	assert_null(strchr(s, ' '));
	assert_int_equal(events_parse(s, strlen(s), false, &back, err, sizeof err), 0);
	assert_same_event(&ev, &back);
	mem_free(s);

	/* An id-less event leaves the field out, so it parses back the same way. */
	memset(ev.event_id, 0, sizeof ev.event_id);
	s = events_encode(&ev);
	assert_null(strstr(s, "event_id"));
	assert_int_equal(events_parse(s, strlen(s), true, &back, err, sizeof err), 0);
	assert_same_event(&ev, &back);
	assert_int_equal(events_parse(s, strlen(s), false, &back, err, sizeof err), -1);
	mem_free(s);
}

static void test_classify_table(void **state)
{
	static const struct {
		int64_t prev, stock, thr;
		unsigned want;
	} t[] = {
	    {0, 5, 5, SUBS_BACK_IN_STOCK},
	    {5, 0, 5, SUBS_SOLD_OUT},
	    {10, 3, 5, SUBS_LOW_STOCK},
	    {3, 2, 5, 0}, /* already low */
	    {5, 7, 5, 0},
	    {6, 5, 5, SUBS_LOW_STOCK},
	    {5, 4, 5, 0},
	    {-3, 2, 5, SUBS_BACK_IN_STOCK},
	    {2, -1, 5, SUBS_SOLD_OUT},
	    {10, 1, 0, 0}, /* threshold 0: low_stock never fires */
	    {1, 0, 0, SUBS_SOLD_OUT},
	    {0, 0, 5, 0},
	    {-1, 0, 5, 0},
	    {0, -4, 5, 0},
	    {7, 7, 5, 0},
	    {3, 3, 5, 0},
	    {0, 1, 5, SUBS_BACK_IN_STOCK}, /* back in stock beats low stock */
	    {1, 0, 5, SUBS_SOLD_OUT},
	    {6, 1, 5, SUBS_LOW_STOCK},
	    {2, 1, 1, SUBS_LOW_STOCK},
	    {1, 1, 1, 0},
	    {5, 2, -1, 0},
	    {-EVENTS_STOCK_LIMIT, EVENTS_STOCK_LIMIT, 5, SUBS_BACK_IN_STOCK},
	    {EVENTS_STOCK_LIMIT, -EVENTS_STOCK_LIMIT, 5, SUBS_SOLD_OUT},
	    {EVENTS_STOCK_LIMIT, 1, EVENTS_STOCK_LIMIT - 1, SUBS_LOW_STOCK},
	    {INT64_MAX, 1, INT64_MAX - 1, SUBS_LOW_STOCK},
	    {INT64_MIN, INT64_MAX, INT64_MAX, SUBS_BACK_IN_STOCK},
	};

	(void)state;
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		unsigned got = events_classify(t[i].prev, t[i].stock, t[i].thr);

		if (got != t[i].want)
			fail_msg("classify(%lld -> %lld, thr %lld) = %u, want %u",
				 (long long)t[i].prev, (long long)t[i].stock, (long long)t[i].thr,
				 got, t[i].want);
	}
}

/*
 * The reference reads the rules as states: "in stock" (> 0), "low" (in
 * stock and <= threshold). An alert is a state entered, not a level seen.
 */
static unsigned reference_classify(int64_t prev, int64_t stock, int64_t thr)
{
	bool was_in = prev >= 1, is_in = stock >= 1;
	bool was_low = was_in && !(prev > thr), is_low = is_in && !(stock > thr);

	if (was_in != is_in)
		return is_in ? SUBS_BACK_IN_STOCK : SUBS_SOLD_OUT;
	if (is_in && !was_low && is_low)
		return SUBS_LOW_STOCK;
	return 0;
}

static int64_t pick(unsigned *seed)
{
	/* Mostly small values around the edges, sometimes anything in range. */
	if (rand_r(seed) % 8 == 0)
		return (int64_t)(rand_r(seed) % 2000000001) - 1000000000;
	return (int64_t)(rand_r(seed) % 21) - 5;
}

static void test_classify_property(void **state)
{
	unsigned seed = 20240601;

	(void)state;
	for (int i = 0; i < 200000; i++) {
		int64_t prev = pick(&seed), stock = pick(&seed), thr = pick(&seed);
		unsigned got = events_classify(prev, stock, thr);

		if (got != reference_classify(prev, stock, thr))
			fail_msg("classify(%lld -> %lld, thr %lld) = %u, reference %u",
				 (long long)prev, (long long)stock, (long long)thr, got,
				 reference_classify(prev, stock, thr));
		/* At most one kind, and always one of the three. */
		assert_true(got == 0 || got == SUBS_BACK_IN_STOCK || got == SUBS_LOW_STOCK ||
			    got == SUBS_SOLD_OUT);
	}
}

/* The key form of ids: the record of one id ("event:" + form) and the
 * delivered-by set of another ("event:" + form + ":i") never share a name. */
static void test_id_key(void **state)
{
	(void)state;
	char k[EVENTS_ID_KEY_MAX + 1];
	events_id_key("order-7", k, sizeof k);
	assert_string_equal(k, "order-7");
	events_id_key("order-7:i", k, sizeof k);
	assert_string_equal(k, "{order-7:i}");
	events_id_key("a:i:i", k, sizeof k);
	assert_string_equal(k, "{a:i:i}");
	events_id_key(":i", k, sizeof k);
	assert_string_equal(k, "{:i}");
	events_id_key("i", k, sizeof k);
	assert_string_equal(k, "i");
	events_id_key("x:I", k, sizeof k);
	assert_string_equal(k, "x:I");
	events_id_key("x:ii", k, sizeof k);
	assert_string_equal(k, "x:ii");

	/* Exhaustively over short ids of the characters that matter: no
	 * record key equals any set key, and the form is one-to-one. */
	static const char alphabet[] = "a:i{}";
	char ids[400][8], rec[400][EVENTS_ID_KEY_MAX + 16], set[400][EVENTS_ID_KEY_MAX + 16];
	size_t n = 0;
	for (size_t len = 1; len <= 3; len++) {
		size_t total = 1;
		for (size_t d = 0; d < len; d++)
			total *= 3; /* ids never hold braces: only "a:i" */
		for (size_t x = 0; x < total; x++) {
			size_t v = x;
			for (size_t d = 0; d < len; d++, v /= 3)
				ids[n][d] = alphabet[v % 3];
			ids[n][len] = '\0';
			events_id_key(ids[n], k, sizeof k);
			snprintf(rec[n], sizeof rec[n], "event:%s", k);
			snprintf(set[n], sizeof set[n], "event:%s:i", k);
			n++;
		}
	}
	for (size_t a = 0; a < n; a++)
		for (size_t b = 0; b < n; b++) {
			if (strcmp(rec[a], set[b]) == 0)
				fail_msg("%s of \"%s\" is the set of \"%s\"", rec[a], ids[a],
					 ids[b]);
			if (a != b && strcmp(rec[a], rec[b]) == 0)
				fail_msg("\"%s\" and \"%s\" share %s", ids[a], ids[b], rec[a]);
		}

	/* The longest id fits. */
	char longest[EVENTS_ID_MAX + 1];
	memset(longest, 'x', EVENTS_ID_MAX);
	memcpy(longest + EVENTS_ID_MAX - 2, ":i", 2);
	longest[EVENTS_ID_MAX] = '\0';
	events_id_key(longest, k, sizeof k);
	assert_int_equal(strlen(k), EVENTS_ID_KEY_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_minimal),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_event_id),
	    cmocka_unit_test(test_missing_id),
	    cmocka_unit_test(test_product_id),
	    cmocka_unit_test(test_stock),
	    cmocka_unit_test(test_prev_stock_and_ts),
	    cmocka_unit_test(test_not_an_object),
	    cmocka_unit_test(test_duplicates_refused),
	    cmocka_unit_test(test_nul_bytes),
	    cmocka_unit_test(test_huge_numbers),
	    cmocka_unit_test(test_size_limit),
	    cmocka_unit_test(test_encode_roundtrip),
	    cmocka_unit_test(test_classify_table),
	    cmocka_unit_test(test_classify_property),
	    cmocka_unit_test(test_id_key),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
