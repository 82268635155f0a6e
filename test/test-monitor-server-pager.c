/* SPDX-License-Identifier: MIT */
/* What the monitor needs of the pager: the event callback, FORK descriptors, kept registrations. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests.h"

#define SEED 0xe7e17ull

/* ------------------------------------------------------------- recording */

struct seen {
	pthread_mutex_t lock;
	struct fl_event ev[64];
	size_t n;
	unsigned int calls;
	bool fault_seen;		/* a page fault was passed: never allowed */
	struct fl_region *r;		/* the region whose move is checked */
	void *addr_at_remap;		/* fl_region_addr(r) inside the callback of the REMAP */
	int efd;			/* written on every call */
};

static void record(struct fl_pager *p, const struct fl_event *ev, size_t n, void *userdata)
{
	struct seen *s = userdata;
	uint64_t one = 1;

	(void)p;
	pthread_mutex_lock(&s->lock);
	s->calls++;
	for (size_t i = 0; i < n; i++) {
		if (ev[i].type == FL_EVENT_PAGEFAULT)
			s->fault_seen = true;
		if (ev[i].type == FL_EVENT_REMAP && s->r)
			s->addr_at_remap = fl_region_addr(s->r);
		if (s->n < 64)
			s->ev[s->n++] = ev[i];
	}
	pthread_mutex_unlock(&s->lock);
	if (write(s->efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		abort();
}

struct mover {
	uint8_t *base, *to;
	size_t len, ps;
	int done;	/* eventfd, written when all three returned */
};

/* Cause one event of each kind, in this order; each blocks until the event is read. */
static void *mover_main(void *arg)
{
	struct mover *m = arg;

	void *r = NULL;

	if (madvise(m->base, m->ps, MADV_DONTNEED) < 0 ||
	    mremap(m->base, m->len, m->len, MREMAP_MAYMOVE | MREMAP_FIXED, m->to) != m->to ||
	    munmap(m->to + m->len - m->ps, m->ps) < 0)
		r = (void *)1;
	if (write(m->done, &(uint64_t){ 1 }, sizeof(uint64_t)) != (ssize_t)sizeof(uint64_t))
		abort();
	return r;
}

/* LOOP mode: dispatch until @efd (a t_access's, or a thread's) is readable. */
static void dispatch_until(struct fl_pager *p, int efd)
{
	for (;;) {
		struct pollfd two[2] = {
			{ .fd = fl_pager_fd(p), .events = POLLIN },
			{ .fd = efd, .events = POLLIN },
		};

		T_ASSERT_SYS(poll(two, 2, -1));
		if (two[1].revents)
			return;
		T_ASSERT_OK(fl_pager_dispatch(p));
	}
}

/* LOOP mode: the callback gets every event, in order, after the pager applied it. */
TEST(pager_event_hook_order)
{
	size_t ps = t_page_size(), len = 8 * ps;
	struct seen s = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = FL_PAGER_LOOP,
		.features = FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_UNMAP,
		.on_event = record,
		.userdata = &s,
	};
	uint8_t *mem = t_map_anon(len), *to = t_map_anon(len);
	struct fl_region_opts o = {
		.sz = sizeof(o),
		.addr = mem,
		.len = len,
		.mem = FL_MEM_ANON,
		.memfd = -1,
	};
	struct mover m = { .base = mem, .to = to, .len = len, .ps = ps };
	struct fl_store *st;
	struct fl_pager *p;
	unsigned long th;

	s.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	T_ASSERT_SYS(s.efd);
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &st));
	o.store = st;
	T_ASSERT_OK(fl_pager_create(&po, &p));
	T_ASSERT_OK(fl_region_add(p, &o, &s.r));
	T_ASSERT_OK(fl_pager_start(p));
	/* A fault first: served, and never shown to the callback. */
	{
		struct t_access a;

		t_access_start(&a, mem + 2 * ps, false, 0);
		dispatch_until(p, a.efd);
		T_ASSERT_EQ(t_access_join(&a), (uint8_t)fl_pattern_word(SEED, 2 * ps));
	}
	m.done = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(m.done);
	th = t_thread_start(mover_main, &m);
	dispatch_until(p, m.done);
	T_ASSERT(t_thread_join(th) == NULL);
	close(m.done);
	for (size_t i = 0; getenv("FL_TEST_LOG") && i < s.n; i++)
		fprintf(stderr, "    event %zu: %s\n", i, fl_event_type_name(s.ev[i].type));
	/* The kernel reports the old range unmapped after the move (nothing is left there). */
	T_ASSERT_EQ(s.n, 4);
	T_ASSERT(!s.fault_seen);
	T_ASSERT_EQ(s.ev[0].type, FL_EVENT_REMOVE);
	T_ASSERT(s.ev[0].range.start == mem && s.ev[0].range.end == mem + ps);
	T_ASSERT_EQ(s.ev[1].type, FL_EVENT_REMAP);
	T_ASSERT(s.ev[1].remap.from == mem && s.ev[1].remap.to == to);
	T_ASSERT_EQ(s.ev[1].remap.len, len);
	/* Applied before the callback: the region had followed the move already. */
	T_ASSERT(s.addr_at_remap == to);
	T_ASSERT_EQ(s.ev[2].type, FL_EVENT_UNMAP);
	T_ASSERT(s.ev[2].range.start == mem && s.ev[2].range.end == mem + len);
	T_ASSERT_EQ(s.ev[3].type, FL_EVENT_UNMAP);
	T_ASSERT(s.ev[3].range.start == to + len - ps);
	T_ASSERT(s.calls >= 1 && s.calls <= 4);
	/* And the pager did its part: discarded zeros, moved data, both at the new place. */
	{
		struct t_access a;

		t_access_start(&a, to + 3 * ps + 8, false, 0);
		dispatch_until(p, a.efd);
		T_ASSERT_EQ(t_access_join(&a), (uint8_t)fl_pattern_word(SEED, 3 * ps + 8));
		t_access_start(&a, to, false, 0);
		dispatch_until(p, a.efd);
		T_ASSERT_EQ(t_access_join(&a), 0);
	}
	/* SIGBUS mode reads no events: a callback there is refused. */
	po.mode = FL_PAGER_SIGBUS;
	po.features = 0;
	{
		struct fl_pager *p2 = NULL;

		T_ASSERT_ERR(fl_pager_create(&po, &p2), EINVAL);
		T_ASSERT(p2 == NULL);
	}
	fl_pager_destroy(p);
	fl_store_destroy(st);
	close(s.efd);
}

