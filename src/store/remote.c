/* SPDX-License-Identifier: MIT */
/*
 * The remote store: an object of a page server (`faultline serve`), over the
 * wire protocol's page-server messages (doc/wire-protocol.md, section 13).
 *
 * A pool of connections, each used by one caller at a time: the caller (a
 * pager's handler thread) takes one, sends its requests and reads the
 * answers itself, so that a fault costs one thread wake-up beyond the
 * pager's own (the server's), not three (the server's, a receiving
 * thread's, then the caller's). A read of one prefetch window is one READ
 * per 2 MiB; a call of several runs takes the idle connections it can have
 * besides its own, sends every request on each before it reads the first
 * answer (pipelined), then reads each connection's answers. A connection
 * that breaks is made again by its holder, backing off; its unanswered
 * requests are sent again; the call's deadline bounds it all. Nothing runs
 * in the background: a connection that the server closed while idle is
 * found closed by its next user (checked before a send when it has been
 * idle a while) and made again.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "net/sock.h"
#include "net/transport.h"
#include "remote/pgio.h"
#include "store-internal.h"

#define REMOTE_FLAGS_ALL (FL_STORE_REMOTE_WRITABLE | FL_STORE_REMOTE_INSECURE)
#define MAX_CONNECTIONS 16u
#define DEFAULT_CONNECTIONS 2u
#define DEFAULT_DEADLINE_MS 60000
#define CONNECT_MS 5000		/* one connection attempt */
#define IO_MS 10000		/* a send, or the rest of a message, stalled this long */
#define STALL_MS 30000		/* requests wait and the connection says nothing: lost */
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define IDLE_CHECK_NS 1000000000ull	/* idle this long: see whether the server closed it */
#define RUNS_PER_CALL 64u	/* requests one call has in flight at once (128 MiB) */

struct req {
	uint64_t id;
	uint8_t type;			/* FL__PG_READ or FL__PG_WRITE */
	uint8_t ci;			/* which of the call's connections carries it */
	bool sent;			/* on its connection as that is now */
	bool done;
	int result;
	uint32_t len;
	uint64_t off;
	uint8_t *buf;			/* READ: where the pages go */
	const uint8_t *wdata;		/* WRITE: the caller's bytes */
	uint64_t *holes;		/* READ: the caller's bitmap, or NULL */
	uint64_t hole_base;		/* the caller's page index of this run's first page */
	size_t page_size;		/* the caller's */
};

/* A connection: in the store's free list, or its holder's alone. */
struct rconn {
	struct rconn *next;		/* in the free list */
	unsigned int idx;
	struct fl__conn *conn;		/* NULL while down (or never made) */
	struct fl__pg_rx rx;
	uint64_t next_id;
	uint64_t used_ns;		/* its last answer (or when it was made) */
	uint64_t down_ns;		/* since when it is lost, or 0 */
	int backoff;			/* ms before its next attempt */
};

struct rstore {
	char host[256];
	uint16_t port;
	char name[FL__PG_MAX_NAME + 1];
	char url[600];
	uint32_t flags;
	struct fl__transport *transport;	/* TLS, or plain TCP */
	char *peer_name;		/* X.509: the name the server's certificate carries, or NULL */
	int deadline_ms;		/* -1: forever */
	uint64_t size;
	unsigned int page_shift;
	pthread_mutex_t lock;		/* free */
	pthread_cond_t cv;		/* a connection came free */
	struct rconn *free;		/* the one freed last first */
	unsigned int nconn;
	struct rconn conns[];
};

/* ---------------------------------------------------------------- URL */

