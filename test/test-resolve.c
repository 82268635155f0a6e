/* SPDX-License-Identifier: MIT */
/* Resolving faults: COPY, ZEROPAGE, CONTINUE, MOVE, POISON, partial progress, SIGBUS, ESRCH. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "tests.h"

#define HPAGE ((size_t)2 << 20)

/* A recognisable page: every byte depends on its offset and on @seed. */
static void pattern(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 12));
}

static bool present(const void *p)
{
	return (t_pagemap(p) & T_PM_PRESENT) != 0;
}

/*
 * MISSING faults on two pages of @type: a read fault resolved by COPY, then a
 * write fault resolved by ZEROPAGE (which hugetlbfs cannot do).
 */
static void copy_and_zeropage(enum fl_mem_type type, uint64_t feats)
{
	size_t ps = t_mem_page_size(type), done = 1;
	struct fl_uffd *u = t_uffd_open(feats, false);
	uint8_t *p, *src = t_map_anon(ps), *view = NULL;
	struct t_access a;
	struct fl_event ev;
	uint32_t io = 0;
	int fd;

	p = t_map_mem(type, 2 * ps, &fd);
	if (fd >= 0)
		view = t_map_fd(fd, 2 * ps);	/* unregistered: shows the page cache */
	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING, &io));
	T_ASSERT(io & FL_IOCTL_COPY);
	T_ASSERT(io & FL_IOCTL_WAKE);

	pattern(src, ps, 0x11);
	t_access_start(&a, p + 100, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);	/* page-aligned (huge-page-aligned on hugetlbfs) */
	T_ASSERT_EQ(ev.flags, 0);	/* a read of a missing page */
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT_EQ(t_access_join(&a), src[100]);
	T_ASSERT(!memcmp(p, src, ps));
	if (view)
		T_ASSERT(!memcmp(view, src, ps));

	if (type == FL_MEM_HUGETLB) {
		/* hugetlbfs has no zero page: not offered at register, refused as invalid. */
		T_ASSERT_EQ(io & FL_IOCTL_ZEROPAGE, 0);
		done = 1;
		T_ASSERT_ERR(fl_uffd_zeropage(u, p + ps, ps, 0, &done), EINVAL);
		T_ASSERT_EQ(done, 0);
		T_ASSERT(!present(p + ps));
		return;
	}
	T_ASSERT(io & FL_IOCTL_ZEROPAGE);
	t_access_start(&a, p + ps + 5, true, 0x5a);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p + ps);
	T_ASSERT_EQ(ev.flags, FL_FAULT_WRITE);
	done = 1;
	T_ASSERT_OK(fl_uffd_zeropage(u, p + ps, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	/* The retried write lands on the zeroed page (on anon: a CoW of the zero page). */
	T_ASSERT_EQ(t_access_join(&a), 0x5a);
	T_ASSERT(t_all(p + ps, 5, 0));
	T_ASSERT(t_all(p + ps + 6, ps - 6, 0));
	if (view)
		T_ASSERT(view[ps + 5] == 0x5a && t_all(view + ps, 5, 0));
	fl_uffd_close(u);
}

TEST(resolve_copy_zeropage_anon)
{
	copy_and_zeropage(FL_MEM_ANON, 0);
}

TEST(resolve_copy_zeropage_shmem)
{
	copy_and_zeropage(FL_MEM_SHMEM, FL_FEAT_MISSING_SHMEM);
}

TEST(resolve_copy_zeropage_hugetlb)
{
	copy_and_zeropage(FL_MEM_HUGETLB, FL_FEAT_MISSING_HUGETLBFS);
}

/* THREAD_ID and EXACT_ADDRESS: the fault names the faulting thread and the very byte. */
TEST(resolve_fault_tid_exact_address)
{
	size_t ps = t_page_size();
	struct fl_uffd *u = t_uffd_open(FL_FEAT_THREAD_ID | FL_FEAT_EXACT_ADDRESS, false);
	uint8_t *p = t_map_anon(ps);
	struct t_access a;
	struct fl_event ev;

	T_ASSERT_OK(fl_uffd_register(u, p, ps, FL_REGISTER_MISSING, NULL));
	t_access_start(&a, p + 1234, true, 'T');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p + 1234);
	T_ASSERT_EQ(ev.flags, FL_FAULT_WRITE);
	T_ASSERT_EQ(ev.fault.tid, __atomic_load_n(&a.kernel_tid, __ATOMIC_SEQ_CST));
	T_ASSERT_NE(ev.fault.tid, gettid());
	T_ASSERT_OK(fl_uffd_zeropage(u, p, ps, 0, NULL));
	T_ASSERT_EQ(t_access_join(&a), 'T');
	fl_uffd_close(u);
}

