/* SPDX-License-Identifier: MIT */
/* Live and incremental snapshots: the file holds the memory as it was at the instant. */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "faultline.h"
#include "snapshot/format.h"
#include "tests.h"

/* ------------------------------------------------ reading a chain back */

/*
 * A snapshot chain read back with the format's own decoders, independent
 * of the library's restore path: @path[0] is the newest file, each next
 * one its parent. Uncompressed files only.
 */
struct rd_file {
	int fd;
	struct fl__snap_header h;
	struct fl__snap_region *reg;
	struct fl__snap_entry *ent;
};

static void rd_open(struct rd_file *f, const char *path)
{
	uint8_t hb[FL__SNAP_HEADER_USED];
	const char *why = "";
	uint8_t *buf;
	size_t n;

	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	T_ASSERT_SYS(f->fd);
	T_ASSERT_EQ(pread(f->fd, hb, sizeof(hb), 0), sizeof(hb));
	if (fl__snap_header_decode(hb, &f->h, &why))
		t_fail(__FILE__, __LINE__, "%s: bad header: %s", path, why);
	T_ASSERT(!(f->h.flags & FL__SNAP_F_ZSTD));
	n = f->h.region_count * FL__SNAP_REGION_SIZE;
	buf = malloc(n + f->h.index_count * FL__SNAP_ENTRY_SIZE);
	T_ASSERT(buf);
	T_ASSERT_EQ(pread(f->fd, buf, n, (off_t)f->h.region_table_off), n);
	f->reg = calloc(f->h.region_count, sizeof(*f->reg));
	f->ent = calloc(f->h.index_count, sizeof(*f->ent));
	T_ASSERT(f->reg && f->ent);
	for (uint32_t i = 0; i < f->h.region_count; i++)
		fl__snap_region_decode(buf + i * FL__SNAP_REGION_SIZE, &f->reg[i]);
	T_ASSERT_EQ(pread(f->fd, buf, f->h.index_count * FL__SNAP_ENTRY_SIZE,
			  (off_t)f->h.index_off),
		    f->h.index_count * FL__SNAP_ENTRY_SIZE);
	for (uint64_t i = 0; i < f->h.index_count; i++)
		fl__snap_entry_decode(buf + i * FL__SNAP_ENTRY_SIZE, &f->ent[i]);
	free(buf);
}

static void rd_close(struct rd_file *f)
{
	close(f->fd);
	free(f->reg);
	free(f->ent);
}

/* The kind of page @pg of region @ri in file @f. */
static uint32_t rd_kind(const struct rd_file *f, uint32_t ri, uint64_t pg)
{
	T_ASSERT(ri < f->h.region_count && pg < f->reg[ri].pages);
	return f->ent[f->reg[ri].first_entry + pg].kind;
}

/* Page @pg of region @ri as the chain restores it, into @buf. Returns the kind found. */
static uint32_t rd_page(struct rd_file *chain, size_t n, uint32_t ri, uint64_t pg, void *buf)
{
	for (size_t i = 0; i < n; i++) {
		const struct rd_file *f = &chain[i];
		uint32_t k = rd_kind(f, ri, pg);
		size_t ps = f->reg[ri].page_size;

		if (k == FL__SNAP_PARENT) {
			T_ASSERT(i + 1 < n);
			T_ASSERT(!memcmp(f->h.parent_id, chain[i + 1].h.id, 16));
			continue;
		}
		if (k == FL__SNAP_DATA)
			T_ASSERT_EQ(pread(f->fd, buf, ps, (off_t)(f->reg[ri].data_off + pg * ps)), ps);
		else
			memset(buf, 0, ps);
		return k;
	}
	t_fail(__FILE__, __LINE__, "page %llu of region %u is in no file of the chain",
	       (unsigned long long)pg, ri);
}

static char *tmp_path(const char *tag)
{
	static int seq;
	char *p = malloc(128);

	T_ASSERT(p);
	snprintf(p, 128, "/tmp/fl-live-%d-%d-%s.snap", (int)getpid(), seq++, tag);
	unlink(p);
	return p;
}

static struct fl_snapshot_writer *new_writer(const char *path, const uint8_t *parent)
{
	struct fl_snapshot_writer_opts o = { .sz = sizeof(o), .parent_id = parent };
	struct fl_snapshot_writer *w = NULL;

	T_ASSERT_OK(fl_snapshot_writer_create(path, &o, &w));
	return w;
}

/* --------------------------------------------- threads stamping pages */

/*
 * Each stamping thread owns the pages i with i % NTHREADS == t and writes
 * them round robin: its step k (from 0) stores k + 1 in the first word of
 * its page (k % m), then publishes k + 1 as its progress. A snapshot of
 * one instant shows, for each thread, a cut K (the largest stamp of that
 * thread in the file): each of its pages holds the last stamp <= K that
 * the round robin gave it (or its initial content), and K lies between
 * the thread's progress before the take and after it returned.
 */
