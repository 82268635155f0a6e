/* SPDX-License-Identifier: MIT */
/* PAGEMAP_SCAN: which pages of a WP_ASYNC range were written, optionally re-protecting them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "faultline.h"
#include "compat.h"
#include "internal.h"

#define CHUNK 64

FL_API int fl_pagemap_open(pid_t pid, int *ret_fd)
{
	char path[64];
	int fd;

	if (!ret_fd || pid < 0)
		return fl__einval(__func__, "%s", !ret_fd ? "ret_fd is NULL" : "pid is negative");
	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/pagemap");
	else
		snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

FL_API int fl_pagemap_scan_written(int pagemap_fd, void *addr, size_t len, uint32_t flags,
				   struct fl_range *ranges, size_t n, void **ret_next)
{
	uint64_t start = (uintptr_t)addr, end = start + len, cur = start;
	size_t ps = fl__page_size(), filled = 0;
	struct page_region vec[CHUNK];

	if (pagemap_fd < 0)
		return -EBADF;
	if (!len || (!ranges && n) || (flags & ~(uint32_t)FL_SCAN_REPROTECT) ||
	    start % ps || len % ps || end < start)
		return fl__einval(__func__, "%s", !len ? "len is 0" :
				  !ranges && n ? "ranges is NULL but n is not 0" :
				  flags & ~(uint32_t)FL_SCAN_REPROTECT ? "unknown flags" :
				  end < start ? "the range wraps around" :
				  "addr or len is not a multiple of the page size");

	while (cur < end && filled < n) {
		size_t want = n - filled < CHUNK ? n - filled : CHUNK;
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.flags = flags & FL_SCAN_REPROTECT ?
					 PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : 0,
			.start = cur,
			.end = end,
			.vec = (uintptr_t)vec,
			.vec_len = want,
			.category_mask = PAGE_IS_WRITTEN,
			.return_mask = PAGE_IS_WRITTEN,
		};
		int got = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);

		if (got < 0)
			return errno == ENOTTY ? -EOPNOTSUPP : -errno;
		if ((size_t)got > want || arg.walk_end < cur || arg.walk_end > end)
			return -EIO;	/* the kernel never does this; do not trust it blindly */
		for (int i = 0; i < got; i++) {
			void *s = (void *)(uintptr_t)vec[i].start, *e = (void *)(uintptr_t)vec[i].end;

			if (filled && ranges[filled - 1].end == s)
				ranges[filled - 1].end = e;	/* joined across chunks */
			else
				ranges[filled++] = (struct fl_range){ s, e };
		}
		cur = arg.walk_end;
		if ((size_t)got < want)
			break;	/* the kernel walked as far as it could */
	}
	if (ret_next)
		*ret_next = (void *)(uintptr_t)cur;
	return (int)filled;
}
