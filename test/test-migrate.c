/* SPDX-License-Identifier: MIT */
/* Post-copy migration: in one process, across two, with pre-copy, faults, requests and errors. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests.h"
#include "certs.h"
#include "migrate/migrate-int.h"

#define MIB (1u << 20)
#define WAIT_MS 20000	/* every wait is bounded: a bug fails the test instead of hanging it */

/* Quiet unless FL_TEST_LOG is set. */
static void test_log(enum fl_log_level level, const char *msg)
{
	if (getenv("FL_TEST_LOG") && (int)level <= atoi(getenv("FL_TEST_LOG")))
		fprintf(stderr, "    log: %s\n", msg);
}

/*
 * Source contents: most pages a pattern, every 7th never touched (no page
 * at all), every 11th written with zeros, so DATA, ZERO and absent pages
 * all travel.
 */
static void fill(uint8_t *p, size_t len, uint64_t seed)
{
	size_t ps = t_page_size();

	for (size_t off = 0; off < len; off += ps) {
		size_t i = off / ps;

		if (i % 7 == 3)
			continue;
		if (i % 11 == 5)
			memset(p + off, 0, ps);
		else
			fl_pattern_fill(p + off, off, ps, seed);
	}
}

/* A fixed spot far from where mmap puts things, so that a second process has it free. */
static __attribute__((unused)) void *map_at(uintptr_t hint, size_t len)
{
	void *p = mmap((void *)hint, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	T_ASSERT(p != MAP_FAILED);
	T_ASSERT(p == (void *)hint);
	return p;
}

struct src_run {
	struct fl_migrate_source *s;
	int r;
};

static void *src_thread(void *arg)
{
	struct src_run *sr = arg;

	sr->r = fl_migrate_source_run(sr->s);
	return NULL;
}

/* A destination listening on loopback, any port. */
static struct fl_migrate_dest *dest_listen(uint32_t flags, const char *key, uint16_t *port)
{
	struct fl_migrate_dest_opts o = {
		.sz = sizeof(o),
		.host = "127.0.0.1",
		.flags = FL_MIGRATE_LISTEN | flags | (key ? 0 : FL_MIGRATE_INSECURE),
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.timeout_ms = t_ms(5000),
		.resume_timeout_ms = t_ms(10000),
	};
	struct fl_migrate_dest *d;

	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	T_ASSERT_OK(fl_migrate_dest_port(d, port));
	return d;
}

static void src_opts(struct fl_migrate_source_opts *o, const struct fl_migrate_region *r,
		     unsigned int n, uint16_t port, const char *key)
{
	*o = (struct fl_migrate_source_opts){
		.sz = sizeof(*o),
		.regions = r,
		.n_regions = n,
		.host = "127.0.0.1",
		.port = port,
		.flags = key ? 0 : FL_MIGRATE_INSECURE,
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.timeout_ms = t_ms(5000),
		.resume_timeout_ms = t_ms(10000),
	};
}

TEST(migrate_in_process)
{
	static const char state[] = "registers and file offsets of the application";
	size_t len0 = 8 * MIB, len1 = 3 * t_page_size();
	struct fl_migrate_region regs[2];
	struct fl_migrate_source_opts so;
	struct fl_migrate_source_stats ss = { .sz = sizeof(ss) };
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	const void *blob;
	size_t blob_len, len;
	unsigned long th;
	uint16_t port;
	void *a;

	fl_set_log_fn(test_log);
	regs[0] = (struct fl_migrate_region){ t_map_anon(len0), len0 };
	regs[1] = (struct fl_migrate_region){ t_map_anon(len1), len1 };
	/*
	 * The destination numbers regions in address order at the source; where the
	 * kernel puts the two mappings differs (6.7 and later align large anonymous
	 * mappings to 2 MiB, leaving a gap above that the small one fits in).
	 */
	if ((uintptr_t)regs[1].addr < (uintptr_t)regs[0].addr) {
		struct fl_migrate_region t = regs[0];

		regs[0] = regs[1];
		regs[1] = t;
	}
	fill(regs[0].addr, regs[0].len, 1);
	fill(regs[1].addr, regs[1].len, 2);

	d = dest_listen(FL_MIGRATE_ANYWHERE, NULL, &port);
	src_opts(&so, regs, 2, port, NULL);
	so.blob = state;
	so.blob_len = sizeof(state);
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	th = t_thread_start(src_thread, &sr);

	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_EQ(blob_len, sizeof(state));
	T_ASSERT(!memcmp(blob, state, sizeof(state)));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_OK(sr.r);

	for (unsigned int i = 0; i < 2; i++) {
		T_ASSERT_OK(fl_migrate_dest_region(d, i, &a, &len));
		T_ASSERT_EQ(len, regs[i].len);
		T_ASSERT(a != regs[i].addr);
		T_ASSERT(!memcmp(a, regs[i].addr, len));
	}
	T_ASSERT_ERR(fl_migrate_dest_region(d, 2, &a, &len), ENOENT);
	T_ASSERT_OK(fl_migrate_source_stats(sr.s, &ss));
	T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
	T_ASSERT_EQ(ss.phase, FL_MIGRATE_DONE);
	T_ASSERT_EQ(ds.phase, FL_MIGRATE_DONE);
	T_ASSERT_EQ(ss.pages_total, (len0 + len1) / t_page_size());
	T_ASSERT_EQ(ds.pages_total, ss.pages_total);
	T_ASSERT_EQ(ds.pages_received, ds.pages_total);
	T_ASSERT_EQ(ss.pages_sent, ss.pages_total);
	T_ASSERT(ss.pages_zero > 0 && ds.pages_zero == ss.pages_zero);
	T_ASSERT_EQ(ds.n_regions, 2);
	T_ASSERT(ss.total_ns > 0 && ds.total_ns > 0 && ds.resume_ns >= ss.stop_ns);
	fl_migrate_source_destroy(sr.s);
	fl_migrate_dest_destroy(d);
	munmap(regs[0].addr, regs[0].len);
	munmap(regs[1].addr, regs[1].len);
}

/* ------------------------------------------------------------ helpers */

/* One side each in this process: a source thread and the destination here. */
struct pair {
	struct fl_migrate_region reg;
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest *d;
	struct src_run sr;
	unsigned long th;
	uint8_t *dst;			/* the destination's copy, after accept */
	uint16_t port;
};

static void pair_start(struct pair *p, size_t len, uint64_t bandwidth,
		       const struct fl__mig_hooks *src_hooks, const struct fl__mig_hooks *dst_hooks)
{
	fl_set_log_fn(test_log);
	memset(p, 0, sizeof(*p));
	p->reg = (struct fl_migrate_region){ t_map_anon(len), len };
	fill(p->reg.addr, len, 7);
	p->d = dest_listen(FL_MIGRATE_ANYWHERE, NULL, &p->port);
	if (dst_hooks)
		fl__migrate_dest_set_hooks(p->d, dst_hooks);
	src_opts(&p->so, &p->reg, 1, p->port, NULL);
	p->so.max_bandwidth = bandwidth;
	T_ASSERT_OK(fl_migrate_source_create(&p->so, &p->sr.s));
	if (src_hooks)
		fl__migrate_source_set_hooks(p->sr.s, src_hooks);
	p->th = t_thread_start(src_thread, &p->sr);
}

static void pair_accept(struct pair *p)
{
	const void *blob;
	size_t blob_len, len;
	void *a;

	T_ASSERT_OK(fl_migrate_dest_accept(p->d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_EQ(blob_len, 0);
	T_ASSERT_OK(fl_migrate_dest_region(p->d, 0, &a, &len));
	T_ASSERT_EQ(len, p->reg.len);
	p->dst = a;
}

static void pair_finish(struct pair *p)
{
	T_ASSERT_OK(fl_migrate_dest_wait(p->d, WAIT_MS));
	t_thread_join(p->th);
	T_ASSERT_OK(p->sr.r);
}

static void pair_destroy(struct pair *p)
{
	fl_migrate_source_destroy(p->sr.s);
	fl_migrate_dest_destroy(p->d);
	munmap(p->reg.addr, p->reg.len);
	munmap(p->dst, p->reg.len);
}

struct toucher {
	const uint8_t *src, *dst;
	size_t ps;
	size_t first, n, stride;	/* pages touched: first + k * stride, k < n */
	bool ok;
};

/* Read pages of the destination (each read may wait for an urgent fetch) and compare. */
static void *touch_thread(void *arg)
{
	struct toucher *t = arg;

	t->ok = true;
	for (size_t k = 0; k < t->n; k++) {
		size_t off = (t->first + k * t->stride) * t->ps;

		if (memcmp(t->dst + off, t->src + off, t->ps))
			t->ok = false;
	}
	return NULL;
}

/* ------------------------------------------------------------ urgent requests */

TEST(migrate_urgent_while_rate_limited)
{
	size_t ps = t_page_size(), len = 32 * MIB, pages = len / ps;
	struct toucher t[2];
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_source_stats ss = { .sz = sizeof(ss) };
	unsigned long th[2];
	struct pair p;

	/* 64 KiB/s: the background alone would need over eight minutes. */
	pair_start(&p, len, 64 << 10, NULL, NULL);
	pair_accept(&p);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct toucher){ p.reg.addr, p.dst, ps, pages / 3 + (size_t)i * 997, 150,
					 27, false };
		th[i] = t_thread_start(touch_thread, &t[i]);
	}
	for (int i = 0; i < 2; i++) {
		t_thread_join(th[i]);
		T_ASSERT(t[i].ok);
	}
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT(ds.requests >= 1);
	T_ASSERT(ds.pages_urgent >= 1);
	T_ASSERT(ds.pages_received < ds.pages_total);
	T_ASSERT(ds.faults >= ds.requests);
	/* Lift the limit to finish. */
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT(!memcmp(p.dst, p.reg.addr, len));
	T_ASSERT_OK(fl_migrate_source_stats(p.sr.s, &ss));
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT_EQ(ss.requests, ds.requests);
	T_ASSERT(ds.blocktime_ns > 0 && ds.n_threads >= 1);
	{
		uint64_t n = 0;

		for (int b = 0; b < FL_MIGRATE_LAT_BUCKETS; b++)
			n += ds.lat_hist[b];
		T_ASSERT_EQ(n, ds.requests);
	}
	pair_destroy(&p);
}

struct efd_wait {
	int efd;
	uint64_t want;
};

/* Two threads fault on one page while the source holds its answers: one request goes out. */
TEST(migrate_requests_deduplicated)
{
	size_t ps = t_page_size(), len = 8 * MIB, page = 1000;
	struct fl__mig_hooks sh = { .hold_urgent_efd = eventfd(0, EFD_CLOEXEC) };
	struct fl__mig_hooks dh = { .fault_efd = eventfd(0, EFD_CLOEXEC) };
	struct toucher t[2];
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	unsigned long th[2];
	uint64_t got = 0, v;
	struct pair p;

	T_ASSERT(sh.hold_urgent_efd > 0 && dh.fault_efd > 0);
	pair_start(&p, len, 4096, &sh, &dh);
	pair_accept(&p);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct toucher){ p.reg.addr, p.dst, ps, page, 1, 1, false };
		th[i] = t_thread_start(touch_thread, &t[i]);
	}
	/* Both faults are read before the source answers. */
	while (got < 2) {
		T_ASSERT_SYS(read(dh.fault_efd, &v, sizeof(v)));
		got += v;
	}
	/*
	 * The destination counts a fault (shared or not) before the hook
	 * fires, and the source still holds its answer, so the page is still
	 * in flight: the second fault is the shared one, counted already.
	 */
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT_EQ(ds.faults, 2);
	T_ASSERT_EQ(ds.faults_shared, 1);
	v = 1;
	T_ASSERT_SYS(write(sh.hold_urgent_efd, &v, sizeof(v)));
	for (int i = 0; i < 2; i++) {
		t_thread_join(th[i]);
		T_ASSERT(t[i].ok);
	}
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT_EQ(ds.faults, 2);
	T_ASSERT_EQ(ds.faults_shared, 1);
	T_ASSERT_EQ(ds.requests, 1);
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT(!memcmp(p.dst, p.reg.addr, len));
	pair_destroy(&p);
	close(sh.hold_urgent_efd);
	close(dh.fault_efd);
}

