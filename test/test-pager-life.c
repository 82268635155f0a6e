/* SPDX-License-Identifier: MIT */
/* The pager's failures and life cycle: store errors, slow pages, stop, destroy, other processes. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"
#include "pager/supply.h"
#include "pager/pager-int.h"

#define SEED 0xfa11u

/*
 * A store of the pattern that fails for one page (-EIO) and can hold one
 * page's read at a gate: it signals @entered, then blocks reading @gate
 * until the test writes it. Async-signal-safe, for SIGBUS mode.
 */
struct fs {
	struct fl_store *s;
	size_t ps;
	_Atomic long fail_page;		/* -1: none */
	int fail_ret;			/* what a read of fail_page returns: -EIO, or a bad value */
	long gate_page;			/* -1: none */
	long gate_n;			/* pages gated from gate_page on (default 1) */
	int gate, entered;		/* eventfds, semaphores: one count per read */
	_Atomic unsigned int reads;
	_Atomic unsigned int gate_reads;
};

static int fs_read(void *ud, uint64_t off, void *buf, size_t len, size_t page_size, uint64_t *holes)
{
	struct fs *f = ud;
	long first = (long)(off / f->ps), n = (long)(len / f->ps), fail = atomic_load(&f->fail_page);

	(void)page_size;
	(void)holes;
	atomic_fetch_add(&f->reads, 1);
	if (f->gate_page >= 0 && f->gate_page < first + n && first < f->gate_page + f->gate_n) {
		uint64_t v = 1;

		atomic_fetch_add(&f->gate_reads, 1);
		if (write(f->entered, &v, sizeof(v)) != sizeof(v) ||
		    read(f->gate, &v, sizeof(v)) != sizeof(v))
			return -EIO;
	}
	if (fail >= first && fail < first + n)
		return f->fail_ret;	/* the buffer is left as it was */
	fl_pattern_fill(buf, off, len, SEED);
	return 0;
}

static struct fs *fs_new(size_t npages)
{
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = fs_read };
	struct fs *f = calloc(1, sizeof(*f));

	T_ASSERT(f);
	f->ps = t_page_size();
	atomic_init(&f->fail_page, -1);
	f->fail_ret = -EIO;
	f->gate_page = -1;
	f->gate_n = 1;
	f->gate = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
	f->entered = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
	T_ASSERT(f->gate >= 0 && f->entered >= 0);
	T_ASSERT_OK(fl_store_create(&ops, f, 0, npages * f->ps, &f->s));
	return f;
}

static void fs_free(struct fs *f)
{
	fl_store_destroy(f->s);
	close(f->gate);
	close(f->entered);
	free(f);
}

/* Wait for one store read to enter the gate. */
static void wait_entered(struct fs *f)
{
	uint64_t v;

	t_wait_readable(f->entered);
	T_ASSERT_EQ(read(f->entered, &v, sizeof(v)), (ssize_t)sizeof(v));
}

static unsigned int cpus(void)
{
	cpu_set_t s;

	T_ASSERT_SYS(sched_getaffinity(0, sizeof(s), &s));
	return (unsigned int)CPU_COUNT(&s);
}

static uint8_t pattern_byte(size_t off)
{
	uint64_t w = fl_pattern_word(SEED, off & ~(size_t)7);

	return (uint8_t)(w >> (8 * (off & 7)));
}

static uint8_t *page(struct fl_region *r, size_t pg)
{
	return (uint8_t *)fl_region_addr(r) + pg * t_page_size();
}

static void wait_fault_queued(struct fl_pager *p)
{
	/* poll does not consume: the fault stays queued for whoever reads it. */
	t_wait_readable(fl_pager_fd(p));
}

/* Until the pager has read @n faults of @r (the counter is raised as each is read). */
static void wait_faults(struct fl_region *r, uint64_t n)
{
	struct fl_region_stats st = { .sz = sizeof(st) };

	for (;;) {
		T_ASSERT_OK(fl_region_stats(r, &st));
		if (st.faults >= n)
			return;
		sched_yield();
	}
}

/* ---------------------------------------------------------- store errors */

static __thread sigjmp_buf bus_jmp;
static _Atomic(void *) bus_addr;
static _Atomic int bus_code, bus_tid, bus_count, bus_sig;

static void on_bus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	atomic_store(&bus_sig, sig);
	atomic_store(&bus_addr, si->si_addr);
	atomic_store(&bus_code, si->si_code);
	atomic_store(&bus_tid, (int)gettid());
	atomic_fetch_add(&bus_count, 1);
	siglongjmp(bus_jmp, 1);
}

static void catch_sigbus(void)
{
	struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO | SA_NODEFER };

	sigemptyset(&sa.sa_mask);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
}

/* For a test where the documented loud failure without FL_FEAT_POISON is SIGSEGV. */
static void catch_sigsegv(void)
{
	struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO | SA_NODEFER };

	sigemptyset(&sa.sa_mask);
	T_ASSERT_SYS(sigaction(SIGSEGV, &sa, NULL));
}

struct faulter {
	volatile uint8_t *p;
	int tid;
	bool bus;
	uint8_t v;
};

static void *faulter_main(void *arg)
{
	struct faulter *f = arg;

	f->tid = (int)gettid();
	if (sigsetjmp(bus_jmp, 1)) {
		f->bus = true;
		return NULL;
	}
	f->v = *f->p;
	return NULL;
}

struct errlog {
	_Atomic int calls;
	uint64_t off;
	int err;
	int efd;
};

static void on_error(struct fl_region *r, uint64_t off, int err, void *userdata)
{
	struct errlog *l = userdata;
	uint64_t one = 1;

	(void)r;
	l->off = off;
	l->err = err;
	atomic_fetch_add(&l->calls, 1);
	if (l->efd >= 0 && write(l->efd, &one, sizeof(one)) < 0)
		abort();
}

struct poison_case {
	enum fl_pager_mode mode;
	int fail_ret;	/* what the store's read of the failing page returns */
};

