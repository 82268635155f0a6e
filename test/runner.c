/* SPDX-License-Identifier: MIT */
/* The test runner: one forked child per test, with a timeout, skips by feature. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"

#define DEFAULT_TIMEOUT 10
#define SCALE_ENV "FL_TEST_TIMEOUT_SCALE"

#define HUGE_PAGES_WANTED 32
#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

struct test {
	const char *name;
	void (*fn)(void);
	uint64_t feats;
	uint32_t flags;
	unsigned int timeout;
};

#define T_ENTRY(n, f, fl, to) { #n, test_##n, (f), (fl), (to) },
static const struct test tests[] = { T_ALL_TESTS(T_ENTRY) };
#undef T_ENTRY

static long saved_hugepages = -1;
static int huge_state;	/* 0 unknown, 1 available, -1 not */
static char huge_reason[128];

static long read_nr_hugepages(void)
{
	FILE *f = fopen(NR_HUGEPAGES, "re");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int write_nr_hugepages(long v)
{
	FILE *f = fopen(NR_HUGEPAGES, "we");
	int ok;

	if (!f)
		return -1;
	ok = fprintf(f, "%ld\n", v) > 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

/*
 * Runners may run side by side (two builds on one machine): each adds its
 * own HUGE_PAGES_WANTED to the pool and takes exactly those away at exit,
 * read-modify-write under one lock, so no runner releases another's pages.
 */
#define HUGE_LOCK "/tmp/faultline-test-hugepages.lock"

static int adjust_hugepages(long delta)
{
	int lk = open(HUGE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600), r = -1;
	long v;

	if (lk < 0 || flock(lk, LOCK_EX) < 0)
		goto out;
	v = read_nr_hugepages();
	if (v < 0)
		goto out;
	if (v + delta < 0)
		delta = -v;
	if (write_nr_hugepages(v + delta) < 0)
		goto out;
	r = 0;
	if (delta > 0 && read_nr_hugepages() < v + delta) {
		write_nr_hugepages(v);	/* not all of them: give back what we got */
		r = -1;
	}
out:
	if (lk >= 0)
		close(lk);
	return r;
}

static pid_t huge_owner;	/* the runner that reserved the huge pages */

/*
 * Only the runner that reserved them gives them back: a forked test child
 * inherits the atexit() and the signal handlers, and one that calls exit()
 * must not take the pages from the tests after it.
 */
static void restore_hugepages(void)
{
	if (saved_hugepages >= 0 && getpid() == huge_owner) {
		adjust_hugepages(-HUGE_PAGES_WANTED);
		saved_hugepages = -1;
	}
}

static void on_signal(int sig)
{
	restore_hugepages();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Make sure free 2 MiB pages exist for the hugetlb tests; reserve them as root, restore at exit. */
static bool ensure_hugepages(void)
{
	struct fl_features f;
	uint64_t free_pages = 0;

	if (huge_state)
		return huge_state > 0;
	huge_state = -1;
	fl_probe(&f);
	for (uint32_t i = 0; i < f.n_huge_sizes; i++)
		if (f.huge_sizes[i].size == 2u << 20)
			free_pages = f.huge_sizes[i].free;
	/* Root reserves its own pages even if some are free: they may be another runner's. */
	if (free_pages >= HUGE_PAGES_WANTED && geteuid() != 0) {
		huge_state = 1;
		return true;
	}
	if (geteuid() != 0) {
		snprintf(huge_reason, sizeof(huge_reason),
			 "needs %d free 2 MiB huge pages; only root can reserve them",
			 HUGE_PAGES_WANTED);
		return false;
	}
	saved_hugepages = read_nr_hugepages();
	if (saved_hugepages < 0) {
		snprintf(huge_reason, sizeof(huge_reason), "cannot read %s", NR_HUGEPAGES);
		return false;
	}
	huge_owner = getpid();
	atexit(restore_hugepages);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (adjust_hugepages(HUGE_PAGES_WANTED) < 0) {
		snprintf(huge_reason, sizeof(huge_reason),
			 "could not reserve %d huge pages (memory too fragmented?)",
			 HUGE_PAGES_WANTED);
		saved_hugepages = -1;	/* nothing of ours to give back */
		return false;
	}
	huge_state = 1;
	return true;
}

static double now(void)
{
	return (double)fl__now_ns() / 1e9;
}

static bool matches(const char *pattern, const char *name)
{
	return !fnmatch(pattern, name, 0) || strstr(name, pattern);
}

/* A T_FIXTURE test runs only when a pattern is its exact name (a test runs the runner on it). */
static bool selected(const struct test *t, int argc, char **argv, int first)
{
	if (t->flags & T_FIXTURE) {
		for (int i = first; i < argc; i++)
			if (!strcmp(argv[i], t->name))
				return true;
		return false;
	}
	if (first >= argc)
		return true;
	for (int i = first; i < argc; i++)
		if (matches(argv[i], t->name))
			return true;
	return false;
}

/* Every pattern must name at least one test: a typo must not pass as "0 tests, all fine". */
static bool patterns_match(const struct test *t, size_t n, int argc, char **argv, int first)
{
	bool ok = true;

	for (int i = first; i < argc; i++) {
		size_t k = 0;

		while (k < n && ((t[k].flags & T_FIXTURE) ? strcmp(argv[i], t[k].name) :
			       !matches(argv[i], t[k].name)))
			k++;
		if (k == n) {
			fprintf(stderr, "runner: no test matches '%s' (-l lists them)\n", argv[i]);
			ok = false;
		}
	}
	return ok;
}

/* FL_TEST_TIMEOUT_SCALE times the build's factor; -1 if the variable is not a positive number. */
static double timeout_scale(void)
{
	const char *env = getenv(SCALE_ENV);
	double v;
	char *end;

	if (!env || !*env)
		return t_build_timeout_scale();
	errno = 0;
	v = strtod(env, &end);
	if (errno || *end || !(v > 0) || v > 1000)
		return -1;
	return v * t_build_timeout_scale();
}

/* Why @t cannot run here, or NULL. */
static const char *missing(const struct test *t, const struct fl_features *f, char *buf,
			   size_t len)
{
	uint64_t lack;

	if ((t->flags & T_UFFD) && f->default_path == FL_UFFD_PATH_AUTO)
		return "needs userfaultfd";
	if ((t->flags & T_ROOT) && geteuid() != 0)
		return "needs root";
	if ((t->flags & T_KFAULTS) && f->default_path == FL_UFFD_PATH_USER_ONLY)
		return "needs a userfaultfd for kernel-mode faults too (only user-mode-only here)";
	lack = t->feats & ~f->features;
	if (lack) {
		int n = snprintf(buf, len, "needs");

		for (uint64_t bit = 1; bit && bit <= lack; bit <<= 1)
			if ((lack & bit) && n > 0 && (size_t)n < len)
				n += snprintf(buf + n, len - (size_t)n, " %s", fl_feature_name(bit));
		return buf;
	}
	if ((t->flags & T_HUGETLB) && !ensure_hugepages())
		return huge_reason;
	return NULL;
}

static unsigned int scaled(unsigned int secs, double scale)
{
	/* The epsilon keeps 1 s x 3 x 0.6666666666666666 at 2 s. */
	double v = ceil((double)secs * scale - 1e-6);

	return v < 1 ? 1 : v > 86400 ? 86400 : (unsigned int)v;
}

/*
 * One line, on stdout like PASS: what ended the test and, when an assertion
 * failed (in the test or in a child it forked), which one and why.
 */
static void fail_line(const char *name, int status, unsigned int timeout,
		      const struct t_report *report)
{
	char how[96];

	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		snprintf(how, sizeof(how), "timeout after %us", timeout);
	else if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "killed by signal %d, %s", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(how, sizeof(how), "exit %d", WEXITSTATUS(status));
	if (report->taken && report->skipped)	/* a skip in a child, the test went on */
		printf("FAIL %s (%s; a child of the test skipped: %s)\n", name, how, report->reason);
	else if (report->taken)
		printf("FAIL %s (%s: %s)\n", name, how,
		       report->reason[0] ? report->reason : "an assertion failed; its reason was lost");
	else
		printf("FAIL %s (%s)\n", name, how);
}

int main(int argc, char **argv)
{
	size_t n = sizeof(tests) / sizeof(tests[0]);
	const char *req = getenv("FL_REQUIRE_UFFD");
	bool require = req && !strcmp(req, "1");
	unsigned int passed = 0, failed = 0, skipped = 0;
	struct t_report *report;
	struct fl_features f;
	double scale;
	int first = 1;
	bool list = false, pure = false;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (; first < argc && argv[first][0] == '-'; first++) {
		if (!strcmp(argv[first], "-l")) {
			list = true;
		} else if (!strcmp(argv[first], "--pure")) {
			pure = true;
		} else if (!strcmp(argv[first], "-h") || !strcmp(argv[first], "--help")) {
			printf("usage: %s [-l] [--pure] [PATTERN...]\n"
			       "Runs every test (or those whose name matches a PATTERN) in its own\n"
			       "process. -l lists them; --pure leaves out the kernel and stress tests,\n"
			       "e.g. for valgrind, which cannot run a thread that resolves another\n"
			       "thread's userfault. A PATTERN that matches no test is an error.\n"
			       "FL_REQUIRE_UFFD=1 turns 'needs userfaultfd' skips into failures.\n"
			       "FL_TEST_TIMEOUT_SCALE=F multiplies every test's timeout by F (a slow\n"
			       "machine, valgrind); sanitizer builds already multiply it by %g.\n",
			       argv[0], t_build_timeout_scale());
			return 0;
		} else {
			fprintf(stderr, "runner: unknown option %s (try --help)\n", argv[first]);
			return 2;
		}
	}
	if (!patterns_match(tests, n, argc, argv, first))
		return 2;
	scale = timeout_scale();
	if (scale < 0) {
		fprintf(stderr, "runner: %s=%s: expected a number > 0 and <= 1000\n", SCALE_ENV,
			getenv(SCALE_ENV));
		return 2;
	}
	t_set_timeout_scale(scale);
	if (list) {
		for (size_t i = 0; i < n; i++)
			if (selected(&tests[i], argc, argv, first) &&
			    !(pure && (tests[i].flags & (T_UFFD | T_STRESS))))
				printf("%s\n", tests[i].name);
		return 0;
	}

	report = mmap(NULL, sizeof(*report), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		      -1, 0);
	if (report == MAP_FAILED) {
		perror("runner: mmap");
		return 1;
	}
	if (scale != 1.0)
		printf("# timeouts x%g (%s%s%s)\n", scale, t_build_kind() ? t_build_kind() : "",
		       t_build_kind() && scale != t_build_timeout_scale() ? ", " : "",
		       scale != t_build_timeout_scale() ? SCALE_ENV : "");
	fl_probe(&f);
	if (f.default_path == FL_UFFD_PATH_AUTO)
		printf("# userfaultfd unavailable here (syscall: %s, dev: %s, user-only: %s)%s\n",
		       strerror(-f.path_error[FL_UFFD_PATH_SYSCALL]),
		       strerror(-f.path_error[FL_UFFD_PATH_DEV]),
		       strerror(-f.path_error[FL_UFFD_PATH_USER_ONLY]),
		       require ? "; FL_REQUIRE_UFFD=1: kernel tests fail" : "");

	for (size_t i = 0; i < n; i++) {
		const struct test *t = &tests[i];
		unsigned int timeout = scaled(t->timeout ? t->timeout : DEFAULT_TIMEOUT, scale);
		char why[256];
		const char *skip;
		double t0;
		int status;
		pid_t pid;

		if (!selected(t, argc, argv, first) || (pure && (t->flags & (T_UFFD | T_STRESS))))
			continue;
		skip = missing(t, &f, why, sizeof(why));
		if (skip) {
			if (require && (t->flags & T_UFFD) && f.default_path == FL_UFFD_PATH_AUTO) {
				printf("FAIL %s (%s, and FL_REQUIRE_UFFD=1)\n", t->name, skip);
				failed++;
			} else {
				printf("SKIP %s (%s)\n", t->name, skip);
				skipped++;
			}
			continue;
		}
		fflush(stdout);
		fflush(stderr);
		memset(report, 0, sizeof(*report));
		t0 = now();
		pid = fork();
		if (pid < 0) {
			perror("runner: fork");
			return 1;
		}
		if (pid == 0) {
			setpgid(0, 0);
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			t_report = report;
			alarm(timeout);
			t->fn();
			fflush(stdout);
			_exit(0);
		}
		while (waitpid(pid, &status, 0) < 0)
			;
		kill(-pid, SIGKILL);	/* anything the test left behind */
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !report->taken) {
			printf("PASS %s (%.2fs)\n", t->name, now() - t0);
			passed++;
		} else if (WIFEXITED(status) && WEXITSTATUS(status) == 77 &&
			   (!report->taken || report->skipped)) {
			if (report->skipped)
				printf("SKIP %s (%s)\n", t->name, report->reason);
			else
				printf("SKIP %s\n", t->name);
			skipped++;
		} else {
			fail_line(t->name, status, timeout, report);
			failed++;
		}
	}
	restore_hugepages();
	printf("%u passed, %u failed, %u skipped\n", passed, failed, skipped);
	return failed ? 1 : 0;
}
