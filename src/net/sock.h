/* SPDX-License-Identifier: MIT */
/* TCP helpers and the frame reader the migration layer builds on (never installed). */
#ifndef FL_NET_SOCK_H
#define FL_NET_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "wire.h"

/*
 * Every fd made here is close-on-exec. Timeouts are in milliseconds of no
 * progress (a slow but moving transfer never times out; a stalled one
 * does), -1 waits forever. Sends use MSG_NOSIGNAL: a closed peer gives -EPIPE,
 * never SIGPIPE. All calls work on blocking and non-blocking sockets alike.
 * Thread safety: any thread; one sender and one receiver per socket at a time.
 */

enum {
	FL__SOCK_NODELAY = 1u << 0,	/* TCP_NODELAY, for the urgent channel (not on unix) */
	FL__SOCK_NONBLOCK = 1u << 1,	/* leave the fd O_NONBLOCK */
};

struct fl__sock_opts {
	uint32_t flags;			/* FL__SOCK_* */
	int bufsize;			/* SO_SNDBUF and SO_RCVBUF in bytes; 0: the kernel's */
};

/*
 * A listening TCP socket on @host (NULL: every address, IPv6 and IPv4 when
 * the host has IPv6) and @port (0: any, see fl__sock_local_port). It is
 * non-blocking (poll it, or use fl__sock_accept); accepted sockets get @o's
 * options. Errors: -errno of socket/bind/listen, -ENXIO if @host
 * names no host (-EAGAIN if the resolver failed for now).
 */
int fl__sock_listen(const char *host, uint16_t port, const struct fl__sock_opts *o,
		    int *ret_fd);
/* The local port of a bound socket. */
int fl__sock_local_port(int fd, uint16_t *ret_port);
/* Accept one connection within @timeout_ms: -ETIMEDOUT if none came. */
int fl__sock_accept(int lfd, const struct fl__sock_opts *o, int timeout_ms, int *ret_fd);
/*
 * Connect to @host:@port, trying each address it resolves to, each within
 * @timeout_ms. Errors: the last address's -errno (-ECONNREFUSED,
 * -ETIMEDOUT...), -ENXIO if @host names no host.
 */
int fl__sock_connect(const char *host, uint16_t port, const struct fl__sock_opts *o,
		     int timeout_ms, int *ret_fd);
/* Apply @o to a socket made elsewhere (a socketpair, an inherited fd). */
int fl__sock_apply(int fd, const struct fl__sock_opts *o);

/* Send all @len bytes, or fail: -ETIMEDOUT, -EPIPE, -ECONNRESET... */
int fl__sock_send_all(int fd, const void *buf, size_t len, int timeout_ms);
/* Send every byte of @iov[@iovcnt] (any count: more than IOV_MAX is split). @iov is consumed. */
int fl__sock_sendv_all(int fd, struct iovec *iov, size_t iovcnt, int timeout_ms);
/* Receive exactly @len bytes: -ECONNRESET if the peer closes first, -ETIMEDOUT. */
int fl__sock_recv_exact(int fd, void *buf, size_t len, int timeout_ms);

/* Send every byte of @iov[@iovcnt] (consumed) on @ctx, as fl__sock_sendv_all does. */
typedef int (*fl__wire_sendv_fn)(void *ctx, struct iovec *iov, size_t iovcnt, int timeout_ms);
/*
 * Encode @f and send it with @sendv on @ctx: PAGES go out with one sendv
 * from the pages' own memory, every other frame as one buffer. 0 or what
 * the encoder or @sendv failed with (-ENOMEM, -EINVAL: @f is NULL).
 */
int fl__wire_send_frame(const struct fl__wire_frame *f, fl__wire_sendv_fn sendv, void *ctx,
			int timeout_ms);
/* fl__wire_send_frame on a socket. */
int fl__sock_send_frame(int fd, const struct fl__wire_frame *f, int timeout_ms);

/*
 * Frames from a socket: small frames are read many at a time through a
 * 64 KiB buffer; page data is received straight into the decoder (no copy).
 */
struct fl__conn;

struct fl__wire_reader {
	int fd;				/* not owned; -1 when reading from conn */
	struct fl__conn *conn;		/* not owned; NULL: read the fd */
	struct fl__wire_dec dec;
	uint8_t *buf;
	size_t head, tail;		/* unread bytes are buf[head, tail) */
	char msg[96];
};

int fl__wire_reader_init(struct fl__wire_reader *r, int fd, uint32_t dec_flags);
/* The same over a transport connection (transport.h): TLS or plain TCP. */
int fl__wire_reader_init_conn(struct fl__wire_reader *r, struct fl__conn *conn,
			      uint32_t dec_flags);
void fl__wire_reader_fini(struct fl__wire_reader *r);
/*
 * The next frame: 1 and *@ret (valid until the next call), 0 if the peer
 * closed the connection between frames, or -errno: the decoder's errors,
 * -ECONNRESET if it closed inside a frame, -ETIMEDOUT; with @timeout_ms 0,
 * -EAGAIN when no whole frame is there yet (what did arrive is kept).
 */
int fl__wire_reader_next(struct fl__wire_reader *r, int timeout_ms,
			 const struct fl__wire_frame **ret);
/* What went wrong, as a sentence ("" if nothing did). */
const char *fl__wire_reader_error(const struct fl__wire_reader *r);

#endif /* FL_NET_SOCK_H */
