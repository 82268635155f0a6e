/* SPDX-License-Identifier: MIT */
/* The pager engine: contents per mode, memory and install method; concurrency; prefetch; stats. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"

#define SEED 0x5eedu
#define LOG_MAX 512

/*
 * A test store: the pattern, with optional holes, counting reads per page
 * and logging each read() call. Async-signal-safe (atomics only), so it
 * also serves SIGBUS mode.
 */
struct ts {
	struct fl_store *s;
	size_t ps;			/* bookkeeping unit: the region page size */
	size_t npages;
	unsigned int hole_every;	/* page i is a hole if i % hole_every == hole_every - 1 */
	_Atomic unsigned int *reads;
	_Atomic size_t nlog;
	_Atomic uint64_t log_off[LOG_MAX], log_len[LOG_MAX];	/* atomics: written in handlers */
};

static bool ts_hole(const struct ts *t, size_t pg)
{
	return t->hole_every && pg % t->hole_every == t->hole_every - 1;
}

static int ts_read(void *ud, uint64_t off, void *buf, size_t len, size_t page_size, uint64_t *holes)
{
	struct ts *t = ud;
	size_t i = atomic_fetch_add(&t->nlog, 1);

	if (i < LOG_MAX) {
		t->log_off[i] = off;
		t->log_len[i] = len;
	}
	for (size_t k = 0; k < len / t->ps; k++)
		atomic_fetch_add(&t->reads[off / t->ps + k], 1);
	fl_pattern_fill(buf, off, len, SEED);
	for (size_t k = 0; k < len / page_size; k++)
		if (ts_hole(t, (off + k * page_size) / t->ps))
			fl__bit_set(holes, k);
	return 0;
}

static struct ts *ts_new(size_t ps, size_t npages, unsigned int hole_every)
{
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = ts_read };
	struct ts *t = calloc(1, sizeof(*t));

	T_ASSERT(t);
	t->ps = ps;
	t->npages = npages;
	t->hole_every = hole_every;
	t->reads = calloc(npages, sizeof(*t->reads));
	T_ASSERT(t->reads);
	T_ASSERT_OK(fl_store_create(&ops, t, hole_every ? FL_STORE_HOLES : 0, npages * ps, &t->s));
	return t;
}

static void ts_free(struct ts *t)
{
	fl_store_destroy(t->s);
	free((void *)t->reads);
	free(t);
}

/* Every page of [base, base+n pages) holds the store's bytes at store page first+i. */
static void check_pages(const uint8_t *base, size_t n, struct ts *t, size_t first)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *pg = base + i * t->ps;

		if (ts_hole(t, first + i)) {
			if (!t_all(pg, t->ps, 0))
				t_fail(__FILE__, __LINE__, "page %zu: a hole should read zeros", i);
		} else if (fl_pattern_check(pg, (first + i) * t->ps, t->ps, SEED)) {
			t_fail(__FILE__, __LINE__, "page %zu does not hold the store's data", i);
		}
	}
}

/* ---------------------------------------------------------------- helpers */

static struct fl_region_stats stats(struct fl_region *r)
{
	struct fl_region_stats st = { .sz = sizeof(st) };

	T_ASSERT_OK(fl_region_stats(r, &st));
	return st;
}

static uint64_t hist_sum(const struct fl_region_stats *st)
{
	uint64_t n = 0;

	for (int i = 0; i < FL_LAT_BUCKETS; i++)
		n += st->lat_hist[i];
	return n;
}

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL	/* Linux 6.9 */
#endif

/*
 * The handler threads listed in /proc/self/task; with @pidfds, a pidfd of
 * each (up to @max) in it, or -1 where the kernel has no thread pidfds.
 */
