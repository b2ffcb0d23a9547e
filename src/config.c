#include "stockalert/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stockalert/errbuf.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

/*
 * Every key the daemon understands, with its type, bounds and default, lives
 * in the one table below (after redis' config.c): the defaults, the loader,
 * the free path and the error messages all walk it, so a key cannot be added
 * in one place and forgotten in another.
 */

/* Enum values are written through an int *, like the log level and format. */
_Static_assert(sizeof(enum auth_alg) == sizeof(int), "enum auth_alg must be int-sized");

#define CONFIG_FILE_MAX (1024 * 1024)
#define SECRET_FILE_MAX (64 * 1024)
#define PATH_LEN_MAX	4096
#define HOST_LEN_MAX	255
#define KEY_PATH_MAX	128

enum entry_type {
	T_STRING,  /* char *, never NULL */
	T_NSTRING, /* char *, NULL = JSON null */
	T_INT,	   /* int, JSON integer only */
	T_DOUBLE,  /* double, JSON integer or real */
	T_ENUM,	   /* int, JSON string parsed by ->parse */
	T_STRARR,  /* char ** plus a size_t count at ->count_off */
};

/* Strings: no whitespace or control characters (hosts, the key prefix). */
#define F_NOSPACE 1u

struct entry {
	const char *key;
	enum entry_type type;
	size_t off;
	size_t count_off;   /* T_STRARR: offset of the element count */
	long long min, max; /* T_INT: value; strings: length; T_STRARR: elements */
	double dmin, dmax;  /* T_DOUBLE */
	long long def_int;
	double def_double;
	const char *def_str;	     /* T_STRING, T_NSTRING, T_ENUM (by name) */
	const char *const *def_arr;  /* T_STRARR, NULL-terminated */
	int (*parse)(const char *s); /* T_ENUM: value or -1 */
	const char *choices;	     /* T_ENUM: for the error message */
	/* Strings and array elements: extra format check, described by ->what. */
	bool (*valid)(const char *s);
	const char *what;
	unsigned flags;
	size_t elem_len_max; /* T_STRARR: per-element length bound */
};

#define OFF(field) offsetof(struct config, field)

#define E_STR(k, f, def, lmax, fl)                                                                 \
	{                                                                                          \
		.key = (k), .type = T_STRING, .off = OFF(f), .min = 1, .max = (lmax),              \
		.def_str = (def), .flags = (fl)                                                    \
	}
#define E_NSTR(k, f, lmax, fl)                                                                     \
	{                                                                                          \
		.key = (k), .type = T_NSTRING, .off = OFF(f), .min = 1, .max = (lmax),             \
		.flags = (fl)                                                                      \
	}
#define E_INT(k, f, def, lo, hi)                                                                   \
	{                                                                                          \
		.key = (k), .type = T_INT, .off = OFF(f), .min = (lo), .max = (hi),                \
		.def_int = (def)                                                                   \
	}
#define E_DBL(k, f, def, lo, hi)                                                                   \
	{                                                                                          \
		.key = (k), .type = T_DOUBLE, .off = OFF(f), .dmin = (lo), .dmax = (hi),           \
		.def_double = (def)                                                                \
	}
#define E_ENUM(k, f, def, fn, ch)                                                                  \
	{                                                                                          \
		.key = (k), .type = T_ENUM, .off = OFF(f), .def_str = (def), .parse = (fn),        \
		.choices = (ch)                                                                    \
	}
#define E_ARR(k, f, n, def, nmax, emax, fn, w)                                                     \
	{                                                                                          \
		.key = (k), .type = T_STRARR, .off = OFF(f), .count_off = OFF(n), .min = 0,        \
		.max = (nmax), .def_arr = (def), .elem_len_max = (emax), .valid = (fn),            \
		.what = (w)                                                                        \
	}

static int alg_parse(const char *s);
static bool origin_valid(const char *s);
static bool hostport_valid(const char *s);
static bool ipaddr_valid(const char *s);

static const char *const default_origins[] = {"http://localhost:8080", NULL};
static const char *const default_sentinels[] = {NULL};
/* Where a reverse proxy on the same host connects from. */
static const char *const default_unlimited[] = {"127.0.0.1", "::1", NULL};

