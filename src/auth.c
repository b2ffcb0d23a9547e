#include "stockalert/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/decoder.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stockalert/errbuf.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

/* Bounds the work an unauthenticated peer can make us do before any key is
 * involved; real tokens are a few hundred bytes. */
#define AUTH_TOKEN_MAX	      8192
#define AUTH_HS256_MIN_SECRET 32
#define AUTH_RSA_MIN_BITS     2048
#define AUTH_PEM_MAX	      (64 * 1024)
#define ES256_COORD	      32

/* One verification key with everything pinned to it: a token verified by
 * this key meets this key's algorithm, issuer and audience, never another's. */
struct auth_key {
	char *kid; /* NULL for the single key of auth.algorithm & co. */
	enum auth_alg alg;
	const char *alg_name;
	unsigned char *secret; /* HS256 */
	size_t secret_len;
	/* RS256/ES256: parsed once, because libjwt re-parses the PEM on every
	 * verification (~286 us), too slow for a reconnect storm. */
	EVP_PKEY *pkey;
	char *issuer;
	char *audience;
	int64_t not_after; /* verifies nothing from this second on */
};

struct auth {
	struct auth_key keys[CONFIG_AUTH_KEYS_MAX];
	size_t n_keys;
	/* auth.keys is configured: a token's "kid" picks its key. */
	bool by_kid;
	int64_t leeway;
};

/* A token split at its two dots; the pointers alias the caller's token. */
struct jws {
	const char *seg[3];
	size_t len[3];
};

static const char *alg_name(enum auth_alg alg)
{
	switch (alg) {
	case AUTH_ALG_HS256: return "HS256";
	case AUTH_ALG_RS256: return "RS256";
	case AUTH_ALG_ES256: return "ES256";
	}
	return NULL;
}

const char *auth_result_str(enum auth_result r)
{
	switch (r) {
	case AUTH_OK: return "ok";
	case AUTH_ERR_MALFORMED: return "malformed";
	case AUTH_ERR_ALG: return "bad_alg";
	case AUTH_ERR_SIGNATURE: return "bad_signature";
	case AUTH_ERR_EXPIRED: return "expired";
	case AUTH_ERR_NOT_YET_VALID: return "not_yet_valid";
	case AUTH_ERR_ISSUER: return "bad_issuer";
	case AUTH_ERR_AUDIENCE: return "bad_audience";
	case AUTH_ERR_SUBJECT: return "bad_subject";
	case AUTH_ERR_CLAIMS: return "bad_claims";
	case AUTH_ERR_KID: return "unknown_kid";
	}
	return "unknown";
}

static int sub_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == ':' || c == '-';
}

int auth_valid_sub(const char *sub)
{
	size_t i;

	if (!sub)
		return 0;
	for (i = 0; sub[i]; i++)
		if (i >= AUTH_SUB_MAX || !sub_char_ok(sub[i]))
			return 0;
	return i > 0;
}

/* ---- key loading ---- */

static unsigned char *read_pem(const char *what, const char *path, size_t *lenp, char *err,
			       size_t errlen)
{
	unsigned char *data = NULL;
	size_t len = 0;
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		errbuf_set(err, errlen, "%s: %s: %s", what, path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		errbuf_set(err, errlen, "%s: %s: not a regular file", what, path);
		goto err;
	}
	if (st.st_size > AUTH_PEM_MAX) {
		errbuf_set(err, errlen, "%s: %s: larger than %d bytes", what, path, AUTH_PEM_MAX);
		goto err;
	}
	data = mem_alloc((size_t)st.st_size + 1);
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, data + len, (size_t)st.st_size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			errbuf_set(err, errlen, "%s: %s: %s", what, path, strerror(errno));
			goto err;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == 0) {
		errbuf_set(err, errlen, "%s: %s: is empty", what, path);
		goto err;
	}
	data[len] = '\0';
	close(fd);
	*lenp = len;
	return data;
err:
	mem_free(data);
	close(fd);
	return NULL;
}

