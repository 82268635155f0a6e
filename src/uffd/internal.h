/* SPDX-License-Identifier: MIT */
/* Internal declarations shared by the library's layers (never installed). */
#ifndef FL_INTERNAL_H
#define FL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "faultline.h"

struct fl_uffd {
	int fd;
	bool owns_fd;
	enum fl_uffd_path path;
	uint64_t features;		/* FL_FEAT_* enabled */
	uint64_t kernel_features;	/* UFFD_FEATURE_* enabled */
};

/* Logging: formats one line and hands it to the installed callback, if any. */
void fl__log(enum fl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fl__err(...) fl__log(FL_LOG_ERROR, __VA_ARGS__)
#define fl__warn(...) fl__log(FL_LOG_WARN, __VA_ARGS__)
#define fl__info(...) fl__log(FL_LOG_INFO, __VA_ARGS__)
#define fl__debug(...) fl__log(FL_LOG_DEBUG, __VA_ARGS__)

/* Feature and ioctl bit translation (src/uffd/bits.c). */
uint64_t fl__feat_to_kernel(uint64_t fl_features);
uint64_t fl__feat_from_kernel(uint64_t kernel_features);
uint32_t fl__ioctls_from_kernel(uint64_t kernel_ioctls);
uint64_t fl__register_mode_to_kernel(uint32_t mode);

/* Raw descriptor creation for one path: a new fd (>= 0) or -errno. */
int fl__uffd_create(enum fl_uffd_path path, bool nonblock);
/* UFFDIO_API on @fd asking for @kernel_features; fills what the kernel offers. */
int fl__uffd_api(int fd, uint64_t kernel_features, uint64_t *ret_features, uint64_t *ret_ioctls);

/* Tests only: replace the cached probe result (to simulate an older kernel). */
void fl__probe_set_for_test(const struct fl_features *f);

/* Page size of this machine, cached. */
size_t fl__page_size(void);

#endif /* FL_INTERNAL_H */
