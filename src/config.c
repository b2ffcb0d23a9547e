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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
	T_OBJARR,  /* array of ->elem_size structs, each field an entry of ->sub */
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
	/* T_OBJARR: the table of an element's keys, relative to the element. */
	const struct entry *sub;
	size_t n_sub;
	size_t elem_size;
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
static bool rfc3339_valid(const char *s);

/* The keys of one auth.keys entry; offsets are within struct config_auth_key. */
#define KOFF(f) offsetof(struct config_auth_key, f)
static const struct entry auth_key_table[] = {
    {.key = "kid", .type = T_NSTRING, .off = KOFF(kid), .min = 1, .max = 128, .flags = F_NOSPACE},
    {.key = "algorithm",
     .type = T_ENUM,
     .off = KOFF(algorithm),
     .def_str = "HS256",
     .parse = alg_parse,
     .choices = "HS256|RS256|ES256"},
    {.key = "secret_file",
     .type = T_NSTRING,
     .off = KOFF(secret_file),
     .min = 1,
     .max = PATH_LEN_MAX},
    {.key = "public_key_file",
     .type = T_NSTRING,
     .off = KOFF(public_key_file),
     .min = 1,
     .max = PATH_LEN_MAX},
    {.key = "issuer", .type = T_NSTRING, .off = KOFF(issuer), .min = 1, .max = 1024},
    {.key = "audience", .type = T_NSTRING, .off = KOFF(audience), .min = 1, .max = 1024},
    {.key = "not_after",
     .type = T_NSTRING,
     .off = KOFF(not_after),
     .min = 1,
     .max = 64,
     .valid = rfc3339_valid,
     .what = "an RFC 3339 time like \"2026-12-31T23:59:59Z\""},
};
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
    /* Key rotation: several keys side by side, each with its own algorithm. */
    {.key = "auth.keys",
     .type = T_OBJARR,
     .off = OFF(auth.keys),
     .count_off = OFF(auth.n_keys),
     .min = 0,
     .max = CONFIG_AUTH_KEYS_MAX,
     .sub = auth_key_table,
     .n_sub = sizeof auth_key_table / sizeof auth_key_table[0],
     .elem_size = sizeof(struct config_auth_key)},

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
    E_INT("ws.max_inflight_per_socket", ws.max_inflight_per_socket, 8, 1, 1000),

    E_INT("alerts.max_per_window", alerts.max_per_window, 5, 1, 10000),
    E_INT("alerts.window_s", alerts.window_s, 60, 1, 86400),
    E_INT("alerts.history_s", alerts.history_s, 86400, 60, 2592000),
    E_DBL("alerts.fair_release_factor", alerts.fair_release_factor, 0.0, 0.0, 1000.0),
    E_INT("alerts.fair_release_interval_s", alerts.fair_release_interval_s, 30, 1, 86400),
    E_INT("alerts.stock_ttl_s", alerts.stock_ttl_s, 2592000, 86400, 31536000),

    /* Below lws's 10 s timeout_secs (server.c), which would close the
     * connection with no answer at all. */
    E_INT("http.request_timeout_ms", http.request_timeout_ms, 8000, 100, 9000),

    E_INT("subscriptions.max_per_user", subscriptions_max_per_user, 200, 1, 100000),
    E_INT("subscriptions.max_inflight_per_user", subscriptions_max_inflight_per_user, 16, 1, 10000),

    E_INT("catalog.max_entries", catalog_max_entries, 10000, 16, 10000000),

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

static const char *const type_names[] = {
    [T_STRING] = "string", [T_NSTRING] = "string|null", [T_INT] = "integer",  [T_DOUBLE] = "number",
    [T_ENUM] = "enum",	   [T_STRARR] = "array",	[T_OBJARR] = "array",
};

/* One entry as JSON: what conf/stockalertd.json must document about it.
 * key is e->key, or "parent[].key" for a field of an array's elements. */