/* Accepts a SubjectPublicKeyInfo ("PUBLIC KEY"), PKCS#1 ("RSA PUBLIC KEY")
 * or a certificate, since operators are often handed the issuer's cert. */
static EVP_PKEY *parse_public_key(const unsigned char *pem, size_t len)
{
	EVP_PKEY *pkey = NULL;
	OSSL_DECODER_CTX *dctx;
	const unsigned char *p = pem;
	size_t left = len;

	dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL,
					     NULL);
	if (dctx) {
		if (OSSL_DECODER_from_data(dctx, &p, &left) != 1)
			pkey = NULL;
		OSSL_DECODER_CTX_free(dctx);
	}
	if (!pkey) {
		BIO *bio = BIO_new_mem_buf(pem, (int)len);
		X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

		if (cert)
			pkey = X509_get_pubkey(cert);
		X509_free(cert);
		BIO_free(bio);
	}
	ERR_clear_error();
	return pkey;
}

/* what names the key in messages: "auth" or "auth.keys[2]". */
static int check_key_type(const struct auth_key *k, const char *what, const char *path, char *err,
			  size_t errlen)
{
	char group[64];

	if (k->alg == AUTH_ALG_RS256) {
		if (!EVP_PKEY_is_a(k->pkey, "RSA")) {
			errbuf_set(err, errlen, "%s.public_key_file: %s: not an RSA key (RS256)",
				   what, path);
			return -1;
		}
		if (EVP_PKEY_get_bits(k->pkey) < AUTH_RSA_MIN_BITS) {
			errbuf_set(err, errlen,
				   "%s.public_key_file: %s: RSA key of %d bits, "
				   "RS256 needs at least %d",
				   what, path, EVP_PKEY_get_bits(k->pkey), AUTH_RSA_MIN_BITS);
			return -1;
		}
		return 0;
	}
	if (!EVP_PKEY_is_a(k->pkey, "EC") ||
	    EVP_PKEY_get_group_name(k->pkey, group, sizeof group, NULL) != 1 ||
	    (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
		errbuf_set(err, errlen, "%s.public_key_file: %s: not an EC P-256 key (ES256)", what,
			   path);
		ERR_clear_error();
		return -1;
	}
	return 0;
}

static int load_secret(struct auth_key *k, const char *what, const char *path, char *err,
		       size_t errlen)
{
	char why[512];
	char *secret;
	size_t len;

	if (!path || !path[0]) {
		errbuf_set(err, errlen, "%s.secret_file: not set (required for HS256)", what);
		return -1;
	}
	why[0] = '\0';
	secret = config_read_secret(path, why, sizeof why);
	if (!secret) {
		errbuf_set(err, errlen, "%s.secret_file: %s", what,
			   why[0] ? why : "cannot read the secret");
		return -1;
	}
	len = strlen(secret);
	if (len < AUTH_HS256_MIN_SECRET) {
		errbuf_set(err, errlen,
			   "%s.secret_file: %s: secret is %zu bytes, HS256 needs at least %d", what,
			   path, len, AUTH_HS256_MIN_SECRET);
		explicit_bzero(secret, len);
		mem_free(secret);
		return -1;
	}
	k->secret = (unsigned char *)secret;
	k->secret_len = len;
	return 0;
}

static int load_public_key(struct auth_key *k, const char *what, const char *path, char *err,
			   size_t errlen)
{
	char key[64];
	unsigned char *pem;
	size_t len;

	if (!path || !path[0]) {
		errbuf_set(err, errlen, "%s.public_key_file: not set (required for %s)", what,
			   k->alg_name);
		return -1;
	}
	snprintf(key, sizeof key, "%s.public_key_file", what);
	pem = read_pem(key, path, &len, err, errlen);
	if (!pem)
		return -1;
	k->pkey = parse_public_key(pem, len);
	mem_free(pem);
	if (!k->pkey) {
		errbuf_set(err, errlen, "%s.public_key_file: %s: no PEM public key or certificate",
			   what, path);
		return -1;
	}
	return check_key_type(k, what, path, err, errlen);
}

/* What one key needs, whether it comes from auth.keys or the single key. */
struct key_spec {
	const char *kid;
	enum auth_alg alg;
	const char *secret_file, *public_key_file, *issuer, *audience;
	int64_t not_after;
};

static int load_key(struct auth_key *k, const struct key_spec *ks, const char *what, char *err,
		    size_t errlen)
{
	if (!alg_name(ks->alg)) {
		errbuf_set(err, errlen, "%s.algorithm: must be HS256, RS256 or ES256", what);
		return -1;
	}
	/* An empty string would make "iss":"" the requirement, surely a typo. */
	if (ks->issuer && !ks->issuer[0]) {
		errbuf_set(err, errlen, "%s.issuer: must be null or a non-empty string", what);
		return -1;
	}
	if (ks->audience && !ks->audience[0]) {
		errbuf_set(err, errlen, "%s.audience: must be null or a non-empty string", what);
		return -1;
	}
	k->alg = ks->alg;
	k->alg_name = alg_name(ks->alg);
	k->not_after = ks->not_after;
	if (k->alg == AUTH_ALG_HS256) {
		if (load_secret(k, what, ks->secret_file, err, errlen) < 0)
			return -1;
	} else if (load_public_key(k, what, ks->public_key_file, err, errlen) < 0) {
		return -1;
	}
	if (ks->kid)
		k->kid = mem_strdup(ks->kid);
	if (ks->issuer)
		k->issuer = mem_strdup(ks->issuer);
	if (ks->audience)
		k->audience = mem_strdup(ks->audience);
	log_info("auth", "verifying %s tokens%s%s with the key from %s", k->alg_name,
		 ks->kid ? " of kid " : "", ks->kid ? ks->kid : "",
		 k->alg == AUTH_ALG_HS256 ? ks->secret_file : ks->public_key_file);
	return 0;
}

struct auth *auth_new(const struct config_auth *cfg, char *err, size_t errlen)
{
	char what[32];
	struct auth *a;

	if (!cfg) {
		errbuf_set(err, errlen, "auth: no configuration");
		return NULL;
	}
	if (cfg->leeway_s < 0 || cfg->leeway_s > 3600) {
		errbuf_set(err, errlen, "auth.leeway_s: must be an integer between 0 and 3600");
		return NULL;
	}
	if (cfg->n_keys > CONFIG_AUTH_KEYS_MAX) {
		errbuf_set(err, errlen, "auth.keys: must have at most %d entries",
			   CONFIG_AUTH_KEYS_MAX);
		return NULL;
	}

	a = mem_calloc(1, sizeof *a);
	a->leeway = cfg->leeway_s;
	a->by_kid = cfg->n_keys > 0;
	if (!a->by_kid) {
		const struct key_spec ks = {
		    .alg = cfg->algorithm,
		    .secret_file = cfg->secret_file,
		    .public_key_file = cfg->public_key_file,
		    .issuer = cfg->issuer,
		    .audience = cfg->audience,
		    .not_after = INT64_MAX,
		};
		a->n_keys = 1;
		if (load_key(&a->keys[0], &ks, "auth", err, errlen) < 0)
			goto err;
		return a;
	}
	for (size_t i = 0; i < cfg->n_keys; i++) {
		const struct config_auth_key *ck = &cfg->keys[i];
		const struct key_spec ks = {
		    .kid = ck->kid,
		    .alg = ck->algorithm,
		    .secret_file = ck->secret_file,
		    .public_key_file = ck->public_key_file,
		    .issuer = ck->issuer,
		    .audience = ck->audience,
		    .not_after = ck->not_after_s,
		};

		snprintf(what, sizeof what, "auth.keys[%zu]", i);
		/* The config loader insists on it; a hand-built config might not. */
		if (!ck->kid || !ck->kid[0]) {
			errbuf_set(err, errlen, "%s.kid: required", what);
			goto err;
		}
		a->n_keys = i + 1;
		if (load_key(&a->keys[i], &ks, what, err, errlen) < 0)
			goto err;
	}
	return a;
err:
	auth_free(a);
	return NULL;
}

static void key_free(struct auth_key *k)
{
	if (k->secret) {
		explicit_bzero(k->secret, k->secret_len);
		mem_free(k->secret);
	}
	EVP_PKEY_free(k->pkey);
	mem_free(k->kid);
	mem_free(k->issuer);
	mem_free(k->audience);
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_keys; i++)
		key_free(&a->keys[i]);
	mem_free(a);
}

