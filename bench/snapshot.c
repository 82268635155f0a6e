/* SPDX-License-Identifier: MIT */
/*
 * faultline bench snapshot: restoring a snapshot, lazily and eagerly, from a
 * cold page cache, against demand paging and mmap of the snapshot file; and
 * the sequential restore bandwidth against mmap with a warm cache.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench snapshot"
#define KIB (1ull << 10)
#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define THP_SIZE (2ull << 20)
#define MAX_RUNS 100
/* Where the snapshot's one region lay (recorded only: a restore maps it anywhere). */
#define SNAP_ADDR 0x100000000ull

enum row {
	/* The restore rows: the workload over a cold page cache (but R_RESIDENT's). */
	R_RESIDENT,		/* the image already in memory: the workload alone */
	R_EAGER,		/* the whole region populated, then the workload */
	R_DEMAND,		/* 4 KiB COPY per fault, no prefetch */
	R_ADAPTIVE,		/* AUTO install, adaptive prefetch 64K-4M */
	R_WS,			/* working-set replay from the snapshot */
	R_LS,			/* working-set replay from the loading set */
	R_MMAP,			/* MAP_PRIVATE of the snapshot file's data */
	/* Sequential, warm cache: a load per page over the whole region. */
	R_SEQ_EAGER,		/* populate the whole region, then the loads */
	R_SEQ_AUTO,		/* demand, AUTO install, adaptive prefetch */
	R_SEQ_MMAP,		/* MAP_PRIVATE of the snapshot file's data */
	R_COUNT,
};

#define R_FIRST_SEQ R_SEQ_EAGER

static const char *const row_names[R_COUNT] = {
	"memory-resident", "eager", "demand-4k", "demand+adaptive", "ws-replay", "loading-set",
	"mmap-file", "seq-eager", "seq-demand-auto", "seq-mmap-file",
};

static const char *const row_what[R_COUNT] = {
	"the image already in anonymous memory: the workload alone",
	"fl_region_populate() of the whole region, then the workload",
	"a fault per page, 4 KiB UFFDIO_COPY, no prefetch (Firecracker's example handler)",
	"AUTO install, adaptive prefetch 64 KiB-4 MiB",
	"working-set replay (ws_replay) reading the snapshot, AUTO install",
	"working-set replay reading the loading set (ws_loading_set), AUTO install",
	"MAP_PRIVATE mapping of the snapshot file's data",
	"fl_region_populate() of the whole region, then a load per page",
	"a load per page, AUTO install, adaptive prefetch 64 KiB-4 MiB",
	"MAP_PRIVATE mapping of the snapshot file's data, a load per page",
};

enum metric { X_SECS, X_FAULTS, X_CACHED, X_WS_PREFETCHED, X_WS_DONE, X_GBPS, X_COUNT };

struct opts {
	uint64_t size;
	unsigned int runs;
	unsigned int ws_percent;
	const char *dir;
	bool json;
	bool keep;
};

struct env {
	const struct opts *o;
	size_t pages;
	uint32_t *ws;		/* the workload's pages, in the order it touches them */
	size_t nws;
	char dir[PATH_MAX];
	char snap[PATH_MAX + 16], wsf[PATH_MAX + 16], lsf[PATH_MAX + 16];
	int fd_snap, fd_ws, fd_ls;
	uint64_t data_off;	/* where the region's page 0 is in the snapshot file */
	uint64_t snap_bytes, ws_bytes, ls_bytes;
	volatile uint64_t sink;
};

struct result {
	double v[X_COUNT];
};

/* [row][metric][run] */
struct table {
	double m[R_COUNT][X_COUNT][MAX_RUNS];
};

