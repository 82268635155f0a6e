/* SPDX-License-Identifier: MIT */
/* faultline bench: the benchmarks of bench/, run interleaved, reported as tables or JSON. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "../bench/bench.h"
#include "../bench/stats.h"
#include "tool.h"
#include "util.h"

#define SUB "bench"
#define MAX_RUNS 1000
#define MIB (1ull << 20)
#define GIB (1ull << 30)

/* The plot's histogram: 20 buckets per decade from 1 ns to 10 s. */
#define HIST_PER_DECADE 20
#define HIST_BUCKETS (10 * HIST_PER_DECADE)

extern char **environ;

enum bench_kind { B_LATENCY, B_FILL, B_THREADS, B_UFFD, B_COUNT };

static const char *const bench_names[B_COUNT] = { "latency", "fill", "threads", "uffd" };

/* Which benchmark takes which option. */
enum opt_id {
	O_RUNS = 1,
	O_PAGES,
	O_JSON,
	O_PIN,
	O_WARMUP,
	O_MODES,
	O_PLOT,
	O_PAGER_THREADS,
	O_SIZE,
	O_DIR,
	O_MODE,
	O_MAX_THREADS,
};

#define ALL ((1u << B_COUNT) - 1)
#define ONLY(b) (1u << (b))

static const struct {
	enum opt_id id;
	const char *name;
	unsigned int benches;
} opt_table[] = {
	{ O_RUNS, "runs", ALL },
	{ O_PAGES, "pages", ONLY(B_LATENCY) | ONLY(B_THREADS) },
	{ O_JSON, "json", ALL },
	{ O_PIN, "pin", ONLY(B_LATENCY) | ONLY(B_FILL) },
	{ O_WARMUP, "warmup", ONLY(B_LATENCY) },
	{ O_MODES, "modes", ONLY(B_LATENCY) },
	{ O_PLOT, "plot", ONLY(B_LATENCY) },
	{ O_PAGER_THREADS, "pager-threads", ONLY(B_LATENCY) | ONLY(B_FILL) | ONLY(B_THREADS) },
	{ O_SIZE, "size", ONLY(B_FILL) | ONLY(B_UFFD) },
	{ O_DIR, "dir", ONLY(B_FILL) },
	{ O_MODE, "mode", ONLY(B_FILL) },
	{ O_MAX_THREADS, "max-threads", ONLY(B_THREADS) },
};

