/* SPDX-License-Identifier: MIT */
/* faultline monitor: serve other processes' memory (and Firecracker's) over a unix socket. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "group.h"
#include "tool.h"

#define SUB "monitor"
#define MAX_UIDS 64

void usage_monitor(FILE *out)
{
	fprintf(out,
		"usage: faultline monitor --socket PATH [OPTIONS]\n\n"
		"Serves the page faults of other processes. A client (fl_monitor_attach(3))\n"
		"connects to PATH and hands over its userfaultfd with a description of its\n"
		"regions; the monitor fills them from files, patterns or zeros, and follows\n"
		"the client's fork, mremap, MADV_DONTNEED and munmap until it detaches,\n"
		"hangs up or exits. Clients survive a restart of the monitor on the same PATH.\n\n"
		"Options:\n"
		"  --socket PATH       listen on PATH (a file system path, or @NAME for the\n"
		"                      abstract namespace)\n"
		"  --socket-mode MODE  permissions of the socket file, in octal (default: what\n"
		"                      the umask leaves); connecting needs write permission\n"
		"  --socket-group GROUP  group of the socket file (a name or a gid)\n"
		"  --firecracker       also take Firecracker's handshake (needs --mem-file or\n"
		"                      --snapshot)\n"
		"  --mem-file FILE     Firecracker: the guest memory file; each region is served\n"
		"                      from its offset in FILE\n"
		"  --snapshot FILE     Firecracker: the guest memory from a snapshot (or the\n"
		"                      chain it ends); its regions end to end stand for the\n"
		"                      memory file (faultline snapshot convert makes one region:\n"
		"                      the same offsets)\n"
		"  --record WS         Firecracker: record the guest's working set (pages in the\n"
		"                      order first touched) and write it to WS when the VM hangs\n"
		"                      up, on SIGUSR1, or when the monitor stops; regions are\n"
		"                      numbered by offset from 0, region N > 0 writes WS.N\n"
		"  --store-root DIR    clients' files must lie beneath DIR (opened with\n"
		"                      RESOLVE_BENEATH); default: anywhere\n"
		"  --allow-uid UID     serve UID too (repeatable; default: our own uid only);\n"
		"                      it must be able to connect: see --socket-mode\n"
		"  --any-uid           serve every uid (same remark)\n"
		"  --no-files          refuse file regions (patterns and zeros only)\n"
		"  --threads N         handler threads per client (default 1)\n"
		"  --max-clients N     userfaultfds served at once, children included\n"
		"                      (default 1024)\n"
		"  --handshake-ms N    time a client has to complete its handshake (default 5000)\n"
		"  --prefetch POLICY   none, fixed or adaptive (default none)\n"
		"  --prefetch WS       Firecracker: replay the working set WS (and WS.N) into\n"
		"                      every VM restored; a word other than a policy is a file\n"
		"                      (./fixed for a file named fixed); give --prefetch twice\n"
		"                      for both\n"
		"  --ready-fd FD       write one byte to FD (open for writing) once listening,\n"
		"                      then close it\n"
		"  -v, --verbose       log every client (twice: debug)\n\n"
		"SIGINT or SIGTERM stops the monitor; its clients then wait for a new one\n"
		"(or fail loudly, as their policy says). SIGUSR1 writes the working sets\n"
		"recorded so far (--record).\n");
}

static struct fl_monitor_server *the_server;
static int verbosity;
static bool said_error;		/* an error line went out: the tool adds none of its own */

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		fl_monitor_server_ws_save(the_server);
	else
		fl_monitor_server_stop(the_server);
}

static void log_line(enum fl_log_level level, const char *msg, void *userdata)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	struct timespec ts;
	struct tm tm;
	char when[32];

	(void)userdata;
	if (level == FL_LOG_ERROR)
		said_error = true;
	if ((int)level > FL_LOG_WARN + verbosity)
		return;
	/* A monitor runs for days: its lines say when, in local time. */
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "faultline: %s.%03ld %s: %s\n", when, ts.tv_nsec / 1000000,
		names[level <= FL_LOG_DEBUG ? level : FL_LOG_DEBUG], msg);
}

