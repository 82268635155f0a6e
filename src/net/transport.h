/* SPDX-License-Identifier: MIT */
/* The transport every TCP connection goes through: TLS 1.3 (OpenSSL), or plain TCP when asked (never installed). */
#ifndef FL_NET_TRANSPORT_H
#define FL_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "sock.h"
#include "wire.h"

/*
 * A transport is a configuration (struct fl__transport): TLS 1.3 with a
 * pre-shared key, TLS 1.3 with X.509 certificates, or plain TCP, which must
 * be chosen explicitly (no default mode exists). A connection (struct
 * fl__conn) is a connected TCP socket wrapped by a transport: its TLS
 * handshake runs in fl__conn_open, within a deadline; afterwards every byte
 * in either direction is encrypted and authenticated (a changed byte fails
 * the connection with -EBADMSG).
 *
 * The socket is non-blocking; every wait is a poll() bounded by the caller's
 * timeout: for the handshake the whole of it, for sends and receives the
 * time without progress (as in sock.h; -1 waits forever). Sends never raise
 * SIGPIPE.
 *
 * Unix-domain sockets (the monitor) do not go through here.
 *
 * Thread safety: a transport is immutable once made and may be shared by
 * any number of connections and threads; it must outlive them. A connection
 * takes one sending thread and one receiving thread at a time (as a socket
 * does); fl__conn_shutdown may come from any thread at any time.
 */

enum fl__transport_mode {
	FL__TRANSPORT_PLAIN = 1,	/* plain TCP: no secrecy, no integrity, no peer check */
	FL__TRANSPORT_PSK = 2,		/* TLS 1.3, external pre-shared key (with (EC)DHE) */
	FL__TRANSPORT_X509 = 3,		/* TLS 1.3, certificates */
};

/* The shortest and longest pre-shared key (the contents of a key file), in bytes. */
#define FL__TRANSPORT_PSK_MIN 16
#define FL__TRANSPORT_PSK_MAX 4096

struct fl__transport_opts {
	int mode;			/* enum fl__transport_mode; 0 is an error */
	/* PSK: both sides hold the same key; the TLS key is SHA-256 of it. */
	const void *psk;
	size_t psk_len;			/* FL__TRANSPORT_PSK_MIN..MAX */
	const char *psk_identity;	/* sent in the clear; NULL: "faultline" */
	/*
	 * X.509, PEM files. A client needs ca_file (it always checks the
	 * server's chain and name) and may have cert_file + key_file (sent if
	 * the server asks). A server needs cert_file + key_file, and ca_file
	 * when it verifies clients.
	 */
	const char *ca_file;		/* trust anchors for the peer's certificate */
	const char *cert_file;		/* this side's certificate (chain) */
	const char *key_file;		/* this side's private key */
	bool verify_client;		/* server: require a client certificate from ca_file */
};

struct fl__transport;
struct fl__conn;

/*
 * A transport for @o (copied: the files are read now). -EINVAL (bad options,
 * logged and in @msg), -ENOENT/-EACCES... (a file cannot be read), -EBADMSG
 * (a file is not PEM of the right kind, or the key does not match the
 * certificate), -ENOMEM. @msg (may be NULL) gets a sentence on failure.
 */
int fl__transport_new(const struct fl__transport_opts *o, struct fl__transport **ret,
		      char *msg, size_t cap);
/* Accepts NULL. No connection of @t may remain. */
void fl__transport_free(struct fl__transport *t);
enum fl__transport_mode fl__transport_mode(const struct fl__transport *t);
/* "TLS 1.3 (pre-shared key)", "TLS 1.3 (X.509)" or "plain TCP (insecure)". */
const char *fl__transport_name(const struct fl__transport *t);

enum fl__conn_role {
	FL__CONN_CLIENT = 0,		/* this side connected */
	FL__CONN_SERVER = 1,		/* this side accepted */
};

/*
 * Wrap the connected TCP socket @fd (taken: closed on failure too) and run
 * the TLS handshake as @role within @timeout_ms in all (-1: no limit). A
 * client checks that the server's certificate names @peer_name (a host name
 * or an IP address; X.509 only, required there). Returns 0; -ETIMEDOUT (the
 * peer stalled), -ECONNRESET (it closed), -EACCES (authentication failed: a
 * wrong key, an untrusted certificate, another name, a peer that does not
 * speak TLS), -EPROTO, -ENOMEM, -errno of the socket. @msg gets a sentence.
 */
int fl__conn_open(struct fl__transport *t, int fd, enum fl__conn_role role,
		  const char *peer_name, int timeout_ms, struct fl__conn **ret, char *msg,
		  size_t cap);
/*
 * fl__sock_connect then fl__conn_open as the client, @peer_name being @host,
 * both within @timeout_ms each. Errors: as both (-ENXIO: no such host).
 */
int fl__conn_connect(struct fl__transport *t, const char *host, uint16_t port,
		     const struct fl__sock_opts *o, int timeout_ms, struct fl__conn **ret,
		     char *msg, size_t cap);
/* Close (a TLS close_notify is tried, never waited for) and free; accepts NULL. */
void fl__conn_close(struct fl__conn *c);
/*
 * shutdown(SHUT_RDWR) on the socket: wakes the threads waiting on it (their
 * calls fail) and fails every later call. Any thread, any time before close.
 */
void fl__conn_shutdown(struct fl__conn *c);
/* The socket, for poll() (POLLIN may be missing while fl__conn_pending() is true), and names. */
int fl__conn_fd(const struct fl__conn *c);
/* Whether received bytes wait in the TLS layer (poll() on the fd cannot see them). */
bool fl__conn_pending(struct fl__conn *c);
/* "TLS_AES_128_GCM_SHA256", or "none" for plain TCP. */
const char *fl__conn_cipher(struct fl__conn *c);

/* Send all @len bytes, or fail: -ETIMEDOUT, -EPIPE, -ECONNRESET, -EBADMSG (TLS failed)... */
int fl__conn_send_all(struct fl__conn *c, const void *buf, size_t len, int timeout_ms);
/* Every byte of @iov[@iovcnt], which is consumed (any count). */
int fl__conn_sendv_all(struct fl__conn *c, struct iovec *iov, size_t iovcnt, int timeout_ms);
/* Encode @f and send it (PAGES from the pages' own memory). */
int fl__conn_send_frame(struct fl__conn *c, const struct fl__wire_frame *f, int timeout_ms);
/*
 * Receive what is there, up to @len, waiting up to @timeout_ms for the
 * first byte (0: not at all, -EAGAIN if none). Returns the count (> 0), 0
 * when the peer closed, or -errno: -ETIMEDOUT, -ECONNRESET, -EBADMSG (a
 * record failed its authentication: the stream was changed in transit).
 */
ssize_t fl__conn_recv_some(struct fl__conn *c, void *buf, size_t len, int timeout_ms);
/* Exactly @len bytes: -ECONNRESET if the peer closes first, and recv_some's errors. */
int fl__conn_recv_exact(struct fl__conn *c, void *buf, size_t len, int timeout_ms);
/* The last failure's sentence ("" if none), e.g. the TLS library's reason. */
const char *fl__conn_error(const struct fl__conn *c);

#endif /* FL_NET_TRANSPORT_H */
