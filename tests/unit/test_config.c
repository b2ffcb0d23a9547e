/* Unit tests for the config table: defaults, loading, every error class. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stockalert/config.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

/* The smallest loadable config: HS256 (the default) needs its secret file. */
#define MIN_AUTH "\"auth\": {\"secret_file\": \"s\"}"

static char errbuf[512];

static struct config *load(const char *json)
{
	struct config *cfg = (struct config *)(uintptr_t)1;

	errbuf[0] = '\0';
	if (config_load_string(json, strlen(json), &cfg, errbuf, sizeof errbuf) != 0) {
		assert_null(cfg);
		assert_true(errbuf[0] != '\0');
		return NULL;
	}
	assert_non_null(cfg);
	return cfg;
}

/* Asserts json is refused with a message containing want. */
static void refuse(const char *json, const char *want)
{
	struct config *cfg = load(json);

	if (cfg) {
		config_free(cfg);
		fail_msg("accepted: %s (wanted error \"%s\")", json, want);
	}
	if (!strstr(errbuf, want))
		fail_msg("for %s\n  got error \"%s\"\n  wanted it to contain \"%s\"", json, errbuf,
			 want);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void make_tmp(char *path, size_t len)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	snprintf(path, len, "%s/test_config.XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
}

static void assert_defaults(const struct config *c)
{
	assert_string_equal(c->listen.host, "0.0.0.0");
	assert_int_equal(c->listen.port, 8080);
	assert_int_equal(c->listen.max_connections_per_address, 2048);
	assert_int_equal(c->listen.n_unlimited_addresses, 2);
	assert_string_equal(c->listen.unlimited_addresses[0], "127.0.0.1");
	assert_string_equal(c->listen.unlimited_addresses[1], "::1");
	assert_int_equal(c->listen.max_pending_handshakes, 256);
	assert_null(c->tls.cert_file);
	assert_null(c->tls.key_file);
	assert_int_equal(c->n_allowed_origins, 1);
	assert_string_equal(c->allowed_origins[0], "http://localhost:8080");
	assert_int_equal(c->auth.algorithm, AUTH_ALG_HS256);
	assert_null(c->auth.public_key_file);
	assert_null(c->auth.issuer);
	assert_null(c->auth.audience);
	assert_int_equal(c->auth.leeway_s, 30);
	assert_string_equal(c->redis.host, "127.0.0.1");
	assert_int_equal(c->redis.port, 6379);
	assert_null(c->redis.password);
	assert_int_equal(c->redis.db, 0);
	assert_string_equal(c->redis.prefix, "stockalert:");
	assert_null(c->redis.sentinel_master_name);
	assert_int_equal(c->redis.n_sentinel_addresses, 0);
	assert_string_equal(c->mysql.host, "127.0.0.1");
	assert_int_equal(c->mysql.port, 3306);
	assert_string_equal(c->mysql.user, "stockalert");
	assert_null(c->mysql.password);
	assert_null(c->mysql.password_file);
	assert_string_equal(c->mysql.database, "stockalert");
	assert_int_equal(c->ws.ping_interval_s, 25);
	assert_int_equal(c->ws.idle_timeout_s, 60);
	assert_int_equal(c->ws.max_message_bytes, 4096);
	assert_int_equal(c->ws.send_queue_max, 256);
	assert_int_equal(c->ws.max_connections, 100000);
	assert_int_equal(c->ws.max_connections_per_user, 8);
	assert_int_equal(c->ws.max_inflight_per_socket, 8);
	assert_int_equal(c->alerts.max_per_window, 5);
	assert_int_equal(c->alerts.window_s, 60);
	assert_int_equal(c->alerts.history_s, 86400);
	assert_true(c->alerts.fair_release_factor == 0.0);
	assert_int_equal(c->alerts.fair_release_interval_s, 30);
	assert_int_equal(c->alerts.stock_ttl_s, 2592000);
	assert_int_equal(c->subscriptions_max_per_user, 200);
	assert_int_equal(c->subscriptions_max_inflight_per_user, 16);
	assert_int_equal(c->catalog_max_entries, 10000);
	assert_string_equal(c->static_dir, "share/stockalert/www");
	assert_int_equal(c->shutdown_grace_s, 10);
	assert_int_equal(c->log.level, LOG_LEVEL_INFO);
	assert_int_equal(c->log.format, LOG_FORMAT_TEXT);
}

static void test_defaults_match_spec(void **state)
{
	struct config *c = config_new_defaults();

	(void)state;
	assert_defaults(c);
	assert_null(c->auth.secret_file);
	config_free(c);
}

static void test_minimal_file_keeps_defaults(void **state)
{
	struct config *c = load("{" MIN_AUTH "}");

	(void)state;
	assert_non_null(c);
	assert_defaults(c);
	assert_string_equal(c->auth.secret_file, "s");
	config_free(c);
}

static void test_full_file(void **state)
{
	static const char json[] =
	    "{\"listen\": {\"host\": \"::\", \"port\": 0},"
	    " \"tls\": {\"cert_file\": \"/c.pem\", \"key_file\": \"/k.pem\"},"
	    " \"allowed_origins\": [\"https://a.example\", \"http://b.example:81\", "
	    "\"https://[::1]:8443\"],"
	    " \"auth\": {\"algorithm\": \"ES256\", \"secret_file\": null,"
	    "  \"public_key_file\": \"/pub.pem\", \"issuer\": \"shop\","
	    "  \"audience\": \"alerts\","
	    "  \"leeway_s\": 0},"
	    " \"redis\": {\"host\": \"r.internal\", \"port\": 6380, \"password\": \"pw\","
	    "  \"db\": 15, \"prefix\": \"sa{x}:\","
	    "  \"sentinel\": {\"master_name\": \"mymaster\","
	    "   \"addresses\": [\"10.0.0.1:26379\", \"[fe80::1]:26380\", \"s3:1\"]}},"
	    " \"mysql\": {\"host\": \"db\", \"port\": 3307, \"user\": \"u\","
	    "  \"password\": \"p\","
	    "  \"password_file\": \"/pw\", \"database\": \"d\"},"
	    " \"ws\": {\"ping_interval_s\": 1, \"idle_timeout_s\": 86400,"
	    "  \"max_message_bytes\": 64, \"send_queue_max\": 65536,"
	    "  \"max_connections\": 1000000, \"max_connections_per_user\": 1000,"
	    "  \"max_inflight_per_socket\": 1000},"
	    " \"alerts\": {\"max_per_window\": 10000, \"window_s\": 1, \"history_s\": 60,"
	    "  \"fair_release_factor\": 0.5, \"fair_release_interval_s\": 86400,"
	    "  \"stock_ttl_s\": 31536000},"
	    " \"subscriptions\": {\"max_per_user\": 100000, \"max_inflight_per_user\": 10000},"
	    " \"catalog\": {\"max_entries\": 10000000},"
	    " \"static_dir\": \"/srv/www\", \"shutdown_grace_s\": 300,"
	    " \"log\": {\"level\": \"debug\", \"format\": \"json\"}}";
	struct config *c = load(json);

	(void)state;
	if (!c)
		fail_msg("%s", errbuf);
	assert_string_equal(c->listen.host, "::");
	assert_int_equal(c->listen.port, 0);
	assert_string_equal(c->tls.cert_file, "/c.pem");
	assert_string_equal(c->tls.key_file, "/k.pem");
	assert_int_equal(c->n_allowed_origins, 3);
	assert_string_equal(c->allowed_origins[0], "https://a.example");
	assert_string_equal(c->allowed_origins[1], "http://b.example:81");
	assert_string_equal(c->allowed_origins[2], "https://[::1]:8443");
	assert_int_equal(c->auth.algorithm, AUTH_ALG_ES256);
	assert_null(c->auth.secret_file);
	assert_string_equal(c->auth.public_key_file, "/pub.pem");
	assert_string_equal(c->auth.issuer, "shop");
	assert_string_equal(c->auth.audience, "alerts");
	assert_int_equal(c->auth.leeway_s, 0);
	assert_string_equal(c->redis.host, "r.internal");
	assert_int_equal(c->redis.port, 6380);
	assert_string_equal(c->redis.password, "pw");
	assert_int_equal(c->redis.db, 15);
	assert_string_equal(c->redis.prefix, "sa{x}:");
	assert_string_equal(c->redis.sentinel_master_name, "mymaster");
	assert_int_equal(c->redis.n_sentinel_addresses, 3);
	assert_string_equal(c->redis.sentinel_addresses[0], "10.0.0.1:26379");
	assert_string_equal(c->redis.sentinel_addresses[1], "[fe80::1]:26380");
	assert_string_equal(c->redis.sentinel_addresses[2], "s3:1");
	assert_string_equal(c->mysql.host, "db");
	assert_int_equal(c->mysql.port, 3307);
	assert_string_equal(c->mysql.user, "u");
	assert_string_equal(c->mysql.password, "p");
	assert_string_equal(c->mysql.password_file, "/pw");
	assert_string_equal(c->mysql.database, "d");
	assert_int_equal(c->ws.ping_interval_s, 1);
	assert_int_equal(c->ws.idle_timeout_s, 86400);
	assert_int_equal(c->ws.max_message_bytes, 64);
	assert_int_equal(c->ws.send_queue_max, 65536);
	assert_int_equal(c->ws.max_connections, 1000000);
	assert_int_equal(c->ws.max_connections_per_user, 1000);
	assert_int_equal(c->alerts.max_per_window, 10000);
	assert_int_equal(c->alerts.window_s, 1);
	assert_int_equal(c->alerts.history_s, 60);
	assert_true(c->alerts.fair_release_factor == 0.5);
	assert_int_equal(c->alerts.fair_release_interval_s, 86400);
	assert_int_equal(c->alerts.stock_ttl_s, 31536000);
	assert_int_equal(c->subscriptions_max_per_user, 100000);
	assert_int_equal(c->ws.max_inflight_per_socket, 1000);
	assert_int_equal(c->subscriptions_max_inflight_per_user, 10000);
	assert_int_equal(c->catalog_max_entries, 10000000);
	assert_string_equal(c->static_dir, "/srv/www");
	assert_int_equal(c->shutdown_grace_s, 300);
	assert_int_equal(c->log.level, LOG_LEVEL_DEBUG);
	assert_int_equal(c->log.format, LOG_FORMAT_JSON);
	config_free(c);
}

static void test_later_values_replace_defaults(void **state)
{
	/* Arrays replace the default list, they do not append to it; null clears. */
	struct config *c;

	(void)state;
	c = load("{" MIN_AUTH ", \"allowed_origins\": [], \"redis\": {\"password\": null},"
		 " \"alerts\": {\"fair_release_factor\": 3}}");
	assert_non_null(c);
	assert_int_equal(c->n_allowed_origins, 0);
	assert_null(c->redis.password);
	assert_true(c->alerts.fair_release_factor == 3.0);
	config_free(c);
}

static void test_comment_keys_ignored(void **state)
{
	struct config *c = load("{\"//\": \"top\", \"//x\": {\"any\": [1, 2]},"
				" \"ws\": {\"//ping_interval_s\": 5, \"ping_interval_s\": 30,"
				"  \"//\": null},"
				" \"redis\": {\"sentinel\": {\"//addresses\": {\"deep\": true}}},"
				" \"auth\": {\"//secret_file\": \"doc\", \"secret_file\": \"s\"}}");

	(void)state;
	if (!c)
		fail_msg("%s", errbuf);
	assert_int_equal(c->ws.ping_interval_s, 30);
	config_free(c);
	/* A single slash is not a comment. */
	refuse("{" MIN_AUTH ", \"/x\": 1}", "/x: unknown key");
}

static void test_unknown_keys(void **state)
{
	(void)state;
	refuse("{" MIN_AUTH ", \"bogus\": 1}", "bogus: unknown key");
	refuse("{" MIN_AUTH ", \"listen\": {\"bogus\": 1}}", "listen.bogus: unknown key");
	refuse("{" MIN_AUTH ", \"redis\": {\"sentinel\": {\"bogus\": []}}}",
	       "redis.sentinel.bogus: unknown key");
	/* Flattened keys are not a second syntax for nested ones. */
	refuse("{" MIN_AUTH ", \"ws.ping_interval_s\": 5}", "ws.ping_interval_s: unknown key");
	refuse("{" MIN_AUTH ", \"ws\": {\"\": 5}}", "unknown key");
	/* Control characters in a key do not reach the message raw. */
	refuse("{" MIN_AUTH ", \"a\\nb\": 1}", "a?b: unknown key");
}

static void test_wrong_types(void **state)
{
	(void)state;
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": \"25\"}}",
	       "ws.ping_interval_s: must be an integer between 1 and 3600");
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": 25.0}}",
	       "ws.ping_interval_s: must be an integer between 1 and 3600");
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": true}}",
	       "ws.ping_interval_s: must be");
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": null}}",
	       "ws.ping_interval_s: must be");
	refuse("{" MIN_AUTH ", \"ws\": 5}", "ws: must be an object");
	refuse("{" MIN_AUTH ", \"redis\": {\"sentinel\": []}}",
	       "redis.sentinel: must be an object");
	refuse("{" MIN_AUTH ", \"listen\": {\"host\": 1}}", "listen.host: must be a string");
	refuse("{" MIN_AUTH ", \"listen\": {\"host\": null}}", "listen.host: must be a string");
	refuse("{" MIN_AUTH ", \"listen\": {\"host\": {}}}", "listen.host: must be a string");
	refuse("{" MIN_AUTH ", \"tls\": {\"cert_file\": 1}}",
	       "tls.cert_file: must be a string or null");
	refuse("{" MIN_AUTH ", \"allowed_origins\": \"http://a\"}",
	       "allowed_origins: must be an array of strings");
	refuse("{" MIN_AUTH ", \"allowed_origins\": [\"http://a\", 1]}",
	       "allowed_origins[1]: must be a string");
	refuse("{" MIN_AUTH ", \"alerts\": {\"fair_release_factor\": \"1\"}}",
	       "alerts.fair_release_factor: must be a number between 0 and 1000");
	refuse("[1, 2]", "top level must be a JSON object");
}

