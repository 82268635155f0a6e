/* SPDX-License-Identifier: MIT */
/* The one "poison what is absent" of the library: every layer that gives up on pages uses it. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"

#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)

/*
 * Without UFFDIO_POISON: make the absent pages of [lo, hi) of this process
 * inaccessible. Present and swapped pages keep their data and their access.
 */
static void protect_absent(uint64_t lo, uint64_t hi)
{
	size_t ps = fl__page_size();
	uint64_t run = 0, ents[64];
	bool in_run = false;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		/* No way to tell present from absent: keep every page reachable. */
		fl__err("poison: /proc/self/pagemap: %s; absent pages at %#llx stay unprotected",
			strerror(errno), (unsigned long long)lo);
		return;
	}
	for (uint64_t a = lo; a < hi;) {
		size_t n = (size_t)((hi - a) / ps);
		ssize_t got;

		if (n > 64)
			n = 64;
		got = pread(fd, ents, n * sizeof(ents[0]), (off_t)(a / ps * sizeof(ents[0])));
		if (got < (ssize_t)sizeof(ents[0])) {
			fl__err("poison: /proc/self/pagemap at %#llx: %s; absent pages from there on "
				"stay unprotected", (unsigned long long)a,
				got < 0 ? strerror(errno) : "short read");
			break;
		}
		n = (size_t)got / sizeof(ents[0]);
		for (size_t i = 0; i < n; i++, a += ps) {
			bool absent = !(ents[i] & (PM_PRESENT | PM_SWAP));

			if (absent && !in_run) {
				run = a;
				in_run = true;
			} else if (!absent && in_run) {
				mprotect((void *)(uintptr_t)run, a - run, PROT_NONE);
				in_run = false;
			}
		}
	}
	if (in_run)
		mprotect((void *)(uintptr_t)run, hi - run, PROT_NONE);
	close(fd);
}

int fl__uffd_poison_absent(struct fl_uffd *u, uint64_t addr, uint64_t len,
			   const struct fl__poison_opts *o, uint64_t *ret_poisoned)
{
	uint64_t step = o && o->step ? o->step : fl__page_size();
	uint64_t cur = addr, end = addr + len, chunk = len, poisoned = 0;
	unsigned int tries = 0;
	int ret = 0;

	if (!u || !len || len % step || addr % step || end < addr) {
		fl__err("poison: bad range %#llx+%#llx (page size %#llx)",
			(unsigned long long)addr, (unsigned long long)len, (unsigned long long)step);
		return -EINVAL;
	}
	if (!(fl_uffd_features(u) & FL_FEAT_POISON))
		ret = -EOPNOTSUPP;
	while (!ret && cur < end) {
		size_t done = 0;
		int e;

		if (chunk > end - cur)
			chunk = end - cur;
		e = fl_uffd_poison(u, (void *)(uintptr_t)cur, chunk, 0, &done);
		poisoned += done;
		cur += done;
		if (!e) {
			chunk = end - cur;	/* that part done: try the rest whole again */
			continue;
		}
		switch (e) {
		case -EEXIST:
			cur += step;		/* a present page: keep it, go on after it */
			chunk = end - cur;
			break;
		case -ENOENT:
			/*
			 * Some page of [cur, cur+chunk) is not in a range registered here: the
			 * kernel refuses a request that crosses a mapping's end as a whole. Halve
			 * until the request fits one mapping; a single page that still fails is
			 * not ours to poison.
			 */
			if (done)
				chunk = end - cur;
			else if (chunk > step)
				chunk = (chunk / 2 + step - 1) / step * step;
			else {
				cur += step;
				chunk = end - cur;
			}
			break;
		case -EAGAIN:
			if (!o || !o->drain || ++tries > FL__POISON_DRAIN_TRIES) {
				ret = -EAGAIN;
				break;
			}
			if (o->drain(o->arg) <= 0)
				sched_yield();
			break;
		case -ESRCH:		/* the process is gone: nobody can read its pages */
			cur = end;
			break;
		default:
			ret = e;
			break;
		}
	}
	if (ret && ret != -EAGAIN && o && o->own_memory && cur < end) {
		protect_absent(cur, end);
		/* Threads blocked there fault again, now on an inaccessible page. */
		fl_uffd_wake(u, (void *)(uintptr_t)cur, (size_t)(end - cur));
	}
	if (ret_poisoned)
		*ret_poisoned += poisoned;
	return ret;
}