void bench_snapshot_usage(FILE *out)
{
	fprintf(out,
		"usage: faultline bench snapshot [--size SIZE] [--runs N] [--ws-percent P]\n"
		"                                [--dir DIR] [--json] [--keep]\n\n"
		"Writes a snapshot of SIZE bytes (default 1G) of patterned memory into DIR,\n"
		"records the working set of a workload that reads every word of P%% of its\n"
		"pages (default 10), scattered across the image in a random order, and then,\n"
		"once per run for every configuration, interleaved (default 3 runs; medians\n"
		"with min-max), restores it into a fresh region and runs the workload. Before\n"
		"each restore the snapshot, working-set and loading-set files are dropped from\n"
		"the page cache (fsync, then posix_fadvise POSIX_FADV_DONTNEED). The time is\n"
		"from opening the snapshot to the workload's last page read. Configurations:\n");
	for (int r = 0; r < R_COUNT; r++) {
		if (r == R_FIRST_SEQ)
			fprintf(out, "Then, with the snapshot file in the page cache, sequential\n"
				     "restore bandwidth (GB/s over the whole region):\n");
		fprintf(out, "  %-17s %s\n", row_names[r], row_what[r]);
	}
	fprintf(out,
		"Every page read is checked against the pattern (untimed). Targets: working-set\n"
		"replay >= 95%% fewer faults and >= 3.5x faster than demand-4k; loading-set\n"
		"within 1.2x of memory-resident; the better sequential restore >= 1.0x\n"
		"seq-mmap-file. The kind of machine is told by a native page fault's cost.\n\n"
		"Options:\n"
		"  --size SIZE        the snapshot's size, a multiple of 2M (K, M, G suffixes)\n"
		"  --runs N           runs (1 to %d, default 3)\n"
		"  --ws-percent P     the working set, in %% of the pages (1 to 100, default 10)\n"
		"  --dir DIR          where the files go (default /var/tmp; a tmpfs has no cold\n"
		"                     cache to measure)\n"
		"  --json             one JSON object instead of the table\n"
		"  --keep             leave the files in DIR (they are removed by default)\n",
		MAX_RUNS);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "size", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "ws-percent", required_argument, NULL, 'w' },
		{ "dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep", no_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	char *end;
	int c;

	*o = (struct opts){ .size = GIB, .runs = 3, .ws_percent = 10, .dir = "/var/tmp" };
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's':
			if (tool_parse_size(optarg, 64 * GIB, &o->size) < 0 || !o->size ||
			    o->size % THP_SIZE)
				return usage_error(SUB, "--size: expected a multiple of 2M, got "
						   "'%s'", optarg);
			break;
		case 'r':
		case 'w':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || optarg[0] < '0' || optarg[0] > '9' || !v ||
			    v > (c == 'r' ? MAX_RUNS : 100))
				return usage_error(SUB, "--%s: expected 1 to %d, got '%s'",
						   c == 'r' ? "runs" : "ws-percent",
						   c == 'r' ? MAX_RUNS : 100, optarg);
			if (c == 'r')
				o->runs = (unsigned int)v;
			else
				o->ws_percent = (unsigned int)v;
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 'j':
			o->json = true;
			break;
		case 'k':
			o->keep = true;
			break;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	return 0;
}

/* ------------------------------------------------------------ the files */

/* Share of the first @len bytes of @fd in the page cache, or -1. */
static double cached_share(int fd, uint64_t len)
{
	size_t pages = (size_t)((len + BENCH_PAGE - 1) / BENCH_PAGE), resident = 0;
	unsigned char *vec;
	void *m;

	if (!len)
		return 0;
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	vec = malloc(pages);
	if (vec && mincore(m, len, vec) == 0)
		for (size_t i = 0; i < pages; i++)
			resident += vec[i] & 1;
	free(vec);
	munmap(m, len);
	return (double)resident / (double)pages;
}

/* Every file out of the page cache (they are clean: each was fsynced once written). */
static void drop_cache(struct env *env)
{
	posix_fadvise(env->fd_snap, 0, 0, POSIX_FADV_DONTNEED);
	posix_fadvise(env->fd_ws, 0, 0, POSIX_FADV_DONTNEED);
	posix_fadvise(env->fd_ls, 0, 0, POSIX_FADV_DONTNEED);
}

/* Read the snapshot file whole, so that it is in the page cache. */
static int warm_cache(struct env *env, struct bench_err *e)
{
	size_t chunk = 8 * MIB;
	char *buf = malloc(chunk);
	int r = 0;

	if (!buf)
		return bench_fail(e, -ENOMEM, "warming the cache");
	for (uint64_t off = 0; off < env->snap_bytes; off += chunk) {
		ssize_t n = pread(env->fd_snap, buf, chunk, (off_t)off);

		if (n < 0) {
			r = bench_fail(e, -errno, "reading %s", env->snap);
			break;
		}
		if (n == 0)
			break;
	}
	free(buf);
	return r;
}

static int open_synced(const char *path, int *fd, uint64_t *bytes, struct bench_err *e)
{
	struct stat st;

	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		return bench_fail(e, -errno, "opening %s", path);
	if (fsync(*fd) < 0 || fstat(*fd, &st) < 0)
		return bench_fail(e, -errno, "syncing %s", path);
	*bytes = (uint64_t)st.st_size;
	return 0;
}

