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
