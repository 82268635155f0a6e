/* SPDX-License-Identifier: MIT */
/* bench latency: the cost of one 4 KiB fault, timed from the faulting thread, per mode. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

static const char *const mode_names[BENCH_LAT_NMODES] = {
	[BENCH_LAT_NATIVE] = "native",
	[BENCH_LAT_SEED] = "seed",
	[BENCH_LAT_THREAD] = "thread",
	[BENCH_LAT_SIGBUS] = "sigbus",
	[BENCH_LAT_LOOP] = "loop",
	[BENCH_LAT_SYSCALL] = "syscall",
	[BENCH_LAT_BARE_SIGBUS] = "bare-sigbus",
	[BENCH_LAT_BARE_THREAD_SAME] = "bare-thread-same",
	[BENCH_LAT_BARE_THREAD_OTHER] = "bare-thread-other",
};

const char *bench_lat_mode_name(enum bench_lat_mode m)
{
	return (unsigned int)m < BENCH_LAT_NMODES ? mode_names[m] : NULL;
}

/* Walk the warmup pages untimed, then the timed ones, pinned if asked. */
static int walk(const char *base, const struct bench_lat_opts *o, uint64_t *lat, double *secs,
		struct bench_err *e)
{
	cpu_set_t saved;
	uint64_t ns;
	int r;

	if (o->pin && (r = bench_pin(0, &saved)) < 0)
		return bench_fail(e, r, "pinning the reader to CPU 0");
	bench_walk(base, o->warmup);
	ns = bench_walk_timed(base + o->warmup * BENCH_PAGE, o->pages, lat);
	if (o->pin)
		bench_unpin(&saved);
	*secs = (double)ns / 1e9;
	return 0;
}

/* The kernel alone: a load from untouched private anonymous memory maps the shared zero page. */
static int lat_native(const struct bench_lat_opts *o, struct bench_lat_result *res,
		      struct bench_err *e)
{
	size_t len = (o->warmup + o->pages) * BENCH_PAGE;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int r;

	if (m == MAP_FAILED)
		return bench_fail(e, -errno, "native: mmap %zu bytes", len);
	r = walk(m, o, res->lat, &res->secs, e);
	for (size_t off = 0; r == 0 && off < len; off += sizeof(uint64_t))
		if (*(const uint64_t *)(m + off))
			r = bench_fail(e, -EIO, "native: page %zu is not zero", off / BENCH_PAGE);
	munmap(m, len);
	return r;
}

struct loop {
	struct fl_pager *pager;
	int epfd;
	int stopfd;
	int err;
	pthread_t thread;
};

/* LOOP mode as an application would run it: epoll on the pager's fd, dispatch when readable. */
static void *loop_main(void *arg)
{
	struct loop *l = arg;

	for (;;) {
		struct epoll_event ev[2];
		int n = epoll_wait(l->epfd, ev, 2, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			l->err = -errno;
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			int r;

			if (ev[i].data.fd == l->stopfd)
				return NULL;
			r = fl_pager_dispatch(l->pager);
			if (r < 0 && !l->err)
				l->err = r;
		}
	}
}

static int loop_start(struct loop *l, struct fl_pager *p, struct bench_err *e)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int r;

	l->pager = p;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->stopfd = eventfd(0, EFD_CLOEXEC);
	if (l->epfd < 0 || l->stopfd < 0)
		return bench_fail(e, -errno, "loop: epoll/eventfd");
	ev.data.fd = fl_pager_fd(p);
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0)
		return bench_fail(e, -errno, "loop: epoll_ctl(pager fd)");
	ev.data.fd = l->stopfd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0)
		return bench_fail(e, -errno, "loop: epoll_ctl(eventfd)");
	r = pthread_create(&l->thread, NULL, loop_main, l);
	if (r)
		return bench_fail(e, -r, "loop: pthread_create");
	return 1;
}

static void loop_stop(struct loop *l)
{
	uint64_t one = 1;

	if (write(l->stopfd, &one, sizeof(one)) == sizeof(one))
		pthread_join(l->thread, NULL);
}

static void loop_close(struct loop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->stopfd >= 0)
		close(l->stopfd);
}

