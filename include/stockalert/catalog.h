#ifndef STOCKALERT_CATALOG_H
#define STOCKALERT_CATALOG_H
/*
 * What the alert pipeline needs to know of a product (name, default
 * low-stock threshold, last stock MySQL has), cached from MySQL's
 * `products` table. Entries are refreshed after CATALOG_TTL_MS; a stale
 * entry is still used while MySQL is down, so alerts keep flowing. Lookups
 * go ahead of queued writes (store_query_urgent).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stockalert/store.h"

#define CATALOG_TTL_MS		  30000
/* The schema's default for products.low_stock_threshold, used for a
 * product MySQL could not tell us about. */
#define CATALOG_DEFAULT_THRESHOLD 5

struct product_info {
	int64_t id;
	bool known;	  /* false: not in MySQL, or MySQL unreachable */
	const char *name; /* NULL when unknown */
	int threshold;	  /* low_stock_threshold */
	bool has_stock;
	int64_t stock; /* products.stock */
};

struct catalog;

/* p is valid only during the call. */
typedef void (*catalog_fn)(const struct product_info *p, void *arg);

/* Keeps at most max_entries products (the least recently used go first;
 * one being looked up stays until its answer). */
struct catalog *catalog_new(uv_loop_t *loop, struct store *store, size_t max_entries);
/* Frees the catalog; pending lookups are answered first (as unknown). */
void catalog_close(struct catalog *c);

/* Products cached now. */
size_t catalog_size(const struct catalog *c);

/* Looks product id up; fn may run before this returns (fresh cache hit). */
void catalog_get(struct catalog *c, int64_t id, catalog_fn fn, void *arg);
/* Records a new stock level: in the cache and, asynchronously, in MySQL. */
void catalog_set_stock(struct catalog *c, int64_t id, int64_t stock);

#endif
