#ifndef STOCKALERT_SERVER_H
#define STOCKALERT_SERVER_H
/*
 * The loop owner. One libuv loop (epoll) runs everything: libwebsockets
 * joins it as a foreign loop with one explicitly created vhost, hiredis is
 * attached through adapters/libuv.h, MySQL runs non-blocking on a uv_poll_t.
 * Signals arrive as uv_signal_t events: SIGTERM/SIGINT stop gracefully within
 * shutdown_grace_s, SIGHUP reloads what can change live (conf/README.md, Signals).
 */
#include <stddef.h>

#include "stockalert/config.h"

/* Process exit codes (conf/README.md, Exit codes). */
enum server_exit { SERVER_EXIT_OK = 0, SERVER_EXIT_CONFIG = 1, SERVER_EXIT_START = 2 };

struct server;

/*
 * Builds the server from cfg (which it takes ownership of) and binds the
 * listening socket. On failure returns NULL with *exit_code set
 * (SERVER_EXIT_CONFIG or SERVER_EXIT_START) and the reason logged.
 * config_path is re-read on SIGHUP.
 */
struct server *server_new(struct config *cfg, const char *config_path, int *exit_code);
/* Runs the loop until a stop signal; returns the exit code. */
int server_run(struct server *s);
void server_free(struct server *s);

#endif
