/*
 * JWT verification matrix. Tokens are built independently of src/auth.c:
 * with libjwt, or assembled here from JSON text and signed with OpenSSL
 * (HMAC, EVP_DigestSign), so a bug shared by signer and verifier cannot
 * hide. Keys are generated at run time into a private temp directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "stockalert/auth.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

#define NOW	     INT64_C(1700000000)
#define SECRET	     "0123456789abcdef0123456789abcdef-test-secret"
#define OTHER_SECRET "fedcba9876543210fedcba9876543210-other-secret"
#define ISSUER	     "https://issuer.example"
#define AUDIENCE     "stockalert"
#define HDR_HS256    "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define HDR_RS256    "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define HDR_ES256    "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"
/* base64url of {"alg":"none","typ":"JWT"} */
#define B64_HDR_NONE "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"

static char tmpdir[64];
static char secret_path[128], short_path[128], empty_path[128];
static char rsa_pub_path[128], ec_pub_path[128], rsa1024_pub_path[128], garbage_path[128];
static EVP_PKEY *rsa_key, *rsa_other, *ec_key, *ec_other;
static char *rsa_pub_pem; /* the public key file's bytes, for key confusion */

/* ---- helpers ---- */

static void write_file(char *path, size_t pathlen, const char *name, const void *data, size_t n)
{
	FILE *f;

	snprintf(path, pathlen, "%s/%s", tmpdir, name);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static char *pem_of(EVP_PKEY *k, int private_key)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_non_null(bio);
	if (private_key)
		assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
	else
		assert_int_equal(PEM_write_bio_PUBKEY(bio, k), 1);
	n = BIO_get_mem_data(bio, &data);
	out = mem_strndup(data, (size_t)n);
	BIO_free(bio);
	return out;
}

static char *b64url(const void *data, size_t n)
{
	char *out = mem_alloc(4 * ((n + 2) / 3) + 1);
	int len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);

	for (int i = 0; i < len; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
		else if (out[i] == '=')
			out[i] = '\0';
	}
	return out;
}

static char *join3(const char *a, const char *b, const char *c)
{
	size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
	char *out = mem_alloc(n);

	snprintf(out, n, "%s.%s.%s", a, b, c);
	return out;
}

/* header.payload with its signature by alg: "HS256" (key = secret, keylen),
 * "RS256"/"ES256" (pkey). The header text is taken as given. */
static char *make_token(const char *header, const char *payload, const char *alg,
			const void *secret, size_t secretlen, EVP_PKEY *pkey)
{
	char *h = b64url(header, strlen(header));
	char *p = b64url(payload, strlen(payload));
	size_t inlen = strlen(h) + 1 + strlen(p);
	char *input = mem_alloc(inlen + 1);
	unsigned char sig[1024];
	size_t siglen = sizeof sig;
	char *s, *tok;

	snprintf(input, inlen + 1, "%s.%s", h, p);
	if (strcmp(alg, "HS256") == 0) {
		unsigned int l = 0;
		assert_non_null(HMAC(EVP_sha256(), secret, (int)secretlen,
				     (const unsigned char *)input, inlen, sig, &l));
		siglen = l;
	} else {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey), 1);
		assert_int_equal(
		    EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, inlen), 1);
		EVP_MD_CTX_free(md);
		if (strcmp(alg, "ES256") == 0) {
			/* DER to the JWS r||s form */
			const unsigned char *p2 = sig;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p2, (long)siglen);
			assert_non_null(es);
			assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
			assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
			ECDSA_SIG_free(es);
			siglen = 64;
		}
	}
	s = b64url(sig, siglen);
	tok = join3(h, p, s);
	mem_free(h);
	mem_free(p);
	mem_free(s);
	mem_free(input);
	return tok;
}

/* tok with its payload replaced and its signature kept: a forgery. */
static char *swap_payload(const char *tok, const char *payload)
{
	const char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
	char *h = mem_strndup(tok, (size_t)(dot1 - tok));
	char *p = b64url(payload, strlen(payload));
	char *out = join3(h, p, dot2 + 1);

	mem_free(h);
	mem_free(p);
	return out;
}

static char *hs(const char *payload)
{
	return make_token(HDR_HS256, payload, "HS256", SECRET, strlen(SECRET), NULL);
}

static struct config_auth cfg_hs(int leeway)
{
	struct config_auth c = {
	    .algorithm = AUTH_ALG_HS256, .secret_file = secret_path, .leeway_s = leeway};
	return c;
}

static struct auth *new_auth(struct config_auth c)
{
	char err[256] = "";
	struct auth *a = auth_new(&c, err, sizeof err);

	if (!a)
		fail_msg("auth_new: %s", err);
	return a;
}

static enum auth_result verify(struct auth *a, const char *tok, struct auth_claims *c)
{
	struct auth_claims dummy;

	return auth_verify(a, tok, strlen(tok), NOW, c ? c : &dummy);
}

/* Verifies a payload signed correctly with HS256 under config c. */
static enum auth_result verify_hs_payload(struct config_auth c, const char *payload,
					  struct auth_claims *claims)
{
	struct auth *a = new_auth(c);
	char *tok = hs(payload);
	enum auth_result r = verify(a, tok, claims);

	mem_free(tok);
	auth_free(a);
	return r;
}

static char *libjwt_token(jwt_alg_t alg, const unsigned char *key, size_t keylen,
			  const char *grants_json)
{
	jwt_t *jwt = NULL;
	char *enc, *out;

	assert_int_equal(jwt_new(&jwt), 0);
	assert_int_equal(jwt_set_alg(jwt, alg, key, (int)keylen), 0);
	assert_int_equal(jwt_add_grants_json(jwt, grants_json), 0);
	enc = jwt_encode_str(jwt);
	assert_non_null(enc);
	out = mem_strdup(enc);
	free(enc);
	jwt_free(jwt);
	return out;
}

/* ---- fixtures ---- */

static int setup(void **state)
{
	char *pem;

	(void)state;
	log_setup(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_auth.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	write_file(secret_path, sizeof secret_path, "secret", SECRET "\n", strlen(SECRET) + 1);
	/* 31 bytes: one short of HS256's minimum */
	write_file(short_path, sizeof short_path, "short", "0123456789012345678901234567890\n", 32);
	write_file(empty_path, sizeof empty_path, "empty", "", 0);
	write_file(garbage_path, sizeof garbage_path, "garbage",
		   "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n", 63);

	rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!rsa_key || !rsa_other || !ec_key || !ec_other)
		return -1;
	rsa_pub_pem = pem_of(rsa_key, 0);
	write_file(rsa_pub_path, sizeof rsa_pub_path, "rsa.pub", rsa_pub_pem, strlen(rsa_pub_pem));
	pem = pem_of(ec_key, 0);
	write_file(ec_pub_path, sizeof ec_pub_path, "ec.pub", pem, strlen(pem));
	mem_free(pem);
	{
		EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
		pem = pem_of(small, 0);
		write_file(rsa1024_pub_path, sizeof rsa1024_pub_path, "rsa1024.pub", pem,
			   strlen(pem));
		mem_free(pem);
		EVP_PKEY_free(small);
	}
	return 0;
}

