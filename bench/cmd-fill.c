/* SPDX-License-Identifier: MIT */
/* faultline bench fill: GB/s of regions filled from the stores, next to the kernel alone. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "bench.h"

#define SUB "bench fill"

#define MIB (1ull << 20)

static const char *prefetch_name(const struct bench_fill_cfg *c, char *buf, size_t len)
{
	switch (c->prefetch) {
	case FL_PREFETCH_NONE:
		return "none";
	case FL_PREFETCH_FIXED:
		snprintf(buf, len, "fixed %zuK", c->prefetch_max >> 10);
		return buf;
	case FL_PREFETCH_ADAPTIVE:
		snprintf(buf, len, "adaptive %zuK-%zuM", c->prefetch_min >> 10,
			 c->prefetch_max >> 20);
		return buf;
	}
	return "?";
}

static bool is_pager(const struct bench_fill_cfg *c)
{
	return c->kind == BENCH_FILL_PAGER || c->kind == BENCH_FILL_EAGER;
}

static const char *install_name(const struct bench_fill_cfg *c)
{
	if (!is_pager(c))
		return "-";
	switch (c->install) {
	case FL_INSTALL_MOVE:
		return "move";
	case FL_INSTALL_AUTO:
		return "auto";
	default:
		return "copy";
	}
}

/* The mmap-of-the-file row with the same access order as @c, or SIZE_MAX. */
static size_t fill_mmap_of(const struct bench_fill_cfg *cfgs, size_t n,
			   const struct bench_fill_cfg *c)
{
	for (size_t i = 0; i < n; i++)
		if (cfgs[i].kind == BENCH_FILL_MMAP && cfgs[i].random == c->random)
			return i;
	return SIZE_MAX;
}

/* The native row with the same access order as @c. */
static size_t fill_native_of(const struct bench_fill_cfg *cfgs, size_t n,
			     const struct bench_fill_cfg *c)
{
	for (size_t i = 0; i < n; i++)
		if (cfgs[i].kind == BENCH_FILL_NATIVE && cfgs[i].random == c->random)
			return i;
	return 0;
}

/* Per configuration and run: [run * n + config]. */
struct fill_state {
	const struct bench_opts *o;
	const struct bench_fill_cfg *cfgs;
	size_t n;
	double *gbps, *ratio, *faults, *src_thp, *dst_thp;
	double *vs_mmap;	/* file-store rows: against mmap of the file, same access order */
	bool *stats;
	double cached_before, cached_after;
	const char *file;
};

/* A target: the best mem-store row (optionally only COPY or MOVE-2M rows) against native. */
struct fill_target {
	const char *name;
	double min;
	size_t row;		/* SIZE_MAX if no row qualifies */
	double ratio;
	bool vs_mmap;		/* against mmap of the file, not native */
};

enum { T_BEST, T_BEST_COPY, T_MOVE_2M, T_FILE_SEQ, T_COUNT };

static double fill_med(const struct fill_state *f, const double *v, size_t i)
{
	return bench_spread_col(v, f->o->runs, f->n, i).median;
}

static void fill_targets(const struct fill_state *f, struct fill_target *t)
{
	t[T_BEST] = (struct fill_target){ "best mem-store configuration", 1.0, SIZE_MAX, 0,
					  false };
	t[T_BEST_COPY] = (struct fill_target){ "best mem-store COPY configuration", 1.0, SIZE_MAX,
					       0, false };
	t[T_MOVE_2M] = (struct fill_target){ "MOVE of 2 MiB pages, sequential", 3.0, SIZE_MAX, 0,
					     false };
	t[T_FILE_SEQ] = (struct fill_target){ "best file-store configuration", 1.0, SIZE_MAX, 0,
					      true };
	for (size_t i = 0; i < f->n; i++) {
		const struct bench_fill_cfg *c = &f->cfgs[i];
		double r = fill_med(f, f->ratio, i), rm = fill_med(f, f->vs_mmap, i);

		if (is_pager(c) && c->store == BENCH_STORE_FILE && !c->random &&
		    rm > t[T_FILE_SEQ].ratio)
			t[T_FILE_SEQ] = (struct fill_target){ t[T_FILE_SEQ].name, 1.0, i, rm, true };
		if (!is_pager(c) || c->store != BENCH_STORE_MEM)
			continue;
		if (r > t[T_BEST].ratio)
			t[T_BEST] = (struct fill_target){ t[T_BEST].name, 1.0, i, r, false };
		if (c->install == FL_INSTALL_COPY && r > t[T_BEST_COPY].ratio)
			t[T_BEST_COPY] = (struct fill_target){ t[T_BEST_COPY].name, 1.0, i, r,
							       false };
		if (c->install == FL_INSTALL_MOVE && c->page_size >= 2 * MIB && !c->random)
			t[T_MOVE_2M] = (struct fill_target){ t[T_MOVE_2M].name, 3.0, i, r, false };
	}
}