/* "faultline://HOST:PORT/NAME" ([V6] for an IPv6 address). */
static int parse_url(const char *url, struct rstore *s)
{
	static const char scheme[] = "faultline://";
	const char *h = url, *hend, *p, *slash;
	unsigned long port = 0;
	size_t n;

	if (strncmp(h, scheme, sizeof(scheme) - 1))
		return fl__einval("fl_store_remote_open", "%s: not a faultline:// URL", url);
	h += sizeof(scheme) - 1;
	if (*h == '[') {
		hend = strchr(h, ']');
		if (!hend || hend[1] != ':')
			return fl__einval("fl_store_remote_open", "%s: an IPv6 address needs "
					  "[ADDR]:PORT", url);
		p = hend + 2;
		h++;
	} else {
		hend = strchr(h, ':');
		if (!hend)
			return fl__einval("fl_store_remote_open", "%s: no :PORT", url);
		p = hend + 1;
	}
	n = (size_t)(hend - h);
	if (!n || n >= sizeof(s->host))
		return fl__einval("fl_store_remote_open", "%s: no host, or a host name too long",
				  url);
	memcpy(s->host, h, n);
	s->host[n] = '\0';
	slash = strchr(p, '/');
	if (!slash || slash == p)
		return fl__einval("fl_store_remote_open", "%s: no PORT/OBJECT after the host", url);
	for (const char *c = p; c < slash; c++) {
		if (*c < '0' || *c > '9' || port > 65535)
			return fl__einval("fl_store_remote_open", "%s: the port is not a number in "
					  "1..65535", url);
		port = port * 10 + (unsigned long)(*c - '0');
	}
	if (!port || port > 65535)
		return fl__einval("fl_store_remote_open", "%s: the port is not a number in "
				  "1..65535", url);
	s->port = (uint16_t)port;
	n = strlen(slash + 1);
	if (!n || n > FL__PG_MAX_NAME)
		return fl__einval("fl_store_remote_open", "%s: the object name must have 1..%u "
				  "bytes", url, FL__PG_MAX_NAME);
	for (size_t i = 0; i < n; i++)
		if (slash[1 + i] < 0x20 || slash[1 + i] > 0x7e)
			return fl__einval("fl_store_remote_open", "%s: the object name is not "
					  "printable ASCII", url);
	memcpy(s->name, slash + 1, n + 1);
	snprintf(s->url, sizeof(s->url), "%s", url);
	return 0;
}

/* ---------------------------------------------------------------- connecting */

/*
 * Connect (TLS handshake included), OPEN the object and read OPENED: 0 and
 * the connection, or -errno with @why (a server's refusal: its errno;
 * -EACCES for a failed TLS authentication, -EPROTO for a peer that is not a
 * page server).
 */
static int dial(struct rstore *s, struct fl__pg_rx *rx, int timeout_ms,
		struct fl__pg_msg *ret_opened, struct fl__conn **ret, char *why, size_t cap)
{
	struct fl__sock_opts so = { .flags = FL__SOCK_NODELAY };
	struct fl__pg_msg m = {
		.type = FL__PG_OPEN,
		.open = {
			.flags = (s->flags & FL_STORE_REMOTE_WRITABLE) ? FL__PG_OPEN_WRITE : 0,
			.name_len = (uint16_t)strlen(s->name),
			.name = s->name,
		},
	};
	struct fl__conn *conn;
	char msg[256] = "";
	int fd, r;

	why[0] = '\0';
	r = fl__sock_connect(s->host, s->port, &so, timeout_ms, &fd);
	if (r >= 0)
		r = fl__conn_open(s->transport, fd, FL__CONN_CLIENT,
				  s->peer_name ? s->peer_name : s->host, timeout_ms, &conn, msg,
				  sizeof(msg));
	if (r < 0) {
		snprintf(why, cap, "connecting to %s:%u: %s%s%s", s->host, s->port, strerror(-r),
			 msg[0] ? ": " : "", msg);
		return r;
	}
	r = fl__pg_send(conn, &m, timeout_ms);
	if (r >= 0)
		r = fl__pg_recv(conn, rx, -1, timeout_ms, timeout_ms, &m);
	if (r == 0)
		r = -ECONNRESET;
	if (r < 0) {
		snprintf(why, cap, "opening %s: %s%s%s", s->name, strerror(-r),
			 rx->msg[0] ? ": " : "", rx->msg);
	} else if (m.type == FL__PG_ERROR) {
		r = -fl__pg_error_to_errno(m.error.code);
		snprintf(why, cap, "the server refused %s: %.*s", s->name, (int)m.error.msg_len,
			 m.error.msg);
	} else if (m.type != FL__PG_OPENED) {
		char tn[16];

		r = -EPROTO;
		snprintf(why, cap, "the server answered OPEN with %s",
			 fl__pg_type_name(m.type, tn));
	} else {
		*ret_opened = m;
		*ret = conn;
		return 0;
	}
	fl__conn_close(conn);
	return r;
}