static void test_out_of_range(void **state)
{
	(void)state;
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": 0}}",
	       "ws.ping_interval_s: must be an integer between 1 and 3600");
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": 3601, \"idle_timeout_s\": 9000}}",
	       "ws.ping_interval_s: must be an integer between 1 and 3600");
	refuse("{" MIN_AUTH ", \"listen\": {\"port\": 65536}}",
	       "listen.port: must be an integer between 0 and 65535");
	refuse("{" MIN_AUTH ", \"listen\": {\"port\": -1}}", "listen.port: must be");
	refuse("{" MIN_AUTH ", \"redis\": {\"port\": 0}}",
	       "redis.port: must be an integer between 1 and 65535");
	refuse("{" MIN_AUTH ", \"mysql\": {\"port\": 0}}", "mysql.port: must be");
	refuse("{" MIN_AUTH ", \"redis\": {\"db\": 16}}",
	       "redis.db: must be an integer between 0 and 15");
	/* Beyond int: must not wrap into range. */
	refuse("{" MIN_AUTH ", \"ws\": {\"max_connections\": 4294967297}}",
	       "ws.max_connections: must be");
	refuse("{" MIN_AUTH ", \"ws\": {\"max_message_bytes\": 63}}",
	       "ws.max_message_bytes: must be an integer between 64 and 1048576");
	refuse("{" MIN_AUTH ", \"alerts\": {\"history_s\": 59}}",
	       "alerts.history_s: must be an integer between 60 and 2592000");
	refuse("{" MIN_AUTH ", \"alerts\": {\"fair_release_factor\": -0.5}}",
	       "alerts.fair_release_factor: must be a number between 0 and 1000");
	refuse("{" MIN_AUTH ", \"alerts\": {\"fair_release_factor\": 1000.5}}",
	       "alerts.fair_release_factor: must be");
	refuse("{" MIN_AUTH ", \"subscriptions\": {\"max_per_user\": 0}}",
	       "subscriptions.max_per_user: must be an integer between 1 and 100000");
	refuse("{" MIN_AUTH ", \"subscriptions\": {\"max_inflight_per_user\": 0}}",
	       "subscriptions.max_inflight_per_user: must be an integer between 1 and 10000");
	refuse("{" MIN_AUTH ", \"ws\": {\"max_inflight_per_socket\": 1001}}",
	       "ws.max_inflight_per_socket: must be an integer between 1 and 1000");
	refuse("{" MIN_AUTH ", \"catalog\": {\"max_entries\": 15}}",
	       "catalog.max_entries: must be an integer between 16 and 10000000");
	refuse("{" MIN_AUTH ", \"shutdown_grace_s\": 301}",
	       "shutdown_grace_s: must be an integer between 0 and 300");
	refuse("{\"auth\": {\"secret_file\": \"s\", \"leeway_s\": 3601}}",
	       "auth.leeway_s: must be an integer between 0 and 3600");
	/* jansson refuses NaN/Infinity literals and overflowing reals itself. */
	refuse("{" MIN_AUTH ", \"alerts\": {\"fair_release_factor\": NaN}}", "config:1:");
	refuse("{" MIN_AUTH ", \"alerts\": {\"fair_release_factor\": 1e999}}", "overflow");
}

