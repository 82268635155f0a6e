/* SPDX-License-Identifier: MIT */
/* faultline bench: dispatches to the benchmarks of bench/, each with its own options and help. */
#include <stdio.h>
#include <string.h>

#include "faultline.h"
#include "../bench/bench.h"
#include "tool.h"

static const struct {
	const char *name;
	const char *summary;
	int (*main)(int argc, char **argv);
	void (*usage)(FILE *out);
} benches[] = {
	{ "latency", "the cost of one 4 KiB fault per mode, next to this machine's floors",
	  bench_latency_main, bench_latency_usage },
	{ "fill", "GB/s of regions filled from the stores, next to first touch and mmap",
	  bench_fill_main, bench_fill_usage },
	{ "threads", "faults/s with 1..N faulting threads, distinct and shared pages",
	  bench_threads_main, bench_threads_usage },
	{ "uffd", "per-4 KiB cost of each userfaultfd operation, without faults", bench_uffd_main,
	  bench_uffd_usage },
	{ "migrate", "post-copy migration between two processes over loopback TCP",
	  bench_migrate_main, bench_migrate_usage },
	{ "monitor", "fault latency through an out-of-process monitor, and each event's cost",
	  bench_monitor_main, bench_monitor_usage },
	{ "snapshot", "restoring a snapshot: working-set replay, eager, demand, mmap",
	  bench_snapshot_main, bench_snapshot_usage },
	{ "outofcore", "a file 4x a memory budget: faultline against mmap under a memory cgroup",
	  bench_outofcore_main, bench_outofcore_usage },
	{ "remote", "faults from Redis and a Redis Cluster next to the local file store",
	  bench_remote_main, bench_remote_usage },
};

#define N_BENCHES (sizeof(benches) / sizeof(benches[0]))

void usage_bench(FILE *out)
{
	fprintf(out, "usage: faultline bench BENCHMARK [OPTIONS]\n\n"
		     "Measures user-space paging on this machine. Benchmarks:\n");
	for (size_t i = 0; i < N_BENCHES; i++)
		fprintf(out, "  %-9s %s\n", benches[i].name, benches[i].summary);
	fprintf(out, "\n'faultline bench BENCHMARK --help' gives the options of one.\n");
}

int cmd_bench(int argc, char **argv)
{
	if (argc < 2)
		return usage_error("bench", "no benchmark given (latency, fill, threads, uffd, "
				   "migrate, monitor, snapshot, outofcore or remote)");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage_bench(stdout);
		return 0;
	}
	for (size_t i = 0; i < N_BENCHES; i++) {
		if (strcmp(argv[1], benches[i].name))
			continue;
		for (int j = 2; j < argc; j++)
			if (!strcmp(argv[j], "--help") || !strcmp(argv[j], "-h")) {
				benches[i].usage(stdout);
				return 0;
			}
		return benches[i].main(argc - 1, argv + 1);
	}
	return usage_error("bench", "unknown benchmark '%s' (latency, fill, threads, uffd, "
			   "migrate, monitor, snapshot, outofcore or remote)", argv[1]);
}