static void poison_child(void *arg)
{
	const struct poison_case *pc = arg;
	enum fl_pager_mode mode = pc->mode;
	size_t ps = t_page_size();
	struct fs *f = fs_new(16);
	struct errlog log = { .efd = -1 };
	struct fl_region_opts o = t_region_opts(f->s, 16 * ps);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_pager *p;
	struct fl_region *r;
	struct faulter a;

	/* Installed first: in SIGBUS mode the pager's handler chains to this one. */
	catch_sigbus();
	f->fail_ret = pc->fail_ret;
	atomic_store(&f->fail_page, 3);
	p = t_pager_new(mode, 2, 0);
	o.on_error = FL_ON_ERROR_POISON;
	o.on_error_fn = on_error;
	o.userdata = &log;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = (struct faulter){ .p = page(r, 3) };
	t_thread_join(t_thread_start(faulter_main, &a));
	T_ASSERT(a.bus);
	T_ASSERT_EQ(atomic_load(&bus_tid), a.tid);	/* the faulting thread, nobody else */
	T_ASSERT(atomic_load(&bus_addr) == (void *)page(r, 3));
	/* A poisoned page: BUS_MCEERR_AR, or BUS_ADRERR without CONFIG_MEMORY_FAILURE. */
	T_ASSERT(atomic_load(&bus_code) == BUS_MCEERR_AR || atomic_load(&bus_code) == BUS_ADRERR);
	T_ASSERT_EQ(atomic_load(&bus_count), 1);
	/* Other pages, and this thread, are fine. */
	T_ASSERT_EQ(page(r, 5)[77], pattern_byte(5 * ps + 77));
	T_ASSERT_EQ(atomic_load(&log.calls), 1);
	T_ASSERT_EQ(log.off, 3 * ps);
	T_ASSERT_EQ(log.err, -EIO);
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT_EQ(st.pages_poison, 1);
	T_ASSERT(st.errors >= 1);
	/* Touching it again still fails loudly, never zeros. */
	a = (struct faulter){ .p = page(r, 3) + 100 };
	t_thread_join(t_thread_start(faulter_main, &a));
	T_ASSERT(a.bus);
	if (mode == FL_PAGER_SIGBUS) {
		/* A SIGBUS outside every region goes to the previous handler too. */
		int fd = memfd_create("fl-beyond-eof", MFD_CLOEXEC);
		uint8_t *m;

		T_ASSERT_SYS(fd);
		T_ASSERT_SYS(ftruncate(fd, (off_t)ps));
		m = mmap(NULL, 2 * ps, PROT_READ, MAP_SHARED, fd, 0);
		T_ASSERT(m != MAP_FAILED);
		a = (struct faulter){ .p = m + ps };
		t_thread_join(t_thread_start(faulter_main, &a));
		T_ASSERT(a.bus);
		T_ASSERT_EQ(atomic_load(&bus_code), BUS_ADRERR);
		T_ASSERT(atomic_load(&bus_addr) == (void *)(m + ps));
		munmap(m, 2 * ps);
		close(fd);
	}
	fl_pager_destroy(p);
	fs_free(f);
}

static void block_case(enum fl_pager_mode mode, enum fl_on_error policy, int fail_ret);

static void expect_clean_exit(int status)
{
	if (WIFSIGNALED(status))
		t_fail(__FILE__, __LINE__, "child killed by signal %d", WTERMSIG(status));
	T_ASSERT(WIFEXITED(status));
	T_ASSERT_EQ(WEXITSTATUS(status), 0);
}

/*
 * A child whose absent page cannot be had reads it in a thread: with
 * FL_FEAT_POISON it gets SIGBUS and exits 0; before 6.6 its fault stays
 * blocked (never zeros): seen blocked, then killed.
 */
static void expect_child_fails_loud(pid_t pid)
{
	int status;

	if (!t_have(FL_FEAT_POISON)) {
		bool blocked = t_wait_fault_blocked(pid, 10000);

		T_ASSERT_SYS(kill(pid, SIGKILL));
		T_ASSERT_SYS(waitpid(pid, &status, 0));
		if (!blocked)
			t_fail(__FILE__, __LINE__, "the child's fault did not block (status %#x)",
			       status);
		T_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		return;
	}
	T_ASSERT_SYS(waitpid(pid, &status, 0));
	expect_clean_exit(status);
}

TEST(pager_store_error_poison)
{
	struct poison_case pc = { FL_PAGER_THREADS, -EIO };

	if (!t_have(FL_FEAT_POISON)) {
		/* The documented fallback: the fault stays blocked, as with BLOCK. */
		block_case(FL_PAGER_THREADS, FL_ON_ERROR_POISON, -EIO);
		if (t_have(FL_FEAT_SIGBUS))
			block_case(FL_PAGER_SIGBUS, FL_ON_ERROR_POISON, -EIO);
		return;
	}
	expect_clean_exit(t_run_child(poison_child, &pc));
	pc.mode = FL_PAGER_SIGBUS;
	if (t_have(FL_FEAT_SIGBUS))
		expect_clean_exit(t_run_child(poison_child, &pc));
}

/*
 * A read callback that returns neither 0 nor -errno left the staging buffer
 * unfilled (stale bytes of other pages): an error, the page poisoned.
 */
TEST(pager_store_bad_return_poison)
{
	struct poison_case pc = { FL_PAGER_THREADS, 1 };

	if (!t_have(FL_FEAT_POISON)) {
		block_case(FL_PAGER_THREADS, FL_ON_ERROR_POISON, 1);
		if (t_have(FL_FEAT_SIGBUS))
			block_case(FL_PAGER_SIGBUS, FL_ON_ERROR_POISON, 4096);
		return;
	}
	expect_clean_exit(t_run_child(poison_child, &pc));
	pc.fail_ret = 4096;
	pc.mode = FL_PAGER_SIGBUS;
	if (t_have(FL_FEAT_SIGBUS))
		expect_clean_exit(t_run_child(poison_child, &pc));
}

static _Atomic int cannot_poison_logged;

static void poison_log(enum fl_log_level level, const char *msg)
{
	if (level == FL_LOG_ERROR && strstr(msg, "cannot poison (UFFDIO_POISON, 6.6)"))
		atomic_store(&cannot_poison_logged, 1);
}

/*
 * A store error leaves the faulting thread blocked and reported, and a
 * populate once the store recovers releases it: FL_ON_ERROR_BLOCK, and
 * FL_ON_ERROR_POISON on a kernel that cannot poison (before 6.6), which also
 * logs why the thread stays blocked (from a handler thread; a signal handler
 * cannot log).
 */
