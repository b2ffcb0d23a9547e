/* Unit tests for the two-way local subscription roster. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stockalert/mem.h"
#include "stockalert/roster.h"
#include "stockalert/subs.h"

static struct roster_sub mk(int64_t product, unsigned kinds, int threshold)
{
	struct roster_sub s = {.product_id = product,
			       .kinds = kinds,
			       .threshold = threshold,
			       .created_ms = 1000 + (product & 0xffff)};
	return s;
}

/* What roster_each_subscriber reported, as "user:kinds:threshold" joined by spaces. */
struct seen {
	char text[4096];
	size_t calls;
};

static void collect_subscriber(const char *user, const struct roster_sub *sub,
			       struct roster_slot *slot, void *arg)
{
	struct seen *s = arg;

	(void)slot;
	size_t len = strlen(s->text);

	snprintf(s->text + len, sizeof s->text - len, "%s%s:%u:%d", len ? " " : "", user,
		 sub->kinds, sub->threshold);
	s->calls++;
}

static const char *subscribers(struct roster *r, int64_t product, struct seen *s)
{
	memset(s, 0, sizeof *s);
	roster_each_subscriber(r, product, collect_subscriber, s);
	assert_int_equal(s->calls, roster_subscribers(r, product));
	return s->text;
}

static void collect_sub(const struct roster_sub *sub, void *arg)
{
	struct seen *s = arg;
	size_t len = strlen(s->text);

	snprintf(s->text + len, sizeof s->text - len, "%s%lld", len ? " " : "",
		 (long long)sub->product_id);
	s->calls++;
}

static const char *subs_of(const struct roster *r, const char *user, struct seen *s)
{
	memset(s, 0, sizeof *s);
	roster_each_sub(r, user, collect_sub, s);
	return s->text;
}

static void test_empty(void **state)
{
	struct roster *r = roster_new();
	struct seen s;
	struct roster_sub x = mk(1, SUBS_ALL_KINDS, -1);

	(void)state;
	assert_int_equal(roster_users(r), 0);
	assert_false(roster_has_user(r, "alice"));
	assert_null(roster_get(r, "alice", 1));
	assert_int_equal(roster_subscribers(r, 1), 0);
	assert_string_equal(subscribers(r, 1, &s), "");
	assert_string_equal(subs_of(r, "alice", &s), "");
	/* Absent users are not created by updates. */
	roster_update(r, "alice", &x, true);
	assert_false(roster_has_user(r, "alice"));
	assert_int_equal(roster_subscribers(r, 1), 0);
	roster_drop_user(r, "alice");
	roster_free(r);
	roster_free(NULL);
}

static void test_set_get_drop(void **state)
{
	struct roster *r = roster_new();
	struct seen s;
	const struct roster_sub *g;
	struct roster_sub a[] = {mk(30, SUBS_SOLD_OUT, 4), mk(10, SUBS_ALL_KINDS, -1),
				 mk(20, SUBS_LOW_STOCK, 0)};
	struct roster_sub b[] = {mk(20, SUBS_BACK_IN_STOCK, 7)};

	(void)state;
	roster_set_user(r, "alice", a, 3);
	roster_set_user(r, "bob", b, 1);
	roster_set_user(r, "carol", NULL, 0);
	assert_int_equal(roster_users(r), 3);
	assert_true(roster_has_user(r, "carol"));
	assert_string_equal(subs_of(r, "carol", &s), "");

	g = roster_get(r, "alice", 30);
	assert_non_null(g);
	assert_int_equal(g->product_id, 30);
	assert_int_equal(g->kinds, SUBS_SOLD_OUT);
	assert_int_equal(g->threshold, 4);
	assert_int_equal(g->created_ms, 1030);
	assert_null(roster_get(r, "alice", 40));
	assert_null(roster_get(r, "bob", 10));
	assert_null(roster_get(r, "carol", 10));

	assert_string_equal(subs_of(r, "alice", &s), "10 20 30");
	assert_string_equal(subscribers(r, 10, &s), "alice:7:-1");
	assert_string_equal(subscribers(r, 20, &s), "alice:2:0 bob:1:7");
	assert_string_equal(subscribers(r, 30, &s), "alice:4:4");
	assert_int_equal(roster_subscribers(r, 99), 0);

	/* Dropping alice removes exactly her entries. */
	roster_drop_user(r, "alice");
	assert_false(roster_has_user(r, "alice"));
	assert_int_equal(roster_users(r), 2);
	assert_null(roster_get(r, "alice", 30));
	assert_int_equal(roster_subscribers(r, 10), 0);
	assert_int_equal(roster_subscribers(r, 30), 0);
	assert_string_equal(subscribers(r, 20, &s), "bob:1:7");
	assert_non_null(roster_get(r, "bob", 20));
	roster_drop_user(r, "alice"); /* twice is harmless */
	assert_int_equal(roster_users(r), 2);
	roster_free(r);
}

