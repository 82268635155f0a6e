/* SPDX-License-Identifier: MIT */
/*
 * The page server: named objects under one directory, served page runs at a
 * time over the wire protocol's page-server messages (doc/wire-protocol.md,
 * section 13).
 *
 * One thread per connection, at most max_clients of them. Why not an event
 * loop: a request's work is blocking disk I/O (pread, pwrite, a snapshot's
 * zstd chunk), which a single loop would have to push to a pool of threads
 * anyway; a blocking thread per connection keeps each client's requests
 * independent of every other client's, keeps the code a straight line (also
 * under TLS, whose library is simplest with a blocking socket), and its
 * memory is bounded: a thread's small stack, plus the receive buffer and the
 * page buffer, each at most one run (2 MiB) and allocated at the first
 * message that needs them. A silent connection costs a stack and is closed
 * after the idle timeout; past max_clients a connection is closed at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "net/sock.h"
#include "net/transport.h"
#include "remote/pgio.h"
#include "remote/server.h"
#include "snapshot/format.h"
#include "util.h"

#define DEFAULT_MAX_CLIENTS 256u
#define DEFAULT_IDLE_MS 60000
#define DEFAULT_IO_MS 10000
#define THREAD_STACK (256u << 10)

struct fl__pgsrv {
	struct fl__transport *transport;	/* borrowed */
	int lfd, dirfd, stop_fd;
	uint16_t port;
	unsigned int max_clients;
	int idle_ms, io_ms;
	pthread_mutex_t lock;
	pthread_cond_t gone;		/* a connection thread ended */
	unsigned int live;		/* connection threads running */
	struct conn *done;		/* connections whose thread ended, to join (reap) */
	struct fl__pgsrv_stats st;	/* under lock */
};

/* One client's connection and the object it opened. */
struct conn {
	struct fl__pgsrv *s;
	struct conn *next;		/* in the server's done list */
	pthread_t tid;
	int fd;				/* the socket, until conn takes it */
	struct fl__conn *conn;		/* after the TLS handshake (or plain TCP) */
	int obj_fd;			/* a plain file, or -1 */
	struct fl_snapshot *snap;	/* a snapshot file, or NULL */
	uint64_t size;			/* the object's bytes */
	uint64_t file_size;		/* plain file: its size at open (below it, short reads fail) */
	unsigned int page_shift;
	bool readonly;
	char name[FL__PG_MAX_NAME + 1];
	char peer[64];
	struct fl__pg_rx rx;
	uint8_t *pages;			/* FL__PG_MAX_RUN, for DATA */
	uint8_t holes[FL__PG_HOLE_WORDS * 8];
};

static void count(struct fl__pgsrv *s, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&s->lock);
	*field += n;
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- objects */

/* Why @name may not be opened under the directory, or NULL. */
static const char *name_refused(const char *name)
{
	const char *c = name;

	if (name[0] == '/')
		return "an absolute name";
	for (;;) {
		size_t n = strcspn(c, "/");

		if (n == 2 && c[0] == '.' && c[1] == '.')
			return "a name with a '..' component";
		if (!c[n])
			break;
		c += n + 1;
	}
	return NULL;
}

static int open_beneath(int dirfd, const char *name, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY),
		/* Symbolic links are followed only while they stay under the directory. */
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	do
		fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : (int)fd;
}

static bool is_snapshot(int fd)
{
	char head[sizeof(FL__SNAP_MAGIC) - 1];

	return pread(fd, head, sizeof(head), 0) == (ssize_t)sizeof(head) &&
	       !memcmp(head, FL__SNAP_MAGIC, sizeof(head));
}

