#include "stockalert/metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
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
    [METRICS_CATALOG_EVICTIONS] = {"stockalert_catalog_evictions_total",
				   "Products dropped from the catalog cache to keep it within "
				   "catalog.max_entries."},
    [METRICS_SUBS_CHANGES_REFUSED] = {"stockalert_subscription_changes_refused_total",
				      "Subscription changes refused because the socket or the user "
				      "had too many under way."},
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
    [METRICS_CATALOG_ENTRIES] = {"stockalert_catalog_entries",
				 "Products in the catalog cache (at most catalog.max_entries, "
				 "plus those being looked up)."},
    [METRICS_WS_MAX_CONNECTIONS] = {"stockalert_ws_max_connections",
				    "Configured ws.max_connections: upgrades over it are refused."},
};

/*
 * Latency buckets, in seconds: a loopback Redis round trip or a fan-out to a
 * few sockets takes 50-500 us, a MySQL query or a busy fan-out milliseconds,
 * and past 10 s it is an outage, not a latency.
 */
static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					0.05,	0.1,	 0.25,	 0.5,	1,	2.5,   5,    10};
/* Alerts per resume replay: most resumes carry a handful; the history of
 * a busy user runs to thousands. */
static const double replay_bounds[] = {0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};

#define NBOUNDS(a) ((unsigned)(sizeof(a) / sizeof((a)[0])))

static const char *const origin_names[METRICS_ORIGIN_COUNT] = {
    [METRICS_ORIGIN_TS] = "ts",
    [METRICS_ORIGIN_RECEIPT] = "receipt",
};

static const char *const route_names[METRICS_ROUTE_COUNT] = {
    [METRICS_ROUTE_NONE] = "none",
    [METRICS_ROUTE_HEALTHZ] = "healthz",
    [METRICS_ROUTE_READYZ] = "readyz",
    [METRICS_ROUTE_METRICS] = "metrics",
    [METRICS_ROUTE_PRODUCT] = "product",
    [METRICS_ROUTE_SUBSCRIPTIONS] = "subscriptions",
    [METRICS_ROUTE_SUBSCRIPTION] = "subscription",
    [METRICS_ROUTE_ALERTS] = "alerts",
    [METRICS_ROUTE_EVENTS] = "events",
};

static const char *const dep_names[METRICS_DEP_COUNT] = {
    [METRICS_DEP_REDIS] = "redis",
    [METRICS_DEP_REDIS_PUBSUB] = "redis_pubsub",
    [METRICS_DEP_REDIS_STREAM] = "redis_stream",
    [METRICS_DEP_MYSQL] = "mysql",
};

#define SERIES_MAX METRICS_ROUTE_COUNT
_Static_assert((int)SERIES_MAX >= (int)METRICS_DEP_COUNT &&
		   (int)SERIES_MAX >= (int)METRICS_ORIGIN_COUNT,
	       "a histogram has more series than SERIES_MAX");

static const struct hist_desc {
	const char *name;
	const char *help;
	const double *bounds;
	unsigned nbounds;
	const char *label;	   /* NULL: one series, no label */
	const char *const *values; /* the label's values */
	unsigned nvalues;
} hist_desc[METRICS_HISTOGRAM_COUNT] = {
    [METRICS_H_EVENT_TO_SOCKET] = {"stockalert_event_to_socket_seconds",
				   "From an inventory event (its ts, or its receipt when it had "
				   "none) to its alert frame handed to the kernel, per socket.",
				   latency_bounds, NBOUNDS(latency_bounds), "origin", origin_names,
				   METRICS_ORIGIN_COUNT},
    [METRICS_H_EVENT_PROCESS] = {"stockalert_event_processing_seconds",
				 "From an inventory event's receipt to its outcome recorded in "
				 "Redis (product lookup and processing script included).",
				 latency_bounds, NBOUNDS(latency_bounds), NULL, NULL, 1},
    [METRICS_H_DEP_COMMAND] = {"stockalert_dependency_command_seconds",
			       "Command round trips to Redis and MySQL (redis_stream includes "
			       "XREADGROUP's block of up to 1 s).",
			       latency_bounds, NBOUNDS(latency_bounds), "dep", dep_names,
			       METRICS_DEP_COUNT},
    [METRICS_H_HTTP_REQUEST] = {"stockalert_http_request_seconds",
				"HTTP API requests, from the request to its response queued, "
				"by route name.",
				latency_bounds, NBOUNDS(latency_bounds), "route", route_names,
				METRICS_ROUTE_COUNT},
    [METRICS_H_REPLAY_ALERTS] = {"stockalert_ws_replay_alerts",
				 "Alerts carried by each resume (?since=) replay.", replay_bounds,
				 NBOUNDS(replay_bounds), NULL, NULL, 1},
};

