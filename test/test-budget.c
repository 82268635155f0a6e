/* SPDX-License-Identifier: MIT */
/* Memory budgets: eviction under a cap, pages back from the store, policies, volatile regions. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "tests.h"

#define SEED 0xb0d9e7u

/* ---------------------------------------------------------- helpers */

/* A pager in @mode, started; LOOP mode gets a thread dispatching for it. */
static struct fl_pager *pager_up(enum fl_pager_mode mode, struct t_loop *d)
{
	struct fl_pager *p = t_pager_new(mode, 2, 0);

	T_ASSERT_OK(fl_pager_start(p));
	if (mode == FL_PAGER_LOOP)
		t_loop_start(d, p);
	return p;
}

static void pager_down(struct fl_pager *p, enum fl_pager_mode mode, struct t_loop *d)
{
	if (mode == FL_PAGER_LOOP)
		t_loop_stop(d);
	fl_pager_destroy(p);
}

static struct fl_budget *budget_new(uint64_t bytes, enum fl_evict_policy pol)
{
	struct fl_budget_opts o = { .sz = sizeof(o), .bytes = bytes, .policy = pol };
	struct fl_budget *b;

	T_ASSERT_OK(fl_budget_create(&o, &b));
	return b;
}

static struct fl_budget_stats bstats(struct fl_budget *b)
{
	struct fl_budget_stats st = { .sz = sizeof(st) };

	T_ASSERT_OK(fl_budget_stats(b, &st));
	return st;
}

static struct fl_region_stats rstats(struct fl_region *r)
{
	struct fl_region_stats st = { .sz = sizeof(st) };

	T_ASSERT_OK(fl_region_stats(r, &st));
	return st;
}

/*
 * The budget's and its regions' counters at one moment: eviction may still
 * run when the program stops faulting (down to the low watermark), and a
 * handler thread may still settle the page whose install woke the last
 * access (refaults are counted then), so read
 * the regions, the budget (between two steps), the regions again, until
 * no step ran in between.
 */
static struct fl_budget_stats consistent(struct fl_budget *b, struct fl_region **r, size_t n,
					 struct fl_region_stats *rs)
{
	struct fl_budget_stats bs;

	for (;;) {
		bool same = true;

		for (size_t i = 0; i < n; i++)
			rs[i] = rstats(r[i]);
		bs = bstats(b);
		for (size_t i = 0; i < n; i++) {
			struct fl_region_stats again = rstats(r[i]);

			/* A fault's install may still be settling its page (refaults). */
			same &= again.evicted == rs[i].evicted && again.resident == rs[i].resident &&
				again.refaults == rs[i].refaults;
		}
		if (same)
			return bs;
		sched_yield();
	}
}

/* Read every page of the region (its store's bytes at page first+i), checking each. */
static void read_check(struct fl_region *r, size_t first)
{
	const uint8_t *a = fl_region_addr(r);
	size_t ps = t_page_size(), n = fl_region_len(r) / ps;

	for (size_t i = 0; i < n; i++)
		if (fl_pattern_check(a + i * ps, (first + i) * ps, ps, SEED))
			t_fail(__FILE__, __LINE__, "page %zu does not hold the store's data%s", i,
			       t_all(a + i * ps, ps, 0) ? " (zeros)" : "");
}

/* A file holding the pattern, opened as a read-only file store. */
static struct fl_store *file_store(size_t len)
{
	char path[] = "/tmp/fl-budget-XXXXXX";
	struct fl_store_file_opts fo = { .sz = sizeof(fo) };
	struct fl_store *s;
	uint8_t *buf = malloc(len);
	int fd = mkstemp(path);

	T_ASSERT(buf);
	T_ASSERT_SYS(fd);
	fl_pattern_fill(buf, 0, len, SEED);
	T_ASSERT_EQ(write(fd, buf, len), (ssize_t)len);
	close(fd);
	free(buf);
	T_ASSERT_OK(fl_store_file_open(path, &fo, &s));
	unlink(path);
	return s;
}

/*
 * A region of @len bytes under budget @b over a writable mem store of
 * @membuf, which gets the pattern first; @vol as fl_region_opts.vol says.
 */
static struct fl_region *mem_region(struct fl_pager *p, struct fl_budget *b, uint8_t *membuf,
				    size_t len, enum fl_volatile vol, struct fl_store **s)
{
	struct fl_region_opts o;
	struct fl_region *r;

	fl_pattern_fill(membuf, 0, len, SEED);
	T_ASSERT_OK(fl_store_mem_create(membuf, len, FL_STORE_MEM_NO_MOVE, s));
	o = t_region_opts(*s, len);
	o.budget = b;
	o.vol = vol;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	return r;
}

/* ------------------------------------------------------------- options */

TEST(budget_create_options)
{
	struct fl_budget_opts o = { .sz = sizeof(o), .bytes = 1 << 20 };
	struct fl_budget_stats st;
	struct fl_budget *b;

	T_ASSERT_ERR(fl_budget_create(NULL, &b), EINVAL);
	o.bytes = 4096;
	T_ASSERT_ERR(fl_budget_create(&o, &b), EINVAL);		/* less than two pages */
	o.bytes = 1 << 20;
	o.policy = 7;
	T_ASSERT_ERR(fl_budget_create(&o, &b), EINVAL);
	o.policy = FL_EVICT_2Q;
	o.batch = 1000;
	T_ASSERT_ERR(fl_budget_create(&o, &b), EINVAL);		/* not whole pages */
	o.batch = 0;
	o.high = 1 << 19;
	o.low = 1 << 19;
	T_ASSERT_ERR(fl_budget_create(&o, &b), EINVAL);		/* low must be below high */
	o.high = 2 << 20;
	o.low = 0;
	T_ASSERT_ERR(fl_budget_create(&o, &b), EINVAL);		/* high above the budget */
	o.high = 0;
	T_ASSERT_OK(fl_budget_create(&o, &b));
	st = bstats(b);
	/* Defaults: batch bytes/16, high = bytes - batch, low = high - batch. */
	T_ASSERT_EQ(st.batch, 64u << 10);
	T_ASSERT_EQ(st.high, (1u << 20) - (64u << 10));
	T_ASSERT_EQ(st.low, (1u << 20) - (128u << 10));
	T_ASSERT_EQ(st.resident, 0);
	T_ASSERT_EQ(st.regions, 0);
	fl_budget_destroy(b);
	fl_budget_destroy(NULL);
}

