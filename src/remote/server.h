/* SPDX-License-Identifier: MIT */
/* The page server behind `faultline serve` (never installed). */
#ifndef FL_REMOTE_SERVER_H
#define FL_REMOTE_SERVER_H

#include <stdint.h>

struct fl__pgsrv;
struct fl__transport;

struct fl__pgsrv_opts {
	const char *host;		/* NULL: every address */
	uint16_t port;			/* 0: any (fl__pgsrv_port says which) */
	const char *dir;		/* the objects' directory */
	struct fl__transport *transport;	/* TLS or plain TCP; borrowed, outlives the server */
	unsigned int max_clients;	/* 0: 256 */
	int idle_timeout_ms;		/* no request for this long closes a connection; 0: 60 s */
	int io_timeout_ms;		/* a message stalled this long closes it; 0: 10 s */
};

struct fl__pgsrv_stats {
	uint64_t connections, refused_busy, closed_handshake, closed_idle, closed_malformed;
	uint64_t opens, reads, writes, pages_read, pages_written, errors;
};

/* Listen and open @o->dir. Returns 0, -EINVAL (logged), or the -errno of open/listen. */
int fl__pgsrv_create(const struct fl__pgsrv_opts *o, struct fl__pgsrv **ret);
/* The port it listens on. */
uint16_t fl__pgsrv_port(const struct fl__pgsrv *s);
/*
 * Serve until fl__pgsrv_stop(): then stop accepting, let each connection
 * finish the requests it has received (bounded by the I/O timeout), close
 * them, and return 0. Thread safety: one caller.
 */
int fl__pgsrv_run(struct fl__pgsrv *s);
/* Ask run() to stop. Async-signal-safe (one write to an eventfd). */
void fl__pgsrv_stop(struct fl__pgsrv *s);
void fl__pgsrv_stats(struct fl__pgsrv *s, struct fl__pgsrv_stats *ret);
/* After run() returned (or instead of it). Accepts NULL. */
void fl__pgsrv_destroy(struct fl__pgsrv *s);

#endif /* FL_REMOTE_SERVER_H */
