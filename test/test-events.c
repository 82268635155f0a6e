/* SPDX-License-Identifier: MIT */
/* Non-cooperative events (FORK, REMAP, REMOVE, UNMAP) and the EAGAIN they cause while unread. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "tests.h"

static bool present(const void *p)
{
	return (t_pagemap(p) & T_PM_PRESENT) != 0;
}

/*
 * Nothing queued on @u right now. Only meaningful on a non-blocking uffd: on a
 * blocking one the kernel's poll always answers POLLERR.
 */
static bool quiet(struct fl_uffd *u)
{
	struct pollfd pfd = { .fd = fl_uffd_fd(u), .events = POLLIN };

	T_ASSERT(fcntl(fl_uffd_fd(u), F_GETFL) & O_NONBLOCK);
	T_ASSERT_SYS(poll(&pfd, 1, 0));
	return !(pfd.revents & POLLIN);
}

struct forker {
	uint8_t *p;
	size_t ps;
	int status;
};

/*
 * fork() from a second thread: it blocks until the FORK event is read. The
 * child checks its copy of the range: page 0 must arrive through the child's
 * own userfaultfd, page 1 was inherited.
 */
static void *fork_thread(void *arg)
{
	struct forker *f = arg;
	pid_t pid = fork();

	if (pid == 0)
		_exit(t_all(f->p, f->ps, 'F') && t_all(f->p + f->ps, f->ps, 'P') ? 0 : 1);
	if (pid < 0)
		t_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
	if (waitpid(pid, &f->status, 0) != pid)
		t_fail(__FILE__, __LINE__, "waitpid: %s", strerror(errno));
	return NULL;
}

TEST(event_fork)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_FORK, true), *cu = NULL;
	uint8_t *p = t_map_anon(2 * ps), *src = t_map_anon(ps);
	struct forker f = { .p = p, .ps = ps, .status = -1 };
	struct fl_event ev;
	unsigned long th;

	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING, NULL));
	t_fill(src, ps, 'P');
	T_ASSERT_OK(fl_uffd_copy(u, p + ps, src, ps, 0, NULL));

	th = t_thread_start(fork_thread, &f);
	ev = t_read_event(u, FL_EVENT_FORK);
	T_ASSERT_EQ(ev.flags, 0);
	T_ASSERT(ev.fork.fd >= 0 && ev.fork.fd != fl_uffd_fd(u));
	/* The child's uffd inherits the parent's file flags. */
	T_ASSERT(fcntl(ev.fork.fd, F_GETFD) & FD_CLOEXEC);
	T_ASSERT(fcntl(ev.fork.fd, F_GETFL) & O_NONBLOCK);
	/* A child's uffd carries its parent's features. */
	T_ASSERT_OK(fl_uffd_take(ev.fork.fd, fl_uffd_features(u), 0, &cu));

	ev = t_read_event(cu, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p);
	t_fill(src, ps, 'F');
	T_ASSERT_OK(fl_uffd_copy(cu, p, src, ps, 0, &done));	/* into the child's memory */
	T_ASSERT_EQ(done, ps);
	t_thread_join(th);
	T_ASSERT(WIFEXITED(f.status));
	T_ASSERT_EQ(WEXITSTATUS(f.status), 0);
	/* The parent's page 0 was never touched, and the parent's uffd saw no fault. */
	T_ASSERT(!present(p));
	T_ASSERT(quiet(u));
	fl_uffd_close(cu);
	fl_uffd_close(u);
}

struct remapper {
	uint8_t *p;
	size_t len, new_len;
	void *to;
};

static void *remap_thread(void *arg)
{
	struct remapper *r = arg;

	r->to = mremap(r->p, r->len, r->new_len, MREMAP_MAYMOVE);
	return NULL;
}

