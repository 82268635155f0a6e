/* SPDX-License-Identifier: MIT */
/* Dirty tracking and write-back: fl_region_sync, fl_region_dirty, on_wp, and eviction's flush. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests.h"
#include "pager/pager-int.h"

#define SEED 0xd1e7u

/* ------------------------------------------------------------ environment */

enum store_kind { K_FILE, K_MEM, K_FAILING };

struct env {
	enum fl_pager_mode mode;
	size_t ps, npages, len;
	struct fl_pager *p;
	struct fl_store *s;
	struct fl_region *r;
	uint8_t *buf;			/* K_MEM, K_FAILING: the store's memory */
	_Atomic bool fail;		/* K_FAILING: write() fails with -EIO */
	_Atomic long writes;		/* K_FAILING: write() calls */
	struct t_loop loop;
	bool looping;
};

static int failing_read(void *ud, uint64_t off, void *buf, size_t len, size_t ps, uint64_t *holes)
{
	struct env *v = ud;

	(void)ps;
	(void)holes;
	memcpy(buf, v->buf + off, len);
	return 0;
}

static int failing_write(void *ud, uint64_t off, const void *buf, size_t len)
{
	struct env *v = ud;

	atomic_fetch_add(&v->writes, 1);
	if (atomic_load(&v->fail))
		return -EIO;
	memcpy(v->buf + off, buf, len);
	return 0;
}

static void *anon(size_t len)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	T_ASSERT(m != MAP_FAILED);
	return m;
}

static struct env *env_new_full(enum fl_pager_mode mode, enum store_kind kind, size_t npages,
				uint32_t flags, fl_region_wp_fn on_wp, void *userdata,
				struct fl_budget *budget, enum fl_mem_type mem);

/* A region of @npages pages in @mode over a writable store holding the pattern. */
static struct env *env_new(enum fl_pager_mode mode, enum store_kind kind, size_t npages,
			   uint32_t flags, fl_region_wp_fn on_wp, void *userdata)
{
	return env_new_full(mode, kind, npages, flags, on_wp, userdata, NULL, FL_MEM_ANON);
}

/* The same in memory budget @b (dirty tracking comes with it). */
static struct env *env_new_budget(enum fl_pager_mode mode, enum store_kind kind, size_t npages,
				  struct fl_budget *b)
{
	return env_new_full(mode, kind, npages, 0, NULL, NULL, b, FL_MEM_ANON);
}

/* A region of @mem memory (pages of its size), tracking dirty pages, maybe in budget @b. */
static struct env *env_new_mem(enum fl_pager_mode mode, enum store_kind kind, size_t npages,
			       enum fl_mem_type mem, struct fl_budget *b)
{
	return env_new_full(mode, kind, npages, FL_REGION_TRACK_DIRTY, NULL, NULL, b, mem);
}

static struct env *env_new_full(enum fl_pager_mode mode, enum store_kind kind, size_t npages,
				uint32_t flags, fl_region_wp_fn on_wp, void *userdata,
				struct fl_budget *budget, enum fl_mem_type mem)
{
	struct env *v = calloc(1, sizeof(*v));
	struct fl_region_opts o;

	T_ASSERT(v);
	v->mode = mode;
	v->ps = t_mem_page_size(mem);
	v->npages = npages;
	v->len = npages * v->ps;
	if (kind == K_FILE) {
		char path[] = "/tmp/fl-dirty-XXXXXX";
		struct fl_store_file_opts fo = { .sz = sizeof(fo), .flags = FL_STORE_FILE_WRITABLE };
		uint8_t *data = malloc(v->len);
		int fd = mkstemp(path);

		T_ASSERT(data);
		T_ASSERT_SYS(fd);
		fl_pattern_fill(data, 0, v->len, SEED);
		T_ASSERT_EQ(write(fd, data, v->len), (ssize_t)v->len);
		close(fd);
		free(data);
		T_ASSERT_OK(fl_store_file_open(path, &fo, &v->s));
		unlink(path);
	} else {
		v->buf = anon(v->len);
		fl_pattern_fill(v->buf, 0, v->len, SEED);
		if (kind == K_MEM) {
			T_ASSERT_OK(fl_store_mem_create(v->buf, v->len, 0, &v->s));
		} else {
			struct fl_store_ops ops = {
				.sz = sizeof(ops), .read = failing_read, .write = failing_write,
			};

			T_ASSERT_OK(fl_store_create(&ops, v, 0, v->len, &v->s));
		}
	}
	v->p = t_pager_new(mode, 2, 0);
	o = t_region_opts(v->s, v->len);
	o.flags = flags;
	o.on_wp = on_wp;
	o.userdata = userdata;
	o.budget = budget;
	o.mem = mem;
	T_ASSERT_OK(fl_region_add(v->p, &o, &v->r));
	T_ASSERT_OK(fl_pager_start(v->p));
	if (mode == FL_PAGER_LOOP) {
		t_loop_start(&v->loop, v->p);
		v->looping = true;
	}
	return v;
}