static json_t *entry_json(const struct entry *e, const char *key)
{
	json_t *o = json_object(), *v;

	json_object_set_new(o, "key", json_string(key));
	json_object_set_new(o, "type", json_string(type_names[e->type]));
	switch (e->type) {
	case T_INT: json_object_set_new(o, "default", json_integer(e->def_int)); break;
	case T_DOUBLE:
		json_object_set_new(o, "default", json_real(e->def_double));
		json_object_set_new(o, "min", json_real(e->dmin));
		json_object_set_new(o, "max", json_real(e->dmax));
		return o;
	case T_ENUM: {
		const char *p = e->choices, *bar;

		json_object_set_new(o, "default", json_string(e->def_str));
		v = json_array();
		/* ->choices is the error message's "a|b|c". */
		for (; (bar = strchr(p, '|')); p = bar + 1)
			json_array_append_new(v, json_stringn(p, (size_t)(bar - p)));
		json_array_append_new(v, json_string(p));
		json_object_set_new(o, "choices", v);
		return o;
	}
	case T_STRING:
	case T_NSTRING:
		json_object_set_new(o, "default",
				    e->def_str ? json_string(e->def_str) : json_null());
		break;
	case T_STRARR:
		v = json_array();
		for (size_t i = 0; e->def_arr[i]; i++)
			json_array_append_new(v, json_string(e->def_arr[i]));
		json_object_set_new(o, "default", v);
		break;
	case T_OBJARR: json_object_set_new(o, "default", json_array()); break;
	}
	/* ->min and ->max: the value, the length or the entry count. */
	json_object_set_new(o, "min", json_integer(e->min));
	json_object_set_new(o, "max", json_integer(e->max));
	return o;
}

static int write_key(FILE *out, const struct entry *e, const char *key, bool first)
{
	json_t *o = entry_json(e, key);
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);

	json_decref(o);
	if (!line)
		return -1;
	fprintf(out, "%s%s", first ? "" : ",\n", line);
	free(line);
	return 0;
}

int config_write_keys(FILE *out)
{
	char key[KEY_PATH_MAX + 8];

	fputs("[\n", out);
	for (size_t i = 0; i < N_ENTRIES; i++) {
		const struct entry *e = &table[i];

		if (write_key(out, e, e->key, i == 0) < 0)
			return -1;
		/* An element's keys follow their array as "array[].key". */
		for (size_t j = 0; e->type == T_OBJARR && j < e->n_sub; j++) {
			snprintf(key, sizeof key, "%s[].%s", e->key, e->sub[j].key);
			if (write_key(out, &e->sub[j], key, false) < 0)
				return -1;
		}
	}
	fputs("\n]\n", out);
	return ferror(out) ? -1 : 0;
}

bool config_origin_listed(const struct config *cfg, const char *origin)
{
	for (size_t i = 0; i < cfg->n_allowed_origins; i++)
		if (strcmp(origin, cfg->allowed_origins[i]) == 0)
			return true;
	return false;
}

/* base is the struct config, or an array element for the keys of ->sub. */
static void *field(void *base, const struct entry *e)
{
	return (char *)base + e->off;
}

static size_t *count_field(void *base, const struct entry *e)
{
	return (size_t *)(void *)((char *)base + e->count_off);
}

static void set_defaults(void *base, const struct entry *tab, size_t n);
static void free_fields(void *base, const struct entry *tab, size_t n);
static int walk_fields(void *base, const struct entry *tab, size_t n, json_t *obj,
		       const char *prefix, char *err, size_t errlen);

