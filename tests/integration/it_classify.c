/*
 * The classification of a stock change exists twice: events_classify
 * (src/events.c), which decides who hears of an alert, and the processing
 * script (src/lua/process.lua), which decides in Redis, once for every
 * instance, which alert an event is. This runs both over the cases of
 * tests/cases/classify.txt: the C function directly, the script through
 * EVAL against the fixture's redis-server, with the threshold once as the
 * product's own (the script's argument) and once as a subscriber's (the
 * product's custom thresholds set, with a product threshold that never
 * crosses). Any case on which a copy disagrees with the table fails.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "stockalert/events.h"
#include "stockalert/kind.h"
#include "stockalert/subs.h"

/* Compiled in from src/lua/ (the script the daemon sends). */
extern const char sa_lua_process[];

static const char *kind_name(unsigned kind)
{
	return kind ? subs_kind_name(kind) : "none";
}

/* Runs the processing script for the change prev -> stock of a product of
 * its own, with the product threshold thr and, if custom >= 0, a subscriber
 * threshold custom; writes the kind it decided into out. */
static int run_script(redisContext *c, const char *prefix, int n, long long prev, long long stock,
		      long long thr, long long custom, char *out, size_t outlen)
{
	char k_event[128], k_stock[128], k_stream[128], k_thr[128], k_inst[136], k_start[128];
	char pid[24], s_stock[24], s_prev[24], s_thr[24], ev_id[32], now[24];
	struct timeval tv;

	gettimeofday(&tv, NULL);
	snprintf(pid, sizeof pid, "%d", n);
	snprintf(k_event, sizeof k_event, "%sevent:case-%d", prefix, n);
	snprintf(k_stock, sizeof k_stock, "%sstock:%d", prefix, n);
	snprintf(k_stream, sizeof k_stream, "%salerts", prefix);
	snprintf(k_thr, sizeof k_thr, "%sproduct:%d:thr", prefix, n);
	snprintf(k_inst, sizeof k_inst, "%s:i", k_event);
	snprintf(k_start, sizeof k_start, "%salerts:start", prefix);
	snprintf(s_stock, sizeof s_stock, "%lld", stock);
	snprintf(s_prev, sizeof s_prev, "%lld", prev);
	snprintf(s_thr, sizeof s_thr, "%lld", thr);
	snprintf(ev_id, sizeof ev_id, "case-%d", n);
	snprintf(now, sizeof now, "%lld", (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
	const char *argv[] = {"EVAL",  sa_lua_process,
			      "6",     k_event,
			      k_stock, k_stream,
			      k_thr,   k_inst,
			      k_start, "it-classify",
			      pid,     s_stock,
			      s_prev,  "",
			      s_thr,   "",
			      ev_id,   now,
			      "0",     "60",
			      prefix,  "0",
			      "1000",  now,
			      "60"};
	/* The custom threshold and the script in one transaction: nothing
	 * another test does to the server can come between them. */
	redisReply *r = redisCommand(c, "MULTI");
	freeReplyObject(r);
	if (custom >= 0) {
		char score[24];
		snprintf(score, sizeof score, "%lld", custom);
		r = redisCommand(c, "ZADD %s %s %s", k_thr, score, "someone");
		freeReplyObject(r);
	}
	r = redisCommandArgv(c, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
	freeReplyObject(r);
	r = redisCommand(c, "EXEC");
	int rc = -1;
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1) {
		const redisReply *e = r->element[r->elements - 1];
		if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
		    e->element[0]->type == REDIS_REPLY_STRING) {
			snprintf(out, outlen, "%s", e->element[0]->str);
			rc = 0;
		} else if (e->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "it_classify: script error: %s\n", e->str);
		}
	}
	freeReplyObject(r);
	return rc;
}

int main(void)
{
	const char *src = getenv("SA_SOURCE_DIR");
	const char *port = getenv("SA_TEST_REDIS_PORT");
	char path[4096], line[256], prefix[64];
	int failures = 0, cases = 0, n = 0;

	if (!src || !port) {
		fprintf(stderr, "it_classify: SA_SOURCE_DIR and SA_TEST_REDIS_PORT must be set\n");
		return 1;
	}
	snprintf(path, sizeof path, "%s/tests/cases/classify.txt", src);
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return 1;
	}
	struct timeval tv = {5, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)strtol(port, NULL, 10), tv);
	if (!c || c->err) {
		fprintf(stderr, "it_classify: redis: %s\n", c ? c->errstr : "no context");
		return 1;
	}
	snprintf(prefix, sizeof prefix, "it-classify:%d:", (int)getpid());

	while (fgets(line, sizeof line, f)) {
		long long prev, stock, thr;
		char want[32];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%lld %lld %lld %31s", &prev, &stock, &thr, want) != 4) {
			fprintf(stderr, "it_classify: bad line: %s", line);
			failures++;
			continue;
		}
		cases++;
		const char *c_kind = kind_name(events_classify(prev, stock, thr));
		if (strcmp(c_kind, want) != 0) {
			fprintf(stderr, "events_classify(%lld, %lld, %lld) = %s, expected %s\n",
				prev, stock, thr, c_kind, want);
			failures++;
		}
		/* The product's own threshold, then a subscriber's (the product's
		 * 0 never makes a low_stock: that needs a stock above 0 and at or
		 * below it). */
		for (int custom = 0; custom < 2; custom++) {
			char got[32] = "";
			if (run_script(c, prefix, ++n, prev, stock, custom ? 0 : thr,
				       custom ? thr : -1, got, sizeof got) != 0 ||
			    strcmp(got, want) != 0) {
				fprintf(stderr,
					"process.lua (%s threshold): %lld -> %lld, threshold %lld: "
					"%s, expected %s\n",
					custom ? "a subscriber's" : "the product's", prev, stock,
					thr, got[0] ? got : "(no answer)", want);
				failures++;
			}
		}
	}
	fclose(f);

	/* Leave nothing behind in the shared server. */
	redisReply *r = redisCommand(c, "EVAL %s 0 %s",
				     "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do "
				     "redis.call('DEL', k) end return 0",
				     prefix);
	freeReplyObject(r);
	redisFree(c);
	if (cases == 0) {
		fprintf(stderr, "it_classify: no cases in %s\n", path);
		return 1;
	}
	printf("it_classify: %d cases, %d failures\n", cases, failures);
	return failures ? 1 : 0;
}