/* ---------------------------------------------------------------- answers */

/* Put a DATA answer into the caller's buffer and bitmap, by the caller's page size. */
static void fill_read(struct req *q, const struct fl__pg_msg *m)
{
	uint32_t sub = (uint32_t)(q->page_size / FL__PG_PAGE), pages = q->len / FL__PG_PAGE;
	const uint8_t *d = m->run.data;

	for (uint32_t i = 0; i < pages; i += sub) {
		bool hole = true;

		for (uint32_t k = 0; k < sub; k++)
			hole &= fl__pg_hole(m->run.holes, i + k);
		if (hole && q->holes) {
			uint64_t j = q->hole_base + i / sub;

			q->holes[j / 64] |= 1ull << (j % 64);
			continue;
		}
		for (uint32_t k = 0; k < sub; k++) {
			uint8_t *dst = q->buf + (size_t)(i + k) * FL__PG_PAGE;

			if (fl__pg_hole(m->run.holes, i + k)) {
				memset(dst, 0, FL__PG_PAGE);
			} else {
				memcpy(dst, d, FL__PG_PAGE);
				d += FL__PG_PAGE;
			}
		}
	}
}

/*
 * One answer on connection @ci of the call: 0, or -EPROTO (with rx.msg)
 * when it answers nothing asked on it (the connection is then lost).
 */
static int take_answer(struct rstore *s, struct rconn *c, unsigned int ci, struct req *q,
		       unsigned int n, const struct fl__pg_msg *m)
{
	struct req *a = NULL;
	char tn[16];

	for (unsigned int i = 0; i < n && !a; i++)
		if (q[i].ci == ci && q[i].sent && !q[i].done && q[i].id == m->seq)
			a = &q[i];
	if (!a) {
		snprintf(c->rx.msg, sizeof(c->rx.msg), "%s answers request %llu, which is not "
			 "waiting", fl__pg_type_name(m->type, tn), (unsigned long long)m->seq);
		return -EPROTO;
	}
	if (m->type == FL__PG_ERROR) {
		fl__err("remote store %s: [%llu, +%u): %.*s", s->url, (unsigned long long)a->off,
			a->len, (int)m->error.msg_len, m->error.msg);
		a->result = -EIO;
	} else if ((m->type == FL__PG_DATA && a->type == FL__PG_READ) ||
		   (m->type == FL__PG_WRITTEN && a->type == FL__PG_WRITE)) {
		if (m->run.offset != a->off || m->run.len != a->len) {
			snprintf(c->rx.msg, sizeof(c->rx.msg), "%s for request %llu is about "
				 "[%llu, +%u), not [%llu, +%u)", fl__pg_type_name(m->type, tn),
				 (unsigned long long)m->seq, (unsigned long long)m->run.offset,
				 m->run.len, (unsigned long long)a->off, a->len);
			return -EPROTO;
		}
		if (m->type == FL__PG_DATA)
			fill_read(a, m);
		a->result = 0;
	} else {
		snprintf(c->rx.msg, sizeof(c->rx.msg), "%s answers request %llu",
			 fl__pg_type_name(m->type, tn), (unsigned long long)m->seq);
		return -EPROTO;
	}
	a->done = true;
	return 0;
}

/* ---------------------------------------------------------------- sending */

