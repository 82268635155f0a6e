/* SPDX-License-Identifier: MIT */
/* faultline migrate: the demo, usage errors, and two hosts made of two network namespaces. */
#include <fcntl.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"
#include "certs.h"

#define OUT_MAX (64u << 10)

struct proc {
	pid_t pid;
	int out, err;			/* pipes of its stdout and stderr */
	int pidfd;
};

/* Start @argv (NULL-terminated) with stdout and stderr captured. */
static void start(struct proc *p, char *const argv[])
{
	int out[2], err[2];

	T_ASSERT_SYS(pipe2(out, O_CLOEXEC));
	T_ASSERT_SYS(pipe2(err, O_CLOEXEC));
	p->pid = fork();
	T_ASSERT_SYS(p->pid);
	if (!p->pid) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	p->out = out[0];
	p->err = err[0];
	p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	if (p->pidfd < 0 && errno == ENOSYS) {
		/* Before 5.3, or under valgrind 3.19, which does not know the call. */
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		T_SKIP("pidfd_open(2) is not available here");
	}
	T_ASSERT_SYS(p->pidfd);
}

/*
 * Collect @n processes' output and exit status within @ms: 0..255 exit
 * codes, 128 + signal, or -1 if it had to be killed at the deadline.
 */
static void finish_all(struct proc *ps, int n, int ms, char (*out)[OUT_MAX],
		       char (*err)[OUT_MAX], int *status)
{
	size_t got_out[4] = { 0 }, got_err[4] = { 0 };
	bool open_out[4], open_err[4], exited[4];

	T_ASSERT(n <= 4);
	for (int i = 0; i < n; i++) {
		open_out[i] = open_err[i] = true;
		exited[i] = false;
		status[i] = -1;
	}
	for (;;) {
		struct pollfd pf[12];
		int k = 0, map[12], what[12], r;

		for (int i = 0; i < n; i++) {
			if (open_out[i]) {
				pf[k] = (struct pollfd){ .fd = ps[i].out, .events = POLLIN };
				map[k] = i;
				what[k++] = 0;
			}
			if (open_err[i]) {
				pf[k] = (struct pollfd){ .fd = ps[i].err, .events = POLLIN };
				map[k] = i;
				what[k++] = 1;
			}
			if (!exited[i]) {
				pf[k] = (struct pollfd){ .fd = ps[i].pidfd, .events = POLLIN };
				map[k] = i;
				what[k++] = 2;
			}
		}
		if (!k)
			break;
		r = poll(pf, (nfds_t)k, ms);
		T_ASSERT_SYS(r);
		if (!r) {
			/* The deadline: kill what is left, and fail below through its status. */
			for (int i = 0; i < n; i++)
				if (!exited[i])
					kill(ps[i].pid, SIGKILL);
			for (int i = 0; i < n; i++)
				if (!exited[i])
					waitpid(ps[i].pid, NULL, 0);
			break;
		}
		for (int j = 0; j < k; j++) {
			int i = map[j];

			if (!pf[j].revents)
				continue;
			if (what[j] == 2) {
				int st;

				T_ASSERT_SYS(waitpid(ps[i].pid, &st, 0));
				status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
				exited[i] = true;
			} else {
				char *buf = what[j] ? err[i] : out[i];
				size_t *got = what[j] ? &got_err[i] : &got_out[i];
				ssize_t m = read(pf[j].fd, buf + *got, OUT_MAX - 1 - *got);

				if (m <= 0) {
					if (what[j])
						open_err[i] = false;
					else
						open_out[i] = false;
				} else {
					*got += (size_t)m;
				}
				buf[*got] = 0;
			}
		}
	}
	for (int i = 0; i < n; i++) {
		close(ps[i].out);
		close(ps[i].err);
		close(ps[i].pidfd);
	}
}

static int run_one(char *const argv[], int ms, char *out, char *err)
{
	static char o[1][OUT_MAX], e[1][OUT_MAX];
	struct proc p;
	int st;

	start(&p, argv);
	finish_all(&p, 1, ms, o, e, &st);
	memcpy(out, o[0], OUT_MAX);
	memcpy(err, e[0], OUT_MAX);
	return st;
}

