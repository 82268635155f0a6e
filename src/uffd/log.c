/* SPDX-License-Identifier: MIT */
/* The library's optional log callback and version string. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "faultline.h"
#include "internal.h"

#define STR2(x) #x
#define STR(x) STR2(x)

static _Atomic(fl_log_fn) log_fn;

FL_API const char *fl_version(void)
{
	return STR(FL_VERSION_MAJOR) "." STR(FL_VERSION_MINOR) "." STR(FL_VERSION_PATCH);
}

FL_API void fl_set_log_fn(fl_log_fn fn)
{
	atomic_store_explicit(&log_fn, fn, memory_order_release);
}

void fl__log(enum fl_log_level level, const char *fmt, ...)
{
	fl_log_fn fn = atomic_load_explicit(&log_fn, memory_order_acquire);
	char buf[512];
	va_list ap;

	if (!fn)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fn(level, buf);
}