struct opts {
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

void usage_bench(FILE *out)
{
	fprintf(out,
		"usage: faultline bench BENCHMARK [OPTIONS]\n\n"
		"Measures user-space paging on this machine. Within each run every\n"
		"configuration runs once, interleaved, so that noise hits them all alike;\n"
		"each metric is reported as the median over the runs, with min and max.\n"
		"Compare numbers within one invocation: the ratios are what carry over.\n"
		"Memory of twice the working set is touched once before the runs: in a\n"
		"VM the host backs guest memory on its first touch, at 10x a guest fault.\n\n"
		"Benchmarks:\n"
		"  latency   the seed experiment: one load per 4 KiB page, each timed with\n"
		"            CLOCK_MONOTONIC, for the modes native (no userfaultfd), seed (the\n"
		"            seed's poll + read + COPY handler), thread, sigbus and loop (the\n"
		"            pager's three modes), and this machine's floors in the same run:\n"
		"            syscall (one getppid()), bare-sigbus (a SIGBUS handler doing one\n"
		"            UFFDIO_COPY), bare-thread-same and bare-thread-other (a thread\n"
		"            doing read + UFFDIO_COPY on the reader's CPU, on another CPU);\n"
		"            each mode as a ratio to its floor, and against the targets\n"
		"  fill      GB/s of regions filled from the mem and file stores, per prefetch\n"
		"            policy and install method, next to native first touch, memcpy\n"
		"            and mmap of the same file\n"
		"  threads   faults/s with 1..N faulting threads, on distinct and shared pages\n"
		"  uffd      per-4 KiB cost of COPY, ZEROPAGE, MOVE, POISON, WRITEPROTECT and\n"
		"            PAGEMAP_SCAN, without faults\n"
		"  migrate   post-copy migration between two processes over loopback TCP:\n"
		"            downtime, total time against plain TCP, urgent fault latency,\n"
		"            stop-and-copy; its own options: --size, --runs, --scale, --faults,\n"
		"            --limit, --json (bench/migrate.c)\n"
		"  monitor   fault latency through an out-of-process monitor next to the\n"
		"            in-process pager, and the cost of each event (fork, mremap,\n"
		"            MADV_DONTNEED, munmap); its own options: --runs, --pages,\n"
		"            --events, --threads, --json (bench/monitor.c)\n\n"
		"Options:\n"
		"  --runs N           runs (default 5; fill: 3)\n"
		"  --pages N          latency, threads: pages faulted per mode (default 100000)\n"
		"  --json             print one JSON document instead of the tables\n"
		"  --pin              latency, fill: pin the reading thread to CPU 0\n"
		"                     (handler threads stay unpinned; default: nothing pinned)\n"
		"  --warmup N         latency: N untimed faults before the timed ones (default 0)\n"
		"  --modes LIST       latency: some of native, seed, thread, sigbus, loop,\n"
		"                     syscall, bare-sigbus, bare-thread-same,\n"
		"                     bare-thread-other (default: all)\n"
		"  --plot FILE        latency: draw the histograms into FILE (.svg or .png) with\n"
		"                     gnuplot; the data goes to FILE's name with .dat, the script\n"
		"                     with .gp (written even without gnuplot)\n"
		"  --pager-threads N  handler threads of THREADS mode (default: the pager's)\n"
		"  --size SIZE        fill: region size (default 1G), uffd: range (default 64M);\n"
		"                     K, M, G suffixes, a multiple of 2M\n"
		"  --dir DIR          fill: directory of the file store's file (default /var/tmp)\n"
		"  --mode MODE        fill: pager mode, thread or sigbus (default thread)\n"
		"  --max-threads N    threads: up to N faulting threads (default 2 x CPUs)\n");
}

/* ------------------------------------------------------------ parsing */

static int parse_uint(const char *s, unsigned long long max, unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_modes(const char *s, unsigned int *ret)
{
	unsigned int m = 0;
	char buf[128], *save = NULL;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int found = -1;

		for (int i = 0; i < BENCH_LAT_NMODES; i++)
			if (!strcmp(t, bench_lat_mode_name(i)))
				found = i;
		if (found < 0)
			return -EINVAL;
		m |= 1u << found;
	}
	if (!m)
		return -EINVAL;
	*ret = m;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	struct option lo[sizeof(opt_table) / sizeof(opt_table[0]) + 2];
	unsigned long long v;
	bool runs_set = false;
	int c, i;

	if (argc < 2)
		return usage_error(SUB, "no benchmark given (latency, fill, threads or uffd)");
	for (i = 0; i < B_COUNT; i++)
		if (!strcmp(argv[1], bench_names[i]))
			break;
	if (i == B_COUNT)
		return usage_error(SUB, "unknown benchmark '%s' (latency, fill, threads or uffd)",
				   argv[1]);
	*o = (struct opts){
		.kind = i,
		.runs = 5,
		.pages = 100000,
		.modes = (1u << BENCH_LAT_NMODES) - 1,
		.size = i == B_UFFD ? 64 * MIB : GIB,
		.dir = "/var/tmp",
		.mode = FL_PAGER_THREADS,
		.max_threads = 2 * (unsigned int)sysconf(_SC_NPROCESSORS_ONLN),
	};
	if (o->max_threads > 256)
		o->max_threads = 256;
	for (i = 0; i < (int)(sizeof(opt_table) / sizeof(opt_table[0])); i++)
		lo[i] = (struct option){
			opt_table[i].name,
			opt_table[i].id == O_JSON || opt_table[i].id == O_PIN ? no_argument
									       : required_argument,
			NULL, opt_table[i].id
		};
	lo[i] = (struct option){ NULL, 0, NULL, 0 };

	opterr = 0;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		const char *arg = optarg;
		bool ok = false;

		if (c == '?' || c == ':')
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		for (i = 0; i < (int)(sizeof(opt_table) / sizeof(opt_table[0])); i++)
			if (opt_table[i].id == (enum opt_id)c) {
				ok = opt_table[i].benches & ONLY(o->kind);
				break;
			}
		if (!ok)
			return usage_error(SUB, "%s: --%s does not apply", bench_names[o->kind],
					   opt_table[i].name);
		switch (c) {
		case O_RUNS:
			if (parse_uint(arg, MAX_RUNS, &v) < 0 || !v)
				return usage_error(SUB, "--runs: expected 1 to %d, got '%s'",
						   MAX_RUNS, arg);
			o->runs = (unsigned int)v;
			runs_set = true;
			break;
		case O_PAGES:
			if (parse_uint(arg, 1ull << 28, &v) < 0 || !v)
				return usage_error(SUB, "--pages: expected a positive count, "
						   "got '%s'", arg);
			o->pages = v;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_PIN:
			o->pin = true;
			break;
		case O_WARMUP:
			if (parse_uint(arg, 1ull << 28, &v) < 0)
				return usage_error(SUB, "--warmup: expected a count, got '%s'",
						   arg);
			o->warmup = v;
			break;
		case O_MODES:
			if (parse_modes(arg, &o->modes) < 0)
				return usage_error(SUB, "--modes: expected a comma-separated "
						   "list of native, seed, thread, sigbus, loop, "
						   "syscall, bare-sigbus, bare-thread-same, "
						   "bare-thread-other; got '%s'", arg);
			break;
		case O_PLOT: {
			const char *ext = strrchr(arg, '.');
			const char *slash = strrchr(arg, '/');

			if (!ext || (slash && ext < slash) || ext == arg || ext[-1] == '/' ||
			    (strcmp(ext, ".svg") && strcmp(ext, ".png")))
				return usage_error(SUB, "--plot: expected a picture named "
						   "FILE.svg or FILE.png, got '%s'", arg);
			o->plot = arg;
			break;
		}
		case O_PAGER_THREADS:
			if (parse_uint(arg, FL_PAGER_MAX_THREADS, &v) < 0 || !v)
				return usage_error(SUB, "--pager-threads: expected 1 to %d, "
						   "got '%s'", FL_PAGER_MAX_THREADS, arg);
			o->pager_threads = (unsigned int)v;
			break;
		case O_SIZE:
			if (tool_parse_size(arg, 1ull << 44, &o->size) < 0 || !o->size ||
			    o->size % (2 * MIB))
				return usage_error(SUB, "--size: expected a multiple of 2M such as "
						   "256M or 1G, got '%s'", arg);
			break;
		case O_DIR:
			o->dir = arg;
			break;
		case O_MODE:
			if (!strcmp(arg, "thread"))
				o->mode = FL_PAGER_THREADS;
			else if (!strcmp(arg, "sigbus"))
				o->mode = FL_PAGER_SIGBUS;
			else
				return usage_error(SUB, "--mode: expected thread or sigbus, "
						   "got '%s'", arg);
			break;
		case O_MAX_THREADS:
			if (parse_uint(arg, 256, &v) < 0 || !v)
				return usage_error(SUB, "--max-threads: expected 1 to 256, "
						   "got '%s'", arg);
			o->max_threads = (unsigned int)v;
			break;
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	if (o->kind == B_FILL && !runs_set)
		o->runs = 3;
	if (o->kind == B_THREADS && o->pages < o->max_threads)
		return usage_error(SUB, "--pages: at least one page per thread (%u)",
				   o->max_threads);
	return 0;
}

/* ------------------------------------------------------------ output helpers */

static int bench_error(const struct bench_err *e)
{
	fprintf(stderr, "faultline: %s: %s\n", SUB, e->msg);
	return 1;
}

static bool progress_on;

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
	va_list ap;

	if (!progress_on)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void json_spread(const char *key, struct stats_spread s)
{
	printf("\"%s\":{\"median\":%.6g,\"min\":%.6g,\"max\":%.6g}", key, s.median, s.min, s.max);
}

static void print_header(const char *what, const struct bench_machine *m)
{
	printf("faultline %s bench %s\n", fl_version(), what);
	printf("machine: %ld CPUs, %s %s %s, clocksource %s (clock_gettime pair %.0f ns), "
	       "THP %s\n", m->nproc, m->sysname, m->release, m->arch, m->clocksource,
	       m->timer_ns, m->thp[0] ? m->thp : "?");
}

static void json_header(const char *what, const struct bench_machine *m)
{
	printf("{\"benchmark\":\"%s\",\"faultline\":\"%s\",\"machine\":{\"nproc\":%ld,"
	       "\"sysname\":", what, fl_version(), m->nproc);
	json_str(m->sysname);
	printf(",\"kernel\":");
	json_str(m->release);
	printf(",\"kernel_version\":");
	json_str(m->version);
	printf(",\"arch\":");
	json_str(m->arch);
	printf(",\"clocksource\":");
	json_str(m->clocksource);
	printf(",\"timer_ns\":%.1f,\"thp\":", m->timer_ns);
	json_str(m->thp);
	printf("}");
}

/* The spread of column @col of a runs x cols matrix. */
static struct stats_spread spread_col(const double *m, unsigned int runs, size_t cols,
				      size_t col)
{
	double v[MAX_RUNS];

	for (unsigned int r = 0; r < runs; r++)
		v[r] = m[r * cols + col];
	return stats_spread_of(v, runs, v);
}

/* ------------------------------------------------------------ latency */

enum lat_metric { M_MEAN, M_P50, M_P90, M_P99, M_P999, M_MAX, M_FPS, M_COUNT };

static const char *const metric_names[M_COUNT] = {
	"mean_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "faults_per_s",
};

struct lat_ratio {
	const char *name;
	enum bench_lat_mode a, b;
	double target;		/* a/b must be <= target (< if strict); 0: no target */
	bool strict;
};

/*
 * The floors' targets hold on every kind of machine: a mode may cost only a
 * little more than the least its design can cost here. The targets against
 * the seed and native were set on a KVM guest, where a fault costs ~0.7 µs.
 */
static const struct lat_ratio lat_ratios[] = {
	{ "sigbus/bare-sigbus", BENCH_LAT_SIGBUS, BENCH_LAT_BARE_SIGBUS, 1.1, false },
	{ "thread/bare-thread-same", BENCH_LAT_THREAD, BENCH_LAT_BARE_THREAD_SAME, 1.25, false },
	{ "thread/seed", BENCH_LAT_THREAD, BENCH_LAT_SEED, 1.0, true },
	{ "seed/bare-thread-same", BENCH_LAT_SEED, BENCH_LAT_BARE_THREAD_SAME, 0, false },
	{ "loop/bare-thread-same", BENCH_LAT_LOOP, BENCH_LAT_BARE_THREAD_SAME, 0, false },
	{ "bare-thread-other/same", BENCH_LAT_BARE_THREAD_OTHER, BENCH_LAT_BARE_THREAD_SAME, 0,
	  false },
	{ "sigbus/seed (KVM target)", BENCH_LAT_SIGBUS, BENCH_LAT_SEED, 0.35, false },
	{ "sigbus/native (KVM target)", BENCH_LAT_SIGBUS, BENCH_LAT_NATIVE, 2.5, false },
	{ "thread/seed (KVM target)", BENCH_LAT_THREAD, BENCH_LAT_SEED, 0.6, false },
	{ "loop/seed", BENCH_LAT_LOOP, BENCH_LAT_SEED, 0, false },
};

static bool ratio_met(const struct lat_ratio *q, double v)
{
	return q->strict ? v < q->target : v <= q->target;
}

/* The floor each mode is read against (BENCH_LAT_NMODES: none). */
static enum bench_lat_mode floor_of(int mode)
{
	switch (mode) {
	case BENCH_LAT_SIGBUS:
		return BENCH_LAT_BARE_SIGBUS;
	case BENCH_LAT_SEED:
	case BENCH_LAT_THREAD:
	case BENCH_LAT_LOOP:
		return BENCH_LAT_BARE_THREAD_SAME;
	default:
		return BENCH_LAT_NMODES;
	}
}

#define N_RATIOS (sizeof(lat_ratios) / sizeof(lat_ratios[0]))

struct lat_state {
	const struct opts *o;
	double *metric;		/* [mode][run][metric] */
	uint64_t hist[BENCH_LAT_NMODES][HIST_BUCKETS];	/* every access of every run */
	bool have_stats[BENCH_LAT_NMODES];
	uint64_t handler_faults[BENCH_LAT_NMODES];	/* summed over the runs */
	uint64_t handler_hist[BENCH_LAT_NMODES][FL_LAT_BUCKETS];
	double *same_cpu;	/* seed, per run: share of faults handled on the reader's CPU */
	const char *seed_how;	/* how the seed opened its userfaultfd */
	unsigned int modes;	/* those of o->modes this machine can run */
};

static double *lat_metrics(struct lat_state *s, int mode, unsigned int run)
{
	return s->metric + ((size_t)mode * s->o->runs + run) * M_COUNT;
}

static struct stats_spread lat_spread(struct lat_state *s, int mode, enum lat_metric k)
{
	return spread_col(lat_metrics(s, mode, 0), s->o->runs, M_COUNT, k);
}

static struct stats_spread lat_ratio_spread(struct lat_state *s, const struct lat_ratio *q)
{
	double v[MAX_RUNS];

	for (unsigned int r = 0; r < s->o->runs; r++)
		v[r] = lat_metrics(s, q->a, r)[M_P50] / lat_metrics(s, q->b, r)[M_P50];
	return stats_spread_of(v, s->o->runs, v);
}

static bool lat_has(const struct lat_state *s, int mode)
{
	return s->modes & (1u << mode);
}

/* The handler-side median from the region's log2 histogram: the bucket holding it. */
static double handler_p50(const uint64_t *hist)
{
	int b = fl__log2_pct_bucket(hist, FL_LAT_BUCKETS, 50);

	return b < 0 ? 0 : (double)(1ull << b);
}

/*
 * The kind of machine, told by what a page fault and a system call cost
 * here: on bare metal or a guest with hardware virtualization (KVM) the
 * kernel's own fault costs ~0.7 µs and a syscall ~0.1 µs; a paravirtualized
 * guest (no hardware virtualization: every page table change traps) pays
 * 9-13 µs for the fault and ~1 µs for the syscall.
 */
static const char *lat_kind(struct lat_state *s)
{
	if (lat_has(s, BENCH_LAT_NATIVE)) {
		double f = lat_spread(s, BENCH_LAT_NATIVE, M_P50).median;

		return f >= 4000 ? "paravirtualized" : f <= 2000 ? "hardware" : "unclear";
	}
	if (lat_has(s, BENCH_LAT_SYSCALL)) {
		double c = lat_spread(s, BENCH_LAT_SYSCALL, M_P50).median;

		return c >= 500 ? "paravirtualized" : c <= 250 ? "hardware" : "unclear";
	}
	return "unknown";
}

static void lat_machine_kind(struct lat_state *s, FILE *out)
{
	const char *k = lat_kind(s);

	if (!strcmp(k, "unknown"))
		return;
	fprintf(out, "kind of machine, from the floors: %s",
		!strcmp(k, "paravirtualized") ?
			"paravirtualized, no hardware virtualization (a native fault costs "
			">= 4 µs; ~0.7 µs with KVM)" :
		!strcmp(k, "hardware") ? "bare metal or hardware-virtualized (KVM)" :
					 "between a KVM guest and a paravirtualized one");
	fprintf(out, "\n");
}

static void lat_table(struct lat_state *s, const struct bench_machine *m)
{
	const struct opts *o = s->o;
	char pt[32];

	print_header("latency", m);
	if (o->pager_threads)
		snprintf(pt, sizeof(pt), "%u", o->pager_threads);
	printf("%zu faults of 4 KiB per mode and run, %u runs interleaved; reader %s, "
	       "warmup %zu; pager threads %s\n",
	       o->pages, o->runs, o->pin ? "pinned to CPU 0" : "unpinned", o->warmup,
	       o->pager_threads ? pt : "default");
	printf("native: a load from untouched anonymous memory "
	       "(the kernel maps the zero page)\n\n");
	printf("mode                  mean      p50      p90      p99    p99.9        max   "
	       "faults/s  p50/floor\n");
	for (int i = 0; i < BENCH_LAT_NMODES; i++) {
		enum bench_lat_mode fl = floor_of(i);

		if (!lat_has(s, i))
			continue;
		if (i == BENCH_LAT_FIRST_FLOOR)
			printf("floors (the raw interface, no faultline; syscall: one getppid())\n");
		printf("%-18s", bench_lat_mode_name(i));
		for (int k = M_MEAN; k <= M_MAX; k++)
			printf(k == M_MAX ? " %10.2f" : " %8.2f", lat_spread(s, i, k).median / 1e3);
		printf(" %10.0f", lat_spread(s, i, M_FPS).median);
		if (fl < BENCH_LAT_NMODES && lat_has(s, fl))
			printf("  %5.2fx %s", lat_spread(s, i, M_P50).median /
						  lat_spread(s, fl, M_P50).median,
			       fl == BENCH_LAT_BARE_SIGBUS ? "bare-sigbus" : "bare-thread-same");
		printf("\n");
	}
	printf("(µs; each column is the median over the runs; p50/floor: the ratio of those "
	       "medians)\n");
	lat_machine_kind(s, stdout);
	if (s->seed_how && strcmp(s->seed_how, "the userfaultfd syscall"))
		printf("seed: its userfaultfd was opened with %s (the syscall is not allowed "
		       "here)\n", s->seed_how);
	printf("\n");

	printf("spread over runs       p50 min-max (µs)   mean min-max (µs)   handler\n");
	for (int i = 0; i < BENCH_LAT_NMODES; i++) {
		struct stats_spread p, mn;
		char h[48] = "-";

		if (!lat_has(s, i))
			continue;
		p = lat_spread(s, i, M_P50);
		mn = lat_spread(s, i, M_MEAN);
		if (s->have_stats[i]) {
			double h50 = handler_p50(s->handler_hist[i]);

			snprintf(h, sizeof(h), "p50 in %.2f-%.2f µs", h50 / 1e3, 2 * h50 / 1e3);
		}
		if (i == BENCH_LAT_SEED) {
			unsigned int same = 0, known = 0;

			for (unsigned int r = 0; r < o->runs; r++)
				if (s->same_cpu[r] >= 0) {
					known++;
					same += s->same_cpu[r] >= 0.5;
				}
			snprintf(h, sizeof(h), "on the reader's CPU in %u of %u runs", same, known);
		}
		printf("  %-18s %7.2f - %-7.2f     %7.2f - %-7.2f    %s\n", bench_lat_mode_name(i),
		       p.min / 1e3, p.max / 1e3, mn.min / 1e3, mn.max / 1e3, h);
	}
	printf("(handler p50: fault read to page installed, from the pager's log2 histogram)\n");
	if (lat_has(s, BENCH_LAT_SEED)) {
		printf("seed per run, p50 µs (share of faults handled on the reader's CPU):");
		for (unsigned int r = 0; r < o->runs; r++) {
			if (s->same_cpu[r] >= 0)
				printf(" %.2f (%.0f%%)",
				       lat_metrics(s, BENCH_LAT_SEED, r)[M_P50] / 1e3,
				       100 * s->same_cpu[r]);
			else
				printf(" %.2f (reader moved)",
				       lat_metrics(s, BENCH_LAT_SEED, r)[M_P50] / 1e3);
		}
		printf("\n");
	}
	printf("\n");

	for (size_t i = 0, shown = 0; i < N_RATIOS; i++) {
		const struct lat_ratio *q = &lat_ratios[i];
		struct stats_spread r;
		char tgt[32] = "-", mm[32];

		if (!lat_has(s, q->a) || !lat_has(s, q->b))
			continue;
		if (!shown++)
			printf("ratio of p50s (per run, median)   ratio   min-max        target\n");
		r = lat_ratio_spread(s, q);
		if (q->target > 0)
			snprintf(tgt, sizeof(tgt), "%s %.2fx  %s", q->strict ? "< " : "<=",
				 q->target, ratio_met(q, r.median) ? "PASS" : "MISS");
		snprintf(mm, sizeof(mm), "%.2f-%.2fx", r.min, r.max);
		printf("  %-32s %5.2fx  %-13s  %s\n", q->name, r.median, mm, tgt);
	}
}

static void lat_json(struct lat_state *s, const struct bench_machine *m)
{
	const struct opts *o = s->o;
	bool first = true;

	json_header("latency", m);
	printf(",\"options\":{\"pages\":%zu,\"runs\":%u,\"warmup\":%zu,\"pin\":%s,"
	       "\"pager_threads\":%u},"
	       "\"native\":\"load from untouched anonymous memory (zero page)\","
	       "\"modes\":[",
	       o->pages, o->runs, o->warmup, o->pin ? "true" : "false", o->pager_threads);
	for (int i = 0; i < BENCH_LAT_NMODES; i++) {
		if (!lat_has(s, i))
			continue;
		printf("%s{\"mode\":\"%s\"", first ? "" : ",", bench_lat_mode_name(i));
		first = false;
		for (int k = 0; k < M_COUNT; k++) {
			printf(",");
			json_spread(metric_names[k], lat_spread(s, i, k));
		}
		printf(",\"runs\":[");
		for (unsigned int r = 0; r < o->runs; r++) {
			double *mv = lat_metrics(s, i, r);

			printf("%s{", r ? "," : "");
			for (int k = 0; k < M_COUNT; k++)
				printf("%s\"%s\":%.6g", k ? "," : "", metric_names[k], mv[k]);
			if (i == BENCH_LAT_SEED && s->same_cpu[r] >= 0)
				printf(",\"handler_on_reader_cpu\":%.4f", s->same_cpu[r]);
			printf("}");
		}
		printf("]");
		if (s->have_stats[i]) {
			printf(",\"handler\":{\"faults\":%llu,\"lat_hist_log2_ns\":[",
			       (unsigned long long)s->handler_faults[i]);
			for (int b = 0; b < FL_LAT_BUCKETS; b++)
				printf("%s%llu", b ? "," : "",
				       (unsigned long long)s->handler_hist[i][b]);
			printf("]}");
		}
		printf("}");
	}
	printf("],\"machine_kind\":");
	json_str(lat_kind(s));
	printf(",\"ratios\":[");
	first = true;
	for (size_t i = 0; i < N_RATIOS; i++) {
		const struct lat_ratio *q = &lat_ratios[i];
		struct stats_spread r;

		if (!lat_has(s, q->a) || !lat_has(s, q->b))
			continue;
		r = lat_ratio_spread(s, q);
		printf("%s{\"name\":\"%s p50\",", first ? "" : ",", q->name);
		json_spread("ratio", r);
		if (q->target > 0)
			printf(",\"%s\":%.2f,\"pass\":%s",
			       q->strict ? "target_below" : "target_max", q->target,
			       ratio_met(q, r.median) ? "true" : "false");
		printf("}");
		first = false;
	}
	printf("]}\n");
}

/* FILE.svg -> FILE.dat (and FILE.gp); parse_args made sure of the extension. */
static void sibling(const char *file, const char *ext, char *buf, size_t len)
{
	snprintf(buf, len, "%.*s%s", (int)(strrchr(file, '.') - file), file, ext);
}

static void gp_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc(*s, f);
	}
	fputc('\'', f);
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[4096];

