#include "stockalert/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(SA_WITH_JEMALLOC)
#include <jemalloc/jemalloc.h>
#elif defined(__GLIBC__)
#include <malloc.h>
#endif

static void oom(size_t n)
{
	/* Not through log_*: it may allocate, and we are out of memory. */
	fprintf(stderr, "stockalertd: out of memory allocating %zu bytes\n", n);
	abort();
}

void *mem_alloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *mem_calloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);
	if (!p)
		oom(count * size);
	return p;
}

void *mem_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *mem_strdup(const char *s)
{
	return mem_strndup(s, strlen(s));
}

char *mem_strndup(const char *s, size_t n)
{
	char *p = mem_alloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void mem_free(void *p)
{
	free(p);
}

void mem_release(void)
{
#if defined(SA_WITH_JEMALLOC)
	char name[64];
	snprintf(name, sizeof name, "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
	mallctl(name, NULL, NULL, NULL, 0);
#elif defined(__GLIBC__)
	malloc_trim(0);
#endif
}

const char *mem_allocator(void)
{
#if defined(SA_WITH_JEMALLOC)
	return "jemalloc";
#elif defined(__GLIBC__)
	return "glibc";
#else
	return "libc";
#endif
}