/* Unregistering, or closing the uffd, releases a blocked faulter onto an ordinary page. */
TEST(resolve_unregister_and_close_wake)
{
	size_t ps = t_page_size();
	struct fl_uffd *u = t_uffd_open(0, false);
	uint8_t *p = t_map_anon(2 * ps);
	struct t_access a;
	struct fl_event ev;

	T_ASSERT_OK(fl_uffd_register(u, p, ps, FL_REGISTER_MISSING, NULL));
	T_ASSERT_OK(fl_uffd_register(u, p + ps, ps, FL_REGISTER_MISSING, NULL));
	t_access_start(&a, p + 3, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	T_ASSERT_OK(fl_uffd_unregister(u, p, ps));
	T_ASSERT_EQ(t_access_join(&a), 0);

	t_access_start(&a, p + ps + 3, true, 'c');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p + ps);
	fl_uffd_close(u);
	T_ASSERT_EQ(t_access_join(&a), 'c');
	T_ASSERT(t_all(p + ps, 3, 0) && t_all(p + ps + 4, ps - 4, 0));
}

TEST(resolve_copy_partial_eexist)
{
	size_t ps = t_page_size(), done;
	struct fl_uffd *u = t_uffd_open(0, false);
	uint8_t *p = t_map_anon(4 * ps), *src = t_map_anon(4 * ps), *other = t_map_anon(ps);

	T_ASSERT_OK(fl_uffd_register(u, p, 4 * ps, FL_REGISTER_MISSING, NULL));
	for (size_t i = 0; i < 4; i++)
		t_fill(src + i * ps, ps, (uint8_t)('a' + i));
	t_fill(other, ps, 'X');
	T_ASSERT_OK(fl_uffd_copy(u, p + 2 * ps, other, ps, 0, NULL));

	/* Four pages, the third already there: two installed, then "already there". */
	done = 12345;
	T_ASSERT_ERR(fl_uffd_copy(u, p, src, 4 * ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 2 * ps);
	T_ASSERT(t_all(p, ps, 'a'));
	T_ASSERT(t_all(p + ps, ps, 'b'));
	T_ASSERT(t_all(p + 2 * ps, ps, 'X'));	/* untouched */
	T_ASSERT(!present(p + 3 * ps));		/* nothing past the stop */

	/* Onto a present page: nothing done. */
	done = 12345;
	T_ASSERT_ERR(fl_uffd_copy(u, p + ps, src, ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 0);
	T_ASSERT(t_all(p + ps, ps, 'b'));
	T_ASSERT_ERR(fl_uffd_copy(u, p, src, ps, 0, NULL), EEXIST);
	done = 12345;
	T_ASSERT_ERR(fl_uffd_zeropage(u, p, 2 * ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 0);

	/* The page past the stop is still missing and resolvable. */
	done = 12345;
	T_ASSERT_OK(fl_uffd_zeropage(u, p + 3 * ps, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT(t_all(p + 3 * ps, ps, 0));
	fl_uffd_close(u);
}

TEST(resolve_zeropage_partial_eexist)
{
	size_t ps = t_page_size(), done;
	struct fl_uffd *u = t_uffd_open(0, false);
	uint8_t *p = t_map_anon(4 * ps), *src = t_map_anon(ps);

	T_ASSERT_OK(fl_uffd_register(u, p, 4 * ps, FL_REGISTER_MISSING, NULL));
	t_fill(src, ps, 'Z');
	T_ASSERT_OK(fl_uffd_copy(u, p + 2 * ps, src, ps, 0, NULL));
	done = 12345;
	T_ASSERT_ERR(fl_uffd_zeropage(u, p, 4 * ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 2 * ps);
	T_ASSERT(present(p) && present(p + ps));
	T_ASSERT(!present(p + 3 * ps));
	T_ASSERT(t_all(p, 2 * ps, 0));
	T_ASSERT(t_all(p + 2 * ps, ps, 'Z'));
	fl_uffd_close(u);
}

TEST(resolve_dontwake_then_wake)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_uffd *u = t_uffd_open(0, false);
	uint8_t *p = t_map_anon(2 * ps), *src = t_map_anon(ps);
	struct t_access a;
	struct fl_event ev;

	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING, NULL));
	pattern(src, ps, 0x33);
	t_access_start(&a, p + 7, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, FL_RESOLVE_DONTWAKE, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT(present(p));
	T_ASSERT(!memcmp(p, src, ps));
	/* The page is there but nobody woke the reader. */
	T_ASSERT(!t_access_finished(&a));
	/* Waking another range does not release it either. */
	T_ASSERT_OK(fl_uffd_wake(u, p + ps, ps));
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_OK(fl_uffd_wake(u, p, ps));
	T_ASSERT_EQ(t_access_join(&a), src[7]);
	fl_uffd_close(u);
}

TEST(resolve_flags_einval)
{
	size_t ps = t_page_size(), done;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_PAGEFAULT_FLAG_WP, false);
	uint8_t *p = t_map_anon(2 * ps), *src = t_map_anon(2 * ps);
	const uint32_t unknown = 1u << 9;

	t_fill(src, 2 * ps, 's');
	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING | FL_REGISTER_WP, NULL));

	/* Protecting never wakes anyone: WP with DONTWAKE is refused. */
	T_ASSERT_ERR(fl_uffd_writeprotect(u, p, ps, FL_RESOLVE_WP | FL_RESOLVE_DONTWAKE), EINVAL);
	T_ASSERT_ERR(fl_uffd_writeprotect(u, p, ps, FL_RESOLVE_ALLOW_SRC_HOLES), EINVAL);
	T_ASSERT_ERR(fl_uffd_writeprotect(u, p, ps, unknown), EINVAL);
	T_ASSERT_ERR(fl_uffd_writeprotect(u, p, 0, FL_RESOLVE_WP), EINVAL);
	T_ASSERT_ERR(fl_uffd_writeprotect(NULL, p, ps, FL_RESOLVE_WP), EINVAL);

	/* Each resolve call accepts only its own flags, and always writes *ret_done. */
#define EINVAL_DONE0(call)                              \
	do {                                            \
		done = 12345;                           \
		T_ASSERT_ERR(call, EINVAL);             \
		T_ASSERT_EQ(done, 0);                   \
	} while (0)
	EINVAL_DONE0(fl_uffd_copy(u, p, src, ps, FL_RESOLVE_ALLOW_SRC_HOLES, &done));
	EINVAL_DONE0(fl_uffd_copy(u, p, src, ps, unknown, &done));
	EINVAL_DONE0(fl_uffd_copy(u, p, src, 0, 0, &done));
	EINVAL_DONE0(fl_uffd_copy(NULL, p, src, ps, 0, &done));
	EINVAL_DONE0(fl_uffd_zeropage(u, p, ps, FL_RESOLVE_WP, &done));
	EINVAL_DONE0(fl_uffd_zeropage(u, p, ps, FL_RESOLVE_ALLOW_SRC_HOLES, &done));
	EINVAL_DONE0(fl_uffd_continue(u, p, ps, FL_RESOLVE_ALLOW_SRC_HOLES, &done));
	EINVAL_DONE0(fl_uffd_continue(u, p, ps, unknown, &done));
	EINVAL_DONE0(fl_uffd_move(u, p, src, ps, FL_RESOLVE_WP, &done));
	EINVAL_DONE0(fl_uffd_move(u, p, src, ps, unknown, &done));
	EINVAL_DONE0(fl_uffd_poison(u, p, ps, FL_RESOLVE_WP, &done));
	EINVAL_DONE0(fl_uffd_poison(u, p, ps, FL_RESOLVE_ALLOW_SRC_HOLES, &done));
	/* The kernel's own checks: an unaligned destination or length. */
	EINVAL_DONE0(fl_uffd_copy(u, p + 1, src, ps, 0, &done));
	EINVAL_DONE0(fl_uffd_copy(u, p, src, ps + 1, 0, &done));
	EINVAL_DONE0(fl_uffd_zeropage(u, p + 8, ps, 0, &done));
	T_ASSERT_ERR(fl_uffd_wake(u, p, 0), EINVAL);
	T_ASSERT_ERR(fl_uffd_wake(NULL, p, ps), EINVAL);
	T_ASSERT(!present(p) && !present(p + ps));	/* none of these did anything */

	/* The same range takes valid flags. */
	done = 0;
	T_ASSERT_OK(fl_uffd_copy(u, p, src, 2 * ps, FL_RESOLVE_WP | FL_RESOLVE_DONTWAKE, &done));
	T_ASSERT_EQ(done, 2 * ps);
	T_ASSERT(t_pagemap(p) & T_PM_UFFD_WP);
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, 2 * ps, FL_RESOLVE_DONTWAKE));
	T_ASSERT_EQ(t_pagemap(p) & T_PM_UFFD_WP, 0);
	T_ASSERT_OK(fl_uffd_writeprotect(u, p, 2 * ps, FL_RESOLVE_WP));
	T_ASSERT(t_pagemap(p + ps) & T_PM_UFFD_WP);

	/* A registered range is required: elsewhere the range "is gone". */
	T_ASSERT_ERR(fl_uffd_copy(u, src, p, ps, 0, &done), ENOENT);
	T_ASSERT_EQ(done, 0);
	/* Mapping write-protected needs a range registered for WP. */
	T_ASSERT_OK(fl_uffd_register(u, src, ps, FL_REGISTER_MISSING, NULL));
	T_ASSERT_SYS(madvise(src, ps, MADV_DONTNEED));
	EINVAL_DONE0(fl_uffd_copy(u, src, p, ps, FL_RESOLVE_WP, &done));
	T_ASSERT(!present(src));