	while (path && *path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, n ? path : ".", prog);
		if (access(buf, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

static int lat_plot(struct lat_state *s, const struct bench_machine *m)
{
	const struct opts *o = s->o;
	char dat[4096], gp[4096];
	const char *ext = strrchr(o->plot, '.');
	bool png = ext && !strcmp(ext, ".png");
	size_t lo = HIST_BUCKETS, hi = 0;
	char *argv[3];
	int col = 3, status;
	FILE *f;
	pid_t pid;

	sibling(o->plot, ".dat", dat, sizeof(dat));
	sibling(o->plot, ".gp", gp, sizeof(gp));
	for (int i = 0; i < BENCH_LAT_NMODES; i++)
		for (size_t b = 0; lat_has(s, i) && b < HIST_BUCKETS; b++)
			if (s->hist[i][b]) {
				lo = b < lo ? b : lo;
				hi = b > hi ? b : hi;
			}
	f = fopen(dat, "we");
	if (!f)
		return fail(SUB, dat, -errno);
	fprintf(f, "# faultline bench latency: %zu faults x %u runs per mode, %s %s, %ld CPUs\n",
		o->pages, o->runs, m->sysname, m->release, m->nproc);
	fprintf(f, "# share of the accesses whose latency lies in [lo, hi) µs, "
		   "%d buckets per decade\n", HIST_PER_DECADE);
	fprintf(f, "# lo_us hi_us");
	for (int i = 0; i < BENCH_LAT_NMODES; i++)
		if (lat_has(s, i))
			fprintf(f, " %s", bench_lat_mode_name(i));
	fprintf(f, "\n");
	for (size_t b = lo; b <= hi && lo < HIST_BUCKETS; b++) {
		fprintf(f, "%.6g %.6g", stats_log_edge(b, HIST_PER_DECADE) / 1e3,
			stats_log_edge(b + 1, HIST_PER_DECADE) / 1e3);
		for (int i = 0; i < BENCH_LAT_NMODES; i++)
			if (lat_has(s, i))
				fprintf(f, " %.6g",
					(double)s->hist[i][b] / ((double)o->pages * o->runs));
		fprintf(f, "\n");
	}
	if (fclose(f) != 0)
		return fail(SUB, dat, -errno);

	f = fopen(gp, "we");
	if (!f)
		return fail(SUB, gp, -errno);
	fprintf(f, "# gnuplot %s  (written by faultline bench latency --plot)\n", gp);
	fprintf(f, png ? "set terminal pngcairo size 1000,560 noenhanced\n"
		       : "set terminal svg size 1000,560 dynamic noenhanced "
			 "background rgb 'white'\n");
	fprintf(f, "set output ");
	gp_quote(f, o->plot);
	fprintf(f, "\nset title 'faultline bench latency: %zu faults x %u runs per mode, "
		   "Linux %s, %ld CPUs'\n", o->pages, o->runs, m->release, m->nproc);
	fprintf(f, "set logscale x\nset xlabel 'latency of one access (µs, log scale)'\n"
		   "set ylabel 'share of accesses'\nset grid\nset key top right\nset mxtics 10\n");
	fprintf(f, "plot");
	for (int i = 0; i < BENCH_LAT_NMODES; i++) {
		if (!lat_has(s, i))
			continue;
		fprintf(f, "%s ", col > 3 ? ", \\\n    " : "");
		gp_quote(f, dat);
		fprintf(f, " using (sqrt($1*$2)):%d with steps lw 2 title '%s'", col++,
			bench_lat_mode_name(i));
	}
	fprintf(f, "\n");
	if (fclose(f) != 0)
		return fail(SUB, gp, -errno);

	if (!in_path("gnuplot")) {
		fprintf(stderr, "faultline: %s: gnuplot is not installed, so %s was not drawn; "
			"install it with 'apt-get install gnuplot-nox', then run 'gnuplot %s'. "
			"The data is in %s.\n", SUB, o->plot, gp, dat);
		return 0;
	}
	argv[0] = "gnuplot";
	argv[1] = gp;
	argv[2] = NULL;
	if ((errno = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ)) != 0)
		return fail(SUB, "running gnuplot", -errno);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "faultline: %s: gnuplot %s failed (the data is in %s)\n", SUB, gp,
			dat);
		return 1;
	}
	fprintf(stderr, "faultline: %s: wrote %s (data %s, script %s)\n", SUB, o->plot, dat, gp);
	return 0;
}

