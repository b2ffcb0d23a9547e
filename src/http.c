#include "stockalert/http.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "stockalert/buf.h"
#include "stockalert/config.h"
#include "stockalert/hdrcheck.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"
#include "stockalert/peers.h"

#define PATH_MAX_LEN	512
/* Body bytes written per WRITEABLE callback, so one big response cannot hog
 * the loop or a socket buffer. */
#define WRITE_CHUNK	16384
/* Static files are read whole into the response: the page's assets are a
 * few KiB; anything bigger than this is not ours to serve. */
#define STATIC_FILE_MAX (4 * 1024 * 1024)
#define ORIGIN_MAX	256
/* How long a browser may cache a preflight answer. */
#define CORS_MAX_AGE	"600"

#define MOD "http"

struct http_req {
	struct lws *wsi;
	int method; /* LWSHUMETH_*; a HEAD runs as GET with head set */
	bool head;  /* answer the headers of the GET, not its body */
	/* An /api/ path: the answer varies with Origin (CORS). */
	bool api;
	char cors_origin[ORIGIN_MAX]; /* a listed Origin to allow, or "" */
	char path[PATH_MAX_LEN];
	const struct http_route *route;
	uint64_t t0_ns; /* uv_hrtime() at the request line */
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
	/* The answer's deadline (LWS_CALLBACK_TIMER below): 503 before lws's
	 * own timeout would close the connection with no answer at all. */
	struct http_env *env = lws_context_user(lws_get_context(r->wsi));
	lws_set_timer_usecs(r->wsi, (lws_usec_t)env->cfg->http.request_timeout_ms * 1000);
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

size_t http_session_size(void)
{
	return sizeof(struct http_req);
}

static bool route_matches(const struct http_route *rt, const char *path)
{
	size_t n = strlen(rt->path);
	if (rt->path[n - 1] == '/')
		return strncmp(path, rt->path, n) == 0;
	return strcmp(path, rt->path) == 0;
}

static const struct http_route *route_find(const struct http_routes *rs, const char *path)
{
	for (size_t i = 0; rs && i < rs->n; i++)
		if (route_matches(&rs->routes[i], path))
			return &rs->routes[i];
	return NULL;
}

/* "name: GET, HEAD, ...\r\n" for a route's methods (HEAD wherever GET). */
static void methods_header(const char *name, unsigned methods, struct buf *out)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{HTTP_GET, "GET"},
		     {HTTP_GET, "HEAD"},
		     {HTTP_POST, "POST"},
		     {HTTP_PUT, "PUT"},
		     {HTTP_DELETE, "DELETE"}};
	buf_printf(out, "%s: ", name);
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
	lws_set_timer_usecs(r->wsi, LWS_SET_TIMER_USEC_CANCEL);
	r->status = status;
	snprintf(r->content_type, sizeof r->content_type, "%s", content_type);
	if (extra_headers)
		buf_puts(&r->extra_headers, extra_headers);
	buf_reset(&r->body_out);
	if (body && len)
		buf_append(&r->body_out, body, len);
	metrics_http_response(status);
	metrics_observe(METRICS_H_HTTP_REQUEST, r->route ? r->route->metric : METRICS_ROUTE_NONE,
			metrics_seconds(r->t0_ns, uv_hrtime()));
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

/* Reads the regular file at path (size bytes by stat) into out. */
static int read_file(const char *path, off_t size, struct buf *out)
{
	if (size > STATIC_FILE_MAX)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	buf_reserve(out, (size_t)size);
	char chunk[16384];
	ssize_t n;
	while ((n = read(fd, chunk, sizeof chunk)) > 0 && out->len + (size_t)n <= STATIC_FILE_MAX)
		buf_append(out, chunk, (size_t)n);
	close(fd);
	return n == 0 ? 0 : -1;
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
	/* Read whole and sent like any other answer, not through
	 * lws_serve_http_file(): lws 4.1.6 parses a request pipelined behind a
	 * file while the file is still going out, and the transaction the file
	 * completes then tears that request down (a 403 and a close). */
	struct buf file;
	buf_init(&file);
	if (read_file(real, st.st_size, &file) != 0) {
		buf_free(&file);
		http_reply_error(r, 404, "not_found", "no such path");
		return 0;
	}
	http_reply(r, 200, mime, file.data, file.len, "cache-control: no-cache\r\n");
	buf_free(&file);
	return 0;
}

/* A known header's value: NULL if absent, "" if present and empty, and a
 * value no rule accepts ("\x7f") if longer than buf. */
static const char *header_value(struct lws *wsi, enum lws_token_indexes tok, char *buf, size_t len)
{
	/* lws_hdr_copy() says 0 for absent and empty alike; the first
	 * fragment's copy says -1 only when absent (-2 when too long). */
	if (lws_hdr_copy_fragment(wsi, buf, (int)len, tok, 0) == -1)
		return NULL;
	if (lws_hdr_copy(wsi, buf, (int)len, tok) < 0)
		return "\x7f";
	return buf;
}

static bool has_unknown_header(void *arg, const char *name, size_t len)
{
	return lws_hdr_custom_length(arg, name, (int)len) >= 0;
}

