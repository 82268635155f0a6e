/* SPDX-License-Identifier: MIT */
/* The library's optional log callback, the FL_LOG fallback to stderr, and the version string. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"

#define STR2(x) #x
#define STR(x) STR2(x)

static _Atomic(fl_log_fn) log_fn;
/* Set by the first fl_set_log_fn(): from then on FL_LOG is not looked at. */
static atomic_bool log_fn_set;

/* FL_LOG, parsed once: the highest level printed, -1 for none, ENV_UNREAD before the parse. */
#define ENV_UNREAD (-2)
static atomic_int env_level = ENV_UNREAD;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

FL_API const char *fl_version(void)
{
	return STR(FL_VERSION_MAJOR) "." STR(FL_VERSION_MINOR) "." STR(FL_VERSION_PATCH);
}

FL_API void fl_set_log_fn(fl_log_fn fn)
{
	atomic_store_explicit(&log_fn, fn, memory_order_release);
	atomic_store_explicit(&log_fn_set, true, memory_order_release);
}

/* One line to stderr in one write(2), so lines of several threads do not mix. */
static void print_line(const char *level, const char *msg)
{
	char line[600];
	int n = snprintf(line, sizeof(line), "faultline: %s: %s\n", level, msg);

	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;		/* nowhere left to report it */
}

static int parse_env(void)
{
	const char *v = getenv("FL_LOG");
	char why[160];

	if (!v || !*v)
		return -1;
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
		if (!strcasecmp(v, level_names[i]))
			return i;
	if (!strcasecmp(v, "warning"))
		return FL_LOG_WARN;
	if (!strcasecmp(v, "none") || !strcasecmp(v, "off"))
		return -1;
	snprintf(why, sizeof(why), "FL_LOG=%.40s is not one of debug, info, warn, error, none: "
		 "ignored", v);
	print_line("warn", why);
	return -1;
}

/* The level FL_LOG asks for (-1: none). The parse may run twice in a race: same answer. */
static int env_threshold(void)
{
	int l = atomic_load_explicit(&env_level, memory_order_relaxed);

	if (l == ENV_UNREAD) {
		int want = parse_env(), expect = ENV_UNREAD;

		if (atomic_compare_exchange_strong(&env_level, &expect, want))
			l = want;
		else
			l = expect;
	}
	return l;
}

void fl__log_reset_for_test(void)
{
	atomic_store(&log_fn, NULL);
	atomic_store(&log_fn_set, false);
	atomic_store(&env_level, ENV_UNREAD);
}

int fl__einval(const char *fn, const char *fmt, ...)
{
	char buf[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fl__err("%s: %s", fn, buf);
	return -EINVAL;
}

void fl__log(enum fl_log_level level, const char *fmt, ...)
{
	fl_log_fn fn = atomic_load_explicit(&log_fn, memory_order_acquire);
	char buf[512];
	va_list ap;

	if (!fn) {
		if (atomic_load_explicit(&log_fn_set, memory_order_acquire) ||
		    (int)level > env_threshold())
			return;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (fn)
		fn(level, buf);
	else
		print_line(level_names[(unsigned int)level <= FL_LOG_DEBUG ? level : FL_LOG_DEBUG],
			   buf);
}
