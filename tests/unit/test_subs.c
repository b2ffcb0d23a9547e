/* The pure parts of subscriptions: the PUT body a client sends, the id in a
 * path, the kinds text MySQL and Redis store, and reading back the
 * subscription hash and the change notice this module writes to Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>

#include <cmocka.h>

#include "stockalert/subs.h"

/* Parses body (a C string); returns the result, fills kinds/threshold/err. */
static int parse(const char *body, unsigned *kinds, int *threshold, char *err, size_t errlen)
{
	err[0] = '\0';
	return subs_parse_body(body, strlen(body), kinds, threshold, err, errlen);
}

/* Asserts body is refused with a message starting with field. */
static void assert_refused(const char *body, const char *field)
{
	unsigned kinds;
	int threshold;
	char err[256];

	if (parse(body, &kinds, &threshold, err, sizeof err) != -1)
		fail_msg("accepted %s", body);
	if (strncmp(err, field, strlen(field)) != 0)
		fail_msg("body %s: message \"%s\" does not start with \"%s\"", body, err, field);
}

static void assert_id_refused(const char *s)
{
	int64_t v = 42;
	if (subs_parse_id(s, strlen(s), &v) != -1)
		fail_msg("id \"%s\" accepted as %lld", s, (long long)v);
	assert_int_equal(v, 42); /* untouched on failure */
}

static void test_empty_body_is_defaults(void **state)
{
	(void)state;
	static const char *const bodies[] = {"", " ", "\r\n", "\t \n"};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		unsigned kinds = 0;
		int threshold = 7;
		char err[64];
		assert_int_equal(parse(bodies[i], &kinds, &threshold, err, sizeof err), 0);
		assert_int_equal(kinds, SUBS_ALL_KINDS);
		assert_int_equal(threshold, -1);
	}
	/* NULL with length 0: a request without a body. */
	unsigned kinds = 0;
	int threshold = 7;
	char err[64];
	assert_int_equal(subs_parse_body(NULL, 0, &kinds, &threshold, err, sizeof err), 0);
	assert_int_equal(kinds, SUBS_ALL_KINDS);
	assert_int_equal(threshold, -1);
}

static void test_empty_object_is_defaults(void **state)
{
	(void)state;
	unsigned kinds = 0;
	int threshold = 7;
	char err[64];
	assert_int_equal(parse("{}", &kinds, &threshold, err, sizeof err), 0);
	assert_int_equal(kinds, SUBS_ALL_KINDS);
	assert_int_equal(threshold, -1);
}

static void test_kinds_and_threshold(void **state)
{
	(void)state;
	unsigned kinds;
	int threshold;
	char err[256];

	assert_int_equal(parse("{\"kinds\":[\"low_stock\"],\"threshold\":3}", &kinds, &threshold,
			       err, sizeof err),
			 0);
	assert_int_equal(kinds, SUBS_LOW_STOCK);
	assert_int_equal(threshold, 3);

	assert_int_equal(parse("{\"threshold\":0, \"kinds\":[\"sold_out\",\"back_in_stock\"]}\n",
			       &kinds, &threshold, err, sizeof err),
			 0);
	assert_int_equal(kinds, SUBS_SOLD_OUT | SUBS_BACK_IN_STOCK);
	assert_int_equal(threshold, 0);

	/* A repeated kind is the same kind, not an error. */
	assert_int_equal(
	    parse("{\"kinds\":[\"sold_out\",\"sold_out\"]}", &kinds, &threshold, err, sizeof err),
	    0);
	assert_int_equal(kinds, SUBS_SOLD_OUT);
	assert_int_equal(threshold, -1);

	/* null threshold: the product's own. */
	assert_int_equal(parse("{\"threshold\":null}", &kinds, &threshold, err, sizeof err), 0);
	assert_int_equal(threshold, -1);
	assert_int_equal(kinds, SUBS_ALL_KINDS);

	assert_int_equal(parse("{\"threshold\":1000000000}", &kinds, &threshold, err, sizeof err),
			 0);
	assert_int_equal(threshold, 1000000000);
}

static void test_bad_kinds_name_the_field(void **state)
{
	(void)state;
	assert_refused("{\"kinds\":[\"restocked\"]}", "kinds[0]");
	assert_refused("{\"kinds\":[\"low_stock\",\"nope\"]}", "kinds[1]");
	assert_refused("{\"kinds\":[\"low_stock\",3]}", "kinds[1]");
	assert_refused("{\"kinds\":[null]}", "kinds[0]");
	assert_refused("{\"kinds\":[\"LOW_STOCK\"]}", "kinds[0]");
	assert_refused("{\"kinds\":[\"\"]}", "kinds[0]");
	assert_refused("{\"kinds\":[]}", "kinds");
	assert_refused("{\"kinds\":\"low_stock\"}", "kinds");
	assert_refused("{\"kinds\":null}", "kinds");
	assert_refused("{\"kinds\":{}}", "kinds");
}