/* Open the object of an OPEN: 0, or the ERROR code with @why filled. */
static uint32_t object_open(struct conn *c, const struct fl__pg_msg *m, char *why, size_t cap)
{
	bool write = m->open.flags & FL__PG_OPEN_WRITE;
	const char *refused;
	struct stat st;
	int fd;

	memcpy(c->name, m->open.name, m->open.name_len);
	c->name[m->open.name_len] = '\0';
	refused = name_refused(c->name);
	if (refused) {
		snprintf(why, cap, "object \"%s\": %s is refused", c->name, refused);
		return FL__PG_ERR_NAME;
	}
	fd = open_beneath(c->s->dirfd, c->name, write ? O_RDWR : O_RDONLY);
	if (fd == -EXDEV || fd == -ELOOP) {
		snprintf(why, cap, "object \"%s\": the name leads out of the served directory",
			 c->name);
		return FL__PG_ERR_NAME;
	}
	if (fd < 0) {
		snprintf(why, cap, "object \"%s\": %s", c->name, strerror(-fd));
		return fd == -EROFS || (write && fd == -EACCES) ? FL__PG_ERR_ROFS
		       : fl__pg_error_from_errno(fd);
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(why, cap, "object \"%s\": not a regular file", c->name);
		return FL__PG_ERR_NAME;
	}
	if (is_snapshot(fd)) {
		struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };
		struct fl_snapshot_open_opts so = { .sz = sizeof(so) };
		char path[64];
		int r;

		if (write) {
			close(fd);
			snprintf(why, cap, "object \"%s\": a snapshot file is read-only", c->name);
			return FL__PG_ERR_ROFS;
		}
		/* Through this descriptor: the file checked above, whatever the name means now. */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		r = fl_snapshot_open(path, &so, &c->snap);
		close(fd);
		if (r < 0) {
			snprintf(why, cap, "object \"%s\": not a snapshot this server can read (%s%s)",
				 c->name, strerror(-r), r == -ENOENT ? ": an incremental snapshot's "
				 "parents are not served" : "");
			return FL__PG_ERR_IO;
		}
		r = fl_snapshot_region_info(c->snap, 0, &ri);
		if (r < 0 || ri.page_size < 4096 || ri.page_size > (2u << 20)) {
			snprintf(why, cap, "object \"%s\": its first region cannot be served",
				 c->name);
			return FL__PG_ERR_IO;
		}
		c->size = ri.len;
		c->page_shift = (unsigned int)__builtin_ctzll(ri.page_size);
		c->readonly = true;
		return 0;
	}
	c->obj_fd = fd;
	c->file_size = (uint64_t)st.st_size;
	c->size = ((uint64_t)st.st_size + FL__PG_PAGE - 1) / FL__PG_PAGE * FL__PG_PAGE;
	c->page_shift = 12;
	c->readonly = !write;
	return 0;
}