#undef EINVAL_DONE0
	fl_uffd_close(u);
}

/*
 * MINOR faults on @type: the page cache is filled through a second,
 * unregistered mapping; the registered one faults with FL_FAULT_MINOR and
 * CONTINUE maps the cached page.
 */
static void minor_continue(enum fl_mem_type type, uint64_t feats)
{
	size_t ps = t_mem_page_size(type), done;
	struct fl_uffd *u = t_uffd_open(feats, false);
	uint8_t *p, *view;
	struct t_access a;
	struct fl_event ev;
	uint32_t io = 0;
	int fd;

	p = t_map_mem(type, 3 * ps, &fd);
	view = t_map_fd(fd, 3 * ps);
	T_ASSERT_OK(fl_uffd_register(u, p, 3 * ps, FL_REGISTER_MINOR, &io));
	T_ASSERT(io & FL_IOCTL_CONTINUE);
	pattern(view, ps, 0x44);	/* page 0 into the page cache, not into @p */
	t_fill(view + ps, ps, 'm');
	T_ASSERT(!present(p));

	/* A read deep inside the page reports the page's start. */
	t_access_start(&a, p + ps / 2 + 5, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	T_ASSERT_EQ(ev.flags, FL_FAULT_MINOR);
	T_ASSERT(!t_access_finished(&a));
	done = 0;
	T_ASSERT_OK(fl_uffd_continue(u, p, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT_EQ(t_access_join(&a), view[ps / 2 + 5]);
	T_ASSERT(!memcmp(p, view, ps));

	/* A write fault: MINOR|WRITE, and the write lands in the shared page. */
	t_access_start(&a, p + ps + 1, true, 'W');
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p + ps);
	T_ASSERT_EQ(ev.flags, FL_FAULT_MINOR | FL_FAULT_WRITE);
	T_ASSERT_OK(fl_uffd_continue(u, p + ps, ps, 0, NULL));
	T_ASSERT_EQ(t_access_join(&a), 'W');
	T_ASSERT_EQ(view[ps + 1], 'W');
	T_ASSERT(t_all(view + ps + 2, ps - 2, 'm'));

	/* Continuing a mapped page: already there. Nothing in the page cache: EFAULT. */
	done = 1;
	T_ASSERT_ERR(fl_uffd_continue(u, p, ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 0);
	done = 1;
	T_ASSERT_ERR(fl_uffd_continue(u, p + 2 * ps, ps, 0, &done), EFAULT);
	T_ASSERT_EQ(done, 0);
	fl_uffd_close(u);
}

TEST(resolve_minor_continue_shmem)
{
	minor_continue(FL_MEM_SHMEM, FL_FEAT_MINOR_SHMEM);
}

TEST(resolve_minor_continue_hugetlb)
{
	minor_continue(FL_MEM_HUGETLB, FL_FEAT_MINOR_HUGETLBFS);
}

TEST(resolve_move_pages)
{
	size_t ps = t_page_size(), done;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_MOVE, false);
	uint8_t *src = t_map_anon(4 * ps), *dst = t_map_anon(4 * ps);
	struct t_access a;
	struct fl_event ev;
	uint32_t io = 0;

	for (size_t i = 0; i < 4; i++)
		t_fill(src + i * ps, ps, (uint8_t)('A' + i));
	T_ASSERT_OK(fl_uffd_register(u, dst, 4 * ps, FL_REGISTER_MISSING, &io));
	T_ASSERT(io & FL_IOCTL_MOVE);

	/* A fault resolved by moving two pages: the source loses them. */
	t_access_start(&a, dst + 9, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, dst);
	done = 0;
	T_ASSERT_OK(fl_uffd_move(u, dst, src, 2 * ps, 0, &done));
	T_ASSERT_EQ(done, 2 * ps);
	T_ASSERT_EQ(t_access_join(&a), 'A');
	T_ASSERT(t_all(dst, ps, 'A'));
	T_ASSERT(t_all(dst + ps, ps, 'B'));
	T_ASSERT(!present(src) && !present(src + ps));
	T_ASSERT(present(src + 2 * ps));

	/* Onto a present page: already there, the source keeps its page. */
	done = 1;
	T_ASSERT_ERR(fl_uffd_move(u, dst + ps, src + 2 * ps, ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 0);
	T_ASSERT(t_all(src + 2 * ps, ps, 'C'));
	T_ASSERT(t_all(dst + ps, ps, 'B'));

	/* From a hole: ENOENT, unless holes are allowed (then nothing is mapped). */
	done = 1;
	T_ASSERT_ERR(fl_uffd_move(u, dst + 2 * ps, src, ps, 0, &done), ENOENT);
	T_ASSERT_EQ(done, 0);
	done = 0;
	T_ASSERT_OK(fl_uffd_move(u, dst + 2 * ps, src, ps, FL_RESOLVE_ALLOW_SRC_HOLES, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT(!present(dst + 2 * ps));

	T_ASSERT_OK(fl_uffd_move(u, dst + 2 * ps, src + 2 * ps, 2 * ps, 0, NULL));
	T_ASSERT(t_all(dst + 2 * ps, ps, 'C'));
	T_ASSERT(t_all(dst + 3 * ps, ps, 'D'));
	T_ASSERT(!present(src + 2 * ps) && !present(src + 3 * ps));
	T_ASSERT(t_all(src, 4 * ps, 0));	/* unregistered: the holes read as zeros */
	fl_uffd_close(u);
}

TEST(resolve_move_thp)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_features f;
	struct fl_uffd *u;
	uint8_t *src, *dst;
	long kb;

	fl_probe(&f);
	if (!f.thp)
		T_SKIP("transparent huge pages are disabled here");
	u = t_uffd_open(FL_FEAT_MOVE, false);
	src = t_map_aligned(HPAGE, HPAGE);
	dst = t_map_aligned(HPAGE, HPAGE);
	T_ASSERT_SYS(madvise(src, HPAGE, MADV_HUGEPAGE));
	for (size_t i = 0; i < HPAGE / ps; i++)
		t_fill(src + i * ps, ps, (uint8_t)(i + 1));
	kb = t_smaps_kb(src, "AnonHugePages");
	if (kb < (long)(HPAGE >> 10))
		T_SKIP("the kernel did not back the source with a THP (AnonHugePages: %ld kB)", kb);

	T_ASSERT_OK(fl_uffd_register(u, dst, HPAGE, FL_REGISTER_MISSING, NULL));
	T_ASSERT_OK(fl_uffd_move(u, dst, src, HPAGE, 0, &done));
	T_ASSERT_EQ(done, HPAGE);
	for (size_t i = 0; i < HPAGE / ps; i++)
		T_ASSERT(t_all(dst + i * ps, ps, (uint8_t)(i + 1)));
	/* The whole huge page moved: the destination is backed by it, the source is empty. */
	T_ASSERT_EQ(t_smaps_kb(dst, "AnonHugePages"), HPAGE >> 10);
	T_ASSERT_EQ(t_smaps_kb(src, "AnonHugePages"), 0);
	T_ASSERT(!present(src) && !present(src + HPAGE - ps));
	fl_uffd_close(u);
}

static void touch_page(void *arg)
{
	volatile uint8_t *p = arg;

	signal(SIGBUS, SIG_DFL);	/* die of it, even under a sanitizer's handler */
	(void)*p;
}

TEST(resolve_poison_sigbus)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_POISON, false);
	uint8_t *p = t_map_anon(2 * ps), *src = t_map_anon(ps);
	uint32_t io = 0;
	int st;

	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING, &io));
	T_ASSERT(io & FL_IOCTL_POISON);
	T_ASSERT_OK(fl_uffd_poison(u, p, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	done = 1;
	T_ASSERT_ERR(fl_uffd_poison(u, p, ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 0);

	st = t_run_child(touch_page, p);
	T_ASSERT(WIFSIGNALED(st));
	T_ASSERT_EQ(WTERMSIG(st), SIGBUS);
	/* Only that page: its unpoisoned neighbour is an ordinary page in the child. */
	st = t_run_child(touch_page, p + ps);
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	/* ZEROPAGE will not replace the poison marker, but COPY does, and heals the page. */
	done = 1;
	T_ASSERT_ERR(fl_uffd_zeropage(u, p, ps, 0, &done), EEXIST);
	T_ASSERT_EQ(done, 0);
	t_fill(src, ps, 'h');
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT(t_all(p, ps, 'h'));
	st = t_run_child(touch_page, p);
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	fl_uffd_close(u);
}

static sigjmp_buf bus_jmp;
static void *volatile bus_addr;
static volatile int bus_code;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	bus_addr = si->si_addr;
	bus_code = si->si_code;
	siglongjmp(bus_jmp, 1);
}

TEST(resolve_sigbus_feature)
{
	size_t ps = t_page_size();
	struct fl_uffd *u = t_uffd_open(FL_FEAT_SIGBUS, true);
	uint8_t *p = t_map_anon(2 * ps), *src = t_map_anon(ps);
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl_event ev;
	char buf[4];
	int pfd[2];

	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING, NULL));
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));

	/* A user-space access: SIGBUS at the exact address, no event queued. */
	if (sigsetjmp(bus_jmp, 1) == 0) {
		(void)*(volatile uint8_t *)(p + 10);
		T_ASSERT(!"a missing registered page did not raise SIGBUS");
	}
	T_ASSERT_EQ(bus_addr, p + 10);
	T_ASSERT_EQ(bus_code, BUS_ADRERR);
	T_ASSERT_ERR(fl_uffd_read_events(u, &ev, 1), EAGAIN);

	/* A kernel access (a syscall writing into or reading from the page): EFAULT. */
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	T_ASSERT_EQ(write(pfd[1], "xyz", 3), 3);
	errno = 0;
	T_ASSERT_EQ(read(pfd[0], p + ps, 3), -1);
	T_ASSERT_EQ(errno, EFAULT);
	errno = 0;
	T_ASSERT_EQ(write(pfd[1], p, 3), -1);
	T_ASSERT_EQ(errno, EFAULT);
	T_ASSERT_ERR(fl_uffd_read_events(u, &ev, 1), EAGAIN);

	/* Once resolved, both work; the pipe kept the bytes the failed read did not take. */
	t_fill(src, ps, 'S');
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, NULL));
	T_ASSERT_OK(fl_uffd_zeropage(u, p + ps, ps, 0, NULL));
	T_ASSERT_EQ(p[10], 'S');
	T_ASSERT_EQ(read(pfd[0], p + ps, 3), 3);
	T_ASSERT(!memcmp(p + ps, "xyz", 3));
	T_ASSERT_EQ(write(pfd[1], p, 3), 3);
	T_ASSERT_EQ(read(pfd[0], buf, 3), 3);
	T_ASSERT(!memcmp(buf, "SSS", 3));
	fl_uffd_close(u);
}

