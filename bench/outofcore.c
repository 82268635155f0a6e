/* SPDX-License-Identifier: MIT */
/*
 * faultline bench outofcore: a file several times larger than a memory
 * budget, read and written through a mapping that may hold only the budget,
 * against the kernel's own answer: mmap of the same file by a process in a
 * memory cgroup whose limit is the budget.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench outofcore"
#define KIB (1ull << 10)
#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define MAX_RUNS 100
#define WORDS (BENCH_PAGE / 8)
#define ZIPF_S 0.99

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

enum wl { W_UNIFORM, W_ZIPF, W_SEQ, W_RMW, W_COUNT };

static const char *const wl_names[W_COUNT] = { "uniform", "zipf", "seq", "rmw" };
static const char *const wl_what[W_COUNT] = {
	"uniform random 4 KiB reads (a 4 KiB copy out of a random page)",
	"Zipf(0.99) 4 KiB reads over the pages, ranks scattered over the file",
	"a sequential scan: a 4 KiB copy out of every page, in order",
	"random read-modify-write: +1 on the first 8-byte word of a random page",
};

enum medium { M_TMPFS, M_DISK, M_COUNT };

static const char *const medium_names[M_COUNT] = { "tmpfs", "disk" };

enum row { R_KERNEL, R_KERNEL_ADV, R_FIFO, R_FIFO_PF, R_2Q, R_2Q_PF, R_COUNT };

static const char *const row_names[R_COUNT] = { "kernel", "kernel-advised", "fifo",
						"fifo+prefetch", "2q", "2q+prefetch" };

static bool row_is_kernel(int row)
{
	return row == R_KERNEL || row == R_KERNEL_ADV;
}

/* Why a row cannot run a workload, or NULL (every row runs every workload). */
static const char *wl_unsupported(int row, enum wl w)
{
	(void)row;
	(void)w;
	return NULL;
}

/* Per run: pages/s, hit rate, bytes written back, seconds, the limit's peak use, verified. */
enum metric { X_PPS, X_HIT, X_WB, X_SECS, X_PEAK, X_CACHED, X_VERIFIED, X_WARM, X_COUNT };

struct opts {
	uint64_t size;
	uint64_t budget;
	size_t ops;		/* timed accesses of the random workloads */
	size_t warmup;		/* at most this many untimed accesses before them */
	unsigned int runs;
	const char *dir;
	const char *tmpfs;
	bool media[M_COUNT];
	bool rows[R_COUNT];
	bool json;
};

/* The memory cgroup the kernel rows run in. */
struct cgroup {
	int version;		/* 2, 1, or 0: none can be made (why says so) */
	char base[PATH_MAX];	/* where ours is made */
	char path[PATH_MAX];	/* ours, while it exists */
	char why[200];
};

struct env {
	const struct opts *o;
	size_t pages;
	char dirs[M_COUNT][PATH_MAX];	/* the bench's own directories, "" if not made */
	char files[M_COUNT][PATH_MAX];
	bool on_tmpfs[M_COUNT];		/* the medium's directory is a tmpfs */
	uint32_t *counts[M_COUNT];	/* per page: the +1s read-modify-write made to word 0 */
	uint32_t *seq[W_COUNT];		/* the pages of each random workload, warmup + ops */
	int ra_kb[M_COUNT];		/* the file system's read_ahead_kb, or -1 */
	double *zipf_cdf;
	uint32_t *zipf_rank;		/* rank -> page */
	struct cgroup cg;
};

struct table {
	double m[M_COUNT][R_COUNT][W_COUNT][X_COUNT][MAX_RUNS];
	bool skip[M_COUNT][R_COUNT];
	char why[M_COUNT][R_COUNT][200];
	char bad[M_COUNT][R_COUNT][200];	/* the first verification failure */
};

void bench_outofcore_usage(FILE *out)
{
	fprintf(out,
		"usage: faultline bench outofcore [--size SIZE] [--budget SIZE] [--ops N]\n"
		"                                 [--warmup N] [--runs N] [--dir DIR]\n"
		"                                 [--tmpfs DIR] [--media LIST] [--rows LIST]\n"
		"                                 [--json]\n\n"
		"A file of SIZE bytes (default 2G) filled with a pattern, four times a memory\n"
		"BUDGET (default SIZE/4), on a tmpfs and on the disk, read and written through\n"
		"a mapping that may hold only the budget. Workloads:\n");
	for (int w = 0; w < W_COUNT; w++)
		fprintf(out, "  %-8s %s\n", wl_names[w], wl_what[w]);
	fprintf(out,
		"The random workloads first make untimed accesses until the memory the row\n"
		"may use is full (at most --warmup), then --ops timed ones, the same for every\n"
		"row of a run; the scan is timed whole, from a cold start. Rows:\n"
		"  kernel          a child process in a new memory cgroup whose limit is the\n"
		"                  budget (cgroup v2 memory.max; where the memory controller\n"
		"                  is bound to a v1 hierarchy, its memory.limit_in_bytes) maps\n"
		"                  the file MAP_SHARED; full: the cgroup reached its limit.\n"
		"                  Needs root: the row says why it is skipped otherwise; the\n"
		"                  cgroup is removed after each row, also when it failed\n"
		"  kernel-advised  the same, with madvise MADV_RANDOM (random workloads) or\n"
		"                  MADV_SEQUENTIAL (the scan): no read-around of misses\n"
		"  fifo            a faultline region over the file store of the file (O_DIRECT\n"
		"                  on a disk, so that no page cache holds more than the budget),\n"
		"                  in a budget of BUDGET bytes evicting first in, first out;\n"
		"                  handler threads; full: eviction has begun\n"
		"  fifo+prefetch   the same with adaptive prefetch (64 KiB to 4 MiB)\n"
		"  2q, 2q+prefetch the same with the 2Q policy (faultline(7), Budgets)\n"
		"                  The faultline rows run in this process, which is in no new\n"
		"                  cgroup: the budget bounds the region; faultline's own memory\n"
		"                  is small and fixed. Read-modify-write opens the store\n"
		"                  writable: eviction writes dirty pages back before dropping\n"
		"                  them; after the timed pass fl_region_sync() writes the rest.\n"
		"Every access checks two words of its page against the pattern; after each\n"
		"read-modify-write row every byte of the file is read back and checked.\n"
		"Before each row the file is synced and dropped from the page cache\n"
		"(posix_fadvise POSIX_FADV_DONTNEED; the share still cached is shown). On a\n"
		"tmpfs the file is memory: nothing can be dropped, and the kernel rows' limit\n"
		"cannot take its pages away (they are charged to the cgroup that wrote them,\n"
		"and without swap they have nowhere to go): the tmpfs rows measure paging\n"
		"from a store as fast as memory. Hit rate: accesses that did not wait for\n"
		"the store; kernel: 1 - the child's major faults (getrusage) / accesses;\n"
		"faultline: 1 - the region's faults / accesses.\n"
		"Written back: kernel: the child's /proc/self/io write_bytes (the bytes of\n"
		"the pages it dirtied, each written back once) up to its final msync;\n"
		"faultline: the region's pages written back, up to its final sync.\n"
		"Runs are interleaved (default 3); the table shows medians with min-max.\n"
		"Targets, per medium, the best faultline row against the better kernel row:\n"
		"uniform pages/s >= 1.0x; Zipf hit rate >= 1.0x; sequential pages/s >= 0.8x;\n"
		"every byte verified after read-modify-write. The kind of machine is told by\n"
		"a native page fault's cost (bench latency's floors).\n\n"
		"Options:\n"
		"  --size SIZE     the file, a multiple of 1M (K, M, G suffixes; default 2G)\n"
		"  --budget SIZE   the memory budget, a multiple of 64K, at most SIZE\n"
		"                  (default SIZE/4)\n"
		"  --ops N         timed accesses per random workload (default: budget/64K)\n"
		"  --warmup N      at most N untimed accesses before them (default: budget/512:\n"
		"                  Zipf's hot pages fill the memory only after many accesses)\n"
		"  --runs N        runs (1 to %d, default 3)\n"
		"  --dir DIR       the disk's file goes in a directory of the bench's own made\n"
		"                  in DIR (default: the working directory)\n"
		"  --tmpfs DIR     the same for the tmpfs (default /dev/shm)\n"
		"  --media LIST    tmpfs, disk or both (default tmpfs,disk)\n"
		"  --rows LIST     some of the rows above (default: all)\n"
		"  --json          one JSON object instead of the table\n",
		MAX_RUNS);
}