static int write_snapshot(struct env *env, struct bench_err *e)
{
	struct fl_snapshot_writer *w = NULL;
	size_t chunk = 8 * MIB;
	char *buf = malloc(chunk);
	int r;

	if (!buf)
		return bench_fail(e, -ENOMEM, "allocating");
	r = fl_snapshot_writer_create(env->snap, NULL, &w);
	if (r < 0) {
		free(buf);
		return bench_fail(e, r, "fl_snapshot_writer_create(%s)", env->snap);
	}
	r = fl_snapshot_writer_add_region(w, SNAP_ADDR, env->o->size, BENCH_PAGE, 0, NULL);
	for (uint64_t off = 0; r == 0 && off < env->o->size; off += chunk) {
		size_t n = env->o->size - off < chunk ? (size_t)(env->o->size - off) : chunk;

		fl_pattern_fill(buf, off, n, BENCH_PATTERN_SEED);
		r = fl_snapshot_writer_put(w, 0, off, buf, n);
	}
	free(buf);
	if (r < 0) {
		fl_snapshot_writer_destroy(w);
		return bench_fail(e, r, "writing the snapshot %s", env->snap);
	}
	r = fl_snapshot_writer_finish(w, NULL);
	if (r < 0)
		return bench_fail(e, r, "fl_snapshot_writer_finish(%s)", env->snap);
	return 0;
}

static uint64_t le64_at(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* Region 0's data_off (doc/snapshot-format.md): where mmap of the file finds page 0. */
static int read_data_off(struct env *env, struct bench_err *e)
{
	unsigned char h[128], ent[64];
	uint64_t table;

	if (pread(env->fd_snap, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return bench_fail(e, -EIO, "reading the header of %s", env->snap);
	table = le64_at(h + 56);
	if (pread(env->fd_snap, ent, sizeof(ent), (off_t)table) != (ssize_t)sizeof(ent))
		return bench_fail(e, -EIO, "reading the region table of %s", env->snap);
	env->data_off = le64_at(ent + 32);
	if (!env->data_off || env->data_off % BENCH_PAGE ||
	    env->data_off + env->o->size > env->snap_bytes)
		return bench_fail(e, -EINVAL, "%s: region 0's data_off %llu is not usable",
				  env->snap, (unsigned long long)env->data_off);
	return 0;
}

/* ------------------------------------------------------------ the workload */

/* Read every word of each working-set page, in the recorded order. */
static __attribute__((noinline)) void workload(struct env *env, const char *base)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < env->nws; i++) {
		const uint64_t *w = (const uint64_t *)(base + (size_t)env->ws[i] * BENCH_PAGE);

		for (size_t k = 0; k < BENCH_PAGE / sizeof(uint64_t); k++)
			sum += w[k];
	}
	env->sink = sum;
}

static int check_ws(struct env *env, const char *name, const char *base, struct bench_err *e)
{
	for (size_t i = 0; i < env->nws; i++) {
		uint64_t off = (uint64_t)env->ws[i] * BENCH_PAGE;
		uint64_t bad = fl_pattern_check(base + off, off, BENCH_PAGE, BENCH_PATTERN_SEED);

		if (bad)
			return bench_fail(e, -EIO, "%s: page %u does not hold the snapshot's bytes",
					  name, env->ws[i]);
	}
	return 0;
}

static int check_all(struct env *env, const char *name, const char *base, struct bench_err *e)
{
	uint64_t bad = fl_pattern_check(base, 0, env->o->size, BENCH_PATTERN_SEED);

	if (bad)
		return bench_fail(e, -EIO, "%s: page %llu does not hold the snapshot's bytes", name,
				  (unsigned long long)((bad - 1) / BENCH_PAGE));
	return 0;
}

static uint64_t thread_faults(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru) < 0)
		return 0;
	return (uint64_t)ru.ru_minflt + (uint64_t)ru.ru_majflt;
}

/* ------------------------------------------------------------ the rows */

struct pager_cfg {
	enum fl_install install;
	enum fl_prefetch prefetch;
	uint32_t flags;
	bool ws, ls;		/* replay the working set (from the loading set) */
	bool eager;		/* populate the whole region first */
	bool sequential;	/* a load per page over the whole region, not the workload */
};