/* In a child: open a uffd, register a page, hand both to the parent, exit. */
static void esrch_child(void *arg)
{
	int sock = *(int *)arg;
	size_t ps = t_page_size();
	struct fl_uffd *u = t_uffd_open(0, false);
	uint8_t *p = t_map_anon(ps);
	uintptr_t addr = (uintptr_t)p;
	int fd = fl_uffd_fd(u);
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c = { 0 };
	struct iovec iov = { .iov_base = &addr, .iov_len = sizeof(addr) };
	struct msghdr m = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = c.buf,
		.msg_controllen = sizeof(c.buf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

	T_ASSERT_OK(fl_uffd_register(u, p, ps, FL_REGISTER_MISSING, NULL));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	T_ASSERT_EQ(sendmsg(sock, &m, 0), (ssize_t)sizeof(addr));
}

TEST(resolve_esrch_after_exit)
{
	size_t ps = t_page_size(), done;
	uint8_t *src = t_map_anon(ps);
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c = { 0 };
	uintptr_t addr = 0;
	struct iovec iov = { .iov_base = &addr, .iov_len = sizeof(addr) };
	struct msghdr m = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = c.buf,
		.msg_controllen = sizeof(c.buf),
	};
	struct fl_uffd *u = NULL;
	struct cmsghdr *cm;
	int sv[2], st, fd = -1;

	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	st = t_run_child(esrch_child, &sv[1]);	/* returns once the child is reaped */
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	T_ASSERT_EQ(recvmsg(sv[0], &m, MSG_CMSG_CLOEXEC), (ssize_t)sizeof(addr));
	cm = CMSG_FIRSTHDR(&m);
	T_ASSERT(cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS);
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	T_ASSERT(fd >= 0 && addr != 0);
	T_ASSERT_OK(fl_uffd_take(fd, 0, 0, &u));

	t_fill(src, ps, 'e');
	done = 1;
	T_ASSERT_ERR(fl_uffd_copy(u, (void *)addr, src, ps, 0, &done), ESRCH);
	T_ASSERT_EQ(done, 0);
	done = 1;
	T_ASSERT_ERR(fl_uffd_zeropage(u, (void *)addr, ps, 0, &done), ESRCH);
	T_ASSERT_EQ(done, 0);
	fl_uffd_close(u);
	close(sv[0]);
	close(sv[1]);
}