TEST(event_remap)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_REMAP, false);
	uint8_t *p = t_map_anon(4 * ps), *src = t_map_anon(ps), *to;
	struct remapper r = { .p = p, .len = 2 * ps, .new_len = 4 * ps };
	struct t_access a;
	struct fl_event ev;
	unsigned long th;

	/* Register the first half: the unregistered second half blocks growing in place. */
	T_ASSERT_OK(fl_uffd_register(u, p, 2 * ps, FL_REGISTER_MISSING, NULL));
	t_fill(src, ps, 'R');
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, NULL));

	th = t_thread_start(remap_thread, &r);
	ev = t_read_event(u, FL_EVENT_REMAP);
	t_thread_join(th);
	T_ASSERT(r.to != MAP_FAILED);
	to = r.to;
	T_ASSERT(to != p);
	T_ASSERT_EQ(ev.flags, 0);
	T_ASSERT_EQ(ev.remap.from, p);
	T_ASSERT_EQ(ev.remap.to, to);
	T_ASSERT_EQ(ev.remap.len, 2 * ps);	/* the old length */

	/* The data moved, and the moved range is still registered. */
	T_ASSERT(t_all(to, ps, 'R'));
	t_access_start(&a, to + ps + 3, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, to + ps);
	T_ASSERT_OK(fl_uffd_zeropage(u, to + ps, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT_EQ(t_access_join(&a), 0);
	fl_uffd_close(u);
}

struct advisor {
	uint8_t *p;
	size_t len;
	int advice;	/* an madvise() advice, or -1 for munmap() */
	int ret;
};

static void *advise_thread(void *arg)
{
	struct advisor *d = arg;

	d->ret = d->advice < 0 ? munmap(d->p, d->len) : madvise(d->p, d->len, d->advice);
	return NULL;
}

TEST(event_remove)
{
	size_t ps = t_page_size(), done = 0;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_REMOVE, false);
	uint8_t *p = t_map_anon(4 * ps), *src = t_map_anon(4 * ps);
	struct advisor d = { .p = p + ps, .len = 2 * ps, .advice = MADV_DONTNEED, .ret = -2 };
	struct t_access a;
	struct fl_event ev;
	unsigned long th;

	T_ASSERT_OK(fl_uffd_register(u, p, 4 * ps, FL_REGISTER_MISSING, NULL));
	for (size_t i = 0; i < 4; i++)
		t_fill(src + i * ps, ps, (uint8_t)('a' + i));
	T_ASSERT_OK(fl_uffd_copy(u, p, src, 4 * ps, 0, NULL));

	th = t_thread_start(advise_thread, &d);
	ev = t_read_event(u, FL_EVENT_REMOVE);
	t_thread_join(th);
	T_ASSERT_EQ(d.ret, 0);
	T_ASSERT_EQ(ev.flags, 0);
	T_ASSERT_EQ(ev.range.start, p + ps);
	T_ASSERT_EQ(ev.range.end, p + 3 * ps);
	T_ASSERT(!present(p + ps) && !present(p + 2 * ps));
	T_ASSERT(t_all(p, ps, 'a') && t_all(p + 3 * ps, ps, 'd'));

	/* The range stays registered: touching it faults again. */
	t_access_start(&a, p + 2 * ps, false, 0);
	ev = t_read_event(u, FL_EVENT_PAGEFAULT);
	T_ASSERT_EQ(ev.fault.addr, p + 2 * ps);
	T_ASSERT_OK(fl_uffd_copy(u, p + 2 * ps, src, ps, 0, &done));
	T_ASSERT_EQ(done, ps);
	T_ASSERT_EQ(t_access_join(&a), 'a');
	fl_uffd_close(u);
}

TEST(event_unmap)
{
	size_t ps = t_page_size(), done = 1;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_UNMAP, false);
	uint8_t *p = t_map_anon(3 * ps), *src = t_map_anon(ps);
	struct advisor d = { .p = p + ps, .len = ps, .advice = -1, .ret = -2 };
	struct fl_event ev;
	unsigned long th;

	T_ASSERT_OK(fl_uffd_register(u, p, 3 * ps, FL_REGISTER_MISSING, NULL));
	th = t_thread_start(advise_thread, &d);
	ev = t_read_event(u, FL_EVENT_UNMAP);
	t_thread_join(th);
	T_ASSERT_EQ(d.ret, 0);
	T_ASSERT_EQ(ev.flags, 0);
	T_ASSERT_EQ(ev.range.start, p + ps);
	T_ASSERT_EQ(ev.range.end, p + 2 * ps);

	/* The hole is gone for good; its neighbours are still registered. */
	t_fill(src, ps, 'u');
	T_ASSERT_ERR(fl_uffd_copy(u, p + ps, src, ps, 0, &done), ENOENT);
	T_ASSERT_EQ(done, 0);
	T_ASSERT_OK(fl_uffd_copy(u, p + 2 * ps, src, ps, 0, NULL));
	T_ASSERT(t_all(p + 2 * ps, ps, 'u'));
	fl_uffd_close(u);
}