static int teardown(void **state)
{
	const char *paths[] = {secret_path,  short_path,       empty_path, garbage_path,
			       rsa_pub_path, rsa1024_pub_path, ec_pub_path};

	(void)state;
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
		if (paths[i][0])
			unlink(paths[i]);
	rmdir(tmpdir);
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(rsa_other);
	EVP_PKEY_free(ec_key);
	EVP_PKEY_free(ec_other);
	mem_free(rsa_pub_pem);
	return 0;
}

/* ---- auth_new ---- */

static void expect_new_fails(struct config_auth c, const char *want_in_err)
{
	char err[256] = "";
	struct auth *a = auth_new(&c, err, sizeof err);

	assert_null(a);
	if (!strstr(err, want_in_err))
		fail_msg("error \"%s\" does not mention \"%s\"", err, want_in_err);
}

static void test_new_errors(void **state)
{
	struct config_auth c;
	static char missing[] = "/nonexistent/stockalert/secret";

	(void)state;
	c = cfg_hs(0);
	c.secret_file = empty_path;
	expect_new_fails(c, "auth.secret_file");
	c.secret_file = short_path;
	expect_new_fails(c, "32");
	c.secret_file = NULL;
	expect_new_fails(c, "auth.secret_file");
	c.secret_file = missing;
	expect_new_fails(c, "auth.secret_file");

	c = (struct config_auth){.algorithm = AUTH_ALG_RS256};
	expect_new_fails(c, "auth.public_key_file");
	c.public_key_file = empty_path;
	expect_new_fails(c, "auth.public_key_file");
	c.public_key_file = garbage_path;
	expect_new_fails(c, "auth.public_key_file");
	c.public_key_file = secret_path;
	expect_new_fails(c, "auth.public_key_file");
	c.public_key_file = ec_pub_path;
	expect_new_fails(c, "RSA");
	c.public_key_file = rsa1024_pub_path;
	expect_new_fails(c, "2048");
	c.algorithm = AUTH_ALG_ES256;
	c.public_key_file = rsa_pub_path;
	expect_new_fails(c, "P-256");
	/* the RS256 key is not an HS256 secret either: no secret_file set */
	c.algorithm = AUTH_ALG_HS256;
	expect_new_fails(c, "auth.secret_file");
}

/* ---- HS256 ---- */