static int handler_threads(int *pidfds, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0;

	T_ASSERT(d);
	while ((de = readdir(d))) {
		char path[300], comm[32];
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strncmp(comm, "fl-handler/", 11)) {
			if (pidfds && n < max)
				pidfds[n] = (int)syscall(SYS_pidfd_open, atoi(de->d_name),
							 PIDFD_THREAD);
			n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

static int count_handler_threads(void)
{
	return handler_threads(NULL, 0);
}

/*
 * A joined thread is still listed in /proc/self/task until the kernel
 * reaps it, an instant later: pthread_join() returns when the thread's
 * tid is cleared, early in its exit. A thread's pidfd hangs up once it is
 * reaped (gone from the listing). Wait for that on each pidfd of @fds
 * (each poll re-checks, whether or not the reaping wakes it) and close
 * them; a thread still there after 10 s was not stopped. Without thread
 * pidfds (before 6.9) the count is re-checked the same way.
 */
static void wait_reaped(int *fds, int n)
{
	uint64_t deadline = fl__now_ms() + 10000;

	for (int i = 0; i < n; i++) {
		struct pollfd pf = { .fd = fds[i], .events = 0 };

		while (fds[i] >= 0 && !(pf.revents & POLLHUP)) {
			if (fl__now_ms() > deadline)
				t_fail(__FILE__, __LINE__, "a handler thread still runs after the stop");
			if (poll(&pf, 1, 10) < 0 && errno != EINTR)
				t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
		}
		if (fds[i] >= 0)
			close(fds[i]);
		while (fds[i] < 0 && count_handler_threads() > 0) {
			if (fl__now_ms() > deadline)
				t_fail(__FILE__, __LINE__, "a handler thread still runs after the stop");
			poll(NULL, 0, 10);
		}
	}
}

TEST(pager_create_options)
{
	struct fl_pager_opts o = { .sz = sizeof(o) };
	unsigned char big[sizeof(o) + 8] = { 0 };
	struct fl_pager *p = NULL;
	struct fl_uffd *u;

	T_ASSERT_ERR(fl_pager_create(NULL, NULL), EINVAL);
	o.mode = 7;
	T_ASSERT_ERR(fl_pager_create(&o, &p), EINVAL);
	o = (struct fl_pager_opts){ .sz = sizeof(o), .threads = FL_PAGER_MAX_THREADS + 1 };
	T_ASSERT_ERR(fl_pager_create(&o, &p), EINVAL);
	o = (struct fl_pager_opts){ .sz = sizeof(o), .features = 1ull << 40 };
	T_ASSERT_ERR(fl_pager_create(&o, &p), EINVAL);
	/* A newer caller's struct: unknown bytes must be zero. */
	o = (struct fl_pager_opts){ .sz = sizeof(big) };
	memcpy(big, &o, sizeof(o));
	big[sizeof(o) + 3] = 1;
	T_ASSERT_ERR(fl_pager_create((struct fl_pager_opts *)big, &p), EINVAL);
	big[sizeof(o) + 3] = 0;
	T_ASSERT_OK(fl_pager_create((struct fl_pager_opts *)big, &p));
	fl_pager_destroy(p);
	/* SIGBUS mode serves only this process, and cannot read events. */
	u = t_uffd_open(0, true);
	o = (struct fl_pager_opts){ .sz = sizeof(o), .mode = FL_PAGER_SIGBUS, .uffd = u };
	T_ASSERT_ERR(fl_pager_create(&o, &p), EINVAL);
	o = (struct fl_pager_opts){ .sz = sizeof(o), .mode = FL_PAGER_SIGBUS,
				    .features = FL_FEAT_EVENT_REMOVE };
	T_ASSERT_ERR(fl_pager_create(&o, &p), EINVAL);
	fl_uffd_close(u);
	/* Defaults. */
	T_ASSERT_OK(fl_pager_create(NULL, &p));
	T_ASSERT(fl_pager_fd(p) >= 0);
	T_ASSERT(fl_pager_uffd(p) != NULL);
	T_ASSERT_ERR(fl_pager_dispatch(p), EINVAL);	/* not LOOP mode */
	fl_pager_destroy(p);
	fl_pager_destroy(NULL);
}

TEST(pager_threads_named_and_counted)
{
	struct fl_pager *p;

	int fds[8];

	unsetenv("FL_THREADS");
	p = t_pager_new(FL_PAGER_THREADS, 0, 0);
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(handler_threads(fds, 8), FL_PAGER_DEFAULT_THREADS);
	T_ASSERT_OK(fl_pager_stop(p));
	wait_reaped(fds, FL_PAGER_DEFAULT_THREADS);
	T_ASSERT_EQ(count_handler_threads(), 0);
	fl_pager_destroy(p);

	setenv("FL_THREADS", "3", 1);
	p = t_pager_new(FL_PAGER_THREADS, 0, 0);
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(handler_threads(fds, 8), 3);
	fl_pager_destroy(p);
	wait_reaped(fds, 3);
	T_ASSERT_EQ(count_handler_threads(), 0);
	/* The option wins over the environment. */
	p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(handler_threads(fds, 8), 1);
	fl_pager_destroy(p);
	wait_reaped(fds, 1);
	unsetenv("FL_THREADS");
}

TEST(region_add_options)
{
	size_t ps = t_page_size(), len = 16 * ps;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct ts *t = ts_new(ps, 16, 0);
	struct fl_region_opts o;
	struct fl_region *r = NULL, *r2 = NULL;
	uint8_t *mem = t_map_anon(len + ps);
	struct fl_uffd *other;

	T_ASSERT_ERR(fl_region_add(p, NULL, &r), EINVAL);
	o = t_region_opts(t->s, 0);
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(NULL, len);
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len + ps);		/* past the store */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len);
	o.store_off = ps;				/* past the store too */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, 8 * ps);
	o.store_off = 100;				/* not page aligned */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len);
	o.page_size = 3000;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len);
	o.addr = mem + 100;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len);
	o.flags = 1u << 9;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len);
	o.prefetch_min = 8 * ps;
	o.prefetch_max = 4 * ps;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o = t_region_opts(t->s, len);
	o.install = FL_INSTALL_CONTINUE;		/* anonymous memory has no page cache */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EOPNOTSUPP);
	o = t_region_opts(t->s, len);
	o.install = FL_INSTALL_MOVE;			/* the store cannot hand pages over */
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EOPNOTSUPP);
	if (t_have(FL_FEAT_MISSING_SHMEM)) {
		o = t_region_opts(t->s, len);
		o.mem = FL_MEM_SHMEM;
		o.install = FL_INSTALL_MOVE;
		T_ASSERT_ERR(fl_region_add(p, &o, &r), EOPNOTSUPP);
	}

	/* A good one, an overlapping one, a neighbour. */
	o = t_region_opts(t->s, 8 * ps);
	o.addr = mem;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT(fl_region_addr(r) == mem);
	T_ASSERT_EQ(fl_region_len(r), 8 * ps);
	o.addr = mem + 4 * ps;
	T_ASSERT_ERR(fl_region_add(p, &o, &r2), EINVAL);
	o.addr = mem + 8 * ps;
	o.store_off = 8 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r2));
	T_ASSERT_OK(fl_region_remove(r2));
	T_ASSERT_OK(fl_region_populate(r, 0, 0));
	T_ASSERT_ERR(fl_region_populate(r, 4 * ps, 5 * ps), EINVAL);
	T_ASSERT_ERR(fl_region_populate(NULL, 0, ps), EINVAL);
	T_ASSERT_ERR(fl_region_stats(r, NULL), EINVAL);
	T_ASSERT_OK(fl_region_remove(r));
	T_ASSERT_ERR(fl_region_remove(NULL), EINVAL);

	/* A range another userfaultfd holds. */
	other = t_uffd_open(0, true);
	T_ASSERT_OK(fl_uffd_register(other, mem, len, FL_REGISTER_MISSING, NULL));
	o = t_region_opts(t->s, len);
	o.addr = mem;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EBUSY);
	fl_uffd_close(other);
	fl_pager_destroy(p);
	ts_free(t);
	munmap(mem, len + ps);
}