/*
 * The destination writes pages while they are still on their way; the
 * source then pushes every page once more in the background (a test hook):
 * each late copy finds its page present and is dropped, never written.
 */
TEST(migrate_dest_writes_survive)
{
	size_t ps = t_page_size(), len = 16 * MIB, pages = len / ps;
	struct fl__mig_hooks sh = { .push_all = true };
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct pair p;
	size_t n = 0;

	pair_start(&p, len, 64 << 10, &sh, NULL);
	pair_accept(&p);
	for (size_t pg = 5; pg < pages; pg += 97, n++)
		memset(p.dst + pg * ps + 100, 0xA5, 200);
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT(ds.pages_duplicate >= n);
	for (size_t pg = 0; pg < pages; pg++) {
		const uint8_t *a = p.dst + pg * ps, *b = (uint8_t *)p.reg.addr + pg * ps;

		if (pg >= 5 && (pg - 5) % 97 == 0) {
			T_ASSERT(!memcmp(a, b, 100));
			T_ASSERT(t_all(a + 100, 200, 0xA5));
			T_ASSERT(!memcmp(a + 300, b + 300, ps - 300));
		} else {
			T_ASSERT(!memcmp(a, b, ps));
		}
	}
	pair_destroy(&p);
}

/* ------------------------------------------------------------ the program's memory calls */

/*
 * The program forks during post-copy (a background save, say): the child
 * reads the source's bytes, also for pages that had not arrived at the
 * fork, and the migration completes only once it holds every page: after
 * that, with the source gone, it still reads all of it.
 */
TEST(migrate_postcopy_fork_child)
{
	size_t ps = t_page_size(), len = 8 * MIB, pages = len / ps;
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	int go[2], status;
	struct pair p;
	pid_t pid;

	pair_start(&p, len, 64 << 10, NULL, NULL);
	pair_accept(&p);
	T_ASSERT(!memcmp(p.dst + 3 * ps, (uint8_t *)p.reg.addr + 3 * ps, ps));
	T_ASSERT_SYS(pipe2(go, O_CLOEXEC));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		const uint8_t *src = p.reg.addr;
		char c;

		close(go[1]);
		/* Pages absent at the fork, fetched for the child now. */
		for (size_t pg = pages / 2; pg < pages; pg += 97)
			if (memcmp(p.dst + pg * ps, src + pg * ps, ps))
				_exit(3);
		/* After the parent's migration completed: every page. */
		if (read(go[0], &c, 1) != 1)
			_exit(4);
		_exit(memcmp(p.dst, src, len) ? 5 : 0);
	}
	close(go[0]);
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT_EQ(write(go[1], "c", 1), 1);
	T_ASSERT_SYS(waitpid(pid, &status, 0));
	T_ASSERT(WIFEXITED(status));
	T_ASSERT_EQ(WEXITSTATUS(status), 0);
	T_ASSERT(!memcmp(p.dst, p.reg.addr, len));
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT_EQ(ds.pages_received, ds.pages_total);
	close(go[1]);
	pair_destroy(&p);
}

/*
 * The program forks again and again during post-copy, each child reading
 * pages not yet arrived and exiting. glibc's fork() holds the malloc locks
 * until its FORK event is read: a handler that built the previous child's
 * pager while holding the read token blocked in malloc, nobody read the
 * next fork's event, and fork() hung for good (the runner's timeout turns
 * that into a FAIL).
 */
TEST(migrate_postcopy_fork_repeated)
{
	size_t ps = t_page_size(), len = 8 * MIB, pages = len / ps;
	const uint8_t *src;
	struct pair p;

	pair_start(&p, len, 64 << 10, NULL, NULL);
	pair_accept(&p);
	src = p.reg.addr;
	for (int i = 0; i < 40; i++) {
		int status;
		pid_t pid = fork();

		T_ASSERT_SYS(pid);
		if (pid == 0) {
			/* Most exit at once: the next fork() comes while this child is set up. */
			if (i % 8)
				_exit(0);
			for (size_t pg = pages / 2 + (size_t)i; pg < pages; pg += 331)
				if (memcmp(p.dst + pg * ps, src + pg * ps, ps))
					_exit(3);
			_exit(0);
		}
		T_ASSERT_SYS(waitpid(pid, &status, 0));
		T_ASSERT(WIFEXITED(status));
		T_ASSERT_EQ(WEXITSTATUS(status), 0);
	}
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT(!memcmp(p.dst, p.reg.addr, len));
	pair_destroy(&p);
}

/*
 * Without the fork event (a process lacking CAP_SYS_PTRACE) a child cannot
 * be served: the regions are not inherited, so a child touching one dies
 * by SIGSEGV instead of reading zeros where the source has data.
 */
TEST(migrate_postcopy_fork_without_event)
{
	size_t ps = t_page_size(), len = 2 * MIB;
	struct fl_features f, old;
	int status;
	struct pair p;
	pid_t pid;

	fl_probe(&old);
	f = old;
	f.features &= ~(uint64_t)FL_FEAT_EVENT_FORK;
	f.denied = FL_FEAT_EVENT_FORK;
	fl__probe_set_for_test(&f);
	pair_start(&p, len, 64 << 10, NULL, NULL);
	pair_accept(&p);
	fl__probe_set_for_test(&old);
	T_ASSERT(!memcmp(p.dst + 3 * ps, (uint8_t *)p.reg.addr + 3 * ps, ps));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		/* A page present at the fork, and one that had not come. */
		_exit(p.dst[3 * ps] + p.dst[len - ps] == 0 ? 3 : 4);
	}
	T_ASSERT_SYS(waitpid(pid, &status, 0));
	T_ASSERT(WIFSIGNALED(status));
	T_ASSERT_EQ(WTERMSIG(status), SIGSEGV);
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT(!memcmp(p.dst, p.reg.addr, len));
	pair_destroy(&p);
}

