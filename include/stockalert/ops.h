#ifndef STOCKALERT_OPS_H
#define STOCKALERT_OPS_H
/*
 * What operators and balancers ask (conf/README.md, Health and Metrics):
 * liveness, readiness (Redis, MySQL, the subscription index, the durable
 * input's backlog) and the Prometheus exposition. HTTP handlers, routed by
 * server.c like the REST API's.
 */
#include "stockalert/env.h"

struct http_req;

/* GET /healthz: 200 while the loop runs. */
void ops_healthz(struct http_req *r, struct http_env *env);
/* GET /readyz: 200, or 503 naming what is down. */
void ops_readyz(struct http_req *r, struct http_env *env);
/* GET /metrics: the text exposition of metrics.h. */
void ops_metrics(struct http_req *r, struct http_env *env);

#endif