static int run_latency(const struct opts *o, const struct bench_machine *m)
{
	struct bench_lat_opts lo = {
		.pages = o->pages,
		.warmup = o->warmup,
		.pin = o->pin,
		.pager_threads = o->pager_threads,
	};
	struct lat_state *s = calloc(1, sizeof(*s));
	uint64_t *lat = malloc(o->pages * sizeof(*lat));
	struct bench_err e = { "" };
	int ret = 1;

	if (!s || !lat ||
	    !(s->metric = calloc((size_t)BENCH_LAT_NMODES * o->runs * M_COUNT, sizeof(double))) ||
	    !(s->same_cpu = calloc(o->runs, sizeof(double)))) {
		fail(SUB, "allocating", -ENOMEM);
		goto out;
	}
	s->o = o;
	s->modes = o->modes;
	for (int i = BENCH_LAT_FIRST_FLOOR; i < BENCH_LAT_NMODES; i++) {
		const char *why;

		if (lat_has(s, i) && !bench_floor_possible(i, &why)) {
			fprintf(stderr, "faultline: %s: left out %s: it %s\n", SUB,
				bench_lat_mode_name(i), why);
			s->modes &= ~(1u << i);
		}
	}
	for (unsigned int run = 0; run < o->runs; run++) {
		progress("run %u/%u:", run + 1, o->runs);
		for (int i = 0; i < BENCH_LAT_NMODES; i++) {
			struct bench_lat_result r = { .lat = lat };
			double *mv = lat_metrics(s, i, run);

			if (!lat_has(s, i))
				continue;
			progress(" %s", bench_lat_mode_name(i));
			if (bench_lat_run(i, &lo, &r, &e) < 0) {
				progress("\n");
				ret = bench_error(&e);
				goto out;
			}
			stats_log_hist(lat, o->pages, HIST_PER_DECADE, s->hist[i], HIST_BUCKETS);
			stats_sort_u64(lat, o->pages);
			mv[M_MEAN] = stats_mean_u64(lat, o->pages);
			mv[M_P50] = (double)stats_percentile(lat, o->pages, 50);
			mv[M_P90] = (double)stats_percentile(lat, o->pages, 90);
			mv[M_P99] = (double)stats_percentile(lat, o->pages, 99);
			mv[M_P999] = (double)stats_percentile(lat, o->pages, 99.9);
			mv[M_MAX] = (double)lat[o->pages - 1];
			mv[M_FPS] = r.secs > 0 ? (double)o->pages / r.secs : 0;
			if (i == BENCH_LAT_SEED) {
				s->same_cpu[run] = r.same_cpu;
				s->seed_how = r.uffd_how;
			}
			if (r.have_stats) {
				s->have_stats[i] = true;
				s->handler_faults[i] += r.stats.faults;
				for (int b = 0; b < FL_LAT_BUCKETS; b++)
					s->handler_hist[i][b] += r.stats.lat_hist[b];
			}
		}
		progress("\n");
	}
	if (o->json)
		lat_json(s, m);
	else
		lat_table(s, m);
	fflush(stdout);
	ret = o->plot ? lat_plot(s, m) : 0;
out:
	if (s) {
		free(s->metric);
		free(s->same_cpu);
	}
	free(s);
	free(lat);
	return ret;
}