/* ---- verification ---- */

static int b64url_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/*
 * Unpadded base64url (RFC 7515 §2) to bytes. OpenSSL does the decoding; we
 * only map the alphabet and restore the padding it expects. Characters
 * outside the url-safe alphabet (including '=', '+', '/' and whitespace,
 * which EVP_DecodeBlock would tolerate) are refused first. out must hold
 * 3 * (n + 3) / 4 bytes.
 */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
	unsigned char tmp[AUTH_TOKEN_MAX + 4];
	size_t pad, i;
	int r;

	if (n == 0 || n % 4 == 1 || n > AUTH_TOKEN_MAX)
		return -1;
	for (i = 0; i < n; i++) {
		if (!b64url_char_ok(in[i]))
			return -1;
		tmp[i] = (unsigned char)(in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i]);
	}
	pad = (4 - n % 4) % 4;
	memset(tmp + n, '=', pad);
	r = EVP_DecodeBlock(out, tmp, (int)(n + pad));
	if (r < 0 || (size_t)r < pad)
		return -1;
	/* EVP_DecodeBlock counts the padding as decoded zero bytes. */
	*outlen = (size_t)r - pad;
	return 0;
}

static int split_jws(const char *token, size_t len, struct jws *j)
{
	size_t start = 0, k = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && token[i] != '.')
			continue;
		if (k == 3)
			return -1;
		j->seg[k] = token + start;
		j->len[k] = i - start;
		k++;
		start = i + 1;
	}
	/* An empty signature is left for after the alg check, so that the
	 * classic "alg":"none" token is reported as the alg attack it is. */
	return k == 3 && j->len[0] && j->len[1] ? 0 : -1;
}

