#ifndef STOCKALERT_API_H
#define STOCKALERT_API_H
/*
 * The REST API (README.md, HTTP API; JSON in, JSON out), on top of the HTTP module:
 * products, the caller's subscriptions. Each handler authenticates the
 * bearer token, validates its input with errors naming the field, and
 * answers after its MySQL/Redis round trips through an http_async handle.
 */
#include "stockalert/http.h"

void api_get_product(struct http_req *r, struct http_env *env);
void api_list_subscriptions(struct http_req *r, struct http_env *env);
/* PUT and DELETE /api/me/subscriptions/{product_id} */
void api_subscription(struct http_req *r, struct http_env *env);

/* GET /api/me/alerts?since=ID&limit=N */
void api_list_alerts(struct http_req *r, struct http_env *env);
/* POST /api/inventory/events (role service or admin) */
void api_post_event(struct http_req *r, struct http_env *env);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds. */
void api_format_time(int64_t ms, char *out, size_t outlen);

#endif