/* ------------------------------------------------------------ fill */

static const char *prefetch_name(const struct bench_fill_cfg *c, char *buf, size_t len)
{
	switch (c->prefetch) {
	case FL_PREFETCH_NONE:
		return "none";
	case FL_PREFETCH_FIXED:
		snprintf(buf, len, "fixed %zuK", c->prefetch_max >> 10);
		return buf;
	case FL_PREFETCH_ADAPTIVE:
		snprintf(buf, len, "adaptive %zuK-%zuM", c->prefetch_min >> 10,
			 c->prefetch_max >> 20);
		return buf;
	}
	return "?";
}

static const char *install_name(const struct bench_fill_cfg *c)
{
	if (c->kind != BENCH_FILL_PAGER)
		return "-";
	return c->install == FL_INSTALL_MOVE ? "move" : "copy";
}

/* The native row with the same access order as @c. */
static size_t fill_native_of(const struct bench_fill_cfg *cfgs, size_t n,
			     const struct bench_fill_cfg *c)
{
	for (size_t i = 0; i < n; i++)
		if (cfgs[i].kind == BENCH_FILL_NATIVE && cfgs[i].random == c->random)
			return i;
	return 0;
}

/* Per configuration and run: [run * n + config]. */
struct fill_state {
	const struct opts *o;
	const struct bench_fill_cfg *cfgs;
	size_t n;
	double *gbps, *ratio, *faults, *src_thp, *dst_thp;
	bool *stats;
	double cached_before, cached_after;
	const char *file;
};

