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
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
	"a fault per 4 KiB UFFDIO_COPY, no prefetch (Firecracker's example)",
	"AUTO install, adaptive prefetch 64 KiB-4 MiB",
	"working-set replay (ws_replay) reading the snapshot, AUTO",
	"working-set replay reading the loading set (ws_loading_set), AUTO",
	"MAP_PRIVATE mapping of the snapshot file's data",
	"fl_region_populate() of the whole region, then a load per page",
	"a load per page, AUTO install, adaptive prefetch 64 KiB-4 MiB",
	"MAP_PRIVATE of the snapshot file's data, a load per page",
};

enum metric { X_SECS, X_FAULTS, X_CACHED, X_WS_PREFETCHED, X_WS_DONE, X_GBPS, X_WS_SKIPPED,
	      X_COUNT };

struct opts {
	uint64_t size;
	unsigned int runs;
	unsigned int ws_percent;
	unsigned int scale;	/* live-big: scale x size; 0: no live rows */
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

#define N_WRITERS 2
/* Writer threads' rate without a snapshot is measured over this long first. */
#define WITHOUT_MS 250

/* The live rows: 2 writer threads write random pages of the memory throughout. */
enum lrow {
	LV_LIVE,			/* live snapshot of SIZE */
	LV_FORK,			/* fork(), the child writes the memory to a file */
	LV_BIG,			/* live snapshot of scale x SIZE */
	LV_INCR,			/* incremental after 5% of the pages written (no writer threads) */
	LV_LIVE_THP,			/* live, the memory in transparent huge pages */
	LV_FORK_THP,			/* fork+write, the same */
	LV_COUNT,
};

static const char *const lrow_names[LV_COUNT] = { "live", "fork+write", "live-big",
						 "incremental", "live-thp", "fork+write-thp" };

enum lmetric {
	Y_PAUSE,		/* seconds: live, the instant; fork, the fork() call */
	Y_TIME,			/* seconds: to the last page saved (fork: the child's write + fsync) */
	Y_DURING,		/* writer threads' writes/s during the snapshot */
	Y_WITHOUT,		/* the same just before, without a snapshot */
	Y_EXTRA,		/* fork: bytes copied on write in the parent meanwhile */
	Y_BYTES,		/* incremental: the file's blocks on disk (bytes) */
	Y_PAGES,		/* incremental: pages saved; live: pages saved first for a write */
	Y_COUNT,
};

/* [row][metric][run] */
struct table {
	double m[R_COUNT][X_COUNT][MAX_RUNS];
	double l[LV_COUNT][Y_COUNT][MAX_RUNS];
};

void bench_snapshot_usage(FILE *out)
{
	fprintf(out,
		"usage: faultline bench snapshot [--size SIZE] [--runs N] [--ws-percent P]\n"
		"                                [--live-scale N] [--dir DIR] [--json] [--keep]\n\n"
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
		"Every page read is checked against the pattern (untimed). Then live snapshots\n"
		"of SIZE bytes of memory that %d threads keep writing (a word of a random page\n"
		"at a time):\n"
		"  live              fl_snapshot_live_take(): the pause (the instant), the time\n"
		"                    to the last page saved, the writes/s meanwhile against\n"
		"                    the %d ms before\n"
		"  fork+write        fork(), the child writes the memory to a file and fsyncs\n"
		"                    it: the pause (the fork() call), the time, the writes/s,\n"
		"                    and the parent's memory copied on write meanwhile\n"
		"  live-big          live, of --live-scale x SIZE\n"
		"  incremental       after a full tracked snapshot, 5%% of the pages written,\n"
		"                    then the incremental snapshot: pages, bytes on disk, time\n"
		"  live-thp          live, the memory in transparent huge pages (MADV_HUGEPAGE)\n"
		"  fork+write-thp    fork+write, the same\n"
		"Targets: working-set replay >= 95%% fewer faults and >= 3.5x faster than\n"
		"demand-4k; loading-set within 1.2x of memory-resident; the better sequential\n"
		"restore >= 1.0x seq-mmap-file; live pause <= 1 ms and <= 0.1x fork()'s;\n"
		"live-big's pause within 1.5x of live's. The kind of machine is told by a\n"
		"native page fault's cost (bench latency's floors).\n\n"
		"Options:\n"
		"  --size SIZE        the snapshot's size, a multiple of 2M (K, M, G suffixes)\n"
		"  --runs N           runs (1 to %d, default 3)\n"
		"  --ws-percent P     the working set, in %% of the pages (1 to 100, default 10)\n"
		"  --live-scale N     live-big's size, N x SIZE (0 to 16, default 4; 0: no live\n"
		"                     rows)\n"
		"  --dir DIR          where the files go (default /var/tmp; a tmpfs has no cold\n"
		"                     cache to measure)\n"
		"  --json             one JSON object instead of the table\n"
		"  --keep             leave the restore's files in DIR (removed by default)\n",
		N_WRITERS, WITHOUT_MS, MAX_RUNS);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "size", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "ws-percent", required_argument, NULL, 'w' },
		{ "dir", required_argument, NULL, 'd' },
		{ "live-scale", required_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep", no_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	char *end;
	int c;

	*o = (struct opts){ .size = GIB, .runs = 3, .ws_percent = 10, .scale = 4,
			    .dir = "/var/tmp" };
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
		case 'l':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || optarg[0] < '0' || optarg[0] > '9' ||
			    (!v && c != 'l') || v > (c == 'r' ? MAX_RUNS : c == 'w' ? 100 : 16))
				return usage_error(SUB, "--%s: expected %d to %d, got '%s'",
						   c == 'r' ? "runs" : c == 'w' ? "ws-percent" :
						   "live-scale", c == 'l' ? 0 : 1,
						   c == 'r' ? MAX_RUNS : c == 'w' ? 100 : 16, optarg);
			if (c == 'r')
				o->runs = (unsigned int)v;
			else if (c == 'w')
				o->ws_percent = (unsigned int)v;
			else
				o->scale = (unsigned int)v;
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
	/*
	 * A replay still running counts the pages it installs after each run:
	 * the counts are complete once it ended (bounded: a minute).
	 */
	for (int i = 0; r == 0 && (c->ws || c->ls) && !st.ws_done_ns && i < 60000; i++) {
		poll(NULL, 0, 1);
		r = fl_region_stats(reg, &st);
	}
	if (r < 0) {
		bench_fail(e, r, "%s: fl_region_stats", name);
		goto out;
	}
	res->v[X_FAULTS] = (double)st.faults;
	res->v[X_WS_PREFETCHED] = (double)st.ws_prefetched;
	res->v[X_WS_SKIPPED] = (double)(st.ws_skipped + st.ws_errors);
	/* The replay's time to its last batch. */
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
		res->v[X_CACHED] = bench_cached_share(env->fd_snap, env->snap_bytes);
	} else if (row >= R_FIRST_SEQ) {
		res->v[X_CACHED] = bench_cached_share(env->fd_snap, env->snap_bytes);
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

/* ------------------------------------------------------------ live snapshots */


struct writers {
	char *base;
	size_t pages;
	atomic_bool stop;
	_Alignas(64) atomic_uint_fast64_t count;
	pthread_t th[N_WRITERS];
	unsigned int started;
};

struct writer_arg {
	struct writers *w;
	uint64_t seed;
};

static struct writer_arg writer_args[N_WRITERS];

/* Write one word of a random page, over and over, counting the writes. */
static void *writer_main(void *arg)
{
	struct writer_arg *a = arg;
	struct writers *w = a->w;
	uint64_t x = a->seed | 1;

	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		for (int i = 0; i < 64; i++) {
			size_t pg;

			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			pg = (size_t)((x * 0x2545f4914f6cdd1dull) % w->pages);
			/* Relaxed atomic: the two threads may hit the same word. */
			__atomic_store_n((uint64_t *)(w->base + pg * BENCH_PAGE + (x & 0xff8)), x,
					 __ATOMIC_RELAXED);
		}
		atomic_fetch_add_explicit(&w->count, 64, memory_order_relaxed);
	}
	return NULL;
}

