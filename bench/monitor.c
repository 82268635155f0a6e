/* SPDX-License-Identifier: MIT */
/* faultline bench monitor: fault latency through the monitor, and the cost of each event. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench monitor"
#define REMAP_PAGES 16
#define MAX_RUNS 1000

/*
 * One run: the in-process THREADS pager (bench_lat_run), then a client
 * process attached to a monitor process, both reading the same number of
 * fresh pattern pages. The client then times each event type against the
 * monitor, and the same calls again on memory no userfaultfd watches.
 */

enum ev_kind { EV_FORK, EV_CHILD, EV_REMAP, EV_REMOVE, EV_UNMAP, EV_COUNT };

static const char *const ev_names[EV_COUNT] = { "fork", "child", "remap", "remove", "unmap" };
static const char *const ev_what[EV_COUNT] = {
	"fork() in the parent: it returns once the monitor has read FORK",
	"fork() in the child: it returns once the child holds its own userfaultfd",
	"mremap() of 16 pages (REMAP and UNMAP of the old range)",
	"madvise(MADV_DONTNEED) of one page (REMOVE)",
	"munmap() of one page (UNMAP)",
};

enum metric { M_MEAN, M_P50, M_P90, M_P99, M_FPS, M_COUNT };

static const char *const metric_names[M_COUNT] = { "mean_ns", "p50_ns", "p90_ns", "p99_ns",
						   "faults_per_s" };

/* What the client process hands back (a shared mapping). */
struct shared {
	int status;			/* 0, or -errno */
	bool fork_ok;			/* EVENT_FORK was available */
	char msg[256];
	double secs;
	double ev_ns[EV_COUNT][2];	/* median per call: [0] with the monitor, [1] without */
	uint64_t lat[];			/* pages */
};

struct bopts {
	unsigned int runs;
	size_t pages;
	size_t events;
	unsigned int threads;
	bool json;
};

void bench_monitor_usage(FILE *out)
{
	fprintf(out,
		"usage: faultline bench monitor [--runs N] [--pages N] [--events N]\n"
		"                               [--threads N] [--json]\n\n"
		"Fault latency through an out-of-process monitor (the faulting client is\n"
		"another process than the monitor), next to the in-process THREADS pager, in\n"
		"the same runs; then the cost of each event the monitor must read before the\n"
		"client goes on (fork, mremap, MADV_DONTNEED, munmap), next to the same call\n"
		"on memory no userfaultfd watches; and how long fork() takes in the child,\n"
		"which claims a copy of its own userfaultfd from the monitor before it returns.\n\n"
		"  --runs N      runs (default 5)\n"
		"  --pages N     faults per mode and run (default 20000)\n"
		"  --events N    calls per event type and run (default 200)\n"
		"  --threads N   handler threads of both pagers (default 1)\n"
		"  --json        one JSON document instead of the tables\n");
}

/* --------------------------------------------------------------- server */

static struct fl_monitor_server *bench_server;

static void on_term(int sig)
{
	(void)sig;
	fl_monitor_server_stop(bench_server);
}

/* The monitor, in a process of its own: no thread of it shares a CPU queue with the client's. */
static pid_t server_start(const char *name, unsigned int threads, struct bench_err *e)
{
	int ready[2];
	pid_t pid;
	char c;

	if (pipe2(ready, O_CLOEXEC) < 0)
		return bench_fail(e, -errno, "pipe");
	pid = fork();
	if (pid < 0)
		return bench_fail(e, -errno, "fork");
	if (pid == 0) {
		struct fl_monitor_server_opts o = {
			.sz = sizeof(o),
			.socket_path = name,
			.threads = threads,
			.probe_ms = 100,
		};
		struct sigaction sa = { .sa_handler = on_term };

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		close(ready[0]);
		/* Quiet: children that exit at once make registering fail now and then. */
		fl_set_log_fn(NULL);
		if (fl_monitor_server_create(&o, &bench_server) < 0)
			_exit(1);
		sigaction(SIGTERM, &sa, NULL);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		fl_monitor_server_run(bench_server);
		fl_monitor_server_destroy(bench_server);
		_exit(0);
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) {
		close(ready[0]);
		waitpid(pid, NULL, 0);
		return bench_fail(e, -EIO, "the monitor did not start (fl_monitor_server_create)");
	}
	close(ready[0]);
	return pid;
}

