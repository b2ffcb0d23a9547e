/*
 * The hub: users -> connections, and each connection's capped send queue.
 *
 * Memory is the budget that matters (~19k sockets per process, most of them
 * idle), so an idle connection is just its struct hub_conn: the queue is
 * allocated on the first push, grows x2 up to queue_max, and is freed again
 * as soon as it drains. A busy connection pays a small malloc/free per burst,
 * which is far cheaper than a resident ring on every idle socket.
 *
 * A message is one allocation shared by every recipient; a recipient costs
 * one pointer slot and a refcount increment.
 */
#include "stockalert/hub.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "stockalert/dict.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"

#define HUB_USER_MAX  64
#define HUB_QUEUE_MIN 4

/* Ring of message pointers; the conn keeps only a pointer to it, so an idle
 * conn carries no queue bookkeeping at all. */
struct hub_queue {
	uint32_t head;
	uint32_t len;
	uint32_t cap;
	struct hub_msg *slot[];
};

struct hub_user {
	struct hub *hub;	/* lets hub_conn_set_roles find the role list */
	struct hub_conn *conns; /* doubly linked through hub_conn.prev/next */
	size_t count;		/* connections; in hub.users while > 0 */
	size_t holds;		/* hub_user_hold references */
	char name[];
};

struct hub_conn {
	struct hub_user *user;
	void *sink;
	struct hub_conn *prev, *next;	/* the user's connections */
	struct hub_conn *rprev, *rnext; /* hub.role_conns, only while roles != 0 */
	struct hub_queue *q;		/* NULL while empty */
	unsigned roles;
	bool overflowed;
};

struct hub {
	struct hub_sink_ops ops;
	size_t headroom;
	uint32_t queue_max;
	struct dict *users; /* name -> struct hub_user, only users with conns */
	size_t nconns;
	/* Connections holding any role: role fan-out walks only these, not
	 * every socket on the instance. */
	struct hub_conn *role_conns;
};

struct hub *hub_new(const struct hub_sink_ops *ops, size_t headroom, size_t queue_max)
{
	struct hub *h = mem_calloc(1, sizeof *h);

	h->ops = *ops;
	h->headroom = headroom;
	h->queue_max = queue_max > UINT32_MAX ? UINT32_MAX : (uint32_t)queue_max;
	h->users = dict_new();
	return h;
}

static void queue_release(struct hub_conn *c)
{
	struct hub_queue *q = c->q;

	if (!q)
		return;
	for (uint32_t i = 0; i < q->len; i++)
		hub_msg_unref(q->slot[(q->head + i) % q->cap]);
	mem_free(q);
	c->q = NULL;
}

static int free_user_conns(const char *name, void *value, void *arg)
{
	struct hub_user *u = value;
	size_t *leaked = arg;

	(void)name;
	while (u->conns) {
		struct hub_conn *c = u->conns;

		u->conns = c->next;
		queue_release(c);
		mem_free(c);
		(*leaked)++;
	}
	mem_free(u);
	return 0;
}

void hub_free(struct hub *h)
{
	size_t leaked = 0;

	if (!h)
		return;
	/* Only values are freed here; the dict's own entries go with dict_free. */
	dict_each(h->users, free_user_conns, &leaked);
	if (leaked)
		log_warn("hub", "freed with %zu connections still attached", leaked);
	dict_free(h->users);
	mem_free(h);
}

struct hub_msg *hub_msg_new(const struct hub *h, const char *data, size_t len)
{
	/* One block: header, transport headroom, payload, NUL (for logging and
	 * for text frames that end up in string APIs). */
	struct hub_msg *m = mem_alloc(sizeof *m + h->headroom + len + 1);

	m->refs = 1;
	m->order = 0;
	m->origin_us = 0;
	m->len = len;
	m->data = (char *)(m + 1) + h->headroom;
	if (len)
		memcpy(m->data, data, len);
	m->data[len] = '\0';
	return m;
}

void hub_msg_ref(struct hub_msg *m)
{
	m->refs++;
}

void hub_msg_unref(struct hub_msg *m)
{
	if (m && --m->refs == 0)
		mem_free(m);
}

