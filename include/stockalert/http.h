#ifndef STOCKALERT_HTTP_H
#define STOCKALERT_HTTP_H
/*
 * The HTTP side of the lws vhost: routing, request bodies (Content-Length
 * only, at most HTTP_BODY_MAX), JSON error bodies (README.md, HTTP API) and
 * static files.
 *
 * Handlers answer through http_reply*(); a reply may be given later (after
 * a Redis or MySQL round trip) as long as the request is still open.
 */
#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

struct json_t;

#include "stockalert/auth.h"
#include "stockalert/env.h"
#include "stockalert/metrics.h"

#define HTTP_BODY_MAX (64 * 1024)

/*
 * Every answer goes through one write path (static files too, read whole):
 * HEAD is answered wherever GET is, with the GET's headers and no body;
 * /api/ answers carry "Vary: Origin" and, for an Origin in allowed_origins,
 * Access-Control-Allow-Origin (never -Credentials); OPTIONS on an /api/
 * route is the CORS preflight. A request whose framing is in doubt
 * (hdrcheck.h) is answered 400 and the connection closed.
 */

/* Per-request state; lws allocates http_session_size() bytes of it. */
struct http_req;

/*
 * The transport knows no handler: the server hands it the routes and the
 * WebSocket upgrade's decision (env->http), as it hands pub/sub channels to
 * the alert pipeline.
 */
enum http_method {
	HTTP_GET = 1u << LWSHUMETH_GET, /* HEAD too, wherever GET */
	HTTP_POST = 1u << LWSHUMETH_POST,
	HTTP_PUT = 1u << LWSHUMETH_PUT,
	HTTP_DELETE = 1u << LWSHUMETH_DELETE,
};

struct http_route {
	const char *path; /* exact path, or prefix when it ends with '/' */
	unsigned methods; /* enum http_method bits; OPTIONS on /api/ is CORS */
	/* Runs once the body (if any) is in; answers through http_reply*(). */
	void (*fn)(struct http_req *r, struct http_env *env);
	enum metrics_route metric; /* its label in stockalert_http_request_seconds */
};

struct http_routes {
	const struct http_route *routes; /* the first match wins */
	size_t n;
	/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: 0 lets the upgrade proceed, 1
	 * when a refusal has been written, -1 hangs up. NULL refuses every
	 * upgrade (hangs up). */
	int (*confirm_upgrade)(struct lws *wsi, struct http_env *env);
};

size_t http_session_size(void);
/* The lws protocol callback for HTTP (protocols[0] of the vhost). */
int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		  size_t len);

/* Queues a response; body may be NULL. Headers in extra_headers are
 * "name: value\r\n" lines (may be NULL). */
void http_reply(struct http_req *r, int status, const char *content_type, const char *body,
		size_t len, const char *extra_headers);
/* Queues {"error":{"code":code,"message":message}} with status. */
void http_reply_error(struct http_req *r, int status, const char *code, const char *message);
/* Queues a JSON body (compact) with status; takes the reference to j. */
void http_reply_json(struct http_req *r, int status, struct json_t *j);

/* The path (without query), the body received (NUL-terminated), a query
 * argument (returns its length, or -1 if absent). */
const char *http_req_path(const struct http_req *r);
const char *http_req_body(const struct http_req *r, size_t *len);
int http_req_query(struct http_req *r, const char *name, char *out, size_t outlen);
int http_req_method(const struct http_req *r); /* LWSHUMETH_* */

/* The bearer token of the request on wsi: "Authorization: Bearer", and with
 * allow_query also ?token= (browsers cannot set headers on a WebSocket).
 * NULL if none. Points into a buffer of this module, valid until the next
 * call (the loop has one thread). */
const char *http_request_token(struct lws *wsi, bool allow_query);
/* Copies query argument name of the request on wsi into out. Returns its
 * length, -1 if absent, -2 if present but longer than outlen - 1. */
int http_query_arg(struct lws *wsi, const char *name, char *out, size_t outlen);

/* Verifies the request's "Authorization: Bearer" token. On failure replies
 * 401 (with WWW-Authenticate) and returns -1. */
int http_authenticate(struct http_req *r, struct http_env *env, struct auth_claims *claims);

/*
 * A handle on a request for replies that come after a Redis or MySQL round
 * trip: the client may hang up meanwhile, and lws frees the request then.
 * http_async_req() returns the request, or NULL once it is gone. Every
 * begin is paired with one end. A begin arms the request's deadline
 * (http.request_timeout_ms): past it the client is answered 503 and the
 * request counts as gone for the late reply.
 */
struct http_async;
struct http_async *http_async_begin(struct http_req *r);
struct http_req *http_async_req(const struct http_async *a);
void http_async_end(struct http_async *a);
/* Ends a and returns its request, or NULL once the request is gone: the
 * usual first line of a completion callback. */
struct http_req *http_async_finish(struct http_async *a);

#endif
