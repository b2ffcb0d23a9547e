#ifndef STOCKALERT_LOG_H
#define STOCKALERT_LOG_H
/*
 * One line per event on stderr, text or JSON. The level is checked before
 * anything is formatted, so disabled debug lines cost a compare.
 *
 * A line never holds a raw control character: messages carry what clients
 * and producers sent (a payload with "\n2026-... error main: ..." would
 * forge a line, "\x1b[2J" would drive the operator's terminal), so every
 * message is escaped here, in both formats (log_escape).
 *
 * Repeated lines are rate limited per call site (its format string): at
 * most LOG_BURST lines per LOG_WINDOW_MS; the others are counted, and once
 * the window is over one line says how many were suppressed. A flood of
 * bad input costs a few lines, not a full disk.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stockalert/buf.h"

#define LOG_BURST     10
#define LOG_WINDOW_MS 10000

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

extern enum log_level log_current_level;

/* Parses "error"/"warn"/"info"/"debug"; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Parses "text"/"json"; returns -1 if unknown. */
int log_format_parse(const char *s);

void log_setup(enum log_level level, enum log_format format);
/* Routes libwebsockets' own log lines through ours at the matching level. */
void log_route_lws(void);

void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes any pending "N similar lines suppressed" lines now (at exit). */
void log_flush(void);

/*
 * Appends the n bytes of s to out with every byte that could break a line or
 * drive a terminal escaped: backslash as \\, \n \r \t, other C0 controls,
 * DEL, C1 controls (U+0080-U+009F) and bytes that are not UTF-8 as \xNN.
 * With json, the result is also valid inside a JSON string (quotes and the
 * backslashes escaped): a JSON reader decodes it to the text form.
 */
void log_escape(struct buf *out, const char *s, size_t n, bool json);

/* For tests: lines go to sink instead of stderr, and the rate limit reads
 * the time (ms, any origin) from clock. NULL restores the default. */
void log_set_sink(void (*sink)(const char *line, size_t len, void *arg), void *arg);
void log_set_clock(int64_t (*clock)(void));

/* Writes into out a form of a bearer token that is safe to log:
 * its first 6 characters, an ellipsis and its length. */
void log_redact_token(const char *token, char *out, size_t outlen);

#define log_at(lvl, mod, ...)                                                                      \
	do {                                                                                       \
		if ((lvl) <= log_current_level)                                                    \
			log_write((lvl), (mod), __VA_ARGS__);                                      \
	} while (0)
#define log_error(mod, ...) log_at(LOG_LEVEL_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_at(LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_at(LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) log_at(LOG_LEVEL_DEBUG, mod, __VA_ARGS__)

#endif
