#ifndef STOCKALERT_LISTENER_H
#define STOCKALERT_LISTENER_H
/*
 * Socket activation: the listening socket comes from the service manager
 * (systemd's stockalertd.socket, LISTEN_FDS/LISTEN_PID, sd_listen_fds(3))
 * instead of our own bind. The manager keeps it open across restarts, so a
 * connection that arrives while no daemon runs waits in its backlog instead
 * of being refused.
 *
 * lws 4.1.6 cannot listen on a socket it did not open, so this module
 * accepts on it from the loop and hands each connection to lws as if lws
 * had accepted it (lws_adopt_socket_vhost: HTTP, WebSocket upgrade and TLS
 * alike).
 */
#include <libwebsockets.h>
#include <stddef.h>
#include <uv.h>

struct listener;

/*
 * The listening socket passed by the service manager: its fd (>= 0), -1 when
 * none was passed (then the caller binds as usual), or -2 with the reason in
 * err when what was passed is unusable (more than one socket, or not a
 * listening TCP socket). The LISTEN_* variables are removed either way, so
 * no child inherits them.
 */
int listener_activated_fd(char *err, size_t errlen);

struct peers;

/* Starts accepting on fd (non-blocking from here on) into vh. Each
 * connection is admitted by peers first (the per-address limit, and the
 * handshake bound, which pauses this accept loop), as lws's own accepts
 * are. */
struct listener *listener_new(uv_loop_t *loop, int fd, struct lws_vhost *vh, struct peers *peers);

/* "127.0.0.1:8080": the address the socket is bound to. */
void listener_address(const struct listener *l, char *buf, size_t size);

/* Stops accepting: what arrives from now on waits in the socket's backlog
 * for the next instance. The fd is closed and l freed once libuv has
 * closed its handles. NULL is fine. */
void listener_close(struct listener *l);

#endif
