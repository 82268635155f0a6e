/* SPDX-License-Identifier: MIT */
/* Real Redis servers for tests and benchmarks: start, wait, query, kill, clean up. */
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redisd.h"

#ifdef FL_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A pause between two polls of a server (the deadline bounds the wait, not this). */
static void poll_pause(void)
{
	struct timespec ts = { 0, 20 * 1000000L };

	nanosleep(&ts, NULL);
}

static void set_err(struct redisd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct redisd *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
}

bool redisd_available(void)
{
#ifdef FL_HAVE_HIREDIS
	return true;
#else
	return false;
#endif
}

bool redisd_find(const char *prog, char *path, size_t len)
{
	const char *env = getenv("PATH");
	char dirs[4096];
	char *save = NULL;

	snprintf(dirs, sizeof(dirs), "%s:/usr/bin:/usr/sbin:/usr/local/bin", env ? env : "");
	for (char *t = strtok_r(dirs, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
		snprintf(path, len, "%s/%s", t, prog);
		if (*t && access(path, X_OK) == 0)
			return true;
	}
	return false;
}

/* Free loopback ports: bound all at once (so they differ), then released. */
static int free_ports(int *ports, unsigned int n)
{
	int fds[3 * REDISD_MAX];
	int rc = 0;

	for (unsigned int i = 0; i < n; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t al = sizeof(a);

		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof(a)) ||
		    getsockname(fds[i], (struct sockaddr *)&a, &al)) {
			rc = -1;
			n = i + 1;
			break;
		}
		ports[i] = ntohs(a.sin_port);
	}
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return rc;
}

/* Run @argv with output to @log; wait at most @timeout_ms. Its exit code, or -1. */
static int run_wait(char *const argv[], const char *log, unsigned int timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		poll_pause();
	}
}

/*
 * The watcher: in its own session (so a test runner killing our process
 * group leaves it), it waits for its pipe to close (we closed it, or died),
 * then kills the servers it was told of and removes the directory.
 */
