/* SPDX-License-Identifier: MIT */
/* faultline bench latency: the modes and the floors, as a table, JSON or a plot. */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench latency"

/* The plot's histogram: 20 buckets per decade from 1 ns to 10 s. */
#define HIST_PER_DECADE 20
#define HIST_BUCKETS (10 * HIST_PER_DECADE)

extern char **environ;

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
	const struct bench_opts *o;
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
	return bench_spread_col(lat_metrics(s, mode, 0), s->o->runs, M_COUNT, k);
}

static struct stats_spread lat_ratio_spread(struct lat_state *s, const struct lat_ratio *q)
{
	double v[BENCH_MAX_RUNS];

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

/* The kind of machine, from the floors this run measured (bench_kind_of_fault). */
static const char *lat_kind(struct lat_state *s)
{
	if (lat_has(s, BENCH_LAT_NATIVE))
		return bench_kind_of_fault(lat_spread(s, BENCH_LAT_NATIVE, M_P50).median);
	if (lat_has(s, BENCH_LAT_SYSCALL))
		return bench_kind_of_syscall(lat_spread(s, BENCH_LAT_SYSCALL, M_P50).median);
	return "unknown";
}

static void lat_machine_kind(struct lat_state *s, FILE *out)
{
	const char *k = lat_kind(s);

	if (!strcmp(k, "unknown"))
		return;
	fprintf(out, "kind of machine, from the floors: %s\n", bench_kind_text(k));
}

static void lat_table(struct lat_state *s, const struct bench_machine *m)
{
	const struct bench_opts *o = s->o;
	char pt[32];

	bench_print_header("latency", m);
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
	const struct bench_opts *o = s->o;
	bool first = true;

	bench_json_header("latency", m);
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
			bench_json_spread(metric_names[k], lat_spread(s, i, k));
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
	bench_json_str(lat_kind(s));
	if (s->seed_how) {
		printf(",\"seed_uffd\":");
		bench_json_str(s->seed_how);
	}
	printf(",\"ratios\":[");
	first = true;
	for (size_t i = 0; i < N_RATIOS; i++) {
		const struct lat_ratio *q = &lat_ratios[i];
		struct stats_spread r;

		if (!lat_has(s, q->a) || !lat_has(s, q->b))
			continue;
		r = lat_ratio_spread(s, q);
		printf("%s{\"name\":\"%s p50\",", first ? "" : ",", q->name);
		bench_json_spread("ratio", r);
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
	const struct bench_opts *o = s->o;
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

static int run_latency(const struct bench_opts *o, const struct bench_machine *m)
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
		bench_progress("run %u/%u:", run + 1, o->runs);
		for (int i = 0; i < BENCH_LAT_NMODES; i++) {
			struct bench_lat_result r = { .lat = lat };
			double *mv = lat_metrics(s, i, run);

			if (!lat_has(s, i))
				continue;
			bench_progress(" %s", bench_lat_mode_name(i));
			if (bench_lat_run(i, &lo, &r, &e) < 0) {
				bench_progress("\n");
				ret = bench_report_error(SUB, &e);
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
		bench_progress("\n");
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

void bench_latency_usage(FILE *out)
{
	bench_usage_opts(BENCH_LATENCY,
			 "The seed experiment: one load per 4 KiB page, each timed with\n"
			 "CLOCK_MONOTONIC, for the modes native (no userfaultfd), seed (the seed's\n"
			 "poll + read + COPY handler thread), thread, sigbus and loop (the pager's\n"
			 "three modes), and this machine's floors in the same run: syscall (one\n"
			 "getppid()), bare-sigbus (a SIGBUS handler doing one UFFDIO_COPY),\n"
			 "bare-thread-same and bare-thread-other (a thread doing read + UFFDIO_COPY,\n"
			 "pinned to the reader's CPU, or to another one; the reader is pinned).\n"
			 "Each mode is given as a ratio to its floor (sigbus to bare-sigbus, thread,\n"
			 "seed and loop to bare-thread-same), with the targets: sigbus <= 1.1x its\n"
			 "floor, thread <= 1.25x its floor and below the seed. The floors also tell\n"
			 "the kind of machine: a page fault costs ~0.7 us with hardware\n"
			 "virtualization (KVM), 9-13 us in a paravirtualized guest.\n",
			 out);
}

int bench_latency_main(int argc, char **argv)
{
	struct bench_machine m;
	struct bench_opts o;
	int r = bench_parse_opts(BENCH_LATENCY, argc, argv, &o);

	if (r)
		return r;
	bench_machine_get(&m);
	bench_prewarm(2 * (o.pages + o.warmup) * BENCH_PAGE);
	return run_latency(&o, &m);
}
