/* SPDX-License-Identifier: MIT */
/* faultline uffd layer: a complete, version-proof C interface to userfaultfd. */
#ifndef FAULTLINE_UFFD_H
#define FAULTLINE_UFFD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef FL_API
#define FL_API __attribute__((visibility("default")))
#endif

#define FL_VERSION_MAJOR 0
#define FL_VERSION_MINOR 3
#define FL_VERSION_PATCH 0

/*
 * fl_version - the library's version as "MAJOR.MINOR.PATCH".
 * Returns a static string. Thread safety: any thread.
 */
FL_API const char *fl_version(void);

/* ---------------------------------------------------------------- logging */

enum fl_log_level {
	FL_LOG_ERROR = 0,
	FL_LOG_WARN = 1,
	FL_LOG_INFO = 2,
	FL_LOG_DEBUG = 3,
};

/* A log callback receives one line without a trailing newline. */
typedef void (*fl_log_fn)(enum fl_log_level level, const char *msg);

/*
 * fl_set_log_fn - install (or, with NULL, remove) the library's log callback.
 * The library reports here why a call failed and what to enable; every -EINVAL
 * of a public function comes with an FL_LOG_ERROR line saying why. Without a
 * callback it prints nothing, unless FL_LOG=error|warn|info|debug is set in the
 * environment: then lines of that level and above go to stderr, until the
 * first call of this function (even with NULL) turns that off.
 * The callback may be called from any thread that calls into the library,
 * including handler threads, and must be reentrant.
 * Thread safety: any thread (the pointer is stored atomically).
 */
FL_API void fl_set_log_fn(fl_log_fn fn);

/* --------------------------------------------------------------- features */

/*
 * Feature bits. These are faultline's own; the library maps them to the
 * kernel's UFFD_FEATURE_* bits. FL_FEAT_PAGEMAP_SCAN is not a userfaultfd
 * feature but a /proc/PID/pagemap ioctl; it may still be requested, and is
 * then checked, not negotiated.
 */
enum fl_feature {
	FL_FEAT_PAGEFAULT_FLAG_WP = 1u << 0,	/* write-protect faults on anonymous memory */
	FL_FEAT_EVENT_FORK = 1u << 1,
	FL_FEAT_EVENT_REMAP = 1u << 2,
	FL_FEAT_EVENT_REMOVE = 1u << 3,
	FL_FEAT_EVENT_UNMAP = 1u << 4,
	FL_FEAT_MISSING_HUGETLBFS = 1u << 5,
	FL_FEAT_MISSING_SHMEM = 1u << 6,
	FL_FEAT_SIGBUS = 1u << 7,		/* faults raise SIGBUS instead of queuing */
	FL_FEAT_THREAD_ID = 1u << 8,		/* faults carry the faulting thread id */
	FL_FEAT_MINOR_HUGETLBFS = 1u << 9,
	FL_FEAT_MINOR_SHMEM = 1u << 10,
	FL_FEAT_EXACT_ADDRESS = 1u << 11,
	FL_FEAT_WP_HUGETLBFS_SHMEM = 1u << 12,
	FL_FEAT_WP_UNPOPULATED = 1u << 13,	/* 6.4 */
	FL_FEAT_POISON = 1u << 14,		/* 6.6 */
	FL_FEAT_WP_ASYNC = 1u << 15,		/* 6.7 */
	FL_FEAT_MOVE = 1u << 16,		/* 6.8 */
	FL_FEAT_PAGEMAP_SCAN = 1u << 17,	/* 6.7, /proc/PID/pagemap ioctl */
};

/* Every bit above. */
#define FL_FEAT_ALL ((uint64_t)((1u << 18) - 1))

/*
 * fl_feature_name - the lower-case name of one FL_FEAT_* bit ("move",
 * "wp_async", ...), or NULL if @feat is not exactly one known bit.
 * Thread safety: any thread.
 */
FL_API const char *fl_feature_name(uint64_t feat);

/* Resolve ioctls a registered range allows (faultline's own bits). */
enum fl_ioctl {
	FL_IOCTL_WAKE = 1u << 0,
	FL_IOCTL_COPY = 1u << 1,
	FL_IOCTL_ZEROPAGE = 1u << 2,
	FL_IOCTL_WRITEPROTECT = 1u << 3,
	FL_IOCTL_CONTINUE = 1u << 4,
	FL_IOCTL_MOVE = 1u << 5,
	FL_IOCTL_POISON = 1u << 6,
	FL_IOCTL_OTHER = 1u << 31,	/* the kernel reported bits faultline does not know */
};