static void test_hs256_sign_roundtrip(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	struct auth_claims c;
	char err[128];
	char *tok;

	(void)state;
	tok = auth_sign(a, NULL, "user-42", "admin, service", 3600, NOW, err, sizeof err);
	assert_non_null(tok);
	assert_int_equal(auth_verify(a, tok, strlen(tok), NOW, &c), AUTH_OK);
	assert_string_equal(c.sub, "user-42");
	assert_int_equal(c.exp, NOW + 3600);
	assert_int_equal(c.roles, AUTH_ROLE_ADMIN | AUTH_ROLE_SERVICE);
	/* valid before exp, not from exp on (RFC 7519 4.1.4) */
	assert_int_equal(auth_verify(a, tok, strlen(tok), NOW + 3599, &c), AUTH_OK);
	assert_int_equal(auth_verify(a, tok, strlen(tok), NOW + 3600, &c), AUTH_ERR_EXPIRED);
	mem_free(tok);

	tok = auth_sign(a, NULL, "u", NULL, 60, NOW, err, sizeof err);
	assert_non_null(tok);
	assert_int_equal(auth_verify(a, tok, strlen(tok), NOW, &c), AUTH_OK);
	assert_int_equal(c.roles, 0);
	mem_free(tok);

	/* the token is a plain HS256 JWT that libjwt verifies with the secret */
	tok = auth_sign(a, NULL, "u", "service", 60, NOW, err, sizeof err);
	{
		jwt_t *jwt = NULL;
		assert_int_equal(
		    jwt_decode(&jwt, tok, (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
		assert_int_equal(jwt_get_alg(jwt), JWT_ALG_HS256);
		assert_string_equal(jwt_get_grant(jwt, "sub"), "u");
		assert_int_equal(jwt_get_grant_int(jwt, "iat"), NOW);
		jwt_free(jwt);
	}
	mem_free(tok);
	auth_free(a);
}

static void test_hs256_libjwt_token(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	struct auth_claims c;
	char *tok;

	(void)state;
	tok = libjwt_token(JWT_ALG_HS256, (const unsigned char *)SECRET, strlen(SECRET),
			   "{\"sub\":\"alice@shop\",\"exp\":1700000100,"
			   "\"roles\":[\"service\",\"editor\"]}");
	/* '@' is outside the subject alphabet */
	assert_int_equal(verify(a, tok, &c), AUTH_ERR_SUBJECT);
	mem_free(tok);

	tok = libjwt_token(JWT_ALG_HS256, (const unsigned char *)SECRET, strlen(SECRET),
			   "{\"sub\":\"alice.shop:eu_1-x\",\"exp\":1700000100,"
			   "\"roles\":[\"service\",\"editor\"]}");
	assert_int_equal(verify(a, tok, &c), AUTH_OK);
	assert_string_equal(c.sub, "alice.shop:eu_1-x");
	assert_int_equal(c.exp, 1700000100);
	assert_int_equal(c.roles, AUTH_ROLE_SERVICE);
	mem_free(tok);
	auth_free(a);
}

static void test_hs256_wrong_secret(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	const char *payload = "{\"sub\":\"u1\",\"exp\":1700000100}";
	char *tok;

	(void)state;
	tok = make_token(HDR_HS256, payload, "HS256", OTHER_SECRET, strlen(OTHER_SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	mem_free(tok);
	tok = libjwt_token(JWT_ALG_HS256, (const unsigned char *)OTHER_SECRET, strlen(OTHER_SECRET),
			   payload);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	mem_free(tok);

	/* the right token verifies; its signature on another payload does not */
	tok = hs(payload);
	assert_int_equal(verify(a, tok, NULL), AUTH_OK);
	{
		char *forged = swap_payload(tok, "{\"sub\":\"u2\",\"exp\":1700000100}");
		assert_int_equal(verify(a, forged, NULL), AUTH_ERR_SIGNATURE);
		mem_free(forged);
	}
	mem_free(tok);

	/* a signature of the wrong length, and an empty one */
	tok = hs(payload);
	tok[strlen(tok) - 4] = '\0';
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	*(strrchr(tok, '.') + 1) = '\0';
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	mem_free(tok);
	auth_free(a);
}

static void test_alg_none_and_others(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	const char *payload = "{\"sub\":\"root\",\"exp\":1700000100,\"roles\":[\"admin\"]}";
	char *p = b64url(payload, strlen(payload));
	char *tok;

	(void)state;
	/* the classic: alg none, empty signature */
	tok = join3(B64_HDR_NONE, p, "");
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
	mem_free(tok);
	/* none with a signature anyway */
	tok = join3(B64_HDR_NONE, p, "c2lnbmF0dXJl");
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
	mem_free(tok);

	/* alg spelt differently, other HMACs, missing, wrong type: even with
	 * a valid HS256 MAC over the text, the header must say exactly HS256 */
	const char *headers[] = {
	    "{\"alg\":\"None\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"NONE\"}",
	    "{\"alg\":\"hs256\"}",
	    "{\"alg\":\"HS512\"}",
	    "{\"alg\":\"HS256 \"}",
	    "{\"typ\":\"JWT\"}",
	    "{\"alg\":null}",
	    "{\"alg\":[\"HS256\"]}",
	};
	for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
		tok = make_token(headers[i], payload, "HS256", SECRET, strlen(SECRET), NULL);
		if (verify(a, tok, NULL) != AUTH_ERR_ALG)
			fail_msg("header %s not refused as bad_alg", headers[i]);
		mem_free(tok);
	}
	/* a header with no typ is fine, with another typ or crit is not */
	tok = make_token("{\"alg\":\"HS256\"}", payload, "HS256", SECRET, strlen(SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_OK);
	mem_free(tok);
	tok = make_token("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", payload, "HS256", SECRET,
			 strlen(SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_MALFORMED);
	mem_free(tok);
	tok = make_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", payload, "HS256", SECRET,
			 strlen(SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_MALFORMED);
	mem_free(tok);
	/* two alg members: parsers disagree on which wins, so neither does */
	tok = make_token("{\"alg\":\"none\",\"alg\":\"HS256\"}", payload, "HS256", SECRET,
			 strlen(SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_MALFORMED);
	mem_free(tok);
	mem_free(p);
	auth_free(a);
}

/* ---- RS256 ---- */

static void test_rs256(void **state)
{
	struct config_auth c = {.algorithm = AUTH_ALG_RS256, .public_key_file = rsa_pub_path};
	struct auth *a = new_auth(c);
	const char *payload = "{\"sub\":\"svc-1\",\"exp\":1700000100,\"roles\":[\"service\"]}";
	struct auth_claims cl;
	char *tok, *priv;

	(void)state;
	/* signed by libjwt with the private PEM */
	priv = pem_of(rsa_key, 1);
	tok = libjwt_token(JWT_ALG_RS256, (unsigned char *)priv, strlen(priv), payload);
	assert_int_equal(verify(a, tok, &cl), AUTH_OK);
	assert_string_equal(cl.sub, "svc-1");
	assert_int_equal(cl.roles, AUTH_ROLE_SERVICE);
	/* verified repeatedly with the one parsed key */
	assert_int_equal(verify(a, tok, &cl), AUTH_OK);
	mem_free(tok);
	mem_free(priv);

	tok = make_token(HDR_RS256, payload, "RS256", NULL, 0, rsa_key);
	assert_int_equal(verify(a, tok, &cl), AUTH_OK);
	{
		char *forged = swap_payload(tok, "{\"sub\":\"svc-1\",\"exp\":1800000000,"
						 "\"roles\":[\"admin\"]}");
		assert_int_equal(verify(a, forged, NULL), AUTH_ERR_SIGNATURE);
		mem_free(forged);
	}
	mem_free(tok);

	/* another key's signature */
	tok = make_token(HDR_RS256, payload, "RS256", NULL, 0, rsa_other);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	/* truncated signature */
	tok[strlen(tok) - 8] = '\0';
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	mem_free(tok);

	/* an ES256 token to an RS256 server */
	tok = make_token(HDR_ES256, payload, "ES256", NULL, 0, ec_key);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
	mem_free(tok);
	auth_free(a);
}

/* The classic key confusion: the attacker HMACs a token with the server's
 * public key bytes as the secret. */
static void test_rs256_key_confusion(void **state)
{
	struct config_auth c = {.algorithm = AUTH_ALG_RS256, .public_key_file = rsa_pub_path};
	struct auth *a = new_auth(c);
	const char *payload = "{\"sub\":\"root\",\"exp\":1700000100,\"roles\":[\"admin\"]}";
	char *tok;

	(void)state;
	tok = make_token(HDR_HS256, payload, "HS256", rsa_pub_pem, strlen(rsa_pub_pem), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
	mem_free(tok);
	tok =
	    libjwt_token(JWT_ALG_HS256, (unsigned char *)rsa_pub_pem, strlen(rsa_pub_pem), payload);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
	mem_free(tok);
	/* and claiming RS256 in the header while carrying an HMAC */
	tok = make_token(HDR_RS256, payload, "HS256", rsa_pub_pem, strlen(rsa_pub_pem), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	mem_free(tok);
	auth_free(a);
}

/* ---- ES256 ---- */

static void test_es256(void **state)
{
	struct config_auth c = {.algorithm = AUTH_ALG_ES256, .public_key_file = ec_pub_path};
	struct auth *a = new_auth(c);
	const char *payload = "{\"sub\":\"ec-user\",\"exp\":1700000100}";
	struct auth_claims cl;
	char *tok, *priv;

	(void)state;
	priv = pem_of(ec_key, 1);
	tok = libjwt_token(JWT_ALG_ES256, (unsigned char *)priv, strlen(priv), payload);
	assert_int_equal(verify(a, tok, &cl), AUTH_OK);
	assert_string_equal(cl.sub, "ec-user");
	mem_free(tok);
	mem_free(priv);

	/* ECDSA signatures vary: several fresh ones all verify */
	for (int i = 0; i < 8; i++) {
		tok = make_token(HDR_ES256, payload, "ES256", NULL, 0, ec_key);
		assert_int_equal(verify(a, tok, &cl), AUTH_OK);
		mem_free(tok);
	}

	tok = make_token(HDR_ES256, payload, "ES256", NULL, 0, ec_other);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
	mem_free(tok);

	tok = make_token(HDR_ES256, payload, "ES256", NULL, 0, ec_key);
	{
		char *forged = swap_payload(tok, "{\"sub\":\"ec-admin\",\"exp\":1700000100}");
		assert_int_equal(verify(a, forged, NULL), AUTH_ERR_SIGNATURE);
		mem_free(forged);
	}
	mem_free(tok);

	/* a DER signature (what OpenSSL emits) is not the JWS form */
	{
		char *h = b64url(HDR_ES256, strlen(HDR_ES256));
		char *p = b64url(payload, strlen(payload));
		size_t n = strlen(h) + 1 + strlen(p);
		char *in = mem_alloc(n + 1);
		unsigned char sig[128];
		size_t siglen = sizeof sig;
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		char *s;

		snprintf(in, n + 1, "%s.%s", h, p);
		assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ec_key), 1);
		assert_int_equal(EVP_DigestSign(md, sig, &siglen, (unsigned char *)in, n), 1);
		s = b64url(sig, siglen);
		tok = join3(h, p, s);
		assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
		mem_free(tok);
		/* r||s of zeros */
		mem_free(s);
		memset(sig, 0, 64);
		s = b64url(sig, 64);
		tok = join3(h, p, s);
		assert_int_equal(verify(a, tok, NULL), AUTH_ERR_SIGNATURE);
		mem_free(tok);
		EVP_MD_CTX_free(md);
		mem_free(s);
		mem_free(in);
		mem_free(h);
		mem_free(p);
	}

	tok = make_token(HDR_RS256, payload, "RS256", NULL, 0, rsa_key);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
	mem_free(tok);
	auth_free(a);
}

/* ---- time claims ---- */

static void test_exp_nbf(void **state)
{
	struct auth_claims c;
	char p[256];

	(void)state;
	/* expired 10 s ago: refused without leeway, accepted with 30 s */
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld}", (long long)(NOW - 10));
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_ERR_EXPIRED);
	assert_int_equal(verify_hs_payload(cfg_hs(30), p, &c), AUTH_OK);
	assert_int_equal(c.exp, NOW - 10);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld}", (long long)(NOW - 31));
	assert_int_equal(verify_hs_payload(cfg_hs(30), p, &c), AUTH_ERR_EXPIRED);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld}", (long long)NOW);
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_ERR_EXPIRED);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld}", (long long)(NOW + 1));
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_OK);

	/* exp is required and must be an integer */
	assert_int_equal(verify_hs_payload(cfg_hs(0), "{\"sub\":\"u\"}", &c), AUTH_ERR_EXPIRED);
	assert_int_equal(verify_hs_payload(cfg_hs(0), "{\"sub\":\"u\",\"exp\":\"1800000000\"}", &c),
			 AUTH_ERR_CLAIMS);
	assert_int_equal(verify_hs_payload(cfg_hs(0), "{\"sub\":\"u\",\"exp\":1800000000.5}", &c),
			 AUTH_ERR_CLAIMS);
	assert_int_equal(verify_hs_payload(cfg_hs(0), "{\"sub\":\"u\",\"exp\":null}", &c),
			 AUTH_ERR_CLAIMS);
	/* extremes do not overflow into acceptance or refusal */
	assert_int_equal(
	    verify_hs_payload(cfg_hs(3600), "{\"sub\":\"u\",\"exp\":9223372036854775807}", &c),
	    AUTH_OK);
	/* ... and come out clamped, so exp + leeway cannot overflow later
	 * (the session's expiry schedule adds it) */
	assert_int_equal(c.exp, AUTH_TIME_MAX);
	assert_true(c.exp + 3600 > NOW);
	assert_int_equal(
	    verify_hs_payload(cfg_hs(3600), "{\"sub\":\"u\",\"exp\":9223372036854775000}", &c),
	    AUTH_OK);
	assert_int_equal(c.exp, AUTH_TIME_MAX);
	assert_int_equal(
	    verify_hs_payload(cfg_hs(3600), "{\"sub\":\"u\",\"exp\":-9223372036854775807}", &c),
	    AUTH_ERR_EXPIRED);

	/* nbf in the future */
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)(NOW + 600),
		 (long long)(NOW + 100));
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_ERR_NOT_YET_VALID);
	assert_int_equal(verify_hs_payload(cfg_hs(30), p, &c), AUTH_ERR_NOT_YET_VALID);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)(NOW + 600),
		 (long long)(NOW + 20));
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_ERR_NOT_YET_VALID);
	assert_int_equal(verify_hs_payload(cfg_hs(30), p, &c), AUTH_OK);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)(NOW + 600),
		 (long long)NOW);
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_OK);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":\"now\"}",
		 (long long)(NOW + 600));
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_ERR_CLAIMS);
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":-9223372036854775807}",
		 (long long)(NOW + 600));
	assert_int_equal(verify_hs_payload(cfg_hs(3600), p, &c), AUTH_OK);
}