/* --------------------------------------------------------------- client */

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median_of(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_dbl);
	return n ? v[n / 2] : 0;
}

/*
 * Time @n calls of one event type in [base, ...) laid out as the client's
 * mapping (remap area, remove pages, unmap pages). Returns the median ns.
 */
static double time_events(enum ev_kind k, uint8_t *remap, uint8_t *spare, uint8_t *remove,
			  uint8_t *unmap, size_t n, double *t)
{
	static volatile uint64_t *child_ns;
	size_t ps = BENCH_PAGE;

	if (!child_ns) {
		/* Where a child leaves the time fork() returned in it. */
		void *m = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		if (m == MAP_FAILED)
			return 0;
		child_ns = m;
	}

	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = fl__now_ns(), t1;
		pid_t pid;

		switch (k) {
		case EV_FORK:
			pid = fork();
			if (pid == 0)
				_exit(0);
			t1 = fl__now_ns();
			if (pid > 0)
				waitpid(pid, NULL, 0);
			break;
		case EV_CHILD:
			pid = fork();
			if (pid == 0) {
				*child_ns = fl__now_ns();
				_exit(0);
			}
			if (pid > 0)
				waitpid(pid, NULL, 0);
			t1 = pid > 0 ? *child_ns : fl__now_ns();
			break;
		case EV_REMAP: {
			uint8_t *from = i % 2 ? spare : remap, *to = i % 2 ? remap : spare;

			mremap(from, REMAP_PAGES * ps, REMAP_PAGES * ps,
			       MREMAP_MAYMOVE | MREMAP_FIXED, to);
			t1 = fl__now_ns();
			break;
		}
		case EV_REMOVE:
			madvise(remove + i * ps, ps, MADV_DONTNEED);
			t1 = fl__now_ns();
			break;
		default:
			munmap(unmap + i * ps, ps);
			t1 = fl__now_ns();
			break;
		}
		t[i] = (double)(t1 - t0);
	}
	return median_of(t, n);
}

/* The client's mapping: pages to fault, a remap area, its spare place, remove and unmap pages. */
struct layout {
	uint8_t *base, *remap, *spare, *remove, *unmap;
	size_t len;
};

