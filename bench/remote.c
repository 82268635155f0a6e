/* SPDX-License-Identifier: MIT */
/*
 * faultline bench remote: faults served from remote stores (a Redis server, a
 * Redis Cluster, the page server over plain TCP and over TLS) next to the
 * local file store, with prefetch windows of none,
 * 64 KiB and 1 MiB and 1-4 faulting threads; redis-benchmark's GET of 4 KiB
 * values in the same run as the anchor.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"
#include "net/sock.h"
#include "net/transport.h"
#include "redisd.h"
#include "remote/server.h"

#define SUB "bench remote"
#define MAX_RUNS 100
#define MAX_THREADS 4
#define MAX_WINDOWS 3
/* Accesses slower than this were faults (a present page reads in well under 1 us). */
#define FAULT_MIN_NS 1000

/*
 * The stores compared. A backend sets itself up once (servers, the data
 * written), opens its store for the runs and tears down at the end.
 */
enum backend { B_FILE, B_REDIS, B_REDIS_HASH, B_CLUSTER, B_SERVE, B_SERVE_TLS, B_COUNT };

static const char *const backend_names[B_COUNT] = { "file", "redis", "redis-hash", "cluster",
						    "serve", "serve-tls" };

/* A page server of this process (faultline serve's code) on a loopback port. */
struct pgserve {
	struct fl__transport *t;
	struct fl__pgsrv *srv;
	pthread_t tid;
	bool running;
};

static const size_t window_bytes[MAX_WINDOWS] = { 0, 64 * 1024, 1024 * 1024 };
static const char *const window_names[MAX_WINDOWS] = { "none", "64K", "1M" };

enum metric { M_P50, M_P99, M_PPS, M_COUNT };

struct opts {
	uint64_t size;
	unsigned int runs;
	unsigned int threads_mask;	/* bit t-1: t faulting threads */
	unsigned int windows_mask;	/* bit w: window_bytes[w] */
	unsigned int backends_mask;
	char dir[256];
};

struct state {
	struct opts o;
	struct fl_store *store[B_COUNT];
	char skip[B_COUNT][160];	/* why a backend is left out, or "" */
	struct redisd single, cluster;
	char file[300];
	/* [backend][window][threads-1][metric][run] */
	double v[B_COUNT][MAX_WINDOWS][MAX_THREADS][M_COUNT][MAX_RUNS];
	double bm[3][MAX_RUNS];		/* redis-benchmark: p50 us, p99 us, requests/s */
	char bm_skip[160];
	struct pgserve serve[2];	/* plain TCP, TLS (pre-shared key) */
	char serve_dir[300];		/* the page servers' directory: one object, "obj" */
	bool serve_filled;
	uint8_t serve_key[32];
	double rtt[MAX_RUNS];		/* loopback TCP round trip, p50 us */
};

