/* SPDX-License-Identifier: MIT */
/* Test helpers: assertions that exit the forked test child, mappings, threads. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/*
 * How much slower than a plain build this build runs the tests: every
 * test's timeout is multiplied by it (and by FL_TEST_TIMEOUT_SCALE).
 * ThreadSanitizer runs them up to ~50x slower in the worst places, ASan
 * ~3x; the factors are generous because a timeout only bounds a hang.
 */
#if defined(__SANITIZE_THREAD__)
#define BUILD_SCALE 10.0
#define BUILD_KIND "ThreadSanitizer"
#elif defined(__SANITIZE_ADDRESS__)
#define BUILD_SCALE 3.0
#define BUILD_KIND "AddressSanitizer"
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BUILD_SCALE 10.0
#define BUILD_KIND "ThreadSanitizer"
#elif __has_feature(address_sanitizer)
#define BUILD_SCALE 3.0
#define BUILD_KIND "AddressSanitizer"
#endif
#endif
#ifndef BUILD_SCALE
#define BUILD_SCALE 1.0
#define BUILD_KIND NULL
#endif

double t_build_timeout_scale(void)
{
	return BUILD_SCALE;
}

const char *t_build_kind(void)
{
	return BUILD_KIND;
}

struct t_report *t_report;
static double timeout_scale = 1.0;

double t_timeout_scale(void)
{
	return timeout_scale;
}

void t_set_timeout_scale(double scale)
{
	timeout_scale = scale;
}

int t_ms(int ms)
{
	double v = (double)ms * timeout_scale;

	return v > (double)INT_MAX ? INT_MAX : (int)v;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
	char msg[sizeof(t_report->reason)];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "%s:%d: ", file, line);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof(msg))
		vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	/* The first failure goes on the FAIL line; any later one (another thread) to stdout. */
	if (t_report && !__atomic_exchange_n(&t_report->taken, 1, __ATOMIC_SEQ_CST)) {
		memcpy(t_report->reason, msg, sizeof(msg));
	} else {
		printf("    %s%s\n", t_report ? "also: " : "", msg);
		fflush(stdout);
	}
	_exit(1);
}

void t_skip(const char *fmt, ...)
{
	char msg[sizeof(t_report->reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (t_report && !__atomic_exchange_n(&t_report->taken, 1, __ATOMIC_SEQ_CST)) {
		memcpy(t_report->reason, msg, sizeof(msg));
		t_report->skipped = true;
	} else {
		printf("    skip: %s\n", msg);
		fflush(stdout);
	}
	_exit(77);
}

size_t t_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

struct fl_uffd *t_uffd_open(uint64_t features, bool nonblock)
{
	struct fl_uffd_opts o = {
		.sz = sizeof(o),
		.features = features,
		.flags = nonblock ? FL_UFFD_NONBLOCK : 0,
	};
	struct fl_uffd *u = NULL;
	int r = fl_uffd_open(&o, &u);

	if (r < 0)
		t_fail(__FILE__, __LINE__, "fl_uffd_open(features %#llx): %s",
		       (unsigned long long)features, strerror(-r));
	return u;
}

void *t_map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap anon %zu: %s", len, strerror(errno));
	return p;
}

static void *map_memfd(size_t len, int *fd, unsigned int flags)
{
	void *p;
	int f = memfd_create("fl-test", MFD_CLOEXEC | flags);

	if (f < 0)
		t_fail(__FILE__, __LINE__, "memfd_create: %s", strerror(errno));
	if (ftruncate(f, (off_t)len) < 0)
		t_fail(__FILE__, __LINE__, "ftruncate: %s", strerror(errno));
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap memfd %zu: %s", len, strerror(errno));
	if (fd)
		*fd = f;
	else
		close(f);
	return p;
}

void *t_map_memfd(size_t len, int *fd)
{
	return map_memfd(len, fd, 0);
}

void *t_map_hugetlb(size_t len, int *fd)
{
	return map_memfd(len, fd, MFD_HUGETLB);
}

void *t_map_fd(int fd, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap fd %d: %s", fd, strerror(errno));
	return p;
}

void *t_map_aligned(size_t len, size_t align)
{
	uint8_t *p = t_map_anon(len + align), *a;

	a = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + len + align)
		munmap(a + len, (size_t)(p + len + align - (a + len)));
	return a;
}

