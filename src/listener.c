#include "stockalert/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/peers.h"

#define MOD		"listener"
/* Connections taken per readable event: enough to drain a burst quickly,
 * few enough that one storm does not starve the rest of the loop. */
#define ACCEPT_BATCH	64
/* Out of descriptors: pause accepting this long (the backlog holds the
 * rest) instead of spinning on a socket that stays readable. */
#define EMFILE_PAUSE_MS 100

struct listener {
	uv_poll_t poll;
	uv_timer_t pause;
	int fd;
	struct lws_vhost *vh;
	struct peers *peers;
	int open_handles;
	bool paused; /* by the handshake bound (peers) */
	bool warned_emfile;
};

int listener_activated_fd(char *err, size_t errlen)
{
	int n = sd_listen_fds(1);
	if (n == 0)
		return -1;
	if (n < 0) {
		snprintf(err, errlen, "LISTEN_FDS: %s", strerror(-n));
		return -2;
	}
	if (n > 1) {
		snprintf(err, errlen, "LISTEN_FDS: %d sockets passed; one is served", n);
		return -2;
	}
	int fd = SD_LISTEN_FDS_START;
	if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0) {
		snprintf(err, errlen, "LISTEN_FDS: fd %d is not a listening TCP socket", fd);
		return -2;
	}
	return fd;
}

static void on_readable(uv_poll_t *p, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
	struct listener *l = t->data;
	if (!l->paused)
		uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

static void set_accepting(bool accepting, void *arg)
{
	struct listener *l = arg;
	l->paused = !accepting;
	if (accepting && !uv_is_active((uv_handle_t *)&l->pause))
		uv_poll_start(&l->poll, UV_READABLE, on_readable);
	else if (!accepting)
		uv_poll_stop(&l->poll);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
	struct listener *l = p->data;
	(void)events;
	if (status < 0) {
		log_error(MOD, "listening socket: %s", uv_strerror(status));
		return;
	}
	for (int i = 0; i < ACCEPT_BATCH && !l->paused; i++) {
		struct sockaddr_storage sa;
		socklen_t salen = sizeof sa;
		int cfd =
		    accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				if (!l->warned_emfile)
					log_warn(MOD, "accept: %s; new connections wait",
						 strerror(errno));
				l->warned_emfile = true;
				uv_poll_stop(&l->poll);
				uv_timer_start(&l->pause, on_pause_over, EMFILE_PAUSE_MS, 0);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK &&
				   errno != ECONNABORTED && errno != EINTR) {
				log_warn(MOD, "accept: %s", strerror(errno));
			}
			return;
		}
		l->warned_emfile = false;
		if (l->peers && !peers_admit(l->peers, NULL, cfd, (struct sockaddr *)&sa, salen)) {
			close(cfd); /* answered 503 already */
			continue;
		}
		/* On failure lws has closed cfd itself (at its fd limit, for
		 * one: the same answer a socket it accepted would get). */
		lws_adopt_socket_vhost(l->vh, cfd);
	}
}

struct listener *listener_new(uv_loop_t *loop, int fd, struct lws_vhost *vh, struct peers *peers)
{
	struct listener *l = mem_calloc(1, sizeof *l);
	l->fd = fd;
	l->vh = vh;
	l->peers = peers;
	if (peers)
		peers_set_acceptor(peers, set_accepting, l);
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	uv_poll_init_socket(loop, &l->poll, fd);
	uv_timer_init(loop, &l->pause);
	l->poll.data = l;
	l->pause.data = l;
	l->open_handles = 2;
	uv_poll_start(&l->poll, UV_READABLE, on_readable);
	return l;
}

void listener_address(const struct listener *l, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	memset(&ss, 0, sizeof ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(buf, size, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

static void on_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	if (--l->open_handles > 0)
		return;
	close(l->fd);
	mem_free(l);
}

void listener_close(struct listener *l)
{
	if (!l)
		return;
	if (l->peers)
		peers_set_acceptor(l->peers, NULL, NULL);
	uv_close((uv_handle_t *)&l->poll, on_closed);
	uv_close((uv_handle_t *)&l->pause, on_closed);
}
