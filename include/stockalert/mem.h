#ifndef STOCKALERT_MEM_H
#define STOCKALERT_MEM_H
/*
 * The one allocation wrapper. Out-of-memory policy: log and abort. A
 * notification server that half-handles OOM corrupts state it cannot report;
 * systemd restarts us and clients resume from history.
 */
#include <stddef.h>

void *mem_alloc(size_t n);
void *mem_calloc(size_t count, size_t size);
void *mem_realloc(void *p, size_t n);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);
void mem_free(void *p);

/*
 * Hands memory that is free but still resident back to the kernel, now.
 * For quiet moments after a burst of connects or closes: the heap keeps the
 * pages of blocks freed between long-lived ones. With jemalloc (the daemon
 * links it unless built with sanitizers) this purges every arena's unused
 * dirty pages; with glibc's malloc it is malloc_trim(0). Takes a few
 * milliseconds on a large heap.
 */
void mem_release(void);

/* "jemalloc" or "glibc": which allocator the process runs on. */
const char *mem_allocator(void);

#endif