void t_places_reserve(struct t_places *pl, void *mem, size_t len)
{
	uint8_t *at;

	/*
	 * Between a move and the reservation of the place it left, a new
	 * malloc arena (a thread's first malloc) or a large chunk could be
	 * mapped into that hole: take all memory from the main heap instead.
	 */
	mallopt(M_ARENA_MAX, 1);
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	at = mmap(NULL, 2 * len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			   -1, 0);

	if (at == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap of %zu bytes: %s", 2 * len, strerror(errno));
	*pl = (struct t_places){ .at = { at, at + len }, .len = len, .cur = 0 };
	if (mremap(mem, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, at) != at)
		t_fail(__FILE__, __LINE__, "mremap to %p: %s", (void *)at, strerror(errno));
}

void t_places_move(struct t_places *pl)
{
	uint8_t *from = pl->at[pl->cur], *to = pl->at[!pl->cur];

	if (mremap(from, pl->len, pl->len, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to)
		t_fail(__FILE__, __LINE__, "mremap %p to %p: %s", (void *)from, (void *)to,
		       strerror(errno));
	if (mmap(from, pl->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
		 MAP_FIXED_NOREPLACE, -1, 0) != from) {
		t_fail(__FILE__, __LINE__, "reserving %p again: %s", (void *)from, strerror(errno));
	}
	pl->cur = !pl->cur;
	pl->moves++;
}

void t_places_free(struct t_places *pl)
{
	munmap(pl->at[0], 2 * pl->len);
}

void t_fill(void *p, size_t len, uint8_t byte)
{
	memset(p, byte, len);
}

bool t_all(const void *p, size_t len, uint8_t byte)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != byte)
			return false;
	return true;
}

unsigned long t_thread_start(t_thread_fn fn, void *arg)
{
	pthread_t t;
	int r = pthread_create(&t, NULL, fn, arg);

	if (r)
		t_fail(__FILE__, __LINE__, "pthread_create: %s", strerror(r));
	return (unsigned long)t;
}

void *t_thread_join(unsigned long tid)
{
	void *res = NULL;
	int r = pthread_join((pthread_t)tid, &res);

	if (r)
		t_fail(__FILE__, __LINE__, "pthread_join: %s", strerror(r));
	return res;
}

void t_wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (;;) {
		int r = poll(&p, 1, -1);

		if (r > 0)
			return;
		if (r < 0 && errno != EINTR)
			t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
	}
}

static void *loop_main(void *arg)
{
	struct t_loop *l = arg;
	struct pollfd fds[2] = {
		{ .fd = fl_pager_fd(l->p), .events = POLLIN },
		{ .fd = l->stop, .events = POLLIN },
	};

	for (;;) {
		int r;

		/* Unbounded: the runner's alarm bounds the test. */
		if (poll(fds, 2, -1) < 0) {
			if (errno != EINTR)
				t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
			continue;
		}
		if (fds[1].revents)
			return NULL;
		r = fl_pager_dispatch(l->p);
		if (r < 0)
			t_fail(__FILE__, __LINE__, "fl_pager_dispatch: %s", strerror(-r));
	}
}

void t_loop_start(struct t_loop *l, struct fl_pager *p)
{
	*l = (struct t_loop){ .p = p, .stop = eventfd(0, EFD_CLOEXEC) };
	if (l->stop < 0)
		t_fail(__FILE__, __LINE__, "eventfd: %s", strerror(errno));
	l->th = t_thread_start(loop_main, l);
}

void t_loop_stop(struct t_loop *l)
{
	uint64_t one = 1;

	if (write(l->stop, &one, sizeof(one)) != sizeof(one))
		t_fail(__FILE__, __LINE__, "write eventfd: %s", strerror(errno));
	t_thread_join(l->th);
	close(l->stop);
	l->stop = -1;
}

struct fl_event t_read_event(struct fl_uffd *u, uint32_t type)
{
	struct fl_event ev;
	int r;

	for (;;) {
		t_wait_readable(fl_uffd_fd(u));
		r = fl_uffd_read_events(u, &ev, 1);
		if (r == -EAGAIN || r == -EINTR)
			continue;
		break;
	}
	if (r != 1)
		t_fail(__FILE__, __LINE__, "fl_uffd_read_events: %d (%s)", r,
		       r < 0 ? strerror(-r) : "");
	if (ev.type != type)
		t_fail(__FILE__, __LINE__, "expected a %s event, got %s", fl_event_type_name(type),
		       fl_event_type_name(ev.type));
	return ev;
}