static void test_update(void **state)
{
	struct roster *r = roster_new();
	struct seen s;
	struct roster_sub x;

	(void)state;
	roster_set_user(r, "u1", NULL, 0);
	roster_set_user(r, "u2", NULL, 0);

	/* Inserted out of order: the user's list stays sorted. */
	for (int64_t p = 5; p >= 1; p--) {
		x = mk(p * 10, SUBS_ALL_KINDS, -1);
		roster_update(r, "u1", &x, true);
	}
	x = mk(30, SUBS_SOLD_OUT, -1);
	roster_update(r, "u2", &x, true);
	assert_string_equal(subs_of(r, "u1", &s), "10 20 30 40 50");
	assert_string_equal(subscribers(r, 30, &s), "u1:7:-1 u2:4:-1");

	/* Updating changes the sub in place, seen from both indexes, and keeps its order. */
	x = mk(30, SUBS_LOW_STOCK, 3);
	roster_update(r, "u1", &x, true);
	assert_int_equal(roster_get(r, "u1", 30)->kinds, SUBS_LOW_STOCK);
	assert_int_equal(roster_get(r, "u1", 30)->threshold, 3);
	assert_string_equal(subscribers(r, 30, &s), "u1:2:3 u2:4:-1");
	assert_string_equal(subs_of(r, "u1", &s), "10 20 30 40 50");

	/* Removing one, including the ends of the array. */
	x = mk(30, 0, 0);
	roster_update(r, "u1", &x, false);
	assert_null(roster_get(r, "u1", 30));
	assert_string_equal(subscribers(r, 30, &s), "u2:4:-1");
	x = mk(10, 0, 0);
	roster_update(r, "u1", &x, false);
	x = mk(50, 0, 0);
	roster_update(r, "u1", &x, false);
	assert_string_equal(subs_of(r, "u1", &s), "20 40");
	assert_int_equal(roster_subscribers(r, 10), 0);
	assert_int_equal(roster_subscribers(r, 50), 0);

	/* Removing what is not there changes nothing. */
	x = mk(99, 0, 0);
	roster_update(r, "u1", &x, false);
	assert_string_equal(subs_of(r, "u1", &s), "20 40");

	/* Resubscribing puts u1 after u2 in the product's walk. */
	x = mk(30, SUBS_ALL_KINDS, -1);
	roster_update(r, "u1", &x, true);
	assert_string_equal(subscribers(r, 30, &s), "u2:4:-1 u1:7:-1");

	/* Removing from the middle and the tail of a product's walk. */
	roster_set_user(r, "u3", &x, 1);
	assert_string_equal(subscribers(r, 30, &s), "u2:4:-1 u1:7:-1 u3:7:-1");
	roster_update(r, "u1", &x, false);
	assert_string_equal(subscribers(r, 30, &s), "u2:4:-1 u3:7:-1");
	roster_drop_user(r, "u3");
	assert_string_equal(subscribers(r, 30, &s), "u2:4:-1");
	x = mk(30, SUBS_ALL_KINDS, -1);
	roster_update(r, "u1", &x, true);
	assert_string_equal(subscribers(r, 30, &s), "u2:4:-1 u1:7:-1");
	roster_free(r);
}