static int writers_start(struct writers *w, char *base, size_t len, struct bench_err *e)
{
	w->base = base;
	w->pages = len / BENCH_PAGE;
	atomic_store(&w->stop, false);
	atomic_store(&w->count, 0);
	w->started = 0;
	for (unsigned int i = 0; i < N_WRITERS; i++) {
		int r;

		writer_args[i] = (struct writer_arg){ w, BENCH_PATTERN_SEED * (i + 3) };
		r = pthread_create(&w->th[i], NULL, writer_main, &writer_args[i]);
		if (r)
			return bench_fail(e, -r, "starting the writer threads");
		w->started++;
	}
	return 0;
}

static void writers_stop(struct writers *w)
{
	atomic_store(&w->stop, true);
	for (unsigned int i = 0; i < w->started; i++)
		pthread_join(w->th[i], NULL);
	w->started = 0;
}

static uint64_t writers_count(struct writers *w)
{
	return atomic_load_explicit(&w->count, memory_order_relaxed);
}

/* Writes per second over @ms milliseconds of the threads running alone. */
static double writers_rate(struct writers *w, unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	uint64_t c0 = writers_count(w), t0 = fl__now_ns();

	nanosleep(&ts, NULL);
	return (double)(writers_count(w) - c0) * 1e9 / (double)(fl__now_ns() - t0);
}