TEST(budget_region_options)
{
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct fl_budget *b = budget_new(1 << 20, FL_EVICT_FIFO);
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region *r;

	T_ASSERT_OK(fl_store_pattern_create(1 << 20, SEED, &s));
	o = t_region_opts(s, 1 << 20);
	o.vol = FL_VOLATILE_ZERO;			/* volatile without a budget */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.budget = b;
	o.vol = 9;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.vol = FL_VOLATILE_NONE;
	o.ws_replay = "/nonexistent";			/* a replay cannot run within a budget */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.ws_replay = NULL;
	if (t_have(FL_FEAT_MOVE)) {
		T_ASSERT_OK(fl_region_add(p, &o, &r));
		T_ASSERT_EQ(bstats(b).regions, 1);
		/* Advice: whole pages inside the region, known advice. */
		T_ASSERT_ERR(fl_region_advise(r, 1, 4096, FL_ADVISE_WILLNEED), EINVAL);
		T_ASSERT_ERR(fl_region_advise(r, 0, 2 << 20, FL_ADVISE_WILLNEED), EINVAL);
		T_ASSERT_ERR(fl_region_advise(r, 0, 4096, 42), EINVAL);
		/* A budget with a region is not destroyed (logged); removing it first is fine. */
		T_ASSERT_OK(fl_region_remove(r));
		T_ASSERT_EQ(bstats(b).regions, 0);
	} else {
		/* Private anonymous memory in THREADS mode needs UFFDIO_MOVE to drop pages. */
		T_ASSERT_ERR(fl_region_add(p, &o, &r), EOPNOTSUPP);
	}
	fl_pager_destroy(p);
	fl_budget_destroy(b);
	fl_store_destroy(s);
}

/* ------------------------------------------------------------ FIFO, clean */

enum store_kind { ST_PATTERN, ST_FILE, ST_MEM };

/*
 * A region of 256 pages under a budget of 64 read three times over in
 * @mode: every read sees the store's data (after eviction too, never
 * zeros), the budget never holds more than bytes + batch, pages were
 * evicted and came back.
 */