static void fill_json(const struct fill_state *f, const struct bench_machine *m)
{
	static const char *const kinds[] = {
		[BENCH_FILL_NATIVE] = "native",
		[BENCH_FILL_NATIVE_READ] = "native-read",
		[BENCH_FILL_MEMCPY] = "memcpy",
		[BENCH_FILL_MMAP] = "mmap",
		[BENCH_FILL_PAGER] = "pager",
		[BENCH_FILL_EAGER] = "pager-eager",
	};
	static const char *const stores[] = {
		[BENCH_STORE_NONE] = "none",
		[BENCH_STORE_MEM] = "mem",
		[BENCH_STORE_FILE] = "file",
	};
	const struct bench_opts *o = f->o;
	struct fill_target t[T_COUNT];
	bool first = true;

	bench_json_header("fill", m);
	printf(",\"options\":{\"size\":%llu,\"runs\":%u,\"mode\":\"%s\",\"pin\":%s,"
	       "\"pager_threads\":%u,\"dir\":",
	       (unsigned long long)o->size, o->runs,
	       o->mode == FL_PAGER_SIGBUS ? "sigbus" : "thread", o->pin ? "true" : "false",
	       o->pager_threads);
	bench_json_str(o->dir);
	printf("},\"file_cached\":{\"before\":%.4f,\"after\":%.4f},\"unit\":\"1e9 B/s\","
	       "\"configs\":[", f->cached_before, f->cached_after);
	for (size_t i = 0; i < f->n; i++) {
		const struct bench_fill_cfg *c = &f->cfgs[i];
		char pf[48];

		printf("%s{\"name\":\"%s\",\"kind\":\"%s\",\"store\":\"%s\",\"access\":\"%s\","
		       "\"page_size\":%zu,", i ? "," : "", c->name, kinds[c->kind],
		       stores[c->store], c->random ? "random" : "sequential", c->page_size);
		if (is_pager(c))
			printf("\"install\":\"%s\",\"prefetch\":\"%s\",", install_name(c),
			       prefetch_name(c, pf, sizeof(pf)));
		else
			printf("\"install\":null,\"prefetch\":null,");
		bench_json_spread("gb_per_s", bench_spread_col(f->gbps, o->runs, f->n, i));
		printf(",");
		bench_json_spread("vs_native", bench_spread_col(f->ratio, o->runs, f->n, i));
		if (f->stats[i]) {
			printf(",");
			bench_json_spread("faults", bench_spread_col(f->faults, o->runs, f->n, i));
		}
		if (is_pager(c) && c->store == BENCH_STORE_FILE) {
			printf(",");
			bench_json_spread("vs_mmap_file",
					  bench_spread_col(f->vs_mmap, o->runs, f->n, i));
		}
		if (c->install == FL_INSTALL_MOVE) {
			printf(",");
			bench_json_spread("source_thp_share", bench_spread_col(f->src_thp, o->runs, f->n, i));
		}
		if (is_pager(c)) {
			printf(",");
			bench_json_spread("region_thp_share", bench_spread_col(f->dst_thp, o->runs, f->n, i));
		}
		printf("}");
	}
	printf("],\"targets\":[");
	fill_targets(f, t);
	for (int k = 0; k < T_COUNT; k++) {
		if (t[k].row == SIZE_MAX)
			continue;
		printf("%s{\"name\":\"%s vs %s\",\"config\":\"%s\",\"access\":\"%s\","
		       "\"ratio\":%.4g,\"target_min\":%.1f,\"pass\":%s}", first ? "" : ",",
		       t[k].name, t[k].vs_mmap ? "mmap of the file" : "native",
		       f->cfgs[t[k].row].name,
		       f->cfgs[t[k].row].random ? "random" : "sequential", t[k].ratio, t[k].min,
		       t[k].ratio >= t[k].min ? "true" : "false");
		first = false;
	}
	printf("]}\n");
}

