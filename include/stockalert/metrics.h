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
	METRICS_CATALOG_EVICTIONS,
	METRICS_SUBS_CHANGES_REFUSED,
	METRICS_CONNECTIONS_REFUSED_ADDRESS,
	METRICS_COUNTER_COUNT
};

enum metrics_gauge {
	METRICS_WS_CONNECTIONS,
	METRICS_STREAM_LAG,
	METRICS_STREAM_PENDING,
	METRICS_STREAM_DEAD,
	METRICS_CATALOG_ENTRIES,
	METRICS_WS_MAX_CONNECTIONS, /* ws.max_connections, for alerts on headroom */
	METRICS_GAUGE_COUNT
};

/*
 * A Prometheus histogram: fixed bucket upper bounds (ascending, finite; +Inf
 * is implied), per-bucket counts, sum and count. Observing is a binary search
 * over the bounds, no allocation: cheap enough for every alert delivery.
 */
#define METRICS_HIST_BOUNDS_MAX 20

struct metrics_hist {
	const double *bounds; /* nbounds upper bounds, ascending */
	unsigned nbounds;
	uint64_t counts[METRICS_HIST_BOUNDS_MAX + 1]; /* per bucket; last is +Inf */
	uint64_t count;
	double sum;
};

/* n <= METRICS_HIST_BOUNDS_MAX; bounds must outlive h. */
void metrics_hist_init(struct metrics_hist *h, const double *bounds, unsigned n);
/* Counts v in the first bucket whose bound is >= v (NaN is ignored). */
void metrics_hist_observe(struct metrics_hist *h, double v);
/* Appends name_bucket{labels,le=...} (cumulative), name_sum and name_count;
 * labels is `key="value"` or "" for none. */
void metrics_hist_render(const struct metrics_hist *h, struct buf *out, const char *name,
			 const char *labels);

/* The daemon's histograms, each with one fixed set of label values. */
enum metrics_histogram {
	METRICS_H_EVENT_TO_SOCKET, /* label: enum metrics_origin */
	METRICS_H_EVENT_PROCESS,   /* no label (use 0) */
	METRICS_H_DEP_COMMAND,	   /* label: enum metrics_dep */
	METRICS_H_HTTP_REQUEST,	   /* label: enum metrics_route */
	METRICS_H_REPLAY_ALERTS,   /* no label (use 0); alerts, not seconds */
	METRICS_HISTOGRAM_COUNT
};

/* Where an event-to-socket latency starts: the producer's `ts`, or the
 * receipt here when the event had none. */
enum metrics_origin { METRICS_ORIGIN_TS, METRICS_ORIGIN_RECEIPT, METRICS_ORIGIN_COUNT };

/* The HTTP routes, by name (label values never carry a raw path). */
enum metrics_route {
	METRICS_ROUTE_NONE, /* matched no route: 404, or refused before routing */
	METRICS_ROUTE_HEALTHZ,
	METRICS_ROUTE_READYZ,
	METRICS_ROUTE_METRICS,
	METRICS_ROUTE_PRODUCT,
	METRICS_ROUTE_SUBSCRIPTIONS,
	METRICS_ROUTE_SUBSCRIPTION,
	METRICS_ROUTE_ALERTS,
	METRICS_ROUTE_EVENTS,
	METRICS_ROUTE_COUNT
};

void metrics_observe(enum metrics_histogram h, unsigned label, double v);
/* Seconds between two uv_hrtime() readings (0 if end precedes start). */
double metrics_seconds(uint64_t start_ns, uint64_t end_ns);
/* Wall-clock time in microseconds (CLOCK_REALTIME: producers' `ts` is wall
 * time). */
int64_t metrics_wall_us(void);
/* An alert frame of an event that happened at origin_us (wall clock) was
 * handed to the kernel now: one event-to-socket observation. A vDSO clock
 * read, no system call. */
void metrics_alert_written(int64_t origin_us, enum metrics_origin origin);

void metrics_init(void);
void metrics_inc(enum metrics_counter c);
void metrics_add(enum metrics_counter c, uint64_t n);
void metrics_gauge_set(enum metrics_gauge g, int64_t v);
void metrics_gauge_add(enum metrics_gauge g, int64_t delta);
int64_t metrics_gauge(enum metrics_gauge g);
/* 1 while the dependency is up (what stockalert_dependency_up says). */
int metrics_dep_is_up(enum metrics_dep d);
/* Counts one HTTP response with its status code (100..599). */
void metrics_http_response(int status);
/* Counts a close the server initiated, by its close code (1000..4999). */
void metrics_ws_close(int code);
/* Counts a SIGHUP reload by its outcome; a good one (like the load at
 * start) sets stockalert_config_last_reload_success_timestamp_seconds. */
void metrics_config_reload(int ok);
void metrics_dep_up(enum metrics_dep d, int up);
void metrics_dep_reconnect(enum metrics_dep d);
const char *metrics_dep_name(enum metrics_dep d);

/* Appends the whole exposition to out, with process_open_fds and
 * process_max_fds read from /proc/self/fd and RLIMIT_NOFILE. */
void metrics_render(struct buf *out);

#endif