static void objarr_free(const struct entry *e, void *arr, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free_fields((char *)arr + i * e->elem_size, e->sub, e->n_sub);
	mem_free(arr);
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

static int set_strarr(void *cfg, const struct entry *e, const char *key, json_t *v, char *err,
		      size_t errlen)
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

/* An array of objects: each element starts from the defaults of ->sub and
 * is loaded as strictly as the top level, its keys named "key[i].name". */
static int set_objarr(void *cfg, const struct entry *e, const char *key, json_t *v, char *err,
		      size_t errlen)
{
	char elem_key[KEY_PATH_MAX];
	char *arr;
	size_t n, i;
	json_t *item;

	if (!json_is_array(v)) {
		errbuf_set(err, errlen, "%s: must be an array of objects", key);
		return -1;
	}
	n = json_array_size(v);
	if ((long long)n > e->max) {
		errbuf_set(err, errlen, "%s: must have at most %lld entries", key, e->max);
		return -1;
	}
	arr = mem_calloc(n + 1, e->elem_size);
	for (i = 0; i < n; i++)
		set_defaults(arr + i * e->elem_size, e->sub, e->n_sub);
	json_array_foreach(v, i, item)
	{
		snprintf(elem_key, sizeof elem_key, "%s[%zu]", key, i);
		if (!json_is_object(item)) {
			errbuf_set(err, errlen, "%s: must be an object", elem_key);
			goto err;
		}
		if (walk_fields(arr + i * e->elem_size, e->sub, e->n_sub, item, elem_key, err,
				errlen))
			goto err;
	}
	objarr_free(e, *(void **)field(cfg, e), *count_field(cfg, e));
	*(void **)field(cfg, e) = arr;
	*count_field(cfg, e) = n;
	return 0;
err:
	objarr_free(e, arr, n);
	return -1;
}

/* Stores JSON value v into the field of entry e, or explains why not. */
static int set_value(void *cfg, const struct entry *e, const char *key, json_t *v, char *err,
		     size_t errlen)
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
	case T_OBJARR: return set_objarr(cfg, e, key, v, err, errlen);
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

/* The keys of one object against a flat table (an array element's). */
static int walk_fields(void *base, const struct entry *tab, size_t n, json_t *obj,
		       const char *prefix, char *err, size_t errlen)
{
	char path[KEY_PATH_MAX];
	const char *name;
	json_t *v;

	json_object_foreach(obj, name, v)
	{
		const struct entry *e = NULL;

		if (strncmp(name, "//", 2) == 0)
			continue;
		bool ok = make_path(path, sizeof path, prefix, name);
		for (size_t i = 0; ok && i < n && !e; i++)
			if (strcmp(tab[i].key, name) == 0)
				e = &tab[i];
		if (!e) {
			errbuf_set(err, errlen, "%s: unknown key", path);
			return -1;
		}
		if (set_value(base, e, path, v, err, errlen))
			return -1;
	}
	return 0;
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

/*
 * RFC 3339 date-time (section 5.6): "2026-12-31T23:59:59Z", with optional
 * fractional seconds (dropped) and a "Z" or "+hh:mm" offset. Strict: fixed
 * widths, real calendar dates (timegm must give the same fields back).
 */
static bool rfc3339_parse(const char *s, int64_t *out)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd";
	struct tm tm, back;
	int year, mon, day, hh, mm, ss, off = 0;
	const char *p = s + sizeof shape - 1;
	time_t t;

	for (size_t i = 0; i < sizeof shape - 1; i++) {
		char c = s[i];

		if (shape[i] == 'd'   ? !isdigit((unsigned char)c)
		    : shape[i] == 'T' ? (c != 'T' && c != 't')
				      : c != shape[i])
			return false;
	}
	if (sscanf(s, "%4d-%2d-%2d%*c%2d:%2d:%2d", &year, &mon, &day, &hh, &mm, &ss) != 6)
		return false;
	if (*p == '.') {
		if (!isdigit((unsigned char)p[1]))
			return false;
		for (p++; isdigit((unsigned char)*p); p++)
			;
	}
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
		off = 0;
	} else if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
		   isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
		   isdigit((unsigned char)p[5]) && p[6] == '\0') {
		int oh = (p[1] - '0') * 10 + (p[2] - '0'), om = (p[4] - '0') * 10 + (p[5] - '0');

		if (oh > 23 || om > 59)
			return false;
		off = (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
	} else {
		return false;
	}
	if (year < 1970 || mon < 1 || mon > 12 || day < 1 || hh > 23 || mm > 59 || ss > 59)
		return false;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	t = timegm(&tm);
	if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != day)
		return false;
	*out = (int64_t)t - off;
	return true;
}

static bool rfc3339_valid(const char *s)
{
	int64_t t;

	return rfc3339_parse(s, &t);
}

