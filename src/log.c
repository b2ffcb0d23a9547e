#include "stockalert/log.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stockalert/buf.h"

enum log_level log_current_level = LOG_LEVEL_INFO;
static enum log_format current_format = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

int log_format_parse(const char *s)
{
	if (strcmp(s, "text") == 0)
		return LOG_FORMAT_TEXT;
	if (strcmp(s, "json") == 0)
		return LOG_FORMAT_JSON;
	return -1;
}

void log_setup(enum log_level level, enum log_format format)
{
	log_current_level = level;
	current_format = format;
}

/* --- escaping ---------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs,
 * no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

static void put_hex(struct buf *out, unsigned char c, bool json)
{
	static const char hex[] = "0123456789abcdef";
	char esc[5] = {'\\', '\\', 'x', hex[c >> 4], hex[c & 15]};
	/* In JSON the backslash of \xNN is itself escaped. */
	if (json)
		buf_append(out, esc, 5);
	else
		buf_append(out, esc + 1, 4);
}

void log_escape(struct buf *out, const char *s, size_t n, bool json)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0; /* run: bytes at p + i - run still to copy as is */
	while (i < n) {
		unsigned char c = p[i];
		size_t len = 1;
		if (c >= 0x20 && c < 0x7f && c != '\\' && !(json && c == '"')) {
			run++;
			i++;
			continue;
		}
		if (c >= 0x80) {
			len = utf8_seq(p + i, n - i);
			/* Kept as is unless it is a C1 control (0xc2 0x80-0x9f):
			 * some terminals act on those too. */
			if (len > 0 && !(c == 0xc2 && p[i + 1] <= 0x9f)) {
				run += len;
				i += len;
				continue;
			}
		}
		buf_append(out, p + i - run, run);
		run = 0;
		if (c == '\\') {
			buf_append(out, json ? "\\\\\\\\" : "\\\\", json ? 4 : 2);
		} else if (c == '"') {
			buf_append(out, "\\\"", 2);
		} else if (c == '\n' || c == '\r' || c == '\t') {
			char esc[3] = {'\\', '\\', c == '\n' ? 'n' : c == '\r' ? 'r' : 't'};
			buf_append(out, json ? esc : esc + 1, json ? 3 : 2);
		} else if (len == 2) {
			put_hex(out, p[i], json);
			put_hex(out, p[i + 1], json);
		} else {
			put_hex(out, c, json);
			len = 1;
		}
		i += len;
	}
	buf_append(out, p + i - run, run);
}

/* --- output ------------------------------------------------------------------- */

static void (*sink_fn)(const char *line, size_t len, void *arg);
static void *sink_arg;
static int64_t (*clock_fn)(void);

void log_set_sink(void (*sink)(const char *line, size_t len, void *arg), void *arg)
{
	sink_fn = sink;
	sink_arg = arg;
}

void log_set_clock(int64_t (*clock)(void))
{
	clock_fn = clock;
}

static int64_t now_ms(void)
{
	if (clock_fn)
		return clock_fn();
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void emit(enum log_level level, const char *module, const char *msg, size_t msglen)
{
	struct timespec ts;
	struct tm tm;
	char when[40];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);

	/* Build the whole line first: one write(2) per event keeps lines whole
	 * when several processes share the journal. */
	struct buf line;
	buf_init(&line);
	if (current_format == LOG_FORMAT_JSON) {
		buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"", when,
			   level_names[level]);
		log_escape(&line, module, strlen(module), true);
		buf_puts(&line, "\",\"msg\":\"");
		log_escape(&line, msg, msglen, true);
		buf_puts(&line, "\"}\n");
	} else {
		buf_printf(&line, "%s %s %s: ", when, level_names[level], module);
		log_escape(&line, msg, msglen, false);
		buf_puts(&line, "\n");
	}
	if (sink_fn)
		sink_fn(line.data, line.len, sink_arg);
	else
		fwrite(line.data, 1, line.len, stderr);
	buf_free(&line);
}

/* --- rate limit of repeated lines ----------------------------------------------- */

