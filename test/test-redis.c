/* SPDX-License-Identifier: MIT */
/*
 * The Redis store against real servers: a single redis-server and a cluster
 * of 3 masters and 3 replicas, started here on free loopback ports in a
 * temporary directory (bench/redisd.c) and removed afterwards, also when a
 * test fails. Without redis-server a test skips, and FL_REQUIRE_REDIS=1
 * makes that a failure.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "redis-test.h"


/* Start servers, or skip (fail with FL_REQUIRE_REDIS=1) where redis-server is not installed. */
static void t_redis_start(struct redisd *d, unsigned int n, bool cluster)
{
	t_redis_need(cluster);
	if (redisd_start(d, n, cluster, (unsigned int)t_ms(120000)))
		t_fail(__FILE__, __LINE__, "starting redis: %s", d->err);
}

static struct fl_store *t_redis_open(struct redisd *d, unsigned int i, const char *prefix,
				     uint64_t size, uint32_t flags, unsigned int wait)
{
	struct fl_store_redis_opts o = {
		.sz = sizeof(o), .size = size, .flags = flags, .wait_replicas = wait,
		.retry_ms = (unsigned int)t_ms(60000),
		.command_timeout_ms = (unsigned int)t_ms(5000),
		.wait_timeout_ms = (unsigned int)t_ms(2000),
	};
	struct fl_store *s = NULL;
	char url[256];

	redisd_url(d, i, prefix, url, sizeof(url));
	T_ASSERT_OK(fl_store_redis_open(url, &o, &s));
	return s;
}

static int cmd(struct redisd *d, unsigned int i, char *out, size_t len, const char *c)
{
	return redisd_cmdline(d, i, (unsigned int)t_ms(5000), out, len, c);
}

TEST(redis_open_rejects_bad_arguments)
{
	struct fl_store_redis_opts o = { .sz = sizeof(o), .size = 1 << 20 };
	struct fl_store *s = (struct fl_store *)1;

#ifndef FL_HAVE_HIREDIS
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1:1/x", &o, &s), EOPNOTSUPP);
	T_SKIP("built without hiredis (libhiredis-dev)");
#endif
	T_ASSERT_ERR(fl_store_redis_open("http://127.0.0.1/x", &o, &s), EINVAL);
	T_ASSERT(s == NULL);
	T_ASSERT_ERR(fl_store_redis_open("redis://", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1:0/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1:70000/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1:12x/x", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1:6379/a b", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1:6379/a{b}", &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open(NULL, &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1/x", NULL, &s), EINVAL);
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1/x", &o, NULL), EINVAL);
	o.size = 4095;
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1/x", &o, &s), EINVAL);
	o.size = 0;
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1/x", &o, &s), EINVAL);
	o.size = 4096;
	o.flags = 1u << 30;
	T_ASSERT_ERR(fl_store_redis_open("redis://127.0.0.1/x", &o, &s), EINVAL);
}

/* Nothing listens: the open fails with -EIO once retry_ms has passed, never hangs. */
TEST(redis_unreachable_fails_bounded)
{
	struct fl_store_redis_opts o = { .sz = sizeof(o), .size = 1 << 20, .retry_ms = 300,
					 .connect_timeout_ms = 200 };
	struct redisd d;
	struct fl_store *s = NULL;
	char url[128];
	int port;

	/* A port that was free a moment ago: a server there, killed, leaves it refusing. */
	t_redis_start(&d, 1, false);
	port = d.port[0];
	redisd_stop(&d);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/x", port);
	T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), EIO);
	T_ASSERT(s == NULL);
}

/*
 * Pages written through the store come back through a pager region, with
 * both layouts; pages never written read as zeros because the chunk's bitmap
 * says so, and a store reports them as holes.
 */