static void fill_table(const struct fill_state *f, const struct bench_machine *m)
{
	const struct bench_opts *o = f->o;
	struct fill_target t[T_COUNT];

	bench_print_header("fill", m);
	printf("%llu MiB per configuration, %u runs interleaved, pager mode %s, reader %s\n",
	       (unsigned long long)(o->size >> 20), o->runs,
	       o->mode == FL_PAGER_SIGBUS ? "sigbus" : "thread", o->pin ? "pinned" : "unpinned");
	printf("file store: %s (unlinked), written by this run through the page cache:\n"
	       "  %.0f%% cached before the runs, %.0f%% after (warm)\n",
	       f->file, f->cached_before * 100, f->cached_after * 100);
	printf("native = anonymous mapping, one byte written per page (allocates a zeroed page);\n"
	       "native-read = one load per page (maps the zero page); memcpy = the source copied\n"
	       "into a fresh mapping; mmap-file = MAP_PRIVATE mapping of the file, one load per\n"
	       "page; pager rows: one load per page of a region the store fills; auto =\n"
	       "FL_INSTALL_AUTO (file store: read into staging, whole 2 MiB chunks moved in);\n"
	       "file-eager: fl_region_populate() of the whole region, then the loads (timed\n"
	       "together). vs mmap: file-store rows against mmap-file, same access order.\n"
	       "GB/s = 1e9 B/s.\n\n");
	printf("config              access  page  install  prefetch           GB/s  min-max"
	       "          vs native    faults  vs mmap\n");
	for (size_t i = 0; i < f->n; i++) {
		const struct bench_fill_cfg *c = &f->cfgs[i];
		struct stats_spread g = bench_spread_col(f->gbps, o->runs, f->n, i);
		char pf[48], fl[32] = "-", mm[48];

		if (f->stats[i])
			snprintf(fl, sizeof(fl), "%.0f", fill_med(f, f->faults, i));
		snprintf(mm, sizeof(mm), "%.2f-%.2f", g.min, g.max);
		printf("%-19s %-6s  %-4s  %-7s  %-16s %7.2f  %-15s %7.2fx  %8s", c->name,
		       c->random ? "rand" : "seq", c->page_size >= 2 * MIB ? "2M" : "4K",
		       install_name(c),
		       c->kind == BENCH_FILL_PAGER ? prefetch_name(c, pf, sizeof(pf)) : "-",
		       g.median, mm, fill_med(f, f->ratio, i), fl);
		if (is_pager(c) && c->store == BENCH_STORE_FILE)
			printf("  %6.2fx", fill_med(f, f->vs_mmap, i));
		if (c->install == FL_INSTALL_MOVE)
			printf("  THP: source %.0f%%, region %.0f%%",
			       100 * fill_med(f, f->src_thp, i), 100 * fill_med(f, f->dst_thp, i));
		printf("\n");
	}
	printf("(vs native: per run, against native with the same access order; median)\n\n");
	fill_targets(f, t);
	for (int k = 0; k < T_COUNT; k++)
		if (t[k].row != SIZE_MAX)
			printf("%-34s vs %-7s %-19s %-4s %6.2fx  target >= %.1fx  %s\n",
			       t[k].name, t[k].vs_mmap ? "mmap:" : "native:",
			       f->cfgs[t[k].row].name,
			       f->cfgs[t[k].row].random ? "rand" : "seq",
			       t[k].ratio, t[k].min, t[k].ratio >= t[k].min ? "PASS" : "MISS");
}

