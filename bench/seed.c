/* SPDX-License-Identifier: MIT */
/* The seed experiment's handler, rewritten on the raw kernel interface: the latency baseline. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"
#include "compat.h"

/*
 * What the seed does, and what this file keeps of it:
 *   - userfaultfd(O_CLOEXEC | O_NONBLOCK), UFFDIO_API with features 0,
 *     a private anonymous mapping registered for MISSING faults;
 *   - one handler thread, unpinned, looping: poll(uffd, 2000 ms), read ONE
 *     32-byte message, UFFDIO_COPY of one page from a page buffer, mode 0;
 *   - the reading thread loads one int per page, timing each with CLOCK_MONOTONIC.
 * What differs, and why:
 *   - the registration check accepts ioctl bits it does not know and only
 *     requires WAKE and COPY (the seed's check fails on 6.8+ kernels);
 *   - /dev/userfaultfd is tried when the syscall is not allowed, then the
 *     syscall for user-mode faults only (the reader's loads are user-mode
 *     faults), which is what an unprivileged user gets by default;
 *   - the page buffer holds known bytes (the seed's is uninitialised) so
 *     that every page can be verified afterwards;
 *   - errors end the handler and unregister the range (the reader then gets
 *     zero pages, which the verification reports) instead of exit(1);
 *   - instead of sleep(1) the reader waits until the handler has started,
 *     and instead of waiting up to 2 s for poll to time out at the end, a
 *     signal interrupts it (the seed checks `stop` right after poll either way);
 *   - after each COPY (once the reader is released) the handler notes its
 *     CPU: on this kind of VM the seed's latency depends above all on
 *     whether the scheduler put the handler on the reader's CPU or not.
 */

#define SEED_CPUS 64

struct seed {
	int uffd;
	char *region;
	size_t len;
	atomic_int started;
	atomic_int stop;
	int err;		/* -errno of the first failure, 0 if none */
	const char *what;	/* the failing step */
	uint64_t addr;		/* the fault being handled when it failed */
	_Atomic uint64_t on_cpu[SEED_CPUS];	/* faults handled per CPU (the last: the rest) */
};

/* The bytes of page-buffer offset @i: not zero anywhere, so a missed page shows. */
static inline uint8_t seed_byte(size_t i)
{
	return (uint8_t)(0x5a ^ (i * 131u) ^ (i >> 8));
}

static void seed_error(struct seed *s, const char *what, int err, uint64_t addr)
{
	struct uffdio_range range = { .start = (uint64_t)(uintptr_t)s->region, .len = s->len };

	s->err = err;
	s->what = what;
	s->addr = addr;
	/* Release the reader: unregistering wakes it; it then maps zero pages. */
	ioctl(s->uffd, UFFDIO_UNREGISTER, &range);
}

static void *seed_handler(void *arg)
{
	struct seed *s = arg;
	char buf[BENCH_PAGE] __attribute__((aligned(64)));

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)seed_byte(i);
	atomic_store(&s->started, 1);
	for (;;) {
		struct pollfd pfd = { .fd = s->uffd, .events = POLLIN };
		struct uffd_msg msg;
		ssize_t rd;
		int pollres, cpu;

		/* Wait for a userfaultfd event, as the seed does. */
		pollres = poll(&pfd, 1, 2000);
		if (atomic_load(&s->stop))
			return NULL;
		if (pollres == -1 || pollres == 0)
			continue;
		if (pollres != 1) {
			seed_error(s, "unexpected poll result", -EPROTO, 0);
			return NULL;
		}
		if (pfd.revents & POLLERR) {
			seed_error(s, "poll: POLLERR", -EIO, 0);
			return NULL;
		}
		if (!(pfd.revents & POLLIN))
			continue;

		rd = read(s->uffd, &msg, sizeof(msg));
		if (rd == -1) {
			if (errno == EAGAIN)
				continue;
			seed_error(s, "read", -errno, 0);
			return NULL;
		}
		if (rd != sizeof(msg)) {
			seed_error(s, "read: invalid message size", -EPROTO, 0);
			return NULL;
		}

		/* Resolve the fault by copying a page worth of bytes. */
		if (msg.event == UFFD_EVENT_PAGEFAULT) {
			struct uffdio_copy copy = {
				.src = (uint64_t)(uintptr_t)buf,
				.dst = msg.arg.pagefault.address,
				.len = BENCH_PAGE,
				.mode = 0,
			};

			if (ioctl(s->uffd, UFFDIO_COPY, &copy) == -1) {
				seed_error(s, "UFFDIO_COPY", -errno, copy.dst);
				return NULL;
			}
			cpu = sched_getcpu();
			cpu = cpu >= 0 && cpu < SEED_CPUS ? cpu : SEED_CPUS - 1;
			/* One writer: a relaxed load and store, no locked instruction. */
			atomic_store_explicit(&s->on_cpu[cpu],
					      atomic_load_explicit(&s->on_cpu[cpu],
								   memory_order_relaxed) + 1,
					      memory_order_relaxed);
		}
	}
}

static void seed_wake(int sig)
{
	(void)sig;
}