#define NTHREADS 2

struct stamper {
	uint8_t *base;
	size_t ps, npages;
	unsigned int t;
	_Atomic uint64_t progress;
	_Atomic bool stop;
	unsigned long tid;
};

static size_t owned(const struct stamper *st)
{
	return st->npages / NTHREADS + (st->t < st->npages % NTHREADS);
}

static void *stamp_main(void *arg)
{
	struct stamper *st = arg;
	size_t m = owned(st);

	for (uint64_t k = 0; !atomic_load_explicit(&st->stop, memory_order_relaxed); k++) {
		size_t page = (k % m) * NTHREADS + st->t;

		__atomic_store_n((uint64_t *)(st->base + page * st->ps), k + 1, __ATOMIC_RELAXED);
		atomic_store_explicit(&st->progress, k + 1, memory_order_release);
	}
	return NULL;
}

static void stampers_start(struct stamper *st, uint8_t *base, size_t ps, size_t npages)
{
	for (unsigned int t = 0; t < NTHREADS; t++) {
		st[t] = (struct stamper){ .base = base, .ps = ps, .npages = npages, .t = t };
		st[t].tid = t_thread_start(stamp_main, &st[t]);
	}
	/* Running before the snapshot: each has gone round its pages once. */
	for (unsigned int t = 0; t < NTHREADS; t++)
		while (atomic_load(&st[t].progress) < owned(&st[t]))
			sched_yield();
}

static void stampers_stop(struct stamper *st)
{
	for (unsigned int t = 0; t < NTHREADS; t++)
		atomic_store(&st[t].stop, true);
	for (unsigned int t = 0; t < NTHREADS; t++)
		t_thread_join(st[t].tid);
}

/* The stamp page i holds after the thread's first K steps (0: never written). */
static uint64_t expected(size_t m, size_t i, uint64_t K)
{
	if (K < i + 1)
		return 0;
	return K - ((K - 1 - i) % m);
}

/*
 * Check a chain's region @ri against the stampers: one cut per thread, within
 * [before, after]. @rest: if not NULL, checks the bytes of each page after
 * the stamp (page index, buffer) and its stamp-less first word.
 */
static void check_stamps(struct rd_file *chain, size_t nf, uint32_t ri, struct stamper *st,
			 const uint64_t *before, const uint64_t *after,
			 void (*rest)(size_t pg, const uint8_t *buf, bool stamped))
{
	size_t ps = st[0].ps, npages = st[0].npages;
	uint8_t *buf = malloc(ps);
	uint64_t *word = calloc(npages, sizeof(uint64_t));

	T_ASSERT(buf && word);
	for (size_t pg = 0; pg < npages; pg++) {
		rd_page(chain, nf, ri, pg, buf);
		memcpy(&word[pg], buf, sizeof(uint64_t));
		if (rest)
			rest(pg, buf, false);
	}
	for (unsigned int t = 0; t < NTHREADS; t++) {
		size_t m = owned(&st[t]);
		uint64_t K = 0;

		for (size_t i = 0; i < m; i++)
			if (word[i * NTHREADS + t] > K)
				K = word[i * NTHREADS + t];
		/* A stamp stored just before the instant may not be published yet: after + 1. */
		if (K < before[t] || K > after[t] + 1)
			t_fail(__FILE__, __LINE__, "thread %u: the file's cut %llu is outside "
			       "[%llu, %llu + 1], its progress around the take", t,
			       (unsigned long long)K, (unsigned long long)before[t],
			       (unsigned long long)after[t]);
		for (size_t i = 0; i < m; i++) {
			uint64_t want = expected(m, i, K), got = word[i * NTHREADS + t];

			if ((want || !rest) && got != want)
				t_fail(__FILE__, __LINE__, "thread %u page %zu: stamp %llu in the "
				       "file, %llu at the instant (cut %llu)", t, i * NTHREADS + t,
				       (unsigned long long)got, (unsigned long long)want,
				       (unsigned long long)K);
		}
	}
	free(word);
	free(buf);
}

static uint64_t progress_of(struct stamper *st, unsigned int t)
{
	return atomic_load_explicit(&st[t].progress, memory_order_acquire);
}

/*
 * One live snapshot of @base (@npages of @ps bytes, @mem) while NTHREADS
 * threads stamp it; the file must hold one instant. Returns the stats.
 */
static void live_stamped(enum fl_mem_type mem, size_t npages, uint32_t flags,
			 struct fl_snapshot_live_stats *ret)
{
	size_t ps = t_mem_page_size(mem), len = npages * ps;
	int fd = -1;
	uint8_t *base = t_map_mem(mem, len, &fd);
	struct fl_snapshot_range r = { .addr = base, .len = len, .mem = mem };
	struct fl_snapshot_live_opts o = { .sz = sizeof(o), .flags = flags };
	struct fl_snapshot_live_stats stats = { .sz = sizeof(stats) };
	struct fl_snapshot_live *s = NULL;
	struct stamper st[NTHREADS];
	uint64_t before[NTHREADS], after[NTHREADS];
	char *path = tmp_path("stamped");
	struct fl_snapshot_writer *w;
	struct rd_file f;