/* --------------------------------------------- contents: mode x memory x install */

struct combo {
	enum fl_mem_type mem;
	enum fl_install install;
	enum fl_prefetch prefetch;
	unsigned int hole_every;
	bool caller_range;		/* the test maps the memory (else the pager does) */
};

static const char *install_name(enum fl_install i)
{
	static const char *n[] = { "auto", "copy", "move", "continue" };

	return n[i];
}

static bool combo_possible(const struct combo *c)
{
	if (c->mem == FL_MEM_SHMEM && !t_have(FL_FEAT_MISSING_SHMEM))
		return false;
	if (c->mem == FL_MEM_HUGETLB && !t_have(FL_FEAT_MISSING_HUGETLBFS))
		return false;
	if (c->install == FL_INSTALL_MOVE && !t_have(FL_FEAT_MOVE))
		return false;
	if (c->install == FL_INSTALL_CONTINUE &&
	    !t_have(c->mem == FL_MEM_HUGETLB ? FL_FEAT_MINOR_HUGETLBFS : FL_FEAT_MINOR_SHMEM))
		return false;
	return true;
}

/* Serve one region by @mode as @c says, read it all from this thread, check every byte. */
static void run_combo(enum fl_pager_mode mode, const struct combo *c, size_t npages)
{
	size_t ps = t_mem_page_size(c->mem), len = npages * ps;
	struct fl_pager *p = t_pager_new(mode, 2, 0);
	struct fl_region_opts o;
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct t_loop d;
	struct ts *t = NULL;
	struct fl_store *mem_store = NULL;
	uint8_t *src = NULL, *mem = NULL;
	int memfd = -1;
	uint64_t installed;

	if (c->install == FL_INSTALL_MOVE) {
		/* The mem store over private anonymous memory hands its pages over. */
		src = t_map_aligned(len, 2u << 20);
		fl_pattern_fill(src, 0, len, SEED);
		T_ASSERT_OK(fl_store_mem_create(src, len, 0, &mem_store));
		T_ASSERT(fl_store_caps(mem_store) & FL_STORE_MOVE);
		o = t_region_opts(mem_store, len);
	} else {
		t = ts_new(ps, npages, c->hole_every);
		o = t_region_opts(t->s, len);
	}
	o.mem = c->mem;
	o.install = c->install;
	o.prefetch = c->prefetch;
	o.prefetch_min = 4 * ps;
	o.prefetch_max = 8 * ps;
	if (c->caller_range) {
		mem = t_map_mem(c->mem, len, &memfd);
		o.addr = mem;
		o.memfd = memfd;
	}
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	if (mode == FL_PAGER_LOOP)
		t_loop_start(&d, p);
	T_ASSERT_OK(fl_pager_start(p));
	if (t) {
		check_pages(fl_region_addr(r), npages, t, 0);
		for (size_t i = 0; i < npages; i++)
			T_ASSERT_EQ(t->reads[i], 1);	/* each page read from the store once */
	} else {
		T_ASSERT_EQ(fl_pattern_check(fl_region_addr(r), 0, len, SEED), 0);
	}
	/* Handlers record a fault's latency after its install: let them finish. */
	if (mode == FL_PAGER_LOOP)
		t_loop_stop(&d);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	installed = st.pages_copy + st.pages_zero + st.pages_move + st.pages_continue;
	if (installed != npages)
		t_fail(__FILE__, __LINE__, "%s/%s: %llu pages installed (copy %llu zero %llu move %llu "
		       "continue %llu), expected %zu", fl_mem_type_name(c->mem),
		       install_name(c->install), (unsigned long long)installed,
		       (unsigned long long)st.pages_copy, (unsigned long long)st.pages_zero,
		       (unsigned long long)st.pages_move, (unsigned long long)st.pages_continue,
		       npages);
	if (c->hole_every)
		T_ASSERT_EQ(st.pages_zero, npages / c->hole_every);
	switch (c->install) {
	case FL_INSTALL_MOVE:
		T_ASSERT(st.pages_move > 0);
		/* Moved pages left the store's memory. */
		T_ASSERT(t_all(src, ps, 0));
		break;
	case FL_INSTALL_CONTINUE:
		T_ASSERT_EQ(st.pages_continue + st.pages_zero, npages);
		break;
	case FL_INSTALL_COPY:
		T_ASSERT_EQ(st.pages_copy + st.pages_zero, npages);
		break;
	case FL_INSTALL_AUTO:
		break;
	}
	T_ASSERT_EQ(st.errors, 0);
	T_ASSERT(st.faults >= 1 && st.faults <= npages);
	T_ASSERT(hist_sum(&st) >= 1);
	if (c->prefetch == FL_PREFETCH_NONE && c->install != FL_INSTALL_MOVE)
		T_ASSERT_EQ(st.store_reads, npages);
	fl_pager_destroy(p);
	if (t)
		ts_free(t);
	fl_store_destroy(mem_store);
	if (src)
		munmap(src, len);
	if (mem) {
		munmap(mem, len);
		if (memfd >= 0)
			close(memfd);
	}
}