static int parse_count(const char *name, const char *s, size_t *ret)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || s[0] < '0' || s[0] > '9' || !v || v > (1ull << 32))
		return usage_error(SUB, "--%s: expected 1 to %llu, got '%s'", name, 1ull << 32, s);
	*ret = (size_t)v;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "size", required_argument, NULL, 's' },
		{ "budget", required_argument, NULL, 'b' },
		{ "ops", required_argument, NULL, 'o' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "runs", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ "tmpfs", required_argument, NULL, 't' },
		{ "media", required_argument, NULL, 'm' },
		{ "rows", required_argument, NULL, 'R' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	size_t runs = 3;
	int c, r;

	*o = (struct opts){ .size = 2 * GIB, .dir = ".", .tmpfs = "/dev/shm",
			    .media = { true, true } };
	for (int row = 0; row < R_COUNT; row++)
		o->rows[row] = true;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's':
			if (tool_parse_size(optarg, 1024 * GIB, &o->size) < 0 || !o->size ||
			    o->size % MIB)
				return usage_error(SUB, "--size: expected a multiple of 1M, got "
						   "'%s'", optarg);
			break;
		case 'b':
			if (tool_parse_size(optarg, 1024 * GIB, &o->budget) < 0 || !o->budget ||
			    o->budget % (64 * KIB))
				return usage_error(SUB, "--budget: expected a multiple of 64K, "
						   "got '%s'", optarg);
			break;
		case 'o':
			if ((r = parse_count("ops", optarg, &o->ops)))
				return r;
			break;
		case 'w':
			if ((r = parse_count("warmup", optarg, &o->warmup)))
				return r;
			break;
		case 'r':
			if ((r = parse_count("runs", optarg, &runs)))
				return r;
			if (runs > MAX_RUNS)
				return usage_error(SUB, "--runs: expected 1 to %d, got '%s'",
						   MAX_RUNS, optarg);
			o->runs = (unsigned int)runs;
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 't':
			o->tmpfs = optarg;
			break;
		case 'm':
			o->media[M_TMPFS] = o->media[M_DISK] = false;
			for (const char *p = optarg; *p;) {
				size_t n = strcspn(p, ",");
				bool ok = false;

				for (int m = 0; m < M_COUNT; m++)
					if (n == strlen(medium_names[m]) &&
					    !strncmp(p, medium_names[m], n))
						ok = o->media[m] = true;
				if (!ok)
					return usage_error(SUB, "--media: expected tmpfs, disk or "
							   "tmpfs,disk, got '%s'", optarg);
				p += n + (p[n] == ',');
			}
			break;
		case 'R':
			for (int row = 0; row < R_COUNT; row++)
				o->rows[row] = false;
			for (const char *p = optarg; *p;) {
				size_t n = strcspn(p, ",");
				bool ok = false;

				for (int row = 0; row < R_COUNT; row++)
					if (n == strlen(row_names[row]) &&
					    !strncmp(p, row_names[row], n))
						ok = o->rows[row] = true;
				if (!ok)
					return usage_error(SUB, "--rows: '%.*s' is not a row (see "
							   "--help)", (int)n, p);
				p += n + (p[n] == ',');
			}
			break;
		case 'j':
			o->json = true;
			break;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	if (!o->runs)
		o->runs = 3;
	if (!o->budget)
		o->budget = o->size / 4 / (64 * KIB) * (64 * KIB);
	if (!o->budget || o->budget > o->size)
		return usage_error(SUB, "--budget: must be at least 64K and at most --size "
				   "(%llu bytes)", (unsigned long long)o->size);
	if (!o->ops)
		o->ops = (size_t)(o->budget / (16 * BENCH_PAGE));
	if (!o->warmup)
		o->warmup = (size_t)(8 * o->budget / BENCH_PAGE);
	if (!o->ops)
		o->ops = 1;
	return 0;
}

/* ------------------------------------------------------------ the file's bytes */

/* The pattern's word @w of page @p: never zero, different in every word of the file. */
static inline uint64_t pattern(uint64_t p, uint64_t w)
{
	uint64_t x = (p * WORDS + w) ^ BENCH_PATTERN_SEED;

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x | 1;
}