static int send_req(struct fl__conn *conn, const struct req *q)
{
	struct fl__pg_msg m = {
		.type = q->type,
		.seq = q->id,
		.run = { .offset = q->off, .len = q->len },
	};

	if (q->type == FL__PG_WRITE) {
		m.run.data = q->wdata;
		m.run.data_len = q->len;
	}
	return fl__pg_send(conn, &m, IO_MS);
}

/* Send connection @ci's requests not yet sent on it: 0 or the send's -errno. */
static int send_pending(struct rconn *c, unsigned int ci, struct req *q, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		int r;

		if (q[i].ci != ci || q[i].done || q[i].sent)
			continue;
		q[i].id = c->next_id++;
		r = send_req(c->conn, &q[i]);
		if (r < 0)
			return r;
		q[i].sent = true;
	}
	return 0;
}

/* ---------------------------------------------------------------- connections */

static uint64_t deadline_of(const struct rstore *s)
{
	return s->deadline_ms < 0 ? UINT64_MAX : fl__now_ns() + (uint64_t)s->deadline_ms * 1000000u;
}

/* Milliseconds until @deadline, at most @cap; 0 once it passed. */
static int ms_left(uint64_t deadline, int cap)
{
	uint64_t now = fl__now_ns(), ms;

	if (deadline == UINT64_MAX)
		return cap;
	if (now >= deadline)
		return 0;
	ms = (deadline - now + 999999u) / 1000000u;
	return ms < (uint64_t)cap ? (int)ms : cap;
}

/* A connection of the caller's own, or NULL when none came free before @deadline. */
static struct rconn *take(struct rstore *s, uint64_t deadline)
{
	struct rconn *c;

	pthread_mutex_lock(&s->lock);
	while (!(c = s->free)) {
		if (deadline == UINT64_MAX) {
			pthread_cond_wait(&s->cv, &s->lock);
		} else {
			uint64_t now = fl__now_ns();
			struct timespec ts;

			if (now >= deadline)
				break;
			ts = fl__abstime_in(CLOCK_MONOTONIC, deadline - now);
			pthread_cond_timedwait(&s->cv, &s->lock, &ts);
		}
	}
	if (c)
		s->free = c->next;
	pthread_mutex_unlock(&s->lock);
	return c;
}

/* An idle connection besides the caller's, or NULL. */
static struct rconn *take_idle(struct rstore *s)
{
	struct rconn *c;

	pthread_mutex_lock(&s->lock);
	c = s->free;
	if (c)
		s->free = c->next;
	pthread_mutex_unlock(&s->lock);
	return c;
}

static void put(struct rstore *s, struct rconn *c)
{
	pthread_mutex_lock(&s->lock);
	c->next = s->free;
	s->free = c;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->lock);
}

/* Close connection @ci; its unanswered requests go again on the next one. */
static void drop(struct rconn *c, unsigned int ci, struct req *q, unsigned int n)
{
	fl__conn_close(c->conn);
	c->conn = NULL;
	for (unsigned int i = 0; i < n; i++)
		if (q[i].ci == ci)
			q[i].sent = false;
}

/* Lost unexpectedly: say so once (the return is logged when it comes). */
static void lost(struct rstore *s, struct rconn *c, int r, const char *what)
{
	fl__warn("remote store %s: connection %u lost: %s%s%s; reconnecting", s->url, c->idx,
		 r ? strerror(-r) : what, c->rx.msg[0] ? ": " : "", c->rx.msg);
	c->down_ns = fl__now_ns();
}

/*
 * Make @c's connection, attempts backing off, until @deadline: 0, or the
 * last attempt's -errno with @why once the deadline passed.
 */
