/* SPDX-License-Identifier: MIT */
/* faultline snapshot: look into, check, convert and merge snapshot files. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "tool.h"

#define SUB "snapshot"
#define MIB (1ull << 20)
#define CHUNK (2 * MIB)	/* convert and merge move the data in pieces of this (or a page) */

void usage_snapshot(FILE *out)
{
	fprintf(out,
		"usage: faultline snapshot info FILE\n"
		"       faultline snapshot verify FILE...\n"
		"       faultline snapshot convert [--page-size SIZE] [--addr ADDR] [--zstd]\n"
		"                                  [--level N] RAW OUT\n"
		"       faultline snapshot merge [--zstd] [--level N] NEWEST [PARENT...] OUT\n"
		"       faultline snapshot --demo [OPTIONS]\n\n"
		"Snapshot files (doc/snapshot-format.md), as written by fl_snapshot_writer_create(3)\n"
		"and restored lazily through fl_store_snapshot_open(3).\n\n"
		"  info      the header, the chain, and per region its size, page size and pages by\n"
		"            kind (stored, zero, absent, the parent's), with the zero share\n"
		"  verify    check each file and every stored page's CRC; exit 1 if any is bad\n"
		"  convert   make a full snapshot of one region from a raw memory file (such as\n"
		"            Firecracker's): all-zero pages take no space\n"
		"  merge     flatten a chain (an incremental snapshot and its parents, found by id\n"
		"            next to NEWEST unless given) into one full snapshot OUT\n\n"
		"  --page-size SIZE  convert: the region's page size (4K default; 2M for hugetlbfs)\n"
		"  --addr ADDR       convert: the address recorded for the region (default 0)\n"
		"  --zstd            compress OUT with zstd, per chunk\n"
		"  --level N         the zstd level (-7 to 22; default zstd's)\n"
		"OUT must not exist.\n\n");
	usage_snapshot_demo(out);
}