static void test_strings(void **state)
{
	char json[256];

	(void)state;
	refuse("{" MIN_AUTH ", \"redis\": {\"prefix\": \"\"}}", "redis.prefix: must not be empty");
	refuse("{" MIN_AUTH ", \"redis\": {\"prefix\": \"a b\"}}",
	       "redis.prefix: must not contain spaces");
	snprintf(json, sizeof json, "{" MIN_AUTH ", \"redis\": {\"prefix\": \"%065d\"}}", 0);
	refuse(json, "redis.prefix: must be at most 64 characters");
	snprintf(json, sizeof json, "{" MIN_AUTH ", \"redis\": {\"prefix\": \"%064d\"}}", 0);
	config_free(load(json));
	assert_string_equal(errbuf, "");
	refuse("{\"auth\": {\"secret_file\": \"\"}}", "auth.secret_file: must not be empty");
	refuse("{" MIN_AUTH ", \"listen\": {\"host\": \"local host\"}}", "listen.host: must not");
	refuse("{" MIN_AUTH ", \"allowed_origins\": [\"http://localhost:8080/\"]}",
	       "allowed_origins[0]: must be an origin");
	refuse("{" MIN_AUTH ", \"allowed_origins\": [\"localhost:8080\"]}",
	       "allowed_origins[0]: must be an origin");
	refuse("{" MIN_AUTH ", \"allowed_origins\": [\"https://\"]}", "allowed_origins[0]");
	refuse("{\"auth\": {\"algorithm\": \"HS256\", \"secret_file\": \"s\", \"issuer\": \"\"}}",
	       "auth.issuer: must not be empty (use null");
}

