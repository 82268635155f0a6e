/* SPDX-License-Identifier: MIT */
/* The library's log: invalid arguments say why, and FL_LOG prints the log to stderr. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"
#include "internal.h"

/* Every line the library logged since the last log_clear(), one per line. */
static char logged[8192];
static size_t logged_len;
static int logged_errors;

static void log_capture(enum fl_log_level level, const char *msg)
{
	int n = snprintf(logged + logged_len, sizeof(logged) - logged_len, "%s\n", msg);

	if (n > 0 && (size_t)n < sizeof(logged) - logged_len)
		logged_len += (size_t)n;
	if (level == FL_LOG_ERROR)
		logged_errors++;
}

static void log_clear(void)
{
	logged[0] = '\0';
	logged_len = 0;
	logged_errors = 0;
}

/* @expr returned -EINVAL and logged at least one error line holding each of @words. */
#define T_ASSERT_EINVAL_LOGGED(expr, ...)                                                   \
	do {                                                                                \
		const char *words_[] = { __VA_ARGS__ };                                     \
		log_clear();                                                                \
		T_ASSERT_ERR(expr, EINVAL);                                                 \
		if (!logged_errors)                                                         \
			t_fail(__FILE__, __LINE__, "%s: -EINVAL without an error line", #expr); \
		for (size_t w_ = 0; w_ < sizeof(words_) / sizeof(words_[0]); w_++)          \
			if (!strstr(logged, words_[w_]))                                    \
				t_fail(__FILE__, __LINE__, "%s: the log lacks \"%s\":\n%s",  \
				       #expr, words_[w_], logged);                          \
	} while (0)

TEST(log_einval_says_why)
{
	struct fl_store_file_opts fo[2] = { { .sz = sizeof(fo) } };
	struct fl_uffd_opts uo = { .sz = sizeof(uo), .flags = 1u << 30 };
	struct fl_store *s = NULL;
	struct fl_monitor_region mr = { .len = 4096 };
	struct fl_monitor_client *mc = NULL;
	struct fl_uffd *u = NULL;
	char buf[4096];
	uint64_t holes[1];

	fl_set_log_fn(log_capture);
	T_ASSERT_OK(fl_store_pattern_create(1 << 20, 1, &s));
	/* Arguments checked by the stores, the uffd layer and the options copy. */
	T_ASSERT_EINVAL_LOGGED(fl_store_read(s, 0, buf, sizeof(buf), 1000, holes), "fl_store_read",
			       "page_size 1000");
	T_ASSERT_EINVAL_LOGGED(fl_store_read(s, 1 << 20, buf, sizeof(buf), 4096, holes),
			       "fl_store_read", "runs past the store");
	T_ASSERT_EINVAL_LOGGED(fl_store_mem_create(NULL, 4096, 0, &s), "fl_store_mem_create",
			       "buf is NULL");
	T_ASSERT_EINVAL_LOGGED(fl_uffd_open(&uo, &u), "fl_uffd_open", "unknown flags");
	/* A newer caller's struct with a field this version does not know. */
	((unsigned char *)&fo[1])[0] = 1;
	fo[0].sz = sizeof(fo);
	T_ASSERT_EINVAL_LOGGED(fl_store_file_open("/dev/null", fo, &s), "fl_store_file_open",
			       "past the");
	fo[0].sz = 2;
	T_ASSERT_EINVAL_LOGGED(fl_store_file_open("/dev/null", fo, &s), "fl_store_file_open",
			       "smaller than the sz field");
	T_ASSERT_EINVAL_LOGGED(fl_pagemap_scan_written(0, (void *)4096, 100, 0, NULL, 0, NULL),
			       "fl_pagemap_scan_written", "multiple of the page size");
	T_ASSERT_EINVAL_LOGGED(fl_monitor_server_create(NULL, NULL), "fl_monitor_server_create");
	T_ASSERT_EINVAL_LOGGED(fl_monitor_attach("@", &mr, 1, NULL, &mc), "fl_monitor_attach",
			       "socket_path \"@\"");
	fl_store_destroy(s);
	fl_set_log_fn(NULL);
}

/* The issue's case: a region longer than its store, and one not page-aligned. */
TEST(log_einval_region_add)
{
	size_t ps = t_page_size();
	struct fl_pager *p = t_pager_new(FL_PAGER_THREADS, 1, 0);
	struct fl_store *s;
	struct fl_region *r = NULL;
	struct fl_region_opts o;

	T_ASSERT_OK(fl_store_pattern_create(4 * ps, 1, &s));
	fl_set_log_fn(log_capture);
	o = t_region_opts(s, 8 * ps);
	T_ASSERT_EINVAL_LOGGED(fl_region_add(p, &o, &r), "fl_region_add", "runs past the store");
	o = t_region_opts(s, 4 * ps);
	o.addr = (void *)(uintptr_t)(ps + 512);
	T_ASSERT_EINVAL_LOGGED(fl_region_add(p, &o, &r), "fl_region_add",
			       "not a multiple of the page size");
	o = t_region_opts(s, 4 * ps);
	o.store_off = 512;
	T_ASSERT_EINVAL_LOGGED(fl_region_add(p, &o, &r), "fl_region_add", "store_off 512");
	T_ASSERT_EINVAL_LOGGED(fl_region_add(p, NULL, &r), "fl_region_add", "opts is NULL");
	T_ASSERT(r == NULL);
	fl_set_log_fn(NULL);
	fl_pager_destroy(p);
	fl_store_destroy(s);
}

/*
 * Run @calls in a child whose stderr is a pipe, with FL_LOG=@env (NULL: unset),
 * as a process that never logged; return what the child wrote to stderr.
 */
struct env_child {
	const char *env;
	void (*calls)(void);
	char out[4096];
};

static void env_child_main(void *arg)
{
	struct env_child *c = arg;

	fl__log_reset_for_test();
	if (c->env)
		setenv("FL_LOG", c->env, 1);
	else
		unsetenv("FL_LOG");
	c->calls();
}

static void run_env_child(struct env_child *c)
{
	int pfd[2], saved, status;
	ssize_t n;
	size_t got = 0;

	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	saved = dup(STDERR_FILENO);
	T_ASSERT(saved >= 0);
	T_ASSERT_SYS(dup2(pfd[1], STDERR_FILENO));
	status = t_run_child(env_child_main, c);
	T_ASSERT_SYS(dup2(saved, STDERR_FILENO));
	close(saved);
	close(pfd[1]);
	T_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	while ((n = read(pfd[0], c->out + got, sizeof(c->out) - 1 - got)) > 0)
		got += (size_t)n;
	c->out[got] = '\0';
	close(pfd[0]);
}

/* One line at each level: an invalid argument (error), and the three others directly. */
static void log_each_level(void)
{
	fl_store_read(NULL, 0, NULL, 0, 4096, NULL);
	fl__warn("a warning line");
	fl__info("an info line");
	fl__debug("a debug line");
}

static void log_after_set_null(void)
{
	fl_set_log_fn(NULL);	/* an explicit choice: no log at all, FL_LOG or not */
	log_each_level();
}

TEST(log_env_prints_to_stderr)
{
	struct env_child c = { .env = "warn", .calls = log_each_level };

	run_env_child(&c);
	T_ASSERT(strstr(c.out, "faultline: error: fl_store_read: s is NULL\n") != NULL);
	T_ASSERT(strstr(c.out, "faultline: warn: a warning line\n") != NULL);
	T_ASSERT(strstr(c.out, "info line") == NULL);
	T_ASSERT(strstr(c.out, "debug line") == NULL);

	c = (struct env_child){ .env = "DEBUG", .calls = log_each_level };
	run_env_child(&c);
	T_ASSERT(strstr(c.out, "faultline: info: an info line\n") != NULL);
	T_ASSERT(strstr(c.out, "faultline: debug: a debug line\n") != NULL);

	c = (struct env_child){ .env = "error", .calls = log_each_level };
	run_env_child(&c);
	T_ASSERT(strstr(c.out, "fl_store_read") != NULL);
	T_ASSERT(strstr(c.out, "warning line") == NULL);

	/* Unset, or an explicit fl_set_log_fn (even NULL): the library prints nothing. */
	c = (struct env_child){ .env = NULL, .calls = log_each_level };
	run_env_child(&c);
	T_ASSERT_EQ(strlen(c.out), 0);
	c = (struct env_child){ .env = "debug", .calls = log_after_set_null };
	run_env_child(&c);
	T_ASSERT_EQ(strlen(c.out), 0);

	/* A value it does not know: said once, then nothing. */
	c = (struct env_child){ .env = "verbose", .calls = log_each_level };
	run_env_child(&c);
	T_ASSERT(strstr(c.out, "FL_LOG=verbose is not one of") != NULL);
	T_ASSERT(strstr(c.out, "fl_store_read") == NULL);
}