static void test_clamp_time(void **state)
{
	(void)state;
	assert_int_equal(auth_clamp_time(0), 0);
	assert_int_equal(auth_clamp_time(NOW), NOW);
	assert_int_equal(auth_clamp_time(AUTH_TIME_MAX), AUTH_TIME_MAX);
	assert_int_equal(auth_clamp_time(AUTH_TIME_MAX + 1), AUTH_TIME_MAX);
	assert_int_equal(auth_clamp_time(INT64_MAX), AUTH_TIME_MAX);
	assert_int_equal(auth_clamp_time(-1), 0);
	assert_int_equal(auth_clamp_time(INT64_MIN), 0);
}

/* ---- iss / aud ---- */

static void test_iss_aud(void **state)
{
	static char iss[] = ISSUER, aud[] = AUDIENCE;
	struct config_auth c = cfg_hs(0);
	struct config_auth plain = cfg_hs(0);
	struct auth_claims cl;
	static const struct {
		const char *claims;
		enum auth_result want, want_plain;
	} cases[] = {
	    {"\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"", AUTH_OK, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\",\"aud\":[\"other\",\"" AUDIENCE "\"]", AUTH_OK, AUTH_OK},
	    {"\"iss\":\"https://evil.example\",\"aud\":\"" AUDIENCE "\"", AUTH_ERR_ISSUER, AUTH_OK},
	    {"\"iss\":\"" ISSUER "/\",\"aud\":\"" AUDIENCE "\"", AUTH_ERR_ISSUER, AUTH_OK},
	    {"\"aud\":\"" AUDIENCE "\"", AUTH_ERR_ISSUER, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\",\"aud\":\"other\"", AUTH_ERR_AUDIENCE, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\",\"aud\":[\"other\",\"x\"]", AUTH_ERR_AUDIENCE, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\",\"aud\":[]", AUTH_ERR_AUDIENCE, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\"", AUTH_ERR_AUDIENCE, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\",\"aud\":\"STOCKALERT\"", AUTH_ERR_AUDIENCE, AUTH_OK},
	    {"\"iss\":\"" ISSUER "\",\"aud\":[\"" AUDIENCE "\",7]", AUTH_ERR_CLAIMS,
	     AUTH_ERR_CLAIMS},
	    {"\"iss\":\"" ISSUER "\",\"aud\":{\"x\":1}", AUTH_ERR_CLAIMS, AUTH_ERR_CLAIMS},
	    {"\"iss\":42,\"aud\":\"" AUDIENCE "\"", AUTH_ERR_CLAIMS, AUTH_ERR_CLAIMS},
	};
	char p[512];

	(void)state;
	c.issuer = iss;
	c.audience = aud;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		enum auth_result r;

		snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":1700000100,%s}", cases[i].claims);
		r = verify_hs_payload(c, p, &cl);
		if (r != cases[i].want)
			fail_msg("%s: got %s, want %s", p, auth_result_str(r),
				 auth_result_str(cases[i].want));
		r = verify_hs_payload(plain, p, &cl);
		if (r != cases[i].want_plain)
			fail_msg("%s (no iss/aud configured): got %s, want %s", p,
				 auth_result_str(r), auth_result_str(cases[i].want_plain));
	}

	/* auth_sign puts the configured iss and aud in, so its tokens pass */
	{
		struct auth *a = new_auth(c);
		char err[128];
		char *tok = auth_sign(a, NULL, "u", NULL, 60, NOW, err, sizeof err);
		assert_non_null(tok);
		assert_int_equal(verify(a, tok, &cl), AUTH_OK);
		mem_free(tok);
		auth_free(a);
	}
}

/* ---- sub ---- */

