/* SPDX-License-Identifier: MIT */
/* Page-server messages over a connected socket: send one, receive one (never installed). */
#ifndef FL_REMOTE_PGIO_H
#define FL_REMOTE_PGIO_H

#include <stddef.h>
#include <stdint.h>

#include "net/pgwire.h"

struct fl__conn;

/*
 * What one connection receives into: the header, and the payload in a
 * buffer grown to the longest payload seen (at most FL__PG_MAX_PAYLOAD, so
 * a connection holds at most that much). One receiver per connection.
 */
struct fl__pg_rx {
	uint8_t hdr[FL__PG_HDR_MAX];
	uint8_t *buf;
	size_t cap;
	uint64_t messages;		/* received whole */
	char msg[256];			/* why the last receive failed */
};

void fl__pg_rx_fini(struct fl__pg_rx *rx);

/*
 * Receive one message from @c (a transport connection: TLS or plain TCP) into @rx and decode it into @m (pointers into
 * @rx, valid until the next call). Waits up to @idle_ms (-1: forever) for
 * its first byte, and up to @io_ms for each later byte. When @stop_fd (or -1)
 * becomes readable before the first byte, returns -ECANCELED. Returns 1,
 * 0 if the peer closed between messages, or -errno: -ETIMEDOUT,
 * -ECONNRESET (closed inside a message), -EPROTO, -EPROTONOSUPPORT, -EBADMSG
 * (a malformed message, or a TLS record that failed its check; @rx->msg
 * says why), -ENOMEM, or the connection's error.
 */
int fl__pg_recv(struct fl__conn *c, struct fl__pg_rx *rx, int stop_fd, int idle_ms, int io_ms,
		struct fl__pg_msg *m);

/*
 * Encode @m and send it, page bytes from their own memory (writev), within
 * @timeout_ms of no progress. -EINVAL if @m breaks a rule (logged), or the
 * send's -errno.
 */
int fl__pg_send(struct fl__conn *c, const struct fl__pg_msg *m, int timeout_ms);

/* Send ERROR @code with a formatted message (truncated to fit); flags FL__PG_F_*. */
int fl__pg_send_error(struct fl__conn *c, uint64_t seq, uint16_t flags, uint32_t code, int timeout_ms,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif /* FL_REMOTE_PGIO_H */
