/* SPDX-License-Identifier: MIT */
/* TCP helpers: listen, accept, connect, send and receive with timeouts, and the frame reader. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "sock.h"
#include "transport.h"

#define RX_BUF (64u << 10)
/* Page data (or any phase this long) is received straight into the decoder. */
#define RX_DIRECT (16u << 10)

static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (!n)
		return timeout_ms ? -ETIMEDOUT : -EAGAIN;
	return 0;
}

static int set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int fl__sock_apply(int fd, const struct fl__sock_opts *o)
{
	int one = 1, domain = 0;
	socklen_t len = sizeof(domain);

	if (fd < 0)
		return -EBADF;
	if (!o)
		return 0;
	if (o->flags & ~(uint32_t)(FL__SOCK_NODELAY | FL__SOCK_NONBLOCK) || o->bufsize < 0)
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return -errno;
	if ((o->flags & FL__SOCK_NODELAY) && (domain == AF_INET || domain == AF_INET6) &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	/* The kernel doubles the value and caps it at net.core.[rw]mem_max. */
	if (o->bufsize && (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o->bufsize,
				      sizeof(o->bufsize)) < 0 ||
			   setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->bufsize,
				      sizeof(o->bufsize)) < 0))
		return -errno;
	return set_nonblock(fd, o->flags & FL__SOCK_NONBLOCK);
}

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **ret)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : AI_ADDRCONFIG),
	};
	char service[8];
	int r;

	snprintf(service, sizeof(service), "%u", port);
	r = getaddrinfo(host, service, &hints, ret);
	switch (r) {
	case 0:
		return 0;
	case EAI_SYSTEM:
		return errno ? -errno : -EIO;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_NONAME:
	case EAI_FAIL:
#ifdef EAI_NODATA
	case EAI_NODATA:
#endif
		return -ENXIO;	/* no such host: not an address this host lacks */
	default:
		return -EADDRNOTAVAIL;
	}
}

/* Buffer sizes are set before listen(): they shape the window scale, and accept() copies them. */
static int listen_on(const struct sockaddr *sa, socklen_t len, int family, int bufsize,
		     int *ret_fd)
{
	_fl_cleanup_close_ int fd = -1;
	int one = 1, zero = 0, r;

	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (!r && bufsize)
		r = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize)) ||
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
	/* The wildcard IPv6 address also takes IPv4 connections (as ::ffff:a.b.c.d). */
	if (!r && family == AF_INET6)
		r = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (!r)
		r = bind(fd, sa, len);
	if (!r)
		r = listen(fd, SOMAXCONN);
	if (r)
		return -errno;
	*ret_fd = FL__TAKE_FD(fd);
	return 0;
}

int fl__sock_listen(const char *host, uint16_t port, const struct fl__sock_opts *o,
		    int *ret_fd)
{
	int r, fd = -1, bufsize = o ? o->bufsize : 0;
	struct addrinfo *ai, *a;

	if (!ret_fd || bufsize < 0)
		return -EINVAL;
	if (!host) {
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(port),
					   .sin6_addr = IN6ADDR_ANY_INIT };
		struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(port),
					  .sin_addr.s_addr = htonl(INADDR_ANY) };

		r = listen_on((struct sockaddr *)&s6, sizeof(s6), AF_INET6, bufsize, &fd);
		if (r == -EAFNOSUPPORT || r == -EADDRNOTAVAIL)
			r = listen_on((struct sockaddr *)&s4, sizeof(s4), AF_INET, bufsize, &fd);
	} else {
		r = resolve(host, port, true, &ai);
		if (r < 0)
			return r;
		r = -EADDRNOTAVAIL;
		for (a = ai; a && r < 0; a = a->ai_next)
			r = listen_on(a->ai_addr, a->ai_addrlen, a->ai_family, bufsize,
				      &fd);
		freeaddrinfo(ai);
	}
	if (r < 0)
		return r;
	*ret_fd = fd;
	return 0;
}

int fl__sock_local_port(int fd, uint16_t *ret_port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET)
		*ret_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		*ret_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		return -EAFNOSUPPORT;
	return 0;
}