/*
 * Memory of @len bytes holding the pattern, every page present; with @thp
 * in transparent huge pages where the kernel has them (MADV_HUGEPAGE).
 */
static char *live_memory(size_t len, bool thp, struct bench_err *e)
{
	char *m = bench_map_aligned(len, THP_SIZE);

	if (!m) {
		bench_fail(e, -ENOMEM, "live: mapping %zu bytes", len);
		return NULL;
	}
	if (thp)
		madvise(m, len, MADV_HUGEPAGE);
	fl_pattern_fill(m, 0, len, BENCH_PATTERN_SEED);
	return m;
}

/* A field of /proc/self/smaps (kB) for the mapping holding @addr, in bytes; -1. */
static double smaps_bytes(const void *addr, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	uintptr_t a = (uintptr_t)addr;
	size_t flen = strlen(field);
	bool inside = false;
	double found = -1;
	char line[256];

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			inside = a >= lo && a < hi;
			continue;
		}
		if (inside && !strncmp(line, field, flen) && line[flen] == ':') {
			found = strtod(line + flen + 1, NULL) * 1024;
			break;
		}
	}
	fclose(f);
	return found;
}

static void live_path(struct env *env, char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "%s/live-%s.flsnap", env->dir, tag);
	unlink(buf);
}

/* A live snapshot of @len bytes while the writer threads run. */
static int run_live(struct env *env, size_t len, bool thp, double *y, struct bench_err *e)
{
	struct fl_snapshot_live_stats st = { .sz = sizeof(st) };
	struct fl_snapshot_range rg = { .mem = FL_MEM_ANON };
	struct fl_snapshot_writer *w = NULL;
	struct fl_snapshot_live *s = NULL;
	struct writers wr = { 0 };
	char path[PATH_MAX + 32];
	uint64_t c0, t0, t1;
	char *m = live_memory(len, thp, e);
	int r;

	if (!m)
		return -ENOMEM;
	live_path(env, path, sizeof(path), "full");
	rg.addr = m;
	rg.len = len;
	r = fl_snapshot_live_create(&rg, 1, NULL, &s);
	if (r < 0) {
		bench_fail(e, r, "live: fl_snapshot_live_create");
		goto out;
	}
	r = fl_snapshot_writer_create(path, NULL, &w);
	if (r < 0) {
		bench_fail(e, r, "live: fl_snapshot_writer_create(%s)", path);
		goto out;
	}
	r = writers_start(&wr, m, len, e);
	if (r < 0)
		goto out;
	y[Y_WITHOUT] = writers_rate(&wr, WITHOUT_MS);
	c0 = writers_count(&wr);
	t0 = fl__now_ns();
	r = fl_snapshot_live_take(s, w, 0);
	if (r < 0) {
		bench_fail(e, r, "live: fl_snapshot_live_take");
		goto out;
	}
	/* Bounded: 10 minutes is far past any snapshot this benchmark takes. */
	r = fl_snapshot_live_wait(s, 600000);
	t1 = fl__now_ns();
	y[Y_DURING] = (double)(writers_count(&wr) - c0) * 1e9 / (double)(t1 - t0);
	writers_stop(&wr);
	if (r < 0) {
		bench_fail(e, r, "live: fl_snapshot_live_wait");
		goto out;
	}
	r = fl_snapshot_live_stats(s, &st);
	if (r < 0) {
		bench_fail(e, r, "live: fl_snapshot_live_stats");
		goto out;
	}
	y[Y_PAUSE] = (double)st.pause_ns / 1e9;
	y[Y_TIME] = (double)st.duration_ns / 1e9;
	y[Y_PAGES] = (double)st.pages_written;
	if (st.pages != len / BENCH_PAGE) {
		r = bench_fail(e, -EIO, "live: %llu pages saved of %zu",
			       (unsigned long long)st.pages, len / BENCH_PAGE);
		goto out;
	}
	r = fl_snapshot_writer_finish(w, NULL);
	w = NULL;
	if (r < 0)
		bench_fail(e, r, "live: fl_snapshot_writer_finish");
out:
	writers_stop(&wr);
	fl_snapshot_writer_destroy(w);
	fl_snapshot_live_destroy(s);
	unlink(path);
	bench_unmap(m, len);
	return r;
}

