/* SPDX-License-Identifier: MIT */
/* Snapshot files: the writer, the reader and the snapshot store. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/crc32c.h"
#include "snapshot/format.h"
#include "snapshot/snap-int.h"
#include "tests.h"
#include "util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define PG 4096u

/* ------------------------------------------------------------------ helpers */

/* A fresh name under /var/tmp (a disk file system: real holes); the file does not exist. */
static void snap_path(char path[64], const char *tag)
{
	int fd;

	snprintf(path, 64, "/var/tmp/fl-snap-%s-XXXXXX", tag);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		t_fail(__FILE__, __LINE__, "mkostemp %s: %s", path, strerror(errno));
	close(fd);
	unlink(path);
}

static struct fl_snapshot_writer *writer_new(const char *path, uint32_t flags,
					     const uint8_t *parent)
{
	struct fl_snapshot_writer_opts o = { .sz = sizeof(o), .flags = flags, .parent_id = parent };
	struct fl_snapshot_writer *w = NULL;

	T_ASSERT_OK(fl_snapshot_writer_create(path, &o, &w));
	T_ASSERT(w);
	return w;
}

/*
 * The content a test snapshots: page i of region r is the pattern of seed
 * 100 + r at its offset, except every seventh page, which is zeros.
 */
static bool test_page_zero(uint64_t pg)
{
	return pg % 7 == 3;
}

static void test_page_fill(void *buf, uint32_t region, uint64_t off, size_t ps, uint64_t gen)
{
	if (test_page_zero(off / ps))
		memset(buf, 0, ps);
	else
		fl_pattern_fill(buf, off, ps, 100 + region + 1000 * gen);
}

static void pread_all(int fd, void *buf, size_t len, uint64_t pos)
{
	ssize_t n = pread(fd, buf, len, (off_t)pos);

	T_ASSERT_SYS(n);
	T_ASSERT_EQ(n, len);
}

/* The file's header, region table and index, decoded by hand (no reader involved). */
struct raw_snap {
	int fd;
	struct fl__snap_header h;
	struct fl__snap_region r[8];
	struct fl__snap_entry *e;
	struct fl__snap_chunk *c;
};

static void raw_open(struct raw_snap *s, const char *path)
{
	uint8_t hdr[FL__SNAP_HEADER_USED], *buf;
	const char *why = NULL;
	struct stat st;
	size_t n;

	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	T_ASSERT_SYS(s->fd);
	pread_all(s->fd, hdr, sizeof(hdr), 0);
	T_ASSERT_OK(fl__snap_header_decode(hdr, &s->h, &why));
	T_ASSERT_SYS(fstat(s->fd, &st));
	T_ASSERT_EQ(st.st_size, s->h.file_size);
	T_ASSERT(s->h.region_count <= 8);
	n = s->h.region_count * FL__SNAP_REGION_SIZE;
	buf = malloc(n);
	T_ASSERT(buf);
	pread_all(s->fd, buf, n, s->h.region_table_off);
	T_ASSERT_EQ(fl__crc32c(0, buf, n), s->h.region_table_crc);
	for (uint32_t i = 0; i < s->h.region_count; i++)
		fl__snap_region_decode(buf + i * FL__SNAP_REGION_SIZE, &s->r[i]);
	free(buf);
	n = s->h.index_count * FL__SNAP_ENTRY_SIZE;
	buf = malloc(n);
	s->e = calloc(s->h.index_count, sizeof(*s->e));
	T_ASSERT(buf && s->e);
	pread_all(s->fd, buf, n, s->h.index_off);
	T_ASSERT_EQ(fl__crc32c(0, buf, n), s->h.index_crc);
	for (uint64_t i = 0; i < s->h.index_count; i++)
		fl__snap_entry_decode(buf + i * FL__SNAP_ENTRY_SIZE, &s->e[i]);
	free(buf);
	n = s->h.chunk_count * FL__SNAP_CHUNK_SIZE;
	s->c = calloc(s->h.chunk_count + 1, sizeof(*s->c));
	buf = malloc(n + 1);
	T_ASSERT(buf && s->c);
	if (n)
		pread_all(s->fd, buf, n, s->h.chunk_table_off);
	T_ASSERT_EQ(fl__crc32c(0, buf, n), s->h.chunk_table_crc);
	for (uint64_t i = 0; i < s->h.chunk_count; i++)
		fl__snap_chunk_decode(buf + i * FL__SNAP_CHUNK_SIZE, &s->c[i]);
	free(buf);
}

static void raw_close(struct raw_snap *s)
{
	close(s->fd);
	free(s->e);
	free(s->c);
}

/* Page @pg of region @r as stored, checked against its CRC, into @buf (zeros for zero pages). */
static uint32_t raw_page(struct raw_snap *s, uint32_t r, uint64_t pg, uint8_t *buf)
{
	const struct fl__snap_region *rg = &s->r[r];
	const struct fl__snap_entry *e = &s->e[rg->first_entry + pg];
	const size_t ps = rg->page_size;

	switch (e->kind) {
	case FL__SNAP_DATA:
		pread_all(s->fd, buf, ps, rg->data_off + pg * ps);
		T_ASSERT_EQ(fl__crc32c(0, buf, ps), e->crc);
		break;
	case FL__SNAP_ZSTD: {
		const struct fl__snap_chunk *c = &s->c[e->chunk];
		size_t dsz = fl__snap_zstd_dctx_size();
		uint8_t *cb = malloc(c->clen), *rb = malloc(c->rlen);
		void *ctx = malloc(dsz);

		T_ASSERT(e->chunk < s->h.chunk_count);
		T_ASSERT(cb && rb && ctx);
		pread_all(s->fd, cb, c->clen, c->off);
		T_ASSERT_EQ(fl__crc32c(0, cb, c->clen), c->crc);
		T_ASSERT_OK(fl__snap_zstd_decompress(ctx, dsz, rb, c->rlen, cb, c->clen));
		T_ASSERT((uint64_t)(e->slot + 1) * ps <= c->rlen);
		memcpy(buf, rb + (size_t)e->slot * ps, ps);
		T_ASSERT_EQ(fl__crc32c(0, buf, ps), e->crc);
		free(cb);
		free(rb);
		free(ctx);
		break;
	}
	case FL__SNAP_ZERO:
	case FL__SNAP_ABSENT:
		memset(buf, 0, ps);
		break;
	default:
		break;
	}
	return e->kind;
}

/* ------------------------------------------------------------ the writer */