static void contents_matrix(enum fl_pager_mode mode, bool huge)
{
	static const struct combo combos[] = {
		{ FL_MEM_ANON, FL_INSTALL_COPY, FL_PREFETCH_NONE, 0, false },
		{ FL_MEM_ANON, FL_INSTALL_COPY, FL_PREFETCH_FIXED, 3, false },
		{ FL_MEM_ANON, FL_INSTALL_AUTO, FL_PREFETCH_ADAPTIVE, 4, true },
		{ FL_MEM_ANON, FL_INSTALL_MOVE, FL_PREFETCH_NONE, 0, false },
		{ FL_MEM_ANON, FL_INSTALL_MOVE, FL_PREFETCH_FIXED, 0, true },
		{ FL_MEM_SHMEM, FL_INSTALL_COPY, FL_PREFETCH_NONE, 3, false },
		{ FL_MEM_SHMEM, FL_INSTALL_COPY, FL_PREFETCH_FIXED, 0, true },
		{ FL_MEM_SHMEM, FL_INSTALL_CONTINUE, FL_PREFETCH_NONE, 0, false },
		{ FL_MEM_SHMEM, FL_INSTALL_CONTINUE, FL_PREFETCH_FIXED, 3, true },
		{ FL_MEM_SHMEM, FL_INSTALL_AUTO, FL_PREFETCH_ADAPTIVE, 5, false },
	};
	static const struct combo huge_combos[] = {
		{ FL_MEM_HUGETLB, FL_INSTALL_COPY, FL_PREFETCH_NONE, 0, false },
		{ FL_MEM_HUGETLB, FL_INSTALL_COPY, FL_PREFETCH_FIXED, 3, true },
		{ FL_MEM_HUGETLB, FL_INSTALL_CONTINUE, FL_PREFETCH_NONE, 3, false },
		{ FL_MEM_HUGETLB, FL_INSTALL_CONTINUE, FL_PREFETCH_FIXED, 0, true },
	};
	const struct combo *list = huge ? huge_combos : combos;
	size_t n = huge ? sizeof(huge_combos) / sizeof(huge_combos[0])
			: sizeof(combos) / sizeof(combos[0]);
	int ran = 0;

	for (size_t i = 0; i < n; i++) {
		if (!combo_possible(&list[i])) {
			printf("    (%s/%s not possible here)\n", fl_mem_type_name(list[i].mem),
			       install_name(list[i].install));
			continue;
		}
		run_combo(mode, &list[i], huge ? 6 : 40);
		ran++;
	}
	T_ASSERT(ran > 0);
}