/* The per-key rules of auth.keys[i], and not_after parsed. */
static int check_auth_key(struct config_auth_key *k, size_t i, const struct config_auth *a,
			  char *err, size_t errlen)
{
	const char *alg = config_alg_name(k->algorithm);

	if (!k->kid) {
		errbuf_set(err, errlen, "auth.keys[%zu].kid: required", i);
		return -1;
	}
	for (size_t j = 0; j < i; j++) {
		if (strcmp(a->keys[j].kid, k->kid) == 0) {
			errbuf_set(err, errlen, "auth.keys[%zu].kid: \"%s\" is also auth.keys[%zu]",
				   i, k->kid, j);
			return -1;
		}
	}
	if (k->algorithm == AUTH_ALG_HS256 ? !k->secret_file : !k->public_key_file) {
		errbuf_set(err, errlen, "auth.keys[%zu].%s: required with %s", i,
			   k->algorithm == AUTH_ALG_HS256 ? "secret_file" : "public_key_file", alg);
		return -1;
	}
	if (k->algorithm == AUTH_ALG_HS256 ? k->public_key_file != NULL : k->secret_file != NULL) {
		errbuf_set(err, errlen, "auth.keys[%zu].%s: not used with %s (set it to null)", i,
			   k->algorithm == AUTH_ALG_HS256 ? "public_key_file" : "secret_file", alg);
		return -1;
	}
	k->not_after_s = INT64_MAX;
	if (k->not_after && !rfc3339_parse(k->not_after, &k->not_after_s)) {
		errbuf_set(err, errlen, "auth.keys[%zu].not_after: must be an RFC 3339 time", i);
		return -1;
	}
	return 0;
}

/* auth.keys replaces the single key: mixing both would leave it unclear
 * which rules a token meets, so the single-key keys must stay unset. */
static int check_auth_keys(struct config_auth *a, char *err, size_t errlen)
{
	static const char why[] = "not used when auth.keys is set (each key has its own)";

	if (a->algorithm != AUTH_ALG_HS256) {
		errbuf_set(err, errlen, "auth.algorithm: %s", why);
		return -1;
	}
	if (a->secret_file || a->public_key_file || a->issuer || a->audience) {
		errbuf_set(err, errlen, "auth.%s: %s",
			   a->secret_file	? "secret_file"
			   : a->public_key_file ? "public_key_file"
			   : a->issuer		? "issuer"
						: "audience",
			   why);
		return -1;
	}
	for (size_t i = 0; i < a->n_keys; i++)
		if (check_auth_key(&a->keys[i], i, a, err, errlen))
			return -1;
	return 0;
}

/* Rules that involve more than one key; each message names the key to fix. */
static int cross_check(struct config *cfg, char *err, size_t errlen)
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
	if (a->n_keys > 0) {
		if (check_auth_keys(&cfg->auth, err, errlen))
			return -1;
	} else if (a->algorithm == AUTH_ALG_HS256) {
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

static void set_defaults(void *cfg, const struct entry *tab, size_t n_tab)
{
	for (size_t i = 0; i < n_tab; i++) {
		const struct entry *e = &tab[i];
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
		case T_OBJARR:
			*(void **)field(cfg, e) = NULL;
			*count_field(cfg, e) = 0;
			break;
		}
	}
}

struct config *config_new_defaults(void)
{
	struct config *cfg = mem_calloc(1, sizeof *cfg);

	set_defaults(cfg, table, N_ENTRIES);
	return cfg;
}

static void free_fields(void *cfg, const struct entry *tab, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct entry *e = &tab[i];

		if (e->type == T_STRING || e->type == T_NSTRING)
			mem_free(*(char **)field(cfg, e));
		else if (e->type == T_STRARR)
			strarr_free(*(char ***)field(cfg, e), *count_field(cfg, e));
		else if (e->type == T_OBJARR)
			objarr_free(e, *(void **)field(cfg, e), *count_field(cfg, e));
	}
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free_fields(cfg, table, N_ENTRIES);
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

/*
 * The keys a SIGHUP applies to the running daemon. Each is read where it is
 * used (through the server's struct config, or by the auth module rebuilt
 * from auth.*), so changing its value in place is enough; ws.* limits apply
 * to what sockets do next. ws.send_queue_max is not here: lowering it under
 * load would cut off sockets whose queues are legitimately full. Every other
 * key needs a restart. Keep this list in step with conf/README.md, Signals.
 */