static void env_free(struct env *v)
{
	if (v->looping)
		t_loop_stop(&v->loop);
	if (v->r)
		T_ASSERT_OK(fl_region_remove(v->r));
	fl_pager_destroy(v->p);
	fl_store_destroy(v->s);
	if (v->buf)
		munmap(v->buf, v->len);
	free(v);
}

static struct fl_region_stats stats(struct fl_region *r)
{
	struct fl_region_stats st = { .sz = sizeof(st) };

	T_ASSERT_OK(fl_region_stats(r, &st));
	return st;
}

/* What the store holds now (holes read as zeros). */
static uint8_t *store_contents(struct env *v)
{
	uint8_t *b = malloc(v->len);
	uint64_t *holes = calloc((v->npages + 63) / 64, sizeof(*holes));

	T_ASSERT(b && holes);
	T_ASSERT_OK(fl_store_read(v->s, 0, b, v->len, v->ps, holes));
	for (size_t i = 0; i < v->npages; i++)
		if (holes[i / 64] & (1ull << (i % 64)))
			memset(b + i * v->ps, 0, v->ps);
	free(holes);
	return b;
}

/* Byte by byte: @what differs from @model at the first such byte. */
static void same(const uint8_t *got, const uint8_t *model, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (got[i] != model[i])
			t_fail(__FILE__, __LINE__, "%s: byte %zu (page %zu) is %#x, the model says %#x",
			       what, i, i / t_page_size(), got[i], model[i]);
}

static uint8_t state(struct env *v, size_t pg)
{
	return atomic_load(&v->r->state[pg]) & PG_STATE;
}

/*
 * Evict pages [pg, pg+n) the way the pager's eviction does: claim the
 * present ones, flush, drop those flushed clean (MADV_DONTNEED: only in
 * modes without REMOVE events, SIGBUS and LOOP), make them absent and wake.
 * Returns fl__dirty_flush's result; *@dropped gets the pages dropped.
 */
static int evict(struct env *v, size_t pg, size_t n, size_t *dropped)
{
	struct fl_region *r = v->r;
	uint64_t claimed[64] = { 0 }, was[64] = { 0 };
	uint8_t seen = 0;
	size_t k = 0, out = 0;
	int e;

	T_ASSERT(n <= 64 * 64);
	T_ASSERT(v->mode != FL_PAGER_THREADS);
	for (size_t i = 0; i < n; i++) {
		uint8_t s = atomic_load(&r->state[pg + i]);

		if ((s & PG_STATE) == PG_PRESENT &&
		    atomic_compare_exchange_strong(&r->state[pg + i], &s,
						   (uint8_t)((s & ~PG_STATE) | PG_BUSY))) {
			claimed[i / 64] |= 1ull << (i % 64);
			was[i / 64] |= 1ull << (i % 64);
		}
	}
	e = fl__dirty_flush(r, pg, n, claimed, NULL);
	for (size_t i = 0; i < n; i++) {
		bool drop = claimed[i / 64] & (1ull << (i % 64));
		uint8_t s;

		if (!(was[i / 64] & (1ull << (i % 64))))
			continue;
		if (drop) {
			T_ASSERT_SYS(madvise((uint8_t *)fl_region_addr(r) + (pg + i) * v->ps, v->ps,
					     MADV_DONTNEED));
			k++;
		}
		s = atomic_load(&r->state[pg + i]);
		while (!atomic_compare_exchange_weak(&r->state[pg + i], &s,
						     drop ? PG_ABSENT
							  : (uint8_t)((s & (PG_RES | PG_HOT)) |
								      PG_PRESENT)))
			;
		seen |= s;
		out += drop && (s & PG_RES);
	}
	if (out)
		fl__budget_out(r, out, 0);
	if (seen & PG_WAITED)
		fl_uffd_wake(fl_pager_uffd(v->p), (uint8_t *)fl_region_addr(r) + pg * v->ps,
			     n * v->ps);
	fl__wake_waiters(r);
	if (dropped)
		*dropped = k;
	return e;
}

/*
 * Wait (bounded) until no page of the region is in flight: a woken
 * faulting thread can run before its installer settles the page.
 */
static void wait_settled(struct env *v)
{
	for (int i = 0;; i++) {
		size_t busy = 0;

		for (size_t pg = 0; pg < v->npages; pg++)
			busy += state(v, pg) == PG_BUSY;
		if (!busy)
			return;
		T_ASSERT(i < t_ms(10000));
		usleep(1000);
	}
}

/* ------------------------------------------------------- sync and dirty */