static void role_link(struct hub *h, struct hub_conn *c)
{
	c->rprev = NULL;
	c->rnext = h->role_conns;
	if (h->role_conns)
		h->role_conns->rprev = c;
	h->role_conns = c;
}

static void role_unlink(struct hub *h, struct hub_conn *c)
{
	if (c->rprev)
		c->rprev->rnext = c->rnext;
	else
		h->role_conns = c->rnext;
	if (c->rnext)
		c->rnext->rprev = c->rprev;
	c->rprev = c->rnext = NULL;
}

struct hub_conn *hub_attach(struct hub *h, const char *user, unsigned roles, void *sink)
{
	size_t len = strnlen(user, HUB_USER_MAX + 1);
	struct hub_user *u;
	struct hub_conn *c;

	if (len == 0 || len > HUB_USER_MAX) {
		log_warn("hub", "refusing to attach a user id of %zu+ bytes", len);
		return NULL;
	}
	u = dict_get(h->users, user);
	if (!u) {
		u = mem_alloc(sizeof *u + len + 1);
		u->hub = h;
		u->conns = NULL;
		u->count = 0;
		u->holds = 0;
		memcpy(u->name, user, len + 1);
		dict_set(h->users, user, u);
	}
	c = mem_calloc(1, sizeof *c);
	c->user = u;
	c->sink = sink;
	c->roles = roles;
	c->next = u->conns;
	if (u->conns)
		u->conns->prev = c;
	u->conns = c;
	u->count++;
	if (roles)
		role_link(h, c);
	h->nconns++;
	return c;
}

void hub_detach(struct hub *h, struct hub_conn *c)
{
	struct hub_user *u;

	if (!c)
		return;
	u = c->user;
	if (c->prev)
		c->prev->next = c->next;
	else
		u->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->roles)
		role_unlink(h, c);
	queue_release(c);
	mem_free(c);
	h->nconns--;
	if (--u->count == 0) {
		dict_del(h->users, u->name);
		if (u->holds == 0)
			mem_free(u);
	}
}

static struct hub_queue *queue_resize(struct hub_queue *old, uint32_t cap)
{
	struct hub_queue *q = mem_alloc(sizeof *q + (size_t)cap * sizeof q->slot[0]);

	q->head = 0;
	q->len = 0;
	q->cap = cap;
	if (old) {
		/* Unwrap into the new ring so head starts at 0. */
		for (uint32_t i = 0; i < old->len; i++)
			q->slot[i] = old->slot[(old->head + i) % old->cap];
		q->len = old->len;
		mem_free(old);
	}
	return q;
}

int hub_push(struct hub *h, struct hub_conn *c, struct hub_msg *m)
{
	uint32_t len = c->q ? c->q->len : 0;
	struct hub_queue *q;

	if (c->overflowed)
		return -ENOBUFS;
	if (len >= h->queue_max) {
		/* The laggard loses its whole backlog now rather than holding
		 * queue_max shared messages alive until its close completes. */
		queue_release(c);
		c->overflowed = true;
		h->ops.overflow(c->sink);
		return -ENOBUFS;
	}
	if (len == 0 && h->ops.send_now && h->ops.send_now(c->sink, m))
		return 0;
	if (!c->q) {
		c->q =
		    queue_resize(NULL, h->queue_max < HUB_QUEUE_MIN ? h->queue_max : HUB_QUEUE_MIN);
	} else if (c->q->len == c->q->cap) {
		uint32_t cap = c->q->cap > h->queue_max / 2 ? h->queue_max : c->q->cap * 2;

		c->q = queue_resize(c->q, cap);
	}
	q = c->q;
	q->slot[(q->head + q->len) % q->cap] = m;
	q->len++;
	hub_msg_ref(m);
	if (len == 0)
		h->ops.wake(c->sink);
	return 0;
}

size_t hub_send_to_user(struct hub *h, const char *user, struct hub_msg *m)
{
	struct hub_user *u = dict_get(h->users, user);

	return u ? hub_send_to(h, u, m) : 0;
}