static char out_buf[OUT_MAX], err_buf[OUT_MAX];

TEST(migrate_tool_usage_errors)
{
	static const char *const cases[][8] = {
		{ "migrate", NULL },
		{ "migrate", "--demo", "--listen", "7000", NULL },
		{ "migrate", "--to", "nohostport", NULL },
		{ "migrate", "--to", "host:99999", NULL },
		{ "migrate", "--listen", "0", NULL },
		{ "migrate", "--demo", "--size", "1K", NULL },
		{ "migrate", "--demo", "--bind", "127.0.0.1", NULL },
		{ "migrate", "--demo", "--precopy", "x", NULL },
		{ "migrate", "--demo", "extra", NULL },
		{ "migrate", "--to", "host:7000", NULL },
		{ "migrate", "--demo", "--tls-ca", "ca.crt", NULL },
		{ "migrate", "--listen", "7000", "--tls-ca", "ca.crt", NULL },
		{ "migrate", "--to", "host:7000", "--tls-cert", "c.crt", "--tls-key", NULL },
	};
	char tool[PATH_MAX];

	t_tool_path(tool, sizeof(tool));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[8] = { tool };
		int st;

		for (int k = 0; cases[i][k]; k++)
			argv[k + 1] = (char *)cases[i][k];
		st = run_one(argv, t_ms(10000), out_buf, err_buf);
		if (st != 2 || !strstr(err_buf, "faultline: migrate: "))
			t_fail(__FILE__, __LINE__, "case %zu: status %d, stderr '%s'", i, st,
			       err_buf);
	}
	{
		char *argv[] = { tool, "migrate", "--help", NULL };

		T_ASSERT_EQ(run_one(argv, t_ms(10000), out_buf, err_buf), 0);
		T_ASSERT(strstr(out_buf, "--listen PORT"));
	}
}

/* The demo: a key-value store migrates between two processes while serving, and verifies. */
TEST(migrate_tool_demo)
{
	char tool[PATH_MAX];
	char *argv[] = { tool, "migrate", "--demo", "--size", "16M", "--serve", "0.1",
			 "--seconds", "0.2", "--precopy", "1", "--json", NULL };
	char *text[] = { tool, "migrate", "--demo", "--size", "8M", "--serve", "0.05",
			 "--seconds", "0.05", NULL };
	char *plain[] = { tool, "migrate", "--demo", "--size", "8M", "--serve", "0.05",
			  "--seconds", "0.05", "--insecure", NULL };
	int st;

	t_tool_path(tool, sizeof(tool));
	st = run_one(argv, t_ms(60000), out_buf, err_buf);
	if (st != 0)
		t_fail(__FILE__, __LINE__, "status %d, stderr: %s", st, err_buf);
	T_ASSERT(strstr(out_buf, "\"mode\":\"demo\""));
	T_ASSERT(strstr(out_buf, "\"ok\":true"));
	T_ASSERT(strstr(out_buf, "\"downtime_ns\":"));
	st = run_one(text, t_ms(60000), out_buf, err_buf);
	if (st != 0)
		t_fail(__FILE__, __LINE__, "status %d, stderr: %s", st, err_buf);
	T_ASSERT(strstr(out_buf, "downtime"));
	T_ASSERT(strstr(out_buf, "checksums match"));
	/* The demo makes a key of its own: TLS; --insecure is plain TCP, and says so. */
	T_ASSERT(strstr(out_buf, "(TLS 1.3, pre-shared key)"));
	st = run_one(plain, t_ms(60000), out_buf, err_buf);
	if (st != 0)
		t_fail(__FILE__, __LINE__, "status %d, stderr: %s", st, err_buf);
	T_ASSERT(strstr(out_buf, "(plain TCP, insecure)"));
	T_ASSERT(strstr(out_buf, "checksums match"));
}

/* ------------------------------------------------------------ two namespaces */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct netns {
	char src[32], dst[32];		/* namespace names */
	char vs[16], vd[16];		/* veth ends */
	char src_ip[24], dst_ip[24];
};

static void netns_cleanup(const struct netns *n)
{
	/* Deleting a namespace deletes the veth end inside it, and so the pair. */
	sh("ip netns del %s 2>/dev/null", n->src);
	sh("ip netns del %s 2>/dev/null", n->dst);
	sh("ip link del %s 2>/dev/null", n->vs);
}

