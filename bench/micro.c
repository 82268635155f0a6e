/* SPDX-License-Identifier: MIT */
/* bench uffd: what each resolve ioctl of the uffd layer costs per 4 KiB, without any fault. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

#define MIB (1ul << 20)
#define THP_SIZE (2ul << 20)

static const struct bench_micro_info infos[BENCH_MICRO_NOPS] = {
	[BENCH_MICRO_COPY1] = { "copy", "UFFDIO_COPY of one page into an empty page", 0 },
	[BENCH_MICRO_COPY16] = { "copy16", "UFFDIO_COPY of 16-page (64 KiB) runs", 0 },
	[BENCH_MICRO_ZEROPAGE] = { "zeropage", "UFFDIO_ZEROPAGE of one page", 0 },
	[BENCH_MICRO_MOVE_THP] = { "move-thp", "UFFDIO_MOVE of one 2 MiB THP (PMD) at a time",
				   FL_FEAT_MOVE },
	[BENCH_MICRO_POISON] = { "poison", "UFFDIO_POISON of one page", FL_FEAT_POISON },
	[BENCH_MICRO_WP_PROTECT] = { "wp-protect",
				     "UFFDIO_WRITEPROTECT (protect) of the whole populated range",
				     FL_FEAT_PAGEFAULT_FLAG_WP },
	[BENCH_MICRO_WP_UNPROTECT] = { "wp-unprotect",
				       "UFFDIO_WRITEPROTECT (unprotect) of the whole range",
				       FL_FEAT_PAGEFAULT_FLAG_WP },
	[BENCH_MICRO_PAGEMAP_SCAN] = {
		"pagemap-scan",
		"PAGEMAP_SCAN of the whole range, every page written, collect + re-protect",
		FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN },
};

const struct bench_micro_info *bench_micro_info(enum bench_micro_op op)
{
	return (unsigned int)op < BENCH_MICRO_NOPS ? &infos[op] : NULL;
}

struct micro {
	struct fl_uffd *u;
	char *dst;
	char *src;
	size_t len;
	size_t src_len;
};

static void micro_close(struct micro *m)
{
	fl_uffd_close(m->u);
	bench_unmap(m->dst, m->len);
	bench_unmap(m->src, m->src_len);
}

/* A uffd with @features, and a 2 MiB-aligned anonymous range of @len registered for @mode. */
static int micro_open(struct micro *m, uint64_t features, size_t len, uint32_t mode,
		      bool populate, struct bench_err *e)
{
	struct fl_uffd_opts o = { .sz = sizeof(o), .features = features };
	int r;

	m->len = len;
	r = fl_uffd_open(&o, &m->u);
	if (r < 0)
		return bench_fail(e, r, "fl_uffd_open");
	m->dst = bench_map_aligned(len, THP_SIZE);
	if (!m->dst)
		return bench_fail(e, -ENOMEM, "mapping %zu bytes", len);
	/* No THP in the destination: the operations under test work on 4 KiB PTEs. */
	madvise(m->dst, len, MADV_NOHUGEPAGE);
	if (populate)
		memset(m->dst, 0x3c, len);
	r = fl_uffd_register(m->u, m->dst, len, mode, NULL);
	if (r < 0)
		return bench_fail(e, r, "fl_uffd_register");
	return 0;
}

static int run_copy(struct micro *m, size_t run, struct bench_micro_result *res,
		    struct bench_err *e)
{
	uint64_t t0, ns;
	int r;

	m->src_len = run;
	m->src = bench_map_aligned(run, BENCH_PAGE);
	if (!m->src)
		return bench_fail(e, -ENOMEM, "mapping the source");
	memset(m->src, 0xa5, run);
	t0 = fl__now_ns();
	for (size_t off = 0; off < m->len; off += run) {
		r = fl_uffd_copy(m->u, m->dst + off, m->src, run, 0, NULL);
		if (r < 0)
			return bench_fail(e, r, "fl_uffd_copy at +%zu", off);
	}
	ns = fl__now_ns() - t0;
	res->ns_per_page = (double)ns / (double)(m->len / BENCH_PAGE);
	res->op_us = (double)ns / (double)(m->len / run) / 1e3;
	for (size_t off = 0; off < m->len; off += BENCH_PAGE)
		if ((unsigned char)m->dst[off] != 0xa5)
			return bench_fail(e, -EIO, "copy: page %zu missing", off / BENCH_PAGE);
	return 0;
}

/* One call per @step bytes of @op over the whole range. */
static int run_each(struct micro *m, enum bench_micro_op op, size_t step,
		    struct bench_micro_result *res, struct bench_err *e)
{
	uint64_t t0, ns;
	int r = 0;

	t0 = fl__now_ns();
	for (size_t off = 0; off < m->len; off += step) {
		if (op == BENCH_MICRO_ZEROPAGE)
			r = fl_uffd_zeropage(m->u, m->dst + off, step, 0, NULL);
		else if (op == BENCH_MICRO_POISON)
			r = fl_uffd_poison(m->u, m->dst + off, step, 0, NULL);
		else
			r = fl_uffd_move(m->u, m->dst + off, m->src + off, step, 0, NULL);
		if (r < 0)
			return bench_fail(e, r, "%s at +%zu", infos[op].name, off);
	}
	ns = fl__now_ns() - t0;
	res->ns_per_page = (double)ns / (double)(m->len / BENCH_PAGE);
	res->op_us = (double)ns / (double)(m->len / step) / 1e3;
	return 0;
}