static json_t *decode_json_object(const char *seg, size_t n)
{
	unsigned char raw[AUTH_TOKEN_MAX];
	size_t rawlen;
	json_t *obj;

	if (b64url_decode(seg, n, raw, &rawlen) < 0)
		return NULL;
	/* Duplicate names are how two parsers are made to disagree about a
	 * claim; JSON_ALLOW_NUL stays off so every string is a C string. */
	obj = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
	if (obj && !json_is_object(obj)) {
		json_decref(obj);
		obj = NULL;
	}
	return obj;
}

static bool key_alg_is(const struct auth_key *k, json_t *alg)
{
	return json_is_string(alg) && strcmp(json_string_value(alg), k->alg_name) == 0;
}

/*
 * Picks the keys that may verify the token, in the order to try them: the
 * one its "kid" names (when auth.keys is configured), else every key. A key
 * is a candidate only for a token of its own algorithm and before its
 * not_after: the configured algorithm, never the token's choice, is what
 * refuses "none" and an HS256 token forged with an RSA public key.
 */
static enum auth_result pick_keys(const struct auth *a, json_t *h, int64_t now,
				  const struct auth_key **cand, size_t *n_cand)
{
	json_t *alg = json_object_get(h, "alg"), *kid = json_object_get(h, "kid");
	bool alg_known = false;

	*n_cand = 0;
	if (a->by_kid && kid) {
		if (!json_is_string(kid))
			return AUTH_ERR_MALFORMED;
		/* An empty kid names no key (kids are never empty), and does
		 * not fall back to trying them all. */
		for (size_t i = 0; i < a->n_keys; i++) {
			const struct auth_key *k = &a->keys[i];

			if (strcmp(k->kid, json_string_value(kid)) != 0)
				continue;
			if (now >= k->not_after)
				return AUTH_ERR_KID;
			if (!key_alg_is(k, alg))
				return AUTH_ERR_ALG;
			cand[(*n_cand)++] = k;
			return AUTH_OK;
		}
		return AUTH_ERR_KID;
	}
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct auth_key *k = &a->keys[i];

		if (!key_alg_is(k, alg))
			continue;
		alg_known = true;
		if (now < k->not_after)
			cand[(*n_cand)++] = k;
	}
	if (*n_cand)
		return AUTH_OK;
	return alg_known ? AUTH_ERR_KID : AUTH_ERR_ALG;
}

