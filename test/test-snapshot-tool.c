/* SPDX-License-Identifier: MIT */
/* faultline snapshot: info, verify, convert and merge, run as the command. */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"

#define PG 4096u
#define MiB (1024ull * 1024)

/* Run $(O)/faultline snapshot with the arguments (NULL-terminated), capturing its output. */
static void tool(struct t_run *r, const char *const *args)
{
	char path[PATH_MAX];
	const char *argv[16] = { "faultline", "snapshot" };
	int k = 2;

	t_tool_path(path, sizeof(path));
	for (; args[k - 2] && k < 15; k++)
		argv[k] = args[k - 2];
	argv[k] = NULL;
	t_run_capture(r, path, (char *const *)argv, NULL);
}

#define RUN(r, ...)                                              \
	do {                                                     \
		const char *const a_[] = { __VA_ARGS__, NULL };  \
		tool((r), a_);                                   \
	} while (0)

static void expect(const struct t_run *r, int status, const char *in_out, const char *in_err)
{
	if (r->status != status || (in_out && !strstr(r->out, in_out)) ||
	    (in_err && !strstr(r->err, in_err)))
		t_fail(__FILE__, __LINE__, "exit %d (want %d), stdout \"%s\" (want \"%s\"), stderr "
		       "\"%s\" (want \"%s\")", r->status, status, r->out, in_out ? in_out : "",
		       r->err, in_err ? in_err : "");
}

static void tmp_name(char path[64], const char *tag)
{
	int fd;

	snprintf(path, 64, "/var/tmp/fl-snaptool-%s-XXXXXX", tag);
	fd = mkostemp(path, O_CLOEXEC);
	T_ASSERT_SYS(fd);
	close(fd);
	unlink(path);
}

