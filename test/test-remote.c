/* SPDX-License-Identifier: MIT */
/* The page server (faultline serve) and the remote store, against a real server process. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "certs.h"
#include "tests.h"
#include "net/crc32c.h"
#include "net/le.h"
#include "net/pgwire.h"
#include "net/sock.h"
#include "net/transport.h"
#include "remote/pgio.h"
#include "uffd/util.h"

/* ---------------------------------------------------------------- the codec */

static int enc(const struct fl__pg_msg *m, uint8_t *buf, size_t cap)
{
	char why[256];
	int n = fl__pg_encode(m, buf, cap, why, sizeof(why));

	if (n >= 0 && (m->type == FL__PG_WRITE || m->type == FL__PG_DATA)) {
		uint32_t d = m->run.data_len;

		T_ASSERT((size_t)n + d <= cap);
		memcpy(buf + n, m->run.data, d);
		n += (int)d;
	}
	return n;
}

/* Decode @n bytes at @b: 0 and *@m, or the error, with the reason in @why. */
static int dec(const uint8_t *b, size_t n, struct fl__pg_msg *m, char *why, size_t cap)
{
	struct fl__pg_hdr h;
	int r = fl__pg_parse_header(b, n, false, &h, why, cap);

	if (r)
		return r;
	if (h.hdr_len + (size_t)h.payload_len != n) {
		snprintf(why, cap, "test: %zu bytes, the header says %u", n,
			 h.hdr_len + h.payload_len);
		return -EMSGSIZE;
	}
	return fl__pg_parse_payload(&h, b + h.hdr_len, false, m, why, cap);
}

/* Fix the CRCs of an encoded message after the test changed a byte. */
static void fix_crcs(uint8_t *b)
{
	uint32_t plen = fl__le32(b + 12);

	fl__put_le32(b + 24, fl__crc32c(0, b + 32, plen));
	fl__put_le32(b + 28, fl__crc32c(0, b, 28));
}

TEST(pg_codec_roundtrip)
{
	static uint8_t buf[FL__PG_MAX_FRAME], pages[8 * 4096];
	uint8_t holes[8] = { 0x05 };	/* pages 0 and 2 of 6 are holes */
	struct fl__pg_msg m, d;
	char why[256];
	int n;

	for (size_t i = 0; i < sizeof(pages); i++)
		pages[i] = (uint8_t)(i * 7 + 1);
	m = (struct fl__pg_msg){ .type = FL__PG_OPEN, .seq = 9,
				 .open = { .flags = FL__PG_OPEN_WRITE, .name_len = 5,
					   .name = "a/b.c" } };
	n = enc(&m, buf, sizeof(buf));
	T_ASSERT_EQ(n, 32 + 8 + 5);
	T_ASSERT_OK(dec(buf, (size_t)n, &d, why, sizeof(why)));
	T_ASSERT(d.type == FL__PG_OPEN && d.seq == 9 && d.open.name_len == 5 &&
		 !memcmp(d.open.name, "a/b.c", 5) && d.open.flags == FL__PG_OPEN_WRITE);

	m = (struct fl__pg_msg){ .type = FL__PG_DATA, .seq = 77,
				 .run = { .offset = 1ull << 40, .len = 6 * 4096, .holes = holes,
					  .data = pages, .data_len = 4 * 4096 } };
	n = enc(&m, buf, sizeof(buf));
	T_ASSERT_EQ(n, 32 + 16 + 8 + 4 * 4096);
	T_ASSERT_OK(dec(buf, (size_t)n, &d, why, sizeof(why)));
	T_ASSERT(d.run.offset == 1ull << 40 && d.run.len == 6 * 4096 &&
		 d.run.data_len == 4 * 4096 && !memcmp(d.run.data, pages, 4 * 4096));
	T_ASSERT(fl__pg_hole(d.run.holes, 0) && !fl__pg_hole(d.run.holes, 1) &&
		 fl__pg_hole(d.run.holes, 2) && !fl__pg_hole(d.run.holes, 5));

	m = (struct fl__pg_msg){ .type = FL__PG_WRITE, .seq = 3,
				 .run = { .offset = 4096, .len = 2 * 4096, .data = pages,
					  .data_len = 2 * 4096 } };
	n = enc(&m, buf, sizeof(buf));
	T_ASSERT_OK(dec(buf, (size_t)n, &d, why, sizeof(why)));
	T_ASSERT(d.run.len == 8192 && !memcmp(d.run.data, pages, 8192));

	m = (struct fl__pg_msg){ .type = FL__PG_ERROR, .flags = FL__PG_F_CLOSE, .seq = 4,
				 .error = { .code = FL__PG_ERR_RANGE, .msg_len = 3, .msg = "far" } };
	n = enc(&m, buf, sizeof(buf));
	T_ASSERT_OK(dec(buf, (size_t)n, &d, why, sizeof(why)));
	T_ASSERT(d.error.code == FL__PG_ERR_RANGE && d.flags == FL__PG_F_CLOSE &&
		 d.error.msg_len == 3);
	T_ASSERT_EQ(fl__pg_error_to_errno(FL__PG_ERR_RANGE), ERANGE);

	/* The encoder refuses what a decoder must refuse. */
	m = (struct fl__pg_msg){ .type = FL__PG_READ, .run = { .offset = 100, .len = 4096 } };
	T_ASSERT_ERR(fl__pg_encode(&m, buf, sizeof(buf), why, sizeof(why)), EINVAL);
	T_ASSERT(strstr(why, "offset 100"));
	m.run.offset = 0;
	m.run.len = FL__PG_MAX_RUN + 4096;
	T_ASSERT_ERR(fl__pg_encode(&m, buf, sizeof(buf), why, sizeof(why)), EINVAL);
	m.run.offset = UINT64_MAX - 4095;
	m.run.len = 8192;
	T_ASSERT_ERR(fl__pg_encode(&m, buf, sizeof(buf), why, sizeof(why)), EINVAL);
	T_ASSERT(strstr(why, "wraps"));
	m = (struct fl__pg_msg){ .type = FL__PG_DATA,
				 .run = { .len = 2 * 4096, .holes = holes, .data = pages,
					  .data_len = 4096 } };
	/* holes 0x05 sets bit 2, past a run of 2 pages. */
	T_ASSERT_ERR(fl__pg_encode(&m, buf, sizeof(buf), why, sizeof(why)), EINVAL);
	T_ASSERT(strstr(why, "hole bit 2"));
}

