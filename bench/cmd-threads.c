/* SPDX-License-Identifier: MIT */
/* faultline bench threads: faults/s with 1..N faulting threads, distinct and shared pages. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench threads"

static int run_threads(const struct bench_opts *o, const struct bench_machine *m)
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
		bench_progress("run %u/%u:", run + 1, o->runs);
		for (size_t c = 0; c < ncfg; c++) {
			enum fl_pager_mode pm = modes[c / (2 * nc)];
			bool shared = (c / nc) % 2;
			unsigned int t = counts[c % nc];
			struct bench_threads_result r;

			bench_progress(" %s/%s/%u", pm == FL_PAGER_SIGBUS ? "sigbus" : "thread",
				 shared ? "shared" : "distinct", t);
			if (bench_threads_run(pm, t, shared, o->pages, o->pager_threads, &r,
					      &e) < 0) {
				bench_progress("\n");
				ret = bench_report_error(SUB, &e);
				goto out;
			}
			fps[run * ncfg + c] = (double)r.pages / r.secs;
			msgs[run * ncfg + c] = (double)r.faults;
		}
		bench_progress("\n");
	}

	if (o->json) {
		bench_json_header("threads", m);
		printf(",\"options\":{\"pages\":%zu,\"runs\":%u,\"max_threads\":%u,"
		       "\"pager_threads\":%u},\"results\":[",
		       o->pages, o->runs, o->max_threads, o->pager_threads);
		for (size_t c = 0; c < ncfg; c++) {
			printf("%s{\"mode\":\"%s\",\"layout\":\"%s\",\"threads\":%u,", c ? "," : "",
			       modes[c / (2 * nc)] == FL_PAGER_SIGBUS ? "sigbus" : "thread",
			       (c / nc) % 2 ? "shared" : "distinct", counts[c % nc]);
			bench_json_spread("pages_per_s", bench_spread_col(fps, o->runs, ncfg, c));
			printf(",");
			bench_json_spread("faults", bench_spread_col(msgs, o->runs, ncfg, c));
			printf("}");
		}
		printf("]}\n");
		ret = 0;
		goto out;
	}
	bench_print_header("threads", m);
	printf("%zu pages per configuration, %u runs interleaved; distinct: each thread its own\n"
	       "slice; shared: every thread walks all pages in the same order. pages/s = distinct\n"
	       "pages brought in per second of wall time; faults = faults the region saw.\n\n",
	       o->pages, o->runs);
	printf("mode    layout    threads    pages/s      min-max            vs 1 thread"
	       "   faults\n");
	for (size_t c = 0; c < ncfg; c++) {
		struct stats_spread f = bench_spread_col(fps, o->runs, ncfg, c);
		double one = bench_spread_col(fps, o->runs, ncfg, c - c % nc).median;

		printf("%-7s %-9s %7u %10.0f   %9.0f-%-9.0f   %6.2fx   %10.0f\n",
		       modes[c / (2 * nc)] == FL_PAGER_SIGBUS ? "sigbus" : "thread",
		       (c / nc) % 2 ? "shared" : "distinct", counts[c % nc], f.median, f.min, f.max,
		       f.median / one, bench_spread_col(msgs, o->runs, ncfg, c).median);
	}
	ret = 0;
out:
	free(fps);
	free(msgs);
	return ret;
}

/* ------------------------------------------------------------ uffd */

void bench_threads_usage(FILE *out)
{
	bench_usage_opts(BENCH_THREADS,
			 "Pages brought in per second with 1..N faulting threads, on distinct\n"
			 "slices and on shared pages, in thread and sigbus mode.\n",
			 out);
}

int bench_threads_main(int argc, char **argv)
{
	struct bench_machine m;
	struct bench_opts o;
	int r = bench_parse_opts(BENCH_THREADS, argc, argv, &o);

	if (r)
		return r;
	bench_machine_get(&m);
	bench_prewarm(2 * (o.pages + o.warmup) * BENCH_PAGE);
	return run_threads(&o, &m);
}
