/* Unit tests for log lines: escaping of outside bytes, and the rate limit
 * of repeated lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/buf.h"
#include "stockalert/log.h"

/* --- escaping ---------------------------------------------------------------- */

static char *escaped(const char *s, size_t n, bool json)
{
	struct buf b;
	buf_init(&b);
	log_escape(&b, s, n, json);
	char *out = strdup(b.data ? b.data : "");
	buf_free(&b);
	return out;
}

static void expect_text(const char *in, size_t n, const char *want)
{
	char *got = escaped(in, n, false);
	assert_string_equal(got, want);
	free(got);
}

static void test_escape_text(void **state)
{
	(void)state;
	expect_text("plain text: {\"a\":1}", 19, "plain text: {\"a\":1}");
	/* the forged line of issue 18 stays on its line */
	const char *forged = "junk\n2026-01-01T00:00:00.000Z error main: FORGED LOG LINE";
	expect_text(forged, strlen(forged),
		    "junk\\n2026-01-01T00:00:00.000Z error main: FORGED LOG LINE");
	expect_text("a\r\tb", 4, "a\\r\\tb");
	/* terminal escapes, DEL, NUL */
	expect_text("\x1b[2J\x07", 5, "\\x1b[2J\\x07");
	expect_text("a\x7f", 2, "a\\x7f");
	expect_text("a\0b", 3, "a\\x00b");
	/* a backslash is escaped, so a \n in a log is never ambiguous */
	expect_text("a\\nb", 4, "a\\\\nb");
	/* UTF-8 is kept; C1 controls and broken UTF-8 are not */
	expect_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6", 14,
		    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6");
	expect_text("\302\23331m", 5, "\\xc2\\x9b31m"); /* octal: "\x9b31" is one escape */
	expect_text("\23331m", 4, "\\x9b31m");
	expect_text("\xff\xfe", 2, "\\xff\\xfe");
	expect_text("\xc3", 1, "\\xc3");			    /* truncated */
	expect_text("\xe0\x80\xaf", 3, "\\xe0\\x80\\xaf");	    /* overlong */
	expect_text("\xed\xa0\x80", 3, "\\xed\\xa0\\x80");	    /* surrogate */
	expect_text("\xf4\x90\x80\x80", 4, "\\xf4\\x90\\x80\\x80"); /* > U+10FFFF */
}

/* Every byte string comes out as one line of printable text, and in JSON as
 * a string jansson reads back to the text form. */
static void test_escape_all_bytes(void **state)
{
	(void)state;
	char in[512];
	for (size_t i = 0; i < sizeof in; i++)
		in[i] = (char)(i * 7 % 256);
	char *text = escaped(in, sizeof in, false);
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		assert_true(*p >= 0x20 && *p != 0x7f);
	char *json = escaped(in, sizeof in, true);
	size_t jl = strlen(json);
	char *doc = malloc(jl + 3);
	doc[0] = '"';
	memcpy(doc + 1, json, jl);
	doc[jl + 1] = '"';
	doc[jl + 2] = '\0';
	json_error_t e;
	json_t *v = json_loads(doc, JSON_DECODE_ANY, &e);
	if (!v)
		fail_msg("not JSON: %s", e.text);
	assert_string_equal(json_string_value(v), text);
	json_decref(v);
	free(doc);
	free(json);
	free(text);
}

/* --- rate limit ---------------------------------------------------------------- */

static struct buf lines;
static int nlines;
static int64_t fake_now = 1000000; /* only ever moves forward */

static void sink(const char *line, size_t len, void *arg)
{
	(void)arg;
	buf_append(&lines, line, len);
	nlines++;
}

static int64_t fake_clock(void)
{
	return fake_now;
}

static int setup(void **state)
{
	(void)state;
	buf_init(&lines);
	nlines = 0;
	fake_now += 10 * LOG_WINDOW_MS;
	log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	log_set_sink(sink, NULL);
	log_set_clock(fake_clock);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	log_flush();
	log_set_sink(NULL, NULL);
	log_set_clock(NULL);
	buf_free(&lines);
	return 0;
}

static void flood(int n)
{
	for (int i = 0; i < n; i++)
		log_warn("test", "malformed event %d", i);
}

static void test_suppression(void **state)
{
	(void)state;
	flood(20000);
	/* a burst gets through, the rest is counted */
	assert_int_equal(nlines, LOG_BURST);
	/* another call site is not held back by the first */
	log_info("test", "something else");
	assert_int_equal(nlines, LOG_BURST + 1);

	/* the window ends: the next line of any site says how many went */
	fake_now += LOG_WINDOW_MS;
	log_info("test", "later");
	assert_non_null(strstr(lines.data, "warn test: 19990 similar lines suppressed in 10 s: "
					   "\"malformed event %d\"\n"));
	assert_int_equal(nlines, LOG_BURST + 3);

	/* a new window: a new burst */
	buf_reset(&lines);
	nlines = 0;
	flood(LOG_BURST + 5);
	assert_int_equal(nlines, LOG_BURST);
	assert_non_null(strstr(lines.data, "malformed event 0\n"));
	assert_null(strstr(lines.data, "suppressed"));
	/* at exit, the count still owed is written */
	log_flush();
	assert_int_equal(nlines, LOG_BURST + 1);
	assert_non_null(strstr(lines.data, "5 similar lines suppressed"));
	/* and not twice */
	log_flush();
	assert_int_equal(nlines, LOG_BURST + 1);
}

/* A quiet site is never summarized, and a line under the burst is never
 * held back, however many windows pass. */
static void test_no_suppression_below_burst(void **state)
{
	(void)state;
	for (int w = 0; w < 5; w++) {
		flood(LOG_BURST);
		fake_now += LOG_WINDOW_MS;
	}
	log_flush();
	assert_int_equal(nlines, 5 * LOG_BURST);
	assert_null(strstr(lines.data, "suppressed"));
}

static void test_line_escaped(void **state)
{
	(void)state;
	log_warn("alerts", "malformed event skipped (%s)",
		 "junk\n2026-01-01T00:00:00.000Z error main: FORGED LOG LINE\x1b[2J");
	assert_int_equal(nlines, 1);
	/* one line: the only newline is the last byte */
	assert_ptr_equal(strchr(lines.data, '\n'), lines.data + lines.len - 1);
	assert_non_null(strstr(lines.data, "junk\\n2026-01-01T00:00:00.000Z error main: FORGED LOG "
					   "LINE\\x1b[2J)\n"));
	log_setup(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
	log_warn("alerts", "bytes %s", "\x1b\xff\"");
	log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	const char *second = strchr(lines.data, '\n') + 1;
	json_error_t e;
	json_t *v = json_loads(second, 0, &e);
	if (!v)
		fail_msg("JSON line not JSON: %s", e.text);
	assert_string_equal(json_string_value(json_object_get(v, "msg")), "bytes \\x1b\\xff\"");
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escape_text),
	    cmocka_unit_test(test_escape_all_bytes),
	    cmocka_unit_test_setup_teardown(test_suppression, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_suppression_below_burst, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_line_escaped, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