int t_run_child(void (*fn)(void *), void *arg)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		t_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) < 0)
		t_fail(__FILE__, __LINE__, "waitpid: %s", strerror(errno));
	return status;
}

size_t t_mem_page_size(enum fl_mem_type type)
{
	return type == FL_MEM_HUGETLB ? (size_t)2 << 20 : t_page_size();
}

void *t_map_mem(enum fl_mem_type type, size_t len, int *fd)
{
	*fd = -1;
	switch (type) {
	case FL_MEM_ANON:
		return t_map_anon(len);
	case FL_MEM_SHMEM:
		return t_map_memfd(len, fd);
	case FL_MEM_HUGETLB: {
		/*
		 * The runner reserved huge pages, but another runner on this
		 * machine may have handed its reservation back meanwhile: no
		 * free huge page left is a missing resource, not a failure.
		 */
		int f = memfd_create("fl-test", MFD_CLOEXEC | MFD_HUGETLB);
		void *p;

		if (f < 0)
			t_fail(__FILE__, __LINE__, "memfd_create hugetlb: %s", strerror(errno));
		if (ftruncate(f, (off_t)len) < 0)
			t_fail(__FILE__, __LINE__, "ftruncate: %s", strerror(errno));
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
		if (p == MAP_FAILED && errno == ENOMEM)
			t_skip("not enough free 2 MiB huge pages left for %zu bytes", len);
		if (p == MAP_FAILED)
			t_fail(__FILE__, __LINE__, "mmap hugetlb %zu: %s", len, strerror(errno));
		*fd = f;
		return p;
	}
	}
	t_fail(__FILE__, __LINE__, "unknown memory type %d", (int)type);
}

uint64_t t_pagemap(const void *addr)
{
	off_t off = (off_t)((uintptr_t)addr / t_page_size() * sizeof(uint64_t));
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open /proc/self/pagemap: %s", strerror(errno));
	if (pread(fd, &e, sizeof(e), off) != (ssize_t)sizeof(e))
		t_fail(__FILE__, __LINE__, "pread pagemap: %s", strerror(errno));
	close(fd);
	return e;
}

long t_smaps_kb(const void *addr, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	size_t flen = strlen(field);
	bool inside = false;
	char line[512];
	long kb = -1;

	if (!f)
		t_fail(__FILE__, __LINE__, "open /proc/self/smaps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		/* A mapping's header line is "lo-hi perms ..."; its fields follow it. */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			if (inside)
				break;
			inside = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
			continue;
		}
		if (inside && !strncmp(line, field, flen) && line[flen] == ':') {
			kb = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

static void *access_thread(void *arg)
{
	struct t_access *a = arg;
	uint64_t one = 1;

	__atomic_store_n(&a->kernel_tid, (int)gettid(), __ATOMIC_SEQ_CST);
	/*
	 * Atomic: the test may read the byte while this write is blocked in
	 * the kernel, which ThreadSanitizer, recording the write as it is
	 * issued, would otherwise report as a race.
	 */
	if (a->write)
		__atomic_store_n(a->p, a->byte, __ATOMIC_RELAXED);
	a->seen = *a->p;
	if (write(a->efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		t_fail(__FILE__, __LINE__, "eventfd write: %s", strerror(errno));
	return NULL;
}

void t_access_start(struct t_access *a, void *p, bool write_it, uint8_t byte)
{
	*a = (struct t_access){ .p = p, .write = write_it, .byte = byte };
	a->efd = eventfd(0, EFD_CLOEXEC);
	if (a->efd < 0)
		t_fail(__FILE__, __LINE__, "eventfd: %s", strerror(errno));
	a->tid = t_thread_start(access_thread, a);
}

bool t_access_finished(const struct t_access *a)
{
	struct pollfd p = { .fd = a->efd, .events = POLLIN };
	int r = poll(&p, 1, 0);

	if (r < 0)
		t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
	return r > 0;
}

uint8_t t_access_join(struct t_access *a)
{
	t_thread_join(a->tid);
	close(a->efd);
	a->efd = -1;
	return a->seen;
}

bool t_have(uint64_t feats)
{
	struct fl_features f;

	fl_probe(&f);
	return (f.features & feats) == feats;
}

struct fl_pager *t_pager_new(enum fl_pager_mode mode, unsigned int threads, uint64_t feats)
{
	struct fl_pager_opts o = {
		.sz = sizeof(o), .mode = mode, .threads = threads, .features = feats,
	};
	struct fl_pager *p = NULL;
	int r;

	r = fl_pager_create(&o, &p);
	if (r < 0)
		t_fail(__FILE__, __LINE__, "fl_pager_create: %s", strerror(-r));
	return p;
}

struct fl_region_opts t_region_opts(struct fl_store *s, size_t len)
{
	return (struct fl_region_opts){ .sz = sizeof(struct fl_region_opts), .len = len, .store = s,
					.memfd = -1 };
}

/* volatile: the stores around the access must not be merged away. */
static _Thread_local sigjmp_buf *volatile bus_jmp;
static _Thread_local void *volatile bus_addr;

void t_on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!bus_jmp) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	bus_addr = si->si_addr;
	siglongjmp(*bus_jmp, 1);
}

bool t_read_sigbus(volatile uint8_t *p)
{
	sigjmp_buf jb;
	bool hit;

	bus_addr = NULL;
	bus_jmp = &jb;
	hit = sigsetjmp(jb, 1) != 0;
	if (!hit)
		(void)*p;
	bus_jmp = NULL;
	if (hit && bus_addr != (void *)p)
		t_fail(__FILE__, __LINE__, "SIGBUS at %p, expected %p", bus_addr, (void *)p);
	return hit;
}

/* Whether a thread of @pid sleeps in kernel function @fn (its wchan) right now. */
static bool sleeps_in_now(pid_t pid, const char *fn)
{
	char path[64];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		char buf[64] = "";
		ssize_t n;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/wchan", (int)pid, de->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		found = n > 0 && strncmp(buf, fn, strlen(fn)) == 0;
	}
	closedir(d);
	return found;
}

static bool wait_sleeps_in(pid_t pid, const char *fn, int ms)
{
	struct timespec now, end;
	int64_t left = t_ms(ms);

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += left / 1000;
	end.tv_nsec += (left % 1000) * 1000000;
	for (;;) {
		if (sleeps_in_now(pid, fn))
			return true;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec * 1000000000ll + now.tv_nsec >=
		    end.tv_sec * 1000000000ll + end.tv_nsec)
			return false;
		usleep(1000);	/* polling /proc: nothing to wait on */
	}
}