void bench_remote_usage(FILE *out)
{
	fprintf(out,
		"usage: faultline bench remote [--size SIZE] [--runs N] [--threads LIST]\n"
		"                              [--windows LIST] [--stores LIST] [--dir DIR]\n\n"
		"Faults a region of SIZE through a pager (THREADS mode, one handler thread per\n"
		"faulting thread) from each store, with each prefetch window and number of faulting threads\n"
		"(each thread walks its own slice of the region in order), and reports the\n"
		"latency of the accesses that faulted (p50, p99) and pages/s. The stores:\n"
		"  file        the local file store (a file in DIR, in the page cache)\n"
		"  redis       a redis-server started here on a loopback port, pages as keys\n"
		"  redis-hash  the same server, pages as fields of per-chunk hashes\n"
		"  cluster     a Redis Cluster started here (3 masters, 3 replicas), keys\n"
		"  serve       the page server (faultline serve's code, in this process) on\n"
		"              a loopback port, plain TCP, 4 connections; its file in DIR\n"
		"  serve-tls   the same over TLS 1.3 with a pre-shared key\n"
		"In the same run, redis-benchmark GETs 4 KiB values from that server (one\n"
		"client, no pipelining): the anchor of the targets\n"
		"  redis p50 (no prefetch, 1 thread) <= 1.5 x redis-benchmark's GET p50\n"
		"  pages/s with a 1M window >= 5 x pages/s without prefetch (1 thread),\n"
		"  for redis, cluster, serve and serve-tls;\n"
		"  serve p50 (no prefetch, 1 thread) <= file p50 + 2 loopback TCP round\n"
		"  trips (measured in each run: 1-byte ping-pong, TCP_NODELAY).\n"
		"Each run measures every configuration once, interleaved; medians over the\n"
		"runs with min-max. The servers need redis-server and redis-cli (Debian:\n"
		"redis-server, redis-tools); without them their rows say why they are left\n"
		"out. Run it alone on the machine.\n\n"
		"  --size SIZE     region per configuration (default 32M, a multiple of 1M)\n"
		"  --runs N        default 3\n"
		"  --threads LIST  faulting threads, some of 1,2,3,4 (default 1,2,4)\n"
		"  --windows LIST  some of none,64K,1M (default all)\n"
		"  --stores LIST   some of file,redis,redis-hash,cluster,serve,serve-tls\n"
		"                  (default all)\n"
		"  --dir DIR       the file store's directory (default /var/tmp)\n");
}

static int parse_list(const char *s, const char *const *names, size_t n, unsigned int *mask)
{
	char buf[256], *save = NULL;

	*mask = 0;
	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;

		for (i = 0; i < n && strcmp(t, names[i]); i++)
			;
		if (i == n)
			return -1;
		*mask |= 1u << i;
	}
	return *mask ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { O_SIZE = 1, O_RUNS, O_THREADS, O_WINDOWS, O_STORES, O_DIR };
	static const struct option lo[] = {
		{ "size", required_argument, NULL, O_SIZE },
		{ "runs", required_argument, NULL, O_RUNS },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "windows", required_argument, NULL, O_WINDOWS },
		{ "stores", required_argument, NULL, O_STORES },
		{ "dir", required_argument, NULL, O_DIR },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const tnames[] = { "1", "2", "3", "4" };
	int c;

	*o = (struct opts){ .size = 32ull << 20, .runs = 3, .threads_mask = 1 | 2 | 8,
			    .windows_mask = 7, .backends_mask = (1u << B_COUNT) - 1 };
	strcpy(o->dir, "/var/tmp");
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end;
		unsigned long v;

		switch (c) {
		case O_SIZE:
			if (tool_parse_size(optarg, 1ull << 36, &o->size) < 0 || !o->size ||
			    o->size % (1u << 20))
				return usage_error(SUB, "--size %s: a multiple of 1M", optarg);
			break;
		case O_RUNS:
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || !v || v > MAX_RUNS || *optarg == '-')
				return usage_error(SUB, "--runs %s: 1 to %d", optarg, MAX_RUNS);
			o->runs = (unsigned int)v;
			break;
		case O_THREADS:
			if (parse_list(optarg, tnames, 4, &o->threads_mask))
				return usage_error(SUB, "--threads %s: some of 1,2,3,4", optarg);
			break;
		case O_WINDOWS:
			if (parse_list(optarg, window_names, MAX_WINDOWS, &o->windows_mask))
				return usage_error(SUB, "--windows %s: some of none,64K,1M", optarg);
			break;
		case O_STORES:
			if (parse_list(optarg, backend_names, B_COUNT, &o->backends_mask))
				return usage_error(SUB, "--stores %s: some of file,redis,"
						   "redis-hash,cluster,serve,serve-tls", optarg);
			break;
		case O_DIR:
			if (strlen(optarg) >= sizeof(o->dir) - 32)
				return usage_error(SUB, "--dir: too long");
			strcpy(o->dir, optarg);
			break;
		default:
			return usage_error(SUB, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	return 0;
}

/* ------------------------------------------------------------- backends */

