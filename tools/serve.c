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
#include "net/transport.h"
#include "remote/server.h"
#include "tool.h"

#define SUB "serve"

void usage_serve(FILE *out)
{
	fprintf(out,
		"usage: faultline serve --listen ADDR:PORT --dir DIR\n"
		"                       (--key FILE | --tls-cert FILE --tls-key FILE | --insecure)\n"
		"                       [OPTIONS]\n"
		"       faultline serve --demo [OPTIONS]\n\n"
		"Serves the pages of the files under DIR to fl_store_remote_open(3) clients\n"
		"(faultline://HOST:PORT/NAME), reads and writes, many clients at once. A\n"
		"snapshot file (faultline snapshot) is served read-only, its first region.\n"
		"Names are confined to DIR: no absolute names, no '..', no symbolic link that\n"
		"leads out of it.\n\n"
		"Options:\n"
		"  --listen ADDR:PORT  where to listen: 127.0.0.1:7070, [::1]:7070, or :7070 for\n"
		"                      every address; port 0 picks a free one\n"
		"  --dir DIR           the directory of the served objects\n\n"
		"Connections run over TLS 1.3, with a shared key or with certificates:\n"
		"  --key FILE          shared key (the clients have the same bytes): TLS with\n"
		"                      this pre-shared key; 16 to 4096 bytes\n"
		"  --tls-cert FILE     the server's certificate (PEM), with --tls-key\n"
		"  --tls-key FILE      its private key (PEM)\n"
		"  --tls-ca FILE       with --verify-peer: CA certificates (PEM) the clients'\n"
		"                      certificates must chain to\n"
		"  --verify-peer       require a client certificate (mutual TLS)\n"
		"  --insecure          plain TCP instead: anyone who can reach the port reads\n"
		"                      and writes the objects, and pages cross the network in\n"
		"                      the clear\n\n"
		"Other options:\n"
		"  --max-clients N     connections served at once (default 256); more are\n"
		"                      closed at once\n"
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
		"has sent, closes, and exits 0.\n\n");
	usage_serve_demo(out);
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

/* The key file's bytes, all of them, as they are (a trailing newline is part of the key). */
static int read_key(const char *path, uint8_t *key, size_t cap, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	char more;

	if (fd < 0)
		return usage_error(SUB, "--key: cannot open '%s': %s", path, strerror(errno));
	while (n < cap) {
		ssize_t k = read(fd, key + n, cap - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;

			close(fd);
			return usage_error(SUB, "--key: cannot read '%s': %s", path, strerror(e));
		}
		if (!k)
			break;
		n += (size_t)k;
	}
	if (n == cap && read(fd, &more, 1) == 1) {
		close(fd);
		return usage_error(SUB, "--key: '%s' is longer than %zu bytes", path, cap);
	}
	close(fd);
	if (n < FL__TRANSPORT_PSK_MIN)
		return usage_error(SUB, "--key: '%s' holds %zu bytes; a key has at least %u", path,
				   n, FL__TRANSPORT_PSK_MIN);
	*ret_len = n;
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
	if (tool_parse_num(colon + 1, 65535, &v))
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_DIR, O_INSECURE, O_MAX, O_IDLE, O_IO, O_READY, O_KEY, O_CERT,
	       O_CKEY, O_CA, O_VERIFY };
	static const struct option lo[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "dir", required_argument, NULL, O_DIR },
		{ "insecure", no_argument, NULL, O_INSECURE },
		{ "max-clients", required_argument, NULL, O_MAX },
		{ "idle-timeout", required_argument, NULL, O_IDLE },
		{ "io-timeout", required_argument, NULL, O_IO },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "key", required_argument, NULL, O_KEY },
		{ "tls-cert", required_argument, NULL, O_CERT },
		{ "tls-key", required_argument, NULL, O_CKEY },
		{ "tls-ca", required_argument, NULL, O_CA },
		{ "verify-peer", no_argument, NULL, O_VERIFY },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct fl__pgsrv_opts o = { 0 };
	struct fl__pgsrv_stats st;
	const char *listen_arg = NULL;
	char host[256] = "";
	struct fl__transport_opts to = { 0 };
	struct fl__transport *transport = NULL;
	static uint8_t key[FL__TRANSPORT_PSK_MAX];
	const char *key_file = NULL;
	bool insecure = false, certs;
	char why[256];
	unsigned long v;
	struct stat sb;
	int c, r, ready = -1;

	if (argc > 1 && !strcmp(argv[1], "--demo"))
		return serve_demo(argc - 1, argv + 1);
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
		case O_KEY:
			key_file = optarg;
			break;
		case O_CERT:
			to.cert_file = optarg;
			break;
		case O_CKEY:
			to.key_file = optarg;
			break;
		case O_CA:
			to.ca_file = optarg;
			break;
		case O_VERIFY:
			to.verify_client = true;
			break;
		case O_MAX:
			if (tool_parse_num(optarg, 65536, &v) || !v)
				return usage_error(SUB, "--max-clients %s: a number in 1..65536",
						   optarg);
			o.max_clients = (unsigned int)v;
			break;
		case O_IDLE:
		case O_IO:
			if (tool_parse_num(optarg, 86400000, &v) || !v)
				return usage_error(SUB, "--%s %s: milliseconds in 1..86400000",
						   c == O_IDLE ? "idle-timeout" : "io-timeout", optarg);
			if (c == O_IDLE)
				o.idle_timeout_ms = (int)v;
			else
				o.io_timeout_ms = (int)v;
			break;
		case O_READY:
			if (tool_parse_num(optarg, 1u << 20, &v))
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
	certs = to.cert_file || to.key_file || to.ca_file || to.verify_client;
	if ((key_file != NULL) + certs + insecure > 1)
		return usage_error(SUB, "--key, the --tls-* options and --insecure exclude each "
				   "other");
	if (!key_file && !certs && !insecure)
		return usage_error(SUB, "say how clients connect: --key FILE (TLS with a shared "
				   "key), --tls-cert and --tls-key (TLS with certificates), or "
				   "--insecure for plain TCP");
	if (certs && (!to.cert_file || !to.key_file))
		return usage_error(SUB, "certificates: --tls-cert and --tls-key are both needed");
	if (to.verify_client != (to.ca_file != NULL))
		return usage_error(SUB, "--verify-peer and --tls-ca go together");
	if (key_file) {
		int r2 = read_key(key_file, key, sizeof(key), &to.psk_len);

		if (r2)
			return r2;
		to.psk = key;
	}
	to.mode = key_file ? FL__TRANSPORT_PSK : certs ? FL__TRANSPORT_X509 : FL__TRANSPORT_PLAIN;
	r = tool_ready_check(SUB, ready);
	if (r)
		return r;
	o.host = host[0] ? host : NULL;
	fl_set_log_fn(lib_log);
	r = fl__transport_new(&to, &transport, why, sizeof(why));
	if (r < 0) {
		fprintf(stderr, "faultline: serve: %s\n", why);
		return r == -EINVAL ? EXIT_USAGE : 1;
	}
	o.transport = transport;
	r = fl__pgsrv_create(&o, &the_server);
	if (r < 0) {
		fprintf(stderr, "faultline: serve: cannot start: %s\n", strerror(-r));
		fl__transport_free(transport);
		return 1;
	}
	tool_signals(on_signal, false);
	if (strchr(host, ':'))
		printf("listening on [%s]:%u (%s)\n", host, fl__pgsrv_port(the_server),
		       fl__transport_name(transport));
	else
		printf("listening on %s:%u (%s)\n", host[0] ? host : "*",
		       fl__pgsrv_port(the_server), fl__transport_name(transport));
	fflush(stdout);
	if (tool_ready_signal(SUB, ready) < 0) {
		fl__pgsrv_destroy(the_server);
		fl__transport_free(transport);
		return EXIT_USAGE;
	}
	r = fl__pgsrv_run(the_server);
	fl__pgsrv_stats(the_server, &st);
	fl__pgsrv_destroy(the_server);
	the_server = NULL;
	fl__transport_free(transport);
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
