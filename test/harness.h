/* SPDX-License-Identifier: MIT */
/* Test harness: assertions, skips and helpers shared by every test-*.c file. */
#ifndef FL_TEST_HARNESS_H
#define FL_TEST_HARNESS_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "faultline.h"

/* Requirement flags of a test (the FL_FEAT_* bits it needs are listed separately). */
enum t_flags {
	T_UFFD = 1u << 0,	/* needs a working userfaultfd at all */
	T_HUGETLB = 1u << 1,	/* needs free 2 MiB huge pages (the runner reserves them as root) */
	T_ROOT = 1u << 2,	/* needs to be root */
	T_FIXTURE = 1u << 3,	/* run only when named exactly: a test runs the runner on it */
	T_STRESS = 1u << 4,	/* many threads racing: --pure (valgrind, which runs one thread
				   at a time) leaves it out like the kernel tests */
	T_KFAULTS = 1u << 5,	/* needs a userfaultfd that also takes kernel-mode faults (not
				   only user-mode-only: live snapshots) */
};

#define TEST(name) void test_##name(void)

/*
 * Where t_fail() (or t_skip()) leaves the first failure of a test for the
 * runner, which prints it on the test's FAIL (SKIP) line. The runner maps it shared before
 * forking the test, so a failure in a forked child of the test lands
 * there too. NULL outside the runner: t_fail() then prints to stdout.
 */
struct t_report {
	int taken;		/* set atomically by the first failure (or skip) */
	bool skipped;		/* it was a t_skip() */
	char reason[1024];
};
extern struct t_report *t_report;

/*
 * The factor the runner multiplies every test's timeout by (a sanitizer
 * build's factor times FL_TEST_TIMEOUT_SCALE). A test that passes its own
 * deadline to a call, as a bound on a wait that must succeed, scales it
 * with t_ms() so that it holds wherever the runner's timeout holds.
 */
double t_timeout_scale(void);
/* The factor of this build alone (3 with ASan, 10 with TSan, else 1) and its name (or NULL). */
double t_build_timeout_scale(void);
const char *t_build_kind(void);
void t_set_timeout_scale(double scale);
int t_ms(int ms);

void t_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
void t_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define T_ASSERT(cond)                                                          \
	do {                                                                    \
		if (!(cond))                                                    \
			t_fail(__FILE__, __LINE__, "assertion failed: %s", #cond); \
	} while (0)

#define T_ASSERT_EQ(a, b)                                                            \
	do {                                                                         \
		long long _a = (long long)(a), _b = (long long)(b);                  \
		if (_a != _b)                                                        \
			t_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, \
			       _a, _b);                                              \
	} while (0)

