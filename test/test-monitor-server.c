/* SPDX-License-Identifier: MIT */
/* The monitor server, with clients in other processes: contents, events, forks, restarts. */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tests.h"
#include "monitor/monitor-int.h"
#include "net/crc32c.h"
#include "../tools/group.h"

#define SEED 0x5e11ull
#define PAT_OFF 0x200000ull

/* ------------------------------------------------------------- the log */

/*
 * The monitor runs in a process of its own (the test process stays single
 * threaded: a fork() from a process with other threads can inherit an
 * allocator lock one of them held, which ASan's allocator does not guard).
 * Its log lines go to a file, read back by the test.
 */
static char log_path[64];
static int log_fd = -1;

static void log_line(const char *who, const char *msg)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s\n", msg);

	if (n >= (int)sizeof(line))
		n = (int)sizeof(line) - 1;
	if (log_fd >= 0 && write(log_fd, line, (size_t)n) < 0) {
		/* The test then reports the line missing. */
	}
	/* FL_TEST_LOG=1 shows the log while a test runs. */
	if (getenv("FL_TEST_LOG")) {
		char shown[1100];
		int k = snprintf(shown, sizeof(shown), "    %s %d: %s", who, (int)getpid(), line);

		size_t len = (size_t)(k < (int)sizeof(shown) ? k : (int)sizeof(shown) - 1);

		if (write(2, shown, len) < 0) {
			/* Only a debugging aid. */
		}
	}
}

static void srv_log(enum fl_log_level level, const char *msg, void *userdata)
{
	(void)level;
	(void)userdata;
	log_line("monitor", msg);
}

static void lib_log(enum fl_log_level level, const char *msg)
{
	(void)level;
	log_line("monitor", msg);
}

/* A client's log: shown with FL_TEST_LOG, and kept in the file too. */
static void child_log(enum fl_log_level level, const char *msg)
{
	(void)level;
	log_line("client", msg);
}

static void log_open(void)
{
	if (log_fd >= 0)
		return;
	snprintf(log_path, sizeof(log_path), "/tmp/fl-monitor-log-%d", (int)getpid());
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	T_ASSERT_SYS(log_fd);
	/* The file stays open (and readable by path) until the test process exits. */
	unlink(log_path);
	snprintf(log_path, sizeof(log_path), "/proc/%d/fd/%d", (int)getpid(), log_fd);
}

static char log_text[1 << 20];

static bool log_has(const char *needle)
{
	int fd = open(log_path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	T_ASSERT_SYS(fd);
	n = read(fd, log_text, sizeof(log_text) - 1);
	close(fd);
	log_text[n > 0 ? n : 0] = '\0';
	return strstr(log_text, needle) != NULL;
}

#define T_ASSERT_LOG(needle)                                                                 \
	do {                                                                                 \
		if (!log_has(needle))                                                        \
			t_fail(__FILE__, __LINE__, "log lacks \"%s\":\n%s", needle, log_text); \
	} while (0)

/* Close every descriptor but @keep and the log (whose number must never be reused). */
static void close_fds_except(const int *keep, size_t n)
{
	for (int fd = 3; fd < 1024; fd++) {
		bool k = fd == log_fd;

		for (size_t i = 0; i < n; i++)
			k |= keep[i] == fd;
		if (!k)
			close(fd);
	}
}

/* ------------------------------------------------------ a server process */

struct srv {
	pid_t pid;
	int ctl;		/* socketpair: 's' asks for the counters, 'q' stops it */
	int changed;		/* readable when the counters changed */
	char name[108];
};

struct srv_side {
	struct fl_monitor_server *s;
	int ctl, changed;
};

static void srv_changed(struct fl_monitor_server *s, void *userdata)
{
	struct srv_side *sd = userdata;

	(void)s;
	if (write(sd->changed, "c", 1) < 0) {
		/* A full pipe already says "changed". */
	}
}

/* The server process's second thread: answer the test's requests. */
static void *srv_ctl(void *arg)
{
	struct srv_side *sd = arg;
	char c;

	while (read(sd->ctl, &c, 1) == 1) {
		struct fl_monitor_server_stats st = { .sz = sizeof(st) };

		if (c == 'q') {
			fl_monitor_server_stop(sd->s);
			break;
		}
		if (fl_monitor_server_stats(sd->s, &st) < 0 ||
		    write(sd->ctl, &st, sizeof(st)) != (ssize_t)sizeof(st))
			_exit(3);
	}
	return NULL;
}

/* Serve on v->name (set by the caller) from a new process; return once it listens. */
static void srv_start(struct srv *v, struct fl_monitor_server_opts *o)
{
	int sp[2], ch[2];
	char c;

	log_open();
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
	T_ASSERT_SYS(pipe2(ch, O_CLOEXEC | O_NONBLOCK));
	o->sz = sizeof(*o);
	o->socket_path = v->name;
	o->log_fn = srv_log;
	o->on_change = srv_changed;
	v->pid = fork();
	T_ASSERT_SYS(v->pid);
	if (v->pid == 0) {
		struct srv_side sd = { .ctl = sp[1], .changed = ch[1] };
		unsigned long th;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Nothing of the test's: its pipes must see their ends close. */
		{
			int keep[] = { sp[1], ch[1] };

			close_fds_except(keep, 2);
		}
		fl_set_log_fn(lib_log);
		o->userdata = &sd;
		T_ASSERT_OK(fl_monitor_server_create(o, &sd.s));
		th = t_thread_start(srv_ctl, &sd);
		T_ASSERT_EQ(write(sd.ctl, "r", 1), 1);
		T_ASSERT_OK(fl_monitor_server_run(sd.s));
		t_thread_join(th);
		fl_monitor_server_destroy(sd.s);
		_exit(0);
	}
	close(sp[1]);
	close(ch[1]);
	v->ctl = sp[0];
	v->changed = ch[0];
	t_wait_readable(v->ctl);
	if (read(v->ctl, &c, 1) != 1 || c != 'r') {
		log_has("");
		t_fail(__FILE__, __LINE__, "the monitor did not start:\n%s", log_text);
	}
}

static void srv_stop(struct srv *v)
{
	int st;

	T_ASSERT_EQ(write(v->ctl, "q", 1), 1);
	T_ASSERT_SYS(waitpid(v->pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		log_has("");
		t_fail(__FILE__, __LINE__, "the monitor ended with status %#x; its log:\n%s", st,
		       log_text);
	}
	close(v->ctl);
	close(v->changed);
	v->pid = 0;
}

static struct fl_monitor_server_stats srv_stats(struct srv *v)
{
	struct fl_monitor_server_stats st = { .sz = sizeof(st) };

	T_ASSERT_EQ(write(v->ctl, "s", 1), 1);
	t_wait_readable(v->ctl);
	T_ASSERT_EQ(read(v->ctl, &st, sizeof(st)), (ssize_t)sizeof(st));
	return st;
}

/* Wait (on the change notifications, never by sleeping) until @cond, on st, holds. */
#define SRV_WAIT(v, cond)                                                         \
	do {                                                                      \
		for (;;) {                                                        \
			struct fl_monitor_server_stats st = srv_stats(v);         \
			char _x[64];                                              \
			if (cond)                                                 \
				break;                                            \
			t_wait_readable((v)->changed);                            \
			while (read((v)->changed, _x, sizeof(_x)) > 0)            \
				;                                                 \
		}                                                                 \
	} while (0)

/* -------------------------------------------------------------- helpers */

static void abstract_name(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "@fl-test-srv-%d-%s", (int)getpid(), tag);
}

static void make_tmpdir(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/fl-monitor-XXXXXX");
	T_ASSERT(mkdtemp(buf) != NULL);
	T_ASSERT_SYS(chmod(buf, 0755));
}

/* A file of @len bytes of the pattern of @seed (from offset 0). */
static void pattern_file(const char *path, size_t len, uint64_t seed, mode_t mode)
{
	uint8_t *buf = malloc(len);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	T_ASSERT(buf);
	T_ASSERT_SYS(fd);
	fl_pattern_fill(buf, 0, len, seed);
	T_ASSERT_EQ(write(fd, buf, len), (ssize_t)len);
	T_ASSERT_SYS(fchmod(fd, mode));
	close(fd);
	free(buf);
}

/* Run @fn in a new process holding only the descriptors in @keep; it exits 0 if fn returns. */
static pid_t spawn(void (*fn)(void *), void *arg, const int *keep, size_t nkeep)
{
	pid_t pid = fork();

	T_ASSERT_SYS(pid);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close_fds_except(keep, nkeep);
		fl_set_log_fn(child_log);
		alarm(120);
		fn(arg);
		_exit(0);
	}
	return pid;
}

static void reap_ok(pid_t pid, const char *what)
{
	int st;

	T_ASSERT_SYS(waitpid(pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail(__FILE__, __LINE__, "%s (pid %d) ended with %s %d", what, (int)pid,
		       WIFSIGNALED(st) ? "signal" : "status",
		       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

static void put_byte(int fd, char c)
{
	T_ASSERT_EQ(write(fd, &c, 1), 1);
}

static char get_byte(int fd)
{
	char c;

	t_wait_readable(fd);
	T_ASSERT_EQ(read(fd, &c, 1), 1);
	return c;
}

static struct fl_monitor_region pat_region(void *addr, size_t len, uint64_t off, uint64_t seed)
{
	return (struct fl_monitor_region){
		.addr = addr,
		.len = len,
		.mem = FL_MEM_ANON,
		.store = FL_MONITOR_STORE_PATTERN,
		.offset = off,
		.seed = seed,
	};
}

#define T_ASSERT_PATTERN(p, off, len, seed) T_ASSERT_EQ(fl_pattern_check(p, off, len, seed), 0)

/* The file's bytes [off, off+len) equal the memory at @p. */
static void check_file(const char *path, uint64_t off, const uint8_t *p, size_t len)
{
	uint8_t *buf = malloc(len);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	T_ASSERT(buf);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	if (memcmp(buf, p, len))
		t_fail(__FILE__, __LINE__, "memory differs from %s at [%#llx, +%#zx)", path,
		       (unsigned long long)off, len);
	close(fd);
	free(buf);
}

static struct fl_monitor_client *attach(const char *name, struct fl_monitor_region *r, size_t n,
					enum fl_monitor_policy policy, uint32_t flags)
{
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.policy = policy,
		.flags = flags,
		.retry_ms = 10,
		/* A bound on a wait that must succeed: scaled (a loaded or emulated machine). */
		.ack_timeout_ms = (unsigned int)t_ms(5000),
	};
	struct fl_monitor_client *c = NULL;

	T_ASSERT_OK(fl_monitor_attach(name, r, n, &o, &c));
	return c;
}

/*
 * Start `faultline monitor ARGS... --ready-fd N -v` with its stderr in @log;
 * return once it listens (fail with its log if it dies first).
 */
static pid_t tool_start(char *const args[], const char *log)
{
	char path[PATH_MAX], fdarg[16];
	char *argv[32] = { "faultline", "monitor", "-v" };
	int ready[2], n = 3;
	pid_t pid;
	char c;

	t_tool_path(path, sizeof(path));
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	T_ASSERT_SYS(pipe(ready));
	snprintf(fdarg, sizeof(fdarg), "%d", ready[1]);
	argv[n++] = "--ready-fd";
	argv[n++] = fdarg;
	argv[n] = NULL;
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int keep[] = { ready[1] };

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (lfd < 0 || dup2(lfd, 2) < 0)
			_exit(126);
		close_fds_except(keep, 1);
		execv(path, argv);
		_exit(127);
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) {
		char text[8192] = "";
		int lfd = open(log, O_RDONLY | O_CLOEXEC);

		if (lfd >= 0 && read(lfd, text, sizeof(text) - 1) < 0)
			text[0] = '\0';
		t_fail(__FILE__, __LINE__, "faultline monitor did not start:\n%s", text);
	}
	close(ready[0]);
	return pid;
}

static bool file_has(const char *path, const char *needle)
{
	static char text[1 << 16];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	T_ASSERT_SYS(fd);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	return strstr(text, needle) != NULL;
}

static void tool_stop(pid_t pid)
{
	int st;

	T_ASSERT_SYS(kill(pid, SIGTERM));
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail(__FILE__, __LINE__, "faultline monitor ended with status %#x", st);
}

/* ---------------------------------------------------------- basic serving */

struct basic {
	const char *name;
	const char *file;	/* 32 pages of the pattern of 99 */
	uint64_t seed;
};

/* A client with one region of each store: reads every page and checks it. */
static void basic_client(void *arg)
{
	struct basic *b = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(48 * ps), *want = malloc(16 * ps);
	struct fl_monitor_region r[3] = {
		pat_region(mem, 16 * ps, PAT_OFF, b->seed),
		{ .addr = mem + 16 * ps, .len = 16 * ps, .store = FL_MONITOR_STORE_FILE,
		  .path = b->file, .offset = 4 * ps },
		{ .addr = mem + 32 * ps, .len = 16 * ps, .store = FL_MONITOR_STORE_ZERO },
	};
	struct fl_monitor_client *c = attach(b->name, r, 3, FL_MONITOR_FAIL_LOUD,
					     FL_MONITOR_DONTFORK);

	T_ASSERT(want);
	T_ASSERT_PATTERN(mem, PAT_OFF, 16 * ps, b->seed);
	fl_pattern_fill(want, 4 * ps, 16 * ps, 99);
	T_ASSERT(memcmp(mem + 16 * ps, want, 16 * ps) == 0);
	T_ASSERT(t_all(mem + 32 * ps, 16 * ps, 0));
	fl_monitor_detach(c, 0);
	free(want);
}

TEST(monitor_server_serves_clients)
{
	size_t ps = t_page_size();
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	char dir[64], file[96];
	struct basic b[3];
	pid_t pid[3];

	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/store.img", dir);
	snprintf(v.name, sizeof(v.name), "%s/monitor.sock", dir);
	pattern_file(file, 32 * ps, 99, 0644);
	o.store_root = dir;
	srv_start(&v, &o);
	for (int i = 0; i < 3; i++) {
		b[i] = (struct basic){ .name = v.name, .file = file, .seed = SEED + (uint64_t)i };
		pid[i] = spawn(basic_client, &b[i], NULL, 0);
	}
	for (int i = 0; i < 3; i++)
		reap_ok(pid[i], "client");
	SRV_WAIT(&v, st.clients == 0 && st.ended == 3 && st.connections == 0);
	{
		struct fl_monitor_server_stats st = srv_stats(&v);

		T_ASSERT_EQ(st.attached, 3);
		T_ASSERT_EQ(st.refused, 0);
		T_ASSERT_EQ(st.reattached, 0);
	}
	T_ASSERT_LOG("attached 3 regions");
	T_ASSERT_LOG("it detached (BYE)");
	/* A live monitor keeps its socket: a second one there is refused. */
	{
		struct fl_monitor_server_opts o2 = { .sz = sizeof(o2), .socket_path = v.name };
		struct fl_monitor_server *s2 = NULL;

		T_ASSERT_ERR(fl_monitor_server_create(&o2, &s2), EADDRINUSE);
		T_ASSERT(s2 == NULL);
		o2.flags = 1u << 9;
		T_ASSERT_ERR(fl_monitor_server_create(&o2, &s2), EINVAL);
		T_ASSERT_ERR(fl_monitor_server_create(NULL, &s2), EINVAL);
		T_ASSERT_ERR(fl_monitor_server_stats(NULL, NULL), EINVAL);
		T_ASSERT_ERR(fl_monitor_server_run(NULL), EINVAL);
		T_ASSERT_ERR(fl_monitor_server_stop(NULL), EINVAL);
		fl_monitor_server_destroy(NULL);
	}
	srv_stop(&v);
	/* The socket file was ours: gone with the monitor. */
	T_ASSERT(access(v.name, F_OK) < 0);
	unlink(file);
	rmdir(dir);
}

/* ------------------------------------------------------------------ events */

struct evc {
	const char *name;
	int to_parent, from_parent;
};

/*
 * REMOVE, a whole-region REMAP, a partial REMAP and an UNMAP, each checked;
 * then the monitor is restarted and the pages not touched yet must still
 * come out right: that needs the layout the first monitor reported.
 */
static void events_client(void *arg)
{
	struct evc *e = arg;
	size_t ps = t_page_size();
	uint8_t *a = t_map_anon(96 * ps), *c = a + 64 * ps;
	uint8_t *dst_c = t_map_anon(32 * ps), *dst_a = t_map_anon(16 * ps);
	struct fl_monitor_region r[2] = {
		pat_region(a, 64 * ps, PAT_OFF, SEED),
		pat_region(c, 32 * ps, 0, SEED + 1),
	};
	struct fl_monitor_client *cl = attach(e->name, r, 2, FL_MONITOR_WAIT_REATTACH,
					      FL_MONITOR_DONTFORK);

	T_ASSERT_PATTERN(a, PAT_OFF, 8 * ps, SEED);
	/* REMOVE: discarded pages read as zeros (4..7 were there, 8..11 never were). */
	T_ASSERT_SYS(madvise(a + 4 * ps, 8 * ps, MADV_DONTNEED));
	T_ASSERT(t_all(a + 4 * ps, 4 * ps, 0));
	/* REMAP of a whole region: served at its new place. */
	T_ASSERT(mremap(c, 32 * ps, 32 * ps, MREMAP_MAYMOVE | MREMAP_FIXED, dst_c) == dst_c);
	T_ASSERT_PATTERN(dst_c, 0, 16 * ps, SEED + 1);
	/* REMAP of a piece: the monitor follows it too. */
	T_ASSERT(mremap(a + 32 * ps, 16 * ps, 16 * ps, MREMAP_MAYMOVE | MREMAP_FIXED, dst_a) ==
		 dst_a);
	T_ASSERT_PATTERN(dst_a, PAT_OFF + 32 * ps, 8 * ps, SEED);
	T_ASSERT_PATTERN(a + 48 * ps, PAT_OFF + 48 * ps, 4 * ps, SEED);
	/* UNMAP: dropped without error; the rest is served. */
	T_ASSERT_SYS(munmap(a + 56 * ps, 8 * ps));
	T_ASSERT_PATTERN(a + 52 * ps, PAT_OFF + 52 * ps, 4 * ps, SEED);
	T_ASSERT_PATTERN(a + 12 * ps, PAT_OFF + 12 * ps, ps, SEED);

	/* The parent restarts the monitor; our faults wait meanwhile. */
	put_byte(e->to_parent, '1');
	T_ASSERT_EQ(get_byte(e->from_parent), 'g');
	T_ASSERT(t_all(a + 8 * ps, 4 * ps, 0));		/* removed, never fetched: zeros */
	T_ASSERT_PATTERN(dst_a + 8 * ps, PAT_OFF + 40 * ps, 8 * ps, SEED);
	T_ASSERT_PATTERN(dst_c + 16 * ps, 16 * ps, 16 * ps, SEED + 1);
	T_ASSERT_PATTERN(a + 13 * ps, PAT_OFF + 13 * ps, 19 * ps, SEED);
	T_ASSERT_PATTERN(a, PAT_OFF, 4 * ps, SEED);	/* present since the first monitor */
	T_ASSERT(t_all(a + 4 * ps, 8 * ps, 0));
	T_ASSERT_EQ(fl_monitor_client_state(cl), FL_MONITOR_ATTACHED);
	fl_monitor_detach(cl, 0);
}

TEST(monitor_server_events)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	int up[2], down[2];
	struct evc e;
	char dir[64];
	pid_t pid;

	make_tmpdir(dir, sizeof(dir));
	snprintf(v.name, sizeof(v.name), "%s/monitor.sock", dir);
	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(down, O_CLOEXEC));
	e = (struct evc){ .name = v.name, .to_parent = up[1], .from_parent = down[0] };
	srv_start(&v, &o);
	{
		int keep[] = { up[1], down[0] };

		pid = spawn(events_client, &e, keep, 2);
	}
	T_ASSERT_EQ(get_byte(up[0]), '1');
	{
		struct fl_monitor_server_stats st = srv_stats(&v);

		/* remove, remap + unmap of the old range (twice), unmap */
		T_ASSERT(st.events >= 5);
		T_ASSERT_EQ(st.clients, 1);
	}
	T_ASSERT_LOG("moved part of the layout");
	/* A monitor restart: the client keeps its userfaultfd and hands it over again. */
	srv_stop(&v);
	srv_start(&v, &o);
	put_byte(down[1], 'g');
	reap_ok(pid, "client");
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0);
	T_ASSERT_EQ(srv_stats(&v).reattached, 1);
	T_ASSERT_LOG("re-attaching");
	srv_stop(&v);
	rmdir(dir);
}