static void test_replace_user(void **state)
{
	struct roster *r = roster_new();
	struct seen s;
	struct roster_sub first[] = {mk(1, SUBS_ALL_KINDS, -1), mk(2, SUBS_ALL_KINDS, -1),
				     mk(3, SUBS_ALL_KINDS, -1)};
	struct roster_sub other[] = {mk(2, SUBS_ALL_KINDS, -1)};
	/* Duplicates: the last one listed wins. */
	struct roster_sub second[] = {mk(4, SUBS_SOLD_OUT, 1), mk(2, SUBS_SOLD_OUT, 9),
				      mk(4, SUBS_LOW_STOCK, 2)};

	(void)state;
	roster_set_user(r, "a", first, 3);
	roster_set_user(r, "b", other, 1);
	assert_string_equal(subscribers(r, 2, &s), "a:7:-1 b:7:-1");

	roster_set_user(r, "a", second, 3);
	assert_int_equal(roster_users(r), 2);
	assert_string_equal(subs_of(r, "a", &s), "2 4");
	assert_int_equal(roster_subscribers(r, 1), 0);
	assert_int_equal(roster_subscribers(r, 3), 0);
	/* Kept subscription keeps its place (a before b) with the new settings. */
	assert_string_equal(subscribers(r, 2, &s), "a:4:9 b:7:-1");
	assert_string_equal(subscribers(r, 4, &s), "a:2:2");

	/* Replacing with nothing keeps the user, with no subscriptions. */
	roster_set_user(r, "a", NULL, 0);
	assert_true(roster_has_user(r, "a"));
	assert_string_equal(subs_of(r, "a", &s), "");
	assert_string_equal(subscribers(r, 2, &s), "b:7:-1");
	assert_int_equal(roster_subscribers(r, 4), 0);
	roster_free(r);
}

/* Each user has one rate slot: zeroed when the user appears, kept while its
 * subscriptions are replaced or updated, gone (and zeroed again) with it. */
static void test_slot(void **state)
{
	struct roster *r = roster_new();
	struct roster_sub subs[] = {mk(1, SUBS_ALL_KINDS, -1), mk(2, SUBS_ALL_KINDS, -1)};
	struct roster_sub sub3 = mk(3, SUBS_ALL_KINDS, -1);
	struct roster_slot *a, *b;

	(void)state;
	assert_null(roster_slot(r, "a"));
	roster_set_user(r, "a", NULL, 0);
	roster_set_user(r, "b", subs, 1);
	a = roster_slot(r, "a");
	b = roster_slot(r, "b");
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	assert_null(a->target);
	assert_int_equal(a->rate.window, 0);
	assert_int_equal(a->rate.count, 0);
	assert_false(a->rate.shared);

	*a = (struct roster_slot){.target = &sub3,
				  .rate = {.window = 42, .count = 7, .shared = true}};
	roster_set_user(r, "a", subs, 2);
	roster_update(r, "a", &sub3, true);
	roster_update(r, "a", &subs[0], false);
	assert_ptr_equal(roster_slot(r, "a"), a);
	assert_ptr_equal(a->target, &sub3);
	assert_int_equal(a->rate.window, 42);
	assert_int_equal(a->rate.count, 7);
	assert_true(a->rate.shared);
	assert_int_equal(b->rate.count, 0);

	roster_drop_user(r, "a");
	assert_null(roster_slot(r, "a"));
	roster_set_user(r, "a", NULL, 0);
	assert_null(roster_slot(r, "a")->target);
	assert_int_equal(roster_slot(r, "a")->rate.count, 0);
	assert_false(roster_slot(r, "a")->rate.shared);
	roster_free(r);
}

