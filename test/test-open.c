/* SPDX-License-Identifier: MIT */
/* Opening a userfaultfd by each path, the errors and log lines when it cannot, adopting fds. */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"
#include "tests.h"

static char last_log[512];
static int log_lines;

static void capture_log(enum fl_log_level level, const char *msg)
{
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", msg);
	log_lines++;
}

struct reader {
	volatile uint8_t *p;
	uint8_t seen;
};

static void *read_page(void *arg)
{
	struct reader *r = arg;

	r->seen = r->p[100];
	return NULL;
}

/* A fault on one anonymous page, resolved by COPY through @u: proves the fd works. */
static void check_resolves(struct fl_uffd *u, uint8_t byte)
{
	size_t ps = t_page_size();
	uint8_t *p = t_map_anon(ps), *src = t_map_anon(ps);
	struct reader r = { .p = p };
	struct fl_event ev;
	unsigned long th;

	T_ASSERT_OK(fl_uffd_register(u, p, ps, FL_REGISTER_MISSING, NULL));
	th = t_thread_start(read_page, &r);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT(ev.fault.addr == p);
	t_fill(src, ps, byte);
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, NULL));
	t_thread_join(th);
	T_ASSERT_EQ(r.seen, byte);
	T_ASSERT_OK(fl_uffd_unregister(u, p, ps));
	munmap(p, ps);
	munmap(src, ps);
}

TEST(open_each_path)
{
	static const enum fl_uffd_path paths[] = {
		FL_UFFD_PATH_SYSCALL, FL_UFFD_PATH_DEV, FL_UFFD_PATH_USER_ONLY,
	};
	struct fl_features f;
	int worked = 0;

	unsetenv("FL_UFFD_PATH");
	fl_probe(&f);
	for (size_t i = 0; i < 3; i++) {
		struct fl_uffd_opts o = { .sz = sizeof(o), .path = paths[i] };
		struct fl_uffd *u = NULL;
		int r = fl_uffd_open(&o, &u);

		if (f.path_error[paths[i]]) {
			/* The probe said this path fails here: open must fail too, never crash. */
			T_ASSERT(r < 0);
			continue;
		}
		T_ASSERT_OK(r);
		T_ASSERT_EQ(fl_uffd_path(u), paths[i]);
		T_ASSERT(fl_uffd_fd(u) >= 0);
		T_ASSERT(fcntl(fl_uffd_fd(u), F_GETFD) & FD_CLOEXEC);
		check_resolves(u, (uint8_t)('a' + i));
		fl_uffd_close(u);
		worked++;
	}
	T_ASSERT(worked > 0);
	if (geteuid() == 0)
		T_ASSERT_EQ(worked, 3);	/* root may use every path on a 6.1+ kernel */
}

TEST(open_path_env_override)
{
	struct fl_uffd_opts o = { .sz = sizeof(o), .path = FL_UFFD_PATH_SYSCALL };
	struct fl_features f;
	struct fl_uffd *u = NULL;

	fl_probe(&f);
	if (f.path_error[FL_UFFD_PATH_USER_ONLY])
		T_SKIP("user-only path unavailable: %s", strerror(-f.path_error[FL_UFFD_PATH_USER_ONLY]));
	setenv("FL_UFFD_PATH", "user-only", 1);
	T_ASSERT_OK(fl_uffd_open(&o, &u));
	T_ASSERT_EQ(fl_uffd_path(u), FL_UFFD_PATH_USER_ONLY);
	fl_uffd_close(u);
	setenv("FL_UFFD_PATH", "bogus", 1);
	fl_set_log_fn(capture_log);
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EINVAL);
	T_ASSERT(strstr(last_log, "FL_UFFD_PATH=bogus") != NULL);
	unsetenv("FL_UFFD_PATH");
}

TEST(open_missing_feature)
{
	struct fl_features f, old;
	struct fl_uffd_opts o = { .sz = sizeof(o), .features = FL_FEAT_MOVE };
	struct fl_uffd *u = NULL;

	/* Pretend to be a 6.7 kernel: everything but MOVE. */
	fl_probe(&old);
	f = old;
	f.features &= ~(uint64_t)FL_FEAT_MOVE;
	f.kernel_features &= ~(uint64_t)UFFD_FEATURE_MOVE;
	fl__probe_set_for_test(&f);
	fl_set_log_fn(capture_log);
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EOPNOTSUPP);
	T_ASSERT(strstr(last_log, "lacks feature move") != NULL);
	T_ASSERT(u == NULL);

	/* Optional features are dropped silently when missing, kept when present. */
	o.features = 0;
	o.optional = FL_FEAT_MOVE | FL_FEAT_THREAD_ID;
	T_ASSERT_OK(fl_uffd_open(&o, &u));
	T_ASSERT_EQ(fl_uffd_features(u) & FL_FEAT_MOVE, 0);
	T_ASSERT_EQ(fl_uffd_features(u) & FL_FEAT_THREAD_ID, old.features & FL_FEAT_THREAD_ID);
	fl_uffd_close(u);
	fl__probe_set_for_test(&old);
}

