/* SPDX-License-Identifier: MIT */
/* Opening, adopting, registering, resolving and reading events on a userfaultfd. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline.h"
#include "compat.h"
#include "internal.h"

#define MAX_MSGS 256

static int parse_path_env(enum fl_uffd_path *path)
{
	const char *s = getenv("FL_UFFD_PATH");

	if (!s || !*s)
		return 0;
	if (!strcmp(s, "syscall"))
		*path = FL_UFFD_PATH_SYSCALL;
	else if (!strcmp(s, "dev"))
		*path = FL_UFFD_PATH_DEV;
	else if (!strcmp(s, "user-only"))
		*path = FL_UFFD_PATH_USER_ONLY;
	else if (!strcmp(s, "auto"))
		*path = FL_UFFD_PATH_AUTO;
	else {
		fl__err("FL_UFFD_PATH=%s: expected syscall, dev, user-only or auto", s);
		return -EINVAL;
	}
	return 0;
}

int fl__uffd_create(enum fl_uffd_path path, bool nonblock)
{
	int flags = O_CLOEXEC | (nonblock ? O_NONBLOCK : 0);
	int fd, dev, err;

	switch (path) {
	case FL_UFFD_PATH_SYSCALL:
	case FL_UFFD_PATH_USER_ONLY:
#ifdef __NR_userfaultfd
		if (path == FL_UFFD_PATH_USER_ONLY)
			flags |= UFFD_USER_MODE_ONLY;
		fd = (int)syscall(__NR_userfaultfd, flags);
		if (fd < 0) {
			err = errno;
			/* Kernels before 5.11 reject UFFD_USER_MODE_ONLY as an unknown flag. */
			if (path == FL_UFFD_PATH_USER_ONLY && err == EINVAL)
				return -EOPNOTSUPP;
			return -err;
		}
		return fd;
#else
		return -ENOSYS;
#endif
	case FL_UFFD_PATH_DEV:
		dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev < 0) {
			err = errno;
			return err == EACCES ? -EPERM : -err;
		}
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		err = errno;
		close(dev);
		if (fd < 0)
			return err == ENOTTY ? -EOPNOTSUPP : -err;
		return fd;
	case FL_UFFD_PATH_AUTO:
		break;
	}
	return -EINVAL;
}

int fl__uffd_api(int fd, uint64_t kernel_features, uint64_t *ret_features, uint64_t *ret_ioctls)
{
	struct uffdio_api api = { .api = UFFD_API, .features = kernel_features };

	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	if (ret_features)
		*ret_features = api.features;
	if (ret_ioctls)
		*ret_ioctls = api.ioctls;
	return 0;
}

/* What to enable for one path that failed with @err, for the log. */
static const char *path_remedy(enum fl_uffd_path path, int err)
{
	switch (path) {
	case FL_UFFD_PATH_SYSCALL:
		if (err == -EPERM)
			return "run as root, grant CAP_SYS_PTRACE, or set sysctl vm.unprivileged_userfaultfd=1";
		if (err == -ENOSYS)
			return "the kernel has no userfaultfd (CONFIG_USERFAULTFD) or a seccomp filter blocks it";
		break;
	case FL_UFFD_PATH_DEV:
		if (err == -EPERM)
			return "give this user read-write access to /dev/userfaultfd (e.g. a group with mode 0660)";
		if (err == -ENOENT)
			return "/dev/userfaultfd does not exist (kernel before 6.1, or not created)";
		if (err == -EOPNOTSUPP)
			return "/dev/userfaultfd does not know USERFAULTFD_IOC_NEW";
		break;
	case FL_UFFD_PATH_USER_ONLY:
		if (err == -EOPNOTSUPP)
			return "UFFD_USER_MODE_ONLY needs Linux 5.11";
		if (err == -EPERM)
			return "a security policy (seccomp or LSM) denies userfaultfd";
		break;
	case FL_UFFD_PATH_AUTO:
		break;
	}
	return NULL;
}

static void log_path_failure(enum fl_uffd_path path, int err)
{
	const char *remedy = path_remedy(path, err);

	fl__err("userfaultfd via %s: %s%s%s", fl_uffd_path_name(path), strerror(-err),
		remedy ? ": " : "", remedy ? remedy : "");
}

