/* SPDX-License-Identifier: MIT */
/* The monitor client against fake monitors: attach, real faults, refusals, FAIL_LOUD, re-attach. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests.h"
#include "monitor/monitor-int.h"

#define SEED 0x5eedu
#define PAT_OFF 0x10000u	/* the pattern region's store offset */

/* ------------------------------------------------------------- log capture */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static void log_cb(enum fl_log_level level, const char *msg)
{
	size_t n;

	(void)level;
	/* FL_TEST_LOG=1 shows the library's log while a test runs, for debugging. */
	if (getenv("FL_TEST_LOG"))
		fprintf(stderr, "    log: %s\n", msg);
	pthread_mutex_lock(&log_lock);
	n = strlen(log_text);
	snprintf(log_text + n, sizeof(log_text) - n, "%s\n", msg);
	pthread_mutex_unlock(&log_lock);
}

static bool log_has(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_lock);
	r = strstr(log_text, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

static void log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	log_text[0] = '\0';
	pthread_mutex_unlock(&log_lock);
	fl_set_log_fn(log_cb);
}

#define T_ASSERT_LOG(needle)                                                              \
	do {                                                                              \
		if (!log_has(needle))                                                     \
			t_fail(__FILE__, __LINE__, "log lacks \"%s\":\n%s", needle, log_text); \
	} while (0)

/* ------------------------------------------------------------ state changes */

static int state_efd = -1;
static _Atomic int state_err;

