#ifndef STOCKALERT_WS_H
#define STOCKALERT_WS_H
/*
 * The WebSocket endpoint /ws (README.md, WebSocket protocol): authentication before the upgrade
 * completes, one session per socket registered in the hub, client frames,
 * heartbeat, token expiry and the write side of the hub's queues.
 *
 * lws routes WebSockets by subprotocol, not path: the ws protocol is the
 * vhost's "default" one, and the path is checked here in
 * ws_confirm_upgrade(), called from the HTTP protocol's
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE.
 */
#include <libwebsockets.h>
#include <stddef.h>
#include <uv.h>

#include "stockalert/env.h"

/* Starts (and stops) what the sessions share on the loop: the token-expiry
 * timer. */
void ws_init(struct http_env *env, uv_loop_t *loop);
void ws_fini(void);

size_t ws_session_size(void);
int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		size_t len);

/* Decides an upgrade request: returns 0 to let it proceed, 1 when a refusal
 * (401/403/404/503) has been written, -1 to hang up. */
int ws_confirm_upgrade(struct lws *wsi, struct http_env *env);

/* Hub callbacks: wire them into hub_new(). */
extern const struct hub_sink_ops ws_sink_ops;

/* Starts closing every socket with 1001, a batch at a time (see ws.c), and
 * refuses new ones; drained(arg) runs once no socket is left (at once if
 * there is none). */
void ws_shutdown(struct http_env *env, void (*drained)(void *arg), void *arg);

#endif
