/* SPDX-License-Identifier: MIT */
/* faultline bench migrate: downtime, total time against plain TCP and TLS copies, urgent faults. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"
#include "net/sock.h"
#include "net/transport.h"

#define SUB "bench migrate"
#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define MAX_RUNS 100
/* The migrated region's address in the source process, free in the destination (this one). */
#define REGION_ADDR 0x5d0000000000ull
/* Faults slower than this were real faults (a present page reads in well under 1 us). */
#define FAULT_MIN_NS 1000
/* The source's program during pre-copy: writes to a hot set of this many pages. */
#define HOT_PAGES 4096

enum row {
	R_TCP,			/* the same bytes through one plain TCP connection */
	R_TLS,			/* the same bytes through one TLS 1.3 connection (the key below) */
	R_POST_PLAIN,		/* post-copy at full speed in plain TCP (FL_MIGRATE_INSECURE) */
	R_POST,			/* post-copy at full speed; this and the rest: TLS 1.3, a key */
	R_POST_FAULTS,		/* the same, urgent faults meanwhile */
	R_POST_LIMITED,		/* post-copy with the background limited, urgent faults */
	R_POST_BIG,		/* post-copy of scale x size: downtime */
	R_STOP_COPY,		/* stop-and-copy, no pre-copy: everything in the downtime */
	R_PRE_STOP_COPY,	/* pre-copy rounds, then stop-and-copy */
	R_HYBRID,		/* one pre-copy round, then post-copy */
	R_COUNT,
};

static const char *const row_names[R_COUNT] = {
	"tcp", "tls", "postcopy-plain", "postcopy", "postcopy+faults", "postcopy-limited", "postcopy-big", "stop-and-copy",
	"precopy+stop-and-copy", "hybrid",
};

enum metric { X_DOWNTIME, X_TOTAL, X_RATIO, X_P50, X_P99, X_FAULTS, X_MBS, X_COUNT };

struct opts {
	unsigned int rows;		/* 1 << enum row */
	uint64_t size;
	unsigned int runs;
	unsigned int scale;
	unsigned int faults;
	uint64_t limit;
	bool json;
	bool pin;
};

/* The pre-shared key of every TLS row: made at the start, inherited by the source processes. */
static uint8_t bench_key[32];

/* What a source process reports back. */
struct src_report {
	int rc;
	char err[256];
	uint64_t stop_ns;
	struct fl_migrate_source_stats st;
};

