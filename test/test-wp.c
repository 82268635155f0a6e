/* SPDX-License-Identifier: MIT */
/* Write protection: synchronous WP faults, COPY/CONTINUE with WP, and WP_ASYNC + PAGEMAP_SCAN. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests.h"

static bool wp(const void *p)
{
	return (t_pagemap(p) & T_PM_UFFD_WP) != 0;
}

/*
 * Populated pages of @type, registered MISSING|WP and protected: a write from
 * another thread blocks with a WP|WRITE fault until unprotected. Page 0 is
 * released by a waking unprotect, page 1 by unprotect+DONTWAKE then a wake.
 */
static void wp_fault(enum fl_mem_type type, uint64_t feats)
{
	size_t ps = t_mem_page_size(type);
	struct fl_uffd *u = t_uffd_open(feats, false);
	uint8_t *p, *view = NULL;
	struct t_access a;
	struct fl_event ev;
	uint32_t io = 0;
	int fd;

	p = t_map_mem(type, 2 * ps, &fd);
	if (fd >= 0)
		view = t_map_fd(fd, 2 * ps);
	t_fill(p, 2 * ps, 'a');
	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING | FL_REGISTER_WP, &io));
	T_ASSERT(io & FL_IOCTL_WRITEPROTECT);
	T_ASSERT(!wp(p));
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, 2 * ps, FL_RESOLVE_WP));
	T_ASSERT(wp(p) && wp(p + ps));
	T_ASSERT_EQ(p[10], 'a');	/* reading a protected page does not fault */

	t_access_start(&a, p + 10, true, 'b');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	T_ASSERT_EQ(ev.flags, FL_FAULT_WP | FL_FAULT_WRITE);
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_EQ(__atomic_load_n(&p[10], __ATOMIC_RELAXED), 'a');	/* the write waits */
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, ps, 0));	/* unprotect and wake */
	T_ASSERT_EQ(t_access_join(&a), 'b');
	T_ASSERT(!wp(p));
	T_ASSERT(wp(p + ps));	/* only the range given was unprotected */

	t_access_start(&a, p + ps + 1, true, 'c');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p + ps);
	T_ASSERT_EQ(ev.flags, FL_FAULT_WP | FL_FAULT_WRITE);
	T_ASSERT_OK(fl_uffd_writeprotect(u, p + ps, ps, FL_RESOLVE_DONTWAKE));
	T_ASSERT(!wp(p + ps));
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_OK(fl_uffd_wake(u, p + ps, ps));
	T_ASSERT_EQ(t_access_join(&a), 'c');

	/* Unprotected: the main thread writes without any fault. */
	p[ps + 2] = 'd';
	T_ASSERT(t_all(p, 10, 'a') && p[10] == 'b' && t_all(p + 11, ps - 11, 'a'));
	T_ASSERT(p[ps] == 'a' && p[ps + 1] == 'c' && p[ps + 2] == 'd');
	if (view)
		T_ASSERT(!memcmp(view, p, 2 * ps));
	fl_uffd_close(u);
}

TEST(wp_fault_anon)
{
	wp_fault(FL_MEM_ANON, FL_FEAT_PAGEFAULT_FLAG_WP);
}

TEST(wp_fault_shmem)
{
	wp_fault(FL_MEM_SHMEM, FL_FEAT_MISSING_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM);
}

TEST(wp_fault_hugetlb)
{
	wp_fault(FL_MEM_HUGETLB, FL_FEAT_MISSING_HUGETLBFS | FL_FEAT_WP_HUGETLBFS_SHMEM);
}

