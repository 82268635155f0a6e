/* SPDX-License-Identifier: MIT */
/* The runner itself: failure lines, unmatched patterns, scaled timeouts (run on fixtures). */
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"

/* Run this runner on @pattern, with @scale in FL_TEST_TIMEOUT_SCALE if not NULL. */
static void run_runner(struct t_run *r, const char *pattern, const char *scale)
{
	char self[PATH_MAX], env[64];
	char *argv[] = { "runner", (char *)pattern, NULL };
	ssize_t n;

	/* The path, not /proc/self/exe itself: valgrind follows an exec of the former only. */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	T_ASSERT_SYS(n);
	self[n] = '\0';
	if (scale)
		snprintf(env, sizeof(env), "FL_TEST_TIMEOUT_SCALE=%s", scale);
	t_run_capture(r, self, argv, scale ? env : "FL_TEST_TIMEOUT_SCALE");
}

static long nr_hugepages(void)
{
	char buf[32] = "";
	int fd = open("/proc/sys/vm/nr_hugepages", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	T_ASSERT_SYS(fd);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	T_ASSERT(n > 0);
	return atol(buf);
}

/*
 * The huge pages the runner reserved for hugetlb tests stay reserved when a
 * test's child calls exit(): it inherits the runner's atexit() handler,
 * which used to give them back and fail every hugetlb test after it.
 */
TEST(runner_child_exit_keeps_hugepages)
{
	/* The runners' lock: no other runner on this machine changes the count meanwhile. */
	int lk = open("/tmp/faultline-test-hugepages.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	long before;
	int st;
	pid_t pid;

	T_ASSERT_SYS(lk);
	T_ASSERT_SYS(flock(lk, LOCK_EX));
	before = nr_hugepages();
	pid = fork();
	T_ASSERT_SYS(pid);
	if (pid == 0)
		exit(0);
	T_ASSERT_SYS(waitpid(pid, &st, 0));
	T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	T_ASSERT_EQ(nr_hugepages(), before);
	close(lk);
}

/* --------------------------------------------------------------- fixtures */
/* T_FIXTURE: run only when named exactly, by the tests below. */

static void failing_child(void *arg)
{
	(void)arg;
	T_ASSERT_EQ(6 * 7, 41);
}

TEST(runner_fixture_fails)
{
	fprintf(stderr, "runner_fixture_fails: a line of the test on stderr\n");
	T_ASSERT_EQ(t_run_child(failing_child, NULL), 0);
}

TEST(runner_fixture_hangs)
{
	for (;;)
		pause();
}

TEST(runner_fixture_skips)
{
	T_SKIP("a resource the fixture lacks: %d of %d", 0, 1);
}

/* ------------------------------------------------------------------ tests */

/* A typo in a pattern is an error, not "0 passed, 0 failed". */
TEST(runner_unmatched_pattern_fails)
{
	static struct t_run r;

	run_runner(&r, "no_such_test_anywhere", NULL);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "no test matches 'no_such_test_anywhere'"));
	T_ASSERT(!strstr(r.out, "passed"));
	/* A fixture is run when named exactly, never by a pattern that merely contains it. */
	run_runner(&r, "runner_fixture_*", NULL);
	T_ASSERT_EQ(r.status, 2);
}

/* The FAIL line carries the assertion that failed (here in a forked child), on stdout. */
TEST(runner_fail_line_has_reason)
{
	static struct t_run r;

	run_runner(&r, "runner_fixture_fails", NULL);
	T_ASSERT_EQ(r.status, 1);
	/* The first failure (the child's) is on the line; the test's own follows it, on stdout. */
	T_ASSERT(strstr(r.out, "FAIL runner_fixture_fails (exit 1: test/test-runner.c:"));
	T_ASSERT(strstr(r.out, ": 6 * 7 == 41: 42 != 41)\n"));
	T_ASSERT(strstr(r.out, "    also: test/test-runner.c:"));
	T_ASSERT(strstr(r.out, ": t_run_child(failing_child, NULL) == 0: 256 != 0\n"));
	T_ASSERT(strstr(r.out, "0 passed, 1 failed, 0 skipped\n"));
	T_ASSERT(strstr(r.err, "a line of the test on stderr"));
	T_ASSERT(!strstr(r.err, "test-runner.c"));
	run_runner(&r, "runner_fixture_skips", NULL);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(strstr(r.out, "SKIP runner_fixture_skips (a resource the fixture lacks: 0 of 1)\n"));
}

/* The timeout is tests.h's (1 s here) times the build's factor times FL_TEST_TIMEOUT_SCALE. */
TEST(runner_timeout_scaled)
{
	static struct t_run r;
	char want[96], scale[32];

	/* 2 s whatever the build: the variable cancels a sanitizer build's factor. */
	snprintf(scale, sizeof(scale), "%.17g", 2.0 / t_build_timeout_scale());
	run_runner(&r, "runner_fixture_hangs", scale);
	T_ASSERT_EQ(r.status, 1);
	snprintf(want, sizeof(want), "FAIL runner_fixture_hangs (timeout after 2s)\n");
	T_ASSERT(strstr(r.out, want));
	run_runner(&r, "runner_fixture_hangs", "0");
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "FL_TEST_TIMEOUT_SCALE=0: expected a number"));
}