/* A target: the best mem-store row (optionally only COPY or MOVE-2M rows) against native. */
struct fill_target {
	const char *name;
	double min;
	size_t row;		/* SIZE_MAX if no row qualifies */
	double ratio;
};

enum { T_BEST, T_BEST_COPY, T_MOVE_2M, T_COUNT };

static double fill_med(const struct fill_state *f, const double *v, size_t i)
{
	return spread_col(v, f->o->runs, f->n, i).median;
}

static void fill_targets(const struct fill_state *f, struct fill_target *t)
{
	t[T_BEST] = (struct fill_target){ "best mem-store configuration", 1.0, SIZE_MAX, 0 };
	t[T_BEST_COPY] = (struct fill_target){ "best mem-store COPY configuration", 1.0, SIZE_MAX,
					       0 };
	t[T_MOVE_2M] = (struct fill_target){ "MOVE of 2 MiB pages, sequential", 3.0, SIZE_MAX, 0 };
	for (size_t i = 0; i < f->n; i++) {
		const struct bench_fill_cfg *c = &f->cfgs[i];
		double r = fill_med(f, f->ratio, i);

		if (c->kind != BENCH_FILL_PAGER || c->store != BENCH_STORE_MEM)
			continue;
		if (r > t[T_BEST].ratio)
			t[T_BEST] = (struct fill_target){ t[T_BEST].name, 1.0, i, r };
		if (c->install == FL_INSTALL_COPY && r > t[T_BEST_COPY].ratio)
			t[T_BEST_COPY] = (struct fill_target){ t[T_BEST_COPY].name, 1.0, i, r };
		if (c->install == FL_INSTALL_MOVE && c->page_size >= 2 * MIB && !c->random)
			t[T_MOVE_2M] = (struct fill_target){ t[T_MOVE_2M].name, 3.0, i, r };
	}
}

static void fill_json(const struct fill_state *f, const struct bench_machine *m)
{
	static const char *const kinds[] = {
		[BENCH_FILL_NATIVE] = "native",
		[BENCH_FILL_NATIVE_READ] = "native-read",
		[BENCH_FILL_MEMCPY] = "memcpy",
		[BENCH_FILL_MMAP] = "mmap",
		[BENCH_FILL_PAGER] = "pager",
	};
	static const char *const stores[] = {
		[BENCH_STORE_NONE] = "none",
		[BENCH_STORE_MEM] = "mem",
		[BENCH_STORE_FILE] = "file",
	};
	const struct opts *o = f->o;
	struct fill_target t[T_COUNT];
	bool first = true;

	json_header("fill", m);
	printf(",\"options\":{\"size\":%llu,\"runs\":%u,\"mode\":\"%s\",\"pin\":%s,"
	       "\"pager_threads\":%u,\"dir\":",
	       (unsigned long long)o->size, o->runs,
	       o->mode == FL_PAGER_SIGBUS ? "sigbus" : "thread", o->pin ? "true" : "false",
	       o->pager_threads);
	json_str(o->dir);
	printf("},\"file_cached\":{\"before\":%.4f,\"after\":%.4f},\"unit\":\"1e9 B/s\","
	       "\"configs\":[", f->cached_before, f->cached_after);
	for (size_t i = 0; i < f->n; i++) {
		const struct bench_fill_cfg *c = &f->cfgs[i];
		char pf[48];

		printf("%s{\"name\":\"%s\",\"kind\":\"%s\",\"store\":\"%s\",\"access\":\"%s\","
		       "\"page_size\":%zu,", i ? "," : "", c->name, kinds[c->kind],
		       stores[c->store], c->random ? "random" : "sequential", c->page_size);
		if (c->kind == BENCH_FILL_PAGER)
			printf("\"install\":\"%s\",\"prefetch\":\"%s\",", install_name(c),
			       prefetch_name(c, pf, sizeof(pf)));
		else
			printf("\"install\":null,\"prefetch\":null,");
		json_spread("gb_per_s", spread_col(f->gbps, o->runs, f->n, i));
		printf(",");
		json_spread("vs_native", spread_col(f->ratio, o->runs, f->n, i));
		if (f->stats[i]) {
			printf(",");
			json_spread("faults", spread_col(f->faults, o->runs, f->n, i));
		}
		if (c->install == FL_INSTALL_MOVE) {
			printf(",");
			json_spread("source_thp_share", spread_col(f->src_thp, o->runs, f->n, i));
		}
		if (c->kind == BENCH_FILL_PAGER) {
			printf(",");
			json_spread("region_thp_share", spread_col(f->dst_thp, o->runs, f->n, i));
		}
		printf("}");
	}
	printf("],\"targets\":[");
	fill_targets(f, t);
	for (int k = 0; k < T_COUNT; k++) {
		if (t[k].row == SIZE_MAX)
			continue;
		printf("%s{\"name\":\"%s vs native\",\"config\":\"%s\",\"access\":\"%s\","
		       "\"ratio\":%.4g,\"target_min\":%.1f,\"pass\":%s}", first ? "" : ",",
		       t[k].name, f->cfgs[t[k].row].name,
		       f->cfgs[t[k].row].random ? "random" : "sequential", t[k].ratio, t[k].min,
		       t[k].ratio >= t[k].min ? "true" : "false");
		first = false;
	}
	printf("]}\n");
}