static void on_state(struct fl_monitor_client *c, enum fl_monitor_state st, int err, void *ud)
{
	uint64_t one = 1;

	(void)c;
	(void)st;
	(void)ud;
	atomic_store(&state_err, err);
	if (write(state_efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		abort();
}

/* Wait (on the callback's eventfd, never by sleeping) until @c is in @want. */
static void wait_state(struct fl_monitor_client *c, int want)
{
	for (;;) {
		uint64_t v;
		int st = fl_monitor_client_state(c);

		if (st == want)
			return;
		if (st == FL_MONITOR_FAILED || st == FL_MONITOR_BLOCKED)
			T_ASSERT_EQ(st, want);	/* final: waiting longer is pointless */
		t_wait_readable(state_efd);
		if (read(state_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			T_ASSERT_SYS(-1);
	}
}

/* ------------------------------------------------------------ fake monitor */

enum rec_what { R_HELLO = 1, R_SERVED, R_DROPPED, R_EVENT, R_BYE };

struct rec {
	uint32_t what;
	uint32_t pad;
	uint64_t a, b, c;
};

struct fake {
	int listen_fd;
	int report;		/* write end of the test's pipe */
	int drop_after;		/* read fault number drop_after (0-based) and die; -1: never */
	bool refuse;		/* answer ERROR */
	bool silent;		/* answer nothing */
	bool forward;		/* send the events read on the uffd to the client */
	unsigned int flood;	/* after ACK: report this many removes of every other page, die */
};

static void report(int fd, uint32_t what, uint64_t a, uint64_t b, uint64_t c)
{
	struct rec r = { .what = what, .a = a, .b = b, .c = c };

	if (fd >= 0 && write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		t_fail(__FILE__, __LINE__, "report: %s", strerror(errno));
}

static struct rec expect(int fd, uint32_t what)
{
	struct rec r;

	t_wait_readable(fd);
	if (read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		t_fail(__FILE__, __LINE__, "reading a report: %s", strerror(errno));
	if (r.what != what)
		t_fail(__FILE__, __LINE__, "expected report %u, got %u (%#llx)", what, r.what,
		       (unsigned long long)r.a);
	return r;
}

/* The BYE of a detach, after whatever faults were served since the last look. */
static void expect_bye(int fd)
{
	struct rec r;

	do {
		t_wait_readable(fd);
		if (read(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
			t_fail(__FILE__, __LINE__, "reading a report: %s", strerror(errno));
	} while (r.what == R_SERVED);
	if (r.what != R_BYE)
		t_fail(__FILE__, __LINE__, "expected the BYE report, got %u", r.what);
}

static const struct fl__mon_region *find(const struct fl__mon_hello *h, uint64_t addr)
{
	for (uint32_t i = 0; i < h->n; i++)
		if (addr >= h->r[i].addr && addr - h->r[i].addr < h->r[i].len)
			return &h->r[i];
	return NULL;
}

/* Resolve the fault at @addr the way a monitor would: from the region's store. */
static void serve(const struct fl__mon_hello *h, struct fl_uffd *u, uint64_t addr, uint8_t *buf)
{
	const struct fl__mon_region *r = find(h, addr);
	uint64_t base, off;
	size_t done;
	int ret;

	T_ASSERT(r);
	base = addr & ~(uint64_t)(r->page_size - 1);
	off = r->off + (base - r->addr);
	switch (r->store) {
	case FL_MONITOR_STORE_ZERO:
		ret = fl_uffd_zeropage(u, (void *)(uintptr_t)base, r->page_size, 0, &done);
		break;
	case FL_MONITOR_STORE_PATTERN:
		fl_pattern_fill(buf, off, r->page_size, r->seed);
		ret = fl_uffd_copy(u, (void *)(uintptr_t)base, buf, r->page_size, 0, &done);
		break;
	default: {
		int fd = open(r->path, O_RDONLY | O_CLOEXEC);

		T_ASSERT_SYS(fd);
		T_ASSERT_EQ(pread(fd, buf, r->page_size, (off_t)off), (ssize_t)r->page_size);
		close(fd);
		ret = fl_uffd_copy(u, (void *)(uintptr_t)base, buf, r->page_size, 0, &done);
		break;
	}
	}
	if (ret == -EEXIST)
		ret = fl_uffd_wake(u, (void *)(uintptr_t)base, r->page_size);
	T_ASSERT_OK(ret);
}

/*
 * A monitor's life on one connection: check the peer and the descriptor,
 * answer, then serve faults until the client hangs up, or until fault
 * number drop_after, which is read and left unresolved. Returns with
 * everything still open; the caller "dies" by closing it (or exiting).
 */
struct session {
	int conn;
	struct fl_uffd *u;
	struct fl__mon_hello h;
	void *hbuf;
};

static void fake_session(struct fake *f, struct session *s)
{
	static uint8_t *buf;
	char err[256];
	uint64_t deadline = fl__now_ms() + (uint64_t)t_ms(10000);
	int fd, served = 0;

	if (!buf) {
		buf = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
		T_ASSERT(buf != MAP_FAILED);
	}
	s->conn = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	T_ASSERT_SYS(s->conn);
	T_ASSERT_OK(fl__mon_peer_check(s->conn, getuid(), false, NULL, NULL, err, sizeof(err)));
	if (fl__mon_recv_hello(s->conn, deadline, &s->h, &s->hbuf, &fd, err, sizeof(err)) < 0)
		t_fail(__FILE__, __LINE__, "fake monitor: %s", err);
	if (fl__mon_check_uffd(fd, err, sizeof(err)) < 0)
		t_fail(__FILE__, __LINE__, "fake monitor: %s", err);
	report(f->report, R_HELLO, s->h.session, s->h.flags | (uint64_t)s->h.attach_seq << 32,
	       s->h.features);
	if (f->refuse || f->silent) {
		char c;
		size_t len = fl__mon_encode_error(-ENOENT, "store file /nonexistent/snap.mem: "
						  "No such file or directory\x1b[0m", buf, 4096);

		if (f->refuse)
			T_ASSERT_OK(fl__mon_send(s->conn, buf, len, -1, deadline));
		close(fd);
		/* Until the client gives up and hangs up. */
		while (read(s->conn, &c, 1) > 0)
			;
		return;
	}
	T_ASSERT_OK(fl_uffd_take(fd, s->h.features, 0, &s->u));
	{
		size_t len = fl__mon_encode_ack(s->h.session, (uint32_t)getpid(), buf, 4096);

		T_ASSERT_OK(fl__mon_send(s->conn, buf, len, -1, deadline));
	}
	for (unsigned int i = 0; i < f->flood;) {
		struct fl__mon_event ev[FL_MONITOR_MAX_EVENTS];
		size_t n = 0, len, ps = t_page_size();

		for (; n < FL_MONITOR_MAX_EVENTS && i < f->flood; n++, i++) {
			uint64_t a = s->h.r[0].addr + (2 * (uint64_t)i + 1) * ps;

			ev[n] = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE, a, a + ps, 0 };
		}
		len = fl__mon_encode_events(ev, n, buf, 2 << 20);
		T_ASSERT_OK(fl__mon_send(s->conn, buf, len, -1, deadline));
		if (i == f->flood)
			return;
	}
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = s->conn, .events = POLLIN | POLLRDHUP },
			{ .fd = fl_uffd_fd(s->u), .events = POLLIN },
		};
		struct fl_event ev[16];
		int n;

		T_ASSERT_SYS(poll(p, 2, -1));
		if (p[0].revents) {
			void *m;
			size_t mlen;

			/* The client detached: a BYE, or a hang-up. */
			if (fl__mon_recv_msg(s->conn, deadline, &m, &mlen, NULL, err,
					     sizeof(err)) < 0)
				return;
			T_ASSERT_OK(fl__mon_decode_bye(m, mlen, err, sizeof(err)));
			free(m);
			report(f->report, R_BYE, 0, 0, 0);
			return;
		}
		if (!p[1].revents)
			continue;
		n = fl_uffd_read_events(s->u, ev, 16);
		if (n == -EAGAIN)
			continue;
		T_ASSERT_OK(n);
		for (int i = 0; i < n; i++) {
			struct fl__mon_event me;
			size_t len;

			if (ev[i].type == FL_EVENT_PAGEFAULT) {
				uint64_t a = (uintptr_t)ev[i].fault.addr;

				if (served == f->drop_after) {
					report(f->report, R_DROPPED, a, 0, 0);
					return;
				}
				serve(&s->h, s->u, a, buf);
				served++;
				report(f->report, R_SERVED, a, 0, 0);
				continue;
			}
			if (ev[i].type == FL_EVENT_FORK) {
				/* A monitor that dies with the child's only descriptor. */
				close(ev[i].fork.fd);
				report(f->report, R_EVENT, ev[i].type, 0, 0);
				continue;
			}
			report(f->report, R_EVENT, ev[i].type, (uintptr_t)ev[i].range.start,
			       (uintptr_t)ev[i].range.end);
			if (!f->forward || ev[i].type != FL_EVENT_REMOVE)
				continue;
			me = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE,
						     (uintptr_t)ev[i].range.start,
						     (uintptr_t)ev[i].range.end, 0 };
			len = fl__mon_encode_events(&me, 1, buf, 4096);
			T_ASSERT_OK(fl__mon_send(s->conn, buf, len, -1, deadline));
		}
	}
}

static void session_end(struct session *s)
{
	close(s->conn);
	fl_uffd_close(s->u);
	fl__mon_hello_free(&s->h);
	free(s->hbuf);
	*s = (struct session){ .conn = -1 };
}

/* Run a fake monitor in a child process; it exits (closing all) when its session ends. */
static pid_t fake_start(struct fake *f)
{
	pid_t pid = fork();

	T_ASSERT_SYS(pid);
	if (pid == 0) {
		struct session s;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm((unsigned)t_ms(30000) / 1000);
		fl_set_log_fn(NULL);
		/* Nothing of the client's: no copy of its connection or userfaultfd. */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != f->listen_fd && fd != f->report)
				close(fd);
		fake_session(f, &s);
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	int st;

	T_ASSERT_SYS(waitpid(pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail(__FILE__, __LINE__, "fake monitor %d ended with status %#x", (int)pid, st);
}

static int listen_on(char *name, size_t len, const char *tag)
{
	struct sockaddr_un sa;
	int fd, salen;

	snprintf(name, len, "@fl-test-monitor-%d-%s", (int)getpid(), tag);
	salen = fl__mon_sockaddr(name, &sa);
	T_ASSERT(salen > 0);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	T_ASSERT_SYS(fd);
	T_ASSERT_SYS(bind(fd, (struct sockaddr *)&sa, (socklen_t)salen));
	T_ASSERT_SYS(listen(fd, 8));
	return fd;
}

static struct fl_monitor_region pattern_region(void *addr, size_t len)
{
	return (struct fl_monitor_region){
		.addr = addr,
		.len = len,
		.mem = FL_MEM_ANON,
		.store = FL_MONITOR_STORE_PATTERN,
		.offset = PAT_OFF,
		.seed = SEED,
	};
}

static bool page_is_pattern(const uint8_t *p, size_t page)
{
	size_t ps = t_page_size();

	return fl_pattern_check(p + page * ps, PAT_OFF + page * ps, ps, SEED) == 0;
}

/* ------------------------------------------------------------------ tests */

TEST(monitor_attach_serves_faults)
{
	size_t ps = t_page_size();
	char name[108], tmpl[] = "/tmp/fl-monitor-store-XXXXXX";
	struct fake f = { .drop_after = -1 };
	struct fl_monitor_client *c = NULL;
	struct fl_monitor_region r[3];
	int pfd[2], file;
	uint8_t *mem = t_map_anon(16 * ps), *data = malloc(8 * ps);
	struct rec h;
	pid_t pid;

	log_reset();
	T_ASSERT(data);
	/* A store file: pages of 'A', 'B', ... from offset 4096. */
	file = mkstemp(tmpl);
	T_ASSERT_SYS(file);
	for (int i = 0; i < 8; i++)
		memset(data + i * ps, 'A' + i, ps);
	T_ASSERT_EQ(pwrite(file, data, 8 * ps, 4096), (ssize_t)(8 * ps));
	close(file);

	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	f.listen_fd = listen_on(name, sizeof(name), "serve");
	f.report = pfd[1];
	pid = fake_start(&f);

	r[0] = pattern_region(mem, 8 * ps);
	r[1] = (struct fl_monitor_region){ .addr = mem + 8 * ps, .len = 4 * ps,
					   .store = FL_MONITOR_STORE_FILE, .path = tmpl,
					   .offset = 4096 };
	r[2] = (struct fl_monitor_region){ .addr = mem + 12 * ps, .len = 4 * ps,
					   .store = FL_MONITOR_STORE_ZERO };
	T_ASSERT_OK(fl_monitor_attach(name, r, 3, NULL, &c));
	T_ASSERT_EQ(fl_monitor_client_state(c), FL_MONITOR_ATTACHED);
	T_ASSERT(fl_monitor_client_uffd(c) != NULL);
	T_ASSERT(fl_uffd_features(fl_monitor_client_uffd(c)) & FL_FEAT_EVENT_FORK);
	T_ASSERT(fl_monitor_client_fd(c) >= 0);
	h = expect(pfd[0], R_HELLO);
	/* First attach: sequence 0, and a beacon for fork()ed children. */
	T_ASSERT_EQ(h.b, FL_MONITOR_HELLO_CHILDREN);
	T_ASSERT(h.c & FL_FEAT_EVENT_REMOVE);

	/* Faults, resolved by the other process through the descriptor we sent. */
	for (size_t i = 0; i < 8; i += 3)
		T_ASSERT(page_is_pattern(mem, i));
	T_ASSERT(t_all(mem + 9 * ps, ps, 'B'));
	T_ASSERT(t_all(mem + 13 * ps, ps, 0));
	for (int i = 0; i < 5; i++)
		T_ASSERT_EQ(expect(pfd[0], R_SERVED).a % ps, 0);

	/* Detach: present pages stay, absent ones are poisoned; the monitor sees the hang-up. */
	fl_monitor_detach(c, 0);
	T_ASSERT(page_is_pattern(mem, 3));
	expect_bye(pfd[0]);
	reap(pid);
	fl_monitor_detach(NULL, 0);
	unlink(tmpl);
	free(data);
	close(f.listen_fd);
}

TEST(monitor_attach_errors)
{
	size_t ps = t_page_size();
	char name[108], longname[200];
	struct fake f = { .drop_after = -1 };
	struct fl_monitor_client *c = NULL;
	struct fl_monitor_region r[2];
	struct fl_monitor_opts o = { .sz = sizeof(o), .flags = FL_MONITOR_DONTFORK };
	uint8_t *mem = t_map_anon(4 * ps);
	int pfd[2];
	pid_t pid;

	log_reset();
	r[0] = pattern_region(mem, 2 * ps);
	r[1] = pattern_region(mem + ps, 2 * ps);
	/* Arguments. */
	T_ASSERT_ERR(fl_monitor_attach(NULL, r, 1, &o, &c), EINVAL);
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 0, &o, &c), EINVAL);
	T_ASSERT_ERR(fl_monitor_attach("@x", NULL, 1, &o, &c), EINVAL);
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 1, &o, NULL), EINVAL);
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
	T_ASSERT_LOG("overlap");
	r[1] = pattern_region(mem + 2 * ps, 2 * ps);
	r[1].store = FL_MONITOR_STORE_FILE;
	r[1].path = "relative.mem";
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
	T_ASSERT_LOG("not absolute");
	r[1].path = NULL;
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
	T_ASSERT_LOG("needs a path");
	r[1] = pattern_region(mem + 2 * ps, 2 * ps);
	r[1].reserved[1] = 1;
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
	r[1].reserved[1] = 0;
	r[1].mem = FL_MEM_HUGETLB;
	r[1].page_size = 4096;
	T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
	T_ASSERT_LOG("huge page size");
	r[1] = pattern_region(mem + 2 * ps, 2 * ps);
	memset(longname, 'a', sizeof(longname));
	longname[sizeof(longname) - 1] = '\0';
	T_ASSERT_ERR(fl_monitor_attach(longname, r, 2, &o, &c), ENAMETOOLONG);
	{
		struct { struct fl_monitor_opts o; uint64_t future; } big = { .o = o, .future = 1 };

		big.o.sz = sizeof(big);
		T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &big.o, &c), EINVAL);
		o.policy = 7;
		T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
		o.policy = FL_MONITOR_FAIL_LOUD;
		o.flags |= 1u << 20;
		T_ASSERT_ERR(fl_monitor_attach("@x", r, 2, &o, &c), EINVAL);
		o.flags = FL_MONITOR_DONTFORK;
	}
	T_ASSERT(c == NULL);

	/* Nobody there. */
	T_ASSERT_ERR(fl_monitor_attach("/nonexistent-dir/monitor.sock", r, 2, &o, &c), ENOENT);
	snprintf(name, sizeof(name), "@fl-test-monitor-%d-nobody", (int)getpid());
	T_ASSERT_ERR(fl_monitor_attach(name, r, 2, &o, &c), ECONNREFUSED);

	/* A monitor that refuses: its errno is returned, its message logged (made printable). */
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	f.listen_fd = listen_on(name, sizeof(name), "refuse");
	f.report = pfd[1];
	f.refuse = true;
	pid = fake_start(&f);
	T_ASSERT_ERR(fl_monitor_attach(name, r, 2, &o, &c), ENOENT);
	T_ASSERT_LOG("refused: store file /nonexistent/snap.mem: No such file or directory?[0m");
	expect(pfd[0], R_HELLO);
	reap(pid);
	/* Nothing stays registered: the memory is ordinary again. */
	mem[0] = 1;
	T_ASSERT_EQ(mem[2 * ps], 0);

	/* A monitor that never answers. */
	f.refuse = false;
	f.silent = true;
	pid = fake_start(&f);
	o.ack_timeout_ms = 100;
	T_ASSERT_ERR(fl_monitor_attach(name, r, 2, &o, &c), ETIMEDOUT);
	T_ASSERT_LOG("no answer within 100 ms");
	expect(pfd[0], R_HELLO);
	reap(pid);
	T_ASSERT(c == NULL);
	close(f.listen_fd);
}