static const struct entry table[] = {
    E_STR("listen.host", listen.host, "0.0.0.0", HOST_LEN_MAX, F_NOSPACE),
    /* 0 asks the kernel for a free port; the tests rely on it. */
    E_INT("listen.port", listen.port, 8080, 0, 65535),
    /* Sockets one address may hold (issue 18); 0 = no limit. */
    E_INT("listen.max_connections_per_address", listen.max_connections_per_address, 2048, 0,
	  1000000),
    E_ARR("listen.unlimited_addresses", listen.unlimited_addresses, listen.n_unlimited_addresses,
	  default_unlimited, 64, 64, ipaddr_valid, "a numeric IPv4 or IPv6 address"),
    /* Handshakes under way before accepting pauses (peers.h); 0 = no bound. */
    E_INT("listen.max_pending_handshakes", listen.max_pending_handshakes, 256, 0, 65535),

    E_NSTR("tls.cert_file", tls.cert_file, PATH_LEN_MAX, 0),
    E_NSTR("tls.key_file", tls.key_file, PATH_LEN_MAX, 0),

    E_ARR("allowed_origins", allowed_origins, n_allowed_origins, default_origins, 256, 1024,
	  origin_valid, "an origin like \"https://shop.example\" (no path)"),

    E_ENUM("auth.algorithm", auth.algorithm, "HS256", alg_parse, "HS256|RS256|ES256"),
    E_NSTR("auth.secret_file", auth.secret_file, PATH_LEN_MAX, 0),
    E_NSTR("auth.public_key_file", auth.public_key_file, PATH_LEN_MAX, 0),
    E_NSTR("auth.issuer", auth.issuer, 1024, 0),
    E_NSTR("auth.audience", auth.audience, 1024, 0),
    E_INT("auth.leeway_s", auth.leeway_s, 30, 0, 3600),

    E_STR("redis.host", redis.host, "127.0.0.1", HOST_LEN_MAX, F_NOSPACE),
    E_INT("redis.port", redis.port, 6379, 1, 65535),
    E_NSTR("redis.password", redis.password, 4096, 0),
    E_INT("redis.db", redis.db, 0, 0, 15),
    E_STR("redis.prefix", redis.prefix, "stockalert:", 64, F_NOSPACE),
    E_NSTR("redis.sentinel.master_name", redis.sentinel_master_name, 255, F_NOSPACE),
    E_ARR("redis.sentinel.addresses", redis.sentinel_addresses, redis.n_sentinel_addresses,
	  default_sentinels, 64, HOST_LEN_MAX + 7, hostport_valid, "\"host:port\" (port 1..65535)"),

    E_STR("mysql.host", mysql.host, "127.0.0.1", HOST_LEN_MAX, F_NOSPACE),
    E_INT("mysql.port", mysql.port, 3306, 1, 65535),
    E_STR("mysql.user", mysql.user, "stockalert", 255, 0),
    E_NSTR("mysql.password", mysql.password, 4096, 0),
    E_NSTR("mysql.password_file", mysql.password_file, PATH_LEN_MAX, 0),
    E_STR("mysql.database", mysql.database, "stockalert", 64, 0),

    E_INT("ws.ping_interval_s", ws.ping_interval_s, 25, 1, 3600),
    E_INT("ws.idle_timeout_s", ws.idle_timeout_s, 60, 1, 86400),
    E_INT("ws.max_message_bytes", ws.max_message_bytes, 4096, 64, 1048576),
    E_INT("ws.send_queue_max", ws.send_queue_max, 256, 1, 65536),
    E_INT("ws.max_connections", ws.max_connections, 100000, 1, 1000000),
    E_INT("ws.max_connections_per_user", ws.max_connections_per_user, 8, 1, 1000),

    E_INT("alerts.max_per_window", alerts.max_per_window, 5, 1, 10000),
    E_INT("alerts.window_s", alerts.window_s, 60, 1, 86400),
    E_INT("alerts.history_s", alerts.history_s, 86400, 60, 2592000),
    E_DBL("alerts.fair_release_factor", alerts.fair_release_factor, 0.0, 0.0, 1000.0),
    E_INT("alerts.fair_release_interval_s", alerts.fair_release_interval_s, 30, 1, 86400),

    E_INT("subscriptions.max_per_user", subscriptions_max_per_user, 200, 1, 100000),

    E_STR("static_dir", static_dir, "share/stockalert/www", PATH_LEN_MAX, 0),
    E_INT("shutdown_grace_s", shutdown_grace_s, 10, 0, 300),

    E_ENUM("log.level", log.level, "info", log_level_parse, "error|warn|info|debug"),
    E_ENUM("log.format", log.format, "text", log_format_parse, "text|json"),
};

