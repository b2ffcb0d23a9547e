/* The histogram type behind stockalert_*_seconds: what lands in which
 * bucket, and what Prometheus reads back from the text. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stockalert/buf.h"
#include "stockalert/metrics.h"

static const double bounds[] = {0.001, 0.01, 0.1, 1};

/* The value of the line of text that starts with prefix (-1 if none). */
static double value_of(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = strlen(prefix);
	while (p && *p) {
		if (strncmp(p, prefix, n) == 0)
			return strtod(p + n, NULL);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

static void test_bucket_is_first_bound_at_or_above(void **state)
{
	(void)state;
	struct metrics_hist h;
	metrics_hist_init(&h, bounds, 4);
	metrics_hist_observe(&h, 0);	  /* bucket 0 */
	metrics_hist_observe(&h, 0.001);  /* le is inclusive: bucket 0 */
	metrics_hist_observe(&h, 0.0011); /* bucket 1 */
	metrics_hist_observe(&h, 0.5);	  /* bucket 3 */
	metrics_hist_observe(&h, 1);	  /* bucket 3 */
	metrics_hist_observe(&h, 7);	  /* +Inf */
	metrics_hist_observe(&h, -1);	  /* below every bound: bucket 0 */
	metrics_hist_observe(&h, NAN);	  /* ignored */
	assert_int_equal(h.counts[0], 3);
	assert_int_equal(h.counts[1], 1);
	assert_int_equal(h.counts[2], 0);
	assert_int_equal(h.counts[3], 2);
	assert_int_equal(h.counts[4], 1);
	assert_int_equal(h.count, 7);
	assert_true(fabs(h.sum - (0.001 + 0.0011 + 0.5 + 1 + 7 - 1)) < 1e-12);
}

static void test_render_is_cumulative(void **state)
{
	(void)state;
	struct metrics_hist h;
	struct buf out;
	metrics_hist_init(&h, bounds, 4);
	for (int i = 0; i < 5; i++)
		metrics_hist_observe(&h, 0.005);
	metrics_hist_observe(&h, 0.25);
	metrics_hist_observe(&h, 30);
	buf_init(&out);
	metrics_hist_render(&h, &out, "x_seconds", "route=\"alerts\"");
	const char *t = out.data;
	assert_true(value_of(t, "x_seconds_bucket{route=\"alerts\",le=\"0.001\"} ") == 0);
	assert_true(value_of(t, "x_seconds_bucket{route=\"alerts\",le=\"0.01\"} ") == 5);
	assert_true(value_of(t, "x_seconds_bucket{route=\"alerts\",le=\"0.1\"} ") == 5);
	assert_true(value_of(t, "x_seconds_bucket{route=\"alerts\",le=\"1\"} ") == 6);
	assert_true(value_of(t, "x_seconds_bucket{route=\"alerts\",le=\"+Inf\"} ") == 7);
	assert_true(value_of(t, "x_seconds_count{route=\"alerts\"} ") == 7);
	assert_true(fabs(value_of(t, "x_seconds_sum{route=\"alerts\"} ") - 30.275) < 1e-9);
	buf_free(&out);

	/* Without labels: no empty braces on _sum and _count. */
	buf_init(&out);
	metrics_hist_render(&h, &out, "y", "");
	assert_true(value_of(out.data, "y_bucket{le=\"+Inf\"} ") == 7);
	assert_true(value_of(out.data, "y_count ") == 7);
	assert_non_null(strstr(out.data, "y_sum 30.27"));
	buf_free(&out);
}

/* The daemon's own histograms: every series is there before any sample (so
 * rules see 0, not absence), with fixed label values. */
static void test_exposition_has_every_series(void **state)
{
	(void)state;
	struct buf out;
	metrics_init();
	metrics_observe(METRICS_H_HTTP_REQUEST, METRICS_ROUTE_PRODUCT, 0.002);
	metrics_observe(METRICS_H_HTTP_REQUEST, METRICS_ROUTE_COUNT, 0.002); /* out of range */
	metrics_observe(METRICS_H_REPLAY_ALERTS, 0, 3);
	metrics_alert_written(metrics_wall_us() - 2000, METRICS_ORIGIN_TS);
	/* A producer clock ahead of ours counts as 0, not as a negative. */
	metrics_alert_written(metrics_wall_us() + 5000000, METRICS_ORIGIN_RECEIPT);
	buf_init(&out);
	metrics_render(&out);
	const char *t = out.data;
	assert_non_null(strstr(t, "# TYPE stockalert_http_request_seconds histogram\n"));
	assert_true(value_of(t, "stockalert_http_request_seconds_count{route=\"product\"} ") == 1);
	assert_true(value_of(t, "stockalert_http_request_seconds_count{route=\"none\"} ") == 0);
	assert_true(value_of(t, "stockalert_ws_replay_alerts_bucket{le=\"2\"} ") == 0);
	assert_true(value_of(t, "stockalert_ws_replay_alerts_bucket{le=\"5\"} ") == 1);
	assert_true(value_of(t, "stockalert_event_to_socket_seconds_bucket{origin=\"ts\","
				"le=\"0.001\"} ") == 0);
	assert_true(value_of(t, "stockalert_event_to_socket_seconds_count{origin=\"ts\"} ") == 1);
	assert_true(value_of(t, "stockalert_event_to_socket_seconds_bucket{origin=\"receipt\","
				"le=\"0.0001\"} ") == 1);
	assert_true(value_of(t, "stockalert_dependency_command_seconds_count{dep=\"mysql\"} ") ==
		    0);
	assert_true(value_of(t, "stockalert_event_processing_seconds_count ") == 0);
	assert_true(value_of(t, "process_open_fds ") > 0);
	assert_true(value_of(t, "process_max_fds ") > 0);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_is_first_bound_at_or_above),
	    cmocka_unit_test(test_render_is_cumulative),
	    cmocka_unit_test(test_exposition_has_every_series),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
