/* SPDX-License-Identifier: MIT */
/* TLS 1.3 through OpenSSL (pre-shared key or X.509) or plain TCP, over non-blocking sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "util.h"
#include "transport.h"

#define DEFAULT_IDENTITY "faultline"
#define MAX_IDENTITY 128
/* TLS_AES_128_GCM_SHA256: the cipher suite of the pre-shared key (its hash must be SHA-256). */
static const unsigned char psk_suite[2] = { 0x13, 0x01 };
/* Page bytes are gathered into this much before each SSL_write (fewer, fuller records). */
#define TX_STAGE (64u << 10)

struct fl__transport {
	enum fl__transport_mode mode;
	SSL_CTX *ctx;			/* NULL for plain TCP */
	uint8_t psk[32];		/* SHA-256 of the key */
	char identity[MAX_IDENTITY + 1];
	bool verify_client;
};

struct fl__conn {
	int fd;
	SSL *ssl;			/* NULL: plain TCP */
	const struct fl__transport *t;
	/*
	 * Held only around SSL calls (never while waiting in poll), so one
	 * thread can send while another waits to receive.
	 */
	pthread_mutex_t lock;
	int sys_err;			/* the last errno of the socket (BIO) */
	uint8_t *stage;			/* TX_STAGE bytes, TLS only, lazily */
	char msg[256];
};

/* ---------------------------------------------------------------- errors */

/* The OpenSSL error queue as one sentence in @buf (and emptied). */
static const char *ssl_reason(char *buf, size_t cap)
{
	unsigned long e, last = 0;
	size_t n = 0;

	buf[0] = 0;
	while ((e = ERR_get_error())) {
		const char *r = ERR_reason_error_string(e);

		if (e == last)
			continue;
		last = e;
		if (n < cap)
			n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "; " : "",
					      r ? r : "unknown TLS error");
	}
	if (!buf[0])
		snprintf(buf, cap, "unknown TLS error");
	return buf;
}

/* ---------------------------------------------------------------- the BIO */

/*
 * A socket BIO of our own: send() with MSG_NOSIGNAL (OpenSSL's socket BIO
 * write()s, and a closed peer would raise SIGPIPE), never blocking, and the
 * errno kept for the caller's message.
 */
static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *in, size_t len, size_t *written)
{
	struct fl__conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = send(c->fd, in, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		c->sys_err = errno;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			BIO_set_retry_write(b);
		return 0;
	}
	*written = (size_t)n;
	return 1;
}

static int bio_read(BIO *b, char *out, size_t len, size_t *got)
{
	struct fl__conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = recv(c->fd, out, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		c->sys_err = errno;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			BIO_set_retry_read(b);
		return 0;
	}
	if (n == 0) {
		c->sys_err = 0;
		return 0;	/* EOF: not a retry */
	}
	*got = (size_t)n;
	return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void bio_init_method(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "faultline socket");

	if (m && BIO_meth_set_write_ex(m, bio_write) && BIO_meth_set_read_ex(m, bio_read) &&
	    BIO_meth_set_ctrl(m, bio_ctrl))
		bio_method = m;
	else
		BIO_meth_free(m);
}

/* ---------------------------------------------------------------- PSK */

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_init(void)
{
	ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static SSL_SESSION *psk_session(SSL *ssl, const struct fl__transport *t)
{
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, psk_suite);
	SSL_SESSION *s;

	if (!cipher)
		return NULL;
	s = SSL_SESSION_new();
	if (!s)
		return NULL;
	if (!SSL_SESSION_set1_master_key(s, t->psk, sizeof(t->psk)) ||
	    !SSL_SESSION_set_cipher(s, cipher) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

/* Client: offer the key under our identity. */
static int psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
		   SSL_SESSION **sess)
{
	const struct fl__transport *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
	SSL_SESSION *s;

	(void)md;
	*sess = NULL;
	s = psk_session(ssl, t);
	if (!s)
		return 0;
	*id = (const unsigned char *)t->identity;
	*idlen = strlen(t->identity);
	*sess = s;
	return 1;
}

/* Server: the key for our identity; another identity finds none (and the handshake fails). */
static int psk_find(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	const struct fl__transport *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);

	*sess = NULL;
	if (idlen != strlen(t->identity) || memcmp(id, t->identity, idlen))
		return 1;
	*sess = psk_session(ssl, t);
	return *sess ? 1 : 0;
}

