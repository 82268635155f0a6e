/* SPDX-License-Identifier: MIT */
/* userfaultfd and pagemap definitions that old linux/ uapi headers (Debian 12: 6.1) lack. */
#ifndef FL_UFFD_COMPAT_H
#define FL_UFFD_COMPAT_H

#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

/*
 * Each definition stands behind its own #ifndef so that newer headers win.
 * The whole file can go once the oldest supported build host ships 6.8
 * uapi headers (pagemap: 6.7).
 */

#ifndef UFFD_USER_MODE_ONLY		/* 5.11 */
#define UFFD_USER_MODE_ONLY 1
#endif

#ifndef USERFAULTFD_IOC			/* 6.1 */
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef USERFAULTFD_IOC_NEW		/* 6.1 */
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

#ifndef UFFD_FEATURE_WP_UNPOPULATED	/* 6.4 */
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON		/* 6.6 */
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC		/* 6.7 */
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE		/* 6.8 */
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

#ifndef UFFDIO_CONTINUE_MODE_WP		/* 6.3 */
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

/* UFFDIO_MOVE, 6.8 */
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* UFFDIO_POISON, 6.6 */
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* PAGEMAP_SCAN on /proc/PID/pagemap, 6.7 (<linux/fs.h>) */
#ifndef PAGEMAP_SCAN
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

_Static_assert(sizeof(struct uffd_msg) == 32, "uffd_msg is 32 bytes");
_Static_assert(sizeof(struct uffdio_api) == 24, "uffdio_api is 24 bytes");
_Static_assert(sizeof(struct uffdio_register) == 32, "uffdio_register is 32 bytes");
_Static_assert(sizeof(struct uffdio_copy) == 40, "uffdio_copy is 40 bytes");
_Static_assert(sizeof(struct uffdio_zeropage) == 32, "uffdio_zeropage is 32 bytes");
_Static_assert(sizeof(struct uffdio_continue) == 32, "uffdio_continue is 32 bytes");
_Static_assert(sizeof(struct uffdio_writeprotect) == 24, "uffdio_writeprotect is 24 bytes");
_Static_assert(sizeof(struct uffdio_move) == 40, "uffdio_move is 40 bytes");
_Static_assert(sizeof(struct uffdio_poison) == 32, "uffdio_poison is 32 bytes");
_Static_assert(sizeof(struct page_region) == 24, "page_region is 24 bytes");
_Static_assert(sizeof(struct pm_scan_arg) == 96, "pm_scan_arg is 96 bytes");

#endif /* FL_UFFD_COMPAT_H */
