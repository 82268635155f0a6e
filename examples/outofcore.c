/* SPDX-License-Identifier: MIT */
/*
 * Out of core: the byte histogram of a file several times larger than the
 * memory the program lets it use. The file is read through a faultline
 * region in a memory budget: pages come in from the file on first touch
 * (with adaptive prefetch), and the budget's eviction thread drops pages
 * (2Q policy) to keep the region under the budget. The histogram is then
 * checked against one computed with read(), and the budget's counters
 * against the budget.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faultline.h>

#define MIB (1024.0 * 1024.0)

/* The histogram again, with read() in 1 MiB chunks: what the region must agree with. */
static int histogram_read(const char *path, uint64_t hist[256])
{
	static unsigned char buf[1 << 20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			hist[buf[i]]++;
	close(fd);
	return n < 0 ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct fl_store_file_opts so = { .sz = sizeof(so) };
	struct fl_budget_opts bo = { .sz = sizeof(bo), .policy = FL_EVICT_2Q };
	struct fl_region_opts ro = { .sz = sizeof(ro), .prefetch = FL_PREFETCH_ADAPTIVE };
	struct fl_budget_stats bs = { .sz = sizeof(bs) };
	struct fl_region_stats rs = { .sz = sizeof(rs) };
	uint64_t hist[256] = { 0 }, want[256] = { 0 };
	struct fl_pager *pager = NULL;
	struct fl_region *region = NULL;
	struct fl_budget *budget = NULL;
	struct fl_store *store = NULL;
	const unsigned char *mem;
	unsigned long mib = 64;
	struct stat st;
	char *end = NULL;
	int r, bad = 0;

	if (argc == 3)
		mib = strtoul(argv[2], &end, 10);
	if ((argc != 2 && argc != 3) || (end && (*end || !mib || mib > (1ul << 20))))
		return fprintf(stderr, "usage: %s FILE [BUDGET_MIB (default 64)]\n", argv[0]), 2;
	if (stat(argv[1], &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
		return fprintf(stderr, "outofcore: %s: not a non-empty regular file\n", argv[1]), 2;
	bo.bytes = (uint64_t)mib << 20;
	if ((r = fl_store_file_open(argv[1], &so, &store)) < 0 ||
	    (r = fl_budget_create(&bo, &budget)) < 0 ||
	    (r = fl_pager_create(NULL, &pager)) < 0)
		goto fail;
	ro.store = store;
	ro.len = fl_store_size(store);	/* the file's size rounded up to whole pages */
	ro.budget = budget;
	if ((r = fl_region_add(pager, &ro, &region)) < 0 || (r = fl_pager_start(pager)) < 0)
		goto fail;

	/* The program just reads memory: no read(), no mmap of the file. */
	mem = fl_region_addr(region);
	for (off_t i = 0; i < st.st_size; i++)
		hist[mem[i]]++;

	fl_budget_stats(budget, &bs);
	fl_region_stats(region, &rs);
	if ((r = histogram_read(argv[1], want)) < 0)
		goto fail;
	for (int b = 0; b < 256; b++)
		if (hist[b] != want[b]) {
			fprintf(stderr, "outofcore: byte %#04x: %llu through the region, %llu with "
				"read()\n", b, (unsigned long long)hist[b],
				(unsigned long long)want[b]);
			bad = 1;
		}
	/* A fault waits for eviction rather than take the region past the budget and a batch. */
	if (bs.resident_max > bs.bytes + bs.batch) {
		fprintf(stderr, "outofcore: %llu bytes were resident at once, past the budget of "
			"%llu and a batch of %llu\n", (unsigned long long)bs.resident_max,
			(unsigned long long)bs.bytes, (unsigned long long)bs.batch);
		bad = 1;
	}
	printf("%s: %.1f MiB through a budget of %.1f MiB (%.1fx): histogram %s\n", argv[1],
	       (double)st.st_size / MIB, (double)bs.bytes / MIB, (double)st.st_size /
	       (double)bs.bytes, bad ? "WRONG" : "verified against read()");
	printf("most resident at once %.1f MiB; evicted %.1f MiB; %llu faults, %llu pages "
	       "prefetched, %llu pages faulted back after eviction\n",
	       (double)bs.resident_max / MIB, (double)bs.evicted / MIB,
	       (unsigned long long)rs.faults, (unsigned long long)rs.pages_prefetched,
	       (unsigned long long)rs.refaults);
	fl_pager_destroy(pager);	/* removes the region */
	fl_budget_destroy(budget);
	fl_store_destroy(store);
	return bad;
fail:
	fprintf(stderr, "outofcore: %s: %s\n", argv[1], strerror(-r));
	fl_pager_destroy(pager);
	fl_budget_destroy(budget);
	fl_store_destroy(store);
	return 1;
}