static int start_watcher(struct redisd *d)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -1;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		char buf[64];
		ssize_t r;

		close(p[1]);
		/* Only our pipe: a watcher forked later must not hold an earlier one's open. */
		if (p[0] != 3) {
			dup2(p[0], 3);
			p[0] = 3;
		}
		close_range(4, ~0u, 0);
		setsid();
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		while ((r = read(p[0], buf, sizeof(buf))) != 0)
			if (r < 0 && errno != EINTR)
				break;
		for (unsigned int i = 0; i < d->n; i++)
			if (d->pid[i] > 0)
				kill(d->pid[i], SIGKILL);
		execl("/bin/rm", "rm", "-rf", d->dir, (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	d->watcher = pid;
	d->watch_fd = p[1];
	return 0;
}

static pid_t start_server(struct redisd *d, const char *bin, unsigned int i)
{
	char port[16], bport[16], tport[16], log[192], conf[192];
	pid_t pid;

	snprintf(port, sizeof(port), "%d", d->port[i]);
	snprintf(bport, sizeof(bport), "%d", d->bus_port[i]);
	snprintf(tport, sizeof(tport), "%d", d->tls_port[i]);
	snprintf(log, sizeof(log), "%s/redis-%d.log", d->dir, d->port[i]);
	snprintf(conf, sizeof(conf), "nodes-%d.conf", d->port[i]);
	pid = fork();
	if (pid != 0)
		return pid;
	{
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		char *argv[48];
		int a = 0;

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		argv[a++] = (char *)bin;
		argv[a++] = "--port";
		argv[a++] = port;
		argv[a++] = "--bind";
		argv[a++] = "127.0.0.1";
		argv[a++] = "--dir";
		argv[a++] = d->dir;
		argv[a++] = "--save";
		argv[a++] = "";
		argv[a++] = "--appendonly";
		argv[a++] = "no";
		argv[a++] = "--protected-mode";
		argv[a++] = "no";
		argv[a++] = "--daemonize";
		argv[a++] = "no";
		if (d->cluster) {
			argv[a++] = "--cluster-enabled";
			argv[a++] = "yes";
			argv[a++] = "--cluster-config-file";
			argv[a++] = conf;
			argv[a++] = "--cluster-port";
			argv[a++] = bport;
			/* Failure detection: a master silent this long is failed over. */
			argv[a++] = "--cluster-node-timeout";
			argv[a++] = "3000";
			/* A replica always may take over, however long it was cut off. */
			argv[a++] = "--cluster-replica-validity-factor";
			argv[a++] = "0";
			/* The other masters keep serving while one shard fails over. */
			argv[a++] = "--cluster-require-full-coverage";
			argv[a++] = "no";
		}
		if (d->tls) {
			argv[a++] = "--tls-port";
			argv[a++] = tport;
			argv[a++] = "--tls-cert-file";
			argv[a++] = d->tls_cert;
			argv[a++] = "--tls-key-file";
			argv[a++] = d->tls_key;
			argv[a++] = "--tls-ca-cert-file";
			argv[a++] = d->tls_ca;
			argv[a++] = "--tls-auth-clients";
			argv[a++] = "optional";
			if (d->cluster) {
				argv[a++] = "--tls-cluster";
				argv[a++] = "yes";
				argv[a++] = "--tls-replication";
				argv[a++] = "yes";
			}
		}
		argv[a] = NULL;
		execv(bin, argv);
		_exit(127);
	}
}

#ifdef FL_HAVE_HIREDIS
static void reply_text(const redisReply *r, char *out, size_t len)
{
	size_t used = 0;

	out[0] = 0;
	switch (r->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
		snprintf(out, len, "%s", r->str);
		break;
	case REDIS_REPLY_INTEGER:
		snprintf(out, len, "%lld", r->integer);
		break;
	case REDIS_REPLY_ARRAY:
		for (size_t i = 0; i < r->elements && used + 1 < len; i++) {
			reply_text(r->element[i], out + used, len - used);
			used += strlen(out + used);
			if (used + 1 < len) {
				out[used++] = '\n';
				out[used] = 0;
			}
		}
		break;
	default:
		break;
	}
}

/* One command, in the protocol already (@cmd, @n bytes; @n < 0: none), to server @i. */
static redisReply *send_cmd(struct redisd *d, unsigned int i, unsigned int timeout_ms,
			    const char *cmd, long long n)
{
	struct timeval tv = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000 };
	redisContext *c;
	void *r = NULL;

	if (n < 0 || i >= d->n || d->pid[i] <= 0)
		return NULL;
	c = redisConnectWithTimeout("127.0.0.1", d->port[i], tv);
	if (c && !c->err && redisSetTimeout(c, tv) == REDIS_OK &&
	    redisAppendFormattedCommand(c, cmd, (size_t)n) == REDIS_OK &&
	    redisGetReply(c, &r) != REDIS_OK)
		r = NULL;
	if (c)
		redisFree(c);
	return r;
}

static redisReply *vcmd(struct redisd *d, unsigned int i, unsigned int timeout_ms, const char *fmt,
			va_list ap)
{
	char *cmd = NULL;
	long long n = redisvFormatCommand(&cmd, fmt, ap);
	redisReply *r = send_cmd(d, i, timeout_ms, cmd, n);

	if (n >= 0)
		redisFreeCommand(cmd);
	return r;
}

/* The command line @line, split at spaces ("" an empty argument), in the protocol: its length or -1. */
static long long format_line(const char *line, char **cmd)
{
	const char *argv[256];
	size_t argvlen[256];
	char *copy = strdup(line), *save = NULL;
	long long n;
	int argc = 0;

	if (!copy)
		return -1;
	for (char *t = strtok_r(copy, " ", &save); t && argc < 256; t = strtok_r(NULL, " ", &save)) {
		if (!strcmp(t, "\"\""))
			*t = 0;
		argv[argc] = t;
		argvlen[argc++] = strlen(t);
	}
	n = redisFormatCommandArgv(cmd, argc, argv, argvlen);
	free(copy);
	return n;
}
#endif

/* The reply @r (freed) as text in @out: 0, or -1 when there is none. */
static int reply_out(void *r, char *out, size_t len)
{
	if (len)
		out[0] = 0;
	if (!r)
		return -1;
#ifdef FL_HAVE_HIREDIS
	reply_text(r, out, len);
	freeReplyObject(r);
#endif
	return 0;
}