TEST(pager_contents_threads)
{
	contents_matrix(FL_PAGER_THREADS, false);
}

TEST(pager_contents_sigbus)
{
	contents_matrix(FL_PAGER_SIGBUS, false);
}

TEST(pager_contents_loop)
{
	contents_matrix(FL_PAGER_LOOP, false);
}

TEST(pager_contents_hugetlb)
{
	contents_matrix(FL_PAGER_THREADS, true);
	contents_matrix(FL_PAGER_LOOP, true);
	if (t_have(FL_FEAT_SIGBUS))
		contents_matrix(FL_PAGER_SIGBUS, true);
}

static int refuse_take(void *ud, uint64_t off, size_t len, void **ret_addr)
{
	(void)ud;
	(void)off;
	(void)len;
	(void)ret_addr;
	return -EOPNOTSUPP;
}

static int pattern_read(void *ud, uint64_t off, void *buf, size_t len, size_t page_size,
			uint64_t *holes)
{
	(void)ud;
	(void)page_size;
	(void)holes;
	fl_pattern_fill(buf, off, len, SEED);
	return 0;
}

TEST(pager_move_falls_back_to_copy)
{
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = pattern_read, .take_pages = refuse_take };
	size_t ps = t_page_size(), npages = 32;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_region_opts o;
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct fl_store *s;

	/* A store that says it can hand pages over, then refuses: each run is read and copied. */
	T_ASSERT_OK(fl_store_create(&ops, NULL, FL_STORE_MOVE, npages * ps, &s));
	o = t_region_opts(s, npages * ps);
	o.install = FL_INSTALL_MOVE;
	if (!t_have(FL_FEAT_MOVE)) {
		/* Before 6.8: MOVE asked for is refused, AUTO copies (the store is not asked). */
		T_ASSERT_ERR(fl_region_add(p, &o, &r), EOPNOTSUPP);
		o.install = FL_INSTALL_AUTO;
	}
	o.prefetch = FL_PREFETCH_FIXED;
	o.prefetch_max = 8 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(fl_pattern_check(fl_region_addr(r), 0, npages * ps, SEED), 0);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	T_ASSERT_EQ(st.pages_move, 0);
	T_ASSERT_EQ(st.pages_copy, npages);
	T_ASSERT_EQ(st.store_reads, npages / 8);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

/* ------------------------------------------------------------ concurrency */

struct racer {
	pthread_barrier_t *go;
	const volatile uint8_t *base;
	size_t ps, first, n, stride;
	uint64_t sum;
};

static void *race_main(void *arg)
{
	struct racer *x = arg;

	pthread_barrier_wait(x->go);
	for (size_t i = 0; i < x->n; i++)
		x->sum += x->base[(x->first + i * x->stride) * x->ps + 8];
	return NULL;
}

/* @nthr threads read pages at once; @same: all the same page, else interleaved distinct ones. */
static void race(enum fl_pager_mode mode, bool same)
{
	enum { NTHR = 8, PER = 32 };
	size_t ps = t_page_size(), npages = same ? 4 : NTHR * PER;
	struct fl_pager *p = t_pager_new(mode, 2, 0);
	struct ts *t = ts_new(ps, npages, 0);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	struct racer x[NTHR];
	unsigned long th[NTHR];
	pthread_barrier_t go;
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct t_loop d;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	if (mode == FL_PAGER_LOOP)
		t_loop_start(&d, p);
	T_ASSERT_OK(fl_pager_start(p));
	pthread_barrier_init(&go, NULL, NTHR);
	for (int i = 0; i < NTHR; i++) {
		x[i] = (struct racer){
			.go = &go, .base = fl_region_addr(r), .ps = ps,
			.first = same ? 1 : (size_t)i, .n = same ? 1 : PER, .stride = same ? 0 : NTHR,
		};
		th[i] = t_thread_start(race_main, &x[i]);
	}
	for (int i = 0; i < NTHR; i++)
		t_thread_join(th[i]);
	if (mode == FL_PAGER_LOOP)
		t_loop_stop(&d);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	if (same) {
		T_ASSERT_EQ(t->reads[1], 1);
		T_ASSERT_EQ(st.store_reads, 1);
		T_ASSERT_EQ(st.pages_copy, 1);
		T_ASSERT(st.faults >= 1);
		check_pages((uint8_t *)fl_region_addr(r) + ps, 1, t, 1);
	} else {
		for (size_t i = 0; i < npages; i++)
			T_ASSERT_EQ(t->reads[i], 1);
		T_ASSERT_EQ(st.store_reads, npages);
		T_ASSERT_EQ(st.pages_copy, npages);
		T_ASSERT_EQ(st.store_bytes, npages * ps);
		check_pages(fl_region_addr(r), npages, t, 0);
	}
	T_ASSERT_EQ(st.errors, 0);
	pthread_barrier_destroy(&go);
	fl_pager_destroy(p);
	ts_free(t);
}