static void test_unlimited_addresses(void **state)
{
	static const char *const bad[] = {"localhost",	"127.0.0", "::g",
					  "10.0.0.0/8", "",	   "1.2.3.4 "};
	char json[256];
	struct config *c = NULL;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(json, sizeof json,
			 "{" MIN_AUTH ", \"listen\": {\"unlimited_addresses\": [\"::1\", \"%s\"]}}",
			 bad[i]);
		refuse(json, bad[i][0] ? "listen.unlimited_addresses[1]: must be a numeric IPv4 or "
					 "IPv6 address"
				       : "listen.unlimited_addresses[1]");
	}
	static const char ok[] =
	    "{" MIN_AUTH ", \"listen\": {\"unlimited_addresses\": [],"
	    " \"max_connections_per_address\": 0, \"max_pending_handshakes\": 0}}";
	assert_int_equal(config_load_string(ok, sizeof ok - 1, &c, err, sizeof err), 0);
	assert_int_equal(c->listen.n_unlimited_addresses, 0);
	assert_int_equal(c->listen.max_connections_per_address, 0);
	assert_int_equal(c->listen.max_pending_handshakes, 0);
	config_free(c);
	refuse("{" MIN_AUTH ", \"listen\": {\"max_pending_handshakes\": 65536}}",
	       "listen.max_pending_handshakes: must be an integer between 0 and 65535");
}