/* Deny userfaultfd(2) with @sys_err and USERFAULTFD_IOC_NEW with @ioc_err, as a policy would. */
static void deny_uffd(int sys_err, int ioc_err)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)sys_err),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)USERFAULTFD_IOC_NEW, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)ioc_err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };

	T_ASSERT_SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	T_ASSERT_SYS(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog));
}

static void denied_eperm(void *arg)
{
	struct fl_uffd *u = NULL;

	(void)arg;
	unsetenv("FL_UFFD_PATH");
	deny_uffd(EPERM, EACCES);
	fl_set_log_fn(capture_log);
	log_lines = 0;
	T_ASSERT_ERR(fl_uffd_open(NULL, &u), EPERM);
	T_ASSERT_EQ(log_lines, 1);	/* exactly one line, naming what to enable */
	T_ASSERT(strstr(last_log, "vm.unprivileged_userfaultfd") != NULL);
	T_ASSERT(strstr(last_log, "CAP_SYS_PTRACE") != NULL);
	T_ASSERT(strstr(last_log, "/dev/userfaultfd") != NULL);
	T_ASSERT(u == NULL);
}

static void denied_enosys(void *arg)
{
	struct fl_uffd_opts o = { .sz = sizeof(o), .path = FL_UFFD_PATH_SYSCALL };
	struct fl_uffd *u = NULL;

	(void)arg;
	unsetenv("FL_UFFD_PATH");
	deny_uffd(ENOSYS, ENOTTY);
	fl_set_log_fn(capture_log);
	/* Without access to /dev/userfaultfd, a permission problem remains to be reported. */
	if (access("/dev/userfaultfd", R_OK | W_OK) == 0)
		T_ASSERT_ERR(fl_uffd_open(NULL, &u), ENOSYS);
	else
		T_ASSERT_ERR(fl_uffd_open(NULL, &u), EPERM);
	T_ASSERT_ERR(fl_uffd_open(&o, &u), ENOSYS);
	T_ASSERT(strstr(last_log, "CONFIG_USERFAULTFD") != NULL);
}