static void netns_names(struct netns *n)
{
	int pid = (int)getpid();

	snprintf(n->src, sizeof(n->src), "fl-mig-%d-src", pid);
	snprintf(n->dst, sizeof(n->dst), "fl-mig-%d-dst", pid);
	snprintf(n->vs, sizeof(n->vs), "flm%ds", pid % 1000000);
	snprintf(n->vd, sizeof(n->vd), "flm%dd", pid % 1000000);
	snprintf(n->src_ip, sizeof(n->src_ip), "10.%d.%d.2", 200 + pid % 50, pid / 50 % 256);
	snprintf(n->dst_ip, sizeof(n->dst_ip), "10.%d.%d.1", 200 + pid % 50, pid / 50 % 256);
}

/* The two hosts: namespaces with unique names, joined by a veth pair, 10.x addresses. */
static int netns_setup(struct netns *n)
{
	if (sh("ip netns add %s", n->src) || sh("ip netns add %s", n->dst) ||
	    sh("ip link add %s type veth peer name %s", n->vs, n->vd) ||
	    sh("ip link set %s netns %s", n->vs, n->src) ||
	    sh("ip link set %s netns %s", n->vd, n->dst) ||
	    sh("ip -n %s addr add %s/24 dev %s", n->src, n->src_ip, n->vs) ||
	    sh("ip -n %s addr add %s/24 dev %s", n->dst, n->dst_ip, n->vd) ||
	    sh("ip -n %s link set lo up", n->src) || sh("ip -n %s link set lo up", n->dst) ||
	    sh("ip -n %s link set %s up", n->src, n->vs) ||
	    sh("ip -n %s link set %s up", n->dst, n->vd))
		return -1;
	return 0;
}

/* The worker: both sides, in their namespaces, with a shared key; 0 if all went well. */
static int netns_migrate(const struct netns *n, const char *tool, char (*out)[OUT_MAX],
			 char (*err)[OUT_MAX])
{
	char key[] = "/tmp/fl-mig-key-XXXXXX", dst_at[64];
	uint8_t bytes[32];
	struct proc ps[2];
	int st[2], fd;

	fd = mkstemp(key);
	if (fd < 0 || getrandom(bytes, sizeof(bytes), 0) != sizeof(bytes) ||
	    write(fd, bytes, sizeof(bytes)) != sizeof(bytes))
		return -1;
	close(fd);
	snprintf(dst_at, sizeof(dst_at), "%s:7743", n->dst_ip);
	{
		char *argv[] = { "ip", "netns", "exec", (char *)n->dst, (char *)tool, "migrate",
				 "--listen", "7743", "--bind", (char *)n->dst_ip, "--key", key,
				 "--seconds", "0.3", "--json", NULL };

		start(&ps[0], argv);
	}
	{
		/* The source retries while the destination is not listening yet. */
		char *argv[] = { "ip", "netns", "exec", (char *)n->src, (char *)tool, "migrate",
				 "--to", dst_at, "--key", key, "--size", "32M", "--serve", "0.1",
				 "--precopy", "1", "--json", NULL };

		start(&ps[1], argv);
	}
	finish_all(ps, 2, t_ms(60000), out, err, st);
	unlink(key);
	if (st[0] || st[1]) {
		fprintf(stderr, "    destination: status %d\n%s\n    source: status %d\n%s\n",
			st[0], err[0], st[1], err[1]);
		return -1;
	}
	if (!strstr(out[0], "\"ok\":true") || !strstr(out[1], "\"phase\":\"done\"")) {
		fprintf(stderr, "    destination: %s\n    source: %s\n", out[0], out[1]);
		return -1;
	}
	return 0;
}

/*
 * A guardian process, in a session of its own (the runner kills the test's
 * process group), removes the namespaces once the test is gone, however it
 * went: a failed assertion, the runner's timeout, or the end of the test.
 */