static void sync_case(enum fl_pager_mode mode, enum store_kind kind)
{
	size_t npages = 32;
	struct env *v = env_new(mode, kind, npages, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint8_t *a = fl_region_addr(v->r), *model = malloc(v->len), *got;
	uint64_t bm[1];
	size_t ps = v->ps;

	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	if (mode == FL_PAGER_SIGBUS)
		T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	/* Reading brings pages in clean. */
	T_ASSERT_EQ(fl_pattern_check(a, 0, v->len, SEED), 0);
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, bm), 0);
	T_ASSERT_EQ(bm[0], 0);
	/* Writes make pages dirty: a write to each of 3, 4, 5 and 20, twice to 20. */
	for (size_t pg = 3; pg <= 5; pg++) {
		memset(a + pg * ps + 100, (int)(0xa0 + pg), 200);
		memset(model + pg * ps + 100, (int)(0xa0 + pg), 200);
	}
	a[20 * ps] = 0x11;
	a[20 * ps + ps - 1] = 0x22;
	model[20 * ps] = 0x11;
	model[20 * ps + ps - 1] = 0x22;
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, bm), 4);
	T_ASSERT_EQ(bm[0], (1ull << 3) | (1ull << 4) | (1ull << 5) | (1ull << 20));
	/* A sub-range: bit i is its i-th page. */
	T_ASSERT_EQ(fl_region_dirty(v->r, 4 * ps, 2 * ps, bm), 2);
	T_ASSERT_EQ(bm[0], 3);
	T_ASSERT_EQ(stats(v->r).wp_faults, 4);
	/* The store still has the old data until the sync. */
	got = store_contents(v);
	T_ASSERT_EQ(fl_pattern_check(got, 0, v->len, SEED), 0);
	free(got);
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	got = store_contents(v);
	same(got, model, v->len, "the store after sync");
	free(got);
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 0);
	T_ASSERT_EQ(stats(v->r).synced, 4);
	/* Two runs: 3-5 and 20. */
	T_ASSERT_EQ(stats(v->r).writeback_calls, 2);
	/* Resident and clean: the next write is seen again. */
	same(a, model, v->len, "the region after sync");
	a[4 * ps + 7] = 0x77;
	model[4 * ps + 7] = 0x77;
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, bm), 1);
	T_ASSERT_EQ(bm[0], 1ull << 4);
	T_ASSERT_EQ(stats(v->r).wp_faults, 5);
	/* A sync of another range leaves it dirty. */
	T_ASSERT_OK(fl_region_sync(v->r, 5 * ps, 10 * ps));
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 1);
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	got = store_contents(v);
	same(got, model, v->len, "the store after the second sync");
	free(got);
	T_ASSERT_EQ(stats(v->r).synced, 5);
	T_ASSERT_EQ(stats(v->r).writeback_errors, 0);
	env_free(v);
	free(model);
}

TEST(dirty_sync_file_threads)
{
	sync_case(FL_PAGER_THREADS, K_FILE);
}

TEST(dirty_sync_mem_threads)
{
	sync_case(FL_PAGER_THREADS, K_MEM);
}

TEST(dirty_sync_file_sigbus)
{
	sync_case(FL_PAGER_SIGBUS, K_FILE);
}

TEST(dirty_sync_mem_loop)
{
	sync_case(FL_PAGER_LOOP, K_MEM);
}

/* --------------------------------------------------------- evict, refault */

static void evict_case(enum fl_pager_mode mode, enum store_kind kind)
{
	size_t npages = 48, dropped = 0;
	struct env *v = env_new(mode, kind, npages, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint8_t *a = fl_region_addr(v->r), *model = malloc(v->len), *got;
	size_t ps = v->ps;
	uint64_t faults;

	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	/* Every third page written, whole or in part. */
	for (size_t pg = 0; pg < npages; pg += 3) {
		size_t at = (pg * 37) % ps, n = pg % 2 ? ps - at : 64;

		memset(a + pg * ps + at, (int)(pg + 1), n);
		memset(model + pg * ps + at, (int)(pg + 1), n);
	}
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), (long)(npages / 3));
	/* The writer is woken before the handler settles the page it unprotected. */
	wait_settled(v);
	T_ASSERT_OK(evict(v, 0, npages, &dropped));
	T_ASSERT_EQ(dropped, npages);
	for (size_t pg = 0; pg < npages; pg++)
		T_ASSERT_EQ(state(v, pg), PG_ABSENT);
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 0);
	T_ASSERT_EQ(stats(v->r).written_back, npages / 3);	/* by eviction */
	T_ASSERT_EQ(stats(v->r).synced, 0);
	got = store_contents(v);
	same(got, model, v->len, "the store after eviction");
	free(got);
	/* Faulted back in from the store: the written data and the untouched pattern, no zeros. */
	faults = stats(v->r).faults;
	if (mode == FL_PAGER_SIGBUS)
		T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	same(a, model, v->len, "the region after re-fault");
	if (mode != FL_PAGER_SIGBUS)
		T_ASSERT(stats(v->r).faults > faults);
	/* Again, with the re-faulted pages written once more. */
	for (size_t pg = 1; pg < npages; pg += 5) {
		a[pg * ps + 9] = 0x5a;
		model[pg * ps + 9] = 0x5a;
	}
	wait_settled(v);
	T_ASSERT_OK(evict(v, 0, npages, &dropped));
	T_ASSERT_EQ(dropped, npages);
	same(a, model, v->len, "the region after a second eviction");
	got = store_contents(v);
	same(got, model, v->len, "the store after a second eviction");
	free(got);
	env_free(v);
	free(model);
}