/* The program moves a region with mremap during post-copy: it is served at its new address. */
TEST(migrate_postcopy_mremap)
{
	size_t ps = t_page_size(), len = 8 * MIB, pages = len / ps;
	const uint8_t *src;
	struct pair p;
	uint8_t *to;

	pair_start(&p, len, 64 << 10, NULL, NULL);
	pair_accept(&p);
	src = p.reg.addr;
	T_ASSERT(!memcmp(p.dst + 5 * ps, src + 5 * ps, ps));
	to = t_map_anon(len);
	T_ASSERT(mremap(p.dst, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to) == to);
	p.dst = to;
	/* Moved while present, and fetched at the new address. */
	T_ASSERT(!memcmp(to + 5 * ps, src + 5 * ps, ps));
	for (size_t pg = pages / 2; pg < pages; pg += 61)
		T_ASSERT(!memcmp(to + pg * ps, src + pg * ps, ps));
	/*
	 * The destination tells where the region is now: the pager applies the
	 * REMAP event before it serves the faults read with or after it, so
	 * once a page at the new address was fetched, the address is known.
	 */
	{
		void *at;
		size_t l;

		T_ASSERT_OK(fl_migrate_dest_region(p.d, 0, &at, &l));
		T_ASSERT(at == to);
		T_ASSERT_EQ(l, len);
	}
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT(!memcmp(to, src, len));
	pair_destroy(&p);
}

/*
 * The program discards a page before it arrived: it reads zeros, and the
 * late background copy never brings the source's bytes back.
 */
TEST(migrate_postcopy_discard)
{
	size_t ps = t_page_size(), len = 8 * MIB, pages = len / ps, pg = pages - 5;
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	const uint8_t *src;
	struct pair p;

	pair_start(&p, len, 64 << 10, NULL, NULL);
	pair_accept(&p);
	src = p.reg.addr;
	T_ASSERT(!t_all(src + pg * ps, ps, 0));
	T_ASSERT_SYS(madvise(p.dst + pg * ps, ps, MADV_DONTNEED));
	T_ASSERT(t_all(p.dst + pg * ps, ps, 0));
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(p.sr.s, 0));
	pair_finish(&p);
	T_ASSERT(t_all(p.dst + pg * ps, ps, 0));
	T_ASSERT(!memcmp(p.dst, src, pg * ps));
	T_ASSERT(!memcmp(p.dst + (pg + 1) * ps, src + (pg + 1) * ps, (pages - pg - 1) * ps));
	T_ASSERT_OK(fl_migrate_dest_stats(p.d, &ds));
	T_ASSERT_EQ(ds.pages_received, ds.pages_total);
	pair_destroy(&p);
}

/* ------------------------------------------------------------ refusals */

/* Both sides in one process at the same addresses: the range is taken, and both say so. */
TEST(migrate_range_taken)
{
	size_t len = 2 * MIB;
	struct fl_migrate_region reg = { t_map_anon(len), len };
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	const void *blob;
	size_t blob_len;
	unsigned long th;
	uint16_t port;

	fl_set_log_fn(test_log);
	d = dest_listen(0, NULL, &port);
	src_opts(&so, &reg, 1, port, NULL);
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_ERR(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len), EEXIST);
	T_ASSERT(strstr(fl_migrate_dest_error(d), "already mapped"));
	t_thread_join(th);
	T_ASSERT_ERR(sr.r, EINVAL);
	T_ASSERT(strstr(fl_migrate_source_error(sr.s), "already mapped"));
	fl_migrate_source_destroy(sr.s);
	fl_migrate_dest_destroy(d);
	munmap(reg.addr, len);
}

/* ------------------------------------------------------------ hostile peers */

/* What the library logged, for tests that check a refusal was logged (and why). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[16384];

static void capture_log(enum fl_log_level level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	if (strlen(log_buf) + strlen(msg) + 2 < sizeof(log_buf)) {
		strcat(log_buf, msg);
		strcat(log_buf, "\n");
	}
	pthread_mutex_unlock(&log_lock);
	test_log(level, msg);
}

static void log_start(void)
{
	pthread_mutex_lock(&log_lock);
	log_buf[0] = 0;
	pthread_mutex_unlock(&log_lock);
	fl_set_log_fn(capture_log);
}

/* How many logged lines contain @a and, if given, @b. */
static int log_count(const char *a, const char *b)
{
	int n = 0;

	pthread_mutex_lock(&log_lock);
	for (const char *l = log_buf; *l;) {
		const char *e = strchr(l, '\n');
		char line[1024];
		size_t k = (size_t)(e - l) < sizeof(line) - 1 ? (size_t)(e - l) : sizeof(line) - 1;

		memcpy(line, l, k);
		line[k] = 0;
		if (strstr(line, a) && (!b || strstr(line, b)))
			n++;
		l = e + 1;
	}
	pthread_mutex_unlock(&log_lock);
	return n;
}

#define KEY_A "the right key, 32 bytes of it.."
#define KEY_B "the wrong key, 32 bytes of it.."

/* Bad sources, one after the other, then the right one: run on a thread of their own. */
struct suitors {
	struct fl_migrate_region reg;
	uint16_t port;
	const char *bad_key;		/* the bad source's key, or NULL */
	uint8_t vmin, vmax;		/* its wire versions, 0: ours */
	int bad_r;			/* what its run returned */
	char bad_err[MIG_ERR_LEN];
	struct fl_migrate_source *good;
	int good_r;
};

static void *suitors_thread(void *arg)
{
	struct suitors *su = arg;
	struct fl__mig_hooks sh = { .version_min = su->vmin, .version_max = su->vmax };
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;

	src_opts(&so, &su->reg, 1, su->port, su->bad_key);
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	fl__migrate_source_set_hooks(s, &sh);
	su->bad_r = fl_migrate_source_run(s);
	snprintf(su->bad_err, sizeof(su->bad_err), "%s", fl_migrate_source_error(s));
	fl_migrate_source_destroy(s);

	src_opts(&so, &su->reg, 1, su->port, KEY_A);
	T_ASSERT_OK(fl_migrate_source_create(&so, &su->good));
	su->good_r = fl_migrate_source_run(su->good);
	return NULL;
}

/*
 * A source the destination must refuse (@err on the source's side, each
 * side naming the cause, @what): the destination closes that connection,
 * logs why, keeps waiting, and the right source that comes next migrates.
 */
static void refused(const char *bad_key, uint8_t vmin, uint8_t vmax, int err, const char *what)
{
	size_t len = MIB;
	struct suitors su = { .reg = { t_map_anon(len), len }, .bad_key = bad_key,
			      .vmin = vmin, .vmax = vmax };
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	void *a;

	log_start();
	fill(su.reg.addr, len, 3);
	d = dest_listen(FL_MIGRATE_ANYWHERE, KEY_A, &su.port);
	th = t_thread_start(suitors_thread, &su);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_ERR(su.bad_r, err);
	if (!strstr(su.bad_err, what))
		t_fail(__FILE__, __LINE__, "source: '%s' lacks '%s'", su.bad_err, what);
	if (log_count("destination: refused the connection", what) != 1)
		t_fail(__FILE__, __LINE__, "the destination's log lacks one refusal naming '%s':"
		       "\n%s", what, log_buf);
	T_ASSERT_OK(su.good_r);
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a, &dlen));
	T_ASSERT(!memcmp(a, su.reg.addr, len));
	fl_migrate_source_destroy(su.good);
	fl_migrate_dest_destroy(d);
	munmap(su.reg.addr, len);
	munmap(a, len);
	fl_set_log_fn(test_log);
}

TEST(migrate_wrong_key)
{
	refused(KEY_B, 0, 0, EACCES, "same key");
	/* A source in plain TCP is told, in the wire protocol, that TLS is required. */
	refused(NULL, 0, 0, EACCES, "requires TLS");
}

TEST(migrate_version_mismatch)
{
	refused(KEY_A, 2, 3, EPROTONOSUPPORT, "no common wire version");
}

/* A key shorter than 16 bytes is refused on both sides, and named. */
TEST(migrate_short_key)
{
	struct fl_migrate_region reg = { t_map_anon(MIB), MIB };
	struct fl_migrate_dest_opts o = { .sz = sizeof(o), .host = "127.0.0.1",
					  .flags = FL_MIGRATE_LISTEN, .key = "6bytes",
					  .key_len = 6 };
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;
	struct fl_migrate_dest *d;

	log_start();
	T_ASSERT_ERR(fl_migrate_dest_create(&o, &d), EINVAL);
	T_ASSERT_EQ(log_count("has 6 bytes; it needs 16", NULL), 1);
	src_opts(&so, &reg, 1, 7000, "6bytes");
	T_ASSERT_ERR(fl_migrate_source_create(&so, &s), EINVAL);
	T_ASSERT_EQ(log_count("has 6 bytes; it needs 16", NULL), 2);
	o.key = "sixteen bytes..!";
	o.key_len = 16;
	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	fl_migrate_dest_destroy(d);
	munmap(reg.addr, MIB);
	fl_set_log_fn(test_log);
}

/*
 * Without a key or certificates the connections would be plain TCP: refused
 * on either side, listening or connecting, loopback or not, unless
 * FL_MIGRATE_INSECURE asks for it. A key and certificates together, and
 * certificates missing what the side needs, are refused too, and named.
 */
