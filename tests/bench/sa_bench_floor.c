/*
 * sa_bench_floor: the physical floor of a fan-out on this machine.
 *
 * N loopback TCP connections; the parent holds the accepted ends and, per
 * round, does one 200-byte send() on each, with no framing and no
 * bookkeeping. A child process holds the client ends, reads everything
 * with epoll and tells the parent through a pipe when a round has fully
 * arrived. Reported: the parent's CPU per send (on loopback the sender also
 * pays for the receiver's TCP work) and the time per round, from the first
 * send to the last byte read, the same span the load generator measures
 * for a server (publish -> last receipt).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_proc.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MSG_SIZE 200
#define SOURCES	 8

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
	fprintf(stderr, "sa_bench_floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void set_linger(int fd)
{
	struct linger lg = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

/* The receiving side: connects n sockets, then reads until the parent
 * closes the control pipe, writing one byte to `done` per complete round. */
static void receiver(int n, int port, int ctl, int done)
{
	int ep = epoll_create1(0);
	struct epoll_event ev;
	static char buf[65536];
	uint64_t total = 0, per_round = (uint64_t)n * MSG_SIZE, next = per_round;

	if (ep < 0)
		die("epoll_create1");
	for (int i = 0; i < n; i++) {
		int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
		if (fd < 0)
			die("socket");
		set_linger(fd);
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % SOURCES));
		dst.sin_addr.s_addr = htonl(0x7f000001u);
		dst.sin_port = htons((uint16_t)port);
		if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
		    connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0)
			die("connect");
		ev.events = EPOLLIN;
		ev.data.fd = fd;
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	}
	ev.events = EPOLLIN;
	ev.data.fd = ctl;
	epoll_ctl(ep, EPOLL_CTL_ADD, ctl, &ev);
	if (write(done, "R", 1) != 1)
		die("write");
	for (;;) {
		struct epoll_event evs[1024];
		int k = epoll_wait(ep, evs, 1024, -1);
		for (int j = 0; j < k; j++) {
			if (evs[j].data.fd == ctl)
				_exit(0);
			ssize_t r = read(evs[j].data.fd, buf, sizeof buf);
			if (r > 0)
				total += (uint64_t)r;
		}
		while (total >= next) {
			if (write(done, "D", 1) != 1)
				die("write");
			next += per_round;
		}
	}
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4000;
	int rounds = argc > 2 ? atoi(argv[2]) : 20;
	int ctl[2], done[2], one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof a;
	char msg[MSG_SIZE], c;

	if (n <= 0 || rounds <= 0) {
		fprintf(stderr, "usage: sa_bench_floor [N] [ROUNDS]\n");
		return 2;
	}
	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	memset(msg, 'x', sizeof msg);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(0x7f000001u);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
		die("listen");
	if (pipe(ctl) < 0 || pipe(done) < 0)
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(ctl[1]);
		close(done[0]);
		close(lfd);
		receiver(n, ntohs(a.sin_port), ctl[0], done[1]);
		_exit(0);
	}
	close(ctl[0]);
	close(done[1]);

	int *fds = calloc((size_t)n, sizeof *fds);
	if (!fds)
		die("calloc");
	for (int i = 0; i < n; i++) {
		fds[i] = accept(lfd, NULL, NULL);
		if (fds[i] < 0)
			die("accept");
		set_linger(fds[i]);
		setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (read(done[0], &c, 1) != 1 || c != 'R')
		die("receiver");

	double *round_ms = calloc((size_t)rounds, sizeof *round_ms);
	double *loop_ms = calloc((size_t)rounds, sizeof *loop_ms);
	uint64_t cpu_ns = 0, sends = 0;
	for (int r = -1; r < rounds; r++) {
		struct bench_cpu c0 = bench_proc_cpu(getpid());
		int64_t t0 = mono_us();
		for (int i = 0; i < n; i++)
			if (send(fds[i], msg, sizeof msg, 0) != (ssize_t)sizeof msg)
				die("send");
		int64_t t1 = mono_us();
		struct bench_cpu c1 = bench_proc_cpu(getpid());
		if (read(done[0], &c, 1) != 1)
			die("round");
		int64_t t2 = mono_us();
		if (r >= 0) { /* round -1 warms up */
			round_ms[r] = (double)(t2 - t0) / 1e3;
			loop_ms[r] = (double)(t1 - t0) / 1e3;
			cpu_ns += c1.sched_ns - c0.sched_ns;
			sends += (uint64_t)n;
		}
		usleep(30000);
	}
	qsort(round_ms, (size_t)rounds, sizeof *round_ms, cmp_dbl);
	qsort(loop_ms, (size_t)rounds, sizeof *loop_ms, cmp_dbl);
	printf("{\"n\":%d,\"rounds\":%d,\"round_ms_median\":%.3f,\"round_ms_min\":%.3f,"
	       "\"sendloop_ms_median\":%.3f,\"cpu_us_per_send\":%.3f}\n",
	       n, rounds, round_ms[rounds / 2], round_ms[0], loop_ms[rounds / 2],
	       (double)cpu_ns / 1e3 / (double)sends);
	close(ctl[1]);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	waitpid(child, NULL, 0);
	free(fds);
	free(round_ms);
	free(loop_ms);
	return 0;
}