TEST(dirty_evict_refault_file_sigbus)
{
	evict_case(FL_PAGER_SIGBUS, K_FILE);
}

TEST(dirty_evict_refault_mem_sigbus)
{
	evict_case(FL_PAGER_SIGBUS, K_MEM);
}

TEST(dirty_evict_refault_file_loop)
{
	evict_case(FL_PAGER_LOOP, K_FILE);
}

TEST(dirty_evict_refault_mem_loop)
{
	evict_case(FL_PAGER_LOOP, K_MEM);
}

/* ------------------------------------------------------------ store fails */

static void fail_case(enum fl_pager_mode mode)
{
	size_t npages = 16;
	struct env *v = env_new(mode, K_FAILING, npages, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint8_t *a = fl_region_addr(v->r), *model = malloc(v->len);
	size_t ps = v->ps, dropped = 5;
	uint64_t bm[1];

	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	a[2 * ps] = 1;
	a[9 * ps + 5] = 2;
	model[2 * ps] = 1;
	model[9 * ps + 5] = 2;
	atomic_store(&v->fail, true);
	T_ASSERT_ERR(fl_region_sync(v->r, 0, v->len), EIO);
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, bm), 2);
	T_ASSERT_EQ(bm[0], (1ull << 2) | (1ull << 9));
	T_ASSERT_EQ(stats(v->r).writeback_errors, 2);
	T_ASSERT_EQ(stats(v->r).synced, 0);
	T_ASSERT_EQ(state(v, 2), PG_PRESENT);
	if (mode != FL_PAGER_THREADS) {
		/* Eviction: the clean pages go, the two that failed stay, dirty, with their data. */
		T_ASSERT_ERR(evict(v, 0, npages, &dropped), EIO);
		T_ASSERT_EQ(dropped, npages - 2);
		T_ASSERT_EQ(state(v, 2), PG_PRESENT);
		T_ASSERT_EQ(state(v, 9), PG_PRESENT);
		T_ASSERT_EQ(state(v, 3), PG_ABSENT);
		T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 2);
		T_ASSERT_EQ(stats(v->r).writeback_errors, 4);
	}
	/* Still writable, still counted once. */
	a[9 * ps + 6] = 3;
	model[9 * ps + 6] = 3;
	same(a, model, v->len, "the region after failed write-backs");
	T_ASSERT_EQ(fl_pattern_check(v->buf, 0, v->len, SEED), 0);
	atomic_store(&v->fail, false);
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 0);
	same(v->buf, model, v->len, "the store once writes work");
	T_ASSERT_EQ(stats(v->r).synced, 2);
	env_free(v);
	free(model);
}

TEST(dirty_store_write_fails_threads)
{
	fail_case(FL_PAGER_THREADS);
}

TEST(dirty_store_write_fails_sigbus)
{
	fail_case(FL_PAGER_SIGBUS);
}

/* ------------------------------------------------------------------ on_wp */

struct wp_seen {
	_Atomic unsigned int n;
	_Atomic uint64_t off[16];
	struct fl_region *_Atomic r;
};

static void on_wp(struct fl_region *r, uint64_t off, void *userdata)
{
	struct wp_seen *w = userdata;
	unsigned int i = atomic_fetch_add(&w->n, 1);

	atomic_store(&w->r, r);
	if (i < 16)
		atomic_store(&w->off[i], off);
}

static void wp_case(enum fl_pager_mode mode)
{
	struct wp_seen *w = calloc(1, sizeof(*w));
	struct env *v = env_new(mode, K_FILE, 16, 0, on_wp, w);
	volatile uint8_t *a = fl_region_addr(v->r);
	size_t ps = v->ps;
	uint8_t sum = 0;

	T_ASSERT(w);
	if (mode == FL_PAGER_SIGBUS)
		T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	/* Reads never call it. */
	for (size_t i = 0; i < v->len; i += ps)
		sum = (uint8_t)(sum + a[i]);
	(void)sum;
	T_ASSERT_EQ(atomic_load(&w->n), 0);
	a[1 * ps + 3] = 1;
	a[5 * ps] = 2;
	a[5 * ps + 100] = 3;	/* the page is writable now: no second call */
	a[9 * ps + ps - 1] = 4;
	T_ASSERT_EQ(atomic_load(&w->n), 3);
	T_ASSERT_EQ(atomic_load(&w->off[0]), 1 * ps);
	T_ASSERT_EQ(atomic_load(&w->off[1]), 5 * ps);
	T_ASSERT_EQ(atomic_load(&w->off[2]), 9 * ps);
	T_ASSERT(atomic_load(&w->r) == v->r);
	T_ASSERT_EQ(a[5 * ps + 100], 3);
	T_ASSERT_EQ(stats(v->r).wp_faults, 3);
	/* Not tracking dirty pages: nothing to sync, and no live snapshot on top. */
	T_ASSERT_ERR(fl_region_sync(v->r, 0, v->len), EINVAL);
	T_ASSERT_ERR(fl_region_dirty(v->r, 0, v->len, NULL), EINVAL);
	env_free(v);
	free(w);
}

