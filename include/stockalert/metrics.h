#ifndef STOCKALERT_METRICS_H
#define STOCKALERT_METRICS_H
/*
 * Process-wide counters and gauges, rendered as Prometheus text (version
 * 0.0.4). Everything runs on the loop thread, so plain integers suffice.
 */
#include <stdint.h>

#include "stockalert/buf.h"

enum metrics_dep {
	METRICS_DEP_REDIS,
	METRICS_DEP_REDIS_PUBSUB,
	METRICS_DEP_REDIS_STREAM,
	METRICS_DEP_MYSQL,
	METRICS_DEP_COUNT
};

enum metrics_counter {
	METRICS_WS_CONNECTIONS_OPENED,
	METRICS_WS_CONNECTIONS_CLOSED,
	METRICS_WS_UPGRADES_REFUSED,
	METRICS_EVENTS_RECEIVED,
	METRICS_EVENTS_MALFORMED,
	METRICS_EVENTS_DUPLICATE,
	METRICS_ALERTS_DELIVERED,
	METRICS_ALERTS_DELAYED,
	METRICS_ALERTS_COALESCED,
	METRICS_ALERTS_RATE_SHARED,
	METRICS_FAIR_WAVES,
	METRICS_FAIR_RELEASED,
	METRICS_FAIR_STOPPED,
	METRICS_CONNECTIONS_REFUSED_ADDRESS,
	METRICS_COUNTER_COUNT
};

enum metrics_gauge {
	METRICS_WS_CONNECTIONS,
	METRICS_STREAM_LAG,
	METRICS_STREAM_PENDING,
	METRICS_STREAM_DEAD,
	METRICS_GAUGE_COUNT
};

void metrics_init(void);
void metrics_inc(enum metrics_counter c);
void metrics_add(enum metrics_counter c, uint64_t n);
void metrics_gauge_set(enum metrics_gauge g, int64_t v);
void metrics_gauge_add(enum metrics_gauge g, int64_t delta);
/* Counts one HTTP response with its status code (100..599). */
void metrics_http_response(int status);
/* Counts a close the server initiated, by its close code (1000..4999). */
void metrics_ws_close(int code);
void metrics_dep_up(enum metrics_dep d, int up);
void metrics_dep_reconnect(enum metrics_dep d);
const char *metrics_dep_name(enum metrics_dep d);

/* Appends the whole exposition to out. */
void metrics_render(struct buf *out);

#endif