/* ------------------------------------------------------------------- forks */

#define NCHILDREN 50

static void fork_client(void *arg)
{
	const char *name = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(64 * ps);
	struct fl_monitor_region r = pat_region(mem, 64 * ps, PAT_OFF, SEED);
	struct fl_monitor_client *c = attach(name, &r, 1, FL_MONITOR_WAIT_REATTACH, 0);
	pid_t pid[NCHILDREN];

	T_ASSERT_PATTERN(mem, PAT_OFF, 8 * ps, SEED);
	for (int i = 0; i < NCHILDREN; i++) {
		pid[i] = fork();
		T_ASSERT_SYS(pid[i]);
		if (pid[i] == 0) {
			uint8_t *p = mem + (8 + (size_t)i) * ps;
			int bad = 0;

			/* Present at the fork, then served to the child by the monitor. */
			bad |= fl_pattern_check(mem, PAT_OFF, 8 * ps, SEED) ? 1 : 0;
			bad |= fl_pattern_check(p, PAT_OFF + (8 + (uint64_t)i) * ps, ps, SEED) ? 2
											     : 0;
			/* A client of its own: it holds a copy of its own userfaultfd. */
			if (fl_monitor_client_state(c) != FL_MONITOR_ATTACHED)
				bad |= 8;
			/* The child's own discard: zeros for it, not for the parent. */
			if (madvise(mem + 60 * ps, ps, MADV_DONTNEED) < 0 ||
			    !t_all(mem + 60 * ps, ps, 0))
				bad |= 4;
			mem[0] ^= 0xff;
			mem[61 * ps] = 0x77;
			_exit(bad);
		}
	}
	for (int i = 0; i < NCHILDREN; i++) {
		int st;

		T_ASSERT_SYS(waitpid(pid[i], &st, 0));
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			t_fail(__FILE__, __LINE__, "child %d: status %#x", i, st);
	}
	/* Independent: what the children did is not ours, and what they fetched we fetch again. */
	T_ASSERT_PATTERN(mem, PAT_OFF, 64 * ps, SEED);
	fl_monitor_detach(c, 0);
}

/*
 * Each fork()ed child starts a watcher thread of its own, which
 * ThreadSanitizer does not allow in a child of a multi-threaded process.
 */
#ifdef __SANITIZE_THREAD__
#define SKIP_UNDER_TSAN()                                                                  \
	T_SKIP("ThreadSanitizer cannot start threads in a child of a multi-threaded process, " \
	       "and each fork()ed child starts its monitor watcher")
#else
#define SKIP_UNDER_TSAN() ((void)0)
#endif

/* Run @fn (a client that forks) against a monitor in this process; it must see @forks forks. */
static void run_forking_client(struct srv *v, const char *tag, void (*fn)(void *),
			       uint64_t forks)
{
	struct fl_monitor_server_opts o = { .probe_ms = 20 };
	pid_t pid;

	abstract_name(v->name, sizeof(v->name), tag);
	srv_start(v, &o);
	pid = spawn(fn, v->name, NULL, 0);
	reap_ok(pid, "client");
	SRV_WAIT(v, st.clients == 0 && st.children == 0 && st.connections == 0);
	T_ASSERT_EQ(srv_stats(v).forks, forks);
}

TEST(monitor_server_fork_children)
{
	struct srv v = { .pid = 0 };

	SKIP_UNDER_TSAN();
	run_forking_client(&v, "fork", fork_client, NCHILDREN);
	T_ASSERT_LOG("child 50 of client pid");
	T_ASSERT_LOG("claimed its userfaultfd");
	srv_stop(&v);
}

/* A child's own children claim too (the child emptied its beacon), and fork + exec works. */
static void grandchild_client(void *arg)
{
	const char *name = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(32 * ps);
	struct fl_monitor_region r = pat_region(mem, 32 * ps, PAT_OFF, SEED);
	struct fl_monitor_client *c = attach(name, &r, 1, FL_MONITOR_WAIT_REATTACH, 0);
	pid_t pid;
	int st;

	T_ASSERT_PATTERN(mem, PAT_OFF, 4 * ps, SEED);
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		pid_t g, x;
		int bad = 0, gst = 0, xst = 0;

		if (fl_pattern_check(mem + 4 * ps, PAT_OFF + 4 * ps, 4 * ps, SEED))
			bad |= 1;
		g = fork();
		if (g == 0) {
			int gbad = 0;

			if (fl_monitor_client_state(c) != FL_MONITOR_ATTACHED)
				gbad |= 1;
			if (fl_pattern_check(mem, PAT_OFF, 32 * ps, SEED))
				gbad |= 2;
			fl_monitor_detach(c, 0);
			_exit(gbad);
		}
		/* fork + exec: the claim happens, then exec drops it; nothing hangs. */
		x = fork();
		if (x == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		if (g < 0 || x < 0 || waitpid(g, &gst, 0) < 0 || waitpid(x, &xst, 0) < 0)
			bad |= 2;
		if (!WIFEXITED(gst) || WEXITSTATUS(gst))
			bad |= 4 | WEXITSTATUS(gst) << 4;
		if (!WIFEXITED(xst) || WEXITSTATUS(xst))
			bad |= 8;
		if (fl_pattern_check(mem + 8 * ps, PAT_OFF + 8 * ps, 24 * ps, SEED))
			bad |= 64;
		fl_monitor_detach(c, 0);
		_exit(bad);
	}
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		t_fail(__FILE__, __LINE__, "child: status %#x", st);
	T_ASSERT_PATTERN(mem, PAT_OFF, 32 * ps, SEED);
	fl_monitor_detach(c, 0);
}

TEST(monitor_server_fork_grandchild_exec)
{
	struct srv v = { .pid = 0 };

	SKIP_UNDER_TSAN();
	run_forking_client(&v, "grand", grandchild_client, 3);
	T_ASSERT_LOG("child 1 of child 1 of client pid");
	srv_stop(&v);
}

/* ----------------------------------------------------------- many clients */

#define NCLIENTS 100

struct many {
	const char *name;
	int gate;
	int i;
};

static void many_client(void *arg)
{
	struct many *m = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(16 * ps);
	struct fl_monitor_region r = pat_region(mem, 16 * ps, 0, 1000 + (uint64_t)m->i);
	struct fl_monitor_client *c;
	char x;

	/* All at once: the gate opens when the parent closes its end. */
	T_ASSERT_EQ(read(m->gate, &x, 1), 0);
	c = attach(m->name, &r, 1, FL_MONITOR_FAIL_LOUD, FL_MONITOR_DONTFORK);
	T_ASSERT_PATTERN(mem, 0, 16 * ps, 1000 + (uint64_t)m->i);
	/* Half detach, half just exit: both end the same way for the monitor. */
	if (m->i % 2)
		fl_monitor_detach(c, 0);
}

TEST(monitor_server_many_clients)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	struct many m[NCLIENTS];
	pid_t pid[NCLIENTS];
	int gate[2];

	abstract_name(v.name, sizeof(v.name), "many");
	T_ASSERT_SYS(pipe2(gate, O_CLOEXEC));
	srv_start(&v, &o);
	for (int i = 0; i < NCLIENTS; i++) {
		int keep[] = { gate[0] };

		m[i] = (struct many){ .name = v.name, .gate = gate[0], .i = i };
		pid[i] = spawn(many_client, &m[i], keep, 1);
	}
	close(gate[1]);
	for (int i = 0; i < NCLIENTS; i++)
		reap_ok(pid[i], "client");
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0);
	T_ASSERT_EQ(srv_stats(&v).attached, NCLIENTS);
	T_ASSERT_EQ(srv_stats(&v).refused, 0);
	srv_stop(&v);
	close(gate[0]);
}

/* ------------------------------------------------------ kill -9, restart */

struct killc {
	const char *name;
	const char *file;	/* 4 MiB of the pattern of 77 */
	int to_parent, from_parent;
};

static uint64_t sum_words(const uint8_t *p, size_t len)
{
	uint64_t s = 0, w;

	for (size_t i = 0; i + 8 <= len; i += 8) {
		memcpy(&w, p + i, 8);
		s = s * 31 + w;
	}
	return s;
}

struct side {
	uint8_t *mem;
	size_t npages;
	int bad;
};

/* Another thread faulting at the same time, backwards: faults queued when the monitor dies. */
static void *side_reader(void *arg)
{
	struct side *s = arg;
	size_t ps = t_page_size();

	for (size_t i = s->npages; i-- > 0;)
		if (fl_pattern_check(s->mem + i * ps, PAT_OFF + i * ps, ps, SEED))
			s->bad++;
	return NULL;
}

/* The client's state reaches ATTACHED within 10 s. */
static bool wait_attached(struct fl_monitor_client *c)
{
	uint64_t end = fl__now_ms() + (uint64_t)t_ms(10000);

	while (fl_monitor_client_state(c) != FL_MONITOR_ATTACHED) {
		if (fl__now_ms() > end)
			return false;
		sched_yield();
	}
	return true;
}

static void kill_client(void *arg)
{
	struct killc *k = arg;
	size_t ps = t_page_size(), np = 4096, nf = 1024, nz = 256;
	uint8_t *mem = t_map_anon((np + nf + nz) * ps), *want = malloc(ps);
	struct fl_monitor_region r[3] = {
		pat_region(mem, np * ps, PAT_OFF, SEED),
		{ .addr = mem + np * ps, .len = nf * ps, .store = FL_MONITOR_STORE_FILE,
		  .path = k->file },
		{ .addr = mem + (np + nf) * ps, .len = nz * ps, .store = FL_MONITOR_STORE_ZERO },
	};
	struct fl_monitor_client *c = attach(k->name, r, 3, FL_MONITOR_WAIT_REATTACH,
					     FL_MONITOR_DONTFORK);
	struct side side = { .mem = mem, .npages = np };
	uint64_t sum = 0, expect = 0;
	unsigned long th;

	T_ASSERT(want);
	th = t_thread_start(side_reader, &side);
	for (size_t i = 0; i < np + nf + nz; i++) {
		uint8_t *p = mem + i * ps;

		if (i == np / 4) {
			/*
			 * The monitor dies now, while the other thread faults; our
			 * faults from here on queue up until its successor starts.
			 */
			put_byte(k->to_parent, 'k');
			T_ASSERT_EQ(get_byte(k->from_parent), 'g');
		}
		sum = sum * 1000003 + sum_words(p, ps);
		if (i < np)
			fl_pattern_fill(want, PAT_OFF + i * ps, ps, SEED);
		else if (i < np + nf)
			fl_pattern_fill(want, (i - np) * ps, ps, 77);
		else
			memset(want, 0, ps);
		expect = expect * 1000003 + sum_words(want, ps);
	}
	t_thread_join(th);
	if (sum != expect || side.bad)
		t_fail(__FILE__, __LINE__, "checksum %#llx, expected %#llx; %d bad pages",
		       (unsigned long long)sum, (unsigned long long)expect, side.bad);
	/* Served means re-attached; the watcher records it just after the ACK. */
	T_ASSERT(wait_attached(c));
	fl_monitor_detach(c, 0);
	free(want);
}