static void test_sentinel_addresses(void **state)
{
	static const char *const bad[] = {
	    "host",  "host:", ":26379", "host:0", "host:65536", "host:12a", "a:b:1",
	    "[::1]", "[]:1",  "[::1]:", "h st:1", "host:-1",	"host: 1"};
	char json[256];

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(json, sizeof json,
			 "{" MIN_AUTH ", \"redis\": {\"sentinel\": {\"master_name\": \"m\","
			 " \"addresses\": [\"ok:1\", \"%s\"]}}}",
			 bad[i]);
		refuse(json, "redis.sentinel.addresses[1]: must be \"host:port\"");
	}
	refuse("{" MIN_AUTH ", \"redis\": {\"sentinel\": {\"addresses\": [\"a:1\"]}}}",
	       "redis.sentinel.master_name: required");
	refuse("{" MIN_AUTH ", \"redis\": {\"sentinel\": {\"master_name\": \"m\"}}}",
	       "redis.sentinel.addresses: required");
}

static void test_enums(void **state)
{
	struct config *c;

	(void)state;
	refuse("{" MIN_AUTH ", \"log\": {\"level\": \"verbose\"}}",
	       "log.level: must be one of error|warn|info|debug");
	refuse("{" MIN_AUTH ", \"log\": {\"level\": 3}}", "log.level: must be one of");
	refuse("{" MIN_AUTH ", \"log\": {\"format\": \"xml\"}}",
	       "log.format: must be one of text|json");
	refuse("{\"auth\": {\"algorithm\": \"none\", \"secret_file\": \"s\"}}",
	       "auth.algorithm: must be one of HS256|RS256|ES256");
	refuse("{\"auth\": {\"algorithm\": \"hs256\", \"secret_file\": \"s\"}}",
	       "auth.algorithm: must be one of");
	c = load("{" MIN_AUTH ", \"log\": {\"level\": \"warn\"}}");
	assert_non_null(c);
	assert_int_equal(c->log.level, LOG_LEVEL_WARN);
	config_free(c);
	c = load("{\"auth\": {\"algorithm\": \"RS256\", \"public_key_file\": \"k\"}}");
	assert_non_null(c);
	assert_int_equal(c->auth.algorithm, AUTH_ALG_RS256);
	config_free(c);
	assert_string_equal(config_alg_name(AUTH_ALG_HS256), "HS256");
	assert_string_equal(config_alg_name(AUTH_ALG_RS256), "RS256");
	assert_string_equal(config_alg_name(AUTH_ALG_ES256), "ES256");
}

static void test_syntax_errors(void **state)
{
	(void)state;
	/* Duplicates name the key, including ones too long for jansson's context. */
	refuse("{" MIN_AUTH ",\n \"ws\": {\"max_connections_per_user\": 1,\n"
	       "  \"max_connections_per_user\": 2}}",
	       "config:3:");
	assert_non_null(strstr(errbuf, "duplicate key \"max_connections_per_user\""));
	refuse("{" MIN_AUTH ", \"listen\": {}, \"listen\": {}}", "duplicate key \"listen\"");
	refuse("{" MIN_AUTH ", \"a\\\"b\": 1, \"a\\\"b\": 2}", "duplicate key \"a\"b\"");
	refuse("{\n" MIN_AUTH ",\n\n  \"ws\": {\"ping_interval_s\": 5,}\n}", "config:4:");
	refuse("{" MIN_AUTH, "config:1:");
	refuse("", "config:");
	refuse("{" MIN_AUTH "} {}", "config:1:");
	refuse("{" MIN_AUTH ", \"static_dir\": \"a\\u0000b\"}", "config:1:");
}

static void test_cross_field(void **state)
{
	(void)state;
	refuse("{}", "auth.secret_file: required when auth.algorithm is HS256");
	refuse("{\"auth\": {\"algorithm\": \"RS256\"}}",
	       "auth.public_key_file: required when auth.algorithm is RS256");
	refuse("{\"auth\": {\"algorithm\": \"ES256\", \"secret_file\": \"s\"}}",
	       "auth.public_key_file: required when auth.algorithm is ES256");
	refuse("{\"auth\": {\"algorithm\": \"ES256\", \"secret_file\": \"s\","
	       " \"public_key_file\": \"k\"}}",
	       "auth.secret_file: not used with ES256");
	refuse("{\"auth\": {\"secret_file\": \"s\", \"public_key_file\": \"k\"}}",
	       "auth.public_key_file: not used with HS256");
	refuse("{" MIN_AUTH ", \"tls\": {\"cert_file\": \"c\"}}",
	       "tls.key_file: required when tls.cert_file is set");
	refuse("{" MIN_AUTH ", \"tls\": {\"key_file\": \"k\"}}",
	       "tls.cert_file: required when tls.key_file is set");
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": 60}}",
	       "ws.idle_timeout_s: must be greater than ws.ping_interval_s (60)");
	refuse("{" MIN_AUTH ", \"ws\": {\"ping_interval_s\": 30, \"idle_timeout_s\": 20}}",
	       "ws.idle_timeout_s: must be greater than ws.ping_interval_s");
}

static void test_error_buffer_small(void **state)
{
	struct config *cfg = NULL;
	char small[8];

	(void)state;
	memset(small, 'x', sizeof small);
	assert_int_equal(config_load_string("{\"bogus\": 1}", 12, &cfg, small, sizeof small), -1);
	assert_null(cfg);
	assert_string_equal(small, "bogus: ");
	/* Not NUL-terminated input (as the fuzzer passes it) is bounded by len. */
	assert_int_equal(config_load_string("{\"bogus\": 1}garbage", 12, &cfg, NULL, 0), -1);
	assert_null(cfg);
}