#define N_ENTRIES (sizeof table / sizeof table[0])

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

static int alg_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof alg_names / sizeof alg_names[0]); i++)
		if (strcmp(s, alg_names[i]) == 0)
			return i;
	return -1;
}

const char *config_alg_name(enum auth_alg alg)
{
	if ((unsigned)alg < sizeof alg_names / sizeof alg_names[0])
		return alg_names[alg];
	return "?";
}

static void *field(struct config *cfg, const struct entry *e)
{
	return (char *)cfg + e->off;
}

static size_t *count_field(struct config *cfg, const struct entry *e)
{
	return (size_t *)(void *)((char *)cfg + e->count_off);
}

static void strarr_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mem_free(v[i]);
	mem_free(v);
}

/*
 * An Origin header is scheme://host[:port] and nothing else, so a value with
 * a path or a trailing slash could never match: refuse it here rather than
 * refuse every browser later without saying why.
 */
static bool origin_valid(const char *s)
{
	const char *host;

	if (strncmp(s, "http://", 7) == 0)
		host = s + 7;
	else if (strncmp(s, "https://", 8) == 0)
		host = s + 8;
	else
		return false;
	if (*host == '\0')
		return false;
	for (const char *p = host; *p; p++)
		if (*p == '/' || isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
			return false;
	return true;
}

/* "host:port" or "[v6addr]:port", port 1..65535 in plain digits. */
static bool hostport_valid(const char *s)
{
	const char *colon;
	long port = 0;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close == s + 1 || close[1] != ':')
			return false;
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || colon == s || memchr(s, ':', (size_t)(colon - s)))
			return false;
	}
	for (const char *p = s; p < colon; p++)
		if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
			return false;
	if (colon[1] == '\0')
		return false;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		port = port * 10 + (*p - '0');
		if (port > 65535)
			return false;
	}
	return port >= 1;
}

