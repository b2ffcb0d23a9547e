/*
 * Chained hash table with a power-of-two bucket array.
 *
 * Each entry is one allocation (links + cached hash + key bytes), so a key
 * costs a single malloc and freeing it cannot leak a separate key copy. The
 * full 64-bit hash is cached in the entry: lookups compare it before the key,
 * and a rehash never re-reads key bytes.
 *
 * Keys come from authenticated users, but a user id is still attacker-shaped
 * input, so the hash is seeded per table from getrandom(): nobody can
 * precompute a set of ids that land in one chain.
 */
#include "stockalert/dict.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "stockalert/mem.h"

#define DICT_MIN_BUCKETS 8

struct dict_entry {
	struct dict_entry *next;
	void *value;
	uint64_t hash;
	char key[];
};

struct dict {
	struct dict_entry **buckets; /* NULL until the first insert */
	size_t mask;		     /* nbuckets - 1 (valid when buckets) */
	size_t size;
	uint64_t seed;
};

static uint64_t make_seed(const void *salt)
{
	uint64_t seed = 0;
	struct timespec ts;

	if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
		return seed;
	/* Early boot without entropy: a weaker seed still beats none. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)(uintptr_t)salt ^ ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec;
}

/*
 * Seeded FNV-1a, then a splitmix64 finaliser: FNV alone leaves the low bits
 * (the ones a power-of-two mask keeps) poorly mixed for keys that differ only
 * in their last character.
 */
static uint64_t hash_key(uint64_t seed, const char *key, size_t *len_out)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;
	const unsigned char *p = (const unsigned char *)key;

	while (*p) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	*len_out = (size_t)(p - (const unsigned char *)key);
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h;
}

struct dict *dict_new(void)
{
	struct dict *d = mem_calloc(1, sizeof *d);

	d->seed = make_seed(d);
	return d;
}

void dict_free(struct dict *d)
{
	if (!d)
		return;
	if (d->buckets) {
		for (size_t i = 0; i <= d->mask; i++) {
			struct dict_entry *e = d->buckets[i];

			while (e) {
				struct dict_entry *next = e->next;

				mem_free(e);
				e = next;
			}
		}
		mem_free(d->buckets);
	}
	mem_free(d);
}

/* Returns the link that points at key's entry (or at the NULL ending its chain). */
static struct dict_entry **find_link(const struct dict *d, const char *key, uint64_t h)
{
	struct dict_entry **link = &d->buckets[h & d->mask];

	while (*link) {
		if ((*link)->hash == h && strcmp((*link)->key, key) == 0)
			break;
		link = &(*link)->next;
	}
	return link;
}

void *dict_get(const struct dict *d, const char *key)
{
	size_t len;
	struct dict_entry *e;

	if (!d->buckets)
		return NULL;
	e = *find_link(d, key, hash_key(d->seed, key, &len));
	return e ? e->value : NULL;
}

static void grow(struct dict *d)
{
	size_t n = d->buckets ? (d->mask + 1) * 2 : DICT_MIN_BUCKETS;
	struct dict_entry **nb = mem_calloc(n, sizeof *nb);

	if (d->buckets) {
		for (size_t i = 0; i <= d->mask; i++) {
			struct dict_entry *e = d->buckets[i];

			while (e) {
				struct dict_entry *next = e->next;
				size_t j = e->hash & (n - 1);

				e->next = nb[j];
				nb[j] = e;
				e = next;
			}
		}
		mem_free(d->buckets);
	}
	d->buckets = nb;
	d->mask = n - 1;
}

void *dict_set(struct dict *d, const char *key, void *value)
{
	size_t len;
	uint64_t h = hash_key(d->seed, key, &len);
	struct dict_entry **link;
	struct dict_entry *e;

	if (d->buckets) {
		link = find_link(d, key, h);
		if (*link) {
			void *old = (*link)->value;

			(*link)->value = value;
			return old;
		}
	}
	/* Load factor 1: grow before the entry that would exceed it. */
	if (!d->buckets || d->size + 1 > d->mask + 1)
		grow(d);
	e = mem_alloc(sizeof *e + len + 1);
	memcpy(e->key, key, len + 1);
	e->hash = h;
	e->value = value;
	link = &d->buckets[h & d->mask];
	e->next = *link;
	*link = e;
	d->size++;
	return NULL;
}

void *dict_del(struct dict *d, const char *key)
{
	size_t len;
	uint64_t h;
	struct dict_entry **link;
	struct dict_entry *e;
	void *value;

	if (!d->buckets)
		return NULL;
	h = hash_key(d->seed, key, &len);
	link = find_link(d, key, h);
	e = *link;
	if (!e)
		return NULL;
	*link = e->next;
	value = e->value;
	mem_free(e);
	d->size--;
	return value;
}

size_t dict_size(const struct dict *d)
{
	return d->size;
}

/*
 * No iterator state lives in the table, so fn must leave d alone: an insert
 * may rehash under us and a delete may free the entry we are standing on.
 * Changing the values' own contents is fine.
 */
int dict_each(const struct dict *d, int (*fn)(const char *key, void *value, void *arg), void *arg)
{
	if (!d->buckets)
		return 0;
	for (size_t i = 0; i <= d->mask; i++) {
		for (const struct dict_entry *e = d->buckets[i]; e; e = e->next) {
			int rc = fn(e->key, e->value, arg);

			if (rc)
				return rc;
		}
	}
	return 0;
}