	T_ASSERT_OK(fl_snapshot_live_create(&r, 1, &o, &s));
	stampers_start(st, base, ps, npages);
	w = new_writer(path, NULL);
	for (unsigned int t = 0; t < NTHREADS; t++)
		before[t] = progress_of(st, t);
	T_ASSERT_OK(fl_snapshot_live_take(s, w, 0));
	for (unsigned int t = 0; t < NTHREADS; t++)
		after[t] = progress_of(st, t);
	T_ASSERT_OK(fl_snapshot_live_wait(s, t_ms(60000)));
	/* The threads ran on through the snapshot: they are not left blocked. */
	for (unsigned int t = 0; t < NTHREADS; t++) {
		uint64_t p = progress_of(st, t);

		while (progress_of(st, t) < p + owned(&st[t]))
			sched_yield();
	}
	stampers_stop(st);
	T_ASSERT_OK(fl_snapshot_writer_finish(w, NULL));
	rd_open(&f, path);
	T_ASSERT_EQ(f.h.region_count, 1);
	T_ASSERT_EQ(f.reg[0].addr, (uintptr_t)base);
	T_ASSERT_EQ(f.reg[0].page_size, ps);
	check_stamps(&f, 1, 0, st, before, after, NULL);
	rd_close(&f);
	T_ASSERT_OK(fl_snapshot_live_stats(s, &stats));
	T_ASSERT_EQ(stats.snapshots, 1);
	T_ASSERT_EQ(stats.pages, npages);
	T_ASSERT(stats.wp_faults > 0);
	T_ASSERT(stats.pause_ns > 0);
	fl_snapshot_live_destroy(s);
	/* Destroyed: writes go on without faults, and the memory is the program's. */
	((volatile uint8_t *)base)[len - 1] = 7;
	unlink(path);
	free(path);
	munmap(base, len);
	if (fd >= 0)
		close(fd);
	*ret = stats;
}

TEST(snapshot_live_anon_instant)
{
	struct fl_snapshot_live_stats st;

	live_stamped(FL_MEM_ANON, 4096, 0, &st);
	printf("# anon 16 MiB: pause %llu us, %llu pages saved first for a write, %llu faults\n",
	       (unsigned long long)st.pause_ns / 1000, (unsigned long long)st.pages_written,
	       (unsigned long long)st.wp_faults);
}

TEST(snapshot_live_anon_unpopulated_fallback)
{
	struct fl_snapshot_live_stats st;

	live_stamped(FL_MEM_ANON, 2048, FL_SNAPSHOT_LIVE_NO_UNPOPULATED, &st);
}

TEST(snapshot_live_memfd_instant)
{
	struct fl_snapshot_live_stats st;

	live_stamped(FL_MEM_SHMEM, 2048, 0, &st);
}

TEST(snapshot_live_hugetlb_instant)
{
	struct fl_snapshot_live_stats st;

	live_stamped(FL_MEM_HUGETLB, 8, 0, &st);
}

/* Pages never touched read back as zeros, also those the threads never reach. */
TEST(snapshot_live_untouched_pages_zero)
{
	size_t ps = t_page_size(), npages = 256, len = npages * ps;
	uint8_t *base = t_map_anon(len), *buf = malloc(ps);
	struct fl_snapshot_range r = { .addr = base, .len = len, .mem = FL_MEM_ANON };
	struct fl_snapshot_live *s = NULL;
	char *path = tmp_path("untouched");
	struct fl_snapshot_writer *w = new_writer(path, NULL);
	struct rd_file f;

	for (size_t pg = 0; pg < npages; pg += 2)
		memset(base + pg * ps, (int)(pg & 0x7f) + 1, ps);
	T_ASSERT_OK(fl_snapshot_live_create(&r, 1, NULL, &s));
	T_ASSERT_OK(fl_snapshot_live_take(s, w, 0));
	/* Written right after the instant: the file still has zeros there. */
	for (size_t pg = 1; pg < npages; pg += 2)
		memset(base + pg * ps, 0xee, ps);
	T_ASSERT_OK(fl_snapshot_live_wait(s, t_ms(30000)));
	T_ASSERT_OK(fl_snapshot_writer_finish(w, NULL));
	rd_open(&f, path);
	for (size_t pg = 0; pg < npages; pg++) {
		rd_page(&f, 1, 0, pg, buf);
		T_ASSERT(t_all(buf, ps, pg % 2 ? 0 : (uint8_t)((pg & 0x7f) + 1)));
	}
	rd_close(&f);
	fl_snapshot_live_destroy(s);
	unlink(path);
	free(path);
	free(buf);
	munmap(base, len);
}
