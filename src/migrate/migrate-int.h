/* SPDX-License-Identifier: MIT */
/* Internals of the migration layer: connections, handshake, bitmaps (never installed). */
#ifndef FL_MIGRATE_INT_H
#define FL_MIGRATE_INT_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "faultline.h"
#include "internal.h"
#include "util.h"
#include "net/sock.h"
#include "net/transport.h"
#include "net/wire.h"

#define MIG_DEFAULT_TIMEOUT 10000	/* ms */
#define MIG_DEFAULT_RESUME 60000	/* ms */
#define MIG_ERR_LEN 512
/* Pages per background frame at full speed: one 2 MiB frame of base pages. */
#define MIG_BATCH FL__WIRE_MAX_PAGES
/* Bitmap bits per RECEIVED_BITMAP chunk we send (a multiple of 64). */
#define MIG_BITMAP_CHUNK FL__WIRE_MAX_BITMAP_BITS
/* An ERROR frame on the way out gets this long before the connection is closed anyway. */
#define MIG_ERROR_SEND_MS 1000
/* Connections a listener holds while they have not said anything yet. */
#define MIG_PENDING 16

/* What both sides offer: the urgent channel, resume, and the pre-copy switch-over bitmap. */
#define MIG_FEATURES \
	(FL__WIRE_FEAT_URGENT_CHANNEL | FL__WIRE_FEAT_RESUME | FL__WIRE_FEAT_PRECOPY)

/* ---------------------------------------------------------------- regions */

/* One region of a migration; page indices are flat across the regions, in their order. */
struct fl__mig_region {
	uint64_t start;			/* the source's address */
	uint64_t len;
	uint8_t *addr;			/* where it is in this process */
	uint64_t first;			/* flat index of its first page */
	uint64_t pages;
};

/* The region holding flat page @pg (regions sorted by first). */
unsigned int fl__mig_region_of(const struct fl__mig_region *r, unsigned int n, uint64_t pg);

/* ---------------------------------------------------------------- connections */

/* How the connections are protected: the options' key, or their certificates, or neither. */
struct fl__mig_tls {
	const void *key;		/* pre-shared key */
	size_t key_len;
	const char *ca_file, *cert_file, *key_file, *peer_name;	/* X.509 */
};

/* Where this side meets its peer. */
struct fl__mig_link {
	bool listen;
	char *host;			/* NULL: listen on every address */
	uint16_t port;
	int lfd;			/* the listening socket, or -1 */
	struct fl__transport *tr;	/* TLS (key or certificates), or plain TCP */
	bool tls;			/* tr is not plain TCP */
	char *peer_name;		/* X.509, connecting: the name to check (NULL: host) */
	int timeout_ms;
	int resume_timeout_ms;		/* -1: forever */
	int stop_efd;			/* eventfd: written when the object is being destroyed */
};

/*
 * A key makes the connections TLS 1.3 with that pre-shared key; certificates
 * make them TLS 1.3 with X.509 (the listening side is the TLS server, and
 * with FL_MIGRATE_VERIFY_PEER it requires the connecting side's certificate);
 * neither is plain TCP, which FL_MIGRATE_INSECURE must ask for. -EINVAL with
 * @msg saying why, the transport's errors for unreadable files.
 */
int fl__mig_link_init(struct fl__mig_link *l, uint32_t flags, const char *host, uint16_t port,
		      const struct fl__mig_tls *tls, int timeout_ms, int resume_timeout_ms,
		      char *msg, size_t cap);
void fl__mig_link_fini(struct fl__mig_link *l);
/* Whether destroy asked us to stop (the eventfd is readable). */
bool fl__mig_link_stopping(const struct fl__mig_link *l);
/* Wait @ms, or less if destroy asks us to stop: -ECANCELED then. */
int fl__mig_link_pause(const struct fl__mig_link *l, int ms);

/* One connection of a session, after its handshake. */
struct fl__mig_conn {
	struct fl__conn *conn;		/* NULL: closed */
	int fd;				/* conn's socket (for shutdown), -1: closed */
	bool have_rd;
	struct fl__wire_reader rd;
	uint8_t version;		/* agreed */
	uint64_t seq;			/* next frame's sequence number */
};

void fl__mig_conn_reset(struct fl__mig_conn *c);
/* Take @conn (closed on failure too) and set up its reader. */
int fl__mig_conn_open(struct fl__mig_conn *c, struct fl__conn *conn);
void fl__mig_conn_close(struct fl__mig_conn *c);
/*
 * Send @f with the agreed version, numbering it unless it carries its own id
 * (REQUEST, urgent PAGES, PONG).
 */