/* ------------------------------------------------------------------ fork */

struct forker {
	struct fl_uffd *child;		/* the child's descriptor, adopted by the test */
	int fd;				/* set by the callback */
	int efd;			/* written by the callback */
};

static void take_fork(struct fl_pager *p, const struct fl_event *ev, size_t n, void *userdata)
{
	struct forker *f = userdata;
	uint64_t one = 1;

	(void)p;
	for (size_t i = 0; i < n; i++) {
		if (ev[i].type != FL_EVENT_FORK)
			continue;
		/* Ours to keep: the pager must not have closed it. */
		if (fcntl(ev[i].fork.fd, F_GETFD) < 0 || f->fd >= 0)
			abort();
		f->fd = ev[i].fork.fd;
		if (write(f->efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			abort();
	}
}

/* A child's SIGBUS, told to its parent as exit status 6 (sanitizers take the signal over). */
static void bus_exit(int sig)
{
	(void)sig;
	_exit(6);
}

/* The child: pages present before the fork are there; the others come from the store (or not). */
static int fork_child(uint8_t *mem, size_t ps, bool served)
{
	if (fl_pattern_check(mem, 0, ps, SEED))
		return 2;
	if (served)
		return fl_pattern_check(mem + 5 * ps, 5 * ps, ps, SEED) ? 3 : 0;
	/* Without a callback the pager poisons what the child lacks: SIGBUS, never zeros. */
	signal(SIGBUS, bus_exit);
	return ((volatile uint8_t *)mem)[5 * ps] ? 4 : 5;
}

static void fork_case(bool with_callback)
{
	size_t ps = t_page_size(), len = 8 * ps;
	struct forker f = { .fd = -1 };
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = FL_PAGER_THREADS,
		.threads = 1,
		.features = FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_REMAP |
			    FL_FEAT_EVENT_UNMAP,
		.on_event = with_callback ? take_fork : NULL,
		.userdata = &f,
	};
	/* A range of our own: the pager's own mappings are not inherited by children. */
	uint8_t *mem = t_map_anon(len);
	struct fl_region_opts o = {
		.sz = sizeof(o),
		.addr = mem,
		.len = len,
		.mem = FL_MEM_ANON,
		.memfd = -1,
	};
	struct fl_pager *p, *cp = NULL;
	struct fl_region *r, *cr;
	struct fl_store *st;
	int status, go[2];
	pid_t pid;

	T_ASSERT_SYS(pipe2(go, O_CLOEXEC));
	f.efd = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(f.efd);
	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &st));
	o.store = st;
	T_ASSERT_OK(fl_pager_create(&po, &p));
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(fl_pattern_check(mem, 0, ps, SEED), 0);
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		char c;

		/* Wait until the parent serves us. */
		close(go[1]);
		if (with_callback && read(go[0], &c, 1) != 1)
			_exit(5);
		_exit(fork_child(mem, ps, with_callback));
	}
	if (with_callback) {
		uint64_t v;
		struct fl_pager_opts cpo = { .sz = sizeof(cpo), .threads = 1 };

		/* The fork returned: its event was read and the descriptor handed to us. */
		T_ASSERT_EQ(read(f.efd, &v, sizeof(v)), (ssize_t)sizeof(v));
		T_ASSERT(f.fd >= 0);
		T_ASSERT_OK(fl_uffd_take(f.fd, fl_uffd_features(fl_pager_uffd(p)), 0, &f.child));
		cpo.uffd = f.child;
		T_ASSERT_OK(fl_pager_create(&cpo, &cp));
		T_ASSERT_OK(fl_region_add(cp, &o, &cr));
		T_ASSERT_OK(fl_pager_start(cp));
		T_ASSERT_EQ(write(go[1], "g", 1), 1);
	}
	if (!with_callback && !t_have(FL_FEAT_POISON)) {
		/*
		 * Before 6.6 the pager cannot poison the child's pages: it keeps the
		 * child's descriptor, and the child's fault stays blocked (never
		 * zeros) until the pager goes. Wait until the child sleeps in the
		 * fault, then end it.
		 */
		bool blocked = t_wait_fault_blocked(pid, 10000);

		T_ASSERT_SYS(kill(pid, SIGKILL));
		T_ASSERT_SYS(waitpid(pid, &status, 0));
		if (!blocked || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			t_fail(__FILE__, __LINE__, "child %s, status %#x",
			       blocked ? "blocked" : "never blocked in the fault", status);
	} else {
		T_ASSERT_SYS(waitpid(pid, &status, 0));
		if (!WIFEXITED(status) || WEXITSTATUS(status) != (with_callback ? 0 : 6))
			t_fail(__FILE__, __LINE__, "child ended with status %#x", status);
	}
	/* Parent and child are independent: page 5 is still absent here, and served to us. */
	T_ASSERT_EQ(fl_pattern_check(mem + 5 * ps, 5 * ps, ps, SEED), 0);
	fl_pager_destroy(cp);
	fl_uffd_close(f.child);
	fl_pager_destroy(p);
	fl_store_destroy(st);
	close(f.efd);
	close(go[0]);
	close(go[1]);
}

