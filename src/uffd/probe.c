/* SPDX-License-Identifier: MIT */
/* The run-time feature probe: what userfaultfd can do here, found by trying, cached once. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "compat.h"
#include "internal.h"

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static struct fl_features probe_cache;

size_t fl__page_size(void)
{
	static size_t ps;

	if (!ps)
		ps = (size_t)sysconf(_SC_PAGESIZE);
	return ps;
}

static uint64_t read_u64(const char *path)
{
	char buf[64];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return strtoull(buf, NULL, 10);
}

static void probe_huge_sizes(struct fl_features *f)
{
	DIR *d = opendir("/sys/kernel/mm/hugepages");
	struct dirent *de;
	char path[320];
	int fd;

	if (d) {
		while ((de = readdir(d)) && f->n_huge_sizes < FL_PROBE_MAX_HUGE_SIZES) {
			unsigned long long kb;
			struct fl_huge_size *h;

			if (sscanf(de->d_name, "hugepages-%llukB", &kb) != 1)
				continue;
			h = &f->huge_sizes[f->n_huge_sizes++];
			h->size = (uint64_t)kb * 1024;
			snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/%s/nr_hugepages",
				 de->d_name);
			h->total = read_u64(path);
			snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/%s/free_hugepages",
				 de->d_name);
			h->free = read_u64(path);
		}
		closedir(d);
	}
	/* Smallest first. */
	for (uint32_t i = 1; i < f->n_huge_sizes; i++)
		for (uint32_t j = i; j > 0 && f->huge_sizes[j - 1].size > f->huge_sizes[j].size;
		     j--) {
			struct fl_huge_size t = f->huge_sizes[j];

			f->huge_sizes[j] = f->huge_sizes[j - 1];
			f->huge_sizes[j - 1] = t;
		}

	fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char buf[128];
		ssize_t n = read(fd, buf, sizeof(buf) - 1);

		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			f->thp = strstr(buf, "[never]") == NULL;
		}
	}
}

/* Map a small piece of @type; returns the mapping or MAP_FAILED with *len set. */
static void *map_type(enum fl_mem_type type, size_t *len, int *err)
{
	unsigned int mfd_flags = MFD_CLOEXEC;
	void *p;
	int fd;

	*len = 2 * fl__page_size();
	if (type == FL_MEM_ANON) {
		p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		*err = p == MAP_FAILED ? -errno : 0;
		return p;
	}
	if (type == FL_MEM_HUGETLB) {
		mfd_flags |= MFD_HUGETLB;
		*len = 2u << 20;	/* the default huge page size on x86-64 and arm64 */
	}
	fd = memfd_create("fl-probe", mfd_flags);
	if (fd < 0) {
		*err = -errno;
		return MAP_FAILED;
	}
	if (ftruncate(fd, (off_t)*len) < 0) {
		*err = -errno;
		close(fd);
		return MAP_FAILED;
	}
	/* NORESERVE: the probe must work with no huge pages reserved; it never faults. */
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	*err = p == MAP_FAILED ? -errno : 0;
	close(fd);
	return p;
}

static void probe_mem(struct fl_features *f, int fd)
{
	static const uint32_t modes[] = { FL_REGISTER_MISSING, FL_REGISTER_WP, FL_REGISTER_MINOR };

	for (int t = 0; t < FL_MEM_TYPE_COUNT; t++) {
		struct fl_mem_caps *c = &f->mem[t];
		size_t len;
		int err;
		void *p = map_type((enum fl_mem_type)t, &len, &err);

		if (p == MAP_FAILED) {
			c->error = err;
			continue;
		}
		for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
			struct uffdio_register reg = {
				.range = { (uintptr_t)p, len },
				.mode = fl__register_mode_to_kernel(modes[i]),
			};
			struct uffdio_range range = reg.range;

			if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
				continue;
			c->modes |= modes[i];
			c->ioctls |= fl__ioctls_from_kernel(reg.ioctls);
			ioctl(fd, UFFDIO_UNREGISTER, &range);
		}
		munmap(p, len);
	}
}