/* COPY with FL_RESOLVE_WP maps the page write-protected; without it, writable. */
static void copy_wp(enum fl_mem_type type, uint64_t feats)
{
	size_t ps = t_mem_page_size(type), done = 0;
	struct fl_uffd *u = t_uffd_open(feats, false);
	uint8_t *p, *src = t_map_anon(ps), *view = NULL;
	struct t_access a;
	struct fl_event ev;
	int fd;

	p = t_map_mem(type, 2 * ps, &fd);
	if (fd >= 0)
		view = t_map_fd(fd, 2 * ps);
	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING | FL_REGISTER_WP, NULL));
	t_fill(src, ps, 'w');
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, FL_RESOLVE_WP, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT_OK(fl_uffd_copy(u, p + ps, src, ps, 0, NULL));
	T_ASSERT(t_pagemap(p) & T_PM_PRESENT);
	T_ASSERT(wp(p));
	T_ASSERT(!wp(p + ps));
	T_ASSERT(t_all(p, 2 * ps, 'w'));

	p[ps + 3] = 'n';	/* not protected: no fault */
	t_access_start(&a, p + 3, true, 'x');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	T_ASSERT_EQ(ev.flags, FL_FAULT_WP | FL_FAULT_WRITE);
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, ps, 0));
	T_ASSERT_EQ(t_access_join(&a), 'x');
	T_ASSERT(!wp(p));
	T_ASSERT(t_all(p, 3, 'w') && t_all(p + 4, ps - 4, 'w'));
	if (view)
		T_ASSERT(view[3] == 'x' && view[ps + 3] == 'n');
	fl_uffd_close(u);
}

TEST(wp_copy_anon)
{
	copy_wp(FL_MEM_ANON, FL_FEAT_PAGEFAULT_FLAG_WP);
}

TEST(wp_copy_shmem)
{
	copy_wp(FL_MEM_SHMEM, FL_FEAT_MISSING_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM);
}

/* CONTINUE with FL_RESOLVE_WP: the page-cache page is mapped write-protected. */
TEST(wp_continue_shmem)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_MINOR_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM, false);
	uint8_t *p, *view;
	struct t_access a;
	struct fl_event ev;
	int fd, r;

	p = t_map_memfd(ps, &fd);
	view = t_map_fd(fd, ps);
	T_ASSERT_OK(fl_uffd_register(u, p, ps, FL_REGISTER_MINOR | FL_REGISTER_WP, NULL));
	t_fill(view, ps, 'k');
	/*
	 * UFFDIO_CONTINUE_MODE_WP came in 6.3 without a feature bit to probe: an
	 * older kernel refuses the mode (EINVAL) on a range registered for it. A
	 * kernel with WP_UNPOPULATED (6.4) has it, so there EINVAL is a failure.
	 */
	r = fl_uffd_continue(u, p, ps, FL_RESOLVE_WP, &done);
	if (r == -EINVAL && !done && !t_have(FL_FEAT_WP_UNPOPULATED))
		T_SKIP("the kernel has no UFFDIO_CONTINUE_MODE_WP (Linux 6.3)");
	T_ASSERT_OK(r);
	T_ASSERT_EQ(done, ps);
	T_ASSERT(wp(p));
	T_ASSERT(t_all(p, ps, 'k'));

	t_access_start(&a, p + 1, true, 'K');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	T_ASSERT_EQ(ev.flags, FL_FAULT_WP | FL_FAULT_WRITE);
	T_ASSERT_EQ(view[1], 'k');
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, ps, 0));
	T_ASSERT_EQ(t_access_join(&a), 'K');
	T_ASSERT_EQ(view[1], 'K');
	fl_uffd_close(u);
}

#define SCAN_PAGES 16

/* Scan [p, p+len) in calls of at most @n runs, following *ret_next; return the runs found. */
static size_t scan_all(int pm, uint8_t *p, size_t len, uint32_t flags, size_t n,
		       struct fl_range *runs, size_t max, size_t *ret_calls)
{
	uint8_t *cur = p, *end = p + len;
	size_t found = 0, calls = 0;

	while (cur < end) {
		void *next = NULL;
		int r;

		T_ASSERT(found + n <= max);
		r = fl_pagemap_scan_written(pm, cur, (size_t)(end - cur), flags, runs + found, n,
					    &next);
		T_ASSERT_OK(r);
		T_ASSERT((size_t)r <= n);
		T_ASSERT((uint8_t *)next > cur && (uint8_t *)next <= end);
		found += (size_t)r;
		cur = next;
		calls++;
	}
	*ret_calls = calls;
	return found;
}