TEST(monitor_server_kill_restart)
{
	char dir[64], sock[96], file[96], log[96];
	char *args[] = { "--socket", sock, NULL };
	struct killc k;
	int up[2], down[2];
	pid_t m1, m2, pid;

	make_tmpdir(dir, sizeof(dir));
	snprintf(sock, sizeof(sock), "%s/monitor.sock", dir);
	snprintf(file, sizeof(file), "%s/data.img", dir);
	snprintf(log, sizeof(log), "%s/monitor.log", dir);
	pattern_file(file, 4u << 20, 77, 0644);
	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(down, O_CLOEXEC));
	m1 = tool_start(args, log);
	k = (struct killc){ .name = sock, .file = file, .to_parent = up[1],
			    .from_parent = down[0] };
	{
		int keep[] = { up[1], down[0] };

		pid = spawn(kill_client, &k, keep, 2);
	}
	T_ASSERT_EQ(get_byte(up[0]), 'k');
	T_ASSERT_SYS(kill(m1, SIGKILL));
	T_ASSERT_SYS(waitpid(m1, NULL, 0));
	put_byte(down[1], 'g');
	/* Its socket file is left behind; the new monitor replaces it. */
	T_ASSERT(access(sock, F_OK) == 0);
	m2 = tool_start(args, log);
	reap_ok(pid, "client");
	tool_stop(m2);
	T_ASSERT(file_has(log, "replacing the socket of a monitor that is gone"));
	T_ASSERT(file_has(log, "re-attaching"));
	unlink(file);
	unlink(log);
	rmdir(dir);
}

/* ------------------------------------------------- children across a restart */

#define NKIDS 4

/*
 * Forked children claim copies of their own userfaultfds: when the monitor
 * is killed they wait, like their parent, and re-attach to its successor
 * with their own layout (a child's discard stays zeros for it).
 */
static void forkkill_client(void *arg)
{
	struct killc *k = arg;
	size_t ps = t_page_size(), np = 16 + 16 * NKIDS;
	uint8_t *mem = t_map_anon(np * ps);
	struct fl_monitor_region r = pat_region(mem, np * ps, PAT_OFF, SEED);
	struct fl_monitor_client *c = attach(k->name, &r, 1, FL_MONITOR_WAIT_REATTACH, 0);
	int up[2], down[2];
	pid_t pid[NKIDS];

	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(down, O_CLOEXEC));
	T_ASSERT_PATTERN(mem, PAT_OFF, 8 * ps, SEED);
	for (int i = 0; i < NKIDS; i++) {
		pid[i] = fork();
		T_ASSERT_SYS(pid[i]);
		if (pid[i] == 0) {
			size_t first = 16 + 16 * (size_t)i;
			uint8_t *own = mem + first * ps;
			uint64_t off = PAT_OFF + first * ps;
			int bad = 0;

			if (fl_monitor_client_state(c) != FL_MONITOR_ATTACHED)
				bad |= 1;
			/* Present at the fork; then served to us through our own descriptor. */
			if (fl_pattern_check(mem, PAT_OFF, 8 * ps, SEED) ||
			    fl_pattern_check(own, off, 8 * ps, SEED))
				bad |= 2;
			/* Our discard: it must read as zeros after the restart too. */
			if (madvise(own + 4 * ps, 4 * ps, MADV_DONTNEED) < 0)
				bad |= 4;
			/*
			 * A fault after it: the monitor sends the REMOVE before it serves
			 * faults read after it, so our layout has it when it dies (an
			 * event read but never sent is lost: protocol section 8).
			 */
			if (fl_pattern_check(own + 15 * ps, off + 15 * ps, ps, SEED))
				bad |= 2;
			put_byte(up[1], 'c');
			if (get_byte(down[0]) != 'g')
				bad |= 8;
			/* The monitor that served us was killed: its successor serves us now. */
			if (fl_pattern_check(own + 8 * ps, off + 8 * ps, 7 * ps, SEED))
				bad |= 16;
			if (!t_all(own + 4 * ps, 4 * ps, 0) ||
			    fl_pattern_check(own, off, 4 * ps, SEED))
				bad |= 32;
			/* Served means re-attached; the watcher records it just after the ACK. */
			if (!wait_attached(c))
				bad |= 64;
			fl_monitor_detach(c, 0);
			_exit(bad);
		}
	}
	for (int i = 0; i < NKIDS; i++)
		T_ASSERT_EQ(get_byte(up[0]), 'c');
	put_byte(k->to_parent, 'k');
	T_ASSERT_EQ(get_byte(k->from_parent), 'g');
	for (int i = 0; i < NKIDS; i++)
		put_byte(down[1], 'g');
	/* What the children fetched or discarded is theirs: we get the store's data. */
	T_ASSERT_PATTERN(mem, PAT_OFF, np * ps, SEED);
	for (int i = 0; i < NKIDS; i++) {
		int st;

		T_ASSERT_SYS(waitpid(pid[i], &st, 0));
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			t_fail(__FILE__, __LINE__, "child %d: status %#x", i, st);
	}
	T_ASSERT(wait_attached(c));
	fl_monitor_detach(c, 0);
}

TEST(monitor_server_fork_kill_restart)
{
	char dir[64], sock[96], log[96];
	char *args[] = { "--socket", sock, NULL };
	struct killc k;
	int up[2], down[2];
	pid_t m1, m2, pid;

	SKIP_UNDER_TSAN();
	make_tmpdir(dir, sizeof(dir));
	snprintf(sock, sizeof(sock), "%s/monitor.sock", dir);
	snprintf(log, sizeof(log), "%s/monitor.log", dir);
	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(down, O_CLOEXEC));
	m1 = tool_start(args, log);
	k = (struct killc){ .name = sock, .to_parent = up[1], .from_parent = down[0] };
	{
		int keep[] = { up[1], down[0] };

		pid = spawn(forkkill_client, &k, keep, 2);
	}
	T_ASSERT_EQ(get_byte(up[0]), 'k');
	T_ASSERT(file_has(log, "claimed its userfaultfd"));
	T_ASSERT_SYS(kill(m1, SIGKILL));
	T_ASSERT_SYS(waitpid(m1, NULL, 0));
	m2 = tool_start(args, log);
	put_byte(down[1], 'g');
	reap_ok(pid, "client");
	tool_stop(m2);
	T_ASSERT(file_has(log, "re-attaching"));
	unlink(log);
	rmdir(dir);
}

/* --------------------------------------------------------------- FAIL_LOUD */

static int state_efd = -1;

static void on_state(struct fl_monitor_client *c, enum fl_monitor_state st, int err, void *ud)
{
	uint64_t one = 1;

	(void)c;
	(void)st;
	(void)err;
	(void)ud;
	if (write(state_efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		abort();
}

struct loudc {
	const char *name;
	int to_parent;
};

static void *sigbus_reader(void *arg)
{
	return (void *)(uintptr_t)t_read_sigbus(arg);
}

static void loud_client(void *arg)
{
	struct loudc *l = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(16 * ps);
	struct fl_monitor_region r = pat_region(mem, 16 * ps, PAT_OFF, SEED);
	struct sigaction sa = { .sa_sigaction = t_on_sigbus, .sa_flags = SA_SIGINFO };
	struct fl_monitor_opts o = {
		.sz = sizeof(o),
		.policy = FL_MONITOR_FAIL_LOUD,
		.flags = FL_MONITOR_DONTFORK,
		.on_state = on_state,
	};
	struct fl_monitor_client *c;
	int want;

	state_efd = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(state_efd);
	T_ASSERT_SYS(sigaction(SIGBUS, &sa, NULL));
	T_ASSERT_OK(fl_monitor_attach(l->name, &r, 1, &o, &c));
	T_ASSERT_PATTERN(mem, PAT_OFF, 4 * ps, SEED);
	put_byte(l->to_parent, 'k');
	/* Before 6.6 nothing can be poisoned: BLOCKED, and faults stay blocked (never zeros). */
	want = t_have(FL_FEAT_POISON) ? FL_MONITOR_FAILED : FL_MONITOR_BLOCKED;
	while (fl_monitor_client_state(c) != want) {
		uint64_t v;

		T_ASSERT_EQ(fl_monitor_client_state(c), FL_MONITOR_ATTACHED);
		T_ASSERT_EQ(read(state_efd, &v, sizeof(v)), (ssize_t)sizeof(v));
	}
	if (want == FL_MONITOR_BLOCKED) {
		T_ASSERT_PATTERN(mem, PAT_OFF, 4 * ps, SEED);
		t_thread_start(sigbus_reader, mem + 10 * ps);
		T_ASSERT(t_wait_fault_blocked(getpid(), 10000));
		_exit(0);	/* ends the blocked thread; detaching would unregister */
	}
	/* Never zeros: pages not fetched raise SIGBUS; those fetched keep their data. */
	T_ASSERT(t_read_sigbus(mem + 10 * ps));
	T_ASSERT(t_read_sigbus(mem + 4 * ps + 100));
	T_ASSERT_PATTERN(mem, PAT_OFF, 4 * ps, SEED);
	fl_monitor_detach(c, 0);
}

struct srvproc {
	const char *name;
	int ready;
};

/* A library monitor in a process of its own, killed by the test. */
static void server_process(void *arg)
{
	struct srvproc *sp = arg;
	struct fl_monitor_server_opts o = { .sz = sizeof(o), .socket_path = sp->name,
					    .log_fn = srv_log };
	struct fl_monitor_server *s;

	T_ASSERT_OK(fl_monitor_server_create(&o, &s));
	put_byte(sp->ready, 'r');
	T_ASSERT_OK(fl_monitor_server_run(s));
}

TEST(monitor_server_fail_loud)
{
	char name[108];
	struct srvproc sp;
	struct loudc l;
	int up[2], ready[2];
	pid_t srv, pid;

	abstract_name(name, sizeof(name), "loud");
	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(ready, O_CLOEXEC));
	sp = (struct srvproc){ .name = name, .ready = ready[1] };
	{
		int keep[] = { ready[1] };

		srv = spawn(server_process, &sp, keep, 1);
	}
	T_ASSERT_EQ(get_byte(ready[0]), 'r');
	l = (struct loudc){ .name = name, .to_parent = up[1] };
	{
		int keep[] = { up[1] };

		pid = spawn(loud_client, &l, keep, 1);
	}
	T_ASSERT_EQ(get_byte(up[0]), 'k');
	T_ASSERT_SYS(kill(srv, SIGKILL));
	T_ASSERT_SYS(waitpid(srv, NULL, 0));
	reap_ok(pid, "client");
}

/* ----------------------------------------------- exit with faults pending */

struct pendc {
	const char *name;
	int to_parent;
};

static void *block_forever(void *arg)
{
	volatile uint8_t *p = arg;

	return (void *)(uintptr_t)*p;
}

static void pending_client(void *arg)
{
	struct pendc *pc = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(8 * ps), *hidden = t_map_anon(4 * ps);
	struct fl_monitor_region r = pat_region(mem, 8 * ps, PAT_OFF, SEED);
	struct fl_monitor_client *c = attach(pc->name, &r, 1, FL_MONITOR_WAIT_REATTACH,
					     FL_MONITOR_DONTFORK);
	struct t_access a[2];

	/* Registered on the same userfaultfd, in no region: the monitor leaves these blocked. */
	T_ASSERT_OK(fl_uffd_register(fl_monitor_client_uffd(c), hidden, 4 * ps,
				     FL_REGISTER_MISSING, NULL));
	for (int i = 0; i < 4; i++)
		t_thread_start(block_forever, hidden + (size_t)i * ps);
	t_access_start(&a[0], mem + 3 * ps, false, 0);
	t_access_start(&a[1], mem + 6 * ps, true, 0x5a);
	T_ASSERT_EQ(t_access_join(&a[0]), (uint8_t)fl_pattern_word(SEED, PAT_OFF + 3 * ps));
	T_ASSERT_EQ(t_access_join(&a[1]), 0x5a);
	put_byte(pc->to_parent, 'x');
	/* Exit with four threads blocked in faults, without detaching. */
	_exit(0);
}

TEST(monitor_server_exit_with_faults_pending)
{
	struct fl_monitor_server_opts o = { .probe_ms = 20 };
	struct srv v = { .pid = 0 };
	struct pendc pc;
	struct basic b;
	char dir[64], file[96];
	int up[2];
	pid_t pid;

	abstract_name(v.name, sizeof(v.name), "pending");
	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	srv_start(&v, &o);
	pc = (struct pendc){ .name = v.name, .to_parent = up[1] };
	{
		int keep[] = { up[1] };

		pid = spawn(pending_client, &pc, keep, 1);
	}
	T_ASSERT_EQ(get_byte(up[0]), 'x');
	reap_ok(pid, "client");
	/* Everything of that client is freed: its pager, its descriptor, its connection. */
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0 && st.ended == 1);
	/* And the monitor goes on serving others. */
	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/store.img", dir);
	pattern_file(file, 32 * t_page_size(), 99, 0644);
	b = (struct basic){ .name = v.name, .file = file, .seed = 5 };
	reap_ok(spawn(basic_client, &b, NULL, 0), "second client");
	SRV_WAIT(&v, st.clients == 0 && st.ended == 2);
	srv_stop(&v);
	unlink(file);
	rmdir(dir);
}

/* ------------------------------------------------------------- Firecracker */

struct fcc {
	const char *sock;
	const char *file;	/* the guest memory file: the pattern of 7 */
	bool huge;
};

/* A Firecracker VM's two guest regions: region 1 at the higher offset, region 2 at the lower. */
struct fcvm {
	size_t ps, l1, l2;
	uint64_t o1, o2;
	uint8_t *g1, *g2;
	struct fl_uffd *u;
	int sock;
};