static enum auth_result check_header(const struct auth *a, const struct jws *j, int64_t now,
				     const struct auth_key **cand, size_t *n_cand)
{
	enum auth_result r = AUTH_ERR_MALFORMED;
	json_t *h, *typ;

	h = decode_json_object(j->seg[0], j->len[0]);
	if (!h)
		return AUTH_ERR_MALFORMED;
	r = pick_keys(a, h, now, cand, n_cand);
	if (r != AUTH_OK)
		goto out;
	r = AUTH_ERR_MALFORMED;
	/* libjwt refuses any other typ, so we do too for every algorithm. */
	typ = json_object_get(h, "typ");
	if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
		goto out;
	/* RFC 7515 §4.1.11: extensions we do not understand must not be ignored. */
	if (json_object_get(h, "crit"))
		goto out;
	r = AUTH_OK;
out:
	json_decref(h);
	return r;
}

static enum auth_result verify_hs256(const struct auth_key *a, const char *token, size_t len)
{
	char copy[AUTH_TOKEN_MAX + 1];
	jwt_t *jwt = NULL;
	enum auth_result r = AUTH_ERR_SIGNATURE;

	memcpy(copy, token, len);
	copy[len] = '\0';
	if (jwt_decode(&jwt, copy, a->secret, (int)a->secret_len) != 0 || !jwt)
		goto out;
	/* jwt_decode skips verification for "none"; make sure it really ran
	 * HMAC-SHA256 with our key. */
	if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
		r = AUTH_ERR_ALG;
		goto out;
	}
	r = AUTH_OK;
out:
	jwt_free(jwt);
	if (r != AUTH_OK)
		ERR_clear_error();
	return r;
}

static enum auth_result verify_pkey(const struct auth_key *a, const struct jws *j)
{
	unsigned char raw[AUTH_TOKEN_MAX];
	unsigned char der[2 * ES256_COORD + 16];
	const unsigned char *sig = raw;
	size_t siglen, signed_len;
	enum auth_result r = AUTH_ERR_SIGNATURE;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;

	if (b64url_decode(j->seg[2], j->len[2], raw, &siglen) < 0)
		return AUTH_ERR_MALFORMED;
	if (a->alg == AUTH_ALG_ES256) {
		/* JWS carries r||s (RFC 7518 §3.4); OpenSSL wants DER. */
		BIGNUM *br, *bs;
		unsigned char *p = der;
		int n;

		if (siglen != 2 * ES256_COORD)
			return AUTH_ERR_SIGNATURE;
		es = ECDSA_SIG_new();
		br = BN_bin2bn(raw, ES256_COORD, NULL);
		bs = BN_bin2bn(raw + ES256_COORD, ES256_COORD, NULL);
		if (!es || !br || !bs || ECDSA_SIG_set0(es, br, bs) != 1) {
			BN_free(br);
			BN_free(bs);
			goto out;
		}
		n = i2d_ECDSA_SIG(es, NULL);
		if (n <= 0 || (size_t)n > sizeof der || i2d_ECDSA_SIG(es, &p) != n)
			goto out;
		sig = der;
		siglen = (size_t)n;
	} else if (siglen != (size_t)EVP_PKEY_get_size(a->pkey)) {
		return AUTH_ERR_SIGNATURE;
	}

	/* The signing input is the encoded header '.' encoded payload. */
	signed_len = j->len[0] + 1 + j->len[1];
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, a->pkey) != 1)
		goto out;
	if (EVP_DigestVerify(md, sig, siglen, (const unsigned char *)j->seg[0], signed_len) == 1)
		r = AUTH_OK;
