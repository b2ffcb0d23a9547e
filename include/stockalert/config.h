#ifndef STOCKALERT_CONFIG_H
#define STOCKALERT_CONFIG_H
/*
 * The daemon's configuration: the JSON keys of conf/stockalertd.json. Loading is driven by
 * one table (key, type, bounds, default) in config.c; an unknown key, a wrong
 * type or an out-of-range value is an error naming the key. Keys whose name
 * starts with "//" are comments and ignored, so the sample file can document
 * itself.
 *
 * Strings are owned by the struct; NULL means JSON null / not set.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum auth_alg { AUTH_ALG_HS256, AUTH_ALG_RS256, AUTH_ALG_ES256 };

struct config_listen {
	char *host;			 /* "0.0.0.0" */
	int port;			 /* 8080, 1..65535 (0 = ephemeral, for tests) */
	int max_connections_per_address; /* 0 = no limit */
	char **unlimited_addresses;	 /* never refused (a local proxy) */
	size_t n_unlimited_addresses;
	int max_pending_handshakes; /* lws header buffers at once; 0 = no bound */
};

struct config_tls {
	char *cert_file; /* PEM certificate chain; NULL = plain HTTP */
	char *key_file;	 /* PEM private key; set together with cert_file */
};

/* At most this many entries in auth.keys: a token without "kid" is tried
 * against each, so the list bounds the work one bad token costs. */
#define CONFIG_AUTH_KEYS_MAX 16

/* One entry of auth.keys: a verification key with its own pinned algorithm
 * and claims, for rotating keys without a window of refused tokens. */
struct config_auth_key {
	char *kid;		 /* the header "kid" naming this key; required, unique */
	enum auth_alg algorithm; /* pinned per key */
	char *secret_file;	 /* HS256 */
	char *public_key_file;	 /* RS256/ES256 */
	char *issuer;		 /* required "iss" when set */
	char *audience;		 /* required "aud" when set */
	char *not_after;	 /* RFC 3339; NULL = no end */
	int64_t not_after_s;	 /* not_after as seconds since the epoch; INT64_MAX if NULL */
};

struct config_auth {
	/* The single key (when keys is empty): */
	enum auth_alg algorithm; /* pinned; tokens with another alg are refused */
	char *secret_file;	 /* HS256 secret (file contents, trailing newline trimmed) */
	char *public_key_file;	 /* RS256/ES256 PEM public key */
	char *issuer;		 /* required "iss" when set */
	char *audience;		 /* required "aud" when set */
	int leeway_s;		 /* clock skew allowed on exp/nbf, 0..3600 */
	/* Several keys (auth.keys); when set, the single-key fields are unset. */
	struct config_auth_key *keys;
	size_t n_keys;
};

struct config_redis {
	char *host;
	int port;
	char *password;
	int db;			    /* 0..15 */
	char *prefix;		    /* "stockalert:" */
	char *sentinel_master_name; /* NULL = no Sentinel */
	char **sentinel_addresses;  /* "host:port" strings */
	size_t n_sentinel_addresses;
};

struct config_mysql {
	char *host;
	int port;
	char *user;
	char *password;	     /* literal password (prefer password_file) */
	char *password_file; /* file holding the password; wins over password */
	char *database;
};

struct config_ws {
	int ping_interval_s;
	int idle_timeout_s;
	int max_message_bytes;
	int send_queue_max;
	int max_connections;
	int max_connections_per_user;
	int max_inflight_per_socket; /* subscription changes under way per socket */
};

struct config_alerts {
	int max_per_window;
	int window_s;
	int history_s;
	double fair_release_factor; /* 0 = everyone at once */
	int fair_release_interval_s;
	int stock_ttl_s; /* a product's shared stock level outlives its last event by this */
};

struct config_http {
	int request_timeout_ms; /* a REST answer's deadline: 503 past it */
};

struct config_log {
	int level;  /* enum log_level */
	int format; /* enum log_format */
};

struct config {
	struct config_listen listen;
	struct config_tls tls;
	char **allowed_origins;
	size_t n_allowed_origins;
	struct config_auth auth;
	struct config_redis redis;
	struct config_mysql mysql;
	struct config_ws ws;
	struct config_alerts alerts;
	struct config_http http;
	int subscriptions_max_per_user;
	int subscriptions_max_inflight_per_user; /* changes under way per user */
	int catalog_max_entries;		 /* products cached */
	char *static_dir;
	int shutdown_grace_s;
	struct config_log log;
};

/* Returns a config holding every default. Never NULL. */
struct config *config_new_defaults(void);

/*
 * Loads the JSON file at path over the defaults. On error returns -1, writes
 * a one-line reason naming the key (e.g. "ws.ping_interval_s: must be an
 * integer between 1 and 3600") into err, and sets *out to NULL.
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Same as config_load, from a JSON text (used by tests and the fuzzer). */
int config_load_string(const char *json, size_t len, struct config **out, char *err, size_t errlen);

/* Reads a secret file (password, HS256 key): whole file, trailing newlines
 * trimmed. Returns NULL and fills err if unreadable or empty. */
char *config_read_secret(const char *path, char *err, size_t errlen);

/* Checks that the files the configuration names (TLS certificate and key)
 * can be opened and are not empty; err names the key. Returns 0 or -1. */
int config_check_files(const struct config *cfg, char *err, size_t errlen);

const char *config_alg_name(enum auth_alg alg);

/*
 * SIGHUP: moves the values of the keys that can change while running from
 * fresh into running (running's old values go to fresh, to be freed with it)
 * and leaves the others as they are. Writes the names of the keys that differ
 * but need a restart, comma-separated, into restart (truncated to restartlen)
 * and returns how many there are. Both configurations must have loaded.
 */
size_t config_apply_live(struct config *running, struct config *fresh, char *restart,
			 size_t restartlen);

/*
 * Writes the table of keys to out as a JSON array, one object per key:
 * {"key", "type", "default", "min", "max"} (min/max: the value for integer and
 * number keys, the length for strings, the entry count for arrays) and
 * "choices" instead of bounds for enums. It is what `stockalertd
 * --config-keys` prints, and what the test of conf/stockalertd.json reads.
 * Returns 0, or -1 when writing failed.
 */
int config_write_keys(FILE *out);

/* Whether origin (an Origin header's value) is one of allowed_origins,
 * exactly: the browsers /ws and the REST API's CORS answers accept. */
bool config_origin_listed(const struct config *cfg, const char *origin);

void config_free(struct config *cfg);

#endif
