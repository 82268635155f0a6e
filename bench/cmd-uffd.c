/* SPDX-License-Identifier: MIT */
/* faultline bench uffd: the per-4 KiB cost of each userfaultfd operation, without faults. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench uffd"

static int run_uffd(const struct bench_opts *o, const struct bench_machine *m)
{
	size_t mib = (size_t)(o->size >> 20);
	double per[BENCH_MICRO_NOPS][BENCH_MAX_RUNS], call[BENCH_MICRO_NOPS][BENCH_MAX_RUNS];
	double extra[BENCH_MICRO_NOPS][BENCH_MAX_RUNS];
	bool skipped[BENCH_MICRO_NOPS] = { false };
	char why[BENCH_MICRO_NOPS][256];
	struct bench_err e = { "" };

	for (unsigned int run = 0; run < o->runs; run++) {
		bench_progress("run %u/%u:", run + 1, o->runs);
		for (int i = 0; i < BENCH_MICRO_NOPS; i++) {
			struct bench_micro_result r;
			int err;

			if (skipped[i])
				continue;
			bench_progress(" %s", bench_micro_info(i)->name);
			err = bench_micro_run(i, mib, &r, &e);
			if (err == -EOPNOTSUPP) {
				skipped[i] = true;
				snprintf(why[i], sizeof(why[i]), "%s", e.msg);
				continue;
			}
			if (err < 0) {
				bench_progress("\n");
				return bench_report_error(SUB, &e);
			}
			per[i][run] = r.ns_per_page;
			call[i][run] = r.op_us;
			extra[i][run] = r.extra;
		}
		bench_progress("\n");
	}
	if (o->json) {
		bench_json_header("uffd", m);
		printf(",\"options\":{\"size\":%llu,\"runs\":%u},\"operations\":[",
		       (unsigned long long)o->size, o->runs);
		for (int i = 0; i < BENCH_MICRO_NOPS; i++) {
			const struct bench_micro_info *in = bench_micro_info(i);

			printf("%s{\"name\":\"%s\",\"what\":", i ? "," : "", in->name);
			bench_json_str(in->what);
			if (skipped[i]) {
				printf(",\"skipped\":");
				bench_json_str(why[i]);
			} else {
				printf(",");
				bench_json_spread("ns_per_4k", stats_spread_of(per[i], o->runs, per[i]));
				printf(",");
				bench_json_spread("us_per_call",
					    stats_spread_of(call[i], o->runs, call[i]));
				if (i == BENCH_MICRO_MOVE_THP) {
					printf(",");
					bench_json_spread("source_thp_share",
						    stats_spread_of(extra[i], o->runs, extra[i]));
				}
			}
			printf("}");
		}
		printf("]}\n");
		return 0;
	}
	bench_print_header("uffd", m);
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

void bench_uffd_usage(FILE *out)
{
	bench_usage_opts(BENCH_UFFD,
			 "The per-4 KiB cost of COPY, ZEROPAGE, MOVE, POISON, WRITEPROTECT and\n"
			 "PAGEMAP_SCAN, without faults.\n",
			 out);
}

int bench_uffd_main(int argc, char **argv)
{
	struct bench_machine m;
	struct bench_opts o;
	int r = bench_parse_opts(BENCH_UFFD, argc, argv, &o);

	if (r)
		return r;
	bench_machine_get(&m);
	bench_prewarm(2 * o.size);
	return run_uffd(&o, &m);
}