static void block_case(enum fl_pager_mode mode, enum fl_on_error policy, int fail_ret)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(8);
	struct errlog log = { .efd = eventfd(0, EFD_CLOEXEC) };
	struct fl_region_opts o = t_region_opts(f->s, 8 * ps);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct t_access a;
	struct fl_pager *p;
	struct fl_region *r;

	atomic_store(&f->fail_page, 2);
	f->fail_ret = fail_ret;
	atomic_store(&cannot_poison_logged, 0);
	fl_set_log_fn(poison_log);
	p = t_pager_new(mode, 2, 0);
	o.on_error = policy;
	o.on_error_fn = on_error;
	o.userdata = &log;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	t_access_start(&a, page(r, 2) + 9, false, 0);
	t_wait_readable(log.efd);	/* the store failed and it was reported */
	T_ASSERT(!t_access_finished(&a));
	/* Meanwhile the rest of the region works. */
	T_ASSERT_EQ(page(r, 4)[1], pattern_byte(4 * ps + 1));
	/* The store recovers; populate retries the page and releases the thread. */
	atomic_store(&f->fail_page, -1);
	T_ASSERT_OK(fl_region_populate(r, 2 * ps, ps));
	T_ASSERT_EQ(t_access_join(&a), pattern_byte(2 * ps + 9));
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT_EQ(st.pages_poison, 0);
	T_ASSERT(st.errors >= 1);
	T_ASSERT(atomic_load(&log.calls) >= 1);
	T_ASSERT_EQ(log.off, 2 * ps);
	T_ASSERT_EQ(log.err, fail_ret < 0 ? fail_ret : -EIO);
	if (policy == FL_ON_ERROR_POISON && mode == FL_PAGER_THREADS)
		T_ASSERT(atomic_load(&cannot_poison_logged));
	fl_pager_destroy(p);
	fl_set_log_fn(NULL);
	close(log.efd);
	fs_free(f);
}

TEST(pager_store_error_block)
{
	block_case(FL_PAGER_THREADS, FL_ON_ERROR_BLOCK, -EIO);
	if (t_have(FL_FEAT_SIGBUS))
		block_case(FL_PAGER_SIGBUS, FL_ON_ERROR_BLOCK, -EIO);
}

/* ------------------------------------------------------------ slow pages */

TEST(pager_slow_page_does_not_block_others)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(32);
	struct fl_region_opts o = t_region_opts(f->s, 32 * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct t_access a, a2, b[4];
	struct fl_region *r;
	uint64_t one = 1;

	f->gate_page = 7;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	t_access_start(&a, page(r, 7) + 3, false, 0);
	wait_entered(f);	/* a handler thread sits in the store for page 7 */
	/* A second thread on the gated page waits with the first, without a second read. */
	t_access_start(&a2, page(r, 7) + 5, false, 0);
	wait_faults(r, 2);	/* its fault was read: it waits with the first, not after it */
	/* Faults on other pages are served meanwhile, one after another and at once. */
	for (int i = 0; i < 4; i++)
		t_access_start(&b[i], page(r, 9 + (size_t)i), false, 0);
	for (int i = 0; i < 4; i++)
		T_ASSERT_EQ(t_access_join(&b[i]), pattern_byte((9 + (size_t)i) * ps));
	T_ASSERT_EQ(page(r, 20)[0], pattern_byte(20 * ps));
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT(!t_access_finished(&a2));
	/* Open the gate: the first fault completes, and the thread that joined it. */
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	T_ASSERT_EQ(t_access_join(&a), pattern_byte(7 * ps + 3));
	T_ASSERT_EQ(t_access_join(&a2), pattern_byte(7 * ps + 5));
	T_ASSERT_EQ(atomic_load(&f->gate_reads), 1);
	fl_pager_destroy(p);
	fs_free(f);
}

TEST(pager_all_readers_slow)
{
	size_t ps = t_page_size();
	unsigned int n = cpus();
	struct fs *f = fs_new(64);
	struct fl_region_opts o = t_region_opts(f->s, 64 * ps);
	/* One reader per CPU, and one helper thread more. */
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, n + 1, 0);
	struct t_access *a = calloc(n, sizeof(*a)), b;
	struct fl_region *r;
	uint64_t all = n;

	T_ASSERT(a && n < 32);
	f->gate_page = 4;
	f->gate_n = n;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	/* Every reader ends up in a slow store read... */
	for (unsigned int i = 0; i < n; i++) {
		t_access_start(&a[i], page(r, 4 + i), false, 0);
		wait_entered(f);
	}
	/* ...and a fault elsewhere is still read and served, by the helper. */
	t_access_start(&b, page(r, 40), false, 0);
	T_ASSERT_EQ(t_access_join(&b), pattern_byte(40 * ps));
	for (unsigned int i = 0; i < n; i++)
		T_ASSERT(!t_access_finished(&a[i]));
	T_ASSERT_SYS(write(f->gate, &all, sizeof(all)));
	for (unsigned int i = 0; i < n; i++)
		T_ASSERT_EQ(t_access_join(&a[i]), pattern_byte((4 + i) * ps));
	fl_pager_destroy(p);
	fs_free(f);
	free(a);
}

/* Faults queued on @p's userfaultfd and not yet read (the kernel's fdinfo "pending"). */
static long pending_faults(struct fl_pager *p)
{
	char path[64], line[128];
	long n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fl_pager_fd(p));
	f = fopen(path, "re");
	T_ASSERT(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "pending: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

TEST(pager_batch_handoff)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(32);
	struct fl_region_opts o = t_region_opts(f->s, 32 * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct t_access a, b[3];
	struct fl_region *r;
	uint64_t one = 1;

	f->gate_page = 4;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	/*
	 * Queue the gated fault first and three others behind it while nobody
	 * reads: one handler thread then reads all four in one batch.
	 */
	t_access_start(&a, page(r, 4), false, 0);
	while (pending_faults(p) < 1)
		sched_yield();
	for (int i = 0; i < 3; i++) {
		t_access_start(&b[i], page(r, 10 + (size_t)i), false, 0);
		while (pending_faults(p) < 2 + i)
			sched_yield();
	}
	T_ASSERT_OK(fl_pager_start(p));
	wait_entered(f);
	/* The reader sits in the store for page 4; the others were handed to the other thread. */
	for (int i = 0; i < 3; i++)
		T_ASSERT_EQ(t_access_join(&b[i]), pattern_byte((10 + (size_t)i) * ps));
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	T_ASSERT_EQ(t_access_join(&a), pattern_byte(4 * ps));
	fl_pager_destroy(p);
	fs_free(f);
}

/* ----------------------------------------------------- another process */

struct handoff {
	uint64_t addr, len, feats;
};

static void send_fd(int sock, int fd, const struct handoff *h)
{
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)h, .iov_len = sizeof(*h) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
			    .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	T_ASSERT_EQ(sendmsg(sock, &m, 0), (ssize_t)sizeof(*h));
}