static void test_bad_threshold_names_the_field(void **state)
{
	(void)state;
	assert_refused("{\"threshold\":-1}", "threshold");
	assert_refused("{\"threshold\":1.5}", "threshold");
	assert_refused("{\"threshold\":\"3\"}", "threshold");
	assert_refused("{\"threshold\":true}", "threshold");
	assert_refused("{\"threshold\":1000000001}", "threshold");
	/* Beyond what the JSON parser holds: still the field is named. */
	assert_refused("{\"threshold\":99999999999999999999}", "threshold");
	assert_refused("{\"threshold\":1e400}", "threshold");
	assert_refused("{\"threshold\":[1]}", "threshold");
}

static void test_bad_documents(void **state)
{
	(void)state;
	assert_refused("{", "body: invalid JSON");
	assert_refused("nope", "body: invalid JSON");
	assert_refused("{\"kinds\":[\"low_stock\"]} x", "body: invalid JSON");
	assert_refused("{\"threshold\":1,\"threshold\":2}", "body: invalid JSON");
	assert_refused("[]", "body");
	assert_refused("3", "body");
	assert_refused("\"x\"", "body");
	assert_refused("null", "body");
	assert_refused("{\"colour\":1}", "colour: unknown field");
	assert_refused("{\"kinds\":[\"low_stock\"],\"product_id\":3}", "product_id: unknown field");
}

/* A client-chosen key must not crowd out what is wrong with it: the
 * message still says "unknown field" however long the key is. */
static void test_long_unknown_key_still_explained(void **state)
{
	(void)state;
	char body[1100], err[256];
	unsigned kinds;
	int threshold;
	size_t n = 0;
	body[n++] = '{';
	body[n++] = '"';
	for (int i = 0; i < 1000; i++)
		body[n++] = 'k';
	memcpy(body + n, "\":1}", 5);
	n += 5;
	body[n] = '\0';
	assert_int_equal(parse(body, &kinds, &threshold, err, sizeof err), -1);
	if (!strstr(err, "unknown field"))
		fail_msg("message does not say \"unknown field\": %.80s...", err);
}

static void test_embedded_nul_is_refused(void **state)
{
	(void)state;
	static const char body[] = "{\"threshold\":1}\0{}";
	unsigned kinds;
	int threshold;
	char err[128];
	assert_int_equal(
	    subs_parse_body(body, sizeof body - 1, &kinds, &threshold, err, sizeof err), -1);
	assert_non_null(strstr(err, "body"));
}

static void test_small_error_buffer_is_terminated(void **state)
{
	(void)state;
	unsigned kinds;
	int threshold;
	char err[8];
	memset(err, 'x', sizeof err);
	assert_int_equal(parse("{\"kinds\":[\"zzz\"]}", &kinds, &threshold, err, sizeof err), -1);
	assert_non_null(memchr(err, '\0', sizeof err));
	assert_string_equal(err, "kinds[0");
}

static void test_ids(void **state)
{
	(void)state;
	int64_t v = 0;
	assert_int_equal(subs_parse_id("1", 1, &v), 0);
	assert_int_equal(v, 1);
	/* 2^53-1: the largest id every encoder on the way carries exactly */
	assert_int_equal(subs_parse_id("9007199254740991", 16, &v), 0);
	assert_int_equal(v, SUBS_PRODUCT_ID_MAX);
	assert_int_equal(subs_parse_id("123456789012345", 15, &v), 0);
	assert_int_equal(v, 123456789012345LL);
	assert_int_equal(subs_parse_id("1234567", 7, &v), 0);
	assert_int_equal(v, 1234567);
	/* len, not the terminator, bounds the id */
	assert_int_equal(subs_parse_id("12x", 2, &v), 0);
	assert_int_equal(v, 12);

	assert_id_refused("");
	assert_id_refused("0");
	assert_id_refused("007");
	assert_id_refused("-1");
	assert_id_refused("+1");
	assert_id_refused(" 1");
	assert_id_refused("1 ");
	assert_id_refused("1.0");
	assert_id_refused("1e3");
	assert_id_refused("0x10");
	assert_id_refused("12/");
	assert_id_refused("9007199254740992"); /* 2^53: a double cannot tell it from 2^53+1 */
	assert_id_refused("9999999999999999");
	assert_id_refused("9223372036854775807");
	assert_id_refused("9223372036854775808");
	assert_id_refused("18446744073709551616");
	assert_id_refused("99999999999999999999");
	assert_id_refused("12345678901234567890123");
}