/*
 * The shared "poison what is absent" helper: a present page in the middle of
 * the run and a page outside any registered range (the kernel refuses a
 * request crossing it as a whole) are stepped over; every other page is
 * poisoned, the present one keeps its bytes.
 */
TEST(resolve_poison_absent_runs)
{
	size_t ps = t_page_size();
	struct fl_uffd *u = t_uffd_open(FL_FEAT_POISON, false);
	uint8_t *p = t_map_anon(12 * ps), *src = t_map_anon(ps);
	struct fl__poison_opts o = { .step = ps };
	uint64_t poisoned = 0;
	int st;

	/* [0, 8) and [9, 12) registered; page 8 is not (a separate mapping). */
	T_ASSERT_OK(fl_uffd_register(u, p, 8 * ps, FL_REGISTER_MISSING, NULL));
	T_ASSERT_OK(fl_uffd_register(u, p + 9 * ps, 3 * ps, FL_REGISTER_MISSING, NULL));
	t_fill(src, ps, 'm');
	T_ASSERT_OK(fl_uffd_copy(u, p + 3 * ps, src, ps, 0, NULL));

	T_ASSERT_OK(fl__uffd_poison_absent(u, (uintptr_t)p, 12 * ps, &o, &poisoned));
	T_ASSERT_EQ(poisoned, 10 * ps);
	T_ASSERT(t_all(p + 3 * ps, ps, 'm'));
	for (size_t i = 0; i < 12; i++) {
		st = t_run_child(touch_page, p + i * ps);
		if (i == 3 || i == 8) {
			T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		} else {
			T_ASSERT(WIFSIGNALED(st));
			T_ASSERT_EQ(WTERMSIG(st), SIGBUS);
		}
	}
	/* Nothing absent is left: a second pass poisons nothing and succeeds. */
	poisoned = 0;
	T_ASSERT_OK(fl__uffd_poison_absent(u, (uintptr_t)p, 12 * ps, &o, &poisoned));
	T_ASSERT_EQ(poisoned, 0);
	T_ASSERT_ERR(fl__uffd_poison_absent(u, (uintptr_t)p + 1, ps, &o, NULL), EINVAL);
	fl_uffd_close(u);
}