void bench_migrate_usage(FILE *out)
{
	fprintf(out,
		"usage: faultline bench migrate [--size SIZE] [--runs N] [--scale N] [--faults N]\n"
		"                               [--limit RATE] [--json]\n\n"
		"Migrates SIZE of memory (all data pages) from a source process to a\n"
		"destination process over loopback TCP, in each configuration once per run,\n"
		"interleaved; reports medians with min-max. The migrations run over TLS 1.3\n"
		"with a pre-shared key, as faultline migrate --key does, but for\n"
		"postcopy-plain. The two copies are the baselines of the same bytes:\n"
		"  tcp                    SIZE bytes through one plain TCP connection\n"
		"  tls                    SIZE bytes through one TLS 1.3 connection (the same\n"
		"                         key and cipher as the migrations)\n"
		"  postcopy-plain         postcopy in plain TCP (FL_MIGRATE_INSECURE); its\n"
		"                         total is compared with tcp\n"
		"  postcopy               downtime (source stop to destination resume), total\n"
		"                         time (the source's whole run: connecting, pre-copy\n"
		"                         if any, to the last page) and its ratio to tls\n"
		"  postcopy+faults        the same while a thread of the destination reads\n"
		"                         random missing pages, each timed (urgent faults with\n"
		"                         the background at full speed)\n"
		"  postcopy-limited       the same faults with the background at --limit\n"
		"  postcopy-big           downtime with scale x SIZE\n"
		"  stop-and-copy          no pre-copy: everything moves in the downtime\n"
		"  precopy+stop-and-copy  two pre-copy rounds while the source writes a hot\n"
		"                         set of 16 MiB, then stop-and-copy\n"
		"  hybrid                 one pre-copy round with that writer, then post-copy\n\n"
		"  --size SIZE    default 1G (a multiple of 2M)\n"
		"  --runs N       default 3\n"
		"  --scale N      postcopy-big is N x SIZE (default 4; 0 leaves it out)\n"
		"  --faults N     timed faults per faulting configuration (default 2000)\n"
		"  --limit RATE   postcopy-limited's background limit (default 64M, bytes/s)\n"
		"  --configs LIST some of the configurations above, comma-separated (tcp and\n"
		"                 tls are always measured)\n"
		"  --pin          destination on CPU 0, source on CPU 1 (two hosts of one\n"
		"                 CPU each; default: the scheduler places the threads)\n"
		"  --json         one JSON document instead of the table (total_vs_copy:\n"
		"                 against the tls copy, postcopy-plain against tcp)\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { O_SIZE = 1, O_RUNS, O_SCALE, O_FAULTS, O_LIMIT, O_JSON, O_HELP, O_CONFIGS,
	       O_PIN };
	static const struct option lo[] = {
		{ "pin", no_argument, NULL, O_PIN },
		{ "configs", required_argument, NULL, O_CONFIGS },
		{ "size", required_argument, NULL, O_SIZE },
		{ "runs", required_argument, NULL, O_RUNS },
		{ "scale", required_argument, NULL, O_SCALE },
		{ "faults", required_argument, NULL, O_FAULTS },
		{ "limit", required_argument, NULL, O_LIMIT },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long long v;
	char *end;
	int c;

	*o = (struct opts){ .size = GIB, .runs = 3, .scale = 4, .faults = 2000,
			    .limit = 64 * MIB, .rows = (1u << R_COUNT) - 1 };
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		const char *arg = optarg;

		switch (c) {
		case O_SIZE:
			if (tool_parse_size(arg, 1ull << 40, &o->size) < 0 || !o->size ||
			    o->size % (2 * MIB))
				return usage_error(SUB, "--size: expected a multiple of 2M such as "
						   "256M or 1G, got '%s'", arg);
			break;
		case O_RUNS:
		case O_SCALE:
		case O_FAULTS:
			errno = 0;
			v = strtoull(arg, &end, 10);
			if (errno || *end || *arg < '0' || *arg > '9' ||
			    (c == O_RUNS && (!v || v > MAX_RUNS)) || (c == O_SCALE && v > 16) ||
			    (c == O_FAULTS && (!v || v > 1000000)))
				return usage_error(SUB, "--%s: expected %s, got '%s'",
						   c == O_RUNS ? "runs" :
						   c == O_SCALE ? "scale" : "faults",
						   c == O_RUNS ? "1 to 100" :
						   c == O_SCALE ? "0 to 16" : "1 to 1000000", arg);
			if (c == O_RUNS)
				o->runs = (unsigned int)v;
			else if (c == O_SCALE)
				o->scale = (unsigned int)v;
			else
				o->faults = (unsigned int)v;
			break;
		case O_LIMIT:
			if (tool_parse_size(arg, 1ull << 40, &o->limit) < 0 || !o->limit)
				return usage_error(SUB, "--limit: expected bytes per second such "
						   "as 64M, got '%s'", arg);
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_PIN:
			o->pin = true;
			break;
		case O_CONFIGS: {
			char buf[256], *save = NULL;

			o->rows = 1u << R_TCP | 1u << R_TLS;	/* the yardsticks are always measured */
			snprintf(buf, sizeof(buf), "%s", arg);
			for (char *w = strtok_r(buf, ",", &save); w;
			     w = strtok_r(NULL, ",", &save)) {
				int k;

				for (k = 0; k < R_COUNT && strcmp(w, row_names[k]); k++)
					;
				if (k == R_COUNT)
					return usage_error(SUB, "--configs: unknown configuration "
							   "'%s'", w);
				o->rows |= 1u << k;
			}
			break;
		}
		case O_HELP:
			bench_migrate_usage(stdout);
			return -1;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	return 0;
}

static ssize_t io_all(int fd, void *p, size_t n, bool wr)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = wr ? write(fd, (uint8_t *)p + done, n - done) :
				 read(fd, (uint8_t *)p + done, n - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		done += (size_t)k;
	}
	return (ssize_t)done;
}

/* --------------------------------------------------------------- source */

struct src_app {
	uint8_t *p;
	size_t len;
	_Atomic bool stop;
	bool writing;
	pthread_t th;
	uint64_t stop_ns;
};

/* The source's program: keeps writing its hot set until stopped. */
static void *writer(void *arg)
{
	struct src_app *a = arg;
	uint64_t rng = 0x9e3779b97f4a7c15ull;

	while (!atomic_load_explicit(&a->stop, memory_order_relaxed)) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		a->p[(rng % HOT_PAGES) * BENCH_PAGE + (rng >> 40) % BENCH_PAGE] = (uint8_t)rng;
	}
	return NULL;
}