/* ---------------------------------------------------------------- FAIL_LOUD */

static void *sigbus_reader(void *arg)
{
	return (void *)(uintptr_t)t_read_sigbus(arg);
}

struct loud_args {
	const char *name;
	uint8_t *mem;
};

/* The client process: its monitor dies while a thread waits in a fault. */
static void loud_client(void *arg)
{
	struct loud_args *a = arg;
	size_t ps = t_page_size();
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.policy = FL_MONITOR_FAIL_LOUD,
		.flags = FL_MONITOR_DONTFORK,
		.on_state = on_state,
	};
	struct fl_monitor_region r = pattern_region(a->mem, 8 * ps);
	struct fl_monitor_client *c;
	unsigned long tid;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm((unsigned)t_ms(30000) / 1000);
	log_reset();
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	T_ASSERT_OK(fl_monitor_attach(a->name, &r, 1, &o, &c));
	T_ASSERT(page_is_pattern(a->mem, 0));
	T_ASSERT(page_is_pattern(a->mem, 2));
	/* Discarded: the monitor reports it; from now on it reads as zeros, monitor or not. */
	T_ASSERT_SYS(madvise(a->mem + 2 * ps, ps, MADV_DONTNEED));
	/* This fault is read by the monitor, which then dies without resolving it. */
	tid = t_thread_start(sigbus_reader, a->mem + ps);
	if (!t_have(FL_FEAT_POISON)) {
		/*
		 * Before 6.6: nothing can be poisoned, so the fault stays blocked and the
		 * client says so; the reader thread ends with the process.
		 */
		wait_state(c, FL_MONITOR_BLOCKED);
		T_ASSERT_LOG("will block forever instead of reading zeros");
		T_ASSERT(t_wait_fault_blocked(getpid(), 10000));
		T_ASSERT(page_is_pattern(a->mem, 0));
		_exit(0);
	}
	T_ASSERT((uintptr_t)t_thread_join(tid) == 1);
	wait_state(c, FL_MONITOR_FAILED);
	T_ASSERT_LOG("failing loudly");
	/* Pages never fetched: SIGBUS. Present: intact. Discarded: zeros. */
	T_ASSERT(t_read_sigbus(a->mem + 3 * ps));
	T_ASSERT(t_read_sigbus(a->mem + 7 * ps));
	T_ASSERT(!t_read_sigbus(a->mem + 2 * ps));
	T_ASSERT(t_all(a->mem + 2 * ps, ps, 0));
	T_ASSERT(page_is_pattern(a->mem, 0));
	/* The regions are unregistered; the poison stays. */
	T_ASSERT(t_read_sigbus(a->mem + 5 * ps));
	T_ASSERT_EQ(fl_monitor_client_reattach(c, NULL), -ENOTRECOVERABLE);
	fl_monitor_detach(c, 0);
	T_ASSERT(page_is_pattern(a->mem, 0));
	T_ASSERT(t_read_sigbus(a->mem + 4 * ps));
}