/* ---------------------------------------------------------------- transport */

static int fail(char *msg, size_t cap, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t cap, int err, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (msg && cap)
		snprintf(msg, cap, "%s", buf);
	else if (err == -EINVAL)
		fl__err("transport: %s", buf);	/* else the caller logs @msg */
	return err;
}

/* Whether @path can be read; -errno with a sentence if not. */
static int readable(const char *what, const char *path, char *msg, size_t cap)
{
	if (access(path, R_OK) < 0) {
		int r = -errno;

		return fail(msg, cap, r, "cannot read the %s '%s': %s", what, path, strerror(-r));
	}
	return 0;
}

static int x509_setup(struct fl__transport *t, const struct fl__transport_opts *o, char *msg,
		      size_t cap)
{
	char why[256];
	int r;

	if (!o->ca_file && !o->cert_file)
		return fail(msg, cap, -EINVAL, "X.509 needs a CA file (to check the peer) or "
			    "a certificate and its key (to be checked), or both");
	if (!o->cert_file != !o->key_file)
		return fail(msg, cap, -EINVAL, "a certificate and its private key go together");
	if (o->verify_client && !o->ca_file)
		return fail(msg, cap, -EINVAL, "verifying clients needs a CA file");
	if (o->ca_file) {
		r = readable("CA file", o->ca_file, msg, cap);
		if (r < 0)
			return r;
		if (SSL_CTX_load_verify_locations(t->ctx, o->ca_file, NULL) != 1)
			return fail(msg, cap, -EBADMSG, "the CA file '%s' holds no usable "
				    "certificate: %s", o->ca_file, ssl_reason(why, sizeof(why)));
	}
	if (o->cert_file) {
		r = readable("certificate", o->cert_file, msg, cap);
		if (!r)
			r = readable("private key", o->key_file, msg, cap);
		if (r < 0)
			return r;
		if (SSL_CTX_use_certificate_chain_file(t->ctx, o->cert_file) != 1)
			return fail(msg, cap, -EBADMSG, "the certificate file '%s' is not usable: "
				    "%s", o->cert_file, ssl_reason(why, sizeof(why)));
		if (SSL_CTX_use_PrivateKey_file(t->ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
			return fail(msg, cap, -EBADMSG, "the private key file '%s' is not "
				    "usable: %s", o->key_file, ssl_reason(why, sizeof(why)));
		if (SSL_CTX_check_private_key(t->ctx) != 1)
			return fail(msg, cap, -EBADMSG, "the private key '%s' does not belong to "
				    "the certificate '%s'", o->key_file, o->cert_file);
	}
	t->verify_client = o->verify_client;
	return 0;
}

int fl__transport_new(const struct fl__transport_opts *o, struct fl__transport **ret,
		      char *msg, size_t cap)
{
	struct fl__transport *t;
	char why[256];
	int r = 0;

	if (msg && cap)
		msg[0] = 0;
	if (!o || !ret)
		return fail(msg, cap, -EINVAL, "no transport options");
	if (o->mode != FL__TRANSPORT_PLAIN && o->mode != FL__TRANSPORT_PSK &&
	    o->mode != FL__TRANSPORT_X509)
		return fail(msg, cap, -EINVAL, "no transport mode chosen (TLS with a key, TLS "
			    "with certificates, or plain TCP explicitly)");
	if (o->mode == FL__TRANSPORT_PSK &&
	    (!o->psk || o->psk_len < FL__TRANSPORT_PSK_MIN || o->psk_len > FL__TRANSPORT_PSK_MAX))
		return fail(msg, cap, -EINVAL, "the pre-shared key has %zu bytes; it needs %d "
			    "to %d (at least 128 random bits)", o->psk ? o->psk_len : 0,
			    FL__TRANSPORT_PSK_MIN, FL__TRANSPORT_PSK_MAX);
	if (o->psk_identity && (!*o->psk_identity || strlen(o->psk_identity) > MAX_IDENTITY))
		return fail(msg, cap, -EINVAL, "a PSK identity has 1 to %d bytes", MAX_IDENTITY);
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->mode = o->mode;
	snprintf(t->identity, sizeof(t->identity), "%s",
		 o->psk_identity ? o->psk_identity : DEFAULT_IDENTITY);
	if (o->mode == FL__TRANSPORT_PLAIN) {
		*ret = t;
		return 0;
	}
	pthread_once(&bio_once, bio_init_method);
	pthread_once(&ex_once, ex_init);
	if (!bio_method || ex_index < 0) {
		free(t);
		return -ENOMEM;
	}
	t->ctx = SSL_CTX_new(TLS_method());
	if (!t->ctx ||
	    !SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ex_data(t->ctx, ex_index, t)) {
		r = fail(msg, cap, -ENOMEM, "TLS setup: %s", ssl_reason(why, sizeof(why)));
		goto out;
	}
	/* No session tickets (nothing resumes), no read-ahead (fl__conn_pending stays exact). */
	SSL_CTX_set_num_tickets(t->ctx, 0);
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(t->ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(t->ctx, SSL_MODE_AUTO_RETRY);
	if (o->mode == FL__TRANSPORT_PSK) {
		if (!EVP_Digest(o->psk, o->psk_len, t->psk, NULL, EVP_sha256(), NULL) ||
		    !SSL_CTX_set_ciphersuites(t->ctx, "TLS_AES_128_GCM_SHA256")) {
			r = fail(msg, cap, -ENOMEM, "TLS setup: %s", ssl_reason(why, sizeof(why)));
			goto out;
		}
		SSL_CTX_set_psk_use_session_callback(t->ctx, psk_use);
		SSL_CTX_set_psk_find_session_callback(t->ctx, psk_find);
	} else {
		r = x509_setup(t, o, msg, cap);
	}
out:
	if (r < 0) {
		SSL_CTX_free(t->ctx);
		OPENSSL_cleanse(t->psk, sizeof(t->psk));
		free(t);
		return r;
	}
	*ret = t;
	return 0;
}

void fl__transport_free(struct fl__transport *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	OPENSSL_cleanse(t->psk, sizeof(t->psk));
	free(t);
}

enum fl__transport_mode fl__transport_mode(const struct fl__transport *t)
{
	return t->mode;
}

const char *fl__transport_name(const struct fl__transport *t)
{
	switch (t->mode) {
	case FL__TRANSPORT_PSK:
		return "TLS 1.3 (pre-shared key)";
	case FL__TRANSPORT_X509:
		return "TLS 1.3 (X.509)";
	default:
		return "plain TCP (insecure)";
	}
}

/* ---------------------------------------------------------------- connections */

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

/* Milliseconds left until @deadline (ns), for poll; -1 for no deadline. */
static int left_ms(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = fl__now_ns();
	if (now >= deadline)
		return 0;
	return (int)((deadline - now + 999999) / 1000000);
}

static void conn_free(struct fl__conn *c)
{
	SSL_free(c->ssl);	/* frees the BIO */
	fl__safe_close(c->fd);
	pthread_mutex_destroy(&c->lock);
	free(c->stage);
	free(c);
}

/* Set the client's name check: an IP address against the IP SANs, else a DNS name (and SNI). */
static int set_peer_name(SSL *ssl, const char *name)
{
	unsigned char a[16];
	X509_VERIFY_PARAM *p = SSL_get0_param(ssl);

	if (inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(p, name) == 1 ? 0 : -ENOMEM;
	X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set1_host(ssl, name) != 1 || SSL_set_tlsext_host_name(ssl, name) != 1)
		return -ENOMEM;
	return 0;
}

/* Why the handshake failed, as -errno and a sentence. */
static int handshake_error(struct fl__conn *c, int e, enum fl__conn_role role, char *msg,
			   size_t cap)
{
	const char *who = role == FL__CONN_CLIENT ? "server" : "client";
	long vr = SSL_get_verify_result(c->ssl);
	char why[256];
	int reason;

	if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		if (c->sys_err && e == SSL_ERROR_SYSCALL) {
			int r = -c->sys_err;

			return fail(msg, cap, r, "TLS handshake: %s", strerror(-r));
		}
		return fail(msg, cap, -ECONNRESET, "TLS handshake: the %s closed the "
			    "connection (it may have refused this side's key or certificate)", who);
	}
	reason = ERR_GET_REASON(ERR_peek_error());
	ssl_reason(why, sizeof(why));
	if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
	    reason == SSL_R_HTTP_REQUEST)
		return fail(msg, cap, -EACCES, "TLS handshake with the %s failed: %s (the %s "
			    "does not speak TLS: plain TCP?)", who, why, who);
	if (vr != X509_V_OK)
		return fail(msg, cap, -EACCES, "TLS handshake: the %s's certificate was refused: "
			    "%s", who, X509_verify_cert_error_string(vr));
	return fail(msg, cap, -EACCES, "TLS handshake with the %s failed: %s%s", who, why,
		    c->t->mode == FL__TRANSPORT_PSK ? " (do both sides use the same key?)" : "");
}

int fl__conn_open(struct fl__transport *t, int fd, enum fl__conn_role role,
		  const char *peer_name, int timeout_ms, struct fl__conn **ret, char *msg,
		  size_t cap)
{
	uint64_t deadline = timeout_ms < 0 ? 0 : fl__now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct fl__conn *c;
	char why[256];
	BIO *bio;
	int r, fl;

	if (msg && cap)
		msg[0] = 0;
	if (!t || fd < 0 || !ret || (role != FL__CONN_CLIENT && role != FL__CONN_SERVER)) {
		fl__safe_close(fd);
		return fail(msg, cap, -EINVAL, "bad connection arguments");
	}
	if (t->mode == FL__TRANSPORT_X509 && role == FL__CONN_CLIENT && !peer_name) {
		fl__safe_close(fd);
		return fail(msg, cap, -EINVAL, "a client needs the server's name to check its "
			    "certificate");
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		r = -errno;
		fl__safe_close(fd);
		return r;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		fl__safe_close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	c->t = t;
	pthread_mutex_init(&c->lock, NULL);
	if (t->mode == FL__TRANSPORT_PLAIN) {
		*ret = c;
		return 0;
	}
	c->ssl = SSL_new(t->ctx);
	bio = c->ssl ? BIO_new(bio_method) : NULL;
	if (!bio) {
		r = fail(msg, cap, -ENOMEM, "TLS setup: %s", ssl_reason(why, sizeof(why)));
		goto err;
	}
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);
	SSL_set_bio(c->ssl, bio, bio);
	if (role == FL__CONN_CLIENT) {
		SSL_set_connect_state(c->ssl);
		if (t->mode == FL__TRANSPORT_X509) {
			SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
			r = set_peer_name(c->ssl, peer_name);
			if (r < 0)
				goto err;
		}
	} else {
		SSL_set_accept_state(c->ssl);
		if (t->verify_client)
			SSL_set_verify(c->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				       NULL);
	}
	for (;;) {
		int n, e;

		ERR_clear_error();
		c->sys_err = 0;
		n = SSL_do_handshake(c->ssl);
		if (n == 1)
			break;
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			int ms = left_ms(deadline);

			r = ms ? wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, ms) :
				 -ETIMEDOUT;
			if (r == -EAGAIN || r == -ETIMEDOUT) {
				r = fail(msg, cap, -ETIMEDOUT, "TLS handshake: the %s sent nothing "
					 "for the rest of %d ms", role == FL__CONN_CLIENT ?
					 "server" : "client", timeout_ms);
				goto err;
			}
			if (r < 0)
				goto err;
			continue;
		}
		r = handshake_error(c, e, role, msg, cap);
		goto err;
	}
	*ret = c;
	return 0;