struct put_job {
	struct fl_snapshot_writer *w;
	uint32_t nregions;
	uint64_t len[2];
	size_t ps[2];
	unsigned int t, nthreads;
	pthread_barrier_t *bar;	/* start together; duplicates once all are through */
	int eexist;		/* second puts refused */
};

/* Put every page of which index % nthreads == t, from the end backwards, then one twice. */
static void *put_thread(void *arg)
{
	struct put_job *j = arg;
	uint8_t *buf = malloc(2 * MiB);

	T_ASSERT(buf);
	pthread_barrier_wait(j->bar);
	for (uint32_t r = 0; r < j->nregions; r++) {
		uint64_t n = j->len[r] / j->ps[r];

		for (uint64_t i = n; i-- > 0;) {
			if (i % j->nthreads != j->t)
				continue;
			test_page_fill(buf, r, i * j->ps[r], j->ps[r], 0);
			T_ASSERT_OK(fl_snapshot_writer_put(j->w, r, i * j->ps[r], buf, j->ps[r]));
		}
	}
	/* A page another thread saved (once all did): refused, nothing of this call saved. */
	pthread_barrier_wait(j->bar);
	memset(buf, 0xee, 2 * PG);
	if (fl_snapshot_writer_put(j->w, 0, (uint64_t)((j->t + 1) % j->nthreads) * PG, buf,
				   2 * PG) == -EEXIST)
		j->eexist++;
	free(buf);
	return NULL;
}

/* Write a two-region snapshot from @nthreads threads at once; returns its id in @id. */
static void write_test_snapshot(const char *path, uint32_t flags, unsigned int nthreads,
				uint8_t id[16])
{
	struct fl_snapshot_writer *w = writer_new(path, flags, NULL);
	struct put_job jobs[8];
	unsigned long tids[8];
	pthread_barrier_t bar;
	uint32_t idx = 99;

	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x7f0000000000ull, 3 * MiB + 5 * PG, PG, 0,
						  &idx));
	T_ASSERT_EQ(idx, 0);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x7f1000000000ull, 4 * MiB, 2 * MiB, 7,
						  &idx));
	T_ASSERT_EQ(idx, 1);
	pthread_barrier_init(&bar, NULL, nthreads);
	for (unsigned int t = 0; t < nthreads; t++) {
		jobs[t] = (struct put_job){ .w = w, .nregions = 2, .len = { 3 * MiB + 5 * PG, 4 * MiB },
					    .ps = { PG, 2 * MiB }, .t = t, .nthreads = nthreads,
					    .bar = &bar };
		tids[t] = t_thread_start(put_thread, &jobs[t]);
	}
	for (unsigned int t = 0; t < nthreads; t++) {
		t_thread_join(tids[t]);
		T_ASSERT_EQ(jobs[t].eexist, 1);
	}
	pthread_barrier_destroy(&bar);
	/* No more regions once pages were put. */
	T_ASSERT_ERR(fl_snapshot_writer_add_region(w, 0, PG, PG, 0, NULL), EBUSY);
	T_ASSERT_OK(fl_snapshot_writer_finish(w, id));
}

/* Every page of the test snapshot at @path reads back as written, zero pages as holes. */
static void check_test_snapshot_raw(const char *path, bool zstd)
{
	struct raw_snap s;
	uint8_t *buf = malloc(2 * MiB), *want = malloc(2 * MiB);
	uint64_t zero = 0, data = 0;

	T_ASSERT(buf && want);
	raw_open(&s, path);
	T_ASSERT_EQ(s.h.region_count, 2);
	T_ASSERT_EQ(s.h.flags, zstd ? FL__SNAP_F_ZSTD : 0);
	T_ASSERT_EQ(s.r[0].addr, 0x7f0000000000ull);
	T_ASSERT_EQ(s.r[0].len, 3 * MiB + 5 * PG);
	T_ASSERT_EQ(s.r[0].page_size, PG);
	T_ASSERT_EQ(s.r[1].page_size, 2 * MiB);
	T_ASSERT_EQ(s.r[1].flags, 7);
	T_ASSERT_EQ(s.r[1].first_entry, s.r[0].pages);
	if (!zstd) {
		/* Whole 2 MiB runs: each region's data starts on a 2 MiB boundary. */
		T_ASSERT_EQ(s.r[0].data_off % (2 * MiB), 0);
		T_ASSERT_EQ(s.r[1].data_off % (2 * MiB), 0);
		T_ASSERT(s.r[1].data_off >= s.r[0].data_off + s.r[0].len);
	}
	for (uint32_t r = 0; r < 2; r++) {
		for (uint64_t i = 0; i < s.r[r].pages; i++) {
			size_t ps = s.r[r].page_size;
			uint32_t kind = raw_page(&s, r, i, buf);

			test_page_fill(want, r, i * ps, ps, 0);
			if (test_page_zero(i)) {
				T_ASSERT_EQ(kind, FL__SNAP_ZERO);
				zero++;
				/* A zero page takes no space: a hole in the file. */
				if (!zstd)
					T_ASSERT_EQ(lseek(s.fd, (off_t)(s.r[r].data_off + i * ps),
							  SEEK_DATA) != (off_t)(s.r[r].data_off + i * ps),
						    1);
			} else {
				T_ASSERT_EQ(kind, zstd ? FL__SNAP_ZSTD : FL__SNAP_DATA);
				data++;
			}
			if (memcmp(buf, want, ps))
				t_fail(__FILE__, __LINE__, "region %u page %llu differs", r,
				       (unsigned long long)i);
		}
	}
	T_ASSERT(zero > 0 && data > 0);
	raw_close(&s);
	free(buf);
	free(want);
}

TEST(snapshot_writer_concurrent_puts)
{
	char path[64];
	uint8_t id[16] = { 0 }, none[16] = { 0 };

	snap_path(path, "w");
	write_test_snapshot(path, 0, 4, id);
	T_ASSERT(memcmp(id, none, 16));
	check_test_snapshot_raw(path, false);
	unlink(path);
}