static int run_move(struct micro *m, struct bench_micro_result *res, struct bench_err *e)
{
	long long thp;
	int r;

	m->src_len = m->len;
	m->src = bench_map_aligned(m->len, THP_SIZE);
	if (!m->src)
		return bench_fail(e, -ENOMEM, "mapping the source");
	madvise(m->src, m->len, MADV_HUGEPAGE);
	memset(m->src, 0x5a, m->len);
	thp = bench_thp_bytes(m->src);
	res->extra = thp > 0 ? (double)thp / (double)m->len : 0;
	r = run_each(m, BENCH_MICRO_MOVE_THP, THP_SIZE, res, e);
	if (r < 0)
		return r;
	for (size_t off = 0; off < m->len; off += BENCH_PAGE)
		if ((unsigned char)m->dst[off] != 0x5a)
			return bench_fail(e, -EIO, "move: page %zu missing", off / BENCH_PAGE);
	return 0;
}

static int run_wp(struct micro *m, bool unprotect, struct bench_micro_result *res,
		  struct bench_err *e)
{
	uint64_t t0, ns;
	int r;

	if (unprotect) {
		r = fl_uffd_writeprotect(m->u, m->dst, m->len, FL_RESOLVE_WP);
		if (r < 0)
			return bench_fail(e, r, "fl_uffd_writeprotect(protect)");
	}
	t0 = fl__now_ns();
	r = fl_uffd_writeprotect(m->u, m->dst, m->len, unprotect ? 0 : FL_RESOLVE_WP);
	ns = fl__now_ns() - t0;
	if (r < 0)
		return bench_fail(e, r, "fl_uffd_writeprotect");
	res->ns_per_page = (double)ns / (double)(m->len / BENCH_PAGE);
	res->op_us = (double)ns / 1e3;
	if (!unprotect) {
		/* Leave no protected page behind for the unmap. */
		fl_uffd_writeprotect(m->u, m->dst, m->len, 0);
	}
	return 0;
}

static int run_scan(struct micro *m, struct bench_micro_result *res, struct bench_err *e)
{
	struct fl_range ranges[64];
	size_t found = 0;
	uint64_t t0, ns;
	char *end = m->dst + m->len;
	void *next = m->dst;
	int fd, r;

	r = fl_pagemap_open(0, &fd);
	if (r < 0)
		return bench_fail(e, r, "fl_pagemap_open");
	/* With WP_ASYNC these writes are recorded, not trapped. */
	for (size_t off = 0; off < m->len; off += BENCH_PAGE)
		m->dst[off] = 1;
	t0 = fl__now_ns();
	while ((char *)next < end) {
		r = fl_pagemap_scan_written(fd, next, (size_t)(end - (char *)next),
					    FL_SCAN_REPROTECT, ranges, 64, &next);
		if (r < 0)
			break;
		for (int i = 0; i < r; i++)
			found += (size_t)((char *)ranges[i].end - (char *)ranges[i].start);
		if (r == 0)
			break;
	}
	ns = fl__now_ns() - t0;
	close(fd);
	if (r < 0)
		return bench_fail(e, r, "fl_pagemap_scan_written");
	if (found != m->len)
		return bench_fail(e, -EIO, "pagemap-scan: found %zu written bytes of %zu", found,
				  m->len);
	res->ns_per_page = (double)ns / (double)(m->len / BENCH_PAGE);
	res->op_us = (double)ns / 1e3;
	return 0;
}

int bench_micro_run(enum bench_micro_op op, size_t mib, struct bench_micro_result *res,
		    struct bench_err *e)
{
	struct micro m = { 0 };
	struct fl_features f;
	size_t len = mib * MIB;
	int r;

	memset(res, 0, sizeof(*res));
	if ((unsigned int)op >= BENCH_MICRO_NOPS)
		return bench_fail(e, -EINVAL, "unknown operation %d", (int)op);
	fl_probe(&f);
	if ((f.features & infos[op].feature) != infos[op].feature)
		return bench_fail(e, -EOPNOTSUPP, "%s: this kernel lacks it", infos[op].name);
	switch (op) {
	case BENCH_MICRO_COPY1:
	case BENCH_MICRO_COPY16:
		r = micro_open(&m, 0, len, FL_REGISTER_MISSING, false, e);
		if (r == 0)
			r = run_copy(&m, op == BENCH_MICRO_COPY1 ? BENCH_PAGE : 16 * BENCH_PAGE,
				     res, e);
		break;
	case BENCH_MICRO_ZEROPAGE:
	case BENCH_MICRO_POISON:
		r = micro_open(&m, infos[op].feature, len, FL_REGISTER_MISSING, false, e);
		if (r == 0)
			r = run_each(&m, op, BENCH_PAGE, res, e);
		break;
	case BENCH_MICRO_MOVE_THP:
		r = micro_open(&m, FL_FEAT_MOVE, len, FL_REGISTER_MISSING, false, e);
		if (r == 0)
			r = run_move(&m, res, e);
		break;
	case BENCH_MICRO_WP_PROTECT:
	case BENCH_MICRO_WP_UNPROTECT:
		r = micro_open(&m, FL_FEAT_PAGEFAULT_FLAG_WP, len, FL_REGISTER_WP, true, e);
		if (r == 0)
			r = run_wp(&m, op == BENCH_MICRO_WP_UNPROTECT, res, e);
		break;
	case BENCH_MICRO_PAGEMAP_SCAN:
		r = micro_open(&m, FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_WP_ASYNC, len,
			       FL_REGISTER_WP, false, e);
		if (r == 0)
			r = run_scan(&m, res, e);
		break;
	default:
		r = bench_fail(e, -EINVAL, "unknown operation %d", (int)op);
		break;
	}
	micro_close(&m);
	return r;
}