/* What Firecracker does: a JSON region list and the userfaultfd, in one message; then silence. */
static void fc_connect(const struct fcc *f, struct fcvm *vm)
{
	size_t ps = f->huge ? 2u << 20 : t_page_size();
	size_t l1 = f->huge ? 2 * ps : 512 * ps, l2 = f->huge ? ps : 256 * ps;
	uint64_t o1 = f->huge ? 2 * ps : 0x400000, o2 = f->huge ? 0 : 0x100000;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | (f->huge ? MAP_HUGETLB : 0);
	uint8_t *g1 = mmap(NULL, l1, PROT_READ | PROT_WRITE, flags, -1, 0);
	uint8_t *g2 = mmap(NULL, l2, PROT_READ | PROT_WRITE, flags, -1, 0);
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_REMOVE |
					(f->huge ? FL_FEAT_MISSING_HUGETLBFS : 0), true);
	struct sockaddr_un sa;
	char json[1024];
	int sock, salen, n;

	T_ASSERT(g1 != MAP_FAILED && g2 != MAP_FAILED);
	T_ASSERT_OK(fl_uffd_register(u, g1, l1, FL_REGISTER_MISSING, NULL));
	T_ASSERT_OK(fl_uffd_register(u, g2, l2, FL_REGISTER_MISSING, NULL));
	n = snprintf(json, sizeof(json),
		     "[{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":%llu,"
		     "\"page_size\":%zu},"
		     " {\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":%llu,"
		     "\"page_size_kib\":%zu,\"prot\":3}]",
		     (unsigned long)(uintptr_t)g1, l1, (unsigned long long)o1, ps,
		     (unsigned long)(uintptr_t)g2, l2, (unsigned long long)o2, ps);
	salen = fl__mon_sockaddr(f->sock, &sa);
	T_ASSERT(salen > 0);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	T_ASSERT_SYS(sock);
	T_ASSERT_SYS(connect(sock, (struct sockaddr *)&sa, (socklen_t)salen));
	T_ASSERT_OK(fl__mon_send(sock, json, (size_t)n, fl_uffd_fd(u),
				 fl__now_ms() + (uint64_t)t_ms(5000)));
	*vm = (struct fcvm){ .ps = ps, .l1 = l1, .l2 = l2, .o1 = o1, .o2 = o2, .g1 = g1,
			     .g2 = g2, .u = u, .sock = sock };
}

static void firecracker_client(void *arg)
{
	struct fcc *f = arg;
	struct fcvm vm;
	size_t ps, l1;
	uint64_t o1, o2;
	uint8_t *g1, *g2;

	fc_connect(f, &vm);
	ps = vm.ps;
	l1 = vm.l1;
	o1 = vm.o1;
	o2 = vm.o2;
	g1 = vm.g1;
	g2 = vm.g2;
	/* Guest memory, from the file at each region's offset. */
	check_file(f->file, o1, g1, l1);
	check_file(f->file, o2, g2, vm.l2);
	/* The balloon takes pages back: afterwards they read as zeros. */
	{
		size_t off = f->huge ? ps : 64 * ps, len = f->huge ? ps : 16 * ps;

		T_ASSERT_SYS(madvise(g1 + off, len, MADV_DONTNEED));
		T_ASSERT(t_all(g1 + off, len, 0));
		g1[off + 5] = 9;
		T_ASSERT_EQ(g1[off + 5], 9);
		check_file(f->file, o1, g1, off);
		if (!f->huge)
			check_file(f->file, o1 + off + len, g1 + off + len, l1 - off - len);
	}
	/* The VM ends: the hang-up is all the monitor hears. */
	close(vm.sock);
	fl_uffd_close(vm.u);
}

TEST(monitor_server_firecracker)
{
	char dir[64], sock[96], file[96], log[96];
	char *args[] = { "--socket", sock, "--firecracker", "--mem-file", file, NULL };
	struct fcc f;
	pid_t m, pid;

	make_tmpdir(dir, sizeof(dir));
	snprintf(sock, sizeof(sock), "%s/fc.sock", dir);
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	snprintf(log, sizeof(log), "%s/monitor.log", dir);
	pattern_file(file, 8u << 20, 7, 0644);
	m = tool_start(args, log);
	f = (struct fcc){ .sock = sock, .file = file };
	pid = spawn(firecracker_client, &f, NULL, 0);
	reap_ok(pid, "Firecracker client");
	/* Served twice: a second VM after the first. */
	pid = spawn(firecracker_client, &f, NULL, 0);
	reap_ok(pid, "Firecracker client");
	tool_stop(m);
	T_ASSERT(file_has(log, "attached 2 regions from Firecracker"));
	unlink(file);
	unlink(log);
	rmdir(dir);
}

TEST(monitor_server_firecracker_hugetlb)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	char dir[64], file[96];
	struct fcc f;

	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	pattern_file(file, 8u << 20, 7, 0644);
	abstract_name(v.name, sizeof(v.name), "fc-huge");
	o.firecracker_mem_file = file;
	srv_start(&v, &o);
	f = (struct fcc){ .sock = v.name, .file = file, .huge = true };
	reap_ok(spawn(firecracker_client, &f, NULL, 0), "Firecracker client");
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0);
	T_ASSERT_EQ(srv_stats(&v).firecracker, 1);
	T_ASSERT_EQ(srv_stats(&v).events, 1);
	T_ASSERT_LOG("the VM's socket closed");
	srv_stop(&v);
	unlink(file);
	rmdir(dir);
}

/* --------------------------------------------- Firecracker: snapshots, working sets */

/* Remove @dir and the files in it. */
static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	T_ASSERT(d != NULL);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	T_ASSERT_SYS(rmdir(dir));
}

/* The guest memory file: 8 MiB of the pattern of 7, with a run of zeros inside region 2. */
static void fc_mem_file(const char *path)
{
	static const uint8_t zeros[0x10000];
	int fd;

	pattern_file(path, 8u << 20, 7, 0644);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(pwrite(fd, zeros, sizeof(zeros), 0x180000), (ssize_t)sizeof(zeros));
	close(fd);
}

/*
 * A snapshot chain of the memory file @raw in @dir, with pages of @ps: a
 * full snapshot in which every 37th page (every 3rd of 2 MiB) holds wrong
 * bytes, and an incremental one over it holding those pages right, so that
 * only the chain restores @raw. @cut > 0: the snapshot has two regions,
 * [0, cut) and [cut, end) of the file. The newest file's path goes to @out.
 */
static void fc_snapshot(const char *raw, const char *dir, size_t ps, uint64_t cut, char *out,
			size_t outlen)
{
	struct fl_snapshot_writer_opts wo = { .sz = sizeof(wo) };
	struct fl_snapshot_writer *w = NULL;
	size_t every = ps > 4096 ? 3 : 37;
	uint8_t id[16], *bad = malloc(ps), *data;
	uint64_t len, lens[2];
	char full[128];
	struct stat st;
	int fd = open(raw, O_RDONLY | O_CLOEXEC);

	T_ASSERT_SYS(fd);
	T_ASSERT_SYS(fstat(fd, &st));
	len = (uint64_t)st.st_size;
	data = malloc(len);
	T_ASSERT(data && bad);
	T_ASSERT_EQ(pread(fd, data, len, 0), (ssize_t)len);
	close(fd);
	memset(bad, 0xa5, ps);
	lens[0] = cut ? cut : len;
	lens[1] = len - lens[0];
	snprintf(full, sizeof(full), "%s/full.flsnap", dir);
	snprintf(out, outlen, "%s/incr.flsnap", dir);
	for (int pass = 0; pass < 2; pass++) {
		T_ASSERT_OK(fl_snapshot_writer_create(pass ? out : full, &wo, &w));
		for (uint32_t i = 0; i < (cut ? 2u : 1u); i++)
			T_ASSERT_OK(fl_snapshot_writer_add_region(w, i ? cut : 0, lens[i], ps, 0,
								  NULL));
		for (uint64_t off = 0; off < len; off += ps) {
			bool odd = (off / ps) % every == 1;
			uint32_t rg = off < lens[0] ? 0 : 1;

			if (pass && !odd)
				continue;	/* the parent's */
			T_ASSERT_OK(fl_snapshot_writer_put(w, rg, off - (rg ? lens[0] : 0),
							   odd && !pass ? bad : data + off, ps));
		}
		T_ASSERT_OK(fl_snapshot_writer_finish(w, id));
		wo.parent_id = id;
	}
	free(data);
	free(bad);
}

TEST(monitor_server_firecracker_snapshot)
{
	char dir[64], sock[96], file[96], snap[128], log[96];
	char *args[] = { "--socket", sock, "--firecracker", "--snapshot", snap, NULL };
	struct fcc f;
	pid_t m;

	make_tmpdir(dir, sizeof(dir));
	snprintf(sock, sizeof(sock), "%s/fc.sock", dir);
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	snprintf(log, sizeof(log), "%s/monitor.log", dir);
	fc_mem_file(file);
	fc_snapshot(file, dir, 4096, 0, snap, sizeof(snap));
	m = tool_start(args, log);
	f = (struct fcc){ .sock = sock, .file = file };
	/* Every page as the memory file has it: the chain's, zero pages, the balloon. */
	reap_ok(spawn(firecracker_client, &f, NULL, 0), "Firecracker client");
	reap_ok(spawn(firecracker_client, &f, NULL, 0), "Firecracker client");
	tool_stop(m);
	T_ASSERT(file_has(log, "attached 2 regions from Firecracker"));
	rm_dir(dir);
}

/* 2 MiB pages, from a snapshot of two regions: each guest region lies in one of them. */
TEST(monitor_server_firecracker_snapshot_hugetlb)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	char dir[64], file[96], snap[128];
	struct fcc f;

	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	fc_mem_file(file);
	fc_snapshot(file, dir, 2u << 20, 4u << 20, snap, sizeof(snap));
	abstract_name(v.name, sizeof(v.name), "fc-snap-huge");
	o.firecracker_snapshot = snap;
	srv_start(&v, &o);
	f = (struct fcc){ .sock = v.name, .file = file, .huge = true };
	reap_ok(spawn(firecracker_client, &f, NULL, 0), "Firecracker client");
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0);
	T_ASSERT_EQ(srv_stats(&v).firecracker, 1);
	T_ASSERT_EQ(srv_stats(&v).refused, 0);
	srv_stop(&v);
	rm_dir(dir);
}

/* A VM the monitor cannot serve: it learns from the hang-up, as Firecracker does. */
static void fc_refused_client(void *arg)
{
	struct fcvm vm;
	char c;

	fc_connect(arg, &vm);
	t_wait_readable(vm.sock);
	T_ASSERT_EQ(read(vm.sock, &c, 1), 0);
	close(vm.sock);
	fl_uffd_close(vm.u);
}

TEST(monitor_server_firecracker_snapshot_refused)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct fl_monitor_server *bad = NULL;
	struct srv v = { .pid = 0 };
	char dir[64], file[96], snap[128], sub[96];
	struct fcc f;

	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	fc_mem_file(file);
	/* Region 1 of the guest, [4 MiB, 6 MiB), runs across the snapshot's regions. */
	fc_snapshot(file, dir, 4096, 5u << 20, snap, sizeof(snap));
	abstract_name(v.name, sizeof(v.name), "fc-span");
	o.firecracker_snapshot = snap;
	srv_start(&v, &o);
	f = (struct fcc){ .sock = v.name, .file = file };
	reap_ok(spawn(fc_refused_client, &f, NULL, 0), "Firecracker client");
	SRV_WAIT(&v, st.refused == 1 && st.connections == 0);
	T_ASSERT_LOG("runs past the end of snapshot region 0 at 0x500000: a guest region must "
		     "lie in one snapshot region");
	srv_stop(&v);
	/* 4 KiB guest pages cannot be served from a snapshot of 2 MiB pages. */
	snprintf(sub, sizeof(sub), "%s/huge", dir);
	T_ASSERT_SYS(mkdir(sub, 0755));
	fc_snapshot(file, sub, 2u << 20, 0, snap, sizeof(snap));
	abstract_name(v.name, sizeof(v.name), "fc-pagesize");
	o = (struct fl_monitor_server_opts){ .probe_ms = 50, .firecracker_snapshot = snap };
	srv_start(&v, &o);
	reap_ok(spawn(fc_refused_client, &f, NULL, 0), "Firecracker client");
	SRV_WAIT(&v, st.refused == 1 && st.connections == 0);
	T_ASSERT_LOG("has pages of 4 KiB, the snapshot region holding it pages of 2048 KiB");
	srv_stop(&v);
	/* Options that do not go together. */
	o = (struct fl_monitor_server_opts){ .sz = sizeof(o), .socket_path = "@fl-test-fc-opts",
					     .firecracker_mem_file = file,
					     .firecracker_snapshot = snap };
	T_ASSERT_ERR(fl_monitor_server_create(&o, &bad), EINVAL);
	o.firecracker_mem_file = o.firecracker_snapshot = NULL;
	o.firecracker_ws_record = file;
	T_ASSERT_ERR(fl_monitor_server_create(&o, &bad), EINVAL);
	o.firecracker_ws_record = NULL;
	o.firecracker_snapshot = file;	/* not a snapshot */
	T_ASSERT_ERR(fl_monitor_server_create(&o, &bad), EINVAL);
	o.firecracker_snapshot = NULL;
	T_ASSERT_OK(fl_monitor_server_create(&o, &bad));
	T_ASSERT_ERR(fl_monitor_server_ws_save(bad), EINVAL);	/* it records nothing */
	fl_monitor_server_destroy(bad);
	T_ASSERT_ERR(fl_monitor_server_ws_save(NULL), EINVAL);
	unlink(snap);
	snprintf(snap, sizeof(snap), "%s/full.flsnap", sub);
	unlink(snap);
	rmdir(sub);
	rm_dir(dir);
}

/* A page of a guest region: region 1 or 2 (struct fcvm), page index. */
struct fc_touch {
	int region;
	unsigned int pg;
};

/* The pages the first VM touches, in order: scattered, both regions interleaved. */
static const struct fc_touch fc_touch_4k[] = {
	{ 1, 17 }, { 2, 250 }, { 1, 3 }, { 1, 200 }, { 2, 7 },
	{ 1, 45 }, { 1, 511 }, { 2, 128 }, { 1, 0 }, { 1, 99 },
};
static const struct fc_touch fc_touch_2m[] = { { 1, 1 }, { 2, 0 } };

struct fcw {
	struct fcc f;
	const struct fc_touch *t;
	size_t n;
	bool replay;		/* wait for the pages to be there, then touch them without faults */
	int up, down;		/* signal: pipes to and from the test (-1: none) */
	size_t pause_at;	/* signal: after this many touches, say 'a' and wait for a byte */
};

static uint8_t *fc_page(const struct fcvm *vm, const struct fc_touch *t)
{
	return (t->region == 1 ? vm->g1 : vm->g2) + (size_t)t->pg * vm->ps;
}

static uint64_t fc_page_off(const struct fcvm *vm, const struct fc_touch *t)
{
	return (t->region == 1 ? vm->o1 : vm->o2) + (uint64_t)t->pg * vm->ps;
}

/*
 * Read one byte of each of @pages[0..@n) and return how many faults this
 * thread took doing it (a fault a userfaultfd resolved counts as major).
 * Nothing in here is instrumented, and getrusage is a raw system call: a
 * sanitizer's runtime writes its shadow and (ThreadSanitizer) its event
 * trace on every instrumented access or call, and the first touch of each
 * of those pages is a fault of this thread too.
 */