TEST(snapshot_writer_zstd)
{
	struct fl_snapshot_writer_opts o = { .sz = sizeof(o), .flags = FL_SNAPSHOT_ZSTD };
	struct fl_snapshot_writer *w = NULL;
	char path[64];
	uint8_t id[16];
	struct stat st;

	snap_path(path, "z");
	if (!fl__snap_zstd_available()) {
		T_ASSERT_ERR(fl_snapshot_writer_create(path, &o, &w), EOPNOTSUPP);
		T_ASSERT_EQ(access(path, F_OK), -1);
		T_SKIP("built without libzstd (FL_SNAPSHOT_ZSTD refused as documented)");
	}
	write_test_snapshot(path, FL_SNAPSHOT_ZSTD, 3, id);
	check_test_snapshot_raw(path, true);
	/* The pattern compresses poorly, but zero pages take nothing: smaller than the image. */
	T_ASSERT_SYS(stat(path, &st));
	T_ASSERT(st.st_size < (off_t)(7 * MiB));
	unlink(path);
}

TEST(snapshot_writer_errors)
{
	struct fl_snapshot_writer_opts o = { .sz = sizeof(o) };
	struct fl_snapshot_writer *w = NULL;
	uint8_t page[PG], id[16];
	char path[64];
	struct raw_snap s;

	memset(page, 0x5a, sizeof(page));
	snap_path(path, "e");
	T_ASSERT_ERR(fl_snapshot_writer_create(NULL, NULL, &w), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_create(path, NULL, NULL), EINVAL);
	o.flags = 1u << 9;
	T_ASSERT_ERR(fl_snapshot_writer_create(path, &o, &w), EINVAL);
	o.flags = 0;
	o.zstd_level = 3;	/* without FL_SNAPSHOT_ZSTD */
	T_ASSERT_ERR(fl_snapshot_writer_create(path, &o, &w), EINVAL);
	T_ASSERT_EQ(access(path, F_OK), -1);

	/* Abandoned: the partial file is removed. */
	w = writer_new(path, 0, NULL);
	T_ASSERT_EQ(access(path, F_OK), 0);
	/* O_EXCL: an existing file is not overwritten. */
	{
		struct fl_snapshot_writer *w2 = NULL;

		T_ASSERT_ERR(fl_snapshot_writer_create(path, NULL, &w2), EEXIST);
	}
	T_ASSERT_ERR(fl_snapshot_writer_add_region(w, 0, PG, 1000, 0, NULL), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_add_region(w, 0, PG + 1, PG, 0, NULL), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_add_region(w, PG / 2, PG, PG, 0, NULL), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_add_region(w, 0, 0, PG, 0, NULL), EINVAL);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0, 8 * PG, PG, 0, NULL));
	T_ASSERT_ERR(fl_snapshot_writer_put(w, 1, 0, page, PG), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_put(w, 0, 100, page, PG), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_put(w, 0, 7 * PG, page, 2 * PG), EINVAL);
	T_ASSERT_ERR(fl_snapshot_writer_mark(w, 0, 0, PG, 77), EINVAL);
	fl_snapshot_writer_destroy(w);
	T_ASSERT_EQ(access(path, F_OK), -1);
	fl_snapshot_writer_destroy(NULL);

	/* A full snapshot with a page never put: refused at finish, the file removed. */
	w = writer_new(path, 0, NULL);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0, 4 * PG, PG, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 0, page, PG));
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, PG, PG, FL_SNAPSHOT_MARK_ZERO));
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, 2 * PG, PG, FL_SNAPSHOT_MARK_ABSENT));
	/* A page marked is taken, as one put. */
	T_ASSERT_ERR(fl_snapshot_writer_put(w, 0, PG, page, PG), EEXIST);
	T_ASSERT_ERR(fl_snapshot_writer_finish(w, id), EINVAL);
	T_ASSERT_EQ(access(path, F_OK), -1);

	/* The same with every page: kinds as put and marked. */
	w = writer_new(path, 0, NULL);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0, 4 * PG, PG, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, PG, PG, FL_SNAPSHOT_MARK_ZERO));
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, 2 * PG, PG, FL_SNAPSHOT_MARK_ABSENT));
	/* A call that overlaps a saved page saves nothing, so page 0 can still be put. */
	T_ASSERT_ERR(fl_snapshot_writer_put(w, 0, 0, NULL, 2 * PG), EEXIST);
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 0, page, PG));
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 3 * PG, NULL, PG));
	T_ASSERT_OK(fl_snapshot_writer_finish(w, id));
	raw_open(&s, path);
	T_ASSERT_EQ(s.e[0].kind, FL__SNAP_DATA);
	T_ASSERT_EQ(s.e[0].crc, fl__crc32c(0, page, PG));
	T_ASSERT_EQ(s.e[1].kind, FL__SNAP_ZERO);
	T_ASSERT_EQ(s.e[2].kind, FL__SNAP_ABSENT);
	T_ASSERT_EQ(s.e[3].kind, FL__SNAP_ZERO);
	T_ASSERT(!memcmp(s.h.id, id, 16));
	raw_close(&s);
	unlink(path);

	/* An incremental snapshot: pages never put are the parent's. */
	w = writer_new(path, 0, id);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0, 4 * PG, PG, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 2 * PG, page, PG));
	{
		uint8_t id2[16];

		T_ASSERT_OK(fl_snapshot_writer_finish(w, id2));
		T_ASSERT(memcmp(id, id2, 16));
	}
	raw_open(&s, path);
	T_ASSERT_EQ(s.h.flags, FL__SNAP_F_INCREMENTAL);
	T_ASSERT(!memcmp(s.h.parent_id, id, 16));
	T_ASSERT_EQ(s.e[0].kind, FL__SNAP_PARENT);
	T_ASSERT_EQ(s.e[2].kind, FL__SNAP_DATA);
	raw_close(&s);
	unlink(path);
}

/* ------------------------------------------------------------ the reader */

static char last_log[512];

static void log_keep(enum fl_log_level level, const char *msg)
{
	if (level == FL_LOG_ERROR)
		snprintf(last_log, sizeof(last_log), "%s", msg);
}

/* Open @path as a snapshot: must be refused (-@err) with a message containing @why. */
static void expect_refused(const char *path, int err, const char *why)
{
	struct fl_snapshot *s = NULL;
	struct fl_store *st = NULL;

	last_log[0] = '\0';
	fl_set_log_fn(log_keep);
	T_ASSERT_ERR(fl_snapshot_open(path, NULL, &s), err);
	T_ASSERT(!s);
	if (!strstr(last_log, why))
		t_fail(__FILE__, __LINE__, "refused with \"%s\", not \"%s\"", last_log, why);
	T_ASSERT_ERR(fl_store_snapshot_open(path, NULL, &st), err);
	fl_set_log_fn(NULL);
}