out:
	EVP_MD_CTX_free(md);
	ECDSA_SIG_free(es);
	/* A failed verify leaves errors queued on this thread, where the TLS
	 * layer's next SSL_get_error() would find and misreport them. */
	ERR_clear_error();
	return r;
}

int64_t auth_clamp_time(int64_t t)
{
	return t < 0 ? 0 : t > AUTH_TIME_MAX ? AUTH_TIME_MAX : t;
}

/* An integer NumericDate, clamped (auth_clamp_time) here, where it is read,
 * so no sum downstream (exp + leeway in the expiry schedule) can overflow;
 * *present says whether it was there at all. */
static enum auth_result int_claim(json_t *payload, const char *name, int64_t *out, int *present)
{
	json_t *v = json_object_get(payload, name);

	*present = v != NULL;
	if (!v)
		return AUTH_OK;
	if (!json_is_integer(v))
		return AUTH_ERR_CLAIMS;
	*out = auth_clamp_time((int64_t)json_integer_value(v));
	return AUTH_OK;
}

static enum auth_result check_times(const struct auth *a, json_t *payload, int64_t now,
				    int64_t *exp_out)
{
	enum auth_result r;
	int64_t exp = 0, nbf = 0;
	int has_exp, has_nbf;

	r = int_claim(payload, "exp", &exp, &has_exp);
	if (r != AUTH_OK)
		return r;
	r = int_claim(payload, "nbf", &nbf, &has_nbf);
	if (r != AUTH_OK)
		return r;
	/* A token that never expires cannot be revoked. */
	if (!has_exp)
		return AUTH_ERR_EXPIRED;
	/* RFC 7519 4.1.4: valid only before exp. Both are clamped. */
	if (now >= exp + a->leeway)
		return AUTH_ERR_EXPIRED;
	if (has_nbf && nbf - a->leeway > now)
		return AUTH_ERR_NOT_YET_VALID;
	*exp_out = exp;
	return AUTH_OK;
}

static enum auth_result check_iss_aud(const struct auth_key *a, json_t *payload)
{
	json_t *iss = json_object_get(payload, "iss");
	json_t *aud = json_object_get(payload, "aud");
	int aud_match = 0;

	/* Types are checked whether or not we are configured to care, so a
	 * token's validity does not hinge on configuration in surprising ways. */
	if (iss && !json_is_string(iss))
		return AUTH_ERR_CLAIMS;
	if (json_is_string(aud)) {
		aud_match = a->audience && strcmp(json_string_value(aud), a->audience) == 0;
	} else if (json_is_array(aud)) {
		size_t i;
		json_t *v;

		json_array_foreach(aud, i, v)
		{
			if (!json_is_string(v))
				return AUTH_ERR_CLAIMS;
			if (a->audience && strcmp(json_string_value(v), a->audience) == 0)
				aud_match = 1;
		}
	} else if (aud) {
		return AUTH_ERR_CLAIMS;
	}
	if (a->issuer && (!iss || strcmp(json_string_value(iss), a->issuer) != 0))
		return AUTH_ERR_ISSUER;
	if (a->audience && !aud_match)
		return AUTH_ERR_AUDIENCE;
	return AUTH_OK;
}

static enum auth_result check_roles(json_t *payload, unsigned *roles)
{
	json_t *arr = json_object_get(payload, "roles");
	json_t *v;
	size_t i;

	*roles = 0;
	if (!arr)
		return AUTH_OK;
	if (!json_is_array(arr))
		return AUTH_ERR_CLAIMS;
	json_array_foreach(arr, i, v)
	{
		if (!json_is_string(v))
			return AUTH_ERR_CLAIMS;
		/* Other issuers' roles may share the claim; they mean nothing here. */
		if (strcmp(json_string_value(v), "admin") == 0)
			*roles |= AUTH_ROLE_ADMIN;
		else if (strcmp(json_string_value(v), "service") == 0)
			*roles |= AUTH_ROLE_SERVICE;
	}
	return AUTH_OK;
}

