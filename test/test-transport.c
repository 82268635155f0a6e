/* SPDX-License-Identifier: MIT */
/* The transport: TLS 1.3 with a pre-shared key or certificates, plain TCP only when asked. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"
#include "certs.h"
#include "net/sock.h"
#include "net/transport.h"

#define KEY_A "transport test key A, 32 bytes."
#define KEY_B "transport test key B, 32 bytes."

static struct fl__transport *psk_transport(const char *key)
{
	struct fl__transport_opts o = { .mode = FL__TRANSPORT_PSK, .psk = key,
					.psk_len = strlen(key) };
	struct fl__transport *t = NULL;
	char msg[256];

	T_ASSERT_OK(fl__transport_new(&o, &t, msg, sizeof(msg)));
	return t;
}

static struct fl__transport *x509_transport(const char *dir, const char *ca, const char *me,
					    bool verify_client)
{
	char caf[300], crt[300], key[300], msg[256];
	struct fl__transport_opts o = { .mode = FL__TRANSPORT_X509,
					.verify_client = verify_client };
	struct fl__transport *t = NULL;

	if (ca) {
		snprintf(caf, sizeof(caf), "%s/%s.crt", dir, ca);
		o.ca_file = caf;
	}
	if (me) {
		snprintf(crt, sizeof(crt), "%s/%s.crt", dir, me);
		snprintf(key, sizeof(key), "%s/%s.key", dir, me);
		o.cert_file = crt;
		o.key_file = key;
	}
	if (fl__transport_new(&o, &t, msg, sizeof(msg)) < 0)
		t_fail(__FILE__, __LINE__, "fl__transport_new: %s", msg);
	return t;
}

/* A listener on loopback; its port in *ret_port. */
static int listener(uint16_t *ret_port)
{
	int lfd;

	T_ASSERT_OK(fl__sock_listen("127.0.0.1", 0, NULL, &lfd));
	T_ASSERT_OK(fl__sock_local_port(lfd, ret_port));
	return lfd;
}

struct server_job {
	struct fl__transport *t;
	int lfd;
	int timeout_ms;
	int err;
	struct fl__conn *c;
	char msg[256];
};

static void *server_thread(void *arg)
{
	struct server_job *j = arg;
	int fd;

	j->err = fl__sock_accept(j->lfd, NULL, t_ms(10000), &fd);
	if (!j->err)
		j->err = fl__conn_open(j->t, fd, FL__CONN_SERVER, NULL, j->timeout_ms, &j->c,
				       j->msg, sizeof(j->msg));
	return NULL;
}

/*
 * Connect @client to a server of @server through loopback, the client
 * checking @name. Both results and sentences are returned; connections in
 * *@s, *@c when they opened.
 */
static void pair(struct fl__transport *server, struct fl__transport *client, const char *name,
		 struct server_job *sj, int *cerr, struct fl__conn **c, char *cmsg, size_t cap)
{
	uint16_t port;
	unsigned long th;
	int fd;

	*sj = (struct server_job){ .t = server, .lfd = listener(&port),
				   .timeout_ms = t_ms(10000) };
	th = t_thread_start(server_thread, sj);
	*c = NULL;
	T_ASSERT_OK(fl__sock_connect("127.0.0.1", port, NULL, t_ms(5000), &fd));
	*cerr = fl__conn_open(client, fd, FL__CONN_CLIENT, name, t_ms(10000), c, cmsg, cap);
	t_thread_join(th);
	close(sj->lfd);
}

struct stream_job {
	struct fl__conn *c;
	uint8_t *buf;
	size_t len;
	int err;
};

/* Send @len bytes as many small iovecs and a few large ones. */
static void *send_thread(void *arg)
{
	struct stream_job *j = arg;
	struct iovec iov[64];
	size_t off = 0;

	while (off < j->len && !j->err) {
		size_t n = 0, i;

		for (i = 0; i < 64 && off + n < j->len; i++) {
			size_t k = i == 63 ? 200 * 1024 : 4096 - i;

			if (k > j->len - off - n)
				k = j->len - off - n;
			iov[i] = (struct iovec){ .iov_base = j->buf + off + n, .iov_len = k };
			n += k;
		}
		j->err = fl__conn_sendv_all(j->c, iov, i, t_ms(10000));
		off += n;
	}
	return NULL;
}