static struct fl_snapshot *snap_open_ok(const char *path, const char *const *parents)
{
	struct fl_snapshot_open_opts o = { .sz = sizeof(o), .parents = parents };
	struct fl_snapshot *s = NULL;

	T_ASSERT_OK(fl_snapshot_open(path, &o, &s));
	T_ASSERT(s);
	return s;
}

static void check_test_snapshot_read(const char *path, bool zstd)
{
	struct fl_snapshot *s = snap_open_ok(path, NULL);
	struct fl_snapshot_info info = { .sz = sizeof(info) };
	struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };
	uint8_t *buf = malloc(4 * MiB), *want = malloc(2 * MiB);
	uint64_t holes[1024 / 64], bad = 99, zeros = 0;

	T_ASSERT(buf && want);
	T_ASSERT_OK(fl_snapshot_info(s, &info));
	T_ASSERT_EQ(info.regions, 2);
	T_ASSERT_EQ(info.chain, 1);
	T_ASSERT_EQ(info.flags, zstd ? FL_SNAPSHOT_INFO_ZSTD : 0);
	T_ASSERT_OK(fl_snapshot_region_info(s, 0, &ri));
	T_ASSERT_EQ(ri.len, 3 * MiB + 5 * PG);
	T_ASSERT_EQ(ri.page_size, PG);
	for (uint64_t i = 0; i < ri.len / PG; i++)
		zeros += test_page_zero(i);
	T_ASSERT_EQ(ri.pages_zero, zeros);
	T_ASSERT_EQ(ri.pages_data, ri.len / PG - zeros);
	T_ASSERT_EQ(ri.pages_parent, 0);
	T_ASSERT_EQ(ri.chain_zero, zeros);
	T_ASSERT_ERR(fl_snapshot_region_info(s, 2, &ri), EINVAL);

	/* Region 0 in one read of 3 MiB + 5 pages: zero pages are holes, the rest as written. */
	memset(holes, 0, sizeof(holes));
	memset(buf, 0xcc, 4 * MiB);
	T_ASSERT_OK(fl_snapshot_read(s, 0, 0, buf, 3 * MiB + 5 * PG, PG, holes));
	for (uint64_t i = 0; i < (3 * MiB + 5 * PG) / PG; i++) {
		T_ASSERT_EQ(fl__bit_test(holes, i), test_page_zero(i));
		if (test_page_zero(i))
			continue;
		test_page_fill(want, 0, i * PG, PG, 0);
		if (memcmp(buf + i * PG, want, PG))
			t_fail(__FILE__, __LINE__, "page %llu differs", (unsigned long long)i);
	}
	/* In pages of 2 MiB: no page is all zeros, so the zero pages are written as zeros. */
	memset(holes, 0, sizeof(holes));
	memset(buf, 0xcc, 2 * MiB);
	T_ASSERT_OK(fl_snapshot_read(s, 0, 0, buf, 2 * MiB, 2 * MiB, holes));
	T_ASSERT_EQ(holes[0], 0);
	for (uint64_t i = 0; i < 2 * MiB / PG; i++) {
		test_page_fill(want, 0, i * PG, PG, 0);
		T_ASSERT(!memcmp(buf + i * PG, want, PG));
	}
	/* Region 1's 2 MiB pages, in one read; smaller pages cannot be served. */
	memset(holes, 0, sizeof(holes));
	T_ASSERT_OK(fl_snapshot_read(s, 1, 0, buf, 4 * MiB, 2 * MiB, holes));
	for (uint64_t i = 0; i < 2; i++) {
		T_ASSERT_EQ(fl__bit_test(holes, i), test_page_zero(i));
		test_page_fill(want, 1, i * 2 * MiB, 2 * MiB, 0);
		if (!test_page_zero(i))
			T_ASSERT(!memcmp(buf + i * 2 * MiB, want, 2 * MiB));
	}
	T_ASSERT_ERR(fl_snapshot_read(s, 1, 0, buf, PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_snapshot_read(s, 0, 3 * MiB, buf, 8 * PG, PG, holes), EINVAL);
	T_ASSERT_OK(fl_snapshot_verify(s, &bad));
	T_ASSERT_EQ(bad, 0);
	fl_snapshot_close(s);
	free(buf);
	free(want);
}

TEST(snapshot_read_back)
{
	char path[64];
	uint8_t id[16];
	struct fl_snapshot_info info = { .sz = sizeof(info) };
	struct fl_snapshot *s;

	snap_path(path, "r");
	write_test_snapshot(path, 0, 3, id);
	check_test_snapshot_read(path, false);
	s = snap_open_ok(path, NULL);
	T_ASSERT_OK(fl_snapshot_info(s, &info));
	T_ASSERT(!memcmp(info.id, id, 16));
	fl_snapshot_close(s);
	unlink(path);
	if (fl__snap_zstd_available()) {
		write_test_snapshot(path, FL_SNAPSHOT_ZSTD, 3, id);
		check_test_snapshot_read(path, true);
		unlink(path);
	}
}

/* Flip one byte of the file at @pos. */
static void flip_byte(const char *path, uint64_t pos)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	uint8_t b;

	T_ASSERT_SYS(fd);
	pread_all(fd, &b, 1, pos);
	b ^= 0x40;
	T_ASSERT_EQ(pwrite(fd, &b, 1, (off_t)pos), 1);
	close(fd);
}

TEST(snapshot_refuses_bad_files)
{
	struct fl_snapshot_writer *w;
	struct raw_snap rs;
	char path[64];
	uint8_t id[16];
	int fd;

	snap_path(path, "b");
	T_ASSERT_ERR(fl_snapshot_open(NULL, NULL, NULL), EINVAL);
	expect_refused(path, ENOENT, "No such file");
	/* Unfinished: no header yet. */
	w = writer_new(path, 0, NULL);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0, 16 * PG, PG, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 0, NULL, 16 * PG));
	expect_refused(path, EINVAL, "shorter than a header");
	T_ASSERT_OK(fl_snapshot_writer_finish(w, id));
	raw_open(&rs, path);
	raw_close(&rs);
	/* Truncated by a page, and extended by one. */
	T_ASSERT_SYS(truncate(path, (off_t)(rs.h.file_size - PG)));
	expect_refused(path, EINVAL, "truncated");
	T_ASSERT_SYS(truncate(path, (off_t)(rs.h.file_size + PG)));
	expect_refused(path, EINVAL, "extended");
	T_ASSERT_SYS(truncate(path, (off_t)rs.h.file_size));
	/* Back to its size, the tables read zeros where it was cut: their CRCs say so. */
	expect_refused(path, EINVAL, "CRC does not match (corrupted)");
	unlink(path);

	write_test_snapshot(path, 0, 2, id);
	raw_open(&rs, path);
	raw_close(&rs);
	flip_byte(path, 20);	/* region count */
	expect_refused(path, EINVAL, "header CRC");
	flip_byte(path, 20);
	flip_byte(path, 0);
	expect_refused(path, EINVAL, "bad magic");
	flip_byte(path, 0);
	flip_byte(path, rs.h.region_table_off + 9);
	expect_refused(path, EINVAL, "region table's CRC");
	flip_byte(path, rs.h.region_table_off + 9);
	/* Not a snapshot at all. */
	unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	T_ASSERT_SYS(fd);
	T_ASSERT_SYS(ftruncate(fd, 3 * PG));
	close(fd);
	expect_refused(path, EINVAL, "bad magic");
	unlink(path);
}