TEST(monitor_fail_loud_sigbus)
{
	size_t ps = t_page_size();
	char name[108];
	struct fake f = { .drop_after = 2, .report = -1, .forward = true };
	struct loud_args a = { .name = name, .mem = t_map_anon(8 * ps) };
	struct session s;
	pid_t pid;
	int st;

	state_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	T_ASSERT_SYS(state_efd);
	f.listen_fd = listen_on(name, sizeof(name), "loud");
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		close(f.listen_fd);
		loud_client(&a);
		_exit(0);
	}
	/* We are the monitor: serve two faults, forward the REMOVE, read the third and die. */
	fake_session(&f, &s);
	T_ASSERT(s.u != NULL);
	session_end(&s);
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail(__FILE__, __LINE__, "client process ended with status %#x%s", st,
		       WIFSIGNALED(st) ? " (a signal)" : "");
	close(f.listen_fd);
}

/*
 * A fork()ed child whose descriptor the monitor lost before the child could
 * claim a copy (here the monitor closes it at once; a killed monitor does the
 * same): the kernel unregisters the child's regions, so its absent pages would
 * read as zeros. Before fork() returns in the child, the library takes the
 * regions back with a userfaultfd of its own and poisons them.
 */
TEST(monitor_fork_orphan_fails_loud)
{
	size_t ps = t_page_size();
	char name[108];
	struct fake f = { .drop_after = -1 };
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	uint8_t *mem = t_map_anon(8 * ps);
	struct fl_monitor_region r = pattern_region(mem, 8 * ps);
	struct fl_monitor_client *c;
	int pfd[2], st;
	pid_t fake, pid;

	log_reset();
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	f.listen_fd = listen_on(name, sizeof(name), "orphan");
	f.report = pfd[1];
	fake = fake_start(&f);
	T_ASSERT_OK(fl_monitor_attach(name, &r, 1, NULL, &c));
	expect(pfd[0], R_HELLO);
	T_ASSERT(page_is_pattern(mem, 0));
	T_ASSERT_EQ(expect(pfd[0], R_SERVED).a, (uintptr_t)mem);
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		int bad = 0;

		if (sigaction(SIGBUS, &sa, NULL) < 0)
			_exit(100);
		if (!t_have(FL_FEAT_POISON)) {
			/* Before 6.6: the regions stay registered and their faults block. */
			if (fl_monitor_client_state(c) != FL_MONITOR_BLOCKED)
				bad |= 1;
			if (!log_has("no claim came from the monitor") ||
			    !log_has("will block forever instead of reading zeros"))
				bad |= 2;
			if (!page_is_pattern(mem, 0))
				bad |= 4;
			t_thread_start(sigbus_reader, mem + 3 * ps);
			if (!t_wait_fault_blocked(getpid(), 10000))
				bad |= 8;
			_exit(bad);
		}
		if (fl_monitor_client_state(c) != FL_MONITOR_FAILED)
			bad |= 1;
		if (!log_has("no claim came from the monitor"))
			bad |= 2;
		/* Present at the fork: ours. Never fetched: SIGBUS, not zeros. */
		if (!page_is_pattern(mem, 0))
			bad |= 4;
		if (!t_read_sigbus(mem + 3 * ps) || !t_read_sigbus(mem + 7 * ps))
			bad |= 8;
		fl_monitor_detach(c, 0);
		_exit(bad);
	}
	T_ASSERT_EQ(expect(pfd[0], R_EVENT).a, FL_EVENT_FORK);
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail(__FILE__, __LINE__, "child: status %#x", st);
	/* The parent is still served. */
	T_ASSERT(page_is_pattern(mem, 5));
	T_ASSERT_EQ(fl_monitor_client_state(c), FL_MONITOR_ATTACHED);
	fl_monitor_detach(c, 0);
	reap(fake);
}