/* Write the pattern into @s, 1 MiB at a time. */
static int fill_store(struct fl_store *s, uint64_t size, struct bench_err *e)
{
	const size_t chunk = 1u << 20;
	void *buf = malloc(chunk);
	int rc = 0;

	if (!buf)
		return bench_fail(e, -ENOMEM, "filling the store");
	for (uint64_t off = 0; off < size && !rc; off += chunk) {
		fl_pattern_fill(buf, off, chunk, BENCH_PATTERN_SEED);
		rc = fl_store_write(s, off, buf, chunk);
		if (rc)
			bench_fail(e, rc, "writing the data at %llu", (unsigned long long)off);
	}
	free(buf);
	return rc;
}

static int redis_store(struct state *st, struct redisd *d, const char *prefix, uint32_t flags,
		       struct fl_store **ret, struct bench_err *e)
{
	struct fl_store_redis_opts ro = { .sz = sizeof(ro), .size = st->o.size, .flags = flags };
	char url[256];
	int rc;

	redisd_url(d, 0, prefix, url, sizeof(url));
	rc = fl_store_redis_open(url, &ro, ret);
	if (rc)
		return bench_fail(e, rc, "fl_store_redis_open(%s)", url);
	return fill_store(*ret, st->o.size, e);
}

/*
 * Backend @b's Redis: @n 1 is the single server (started once, for redis
 * and redis-hash), more a cluster of @n nodes. Without the programs the
 * backend is skipped, saying why.
 */
static int setup_redis(struct state *st, enum backend b, unsigned int n, struct bench_err *e)
{
	bool cluster = n > 1;
	struct redisd *d = cluster ? &st->cluster : &st->single;
	char path[256];

	if (!redisd_find("redis-server", path, sizeof(path)) ||
	    (cluster && !redisd_find("redis-cli", path, sizeof(path)))) {
		snprintf(st->skip[b], sizeof(st->skip[b]), "%s",
			 cluster ? "redis-server or redis-cli not found (apt-get install "
			 "redis-server redis-tools)" :
			 "redis-server not found (apt-get install redis-server)");
		return 0;
	}
	if (!d->n && redisd_start(d, n, cluster, cluster ? 120000 : 60000))
		return bench_fail(e, -EIO, "starting %s: %.200s",
				  cluster ? "the cluster" : "redis-server", d->err);
	return redis_store(st, d, b == B_REDIS ? "bench-keys" : b == B_REDIS_HASH ?
			   "bench-hash" : "bench", b == B_REDIS_HASH ? FL_STORE_REDIS_HASH : 0,
			   &st->store[b], e);
}

static void *serve_thread(void *arg)
{
	fl__pgsrv_run(arg);
	return NULL;
}

/* The object of the page servers: a file of the region's size, in a directory of its own. */
static int serve_object(struct state *st, struct bench_err *e)
{
	char path[400];
	int fd, rc;

	snprintf(st->serve_dir, sizeof(st->serve_dir), "%s/fl-bench-serve.XXXXXX", st->o.dir);
	if (!mkdtemp(st->serve_dir)) {
		rc = -errno;
		st->serve_dir[0] = 0;
		return bench_fail(e, rc, "mkdtemp in %s", st->o.dir);
	}
	snprintf(path, sizeof(path), "%s/obj", st->serve_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)st->o.size)) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return bench_fail(e, rc, "creating %s", path);
	}
	close(fd);
	if (getrandom(st->serve_key, sizeof(st->serve_key), 0) != sizeof(st->serve_key))
		return bench_fail(e, -EIO, "getrandom");
	return 0;
}