TEST(dirty_on_wp_threads)
{
	wp_case(FL_PAGER_THREADS);
}

TEST(dirty_on_wp_sigbus)
{
	wp_case(FL_PAGER_SIGBUS);
}

TEST(dirty_on_wp_loop)
{
	wp_case(FL_PAGER_LOOP);
}

static void snap_fn(void *arg, struct fl_region *r, size_t pg, size_t n, int why)
{
	(void)arg;
	(void)r;
	(void)pg;
	(void)n;
	(void)why;
}

TEST(dirty_rejects)
{
	size_t ps = t_page_size();
	struct fl_store *ro;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct fl_region_opts o;
	struct fl_region *r;
	struct env *v;

	T_ASSERT_OK(fl_store_pattern_create(16 * ps, SEED, &ro));
	o = t_region_opts(ro, 16 * ps);
	o.flags = FL_REGION_TRACK_DIRTY;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.flags = 1u << 30;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	fl_pager_destroy(p);
	fl_store_destroy(ro);
	/* A live snapshot cannot watch a region that takes its own write-protect faults. */
	v = env_new(FL_PAGER_THREADS, K_MEM, 8, FL_REGION_TRACK_DIRTY, NULL, NULL);
	T_ASSERT_ERR(fl__region_wp_attach(v->r, snap_fn, NULL), EBUSY);
	T_ASSERT_ERR(fl_region_sync(v->r, 0, 9 * ps), EINVAL);
	T_ASSERT_ERR(fl_region_sync(NULL, 0, ps), EINVAL);
	T_ASSERT_ERR(fl_region_dirty(v->r, 8 * ps, 1, NULL), EINVAL);
	T_ASSERT_OK(fl_region_sync(v->r, 0, 0));
	env_free(v);
}

/* ---------------------------------------------- writes racing write-back */

#define W_THREADS 3

struct hammer {
	struct env *v;
	uint64_t *model;		/* 8-byte words; each writer owns its pages' words */
	unsigned int index;
	long iters;
	_Atomic long *rounds;		/* write-backs done by the flusher */
	_Atomic int *done;
};

static void *writer_main(void *arg)
{
	struct hammer *h = arg;
	struct env *v = h->v;
	volatile uint64_t *a = fl_region_addr(v->r);
	size_t words = v->ps / 8, mine = 0;
	uint64_t x = 0x9e3779b97f4a7c15ull * (h->index + 1);
	size_t pages[256];

	for (size_t pg = h->index; pg < v->npages; pg += W_THREADS)
		pages[mine++] = pg;
	for (long it = 0; atomic_load(h->rounds) < 300 || it < h->iters; it++) {
		size_t pg, w;
		uint64_t val;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pg = pages[x % mine];
		w = pg * words + (x >> 20) % words;
		val = ((uint64_t)(h->index + 1) << 56) | (uint64_t)it;
		a[w] = val;
		h->model[w] = val;
		/* Sometimes a whole run of words, so copies can tear if they are not protected. */
		if (it % 64 == 0)
			for (size_t k = 0; k < words; k += 8) {
				a[pg * words + k] = val + k;
				h->model[pg * words + k] = val + k;
			}
	}
	atomic_fetch_add(h->done, 1);
	return NULL;
}