/* ------------------------------------------------------------------ re-attach */

TEST(monitor_reattach_auto)
{
	size_t ps = t_page_size();
	char name[108];
	struct fake f1 = { .drop_after = 1 }, f2 = { .drop_after = -1 };
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.policy = FL_MONITOR_WAIT_REATTACH,
		.flags = FL_MONITOR_DONTFORK,
		.retry_ms = 10,
		.on_state = on_state,
	};
	uint8_t *mem = t_map_anon(4 * ps);
	struct fl_monitor_region r = pattern_region(mem, 4 * ps);
	struct fl_monitor_client *c;
	struct t_access acc;
	struct rec h1, h2, dropped;
	int pfd[2];
	pid_t p1, p2;

	log_reset();
	state_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	T_ASSERT_SYS(state_efd);
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	f1.listen_fd = f2.listen_fd = listen_on(name, sizeof(name), "auto");
	f1.report = f2.report = pfd[1];
	p1 = fake_start(&f1);
	T_ASSERT_OK(fl_monitor_attach(name, &r, 1, &o, &c));
	h1 = expect(pfd[0], R_HELLO);
	T_ASSERT(page_is_pattern(mem, 0));
	expect(pfd[0], R_SERVED);

	/* The monitor reads this fault and dies: the thread must stay blocked, not see zeros. */
	t_access_start(&acc, mem + ps, false, 0);
	dropped = expect(pfd[0], R_DROPPED);
	T_ASSERT_EQ(dropped.a, (uintptr_t)(mem + ps));
	reap(p1);
	wait_state(c, FL_MONITOR_WAITING);
	T_ASSERT_LOG("faults wait");
	T_ASSERT(!t_access_finished(&acc));
	T_ASSERT_EQ(fl_monitor_client_fd(c), -ENOTCONN);

	/* A restarted monitor on the same socket gets the same userfaultfd; the fault completes. */
	p2 = fake_start(&f2);
	wait_state(c, FL_MONITOR_ATTACHED);
	h2 = expect(pfd[0], R_HELLO);
	T_ASSERT_EQ(h2.a, h1.a);	/* the same session */
	T_ASSERT_EQ(h2.b, FL_MONITOR_HELLO_REATTACH | 1ull << 32);
	T_ASSERT_EQ(t_access_join(&acc), mem[ps]);
	T_ASSERT(page_is_pattern(mem, 1));
	T_ASSERT_EQ(expect(pfd[0], R_SERVED).a, (uintptr_t)(mem + ps));
	T_ASSERT(page_is_pattern(mem, 0));	/* served by the first monitor, still there */
	T_ASSERT(page_is_pattern(mem, 3));
	T_ASSERT_LOG("re-attached the same userfaultfd (attach 1");
	T_ASSERT_EQ(fl_monitor_client_reattach(c, NULL), -EISCONN);
	fl_monitor_detach(c, FL_MONITOR_DETACH_KEEP);
	expect_bye(pfd[0]);
	reap(p2);
	/* KEEP: the never-fetched page is ordinary memory now. */
	T_ASSERT_EQ(mem[2 * ps], 0);
	close(f1.listen_fd);
}