static void test_load_file(void **state)
{
	static const char json[] = "{\n  \"auth\": {\"secret_file\": \"s\"},\n  \"ws\": {\n"
				   "    \"ping_interval_s\": 5,\n"
				   "    \"idle_timeout_s\": 10\n  }\n}\n";
	static const char bad[] = "{\n  \"ws\": {\n    \"ping_interval_s\": 5\n    \"x\": 1\n}\n";
	char path[256];
	struct config *c = NULL;
	char err[256];

	(void)state;
	make_tmp(path, sizeof path);
	write_file(path, json, strlen(json));
	assert_int_equal(config_load(path, &c, err, sizeof err), 0);
	assert_int_equal(c->ws.ping_interval_s, 5);
	assert_int_equal(c->ws.idle_timeout_s, 10);
	config_free(c);

	/* Syntax errors name the file, line and column. */
	write_file(path, bad, strlen(bad));
	assert_int_equal(config_load(path, &c, err, sizeof err), -1);
	assert_null(c);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_true(strncmp(err + strlen(path), ":4:", 3) == 0);
	unlink(path);

	assert_int_equal(config_load(path, &c, err, sizeof err), -1);
	assert_null(c);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "No such file"));
}

/* The sample is found through SA_SOURCE_DIR, or next to this source file. */
static void sample_path(char *out, size_t len)
{
	const char *dir = getenv("SA_SOURCE_DIR");
	const char *tail = "tests/unit/test_config.c";
	size_t flen = strlen(__FILE__), tlen = strlen(tail);

	if (dir && *dir) {
		snprintf(out, len, "%s/conf/stockalertd.json", dir);
	} else if (flen >= tlen && strcmp(&__FILE__[flen - tlen], tail) == 0) {
		snprintf(out, len, "%.*sconf/stockalertd.json", (int)(flen - tlen), __FILE__);
	} else {
		snprintf(out, len, "../../conf/stockalertd.json");
		if (access(out, R_OK) != 0)
			snprintf(out, len, "../conf/stockalertd.json");
	}
}

static void test_sample_config(void **state)
{
	char path[4096];
	struct config *c = NULL;
	char err[512] = "";

	(void)state;
	sample_path(path, sizeof path);
	if (config_load(path, &c, err, sizeof err) != 0)
		fail_msg("%s", err);
	assert_string_equal(c->listen.host, "127.0.0.1");
	assert_int_equal(c->listen.port, 8080);
	assert_string_equal(c->auth.secret_file, "var/jwt.secret");
	assert_string_equal(c->mysql.password_file, "var/mysql.password");
	assert_string_equal(c->static_dir, "build/share/stockalert/www");
	assert_int_equal(c->n_allowed_origins, 2);
	assert_string_equal(c->allowed_origins[0], "http://localhost:8080");
	assert_string_equal(c->allowed_origins[1], "http://127.0.0.1:8080");
	/* Everything else is the default. */
	assert_int_equal(c->ws.ping_interval_s, 25);
	assert_int_equal(c->alerts.history_s, 86400);
	assert_string_equal(c->redis.prefix, "stockalert:");
	assert_int_equal(c->log.level, LOG_LEVEL_INFO);
	assert_int_equal(c->http.request_timeout_ms, 8000);
	config_free(c);
}

/* The REST deadline stays below lws's 10 s timeout; CORS and /ws share
 * one list of origins, matched exactly. */
static void test_http_keys(void **state)
{
	(void)state;
	struct config *c = load("{" MIN_AUTH ", \"http\": {\"request_timeout_ms\": 250},"
				"\"allowed_origins\": [\"https://shop.example\"]}");
	assert_non_null(c);
	assert_int_equal(c->http.request_timeout_ms, 250);
	assert_true(config_origin_listed(c, "https://shop.example"));
	assert_false(config_origin_listed(c, "https://shop.example:443"));
	assert_false(config_origin_listed(c, "https://shop.example/"));
	assert_false(config_origin_listed(c, "http://shop.example"));
	assert_false(config_origin_listed(c, ""));
	config_free(c);
	refuse("{" MIN_AUTH ", \"http\": {\"request_timeout_ms\": 9001}}",
	       "http.request_timeout_ms");
	refuse("{" MIN_AUTH ", \"http\": {\"request_timeout_ms\": 99}}", "http.request_timeout_ms");
	refuse("{" MIN_AUTH ", \"http\": {\"timeout\": 1}}", "http.timeout");
}

