/* SPDX-License-Identifier: MIT */
/* Test helpers: assertions that exit the forked test child, mappings, threads. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

void t_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "    %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	_exit(1);
}

void t_skip(const char *fmt, ...)
{
	va_list ap;

	fprintf(stdout, "    skip: ");
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
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
