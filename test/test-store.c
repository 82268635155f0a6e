/* SPDX-License-Identifier: MIT */
/* Store layer tests: the generic checks and the zero, pattern, mem and file stores (no uffd). */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define PG 4096u

/* ------------------------------------------------------------------ helpers */

/*
 * A temporary file under /var/tmp: tmpfs (/tmp on many machines) has no
 * O_DIRECT on older kernels, and we want a disk file system with real holes.
 * @path gets its name; the caller unlinks it once the stores are open.
 */
static int tmp_file(char path[64])
{
	int fd;

	snprintf(path, 64, "/var/tmp/fl-test-store-XXXXXX");
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		t_fail(__FILE__, __LINE__, "mkostemp %s: %s", path, strerror(errno));
	return fd;
}

/* Write the pattern of [off, off+len) with @seed at file offset off. */
static void write_pattern(int fd, uint64_t off, size_t len, uint64_t seed)
{
	uint8_t *buf = malloc(len);
	ssize_t n;

	T_ASSERT(buf);
	fl_pattern_fill(buf, off, len, seed);
	n = pwrite(fd, buf, len, (off_t)off);
	T_ASSERT_SYS(n);
	T_ASSERT_EQ(n, len);
	free(buf);
}

static struct fl_store *file_store(const char *path, uint64_t offset, uint64_t size,
				   uint32_t flags)
{
	struct fl_store_file_opts o = {
		.sz = sizeof(o), .offset = offset, .size = size, .flags = flags,
	};
	struct fl_store *s = NULL;

	T_ASSERT_OK(fl_store_file_open(path, &o, &s));
	T_ASSERT(s);
	return s;
}

/* The descriptors of this process open on @path: how many, and how many are close-on-exec. */
static void fds_on(const char *path, int *ret_n, int *ret_cloexec, int *ret_direct)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char link[80], target[256], info[80], line[128];
	int n = 0, cloexec = 0, direct = 0;

	T_ASSERT(d);
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		ssize_t len;
		unsigned int flags;
		FILE *f;

		if (e->d_name[0] == '.' || fd == dirfd(d))
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		len = readlink(link, target, sizeof(target) - 1);
		if (len < 0)
			continue;
		target[len] = '\0';
		if (strcmp(target, path))
			continue;
		n++;
		if (fcntl(fd, F_GETFD) & FD_CLOEXEC)
			cloexec++;
		snprintf(info, sizeof(info), "/proc/self/fdinfo/%d", fd);
		f = fopen(info, "re");
		T_ASSERT(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "flags: %o", &flags) == 1 && (flags & O_DIRECT))
				direct++;
		fclose(f);
	}
	closedir(d);
	*ret_n = n;
	*ret_cloexec = cloexec;
	*ret_direct = direct;
}

/* --------------------------------------------------------- custom stores */

struct custom {
	int closes;
	int reads;
	int ret;		/* what read() returns */
	uint64_t set_holes;	/* bits read() sets */
	uint64_t last_off;
	size_t last_len, last_ps;
	bool holes_were_zero;
	void *userdata_seen;
};

static int custom_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		       uint64_t *holes)
{
	struct custom *c = userdata;

	c->reads++;
	c->last_off = off;
	c->last_len = len;
	c->last_ps = page_size;
	c->holes_were_zero = holes ? holes[0] == 0 : true;
	memset(buf, 0xab, len);
	if (holes)
		holes[0] |= c->set_holes;
	return c->ret;
}

static int custom_write(void *userdata, uint64_t off, const void *buf, size_t len)
{
	(void)userdata;
	(void)off;
	(void)buf;
	(void)len;
	return 0;
}

static void custom_close(void *userdata)
{
	struct custom *c = userdata;

	c->closes++;
}

