/* SPDX-License-Identifier: MIT */
/* Pure user-space tests: names, bit translation, option checking, the probe cache. */
#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "internal.h"
#include "tests.h"

TEST(version_and_names)
{
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", FL_VERSION_MAJOR, FL_VERSION_MINOR,
		 FL_VERSION_PATCH);
	T_ASSERT(!strcmp(fl_version(), want));
	T_ASSERT(!strcmp(fl_feature_name(FL_FEAT_MOVE), "move"));
	T_ASSERT(!strcmp(fl_feature_name(FL_FEAT_PAGEMAP_SCAN), "pagemap_scan"));
	T_ASSERT(fl_feature_name(FL_FEAT_MOVE | FL_FEAT_POISON) == NULL);
	T_ASSERT(fl_feature_name(0) == NULL);
	for (uint64_t bit = 1; bit & FL_FEAT_ALL; bit <<= 1)
		T_ASSERT(fl_feature_name(bit) != NULL);
	T_ASSERT(!strcmp(fl_ioctl_name(FL_IOCTL_CONTINUE), "continue"));
	T_ASSERT(!strcmp(fl_ioctl_name(FL_IOCTL_OTHER), "other"));
	T_ASSERT(fl_ioctl_name(3) == NULL);
	T_ASSERT(!strcmp(fl_uffd_path_name(FL_UFFD_PATH_USER_ONLY), "user-only"));
	T_ASSERT(fl_uffd_path_name((enum fl_uffd_path)9) == NULL);
	T_ASSERT(!strcmp(fl_mem_type_name(FL_MEM_HUGETLB), "hugetlb"));
	T_ASSERT(fl_mem_type_name((enum fl_mem_type)7) == NULL);
	T_ASSERT(!strcmp(fl_event_type_name(FL_EVENT_REMAP), "remap"));
	T_ASSERT(fl_event_type_name(0) == NULL);
}

TEST(probe_cached_and_consistent)
{
	struct fl_features a, b;

	T_ASSERT_OK(fl_probe(&a));
	T_ASSERT_OK(fl_probe(&b));
	T_ASSERT(!memcmp(&a, &b, sizeof(a)));
	T_ASSERT_OK(fl_probe(NULL));
	T_ASSERT_EQ(a.page_size, t_page_size());
	T_ASSERT_EQ(a.features & ~FL_FEAT_ALL, 0);
	/* Our bits agree with the kernel's raw bits, both ways. */
	T_ASSERT_EQ(fl__feat_from_kernel(a.kernel_features), a.features & ~FL_FEAT_PAGEMAP_SCAN);
	if (a.default_path != FL_UFFD_PATH_AUTO) {
		T_ASSERT_EQ(a.path_error[a.default_path], 0);
		T_ASSERT_EQ(a.api, UFFD_API);
		/* Every kernel with userfaultfd can COPY into private anonymous memory. */
		T_ASSERT(a.mem[FL_MEM_ANON].modes & FL_REGISTER_MISSING);
		T_ASSERT(a.mem[FL_MEM_ANON].ioctls & FL_IOCTL_COPY);
	} else {
		T_ASSERT_EQ(a.features & ~FL_FEAT_PAGEMAP_SCAN, 0);
	}
	for (uint32_t i = 1; i < a.n_huge_sizes; i++)
		T_ASSERT(a.huge_sizes[i - 1].size < a.huge_sizes[i].size);
}

TEST(ioctl_bits_unknown_accepted)
{
	uint64_t known = (1ull << _UFFDIO_WAKE) | (1ull << _UFFDIO_COPY) |
			 (1ull << _UFFDIO_ZEROPAGE) | (1ull << _UFFDIO_WRITEPROTECT) |
			 (1ull << _UFFDIO_CONTINUE) | (1ull << _UFFDIO_MOVE) |
			 (1ull << _UFFDIO_POISON);
	uint32_t all = FL_IOCTL_WAKE | FL_IOCTL_COPY | FL_IOCTL_ZEROPAGE |
		       FL_IOCTL_WRITEPROTECT | FL_IOCTL_CONTINUE | FL_IOCTL_MOVE | FL_IOCTL_POISON;

	T_ASSERT_EQ(fl__ioctls_from_kernel(known), all);
	/* A future kernel's bit (here 0x09 and 0x30) keeps the known ones and adds OTHER. */
	T_ASSERT_EQ(fl__ioctls_from_kernel(known | (1ull << 9) | (1ull << 0x30)),
		    all | FL_IOCTL_OTHER);
	T_ASSERT_EQ(fl__ioctls_from_kernel(1ull << _UFFDIO_COPY), FL_IOCTL_COPY);
	T_ASSERT_EQ(fl__ioctls_from_kernel(0), 0);
}

TEST(feature_bits_roundtrip)
{
	for (uint64_t bit = 1; bit & FL_FEAT_ALL; bit <<= 1) {
		uint64_t k = fl__feat_to_kernel(bit);

		if (bit == FL_FEAT_PAGEMAP_SCAN) {
			T_ASSERT_EQ(k, 0);
			continue;
		}
		T_ASSERT_NE(k, 0);
		T_ASSERT_EQ(k & (k - 1), 0);	/* exactly one kernel bit */
		T_ASSERT_EQ(fl__feat_from_kernel(k), bit);
	}
	T_ASSERT_EQ(fl__feat_to_kernel(FL_FEAT_MOVE), UFFD_FEATURE_MOVE);
	T_ASSERT_EQ(fl__feat_to_kernel(FL_FEAT_WP_ASYNC), UFFD_FEATURE_WP_ASYNC);
	/* Unknown kernel feature bits are ignored, not misread. */
	T_ASSERT_EQ(fl__feat_from_kernel(1ull << 40), 0);
}

TEST(open_rejects_bad_options)
{
	struct fl_uffd *u = NULL;
	struct fl_uffd_opts o = { .sz = sizeof(o) };
	struct {
		struct fl_uffd_opts o;
		uint64_t future;
	} big = { .o = { .sz = sizeof(big) }, .future = 1 };

	T_ASSERT_ERR(fl_uffd_open(&o, NULL), EINVAL);
	o.features = 1ull << 40;
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EINVAL);
	o.features = 0;
	o.flags = 1u << 7;
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EINVAL);
	o.flags = 0;
	o.path = (enum fl_uffd_path)17;
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EINVAL);
	o.sz = 2;
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EINVAL);
	/* A newer caller's non-zero field this library does not know. */
	T_ASSERT_ERR(fl_uffd_open(&big.o, &u), EINVAL);
	T_ASSERT(u == NULL);
	T_ASSERT_ERR(fl_uffd_register(NULL, NULL, 4096, FL_REGISTER_MISSING, NULL), EINVAL);
	T_ASSERT_ERR(fl_uffd_copy(NULL, NULL, NULL, 4096, 0, NULL), EINVAL);
	T_ASSERT_ERR(fl_uffd_adopt(-1, 0, 0, &u), EBADF);
	T_ASSERT_ERR(fl_uffd_adopt(0, 0, 0, &u), EBADF);	/* stdin is no userfaultfd */
	fl_uffd_close(NULL);
}