static void hammer_case(enum fl_pager_mode mode, enum store_kind kind)
{
	size_t npages = 24;
	struct env *v = env_new(mode, kind, npages, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint64_t *model = malloc(v->len);
	struct hammer h[W_THREADS];
	unsigned long th[W_THREADS];
	_Atomic long rounds = 0;
	_Atomic int done = 0;
	uint8_t *got;
	struct fl_region_stats st;

	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	if (mode == FL_PAGER_SIGBUS)
		T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	for (unsigned int i = 0; i < W_THREADS; i++) {
		h[i] = (struct hammer){ .v = v, .model = model, .index = i, .iters = 1000,
					.rounds = &rounds, .done = &done };
		th[i] = t_thread_start(writer_main, &h[i]);
	}
	for (long k = 0; atomic_load(&done) < W_THREADS; k++) {
		struct fl_region_stats s0 = stats(v->r), s1;
		size_t dropped = 0;

		/*
		 * Eviction (where pages can be dropped without REMOVE events), and
		 * sync. A round counts when it wrote or dropped something.
		 */
		if (mode != FL_PAGER_THREADS && k % 3 != 2)
			T_ASSERT_OK(evict(v, (size_t)k % 4, npages - (size_t)k % 4, &dropped));
		else
			T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
		s1 = stats(v->r);
		if (dropped || s1.synced + s1.written_back > s0.synced + s0.written_back)
			atomic_fetch_add(&rounds, 1);
	}
	for (unsigned int i = 0; i < W_THREADS; i++)
		t_thread_join(th[i]);
	if (mode == FL_PAGER_SIGBUS)
		T_ASSERT_OK(fl_region_populate(v->r, 0, v->len));
	same(fl_region_addr(v->r), (uint8_t *)model, v->len, "the region after the writers");
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	got = store_contents(v);
	same(got, (uint8_t *)model, v->len, "the store after the last sync");
	free(got);
	st = stats(v->r);
	T_ASSERT(st.synced + st.written_back > 0);
	T_ASSERT(st.wp_faults > 0);
	T_ASSERT_EQ(st.writeback_errors, 0);
	if (getenv("FL_TEST_VERBOSE"))
		printf("rounds %ld wp_faults %llu written back %llu faults %llu\n", atomic_load(&rounds),
		       (unsigned long long)st.wp_faults,
		       (unsigned long long)(st.synced + st.written_back),
		       (unsigned long long)st.faults);
	env_free(v);
	free(model);
}

TEST(dirty_writes_race_writeback_threads)
{
	hammer_case(FL_PAGER_THREADS, K_FILE);
}

TEST(dirty_writes_race_eviction_sigbus)
{
	hammer_case(FL_PAGER_SIGBUS, K_FILE);
}

TEST(dirty_writes_race_eviction_loop)
{
	hammer_case(FL_PAGER_LOOP, K_MEM);
}

/* --------------------------------------------- with a budget, end to end */

/*
 * Writers hammer a region four times its budget: eviction writes the dirty
 * pages back before it drops them, and every write is found again, in the
 * region and, after a last sync, in the store.
 */
static void budget_case(enum fl_pager_mode mode, enum store_kind kind)
{
	size_t npages = 48, ps = t_page_size();
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = 12 * ps, .batch = 2 * ps };
	struct fl_budget *b;
	struct env *v;
	uint64_t *model;
	struct hammer h[W_THREADS];
	unsigned long th[W_THREADS];
	_Atomic long rounds = 1000;	/* the writers count their own iterations only */
	_Atomic int done = 0;
	uint8_t *got;
	struct fl_region_stats st;
	struct fl_budget_stats bs = { .sz = sizeof(bs) };

	T_ASSERT_OK(fl_budget_create(&bo, &b));
	v = env_new_budget(mode, kind, npages, b);
	model = malloc(v->len);
	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	for (unsigned int i = 0; i < W_THREADS; i++) {
		h[i] = (struct hammer){ .v = v, .model = model, .index = i, .iters = 3000,
					.rounds = &rounds, .done = &done };
		th[i] = t_thread_start(writer_main, &h[i]);
	}
	/* A sync now and then, racing eviction's write-back. */
	while (atomic_load(&done) < W_THREADS)
		T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	for (unsigned int i = 0; i < W_THREADS; i++)
		t_thread_join(th[i]);
	same(fl_region_addr(v->r), (uint8_t *)model, v->len, "the region after the writers");
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	got = store_contents(v);
	same(got, (uint8_t *)model, v->len, "the store after the last sync");
	free(got);
	st = stats(v->r);
	T_ASSERT(st.evicted > 0);
	T_ASSERT(st.written_back > 0);
	T_ASSERT_EQ(st.writeback_errors, 0);
	T_ASSERT_OK(fl_budget_stats(b, &bs));
	T_ASSERT_EQ(bs.written_back, st.written_back * ps);
	/* Never over the budget by more than one batch. */
	T_ASSERT(bs.resident_max <= bo.bytes + bo.batch);
	if (getenv("FL_TEST_VERBOSE"))
		printf("evicted %llu written back %llu (eviction) %llu (sync) wp_faults %llu\n",
		       (unsigned long long)st.evicted, (unsigned long long)st.written_back,
		       (unsigned long long)st.synced,
		       (unsigned long long)st.wp_faults);
	T_ASSERT_OK(fl_region_remove(v->r));
	v->r = NULL;
	env_free(v);
	fl_budget_destroy(b);
	free(model);
}

TEST(dirty_budget_writers_threads_file)
{
	budget_case(FL_PAGER_THREADS, K_FILE);
}

TEST(dirty_budget_writers_sigbus_mem)
{
	budget_case(FL_PAGER_SIGBUS, K_MEM);
}

TEST(dirty_budget_writers_loop_file)
{
	budget_case(FL_PAGER_LOOP, K_FILE);
}

/* --------------------------------------- the program discards during write-back */

/*
 * LOOP mode (no REMOVE events): the program writes a page, then discards
 * it; the pager still counts it present. fl_region_sync() copies it out
 * through a path where the missing page is an error, never a fault that
 * waits on the page sync itself holds (it used to hang in
 * process_vm_readv for ever): it returns -EIO, the page stays dirty, the
 * store keeps what it had, and the other dirty page is written back.
 */