TEST(pager_event_hook_fork)
{
	fork_case(true);
	/* Without POISON (before 6.6) an unserved child's faults stay blocked instead. */
	fork_case(false);
}

/* ------------------------------------------------------- kept registration */

TEST(pager_region_keep_registered)
{
	size_t ps = t_page_size(), len = 4 * ps;
	/* Borrowed, like a monitor's: it outlives the pager. */
	struct fl_uffd *u = t_uffd_open(0, true);
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = FL_PAGER_THREADS,
		.threads = 1,
		.uffd = u,
	};
	uint8_t *mem = t_map_anon(len);
	struct fl_region_opts o = {
		.sz = sizeof(o),
		.addr = mem,
		.len = len,
		.mem = FL_MEM_ANON,
		.memfd = -1,
		.flags = FL_REGION_KEEP_ON_REMOVE | FL_REGION_KEEP_REGISTERED,
	};
	struct fl_region *r;
	struct fl_store *st;
	struct fl_pager *p;
	struct t_access a;
	struct pollfd pf;

	T_ASSERT_OK(fl_store_pattern_create(len, SEED, &st));
	o.store = st;
	T_ASSERT_OK(fl_pager_create(&po, &p));
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_EQ(fl_pattern_check(mem, 0, ps, SEED), 0);
	/* Nobody reads now; the region goes, its range stays registered. */
	T_ASSERT_OK(fl_pager_stop(p));
	T_ASSERT_OK(fl_region_remove(r));
	t_access_start(&a, mem + 2 * ps, false, 0);
	/* The access waits in the kernel: its fault is queued, neither zeros nor SIGBUS. */
	pf = (struct pollfd){ .fd = fl_uffd_fd(u), .events = POLLIN };
	T_ASSERT_EQ(poll(&pf, 1, -1), 1);
	T_ASSERT(!t_access_finished(&a));
	/* A successor takes it over: the region again, and the queued fault is served. */
	T_ASSERT_OK(fl_pager_start(p));
	T_ASSERT_OK(fl_region_add(p, &o, &r));
	T_ASSERT_EQ(t_access_join(&a), (uint8_t)fl_pattern_word(SEED, 2 * ps));
	T_ASSERT_EQ(fl_pattern_check(mem, 0, 3 * ps, SEED), 0);
	o.flags = 1u << 7;
	T_ASSERT_ERR(fl_region_add(p, &o, &r), EINVAL);
	fl_pager_destroy(p);
	/* Destroy keeps it too: the range is still ours, registered, with nobody reading. */
	{
		struct fl_uffd *other = t_uffd_open(0, true);

		T_ASSERT_ERR(fl_uffd_register(other, mem, len, FL_REGISTER_MISSING, NULL), EBUSY);
		fl_uffd_close(other);
	}
	T_ASSERT_OK(fl_uffd_unregister(u, mem, len));
	T_ASSERT_EQ(mem[3 * ps], 0);	/* unregistered now: an ordinary page */
	fl_uffd_close(u);
	fl_store_destroy(st);
}
