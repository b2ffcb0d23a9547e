#include "stockalert/http.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "stockalert/api.h"
#include "stockalert/buf.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"
#include "stockalert/peers.h"
#include "stockalert/stream.h"
#include "stockalert/subs.h"
#include "stockalert/ws.h"

#define PATH_MAX_LEN 512
/* Body bytes written per WRITEABLE callback, so one big response cannot hog
 * the loop or a socket buffer. */
#define WRITE_CHUNK  16384

enum method_bit {
	M_GET = 1u << LWSHUMETH_GET,
	M_POST = 1u << LWSHUMETH_POST,
	M_PUT = 1u << LWSHUMETH_PUT,
	M_DELETE = 1u << LWSHUMETH_DELETE,
};

typedef void (*route_fn)(struct http_req *r, struct http_env *env);

struct route {
	const char *path; /* exact path, or prefix when it ends with '/' */
	unsigned methods; /* enum method_bit */
	route_fn fn;
};

struct http_req {
	struct lws *wsi;
	int method;
	char path[PATH_MAX_LEN];
	const struct route *route;
	struct buf body_in;
	/* response */
	int status;
	char content_type[64];
	struct buf extra_headers;
	struct buf body_out;
	size_t sent;
	bool replied;
	bool headers_sent;
	bool awaiting_body;
	/* The client sent a body we will not read: close after replying rather
	 * than parse its body as the next request. */
	bool close_after;
	struct http_async *async; /* outstanding async handle, if any */
};

struct http_async {
	struct http_req *req; /* NULL once the request is gone */
};

struct http_async *http_async_begin(struct http_req *r)
{
	struct http_async *a = mem_calloc(1, sizeof *a);
	if (r->async)
		r->async->req = NULL;
	a->req = r;
	r->async = a;
	return a;
}

struct http_req *http_async_req(const struct http_async *a)
{
	return a->req;
}

void http_async_end(struct http_async *a)
{
	if (a->req && a->req->async == a)
		a->req->async = NULL;
	mem_free(a);
}

struct http_req *http_async_finish(struct http_async *a)
{
	struct http_req *r = a->req;
	http_async_end(a);
	return r;
}

static void async_detach(struct http_req *r)
{
	if (r->async) {
		r->async->req = NULL;
		r->async = NULL;
	}
}

const char *http_req_path(const struct http_req *r)
{
	return r->path;
}

const char *http_req_body(const struct http_req *r, size_t *len)
{
	*len = r->body_in.len;
	return r->body_in.data ? r->body_in.data : "";
}

int http_req_method(const struct http_req *r)
{
	return r->method;
}

/*
 * lws copies each query fragment in turn into the buffer it is given and
 * gives up at the first that does not fit, so the buffer must hold the
 * longest fragment anyone sends (a token), not just the one we want. Tokens
 * over 8 KiB are refused by auth_verify: 9 KiB leaves room to see that one is
 * too long rather than cut it short. One buffer serves headers and query.
 */
static char req_buf[9 * 1024];

int http_query_arg(struct lws *wsi, const char *name, char *out, size_t outlen)
{
	char key[64];
	snprintf(key, sizeof key, "%s=", name);
	const char *v = lws_get_urlarg_by_name(wsi, key, req_buf, sizeof req_buf);
	if (!v)
		return -1;
	size_t n = strlen(v);
	if (n >= outlen)
		return -2;
	memcpy(out, v, n + 1);
	return (int)n;
}

int http_req_query(struct http_req *r, const char *name, char *out, size_t outlen)
{
	int n = http_query_arg(r->wsi, name, out, outlen);
	return n < 0 ? -1 : n;
}

const char *http_request_token(struct lws *wsi, bool allow_query)
{
	int n = lws_hdr_copy(wsi, req_buf, sizeof req_buf, WSI_TOKEN_HTTP_AUTHORIZATION);
	if (n > 7 && strncasecmp(req_buf, "Bearer ", 7) == 0) {
		const char *t = req_buf + 7;
		while (*t == ' ')
			t++;
		return *t ? t : NULL;
	}
	return allow_query ? lws_get_urlarg_by_name(wsi, "token=", req_buf, sizeof req_buf) : NULL;
}

int http_authenticate(struct http_req *r, struct http_env *env, struct auth_claims *claims)
{
	const char *tok = http_request_token(r->wsi, false);
	if (!tok) {
		http_reply_error(r, 401, "unauthorized", "missing bearer token");
		return -1;
	}
	enum auth_result ar = auth_verify(env->auth, tok, strlen(tok), (int64_t)time(NULL), claims);
	if (ar != AUTH_OK) {
		http_reply_error(r, 401, "unauthorized", auth_result_str(ar));
		return -1;
	}
	return 0;
}