static void lib_log(enum fl_log_level level, const char *msg)
{
	log_line(level, msg, NULL);
}

/*
 * What can be known about the arguments before the monitor starts is
 * checked here, each named in its message (exit 2): the library could
 * only say that the monitor did not start.
 */
static int check_args(const struct fl_monitor_server_opts *o, int ready)
{
	struct stat st;
	int fd, r;

	if (o->socket_path[0] != '@' && !lstat(o->socket_path, &st) && !S_ISSOCK(st.st_mode))
		return usage_error(SUB, "--socket %s: exists and is not a socket; not replacing "
				   "it", o->socket_path);
	if (o->store_root) {
		if (stat(o->store_root, &st) < 0)
			return usage_error(SUB, "--store-root %s: %s", o->store_root,
					   strerror(errno));
		if (!S_ISDIR(st.st_mode))
			return usage_error(SUB, "--store-root %s: not a directory", o->store_root);
	}
	if (o->firecracker_snapshot) {
		struct fl_snapshot *snap = NULL;

		/* The library logs what is wrong with it; the line here names the option. */
		r = fl_snapshot_open(o->firecracker_snapshot, NULL, &snap);
		fl_snapshot_close(snap);
		if (r < 0)
			return usage_error(SUB, "--snapshot %s: %s", o->firecracker_snapshot,
					   r == -EINVAL ? "not a snapshot file, or a damaged one" :
					   strerror(-r));
	}
	if (o->firecracker_ws_replay) {
		fd = open(o->firecracker_ws_replay, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			return usage_error(SUB, "--prefetch %s: %s (and not a policy: none, fixed "
					   "or adaptive)", o->firecracker_ws_replay,
					   strerror(errno));
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(fd);
			return usage_error(SUB, "--prefetch %s: not a regular file",
					   o->firecracker_ws_replay);
		}
		close(fd);
	}
	if (o->firecracker_ws_record) {
		const char *w = o->firecracker_ws_record, *slash = strrchr(w, '/');
		char dir[PATH_MAX];

		if (slash && !slash[1])
			return usage_error(SUB, "--record %s: names a directory, not a file", w);
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == w)
			snprintf(dir, sizeof(dir), "/");
		else
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - w), w);
		if (stat(dir, &st) < 0)
			return usage_error(SUB, "--record %s: %s: %s", w, dir, strerror(errno));
		if (!S_ISDIR(st.st_mode))
			return usage_error(SUB, "--record %s: %s is not a directory", w, dir);
		if (access(dir, W_OK | X_OK) < 0)
			return usage_error(SUB, "--record %s: cannot write in %s: %s", w, dir,
					   strerror(errno));
		if (!stat(w, &st) && S_ISDIR(st.st_mode))
			return usage_error(SUB, "--record %s: is a directory", w);
	}
	if (o->firecracker_mem_file) {
		fd = open(o->firecracker_mem_file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			return usage_error(SUB, "--mem-file %s: %s", o->firecracker_mem_file,
					   strerror(errno));
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(fd);
			return usage_error(SUB, "--mem-file %s: not a regular file",
					   o->firecracker_mem_file);
		}
		close(fd);
	}
	return tool_ready_check(SUB, ready);
}

/* Other uids served but unable to connect: say so once, at the start. */
static void check_reach(const struct fl_monitor_server_opts *o)
{
	struct stat st;
	bool others = o->n_allowed_uids || (o->flags & FL_MONITOR_SERVER_ANY_UID);
	char msg[512];

	if (!others || o->socket_path[0] == '@' || stat(o->socket_path, &st) < 0)
		return;
	if ((st.st_mode & S_IWOTH) || (st.st_mode & S_IWGRP))
		return;
	snprintf(msg, sizeof(msg), "monitor: %s has mode %04o: other users cannot connect "
		 "to it; give --socket-mode 0666, or 0660 with --socket-group", o->socket_path,
		 (unsigned int)(st.st_mode & 07777));
	log_line(FL_LOG_WARN, msg, NULL);
}