enum { STATUS_MIN = 100, STATUS_MAX = 599 };

/* The close codes the daemon sends (README.md, Close codes), each with a slot. */
static const int ws_close_codes[] = {1000, 1001, 1008, 1009, 1011, 4001, 4008, 4029};
#define WS_CLOSE_SLOTS (sizeof ws_close_codes / sizeof ws_close_codes[0])

static struct {
	uint64_t counters[METRICS_COUNTER_COUNT];
	int64_t gauges[METRICS_GAUGE_COUNT];
	uint64_t http[STATUS_MAX - STATUS_MIN + 1];
	uint64_t ws_close[WS_CLOSE_SLOTS];
	int dep_up[METRICS_DEP_COUNT];
	uint64_t dep_reconnects[METRICS_DEP_COUNT];
	struct metrics_hist hist[METRICS_HISTOGRAM_COUNT][SERIES_MAX];
	time_t started;
	uint64_t reloads[2]; /* failed, ok */
	time_t last_good_load;
} m;

void metrics_init(void)
{
	memset(&m, 0, sizeof m);
	m.started = time(NULL);
	m.last_good_load = m.started;
	for (int h = 0; h < METRICS_HISTOGRAM_COUNT; h++)
		for (unsigned v = 0; v < hist_desc[h].nvalues; v++)
			metrics_hist_init(&m.hist[h][v], hist_desc[h].bounds, hist_desc[h].nbounds);
}

void metrics_config_reload(int ok)
{
	m.reloads[ok ? 1 : 0]++;
	if (ok)
		m.last_good_load = time(NULL);
}

void metrics_hist_init(struct metrics_hist *h, const double *bounds, unsigned n)
{
	memset(h, 0, sizeof *h);
	h->bounds = bounds;
	h->nbounds = n <= METRICS_HIST_BOUNDS_MAX ? n : METRICS_HIST_BOUNDS_MAX;
}

void metrics_hist_observe(struct metrics_hist *h, double v)
{
	if (isnan(v))
		return;
	/* The first bound >= v; nbounds (+Inf) if none. */
	unsigned lo = 0, hi = h->nbounds;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (h->bounds[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	h->counts[lo]++;
	h->count++;
	h->sum += v;
}

void metrics_hist_render(const struct metrics_hist *h, struct buf *out, const char *name,
			 const char *labels)
{
	const char *sep = *labels ? "," : "";
	uint64_t cum = 0;
	for (unsigned i = 0; i < h->nbounds; i++) {
		cum += h->counts[i];
		buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
			   (unsigned long long)cum);
	}
	cum += h->counts[h->nbounds];
	buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
		   (unsigned long long)cum);
	if (*labels) {
		buf_printf(out, "%s_sum{%s} %.17g\n", name, labels, h->sum);
		buf_printf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
	} else {
		buf_printf(out, "%s_sum %.17g\n", name, h->sum);
		buf_printf(out, "%s_count %llu\n", name, (unsigned long long)h->count);
	}
}

void metrics_observe(enum metrics_histogram h, unsigned label, double v)
{
	if (label < hist_desc[h].nvalues)
		metrics_hist_observe(&m.hist[h][label], v);
}

double metrics_seconds(uint64_t start_ns, uint64_t end_ns)
{
	return end_ns > start_ns ? (double)(end_ns - start_ns) / 1e9 : 0.0;
}