static void fill_page(uint64_t *dst, uint64_t p)
{
	for (uint64_t w = 0; w < WORDS; w++)
		dst[w] = pattern(p, w);
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int write_file(struct env *env, int m, struct bench_err *e)
{
	size_t chunk_pages = 2048, pages = env->pages;
	uint64_t *buf = malloc(chunk_pages * BENCH_PAGE);
	int fd, r = 0;

	if (!buf)
		return bench_fail(e, -ENOMEM, "allocating");
	fd = open(env->files[m], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(buf);
		return bench_fail(e, -errno, "creating %s", env->files[m]);
	}
	for (size_t p = 0; p < pages && r == 0; p += chunk_pages) {
		size_t n = pages - p < chunk_pages ? pages - p : chunk_pages;

		for (size_t i = 0; i < n; i++)
			fill_page(buf + i * WORDS, p + i);
		if (pwrite(fd, buf, n * BENCH_PAGE, (off_t)(p * BENCH_PAGE)) !=
		    (ssize_t)(n * BENCH_PAGE))
			r = bench_fail(e, -(errno ? errno : EIO), "writing %s", env->files[m]);
	}
	if (r == 0 && fsync(fd) < 0)
		r = bench_fail(e, -errno, "syncing %s", env->files[m]);
	close(fd);
	free(buf);
	return r;
}

/* Every byte of the file against the pattern and the +1s made so far; 0 or -EIO with @bad. */
static int verify_file(struct env *env, int m, char *bad, size_t badlen, struct bench_err *e)
{
	size_t chunk_pages = 2048, pages = env->pages;
	uint64_t *buf = malloc(chunk_pages * BENCH_PAGE);
	int fd, r = 0;

	if (!buf)
		return bench_fail(e, -ENOMEM, "allocating");
	fd = open(env->files[m], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return bench_fail(e, -errno, "opening %.140s", env->files[m]);
	}
	for (size_t p = 0; p < pages && r == 0; p += chunk_pages) {
		size_t n = pages - p < chunk_pages ? pages - p : chunk_pages;

		if (pread(fd, buf, n * BENCH_PAGE, (off_t)(p * BENCH_PAGE)) !=
		    (ssize_t)(n * BENCH_PAGE)) {
			r = bench_fail(e, -(errno ? errno : EIO), "reading %s", env->files[m]);
			break;
		}
		for (size_t i = 0; i < n && r == 0; i++)
			for (size_t w = 0; w < WORDS; w++) {
				uint64_t want = pattern(p + i, w) + (w ? 0 : env->counts[m][p + i]);

				if (buf[i * WORDS + w] == want)
					continue;
				snprintf(bad, badlen, "byte %llu holds %#llx, not %#llx",
					 (unsigned long long)((p + i) * BENCH_PAGE + w * 8),
					 (unsigned long long)buf[i * WORDS + w],
					 (unsigned long long)want);
				r = -EIO;
				break;
			}
	}
	close(fd);
	free(buf);
	return r;
}

/* Share of the file in the page cache, or -1. */
static double cached_share(const char *path, uint64_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	double share;

	if (fd < 0)
		return -1;
	share = bench_cached_share(fd, len);
	close(fd);
	return share;
}

/* Sync the file and drop it from the page cache (a tmpfs keeps it: it is the file). */
static int drop_cache(struct env *env, int m, struct bench_err *e)
{
	int fd = open(env->files[m], O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return bench_fail(e, -errno, "opening %.140s", env->files[m]);
	if (fsync(fd) < 0)
		r = bench_fail(e, -errno, "syncing %s", env->files[m]);
	else if ((r = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)))
		r = bench_fail(e, -r, "dropping %s from the page cache", env->files[m]);
	close(fd);
	return r;
}

/* ------------------------------------------------------------ the workloads */

/* Zipf(s) over @n ranks: the cumulative weights, for sampling by bisection. */
static double *zipf_cdf(size_t n)
{
	double *cdf = malloc(n * sizeof(*cdf)), sum = 0;

	if (!cdf)
		return NULL;
	for (size_t k = 0; k < n; k++)
		cdf[k] = sum += 1.0 / pow((double)(k + 1), ZIPF_S);
	return cdf;
}

static uint32_t zipf_draw(const double *cdf, size_t n, uint64_t *s)
{
	double u = (double)(splitmix(s) >> 11) / (double)(1ull << 53) * cdf[n - 1];
	size_t lo = 0, hi = n - 1;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (uint32_t)lo;
}

/* Each run's own sequences of pages (the same for every row of the run). */
static void make_sequences(struct env *env, unsigned int run)
{
	size_t n = env->o->warmup + env->o->ops;

	for (int w = 0; w < W_COUNT; w++) {
		uint64_t s = BENCH_PATTERN_SEED + run * 1000003ull + (uint64_t)w;

		if (!env->seq[w])
			continue;
		for (size_t i = 0; i < n; i++)
			env->seq[w][i] = w == W_ZIPF ?
				env->zipf_rank[zipf_draw(env->zipf_cdf, env->pages, &s)] :
				(uint32_t)(splitmix(&s) % env->pages);
	}
}

/* What one pass of a workload saw. */
struct pass {
	uint64_t bad;		/* accesses whose page did not hold its bytes */
	uint64_t first_bad;	/* the first such page */
};

/*
 * One pass over @n accesses of workload @w starting at @seq (the scan: the
 * pages @from..@from+n-1). Reads copy the page out and check two of its
 * words; read-modify-write checks word 0 (with the +1s so far, @counts)
 * and adds 1 to it. @counts is the caller's own copy, kept up to date.
 */
static __attribute__((noinline)) void pass_run(char *base, enum wl w, const uint32_t *seq,
					       size_t n, uint32_t *counts, struct pass *ps)
{
	uint64_t buf[WORDS] __attribute__((aligned(64)));

	for (size_t i = 0; i < n; i++) {
		uint64_t p = w == W_SEQ ? i : seq[i];
		uint64_t *pg = (uint64_t *)(base + p * BENCH_PAGE);
		uint64_t want0 = pattern(p, 0) + counts[p];
		bool ok;

		if (w == W_RMW) {
			uint64_t v = *(volatile uint64_t *)pg;

			ok = v == want0;
			*(volatile uint64_t *)pg = v + 1;
			counts[p]++;
		} else {
			memcpy(buf, pg, BENCH_PAGE);
			__asm__ volatile("" : : "r"(buf) : "memory");
			ok = buf[0] == want0 && buf[WORDS - 1] == pattern(p, WORDS - 1);
		}
		if (!ok && !ps->bad++)
			ps->first_bad = p;
	}
}

/*
 * The untimed accesses before the timed ones: the workload's first pages,
 * until @full says the memory the row may use is full (checked every 256
 * accesses), at most @max. Returns how many were made.
 */
static size_t warm_up(char *base, enum wl w, const uint32_t *seq, size_t max, uint32_t *counts,
		      struct pass *ps, bool (*full)(void *), void *arg)
{
	size_t done = 0;

	while (done < max) {
		size_t n = max - done < 256 ? max - done : 256;

		pass_run(base, w, seq + done, n, counts, ps);
		done += n;
		if (full(arg))
			break;
	}
	return done;
}

/* The sequence of timed accesses: the same for every row, whatever the warm-up made. */
static const uint32_t *timed_seq(const struct env *env, enum wl w)
{
	return w == W_SEQ ? NULL : env->seq[w] + env->o->warmup;
}

/* ------------------------------------------------------------ memory cgroups */

/* The mount point of the cgroup file system whose super options hold @opt ("" for cgroup2). */
static bool cgroup_mount(bool v2, char *dir, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[1024];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char mnt[512], fstype[64], src[256], sopts[512];
		const char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*s %*s %*s %*s %511s", mnt) != 1 ||
		    sscanf(dash + 3, "%63s %255s %511s", fstype, src, sopts) != 3)
			continue;
		if (v2 ? !strcmp(fstype, "cgroup2") :
			 !strcmp(fstype, "cgroup") && (strstr(sopts, ",memory") ||
						       !strncmp(sopts, "memory", 6))) {
			snprintf(dir, len, "%s", mnt);
			found = true;
		}
	}
	fclose(f);
	return found;
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		r = -errno;
	close(fd);
	return r;
}

static bool file_has_word(const char *path, const char *word)
{
	char buf[512], *tok, *save;
	FILE *f = fopen(path, "re");
	bool found = false;

	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f))
		for (tok = strtok_r(buf, " \n", &save); tok && !found;
		     tok = strtok_r(NULL, " \n", &save))
			found = !strcmp(tok, word);
	fclose(f);
	return found;
}

/*
 * Where the kernel rows' cgroups can be made: cgroup v2 with its memory
 * controller (under the hierarchy's root, enabling the controller for the
 * root's children if it is not), else the v1 memory hierarchy, under this
 * process's own memory cgroup (so the limits it is under still hold).
 */
