#ifndef STOCKALERT_AUTH_H
#define STOCKALERT_AUTH_H
/*
 * Identity: JWT verification (and signing, for `gentoken`) with the algorithm
 * pinned by configuration. libjwt 1.10 checks neither the header's alg nor
 * exp/nbf and accepts anything given an empty key, so this module checks the
 * header and every claim itself. Pure: no I/O after auth_new().
 */
#include <stddef.h>
#include <stdint.h>

#include "stockalert/config.h"

#define AUTH_SUB_MAX 64

enum auth_role { AUTH_ROLE_ADMIN = 1u << 0, AUTH_ROLE_SERVICE = 1u << 1 };

enum auth_result {
	AUTH_OK = 0,
	AUTH_ERR_MALFORMED, /* not a JWT, bad base64/JSON */
	AUTH_ERR_ALG,	    /* header alg differs from the configured one */
	AUTH_ERR_SIGNATURE,
	AUTH_ERR_EXPIRED,	/* exp missing or past (plus leeway) */
	AUTH_ERR_NOT_YET_VALID, /* nbf in the future (minus leeway) */
	AUTH_ERR_ISSUER,
	AUTH_ERR_AUDIENCE,
	AUTH_ERR_SUBJECT, /* sub missing or not 1-64 of [A-Za-z0-9_.:-] */
	AUTH_ERR_CLAIMS,  /* a claim of the wrong type (roles, ...) */
	AUTH_ERR_KID	  /* "kid" names no key, or a key past its not_after */
};

/* 3000-01-01T00:00:00Z: every time claim is clamped to [0, AUTH_TIME_MAX]
 * where it is read, so a far-future exp means "a long time" and adding the
 * leeway to it cannot overflow. */
#define AUTH_TIME_MAX 32503680000LL

struct auth_claims {
	char sub[AUTH_SUB_MAX + 1];
	int64_t exp;	/* seconds since the epoch, <= AUTH_TIME_MAX */
	unsigned roles; /* enum auth_role bits */
};

struct auth;

/* Reads the key files named by cfg: the single key (auth.algorithm & co.) or
 * every entry of auth.keys. An empty or missing key is an error, never "no
 * auth". Returns NULL and fills err on failure. */
struct auth *auth_new(const struct config_auth *cfg, char *err, size_t errlen);
void auth_free(struct auth *a);

/*
 * Verifies token at time now (seconds). Fills *claims on AUTH_OK. With
 * auth.keys, a token whose header names a "kid" is checked with that key
 * only; one without is tried against the keys in order. Either way a key
 * verifies only tokens of its own algorithm, before its not_after, and its
 * own iss/aud apply.
 */
enum auth_result auth_verify(struct auth *a, const char *token, size_t len, int64_t now,
			     struct auth_claims *claims);
const char *auth_result_str(enum auth_result r);

/* Signs a token for sub with the comma-separated roles (may be NULL) valid
 * for ttl_s from now, with the HS256 key named kid, or (kid NULL) the first
 * HS256 key in service; the key's kid, iss and aud go in. Returns a malloc'd
 * token (free with mem_free) or NULL with err filled. */
char *auth_sign(struct auth *a, const char *kid, const char *sub, const char *roles_csv,
		int64_t ttl_s, int64_t now, char *err, size_t errlen);

/* t limited to [0, AUTH_TIME_MAX]. */
int64_t auth_clamp_time(int64_t t);

/* 1 when sub is 1-64 characters of [A-Za-z0-9_.:-]. */
int auth_valid_sub(const char *sub);

#endif