static void test_subject(void **state)
{
	char sub65[66], sub64[65], p[256];
	struct auth_claims c;
	static const char *bad[] = {"\"\"",	 "\"a b\"",   "\"a/b\"", "\"caf\\u00e9\"",
				    "\"a\\nb\"", "\"a@b\"",   "42",	 "null",
				    "[\"u\"]",	 "\"a\\\"b\""};

	(void)state;
	memset(sub65, 'x', 65);
	sub65[65] = '\0';
	memset(sub64, 'y', 64);
	sub64[64] = '\0';

	snprintf(p, sizeof p, "{\"sub\":\"%s\",\"exp\":1700000100}", sub64);
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_OK);
	assert_string_equal(c.sub, sub64);
	snprintf(p, sizeof p, "{\"sub\":\"%s\",\"exp\":1700000100}", sub65);
	assert_int_equal(verify_hs_payload(cfg_hs(0), p, &c), AUTH_ERR_SUBJECT);
	assert_int_equal(verify_hs_payload(cfg_hs(0), "{\"exp\":1700000100}", &c),
			 AUTH_ERR_SUBJECT);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(p, sizeof p, "{\"sub\":%s,\"exp\":1700000100}", bad[i]);
		if (verify_hs_payload(cfg_hs(0), p, &c) != AUTH_ERR_SUBJECT)
			fail_msg("sub %s accepted", bad[i]);
	}

	assert_true(auth_valid_sub("A-z_0.9:x"));
	assert_true(auth_valid_sub(sub64));
	assert_false(auth_valid_sub(sub65));
	assert_false(auth_valid_sub(""));
	assert_false(auth_valid_sub(NULL));
	assert_false(auth_valid_sub("a b"));
	assert_false(auth_valid_sub("\xc3\xa9"));
}

/* ---- roles ---- */

static void test_roles(void **state)
{
	static const struct {
		const char *roles;
		enum auth_result want;
		unsigned bits;
	} cases[] = {
	    {NULL, AUTH_OK, 0},
	    {"[]", AUTH_OK, 0},
	    {"[\"admin\"]", AUTH_OK, AUTH_ROLE_ADMIN},
	    {"[\"service\"]", AUTH_OK, AUTH_ROLE_SERVICE},
	    {"[\"admin\",\"service\",\"admin\"]", AUTH_OK, AUTH_ROLE_ADMIN | AUTH_ROLE_SERVICE},
	    {"[\"reader\",\"Admin\",\"ADMIN\",\"admin \"]", AUTH_OK, 0},
	    {"\"admin\"", AUTH_ERR_CLAIMS, 0},
	    {"[\"admin\",1]", AUTH_ERR_CLAIMS, 0},
	    {"[[\"admin\"]]", AUTH_ERR_CLAIMS, 0},
	    {"{\"admin\":true}", AUTH_ERR_CLAIMS, 0},
	    {"null", AUTH_ERR_CLAIMS, 0},
	};
	struct auth_claims c;
	char p[256];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		enum auth_result r;

		if (cases[i].roles)
			snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":1700000100,\"roles\":%s}",
				 cases[i].roles);
		else
			snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":1700000100}");
		r = verify_hs_payload(cfg_hs(0), p, &c);
		if (r != cases[i].want)
			fail_msg("%s: got %s", p, auth_result_str(r));
		if (r == AUTH_OK && c.roles != cases[i].bits)
			fail_msg("%s: roles %u, want %u", p, c.roles, cases[i].bits);
	}
}

/* ---- malformed input ---- */

static void test_size_limit(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	char p[8192];
	size_t pad;
	char *tok = NULL;

	(void)state;
	/* the largest valid token that fits in 8 KiB is accepted ... */
	for (pad = 6200; pad > 0; pad--) {
		snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":1700000100,\"pad\":\"%0*d\"}",
			 (int)pad, 0);
		tok = hs(p);
		if (strlen(tok) <= 8192)
			break;
		mem_free(tok);
	}
	assert_true(strlen(tok) > 8180);
	assert_int_equal(verify(a, tok, NULL), AUTH_OK);
	mem_free(tok);
	/* ... and a few bytes more are refused before parsing */
	snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":1700000100,\"pad\":\"%0*d\"}", (int)pad + 3,
		 0);
	tok = hs(p);
	assert_true(strlen(tok) > 8192);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_MALFORMED);
	mem_free(tok);

	/* 1 MiB of dots and letters */
	{
		size_t n = 1u << 20;
		char *big = mem_alloc(n + 1);
		memset(big, 'a', n);
		big[10] = big[20] = '.';
		big[n] = '\0';
		assert_int_equal(auth_verify(a, big, n, NOW, NULL), AUTH_ERR_MALFORMED);
		mem_free(big);
	}
	auth_free(a);
}

static void test_garbage(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	struct auth_claims c;
	char *good = hs("{\"sub\":\"u\",\"exp\":1700000100}");
	char *dot1 = strchr(good, '.');
	char *dot2 = strrchr(good, '.');
	char buf[1024];
	static const char *garbage[] = {
	    "",
	    ".",
	    "..",
	    "...",
	    "a",
	    "a.b",
	    "a..c",
	    ".b.c",
	    "a.b.c",
	    "a.b.c.d",
	    "Bearer x.y.z",
	    "eyJ.eyJ.sig",
	    "====.====.====",
	    "\xff\xfe.\x01.\x02",
	    "eyJhbGciOiJIUzI1NiJ9",		/* {"alg":"HS256"} alone */
	    "eyJhbGciOiJIUzI1NiJ9.W10.c2ln",	/* payload is [] */
	    "eyJhbGciOiJIUzI1NiJ9.bnVsbA.c2ln", /* payload is null */
	    "WyJIUzI1NiJd.e30.c2ln",		/* header is ["HS256"] */
	    "eyJhbGciOiJIUzI1NiJ9.e30xx.c2ln",	/* payload length 4n+1 */
	    "eyJhbGciOiJIUzI1NiJ9.e30x.c2ln",	/* payload is {}1 */
	    "eyJhbGciOiJIUzI1NiJ9.e30.c2ln+",	/* '+' is not base64url */
	};

	(void)state;
	assert_int_equal(verify(a, good, &c), AUTH_OK);
	for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
		enum auth_result r = verify(a, garbage[i], &c);
		if (r != AUTH_ERR_MALFORMED)
			fail_msg("garbage #%zu: got %s", i, auth_result_str(r));
		/* claims are never left looking valid */
		assert_string_equal(c.sub, "");
	}
	assert_int_equal(auth_verify(a, NULL, 0, NOW, &c), AUTH_ERR_MALFORMED);

	/* the good token with an embedded NUL, whitespace, padding, a 4th part */
	assert_int_equal(auth_verify(a, good, strlen(good) + 1, NOW, &c), AUTH_ERR_MALFORMED);
	snprintf(buf, sizeof buf, " %s", good);
	assert_int_equal(verify(a, buf, &c), AUTH_ERR_MALFORMED);
	snprintf(buf, sizeof buf, "%s\n", good);
	assert_int_equal(verify(a, buf, &c), AUTH_ERR_MALFORMED);
	snprintf(buf, sizeof buf, "%s.", good);
	assert_int_equal(verify(a, buf, &c), AUTH_ERR_MALFORMED);
	snprintf(buf, sizeof buf, "%.*s=.%s", (int)(dot1 - good), good, dot1 + 1);
	assert_int_equal(verify(a, buf, &c), AUTH_ERR_MALFORMED);
	snprintf(buf, sizeof buf, "%.*s %s", (int)(dot2 - good), good, dot2);
	assert_int_equal(verify(a, buf, &c), AUTH_ERR_MALFORMED);
	/* a prefix of the token (as a length) is not the token */
	assert_int_not_equal(auth_verify(a, good, strlen(good) - 1, NOW, &c), AUTH_OK);
	assert_int_equal(auth_verify(a, good, (size_t)(dot2 - good), NOW, &c), AUTH_ERR_MALFORMED);

	/* payload JSON that is broken or ambiguous, correctly signed */
	{
		static const char *payloads[] = {
		    "{\"sub\":\"u\",\"exp\":1700000100",
		    "not json",
		    "[1,2]",
		    "\"u\"",
		    "{\"sub\":\"admin\",\"sub\":\"u\",\"exp\":1700000100}",
		    "{\"sub\":\"u\\u0000x\",\"exp\":1700000100}",
		};
		for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
			char *tok = hs(payloads[i]);
			enum auth_result r = verify(a, tok, &c);
			if (r != AUTH_ERR_MALFORMED)
				fail_msg("payload %s: got %s", payloads[i], auth_result_str(r));
			mem_free(tok);
		}
	}
	mem_free(good);
	auth_free(a);
}