TEST(monitor_reattach_explicit)
{
	size_t ps = t_page_size();
	char name1[108], name2[108];
	struct fake f1 = { .drop_after = 0 }, f2 = { .drop_after = -1 };
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.flags = FL_MONITOR_DONTFORK | FL_MONITOR_NO_WATCHER | FL_MONITOR_NO_AUTO_REATTACH,
	};
	uint8_t *mem = t_map_anon(4 * ps);
	struct fl_monitor_region r = pattern_region(mem, 4 * ps);
	struct fl_monitor_client *c;
	struct t_access acc;
	struct pollfd p;
	int pfd[2];
	pid_t p1, p2;

	log_reset();
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	f1.listen_fd = listen_on(name1, sizeof(name1), "one");
	f1.report = f2.report = pfd[1];
	p1 = fake_start(&f1);
	close(f1.listen_fd);	/* once the first monitor is gone, nobody listens there */
	T_ASSERT_OK(fl_monitor_attach(name1, &r, 1, &o, &c));
	expect(pfd[0], R_HELLO);
	T_ASSERT_EQ(fl_monitor_client_check(c), FL_MONITOR_ATTACHED);

	t_access_start(&acc, mem + 2 * ps, true, 0x5a);
	expect(pfd[0], R_DROPPED);
	reap(p1);
	/* No watcher: the caller polls the connection and calls check. */
	p = (struct pollfd){ .fd = fl_monitor_client_fd(c), .events = POLLIN | POLLRDHUP };
	T_ASSERT(p.fd >= 0);
	T_ASSERT_EQ(poll(&p, 1, -1), 1);
	T_ASSERT_EQ(fl_monitor_client_check(c), FL_MONITOR_WAITING);
	T_ASSERT_EQ(fl_monitor_client_check(c), FL_MONITOR_WAITING);	/* no automatic retry */
	T_ASSERT(!t_access_finished(&acc));
	T_ASSERT_ERR(fl_monitor_client_reattach(c, NULL), ECONNREFUSED);
	T_ASSERT_EQ(fl_monitor_client_state(c), FL_MONITOR_WAITING);

	f2.listen_fd = listen_on(name2, sizeof(name2), "two");
	p2 = fake_start(&f2);
	T_ASSERT_OK(fl_monitor_client_reattach(c, name2));
	T_ASSERT_EQ(fl_monitor_client_state(c), FL_MONITOR_ATTACHED);
	T_ASSERT(fl_monitor_client_fd(c) >= 0);
	T_ASSERT_EQ(expect(pfd[0], R_HELLO).b, FL_MONITOR_HELLO_REATTACH | 1ull << 32);
	/* The write that waited lands on the page the new monitor installed. */
	T_ASSERT_EQ(t_access_join(&acc), 0x5a);
	T_ASSERT_EQ(expect(pfd[0], R_SERVED).a, (uintptr_t)(mem + 2 * ps));
	T_ASSERT(page_is_pattern(mem, 1));
	T_ASSERT_EQ(fl_monitor_client_check(c), FL_MONITOR_ATTACHED);
	T_ASSERT_EQ(fl_monitor_client_reattach(c, NULL), -EISCONN);
	fl_monitor_detach(c, 0);
	expect_bye(pfd[0]);
	reap(p2);
	close(f2.listen_fd);
	T_ASSERT(fl_monitor_state_name(FL_MONITOR_WAITING) &&
		 !strcmp(fl_monitor_state_name(FL_MONITOR_WAITING), "waiting"));
	T_ASSERT(fl_monitor_state_name(0) == NULL && fl_monitor_state_name(5) == NULL);
	T_ASSERT_ERR(fl_monitor_client_state(NULL), EINVAL);
	T_ASSERT_ERR(fl_monitor_client_check(NULL), EINVAL);
	T_ASSERT_ERR(fl_monitor_client_reattach(NULL, NULL), EINVAL);
}