static void test_read_secret(void **state)
{
	char path[256];
	char err[256];
	char *s, *big;

	(void)state;
	make_tmp(path, sizeof path);
	write_file(path, "  s3cret value\r\n\n", 17);
	s = config_read_secret(path, err, sizeof err);
	assert_non_null(s);
	assert_string_equal(s, "  s3cret value");
	mem_free(s);

	write_file(path, "line1\nline2\n", 12);
	s = config_read_secret(path, err, sizeof err);
	assert_string_equal(s, "line1\nline2");
	mem_free(s);

	write_file(path, "", 0);
	assert_null(config_read_secret(path, err, sizeof err));
	assert_non_null(strstr(err, "is empty"));
	write_file(path, "\r\n\n", 3);
	assert_null(config_read_secret(path, err, sizeof err));
	assert_non_null(strstr(err, "is empty"));

	write_file(path, "ab\0cd", 5);
	assert_null(config_read_secret(path, err, sizeof err));
	assert_non_null(strstr(err, "NUL"));

	big = mem_alloc(64 * 1024 + 1);
	memset(big, 'k', 64 * 1024 + 1);
	write_file(path, big, 64 * 1024);
	s = config_read_secret(path, err, sizeof err);
	assert_non_null(s);
	assert_int_equal(strlen(s), 64 * 1024);
	mem_free(s);
	write_file(path, big, 64 * 1024 + 1);
	assert_null(config_read_secret(path, err, sizeof err));
	assert_non_null(strstr(err, "larger than"));
	mem_free(big);

	unlink(path);
	assert_null(config_read_secret(path, err, sizeof err));
	assert_non_null(strstr(err, path));
}

/* ---- auth.keys ---- */

#define KEY_HS(kid) "{\"kid\": \"" kid "\", \"secret_file\": \"s\"}"

static void test_auth_keys(void **state)
{
	struct config *c;

	(void)state;
	c = load("{\"auth\": {\"keys\": [" KEY_HS(
	    "old") ", {\"kid\": \"new\", \"algorithm\": "
		   "\"RS256\", \"public_key_file\": \"k.pem\", \"issuer\": \"i\", \"audience\": "
		   "\"a\", \"not_after\": \"2026-12-31T23:59:59Z\", \"//\": \"a comment\"}]}}");
	assert_non_null(c);
	assert_int_equal(c->auth.n_keys, 2);
	assert_string_equal(c->auth.keys[0].kid, "old");
	assert_int_equal(c->auth.keys[0].algorithm, AUTH_ALG_HS256);
	assert_string_equal(c->auth.keys[0].secret_file, "s");
	assert_null(c->auth.keys[0].not_after);
	assert_true(c->auth.keys[0].not_after_s == INT64_MAX);
	assert_int_equal(c->auth.keys[1].algorithm, AUTH_ALG_RS256);
	assert_string_equal(c->auth.keys[1].public_key_file, "k.pem");
	assert_string_equal(c->auth.keys[1].issuer, "i");
	assert_string_equal(c->auth.keys[1].audience, "a");
	assert_true(c->auth.keys[1].not_after_s == INT64_C(1798761599));
	config_free(c);

	/* Offsets and fractions; the single-key keys stay unset. */
	c = load("{\"auth\": {\"keys\": [{\"kid\": \"k\", \"secret_file\": \"s\", \"not_after\": "
		 "\"2026-12-31T23:59:59.999+01:00\"}]}}");
	assert_non_null(c);
	assert_true(c->auth.keys[0].not_after_s == INT64_C(1798761599) - 3600);
	assert_null(c->auth.secret_file);
	config_free(c);

	/* An empty list is the single key's configuration. */
	c = load("{\"auth\": {\"secret_file\": \"s\", \"keys\": []}}");
	assert_non_null(c);
	assert_int_equal(c->auth.n_keys, 0);
	config_free(c);
}

