/* SPDX-License-Identifier: MIT */
/* bench fill: throughput of regions filled from the mem and file stores, next to the kernel's. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define KIB (1ul << 10)
#define MIB (1ul << 20)
#define THP_SIZE (2ul << 20)

#define CFG(name, kind, store, inst, ps, pf, pmin, pmax)                                  \
	{ name, BENCH_FILL_##kind, BENCH_STORE_##store, FL_INSTALL_##inst, ps,            \
	  FL_PREFETCH_##pf, pmin, pmax, false },                                          \
	{ name, BENCH_FILL_##kind, BENCH_STORE_##store, FL_INSTALL_##inst, ps,            \
	  FL_PREFETCH_##pf, pmin, pmax, true }

/* The order of every run. The MOVE rows consume the source; the next row needing it refills it. */
static const struct bench_fill_cfg cfgs[] = {
	CFG("native", NATIVE, NONE, AUTO, BENCH_PAGE, NONE, 0, 0),
	CFG("native-read", NATIVE_READ, NONE, AUTO, BENCH_PAGE, NONE, 0, 0),
	{ "memcpy", BENCH_FILL_MEMCPY, BENCH_STORE_MEM, FL_INSTALL_AUTO, BENCH_PAGE,
	  FL_PREFETCH_NONE, 0, 0, false },
	CFG("mmap-file", MMAP, FILE, AUTO, BENCH_PAGE, NONE, 0, 0),
	CFG("mem-copy", PAGER, MEM, COPY, BENCH_PAGE, NONE, 0, 0),
	CFG("mem-copy-fixed1M", PAGER, MEM, COPY, BENCH_PAGE, FIXED, MIB, MIB),
	CFG("mem-copy-adaptive", PAGER, MEM, COPY, BENCH_PAGE, ADAPTIVE, 64 * KIB, 4 * MIB),
	CFG("mem-copy-2M", PAGER, MEM, COPY, THP_SIZE, NONE, 0, 0),
	CFG("mem-move-2M", PAGER, MEM, MOVE, THP_SIZE, NONE, 0, 0),
	CFG("mem-move-adaptive", PAGER, MEM, MOVE, BENCH_PAGE, ADAPTIVE, 64 * KIB, 4 * MIB),
	CFG("file-copy", PAGER, FILE, COPY, BENCH_PAGE, NONE, 0, 0),
	CFG("file-copy-fixed1M", PAGER, FILE, COPY, BENCH_PAGE, FIXED, MIB, MIB),
	CFG("file-copy-adaptive", PAGER, FILE, COPY, BENCH_PAGE, ADAPTIVE, 64 * KIB, 4 * MIB),
	/* AUTO: read into staging, whole 2 MiB chunks moved in (staged MOVE). */
	CFG("file-auto-adaptive", PAGER, FILE, AUTO, BENCH_PAGE, ADAPTIVE, 64 * KIB, 4 * MIB),
	CFG("file-auto-2M", PAGER, FILE, AUTO, THP_SIZE, NONE, 0, 0),
	{ "file-eager", BENCH_FILL_EAGER, BENCH_STORE_FILE, FL_INSTALL_AUTO, BENCH_PAGE,
	  FL_PREFETCH_NONE, 0, 0, false },
};

const struct bench_fill_cfg *bench_fill_configs(size_t *ret_n)
{
	*ret_n = sizeof(cfgs) / sizeof(cfgs[0]);
	return cfgs;
}

struct bench_fill_env {
	struct bench_fill_setup_opts o;
	size_t pages;
	char *src;		/* o.size bytes, 2 MiB aligned, MADV_HUGEPAGE */
	bool src_valid;		/* src holds the pattern (MOVE takes its pages away) */
	uint32_t *perm;		/* the random order of the pages */
	char path[PATH_MAX];
	int fd;			/* the file, for the mmap baseline; already unlinked */
	struct fl_store *file_store;
};

const char *bench_fill_file(const struct bench_fill_env *env)
{
	return env->path;
}

static int fill_src(struct bench_fill_env *env, struct bench_err *e)
{
	if (env->src_valid)
		return 0;
	/* Drop whatever MOVE left, so that the refill faults in fresh THPs. */
	madvise(env->src, env->o.size, MADV_DONTNEED);
	if (madvise(env->src, env->o.size, MADV_HUGEPAGE) < 0)
		return bench_fail(e, -errno, "fill: madvise(MADV_HUGEPAGE) on the source");
	fl_pattern_fill(env->src, 0, env->o.size, BENCH_PATTERN_SEED);
	env->src_valid = true;
	return 0;
}

double bench_fill_cached(struct bench_fill_env *env)
{
	unsigned char *vec;
	size_t resident = 0;
	void *m;

	m = mmap(NULL, env->o.size, PROT_READ, MAP_SHARED, env->fd, 0);
	if (m == MAP_FAILED)
		return -1;
	vec = malloc(env->pages);
	if (vec && mincore(m, env->o.size, vec) == 0)
		for (size_t i = 0; i < env->pages; i++)
			resident += vec[i] & 1;
	free(vec);
	munmap(m, env->o.size);
	return (double)resident / (double)env->pages;
}