static void pages_roundtrip(uint32_t flags, const char *prefix)
{
	const size_t npages = 300;	/* 4 full chunks and part of a fifth */
	struct redisd d;
	struct fl_store *s, *s2;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts ro;
	uint8_t *buf = malloc(npages * BLK), *page = malloc(BLK);
	uint64_t holes[(300 + 63) / 64];
	char out[256], key[128];

	T_ASSERT(buf && page);
	t_redis_start(&d, 1, false);
	s = t_redis_open(&d, 0, prefix, npages * BLK, flags, 0);
	T_ASSERT_EQ(fl_store_caps(s) & FL_STORE_HOLES, FL_STORE_HOLES);
	/* Even pages written (some one by one, some in a batch across chunks), odd not. */
	for (size_t i = 0; i < npages; i += 2) {
		page_make(page, i, 1);
		T_ASSERT_OK(fl_store_write(s, i * BLK, page, BLK));
	}
	for (size_t i = 100; i < 140; i++)
		page_make(buf + (i - 100) * BLK, i, 2);
	T_ASSERT_OK(fl_store_write(s, 100 * BLK, buf, 40 * BLK));

	/* The raw store: data, and holes only for never-written pages. */
	memset(buf, 0xaa, npages * BLK);
	T_ASSERT_OK(fl_store_read(s, 0, buf, npages * BLK, BLK, holes));
	for (size_t i = 0; i < npages; i++) {
		bool hole = (holes[i / 64] >> (i % 64)) & 1;
		uint64_t want = i >= 100 && i < 140 ? 2 : (i % 2 ? 0 : 1);

		T_ASSERT_EQ(hole, want == 0);
		if (want)
			T_ASSERT_EQ(page_version(buf + i * BLK, i), want);
	}

	/* Through a pager region: a second handle (it wrote nothing itself). */
	s2 = t_redis_open(&d, 0, prefix, npages * BLK, flags, 0);
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	ro = t_region_opts(s2, npages * BLK);
	ro.prefetch = FL_PREFETCH_FIXED;
	ro.prefetch_max = 64 * 1024;
	T_ASSERT_OK(fl_region_add(p, &ro, &r));
	T_ASSERT_OK(fl_pager_start(p));
	for (size_t i = 0; i < npages; i++) {
		const uint8_t *a = (const uint8_t *)fl_region_addr(r) + i * BLK;
		uint64_t want = i >= 100 && i < 140 ? 2 : (i % 2 ? 0 : 1);

		if (want)
			T_ASSERT_EQ(page_version(a, i), want);
		else
			T_ASSERT(t_all(a, BLK, 0));
	}
	fl_pager_destroy(p);

	/* The record is what says "never written": a bit set for an absent block is -EIO. */
	snprintf(key, sizeof(key), "{%s:0}:m", prefix);
	T_ASSERT_OK(redisd_cmd(&d, 0, 5000, out, sizeof(out), "SETBIT %s 1 1", key));
	T_ASSERT_ERR(fl_store_read(s2, 0, buf, 4 * BLK, BLK, holes), EIO);
	/* And an object opened with another size or layout is refused. */
	{
		struct fl_store_redis_opts o = { .sz = sizeof(o), .size = 2 * npages * BLK,
						 .flags = flags, .retry_ms = 5000 };
		char url[256];

		redisd_url(&d, 0, prefix, url, sizeof(url));
		T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), EINVAL);
		o.size = npages * BLK;
		o.flags = flags ^ FL_STORE_REDIS_HASH;
		T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), EINVAL);
	}
	fl_store_destroy(s2);
	fl_store_destroy(s);
	redisd_stop(&d);
	free(buf);
	free(page);
}

TEST(redis_pages_through_pager_keys)
{
	pages_roundtrip(0, "rt-keys");
}

TEST(redis_pages_through_pager_hash)
{
	pages_roundtrip(FL_STORE_REDIS_HASH, "rt-hash");
}

/*
 * A block that was written and is gone (deleted here, as maxmemory eviction
 * or a lost failover would) poisons the page: SIGBUS, never zeros. Its
 * neighbours still read.
 */
