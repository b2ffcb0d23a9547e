/*
 * libFuzzer target for auth_verify: the input is a bearer token as a peer
 * would send it. Checked under HS256 (libjwt verifies the MAC) and under
 * ES256 and RS256 (our own base64url, r||s to DER and EVP verification).
 * The seeds in corpus/jwt are signed with FUZZ_SECRET and valid at FUZZ_NOW,
 * so mutations start from tokens that reach the claim checks.
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

static struct auth *auth_hs, *auth_es, *auth_rs;

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

static struct auth *auth_from_key(enum auth_alg alg, EVP_PKEY *key)
{
	BIO *bio = BIO_new(BIO_s_mem());
	struct auth *a;
	char *pem;
	long n;

	if (!key || !bio || PEM_write_bio_PUBKEY(bio, key) != 1)
		die("cannot generate a key");
	n = BIO_get_mem_data(bio, &pem);
	a = auth_from(alg, pem, (size_t)n);
	BIO_free(bio);
	EVP_PKEY_free(key);
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
	return 0;
}