TEST(migrate_plain_needs_insecure)
{
	struct fl_migrate_region reg = { t_map_anon(MIB), MIB };
	struct fl_migrate_dest_opts o = { .sz = sizeof(o), .host = "127.0.0.1",
					  .flags = FL_MIGRATE_LISTEN };
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;
	struct fl_migrate_dest *d;

	log_start();
	T_ASSERT_ERR(fl_migrate_dest_create(&o, &d), EINVAL);
	T_ASSERT_EQ(log_count("no shared key and no certificates", "FL_MIGRATE_INSECURE"), 1);
	src_opts(&so, &reg, 1, 7000, NULL);
	so.flags = 0;
	T_ASSERT_ERR(fl_migrate_source_create(&so, &s), EINVAL);
	so.flags = FL_MIGRATE_LISTEN;
	so.host = NULL;
	T_ASSERT_ERR(fl_migrate_source_create(&so, &s), EINVAL);
	T_ASSERT_EQ(log_count("no shared key and no certificates", "FL_MIGRATE_INSECURE"), 3);
	/* Said so: allowed. */
	o.flags |= FL_MIGRATE_INSECURE;
	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	fl_migrate_dest_destroy(d);
	so.flags |= FL_MIGRATE_INSECURE;
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	fl_migrate_source_destroy(s);
	/* A key: allowed. */
	o.flags = FL_MIGRATE_LISTEN;
	o.key = KEY_A;
	o.key_len = strlen(KEY_A);
	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	fl_migrate_dest_destroy(d);
	/* A key and certificates; a listener without its certificate; a client without a CA. */
	o.tls_ca_file = "/nonexistent/ca.crt";
	T_ASSERT_ERR(fl_migrate_dest_create(&o, &d), EINVAL);
	T_ASSERT_EQ(log_count("a shared key or certificates, not both", NULL), 1);
	o.key = NULL;
	o.key_len = 0;
	T_ASSERT_ERR(fl_migrate_dest_create(&o, &d), EINVAL);
	T_ASSERT_EQ(log_count("a listening side shows a certificate", NULL), 1);
	src_opts(&so, &reg, 1, 7000, NULL);
	so.flags = 0;
	so.tls_cert_file = "/nonexistent/c.crt";
	so.tls_key_file = "/nonexistent/c.key";
	T_ASSERT_ERR(fl_migrate_source_create(&so, &s), EINVAL);
	T_ASSERT_EQ(log_count("give tls_ca_file", NULL), 1);
	/* Files that are not there: their name and why. */
	so.tls_ca_file = "/nonexistent/ca.crt";
	T_ASSERT_ERR(fl_migrate_source_create(&so, &s), ENOENT);
	T_ASSERT_EQ(log_count("/nonexistent/ca.crt", "No such file"), 1);
	munmap(reg.addr, MIB);
	fl_set_log_fn(test_log);
}

/* A client of @port that sends @n bytes of @p (none: it stays silent). */
static int stranger(uint16_t port, const void *p, size_t n)
{
	int fd;

	T_ASSERT_OK(fl__sock_connect("127.0.0.1", port, NULL, t_ms(5000), &fd));
	if (n)
		T_ASSERT_OK(fl__sock_send_all(fd, p, n, t_ms(5000)));
	return fd;
}

/* Whether the peer closed @fd within WAIT_MS (what it sent first is read and dropped). */
static bool closed_by_peer(int fd)
{
	uint8_t buf[4096];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, WAIT_MS) <= 0)
			return false;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			return true;
	}
}

/* The first record header of a TLS handshake, and a hang-up: half a handshake. */
static int half_handshake(uint16_t port)
{
	static const uint8_t hdr[5] = { 0x16, 0x03, 0x01, 0x01, 0x00 };
	int fd = stranger(port, hdr, sizeof(hdr));

	shutdown(fd, SHUT_WR);
	return fd;
}

#define FLOOD 40

struct crowd {
	struct fl_migrate_region reg;
	uint16_t port;
	int fds[3];			/* silent, garbage, half a TLS handshake */
	int flood[FLOOD];		/* more silent ones than the listener keeps */
	int wrong_r, keyless_r;
	struct fl_migrate_source *good;
	int good_r;
};

static void *crowd_thread(void *arg)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct crowd *c = arg;
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;

	for (int i = 0; i < FLOOD; i++)
		c->flood[i] = stranger(c->port, NULL, 0);
	c->fds[0] = stranger(c->port, NULL, 0);
	c->fds[1] = stranger(c->port, http, sizeof(http) - 1);
	c->fds[2] = half_handshake(c->port);
	src_opts(&so, &c->reg, 1, c->port, KEY_B);
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	c->wrong_r = fl_migrate_source_run(s);
	fl_migrate_source_destroy(s);
	src_opts(&so, &c->reg, 1, c->port, NULL);
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	c->keyless_r = fl_migrate_source_run(s);
	fl_migrate_source_destroy(s);

	src_opts(&so, &c->reg, 1, c->port, KEY_A);
	T_ASSERT_OK(fl_migrate_source_create(&so, &c->good));
	c->good_r = fl_migrate_source_run(c->good);
	return NULL;
}

/*
 * Before the session: a flood of silent clients, garbage, half a TLS
 * handshake, a wrong key and no key reach the destination's port, then the
 * real source. Each bad connection is closed and logged; the real source
 * migrates.
 */
TEST(migrate_survives_strangers)
{
	size_t len = 4 * MIB;
	struct crowd c = { .reg = { t_map_anon(len), len } };
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	void *a;

	log_start();
	fill(c.reg.addr, len, 5);
	d = dest_listen(FL_MIGRATE_ANYWHERE, KEY_A, &c.port);
	th = t_thread_start(crowd_thread, &c);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_OK(c.good_r);
	T_ASSERT_ERR(c.wrong_r, EACCES);
	T_ASSERT_ERR(c.keyless_r, EACCES);
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a, &dlen));
	T_ASSERT(!memcmp(a, c.reg.addr, len));
	/* Every stranger was shown the door. */
	for (int i = 0; i < 3; i++) {
		T_ASSERT(closed_by_peer(c.fds[i]));
		close(c.fds[i]);
	}
	for (int i = 0; i < FLOOD; i++) {
		T_ASSERT(closed_by_peer(c.flood[i]));
		close(c.flood[i]);
	}
	if (log_count("destination: refused the connection", "http request") != 1 ||
	    log_count("destination: refused the connection", "same key") != 1 ||
	    log_count("destination: refused the connection", "requires TLS") != 1 ||
	    log_count("destination: refused the connection", "closed the connection") != 1 ||
	    log_count("destination: closed the connection", NULL) != FLOOD + 1)
		t_fail(__FILE__, __LINE__, "the refusals are not all logged (%d %d %d %d %d):\n%s",
		       log_count("destination: refused the connection", "http request"),
		       log_count("destination: refused the connection", "same key"),
		       log_count("destination: refused the connection", "requires TLS"),
		       log_count("destination: refused the connection", "closed the connection"),
		       log_count("destination: closed the connection", NULL), log_buf);
	fl_migrate_source_destroy(c.good);
	fl_migrate_dest_destroy(d);
	munmap(c.reg.addr, len);
	munmap(a, len);
	fl_set_log_fn(test_log);
}

/* More than the listener runs at once (16): the oldest make room for the rest. */
#define STALLED 20

struct stalled {
	struct fl_migrate_region reg;
	uint16_t port;
	int fds[STALLED];		/* half a TLS hello each, then nothing: still open */
	struct fl_migrate_source *good;
	int good_r;
};

static void *stalled_thread(void *arg)
{
	static const uint8_t hdr[5] = { 0x16, 0x03, 0x01, 0x01, 0x00 };
	struct stalled *c = arg;
	struct fl_migrate_source_opts so;

	for (int i = 0; i < STALLED; i++)
		c->fds[i] = stranger(c->port, hdr, sizeof(hdr));
	src_opts(&so, &c->reg, 1, c->port, KEY_A);
	T_ASSERT_OK(fl_migrate_source_create(&so, &c->good));
	c->good_r = fl_migrate_source_run(c->good);
	return NULL;
}

/*
 * Clients that send half a TLS hello and stall (the connection stays open),
 * more than the listener runs handshakes for at once, come before the real
 * source. The destination waits far longer for a stalled handshake
 * (timeout_ms) than the test waits for the session: the
 * handshakes run beside the accept loop, so the real source is heard at
 * once and migrates; the stalled ones are closed when the session is
 * established, not when their time runs out.
 */