/* FL_IOCTL_* bit to name ("copy", ...), NULL if not exactly one known bit. */
FL_API const char *fl_ioctl_name(uint32_t ioctl_bit);

/* The ways to obtain a userfaultfd. */
enum fl_uffd_path {
	FL_UFFD_PATH_AUTO = 0,		/* try syscall, /dev/userfaultfd, then user-mode-only */
	FL_UFFD_PATH_SYSCALL = 1,	/* userfaultfd(2): root, CAP_SYS_PTRACE or the sysctl */
	FL_UFFD_PATH_DEV = 2,		/* /dev/userfaultfd + USERFAULTFD_IOC_NEW (6.1) */
	FL_UFFD_PATH_USER_ONLY = 3,	/* userfaultfd(UFFD_USER_MODE_ONLY) (5.11) */
};
#define FL_UFFD_PATH_COUNT 4

/* "auto", "syscall", "dev", "user-only"; NULL for an unknown value. */
FL_API const char *fl_uffd_path_name(enum fl_uffd_path path);

/* Memory types, for the per-type capabilities of the probe. */
enum fl_mem_type {
	FL_MEM_ANON = 0,	/* MAP_PRIVATE | MAP_ANONYMOUS */
	FL_MEM_SHMEM = 1,	/* memfd / shmem, MAP_SHARED */
	FL_MEM_HUGETLB = 2,	/* hugetlbfs memfd, MAP_SHARED */
};
#define FL_MEM_TYPE_COUNT 3

/* "anon", "shmem", "hugetlb"; NULL for an unknown value. */
FL_API const char *fl_mem_type_name(enum fl_mem_type type);

/* Registration modes; any non-empty combination the memory type allows. */
enum fl_register_mode {
	FL_REGISTER_MISSING = 1u << 0,
	FL_REGISTER_WP = 1u << 1,
	FL_REGISTER_MINOR = 1u << 2,
};

#define FL_PROBE_MAX_HUGE_SIZES 4

struct fl_mem_caps {
	uint32_t modes;		/* FL_REGISTER_* bits that registered on their own */
	uint32_t ioctls;	/* FL_IOCTL_* allowed, union over those modes */
	int32_t error;		/* 0, or -errno if the memory could not be mapped at all */
	uint32_t reserved;
};

struct fl_huge_size {
	uint64_t size;		/* bytes */
	uint64_t total;		/* nr_hugepages */
	uint64_t free;		/* free_hugepages */
};

/*
 * What this kernel, in this process, offers. Filled once by fl_probe().
 * The ABI may grow into the reserved tail only.
 */
struct fl_features {
	uint64_t features;		/* FL_FEAT_* available */
	uint64_t kernel_features;	/* UFFD_FEATURE_* bits from UFFDIO_API, less those this
					   process may not use (EVENT_FORK without CAP_SYS_PTRACE) */
	uint64_t kernel_ioctls;		/* raw uffdio_api.ioctls */
	uint64_t api;			/* UFFD_API spoken */
	int32_t path_error[FL_UFFD_PATH_COUNT];	/* per path: 0 = works, else -errno */
	enum fl_uffd_path default_path;	/* what FL_UFFD_PATH_AUTO picks; AUTO if none works */
	uint32_t n_huge_sizes;
	struct fl_huge_size huge_sizes[FL_PROBE_MAX_HUGE_SIZES];
	struct fl_mem_caps mem[FL_MEM_TYPE_COUNT];
	uint32_t thp;			/* 1 if transparent huge pages can be used (madvise or always) */
	uint32_t page_size;
	uint64_t denied;		/* FL_FEAT_* the kernel has but this process may not use
					   (EVENT_FORK without CAP_SYS_PTRACE) */
	uint64_t reserved[7];
};

/*
 * fl_probe - what userfaultfd can do here.
 *
 * Probes once per process, on throwaway descriptors and mappings, and caches
 * the answer (later calls copy the cache). Never compares kernel versions.
 * Every access path is tried, so the result also says which of them work.
 * The probe itself never fails: a kernel without userfaultfd yields
 * features == 0 and path errors. @ret may be NULL to warm the cache.
 *
 * Returns 0, or -EINVAL if the library cannot tell anything at all.
 * Thread safety: any thread; concurrent first calls probe once.
 */
FL_API int fl_probe(struct fl_features *ret);