static void object_close(struct conn *c)
{
	if (c->obj_fd >= 0)
		close(c->obj_fd);
	c->obj_fd = -1;
	fl_snapshot_close(c->snap);
	c->snap = NULL;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;

	for (size_t i = 0; i < n / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* Read [off, off+len) of a plain file into @buf: 0 or -EIO (never zeros for data that is gone). */
static int file_read(struct conn *c, uint64_t off, uint8_t *buf, uint32_t len)
{
	uint32_t done = 0;

	while (done < len) {
		ssize_t n = pread(c->obj_fd, buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -EIO;
		if (!n) {
			/* Past the end at open: the page's tail. Below it: the file shrank. */
			if (off + done < c->file_size)
				return -EIO;
			memset(buf + done, 0, len - done);
			break;
		}
		done += (uint32_t)n;
	}
	return 0;
}

static int file_write(struct conn *c, uint64_t off, const uint8_t *buf, uint32_t len)
{
	uint32_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(c->obj_fd, buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (uint32_t)n;
	}
	return 0;
}

/* ---------------------------------------------------------------- requests */

/* Check a READ or WRITE's run against the object: 0 or an ERROR code, with @why. */
static uint32_t run_refused(struct conn *c, const struct fl__pg_msg *m, char *why, size_t cap)
{
	uint64_t ps = 1ull << c->page_shift;
	char tn[16];

	if (m->run.offset > c->size || m->run.len > c->size - m->run.offset) {
		snprintf(why, cap, "%s of [%llu, +%u) past the end of \"%s\" (%llu bytes)",
			 fl__pg_type_name(m->type, tn), (unsigned long long)m->run.offset,
			 m->run.len, c->name, (unsigned long long)c->size);
		return FL__PG_ERR_RANGE;
	}
	if (m->run.offset % ps || m->run.len % ps) {
		snprintf(why, cap, "%s of [%llu, +%u) not aligned to the object's %llu-byte pages",
			 fl__pg_type_name(m->type, tn), (unsigned long long)m->run.offset,
			 m->run.len, (unsigned long long)ps);
		return FL__PG_ERR_RANGE;
	}
	return 0;
}

/* Answer one request. Returns 0, or -errno when the connection is done for. */
static int serve_read(struct conn *c, const struct fl__pg_msg *m)
{
	uint32_t pages = m->run.len / FL__PG_PAGE, data = 0, code;
	struct fl__pg_msg out;
	char why[320];
	int r;

	code = run_refused(c, m, why, sizeof(why));
	if (code)
		return fl__pg_send_error(c->conn, m->seq, 0, code, c->s->io_ms, "%s", why);
	if (!c->pages) {
		c->pages = malloc(FL__PG_MAX_RUN);
		if (!c->pages)
			return fl__pg_send_error(c->conn, m->seq, 0, FL__PG_ERR_LOCAL, c->s->io_ms,
						 "out of memory");
	}
	memset(c->holes, 0, sizeof(c->holes));
	if (c->snap) {
		uint64_t ps = 1ull << c->page_shift, sh[FL__PG_HOLE_WORDS] = { 0 };

		r = fl_snapshot_read(c->snap, 0, m->run.offset, c->pages, m->run.len, ps, sh);
		/* The snapshot's holes are per its page; ours per 4096 bytes. */
		for (uint32_t i = 0; !r && i < pages; i++) {
			uint64_t p = (uint64_t)i * FL__PG_PAGE / ps;

			if (sh[p / 64] >> (p % 64) & 1)
				c->holes[i / 8] |= (uint8_t)(1u << (i % 8));
		}
	} else {
		r = file_read(c, m->run.offset, c->pages, m->run.len);
	}
	if (r < 0) {
		count(c->s, &c->s->st.errors, 1);
		return fl__pg_send_error(c->conn, m->seq, 0, FL__PG_ERR_IO, c->s->io_ms,
					 "reading [%llu, +%u) of \"%s\": %s",
					 (unsigned long long)m->run.offset, m->run.len, c->name,
					 strerror(-r));
	}
	/* Zero pages travel as hole bits; the others are packed in order. */
	for (uint32_t i = 0; i < pages; i++) {
		uint8_t *p = c->pages + (size_t)i * FL__PG_PAGE;

		if (fl__pg_hole(c->holes, i))
			continue;
		if (all_zero(p, FL__PG_PAGE)) {
			c->holes[i / 8] |= (uint8_t)(1u << (i % 8));
			continue;
		}
		if (data != i)
			memmove(c->pages + (size_t)data * FL__PG_PAGE, p, FL__PG_PAGE);
		data++;
	}
	out = (struct fl__pg_msg){
		.type = FL__PG_DATA,
		.seq = m->seq,
		.run = {
			.offset = m->run.offset,
			.len = m->run.len,
			.holes = c->holes,
			.data = c->pages,
			.data_len = data * FL__PG_PAGE,
		},
	};
	count(c->s, &c->s->st.pages_read, pages);
	return fl__pg_send(c->conn, &out, c->s->io_ms);
}

static int serve_write(struct conn *c, const struct fl__pg_msg *m)
{
	struct fl__pg_msg out;
	char why[320];
	uint32_t code;
	int r;

	if (c->readonly)
		return fl__pg_send_error(c->conn, m->seq, 0, FL__PG_ERR_ROFS, c->s->io_ms,
					 "\"%s\" is %s", c->name, c->snap ? "a snapshot "
					 "(read-only)" : "open read-only (OPEN without WRITE)");
	code = run_refused(c, m, why, sizeof(why));
	if (code)
		return fl__pg_send_error(c->conn, m->seq, 0, code, c->s->io_ms, "%s", why);
	r = file_write(c, m->run.offset, m->run.data, m->run.len);
	if (r < 0) {
		count(c->s, &c->s->st.errors, 1);
		return fl__pg_send_error(c->conn, m->seq, 0, fl__pg_error_from_errno(r),
					 c->s->io_ms, "writing [%llu, +%u) of \"%s\": %s",
					 (unsigned long long)m->run.offset, m->run.len, c->name,
					 strerror(-r));
	}
	out = (struct fl__pg_msg){
		.type = FL__PG_WRITTEN,
		.seq = m->seq,
		.run = { .offset = m->run.offset, .len = m->run.len },
	};
	count(c->s, &c->s->st.pages_written, m->run.len / FL__PG_PAGE);
	return fl__pg_send(c->conn, &out, c->s->io_ms);
}

/* The first message: OPEN. 0 once OPENED is sent, else -errno (the connection closes). */
static int serve_open(struct conn *c)
{
	struct fl__pg_msg m, out;
	char why[400], tn[16];
	uint32_t code;
	int r;

	r = fl__pg_recv(c->conn, &c->rx, c->s->stop_fd, c->s->idle_ms, c->s->io_ms, &m);
	if (r <= 0)
		return r ? r : -ECONNRESET;
	if (m.type != FL__PG_OPEN) {
		snprintf(c->rx.msg, sizeof(c->rx.msg), "%s before OPEN",
			 fl__pg_type_name(m.type, tn));
		return -EPROTO;
	}
	code = object_open(c, &m, why, sizeof(why));
	if (code) {
		fl__info("serve: %s: %s", c->peer, why);
		fl__pg_send_error(c->conn, m.seq, FL__PG_F_CLOSE, code, c->s->io_ms, "%s", why);
		return -ENOENT;
	}
	count(c->s, &c->s->st.opens, 1);
	out = (struct fl__pg_msg){
		.type = FL__PG_OPENED,
		.seq = m.seq,
		.opened = {
			.size = c->size,
			.flags = (c->readonly ? FL__PG_OBJ_READONLY : 0) |
				 (c->snap ? FL__PG_OBJ_SNAPSHOT : 0),
			.page_shift = (uint8_t)c->page_shift,
		},
	};
	return fl__pg_send(c->conn, &out, c->s->io_ms);
}

/*
 * Close after a last message: stop sending, then read and drop what the
 * client still sends (at most 1 MiB, for at most 200 ms), so that closing
 * with unread bytes does not reset the connection and destroy our last
 * message (the ERROR saying why) before the client reads it. One second at
 * most in all, however the client trickles.
 */
static void linger_close(struct fl__conn *conn)
{
	char sink[4096];
	uint64_t end = fl__now_ns() + 1000000000u;
	size_t dropped = 0;
	int fd = fl__conn_fd(conn);
	struct pollfd p = { .fd = fd, .events = POLLIN };

	shutdown(fd, SHUT_WR);
	/* The bytes are dropped unread: their TLS records need no decrypting. */
	while (dropped < (1u << 20) && fl__now_ns() < end && poll(&p, 1, 200) == 1) {
		ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN)))
			break;
		if (n > 0)
			dropped += (size_t)n;
	}
	fl__conn_close(conn);
}