TEST(migrate_stalled_hello_delays_nobody)
{
	size_t len = 4 * MIB;
	struct stalled c = { .reg = { t_map_anon(len), len } };
	struct fl_migrate_dest_opts o = {
		.sz = sizeof(o), .host = "127.0.0.1",
		.flags = FL_MIGRATE_LISTEN | FL_MIGRATE_ANYWHERE,
		.key = KEY_A, .key_len = strlen(KEY_A),
		.timeout_ms = 3 * WAIT_MS, .resume_timeout_ms = t_ms(10000),
	};
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	void *a;
	int r;

	log_start();
	fill(c.reg.addr, len, 9);
	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	T_ASSERT_OK(fl_migrate_dest_port(d, &c.port));
	th = t_thread_start(stalled_thread, &c);
	r = fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len);
	if (r)
		t_fail(__FILE__, __LINE__, "accept: %s (the stalled handshakes held up the real "
		       "source)", strerror(-r));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_OK(c.good_r);
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a, &dlen));
	T_ASSERT(!memcmp(a, c.reg.addr, len));
	/* Closed because the session began: WAIT_MS is a third of their timeout. */
	for (int i = 0; i < STALLED; i++) {
		T_ASSERT(closed_by_peer(c.fds[i]));
		close(c.fds[i]);
	}
	/* Each once, logged: to make room, or when the session was established. */
	if (log_count("destination: closed the connection", NULL) != STALLED)
		t_fail(__FILE__, __LINE__, "%d closed connections logged, not %d:\n%s",
		       log_count("destination: closed the connection", NULL), STALLED, log_buf);
	fl_migrate_source_destroy(c.good);
	fl_migrate_dest_destroy(d);
	munmap(c.reg.addr, len);
	munmap(a, len);
	fl_set_log_fn(test_log);
}

/* ------------------------------------------------------------ pre-copy */

/* The source application: a thread that keeps writing its memory until stopped. */
struct writer {
	uint8_t *p;
	size_t len, ps;
	uint64_t rng;
	uint64_t writes;
	_Atomic bool stop;
	unsigned long th;
	uint64_t blob[2];
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	size_t pages = w->len / w->ps;

	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		/* A hot quarter and the rest, so that rounds find fewer pages dirty each time. */
		for (int k = 0; k < 64; k++) {
			uint64_t pg, off;

			w->rng ^= w->rng << 13;
			w->rng ^= w->rng >> 7;
			w->rng ^= w->rng << 17;
			pg = w->rng % 8 ? w->rng % (pages / 4) : w->rng % pages;
			off = (w->rng >> 20) % (w->ps / 8) * 8;
			memcpy(w->p + pg * w->ps + off, &w->rng, 8);
			w->writes++;
		}
	}
	return NULL;
}

static int writer_stop(void *userdata, const void **ret_blob, size_t *ret_len)
{
	struct writer *w = userdata;

	atomic_store(&w->stop, true);
	t_thread_join(w->th);
	w->blob[0] = w->writes;
	w->blob[1] = w->rng;
	*ret_blob = w->blob;
	*ret_len = sizeof(w->blob);
	return 0;
}

static void precopy_run(uint32_t flags)
{
	size_t len = 32 * MIB, ps = t_page_size(), small = 37 * ps;
	uint8_t *base = t_map_anon(small + len);
	/*
	 * Two adjacent regions: 37 pages, then the one the program writes, whose
	 * pages are thus not 64-aligned in the flat page numbering of the bitmaps.
	 */
	struct fl_migrate_region regs[2] = { { base, small }, { base + small, len } };
	struct writer w = { .p = base + small, .len = len, .ps = ps,
			    .rng = 88172645463325252ull };
	struct fl_migrate_source_stats ss = { .sz = sizeof(ss) };
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	uint16_t port;
	void *a, *a0;

	fl_set_log_fn(test_log);
	fill(base, small + len, 3);
	w.th = t_thread_start(writer_thread, &w);
	d = dest_listen(FL_MIGRATE_ANYWHERE, NULL, &port);
	src_opts(&so, regs, 2, port, NULL);
	so.flags |= flags;
	so.precopy_rounds = 4;
	so.stop = writer_stop;
	so.userdata = &w;
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_EQ(blob_len, sizeof(w.blob));
	T_ASSERT(!memcmp(blob, w.blob, sizeof(w.blob)));
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a0, &dlen));
	T_ASSERT_EQ(dlen, small);
	T_ASSERT_OK(fl_migrate_dest_region(d, 1, &a, &dlen));
	T_ASSERT_EQ(dlen, len);
	if (flags & FL_MIGRATE_STOP_AND_COPY) {
		/* Everything came before the state: nothing is left to fault on. */
		T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
		T_ASSERT_EQ(ds.pages_received, ds.pages_total);
	}
	T_ASSERT(!memcmp(a, base + small, len));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_OK(sr.r);
	T_ASSERT(!memcmp(a, base + small, len));
	T_ASSERT(!memcmp(a0, base, small));
	T_ASSERT_OK(fl_migrate_source_stats(sr.s, &ss));
	T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
	T_ASSERT(ss.precopy_rounds >= 1 && ss.precopy_rounds <= 4);
	T_ASSERT(ss.precopy_pages >= ss.pages_total);
	T_ASSERT(ss.dirty_pages > 0);
	/* The comparison after accept faulted on the pages dropped at the switch-over, if any. */
	if (flags & FL_MIGRATE_STOP_AND_COPY)
		T_ASSERT_EQ(ds.faults, 0);
	else
		T_ASSERT(ds.faults <= ds.pages_discarded);
	fl_migrate_source_destroy(sr.s);
	fl_migrate_dest_destroy(d);
	munmap(base, small + len);
	munmap(a, len);
	munmap(a0, small);
}

/*
 * Pre-copy needs dirty tracking (WP_ASYNC and PAGEMAP_SCAN, 6.7): without
 * them the source refuses at creation with -EOPNOTSUPP and says why, before
 * anything is sent; with them it is created.
 */
static _Atomic int precopy_refusal_logged;

static void precopy_log(enum fl_log_level level, const char *msg)
{
	if (level == FL_LOG_ERROR && strstr(msg, "pre-copy needs userfaultfd WP_ASYNC and "
						"PAGEMAP_SCAN (Linux 6.7)"))
		atomic_store(&precopy_refusal_logged, 1);
	test_log(level, msg);
}

TEST(migrate_precopy_needs_dirty_tracking)
{
	uint8_t *mem = t_map_anon(16 * t_page_size());
	struct fl_migrate_region reg = { mem, 16 * t_page_size() };
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s = NULL;
	struct writer w = { .p = mem };
	int e;

	fl_set_log_fn(precopy_log);
	src_opts(&so, &reg, 1, 1, NULL);
	so.precopy_rounds = 2;
	so.stop = writer_stop;
	so.userdata = &w;
	e = fl_migrate_source_create(&so, &s);
	if (t_have(FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN)) {
		T_ASSERT_OK(e);
		fl_migrate_source_destroy(s);
	} else {
		T_ASSERT_EQ(e, -EOPNOTSUPP);
		T_ASSERT(s == NULL);
		T_ASSERT(atomic_load(&precopy_refusal_logged));
	}
	fl_set_log_fn(NULL);
}

TEST(migrate_precopy_hybrid)
{
	precopy_run(0);
}

TEST(migrate_precopy_stop_and_copy)
{
	precopy_run(FL_MIGRATE_STOP_AND_COPY);
}

/* ------------------------------------------------------------ two processes */

#define TWO_PROC_ADDR 0x5f1200000000ull

static ssize_t write_all(int fd, const void *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = write(fd, (const uint8_t *)p + done, n - done);

		if (k <= 0)
			return -1;
		done += (size_t)k;
	}
	return (ssize_t)done;
}

static ssize_t read_all(int fd, void *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = read(fd, (uint8_t *)p + done, n - done);

		if (k <= 0)
			return -1;
		done += (size_t)k;
	}
	return (ssize_t)done;
}

/* The destination process: receive at the same address, touch some pages, send everything back. */
static void dest_child(int out)
{
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len, len;
	uint64_t sum = 0;
	uint16_t port;
	void *a;

	d = dest_listen(0, "two processes, one key", &port);
	if (write_all(out, &port, sizeof(port)) < 0)
		_exit(3);
	if (fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len) < 0 || blob_len != 5 ||
	    memcmp(blob, "state", 5))
		_exit(4);
	if (fl_migrate_dest_region(d, 0, &a, &len) < 0 || a != (void *)TWO_PROC_ADDR)
		_exit(5);
	/* The program runs: these reads fetch pages urgently from the other process. */
	for (size_t off = len / 2; off < len; off += 40 * t_page_size())
		sum += ((volatile uint8_t *)a)[off];
	if (fl_migrate_dest_wait(d, WAIT_MS) < 0)
		_exit(6);
	if (write_all(out, a, len) < 0)
		_exit(7);
	fl_migrate_dest_destroy(d);
	_exit(sum == ~0ull ? 8 : 0);
}

TEST(migrate_two_processes)
{
	size_t len = 16 * MIB;
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;
	struct fl_migrate_region reg;
	uint8_t *back = malloc(len);
	int pfd[2], st;
	uint16_t port;
	pid_t pid;

	fl_set_log_fn(test_log);
	T_ASSERT(back);
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	/* The child is forked before the region exists, so the address is free there. */
	pid = fork();
	T_ASSERT_SYS(pid);
	if (!pid) {
		close(pfd[0]);
		dest_child(pfd[1]);
	}
	close(pfd[1]);
	T_ASSERT_EQ(read_all(pfd[0], &port, sizeof(port)), sizeof(port));
	reg = (struct fl_migrate_region){ map_at(TWO_PROC_ADDR, len), len };
	fill(reg.addr, len, 11);
	src_opts(&so, &reg, 1, port, "two processes, one key");
	so.blob = "state";
	so.blob_len = 5;
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	T_ASSERT_OK(fl_migrate_source_run(s));
	T_ASSERT_EQ(read_all(pfd[0], back, len), (ssize_t)len);
	T_ASSERT(!memcmp(back, reg.addr, len));
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	T_ASSERT(WIFEXITED(st));
	T_ASSERT_EQ(WEXITSTATUS(st), 0);
	fl_migrate_source_destroy(s);
	munmap(reg.addr, len);
	close(pfd[0]);
	free(back);
}