bool t_wait_fault_blocked(pid_t pid, int ms)
{
	return wait_sleeps_in(pid, "handle_userfault", ms);
}

bool t_wait_event_blocked(pid_t pid, int ms)
{
	return wait_sleeps_in(pid, "userfaultfd_event_wait_completion", ms);
}

void t_tool_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	T_ASSERT(n > 0);
	self[n] = '\0';
	snprintf(buf, len, "%s/../faultline", dirname(self));
	if (access(buf, X_OK) != 0)
		T_SKIP("%s not built", buf);
}

void t_run_capture(struct t_run *r, const char *path, char *const argv[], const char *env)
{
	int out[2], err[2], st;
	struct pollfd pf[2];
	size_t got[2] = { 0, 0 }, cap[2] = { sizeof(r->out) - 1, sizeof(r->err) - 1 };
	char *buf[2] = { r->out, r->err }, sink[4096];
	pid_t pid;

	T_ASSERT_SYS(pipe2(out, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(err, O_CLOEXEC));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		if (env && strchr(env, '=')) {
			char name[64];
			size_t k = (size_t)(strchr(env, '=') - env);

			snprintf(name, sizeof(name), "%.*s", (int)k, env);
			setenv(name, env + k + 1, 1);
		} else if (env) {
			unsetenv(env);
		}
		execv(path, argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	pf[0] = (struct pollfd){ .fd = out[0], .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = err[0], .events = POLLIN };
	/* Until both close: the child's own deadline, or the runner's, bounds this. */
	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		if (poll(pf, 2, -1) < 0) {
			T_ASSERT(errno == EINTR);
			continue;
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (pf[i].fd < 0 || !pf[i].revents)
				continue;
			n = got[i] < cap[i] ? read(pf[i].fd, buf[i] + got[i], cap[i] - got[i])
					    : read(pf[i].fd, sink, sizeof(sink));
			if (n <= 0) {
				close(pf[i].fd);
				pf[i].fd = -1;
			} else if (got[i] < cap[i]) {
				got[i] += (size_t)n;
			}
		}
	}
	r->out[got[0]] = '\0';
	r->err[got[1]] = '\0';
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