static void handle_healthz(struct http_req *r, struct http_env *env);
static void handle_readyz(struct http_req *r, struct http_env *env);
static void handle_metrics(struct http_req *r, struct http_env *env);

static const struct route routes[] = {
    {"/healthz", M_GET, handle_healthz},
    {"/readyz", M_GET, handle_readyz},
    {"/metrics", M_GET, handle_metrics},
    {"/api/products/", M_GET, api_get_product},
    {"/api/me/subscriptions", M_GET, api_list_subscriptions},
    {"/api/me/subscriptions/", M_PUT | M_DELETE, api_subscription},
    {"/api/me/alerts", M_GET, api_list_alerts},
    {"/api/inventory/events", M_POST, api_post_event},
};

size_t http_session_size(void)
{
	return sizeof(struct http_req);
}

static bool route_matches(const struct route *rt, const char *path)
{
	size_t n = strlen(rt->path);
	if (rt->path[n - 1] == '/')
		return strncmp(path, rt->path, n) == 0;
	return strcmp(path, rt->path) == 0;
}

static const struct route *route_find(const char *path)
{
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if (route_matches(&routes[i], path))
			return &routes[i];
	return NULL;
}

static void allow_header(unsigned methods, struct buf *out)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{M_GET, "GET"}, {M_POST, "POST"}, {M_PUT, "PUT"}, {M_DELETE, "DELETE"}};
	buf_puts(out, "allow: ");
	bool first = true;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (!(methods & names[i].bit))
			continue;
		buf_printf(out, "%s%s", first ? "" : ", ", names[i].name);
		first = false;
	}
	buf_puts(out, "\r\n");
}

void http_reply(struct http_req *r, int status, const char *content_type, const char *body,
		size_t len, const char *extra_headers)
{
	if (r->replied)
		return;
	r->replied = true;
	r->status = status;
	snprintf(r->content_type, sizeof r->content_type, "%s", content_type);
	if (extra_headers)
		buf_puts(&r->extra_headers, extra_headers);
	buf_reset(&r->body_out);
	if (body && len)
		buf_append(&r->body_out, body, len);
	metrics_http_response(status);
	lws_callback_on_writable(r->wsi);
}

void http_reply_error(struct http_req *r, int status, const char *code, const char *message)
{
	json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (text)
		http_reply(r, status, "application/json", text, strlen(text), NULL);
	else
		http_reply(r, 500, "text/plain", "internal error\n", 15, NULL);
	free(text);
	json_decref(j);
}

void http_reply_json(struct http_req *r, int status, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);
	if (text) {
		http_reply(r, status, "application/json", text, strlen(text), NULL);
		free(text);
	} else {
		http_reply_error(r, 500, "internal", "could not encode the response");
	}
	json_decref(j);
}

static void handle_healthz(struct http_req *r, struct http_env *env)
{
	(void)env;
	http_reply(r, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
}

static void handle_readyz(struct http_req *r, struct http_env *env)
{
	/* Redis counts as up only when both connections are: without the
	 * subscriber no alert would arrive. */
	bool redis_up = redis_is_ready(env->redis) && redis_is_ready(env->pubsub) &&
			(!env->streamconn || redis_is_ready(env->streamconn));
	bool mysql_up = store_is_ready(env->store);
	json_t *j = json_pack("{s:s,s:s}", "redis", redis_up ? "up" : "down", "mysql",
			      mysql_up ? "up" : "down");
	/* Still ready while the index is rebuilt (subscribing works), but say
	 * so: alerts may miss subscribers until it is done. */
	if (env->subs && subs_rebuilding(env->subs))
		json_object_set_new(j, "index", json_string("rebuilding"));
	/* The durable input's backlog, when it has one: the body keeps SPEC's
	 * exact shape while there is nothing to say. */
	struct stream_stats st = {0};
	if (env->stream)
		stream_stats(env->stream, &st);
	if (st.lag > 0 || st.pending > 0 || st.dead > 0) {
		json_object_set_new(j, "stream",
				    json_pack("{s:I,s:I,s:I}", "lag", (json_int_t)st.lag, "pending",
					      (json_int_t)st.pending, "dead", (json_int_t)st.dead));
	}
	http_reply_json(r, redis_up && mysql_up ? 200 : 503, j);
}

static void handle_metrics(struct http_req *r, struct http_env *env)
{
	(void)env;
	struct buf out;
	buf_init(&out);
	metrics_render(&out);
	http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len, NULL);
	buf_free(&out);
}

