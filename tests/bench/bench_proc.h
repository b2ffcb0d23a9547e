/*
 * What the benchmark reads of a server process in /proc: resident memory and
 * CPU time. CPU comes two ways: utime+stime from /proc/PID/stat (what `ps`
 * and the issue name, in 10 ms ticks) and the scheduler's nanosecond runtime
 * summed over /proc/PID/task/{tid}/schedstat, precise enough for one round.
 */
#ifndef SA_BENCH_PROC_H
#define SA_BENCH_PROC_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct bench_cpu {
	uint64_t sched_ns; /* scheduler runtime, every thread */
	uint64_t stat_us;  /* utime + stime, converted from ticks */
};

static inline long bench_proc_rss_kb(int pid)
{
	char path[64], line[256];
	long kb = -1;
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static inline struct bench_cpu bench_proc_cpu(int pid)
{
	struct bench_cpu c = {0, 0};
	char path[300], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = '\0';
		fclose(f);
		/* fields after the command name, which may hold spaces */
		char *p = strrchr(buf, ')');
		unsigned long long ut = 0, st = 0;
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				&ut, &st) == 2)
			c.stat_us = (ut + st) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK);
	}
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return c;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/%d/task/%.32s/schedstat", pid, e->d_name);
		FILE *t = fopen(path, "r");
		unsigned long long ns = 0;
		if (t) {
			if (fscanf(t, "%llu", &ns) == 1)
				c.sched_ns += ns;
			fclose(t);
		}
	}
	closedir(d);
	return c;
}

#endif