#define T_ASSERT_NE(a, b)                                                            \
	do {                                                                         \
		long long _a = (long long)(a), _b = (long long)(b);                  \
		if (_a == _b)                                                        \
			t_fail(__FILE__, __LINE__, "%s != %s: both %lld", #a, #b, _a);  \
	} while (0)

/* An fl_* call that must succeed (return >= 0). */
#define T_ASSERT_OK(expr)                                                        \
	do {                                                                     \
		long long _r = (long long)(expr);                                \
		if (_r < 0)                                                      \
			t_fail(__FILE__, __LINE__, "%s: %s (%lld)", #expr,       \
			       strerror((int)-_r), _r);                          \
	} while (0)

/* An fl_* call that must fail with -err. */
#define T_ASSERT_ERR(expr, err)                                                          \
	do {                                                                             \
		long long _r = (long long)(expr);                                        \
		if (_r != -(long long)(err))                                             \
			t_fail(__FILE__, __LINE__, "%s: expected -%s, got %lld (%s)", #expr, \
			       #err, _r, _r < 0 ? strerror((int)-_r) : "success");       \
	} while (0)

/* A libc call that must not return -1 (errno is shown). */
#define T_ASSERT_SYS(expr)                                                               \
	do {                                                                             \
		if ((long long)(expr) == -1)                                             \
			t_fail(__FILE__, __LINE__, "%s: %s", #expr, strerror(errno));    \
	} while (0)

#define T_SKIP(...) t_skip(__VA_ARGS__)

/* ---------------------------------------------------------------- helpers */

size_t t_page_size(void);

/* fl_uffd_open with @features required (and NONBLOCK if @nonblock); fails the test on error. */
struct fl_uffd *t_uffd_open(uint64_t features, bool nonblock);

/* Mappings (fail the test on error). memfd/hugetlb also return the memfd in *fd. */
void *t_map_anon(size_t len);
void *t_map_memfd(size_t len, int *fd);
void *t_map_hugetlb(size_t len, int *fd);
/* The same memfd mapped a second time, shared (for filling the page cache). */
void *t_map_fd(int fd, size_t len);
/* An anonymous mapping aligned to @align (e.g. 2 MiB for THP). */
void *t_map_aligned(size_t len, size_t align);

/*
 * Two adjacent places of @len bytes for a mapping the test moves back and
 * forth with mremap(): the one it is not at stays reserved (PROT_NONE), as
 * a hole would take the next mapping of the process (a thread's stack),
 * which the next move would replace. t_places_reserve() moves @mem (@len
 * bytes) to at[0]; t_places_move() to the other place, reserving the one
 * it left. Touching the reserved place gets SIGSEGV.
 */
struct t_places {
	uint8_t *at[2];
	size_t len, moves;
	int cur;		/* the mapping is at at[cur] */
};
void t_places_reserve(struct t_places *pl, void *mem, size_t len);
void t_places_move(struct t_places *pl);
void t_places_free(struct t_places *pl);

/* Fill / check a page with a byte. */
void t_fill(void *p, size_t len, uint8_t byte);
bool t_all(const void *p, size_t len, uint8_t byte);

/* Start a thread running fn(arg); join it and return its result. */
typedef void *(*t_thread_fn)(void *);
unsigned long t_thread_start(t_thread_fn fn, void *arg);
void *t_thread_join(unsigned long tid);

/* Block until @fd is readable (poll, no timeout: the runner's alarm bounds it). */
void t_wait_readable(int fd);

/*
 * The dispatcher of a FL_PAGER_LOOP pager: a thread that calls
 * fl_pager_dispatch whenever the pager's fd is readable (failing the test on
 * an error), from t_loop_start until t_loop_stop, which joins it.
 */
struct t_loop {
	struct fl_pager *p;
	int stop;			/* an eventfd: written to stop the thread */
	unsigned long th;
};
void t_loop_start(struct t_loop *l, struct fl_pager *p);
void t_loop_stop(struct t_loop *l);

/* Read exactly one event; fail the test if it is not @type. */
struct fl_event t_read_event(struct fl_uffd *u, uint32_t type);

/* Whether the kernel offers every FL_FEAT_* bit in @feats. */
bool t_have(uint64_t feats);
/* A pager in @mode (threads 0 = default) with extra uffd @feats; fails the test on error. */
struct fl_pager *t_pager_new(enum fl_pager_mode mode, unsigned int threads, uint64_t feats);
/* Region options for @len bytes of store @s, everything else default. */
struct fl_region_opts t_region_opts(struct fl_store *s, size_t len);

/* Run fn in a forked child and return its wait status. */
int t_run_child(void (*fn)(void *), void *arg);

/* ------------------------------------------- helpers of the uffd kernel tests */

/* Bits of a /proc/self/pagemap entry. */
#define T_PM_PRESENT (1ull << 63)
#define T_PM_UFFD_WP (1ull << 57)	/* the PTE (or its marker) is uffd write-protected */

/* The page size of @type here: 2 MiB for FL_MEM_HUGETLB, else the base page size. */
size_t t_mem_page_size(enum fl_mem_type type);

/* A mapping of @type: anonymous private, memfd or hugetlbfs memfd (shared); *@fd: memfd or -1. */
void *t_map_mem(enum fl_mem_type type, size_t len, int *fd);

/* The /proc/self/pagemap entry of the page holding @addr (no fault is taken). */
uint64_t t_pagemap(const void *addr);

/* A "Name:  N kB" field of the /proc/self/smaps entry holding @addr, in kB; -1 if absent. */
long t_smaps_kb(const void *addr, const char *field);

/*
 * One memory access made by another thread, which may block on a fault.
 * t_access_start() runs it; t_access_finished() tells, without waiting,
 * whether it completed; t_access_join() waits and returns the byte read at
 * @p after the access (the byte stored, for a write that landed).
 */
struct t_access {
	volatile uint8_t *p;
	bool write;
	uint8_t byte;		/* stored if @write */
	uint8_t seen;		/* read at @p once the access completed */
	int efd;		/* eventfd, written when the access completed */
	unsigned long tid;
	int kernel_tid;		/* the thread's gettid(), set before the access */
};
void t_access_start(struct t_access *a, void *p, bool write, uint8_t byte);
bool t_access_finished(const struct t_access *a);
uint8_t t_access_join(struct t_access *a);

/*
 * Catching SIGBUS on one read: install t_on_sigbus as the SA_SIGINFO
 * handler of SIGBUS (and of SIGSEGV where pages are made inaccessible
 * instead of poisoned); t_read_sigbus() reads one byte at @p and returns
 * true if that raised the signal, failing the test if it was raised at
 * another address. A signal outside t_read_sigbus() kills the process as
 * by default. Per thread: a blocked read in another thread works too.
 */
void t_on_sigbus(int sig, siginfo_t *si, void *uc);
bool t_read_sigbus(volatile uint8_t *p);

/*
 * Where the kernel cannot poison (before 6.6) a page that cannot be had
 * keeps its fault blocked. t_wait_fault_blocked() waits (t_ms(@ms) at
 * most) until some thread of process @pid sleeps in a userfaultfd fault,
 * as /proc/PID/task/TID/wchan shows, and returns whether one did.
 */
bool t_wait_fault_blocked(pid_t pid, int ms);
/* The same for a thread waiting until its event (fork, mremap, madvise, munmap) is read. */
bool t_wait_event_blocked(pid_t pid, int ms);

/*
 * The faultline command, built beside the runner ($(O)/faultline next to
 * $(O)/test/runner), into @buf; the test skips when it is not built.
 */
void t_tool_path(char *buf, size_t len);

/* A program's exit and output, as t_run_capture() saw them. Large: make it static or calloc it. */
struct t_run {
	int status;			/* exit code, or 128 + signal */
	char out[1u << 20];		/* stdout, NUL-terminated; the rest is read and dropped */
	char err[1u << 16];		/* stderr, likewise */
};

/*
 * Run @path with @argv (NULL-terminated) and wait for it, reading its
 * stdout and stderr at once (neither pipe can fill and stall it). @env:
 * NULL, "NAME=VALUE" to set, or "NAME" to unset one variable in the child.
 */
void t_run_capture(struct t_run *r, const char *path, char *const argv[], const char *env);

#endif /* FL_TEST_HARNESS_H */