/* Serve one connection; returns once it is to be closed (with linger_close). */
static void conn_run(struct conn *c)
{
	struct fl__pgsrv *s = c->s;
	bool stopping = false;
	struct fl__pg_msg m;
	char tn[16];
	int r;

	r = serve_open(c);
	while (r >= 0) {
		/*
		 * Once the server stops, requests already sent are answered (no
		 * wait for more than what has arrived), then SHUTDOWN.
		 */
		r = fl__pg_recv(c->conn, &c->rx, stopping ? -1 : s->stop_fd,
				stopping ? 0 : s->idle_ms, s->io_ms, &m);
		if (r == -ECANCELED) {
			stopping = true;
			r = 0;
			continue;
		}
		if (r == -ETIMEDOUT && stopping && !c->rx.msg[0]) {
			r = -ECANCELED;
			break;
		}
		if (r <= 0)
			break;
		if (m.type == FL__PG_READ) {
			count(s, &s->st.reads, 1);
			r = serve_read(c, &m);
		} else if (m.type == FL__PG_WRITE) {
			count(s, &s->st.writes, 1);
			r = serve_write(c, &m);
		} else {
			snprintf(c->rx.msg, sizeof(c->rx.msg), "%s from a client",
				 fl__pg_type_name(m.type, tn));
			r = -EPROTO;
		}
	}
	if (r == -ECANCELED) {
		fl__pg_send_error(c->conn, 0, FL__PG_F_CLOSE, FL__PG_ERR_SHUTDOWN, s->io_ms,
				  "the server is stopping");
	} else if (r == -ETIMEDOUT && !c->rx.msg[0]) {
		count(s, &s->st.closed_idle, 1);
		fl__pg_send_error(c->conn, 0, FL__PG_F_CLOSE, FL__PG_ERR_IDLE, s->io_ms,
				  "no request for %d ms", s->idle_ms);
	} else if (r == -EPROTO || r == -EBADMSG || r == -EPROTONOSUPPORT) {
		count(s, &s->st.closed_malformed, 1);
		fl__info("serve: %s: closing: %s", c->peer, c->rx.msg);
		fl__pg_send_error(c->conn, 0, FL__PG_F_CLOSE,
				  r == -EBADMSG ? FL__PG_ERR_CHECKSUM
				  : r == -EPROTONOSUPPORT ? FL__PG_ERR_VERSION : FL__PG_ERR_PROTO,
				  s->io_ms, "%s", c->rx.msg);
	} else if (r < 0 && r != -ENOENT) {
		fl__debug("serve: %s: closing: %s%s%s", c->peer, strerror(-r),
			  c->rx.msg[0] ? ": " : "", c->rx.msg);
	}
}

