/* SPDX-License-Identifier: MIT */
/* Restoring from file-like stores: staged MOVE of whole chunks, eager restore. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "harness.h"
#include "tests.h"

#define SEED 0x5eed9
#define MIB (1u << 20)

static struct fl_region_stats rstats(struct fl_region *r)
{
	struct fl_region_stats st = { .sz = sizeof(st) };

	T_ASSERT_OK(fl_region_stats(r, &st));
	return st;
}

/*
 * A file store over @len bytes of the pattern, with the 4 KiB page at
 * @hole_off punched out (a hole: zeros), or none if @hole_off is -1.
 */
static struct fl_store *pattern_file(size_t len, long hole_off)
{
	char path[] = "/tmp/fl-restore-XXXXXX";
	uint8_t *data = malloc(len);
	struct fl_store *s;
	int fd = mkstemp(path);

	T_ASSERT_SYS(fd);
	T_ASSERT(data);
	fl_pattern_fill(data, 0, len, SEED);
	T_ASSERT_EQ(write(fd, data, len), (ssize_t)len);
	if (hole_off >= 0 &&
	    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hole_off, 4096) < 0)
		T_SKIP("the file system of /tmp cannot punch holes: %s", strerror(errno));
	close(fd);
	T_ASSERT_OK(fl_store_file_open(path, NULL, &s));
	unlink(path);
	free(data);
	return s;
}

/* The region holds the pattern, zeros in the hole. */
static void check_restored(const uint8_t *a, size_t len, long hole_off)
{
	if (hole_off < 0) {
		T_ASSERT_EQ(fl_pattern_check(a, 0, len, SEED), 0);
		return;
	}
	T_ASSERT_EQ(fl_pattern_check(a, 0, (size_t)hole_off, SEED), 0);
	T_ASSERT(t_all(a + hole_off, 4096, 0));
	T_ASSERT_EQ(fl_pattern_check(a + hole_off + 4096, (uint64_t)hole_off + 4096,
				     len - (size_t)hole_off - 4096, SEED), 0);
}