/* ------------------------------------------------------- the snapshot store */

#define RS_PAGES 512u	/* 2 MiB of 4 KiB pages */

/* Generation @gen of page @pg: the pattern with a seed per generation; every 7th page zero. */
static void gen_page(uint8_t *buf, uint64_t pg, uint64_t gen)
{
	test_page_fill(buf, 0, pg * PG, PG, gen);
}

/* A full snapshot of RS_PAGES pages of generation 0. */
static void write_rs(const char *path, uint32_t flags, uint8_t id[16])
{
	struct fl_snapshot_writer *w = writer_new(path, flags, NULL);
	uint8_t *buf = malloc(RS_PAGES * PG);

	T_ASSERT(buf);
	for (uint64_t i = 0; i < RS_PAGES; i++)
		gen_page(buf + i * PG, i, 0);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x10000000, RS_PAGES * PG, PG, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 0, buf, RS_PAGES * PG));
	T_ASSERT_OK(fl_snapshot_writer_finish(w, id));
	free(buf);
}

/* The bytes restored in @mem are generation @gen_of(pg) of each page (0 for none = zeros). */
static void check_mem(const uint8_t *mem, uint64_t npages, const uint8_t *gens)
{
	uint8_t want[PG];

	for (uint64_t i = 0; i < npages; i++) {
		if (gens[i] == 0xff)
			memset(want, 0, PG);
		else
			gen_page(want, i, gens[i]);
		if (memcmp(mem + i * PG, want, PG))
			t_fail(__FILE__, __LINE__, "page %llu is not generation %u",
			       (unsigned long long)i, gens[i]);
	}
}

struct restore_case {
	const char *path;
	const char *const *parents;
	const uint8_t *gens;	/* expected generation per page, 0xff: zeros */
	enum fl_pager_mode mode;
	enum fl_prefetch prefetch;
	enum fl_mem_type mem;
	enum fl_install install;
	uint32_t flags;		/* FL_SNAPSHOT_OPEN_* */
};

/* Restore through a pager in this process and check every page (run in a child). */
static void restore_and_check(void *arg)
{
	const struct restore_case *rc = arg;
	struct fl_store_snapshot_opts so = { .sz = sizeof(so), .parents = rc->parents,
					     .flags = rc->flags };
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_store *s = NULL;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts o;
	uint64_t zeros = 0;

	T_ASSERT_OK(fl_store_snapshot_open(rc->path, &so, &s));
	T_ASSERT_EQ(fl_store_size(s), RS_PAGES * PG);
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_READONLY | FL_STORE_HOLES);
	p = t_pager_new(rc->mode, 2, 0);
	o = t_region_opts(s, RS_PAGES * PG);
	o.prefetch = rc->prefetch;
	o.prefetch_max = 64 * PG;
	o.mem = rc->mem;
	o.install = rc->install;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	check_mem(fl_region_addr(r), RS_PAGES, rc->gens);
	T_ASSERT_OK(fl_region_stats(r, &st));
	for (uint64_t i = 0; i < RS_PAGES; i++)
		zeros += rc->gens[i] == 0xff || test_page_zero(i);
	/* Zero pages are installed as zero pages, the others with data (copied, moved, mapped). */
	T_ASSERT_EQ(st.pages_zero, zeros);
	T_ASSERT_EQ(st.pages_copy + st.pages_move + st.pages_continue, RS_PAGES - zeros);
	T_ASSERT_EQ(st.pages_poison, 0);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

static void expect_child_ok(int status)
{
	if (WIFSIGNALED(status))
		t_fail(__FILE__, __LINE__, "child killed by signal %d", WTERMSIG(status));
	T_ASSERT(WIFEXITED(status));
	T_ASSERT_EQ(WEXITSTATUS(status), 0);
}

TEST(snapshot_restore_pager)
{
	uint8_t gens[RS_PAGES], id[16];
	struct restore_case rc = { .gens = gens, .mode = FL_PAGER_THREADS };
	char path[64];

	memset(gens, 0, sizeof(gens));
	snap_path(path, "p");
	rc.path = path;
	write_rs(path, 0, id);
	/* In other processes than the writer: demand faults one by one, then prefetch. */
	expect_child_ok(t_run_child(restore_and_check, &rc));
	rc.prefetch = FL_PREFETCH_FIXED;
	expect_child_ok(t_run_child(restore_and_check, &rc));
	if (t_have(FL_FEAT_SIGBUS)) {
		rc.mode = FL_PAGER_SIGBUS;
		expect_child_ok(t_run_child(restore_and_check, &rc));
	}
	/* memfd memory, filled by copying and through its page cache (CONTINUE). */
	rc.mode = FL_PAGER_THREADS;
	rc.mem = FL_MEM_SHMEM;
	if (t_have(FL_FEAT_MISSING_SHMEM))
		expect_child_ok(t_run_child(restore_and_check, &rc));
	rc.install = FL_INSTALL_CONTINUE;
	if (t_have(FL_FEAT_MINOR_SHMEM))
		expect_child_ok(t_run_child(restore_and_check, &rc));
	rc.mem = FL_MEM_ANON;
	rc.install = FL_INSTALL_AUTO;
	unlink(path);
	if (fl__snap_zstd_available()) {
		write_rs(path, FL_SNAPSHOT_ZSTD, id);
		rc.mode = FL_PAGER_THREADS;
		expect_child_ok(t_run_child(restore_and_check, &rc));
		if (t_have(FL_FEAT_SIGBUS)) {
			rc.mode = FL_PAGER_SIGBUS;
			expect_child_ok(t_run_child(restore_and_check, &rc));
		}
		unlink(path);
	}
}

