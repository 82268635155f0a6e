/* SPDX-License-Identifier: MIT */
/* bench threads: fault throughput with several faulting threads, on distinct or shared pages. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "faultline.h"
#include "bench.h"

struct worker {
	const char *base;
	size_t pages;
	atomic_int *go;		/* 0: wait, 1: go, -1: give up */
	pthread_t thread;
	uint64_t t_start;
	uint64_t t_end;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int go;

	while (!(go = atomic_load(w->go)))
		sched_yield();
	if (go < 0)
		return NULL;
	w->t_start = fl__now_ns();
	bench_walk(w->base, w->pages);
	w->t_end = fl__now_ns();
	return NULL;
}

/* Start @n workers on their pages, release them together, wait for all. Returns the wall time. */
static int run_workers(struct worker *w, unsigned int n, double *secs, struct bench_err *e)
{
	uint64_t first = UINT64_MAX, last = 0;
	unsigned int started = 0;
	atomic_int go = 0;
	int r = 0;

	for (; started < n; started++) {
		w[started].go = &go;
		r = pthread_create(&w[started].thread, NULL, worker_main, &w[started]);
		if (r) {
			r = bench_fail(e, -r, "pthread_create");
			break;
		}
	}
	atomic_store(&go, r ? -1 : 1);
	for (unsigned int i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		if (w[i].t_start < first)
			first = w[i].t_start;
		if (w[i].t_end > last)
			last = w[i].t_end;
	}
	*secs = (double)(last - first) / 1e9;
	return r;
}

int bench_threads_run(enum fl_pager_mode mode, unsigned int nthreads, bool shared, size_t pages,
		      unsigned int pager_threads, struct bench_threads_result *res,
		      struct bench_err *e)
{
	size_t len = pages * BENCH_PAGE;
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = mode,
		.threads = mode == FL_PAGER_THREADS ? pager_threads : 0,
	};
	struct worker w[256];
	struct fl_region_stats st = { .sz = sizeof(st) };
	struct fl_store *store = NULL;
	struct fl_pager *p = NULL;
	struct fl_region *reg = NULL;
	uint64_t bad;
	const char *base;
	int r;

	memset(res, 0, sizeof(*res));
	if (!nthreads || nthreads > 256 || pages < nthreads)
		return bench_fail(e, -EINVAL, "threads: %u threads on %zu pages", nthreads, pages);
	r = fl_store_pattern_create(len, BENCH_PATTERN_SEED, &store);
	if (r < 0)
		return bench_fail(e, r, "fl_store_pattern_create");
	r = fl_pager_create(&po, &p);
	if (r < 0) {
		bench_fail(e, r, "fl_pager_create");
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
			bench_fail(e, r, "fl_region_add");
			goto out;
		}
	}
	r = fl_pager_start(p);
	if (r < 0) {
		bench_fail(e, r, "fl_pager_start");
		goto out;
	}
	base = fl_region_addr(reg);
	for (unsigned int i = 0; i < nthreads; i++) {
		size_t lo = shared ? 0 : pages * i / nthreads;
		size_t hi = shared ? pages : pages * (i + 1) / nthreads;

		w[i] = (struct worker){ .base = base + lo * BENCH_PAGE, .pages = hi - lo };
	}
	r = run_workers(w, nthreads, &res->secs, e);
	if (r < 0)
		goto out;
	if (fl_region_stats(reg, &st) == 0)
		res->faults = st.faults;
	res->pages = pages;
	bad = fl_pattern_check(base, 0, len, BENCH_PATTERN_SEED);
	if (bad)
		r = bench_fail(e, -EIO, "threads: page %llu does not hold the pattern",
			       (unsigned long long)((bad - 1) / BENCH_PAGE));
out:
	fl_pager_destroy(p);
	fl_store_destroy(store);
	return r;
}