static int recv_fd(int sock, struct handoff *h)
{
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = h, .iov_len = sizeof(*h) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
			    .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c;
	int fd;

	T_ASSERT_EQ(recvmsg(sock, &m, MSG_CMSG_CLOEXEC), (ssize_t)sizeof(*h));
	c = CMSG_FIRSTHDR(&m);
	T_ASSERT(c && c->cmsg_type == SCM_RIGHTS);
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

TEST(pager_serves_other_process)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fl_region_opts o;
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_store *s;
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS, .threads = 2 };
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_uffd *u;
	struct handoff h;
	int sv[2], fd, status;
	pid_t pid;
	char go = 'g';

	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		struct fl_uffd_opts uo = { .sz = sizeof(uo), .optional = FL_FEAT_POISON };
		uint8_t *mem;
		char c;

		close(sv[0]);
		if (fl_uffd_open(&uo, &u) < 0)
			_exit(2);
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED ||
		    fl_uffd_register(u, mem, len, FL_REGISTER_MISSING, NULL) < 0)
			_exit(3);
		h = (struct handoff){ (uintptr_t)mem, len, fl_uffd_features(u) };
		send_fd(sv[1], fl_uffd_fd(u), &h);
		if (read(sv[1], &c, 1) != 1)
			_exit(4);
		/* Every byte comes from the parent's store, through our own faults. */
		_exit(fl_pattern_check(mem, 0, len, SEED) ? 5 : 0);
	}
	close(sv[1]);
	fd = recv_fd(sv[0], &h);
	T_ASSERT_OK(fl_uffd_adopt(fd, h.feats, 0, &u));
	po.uffd = u;
	T_ASSERT_OK(fl_pager_create(&po, &p));
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.addr = (void *)(uintptr_t)h.addr;
	/* Memory of another process can only be registered, never mapped for it. */
	o.addr = NULL;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	o.addr = (void *)(uintptr_t)h.addr;
	o.install = FL_INSTALL_MOVE;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EOPNOTSUPP);
	o.install = FL_INSTALL_AUTO;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(write(sv[0], &go, 1), 1);
	T_ASSERT_SYS(waitpid(pid, &status, 0));
	expect_clean_exit(status);
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT_EQ(st.pages_copy, npages);
	T_ASSERT_EQ(st.errors, 0);
	/* The process is gone: removal and destruction still end cleanly. */
	fl_pager_destroy(p);
	fl_uffd_close(u);
	close(fd);
	close(sv[0]);
	fl_store_destroy(s);
}

/* --------------------------------------------------------- stop, destroy */

TEST(pager_stop_leaves_faults_blocked)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(8);
	struct fl_region_opts o = t_region_opts(f->s, 8 * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_region *r;
	struct t_access a;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(page(r, 0)[0], pattern_byte(0));
	T_ASSERT_OK(fl_pager_stop(p));
	T_ASSERT_OK(fl_pager_stop(p));	/* twice is fine */
	t_access_start(&a, page(r, 2) + 1, false, 0);
	wait_fault_queued(p);
	T_ASSERT(!t_access_finished(&a));
	T_ASSERT_EQ(atomic_load(&f->reads), 1);
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(t_access_join(&a), pattern_byte(2 * ps + 1));
	/* And once more. */
	T_ASSERT_OK(fl_pager_stop(p));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(page(r, 5)[5], pattern_byte(5 * ps + 5));
	fl_pager_destroy(p);
	fs_free(f);
}

struct destroy_case {
	enum fl_pager_mode mode;
	bool started;		/* started, then stopped, before the fault */
	bool keep;		/* FL_REGION_KEEP_ON_REMOVE */
};

#define EXIT_SIGBUS 42
#define EXIT_KEPT 7

static void *destroy_page;

/* The blocked thread's SIGBUS, at its page: the child reports it by its exit code. */
static void on_destroy_bus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	_exit(si->si_addr == destroy_page ? EXIT_SIGBUS : 99);
}

static void destroy_child(void *arg)
{
	const struct destroy_case *c = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(8 * ps);
	struct sigaction sa = { .sa_sigaction = on_destroy_bus, .sa_flags = SA_SIGINFO };
	struct fs *f = fs_new(8);
	struct fl_region_opts o = t_region_opts(f->s, 8 * ps);
	struct fl_pager *p = t_pager_new(c->mode, 2, 0);
	struct fl_region *r;
	struct t_access a;

	/* Installed before the pager's (SIGBUS mode chains to it); sanitizers leave it be. */
	destroy_page = mem + ps + 1;
	sigemptyset(&sa.sa_mask);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	/* Before 6.6 the pager makes the page inaccessible instead: SIGSEGV, same exit. */
	if (!t_have(FL_FEAT_POISON))
		T_ASSERT_SYS(sigaction(SIGSEGV, &sa, NULL));
	o.addr = mem;
	o.flags = c->keep ? FL_REGION_KEEP_ON_REMOVE : 0;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	if (c->started) {
		T_ASSERT_OK(fl_pager_start(p));
		T_ASSERT_EQ(mem[0], pattern_byte(0));
		T_ASSERT_OK(fl_pager_stop(p));
	}
	t_access_start(&a, mem + ps + 1, false, 0);
	if (c->mode != FL_PAGER_SIGBUS)
		wait_fault_queued(p);
	/*
	 * SIGBUS mode: the thread waits in the handler, or has not touched the
	 * page yet; either way it meets the poison or the removed region.
	 */
	fl_pager_destroy(p);
	/* Only KEEP_ON_REMOVE gets here: the page is left as it is (zero for anonymous memory). */
	T_ASSERT_EQ(t_access_join(&a), 0);
	_exit(EXIT_KEPT);
}