static void staged(enum fl_pager_mode mode, size_t page_size)
{
	size_t len = 16 * MIB, ps = page_size ? page_size : t_page_size();
	/* A hole in the fourth chunk: the rest of that chunk is still data. */
	long hole = page_size ? -1 : (long)(6 * MIB + 5 * 4096);
	struct fl_store *s = pattern_file(len, hole);
	struct fl_pager *p = t_pager_new(mode, 2, 0);
	struct fl_region_opts o = t_region_opts(s, len);
	struct fl_region_stats st;
	struct fl_region *r;
	volatile uint8_t *a;

	o.page_size = page_size;
	o.prefetch = page_size ? FL_PREFETCH_NONE : FL_PREFETCH_ADAPTIVE;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	for (size_t off = 0; off < len; off += ps)
		(void)a[off];
	check_restored((const uint8_t *)a, len, hole);
	T_ASSERT_OK(fl_pager_stop(p));
	st = rstats(r);
	T_ASSERT_EQ(st.pages_copy + st.pages_move + st.pages_zero, len / ps);
	T_ASSERT_EQ(st.pages_zero, hole >= 0 ? 1 : 0);
	T_ASSERT_EQ(st.errors, 0);
	if (t_have(FL_FEAT_MOVE)) {
		/* Whole 2 MiB chunks were moved in: at least all but the first two and the holed one. */
		T_ASSERT(st.pages_move * ps >= len - 6 * MIB);
	} else {
		T_ASSERT_EQ(st.pages_move, 0);
	}
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

/* AUTO over a file store: chunks read into staging, then moved in; holes zero pages. */
TEST(restore_staged_move_threads)
{
	staged(FL_PAGER_THREADS, 0);
	staged(FL_PAGER_THREADS, 2 * MIB);
}

/*
 * A sequential scan with adaptive prefetch: the first windows are smaller
 * than a chunk and are copied out of staging, which leaves 4 KiB pages
 * there. Every later chunk must still move in as one huge page, not as 512
 * small ones read into what those windows left.
 */
TEST(restore_staged_chunks_stay_huge)
{
	size_t len = 16 * MIB, ps = t_page_size();
	struct fl_store *s = pattern_file(len, -1);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct fl_region_opts o = t_region_opts(s, len);
	struct fl_region_stats st;
	struct fl_features f;
	struct fl_region *r;
	volatile uint8_t *a;
	long kb;

	fl_probe(&f);
	if (!f.thp || !t_have(FL_FEAT_MOVE)) {
		fl_pager_destroy(p);
		fl_store_destroy(s);
		T_SKIP("needs transparent huge pages and UFFDIO_MOVE");
	}
	o.prefetch = FL_PREFETCH_ADAPTIVE;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	for (size_t off = 0; off < len; off += ps)
		(void)a[off];
	check_restored((const uint8_t *)a, len, -1);
	T_ASSERT_OK(fl_pager_stop(p));
	st = rstats(r);
	T_ASSERT_EQ(st.errors, 0);
	/* All but the first chunk (the small windows, copied) are huge pages. */
	kb = t_smaps_kb((const void *)a, "AnonHugePages");
	if (kb < (long)((len - 2 * MIB) >> 10))
		t_fail(__FILE__, __LINE__, "AnonHugePages of the region: %ld kB, expected at least "
		       "%zu kB", kb, (len - 2 * MIB) >> 10);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

TEST(restore_staged_move_sigbus)
{
	staged(FL_PAGER_SIGBUS, 0);
	staged(FL_PAGER_SIGBUS, 2 * MIB);
}

/* A discard while a staged run is read never lets the store's data land there. */
TEST(restore_staged_move_discarded_stays_zero)
{
	size_t len = 8 * MIB;
	struct fl_store *s = pattern_file(len, -1);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_region_opts o = t_region_opts(s, len);
	struct fl_region *r;
	uint8_t *a;

	o.page_size = 2 * MIB;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	/* Not yet present: the discard marks it; its fault then installs zeros, not the data. */
	T_ASSERT_SYS(madvise(a + 2 * MIB, 2 * MIB, MADV_DONTNEED));
	T_ASSERT_EQ(fl_pattern_check(a, 0, 2 * MIB, SEED), 0);
	T_ASSERT(t_all(a + 2 * MIB, 2 * MIB, 0));
	T_ASSERT_EQ(fl_pattern_check(a + 4 * MIB, 4 * MIB, 4 * MIB, SEED), 0);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

/* The eager restore: fl_region_populate() of the whole region, then no fault at all. */
TEST(restore_eager_populate)
{
	size_t len = 16 * MIB;
	long hole = (long)(9 * MIB);
	struct fl_store *s = pattern_file(len, hole);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_region_opts o = t_region_opts(s, len);
	struct fl_region_stats st;
	struct fl_region *r;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_OK(fl_region_populate(r, 0, len));
	st = rstats(r);
	T_ASSERT_EQ(st.faults, 0);
	T_ASSERT_EQ(st.pages_copy + st.pages_move + st.pages_zero, len / t_page_size());
	T_ASSERT_EQ(st.pages_zero, 1);
	if (t_have(FL_FEAT_MOVE))
		T_ASSERT(st.pages_move * t_page_size() >= len - 2 * MIB);
	check_restored(fl_region_addr(r), len, hole);
	T_ASSERT_EQ(rstats(r).faults, 0);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

/* ------------------------------------------------- working-set record and replay */

#define WS_PAGES 2048u		/* 8 MiB of 4 KiB pages */
#define WS_STRIDE 7919u		/* prime: i * WS_STRIDE % WS_PAGES visits pages in a scatter */

/* The i-th page the workload touches: a scattered 10% of the region, no page twice. */
static size_t ws_page(size_t i)
{
	return i * WS_STRIDE % WS_PAGES;
}

#define WS_TOUCHED (WS_PAGES / 10)

/* A pager in @mode, with a dispatch thread for LOOP mode. */
static struct fl_pager *ws_pager(enum fl_pager_mode mode, struct t_loop *l)
{
	struct fl_pager *p = t_pager_new(mode, 2, 0);

	*l = (struct t_loop){ .p = p, .stop = -1 };
	if (mode == FL_PAGER_LOOP)
		t_loop_start(l, p);
	T_ASSERT_OK(fl_pager_start(p));
	return p;
}

static void ws_pager_destroy(struct t_loop *l)
{
	struct fl_pager *p = l->p;

	if (l->stop >= 0)
		t_loop_stop(l);
	fl_pager_destroy(p);
}

static void touch_ws(volatile const uint8_t *a, size_t ps)
{
	for (size_t i = 0; i < WS_TOUCHED; i++)
		(void)a[ws_page(i) * ps + 8];
}

/* Every touched page (and then every page) of @a holds the store's pattern. */
static void check_all(const uint8_t *a, size_t ps)
{
	for (size_t i = 0; i < WS_TOUCHED; i++)
		T_ASSERT_EQ(fl_pattern_check(a + ws_page(i) * ps, ws_page(i) * ps, ps, SEED), 0);
	T_ASSERT_EQ(fl_pattern_check(a, 0, (size_t)WS_PAGES * ps, SEED), 0);
}

/* Record the workload in a fresh region of a @mode pager; save to @ws (and @ls). */
static void ws_record(enum fl_pager_mode mode, const char *ws, const char *ls)
{
	size_t ps = t_page_size(), len = (size_t)WS_PAGES * ps;
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region_stats st;
	struct fl_region *r;
	struct t_loop l;
	uint8_t *f;
	size_t flen;
	int fd;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	ws_pager(mode, &l);
	o = t_region_opts(s, len);
	o.flags = FL_REGION_WS_RECORD;
	T_ASSERT_OK(fl_region_add(l.p, &o, &r));
	touch_ws(fl_region_addr(r), ps);
	st = rstats(r);
	T_ASSERT_EQ(st.faults, WS_TOUCHED);
	T_ASSERT_EQ(st.ws_recorded, WS_TOUCHED);
	T_ASSERT_OK(fl_region_ws_save(r, ws, ls));
	/* The file lists the pages in the order they were first touched. */
	fd = open(ws, O_RDONLY | O_CLOEXEC);
	T_ASSERT_SYS(fd);
	flen = 64 + (size_t)WS_TOUCHED * 8;
	f = malloc(flen + 1);
	T_ASSERT(f);
	T_ASSERT_EQ(read(fd, f, flen + 1), (ssize_t)flen);
	close(fd);
	T_ASSERT(!memcmp(f, "FLWORKST", 8));
	for (size_t i = 0; i < WS_TOUCHED; i++) {
		uint64_t v;

		memcpy(&v, f + 64 + i * 8, 8);
		T_ASSERT_EQ(le64toh(v), ws_page(i));
	}
	free(f);
	ws_pager_destroy(&l);
	fl_store_destroy(s);
}

/* Wait (bounded) until the replay of @r finished. */
static struct fl_region_stats ws_wait_done(struct fl_region *r)
{
	struct fl_region_stats st;

	for (int i = 0; i < t_ms(10000); i++) {
		st = rstats(r);
		if (st.ws_done_ns)
			return st;
		usleep(1000);
	}
	t_fail(__FILE__, __LINE__, "the working-set replay did not finish");
}

/* Replay @ws (and @ls) into a fresh region, then run the workload: it takes no fault. */
static void ws_replay(enum fl_pager_mode mode, const char *ws, const char *ls)
{
	size_t ps = t_page_size(), len = (size_t)WS_PAGES * ps;
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region_stats st;
	struct fl_region *r;
	struct t_loop l;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	ws_pager(mode, &l);
	o = t_region_opts(s, len);
	o.ws_replay = ws;
	o.ws_loading_set = ls;
	o.ws_batch = 64 * ps;	/* several batches */
	T_ASSERT_OK(fl_region_add(l.p, &o, &r));
	st = ws_wait_done(r);
	T_ASSERT_EQ(st.ws_prefetched, WS_TOUCHED);
	T_ASSERT_EQ(st.ws_skipped + st.ws_errors, 0);
	T_ASSERT_EQ(st.faults, 0);
	/* A loading set is one read per batch, never the store. */
	if (ls)
		T_ASSERT_EQ(st.store_reads, 0);
	touch_ws(fl_region_addr(r), ps);
	/* At least 90% fewer faults than recording took (here: none). */
	T_ASSERT(rstats(r).faults <= WS_TOUCHED / 10);
	T_ASSERT_EQ(rstats(r).faults, 0);
	check_all(fl_region_addr(r), ps);
	T_ASSERT_EQ(rstats(r).faults, WS_PAGES - WS_TOUCHED);
	ws_pager_destroy(&l);
	fl_store_destroy(s);
}

static void ws_paths(char *ws, char *ls, size_t n)
{
	snprintf(ws, n, "/tmp/fl-ws-%d.ws", (int)getpid());
	snprintf(ls, n, "/tmp/fl-ws-%d.ls", (int)getpid());
}

static void ws_modes(enum fl_pager_mode mode)
{
	char ws[64], ls[64];

	ws_paths(ws, ls, sizeof(ws));
	ws_record(mode, ws, ls);
	ws_replay(mode, ws, NULL);
	ws_replay(mode, ws, ls);
	unlink(ws);
	unlink(ls);
}

TEST(ws_record_replay_threads)
{
	ws_modes(FL_PAGER_THREADS);
}

TEST(ws_record_replay_sigbus)
{
	ws_modes(FL_PAGER_SIGBUS);
}

TEST(ws_record_replay_loop)
{
	ws_modes(FL_PAGER_LOOP);
}

static void replay_child(void *arg)
{
	char **paths = arg;

	ws_replay(FL_PAGER_THREADS, paths[0], paths[1]);
}

/* Recorded in this process, replayed in another one (from the loading set and from the store). */
TEST(ws_replay_second_process)
{
	char ws[64], ls[64];
	char *paths[2] = { ws, ls }, *store_only[2] = { ws, NULL };
	int status;

	ws_paths(ws, ls, sizeof(ws));
	ws_record(FL_PAGER_THREADS, ws, ls);
	status = t_run_child(replay_child, paths);
	T_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	status = t_run_child(replay_child, store_only);
	T_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	unlink(ws);
	unlink(ls);
}

/* A store whose read of one page blocks until released: the replay is stuck in it. */
struct gate_store {
	uint64_t block_off;
	int entered, release;	/* eventfds */
};

static int gate_read(void *ud, uint64_t off, void *buf, size_t len, size_t ps, uint64_t *holes)
{
	struct gate_store *g = ud;
	uint64_t one = 1, v;

	(void)ps;
	(void)holes;
	if (off <= g->block_off && g->block_off < off + len) {
		if (write(g->entered, &one, sizeof(one)) < 0)
			return -EIO;
		/* Bounded by the test's alarm; the test releases it. */
		if (read(g->release, &v, sizeof(v)) < 0)
			return -EIO;
	}
	fl_pattern_fill(buf, off, len, SEED);
	return 0;
}

/* Demand faults are served while the replay waits for its batch: they never queue behind it. */
TEST(ws_replay_faults_go_first)
{
	size_t ps = t_page_size(), len = (size_t)WS_PAGES * ps;
	struct gate_store g = { .block_off = ws_page(0) * ps };
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = gate_read };
	struct fl_store *s;
	struct fl_region_opts o;
	struct fl_region_stats st;
	struct fl_region *r;
	struct t_loop l;
	char ws[64], ls[64];
	uint64_t one = 1, v;
	volatile uint8_t *a;

	ws_paths(ws, ls, sizeof(ws));
	ws_record(FL_PAGER_THREADS, ws, NULL);
	g.entered = eventfd(0, EFD_CLOEXEC);
	g.release = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(g.entered);
	T_ASSERT_SYS(g.release);
	T_ASSERT_OK(fl_store_create(&ops, &g, FL_STORE_READONLY, len, &s));
	ws_pager(FL_PAGER_THREADS, &l);
	o = t_region_opts(s, len);
	o.ws_replay = ws;
	T_ASSERT_OK(fl_region_add(l.p, &o, &r));
	/* The replay's first read (page ws_page(0)) is blocked now. */
	T_ASSERT_EQ(read(g.entered, &v, sizeof(v)), (ssize_t)sizeof(v));
	a = fl_region_addr(r);
	/* Pages of the same batch and of later ones: each fault is served meanwhile. */
	for (size_t i = 1; i < 40; i += 3)
		T_ASSERT_EQ(fl_pattern_check((const uint8_t *)a + ws_page(i) * ps,
					     ws_page(i) * ps, ps, SEED), 0);
	st = rstats(r);
	T_ASSERT_EQ(st.faults, 13);
	T_ASSERT_EQ(st.ws_done_ns, 0);
	T_ASSERT_SYS(write(g.release, &one, sizeof(one)));
	st = ws_wait_done(r);
	/* The pages the faults brought in were skipped; the rest prefetched. */
	T_ASSERT_EQ(st.ws_skipped, 13);
	T_ASSERT_EQ(st.ws_prefetched, WS_TOUCHED - 13);
	T_ASSERT_EQ(st.faults, 13);
	touch_ws(a, ps);
	T_ASSERT_EQ(rstats(r).faults, 13);
	check_all((const uint8_t *)a, ps);
	ws_pager_destroy(&l);
	fl_store_destroy(s);
	close(g.entered);
	close(g.release);
	unlink(ws);
}

/* Files that are truncated, corrupted or recorded for another region are refused. */
TEST(ws_replay_refuses_bad_files)
{
	size_t ps = t_page_size(), len = (size_t)WS_PAGES * ps;
	char ws[64], ls[64], other[80];
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct fl_region_opts o;
	struct fl_region *r;
	struct fl_store *s;
	struct stat st;
	uint8_t b;
	int fd;

	ws_paths(ws, ls, sizeof(ws));
	snprintf(other, sizeof(other), "%s.other", ws);
	ws_record(FL_PAGER_THREADS, other, ls);	/* ls belongs to "other" */
	ws_record(FL_PAGER_THREADS, ws, NULL);
	T_ASSERT_OK(fl_store_pattern_create(2 * len, SEED, &s));
	o = t_region_opts(s, len);
	o.ws_replay = ws;
	/* A loading set of another working set. */
	o.ws_loading_set = ls;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.ws_loading_set = NULL;
	/* Another region length. */
	o.len = 2 * len;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.len = len;
	/* Corrupted: one byte of an entry flipped. */
	fd = open(ws, O_RDWR | O_CLOEXEC);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(pread(fd, &b, 1, 64 + 8), 1);
	b ^= 0x40;
	T_ASSERT_EQ(pwrite(fd, &b, 1, 64 + 8), 1);
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	b ^= 0x40;
	T_ASSERT_EQ(pwrite(fd, &b, 1, 64 + 8), 1);
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_region_remove(r));
	/* Truncated. */
	T_ASSERT_SYS(fstat(fd, &st));
	T_ASSERT_SYS(ftruncate(fd, st.st_size - 8));
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	close(fd);
	/* Missing, and a loading set without a working set. */
	unlink(ws);
	T_ASSERT_ERR(fl_region_add(p, &o, &r), ENOENT);
	o.ws_replay = NULL;
	o.ws_loading_set = ls;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	/* Saving needs recording. */
	o.ws_loading_set = NULL;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_ERR(fl_region_ws_save(r, ws, NULL), EINVAL);
	fl_pager_destroy(p);
	fl_store_destroy(s);
	unlink(other);
	unlink(ls);
}

/* A loading set's zero pages install as zero pages; a page that fails its CRC is left to its fault. */
/*
 * A store that hands its pages over reads them as holes once the region has
 * them: a loading set made from it would be zeros where the data is. Saving
 * one is refused; the working set alone is saved.
 */
TEST(ws_loading_set_refused_for_move_store)
{
	size_t ps = t_page_size(), len = (size_t)WS_PAGES * ps;
	uint8_t *src = t_map_anon(len);
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region_opts o;
	struct fl_region *r;
	char ws[64], ls[64];

	ws_paths(ws, ls, sizeof(ws));
	fl_pattern_fill(src, 0, len, SEED);
	T_ASSERT_OK(fl_store_mem_create(src, len, 0, &s));
	T_ASSERT(fl_store_caps(s) & FL_STORE_MOVE);
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	T_ASSERT_OK(fl_pager_start(p));
	o = t_region_opts(s, len);
	o.flags = FL_REGION_WS_RECORD;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	touch_ws(fl_region_addr(r), ps);
	T_ASSERT_ERR(fl_region_ws_save(r, ws, ls), EOPNOTSUPP);
	T_ASSERT(access(ls, F_OK) != 0);
	T_ASSERT_OK(fl_region_ws_save(r, ws, NULL));
	T_ASSERT(access(ws, F_OK) == 0);
	fl_pager_destroy(p);
	fl_store_destroy(s);
	unlink(ws);
	munmap(src, len);
}

TEST(ws_loading_set_zero_and_corrupt)
{
	size_t ps = t_page_size(), len = (size_t)WS_PAGES * ps;
	uint8_t *src = t_map_anon(len), b;
	struct fl_store *s;
	struct fl_pager *p;
	struct fl_region_opts o;
	struct fl_region_stats st;
	struct fl_region *r;
	char ws[64], ls[64];
	volatile uint8_t *a;
	int fd;

	ws_paths(ws, ls, sizeof(ws));
	fl_pattern_fill(src, 0, len, SEED);
	for (size_t i = 0; i < 10; i++)
		memset(src + ws_page(i) * ps, 0, ps);
	T_ASSERT_OK(fl_store_mem_create(src, len, FL_STORE_MEM_READONLY | FL_STORE_MEM_NO_MOVE, &s));
	/* Record. */
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	T_ASSERT_OK(fl_pager_start(p));
	o = t_region_opts(s, len);
	o.flags = FL_REGION_WS_RECORD;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	touch_ws(fl_region_addr(r), ps);
	T_ASSERT_OK(fl_region_ws_save(r, ws, ls));
	fl_pager_destroy(p);
	/* Page 20 of the loading set's data (at 4096: 64 + 4 x 204 bytes of head) changes. */
	fd = open(ls, O_RDWR | O_CLOEXEC);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(pread(fd, &b, 1, 4096 + 20 * ps + 100), 1);
	b ^= 1;
	T_ASSERT_EQ(pwrite(fd, &b, 1, 4096 + 20 * ps + 100), 1);
	close(fd);
	/* Replay. */
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	T_ASSERT_OK(fl_pager_start(p));
	o = t_region_opts(s, len);
	o.ws_replay = ws;
	o.ws_loading_set = ls;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	st = ws_wait_done(r);
	T_ASSERT_EQ(st.ws_prefetched, WS_TOUCHED - 1);
	T_ASSERT_EQ(st.ws_errors, 1);
	T_ASSERT_EQ(st.pages_zero, 10);
	T_ASSERT_EQ(st.faults, 0);
	a = fl_region_addr(r);
	touch_ws(a, ps);
	/* The page the loading set got wrong was read from the store by its fault. */
	T_ASSERT_EQ(rstats(r).faults, 1);
	T_ASSERT(!memcmp((const uint8_t *)a, src, len));
	fl_pager_destroy(p);
	fl_store_destroy(s);
	munmap(src, len);
	unlink(ws);
	unlink(ls);
}
