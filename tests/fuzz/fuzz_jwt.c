/*
 * libFuzzer target for auth_verify: the input is a bearer token as a peer
 * would send it. Checked under HS256 (libjwt verifies the MAC) and under
 * ES256 and RS256 (our own base64url, r||s to DER and EVP verification).
 * And under a key set (auth.keys: kids "hs", "es", "rs" and a retired
 * "old"), for the kid selection. The seeds in corpus/jwt are signed with
 * FUZZ_SECRET and valid at FUZZ_NOW (some naming kid "hs"), so mutations
 * start from tokens that reach the claim checks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "stockalert/auth.h"
#include "stockalert/log.h"

#define FUZZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"
#define FUZZ_NOW    INT64_C(1700000000)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct auth *auth_hs, *auth_es, *auth_rs, *auth_keys;

static void die(const char *what)
{
	fprintf(stderr, "fuzz_jwt: %s\n", what);
	exit(1);
}

/* Writes contents to a fresh temp file, builds an auth from it, and removes
 * the file: auth_new reads its keys once. */
static struct auth *auth_from(enum auth_alg alg, const void *contents, size_t len)
{
	char path[] = "/tmp/fuzz_jwt.XXXXXX";
	char err[256];
	struct config_auth cfg = {.algorithm = alg, .leeway_s = 30};
	struct auth *a;
	int fd = mkstemp(path);

	if (fd < 0 || write(fd, contents, len) != (ssize_t)len || close(fd) < 0)
		die("cannot write the key file");
	if (alg == AUTH_ALG_HS256)
		cfg.secret_file = path;
	else
		cfg.public_key_file = path;
	a = auth_new(&cfg, err, sizeof err);
	unlink(path);
	if (!a)
		die(err);
	return a;
}

/* key's public PEM into a fresh temp file named in path. */
static void pem_file(EVP_PKEY *key, char *path)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *pem;
	long n;
	int fd = mkstemp(path);

	if (fd < 0 || !key || !bio || PEM_write_bio_PUBKEY(bio, key) != 1)
		die("cannot generate a key");
	n = BIO_get_mem_data(bio, &pem);
	if (write(fd, pem, (size_t)n) != (ssize_t)n || close(fd) < 0)
		die("cannot write the key file");
	BIO_free(bio);
	EVP_PKEY_free(key);
}

static struct auth *auth_from_key(enum auth_alg alg, EVP_PKEY *key)
{
	char path[] = "/tmp/fuzz_jwt.XXXXXX";
	char err[256];
	struct config_auth cfg = {.algorithm = alg, .leeway_s = 30, .public_key_file = path};
	struct auth *a;

	pem_file(key, path);
	a = auth_new(&cfg, err, sizeof err);
	unlink(path);
	if (!a)
		die(err);
	return a;
}

static struct auth *auth_from_keys(void)
{
	char secret[] = "/tmp/fuzz_jwt.XXXXXX", es[] = "/tmp/fuzz_jwt.XXXXXX",
	     rs[] = "/tmp/fuzz_jwt.XXXXXX";
	char err[256];
	int fd = mkstemp(secret);
	struct config_auth_key keys[] = {
	    {.kid = "old",
	     .algorithm = AUTH_ALG_HS256,
	     .secret_file = secret,
	     .not_after_s = FUZZ_NOW - 1},
	    {.kid = "hs",
	     .algorithm = AUTH_ALG_HS256,
	     .secret_file = secret,
	     .issuer = "fuzz",
	     .not_after_s = INT64_MAX},
	    {.kid = "es",
	     .algorithm = AUTH_ALG_ES256,
	     .public_key_file = es,
	     .not_after_s = INT64_MAX},
	    {.kid = "rs",
	     .algorithm = AUTH_ALG_RS256,
	     .public_key_file = rs,
	     .not_after_s = INT64_MAX},
	};
	struct config_auth cfg = {.leeway_s = 30, .keys = keys, .n_keys = 4};
	struct auth *a;

	if (fd < 0 || write(fd, FUZZ_SECRET, strlen(FUZZ_SECRET)) != (ssize_t)strlen(FUZZ_SECRET) ||
	    close(fd) < 0)
		die("cannot write the key file");
	pem_file(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), es);
	pem_file(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048), rs);
	a = auth_new(&cfg, err, sizeof err);
	unlink(secret);
	unlink(es);
	unlink(rs);
	if (!a)
		die(err);
	return a;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
	auth_hs = auth_from(AUTH_ALG_HS256, FUZZ_SECRET, strlen(FUZZ_SECRET));
	auth_es = auth_from_key(AUTH_ALG_ES256, EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"));
	auth_rs = auth_from_key(AUTH_ALG_RS256, EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048));
	auth_keys = auth_from_keys();
	return 0;
}

static void check(struct auth *a, const uint8_t *data, size_t size)
{
	struct auth_claims c;
	enum auth_result r;

	memset(&c, 0xa5, sizeof c);
	r = auth_verify(a, (const char *)data, size, FUZZ_NOW, &c);
	if (!auth_result_str(r))
		abort();
	if (r == AUTH_OK) {
		/* What the rest of the daemon relies on after AUTH_OK. */
		if (!auth_valid_sub(c.sub) ||
		    (c.roles & ~(unsigned)(AUTH_ROLE_ADMIN | AUTH_ROLE_SERVICE)))
			abort();
		if (c.exp < FUZZ_NOW - 30)
			abort();
	} else if (c.sub[0] != '\0') {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check(auth_hs, data, size);
	check(auth_es, data, size);
	check(auth_rs, data, size);
	check(auth_keys, data, size);
	return 0;
}