static int connect_until(struct rstore *s, struct rconn *c, uint64_t deadline, char *why,
			 size_t cap)
{
	for (;;) {
		struct fl__pg_msg m;
		struct fl__conn *conn = NULL;
		int r, tmo = ms_left(deadline, CONNECT_MS);

		if (!tmo)
			return -ETIMEDOUT;
		r = dial(s, &c->rx, tmo, &m, &conn, why, cap);
		if (r >= 0 && (m.opened.size != s->size || m.opened.page_shift != s->page_shift)) {
			fl__conn_close(conn);
			r = -ESTALE;
			snprintf(why, cap, "the object is not the one opened: %llu bytes now, %llu "
				 "at open", (unsigned long long)m.opened.size,
				 (unsigned long long)s->size);
		}
		if (r >= 0) {
			if (c->down_ns)
				fl__warn("remote store %s: connection %u back after %llu ms", s->url,
					 c->idx, (unsigned long long)((fl__now_ns() - c->down_ns) /
								     1000000u));
			c->down_ns = 0;
			c->backoff = BACKOFF_MIN_MS;
			c->conn = conn;
			c->used_ns = fl__now_ns();
			return 0;
		}
		if (!c->down_ns)
			c->down_ns = fl__now_ns();
		tmo = ms_left(deadline, c->backoff);
		fl__debug("remote store %s: connection %u: %s; again in %d ms", s->url, c->idx, why,
			  tmo);
		if (!tmo)
			return r;
		poll(NULL, 0, tmo);
		c->backoff = c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
	}
}

/*
 * A connection idle a while may have been closed by the server (its idle
 * timeout, a restart): look without waiting, and drop it if so, quietly
 * for an idle close. Nothing of ours is in flight on it.
 */
static void check_idle(struct rstore *s, struct rconn *c)
{
	struct fl__pg_msg m;
	int r;

	if (!c->conn || fl__now_ns() - c->used_ns < IDLE_CHECK_NS)
		return;
	r = fl__pg_recv(c->conn, &c->rx, -1, 0, IO_MS, &m);
	if (r == -ETIMEDOUT && !c->rx.msg[0])
		return;
	if (r > 0 && m.type == FL__PG_ERROR && (m.flags & FL__PG_F_CLOSE) &&
	    m.error.code == FL__PG_ERR_IDLE) {
		fl__debug("remote store %s: connection %u: closed by the server when idle", s->url,
			  c->idx);
	} else if (r > 0 && m.type == FL__PG_ERROR && (m.flags & FL__PG_F_CLOSE)) {
		fl__warn("remote store %s: connection %u: the server closed it: %.*s", s->url,
			 c->idx, (int)m.error.msg_len, m.error.msg);
	} else {
		if (r > 0)
			snprintf(c->rx.msg, sizeof(c->rx.msg), "a message while nothing was asked");
		lost(s, c, r > 0 ? -EPROTO : r, "the server closed it");
		c->down_ns = 0;		/* not lost while in use: no "back" line */
	}
	fl__conn_close(c->conn);
	c->conn = NULL;
}

/* Fail connection @ci's unanswered requests at the deadline, with one line saying why. */
static int give_up(struct rstore *s, struct rconn *c, unsigned int ci, struct req *q,
		   unsigned int n, const char *why)
{
	unsigned int left = 0;
	struct req *first = NULL;

	for (unsigned int i = 0; i < n; i++) {
		if (q[i].ci != ci || q[i].done)
			continue;
		if (!first)
			first = &q[i];
		left++;
		q[i].done = true;
		q[i].result = -EIO;
	}
	if (first)
		fl__err("remote store %s: %s of [%llu, +%u)%s not answered within %d ms%s%s%s", s->url,
			first->type == FL__PG_READ ? "read" : "write",
			(unsigned long long)first->off, first->len,
			left > 1 ? " and later runs" : "", s->deadline_ms,
			c->conn ? "" : " (the server cannot be reached", why[0] && !c->conn ? ": " :
			"", c->conn ? "" : why);
	/* Answers may still come on it: nobody else may read them. */
	drop(c, ci, q, n);
	return -EIO;
}

/*
 * Everything connection @ci of the call carries answered, through
 * reconnections, until @deadline: 0, or -EIO when a request failed or the
 * deadline passed (logged).
 */
