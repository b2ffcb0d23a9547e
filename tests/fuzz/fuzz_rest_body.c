/*
 * libFuzzer target for what a client controls on PUT/DELETE
 * /api/me/subscriptions/{id}: the body (subs_parse_body) and the id in the
 * path (subs_parse_id); and the ?since= of GET /api/me/alerts and /ws
 * (alert_id_parse). All must refuse any input cleanly, and what they
 * accept must be within the contract.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stockalert/alert.h"
#include "stockalert/mem.h"
#include "stockalert/subs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_body(const char *body, size_t size)
{
	unsigned kinds = 0;
	int threshold = 0;
	char err[256];

	memset(err, 'x', sizeof err);
	if (subs_parse_body(body, size, &kinds, &threshold, err, sizeof err) == 0) {
		if (kinds == 0 || (kinds & ~(unsigned)SUBS_ALL_KINDS) != 0)
			__builtin_trap();
		if (threshold < -1 || threshold > 1000000000)
			__builtin_trap();
		return;
	}
	/* A refusal explains itself: a NUL-terminated, non-empty message.
	 * (That it names the field is test_subs.c's job: a fuzzer finds keys
	 * long enough to fill any buffer.) */
	if (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0')
		__builtin_trap();
}

static void check_id(const char *s, size_t size)
{
	int64_t id = 0;

	if (subs_parse_id(s, size, &id) != 0)
		return;
	if (id <= 0 || size == 0 || s[0] == '0')
		__builtin_trap();
	for (size_t i = 0; i < size; i++)
		if (s[i] < '0' || s[i] > '9')
			__builtin_trap();
}

static void check_since(const char *s, size_t size)
{
	/* Query arguments reach the parser NUL-terminated (up to the first
	 * NUL of the input, then). */
	char *z = mem_alloc(size + 1);
	uint64_t order;

	memcpy(z, s, size);
	z[size] = '\0';
	if (alert_id_parse(z, &order) == 0) {
		/* Accepted: "<digits>-<digits>" and nothing else. */
		const char *dash = strchr(z, '-');
		if (!dash || dash == z || dash[1] == '\0')
			__builtin_trap();
		for (const char *p = z; *p; p++)
			if (p != dash && (*p < '0' || *p > '9'))
				__builtin_trap();
	}
	mem_free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, not NUL-terminated, so ASan catches a read
	 * past size. */
	char *copy = mem_alloc(size ? size : 1);

	memcpy(copy, data, size);
	check_body(copy, size);
	check_id(copy, size);
	check_since(copy, size);
	mem_free(copy);
	return 0;
}