/* Product id edge values must not collide as index keys. */
static void test_extreme_ids(void **state)
{
	struct roster *r = roster_new();
	struct seen s;
	struct roster_sub subs[] = {mk(INT64_MAX, 1, 1), mk(INT64_MIN, 2, 2), mk(0, 4, 4),
				    mk(-1, 1, 1), mk(1, 2, 2)};

	(void)state;
	roster_set_user(r, "z", subs, 5);
	assert_string_equal(subs_of(r, "z", &s), "-9223372036854775808 -1 0 1 9223372036854775807");
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(roster_subscribers(r, subs[i].product_id), 1);
		assert_int_equal(roster_get(r, "z", subs[i].product_id)->kinds, subs[i].kinds);
	}
	roster_drop_user(r, "z");
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(roster_subscribers(r, subs[i].product_id), 0);
	roster_free(r);
}

#define MANY_USERS    3000
#define MANY_PRODUCTS 500
#define SUBS_PER_USER 40

struct count_arg {
	struct roster *r;
	int64_t product;
	size_t *per_user_hits;
	size_t calls;
};

static void count_subscriber(const char *user, const struct roster_sub *sub,
			     struct roster_slot *slot, void *arg)
{
	struct count_arg *c = arg;
	unsigned long u = strtoul(user + 1, NULL, 10);

	/* The walk hands out the user's own slot. */
	assert_ptr_equal(slot, roster_slot(c->r, user));
	assert_true(u < MANY_USERS);
	/* The product index hands out the very entry the user's side holds. */
	assert_int_equal(sub->product_id, c->product);
	assert_ptr_equal(roster_get(c->r, user, c->product), sub);
	c->per_user_hits[u]++;
	c->calls++;
}

/* Deterministic per-user product choice (distinct within a user). */
static int64_t product_of(unsigned u, unsigned k)
{
	return 1 + (int64_t)((u * 7u + k * 13u) % MANY_PRODUCTS);
}

static void test_many(void **state)
{
	struct roster *r = roster_new();
	struct roster_sub subs[SUBS_PER_USER];
	struct seen seen;
	size_t *expect = mem_calloc(MANY_PRODUCTS + 1, sizeof *expect);
	struct count_arg c = {.r = r, .per_user_hits = mem_calloc(MANY_USERS, sizeof(size_t))};
	size_t total = 0;
	char name[32];

	(void)state;
	for (unsigned u = 0; u < MANY_USERS; u++) {
		for (unsigned k = 0; k < SUBS_PER_USER; k++) {
			subs[k] = mk(product_of(u, k), SUBS_ALL_KINDS, (int)k);
			expect[product_of(u, k)]++;
		}
		snprintf(name, sizeof name, "u%u", u);
		roster_set_user(r, name, subs, SUBS_PER_USER);
	}
	assert_int_equal(roster_users(r), MANY_USERS);
	for (int64_t p = 1; p <= MANY_PRODUCTS; p++) {
		assert_int_equal(roster_subscribers(r, p), expect[p]);
		c.product = p;
		roster_each_subscriber(r, p, count_subscriber, &c);
		total += expect[p];
	}
	assert_int_equal(c.calls, total);
	assert_int_equal(total, (size_t)MANY_USERS * SUBS_PER_USER);
	/* Each user was reached once per subscription, through the product index. */
	for (unsigned u = 0; u < MANY_USERS; u++)
		assert_int_equal(c.per_user_hits[u], SUBS_PER_USER);
	/* Both indexes agree on a sample of (user, product) pairs. */
	for (unsigned u = 0; u < MANY_USERS; u += 97) {
		snprintf(name, sizeof name, "u%u", u);
		for (unsigned k = 0; k < SUBS_PER_USER; k++) {
			const struct roster_sub *g = roster_get(r, name, product_of(u, k));

			assert_non_null(g);
			assert_int_equal(g->threshold, (int)k);
		}
	}

	/* Drop half the users' subscriptions one by one, the rest wholesale. */
	for (unsigned u = 0; u < MANY_USERS; u++) {
		snprintf(name, sizeof name, "u%u", u);
		if (u % 2) {
			for (unsigned k = 0; k < SUBS_PER_USER; k++) {
				struct roster_sub x = mk(product_of(u, k), 0, 0);

				roster_update(r, name, &x, false);
			}
			assert_true(roster_has_user(r, name));
			assert_string_equal(subs_of(r, name, &seen), "");
		}
		roster_drop_user(r, name);
	}
	assert_int_equal(roster_users(r), 0);
	for (int64_t p = 1; p <= MANY_PRODUCTS; p++) {
		struct count_arg none = {.r = r, .product = p, .per_user_hits = c.per_user_hits};

		assert_int_equal(roster_subscribers(r, p), 0);
		roster_each_subscriber(r, p, count_subscriber, &none);
		assert_int_equal(none.calls, 0);
	}
	mem_free(c.per_user_hits);
	mem_free(expect);
	roster_free(r);
}