static void assert_runs(const struct fl_range *runs, size_t n, uint8_t *p, size_t ps,
			const size_t (*want)[2], size_t nwant)
{
	T_ASSERT_EQ(n, nwant);
	for (size_t i = 0; i < n; i++) {
		T_ASSERT_EQ(runs[i].start, p + want[i][0] * ps);
		T_ASSERT_EQ(runs[i].end, p + want[i][1] * ps);
	}
}

TEST(wp_async_pagemap_scan)
{
	static const size_t first[][2] = { { 1, 3 }, { 5, 6 }, { SCAN_PAGES - 1, SCAN_PAGES } };
	static const size_t second[][2] = { { 3, 5 }, { 9, 10 }, { 12, 13 } };
	size_t ps = t_page_size(), len = SCAN_PAGES * ps, calls;
	struct fl_range runs[SCAN_PAGES];
	struct fl_uffd *u;
	void *next = NULL;
	uint8_t *p;
	int pm, r;

	/* WP_ASYNC alone is enough: the kernel turns WP_UNPOPULATED on with it. */
	u = t_uffd_open(FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN, false);
	T_ASSERT(fl_uffd_features(u) & FL_FEAT_WP_UNPOPULATED);
	T_ASSERT_OK(fl_pagemap_open(0, &pm));
	p = t_map_anon(len);
	t_fill(p, len / 2, 'x');	/* the first half populated, the second never touched */
	T_ASSERT_OK(fl_uffd_register(u, p, len, FL_REGISTER_WP, NULL));
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, len, FL_RESOLVE_WP));
	T_ASSERT(wp(p) && wp(p + len - ps));	/* unpopulated pages carry a marker */

	r = fl_pagemap_scan_written(pm, p, len, 0, runs, SCAN_PAGES, &next);
	T_ASSERT_EQ(r, 0);
	T_ASSERT_EQ(next, p + len);

	/* Asynchronous: the writes do not block, the kernel just drops the protection. */
	p[ps] = 1;
	p[2 * ps + 100] = 2;
	p[5 * ps + ps - 1] = 5;
	p[len - 1] = 15;
	/* Without REPROTECT, scanning changes nothing. */
	for (int pass = 0; pass < 2; pass++) {
		r = fl_pagemap_scan_written(pm, p, len, 0, runs, SCAN_PAGES, &next);
		T_ASSERT_OK(r);
		assert_runs(runs, (size_t)r, p, ps, first, 3);
		T_ASSERT_EQ(next, p + len);
	}
	r = fl_pagemap_scan_written(pm, p, len, FL_SCAN_REPROTECT, runs, SCAN_PAGES, &next);
	T_ASSERT_OK(r);
	assert_runs(runs, (size_t)r, p, ps, first, 3);
	T_ASSERT(wp(p + ps) && wp(p + len - ps));
	r = fl_pagemap_scan_written(pm, p, len, FL_SCAN_REPROTECT, runs, SCAN_PAGES, &next);
	T_ASSERT_EQ(r, 0);
	T_ASSERT_EQ(next, p + len);
	T_ASSERT(p[ps] == 1 && p[2 * ps + 100] == 2 && p[6 * ps - 1] == 5 && p[len - 1] == 15);
	T_ASSERT(t_all(p + 3 * ps, ps, 'x'));
	T_ASSERT(t_all(p + len / 2, len / 2 - 1, 0));
	/* Reading does not count as writing. */
	r = fl_pagemap_scan_written(pm, p, len, 0, runs, SCAN_PAGES, &next);
	T_ASSERT_EQ(r, 0);

	/* One run per call: each call stops before the next run and says where. */
	p[3 * ps] = 3;
	p[4 * ps] = 4;
	p[9 * ps] = 9;
	p[12 * ps] = 12;
	r = fl_pagemap_scan_written(pm, p, len, 0, runs, 1, &next);
	T_ASSERT_EQ(r, 1);
	T_ASSERT(runs[0].start == p + 3 * ps && runs[0].end == p + 5 * ps);
	T_ASSERT((uint8_t *)next >= p + 5 * ps && (uint8_t *)next <= p + 9 * ps);
	r = scan_all(pm, p, len, FL_SCAN_REPROTECT, 1, runs, SCAN_PAGES, &calls);
	assert_runs(runs, (size_t)r, p, ps, second, 3);
	T_ASSERT(calls >= 3);
	r = scan_all(pm, p, len, 0, 2, runs, SCAN_PAGES, &calls);
	T_ASSERT_EQ(r, 0);
	T_ASSERT_EQ(calls, 1);

	/* Bad arguments. */
	T_ASSERT_ERR(fl_pagemap_scan_written(-1, p, len, 0, runs, 1, NULL), EBADF);
	T_ASSERT_ERR(fl_pagemap_scan_written(pm, p + 1, len, 0, runs, 1, NULL), EINVAL);
	T_ASSERT_ERR(fl_pagemap_scan_written(pm, p, len, 1u << 4, runs, 1, NULL), EINVAL);
	T_ASSERT_ERR(fl_pagemap_scan_written(pm, p, 0, 0, runs, 1, NULL), EINVAL);
	close(pm);
	fl_uffd_close(u);
}

