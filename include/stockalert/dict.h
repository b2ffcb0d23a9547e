#ifndef STOCKALERT_DICT_H
#define STOCKALERT_DICT_H
/*
 * A string-keyed hash table (chained, power-of-two buckets, incremental
 * growth is not needed at our sizes: it rehashes at load factor 1). Keys are
 * copied; values are opaque pointers owned by the caller.
 */
#include <stdbool.h>
#include <stddef.h>

struct dict;

struct dict *dict_new(void);
/* Frees the table and its key copies, not the values. */
void dict_free(struct dict *d);
void *dict_get(const struct dict *d, const char *key);
/* Inserts or replaces; returns the previous value or NULL. */
void *dict_set(struct dict *d, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *dict_del(struct dict *d, const char *key);
size_t dict_size(const struct dict *d);

/* Calls fn for every entry; fn must not modify d. Stops early when fn
 * returns non-zero, and returns that value. */
int dict_each(const struct dict *d, int (*fn)(const char *key, void *value, void *arg), void *arg);

#endif