/* Open a descriptor on the first path that works; *ret_path says which. */
static int create_any(enum fl_uffd_path path, bool nonblock, enum fl_uffd_path *ret_path)
{
	static const enum fl_uffd_path order[] = {
		FL_UFFD_PATH_SYSCALL, FL_UFFD_PATH_DEV, FL_UFFD_PATH_USER_ONLY,
	};
	int errs[3], fd;
	bool perm = false;

	if (path != FL_UFFD_PATH_AUTO) {
		fd = fl__uffd_create(path, nonblock);
		if (fd < 0) {
			log_path_failure(path, fd);
			return fd == -EOPNOTSUPP || fd == -ENOENT ? -ENOSYS : fd;
		}
		*ret_path = path;
		return fd;
	}
	for (size_t i = 0; i < 3; i++) {
		fd = fl__uffd_create(order[i], nonblock);
		if (fd >= 0) {
			*ret_path = order[i];
			return fd;
		}
		errs[i] = fd;
		if (fd == -EPERM || fd == -EACCES)
			perm = true;
	}
	if (perm) {
		/* One line: every way in that permissions closed, and how to open one. */
		fl__err("userfaultfd not permitted; enable one of: %s; or %s%s",
			path_remedy(FL_UFFD_PATH_SYSCALL, -EPERM),
			errs[1] == -EPERM ? path_remedy(FL_UFFD_PATH_DEV, -EPERM)
					  : "a kernel with /dev/userfaultfd (6.1) and access to it",
			errs[2] == -EPERM ? " (a seccomp or LSM policy also denies user-mode-only)"
					  : "");
		return -EPERM;
	}
	for (size_t i = 0; i < 3; i++)
		log_path_failure(order[i], errs[i]);
	return -ENOSYS;
}

static void log_missing(uint64_t missing)
{
	for (uint64_t bit = 1; bit && bit <= missing; bit <<= 1)
		if (missing & bit)
			fl__err("userfaultfd: this kernel lacks feature %s", fl_feature_name(bit));
}

FL_API int fl_uffd_open(const struct fl_uffd_opts *opts, struct fl_uffd **ret)
{
	struct fl_uffd_opts o = { .sz = sizeof(o) };
	struct fl_features probe;
	enum fl_uffd_path path;
	uint64_t want, kwant, kgot = 0;
	struct fl_uffd *u;
	int fd, r;

	if (!ret)
		return fl__einval(__func__, "ret is NULL");
	if (fl__opts_copy(&o, sizeof(o), opts, "fl_uffd_open") < 0)
		return -EINVAL;
	if ((o.features | o.optional) & ~FL_FEAT_ALL)
		return fl__einval(__func__, "unknown feature bits %#llx",
				  (unsigned long long)((o.features | o.optional) & ~FL_FEAT_ALL));
	if (o.flags & ~(uint32_t)FL_UFFD_NONBLOCK)
		return fl__einval(__func__, "unknown flags %#x", o.flags);
	if ((unsigned)o.path >= FL_UFFD_PATH_COUNT)
		return fl__einval(__func__, "unknown path %u", (unsigned)o.path);
	path = o.path;
	r = parse_path_env(&path);
	if (r < 0)
		return r;

	fl_probe(&probe);
	if (o.features & ~probe.features) {
		/* Without any working path the probe knows no features: say why first. */
		if (probe.default_path == FL_UFFD_PATH_AUTO) {
			fd = create_any(path, false, &path);
			if (fd >= 0)
				close(fd);
			else
				return fd;
		}
		if (o.features & probe.denied) {
			fl__err("userfaultfd: feature event_fork needs CAP_SYS_PTRACE");
			return -EPERM;
		}
		log_missing(o.features & ~probe.features);
		return -EOPNOTSUPP;
	}
	want = o.features | (o.optional & probe.features);

	fd = create_any(path, o.flags & FL_UFFD_NONBLOCK, &path);
	if (fd < 0)
		return fd;

	kwant = fl__feat_to_kernel(want);
	r = fl__uffd_api(fd, kwant, &kgot, NULL);
	if (r == -EPERM && (kwant & UFFD_FEATURE_EVENT_FORK) && !(o.features & FL_FEAT_EVENT_FORK)) {
		/* Only optional: the refused handshake left the fd untouched; go on without it. */
		kwant &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
		want &= ~(uint64_t)FL_FEAT_EVENT_FORK;
		r = fl__uffd_api(fd, kwant, &kgot, NULL);
	}
	if (r == -EPERM && (kwant & UFFD_FEATURE_EVENT_FORK)) {
		fl__err("userfaultfd: feature event_fork needs CAP_SYS_PTRACE");
	} else if (r < 0) {
		fl__err("userfaultfd: UFFDIO_API handshake failed: %s", strerror(-r));
	}
	if (r < 0) {
		close(fd);
		return r == -EINVAL ? -EOPNOTSUPP : r;
	}

	u = calloc(1, sizeof(*u));
	if (!u) {
		close(fd);
		return -ENOMEM;
	}
	/* WP_ASYNC implies WP_UNPOPULATED. */
	if (kwant & UFFD_FEATURE_WP_ASYNC)
		kwant |= UFFD_FEATURE_WP_UNPOPULATED;
	*u = (struct fl_uffd){
		.fd = fd,
		.owns_fd = true,
		.path = path,
		.kernel_features = kwant,
		.features = fl__feat_from_kernel(kwant) | (want & FL_FEAT_PAGEMAP_SCAN),
	};
	fl__debug("userfaultfd %d opened via %s", fd, fl_uffd_path_name(path));
	*ret = u;
	return 0;
}

