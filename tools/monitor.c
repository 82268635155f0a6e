/* SPDX-License-Identifier: MIT */
/* faultline monitor: serve other processes' memory (and Firecracker's) over a unix socket. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
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
		"  --firecracker       also take Firecracker's handshake (needs --mem-file)\n"
		"  --mem-file FILE     Firecracker: the guest memory file; each region is served\n"
		"                      from its offset in FILE\n"
		"  --store-root DIR    clients' files must lie beneath DIR (opened with\n"
		"                      RESOLVE_BENEATH); default: anywhere\n"
		"  --allow-uid UID     serve UID too (repeatable; default: our own uid only)\n"
		"  --any-uid           serve every uid\n"
		"  --no-files          refuse file regions (patterns and zeros only)\n"
		"  --threads N         handler threads per client (default 1)\n"
		"  --max-clients N     userfaultfds served at once, children included\n"
		"                      (default 1024)\n"
		"  --handshake-ms N    time a client has to complete its handshake (default 5000)\n"
		"  --prefetch POLICY   none, fixed or adaptive (default none)\n"
		"  --ready-fd FD       write one byte to FD once listening, then close it\n"
		"  -v, --verbose       log every client (twice: debug)\n\n"
		"SIGINT or SIGTERM stops the monitor; its clients then wait for a new one\n"
		"(or fail loudly, as their policy says).\n");
}

static struct fl_monitor_server *the_server;
static int verbosity;

static void on_signal(int sig)
{
	(void)sig;
	fl_monitor_server_stop(the_server);
}

static void log_line(enum fl_log_level level, const char *msg, void *userdata)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	struct timespec ts;

	(void)userdata;
	if ((int)level > FL_LOG_WARN + verbosity)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	fprintf(stderr, "faultline: %lld.%03ld %s: %s\n", (long long)ts.tv_sec,
		ts.tv_nsec / 1000000, names[level <= FL_LOG_DEBUG ? level : FL_LOG_DEBUG], msg);
}

static void lib_log(enum fl_log_level level, const char *msg)
{
	log_line(level, msg, NULL);
}

static int parse_num(const char *s, unsigned long max, unsigned long *ret)
{
	char *end;
	unsigned long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int cmd_monitor(int argc, char **argv)
{
	enum { O_SOCKET = 1, O_FC, O_MEM, O_ROOT, O_ALLOW, O_ANY, O_NOFILES, O_THREADS, O_MAX,
	       O_HS, O_PREFETCH, O_READY };
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "firecracker", no_argument, NULL, O_FC },
		{ "mem-file", required_argument, NULL, O_MEM },
		{ "store-root", required_argument, NULL, O_ROOT },
		{ "allow-uid", required_argument, NULL, O_ALLOW },
		{ "any-uid", no_argument, NULL, O_ANY },
		{ "no-files", no_argument, NULL, O_NOFILES },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "max-clients", required_argument, NULL, O_MAX },
		{ "handshake-ms", required_argument, NULL, O_HS },
		{ "prefetch", required_argument, NULL, O_PREFETCH },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct fl_monitor_server_opts o = { .sz = sizeof(o), .log_fn = log_line };
	struct fl_monitor_server_stats st;
	uint32_t uids[MAX_UIDS];
	struct sigaction sa = { .sa_handler = on_signal };
	bool firecracker = false;
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
		case O_ROOT:
			if (optarg[0] != '/')
				return usage_error(SUB, "--store-root needs an absolute path");
			o.store_root = optarg;
			break;
		case O_ALLOW:
			if (o.n_allowed_uids == MAX_UIDS || parse_num(optarg, UINT32_MAX - 1, &v))
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
			if (parse_num(optarg, FL_PAGER_MAX_THREADS, &v) || !v)
				return usage_error(SUB, "--threads: 1 to %d", FL_PAGER_MAX_THREADS);
			o.threads = (unsigned int)v;
			break;
		case O_MAX:
			if (parse_num(optarg, 1u << 20, &v) || !v)
				return usage_error(SUB, "--max-clients: 1 to %u", 1u << 20);
			o.max_clients = (unsigned int)v;
			break;
		case O_HS:
			if (parse_num(optarg, 3600000, &v) || !v)
				return usage_error(SUB, "--handshake-ms: 1 to 3600000");
			o.handshake_ms = (unsigned int)v;
			break;
		case O_PREFETCH:
			if (!strcmp(optarg, "none"))
				o.prefetch = FL_PREFETCH_NONE;
			else if (!strcmp(optarg, "fixed"))
				o.prefetch = FL_PREFETCH_FIXED;
			else if (!strcmp(optarg, "adaptive"))
				o.prefetch = FL_PREFETCH_ADAPTIVE;
			else
				return usage_error(SUB, "--prefetch: none, fixed or adaptive");
			break;
		case O_READY:
			if (parse_num(optarg, 1u << 20, &v))
				return usage_error(SUB, "--ready-fd: a descriptor number");
			ready = (int)v;
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
	if (firecracker != (o.firecracker_mem_file != NULL))
		return usage_error(SUB, "--firecracker and --mem-file go together");
	if ((o.flags & FL_MONITOR_SERVER_ANY_UID) && o.n_allowed_uids)
		return usage_error(SUB, "--any-uid and --allow-uid exclude each other");

	fl_set_log_fn(lib_log);
	r = fl_monitor_server_create(&o, &the_server);
	if (r < 0)
		return fail(SUB, o.socket_path, r);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	log_line(FL_LOG_INFO, "monitor: listening", NULL);
	if (ready >= 0) {
		char one = 1;

		if (write(ready, &one, 1) != 1)
			fprintf(stderr, "faultline: monitor: --ready-fd %d: %s\n", ready,
				strerror(errno));
		close(ready);
	}
	r = fl_monitor_server_run(the_server);
	fl_monitor_server_stats(the_server, &st);
	fl_monitor_server_destroy(the_server);
	if (r < 0)
		return fail(SUB, "serving", r);
	if (verbosity)
		fprintf(stderr, "faultline: monitor: stopped: %llu attached (%llu re-attached, "
			"%llu Firecracker), %llu refused, %llu children, %llu events\n",
			(unsigned long long)st.attached, (unsigned long long)st.reattached,
			(unsigned long long)st.firecracker, (unsigned long long)st.refused,
			(unsigned long long)st.forks, (unsigned long long)st.events);
	return 0;
}