static pid_t guard(const struct netns *n, int *ret_fd)
{
	int p[2];
	pid_t pid;
	char c;

	T_ASSERT_SYS(pipe2(p, O_CLOEXEC));
	pid = fork();
	T_ASSERT_SYS(pid);
	if (!pid) {
		setsid();
		close(p[1]);
		while (read(p[0], &c, 1) > 0)
			;
		netns_cleanup(n);
		_exit(0);
	}
	close(p[0]);
	*ret_fd = p[1];
	return pid;
}

TEST(migrate_two_namespaces)
{
	static char out[2][OUT_MAX], err[2][OUT_MAX];
	char tool[PATH_MAX];
	struct netns n;
	pid_t guardian;
	int r, fd;

	t_tool_path(tool, sizeof(tool));
	if (sh("ip netns list >/dev/null 2>&1"))
		T_SKIP("'ip netns' is not available here (iproute2 missing or no netns support)");
	memset(&n, 0, sizeof(n));
	netns_names(&n);
	guardian = guard(&n, &fd);
	r = netns_setup(&n);
	if (!r)
		r = netns_migrate(&n, tool, out, err);
	close(fd);
	T_ASSERT_SYS(waitpid(guardian, NULL, 0));
	/* Nothing of ours is left behind. */
	T_ASSERT(sh("ip netns list | grep -q 'fl-mig-%d-'", (int)getpid()) != 0);
	T_ASSERT_EQ(r, 0);
}

/* ------------------------------------------------------------ dead peers, first use */

/* A TCP port nobody listens on just now (the kernel's pick, released). */
static uint16_t free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	T_ASSERT_SYS(fd);
	T_ASSERT_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	T_ASSERT_SYS(getsockname(fd, (struct sockaddr *)&sa, &len));
	close(fd);
	return ntohs(sa.sin_port);
}

/* A key file of @n random bytes; @path receives its name (unlink it). */
static void key_file(char *path, size_t cap, size_t n)
{
	uint8_t bytes[64];
	int fd;

	T_ASSERT(n <= sizeof(bytes));
	snprintf(path, cap, "/tmp/fl-mig-key-XXXXXX");
	fd = mkstemp(path);
	T_ASSERT_SYS(fd);
	T_ASSERT(getrandom(bytes, sizeof(bytes), 0) == sizeof(bytes));
	T_ASSERT(write(fd, bytes, n) == (ssize_t)n);
	close(fd);
}

/* Read @p's stdout until a line holds @text; false if it ended, or WAIT ms passed, first. */
static bool wait_output(struct proc *p, const char *text, int ms)
{
	static char buf[OUT_MAX];
	size_t got = 0;

	buf[0] = 0;
	while (!strstr(buf, text)) {
		struct pollfd pf = { .fd = p->out, .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, ms) <= 0)
			return false;
		n = read(p->out, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			return false;
		got += (size_t)n;
		buf[got] = 0;
	}
	return true;
}

/*
 * A migration between two tools, one of which is then killed once the
 * destination runs (@kill_dest: the destination, else the source): the
 * survivor gives up after its --resume-timeout, exits 1, and says why.
 */
static void peer_dies(bool kill_dest)
{
	static char out[2][OUT_MAX], err[2][OUT_MAX];
	char tool[PATH_MAX], key[64], port[8], to[32];
	struct proc ps[2];
	int st[2], victim = kill_dest ? 0 : 1, survivor = 1 - victim;

	t_tool_path(tool, sizeof(tool));
	key_file(key, sizeof(key), 32);
	snprintf(port, sizeof(port), "%u", free_port());
	snprintf(to, sizeof(to), "127.0.0.1:%s", port);
	{
		char *argv[] = { tool, "migrate", "--listen", port, "--bind", "127.0.0.1",
				 "--key", key, "--resume-timeout", "1", "--seconds", "0", NULL };

		start(&ps[0], argv);
	}
	{
		/* 1 MiB/s for 64 MiB: still under way when one side dies. */
		char *argv[] = { tool, "migrate", "--to", to, "--key", key, "--size", "64M",
				 "--bandwidth", "1M", "--serve", "0", "--resume-timeout", "1",
				 NULL };

		start(&ps[1], argv);
	}
	if (!wait_output(&ps[0], "resumed", t_ms(60000))) {
		kill(ps[0].pid, SIGKILL);
		kill(ps[1].pid, SIGKILL);
		finish_all(ps, 2, t_ms(10000), out, err, st);
		unlink(key);
		t_fail(__FILE__, __LINE__, "the destination never resumed:\n%s\n%s", err[0],
		       err[1]);
	}
	T_ASSERT_SYS(kill(ps[victim].pid, SIGKILL));
	/* Bounded: the resume timeout is 1 s; a tool that spins instead is killed at 60 s. */
	finish_all(ps, 2, t_ms(60000), out, err, st);
	unlink(key);
	T_ASSERT_EQ(st[victim], 128 + SIGKILL);
	if (st[survivor] != 1 || !strstr(err[survivor], "did not come back within 1000 ms"))
		t_fail(__FILE__, __LINE__, "%s: status %d, stderr:\n%s",
		       kill_dest ? "source" : "destination", st[survivor], err[survivor]);
}