/*
 * Restore into a fresh region and run the workload: timed from opening the
 * snapshot to the workload's end. The teardown is not timed.
 */
static int run_pager(struct env *env, const char *name, const struct pager_cfg *c,
		     struct result *res, struct bench_err *e)
{
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS };
	struct fl_region_stats st = { .sz = sizeof(st) };
	size_t size = (size_t)env->o->size;
	struct fl_store *store = NULL;
	struct fl_region *reg = NULL;
	struct fl_pager *p = NULL;
	uint64_t t0;
	char *addr;
	int r;

	addr = bench_map_aligned(size, THP_SIZE);
	if (!addr)
		return bench_fail(e, -ENOMEM, "%s: mapping the region", name);
	/* As bench fill: a THP-eligible range lets AUTO move whole 2 MiB chunks in. */
	if (c->install == FL_INSTALL_AUTO)
		madvise(addr, size, MADV_HUGEPAGE);
	t0 = fl__now_ns();
	r = fl_store_snapshot_open(env->snap, NULL, &store);
	if (r < 0) {
		bench_fail(e, r, "%s: fl_store_snapshot_open(%s)", name, env->snap);
		goto out;
	}
	r = fl_pager_create(&po, &p);
	if (r < 0) {
		bench_fail(e, r, "%s: fl_pager_create", name);
		goto out;
	}
	r = fl_pager_start(p);
	if (r < 0) {
		bench_fail(e, r, "%s: fl_pager_start", name);
		goto out;
	}
	{
		struct fl_region_opts ro = {
			.sz = sizeof(ro),
			.addr = addr,
			.len = size,
			.store = store,
			.page_size = BENCH_PAGE,
			.mem = FL_MEM_ANON,
			.memfd = -1,
			.install = c->install,
			.prefetch = c->prefetch,
			.on_error = FL_ON_ERROR_POISON,
			.flags = c->flags,
			.ws_replay = c->ws ? env->wsf : NULL,
			.ws_loading_set = c->ls ? env->lsf : NULL,
		};

		r = fl_region_add(p, &ro, &reg);
		if (r < 0) {
			bench_fail(e, r, "%s: fl_region_add", name);
			goto out;
		}
	}
	if (c->eager) {
		r = fl_region_populate(reg, 0, size);
		if (r < 0) {
			bench_fail(e, r, "%s: fl_region_populate", name);
			goto out;
		}
	}
	if (c->sequential)
		bench_walk(addr, env->pages);
	else
		workload(env, addr);
	res->v[X_SECS] = (double)(fl__now_ns() - t0) / 1e9;
	r = fl_region_stats(reg, &st);
	if (r < 0) {
		bench_fail(e, r, "%s: fl_region_stats", name);
		goto out;
	}
	res->v[X_FAULTS] = (double)st.faults;
	res->v[X_WS_PREFETCHED] = (double)st.ws_prefetched;
	/* The replay's time to its last batch (0 if it was still running: then the workload's). */
	res->v[X_WS_DONE] = st.ws_done_ns ? (double)st.ws_done_ns / 1e9 : res->v[X_SECS];
	if (c->flags & FL_REGION_WS_RECORD) {
		/* The recording pass (untimed): save what the workload touched. */
		if (st.ws_recorded != env->nws) {
			r = bench_fail(e, -EIO, "%s: recorded %llu pages, the workload touched %zu",
				       name, (unsigned long long)st.ws_recorded, env->nws);
			goto out;
		}
		r = fl_region_ws_save(reg, env->wsf, env->lsf);
		if (r < 0) {
			bench_fail(e, r, "%s: fl_region_ws_save(%s)", name, env->wsf);
			goto out;
		}
	}
	r = c->sequential ? check_all(env, name, addr, e) : check_ws(env, name, addr, e);
out:
	fl_pager_destroy(p);
	fl_store_destroy(store);
	bench_unmap(addr, size);
	return r;
}

static int run_mmap(struct env *env, const char *name, bool sequential, struct result *res,
		    struct bench_err *e)
{
	size_t size = (size_t)env->o->size;
	uint64_t t0, f0;
	char *m;
	int r;

	f0 = thread_faults();
	t0 = fl__now_ns();
	m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, env->fd_snap, (off_t)env->data_off);
	if (m == MAP_FAILED)
		return bench_fail(e, -errno, "%s: mmap of %s", name, env->snap);
	if (sequential)
		bench_walk(m, env->pages);
	else
		workload(env, m);
	res->v[X_SECS] = (double)(fl__now_ns() - t0) / 1e9;
	res->v[X_FAULTS] = (double)(thread_faults() - f0);
	r = sequential ? check_all(env, name, m, e) : check_ws(env, name, m, e);
	munmap(m, size);
	return r;
}