struct corrupt_case {
	const char *path;
	const uint8_t *bad;	/* per page: 1 if its bytes were corrupted in the file */
	enum fl_pager_mode mode;
};

/*
 * Every good page restores exactly, including those that share a prefetch
 * window (or a run) with a bad one; each bad page is poisoned: SIGBUS.
 */
static void *read_page(void *arg)
{
	return (void *)(uintptr_t)*(volatile uint8_t *)arg;
}

static void restore_corrupt(void *arg)
{
	const struct corrupt_case *cc = arg;
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER };
	struct fl_store *s = NULL;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts o;
	uint64_t nbad = 0, first_bad = RS_PAGES;
	uint8_t want[PG], *mem;
	bool blocked = false;

	sigemptyset(&sa.sa_mask);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	T_ASSERT_OK(fl_store_snapshot_open(cc->path, NULL, &s));
	p = t_pager_new(cc->mode, 2, 0);
	o = t_region_opts(s, RS_PAGES * PG);
	o.prefetch = FL_PREFETCH_FIXED;
	o.prefetch_max = 64 * PG;
	o.on_error = FL_ON_ERROR_POISON;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	mem = fl_region_addr(r);
	for (uint64_t i = 0; i < RS_PAGES; i++)
		if (cc->bad[i] && first_bad == RS_PAGES)
			first_bad = i;
	T_ASSERT(first_bad > 0 && first_bad < RS_PAGES);
	/* The page just before the first bad one first: its prefetch window covers the bad one. */
	for (uint64_t k = 0; k < RS_PAGES; k++) {
		uint64_t i = (k + first_bad - 1) % RS_PAGES;

		if (cc->bad[i] && !t_have(FL_FEAT_POISON)) {
			/*
			 * Before 6.6 nothing can be poisoned: the fault on the first bad
			 * page stays blocked (never zeros); the others are left alone.
			 */
			if (!blocked) {
				t_thread_start(read_page, mem + i * PG + 5);
				T_ASSERT(t_wait_fault_blocked(getpid(), 10000));
				blocked = true;
			}
			nbad++;
			continue;
		}
		if (cc->bad[i]) {
			if (!t_read_sigbus(mem + i * PG + 5))
				t_fail(__FILE__, __LINE__, "corrupted page %llu read without SIGBUS",
				       (unsigned long long)i);
			nbad++;
			continue;
		}
		gen_page(want, i, 0);
		if (memcmp(mem + i * PG, want, PG))
			t_fail(__FILE__, __LINE__, "good page %llu is not as written",
			       (unsigned long long)i);
	}
	if (blocked)
		_exit(0);	/* ends the blocked reader; destroying would make its page PROT_NONE */
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT_EQ(st.pages_poison, nbad);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

TEST(snapshot_corrupt_page_sigbus)
{
	uint8_t bad[RS_PAGES], id[16];
	struct corrupt_case cc = { .bad = bad, .mode = FL_PAGER_THREADS };
	struct fl_snapshot *s;
	struct raw_snap rs;
	uint64_t nbad = 0;
	char path[64];

	snap_path(path, "c");
	cc.path = path;
	write_rs(path, 0, id);
	raw_open(&rs, path);
	raw_close(&rs);
	/* Page 100 (not a zero page) gets one byte wrong. */
	memset(bad, 0, sizeof(bad));
	bad[100] = 1;
	T_ASSERT(!test_page_zero(100));
	flip_byte(path, rs.r[0].data_off + 100 * PG + 1234);
	s = snap_open_ok(path, NULL);
	T_ASSERT_ERR(fl_snapshot_verify(s, &nbad), EIO);
	T_ASSERT_EQ(nbad, 1);
	fl_snapshot_close(s);
	expect_child_ok(t_run_child(restore_corrupt, &cc));
	/* SIGBUS mode's blocked fault waits in the handler: pager_store_error_poison has it. */
	if (t_have(FL_FEAT_SIGBUS) && t_have(FL_FEAT_POISON)) {
		cc.mode = FL_PAGER_SIGBUS;
		expect_child_ok(t_run_child(restore_corrupt, &cc));
	}
	unlink(path);

	if (!fl__snap_zstd_available())
		return;
	/* Compressed: a corrupted chunk fails every page it holds, and only those. */
	write_rs(path, FL_SNAPSHOT_ZSTD, id);
	raw_open(&rs, path);
	{
		const struct fl__snap_entry *e = &rs.e[rs.r[0].first_entry + 100];
		const struct fl__snap_chunk *c = &rs.c[e->chunk];

		T_ASSERT_EQ(e->kind, FL__SNAP_ZSTD);
		for (uint64_t i = 0; i < RS_PAGES; i++)
			bad[i] = rs.e[i].kind == FL__SNAP_ZSTD && rs.e[i].chunk == e->chunk;
		T_ASSERT(!bad[0]);
		flip_byte(path, c->off + c->clen / 2);
	}
	raw_close(&rs);
	nbad = 0;
	for (uint64_t i = 0; i < RS_PAGES; i++)
		nbad += bad[i];
	T_ASSERT(nbad > 1);
	{
		uint64_t got = 0;

		s = snap_open_ok(path, NULL);
		T_ASSERT_ERR(fl_snapshot_verify(s, &got), EIO);
		T_ASSERT_EQ(got, nbad);
		fl_snapshot_close(s);
	}
	cc.mode = FL_PAGER_THREADS;
	expect_child_ok(t_run_child(restore_corrupt, &cc));
	unlink(path);
}

/* ------------------------------------------------------------------ chains */

/*
 * A full snapshot, then two incremental ones: the first changes 5% of the
 * pages (generation 1) and discards a few (zero), the second changes some of
 * those again and others (generation 2). Restoring the chain gives the newest.
 */