__attribute__((noinline, no_sanitize("address", "thread")))
static long touch_counted(uint8_t *const *pages, size_t n)
{
	struct rusage before, after;
	uint8_t sum = 0;

	if (syscall(SYS_getrusage, RUSAGE_THREAD, &before) != 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		sum += *(const volatile uint8_t *)pages[i];
	if (syscall(SYS_getrusage, RUSAGE_THREAD, &after) != 0)
		return -1;
	__asm__ volatile("" : : "r"(sum));
	return (after.ru_minflt + after.ru_majflt) - (before.ru_minflt + before.ru_majflt);
}

/* Is the page of @t present in the VM's memory (without touching it)? */
/*
 * Whether the page is mapped here (its page-table entry, not mincore(2):
 * for shared memory that says the page cache has it, which the replay
 * fills before it maps the page, so a touch in between still faults).
 */
static bool fc_present(const struct fcvm *vm, const struct fc_touch *t)
{
	return t_pagemap(fc_page(vm, t)) & T_PM_PRESENT;
}

static void fc_ws_client(void *arg)
{
	struct fcw *w = arg;
	struct fcvm vm;
	uint8_t *pages[16];
	long faults, rest;

	fc_connect(&w->f, &vm);
	if (w->replay) {
		/* The replay installs them from the handshake on: wait (bounded) until it did. */
		uint64_t end = fl__now_ms() + (uint64_t)t_ms(10000);

		for (size_t i = 0; i < w->n; i++) {
			while (!fc_present(&vm, &w->t[i])) {
				if (fl__now_ms() > end)
					t_fail(__FILE__, __LINE__, "page %zu of the working set was "
					       "never prefetched", i);
				usleep(1000);
			}
		}
	}
	T_ASSERT(w->n <= sizeof(pages) / sizeof(pages[0]));
	for (size_t i = 0; i < w->n; i++)
		pages[i] = fc_page(&vm, &w->t[i]);
	if (w->up >= 0) {
		/* Touch up to the pause, signal, wait, touch the rest: the signalling is not counted. */
		faults = touch_counted(pages, w->pause_at);
		T_ASSERT(faults >= 0);
		put_byte(w->up, 'a');
		T_ASSERT_EQ(get_byte(w->down), 'b');
		rest = touch_counted(pages + w->pause_at, w->n - w->pause_at);
		T_ASSERT(rest >= 0);
		faults += rest;
	} else {
		faults = touch_counted(pages, w->n);
		T_ASSERT(faults >= 0);
	}
	if (w->replay)
		T_ASSERT_EQ(faults, 0);
	else
		T_ASSERT(faults >= (long)w->n);
	for (size_t i = 0; i < w->n; i++)
		check_file(w->f.file, fc_page_off(&vm, &w->t[i]), fc_page(&vm, &w->t[i]), vm.ps);
	if (w->replay) {
		/* A page outside the working set: on demand, as before. */
		struct fc_touch x = { 1, w->f.huge ? 0 : 300 };

		check_file(w->f.file, fc_page_off(&vm, &x), fc_page(&vm, &x), vm.ps);
	}
	close(vm.sock);
	fl_uffd_close(vm.u);
}

/* The working-set file @path lists exactly @want (page indices of region @region), in order. */
static void check_ws(const char *path, size_t ps, size_t len, const struct fc_touch *t, size_t n,
		     int region)
{
	uint8_t buf[64 + 8 * 64];
	uint64_t v, want[64];
	size_t k = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t got;

	for (size_t i = 0; i < n; i++)
		if (t[i].region == region)
			want[k++] = t[i].pg;
	if (fd < 0)
		t_fail(__FILE__, __LINE__, "%s: %s", path, strerror(errno));
	got = read(fd, buf, sizeof(buf));
	close(fd);
	T_ASSERT_EQ(got, (ssize_t)(64 + 8 * k));
	T_ASSERT(!memcmp(buf, "FLWORKST", 8));
	memcpy(&v, buf + 16, 8);
	T_ASSERT_EQ(v, ps);
	memcpy(&v, buf + 24, 8);
	T_ASSERT_EQ(v, len);
	memcpy(&v, buf + 32, 8);
	T_ASSERT_EQ(v, k);
	for (size_t i = 0; i < k; i++) {
		memcpy(&v, buf + 64 + 8 * i, 8);
		if (v != want[i])
			t_fail(__FILE__, __LINE__, "%s: entry %zu is page %llu, not %llu", path, i,
			       (unsigned long long)v, (unsigned long long)want[i]);
	}
}

/*
 * Record, then replay: a first VM touches scattered pages and hangs up; its
 * working sets (one file per guest region, numbered by offset) list exactly
 * those pages in order. A second VM, restored with them, finds every one
 * installed before it touches it: no fault of its own, none the monitor
 * served but the one page outside the set, and the contents right.
 */
static void fc_ws_run(bool huge, bool swapped)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	char dir[64], file[96], snap[128], ws[96], ws1[100];
	size_t ps = huge ? 2u << 20 : 4096;
	struct fcw w = { .t = huge ? fc_touch_2m : fc_touch_4k, .up = -1, .down = -1 };
	struct fl_monitor_server_stats now;

	w.n = huge ? 2 : sizeof(fc_touch_4k) / sizeof(fc_touch_4k[0]);
	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	snprintf(ws, sizeof(ws), "%s/vm.ws", dir);
	snprintf(ws1, sizeof(ws1), "%s.1", ws);
	fc_mem_file(file);
	fc_snapshot(file, dir, ps, 0, snap, sizeof(snap));
	abstract_name(v.name, sizeof(v.name), "fc-record");
	o.firecracker_snapshot = snap;
	o.firecracker_ws_record = ws;
	srv_start(&v, &o);
	w.f = (struct fcc){ .sock = v.name, .file = file, .huge = huge };
	reap_ok(spawn(fc_ws_client, &w, NULL, 0), "recording VM");
	SRV_WAIT(&v, st.ended == 1 && st.clients == 0);
	now = srv_stats(&v);
	T_ASSERT_EQ(now.ws_saved, 2);
	T_ASSERT_EQ(now.faults, w.n);
	T_ASSERT_LOG("pages, written to");
	srv_stop(&v);
	/* Region 2 has the lower offset: it is region 0 of the files. */
	check_ws(ws, ps, huge ? ps : 256 * ps, w.t, w.n, 2);
	check_ws(ws1, ps, huge ? 2 * ps : 512 * ps, w.t, w.n, 1);
	if (swapped) {
		char tmp[100];

		/* Each region gets the other's working set, recorded for another length. */
		snprintf(tmp, sizeof(tmp), "%s.tmp", ws);
		T_ASSERT_SYS(rename(ws, tmp));
		T_ASSERT_SYS(rename(ws1, ws));
		T_ASSERT_SYS(rename(tmp, ws1));
	}

	abstract_name(v.name, sizeof(v.name), "fc-replay");
	o = (struct fl_monitor_server_opts){ .probe_ms = 50, .firecracker_snapshot = snap,
					     .firecracker_ws_replay = ws };
	srv_start(&v, &o);
	w.f.sock = v.name;
	w.replay = !swapped;
	reap_ok(spawn(fc_ws_client, &w, NULL, 0), "restored VM");
	SRV_WAIT(&v, st.ended == 1 && st.clients == 0);
	now = srv_stats(&v);
	if (swapped) {
		/* Served all the same, on demand: every page a fault, none prefetched. */
		T_ASSERT_EQ(now.refused, 0);
		T_ASSERT_EQ(now.faults, w.n);
		T_ASSERT_EQ(now.ws_prefetched, 0);
		T_ASSERT_LOG("not replayed (Invalid argument); serving it on demand");
		srv_stop(&v);
		rm_dir(dir);
		return;
	}
	T_ASSERT_EQ(now.faults, 1);	/* the page outside the working set */
	T_ASSERT(now.ws_prefetched <= w.n);
	T_ASSERT_EQ(now.ws_saved, 0);
	srv_stop(&v);
	rm_dir(dir);
}

TEST(monitor_server_firecracker_ws)
{
	fc_ws_run(false, false);
}

TEST(monitor_server_firecracker_ws_hugetlb)
{
	fc_ws_run(true, false);
}

/* Working sets that do not fit the regions (another length): the VM is served on demand. */
TEST(monitor_server_firecracker_ws_mismatch)
{
	fc_ws_run(false, true);
}