/* ------------------------------------------------------------ broken connections */

/*
 * A loopback TCP proxy that relays both ways and breaks the connection it
 * is relaying (with a reset, as a failing network does) each time a
 * random budget of relayed bytes runs out, @cuts times in all.
 */
struct proxy {
	int lfd, stop_efd;
	uint16_t port, target;
	pthread_mutex_t lock;
	uint64_t rng, budget, max_budget;
	int cuts_left, cuts;
	unsigned long accept_th;
	unsigned long relay_th[128];
	int nrelay;
	struct relay_pair *pairs[64];
	int npairs;
	/* A man in the middle: flip one bit of byte flip_at of the first connection's side flip_from. */
	uint64_t flip_at, flip_seen;
	int flip_from;
	bool flipped;
};

struct relay_pair {
	struct proxy *px;
	int fd[2];
	_Atomic int alive;
};

struct relay {
	struct relay_pair *rp;
	int from;			/* index into rp->fd */
};

static uint64_t proxy_draw(struct proxy *px)
{
	px->rng ^= px->rng << 13;
	px->rng ^= px->rng >> 7;
	px->rng ^= px->rng << 17;
	return 512 + px->rng % px->max_budget;
}

static void cut(struct relay_pair *rp)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	/* A reset, not a clean end: the peers must not take it for a finished stream. */
	for (int i = 0; i < 2; i++) {
		setsockopt(rp->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		shutdown(rp->fd[i], SHUT_RDWR);
	}
}

static void *relay_thread(void *arg)
{
	struct relay *r = arg;
	struct relay_pair *rp = r->rp;
	struct proxy *px = rp->px;
	int from = rp->fd[r->from], to = rp->fd[1 - r->from];
	uint8_t *buf = malloc(1 << 16);

	for (;;) {
		ssize_t n = buf ? read(from, buf, 1 << 16) : -1;
		bool now = false;

		if (n <= 0) {
			shutdown(to, SHUT_WR);
			break;
		}
		pthread_mutex_lock(&px->lock);
		if (px->flip_at && !px->flipped && rp == px->pairs[0] && r->from == px->flip_from) {
			if (px->flip_at < px->flip_seen + (uint64_t)n) {
				buf[px->flip_at - px->flip_seen] ^= 0x10;
				px->flipped = true;
			}
			px->flip_seen += (uint64_t)n;
		}
		if (px->cuts_left > 0) {
			if ((uint64_t)n >= px->budget) {
				n = (ssize_t)px->budget;
				now = true;
				px->cuts_left--;
				px->cuts++;
				px->budget = proxy_draw(px);
			} else {
				px->budget -= (uint64_t)n;
			}
		}
		pthread_mutex_unlock(&px->lock);
		if (n && fl__sock_send_all(to, buf, (size_t)n, t_ms(5000)) < 0)
			break;
		if (now) {
			cut(rp);
			break;
		}
	}
	free(buf);
	free(r);
	return NULL;
}

static void *proxy_accept_thread(void *arg)
{
	struct proxy *px = arg;
	struct pollfd p[2] = { { .fd = px->lfd, .events = POLLIN },
			       { .fd = px->stop_efd, .events = POLLIN } };

	for (;;) {
		struct relay_pair *rp;
		int a, b;

		if (poll(p, 2, -1) < 0 || p[1].revents)
			break;
		if (fl__sock_accept(px->lfd, NULL, 0, &a) < 0)
			continue;
		if (fl__sock_connect("127.0.0.1", px->target, NULL, 5000, &b) < 0) {
			close(a);
			continue;
		}
		rp = calloc(1, sizeof(*rp));
		T_ASSERT(rp && px->npairs < 64 && px->nrelay + 2 <= 128);
		*rp = (struct relay_pair){ .px = px, .fd = { a, b } };
		pthread_mutex_lock(&px->lock);
		px->pairs[px->npairs++] = rp;
		pthread_mutex_unlock(&px->lock);
		for (int i = 0; i < 2; i++) {
			struct relay *r = malloc(sizeof(*r));

			T_ASSERT(r);
			*r = (struct relay){ .rp = rp, .from = i };
			px->relay_th[px->nrelay++] = t_thread_start(relay_thread, r);
		}
	}
	return NULL;
}

static void proxy_start(struct proxy *px, uint16_t target, int cuts, uint64_t max_budget,
			uint64_t seed)
{
	*px = (struct proxy){ .target = target, .cuts_left = cuts, .max_budget = max_budget,
			      .rng = seed | 1 };
	pthread_mutex_init(&px->lock, NULL);
	px->budget = proxy_draw(px);
	T_ASSERT_OK(fl__sock_listen("127.0.0.1", 0, NULL, &px->lfd));
	T_ASSERT_OK(fl__sock_local_port(px->lfd, &px->port));
	px->stop_efd = eventfd(0, EFD_CLOEXEC);
	px->accept_th = t_thread_start(proxy_accept_thread, px);
}

/* Break every connection relayed so far, now. */
static void proxy_cut_all(struct proxy *px)
{
	pthread_mutex_lock(&px->lock);
	for (int i = 0; i < px->npairs; i++)
		cut(px->pairs[i]);
	px->cuts += px->npairs;
	pthread_mutex_unlock(&px->lock);
}

static void proxy_stop(struct proxy *px)
{
	uint64_t one = 1;

	T_ASSERT_SYS(write(px->stop_efd, &one, sizeof(one)));
	t_thread_join(px->accept_th);
	for (int i = 0; i < px->npairs; i++)
		cut(px->pairs[i]);
	for (int i = 0; i < px->nrelay; i++)
		t_thread_join(px->relay_th[i]);
	for (int i = 0; i < px->npairs; i++) {
		close(px->pairs[i]->fd[0]);
		close(px->pairs[i]->fd[1]);
		free(px->pairs[i]);
	}
	close(px->lfd);
	close(px->stop_efd);
}

/*
 * Five breaks at random points, in pre-copy and post-copy alike, with the
 * destination's program faulting meanwhile. Here the source listens and
 * the destination connects through the proxy, so it is the destination that
 * reconnects with back-off; the final memory must be the source's, byte for byte.
 */
#define BREAKS_KEY "breaks: a key of 32 bytes or so"

static void breaks_run(uint64_t seed, unsigned int rounds)
{
	size_t len = 16 * MIB, ps = t_page_size(), pages = len / ps;
	struct fl_migrate_region reg = { t_map_anon(len), len };
	struct writer w = { .p = reg.addr, .len = len, .ps = ps, .rng = seed * 2 + 1 };
	struct fl_migrate_source_stats ss = { .sz = sizeof(ss) };
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest_opts dopt;
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	struct toucher t;
	struct proxy px;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th, tt;
	uint16_t sport;
	void *a;

	fl_set_log_fn(test_log);
	fill(reg.addr, len, seed);
	src_opts(&so, &reg, 1, 0, BREAKS_KEY);
	so.flags = FL_MIGRATE_LISTEN;
	so.max_bandwidth = 32 * MIB;
	if (rounds) {
		w.th = t_thread_start(writer_thread, &w);
		so.precopy_rounds = rounds;
		so.stop = writer_stop;
		so.userdata = &w;
	} else {
		so.blob = "x";
		so.blob_len = 1;
	}
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	T_ASSERT_OK(fl_migrate_source_port(sr.s, &sport));
	proxy_start(&px, sport, 5, 2 * MIB, seed);

	dopt = (struct fl_migrate_dest_opts){
		.sz = sizeof(dopt),
		.host = "127.0.0.1",
		.port = px.port,
		.flags = FL_MIGRATE_ANYWHERE,
		.key = BREAKS_KEY,
		.key_len = sizeof(BREAKS_KEY) - 1,
		.timeout_ms = t_ms(5000),
		.resume_timeout_ms = t_ms(15000),
	};
	T_ASSERT_OK(fl_migrate_dest_create(&dopt, &d));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a, &dlen));
	t = (struct toucher){ reg.addr, a, ps, 3, pages / 64, 61, false };
	tt = t_thread_start(touch_thread, &t);
	t_thread_join(tt);
	T_ASSERT(t.ok);
	T_ASSERT_OK(fl_migrate_dest_wait(d, t_ms(30000)));
	t_thread_join(th);
	if (sr.r < 0)
		t_fail(__FILE__, __LINE__, "source: %s", fl_migrate_source_error(sr.s));
	T_ASSERT(!memcmp(a, reg.addr, len));
	T_ASSERT_EQ(px.cuts, 5);
	T_ASSERT_OK(fl_migrate_source_stats(sr.s, &ss));
	T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
	T_ASSERT(ss.resumes >= 1 && ds.resumes >= 1);
	fl_migrate_dest_destroy(d);
	fl_migrate_source_destroy(sr.s);
	proxy_stop(&px);
	munmap(reg.addr, len);
	munmap(a, len);
}

