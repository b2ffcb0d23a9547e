#ifndef STOCKALERT_CONFIG_H
#define STOCKALERT_CONFIG_H
/*
 * The daemon's configuration: the JSON keys of SPEC §2. Loading is driven by
 * one table (key, type, bounds, default) in config.c; an unknown key, a wrong
 * type or an out-of-range value is an error naming the key. Keys whose name
 * starts with "//" are comments and ignored, so the sample file can document
 * itself.
 *
 * Strings are owned by the struct; NULL means JSON null / not set.
 */
#include <stddef.h>

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

struct config_auth {
	enum auth_alg algorithm; /* pinned; tokens with another alg are refused */
	char *secret_file;	 /* HS256 secret (file contents, trailing newline trimmed) */
	char *public_key_file;	 /* RS256/ES256 PEM public key */
	char *issuer;		 /* required "iss" when set */
	char *audience;		 /* required "aud" when set */
	int leeway_s;		 /* clock skew allowed on exp/nbf, 0..3600 */
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
};

struct config_alerts {
	int max_per_window;
	int window_s;
	int history_s;
	double fair_release_factor; /* 0 = everyone at once */
	int fair_release_interval_s;
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
	int subscriptions_max_per_user;
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

void config_free(struct config *cfg);

#endif
