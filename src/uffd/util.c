/* SPDX-License-Identifier: MIT */
/* Options structs in, statistics structs out, whole-file I/O and library threads: each written once. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

int fl__opts_check(const void *src, size_t known, const char *who)
{
	const unsigned char *b = src;
	size_t sz;

	memcpy(&sz, src, sizeof(sz));
	if (sz < sizeof(size_t)) {
		fl__err("%s: options sz %zu is smaller than the sz field itself (set it to "
			"sizeof the struct)", who, sz);
		return -EINVAL;
	}
	for (size_t i = known; i < sz; i++)
		if (b[i]) {
			fl__err("%s: options byte %zu is set, past the %zu bytes this version "
				"knows (a newer caller's field?)", who, i, known);
			return -EINVAL;
		}
	return 0;
}

int fl__opts_copy(void *dst, size_t known, const void *src, const char *who)
{
	size_t sz;
	int r;

	memset(dst, 0, known);
	memcpy(dst, &known, sizeof(known));
	if (!src)
		return 0;
	r = fl__opts_check(src, known, who);
	if (r < 0)
		return r;
	memcpy(&sz, src, sizeof(sz));
	memcpy(dst, src, sz < known ? sz : known);
	memcpy(dst, &known, sizeof(known));
	return 0;
}

int fl__stats_out(void *ret, const void *filled, size_t known, const char *who)
{
	size_t sz, n;

	memcpy(&sz, ret, sizeof(sz));
	if (sz < sizeof(size_t)) {
		fl__err("%s: the statistics struct's sz is %zu: set it to sizeof the struct", who,
			sz);
		return -EINVAL;
	}
	/* Never a byte past what both know: a caller that forgot sz may hold any value there. */
	n = sz < known ? sz : known;
	memcpy(ret, filled, n);
	memcpy(ret, &n, sizeof(n));
	return 0;
}

int fl__pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		got += (size_t)n;
	}
	return 0;
}

int fl__pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

int fl__thread_start(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg,
		     const char *name)
{
	sigset_t all, old;
	int e;

	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = -pthread_create(t, attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!e && name)
		pthread_setname_np(*t, name);
	return e;
}