static bool probe_pagemap_scan(void)
{
	size_t ps = fl__page_size();
	struct page_region region;
	struct pm_scan_arg arg;
	bool ok = false;
	void *p;
	int fd;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	p = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED) {
		arg = (struct pm_scan_arg){
			.size = sizeof(arg),
			.start = (uintptr_t)p,
			.end = (uintptr_t)p + ps,
			.vec = (uintptr_t)&region,
			.vec_len = 1,
			.return_mask = PAGE_IS_PRESENT,
		};
		ok = ioctl(fd, PAGEMAP_SCAN, &arg) >= 0;
		munmap(p, ps);
	}
	close(fd);
	return ok;
}

static void do_probe(void)
{
	static const enum fl_uffd_path order[] = {
		FL_UFFD_PATH_SYSCALL, FL_UFFD_PATH_DEV, FL_UFFD_PATH_USER_ONLY,
	};
	struct fl_features *f = &probe_cache;
	uint64_t kf = 0, ki = 0, want;
	int fd = -1, r;

	*f = (struct fl_features){ .page_size = (uint32_t)fl__page_size() };
	f->default_path = FL_UFFD_PATH_AUTO;
	for (size_t i = 0; i < 3; i++) {
		r = fl__uffd_create(order[i], true);

		f->path_error[order[i]] = r < 0 ? r : 0;
		if (r < 0)
			continue;
		if (f->default_path == FL_UFFD_PATH_AUTO) {
			f->default_path = order[i];
			fd = r;
		} else {
			close(r);
		}
	}
	f->path_error[FL_UFFD_PATH_AUTO] = f->default_path == FL_UFFD_PATH_AUTO ? -ENOSYS : 0;
	probe_huge_sizes(f);
	if (probe_pagemap_scan())
		f->features |= FL_FEAT_PAGEMAP_SCAN;
	if (fd < 0) {
		for (int t = 0; t < FL_MEM_TYPE_COUNT; t++)
			f->mem[t].error = f->path_error[FL_UFFD_PATH_AUTO];
		return;
	}

	/* Features 0 asks for nothing and learns everything the kernel offers. */
	if (fl__uffd_api(fd, 0, &kf, &ki) == 0) {
		f->api = UFFD_API;
		f->kernel_features = kf;
		f->kernel_ioctls = ki;
		f->features |= fl__feat_from_kernel(kf);
	}
	close(fd);

	/* A second descriptor with the memory-type features on, to see what each type allows. */
	fd = fl__uffd_create(f->default_path, true);
	if (fd < 0)
		return;
	want = kf & (UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MISSING_SHMEM |
		     UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_MINOR_SHMEM |
		     UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
		     UFFD_FEATURE_MOVE | UFFD_FEATURE_POISON | UFFD_FEATURE_EVENT_FORK);
	/*
	 * The kernel offers EVENT_FORK to everyone but grants it only with
	 * CAP_SYS_PTRACE; a refused handshake leaves the fd untouched, so ask
	 * again without it and report the feature as unusable here.
	 */
	r = fl__uffd_api(fd, want, NULL, NULL);
	if (r == -EPERM && (want & UFFD_FEATURE_EVENT_FORK)) {
		f->features &= ~(uint64_t)FL_FEAT_EVENT_FORK;
		f->kernel_features &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
		f->denied |= FL_FEAT_EVENT_FORK;
		want &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
		r = fl__uffd_api(fd, want, NULL, NULL);
	}
	if (r == 0)
		probe_mem(f, fd);
	close(fd);
}

FL_API int fl_probe(struct fl_features *ret)
{
	if (pthread_once(&probe_once, do_probe) != 0)
		return fl__einval(__func__, "pthread_once failed");
	if (ret)
		*ret = probe_cache;
	return 0;
}

void fl__probe_set_for_test(const struct fl_features *f)
{
	fl_probe(NULL);
	probe_cache = *f;
}