/* A page server in a thread of this process, and the remote store on it (written through). */
static int setup_serve(struct state *st, enum backend b, struct bench_err *e)
{
	struct pgserve *ps = &st->serve[b == B_SERVE_TLS];
	struct fl__transport_opts to = { .mode = FL__TRANSPORT_PLAIN };
	struct fl_store_remote_opts ro = { .sz = sizeof(ro), .flags = FL_STORE_REMOTE_WRITABLE,
					   .connections = MAX_THREADS };
	struct fl__pgsrv_opts so = { .host = "127.0.0.1" };
	char url[128], why[256];
	int rc;

	if (!st->serve_dir[0] && (rc = serve_object(st, e)))
		return rc;
	if (b == B_SERVE_TLS) {
		to = (struct fl__transport_opts){ .mode = FL__TRANSPORT_PSK, .psk = st->serve_key,
						  .psk_len = sizeof(st->serve_key) };
		ro.key = st->serve_key;
		ro.key_len = sizeof(st->serve_key);
	} else {
		ro.flags |= FL_STORE_REMOTE_INSECURE;
	}
	rc = fl__transport_new(&to, &ps->t, why, sizeof(why));
	if (rc)
		return bench_fail(e, rc, "%s: transport: %s", backend_names[b], why);
	so.dir = st->serve_dir;
	so.transport = ps->t;
	rc = fl__pgsrv_create(&so, &ps->srv);
	if (rc)
		return bench_fail(e, rc, "%s: starting the page server", backend_names[b]);
	rc = -pthread_create(&ps->tid, NULL, serve_thread, ps->srv);
	if (rc)
		return bench_fail(e, rc, "%s: the server's thread", backend_names[b]);
	ps->running = true;
	snprintf(url, sizeof(url), "faultline://127.0.0.1:%u/obj", fl__pgsrv_port(ps->srv));
	rc = fl_store_remote_open(url, &ro, &st->store[b]);
	if (rc)
		return bench_fail(e, rc, "fl_store_remote_open(%s)", url);
	if (st->serve_filled)
		return 0;
	st->serve_filled = true;
	return fill_store(st->store[b], st->o.size, e);
}

static void stop_serve(struct state *st)
{
	char path[400];

	for (int i = 0; i < 2; i++) {
		struct pgserve *ps = &st->serve[i];

		if (ps->running) {
			fl__pgsrv_stop(ps->srv);
			pthread_join(ps->tid, NULL);
		}
		fl__pgsrv_destroy(ps->srv);
		fl__transport_free(ps->t);
	}
	if (st->serve_dir[0]) {
		snprintf(path, sizeof(path), "%s/obj", st->serve_dir);
		unlink(path);
		rmdir(st->serve_dir);
	}
}

static void *echo_thread(void *arg)
{
	int fd = *(int *)arg;
	char c;

	while (recv(fd, &c, 1, 0) == 1 && send(fd, &c, 1, MSG_NOSIGNAL) == 1)
		;
	return NULL;
}

/* The median round trip of one byte over loopback TCP (TCP_NODELAY), in us. */
static int loopback_rtt(double *ret, struct bench_err *e)
{
	enum { N = 2000 };
	struct fl__sock_opts so = { .flags = FL__SOCK_NODELAY };
	static uint64_t t[N];
	int lfd = -1, a = -1, b = -1, rc;
	uint16_t port;
	pthread_t tid;
	char c = 'x';

	rc = fl__sock_listen("127.0.0.1", 0, &so, &lfd);
	if (!rc)
		rc = fl__sock_local_port(lfd, &port);
	if (!rc)
		rc = fl__sock_connect("127.0.0.1", port, &so, 5000, &a);
	if (!rc)
		rc = fl__sock_accept(lfd, &so, 5000, &b);
	if (lfd >= 0)
		close(lfd);
	if (!rc)
		rc = -pthread_create(&tid, NULL, echo_thread, &b);
	if (rc) {
		if (a >= 0)
			close(a);
		if (b >= 0)
			close(b);
		return bench_fail(e, rc, "loopback round trips");
	}
	for (int i = 0; i < N && !rc; i++) {
		uint64_t t0 = fl__now_ns();

		if (fl__sock_send_all(a, &c, 1, 5000) || fl__sock_recv_exact(a, &c, 1, 5000))
			rc = bench_fail(e, -EIO, "loopback round trips");
		t[i] = fl__now_ns() - t0;
	}
	shutdown(a, SHUT_RDWR);
	pthread_join(tid, NULL);
	close(a);
	close(b);
	stats_sort_u64(t, N);
	*ret = (double)stats_percentile(t, N, 50) / 1000.0;
	return rc;
}

