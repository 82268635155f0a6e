/* SPDX-License-Identifier: MIT */
/* Page-server messages over a connected socket: send one, receive one. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "net/transport.h"
#include "remote/pgio.h"

void fl__pg_rx_fini(struct fl__pg_rx *rx)
{
	free(rx->buf);
	rx->buf = NULL;
	rx->cap = 0;
}

/*
 * Wait until @c has bytes (in the TLS layer, or on its socket): 0; -ETIMEDOUT
 * after @ms (-1: never); -ECANCELED if @stop_fd (>= 0) is readable first.
 */
static int wait_in(struct fl__conn *c, int stop_fd, int ms)
{
	struct pollfd p[2] = {
		{ .fd = fl__conn_fd(c), .events = POLLIN },
		{ .fd = stop_fd, .events = POLLIN },
	};
	int n;

	if (fl__conn_pending(c))
		return 0;
	for (;;) {
		n = poll(p, stop_fd >= 0 ? 2 : 1, ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -ETIMEDOUT;
		if (p[0].revents)
			return 0;
		return -ECANCELED;
	}
}

/*
 * Receive exactly @len bytes; @first: no byte of the message is in yet (then
 * a close is a clean end, 0, and @stop_fd and @idle_ms apply).
 */
static int recv_exact(struct fl__conn *c, uint8_t *p, size_t len, int stop_fd, int idle_ms,
		      int io_ms, bool first, bool *ret_part)
{
	while (len) {
		/* What is there first (no poll when the bytes wait already). */
		ssize_t n = fl__conn_recv_some(c, p, len, 0);
		int r;

		if (n == -EAGAIN) {
			/* Nothing yet (or a TLS record not yet whole): wait, then again. */
			r = wait_in(c, first ? stop_fd : -1, first ? idle_ms : io_ms);
			if (r < 0)
				return r;
			continue;
		}
		if (n < 0)
			return (int)n;
		if (!n)
			return first ? 0 : -ECONNRESET;
		p += n;
		len -= (size_t)n;
		first = false;
		if (ret_part)
			*ret_part = true;
	}
	return 1;
}

/* Say why a message stopped half-way (a stall, a close inside it, the connection's failure). */
static int stalled(struct fl__pg_rx *rx, struct fl__conn *c, int r, const char *where)
{
	if (r == -ECONNRESET)
		snprintf(rx->msg, sizeof(rx->msg), "the peer closed the connection inside a "
			 "message's %s", where);
	else if (r == -ETIMEDOUT)
		snprintf(rx->msg, sizeof(rx->msg), "the peer stalled inside a message's %s", where);
	else if (fl__conn_error(c)[0])
		snprintf(rx->msg, sizeof(rx->msg), "%s", fl__conn_error(c));
	return r;
}

int fl__pg_recv(struct fl__conn *c, struct fl__pg_rx *rx, int stop_fd, int idle_ms, int io_ms,
		struct fl__pg_msg *m)
{
	struct fl__pg_hdr h;
	bool part = false;
	int r;

	rx->msg[0] = '\0';
	r = recv_exact(c, rx->hdr, FL__PG_HDR_LEN, stop_fd, idle_ms, io_ms, true, &part);
	if (r <= 0)
		return r == -ETIMEDOUT && !part ? r : r == -ECANCELED || !r ? r
						     : stalled(rx, c, r, "header");
	r = fl__pg_parse_header(rx->hdr, FL__PG_HDR_LEN, false, &h, rx->msg, sizeof(rx->msg));
	if (r > 0) {
		/* A longer header (a later revision's extension): its rest, then check it all. */
		size_t more = (size_t)r;

		r = recv_exact(c, rx->hdr + FL__PG_HDR_LEN, more, -1, io_ms, io_ms, false, NULL);
		if (r < 0)
			return stalled(rx, c, r, "header");
		r = fl__pg_parse_header(rx->hdr, FL__PG_HDR_LEN + more, false, &h, rx->msg,
					sizeof(rx->msg));
	}
	if (r < 0)
		return r;
	if (h.payload_len > rx->cap) {
		/* Bounded by the type's limit, checked with the header. */
		size_t cap = h.payload_len < 65536 ? 65536 : FL__PG_MAX_PAYLOAD;
		uint8_t *b = malloc(cap);

		if (!b)
			return -ENOMEM;
		free(rx->buf);
		rx->buf = b;
		rx->cap = cap;
	}
	if (h.payload_len) {
		r = recv_exact(c, rx->buf, h.payload_len, -1, io_ms, io_ms, false, NULL);
		if (r < 0)
			return stalled(rx, c, r, "payload");
	}
	r = fl__pg_parse_payload(&h, rx->buf, false, m, rx->msg, sizeof(rx->msg));
	if (r < 0)
		return r;
	rx->messages++;
	return 1;
}

int fl__pg_send(struct fl__conn *c, const struct fl__pg_msg *m, int timeout_ms)
{
	uint8_t meta[FL__PG_META_MAX];
	struct iovec iov[2];
	char why[160];
	int n;

	n = fl__pg_encode(m, meta, sizeof(meta), why, sizeof(why));
	if (n < 0) {
		fl__err("page server: refusing to send a malformed message: %s", why);
		return n;
	}
	iov[0] = (struct iovec){ .iov_base = meta, .iov_len = (size_t)n };
	iov[1] = (struct iovec){ .iov_base = (void *)m->run.data, .iov_len = 0 };
	if (m->type == FL__PG_WRITE)
		iov[1].iov_len = m->run.len;
	else if (m->type == FL__PG_DATA)
		iov[1].iov_len = m->run.data_len;
	return fl__conn_sendv_all(c, iov, iov[1].iov_len ? 2 : 1, timeout_ms);
}

int fl__pg_send_error(struct fl__conn *c, uint64_t seq, uint16_t flags, uint32_t code, int timeout_ms,
		      const char *fmt, ...)
{
	char text[FL__PG_MAX_MSG + 1];
	struct fl__pg_msg m;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	n = strlen(text);
	/* Only printable ASCII crosses: anything else in a quoted name becomes '?'. */
	for (size_t i = 0; i < n; i++)
		if (text[i] < 0x20 || text[i] > 0x7e)
			text[i] = '?';
	m = (struct fl__pg_msg){
		.type = FL__PG_ERROR,
		.flags = flags,
		.seq = seq,
		.error = { .code = code, .msg_len = (uint32_t)n, .msg = text },
	};
	return fl__pg_send(c, &m, timeout_ms);
}