static int run_fill(const struct bench_opts *o, const struct bench_machine *m)
{
	struct bench_fill_setup_opts so = {
		.size = o->size,
		.dir = o->dir,
		.mode = o->mode,
		.pager_threads = o->pager_threads,
		.pin = o->pin,
	};
	struct fill_state f = { .o = o };
	struct bench_fill_env *env = NULL;
	struct bench_err e = { "" };
	size_t n;
	int ret = 1;

	f.cfgs = bench_fill_configs(&f.n);
	n = f.n;
	f.gbps = calloc(n * o->runs, sizeof(double));
	f.ratio = calloc(n * o->runs, sizeof(double));
	f.faults = calloc(n * o->runs, sizeof(double));
	f.src_thp = calloc(n * o->runs, sizeof(double));
	f.dst_thp = calloc(n * o->runs, sizeof(double));
	f.vs_mmap = calloc(n * o->runs, sizeof(double));
	f.stats = calloc(n, sizeof(bool));
	if (!f.gbps || !f.ratio || !f.faults || !f.src_thp || !f.dst_thp || !f.vs_mmap ||
	    !f.stats) {
		fail(SUB, "allocating", -ENOMEM);
		goto out;
	}
	bench_progress("preparing: %llu MiB source, the file in %s, warming memory\n",
		 (unsigned long long)(o->size >> 20), o->dir);
	if (bench_fill_setup(&so, &env, &e) < 0) {
		ret = bench_report_error(SUB, &e);
		goto out;
	}
	f.file = bench_fill_file(env);
	f.cached_before = bench_fill_cached(env);
	for (unsigned int run = 0; run < o->runs; run++) {
		size_t row = (size_t)run * n;

		bench_progress("run %u/%u:", run + 1, o->runs);
		for (size_t i = 0; i < n; i++) {
			struct bench_fill_result r;

			bench_progress(" %s%s", f.cfgs[i].name, f.cfgs[i].random ? "/rand" : "");
			if (bench_fill_run(env, &f.cfgs[i], &r, &e) < 0) {
				bench_progress("\n");
				ret = bench_report_error(SUB, &e);
				goto out;
			}
			f.gbps[row + i] = (double)o->size / r.secs / 1e9;
			f.faults[row + i] = (double)r.stats.faults;
			f.src_thp[row + i] = r.src_thp;
			f.dst_thp[row + i] = r.dst_thp;
			f.stats[i] = f.stats[i] || r.have_stats;
		}
		for (size_t i = 0; i < n; i++) {
			size_t mm = fill_mmap_of(f.cfgs, n, &f.cfgs[i]);

			f.ratio[row + i] = f.gbps[row + i] /
					   f.gbps[row + fill_native_of(f.cfgs, n, &f.cfgs[i])];
			if (mm != SIZE_MAX)
				f.vs_mmap[row + i] = f.gbps[row + i] / f.gbps[row + mm];
		}
		bench_progress("\n");
	}
	f.cached_after = bench_fill_cached(env);
	if (o->json)
		fill_json(&f, m);
	else
		fill_table(&f, m);
	ret = 0;
out:
	bench_fill_teardown(env);
	free(f.gbps);
	free(f.ratio);
	free(f.faults);
	free(f.src_thp);
	free(f.dst_thp);
	free(f.vs_mmap);
	free(f.stats);
	return ret;
}

/* ------------------------------------------------------------ threads */

void bench_fill_usage(FILE *out)
{
	bench_usage_opts(BENCH_FILL,
			 "GB/s of regions filled from the mem and file stores, per prefetch policy\n"
			 "and install method, next to native first touch, memcpy and mmap of the\n"
			 "same file.\n",
			 out);
}

int bench_fill_main(int argc, char **argv)
{
	struct bench_machine m;
	struct bench_opts o;
	int r = bench_parse_opts(BENCH_FILL, argc, argv, &o);

	if (r)
		return r;
	bench_machine_get(&m);
	/* The setup prewarms. */
	return run_fill(&o, &m);
}