static int run_resident(struct env *env, struct result *res, struct bench_err *e)
{
	size_t size = (size_t)env->o->size;
	uint64_t t0, f0;
	char *m = bench_map_aligned(size, THP_SIZE);
	int r;

	if (!m)
		return bench_fail(e, -ENOMEM, "memory-resident: mapping %zu bytes", size);
	fl_pattern_fill(m, 0, size, BENCH_PATTERN_SEED);
	f0 = thread_faults();
	t0 = fl__now_ns();
	workload(env, m);
	res->v[X_SECS] = (double)(fl__now_ns() - t0) / 1e9;
	res->v[X_FAULTS] = (double)(thread_faults() - f0);
	r = check_ws(env, "memory-resident", m, e);
	bench_unmap(m, size);
	return r;
}

static int run_row(struct env *env, enum row row, struct result *res, struct bench_err *e)
{
	static const struct pager_cfg cfgs[R_COUNT] = {
		[R_EAGER] = { FL_INSTALL_AUTO, FL_PREFETCH_NONE, 0, false, false, true, false },
		[R_DEMAND] = { FL_INSTALL_COPY, FL_PREFETCH_NONE, 0, false, false, false, false },
		[R_ADAPTIVE] = { FL_INSTALL_AUTO, FL_PREFETCH_ADAPTIVE, 0, false, false, false,
				 false },
		[R_WS] = { FL_INSTALL_AUTO, FL_PREFETCH_NONE, 0, true, false, false, false },
		[R_LS] = { FL_INSTALL_AUTO, FL_PREFETCH_NONE, 0, true, true, false, false },
		[R_SEQ_EAGER] = { FL_INSTALL_AUTO, FL_PREFETCH_NONE, 0, false, false, true, true },
		[R_SEQ_AUTO] = { FL_INSTALL_AUTO, FL_PREFETCH_ADAPTIVE, 0, false, false, false,
				 true },
	};
	int r;

	memset(res, 0, sizeof(*res));
	if (row < R_FIRST_SEQ && row != R_RESIDENT) {
		drop_cache(env);
		res->v[X_CACHED] = cached_share(env->fd_snap, env->snap_bytes);
	} else if (row >= R_FIRST_SEQ) {
		res->v[X_CACHED] = cached_share(env->fd_snap, env->snap_bytes);
	}
	switch (row) {
	case R_RESIDENT:
		return run_resident(env, res, e);
	case R_MMAP:
		return run_mmap(env, row_names[row], false, res, e);
	case R_SEQ_MMAP:
		r = run_mmap(env, row_names[row], true, res, e);
		break;
	default:
		r = run_pager(env, row_names[row], &cfgs[row], res, e);
		break;
	}
	if (row >= R_FIRST_SEQ)
		res->v[X_GBPS] = (double)env->o->size / res->v[X_SECS] / 1e9;
	return r;
}

/* ------------------------------------------------------------ setup */

static void teardown(struct env *env)
{
	if (env->fd_snap >= 0)
		close(env->fd_snap);
	if (env->fd_ws >= 0)
		close(env->fd_ws);
	if (env->fd_ls >= 0)
		close(env->fd_ls);
	if (!env->o->keep && env->dir[0]) {
		unlink(env->snap);
		unlink(env->wsf);
		unlink(env->lsf);
		rmdir(env->dir);
	}
	free(env->ws);
}