TEST(pager_destroy_releases_blocked_with_sigbus)
{
	static const struct destroy_case cases[] = {
		{ FL_PAGER_THREADS, false, false },
		{ FL_PAGER_THREADS, true, false },
		{ FL_PAGER_LOOP, false, false },
		{ FL_PAGER_SIGBUS, true, false },
		{ FL_PAGER_THREADS, false, true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int status;

		if (cases[i].mode == FL_PAGER_SIGBUS && !t_have(FL_FEAT_SIGBUS))
			continue;
		status = t_run_child(destroy_child, (void *)&cases[i]);
		if (!WIFEXITED(status))
			t_fail(__FILE__, __LINE__, "case %zu: child killed by signal %d", i,
			       WTERMSIG(status));
		if (WEXITSTATUS(status) != (cases[i].keep ? EXIT_KEPT : EXIT_SIGBUS))
			t_fail(__FILE__, __LINE__, "case %zu: child exited %d, expected %s", i,
			       WEXITSTATUS(status), cases[i].keep ? "the page left as it is"
								  : "SIGBUS at the blocked page");
	}
}

/* ------------------------------------------------------------- LOOP mode */

struct reader {
	struct fl_region *r;
	size_t npages;
	int done;
	bool ok;
};

static void *reader_main(void *arg)
{
	struct reader *x = arg;
	uint64_t one = 1;

	x->ok = fl_pattern_check(fl_region_addr(x->r), 0, x->npages * t_page_size(), SEED) == 0;
	if (write(x->done, &one, sizeof(one)) < 0)
		abort();
	return NULL;
}

TEST(pager_loop_mode_epoll)
{
	size_t ps = t_page_size(), npages = 256;
	struct fs *f = fs_new(npages);
	struct fl_region_opts o = t_region_opts(f->s, npages * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_LOOP, 0, 0);
	struct epoll_event ev = { .events = EPOLLIN };
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct reader x;
	unsigned long th;
	long handled = 0;
	int ep;

	o.prefetch = FL_PREFETCH_ADAPTIVE;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(fl_pager_dispatch(p), 0);	/* nothing queued: returns at once */
	x = (struct reader){ .r = r, .npages = npages, .done = eventfd(0, EFD_CLOEXEC) };
	ep = epoll_create1(EPOLL_CLOEXEC);
	T_ASSERT_SYS(ep);
	ev.data.fd = fl_pager_fd(p);
	T_ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev));
	ev.data.fd = x.done;
	T_ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, x.done, &ev));
	th = t_thread_start(reader_main, &x);
	for (bool done = false; !done;) {
		struct epoll_event out[2];
		int n = epoll_wait(ep, out, 2, -1);

		if (n < 0 && errno == EINTR)
			continue;
		T_ASSERT_SYS(n);
		for (int i = 0; i < n; i++) {
			if (out[i].data.fd == x.done) {
				done = true;
				continue;
			}
			n = fl_pager_dispatch(p);
			T_ASSERT_OK(n);
			handled += n;
		}
	}
	t_thread_join(th);
	T_ASSERT(x.ok);
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT(handled >= 1);
	T_ASSERT_EQ((uint64_t)handled, st.faults);
	T_ASSERT_EQ(st.pages_copy, npages);
	T_ASSERT(st.pages_prefetched > 0);
	close(ep);
	close(x.done);
	fl_pager_destroy(p);
	fs_free(f);
}

struct discard {
	void *addr;
	size_t len;
};

static void *discard_main(void *arg)
{
	struct discard *d = arg;

	T_ASSERT_SYS(madvise(d->addr, d->len, MADV_DONTNEED));
	return NULL;
}

TEST(pager_install_waits_for_events)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(16);
	struct fl_region_opts o = t_region_opts(f->s, 16 * ps);
	/* One thread: while it sits in the store, nobody reads the event below. */
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, FL_FEAT_EVENT_REMOVE);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct discard d;
	struct t_access a;
	unsigned long th;
	uint64_t one = 1;

	f->gate_page = 3;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(page(r, 9)[0], pattern_byte(9 * ps));
	t_access_start(&a, page(r, 3) + 2, false, 0);
	wait_entered(f);
	/* Another thread discards page 9: its REMOVE event is queued, unread. */
	d = (struct discard){ .addr = page(r, 9), .len = ps };
	th = t_thread_start(discard_main, &d);
	t_wait_readable(fl_pager_fd(p));
	/* The install of page 3 meets the pending event (EAGAIN), waits for it, then lands. */
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	T_ASSERT_EQ(t_access_join(&a), pattern_byte(3 * ps + 2));
	T_ASSERT_EQ(atomic_load(&f->gate_reads), 1);	/* the retry did not read again */
	t_thread_join(th);
	T_ASSERT(t_all(page(r, 9), ps, 0));
	T_ASSERT_OK(fl_pager_stop(p));
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT_EQ(st.errors, 0);
	T_ASSERT_EQ(st.pages_zero, 1);
	fl_pager_destroy(p);
	fs_free(f);
}

/* ---------------------------------------------------------------- events */

TEST(pager_events_remove_remap_unmap)
{
	size_t ps = t_page_size(), npages = 16, len = npages * ps;
	struct fs *f = fs_new(npages);
	struct fl_region_opts o = t_region_opts(f->s, len);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_REMOVE |
				       FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_UNMAP);
	struct fl_region *r, *r2;
	uint8_t *base, *to;
	unsigned int reads;

	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	base = fl_region_addr(r);
	/* REMOVE: what the program discarded reads as zeros, not as store data. */
	T_ASSERT_EQ(base[10], pattern_byte(10));
	base[11] = 0x42;
	T_ASSERT_SYS(madvise(base, 2 * ps, MADV_DONTNEED));
	reads = atomic_load(&f->reads);
	T_ASSERT(t_all(base, 2 * ps, 0));
	T_ASSERT_EQ(atomic_load(&f->reads), reads);
	T_ASSERT_EQ(base[2 * ps + 3], pattern_byte(2 * ps + 3));

	/* REMAP: the region follows the memory. */
	to = t_map_anon(len);
	T_ASSERT(mremap(base, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to) == to);
	T_ASSERT_EQ(to[5 * ps + 7], pattern_byte(5 * ps + 7));	/* served at the new place */
	T_ASSERT(fl_region_addr(r) == to);
	T_ASSERT_EQ(to[2 * ps + 3], pattern_byte(2 * ps + 3));	/* moved with it */

	/* UNMAP: the region is gone; a fault elsewhere is served after the event took effect. */
	o = t_region_opts(f->s, 4 * ps);
	T_ASSERT_OK(fl_region_add(p, &o, &r2));
	T_ASSERT_SYS(munmap(to, len));
	T_ASSERT_EQ(page(r2, 1)[1], pattern_byte(ps + 1));
	T_ASSERT_OK(fl_region_remove(r));
	T_ASSERT_OK(fl_region_remove(r2));
	fl_pager_destroy(p);
	fs_free(f);
}

/*
 * The program discards a page while its store read is in flight: one
 * handler thread sits in the store, the other reads the REMOVE event, and
 * madvise() returns. The late install must not bring the old data back:
 * the faulting thread and every later read see zeros.
 */
TEST(pager_remove_races_store_read)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(16);
	struct fl_region_opts o = t_region_opts(f->s, 16 * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_REMOVE);
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_region *r;
	struct t_access a;
	uint64_t one = 1;

	f->gate_page = 3;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	t_access_start(&a, page(r, 3) + 2, false, 0);
	wait_entered(f);
	/* Returns once the other handler thread read the event: the kernel's zap is done. */
	T_ASSERT_SYS(madvise(page(r, 3), ps, MADV_DONTNEED));
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	T_ASSERT_EQ(t_access_join(&a), 0);
	T_ASSERT(t_all(page(r, 3), ps, 0));
	T_ASSERT_EQ(page(r, 4)[5], pattern_byte(4 * ps + 5));
	T_ASSERT_OK(fl_region_stats(r, &st));
	T_ASSERT_EQ(st.errors, 0);
	T_ASSERT_EQ(atomic_load(&f->gate_reads), 1);
	fl_pager_destroy(p);
	fs_free(f);
}