/* ---- auth_sign ---- */

static void test_sign_errors(void **state)
{
	struct auth *a = new_auth(cfg_hs(0));
	struct config_auth rc = {.algorithm = AUTH_ALG_RS256, .public_key_file = rsa_pub_path};
	struct auth *rs = new_auth(rc);
	struct auth_claims c;
	char err[128];
	char *tok;

	(void)state;
	err[0] = '\0';
	assert_null(auth_sign(rs, NULL, "u", NULL, 60, NOW, err, sizeof err));
	assert_string_equal(err, "gentoken needs auth.algorithm HS256");
	assert_null(auth_sign(a, NULL, "u", "root", 60, NOW, err, sizeof err));
	assert_non_null(strstr(err, "root"));
	assert_null(auth_sign(a, NULL, "u", "admin,", 60, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, "u", "admin,,service", 60, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, "", NULL, 60, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, "a b", NULL, 60, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, NULL, NULL, 60, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, "u", NULL, 0, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, "u", NULL, -5, NOW, err, sizeof err));
	assert_null(auth_sign(a, NULL, "u", NULL, INT64_MAX, NOW, err, sizeof err));

	tok = auth_sign(a, NULL, "u", "", 60, NOW, err, sizeof err);
	assert_non_null(tok);
	assert_int_equal(verify(a, tok, &c), AUTH_OK);
	assert_int_equal(c.roles, 0);
	mem_free(tok);
	tok = auth_sign(a, NULL, "u", "service", 60, NOW, err, sizeof err);
	assert_int_equal(verify(a, tok, &c), AUTH_OK);
	assert_int_equal(c.roles, AUTH_ROLE_SERVICE);
	mem_free(tok);
	auth_free(rs);
	auth_free(a);
}

static void test_result_str(void **state)
{
	static const char *want[] = {"ok",	    "malformed",     "bad_alg",	   "bad_signature",
				     "expired",	    "not_yet_valid", "bad_issuer", "bad_audience",
				     "bad_subject", "bad_claims"};

	(void)state;
	for (int i = AUTH_OK; i <= AUTH_ERR_CLAIMS; i++)
		assert_string_equal(auth_result_str((enum auth_result)i), want[i]);
}

/* ---- throughput (printed, never asserted) ---- */

/* ---- several keys (auth.keys) ---- */

static struct config_auth_key key_hs(const char *kid, const char *path)
{
	struct config_auth_key k = {.kid = (char *)kid,
				    .algorithm = AUTH_ALG_HS256,
				    .secret_file = (char *)path,
				    .not_after_s = INT64_MAX};
	return k;
}

static struct config_auth_key key_pub(const char *kid, enum auth_alg alg, const char *path)
{
	struct config_auth_key k = {.kid = (char *)kid,
				    .algorithm = alg,
				    .public_key_file = (char *)path,
				    .not_after_s = INT64_MAX};
	return k;
}

static struct auth *new_keys(struct config_auth_key *keys, size_t n)
{
	struct config_auth c = {.leeway_s = 0, .keys = keys, .n_keys = n};
	return new_auth(c);
}