static void fill_table(const struct fill_state *f, const struct bench_machine *m)
{
	const struct opts *o = f->o;
	struct fill_target t[T_COUNT];

	print_header("fill", m);
	printf("%llu MiB per configuration, %u runs interleaved, pager mode %s, reader %s\n",
	       (unsigned long long)(o->size >> 20), o->runs,
	       o->mode == FL_PAGER_SIGBUS ? "sigbus" : "thread", o->pin ? "pinned" : "unpinned");
	printf("file store: %s (unlinked), written by this run through the page cache:\n"
	       "  %.0f%% cached before the runs, %.0f%% after (warm)\n",
	       f->file, f->cached_before * 100, f->cached_after * 100);
	printf("native = anonymous mapping, one byte written per page (allocates a zeroed page);\n"
	       "native-read = one load per page (maps the zero page); memcpy = the source copied\n"
	       "into a fresh mapping; mmap-file = MAP_PRIVATE mapping of the file, one load per\n"
	       "page; pager rows: one load per page of a region the store fills.\n"
	       "GB/s = 1e9 B/s.\n\n");
	printf("config              access  page  install  prefetch           GB/s  min-max"
	       "          vs native    faults\n");
	for (size_t i = 0; i < f->n; i++) {
		const struct bench_fill_cfg *c = &f->cfgs[i];
		struct stats_spread g = spread_col(f->gbps, o->runs, f->n, i);
		char pf[48], fl[32] = "-", mm[48];

		if (f->stats[i])
			snprintf(fl, sizeof(fl), "%.0f", fill_med(f, f->faults, i));
		snprintf(mm, sizeof(mm), "%.2f-%.2f", g.min, g.max);
		printf("%-19s %-6s  %-4s  %-7s  %-16s %7.2f  %-15s %7.2fx  %8s", c->name,
		       c->random ? "rand" : "seq", c->page_size >= 2 * MIB ? "2M" : "4K",
		       install_name(c),
		       c->kind == BENCH_FILL_PAGER ? prefetch_name(c, pf, sizeof(pf)) : "-",
		       g.median, mm, fill_med(f, f->ratio, i), fl);
		if (c->install == FL_INSTALL_MOVE)
			printf("  THP: source %.0f%%, region %.0f%%",
			       100 * fill_med(f, f->src_thp, i), 100 * fill_med(f, f->dst_thp, i));
		printf("\n");
	}
	printf("(vs native: per run, against native with the same access order; median)\n\n");
	fill_targets(f, t);
	for (int k = 0; k < T_COUNT; k++)
		if (t[k].row != SIZE_MAX)
			printf("%-34s vs native: %-19s %-4s %6.2fx  target >= %.1fx  %s\n",
			       t[k].name, f->cfgs[t[k].row].name,
			       f->cfgs[t[k].row].random ? "rand" : "seq",
			       t[k].ratio, t[k].min, t[k].ratio >= t[k].min ? "PASS" : "MISS");
}

static int run_fill(const struct opts *o, const struct bench_machine *m)
{
	struct bench_fill_setup_opts so = {
		.size = o->size,
		.dir = o->dir,
		.mode = o->mode,
		.pager_threads = o->pager_threads,
		.pin = o->pin,
	};
	struct fill_state f = { .o = o };
	struct bench_fill_env *env = NULL;
	struct bench_err e = { "" };
	size_t n;
	int ret = 1;

	f.cfgs = bench_fill_configs(&f.n);
	n = f.n;
	f.gbps = calloc(n * o->runs, sizeof(double));
	f.ratio = calloc(n * o->runs, sizeof(double));
	f.faults = calloc(n * o->runs, sizeof(double));
	f.src_thp = calloc(n * o->runs, sizeof(double));
	f.dst_thp = calloc(n * o->runs, sizeof(double));
	f.stats = calloc(n, sizeof(bool));
	if (!f.gbps || !f.ratio || !f.faults || !f.src_thp || !f.dst_thp || !f.stats) {
		fail(SUB, "allocating", -ENOMEM);
		goto out;
	}
	progress("preparing: %llu MiB source, the file in %s, warming memory\n",
		 (unsigned long long)(o->size >> 20), o->dir);
	if (bench_fill_setup(&so, &env, &e) < 0) {
		ret = bench_error(&e);
		goto out;
	}
	f.file = bench_fill_file(env);
	f.cached_before = bench_fill_cached(env);
	for (unsigned int run = 0; run < o->runs; run++) {
		size_t row = (size_t)run * n;

		progress("run %u/%u:", run + 1, o->runs);
		for (size_t i = 0; i < n; i++) {
			struct bench_fill_result r;

			progress(" %s%s", f.cfgs[i].name, f.cfgs[i].random ? "/rand" : "");
			if (bench_fill_run(env, &f.cfgs[i], &r, &e) < 0) {
				progress("\n");
				ret = bench_error(&e);
				goto out;
			}
			f.gbps[row + i] = (double)o->size / r.secs / 1e9;
			f.faults[row + i] = (double)r.stats.faults;
			f.src_thp[row + i] = r.src_thp;
			f.dst_thp[row + i] = r.dst_thp;
			f.stats[i] = f.stats[i] || r.have_stats;
		}
		for (size_t i = 0; i < n; i++)
			f.ratio[row + i] = f.gbps[row + i] /
					   f.gbps[row + fill_native_of(f.cfgs, n, &f.cfgs[i])];
		progress("\n");
	}
	f.cached_after = bench_fill_cached(env);
	if (o->json)
		fill_json(&f, m);
	else
		fill_table(&f, m);
	ret = 0;
out:
	bench_fill_teardown(env);
	free(f.gbps);
	free(f.ratio);
	free(f.faults);
	free(f.src_thp);
	free(f.dst_thp);
	free(f.stats);
	return ret;
}

/* ------------------------------------------------------------ threads */

