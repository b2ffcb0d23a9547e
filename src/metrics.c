#include "stockalert/metrics.h"

#include <string.h>
#include <time.h>

#include "stockalert/version.h"

struct metric_desc {
	const char *name;
	const char *help;
};

static const struct metric_desc counter_desc[METRICS_COUNTER_COUNT] = {
    [METRICS_WS_CONNECTIONS_OPENED] = {"stockalert_ws_connections_opened_total",
				       "WebSocket connections accepted."},
    [METRICS_WS_CONNECTIONS_CLOSED] = {"stockalert_ws_connections_closed_total",
				       "WebSocket connections closed, for any reason."},
    [METRICS_WS_UPGRADES_REFUSED] = {"stockalert_ws_upgrades_refused_total",
				     "WebSocket upgrades refused (auth, origin, limits)."},
    [METRICS_EVENTS_RECEIVED] = {"stockalert_events_received_total", "Inventory events received."},
    [METRICS_EVENTS_MALFORMED] = {"stockalert_events_malformed_total",
				  "Inventory events skipped as malformed."},
    [METRICS_EVENTS_DUPLICATE] = {"stockalert_events_duplicate_total",
				  "Inventory events skipped as already processed."},
    [METRICS_ALERTS_DELIVERED] = {"stockalert_alerts_delivered_total",
				  "Alert frames queued to sockets."},
    [METRICS_ALERTS_DELAYED] = {"stockalert_alerts_delayed_total",
				"Alerts held back by the per-user rate limit."},
    [METRICS_ALERTS_COALESCED] = {"stockalert_alerts_coalesced_total",
				  "Held-back alerts replaced by a newer one for the same product."},
    [METRICS_ALERTS_RATE_SHARED] =
	{"stockalert_alerts_rate_shared_total",
	 "Alerts the shared per-user counter in Redis decided on (users at "
	 "half the limit or more, or with alerts held)."},
    [METRICS_FAIR_WAVES] = {"stockalert_fair_waves_total",
			    "Fair-release waves run by this instance (first waves included)."},
    [METRICS_FAIR_RELEASED] = {"stockalert_fair_users_released_total",
			       "Subscribers released by the fair-release waves this instance ran."},
    [METRICS_FAIR_STOPPED] = {"stockalert_fair_cycles_stopped_total",
			      "Fair-release cycles stopped because the product sold out."},
    [METRICS_CONNECTIONS_REFUSED_ADDRESS] =
	{"stockalert_connections_refused_per_address_total",
	 "Connections answered 503 at accept: their address held "
	 "listen.max_connections_per_address already."},
};

static const struct metric_desc gauge_desc[METRICS_GAUGE_COUNT] = {
    [METRICS_WS_CONNECTIONS] = {"stockalert_ws_connections", "Open WebSocket connections."},
    [METRICS_STREAM_LAG] = {"stockalert_stream_lag",
			    "Durable input entries not yet read by the group (-1 unknown)."},
    [METRICS_STREAM_PENDING] = {"stockalert_stream_pending",
				"Durable input entries read but not yet acknowledged."},
    [METRICS_STREAM_DEAD] = {"stockalert_stream_dead_letters",
			     "Entries in the dead-letter stream."},
};

static const char *const dep_names[METRICS_DEP_COUNT] = {
    [METRICS_DEP_REDIS] = "redis",
    [METRICS_DEP_REDIS_PUBSUB] = "redis_pubsub",
    [METRICS_DEP_REDIS_STREAM] = "redis_stream",
    [METRICS_DEP_MYSQL] = "mysql",
};

enum { STATUS_MIN = 100, STATUS_MAX = 599 };

/* The close codes the daemon sends (SPEC §5), each with a slot. */
static const int ws_close_codes[] = {1000, 1001, 1008, 1009, 1011, 4001, 4008, 4029};
#define WS_CLOSE_SLOTS (sizeof ws_close_codes / sizeof ws_close_codes[0])