TEST(pager_same_page_many_threads)
{
	race(FL_PAGER_THREADS, true);
	race(FL_PAGER_LOOP, true);
	if (t_have(FL_FEAT_SIGBUS))
		race(FL_PAGER_SIGBUS, true);
}

TEST(pager_distinct_pages_many_threads)
{
	race(FL_PAGER_THREADS, false);
	race(FL_PAGER_LOOP, false);
	if (t_have(FL_FEAT_SIGBUS))
		race(FL_PAGER_SIGBUS, false);
}

/* ---------------------------------------------------------------- prefetch */

static volatile uint8_t sink;

static void touch(struct fl_region *r, size_t pg)
{
	sink = ((volatile uint8_t *)fl_region_addr(r))[pg * t_page_size() + 1];
}

/* The last store read was [pg, pg+n) pages. */
static void last_read_is(struct ts *t, size_t pg, size_t n)
{
	size_t i = atomic_load(&t->nlog) - 1;
	uint64_t off = atomic_load(&t->log_off[i]), len = atomic_load(&t->log_len[i]);

	if (off != pg * t->ps || len != n * t->ps)
		t_fail(__FILE__, __LINE__, "last read: pages %llu+%llu, expected %zu+%zu",
		       (unsigned long long)(off / t->ps), (unsigned long long)(len / t->ps), pg, n);
}

TEST(pager_prefetch_fixed_edges)
{
	size_t ps = t_page_size(), npages = 40;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct ts *t = ts_new(ps, npages, 0);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;

	o.prefetch = FL_PREFETCH_FIXED;
	o.prefetch_max = 16 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	/* Clipped at the region's end. */
	touch(r, 30);
	last_read_is(t, 30, 10);
	st = stats(r);
	T_ASSERT_EQ(st.pages_prefetched, 9);
	/* Clipped at a present page. */
	T_ASSERT_OK(fl_region_populate(r, 5 * ps, ps));
	last_read_is(t, 5, 1);
	touch(r, 0);
	last_read_is(t, 0, 5);
	/* A run across present pages stops at the first: 6..21, not past 30. */
	touch(r, 6);
	last_read_is(t, 6, 16);
	touch(r, 22);
	last_read_is(t, 22, 8);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	T_ASSERT_EQ(st.pages_prefetched, 9 + 4 + 15 + 7);
	T_ASSERT_EQ(st.pages_copy, npages);
	for (size_t i = 0; i < npages; i++)
		T_ASSERT_EQ(t->reads[i], 1);
	check_pages(fl_region_addr(r), npages, t, 0);
	fl_pager_destroy(p);
	ts_free(t);
}

TEST(pager_prefetch_adaptive)
{
	size_t ps = t_page_size(), npages = 1024;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct ts *t = ts_new(ps, npages, 0);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;

	o.prefetch = FL_PREFETCH_ADAPTIVE;
	o.prefetch_min = 4 * ps;
	o.prefetch_max = 32 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	/* Sequential: the window doubles from min to max. */
	touch(r, 0);
	last_read_is(t, 0, 4);
	touch(r, 4);
	last_read_is(t, 4, 8);
	touch(r, 12);
	last_read_is(t, 12, 16);
	touch(r, 28);
	last_read_is(t, 28, 32);
	touch(r, 60);
	last_read_is(t, 60, 32);
	st = stats(r);
	T_ASSERT_EQ(st.faults, 5);
	T_ASSERT_EQ(st.pages_prefetched, 3 + 7 + 15 + 31 + 31);
	T_ASSERT_EQ(st.prefetch_used, 3 + 7 + 15 + 31);
	T_ASSERT_EQ(st.prefetch_wasted, 0);
	/* A jump: back to min, and the last window counts as wasted. */
	touch(r, 500);
	last_read_is(t, 500, 4);
	st = stats(r);
	T_ASSERT_EQ(st.prefetch_wasted, 31);
	touch(r, 504);
	last_read_is(t, 504, 8);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	T_ASSERT_EQ(st.prefetch_used, 3 + 7 + 15 + 31 + 3);
	T_ASSERT_EQ(st.pages_copy, 92 + 12);
	T_ASSERT_EQ(st.store_reads, 7);
	fl_pager_destroy(p);
	ts_free(t);
}

/* -------------------------------------------------------------- populate */