/* More runs than the library asks the kernel for at once: the chunks join up seamlessly. */
TEST(wp_async_scan_many_runs)
{
	enum { RUNS = 150, PAGES = 2 * RUNS + 8 };
	size_t ps = t_page_size(), len = PAGES * ps;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN, false);
	struct fl_range *runs = calloc(RUNS + 1, sizeof(*runs));
	void *next = NULL;
	uint8_t *p = t_map_anon(len);
	int pm, r;

	T_ASSERT(runs != NULL);
	T_ASSERT_OK(fl_pagemap_open(0, &pm));
	T_ASSERT_OK(fl_uffd_register(u, p, len, FL_REGISTER_WP, NULL));
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, len, FL_RESOLVE_WP));
	/* Runs of one page at every other page, then a last run of four pages. */
	for (size_t i = 0; i < RUNS - 1; i++)
		p[2 * i * ps] = (uint8_t)i;
	t_fill(p + (PAGES - 4) * ps, 4 * ps, 'L');

	r = fl_pagemap_scan_written(pm, p, len, 0, runs, RUNS + 1, &next);
	T_ASSERT_EQ(r, RUNS);
	T_ASSERT_EQ(next, p + len);
	for (size_t i = 0; i < RUNS - 1; i++) {
		T_ASSERT_EQ(runs[i].start, p + 2 * i * ps);
		T_ASSERT_EQ(runs[i].end, p + (2 * i + 1) * ps);
	}
	T_ASSERT_EQ(runs[RUNS - 1].start, p + (PAGES - 4) * ps);
	T_ASSERT_EQ(runs[RUNS - 1].end, p + len);

	/* Stopping after 100 runs: *ret_next says where the 101st begins at the latest. */
	r = fl_pagemap_scan_written(pm, p, len, FL_SCAN_REPROTECT, runs, 100, &next);
	T_ASSERT_EQ(r, 100);
	T_ASSERT((uint8_t *)next >= p + 199 * ps && (uint8_t *)next <= p + 200 * ps);
	r = fl_pagemap_scan_written(pm, next, (size_t)(p + len - (uint8_t *)next),
				    FL_SCAN_REPROTECT, runs, RUNS, &next);
	T_ASSERT_EQ(r, RUNS - 100);
	T_ASSERT_EQ(runs[0].start, p + 200 * ps);
	T_ASSERT_EQ(runs[r - 1].end, p + len);
	T_ASSERT_EQ(next, p + len);
	r = fl_pagemap_scan_written(pm, p, len, 0, runs, RUNS, &next);
	T_ASSERT_EQ(r, 0);
	free(runs);
	close(pm);
	fl_uffd_close(u);
}