static void hex(const uint8_t id[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static double pct(uint64_t a, uint64_t b)
{
	return b ? 100.0 * (double)a / (double)b : 0.0;
}

static int do_info(const char *path)
{
	struct fl_snapshot_open_opts alone = { .sz = sizeof(alone),
					       .flags = FL_SNAPSHOT_OPEN_ALONE };
	struct fl_snapshot_info info = { .sz = sizeof(info) };
	struct fl_snapshot *s = NULL, *chain = NULL;
	char id[33], pid[33], when[64];
	time_t t;
	struct tm tm;
	int r;

	r = fl_snapshot_open(path, &alone, &s);
	if (r < 0)
		return fail(SUB, path, r);
	fl_snapshot_info(s, &info);
	hex(info.id, id);
	hex(info.parent_id, pid);
	t = (time_t)(info.created_ns / 1000000000u);
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("snapshot %s\n", path);
	printf("  id           %s\n", id);
	printf("  created      %s\n", when);
	printf("  file         %llu bytes, %s\n", (unsigned long long)info.file_size,
	       info.flags & FL_SNAPSHOT_INFO_ZSTD ? "zstd-compressed" : "uncompressed");
	if (info.flags & FL_SNAPSHOT_INFO_INCREMENTAL) {
		struct fl_snapshot_info ci = { .sz = sizeof(ci) };

		printf("  parent       %s (incremental)\n", pid);
		/* The chain, if its parents are next to it; quietly: absent parents are normal here. */
		fl_set_log_fn(NULL);
		r = fl_snapshot_open(path, NULL, &chain);
		fl_set_log_fn(tool_log);
		if (r == 0) {
			fl_snapshot_info(chain, &ci);
			printf("  chain        %u files (found next to it)\n", ci.chain);
		} else {
			printf("  chain        incomplete: %s (its parents are not all next to it)\n",
			       strerror(-r));
		}
	} else {
		printf("  parent       none (a full snapshot)\n");
	}
	printf("  regions      %u\n", info.regions);
	for (uint32_t i = 0; i < info.regions; i++) {
		struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };
		uint64_t pages;

		fl_snapshot_region_info(s, i, &ri);
		pages = ri.len / ri.page_size;
		printf("  region %-5u address %#llx, %llu bytes (%.1f MiB), pages of %llu bytes, "
		       "flags %#x\n", i, (unsigned long long)ri.addr, (unsigned long long)ri.len,
		       (double)ri.len / MIB, (unsigned long long)ri.page_size, ri.flags);
		printf("               this file: %llu stored, %llu zero (%.1f%%), %llu absent, "
		       "%llu the parent's\n", (unsigned long long)ri.pages_data,
		       (unsigned long long)ri.pages_zero, pct(ri.pages_zero, pages),
		       (unsigned long long)ri.pages_absent, (unsigned long long)ri.pages_parent);
		if (chain) {
			fl_snapshot_region_info(chain, i, &ri);
			printf("               restored:  %llu stored, %llu zero (%.1f%%), "
			       "%llu absent\n", (unsigned long long)ri.chain_data,
			       (unsigned long long)ri.chain_zero, pct(ri.chain_zero, pages),
			       (unsigned long long)ri.chain_absent);
		}
	}
	fl_snapshot_close(chain);
	fl_snapshot_close(s);
	return 0;
}

static int do_verify(int n, char **paths)
{
	struct fl_snapshot_open_opts alone = { .sz = sizeof(alone),
					       .flags = FL_SNAPSHOT_OPEN_ALONE };
	int ret = 0;

	for (int i = 0; i < n; i++) {
		struct fl_snapshot *s = NULL;
		uint64_t bad = 0, stored = 0;
		struct fl_snapshot_info info = { .sz = sizeof(info) };
		int r = fl_snapshot_open(paths[i], &alone, &s);

		if (r < 0) {
			fprintf(stderr, "faultline: %s: %s: refused (%s)\n", SUB, paths[i],
				strerror(-r));
			ret = 1;
			continue;
		}
		fl_snapshot_info(s, &info);
		for (uint32_t k = 0; k < info.regions; k++) {
			struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };

			fl_snapshot_region_info(s, k, &ri);
			stored += ri.pages_data;
		}
		r = fl_snapshot_verify(s, &bad);
		if (r == 0) {
			printf("%s: ok, %llu stored pages checked\n", paths[i],
			       (unsigned long long)stored);
		} else if (r == -EIO) {
			printf("%s: %llu of %llu stored pages are bad\n", paths[i],
			       (unsigned long long)bad, (unsigned long long)stored);
			ret = 1;
		} else {
			fail(SUB, paths[i], r);
			ret = 1;
		}
		fl_snapshot_close(s);
	}
	return ret;
}

static int writer_open(const char *out, bool zstd, int level, struct fl_snapshot_writer **w)
{
	struct fl_snapshot_writer_opts o = { .sz = sizeof(o), .flags = zstd ? FL_SNAPSHOT_ZSTD : 0,
					     .zstd_level = level };
	int r = fl_snapshot_writer_create(out, &o, w);

	if (r == -EOPNOTSUPP)
		fprintf(stderr, "faultline: %s: --zstd: this faultline was built without libzstd\n",
			SUB);
	else if (r < 0)
		fail(SUB, out, r);
	return r;
}