/* ------------------------------------------------------------ the object */

/* An open, handshaken userfaultfd. Opaque. */
struct fl_uffd;

enum fl_uffd_flags {
	FL_UFFD_NONBLOCK = 1u << 0,	/* O_NONBLOCK: event reads return -EAGAIN when empty */
};

struct fl_uffd_opts {
	size_t sz;			/* sizeof(struct fl_uffd_opts) */
	uint64_t features;		/* FL_FEAT_* required: -EOPNOTSUPP if any is missing */
	uint64_t optional;		/* FL_FEAT_* enabled when available, silently otherwise */
	enum fl_uffd_path path;		/* AUTO tries the paths in order */
	uint32_t flags;			/* FL_UFFD_* */
};

/*
 * fl_uffd_open - open a userfaultfd and handshake once with the requested features.
 *
 * With FL_UFFD_PATH_AUTO the paths are tried in this order: the syscall
 * (handles kernel-mode faults too), /dev/userfaultfd, then the syscall with
 * UFFD_USER_MODE_ONLY (no special privilege; kernel-mode accesses to missing
 * pages fail with EFAULT instead of waiting). The environment variable
 * FL_UFFD_PATH=syscall|dev|user-only overrides opts->path, so tests and
 * operators can force one. fl_uffd_path() reports the path that worked.
 *
 * @opts may be NULL (no features, AUTO, blocking).
 * Returns 0 and the object in *@ret, or:
 *   -ENOSYS      no userfaultfd in this kernel (or filtered by seccomp),
 *   -EPERM       not allowed; the log callback names the one thing to enable
 *                (vm.unprivileged_userfaultfd, CAP_SYS_PTRACE, or the
 *                permissions of /dev/userfaultfd),
 *   -EOPNOTSUPP  a required feature is missing (the log names it),
 *   -EPERM       also when a required feature needs a privilege this process
 *                lacks (EVENT_FORK needs CAP_SYS_PTRACE; the log says so),
 *   -EINVAL      bad options, -ENOMEM.
 * The descriptor is O_CLOEXEC. Thread safety: any thread.
 */
FL_API int fl_uffd_open(const struct fl_uffd_opts *opts, struct fl_uffd **ret);

enum fl_uffd_adopt_flags {
	FL_UFFD_ADOPT_HANDSHAKE = 1u << 0,	/* the fd is fresh: do UFFDIO_API now with @features */
};

/*
 * fl_uffd_adopt - wrap a userfaultfd obtained elsewhere (received over a
 * socket, or from a FORK event). The caller keeps owning @fd and must keep it
 * open while the object lives; fl_uffd_close() does not close it.
 * fl_uffd_take - the same, but the object owns @fd from the moment this
 * succeeds and closes it in fl_uffd_close(). On failure the caller still owns it.
 *
 * @features are the FL_FEAT_* bits the fd was (or, with
 * FL_UFFD_ADOPT_HANDSHAKE, is to be) handshaken with; the library cannot ask
 * the kernel once the handshake is done. FORK children inherit their parent's.
 * Returns 0, -EBADF (not a userfaultfd), -EOPNOTSUPP (a feature this kernel
 * lacks), -EINVAL (bad arguments, or FL_UFFD_ADOPT_HANDSHAKE on a descriptor
 * that was already handshaken), -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_uffd_adopt(int fd, uint64_t features, uint32_t flags, struct fl_uffd **ret);
FL_API int fl_uffd_take(int fd, uint64_t features, uint32_t flags, struct fl_uffd **ret);

/* Close (if owned) and free. Accepts NULL. Thread safety: no other call on @u may run. */
FL_API void fl_uffd_close(struct fl_uffd *u);

/*
 * The descriptor (-EINVAL for NULL), for poll/epoll. Open with FL_UFFD_NONBLOCK to poll it: the
 * kernel reports POLLERR at once on a blocking userfaultfd.
 * Thread safety: any thread.
 */
FL_API int fl_uffd_fd(const struct fl_uffd *u);

/* The FL_FEAT_* bits enabled on this descriptor. Thread safety: any thread. */
FL_API uint64_t fl_uffd_features(const struct fl_uffd *u);

/* How it was opened; FL_UFFD_PATH_AUTO for adopted descriptors. Thread safety: any thread. */
FL_API enum fl_uffd_path fl_uffd_path(const struct fl_uffd *u);

/* ------------------------------------------------------------ registering */