static void fifo_clean(enum fl_pager_mode mode, enum fl_mem_type mem, enum store_kind sk)
{
	size_t ps = t_page_size(), npages = 256, len = npages * ps;
	struct fl_budget *b = budget_new(64 * ps, FL_EVICT_FIFO);
	struct fl_budget_stats bs;
	struct fl_region_stats rs;
	struct fl_region_opts o;
	struct fl_region *r;
	struct fl_store *s;
	struct t_loop d;
	struct fl_pager *p = pager_up(mode, &d);
	uint8_t *membuf = NULL;

	if (sk == ST_FILE) {
		s = file_store(len);
	} else if (sk == ST_MEM) {
		membuf = t_map_anon(len);
		fl_pattern_fill(membuf, 0, len, SEED);
		T_ASSERT_OK(fl_store_mem_create(membuf, len, FL_STORE_MEM_READONLY, &s));
	} else {
		T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	}
	o = t_region_opts(s, len);
	o.mem = mem;
	o.budget = b;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	for (int round = 0; round < 3; round++)
		read_check(r, 0);
	bs = consistent(b, &r, 1, &rs);
	T_ASSERT(bs.resident_max <= bs.bytes + bs.batch);
	T_ASSERT(bs.resident <= bs.bytes + bs.batch);
	T_ASSERT(bs.evicted >= 2 * (npages - 64) * ps);
	T_ASSERT_EQ(rs.evicted * ps, bs.evicted);
	T_ASSERT_EQ(rs.resident * ps, bs.resident);
	T_ASSERT(rs.refaults >= npages);		/* rounds 2 and 3 refault (nearly) every page */
	/*
	 * Refaults are counted as a page settles, after its install woke the
	 * access: the last one may be counted in one place and not yet in the
	 * other.
	 */
	T_ASSERT(rs.refaults * ps <= bs.refaults + ps && bs.refaults <= rs.refaults * ps + ps);
	T_ASSERT_EQ(rs.pages_zero, 0);			/* nothing came back as zeros */
	T_ASSERT_OK(fl_region_remove(r));
	T_ASSERT_EQ(bstats(b).resident, 0);
	pager_down(p, mode, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	if (membuf)
		munmap(membuf, len);
}

TEST(budget_fifo_clean_threads)
{
	fifo_clean(FL_PAGER_THREADS, FL_MEM_ANON, ST_PATTERN);
	fifo_clean(FL_PAGER_THREADS, FL_MEM_ANON, ST_FILE);
	fifo_clean(FL_PAGER_THREADS, FL_MEM_ANON, ST_MEM);
}

TEST(budget_fifo_clean_threads_shmem)
{
	fifo_clean(FL_PAGER_THREADS, FL_MEM_SHMEM, ST_FILE);
	fifo_clean(FL_PAGER_THREADS, FL_MEM_SHMEM, ST_MEM);
}

TEST(budget_fifo_clean_sigbus)
{
	fifo_clean(FL_PAGER_SIGBUS, FL_MEM_ANON, ST_PATTERN);
	fifo_clean(FL_PAGER_SIGBUS, FL_MEM_ANON, ST_FILE);
	if (t_have(FL_FEAT_MISSING_SHMEM))
		fifo_clean(FL_PAGER_SIGBUS, FL_MEM_SHMEM, ST_MEM);
}

TEST(budget_fifo_clean_loop)
{
	fifo_clean(FL_PAGER_LOOP, FL_MEM_ANON, ST_FILE);
	if (t_have(FL_FEAT_MISSING_SHMEM))
		fifo_clean(FL_PAGER_LOOP, FL_MEM_SHMEM, ST_PATTERN);
}

/* ------------------------------------------------------ shared budget */

struct toucher {
	struct fl_region *r;
	int rounds;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	for (int i = 0; i < t->rounds; i++)
		read_check(t->r, 0);
	return NULL;
}

/*
 * Two regions of two pagers (THREADS, and SIGBUS where the kernel has
 * it), read at once by two threads, share one budget: it holds for both
 * together, both give pages up, and the counts add up.
 */
TEST(budget_shared_two_pagers)
{
	size_t ps = t_page_size(), npages = 192, len = npages * ps;
	struct fl_budget *b = budget_new(96 * ps, FL_EVICT_FIFO);
	enum fl_pager_mode m2 = t_have(FL_FEAT_SIGBUS) ? FL_PAGER_SIGBUS : FL_PAGER_LOOP;
	struct t_loop d1, d2;
	struct fl_pager *p1 = pager_up(FL_PAGER_THREADS, &d1), *p2 = pager_up(m2, &d2);
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region *r1, *r2;
	struct toucher t1, t2;
	struct fl_budget_stats bs;
	struct fl_region_stats s1, s2;
	unsigned long th;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.budget = b;
	T_ASSERT_OK(fl_region_add(p1, &o, &r1));
	o.mem = FL_MEM_SHMEM;
	if (!t_have(FL_FEAT_MISSING_SHMEM))
		o.mem = FL_MEM_ANON;
	T_ASSERT_OK(fl_region_add(p2, &o, &r2));
	T_ASSERT_EQ(bstats(b).regions, 2);
	t1 = (struct toucher){ r1, 3 };
	t2 = (struct toucher){ r2, 3 };
	th = t_thread_start(touch_main, &t1);
	touch_main(&t2);
	t_thread_join(th);
	{
		struct fl_region *rr[2] = { r1, r2 };
		struct fl_region_stats ss[2];

		bs = consistent(b, rr, 2, ss);
		s1 = ss[0];
		s2 = ss[1];
	}
	T_ASSERT(bs.resident_max <= bs.bytes + bs.batch);
	T_ASSERT(s1.evicted > 0 && s2.evicted > 0);
	T_ASSERT_EQ((s1.evicted + s2.evicted) * ps, bs.evicted);
	T_ASSERT_EQ((s1.resident + s2.resident) * ps, bs.resident);
	T_ASSERT_OK(fl_region_remove(r1));
	bs = consistent(b, &r2, 1, &s2);
	T_ASSERT_EQ(bs.resident, s2.resident * ps);
	T_ASSERT_OK(fl_region_remove(r2));
	T_ASSERT_EQ(bstats(b).resident, 0);
	pager_down(p1, FL_PAGER_THREADS, &d1);
	pager_down(p2, m2, &d2);
	fl_budget_destroy(b);
	fl_store_destroy(s);
}

struct rnd {
	struct fl_region *r;
	uint64_t seed;
	size_t reads;
};

static void *random_reads(void *arg)
{
	struct rnd *x = arg;
	const uint8_t *a = fl_region_addr(x->r);
	size_t ps = t_page_size(), n = fl_region_len(x->r) / ps;

	for (size_t i = 0; i < x->reads; i++) {
		size_t pg;

		x->seed ^= x->seed << 13;
		x->seed ^= x->seed >> 7;
		x->seed ^= x->seed << 17;
		pg = x->seed % n;
		if (fl_pattern_check(a + pg * ps, pg * ps, ps, SEED))
			t_fail(__FILE__, __LINE__, "page %zu does not hold the store's data", pg);
	}
	return NULL;
}

/*
 * Four threads read at random with adaptive prefetch (runs of up to 64
 * pages) while the budget is 32 pages with batch 4: every admission
 * reserves before its store read, so the budget still never holds more
 * than bytes + batch, whatever runs are in flight at once.
 */
static void bound_under_load(enum fl_pager_mode mode)
{
	size_t ps = t_page_size(), npages = 512, len = npages * ps;
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = 32 * ps, .batch = 4 * ps,
				     .policy = FL_EVICT_2Q };
	struct fl_budget *b;
	struct t_loop d;
	struct fl_pager *p = pager_up(mode, &d);
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region *r;
	struct rnd x[4];
	unsigned long th[4];
	struct fl_budget_stats bs;

	T_ASSERT_OK(fl_budget_create(&bo, &b));
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.budget = b;
	o.prefetch = FL_PREFETCH_ADAPTIVE;
	o.prefetch_min = 4 * ps;
	o.prefetch_max = 64 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	for (int i = 0; i < 4; i++) {
		x[i] = (struct rnd){ r, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1), 2000 };
		th[i] = t_thread_start(random_reads, &x[i]);
	}
	for (int i = 0; i < 4; i++)
		t_thread_join(th[i]);
	bs = bstats(b);
	T_ASSERT(bs.resident_max <= bs.bytes + bs.batch);
	T_ASSERT(bs.evicted > 0);
	T_ASSERT(bs.waits > 0);			/* the faults did have to wait for room */
	T_ASSERT_OK(fl_region_remove(r));
	T_ASSERT_EQ(bstats(b).resident, 0);
	pager_down(p, mode, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
}