int redisd_cmd(struct redisd *d, unsigned int i, unsigned int timeout_ms, char *out, size_t len,
	       const char *fmt, ...)
{
	void *r = NULL;
#ifdef FL_HAVE_HIREDIS
	va_list ap;

	va_start(ap, fmt);
	r = vcmd(d, i, timeout_ms, fmt, ap);
	va_end(ap);
#else
	(void)d;
	(void)i;
	(void)timeout_ms;
	(void)fmt;
#endif
	return reply_out(r, out, len);
}

int redisd_cmdline(struct redisd *d, unsigned int i, unsigned int timeout_ms, char *out, size_t len,
		   const char *line)
{
	void *r = NULL;
#ifdef FL_HAVE_HIREDIS
	char *cmd = NULL;
	long long n = format_line(line, &cmd);

	r = send_cmd(d, i, timeout_ms, cmd, n);
	if (n >= 0)
		redisFreeCommand(cmd);
#else
	(void)d;
	(void)i;
	(void)timeout_ms;
	(void)line;
#endif
	return reply_out(r, out, len);
}

#ifdef FL_HAVE_HIREDIS
static int index_of_port(const struct redisd *d, long long port)
{
	for (unsigned int i = 0; i < d->n; i++)
		if (d->port[i] == port)
			return (int)i;
	return -1;
}