/* Write the pattern file through the page cache (it stays warm), open the store, unlink it. */
static int make_file(struct bench_fill_env *env, struct bench_err *e)
{
	size_t chunk = 8 * MIB;
	int r;

	snprintf(env->path, sizeof(env->path), "%s/faultline-bench-XXXXXX", env->o.dir);
	env->fd = mkostemp(env->path, O_CLOEXEC);
	if (env->fd < 0)
		return bench_fail(e, -errno, "fill: creating a file in %s", env->o.dir);
	for (size_t off = 0; off < env->o.size; off += chunk) {
		size_t n = env->o.size - off < chunk ? env->o.size - off : chunk;
		ssize_t w = pwrite(env->fd, env->src + off, n, (off_t)off);

		if (w != (ssize_t)n) {
			r = w < 0 ? -errno : -EIO;
			return bench_fail(e, r, "fill: writing %s", env->path);
		}
	}
	r = fl_store_file_open(env->path, NULL, &env->file_store);
	if (r < 0)
		return bench_fail(e, r, "fill: fl_store_file_open(%s)", env->path);
	/* Both descriptors are open: nothing is left behind if the benchmark is killed. */
	unlink(env->path);
	return 0;
}

int bench_fill_setup(const struct bench_fill_setup_opts *o, struct bench_fill_env **ret,
		     struct bench_err *e)
{
	struct bench_fill_env *env;
	int r;

	if (!o->size || o->size % THP_SIZE)
		return bench_fail(e, -EINVAL, "fill: the size must be a multiple of 2 MiB");
	env = calloc(1, sizeof(*env));
	if (!env)
		return bench_fail(e, -ENOMEM, "fill: allocating");
	env->o = *o;
	env->fd = -1;
	env->pages = o->size / BENCH_PAGE;
	env->src = bench_map_aligned(o->size, THP_SIZE);
	env->perm = malloc(env->pages * sizeof(*env->perm));
	if (!env->src || !env->perm) {
		r = bench_fail(e, -ENOMEM, "fill: %zu bytes for the source", o->size);
		goto fail;
	}
	bench_permutation(env->perm, env->pages, BENCH_PATTERN_SEED);
	bench_prewarm(2 * o->size);
	r = fill_src(env, e);
	if (r == 0)
		r = make_file(env, e);
	if (r < 0)
		goto fail;
	*ret = env;
	return 0;
fail:
	bench_fill_teardown(env);
	return r;
}

void bench_fill_teardown(struct bench_fill_env *env)
{
	if (!env)
		return;
	fl_store_destroy(env->file_store);
	if (env->fd >= 0)
		close(env->fd);
	bench_unmap(env->src, env->o.size);
	free(env->perm);
	free(env);
}

static void touch(struct bench_fill_env *env, char *base, bool random, bool write)
{
	if (write) {
		for (size_t i = 0; i < env->pages; i++) {
			size_t pg = random ? env->perm[i] : i;

			*(volatile char *)(base + pg * BENCH_PAGE) = 1;
		}
	} else if (random) {
		for (size_t i = 0; i < env->pages; i++) {
			size_t pg = env->perm[i];

			(void)*(const volatile uint64_t *)(base + pg * BENCH_PAGE);
		}
	} else {
		bench_walk(base, env->pages);
	}
}

/* Time touch() over @base, pinned if asked. */
static int timed_touch(struct bench_fill_env *env, char *base, bool random, bool write,
		       double *secs, struct bench_err *e)
{
	cpu_set_t saved;
	uint64_t t0;
	int r;

	if (env->o.pin && (r = bench_pin(0, &saved)) < 0)
		return bench_fail(e, r, "fill: pinning to CPU 0");
	t0 = fl__now_ns();
	touch(env, base, random, write);
	*secs = (double)(fl__now_ns() - t0) / 1e9;
	if (env->o.pin)
		bench_unpin(&saved);
	return 0;
}

static int check_pattern(const char *name, const char *base, size_t len, struct bench_err *e)
{
	uint64_t bad = fl_pattern_check(base, 0, len, BENCH_PATTERN_SEED);

	if (bad)
		return bench_fail(e, -EIO,
				  "fill: %s: page %llu does not hold the pattern (byte %llu)", name,
				  (unsigned long long)((bad - 1) / BENCH_PAGE),
				  (unsigned long long)((bad - 1) % BENCH_PAGE));
	return 0;
}