TEST(snapshot_chain_restore)
{
	char p0[64], p1[64], p2[64], other[64];
	uint8_t id0[16], id1[16], id2[16], idx[16], gens[RS_PAGES], page[PG];
	struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };
	struct fl_snapshot_info info = { .sz = sizeof(info) };
	struct fl_snapshot_open_opts oo = { .sz = sizeof(oo), .flags = FL_SNAPSHOT_OPEN_ALONE };
	struct restore_case rc = { .gens = gens, .mode = FL_PAGER_THREADS,
				   .prefetch = FL_PREFETCH_FIXED };
	struct fl_snapshot_writer *w;
	struct fl_snapshot *s;
	uint64_t changed1 = 0, bad = 1;

	snap_path(p0, "c0");
	snap_path(p1, "c1");
	snap_path(p2, "c2");
	snap_path(other, "cx");
	memset(gens, 0, sizeof(gens));
	write_rs(p0, 0, id0);

	w = writer_new(p1, 0, id0);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x10000000, RS_PAGES * PG, PG, 0, NULL));
	for (uint64_t i = 5; i < RS_PAGES; i += 20) {	/* 5% */
		gen_page(page, i, 1);
		T_ASSERT_OK(fl_snapshot_writer_put(w, 0, i * PG, page, PG));
		gens[i] = 1;
		changed1 += !test_page_zero(i);	/* a zero page stays one */
	}
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, 7 * PG, 2 * PG, FL_SNAPSHOT_MARK_ZERO));
	gens[7] = gens[8] = 0xff;
	T_ASSERT_OK(fl_snapshot_writer_finish(w, id1));

	w = writer_new(p2, fl__snap_zstd_available() ? FL_SNAPSHOT_ZSTD : 0, id1);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x10000000, RS_PAGES * PG, PG, 0, NULL));
	for (uint64_t i = 5; i < RS_PAGES; i += 40) {
		gen_page(page, i, 2);
		T_ASSERT_OK(fl_snapshot_writer_put(w, 0, i * PG, page, PG));
		gens[i] = 2;
	}
	gen_page(page, 8, 2);	/* discarded in 1, written again in 2 */
	T_ASSERT_OK(fl_snapshot_writer_put(w, 0, 8 * PG, page, PG));
	gens[8] = 2;
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, 300 * PG, PG, FL_SNAPSHOT_MARK_ABSENT));
	gens[300] = 0xff;
	T_ASSERT_OK(fl_snapshot_writer_finish(w, id2));

	/* Parents found by id in the same directory. */
	s = snap_open_ok(p2, NULL);
	T_ASSERT_OK(fl_snapshot_info(s, &info));
	T_ASSERT_EQ(info.chain, 3);
	T_ASSERT(info.flags & FL_SNAPSHOT_INFO_INCREMENTAL);
	T_ASSERT(!memcmp(info.id, id2, 16));
	T_ASSERT(!memcmp(info.parent_id, id1, 16));
	T_ASSERT_OK(fl_snapshot_verify(s, &bad));
	T_ASSERT_EQ(bad, 0);
	fl_snapshot_close(s);
	/* The first incremental alone: what it holds. */
	T_ASSERT_OK(fl_snapshot_open(p1, &oo, &s));
	T_ASSERT_OK(fl_snapshot_region_info(s, 0, &ri));
	T_ASSERT_EQ(ri.pages_data, changed1);
	T_ASSERT_EQ(ri.pages_zero, 2 + (RS_PAGES / 20 + 1 - changed1));
	T_ASSERT_EQ(ri.pages_parent, RS_PAGES - (RS_PAGES / 20 + 1) - 2);
	{
		struct fl_store *st = NULL;

		/* Alone, it cannot be restored: the rest is its parent's. */
		T_ASSERT_ERR(fl_snapshot_store(s, 0, &st), EINVAL);
	}
	fl_snapshot_close(s);

	rc.path = p2;
	expect_child_ok(t_run_child(restore_and_check, &rc));
	/* Parents named, in any order. */
	{
		const char *parents[] = { p0, p1, NULL };

		rc.parents = parents;
		expect_child_ok(t_run_child(restore_and_check, &rc));
		rc.parents = NULL;
	}

	/* A parent missing: refused at open, saying which. */
	T_ASSERT_SYS(rename(p0, other));
	{
		const char *parents[] = { p1, NULL };

		last_log[0] = '\0';
		fl_set_log_fn(log_keep);
		oo.flags = 0;
		oo.parents = parents;
		T_ASSERT_ERR(fl_snapshot_open(p2, &oo, &s), ENOENT);
		T_ASSERT(strstr(last_log, "is none of the files given"));
		fl_set_log_fn(NULL);
	}
	/* Found again by id under another name. */
	s = snap_open_ok(p2, NULL);
	fl_snapshot_close(s);
	/* A full snapshot with the same regions but another id in its place: not the parent. */
	T_ASSERT_SYS(unlink(other));
	write_rs(p0, 0, idx);
	expect_refused(p2, ENOENT, "is not in");
	{
		const char *parents[] = { p0, p1, NULL };
		struct fl_snapshot_open_opts po = { .sz = sizeof(po), .parents = parents };

		T_ASSERT_ERR(fl_snapshot_open(p2, &po, &s), ENOENT);
	}
	unlink(p0);
	/* Mismatched regions: an incremental over id0's file with another length. */
	write_rs(p0, 0, id0);
	unlink(p1);
	w = writer_new(p1, 0, id0);
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0x10000000, 2 * RS_PAGES * PG, PG, 0, NULL));
	T_ASSERT_OK(fl_snapshot_writer_finish(w, idx));
	expect_refused(p1, EINVAL, "region 0 is");
	unlink(p0);
	unlink(p1);
	unlink(p2);
}

/* ------------------------------------------------------------- other memory */

struct mem_case {
	const char *path;
	enum fl_mem_type mem;
	enum fl_install install;
};

/*
 * Region 1 of the test snapshot (2 MiB pages) restored into hugetlbfs
 * memory, and the first 2 MiB of region 0 (4 KiB pages, some zero) into
 * 2 MiB pages too: the zero pages inside come back as zeros.
 */
static void restore_huge(void *arg)
{
	const struct mem_case *mc = arg;
	struct fl_store_snapshot_opts so = { .sz = sizeof(so), .region = 1 };
	struct fl_store *s1 = NULL, *s0 = NULL;
	struct fl_pager *p;
	struct fl_region *r1, *r0;
	struct fl_region_opts o;
	uint8_t *want = malloc(2 * MiB), *mem;

	T_ASSERT(want);
	T_ASSERT_OK(fl_store_snapshot_open(mc->path, &so, &s1));
	T_ASSERT_EQ(fl_store_size(s1), 4 * MiB);
	so.region = 0;
	T_ASSERT_OK(fl_store_snapshot_open(mc->path, &so, &s0));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	o = t_region_opts(s1, 4 * MiB);
	o.mem = mc->mem;
	o.install = mc->install;
	T_ASSERT_OK(fl_region_add(p, &o, &r1));
	o = t_region_opts(s0, 2 * MiB);
	o.mem = mc->mem;
	o.install = mc->install;
	T_ASSERT_OK(fl_region_add(p, &o, &r0));
	T_ASSERT_OK(fl_pager_start(p));
	mem = fl_region_addr(r1);
	for (uint64_t i = 0; i < 2; i++) {
		test_page_fill(want, 1, i * 2 * MiB, 2 * MiB, 0);
		T_ASSERT(!memcmp(mem + i * 2 * MiB, want, 2 * MiB));
	}
	mem = fl_region_addr(r0);
	for (uint64_t i = 0; i < 2 * MiB / PG; i++) {
		test_page_fill(want, 0, i * PG, PG, 0);
		if (memcmp(mem + i * PG, want, PG))
			t_fail(__FILE__, __LINE__, "4 KiB page %llu differs", (unsigned long long)i);
	}
	fl_pager_destroy(p);
	fl_store_destroy(s0);
	fl_store_destroy(s1);
	free(want);
}