/*
 * The same race in memory of another process (a pager serving a received
 * userfaultfd): the guarantee is the same, zeros after madvise() returned.
 */
TEST(pager_remove_races_store_read_other_process)
{
	size_t ps = t_page_size(), npages = 16, len = npages * ps;
	struct fs *f = fs_new(npages);
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS, .threads = 2 };
	struct fl_region_opts o = t_region_opts(f->s, len);
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_uffd *u;
	struct handoff h;
	int sv[2], fd, status;
	uint64_t one = 1;
	pid_t pid;
	char c;

	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		struct fl_uffd_opts uo = { .sz = sizeof(uo), .features = FL_FEAT_EVENT_REMOVE };
		struct t_access a;
		uint8_t *mem;

		close(sv[0]);
		if (fl_uffd_open(&uo, &u) < 0)
			_exit(2);
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED ||
		    fl_uffd_register(u, mem, len, FL_REGISTER_MISSING, NULL) < 0)
			_exit(3);
		h = (struct handoff){ (uintptr_t)mem, len, fl_uffd_features(u) };
		send_fd(sv[1], fl_uffd_fd(u), &h);
		if (read(sv[1], &c, 1) != 1)
			_exit(4);
		t_access_start(&a, mem + 3 * ps + 2, false, 0);
		/* The parent's store read for page 3 is in flight: discard the page. */
		if (read(sv[1], &c, 1) != 1 || madvise(mem + 3 * ps, ps, MADV_DONTNEED) < 0 ||
		    write(sv[1], "m", 1) != 1)
			_exit(5);
		if (t_access_join(&a) != 0 || !t_all(mem + 3 * ps, ps, 0))
			_exit(6);
		_exit(fl_pattern_check(mem + 4 * ps, 4 * ps, ps, SEED) ? 7 : 0);
	}
	close(sv[1]);
	fd = recv_fd(sv[0], &h);
	T_ASSERT_OK(fl_uffd_adopt(fd, h.feats, 0, &u));
	po.uffd = u;
	T_ASSERT_OK(fl_pager_create(&po, &p));
	f->gate_page = 3;
	o.addr = (void *)(uintptr_t)h.addr;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(write(sv[0], "g", 1), 1);
	wait_entered(f);
	T_ASSERT_EQ(write(sv[0], "d", 1), 1);
	T_ASSERT_EQ(read(sv[0], &c, 1), 1);
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	T_ASSERT_SYS(waitpid(pid, &status, 0));
	expect_clean_exit(status);
	fl_pager_destroy(p);
	fl_uffd_close(u);
	close(fd);
	close(sv[0]);
	fs_free(f);
}

/*
 * A pager without on_event cannot serve a fork()ed child; the child's
 * pages that were absent at fork time must fail loudly there (SIGBUS; their
 * faults stay blocked where the kernel cannot poison), never read as zeros.
 * What was present is the child's copy.
 */
TEST(pager_fork_child_never_reads_zeros)
{
	size_t ps = t_page_size(), npages = 8, len = npages * ps;
	uint8_t *mem = t_map_anon(len);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_FORK);
	struct fl_region_opts o;
	struct fl_region *r;
	struct fl_store *s;
	pid_t pid;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.addr = mem;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(mem[ps + 1], pattern_byte(ps + 1));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		struct faulter a = { .p = mem + 5 * ps + 7 };

		catch_sigbus();
		if (fl_pattern_check(mem + ps, ps, ps, SEED))
			_exit(2);
		faulter_main(&a);
		_exit(a.bus ? 0 : a.v == 0 ? 3 : 4);
	}
	expect_child_fails_loud(pid);
	/* The parent is still served. */
	T_ASSERT_EQ(mem[5 * ps + 7], pattern_byte(5 * ps + 7));
	fl_pager_destroy(p);
	fl_store_destroy(s);
	munmap(mem, len);
}

/* Forks 40 children that exit at once; the number of those that did not exit cleanly. */
static void *fork_exit_main(void *arg)
{
	_Atomic int *bad = arg;

	for (int i = 0; i < 40; i++) {
		int status;
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			atomic_fetch_add(bad, 1);
	}
	return NULL;
}

/*
 * Repeated fork() with a pager that has FORK events and no on_event: each
 * child's absent pages are poisoned. The reader used to do that (calloc
 * included) holding the read token while the next fork() held the malloc
 * locks waiting for its own event to be read: fork() hung.
 */
TEST(pager_fork_repeated_no_on_event)
{
	size_t ps = t_page_size(), npages = 128, len = npages * ps;
	uint8_t *mem = t_map_anon(len);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_FORK);
	struct fl_region_opts o;
	struct fl_region *r;
	struct fl_store *s;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &s));
	o = t_region_opts(s, len);
	o.addr = mem;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	for (int i = 0; i < 40; i++) {
		size_t pg = (size_t)i;	/* present in the parent from now on */
		int status;
		pid_t pid;

		T_ASSERT_EQ(mem[pg * ps + 1], pattern_byte(pg * ps + 1));
		pid = fork();
		T_ASSERT_SYS(pid);
		if (pid == 0) {
			/* Never touched by the parent (it reads the first 40 pages). */
			struct faulter a = { .p = mem + (npages - 1 - (size_t)i) * ps + 7 };

			/* Most exit at once: the next fork() comes while this child is looked after. */
			if (i % 4)
				_exit(0);
			catch_sigbus();
			if (fl_pattern_check(mem + pg * ps, pg * ps, ps, SEED))
				_exit(2);
			faulter_main(&a);
			_exit(a.bus ? 0 : a.v == 0 ? 3 : 4);
		}
		if (i % 4 == 0) {
			expect_child_fails_loud(pid);
			continue;
		}
		T_ASSERT_SYS(waitpid(pid, &status, 0));
		expect_clean_exit(status);
	}
	/* Two threads forking at once: one fork() is pending while another child is looked after. */
	{
		_Atomic int bad = 0;
		unsigned long a = t_thread_start(fork_exit_main, &bad);

		fork_exit_main(&bad);
		t_thread_join(a);
		T_ASSERT_EQ(atomic_load(&bad), 0);
	}
	T_ASSERT_EQ(mem[(npages - 1) * ps + 7], pattern_byte((npages - 1) * ps + 7));
	fl_pager_destroy(p);
	fl_store_destroy(s);
	munmap(mem, len);
}

struct remap_race {
	struct fs *f;
	struct fl_pager *p;
	struct fl_region *r;
	struct t_places pl;	/* the region moves between pl.at[0] and pl.at[1] */
	uint8_t *src;
	size_t len, n;
	atomic_bool done;
	_Atomic size_t progress;
	size_t gone;
	int ret;
};

