/* SPDX-License-Identifier: MIT */
/* bench latency's floors: a system call, a bare SIGBUS handler, a bare handler thread. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"
#include "compat.h"
#include "stats.h"

/*
 * What this machine charges for the pieces every fault-handling design is
 * made of, measured with the same timed walk as the modes, so that each
 * mode can be read as a ratio to the least any design of its kind could
 * cost here:
 *   - syscall: one getppid() (the price of entering the kernel at all);
 *   - bare-sigbus: UFFD_FEATURE_SIGBUS and a signal handler that does one
 *     UFFDIO_COPY and returns, nothing else (the floor of sigbus mode);
 *   - bare-thread-same / bare-thread-other: one thread blocked in read()
 *     on the userfaultfd, doing one UFFDIO_COPY per message, pinned to the
 *     reader's CPU or to another one (the floors of thread mode: waking a
 *     thread on the faulting CPU, and waking another CPU); the reader is
 *     pinned to the first CPU this process may use.
 * The raw interface, no library: nothing of faultline is in a floor.
 */

int bench_raw_uffd_open(int flags, const char **how)
{
	int fd, dev, err;

	fd = (int)syscall(__NR_userfaultfd, flags);
	if (fd >= 0) {
		*how = "the userfaultfd syscall";
		return fd;
	}
	err = -errno;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
		if (fd >= 0) {
			*how = "/dev/userfaultfd";
			return fd;
		}
	}
	/* Unprivileged and without access to the device: faults of user-space accesses only. */
	fd = (int)syscall(__NR_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	if (fd >= 0) {
		*how = "the userfaultfd syscall, user-mode only";
		return fd;
	}
	return err;
}

/* The bytes of the page every floor copies: not zero anywhere, so a missed page shows. */
static inline uint8_t floor_byte(size_t i)
{
	return (uint8_t)(0xa5 ^ (i * 67u) ^ (i >> 7));
}

static void floor_page(char *buf)
{
	for (size_t i = 0; i < BENCH_PAGE; i++)
		buf[i] = (char)floor_byte(i);
}

static int floor_verify(const char *name, const char *region, size_t len, struct bench_err *e)
{
	char want[BENCH_PAGE];

	floor_page(want);
	for (size_t off = 0; off < len; off += BENCH_PAGE)
		if (memcmp(region + off, want, BENCH_PAGE))
			return bench_fail(e, -EIO, "%s: page %zu does not hold the handler's bytes",
					  name, off / BENCH_PAGE);
	return 0;
}

/* A userfaultfd with @features, and @len bytes of anonymous memory registered for MISSING. */
static int floor_setup(const char *name, uint64_t features, int flags, size_t len, int *ret_fd,
		       char **ret_region, struct bench_err *e)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	const char *how;
	char *m;
	int fd, r;

	fd = bench_raw_uffd_open(flags, &how);
	if (fd < 0)
		return bench_fail(e, fd, "%s: userfaultfd", name);
	if (ioctl(fd, UFFDIO_API, &api) == -1) {
		r = bench_fail(e, -errno, "%s: UFFDIO_API", name);
		close(fd);
		return r;
	}
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		r = bench_fail(e, -errno, "%s: mmap %zu bytes", name, len);
		close(fd);
		return r;
	}
	reg.range.start = (uint64_t)(uintptr_t)m;
	reg.range.len = len;
	if (ioctl(fd, UFFDIO_REGISTER, &reg) == -1) {
		r = bench_fail(e, -errno, "%s: UFFDIO_REGISTER", name);
		munmap(m, len);
		close(fd);
		return r;
	}
	*ret_fd = fd;
	*ret_region = m;
	return 0;
}

/* Warm up, then time each access, with the reader pinned to @cpu (-1: left where it is). */
static int floor_walk(const char *name, const char *region, size_t warmup, size_t pages, int cpu,
		      struct bench_lat_result *res, struct bench_err *e)
{
	cpu_set_t saved;
	uint64_t ns;
	int r;

	if (cpu >= 0 && (r = bench_pin(cpu, &saved)) < 0)
		return bench_fail(e, r, "%s: pinning the reader to CPU %d", name, cpu);
	bench_walk(region, warmup);
	ns = bench_walk_timed(region + warmup * BENCH_PAGE, pages, res->lat);
	if (cpu >= 0)
		bench_unpin(&saved);
	res->secs = (double)ns / 1e9;
	return 0;
}

/* ---------------------------------------------------------------- syscall */

__attribute__((noinline)) static uint64_t syscalls_timed(size_t n, uint64_t *lat)
{
	uint64_t start = fl__now_ns();

	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = fl__now_ns();

		syscall(SYS_getppid);
		lat[i] = fl__now_ns() - t0;
	}
	return fl__now_ns() - start;
}