static enum auth_result check_claims(const struct auth *a, const struct auth_key *k,
				     json_t *payload, int64_t now, struct auth_claims *out)
{
	enum auth_result r;
	json_t *sub;

	r = check_times(a, payload, now, &out->exp);
	if (r != AUTH_OK)
		return r;
	r = check_iss_aud(k, payload);
	if (r != AUTH_OK)
		return r;
	sub = json_object_get(payload, "sub");
	if (!json_is_string(sub) || json_string_length(sub) > AUTH_SUB_MAX ||
	    !auth_valid_sub(json_string_value(sub)))
		return AUTH_ERR_SUBJECT;
	memcpy(out->sub, json_string_value(sub), json_string_length(sub) + 1);
	return check_roles(payload, &out->roles);
}

enum auth_result auth_verify(struct auth *a, const char *token, size_t len, int64_t now,
			     struct auth_claims *claims)
{
	const struct auth_key *cand[CONFIG_AUTH_KEYS_MAX], *k = NULL;
	size_t n_cand = 0;
	struct auth_claims c;
	enum auth_result r;
	json_t *payload = NULL;
	struct jws j;

	if (claims)
		memset(claims, 0, sizeof *claims);
	if (!a || !token || len == 0 || len > AUTH_TOKEN_MAX || memchr(token, '\0', len))
		return AUTH_ERR_MALFORMED;
	if (split_jws(token, len, &j) < 0)
		return AUTH_ERR_MALFORMED;
	r = check_header(a, &j, now, cand, &n_cand);
	if (r != AUTH_OK)
		return r;
	/* Parsed before the signature check (as libjwt does) so that a broken
	 * payload is reported as malformed whatever the algorithm. */
	payload = decode_json_object(j.seg[1], j.len[1]);
	if (!payload)
		return AUTH_ERR_MALFORMED;
	if (j.len[2] == 0) {
		r = AUTH_ERR_SIGNATURE;
		goto out;
	}
	for (size_t i = 0; i < j.len[2]; i++) {
		if (!b64url_char_ok(j.seg[2][i])) {
			r = AUTH_ERR_MALFORMED;
			goto out;
		}
	}
	/* The first key whose signature holds decides; its own claims rules
	 * apply, so a token never borrows another key's issuer. At most
	 * CONFIG_AUTH_KEYS_MAX tries. */
	for (size_t i = 0; i < n_cand && !k; i++) {
		r = cand[i]->alg == AUTH_ALG_HS256 ? verify_hs256(cand[i], token, len)
						   : verify_pkey(cand[i], &j);
		if (r == AUTH_OK)
			k = cand[i];
		else if (r == AUTH_ERR_MALFORMED)
			goto out;
	}
	if (!k)
		goto out;
	memset(&c, 0, sizeof c);
	r = check_claims(a, k, payload, now, &c);
	if (r == AUTH_OK && claims)
		*claims = c;
out:
	json_decref(payload);
	return r;
}

/* ---- signing ---- */

static int parse_roles_csv(const char *csv, unsigned *roles, char *err, size_t errlen)
{
	const char *p = csv;

	*roles = 0;
	if (!csv)
		return 0;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p)
		return 0;
	for (;;) {
		const char *start, *end;
		size_t n;

		while (*p == ' ' || *p == '\t')
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		n = (size_t)(end - start);
		if (n == 5 && memcmp(start, "admin", 5) == 0) {
			*roles |= AUTH_ROLE_ADMIN;
		} else if (n == 7 && memcmp(start, "service", 7) == 0) {
			*roles |= AUTH_ROLE_SERVICE;
		} else {
			errbuf_set(err, errlen,
				   "roles: unknown role '%.*s' (known: admin, service)",
				   (int)(n > 32 ? 32 : n), start);
			return -1;
		}
		if (!*p)
			return 0;
		p++;
	}
}

/* The key gentoken signs with: the one named kid, else the first HS256 key
 * still in service. */