TEST(migrate_tool_source_gone)
{
	peer_dies(false);
}

TEST(migrate_tool_dest_gone)
{
	peer_dies(true);
}

/*
 * Two tools with certificates made now: a destination that shows its
 * certificate and requires the source's; a source that expects another
 * name is refused with OpenSSL's reason and exits 1, without ending the
 * destination's wait; the right one migrates, and both verify.
 */
TEST(migrate_tool_x509)
{
	static char out[1][OUT_MAX], err[1][OUT_MAX];
	char tool[PATH_MAX], dir[64], ca[128], scrt[128], skey[128], ccrt[128], ckey[128];
	char port[8], to[32];
	struct proc p;
	bool up;
	int st;

	t_tool_path(tool, sizeof(tool));
	t_certs_dir(dir, sizeof(dir));
	t_certs_make(dir, "ca", NULL, NULL);
	t_certs_make(dir, "server", "ca", "server.test");
	t_certs_make(dir, "client", "ca", "client.test");
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(scrt, sizeof(scrt), "%s/server.crt", dir);
	snprintf(skey, sizeof(skey), "%s/server.key", dir);
	snprintf(ccrt, sizeof(ccrt), "%s/client.crt", dir);
	snprintf(ckey, sizeof(ckey), "%s/client.key", dir);
	snprintf(port, sizeof(port), "%u", free_port());
	snprintf(to, sizeof(to), "127.0.0.1:%s", port);
	{
		char *argv[] = { tool, "migrate", "--listen", port, "--bind", "127.0.0.1",
				 "--tls-cert", scrt, "--tls-key", skey, "--tls-ca", ca,
				 "--verify-peer", "--seconds", "0", NULL };

		start(&p, argv);
	}
	up = wait_output(&p, "(TLS 1.3, X.509)", t_ms(10000));
	if (up) {
		char *argv[] = { tool, "migrate", "--to", to, "--tls-ca", ca, "--tls-name",
				 "elsewhere.test", "--tls-cert", ccrt, "--tls-key", ckey,
				 "--size", "4M", "--serve", "0", NULL };

		st = run_one(argv, t_ms(30000), out_buf, err_buf);
		if (st != 1 || !strstr(err_buf, "hostname mismatch"))
			t_fail(__FILE__, __LINE__, "wrong name: status %d, stderr '%s'", st,
			       err_buf);
	}
	if (up) {
		char *argv[] = { tool, "migrate", "--to", to, "--tls-ca", ca, "--tls-name",
				 "server.test", "--tls-cert", ccrt, "--tls-key", ckey,
				 "--size", "4M", "--serve", "0", NULL };

		st = run_one(argv, t_ms(60000), out_buf, err_buf);
		if (st != 0)
			t_fail(__FILE__, __LINE__, "source: status %d, stderr '%s'", st, err_buf);
	} else {
		kill(p.pid, SIGKILL);
	}
	finish_all(&p, 1, t_ms(60000), out, err, &st);
	t_certs_cleanup(dir);
	T_ASSERT(up);
	if (st != 0 || !strstr(out[0], "checksums match") ||
	    !strstr(err[0], "refused the connection"))
		t_fail(__FILE__, __LINE__, "destination: status %d, stdout '%s', stderr '%s'", st,
		       out[0], err[0]);
}