TEST(budget_bound_under_load)
{
	if (t_have(FL_FEAT_MOVE))
		bound_under_load(FL_PAGER_THREADS);
	bound_under_load(FL_PAGER_LOOP);
	if (t_have(FL_FEAT_SIGBUS))
		bound_under_load(FL_PAGER_SIGBUS);
}

/*
 * A region whose store can be written: what the program wrote is written
 * back before its page is dropped, and comes back from the store.
 */
TEST(budget_writable_store_written_back)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fl_budget *b = budget_new(16 * ps, FL_EVICT_FIFO);
	struct t_loop d;
	struct fl_pager *p = pager_up(FL_PAGER_SIGBUS, &d);
	uint8_t *membuf = t_map_anon(len), *a;
	struct fl_store *s;
	struct fl_region *r = mem_region(p, b, membuf, len, FL_VOLATILE_NONE, &s);

	a = fl_region_addr(r);
	for (size_t i = 0; i < npages; i++)
		a[i * ps] = (uint8_t)(i + 1);		/* written: only this memory has it */
	/* Read back twice: the second pass finds evicted pages in the store. */
	for (size_t i = 0; i < npages; i++)
		T_ASSERT_EQ(a[i * ps], (uint8_t)(i + 1));
	for (size_t i = 0; i < npages; i++) {
		T_ASSERT_EQ(a[i * ps], (uint8_t)(i + 1));
		T_ASSERT_EQ(fl_pattern_check(a + i * ps + 1, i * ps + 1, ps - 1, SEED), 0);
	}
	T_ASSERT(rstats(r).evicted > 0);
	T_ASSERT(rstats(r).written_back > 0);
	T_ASSERT(rstats(r).refaults > 0);
	T_ASSERT(bstats(b).resident <= 16 * ps + bstats(b).batch);
	/* The evicted pages' writes are in the store; the resident ones' once synced. */
	T_ASSERT_OK(fl_region_sync(r, 0, len));
	for (size_t i = 0; i < npages; i++)
		T_ASSERT_EQ(membuf[i * ps], (uint8_t)(i + 1));
	T_ASSERT_OK(fl_region_remove(r));
	pager_down(p, FL_PAGER_SIGBUS, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	munmap(membuf, len);
}

/* ----------------------------------------------------------------- 2Q */

/*
 * A hot set of 16 pages read between runs of 32 pages never read before,
 * under a budget of 64 pages: FIFO lets each run push the hot pages out
 * (they fault back again and again); 2Q protects them once they came back
 * after their first eviction. Returns the hot pages' refaults.
 */
static uint64_t hot_set_refaults(enum fl_evict_policy pol)
{
	size_t ps = t_page_size(), hot = 16, cold = 2048, rounds = cold / 32;
	struct fl_budget *b = budget_new(64 * ps, pol);
	struct t_loop d;
	struct fl_pager *p = pager_up(FL_PAGER_SIGBUS, &d);
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region *rh, *rc;
	const volatile uint8_t *h, *c;
	uint64_t refaults;

	T_ASSERT_OK(fl_store_pattern_create((hot + cold) * ps, SEED, &s));
	o = t_region_opts(s, hot * ps);
	o.budget = b;
	T_ASSERT_OK(fl_region_add(p, &o, &rh));
	o.len = cold * ps;
	o.store_off = hot * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &rc));
	h = fl_region_addr(rh);
	c = fl_region_addr(rc);
	for (size_t k = 0; k < rounds; k++) {
		for (size_t i = 0; i < hot; i++)
			T_ASSERT_EQ(*(const volatile uint64_t *)(h + i * ps),
				    fl_pattern_word(SEED, i * ps));
		for (size_t i = k * 32; i < (k + 1) * 32; i++)
			T_ASSERT_EQ(*(const volatile uint64_t *)(c + i * ps),
				    fl_pattern_word(SEED, (hot + i) * ps));
	}
	refaults = rstats(rh).refaults;
	T_ASSERT(bstats(b).resident_max <= 64 * ps + bstats(b).batch);
	T_ASSERT_OK(fl_region_remove(rh));
	T_ASSERT_OK(fl_region_remove(rc));
	pager_down(p, FL_PAGER_SIGBUS, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	return refaults;
}

TEST(budget_2q_keeps_hot_set)
{
	uint64_t fifo = hot_set_refaults(FL_EVICT_FIFO), twoq = hot_set_refaults(FL_EVICT_2Q);

	printf("# hot-set refaults over 64 rounds: FIFO %llu, 2Q %llu\n", (unsigned long long)fifo,
	       (unsigned long long)twoq);
	/* FIFO: the 16 hot pages go about every other round. 2Q: once, maybe twice. */
	T_ASSERT(fifo >= 16 * 16);
	T_ASSERT(twoq <= 2 * 16);
}

/* ----------------------------------------------------------- volatile */

/*
 * A volatile region over a writable store: pages the program wrote are
 * dropped by DONTNEED advice without write-back; what they read then is
 * what @vol says. Each mode of the pager.
 */