int fl__sock_accept(int lfd, const struct fl__sock_opts *o, int timeout_ms, int *ret_fd)
{
	_fl_cleanup_close_ int fd = -1;
	int r;

	if (!ret_fd)
		return -EINVAL;
	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0)
			break;
		r = -errno;
		if (r == -EINTR || r == -ECONNABORTED)
			continue;
		if (r != -EAGAIN)
			return r;
		r = wait_fd(lfd, POLLIN, timeout_ms);
		if (r < 0)
			return r;
	}
	r = fl__sock_apply(fd, o ? o : &(struct fl__sock_opts){ 0 });
	if (r < 0)
		return r;
	*ret_fd = FL__TAKE_FD(fd);
	return 0;
}

static int connect_one(const struct addrinfo *a, const struct fl__sock_opts *o, int timeout_ms,
		       int *ret_fd)
{
	_fl_cleanup_close_ int fd = -1;
	int r = 0, err = 0;
	socklen_t len = sizeof(err);

	fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Before connect(): the window scale is fixed by the SYN. */
	if (o && o->bufsize)
		r = fl__sock_apply(fd, &(struct fl__sock_opts){ .flags = FL__SOCK_NONBLOCK,
								.bufsize = o->bufsize });
	if (!r && connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
		r = -errno;
		if (r == -EINPROGRESS) {
			r = wait_fd(fd, POLLOUT, timeout_ms);
			if (r == -EAGAIN)
				r = -ETIMEDOUT;
			if (!r && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				r = -errno;
			if (!r)
				r = -err;
		}
	}
	if (!r)
		r = fl__sock_apply(fd, o ? o : &(struct fl__sock_opts){ 0 });
	if (r < 0)
		return r;
	*ret_fd = FL__TAKE_FD(fd);
	return 0;
}

int fl__sock_connect(const char *host, uint16_t port, const struct fl__sock_opts *o,
		     int timeout_ms, int *ret_fd)
{
	struct addrinfo *ai, *a;
	int r;

	if (!host || !port || !ret_fd)
		return -EINVAL;
	r = resolve(host, port, false, &ai);
	if (r < 0)
		return r;
	r = -EADDRNOTAVAIL;
	for (a = ai; a && r < 0; a = a->ai_next)
		r = connect_one(a, o, timeout_ms, ret_fd);
	freeaddrinfo(ai);
	return r;
}

int fl__sock_send_all(int fd, const void *buf, size_t len, int timeout_ms)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return fl__sock_sendv_all(fd, &iov, 1, timeout_ms);
}