int cmd_monitor(int argc, char **argv)
{
	enum { O_SOCKET = 1, O_FC, O_MEM, O_ROOT, O_ALLOW, O_ANY, O_NOFILES, O_THREADS, O_MAX,
	       O_HS, O_PREFETCH, O_READY, O_MODE, O_GROUP, O_SNAP, O_RECORD };
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "firecracker", no_argument, NULL, O_FC },
		{ "mem-file", required_argument, NULL, O_MEM },
		{ "snapshot", required_argument, NULL, O_SNAP },
		{ "record", required_argument, NULL, O_RECORD },
		{ "store-root", required_argument, NULL, O_ROOT },
		{ "allow-uid", required_argument, NULL, O_ALLOW },
		{ "any-uid", no_argument, NULL, O_ANY },
		{ "no-files", no_argument, NULL, O_NOFILES },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "max-clients", required_argument, NULL, O_MAX },
		{ "handshake-ms", required_argument, NULL, O_HS },
		{ "prefetch", required_argument, NULL, O_PREFETCH },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "socket-mode", required_argument, NULL, O_MODE },
		{ "socket-group", required_argument, NULL, O_GROUP },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct fl_monitor_server_opts o = { .sz = sizeof(o), .log_fn = log_line };
	struct fl_monitor_server_stats st = { .sz = sizeof(st) };
	uint32_t uids[MAX_UIDS];
	bool firecracker = false, policy = false;
	unsigned long v;
	int c, r, ready = -1;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
		switch (c) {
		case O_SOCKET:
			o.socket_path = optarg;
			break;
		case O_FC:
			firecracker = true;
			break;
		case O_MEM:
			o.firecracker_mem_file = optarg;
			break;
		case O_SNAP:
			o.firecracker_snapshot = optarg;
			break;
		case O_RECORD:
			if (!optarg[0])
				return usage_error(SUB, "--record needs a file name");
			o.firecracker_ws_record = optarg;
			break;
		case O_ROOT:
			if (optarg[0] != '/')
				return usage_error(SUB, "--store-root needs an absolute path");
			o.store_root = optarg;
			break;
		case O_ALLOW:
			if (o.n_allowed_uids == MAX_UIDS || tool_parse_num(optarg, UINT32_MAX - 1, &v))
				return usage_error(SUB, "--allow-uid: '%s' is not a uid (at most "
						   "%d of them)", optarg, MAX_UIDS);
			uids[o.n_allowed_uids++] = (uint32_t)v;
			o.allowed_uids = uids;
			break;
		case O_ANY:
			o.flags |= FL_MONITOR_SERVER_ANY_UID;
			break;
		case O_NOFILES:
			o.flags |= FL_MONITOR_SERVER_NO_FILES;
			break;
		case O_THREADS:
			if (tool_parse_num(optarg, FL_PAGER_MAX_THREADS, &v) || !v)
				return usage_error(SUB, "--threads: 1 to %d", FL_PAGER_MAX_THREADS);
			o.threads = (unsigned int)v;
			break;
		case O_MAX:
			if (tool_parse_num(optarg, 1u << 20, &v) || !v)
				return usage_error(SUB, "--max-clients: 1 to %u", 1u << 20);
			o.max_clients = (unsigned int)v;
			break;
		case O_HS:
			if (tool_parse_num(optarg, 3600000, &v) || !v)
				return usage_error(SUB, "--handshake-ms: 1 to 3600000");
			o.handshake_ms = (unsigned int)v;
			break;
		case O_PREFETCH: {
			bool is_policy = !strcmp(optarg, "none") || !strcmp(optarg, "fixed") ||
					 !strcmp(optarg, "adaptive");

			if (!optarg[0])
				return usage_error(SUB, "--prefetch: none, fixed, adaptive or a "
						   "working-set file");
			if (is_policy ? policy : o.firecracker_ws_replay != NULL)
				return usage_error(SUB, "--prefetch: one policy and one working "
						   "set at most");
			if (!is_policy) {
				o.firecracker_ws_replay = optarg;
				break;
			}
			policy = true;
			if (!strcmp(optarg, "none"))
				o.prefetch = FL_PREFETCH_NONE;
			else if (!strcmp(optarg, "fixed"))
				o.prefetch = FL_PREFETCH_FIXED;
			else
				o.prefetch = FL_PREFETCH_ADAPTIVE;
			break;
		}
		case O_READY:
			if (tool_parse_num(optarg, 1u << 20, &v))
				return usage_error(SUB, "--ready-fd: a descriptor number");
			ready = (int)v;
			break;
		case O_MODE: {
			char *end;

			errno = 0;
			v = optarg[0] >= '0' && optarg[0] <= '7' ? strtoul(optarg, &end, 8) : 0;
			if (optarg[0] < '0' || optarg[0] > '7' || errno || *end || !v || v > 07777)
				return usage_error(SUB, "--socket-mode: '%s' is not an octal mode "
						   "(1 to 7777, e.g. 0660)", optarg);
			o.socket_mode = (uint32_t)v;
			break;
		}
		case O_GROUP:
			if (tool_group_gid(optarg, &o.socket_gid))
				return usage_error(SUB, "--socket-group: no group '%s'%s", optarg,
						   tool_static_build() ? " in /etc/group (a static "
						   "build reads only that file; give the number)" : "");
			o.flags |= FL_MONITOR_SERVER_SOCKET_GROUP;
			break;
		case 'v':
			verbosity++;
			break;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	if (!o.socket_path)
		return usage_error(SUB, "--socket PATH is required");
	if (o.firecracker_mem_file && o.firecracker_snapshot)
		return usage_error(SUB, "--mem-file and --snapshot exclude each other");
	if (firecracker != (o.firecracker_mem_file || o.firecracker_snapshot))
		return usage_error(SUB, firecracker ? "--firecracker needs --mem-file FILE or "
				   "--snapshot FILE" : "--mem-file and --snapshot go with "
				   "--firecracker");
	if (!firecracker && (o.firecracker_ws_record || o.firecracker_ws_replay))
		return usage_error(SUB, "--record WS and --prefetch WS (a working set) go with "
				   "--firecracker");
	if ((o.flags & FL_MONITOR_SERVER_ANY_UID) && o.n_allowed_uids)
		return usage_error(SUB, "--any-uid and --allow-uid exclude each other");
	if ((o.socket_mode || (o.flags & FL_MONITOR_SERVER_SOCKET_GROUP)) &&
	    o.socket_path[0] == '@')
		return usage_error(SUB, "--socket-mode and --socket-group need a socket file, "
				   "not an abstract name (@%s)", o.socket_path + 1);
	fl_set_log_fn(lib_log);
	r = check_args(&o, ready);
	if (r)
		return r;

	r = fl_monitor_server_create(&o, &the_server);
	if (r < 0) {
		/* The library said what failed; a line of ours would only repeat it. */
		if (!said_error)
			fail(SUB, "cannot start", r);
		return 1;
	}
	check_reach(&o);
	tool_signals(on_signal, o.firecracker_ws_record != NULL);
	{
		char msg[160];

		snprintf(msg, sizeof(msg), "monitor: listening on %s", o.socket_path);
		log_line(FL_LOG_INFO, msg, NULL);
	}
	if (tool_ready_signal(SUB, ready) < 0) {
		fl_monitor_server_destroy(the_server);
		return EXIT_USAGE;
	}
	r = fl_monitor_server_run(the_server);
	fl_monitor_server_stats(the_server, &st);
	fl_monitor_server_destroy(the_server);
	if (r < 0)
		return fail(SUB, "serving", r);
	if (verbosity)
		fprintf(stderr, "faultline: monitor: stopped: %llu attached (%llu re-attached, "
			"%llu Firecracker), %llu refused, %llu children, %llu events, %llu faults, "
			"%llu pages prefetched from working sets, %llu working sets written\n",
			(unsigned long long)st.attached, (unsigned long long)st.reattached,
			(unsigned long long)st.firecracker, (unsigned long long)st.refused,
			(unsigned long long)st.forks, (unsigned long long)st.events,
			(unsigned long long)st.faults, (unsigned long long)st.ws_prefetched,
			(unsigned long long)st.ws_saved);
	return 0;
}