/* How many times @needle occurs in @hay. */
static int occurrences(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* What a newcomer meets first: each mistake named once, with the right exit status. */
TEST(migrate_tool_first_use)
{
	char tool[PATH_MAX], empty[64], shortk[64], port[8];
	struct addrinfo *ai, hints = { .ai_socktype = SOCK_STREAM };
	int st, g;

	t_tool_path(tool, sizeof(tool));
	snprintf(port, sizeof(port), "%u", free_port());
	{
		/* Nobody there: the reason once, not "Connection refused: Connection refused". */
		char *argv[] = { tool, "migrate", "--to", "127.0.0.1:1", "--size", "2M", "--serve", "0", "--timeout", "0.5",
				 "--insecure", NULL };

		st = run_one(argv, t_ms(30000), out_buf, err_buf);
		if (st != 1 || occurrences(err_buf, "Connection refused") != 1 ||
		    !strstr(err_buf, "127.0.0.1 port 1"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
	}
	g = getaddrinfo("no-such-host.invalid", "7000", &hints, &ai);
	if (!g)
		freeaddrinfo(ai);
	if (g == EAI_NONAME) {
		/* A host that does not exist is named as such, at once (no retries). */
		char *argv[] = { tool, "migrate", "--to", "no-such-host.invalid:7000", "--insecure",
				 NULL };

		st = run_one(argv, t_ms(30000), out_buf, err_buf);
		if (st != 1 || !strstr(err_buf, "no host named 'no-such-host.invalid'") ||
		    strstr(err_buf, "Cannot assign requested address"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
	}
	key_file(empty, sizeof(empty), 0);
	key_file(shortk, sizeof(shortk), 6);
	{
		char *argv[] = { tool, "migrate", "--to", "127.0.0.1:1", "--size", "2M", "--serve", "0", "--timeout", "0.5",
				 "--key", empty, NULL };

		st = run_one(argv, t_ms(30000), out_buf, err_buf);
		if (st != 2 || !strstr(err_buf, "is empty") || strstr(err_buf, "No data"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
	}
	{
		char *argv[] = { tool, "migrate", "--to", "127.0.0.1:1", "--size", "2M", "--serve", "0", "--timeout", "0.5",
				 "--key", shortk, NULL };

		st = run_one(argv, t_ms(30000), out_buf, err_buf);
		if (st != 2 || !strstr(err_buf, "holds only 6 bytes; a key needs at least 16"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
	}
	unlink(empty);
	unlink(shortk);
	{
		/* Neither a key nor certificates, on either side: refused unless --insecure. */
		char *argv[] = { tool, "migrate", "--listen", port, "--bind", "127.0.0.1", NULL };
		char *to[] = { tool, "migrate", "--to", "127.0.0.1:1", NULL };

		st = run_one(argv, t_ms(10000), out_buf, err_buf);
		if (st != 2 || !strstr(err_buf, "--insecure for plain TCP"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
		st = run_one(to, t_ms(10000), out_buf, err_buf);
		if (st != 2 || !strstr(err_buf, "--insecure for plain TCP"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
	}
	{
		char *argv[] = { tool, "migrate", "--to", "127.0.0.1:1", "--insecure", "--tls-ca",
				 "ca.crt", NULL };

		st = run_one(argv, t_ms(10000), out_buf, err_buf);
		if (st != 2 || !strstr(err_buf, "exclude each other"))
			t_fail(__FILE__, __LINE__, "status %d, stderr '%s'", st, err_buf);
	}
	{
		/* --insecure, no --bind: loopback only, and it says so. */
		static char out[1][OUT_MAX], err[1][OUT_MAX];
		char *argv[] = { tool, "migrate", "--listen", port, "--insecure", NULL }, want[64];
		struct proc p;
		bool seen;

		snprintf(want, sizeof(want), "listening on 127.0.0.1 port %s", port);
		start(&p, argv);
		seen = wait_output(&p, want, t_ms(10000));
		kill(p.pid, SIGKILL);
		finish_all(&p, 1, t_ms(10000), out, err, &st);
		if (!seen || !strstr(err[0], "--insecure: listening on 127.0.0.1 only"))
			t_fail(__FILE__, __LINE__, "stdout lacks '%s'; stderr '%s'", want, err[0]);
	}
}