err:
	conn_free(c);
	return r;
}

int fl__conn_connect(struct fl__transport *t, const char *host, uint16_t port,
		     const struct fl__sock_opts *o, int timeout_ms, struct fl__conn **ret,
		     char *msg, size_t cap)
{
	int fd = -1, r;

	if (!t || !host || !port || !ret)
		return fail(msg, cap, -EINVAL, "bad connection arguments");
	r = fl__sock_connect(host, port, o, timeout_ms, &fd);
	if (r == -ENXIO)
		return fail(msg, cap, r, "no host named '%s' is known", host);
	if (r < 0)
		return fail(msg, cap, r, "cannot connect to %s port %u: %s", host, port,
			    strerror(-r));
	return fl__conn_open(t, fd, FL__CONN_CLIENT, host, timeout_ms, ret, msg, cap);
}

void fl__conn_close(struct fl__conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		/* One try at close_notify: the peer's reading ends cleanly if it gets through. */
		pthread_mutex_lock(&c->lock);
		if (SSL_is_init_finished(c->ssl))
			SSL_shutdown(c->ssl);
		ERR_clear_error();
		pthread_mutex_unlock(&c->lock);
	}
	conn_free(c);
}

void fl__conn_shutdown(struct fl__conn *c)
{
	if (c)
		shutdown(c->fd, SHUT_RDWR);
}