/* Serves a file below the static root. Returns the lws callback result. */
static int serve_static(struct http_req *r, struct http_env *env)
{
	char want[PATH_MAX + 1], real[PATH_MAX + 1];
	const char *rel = r->path;
	size_t rootlen;

	if (!env->static_root) {
		http_reply_error(r, 404, "not_found", "no such path");
		return 0;
	}
	rootlen = strlen(env->static_root);
	if (strcmp(rel, "/") == 0)
		rel = "/index.html";
	/* lws has already collapsed "." and ".." segments; realpath() below
	 * is the real guard (symlinks out of the root). */
	if (snprintf(want, sizeof want, "%s%s", env->static_root, rel) >= (int)sizeof want ||
	    !realpath(want, real) || strncmp(real, env->static_root, rootlen) != 0 ||
	    (real[rootlen] != '/' && real[rootlen] != '\0')) {
		http_reply_error(r, 404, "not_found", "no such path");
		return 0;
	}
	struct stat st;
	if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
		http_reply_error(r, 404, "not_found", "no such path");
		return 0;
	}
	const char *mime = lws_get_mimetype(real, NULL);
	if (!mime) {
		size_t n = strlen(real);
		mime = n > 4 && strcmp(real + n - 4, ".mjs") == 0 ? "text/javascript"
								  : "application/octet-stream";
	}
	static const char cache[] = "cache-control: no-cache\r\n";
	r->replied = true;
	metrics_http_response(200);
	int n = lws_serve_http_file(r->wsi, real, mime, cache, (int)sizeof cache - 1);
	if (n < 0)
		return -1;
	if (n > 0 && lws_http_transaction_completed(r->wsi))
		return -1;
	return 0;
}

static long long header_ll(struct lws *wsi, enum lws_token_indexes tok, bool *present)
{
	char v[32];
	*present = lws_hdr_total_length(wsi, tok) > 0;
	if (!*present)
		return 0;
	if (lws_hdr_copy(wsi, v, sizeof v, tok) < 0)
		return -1;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < 0)
		return -1;
	return n;
}

static int on_request(struct http_req *r, struct lws *wsi, struct http_env *env)
{
	char *uri;
	int urilen;

	r->wsi = wsi;
	buf_init(&r->body_in);
	buf_init(&r->body_out);
	buf_init(&r->extra_headers);

	r->method = lws_http_get_uri_and_method(wsi, &uri, &urilen);
	if (r->method < 0 || urilen <= 0 || (size_t)urilen >= sizeof r->path) {
		r->close_after = true;
		http_reply_error(r, r->method < 0 ? 405 : 414, "bad_request",
				 r->method < 0 ? "method not supported" : "path too long");
		return 0;
	}
	memcpy(r->path, uri, (size_t)urilen);
	r->path[urilen] = '\0';

	bool has_len, has_te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
	long long clen = header_ll(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, &has_len);

	if (has_te) {
		/* lws 4.1 never completes a chunked request body. */
		r->close_after = true;
		http_reply_error(r, 411, "length_required",
				 "chunked request bodies are not accepted; send Content-Length");
		return 0;
	}
	if (has_len && clen < 0) {
		r->close_after = true;
		http_reply_error(r, 400, "bad_request", "invalid Content-Length");
		return 0;
	}
	if (clen > HTTP_BODY_MAX) {
		r->close_after = true;
		http_reply_error(r, 413, "payload_too_large", "request body over 64 KiB");
		return 0;
	}

	r->route = route_find(r->path);
	if (!r->route) {
		if (r->method == LWSHUMETH_GET && strncmp(r->path, "/api/", 5) != 0)
			return serve_static(r, env);
		r->close_after = clen > 0;
		http_reply_error(r, 404, "not_found", "no such path");
		return 0;
	}
	if (!(r->route->methods & (1u << r->method))) {
		struct buf allow;
		buf_init(&allow);
		allow_header(r->route->methods, &allow);
		r->close_after = clen > 0;
		http_reply_error(r, 405, "method_not_allowed", "method not allowed on this path");
		buf_append(&r->extra_headers, allow.data, allow.len);
		buf_free(&allow);
		return 0;
	}
	if (clen > 0) {
		r->awaiting_body = true;
		return 0;
	}
	r->route->fn(r, env);
	return 0;
}

static int add_extra_headers(struct http_req *r, unsigned char **p, unsigned char *end)
{
	char *line = r->extra_headers.data;
	while (line && *line) {
		char *eol = strstr(line, "\r\n");
		char *colon = strchr(line, ':');
		if (!eol || !colon || colon > eol)
			break;
		char name[64];
		size_t nlen = (size_t)(colon - line) + 1;
		if (nlen >= sizeof name)
			return -1;
		memcpy(name, line, nlen);
		name[nlen] = '\0';
		const char *v = colon + 1;
		while (*v == ' ')
			v++;
		if (lws_add_http_header_by_name(r->wsi, (const unsigned char *)name,
						(const unsigned char *)v, (int)(eol - v), p, end))
			return -1;
		line = eol + 2;
	}
	return 0;
}