static void deleted_sigbus(uint32_t flags, const char *prefix)
{
	struct redisd d;
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts ro;
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	uint8_t page[BLK];
	uint64_t holes[1];
	char out[64];
	volatile uint8_t *a;

	t_redis_start(&d, 1, false);
	s = t_redis_open(&d, 0, prefix, 16 * BLK, flags, 0);
	for (int i = 0; i < 16; i++) {
		page_make(page, (uint64_t)i, 7);
		T_ASSERT_OK(fl_store_write(s, (uint64_t)i * BLK, page, BLK));
	}
	if (flags & FL_STORE_REDIS_HASH)
		T_ASSERT_OK(redisd_cmd(&d, 0, 5000, out, sizeof(out), "HDEL {%s:0}:h 5", prefix));
	else
		T_ASSERT_OK(redisd_cmd(&d, 0, 5000, out, sizeof(out), "DEL {%s:0}:5", prefix));
	T_ASSERT_EQ(atoll(out), 1);	/* one key (field) removed */
	T_ASSERT_ERR(fl_store_read(s, 5 * BLK, page, BLK, BLK, holes), EIO);

	sigaction(SIGBUS, &sa, NULL);
	p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	ro = t_region_opts(s, 16 * BLK);
	T_ASSERT_OK(fl_region_add(p, &ro, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	T_ASSERT_EQ(page_version((const uint8_t *)a + 4 * BLK, 4), 7);
	T_ASSERT(t_read_sigbus(a + 5 * BLK));
	T_ASSERT(t_read_sigbus(a + 5 * BLK + 100));	/* still poisoned */
	T_ASSERT_EQ(page_version((const uint8_t *)a + 6 * BLK, 6), 7);
	fl_pager_destroy(p);
	fl_store_destroy(s);
	redisd_stop(&d);
}

TEST(redis_deleted_key_sigbus_keys)
{
	deleted_sigbus(0, "del-keys");
}

TEST(redis_deleted_key_sigbus_hash)
{
	deleted_sigbus(FL_STORE_REDIS_HASH, "del-hash");
}

/* The server goes away: reads fail with -EIO once retry_ms passes (never zeros, never hang). */
TEST(redis_server_gone_eio)
{
	struct fl_store_redis_opts o = { .sz = sizeof(o), .size = 4 * BLK, .retry_ms = 500,
					 .connect_timeout_ms = 200 };
	struct redisd d;
	struct fl_store *s = NULL;
	uint8_t page[BLK];
	uint64_t holes[1];
	char url[128];

	t_redis_start(&d, 1, false);
	redisd_url(&d, 0, "gone", url, sizeof(url));
	T_ASSERT_OK(fl_store_redis_open(url, &o, &s));
	page_make(page, 0, 3);
	T_ASSERT_OK(fl_store_write(s, 0, page, BLK));
	redisd_kill(&d, 0);
	T_ASSERT_ERR(fl_store_read(s, 0, page, BLK, BLK, holes), EIO);
	T_ASSERT_ERR(fl_store_read(s, BLK, page, BLK, BLK, holes), EIO);
	T_ASSERT_ERR(fl_store_write(s, 0, page, BLK), EIO);
	fl_store_destroy(s);
	redisd_stop(&d);
}

/* --------------------------------------------------------------- cluster */

static void node_id(struct redisd *d, unsigned int i, char *id, size_t len)
{
	T_ASSERT_OK(cmd(d, i, id, len, "CLUSTER MYID"));
	T_ASSERT(strlen(id) == 40);
}

/*
 * Keys land on the master of their slot; MOVED and ASK are followed while a
 * chunk's slot migrates to another master (CLUSTER SETSLOT, MIGRATE), with
 * reads and writes on both sides of the migration.
 */
TEST(redis_cluster_routing_moved_ask)
{
	const unsigned int nb = 64;	/* one chunk: one slot */
	struct redisd d;
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts ro;
	uint8_t *buf = malloc(nb * BLK), page[BLK];
	uint64_t holes[1];
	char out[8192], src_id[64], dst_id[64], c[1024];
	unsigned int slot = redisd_key_slot("{mig:0}");
	int src, dst = -1;

	T_ASSERT(buf);
	t_redis_start(&d, 6, true);
	/* A store opened through a replica's address still writes to the masters. */
	s = t_redis_open(&d, 5, "mig", nb * BLK, 0, 1);
	for (unsigned int i = 0; i < nb; i++)
		page_make(buf + i * BLK, i, 1);
	T_ASSERT_OK(fl_store_write(s, 0, buf, nb * BLK));
	src = redisd_slot_master(&d, 0, slot);
	T_ASSERT(src >= 0);
	snprintf(c, sizeof(c), "CLUSTER COUNTKEYSINSLOT %u", slot);
	T_ASSERT_OK(cmd(&d, (unsigned int)src, out, sizeof(out), c));
	T_ASSERT_EQ(atoll(out), nb + 1);	/* the blocks and the bitmap */
	for (unsigned int i = 0; i < d.n && dst < 0; i++) {
		T_ASSERT_OK(cmd(&d, i, out, sizeof(out), "ROLE"));
		if ((int)i != src && !strncmp(out, "master", 6))
			dst = (int)i;
	}
	T_ASSERT(dst >= 0);
	node_id(&d, (unsigned int)src, src_id, sizeof(src_id));
	node_id(&d, (unsigned int)dst, dst_id, sizeof(dst_id));

	/* Migration under way: blocks 0..31 and the bitmap moved, 32..63 not yet. */
	snprintf(c, sizeof(c), "CLUSTER SETSLOT %u IMPORTING %s", slot, src_id);
	T_ASSERT_OK(cmd(&d, (unsigned int)dst, out, sizeof(out), c));
	T_ASSERT(!strcmp(out, "OK"));
	snprintf(c, sizeof(c), "CLUSTER SETSLOT %u MIGRATING %s", slot, dst_id);
	T_ASSERT_OK(cmd(&d, (unsigned int)src, out, sizeof(out), c));
	T_ASSERT(!strcmp(out, "OK"));
	{
		int n = snprintf(c, sizeof(c), "MIGRATE 127.0.0.1 %d \"\" 0 %d KEYS {mig:0}:m",
				 d.port[dst], t_ms(10000));

		for (unsigned int i = 0; i < 32; i++)
			n += snprintf(c + n, sizeof(c) - (size_t)n, " {mig:0}:%u", i);
	}
	T_ASSERT_OK(cmd(&d, (unsigned int)src, out, sizeof(out), c));
	T_ASSERT(!strcmp(out, "OK"));

	/* Reads: the moved blocks come through ASK from dst, the others from src. */
	memset(buf, 0, nb * BLK);
	T_ASSERT_OK(fl_store_read(s, 0, buf, nb * BLK, BLK, holes));
	for (unsigned int i = 0; i < nb; i++)
		T_ASSERT_EQ(page_version(buf + i * BLK, i), 1);
	T_ASSERT_OK(cmd(&d, (unsigned int)dst, out, sizeof(out), "INFO commandstats"));
	T_ASSERT(strstr(out, "cmdstat_asking:calls="));
	/* Writes on both sides: 5 (moved: ASK to dst) and 40 (still on src). */
	page_make(page, 5, 2);
	T_ASSERT_OK(fl_store_write(s, 5 * BLK, page, BLK));
	page_make(page, 40, 2);
	T_ASSERT_OK(fl_store_write(s, 40 * BLK, page, BLK));

	/* Finish: the rest moves, the slot belongs to dst everywhere. */
	{
		int n = snprintf(c, sizeof(c), "MIGRATE 127.0.0.1 %d \"\" 0 %d KEYS", d.port[dst],
				 t_ms(10000));

		for (unsigned int i = 32; i < nb; i++)
			n += snprintf(c + n, sizeof(c) - (size_t)n, " {mig:0}:%u", i);
	}
	T_ASSERT_OK(cmd(&d, (unsigned int)src, out, sizeof(out), c));
	T_ASSERT(!strcmp(out, "OK"));
	snprintf(c, sizeof(c), "CLUSTER SETSLOT %u NODE %s", slot, dst_id);
	for (unsigned int i = 0; i < d.n; i++) {
		T_ASSERT_OK(cmd(&d, i, out, sizeof(out), "ROLE"));
		if (!strncmp(out, "master", 6)) {
			T_ASSERT_OK(cmd(&d, i, out, sizeof(out), c));
			T_ASSERT(!strcmp(out, "OK"));
		}
	}
	snprintf(c, sizeof(c), "CLUSTER COUNTKEYSINSLOT %u", slot);
	T_ASSERT_OK(cmd(&d, (unsigned int)src, out, sizeof(out), c));
	T_ASSERT_EQ(atoll(out), 0);
	T_ASSERT_OK(cmd(&d, (unsigned int)dst, out, sizeof(out), c));
	T_ASSERT_EQ(atoll(out), nb + 1);

	/* The store's map still says src: MOVED takes it to dst. Through a pager region. */
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	ro = t_region_opts(s, nb * BLK);
	ro.prefetch = FL_PREFETCH_FIXED;
	ro.prefetch_max = 64 * 1024;
	T_ASSERT_OK(fl_region_add(p, &ro, &r));
	T_ASSERT_OK(fl_pager_start(p));
	for (unsigned int i = 0; i < nb; i++)
		T_ASSERT_EQ(page_version((const uint8_t *)fl_region_addr(r) + i * BLK, i),
			    i == 5 || i == 40 ? 2 : 1);
	fl_pager_destroy(p);

	/* WAIT for more replicas than a master has: the write fails (bounded), loudly. */
	{
		struct fl_store_redis_opts o = { .sz = sizeof(o), .size = nb * BLK,
						 .wait_replicas = 2, .wait_timeout_ms = 50,
						 .retry_ms = 300 };
		struct fl_store *s2 = NULL;
		char url[128];

		redisd_url(&d, 0, "mig", url, sizeof(url));
		T_ASSERT_OK(fl_store_redis_open(url, &o, &s2));
		T_ASSERT_ERR(fl_store_write(s2, 0, buf, BLK), EIO);
		fl_store_destroy(s2);
	}
	fl_store_destroy(s);
	redisd_stop(&d);
	free(buf);
}

/* -------------------------------------------------------------- failover */

#define FO_PAGES 512u		/* 8 chunks over the 3 masters */
#define FO_FAULTERS 2
#define FO_WRITERS 2

struct fo {
	struct fl_pager *pager;
	struct fl_store *rd, *wr;
	atomic_bool stop;
	atomic_uint rounds[FO_FAULTERS];
	atomic_uint bad;		/* a page that was not a well-formed version */
	char first_bad[160];
	atomic_uint_fast64_t acked[FO_PAGES];	/* last version written with WAIT acknowledged */
	atomic_uint_fast64_t tried[FO_PAGES];	/* last version attempted */
	atomic_uint wrote_ok, wrote_failed;
	int id;
};

struct fo_thread {
	struct fo *f;
	unsigned int i;
};

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Fault every page of a fresh region in a random order, checking each: forever until stop. */
static void *fo_faulter(void *arg)
{
	struct fo_thread *t = arg;
	struct fo *f = t->f;
	uint64_t x = 0x9e3779b97f4a7c15ull * (t->i + 1);
	unsigned int order[FO_PAGES];

	for (unsigned int k = 0; k < FO_PAGES; k++)
		order[k] = k;
	while (!atomic_load(&f->stop)) {
		struct fl_region_opts ro = t_region_opts(f->rd, FO_PAGES * BLK);
		struct fl_region *r;

		T_ASSERT_OK(fl_region_add(f->pager, &ro, &r));
		/* Each page once (a page read twice would show the first fault's version). */
		for (unsigned int k = FO_PAGES - 1; k > 0; k--) {
			unsigned int j = (unsigned int)(rnd(&x) % (k + 1)), tmp = order[k];

			order[k] = order[j];
			order[j] = tmp;
		}
		for (unsigned int k = 0; k < FO_PAGES; k++) {
			unsigned int p = order[k];
			uint64_t lo = atomic_load(&f->acked[p]);
			uint64_t v = page_version((const uint8_t *)fl_region_addr(r) + p * BLK, p);
			uint64_t hi = atomic_load(&f->tried[p]);

			/* Acknowledged before the read began, attempted by its end. */
			if (v < lo || v > hi) {
				if (!atomic_fetch_add(&f->bad, 1))
					snprintf(f->first_bad, sizeof(f->first_bad),
						 "page %u read version %llu, acknowledged %llu, tried %llu",
						 p, (unsigned long long)v, (unsigned long long)lo,
						 (unsigned long long)hi);
			}
		}
		T_ASSERT_OK(fl_region_remove(r));
		atomic_fetch_add(&f->rounds[t->i], 1);
	}
	return NULL;
}

/* Write new versions of random pages with WAIT 1; note which were acknowledged. */
static void *fo_writer(void *arg)
{
	struct fo_thread *t = arg;
	struct fo *f = t->f;
	uint64_t x = 0x2545f4914f6cdd1dull * (t->i + 1);
	uint8_t page[BLK];

	while (!atomic_load(&f->stop)) {
		/* Each writer its own pages: versions of one page never race. */
		unsigned int p = (unsigned int)(rnd(&x) % (FO_PAGES / FO_WRITERS)) * FO_WRITERS + t->i;
		uint64_t v = atomic_load(&f->tried[p]) + 1;

		page_make(page, p, v);
		atomic_store(&f->tried[p], v);
		if (fl_store_write(f->wr, (uint64_t)p * BLK, page, BLK) == 0) {
			atomic_store(&f->acked[p], v);
			atomic_fetch_add(&f->wrote_ok, 1);
		} else {
			atomic_fetch_add(&f->wrote_failed, 1);
		}
	}
	return NULL;
}

static unsigned int fo_min_rounds(struct fo *f)
{
	unsigned int m = ~0u;

	for (int i = 0; i < FO_FAULTERS; i++)
		if (atomic_load(&f->rounds[i]) < m)
			m = atomic_load(&f->rounds[i]);
	return m;
}

/* Wait (bounded) until every faulter finished @n more rounds. */
static void fo_wait_rounds(struct fo *f, unsigned int n)
{
	unsigned int want = fo_min_rounds(f) + n;
	struct timespec ts = { 0, 10 * 1000000L };
	uint64_t deadline = (uint64_t)time(NULL) + (uint64_t)t_ms(120000) / 1000;

	while (fo_min_rounds(f) < want) {
		T_ASSERT((uint64_t)time(NULL) < deadline);
		nanosleep(&ts, NULL);
	}
}

/*
 * kill -9 the master of a chunk while threads fault pages through pager
 * regions and write new versions with WAIT 1. Its replica takes over; faults
 * continue on every shard; every page reads back a version at least as new
 * as the last one acknowledged, and nothing reads zeros (the pager would
 * have poisoned: SIGBUS kills the test).
 */
TEST(redis_cluster_failover)
{
	static struct fo f;
	struct fo_thread ft[FO_FAULTERS], wt[FO_WRITERS];
	unsigned long ftid[FO_FAULTERS], wtid[FO_WRITERS];
	struct redisd d;
	uint8_t *buf = malloc(FO_PAGES * BLK);
	uint64_t holes[FO_PAGES / 64];
	unsigned int slot = redisd_key_slot("{fo:0}");
	int victim, replica = -1;
	char out[4096];

	T_ASSERT(buf);
	memset(&f, 0, sizeof(f));
	t_redis_start(&d, 6, true);
	f.rd = t_redis_open(&d, 0, "fo", FO_PAGES * BLK, 0, 0);
	f.wr = t_redis_open(&d, 1, "fo", FO_PAGES * BLK, 0, 1);
	/* Short retries for writes: a shard whose new master has no replica fails WAIT. */
	for (unsigned int p = 0; p < FO_PAGES; p++) {
		page_make(buf + p * BLK, p, 1);
		atomic_store(&f.tried[p], 1);
		atomic_store(&f.acked[p], 1);
	}
	T_ASSERT_OK(fl_store_write(f.wr, 0, buf, FO_PAGES * BLK));
	fl_store_destroy(f.wr);
	{
		struct fl_store_redis_opts o = {
			.sz = sizeof(o), .size = FO_PAGES * BLK, .wait_replicas = 1,
			.wait_timeout_ms = (unsigned int)t_ms(500),
			.retry_ms = (unsigned int)t_ms(3000),
			.command_timeout_ms = (unsigned int)t_ms(5000),
		};
		char url[128];

		redisd_url(&d, 1, "fo", url, sizeof(url));
		T_ASSERT_OK(fl_store_redis_open(url, &o, &f.wr));
	}
	victim = redisd_slot_master(&d, 0, slot);
	T_ASSERT(victim >= 0);
	/* Its replica: the server whose INFO replication names the victim's port. */
	for (unsigned int i = 0; i < d.n; i++) {
		char want[32];

		snprintf(want, sizeof(want), "master_port:%d", d.port[victim]);
		T_ASSERT_OK(cmd(&d, i, out, sizeof(out), "INFO replication"));
		if (strstr(out, want))
			replica = (int)i;
	}
	T_ASSERT(replica >= 0);

	f.pager = t_pager_new(FL_PAGER_THREADS, 4, 0);
	T_ASSERT_OK(fl_pager_start(f.pager));
	for (unsigned int i = 0; i < FO_FAULTERS; i++) {
		ft[i] = (struct fo_thread){ &f, i };
		ftid[i] = t_thread_start(fo_faulter, &ft[i]);
	}
	for (unsigned int i = 0; i < FO_WRITERS; i++) {
		wt[i] = (struct fo_thread){ &f, i };
		wtid[i] = t_thread_start(fo_writer, &wt[i]);
	}
	fo_wait_rounds(&f, 2);
	T_ASSERT(atomic_load(&f.wrote_ok) > 0);

	redisd_kill(&d, (unsigned int)victim);
	/* The replica takes over: every slot served by a live master again. */
	if (redisd_cluster_wait_ok(&d, (unsigned int)t_ms(120000)))
		t_fail(__FILE__, __LINE__, "failover: %s", d.err);
	T_ASSERT_EQ(redisd_slot_master(&d, (unsigned int)replica, slot), replica);
	/* Faults continue, on the failed-over shard too. */
	fo_wait_rounds(&f, 3);
	atomic_store(&f.stop, true);
	for (unsigned int i = 0; i < FO_FAULTERS; i++)
		t_thread_join(ftid[i]);
	for (unsigned int i = 0; i < FO_WRITERS; i++)
		t_thread_join(wtid[i]);
	if (atomic_load(&f.bad))
		t_fail(__FILE__, __LINE__, "%u bad reads; the first: %s", atomic_load(&f.bad),
		       f.first_bad);

	/* Everything reads back: acknowledged versions or newer attempts, never zeros. */
	memset(buf, 0, FO_PAGES * BLK);
	T_ASSERT_OK(fl_store_read(f.rd, 0, buf, FO_PAGES * BLK, BLK, holes));
	for (unsigned int p = 0; p < FO_PAGES; p++) {
		uint64_t v = page_version(buf + p * BLK, p);

		T_ASSERT_EQ(holes[p / 64] >> (p % 64) & 1, 0);
		T_ASSERT(v >= atomic_load(&f.acked[p]));
		T_ASSERT(v <= atomic_load(&f.tried[p]));
	}
	fl_pager_destroy(f.pager);
	fl_store_destroy(f.rd);
	fl_store_destroy(f.wr);
	redisd_stop(&d);
	free(buf);
}

/* ----------------------------------------------------------- far memory */

#define FAR_PAGES 512u		/* 2 MiB: 8 chunks over the 3 masters */
#define FAR_WRITERS 4
#define FAR_ROUNDS 3

struct far {
	uint8_t *a;			/* the region */
	atomic_uint bad;
	char first_bad[160];
};

struct far_thread {
	struct far *f;
	unsigned int i;
};

static void far_bad(struct far *f, unsigned int p, uint64_t got, uint64_t want)
{
	if (!atomic_fetch_add(&f->bad, 1))
		snprintf(f->first_bad, sizeof(f->first_bad), "page %u read version %llu%s, "
			 "wrote %llu", p, (unsigned long long)got,
			 t_all(f->a + (size_t)p * BLK, BLK, 0) ? " (zeros)" : "",
			 (unsigned long long)want);
}

/*
 * Writer @i owns the pages p with p % FAR_WRITERS == i: each round it writes
 * a new version of all of them, then reads them all back (most were evicted
 * meanwhile: they come back from the cluster).
 */
static void *far_writer(void *arg)
{
	struct far_thread *t = arg;
	struct far *f = t->f;
	uint8_t page[BLK];

	for (uint64_t v = 1; v <= FAR_ROUNDS; v++) {
		for (unsigned int p = t->i; p < FAR_PAGES; p += FAR_WRITERS) {
			page_make(page, p, v);
			memcpy(f->a + (size_t)p * BLK, page, BLK);
		}
		for (unsigned int p = t->i; p < FAR_PAGES; p += FAR_WRITERS) {
			uint64_t got = page_version(f->a + (size_t)p * BLK, p);

			if (got != v)
				far_bad(f, p, got, v);
		}
	}
	return NULL;
}

/*
 * Far memory: a region four times its budget whose store is the Redis
 * Cluster. Writer threads write every page three times over; eviction
 * writes the dirty pages back to the cluster before dropping them, and each
 * page read again comes back from it as last written, never as zeros. After
 * a sync, a second store handle (through another node) reads every page.
 */
TEST(redis_cluster_far_memory)
{
	static struct far f;
	const size_t len = (size_t)FAR_PAGES * BLK;
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = len / 4 };
	struct fl_budget_stats bs = { .sz = sizeof(bs) };
	struct fl_region_stats rs = { .sz = sizeof(rs) };
	struct far_thread wt[FAR_WRITERS];
	unsigned long tid[FAR_WRITERS];
	struct redisd d;
	struct fl_budget *b;
	struct fl_store *s, *s2;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts ro;
	uint8_t *buf = malloc(len);
	uint64_t holes[FAR_PAGES / 64];
	int e;

	T_ASSERT(buf);
	memset(&f, 0, sizeof(f));
	t_redis_start(&d, 6, true);
	s = t_redis_open(&d, 0, "far", len, 0, 0);
	T_ASSERT_OK(fl_budget_create(&bo, &b));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	ro = t_region_opts(s, len);
	ro.budget = b;
	e = fl_region_add(p, &ro, &r);
	if (e == -EOPNOTSUPP) {
		fl_pager_destroy(p);
		fl_budget_destroy(b);
		fl_store_destroy(s);
		redisd_stop(&d);
		free(buf);
		T_SKIP("a budget cannot evict here (fl_region_add: EOPNOTSUPP)");
	}
	T_ASSERT_OK(e);
	T_ASSERT_OK(fl_pager_start(p));
	f.a = fl_region_addr(r);
	for (unsigned int i = 0; i < FAR_WRITERS; i++) {
		wt[i] = (struct far_thread){ &f, i };
		tid[i] = t_thread_start(far_writer, &wt[i]);
	}
	for (unsigned int i = 0; i < FAR_WRITERS; i++)
		t_thread_join(tid[i]);
	if (atomic_load(&f.bad))
		t_fail(__FILE__, __LINE__, "%u bad reads; the first: %s", atomic_load(&f.bad),
		       f.first_bad);
	for (unsigned int pg = 0; pg < FAR_PAGES; pg++)
		T_ASSERT_EQ(page_version(f.a + (size_t)pg * BLK, pg), FAR_ROUNDS);

	T_ASSERT_OK(fl_region_stats(r, &rs));
	T_ASSERT_OK(fl_budget_stats(b, &bs));
	if (!rs.evicted || !rs.written_back || !rs.refaults)
		t_fail(__FILE__, __LINE__, "evicted %llu, written back %llu, refaults %llu: the "
		       "budget did not evict through the cluster", (unsigned long long)rs.evicted,
		       (unsigned long long)rs.written_back, (unsigned long long)rs.refaults);
	T_ASSERT_EQ(rs.writeback_errors, 0);
	T_ASSERT_EQ(rs.errors, 0);
	/* A fault waits rather than take resident past bytes + batch. */
	T_ASSERT(bs.resident_max <= bs.bytes + bs.batch);

	/* What is still dirty, written back now; then the cluster holds every page. */
	T_ASSERT_OK(fl_region_sync(r, 0, len));
	s2 = t_redis_open(&d, 3, "far", len, FL_STORE_REDIS_READONLY, 0);
	memset(buf, 0, len);
	T_ASSERT_OK(fl_store_read(s2, 0, buf, len, BLK, holes));
	for (unsigned int pg = 0; pg < FAR_PAGES; pg++) {
		T_ASSERT_EQ(holes[pg / 64] >> (pg % 64) & 1, 0);
		T_ASSERT_EQ(page_version(buf + (size_t)pg * BLK, pg), FAR_ROUNDS);
	}
	fl_store_destroy(s2);
	fl_pager_destroy(p);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	redisd_stop(&d);
	free(buf);
}

/* ------------------------------------------------------ bench remote */

/*
 * faultline bench remote, tiny: every store's rows, the redis-benchmark
 * anchor and the targets, in one run; bad options exit 2.
 */
TEST(tool_bench_remote_tiny)
{
	static struct t_run r;
	char *argv[] = { "faultline", "bench", "remote", "--size", "1M", "--runs", "1",
			 "--threads", "1,2", "--windows", "none,1M", NULL };
	char *bad[] = { "faultline", "bench", "remote", "--windows", "2M", NULL };
	static const char *const rows[] = { "file        none   1 ", "file        1M     2 ",
					    "serve       none   1 ", "serve       1M     2 ",
					    "serve-tls   none   1 ", "serve-tls   1M     2 ",
					    "redis       none   1 ", "redis       1M     2 ",
					    "redis-hash  none   1 ", "cluster     1M     1 " };
	const char *req = getenv("FL_REQUIRE_REDIS");
	char path[256];
	bool redis = redisd_find("redis-server", path, sizeof(path)) &&
		     redisd_find("redis-cli", path, sizeof(path));

#ifndef FL_HAVE_HIREDIS
	redis = false;
#endif
	t_tool_path(path, sizeof(path));
	t_run_capture(&r, path, bad, NULL);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "--windows 2M") != NULL);
	t_run_capture(&r, path, argv, NULL);
	if (r.status != 0)
		t_fail(__FILE__, __LINE__, "bench remote failed (%d): %.300s", r.status, r.err);
	T_ASSERT(strstr(r.out, "targets:") != NULL);
	for (size_t i = 0; i < 6; i++)
		if (!strstr(r.out, rows[i]))
			t_fail(__FILE__, __LINE__, "no row '%s' in:\n%.2000s", rows[i], r.out);
	T_ASSERT(strstr(r.out, "loopback TCP round trip (1 byte, TCP_NODELAY): p50 ") != NULL);
	T_ASSERT(strstr(r.out, "serve p50 (none, 1 thread) ") != NULL);
	T_ASSERT(strstr(r.out, "serve: pages/s with 1M prefetch / without (1 thread): ") != NULL);
	if (!redis) {
		if (req && !strcmp(req, "1"))
			t_fail(__FILE__, __LINE__, "no redis-server or hiredis, and "
			       "FL_REQUIRE_REDIS=1");
		T_ASSERT(strstr(r.out, "redis       left out: ") != NULL);
		T_SKIP("the file rows only: redis-server, redis-cli or hiredis missing");
	}
	for (size_t i = 6; i < sizeof(rows) / sizeof(rows[0]); i++)
		if (!strstr(r.out, rows[i]))
			t_fail(__FILE__, __LINE__, "no row '%s' in:\n%.2000s", rows[i], r.out);
	T_ASSERT(strstr(r.out, "redis-benchmark GET 4 KiB, 1 client: p50 ") != NULL);
	T_ASSERT(strstr(r.out, "redis p50 (none, 1 thread) / redis-benchmark GET p50: ") != NULL);
	T_ASSERT(strstr(r.out, "cluster: pages/s with 1M prefetch / without (1 thread): ") != NULL);
}