TEST(pg_codec_refuses_malformed)
{
	static uint8_t buf[FL__PG_MAX_FRAME], pages[4 * 4096];
	uint8_t holes[8] = { 0 };
	struct fl__pg_msg m, d;
	char why[256];
	int n;

	/* A READ whose offset is not a multiple of 4096, with the CRCs right. */
	m = (struct fl__pg_msg){ .type = FL__PG_READ, .seq = 1, .run = { .len = 4096 } };
	n = enc(&m, buf, sizeof(buf));
	fl__put_le64(buf + 32, 12345);
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
	T_ASSERT(strstr(why, "offset 12345"));
	/* A length past the limit. */
	fl__put_le64(buf + 32, 0);
	fl__put_le32(buf + 40, FL__PG_MAX_RUN * 2);
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
	/* Wrapping. */
	fl__put_le64(buf + 32, UINT64_MAX & ~4095ull);
	fl__put_le32(buf + 40, 8192);
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
	T_ASSERT(strstr(why, "wraps"));
	/* A payload length out of the type's bounds is refused with the header, before any payload. */
	fl__put_le32(buf + 12, 1u << 30);
	fl__put_le32(buf + 28, fl__crc32c(0, buf, 28));
	T_ASSERT_ERR(fl__pg_parse_header(buf, 32, false, &(struct fl__pg_hdr){ 0 }, why,
					 sizeof(why)), EPROTO);
	T_ASSERT(strstr(why, "payload of 1073741824 bytes"));
	/* A bad CRC. */
	n = enc(&m, buf, sizeof(buf));
	buf[33] ^= 1;
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EBADMSG);
	/* A migration frame type, and a stranger. */
	n = enc(&m, buf, sizeof(buf));
	buf[5] = 3;
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
	T_ASSERT(strstr(why, "not a page-server message"));
	memcpy(buf, "GET / HTTP/1.1\r\n\r\n......................", 40);
	T_ASSERT_ERR(dec(buf, 40, &d, why, sizeof(why)), EPROTO);
	T_ASSERT(strstr(why, "GET "));
	/* DATA whose page count disagrees with its bitmap. */
	m = (struct fl__pg_msg){ .type = FL__PG_DATA,
				 .run = { .len = 4 * 4096, .holes = holes, .data = pages,
					  .data_len = 4 * 4096 } };
	n = enc(&m, buf, sizeof(buf));
	buf[32 + 16] = 0x01;	/* page 0 now a hole, but 4 data pages follow */
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
	T_ASSERT(strstr(why, "4 data pages, but 3"));
	/* OPEN with a name length that does not match its payload. */
	m = (struct fl__pg_msg){ .type = FL__PG_OPEN, .open = { .name_len = 3, .name = "abc" } };
	n = enc(&m, buf, sizeof(buf));
	fl__put_le16(buf + 32, 200);
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
	/* A name with a control character. */
	n = enc(&m, buf, sizeof(buf));
	buf[32 + 8 + 1] = '\n';
	fix_crcs(buf);
	T_ASSERT_ERR(dec(buf, (size_t)n, &d, why, sizeof(why)), EPROTO);
}

/*
 * The seeds of test/fuzz/corpus/pg-msg: one of each message and a stream of
 * several. Each must decode; with FL_PG_SEED_DIR set they are written there.
 */
TEST(pg_fuzz_seeds)
{
	static uint8_t buf[8][1 << 16], pages[4 * 4096];
	const char *dir = getenv("FL_PG_SEED_DIR");
	uint8_t holes[8] = { 0x02 };
	struct fl__pg_msg ms[] = {
		{ .type = FL__PG_OPEN, .open = { .flags = 1, .name_len = 8, .name = "disk.img" } },
		{ .type = FL__PG_OPENED, .opened = { .size = 1 << 20, .page_shift = 12 } },
		{ .type = FL__PG_READ, .seq = 2, .run = { .offset = 8192, .len = 4 * 4096 } },
		{ .type = FL__PG_DATA, .seq = 2, .run = { .offset = 8192, .len = 4 * 4096,
							  .holes = holes, .data = pages,
							  .data_len = 3 * 4096 } },
		{ .type = FL__PG_WRITE, .seq = 3, .run = { .offset = 0, .len = 4096,
							   .data = pages, .data_len = 4096 } },
		{ .type = FL__PG_WRITTEN, .seq = 3, .run = { .offset = 0, .len = 4096 } },
		{ .type = FL__PG_ERROR, .seq = 4, .flags = FL__PG_F_CLOSE,
		  .error = { .code = FL__PG_ERR_NAME, .msg_len = 7, .msg = "refused" } },
	};
	static uint8_t stream[1 << 16];
	size_t slen = 0;
	int len[8];

	for (size_t i = 0; i < sizeof(pages); i++)
		pages[i] = (uint8_t)(i % 251);
	for (int i = 0; i < 7; i++) {
		struct fl__pg_msg d;
		char why[256];

		len[i] = enc(&ms[i], buf[i], sizeof(buf[i]));
		T_ASSERT(len[i] > 0);
		T_ASSERT_OK(dec(buf[i], (size_t)len[i], &d, why, sizeof(why)));
		if (i != 3 && i != 4) {
			memcpy(stream + slen, buf[i], (size_t)len[i]);
			slen += (size_t)len[i];
		}
	}
	memcpy(buf[7], stream, slen);
	len[7] = (int)slen;
	for (int i = 0; dir && i < 8; i++) {
		static const char *const names[] = { "00-open", "01-opened", "02-read", "03-data",
						     "04-write", "05-written", "06-error",
						     "07-stream" };
		char path[512];
		FILE *fp;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		fp = fopen(path, "wbe");
		T_ASSERT(fp);
		T_ASSERT_EQ(fwrite(buf[i], 1, (size_t)len[i], fp), (size_t)len[i]);
		T_ASSERT_EQ(fclose(fp), 0);
	}
}

/* ---------------------------------------------------------------- a real server */

struct srv {
	const char *const *security;	/* --key FILE or --tls-* arguments; NULL: --insecure */
	pid_t pid;
	uint16_t port;
	char dir[64];
	char log[96];
};

/* A fresh directory for the served objects. */
static void srv_dir(struct srv *sv)
{
	snprintf(sv->dir, sizeof(sv->dir), "/tmp/fl-serve-XXXXXX");
	T_ASSERT(mkdtemp(sv->dir));
	snprintf(sv->log, sizeof(sv->log), "%s.log", sv->dir);
}