static int setup(struct state *st, enum backend b, struct bench_err *e)
{
	switch (b) {
	case B_FILE: {
		struct fl_store_file_opts fo = { .sz = sizeof(fo), .size = st->o.size,
						 .flags = FL_STORE_FILE_WRITABLE |
							  FL_STORE_FILE_CREATE };
		int rc, fd;

		snprintf(st->file, sizeof(st->file), "%s/fl-bench-remote.XXXXXX", st->o.dir);
		fd = mkstemp(st->file);
		if (fd < 0) {
			rc = bench_fail(e, -errno, "mkstemp in %s", st->o.dir);
			st->file[0] = 0;
			return rc;
		}
		close(fd);
		rc = fl_store_file_open(st->file, &fo, &st->store[b]);
		if (rc)
			return bench_fail(e, rc, "fl_store_file_open(%s)", st->file);
		return fill_store(st->store[b], st->o.size, e);
	}
	case B_SERVE:
	case B_SERVE_TLS:
		return setup_serve(st, b, e);
	case B_REDIS:
	case B_REDIS_HASH:
	case B_CLUSTER:
		if (!redisd_available()) {
			snprintf(st->skip[b], sizeof(st->skip[b]), "faultline was built without "
				 "hiredis (libhiredis-dev)");
			return 0;
		}
		return setup_redis(st, b, b == B_CLUSTER ? 6 : 1, e);
	default:
		return 0;
	}
}

/* --------------------------------------------------------------- faults */

struct walker {
	uint8_t *base;
	size_t len;
	uint64_t off;			/* of base in the store */
	uint64_t *lat;			/* ns of each access that faulted */
	size_t nlat;
	uint64_t bad;			/* pages whose first word is not the pattern's */
	pthread_barrier_t *start;
};

static void *walk(void *arg)
{
	struct walker *w = arg;

	pthread_barrier_wait(w->start);
	for (size_t p = 0; p < w->len; p += BENCH_PAGE) {
		uint64_t t0 = fl__now_ns(), v, t1;

		v = *(volatile uint64_t *)(w->base + p);
		t1 = fl__now_ns();
		if (t1 - t0 >= FAULT_MIN_NS)
			w->lat[w->nlat++] = t1 - t0;
		if (v != fl_pattern_word(BENCH_PATTERN_SEED, w->off + p))
			w->bad++;
	}
	return NULL;
}