int fl__sock_sendv_all(int fd, struct iovec *iov, size_t iovcnt, int timeout_ms)
{
	while (iovcnt) {
		struct msghdr mh = {
			.msg_iov = iov,
			.msg_iovlen = iovcnt < IOV_MAX ? iovcnt : IOV_MAX,
		};
		ssize_t n;
		int r;

		if (!iov->iov_len) {
			iov++;
			iovcnt--;
			continue;
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			r = -errno;
			if (r == -EINTR)
				continue;
			if (r != -EAGAIN)
				return r;
			r = wait_fd(fd, POLLOUT, timeout_ms);
			if (r < 0)
				return r;
			continue;
		}
		while (iovcnt && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (n) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* recv() once, waiting up to @timeout_ms for something: bytes (> 0), 0 at EOF, or -errno. */
static ssize_t recv_some(int fd, void *buf, size_t len, int timeout_ms)
{
	for (;;) {
		ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
		int r;

		if (n >= 0)
			return n;
		r = -errno;
		if (r == -EINTR)
			continue;
		if (r != -EAGAIN)
			return r;
		r = wait_fd(fd, POLLIN, timeout_ms);
		if (r < 0)
			return r;
	}
}

int fl__sock_recv_exact(int fd, void *buf, size_t len, int timeout_ms)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv_some(fd, p, len, timeout_ms);

		if (n < 0)
			return (int)n;
		if (!n)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fl__wire_send_frame(const struct fl__wire_frame *f, fl__wire_sendv_fn sendv, void *ctx,
			int timeout_ms)
{
	uint8_t small[512];
	void *buf = small;
	struct iovec one;
	int n, r;

	if (!f)
		return -EINVAL;
	if (f->type == FL__WIRE_PAGES) {
		size_t iov_cap = 1 + f->pages.count, iovcnt;
		struct iovec *iov;

		buf = malloc(FL__WIRE_PAGES_META_MAX + iov_cap * sizeof(*iov));
		if (!buf)
			return -ENOMEM;
		iov = (struct iovec *)((uint8_t *)buf + FL__WIRE_PAGES_META_MAX);
		r = fl__wire_encode_pages_iov(f, buf, FL__WIRE_PAGES_META_MAX, iov, iov_cap,
					      &iovcnt);
		if (r >= 0)
			r = sendv(ctx, iov, iovcnt, timeout_ms);
		free(buf);
		return r < 0 ? r : 0;
	}
	n = fl__wire_frame_size(f);
	if (n < 0)
		return n;
	if ((size_t)n > sizeof(small)) {
		buf = malloc((size_t)n);
		if (!buf)
			return -ENOMEM;
	}
	r = fl__wire_encode(f, buf, (size_t)n);
	if (r >= 0) {
		one = (struct iovec){ .iov_base = buf, .iov_len = (size_t)r };
		r = sendv(ctx, &one, 1, timeout_ms);
	}
	if (buf != small)
		free(buf);
	return r < 0 ? r : 0;
}

static int sock_sendv(void *ctx, struct iovec *iov, size_t iovcnt, int timeout_ms)
{
	return fl__sock_sendv_all(*(const int *)ctx, iov, iovcnt, timeout_ms);
}

int fl__sock_send_frame(int fd, const struct fl__wire_frame *f, int timeout_ms)
{
	return fl__wire_send_frame(f, sock_sendv, &fd, timeout_ms);
}

/* ----------------------------------------------------------------- reader */

int fl__wire_reader_init(struct fl__wire_reader *r, int fd, uint32_t dec_flags)
{
	int err;

	*r = (struct fl__wire_reader){ .fd = fd };
	err = fl__wire_dec_init(&r->dec, dec_flags);
	if (err < 0)
		return err;
	r->buf = malloc(RX_BUF);
	if (!r->buf) {
		fl__wire_dec_fini(&r->dec);
		return -ENOMEM;
	}
	return 0;
}

int fl__wire_reader_init_conn(struct fl__wire_reader *r, struct fl__conn *conn,
			      uint32_t dec_flags)
{
	int err;

	if (!conn)
		return -EINVAL;
	err = fl__wire_reader_init(r, -1, dec_flags);
	r->conn = conn;
	return err;
}

static ssize_t reader_recv(struct fl__wire_reader *r, void *buf, size_t len, int timeout_ms)
{
	if (r->conn)
		return fl__conn_recv_some(r->conn, buf, len, timeout_ms);
	return recv_some(r->fd, buf, len, timeout_ms);
}

void fl__wire_reader_fini(struct fl__wire_reader *r)
{
	if (!r)
		return;
	fl__wire_dec_fini(&r->dec);
	free(r->buf);
	r->buf = NULL;
}

int fl__wire_reader_next(struct fl__wire_reader *r, int timeout_ms,
			 const struct fl__wire_frame **ret)
{
	r->msg[0] = 0;
	for (;;) {
		size_t room = 0;
		ssize_t n;
		void *dst;
		int x;

		if (r->head < r->tail) {
			size_t used;

			x = fl__wire_dec_feed(&r->dec, r->buf + r->head, r->tail - r->head, &used);
			r->head += used;
			if (x < 0)
				return x;
			if (x == 1) {
				*ret = fl__wire_dec_frame(&r->dec);
				return 1;
			}
		}
		r->head = r->tail = 0;
		dst = fl__wire_dec_space(&r->dec, &room);
		if (!dst)
			return r->dec.err;	/* NULL only after an error */
		if (room >= RX_DIRECT) {
			n = reader_recv(r, dst, room, timeout_ms);
			if (n > 0) {
				x = fl__wire_dec_commit(&r->dec, (size_t)n);
				if (x < 0)
					return x;
				if (x == 1) {
					*ret = fl__wire_dec_frame(&r->dec);
					return 1;
				}
				continue;
			}
		} else {
			n = reader_recv(r, r->buf, RX_BUF, timeout_ms);
			if (n > 0) {
				r->tail = (size_t)n;
				continue;
			}
		}
		if (n < 0)
			return (int)n;
		if (fl__wire_dec_at_boundary(&r->dec))
			return 0;
		snprintf(r->msg, sizeof(r->msg), "the peer closed the connection inside a frame "
			 "(%zu bytes short)", fl__wire_dec_need(&r->dec));
		return -ECONNRESET;
	}
}

const char *fl__wire_reader_error(const struct fl__wire_reader *r)
{
	const char *m = fl__wire_dec_error(&r->dec);

	if (*m)
		return m;
	if (!*r->msg && r->conn)
		return fl__conn_error(r->conn);
	return r->msg;
}