TEST(snapshot_restore_hugetlb)
{
	struct mem_case mc = { .mem = FL_MEM_HUGETLB, .install = FL_INSTALL_COPY };
	char path[64];
	uint8_t id[16];

	snap_path(path, "h");
	mc.path = path;
	write_test_snapshot(path, 0, 2, id);
	expect_child_ok(t_run_child(restore_huge, &mc));
	if (t_have(FL_FEAT_MINOR_HUGETLBFS)) {
		mc.install = FL_INSTALL_CONTINUE;
		expect_child_ok(t_run_child(restore_huge, &mc));
	}
	unlink(path);
}

/* How many pages of [off, off+len) of the file at @path are in the page cache. */
static uint64_t cached_pages(const char *path, uint64_t off, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *vec = malloc(len / PG);
	uint64_t n = 0;
	void *m;

	T_ASSERT_SYS(fd);
	T_ASSERT(vec);
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
	T_ASSERT(m != MAP_FAILED);
	T_ASSERT_SYS(mincore(m, len, vec));
	for (size_t i = 0; i < len / PG; i++)
		n += vec[i] & 1;
	munmap(m, len);
	close(fd);
	free(vec);
	return n;
}

static void drop_cache(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
}

/* FL_SNAPSHOT_OPEN_DIRECT restores past the page cache; without it the data goes through it. */
TEST(snapshot_restore_direct)
{
	uint8_t gens[RS_PAGES], id[16];
	struct restore_case rc = { .gens = gens, .mode = FL_PAGER_THREADS,
				   .prefetch = FL_PREFETCH_FIXED, .flags = FL_SNAPSHOT_OPEN_DIRECT };
	struct fl_snapshot_open_opts oo = { .sz = sizeof(oo), .flags = FL_SNAPSHOT_OPEN_DIRECT };
	struct fl_snapshot *s = NULL;
	uint64_t nzero = 0;
	char path[64];
	int e;

	memset(gens, 0, sizeof(gens));
	snap_path(path, "d");
	rc.path = path;
	write_rs(path, 0, id);
	e = fl_snapshot_open(path, &oo, &s);
	if (e == -EOPNOTSUPP) {
		unlink(path);
		T_SKIP("no O_DIRECT on /var/tmp's file system");
	}
	T_ASSERT_OK(e);
	fl_snapshot_close(s);
	for (uint64_t i = 0; i < RS_PAGES; i++)
		nzero += test_page_zero(i);
	drop_cache(path);
	if (cached_pages(path, 2 * MiB, RS_PAGES * PG) != 0) {
		unlink(path);
		T_SKIP("this file system keeps the pages cached after POSIX_FADV_DONTNEED");
	}
	expect_child_ok(t_run_child(restore_and_check, &rc));
	T_ASSERT_EQ(cached_pages(path, 2 * MiB, RS_PAGES * PG), 0);
	rc.flags = 0;
	expect_child_ok(t_run_child(restore_and_check, &rc));
	/* Buffered, every data page went through the cache (zero pages are holes: never read). */
	T_ASSERT(cached_pages(path, 2 * MiB, RS_PAGES * PG) >= RS_PAGES - nzero);
	unlink(path);
}

struct reader_job {
	struct fl_snapshot *s;
	unsigned int t;
	pthread_barrier_t *bar;
};

/* Read every page of RS_PAGES, in an order of its own, and check each. */
static void *reader_thread(void *arg)
{
	struct reader_job *j = arg;
	uint8_t *buf = malloc(8 * PG), want[PG];
	uint64_t holes[1];

	T_ASSERT(buf);
	pthread_barrier_wait(j->bar);
	for (unsigned int round = 0; round < 4; round++) {
		for (uint64_t k = 0; k < RS_PAGES / 8; k++) {
			uint64_t g = (k * 13 + j->t * 7 + round) % (RS_PAGES / 8);

			holes[0] = 0;
			T_ASSERT_OK(fl_snapshot_read(j->s, 0, g * 8 * PG, buf, 8 * PG, PG, holes));
			for (uint64_t i = 0; i < 8; i++) {
				uint64_t pg = g * 8 + i;

				T_ASSERT_EQ(fl__bit_test(holes, i), test_page_zero(pg));
				if (test_page_zero(pg))
					continue;
				gen_page(want, pg, 0);
				T_ASSERT(!memcmp(buf + i * PG, want, PG));
			}
		}
	}
	free(buf);
	return NULL;
}

/*
 * More readers than the zstd scratch buffers at once: the extra ones map
 * their own (never wait), and every read is right.
 */
TEST(snapshot_concurrent_reads)
{
	struct reader_job jobs[8];
	unsigned long tids[8];
	pthread_barrier_t bar;
	struct fl_snapshot *s;
	char path[64];
	uint8_t id[16];

	snap_path(path, "t");
	for (int zstd = 0; zstd < 2; zstd++) {
		if (zstd && !fl__snap_zstd_available())
			break;
		write_rs(path, zstd ? FL_SNAPSHOT_ZSTD : 0, id);
		s = snap_open_ok(path, NULL);
		pthread_barrier_init(&bar, NULL, 8);
		for (unsigned int t = 0; t < 8; t++) {
			jobs[t] = (struct reader_job){ .s = s, .t = t, .bar = &bar };
			tids[t] = t_thread_start(reader_thread, &jobs[t]);
		}
		for (unsigned int t = 0; t < 8; t++)
			t_thread_join(tids[t]);
		pthread_barrier_destroy(&bar);
		fl_snapshot_close(s);
		unlink(path);
	}
}