static void test_product_id_bound(void **state)
{
	(void)state;
	assert_true(subs_product_id_valid(1));
	assert_true(subs_product_id_valid(SUBS_PRODUCT_ID_MAX));
	assert_false(subs_product_id_valid(0));
	assert_false(subs_product_id_valid(-1));
	assert_false(subs_product_id_valid(SUBS_PRODUCT_ID_MAX + 1));
	assert_false(subs_product_id_valid(INT64_MAX));
	/* 2^53-1 is the bound because a double holds every integer up to it */
	assert_true((long long)(double)SUBS_PRODUCT_ID_MAX == SUBS_PRODUCT_ID_MAX);
	assert_true((double)(SUBS_PRODUCT_ID_MAX + 1) == (double)(SUBS_PRODUCT_ID_MAX + 2));
	char max[32];
	snprintf(max, sizeof max, " to %lld", SUBS_PRODUCT_ID_MAX);
	assert_non_null(strstr(SUBS_PRODUCT_ID_EXPECTED, max));
}

static void test_kind_names(void **state)
{
	(void)state;
	assert_int_equal(subs_kind_parse("back_in_stock"), SUBS_BACK_IN_STOCK);
	assert_int_equal(subs_kind_parse("low_stock"), SUBS_LOW_STOCK);
	assert_int_equal(subs_kind_parse("sold_out"), SUBS_SOLD_OUT);
	assert_int_equal(subs_kind_parse(""), 0);
	assert_int_equal(subs_kind_parse("sold_out "), 0);
	assert_int_equal(subs_kind_parse("Sold_Out"), 0);
	assert_int_equal(subs_kind_parse("sold"), 0);
	assert_string_equal(subs_kind_name(SUBS_BACK_IN_STOCK), "back_in_stock");
	assert_string_equal(subs_kind_name(SUBS_LOW_STOCK), "low_stock");
	assert_string_equal(subs_kind_name(SUBS_SOLD_OUT), "sold_out");
	assert_string_equal(subs_kind_name(0), "unknown");
	assert_string_equal(subs_kind_name(SUBS_ALL_KINDS), "unknown");
}

static void test_csv_round_trip(void **state)
{
	(void)state;
	char out[64];
	for (unsigned k = 0; k <= SUBS_ALL_KINDS; k++) {
		subs_kinds_to_csv(k, out, sizeof out);
		assert_int_equal(subs_kinds_from_csv(out), k);
	}
	subs_kinds_to_csv(SUBS_ALL_KINDS, out, sizeof out);
	/* the schema's column default: the stored text must match it */
	assert_string_equal(out, "back_in_stock,low_stock,sold_out");
	subs_kinds_to_csv(SUBS_LOW_STOCK | SUBS_SOLD_OUT, out, sizeof out);
	assert_string_equal(out, "low_stock,sold_out");
	subs_kinds_to_csv(0, out, sizeof out);
	assert_string_equal(out, "");
}

static void test_csv_parse_tolerates_junk(void **state)
{
	(void)state;
	assert_int_equal(subs_kinds_from_csv(NULL), 0);
	assert_int_equal(subs_kinds_from_csv(""), 0);
	assert_int_equal(subs_kinds_from_csv(","), 0);
	assert_int_equal(subs_kinds_from_csv("sold_out,"), SUBS_SOLD_OUT);
	assert_int_equal(subs_kinds_from_csv(",,low_stock,,"), SUBS_LOW_STOCK);
	assert_int_equal(subs_kinds_from_csv("bogus,sold_out"), SUBS_SOLD_OUT);
	assert_int_equal(subs_kinds_from_csv("sold_out,sold_out"), SUBS_SOLD_OUT);
	/* a name longer than any kind must not overflow anything */
	char long_name[200];
	memset(long_name, 'a', sizeof long_name - 1);
	long_name[sizeof long_name - 1] = '\0';
	assert_int_equal(subs_kinds_from_csv(long_name), 0);
}

static void test_csv_truncates_safely(void **state)
{
	(void)state;
	char out[16];
	memset(out, 'x', sizeof out);
	subs_kinds_to_csv(SUBS_ALL_KINDS, out, sizeof out);
	assert_non_null(memchr(out, '\0', sizeof out));
	/* whatever survived is still a valid prefix: no kind invented */
	assert_int_equal(subs_kinds_from_csv(out) & ~(unsigned)SUBS_ALL_KINDS, 0);
	char one[1];
	subs_kinds_to_csv(SUBS_ALL_KINDS, one, sizeof one);
	assert_int_equal(one[0], '\0');
}

/* A string element of a hand-built HMGET reply; NULL for a nil field. */
static redisReply field(const char *v)
{
	redisReply r = {.type = v ? REDIS_REPLY_STRING : REDIS_REPLY_NIL};
	if (v) {
		r.str = (char *)(uintptr_t)v;
		r.len = strlen(v);
	}
	return r;
}