/* One configuration once: p50 and p99 of the faults in us, pages/s. */
static int run_one(struct state *st, enum backend b, unsigned int w, unsigned int nthreads,
		   double *out, struct bench_err *e)
{
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS,
				    .threads = nthreads };
	struct fl_region_opts ro = { .sz = sizeof(ro), .len = st->o.size, .store = st->store[b],
				     .memfd = -1 };
	struct walker wk[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	pthread_barrier_t bar;
	struct fl_pager *p = NULL;
	struct fl_region *r = NULL;
	uint64_t *all = NULL, t0, t1, bad = 0;
	size_t n = 0, per = st->o.size / nthreads / BENCH_PAGE * BENCH_PAGE;
	int rc;

	if (window_bytes[w]) {
		ro.prefetch = FL_PREFETCH_FIXED;
		ro.prefetch_min = ro.prefetch_max = window_bytes[w];
	}
	/* Copies: a 4 KiB fault would otherwise fetch whole 2 MiB staging chunks. */
	ro.install = FL_INSTALL_COPY;
	rc = fl_pager_create(&po, &p);
	if (!rc)
		rc = fl_region_add(p, &ro, &r);
	if (!rc)
		rc = fl_pager_start(p);
	if (rc) {
		fl_pager_destroy(p);
		return bench_fail(e, rc, "%s: pager", backend_names[b]);
	}
	pthread_barrier_init(&bar, NULL, nthreads + 1);
	for (unsigned int i = 0; i < nthreads; i++) {
		wk[i] = (struct walker){ .base = (uint8_t *)fl_region_addr(r) + i * per,
					 .len = per, .off = i * per, .start = &bar };
		wk[i].lat = malloc(per / BENCH_PAGE * sizeof(uint64_t));
		if (!wk[i].lat)
			abort();
		pthread_create(&tid[i], NULL, walk, &wk[i]);
	}
	pthread_barrier_wait(&bar);
	t0 = fl__now_ns();
	for (unsigned int i = 0; i < nthreads; i++)
		pthread_join(tid[i], NULL);
	t1 = fl__now_ns();
	pthread_barrier_destroy(&bar);
	fl_pager_destroy(p);
	for (unsigned int i = 0; i < nthreads; i++)
		n += wk[i].nlat;
	all = malloc((n + 1) * sizeof(*all));
	if (!all)
		abort();
	n = 0;
	for (unsigned int i = 0; i < nthreads; i++) {
		memcpy(all + n, wk[i].lat, wk[i].nlat * sizeof(*all));
		n += wk[i].nlat;
		bad += wk[i].bad;
		free(wk[i].lat);
	}
	stats_sort_u64(all, n);
	out[M_P50] = (double)stats_percentile(all, n, 50) / 1000.0;
	out[M_P99] = (double)stats_percentile(all, n, 99) / 1000.0;
	out[M_PPS] = (double)(per * nthreads / BENCH_PAGE) / ((double)(t1 - t0) / 1e9);
	free(all);
	if (bad)
		return bench_fail(e, -EIO, "%s: %llu pages read wrong data", backend_names[b],
				  (unsigned long long)bad);
	return 0;
}

/* ------------------------------------------------------ redis-benchmark */