static struct {
	uint64_t counters[METRICS_COUNTER_COUNT];
	int64_t gauges[METRICS_GAUGE_COUNT];
	uint64_t http[STATUS_MAX - STATUS_MIN + 1];
	uint64_t ws_close[WS_CLOSE_SLOTS];
	int dep_up[METRICS_DEP_COUNT];
	uint64_t dep_reconnects[METRICS_DEP_COUNT];
	time_t started;
} m;

void metrics_init(void)
{
	memset(&m, 0, sizeof m);
	m.started = time(NULL);
}

void metrics_inc(enum metrics_counter c)
{
	m.counters[c]++;
}

void metrics_add(enum metrics_counter c, uint64_t n)
{
	m.counters[c] += n;
}

void metrics_gauge_set(enum metrics_gauge g, int64_t v)
{
	m.gauges[g] = v;
}

void metrics_gauge_add(enum metrics_gauge g, int64_t delta)
{
	m.gauges[g] += delta;
}

void metrics_http_response(int status)
{
	if (status >= STATUS_MIN && status <= STATUS_MAX)
		m.http[status - STATUS_MIN]++;
}

void metrics_ws_close(int code)
{
	for (size_t i = 0; i < WS_CLOSE_SLOTS; i++)
		if (ws_close_codes[i] == code)
			m.ws_close[i]++;
}

void metrics_dep_up(enum metrics_dep d, int up)
{
	m.dep_up[d] = up ? 1 : 0;
}

void metrics_dep_reconnect(enum metrics_dep d)
{
	m.dep_reconnects[d]++;
}

const char *metrics_dep_name(enum metrics_dep d)
{
	return dep_names[d];
}

static void header(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_render(struct buf *out)
{
	header(out, "stockalert_build_info", "gauge", "Build information; always 1.");
	buf_printf(out, "stockalert_build_info{version=\"%s\"} 1\n", STOCKALERT_VERSION);
	header(out, "stockalert_start_time_seconds", "gauge", "Unix time the daemon started.");
	buf_printf(out, "stockalert_start_time_seconds %lld\n", (long long)m.started);

	for (int i = 0; i < METRICS_COUNTER_COUNT; i++) {
		header(out, counter_desc[i].name, "counter", counter_desc[i].help);
		buf_printf(out, "%s %llu\n", counter_desc[i].name,
			   (unsigned long long)m.counters[i]);
	}
	for (int i = 0; i < METRICS_GAUGE_COUNT; i++) {
		header(out, gauge_desc[i].name, "gauge", gauge_desc[i].help);
		buf_printf(out, "%s %lld\n", gauge_desc[i].name, (long long)m.gauges[i]);
	}

	header(out, "stockalert_http_responses_total", "counter", "HTTP responses by status code.");
	for (int s = STATUS_MIN; s <= STATUS_MAX; s++)
		if (m.http[s - STATUS_MIN])
			buf_printf(out, "stockalert_http_responses_total{code=\"%d\"} %llu\n", s,
				   (unsigned long long)m.http[s - STATUS_MIN]);

	header(out, "stockalert_ws_closes_total", "counter",
	       "WebSocket closes the server initiated, by close code.");
	for (size_t i = 0; i < WS_CLOSE_SLOTS; i++)
		buf_printf(out, "stockalert_ws_closes_total{code=\"%d\"} %llu\n", ws_close_codes[i],
			   (unsigned long long)m.ws_close[i]);

	header(out, "stockalert_dependency_up", "gauge",
	       "1 while the connection to a dependency is ready.");
	for (int d = 0; d < METRICS_DEP_COUNT; d++)
		buf_printf(out, "stockalert_dependency_up{dep=\"%s\"} %d\n", dep_names[d],
			   m.dep_up[d]);
	header(out, "stockalert_dependency_reconnects_total", "counter",
	       "Times a lost dependency connection was re-established.");
	for (int d = 0; d < METRICS_DEP_COUNT; d++)
		buf_printf(out, "stockalert_dependency_reconnects_total{dep=\"%s\"} %llu\n",
			   dep_names[d], (unsigned long long)m.dep_reconnects[d]);
}