static bool is_userfaultfd(int fd)
{
	char link[64], target[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return errno != EBADF;	/* no /proc: cannot tell, trust the caller */
	target[n] = '\0';
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

static int adopt(int fd, uint64_t features, uint32_t flags, bool take, struct fl_uffd **ret)
{
	struct fl_uffd *u;
	uint64_t k;
	int r;

	if (fd < 0 || !ret)
		return fd < 0 ? -EBADF : fl__einval(take ? "fl_uffd_take" : "fl_uffd_adopt",
						    "ret is NULL");
	if (features & ~FL_FEAT_ALL || flags & ~(uint32_t)FL_UFFD_ADOPT_HANDSHAKE)
		return fl__einval(take ? "fl_uffd_take" : "fl_uffd_adopt",
				  "unknown feature bits %#llx or flags %#x",
				  (unsigned long long)(features & ~FL_FEAT_ALL),
				  flags & ~(uint32_t)FL_UFFD_ADOPT_HANDSHAKE);
	if (fcntl(fd, F_GETFD) < 0 || !is_userfaultfd(fd))
		return -EBADF;
	k = fl__feat_to_kernel(features);
	if (flags & FL_UFFD_ADOPT_HANDSHAKE) {
		r = fl__uffd_api(fd, k, NULL, NULL);
		if (r == -EINVAL) {
			struct fl_features f;

			/* Features it has: then the fd can only have been handshaken before. */
			fl_probe(&f);
			if (features & ~f.features) {
				log_missing(features & ~f.features);
				return -EOPNOTSUPP;
			}
			fl__err("userfaultfd: fd %d was already handshaken", fd);
			return -EINVAL;
		}
		if (r < 0) {
			fl__err("userfaultfd: UFFDIO_API on adopted fd %d failed: %s", fd, strerror(-r));
			return r;
		}
	}
	if (k & UFFD_FEATURE_WP_ASYNC)
		k |= UFFD_FEATURE_WP_UNPOPULATED;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	*u = (struct fl_uffd){
		.fd = fd,
		.owns_fd = take,
		.path = FL_UFFD_PATH_AUTO,
		.kernel_features = k,
		.features = fl__feat_from_kernel(k) | (features & FL_FEAT_PAGEMAP_SCAN),
	};
	*ret = u;
	return 0;
}

FL_API int fl_uffd_adopt(int fd, uint64_t features, uint32_t flags, struct fl_uffd **ret)
{
	return adopt(fd, features, flags, false, ret);
}

FL_API int fl_uffd_take(int fd, uint64_t features, uint32_t flags, struct fl_uffd **ret)
{
	return adopt(fd, features, flags, true, ret);
}

FL_API void fl_uffd_close(struct fl_uffd *u)
{
	if (!u)
		return;
	if (u->owns_fd && u->fd >= 0)
		close(u->fd);
	free(u);
}

FL_API int fl_uffd_fd(const struct fl_uffd *u)
{
	return u ? u->fd : fl__einval(__func__, "u is NULL");
}

FL_API uint64_t fl_uffd_features(const struct fl_uffd *u)
{
	return u ? u->features : 0;
}

FL_API enum fl_uffd_path fl_uffd_path(const struct fl_uffd *u)
{
	return u ? u->path : FL_UFFD_PATH_AUTO;
}

/* ------------------------------------------------------------ registering */

FL_API int fl_uffd_register(struct fl_uffd *u, void *addr, size_t len, uint32_t mode,
			    uint32_t *ret_ioctls)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = fl__register_mode_to_kernel(mode),
	};

	if (!u || !len || !mode || (mode & ~(uint32_t)(FL_REGISTER_MISSING | FL_REGISTER_WP |
						       FL_REGISTER_MINOR)))
		return fl__einval(__func__, "%s", !u ? "u is NULL" : !len ? "len is 0" :
				  !mode ? "mode is 0" : "unknown mode bits");
	if (ioctl(u->fd, UFFDIO_REGISTER, &reg) < 0) {
		if (errno == EINVAL)
			return fl__einval(__func__, "the kernel refused [%p, +%zu): not aligned "
					  "to the memory's page size, not mapped, or a mode this "
					  "memory does not support", addr, len);
		return -errno;
	}
	if (ret_ioctls)
		*ret_ioctls = fl__ioctls_from_kernel(reg.ioctls);
	return 0;
}