TEST(migrate_five_breaks)
{
	uint64_t seed = (uint64_t)getpid() * 2654435761u ^ (uint64_t)time(NULL);

	if (getenv("FL_TEST_SEED"))
		seed = strtoull(getenv("FL_TEST_SEED"), NULL, 0);

	printf("    seed %llu\n", (unsigned long long)seed);
	breaks_run(seed, 0);
	breaks_run(seed + 1, 2);
}

/* ------------------------------------------------------------ TLS */

/*
 * A man in the middle flips one bit of the page stream: the destination's
 * TLS layer refuses the record (nothing of it is installed), the connection
 * is dropped, the session resumes over a new one, and the memory arrives
 * intact, byte for byte: no page is lost, none is zero.
 */
TEST(migrate_tls_mitm_flip)
{
	size_t len = 8 * MIB;
	struct fl_migrate_region reg = { t_map_anon(len), len };
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	struct proxy px;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	uint16_t port;
	uint8_t *a;

	log_start();
	fill(reg.addr, len, 11);
	d = dest_listen(FL_MIGRATE_ANYWHERE, KEY_A, &port);
	proxy_start(&px, port, 0, 1, 1);
	/* The source connects: the first relayed connection is its main one; 3 MiB in is page data. */
	px.flip_from = 0;
	px.flip_at = 3 * MIB;
	src_opts(&so, &reg, 1, px.port, KEY_A);
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_OK(sr.r);
	T_ASSERT(px.flipped);
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, (void **)&a, &dlen));
	T_ASSERT(!memcmp(a, reg.addr, len));
	T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
	T_ASSERT(ds.resumes >= 1);
	if (log_count("destination: connection lost", "bad record mac") != 1)
		t_fail(__FILE__, __LINE__, "the changed record is not named:\n%s", log_buf);
	fl_migrate_source_destroy(sr.s);
	fl_migrate_dest_destroy(d);
	proxy_stop(&px);
	munmap(reg.addr, len);
	munmap(a, len);
	fl_set_log_fn(test_log);
}

struct x509_suitors {
	struct fl_migrate_region reg;
	uint16_t port;
	const char *dir;
	int wrong_name_r, no_cert_r, good_r;
	char wrong_name_err[MIG_ERR_LEN], no_cert_err[MIG_ERR_LEN];
	struct fl_migrate_source *good;
};

static void x509_source(struct x509_suitors *su, struct fl_migrate_source_opts *so, char *ca,
			char *crt, char *key, const char *name, bool with_cert)
{
	src_opts(so, &su->reg, 1, su->port, NULL);
	so->flags = 0;
	snprintf(ca, 300, "%s/ca.crt", su->dir);
	snprintf(crt, 300, "%s/client.crt", su->dir);
	snprintf(key, 300, "%s/client.key", su->dir);
	so->tls_ca_file = ca;
	so->tls_peer_name = name;
	if (with_cert) {
		so->tls_cert_file = crt;
		so->tls_key_file = key;
	}
}

static void *x509_suitors_thread(void *arg)
{
	struct x509_suitors *su = arg;
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;
	char ca[300], crt[300], key[300];

	/* The destination's certificate names server.test, not this. */
	x509_source(su, &so, ca, crt, key, "elsewhere.test", true);
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	su->wrong_name_r = fl_migrate_source_run(s);
	snprintf(su->wrong_name_err, MIG_ERR_LEN, "%s", fl_migrate_source_error(s));
	fl_migrate_source_destroy(s);
	/* The destination verifies sources: one without a certificate is refused. */
	x509_source(su, &so, ca, crt, key, "server.test", false);
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	su->no_cert_r = fl_migrate_source_run(s);
	snprintf(su->no_cert_err, MIG_ERR_LEN, "%s", fl_migrate_source_error(s));
	fl_migrate_source_destroy(s);

	x509_source(su, &so, ca, crt, key, "server.test", true);
	T_ASSERT_OK(fl_migrate_source_create(&so, &su->good));
	su->good_r = fl_migrate_source_run(su->good);
	return NULL;
}

/*
 * X.509 both ways (certificates made now, in a temporary directory): a
 * source that finds another name in the destination's certificate gives up,
 * one without a certificate of its own is refused, and each is named; the
 * right one migrates.
 */
TEST(migrate_tls_x509)
{
	size_t len = 2 * MIB;
	char dir[64], ca[300], crt[300], key[300];
	struct x509_suitors su = { .reg = { t_map_anon(len), len }, .dir = dir };
	struct fl_migrate_dest_opts o = {
		.sz = sizeof(o), .host = "127.0.0.1",
		.flags = FL_MIGRATE_LISTEN | FL_MIGRATE_ANYWHERE | FL_MIGRATE_VERIFY_PEER,
		.tls_ca_file = ca, .tls_cert_file = crt, .tls_key_file = key,
		.timeout_ms = t_ms(5000), .resume_timeout_ms = t_ms(10000),
	};
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	void *a;

	t_certs_dir(dir, sizeof(dir));
	t_certs_make(dir, "ca", NULL, NULL);
	t_certs_make(dir, "server", "ca", "server.test");
	t_certs_make(dir, "client", "ca", "client.test");
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(crt, sizeof(crt), "%s/server.crt", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	log_start();
	fill(su.reg.addr, len, 4);
	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	T_ASSERT_OK(fl_migrate_dest_port(d, &su.port));
	th = t_thread_start(x509_suitors_thread, &su);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	printf("# wrong name: %s\n# no certificate: %s\n", su.wrong_name_err, su.no_cert_err);
	T_ASSERT_ERR(su.wrong_name_r, EACCES);
	T_ASSERT(strstr(su.wrong_name_err, "hostname mismatch"));
	T_ASSERT_ERR(su.no_cert_r, EACCES);
	T_ASSERT(strstr(su.no_cert_err, "certificate"));
	if (log_count("destination: refused the connection", "did not return a certificate") != 1)
		t_fail(__FILE__, __LINE__, "the refusal is not logged:\n%s", log_buf);
	T_ASSERT_OK(su.good_r);
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a, &dlen));
	T_ASSERT(!memcmp(a, su.reg.addr, len));
	fl_migrate_source_destroy(su.good);
	fl_migrate_dest_destroy(d);
	munmap(su.reg.addr, len);
	munmap(a, len);
	t_certs_cleanup(dir);
	fl_set_log_fn(test_log);
}

/*
 * A destination that accepts the connection and then says nothing, not
 * even its half of the TLS handshake: the source gives up within its
 * timeouts, naming the stall.
 */
TEST(migrate_tls_peer_stalls)
{
	struct fl_migrate_region reg = { t_map_anon(MIB), MIB };
	struct fl_migrate_source_opts so;
	struct fl_migrate_source *s;
	uint16_t port;
	uint64_t t0;
	int lfd, r;

	T_ASSERT_OK(fl__sock_listen("127.0.0.1", 0, NULL, &lfd));
	T_ASSERT_OK(fl__sock_local_port(lfd, &port));
	src_opts(&so, &reg, 1, port, KEY_A);
	so.timeout_ms = 300;
	so.resume_timeout_ms = 300;
	T_ASSERT_OK(fl_migrate_source_create(&so, &s));
	t0 = fl__now_ns();
	r = fl_migrate_source_run(s);	/* the kernel completes the connection: the backlog */
	printf("# %d after %.2f s: %s\n", r, (double)(fl__now_ns() - t0) / 1e9,
	       fl_migrate_source_error(s));
	T_ASSERT_ERR(r, ETIMEDOUT);
	T_ASSERT(strstr(fl_migrate_source_error(s), "sent nothing"));
	fl_migrate_source_destroy(s);
	close(lfd);
	munmap(reg.addr, MIB);
}

/* ------------------------------------------------------------ hostile and dead peers */

/*
 * During the session: a stranger sending half a TLS hello and a silent one
 * wait in the destination's backlog when the connection breaks. At the
 * resume the destination meets them first: each is closed and logged, the
 * source gets through (not held up by the stalled hello), and the
 * migration completes.
 */