static int layout_map(struct layout *l, size_t pages, size_t events)
{
	size_t ps = BENCH_PAGE;

	l->len = (pages + REMAP_PAGES + 2 * events) * ps;
	l->base = mmap(NULL, l->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	l->spare = mmap(NULL, REMAP_PAGES * ps, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (l->base == MAP_FAILED || l->spare == MAP_FAILED)
		return -ENOMEM;
	l->remap = l->base + pages * ps;
	l->remove = l->remap + REMAP_PAGES * ps;
	l->unmap = l->remove + events * ps;
	return 0;
}

static void events_all(struct shared *sh, const struct layout *l, size_t n, int col, double *t)
{
	/* Present pages, as a program's would be: every call then has real work to drop. */
	for (size_t i = 0; i < (REMAP_PAGES + 2 * n) * BENCH_PAGE; i += BENCH_PAGE)
		(void)((volatile uint8_t *)l->remap)[i];
	for (int k = 0; k < EV_COUNT; k++) {
		if ((k == EV_FORK || k == EV_CHILD) && col == 0 && !sh->fork_ok)
			continue;
		sh->ev_ns[k][col] = time_events(k, l->remap, l->spare, l->remove, l->unmap, n, t);
	}
}

static void client(const char *name, const struct bopts *o, struct shared *sh)
{
	struct fl_monitor_opts mo = { .sz = sizeof(mo), .policy = FL_MONITOR_FAIL_LOUD };
	struct layout l, plain;
	struct fl_monitor_region r;
	struct fl_monitor_client *c;
	double *t = malloc(o->events * sizeof(*t));
	uint64_t ns;
	int e;

	if (!t || layout_map(&l, o->pages, o->events) < 0 ||
	    layout_map(&plain, o->pages, o->events) < 0) {
		sh->status = -ENOMEM;
		return;
	}
	r = (struct fl_monitor_region){
		.addr = l.base,
		.len = l.len,
		.mem = FL_MEM_ANON,
		.store = FL_MONITOR_STORE_PATTERN,
		.seed = BENCH_PATTERN_SEED,
	};
	/* With the fork event if this process may have it (CAP_SYS_PTRACE), else without. */
	e = fl_monitor_attach(name, &r, 1, &mo, &c);
	sh->fork_ok = e == 0;
	if (e == -EOPNOTSUPP || e == -EPERM) {
		mo.flags = FL_MONITOR_DONTFORK;
		e = fl_monitor_attach(name, &r, 1, &mo, &c);
	}
	if (e < 0) {
		sh->status = e;
		snprintf(sh->msg, sizeof(sh->msg), "fl_monitor_attach: %s", strerror(-e));
		return;
	}
	ns = bench_walk_timed((const char *)l.base, o->pages, sh->lat);
	sh->secs = (double)ns / 1e9;
	if (fl_pattern_check(l.base, 0, o->pages * BENCH_PAGE, BENCH_PATTERN_SEED)) {
		sh->status = -EIO;
		snprintf(sh->msg, sizeof(sh->msg), "a page served through the monitor is wrong");
		return;
	}
	events_all(sh, &l, o->events, 0, t);
	fl_monitor_detach(c, FL_MONITOR_DETACH_KEEP);
	events_all(sh, &plain, o->events, 1, t);
	free(t);
}

static int client_run(const char *name, const struct bopts *o, struct shared *sh,
		      struct bench_err *e)
{
	pid_t pid;
	int st;

	memset(sh, 0, sizeof(*sh));
	pid = fork();
	if (pid < 0)
		return bench_fail(e, -errno, "fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fl_set_log_fn(NULL);
		client(name, o, sh);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) < 0)
		return bench_fail(e, -errno, "waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return bench_fail(e, -EIO, "the client process ended with status %#x", st);
	if (sh->status < 0)
		return bench_fail(e, sh->status, "client: %s", sh->msg);
	return 0;
}

/* ---------------------------------------------------------------- report */

static void lat_metrics(uint64_t *lat, size_t n, double secs, double *mv)
{
	stats_sort_u64(lat, n);
	mv[M_MEAN] = stats_mean_u64(lat, n);
	mv[M_P50] = (double)stats_percentile(lat, n, 50);
	mv[M_P90] = (double)stats_percentile(lat, n, 90);
	mv[M_P99] = (double)stats_percentile(lat, n, 99);
	mv[M_FPS] = secs > 0 ? (double)n / secs : 0;
}

static struct stats_spread spread(const double *v, unsigned int runs, size_t stride, size_t col)
{
	double x[MAX_RUNS], s[MAX_RUNS];

	for (unsigned int r = 0; r < runs; r++)
		x[r] = v[r * stride + col];
	return stats_spread_of(x, runs, s);
}

static void json_spread(const char *key, struct stats_spread s)
{
	printf("\"%s\":{\"median\":%.6g,\"min\":%.6g,\"max\":%.6g}", key, s.median, s.min, s.max);
}

static void report(const struct bopts *o, const struct bench_machine *m, const double *lm,
		   const double *ev, bool fork_ok)
{
	static const char *const modes[2] = { "thread", "monitor" };

	if (o->json) {
		printf("{\"benchmark\":\"monitor\",\"faultline\":\"%s\",\"machine\":{\"nproc\":%ld,"
		       "\"kernel\":\"%s\",\"arch\":\"%s\",\"clocksource\":\"%s\"},"
		       "\"options\":{\"runs\":%u,\"pages\":%zu,\"events\":%zu,\"threads\":%u},"
		       "\"faults\":[", fl_version(), m->nproc, m->release, m->arch, m->clocksource,
		       o->runs, o->pages, o->events, o->threads);
		for (int i = 0; i < 2; i++) {
			printf("%s{\"mode\":\"%s\"", i ? "," : "", modes[i]);
			for (int k = 0; k < M_COUNT; k++) {
				printf(",");
				json_spread(metric_names[k], spread(lm, o->runs, 2 * M_COUNT,
								    (size_t)i * M_COUNT + k));
			}
			printf("}");
		}
		printf("],\"events\":[");
		for (int k = 0; k < EV_COUNT; k++) {
			printf("%s{\"event\":\"%s\",", k ? "," : "", ev_names[k]);
			if ((k == EV_FORK || k == EV_CHILD) && !fork_ok)
				printf("\"monitor_ns\":null,");
			else {
				json_spread("monitor_ns", spread(ev, o->runs, 2 * EV_COUNT,
								 (size_t)k * 2));
				printf(",");
			}
			json_spread("plain_ns",
				    spread(ev, o->runs, 2 * EV_COUNT, (size_t)k * 2 + 1));
			printf("}");
		}
		printf("]}\n");
		return;
	}
	printf("faultline %s bench monitor\n", fl_version());
	printf("machine: %ld CPUs, %s %s %s, clocksource %s\n", m->nproc, m->sysname, m->release,
	       m->arch, m->clocksource);
	printf("%zu faults of 4 KiB per mode and run, %u runs interleaved; %u handler thread%s "
	       "per pager\n", o->pages, o->runs, o->threads, o->threads == 1 ? "" : "s");
	printf("thread: the in-process THREADS pager; monitor: a client process served by a "
	       "monitor process\n\n");
	printf("mode          mean      p50      p90      p99   faults/s\n");
	for (int i = 0; i < 2; i++) {
		printf("%-9s", modes[i]);
		for (int k = M_MEAN; k <= M_P99; k++)
			printf(" %8.2f", spread(lm, o->runs, 2 * M_COUNT, (size_t)i * M_COUNT + k)
						 .median / 1e3);
		printf(" %10.0f\n",
		       spread(lm, o->runs, 2 * M_COUNT, (size_t)i * M_COUNT + M_FPS).median);
	}
	printf("(µs; each column is the median over the runs)\n\n");
	printf("event     with monitor (min-max)      without     extra   one call is\n");
	for (int k = 0; k < EV_COUNT; k++) {
		struct stats_spread w = spread(ev, o->runs, 2 * EV_COUNT, (size_t)k * 2);
		struct stats_spread p = spread(ev, o->runs, 2 * EV_COUNT, (size_t)k * 2 + 1);

		if ((k == EV_FORK || k == EV_CHILD) && !fork_ok)
			printf("%-8s %8s %18s %12.2f %9s   %s\n", ev_names[k], "-", "",
			       p.median / 1e3, "-", "(no fork event here: needs CAP_SYS_PTRACE)");
		else
			printf("%-8s %8.2f (%7.2f-%7.2f) %12.2f %9.2f   %s\n", ev_names[k],
			       w.median / 1e3, w.min / 1e3, w.max / 1e3, p.median / 1e3,
			       (w.median - p.median) / 1e3, ev_what[k]);
	}
	printf("(µs per call, median of %zu calls per run, then over the runs; the caller blocks "
	       "until the monitor has read the event)\n", o->events);
}

/* ---------------------------------------------------------------- main */

static int parse(int argc, char **argv, struct bopts *o)
{
	static const struct option lo[] = {
		{ "runs", required_argument, NULL, 'r' },
		{ "pages", required_argument, NULL, 'p' },
		{ "events", required_argument, NULL, 'e' },
		{ "threads", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct bopts){ .runs = 5, .pages = 20000, .events = 200, .threads = 1 };
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end = NULL;
		unsigned long long v = optarg ? strtoull(optarg, &end, 10) : 0;
		bool bad = optarg && (!*optarg || *end || !v);

		switch (c) {
		case 'r':
			if (bad || v > MAX_RUNS)
				return usage_error(SUB, "--runs: 1 to %d", MAX_RUNS);
			o->runs = (unsigned int)v;
			break;
		case 'p':
			if (bad || v > (1ull << 24))
				return usage_error(SUB, "--pages: 1 to %llu", 1ull << 24);
			o->pages = (size_t)v;
			break;
		case 'e':
			if (bad || v > 100000)
				return usage_error(SUB, "--events: 1 to 100000");
			o->events = (size_t)v;
			break;
		case 't':
			if (bad || v > FL_PAGER_MAX_THREADS)
				return usage_error(SUB, "--threads: 1 to %d", FL_PAGER_MAX_THREADS);
			o->threads = (unsigned int)v;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			bench_monitor_usage(stdout);
			return -1;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	return 0;
}

int bench_monitor_main(int argc, char **argv)
{
	struct bench_lat_opts lo = { 0 };
	struct bench_machine m;
	struct bench_err e = { "" };
	struct shared *sh = MAP_FAILED;
	double *lm = NULL, *ev = NULL;
	uint64_t *lat = NULL;
	bool fork_ok = true;
	char name[64];
	struct bopts o;
	size_t shlen;
	pid_t srv = -1;
	int r, ret = 1;

	r = parse(argc, argv, &o);
	if (r)
		return r < 0 ? 0 : r;
	lo = (struct bench_lat_opts){ .pages = o.pages, .pager_threads = o.threads };
	shlen = sizeof(*sh) + o.pages * sizeof(uint64_t);
	sh = mmap(NULL, shlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	lat = malloc(o.pages * sizeof(*lat));
	lm = calloc((size_t)o.runs * 2 * M_COUNT, sizeof(*lm));
	ev = calloc((size_t)o.runs * 2 * EV_COUNT, sizeof(*ev));
	if (sh == MAP_FAILED || !lat || !lm || !ev) {
		fail(SUB, "allocating", -ENOMEM);
		goto out;
	}
	bench_machine_get(&m);
	bench_prewarm(4 * (o.pages + REMAP_PAGES + 2 * o.events) * BENCH_PAGE);
	snprintf(name, sizeof(name), "@fl-bench-monitor-%d", (int)getpid());
	srv = server_start(name, o.threads, &e);
	if (srv < 0) {
		ret = fail(SUB, e.msg, srv);
		goto out;
	}
	for (unsigned int run = 0; run < o.runs; run++) {
		struct bench_lat_result lr = { .lat = lat };
		double *mv = lm + (size_t)run * 2 * M_COUNT;

		if (isatty(STDERR_FILENO))
			fprintf(stderr, "run %u/%u\r", run + 1, o.runs);
		if (bench_lat_run(BENCH_LAT_THREAD, &lo, &lr, &e) < 0 ||
		    client_run(name, &o, sh, &e) < 0) {
			fprintf(stderr, "faultline: %s: %s\n", SUB, e.msg);
			goto out;
		}
		lat_metrics(lat, o.pages, lr.secs, mv);
		lat_metrics(sh->lat, o.pages, sh->secs, mv + M_COUNT);
		fork_ok &= sh->fork_ok;
		for (int k = 0; k < EV_COUNT; k++) {
			ev[(size_t)run * 2 * EV_COUNT + (size_t)k * 2] = sh->ev_ns[k][0];
			ev[(size_t)run * 2 * EV_COUNT + (size_t)k * 2 + 1] = sh->ev_ns[k][1];
		}
	}
	report(&o, &m, lm, ev, fork_ok);
	ret = 0;
out:
	if (srv > 0) {
		kill(srv, SIGTERM);
		waitpid(srv, NULL, 0);
	}
	if (sh != MAP_FAILED)
		munmap(sh, shlen);
	free(lat);
	free(lm);
	free(ev);
	return ret;
}
