/* Unit tests for the request-framing rules (hdrcheck.c) lws 4.1.6 leaves to
 * us: strict Content-Length, Transfer-Encoding with Content-Length, and
 * framing headers whose names carry blanks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "stockalert/hdrcheck.h"

/* The unknown header names lws would have stored, NULL-terminated. */
static bool has_name(void *arg, const char *name, size_t len)
{
	for (const char *const *n = arg; *n; n++)
		if (strlen(*n) == len && memcmp(*n, name, len) == 0)
			return true;
	return false;
}

static enum hdrcheck_result check(const char *cl, const char *te, const char *const *unknown,
				  long long *clen)
{
	static const char *const none[] = {NULL};
	struct hdrcheck_src src = {
	    .content_length = cl,
	    .transfer_encoding = te,
	    .has_unknown = has_name,
	    .arg = (void *)(unknown ? unknown : none),
	};
	const char *why = NULL;
	enum hdrcheck_result r = hdrcheck_framing(&src, clen, &why);
	assert_non_null(why);
	if (r != HDRCHECK_OK)
		assert_true(why[0] != '\0');
	return r;
}

static void test_content_length_digits_only(void **state)
{
	long long n = 7;
	(void)state;
	assert_int_equal(hdrcheck_content_length("46", &n), 0);
	assert_int_equal(n, 46);
	assert_int_equal(hdrcheck_content_length("0", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(hdrcheck_content_length("000000000000000012", &n), 0);
	assert_int_equal(n, 12);
	static const char *const bad[] = {
	    "",
	    "+46",
	    "-1",
	    " 46",
	    "46 ",
	    "4 6",
	    "0x2e",
	    "46,46",
	    "5,6",
	    "1e3",
	    "\x7f",
	    "4\t",
	    "1234567890123456789", /* 19 digits */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		n = 7;
		assert_int_equal(hdrcheck_content_length(bad[i], &n), -1);
		assert_int_equal(n, 7);
	}
}

static void test_framing_plain(void **state)
{
	long long n;
	(void)state;
	assert_int_equal(check(NULL, NULL, NULL, &n), HDRCHECK_OK);
	assert_int_equal(n, -1);
	assert_int_equal(check("5", NULL, NULL, &n), HDRCHECK_OK);
	assert_int_equal(n, 5);
	/* Unknown headers that are not framing headers are not our business. */
	static const char *const other[] = {
	    "x-trace:", "sec-fetch-mode:", "transfer-encodings:", "content-lengthy:", NULL};
	assert_int_equal(check("5", NULL, other, &n), HDRCHECK_OK);
}

/* The probe's finding: "Content-Length: +46" served as 46; two lengths
 * (lws joins them with ','); an empty one. */
static void test_framing_bad_length(void **state)
{
	long long n;
	(void)state;
	assert_int_equal(check("+46", NULL, NULL, &n), HDRCHECK_BAD);
	assert_int_equal(n, -1);
	assert_int_equal(check("5,5", NULL, NULL, &n), HDRCHECK_BAD);
	assert_int_equal(check("", NULL, NULL, &n), HDRCHECK_BAD);
}

static void test_framing_transfer_encoding(void **state)
{
	long long n;
	(void)state;
	assert_int_equal(check(NULL, "chunked", NULL, &n), HDRCHECK_CHUNKED);
	assert_int_equal(check("5", "chunked", NULL, &n), HDRCHECK_BAD);
	assert_int_equal(check("5", "identity", NULL, &n), HDRCHECK_BAD);
	/* "Transfer-Encoding:\r\n chunked" (obs-fold) leaves it empty. */
	assert_int_equal(check(NULL, "", NULL, &n), HDRCHECK_BAD);
}

/* The probe's finding: "Transfer-Encoding : chunked" next to a
 * Content-Length, which lws stores as an unknown header; and the same with
 * tabs, more blanks, or blanks in front (an obs-fold continuation). */
static void test_framing_disguised(void **state)
{
	long long n;
	(void)state;
	static const char *const names[] = {
	    "transfer-encoding :", "transfer-encoding\t:", "transfer-encoding \t :",
	    " transfer-encoding:", "\ttransfer-encoding:", "  transfer-encoding\t\t\t:",
	    "content-length :",	   " content-length:",	   "\t content-length \t:",
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		const char *const one[] = {"x-other:", names[i], NULL};
		assert_int_equal(check("5", NULL, one, &n), HDRCHECK_BAD);
		assert_int_equal(check(NULL, NULL, one, &n), HDRCHECK_BAD);
	}
	/* Past the probed bounds the name is not seen (documented limit). */
	const char *const far[] = {"transfer-encoding    :", "   content-length:", NULL};
	assert_int_equal(check("5", NULL, far, &n), HDRCHECK_OK);
}

/* Every probe is asked at most once per name, and a request without
 * unknown headers costs no more than the probes. */
static int probes;
static bool count_probe(void *arg, const char *name, size_t len)
{
	(void)arg;
	(void)name;
	assert_true(len > 0 && name[len - 1] == ':');
	probes++;
	return false;
}

static void test_probe_count(void **state)
{
	(void)state;
	struct hdrcheck_src src = {.content_length = "1", .has_unknown = count_probe};
	long long n;
	const char *why;
	probes = 0;
	assert_int_equal(hdrcheck_framing(&src, &n, &why), HDRCHECK_OK);
	/* (1 + 2 + 4) leads x (1 + 2 + 4 + 8) trails, less the bare name, for
	 * each of the two names. */
	assert_int_equal(probes, 2 * (7 * 15 - 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_content_length_digits_only),
	    cmocka_unit_test(test_framing_plain),
	    cmocka_unit_test(test_framing_bad_length),
	    cmocka_unit_test(test_framing_transfer_encoding),
	    cmocka_unit_test(test_framing_disguised),
	    cmocka_unit_test(test_probe_count),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