TEST(pager_populate_then_syscall)
{
	size_t ps = t_page_size(), npages = 8;
	struct fl_pager *p;
	struct ts *t = ts_new(ps, npages, 0);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	struct fl_region *r;
	uint8_t *buf = malloc(2 * ps);
	int pfd[2];

	if (!t_have(FL_FEAT_SIGBUS))
		T_SKIP("no UFFD_FEATURE_SIGBUS");
	T_ASSERT(buf);
	p = t_pager_new(FL_PAGER_SIGBUS, 0, 0);
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_SYS(pipe(pfd));
	memset(buf, 0xab, 2 * ps);
	/* The kernel cannot take a SIGBUS-mode fault for a system call: EFAULT. */
	T_ASSERT_EQ(write(pfd[1], buf, 2 * ps), (ssize_t)(2 * ps));
	T_ASSERT_EQ(read(pfd[0], (uint8_t *)fl_region_addr(r) + 2 * ps, 2 * ps), -1);
	T_ASSERT_EQ(errno, EFAULT);
	/* Populated first, it works; the pages around keep the store's data. */
	T_ASSERT_OK(fl_region_populate(r, 2 * ps, 2 * ps));
	T_ASSERT_EQ(t->reads[2], 1);
	T_ASSERT_EQ(t->reads[3], 1);
	T_ASSERT_EQ(read(pfd[0], (uint8_t *)fl_region_addr(r) + 2 * ps, 2 * ps), (ssize_t)(2 * ps));
	T_ASSERT(t_all((uint8_t *)fl_region_addr(r) + 2 * ps, 2 * ps, 0xab));
	check_pages(fl_region_addr(r), 2, t, 0);
	check_pages((uint8_t *)fl_region_addr(r) + 4 * ps, 4, t, 4);
	T_ASSERT_EQ(t->reads[2], 1);	/* populate skipped nothing twice */
	close(pfd[0]);
	close(pfd[1]);
	fl_pager_destroy(p);
	ts_free(t);
	free(buf);
}

struct popper {
	struct fl_region *r;
	size_t len;
};

static void *populate_main(void *arg)
{
	struct popper *x = arg;

	T_ASSERT_OK(fl_region_populate(x->r, 0, x->len));
	return NULL;
}

TEST(pager_populate_concurrent_with_faults)
{
	size_t ps = t_page_size(), npages = 512;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct ts *t = ts_new(ps, npages, 7);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct popper x;
	unsigned long th;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	x = (struct popper){ .r = r, .len = npages * ps };
	th = t_thread_start(populate_main, &x);
	/* Read from the far end towards the populating thread. */
	for (size_t i = npages; i-- > 0;)
		touch(r, i);
	t_thread_join(th);
	check_pages(fl_region_addr(r), npages, t, 0);
	for (size_t i = 0; i < npages; i++)
		T_ASSERT_EQ(t->reads[i], 1);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	T_ASSERT_EQ(st.pages_copy + st.pages_zero, npages);
	T_ASSERT_EQ(st.pages_zero, npages / 7);
	/* Populating what is there costs nothing. */
	T_ASSERT_OK(fl_region_populate(r, 0, npages * ps));
	T_ASSERT_EQ(stats(r).store_reads, st.store_reads);
	fl_pager_destroy(p);
	ts_free(t);
}

/* ------------------------------------------------------------- file store */

TEST(pager_file_store_offset)
{
	size_t ps = t_page_size(), npages = 24, skip = 3, region_off = 5;
	char path[] = "/tmp/fl-pager-XXXXXX";
	struct fl_store_file_opts fo = { .sz = sizeof(fo), .offset = skip * ps };
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region_opts o;
	struct fl_region *r;
	uint8_t *data = malloc((npages + skip) * ps);
	int fd = mkstemp(path);

	T_ASSERT_SYS(fd);
	T_ASSERT(data);
	/* File byte skip*ps + x holds the pattern of x: the store sees the pattern. */
	memset(data, 0xee, skip * ps);
	fl_pattern_fill(data + skip * ps, 0, npages * ps, SEED);
	T_ASSERT_EQ(write(fd, data, (npages + skip) * ps), (ssize_t)((npages + skip) * ps));
	close(fd);
	T_ASSERT_OK(fl_store_file_open(path, &fo, &s));
	unlink(path);
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	o = t_region_opts(s, (npages - region_off) * ps);
	o.store_off = region_off * ps;
	o.prefetch = FL_PREFETCH_FIXED;
	o.prefetch_max = 4 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(fl_pattern_check(fl_region_addr(r), region_off * ps, (npages - region_off) * ps,
				     SEED), 0);
	T_ASSERT_EQ(stats(r).store_bytes, (npages - region_off) * ps);
	fl_pager_destroy(p);
	fl_store_destroy(s);
	free(data);
}

/* ------------------------------------------------------------------ stats */