TEST(snapshot_tool_usage)
{
	struct t_run *r = calloc(1, sizeof(*r));
	char a[64], raw[64];
	int fd;

	T_ASSERT(r);
	tmp_name(a, "u");
	tmp_name(raw, "raw");
	fd = open(raw, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	T_ASSERT_SYS(fd);
	T_ASSERT_SYS(ftruncate(fd, 8 * PG));
	close(fd);
	RUN(r, "--help");
	expect(r, 0, "faultline snapshot info FILE", NULL);
	{
		const char *const none[] = { NULL };

		tool(r, none);
		expect(r, 2, NULL, "no action given");
	}
	RUN(r, "frobnicate");
	expect(r, 2, NULL, "unknown action 'frobnicate'");
	RUN(r, "info");
	expect(r, 2, NULL, "info: expected one FILE");
	RUN(r, "info", a, a);
	expect(r, 2, NULL, "info: expected one FILE");
	RUN(r, "verify");
	expect(r, 2, NULL, "verify: expected at least one FILE");
	RUN(r, "convert", raw);
	expect(r, 2, NULL, "convert: expected RAW and OUT");
	RUN(r, "convert", "--page-size", "5000", raw, a);
	expect(r, 2, NULL, "--page-size: expected a power of two");
	RUN(r, "convert", "--addr", "12zz", raw, a);
	expect(r, 2, NULL, "--addr: expected an address");
	RUN(r, "convert", "--addr", "0x1000", "--page-size", "2M", raw, a);
	expect(r, 2, NULL, "is not a multiple of the page size");
	RUN(r, "convert", "--level", "3", raw, a);
	expect(r, 2, NULL, "--level needs --zstd");
	RUN(r, "convert", "--zstd", "--level", "99", raw, a);
	expect(r, 2, NULL, "--level: expected -7 to 22");
	RUN(r, "convert", "--bogus", raw, a);
	expect(r, 2, NULL, "unknown option '--bogus'");
	RUN(r, "info", "--page-size", "4K", a);
	expect(r, 2, NULL, "--page-size and --addr are for convert");
	RUN(r, "verify", "--zstd", a);
	expect(r, 2, NULL, "--zstd is for convert and merge");
	RUN(r, "merge", a);
	expect(r, 2, NULL, "merge: expected NEWEST [PARENT...] OUT");
	RUN(r, "convert", raw, raw);
	expect(r, 2, NULL, "exists; give a new file");
	/* Not usage errors: a file that is missing or not a snapshot fails with 1. */
	RUN(r, "info", a);
	expect(r, 1, NULL, "No such file");
	RUN(r, "verify", raw);
	expect(r, 1, NULL, "refused");
	T_ASSERT_EQ(access(a, F_OK), -1);
	unlink(raw);
	free(r);
}

/* A raw memory image: the pattern, 1 MiB of zeros in the middle, and a tail of 100 bytes. */
#define RAW_LEN (4 * MiB + 100)

static uint8_t *raw_image(const char *path)
{
	uint8_t *b = malloc(RAW_LEN);
	int fd;

	T_ASSERT(b);
	fl_pattern_fill(b, 0, RAW_LEN, 77);
	memset(b + MiB, 0, MiB);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(write(fd, b, RAW_LEN), RAW_LEN);
	close(fd);
	return b;
}

/* The snapshot at @path restores to @want (@len bytes, then zeros to @total). */
static void expect_contents(const char *path, const char *const *parents, const uint8_t *want,
			    size_t len, size_t total)
{
	struct fl_snapshot_open_opts o = { .sz = sizeof(o), .parents = parents };
	struct fl_snapshot *s = NULL;
	uint8_t *buf = calloc(1, total);
	uint64_t *holes = calloc(total / PG / 64 + 1, sizeof(*holes));

	T_ASSERT(buf && holes);
	T_ASSERT_OK(fl_snapshot_open(path, &o, &s));
	T_ASSERT_OK(fl_snapshot_read(s, 0, 0, buf, total, PG, holes));
	T_ASSERT(!memcmp(buf, want, len));
	for (size_t i = len; i < total; i++)
		T_ASSERT_EQ(buf[i], 0);
	fl_snapshot_close(s);
	free(buf);
	free(holes);
}

/* doc/snapshot-format.md: an uncompressed file's first region starts at 2 MiB. */
#define FIRST_DATA (2 * MiB)

TEST(snapshot_tool_convert_verify)
{
	struct t_run *r = calloc(1, sizeof(*r));
	char raw[64], a[64], z[64], h[64];
	uint8_t *img;
	int fd;

	T_ASSERT(r);
	tmp_name(raw, "raw");
	tmp_name(a, "a");
	tmp_name(z, "z");
	tmp_name(h, "h");
	img = raw_image(raw);
	RUN(r, "convert", raw, a);
	expect(r, 0, "4198400 bytes in pages of 4096", NULL);
	RUN(r, "info", a);
	/* 1025 pages: 256 zero, the last (100 bytes) padded with zeros. */
	expect(r, 0, "769 stored, 256 zero (25.0%), 0 absent", NULL);
	T_ASSERT(strstr(r->out, "parent       none (a full snapshot)"));
	T_ASSERT(strstr(r->out, "uncompressed"));
	RUN(r, "verify", a);
	expect(r, 0, "ok, 769 stored pages checked", NULL);
	expect_contents(a, NULL, img, RAW_LEN, 1025 * PG);

	RUN(r, "convert", "--page-size", "2M", "--addr", "0x40000000", raw, h);
	expect(r, 0, "in pages of 2097152", NULL);
	RUN(r, "info", h);
	expect(r, 0, "address 0x40000000, 6291456 bytes", NULL);
	T_ASSERT(strstr(r->out, "3 stored, 0 zero"));

	RUN(r, "convert", "--zstd", raw, z);
	if (r->status == 1 && strstr(r->err, "built without libzstd")) {
		printf("    (no libzstd: --zstd refused as documented)\n");
	} else {
		expect(r, 0, "in pages of 4096", NULL);
		RUN(r, "info", z);
		expect(r, 0, "zstd-compressed", NULL);
		RUN(r, "verify", z);
		expect(r, 0, "ok, 769 stored pages checked", NULL);
		expect_contents(z, NULL, img, RAW_LEN, 1025 * PG);
	}

	/* One byte of one page wrong: verify finds that page, exit 1. */
	fd = open(a, O_RDWR | O_CLOEXEC);
	T_ASSERT_SYS(fd);
	{
		uint8_t b = 0;
		uint64_t pos = FIRST_DATA + 3 * PG + 17;

		T_ASSERT_EQ(pread(fd, &b, 1, (off_t)pos), 1);
		b ^= 1;
		T_ASSERT_EQ(pwrite(fd, &b, 1, (off_t)pos), 1);
	}
	close(fd);
	RUN(r, "verify", a, h);
	expect(r, 1, "1 of 769 stored pages are bad", "page at offset 0x3000: bad");
	T_ASSERT(strstr(r->out, "ok, 3 stored pages checked"));
	/* Truncated: refused at open, saying so. */
	T_ASSERT_SYS(truncate(h, 4 * MiB));
	RUN(r, "verify", h);
	expect(r, 1, NULL, "truncated");
	RUN(r, "info", h);
	expect(r, 1, NULL, "truncated");
	unlink(raw);
	unlink(a);
	unlink(z);
	unlink(h);
	free(img);
	free(r);
}

TEST(snapshot_tool_merge)
{
	struct t_run *r = calloc(1, sizeof(*r));
	struct fl_snapshot_writer_opts wo = { .sz = sizeof(wo) };
	struct fl_snapshot_writer *w = NULL;
	char raw[64], a[64], b[64], m[64], elsewhere[80];
	uint8_t *img, id[16], page[PG];

	T_ASSERT(r);
	tmp_name(raw, "raw");
	tmp_name(a, "a");
	tmp_name(b, "b");
	tmp_name(m, "m");
	img = raw_image(raw);
	RUN(r, "convert", raw, a);
	expect(r, 0, NULL, NULL);
	/* An incremental over it: every 50th page changed, two pages zeroed. */
	{
		struct fl_snapshot *s = NULL;
		struct fl_snapshot_info info = { .sz = sizeof(info) };

		T_ASSERT_OK(fl_snapshot_open(a, NULL, &s));
		T_ASSERT_OK(fl_snapshot_info(s, &info));
		memcpy(id, info.id, 16);
		fl_snapshot_close(s);
	}
	wo.parent_id = id;
	T_ASSERT_OK(fl_snapshot_writer_create(b, &wo, &w));
	T_ASSERT_OK(fl_snapshot_writer_add_region(w, 0, 1025 * PG, PG, 0, NULL));
	for (uint64_t i = 0; i < 1025; i += 50) {
		memset(page, (int)(i % 250) + 1, PG);
		T_ASSERT_OK(fl_snapshot_writer_put(w, 0, i * PG, page, PG));
		if (i * PG < RAW_LEN)
			memcpy(img + i * PG, page, i * PG + PG <= RAW_LEN ? PG : RAW_LEN - i * PG);
	}
	T_ASSERT_OK(fl_snapshot_writer_mark(w, 0, 7 * PG, 2 * PG, FL_SNAPSHOT_MARK_ZERO));
	memset(img + 7 * PG, 0, 2 * PG);
	T_ASSERT_OK(fl_snapshot_writer_finish(w, NULL));
	RUN(r, "info", b);
	expect(r, 0, "(incremental)", NULL);
	T_ASSERT(strstr(r->out, "chain        2 files"));
	T_ASSERT(strstr(r->out, "21 stored, 2 zero"));

	RUN(r, "merge", b, m);
	expect(r, 0, "2 files merged into one full snapshot", NULL);
	RUN(r, "info", m);
	expect(r, 0, "parent       none (a full snapshot)", NULL);
	RUN(r, "verify", m);
	expect(r, 0, "ok", NULL);
	/* The merged file alone gives what the chain gave. */
	unlink(a);
	expect_contents(m, NULL, img, RAW_LEN, 1025 * PG);
	unlink(m);
	/* Its parent gone: refused, nothing written. */
	RUN(r, "merge", b, m);
	expect(r, 1, NULL, "is not in");
	T_ASSERT_EQ(access(m, F_OK), -1);
	/* The parent named from elsewhere. */
	RUN(r, "convert", raw, a);
	expect(r, 0, NULL, NULL);
	snprintf(elsewhere, sizeof(elsewhere), "%s.moved", a);
	T_ASSERT_SYS(rename(a, elsewhere));
	RUN(r, "merge", b, elsewhere, m);
	expect(r, 1, NULL, "is none of the files given");	/* another id: converted again */
	unlink(raw);
	unlink(b);
	unlink(elsewhere);
	free(img);
	free(r);
}

/* The number after @label in @s, or -1. */
static long long count_after(const char *s, const char *label)
{
	const char *p = strstr(s, label);

	return p ? strtoll(p + strlen(label), NULL, 10) : -1;
}

/*
 * snapshot --demo: the store snapshotted live while it serves, restored in
 * two fresh processes (recording, then replaying the working set), every
 * key verified after each; the counts it prints agree with each other.
 */
TEST(snapshot_tool_demo)
{
	struct t_run *r = calloc(1, sizeof(*r));
	const char *p, *v1, *v2;
	long long keys, pages, ws, faults1, faults2, prefetched;
	char dir[] = "/tmp/fl-test-demo-XXXXXX";

	T_ASSERT(r);
	T_ASSERT(mkdtemp(dir) != NULL);
	RUN(r, "--demo", "--size", "8M", "--serve", "0.1", "--seconds", "0.2", "--dir", dir);
	expect(r, 0, "faultline snapshot --demo: a key-value store of 8 MiB", NULL);
	/* 8 MiB: 16383 slots after the header, half of them keys (even: 2 threads). */
	T_ASSERT(strstr(r->out, "source    pid ") != NULL);
	keys = count_after(strstr(r->out, "source    pid ") + 14, ": ");
	T_ASSERT_EQ(keys, 8190);
	/* The snapshot saved every page of the store. */
	pages = count_after(r->out, "ms in all);\n          ");
	T_ASSERT_EQ(pages, 8 * MiB / PG);
	v1 = strstr(r->out, "verify    ");
	T_ASSERT(v1 != NULL);
	v2 = strstr(v1 + 1, "verify    ");
	T_ASSERT(v2 != NULL);
	for (p = v1; p; p = p == v1 ? v2 : NULL) {
		static const char ok[] = "verify    8190 keys present of 8190, 0 wrong values, "
					 "0 wrong GETs, checksums match";

		T_ASSERT(!strncmp(p, ok, sizeof(ok) - 1));
	}
	/* The working set: pages the first restore faulted in while serving. */
	ws = count_after(r->out, "; working set ");
	faults1 = count_after(strstr(r->out, "restore 1"), "M ops/s, ");
	T_ASSERT(ws > 0 && ws <= (long long)(8 * MiB / PG));
	T_ASSERT(faults1 >= ws);
	/* The replay: every page of the working set faulted or prefetched, none twice. */
	faults2 = count_after(strstr(r->out, "restore 2"), "M ops/s, ");
	prefetched = count_after(strstr(r->out, "restore 2"), " faults, ");
	T_ASSERT(faults2 >= 0 && prefetched >= 0);
	T_ASSERT(prefetched <= ws);
	/* The files are gone: the directory given is empty again. */
	T_ASSERT_SYS(rmdir(dir));

	RUN(r, "--demo", "--size", "1M");
	expect(r, 2, NULL, "--size: expected 4M to 4G");
	RUN(r, "--demo", "--seconds", "x");
	expect(r, 2, NULL, "--seconds: expected 0 to 3600 seconds");
	free(r);
}