/*
 * fl_uffd_register - watch [addr, addr+len) for the faults named in @mode
 * (FL_REGISTER_* bits, any valid combination). @addr and @len must be
 * aligned to the mapping's page size. *@ret_ioctls (may be NULL) receives the
 * FL_IOCTL_* resolve operations the kernel allows on the range; bits the
 * kernel reports that faultline does not know are accepted and shown as
 * FL_IOCTL_OTHER.
 * Returns 0, -EINVAL (bad range or mode, or a mode this memory type cannot
 * do, such as MINOR on private anonymous memory: the kernel does not tell
 * them apart; fl_probe() says what each memory type allows), -EBUSY
 * (registered with another userfaultfd), -EPERM (the mapping is not
 * writable), -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_uffd_register(struct fl_uffd *u, void *addr, size_t len, uint32_t mode,
			    uint32_t *ret_ioctls);

/* Stop watching [addr, addr+len); blocked faulters are woken. Thread safety: any thread. */
FL_API int fl_uffd_unregister(struct fl_uffd *u, void *addr, size_t len);

/* ---------------------------------------------------------------- resolve */

/*
 * Resolve flags. Each operation accepts only the ones listed on it and
 * returns -EINVAL for any other.
 */
enum fl_resolve_flags {
	FL_RESOLVE_DONTWAKE = 1u << 0,		/* do not wake faulters; call fl_uffd_wake() later */
	FL_RESOLVE_WP = 1u << 1,		/* copy/continue: map write-protected;
						   writeprotect: protect (unset: unprotect) */
	FL_RESOLVE_ALLOW_SRC_HOLES = 1u << 2,	/* move: skip holes in the source */
};

/*
 * The convention every resolve call follows:
 *
 *   return 0         the whole range was done;
 *   return -errno    the error that stopped the operation, and *ret_done
 *                    (if not NULL) holds the bytes done before it, from the
 *                    start of the range: 0 means nothing was done.
 *
 * *ret_done is always written when ret_done is not NULL. When the kernel
 * reports partial progress without a reason, the library continues from
 * where it stopped, so the error returned is always the real one:
 *   -EEXIST   a page is already there ("already there"; with *ret_done the
 *             pages before it were installed);
 *   -EAGAIN   nothing more could be done because a fork/remap/remove/unmap
 *             event is pending: read the events, then retry (never spin;
 *             it lasts until the thread that caused the event has resumed,
 *             a little after the event is read, so retry with a back-off);
 *   -ENOENT   the range is gone or changed (or a MOVE source hole);
 *   -ESRCH    the process that owns the memory exited (-ENOSPC on pre-4.14
 *             kernels is reported as -ESRCH);
 *   -EOPNOTSUPP  this kernel cannot do the operation at all (MOVE before
 *             6.8, POISON before 6.6);
 *   -EINVAL   bad arguments, or an operation the range's memory type does
 *             not allow (the kernel does not tell them apart: ZEROPAGE on
 *             hugetlbfs is -EINVAL; check fl_uffd_register's ioctls first);
 *   -EFAULT   CONTINUE with no page in the page cache at that offset.
 * @len and addresses must be multiples of the range's page size.
 * Thread safety: any thread; all resolve calls may run concurrently.
 */

/* UFFDIO_COPY. Flags: DONTWAKE, WP. */
FL_API int fl_uffd_copy(struct fl_uffd *u, void *dst, const void *src, size_t len,
			uint32_t flags, size_t *ret_done);
/* UFFDIO_ZEROPAGE. Flags: DONTWAKE. */
FL_API int fl_uffd_zeropage(struct fl_uffd *u, void *dst, size_t len, uint32_t flags,
			    size_t *ret_done);
/* UFFDIO_CONTINUE (minor faults). Flags: DONTWAKE, WP. */
FL_API int fl_uffd_continue(struct fl_uffd *u, void *dst, size_t len, uint32_t flags,
			    size_t *ret_done);
/* UFFDIO_MOVE (6.8). Flags: DONTWAKE, ALLOW_SRC_HOLES. */
FL_API int fl_uffd_move(struct fl_uffd *u, void *dst, void *src, size_t len, uint32_t flags,
			size_t *ret_done);
/* UFFDIO_POISON (6.6). Flags: DONTWAKE. */
FL_API int fl_uffd_poison(struct fl_uffd *u, void *dst, size_t len, uint32_t flags,
			  size_t *ret_done);