static bool ipaddr_valid(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool has_space(const char *s)
{
	for (; *s; s++)
		if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
			return true;
	return false;
}

/* Checks a string value against e's length bounds and format. */
static int check_string(const struct entry *e, const char *key, const char *s, size_t len,
			size_t len_max, char *err, size_t errlen)
{
	if (len == 0) {
		errbuf_set(err, errlen, "%s: must not be empty%s", key,
			   e->type == T_NSTRING ? " (use null to leave it unset)" : "");
		return -1;
	}
	if (len > len_max) {
		errbuf_set(err, errlen, "%s: must be at most %zu characters", key, len_max);
		return -1;
	}
	if ((e->flags & F_NOSPACE) && has_space(s)) {
		errbuf_set(err, errlen, "%s: must not contain spaces or control characters", key);
		return -1;
	}
	if (e->valid && !e->valid(s)) {
		errbuf_set(err, errlen, "%s: must be %s", key, e->what);
		return -1;
	}
	return 0;
}

static int set_strarr(struct config *cfg, const struct entry *e, const char *key, json_t *v,
		      char *err, size_t errlen)
{
	char elem_key[KEY_PATH_MAX + 24];
	char **arr = NULL;
	size_t n, i;
	json_t *item;

	if (!json_is_array(v)) {
		errbuf_set(err, errlen, "%s: must be an array of strings", key);
		return -1;
	}
	n = json_array_size(v);
	if ((long long)n > e->max) {
		errbuf_set(err, errlen, "%s: must have at most %lld entries", key, e->max);
		return -1;
	}
	arr = mem_calloc(n + 1, sizeof *arr);
	json_array_foreach(v, i, item)
	{
		snprintf(elem_key, sizeof elem_key, "%s[%zu]", key, i);
		if (!json_is_string(item)) {
			errbuf_set(err, errlen, "%s: must be a string", elem_key);
			goto err;
		}
		if (check_string(e, elem_key, json_string_value(item), json_string_length(item),
				 e->elem_len_max, err, errlen))
			goto err;
		arr[i] = mem_strdup(json_string_value(item));
	}
	strarr_free(*(char ***)field(cfg, e), *count_field(cfg, e));
	*(char ***)field(cfg, e) = arr;
	*count_field(cfg, e) = n;
	return 0;
err:
	strarr_free(arr, n);
	return -1;
}

/* Stores JSON value v into the field of entry e, or explains why not. */
static int set_value(struct config *cfg, const struct entry *e, const char *key, json_t *v,
		     char *err, size_t errlen)
{
	char **sp;
	int parsed;

	switch (e->type) {
	case T_INT: {
		json_int_t i;

		/* A real (25.0) or a string ("25") is refused: strict, never atoi. */
		if (!json_is_integer(v))
			goto bad_int;
		i = json_integer_value(v);
		if (i < e->min || i > e->max)
			goto bad_int;
		*(int *)field(cfg, e) = (int)i;
		return 0;
	bad_int:
		errbuf_set(err, errlen, "%s: must be an integer between %lld and %lld", key, e->min,
			   e->max);
		return -1;
	}
	case T_DOUBLE: {
		double d;

		if (!json_is_number(v))
			goto bad_double;
		d = json_number_value(v);
		if (!isfinite(d) || d < e->dmin || d > e->dmax)
			goto bad_double;
		*(double *)field(cfg, e) = d;
		return 0;
	bad_double:
		errbuf_set(err, errlen, "%s: must be a number between %g and %g", key, e->dmin,
			   e->dmax);
		return -1;
	}
	case T_ENUM:
		if (!json_is_string(v) || (parsed = e->parse(json_string_value(v))) < 0) {
			errbuf_set(err, errlen, "%s: must be one of %s", key, e->choices);
			return -1;
		}
		*(int *)field(cfg, e) = parsed;
		return 0;
	case T_NSTRING:
	case T_STRING:
		sp = field(cfg, e);
		if (json_is_null(v) && e->type == T_NSTRING) {
			mem_free(*sp);
			*sp = NULL;
			return 0;
		}
		if (!json_is_string(v)) {
			errbuf_set(err, errlen, "%s: must be a string%s", key,
				   e->type == T_NSTRING ? " or null" : "");
			return -1;
		}
		if (check_string(e, key, json_string_value(v), json_string_length(v),
				 (size_t)e->max, err, errlen))
			return -1;
		mem_free(*sp);
		*sp = mem_strdup(json_string_value(v));
		return 0;
	case T_STRARR: return set_strarr(cfg, e, key, v, err, errlen);
	}
	errbuf_set(err, errlen, "%s: internal error: bad entry type", key);
	return -1;
}

static const struct entry *find_entry(const char *key)
{
	for (size_t i = 0; i < N_ENTRIES; i++)
		if (strcmp(table[i].key, key) == 0)
			return &table[i];
	return NULL;
}

/* True when path names an object of the table ("ws", "redis.sentinel"). */
static bool is_section(const char *path)
{
	size_t n = strlen(path);

	for (size_t i = 0; i < N_ENTRIES; i++)
		if (strncmp(table[i].key, path, n) == 0 && table[i].key[n] == '.')
			return true;
	return false;
}

/*
 * Builds prefix.name into out for lookups and messages. Control characters
 * become '?' so a hostile key cannot forge log lines; such a key is unknown
 * anyway. Returns false when the name cannot be a table key (empty, dotted,
 * too long) — out still holds something printable for the message.
 */
static bool make_path(char *out, size_t outlen, const char *prefix, const char *name)
{
	size_t n = 0;
	bool ok = name[0] != '\0' && (prefix[0] ? strlen(prefix) + 1 : 0) + strlen(name) < outlen;

	if (prefix[0]) {
		n = (size_t)snprintf(out, outlen, "%s.", prefix);
		if (n >= outlen)
			n = outlen - 1;
	}
	for (const char *p = name; *p && n + 1 < outlen; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '.')
			ok = false;
		out[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[n] = '\0';
	return ok;
}

static int walk(struct config *cfg, json_t *obj, const char *prefix, char *err, size_t errlen)
{
	char path[KEY_PATH_MAX];
	const char *name;
	const struct entry *e;
	json_t *v;

	json_object_foreach(obj, name, v)
	{
		if (strncmp(name, "//", 2) == 0)
			continue;
		if (!make_path(path, sizeof path, prefix, name))
			goto unknown;
		e = find_entry(path);
		if (e) {
			if (set_value(cfg, e, path, v, err, errlen))
				return -1;
			continue;
		}
		if (!is_section(path))
			goto unknown;
		if (!json_is_object(v)) {
			errbuf_set(err, errlen, "%s: must be an object", path);
			return -1;
		}
		if (walk(cfg, v, path, err, errlen))
			return -1;
	}
	return 0;
unknown:
	errbuf_set(err, errlen, "%s: unknown key", path);
	return -1;
}

/* Rules that involve more than one key; each message names the key to fix. */
static int cross_check(const struct config *cfg, char *err, size_t errlen)
{
	const struct config_auth *a = &cfg->auth;

	if (cfg->ws.idle_timeout_s <= cfg->ws.ping_interval_s) {
		errbuf_set(err, errlen,
			   "ws.idle_timeout_s: must be greater than ws.ping_interval_s (%d), "
			   "or every client is dropped between two pings",
			   cfg->ws.ping_interval_s);
		return -1;
	}
	/* Never run without a way to verify tokens: that would be no auth. */
	if (a->algorithm == AUTH_ALG_HS256) {
		if (!a->secret_file) {
			errbuf_set(err, errlen,
				   "auth.secret_file: required when auth.algorithm is HS256");
			return -1;
		}
		if (a->public_key_file) {
			errbuf_set(err, errlen,
				   "auth.public_key_file: not used with HS256 (set it to null, or "
				   "choose RS256/ES256)");
			return -1;
		}
	} else {
		if (!a->public_key_file) {
			errbuf_set(err, errlen,
				   "auth.public_key_file: required when auth.algorithm is %s",
				   config_alg_name(a->algorithm));
			return -1;
		}
		if (a->secret_file) {
			errbuf_set(err, errlen,
				   "auth.secret_file: not used with %s (set it to null)",
				   config_alg_name(a->algorithm));
			return -1;
		}
	}
	if (cfg->tls.cert_file && !cfg->tls.key_file) {
		errbuf_set(err, errlen, "tls.key_file: required when tls.cert_file is set");
		return -1;
	}
	if (!cfg->tls.cert_file && cfg->tls.key_file) {
		errbuf_set(err, errlen, "tls.cert_file: required when tls.key_file is set");
		return -1;
	}
	if (cfg->redis.sentinel_master_name && cfg->redis.n_sentinel_addresses == 0) {
		errbuf_set(err, errlen,
			   "redis.sentinel.addresses: required when "
			   "redis.sentinel.master_name is set");
		return -1;
	}
	if (!cfg->redis.sentinel_master_name && cfg->redis.n_sentinel_addresses > 0) {
		errbuf_set(err, errlen,
			   "redis.sentinel.master_name: required when "
			   "redis.sentinel.addresses is set");
		return -1;
	}
	return 0;
}

struct config *config_new_defaults(void)
{
	struct config *cfg = mem_calloc(1, sizeof *cfg);

	for (size_t i = 0; i < N_ENTRIES; i++) {
		const struct entry *e = &table[i];
		size_t n = 0;
		char **arr;

		switch (e->type) {
		case T_INT: *(int *)field(cfg, e) = (int)e->def_int; break;
		case T_DOUBLE: *(double *)field(cfg, e) = e->def_double; break;
		case T_ENUM: *(int *)field(cfg, e) = e->parse(e->def_str); break;
		case T_STRING:
		case T_NSTRING:
			*(char **)field(cfg, e) = e->def_str ? mem_strdup(e->def_str) : NULL;
			break;
		case T_STRARR:
			while (e->def_arr[n])
				n++;
			arr = mem_calloc(n + 1, sizeof *arr);
			for (size_t j = 0; j < n; j++)
				arr[j] = mem_strdup(e->def_arr[j]);
			*(char ***)field(cfg, e) = arr;
			*count_field(cfg, e) = n;
			break;
		}
	}
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_ENTRIES; i++) {
		const struct entry *e = &table[i];

		if (e->type == T_STRING || e->type == T_NSTRING)
			mem_free(*(char **)field(cfg, e));
		else if (e->type == T_STRARR)
			strarr_free(*(char ***)field(cfg, e), *count_field(cfg, e));
	}
	mem_free(cfg);
}

/*
 * jansson says "duplicate object key" but not which one once the key is
 * longer than its 20-character context; the error position is just past the
 * key's closing quote, so take the string token that ends there and let
 * jansson decode it.
 */
static void duplicate_key_name(const char *json, size_t len, size_t pos, char *out, size_t outlen)
{
	size_t end, start;
	json_t *s;

	out[0] = '\0';
	if (pos == 0 || pos > len || json[pos - 1] != '"')
		return;
	end = pos - 1;
	for (start = end; start > 0; start--) {
		size_t bs = 0;

		if (json[start - 1] != '"')
			continue;
		while (start - 1 > bs && json[start - 2 - bs] == '\\')
			bs++;
		if (bs % 2 == 0)
			break;
	}
	if (start == 0)
		return;
	s = json_loadb(json + start - 1, end - start + 2, JSON_DECODE_ANY, NULL);
	if (json_is_string(s))
		make_path(out, outlen, "", json_string_value(s));
	json_decref(s);
}

static int load_buffer(const char *json, size_t len, const char *source, struct config **out,
		       char *err, size_t errlen)
{
	struct config *cfg = NULL;
	json_error_t jerr;
	json_t *root;

	*out = NULL;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char dup[KEY_PATH_MAX] = "";

		if (json_error_code(&jerr) == json_error_duplicate_key)
			duplicate_key_name(json, len, (size_t)jerr.position, dup, sizeof dup);
		if (dup[0])
			errbuf_set(err, errlen, "%s:%d:%d: duplicate key \"%s\"", source, jerr.line,
				   jerr.column, dup);
		else
			errbuf_set(err, errlen, "%s:%d:%d: %s", source, jerr.line, jerr.column,
				   jerr.text);
		return -1;
	}
	/* json_loadb without JSON_DECODE_ANY only returns arrays or objects. */
	if (!json_is_object(root)) {
		errbuf_set(err, errlen, "%s: the top level must be a JSON object", source);
		goto err;
	}
	cfg = config_new_defaults();
	if (walk(cfg, root, "", err, errlen) || cross_check(cfg, err, errlen))
		goto err;
	json_decref(root);
	*out = cfg;
	return 0;
err:
	config_free(cfg);
	json_decref(root);
	return -1;
}