static int do_convert(const char *raw, const char *out, uint64_t ps, uint64_t addr, bool zstd,
		      int level)
{
	struct fl_snapshot_writer *w = NULL;
	uint64_t size, len, step = ps > CHUNK ? ps : CHUNK;
	uint8_t id[16], *buf;
	struct stat st;
	char idh[33];
	int fd, r;

	fd = open(raw, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(SUB, raw, -errno);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
		close(fd);
		fprintf(stderr, "faultline: %s: %s: not a regular, nonempty file\n", SUB, raw);
		return 1;
	}
	size = (uint64_t)st.st_size;
	/* A tail shorter than a page is padded with zeros to a whole page. */
	len = (size + ps - 1) / ps * ps;
	buf = malloc(step);
	if (!buf) {
		close(fd);
		return fail(SUB, "memory", -ENOMEM);
	}
	r = writer_open(out, zstd, level, &w);
	if (r < 0)
		goto out;
	r = fl_snapshot_writer_add_region(w, addr, len, (size_t)ps, 0, NULL);
	for (uint64_t off = 0; r == 0 && off < len; off += step) {
		uint64_t n = len - off < step ? len - off : step, got = 0;

		memset(buf, 0, n);
		while (got < n && off + got < size) {
			ssize_t k = pread(fd, buf + got, n - got, (off_t)(off + got));

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				r = k < 0 ? -errno : -EIO;
				break;
			}
			got += (uint64_t)k;
		}
		if (r == 0)
			r = fl_snapshot_writer_put(w, 0, off, buf, n);
	}
	if (r < 0) {
		fl_snapshot_writer_destroy(w);
		fail(SUB, "convert", r);
		goto out;
	}
	r = fl_snapshot_writer_finish(w, id);
	if (r < 0) {
		fail(SUB, out, r);
		goto out;
	}
	hex(id, idh);
	printf("%s: %llu bytes in pages of %llu from %s, id %s\n", out, (unsigned long long)len,
	       (unsigned long long)ps, raw, idh);
out:
	free(buf);
	close(fd);
	return r < 0 ? 1 : 0;
}

