/* SPDX-License-Identifier: MIT */
/* Translation between faultline's feature/ioctl bits and the kernel's, and their names. */
#include <stddef.h>

#include "faultline.h"
#include "compat.h"
#include "internal.h"

static const struct {
	uint64_t fl;
	uint64_t kernel;
	const char *name;
} feats[] = {
	{ FL_FEAT_PAGEFAULT_FLAG_WP, UFFD_FEATURE_PAGEFAULT_FLAG_WP, "pagefault_flag_wp" },
	{ FL_FEAT_EVENT_FORK, UFFD_FEATURE_EVENT_FORK, "event_fork" },
	{ FL_FEAT_EVENT_REMAP, UFFD_FEATURE_EVENT_REMAP, "event_remap" },
	{ FL_FEAT_EVENT_REMOVE, UFFD_FEATURE_EVENT_REMOVE, "event_remove" },
	{ FL_FEAT_EVENT_UNMAP, UFFD_FEATURE_EVENT_UNMAP, "event_unmap" },
	{ FL_FEAT_MISSING_HUGETLBFS, UFFD_FEATURE_MISSING_HUGETLBFS, "missing_hugetlbfs" },
	{ FL_FEAT_MISSING_SHMEM, UFFD_FEATURE_MISSING_SHMEM, "missing_shmem" },
	{ FL_FEAT_SIGBUS, UFFD_FEATURE_SIGBUS, "sigbus" },
	{ FL_FEAT_THREAD_ID, UFFD_FEATURE_THREAD_ID, "thread_id" },
	{ FL_FEAT_MINOR_HUGETLBFS, UFFD_FEATURE_MINOR_HUGETLBFS, "minor_hugetlbfs" },
	{ FL_FEAT_MINOR_SHMEM, UFFD_FEATURE_MINOR_SHMEM, "minor_shmem" },
	{ FL_FEAT_EXACT_ADDRESS, UFFD_FEATURE_EXACT_ADDRESS, "exact_address" },
	{ FL_FEAT_WP_HUGETLBFS_SHMEM, UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "wp_hugetlbfs_shmem" },
	{ FL_FEAT_WP_UNPOPULATED, UFFD_FEATURE_WP_UNPOPULATED, "wp_unpopulated" },
	{ FL_FEAT_POISON, UFFD_FEATURE_POISON, "poison" },
	{ FL_FEAT_WP_ASYNC, UFFD_FEATURE_WP_ASYNC, "wp_async" },
	{ FL_FEAT_MOVE, UFFD_FEATURE_MOVE, "move" },
	{ FL_FEAT_PAGEMAP_SCAN, 0, "pagemap_scan" },	/* not a handshake feature */
};

static const struct {
	uint32_t fl;
	unsigned int nr;
	const char *name;
} ioctls[] = {
	{ FL_IOCTL_WAKE, _UFFDIO_WAKE, "wake" },
	{ FL_IOCTL_COPY, _UFFDIO_COPY, "copy" },
	{ FL_IOCTL_ZEROPAGE, _UFFDIO_ZEROPAGE, "zeropage" },
	{ FL_IOCTL_WRITEPROTECT, _UFFDIO_WRITEPROTECT, "writeprotect" },
	{ FL_IOCTL_CONTINUE, _UFFDIO_CONTINUE, "continue" },
	{ FL_IOCTL_MOVE, _UFFDIO_MOVE, "move" },
	{ FL_IOCTL_POISON, _UFFDIO_POISON, "poison" },
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

uint64_t fl__feat_to_kernel(uint64_t fl_features)
{
	uint64_t k = 0;

	for (size_t i = 0; i < ARRAY_SIZE(feats); i++)
		if (fl_features & feats[i].fl)
			k |= feats[i].kernel;
	return k;
}

uint64_t fl__feat_from_kernel(uint64_t kernel_features)
{
	uint64_t f = 0;

	for (size_t i = 0; i < ARRAY_SIZE(feats); i++)
		if (feats[i].kernel && (kernel_features & feats[i].kernel))
			f |= feats[i].fl;
	return f;
}

uint32_t fl__ioctls_from_kernel(uint64_t kernel_ioctls)
{
	uint64_t known = 0;
	uint32_t r = 0;

	for (size_t i = 0; i < ARRAY_SIZE(ioctls); i++) {
		uint64_t bit = (uint64_t)1 << ioctls[i].nr;

		known |= bit;
		if (kernel_ioctls & bit)
			r |= ioctls[i].fl;
	}
	/* Range ioctls live below bit 0x3F (_UFFDIO_API); newer kernels add more. */
	if (kernel_ioctls & ~known)
		r |= FL_IOCTL_OTHER;
	return r;
}

uint64_t fl__register_mode_to_kernel(uint32_t mode)
{
	uint64_t k = 0;

	if (mode & FL_REGISTER_MISSING)
		k |= UFFDIO_REGISTER_MODE_MISSING;
	if (mode & FL_REGISTER_WP)
		k |= UFFDIO_REGISTER_MODE_WP;
	if (mode & FL_REGISTER_MINOR)
		k |= UFFDIO_REGISTER_MODE_MINOR;
	return k;
}

FL_API const char *fl_feature_name(uint64_t feat)
{
	for (size_t i = 0; i < ARRAY_SIZE(feats); i++)
		if (feats[i].fl == feat)
			return feats[i].name;
	return NULL;
}

FL_API const char *fl_ioctl_name(uint32_t ioctl_bit)
{
	if (ioctl_bit == FL_IOCTL_OTHER)
		return "other";
	for (size_t i = 0; i < ARRAY_SIZE(ioctls); i++)
		if (ioctls[i].fl == ioctl_bit)
			return ioctls[i].name;
	return NULL;
}

FL_API const char *fl_uffd_path_name(enum fl_uffd_path path)
{
	switch (path) {
	case FL_UFFD_PATH_AUTO:
		return "auto";
	case FL_UFFD_PATH_SYSCALL:
		return "syscall";
	case FL_UFFD_PATH_DEV:
		return "dev";
	case FL_UFFD_PATH_USER_ONLY:
		return "user-only";
	}
	return NULL;
}

FL_API const char *fl_mem_type_name(enum fl_mem_type type)
{
	switch (type) {
	case FL_MEM_ANON:
		return "anon";
	case FL_MEM_SHMEM:
		return "shmem";
	case FL_MEM_HUGETLB:
		return "hugetlb";
	}
	return NULL;
}

FL_API const char *fl_event_type_name(uint32_t type)
{
	switch (type) {
	case FL_EVENT_PAGEFAULT:
		return "pagefault";
	case FL_EVENT_FORK:
		return "fork";
	case FL_EVENT_REMAP:
		return "remap";
	case FL_EVENT_REMOVE:
		return "remove";
	case FL_EVENT_UNMAP:
		return "unmap";
	case FL_EVENT_UNKNOWN:
		return "unknown";
	}
	return NULL;
}