#define SITES	    256 /* call sites tracked; beyond that, lines are not limited */
#define SITE_PROBES 8
#define SWEEP_MS    1000

struct site {
	const void *key;  /* the call site's format string; NULL = free */
	char module[32];  /* a copy: a client's name may be gone by the summary */
	const char *what; /* for the summary: the format string */
	enum log_level level;
	int64_t window_start;
	unsigned lines;	     /* written in this window */
	uint64_t suppressed; /* not written in this window */
};

static struct site sites[SITES];
static int64_t next_sweep;
/* lws lines have no format string of their own: one site per level. */
static const char lws_sites[4];

static void summarize(struct site *st)
{
	char msg[400];
	int n = snprintf(msg, sizeof msg, "%llu similar lines suppressed in %d s: \"%s\"",
			 (unsigned long long)st->suppressed, LOG_WINDOW_MS / 1000, st->what);
	st->suppressed = 0;
	if (n > 0)
		emit(st->level, st->module, msg,
		     (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

/* Ends the windows that are over, writing their summaries (all of them
 * with force). */
static void sweep(int64_t now, bool force)
{
	for (size_t i = 0; i < SITES; i++) {
		struct site *st = &sites[i];
		if (st->key && (force || now - st->window_start >= LOG_WINDOW_MS)) {
			if (st->suppressed)
				summarize(st);
			st->window_start = now;
			st->lines = 0;
		}
	}
	next_sweep = now + SWEEP_MS;
}

/* True when a line from this site may be written now. */
static bool admit(const void *key, enum log_level level, const char *module, const char *what)
{
	int64_t now = now_ms();
	if (now >= next_sweep)
		sweep(now, false);
	size_t h = (size_t)(((uintptr_t)key >> 3) * 0x9e3779b97f4a7c15ull % SITES);
	struct site *st = NULL;
	for (size_t k = 0; k < SITE_PROBES; k++) {
		struct site *c = &sites[(h + k) % SITES];
		if (c->key == key || !c->key) {
			st = c;
			break;
		}
	}
	if (!st)
		return true;
	if (!st->key) {
		*st = (struct site){.key = key, .window_start = now};
	} else if (now - st->window_start >= LOG_WINDOW_MS) {
		if (st->suppressed)
			summarize(st);
		st->window_start = now;
		st->lines = 0;
	}
	snprintf(st->module, sizeof st->module, "%s", module);
	st->what = what;
	st->level = level;
	if (st->lines < LOG_BURST) {
		st->lines++;
		return true;
	}
	st->suppressed++;
	return false;
}

void log_flush(void)
{
	sweep(now_ms(), true);
}

void log_write(enum log_level level, const char *module, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	if (!admit(fmt, level, module, fmt))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
	emit(level, module, msg, len);
}

static void lws_emit(int lws_level, const char *line)
{
	enum log_level level = LOG_LEVEL_DEBUG;
	if (lws_level & LLL_ERR)
		level = LOG_LEVEL_ERROR;
	else if (lws_level & LLL_WARN)
		level = LOG_LEVEL_WARN;
	else if (lws_level & (LLL_NOTICE | LLL_USER))
		level = LOG_LEVEL_INFO;
	if (level > log_current_level)
		return;
	if (!admit(&lws_sites[level], level, "lws", "(libwebsockets)"))
		return;
	size_t len = strlen(line);
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	emit(level, "lws", line, len);
}

void log_route_lws(void)
{
	/* lws notices are chatty start-up lines; keep them for debug. */
	int mask = LLL_ERR | LLL_WARN;
	if (log_current_level >= LOG_LEVEL_DEBUG)
		mask |= LLL_NOTICE | LLL_USER;
	lws_set_log_level(mask, lws_emit);
}

void log_redact_token(const char *token, char *out, size_t outlen)
{
	if (!token) {
		snprintf(out, outlen, "(none)");
		return;
	}
	size_t len = strlen(token);
	snprintf(out, outlen, "%.6s...(%zu chars)", len > 12 ? token : "", len);
}
