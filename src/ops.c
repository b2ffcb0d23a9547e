#include "stockalert/ops.h"

#include <jansson.h>
#include <stdbool.h>

#include "stockalert/buf.h"
#include "stockalert/http.h"
#include "stockalert/metrics.h"
#include "stockalert/redis.h"
#include "stockalert/store.h"
#include "stockalert/stream.h"
#include "stockalert/subs.h"

void ops_healthz(struct http_req *r, struct http_env *env)
{
	(void)env;
	http_reply(r, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
}

void ops_readyz(struct http_req *r, struct http_env *env)
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
	/* The durable input's backlog, when it has one: the body keeps its documented
	 * exact shape while there is nothing to say. */
	struct stream_stats st = {0};
	if (env->stream)
		stream_stats(env->stream, &st);
	if (st.lag > 0 || st.pending > 0 || st.dead > 0 || st.error) {
		json_t *sj = json_pack("{s:I,s:I,s:I}", "lag", (json_int_t)st.lag, "pending",
				       (json_int_t)st.pending, "dead", (json_int_t)st.dead);
		/* Redis refuses the reader: no event on the stream would be
		 * processed, so this instance is not ready. */
		if (st.error)
			json_object_set_new(sj, "error", json_string(st.error));
		json_object_set_new(j, "stream", sj);
	}
	http_reply_json(r, redis_up && mysql_up && !st.error ? 200 : 503, j);
}

void ops_metrics(struct http_req *r, struct http_env *env)
{
	(void)env;
	struct buf out;
	buf_init(&out);
	metrics_render(&out);
	http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len, NULL);
	buf_free(&out);
}