static void *conn_thread(void *arg)
{
	struct conn *c = arg;
	struct fl__pgsrv *s = c->s;

	char why[256];
	int r;

	/* The handshake here, not in the accept loop: a stalled client holds up nobody. */
	r = fl__conn_open(s->transport, c->fd, FL__CONN_SERVER, NULL, s->io_ms, &c->conn, why,
			  sizeof(why));
	if (r < 0) {
		fl__info("serve: %s: no session: %s", c->peer, why);
		count(s, &s->st.closed_handshake, 1);
	} else {
		conn_run(c);
		linger_close(c->conn);
	}
	object_close(c);
	fl__pg_rx_fini(&c->rx);
	free(c->pages);
	c->pages = NULL;
	/*
	 * Joined, not detached: the TLS library's per-thread cleanup runs at
	 * the thread's exit, which must come before the process tears the
	 * library down (run() and destroy() join every thread).
	 */
	pthread_mutex_lock(&s->lock);
	c->next = s->done;
	s->done = c;
	s->live--;
	pthread_cond_broadcast(&s->gone);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Join the threads that ended, and free their connections. */
static void reap(struct fl__pgsrv *s)
{
	struct conn *c;

	pthread_mutex_lock(&s->lock);
	c = s->done;
	s->done = NULL;
	pthread_mutex_unlock(&s->lock);
	while (c) {
		struct conn *next = c->next;

		pthread_join(c->tid, NULL);
		free(c);
		c = next;
	}
}

/* Wait until no connection thread runs, and join them all. */
static void wait_all(struct fl__pgsrv *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->live)
		pthread_cond_wait(&s->gone, &s->lock);
	pthread_mutex_unlock(&s->lock);
	reap(s);
}

/* ---------------------------------------------------------------- server */