static const char *const live_keys[] = {
    "allowed_origins",
    "auth.", /* the whole key set: the server swaps in a new struct auth */
    "ws.ping_interval_s",
    "ws.idle_timeout_s",
    "ws.max_message_bytes",
    "ws.max_connections",
    "ws.max_connections_per_user",
    "ws.max_inflight_per_socket",
    "alerts.max_per_window",
    "alerts.window_s",
    "alerts.history_s",
    "alerts.fair_release_factor",
    "alerts.fair_release_interval_s",
    "alerts.stock_ttl_s",
    "http.request_timeout_ms",
    "shutdown_grace_s",
    "log.level",
    "log.format",
};

static bool is_live(const char *key)
{
	for (size_t i = 0; i < sizeof live_keys / sizeof live_keys[0]; i++) {
		size_t n = strlen(live_keys[i]);

		if (live_keys[i][n - 1] == '.' ? strncmp(key, live_keys[i], n) == 0
					       : strcmp(key, live_keys[i]) == 0)
			return true;
	}
	return false;
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool fields_equal(void *a, void *b, const struct entry *tab, size_t n);

static bool entry_equal(void *a, void *b, const struct entry *e)
{
	size_t na, nb;

	switch (e->type) {
	case T_INT:
	case T_ENUM: return *(int *)field(a, e) == *(int *)field(b, e);
	case T_DOUBLE: return *(double *)field(a, e) == *(double *)field(b, e);
	case T_STRING:
	case T_NSTRING: return str_eq(*(char **)field(a, e), *(char **)field(b, e));
	case T_STRARR:
		na = *count_field(a, e);
		nb = *count_field(b, e);
		for (size_t i = 0; na == nb && i < na; i++)
			if (!str_eq((*(char ***)field(a, e))[i], (*(char ***)field(b, e))[i]))
				return false;
		return na == nb;
	case T_OBJARR:
		na = *count_field(a, e);
		nb = *count_field(b, e);
		for (size_t i = 0; na == nb && i < na; i++)
			if (!fields_equal((char *)*(void **)field(a, e) + i * e->elem_size,
					  (char *)*(void **)field(b, e) + i * e->elem_size, e->sub,
					  e->n_sub))
				return false;
		return na == nb;
	}
	return false;
}

static bool fields_equal(void *a, void *b, const struct entry *tab, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!entry_equal(a, b, &tab[i]))
			return false;
	return true;
}

static void swap_bytes(void *a, void *b, size_t n)
{
	unsigned char tmp[sizeof(double) > sizeof(void *) ? sizeof(double) : sizeof(void *)];

	memcpy(tmp, a, n);
	memcpy(a, b, n);
	memcpy(b, tmp, n);
}

/* Exchanges the value of e between two configs (ownership of strings and
 * arrays goes with it). */
static void entry_swap(struct config *a, struct config *b, const struct entry *e)
{
	switch (e->type) {
	case T_INT:
	case T_ENUM: swap_bytes(field(a, e), field(b, e), sizeof(int)); return;
	case T_DOUBLE: swap_bytes(field(a, e), field(b, e), sizeof(double)); return;
	case T_STRING:
	case T_NSTRING:
	case T_STRARR:
	case T_OBJARR:
		swap_bytes(field(a, e), field(b, e), sizeof(void *));
		if (e->type == T_STRARR || e->type == T_OBJARR)
			swap_bytes(count_field(a, e), count_field(b, e), sizeof(size_t));
		return;
	}
}

size_t config_apply_live(struct config *running, struct config *fresh, char *restart,
			 size_t restartlen)
{
	size_t n = 0, used = 0;

	if (restartlen)
		restart[0] = '\0';
	for (size_t i = 0; i < N_ENTRIES; i++) {
		const struct entry *e = &table[i];

		if (entry_equal(running, fresh, e))
			continue;
		if (is_live(e->key)) {
			entry_swap(running, fresh, e);
			continue;
		}
		if (used < restartlen) {
			int w = snprintf(restart + used, restartlen - used, "%s%s", n ? ", " : "",
					 e->key);
			used = w < 0 ? restartlen : used + (size_t)w;
		}
		n++;
	}
	return n;
}
