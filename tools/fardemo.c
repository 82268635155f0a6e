/* SPDX-License-Identifier: MIT */
/*
 * faultline serve --demo: far memory. The demos' key-value store in a pager
 * region several times larger than its memory budget, the rest of it in
 * Redis: a redis-server (or a cluster) started here in a temporary
 * directory and removed at the end. Eviction writes the dirty pages back to
 * Redis, faults bring them in again; every key is checked through the
 * region and, after a sync, straight from Redis through a second store.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench/redisd.h"
#include "faultline.h"
#include "kv.h"
#include "tool.h"
#include "util.h"

#define SUB "serve --demo"
#define MIB (1ull << 20)
#define PG 4096ull
#define EXIT_CANNOT 3		/* the demo cannot run here: what to install is printed */
#define START_MS 120000		/* servers (a cluster takes a few seconds) */
#define PREFIX "fl-far-demo"

struct far_opts {
	uint64_t size, budget;
	double seconds;
	bool cluster;
};

void usage_serve_demo(FILE *out)
{
	fprintf(out,
		"usage: faultline serve --demo [--size SIZE] [--budget SIZE] [--seconds SECONDS]\n"
		"                              [--cluster]\n\n"
		"Far memory. The key-value store of the other demos, SIZE bytes, lives in a\n"
		"pager region whose memory budget (fl_budget_create(3)) is BUDGET; the rest\n"
		"of it is in Redis (fl_store_redis_open(3)): a redis-server started here on a\n"
		"free loopback port in a temporary directory (with --cluster, a Redis Cluster\n"
		"of 3 masters and 3 replicas), stopped and removed at the end, also when the\n"
		"demo fails or is killed. The store is built, then its %d load threads serve\n"
		"it for SECONDS. Pages past the budget are evicted, the dirty ones written\n"
		"back to Redis first, and a page touched again faults in from Redis. Then\n"
		"every key is checked through the region, and after a sync once more straight\n"
		"from Redis through a second connection. The budget, the peak of resident\n"
		"memory, and the pages evicted, written back and faulted in again are\n"
		"printed.\n\n"
		"  --size SIZE        the store (4M to 1G, K, M, G suffixes; default 64M)\n"
		"  --budget SIZE      the memory budget (1M to half of SIZE; default SIZE/8:\n"
		"                     the store's keys fill half of it)\n"
		"  --seconds SECONDS  the load threads serve this long (default 1)\n"
		"  --cluster          a Redis Cluster of 6 servers instead of one\n\n"
		"Exit status: 0 verified; 1 a failure; 2 bad options; 3 the demo cannot run\n"
		"here (no redis-server, no redis-cli for --cluster, faultline built without\n"
		"hiredis, or a kernel whose userfaultfd cannot evict): what to install, or\n"
		"why, is printed.\n", LOADERS);
}

static void sleep_secs(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s,
			       .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (double)MIB;
}

static int parse(int argc, char **argv, struct far_opts *o)
{
	enum { O_SIZE = 256, O_BUDGET, O_SECONDS, O_CLUSTER };
	static const struct option lo[] = {
		{ "size", required_argument, NULL, O_SIZE },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "seconds", required_argument, NULL, O_SECONDS },
		{ "cluster", no_argument, NULL, O_CLUSTER },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	*o = (struct far_opts){ .size = 64 * MIB, .seconds = 1 };
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_SIZE:
			if (tool_parse_size(optarg, 1ull << 30, &o->size) || o->size < 4 * MIB ||
			    o->size % PG)
				return usage_error(SUB, "--size %s: 4M to 1G, a multiple of 4K",
						   optarg);
			break;
		case O_BUDGET:
			if (tool_parse_size(optarg, 1ull << 30, &o->budget) || o->budget < MIB ||
			    o->budget % PG)
				return usage_error(SUB, "--budget %s: at least 1M, a multiple of 4K",
						   optarg);
			break;
		case O_SECONDS:
			errno = 0;
			o->seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->seconds >= 0) ||
			    o->seconds > 3600)
				return usage_error(SUB, "--seconds %s: 0 to 3600", optarg);
			break;
		case O_CLUSTER:
			o->cluster = true;
			break;
		default:
			return usage_error(SUB, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	if (!o->budget)
		o->budget = o->size / 8 / PG * PG;
	if (o->budget > o->size / 2)
		return usage_error(SUB, "--budget %llu MiB: at most half of --size (%llu MiB), or "
				   "nothing is far", (unsigned long long)(o->budget / MIB),
				   (unsigned long long)(o->size / MIB));
	return 0;
}