TEST(open_log_names_remedy)
{
	int st = t_run_child(denied_eperm, NULL);

	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	st = t_run_child(denied_enosys, NULL);
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(adopt_and_take)
{
	uint64_t feats = FL_FEAT_THREAD_ID;
	struct fl_uffd *u = NULL;
	int fd, pipefd[2];

	/* A fresh fd: take it and handshake through the library. */
	fd = fl__uffd_create(FL_UFFD_PATH_SYSCALL, false);
	if (fd < 0)
		fd = fl__uffd_create(FL_UFFD_PATH_USER_ONLY, false);
	T_ASSERT(fd >= 0);
	T_ASSERT_OK(fl_uffd_take(fd, feats, FL_UFFD_ADOPT_HANDSHAKE, &u));
	T_ASSERT_EQ(fl_uffd_fd(u), fd);
	T_ASSERT_EQ(fl_uffd_features(u), feats);
	T_ASSERT_EQ(fl_uffd_path(u), FL_UFFD_PATH_AUTO);
	check_resolves(u, 'T');
	fl_uffd_close(u);
	T_ASSERT(fcntl(fd, F_GETFD) < 0 && errno == EBADF);	/* taken: closed with the object */

	/* An fd handshaken elsewhere: adopt borrows it. */
	fd = fl__uffd_create(FL_UFFD_PATH_SYSCALL, false);
	if (fd < 0)
		fd = fl__uffd_create(FL_UFFD_PATH_USER_ONLY, false);
	T_ASSERT_OK(fl__uffd_api(fd, 0, NULL, NULL));
	T_ASSERT_OK(fl_uffd_adopt(fd, 0, 0, &u));
	check_resolves(u, 'A');
	fl_uffd_close(u);
	T_ASSERT(fcntl(fd, F_GETFD) >= 0);	/* adopted: still the caller's */
	/* The handshake happens once per fd: asking again is an error, not a silent success. */
	T_ASSERT_ERR(fl_uffd_adopt(fd, 0, FL_UFFD_ADOPT_HANDSHAKE, &u), EINVAL);
	close(fd);

	T_ASSERT_SYS(pipe(pipefd));
	T_ASSERT_ERR(fl_uffd_adopt(pipefd[0], 0, 0, &u), EBADF);
	T_ASSERT_ERR(fl_uffd_take(pipefd[0], 1ull << 50, 0, &u), EINVAL);
	T_ASSERT(fcntl(pipefd[0], F_GETFD) >= 0);	/* a failed take leaves the fd alone */
	close(pipefd[0]);
	close(pipefd[1]);
}

TEST(register_modes_and_ioctls)
{
	uint64_t feats = FL_FEAT_MISSING_SHMEM | FL_FEAT_MINOR_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM |
			 FL_FEAT_PAGEFAULT_FLAG_WP;
	struct fl_features f;
	struct fl_uffd *u, *u2;
	size_t ps = t_page_size();
	uint8_t *anon, *shm;
	uint32_t io = 0;
	int mfd;

	fl_probe(&f);
	u = t_uffd_open(feats & f.features, false);
	u2 = t_uffd_open(0, false);
	anon = t_map_anon(4 * ps);
	shm = t_map_memfd(4 * ps, &mfd);

	T_ASSERT_OK(fl_uffd_register(u, anon, 4 * ps, FL_REGISTER_MISSING, &io));
	T_ASSERT(io & FL_IOCTL_COPY);
	T_ASSERT(io & FL_IOCTL_ZEROPAGE);
	T_ASSERT(io & FL_IOCTL_WAKE);
	T_ASSERT_EQ(io & FL_IOCTL_CONTINUE, 0);	/* private anonymous memory has no page cache */
	T_ASSERT_EQ(io & ~f.mem[FL_MEM_ANON].ioctls, 0);
	if (f.features & FL_FEAT_MOVE)
		T_ASSERT(io & FL_IOCTL_MOVE);
	if (f.features & FL_FEAT_POISON)
		T_ASSERT(io & FL_IOCTL_POISON);
	/* Registered with another userfaultfd already. */
	T_ASSERT_ERR(fl_uffd_register(u2, anon, 4 * ps, FL_REGISTER_MISSING, NULL), EBUSY);
	T_ASSERT_OK(fl_uffd_unregister(u, anon, 4 * ps));

	if (f.features & FL_FEAT_PAGEFAULT_FLAG_WP) {
		T_ASSERT_OK(fl_uffd_register(u, anon, 4 * ps,
					     FL_REGISTER_MISSING | FL_REGISTER_WP, &io));
		T_ASSERT(io & FL_IOCTL_WRITEPROTECT);
		T_ASSERT_OK(fl_uffd_unregister(u, anon, 4 * ps));
	}
	/* MINOR needs a page cache: refused on private anonymous memory. */
	T_ASSERT(fl_uffd_register(u, anon, 4 * ps, FL_REGISTER_MINOR, NULL) < 0);
	/* Unaligned and empty ranges, and unknown modes. */
	T_ASSERT_ERR(fl_uffd_register(u, anon + 1, ps, FL_REGISTER_MISSING, NULL), EINVAL);
	T_ASSERT_ERR(fl_uffd_register(u, anon, 0, FL_REGISTER_MISSING, NULL), EINVAL);
	T_ASSERT_ERR(fl_uffd_register(u, anon, ps, 1u << 5, NULL), EINVAL);
	T_ASSERT_ERR(fl_uffd_register(u, anon, ps, 0, NULL), EINVAL);

	if ((f.features & FL_FEAT_MINOR_SHMEM) && (f.features & FL_FEAT_WP_HUGETLBFS_SHMEM)) {
		T_ASSERT_OK(fl_uffd_register(u, shm, 4 * ps,
					     FL_REGISTER_MISSING | FL_REGISTER_WP | FL_REGISTER_MINOR,
					     &io));
		T_ASSERT(io & FL_IOCTL_CONTINUE);
		T_ASSERT(io & FL_IOCTL_COPY);
		T_ASSERT(io & FL_IOCTL_WRITEPROTECT);
		T_ASSERT_OK(fl_uffd_unregister(u, shm, 4 * ps));
	}
	fl_uffd_close(u);
	fl_uffd_close(u2);
	close(mfd);
}

TEST(open_fork_denied_is_eperm)
{
	struct fl_features f, old;
	struct fl_uffd_opts o = { .sz = sizeof(o), .features = FL_FEAT_EVENT_FORK };
	struct fl_uffd *u = NULL;

	/* As a process without CAP_SYS_PTRACE sees it: the kernel has it, we may not use it. */
	fl_probe(&old);
	f = old;
	f.features &= ~(uint64_t)FL_FEAT_EVENT_FORK;
	f.denied = FL_FEAT_EVENT_FORK;
	fl__probe_set_for_test(&f);
	fl_set_log_fn(capture_log);
	T_ASSERT_ERR(fl_uffd_open(&o, &u), EPERM);
	T_ASSERT(strstr(last_log, "CAP_SYS_PTRACE") != NULL);
	/* As an optional feature it is simply left out. */
	o.features = 0;
	o.optional = FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMOVE;
	T_ASSERT_OK(fl_uffd_open(&o, &u));
	T_ASSERT_EQ(fl_uffd_features(u) & FL_FEAT_EVENT_FORK, 0);
	T_ASSERT_EQ(fl_uffd_features(u) & FL_FEAT_EVENT_REMOVE, FL_FEAT_EVENT_REMOVE);
	fl_uffd_close(u);
	fl__probe_set_for_test(&old);
}
