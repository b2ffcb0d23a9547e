#include "stockalert/notify.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "stockalert/log.h"
#include "stockalert/mem.h"

#define MOD	       "notify"
#define STATUS_MAX     256
/* Timers still open, closed one by one before n is freed. */
#define NOTIFY_HANDLES 2

struct notify {
	uv_timer_t watchdog;
	uv_timer_t status;
	notify_status_fn status_fn;
	void *arg;
	uint64_t watchdog_ms;
	bool ready; /* READY=1 sent and not taken back by RELOADING=1 */
	bool stopping;
	int open_handles;
};

/* sd_notify() answers > 0 when sent, 0 when there is no manager to tell,
 * < 0 on a failed send: only the last deserves a word, and only once. */
static void send_state(struct notify *n, const char *state)
{
	static bool warned;
	(void)n;
	int rc = sd_notify(0, state);
	if (rc < 0 && !warned) {
		warned = true;
		log_warn(MOD, "could not notify the service manager: %s", strerror(-rc));
	}
}

static void send_status(struct notify *n, const char *prefix)
{
	char status[STATUS_MAX];
	char msg[STATUS_MAX + 64];
	status[0] = '\0';
	if (n->status_fn)
		n->status_fn(status, sizeof status, n->arg);
	snprintf(msg, sizeof msg, "%sSTATUS=%s", prefix, status);
	send_state(n, msg);
}

static void on_watchdog(uv_timer_t *t)
{
	send_state(t->data, "WATCHDOG=1");
}

static void on_status(uv_timer_t *t)
{
	send_status(t->data, "");
}

struct notify *notify_new(uv_loop_t *loop, notify_status_fn status, void *arg)
{
	struct notify *n = mem_calloc(1, sizeof *n);
	n->status_fn = status;
	n->arg = arg;
	uv_timer_init(loop, &n->watchdog);
	uv_timer_init(loop, &n->status);
	n->watchdog.data = n;
	n->status.data = n;
	n->open_handles = NOTIFY_HANDLES;
	uv_unref((uv_handle_t *)&n->watchdog);
	uv_unref((uv_handle_t *)&n->status);

	/* sd_watchdog_enabled() checks WATCHDOG_PID against our pid, so a
	 * child we exec never inherits our duty. */
	uint64_t usec = 0;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		/* Half the period, as sd_watchdog_enabled(3) advises; at
		 * least 1 ms so a tiny WatchdogSec still works. */
		n->watchdog_ms = usec / 1000 / 2 > 0 ? usec / 1000 / 2 : 1;
		uv_timer_start(&n->watchdog, on_watchdog, n->watchdog_ms, n->watchdog_ms);
		log_info(MOD, "systemd watchdog every %llu ms", (unsigned long long)n->watchdog_ms);
	}
	return n;
}

uint64_t notify_watchdog_ms(const struct notify *n)
{
	return n->watchdog_ms;
}

void notify_ready(struct notify *n)
{
	if (!n)
		return;
	if (n->ready || n->stopping)
		return;
	n->ready = true;
	send_status(n, "READY=1\n");
	if (!uv_is_active((uv_handle_t *)&n->status))
		uv_timer_start(&n->status, on_status, NOTIFY_STATUS_PERIOD_MS,
			       NOTIFY_STATUS_PERIOD_MS);
}

bool notify_reloading(struct notify *n)
{
	if (!n || !n->ready || n->stopping)
		return false;
	n->ready = false;
	send_state(n, "RELOADING=1");
	return true;
}

void notify_stopping(struct notify *n)
{
	if (!n)
		return;
	if (n->stopping)
		return;
	n->stopping = true;
	uv_timer_stop(&n->status);
	send_state(n, "STOPPING=1\nSTATUS=stopping");
}

static void on_closed(uv_handle_t *h)
{
	struct notify *n = h->data;
	if (--n->open_handles == 0)
		mem_free(n);
}

void notify_close(struct notify *n)
{
	if (!n)
		return;
	uv_close((uv_handle_t *)&n->watchdog, on_closed);
	uv_close((uv_handle_t *)&n->status, on_closed);
}