static int pump(struct rstore *s, struct rconn *c, unsigned int ci, struct req *q, unsigned int n,
		uint64_t deadline)
{
	char why[512] = "";
	int rc = 0;

	for (;;) {
		struct fl__pg_msg m;
		bool waiting = false;
		int r, idle;

		for (unsigned int i = 0; i < n && !waiting; i++)
			waiting = q[i].ci == ci && !q[i].done;
		if (!waiting)
			break;
		if (!c->conn && connect_until(s, c, deadline, why, sizeof(why)) < 0) {
			rc = give_up(s, c, ci, q, n, why);
			break;
		}
		r = send_pending(c, ci, q, n);
		if (r < 0) {
			c->rx.msg[0] = '\0';
			lost(s, c, r, "");
			drop(c, ci, q, n);
			continue;
		}
		idle = ms_left(deadline, STALL_MS);
		r = idle ? fl__pg_recv(c->conn, &c->rx, -1, idle, IO_MS, &m) : -ETIMEDOUT;
		if (r == -ETIMEDOUT && !c->rx.msg[0]) {
			if (!ms_left(deadline, 1)) {
				rc = give_up(s, c, ci, q, n, "");
				break;
			}
			snprintf(c->rx.msg, sizeof(c->rx.msg), "no answer for %d ms", STALL_MS);
		} else if (r > 0 && m.type == FL__PG_ERROR && (m.flags & FL__PG_F_CLOSE)) {
			/* The server ends the connection (idle, stopping, ...): again, at once. */
			if (m.error.code != FL__PG_ERR_IDLE)
				fl__warn("remote store %s: connection %u: the server closes it: %.*s",
					 s->url, c->idx, (int)m.error.msg_len, m.error.msg);
			drop(c, ci, q, n);
			continue;
		} else if (r > 0) {
			r = take_answer(s, c, ci, q, n, &m);
			if (!r) {
				c->used_ns = fl__now_ns();
				continue;
			}
		}
		lost(s, c, r, "the server closed it");
		drop(c, ci, q, n);
	}
	for (unsigned int i = 0; i < n && !rc; i++)
		if (q[i].ci == ci && q[i].result < 0)
			rc = q[i].result;
	return rc;
}

/*
 * A read or a write of [off, off+len), in runs of FL__PG_MAX_RUN, up to
 * RUNS_PER_CALL in flight at once over the caller's connection and the idle
 * ones it could take.
 */
static int transfer(struct rstore *s, uint8_t type, uint64_t off, uint8_t *buf,
		    const uint8_t *wdata, size_t len, size_t page_size, uint64_t *holes)
{
	struct req q[RUNS_PER_CALL];
	struct rconn *held[MAX_CONNECTIONS];
	uint64_t deadline = deadline_of(s);
	unsigned int nheld = 0;
	size_t done = 0;
	int r = 0;

	held[0] = take(s, deadline);
	if (!held[0]) {
		fl__err("remote store %s: %s of [%llu, +%zu): no connection came free within %d ms "
			"(all %u in use)", s->url, type == FL__PG_READ ? "read" : "write",
			(unsigned long long)off, len, s->deadline_ms, s->nconn);
		return -EIO;
	}
	nheld = 1;
	while (done < len && !r) {
		unsigned int n = 0, ncall;

		for (; n < RUNS_PER_CALL && done < len; n++) {
			size_t run = len - done < FL__PG_MAX_RUN ? len - done : FL__PG_MAX_RUN;

			q[n] = (struct req){
				.type = type,
				.off = off + done,
				.len = (uint32_t)run,
				.buf = buf ? buf + done : NULL,
				.wdata = wdata ? wdata + done : NULL,
				.holes = holes,
				.hole_base = done / page_size,
				.page_size = page_size,
				.result = -EIO,
			};
			done += run;
		}
		while (nheld < n && nheld < s->nconn) {
			struct rconn *c = take_idle(s);

			if (!c)
				break;
			held[nheld++] = c;
		}
		ncall = nheld < n ? nheld : n;
		for (unsigned int i = 0; i < n; i++)
			q[i].ci = (uint8_t)(i % ncall);
		/* Every request out on every connection that is up, then the answers of each. */
		for (unsigned int k = 0; k < ncall; k++) {
			struct rconn *c = held[k];

			int e;

			check_idle(s, c);
			if (!c->conn)
				continue;
			e = send_pending(c, k, q, n);
			if (e < 0) {
				/* pump makes it again and sends them again */
				c->rx.msg[0] = '\0';
				lost(s, c, e, "");
				drop(c, k, q, n);
			}
		}
		for (unsigned int k = 0; k < ncall; k++) {
			int e = pump(s, held[k], k, q, n, deadline);

			if (e < 0 && !r)
				r = e;
		}
	}
	for (unsigned int k = 0; k < nheld; k++)
		put(s, held[k]);
	return r;
}