static void volatile_outcome(enum fl_pager_mode mode, enum fl_volatile vol)
{
	size_t ps = t_page_size(), npages = 32, len = npages * ps;
	struct fl_budget *b = budget_new(64 * ps, FL_EVICT_FIFO);
	struct t_loop d;
	struct fl_pager *p = pager_up(mode, &d);
	uint8_t *membuf = t_map_anon(len), *a;
	struct fl_store *s;
	struct fl_region *r = mem_region(p, b, membuf, len, vol, &s);

	a = fl_region_addr(r);
	/* Counted resident by the time the access returns (the install wakes it). */
	for (size_t i = 0; i < npages; i++) {
		T_ASSERT_EQ(fl_pattern_check(a + i * ps, i * ps, ps, SEED), 0);
		T_ASSERT_EQ(rstats(r).resident, i + 1);
	}
	t_fill(a, 8 * ps, 0xa5);			/* pages 0-7 written */
	T_ASSERT_OK(fl_region_advise(r, 0, 16 * ps, FL_ADVISE_DONTNEED));
	T_ASSERT_EQ(rstats(r).evicted, 16);
	T_ASSERT_EQ(rstats(r).resident, npages - 16);
	/* The rest stays as it was. */
	T_ASSERT_EQ(fl_pattern_check(a + 16 * ps, 16 * ps, 16 * ps, SEED), 0);
	switch (vol) {
	case FL_VOLATILE_STORE:
		T_ASSERT_EQ(fl_pattern_check(a, 0, 16 * ps, SEED), 0);
		break;
	case FL_VOLATILE_ZERO:
		T_ASSERT(t_all(a, 16 * ps, 0));
		break;
	default: {
		struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };

		T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
		for (size_t i = 0; i < 16; i++)
			T_ASSERT(t_read_sigbus(a + i * ps + 7));
		/* Regenerate pages 0-3: zero pages to write into; the rest still SIGBUS. */
		T_ASSERT_OK(fl_region_advise(r, 0, 4 * ps, FL_ADVISE_WILLNEED));
		T_ASSERT(t_all(a, 4 * ps, 0));
		t_fill(a, 4 * ps, 0x3c);
		T_ASSERT(t_all(a, 4 * ps, 0x3c));
		T_ASSERT(t_read_sigbus(a + 4 * ps));
		break;
	}
	}
	/* The store never got the program's bytes. */
	T_ASSERT_EQ(fl_pattern_check(membuf, 0, len, SEED), 0);
	T_ASSERT_OK(fl_region_remove(r));
	pager_down(p, mode, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	munmap(membuf, len);
}

TEST(budget_volatile_store)
{
	volatile_outcome(FL_PAGER_THREADS, FL_VOLATILE_STORE);
	volatile_outcome(FL_PAGER_LOOP, FL_VOLATILE_STORE);
	if (t_have(FL_FEAT_SIGBUS))
		volatile_outcome(FL_PAGER_SIGBUS, FL_VOLATILE_STORE);
}

TEST(budget_volatile_zero)
{
	volatile_outcome(FL_PAGER_THREADS, FL_VOLATILE_ZERO);
	volatile_outcome(FL_PAGER_LOOP, FL_VOLATILE_ZERO);
	if (t_have(FL_FEAT_SIGBUS))
		volatile_outcome(FL_PAGER_SIGBUS, FL_VOLATILE_ZERO);
}

TEST(budget_volatile_sigbus)
{
	volatile_outcome(FL_PAGER_THREADS, FL_VOLATILE_SIGBUS);
	volatile_outcome(FL_PAGER_LOOP, FL_VOLATILE_SIGBUS);
}

/* --------------------------------------------------- batch over 4 MiB */

/*
 * A batch of 2048 pages (8 MiB) makes runs longer than 1024 pages, the
 * bitmap eviction settles a run with: a plain region evicted and read
 * again holds the store's data (never poisoned, never zeros), and a
 * FL_VOLATILE_SIGBUS region dropped in one piece by DONTNEED advice raises
 * SIGBUS on every page. Before the runs were capped, settling read past
 * the bitmap (and wrote past it for the volatile region): SANITIZE=1
 * stopped it.
 */
TEST(budget_batch_over_4mib)
{
	size_t ps = t_page_size(), npages = 8192, len = npages * ps;
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = 4096 * ps, .batch = 2048 * ps,
				     .policy = FL_EVICT_FIFO };
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl_region_stats rs;
	struct fl_region_opts o;
	struct fl_budget *b;
	struct fl_region *r;
	struct fl_store *s;
	struct fl_pager *p;
	struct t_loop d;
	uint8_t *a;

	/* A plain region of 8192 pages under a budget of 4096, read twice. */
	T_ASSERT_OK(fl_budget_create(&bo, &b));
	T_ASSERT_EQ(bstats(b).batch, 2048 * ps);
	p = pager_up(FL_PAGER_SIGBUS, &d);
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.budget = b;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	read_check(r, 0);
	read_check(r, 0);
	rs = rstats(r);
	T_ASSERT(rs.evicted >= npages);
	T_ASSERT(rs.refaults >= npages / 2);
	T_ASSERT_EQ(rs.pages_zero, 0);
	T_ASSERT_OK(fl_region_remove(r));
	pager_down(p, FL_PAGER_SIGBUS, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);

	/* A volatile region of 4096 pages, all resident, advised away at once. */
	npages = 4096;
	len = npages * ps;
	bo.bytes = 8192 * ps;
	T_ASSERT_OK(fl_budget_create(&bo, &b));
	T_ASSERT_EQ(bstats(b).high, 6144 * ps);
	p = pager_up(FL_PAGER_THREADS, &d);
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.budget = b;
	o.vol = FL_VOLATILE_SIGBUS;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	a = fl_region_addr(r);
	read_check(r, 0);
	T_ASSERT_EQ(rstats(r).resident, npages);
	T_ASSERT_OK(fl_region_advise(r, 0, len, FL_ADVISE_DONTNEED));
	/*
	 * Advice skips a page whose install a handler thread is still
	 * settling: it stays, and reads the store's data. Every other page
	 * went, in runs of up to 1024 pages, and raises SIGBUS.
	 */
	rs = rstats(r);
	T_ASSERT(rs.evicted >= npages - 64);
	T_ASSERT_EQ(rs.evicted + rs.resident, npages);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	{
		size_t bus = 0;

		for (size_t i = 0; i < npages; i++) {
			if (t_read_sigbus(a + i * ps + 7))
				bus++;
			else if (fl_pattern_check(a + i * ps, i * ps, ps, SEED))
				t_fail(__FILE__, __LINE__, "page %zu of the volatile region: neither "
				       "SIGBUS nor the store's data", i);
		}
		T_ASSERT_EQ(bus, rs.evicted);
	}
	T_ASSERT_OK(fl_region_remove(r));
	pager_down(p, FL_PAGER_THREADS, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
}

