/* SPDX-License-Identifier: MIT */
/* Post-copy migration: in one process, across two, with pre-copy, faults, requests and errors. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests.h"
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
		.flags = FL_MIGRATE_LISTEN | flags,
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.timeout_ms = 5000,
		.resume_timeout_ms = 10000,
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
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.timeout_ms = 5000,
		.resume_timeout_ms = 10000,
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
	fill(regs[0].addr, len0, 1);
	fill(regs[1].addr, len1, 2);

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
	munmap(regs[0].addr, len0);
	munmap(regs[1].addr, len1);
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

/* A handshake that must fail on both sides with @err, each naming the cause (@what). */
static void refused(const char *src_key, const char *dst_key, uint8_t vmin, uint8_t vmax,
		    int err, const char *what)
{
	size_t len = MIB;
	struct fl_migrate_region reg = { t_map_anon(len), len };
	struct fl__mig_hooks sh = { .version_min = vmin, .version_max = vmax };
	struct fl_migrate_source_opts so;
	struct fl_migrate_dest *d;
	struct src_run sr = { 0 };
	const void *blob;
	size_t blob_len;
	unsigned long th;
	uint16_t port;

	fl_set_log_fn(test_log);
	d = dest_listen(FL_MIGRATE_ANYWHERE, dst_key, &port);
	src_opts(&so, &reg, 1, port, src_key);
	T_ASSERT_OK(fl_migrate_source_create(&so, &sr.s));
	fl__migrate_source_set_hooks(sr.s, &sh);
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_ERR(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len), err);
	if (!strstr(fl_migrate_dest_error(d), what))
		t_fail(__FILE__, __LINE__, "destination: '%s' lacks '%s'",
		       fl_migrate_dest_error(d), what);
	t_thread_join(th);
	T_ASSERT_ERR(sr.r, err);
	if (!strstr(fl_migrate_source_error(sr.s), what))
		t_fail(__FILE__, __LINE__, "source: '%s' lacks '%s'",
		       fl_migrate_source_error(sr.s), what);
	fl_migrate_source_destroy(sr.s);
	fl_migrate_dest_destroy(d);
	munmap(reg.addr, len);
}

TEST(migrate_wrong_key)
{
	refused("the right key", "the wrong key", 0, 0, EACCES, "authentication failed");
	refused("a key", NULL, 0, 0, EACCES, "shared key");
	refused(NULL, "a key", 0, 0, EACCES, "shared key");
}

TEST(migrate_version_mismatch)
{
	refused(NULL, NULL, 2, 3, EPROTONOSUPPORT, "no common wire version");
}

/* Something that is not faultline connects: refused at its fourth byte, with the bytes named. */
TEST(migrate_stranger_refused)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct fl_migrate_dest *d;
	const void *blob;
	size_t blob_len;
	uint16_t port;
	int fd;

	fl_set_log_fn(test_log);
	d = dest_listen(FL_MIGRATE_ANYWHERE, NULL, &port);
	T_ASSERT_OK(fl__sock_connect("127.0.0.1", port, NULL, 5000, &fd));
	T_ASSERT_OK(fl__sock_send_all(fd, http, sizeof(http) - 1, 5000));
	T_ASSERT_ERR(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len), EPROTO);
	T_ASSERT(strstr(fl_migrate_dest_error(d), "GET "));
	close(fd);
	fl_migrate_dest_destroy(d);
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
	so.flags = flags;
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

	d = dest_listen(0, "two processes", &port);
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
	src_opts(&so, &reg, 1, port, "two processes");
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
		if (n && fl__sock_send_all(to, buf, (size_t)n, 5000) < 0)
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
		px->pairs[px->npairs++] = rp;
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
	src_opts(&so, &reg, 1, 0, "breaks");
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
		.key = "breaks",
		.key_len = 6,
		.timeout_ms = 5000,
		.resume_timeout_ms = 15000,
	};
	T_ASSERT_OK(fl_migrate_dest_create(&dopt, &d));
	th = t_thread_start(src_thread, &sr);
	T_ASSERT_OK(fl_migrate_dest_accept(d, WAIT_MS, &blob, &blob_len));
	T_ASSERT_OK(fl_migrate_dest_region(d, 0, &a, &dlen));
	t = (struct toucher){ reg.addr, a, ps, 3, pages / 64, 61, false };
	tt = t_thread_start(touch_thread, &t);
	t_thread_join(tt);
	T_ASSERT(t.ok);
	T_ASSERT_OK(fl_migrate_dest_wait(d, 30000));
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
