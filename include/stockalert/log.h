#ifndef STOCKALERT_LOG_H
#define STOCKALERT_LOG_H
/*
 * One line per event on stderr, text or JSON. The level is checked before
 * anything is formatted, so disabled debug lines cost a compare.
 */
#include <stdbool.h>
#include <stddef.h>

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