TEST(migrate_stranger_at_resume)
{
	static const char junk[] = "\x16\x03\x01\x02\x00 a TLS hello, or so it says";
	size_t len = 8 * MIB, ps = t_page_size();
	struct fl_migrate_region reg = { t_map_anon(len), len };
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	struct proxy px;
	const void *blob;
	size_t blob_len, dlen;
	unsigned long th;
	uint16_t port;
	int fds[2];
	uint8_t *a;

	log_start();
	fill(reg.addr, len, 9);
	d = dest_listen(FL_MIGRATE_ANYWHERE, KEY_A, &port);
	proxy_start(&px, port, 0, 1, 1);
	src_opts(&so, &reg, 1, px.port, KEY_A);
	so.max_bandwidth = 256 << 10;	/* still under way at the break */
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, (void **)&a, &dlen));
	T_ASSERT(!memcmp(a + len / 2, (uint8_t *)reg.addr + len / 2, ps));
	/* Nobody accepts on the port now: both wait in its backlog. */
	fds[0] = stranger(port, junk, sizeof(junk) - 1);
	fds[1] = stranger(port, NULL, 0);
	proxy_cut_all(&px);
	T_ASSERT(!memcmp(a + len / 4, (uint8_t *)reg.addr + len / 4, ps));
	T_ASSERT_OK(fl_migrate_source_set_bandwidth(sr.s, 0));
	T_ASSERT_OK(fl_migrate_dest_wait(d, WAIT_MS));
	t_thread_join(th);
	T_ASSERT_OK(sr.r);
	T_ASSERT(!memcmp(a, reg.addr, len));
	T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
	T_ASSERT(ds.resumes >= 1);
	for (int i = 0; i < 2; i++) {
		T_ASSERT(closed_by_peer(fds[i]));
		close(fds[i]);
	}
	/* Each refused, or closed (silent, or its handshake stopped) once the session resumed. */
	if (log_count("destination: refused the connection", NULL) +
	    log_count("destination: closed the connection", NULL) < 2)
		t_fail(__FILE__, __LINE__, "the strangers are not logged:\n%s", log_buf);
	fl_migrate_source_destroy(sr.s);
	fl_migrate_dest_destroy(d);
	proxy_stop(&px);
	munmap(reg.addr, len);
	munmap(a, len);
	fl_set_log_fn(test_log);
}

/* The destination process of migrate_source_gives_up: accept, say so, wait to be killed. */
static void doomed_dest(int out)
{
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len;
	uint16_t port;

	d = dest_listen(FL_MIGRATE_ANYWHERE, KEY_A, &port);
	if (write_all(out, &port, sizeof(port)) < 0)
		_exit(3);
	if (fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len) < 0)
		_exit(4);
	if (write_all(out, "A", 1) < 0)
		_exit(5);
	for (;;)
		pause();
}

/*
 * The destination dies during post-copy: the source tries to resume for its
 * resume_timeout_ms, then gives up with -ENOLINK and a sentence that says
 * so, instead of reconnecting forever.
 */
TEST(migrate_source_gives_up)
{
	size_t len = 16 * MIB;
	struct fl_migrate_source_opts so;
	struct fl_migrate_source_stats ss = { .sz = sizeof(ss) };
	struct fl_migrate_region reg;
	struct src_run sr = { 0 };
	unsigned long th;
	uint16_t port;
	int pfd[2];
	pid_t pid;
	char c;

	fl_set_log_fn(test_log);
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (!pid) {
		close(pfd[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		doomed_dest(pfd[1]);
	}
	close(pfd[1]);
	T_ASSERT_EQ(read_all(pfd[0], &port, sizeof(port)), sizeof(port));
	reg = (struct fl_migrate_region){ t_map_anon(len), len };
	fill(reg.addr, len, 13);
	src_opts(&so, &reg, 1, port, KEY_A);
	so.max_bandwidth = 64 << 10;	/* minutes of work: the destination dies first */
	so.resume_timeout_ms = 1000;
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_EQ(read_all(pfd[0], &c, 1), 1);
	T_ASSERT_SYS(kill(pid, SIGKILL));
	T_ASSERT_SYS(waitpid(pid, NULL, 0));
	t_thread_join(th);
	T_ASSERT_ERR(sr.r, ENOLINK);
	if (!strstr(fl_migrate_source_error(sr.s), "did not come back within 1000 ms"))
		t_fail(__FILE__, __LINE__, "source: '%s'", fl_migrate_source_error(sr.s));
	T_ASSERT_OK(fl_migrate_source_stats(sr.s, &ss));
	T_ASSERT_EQ(ss.phase, FL_MIGRATE_FAILED);
	fl_migrate_source_destroy(sr.s);
	munmap(reg.addr, len);
	close(pfd[0]);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void *sigbus_reader(void *arg)
{
	return (void *)(uintptr_t)t_read_sigbus(arg);
}

/* The source process of migrate_dest_wait_failure: it answers no request, and is killed. */
static void doomed_source(int in, int hold_efd)
{
	size_t len = 2 * MIB;
	struct fl__mig_hooks sh = { .hold_urgent_efd = hold_efd };
	struct fl_migrate_source_opts so;
	struct fl_migrate_region reg;
	struct fl_migrate_source *s;
	uint16_t port;

	if (read_all(in, &port, sizeof(port)) < 0)
		_exit(3);
	reg = (struct fl_migrate_region){ t_map_anon(len), len };
	fill(reg.addr, len, 17);
	src_opts(&so, &reg, 1, port, KEY_A);
	so.max_bandwidth = 4096;
	if (fl_migrate_source_create(&so, &s) < 0)
		_exit(4);
	fl__migrate_source_set_hooks(s, &sh);
	fl_migrate_source_run(s);
	_exit(5);
}

/*
 * The source dies during post-copy. fl_migrate_dest_wait() tells its own
 * expiry (-ETIMEDOUT, the migration goes on) from the migration's end
 * (-ENOLINK once the source has not come back within resume_timeout_ms);
 * by then every page that never came is poisoned: the thread blocked on
 * one, and a later read, get SIGBUS. Without FL_FEAT_POISON (before 6.6)
 * such pages are made inaccessible instead: SIGSEGV, for both alike.
 */
TEST(migrate_dest_wait_failure)
{
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl__mig_hooks dh = { .fault_efd = eventfd(0, EFD_CLOEXEC) };
	struct fl_migrate_dest_opts o = {
		.sz = sizeof(o),
		.host = "127.0.0.1",
		.flags = FL_MIGRATE_LISTEN | FL_MIGRATE_ANYWHERE,
		.key = KEY_A,
		.key_len = strlen(KEY_A),
		.timeout_ms = t_ms(5000),
		.resume_timeout_ms = 1000,
	};
	struct fl_migrate_dest_stats ds = { .sz = sizeof(ds) };
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len, len, ps = t_page_size();
	unsigned long th;
	uint64_t v;
	uint16_t port;
	uint8_t *a;
	int pfd[2], hold;
	pid_t pid;

	fl_set_log_fn(test_log);
	T_ASSERT(dh.fault_efd > 0);
	hold = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(hold);
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (!pid) {
		close(pfd[1]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		doomed_source(pfd[0], hold);
	}
	close(pfd[0]);
	T_ASSERT_OK(fl_migrate_dest_create(&o, &d));
	fl__migrate_dest_set_hooks(d, &dh);
	T_ASSERT_OK(fl_migrate_dest_port(d, &port));
	T_ASSERT_EQ(write_all(pfd[1], &port, sizeof(port)), sizeof(port));
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, (void **)&a, &len));
	/* The source lives, and answers nothing: the wait expires, the migration goes on. */
	T_ASSERT_ERR(fl_migrate_dest_wait(d, 0), ETIMEDOUT);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	if (!t_have(FL_FEAT_POISON))
		T_ASSERT_SYS(sigaction(SIGSEGV, &sa, NULL));
	th = t_thread_start(sigbus_reader, a + len / 2);
	T_ASSERT_SYS(read(dh.fault_efd, &v, sizeof(v)));	/* it is blocked on its page */
	/* The program discards a page that has not come: it reads zeros from now on. */
	T_ASSERT_SYS(madvise(a + len - 2 * ps, ps, MADV_DONTNEED));
	T_ASSERT_SYS(kill(pid, SIGKILL));
	T_ASSERT_SYS(waitpid(pid, NULL, 0));
	T_ASSERT_ERR(fl_migrate_dest_wait(d, WAIT_MS), ENOLINK);
	if (!strstr(fl_migrate_dest_error(d), "did not come back within 1000 ms"))
		t_fail(__FILE__, __LINE__, "destination: '%s'", fl_migrate_dest_error(d));
	T_ASSERT_OK(fl_migrate_dest_stats(d, &ds));
	T_ASSERT_EQ(ds.phase, FL_MIGRATE_FAILED);
	T_ASSERT(ds.pages_received < ds.pages_total);
	/* Loud, not blocked and not zeros: the waiting thread and a new read alike. */
	T_ASSERT(t_thread_join(th) == (void *)1);
	T_ASSERT(t_read_sigbus(a + len - ps));
	/* The discarded page is not poisoned: zeros, as the program asked. */
	T_ASSERT(!t_read_sigbus(a + len - 2 * ps));
	T_ASSERT(all_zero(a + len - 2 * ps, ps));
	T_ASSERT(t_read_sigbus(a + len - 3 * ps));
	fl_migrate_dest_destroy(d);
	/* Still so once the destination is gone. */
	T_ASSERT(!t_read_sigbus(a + len - 2 * ps));
	T_ASSERT(all_zero(a + len - 2 * ps, ps));
	T_ASSERT(t_read_sigbus(a + len - ps));
	munmap(a, len);
	close(pfd[1]);
	close(hold);
	close(dh.fault_efd);
	signal(SIGBUS, SIG_DFL);
	signal(SIGSEGV, SIG_DFL);
}