FL_API int fl_uffd_unregister(struct fl_uffd *u, void *addr, size_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };

	if (!u || !len)
		return fl__einval(__func__, "%s", !u ? "u is NULL" : "len is 0");
	if (ioctl(u->fd, UFFDIO_UNREGISTER, &range) < 0) {
		if (errno == EINVAL)
			return fl__einval(__func__, "the kernel refused [%p, +%zu): not aligned "
					  "to the memory's page size, or not mapped", addr, len);
		return -errno;
	}
	return 0;
}

/* ---------------------------------------------------------------- resolve */

enum op { OP_COPY, OP_ZEROPAGE, OP_CONTINUE, OP_MOVE, OP_POISON };

/* One ioctl over [dst+done, dst+len). Returns the progress field; *err = errno or 0. */
static int64_t resolve_once(int fd, enum op op, uint64_t dst, uint64_t src, uint64_t len,
			    uint64_t mode, int *err)
{
	int r = -1;
	int64_t res = 0;

	switch (op) {
	case OP_COPY: {
		struct uffdio_copy a = { .dst = dst, .src = src, .len = len, .mode = mode };

		r = ioctl(fd, UFFDIO_COPY, &a);
		res = a.copy;
		break;
	}
	case OP_ZEROPAGE: {
		struct uffdio_zeropage a = { .range = { dst, len }, .mode = mode };

		r = ioctl(fd, UFFDIO_ZEROPAGE, &a);
		res = a.zeropage;
		break;
	}
	case OP_CONTINUE: {
		struct uffdio_continue a = { .range = { dst, len }, .mode = mode };

		r = ioctl(fd, UFFDIO_CONTINUE, &a);
		res = a.mapped;
		break;
	}
	case OP_MOVE: {
		struct uffdio_move a = { .dst = dst, .src = src, .len = len, .mode = mode };

		r = ioctl(fd, UFFDIO_MOVE, &a);
		res = a.move;
		break;
	}
	case OP_POISON: {
		struct uffdio_poison a = { .range = { dst, len }, .mode = mode };

		r = ioctl(fd, UFFDIO_POISON, &a);
		res = a.updated;
		break;
	}
	}
	*err = r < 0 ? errno : 0;
	return r < 0 ? res : (int64_t)len;
}

static int normalize_err(int e)
{
	if (e == ENOSPC)	/* pre-4.14 kernels: process exited */
		return -ESRCH;
	return -e;
}

/*
 * The one convention: whole range done -> 0; otherwise the error that stopped
 * the operation, with the bytes done before it. The kernel reports a prefix
 * as EAGAIN with the byte count, without the reason the rest failed; continue
 * from there, so the caller always sees the real reason (EEXIST, EAGAIN for a
 * pending event, ...).
 */
