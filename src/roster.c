/*
 * The local subscription roster, indexed both ways.
 *
 * Each subscription is one node that lives in two places at once: in its
 * user's array (sorted by product id, binary-searched; a user has at most
 * subscriptions.max_per_user of them) and in its product's doubly-linked
 * list. So dropping a user unlinks exactly its own nodes in O(its
 * subscriptions), and an event walks exactly the product's subscribers,
 * however many users the product once had (a hash of users per product
 * would keep its peak bucket count and make every walk pay for it).
 */
#include "stockalert/roster.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/dict.h"
#include "stockalert/events.h"
#include "stockalert/kind.h"
#include "stockalert/mem.h"

/* "-9223372036854775808" plus NUL. */
#define PRODUCT_KEY_MAX 21

struct rproduct;
struct ruser;

struct rsub {
	struct roster_sub sub;
	struct ruser *user;
	struct rproduct *product;
	struct rsub *prev; /* in product->head list */
	struct rsub *next;
};

struct rproduct {
	struct rsub *head;
	struct rsub *tail; /* appended at the tail: the walk sees subscription order */
	size_t count;
	char key[PRODUCT_KEY_MAX];
};

struct ruser {
	struct rsub **subs; /* sorted by sub.product_id, no duplicates */
	size_t n;
	size_t cap;
	struct roster_slot slot;
	char name[];
};

struct roster {
	struct dict *users;    /* user id -> struct ruser */
	struct dict *products; /* decimal product id -> struct rproduct */
};

static void product_key(int64_t id, char out[PRODUCT_KEY_MAX])
{
	snprintf(out, PRODUCT_KEY_MAX, "%" PRId64, id);
}

struct roster *roster_new(void)
{
	struct roster *r = mem_calloc(1, sizeof *r);

	r->users = dict_new();
	r->products = dict_new();
	return r;
}

/* Links a new node for (u, sub) into its product's list. */
static struct rsub *node_new(struct roster *r, struct ruser *u, const struct roster_sub *sub)
{
	char key[PRODUCT_KEY_MAX];
	struct rproduct *p;
	struct rsub *s = mem_calloc(1, sizeof *s);

	product_key(sub->product_id, key);
	p = dict_get(r->products, key);
	if (!p) {
		p = mem_calloc(1, sizeof *p);
		memcpy(p->key, key, sizeof key);
		dict_set(r->products, key, p);
	}
	s->sub = *sub;
	s->user = u;
	s->product = p;
	s->prev = p->tail;
	if (p->tail)
		p->tail->next = s;
	else
		p->head = s;
	p->tail = s;
	p->count++;
	return s;
}

/* Unlinks s from its product (dropping the product when it empties) and frees it. */
static void node_free(struct roster *r, struct rsub *s)
{
	struct rproduct *p = s->product;

	if (s->prev)
		s->prev->next = s->next;
	else
		p->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		p->tail = s->prev;
	if (--p->count == 0) {
		dict_del(r->products, p->key);
		mem_free(p);
	}
	mem_free(s);
}