static int remote_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		       uint64_t *holes)
{
	struct rstore *s = userdata;

	if (page_size < (1ull << s->page_shift)) {
		fl__err("remote store %s: a read by %zu-byte pages of an object of %llu-byte pages",
			s->url, page_size, 1ull << s->page_shift);
		return -EIO;
	}
	return transfer(s, FL__PG_READ, off, buf, NULL, len, page_size, holes);
}

static int remote_write(void *userdata, uint64_t off, const void *buf, size_t len)
{
	struct rstore *s = userdata;

	return transfer(s, FL__PG_WRITE, off, NULL, buf, len, FL__PG_PAGE, NULL);
}

static void rstore_free(struct rstore *s)
{
	/* No call is in flight: a store is closed once nothing uses it. */
	for (unsigned int i = 0; i < s->nconn; i++) {
		fl__conn_close(s->conns[i].conn);
		fl__pg_rx_fini(&s->conns[i].rx);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cv);
	fl__transport_free(s->transport);
	free(s->peer_name);
	free(s);
}

static void remote_close(void *userdata)
{
	rstore_free(userdata);
}

FL_API int fl_store_remote_open(const char *url, const struct fl_store_remote_opts *opts,
				struct fl_store **ret)
{
	struct fl_store_remote_opts o;
	struct fl_store_ops ops = {
		.sz = sizeof(ops),
		.read = remote_read,
		.close = remote_close,
	};
	struct fl__transport_opts to = { 0 };
	struct fl__conn *conn;
	struct fl__pg_msg m;
	struct rstore *s;
	unsigned int n;
	char why[512];
	bool certs;
	int r;

