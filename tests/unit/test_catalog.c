/* The catalog cache's bound, with MySQL away: every lookup is answered at
 * once (unknown), which is also when the cache may evict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <uv.h>

#include "stockalert/catalog.h"
#include "stockalert/store.h"

#define CACHE_MAX 16

struct fixture {
	uv_loop_t loop;
	struct store *store;
	struct catalog *catalog;
};

static int setup(void **state)
{
	static struct fixture f;
	struct store_options o = {0};

	assert_int_equal(uv_loop_init(&f.loop), 0);
	f.store = store_new(&f.loop, &o, NULL, NULL); /* never started: not ready */
	f.catalog = catalog_new(&f.loop, f.store, CACHE_MAX);
	*state = &f;
	return 0;
}

static void on_closed(void *arg)
{
	*(int *)arg = 1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int closed = 0;

	catalog_close(f->catalog);
	store_close(f->store, on_closed, &closed);
	while (!closed)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	return 0;
}

struct answer {
	int calls;
	int64_t id;
	bool known;
};

static void on_info(const struct product_info *p, void *arg)
{
	struct answer *a = arg;
	a->calls++;
	a->id = p->id;
	a->known = p->known;
}

static void test_bounded(void **state)
{
	struct fixture *f = *state;

	for (int64_t id = 1; id <= 10 * CACHE_MAX; id++) {
		struct answer a = {0};
		catalog_get(f->catalog, id, on_info, &a);
		assert_int_equal(a.calls, 1);
		assert_int_equal(a.id, id);
		assert_false(a.known);
		assert_true(catalog_size(f->catalog) <= CACHE_MAX);
	}
	assert_int_equal(catalog_size(f->catalog), CACHE_MAX);
}

/* A waiter that looks other products up, evicting, then reads its own
 * answer again: the entry it was handed must still be there (ASan). */
struct nested {
	struct catalog *c;
	int64_t id;
	int64_t seen_after;
};

static void on_info_nested(const struct product_info *p, void *arg)
{
	struct nested *n = arg;
	struct answer other = {0};
	for (int64_t id = 1000; id < 1000 + 4 * CACHE_MAX; id++)
		catalog_get(n->c, id, on_info, &other);
	n->seen_after = p->id;
}

static void test_nested_lookups_do_not_evict_the_answered(void **state)
{
	struct fixture *f = *state;
	struct nested n = {f->catalog, 77, 0};

	catalog_get(f->catalog, n.id, on_info_nested, &n);
	assert_int_equal(n.seen_after, n.id);
	assert_true(catalog_size(f->catalog) <= CACHE_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nested_lookups_do_not_evict_the_answered, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