static int floor_syscall(const struct bench_lat_opts *o, struct bench_lat_result *res)
{
	uint64_t ns;

	for (size_t i = 0; i < o->warmup; i++)
		syscall(SYS_getppid);
	ns = syscalls_timed(o->pages, res->lat);
	res->secs = (double)ns / 1e9;
	return 0;
}

/* ---------------------------------------------------------------- SIGBUS */

static struct {
	int fd;
	char *page;		/* the source page */
	atomic_int err;		/* -errno of the first failed COPY */
	uint64_t start, len;	/* the registered range, unregistered on a failure */
} bus;

static void bare_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct uffdio_copy c = {
		.src = (uint64_t)(uintptr_t)bus.page,
		.dst = (uint64_t)(uintptr_t)si->si_addr & ~(uint64_t)(BENCH_PAGE - 1),
		.len = BENCH_PAGE,
	};
	int saved = errno;

	(void)sig;
	(void)uc;
	if (ioctl(bus.fd, UFFDIO_COPY, &c) == -1 && errno != EEXIST) {
		struct uffdio_range range = { .start = bus.start, .len = bus.len };

		/* Unregistered, the access maps the zero page: the verification reports it. */
		atomic_store(&bus.err, -errno);
		ioctl(bus.fd, UFFDIO_UNREGISTER, &range);
	}
	errno = saved;
}

static int floor_sigbus(const struct bench_lat_opts *o, struct bench_lat_result *res,
			struct bench_err *e)
{
	const char *name = "bare-sigbus";
	struct sigaction sa = { .sa_sigaction = bare_sigbus, .sa_flags = SA_SIGINFO }, old;
	size_t len = (o->warmup + o->pages) * BENCH_PAGE;
	char page[BENCH_PAGE] __attribute__((aligned(64)));
	char *m;
	int fd, r;

	r = floor_setup(name, UFFD_FEATURE_SIGBUS, O_CLOEXEC, len, &fd, &m, e);
	if (r < 0)
		return r;
	floor_page(page);
	bus.fd = fd;
	bus.page = page;
	bus.start = (uint64_t)(uintptr_t)m;
	bus.len = len;
	atomic_store(&bus.err, 0);
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &old) < 0) {
		r = bench_fail(e, -errno, "%s: sigaction", name);
		goto out;
	}
	r = floor_walk(name, m, o->warmup, o->pages, o->pin ? 0 : -1, res, e);
	sigaction(SIGBUS, &old, NULL);
	if (r == 0 && atomic_load(&bus.err))
		r = bench_fail(e, atomic_load(&bus.err), "%s: UFFDIO_COPY", name);
	if (r == 0)
		r = floor_verify(name, m, len, e);
out:
	munmap(m, len);
	close(fd);
	return r;
}

/* ---------------------------------------------------------------- thread */

struct bare_thread {
	int fd;
	int cpu;
	atomic_int started;
	atomic_int stop;
	int err;
	const char *what;
	uint64_t start, len;
};

static void bare_wake(int sig)
{
	(void)sig;
}

static void bare_thread_error(struct bare_thread *t, const char *what, int err)
{
	struct uffdio_range range = { .start = t->start, .len = t->len };

	t->err = err;
	t->what = what;
	ioctl(t->fd, UFFDIO_UNREGISTER, &range);	/* releases the reader */
}

/* Blocked in read(), one message at a time, one COPY each: nothing else. */
static void *bare_thread_main(void *arg)
{
	struct bare_thread *t = arg;
	char page[BENCH_PAGE] __attribute__((aligned(64)));
	cpu_set_t one;

	floor_page(page);
	CPU_ZERO(&one);
	CPU_SET(t->cpu, &one);
	if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one)) {
		bare_thread_error(t, "pinning the handler", -EINVAL);
		atomic_store(&t->started, 1);
		return NULL;
	}
	atomic_store(&t->started, 1);
	for (;;) {
		struct uffd_msg msg;
		ssize_t n = read(t->fd, &msg, sizeof(msg));
		struct uffdio_copy c = { .src = (uint64_t)(uintptr_t)page, .len = BENCH_PAGE };

		if (atomic_load(&t->stop))
			return NULL;
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n != (ssize_t)sizeof(msg)) {
			bare_thread_error(t, "read", n < 0 ? -errno : -EPROTO);
			return NULL;
		}
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		c.dst = msg.arg.pagefault.address & ~(uint64_t)(BENCH_PAGE - 1);
		if (ioctl(t->fd, UFFDIO_COPY, &c) == -1 && errno != EEXIST) {
			bare_thread_error(t, "UFFDIO_COPY", -errno);
			return NULL;
		}
	}
}