/* Whether it can run here; if not, what to install, and EXIT_CANNOT. */
static int can_run(const struct far_opts *o)
{
	char path[256];

	if (!redisd_available()) {
		fprintf(stderr, "faultline: %s: this faultline was built without hiredis (the Redis "
			"store): install libhiredis-dev (apt-get install libhiredis-dev; make deps "
			"does as root) and build again\n", SUB);
		return EXIT_CANNOT;
	}
	if (!redisd_find("redis-server", path, sizeof(path))) {
		fprintf(stderr, "faultline: %s: needs redis-server: apt-get install redis-server "
			"(make deps does as root)\n", SUB);
		return EXIT_CANNOT;
	}
	if (o->cluster && !redisd_find("redis-cli", path, sizeof(path))) {
		fprintf(stderr, "faultline: %s: --cluster needs redis-cli: apt-get install "
			"redis-tools (make deps does as root)\n", SUB);
		return EXIT_CANNOT;
	}
	return 0;
}

/* Blocks in Redis now: DBSIZE summed over the masters (the object's record included). */
static long long redis_keys(struct redisd *d)
{
	long long n = 0;
	char out[256];

	for (unsigned int i = 0; i < d->n; i++) {
		if (d->cluster && (redisd_cmd(d, i, 5000, out, sizeof(out), "ROLE") ||
				   strncmp(out, "master", 6)))
			continue;
		if (redisd_cmd(d, i, 5000, out, sizeof(out), "DBSIZE"))
			return -1;
		n += atoll(out);
	}
	return n;
}

/* The whole object read from @s into @buf (a hole, never written, is zeros); *@data: pages not holes. */
static int read_all(struct fl_store *s, uint8_t *buf, uint64_t size, uint64_t *data)
{
	const uint64_t chunk = MIB;
	uint64_t holes[MIB / PG / 64];

	for (uint64_t off = 0; off < size; off += chunk) {
		uint64_t n = size - off < chunk ? size - off : chunk;
		int r = fl_store_read(s, off, buf + off, n, PG, holes);

		if (r < 0)
			return r;
		for (uint64_t i = 0; i < n / PG; i++)
			if ((holes[i / 64] >> (i % 64)) & 1)
				memset(buf + off + i * PG, 0, PG);
			else
				++*data;
	}
	return 0;
}

static struct fl_store *open_store(struct redisd *d, unsigned int i, uint64_t size,
				   uint32_t flags, int *err)
{
	struct fl_store_redis_opts ro = { .sz = sizeof(ro), .size = size, .flags = flags };
	struct fl_store *s = NULL;
	char url[256];

	redisd_url(d, i, PREFIX, url, sizeof(url));
	*err = fl_store_redis_open(url, &ro, &s);
	return s;
}

static void print_verify(const char *how, const struct kv_verify *v, uint64_t nkeys)
{
	printf("  verify    %llu keys present of %llu, %llu wrong values, checksums %s (%s)\n",
	       (unsigned long long)v->keys, (unsigned long long)nkeys,
	       (unsigned long long)v->bad_values, v->checksums_ok ? "match" : "DIFFER", how);
}

static bool verified(const struct kv_verify *v, uint64_t nkeys)
{
	return v->keys == nkeys && !v->bad_values && v->checksums_ok;
}

