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
		buf_json_escape(&line, module);
		buf_puts(&line, "\",\"msg\":\"");
		char *copy = strndup(msg, msglen);
		buf_json_escape(&line, copy ? copy : "");
		free(copy);
		buf_puts(&line, "\"}\n");
	} else {
		buf_printf(&line, "%s %s %s: %.*s\n", when, level_names[level], module, (int)msglen,
			   msg);
	}
	fwrite(line.data, 1, line.len, stderr);
	buf_free(&line);
}

void log_write(enum log_level level, const char *module, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
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
