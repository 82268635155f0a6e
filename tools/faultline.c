/* SPDX-License-Identifier: MIT */
/* The faultline command: dispatches to one subcommand per file in tools/. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultline.h"
#include "tool.h"

static const struct fl_subcommand subcommands[] = {
	{ "probe", "show what userfaultfd can do on this machine", cmd_probe, usage_probe },
	{ "bench", "measure fault latency, fill throughput and scaling", cmd_bench, usage_bench },
	{ "migrate", "live-migrate a running program's memory (post-copy)", cmd_migrate,
	  usage_migrate },
	{ "monitor", "serve other processes' memory (and Firecracker's) over a socket",
	  cmd_monitor, usage_monitor },
	{ "snapshot", "look into, verify, convert and merge snapshot files", cmd_snapshot,
	  usage_snapshot },
	{ "serve", "serve the pages of files over TCP (a page server)", cmd_serve, usage_serve },
};

#define N_SUB (sizeof(subcommands) / sizeof(subcommands[0]))

int usage_error(const char *sub, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "faultline: %s%s", sub ? sub : "", sub ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'faultline %s%s--help'.\n", sub ? sub : "", sub ? " " : "");
	return EXIT_USAGE;
}

int fail(const char *sub, const char *what, int err)
{
	fprintf(stderr, "faultline: %s: %s: %s\n", sub, what, strerror(err < 0 ? -err : err));
	return 1;
}

int tool_parse_size(const char *s, uint64_t max, uint64_t *ret)
{
	unsigned long long v, mult = 1;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mult = 1ull << 10; end++; break;
	case 'm': case 'M': mult = 1ull << 20; end++; break;
	case 'g': case 'G': mult = 1ull << 30; end++; break;
	default: break;
	}
	if (mult > 1 && (!strcmp(end, "iB") || !strcmp(end, "B")))
		end += strlen(end);
	if (*end || v > max / mult)
		return -EINVAL;
	*ret = v * mult;
	return 0;
}

int tool_parse_num(const char *s, unsigned long max, unsigned long *ret)
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

int tool_ready_check(const char *sub, int fd)
{
	int fl;

	if (fd < 0)
		return 0;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return usage_error(sub, "--ready-fd %d: %s", fd, strerror(errno));
	if ((fl & O_ACCMODE) == O_RDONLY)
		return usage_error(sub, "--ready-fd %d: not open for writing", fd);
	return 0;
}

int tool_ready_signal(const char *sub, int fd)
{
	char one = 1;

	if (fd < 0)
		return 0;
	if (write(fd, &one, 1) != 1) {
		fprintf(stderr, "faultline: %s: --ready-fd %d: %s\n", sub, fd, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

void tool_signals(void (*fn)(int), bool usr1)
{
	struct sigaction sa = { .sa_handler = fn };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (usr1)
		sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void tool_log(enum fl_log_level level, const char *msg)
{
	if (level <= FL_LOG_WARN)
		fprintf(stderr, "faultline: %s\n", msg);
}

static void usage(FILE *out)
{
	fprintf(out, "usage: faultline [--help] [--version] COMMAND [ARGS]\n\n"
		     "User-space paging for Linux, on userfaultfd.\n\nCommands:\n");
	for (size_t i = 0; i < N_SUB; i++)
		fprintf(out, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
	fprintf(out, "\n'faultline COMMAND --help' describes one command; man faultline(1).\n");
}

int main(int argc, char **argv)
{
	fl_set_log_fn(tool_log);
	if (argc < 2)
		return usage_error(NULL, "no command given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("faultline %s\n", fl_version());
		return 0;
	}
	for (size_t i = 0; i < N_SUB; i++) {
		if (strcmp(argv[1], subcommands[i].name))
			continue;
		/* bench gives each benchmark its own help. */
		for (int j = 2; j < argc && subcommands[i].run != cmd_bench; j++)
			if (!strcmp(argv[j], "--help") || !strcmp(argv[j], "-h")) {
				subcommands[i].usage(stdout);
				return 0;
			}
		return subcommands[i].run(argc - 1, argv + 1);
	}
	return usage_error(NULL, "unknown command '%s'", argv[1]);
}