int fl__mig_send(struct fl__mig_conn *c, struct fl__wire_frame *f, int timeout_ms);
/* Send ERROR @code with @msg (best effort, short timeout). */
void fl__mig_send_error(struct fl__mig_conn *c, uint32_t code, const char *msg);

/* The peer's HELLO, copied out of the decoder. */
struct fl__mig_peer {
	struct fl__wire_hello hello;	/* regions and agent point at the fields below */
	struct fl__wire_region *regions;
	char agent[FL__WIRE_MAX_AGENT + 1];
};

void fl__mig_peer_fini(struct fl__mig_peer *p);

/*
 * Handshake on @c, inside its TLS session: send @mine, read and check the
 * peer's HELLO. Fills *@peer (also when the flags disagree), sets c->version.
 * Returns 0; -EAGAIN when the peer disagrees on RESUME or URGENT (nothing is
 * wrong: the caller learns from *@peer, whom TLS has authenticated, and tries
 * again); -EACCES,
 * -EPROTONOSUPPORT, -EPROTO, -ESTALE (another session) after sending ERROR;
 * a connection error; or the errno of an ERROR the peer sent. @msg gets a
 * sentence.
 */
int fl__mig_handshake(struct fl__mig_conn *c, const struct fl__wire_hello *mine,
		      const struct fl__mig_link *l, struct fl__mig_peer *peer,
		      uint64_t *ret_features, char *msg, size_t cap);

/*
 * One connection of a session, handshaken: connect to the peer (connecting
 * side) or take the first connection that passes the handshake (listening
 * side; every other one is closed and logged: see listen_handshake), within
 * @timeout_ms (a handshake under way may add the link's timeout_ms). @mine
 * gets a fresh nonce. @side ("source", "destination") names this side in
 * the log. Returns 0 with *@c open and *@peer filled; -ETIMEDOUT (no peer
 * in time; @msg names the last refused connection, if any); -EAGAIN (an
 * authenticated peer disagrees on RESUME or URGENT: *@peer says how);
 * -ECANCELED (destroy); -ENXIO (no such host); the handshake's errors on
 * the connecting side.
 */
int fl__mig_link_handshake(struct fl__mig_link *l, const char *side, bool urgent,
			   int timeout_ms, struct fl__wire_hello *mine, struct fl__mig_conn *c,
			   struct fl__mig_peer *peer, uint64_t *ret_features, char *msg, size_t cap);

/* A HELLO of this side: role, flags, session, a fresh nonce; regions are the caller's. */
int fl__mig_hello_init(struct fl__wire_hello *h, uint8_t role, const struct fl__mig_link *l,
		       uint32_t flags, const uint8_t session[FL__WIRE_SESSION_LEN],
		       uint8_t version_min, uint8_t version_max);

/*
 * Whether @err ends a connection but not the session: the peer went away,
 * a send or receive stalled, or a checksum failed (a new connection may do
 * better). The others (malformed frames, authentication, versions, refused
 * regions, cancellation) end the migration.
 */
bool fl__mig_err_transient(int err);

/* The sentence for a frame we did not expect. */
int fl__mig_unexpected(const struct fl__wire_frame *f, const char *where, char *msg, size_t cap);

/* Page size as a shift. */
unsigned int fl__mig_page_shift(void);

/* Name a thread of ours ("fl-mig/..."). */
void fl__mig_name_thread(const char *name);
/* The calling thread is on the urgent path: it should run as soon as it wakes. */
#define MIG_URGENT_SLICE_NS 100000ull
void fl__mig_urgent_thread(void);

/* ---------------------------------------------------------------- test hooks */

/*
 * Tests only: behaviour no caller should want. Set before run/accept; the
 * library copies nothing, the struct must outlive the object.
 */
struct fl__mig_hooks {
	uint8_t version_min, version_max;	/* advertised instead of ours (0: ours) */
	int hold_urgent_efd;		/* source: answer no request until this fd is readable */
	int fault_efd;			/* destination: add 1 for each fault read, once counted */
	bool push_all;			/* source: push every page in the background, even
					   those already sent urgently */
};

void fl__migrate_source_set_hooks(struct fl_migrate_source *s, const struct fl__mig_hooks *h);
void fl__migrate_dest_set_hooks(struct fl_migrate_dest *d, const struct fl__mig_hooks *h);

#endif /* FL_MIGRATE_INT_H */