/* Freeing a populated roster must release everything (LSan checks). */
static void test_free_populated(void **state)
{
	struct roster *r = roster_new();
	struct roster_sub subs[] = {mk(1, 1, 1), mk(2, 2, 2)};

	(void)state;
	roster_set_user(r, "a", subs, 2);
	roster_set_user(r, "b", subs, 2);
	roster_set_user(r, "c", subs + 1, 1);
	roster_free(r);
}

/* Who hears of an alert: the one rule live delivery and the history share.
 * Product threshold 5 throughout; a subscription's own threshold replaces
 * it for that subscription only, never for the operations view. */
static void test_hears(void **state)
{
	const unsigned all = SUBS_ALL_KINDS, bis = SUBS_BACK_IN_STOCK, low = SUBS_LOW_STOCK,
		       out = SUBS_SOLD_OUT;
	struct roster_sub own2 = {.product_id = 1, .kinds = all, .threshold = 2};
	struct roster_sub own9 = {.product_id = 1, .kinds = all, .threshold = 9};
	struct roster_sub dflt = {.product_id = 1, .kinds = all, .threshold = -1};
	struct roster_sub only_bis = {.product_id = 1, .kinds = bis, .threshold = -1};
	const struct {
		const struct roster_sub *sub;
		bool ops;
		unsigned kind;
		int64_t prev, stock;
		bool hears;
	} cases[] = {
	    {&dflt, false, bis, 0, 4, true},	  /* back in stock */
	    {&dflt, false, out, 4, 0, true},	  /* sold out */
	    {&dflt, false, low, 10, 3, true},	  /* crosses the product's 5 */
	    {&dflt, false, low, 4, 3, false},	  /* was below it already */
	    {&own2, false, low, 10, 3, false},	  /* not below its own 2 */
	    {&own2, true, low, 10, 3, true},	  /* ...but admins go by the 5 */
	    {&own2, false, low, 10, 1, true},	  /* below its own 2 */
	    {&own9, false, low, 10, 8, true},	  /* its own 9, not the 5 */
	    {&own9, true, low, 10, 8, true},	  /* the subscription hears it */
	    {NULL, true, low, 10, 8, false},	  /* admins alone do not */
	    {&dflt, false, low, 4, 0, false},	  /* that change is a sold_out */
	    {&only_bis, false, out, 4, 0, false}, /* a kind it did not ask for */
	    {&only_bis, true, out, 4, 0, true},	  /* admins hear every sold_out */
	    {NULL, false, out, 4, 0, false},	  /* no subscription, no admin */
	    {NULL, true, bis, 0, 4, false},	  /* admins: no back_in_stock */
	    {&only_bis, false, bis, 0, 4, true},  /* the kind it asked for */
	    {&only_bis, false, bis, 1, 4, false}, /* not back in stock */
	};

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool got = roster_hears(cases[i].sub, cases[i].ops, cases[i].kind, cases[i].prev,
					cases[i].stock, 5);
		if (got != cases[i].hears)
			fail_msg("case %zu: hears %d, expected %d", i, got, cases[i].hears);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty),	   cmocka_unit_test(test_set_get_drop),
	    cmocka_unit_test(test_update),	   cmocka_unit_test(test_replace_user),
	    cmocka_unit_test(test_extreme_ids),	   cmocka_unit_test(test_many),
	    cmocka_unit_test(test_free_populated), cmocka_unit_test(test_slot),
	    cmocka_unit_test(test_hears),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