TEST(pager_stats_histogram)
{
	size_t ps = t_page_size(), npages = 64;
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct ts *t = ts_new(ps, npages, 0);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	st = stats(r);
	T_ASSERT_EQ(st.faults + st.pages_copy + st.store_reads + hist_sum(&st), 0);
	T_ASSERT_OK(fl_pager_start(p));
	for (size_t i = 0; i < npages; i++)
		touch(r, i);
	T_ASSERT_OK(fl_pager_stop(p));
	st = stats(r);
	/* One handler thread, one faulting thread: every fault was read and served once. */
	T_ASSERT_EQ(st.faults, npages);
	T_ASSERT_EQ(hist_sum(&st), npages);
	T_ASSERT_EQ(st.store_reads, npages);
	T_ASSERT_EQ(st.store_bytes, npages * ps);
	T_ASSERT_EQ(st.pages_prefetched + st.prefetch_used + st.prefetch_wasted, 0);
	T_ASSERT_EQ(st.lat_hist[0] + st.lat_hist[1] + st.lat_hist[2], 0);	/* < 8 ns: no */
	fl_pager_destroy(p);
	ts_free(t);
}

/* The stats struct can grow: each side gets what both know, nothing is written past sz. */
TEST(pager_stats_sized)
{
	size_t ps = t_page_size(), npages = 4, known = sizeof(struct fl_region_stats);
	size_t old = offsetof(struct fl_region_stats, pages_copy);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct ts *t = ts_new(ps, npages, 0);
	struct fl_region_opts o = t_region_opts(t->s, npages * ps);
	union {
		struct fl_region_stats st;
		unsigned char b[sizeof(struct fl_region_stats) + 64];
	} u;
	struct fl_region *r;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	touch(r, 0);
	touch(r, 1);
	/* An older caller whose struct ends after faults: the rest is left alone. */
	memset(&u, 0xa5, sizeof(u));
	u.st.sz = old;
	T_ASSERT_OK(fl_region_stats(r, &u.st));
	T_ASSERT_EQ(u.st.sz, old);
	T_ASSERT_EQ(u.st.faults, 2);
	for (size_t i = old; i < sizeof(u); i++)
		T_ASSERT_EQ(u.b[i], 0xa5);
	/* A newer caller: sz says how much was filled, and nothing past it was written. */
	memset(&u, 0xa5, sizeof(u));
	u.st.sz = sizeof(u);
	T_ASSERT_OK(fl_region_stats(r, &u.st));
	T_ASSERT_EQ(u.st.sz, known);
	T_ASSERT_EQ(u.st.faults, 2);
	T_ASSERT_EQ(u.st.pages_copy, 2);
	for (size_t i = known; i < sizeof(u); i++)
		T_ASSERT_EQ(u.b[i], 0xa5);
	/* sz not set: refused, nothing written. */
	memset(&u, 0xa5, sizeof(u));
	u.st.sz = 0;
	T_ASSERT_ERR(fl_region_stats(r, &u.st), EINVAL);
	for (size_t i = sizeof(size_t); i < sizeof(u); i++)
		T_ASSERT_EQ(u.b[i], 0xa5);
	T_ASSERT_OK(fl_pager_stop(p));
	fl_pager_destroy(p);
	ts_free(t);
}

/* ---------------------------------------------------------------- fork */

struct echild {
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_store *s;
};

static void echild_check(void *arg)
{
	struct echild *x = arg;
	struct fl_region_opts o = t_region_opts(x->s, t_page_size());
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r2 = NULL;

	if (fl_pager_start(x->p) != -ECHILD || fl_pager_stop(x->p) != -ECHILD ||
	    fl_pager_fd(x->p) != -ECHILD || fl_pager_uffd(x->p) != NULL ||
	    fl_pager_dispatch(x->p) != -ECHILD || fl_region_add(x->p, &o, &r2) != -ECHILD ||
	    fl_region_populate(x->r, 0, t_page_size()) != -ECHILD ||
	    fl_region_stats(x->r, &st) != -ECHILD || fl_region_addr(x->r) != NULL ||
	    fl_region_len(x->r) != 0 || fl_region_remove(x->r) != -ECHILD)
		_exit(3);
	/* Leaves the parent's pager alone. */
	fl_pager_destroy(x->p);
	_exit(0);
}

TEST(pager_echild_after_fork)
{
	size_t ps = t_page_size();
	struct ts *t = ts_new(ps, 4, 0);
	struct fl_region_opts o = t_region_opts(t->s, 4 * ps);
	struct echild x = { .s = t->s };
	int status;

	x.p = t_pager_new(FL_PAGER_LOOP, 0, 0);
	T_ASSERT_OK(fl_region_add(x.p, &o, &x.r));
	status = t_run_child(echild_check, &x);
	T_ASSERT(WIFEXITED(status));
	T_ASSERT_EQ(WEXITSTATUS(status), 0);
	/* The parent's pager still works. */
	T_ASSERT_OK(fl_region_populate(x.r, 0, 4 * ps));
	check_pages(fl_region_addr(x.r), 4, t, 0);
	fl_pager_destroy(x.p);
	ts_free(t);
}