	if (!url || !ret)
		return fl__einval(__func__, "%s is NULL", !url ? "url" : "ret");
	r = fl__opts_copy(&o, sizeof(o), opts, __func__);
	if (r < 0)
		return r;
	if (o.flags & ~(uint32_t)REMOTE_FLAGS_ALL)
		return fl__einval(__func__, "unknown flags 0x%x",
				  o.flags & ~(uint32_t)REMOTE_FLAGS_ALL);
	if (opts && opts->sz > offsetof(struct fl_store_remote_opts, deadline_ms) +
	    sizeof(o.deadline_ms) && opts->sz < sizeof(o))
		return fl__einval(__func__, "opts sz %zu ends inside the TLS fields", opts->sz);
	certs = o.tls_ca_file || o.tls_cert_file || o.tls_key_file || o.tls_peer_name;
	if (o.key && certs)
		return fl__einval(__func__, "a shared key or certificates, not both");
	if (o.key && (o.key_len < FL__TRANSPORT_PSK_MIN || o.key_len > FL__TRANSPORT_PSK_MAX))
		return fl__einval(__func__, "a key of %zu bytes: %u to %u", o.key_len,
				  FL__TRANSPORT_PSK_MIN, FL__TRANSPORT_PSK_MAX);
	if (!o.key && o.key_len)
		return fl__einval(__func__, "key_len %zu without a key", o.key_len);
	if (certs && !o.tls_ca_file)
		return fl__einval(__func__, "certificates: tls_ca_file checks the server's");
	if (!o.tls_cert_file != !o.tls_key_file)
		return fl__einval(__func__, "tls_cert_file and tls_key_file go together");
	if ((o.key || certs) && (o.flags & FL_STORE_REMOTE_INSECURE))
		return fl__einval(__func__, "FL_STORE_REMOTE_INSECURE with a key or certificates");
	if (!o.key && !certs && !(o.flags & FL_STORE_REMOTE_INSECURE))
		return fl__einval(__func__, "no key and no certificates: plain TCP, which anyone "
				  "on the path can read and change; give a key or certificates, "
				  "or set FL_STORE_REMOTE_INSECURE");
	if (o.connections > MAX_CONNECTIONS)
		return fl__einval(__func__, "connections %u, at most %u", o.connections,
				  MAX_CONNECTIONS);
	if (o.deadline_ms < -1)
		return fl__einval(__func__, "deadline_ms %d (-1 waits forever, 0 is the default)",
				  o.deadline_ms);
	n = o.connections ? o.connections : DEFAULT_CONNECTIONS;
	s = calloc(1, sizeof(*s) + n * sizeof(s->conns[0]));
	if (!s)
		return -ENOMEM;
	s->nconn = n;
	pthread_mutex_init(&s->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	/* The free list: connection 0 (made below) on top, used first. */
	for (unsigned int i = n; i-- > 0;) {
		struct rconn *c = &s->conns[i];

		c->idx = i;
		c->next_id = 1;
		c->backoff = BACKOFF_MIN_MS;
		c->next = s->free;
		s->free = c;
	}
	r = parse_url(url, s);
	if (r < 0)
		goto fail;
	s->flags = o.flags;
	if (o.key) {
		to.mode = FL__TRANSPORT_PSK;
		to.psk = o.key;
		to.psk_len = o.key_len;
	} else if (certs) {
		to.mode = FL__TRANSPORT_X509;
		to.ca_file = o.tls_ca_file;
		to.cert_file = o.tls_cert_file;
		to.key_file = o.tls_key_file;
	} else {
		to.mode = FL__TRANSPORT_PLAIN;
	}
	r = fl__transport_new(&to, &s->transport, why, sizeof(why));
	if (r < 0) {
		fl__err("fl_store_remote_open: %s", why);
		goto fail;
	}
	if (o.tls_peer_name && !(s->peer_name = strdup(o.tls_peer_name))) {
		r = -ENOMEM;
		goto fail;
	}
	s->deadline_ms = o.deadline_ms ? o.deadline_ms : DEFAULT_DEADLINE_MS;
	/* The first connection now: the object's size, or why there is none. */
	r = dial(s, &s->conns[0].rx, s->deadline_ms > 0 && s->deadline_ms < CONNECT_MS ?
		 s->deadline_ms : CONNECT_MS, &m, &conn, why, sizeof(why));
	if (r < 0) {
		fl__err("fl_store_remote_open: %s: %s", url, why);
		goto fail;
	}
	s->size = m.opened.size;
	s->page_shift = m.opened.page_shift;
	if ((o.flags & FL_STORE_REMOTE_WRITABLE) && (m.opened.flags & FL__PG_OBJ_READONLY)) {
		fl__conn_close(conn);
		r = -EROFS;
		fl__err("fl_store_remote_open: %s: the object is read-only", url);
		goto fail;
	}
	if (!s->size) {
		fl__conn_close(conn);
		r = -EINVAL;
		fl__err("fl_store_remote_open: %s: the object is empty", url);
		goto fail;
	}
	s->conns[0].conn = conn;
	s->conns[0].used_ns = fl__now_ns();
	if (o.flags & FL_STORE_REMOTE_WRITABLE)
		ops.write = remote_write;
	r = fl_store_create(&ops, s, FL_STORE_HOLES |
			    ((o.flags & FL_STORE_REMOTE_WRITABLE) ? 0 : FL_STORE_READONLY),
			    s->size, ret);
	if (r < 0)
		goto fail;
	return 0;
fail:
	rstore_free(s);
	return r;
}