/* --------------------------------------------- discards racing eviction */

/*
 * A writable store whose writes stop at a gate: eviction's write-back of a
 * dirty page blocks there, between its claim of the page and its drop, so
 * the test can discard the page exactly then.
 */
struct gated {
	pthread_mutex_t lock;		/* buf: the store's reads and writes, the test's looks */
	uint8_t *buf;
	int entered;			/* eventfd: a write reached the closed gate */
	int open;			/* eventfd: let it through */
	_Atomic bool opened;		/* the gate stays open */
};

static int gated_read(void *ud, uint64_t off, void *buf, size_t len, size_t ps, uint64_t *holes)
{
	struct gated *g = ud;

	(void)ps;
	(void)holes;
	pthread_mutex_lock(&g->lock);
	memcpy(buf, g->buf + off, len);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static int gated_write(void *ud, uint64_t off, const void *buf, size_t len)
{
	struct gated *g = ud;
	uint64_t one = 1;

	if (!atomic_load(&g->opened)) {
		T_ASSERT_SYS(write(g->entered, &one, sizeof(one)));
		T_ASSERT_EQ(read(g->open, &one, sizeof(one)), (ssize_t)sizeof(one));
	}
	pthread_mutex_lock(&g->lock);
	memcpy(g->buf + off, buf, len);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

/* Wait (bounded) until eviction's write-back is held at the gate. */
static void gated_wait(struct gated *g)
{
	struct pollfd pf = { g->entered, POLLIN, 0 };
	uint64_t v;

	T_ASSERT_EQ(poll(&pf, 1, 120 * 1000), 1);
	T_ASSERT_EQ(read(g->entered, &v, sizeof(v)), (ssize_t)sizeof(v));
}

static void gated_open(struct gated *g)
{
	uint64_t one = 1;

	atomic_store(&g->opened, true);
	T_ASSERT_SYS(write(g->open, &one, sizeof(one)));
}

/*
 * A region of 64 pages (@mem, THREADS mode, @vol, tracking dirty pages)
 * over a gated store, in a budget of 16 pages (batch 1, high 15): page 0
 * is written, pages 1-15 read, and eviction takes page 0 first (FIFO) and
 * holds it at the gate. Then the program's @advice on page 0 lands, its
 * REMOVE event is applied (a second discard, of page 63, is read only
 * after the first was applied: one reader at a time), and the gate opens.
 * Returns the region's address; page 0 has 0x5a in every byte.
 */
static uint8_t *discard_during_eviction(struct fl_pager *p, struct gated *g, enum fl_mem_type mem,
					enum fl_volatile vol, int advice, struct fl_budget **ret_b,
					struct fl_store **ret_s, struct fl_region **ret_r)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = gated_read, .write = gated_write };
	struct fl_budget *b = budget_new(16 * ps, FL_EVICT_FIFO);
	struct fl_region_opts o;
	struct fl_region *r;
	struct fl_store *s;
	uint8_t *a;

	pthread_mutex_init(&g->lock, NULL);
	g->buf = t_map_anon(len);
	fl_pattern_fill(g->buf, 0, len, SEED);
	g->entered = eventfd(0, EFD_CLOEXEC);
	g->open = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(g->entered);
	T_ASSERT_SYS(g->open);
	T_ASSERT_OK(fl_store_create(&ops, g, 0, len, &s));
	o = t_region_opts(s, len);
	o.mem = mem;
	o.budget = b;
	o.vol = vol;
	o.flags = FL_REGION_TRACK_DIRTY;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_EQ(bstats(b).high, 15 * ps);
	a = fl_region_addr(r);
	memset(a, 0x5a, ps);				/* page 0: dirty */
	for (size_t i = 1; i < 16; i++)
		T_ASSERT_EQ(fl_pattern_check(a + i * ps, i * ps, ps, SEED), 0);
	gated_wait(g);					/* eviction holds page 0 */
	T_ASSERT_SYS(madvise(a, ps, advice));
	T_ASSERT_SYS(madvise(a + 63 * ps, ps, MADV_DONTNEED));
	gated_open(g);
	*ret_b = b;
	*ret_s = s;
	*ret_r = r;
	return a;
}

static void discard_during_eviction_done(struct fl_pager *p, struct gated *g, struct fl_budget *b,
					 struct fl_store *s, struct fl_region *r)
{
	T_ASSERT_OK(fl_region_remove(r));
	fl_pager_destroy(p);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	munmap(g->buf, 64 * t_page_size());
	pthread_mutex_destroy(&g->lock);
	close(g->entered);
	close(g->open);
}

/*
 * Shared memory: the program's MADV_DONTNEED of a page eviction holds keeps
 * the page's data (it only unmaps shared memory); eviction writes it back
 * and drops it, and the page reads its data from the store afterwards,
 * never zeros. A page eviction dropped that the program discards then
 * (DONTNEED, or REMOVE: they cannot be told apart there) reads the store's
 * data too. MADV_REMOVE of a page eviction holds (it punches the page out
 * of the memfd) reads zeros, as it does without a budget.
 */