static int app_stop(void *userdata, const void **ret_blob, size_t *ret_len)
{
	struct src_app *a = userdata;

	if (a->writing) {
		atomic_store(&a->stop, true);
		pthread_join(a->th, NULL);
		a->writing = false;
	}
	a->stop_ns = fl__now_ns();
	*ret_blob = NULL;
	*ret_len = 0;
	return 0;
}

struct lifter {
	struct fl_migrate_source *s;
	int fd;
};

/* postcopy-limited: the destination says when its faults are measured; then full speed. */
static void *lift(void *arg)
{
	struct lifter *l = arg;
	uint8_t b;

	if (read(l->fd, &b, 1) == 1)
		fl_migrate_source_set_bandwidth(l->s, 0);
	return NULL;
}

static uint8_t *map_region(size_t len)
{
	uint8_t *p = mmap((void *)REGION_ADDR, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED || (uintptr_t)p != REGION_ADDR)
		return NULL;
	return p;
}

/* The source process of one configuration: fill, (write,) migrate, report. */
static void source_child(enum row r, const struct opts *o, size_t len, int in, int out)
{
	struct src_report rep = { 0 };
	struct src_app a = { .len = len };
	struct fl_migrate_region reg;
	struct fl_migrate_source *s = NULL;
	struct fl_migrate_source_opts so;
	struct lifter lf;
	pthread_t lt;
	bool lifting = false;
	uint16_t port;
	int fd;

	a.p = map_region(len);
	/* Every page holds data: the same bytes as the tcp row. */
	if (a.p)
		fl_pattern_fill(a.p, 0, len, BENCH_PATTERN_SEED);
	/* Ready: the destination now warms its memory and says where it listens. */
	if (io_all(out, "r", 1, true) < 0 || io_all(in, &port, sizeof(port), false) < 0)
		_exit(1);
	if (!a.p) {
		rep.rc = -ENOMEM;
		snprintf(rep.err, sizeof(rep.err), "cannot map %zu bytes at %#llx", len,
			 REGION_ADDR);
		goto out;
	}
	if (r == R_TCP) {
		uint8_t go;

		rep.rc = fl__sock_connect("127.0.0.1", port, NULL, 10000, &fd);
		if (!rep.rc && (io_all(fd, &go, 1, false) < 0 ||
				fl__sock_send_all(fd, a.p, len, 30000) < 0))
			rep.rc = -EPIPE;
		if (!rep.rc)
			close(fd);
		goto out;
	}
	if (r == R_TLS) {
		struct fl__transport_opts to = { .mode = FL__TRANSPORT_PSK, .psk = bench_key,
						 .psk_len = sizeof(bench_key) };
		struct fl__transport *t = NULL;
		struct fl__conn *c = NULL;
		uint8_t go;

		rep.rc = fl__transport_new(&to, &t, rep.err, sizeof(rep.err));
		if (!rep.rc)
			rep.rc = fl__conn_connect(t, "127.0.0.1", port, NULL, 10000, &c, rep.err,
						  sizeof(rep.err));
		if (!rep.rc && (fl__conn_recv_exact(c, &go, 1, 30000) < 0 ||
				fl__conn_send_all(c, a.p, len, 30000) < 0))
			rep.rc = -EPIPE;
		fl__conn_close(c);
		fl__transport_free(t);
		goto out;
	}
	if (r == R_PRE_STOP_COPY || r == R_HYBRID) {
		if (pthread_create(&a.th, NULL, writer, &a) == 0)
			a.writing = true;
	}
	reg = (struct fl_migrate_region){ a.p, len };
	so = (struct fl_migrate_source_opts){
		.sz = sizeof(so),
		.regions = &reg,
		.n_regions = 1,
		.host = "127.0.0.1",
		.port = port,
		.stop = app_stop,
		.userdata = &a,
		.precopy_rounds = r == R_PRE_STOP_COPY ? 2 : r == R_HYBRID ? 1 : 0,
		.flags = (r == R_STOP_COPY || r == R_PRE_STOP_COPY ? FL_MIGRATE_STOP_AND_COPY : 0) |
			 (r == R_POST_PLAIN ? FL_MIGRATE_INSECURE : 0),
		.key = r == R_POST_PLAIN ? NULL : bench_key,
		.key_len = r == R_POST_PLAIN ? 0 : sizeof(bench_key),
		.max_bandwidth = r == R_POST_LIMITED ? o->limit : 0,
		.timeout_ms = 30000,
	};
	rep.rc = fl_migrate_source_create(&so, &s);
	if (rep.rc < 0) {
		snprintf(rep.err, sizeof(rep.err), "cannot create the source: %s",
			 strerror(-rep.rc));
		goto out;
	}
	if (r == R_POST_LIMITED) {
		lf = (struct lifter){ s, in };
		lifting = !pthread_create(&lt, NULL, lift, &lf);
	}
	rep.rc = fl_migrate_source_run(s);
	if (rep.rc < 0)
		snprintf(rep.err, sizeof(rep.err), "%s", fl_migrate_source_error(s));
	rep.st.sz = sizeof(rep.st);
	fl_migrate_source_stats(s, &rep.st);
	rep.stop_ns = a.stop_ns;
	if (lifting)
		pthread_join(lt, NULL);	/* the destination lifted the limit, or closed the pipe */
out:
	app_stop(&a, &(const void *){ NULL }, &(size_t){ 0 });
	if (io_all(out, &rep, sizeof(rep), true) < 0)
		_exit(1);
	fl_migrate_source_destroy(s);
	_exit(rep.rc < 0 ? 1 : 0);
}