static int lat_pager(enum bench_lat_mode m, const struct bench_lat_opts *o,
		     struct bench_lat_result *res, struct bench_err *e)
{
	static const enum fl_pager_mode pm[BENCH_LAT_NMODES] = {
		[BENCH_LAT_THREAD] = FL_PAGER_THREADS,
		[BENCH_LAT_SIGBUS] = FL_PAGER_SIGBUS,
		[BENCH_LAT_LOOP] = FL_PAGER_LOOP,
	};
	const char *name = mode_names[m];
	size_t len = (o->warmup + o->pages) * BENCH_PAGE;
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = pm[m],
		.threads = m == BENCH_LAT_THREAD ? o->pager_threads : 0,
	};
	struct loop l = { .epfd = -1, .stopfd = -1 };
	bool looping = false;
	struct fl_store *store = NULL;
	struct fl_pager *p = NULL;
	struct fl_region *reg = NULL;
	uint64_t bad;
	int r;

	r = fl_store_pattern_create(len, BENCH_PATTERN_SEED, &store);
	if (r < 0)
		return bench_fail(e, r, "%s: fl_store_pattern_create", name);
	r = fl_pager_create(&po, &p);
	if (r < 0) {
		bench_fail(e, r, "%s: fl_pager_create", name);
		goto out;
	}
	{
		struct fl_region_opts ro = {
			.sz = sizeof(ro),
			.len = len,
			.store = store,
			.mem = FL_MEM_ANON,
			.memfd = -1,
			.install = FL_INSTALL_COPY,
			.prefetch = FL_PREFETCH_NONE,
			.on_error = FL_ON_ERROR_POISON,
		};

		r = fl_region_add(p, &ro, &reg);
		if (r < 0) {
			bench_fail(e, r, "%s: fl_region_add", name);
			goto out;
		}
	}
	if (m == BENCH_LAT_LOOP) {
		r = loop_start(&l, p, e);
		if (r < 0)
			goto out;
		looping = true;
	}
	r = fl_pager_start(p);
	if (r < 0) {
		bench_fail(e, r, "%s: fl_pager_start", name);
		goto out;
	}
	r = walk(fl_region_addr(reg), o, res->lat, &res->secs, e);
	if (r < 0)
		goto out;
	res->stats.sz = sizeof(res->stats);
	if (fl_region_stats(reg, &res->stats) == 0)
		res->have_stats = true;
	if (looping) {
		loop_stop(&l);
		looping = false;
		if (l.err) {
			r = bench_fail(e, l.err, "loop: fl_pager_dispatch");
			goto out;
		}
	}
	bad = fl_pattern_check(fl_region_addr(reg), 0, len, BENCH_PATTERN_SEED);
	if (bad)
		r = bench_fail(e, -EIO, "%s: page %llu does not hold the pattern (byte %llu)", name,
			       (unsigned long long)((bad - 1) / BENCH_PAGE),
			       (unsigned long long)((bad - 1) % BENCH_PAGE));
out:
	if (looping)
		loop_stop(&l);
	loop_close(&l);
	fl_pager_destroy(p);
	fl_store_destroy(store);
	return r;
}

int bench_lat_run(enum bench_lat_mode m, const struct bench_lat_opts *o,
		  struct bench_lat_result *res, struct bench_err *e)
{
	res->have_stats = false;
	res->same_cpu = -1;
	res->uffd_how = NULL;
	memset(&res->stats, 0, sizeof(res->stats));
	/* Touch the latency array now, so that its faults stay out of the timed loop. */
	memset(res->lat, 0, o->pages * sizeof(*res->lat));
	switch (m) {
	case BENCH_LAT_NATIVE:
		return lat_native(o, res, e);
	case BENCH_LAT_SEED:
		return bench_seed_run(o->pages, o->warmup, o->pin, res, e);
	case BENCH_LAT_THREAD:
	case BENCH_LAT_SIGBUS:
	case BENCH_LAT_LOOP:
		return lat_pager(m, o, res, e);
	case BENCH_LAT_SYSCALL:
	case BENCH_LAT_BARE_SIGBUS:
	case BENCH_LAT_BARE_THREAD_SAME:
	case BENCH_LAT_BARE_THREAD_OTHER:
		return bench_floor_run(m, o, res, e);
	case BENCH_LAT_NMODES:
		break;
	}
	return bench_fail(e, -EINVAL, "unknown latency mode %d", (int)m);
}