static void test_auth_keys_refused(void **state)
{
	char json[4096];
	size_t n;

	(void)state;
	refuse("{\"auth\": {\"keys\": {}}}", "auth.keys: must be an array of objects");
	refuse("{\"auth\": {\"keys\": [\"k\"]}}", "auth.keys[0]: must be an object");
	refuse("{\"auth\": {\"keys\": [{\"secret_file\": \"s\"}]}}", "auth.keys[0].kid: required");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"\", \"secret_file\": \"s\"}]}}",
	       "auth.keys[0].kid: must not be empty");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a b\", \"secret_file\": \"s\"}]}}",
	       "auth.keys[0].kid: must not contain spaces");
	refuse("{\"auth\": {\"keys\": [" KEY_HS("a") ", " KEY_HS("a") "]}}",
	       "auth.keys[1].kid: \"a\" is also auth.keys[0]");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a\", \"bogus\": 1}]}}",
	       "auth.keys[0].bogus: unknown key");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a\", \"algorithm\": \"none\"}]}}",
	       "auth.keys[0].algorithm: must be one of HS256|RS256|ES256");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a\"}]}}", "auth.keys[0].secret_file: required");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a\", \"algorithm\": \"ES256\"}]}}",
	       "auth.keys[0].public_key_file: required with ES256");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a\", \"secret_file\": \"s\", "
	       "\"public_key_file\": \"p\"}]}}",
	       "auth.keys[0].public_key_file: not used with HS256");
	refuse("{\"auth\": {\"keys\": [{\"kid\": \"a\", \"algorithm\": \"RS256\", "
	       "\"secret_file\": \"s\", \"public_key_file\": \"p\"}]}}",
	       "auth.keys[0].secret_file: not used with RS256");
	/* Mixing the single key with auth.keys. */
	refuse("{\"auth\": {\"secret_file\": \"s\", \"keys\": [" KEY_HS("a") "]}}",
	       "auth.secret_file: not used when auth.keys is set");
	refuse("{\"auth\": {\"issuer\": \"i\", \"keys\": [" KEY_HS("a") "]}}",
	       "auth.issuer: not used when auth.keys is set");
	refuse("{\"auth\": {\"algorithm\": \"RS256\", \"keys\": [" KEY_HS("a") "]}}",
	       "auth.algorithm: not used when auth.keys is set");
	/* not_after: RFC 3339 only. */
	static const char *const bad_times[] = {
	    "2026-12-31",
	    "2026-12-31T23:59:59",
	    "2026-12-31 23:59:59Z",
	    "2026-02-30T00:00:00Z",
	    "2026-13-01T00:00:00Z",
	    "2026-12-31T24:00:00Z",
	    "26-12-31T23:59:59Z",
	    "2026-12-31T23:59:59.Z",
	    "2026-12-31T23:59:59+1:00",
	    "2026-12-31T23:59:59Zjunk",
	    "tomorrow",
	};
	for (size_t i = 0; i < sizeof bad_times / sizeof bad_times[0]; i++) {
		snprintf(json, sizeof json,
			 "{\"auth\": {\"keys\": [{\"kid\": \"a\", \"secret_file\": \"s\", "
			 "\"not_after\": \"%s\"}]}}",
			 bad_times[i]);
		refuse(json, "auth.keys[0].not_after: must be an RFC 3339 time");
	}
	/* At most 16 keys: a token without kid is tried against each. */
	n = (size_t)snprintf(json, sizeof json, "{\"auth\": {\"keys\": [");
	for (int i = 0; i < 17; i++)
		n += (size_t)snprintf(json + n, sizeof json - n,
				      "%s{\"kid\": \"k%d\", "
				      "\"secret_file\": \"s\"}",
				      i ? ", " : "", i);
	snprintf(json + n, sizeof json - n, "]}}");
	refuse(json, "auth.keys: must have at most 16 entries");
	/* 16 is fine. */
	char *last = strstr(json, ", {\"kid\": \"k16\"");
	assert_non_null(last);
	snprintf(last, sizeof json - (size_t)(last - json), "]}}");
	struct config *c = load(json);
	assert_non_null(c);
	assert_int_equal(c->auth.n_keys, 16);
	config_free(c);
}

/* SIGHUP: what may change live moves in, the rest is named and left. */
static void test_apply_live(void **state)
{
	char restart[256];
	struct config *run, *fresh;

	(void)state;
	run = load("{" MIN_AUTH ", \"listen\": {\"port\": 1}, \"allowed_origins\": "
		   "[\"http://a.example\"], \"alerts\": {\"max_per_window\": 5}}");
	fresh = load("{\"auth\": {\"keys\": [" KEY_HS(
	    "k") "]}, \"listen\": {\"port\": 2}, "
		 "\"allowed_origins\": [\"http://a.example\", \"http://b.example\"], "
		 "\"alerts\": {\"max_per_window\": 9}, \"redis\": {\"db\": 3}, "
		 "\"log\": {\"level\": \"debug\"}}");
	assert_non_null(run);
	assert_non_null(fresh);
	assert_int_equal(config_apply_live(run, fresh, restart, sizeof restart), 2);
	assert_string_equal(restart, "listen.port, redis.db");
	assert_int_equal(run->listen.port, 1);
	assert_int_equal(run->redis.db, 0);
	assert_int_equal(run->n_allowed_origins, 2);
	assert_string_equal(run->allowed_origins[1], "http://b.example");
	assert_int_equal(run->alerts.max_per_window, 9);
	assert_int_equal(run->log.level, LOG_LEVEL_DEBUG);
	assert_int_equal(run->auth.n_keys, 1);
	assert_null(run->auth.secret_file);
	/* The old values went to fresh, and are freed with it. */
	assert_int_equal(fresh->n_allowed_origins, 1);
	assert_string_equal(fresh->auth.secret_file, "s");
	config_free(fresh);

	/* The same file again changes nothing; a short buffer truncates. */
	fresh = load("{\"auth\": {\"keys\": [" KEY_HS("k") "]}, \"listen\": {\"port\": 2}, "
							   "\"redis\": {\"db\": 3}}");
	assert_int_equal(config_apply_live(run, fresh, restart, 8), 2);
	assert_string_equal(restart, "listen.");
	config_free(fresh);
	config_free(run);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_match_spec),
	    cmocka_unit_test(test_minimal_file_keeps_defaults),
	    cmocka_unit_test(test_full_file),
	    cmocka_unit_test(test_later_values_replace_defaults),
	    cmocka_unit_test(test_comment_keys_ignored),
	    cmocka_unit_test(test_unknown_keys),
	    cmocka_unit_test(test_wrong_types),
	    cmocka_unit_test(test_out_of_range),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_sentinel_addresses),
	    cmocka_unit_test(test_unlimited_addresses),
	    cmocka_unit_test(test_enums),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_cross_field),
	    cmocka_unit_test(test_error_buffer_small),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_sample_config),
	    cmocka_unit_test(test_http_keys),
	    cmocka_unit_test(test_read_secret),
	    cmocka_unit_test(test_auth_keys),
	    cmocka_unit_test(test_auth_keys_refused),
	    cmocka_unit_test(test_apply_live),
	};

	/* config_read_secret warns about world-readable test files; keep output quiet. */
	log_setup(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