static int on_writeable(struct http_req *r)
{
	unsigned char hdr[LWS_PRE + 2048];
	unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;

	if (!r->replied)
		return 0;
	if (!r->headers_sent) {
		if (lws_add_http_common_headers(r->wsi, (unsigned)r->status, r->content_type,
						r->body_out.len, &p, end) ||
		    add_extra_headers(r, &p, end) ||
		    (r->status == 401 &&
		     lws_add_http_header_by_name(r->wsi, (const unsigned char *)"www-authenticate:",
						 (const unsigned char *)"Bearer", 6, &p, end)) ||
		    (r->close_after &&
		     lws_add_http_header_by_name(r->wsi, (const unsigned char *)"connection:",
						 (const unsigned char *)"close", 5, &p, end)) ||
		    lws_finalize_write_http_header(r->wsi, start, &p, end))
			return -1;
		r->headers_sent = true;
		if (r->body_out.len) {
			lws_callback_on_writable(r->wsi);
			return 0;
		}
	} else if (r->sent < r->body_out.len) {
		size_t n = r->body_out.len - r->sent;
		if (n > WRITE_CHUNK)
			n = WRITE_CHUNK;
		/* lws needs LWS_PRE bytes of headroom before what it writes. */
		unsigned char *chunk = mem_alloc(LWS_PRE + n);
		memcpy(chunk + LWS_PRE, r->body_out.data + r->sent, n);
		bool last = r->sent + n == r->body_out.len;
		int w = lws_write(r->wsi, chunk + LWS_PRE, n,
				  last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
		mem_free(chunk);
		if (w < (int)n)
			return -1;
		r->sent += n;
		if (!last) {
			lws_callback_on_writable(r->wsi);
			return 0;
		}
	}
	if (r->close_after)
		return -1;
	if (lws_http_transaction_completed(r->wsi))
		return -1;
	return 0;
}

static void req_reset(struct http_req *r)
{
	buf_free(&r->body_in);
	buf_free(&r->body_out);
	buf_free(&r->extra_headers);
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		  size_t len)
{
	struct http_req *r = user;
	struct http_env *env = lws_context_user(lws_get_context(wsi));

	switch (reason) {
	case LWS_CALLBACK_HTTP:
		if (env->peers)
			peers_settled(env->peers, wsi);
		/* A keep-alive connection reuses the same pss for the next
		 * request: drop what the previous one left. */
		async_detach(r);
		req_reset(r);
		memset(r, 0, sizeof *r);
		return on_request(r, wsi, env);

	case LWS_CALLBACK_HTTP_BODY:
		if (!r->awaiting_body)
			return 0;
		if (r->body_in.len + len > HTTP_BODY_MAX)
			return -1;
		buf_append(&r->body_in, in, len);
		return 0;

	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (!r->awaiting_body)
			return 0;
		r->awaiting_body = false;
		r->route->fn(r, env);
		return 0;

	case LWS_CALLBACK_HTTP_WRITEABLE: return on_writeable(r);

	case LWS_CALLBACK_RAW_ADOPT:
	case LWS_CALLBACK_RAW_RX:
		/* CONNECT (and other requests lws hands to its raw-socket
		 * fallback) have nothing to talk to here: hang up. */
		return -1;

	case LWS_CALLBACK_HTTP_FILE_COMPLETION:
		if (lws_http_transaction_completed(wsi))
			return -1;
		return 0;

	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		/* Never touch `in` here (CVE-2025-11677 in lws 4.1.6). */
		return ws_confirm_upgrade(wsi, env);

	/* Every accepted socket, WebSocket or not, passes the filter and the
	 * destroy (lws sends both to protocols[0]); the adoption in between
	 * goes to the vhost's default protocol (ws.c), or here if that ever
	 * changes. The per-address limit lives in peers.c. */
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: {
		const struct lws_filter_network_conn_args *f = user;
		if (!env->peers || !f)
			return 0;
		return peers_admit(env->peers, wsi, (int)f->accept_fd,
				   (const struct sockaddr *)&f->cli_addr, f->clilen)
			   ? 0
			   : -1;
	}
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		if (env->peers)
			peers_bind(env->peers, wsi);
		return 0;
	case LWS_CALLBACK_WSI_DESTROY:
		if (env->peers)
			peers_release(env->peers, wsi);
		return 0;

	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		if (r) {
			async_detach(r);
			req_reset(r);
		}
		return 0;

	default: break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}