/* Index of product_id in u->subs, or of where it would be inserted. */
static size_t user_find(const struct ruser *u, int64_t product_id, bool *found)
{
	size_t lo = 0, hi = u->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int64_t id = u->subs[mid]->sub.product_id;

		if (id == product_id) {
			*found = true;
			return mid;
		}
		if (id < product_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static void user_reserve(struct ruser *u, size_t want)
{
	size_t cap = u->cap ? u->cap : 4;

	if (want <= u->cap)
		return;
	while (cap < want)
		cap *= 2;
	u->subs = mem_realloc(u->subs, cap * sizeof *u->subs);
	u->cap = cap;
}

static void user_free(struct roster *r, struct ruser *u)
{
	for (size_t i = 0; i < u->n; i++)
		node_free(r, u->subs[i]);
	mem_free(u->subs);
	mem_free(u);
}

static int free_user_cb(const char *key, void *value, void *arg)
{
	struct ruser *u = value;

	(void)key;
	(void)arg;
	/* Only the product dict changes under us, not the users dict we walk. */
	for (size_t i = 0; i < u->n; i++) {
		struct rsub *s = u->subs[i];

		s->product->count--;
		if (s->product->count == 0)
			mem_free(s->product);
		mem_free(s);
	}
	mem_free(u->subs);
	mem_free(u);
	return 0;
}

void roster_free(struct roster *r)
{
	if (!r)
		return;
	dict_each(r->users, free_user_cb, NULL);
	dict_free(r->users);
	dict_free(r->products);
	mem_free(r);
}

struct sort_item {
	struct roster_sub sub;
	size_t idx;
};

static int sort_item_cmp(const void *a, const void *b)
{
	const struct sort_item *x = a, *y = b;

	if (x->sub.product_id != y->sub.product_id)
		return x->sub.product_id < y->sub.product_id ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * Replacing merges the old and new sorted lists instead of dropping and
 * re-adding: a subscription kept across a reload keeps its place in its
 * product's list, so the walk order stays the order users subscribed in.
 */
void roster_set_user(struct roster *r, const char *user, const struct roster_sub *subs, size_t n)
{
	struct ruser *u = dict_get(r->users, user);
	struct sort_item *items = NULL;
	struct rsub **old;
	size_t nold, i = 0, j = 0, m = 0;

	if (!u) {
		size_t len = strlen(user);

		u = mem_calloc(1, sizeof *u + len + 1);
		memcpy(u->name, user, len + 1);
		dict_set(r->users, user, u);
	}
	if (n) {
		items = mem_alloc(n * sizeof *items);
		for (size_t k = 0; k < n; k++) {
			items[k].sub = subs[k];
			items[k].idx = k;
		}
		/* By product, then by position: the last duplicate wins below. */
		qsort(items, n, sizeof *items, sort_item_cmp);
		for (size_t k = 0; k < n; k++) {
			if (m && items[m - 1].sub.product_id == items[k].sub.product_id)
				m--;
			items[m++] = items[k];
		}
	}

	old = u->subs;
	nold = u->n;
	u->subs = NULL;
	u->n = 0;
	u->cap = 0;
	user_reserve(u, m);
	while (i < nold || j < m) {
		if (j == m || (i < nold && old[i]->sub.product_id < items[j].sub.product_id)) {
			node_free(r, old[i++]);
		} else if (i == nold || items[j].sub.product_id < old[i]->sub.product_id) {
			u->subs[u->n++] = node_new(r, u, &items[j++].sub);
		} else {
			old[i]->sub = items[j++].sub;
			u->subs[u->n++] = old[i++];
		}
	}
	mem_free(old);
	mem_free(items);
}

void roster_drop_user(struct roster *r, const char *user)
{
	struct ruser *u = dict_del(r->users, user);

	if (u)
		user_free(r, u);
}

bool roster_has_user(const struct roster *r, const char *user)
{
	return dict_get(r->users, user) != NULL;
}

size_t roster_users(const struct roster *r)
{
	return dict_size(r->users);
}

void roster_update(struct roster *r, const char *user, const struct roster_sub *sub, bool active)
{
	struct ruser *u = dict_get(r->users, user);
	bool found;
	size_t at;

	/* Changes for users not connected here are none of our business. */
	if (!u)
		return;
	at = user_find(u, sub->product_id, &found);
	if (found && active) {
		u->subs[at]->sub = *sub;
	} else if (found) {
		node_free(r, u->subs[at]);
		memmove(&u->subs[at], &u->subs[at + 1], (u->n - at - 1) * sizeof *u->subs);
		u->n--;
	} else if (active) {
		user_reserve(u, u->n + 1);
		memmove(&u->subs[at + 1], &u->subs[at], (u->n - at) * sizeof *u->subs);
		u->subs[at] = node_new(r, u, sub);
		u->n++;
	}
}

const struct roster_sub *roster_get(const struct roster *r, const char *user, int64_t product_id)
{
	const struct ruser *u = dict_get(r->users, user);
	bool found;
	size_t at;

	if (!u)
		return NULL;
	at = user_find(u, product_id, &found);
	return found ? &u->subs[at]->sub : NULL;
}

static const struct rproduct *product_get(const struct roster *r, int64_t product_id)
{
	char key[PRODUCT_KEY_MAX];

	product_key(product_id, key);
	return dict_get(r->products, key);
}

size_t roster_subscribers(const struct roster *r, int64_t product_id)
{
	const struct rproduct *p = product_get(r, product_id);

	return p ? p->count : 0;
}

struct roster_slot *roster_slot(struct roster *r, const char *user)
{
	struct ruser *u = dict_get(r->users, user);

	return u ? &u->slot : NULL;
}

void roster_each_subscriber(struct roster *r, int64_t product_id,
			    void (*fn)(const char *user, const struct roster_sub *sub,
				       struct roster_slot *slot, void *arg),
			    void *arg)
{
	const struct rproduct *p = product_get(r, product_id);

	if (!p)
		return;
	for (const struct rsub *s = p->head; s; s = s->next)
		fn(s->user->name, &s->sub, &s->user->slot, arg);
}

void roster_each_sub(const struct roster *r, const char *user,
		     void (*fn)(const struct roster_sub *sub, void *arg), void *arg)
{
	const struct ruser *u = dict_get(r->users, user);

	if (!u)
		return;
	for (size_t i = 0; i < u->n; i++)
		fn(&u->subs[i]->sub, arg);
}

bool roster_hears(const struct roster_sub *sub, bool ops, unsigned kind, int64_t prev,
		  int64_t stock, int default_threshold)
{
	if (sub && (sub->kinds & kind)) {
		int64_t thr = sub->threshold >= 0 ? sub->threshold : default_threshold;
		if (events_classify(prev, stock, thr) == kind)
			return true;
	}
	return ops && (kind == SUBS_SOLD_OUT ||
		       (kind == SUBS_LOW_STOCK &&
			events_classify(prev, stock, default_threshold) == SUBS_LOW_STOCK));
}