/* The reply to an HMGET of kinds, threshold, created, active (src/lua/load.lua). */
static bool hash_parse(const char *kinds, const char *thr, const char *created, const char *active,
		       struct subs_entry *e)
{
	redisReply f[4] = {field(kinds), field(thr), field(created), field(active)};
	redisReply *el[4] = {&f[0], &f[1], &f[2], &f[3]};
	redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 4, .element = el};
	return subs_hash_parse(&arr, e);
}

static void test_hash_read_back(void **state)
{
	(void)state;
	struct subs_entry e = {.product_id = 7};
	assert_true(hash_parse("low_stock,sold_out", "", "1700000000123", "1", &e));
	assert_int_equal(e.product_id, 7); /* not the hash's to say */
	assert_int_equal(e.kinds, SUBS_LOW_STOCK | SUBS_SOLD_OUT);
	assert_int_equal(e.threshold, -1); /* "" = the product's */
	assert_int_equal(e.created_ms, 1700000000123LL);
	assert_true(hash_parse("back_in_stock", "3", "1", "1", &e));
	assert_int_equal(e.kinds, SUBS_BACK_IN_STOCK);
	assert_int_equal(e.threshold, 3);
	/* A tombstone, a missing hash, a reply of another shape: no subscription. */
	assert_false(hash_parse("back_in_stock", "", "1", "0", &e));
	assert_false(hash_parse(NULL, NULL, NULL, NULL, &e));
	redisReply nil = {.type = REDIS_REPLY_NIL};
	assert_false(subs_hash_parse(&nil, &e));
	redisReply f = field("1");
	redisReply *el[1] = {&f};
	redisReply short_arr = {.type = REDIS_REPLY_ARRAY, .elements = 1, .element = el};
	assert_false(subs_hash_parse(&short_arr, &e));
}

static void test_change_notice_read_back(void **state)
{
	(void)state;
	struct subs_change c;
	/* As the apply script writes it: numbers as the decimal text C wrote. */
	const char *on = "{\"user\":\"u-1\",\"product_id\":123456789012345,\"active\":true,"
			 "\"kinds\":\"back_in_stock,low_stock\",\"threshold\":4,\"created\":"
			 "1700000000123}";
	assert_int_equal(subs_change_parse(on, strlen(on), &c), 0);
	assert_string_equal(c.user, "u-1");
	assert_int_equal(c.entry.product_id, 123456789012345LL);
	assert_int_equal(c.entry.kinds, SUBS_BACK_IN_STOCK | SUBS_LOW_STOCK);
	assert_int_equal(c.entry.threshold, 4);
	assert_int_equal(c.entry.created_ms, 1700000000123LL);
	assert_true(c.active);
	subs_change_free(&c);
	const char *off = "{\"user\":\"u-1\",\"product_id\":9,\"active\":false,\"kinds\":\"\","
			  "\"threshold\":null,\"created\":5}";
	assert_int_equal(subs_change_parse(off, strlen(off), &c), 0);
	assert_false(c.active);
	assert_int_equal(c.entry.threshold, -1);
	subs_change_free(&c);
	static const char *const bad[] = {
	    "",
	    "nope",
	    "[]",
	    "{\"product_id\":9}",
	    "{\"user\":\"u\"}",
	    "{\"user\":\"u\",\"product_id\":0}",
	    "{\"user\":\"u\",\"product_id\":\"9\"}",
	    "{\"user\":7,\"product_id\":9}",
	    "{\"user\":\"u\",\"product_id\":9007199254740992}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (subs_change_parse(bad[i], strlen(bad[i]), &c) != -1)
			fail_msg("notice %s accepted", bad[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_body_is_defaults),
	    cmocka_unit_test(test_empty_object_is_defaults),
	    cmocka_unit_test(test_kinds_and_threshold),
	    cmocka_unit_test(test_bad_kinds_name_the_field),
	    cmocka_unit_test(test_bad_threshold_names_the_field),
	    cmocka_unit_test(test_bad_documents),
	    cmocka_unit_test(test_long_unknown_key_still_explained),
	    cmocka_unit_test(test_embedded_nul_is_refused),
	    cmocka_unit_test(test_small_error_buffer_is_terminated),
	    cmocka_unit_test(test_ids),
	    cmocka_unit_test(test_product_id_bound),
	    cmocka_unit_test(test_kind_names),
	    cmocka_unit_test(test_csv_round_trip),
	    cmocka_unit_test(test_csv_parse_tolerates_junk),
	    cmocka_unit_test(test_csv_truncates_safely),
	    cmocka_unit_test(test_hash_read_back),
	    cmocka_unit_test(test_change_notice_read_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