/* --------------------------------------------------------------- destination */

struct result {
	double v[X_COUNT];	/* NAN where the row does not measure it */
	uint64_t *lat;		/* faults, ns */
	size_t nlat;
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Read random pages that are not here yet, each timed, until @max or until all arrived. */
static size_t fault_pages(struct fl_migrate_dest *d, const uint8_t *p, size_t len, uint64_t *lat,
			  size_t max)
{
	size_t pages = len / BENCH_PAGE, n = 0;
	uint64_t rng = 0x2545f4914f6cdd1dull;
	unsigned char vec;

	for (size_t tries = 0; n < max && tries < 50 * max; tries++) {
		size_t pg = rng_next(&rng) % pages;
		uint64_t t0, t1;

		if (mincore((void *)(p + pg * BENCH_PAGE), BENCH_PAGE, &vec) == 0 && (vec & 1)) {
			struct fl_migrate_dest_stats st = { .sz = sizeof(st) };

			if (tries % 64 == 0 && !fl_migrate_dest_stats(d, &st) &&
			    st.pages_received == st.pages_total)
				break;
			continue;
		}
		t0 = fl__now_ns();
		(void)*(volatile const uint8_t *)(p + pg * BENCH_PAGE);
		t1 = fl__now_ns();
		if (t1 - t0 >= FAULT_MIN_NS)
			lat[n++] = t1 - t0;
	}
	return n;
}

static int run_tcp(size_t len, int in, int out, struct result *res, struct bench_err *e)
{
	uint8_t *buf = bench_map_aligned(2 * MIB, 2 * MIB);
	uint64_t t0;
	size_t got = 0;
	uint16_t port;
	int lfd, fd, r;

	if (!buf)
		return bench_fail(e, -ENOMEM, "tcp: buffer");
	r = fl__sock_listen("127.0.0.1", 0, NULL, &lfd);
	if (r < 0) {
		bench_unmap(buf, 2 * MIB);
		return bench_fail(e, r, "tcp: listen");
	}
	fl__sock_local_port(lfd, &port);
	io_all(out, &port, sizeof(port), true);
	r = fl__sock_accept(lfd, NULL, 120000, &fd);
	close(lfd);
	if (r < 0) {
		bench_unmap(buf, 2 * MIB);
		return bench_fail(e, r, "tcp: accept");
	}
	t0 = fl__now_ns();
	r = fl__sock_send_all(fd, "g", 1, 10000);
	while (!r && got < len) {
		ssize_t k = recv(fd, buf, 2 * MIB, 0);

		if (k <= 0)
			r = -EPIPE;
		else
			got += (size_t)k;
	}
	res->v[X_TOTAL] = (double)(fl__now_ns() - t0) / 1e9;
	res->v[X_MBS] = (double)len / MIB / res->v[X_TOTAL];
	close(fd);
	bench_unmap(buf, 2 * MIB);
	(void)in;
	return r < 0 ? bench_fail(e, r, "tcp: receive") : 0;
}

/* The tls row: the same bytes as tcp through one TLS 1.3 connection with the bench's key. */
static int run_tls(size_t len, int out, struct result *res, struct bench_err *e)
{
	struct fl__transport_opts to = { .mode = FL__TRANSPORT_PSK, .psk = bench_key,
					 .psk_len = sizeof(bench_key) };
	uint8_t *buf = bench_map_aligned(2 * MIB, 2 * MIB);
	struct fl__transport *t = NULL;
	struct fl__conn *c = NULL;
	char msg[256];
	uint64_t t0;
	size_t got = 0;
	uint16_t port;
	int lfd = -1, fd, r;

	if (!buf)
		return bench_fail(e, -ENOMEM, "tls: buffer");
	r = fl__transport_new(&to, &t, msg, sizeof(msg));
	if (!r)
		r = fl__sock_listen("127.0.0.1", 0, NULL, &lfd);
	if (r < 0)
		goto out;
	fl__sock_local_port(lfd, &port);
	io_all(out, &port, sizeof(port), true);
	r = fl__sock_accept(lfd, NULL, 120000, &fd);
	if (!r)
		r = fl__conn_open(t, fd, FL__CONN_SERVER, NULL, 30000, &c, msg, sizeof(msg));
	if (r < 0)
		goto out;
	t0 = fl__now_ns();
	r = fl__conn_send_all(c, "g", 1, 10000);
	while (!r && got < len) {
		ssize_t k = fl__conn_recv_some(c, buf, 2 * MIB, 30000);

		if (k <= 0)
			r = k < 0 ? (int)k : -EPIPE;
		else
			got += (size_t)k;
	}
	res->v[X_TOTAL] = (double)(fl__now_ns() - t0) / 1e9;
	res->v[X_MBS] = (double)len / MIB / res->v[X_TOTAL];
out:
	fl__conn_close(c);
	fl__transport_free(t);
	if (lfd >= 0)
		close(lfd);
	bench_unmap(buf, 2 * MIB);
	return r < 0 ? bench_fail(e, r, "tls: %s", c ? fl__conn_error(c) : msg) : 0;
}

static int run_migration(enum row r, const struct opts *o, size_t len, int in, int out,
			 struct result *res, struct bench_err *e)
{
	struct fl_migrate_dest_opts dop = {
		.sz = sizeof(dop),
		.host = "127.0.0.1",
		.flags = FL_MIGRATE_LISTEN | (r == R_POST_PLAIN ? FL_MIGRATE_INSECURE : 0),
		.key = r == R_POST_PLAIN ? NULL : bench_key,
		.key_len = r == R_POST_PLAIN ? 0 : sizeof(bench_key),
		.timeout_ms = 30000,
	};
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_dest *d;
	struct src_report rep;
	const void *blob;
	size_t blob_len, dlen;
	uint16_t port;
	void *p = NULL;
	int err;

