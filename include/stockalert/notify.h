#ifndef STOCKALERT_NOTIFY_H
#define STOCKALERT_NOTIFY_H
/*
 * What the service manager is told: systemd's readiness protocol
 * (sd_notify(3), through libsystemd). Without NOTIFY_SOCKET in the
 * environment (started by hand, by a test, by another supervisor) every
 * call is a cheap no-op.
 *
 *   READY=1          once, when the daemon serves (notify_ready)
 *   RELOADING=1      at the start of a SIGHUP reload, READY=1 at its end
 *   STOPPING=1       at the start of a graceful stop
 *   WATCHDOG=1       from a loop timer at half of WATCHDOG_USEC, so only
 *                    while the loop turns: a wedged loop stops feeding it
 *                    and systemd kills and restarts the daemon
 *   STATUS=...       a line from the caller's status function, sent with
 *                    READY=1 and refreshed every NOTIFY_STATUS_PERIOD_MS
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define NOTIFY_STATUS_PERIOD_MS 5000

struct notify;

/* Writes the one-line status (no newline) into buf; size includes the NUL. */
typedef void (*notify_status_fn)(char *buf, size_t size, void *arg);

/* The watchdog and status timers start here (the status one only after
 * notify_ready); both are unreferenced, so they never keep the loop alive. */
struct notify *notify_new(uv_loop_t *loop, notify_status_fn status, void *arg);

/* All of these accept NULL and do nothing then. */

/* READY=1 with the current status. Repeated calls after the first (and
 * after a reload's notify_ready) do nothing. */
void notify_ready(struct notify *n);
/* RELOADING=1, if READY=1 was sent: true when the caller owes a
 * notify_ready() once the reload is over. */
bool notify_reloading(struct notify *n);
void notify_stopping(struct notify *n);

/* The watchdog period the manager asked for, in ms (0: none). */
uint64_t notify_watchdog_ms(const struct notify *n);

/* Stops the timers; frees n once libuv has closed them. NULL is fine. */
void notify_close(struct notify *n);

#endif
