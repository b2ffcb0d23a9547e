#ifndef STOCKALERT_ENV_H
#define STOCKALERT_ENV_H
/*
 * The service table: every module's handle, for the HTTP and WebSocket
 * handlers and the alert pipeline. Owned and filled by the server (the
 * composition root), it outlives every request and socket; a handler
 * reaches it from a wsi through lws_context_user(). Its own header so that
 * a module can hold it without depending on the transport (http.h) or on
 * another handler module.
 */
#include <stdbool.h>

struct alerts;
struct auth;
struct config;
struct http_routes;
struct hub;
struct lws_context;
struct lws_protocols;
struct peers;
struct presence;
struct redis;
struct store;
struct stream;
struct subs;

struct http_env {
	const struct config *cfg;
	struct redis *redis;	  /* command connection */
	struct redis *pubsub;	  /* subscriber connection */
	struct redis *streamconn; /* durable input reader (XREADGROUP blocks) */
	struct stream *stream;	  /* durable input */
	struct store *store;
	struct auth *auth;
	char *static_root; /* realpath of cfg->static_dir, NULL if missing */
	struct lws_context *lws;
	struct hub *hub; /* local sockets by user */
	struct presence *presence;
	struct subs *subs;     /* subscription writes and index */
	struct alerts *alerts; /* the alert pipeline */
	struct peers *peers;   /* connections per address */
	const struct lws_protocols *ws_protocol;
	const struct http_routes *http; /* what the HTTP transport serves */
	bool shutting_down;		/* refuse new sockets */
	void (*drained)(void *arg);	/* see ws_shutdown() */
	void *drained_arg;
};

#endif