int serve_demo(int argc, char **argv)
{
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS };
	struct fl_region_stats rs = { .sz = sizeof(rs) };
	struct fl_budget_stats bs = { .sz = sizeof(bs) };
	struct load_state init[LOADERS], st[LOADERS];
	struct kv_verify v1 = { 0 }, v2 = { 0 };
	struct far_opts o;
	struct redisd d;
	struct fl_store *s = NULL, *s2 = NULL;
	struct fl_budget *b = NULL;
	struct fl_pager *p = NULL;
	struct fl_region *reg = NULL;
	struct load ld = { 0 };
	struct kv_hdr *h;
	uint8_t *copy = NULL;
	uint64_t t0, build_ns, nkeys, data = 0;
	long long keys;
	int r, rc = 1;

	r = parse(argc, argv, &o);
	if (r)
		return r;
	r = can_run(&o);
	if (r)
		return r;
	printf("faultline serve --demo: far memory: a key-value store of %.0f MiB in a memory "
	       "budget of %.0f MiB, the rest in Redis%s\n", mib(o.size), mib(o.budget),
	       o.cluster ? " Cluster" : "");
	fflush(stdout);
	if (redisd_start(&d, o.cluster ? 6 : 1, o.cluster, START_MS)) {
		fprintf(stderr, "faultline: %s: starting redis-server: %s\n", SUB, d.err);
		return 1;
	}
	if (o.cluster)
		printf("  redis     a cluster of 3 masters and 3 replicas on 127.0.0.1 ports %d..%d, "
		       "in %s (removed at the end)\n", d.port[0], d.port[d.n - 1], d.dir);
	else
		printf("  redis     redis-server on 127.0.0.1:%d, in %s (removed at the end)\n",
		       d.port[0], d.dir);

	s = open_store(&d, 0, o.size, 0, &r);
	if (r < 0) {
		fail(SUB, "fl_store_redis_open", r);
		goto out;
	}
	{
		struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = o.budget };

		r = fl_budget_create(&bo, &b);
		if (r < 0) {
			fail(SUB, "fl_budget_create", r);
			goto out;
		}
	}
	r = fl_pager_create(&po, &p);
	if (r == 0)
		r = fl_pager_start(p);
	if (r < 0) {
		fail(SUB, "starting a pager", r);
		goto out;
	}
	{
		struct fl_region_opts ro = { .sz = sizeof(ro), .len = o.size, .store = s,
					     .memfd = -1, .budget = b };

		r = fl_region_add(p, &ro, &reg);
		if (r == -EOPNOTSUPP) {
			fprintf(stderr, "faultline: %s: this kernel's userfaultfd cannot evict pages "
				"of a budget (faultline probe shows what it can do; faultline(7), "
				"\"Budgets\")\n", SUB);
			rc = EXIT_CANNOT;
			goto out;
		}
		if (r < 0) {
			fail(SUB, "fl_region_add (a budget over Redis)", r);
			goto out;
		}
	}

	/* The program: it builds its store, then serves it; neither knows where pages live. */
	h = fl_region_addr(reg);
	t0 = fl__now_ns();
	kv_build(h, kv_slots(o.size), init);
	build_ns = fl__now_ns() - t0;
	nkeys = h->nkeys;
	printf("  build     %llu keys in %.2f s\n", (unsigned long long)nkeys,
	       (double)build_ns / 1e9);
	fflush(stdout);
	r = load_start(&ld, h, init);
	if (r < 0) {
		fail(SUB, "starting the load threads", r);
		goto out;
	}
	sleep_secs(o.seconds);
	load_stop(&ld);
	for (int i = 0; i < LOADERS; i++)
		st[i] = ld.l[i].st;
	printf("  serve     %d threads, %.2f s: %llu operations (70%% GET, each value checked), "
	       "%llu wrong GETs\n", LOADERS, (double)ld.ns / 1e9,
	       (unsigned long long)load_ops(st), (unsigned long long)load_errors(st));
	fl_region_stats(reg, &rs);
	fl_budget_stats(b, &bs);
	kv_verify(h, st, &v1);
	print_verify("through the region", &v1, nkeys);
	fflush(stdout);

	/* Everything still dirty in memory to Redis; then read it all from there. */
	r = fl_region_sync(reg, 0, o.size);
	if (r < 0) {
		fail(SUB, "fl_region_sync", r);
		goto out;
	}
	copy = malloc(o.size);
	if (!copy) {
		fail(SUB, "malloc", -ENOMEM);
		goto out;
	}
	s2 = open_store(&d, o.cluster ? d.n - 1 : 0, o.size, FL_STORE_REDIS_READONLY, &r);
	if (r == 0)
		r = read_all(s2, copy, o.size, &data);
	if (r < 0) {
		fail(SUB, "reading the store back from Redis", r);
		goto out;
	}
	kv_verify((const struct kv_hdr *)copy, st, &v2);
	print_verify("straight from Redis, a second connection, after a sync", &v2, nkeys);

	printf("  budget    %.1f MiB; resident at most %.1f MiB; the program wrote %.1f MiB (%llu "
	       "pages) and read all %.0f MiB\n", mib(bs.bytes), mib(bs.resident_max),
	       mib(data * PG), (unsigned long long)data, mib(o.size));
	printf("  evicted   %llu pages (%.1f MiB); written back to Redis first: %llu (%.1f MiB); "
	       "faulted in again: %llu\n", (unsigned long long)rs.evicted,
	       mib(rs.evicted * PG), (unsigned long long)rs.written_back,
	       mib(rs.written_back * PG), (unsigned long long)rs.refaults);
	keys = redis_keys(&d);
	if (keys >= 0)
		printf("  in Redis  %lld keys (a key per 4 KiB page, a bitmap per 64 pages, the "
		       "object's record)\n", keys);
	if (!verified(&v1, nkeys) || !verified(&v2, nkeys) || load_errors(st)) {
		fprintf(stderr, "faultline: %s: NOT verified: the store read back differs from "
			"what the program wrote\n", SUB);
		goto out;
	}
	if (!rs.evicted || !rs.written_back) {
		fprintf(stderr, "faultline: %s: the budget evicted %llu pages and wrote back %llu: "
			"nothing went far\n", SUB, (unsigned long long)rs.evicted,
			(unsigned long long)rs.written_back);
		goto out;
	}
	printf("faultline serve --demo: verified: %.1f MiB of data in at most %.1f MiB of memory; "
	       "the rest was in Redis, and came back intact\n", mib(data * PG),
	       mib(bs.resident_max));
	rc = 0;
out:
	load_stop(&ld);
	fl_pager_destroy(p);
	fl_budget_destroy(b);
	fl_store_destroy(s2);
	fl_store_destroy(s);
	redisd_stop(&d);
	free(copy);
	return rc;
}