static void cgroup_probe(struct cgroup *cg)
{
	char mnt[PATH_MAX], path[PATH_MAX + 64], line[PATH_MAX];
	FILE *f;

	cg->version = 0;
	if (geteuid() != 0) {
		snprintf(cg->why, sizeof(cg->why), "not root: cannot make a memory cgroup");
		return;
	}
	if (cgroup_mount(true, mnt, sizeof(mnt))) {
		snprintf(path, sizeof(path), "%s/cgroup.controllers", mnt);
		if (file_has_word(path, "memory")) {
			snprintf(path, sizeof(path), "%s/cgroup.subtree_control", mnt);
			int r = file_has_word(path, "memory") ? 0 : write_str(path, "+memory");

			if (r < 0) {
				snprintf(cg->why, sizeof(cg->why), "cannot enable the memory "
					 "controller in %.100s: %s", path, strerror(-r));
				return;
			}
			cg->version = 2;
			snprintf(cg->base, sizeof(cg->base), "%s", mnt);
			return;
		}
	}
	if (!cgroup_mount(false, mnt, sizeof(mnt))) {
		snprintf(cg->why, sizeof(cg->why), "no memory cgroup controller is mounted "
			 "(neither cgroup v2's nor v1's)");
		return;
	}
	/* This process's v1 memory cgroup: the line "N:memory:/path" (or "...,memory,..."). */
	f = fopen("/proc/self/cgroup", "re");
	while (f && fgets(line, sizeof(line), f)) {
		char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;

		if (!b)
			continue;
		*b = '\0';
		if (strcmp(a + 1, "memory") && !strstr(a + 1, "memory,") &&
		    !strstr(a + 1, ",memory"))
			continue;
		b[1 + strcspn(b + 1, "\n")] = '\0';
		snprintf(cg->base, sizeof(cg->base), "%s%s", mnt, strcmp(b + 1, "/") ? b + 1 : "");
		cg->version = 1;
	}
	if (f)
		fclose(f);
	if (!cg->version)
		snprintf(cg->why, sizeof(cg->why), "this process's v1 memory cgroup is not in "
			 "/proc/self/cgroup");
}

/* A fresh cgroup limited to @limit bytes in cg->path. */
static int cgroup_make(struct cgroup *cg, uint64_t limit, struct bench_err *e)
{
	char file[PATH_MAX + 64], v[32];
	int r;

	if (snprintf(cg->path, sizeof(cg->path), "%.4000s/faultline-bench-outofcore-%d",
		     cg->base, (int)getpid()) >= (int)sizeof(cg->path)) {
		cg->path[0] = '\0';
		return bench_fail(e, -ENAMETOOLONG, "the cgroup's path");
	}
	if (mkdir(cg->path, 0755) < 0 && errno != EEXIST) {
		r = bench_fail(e, -errno, "making the cgroup %s", cg->path);
		cg->path[0] = '\0';
		return r;
	}
	snprintf(v, sizeof(v), "%llu", (unsigned long long)limit);
	snprintf(file, sizeof(file), "%s/%s", cg->path,
		 cg->version == 2 ? "memory.max" : "memory.limit_in_bytes");
	if ((r = write_str(file, v)) < 0)
		return bench_fail(e, r, "writing %s", file);
	if (cg->version == 2) {
		/* No swap, so that the limit is the memory: where there is swap, do not use it. */
		snprintf(file, sizeof(file), "%s/memory.swap.max", cg->path);
		if (access(file, F_OK) == 0 && (r = write_str(file, "0")) < 0)
			return bench_fail(e, r, "writing %s", file);
	}
	return 0;
}

/* The most memory the cgroup used (v2: memory.peak, from 5.19; v1: max_usage_in_bytes), or -1. */
static double cgroup_peak(const struct cgroup *cg)
{
	char file[PATH_MAX + 64];
	unsigned long long v;
	FILE *f;
	double r = -1;

	snprintf(file, sizeof(file), "%s/%s", cg->path,
		 cg->version == 2 ? "memory.peak" : "memory.max_usage_in_bytes");
	f = fopen(file, "re");
	if (f && fscanf(f, "%llu", &v) == 1)
		r = (double)v;
	if (f)
		fclose(f);
	return r;
}