/*
 * UFFDIO_WRITEPROTECT. Flags: WP (protect; without it, unprotect), DONTWAKE
 * (only with unprotect: WP|DONTWAKE is -EINVAL, protecting never wakes).
 * All or nothing: returns 0 or -errno.
 */
FL_API int fl_uffd_writeprotect(struct fl_uffd *u, void *addr, size_t len, uint32_t flags);
/* UFFDIO_WAKE: wake the threads blocked on [addr, addr+len). Returns 0 or -errno. */
FL_API int fl_uffd_wake(struct fl_uffd *u, void *addr, size_t len);

/* ----------------------------------------------------------------- events */

enum fl_event_type {
	FL_EVENT_PAGEFAULT = 1,
	FL_EVENT_FORK = 2,
	FL_EVENT_REMAP = 3,
	FL_EVENT_REMOVE = 4,	/* MADV_DONTNEED / MADV_REMOVE: the range now reads as empty */
	FL_EVENT_UNMAP = 5,	/* munmap: the range is gone */
	FL_EVENT_UNKNOWN = 6,	/* a message type this library does not know (raw in .raw_type) */
};

/* Page fault flags. */
enum fl_fault_flags {
	FL_FAULT_WRITE = 1u << 0,
	FL_FAULT_WP = 1u << 1,		/* a write to a write-protected page */
	FL_FAULT_MINOR = 1u << 2,	/* page cache has the page; map it with CONTINUE */
};

struct fl_event {
	uint32_t type;		/* enum fl_event_type */
	uint32_t flags;		/* FL_FAULT_* for page faults */
	union {
		struct {
			void *addr;	/* exact faulting address (page-aligned unless EXACT_ADDRESS) */
			uint32_t tid;	/* faulting thread, with FL_FEAT_THREAD_ID; else 0 */
		} fault;
		struct {
			int fd;		/* the child's new userfaultfd; the reader owns it */
		} fork;
		struct {
			void *from;
			void *to;
			uint64_t len;
		} remap;
		struct {
			void *start;
			void *end;
		} range;	/* REMOVE and UNMAP: [start, end) */
		uint8_t raw_type;	/* UNKNOWN: the kernel's event code */
	};
};

/*
 * fl_uffd_read_events - read every queued message with one read() and decode
 * them into @ev (up to @n, at most 256 at a time).
 * Blocks for the first message unless the fd is non-blocking.
 * Returns the number of events (> 0), -EAGAIN if none is queued on a
 * non-blocking fd, -EINTR, -EINVAL, -EIO (the kernel returned a partial
 * message, which it never does), or another -errno.
 * A FORK event's fd belongs to the caller from here on.
 * Thread safety: any thread; each message goes to exactly one reader.
 */
FL_API int fl_uffd_read_events(struct fl_uffd *u, struct fl_event *ev, size_t n);

/* "pagefault", "fork", "remap", "remove", "unmap", "unknown"; NULL otherwise. */
FL_API const char *fl_event_type_name(uint32_t type);

/* ----------------------------------------------------------- PAGEMAP_SCAN */

/* A run of pages [start, end). */
struct fl_range {
	void *start;
	void *end;
};

enum fl_scan_flags {
	FL_SCAN_REPROTECT = 1u << 0,	/* write-protect the pages found again (WP_ASYNC) */
};

/*
 * fl_pagemap_open - open /proc/PID/pagemap (PID 0: this process) for
 * fl_pagemap_scan_written(). *@ret_fd is O_CLOEXEC and the caller's to close.
 * Thread safety: any thread.
 */
FL_API int fl_pagemap_open(pid_t pid, int *ret_fd);

/*
 * fl_pagemap_scan_written - the pages written since they were last
 * write-protected in a range registered with FL_REGISTER_WP on a userfaultfd
 * opened with FL_FEAT_WP_ASYNC (PAGEMAP_SCAN, 6.7). Adjacent pages are merged
 * into runs, at most @n of them into @ranges. With FL_SCAN_REPROTECT the
 * pages returned are write-protected again atomically with the scan.
 * *@ret_next (may be NULL) receives where the walk stopped: addr+len when
 * the whole range was scanned, earlier when @ranges filled up; continue
 * from there.
 * Returns the number of runs (>= 0), -EOPNOTSUPP without PAGEMAP_SCAN,
 * -EINVAL, or another -errno.
 * Thread safety: any thread.
 */
FL_API int fl_pagemap_scan_written(int pagemap_fd, void *addr, size_t len, uint32_t flags,
				   struct fl_range *ranges, size_t n, void **ret_next);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_UFFD_H */