/* Wait (bounded) until files @a and @b of the directory watched by @ino were renamed into place. */
static void wait_renamed(int ino, const char *a, const char *b)
{
	bool seen_a = false, seen_b = false;
	uint64_t end = fl__now_ms() + (uint64_t)t_ms(10000);

	while (!seen_a || !seen_b) {
		char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
		struct pollfd pf = { .fd = ino, .events = POLLIN };
		int left = (int)(end > fl__now_ms() ? end - fl__now_ms() : 0);
		ssize_t n;

		if (poll(&pf, 1, left) <= 0)
			t_fail(__FILE__, __LINE__, "%s%s%s not written in time", seen_a ? "" : a,
			       !seen_a && !seen_b ? " and " : "", seen_b ? "" : b);
		n = read(ino, buf, sizeof(buf));
		T_ASSERT(n > 0);
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;

			if (ev->len && !strcmp(ev->name, a))
				seen_a = true;
			if (ev->len && !strcmp(ev->name, b))
				seen_b = true;
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* The tool: SIGUSR1 writes what was recorded so far; the hang-up all of it; --prefetch replays. */
TEST(monitor_server_firecracker_ws_tool)
{
	char dir[64], sock[96], file[96], snap[128], log[96], ws[96], ws1[100];
	char *rec[] = { "--socket", sock, "--firecracker", "--snapshot", snap, "--record", ws,
			NULL };
	char *rep[] = { "--socket", sock, "--firecracker", "--snapshot", snap, "--prefetch", ws,
			"--prefetch", "none", NULL };
	struct fcw w = { .t = fc_touch_4k, .n = 6, .pause_at = 3 };
	int up[2], down[2], ino;
	pid_t m, pid;

	make_tmpdir(dir, sizeof(dir));
	snprintf(sock, sizeof(sock), "%s/fc.sock", dir);
	snprintf(file, sizeof(file), "%s/guest.mem", dir);
	snprintf(log, sizeof(log), "%s/monitor.log", dir);
	snprintf(ws, sizeof(ws), "%s/vm.ws", dir);
	snprintf(ws1, sizeof(ws1), "%s.1", ws);
	fc_mem_file(file);
	fc_snapshot(file, dir, 4096, 0, snap, sizeof(snap));
	ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	T_ASSERT_SYS(ino);
	T_ASSERT_SYS(inotify_add_watch(ino, dir, IN_MOVED_TO));
	m = tool_start(rec, log);
	T_ASSERT_SYS(pipe2(up, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(down, O_CLOEXEC));
	w.f = (struct fcc){ .sock = sock, .file = file };
	w.up = up[1];
	w.down = down[0];
	{
		int keep[] = { up[1], down[0] };

		pid = spawn(fc_ws_client, &w, keep, 2);
	}
	T_ASSERT_EQ(get_byte(up[0]), 'a');
	/* Three pages touched, the VM still running: SIGUSR1 writes those. */
	T_ASSERT_SYS(kill(m, SIGUSR1));
	wait_renamed(ino, "vm.ws", "vm.ws.1");
	check_ws(ws, 4096, 256 * 4096, w.t, 3, 2);
	check_ws(ws1, 4096, 512 * 4096, w.t, 3, 1);
	put_byte(down[1], 'b');
	reap_ok(pid, "recording VM");
	/* The hang-up: all six. */
	wait_renamed(ino, "vm.ws", "vm.ws.1");
	check_ws(ws, 4096, 256 * 4096, w.t, 6, 2);
	check_ws(ws1, 4096, 512 * 4096, w.t, 6, 1);
	tool_stop(m);
	T_ASSERT(file_has(log, "working set of region 1, 4 pages, written to"));
	T_ASSERT(file_has(log, "6 faults served"));

	m = tool_start(rep, log);
	w = (struct fcw){ .f = w.f, .t = fc_touch_4k, .n = 6, .replay = true, .up = -1,
			  .down = -1 };
	reap_ok(spawn(fc_ws_client, &w, NULL, 0), "restored VM");
	tool_stop(m);
	T_ASSERT(file_has(log, "1 faults served, 6 pages prefetched from the working set"));
	close(ino);
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
	rm_dir(dir);
}

/* -------------------------------------------------------------- malformed */

struct goodc {
	const char *name;
	int cmd;	/* 'r': one fresh attach now; 's': stop */
	int ack;
};

/* Keeps being served while bad clients come and go: one long attach, fresh ones on demand. */
static void good_client(void *arg)
{
	struct goodc *g = arg;
	size_t ps = t_page_size(), np = 2048, next = 0;
	uint8_t *mem = t_map_anon(np * ps);
	struct fl_monitor_region r = pat_region(mem, np * ps, PAT_OFF, SEED);
	struct fl_monitor_client *c = attach(g->name, &r, 1, FL_MONITOR_FAIL_LOUD,
					     FL_MONITOR_DONTFORK);

	for (;;) {
		struct pollfd pf = { .fd = g->cmd, .events = POLLIN };
		char cmd;

		if (next < np) {
			T_ASSERT_PATTERN(mem + next * ps, PAT_OFF + next * ps, ps, SEED);
			next++;
		}
		if (poll(&pf, 1, next < np ? 0 : -1) == 0)
			continue;
		T_ASSERT_EQ(read(g->cmd, &cmd, 1), 1);
		if (cmd == 's')
			break;
		{
			uint8_t *m2 = t_map_anon(8 * ps);
			struct fl_monitor_region r2 = pat_region(m2, 8 * ps, 0, 31);
			struct fl_monitor_client *c2 = attach(g->name, &r2, 1, FL_MONITOR_FAIL_LOUD,
							      FL_MONITOR_DONTFORK);

			T_ASSERT_PATTERN(m2, 0, 8 * ps, 31);
			fl_monitor_detach(c2, 0);
			munmap(m2, 8 * ps);
		}
		put_byte(g->ack, 'd');
	}
	T_ASSERT(next > 0);
	T_ASSERT_PATTERN(mem, PAT_OFF, next * ps, SEED);
	fl_monitor_detach(c, 0);
}

static int connect_to(const char *name)
{
	struct sockaddr_un sa;
	int salen = fl__mon_sockaddr(name, &sa), s;

	T_ASSERT(salen > 0);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	T_ASSERT_SYS(s);
	T_ASSERT_SYS(connect(s, (struct sockaddr *)&sa, (socklen_t)salen));
	return s;
}

/* Send @len bytes of @msg with @fd (-1: none); half-close after if @shut. Returns the socket. */
static int send_raw(const char *name, const void *msg, size_t len, int fd, bool shut)
{
	int s = connect_to(name);

	T_ASSERT_OK(fl__mon_send(s, msg, len, fd, fl__now_ms() + (uint64_t)t_ms(5000)));
	if (shut)
		T_ASSERT_SYS(shutdown(s, SHUT_WR));
	return s;
}

/* The end of the connection: EOF, or a reset if the monitor left some of our bytes unread. */
static void expect_closed(int s)
{
	char c;
	ssize_t n;

	t_wait_readable(s);
	n = read(s, &c, 1);
	if (n != 0 && !(n < 0 && errno == ECONNRESET))
		t_fail(__FILE__, __LINE__, "read after the refusal: %zd (%s)", n,
		       n < 0 ? strerror(errno) : "data");
	close(s);
}

/* The monitor answers ERROR @err and closes. */
static void expect_refusal(int s, int err)
{
	char msg[256];
	struct fl__mon_reply rep;
	void *buf = NULL;
	size_t len;

	T_ASSERT_OK(fl__mon_recv_msg(s, fl__now_ms() + (uint64_t)t_ms(10000), &buf, &len, NULL, msg,
				     sizeof(msg)));
	T_ASSERT_OK(fl__mon_decode_reply(buf, len, &rep, msg, sizeof(msg)));
	T_ASSERT_EQ(rep.type, FL_MONITOR_MSG_ERROR);
	if (rep.err != -err)
		t_fail(__FILE__, __LINE__, "refused with %s (%s), expected %s", strerror(-rep.err),
		       rep.msg, strerror(err));
	free(buf);
	expect_closed(s);
}

/* The monitor closes without a word (what a Firecracker refusal looks like). */
static void expect_silent_close(int s)
{
	expect_closed(s);
}

static void *hello_msg(const struct fl__mon_region *r, uint32_t n, uint32_t flags, uint32_t seq,
		       size_t *ret_len)
{
	struct fl__mon_hello h = {
		.version = FL_MONITOR_PROTO_VERSION,
		.flags = flags,
		.features = FL_FEAT_EVENT_REMOVE,
		.session = 42,
		.pid = (uint32_t)getpid(),
		.attach_seq = seq,
		.n = n,
		.r = (struct fl__mon_region *)r,
	};
	size_t len = fl__mon_encode_hello(&h, NULL, 0);
	void *buf = malloc(len);

	T_ASSERT(len && buf);
	fl__mon_encode_hello(&h, buf, len);
	*ret_len = len;
	return buf;
}

/* Recompute the checksum of a message changed on purpose (framing is what is tested). */
static void reseal(uint8_t *b, size_t len)
{
	static const uint8_t zero[4];
	uint32_t crc = fl__crc32c(0, b, 28);

	crc = fl__crc32c(crc, zero, 4);
	crc = fl__crc32c(crc, b + 32, len - 32);
	for (int i = 0; i < 4; i++)
		b[28 + i] = (uint8_t)(crc >> (8 * i));
}

static void bad_clients(struct srv *v, uint8_t *mem, struct fl_uffd *u, struct goodc *g, int ack)
{
	size_t ps = t_page_size(), len;
	struct fl__mon_region r[2] = {
		{ .addr = (uintptr_t)mem, .len = 4 * ps, .page_size = 4096,
		  .store = FL_MONITOR_STORE_PATTERN },
		{ .addr = (uintptr_t)mem + 2 * ps, .len = 4 * ps, .page_size = 4096,
		  .store = FL_MONITOR_STORE_PATTERN },
	};
	int fd = fl_uffd_fd(u), pipefd[2], s;
	uint8_t *m;

	/* A version from the future. */
	m = hello_msg(r, 1, 0, 0, &len);
	m[4] = 2;
	reseal(m, len);
	expect_refusal(send_raw(v->name, m, len, fd, false), EPROTONOSUPPORT);
	T_ASSERT_LOG("protocol version 2 not supported");
	free(m);
	/* No descriptor. */
	m = hello_msg(r, 1, 0, 0, &len);
	expect_refusal(send_raw(v->name, m, len, -1, false), EPROTO);
	T_ASSERT_LOG("no userfaultfd attached");
	/* Not a userfaultfd. */
	T_ASSERT_SYS(pipe2(pipefd, O_CLOEXEC));
	expect_refusal(send_raw(v->name, m, len, pipefd[0], false), EBADF);
	T_ASSERT_LOG("not a userfaultfd");
	close(pipefd[0]);
	close(pipefd[1]);
	/* Short: half a header, then the hang-up. */
	expect_refusal(send_raw(v->name, m, 20, fd, true), EPROTO);
	T_ASSERT_LOG("hang-up after 20 bytes of a header");
	/* A total length that lies: more announced than sent. */
	expect_refusal(send_raw(v->name, m, len - 8, fd, true), EPROTO);
	/* A corrupted byte: the checksum says so. */
	m[len - 1] ^= 1;
	expect_refusal(send_raw(v->name, m, len, fd, false), EPROTO);
	T_ASSERT_LOG("checksum");
	m[len - 1] ^= 1;
	/* A count that lies: more regions than bytes. */
	m[24] = 5;
	reseal(m, len);
	expect_refusal(send_raw(v->name, m, len, fd, false), EPROTO);
	/* Oversized: 2 MiB announced. */
	m[16] = 0;
	m[17] = 0;
	m[18] = 0x20;
	m[19] = 0;
	expect_refusal(send_raw(v->name, m, 32, fd, false), E2BIG);
	T_ASSERT_LOG("exceeds the limit");
	free(m);
	/* Overlapping regions. */
	m = hello_msg(r, 2, 0, 0, &len);
	expect_refusal(send_raw(v->name, m, len, fd, false), EINVAL);
	T_ASSERT_LOG("overlap");
	free(m);
	/* A region that wraps around the address space. */
	{
		struct fl__mon_region w = { .addr = 0xfffffffffffff000ull, .len = 0x2000,
					    .page_size = 4096, .store = FL_MONITOR_STORE_ZERO };

		m = hello_msg(&w, 1, 0, 0, &len);
		expect_refusal(send_raw(v->name, m, len, fd, false), EINVAL);
		T_ASSERT_LOG("wrap");
		free(m);
	}
	/* REATTACH without a sequence. */
	m = hello_msg(r, 1, FL_MONITOR_HELLO_REATTACH, 0, &len);
	expect_refusal(send_raw(v->name, m, len, fd, false), EINVAL);
	free(m);
	/* A CLAIM nobody waits for (a guessed token), and one that brings a descriptor. */
	{
		struct fl__mon_claim cl = { .session = 42, .token = 0x6e55 };
		uint8_t cm[FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN];
		size_t clen = fl__mon_encode_claim(&cl, cm, sizeof(cm));

		expect_refusal(send_raw(v->name, cm, clen, -1, false), ENOENT);
		T_ASSERT_LOG("no fork()ed child waits for session 000000000000002a");
		expect_refusal(send_raw(v->name, cm, clen, fd, false), EPROTO);
		T_ASSERT_LOG("a descriptor attached to a CLAIM");
	}
	/* Not our protocol at all. */
	expect_refusal(send_raw(v->name, "XYZW", 4, fd, false), EPROTO);
	T_ASSERT_LOG("neither a faultline HELLO nor Firecracker's JSON");
	/* Firecracker's handshake, but no memory file: logged, closed without a word. */
	{
		char json[256];
		int n = snprintf(json, sizeof(json), "[{\"base_host_virt_addr\":%lu,\"size\":%zu,"
				 "\"offset\":0,\"page_size\":4096}]",
				 (unsigned long)(uintptr_t)mem, 4 * ps);

		expect_silent_close(send_raw(v->name, json, (size_t)n, fd, false));
		T_ASSERT_LOG("no memory file");
		expect_silent_close(send_raw(v->name, "[{\"size\":-1}]", 13, fd, false));
		expect_silent_close(send_raw(v->name, "[1,2", 4, fd, true));
	}
	/*
	 * A trickle: 10 bytes, then nothing until the deadline. Meanwhile another
	 * client attaches and is served: the handshake blocks nobody.
	 */
	m = hello_msg(r, 1, 0, 0, &len);
	s = send_raw(v->name, m, 10, fd, false);
	put_byte(g->cmd, 'r');
	T_ASSERT_EQ(get_byte(ack), 'd');
	{
		struct pollfd pf = { .fd = s, .events = POLLIN };

		T_ASSERT_EQ(poll(&pf, 1, 0), 0);	/* still waiting for its deadline */
	}
	expect_refusal(s, ETIMEDOUT);
	T_ASSERT_LOG("no complete message in time");
	/* A message other than BYE while attached. */
	s = send_raw(v->name, m, len, fd, false);
	{
		char msg[256];
		struct fl__mon_reply rep;
		void *buf;
		size_t blen;

		T_ASSERT_OK(fl__mon_recv_msg(s, fl__now_ms() + (uint64_t)t_ms(5000), &buf, &blen, NULL, msg,
					     sizeof(msg)));
		T_ASSERT_OK(fl__mon_decode_reply(buf, blen, &rep, msg, sizeof(msg)));
		T_ASSERT_EQ(rep.type, FL_MONITOR_MSG_ACK);
		T_ASSERT_EQ(rep.session, 42);
		free(buf);
		/* Served: our own page comes from the monitor. */
		T_ASSERT_PATTERN(mem + ps, ps, ps, 0);
		T_ASSERT_OK(fl__mon_send(s, m, len, -1, fl__now_ms() + (uint64_t)t_ms(5000)));
		expect_refusal(s, EPROTO);
		T_ASSERT_LOG("only BYE is expected");
	}
	free(m);
}

TEST(monitor_server_malformed)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50, .handshake_ms = 2000 };
	struct srv v = { .pid = 0 };
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(8 * ps);
	struct fl_uffd *u = t_uffd_open(FL_FEAT_EVENT_REMOVE, true);
	struct goodc g;
	int cmd[2], ack[2];
	pid_t pid;

	abstract_name(v.name, sizeof(v.name), "bad");
	T_ASSERT_SYS(pipe2(cmd, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(ack, O_CLOEXEC));
	T_ASSERT_OK(fl_uffd_register(u, mem, 8 * ps, FL_REGISTER_MISSING, NULL));
	srv_start(&v, &o);
	g = (struct goodc){ .name = v.name, .cmd = cmd[0], .ack = ack[1] };
	{
		int keep[] = { cmd[0], ack[1] };

		pid = spawn(good_client, &g, keep, 2);
	}
	g.cmd = cmd[1];
	bad_clients(&v, mem, u, &g, ack[0]);
	/* The good client was served throughout, and still is. */
	put_byte(cmd[1], 'r');
	T_ASSERT_EQ(get_byte(ack[0]), 'd');
	put_byte(cmd[1], 's');
	reap_ok(pid, "good client");
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0);
	{
		struct fl_monitor_server_stats st = srv_stats(&v);

		T_ASSERT(st.refused >= 18);
		T_ASSERT_EQ(st.attached, 4);	/* the good one, its two fresh ones, ours */
	}
	srv_stop(&v);
	fl_uffd_close(u);
}

/* --------------------------------------------------------------- security */

struct secc {
	const char *name;
	uid_t uid;
	const char *ok_file, *secret_file;
	bool expect_refused;	/* the uid is not served at all */
};

static int attach_file(const char *name, uint8_t *mem, size_t len, const char *path)
{
	struct fl_monitor_region r = { .addr = mem, .len = len, .store = FL_MONITOR_STORE_FILE,
				       .path = path };
	struct fl_monitor_opts o = { .sz = sizeof(o), .flags = FL_MONITOR_DONTFORK };
	struct fl_monitor_client *c = NULL;
	int e = fl_monitor_attach(name, &r, 1, &o, &c);

	if (!e) {
		check_file(path, 0, mem, len);
		fl_monitor_detach(c, 0);
	}
	return e;
}

/* Another user: served only as allowed, and only with files it may read itself. */
static void other_user(void *arg)
{
	struct secc *s = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(8 * ps);
	struct fl_monitor_region r = pat_region(mem, 8 * ps, 0, SEED);
	struct fl_monitor_opts o = { .sz = sizeof(o), .flags = FL_MONITOR_DONTFORK };
	struct fl_monitor_client *c = NULL;

	T_ASSERT_SYS(setgroups(0, NULL));
	T_ASSERT_SYS(setgid(s->uid));
	T_ASSERT_SYS(setuid(s->uid));
	if (s->expect_refused) {
		T_ASSERT_ERR(fl_monitor_attach(s->name, &r, 1, &o, &c), EPERM);
		return;
	}
	T_ASSERT_OK(fl_monitor_attach(s->name, &r, 1, &o, &c));
	T_ASSERT_PATTERN(mem, 0, 8 * ps, SEED);
	fl_monitor_detach(c, 0);
	if (s->ok_file)
		T_ASSERT_OK(attach_file(s->name, t_map_anon(8 * ps), 8 * ps, s->ok_file));
	if (s->secret_file)
		T_ASSERT_ERR(attach_file(s->name, t_map_anon(8 * ps), 8 * ps, s->secret_file),
			     EACCES);
}

TEST(monitor_server_security)
{
	size_t ps = t_page_size();
	char dir[64], root[96], ok[128], secret[128], outside[128], esc[128], fifo[128];
	char dotdot[160], missing[128], link[128];
	uint32_t allowed[] = { 65534 };
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	struct secc sc;

	make_tmpdir(dir, sizeof(dir));
	snprintf(root, sizeof(root), "%s/root", dir);
	T_ASSERT_SYS(mkdir(root, 0755));
	snprintf(ok, sizeof(ok), "%s/ok.img", root);
	snprintf(secret, sizeof(secret), "%s/secret.img", root);
	snprintf(outside, sizeof(outside), "%s/outside.img", dir);
	snprintf(esc, sizeof(esc), "%s/escape", root);
	snprintf(fifo, sizeof(fifo), "%s/fifo", root);
	snprintf(dotdot, sizeof(dotdot), "%s/../outside.img", root);
	snprintf(missing, sizeof(missing), "%s/missing.img", root);
	snprintf(link, sizeof(link), "%s/self", root);
	pattern_file(ok, 8 * ps, 3, 0644);
	pattern_file(secret, 8 * ps, 4, 0600);
	pattern_file(outside, 8 * ps, 5, 0644);
	T_ASSERT_SYS(symlink(outside, esc));
	T_ASSERT_SYS(symlink("/proc/self/fd/0", link));
	T_ASSERT_SYS(mkfifo(fifo, 0644));

	/* Files beneath the store root only, other uids as allowed. */
	abstract_name(v.name, sizeof(v.name), "sec");
	o.store_root = root;
	o.allowed_uids = allowed;
	o.n_allowed_uids = 1;
	srv_start(&v, &o);
	T_ASSERT_OK(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, ok));
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, outside), EACCES);
	T_ASSERT_LOG("lies outside the store root");
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, dotdot), EXDEV);
	T_ASSERT_LOG("leads outside the store root");
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, esc), EXDEV);
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, link), EXDEV);
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, fifo), EINVAL);
	T_ASSERT_LOG("not a regular file");
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, missing), ENOENT);
	/* A file shorter than its region: refused rather than read as zeros. */
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(16 * ps), 16 * ps, ok), EINVAL);
	T_ASSERT_LOG("needs bytes up to");
	sc = (struct secc){ .name = v.name, .uid = 65534, .ok_file = ok, .secret_file = secret };
	reap_ok(spawn(other_user, &sc, NULL, 0), "allowed uid");
	sc = (struct secc){ .name = v.name, .uid = 65533, .expect_refused = true };
	reap_ok(spawn(other_user, &sc, NULL, 0), "other uid");
	T_ASSERT_LOG("runs as uid 65533, which this monitor does not serve");
	SRV_WAIT(&v, st.clients == 0 && st.connections == 0);
	srv_stop(&v);

	/* No files at all. */
	o = (struct fl_monitor_server_opts){ .flags = FL_MONITOR_SERVER_NO_FILES };
	srv_start(&v, &o);
	T_ASSERT_ERR(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, ok), EPERM);
	T_ASSERT_LOG("serves no files");
	srv_stop(&v);

	/* Any uid, files anywhere: a user still gets only what it may read itself. */
	o = (struct fl_monitor_server_opts){ .flags = FL_MONITOR_SERVER_ANY_UID };
	srv_start(&v, &o);
	T_ASSERT_OK(attach_file(v.name, t_map_anon(8 * ps), 8 * ps, secret));
	sc = (struct secc){ .name = v.name, .uid = 65534, .ok_file = outside,
			    .secret_file = secret };
	reap_ok(spawn(other_user, &sc, NULL, 0), "any uid");
	srv_stop(&v);

	unlink(ok);
	unlink(secret);
	unlink(outside);
	unlink(esc);
	unlink(link);
	unlink(fifo);
	rmdir(root);
	rmdir(dir);
}