/* Whether the cgroup's use reached its limit (v2: memory.events "max"; v1: memory.failcnt). */
static bool cgroup_full(void *arg)
{
	const struct cgroup *cg = arg;
	char file[PATH_MAX + 64], line[128];
	unsigned long long v = 0;
	FILE *f;

	snprintf(file, sizeof(file), "%s/%s", cg->path,
		 cg->version == 2 ? "memory.events" : "memory.failcnt");
	f = fopen(file, "re");
	while (f && fgets(line, sizeof(line), f))
		if (cg->version == 2 ? sscanf(line, "max %llu", &v) == 1 :
				       sscanf(line, "%llu", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v > 0;
}

/* Remove the cgroup (it holds no process any more); its page cache charges move to the parent. */
static void cgroup_remove(struct cgroup *cg)
{
	if (!cg->path[0])
		return;
	/* A child just reaped may still be leaving the cgroup: a few tries, 10 ms apart. */
	for (int i = 0; i < 100 && rmdir(cg->path) < 0 && errno == EBUSY; i++)
		usleep(10000);
	cg->path[0] = '\0';
}

/* An interrupted bench kills the child, removes the cgroup it made, and its files. */
static char cleanup_cg[PATH_MAX];
static volatile pid_t cleanup_child;
static const struct env *cleanup_env;

static void on_signal(int sig)
{
	if (cleanup_child > 0) {
		kill(cleanup_child, SIGKILL);
		waitpid(cleanup_child, NULL, 0);
	}
	if (cleanup_cg[0])
		rmdir(cleanup_cg);
	for (int m = 0; cleanup_env && m < M_COUNT; m++) {
		if (cleanup_env->files[m][0])
			unlink(cleanup_env->files[m]);
		if (cleanup_env->dirs[m][0])
			rmdir(cleanup_env->dirs[m]);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ------------------------------------------------------------ the kernel rows */

struct kres {
	int err;		/* -errno of what failed, 0 */
	char what[160];
	size_t warm;		/* warm-up accesses made */
	double secs;
	uint64_t majflt, minflt;
	uint64_t write_bytes;
	struct pass ps;
};

static uint64_t io_write_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "re");
	char line[128];
	unsigned long long v = 0;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "write_bytes: %llu", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static void kernel_child(struct env *env, int m, int row, enum wl w, int wfd)
{
	struct kres k = { 0 };
	struct rusage ru0, ru1;
	size_t len = env->pages * BENCH_PAGE;
	size_t n = w == W_SEQ ? env->pages : env->o->ops;
	uint64_t t0, wb0;
	char pid[32], procs[PATH_MAX + 64];
	char *base;
	int fd;

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", env->cg.path);
	if ((k.err = write_str(procs, pid)) < 0) {
		snprintf(k.what, sizeof(k.what), "joining %.140s", env->cg.path);
		goto out;
	}
	fd = open(env->files[m], O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		k.err = -errno;
		snprintf(k.what, sizeof(k.what), "opening %.140s", env->files[m]);
		goto out;
	}
	base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (base == MAP_FAILED) {
		k.err = -errno;
		snprintf(k.what, sizeof(k.what), "mapping %.140s", env->files[m]);
		goto out;
	}
	if (row == R_KERNEL_ADV &&
	    madvise(base, len, w == W_SEQ ? MADV_SEQUENTIAL : MADV_RANDOM) < 0) {
		k.err = -errno;
		snprintf(k.what, sizeof(k.what), "madvise");
		goto out;
	}
	wb0 = io_write_bytes();
	if (w != W_SEQ)
		k.warm = warm_up(base, w, env->seq[w], env->o->warmup, env->counts[m], &k.ps,
				 cgroup_full, &env->cg);
	getrusage(RUSAGE_SELF, &ru0);
	t0 = fl__now_ns();
	pass_run(base, w, timed_seq(env, w), n, env->counts[m], &k.ps);
	k.secs = (double)(fl__now_ns() - t0) / 1e9;
	getrusage(RUSAGE_SELF, &ru1);
	if (w == W_RMW && msync(base, len, MS_SYNC) < 0) {
		k.err = -errno;
		snprintf(k.what, sizeof(k.what), "msync");
	}
	k.write_bytes = io_write_bytes() - wb0;
	k.majflt = (uint64_t)(ru1.ru_majflt - ru0.ru_majflt);
	k.minflt = (uint64_t)(ru1.ru_minflt - ru0.ru_minflt);
out:
	if (write(wfd, &k, sizeof(k)) != (ssize_t)sizeof(k))
		_exit(3);
	_exit(0);
}

/*
 * One kernel row of one workload: a child in a fresh cgroup maps the file
 * and runs the workload; the cgroup is removed whatever happened.
 */
static int run_kernel(struct env *env, int m, int row, enum wl w, double *x, size_t *warm,
		      struct bench_err *e)
{
	size_t n = w == W_SEQ ? env->pages : env->o->ops;
	struct kres k;
	int fds[2], status, r;
	ssize_t got;
	pid_t pid;

	if ((r = cgroup_make(&env->cg, env->o->budget, e)) < 0) {
		cgroup_remove(&env->cg);
		return r;
	}
	snprintf(cleanup_cg, sizeof(cleanup_cg), "%s", env->cg.path);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		r = bench_fail(e, -errno, "pipe");
		goto out;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		r = bench_fail(e, -errno, "fork");
		close(fds[0]);
		close(fds[1]);
		goto out;
	}
	if (pid == 0) {
		close(fds[0]);
		kernel_child(env, m, row, w, fds[1]);
	}
	cleanup_child = pid;
	close(fds[1]);
	/* Unbounded: as long as the child's workload takes; it ends or is killed. */
	do
		got = read(fds[0], &k, sizeof(k));
	while (got < 0 && errno == EINTR);
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	cleanup_child = 0;
	x[X_PEAK] = cgroup_peak(&env->cg);
	if (got != (ssize_t)sizeof(k)) {
		r = bench_fail(e, -EIO, "kernel %s %s: the child %s %d%s", medium_names[m],
			       wl_names[w], WIFSIGNALED(status) ? "was killed by signal" :
			       "exited with", WIFSIGNALED(status) ? WTERMSIG(status) :
			       WEXITSTATUS(status), WIFSIGNALED(status) &&
			       WTERMSIG(status) == SIGKILL ? " (out of memory in the cgroup?)" : "");
		goto out;
	}
	if (k.err < 0) {
		r = bench_fail(e, k.err, "kernel %s %s: %s", medium_names[m], wl_names[w], k.what);
		goto out;
	}
	if (k.ps.bad) {
		r = bench_fail(e, -EIO, "kernel %s %s: %llu accesses found wrong bytes, first in "
			       "page %llu", medium_names[m], wl_names[w],
			       (unsigned long long)k.ps.bad, (unsigned long long)k.ps.first_bad);
		goto out;
	}
	x[X_SECS] = k.secs;
	x[X_PPS] = (double)n / k.secs;
	x[X_HIT] = 1.0 - (double)(k.majflt < n ? k.majflt : n) / (double)n;
	x[X_WB] = (double)k.write_bytes;
	x[X_WARM] = (double)k.warm;
	*warm = k.warm;
	r = 0;
out:
	cgroup_remove(&env->cg);
	cleanup_cg[0] = '\0';
	return r;
}

/* ------------------------------------------------------------ the faultline rows */

struct fl_run {
	struct fl_budget *budget;
	struct fl_store *store;
	struct fl_pager *pager;
	struct fl_region *region;
};

/* Whether the budget is full: eviction has begun. */
static bool budget_full(void *arg)
{
	struct fl_budget_stats bs = { .sz = sizeof(bs) };

	return fl_budget_stats(arg, &bs) == 0 && bs.evicted > 0;
}

static void fl_run_end(struct fl_run *f)
{
	if (f->region)
		fl_region_remove(f->region);
	fl_pager_destroy(f->pager);
	fl_budget_destroy(f->budget);
	fl_store_destroy(f->store);
}

/*
 * One faultline row of one workload, in this process: a budget of the
 * row's policy, the file store (O_DIRECT on a disk, so that no page cache
 * holds what the budget does not), a region over the whole file with or
 * without adaptive prefetch, served by handler threads.
 */
static int run_faultline(struct env *env, int m, int row, enum wl w, double *x, size_t *warm,
			 struct bench_err *e)
{
	struct fl_budget_opts bo = { .sz = sizeof(bo), .bytes = env->o->budget,
				     .policy = row == R_FIFO || row == R_FIFO_PF ? FL_EVICT_FIFO :
										     FL_EVICT_2Q };
	struct fl_store_file_opts so = { .sz = sizeof(so),
					 .flags = (env->on_tmpfs[m] ? 0 : FL_STORE_FILE_DIRECT) |
						  (w == W_RMW ? FL_STORE_FILE_WRITABLE : 0) };
	struct fl_region_opts ro = { .sz = sizeof(ro), .len = env->pages * BENCH_PAGE,
				     .prefetch = row == R_FIFO_PF || row == R_2Q_PF ?
							 FL_PREFETCH_ADAPTIVE : FL_PREFETCH_NONE };
	struct fl_region_stats s0 = { .sz = sizeof(s0) }, s1 = { .sz = sizeof(s1) };
	struct fl_budget_stats bs = { .sz = sizeof(bs) };
	size_t n = w == W_SEQ ? env->pages : env->o->ops;
	struct fl_run f = { 0 };
	struct pass ps = { 0 };
	uint32_t *counts;	/* the passes' own copy: run_row counts the +1s once they are done */
	uint64_t t0;
	char *base;
	int r;

	counts = malloc(env->pages * sizeof(*counts));
	if (!counts)
		return bench_fail(e, -ENOMEM, "allocating");
	memcpy(counts, env->counts[m], env->pages * sizeof(*counts));

	if ((r = fl_budget_create(&bo, &f.budget)) < 0)
		return bench_fail(e, r, "%s: fl_budget_create", row_names[row]);
	if ((r = fl_store_file_open(env->files[m], &so, &f.store)) < 0) {
		bench_fail(e, r, "%s: opening %s", row_names[row], env->files[m]);
		goto out;
	}
	ro.store = f.store;
	ro.budget = f.budget;
	if ((r = fl_pager_create(NULL, &f.pager)) < 0 ||
	    (r = fl_region_add(f.pager, &ro, &f.region)) < 0 ||
	    (r = fl_pager_start(f.pager)) < 0) {
		bench_fail(e, r, "%s: setting up the region", row_names[row]);
		goto out;
	}
	base = fl_region_addr(f.region);
	if (w != W_SEQ)
		*warm = warm_up(base, w, env->seq[w], env->o->warmup, counts, &ps, budget_full,
				f.budget);
	fl_region_stats(f.region, &s0);
	t0 = fl__now_ns();
	pass_run(base, w, timed_seq(env, w), n, counts, &ps);
	x[X_SECS] = (double)(fl__now_ns() - t0) / 1e9;
	fl_region_stats(f.region, &s1);
	fl_budget_stats(f.budget, &bs);
	if (w == W_RMW) {
		/* What is still dirty goes to the file (untimed), as the kernel row's msync. */
		struct fl_region_stats s2 = { .sz = sizeof(s2) };

		if ((r = fl_region_sync(f.region, 0, ro.len)) < 0) {
			bench_fail(e, r, "%s %s: fl_region_sync", row_names[row], medium_names[m]);
			goto out;
		}
		fl_region_stats(f.region, &s2);
		x[X_WB] = (double)(s2.written_back + s2.synced) * BENCH_PAGE;
	}
	if (ps.bad) {
		r = bench_fail(e, -EIO, "%s %s %s: %llu accesses found wrong bytes, first in page "
			       "%llu", row_names[row], medium_names[m], wl_names[w],
			       (unsigned long long)ps.bad, (unsigned long long)ps.first_bad);
		goto out;
	}
	x[X_PPS] = (double)n / x[X_SECS];
	x[X_HIT] = 1.0 - (double)((s1.faults - s0.faults) < n ? s1.faults - s0.faults : n) /
			 (double)n;
	if (w != W_RMW)
		x[X_WB] = (double)bs.written_back;
	x[X_PEAK] = (double)bs.resident_max;
	x[X_WARM] = (double)*warm;
	r = 0;
out:
	fl_run_end(&f);
	free(counts);
	return r;
}

/* The +1s a read-modify-write pass of run @run made, once it succeeded. */
static void count_rmw(struct env *env, int m, size_t warm)
{
	for (size_t i = 0; i < warm; i++)
		env->counts[m][env->seq[W_RMW][i]]++;
	for (size_t i = 0; i < env->o->ops; i++)
		env->counts[m][timed_seq(env, W_RMW)[i]]++;
}

static int run_row(struct env *env, struct table *t, int m, int row, enum wl w,
		   unsigned int run, struct bench_err *e)
{
	double x[X_COUNT] = { 0 };
	size_t warm = 0;
	int r;

	if ((r = drop_cache(env, m, e)) < 0)
		return r;
	x[X_CACHED] = env->on_tmpfs[m] ? 1.0 : cached_share(env->files[m],
							    env->pages * BENCH_PAGE);
	x[X_PEAK] = -1;
	x[X_VERIFIED] = 1;
	if (row_is_kernel(row))
		r = run_kernel(env, m, row, w, x, &warm, e);
	else
		r = run_faultline(env, m, row, w, x, &warm, e);
	if (r == 0 && w == W_RMW) {
		char bad[200] = "";

		count_rmw(env, m, warm);
		r = drop_cache(env, m, e);
		if (r == 0 && verify_file(env, m, bad, sizeof(bad), e) == -EIO) {
			/* Reported as a missed target; the file is written anew for the rows after. */
			x[X_VERIFIED] = 0;
			if (!t->bad[m][row][0])
				snprintf(t->bad[m][row], sizeof(t->bad[m][row]), "run %u: %s",
					 run + 1, bad);
			memset(env->counts[m], 0, env->pages * sizeof(*env->counts[m]));
			unlink(env->files[m]);
			r = write_file(env, m, e);
		}
	}
	for (int k = 0; k < X_COUNT; k++)
		t->m[m][row][w][k][run] = x[k];
	return r;
}

/* ------------------------------------------------------------ setup */

/* The read-ahead of the file system holding @path (its backing device's), or -1. */
static int read_ahead_kb(const char *path)
{
	struct stat st;
	int kb = -1;

	if (stat(path, &st) < 0)
		return -1;
	for (int i = 0; i < 2 && kb < 0; i++) {
		char file[128];
		FILE *f;

		if (i == 0)
			snprintf(file, sizeof(file), "/sys/class/bdi/%u:%u/read_ahead_kb",
				 major(st.st_dev), minor(st.st_dev));
		else
			snprintf(file, sizeof(file), "/sys/dev/block/%u:%u/../queue/read_ahead_kb",
				 major(st.st_dev), minor(st.st_dev));
		f = fopen(file, "re");
		if (f && fscanf(f, "%d", &kb) != 1)
			kb = -1;
		if (f)
			fclose(f);
	}
	return kb;
}

static void teardown(struct env *env)
{
	for (int m = 0; m < M_COUNT; m++) {
		if (env->files[m][0])
			unlink(env->files[m]);
		if (env->dirs[m][0])
			rmdir(env->dirs[m]);
	}
	for (int w = 0; w < W_COUNT; w++)
		free(env->seq[w]);
	for (int m = 0; m < M_COUNT; m++)
		free(env->counts[m]);
	free(env->zipf_cdf);
	free(env->zipf_rank);
}

static int setup(struct env *env, struct bench_err *e)
{
	const struct opts *o = env->o;
	size_t n = o->warmup + o->ops;
	int r;

	env->pages = (size_t)(o->size / BENCH_PAGE);
	if (env->pages > UINT32_MAX)
		return bench_fail(e, -EINVAL, "--size: more than 2^32 pages");
	for (int m = 0; m < M_COUNT; m++)
		if (o->media[m] && !(env->counts[m] = calloc(env->pages, sizeof(uint32_t))))
			return bench_fail(e, -ENOMEM, "allocating");
	env->zipf_cdf = zipf_cdf(env->pages);
	env->zipf_rank = malloc(env->pages * sizeof(*env->zipf_rank));
	for (int w = 0; w < W_COUNT; w++)
		if (w != W_SEQ)
			env->seq[w] = malloc(n * sizeof(*env->seq[w]));
	if (!env->zipf_cdf || !env->zipf_rank || !env->seq[W_UNIFORM] ||
	    !env->seq[W_ZIPF] || !env->seq[W_RMW])
		return bench_fail(e, -ENOMEM, "allocating");
	/* The hottest ranks land anywhere in the file, not at its start. */
	bench_permutation(env->zipf_rank, env->pages, BENCH_PATTERN_SEED ^ 0x21);
	for (int m = 0; m < M_COUNT; m++) {
		struct statfs sf;

		if (!o->media[m])
			continue;
		r = bench_make_dir(env->dirs[m], sizeof(env->dirs[m]),
				   m == M_TMPFS ? o->tmpfs : o->dir, "faultline-bench-outofcore");
		if (r < 0)
			return bench_fail(e, r, "making a directory in %s",
					  m == M_TMPFS ? o->tmpfs : o->dir);
		if (statfs(env->dirs[m], &sf) < 0)
			return bench_fail(e, -errno, "statfs %s", env->dirs[m]);
		env->on_tmpfs[m] = sf.f_type == TMPFS_MAGIC;
		env->ra_kb[m] = read_ahead_kb(env->dirs[m]);
		if (m == M_TMPFS && !env->on_tmpfs[m])
			return bench_fail(e, -EINVAL, "--tmpfs: %s is not on a tmpfs", o->tmpfs);
		snprintf(env->files[m], sizeof(env->files[m]), "%s/data", env->dirs[m]);
		bench_progress("preparing: a %llu MiB file in %s\n",
			       (unsigned long long)(o->size / MIB), env->dirs[m]);
		if ((r = write_file(env, m, e)) < 0) {
			unlink(env->files[m]);
			env->files[m][0] = '\0';
			return r;
		}
	}
	cgroup_probe(&env->cg);
	return 0;
}

/* ------------------------------------------------------------ the report */

static struct stats_spread spread(const struct table *t, int m, int row, int w, int x,
				  unsigned int runs)
{
	double v[MAX_RUNS];

	memcpy(v, t->m[m][row][w][x], runs * sizeof(double));
	return stats_spread_of(v, runs, v);
}

struct target_val {
	char name[96];
	const char *want;
	double value;		/* a ratio, or the verified share */
	bool met;
	bool known;		/* the rows it compares were measured */
	char note[120];
};

#define T_PER_MEDIUM 4

static bool row_measured(const struct table *t, const struct opts *o, int m, int row)
{
	return o->rows[row] && !t->skip[m][row];
}

/* The measured row of the kind asked for (kernel or faultline) with the highest median of @x. */
static int best_row(const struct table *t, const struct opts *o, int m, bool kernel, enum wl w,
		    int x)
{
	int best = -1;
	double v = -1;

	for (int row = 0; row < R_COUNT; row++) {
		double y;

		if (row_is_kernel(row) != kernel || !row_measured(t, o, m, row) ||
		    wl_unsupported(row, w))
			continue;
		y = spread(t, m, row, w, x, o->runs).median;
		if (best < 0 || y > v) {
			best = row;
			v = y;
		}
	}
	return best;
}

/*
 * The targets of medium @m: the best faultline row of each workload (by its
 * median) against the better kernel row (the bar is what a user would pick).
 */
static int targets(const struct table *t, const struct env *env, int m, struct target_val *tv)
{
	static const struct {
		const char *name;
		enum wl w;
		int x;
		double min;
		const char *want;
	} cmp[3] = {
		{ "uniform pages/s", W_UNIFORM, X_PPS, 1.0, ">= 1.0x" },
		{ "zipf hit rate", W_ZIPF, X_HIT, 1.0, ">= 1.0x" },
		{ "seq pages/s", W_SEQ, X_PPS, 0.8, ">= 0.8x" },
	};
	const struct opts *o = env->o;
	bool ok = true, any = false;
	int n = 0;

	for (int row = 0; row < R_COUNT; row++)
		if (row_measured(t, o, m, row) && !wl_unsupported(row, W_RMW)) {
			any = true;
			for (unsigned int i = 0; i < o->runs; i++)
				ok = ok && t->m[m][row][W_RMW][X_VERIFIED][i] == 1;
		}
	tv[n] = (struct target_val){ .want = "every byte", .value = ok ? 1 : 0, .met = ok,
				     .known = any };
	snprintf(tv[n].name, sizeof(tv[n].name), "%s: file verified after rmw",
		 medium_names[m]);
	snprintf(tv[n].note, sizeof(tv[n].note), "no row measured");
	n++;
	for (int k = 0; k < 3; k++) {
		int f = best_row(t, o, m, false, cmp[k].w, cmp[k].x);
		int kr = best_row(t, o, m, true, cmp[k].w, cmp[k].x);

		tv[n] = (struct target_val){ .want = cmp[k].want };
		if (f >= 0 && kr >= 0) {
			double a = spread(t, m, f, cmp[k].w, cmp[k].x, o->runs).median;
			double b = spread(t, m, kr, cmp[k].w, cmp[k].x, o->runs).median;

			tv[n].known = true;
			tv[n].value = b > 0 ? a / b : a > 0 ? INFINITY : 1;
			tv[n].met = tv[n].value >= cmp[k].min - 1e-9;
			snprintf(tv[n].note, sizeof(tv[n].note), "%s / %s", row_names[f],
				 row_names[kr]);
		} else {
			snprintf(tv[n].note, sizeof(tv[n].note), "%s",
				 f < 0 ? "no faultline row measured" : "no kernel row measured");
		}
		snprintf(tv[n].name, sizeof(tv[n].name), "%s: %s vs kernel", medium_names[m],
			 cmp[k].name);
		n++;
	}
	return n;
}

static void print_table(const struct table *t, const struct env *env,
			const struct bench_machine *mach, double fault_ns)
{
	const struct opts *o = env->o;

	bench_print_header("outofcore", mach);
	printf("kind of machine, from the floors: %s (native fault p50 %.0f ns)\n",
	       bench_kind_text(bench_kind_of_fault(fault_ns)), fault_ns);
	printf("file %llu MiB, budget %llu MiB (%.1fx); random workloads: up to %zu warmup "
	       "accesses\n(until the memory is full), then %zu timed; %u runs interleaved, "
	       "median (min-max)\n",
	       (unsigned long long)(o->size / MIB), (unsigned long long)(o->budget / MIB),
	       (double)o->size / (double)o->budget, o->warmup, o->ops, o->runs);
	if (env->cg.version)
		printf("kernel: mmap MAP_SHARED in a child whose memory cgroup (v%d, %s) is "
		       "limited to the budget\n", env->cg.version,
		       env->cg.version == 2 ? "memory.max" : "memory.limit_in_bytes: v2 has no "
		       "memory controller here");
	for (int m = 0; m < M_COUNT; m++) {
		struct target_val tv[T_PER_MEDIUM];
		int nt;

		if (!o->media[m])
			continue;
		printf("\n%s (%s%s", medium_names[m], env->dirs[m],
		       m == M_DISK && env->on_tmpfs[m] ? ": a tmpfs, not a disk" : "");
		if (env->ra_kb[m] >= 0)
			printf("; read_ahead_kb %d", env->ra_kb[m]);
		printf(")\nrow              workload  pages/s                   hit rate  "
		       "written back MiB  warmup  cached  peak MiB\n");
		for (int row = 0; row < R_COUNT; row++) {
			if (!o->rows[row])
				continue;
			if (t->skip[m][row]) {
				printf("%-16s skipped: %s\n", row_names[row], t->why[m][row]);
				continue;
			}
			for (int w = 0; w < W_COUNT; w++) {
				struct stats_spread p = spread(t, m, row, w, X_PPS, o->runs);
				double peak = spread(t, m, row, w, X_PEAK, o->runs).median;
				char cell[64], pk[24] = "-";

				if (wl_unsupported(row, w)) {
					printf("%-16s %-8s  not measured: %s\n", w ? "" : row_names[row],
					       wl_names[w], wl_unsupported(row, w));
					continue;
				}
				snprintf(cell, sizeof(cell), "%.0f (%.0f-%.0f)", p.median, p.min,
					 p.max);
				if (peak >= 0)
					snprintf(pk, sizeof(pk), "%.0f", peak / MIB);
				printf("%-16s %-8s  %-25s %6.1f%% %17.1f %7.0f  %5.0f%%  %8s\n",
				       w ? "" : row_names[row], wl_names[w], cell,
				       100 * spread(t, m, row, w, X_HIT, o->runs).median,
				       spread(t, m, row, w, X_WB, o->runs).median / MIB,
				       spread(t, m, row, w, X_WARM, o->runs).median,
				       100 * spread(t, m, row, w, X_CACHED, o->runs).median, pk);
			}
		}
		for (int row = 0; row < R_COUNT; row++)
			if (t->bad[m][row][0])
				printf("%s: verification FAILED, %s\n", row_names[row],
				       t->bad[m][row]);
		printf("targets (ratios of medians: the best faultline row / the better kernel "
		       "row):\n");
		nt = targets(t, env, m, tv);
		for (int k = 0; k < nt; k++) {
			if (!tv[k].known)
				printf("  %-36s    -   target %-10s not measured: %s\n",
				       tv[k].name, tv[k].want, tv[k].note);
			else
				printf("  %-36s %5.2f%s target %-10s %-6s %s\n", tv[k].name,
				       tv[k].value, k ? "x" : " ", tv[k].want,
				       tv[k].met ? "met" : "MISSED", k ? tv[k].note : "");
		}
	}
	printf("\n(hit rate: accesses that did not wait for the store; kernel: 1 - the child's "
	       "major faults / accesses;\n written back: over the row's warmup, timed pass and "
	       "final sync; warmup: untimed accesses made;\n cached: the file's share in the page "
	       "cache at the row's start, after the drop;\n peak: the most memory the kernel "
	       "row's cgroup used, the most the faultline row's budget held)\n");
}

static void print_json(const struct table *t, const struct env *env,
		       const struct bench_machine *mach, double fault_ns)
{
	static const char *const keys[X_COUNT] = { "pages_per_s", "hit_rate",
						   "written_back_bytes", "secs", "peak_bytes",
						   "cached_at_start", "verified", "warmup" };
	const struct opts *o = env->o;
	bool first = true;

	bench_json_header("outofcore", mach);
	printf(",\"machine_kind\":");
	bench_json_str(bench_kind_of_fault(fault_ns));
	printf(",\"native_fault_ns\":%.0f", isnan(fault_ns) ? -1.0 : fault_ns);
	printf(",\"options\":{\"size\":%llu,\"budget\":%llu,\"ops\":%zu,\"warmup\":%zu,"
	       "\"runs\":%u},\"cgroup\":{\"version\":%d,\"why_not\":",
	       (unsigned long long)o->size, (unsigned long long)o->budget, o->ops, o->warmup,
	       o->runs, env->cg.version);
	bench_json_str(env->cg.version ? "" : env->cg.why);
	printf("},\"rows\":[");
	for (int m = 0; m < M_COUNT; m++)
		for (int row = 0; o->media[m] && row < R_COUNT; row++) {
			if (!o->rows[row])
				continue;
			printf("%s{\"medium\":\"%s\",\"name\":\"%s\",\"dir\":", first ? "" : ",",
			       medium_names[m], row_names[row]);
			bench_json_str(env->dirs[m]);
			printf(",\"read_ahead_kb\":%d", env->ra_kb[m]);
			first = false;
			if (t->skip[m][row]) {
				printf(",\"skipped\":");
				bench_json_str(t->why[m][row]);
				printf("}");
				continue;
			}
			printf(",\"workloads\":[");
			for (int w = 0; w < W_COUNT; w++) {
				printf("%s{\"name\":\"%s\",\"accesses\":%zu", w ? "," : "",
				       wl_names[w], w == W_SEQ ? env->pages : o->ops);
				if (wl_unsupported(row, w)) {
					printf(",\"skipped\":");
					bench_json_str(wl_unsupported(row, w));
					printf("}");
					continue;
				}
				for (int x = 0; x < X_COUNT; x++) {
					printf(",");
					bench_json_spread(keys[x], spread(t, m, row, w, x, o->runs));
				}
				printf("}");
			}
			printf("]}");
		}
	printf("],\"targets\":[");
	first = true;
	for (int m = 0; m < M_COUNT; m++) {
		struct target_val tv[T_PER_MEDIUM];
		int nt;

		if (!o->media[m])
			continue;
		nt = targets(t, env, m, tv);
		for (int k = 0; k < nt; k++) {
			printf("%s{\"name\":", first ? "" : ",");
			first = false;
			bench_json_str(tv[k].name);
			printf(",\"target\":");
			bench_json_str(tv[k].want);
			if (tv[k].known) {
				printf(",\"value\":%.4g,\"met\":%s,\"rows\":",
				       isinf(tv[k].value) ? 1e300 : tv[k].value,
				       tv[k].met ? "true" : "false");
				bench_json_str(k ? tv[k].note : "");
				printf("}");
			} else {
				printf(",\"met\":null,\"why_not\":");
				bench_json_str(tv[k].note);
				printf("}");
			}
		}
	}
	printf("]}\n");
}

int bench_outofcore_main(int argc, char **argv)
{
	struct env env = { 0 };
	struct bench_machine mach;
	struct bench_err e = { "" };
	struct sigaction sa = { .sa_handler = on_signal }, old[2];
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
	bench_machine_get(&mach);
	fault_ns = bench_native_fault_ns();
	sigemptyset(&sa.sa_mask);
	cleanup_env = &env;
	sigaction(SIGINT, &sa, &old[0]);
	sigaction(SIGTERM, &sa, &old[1]);
	r = setup(&env, &e);
	for (int m = 0; r == 0 && m < M_COUNT; m++)
		for (int row = 0; row < R_COUNT; row++)
			if (row_is_kernel(row) && !env.cg.version) {
				t->skip[m][row] = true;
				snprintf(t->why[m][row], sizeof(t->why[m][row]), "%s", env.cg.why);
			}
	for (unsigned int run = 0; r == 0 && run < o.runs; run++) {
		bench_progress("run %u/%u:", run + 1, o.runs);
		make_sequences(&env, run);
		for (int m = 0; r == 0 && m < M_COUNT; m++)
			for (int row = 0; r == 0 && o.media[m] && row < R_COUNT; row++) {
				if (!o.rows[row] || t->skip[m][row])
					continue;
				bench_progress(" %s/%s", medium_names[m], row_names[row]);
				for (int w = 0; r == 0 && w < W_COUNT; w++)
					if (!wl_unsupported(row, w))
						r = run_row(&env, t, m, row, w, run, &e);
				/* A kernel without what budgets need (UFFDIO_MOVE): say so, go on. */
				if (r == -EOPNOTSUPP && !row_is_kernel(row) && run == 0) {
					t->skip[m][row] = true;
					snprintf(t->why[m][row], sizeof(t->why[m][row]), "%s",
						 e.msg);
					r = 0;
				}
			}
		bench_progress("\n");
	}
	sigaction(SIGINT, &old[0], NULL);
	sigaction(SIGTERM, &old[1], NULL);
	if (r < 0) {
		bench_progress("\n");
		teardown(&env);
		free(t);
		return bench_report_error(SUB, &e);
	}
	if (o.json)
		print_json(t, &env, &mach, fault_ns);
	else
		print_table(t, &env, &mach, fault_ns);
	teardown(&env);
	free(t);
	return 0;
}