static int setup(struct env *env, struct bench_err *e)
{
	static const struct pager_cfg record = { FL_INSTALL_COPY, FL_PREFETCH_NONE,
						 FL_REGION_WS_RECORD, false, false, false, false };
	struct result res;
	uint32_t *perm;
	int r;

	env->pages = (size_t)(env->o->size / BENCH_PAGE);
	env->nws = env->pages * env->o->ws_percent / 100;
	if (!env->nws)
		env->nws = 1;
	perm = malloc(env->pages * sizeof(*perm));
	if (!perm)
		return bench_fail(e, -ENOMEM, "allocating");
	/* The working set: the first pages of a random permutation, in its order. */
	bench_permutation(perm, env->pages, BENCH_PATTERN_SEED);
	env->ws = realloc(perm, env->nws * sizeof(*perm));
	if (!env->ws) {
		free(perm);
		return bench_fail(e, -ENOMEM, "allocating");
	}
	snprintf(env->dir, sizeof(env->dir), "%s/faultline-bench-snapshot-XXXXXX", env->o->dir);
	if (!mkdtemp(env->dir)) {
		r = bench_fail(e, -errno, "creating a directory in %s", env->o->dir);
		env->dir[0] = '\0';
		return r;
	}
	snprintf(env->snap, sizeof(env->snap), "%s/image.flsnap", env->dir);
	snprintf(env->wsf, sizeof(env->wsf), "%s/image.ws", env->dir);
	snprintf(env->lsf, sizeof(env->lsf), "%s/image.ls", env->dir);
	bench_progress("preparing: a %llu MiB snapshot in %s\n",
		       (unsigned long long)(env->o->size / MIB), env->dir);
	r = write_snapshot(env, e);
	if (r == 0)
		r = open_synced(env->snap, &env->fd_snap, &env->snap_bytes, e);
	if (r == 0)
		r = read_data_off(env, e);
	if (r < 0)
		return r;
	bench_progress("preparing: recording the working set (%zu pages)\n", env->nws);
	r = run_pager(env, "recording", &record, &res, e);
	if (r == 0)
		r = open_synced(env->wsf, &env->fd_ws, &env->ws_bytes, e);
	if (r == 0)
		r = open_synced(env->lsf, &env->fd_ls, &env->ls_bytes, e);
	return r;
}

/* ------------------------------------------------------------ machine kind */

/*
 * The kind of machine, from the floors: a native page fault's median cost
 * (bench latency's "native" mode) over a few thousand pages.
 */
static double native_fault_ns(void)
{
	struct bench_lat_opts lo = { .pages = 4096, .warmup = 256 };
	struct bench_lat_result lr = { 0 };
	struct bench_err e;
	uint64_t *lat = calloc(lo.pages, sizeof(*lat));
	double v = NAN;

	if (!lat)
		return NAN;
	lr.lat = lat;
	if (bench_lat_run(BENCH_LAT_NATIVE, &lo, &lr, &e) == 0) {
		stats_sort_u64(lat, lo.pages);
		v = (double)stats_percentile(lat, lo.pages, 50);
	}
	free(lat);
	return v;
}

/* ------------------------------------------------------------ the report */

static struct stats_spread spread(const struct table *t, int row, int x, unsigned int runs)
{
	double v[MAX_RUNS];

	memcpy(v, t->m[row][x], runs * sizeof(double));
	return stats_spread_of(v, runs, v);
}

enum target { T_WS_FAULTS, T_WS_SPEED, T_LS_RESIDENT, T_SEQ, T_COUNT };

struct target_val {
	const char *name;
	const char *want;	/* the target, as text */
	double ratio;
	bool met;
	const char *unit;	/* "x" or "%" */
};

/* Per run ratios, then their median. */
static double ratio_median(const struct table *t, unsigned int runs, int a, int b, int x)
{
	double v[MAX_RUNS];

	for (unsigned int i = 0; i < runs; i++)
		v[i] = t->m[a][x][i] / t->m[b][x][i];
	return stats_median(v, runs);
}

static void targets(const struct table *t, unsigned int runs, struct target_val *tv)
{
	double v[MAX_RUNS];
	int best = R_SEQ_EAGER;

	for (unsigned int i = 0; i < runs; i++)
		v[i] = t->m[R_DEMAND][X_FAULTS][i] > 0 ?
			       100.0 * (1 - t->m[R_WS][X_FAULTS][i] / t->m[R_DEMAND][X_FAULTS][i]) :
			       0;
	tv[T_WS_FAULTS] = (struct target_val){ "ws-replay: fewer faults than demand-4k",
					       ">= 95%", stats_median(v, runs), false, "%" };
	tv[T_WS_FAULTS].met = tv[T_WS_FAULTS].ratio >= 95;
	tv[T_WS_SPEED] = (struct target_val){ "ws-replay: faster than demand-4k", ">= 3.5x",
					      ratio_median(t, runs, R_DEMAND, R_WS, X_SECS),
					      false, "x" };
	tv[T_WS_SPEED].met = tv[T_WS_SPEED].ratio >= 3.5;
	tv[T_LS_RESIDENT] = (struct target_val){ "loading-set: time / memory-resident",
						 "<= 1.2x",
						 ratio_median(t, runs, R_LS, R_RESIDENT, X_SECS),
						 false, "x" };
	tv[T_LS_RESIDENT].met = tv[T_LS_RESIDENT].ratio <= 1.2;
	if (spread(t, R_SEQ_AUTO, X_GBPS, runs).median > spread(t, R_SEQ_EAGER, X_GBPS, runs).median)
		best = R_SEQ_AUTO;
	tv[T_SEQ] = (struct target_val){ best == R_SEQ_EAGER ?
						 "seq-eager: GB/s / seq-mmap-file" :
						 "seq-demand-auto: GB/s / seq-mmap-file",
					 ">= 1.0x",
					 ratio_median(t, runs, best, R_SEQ_MMAP, X_GBPS), false,
					 "x" };
	tv[T_SEQ].met = tv[T_SEQ].ratio >= 1.0;
}

