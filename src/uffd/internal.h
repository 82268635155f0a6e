/* SPDX-License-Identifier: MIT */
/* Internal declarations shared by the library's layers (never installed). */
#ifndef FL_INTERNAL_H
#define FL_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

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
/*
 * An invalid argument: log why, as "@fn: ..." at error level, and return
 * -EINVAL. Every -EINVAL a public function returns goes through here (or
 * logs otherwise), so a caller never has to guess which argument it was.
 */
int fl__einval(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Options structs (CONTRIBUTING.md, "Options structs"): the caller sets the
 * leading size_t sz to the sizeof it was compiled with.
 *
 * fl__opts_check: the caller's struct must hold at least its sz field, and
 * every byte past the @known bytes this library knows must be zero (a newer
 * caller asking for something this library cannot do). Logs why it refuses,
 * naming @who (the public function). Returns 0 or -EINVAL.
 *
 * fl__opts_copy: fl__opts_check, then copy what the caller's sz covers into
 * @dst (@known bytes); the rest of @dst is zero (the defaults) and dst's sz is
 * @known. @src may be NULL: all defaults.
 *
 * fl__opt_has: 1 if the field at [@offset, @offset+@size) lies inside the
 * caller's @sz, 0 if it lies wholly past it (keep the default), -EINVAL if
 * @sz cuts it in two (for structs of pointers, where half a field is a crash).
 */
/*
 * fl__pread_full / fl__pwrite_full - the whole [off, off+len) of @fd or an
 * error: EINTR is retried, a short transfer continues, and end of file (or
 * a write of 0 bytes) is -EIO, never a partial buffer taken for whole.
 * Returns 0 or -errno.
 */
int fl__pread_full(int fd, void *buf, size_t len, uint64_t off);
int fl__pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/*
 * fl__thread_start - pthread_create(@t, @attr, @fn, @arg) for a thread of
 * the library: it starts with every signal blocked except those the kernel
 * sends for faults it causes itself (SIGBUS, SIGSEGV, SIGFPE, SIGILL), so
 * the program's process-directed signals always land on the program's own
 * threads; named @name (at most 15 characters) if not NULL. The caller's
 * mask is unchanged on return. Returns 0 or -errno.
 */
int fl__thread_start(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg,
		     const char *name);

int fl__opts_check(const void *src, size_t known, const char *who);
int fl__opts_copy(void *dst, size_t known, const void *src, const char *who);
/*
 * fl__stats_out - hand @filled (@known bytes, this library's statistics
 * struct) to a caller whose struct at @ret starts with the size_t sz it was
 * compiled with: copy what both know, write nothing past it, and leave in
 * ret's sz the bytes filled. So the struct can grow at its end.
 * Returns 0, or -EINVAL (logged, naming @who) if sz cannot even hold itself.
 */
int fl__stats_out(void *ret, const void *filled, size_t known, const char *who);

static inline int fl__opt_has(size_t sz, size_t offset, size_t size)
{
	if (offset + size <= sz)
		return 1;
	return offset < sz ? -EINVAL : 0;
}

/* Feature and ioctl bit translation (src/uffd/bits.c). */
uint64_t fl__feat_to_kernel(uint64_t fl_features);
uint64_t fl__feat_from_kernel(uint64_t kernel_features);
uint32_t fl__ioctls_from_kernel(uint64_t kernel_ioctls);
uint64_t fl__register_mode_to_kernel(uint32_t mode);

/* Raw descriptor creation for one path: a new fd (>= 0) or -errno. */
int fl__uffd_create(enum fl_uffd_path path, bool nonblock);
/* UFFDIO_API on @fd asking for @kernel_features; fills what the kernel offers. */
int fl__uffd_api(int fd, uint64_t kernel_features, uint64_t *ret_features, uint64_t *ret_ioctls);

/* Tests only: forget the log callback and FL_LOG, as in a process that never logged. */
void fl__log_reset_for_test(void);

/* Tests only: replace the cached probe result (to simulate an older kernel). */
void fl__probe_set_for_test(const struct fl_features *f);

/* Page size of this machine, cached. */
size_t fl__page_size(void);

/*
 * Descriptor ownership. A variable holding a descriptor either owns it or
 * is -1. fl__safe_close() closes a descriptor if it is one (errno is kept)
 * and returns -1, for `fd = fl__safe_close(fd);`. fl__closep() does the
 * same through a pointer (the cleanup function of _fl_cleanup_close_).
 * FL__TAKE_FD() hands ownership over: it yields the descriptor and leaves
 * -1 behind, so no error path can close it twice.
 */
static inline int fl__safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return -1;
}

static inline void fl__closep(int *fd)
{
	*fd = fl__safe_close(*fd);
}

#define FL__TAKE_FD(fd)                 \
	({                              \
		int fl__taken_ = (fd);  \
		(fd) = -1;              \
		fl__taken_;             \
	})
#define _fl_cleanup_close_ __attribute__((cleanup(fl__closep)))

/*
 * fl__uffd_poison_absent - poison every page of [addr, addr+len) that is
 * not present, so that threads blocked on it and later accesses get SIGBUS
 * rather than zeros. A present page (EEXIST) and a page outside any range
 * registered with @u (ENOENT: unmapped, moved away, or never registered) are
 * stepped over; the kernel's partial progress is always used. EAGAIN (an
 * event is queued and must be read first) calls o->drain, which reads the
 * pending events, and retries (at most FL__POISON_DRAIN_TRIES times); with
 * no drain, -EAGAIN is returned. ESRCH (the memory's process has exited):
 * nothing is left to protect, 0.
 * Where the kernel cannot poison (no UFFDIO_POISON, before 6.6) and
 * o->own_memory says the range is this process's, its absent pages (not
 * present, not swapped, per /proc/self/pagemap) are made PROT_NONE
 * instead: they fail loudly with SIGSEGV. The error is returned either way.
 * Returns 0, or the error that made poisoning (part of) the range impossible.
 * *ret_poisoned (may be NULL) is increased by the bytes poisoned.
 */
#define FL__POISON_DRAIN_TRIES 1000
struct fl__poison_opts {
	uint64_t step;			/* the range's page size; 0: this machine's */
	int (*drain)(void *arg);	/* read pending events (EAGAIN); may be NULL */
	void *arg;
	bool own_memory;		/* the range is mapped in this process */
};
int fl__uffd_poison_absent(struct fl_uffd *u, uint64_t addr, uint64_t len,
			   const struct fl__poison_opts *o, uint64_t *ret_poisoned);

#endif /* FL_INTERNAL_H */