/* The number after @label in @s, or -1. */
static long long number_after(const char *s, const char *label)
{
	const char *p = s ? strstr(s, label) : NULL;

	return p ? atoll(p + strlen(label)) : -1;
}

/* One run of the far-memory demo, checked: verified twice, pages went far and came back. */
static void far_demo_run(struct t_run *r, const char *tool, bool cluster)
{
	char *argv[] = { "faultline", "serve", "--demo", "--size", "8M", "--seconds", "0.2",
			 cluster ? "--cluster" : NULL, NULL };
	static const char region[] = "0 wrong values, checksums match (through the region)";
	static const char redis[] = "0 wrong values, checksums match (straight from Redis";
	const char *dir, *v;
	char path[128];
	long long keys, evicted, written, refaults, resident, data;

	t_run_capture(r, tool, argv, NULL);
	if (r->status != 0)
		t_fail(__FILE__, __LINE__, "serve --demo%s failed (%d): %.500s\n%.1500s",
		       cluster ? " --cluster" : "", r->status, r->err, r->out);
	T_ASSERT(strstr(r->out, "far memory: a key-value store of 8 MiB in a memory budget of "
			"1 MiB") != NULL);
	/* 8 MiB: 16383 slots after the header, half of them keys (even: 2 threads). */
	keys = number_after(r->out, "verify    ");
	T_ASSERT_EQ(keys, 8190);
	v = strstr(r->out, "verify    ");
	T_ASSERT(strstr(v, region) != NULL);
	T_ASSERT(strstr(v, redis) != NULL);
	T_ASSERT(strstr(r->out, " wrong GETs") && strstr(r->out, ", 0 wrong GETs"));
	/* More data than budget; eviction wrote back to Redis and pages came back from it. */
	data = number_after(r->out, "the program wrote ");
	T_ASSERT(data >= 4);
	resident = number_after(r->out, "resident at most ");
	T_ASSERT(resident >= 0 && resident <= 1);
	evicted = number_after(r->out, "evicted   ");
	written = number_after(r->out, "written back to Redis first: ");
	refaults = number_after(r->out, "faulted in again: ");
	if (evicted < 1024 || written < 1 || refaults < 1)
		t_fail(__FILE__, __LINE__, "evicted %lld, written back %lld, refaults %lld:\n%s",
		       evicted, written, refaults, r->out);
	T_ASSERT(strstr(r->out, "serve --demo: verified: ") != NULL);
	/* The servers' directory is gone. */
	dir = strstr(r->out, ", in /");
	T_ASSERT(dir != NULL);
	T_ASSERT(sscanf(dir + 5, "%127s", path) == 1);
	T_ASSERT(access(path, F_OK) != 0);
}