/* A header with alg and kid (kid NULL: none; kid_json: the raw JSON value). */
static char *hdr(char *buf, size_t len, const char *alg, const char *kid_json)
{
	if (kid_json)
		snprintf(buf, len, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":%s}", alg, kid_json);
	else
		snprintf(buf, len, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	return buf;
}

#define KP "{\"sub\":\"u\",\"exp\":1700000100}"

static enum auth_result verify_made(struct auth *a, const char *alg, const char *kid_json,
				    const char *sign_alg, const void *secret, size_t secretlen,
				    EVP_PKEY *pkey)
{
	char h[256];
	char *tok =
	    make_token(hdr(h, sizeof h, alg, kid_json), KP, sign_alg, secret, secretlen, pkey);
	enum auth_result r = verify(a, tok, NULL);

	mem_free(tok);
	return r;
}

/* Old and new keys side by side: every token of either verifies. */
static void test_keys_rotation(void **state)
{
	struct config_auth_key keys[] = {key_hs("old", secret_path),
					 key_pub("new", AUTH_ALG_ES256, ec_pub_path),
					 key_pub("rsa", AUTH_ALG_RS256, rsa_pub_path)};
	struct auth *a = new_keys(keys, 3);

	(void)state;
	/* kid names the key. */
	assert_int_equal(verify_made(a, "HS256", "\"old\"", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_OK);
	assert_int_equal(verify_made(a, "ES256", "\"new\"", "ES256", NULL, 0, ec_key), AUTH_OK);
	assert_int_equal(verify_made(a, "RS256", "\"rsa\"", "RS256", NULL, 0, rsa_key), AUTH_OK);
	/* No kid: tried in order, each key for its own algorithm. */
	assert_int_equal(verify_made(a, "HS256", NULL, "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_OK);
	assert_int_equal(verify_made(a, "ES256", NULL, "ES256", NULL, 0, ec_key), AUTH_OK);
	assert_int_equal(verify_made(a, "RS256", NULL, "RS256", NULL, 0, rsa_key), AUTH_OK);
	/* A kid naming the wrong key of the right algorithm is a bad signature,
	 * never a retry with the others. */
	assert_int_equal(verify_made(a, "ES256", "\"new\"", "ES256", NULL, 0, ec_other),
			 AUTH_ERR_SIGNATURE);
	assert_int_equal(verify_made(a, "ES256", NULL, "ES256", NULL, 0, ec_other),
			 AUTH_ERR_SIGNATURE);
	assert_int_equal(
	    verify_made(a, "HS256", NULL, "HS256", OTHER_SECRET, strlen(OTHER_SECRET), NULL),
	    AUTH_ERR_SIGNATURE);
	auth_free(a);
}

static void test_keys_kid(void **state)
{
	struct config_auth_key keys[] = {key_hs("old", secret_path),
					 key_pub("new", AUTH_ALG_ES256, ec_pub_path)};
	struct auth *a = new_keys(keys, 2);

	(void)state;
	/* Unknown and empty kids are refused, not tried against the keys. */
	assert_int_equal(
	    verify_made(a, "HS256", "\"older\"", "HS256", SECRET, strlen(SECRET), NULL),
	    AUTH_ERR_KID);
	assert_int_equal(verify_made(a, "HS256", "\"\"", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_ERR_KID);
	assert_int_equal(verify_made(a, "HS256", "\"OLD\"", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_ERR_KID);
	/* A kid that is not a string is malformed. */
	assert_int_equal(verify_made(a, "HS256", "1", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_ERR_MALFORMED);
	assert_int_equal(verify_made(a, "HS256", "null", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_ERR_MALFORMED);
	assert_string_equal(auth_result_str(AUTH_ERR_KID), "unknown_kid");
	auth_free(a);

	/* The single key (no auth.keys) ignores kid, as before. */
	a = new_auth(cfg_hs(0));
	assert_int_equal(verify_made(a, "HS256", "\"any\"", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_OK);
	auth_free(a);
}

static void test_keys_not_after(void **state)
{
	struct config_auth_key keys[] = {key_hs("old", secret_path),
					 key_pub("new", AUTH_ALG_ES256, ec_pub_path)};
	struct auth *a;

	(void)state;
	/* Past not_after (NOW is its first second): verifies nothing. */
	keys[0].not_after_s = NOW;
	a = new_keys(keys, 2);
	assert_int_equal(verify_made(a, "HS256", "\"old\"", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_ERR_KID);
	assert_int_equal(verify_made(a, "HS256", NULL, "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_ERR_KID);
	assert_int_equal(verify_made(a, "ES256", NULL, "ES256", NULL, 0, ec_key), AUTH_OK);
	auth_free(a);
	/* Its last second still counts. */
	keys[0].not_after_s = NOW + 1;
	a = new_keys(keys, 2);
	assert_int_equal(verify_made(a, "HS256", "\"old\"", "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_OK);
	assert_int_equal(verify_made(a, "HS256", NULL, "HS256", SECRET, strlen(SECRET), NULL),
			 AUTH_OK);
	auth_free(a);
}

/*
 * Algorithm confusion with several keys: an HS256 key whose secret is the RSA
 * public key's bytes sits next to the RS256 key of that public key. A token
 * meant for one is never verified by the other, whatever its kid says.
 */
static void test_keys_confusion(void **state)
{
	struct config_auth_key both[] = {key_hs("hs", rsa_pub_path),
					 key_pub("rs", AUTH_ALG_RS256, rsa_pub_path)};
	struct config_auth_key only_hs[] = {key_hs("hs", rsa_pub_path)};
	struct config_auth_key only_rs[] = {key_pub("rs", AUTH_ALG_RS256, rsa_pub_path)};
	/* The HS key's secret: the PEM file, trailing newline trimmed. */
	size_t pemlen = strlen(rsa_pub_pem);
	struct auth *a;

	(void)state;
	while (pemlen && rsa_pub_pem[pemlen - 1] == '\n')
		pemlen--;

	a = new_keys(both, 2);
	/* An RS256 token sent to the HS key, and an HMAC of the PEM sent to the
	 * RS key (with either alg in the header). */
	assert_int_equal(verify_made(a, "RS256", "\"hs\"", "RS256", NULL, 0, rsa_key),
			 AUTH_ERR_ALG);
	assert_int_equal(verify_made(a, "HS256", "\"rs\"", "HS256", rsa_pub_pem, pemlen, NULL),
			 AUTH_ERR_ALG);
	assert_int_equal(verify_made(a, "RS256", "\"rs\"", "HS256", rsa_pub_pem, pemlen, NULL),
			 AUTH_ERR_SIGNATURE);
	assert_int_equal(verify_made(a, "RS256", NULL, "HS256", rsa_pub_pem, pemlen, NULL),
			 AUTH_ERR_SIGNATURE);
	/* Each for its own. */
	assert_int_equal(verify_made(a, "RS256", "\"rs\"", "RS256", NULL, 0, rsa_key), AUTH_OK);
	assert_int_equal(verify_made(a, "HS256", "\"hs\"", "HS256", rsa_pub_pem, pemlen, NULL),
			 AUTH_OK);
	/* "none", with and without kid, and an empty signature. */
	{
		char h[128], *p = b64url(KP, strlen(KP)), *b, tok[1024];

		hdr(h, sizeof h, "none", "\"hs\"");
		b = b64url(h, strlen(h));
		snprintf(tok, sizeof tok, "%s.%s.", b, p);
		assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
		mem_free(b);
		snprintf(tok, sizeof tok, "%s.%s.", B64_HDR_NONE, p);
		assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ALG);
		mem_free(p);
	}
	auth_free(a);

	/* With one key only, a token of the other algorithm finds no key. */
	a = new_keys(only_hs, 1);
	assert_int_equal(verify_made(a, "RS256", NULL, "RS256", NULL, 0, rsa_key), AUTH_ERR_ALG);
	assert_int_equal(verify_made(a, "RS256", "\"hs\"", "RS256", NULL, 0, rsa_key),
			 AUTH_ERR_ALG);
	auth_free(a);
	a = new_keys(only_rs, 1);
	assert_int_equal(verify_made(a, "HS256", NULL, "HS256", rsa_pub_pem, pemlen, NULL),
			 AUTH_ERR_ALG);
	assert_int_equal(verify_made(a, "HS256", "\"rs\"", "HS256", rsa_pub_pem, pemlen, NULL),
			 AUTH_ERR_ALG);
	auth_free(a);
}

/* Each key's iss/aud bind the tokens it verifies: a key set is not shared
 * across issuers. */
static void test_keys_issuer(void **state)
{
	struct config_auth_key keys[] = {key_hs("a", secret_path),
					 key_pub("b", AUTH_ALG_ES256, ec_pub_path)};
	const char *iss_a = "{\"sub\":\"u\",\"exp\":1700000100,\"iss\":\"A\",\"aud\":\"x\"}";
	const char *iss_b = "{\"sub\":\"u\",\"exp\":1700000100,\"iss\":\"B\",\"aud\":\"x\"}";
	struct auth *a;
	char *tok;

	(void)state;
	keys[0].issuer = "A";
	keys[1].issuer = "B";
	keys[1].audience = "x";
	a = new_keys(keys, 2);
	/* B's key signing a token that claims issuer A: refused, kid or not. */
	tok = make_token(HDR_ES256, iss_a, "ES256", NULL, 0, ec_key);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ISSUER);
	mem_free(tok);
	tok = make_token("{\"alg\":\"ES256\",\"kid\":\"b\"}", iss_a, "ES256", NULL, 0, ec_key);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ISSUER);
	mem_free(tok);
	/* A's key signing a token of issuer B. */
	tok = make_token(HDR_HS256, iss_b, "HS256", SECRET, strlen(SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_ISSUER);
	mem_free(tok);
	/* Each issuer with its own key. */
	tok = make_token(HDR_HS256, iss_a, "HS256", SECRET, strlen(SECRET), NULL);
	assert_int_equal(verify(a, tok, NULL), AUTH_OK);
	mem_free(tok);
	tok = make_token(HDR_ES256, iss_b, "ES256", NULL, 0, ec_key);
	assert_int_equal(verify(a, tok, NULL), AUTH_OK);
	mem_free(tok);
	/* B's audience is B's alone. */
	tok = make_token(HDR_ES256, "{\"sub\":\"u\",\"exp\":1700000100,\"iss\":\"B\"}", "ES256",
			 NULL, 0, ec_key);
	assert_int_equal(verify(a, tok, NULL), AUTH_ERR_AUDIENCE);
	mem_free(tok);
	auth_free(a);
}

static void test_keys_new_and_sign(void **state)
{
	struct config_auth_key keys[] = {key_hs("old", secret_path),
					 key_pub("new", AUTH_ALG_ES256, ec_pub_path),
					 key_hs("next", secret_path)};
	struct config_auth bad = {.keys = keys, .n_keys = 2};
	char err[256] = "", *tok;
	struct auth *a;

	(void)state;
	/* Each key's file problems name the key. */
	keys[1].public_key_file = rsa_pub_path;
	assert_null(auth_new(&bad, err, sizeof err));
	assert_non_null(strstr(err, "auth.keys[1].public_key_file"));
	keys[1].public_key_file = ec_pub_path;
	keys[0].secret_file = short_path;
	assert_null(auth_new(&bad, err, sizeof err));
	assert_non_null(strstr(err, "auth.keys[0].secret_file"));
	keys[0].secret_file = secret_path;
	bad.n_keys = CONFIG_AUTH_KEYS_MAX + 1;
	assert_null(auth_new(&bad, err, sizeof err));
	assert_non_null(strstr(err, "at most 16"));

	a = new_keys(keys, 3);
	/* --kid signs with that key and names it. */
	tok = auth_sign(a, "next", "u", NULL, 60, NOW, err, sizeof err);
	assert_non_null(tok);
	assert_int_equal(verify(a, tok, NULL), AUTH_OK);
	{
		jwt_t *j = NULL;
		assert_int_equal(jwt_decode(&j, tok, NULL, 0), 0);
		assert_string_equal(jwt_get_header(j, "kid"), "next");
		jwt_free(j);
	}
	mem_free(tok);
	/* Without --kid: the first HS256 key, named. */
	tok = auth_sign(a, NULL, "u", NULL, 60, NOW, err, sizeof err);
	assert_non_null(tok);
	{
		jwt_t *j = NULL;
		assert_int_equal(jwt_decode(&j, tok, NULL, 0), 0);
		assert_string_equal(jwt_get_header(j, "kid"), "old");
		jwt_free(j);
	}
	mem_free(tok);
	assert_null(auth_sign(a, "new", "u", NULL, 60, NOW, err, sizeof err));
	assert_non_null(strstr(err, "HS256"));
	assert_null(auth_sign(a, "gone", "u", NULL, 60, NOW, err, sizeof err));
	assert_non_null(strstr(err, "no key \"gone\""));
	auth_free(a);
	/* A retired key does not sign. */
	keys[0].not_after_s = NOW;
	a = new_keys(keys, 3);
	assert_null(auth_sign(a, "old", "u", NULL, 60, NOW, err, sizeof err));
	assert_non_null(strstr(err, "not_after"));
	tok = auth_sign(a, NULL, "u", NULL, 60, NOW, err, sizeof err);
	assert_non_null(tok);
	mem_free(tok);
	auth_free(a);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_one(const char *name, struct auth *a, const char *tok)
{
	double t0 = now_s(), t;
	long n = 0;
	struct auth_claims c;

	do {
		for (int i = 0; i < 100; i++)
			assert_int_equal(auth_verify(a, tok, strlen(tok), NOW, &c), AUTH_OK);
		n += 100;
		t = now_s() - t0;
	} while (t < 0.3);
	print_message("bench: %s %.0f verifications/s (%.1f us each)\n", name, (double)n / t,
		      t / (double)n * 1e6);
}

static void test_bench(void **state)
{
	const char *payload = "{\"sub\":\"bench-user\",\"exp\":1700000100,\"roles\":[\"admin\"]}";
	struct config_auth rc = {.algorithm = AUTH_ALG_RS256, .public_key_file = rsa_pub_path};
	struct config_auth ec = {.algorithm = AUTH_ALG_ES256, .public_key_file = ec_pub_path};
	struct auth *a;
	char *tok;

	(void)state;
	a = new_auth(cfg_hs(0));
	tok = hs(payload);
	bench_one("HS256", a, tok);
	mem_free(tok);
	auth_free(a);

	a = new_auth(rc);
	tok = make_token(HDR_RS256, payload, "RS256", NULL, 0, rsa_key);
	bench_one("RS256 (2048-bit)", a, tok);
	mem_free(tok);
	auth_free(a);

	a = new_auth(ec);
	tok = make_token(HDR_ES256, payload, "ES256", NULL, 0, ec_key);
	bench_one("ES256", a, tok);
	mem_free(tok);
	auth_free(a);

	/* The worst a token without kid costs: 16 RS256 keys, its own last. */
	{
		struct config_auth_key keys[CONFIG_AUTH_KEYS_MAX];
		char other_path[128], kids[CONFIG_AUTH_KEYS_MAX][8], *pem = pem_of(rsa_other, 0);

		write_file(other_path, sizeof other_path, "rsa-other.pub", pem, strlen(pem));
		mem_free(pem);
		for (int i = 0; i < CONFIG_AUTH_KEYS_MAX; i++) {
			snprintf(kids[i], sizeof kids[i], "k%d", i);
			keys[i] = key_pub(kids[i], AUTH_ALG_RS256,
					  i + 1 < CONFIG_AUTH_KEYS_MAX ? other_path : rsa_pub_path);
		}
		a = new_keys(keys, CONFIG_AUTH_KEYS_MAX);
		unlink(other_path);
		tok = make_token(HDR_RS256, payload, "RS256", NULL, 0, rsa_key);
		bench_one("RS256, 16 keys, no kid, its key last", a, tok);
		mem_free(tok);
		tok = make_token("{\"alg\":\"RS256\",\"kid\":\"k15\"}", payload, "RS256", NULL, 0,
				 rsa_key);
		bench_one("RS256, 16 keys, kid", a, tok);
		mem_free(tok);
		auth_free(a);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_errors),
	    cmocka_unit_test(test_hs256_sign_roundtrip),
	    cmocka_unit_test(test_hs256_libjwt_token),
	    cmocka_unit_test(test_hs256_wrong_secret),
	    cmocka_unit_test(test_alg_none_and_others),
	    cmocka_unit_test(test_rs256),
	    cmocka_unit_test(test_rs256_key_confusion),
	    cmocka_unit_test(test_es256),
	    cmocka_unit_test(test_exp_nbf),
	    cmocka_unit_test(test_clamp_time),
	    cmocka_unit_test(test_iss_aud),
	    cmocka_unit_test(test_subject),
	    cmocka_unit_test(test_roles),
	    cmocka_unit_test(test_size_limit),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_sign_errors),
	    cmocka_unit_test(test_result_str),
	    cmocka_unit_test(test_keys_rotation),
	    cmocka_unit_test(test_keys_kid),
	    cmocka_unit_test(test_keys_not_after),
	    cmocka_unit_test(test_keys_confusion),
	    cmocka_unit_test(test_keys_issuer),
	    cmocka_unit_test(test_keys_new_and_sign),
	    cmocka_unit_test(test_bench),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