static int run_pager(struct bench_fill_env *env, const struct bench_fill_cfg *c,
		     struct bench_fill_result *res, struct bench_err *e)
{
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = env->o.mode,
		.threads = env->o.pager_threads,
	};
	struct fl_store *mem = NULL, *store;
	struct fl_region *reg = NULL;
	struct fl_pager *p = NULL;
	size_t size = env->o.size;
	char *addr;
	int r;

	if (c->store == BENCH_STORE_MEM) {
		r = fill_src(env, e);
		if (r < 0)
			return r;
		if (c->install == FL_INSTALL_MOVE) {
			long long thp = bench_thp_bytes(env->src);

			res->src_thp = thp > 0 ? (double)thp / (double)size : 0;
		}
		r = fl_store_mem_create(env->src, size,
					c->install == FL_INSTALL_MOVE ? 0 : FL_STORE_MEM_NO_MOVE,
					&mem);
		if (r < 0)
			return bench_fail(e, r, "fill: fl_store_mem_create");
		store = mem;
	} else {
		store = env->file_store;
	}
	addr = bench_map_aligned(size, THP_SIZE);
	if (!addr) {
		r = bench_fail(e, -ENOMEM, "fill: mapping the region");
		goto out;
	}
	/*
	 * A fault in a THP-eligible range reaches userfaultfd before any page
	 * table is allocated; elsewhere the kernel allocates a PTE table first,
	 * and a MOVE of a whole THP into it must then split the THP.
	 */
	if (c->page_size >= THP_SIZE || c->install == FL_INSTALL_MOVE ||
	    c->install == FL_INSTALL_AUTO)
		madvise(addr, size, MADV_HUGEPAGE);
	r = fl_pager_create(&po, &p);
	if (r < 0) {
		bench_fail(e, r, "fill: %s: fl_pager_create", c->name);
		goto out;
	}
	{
		struct fl_region_opts ro = {
			.sz = sizeof(ro),
			.addr = addr,
			.len = size,
			.store = store,
			.page_size = c->page_size,
			.mem = FL_MEM_ANON,
			.memfd = -1,
			.install = c->install,
			.prefetch = c->prefetch,
			.prefetch_min = c->prefetch_min,
			.prefetch_max = c->prefetch_max,
			.on_error = FL_ON_ERROR_POISON,
		};

		r = fl_region_add(p, &ro, &reg);
		if (r < 0) {
			bench_fail(e, r, "fill: %s: fl_region_add", c->name);
			goto out;
		}
	}
	if (c->install == FL_INSTALL_MOVE)
		env->src_valid = false;
	r = fl_pager_start(p);
	if (r < 0) {
		bench_fail(e, r, "fill: %s: fl_pager_start", c->name);
		goto out;
	}
	if (c->kind == BENCH_FILL_EAGER) {
		/* The eager restore: everything read and installed before the program runs. */
		uint64_t t0 = fl__now_ns();

		r = fl_region_populate(reg, 0, size);
		res->populate_secs = (double)(fl__now_ns() - t0) / 1e9;
		if (r < 0) {
			bench_fail(e, r, "fill: %s: fl_region_populate", c->name);
			goto out;
		}
	}
	r = timed_touch(env, addr, c->random, false, &res->secs, e);
	if (r < 0)
		goto out;
	res->secs += res->populate_secs;
	res->stats.sz = sizeof(res->stats);
	if (fl_region_stats(reg, &res->stats) == 0)
		res->have_stats = true;
	{
		long long thp = bench_thp_bytes(addr);

		res->dst_thp = thp > 0 ? (double)thp / (double)size : 0;
	}
	r = check_pattern(c->name, addr, size, e);
out:
	fl_pager_destroy(p);
	bench_unmap(addr, size);
	fl_store_destroy(mem);
	return r;
}

int bench_fill_run(struct bench_fill_env *env, const struct bench_fill_cfg *c,
		   struct bench_fill_result *res, struct bench_err *e)
{
	size_t size = env->o.size;
	char *m;
	int r;

	memset(res, 0, sizeof(*res));
	switch (c->kind) {
	case BENCH_FILL_NATIVE:
	case BENCH_FILL_NATIVE_READ:
		m = bench_map_aligned(size, THP_SIZE);
		if (!m)
			return bench_fail(e, -ENOMEM, "fill: mapping %zu bytes", size);
		r = timed_touch(env, m, c->random, c->kind == BENCH_FILL_NATIVE, &res->secs, e);
		bench_unmap(m, size);
		return r;
	case BENCH_FILL_MEMCPY:
		r = fill_src(env, e);
		if (r < 0)
			return r;
		m = bench_map_aligned(size, THP_SIZE);
		if (!m)
			return bench_fail(e, -ENOMEM, "fill: mapping %zu bytes", size);
		{
			uint64_t t0 = fl__now_ns();

			memcpy(m, env->src, size);
			res->secs = (double)(fl__now_ns() - t0) / 1e9;
		}
		r = check_pattern(c->name, m, size, e);
		bench_unmap(m, size);
		return r;
	case BENCH_FILL_MMAP:
		m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, env->fd, 0);
		if (m == MAP_FAILED)
			return bench_fail(e, -errno, "fill: mmap of the file");
		r = timed_touch(env, m, c->random, false, &res->secs, e);
		if (r == 0)
			r = check_pattern(c->name, m, size, e);
		munmap(m, size);
		return r;
	case BENCH_FILL_PAGER:
	case BENCH_FILL_EAGER:
		return run_pager(env, c, res, e);
	}
	return bench_fail(e, -EINVAL, "fill: unknown configuration kind %d", (int)c->kind);
}