TEST(event_pending_eagain)
{
	size_t ps = t_page_size(), done;
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_REMOVE, true);
	uint8_t *p = t_map_anon(4 * ps), *src = t_map_anon(2 * ps);
	struct advisor d = { .p = p, .len = ps, .advice = MADV_DONTNEED, .ret = -2 };
	struct fl_event ev[4];
	unsigned long th;

	T_ASSERT_OK(fl_uffd_register(u, p, 4 * ps, FL_REGISTER_MISSING, NULL));
	t_fill(src, 2 * ps, 'g');
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, NULL));

	/* The thread blocks in madvise() until its REMOVE event is read. */
	th = t_thread_start(advise_thread, &d);
	t_wait_readable(fl_uffd_fd(u));
	done = 12345;
	T_ASSERT_ERR(fl_uffd_copy(u, p + 2 * ps, src, 2 * ps, 0, &done), EAGAIN);
	T_ASSERT_EQ(done, 0);
	done = 12345;
	T_ASSERT_ERR(fl_uffd_zeropage(u, p + 2 * ps, ps, 0, &done), EAGAIN);
	T_ASSERT_EQ(done, 0);
	T_ASSERT(!present(p + 2 * ps) && !present(p + 3 * ps));

	T_ASSERT_EQ(fl_uffd_read_events(u, ev, 4), 1);
	T_ASSERT_EQ(ev[0].type, FL_EVENT_REMOVE);
	T_ASSERT_EQ(ev[0].range.start, p);
	T_ASSERT_EQ(ev[0].range.end, p + ps);
	/*
	 * The kernel lets resolves through again only once the thread that
	 * caused the event has resumed, a moment after the read: join it first.
	 */
	t_thread_join(th);
	T_ASSERT_EQ(d.ret, 0);
	done = 0;
	T_ASSERT_OK(fl_uffd_copy(u, p + 2 * ps, src, 2 * ps, 0, &done));
	T_ASSERT_EQ(done, 2 * ps);
	T_ASSERT(t_all(p + 2 * ps, 2 * ps, 'g'));
	T_ASSERT_ERR(fl_uffd_read_events(u, ev, 4), EAGAIN);
	fl_uffd_close(u);
}

struct drainer {
	struct fl_uffd *u;
	unsigned long th;	/* the thread whose event is pending */
	int events;
};

/* Read the pending REMOVE event, then let its thread finish (resolves work again after). */
static int drain_remove(void *arg)
{
	struct drainer *dr = arg;
	struct fl_event ev[4];
	int n = fl_uffd_read_events(dr->u, ev, 4);

	if (n > 0) {
		dr->events += n;
		t_thread_join(dr->th);
	}
	return n > 0 ? n : 0;
}

/* The shared poison helper reads pending events through its caller's drain and goes on. */
TEST(event_poison_absent_drains)
{
	size_t ps = t_page_size();
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_REMOVE | FL_FEAT_POISON, true);
	uint8_t *p = t_map_anon(4 * ps), *src = t_map_anon(ps);
	struct advisor d = { .p = p, .len = ps, .advice = MADV_DONTNEED, .ret = -2 };
	struct drainer dr = { .u = u };
	struct fl__poison_opts o = { .step = ps };
	uint64_t poisoned = 0;

	T_ASSERT_OK(fl_uffd_register(u, p, 4 * ps, FL_REGISTER_MISSING, NULL));
	t_fill(src, ps, 'g');
	T_ASSERT_OK(fl_uffd_copy(u, p, src, ps, 0, NULL));
	dr.th = t_thread_start(advise_thread, &d);
	t_wait_readable(fl_uffd_fd(u));

	/* No drain: the pending event stops it, nothing poisoned. */
	T_ASSERT_ERR(fl__uffd_poison_absent(u, (uintptr_t)p + ps, 3 * ps, &o, &poisoned),
		     EAGAIN);
	T_ASSERT_EQ(poisoned, 0);
	o.drain = drain_remove;
	o.arg = &dr;
	T_ASSERT_OK(fl__uffd_poison_absent(u, (uintptr_t)p, 4 * ps, &o, &poisoned));
	T_ASSERT_EQ(dr.events, 1);
	T_ASSERT_EQ(d.ret, 0);
	/* Page 0 was discarded by the program before the pass: it is absent, so poisoned too. */
	T_ASSERT_EQ(poisoned, 4 * ps);
	fl_uffd_close(u);
}