static const char *kind_text(const char *kind)
{
	if (!strcmp(kind, "paravirtualized"))
		return "paravirtualized, no hardware virtualization (a native fault costs >= 4 µs; "
		       "~0.7 µs with KVM)";
	if (!strcmp(kind, "hardware"))
		return "bare metal or hardware-virtualized (KVM)";
	if (!strcmp(kind, "unclear"))
		return "between a KVM guest and a paravirtualized one";
	return "unknown";
}

static const char *kind_of(double fault_ns)
{
	if (isnan(fault_ns))
		return "unknown";
	return fault_ns >= 4000 ? "paravirtualized" : fault_ns <= 2000 ? "hardware" : "unclear";
}

static void print_table(const struct table *t, const struct env *env, const struct opts *o,
			const struct bench_machine *m, double fault_ns)
{
	struct target_val tv[T_COUNT];

	bench_print_header("snapshot", m);
	printf("kind of machine, from the floors: %s (native fault p50 %.0f ns)\n",
	       kind_text(kind_of(fault_ns)), fault_ns);
	printf("snapshot: %llu MiB in %s (file %.1f MiB); working set %zu pages (%u%%), "
	       "scattered, random order;\n"
	       "working-set file %.1f KiB, loading set %.1f MiB; %u runs interleaved, median "
	       "(min-max)\n\n",
	       (unsigned long long)(o->size / MIB), o->dir, (double)env->snap_bytes / MIB,
	       env->nws, o->ws_percent, (double)env->ws_bytes / KIB, (double)env->ls_bytes / MIB,
	       o->runs);
	printf("restore, cold page cache   time to completion ms       faults   ws prefetched"
	       "  last batch ms  cached\n");
	for (int r = 0; r < R_COUNT; r++) {
		struct stats_spread s = spread(t, r, X_SECS, o->runs);
		char cell[64], cached[16] = "-", pf[24] = "-", done[24] = "-";

		if (r == R_FIRST_SEQ)
			printf("\nsequential, warm cache     GB/s                   time ms"
			       "     faults  cached\n");
		if (r != R_RESIDENT)
			snprintf(cached, sizeof(cached), "%3.0f%%",
				 100 * spread(t, r, X_CACHED, o->runs).median);
		if (r < R_FIRST_SEQ) {
			snprintf(cell, sizeof(cell), "%.1f (%.1f-%.1f)", s.median * 1e3,
				 s.min * 1e3, s.max * 1e3);
			if (r == R_WS || r == R_LS) {
				snprintf(pf, sizeof(pf), "%.0f",
					 spread(t, r, X_WS_PREFETCHED, o->runs).median);
				snprintf(done, sizeof(done), "%.1f",
					 1e3 * spread(t, r, X_WS_DONE, o->runs).median);
			}
			printf("%-18s %29s %12.0f %15s %14s  %6s\n", row_names[r], cell,
			       spread(t, r, X_FAULTS, o->runs).median, pf, done, cached);
		} else {
			struct stats_spread g = spread(t, r, X_GBPS, o->runs);

			snprintf(cell, sizeof(cell), "%.2f (%.2f-%.2f)", g.median, g.min, g.max);
			printf("%-18s %21s %17.1f %10.0f  %6s\n", row_names[r], cell,
			       s.median * 1e3, spread(t, r, X_FAULTS, o->runs).median, cached);
		}
	}
	printf("(faults: the region's fault messages; mmap and memory-resident rows: the thread's "
	       "minor + major faults;\n ws prefetched: pages the replay installed before any "
	       "fault; last batch: from fl_region_add()\n to the replay's last batch; cached: "
	       "the snapshot file's share in the page cache\n at the start)\n\n"
	       "targets (medians of per-run ratios):\n");
	targets(t, o->runs, tv);
	for (int k = 0; k < T_COUNT; k++)
		printf("  %-42s %7.2f%-2s target %-7s %s\n", tv[k].name, tv[k].ratio, tv[k].unit,
		       tv[k].want, tv[k].met ? "met" : "MISSED");
}