static int resolve(struct fl_uffd *u, enum op op, uint64_t dst, uint64_t src, uint64_t len,
		   uint64_t mode, size_t *ret_done)
{
	static const char *const fn[] = {
		[OP_COPY] = "fl_uffd_copy", [OP_ZEROPAGE] = "fl_uffd_zeropage",
		[OP_CONTINUE] = "fl_uffd_continue", [OP_MOVE] = "fl_uffd_move",
		[OP_POISON] = "fl_uffd_poison",
	};
	uint64_t done = 0, ps = fl__page_size();
	int ret = 0;

	/* COPY reads its source with copy_from_user: any alignment will do there. */
	if ((dst | len | (op == OP_MOVE ? src : 0)) % ps)
		return fl__einval(fn[op], "dst %#llx%s or len %llu is not a multiple of the page "
				  "size (%llu)", (unsigned long long)dst,
				  op == OP_MOVE ? ", src" : "", (unsigned long long)len,
				  (unsigned long long)ps);
	while (done < len) {
		int e;
		int64_t res = resolve_once(u->fd, op, dst + done,
					   op == OP_MOVE || op == OP_COPY ? src + done : 0,
					   len - done, mode, &e);

		if (!e) {
			done = len;
			break;
		}
		if (res > 0) {
			if ((uint64_t)res > len - done) {	/* never trust a count past the range */
				ret = -EIO;
				break;
			}
			done += (uint64_t)res;
			if (e == EAGAIN)
				continue;
			ret = normalize_err(e);
			break;
		}
		ret = res < 0 ? normalize_err((int)-res) : normalize_err(e);
		break;
	}
	if (ret == -EINVAL && !done && (op == OP_MOVE || op == OP_POISON)) {
		struct fl_features f;

		fl_probe(&f);
		if (!(f.features & (op == OP_MOVE ? FL_FEAT_MOVE : FL_FEAT_POISON)))
			ret = -EOPNOTSUPP;
	}
	if (ret == -EINVAL)
		fl__debug("%s: the kernel refused [%#llx, +%llu) after %llu bytes with EINVAL "
			  "(not registered for this, or a page size the memory does not have)",
			  fn[op], (unsigned long long)dst, (unsigned long long)len,
			  (unsigned long long)done);
	if (ret_done)
		*ret_done = (size_t)done;
	return ret;
}

static int check(const char *fn, struct fl_uffd *u, size_t len, uint32_t flags, uint32_t allowed,
		 size_t *ret_done)
{
	if (ret_done)
		*ret_done = 0;
	if (!u || !len || (flags & ~allowed))
		return fl__einval(fn, "%s", !u ? "u is NULL" : !len ? "len is 0" :
				  "flags not allowed here");
	return 0;
}

FL_API int fl_uffd_copy(struct fl_uffd *u, void *dst, const void *src, size_t len,
			uint32_t flags, size_t *ret_done)
{
	uint64_t mode = 0;
	int r = check(__func__, u, len, flags, FL_RESOLVE_DONTWAKE | FL_RESOLVE_WP, ret_done);

	if (r < 0)
		return r;
	if (flags & FL_RESOLVE_DONTWAKE)
		mode |= UFFDIO_COPY_MODE_DONTWAKE;
	if (flags & FL_RESOLVE_WP)
		mode |= UFFDIO_COPY_MODE_WP;
	return resolve(u, OP_COPY, (uintptr_t)dst, (uintptr_t)src, len, mode, ret_done);
}

FL_API int fl_uffd_zeropage(struct fl_uffd *u, void *dst, size_t len, uint32_t flags,
			    size_t *ret_done)
{
	int r = check(__func__, u, len, flags, FL_RESOLVE_DONTWAKE, ret_done);

	if (r < 0)
		return r;
	return resolve(u, OP_ZEROPAGE, (uintptr_t)dst, 0, len,
		       flags & FL_RESOLVE_DONTWAKE ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0, ret_done);
}

FL_API int fl_uffd_continue(struct fl_uffd *u, void *dst, size_t len, uint32_t flags,
			    size_t *ret_done)
{
	uint64_t mode = 0;
	int r = check(__func__, u, len, flags, FL_RESOLVE_DONTWAKE | FL_RESOLVE_WP, ret_done);

	if (r < 0)
		return r;
	if (flags & FL_RESOLVE_DONTWAKE)
		mode |= UFFDIO_CONTINUE_MODE_DONTWAKE;
	if (flags & FL_RESOLVE_WP)
		mode |= UFFDIO_CONTINUE_MODE_WP;
	return resolve(u, OP_CONTINUE, (uintptr_t)dst, 0, len, mode, ret_done);
}

FL_API int fl_uffd_move(struct fl_uffd *u, void *dst, void *src, size_t len, uint32_t flags,
			size_t *ret_done)
{
	uint64_t mode = 0;
	int r = check(__func__, u, len, flags, FL_RESOLVE_DONTWAKE | FL_RESOLVE_ALLOW_SRC_HOLES, ret_done);

	if (r < 0)
		return r;
	if (flags & FL_RESOLVE_DONTWAKE)
		mode |= UFFDIO_MOVE_MODE_DONTWAKE;
	if (flags & FL_RESOLVE_ALLOW_SRC_HOLES)
		mode |= UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
	return resolve(u, OP_MOVE, (uintptr_t)dst, (uintptr_t)src, len, mode, ret_done);
}