/* SO_PEERCRED: a peer of another uid is refused (unless told otherwise); only a uffd passes. */
TEST(monitor_peer_and_fd_checks)
{
	char name[108], err[256], c = 0;
	struct sockaddr_un sa;
	int lfd = listen_on(name, sizeof(name), "peer"), conn, salen, pfd[2];
	struct fl_uffd *u = t_uffd_open(0, false);
	uid_t uid;
	pid_t pid;

	salen = fl__mon_sockaddr(name, &sa);
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		int s;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(3);
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&sa, (socklen_t)salen) < 0)
			_exit(4);
		/* Stay connected until the parent has looked. */
		if (read(pfd[0], &c, 1) < 0)
			_exit(5);
		_exit(0);
	}
	conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	T_ASSERT_SYS(conn);
	err[0] = '\0';
	T_ASSERT_ERR(fl__mon_peer_check(conn, getuid(), false, NULL, &uid, err, sizeof(err)),
		     EPERM);
	T_ASSERT(strstr(err, "runs as uid 65534") && strstr(err, "serves uid 0 only"));
	T_ASSERT_OK(fl__mon_peer_check(conn, getuid(), true, NULL, &uid, err, sizeof(err)));
	T_ASSERT_EQ(uid, 65534);
	T_ASSERT_OK(fl__mon_peer_check(conn, 65534, false, NULL, NULL, err, sizeof(err)));
	T_ASSERT_EQ(write(pfd[1], &c, 1), 1);
	reap(pid);
	close(conn);

	T_ASSERT_OK(fl__mon_check_uffd(fl_uffd_fd(u), err, sizeof(err)));
	T_ASSERT_ERR(fl__mon_check_uffd(lfd, err, sizeof(err)), EBADF);
	T_ASSERT(strstr(err, "socket:["));
	T_ASSERT_ERR(fl__mon_check_uffd(-1, err, sizeof(err)), EBADF);
	fl_uffd_close(u);
	close(lfd);
	close(pfd[0]);
	close(pfd[1]);
}