static int do_merge(int n, char **paths, const char *out, bool zstd, int level)
{
	const char **parents = NULL;
	struct fl_snapshot_open_opts oo = { .sz = sizeof(oo) };
	struct fl_snapshot_info info = { .sz = sizeof(info) };
	struct fl_snapshot_writer *w = NULL;
	struct fl_snapshot *s = NULL;
	uint8_t *buf = NULL, id[16];
	uint64_t *holes = NULL, maxps = 0;
	char idh[33];
	int r;

	if (n > 1) {
		parents = calloc((size_t)n, sizeof(*parents));
		if (!parents)
			return fail(SUB, "memory", -ENOMEM);
		for (int i = 1; i < n; i++)
			parents[i - 1] = paths[i];
		oo.parents = parents;
	}
	r = fl_snapshot_open(paths[0], &oo, &s);
	free(parents);
	if (r < 0)
		return fail(SUB, paths[0], r);
	fl_snapshot_info(s, &info);
	r = writer_open(out, zstd, level, &w);
	for (uint32_t i = 0; r == 0 && i < info.regions; i++) {
		struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };

		fl_snapshot_region_info(s, i, &ri);
		maxps = ri.page_size > maxps ? ri.page_size : maxps;
		r = fl_snapshot_writer_add_region(w, ri.addr, ri.len, (size_t)ri.page_size,
						  ri.flags, NULL);
	}
	if (r == 0) {
		uint64_t step = maxps > CHUNK ? maxps : CHUNK;

		buf = malloc(step);
		holes = calloc(step / 4096 / 64 + 1, sizeof(*holes));
		if (!buf || !holes)
			r = -ENOMEM;
	}
	for (uint32_t i = 0; r == 0 && i < info.regions; i++) {
		struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };
		uint64_t step;

		fl_snapshot_region_info(s, i, &ri);
		step = ri.page_size > CHUNK ? ri.page_size : CHUNK;
		for (uint64_t off = 0; r == 0 && off < ri.len; off += step) {
			uint64_t k = ri.len - off < step ? ri.len - off : step;

			/* Holes are not written by the read: zeros, which the writer keeps as such. */
			memset(buf, 0, k);
			r = fl_snapshot_read(s, i, off, buf, k, ri.page_size, holes);
			if (r == 0)
				r = fl_snapshot_writer_put(w, i, off, buf, k);
		}
	}
	free(buf);
	free(holes);
	fl_snapshot_close(s);
	if (r < 0) {
		fl_snapshot_writer_destroy(w);
		if (r == -EIO)
			fprintf(stderr, "faultline: %s: merge: a page of the chain is bad (run "
				"'faultline snapshot verify' on its files); %s not written\n", SUB,
				out);
		else if (w)
			fail(SUB, "merge", r);
		return 1;
	}
	r = fl_snapshot_writer_finish(w, id);
	if (r < 0)
		return fail(SUB, out, r);
	hex(id, idh);
	printf("%s: %u files merged into one full snapshot, id %s\n", out, info.chain, idh);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	enum { O_PS = 1, O_ADDR, O_ZSTD, O_LEVEL };
	static const struct option lo[] = {
		{ "page-size", required_argument, NULL, O_PS },
		{ "addr", required_argument, NULL, O_ADDR },
		{ "zstd", no_argument, NULL, O_ZSTD },
		{ "level", required_argument, NULL, O_LEVEL },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t ps = 4096, addr = 0;
	bool zstd = false, ps_set = false, addr_set = false, level_set = false;
	const char *action;
	int c, level = 0, nargs;
	char **args;

	if (argc < 2)
		return usage_error(SUB, "no action given (info, verify, convert, merge or --demo)");
	action = argv[1];
	if (!strcmp(action, "--demo"))
		return snapshot_demo(argc - 1, argv + 1);
	if (strcmp(action, "info") && strcmp(action, "verify") && strcmp(action, "convert") &&
	    strcmp(action, "merge"))
		return usage_error(SUB, "unknown action '%s' (info, verify, convert or merge)",
				   action);
	opterr = 0;
	optind = 1;
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end;

		switch (c) {
		case O_PS:
			if (tool_parse_size(optarg, 1ull << 30, &ps) < 0 || ps < 4096 ||
			    (ps & (ps - 1)))
				return usage_error(SUB, "--page-size: expected a power of two from 4K "
						   "to 1G, got '%s'", optarg);
			ps_set = true;
			break;
		case O_ADDR:
			errno = 0;
			addr = strtoull(optarg, &end, 0);
			if (errno || *end || !*optarg || *optarg == '-')
				return usage_error(SUB, "--addr: expected an address such as "
						   "0x7f0000000000, got '%s'", optarg);
			addr_set = true;
			break;
		case O_ZSTD:
			zstd = true;
			break;
		case O_LEVEL:
			errno = 0;
			level = (int)strtol(optarg, &end, 10);
			if (errno || *end || !*optarg || level < -7 || level > 22 || level == 0)
				return usage_error(SUB, "--level: expected -7 to 22 (not 0), got '%s'",
						   optarg);
			level_set = true;
			break;
		default:
			return usage_error(SUB, "unknown option '%s'", argv[optind - 1]);
		}
	}
	args = argv + optind;
	nargs = argc - optind;
	if (level_set && !zstd)
		return usage_error(SUB, "--level needs --zstd");
	if (strcmp(action, "convert") && (ps_set || addr_set))
		return usage_error(SUB, "--page-size and --addr are for convert");
	if ((!strcmp(action, "info") || !strcmp(action, "verify")) && zstd)
		return usage_error(SUB, "--zstd is for convert and merge");
	if (!strcmp(action, "info")) {
		if (nargs != 1)
			return usage_error(SUB, "info: expected one FILE");
		return do_info(args[0]);
	}
	if (!strcmp(action, "verify")) {
		if (nargs < 1)
			return usage_error(SUB, "verify: expected at least one FILE");
		return do_verify(nargs, args);
	}
	if (!strcmp(action, "convert")) {
		if (nargs != 2)
			return usage_error(SUB, "convert: expected RAW and OUT");
		if (addr % ps)
			return usage_error(SUB, "--addr %#llx is not a multiple of the page size %llu",
					   (unsigned long long)addr, (unsigned long long)ps);
		if (access(args[1], F_OK) == 0)
			return usage_error(SUB, "convert: %s exists; give a new file", args[1]);
		return do_convert(args[0], args[1], ps, addr, zstd, level);
	}
	if (nargs < 2)
		return usage_error(SUB, "merge: expected NEWEST [PARENT...] OUT");
	if (access(args[nargs - 1], F_OK) == 0)
		return usage_error(SUB, "merge: %s exists; give a new file", args[nargs - 1]);
	return do_merge(nargs - 1, args, args[nargs - 1], zstd, level);
}