TEST(dirty_sync_after_discard_loop)
{
	struct env *v = env_new(FL_PAGER_LOOP, K_MEM, 8, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint8_t *a = fl_region_addr(v->r);
	size_t ps = v->ps;
	uint64_t dirty[1] = { 0 };

	T_ASSERT_EQ(fl_pattern_check(a, 0, v->len, SEED), 0);
	memset(a + 3 * ps, 0x5a, ps);
	memset(a + 5 * ps, 0x6b, ps);
	T_ASSERT_SYS(madvise(a + 3 * ps, ps, MADV_DONTNEED));
	T_ASSERT_ERR(fl_region_sync(v->r, 0, v->len), EIO);
	T_ASSERT(t_all(v->buf + 5 * ps, ps, 0x6b));
	T_ASSERT_EQ(fl_pattern_check(v->buf + 3 * ps, 3 * ps, ps, SEED), 0);
	T_ASSERT_OK(fl_region_dirty(v->r, 0, v->len, dirty));
	T_ASSERT(dirty[0] & (1u << 3));
	T_ASSERT(!(dirty[0] & (1u << 5)));
	env_free(v);
}

struct discarder {
	uint8_t *page;
	size_t ps;
	_Atomic int go, stop;
};

static void *discard_main(void *arg)
{
	struct discarder *d = arg;

	while (!atomic_load(&d->stop)) {
		if (!atomic_exchange(&d->go, 0))
			continue;
		madvise(d->page, d->ps, MADV_DONTNEED);
	}
	return NULL;
}

/*
 * THREADS mode: another thread discards a dirty page while fl_region_sync()
 * writes it back, 2000 times. Every sync returns (0, or -EIO when the
 * discard landed between its protect and its copy) and the page then
 * reads either what was written or the zeros of the discard.
 */
TEST(dirty_sync_races_discard_threads)
{
	struct env *v = env_new(FL_PAGER_THREADS, K_MEM, 8, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint8_t *a = fl_region_addr(v->r);
	struct discarder d = { .page = a + 3 * v->ps, .ps = v->ps };
	unsigned long th = t_thread_start(discard_main, &d);
	int eio = 0;

	for (int it = 0; it < 2000; it++) {
		uint8_t val = (uint8_t)(it | 1), got;
		int e;

		a[3 * v->ps] = val;
		atomic_store(&d.go, 1);
		e = fl_region_sync(v->r, 0, v->len);
		T_ASSERT(e == 0 || e == -EIO);
		eio += e == -EIO;
		while (atomic_load(&d.go))
			sched_yield();
		got = a[3 * v->ps];
		T_ASSERT(got == val || got == 0);
	}
	atomic_store(&d.stop, 1);
	t_thread_join(th);
	printf("# %d of 2000 syncs met the discard between protect and copy\n", eio);
	env_free(v);
}

/* ------------------------------------------- shared memory and hugetlbfs */

/*
 * Dirty tracking on @mem (a memfd or hugetlbfs: write-protection of shared
 * memory), in @mode: first writes are seen, sync writes exactly the dirty
 * pages in runs and protects them again, so a later write is seen again.
 */
static void sync_mem_case(enum fl_pager_mode mode, enum fl_mem_type mem)
{
	struct env *v = env_new_mem(mode, K_MEM, 8, mem, NULL);
	size_t ps = v->ps;
	uint8_t *a = fl_region_addr(v->r), *model = malloc(v->len), *got;
	uint64_t bm[1];

	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	same(a, model, v->len, "the region before any write");
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 0);
	a[1 * ps + 5] = model[1 * ps + 5] = 1;
	a[3 * ps] = model[3 * ps] = 2;
	a[4 * ps + ps - 1] = model[4 * ps + ps - 1] = 3;
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, bm), 3);
	T_ASSERT_EQ(bm[0], (1ull << 1) | (1ull << 3) | (1ull << 4));
	T_ASSERT_EQ(stats(v->r).wp_faults, 3);
	T_ASSERT_EQ(fl_pattern_check(v->buf, 0, v->len, SEED), 0);	/* not yet in the store */
	/* The writer is woken before the handler settles the page (runs would split). */
	wait_settled(v);
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	got = store_contents(v);
	same(got, model, v->len, "the store after sync");
	free(got);
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, NULL), 0);
	T_ASSERT_EQ(stats(v->r).synced, 3);
	T_ASSERT_EQ(stats(v->r).writeback_calls, 2);		/* runs 1 and 3-4 */
	/* Protected again: the next write to a synced page is seen. */
	a[4 * ps + 9] = model[4 * ps + 9] = 4;
	T_ASSERT_EQ(fl_region_dirty(v->r, 0, v->len, bm), 1);
	T_ASSERT_EQ(bm[0], 1ull << 4);
	T_ASSERT_EQ(stats(v->r).wp_faults, 4);
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	same(v->buf, model, v->len, "the store after the second sync");
	same(a, model, v->len, "the region after the syncs");
	T_ASSERT_EQ(stats(v->r).synced, 4);
	T_ASSERT_EQ(stats(v->r).writeback_errors, 0);
	env_free(v);
	free(model);
}

