/* SPDX-License-Identifier: MIT */
/*
 * The remote store: an object of a page server (`faultline serve`), over the
 * wire protocol's page-server messages (doc/wire-protocol.md, section 13).
 *
 * Several connections, each with a thread that connects (and reconnects
 * with back-off), resends what was pending when its connection broke, and
 * receives the answers. Callers (the pager's handler threads) send their
 * own requests and wait for the answer: a read of one prefetch window is
 * one READ per 2 MiB, spread over the connections, all sent before the
 * first answer is awaited (pipelined). Two locks per connection: @send
 * serialises the bytes going out (a caller may block in a send while the
 * receiver takes answers, so the receiver never needs it except to change
 * the descriptor), @lock guards the pending list and the state.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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

struct rconn;

struct req {
	struct req *next, **pprev;	/* in the connection's pending list */
	struct rconn *c;		/* the connection it goes on */
	uint64_t id;
	uint8_t type;			/* FL__PG_READ or FL__PG_WRITE */
	uint64_t off;
	uint32_t len;
	uint8_t *buf;			/* READ: where the pages go */
	const uint8_t *wdata;		/* WRITE: the caller's bytes */
	uint64_t *holes;		/* READ: the caller's bitmap, or NULL */
	uint64_t hole_base;		/* the caller's page index of this run's first page */
	size_t page_size;		/* the caller's */
	uint64_t sent_gen;		/* the connection it was sent on (0: none yet) */
	bool done;
	int result;
};

struct rstore;

struct rconn {
	struct rstore *s;
	unsigned int idx;
	pthread_mutex_t send;		/* held while bytes go out on conn, and to change conn */
	pthread_mutex_t lock;		/* the rest */
	pthread_cond_t cv;		/* a request done; work pending; stopping */
	struct fl__conn *conn;		/* NULL while down */
	bool up;
	uint64_t gen;			/* connections made so far */
	struct req *pending;		/* sent, or waiting for the connection */
	pthread_t thread;
	bool started;
	struct fl__pg_rx rx;
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
	int stop_fd;
	atomic_bool stopping;
	atomic_uint_fast64_t next_id;
	atomic_uint rr;
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
		r = fl__pg_recv(conn, rx, s->stop_fd, timeout_ms, timeout_ms, &m);
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

static void unlink_req(struct req *q)
{
	*q->pprev = q->next;
	if (q->next)
		q->next->pprev = q->pprev;
	q->next = NULL;
	q->pprev = NULL;
}

static struct req *find_req(struct rconn *c, uint64_t id)
{
	for (struct req *q = c->pending; q; q = q->next)
		if (q->id == id)
			return q;
	return NULL;
}

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