/* One redis-benchmark run: GET of 4 KiB values, one client. p50, p99 (us), requests/s. */
static int redis_benchmark(struct state *st, unsigned int run, struct bench_err *e)
{
	char bin[256], port[16], out[4096], *line;
	int p[2], status;
	ssize_t got = 0, r;
	pid_t pid;

	if (!redisd_find("redis-benchmark", bin, sizeof(bin)))
		return snprintf(st->bm_skip, sizeof(st->bm_skip),
				"redis-benchmark not found (apt-get install redis-tools)"), 0;
	if (!st->single.n)
		return snprintf(st->bm_skip, sizeof(st->bm_skip), "no redis server"), 0;
	snprintf(port, sizeof(port), "%d", st->single.port[0]);
	if (pipe2(p, O_CLOEXEC))
		return bench_fail(e, -errno, "pipe");
	pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		execl(bin, bin, "-h", "127.0.0.1", "-p", port, "-t", "get", "-d", "4096", "-c", "1",
		      "-n", "20000", "--csv", "--precision", "3", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (got < (ssize_t)sizeof(out) - 1 &&
	       (r = read(p[0], out + got, sizeof(out) - 1 - (size_t)got)) != 0)
		if (r > 0)
			got += r;
		else if (errno != EINTR)
			break;
	out[got] = 0;
	close(p[0]);
	waitpid(pid, &status, 0);
	/* "GET","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
	   "p99_latency_ms","max_latency_ms" */
	line = strstr(out, "\"GET\"");
	if (pid < 0 || !line)
		return bench_fail(e, -EIO, "redis-benchmark: no GET line in its output");
	{
		double rps, avg, mn, p50, p95, p99;

		if (sscanf(line, "\"GET\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", &rps, &avg,
			   &mn, &p50, &p95, &p99) != 6)
			return bench_fail(e, -EIO, "redis-benchmark: cannot parse '%.80s'", line);
		st->bm[0][run] = p50 * 1000.0;
		st->bm[1][run] = p99 * 1000.0;
		st->bm[2][run] = rps;
	}
	return 0;
}

/* --------------------------------------------------------------- report */

static struct stats_spread spread(const double *v, unsigned int runs)
{
	double tmp[MAX_RUNS];

	return stats_spread_of(v, runs, tmp);
}

static void fmt_spread(char *buf, size_t len, struct stats_spread s, int prec)
{
	snprintf(buf, len, "%.*f (%.*f-%.*f)", prec, s.median, prec, s.min, prec, s.max);
}

/* Median over the runs of the per-run ratio a/b. */
static double ratio(const double *a, const double *b, unsigned int runs)
{
	double v[MAX_RUNS];

	for (unsigned int i = 0; i < runs; i++)
		v[i] = a[i] / b[i];
	return stats_median(v, runs);
}

static void report(struct state *st, const struct bench_machine *m)
{
	const struct opts *o = &st->o;

	bench_print_header("remote", m);
	printf("%llu MiB per configuration, %u runs: medians (min-max); pager THREADS mode, as "
	       "many handler threads as faulting threads, copies\n",
	       (unsigned long long)(o->size >> 20), o->runs);
	if (!(o->backends_mask & ((1u << B_REDIS) | (1u << B_REDIS_HASH)))) {
		/* No Redis store asked for: no anchor either. */
	} else if (st->bm_skip[0]) {
		printf("redis-benchmark: left out: %s\n", st->bm_skip);
	} else {
		char a[64], b[64], c[64];

		fmt_spread(a, sizeof(a), spread(st->bm[0], o->runs), 1);
		fmt_spread(b, sizeof(b), spread(st->bm[1], o->runs), 1);
		fmt_spread(c, sizeof(c), spread(st->bm[2], o->runs), 0);
		printf("redis-benchmark GET 4 KiB, 1 client: p50 %s us, p99 %s us, %s requests/s\n",
		       a, b, c);
	}
	if (o->backends_mask & ((1u << B_SERVE) | (1u << B_SERVE_TLS))) {
		char a[64];

		fmt_spread(a, sizeof(a), spread(st->rtt, o->runs), 1);
		printf("loopback TCP round trip (1 byte, TCP_NODELAY): p50 %s us\n", a);
	}
	printf("\n%-11s %-6s %-7s %-22s %-22s %s\n", "store", "window", "threads", "fault p50 us",
	       "fault p99 us", "pages/s");
	for (int b = 0; b < B_COUNT; b++) {
		if (!(o->backends_mask & (1u << b)))
			continue;
		if (st->skip[b][0]) {
			printf("%-11s left out: %s\n", backend_names[b], st->skip[b]);
			continue;
		}
		for (unsigned int w = 0; w < MAX_WINDOWS; w++) {
			if (!(o->windows_mask & (1u << w)))
				continue;
			for (unsigned int t = 0; t < MAX_THREADS; t++) {
				char a[64], bb[64], c[64];

				if (!(o->threads_mask & (1u << t)))
					continue;
				fmt_spread(a, sizeof(a), spread(st->v[b][w][t][M_P50], o->runs), 1);
				fmt_spread(bb, sizeof(bb), spread(st->v[b][w][t][M_P99], o->runs), 1);
				fmt_spread(c, sizeof(c), spread(st->v[b][w][t][M_PPS], o->runs), 0);
				printf("%-11s %-6s %-7u %-22s %-22s %s\n", backend_names[b],
				       window_names[w], t + 1, a, bb, c);
			}
		}
	}
	printf("\ntargets:\n");
	if ((o->backends_mask & (1u << B_REDIS)) && !st->skip[B_REDIS][0] && !st->bm_skip[0] &&
	    (o->windows_mask & 1) && (o->threads_mask & 1)) {
		double rr = ratio(st->v[B_REDIS][0][0][M_P50], st->bm[0], o->runs);

		printf("  redis p50 (none, 1 thread) / redis-benchmark GET p50: %.2fx (<= 1.5x): "
		       "%s\n", rr, rr <= 1.5 ? "met" : "missed");
	} else {
		printf("  redis p50 / redis-benchmark GET p50: not measured (needs redis, the "
		       "window none, 1 thread)\n");
	}
	for (int b = B_REDIS; b < B_COUNT; b++) {
		double rr;

		if (!(o->backends_mask & (1u << b)) || st->skip[b][0])
			continue;
		if (!(o->windows_mask & 1) || !(o->windows_mask & 4) || !(o->threads_mask & 1)) {
			printf("  %s: 1M prefetch pages/s / none: not measured (needs the windows "
			       "none and 1M, 1 thread)\n", backend_names[b]);
			continue;
		}
		rr = ratio(st->v[b][2][0][M_PPS], st->v[b][0][0][M_PPS], o->runs);
		printf("  %s: pages/s with 1M prefetch / without (1 thread): %.1fx (>= 5x): %s\n",
		       backend_names[b], rr, rr >= 5 ? "met" : "missed");
	}
	for (int b = B_SERVE; b <= B_SERVE_TLS; b++) {
		double sp, fp, rt;

		if (!(o->backends_mask & (1u << b)) || st->skip[b][0])
			continue;
		if (!(o->backends_mask & (1u << B_FILE)) || !(o->windows_mask & 1) ||
		    !(o->threads_mask & 1)) {
			printf("  %s p50 <= file p50 + 2 round trips: not measured (needs the file "
			       "store, the window none, 1 thread)\n", backend_names[b]);
			continue;
		}
		sp = spread(st->v[b][0][0][M_P50], o->runs).median;
		fp = spread(st->v[B_FILE][0][0][M_P50], o->runs).median;
		rt = spread(st->rtt, o->runs).median;
		printf("  %s p50 (none, 1 thread) %.1f us <= file p50 %.1f us + 2 x %.1f us = "
		       "%.1f us%s: %s\n", backend_names[b], sp, fp, rt, fp + 2 * rt,
		       b == B_SERVE_TLS ? " (TLS: for comparison)" : "",
		       sp <= fp + 2 * rt ? "met" : "missed");
	}
}

int bench_remote_main(int argc, char **argv)
{
	static struct state st;
	struct bench_machine m;
	struct bench_err e = { "" };
	int rc;

	memset(&st, 0, sizeof(st));
	rc = parse_args(argc, argv, &st.o);
	if (rc)
		return rc;
	bench_machine_get(&m);
	bench_prewarm(2 * st.o.size);
	for (int b = 0; b < B_COUNT && !rc; b++)
		if (st.o.backends_mask & (1u << b))
			rc = setup(&st, b, &e);
	for (unsigned int run = 0; run < st.o.runs && !rc; run++) {
		if ((st.o.backends_mask & ((1u << B_REDIS) | (1u << B_REDIS_HASH))))
			rc = redis_benchmark(&st, run, &e);
		if (!rc && (st.o.backends_mask & ((1u << B_SERVE) | (1u << B_SERVE_TLS))))
			rc = loopback_rtt(&st.rtt[run], &e);
		for (int b = 0; b < B_COUNT && !rc; b++) {
			if (!(st.o.backends_mask & (1u << b)) || st.skip[b][0])
				continue;
			for (unsigned int w = 0; w < MAX_WINDOWS && !rc; w++) {
				if (!(st.o.windows_mask & (1u << w)))
					continue;
				for (unsigned int t = 0; t < MAX_THREADS && !rc; t++) {
					double out[M_COUNT];

					if (!(st.o.threads_mask & (1u << t)))
						continue;
					rc = run_one(&st, b, w, t + 1, out, &e);
					for (int k = 0; k < M_COUNT && !rc; k++)
						st.v[b][w][t][k][run] = out[k];
				}
			}
		}
	}
	if (!rc)
		report(&st, &m);
	else
		fprintf(stderr, "faultline: %s: %s\n", SUB, e.msg);
	fflush(stdout);
	for (int b = 0; b < B_COUNT; b++)
		fl_store_destroy(st.store[b]);
	redisd_stop(&st.single);
	redisd_stop(&st.cluster);
	stop_serve(&st);
	if (st.file[0])
		unlink(st.file);
	return rc ? 1 : 0;
}