/* The @n-th CPU this process may run on (0: the first), or -1. */
static int allowed_cpu(int n)
{
	cpu_set_t allowed;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return n ? -1 : 0;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &allowed) && n-- == 0)
			return cpu;
	return -1;
}

static int floor_thread(bool same, const struct bench_lat_opts *o, struct bench_lat_result *res,
			struct bench_err *e)
{
	const char *name = same ? "bare-thread-same" : "bare-thread-other";
	struct sigaction sa = { .sa_handler = bare_wake }, old;	/* no SA_RESTART */
	size_t len = (o->warmup + o->pages) * BENCH_PAGE;
	struct bare_thread t = { .fd = -1 };
	int reader;
	pthread_t tid;
	char *m;
	int r;

	reader = allowed_cpu(0);
	t.cpu = same ? reader : allowed_cpu(1);
	if (t.cpu < 0)
		return bench_fail(e, -EOPNOTSUPP, "%s: needs a second CPU", name);
	r = floor_setup(name, 0, O_CLOEXEC, len, &t.fd, &m, e);
	if (r < 0)
		return r;
	t.start = (uint64_t)(uintptr_t)m;
	t.len = len;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR2, &sa, &old) < 0) {
		r = bench_fail(e, -errno, "%s: sigaction", name);
		goto out;
	}
	r = pthread_create(&tid, NULL, bare_thread_main, &t);
	if (r) {
		r = bench_fail(e, -r, "%s: pthread_create", name);
		goto restore;
	}
	while (!atomic_load(&t.started))
		sched_yield();
	/* The reader is always pinned here: the floor is defined by where the handler runs. */
	r = floor_walk(name, m, o->warmup, o->pages, reader, res, e);
	atomic_store(&t.stop, 1);
	for (;;) {
		struct timespec ts;

		pthread_kill(tid, SIGUSR2);
		ts = fl__abstime_in(CLOCK_REALTIME, 10 * 1000 * 1000);
		if (pthread_timedjoin_np(tid, NULL, &ts) == 0)
			break;
	}
	if (r == 0 && t.err)
		r = bench_fail(e, t.err, "%s: %s", name, t.what);
	if (r == 0)
		r = floor_verify(name, m, len, e);
restore:
	sigaction(SIGUSR2, &old, NULL);
out:
	munmap(m, len);
	close(t.fd);
	return r;
}

int bench_floor_run(enum bench_lat_mode m, const struct bench_lat_opts *o,
		    struct bench_lat_result *res, struct bench_err *e)
{
	switch (m) {
	case BENCH_LAT_SYSCALL:
		return floor_syscall(o, res);
	case BENCH_LAT_BARE_SIGBUS:
		return floor_sigbus(o, res, e);
	case BENCH_LAT_BARE_THREAD_SAME:
		return floor_thread(true, o, res, e);
	case BENCH_LAT_BARE_THREAD_OTHER:
		return floor_thread(false, o, res, e);
	default:
		break;
	}
	return bench_fail(e, -EINVAL, "not a floor: mode %d", (int)m);
}

bool bench_floor_possible(enum bench_lat_mode m, const char **why)
{
	if (m == BENCH_LAT_BARE_THREAD_OTHER && allowed_cpu(1) < 0) {
		*why = "needs a second CPU";
		return false;
	}
	return true;
}

double bench_native_fault_ns(void)
{
	struct bench_lat_opts lo = { .pages = 4096, .warmup = 256 };
	struct bench_lat_result lr = { 0 };
	struct bench_err e;
	uint64_t *lat = calloc(lo.pages, sizeof(*lat));
	double v = NAN;

	if (!lat)
		return NAN;
	lr.lat = lat;
	if (bench_lat_run(BENCH_LAT_NATIVE, &lo, &lr, &e) == 0) {
		stats_sort_u64(lat, lo.pages);
		v = (double)stats_percentile(lat, lo.pages, 50);
	}
	free(lat);
	return v;
}

const char *bench_kind_of_fault(double fault_ns)
{
	if (isnan(fault_ns))
		return "unknown";
	return fault_ns >= 4000 ? "paravirtualized" : fault_ns <= 2000 ? "hardware" : "unclear";
}

const char *bench_kind_of_syscall(double syscall_ns)
{
	if (isnan(syscall_ns))
		return "unknown";
	return syscall_ns >= 500 ? "paravirtualized" : syscall_ns <= 250 ? "hardware" : "unclear";
}

const char *bench_kind_text(const char *kind)
{
	if (!strcmp(kind, "paravirtualized"))
		return "paravirtualized, no hardware virtualization (a native fault costs >= 4 µs; "
		       "~0.7 µs with KVM)";
	if (!strcmp(kind, "hardware"))
		return "bare metal or hardware-virtualized (KVM)";
	if (!strcmp(kind, "unclear"))
		return "between a KVM guest and a paravirtualized one";
	return "unknown";
}