static void read_log(const struct srv *sv, char *text, size_t cap)
{
	int fd = open(sv->log, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, text, cap - 1) : -1;

	text[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

/*
 * Start `faultline serve --listen 127.0.0.1:PORT --dir DIR --insecure -v
 * ARGS...` (PORT: @port, 0 for any) and return once it listens, its port in
 * sv->port (read from its "listening on" line).
 */
static void srv_start(struct srv *sv, uint16_t port, const char *const *args)
{
	char path[PATH_MAX], listen_arg[32], fdarg[16], line[128] = "", *colon;
	const char *argv[32] = { "faultline", "serve", "--dir", sv->dir, "-v", "--listen",
				 listen_arg };
	int ready[2], out[2], n = 7;
	size_t got = 0;
	char c;

	t_tool_path(path, sizeof(path));
	snprintf(listen_arg, sizeof(listen_arg), "127.0.0.1:%u", port);
	for (int i = 0; args && args[i]; i++)
		argv[n++] = args[i];
	if (!sv->security)
		argv[n++] = "--insecure";
	for (int i = 0; sv->security && sv->security[i]; i++)
		argv[n++] = sv->security[i];
	T_ASSERT_SYS(pipe2(ready, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(out, O_CLOEXEC));
	snprintf(fdarg, sizeof(fdarg), "%d", ready[1]);
	argv[n++] = "--ready-fd";
	argv[n++] = fdarg;
	argv[n] = NULL;
	sv->pid = fork();
	T_ASSERT_SYS(sv->pid);
	if (sv->pid == 0) {
		int lfd = open(sv->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (lfd < 0 || dup2(lfd, 2) < 0 || dup2(out[1], 1) < 0 ||
		    fcntl(ready[1], F_SETFD, 0) < 0)
			_exit(126);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(ready[1]);
	close(out[1]);
	if (read(ready[0], &c, 1) != 1) {
		static char text[8192];

		read_log(sv, text, sizeof(text));
		t_fail(__FILE__, __LINE__, "faultline serve did not start:\n%s", text);
	}
	close(ready[0]);
	/* The line was written and flushed before the ready byte. */
	while (got < sizeof(line) - 1 && !strchr(line, '\n')) {
		ssize_t r = read(out[0], line + got, sizeof(line) - 1 - got);

		T_ASSERT(r > 0);
		got += (size_t)r;
		line[got] = '\0';
	}
	close(out[0]);
	colon = strrchr(line, ':');
	T_ASSERT(!strncmp(line, "listening on 127.0.0.1:", 23) && colon);
	sv->port = (uint16_t)atoi(colon + 1);
	T_ASSERT(sv->port);
	T_ASSERT(!port || sv->port == port);
}

/* Send @sig and wait: the exit status (128 + signal if killed). */
static int srv_stop(struct srv *sv, int sig)
{
	int st;

	kill(sv->pid, sig);
	T_ASSERT_EQ(waitpid(sv->pid, &st, 0), sv->pid);
	sv->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* SIGTERM, and it must exit 0 (else the test fails with the server's log). */
static void srv_stop_ok(struct srv *sv)
{
	static char text[16384];
	int st = srv_stop(sv, SIGTERM);

	if (st) {
		read_log(sv, text, sizeof(text));
		t_fail(__FILE__, __LINE__, "faultline serve exited with %d:\n%s", st, text);
	}
}

static void srv_cleanup(struct srv *sv)
{
	char cmd[200];

	if (sv->pid)
		srv_stop(sv, SIGKILL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", sv->dir, sv->log);
	T_ASSERT_EQ(system(cmd), 0);
}

/* A file of @len bytes under the directory: random bytes, with zero pages at every 5th. */
static uint8_t *make_object(const struct srv *sv, const char *name, size_t len)
{
	uint8_t *b = malloc(len);
	char path[256];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	int fd;

	T_ASSERT(b);
	for (size_t i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(b + i, &x, 8);
	}
	for (size_t p = 0; p < len / 4096; p += 5)
		memset(b + p * 4096, 0, 4096);
	snprintf(path, sizeof(path), "%s/%s", sv->dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(write(fd, b, len), (ssize_t)len);
	close(fd);
	return b;
}

/* A server over a fresh directory holding one object, @name of @len bytes (make_object's). */
static uint8_t *srv_up(struct srv *sv, const char *name, size_t len)
{
	uint8_t *want;

	srv_dir(sv);
	want = make_object(sv, name, len);
	srv_start(sv, 0, NULL);
	return want;
}

/* Stopped as srv_stop_ok says, its directory removed. */
static void srv_down(struct srv *sv)
{
	srv_stop_ok(sv);
	srv_cleanup(sv);
}

/* The server's file @name holds @model, page by page (its first @len bytes). */
static void expect_file(const struct srv *sv, const char *name, const uint8_t *model, size_t len)
{
	uint8_t *got = malloc(len);
	char path[256];
	int fd;

	T_ASSERT(got);
	snprintf(path, sizeof(path), "%s/%s", sv->dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(read(fd, got, len), (ssize_t)len);
	close(fd);
	for (size_t pg = 0; pg < len / 4096; pg++)
		if (memcmp(got + pg * 4096, model + pg * 4096, 4096))
			t_fail(__FILE__, __LINE__, "page %zu of the server's file is not as written",
			       pg);
	free(got);
}

/* 16 bytes of each page of @len at @a, somewhere in it, written; the same into @model. */
static void write_pages(uint8_t *a, uint8_t *model, size_t len)
{
	for (size_t pg = 0; pg < len / 4096; pg++) {
		size_t at = (pg * 97) % (4096 - 16);

		memset(a + pg * 4096 + at, (int)(pg % 251) + 1, 16);
		memset(model + pg * 4096 + at, (int)(pg % 251) + 1, 16);
	}
}

static char *url_of(const struct srv *sv, const char *name)
{
	static char url[300];

	snprintf(url, sizeof(url), "faultline://127.0.0.1:%u/%s", sv->port, name);
	return url;
}

static int remote_open(const struct srv *sv, const char *name, uint32_t flags, int deadline_ms,
		       struct fl_store **ret)
{
	struct fl_store_remote_opts o = {
		.sz = sizeof(o),
		.flags = flags | FL_STORE_REMOTE_INSECURE,
		.connections = 3,
		.deadline_ms = deadline_ms,
	};

	return fl_store_remote_open(url_of(sv, name), &o, ret);
}

/* Plain TCP, for the raw connections of the tests (the test's, never freed: it ends). */
static struct fl__transport *plain(void)
{
	static struct fl__transport *t;
	struct fl__transport_opts o = { .mode = FL__TRANSPORT_PLAIN };

	if (!t)
		T_ASSERT_OK(fl__transport_new(&o, &t, NULL, 0));
	return t;
}

/* A raw client connection with an OPEN of @name answered (OPENED expected). */
static struct fl__conn *raw_open(const struct srv *sv, const char *name, struct fl__pg_rx *rx)
{
	struct fl__sock_opts so = { 0 };
	struct fl__pg_msg m = {
		.type = FL__PG_OPEN,
		.open = { .name_len = (uint16_t)strlen(name), .name = name },
	};
	struct fl__conn *c;

	T_ASSERT_OK(fl__conn_connect(plain(), "127.0.0.1", sv->port, &so, t_ms(5000), &c, NULL,
				     0));
	T_ASSERT_OK(fl__pg_send(c, &m, t_ms(5000)));
	T_ASSERT_EQ(fl__pg_recv(c, rx, -1, t_ms(5000), t_ms(5000), &m), 1);
	T_ASSERT_EQ(m.type, FL__PG_OPENED);
	return c;
}

TEST(serve_pager_reads_match_file)
{
	const size_t len = 3u << 20;	/* more than one run of 2 MiB */
	static const uint32_t windows[] = { 0, 64u << 10, 1u << 20 };
	struct srv sv = { 0 };
	struct fl_store *s;
	uint8_t *want, *buf = malloc(len);
	uint64_t holes[(3u << 20) / 4096 / 64] = { 0 };

	T_ASSERT(buf);
	want = srv_up(&sv, "obj", len);
	T_ASSERT_OK(remote_open(&sv, "obj", 0, t_ms(10000), &s));
	T_ASSERT_EQ(fl_store_size(s), len);
	T_ASSERT(fl_store_caps(s) & FL_STORE_READONLY);
	T_ASSERT(fl_store_caps(s) & FL_STORE_HOLES);
	/* One read of the whole object (two runs), holes where the zero pages are. */
	T_ASSERT_OK(fl_store_read(s, 0, buf, len, 4096, holes));
	for (size_t p = 0; p < len / 4096; p++) {
		bool hole = holes[p / 64] >> (p % 64) & 1;

		T_ASSERT_EQ(hole, p % 5 == 0);
		if (!hole)
			T_ASSERT(!memcmp(buf + p * 4096, want + p * 4096, 4096));
	}
	/* A read past the end is refused by the store's bounds. */
	T_ASSERT_ERR(fl_store_read(s, len, buf, 4096, 4096, holes), EINVAL);
	/* Through pagers, with each prefetch window: every byte as in the file. */
	for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
		struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
		struct fl_region_opts o = t_region_opts(s, len);
		struct fl_region *r;

		o.prefetch = windows[w] ? FL_PREFETCH_FIXED : FL_PREFETCH_NONE;
		o.prefetch_max = windows[w];
		T_ASSERT_OK(fl_region_add(p, &o, &r));
		T_ASSERT_OK(fl_pager_start(p));
		T_ASSERT(!memcmp(fl_region_addr(r), want, len));
		fl_pager_destroy(p);
	}
	fl_store_destroy(s);
	srv_down(&sv);
	free(want);
	free(buf);
}

/* Wait (bounded) until thread @tid, joined, is gone from /proc/self/task. */
static void task_gone(pid_t tid)
{
	uint64_t until = fl__now_ns() + (uint64_t)t_ms(10000) * 1000000;
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d", (int)tid);
	while (access(path, F_OK) == 0) {
		if (fl__now_ns() > until)
			t_fail(__FILE__, __LINE__, "thread %d, joined, still in /proc/self/task",
			       (int)tid);
		sched_yield();
	}
}

/* The threads of this process, from /proc/self/task. */
static unsigned int thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	unsigned int n = 0;
	struct dirent *e;

	T_ASSERT(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

struct reader {
	struct fl_store *s;
	const uint8_t *want;
	size_t len;
	unsigned int seed, bad;
	pid_t tid;		/* the thread's id, set by it */
};

/* Single pages and reads of several runs, at pseudo-random places, each checked. */
static void *reader_thread(void *arg)
{
	struct reader *rd = arg;
	uint64_t holes[(3u << 20) / 4096 / 64];
	unsigned int x = rd->seed;
	uint8_t *buf;

	rd->tid = gettid();
	if (!rd->s)
		return NULL;
	buf = malloc(3u << 20);
	if (!buf)
		abort();
	for (int i = 0; i < 40; i++) {
		size_t n = i % 8 == 7 ? (3u << 20) : 4096, pages = rd->len / 4096 - n / 4096;
		size_t off;

		x = x * 1103515245u + 12345u;
		off = (size_t)(x >> 8) % (pages + 1) * 4096;
		memset(holes, 0, sizeof(holes));
		if (fl_store_read(rd->s, off, buf, n, 4096, holes)) {
			rd->bad++;
			continue;
		}
		for (size_t p = 0; p < n / 4096; p++) {
			bool hole = holes[p / 64] >> (p % 64) & 1;

			if (hole ? !t_all(rd->want + off + p * 4096, 4096, 0) :
			    memcmp(buf + p * 4096, rd->want + off + p * 4096, 4096) != 0)
				rd->bad++;
		}
	}
	free(buf);
	return NULL;
}

/*
 * Callers read their own answers: the store runs no thread (a fault waits
 * for the server alone), and more callers than connections take turns,
 * reads of several runs spreading over the idle ones; every byte right.
 */
TEST(serve_callers_share_connections)
{
	const size_t len = 6u << 20;
	struct fl_store_remote_opts o = { .sz = sizeof(o), .flags = FL_STORE_REMOTE_INSECURE,
					  .connections = 2, .deadline_ms = t_ms(20000) };
	struct reader rd[4];
	pthread_t tid[4];
	struct srv sv = { 0 };
	struct fl_store *s;
	unsigned int before;
	uint8_t *want;

	srv_dir(&sv);
	want = make_object(&sv, "obj", len);
	srv_start(&sv, 0, NULL);
	/*
	 * A thread started and joined first: ThreadSanitizer starts its own at
	 * the first. pthread_join() returns before the kernel has taken the
	 * thread out of /proc/self/task, so the count waits for that.
	 */
	rd[0] = (struct reader){ 0 };
	T_ASSERT_EQ(pthread_create(&tid[0], NULL, reader_thread, &rd[0]), 0);
	T_ASSERT_EQ(pthread_join(tid[0], NULL), 0);
	task_gone(rd[0].tid);
	before = thread_count();
	T_ASSERT_OK(fl_store_remote_open(url_of(&sv, "obj"), &o, &s));
	T_ASSERT_EQ(thread_count(), before);
	for (unsigned int i = 0; i < 4; i++) {
		rd[i] = (struct reader){ .s = s, .want = want, .len = len, .seed = i + 1 };
		T_ASSERT_EQ(pthread_create(&tid[i], NULL, reader_thread, &rd[i]), 0);
	}
	for (unsigned int i = 0; i < 4; i++) {
		T_ASSERT_EQ(pthread_join(tid[i], NULL), 0);
		T_ASSERT_EQ(rd[i].bad, 0);
		task_gone(rd[i].tid);
	}
	T_ASSERT_EQ(thread_count(), before);
	fl_store_destroy(s);
	srv_stop_ok(&sv);
	srv_cleanup(&sv);
	free(want);
}

TEST(serve_writes_persist)
{
	const size_t len = 1u << 20;
	struct srv sv = { 0 };
	struct fl_store *s, *ro;
	uint8_t *want, *page = malloc(3 * 4096);

	T_ASSERT(page);
	want = srv_up(&sv, "obj", len);
	T_ASSERT_OK(remote_open(&sv, "obj", FL_STORE_REMOTE_WRITABLE, t_ms(10000), &s));
	T_ASSERT(!(fl_store_caps(s) & FL_STORE_READONLY));
	memset(page, 0xa5, 3 * 4096);
	memcpy(want + 7 * 4096, page, 3 * 4096);
	T_ASSERT_OK(fl_store_write(s, 7 * 4096, page, 3 * 4096));
	/* The whole object in one write too (one run, all pages). */
	for (size_t i = 0; i < len; i += 4096)
		want[i + 17] = (uint8_t)(i >> 12);
	T_ASSERT_OK(fl_store_write(s, 0, want, len));
	/* A read-only store refuses writes before they leave. */
	T_ASSERT_OK(remote_open(&sv, "obj", 0, t_ms(10000), &ro));
	T_ASSERT_ERR(fl_store_write(ro, 0, page, 4096), EROFS);
	fl_store_destroy(ro);
	fl_store_destroy(s);
	/* In the file, as written: the server answered WRITTEN after pwrite. */
	expect_file(&sv, "obj", want, len);
	srv_down(&sv);
	free(want);
	free(page);
}

TEST(serve_snapshot_file)
{
	const size_t len = 64 * 4096;
	struct srv sv = { 0 };
	struct fl_snapshot_writer *w;
	struct fl_store *s;
	uint8_t *data = malloc(len), *buf = malloc(len);
	uint64_t holes[1] = { 0 };
	char path[256];

	T_ASSERT(data && buf);
	srv_dir(&sv);
	fl_pattern_fill(data, 0, len, 42);
	snprintf(path, sizeof(path), "%s/vm.snap", sv.dir);
	T_ASSERT_OK(fl_snapshot_writer_create(path, NULL, &w));
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x10000000, len, 4096, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 0, data, len / 2));
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, len / 2, len / 2, FL_SNAPSHOT_MARK_ZERO));
	T_ASSERT_OK(fl_snapshot_writer_finish(w, NULL));
	srv_start(&sv, 0, NULL);
	T_ASSERT_ERR(remote_open(&sv, "vm.snap", FL_STORE_REMOTE_WRITABLE, t_ms(10000), &s),
		     EROFS);
	T_ASSERT_OK(remote_open(&sv, "vm.snap", 0, t_ms(10000), &s));
	T_ASSERT_EQ(fl_store_size(s), len);
	T_ASSERT_OK(fl_store_read(s, 0, buf, len, 4096, holes));
	T_ASSERT(!memcmp(buf, data, len / 2));
	T_ASSERT_EQ(holes[0], ~0ull << 32);	/* the second half: zero pages, holes */
	fl_store_destroy(s);
	srv_down(&sv);
	free(data);
	free(buf);
}

TEST(serve_name_escapes_refused)
{
	struct srv sv = { 0 };
	struct fl_store *s;
	char path[256], target[256];
	static const char *const bad[] = { "../x", "/etc/passwd", "sub/../../x", "sub/..",
					   "out-link", "sub/out-dir/passwd" };

	srv_dir(&sv);
	free(make_object(&sv, "inside", 8192));
	snprintf(path, sizeof(path), "%s/sub", sv.dir);
	T_ASSERT_SYS(mkdir(path, 0755));
	snprintf(path, sizeof(path), "%s/out-link", sv.dir);
	T_ASSERT_SYS(symlink("/etc/passwd", path));
	snprintf(path, sizeof(path), "%s/sub/out-dir", sv.dir);
	T_ASSERT_SYS(symlink("/etc", path));
	snprintf(path, sizeof(path), "%s/sub/in-link", sv.dir);
	snprintf(target, sizeof(target), "../inside");
	T_ASSERT_SYS(symlink(target, path));
	srv_start(&sv, 0, NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = remote_open(&sv, bad[i], 0, t_ms(10000), &s);

		if (r != -EACCES)
			t_fail(__FILE__, __LINE__, "\"%s\": %d (%s), not -EACCES", bad[i], r,
			       strerror(-r));
	}
	T_ASSERT_ERR(remote_open(&sv, "missing", 0, t_ms(10000), &s), ENOENT);
	T_ASSERT_ERR(remote_open(&sv, "sub", 0, t_ms(10000), &s), EACCES);
	/* A link that stays inside is followed. */
	T_ASSERT_OK(remote_open(&sv, "sub/in-link", 0, t_ms(10000), &s));
	T_ASSERT_EQ(fl_store_size(s), 8192);
	fl_store_destroy(s);
	srv_down(&sv);
}

/* Receive on a raw connection: the next message's type (ERROR: its code in *@code), or 0 at EOF. */
static int raw_next(struct fl__conn *c, struct fl__pg_rx *rx, uint32_t *code,
		    struct fl__pg_msg *ret)
{
	struct fl__pg_msg m;
	int r = fl__pg_recv(c, rx, -1, t_ms(10000), t_ms(10000), &m);

	if (r <= 0) {
		if (r < 0)
			t_fail(__FILE__, __LINE__, "recv: %s: %s", strerror(-r), rx->msg);
		return 0;
	}
	if (m.type == FL__PG_ERROR && code)
		*code = m.error.code;
	if (ret)
		*ret = m;
	return m.type;
}

TEST(serve_malformed_closes_only_that_connection)
{
	static const uint8_t garbage[64] = "\x89" "FLW" "\x01\x22\x00\x00 not a real header...";
	struct fl__pg_rx rx_a = { 0 }, rx_b = { 0 };
	struct fl__pg_msg m;
	struct srv sv = { 0 };
	struct fl_store *s;
	uint8_t *want, buf[4096];
	uint32_t code = 0;
	struct fl__conn *a, *b;

	want = srv_up(&sv, "obj", 64 * 4096);
	T_ASSERT_OK(remote_open(&sv, "obj", 0, t_ms(10000), &s));
	a = raw_open(&sv, "obj", &rx_a);
	b = raw_open(&sv, "obj", &rx_b);
	/* A bad header on a: ERROR PROTO with the reason, then the server closes a. */
	T_ASSERT_OK(fl__conn_send_all(a, garbage, sizeof(garbage), t_ms(5000)));
	T_ASSERT_EQ(raw_next(a, &rx_a, &code, &m), FL__PG_ERROR);
	T_ASSERT_EQ(code, FL__PG_ERR_PROTO);
	T_ASSERT(m.flags & FL__PG_F_CLOSE);
	T_ASSERT(memmem(m.error.msg, m.error.msg_len, "header length", 13));
	T_ASSERT_EQ(raw_next(a, &rx_a, NULL, NULL), 0);
	fl__conn_close(a);
	/* A READ far past the end on b: an error for that request only, b stays open. */
	{
		struct fl__pg_msg d;

		m = (struct fl__pg_msg){ .type = FL__PG_READ, .seq = 5,
					 .run = { .offset = 1ull << 40, .len = 4096 } };

		T_ASSERT_OK(fl__pg_send(b, &m, t_ms(5000)));
		T_ASSERT_EQ(raw_next(b, &rx_b, &code, &d), FL__PG_ERROR);
		T_ASSERT_EQ(code, FL__PG_ERR_RANGE);
		T_ASSERT_EQ(d.seq, 5);
		T_ASSERT(!(d.flags & FL__PG_F_CLOSE));
		m.seq = 6;
		m.run.offset = 4096;
		T_ASSERT_OK(fl__pg_send(b, &m, t_ms(5000)));
		T_ASSERT_EQ(raw_next(b, &rx_b, NULL, &d), FL__PG_DATA);
		T_ASSERT(d.seq == 6 && d.run.data_len == 4096 &&
			 !memcmp(d.run.data, want + 4096, 4096));
	}
	/* A message a client must not send (DATA) on b: closed as malformed. */
	{
		uint8_t holes[8] = { 0 };

		m = (struct fl__pg_msg){ .type = FL__PG_DATA,
					 .run = { .len = 4096, .holes = holes, .data = buf,
						  .data_len = 4096 } };

		memset(buf, 1, sizeof(buf));
		T_ASSERT_OK(fl__pg_send(b, &m, t_ms(5000)));
		T_ASSERT_EQ(raw_next(b, &rx_b, &code, NULL), FL__PG_ERROR);
		T_ASSERT_EQ(code, FL__PG_ERR_PROTO);
		T_ASSERT_EQ(raw_next(b, &rx_b, NULL, NULL), 0);
		fl__conn_close(b);
	}
	/* The store's connections carry on. */
	T_ASSERT_OK(fl_store_read(s, 4096, buf, 4096, 4096, (uint64_t[1]){ 0 }));
	T_ASSERT(!memcmp(buf, want + 4096, 4096));
	fl_store_destroy(s);
	srv_stop_ok(&sv);
	fl__pg_rx_fini(&rx_a);
	fl__pg_rx_fini(&rx_b);
	srv_cleanup(&sv);
	free(want);
}

TEST(serve_silent_connections_and_idle_timeout)
{
	const char *args[] = { "--idle-timeout", NULL, NULL };
	struct fl__pg_rx rx = { 0 };
	struct srv sv = { 0 };
	struct fl_store *s;
	uint8_t *want, *buf = malloc(64 * 4096);
	char idle[16];
	struct fl__conn *silent[100], *fd;
	uint32_t code = 0;

	T_ASSERT(buf);
	srv_dir(&sv);
	want = make_object(&sv, "obj", 64 * 4096);
	/* Long enough not to fire while the test runs under a sanitizer, short enough to see. */
	snprintf(idle, sizeof(idle), "%d", t_ms(3000));
	args[1] = idle;
	srv_start(&sv, 0, args);
	/* 100 connections that say nothing, and one that stops inside a header. */
	for (int i = 0; i < 100; i++) {
		struct fl__sock_opts so = { 0 };

		T_ASSERT_OK(fl__conn_connect(plain(), "127.0.0.1", sv.port, &so, t_ms(5000),
					     &silent[i], NULL, 0));
	}
	T_ASSERT_OK(fl__conn_send_all(silent[99], "\x89" "FL", 3, t_ms(5000)));
	/* A real client is served meanwhile, on connections made after them. */
	T_ASSERT_OK(remote_open(&sv, "obj", 0, t_ms(10000), &s));
	T_ASSERT_OK(fl_store_read(s, 0, buf, 64 * 4096, 4096, (uint64_t[1]){ 0 }));
	for (size_t p = 1; p < 64; p++)
		if (p % 5)
			T_ASSERT(!memcmp(buf + p * 4096, want + p * 4096, 4096));
	/* The silent ones are closed after the idle timeout, with ERROR IDLE. */
	fd = raw_open(&sv, "obj", &rx);
	T_ASSERT_EQ(raw_next(silent[0], &rx, &code, NULL), FL__PG_ERROR);
	T_ASSERT_EQ(code, FL__PG_ERR_IDLE);
	T_ASSERT_EQ(raw_next(fd, &rx, &code, NULL), FL__PG_ERROR);
	T_ASSERT_EQ(code, FL__PG_ERR_IDLE);
	for (int i = 0; i < 100; i++)
		fl__conn_close(silent[i]);
	fl__conn_close(fd);
	/* The store reconnects when it is asked again. */
	T_ASSERT_OK(fl_store_read(s, 4096, buf, 4096, 4096, (uint64_t[1]){ 0 }));
	T_ASSERT(!memcmp(buf, want + 4096, 4096));
	fl_store_destroy(s);
	srv_stop_ok(&sv);
	fl__pg_rx_fini(&rx);
	srv_cleanup(&sv);
	free(want);
	free(buf);
}

TEST(serve_sigterm_answers_then_exits)
{
	struct fl__pg_rx rx = { 0 }, rx2 = { 0 };
	struct srv sv = { 0 };
	struct fl__pg_msg m, d;
	uint8_t *want;
	uint32_t code = 0;
	struct fl__conn *fd, *idle;

	want = srv_up(&sv, "obj", 4u << 20);
	fd = raw_open(&sv, "obj", &rx);
	idle = raw_open(&sv, "obj", &rx2);
	/* Two reads of 2 MiB sent, then SIGTERM: both are answered whole, then SHUTDOWN. */
	for (int i = 0; i < 2; i++) {
		m = (struct fl__pg_msg){ .type = FL__PG_READ, .seq = 10 + (unsigned int)i,
					 .run = { .offset = (uint64_t)i << 21, .len = 2u << 20 } };
		T_ASSERT_OK(fl__pg_send(fd, &m, t_ms(5000)));
	}
	kill(sv.pid, SIGTERM);
	for (int i = 0; i < 2; i++) {
		uint32_t data = 0;

		T_ASSERT_EQ(raw_next(fd, &rx, NULL, &d), FL__PG_DATA);
		T_ASSERT_EQ(d.seq, 10 + i);
		for (uint32_t p = 0; p < 512; p++) {
			size_t at = ((size_t)i << 21) + (size_t)p * 4096;

			if (fl__pg_hole(d.run.holes, p)) {
				T_ASSERT(t_all(want + at, 4096, 0));
			} else {
				T_ASSERT(!memcmp(d.run.data + (size_t)data * 4096, want + at, 4096));
				data++;
			}
		}
	}
	T_ASSERT_EQ(raw_next(fd, &rx, &code, NULL), FL__PG_ERROR);
	T_ASSERT_EQ(code, FL__PG_ERR_SHUTDOWN);
	T_ASSERT_EQ(raw_next(fd, &rx, NULL, NULL), 0);
	T_ASSERT_EQ(raw_next(idle, &rx2, &code, NULL), FL__PG_ERROR);
	T_ASSERT_EQ(code, FL__PG_ERR_SHUTDOWN);
	{
		int st;

		T_ASSERT_EQ(waitpid(sv.pid, &st, 0), sv.pid);
		sv.pid = 0;
		T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	fl__conn_close(fd);
	fl__conn_close(idle);
	fl__pg_rx_fini(&rx);
	fl__pg_rx_fini(&rx2);
	srv_cleanup(&sv);
	free(want);
}

/* A thread that reads one byte of a pager region (it may block on the fault). */
struct toucher {
	volatile uint8_t *p;
	uint8_t seen;
	int efd;
};

TEST(serve_outage_faults_wait_then_resume)
{
	const size_t len = 64 * 4096;
	struct srv sv = { 0 };
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts o;
	struct t_access a;
	uint8_t *want, *mem;
	uint16_t port;

	want = srv_up(&sv, "obj", len);
	port = sv.port;
	/* Waits through any outage (-1): a fault blocks until the server is back. */
	T_ASSERT_OK(remote_open(&sv, "obj", 0, -1, &s));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	o = t_region_opts(s, len);
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	mem = fl_region_addr(r);
	T_ASSERT_EQ(mem[4096 + 3], want[4096 + 3]);
	/* The server dies; a fault on another page waits for it. */
	T_ASSERT_EQ(srv_stop(&sv, SIGKILL), 128 + SIGKILL);
	t_access_start(&a, mem + 7 * 4096 + 5, false, 0);
	T_ASSERT(t_wait_fault_blocked(getpid(), 10000));
	T_ASSERT(!t_access_finished(&a));
	/* Back on the same port: the store reconnects and the fault completes with the data. */
	srv_start(&sv, port, NULL);
	T_ASSERT_EQ(t_access_join(&a), want[7 * 4096 + 5]);
	T_ASSERT(!memcmp(mem, want, len));
	fl_pager_destroy(p);
	fl_store_destroy(s);
	srv_down(&sv);
	free(want);
}

TEST(serve_outage_past_deadline_sigbus)
{
	const size_t len = 64 * 4096;
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct srv sv = { 0 };
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts o;
	uint8_t *want, *mem;

	want = srv_up(&sv, "obj", len);
	T_ASSERT_OK(remote_open(&sv, "obj", 0, t_ms(500), &s));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	o = t_region_opts(s, len);
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	mem = fl_region_addr(r);
	T_ASSERT_EQ(mem[3], want[3]);
	T_ASSERT_EQ(mem[4096 + 1], want[4096 + 1]);
	T_ASSERT_EQ(srv_stop(&sv, SIGKILL), 128 + SIGKILL);
	sigemptyset(&sa.sa_mask);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	T_ASSERT_SYS(sigaction(SIGSEGV, &sa, NULL));
	/* Never zeros: the page the server can no longer give is poisoned. */
	T_ASSERT(t_read_sigbus(mem + 9 * 4096));
	/* Pages already here stay as they were. */
	T_ASSERT_EQ(mem[4096 + 1], want[4096 + 1]);
	fl_pager_destroy(p);
	fl_store_destroy(s);
	srv_cleanup(&sv);
	free(want);
}

TEST(serve_tool_usage_errors)
{
	static struct t_run run;
	char path[PATH_MAX], dir[] = "/tmp/fl-serve-args-XXXXXX", file[64];
	struct {
		const char *args[10];
		const char *says;
	} cases[] = {
		{ { "--dir", dir, "--insecure" }, "--listen ADDR:PORT is required" },
		{ { "--listen", "127.0.0.1:0", "--insecure" }, "--dir DIR is required" },
		{ { "--listen", "127.0.0.1", "--dir", dir, "--insecure" }, "not ADDR:PORT" },
		{ { "--listen", "127.0.0.1:70000", "--dir", dir, "--insecure" }, "not ADDR:PORT" },
		{ { "--listen", "[::1:7", "--dir", dir, "--insecure" }, "not ADDR:PORT" },
		{ { "--listen", "127.0.0.1:0", "--dir", "/nonexistent-fl", "--insecure" },
		  "No such file" },
		{ { "--listen", "127.0.0.1:0", "--dir", file, "--insecure" }, "not a directory" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir }, "--insecure" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--max-clients", "0" },
		  "--max-clients 0" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--idle-timeout", "x" },
		  "--idle-timeout x" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--ready-fd", "999" },
		  "--ready-fd 999" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--bogus" },
		  "unknown option '--bogus'" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "extra" },
		  "unexpected argument 'extra'" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--key", file },
		  "exclude each other" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--key", file }, "at least 16" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--tls-cert", file },
		  "--tls-cert and --tls-key are both needed" },
		{ { "--listen", "127.0.0.1:0", "--dir", dir, "--tls-cert", file, "--tls-key", file,
		    "--verify-peer" }, "--verify-peer and --tls-ca go together" },
	};
	int fd;

	t_tool_path(path, sizeof(path));
	T_ASSERT(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/f", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	T_ASSERT_SYS(fd);
	close(fd);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[12] = { "faultline", "serve" };
		int n = 2;

		for (int j = 0; cases[i].args[j]; j++)
			argv[n++] = (char *)cases[i].args[j];
		argv[n] = NULL;
		t_run_capture(&run, path, argv, NULL);
		if (run.status != 2 || !strstr(run.err, cases[i].says))
			t_fail(__FILE__, __LINE__, "case %zu: exit %d, stderr:\n%s", i, run.status,
			       run.err);
	}
	unlink(file);
	rmdir(dir);
}

TEST(remote_open_refuses_bad_arguments)
{
	struct fl_store_remote_opts o = { .sz = sizeof(o), .flags = FL_STORE_REMOTE_INSECURE };
	struct fl_store *s;

	T_ASSERT_ERR(fl_store_remote_open(NULL, &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://h:1/x", &o, NULL), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("http://127.0.0.1:1/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:0/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:99999/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://[::1/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/a\nb", &o, &s), EINVAL);
	o.connections = 17;
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
	o.connections = 0;
	o.deadline_ms = -2;
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
	o.deadline_ms = 0;
	o.flags = 1u << 7;
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
	/* Without TLS in this build, plain TCP must be asked for. */
	o.flags = 0;
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", NULL, &s), EINVAL);
	/* A key and the insecure flag, a short key, a key and certificates. */
	o.key = "0123456789abcdef0123";
	o.key_len = 20;
	o.flags = FL_STORE_REMOTE_INSECURE;
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
	o.flags = 0;
	o.key_len = 8;
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
	o.key_len = 20;
	o.tls_ca_file = "/nonexistent";
	T_ASSERT_ERR(fl_store_remote_open("faultline://127.0.0.1:1/x", &o, &s), EINVAL);
}

/* Read the first pages of "obj" through @o's store and compare: 0, or the open's error. */
static int tls_read(const struct srv *sv, struct fl_store_remote_opts *o, const uint8_t *want)
{
	static uint8_t buf[8 * 4096];
	struct fl_store *s;
	int r = fl_store_remote_open(url_of(sv, "obj"), o, &s);

	if (r < 0)
		return r;
	T_ASSERT_OK(fl_store_read(s, 0, buf, sizeof(buf), 4096, (uint64_t[1]){ 0 }));
	for (size_t p = 1; p < 8; p++)
		if (p % 5)
			T_ASSERT(!memcmp(buf + p * 4096, want + p * 4096, 4096));
	fl_store_destroy(s);
	return 0;
}

TEST(serve_tls_psk)
{
	uint8_t key[32], other[32];
	char keyfile[96];
	const char *sec[] = { "--key", keyfile, NULL };
	struct srv sv = { .security = sec };
	struct fl_store_remote_opts o = { .sz = sizeof(o), .key = key, .key_len = sizeof(key) };
	struct fl__pg_rx rx = { 0 };
	struct fl__conn *c;
	uint8_t *want;
	int fd;

	srv_dir(&sv);
	for (size_t i = 0; i < sizeof(key); i++) {
		key[i] = (uint8_t)(i * 37 + 11);
		other[i] = key[i] ^ (i == 5);
	}
	snprintf(keyfile, sizeof(keyfile), "%s.key", sv.dir);
	fd = open(keyfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(write(fd, key, sizeof(key)), (ssize_t)sizeof(key));
	close(fd);
	want = make_object(&sv, "obj", 64 * 4096);
	srv_start(&sv, 0, NULL);
	T_ASSERT_OK(tls_read(&sv, &o, want));
	/* One bit of the key wrong: the handshake fails, nothing is served. */
	o.key = other;
	T_ASSERT_ERR(tls_read(&sv, &o, want), EACCES);
	/* Plain TCP against a TLS server: refused, and the server carries on. */
	{
		struct fl__sock_opts so = { 0 };
		struct fl__pg_msg m = { .type = FL__PG_OPEN, .open = { .name_len = 3,
								       .name = "obj" } };

		T_ASSERT_OK(fl__conn_connect(plain(), "127.0.0.1", sv.port, &so, t_ms(5000), &c,
					     NULL, 0));
		T_ASSERT_OK(fl__pg_send(c, &m, t_ms(5000)));
		T_ASSERT(fl__pg_recv(c, &rx, -1, t_ms(10000), t_ms(10000), &m) <= 0);
		fl__conn_close(c);
	}
	o.key = key;
	T_ASSERT_OK(tls_read(&sv, &o, want));
	srv_stop_ok(&sv);
	unlink(keyfile);
	fl__pg_rx_fini(&rx);
	srv_cleanup(&sv);
	free(want);
}

TEST(serve_tls_x509)
{
	char certs[128], crt[192], key[192], ca[192], ca2[192];
	const char *sec[] = { "--tls-cert", crt, "--tls-key", key, NULL };
	struct srv sv = { .security = sec };
	struct fl_store_remote_opts o = { .sz = sizeof(o), .tls_ca_file = ca };
	uint8_t *want;

	t_certs_dir(certs, sizeof(certs));
	t_certs_make(certs, "ca", NULL, NULL);
	t_certs_make(certs, "other-ca", NULL, NULL);
	t_certs_make(certs, "server", "ca", "pages.example");
	snprintf(crt, sizeof(crt), "%s/server.crt", certs);
	snprintf(key, sizeof(key), "%s/server.key", certs);
	snprintf(ca, sizeof(ca), "%s/ca.crt", certs);
	snprintf(ca2, sizeof(ca2), "%s/other-ca.crt", certs);
	want = srv_up(&sv, "obj", 64 * 4096);
	/* The certificate names 127.0.0.1 (the URL's host) and pages.example. */
	T_ASSERT_OK(tls_read(&sv, &o, want));
	o.tls_peer_name = "pages.example";
	T_ASSERT_OK(tls_read(&sv, &o, want));
	/* Another name, or another CA: refused. */
	o.tls_peer_name = "elsewhere.example";
	T_ASSERT_ERR(tls_read(&sv, &o, want), EACCES);
	o.tls_peer_name = NULL;
	o.tls_ca_file = ca2;
	T_ASSERT_ERR(tls_read(&sv, &o, want), EACCES);
	/* Certificates without a CA to check the server's: refused before connecting. */
	o.tls_ca_file = NULL;
	o.tls_peer_name = "pages.example";
	T_ASSERT_ERR(tls_read(&sv, &o, want), EINVAL);
	srv_down(&sv);
	t_certs_cleanup(certs);
	free(want);
}

/*
 * Write-back to the page server: a region with dirty tracking over a
 * writable remote store; the program writes every page, fl_region_sync()
 * writes them back, and the server's file then holds every write. (Eviction
 * of a budgeted region's dirty pages will write back the same way once the
 * pager evicts dirty pages; today it keeps them.)
 */
TEST(serve_region_sync_writes_back)
{
	const size_t len = 2u << 20, ps = 4096;
	struct fl_region_stats rs = { .sz = sizeof(rs) };
	struct srv sv = { 0 };
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts o;
	uint8_t *model, *a;

	model = srv_up(&sv, "obj", len);
	T_ASSERT_OK(remote_open(&sv, "obj", FL_STORE_REMOTE_WRITABLE, t_ms(10000), &s));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	o = t_region_opts(s, len);
	o.flags = FL_REGION_TRACK_DIRTY;
	o.prefetch = FL_PREFETCH_FIXED;
	o.prefetch_max = 256u << 10;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	write_pages(a, model, len);
	T_ASSERT_EQ(fl_region_dirty(r, 0, len, NULL), (long)(len / ps));
	T_ASSERT_OK(fl_region_sync(r, 0, len));
	T_ASSERT_EQ(fl_region_dirty(r, 0, len, NULL), 0);
	T_ASSERT_OK(fl_region_stats(r, &rs));
	T_ASSERT_EQ(rs.synced, len / ps);
	T_ASSERT_EQ(rs.writeback_errors, 0);
	/* The server's file holds every write (it answered WRITTEN after pwrite). */
	expect_file(&sv, "obj", model, len);
	fl_pager_destroy(p);
	fl_store_destroy(s);
	srv_down(&sv);
	free(model);
}

/*
 * Far memory: a region whose budget is a quarter of its size, over a
 * writable remote store. The program writes every page; eviction writes the
 * dirty pages back to the server before dropping them; the server's file
 * then holds every write, and the pages read again come back from it as
 * written, never as zeros.
 */
TEST(serve_budget_evicts_to_server)
{
	const size_t len = 2u << 20, ps = 4096;
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = len / 4 };
	struct fl_region_stats rs = { .sz = sizeof(rs) };
	struct srv sv = { 0 };
	struct fl_budget *b;
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts o;
	uint8_t *model, *a;
	int e;

	model = srv_up(&sv, "obj", len);
	T_ASSERT_OK(remote_open(&sv, "obj", FL_STORE_REMOTE_WRITABLE, t_ms(10000), &s));
	T_ASSERT_OK(fl_budget_create(&bo, &b));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	o = t_region_opts(s, len);
	o.budget = b;
	e = fl_region_add(p, &o, &r);
	if (e == -EOPNOTSUPP)
		T_SKIP("a budget cannot evict here (fl_region_add: EOPNOTSUPP)");
	T_ASSERT_OK(e);
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	write_pages(a, model, len);
	/* The pages read again: from memory, or back from the server, as written. */
	for (size_t pg = 0; pg < len / ps; pg++)
		if (memcmp(a + pg * ps, model + pg * ps, ps))
			t_fail(__FILE__, __LINE__, "page %zu of the region is not as written%s", pg,
			       t_all(a + pg * ps, ps, 0) ? " (zeros)" : "");
	T_ASSERT_OK(fl_region_stats(r, &rs));
	if (!rs.evicted || !rs.written_back)
		t_fail(__FILE__, __LINE__, "evicted %llu, written back %llu: the budget did not "
		       "evict through the server", (unsigned long long)rs.evicted,
		       (unsigned long long)rs.written_back);
	T_ASSERT_EQ(rs.writeback_errors, 0);
	/* What is still dirty in memory, written back now; then the file has it all. */
	T_ASSERT_OK(fl_region_sync(r, 0, len));
	expect_file(&sv, "obj", model, len);
	fl_pager_destroy(p);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	srv_down(&sv);
	free(model);
}