/* WAIT_REATTACH with wait_max_ms: nobody takes over, so the client fails loudly in time. */
TEST(monitor_wait_max_fails_loud)
{
	size_t ps = t_page_size();
	char name[108];
	struct fake f = { .drop_after = 0, .report = -1 };
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.flags = FL_MONITOR_DONTFORK,
		.retry_ms = 10,
		.wait_max_ms = 50,
		.on_state = on_state,
	};
	uint8_t *mem = t_map_anon(4 * ps);
	struct fl_monitor_region r = pattern_region(mem, 4 * ps);
	struct fl_monitor_client *c;
	pid_t pid;

	log_reset();
	state_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	T_ASSERT_SYS(state_efd);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	f.listen_fd = listen_on(name, sizeof(name), "waitmax");
	pid = fake_start(&f);
	close(f.listen_fd);	/* retries find nobody */
	T_ASSERT_OK(fl_monitor_attach(name, &r, 1, &o, &c));
	if (!t_have(FL_FEAT_POISON)) {
		/*
		 * Before 6.6 the wait ends in BLOCKED: the fault stays blocked (the
		 * thread ends with this test's process; detaching would unregister).
		 */
		t_thread_start(sigbus_reader, mem + ps);
		reap(pid);
		wait_state(c, FL_MONITOR_BLOCKED);
		T_ASSERT_EQ(atomic_load(&state_err), -ETIMEDOUT);
		T_ASSERT_LOG("no monitor took the userfaultfd within 50 ms");
		T_ASSERT_LOG("will block forever instead of reading zeros");
		T_ASSERT(t_wait_fault_blocked(getpid(), 10000));
		return;
	}
	/* The fault the dying monitor read: blocked, then SIGBUS once the wait is over. */
	T_ASSERT((uintptr_t)t_thread_join(t_thread_start(sigbus_reader, mem + ps)) == 1);
	reap(pid);
	wait_state(c, FL_MONITOR_FAILED);
	T_ASSERT_EQ(atomic_load(&state_err), -ETIMEDOUT);
	T_ASSERT_LOG("no monitor took the userfaultfd within 50 ms");
	T_ASSERT(t_read_sigbus(mem + 3 * ps));
	fl_monitor_detach(c, 0);
}

/* A layout the client cannot track (too many pieces) rules out a re-attach: fail loudly. */
TEST(monitor_layout_lost_fails_loud)
{
	size_t ps = t_page_size(), npages = 2 * FL_MONITOR_MAX_REGIONS + 64;
	char name[108];
	struct fake f = { .drop_after = -1, .report = -1, .flood = FL_MONITOR_MAX_REGIONS };
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.flags = FL_MONITOR_DONTFORK,
		.on_state = on_state,
	};
	uint8_t *mem = t_map_anon(npages * ps);
	struct fl_monitor_region r = pattern_region(mem, npages * ps);
	struct fl_monitor_client *c;
	pid_t pid;

	log_reset();
	state_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	T_ASSERT_SYS(state_efd);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	f.listen_fd = listen_on(name, sizeof(name), "lost");
	pid = fake_start(&f);
	T_ASSERT_OK(fl_monitor_attach(name, &r, 1, &o, &c));
	reap(pid);
	if (!t_have(FL_FEAT_POISON)) {
		/* Before 6.6: BLOCKED, and a page never fetched keeps its fault blocked. */
		wait_state(c, FL_MONITOR_BLOCKED);
		T_ASSERT_LOG("cannot track the layout any more");
		T_ASSERT_LOG("will block forever instead of reading zeros");
		t_thread_start(sigbus_reader, mem);
		T_ASSERT(t_wait_fault_blocked(getpid(), 10000));
		close(f.listen_fd);
		return;
	}
	wait_state(c, FL_MONITOR_FAILED);
	T_ASSERT_LOG("cannot track the layout any more");
	T_ASSERT_LOG("failing loudly");
	/* Page 1 was reported discarded before the layout overflowed: zeros. Page 0: SIGBUS. */
	T_ASSERT(!t_read_sigbus(mem + ps));
	T_ASSERT(t_all(mem + ps, ps, 0));
	T_ASSERT(t_read_sigbus(mem));
	T_ASSERT_EQ(fl_monitor_client_reattach(c, NULL), -ENOTRECOVERABLE);
	fl_monitor_detach(c, 0);
	close(f.listen_fd);
}