struct hub_user *hub_user_hold(struct hub *h, const char *user)
{
	struct hub_user *u = dict_get(h->users, user);

	if (u)
		u->holds++;
	return u;
}

void hub_user_release(struct hub_user *u)
{
	if (u && --u->holds == 0 && u->count == 0)
		mem_free(u);
}

size_t hub_send_to(struct hub *h, struct hub_user *u, struct hub_msg *m)
{
	size_t n = 0;

	for (struct hub_conn *c = u ? u->conns : NULL; c; c = c->next)
		if (hub_push(h, c, m) == 0)
			n++;
	return n;
}

size_t hub_send_to_role_except(struct hub *h, unsigned role_mask, struct hub_msg *m,
			       bool (*skip)(const char *user, void *arg), void *arg)
{
	size_t n = 0;
	struct hub_conn *next;

	for (struct hub_conn *c = h->role_conns; c; c = next) {
		next = c->rnext;
		if ((c->roles & role_mask) && !skip(hub_conn_user(c), arg) &&
		    hub_push(h, c, m) == 0)
			n++;
	}
	return n;
}

size_t hub_send_to_role(struct hub *h, unsigned role_mask, struct hub_msg *m)
{
	size_t n = 0;

	for (struct hub_conn *c = h->role_conns; c; c = c->rnext)
		if ((c->roles & role_mask) && hub_push(h, c, m) == 0)
			n++;
	return n;
}

struct hub_msg *hub_peek(const struct hub_conn *c)
{
	return c->q ? c->q->slot[c->q->head] : NULL;
}

void hub_pop(struct hub_conn *c)
{
	struct hub_queue *q = c->q;

	if (!q)
		return;
	hub_msg_unref(q->slot[q->head]);
	q->head = (q->head + 1) % q->cap;
	if (--q->len == 0) {
		/* Drained: give the ring back so idle sockets cost nothing. */
		mem_free(q);
		c->q = NULL;
	}
}

size_t hub_queue_len(const struct hub_conn *c)
{
	return c->q ? c->q->len : 0;
}

bool hub_overflowed(const struct hub_conn *c)
{
	return c->overflowed;
}

const char *hub_conn_user(const struct hub_conn *c)
{
	return c->user->name;
}

unsigned hub_conn_roles(const struct hub_conn *c)
{
	return c->roles;
}

void hub_conn_set_roles(struct hub_conn *c, unsigned roles)
{
	struct hub *h = c->user->hub;

	if (c->roles && !roles)
		role_unlink(h, c);
	else if (!c->roles && roles)
		role_link(h, c);
	c->roles = roles;
}

size_t hub_user_conns(const struct hub *h, const char *user)
{
	const struct hub_user *u = dict_get(h->users, user);

	return u ? u->count : 0;
}

size_t hub_total_conns(const struct hub *h)
{
	return h->nconns;
}

size_t hub_total_users(const struct hub *h)
{
	return dict_size(h->users);
}

struct each_user_ctx {
	void (*fn)(const char *user, void *arg);
	void *arg;
};

static int each_user_cb(const char *name, void *value, void *arg)
{
	const struct each_user_ctx *ctx = arg;

	(void)value;
	ctx->fn(name, ctx->arg);
	return 0;
}

void hub_each_user(const struct hub *h, void (*fn)(const char *user, void *arg), void *arg)
{
	struct each_user_ctx ctx = {fn, arg};

	dict_each(h->users, each_user_cb, &ctx);
}

struct each_conn_ctx {
	int (*fn)(void *sink, void *arg);
	void *arg;
};

static int each_conn_cb(const char *name, void *value, void *arg)
{
	const struct each_conn_ctx *ctx = arg;
	const struct hub_user *u = value;

	(void)name;
	for (const struct hub_conn *c = u->conns; c; c = c->next) {
		int rc = ctx->fn(c->sink, ctx->arg);
		if (rc)
			return rc;
	}
	return 0;
}

int hub_each_conn(const struct hub *h, int (*fn)(void *sink, void *arg), void *arg)
{
	struct each_conn_ctx ctx = {fn, arg};

	return dict_each(h->users, each_conn_cb, &ctx);
}