FL_API int fl_uffd_poison(struct fl_uffd *u, void *dst, size_t len, uint32_t flags,
			  size_t *ret_done)
{
	int r = check(__func__, u, len, flags, FL_RESOLVE_DONTWAKE, ret_done);

	if (r < 0)
		return r;
	return resolve(u, OP_POISON, (uintptr_t)dst, 0, len,
		       flags & FL_RESOLVE_DONTWAKE ? UFFDIO_POISON_MODE_DONTWAKE : 0, ret_done);
}

FL_API int fl_uffd_writeprotect(struct fl_uffd *u, void *addr, size_t len, uint32_t flags)
{
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)addr, len } };
	int r = check(__func__, u, len, flags, FL_RESOLVE_DONTWAKE | FL_RESOLVE_WP, NULL);

	if (r < 0)
		return r;
	/* The kernel refuses DONTWAKE with WP: protecting never wakes anyone. */
	if ((flags & FL_RESOLVE_WP) && (flags & FL_RESOLVE_DONTWAKE))
		return fl__einval(__func__, "FL_RESOLVE_DONTWAKE with FL_RESOLVE_WP: protecting "
				  "never wakes anyone");
	if (flags & FL_RESOLVE_WP)
		wp.mode |= UFFDIO_WRITEPROTECT_MODE_WP;
	if (flags & FL_RESOLVE_DONTWAKE)
		wp.mode |= UFFDIO_WRITEPROTECT_MODE_DONTWAKE;
	if (ioctl(u->fd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return normalize_err(errno);
	return 0;
}

FL_API int fl_uffd_wake(struct fl_uffd *u, void *addr, size_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };

	if (!u || !len)
		return fl__einval(__func__, "%s", !u ? "u is NULL" : "len is 0");
	if (ioctl(u->fd, UFFDIO_WAKE, &range) < 0)
		return normalize_err(errno);
	return 0;
}

/* ----------------------------------------------------------------- events */

static void decode(const struct uffd_msg *m, struct fl_event *e)
{
	*e = (struct fl_event){ 0 };
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		e->type = FL_EVENT_PAGEFAULT;
		if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE)
			e->flags |= FL_FAULT_WRITE;
		if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			e->flags |= FL_FAULT_WP;
		if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)
			e->flags |= FL_FAULT_MINOR;
		e->fault.addr = (void *)(uintptr_t)m->arg.pagefault.address;
		e->fault.tid = m->arg.pagefault.feat.ptid;
		break;
	case UFFD_EVENT_FORK:
		e->type = FL_EVENT_FORK;
		e->fork.fd = (int)m->arg.fork.ufd;
		break;
	case UFFD_EVENT_REMAP:
		e->type = FL_EVENT_REMAP;
		e->remap.from = (void *)(uintptr_t)m->arg.remap.from;
		e->remap.to = (void *)(uintptr_t)m->arg.remap.to;
		e->remap.len = m->arg.remap.len;
		break;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		e->type = m->event == UFFD_EVENT_REMOVE ? FL_EVENT_REMOVE : FL_EVENT_UNMAP;
		e->range.start = (void *)(uintptr_t)m->arg.remove.start;
		e->range.end = (void *)(uintptr_t)m->arg.remove.end;
		break;
	default:
		e->type = FL_EVENT_UNKNOWN;
		e->raw_type = m->event;
		break;
	}
}

FL_API int fl_uffd_read_events(struct fl_uffd *u, struct fl_event *ev, size_t n)
{
	struct uffd_msg msgs[MAX_MSGS];
	ssize_t r;
	size_t got;

	if (!u || !ev || !n)
		return fl__einval(__func__, "%s", !u ? "u is NULL" : !ev ? "ev is NULL" : "n is 0");
	if (n > MAX_MSGS)
		n = MAX_MSGS;
	r = read(u->fd, msgs, n * sizeof(msgs[0]));
	if (r < 0)
		return -errno;
	if (r == 0 || r % (ssize_t)sizeof(msgs[0]))
		return -EIO;	/* the kernel always returns whole messages */
	got = (size_t)r / sizeof(msgs[0]);
	for (size_t i = 0; i < got; i++)
		decode(&msgs[i], &ev[i]);
	return (int)got;
}