/* Stop the handler: set `stop`, then interrupt its poll until it has returned. */
static void seed_stop(struct seed *s, pthread_t t)
{
	atomic_store(&s->stop, 1);
	for (;;) {
		struct timespec ts;

		pthread_kill(t, SIGUSR1);
		ts = fl__abstime_in(CLOCK_REALTIME, 10 * 1000 * 1000);
		if (pthread_timedjoin_np(t, NULL, &ts) == 0)
			return;
	}
}

static int seed_verify(const struct seed *s, struct bench_err *e)
{
	char want[BENCH_PAGE];

	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (char)seed_byte(i);
	for (size_t off = 0; off < s->len; off += BENCH_PAGE)
		if (memcmp(s->region + off, want, BENCH_PAGE))
			return bench_fail(e, -EIO,
					  "seed: page %zu does not hold the handler's bytes",
					  off / BENCH_PAGE);
	return 0;
}

int bench_seed_run(size_t pages, size_t warmup, bool pin, struct bench_lat_result *res,
		   struct bench_err *e)
{
	struct sigaction sa = { .sa_handler = seed_wake };	/* no SA_RESTART: poll returns */
	struct seed s = { .uffd = -1 };
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	const uint64_t need = (1ull << _UFFDIO_WAKE) | (1ull << _UFFDIO_COPY);
	cpu_set_t saved;
	uint64_t before[SEED_CPUS] = { 0 };
	int reader_cpu = -1;
	pthread_t t;
	uint64_t ns;
	int r;

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		return bench_fail(e, -errno, "seed: sigaction");

	s.uffd = bench_raw_uffd_open(O_CLOEXEC | O_NONBLOCK, &res->uffd_how);
	if (s.uffd < 0)
		return bench_fail(e, s.uffd, "seed: userfaultfd");
	if (ioctl(s.uffd, UFFDIO_API, &api) == -1) {
		r = bench_fail(e, -errno, "seed: UFFDIO_API");
		goto out;
	}
	if (api.api != UFFD_API) {
		r = bench_fail(e, -EPROTO, "seed: unsupported userfaultfd API %#llx",
			       (unsigned long long)api.api);
		goto out;
	}

	s.len = (warmup + pages) * BENCH_PAGE;
	s.region = mmap(NULL, s.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s.region == MAP_FAILED) {
		s.region = NULL;
		r = bench_fail(e, -errno, "seed: mmap %zu bytes", s.len);
		goto out;
	}
	reg.range.start = (uint64_t)(uintptr_t)s.region;
	reg.range.len = s.len;
	if (ioctl(s.uffd, UFFDIO_REGISTER, &reg) == -1) {
		r = bench_fail(e, -errno, "seed: UFFDIO_REGISTER");
		goto out;
	}
	/* Unknown bits (MOVE, POISON, ...) are fine: only what the handler uses must be there. */
	if ((reg.ioctls & need) != need) {
		r = bench_fail(e, -EOPNOTSUPP, "seed: range ioctls %#llx lack WAKE or COPY",
			       (unsigned long long)reg.ioctls);
		goto out;
	}

	r = pthread_create(&t, NULL, seed_handler, &s);
	if (r) {
		r = bench_fail(e, -r, "seed: pthread_create");
		goto out;
	}
	while (!atomic_load(&s.started))
		sched_yield();

	if (pin && (r = bench_pin(0, &saved)) < 0) {
		bench_fail(e, r, "seed: pinning the reader to CPU 0");
		goto stop;
	}
	bench_walk(s.region, warmup);
	for (int i = 0; i < SEED_CPUS; i++)
		before[i] = atomic_load_explicit(&s.on_cpu[i], memory_order_relaxed);
	reader_cpu = sched_getcpu();
	ns = bench_walk_timed(s.region + warmup * BENCH_PAGE, pages, res->lat);
	if (sched_getcpu() != reader_cpu)
		reader_cpu = -1;	/* it moved: no single CPU to compare with */
	if (pin)
		bench_unpin(&saved);
	res->secs = (double)ns / 1e9;
	r = 0;
stop:
	seed_stop(&s, t);
	if (reader_cpu >= 0 && reader_cpu < SEED_CPUS - 1) {
		uint64_t all = 0;

		for (int i = 0; i < SEED_CPUS; i++)
			all += atomic_load(&s.on_cpu[i]) - before[i];
		if (all)
			res->same_cpu = (double)(atomic_load(&s.on_cpu[reader_cpu]) -
						 before[reader_cpu]) / (double)all;
	}
	if (s.err) {
		r = bench_fail(e, s.err, "seed handler: %s (fault at %#llx)", s.what,
			       (unsigned long long)s.addr);
		goto out;
	}
	if (r == 0 && ioctl(s.uffd, UFFDIO_UNREGISTER, &reg.range) == -1)
		r = bench_fail(e, -errno, "seed: UFFDIO_UNREGISTER");
	if (r == 0)
		r = seed_verify(&s, e);
out:
	if (s.region)
		munmap(s.region, s.len);
	if (s.uffd >= 0)
		close(s.uffd);
	return r;
}