TEST(budget_shmem_discard_races_eviction)
{
	size_t ps = t_page_size();
	struct gated g = { 0 };
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_budget *b;
	struct fl_region *r;
	struct fl_store *s;
	volatile uint8_t *a;
	unsigned char vec;

	T_ASSERT_OK(fl_pager_start(p));
	a = discard_during_eviction(p, &g, FL_MEM_SHMEM, FL_VOLATILE_NONE, MADV_DONTNEED, &b, &s,
				    &r);
	T_ASSERT(t_all((const void *)a, ps, 0x5a));
	/* Written back on the way. */
	T_ASSERT(bstats(b).written_back >= ps);
	pthread_mutex_lock(&g.lock);
	T_ASSERT(g.buf[0] == 0x5a);
	pthread_mutex_unlock(&g.lock);
	/* A page evicted since (FIFO: page 20, once 20 later pages came in), then discarded. */
	memset((void *)(a + 20 * ps), 0xc3, ps);
	for (size_t i = 21; i < 41; i++)
		T_ASSERT_EQ(fl_pattern_check((const void *)(a + i * ps), i * ps, ps, SEED), 0);
	for (;;) {
		T_ASSERT_SYS(mincore((void *)(a + 20 * ps), ps, &vec));
		if (!(vec & 1))
			break;				/* out of the page cache */
		sched_yield();
	}
	T_ASSERT_SYS(madvise((void *)(a + 20 * ps), ps, MADV_DONTNEED));
	T_ASSERT(t_all((const void *)(a + 20 * ps), ps, 0xc3));
	T_ASSERT_EQ(rstats(r).pages_zero, 0);
	discard_during_eviction_done(p, &g, b, s, r);

	/* MADV_REMOVE while eviction holds the page: zeros, the program's removal. */
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	T_ASSERT_OK(fl_pager_start(p));
	memset(&g, 0, sizeof(g));
	a = discard_during_eviction(p, &g, FL_MEM_SHMEM, FL_VOLATILE_NONE, MADV_REMOVE, &b, &s, &r);
	T_ASSERT(t_all((const void *)a, ps, 0));
	discard_during_eviction_done(p, &g, b, s, r);
}

/*
 * FL_VOLATILE_SIGBUS: a page the program discards (MADV_DONTNEED) while
 * eviction holds it reads zeros afterwards, as a discarded page does; only
 * the pages eviction itself dropped raise SIGBUS.
 */
TEST(budget_volatile_sigbus_discard_races_eviction)
{
	size_t ps = t_page_size();
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct gated g = { 0 };
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_budget *b;
	struct fl_region *r;
	struct fl_store *s;
	uint8_t *a;

	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	T_ASSERT_OK(fl_pager_start(p));
	a = discard_during_eviction(p, &g, FL_MEM_ANON, FL_VOLATILE_SIGBUS, MADV_DONTNEED, &b, &s,
				    &r);
	/* Page 1 went with page 0 (down to the low watermark): eviction dropped it. */
	{
		struct timespec t0, t;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		while (rstats(r).evicted < 2) {
			clock_gettime(CLOCK_MONOTONIC, &t);
			if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
			    t_ms(30 * 1000))
				t_fail(__FILE__, __LINE__, "eviction dropped %llu pages of 2 in 30 s "
				       "(scaled)", (unsigned long long)rstats(r).evicted);
			sched_yield();
		}
	}
	T_ASSERT(!t_read_sigbus(a + 7));
	T_ASSERT(t_all(a, ps, 0));
	T_ASSERT(t_read_sigbus(a + ps + 7));
	discard_during_eviction_done(p, &g, b, s, r);
}

/* ------------------------------------------------------------ removal */

/*
 * FL_REGION_KEEP_ON_REMOVE leaves the program's memory as it is after the
 * removal; a page the budget evicted holds data (the store's), so it is
 * brought back first: the memory reads the store's data everywhere
 * afterwards, never zeros.
 */
static void keep_on_remove(enum fl_pager_mode mode)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fl_budget *b = budget_new(16 * ps, FL_EVICT_FIFO);
	struct t_loop d;
	struct fl_pager *p = pager_up(mode, &d);
	uint8_t *mem = t_map_anon(len);
	struct fl_region_opts o;
	struct fl_region *r;
	struct fl_store *s;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.addr = mem;
	o.budget = b;
	o.flags = FL_REGION_KEEP_ON_REMOVE;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	read_check(r, 0);
	T_ASSERT(rstats(r).evicted >= npages - 16 - bstats(b).batch / ps);
	T_ASSERT_OK(fl_region_remove(r));
	T_ASSERT_EQ(bstats(b).resident, 0);
	for (size_t i = 0; i < npages; i++)
		if (fl_pattern_check(mem + i * ps, i * ps, ps, SEED))
			t_fail(__FILE__, __LINE__, "page %zu after removal: not the store's data%s", i,
			       t_all(mem + i * ps, ps, 0) ? " (zeros)" : "");
	pager_down(p, mode, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	munmap(mem, len);
}

TEST(budget_keep_on_remove_brings_evicted_back)
{
	keep_on_remove(FL_PAGER_SIGBUS);
}

TEST(budget_keep_on_remove_threads)
{
	keep_on_remove(FL_PAGER_THREADS);
}

struct discarder {
	uint8_t *page;
	_Atomic bool stop;
	_Atomic unsigned long rounds;
};

/* Discards one page of a region over and over: a REMOVE event each time. */
static void *discard_main(void *arg)
{
	struct discarder *dc = arg;

	while (!atomic_load(&dc->stop)) {
		T_ASSERT_SYS(madvise(dc->page, t_page_size(), MADV_DONTNEED));
		atomic_fetch_add(&dc->rounds, 1);
	}
	return NULL;
}

/*
 * fl_pager_destroy() with a region kept on removal (THREADS mode) while a
 * program thread keeps discarding a page of another region: the evicted
 * pages come back while the handler threads still read the REMOVE events,
 * and the memory reads the store's data everywhere afterwards. Before,
 * they were brought back after the threads stopped: an unread event made
 * every install fail, and the pages were poisoned.
 */