/*
 * @mem in a budget of 4 pages, 16 pages written: eviction writes each back
 * before punching it out of the memfd, and every page reads back as
 * written; after a sync the store holds every write.
 */
static void evict_mem_case(enum fl_pager_mode mode, enum fl_mem_type mem)
{
	size_t ps = t_mem_page_size(mem), npages = 16;
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = 4 * ps, .batch = ps };
	struct fl_budget_stats bs = { .sz = sizeof(bs) };
	struct fl_budget *b;
	struct env *v;
	uint8_t *a, *model;
	struct fl_region_stats st;

	T_ASSERT_OK(fl_budget_create(&bo, &b));
	v = env_new_mem(mode, K_MEM, npages, mem, b);
	a = fl_region_addr(v->r);
	model = malloc(v->len);
	T_ASSERT(model);
	fl_pattern_fill(model, 0, v->len, SEED);
	for (size_t i = 0; i < npages; i++) {
		a[i * ps + i] = model[i * ps + i] = (uint8_t)(0x80 + i);
		a[i * ps + ps - 1] = model[i * ps + ps - 1] = (uint8_t)i;
	}
	same(a, model, v->len, "the region after eviction");
	st = stats(v->r);
	T_ASSERT(st.evicted > 0);
	T_ASSERT(st.written_back > 0);
	T_ASSERT(st.refaults > 0);
	T_ASSERT_EQ(st.pages_zero, 0);
	T_ASSERT_OK(fl_region_sync(v->r, 0, v->len));
	same(v->buf, model, v->len, "the store after the sync");
	T_ASSERT_OK(fl_budget_stats(b, &bs));
	T_ASSERT(bs.resident_max <= bo.bytes + bo.batch);
	T_ASSERT_OK(fl_region_remove(v->r));
	v->r = NULL;
	env_free(v);
	fl_budget_destroy(b);
	free(model);
}

TEST(dirty_shmem_sync_and_evict)
{
	sync_mem_case(FL_PAGER_THREADS, FL_MEM_SHMEM);
	sync_mem_case(FL_PAGER_LOOP, FL_MEM_SHMEM);
	if (t_have(FL_FEAT_SIGBUS))
		sync_mem_case(FL_PAGER_SIGBUS, FL_MEM_SHMEM);
	evict_mem_case(FL_PAGER_THREADS, FL_MEM_SHMEM);
	evict_mem_case(FL_PAGER_LOOP, FL_MEM_SHMEM);
	if (t_have(FL_FEAT_SIGBUS))
		evict_mem_case(FL_PAGER_SIGBUS, FL_MEM_SHMEM);
}

TEST(dirty_hugetlb_sync_and_evict)
{
	sync_mem_case(FL_PAGER_THREADS, FL_MEM_HUGETLB);
	if (t_have(FL_FEAT_SIGBUS))
		sync_mem_case(FL_PAGER_SIGBUS, FL_MEM_HUGETLB);
	evict_mem_case(FL_PAGER_THREADS, FL_MEM_HUGETLB);
	evict_mem_case(FL_PAGER_LOOP, FL_MEM_HUGETLB);
}

static void *write_byte_main(void *arg)
{
	volatile uint8_t *a = arg;

	a[5] = 0x42;
	return NULL;
}

/*
 * The program moves the second half of a dirty-tracked region away alone
 * (mremap): its pages keep their write protection, and the pager follows
 * whole regions only. A write there faulted outside every region, and the
 * fault was left: the writer slept for good (a timeout on the old code).
 * The pager now unprotects such a page. The half left behind is tracked
 * as before.
 */
TEST(dirty_write_moved_piece)
{
	size_t npages = 32;
	struct env *v = env_new(FL_PAGER_THREADS, K_MEM, npages, FL_REGION_TRACK_DIRTY, NULL, NULL);
	uint8_t *a = fl_region_addr(v->r), *to;
	size_t ps = v->ps, half = v->len / 2;

	T_ASSERT_EQ(fl_pattern_check(a, 0, v->len, SEED), 0);
	to = mmap(NULL, half, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	T_ASSERT(to != MAP_FAILED);
	T_ASSERT(mremap(a + half, half, half, MREMAP_MAYMOVE | MREMAP_FIXED, to) == to);
	t_thread_join(t_thread_start(write_byte_main, to + 2 * ps));
	T_ASSERT_EQ(to[2 * ps + 5], 0x42);
	T_ASSERT_EQ(fl_pattern_check(to + 3 * ps, half + 3 * ps, ps, SEED), 0);
	/* The first half: a write is still seen, and synced to the store. */
	a[ps + 7] = 0x17;
	T_ASSERT_OK(fl_region_sync(v->r, 0, half));
	T_ASSERT_EQ(v->buf[ps + 7], 0x17);
	munmap(to, half);
	env_free(v);
}