	err = fl_migrate_dest_create(&dop, &d);
	if (err < 0)
		return bench_fail(e, err, "%s: destination", row_names[r]);
	fl_migrate_dest_port(d, &port);
	io_all(out, &port, sizeof(port), true);
	err = fl_migrate_dest_accept(d, 600000, &blob, &blob_len);
	if (err < 0) {
		bench_fail(e, err, "%s: accept: %s", row_names[r], fl_migrate_dest_error(d));
		goto fail;
	}
	fl_migrate_dest_region(d, 0, &p, &dlen);
	if (r == R_POST_FAULTS || r == R_POST_LIMITED) {
		res->nlat = fault_pages(d, p, dlen, res->lat, o->faults);
		if (r == R_POST_LIMITED)
			io_all(out, "l", 1, true);
	}
	err = fl_migrate_dest_wait(d, 600000);
	if (err < 0) {
		bench_fail(e, err, "%s: %s", row_names[r], fl_migrate_dest_error(d));
		goto fail;
	}
	if (io_all(in, &rep, sizeof(rep), false) < 0) {
		err = bench_fail(e, -EPIPE, "%s: the source process died", row_names[r]);
		goto fail;
	}
	if (rep.rc < 0) {
		err = bench_fail(e, rep.rc, "%s: source: %s", row_names[r], rep.err);
		goto fail;
	}
	fl_migrate_dest_stats(d, &ds);
	{
		/* The pre-copy rows' writer changed its hot set; the rest is the pattern. */
		size_t skip = r == R_PRE_STOP_COPY || r == R_HYBRID ? HOT_PAGES * BENCH_PAGE : 0;

		if (fl_pattern_check((uint8_t *)p + skip, skip, dlen - skip, BENCH_PATTERN_SEED)) {
			err = bench_fail(e, -EIO, "%s: the destination's memory is wrong",
					 row_names[r]);
			goto fail;
		}
	}
	res->v[X_DOWNTIME] = (double)(ds.resume_ns - rep.stop_ns) / 1e6;
	/* The whole migration, pre-copy included: from the source's start to the last page. */
	if (r != R_POST_LIMITED) {
		res->v[X_TOTAL] = (double)rep.st.total_ns / 1e9;
		res->v[X_MBS] = (double)dlen / MIB / res->v[X_TOTAL];
	}
	err = 0;
fail:
	if (p)
		munmap(p, len);
	fl_migrate_dest_destroy(d);
	return err;
}

/* One configuration, once: a fresh source process each time. */
static int run_row(enum row r, const struct opts *o, struct result *res, struct bench_err *e)
{
	size_t len = r == R_POST_BIG ? o->size * o->scale : o->size;
	int up[2], down[2], st, err;
	pid_t pid;

	for (int i = 0; i < X_COUNT; i++)
		res->v[i] = NAN;
	res->nlat = 0;
	if (pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0)
		return bench_fail(e, -errno, "pipe");
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return bench_fail(e, -errno, "fork");
	if (!pid) {
		cpu_set_t saved;

		close(up[0]);
		close(down[1]);
		if (o->pin && bench_pin(1, &saved) < 0)
			_exit(1);
		source_child(r, o, len, down[0], up[1]);
	}
	close(up[1]);
	close(down[0]);
	/*
	 * The destination is about to take len of fresh memory. In a VM the host
	 * backs guest memory on its first touch, at 10x a guest fault, and takes
	 * back what stays free for a while (free page reporting): touch it just
	 * before, for every configuration alike, so that the rows compare the
	 * migration, not the host.
	 */
	if (io_all(up[0], &(char){ 0 }, 1, false) < 0) {
		waitpid(pid, &st, 0);
		return bench_fail(e, -EPIPE, "%s: the source process died", row_names[r]);
	}
	bench_prewarm(len + 128 * MIB);
	if (r == R_TCP)
		err = run_tcp(len, up[0], down[1], res, e);
	else if (r == R_TLS)
		err = run_tls(len, down[1], res, e);
	else
		err = run_migration(r, o, len, up[0], down[1], res, e);
	close(down[1]);
	if (r == R_TCP || r == R_TLS) {
		struct src_report rep;

		if (!err && (io_all(up[0], &rep, sizeof(rep), false) < 0 || rep.rc < 0))
			err = bench_fail(e, -EPIPE, "%s: the sending process failed: %s",
					 row_names[r], rep.err);
	}
	close(up[0]);
	if (err < 0)
		kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return err;
}

/* --------------------------------------------------------------- report */

struct table {
	double m[R_COUNT][X_COUNT][MAX_RUNS];
	uint64_t *lat[R_COUNT];
	size_t nlat[R_COUNT];
	bool on[R_COUNT];
};

static struct stats_spread spread(struct table *t, enum row r, enum metric x, unsigned int runs)
{
	double v[MAX_RUNS];
	unsigned int n = 0;

