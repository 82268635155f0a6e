/* SPDX-License-Identifier: MIT */
/*
 * The benchmarks of `faultline bench`: every file of bench/ includes this
 * header alone (with the library's); tools/bench.c only dispatches to the
 * entry points at the end.
 */
#ifndef FL_BENCH_H
#define FL_BENCH_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "faultline.h"
#include "stats.h"
#include "util.h"

#define BENCH_PAGE 4096u
/* The seed of the pattern every benchmark region is filled with. */
#define BENCH_PATTERN_SEED 0x5eedfa17ull

/* What failed, as one line ("seed: UFFDIO_COPY at 0x...: Invalid argument"). */
struct bench_err {
	char msg[256];
};

/* Format @e (strerror(-err) is appended when err < 0) and return @err. */
int bench_fail(struct bench_err *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------- common */

struct bench_machine {
	long nproc;
	char sysname[65];
	char release[65];
	char version[65];
	char arch[65];
	char clocksource[32];
	double timer_ns;	/* median cost of one clock_gettime pair */
	char thp[32];		/* /sys/kernel/mm/transparent_hugepage/enabled, the chosen value */
};

void bench_machine_get(struct bench_machine *m);

/* Pin the calling thread to @cpu, saving its affinity in @saved; bench_unpin restores it. */
int bench_pin(int cpu, cpu_set_t *saved);
void bench_unpin(const cpu_set_t *saved);

/* A private anonymous mapping of @len bytes aligned to @align (a power of two), or NULL. */
void *bench_map_aligned(size_t len, size_t align);
void bench_unmap(void *p, size_t len);

/*
 * Touch @bytes of fresh memory once and free it. In a VM, guest memory
 * never used before costs a host fault on first touch (10x a guest fault
 * here); without this the first configuration of the first run pays it.
 */
void bench_prewarm(size_t bytes);

/*
 * A directory of the bench's own: "@parent/@name-XXXXXX" made with mkdtemp
 * into @dir (@cap bytes). 0, or -errno with @dir "" (nothing to remove).
 */
int bench_make_dir(char *dir, size_t cap, const char *parent, const char *name);

/* The share of the first @len bytes of @fd in the page cache (mincore): 0 to 1, or -1. */
double bench_cached_share(int fd, uint64_t len);

/* AnonHugePages of the mapping that contains @addr, in bytes (-errno on failure). */
long long bench_thp_bytes(const void *addr);

/* A reproducible random permutation of 0..n-1. */
void bench_permutation(uint32_t *perm, size_t n, uint64_t seed);

/* ---------------------------------------------------------------- latency */

enum bench_lat_mode {
	BENCH_LAT_NATIVE,	/* no userfaultfd: the kernel maps the shared zero page */
	BENCH_LAT_SEED,		/* the seed program's poll + read + COPY handler thread */
	BENCH_LAT_THREAD,	/* pager THREADS mode */
	BENCH_LAT_SIGBUS,	/* pager SIGBUS mode */
	BENCH_LAT_LOOP,		/* pager LOOP mode, an epoll loop calling fl_pager_dispatch */
	/* The floors (floors.c): the raw interface, no faultline in them. */
	BENCH_LAT_SYSCALL,	/* one getppid() system call (not a fault) */
	BENCH_LAT_BARE_SIGBUS,	/* UFFD_FEATURE_SIGBUS, a handler doing one UFFDIO_COPY */
	BENCH_LAT_BARE_THREAD_SAME,	/* a thread on the reader's CPU: read() + UFFDIO_COPY */
	BENCH_LAT_BARE_THREAD_OTHER,	/* the same thread pinned to another CPU */
	BENCH_LAT_NMODES,
};

#define BENCH_LAT_FIRST_FLOOR BENCH_LAT_SYSCALL

const char *bench_lat_mode_name(enum bench_lat_mode m);

struct bench_lat_opts {
	size_t pages;		/* timed accesses, one per 4 KiB page */
	size_t warmup;		/* untimed first accesses (pages before the timed ones) */
	bool pin;		/* pin the reading thread to CPU 0 (handlers stay unpinned) */
	unsigned int pager_threads;	/* THREADS mode; 0 = the pager's default */
};

struct bench_lat_result {
	uint64_t *lat;		/* the caller's array of opts->pages latencies (ns), filled */
	double secs;		/* wall time of the timed loop */
	/* seed: share of the faults whose handler ran on the reader's CPU; -1: unknown */
	double same_cpu;
	bool have_stats;	/* pager modes: the region's counters below are valid */
	struct fl_region_stats stats;
	/* seed: how its userfaultfd was opened (see bench_raw_uffd_open) */
	const char *uffd_how;
};

/* One run of one mode: map, fault every page once (timed), verify the contents, unmap. */
int bench_lat_run(enum bench_lat_mode m, const struct bench_lat_opts *o,
		  struct bench_lat_result *r, struct bench_err *e);

/*
 * The seed: a raw-interface re-implementation of the published "hello world"
 * latency program's handler (seed.c). Fills @lat (n entries).
 */
int bench_seed_run(size_t pages, size_t warmup, bool pin, struct bench_lat_result *res,
		   struct bench_err *e);

/*
 * A userfaultfd of the raw interface with @flags: the system call, else
 * /dev/userfaultfd, else the system call for user-mode faults only (what an
 * unprivileged user gets by default). *@how names the way that worked.
 */
int bench_raw_uffd_open(int flags, const char **how);

/* One run of a floor mode (BENCH_LAT_SYSCALL and after); floors.c. */
int bench_floor_run(enum bench_lat_mode m, const struct bench_lat_opts *o,
		    struct bench_lat_result *r, struct bench_err *e);
/* Whether floor @m can be measured here; if not, *@why says what it lacks. */
bool bench_floor_possible(enum bench_lat_mode m, const char **why);

/*
 * The kind of machine, told by what the kernel's own page fault costs here
 * (floors.c): on bare metal or a guest with hardware virtualization (KVM)
 * ~0.7 µs, in a paravirtualized guest (every page table change traps)
 * 9-13 µs; a syscall ~0.1 µs against ~1 µs.
 * bench_native_fault_ns: the median cost of a native fault over a few
 * thousand pages (NAN if it cannot be measured).
 * bench_kind_of_fault / bench_kind_of_syscall: "paravirtualized",
 * "hardware", "unclear" or "unknown" (NAN) from a median in ns.
 * bench_kind_text: that kind in words, for a report's header.
 */
double bench_native_fault_ns(void);
const char *bench_kind_of_fault(double fault_ns);
const char *bench_kind_of_syscall(double syscall_ns);
const char *bench_kind_text(const char *kind);

/* The timed reading loop: one load per 4 KiB page, each timed. Returns its wall time (ns). */
uint64_t bench_walk_timed(const char *base, size_t pages, uint64_t *lat);
/* The same without timing each access (warmups). */
void bench_walk(const char *base, size_t pages);

/* ---------------------------------------------------------------- fill */

enum bench_fill_kind {
	BENCH_FILL_NATIVE,	/* anonymous mapping, one byte written per page, no userfaultfd */
	BENCH_FILL_NATIVE_READ,	/* the same, read: the shared zero page, no allocation */
	BENCH_FILL_MEMCPY,	/* memcpy of the source bytes into a fresh anonymous mapping */
	BENCH_FILL_MMAP,	/* MAP_PRIVATE mapping of the file, one load per page */
	BENCH_FILL_PAGER,	/* a pager region, one load per page */
	BENCH_FILL_EAGER,	/* a pager region populated whole (eager restore), then one load
				   per page; timed from the populate on */
};

enum bench_store_kind {
	BENCH_STORE_NONE,
	BENCH_STORE_MEM,
	BENCH_STORE_FILE,
};

struct bench_fill_cfg {
	const char *name;
	enum bench_fill_kind kind;
	enum bench_store_kind store;
	enum fl_install install;
	size_t page_size;
	enum fl_prefetch prefetch;
	size_t prefetch_min;
	size_t prefetch_max;
	bool random;		/* pages in a random order, else sequentially */
};

/* The configurations `bench fill` measures, in the order of each run. */
const struct bench_fill_cfg *bench_fill_configs(size_t *ret_n);

struct bench_fill_env;

struct bench_fill_setup_opts {
	size_t size;		/* bytes, a multiple of 2 MiB */
	const char *dir;	/* where the file store's file goes */
	enum fl_pager_mode mode;
	unsigned int pager_threads;
	bool pin;
};

int bench_fill_setup(const struct bench_fill_setup_opts *o, struct bench_fill_env **ret,
		     struct bench_err *e);
/* What the setup found: the file, how much of it is in the page cache. */
const char *bench_fill_file(const struct bench_fill_env *env);
double bench_fill_cached(struct bench_fill_env *env);
void bench_fill_teardown(struct bench_fill_env *env);

struct bench_fill_result {
	double secs;
	double src_thp;		/* MOVE: share of the source buffer that was THP-backed */
	double dst_thp;		/* pager rows: share of the region mapped with THPs after the run */
	double populate_secs;	/* EAGER: of secs, the populate call */
	bool have_stats;
	struct fl_region_stats stats;
};

int bench_fill_run(struct bench_fill_env *env, const struct bench_fill_cfg *c,
		   struct bench_fill_result *r, struct bench_err *e);

/* ---------------------------------------------------------------- threads */

struct bench_threads_result {
	double secs;		/* from the start barrier to the last thread's end */
	uint64_t faults;	/* fault messages / signals the region saw */
	uint64_t pages;		/* distinct pages brought in */
};

int bench_threads_run(enum fl_pager_mode mode, unsigned int nthreads, bool shared, size_t pages,
		      unsigned int pager_threads, struct bench_threads_result *r,
		      struct bench_err *e);

/* ---------------------------------------------------------------- uffd */

enum bench_micro_op {
	BENCH_MICRO_COPY1,
	BENCH_MICRO_COPY16,
	BENCH_MICRO_ZEROPAGE,
	BENCH_MICRO_MOVE_THP,
	BENCH_MICRO_POISON,
	BENCH_MICRO_WP_PROTECT,
	BENCH_MICRO_WP_UNPROTECT,
	BENCH_MICRO_PAGEMAP_SCAN,
	BENCH_MICRO_NOPS,
};

struct bench_micro_info {
	const char *name;
	const char *what;	/* one line: what one operation is */
	uint64_t feature;	/* FL_FEAT_* needed; the row is skipped without it */
};

const struct bench_micro_info *bench_micro_info(enum bench_micro_op op);

struct bench_micro_result {
	double ns_per_page;	/* per 4 KiB */
	double op_us;		/* one operation (a call) */
	double extra;		/* MOVE: THP share of the source; else 0 */
};

/* One run: -EOPNOTSUPP when this kernel lacks the feature. @mib: the range size. */
int bench_micro_run(enum bench_micro_op op, size_t mib, struct bench_micro_result *r,
		    struct bench_err *e);

/* ---------------------------------------------------------------- the command line */

/* The faultline command's own helpers (tools/faultline.c), which the benchmarks share. */
/* "faultline: SUB: message", then where to find help; returns 2 (a usage error). */
int usage_error(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "faultline: SUB: what: strerror(-err)"; returns 1. */
int fail(const char *sub, const char *what, int err);
/* A byte count with an optional K, M or G suffix, at most @max; 0 or -EINVAL. */
int tool_parse_size(const char *s, uint64_t max, uint64_t *ret);

#define BENCH_MAX_RUNS 1000

/* The benchmarks that share one set of options (cli.c). */
enum bench_kind { BENCH_LATENCY, BENCH_FILL, BENCH_THREADS, BENCH_UFFD, BENCH_NKINDS };

struct bench_opts {
	enum bench_kind kind;
	unsigned int runs;
	size_t pages;
	bool json;
	bool pin;
	size_t warmup;
	unsigned int modes;		/* latency: 1 << enum bench_lat_mode */
	const char *plot;
	unsigned int pager_threads;
	uint64_t size;
	const char *dir;
	enum fl_pager_mode mode;
	unsigned int max_threads;
};

/* argv[0] is the benchmark's name. 0, or the exit code of a usage error (2). */
int bench_parse_opts(enum bench_kind kind, int argc, char **argv, struct bench_opts *o);
/* The help of one benchmark: its usage line, @what it measures, then the options it takes. */
void bench_usage_opts(enum bench_kind kind, const char *what, FILE *out);

/* "faultline: SUB: what failed"; returns 1. */
int bench_report_error(const char *sub, const struct bench_err *e);
/* Progress on stderr, when it is a terminal. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_json_str(const char *s);
void bench_json_spread(const char *key, struct stats_spread s);
/* The first line(s) of every report: faultline's version and the machine. */
void bench_print_header(const char *what, const struct bench_machine *m);
void bench_json_header(const char *what, const struct bench_machine *m);
/* The spread of column @col of a runs x cols matrix. */
struct stats_spread bench_spread_col(const double *m, unsigned int runs, size_t cols, size_t col);

/*
 * The entry points `faultline bench NAME` dispatches to, argv[0] being NAME,
 * and the help of each (`faultline bench NAME --help`).
 */
int bench_latency_main(int argc, char **argv);
void bench_latency_usage(FILE *out);
int bench_fill_main(int argc, char **argv);
void bench_fill_usage(FILE *out);
int bench_threads_main(int argc, char **argv);
void bench_threads_usage(FILE *out);
int bench_uffd_main(int argc, char **argv);
void bench_uffd_usage(FILE *out);
int bench_migrate_main(int argc, char **argv);
void bench_migrate_usage(FILE *out);
int bench_monitor_main(int argc, char **argv);
void bench_monitor_usage(FILE *out);
int bench_snapshot_main(int argc, char **argv);
/* remote.c: faults from Redis, a Redis Cluster and the file store (faultline bench remote). */
void bench_remote_usage(FILE *out);
int bench_remote_main(int argc, char **argv);
void bench_snapshot_usage(FILE *out);
int bench_outofcore_main(int argc, char **argv);
void bench_outofcore_usage(FILE *out);

#endif /* FL_BENCH_H */