int fl__conn_fd(const struct fl__conn *c)
{
	return c->fd;
}

bool fl__conn_pending(struct fl__conn *c)
{
	bool p;

	if (!c->ssl)
		return false;
	pthread_mutex_lock(&c->lock);
	p = SSL_pending(c->ssl) > 0;
	pthread_mutex_unlock(&c->lock);
	return p;
}

const char *fl__conn_cipher(struct fl__conn *c)
{
	return c->ssl ? SSL_get_cipher_name(c->ssl) : "none";
}

const char *fl__conn_error(const struct fl__conn *c)
{
	return c->msg;
}

/* An SSL_read/SSL_write result that is not progress: -errno (and c->msg), or 1 to wait. */
static int io_error(struct fl__conn *c, int e, bool reading)
{
	char why[200];

	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return 1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (c->sys_err)
			return -c->sys_err;
		return reading ? 0 : -EPIPE;
	default: {
		int reason = ERR_GET_REASON(ERR_peek_error());

		/*
		 * In TLS 1.3 a client learns that the server refused its
		 * certificate only here, at its first receive.
		 */
		if ((reason >= SSL_R_SSLV3_ALERT_BAD_CERTIFICATE &&
		     reason <= SSL_R_TLSV1_ALERT_ACCESS_DENIED) ||
		    reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
			snprintf(c->msg, sizeof(c->msg), "the peer refused this side's "
				 "certificate: %s", ssl_reason(why, sizeof(why)));
			return -EACCES;
		}
		snprintf(c->msg, sizeof(c->msg), "TLS %s failed: %s (the stream was changed "
			 "in transit, or the peer failed)", reading ? "receive" : "send",
			 ssl_reason(why, sizeof(why)));
		return -EBADMSG;
	}
	}
}