	for (unsigned int i = 0; i < runs; i++)
		if (!isnan(t->m[r][x][i]))
			v[n++] = t->m[r][x][i];
	if (!n)
		return (struct stats_spread){ NAN, NAN, NAN };
	return stats_spread_of(v, n, v);
}

/* One table cell: median (min-max) with @prec decimals, or "-". */
static void cell(struct stats_spread s, int prec, int width)
{
	char buf[64];

	if (isnan(s.median))
		snprintf(buf, sizeof(buf), "-");
	else
		snprintf(buf, sizeof(buf), "%.*f (%.*f-%.*f)", prec, s.median, prec, s.min, prec,
			 s.max);
	printf(" %*s", width, buf);
}

static void print_table(struct table *t, const struct opts *o, const struct bench_machine *m,
			double fault_ns)
{
	struct stats_spread dt, dt_big, tot, ratio, plain, tcp, tls;
	uint64_t p50[R_COUNT] = { 0 }, p99[R_COUNT] = { 0 };

	printf("faultline %s bench migrate: %llu MiB over loopback TCP, %u run%s "
	       "(median, min-max)\n", fl_version(), (unsigned long long)(o->size / MIB), o->runs,
	       o->runs > 1 ? "s" : "");
	printf("machine: %ld CPUs, %s %s %s, THP %s\n", m->nproc, m->sysname, m->release,
	       m->arch, m->thp[0] ? m->thp : "?");
	printf("kind of machine, from the floors: %s (native fault p50 %.0f ns)\n",
	       bench_kind_text(bench_kind_of_fault(fault_ns)), fault_ns);
	printf("migrations over TLS 1.3 (pre-shared key, TLS_AES_128_GCM_SHA256) but "
	       "postcopy-plain;\ntotal/base: against the tls copy, postcopy-plain against "
	       "the tcp copy\n");
	printf("%-22s %20s %20s %16s %10s %10s %7s\n", "configuration", "downtime ms",
	       "total s", "total/base", "urgent p50", "p99 us", "faults");
	for (int r = 0; r < R_COUNT; r++) {
		if (!t->on[r])
			continue;
		if (t->nlat[r]) {
			stats_sort_u64(t->lat[r], t->nlat[r]);
			p50[r] = stats_percentile(t->lat[r], t->nlat[r], 50);
			p99[r] = stats_percentile(t->lat[r], t->nlat[r], 99);
		}
		printf("%-22s", r == R_POST_BIG ? "postcopy x scale" : row_names[r]);
		cell(spread(t, r, X_DOWNTIME, o->runs), 2, 20);
		cell(spread(t, r, X_TOTAL, o->runs), 3, 20);
		cell(spread(t, r, X_RATIO, o->runs), 2, 16);
		if (t->nlat[r])
			printf(" %10.1f %10.1f %7zu\n", (double)p50[r] / 1e3, (double)p99[r] / 1e3,
			       t->nlat[r]);
		else
			printf(" %10s %10s %7s\n", "-", "-", "-");
	}
	dt = spread(t, R_POST, X_DOWNTIME, o->runs);
	dt_big = spread(t, R_POST_BIG, X_DOWNTIME, o->runs);
	tot = spread(t, R_POST, X_TOTAL, o->runs);
	ratio = spread(t, R_POST, X_RATIO, o->runs);
	plain = spread(t, R_POST_PLAIN, X_RATIO, o->runs);
	tcp = spread(t, R_TCP, X_MBS, o->runs);
	tls = spread(t, R_TLS, X_MBS, o->runs);
	printf("\ncopies of the same bytes: tcp %.0f MiB/s, tls %.0f MiB/s (tls/tcp %.2f)\n",
	       tcp.median, tls.median, tls.median / tcp.median);
	printf("\ntargets (medians):\n");
	printf("  post-copy downtime <= 5 ms:                 %.2f ms  %s\n", dt.median,
	       dt.median <= 5 ? "met" : "MISSED");
	if (t->on[R_POST_BIG])
		printf("  downtime at %ux size within 1.5x:            %.2fx     %s\n", o->scale,
		       dt_big.median / dt.median, dt_big.median <= 1.5 * dt.median ? "met" :
		       "MISSED");
	printf("  total <= 1.25 x tls copy:                   %.2fx     %s (%.3f s)\n",
	       ratio.median, ratio.median <= 1.25 ? "met" : "MISSED", tot.median);
	if (t->on[R_POST_PLAIN])
		printf("  plain total <= 1.25 x tcp copy:             %.2fx     %s\n",
		       plain.median, plain.median <= 1.25 ? "met" : "MISSED");
	/* A target is judged only when its configuration ran (--configs may leave it out). */
	if (t->nlat[R_POST_FAULTS]) {
		printf("  urgent p50 <= 150 us at full speed:         %.1f us  %s\n",
		       (double)p50[R_POST_FAULTS] / 1e3,
		       p50[R_POST_FAULTS] <= 150000 ? "met" : "MISSED");
		printf("  urgent p99 <= 2 ms at full speed:           %.1f us  %s\n",
		       (double)p99[R_POST_FAULTS] / 1e3,
		       p99[R_POST_FAULTS] <= 2000000 ? "met" : "MISSED");
	}
	if (t->nlat[R_POST_LIMITED])
		printf("  urgent p99 <= 2 ms at %llu MiB/s:            %.1f us  %s\n",
		       (unsigned long long)(o->limit / MIB), (double)p99[R_POST_LIMITED] / 1e3,
		       p99[R_POST_LIMITED] <= 2000000 ? "met" : "MISSED");
}

static void json_spread_m(const char *key, struct stats_spread s, bool comma)
{
	if (isnan(s.median))
		printf("%s\"%s\":null", comma ? "," : "", key);
	else
		printf("%s\"%s\":{\"median\":%.6g,\"min\":%.6g,\"max\":%.6g}", comma ? "," : "",
		       key, s.median, s.min, s.max);
}

static void print_json(struct table *t, const struct opts *o, const struct bench_machine *m,
		       double fault_ns)
{
	bool first = true;

	printf("{\"benchmark\":\"migrate\",\"faultline\":\"%s\",\"size\":%llu,\"runs\":%u,"
	       "\"scale\":%u,\"limit\":%llu,\"machine\":{\"nproc\":%ld,\"kernel\":\"%s\","
	       "\"arch\":\"%s\",\"kind\":\"%s\"},\"transport\":\"TLS 1.3 PSK "
	       "TLS_AES_128_GCM_SHA256; postcopy-plain: plain TCP\",\"configurations\":{",
	       fl_version(), (unsigned long long)o->size, o->runs, o->scale,
	       (unsigned long long)o->limit, m->nproc, m->release, m->arch,
	       bench_kind_of_fault(fault_ns));
	for (int r = 0; r < R_COUNT; r++) {
		if (!t->on[r])
			continue;
		printf("%s\"%s\":{", first ? "" : ",", row_names[r]);
		first = false;
		json_spread_m("downtime_ms", spread(t, r, X_DOWNTIME, o->runs), false);
		json_spread_m("total_s", spread(t, r, X_TOTAL, o->runs), true);
		json_spread_m("total_vs_copy", spread(t, r, X_RATIO, o->runs), true);
		json_spread_m("mib_per_s", spread(t, r, X_MBS, o->runs), true);
		if (t->nlat[r]) {
			stats_sort_u64(t->lat[r], t->nlat[r]);
			printf(",\"urgent_faults\":%zu,\"urgent_p50_ns\":%llu,"
			       "\"urgent_p90_ns\":%llu,\"urgent_p99_ns\":%llu,"
			       "\"urgent_max_ns\":%llu", t->nlat[r],
			       (unsigned long long)stats_percentile(t->lat[r], t->nlat[r], 50),
			       (unsigned long long)stats_percentile(t->lat[r], t->nlat[r], 90),
			       (unsigned long long)stats_percentile(t->lat[r], t->nlat[r], 99),
			       (unsigned long long)t->lat[r][t->nlat[r] - 1]);
		}
		printf("}");
	}
	printf("}}\n");
}

int bench_migrate_main(int argc, char **argv)
{
	struct bench_machine m;
	struct table *t;
	struct opts o;
	struct bench_err e = { "" };
	bool progress = isatty(STDERR_FILENO);
	int r = parse_args(argc, argv, &o);
	double fault_ns;

	if (r)
		return r < 0 ? 0 : r;
	if (getrandom(bench_key, sizeof(bench_key), 0) != (ssize_t)sizeof(bench_key))
		return fail(SUB, "getrandom", -errno);
	t = calloc(1, sizeof(*t));
	if (!t)
		return fail(SUB, "memory", -ENOMEM);
	for (int i = 0; i < R_COUNT; i++) {
		t->on[i] = (i != R_POST_BIG || o.scale) && (o.rows & (1u << i));
		if (i == R_POST_FAULTS || i == R_POST_LIMITED) {
			t->lat[i] = calloc((size_t)o.faults * o.runs, sizeof(uint64_t));
			if (!t->lat[i])
				return fail(SUB, "memory", -ENOMEM);
		}
	}
	bench_machine_get(&m);
	fault_ns = bench_native_fault_ns();
	if (o.pin) {
		cpu_set_t saved;

		if (m.nproc < 2 || bench_pin(0, &saved) < 0)
			return usage_error(SUB, "--pin needs two CPUs");
	}
	for (unsigned int run = 0; run < o.runs; run++) {
		double tcp = NAN, tls = NAN;

		for (int i = 0; i < R_COUNT; i++) {
			struct result res = { .lat = t->lat[i] ? t->lat[i] + t->nlat[i] : NULL };

			if (!t->on[i])
				continue;
			if (progress)
				fprintf(stderr, "\rrun %u/%u: %-24s", run + 1, o.runs,
					row_names[i]);
			r = run_row(i, &o, &res, &e);
			if (r < 0) {
				if (progress)
					fprintf(stderr, "\n");
				return fail(SUB, e.msg, r);
			}
			if (i == R_TCP)
				tcp = res.v[X_TOTAL];
			if (i == R_TLS)
				tls = res.v[X_TOTAL];
			/* Each migration against the copy of its own transport. */
			if (i != R_TCP && i != R_TLS && i != R_POST_BIG && !isnan(res.v[X_TOTAL]))
				res.v[X_RATIO] = res.v[X_TOTAL] / (i == R_POST_PLAIN ? tcp : tls);
			for (int x = 0; x < X_COUNT; x++)
				t->m[i][x][run] = res.v[x];
			t->nlat[i] += res.nlat;
		}
	}
	if (progress)
		fprintf(stderr, "\r%50s\r", "");
	if (o.json)
		print_json(t, &o, &m, fault_ns);
	else
		print_table(t, &o, &m, fault_ns);
	for (int i = 0; i < R_COUNT; i++)
		free(t->lat[i]);
	free(t);
	return 0;
}