/*
 * Reads at most max bytes of path into a NUL-terminated buffer; a longer file
 * is an error rather than silently cut.
 */
static char *read_file(const char *path, size_t max, size_t *lenp, char *err, size_t errlen)
{
	char *data;
	size_t len = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		errbuf_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	data = mem_alloc(max + 2);
	for (;;) {
		ssize_t n = read(fd, data + len, max + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			errbuf_set(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			goto err;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			errbuf_set(err, errlen, "%s: larger than %zu bytes", path, max);
			goto err;
		}
	}
	close(fd);
	data[len] = '\0';
	*lenp = len;
	return data;
err:
	close(fd);
	mem_free(data);
	return NULL;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	size_t len;
	char *data;
	int rc;

	*out = NULL;
	data = read_file(path, CONFIG_FILE_MAX, &len, err, errlen);
	if (!data)
		return -1;
	rc = load_buffer(data, len, path, out, err, errlen);
	mem_free(data);
	return rc;
}

int config_load_string(const char *json, size_t len, struct config **out, char *err, size_t errlen)
{
	return load_buffer(json, len, "config", out, err, errlen);
}

char *config_read_secret(const char *path, char *err, size_t errlen)
{
	struct stat st;
	size_t len;
	char *data;

	data = read_file(path, SECRET_FILE_MAX, &len, err, errlen);
	if (!data)
		return NULL;
	/* A NUL would silently shorten the secret everyone else sees. */
	if (memchr(data, '\0', len)) {
		errbuf_set(err, errlen, "%s: contains a NUL byte", path);
		goto err;
	}
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		data[--len] = '\0';
	if (len == 0) {
		errbuf_set(err, errlen, "%s: is empty", path);
		goto err;
	}
	if (stat(path, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH)))
		log_warn("config", "%s: secret file is accessible to other users (chmod 600)",
			 path);
	return data;
err:
	explicit_bzero(data, len);
	mem_free(data);
	return NULL;
}

static int check_readable(const char *key, const char *path, char *err, size_t errlen)
{
	struct stat st;
	FILE *f;

	if (!path)
		return 0;
	if (stat(path, &st) != 0) {
		errbuf_set(err, errlen, "%s: %s: %s", key, path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		errbuf_set(err, errlen, "%s: %s: not a non-empty regular file", key, path);
		return -1;
	}
	f = fopen(path, "r");
	if (!f) {
		errbuf_set(err, errlen, "%s: %s: %s", key, path, strerror(errno));
		return -1;
	}
	fclose(f);
	return 0;
}

int config_check_files(const struct config *cfg, char *err, size_t errlen)
{
	if (check_readable("tls.cert_file", cfg->tls.cert_file, err, errlen) != 0 ||
	    check_readable("tls.key_file", cfg->tls.key_file, err, errlen) != 0)
		return -1;
	return 0;
}