TEST(budget_keep_on_remove_at_destroy)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fl_budget *b = budget_new(16 * ps, FL_EVICT_FIFO);
	struct t_loop d;
	struct fl_pager *p = pager_up(FL_PAGER_THREADS, &d);
	uint8_t *mem = t_map_anon(len), *other = t_map_anon(ps);
	struct discarder dc = { .page = other };
	struct fl_region_opts o;
	struct fl_region *r, *r2;
	struct fl_store *s, *s2;
	unsigned long th;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	T_ASSERT_OK(fl_store_pattern_create(ps, SEED, &s2));
	o = t_region_opts(s, len);
	o.addr = mem;
	o.budget = b;
	o.flags = FL_REGION_KEEP_ON_REMOVE;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	o = t_region_opts(s2, ps);
	o.addr = other;
	T_ASSERT_OK(fl_region_add(p, &o, &r2));
	read_check(r, 0);
	T_ASSERT(rstats(r).evicted >= npages - 16 - bstats(b).batch / ps);
	th = t_thread_start(discard_main, &dc);
	while (atomic_load(&dc.rounds) < 10)
		sched_yield();
	fl_pager_destroy(p);
	atomic_store(&dc.stop, true);
	t_thread_join(th);
	T_ASSERT_EQ(bstats(b).resident, 0);
	for (size_t i = 0; i < npages; i++)
		if (fl_pattern_check(mem + i * ps, i * ps, ps, SEED))
			t_fail(__FILE__, __LINE__, "page %zu after destroy: not the store's data%s", i,
			       t_all(mem + i * ps, ps, 0) ? " (zeros)" : "");
	fl_budget_destroy(b);
	fl_store_destroy(s);
	fl_store_destroy(s2);
	munmap(mem, len);
	munmap(other, ps);
}

/* ------------------------------------------------------------- advice */

/* DONTNEED advice on a clean region: those pages go first at the next eviction. */
TEST(budget_advise_dontneed_first)
{
	size_t ps = t_page_size(), npages = 128, len = npages * ps;
	struct fl_budget *b = budget_new(64 * ps, FL_EVICT_FIFO);
	struct t_loop d;
	struct fl_pager *p = pager_up(FL_PAGER_SIGBUS, &d);
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region *r;
	const volatile uint8_t *a;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.budget = b;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	a = fl_region_addr(r);
	/* WILLNEED brings 32 pages in; then the last 8 of them are advised away. */
	T_ASSERT_OK(fl_region_advise(r, 0, 32 * ps, FL_ADVISE_WILLNEED));
	T_ASSERT_EQ(rstats(r).resident, 32);
	T_ASSERT_OK(fl_region_advise(r, 24 * ps, 8 * ps, FL_ADVISE_DONTNEED));
	/*
	 * Fill just past the high watermark (60 pages of 64; batch 4, low 56):
	 * eviction takes 5 pages, all among the advised ones, none of FIFO's
	 * oldest (0-23). The pager waits for nothing here: poll the counter.
	 */
	T_ASSERT_EQ(bstats(b).high, 60 * ps);
	for (size_t i = 32; i < 61; i++)
		(void)a[i * ps];
	while (rstats(r).evicted < 5)
		sched_yield();
	{
		size_t gone = 0;

		for (size_t i = 0; i < 24; i++)
			T_ASSERT((t_pagemap((const void *)(a + i * ps)) & T_PM_PRESENT) != 0);
		for (size_t i = 24; i < 32; i++)
			gone += (t_pagemap((const void *)(a + i * ps)) & T_PM_PRESENT) == 0;
		T_ASSERT_EQ(gone, rstats(r).evicted);
	}
	read_check(r, 0);
	T_ASSERT_OK(fl_region_remove(r));
	pager_down(p, FL_PAGER_SIGBUS, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
}

/* ------------------------------------------------------- live snapshots */

/*
 * While a live snapshot watches a region (it may read any page from memory
 * at its instant), eviction leaves the region alone: the budget lets the
 * faults through instead (counted as skipped or waits, never dropped).
 * Once the snapshot is destroyed, eviction resumes.
 */
TEST(budget_live_snapshot_pauses_eviction)
{
	size_t ps = t_page_size(), npages = 128, len = npages * ps;
	struct fl_budget *b = budget_new(32 * ps, FL_EVICT_FIFO);
	struct t_loop d;
	struct fl_pager *p = pager_up(FL_PAGER_THREADS, &d);
	struct fl_snapshot_range sr = { 0 };
	struct fl_snapshot_live *snap;
	struct fl_snapshot_writer *w;
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region *r;
	char path[] = "/tmp/fl-budget-snap-XXXXXX";
	int fd = mkstemp(path);

	T_ASSERT_SYS(fd);
	close(fd);
	unlink(path);				/* the writer creates it */
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.budget = b;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	sr.region = r;
	T_ASSERT_OK(fl_snapshot_live_create(&sr, 1, NULL, &snap));
	read_check(r, 0);
	T_ASSERT_EQ(rstats(r).evicted, 0);
	T_ASSERT_EQ(rstats(r).resident, npages);	/* over the budget: nothing could go */
	T_ASSERT_OK(fl_snapshot_writer_create(path, NULL, &w));
	T_ASSERT_OK(fl_snapshot_live_take(snap, w, 0));
	T_ASSERT_OK(fl_snapshot_live_wait(snap, t_ms(60000)));
	T_ASSERT_OK(fl_snapshot_writer_finish(w, NULL));
	fl_snapshot_live_destroy(snap);
	/* Gone: the next faults let eviction bring the budget back. */
	T_ASSERT_OK(fl_region_advise(r, 0, len, FL_ADVISE_DONTNEED));
	T_ASSERT_OK(fl_region_populate(r, 0, ps));
	while (bstats(b).resident > bstats(b).high)
		sched_yield();
	T_ASSERT(rstats(r).evicted > 0);
	read_check(r, 0);
	T_ASSERT_OK(fl_region_remove(r));
	pager_down(p, FL_PAGER_THREADS, &d);
	fl_budget_destroy(b);
	fl_store_destroy(s);
	unlink(path);
}