/* SSL_write all of @buf (TLS), waiting for the socket as needed. */
static int tls_write(struct fl__conn *c, const void *buf, size_t len, int timeout_ms)
{
	while (len) {
		size_t n = 0;
		int ok, e = 0, r;

		pthread_mutex_lock(&c->lock);
		ERR_clear_error();
		c->sys_err = 0;
		ok = SSL_write_ex(c->ssl, buf, len, &n);
		if (!ok)
			e = SSL_get_error(c->ssl, 0);
		r = ok ? 0 : io_error(c, e, false);
		if (r == -EPIPE || r == -ECONNRESET) {
			/*
			 * The peer hung up: an alert it sent first (it refused
			 * our certificate) says why better than the reset.
			 */
			uint8_t b;
			size_t got;

			ERR_clear_error();
			if (!SSL_read_ex(c->ssl, &b, 1, &got) &&
			    io_error(c, SSL_get_error(c->ssl, 0), true) == -EACCES)
				r = -EACCES;
			ERR_clear_error();
		}
		pthread_mutex_unlock(&c->lock);
		if (ok) {
			buf = (const uint8_t *)buf + n;
			len -= n;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (r < 0)
			return r;
		r = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, timeout_ms);
		if (r == -EAGAIN)
			r = -ETIMEDOUT;
		if (r < 0)
			return r;
	}
	return 0;
}