/*
 * A region of @npages absent pages (the pattern store) at the first of two
 * places, and @fn running beside the test thread, which moves the region
 * to the other place each time @fn made @pace steps of progress, until
 * @fn is done.
 */
static void remap_race_run(struct remap_race *x, size_t npages, t_thread_fn fn, size_t pace)
{
	struct fl_region_opts o;
	unsigned long th;

	*x = (struct remap_race){ .n = npages, .len = npages * t_page_size(), .ret = 0 };
	x->f = fs_new(npages);
	o = t_region_opts(x->f->s, x->len);
	x->p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_REMAP);
	x->src = malloc(x->len);
	T_ASSERT(x->src);
	fl_pattern_fill(x->src, 0, x->len, SEED);
	T_ASSERT_OK(fl_region_add(x->p, &o, &x->r));
	T_ASSERT_OK(fl_pager_start(x->p));
	t_places_reserve(&x->pl, fl_region_addr(x->r), x->len);
	th = t_thread_start(fn, x);
	for (size_t seen = 0; !atomic_load(&x->done);) {
		if (atomic_load(&x->progress) < seen + pace) {
			sched_yield();
			continue;
		}
		seen = atomic_load(&x->progress);
		t_places_move(&x->pl);
	}
	t_thread_join(th);
	T_ASSERT_OK(x->ret);
	T_ASSERT(x->pl.moves > 0);
	T_ASSERT(fl_region_addr(x->r) == x->pl.at[x->pl.cur]);
}

static void remap_race_free(struct remap_race *x)
{
	fl_pager_destroy(x->p);
	t_places_free(&x->pl);
	free(x->src);
	fs_free(x->f);
}

static void *remap_supplier_main(void *arg)
{
	struct remap_race *x = arg;

	for (size_t pg = 0; pg < x->n && !x->ret; pg++) {
		uint8_t out = 0;

		x->ret = fl__region_supply(x->r, pg, 1, x->src + pg * t_page_size(), &out);
		if (out == FL__SUPPLY_GONE)
			x->gone++;
		atomic_store(&x->progress, pg + 1);
	}
	atomic_store(&x->done, true);
	return NULL;
}

/*
 * Pages supplied from outside a fault (the migration destination's
 * background copy, the working-set replay) while the program moves the
 * region back and forth with mremap(). The kernel looks the mapping up
 * before it checks for unread events, so an install at the old address
 * fails with ENOENT (not EAGAIN) from the move until the REMAP event is
 * read and applied. Those pages were taken for unmapped ("gone"), the
 * migration counted them as delivered, and they read zeros in the end
 * (seen as a rare migrate_postcopy_mremap failure under load; here the
 * old code lost over a thousand pages a run). The region is never
 * unmapped, so no page may come back gone, and every page holds the
 * store's bytes at the region's last address. The supply goes one page
 * per call, and a move follows every few of them for as long as it lasts
 * (paced by its progress: back-to-back moves keep every install waiting).
 */
TEST(pager_supply_races_mremap)
{
	struct remap_race x;

	remap_race_run(&x, 8192, remap_supplier_main, 4);
	T_ASSERT_EQ(x.gone, 0u);
	/* Installed by the supply: no fault, no store read. */
	T_ASSERT(!memcmp(x.pl.at[x.pl.cur], x.src, x.len));
	T_ASSERT_EQ(atomic_load(&x.f->reads), 0u);
	remap_race_free(&x);
}

static void *remap_toucher_main(void *arg)
{
	struct remap_race *x = arg;
	size_t ps = t_page_size();
	volatile size_t pg = 0;
	volatile int side = 0;

	/* Each page at both places: the one that is not the region's is PROT_NONE (SIGSEGV). */
	if (sigsetjmp(bus_jmp, 1))
		side = !side;	/* the PROT_NONE place: the region is at the other */
	while (pg < x->n) {
		uint8_t v = ((volatile uint8_t *)x->pl.at[side])[pg * ps + 1];

		if (v != x->src[pg * ps + 1])
			x->ret = -EIO;
		pg = pg + 1;
		atomic_store(&x->progress, pg);
		side = !side;
	}
	atomic_store(&x->done, true);
	return NULL;
}

/*
 * A thread reads the region's pages while the program moves it back and
 * forth with mremap(), each page where the region is or was. A fault at
 * the new place can be queued before the REMAP event, and a read returns
 * faults first: the pager found it outside every region and left it. A
 * fault at the old place could be installed at the new one, which wakes
 * nobody waiting at the old. Either thread slept for good (the old code
 * timed out here nearly every run); the move now wakes both places, so
 * each faults again. Every page read must hold the store's bytes.
 */
TEST(pager_fault_races_mremap)
{
	struct remap_race x;

	catch_sigsegv();
	remap_race_run(&x, 4096, remap_toucher_main, 2);
	remap_race_free(&x);
}

/*
 * The program write-protects pages 8..15 of a region with mprotect(): its
 * mapping is now three, all still registered. One install ioctl covers
 * one mapping, so a run across the split failed with ENOENT as a whole.
 * Supplied, the run came back "gone" after the wait for a REMAP that never
 * comes, and a fault on those pages blocked for good; faulted with a
 * 16-page prefetch window, the handler threads refaulted the same run
 * forever. Now the pages go one at a time past the split: all arrive.
 */
TEST(pager_supply_split_mapping)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fs *f = fs_new(npages);
	struct fl_region_opts o = t_region_opts(f->s, len);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_REMAP);
	struct fl_region *r;
	uint8_t *src = malloc(len), out[32], *a;

	T_ASSERT(src);
	fl_pattern_fill(src, 0, len, SEED);
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	T_ASSERT_SYS(mprotect(a + 8 * ps, 8 * ps, PROT_READ));
	T_ASSERT_OK(fl__region_supply(r, 0, 32, src, out));
	for (size_t i = 0; i < 32; i++)
		T_ASSERT_EQ(out[i], FL__SUPPLY_INSTALLED);
	/* Installed by the supply: read without a store read. */
	T_ASSERT(!memcmp(a, src, 32 * ps));
	T_ASSERT_EQ(atomic_load(&f->reads), 0u);
	fl_pager_destroy(p);
	free(src);
	fs_free(f);
}

