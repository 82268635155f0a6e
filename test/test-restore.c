/* SPDX-License-Identifier: MIT */
/* Restoring from file-like stores: staged MOVE of whole chunks, eager restore. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