/* The CORS side of an /api/ request: remembers a listed Origin to allow. */
static void cors_note(struct http_req *r, const struct config *cfg)
{
	char origin[ORIGIN_MAX];
	r->api = true;
	if (lws_hdr_copy(r->wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0 &&
	    config_origin_listed(cfg, origin))
		memcpy(r->cors_origin, origin, sizeof origin);
}

/* OPTIONS on an /api/ route: a CORS preflight when it carries an Origin. */
static void preflight(struct http_req *r)
{
	struct buf h;
	if (lws_hdr_total_length(r->wsi, WSI_TOKEN_ORIGIN) > 0 && !r->cors_origin[0]) {
		http_reply_error(r, 403, "origin_refused", "Origin not allowed");
		return;
	}
	buf_init(&h);
	methods_header("allow", r->route->methods, &h);
	if (r->cors_origin[0]) {
		methods_header("access-control-allow-methods", r->route->methods, &h);
		/* What stockalert.js sends: a bearer token, and JSON bodies. */
		buf_puts(&h, "access-control-allow-headers: Authorization, Content-Type\r\n"
			     "access-control-max-age: " CORS_MAX_AGE "\r\n");
	}
	http_reply(r, 204, "application/json", NULL, 0, h.data);
	buf_free(&h);
}

static int on_request(struct http_req *r, struct lws *wsi, struct http_env *env)
{
	char *uri;
	int urilen;

	r->wsi = wsi;
	r->t0_ns = uv_hrtime();
	buf_init(&r->body_in);
	buf_init(&r->body_out);
	buf_init(&r->extra_headers);

	r->method = lws_http_get_uri_and_method(wsi, &uri, &urilen);
	if (r->method == LWSHUMETH_HEAD) {
		r->head = true;
		r->method = LWSHUMETH_GET;
	}
	if (r->method < 0 || urilen <= 0 || (size_t)urilen >= sizeof r->path) {
		r->close_after = true;
		http_reply_error(r, r->method < 0 ? 405 : 414, "bad_request",
				 r->method < 0 ? "method not supported" : "path too long");
		return 0;
	}
	memcpy(r->path, uri, (size_t)urilen);
	r->path[urilen] = '\0';

	if (strncmp(r->path, "/api/", 5) == 0)
		cors_note(r, env->cfg);

	char cl[32], te[64];
	struct hdrcheck_src framing = {
	    .content_length = header_value(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof cl),
	    .transfer_encoding = header_value(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING, te, sizeof te),
	    .has_unknown = has_unknown_header,
	    .arg = wsi,
	};
	long long clen;
	const char *why;
	switch (hdrcheck_framing(&framing, &clen, &why)) {
	case HDRCHECK_OK: break;
	case HDRCHECK_CHUNKED:
		/* lws 4.1 never completes a chunked request body. */
		r->close_after = true;
		http_reply_error(r, 411, "length_required", why);
		return 0;
	case HDRCHECK_BAD:
	default:
		/* Where this request ends is in doubt, so whatever follows
		 * it on the connection is not a request to run. */
		r->close_after = true;
		http_reply_error(r, 400, "bad_request", why);
		return 0;
	}
	if (clen > HTTP_BODY_MAX) {
		r->close_after = true;
		http_reply_error(r, 413, "payload_too_large", "request body over 64 KiB");
		return 0;
	}

	r->route = route_find(env->http, r->path);
	if (!r->route) {
		if (r->method == LWSHUMETH_GET && strncmp(r->path, "/api/", 5) != 0)
			return serve_static(r, env);
		r->close_after = clen > 0;
		http_reply_error(r, 404, "not_found", "no such path");
		return 0;
	}
	if (r->method == LWSHUMETH_OPTIONS && r->api) {
		r->close_after = clen > 0;
		preflight(r);
		return 0;
	}
	if (!(r->route->methods & (1u << r->method))) {
		struct buf allow;
		buf_init(&allow);
		methods_header("allow", r->route->methods, &allow);
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

static int add_cors_headers(struct http_req *r, unsigned char **p, unsigned char *end)
{
	if (!r->api)
		return 0;
	/* Caches must not hand one origin's answer to another. */
	if (lws_add_http_header_by_name(
		r->wsi, (const unsigned char *)"vary:", (const unsigned char *)"Origin", 6, p, end))
		return -1;
	/* Bearer tokens only: no Access-Control-Allow-Credentials, ever. */
	if (r->cors_origin[0] &&
	    lws_add_http_header_by_name(
		r->wsi, (const unsigned char *)"access-control-allow-origin:",
		(const unsigned char *)r->cors_origin, (int)strlen(r->cors_origin), p, end))
		return -1;
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
		    add_cors_headers(r, &p, end) ||
		    lws_finalize_write_http_header(r->wsi, start, &p, end))
			return -1;
		r->headers_sent = true;
		if (r->body_out.len && !r->head) {
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

	case LWS_CALLBACK_TIMER:
		/* The deadline set by http_async_begin(): the backend has not
		 * answered. Its late answer finds the handle detached. */
		if (r && r->async && !r->replied) {
			async_detach(r);
			log_warn(MOD, "%s: no answer from the backend within %d ms: 503", r->path,
				 env->cfg->http.request_timeout_ms);
			http_reply_error(r, 503, "unavailable",
					 "the backend did not answer in time; retry");
		}
		return 0;

	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		/* Never touch `in` here (CVE-2025-11677 in lws 4.1.6). */
		if (!env->http || !env->http->confirm_upgrade)
			return -1;
		return env->http->confirm_upgrade(wsi, env);

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