static const struct auth_key *signing_key(const struct auth *a, const char *kid, int64_t now,
					  char *err, size_t errlen)
{
	const struct auth_key *k = NULL;

	for (size_t i = 0; a && i < a->n_keys && !k; i++) {
		const struct auth_key *c = &a->keys[i];

		if (kid ? c->kid && strcmp(c->kid, kid) == 0
			: c->alg == AUTH_ALG_HS256 && now < c->not_after)
			k = c;
	}
	if (!k && kid) {
		errbuf_set(err, errlen, "--kid: no key \"%.64s\" in auth.keys", kid);
		return NULL;
	}
	if (!k || k->alg != AUTH_ALG_HS256) {
		if (kid)
			errbuf_set(err, errlen,
				   "--kid: gentoken needs an HS256 key, \"%.64s\" is %s", kid,
				   k->alg_name);
		else
			errbuf_set(err, errlen, "gentoken needs auth.algorithm HS256");
		return NULL;
	}
	if (now >= k->not_after) {
		errbuf_set(err, errlen, "--kid: key \"%.64s\" is past its not_after", kid);
		return NULL;
	}
	return k;
}

char *auth_sign(struct auth *a, const char *kid, const char *sub, const char *roles_csv,
		int64_t ttl_s, int64_t now, char *err, size_t errlen)
{
	const struct auth_key *k;
	json_malloc_t jmalloc;
	json_free_t jfree;
	json_t *grants = NULL, *roles;
	char *grants_json = NULL, *encoded = NULL, *out = NULL;
	jwt_t *jwt = NULL;
	unsigned role_bits;

	k = signing_key(a, kid, now, err, errlen);
	if (!k)
		return NULL;
	if (!auth_valid_sub(sub)) {
		errbuf_set(err, errlen, "sub: must be 1-%d characters of [A-Za-z0-9_.:-]",
			   AUTH_SUB_MAX);
		return NULL;
	}
	if (ttl_s <= 0 || now > INT64_MAX - ttl_s) {
		errbuf_set(err, errlen, "ttl: must be a positive number of seconds");
		return NULL;
	}
	if (parse_roles_csv(roles_csv, &role_bits, err, errlen) < 0)
		return NULL;

	grants = json_object();
	json_object_set_new(grants, "sub", json_string(sub));
	json_object_set_new(grants, "iat", json_integer((json_int_t)now));
	json_object_set_new(grants, "exp", json_integer((json_int_t)(now + ttl_s)));
	if (k->issuer)
		json_object_set_new(grants, "iss", json_string(k->issuer));
	if (k->audience)
		json_object_set_new(grants, "aud", json_string(k->audience));
	if (role_bits) {
		roles = json_array();
		if (role_bits & AUTH_ROLE_ADMIN)
			json_array_append_new(roles, json_string("admin"));
		if (role_bits & AUTH_ROLE_SERVICE)
			json_array_append_new(roles, json_string("service"));
		json_object_set_new(grants, "roles", roles);
	}
	grants_json = json_dumps(grants, JSON_COMPACT);
	if (!grants_json || jwt_new(&jwt) != 0 ||
	    jwt_set_alg(jwt, JWT_ALG_HS256, k->secret, (int)k->secret_len) != 0 ||
	    (k->kid && jwt_add_header(jwt, "kid", k->kid) != 0) ||
	    jwt_add_grants_json(jwt, grants_json) != 0) {
		errbuf_set(err, errlen, "cannot build the token");
		goto out;
	}
	encoded = jwt_encode_str(jwt);
	if (!encoded) {
		errbuf_set(err, errlen, "cannot sign the token: %s", strerror(errno));
		goto out;
	}
	out = mem_strdup(encoded);
out:
	/* libjwt 1.10 has no allocator hooks: its strings come from malloc. */
	free(encoded);
	json_get_alloc_funcs(&jmalloc, &jfree);
	if (grants_json)
		jfree(grants_json);
	json_decref(grants);
	jwt_free(jwt);
	return out;
}