int fl__conn_sendv_all(struct fl__conn *c, struct iovec *iov, size_t iovcnt, int timeout_ms)
{
	size_t fill = 0;
	int r;

	if (!c)
		return -EINVAL;
	if (!c->ssl)
		return fl__sock_sendv_all(c->fd, iov, iovcnt, timeout_ms);
	if (iovcnt == 1)
		return tls_write(c, iov->iov_base, iov->iov_len, timeout_ms);
	if (!c->stage && !(c->stage = malloc(TX_STAGE)))
		return -ENOMEM;
	/* Small pieces are gathered; a piece of a whole stage or more goes straight out. */
	for (size_t i = 0; i < iovcnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		if (len >= TX_STAGE) {
			if (fill && (r = tls_write(c, c->stage, fill, timeout_ms)) < 0)
				return r;
			fill = 0;
			r = tls_write(c, p, len, timeout_ms);
			if (r < 0)
				return r;
			continue;
		}
		while (len) {
			size_t k = TX_STAGE - fill < len ? TX_STAGE - fill : len;

			memcpy(c->stage + fill, p, k);
			fill += k;
			p += k;
			len -= k;
			if (fill == TX_STAGE) {
				r = tls_write(c, c->stage, fill, timeout_ms);
				if (r < 0)
					return r;
				fill = 0;
			}
		}
	}
	return fill ? tls_write(c, c->stage, fill, timeout_ms) : 0;
}

int fl__conn_send_all(struct fl__conn *c, const void *buf, size_t len, int timeout_ms)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return fl__conn_sendv_all(c, &iov, 1, timeout_ms);
}

ssize_t fl__conn_recv_some(struct fl__conn *c, void *buf, size_t len, int timeout_ms)
{
	if (!c)
		return -EINVAL;
	if (!c->ssl) {
		for (;;) {
			ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);
			int r;

			if (n >= 0)
				return n;
			r = -errno;
			if (r == -EINTR)
				continue;
			if (r != -EAGAIN)
				return r;
			if (!timeout_ms)
				return -EAGAIN;	/* nothing there: no poll to learn it again */
			r = wait_fd(c->fd, POLLIN, timeout_ms);
			if (r < 0)
				return r;
		}
	}
	for (;;) {
		size_t n = 0;
		int ok, e = 0, r;

		pthread_mutex_lock(&c->lock);
		ERR_clear_error();
		c->sys_err = 0;
		ok = SSL_read_ex(c->ssl, buf, len, &n);
		if (!ok)
			e = SSL_get_error(c->ssl, 0);
		r = ok ? 0 : io_error(c, e, true);
		pthread_mutex_unlock(&c->lock);
		if (ok)
			return (ssize_t)n;
		if (r <= 0)
			return r;
		r = wait_fd(c->fd, e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, timeout_ms);
		if (r < 0)
			return r;
	}
}

int fl__conn_recv_exact(struct fl__conn *c, void *buf, size_t len, int timeout_ms)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = fl__conn_recv_some(c, p, len, timeout_ms);

		if (n < 0)
			return (int)n;
		if (!n)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int conn_sendv(void *ctx, struct iovec *iov, size_t iovcnt, int timeout_ms)
{
	return fl__conn_sendv_all(ctx, iov, iovcnt, timeout_ms);
}

int fl__conn_send_frame(struct fl__conn *c, const struct fl__wire_frame *f, int timeout_ms)
{
	if (!c)
		return -EINVAL;
	return fl__wire_send_frame(f, conn_sendv, c, timeout_ms);
}