static int run_threads(const struct opts *o, const struct bench_machine *m)
{
	static const enum fl_pager_mode modes[] = { FL_PAGER_THREADS, FL_PAGER_SIGBUS };
	unsigned int counts[16], nc = 0;
	size_t ncfg;
	double *fps = NULL, *msgs = NULL;
	struct bench_err e = { "" };
	int ret = 1;

	for (unsigned int t = 1; t < o->max_threads && nc < 15; t *= 2)
		counts[nc++] = t;
	counts[nc++] = o->max_threads;
	ncfg = 2 * 2 * nc;
	fps = calloc(ncfg * o->runs, sizeof(double));
	msgs = calloc(ncfg * o->runs, sizeof(double));
	if (!fps || !msgs) {
		fail(SUB, "allocating", -ENOMEM);
		goto out;
	}
	for (unsigned int run = 0; run < o->runs; run++) {
		progress("run %u/%u:", run + 1, o->runs);
		for (size_t c = 0; c < ncfg; c++) {
			enum fl_pager_mode pm = modes[c / (2 * nc)];
			bool shared = (c / nc) % 2;
			unsigned int t = counts[c % nc];
			struct bench_threads_result r;

			progress(" %s/%s/%u", pm == FL_PAGER_SIGBUS ? "sigbus" : "thread",
				 shared ? "shared" : "distinct", t);
			if (bench_threads_run(pm, t, shared, o->pages, o->pager_threads, &r,
					      &e) < 0) {
				progress("\n");
				ret = bench_error(&e);
				goto out;
			}
			fps[run * ncfg + c] = (double)r.pages / r.secs;
			msgs[run * ncfg + c] = (double)r.faults;
		}
		progress("\n");
	}

	if (o->json) {
		json_header("threads", m);
		printf(",\"options\":{\"pages\":%zu,\"runs\":%u,\"max_threads\":%u,"
		       "\"pager_threads\":%u},\"results\":[",
		       o->pages, o->runs, o->max_threads, o->pager_threads);
		for (size_t c = 0; c < ncfg; c++) {
			printf("%s{\"mode\":\"%s\",\"layout\":\"%s\",\"threads\":%u,", c ? "," : "",
			       modes[c / (2 * nc)] == FL_PAGER_SIGBUS ? "sigbus" : "thread",
			       (c / nc) % 2 ? "shared" : "distinct", counts[c % nc]);
			json_spread("pages_per_s", spread_col(fps, o->runs, ncfg, c));
			printf(",");
			json_spread("faults", spread_col(msgs, o->runs, ncfg, c));
			printf("}");
		}
		printf("]}\n");
		ret = 0;
		goto out;
	}
	print_header("threads", m);
	printf("%zu pages per configuration, %u runs interleaved; distinct: each thread its own\n"
	       "slice; shared: every thread walks all pages in the same order. pages/s = distinct\n"
	       "pages brought in per second of wall time; faults = faults the region saw.\n\n",
	       o->pages, o->runs);
	printf("mode    layout    threads    pages/s      min-max            vs 1 thread"
	       "   faults\n");
	for (size_t c = 0; c < ncfg; c++) {
		struct stats_spread f = spread_col(fps, o->runs, ncfg, c);
		double one = spread_col(fps, o->runs, ncfg, c - c % nc).median;

		printf("%-7s %-9s %7u %10.0f   %9.0f-%-9.0f   %6.2fx   %10.0f\n",
		       modes[c / (2 * nc)] == FL_PAGER_SIGBUS ? "sigbus" : "thread",
		       (c / nc) % 2 ? "shared" : "distinct", counts[c % nc], f.median, f.min, f.max,
		       f.median / one, spread_col(msgs, o->runs, ncfg, c).median);
	}
	ret = 0;
out:
	free(fps);
	free(msgs);
	return ret;
}

/* ------------------------------------------------------------ uffd */

static int run_uffd(const struct opts *o, const struct bench_machine *m)
{
	size_t mib = (size_t)(o->size >> 20);
	double per[BENCH_MICRO_NOPS][MAX_RUNS], call[BENCH_MICRO_NOPS][MAX_RUNS];
	double extra[BENCH_MICRO_NOPS][MAX_RUNS];
	bool skipped[BENCH_MICRO_NOPS] = { false };
	char why[BENCH_MICRO_NOPS][256];
	struct bench_err e = { "" };

	for (unsigned int run = 0; run < o->runs; run++) {
		progress("run %u/%u:", run + 1, o->runs);
		for (int i = 0; i < BENCH_MICRO_NOPS; i++) {
			struct bench_micro_result r;
			int err;

			if (skipped[i])
				continue;
			progress(" %s", bench_micro_info(i)->name);
			err = bench_micro_run(i, mib, &r, &e);
			if (err == -EOPNOTSUPP) {
				skipped[i] = true;
				snprintf(why[i], sizeof(why[i]), "%s", e.msg);
				continue;
			}
			if (err < 0) {
				progress("\n");
				return bench_error(&e);
			}
			per[i][run] = r.ns_per_page;
			call[i][run] = r.op_us;
			extra[i][run] = r.extra;
		}
		progress("\n");
	}
	if (o->json) {
		json_header("uffd", m);
		printf(",\"options\":{\"size\":%llu,\"runs\":%u},\"operations\":[",
		       (unsigned long long)o->size, o->runs);
		for (int i = 0; i < BENCH_MICRO_NOPS; i++) {
			const struct bench_micro_info *in = bench_micro_info(i);

			printf("%s{\"name\":\"%s\",\"what\":", i ? "," : "", in->name);
			json_str(in->what);
			if (skipped[i]) {
				printf(",\"skipped\":");
				json_str(why[i]);
			} else {
				printf(",");
				json_spread("ns_per_4k", stats_spread_of(per[i], o->runs, per[i]));
				printf(",");
				json_spread("us_per_call",
					    stats_spread_of(call[i], o->runs, call[i]));
				if (i == BENCH_MICRO_MOVE_THP) {
					printf(",");
					json_spread("source_thp_share",
						    stats_spread_of(extra[i], o->runs, extra[i]));
				}
			}
			printf("}");
		}
		printf("]}\n");
		return 0;
	}
	print_header("uffd", m);
	printf("%zu MiB range per operation, %u runs; no fault involved, medians\n\n", mib,
	       o->runs);
	printf("operation      per 4 KiB (ns)   min-max            per call (µs)   what\n");
	for (int i = 0; i < BENCH_MICRO_NOPS; i++) {
		const struct bench_micro_info *in = bench_micro_info(i);
		struct stats_spread p, c;

		if (skipped[i]) {
			printf("%-14s skipped: %s\n", in->name, why[i]);
			continue;
		}
		p = stats_spread_of(per[i], o->runs, per[i]);
		c = stats_spread_of(call[i], o->runs, call[i]);
		printf("%-14s %10.1f   %8.1f-%-8.1f    %12.2f   %s", in->name, p.median, p.min,
		       p.max, c.median, in->what);
		if (i == BENCH_MICRO_MOVE_THP)
			printf(" (source %.0f%% THP)",
			       100 * stats_spread_of(extra[i], o->runs, extra[i]).median);
		printf("\n");
	}
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_machine m;
	struct opts o;
	int r;

	if (argc >= 2 && !strcmp(argv[1], "migrate"))
		return bench_migrate_main(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "monitor"))
		return bench_monitor_main(argc - 1, argv + 1);
	r = parse_args(argc, argv, &o);
	if (r)
		return r;
	progress_on = isatty(STDERR_FILENO);
	bench_machine_get(&m);
	/* The working set of one configuration, twice (fill prewarms in its setup). */
	if (o.kind == B_LATENCY || o.kind == B_THREADS)
		bench_prewarm(2 * (o.pages + o.warmup) * BENCH_PAGE);
	else if (o.kind == B_UFFD)
		bench_prewarm(2 * o.size);
	switch (o.kind) {
	case B_LATENCY:
		return run_latency(&o, &m);
	case B_FILL:
		return run_fill(&o, &m);
	case B_THREADS:
		return run_threads(&o, &m);
	case B_UFFD:
		return run_uffd(&o, &m);
	case B_COUNT:
		break;
	}
	return 1;
}