			__atomic_fetch_or(&q->holes[j / 64], 1ull << (j % 64), __ATOMIC_RELAXED);
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

/* One answer: 0, or -EPROTO (with rx.msg) when it answers nothing we asked. */
static int take_answer(struct rconn *c, const struct fl__pg_msg *m)
{
	struct rstore *s = c->s;
	struct req *q;
	char tn[16];

	pthread_mutex_lock(&c->lock);
	q = find_req(c, m->seq);
	if (!q) {
		/* A request whose caller gave up (its deadline passed): nothing waits. */
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (m->type == FL__PG_ERROR) {
		fl__err("remote store %s: [%llu, +%u): %.*s", s->url, (unsigned long long)q->off,
			q->len, (int)m->error.msg_len, m->error.msg);
		q->result = -EIO;
	} else if ((m->type == FL__PG_DATA && q->type == FL__PG_READ) ||
		   (m->type == FL__PG_WRITTEN && q->type == FL__PG_WRITE)) {
		if (m->run.offset != q->off || m->run.len != q->len) {
			pthread_mutex_unlock(&c->lock);
			snprintf(c->rx.msg, sizeof(c->rx.msg), "%s for request %llu is about "
				 "[%llu, +%u), not [%llu, +%u)", fl__pg_type_name(m->type, tn),
				 (unsigned long long)m->seq, (unsigned long long)m->run.offset,
				 m->run.len, (unsigned long long)q->off, q->len);
			return -EPROTO;
		}
		if (m->type == FL__PG_DATA)
			fill_read(q, m);
		q->result = 0;
	} else {
		pthread_mutex_unlock(&c->lock);
		snprintf(c->rx.msg, sizeof(c->rx.msg), "%s answers request %llu",
			 fl__pg_type_name(m->type, tn), (unsigned long long)m->seq);
		return -EPROTO;
	}
	q->done = true;
	unlink_req(q);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
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

/* ---------------------------------------------------------------- the connection thread */

static bool stopping(struct rstore *s)
{
	return atomic_load_explicit(&s->stopping, memory_order_acquire);
}

/* Sleep @ms unless the store stops first. */
static void nap(struct rstore *s, int ms)
{
	struct pollfd p = { .fd = s->stop_fd, .events = POLLIN };

	while (poll(&p, 1, ms) < 0 && errno == EINTR)
		;
}

/* Make @conn the connection's: callers with requests pending send them again (wait_req). */
static void go_up(struct rconn *c, struct fl__conn *conn)
{
	pthread_mutex_lock(&c->send);
	pthread_mutex_lock(&c->lock);
	c->conn = conn;
	c->up = true;
	c->gen++;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->send);
}

static void go_down(struct rconn *c)
{
	fl__conn_shutdown(c->conn);	/* a caller blocked in a send on it returns */
	pthread_mutex_lock(&c->send);
	pthread_mutex_lock(&c->lock);
	fl__conn_close(c->conn);
	c->conn = NULL;
	c->up = false;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->send);
}

static void *conn_thread(void *arg)
{
	struct rconn *c = arg;
	struct rstore *s = c->s;
	uint64_t down_ns = 0, heard_ns = fl__now_ns();
	int backoff = BACKOFF_MIN_MS;
	char why[512] = "";

	for (;;) {
		struct fl__pg_msg m;
		struct fl__conn *conn = NULL;
		int r;

		if (!c->conn) {
			/* Down: connect when a request waits for it. */
			pthread_mutex_lock(&c->lock);
			while (!c->pending && !stopping(s))
				pthread_cond_wait(&c->cv, &c->lock);
			pthread_mutex_unlock(&c->lock);
			if (stopping(s))
				break;
			r = dial(s, &c->rx, CONNECT_MS, &m, &conn, why, sizeof(why));
			if (r >= 0 && (m.opened.size != s->size ||
				       m.opened.page_shift != s->page_shift)) {
				fl__conn_close(conn);
				r = -ESTALE;
				snprintf(why, sizeof(why), "the object is not the one opened: %llu "
					 "bytes now, %llu at open", (unsigned long long)m.opened.size,
					 (unsigned long long)s->size);
			}
			if (r < 0) {
				if (!down_ns)
					down_ns = fl__now_ns();
				fl__debug("remote store %s: connection %u: %s; again in %d ms",
					  s->url, c->idx, why, backoff);
				nap(s, backoff);
				backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
				continue;
			}
			if (down_ns)
				fl__warn("remote store %s: connection %u back after %llu ms", s->url,
					 c->idx, (unsigned long long)((fl__now_ns() - down_ns) /
								     1000000u));
			down_ns = 0;
			backoff = BACKOFF_MIN_MS;
			heard_ns = fl__now_ns();
			go_up(c, conn);
		}
		/*
		 * Between answers: wake every second to see whether requests wait
		 * on a connection that says nothing (a peer gone without a FIN).
		 */
		r = fl__pg_recv(c->conn, &c->rx, s->stop_fd, 1000, IO_MS, &m);
		if (r == -ECANCELED)
			break;
		if (r == -ETIMEDOUT && !c->rx.msg[0]) {
			bool waiting;

			pthread_mutex_lock(&c->lock);
			waiting = c->pending != NULL;
			pthread_mutex_unlock(&c->lock);
			if (!waiting)
				heard_ns = fl__now_ns();
			if (!waiting || fl__now_ns() - heard_ns < STALL_MS * 1000000ull)
				continue;
			snprintf(c->rx.msg, sizeof(c->rx.msg), "no answer for %d ms", STALL_MS);
		}
		if (r > 0)
			heard_ns = fl__now_ns();
		if (r > 0 && m.type == FL__PG_ERROR && (m.flags & FL__PG_F_CLOSE)) {
			/* The server ends the connection (idle, stopping, ...): reconnect when needed. */
			if (m.error.code != FL__PG_ERR_IDLE)
				fl__warn("remote store %s: connection %u: the server closes it: %.*s",
					 s->url, c->idx, (int)m.error.msg_len, m.error.msg);
			go_down(c);
			continue;
		}
		if (r > 0) {
			r = take_answer(c, &m);
			if (!r)
				continue;
		}
		fl__warn("remote store %s: connection %u lost: %s%s%s; reconnecting", s->url,
			 c->idx, r ? strerror(-r) : "the server closed it", c->rx.msg[0] ? ": " : "",
			 c->rx.msg);
		down_ns = fl__now_ns();
		go_down(c);
	}
	return NULL;
}

/* ---------------------------------------------------------------- callers */

static uint64_t deadline_of(const struct rstore *s)
{
	return s->deadline_ms < 0 ? UINT64_MAX : fl__now_ns() + (uint64_t)s->deadline_ms * 1000000u;
}

/* Send @q on its connection if that is up and it was not sent on this one. @c->lock is held. */
static void send_if_needed(struct rconn *c, struct req *q)
{
	struct fl__conn *conn;
	uint64_t gen;
	int r;

	if (!c->up || q->sent_gen == c->gen)
		return;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_lock(&c->send);
	pthread_mutex_lock(&c->lock);
	gen = c->gen;
	conn = c->conn;
	/* Answered meanwhile, sent by nobody else (one caller per request), or down again. */
	if (q->done || !c->up || q->sent_gen == gen) {
		pthread_mutex_unlock(&c->send);
		return;
	}
	q->sent_gen = gen;
	pthread_mutex_unlock(&c->lock);
	r = send_req(conn, q);
	if (r < 0)
		/* The receiver sees the connection break and reconnects; we send again then. */
		fl__conn_shutdown(conn);
	pthread_mutex_unlock(&c->send);
	pthread_mutex_lock(&c->lock);
}

static void submit(struct rstore *s, struct req *q)
{
	struct rconn *c = &s->conns[atomic_fetch_add(&s->rr, 1) % s->nconn];

	q->c = c;
	q->id = atomic_fetch_add(&s->next_id, 1);
	q->sent_gen = 0;
	q->done = false;
	q->result = -EIO;
	pthread_mutex_lock(&c->lock);
	q->next = c->pending;
	q->pprev = &c->pending;
	if (c->pending)
		c->pending->pprev = &q->next;
	c->pending = q;
	/* The connection thread waits for work when down: this is work. */
	pthread_cond_broadcast(&c->cv);
	send_if_needed(c, q);
	pthread_mutex_unlock(&c->lock);
}

/* Wait for @q until @deadline: its result, or -EIO once the deadline passed (logged). */
static int wait_req(struct rstore *s, struct req *q, uint64_t deadline)
{
	struct rconn *c = q->c;
	int r;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		send_if_needed(c, q);
		if (q->done)
			break;
		if (stopping(s)) {
			unlink_req(q);
			q->result = -EIO;
			break;
		}
		if (deadline == UINT64_MAX) {
			pthread_cond_wait(&c->cv, &c->lock);
			continue;
		}
		if (fl__now_ns() >= deadline) {
			unlink_req(q);
			fl__err("remote store %s: %s of [%llu, +%u) not answered within %d ms%s",
				s->url, q->type == FL__PG_READ ? "read" : "write",
				(unsigned long long)q->off, q->len, s->deadline_ms,
				c->up ? "" : " (the server cannot be reached)");
			q->result = -EIO;
			break;
		} else {
			struct timespec ts = fl__abstime_in(CLOCK_MONOTONIC,
							    deadline - fl__now_ns());

			pthread_cond_timedwait(&c->cv, &c->lock, &ts);
		}
	}
	r = q->result;
	pthread_mutex_unlock(&c->lock);
	return r;
}

