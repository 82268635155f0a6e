/* SPDX-License-Identifier: MIT */
/* Back a region with a file: pages come from the file on first touch, prefetched adaptively. */
#include <stdio.h>
#include <string.h>

#include <faultline.h>

int main(int argc, char **argv)
{
	struct fl_region_opts ro = { .sz = sizeof(ro), .prefetch = FL_PREFETCH_ADAPTIVE };
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_pager *pager;
	struct fl_region *region;
	size_t lines = 0;
	int r;

	if (argc != 2)
		return fprintf(stderr, "usage: %s FILE\n", argv[0]), 2;
	if ((r = fl_store_file_open(argv[1], NULL, &ro.store)) < 0 ||
	    (r = fl_pager_create(NULL, &pager)) < 0)
		return fprintf(stderr, "filemap: %s: %s\n", argv[1], strerror(-r)), 1;
	ro.len = fl_store_size(ro.store);
	if ((r = fl_region_add(pager, &ro, &region)) < 0 || (r = fl_pager_start(pager)) < 0)
		return fprintf(stderr, "filemap: %s\n", strerror(-r)), 1;

	const char *mem = fl_region_addr(region);	/* no read(): the pages fault in */
	for (size_t i = 0; i < ro.len; i++)
		lines += mem[i] == '\n';

	fl_region_stats(region, &st);
	printf("%zu lines; %llu faults, %llu pages copied (%llu prefetched), %llu zero pages\n",
	       lines, (unsigned long long)st.faults, (unsigned long long)st.pages_copy,
	       (unsigned long long)st.pages_prefetched, (unsigned long long)st.pages_zero);
	fl_pager_destroy(pager);
	fl_store_destroy(ro.store);
	return 0;
}