/* -------------------------------------------------------- the command line */

/* Run `faultline monitor ARGS...` to its end; return its exit status and stderr. */
static int tool_run(char *const args[], char *err, size_t errlen)
{
	char path[PATH_MAX];
	char *argv[16] = { "faultline", "monitor" };
	int pfd[2], st, n = 2;
	size_t got = 0;
	ssize_t k;
	pid_t pid;

	t_tool_path(path, sizeof(path));
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	T_ASSERT_SYS(pipe(pfd));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0) {
		dup2(pfd[1], 2);
		dup2(pfd[1], 1);
		close(pfd[0]);
		execv(path, argv);
		_exit(127);
	}
	close(pfd[1]);
	while (got < errlen - 1 && (k = read(pfd[0], err + got, errlen - 1 - got)) > 0)
		got += (size_t)k;
	err[got] = '\0';
	close(pfd[0]);
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	T_ASSERT(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/*
 * --socket-group's lookup, on a file in /etc/group's format: the whole name
 * (not a prefix), the gid field (not another number), malformed lines
 * passed over; a number is taken as it is, without a lookup.
 */
TEST(monitor_server_tool_group_lookup)
{
	static const char text[] =
		"root:x:0:\n"
		"wheelx:x:10:\n"
		"wheel:x:11:alice,bob\n"
		"nogid:x::\n"
		"badgid:x:12a:\n"
		"toobig:x:4294967295:\n"
		"short:x\n"
		"+nisgroup\n"
		"\n"
		"x:13:14:\n"
		"nomembers:x:15\n"
		"last:*:16:carol";
	char path[] = "/tmp/fl-group-XXXXXX";
	uint32_t gid = 77;
	int fd = mkstemp(path);

	T_ASSERT_SYS(fd);
	T_ASSERT_EQ(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
	close(fd);
	T_ASSERT_OK(tool_group_file_gid(path, "root", &gid));
	T_ASSERT_EQ(gid, 0);
	T_ASSERT_OK(tool_group_file_gid(path, "wheel", &gid));
	T_ASSERT_EQ(gid, 11);
	T_ASSERT_OK(tool_group_file_gid(path, "wheelx", &gid));
	T_ASSERT_EQ(gid, 10);
	T_ASSERT_OK(tool_group_file_gid(path, "x", &gid));
	T_ASSERT_EQ(gid, 14);
	T_ASSERT_OK(tool_group_file_gid(path, "nomembers", &gid));
	T_ASSERT_EQ(gid, 15);
	T_ASSERT_OK(tool_group_file_gid(path, "last", &gid));	/* no newline at the end */
	T_ASSERT_EQ(gid, 16);
	gid = 77;
	T_ASSERT_ERR(tool_group_file_gid(path, "whee", &gid), ENOENT);
	T_ASSERT_ERR(tool_group_file_gid(path, "nogid", &gid), ENOENT);
	T_ASSERT_ERR(tool_group_file_gid(path, "badgid", &gid), ENOENT);
	T_ASSERT_ERR(tool_group_file_gid(path, "toobig", &gid), ENOENT);
	T_ASSERT_ERR(tool_group_file_gid(path, "short", &gid), ENOENT);
	T_ASSERT_ERR(tool_group_file_gid(path, "+nisgroup", &gid), ENOENT);
	T_ASSERT_ERR(tool_group_file_gid(path, "", &gid), EINVAL);
	T_ASSERT_ERR(tool_group_file_gid(path, "root:x", &gid), EINVAL);
	T_ASSERT_EQ(gid, 77);					/* untouched by a miss */
	unlink(path);
	T_ASSERT_ERR(tool_group_file_gid(path, "root", &gid), ENOENT);
	/* A number is a gid, whatever the files say; 2^32 - 1 is not one. */
	T_ASSERT_OK(tool_group_gid("4294967294", &gid));
	T_ASSERT_EQ(gid, 4294967294u);
	T_ASSERT_OK(tool_group_gid("0012", &gid));
	T_ASSERT_EQ(gid, 12);
	T_ASSERT_ERR(tool_group_gid("4294967295", &gid), ENOENT);
}

/* A group of /etc/group other than @not (read as a file: no name services here). */
static bool etc_group_other(gid_t not, char *name, size_t cap, gid_t *gid)
{
	FILE *f = fopen("/etc/group", "re");
	char line[1024];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		unsigned long v;
		char *end;

		if (!c1 || !c2 || c2[1] < '0' || c2[1] > '9' || (size_t)(c1 - line) >= cap)
			continue;
		v = strtoul(c2 + 1, &end, 10);
		if (*end != ':' || v == not || v >= 65534)
			continue;
		snprintf(name, cap, "%.*s", (int)(c1 - line), line);
		*gid = (gid_t)v;
		found = true;
	}
	fclose(f);
	return found;
}

/*
 * faultline monitor --socket-group, by name and by number: the socket gets
 * that group. A name not in /etc/group is a usage error (exit 2), never a
 * crash: a statically linked tool used to die in getgrnam_r (glibc's name
 * services load shared libraries a static program cannot use).
 */
TEST(monitor_server_tool_socket_group)
{
	char dir[64], sock[96], log[96], gname[64], gnum[16], out[4096];
	char *byname[] = { "--socket", sock, "--socket-mode", "0660", "--socket-group", gname,
			   NULL };
	char *bynum[] = { "--socket", sock, "--socket-mode", "0660", "--socket-group", gnum,
			  NULL };
	char *missing[] = { "--socket", sock, "--socket-group", "fl-no-such-group-here", NULL };
	struct stat st;
	gid_t gid;
	pid_t pid;
	int status;

	if (!etc_group_other(getegid(), gname, sizeof(gname), &gid))
		T_SKIP("no group in /etc/group but this process's own");
	snprintf(gnum, sizeof(gnum), "%u", (unsigned int)gid);
	make_tmpdir(dir, sizeof(dir));
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	snprintf(log, sizeof(log), "%s/log", dir);
	for (int k = 0; k < 2; k++) {
		pid = tool_start(k ? bynum : byname, log);
		T_ASSERT_SYS(stat(sock, &st));
		T_ASSERT_EQ(st.st_gid, gid);
		T_ASSERT_EQ(st.st_mode & 07777, 0660);
		T_ASSERT_SYS(kill(pid, SIGTERM));
		T_ASSERT_SYS(waitpid(pid, &status, 0));
		T_ASSERT(WIFEXITED(status));
		T_ASSERT_EQ(WEXITSTATUS(status), 0);
		T_ASSERT(access(sock, F_OK) < 0);
	}
	T_ASSERT_EQ(tool_run(missing, out, sizeof(out)), 2);
	T_ASSERT(strstr(out, "--socket-group: no group 'fl-no-such-group-here'"));
	T_ASSERT(access(sock, F_OK) < 0);
	unlink(log);
	T_ASSERT_SYS(rmdir(dir));
}

/* ------------------------------------------------------------ under load */

#define CROWD 500

/* Room for @n more descriptors in this process and the ones it forks, or skip. */
static void need_fds(rlim_t n)
{
	struct rlimit rl;

	T_ASSERT_SYS(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_cur >= n)
		return;
	if (rl.rlim_max < n)
		T_SKIP("RLIMIT_NOFILE allows %lu descriptors, this test needs %lu",
		       (unsigned long)rl.rlim_max, (unsigned long)n);
	rl.rlim_cur = n;
	T_ASSERT_SYS(setrlimit(RLIMIT_NOFILE, &rl));
}

struct crowd {
	const char *name;
	uid_t uid;		/* 0: the test's own */
	int ready;		/* gets 'c' once all are connected */
	int cmd;		/* 'g': check them and go */
};

/* CROWD connections that never say a word, held until told. */
static void crowd_main(void *arg)
{
	struct crowd *cr = arg;
	struct sockaddr_un sa;
	int salen = fl__mon_sockaddr(cr->name, &sa), *fds = calloc(CROWD, sizeof(int));
	/* A monitor that stopped accepting makes connect() wait: not forever. */
	struct timeval tv = { .tv_sec = 30 };

	T_ASSERT(salen > 0 && fds);
	if (cr->uid) {
		T_ASSERT_SYS(setgroups(0, NULL));
		T_ASSERT_SYS(setgid(cr->uid));
		T_ASSERT_SYS(setuid(cr->uid));
	}
	for (int i = 0; i < CROWD; i++) {
		fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		T_ASSERT_SYS(fds[i]);
		T_ASSERT_SYS(setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
		if (connect(fds[i], (struct sockaddr *)&sa, (socklen_t)salen) < 0)
			t_fail(__FILE__, __LINE__, "connection %d of %d: connect: %s", i + 1,
			       CROWD, strerror(errno));
	}
	put_byte(cr->ready, 'c');
	T_ASSERT_EQ(get_byte(cr->cmd), 'g');
	for (int i = 0; i < CROWD; i++) {
		if (cr->uid) {
			/* Not served: told so (without having said anything), then closed. */
			expect_refusal(fds[i], EPERM);
		} else {
			/* Still open and waiting: nothing came, not even a hang-up. */
			struct pollfd pf = { .fd = fds[i], .events = POLLIN };

			T_ASSERT_EQ(poll(&pf, 1, 0), 0);
			close(fds[i]);
		}
	}
	free(fds);
}

/* One real client among the crowd: served, every page right. */
static void crowd_client(void *arg)
{
	const char *name = arg;
	size_t ps = t_page_size(), np = 64;
	uint8_t *mem = t_map_anon(np * ps);
	struct fl_monitor_region r = pat_region(mem, np * ps, 0, SEED);
	/* Generous for slow machines and sanitizers; the old monitor never answers at all. */
	struct fl_monitor_opts o = { .sz = sizeof(o), .flags = FL_MONITOR_DONTFORK,
				     .ack_timeout_ms = 20000 };
	struct fl_monitor_client *c = NULL;

	T_ASSERT_OK(fl_monitor_attach(name, &r, 1, &o, &c));
	T_ASSERT_PATTERN(mem, 0, np * ps, SEED);
	fl_monitor_detach(c, 0);
}

/*
 * 500 connections of the monitor's own uid that never send their HELLO,
 * and 500 of a uid it does not serve: a real client still attaches and is
 * served while all of them are connected (the crowd checks, after the
 * client is done, that its connections are still open). The old monitor
 * gave each a handshake thread for the whole deadline: 64 of them filled
 * every slot and the backlog, and nobody else got in.
 */
TEST(monitor_server_silent_crowd)
{
	struct fl_monitor_server_opts o = { .probe_ms = 50, .handshake_ms = 120000 };
	struct srv v = { .pid = 0 };
	struct crowd cr[2];
	int ready[2][2], cmd[2][2];
	pid_t pid[2];

	need_fds(3 * CROWD + 256);
	abstract_name(v.name, sizeof(v.name), "crowd");
	srv_start(&v, &o);
	for (int i = 0; i < 2; i++) {
		int keep[2];

		T_ASSERT_SYS(pipe2(ready[i], O_CLOEXEC));
		T_ASSERT_SYS(pipe2(cmd[i], O_CLOEXEC));
		cr[i] = (struct crowd){ .name = v.name, .uid = i ? 65533 : 0,
					.ready = ready[i][1], .cmd = cmd[i][0] };
		keep[0] = ready[i][1];
		keep[1] = cmd[i][0];
		pid[i] = spawn(crowd_main, &cr[i], keep, 2);
		close(ready[i][1]);
		close(cmd[i][0]);
	}
	for (int i = 0; i < 2; i++)
		T_ASSERT_EQ(get_byte(ready[i][0]), 'c');
	SRV_WAIT(&v, st.connections >= CROWD && st.refused >= CROWD);
	reap_ok(spawn(crowd_client, v.name, NULL, 0), "the client among the crowd");
	for (int i = 0; i < 2; i++) {
		put_byte(cmd[i][1], 'g');
		reap_ok(pid[i], i ? "the refused crowd" : "the silent crowd");
		close(ready[i][0]);
		close(cmd[i][1]);
	}
	SRV_WAIT(&v, st.connections == 0 && st.clients == 0);
	{
		struct fl_monitor_server_stats st = srv_stats(&v);

		T_ASSERT_EQ(st.attached, 1);
		/* The refused crowd; the silent one hung up without a word, which is no refusal. */
		T_ASSERT_EQ(st.refused, CROWD);
	}
	T_ASSERT_LOG("runs as uid 65533, which this monitor does not serve");
	srv_stop(&v);
}

/* ---------------------------------------------------- descriptor ownership */

#define REFUSED_CLIENTS 8
#define REFUSED_TRIES 40

struct churn {
	int src;			/* what it duplicates */
	_Atomic bool stop;
	int held[64], nheld;
	unsigned long dups, stolen;	/* stolen: a number it held came back from dup() */
};

/*
 * Take descriptors as fast as possible (each the lowest number free) and
 * hold each a while. A number it holds can come back from dup() only if
 * someone else closed it: a double close elsewhere in the process.
 */
static void *churn_main(void *arg)
{
	struct churn *ch = arg;

	while (!atomic_load(&ch->stop)) {
		int fd = dup(ch->src);
		bool mine = false;

		T_ASSERT_SYS(fd);
		ch->dups++;
		for (int i = 0; i < ch->nheld; i++)
			mine |= ch->held[i] == fd;
		if (mine) {
			ch->stolen++;
			continue;	/* held already: the entry stands for it */
		}
		if (ch->nheld == (int)(sizeof(ch->held) / sizeof(ch->held[0]))) {
			close(ch->held[0]);
			memmove(ch->held, ch->held + 1, (size_t)(ch->nheld - 1) * sizeof(int));
			ch->nheld--;
		}
		ch->held[ch->nheld++] = fd;
	}
	for (int i = 0; i < ch->nheld; i++)
		close(ch->held[i]);
	return NULL;
}

struct refused {
	const char *name;
	int go;
};

/* A client of a uid the monitor does not serve, sending a HELLO with a descriptor, again and again. */
static void refused_main(void *arg)
{
	struct refused *rf = arg;
	struct fl__mon_region r = { .addr = 0x10000000, .len = 4 * 4096, .page_size = 4096,
				    .store = FL_MONITOR_STORE_PATTERN };
	size_t len;
	uint8_t *m = hello_msg(&r, 1, 0, 0, &len);
	int p[2];

	T_ASSERT_SYS(pipe2(p, O_CLOEXEC));
	T_ASSERT_SYS(setgroups(0, NULL));
	T_ASSERT_SYS(setgid(65533));
	T_ASSERT_SYS(setuid(65533));
	T_ASSERT_EQ(get_byte(rf->go), 'g');
	for (int i = 0; i < REFUSED_TRIES; i++) {
		int s = connect_to(rf->name);
		int e = fl__mon_send(s, m, len, p[0], fl__now_ms() + (uint64_t)t_ms(10000));

		/* Refused at once, it may be closed before the HELLO is out: that is fine. */
		T_ASSERT(e == 0 || e == -EPIPE);
		expect_refusal(s, EPERM);
	}
	free(m);
}

static void *run_server(void *arg)
{
	T_ASSERT_OK(fl_monitor_server_run(arg));
	return NULL;
}

/*
 * A server in this process refuses clients of another uid that send a
 * descriptor with their HELLO, while another thread takes descriptors
 * all the time: the numbers the refused clients' descriptors had are
 * taken by that thread at once, and the monitor must never close them
 * (the old one closed a refused client's descriptor twice).
 */
TEST(monitor_server_refused_fd_reuse)
{
	struct fl_monitor_server_opts o = { .sz = sizeof(o), .probe_ms = 50 };
	struct fl_monitor_server *srv = NULL;
	struct churn ch = { .src = -1 };
	struct refused rf;
	pid_t pid[REFUSED_CLIENTS];
	char name[108];
	int go[2];
	unsigned long th[2];

	abstract_name(name, sizeof(name), "reuse");
	o.socket_path = name;
	T_ASSERT_SYS(pipe2(go, O_CLOEXEC));
	T_ASSERT_OK(fl_monitor_server_create(&o, &srv));
	/* The clients exist before this process has threads. */
	rf = (struct refused){ .name = name, .go = go[0] };
	for (int i = 0; i < REFUSED_CLIENTS; i++)
		pid[i] = spawn(refused_main, &rf, &go[0], 1);
	close(go[0]);
	ch.src = eventfd(0, EFD_CLOEXEC);
	T_ASSERT_SYS(ch.src);
	th[0] = t_thread_start(run_server, srv);
	th[1] = t_thread_start(churn_main, &ch);
	for (int i = 0; i < REFUSED_CLIENTS; i++)
		put_byte(go[1], 'g');
	for (int i = 0; i < REFUSED_CLIENTS; i++)
		reap_ok(pid[i], "refused client");
	atomic_store(&ch.stop, true);
	t_thread_join(th[1]);
	T_ASSERT_OK(fl_monitor_server_stop(srv));
	t_thread_join(th[0]);
	{
		struct fl_monitor_server_stats st = { .sz = sizeof(st) };

		T_ASSERT_OK(fl_monitor_server_stats(srv, &st));
		T_ASSERT_EQ(st.refused, REFUSED_CLIENTS * REFUSED_TRIES);
	}
	fl_monitor_server_destroy(srv);
	T_ASSERT(ch.dups > 0);
	if (ch.stolen)
		t_fail(__FILE__, __LINE__, "%lu of %lu descriptors the test held were closed by "
		       "someone else", ch.stolen, ch.dups);
	close(ch.src);
	close(go[1]);
}

TEST(monitor_server_tool_usage)
{
	char out[8192];
	char *none[] = { NULL };
	char *help[] = { "--help", NULL };
	char *fc[] = { "--socket", "@x", "--firecracker", NULL };
	char *mem[] = { "--socket", "@x", "--mem-file", "/nonexistent", NULL };
	char *rel[] = { "--socket", "@x", "--store-root", "relative", NULL };
	char *thr[] = { "--socket", "@x", "--threads", "0", NULL };
	char *both[] = { "--socket", "@x", "--any-uid", "--allow-uid", "7", NULL };
	char *stray[] = { "--socket", "@x", "stray", NULL };
	char *nofile[] = { "--socket", "@fl-test-tool-usage", "--firecracker", "--mem-file",
			   "/nonexistent/guest.mem", NULL };

	T_ASSERT_EQ(tool_run(help, out, sizeof(out)), 0);
	T_ASSERT(strstr(out, "usage: faultline monitor --socket PATH"));
	T_ASSERT_EQ(tool_run(none, out, sizeof(out)), 2);
	T_ASSERT(strstr(out, "--socket PATH is required"));
	T_ASSERT_EQ(tool_run(fc, out, sizeof(out)), 2);
	T_ASSERT(strstr(out, "--firecracker needs --mem-file FILE or --snapshot FILE"));
	T_ASSERT_EQ(tool_run(mem, out, sizeof(out)), 2);
	T_ASSERT_EQ(tool_run(rel, out, sizeof(out)), 2);
	T_ASSERT_EQ(tool_run(thr, out, sizeof(out)), 2);
	T_ASSERT_EQ(tool_run(both, out, sizeof(out)), 2);
	T_ASSERT_EQ(tool_run(stray, out, sizeof(out)), 2);
	/* A memory file that is not there is a bad argument, named as such (not the socket). */
	T_ASSERT_EQ(tool_run(nofile, out, sizeof(out)), 2);
	T_ASSERT(strstr(out, "--mem-file /nonexistent/guest.mem: No such file or directory"));
	T_ASSERT(!strstr(out, "@fl-test-tool-usage"));
	/* Firecracker's options: which go together, and which do not. */
	{
		char *a[] = { "--socket", "@x", "--firecracker", "--mem-file", "/m", "--snapshot",
			      "/s", NULL };
		char *b[] = { "--socket", "@x", "--snapshot", "/s", NULL };
		char *c[] = { "--socket", "@x", "--record", "/tmp/vm.ws", NULL };
		char *d[] = { "--socket", "@x", "--prefetch", "/tmp/vm.ws", NULL };
		char *e[] = { "--socket", "@x", "--prefetch", "none", "--prefetch", "fixed", NULL };
		char *f[] = { "--socket", "@x", "--firecracker", "--mem-file", "/m", "--prefetch",
			      "/a.ws", "--prefetch", "/b.ws", NULL };
		char *g[] = { "--socket", "@x", "--firecracker", "--mem-file", "/m", "--record", "",
			      NULL };

		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--mem-file and --snapshot exclude each other"));
		T_ASSERT_EQ(tool_run(b, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--mem-file and --snapshot go with --firecracker"));
		T_ASSERT_EQ(tool_run(c, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "go with --firecracker"));
		T_ASSERT_EQ(tool_run(d, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "go with --firecracker"));
		T_ASSERT_EQ(tool_run(e, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "one policy and one working set at most"));
		T_ASSERT_EQ(tool_run(f, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "one policy and one working set at most"));
		T_ASSERT_EQ(tool_run(g, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--record needs a file name"));
	}
}

/* Lines of @out that contain @needle. */
static int count_lines(const char *out, const char *needle)
{
	int n = 0;

	for (const char *p = out; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* Every line of @out from the monitor's log starts with a local date and time. */
static void assert_dated(const char *out)
{
	int lines = 0;

	for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		int y, mo, d, h, mi, sec, ms, n = 0;

		if (sscanf(p, "faultline: %4d-%2d-%2d %2d:%2d:%2d.%3d %n", &y, &mo, &d, &h, &mi,
			   &sec, &ms, &n) == 7 && n) {
			T_ASSERT(y >= 2000 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31);
			lines++;
		}
	}
	T_ASSERT(lines > 0);
}

/* What a newcomer gets wrong: each named, exit 2, and never blamed on the socket. */
TEST(monitor_server_tool_errors)
{
	char dir[64], file[96], sock[96], out[8192], fdnum[16];
	struct fl_monitor_server_opts o = { .probe_ms = 50 };
	struct srv v = { .pid = 0 };
	int p[2];

	make_tmpdir(dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/regular", dir);
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	pattern_file(file, 4096, 1, 0644);
	/* A regular file where the socket goes: left alone, and not "Address already in use". */
	{
		char *a[] = { "--socket", file, NULL };

		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "exists and is not a socket"));
		T_ASSERT(!strstr(out, "in use"));
		T_ASSERT(access(file, F_OK) == 0);
	}
	/* A store root that is not there, or not a directory. */
	{
		char *a[] = { "--socket", sock, "--store-root", "/nonexistent/root", NULL };
		char *b[] = { "--socket", sock, "--store-root", file, NULL };

		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--store-root /nonexistent/root: No such file or directory"));
		T_ASSERT(!strstr(out, sock));
		T_ASSERT_EQ(tool_run(b, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "not a directory"));
	}
	/* Socket permissions: octal, a group that exists, a socket file. */
	{
		char *a[] = { "--socket", sock, "--socket-mode", "0999", NULL };
		char *b[] = { "--socket", sock, "--socket-group", "no-such-group-here", NULL };
		char *c[] = { "--socket", "@fl-test-tool-mode", "--socket-mode", "0660", NULL };

		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--socket-mode: '0999' is not an octal mode"));
		T_ASSERT_EQ(tool_run(b, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--socket-group: no group 'no-such-group-here'"));
		T_ASSERT_EQ(tool_run(c, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "need a socket file"));
	}
	/* --ready-fd: closed, read-only, or its reader gone: exit 2, never serve on. */
	{
		char *a[] = { "--socket", sock, "--ready-fd", "77", NULL };
		char *b[] = { "--socket", sock, "--ready-fd", fdnum, "-v", NULL };

		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--ready-fd 77: Bad file descriptor"));
		T_ASSERT_SYS(pipe(p));
		snprintf(fdnum, sizeof(fdnum), "%d", p[0]);
		T_ASSERT_EQ(tool_run(b, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "not open for writing"));
		snprintf(fdnum, sizeof(fdnum), "%d", p[1]);
		close(p[0]);	/* nobody will read the byte */
		T_ASSERT_EQ(tool_run(b, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "Broken pipe"));
		close(p[1]);
		/* It started, said so once, with the date, and removed its socket. */
		T_ASSERT_EQ(count_lines(out, "listening on"), 1);
		assert_dated(out);
		T_ASSERT(access(sock, F_OK) < 0);
	}
	/* Firecracker's snapshot and working sets: each mistake named, exit 2, nothing served. */
	{
		char ws[96], sub[96];
		char *a[] = { "--socket", sock, "--firecracker", "--snapshot", "/nonexistent/s.flsnap",
			      NULL };
		char *b[] = { "--socket", sock, "--firecracker", "--snapshot", file, NULL };
		char *c[] = { "--socket", sock, "--firecracker", "--mem-file", file, "--prefetch",
			      "/nonexistent/vm.ws", NULL };
		char *d[] = { "--socket", sock, "--firecracker", "--mem-file", file, "--record",
			      "/nonexistent/dir/vm.ws", NULL };
		char *e[] = { "--socket", sock, "--firecracker", "--mem-file", file, "--record",
			      sub, NULL };
		char *f[] = { "--socket", sock, "--firecracker", "--mem-file", file, "--record",
			      ws, NULL };
		char *g[] = { "--socket", sock, "--firecracker", "--mem-file", file, "--prefetch",
			      dir, NULL };

		snprintf(ws, sizeof(ws), "%s/vm.ws/", dir);
		snprintf(sub, sizeof(sub), "%s/sub", dir);
		T_ASSERT_SYS(mkdir(sub, 0755));
		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--snapshot /nonexistent/s.flsnap: No such file or directory"));
		T_ASSERT_EQ(tool_run(b, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "not a snapshot file, or a damaged one"));
		T_ASSERT_EQ(tool_run(c, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--prefetch /nonexistent/vm.ws: No such file or directory (and "
				     "not a policy"));
		T_ASSERT_EQ(tool_run(d, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "--record /nonexistent/dir/vm.ws: /nonexistent/dir: No such "
				     "file or directory"));
		T_ASSERT_EQ(tool_run(e, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "is a directory"));
		T_ASSERT_EQ(tool_run(f, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "names a directory, not a file"));
		T_ASSERT_EQ(tool_run(g, out, sizeof(out)), 2);
		T_ASSERT(strstr(out, "not a regular file"));
		T_ASSERT(!strstr(out, "listening on"));
		T_ASSERT(access(sock, F_OK) < 0);
		rmdir(sub);
	}
	/* Another monitor on the socket: one line says so, nothing repeats it. */
	snprintf(v.name, sizeof(v.name), "%s", sock);
	srv_start(&v, &o);
	{
		char *a[] = { "--socket", sock, NULL };

		T_ASSERT_EQ(tool_run(a, out, sizeof(out)), 1);
		T_ASSERT_EQ(count_lines(out, "another monitor listens there"), 1);
		T_ASSERT_EQ(count_lines(out, "\n"), 1);
		assert_dated(out);
	}
	srv_stop(&v);
	unlink(file);
	rmdir(dir);
}

/* A client of another uid attaches only if the socket lets it connect: --socket-mode. */
static void attach_as(void *arg)
{
	struct secc *s = arg;
	size_t ps = t_page_size();
	uint8_t *mem = t_map_anon(8 * ps);
	struct fl_monitor_region r = pat_region(mem, 8 * ps, 0, SEED);
	struct fl_monitor_opts o = { .sz = sizeof(o), .flags = FL_MONITOR_DONTFORK };
	struct fl_monitor_client *c = NULL;

	T_ASSERT_SYS(setgroups(0, NULL));
	T_ASSERT_SYS(setgid(s->uid));
	T_ASSERT_SYS(setuid(s->uid));
	if (s->expect_refused) {
		T_ASSERT_ERR(fl_monitor_attach(s->name, &r, 1, &o, &c), EACCES);
		return;
	}
	T_ASSERT_OK(fl_monitor_attach(s->name, &r, 1, &o, &c));
	T_ASSERT_PATTERN(mem, 0, 8 * ps, SEED);
	fl_monitor_detach(c, 0);
}

TEST(monitor_server_socket_mode)
{
	uint32_t allowed[] = { 65534 };
	struct fl_monitor_server_opts o = { .probe_ms = 50, .allowed_uids = allowed,
					    .n_allowed_uids = 1 };
	struct fl_monitor_server *bad = NULL;
	struct srv v = { .pid = 0 };
	struct secc sc;
	struct stat st;
	char dir[64];

	make_tmpdir(dir, sizeof(dir));
	umask(022);
	/* The umask's mode: uid 65534 is allowed, but cannot even connect. */
	snprintf(v.name, sizeof(v.name), "%s/plain", dir);
	srv_start(&v, &o);
	T_ASSERT_SYS(stat(v.name, &st));
	T_ASSERT_EQ(st.st_mode & 07777, 0755);
	sc = (struct secc){ .name = v.name, .uid = 65534, .expect_refused = true };
	reap_ok(spawn(attach_as, &sc, NULL, 0), "uid 65534, socket 0755");
	srv_stop(&v);
	/* 0660 and its group: it connects, and is served. */
	snprintf(v.name, sizeof(v.name), "%s/shared", dir);
	o.socket_mode = 0660;
	o.socket_gid = 65534;
	o.flags = FL_MONITOR_SERVER_SOCKET_GROUP;
	srv_start(&v, &o);
	T_ASSERT_SYS(stat(v.name, &st));
	T_ASSERT_EQ(st.st_mode & 07777, 0660);
	T_ASSERT_EQ(st.st_gid, 65534);
	sc = (struct secc){ .name = v.name, .uid = 65534 };
	reap_ok(spawn(attach_as, &sc, NULL, 0), "uid 65534, socket 0660 of its group");
	srv_stop(&v);
	T_ASSERT(access(v.name, F_OK) < 0);
	/* Bad values are refused, and say why. */
	o = (struct fl_monitor_server_opts){ .sz = sizeof(o), .socket_path = "@fl-test-mode",
					     .socket_mode = 0600 };
	T_ASSERT_ERR(fl_monitor_server_create(&o, &bad), EINVAL);
	o.socket_path = v.name;
	o.socket_mode = 010000;
	T_ASSERT_ERR(fl_monitor_server_create(&o, &bad), EINVAL);
	T_ASSERT(bad == NULL);
	rmdir(dir);
}