TEST(pager_fault_split_mapping)
{
	size_t ps = t_page_size(), npages = 64, len = npages * ps;
	struct fs *f = fs_new(npages);
	struct fl_region_opts o = t_region_opts(f->s, len);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_region *r;
	uint8_t *a, *want = malloc(len);

	T_ASSERT(want);
	fl_pattern_fill(want, 0, len, SEED);
	o.prefetch = FL_PREFETCH_FIXED;
	o.prefetch_min = o.prefetch_max = 16 * ps;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	a = fl_region_addr(r);
	T_ASSERT_SYS(mprotect(a + 8 * ps, 8 * ps, PROT_READ));
	/* The window of page 0's fault crosses into the read-only mapping. */
	T_ASSERT(!memcmp(a, want, len));
	fl_pager_destroy(p);
	free(want);
	fs_free(f);
}

/*
 * mremap() moves only the second half of a region: the half left behind
 * is still served, the moved pages that were present keep their data, and
 * an absent moved page fails loudly (SIGBUS) instead of blocking forever.
 * Without FL_FEAT_POISON (before 6.6) the pager makes the page inaccessible
 * instead: the access fails with SIGSEGV.
 */
TEST(pager_partial_mremap_fails_loudly)
{
	size_t ps = t_page_size(), npages = 16, len = npages * ps;
	struct fs *f = fs_new(npages);
	struct fl_region_opts o = t_region_opts(f->s, len);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_REMAP);
	struct fl_region *r;
	struct faulter a;
	uint8_t *base, *to;

	catch_sigbus();
	if (!t_have(FL_FEAT_POISON))
		catch_sigsegv();
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	base = fl_region_addr(r);
	T_ASSERT_EQ(base[9 * ps + 3], pattern_byte(9 * ps + 3));
	to = t_map_anon(8 * ps);
	T_ASSERT(mremap(base + 8 * ps, 8 * ps, 8 * ps, MREMAP_MAYMOVE | MREMAP_FIXED, to) == to);
	T_ASSERT_EQ(to[ps + 3], pattern_byte(9 * ps + 3));
	a = (struct faulter){ .p = to + 2 * ps };
	t_thread_join(t_thread_start(faulter_main, &a));
	T_ASSERT(a.bus);
	T_ASSERT_EQ(atomic_load(&bus_sig), t_have(FL_FEAT_POISON) ? SIGBUS : SIGSEGV);
	T_ASSERT(atomic_load(&bus_addr) == (void *)(to + 2 * ps));
	if (!t_have(FL_FEAT_POISON))
		T_ASSERT_EQ(atomic_load(&bus_code), SEGV_ACCERR);
	T_ASSERT_EQ(base[2 * ps + 1], pattern_byte(2 * ps + 1));
	fl_pager_destroy(p);
	munmap(to, 8 * ps);
	fs_free(f);
}

/*
 * A region given up (a migration destination whose source died) while a
 * fault's store read is in flight: when that read then fails, the page
 * fails loudly like the rest of the region (SIGBUS; SIGSEGV where the
 * kernel cannot poison), and its fault is not left blocked for good. Before
 * 6.6 it used to be: the faulting thread hung (seen in the 6.1 guest).
 */
TEST(pager_given_up_fault_in_flight_fails_loudly)
{
	size_t ps = t_page_size(), npages = 8;
	struct fs *f = fs_new(npages);
	struct fl_region_opts o = t_region_opts(f->s, npages * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	struct fl_region *r;
	struct faulter a;
	unsigned long th;
	uint64_t one = 1;
	int e;

	catch_sigbus();
	if (!t_have(FL_FEAT_POISON))
		catch_sigsegv();
	f->gate_page = 3;
	atomic_store(&f->fail_page, 3);
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(page(r, 1)[5], pattern_byte(ps + 5));
	a = (struct faulter){ .p = page(r, 3) + 9 };
	th = t_thread_start(faulter_main, &a);
	wait_entered(f);
	/* The page in flight is skipped; the other absent ones fail from now on. */
	e = fl__region_poison_absent(r, NULL);
	T_ASSERT(e == 0 || (!t_have(FL_FEAT_POISON) && e == -EOPNOTSUPP));
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	t_thread_join(th);
	T_ASSERT(a.bus);
	T_ASSERT_EQ(atomic_load(&bus_sig), t_have(FL_FEAT_POISON) ? SIGBUS : SIGSEGV);
	T_ASSERT(atomic_load(&bus_addr) == (void *)(page(r, 3) + 9));
	a = (struct faulter){ .p = page(r, 6) };
	t_thread_join(t_thread_start(faulter_main, &a));
	T_ASSERT(a.bus);
	T_ASSERT_EQ(page(r, 1)[5], pattern_byte(ps + 5));
	fl_pager_destroy(p);
	fs_free(f);
}

/*
 * Pages that arrive on their own (a migration's background stream) are
 * installed only where the page is still absent: never over a page the
 * program wrote or discarded, and a page whose store read is in flight is
 * left to that read.
 */
TEST(pager_supply_only_absent)
{
	size_t ps = t_page_size();
	struct fs *f = fs_new(16);
	struct fl_region_opts o = t_region_opts(f->s, 16 * ps);
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 2, FL_FEAT_EVENT_REMOVE);
	uint8_t *src = t_map_anon(8 * ps), out[8];
	struct fl_region *r;
	struct t_access a;
	unsigned int reads;
	uint64_t one = 1;

	t_fill(src, 8 * ps, 0xEE);
	f->gate_page = 6;
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	page(r, 2)[0] = 0x11;
	T_ASSERT_SYS(madvise(page(r, 4), ps, MADV_DONTNEED));
	t_access_start(&a, page(r, 6) + 1, false, 0);
	wait_entered(f);
	T_ASSERT_OK(fl__region_supply(r, 0, 8, src, out));
	T_ASSERT_EQ(out[0], FL__SUPPLY_INSTALLED);
	T_ASSERT_EQ(out[2], FL__SUPPLY_PRESENT);
	T_ASSERT_EQ(out[4], FL__SUPPLY_DISCARDED);
	T_ASSERT_EQ(out[6], FL__SUPPLY_BUSY);
	T_ASSERT_EQ(out[7], FL__SUPPLY_INSTALLED);
	reads = atomic_load(&f->reads);
	T_ASSERT(t_all(page(r, 0), ps, 0xEE));
	T_ASSERT(t_all(page(r, 7), ps, 0xEE));
	T_ASSERT_EQ(page(r, 2)[0], 0x11);
	T_ASSERT_EQ(page(r, 2)[1], pattern_byte(2 * ps + 1));
	T_ASSERT(t_all(page(r, 4), ps, 0));
	T_ASSERT_EQ(atomic_load(&f->reads), reads);
	T_ASSERT_SYS(write(f->gate, &one, sizeof(one)));
	T_ASSERT_EQ(t_access_join(&a), pattern_byte(6 * ps + 1));
	fl_pager_destroy(p);
	munmap(src, 8 * ps);
	fs_free(f);
}