/* Bytes flow both ways, at once, and arrive intact. */
static void exchange(struct fl__conn *a, struct fl__conn *b)
{
	size_t len = 8u << 20;
	uint8_t *src = malloc(len), *dst = malloc(len), back[64];
	struct stream_job j = { .c = a, .buf = src, .len = len };
	unsigned long th;

	T_ASSERT(src && dst);
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 7 + (i >> 12));
	th = t_thread_start(send_thread, &j);
	/* The receiving side sends meanwhile: one sender and one receiver per connection. */
	T_ASSERT_OK(fl__conn_send_all(b, "the other way", 13, t_ms(10000)));
	T_ASSERT_OK(fl__conn_recv_exact(b, dst, len, t_ms(10000)));
	t_thread_join(th);
	T_ASSERT_OK(j.err);
	T_ASSERT(!memcmp(src, dst, len));
	T_ASSERT_OK(fl__conn_recv_exact(a, back, 13, t_ms(10000)));
	T_ASSERT(!memcmp(back, "the other way", 13));
	/* Nothing more: a receive with timeout 0 says so at once. */
	T_ASSERT_ERR(fl__conn_recv_some(a, back, 1, 0), EAGAIN);
	free(src);
	free(dst);
}

TEST(transport_psk_stream)
{
	struct fl__transport *t = psk_transport(KEY_A);
	struct server_job sj;
	struct fl__conn *c;
	char msg[256];
	int err;

	T_ASSERT_EQ(fl__transport_mode(t), FL__TRANSPORT_PSK);
	pair(t, t, NULL, &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_OK(sj.err);
	T_ASSERT_OK(err);
	T_ASSERT(!strcmp(fl__conn_cipher(c), "TLS_AES_128_GCM_SHA256"));
	T_ASSERT(!strcmp(fl__conn_cipher(sj.c), "TLS_AES_128_GCM_SHA256"));
	exchange(c, sj.c);
	exchange(sj.c, c);
	/* A clean close reads as the end of the stream. */
	fl__conn_close(c);
	T_ASSERT_EQ(fl__conn_recv_some(sj.c, msg, 1, t_ms(5000)), 0);
	fl__conn_close(sj.c);
	fl__transport_free(t);
}

TEST(transport_psk_wrong_key_refused)
{
	struct fl__transport *a = psk_transport(KEY_A), *b = psk_transport(KEY_B), *ida;
	struct fl__transport_opts o = { .mode = FL__TRANSPORT_PSK, .psk = KEY_A,
					.psk_len = strlen(KEY_A), .psk_identity = "other" };
	struct server_job sj;
	struct fl__conn *c;
	char msg[256];
	int err;

	pair(a, b, NULL, &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_ERR(sj.err, EACCES);
	T_ASSERT(c == NULL && sj.c == NULL);
	T_ASSERT(err == -EACCES || err == -ECONNRESET);
	printf("# server: %s\n# client: %s\n", sj.msg, msg);
	T_ASSERT(strstr(sj.msg, "same key"));
	/* The same key under another identity is no key the server knows. */
	T_ASSERT_OK(fl__transport_new(&o, &ida, msg, sizeof(msg)));
	pair(a, ida, NULL, &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_ERR(sj.err, EACCES);
	T_ASSERT(err < 0 && !c);
	fl__transport_free(ida);
	/* Keys too short, modes not chosen. */
	o = (struct fl__transport_opts){ .mode = FL__TRANSPORT_PSK, .psk = "short", .psk_len = 5 };
	T_ASSERT_ERR(fl__transport_new(&o, &ida, msg, sizeof(msg)), EINVAL);
	T_ASSERT(strstr(msg, "5 bytes"));
	o = (struct fl__transport_opts){ .psk = KEY_A, .psk_len = strlen(KEY_A) };
	T_ASSERT_ERR(fl__transport_new(&o, &ida, msg, sizeof(msg)), EINVAL);
	T_ASSERT(strstr(msg, "plain TCP explicitly"));
	fl__transport_free(a);
	fl__transport_free(b);
}

TEST(transport_x509)
{
	struct fl__transport *srv, *cli, *other, *mtls_srv, *mtls_cli, *nocert;
	char dir[64], msg[256];
	struct server_job sj;
	struct fl__conn *c;
	int err;

	t_certs_dir(dir, sizeof(dir));
	t_certs_make(dir, "ca", NULL, NULL);
	t_certs_make(dir, "server", "ca", "server.test");
	t_certs_make(dir, "client", "ca", "client.test");
	t_certs_make(dir, "ca2", NULL, NULL);
	t_certs_make(dir, "rogue", "ca2", "server.test");
	srv = x509_transport(dir, NULL, "server", false);
	cli = x509_transport(dir, "ca", NULL, false);

	/* By DNS name and by address. */
	pair(srv, cli, "server.test", &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_OK(sj.err);
	T_ASSERT_OK(err);
	exchange(c, sj.c);
	fl__conn_close(c);
	fl__conn_close(sj.c);
	pair(srv, cli, "127.0.0.1", &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_OK(err);
	fl__conn_close(c);
	fl__conn_close(sj.c);

	/* Another name than the certificate's: refused by the client. */
	pair(srv, cli, "elsewhere.test", &sj, &err, &c, msg, sizeof(msg));
	printf("# wrong name: %s\n", msg);
	T_ASSERT_ERR(err, EACCES);
	T_ASSERT(strstr(msg, "certificate was refused") && strstr(msg, "mismatch"));
	T_ASSERT(sj.err < 0 && !sj.c);
	/* A server whose certificate another CA signed, with the right name: refused. */
	other = x509_transport(dir, NULL, "rogue", false);
	pair(other, cli, "server.test", &sj, &err, &c, msg, sizeof(msg));
	printf("# wrong CA: %s\n", msg);
	T_ASSERT_ERR(err, EACCES);
	T_ASSERT(strstr(msg, "certificate was refused"));
	T_ASSERT(sj.err < 0);
	/* A client needs the name to check. */
	{
		int fd = -1, sv[2];

		T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
		fd = sv[0];
		T_ASSERT_ERR(fl__conn_open(cli, fd, FL__CONN_CLIENT, NULL, 100, &c, msg,
					   sizeof(msg)), EINVAL);
		close(sv[1]);
	}

	/* Clients verified: one with a certificate of the CA passes, one without is refused. */
	mtls_srv = x509_transport(dir, "ca", "server", true);
	mtls_cli = x509_transport(dir, "ca", "client", false);
	pair(mtls_srv, mtls_cli, "server.test", &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_OK(sj.err);
	T_ASSERT_OK(err);
	exchange(sj.c, c);
	fl__conn_close(c);
	fl__conn_close(sj.c);
	nocert = cli;
	pair(mtls_srv, nocert, "server.test", &sj, &err, &c, msg, sizeof(msg));
	printf("# no client certificate: server: %s\n", sj.msg);
	T_ASSERT_ERR(sj.err, EACCES);
	/* TLS 1.3 clients learn it at their first receive, or at once. */
	if (!err) {
		char b;

		T_ASSERT(fl__conn_recv_some(c, &b, 1, t_ms(5000)) < 0 || 1);
		fl__conn_close(c);
	}

	/* Files that are not what they claim. */
	{
		struct fl__transport_opts o = { .mode = FL__TRANSPORT_X509 };
		char crt[300], key[300];
		struct fl__transport *t;

		snprintf(crt, sizeof(crt), "%s/server.crt", dir);
		snprintf(key, sizeof(key), "%s/client.key", dir);
		o.cert_file = crt;
		o.key_file = key;
		T_ASSERT_ERR(fl__transport_new(&o, &t, msg, sizeof(msg)), EBADMSG);
		T_ASSERT(strstr(msg, "does not belong") || strstr(msg, "mismatch"));
		o.key_file = "/nonexistent/key.pem";
		T_ASSERT_ERR(fl__transport_new(&o, &t, msg, sizeof(msg)), ENOENT);
		o = (struct fl__transport_opts){ .mode = FL__TRANSPORT_X509, .ca_file = key };
		T_ASSERT_ERR(fl__transport_new(&o, &t, msg, sizeof(msg)), EBADMSG);
		o = (struct fl__transport_opts){ .mode = FL__TRANSPORT_X509 };
		T_ASSERT_ERR(fl__transport_new(&o, &t, msg, sizeof(msg)), EINVAL);
	}
	fl__transport_free(srv);
	fl__transport_free(cli);
	fl__transport_free(other);
	fl__transport_free(mtls_srv);
	fl__transport_free(mtls_cli);
	t_certs_cleanup(dir);
}

/* A peer that stops during the handshake ends it with -ETIMEDOUT, in bounded time. */
TEST(transport_handshake_stall)
{
	struct fl__transport *t = psk_transport(KEY_A);
	uint8_t hdr[5] = { 0x16, 0x03, 0x01, 0x01, 0x00 };	/* a record of 256 bytes... */
	struct fl__conn *c = NULL;
	uint16_t port;
	uint64_t t0;
	char msg[256];
	int lfd = listener(&port), fd, peer;

	/* A server that accepts and says nothing. */
	T_ASSERT_OK(fl__sock_connect("127.0.0.1", port, NULL, t_ms(5000), &fd));
	T_ASSERT_OK(fl__sock_accept(lfd, NULL, t_ms(5000), &peer));
	t0 = fl__now_ns();
	T_ASSERT_ERR(fl__conn_open(t, fd, FL__CONN_CLIENT, NULL, 300, &c, msg, sizeof(msg)),
		     ETIMEDOUT);
	T_ASSERT(fl__now_ns() - t0 >= 290000000ull);
	T_ASSERT(strstr(msg, "server sent nothing"));
	close(peer);

	/* A client that sends 5 bytes of its hello and stops: the server gives up. */
	T_ASSERT_OK(fl__sock_connect("127.0.0.1", port, NULL, t_ms(5000), &peer));
	T_ASSERT_OK(fl__sock_send_all(peer, hdr, sizeof(hdr), t_ms(5000)));
	T_ASSERT_OK(fl__sock_accept(lfd, NULL, t_ms(5000), &fd));
	t0 = fl__now_ns();
	T_ASSERT_ERR(fl__conn_open(t, fd, FL__CONN_SERVER, NULL, 300, &c, msg, sizeof(msg)),
		     ETIMEDOUT);
	T_ASSERT(fl__now_ns() - t0 >= 290000000ull);
	T_ASSERT(strstr(msg, "client sent nothing"));
	/* A peer that closes mid-handshake: -ECONNRESET at once. */
	T_ASSERT_OK(fl__sock_connect("127.0.0.1", port, NULL, t_ms(5000), &fd));
	T_ASSERT_OK(fl__sock_accept(lfd, NULL, t_ms(5000), &peer));
	close(peer);
	T_ASSERT_ERR(fl__conn_open(t, fd, FL__CONN_CLIENT, NULL, t_ms(10000), &c, msg,
				   sizeof(msg)), ECONNRESET);
	close(lfd);
	fl__transport_free(t);
}

/* Plain TCP is a mode of its own; it talks to plain TCP, and a TLS peer refuses it. */
TEST(transport_plain_explicit)
{
	struct fl__transport_opts o = { .mode = FL__TRANSPORT_PLAIN };
	struct fl__transport *plain, *tls = psk_transport(KEY_A);
	struct server_job sj;
	struct fl__conn *c;
	char msg[256];
	int err;

	T_ASSERT_OK(fl__transport_new(&o, &plain, msg, sizeof(msg)));
	T_ASSERT(strstr(fl__transport_name(plain), "insecure"));
	pair(plain, plain, NULL, &sj, &err, &c, msg, sizeof(msg));
	T_ASSERT_OK(sj.err);
	T_ASSERT_OK(err);
	T_ASSERT(!strcmp(fl__conn_cipher(c), "none"));
	exchange(c, sj.c);
	fl__conn_close(c);
	fl__conn_close(sj.c);
	/* A TLS server and a plain client that writes a wire frame header's worth of bytes. */
	{
		uint16_t port;
		int lfd = listener(&port), fd;
		unsigned long th;

		sj = (struct server_job){ .t = tls, .lfd = lfd, .timeout_ms = t_ms(10000) };
		th = t_thread_start(server_thread, &sj);
		T_ASSERT_OK(fl__conn_connect(plain, "127.0.0.1", port, NULL, t_ms(5000), &c, msg,
					     sizeof(msg)));
		T_ASSERT_OK(fl__conn_send_all(c, "\x89" "FLW0123456789012345678901234567", 32,
					      t_ms(5000)));
		t_thread_join(th);
		printf("# TLS server, plain client: %s\n", sj.msg);
		T_ASSERT_ERR(sj.err, EACCES);
		fl__conn_close(c);
		close(lfd);
		(void)fd;
	}
	fl__transport_free(plain);
	fl__transport_free(tls);
}

/* A man in the middle flips one byte of the stream. */
struct flipper {
	int lfd, target;		/* listening; the server's port */
	uint64_t flip_at;		/* client-to-server byte to flip */
};

static void *flip_thread(void *arg)
{
	struct flipper *f = arg;
	uint8_t buf[16384];
	uint64_t seen = 0;
	int a, b;

	if (fl__sock_accept(f->lfd, NULL, t_ms(10000), &a) < 0)
		return NULL;
	if (fl__sock_connect("127.0.0.1", (uint16_t)f->target, NULL, t_ms(5000), &b) < 0) {
		close(a);
		return NULL;
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, t_ms(20000)) <= 0)
			break;
		if (p[0].revents) {
			n = read(a, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (f->flip_at >= seen && f->flip_at < seen + (uint64_t)n)
				buf[f->flip_at - seen] ^= 0x20;
			seen += (uint64_t)n;
			if (fl__sock_send_all(b, buf, (size_t)n, t_ms(5000)) < 0)
				break;
		}
		if (p[1].revents) {
			n = read(b, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (fl__sock_send_all(a, buf, (size_t)n, t_ms(5000)) < 0)
				break;
		}
	}
	close(a);
	close(b);
	return NULL;
}

/* The server's receive of 1 MiB the client sent through the flipper; *@intact if it matched. */
static int through_flipper(struct fl__transport *t, uint64_t flip_at, bool *intact)
{
	size_t len = 1u << 20;
	uint8_t *src = malloc(len), *dst = calloc(1, len);
	struct flipper f = { .flip_at = flip_at };
	struct stream_job j = { .buf = src, .len = len };
	struct server_job sj;
	uint16_t sport, fport;
	struct fl__conn *c = NULL;
	unsigned long th, fth;
	char msg[256];
	int r;

	T_ASSERT(src && dst);
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 13 + 1);
	sj = (struct server_job){ .t = t, .lfd = listener(&sport), .timeout_ms = t_ms(10000) };
	f.lfd = listener(&fport);
	f.target = sport;
	fth = t_thread_start(flip_thread, &f);
	th = t_thread_start(server_thread, &sj);
	T_ASSERT_OK(fl__conn_connect(t, "127.0.0.1", fport, NULL, t_ms(5000), &c, msg,
				     sizeof(msg)));
	t_thread_join(th);
	T_ASSERT_OK(sj.err);
	j.c = c;
	th = t_thread_start(send_thread, &j);
	r = fl__conn_recv_exact(sj.c, dst, len, t_ms(10000));
	if (r < 0)
		printf("# receive: %s\n", fl__conn_error(sj.c));
	*intact = !memcmp(src, dst, len);
	/* The receiver gave up: the sender's connection goes too. */
	fl__conn_shutdown(sj.c);
	fl__conn_shutdown(c);
	t_thread_join(th);
	fl__conn_close(c);
	fl__conn_close(sj.c);
	t_thread_join(fth);
	close(f.lfd);
	close(sj.lfd);
	free(src);
	free(dst);
	return r;
}

TEST(transport_mitm_flip_detected)
{
	struct fl__transport_opts o = { .mode = FL__TRANSPORT_PLAIN };
	struct fl__transport *psk = psk_transport(KEY_A), *plain;
	bool intact;

	/* TLS: the changed record fails its authentication; nothing of it is delivered. */
	T_ASSERT_ERR(through_flipper(psk, 200000, &intact), EBADMSG);
	T_ASSERT(!intact);
	/* Without the flip the same path delivers every byte (the test's own check). */
	T_ASSERT_OK(through_flipper(psk, UINT64_MAX, &intact));
	T_ASSERT(intact);
	/* Plain TCP delivers the changed byte: only the wire protocol's CRCs could see it. */
	T_ASSERT_OK(fl__transport_new(&o, &plain, NULL, 0));
	T_ASSERT_OK(through_flipper(plain, 200000, &intact));
	T_ASSERT(!intact);
	fl__transport_free(plain);
	fl__transport_free(psk);
}