int64_t metrics_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void metrics_alert_written(int64_t origin_us, enum metrics_origin origin)
{
	/* A producer clock ahead of ours would give a negative latency: it
	 * counts as 0, in the lowest bucket, rather than vanish. */
	if ((unsigned)origin >= METRICS_ORIGIN_COUNT)
		return;
	int64_t d = metrics_wall_us() - origin_us;
	metrics_hist_observe(&m.hist[METRICS_H_EVENT_TO_SOCKET][origin],
			     d > 0 ? (double)d / 1e6 : 0.0);
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

int64_t metrics_gauge(enum metrics_gauge g)
{
	return m.gauges[g];
}

int metrics_dep_is_up(enum metrics_dep d)
{
	return m.dep_up[d];
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

static void render_histograms(struct buf *out)
{
	for (int h = 0; h < METRICS_HISTOGRAM_COUNT; h++) {
		const struct hist_desc *d = &hist_desc[h];
		header(out, d->name, "histogram", d->help);
		for (unsigned v = 0; v < d->nvalues; v++) {
			char labels[64] = "";
			if (d->label)
				snprintf(labels, sizeof labels, "%s=\"%s\"", d->label,
					 d->values[v]);
			metrics_hist_render(&m.hist[h][v], out, d->name, labels);
		}
	}
}

/* Prometheus's standard process metrics that the alert rules need: the fd
 * table fills before ws.max_connections when LimitNOFILE is too low. */
static long long count_open_fds(void)
{
	/* Linux 6.2 and later give the count as the directory's size; older
	 * kernels need the scan, which takes ~10 ms at 18,000 sockets. */
	struct stat st;
	if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0)
		return (long long)st.st_size;
	DIR *dir = opendir("/proc/self/fd");
	if (!dir)
		return -1;
	long long n = 0;
	const struct dirent *e;
	while ((e = readdir(dir)))
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n - 1; /* the directory's own fd */
}

static void render_process(struct buf *out)
{
	long long open_fds = count_open_fds();
	struct rlimit rl;
	long long max_fds = -1;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (long long)rl.rlim_cur;
	if (open_fds >= 0) {
		header(out, "process_open_fds", "gauge", "Number of open file descriptors.");
		buf_printf(out, "process_open_fds %lld\n", open_fds);
	}
	if (max_fds >= 0) {
		header(out, "process_max_fds", "gauge",
		       "Maximum number of open file descriptors (soft RLIMIT_NOFILE).");
		buf_printf(out, "process_max_fds %lld\n", max_fds);
	}
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

	header(out, "stockalert_config_reloads_total", "counter",
	       "Configuration reloads (SIGHUP) by outcome; a failed one changed nothing.");
	buf_printf(out, "stockalert_config_reloads_total{result=\"ok\"} %llu\n",
		   (unsigned long long)m.reloads[1]);
	buf_printf(out, "stockalert_config_reloads_total{result=\"failed\"} %llu\n",
		   (unsigned long long)m.reloads[0]);
	header(out, "stockalert_config_last_reload_success_timestamp_seconds", "gauge",
	       "Unix time the configuration last loaded (at start or on SIGHUP).");
	buf_printf(out, "stockalert_config_last_reload_success_timestamp_seconds %lld\n",
		   (long long)m.last_good_load);

	header(out, "stockalert_dependency_up", "gauge",
	       "1 while the connection to a dependency is ready (redis_stream: and Redis "
	       "serves the stream reader).");
	for (int d = 0; d < METRICS_DEP_COUNT; d++)
		buf_printf(out, "stockalert_dependency_up{dep=\"%s\"} %d\n", dep_names[d],
			   m.dep_up[d]);
	header(out, "stockalert_dependency_reconnects_total", "counter",
	       "Times a lost dependency connection was re-established.");
	for (int d = 0; d < METRICS_DEP_COUNT; d++)
		buf_printf(out, "stockalert_dependency_reconnects_total{dep=\"%s\"} %llu\n",
			   dep_names[d], (unsigned long long)m.dep_reconnects[d]);
	render_histograms(out);
	render_process(out);
}
