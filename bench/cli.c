/* SPDX-License-Identifier: MIT */
/* The command line of latency, fill, threads and uffd: their options, help, and output helpers. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define MIB (1ull << 20)
#define GIB (1ull << 30)

static const char *const bench_names[BENCH_NKINDS] = { "latency", "fill", "threads", "uffd" };

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

#define ALL ((1u << BENCH_NKINDS) - 1)
#define ONLY(b) (1u << (b))

static const struct {
	enum opt_id id;
	const char *name;
	const char *arg;	/* NULL: a flag */
	unsigned int benches;
	const char *help;	/* lines after the first start with a tab */
} opt_table[] = {
	{ O_RUNS, "runs", "N", ALL, "runs (default 5; fill: 3)" },
	{ O_PAGES, "pages", "N", ONLY(BENCH_LATENCY) | ONLY(BENCH_THREADS),
	  "pages faulted per mode (default 100000)" },
	{ O_JSON, "json", NULL, ALL, "print one JSON document instead of the tables" },
	{ O_PIN, "pin", NULL, ONLY(BENCH_LATENCY) | ONLY(BENCH_FILL),
	  "pin the reading thread to CPU 0 (handler threads stay\n\tunpinned; default: "
	  "unpinned)" },
	{ O_WARMUP, "warmup", "N", ONLY(BENCH_LATENCY),
	  "N untimed faults before the timed ones (default 0)" },
	{ O_MODES, "modes", "LIST", ONLY(BENCH_LATENCY),
	  "some of native, seed, thread, sigbus, loop, syscall,\n\tbare-sigbus, bare-thread-same, "
	  "bare-thread-other\n\t(default: all)" },
	{ O_PLOT, "plot", "FILE", ONLY(BENCH_LATENCY),
	  "draw the histograms into FILE (.svg or .png) with gnuplot;\n\tthe data goes to FILE's "
	  "name with .dat, the script with .gp\n\t(written even without gnuplot)" },
	{ O_PAGER_THREADS, "pager-threads", "N",
	  ONLY(BENCH_LATENCY) | ONLY(BENCH_FILL) | ONLY(BENCH_THREADS),
	  "handler threads of THREADS mode (default: the pager's)" },
	{ O_SIZE, "size", "SIZE", ONLY(BENCH_FILL) | ONLY(BENCH_UFFD),
	  "fill: region size (default 1G), uffd: range (default 64M);\n\tK, M, G suffixes, a "
	  "multiple of 2M" },
	{ O_DIR, "dir", "DIR", ONLY(BENCH_FILL),
	  "directory of the file store's file (default /var/tmp)" },
	{ O_MODE, "mode", "MODE", ONLY(BENCH_FILL), "pager mode, thread or sigbus (default thread)" },
	{ O_MAX_THREADS, "max-threads", "N", ONLY(BENCH_THREADS),
	  "up to N faulting threads (default 2 x CPUs)" },
};

#define N_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

/* What the runs of every benchmark share; said once, in each one's help. */
static const char runs_text[] =
	"Within each run every configuration runs once, interleaved, so that noise\n"
	"hits them all alike; each metric is reported as the median over the runs,\n"
	"with min and max. Compare numbers within one invocation: the ratios are what\n"
	"carry over. Memory of twice the working set is touched once before the runs:\n"
	"in a VM the host backs guest memory on its first touch, at 10x a guest fault.\n";

void bench_usage_opts(enum bench_kind kind, const char *what, FILE *out)
{
	fprintf(out, "usage: faultline bench %s [OPTIONS]\n\n%s\n%s\nOptions:\n",
		bench_names[kind], what, runs_text);
	for (size_t i = 0; i < N_OPTS; i++) {
		char lhs[40];

		if (!(opt_table[i].benches & ONLY(kind)))
			continue;
		snprintf(lhs, sizeof(lhs), "--%s%s%s", opt_table[i].name, opt_table[i].arg ? " " : "",
			 opt_table[i].arg ? opt_table[i].arg : "");
		fprintf(out, "  %-18s ", lhs);
		for (const char *h = opt_table[i].help; *h; h++) {
			if (*h == '\t')
				fprintf(out, "%-21s", "");
			else
				fputc(*h, out);
		}
		fputc('\n', out);
	}
}


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