#define RUNS_PER_CALL 64u	/* requests one call has in flight at once (128 MiB) */

/* A read or a write of [off, off+len), in runs of FL__PG_MAX_RUN, all in flight at once. */
static int transfer(struct rstore *s, uint8_t type, uint64_t off, uint8_t *buf,
		    const uint8_t *wdata, size_t len, size_t page_size, uint64_t *holes)
{
	struct req q[RUNS_PER_CALL];
	uint64_t deadline = deadline_of(s);
	size_t done = 0;
	int r = 0;

	while (done < len) {
		unsigned int n = 0;

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
			};
			submit(s, &q[n]);
			done += run;
		}
		/* Every request is waited for, even after one failed: they point into our stack. */
		for (unsigned int i = 0; i < n; i++) {
			int e = wait_req(s, &q[i], deadline);

			if (e < 0 && !r)
				r = e;
		}
		if (r < 0)
			return r;
	}
	return 0;
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

static void poke(int efd)
{
	uint64_t one = 1;
	ssize_t n = write(efd, &one, sizeof(one));

	(void)n;	/* a full counter has been poked already */
}

static void rstore_free(struct rstore *s)
{
	atomic_store_explicit(&s->stopping, true, memory_order_release);
	if (s->stop_fd >= 0)
		poke(s->stop_fd);
	for (unsigned int i = 0; i < s->nconn; i++) {
		struct rconn *c = &s->conns[i];

		pthread_mutex_lock(&c->lock);
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->lock);
		if (c->started)
			pthread_join(c->thread, NULL);
		fl__conn_close(c->conn);
		fl__pg_rx_fini(&c->rx);
		pthread_mutex_destroy(&c->send);
		pthread_mutex_destroy(&c->lock);
		pthread_cond_destroy(&c->cv);
	}
	if (s->stop_fd >= 0)
		close(s->stop_fd);
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
	s->stop_fd = -1;
	s->nconn = n;
	for (unsigned int i = 0; i < n; i++) {
		struct rconn *c = &s->conns[i];
		pthread_condattr_t ca;

		c->s = s;
		c->idx = i;
		pthread_mutex_init(&c->send, NULL);
		pthread_mutex_init(&c->lock, NULL);
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&c->cv, &ca);
		pthread_condattr_destroy(&ca);
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
	atomic_init(&s->next_id, 1);
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		r = -errno;
		goto fail;
	}
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
	s->conns[0].up = true;
	s->conns[0].gen = 1;
	for (unsigned int i = 0; i < n; i++) {
		r = -pthread_create(&s->conns[i].thread, NULL, conn_thread, &s->conns[i]);
		if (r < 0)
			goto fail;
		s->conns[i].started = true;
	}
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
