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

#endif