int bench_parse_opts(enum bench_kind kind, int argc, char **argv, struct bench_opts *o)
{
	struct option lo[N_OPTS + 1];
	unsigned long long v;
	bool runs_set = false;
	int c, i;

	char sub[32];

	snprintf(sub, sizeof(sub), "bench %s", bench_names[kind]);
	*o = (struct bench_opts){
		.kind = kind,
		.runs = 5,
		.pages = 100000,
		.modes = (1u << BENCH_LAT_NMODES) - 1,
		.size = kind == BENCH_UFFD ? 64 * MIB : GIB,
		.dir = "/var/tmp",
		.mode = FL_PAGER_THREADS,
		.max_threads = 2 * (unsigned int)sysconf(_SC_NPROCESSORS_ONLN),
	};
	if (o->max_threads > 256)
		o->max_threads = 256;
	for (i = 0; i < (int)N_OPTS; i++)
		lo[i] = (struct option){
			opt_table[i].name, opt_table[i].arg ? required_argument : no_argument,
			NULL, opt_table[i].id
		};
	lo[i] = (struct option){ NULL, 0, NULL, 0 };

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		const char *arg = optarg;
		bool ok = false;

		if (c == '?' || c == ':')
			return usage_error(sub, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		for (i = 0; i < (int)N_OPTS; i++)
			if (opt_table[i].id == (enum opt_id)c) {
				ok = opt_table[i].benches & ONLY(kind);
				break;
			}
		if (!ok)
			return usage_error(sub, "--%s does not apply to this benchmark",
					   opt_table[i].name);
		switch (c) {
		case O_RUNS:
			if (parse_uint(arg, BENCH_MAX_RUNS, &v) < 0 || !v)
				return usage_error(sub, "--runs: expected 1 to %d, got '%s'",
						   BENCH_MAX_RUNS, arg);
			o->runs = (unsigned int)v;
			runs_set = true;
			break;
		case O_PAGES:
			if (parse_uint(arg, 1ull << 28, &v) < 0 || !v)
				return usage_error(sub, "--pages: expected a positive count, "
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
				return usage_error(sub, "--warmup: expected a count, got '%s'",
						   arg);
			o->warmup = v;
			break;
		case O_MODES:
			if (parse_modes(arg, &o->modes) < 0)
				return usage_error(sub, "--modes: expected a comma-separated "
						   "list of native, seed, thread, sigbus, loop, "
						   "syscall, bare-sigbus, bare-thread-same, "
						   "bare-thread-other; got '%s'", arg);
			break;
		case O_PLOT: {
			const char *ext = strrchr(arg, '.');
			const char *slash = strrchr(arg, '/');

			if (!ext || (slash && ext < slash) || ext == arg || ext[-1] == '/' ||
			    (strcmp(ext, ".svg") && strcmp(ext, ".png")))
				return usage_error(sub, "--plot: expected a picture named "
						   "FILE.svg or FILE.png, got '%s'", arg);
			o->plot = arg;
			break;
		}
		case O_PAGER_THREADS:
			if (parse_uint(arg, FL_PAGER_MAX_THREADS, &v) < 0 || !v)
				return usage_error(sub, "--pager-threads: expected 1 to %d, "
						   "got '%s'", FL_PAGER_MAX_THREADS, arg);
			o->pager_threads = (unsigned int)v;
			break;
		case O_SIZE:
			if (tool_parse_size(arg, 1ull << 44, &o->size) < 0 || !o->size ||
			    o->size % (2 * MIB))
				return usage_error(sub, "--size: expected a multiple of 2M such as "
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
				return usage_error(sub, "--mode: expected thread or sigbus, "
						   "got '%s'", arg);
			break;
		case O_MAX_THREADS:
			if (parse_uint(arg, 256, &v) < 0 || !v)
				return usage_error(sub, "--max-threads: expected 1 to 256, "
						   "got '%s'", arg);
			o->max_threads = (unsigned int)v;
			break;
		}
	}
	if (optind < argc)
		return usage_error(sub, "unexpected argument '%s'", argv[optind]);
	if (kind == BENCH_FILL && !runs_set)
		o->runs = 3;
	if (kind == BENCH_THREADS && o->pages < o->max_threads)
		return usage_error(sub, "--pages: at least one page per thread (%u)",
				   o->max_threads);
	return 0;
}


int bench_report_error(const char *sub, const struct bench_err *e)
{
	fprintf(stderr, "faultline: %s: %s\n", sub, e->msg);
	return 1;
}

/* Progress goes to a terminal only: never into a log that a script parses. */
void bench_progress(const char *fmt, ...)
{
	static int on = -1;
	va_list ap;

	if (on < 0)
		on = isatty(STDERR_FILENO);
	if (!on)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

void bench_json_str(const char *s)
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

void bench_json_spread(const char *key, struct stats_spread s)
{
	printf("\"%s\":{\"median\":%.6g,\"min\":%.6g,\"max\":%.6g}", key, s.median, s.min, s.max);
}

void bench_print_header(const char *what, const struct bench_machine *m)
{
	printf("faultline %s bench %s\n", fl_version(), what);
	printf("machine: %ld CPUs, %s %s %s, clocksource %s (clock_gettime pair %.0f ns), "
	       "THP %s\n", m->nproc, m->sysname, m->release, m->arch, m->clocksource,
	       m->timer_ns, m->thp[0] ? m->thp : "?");
}

void bench_json_header(const char *what, const struct bench_machine *m)
{
	printf("{\"benchmark\":\"%s\",\"faultline\":\"%s\",\"machine\":{\"nproc\":%ld,"
	       "\"sysname\":", what, fl_version(), m->nproc);
	bench_json_str(m->sysname);
	printf(",\"kernel\":");
	bench_json_str(m->release);
	printf(",\"kernel_version\":");
	bench_json_str(m->version);
	printf(",\"arch\":");
	bench_json_str(m->arch);
	printf(",\"clocksource\":");
	bench_json_str(m->clocksource);
	printf(",\"timer_ns\":%.1f,\"thp\":", m->timer_ns);
	bench_json_str(m->thp);
	printf("}");
}

/* The spread of column @col of a runs x cols matrix. */
struct stats_spread bench_spread_col(const double *m, unsigned int runs, size_t cols, size_t col)
{
	double v[BENCH_MAX_RUNS];

	for (unsigned int r = 0; r < runs; r++)
		v[r] = m[r * cols + col];
	return stats_spread_of(v, runs, v);
}