/*
 * faultline serve --demo: far memory, with one server and with a cluster:
 * each run verified, pages evicted and written back, its servers removed;
 * where it cannot run, it says what to install (exit 3); bad options exit 2.
 */
TEST(tool_serve_demo)
{
	static struct t_run r;
	char *bad[] = { "faultline", "serve", "--demo", "--size", "8M", "--budget", "5M", NULL };
	char *bad2[] = { "faultline", "serve", "--demo", "--seconds", "x", NULL };
	const char *req = getenv("FL_REQUIRE_REDIS");
	char tool[256], path[256];
	bool redis = redisd_find("redis-server", path, sizeof(path)) &&
		     redisd_find("redis-cli", path, sizeof(path));

#ifndef FL_HAVE_HIREDIS
	redis = false;
#endif
	t_tool_path(tool, sizeof(tool));
	t_run_capture(&r, tool, bad, NULL);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "at most half of --size") != NULL);
	t_run_capture(&r, tool, bad2, NULL);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "--seconds x") != NULL);
	if (!redis) {
		char *argv[] = { "faultline", "serve", "--demo", "--size", "8M", NULL };

		if (req && !strcmp(req, "1"))
			t_fail(__FILE__, __LINE__, "no redis-server, redis-cli or hiredis, and "
			       "FL_REQUIRE_REDIS=1");
		t_run_capture(&r, tool, argv, NULL);
		T_ASSERT_EQ(r.status, 3);
		T_ASSERT(strstr(r.err, "apt-get install ") != NULL);
		T_SKIP("redis-server, redis-cli or hiredis missing: the demo says what to install");
	}
	far_demo_run(&r, tool, false);
	far_demo_run(&r, tool, true);
}