static redisReply *cmd_reply(struct redisd *d, unsigned int i, unsigned int timeout_ms,
			     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static redisReply *cmd_reply(struct redisd *d, unsigned int i, unsigned int timeout_ms,
			     const char *fmt, ...)
{
	redisReply *r;
	va_list ap;

	va_start(ap, fmt);
	r = vcmd(d, i, timeout_ms, fmt, ap);
	va_end(ap);
	return r;
}

/* The server index of each slot's master in @r (a CLUSTER SLOTS reply), -1 if none. */
static int slots_of(const struct redisd *d, const redisReply *r, int *map)
{
	for (unsigned int s = 0; s < 16384; s++)
		map[s] = -1;
	if (r->type != REDIS_REPLY_ARRAY)
		return -1;
	for (size_t k = 0; k < r->elements; k++) {
		const redisReply *e = r->element[k];
		int idx;

		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
			continue;
		idx = index_of_port(d, e->element[2]->element[1]->integer);
		for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
			if (s >= 0 && s < 16384)
				map[s] = idx;
	}
	return 0;
}
#endif

int redisd_slot_master(struct redisd *d, unsigned int ask, unsigned int slot)
{
#ifdef FL_HAVE_HIREDIS
	static int map[16384];
	redisReply *r = cmd_reply(d, ask, 5000, "CLUSTER SLOTS");
	int found = -1;

	if (r && slots_of(d, r, map) == 0 && slot < 16384)
		found = map[slot];
	if (r)
		freeReplyObject(r);
	return found;
#else
	(void)d;
	(void)ask;
	(void)slot;
	return -1;
#endif
}

void redisd_url(const struct redisd *d, unsigned int i, const char *prefix, char *buf, size_t len)
{
	snprintf(buf, len, "redis://127.0.0.1:%d/%s", d->port[i], prefix);
}

void redisd_tls_url(const struct redisd *d, unsigned int i, const char *prefix, char *buf,
		    size_t len)
{
	snprintf(buf, len, "rediss://127.0.0.1:%d/%s", d->tls_port[i], prefix);
}

unsigned int redisd_key_slot(const char *key)
{
	const char *o = strchr(key, '{'), *c;
	size_t n = strlen(key);
	uint16_t crc = 0;

	if (o && (c = strchr(o + 1, '}')) && c > o + 1) {
		key = o + 1;
		n = (size_t)(c - o - 1);
	}
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)((uint8_t)key[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc & 16383u;
}

/*
 * Poll every live server with @ok until all of them pass (0), or until
 * @timeout_ms passed (-1, d->err "@what after N ms").
 */
static int wait_all(struct redisd *d, unsigned int timeout_ms,
		    bool (*ok)(struct redisd *, unsigned int), const char *what)
{
	uint64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		bool all = true;

		for (unsigned int i = 0; i < d->n && all; i++)
			if (d->pid[i] > 0 && !ok(d, i))
				all = false;
		if (all)
			return 0;
		if (now_ms() > deadline) {
			set_err(d, "%s after %u ms", what, timeout_ms);
			return -1;
		}
		poll_pause();
	}
}

#ifdef FL_HAVE_HIREDIS
/* Server @i reports cluster_state:ok and sees all 16384 slots served by live masters. */
static bool cluster_ok(struct redisd *d, unsigned int i)
{
	static int map[16384];
	char info[4096];
	redisReply *r;
	bool ok = true;

	if (redisd_cmd(d, i, 2000, info, sizeof(info), "CLUSTER INFO") ||
	    !strstr(info, "cluster_state:ok"))
		return false;
	r = cmd_reply(d, i, 2000, "CLUSTER SLOTS");
	if (!r || slots_of(d, r, map)) {
		ok = false;
	} else {
		for (unsigned int s = 0; s < 16384 && ok; s++)
			if (map[s] < 0 || d->pid[map[s]] <= 0)
				ok = false;
	}
	if (r)
		freeReplyObject(r);
	return ok;
}
#endif

int redisd_cluster_wait_ok(struct redisd *d, unsigned int timeout_ms)
{
#ifdef FL_HAVE_HIREDIS
	return wait_all(d, timeout_ms, cluster_ok, "the cluster is not ok");
#else
	(void)timeout_ms;
	set_err(d, "built without hiredis");
	return -1;
#endif
}

/* A master of server @i has a replica online, a replica its master link up (INFO replication). */
static bool replica_ok(struct redisd *d, unsigned int i)
{
	char info[4096];

	if (redisd_cmd(d, i, 2000, info, sizeof(info), "INFO replication"))
		return false;
	if (strstr(info, "role:master") &&
	    (!strstr(info, "connected_slaves:1") || !strstr(info, "state=online")))
		return false;
	return !strstr(info, "role:slave") || strstr(info, "master_link_status:up");
}

static int start_all(struct redisd *d, unsigned int n, bool cluster, unsigned int timeout_ms,
		     const char *cert, const char *key, const char *ca)
{
	uint64_t deadline = now_ms() + timeout_ms;
	char bin[256], cli[256], log[192];
	int ports[3 * REDISD_MAX];

	memset(d, 0, sizeof(*d));
	d->watch_fd = -1;
#ifndef FL_HAVE_HIREDIS
	set_err(d, "faultline was built without hiredis");
	return -1;
#endif
	if (!n || n > REDISD_MAX || (cluster && (n < 6 || n % 2))) {
		set_err(d, "bad server count %u", n);
		return -1;
	}
	if (cert) {
		if (!key || !ca || strlen(cert) >= sizeof(d->tls_cert) ||
		    strlen(key) >= sizeof(d->tls_key) || strlen(ca) >= sizeof(d->tls_ca)) {
			set_err(d, "TLS needs a certificate, its key and a CA (paths under 256 bytes)");
			return -1;
		}
		d->tls = true;
		strcpy(d->tls_cert, cert);
		strcpy(d->tls_key, key);
		strcpy(d->tls_ca, ca);
	}
	if (!redisd_find("redis-server", bin, sizeof(bin))) {
		set_err(d, "redis-server not found (apt-get install redis-server)");
		return -1;
	}
	if (cluster && !redisd_find("redis-cli", cli, sizeof(cli))) {
		set_err(d, "redis-cli not found (apt-get install redis-tools)");
		return -1;
	}
	snprintf(d->dir, sizeof(d->dir), "/tmp/fl-redis.XXXXXX");
	if (!mkdtemp(d->dir)) {
		set_err(d, "mkdtemp: %s", strerror(errno));
		d->dir[0] = 0;
		return -1;
	}
	d->n = n;
	d->cluster = cluster;
	if (free_ports(ports, (cluster ? 2 * n : n) + (d->tls ? n : 0))) {
		set_err(d, "no free loopback ports");
		goto fail;
	}
	for (unsigned int i = 0; i < n; i++) {
		d->port[i] = ports[i];
		d->bus_port[i] = cluster ? ports[n + i] : 0;
		d->tls_port[i] = d->tls ? ports[(cluster ? 2 * n : n) + i] : 0;
	}
	for (unsigned int i = 0; i < n; i++) {
		d->pid[i] = start_server(d, bin, i);
		if (d->pid[i] < 0) {
			d->pid[i] = 0;
			set_err(d, "fork: %s", strerror(errno));
			goto fail;
		}
	}
	if (start_watcher(d)) {
		set_err(d, "watcher: %s", strerror(errno));
		goto fail;
	}
	for (unsigned int i = 0; i < n; i++) {
		char pong[64];

		while (redisd_cmd(d, i, 1000, pong, sizeof(pong), "PING") || strcmp(pong, "PONG")) {
			int st;

			if (waitpid(d->pid[i], &st, WNOHANG) == d->pid[i]) {
				d->pid[i] = 0;
				set_err(d, "redis-server on port %d exited (see %s/redis-%d.log)",
					d->port[i], d->dir, d->port[i]);
				goto fail;
			}
			if (now_ms() > deadline) {
				set_err(d, "redis-server on port %d does not answer", d->port[i]);
				goto fail;
			}
			poll_pause();
		}
	}
	if (cluster) {
		char addr[REDISD_MAX][32];
		char *argv[REDISD_MAX + 12];
		int a = 0;
		uint64_t now = now_ms();

		argv[a++] = cli;
		argv[a++] = "--cluster";
		argv[a++] = "create";
		for (unsigned int i = 0; i < n; i++) {
			snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", d->port[i]);
			argv[a++] = addr[i];
		}
		argv[a++] = "--cluster-replicas";
		argv[a++] = "1";
		argv[a++] = "--cluster-yes";
		argv[a] = NULL;
		snprintf(log, sizeof(log), "%s/cluster-create.log", d->dir);
		if (run_wait(argv, log, now < deadline ? (unsigned int)(deadline - now) : 1) != 0) {
			set_err(d, "redis-cli --cluster create failed (see %s)", log);
			goto fail;
		}
		now = now_ms();
		if (redisd_cluster_wait_ok(d, now < deadline ? (unsigned int)(deadline - now) : 1))
			goto fail;
		now = now_ms();
		if (wait_all(d, now < deadline ? (unsigned int)(deadline - now) : 1, replica_ok,
			     "the replicas are not online"))
			goto fail;
	}
	return 0;
fail:
	{
		char keep[sizeof(d->err)];

		memcpy(keep, d->err, sizeof(keep));
		redisd_stop(d);
		memcpy(d->err, keep, sizeof(keep));
	}
	return -1;
}

int redisd_start(struct redisd *d, unsigned int n, bool cluster, unsigned int timeout_ms)
{
	return start_all(d, n, cluster, timeout_ms, NULL, NULL, NULL);
}

int redisd_start_tls(struct redisd *d, unsigned int n, bool cluster, unsigned int timeout_ms,
		     const char *cert, const char *key, const char *ca)
{
	if (!cert) {
		memset(d, 0, sizeof(*d));
		d->watch_fd = -1;
		set_err(d, "TLS needs a certificate");
		return -1;
	}
	return start_all(d, n, cluster, timeout_ms, cert, key, ca);
}

void redisd_kill(struct redisd *d, unsigned int i)
{
	if (i < d->n && d->pid[i] > 0) {
		kill(d->pid[i], SIGKILL);
		waitpid(d->pid[i], NULL, 0);
		d->pid[i] = 0;
	}
}

void redisd_stop(struct redisd *d)
{
	for (unsigned int i = 0; i < d->n; i++)
		redisd_kill(d, i);
	if (d->watcher > 0) {
		close(d->watch_fd);
		d->watch_fd = -1;
		waitpid(d->watcher, NULL, 0);
		d->watcher = 0;
	} else if (d->dir[0]) {
		char *argv[] = { "/bin/rm", "-rf", d->dir, NULL };

		run_wait(argv, "/dev/null", 60000);
	}
	d->dir[0] = 0;
	d->n = 0;
}