int fl__pgsrv_create(const struct fl__pgsrv_opts *o, struct fl__pgsrv **ret)
{
	struct fl__sock_opts so = { .flags = FL__SOCK_NODELAY };
	struct fl__pgsrv *s;
	int r;

	if (!o || !o->dir || !o->transport || !ret)
		return fl__einval(__func__, "%s is NULL", !o ? "o" : !ret ? "ret" : !o->dir ? "o->dir"
				  : "o->transport");
	if (o->idle_timeout_ms < 0 || o->io_timeout_ms < 0)
		return fl__einval(__func__, "negative timeout");
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->lfd = s->stop_fd = -1;
	s->transport = o->transport;
	s->max_clients = o->max_clients ? o->max_clients : DEFAULT_MAX_CLIENTS;
	s->idle_ms = o->idle_timeout_ms ? o->idle_timeout_ms : DEFAULT_IDLE_MS;
	s->io_ms = o->io_timeout_ms ? o->io_timeout_ms : DEFAULT_IO_MS;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->gone, NULL);
	s->dirfd = open(o->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		r = -errno;
		fl__err("serve: directory %s: %s", o->dir, strerror(-r));
		goto fail;
	}
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		r = -errno;
		goto fail;
	}
	r = fl__sock_listen(o->host, o->port, &so, &s->lfd);
	if (r < 0) {
		fl__err("serve: listening on %s:%u: %s", o->host ? o->host : "*", o->port,
			strerror(-r));
		goto fail;
	}
	r = fl__sock_local_port(s->lfd, &s->port);
	if (r < 0)
		goto fail;
	*ret = s;
	return 0;
fail:
	fl__pgsrv_destroy(s);
	return r;
}

uint16_t fl__pgsrv_port(const struct fl__pgsrv *s)
{
	return s->port;
}

void fl__pgsrv_stop(struct fl__pgsrv *s)
{
	uint64_t one = 1;
	ssize_t n = write(s->stop_fd, &one, sizeof(one));

	(void)n;	/* the counter only grows: a full one has been written already */
}

static void peer_name(int fd, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[48] = "?";
	unsigned int port = 0;

	if (!getpeername(fd, (struct sockaddr *)&ss, &len)) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(buf, cap, "%s:%u", host, port);
}

static void accept_one(struct fl__pgsrv *s)
{
	struct fl__sock_opts so = { .flags = FL__SOCK_NODELAY };
	pthread_attr_t attr;
	struct conn *c;
	bool full;
	int fd, r;

	r = fl__sock_accept(s->lfd, &so, 0, &fd);
	if (r < 0) {
		if (r != -EAGAIN && r != -ETIMEDOUT && r != -ECONNABORTED && r != -EINTR)
			fl__warn("serve: accept: %s", strerror(-r));
		return;
	}
	pthread_mutex_lock(&s->lock);
	full = s->live >= s->max_clients;
	if (full)
		s->st.refused_busy++;
	else
		s->st.connections++;
	pthread_mutex_unlock(&s->lock);
	if (full) {
		/* Closed at once: a TLS handshake to say so would cost a thread. */
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	c->obj_fd = -1;
	peer_name(fd, c->peer, sizeof(c->peer));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	pthread_mutex_lock(&s->lock);
	s->live++;
	pthread_mutex_unlock(&s->lock);
	r = pthread_create(&c->tid, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (r) {
		fl__warn("serve: no thread for %s: %s", c->peer, strerror(r));
		pthread_mutex_lock(&s->lock);
		s->live--;
		pthread_mutex_unlock(&s->lock);
		close(fd);
		free(c);
	}
}

int fl__pgsrv_run(struct fl__pgsrv *s)
{
	struct pollfd p[2] = {
		{ .fd = s->lfd, .events = POLLIN },
		{ .fd = s->stop_fd, .events = POLLIN },
	};

	for (;;) {
		/* Wake every second to join the threads of closed connections. */
		int n = poll(p, 2, 1000);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		reap(s);
		if (p[1].revents)
			break;
		if (p[0].revents)
			accept_one(s);
	}
	/* Stop: no new clients; each connection answers what it has, then closes. */
	close(s->lfd);
	s->lfd = -1;
	wait_all(s);
	return 0;
}

void fl__pgsrv_stats(struct fl__pgsrv *s, struct fl__pgsrv_stats *ret)
{
	pthread_mutex_lock(&s->lock);
	*ret = s->st;
	pthread_mutex_unlock(&s->lock);
}

void fl__pgsrv_destroy(struct fl__pgsrv *s)
{
	if (!s)
		return;
	/* Threads still running (run() never called or failed) are waited for. */
	if (s->stop_fd >= 0)
		fl__pgsrv_stop(s);
	wait_all(s);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->gone);
	free(s);
}