static void print_json(const struct table *t, const struct env *env, const struct opts *o,
		       const struct bench_machine *m, double fault_ns)
{
	static const char *const keys[X_COUNT] = { "secs", "faults", "cached", "ws_prefetched",
						   "ws_done_secs", "gb_per_s" };
	struct target_val tv[T_COUNT];

	bench_json_header("snapshot", m);
	printf(",\"machine_kind\":");
	bench_json_str(kind_of(fault_ns));
	printf(",\"native_fault_ns\":%.0f", isnan(fault_ns) ? -1.0 : fault_ns);
	printf(",\"options\":{\"size\":%llu,\"runs\":%u,\"ws_percent\":%u,\"dir\":",
	       (unsigned long long)o->size, o->runs, o->ws_percent);
	bench_json_str(o->dir);
	printf("},\"ws_pages\":%zu,\"snapshot_bytes\":%llu,\"ws_bytes\":%llu,"
	       "\"loading_set_bytes\":%llu,\"rows\":[", env->nws,
	       (unsigned long long)env->snap_bytes, (unsigned long long)env->ws_bytes,
	       (unsigned long long)env->ls_bytes);
	for (int r = 0; r < R_COUNT; r++) {
		printf("%s{\"name\":\"%s\",\"cache\":\"%s\"", r ? "," : "", row_names[r],
		       r == R_RESIDENT ? "none" : r < R_FIRST_SEQ ? "cold" : "warm");
		for (int x = 0; x < X_COUNT; x++) {
			if (x == X_GBPS && r < R_FIRST_SEQ)
				continue;
			if ((x == X_WS_PREFETCHED || x == X_WS_DONE) && r != R_WS && r != R_LS)
				continue;
			printf(",");
			bench_json_spread(keys[x], spread(t, r, x, o->runs));
		}
		printf("}");
	}
	printf("],\"targets\":[");
	targets(t, o->runs, tv);
	for (int k = 0; k < T_COUNT; k++) {
		printf("%s{\"name\":", k ? "," : "");
		bench_json_str(tv[k].name);
		printf(",\"value\":%.4g,\"unit\":\"%s\",\"target\":", tv[k].ratio,
		       tv[k].unit[0] == '%' ? "percent" : "ratio");
		bench_json_str(tv[k].want);
		printf(",\"met\":%s}", tv[k].met ? "true" : "false");
	}
	printf("]}\n");
}

int bench_snapshot_main(int argc, char **argv)
{
	struct env env = { .fd_snap = -1, .fd_ws = -1, .fd_ls = -1 };
	struct bench_machine m;
	struct bench_err e = { "" };
	struct table *t;
	struct opts o;
	double fault_ns;
	int r = parse_args(argc, argv, &o);

	if (r)
		return r;
	env.o = &o;
	t = calloc(1, sizeof(*t));
	if (!t)
		return fail(SUB, "memory", -ENOMEM);
	bench_machine_get(&m);
	fault_ns = native_fault_ns();
	bench_prewarm(2 * (size_t)o.size);
	r = setup(&env, &e);
	for (unsigned int run = 0; r == 0 && run < o.runs; run++) {
		bench_progress("run %u/%u:", run + 1, o.runs);
		for (int i = 0; r == 0 && i < R_COUNT; i++) {
			struct result res;

			if (i == R_FIRST_SEQ)
				r = warm_cache(&env, &e);
			bench_progress(" %s", row_names[i]);
			if (r == 0)
				r = run_row(&env, i, &res, &e);
			for (int x = 0; r == 0 && x < X_COUNT; x++)
				t->m[i][x][run] = res.v[x];
		}
		bench_progress("\n");
	}
	if (r < 0) {
		bench_progress("\n");
		teardown(&env);
		free(t);
		return bench_report_error(SUB, &e);
	}
	if (o.json)
		print_json(t, &env, &o, &m, fault_ns);
	else
		print_table(t, &env, &o, &m, fault_ns);
	teardown(&env);
	free(t);
	return 0;
}