TEST(store_create_checks)
{
	struct custom c = { 0 };
	struct fl_store_ops ops = { .sz = sizeof(ops), .close = custom_close };
	struct fl_store *s = NULL;
	struct {
		struct fl_store_ops ops;
		uint64_t future;
	} big = { .ops = { .sz = sizeof(big), .read = custom_read, .close = custom_close } };

	/* No read: refused, and close is never called. */
	T_ASSERT_ERR(fl_store_create(&ops, &c, 0, 64 * KiB, &s), EINVAL);
	T_ASSERT(s == NULL);
	T_ASSERT_EQ(c.closes, 0);

	ops.read = custom_read;
	T_ASSERT_ERR(fl_store_create(NULL, &c, 0, 64 * KiB, &s), EINVAL);
	T_ASSERT_ERR(fl_store_create(&ops, &c, 0, 64 * KiB, NULL), EINVAL);
	T_ASSERT_ERR(fl_store_create(&ops, &c, 1u << 9, 64 * KiB, &s), EINVAL);
	/* MOVE without take_pages. */
	T_ASSERT_ERR(fl_store_create(&ops, &c, FL_STORE_MOVE, 64 * KiB, &s), EINVAL);
	/* sz too small to hold read, or cutting a field in two. */
	ops.sz = offsetof(struct fl_store_ops, read);
	T_ASSERT_ERR(fl_store_create(&ops, &c, 0, 64 * KiB, &s), EINVAL);
	ops.sz = offsetof(struct fl_store_ops, write) + 4;
	T_ASSERT_ERR(fl_store_create(&ops, &c, 0, 64 * KiB, &s), EINVAL);
	ops.sz = 2;
	T_ASSERT_ERR(fl_store_create(&ops, &c, 0, 64 * KiB, &s), EINVAL);
	/* A newer caller's non-zero field we do not know. */
	big.future = 1;
	T_ASSERT_ERR(fl_store_create(&big.ops, &c, 0, 64 * KiB, &s), EINVAL);
	T_ASSERT(s == NULL);
	T_ASSERT_EQ(c.closes, 0);
	T_ASSERT_EQ(c.reads, 0);

	/* ... but zero there is fine. Without write the store is read-only. */
	big.future = 0;
	T_ASSERT_OK(fl_store_create(&big.ops, &c, FL_STORE_HOLES, 64 * KiB, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_HOLES | FL_STORE_READONLY);
	T_ASSERT_EQ(fl_store_size(s), 64 * KiB);
	T_ASSERT_ERR(fl_store_write(s, 0, "x", 0), EROFS);
	fl_store_destroy(s);
	T_ASSERT_EQ(c.closes, 1);

	/* An older caller whose struct ends after read: write, take_pages, close stay NULL. */
	ops.sz = offsetof(struct fl_store_ops, read) + sizeof(ops.read);
	ops.write = custom_write;
	s = NULL;
	T_ASSERT_OK(fl_store_create(&ops, &c, 0, 64 * KiB, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_READONLY);
	fl_store_destroy(s);
	T_ASSERT_EQ(c.closes, 1);

	ops.sz = sizeof(ops);
	T_ASSERT_OK(fl_store_create(&ops, &c, 0, 64 * KiB, &s));
	T_ASSERT_EQ(fl_store_caps(s), 0);
	fl_store_destroy(s);
	T_ASSERT_EQ(c.closes, 2);
	fl_store_destroy(NULL);
	T_ASSERT_EQ(fl_store_caps(NULL), 0);
	T_ASSERT_EQ(fl_store_size(NULL), 0);
}

TEST(store_custom_read_error)
{
	struct custom c = { .ret = -EIO };
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = custom_read, .close = custom_close };
	struct fl_store *s = NULL;
	uint8_t buf[4 * PG];
	uint64_t holes[1] = { ~0ull };

	T_ASSERT_OK(fl_store_create(&ops, &c, FL_STORE_HOLES, 1 * MiB, &s));
	T_ASSERT_ERR(fl_store_read(s, 8 * PG, buf, sizeof(buf), PG, holes), EIO);
	T_ASSERT_EQ(c.reads, 1);
	T_ASSERT_EQ(c.last_off, 8 * PG);
	T_ASSERT_EQ(c.last_len, sizeof(buf));
	T_ASSERT_EQ(c.last_ps, PG);
	/* The callback got a zeroed bitmap although the caller's was not. */
	T_ASSERT(c.holes_were_zero);
	c.ret = -ENODATA;
	T_ASSERT_ERR(fl_store_read(s, 0, buf, sizeof(buf), PG, holes), ENODATA);
	/* Anything but 0 or -errno is a broken store: -EIO, whatever the buffer holds. */
	c.ret = 1;
	T_ASSERT_ERR(fl_store_read(s, 0, buf, sizeof(buf), PG, holes), EIO);
	c.ret = 4096;
	T_ASSERT_ERR(fl_store_read(s, 0, buf, sizeof(buf), PG, holes), EIO);
	c.ret = -100000;
	T_ASSERT_ERR(fl_store_read(s, 0, buf, sizeof(buf), PG, holes), EIO);
	/* Success: the store's hole bits come through. */
	c.ret = 0;
	c.set_holes = 0x5;
	holes[0] = ~0ull;
	T_ASSERT_EQ(fl_store_read(s, 0, buf, sizeof(buf), PG, holes), 0);
	T_ASSERT_EQ(holes[0], 0x5);
	T_ASSERT(t_all(buf, sizeof(buf), 0xab));
	/* A store with holes needs a bitmap; a zero length does not reach the store. */
	T_ASSERT_ERR(fl_store_read(s, 0, buf, sizeof(buf), PG, NULL), EINVAL);
	T_ASSERT_EQ(fl_store_read(s, 0, buf, 0, PG, holes), 0);
	T_ASSERT_EQ(c.reads, 6);
	fl_store_destroy(s);
	T_ASSERT_EQ(c.closes, 1);
}

TEST(store_bounds)
{
	struct fl_store *s = NULL, *big = NULL, *m = NULL;
	uint8_t *buf = t_map_anon(16 * PG);
	uint64_t holes[4];
	void *addr = NULL;

	T_ASSERT_OK(fl_store_pattern_create(64 * KiB, 1, &s));
	T_ASSERT_OK(fl_store_read(s, 60 * KiB, buf, PG, PG, holes));
	T_ASSERT_ERR(fl_store_read(s, 64 * KiB, buf, PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 60 * KiB, buf, 2 * PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 1ull << 63, buf, PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 0, buf, 100, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 100, buf, PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, PG, buf, PG, 2 * PG, holes), EINVAL);	/* off % ps */
	T_ASSERT_ERR(fl_store_read(s, 0, buf, PG, 2048, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 0, buf, 3 * PG, 3 * PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 0, buf, PG, 0, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(s, 0, NULL, PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(NULL, 0, buf, PG, PG, holes), EINVAL);

	/* A store as large as the address space: off + len must not wrap around. */
	T_ASSERT_OK(fl_store_pattern_create(UINT64_MAX, 1, &big));
	T_ASSERT_OK(fl_store_read(big, UINT64_MAX - 2 * PG + 1, buf, PG, PG, holes));
	T_ASSERT_ERR(fl_store_read(big, UINT64_MAX - PG + 1, buf, 2 * PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(big, PG, buf, SIZE_MAX - PG + 1, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_read(big, UINT64_MAX - PG + 1, buf, SIZE_MAX - PG + 1, PG, holes),
		     EINVAL);

	/* Writes and take_pages: page-multiple ranges inside the store. */
	T_ASSERT_OK(fl_store_mem_create(buf, 16 * PG, 0, &m));
	T_ASSERT_OK(fl_store_write(m, 15 * PG, buf, PG));
	T_ASSERT_ERR(fl_store_write(m, 16 * PG, buf, PG), EINVAL);
	T_ASSERT_ERR(fl_store_write(m, 15 * PG, buf, 2 * PG), EINVAL);
	T_ASSERT_ERR(fl_store_write(m, 8, buf, PG), EINVAL);
	T_ASSERT_ERR(fl_store_write(m, 0, buf, 100), EINVAL);
	T_ASSERT_ERR(fl_store_write(m, PG, buf, SIZE_MAX - PG + 1), EINVAL);
	T_ASSERT_ERR(fl_store_write(m, 0, NULL, PG), EINVAL);
	T_ASSERT_ERR(fl_store_write(s, 0, buf, PG), EROFS);
	T_ASSERT_ERR(fl_store_take_pages(m, 16 * PG, PG, &addr), EINVAL);
	T_ASSERT_ERR(fl_store_take_pages(m, PG, SIZE_MAX - PG + 1, &addr), EINVAL);
	T_ASSERT_ERR(fl_store_take_pages(m, 100, PG, &addr), EINVAL);
	T_ASSERT_ERR(fl_store_take_pages(m, 0, 0, &addr), EINVAL);
	T_ASSERT_ERR(fl_store_take_pages(m, 0, PG, NULL), EINVAL);
	T_ASSERT_ERR(fl_store_take_pages(s, 0, PG, &addr), EOPNOTSUPP);
	T_ASSERT(addr == NULL);
	fl_store_destroy(m);
	fl_store_destroy(big);
	fl_store_destroy(s);
	munmap(buf, 16 * PG);
}

/* ---------------------------------------------------------------- pattern */

TEST(store_pattern_functions)
{
	const size_t len = 64 * KiB;
	const uint64_t off = 3 * PG, seed = 42;
	uint8_t *buf = malloc(len), *other = malloc(len + 16);
	uint64_t w, prev = 0, bits = 0;

	T_ASSERT(buf && other);
	fl_pattern_fill(buf, off, len, seed);
	for (size_t i = 0; i < len; i += 8) {
		memcpy(&w, buf + i, 8);
		T_ASSERT_EQ(w, fl_pattern_word(seed, off + i));
		T_ASSERT(w != prev);
		bits += (uint64_t)__builtin_popcountll(w);
		prev = w;
	}
	/* A good mix sets about half the bits: 32 per word, give or take 5.6 sigma. */
	T_ASSERT(bits > len / 8 * 32 - 2048 && bits < len / 8 * 32 + 2048);
	T_ASSERT_EQ(fl_pattern_check(buf, off, len, seed), 0);

	/* A flipped byte is found, by its index in the buffer. */
	buf[1234] ^= 0x10;
	T_ASSERT_EQ(fl_pattern_check(buf, off, len, seed), 1235);
	buf[1234] ^= 0x10;
	buf[len - 1] ^= 1;
	T_ASSERT_EQ(fl_pattern_check(buf, off, len, seed), len);
	buf[len - 1] ^= 1;
	buf[0] ^= 0x80;
	T_ASSERT_EQ(fl_pattern_check(buf, off, len, seed), 1);
	buf[0] ^= 0x80;

	/* Another seed or another offset is another pattern. */
	T_ASSERT_NE(fl_pattern_check(buf, off, len, seed + 1), 0);
	T_ASSERT_NE(fl_pattern_check(buf, off + 8, len - 8, seed), 0);
	T_ASSERT(fl_pattern_word(0, 8) != fl_pattern_word(8, 0));
	T_ASSERT(fl_pattern_word(1, 0) != fl_pattern_word(2, 0));

	/* Offsets and lengths that are not multiples of 8 agree with the aligned fill. */
	fl_pattern_fill(other + 3, off + 5, 1001, seed);
	T_ASSERT(!memcmp(other + 3, buf + 5, 1001));
	T_ASSERT_EQ(fl_pattern_check(other + 3, off + 5, 1001, seed), 0);
	other[3 + 1000] ^= 1;
	T_ASSERT_EQ(fl_pattern_check(other + 3, off + 5, 1001, seed), 1001);
	fl_pattern_fill(other, off + 7, 1, seed);
	T_ASSERT_EQ(other[0], buf[7]);
	T_ASSERT_EQ(fl_pattern_check(buf, off, 0, seed), 0);
	free(other);
	free(buf);
}

TEST(store_pattern_store)
{
	struct fl_store *s = NULL;
	uint8_t *buf = malloc(128 * KiB);
	uint64_t holes[1] = { ~0ull };

	T_ASSERT(buf);
	T_ASSERT_ERR(fl_store_pattern_create(1 * MiB, 9, NULL), EINVAL);
	T_ASSERT_OK(fl_store_pattern_create(1 * MiB, 9, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_READONLY);
	T_ASSERT_EQ(fl_store_size(s), 1 * MiB);
	T_ASSERT_OK(fl_store_read(s, 64 * KiB, buf, 128 * KiB, 16 * KiB, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(buf, 64 * KiB, 128 * KiB, 9), 0);
	/* No holes, so no bitmap needed. */
	T_ASSERT_OK(fl_store_read(s, 0, buf, PG, PG, NULL));
	T_ASSERT_EQ(fl_pattern_check(buf, 0, PG, 9), 0);
	T_ASSERT_ERR(fl_store_write(s, 0, buf, PG), EROFS);
	free(buf);
	fl_store_destroy(s);
}

TEST(store_zero_all_holes)
{
	struct fl_store *s = NULL;
	uint8_t *buf = malloc(70 * PG);
	uint64_t holes[2] = { 0x1234, ~0ull };

	T_ASSERT(buf);
	T_ASSERT_OK(fl_store_zero_create(1 * MiB, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_READONLY | FL_STORE_HOLES);
	T_ASSERT_EQ(fl_store_size(s), 1 * MiB);
	/* 70 pages: every bit of the first word, 6 of the second, nothing beyond. */
	t_fill(buf, 70 * PG, 0x5a);
	T_ASSERT_OK(fl_store_read(s, 8 * PG, buf, 70 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], ~0ull);
	T_ASSERT_EQ(holes[1], 0x3f);
	/* Holes need no bytes: the buffer is left alone. */
	T_ASSERT(t_all(buf, 70 * PG, 0x5a));
	T_ASSERT_OK(fl_store_read(s, 0, buf, 1 * MiB / 16, 64 * KiB, holes));
	T_ASSERT_EQ(holes[0], 1);
	T_ASSERT_ERR(fl_store_read(s, 0, buf, PG, PG, NULL), EINVAL);
	T_ASSERT_ERR(fl_store_write(s, 0, buf, PG), EROFS);
	fl_store_destroy(s);
	free(buf);
}

/* -------------------------------------------------------------------- mem */

TEST(store_mem_read_write)
{
	/* Not page aligned, so never MOVE: a plain buffer. */
	uint8_t *map = t_map_anon(8 * PG), *b = map + 64, *out = malloc(2 * PG);
	struct fl_store *s = NULL, *ro = NULL;
	uint64_t holes[1] = { 0 };

	T_ASSERT(out);
	fl_pattern_fill(b, 0, 6 * PG, 3);
	T_ASSERT_ERR(fl_store_mem_create(NULL, PG, 0, &s), EINVAL);
	T_ASSERT_ERR(fl_store_mem_create(b, 0, 0, &s), EINVAL);
	T_ASSERT_ERR(fl_store_mem_create(b, PG, 1u << 5, &s), EINVAL);
	T_ASSERT_ERR(fl_store_mem_create(b, PG, 0, NULL), EINVAL);
	T_ASSERT_OK(fl_store_mem_create(b, 6 * PG, 0, &s));
	T_ASSERT_EQ(fl_store_caps(s), 0);
	T_ASSERT_EQ(fl_store_size(s), 6 * PG);
	T_ASSERT_OK(fl_store_read(s, 2 * PG, out, 2 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 2 * PG, 2 * PG, 3), 0);

	/* A write lands in the caller's buffer and reads back. */
	t_fill(out, 2 * PG, 0xc3);
	T_ASSERT_OK(fl_store_write(s, 4 * PG, out, 2 * PG));
	T_ASSERT(t_all(b + 4 * PG, 2 * PG, 0xc3));
	T_ASSERT_EQ(fl_pattern_check(b, 0, 4 * PG, 3), 0);
	memset(out, 0, 2 * PG);
	T_ASSERT_OK(fl_store_read(s, 4 * PG, out, 2 * PG, 2 * PG, holes));
	T_ASSERT(t_all(out, 2 * PG, 0xc3));

	T_ASSERT_OK(fl_store_mem_create(b, 6 * PG, FL_STORE_MEM_READONLY, &ro));
	T_ASSERT_EQ(fl_store_caps(ro), FL_STORE_READONLY);
	T_ASSERT_ERR(fl_store_write(ro, 0, out, PG), EROFS);
	T_ASSERT(t_all(b + 4 * PG, 2 * PG, 0xc3));
	fl_store_destroy(ro);
	fl_store_destroy(s);
	free(out);
	munmap(map, 8 * PG);
}

TEST(store_mem_take_pages)
{
	const size_t ps = t_page_size();
	uint8_t *b = t_map_anon(16 * ps), *out = malloc(16 * ps);
	struct fl_store *s = NULL;
	uint64_t holes[1];
	void *addr = NULL;

	T_ASSERT(out);
	fl_pattern_fill(b, 0, 16 * ps, 5);
	T_ASSERT_OK(fl_store_mem_create(b, 16 * ps, 0, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_MOVE | FL_STORE_HOLES);

	/* The store hands over its own memory for the range. */
	T_ASSERT_OK(fl_store_take_pages(s, ps, 2 * ps, &addr));
	T_ASSERT(addr == b + ps);
	/* Once taken the pages are holes; the others still read as data. */
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * ps, ps, holes));
	T_ASSERT_EQ(holes[0], 0x6);
	T_ASSERT_EQ(fl_pattern_check(out, 0, ps, 5), 0);
	T_ASSERT_EQ(fl_pattern_check(out + 3 * ps, 3 * ps, 13 * ps, 5), 0);

	/* Never twice, also not as part of a larger range, which then takes nothing. */
	addr = NULL;
	T_ASSERT_ERR(fl_store_take_pages(s, ps, ps, &addr), EOPNOTSUPP);
	T_ASSERT_ERR(fl_store_take_pages(s, 2 * ps, ps, &addr), EOPNOTSUPP);
	T_ASSERT_ERR(fl_store_take_pages(s, 0, 8 * ps, &addr), EOPNOTSUPP);
	T_ASSERT(addr == NULL);
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * ps, ps, holes));
	T_ASSERT_EQ(holes[0], 0x6);

	/* Larger pages: a page only partly handed over is data with zeros where pages left. */
	T_ASSERT_OK(fl_store_read(s, 0, out, 4 * ps, 2 * ps, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 0, ps, 5), 0);
	T_ASSERT(t_all(out + ps, 2 * ps, 0));
	T_ASSERT_EQ(fl_pattern_check(out + 3 * ps, 3 * ps, ps, 5), 0);
	T_ASSERT_OK(fl_store_take_pages(s, 3 * ps, ps, &addr));
	T_ASSERT_OK(fl_store_read(s, 0, out, 4 * ps, 2 * ps, holes));
	T_ASSERT_EQ(holes[0], 0x2);

	/* As if the caller moved page 1 away; writing it makes it data again. */
	T_ASSERT_SYS(madvise(b + ps, ps, MADV_DONTNEED));
	t_fill(out, ps, 0x77);
	T_ASSERT_OK(fl_store_write(s, ps, out, ps));
	T_ASSERT_OK(fl_store_read(s, 0, out, 4 * ps, ps, holes));
	T_ASSERT_EQ(holes[0], 0xc);
	T_ASSERT(t_all(out + ps, ps, 0x77));
	T_ASSERT_OK(fl_store_take_pages(s, ps, ps, &addr));
	T_ASSERT(addr == b + ps);

	/* The last pages, and the whole rest in one call. */
	T_ASSERT_OK(fl_store_take_pages(s, 15 * ps, ps, &addr));
	T_ASSERT_OK(fl_store_take_pages(s, 4 * ps, 11 * ps, &addr));
	T_ASSERT_OK(fl_store_take_pages(s, 0, ps, &addr));
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * ps, ps, holes));
	T_ASSERT_EQ(holes[0], 0xffff);
	fl_store_destroy(s);
	free(out);
	munmap(b, 16 * ps);
}

struct take_race {
	struct fl_store *s;
	uint8_t *buf;
	size_t ps, pages;
	pthread_barrier_t *start;
	_Atomic unsigned int *got;	/* per page: how many threads took it */
};

static void *take_thread(void *arg)
{
	struct take_race *t = arg;
	void *addr;

	pthread_barrier_wait(t->start);
	for (size_t i = 0; i < t->pages; i++) {
		/* Alternate single pages and pairs so that ranges overlap between threads. */
		size_t n = (i % 2 && i + 1 < t->pages) ? 2 : 1;
		int r = fl_store_take_pages(t->s, i * t->ps, n * t->ps, &addr);

		if (r == 0) {
			T_ASSERT(addr == t->buf + i * t->ps);
			for (size_t k = 0; k < n; k++)
				atomic_fetch_add(&t->got[i + k], 1);
		} else {
			T_ASSERT_EQ(r, -EOPNOTSUPP);
		}
	}
	return NULL;
}

TEST(store_mem_take_race)
{
	enum { THREADS = 4, PAGES = 256 };
	const size_t ps = t_page_size();
	uint8_t *b = t_map_anon(PAGES * ps);
	_Atomic unsigned int got[PAGES];
	struct take_race t;
	pthread_barrier_t start;
	unsigned long tid[THREADS];
	struct fl_store *s = NULL;
	void *addr;

	T_ASSERT_OK(fl_store_mem_create(b, PAGES * ps, 0, &s));
	for (size_t i = 0; i < PAGES; i++)
		atomic_init(&got[i], 0);
	pthread_barrier_init(&start, NULL, THREADS);
	t = (struct take_race){ .s = s, .buf = b, .ps = ps, .pages = PAGES, .start = &start, .got = got };
	for (int i = 0; i < THREADS; i++)
		tid[i] = t_thread_start(take_thread, &t);
	for (int i = 0; i < THREADS; i++)
		t_thread_join(tid[i]);
	/* Each page went to at most one thread; any page left is still takeable. */
	for (size_t i = 0; i < PAGES; i++) {
		T_ASSERT(atomic_load(&got[i]) <= 1);
		if (!atomic_load(&got[i]))
			T_ASSERT_OK(fl_store_take_pages(s, i * ps, ps, &addr));
	}
	pthread_barrier_destroy(&start);
	fl_store_destroy(s);
	munmap(b, PAGES * ps);
}

static void assert_no_move(void *buf, size_t len, uint32_t flags)
{
	struct fl_store *s = NULL;
	void *addr = NULL;
	uint64_t holes[1];
	uint8_t *out = malloc(len);

	T_ASSERT(out);
	T_ASSERT_OK(fl_store_mem_create(buf, len, flags, &s));
	T_ASSERT_EQ(fl_store_caps(s) & (FL_STORE_MOVE | FL_STORE_HOLES), 0);
	T_ASSERT_ERR(fl_store_take_pages(s, 0, PG, &addr), EOPNOTSUPP);
	T_ASSERT(addr == NULL);
	T_ASSERT_OK(fl_store_read(s, 0, out, len / PG * PG, PG, holes));
	T_ASSERT(!memcmp(out, buf, len / PG * PG));
	fl_store_destroy(s);
	free(out);
}

TEST(store_mem_no_move)
{
	const size_t ps = t_page_size();
	uint8_t *anon = t_map_anon(8 * ps), *file_map, *mfd_map, *mixed;
	char path[64];
	int fd = tmp_file(path), mfd;
	struct fl_store *s = NULL;
	void *addr;

	T_ASSERT_SYS(unlink(path));
	write_pattern(fd, 0, 8 * ps, 11);
	fl_pattern_fill(anon, 0, 8 * ps, 11);

	/* Not page aligned. */
	assert_no_move(anon + 64, 4 * ps, 0);
	/* Asked not to. */
	assert_no_move(anon, 4 * ps, FL_STORE_MEM_NO_MOVE);
	/* A private file mapping is rw-p, but file-backed. */
	file_map = mmap(NULL, 8 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	T_ASSERT(file_map != MAP_FAILED);
	assert_no_move(file_map, 8 * ps, 0);
	/* Shared memory (memfd). */
	mfd_map = t_map_memfd(4 * ps, &mfd);
	assert_no_move(mfd_map, 4 * ps, 0);
	/* Anonymous, but its second half is a file mapped over it. */
	mixed = t_map_anon(8 * ps);
	fl_pattern_fill(mixed, 0, 4 * ps, 11);
	T_ASSERT(mmap(mixed + 4 * ps, 4 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
		      4 * (off_t)ps) != MAP_FAILED);
	assert_no_move(mixed, 8 * ps, 0);
	/* The anonymous half alone can. */
	T_ASSERT_OK(fl_store_mem_create(mixed, 4 * ps, 0, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_MOVE | FL_STORE_HOLES);
	fl_store_destroy(s);
	/* Part of it read-only. */
	T_ASSERT_SYS(mprotect(anon + 6 * ps, ps, PROT_READ));
	assert_no_move(anon, 8 * ps, 0);
	/* Its rw part, with a length that is not a page multiple: the partial page stays. */
	T_ASSERT_OK(fl_store_mem_create(anon, 5 * ps + 100, 0, &s));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_MOVE | FL_STORE_HOLES);
	T_ASSERT_OK(fl_store_take_pages(s, 4 * ps, ps, &addr));
	T_ASSERT_ERR(fl_store_take_pages(s, 5 * ps, ps, &addr), EINVAL);
	fl_store_destroy(s);

	munmap(mixed, 8 * ps);
	munmap(mfd_map, 4 * ps);
	munmap(file_map, 8 * ps);
	munmap(anon, 8 * ps);
	close(mfd);
	close(fd);
}

/* ------------------------------------------------------------------- file */

TEST(store_file_offset)
{
	char path[64];
	int fd = tmp_file(path), n, cloexec, direct;
	struct fl_store *s, *odd, *whole;
	uint8_t *out = malloc(16 * PG);
	uint64_t holes[1];

	T_ASSERT(out);
	write_pattern(fd, 0, 256 * KiB, 7);
	s = file_store(path, 12 * KiB, 64 * KiB, 0);
	/* A byte offset that is no multiple of anything; size 0: to the end of the file. */
	odd = file_store(path, 100, 0, 0);
	whole = file_store(path, 0, 0, 0);
	fds_on(path, &n, &cloexec, &direct);	/* the stores' three and our own */
	T_ASSERT_EQ(n, 4);
	T_ASSERT_EQ(cloexec, 4);
	T_ASSERT_EQ(direct, 0);
	T_ASSERT_SYS(unlink(path));

	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_READONLY | FL_STORE_HOLES);
	T_ASSERT_EQ(fl_store_size(s), 64 * KiB);
	T_ASSERT_OK(fl_store_read(s, PG, out, 4 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 12 * KiB + PG, 4 * PG, 7), 0);
	T_ASSERT_ERR(fl_store_read(s, 64 * KiB, out, PG, PG, holes), EINVAL);
	T_ASSERT_ERR(fl_store_write(s, 0, out, PG), EROFS);

	/* 256 KiB - 100 bytes, rounded up to whole pages; the last page's tail is zeros. */
	T_ASSERT_EQ(fl_store_size(odd), 256 * KiB);
	T_ASSERT_OK(fl_store_read(odd, 0, out, 16 * PG, 16 * PG, holes));
	T_ASSERT_EQ(fl_pattern_check(out, 100, 16 * PG, 7), 0);
	T_ASSERT_OK(fl_store_read(odd, 256 * KiB - PG, out, PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 256 * KiB - PG + 100, PG - 100, 7), 0);
	T_ASSERT(t_all(out + PG - 100, 100, 0));
	T_ASSERT_EQ(fl_store_size(whole), 256 * KiB);
	T_ASSERT_OK(fl_store_read(whole, 240 * KiB, out, 16 * KiB, 16 * KiB, holes));
	T_ASSERT_EQ(fl_pattern_check(out, 240 * KiB, 16 * KiB, 7), 0);

	fl_store_destroy(whole);
	fl_store_destroy(odd);
	fl_store_destroy(s);
	fds_on(path, &n, &cloexec, &direct);	/* also ours no longer matches: "(deleted)" */
	T_ASSERT_EQ(n, 0);
	free(out);
	close(fd);
}

TEST(store_file_holes)
{
	char path[64];
	int fd = tmp_file(path);
	struct fl_store *s;
	uint8_t *out = malloc(2 * MiB);
	uint64_t holes[8];
	bool fs_holes;

	T_ASSERT(out);
	/* 1 MiB, with data only in [512 KiB, 576 KiB); the store reaches 1 MiB past the end. */
	T_ASSERT_SYS(ftruncate(fd, 1 * MiB));
	write_pattern(fd, 512 * KiB, 64 * KiB, 13);
	T_ASSERT_SYS(fsync(fd));
	fs_holes = lseek(fd, 0, SEEK_DATA) == 512 * KiB;
	s = file_store(path, 0, 2 * MiB, 0);
	T_ASSERT_SYS(unlink(path));
	T_ASSERT_EQ(fl_store_size(s), 2 * MiB);

	T_ASSERT_OK(fl_store_read(s, 0, out, 2 * MiB, PG, holes));
	for (size_t i = 0; i < 512; i++) {
		bool data = i >= 128 && i < 144;

		if (i >= 256)			/* past the end of the file */
			T_ASSERT(fl__bit_test(holes, i));
		else if (data)
			T_ASSERT(!fl__bit_test(holes, i));
		else if (fs_holes)
			T_ASSERT(fl__bit_test(holes, i));
		else if (!fl__bit_test(holes, i))
			T_ASSERT(t_all(out + i * PG, PG, 0));
	}
	T_ASSERT_EQ(fl_pattern_check(out + 512 * KiB, 512 * KiB, 64 * KiB, 13), 0);

	/* 64 KiB pages: one holds data. */
	T_ASSERT_OK(fl_store_read(s, 0, out, 2 * MiB, 64 * KiB, holes));
	T_ASSERT_EQ(holes[0], fs_holes ? ~(1ull << 8) & 0xffffffff : 0xffff0000);
	/* One 2 MiB page: data, with zeros in the file's holes and past its end. */
	T_ASSERT_OK(fl_store_read(s, 0, out, 2 * MiB, 2 * MiB, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT(t_all(out, 512 * KiB, 0));
	T_ASSERT_EQ(fl_pattern_check(out + 512 * KiB, 512 * KiB, 64 * KiB, 13), 0);
	T_ASSERT(t_all(out + 576 * KiB, 2 * MiB - 576 * KiB, 0));
	/* A page straddling data and hole is data. */
	T_ASSERT_OK(fl_store_read(s, 512 * KiB, out, 128 * KiB, 128 * KiB, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 512 * KiB, 64 * KiB, 13), 0);
	T_ASSERT(t_all(out + 64 * KiB, 64 * KiB, 0));
	fl_store_destroy(s);
	free(out);
	close(fd);
}

TEST(store_file_direct)
{
	char path[64];
	int fd = tmp_file(path), n, cloexec, direct;
	struct fl_store_file_opts o = {
		.sz = sizeof(o), .flags = FL_STORE_FILE_DIRECT | FL_STORE_FILE_WRITABLE,
	};
	struct fl_store *d = NULL, *b;
	uint8_t *al = t_map_anon(1 * MiB), *bl = t_map_anon(1 * MiB);
	uint8_t *raw = malloc(256 * KiB + 64), *un = raw + 8;
	uint64_t holes[4];
	int r;

	T_ASSERT(raw);
	write_pattern(fd, 0, 1 * MiB, 17);
	r = fl_store_file_open(path, &o, &d);
	if (r == -EOPNOTSUPP) {
		unlink(path);
		T_SKIP("the file system under /var/tmp refuses O_DIRECT");
	}
	T_ASSERT_OK(r);
	b = file_store(path, 0, 0, 0);
	fds_on(path, &n, &cloexec, &direct);	/* two for the DIRECT store, one, and our own */
	T_ASSERT_EQ(n, 4);
	T_ASSERT_EQ(cloexec, 4);
	T_ASSERT_EQ(direct, 1);
	T_ASSERT_SYS(unlink(path));
	T_ASSERT_EQ(fl_store_size(d), 1 * MiB);
	T_ASSERT_EQ(fl_store_caps(d), FL_STORE_HOLES);

	/* Aligned: the O_DIRECT path. Same bytes as the buffered store. */
	T_ASSERT_OK(fl_store_read(d, 0, al, 1 * MiB, 64 * KiB, holes));
	T_ASSERT_OK(fl_store_read(b, 0, bl, 1 * MiB, 64 * KiB, holes));
	T_ASSERT(!memcmp(al, bl, 1 * MiB));
	T_ASSERT_EQ(fl_pattern_check(al, 0, 1 * MiB, 17), 0);
	/* An unaligned buffer takes the buffered descriptor, same bytes again. */
	T_ASSERT_OK(fl_store_read(d, 256 * KiB, un, 256 * KiB, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(un, 256 * KiB, 256 * KiB, 17), 0);

	/* Writes both ways, read back through the other store. */
	fl_pattern_fill(al, 0, 64 * KiB, 99);
	T_ASSERT_OK(fl_store_write(d, 128 * KiB, al, 64 * KiB));
	fl_pattern_fill(un, 0, 8 * KiB, 98);
	T_ASSERT_OK(fl_store_write(d, 512 * KiB, un, 8 * KiB));
	T_ASSERT_OK(fl_store_read(b, 128 * KiB, bl, 64 * KiB, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(bl, 0, 64 * KiB, 99), 0);
	T_ASSERT_OK(fl_store_read(b, 512 * KiB, bl, 8 * KiB, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(bl, 0, 8 * KiB, 98), 0);
	T_ASSERT_OK(fl_store_read(d, 512 * KiB, al, 8 * KiB, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(al, 0, 8 * KiB, 98), 0);

	fl_store_destroy(b);
	fl_store_destroy(d);
	free(raw);
	munmap(al, 1 * MiB);
	munmap(bl, 1 * MiB);
	close(fd);
}

TEST(store_file_truncated_eio)
{
	char path[64];
	int fd = tmp_file(path);
	struct fl_store *s, *big;
	uint8_t *out = malloc(16 * PG);
	uint64_t holes[1];

	T_ASSERT(out);
	write_pattern(fd, 0, 64 * KiB, 23);
	s = file_store(path, 0, 0, 0);
	/* Larger than the file: what lies past its end at open is holes. */
	big = file_store(path, 0, 128 * KiB, 0);
	T_ASSERT_SYS(unlink(path));
	T_ASSERT_OK(fl_store_read(big, 96 * KiB, out, 8 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0xff);

	/* Someone cuts the file short under the store: the lost data is an error, not zeros. */
	T_ASSERT_SYS(ftruncate(fd, 16 * KiB));
	memset(out, 0x11, 16 * PG);
	T_ASSERT_ERR(fl_store_read(s, 32 * KiB, out, PG, PG, holes), EIO);
	T_ASSERT_ERR(fl_store_read(s, 12 * KiB, out, 2 * PG, PG, holes), EIO);
	T_ASSERT_ERR(fl_store_read(s, 0, out, 16 * PG, 16 * PG, holes), EIO);
	T_ASSERT_ERR(fl_store_read(big, 48 * KiB, out, 4 * PG, PG, holes), EIO);
	/* What is left still reads. */
	T_ASSERT_OK(fl_store_read(s, 0, out, 4 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 0, 4 * PG, 23), 0);
	/* Cut in the middle of a page: the page's short read is an error too. */
	T_ASSERT_SYS(ftruncate(fd, 16 * KiB - 1000));
	T_ASSERT_ERR(fl_store_read(s, 12 * KiB, out, PG, PG, holes), EIO);
	/* Past the end at open it stays a hole. */
	T_ASSERT_OK(fl_store_read(big, 64 * KiB, out, 16 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0xffff);
	fl_store_destroy(big);
	fl_store_destroy(s);
	free(out);
	close(fd);
}

/*
 * A file without holes at open is read without looking for holes again: a
 * hole punched in it later reads as the zeros it holds (as data), the rest
 * as it was; a file that had a hole at open still reports holes.
 */
TEST(store_file_hole_punched_after_open)
{
	char path[64];
	int fd = tmp_file(path);
	struct fl_store *s;
	uint8_t *out = malloc(16 * PG);
	uint64_t holes[1];

	T_ASSERT(out);
	write_pattern(fd, 0, 16 * PG, 31);
	T_ASSERT_SYS(fsync(fd));
	s = file_store(path, 0, 0, 0);
	T_ASSERT_SYS(unlink(path));
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * PG, 2 * PG) < 0) {
		fl_store_destroy(s);
		free(out);
		close(fd);
		T_SKIP("this file system cannot punch holes (%s)", strerror(errno));
	}
	memset(out, 0x11, 16 * PG);
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT(t_all(out + 4 * PG, 2 * PG, 0));
	T_ASSERT_EQ(fl_pattern_check(out, 0, 4 * PG, 31), 0);
	T_ASSERT_EQ(fl_pattern_check(out + 6 * PG, 6 * PG, 10 * PG, 31), 0);
	fl_store_destroy(s);
	/* Opened now, with the hole there: the hole is found (where the file system says so). */
	s = NULL;
	{
		char self[64];

		snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
		s = file_store(self, 0, 0, 0);
	}
	memset(out, 0x11, 16 * PG);
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * PG, PG, holes));
	if (lseek(fd, 4 * PG, SEEK_HOLE) == 4 * PG)
		T_ASSERT_EQ(holes[0], 0x30);	/* holes: the caller installs zero pages */
	else
		T_ASSERT(t_all(out + 4 * PG, 2 * PG, 0));
	T_ASSERT_EQ(fl_pattern_check(out + 6 * PG, 6 * PG, 10 * PG, 31), 0);
	fl_store_destroy(s);
	free(out);
	close(fd);
}

TEST(store_file_write_readback)
{
	char path[64];
	int fd = tmp_file(path), n, cloexec, direct;
	struct fl_store_file_opts o = {
		.sz = sizeof(o), .size = 64 * KiB,
		.flags = FL_STORE_FILE_CREATE | FL_STORE_FILE_WRITABLE,
	};
	struct fl_store *s = NULL, *ro;
	uint8_t *in = malloc(4 * PG), *out = malloc(16 * PG);
	uint64_t holes[1];
	struct stat st;
	mode_t mask = umask(0);

	umask(mask);
	T_ASSERT(in && out);
	close(fd);
	T_ASSERT_SYS(unlink(path));
	/* CREATE needs WRITABLE and a size. */
	o.flags = FL_STORE_FILE_CREATE;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	o.flags = FL_STORE_FILE_CREATE | FL_STORE_FILE_WRITABLE;
	o.size = 0;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	T_ASSERT(s == NULL);
	T_ASSERT(stat(path, &st) < 0 && errno == ENOENT);
	/* Without CREATE a missing file is open(2)'s error. */
	T_ASSERT_ERR(fl_store_file_open(path, NULL, &s), ENOENT);

	o.size = 64 * KiB;
	T_ASSERT_OK(fl_store_file_open(path, &o, &s));
	T_ASSERT_SYS(stat(path, &st));
	T_ASSERT_EQ(st.st_mode & 0777, 0644 & ~mask);
	T_ASSERT_EQ(st.st_size, 0);
	fds_on(path, &n, &cloexec, &direct);
	T_ASSERT_EQ(n, 1);
	T_ASSERT_EQ(cloexec, 1);
	ro = file_store(path, 0, 64 * KiB, 0);
	T_ASSERT_SYS(unlink(path));
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_HOLES);

	/* An empty file: all holes. */
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0xffff);
	/* Write two pages in the middle, then read them back with the holes around. */
	fl_pattern_fill(in, 0, 2 * PG, 31);
	T_ASSERT_OK(fl_store_write(s, 8 * PG, in, 2 * PG));
	T_ASSERT_OK(fl_store_read(s, 0, out, 16 * PG, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(out + 8 * PG, 0, 2 * PG, 31), 0);
	T_ASSERT(!fl__bit_test(holes, 8) && !fl__bit_test(holes, 9));
	T_ASSERT(fl__bit_test(holes, 10) && fl__bit_test(holes, 15));
	/* Overwrite and extend to the store's end. */
	fl_pattern_fill(in, 0, 4 * PG, 32);
	T_ASSERT_OK(fl_store_write(s, 9 * PG, in, 4 * PG));
	T_ASSERT_OK(fl_store_write(s, 15 * PG, in, PG));
	T_ASSERT_OK(fl_store_read(s, 8 * PG, out, 8 * PG, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(out, 0, PG, 31), 0);
	T_ASSERT_EQ(fl_pattern_check(out + PG, 0, 4 * PG, 32), 0);
	T_ASSERT_EQ(fl_pattern_check(out + 7 * PG, 0, PG, 32), 0);
	T_ASSERT_EQ(holes[0] & 0x9f, 0);
	/* The read-only store opened when the file was empty sees the data that grew past it. */
	T_ASSERT_OK(fl_store_read(ro, 8 * PG, out, 2 * PG, PG, holes));
	T_ASSERT_EQ(holes[0], 0);
	T_ASSERT_EQ(fl_pattern_check(out, 0, PG, 31), 0);
	T_ASSERT_ERR(fl_store_write(ro, 0, in, PG), EROFS);
	T_ASSERT_EQ(fl_store_caps(ro), FL_STORE_READONLY | FL_STORE_HOLES);
	fl_store_destroy(ro);
	fl_store_destroy(s);
	free(in);
	free(out);
}

TEST(store_file_opts)
{
	char path[64];
	int fd = tmp_file(path);
	struct fl_store *s = NULL;
	struct fl_store_file_opts o = { .sz = sizeof(o) };
	struct {
		struct fl_store_file_opts o;
		uint64_t future;
	} big = { .o = { .sz = sizeof(big) }, .future = 1 };
	uint8_t out[PG];
	uint64_t holes[1];

	write_pattern(fd, 0, 32 * KiB, 41);
	T_ASSERT_ERR(fl_store_file_open(NULL, &o, &s), EINVAL);
	T_ASSERT_ERR(fl_store_file_open(path, &o, NULL), EINVAL);
	T_ASSERT_ERR(fl_store_file_open(path, &big.o, &s), EINVAL);
	o.flags = 1u << 7;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	o.flags = 0;
	o.offset = 1ull << 63;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	o.offset = 1 * MiB;
	o.size = UINT64_MAX - 2 * MiB;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	/* Nothing past offset, and no size. */
	o.size = 0;
	o.offset = 32 * KiB;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	o.sz = 4;
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	o.sz = offsetof(struct fl_store_file_opts, size) + 4;	/* cuts size in two */
	T_ASSERT_ERR(fl_store_file_open(path, &o, &s), EINVAL);
	T_ASSERT(s == NULL);
	T_ASSERT_ERR(fl_store_file_open("/", NULL, &s), EINVAL);	/* a directory */

	/* An older caller that knows only offset: size and flags keep their defaults. */
	o.sz = offsetof(struct fl_store_file_opts, size);
	o.offset = 8 * KiB;
	o.size = 4 * KiB;
	o.flags = FL_STORE_FILE_WRITABLE;
	T_ASSERT_OK(fl_store_file_open(path, &o, &s));
	T_ASSERT_EQ(fl_store_size(s), 24 * KiB);
	T_ASSERT_EQ(fl_store_caps(s), FL_STORE_READONLY | FL_STORE_HOLES);
	T_ASSERT_OK(fl_store_read(s, 0, out, PG, PG, holes));
	T_ASSERT_EQ(fl_pattern_check(out, 8 * KiB, PG, 41), 0);
	fl_store_destroy(s);
	big.future = 0;
	T_ASSERT_OK(fl_store_file_open(path, &big.o, &s));
	T_ASSERT_EQ(fl_store_size(s), 32 * KiB);
	fl_store_destroy(s);
	T_ASSERT_SYS(unlink(path));
	close(fd);
}

/* ------------------------------------------------------------ concurrency */

#define CONC_SEED 77
#define CONC_DATA (3 * MiB)	/* the file: pattern up to here, then a 1 MiB hole */
#define CONC_FILE (4 * MiB)

struct conc {
	struct fl_store *stores[3];	/* pattern, file, file with O_DIRECT (or NULL) */
	pthread_barrier_t *start;
	uint64_t rng;
	_Atomic uint64_t *reads;
};

static uint64_t next_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void *conc_thread(void *arg)
{
	struct conc *c = arg;
	uint8_t *map = t_map_anon(64 * PG + PG);
	uint64_t holes[1];

	pthread_barrier_wait(c->start);
	for (int it = 0; it < 400; it++) {
		uint64_t r = next_rand(&c->rng);
		unsigned int which = r % 3;
		struct fl_store *s = c->stores[which] ? c->stores[which] : c->stores[1];
		size_t ps = (r >> 8) % 2 ? 4 * PG : PG;
		size_t pages = 1 + (r >> 16) % 16;
		uint64_t size = fl_store_size(s);
		uint64_t off = (r >> 24) % (size / ps - pages + 1) * ps;
		/* Now and then an unaligned buffer, for the buffered side of O_DIRECT. */
		uint8_t *buf = (r >> 40) % 4 ? map : map + 8;

		T_ASSERT_OK(fl_store_read(s, off, buf, pages * ps, ps, holes));
		for (size_t i = 0; i < pages; i++) {
			uint64_t a = off + i * ps;
			uint8_t *p = buf + i * ps;

			if (fl__bit_test(holes, i)) {
				T_ASSERT(s != c->stores[0]);
				T_ASSERT(a >= CONC_DATA);
			} else if (s == c->stores[0] || a < CONC_DATA) {
				T_ASSERT_EQ(fl_pattern_check(p, a, ps, CONC_SEED), 0);
			} else {
				T_ASSERT(t_all(p, ps, 0));
			}
		}
		atomic_fetch_add(c->reads, 1);
	}
	munmap(map, 64 * PG + PG);
	return NULL;
}

TEST(store_concurrent_reads)
{
	enum { THREADS = 4 };
	struct fl_store_file_opts o = { .sz = sizeof(o), .flags = FL_STORE_FILE_DIRECT };
	struct conc c[THREADS];
	unsigned long tid[THREADS];
	pthread_barrier_t start;
	_Atomic uint64_t reads = 0;
	struct fl_store *pat, *file, *direct = NULL;
	char path[64];
	int fd = tmp_file(path), r;

	write_pattern(fd, 0, CONC_DATA, CONC_SEED);
	T_ASSERT_SYS(ftruncate(fd, CONC_FILE));
	T_ASSERT_OK(fl_store_pattern_create(CONC_FILE, CONC_SEED, &pat));
	file = file_store(path, 0, 0, 0);
	r = fl_store_file_open(path, &o, &direct);
	if (r != -EOPNOTSUPP)
		T_ASSERT_OK(r);
	T_ASSERT_SYS(unlink(path));
	pthread_barrier_init(&start, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		c[i] = (struct conc){
			.stores = { pat, file, direct },
			.start = &start,
			.rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1),
			.reads = &reads,
		};
		tid[i] = t_thread_start(conc_thread, &c[i]);
	}
	for (int i = 0; i < THREADS; i++)
		t_thread_join(tid[i]);
	T_ASSERT_EQ(atomic_load(&reads), THREADS * 400);
	pthread_barrier_destroy(&start);
	fl_store_destroy(direct);
	fl_store_destroy(file);
	fl_store_destroy(pat);
	close(fd);
}
