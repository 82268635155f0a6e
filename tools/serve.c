/* SPDX-License-Identifier: MIT */
/* faultline serve: a page server for the objects under a directory (fl_store_remote_open(3)). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultline.h"
#include "remote/server.h"
#include "tool.h"

#define SUB "serve"

void usage_serve(FILE *out)
{
	fprintf(out,
		"usage: faultline serve --listen ADDR:PORT --dir DIR --insecure [OPTIONS]\n\n"
		"Serves the pages of the files under DIR to fl_store_remote_open(3) clients\n"
		"(faultline://HOST:PORT/NAME), reads and writes, many clients at once. A\n"
		"snapshot file (faultline-snapshot(1)) is served read-only, its first region.\n"
		"Names are confined to DIR: no absolute names, no '..', no symbolic link that\n"
		"leads out of it.\n\n"
		"Options:\n"
		"  --listen ADDR:PORT  where to listen: 127.0.0.1:7070, [::1]:7070, or :7070 for\n"
		"                      every address; port 0 picks a free one\n"
		"  --dir DIR           the directory of the served objects\n"
		"  --insecure          plain TCP: anyone who can reach the port reads and\n"
		"                      writes the objects, and pages cross the network in the\n"
		"                      clear (required until this build has TLS)\n"
		"  --max-clients N     connections served at once (default 256); more are\n"
		"                      refused with ERROR BUSY\n"
		"  --idle-timeout MS   close a connection with no request for MS ms (default\n"
		"                      60000)\n"
		"  --io-timeout MS     close a connection stalled inside a message, or not\n"
		"                      taking an answer, for MS ms (default 10000)\n"
		"  --ready-fd FD       write one byte to FD (open for writing) once listening,\n"
		"                      then close it\n"
		"  -v, --verbose       log each connection closed for a reason, and the counts\n"
		"                      at exit\n\n"
		"It prints \"listening on ADDR:PORT\" on stdout once it listens. SIGINT or\n"
		"SIGTERM stops it: it takes no new connection, answers the requests each client\n"
		"has sent, closes, and exits 0.\n");
}

static struct fl__pgsrv *the_server;
static int verbosity;

static void on_signal(int sig)
{
	(void)sig;
	if (the_server)
		fl__pgsrv_stop(the_server);
}

static void lib_log(enum fl_log_level level, const char *msg)
{
	if (level <= FL_LOG_WARN || (verbosity && level <= FL_LOG_INFO))
		fprintf(stderr, "faultline: %s\n", msg);
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

/* "HOST:PORT", "[V6]:PORT" or ":PORT" into @host (empty: every address) and @port. */
static int parse_listen(const char *s, char *host, size_t cap, uint16_t *port)
{
	const char *colon;
	unsigned long v;
	size_t n;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		n = (size_t)(close - s - 1);
		if (!n || n >= cap)
			return -EINVAL;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		n = (size_t)(colon - s);
		if (n >= cap || memchr(s, ':', n))
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = '\0';
	}
	if (parse_num(colon + 1, 65535, &v))
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_DIR, O_INSECURE, O_MAX, O_IDLE, O_IO, O_READY };
	static const struct option lo[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "dir", required_argument, NULL, O_DIR },
		{ "insecure", no_argument, NULL, O_INSECURE },
		{ "max-clients", required_argument, NULL, O_MAX },
		{ "idle-timeout", required_argument, NULL, O_IDLE },
		{ "io-timeout", required_argument, NULL, O_IO },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct fl__pgsrv_opts o = { 0 };
	struct sigaction sa = { .sa_handler = on_signal };
	struct fl__pgsrv_stats st;
	const char *listen_arg = NULL;
	char host[256] = "";
	bool insecure = false;
	unsigned long v;
	struct stat sb;
	int c, r, ready = -1;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			listen_arg = optarg;
			if (parse_listen(optarg, host, sizeof(host), &o.port))
				return usage_error(SUB, "--listen %s: not ADDR:PORT (a port 0-65535; "
						   "[ADDR] for IPv6)", optarg);
			break;
		case O_DIR:
			o.dir = optarg;
			break;
		case O_INSECURE:
			insecure = true;
			break;
		case O_MAX:
			if (parse_num(optarg, 65536, &v) || !v)
				return usage_error(SUB, "--max-clients %s: a number in 1..65536",
						   optarg);
			o.max_clients = (unsigned int)v;
			break;
		case O_IDLE:
		case O_IO:
			if (parse_num(optarg, 86400000, &v) || !v)
				return usage_error(SUB, "--%s %s: milliseconds in 1..86400000",
						   c == O_IDLE ? "idle-timeout" : "io-timeout", optarg);
			if (c == O_IDLE)
				o.idle_timeout_ms = (int)v;
			else
				o.io_timeout_ms = (int)v;
			break;
		case O_READY:
			if (parse_num(optarg, 1u << 20, &v))
				return usage_error(SUB, "--ready-fd %s: a descriptor number", optarg);
			ready = (int)v;
			break;
		case 'v':
			verbosity++;
			break;
		default:
			return usage_error(SUB, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	if (!listen_arg)
		return usage_error(SUB, "--listen ADDR:PORT is required");
	if (!o.dir)
		return usage_error(SUB, "--dir DIR is required");
	if (stat(o.dir, &sb) < 0)
		return usage_error(SUB, "--dir %s: %s", o.dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return usage_error(SUB, "--dir %s: not a directory", o.dir);
	if (!insecure)
		return usage_error(SUB, "this build has no TLS: pass --insecure to serve over "
				   "plain TCP (anyone who reaches the port reads and writes the "
				   "objects)");
	if (ready >= 0) {
		int fl = fcntl(ready, F_GETFL);

		if (fl < 0)
			return usage_error(SUB, "--ready-fd %d: %s", ready, strerror(errno));
		if ((fl & O_ACCMODE) == O_RDONLY)
			return usage_error(SUB, "--ready-fd %d: not open for writing", ready);
	}
	o.host = host[0] ? host : NULL;
	fl_set_log_fn(lib_log);
	r = fl__pgsrv_create(&o, &the_server);
	if (r < 0) {
		fprintf(stderr, "faultline: serve: cannot start: %s\n", strerror(-r));
		return 1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (strchr(host, ':'))
		printf("listening on [%s]:%u\n", host, fl__pgsrv_port(the_server));
	else
		printf("listening on %s:%u\n", host[0] ? host : "*", fl__pgsrv_port(the_server));
	fflush(stdout);
	if (ready >= 0) {
		char one = 1;

		if (write(ready, &one, 1) != 1) {
			fprintf(stderr, "faultline: serve: --ready-fd %d: %s\n", ready,
				strerror(errno));
			close(ready);
			fl__pgsrv_destroy(the_server);
			return EXIT_USAGE;
		}
		close(ready);
	}
	r = fl__pgsrv_run(the_server);
	fl__pgsrv_stats(the_server, &st);
	fl__pgsrv_destroy(the_server);
	the_server = NULL;
	if (r < 0)
		return fail(SUB, "serving", r);
	if (verbosity)
		fprintf(stderr, "faultline: serve: stopped: %llu connections (%llu refused busy, "
			"%llu closed idle, %llu closed malformed), %llu opens, %llu reads "
			"(%llu pages), %llu writes (%llu pages), %llu errors\n",
			(unsigned long long)st.connections, (unsigned long long)st.refused_busy,
			(unsigned long long)st.closed_idle,
			(unsigned long long)st.closed_malformed, (unsigned long long)st.opens,
			(unsigned long long)st.reads, (unsigned long long)st.pages_read,
			(unsigned long long)st.writes, (unsigned long long)st.pages_written,
			(unsigned long long)st.errors);
	return 0;
}
