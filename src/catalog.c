#include "stockalert/catalog.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/dict.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/metrics.h"

#define MOD "catalog"

struct waiter {
	catalog_fn fn;
	void *arg;
	struct waiter *next;
};

struct entry {
	struct product_info info;
	char *name;
	uint64_t loaded_ms; /* 0: never loaded */
	bool loading;
	unsigned answering; /* depth of answer() calls: not to be evicted */
	/* Answered in arrival order: the events of a product must reach
	 * Redis in the order they were published. */
	struct waiter *waiters, *waiters_tail;
	struct catalog *c;
	struct entry *newer, *older; /* the recency list */
};

struct catalog {
	uv_loop_t *loop;
	struct store *store;
	struct dict *entries; /* decimal id -> struct entry */
	size_t max_entries;
	/* Most recently used first: past max_entries, the least recently
	 * used idle entry goes (events name any id, known or not). */
	struct entry *newest, *oldest;
	int loading; /* lookups in flight */
	bool closing;
};

struct catalog *catalog_new(uv_loop_t *loop, struct store *store, size_t max_entries)
{
	struct catalog *c = mem_calloc(1, sizeof *c);
	c->loop = loop;
	c->store = store;
	c->entries = dict_new();
	c->max_entries = max_entries ? max_entries : 1;
	return c;
}

static void unlink_entry(struct catalog *c, struct entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void make_newest(struct catalog *c, struct entry *e)
{
	if (c->newest == e)
		return;
	if (e->newer || e->older || c->oldest == e)
		unlink_entry(c, e);
	e->older = c->newest;
	if (c->newest)
		c->newest->newer = e;
	c->newest = e;
	if (!c->oldest)
		c->oldest = e;
}

/* An entry being loaded is held by its store callback and its waiters:
 * it stays, and the cache is over its bound until the lookup ends. */
static void evict(struct catalog *c)
{
	struct entry *e = c->oldest;
	char key[24];

	while (e && dict_size(c->entries) > c->max_entries) {
		struct entry *newer = e->newer;
		if (!e->loading && !e->answering && !e->waiters) {
			snprintf(key, sizeof key, "%" PRId64, e->info.id);
			unlink_entry(c, e);
			dict_del(c->entries, key);
			mem_free(e->name);
			mem_free(e);
			metrics_inc(METRICS_CATALOG_EVICTIONS);
		}
		e = newer;
	}
	metrics_gauge_set(METRICS_CATALOG_ENTRIES, (int64_t)dict_size(c->entries));
}

static int free_entry(const char *key, void *value, void *arg)
{
	(void)key;
	(void)arg;
	struct entry *e = value;
	mem_free(e->name);
	mem_free(e);
	return 0;
}

static void maybe_free(struct catalog *c)
{
	if (!c->closing || c->loading)
		return;
	dict_each(c->entries, free_entry, NULL);
	dict_free(c->entries);
	mem_free(c);
	metrics_gauge_set(METRICS_CATALOG_ENTRIES, 0);
}

size_t catalog_size(const struct catalog *c)
{
	return dict_size(c->entries);
}

void catalog_close(struct catalog *c)
{
	c->closing = true;
	maybe_free(c);
}

static void answer(struct entry *e)
{
	struct waiter *w = e->waiters;
	e->waiters = e->waiters_tail = NULL;
	/* A waiter may look another product up, and that may evict. */
	e->answering++;
	while (w) {
		struct waiter *next = w->next;
		w->fn(&e->info, w->arg);
		mem_free(w);
		w = next;
	}
	e->answering--;
}

static void on_loaded(struct store *st, const struct store_result *res, const char *err, void *arg)
{
	(void)st;
	struct entry *e = arg;
	struct catalog *c = e->c;

	e->loading = false;
	c->loading--;
	if (err) {
		/* Keep what we had: a stale name beats none while MySQL is
		 * away. Try again at the next lookup. */
		log_warn(MOD, "product %" PRId64 ": %s%s", e->info.id, err,
			 e->loaded_ms ? " (using the cached entry)" : "");
	} else if (store_result_rows(res) == 0) {
		mem_free(e->name);
		e->name = NULL;
		e->info.known = false;
		e->info.name = NULL;
		e->info.threshold = CATALOG_DEFAULT_THRESHOLD;
		e->info.has_stock = false;
		e->loaded_ms = uv_now(c->loop);
	} else {
		const char *name = store_result_value(res, 0, 0);
		const char *thr = store_result_value(res, 0, 1);
		const char *stock = store_result_value(res, 0, 2);
		mem_free(e->name);
		e->name = name ? mem_strdup(name) : NULL;
		e->info.known = true;
		e->info.name = e->name;
		e->info.threshold = thr ? (int)strtol(thr, NULL, 10) : CATALOG_DEFAULT_THRESHOLD;
		e->info.has_stock = stock != NULL;
		e->info.stock = stock ? strtoll(stock, NULL, 10) : 0;
		e->loaded_ms = uv_now(c->loop);
	}
	answer(e);
	if (!c->closing)
		evict(c);
	maybe_free(c);
}

void catalog_get(struct catalog *c, int64_t id, catalog_fn fn, void *arg)
{
	char key[24], sql[192];
	snprintf(key, sizeof key, "%" PRId64, id);
	struct entry *e = dict_get(c->entries, key);
	if (!e) {
		e = mem_calloc(1, sizeof *e);
		e->c = c;
		e->info.id = id;
		e->info.threshold = CATALOG_DEFAULT_THRESHOLD;
		dict_set(c->entries, key, e);
	}
	make_newest(c, e);
	if (e->loaded_ms && uv_now(c->loop) - e->loaded_ms < CATALOG_TTL_MS) {
		e->answering++; /* as in answer() */
		fn(&e->info, arg);
		e->answering--;
		return;
	}
	struct waiter *w = mem_alloc(sizeof *w);
	w->fn = fn;
	w->arg = arg;
	w->next = NULL;
	if (e->waiters_tail)
		e->waiters_tail->next = w;
	else
		e->waiters = w;
	e->waiters_tail = w;
	if (e->loading)
		return;
	snprintf(sql, sizeof sql,
		 "SELECT name, low_stock_threshold, stock FROM products WHERE id = %" PRId64, id);
	/* Urgent: an alert waits on it, and must not queue behind a burst of
	 * subscription writes on the one MySQL connection. */
	if (c->closing || store_query_urgent(c->store, sql, on_loaded, e) != 0) {
		/* MySQL is not there: answer with what we have. */
		answer(e);
		evict(c);
		return;
	}
	e->loading = true;
	c->loading++;
}

static void on_stock_written(struct store *st, const struct store_result *res, const char *err,
			     void *arg)
{
	(void)st;
	(void)res;
	(void)arg;
	if (err)
		log_debug(MOD, "products.stock not updated: %s", err);
}

void catalog_set_stock(struct catalog *c, int64_t id, int64_t stock)
{
	char key[24], sql[192];
	snprintf(key, sizeof key, "%" PRId64, id);
	struct entry *e = dict_get(c->entries, key);
	if (e) {
		e->info.has_stock = true;
		e->info.stock = stock;
	}
	/* Best effort and asynchronous: delivery never waits for it, and the
	 * shared stock state in Redis is what classification uses. */
	snprintf(sql, sizeof sql, "UPDATE products SET stock = %" PRId64 " WHERE id = %" PRId64,
		 stock, id);
	store_query(c->store, sql, on_stock_written, NULL);
}