/*
 * fork(), and the child writes the memory to a file (what a Redis BGSAVE
 * does) while the writer threads go on in the parent: the pause is the
 * fork() call; the extra memory, the parent's pages copied on write by the
 * time the child has written and synced the file.
 */
static int run_fork(struct env *env, size_t len, bool thp, double *y, struct bench_err *e)
{
	struct writers wr = { 0 };
	char path[PATH_MAX + 32];
	int done[2] = { -1, -1 }, go[2] = { -1, -1 }, fd = -1, st, r;
	uint64_t c0, t0, t1;
	pid_t pid = -1;
	char *m = live_memory(len, thp, e), b = 0;

	if (!m)
		return -ENOMEM;
	live_path(env, path, sizeof(path), "fork");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || pipe2(done, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) {
		r = bench_fail(e, -errno, "fork: creating %s and pipes", path);
		goto out;
	}
	r = writers_start(&wr, m, len, e);
	if (r < 0)
		goto out;
	y[Y_WITHOUT] = writers_rate(&wr, WITHOUT_MS);
	c0 = writers_count(&wr);
	t0 = fl__now_ns();
	pid = fork();
	if (pid == 0) {
		/* Only async-signal-safe calls here: the parent has threads. */
		char ok = 1;

		for (size_t off = 0; off < len;) {
			ssize_t n = write(fd, m + off, len - off < 8 * MIB ? len - off : 8 * MIB);

			if (n <= 0) {
				ok = 0;
				break;
			}
			off += (size_t)n;
		}
		if (fsync(fd) < 0)
			ok = 0;
		if (write(done[1], &ok, 1) != 1 || read(go[0], &ok, 1) < 0)
			_exit(3);
		_exit(ok ? 0 : 2);
	}
	t1 = fl__now_ns();
	if (pid < 0) {
		r = bench_fail(e, -errno, "fork");
		goto out;
	}
	y[Y_PAUSE] = (double)(t1 - t0) / 1e9;
	close(done[1]);
	done[1] = -1;
	/* The child writes or dies: either ends this read. */
	if (read(done[0], &b, 1) != 1 || !b) {
		r = bench_fail(e, -EIO, "fork: the child failed to write %s", path);
		goto out;
	}
	t1 = fl__now_ns();
	y[Y_TIME] = (double)(t1 - t0) / 1e9;
	y[Y_DURING] = (double)(writers_count(&wr) - c0) * 1e9 / (double)(t1 - t0);
	y[Y_EXTRA] = smaps_bytes(m, "Private_Dirty");
	writers_stop(&wr);
out:
	writers_stop(&wr);
	if (go[1] >= 0 && pid > 0 && write(go[1], &b, 1) < 0)
		kill(pid, SIGKILL);
	if (pid > 0 && waitpid(pid, &st, 0) == pid && r == 0 &&
	    !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		r = bench_fail(e, -EIO, "fork: the child exited with status %d", st);
	for (int i = 0; i < 2; i++) {
		if (done[i] >= 0)
			close(done[i]);
		if (go[i] >= 0)
			close(go[i]);
	}
	if (fd >= 0)
		close(fd);
	unlink(path);
	bench_unmap(m, len);
	return r;
}

/*
 * An incremental snapshot: a full one first (tracked), then 5% of the pages
 * written (scattered), then the incremental snapshot of those.
 */
static int run_incremental(struct env *env, size_t len, double *y, struct bench_err *e)
{
	struct fl_snapshot_live_opts lo = { .sz = sizeof(lo), .flags = FL_SNAPSHOT_LIVE_TRACK };
	struct fl_snapshot_live_stats st = { .sz = sizeof(st) };
	struct fl_snapshot_range rg = { .mem = FL_MEM_ANON };
	struct fl_snapshot_writer_opts wo = { .sz = sizeof(wo) };
	struct fl_snapshot_writer *w = NULL;
	struct fl_snapshot_live *s = NULL;
	char full[PATH_MAX + 32], incr[PATH_MAX + 32];
	size_t pages = len / BENCH_PAGE, nw = pages * 5 / 100;
	uint8_t id[16];
	struct stat sb;
	char *m = live_memory(len, false, e);
	int r;

	if (!m)
		return -ENOMEM;
	live_path(env, full, sizeof(full), "base");
	live_path(env, incr, sizeof(incr), "incr");
	rg.addr = m;
	rg.len = len;
	r = fl_snapshot_live_create(&rg, 1, &lo, &s);
	if (r < 0) {
		bench_fail(e, r, "incremental: fl_snapshot_live_create");
		goto out;
	}
	for (int k = 0; k < 2; k++) {
		r = fl_snapshot_writer_create(k ? incr : full, k ? &wo : NULL, &w);
		if (r == 0)
			r = fl_snapshot_live_take(s, w, k ? FL_SNAPSHOT_TAKE_INCREMENTAL : 0);
		if (r == 0)
			r = fl_snapshot_live_wait(s, 600000);
		if (r == 0)
			r = fl_snapshot_live_stats(s, &st);
		if (r == 0) {
			r = fl_snapshot_writer_finish(w, id);
			w = NULL;
		}
		if (r < 0) {
			bench_fail(e, r, "incremental: the %s snapshot", k ? "incremental" : "full");
			goto out;
		}
		if (k)
			break;
		/* 5% of the pages written, spread over the whole memory. */
		for (size_t i = 0; i < nw; i++)
			*(volatile uint64_t *)(m + (i * 20 + 7) % pages * BENCH_PAGE) = i;
		wo.parent_id = id;
	}
	if (stat(incr, &sb) < 0) {
		r = bench_fail(e, -errno, "incremental: %s", incr);
		goto out;
	}
	if (st.pages != nw) {
		r = bench_fail(e, -EIO, "incremental: %llu pages saved, %zu written",
			       (unsigned long long)st.pages, nw);
		goto out;
	}
	y[Y_PAUSE] = (double)st.pause_ns / 1e9;
	y[Y_TIME] = (double)st.duration_ns / 1e9;
	/* What the file takes on disk: pages not in it are holes. */
	y[Y_BYTES] = (double)sb.st_blocks * 512;
	y[Y_PAGES] = (double)st.pages;
out:
	fl_snapshot_writer_destroy(w);
	fl_snapshot_live_destroy(s);
	unlink(full);
	unlink(incr);
	bench_unmap(m, len);
	return r;
}

static int run_lrow(struct env *env, enum lrow row, double *y, struct bench_err *e)
{
	size_t len = (size_t)env->o->size;

	memset(y, 0, Y_COUNT * sizeof(*y));
	switch (row) {
	case LV_LIVE:
	case LV_LIVE_THP:
		return run_live(env, len, row == LV_LIVE_THP, y, e);
	case LV_FORK:
	case LV_FORK_THP:
		return run_fork(env, len, row == LV_FORK_THP, y, e);
	case LV_BIG:
		return run_live(env, len * env->o->scale, false, y, e);
	case LV_INCR:
		return run_incremental(env, len, y, e);
	default:
		return bench_fail(e, -EINVAL, "unknown row");
	}
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
	r = bench_make_dir(env->dir, sizeof(env->dir), env->o->dir, "faultline-bench-snapshot");
	if (r < 0)
		return bench_fail(e, r, "creating a directory in %s", env->o->dir);
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

/* ------------------------------------------------------------ the report */

static struct stats_spread spread(const struct table *t, int row, int x, unsigned int runs)
{
	double v[MAX_RUNS];

	memcpy(v, t->m[row][x], runs * sizeof(double));
	return stats_spread_of(v, runs, v);
}

enum target {
	T_WS_FAULTS, T_WS_SPEED, T_LS_RESIDENT, T_SEQ,
	T_LIVE_PAUSE, T_LIVE_FORK, T_LIVE_BIG,	/* with the live rows only */
	T_COUNT,
};

struct target_val {
	const char *name;
	const char *want;	/* the target, as text */
	double ratio;
	bool met;
	const char *unit;	/* "x", "%" or "ms" */
};

static struct stats_spread lspread(const struct table *t, int row, int y, unsigned int runs)
{
	double v[MAX_RUNS];

	memcpy(v, t->l[row][y], runs * sizeof(double));
	return stats_spread_of(v, runs, v);
}

static double lratio_median(const struct table *t, unsigned int runs, int a, int b, int y)
{
	double v[MAX_RUNS];

	for (unsigned int i = 0; i < runs; i++)
		v[i] = t->l[a][y][i] / t->l[b][y][i];
	return stats_median(v, runs);
}

/* Per run ratios, then their median. */
static double ratio_median(const struct table *t, unsigned int runs, int a, int b, int x)
{
	double v[MAX_RUNS];

	for (unsigned int i = 0; i < runs; i++)
		v[i] = t->m[a][x][i] / t->m[b][x][i];
	return stats_median(v, runs);
}

/* The targets; returns how many (the live ones need the live rows). */
static int targets(const struct table *t, unsigned int runs, bool live, struct target_val *tv)
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
	if (!live)
		return T_LIVE_PAUSE;
	tv[T_LIVE_PAUSE] = (struct target_val){ "live: pause", "<= 1 ms",
						1e3 * lspread(t, LV_LIVE, Y_PAUSE, runs).median,
						false, "ms" };
	tv[T_LIVE_PAUSE].met = tv[T_LIVE_PAUSE].ratio <= 1.0;
	tv[T_LIVE_FORK] = (struct target_val){ "live: pause / fork()'s pause", "<= 0.1x",
					       lratio_median(t, runs, LV_LIVE, LV_FORK, Y_PAUSE),
					       false, "x" };
	tv[T_LIVE_FORK].met = tv[T_LIVE_FORK].ratio <= 0.1;
	tv[T_LIVE_BIG] = (struct target_val){ "live-big: pause / live's pause", "<= 1.5x",
					      lratio_median(t, runs, LV_BIG, LV_LIVE, Y_PAUSE),
					      false, "x" };
	tv[T_LIVE_BIG].met = tv[T_LIVE_BIG].ratio <= 1.5;
	return T_COUNT;
}

/* The writers' rate during a row's snapshot against just before: the median of per-run ratios. */
static double during_ratio(const struct table *t, unsigned int runs, int row)
{
	double v[MAX_RUNS];

	for (unsigned int i = 0; i < runs; i++)
		v[i] = t->l[row][Y_DURING][i] / t->l[row][Y_WITHOUT][i];
	return stats_median(v, runs);
}

static void print_live_table(const struct table *t, const struct opts *o)
{
	printf("\nlive snapshot, %d writer threads   pause ms             snapshot ms"
	       "          writes/s during / without\n", N_WRITERS);
	for (int r = 0; r < LV_COUNT; r++) {
		struct stats_spread p = lspread(t, r, Y_PAUSE, o->runs);
		struct stats_spread d = lspread(t, r, Y_TIME, o->runs);
		char name[48], pc[48], dc[48], wc[48] = "-";

		if (r == LV_BIG)
			snprintf(name, sizeof(name), "live-big (%llu MiB)",
				 (unsigned long long)(o->size * o->scale / MIB));
		else if (r == LV_INCR)
			snprintf(name, sizeof(name), "incremental, 5%% written");
		else if (r == LV_LIVE_THP || r == LV_FORK_THP)
			snprintf(name, sizeof(name), "%s (%llu MiB)", lrow_names[r],
				 (unsigned long long)(o->size / MIB));
		else
			snprintf(name, sizeof(name), "%s (%llu MiB)", lrow_names[r],
				 (unsigned long long)(o->size / MIB));
		snprintf(pc, sizeof(pc), "%.3f (%.3f-%.3f)", p.median * 1e3, p.min * 1e3,
			 p.max * 1e3);
		snprintf(dc, sizeof(dc), "%.0f (%.0f-%.0f)", d.median * 1e3, d.min * 1e3,
			 d.max * 1e3);
		if (r != LV_INCR)
			snprintf(wc, sizeof(wc), "%.2fx (%.1fM/s without)",
				 during_ratio(t, o->runs, r),
				 lspread(t, r, Y_WITHOUT, o->runs).median / 1e6);
		printf("%-34s %-20s %-20s %s", name, pc, dc, wc);
		if (r == LV_FORK || r == LV_FORK_THP)
			printf("  extra memory %.1f MiB",
			       lspread(t, r, Y_EXTRA, o->runs).median / MIB);
		if (r == LV_LIVE || r == LV_BIG || r == LV_LIVE_THP)
			printf("  saved for a write: %.0f pages",
			       lspread(t, r, Y_PAGES, o->runs).median);
		if (r == LV_INCR)
			printf("  %.0f pages, file %.1f MiB on disk", lspread(t, r, Y_PAGES, o->runs).median,
			       lspread(t, r, Y_BYTES, o->runs).median / MIB);
		printf("\n");
	}
	printf("(live: the instant; fork+write: the fork() call, and the child's write + fsync of\n"
	       " the memory; extra memory: the parent's pages copied on write by then;\n"
	       " -thp: the memory in transparent huge pages, MADV_HUGEPAGE)\n");
}

static void print_table(const struct table *t, const struct env *env, const struct opts *o,
			const struct bench_machine *m, double fault_ns)
{
	struct target_val tv[T_COUNT];
	int nt;

	bench_print_header("snapshot", m);
	printf("kind of machine, from the floors: %s (native fault p50 %.0f ns)\n",
	       bench_kind_text(bench_kind_of_fault(fault_ns)), fault_ns);
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
	if (o->scale)
		print_live_table(t, o);
	printf("(faults: the region's fault messages; mmap and memory-resident rows: the thread's "
	       "minor + major faults;\n ws prefetched: pages the replay installed before any "
	       "fault; last batch: from fl_region_add()\n to the replay's last batch; cached: "
	       "the snapshot file's share in the page cache\n at the start)\n\n"
	       "targets (medians of per-run ratios):\n");
	nt = targets(t, o->runs, o->scale > 0, tv);
	for (int k = 0; k < nt; k++)
		printf("  %-42s %7.2f%-2s target %-7s %s\n", tv[k].name, tv[k].ratio, tv[k].unit,
		       tv[k].want, tv[k].met ? "met" : "MISSED");
}

static void print_json(const struct table *t, const struct env *env, const struct opts *o,
		       const struct bench_machine *m, double fault_ns)
{
	static const char *const keys[X_COUNT] = { "secs", "faults", "cached", "ws_prefetched",
						   "ws_done_secs", "gb_per_s", "ws_skipped" };
	struct target_val tv[T_COUNT];
	int nt;

	bench_json_header("snapshot", m);
	printf(",\"machine_kind\":");
	bench_json_str(bench_kind_of_fault(fault_ns));
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
			if ((x == X_WS_PREFETCHED || x == X_WS_DONE || x == X_WS_SKIPPED) && r != R_WS &&
			    r != R_LS)
				continue;
			printf(",");
			bench_json_spread(keys[x], spread(t, r, x, o->runs));
		}
		printf("}");
	}
	printf("]");
	if (o->scale) {
		static const char *const lkeys[Y_COUNT] = {
			"pause_secs", "snapshot_secs", "writes_per_s_during", "writes_per_s_without",
			"extra_bytes", "file_bytes", "pages",
		};

		printf(",\"live\":{\"writer_threads\":%d,\"scale\":%u,\"rows\":[", N_WRITERS,
		       o->scale);
		for (int r = 0; r < LV_COUNT; r++) {
			printf("%s{\"name\":\"%s\"", r ? "," : "", lrow_names[r]);
			for (int y = 0; y < Y_COUNT; y++) {
				if ((y == Y_EXTRA && r != LV_FORK && r != LV_FORK_THP) ||
				    (y == Y_BYTES && r != LV_INCR) ||
				    ((y == Y_DURING || y == Y_WITHOUT) && r == LV_INCR) ||
				    (y == Y_PAGES && (r == LV_FORK || r == LV_FORK_THP)))
					continue;
				printf(",");
				bench_json_spread(lkeys[y], lspread(t, r, y, o->runs));
			}
			printf("}");
		}
		printf("]}");
	}
	printf(",\"targets\":[");
	nt = targets(t, o->runs, o->scale > 0, tv);
	for (int k = 0; k < nt; k++) {
		printf("%s{\"name\":", k ? "," : "");
		bench_json_str(tv[k].name);
		printf(",\"value\":%.4g,\"unit\":\"%s\",\"target\":", tv[k].ratio,
		       tv[k].unit[0] == '%' ? "percent" : tv[k].unit[0] == 'm' ? "ms" : "ratio");
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
	fault_ns = bench_native_fault_ns();
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
		for (int i = 0; r == 0 && o.scale && i < LV_COUNT; i++) {
			double y[Y_COUNT];

			bench_progress(" %s", lrow_names[i]);
			r = run_lrow(&env, i, y, &e);
			for (int k = 0; r == 0 && k < Y_COUNT; k++)
				t->l[i][k][run] = y[k];
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
