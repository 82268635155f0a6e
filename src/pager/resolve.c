/* SPDX-License-Identifier: MIT */
/* The install engine: from one fault to pages in place, shared by every handler mode. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "pager-int.h"

/*
 * Everything here may run inside a SIGBUS handler (c->in_signal): no
 * malloc, no locks, no logging there; only atomics, uffd ioctls, the
 * store's callbacks (async-signal-safe by contract) and futex waits.
 */

/* OP_SMOVE: UFFDIO_MOVE out of our own staging (see seg_data), OP_MOVE out of the store's memory. */
enum op { OP_COPY, OP_ZERO, OP_CONTINUE, OP_MOVE, OP_SMOVE };

/* A run of pages [pg, pg+n) of one region, all PG_BUSY and owned by the resolver. */
struct run {
	struct fl_region *r;
	size_t pg, n;
	size_t fpg;		/* the faulting page, or SIZE_MAX for populate */
	uint8_t *move_src;	/* pages taken from the store for [pg, pg+n), or NULL */
	struct pg_kept *kept;	/* data read before an event stopped the install (owned) */
	bool filled;		/* CONTINUE: the page cache holds the run already */
};

static int run_do(struct pg_ctx *c, struct run *x);

static struct pg_shard *shard(struct fl_region *r)
{
	int cpu = sched_getcpu();

	return &r->shards[cpu < 0 ? 0 : (unsigned int)cpu % PG_SHARDS];
}

void fl__stat_add(struct fl_region *r, enum pg_stat s, uint64_t v)
{
	if (v)
		atomic_fetch_add_explicit(&shard(r)->v[s], v, memory_order_relaxed);
}

void fl__stat_lat(struct fl_region *r, uint64_t ns)
{
	unsigned int b = fl__log2_bucket(ns, FL_LAT_BUCKETS);

	atomic_fetch_add_explicit(&shard(r)->v[ST_LAT + b], 1, memory_order_relaxed);
}

static uint8_t st_load(struct fl_region *r, size_t pg)
{
	return atomic_load_explicit(&r->state[pg], memory_order_acquire);
}

static uint8_t *page_addr(struct fl_region *r, size_t pg);

/*
 * Settle pages [pg, pg+n) that were ours; wake them again if a fault came
 * in meanwhile. A page becoming present is counted resident (PG_RES) once;
 * one leaving the present state stops being counted.
 */
static void st_set(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n, uint8_t v)
{
	bool present = (v & PG_STATE) == PG_PRESENT;
	size_t in = 0, out = 0, hot = 0;
	uint8_t seen = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t s = st_load(r, pg + i), keep, to;

		/* Only the owner of a busy page changes PG_RES: stable across the loop. */
		if (present && !(s & PG_RES)) {
			keep = (uint8_t)(PG_RES | fl__budget_page_in(c, r, pg + i));
			in++;
		} else {
			keep = present ? s & (PG_RES | PG_HOT) : 0;
		}
		do
			to = (uint8_t)(v | keep);
		while (!atomic_compare_exchange_weak_explicit(&r->state[pg + i], &s, to,
							      memory_order_acq_rel,
							      memory_order_acquire));
		seen |= s;
		if (present && !(s & PG_RES)) {
			fl__budget_queue(r, pg + i, keep & PG_HOT);
		} else if (!present && (s & PG_RES)) {
			out++;
			hot += (s & PG_HOT) != 0;
		}
	}
	if (in) {
		/* Counted before the install ioctl already (see seg). */
		size_t pre = in < c->pre_left ? in : c->pre_left;

		c->pre_left -= pre;
		if (in > pre)
			fl__budget_in(c, r, in - pre);
	}
	if (out)
		fl__budget_out(r, out, hot);
	if (seen & PG_WAITED)
		fl_uffd_wake(c->p->uffd, page_addr(r, pg), n << r->shift);
}

/*
 * Take page @pg from @*seen (which must be PG_ABSENT or PG_PRESENT, maybe
 * with PG_ZERO). The residency bits stay with the page.
 */
static bool st_claim(struct fl_region *r, size_t pg, uint8_t *seen, uint8_t to)
{
	return atomic_compare_exchange_strong_explicit(&r->state[pg], seen,
						       (uint8_t)(to | (*seen & (PG_RES | PG_HOT))),
						       memory_order_acq_rel,
						       memory_order_acquire);
}

static uint8_t *page_addr(struct fl_region *r, size_t pg)
{
	return (uint8_t *)atomic_load_explicit(&r->base, memory_order_relaxed) + (pg << r->shift);
}

static uint64_t store_offset(struct fl_region *r, size_t pg)
{
	return r->store_off + ((uint64_t)pg << r->shift);
}

/* ------------------------------------------------------------- waiting */

void fl__wait_seq(_Atomic uint32_t *seq, uint32_t seen, long ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };

	syscall(SYS_futex, seq, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
}

void fl__wait_seq_wake(_Atomic uint32_t *seq)
{
	syscall(SYS_futex, seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void fl__wake_waiters(struct fl_region *r)
{
	/* Pairs with the increment of waiters in wait_page(): one of us sees the other. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&r->waiters, memory_order_relaxed)) {
		atomic_fetch_add(&r->wait_seq, 1);
		syscall(SYS_futex, &r->wait_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
	}
}

/*
 * Wait until page @pg is no longer in state @busy_state (a resolver owns
 * it, or a SIGBUS handler waits for populate after a BLOCK failure), or the
 * region goes away. The timeout only bounds a missed corner; wakes come
 * from fl__wake_waiters().
 */
void fl__wait_page(struct fl_region *r, size_t pg, uint8_t busy_state)
{
	atomic_fetch_add(&r->waiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&r->wait_seq);

		if ((st_load(r, pg) & PG_STATE) != busy_state || atomic_load(&r->removing) ||
		    atomic_load(&r->pager->dead))
			break;
		fl__wait_seq(&r->wait_seq, seq, 20 * 1000 * 1000);
	}
	atomic_fetch_sub(&r->waiters, 1);
}

static void backoff(unsigned int attempt)
{
	struct timespec ts = { .tv_nsec = attempt < 10 ? 10000 : 1000000 };

	if (attempt < 3)
		sched_yield();
	else
		nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------- staging */

static uint8_t *staging(struct pg_ctx *c)
{
	struct fl_pager *p = c->p;
	void *m;

	if (c->staging)
		return c->staging;
	for (int i = 0; i < PG_POOL; i++) {
		if (atomic_load_explicit(&p->pool_busy[i], memory_order_relaxed))
			continue;
		if (!atomic_exchange_explicit(&p->pool_busy[i], true, memory_order_acquire)) {
			c->slot = i;
			c->staging = p->buffers + (size_t)i * PG_STAGING;
			return c->staging;
		}
	}
	/* More resolvers at once than pool buffers: a private one (mmap is a plain syscall). */
	m = mmap(NULL, PG_STAGING, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	c->slot = -2;
	c->staging = m;
	return c->staging;
}

void fl__ctx_release(struct pg_ctx *c)
{
	if (c->slot >= 0)
		atomic_store_explicit(&c->p->pool_busy[c->slot], false, memory_order_release);
	else if (c->slot == -2)
		munmap(c->staging, PG_STAGING);
	if (c->slot != -1)
		c->staging = NULL;
	c->slot = -1;
}

/* ------------------------------------------------------------ installing */

/* Pages [pg, pg+n) are now PG_ABSENT again: wake their faulting threads so they fault anew. */
static void release(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n, bool wake)
{
	if (!n)
		return;
	size_t out = 0, hot = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t s = st_load(r, pg + i);

		while (!atomic_compare_exchange_weak(&r->state[pg + i], &s, PG_ABSENT | (s & PG_ZERO)))
			;
		if (s & PG_RES) {
			out++;
			hot += (s & PG_HOT) != 0;
		}
	}
	if (out)
		fl__budget_out(r, out, hot);
	if (wake)
		fl_uffd_wake(c->p->uffd, page_addr(r, pg), n << r->shift);
	fl__wake_waiters(r);
}

/*
 * Zeros mapped write-protected (a live snapshot watches the region): the
 * shared zero page cannot be, so copy zeros, PG_STAGING bytes at a time.
 */
static int zero_wp(struct pg_ctx *c, uint8_t *dst, size_t len, uint32_t flags,
		   size_t *ret_bytes)
{
	size_t done = 0;
	int e = 0;

	while (done < len && !e) {
		size_t k = len - done < PG_STAGING ? len - done : PG_STAGING, d = 0;

		e = fl_uffd_copy(c->p->uffd, dst + done, c->p->zeros, k, flags | FL_RESOLVE_WP, &d);
		done += d;
	}
	*ret_bytes = done;
	return e;
}

static int do_op_wp(struct pg_ctx *c, struct fl_region *r, enum op op, size_t pg, size_t n,
		    const uint8_t *src, uint32_t flags, size_t *ret_bytes);
static int continue_wp(struct pg_ctx *c, uint8_t *dst, size_t len, uint32_t flags,
		       size_t *ret_bytes);

/* One install ioctl; write-protected while a live snapshot watches the region. */
static int do_op(struct pg_ctx *c, struct fl_region *r, enum op op, size_t pg, size_t n,
		 const uint8_t *src, uint32_t flags, size_t *ret_bytes)
{
	unsigned int g = fl__grace_enter(&r->wp_grace);
	int e;

	if (!atomic_load(&r->wp))
		e = do_op_wp(c, r, op, pg, n, src, flags, ret_bytes);
	else if (op == OP_ZERO)
		e = zero_wp(c, page_addr(r, pg), n << r->shift, flags, ret_bytes);
	else if (op == OP_MOVE || op == OP_SMOVE)
		/* MOVE cannot protect: copy from the pages instead (they stay where they are). */
		e = do_op_wp(c, r, OP_COPY, pg, n, src,
			     (flags & FL_RESOLVE_DONTWAKE) | FL_RESOLVE_WP, ret_bytes);
	else if (op == OP_CONTINUE)
		e = continue_wp(c, page_addr(r, pg), n << r->shift, flags, ret_bytes);
	else
		e = do_op_wp(c, r, op, pg, n, src, flags | FL_RESOLVE_WP, ret_bytes);
	fl__grace_exit(&r->wp_grace, g);
	return e;
}

/*
 * CONTINUE mapping write-protected. Before Linux 6.3 (UFFDIO_CONTINUE_MODE_WP)
 * the kernel refuses the mode: map, then protect, then wake. A thread other
 * than the faulting one may write the page between the two unseen; the
 * fallback can go once 6.3 is the oldest kernel supported.
 */
static _Atomic bool continue_wp_missing;

static int continue_wp(struct pg_ctx *c, uint8_t *dst, size_t len, uint32_t flags,
		       size_t *ret_bytes)
{
	int e;

	if (!atomic_load_explicit(&continue_wp_missing, memory_order_relaxed)) {
		e = fl_uffd_continue(c->p->uffd, dst, len, flags | FL_RESOLVE_WP, ret_bytes);
		if (e != -EINVAL || *ret_bytes)
			return e;
	}
	e = fl_uffd_continue(c->p->uffd, dst, len, flags | FL_RESOLVE_DONTWAKE, ret_bytes);
	if (*ret_bytes) {
		atomic_store_explicit(&continue_wp_missing, true, memory_order_relaxed);
		fl_uffd_writeprotect(c->p->uffd, dst, *ret_bytes, FL_RESOLVE_WP);
		if (!(flags & FL_RESOLVE_DONTWAKE))
			fl_uffd_wake(c->p->uffd, dst, *ret_bytes);
	}
	return e;
}

static int do_op_wp(struct pg_ctx *c, struct fl_region *r, enum op op, size_t pg, size_t n,
		    const uint8_t *src, uint32_t flags, size_t *ret_bytes)
{
	struct fl_uffd *u = c->p->uffd;
	uint8_t *dst = page_addr(r, pg);
	size_t len = n << r->shift;

	switch (op) {
	case OP_COPY:
		return fl_uffd_copy(u, dst, src, len, flags, ret_bytes);
	case OP_ZERO:
		if (r->has_zeropage)
			return fl_uffd_zeropage(u, dst, len, flags, ret_bytes);
		/* hugetlbfs has no zero page: copy zeros. */
		return fl_uffd_copy(u, dst, c->p->zeros, len, flags, ret_bytes);
	case OP_CONTINUE:
		return fl_uffd_continue(u, dst, len, flags, ret_bytes);
	case OP_MOVE:
	case OP_SMOVE:
		return fl_uffd_move(u, dst, (void *)src, len, flags, ret_bytes);
	}
	return -EINVAL;
}

/*
 * Residency is counted before an install ioctl, like the method counters:
 * the ioctl wakes the faulting thread, which may look at the counters (or
 * the budget) before st_set() runs. st_set() then takes what it finds
 * counted from c->pre_left; pre_undo() uncounts what did not land.
 */
static void pre_count(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += !(st_load(r, pg + i) & PG_RES);
	if (k)
		fl__budget_in(c, r, k);
	c->pre_left = k;
}

static void pre_undo(struct pg_ctx *c, struct fl_region *r)
{
	if (c->pre_left)
		fl__budget_out(r, c->pre_left, 0);
	c->pre_left = 0;
}

/*
 * Install [pg, pg+n) with one ioctl (continuing past pages that turn out
 * to be there already). Pages that land become PG_PRESENT. *ret_done: the
 * pages settled from pg on. Returns 0 or the error that stopped it. The
 * counter @stat is raised before the ioctl (which may wake the faulting
 * thread) and corrected after, so a woken thread sees its page counted.
 */
static int seg(struct pg_ctx *c, struct fl_region *r, enum op op, size_t pg, size_t n,
	       const uint8_t *src, uint32_t flags, enum pg_stat stat, size_t *ret_done)
{
	size_t done = 0, installed = 0;
	bool one = false;	/* a page per ioctl: the range spans mappings */
	int e = 0;

	fl__stat_add(r, stat, n);
	while (done < n) {
		size_t bytes = 0, k, len = one ? 1 : n - done;

		pre_undo(c, r);

		/* Zeros for hugetlbfs come from a buffer of PG_STAGING bytes. */
		if (op == OP_ZERO && !r->has_zeropage && len << r->shift > PG_STAGING)
			len = PG_STAGING >> r->shift;
		if (op != OP_ZERO) {
			size_t z = 0;

			/*
			 * Data for pages the program discarded while it was read must
			 * not land (the discard gate, see pager.c): stop before them.
			 */
			fl__install_enter(c->p);
			while (z < len && !(st_load(r, pg + done + z) & PG_ZERO))
				z++;
			if (!z) {
				fl__install_exit(c->p);
				e = -ESTALE;
				break;
			}
			len = z;
		}
		pre_count(c, r, pg + done, len);
		e = do_op(c, r, op, pg + done, len, src ? src + (done << r->shift) : NULL, flags,
			  &bytes);
		if (op != OP_ZERO)
			fl__install_exit(c->p);
		k = bytes >> r->shift;
		st_set(c, r, pg + done, k, PG_PRESENT);
		if (k && c->p->hooks.installed)
			c->p->hooks.installed(c->p->hooks.arg, r, pg + done, k);
		installed += k;
		done += k;
		if (!e)
			continue;
		if (e == -ENOENT && len - k > 1 && !one) {
			/*
			 * One ioctl covers one mapping: the program split the
			 * region (mprotect, mlock or madvise of a part of it), or
			 * moved or unmapped a part. Go on a page at a time: only
			 * the pages really gone fail.
			 */
			one = true;
			e = 0;
			continue;
		}
		if (e == -EEXIST) {
			/* Someone else's page is there: present; its waiters still need waking. */
			st_set(c, r, pg + done, 1, PG_PRESENT);
			fl_uffd_wake(c->p->uffd, page_addr(r, pg + done), r->ps);
			if (c->p->hooks.installed)
				c->p->hooks.installed(c->p->hooks.arg, r, pg + done, 1);
			done++;
			e = 0;
			continue;
		}
		if (e == -ENOENT && op == OP_MOVE) {
			/* A hole in the store's memory: the store holds zeros there. */
			size_t d = 0;

			e = do_op(c, r, OP_ZERO, pg + done, 1, NULL, flags, &d);
			if (e && e != -EEXIST)
				break;
			st_set(c, r, pg + done, 1, PG_PRESENT);
			fl__stat_add(r, ST_ZERO, e ? 0 : 1);
			done++;
			e = 0;
			continue;
		}
		break;
	}
	pre_undo(c, r);
	if (installed < n)
		atomic_fetch_sub_explicit(&shard(r)->v[stat], n - installed, memory_order_relaxed);
	*ret_done = done;
	return e;
}

/* Report a page the store (or the kernel) could not give, and apply the region's policy. */
static int page_failed(struct pg_ctx *c, struct run *x, size_t pg, int err)
{
	struct fl_region *r = x->r;

	fl__stat_add(r, ST_ERRORS, 1);
	if (c->populate) {
		release(c, r, pg, 1, false);
		return err;
	}
	if (r->on_error_fn)
		r->on_error_fn(r, (uint64_t)pg << r->shift, err, r->userdata);
	if (r->on_error == FL_ON_ERROR_POISON && r->has_poison) {
		int e;

		/* Counted first: the poison wakes the thread, which may look at once. */
		fl__stat_add(r, ST_POISON, 1);
		e = fl_uffd_poison(c->p->uffd, page_addr(r, pg), r->ps, 0, NULL);
		if (!e || e == -EEXIST) {
			st_set(c, r, pg, 1, e ? PG_PRESENT : PG_POISONED);
			if (e) {
				atomic_fetch_sub(&shard(r)->v[ST_POISON], 1);
				fl_uffd_wake(c->p->uffd, page_addr(r, pg), r->ps);
			}
			fl__wake_waiters(r);
			return err;
		}
		atomic_fetch_sub(&shard(r)->v[ST_POISON], 1);
		if (e == -ESRCH)
			return e;
		if (!c->in_signal)
			fl__err("pager: cannot poison page at offset %#llx: %s; its fault stays blocked",
				(unsigned long long)((uint64_t)pg << r->shift), strerror(-e));
	} else if (r->on_error == FL_ON_ERROR_POISON && c->p->own_memory &&
		   atomic_load(&r->given_up)) {
		/*
		 * The rest of the region was made inaccessible when its pages were
		 * given up (fl__region_poison_absent), while this one was in flight:
		 * the same for it (SIGSEGV), rather than a fault blocked for good.
		 */
		struct fl__poison_opts o = { .step = r->ps, .own_memory = true };

		fl__uffd_poison_absent(c->p->uffd, (uintptr_t)page_addr(r, pg), r->ps, &o, NULL);
		st_set(c, r, pg, 1, PG_POISONED);
		fl__wake_waiters(r);
		return err;
	} else if (r->on_error == FL_ON_ERROR_POISON && !c->in_signal) {
		fl__err("pager: this kernel cannot poison (UFFDIO_POISON, 6.6): the fault at "
			"offset %#llx stays blocked", (unsigned long long)((uint64_t)pg << r->shift));
	}
	/* BLOCK: the faulting thread waits; fl_region_populate() or a new fault retries. */
	release(c, r, pg, 1, false);
	c->blocked = true;
	return err;
}

/*
 * A run failed: the store could not read it (@store) or an install failed.
 * Release every page but the one that matters (the faulting page, or the
 * first for populate); a store failure is then retried for that page alone,
 * so one bad page in a prefetch window never fails the fault it rides on.
 */
static int run_failed(struct pg_ctx *c, struct run *x, int err, bool store)
{
	struct fl_region *r = x->r;
	size_t keep = store ? x->pg : x->fpg;

	if (keep < x->pg || keep >= x->pg + x->n) {
		release(c, r, x->pg, x->n, true);
		fl__stat_add(r, ST_ERRORS, 1);
		return c->populate ? err : 0;
	}
	release(c, r, x->pg, keep - x->pg, true);
	release(c, r, keep + 1, x->pg + x->n - keep - 1, true);
	if (store && x->n > 1) {
		fl__stat_add(r, ST_ERRORS, 1);
		x->pg = keep;
		x->n = 1;
		return run_do(c, x);
	}
	if (!store && !c->in_signal)
		fl__err("pager: installing at offset %#llx failed: %s",
			(unsigned long long)((uint64_t)keep << r->shift), strerror(-err));
	return page_failed(c, x, keep, err);
}

/*
 * After the installs of a run: wake who needs it and sort out an error.
 * @done pages from x->pg are settled. Returns 0, -EAGAIN (x now holds the
 * rest, still PG_BUSY: defer it), -ESTALE (x now starts at a page the
 * program discarded meanwhile: run_do() it again), -ESRCH, or an error for
 * populate.
 */
static int finish(struct pg_ctx *c, struct run *x, int e, size_t done, bool need_wake)
{
	struct fl_region *r = x->r;

	if (need_wake && done)
		fl_uffd_wake(c->p->uffd, page_addr(r, x->pg), done << r->shift);
	fl__wake_waiters(r);
	if (!e)
		return 0;
	x->pg += done;
	x->n -= done;
	if (x->move_src)
		x->move_src += done << r->shift;
	switch (e) {
	case -EAGAIN:
	case -ESTALE:
	case -ESRCH:
		return e;
	case -ENOENT:
		/*
		 * The range is gone (unmapped or unregistered). A fault that raced
		 * an unregistration can still wait there (queued after its
		 * wake-up): wake it, it finds ordinary memory now.
		 */
		release(c, r, x->pg, x->n, true);
		return 0;
	default:
		return run_failed(c, x, e, false);
	}
}

/* A single page the program discarded, or a page that faults again: zeros. */
static int run_zero(struct pg_ctx *c, struct run *x)
{
	size_t d = 0;
	int e = do_op(c, x->r, OP_ZERO, x->pg, 1, NULL, 0, &d);

	if (!e) {
		st_set(c, x->r, x->pg, 1, PG_PRESENT);
		fl__stat_add(x->r, ST_ZERO, 1);
	} else if (e == -EEXIST) {
		/* It is there after all (the fault raced an install): just wake. */
		st_set(c, x->r, x->pg, 1, PG_PRESENT);
		fl_uffd_wake(c->p->uffd, page_addr(x->r, x->pg), x->r->ps);
		e = 0;
	}
	if (!e && c->p->hooks.installed)
		c->p->hooks.installed(c->p->hooks.arg, x->r, x->pg, 1);
	return finish(c, x, e, e ? 0 : 1, false);
}

/*
 * A fault on a page we had installed (the program dropped it behind our
 * back, or the fault raced our install), or a minor fault: resolve only the
 * kernel page at @addr, so a partly dropped multi-page unit is not refilled.
 * Page @x->pg is ours (PG_BUSY); @prev is the state to return to.
 */
static int run_refresh(struct pg_ctx *c, struct run *x, uintptr_t addr, bool minor, uint8_t prev)
{
	struct fl_region *r = x->r;
	struct fl_uffd *u = c->p->uffd;
	size_t g = r->mem == FL_MEM_HUGETLB ? r->ps : fl__page_size(), d = 0;
	uint8_t *a = (uint8_t *)(addr & ~(uintptr_t)(g - 1));
	uint8_t next = prev;
	int e = -EFAULT;

	unsigned int wg = fl__grace_enter(&r->wp_grace);
	bool wp = atomic_load(&r->wp);

	/* Shared memory the program dropped with MADV_DONTNEED is still in the page cache. */
	if (minor || r->method == PG_CONTINUE) {
		e = wp ? continue_wp(c, a, g, 0, &d) : fl_uffd_continue(u, a, g, 0, &d);
		if (!e)
			fl__stat_add(r, ST_CONTINUE, 1);
	}
	if (e == -EFAULT && !minor) {
		e = r->has_zeropage && !wp ? fl_uffd_zeropage(u, a, g, 0, &d)
					   : fl_uffd_copy(u, a, c->p->zeros, g,
							  wp ? FL_RESOLVE_WP : 0, &d);
		if (!e) {
			fl__stat_add(r, ST_ZERO, 1);
			/* Zeros where the store has data: dirty, if the region keeps count. */
			fl__dirty_discarded(r, x->pg, 1);
		}
	}
	fl__grace_exit(&r->wp_grace, wg);
	if (!e && g == r->ps)
		next = PG_PRESENT;
	switch (e) {
	case 0:
		break;
	case -ESRCH:
		return e;
	case -ENOENT:
		/* Unregistered under it: see finish(). */
		fl_uffd_wake(u, a, g);
		e = 0;
		break;
	case -EEXIST:
		/* It is there: the waiters only need waking. */
		fl_uffd_wake(u, a, g);
		e = 0;
		break;
	default:
		/*
		 * EAGAIN (an event is pending), or a page cache page that went
		 * away: let the thread fault again; that fault is read after the
		 * event that blocked this one, so this does not spin.
		 */
		if (e != -EAGAIN && !c->in_signal)
			fl__warn("pager: resolving a repeated fault failed: %s", strerror(-e));
		fl_uffd_wake(u, a, g);
		e = 0;
		break;
	}
	st_set(c, r, x->pg, 1, next);
	fl__wake_waiters(r);
	return e;
}

static int run_move(struct pg_ctx *c, struct run *x)
{
	struct fl_region *r = x->r;
	size_t done = 0, d2;
	int e = seg(c, r, OP_MOVE, x->pg, x->n, x->move_src, 0, ST_MOVE, &done);

	if (e && e != -EAGAIN && e != -ESRCH && e != -ESTALE) {
		/* Refused (protections, exclusivity...): the pages are ours, copy from them. */
		if ((e == -EOPNOTSUPP || e == -EINVAL) &&
		    atomic_exchange(&r->move_ok, false) && !c->in_signal)
			fl__warn("pager: UFFDIO_MOVE refused (%s): copying from now on", strerror(-e));
		e = seg(c, r, OP_COPY, x->pg + done, x->n - done, x->move_src + (done << r->shift),
			0, ST_COPY, &d2);
		done += d2;
	}
	return finish(c, x, e, done, false);
}

/*
 * Staged MOVE: whether @buf (the run's data, read for page @pg on) can be
 * moved in rather than copied: an anonymous region of our own process,
 * MOVE not refused so far, and staging that lies at the same offset
 * within a chunk as the region's page (so whole chunks move as one PMD).
 */
static bool stage_ok(struct fl_region *r, size_t pg, const uint8_t *buf)
{
	return r->stage_move &&
	       atomic_load_explicit(&r->move_ok, memory_order_relaxed) &&
	       ((uintptr_t)page_addr(r, pg) - (uintptr_t)buf) % PG_MOVE_CHUNK == 0;
}

/*
 * Make staging [buf, buf+len) (a run with whole chunks to move) fill with
 * transparent huge pages. Chunks that moved out are empty; but a copied
 * run (a small window, a head or tail) leaves 4 KiB pages behind, and a
 * chunk holding some would be read into 4 KiB pages again and again: the
 * read then reaches the device in 4 KiB pieces (3-4x slower than into huge
 * pages on a paravirtualized disk, measured) and the chunk moves in as 512
 * small pages. So drop what is left first (staging holds nothing between
 * runs), then ask for huge pages.
 */
static void stage_huge(uint8_t *buf, size_t len)
{
	unsigned char vec[PG_MAX_RUN];
	size_t ps = fl__page_size(), n = (len + ps - 1) / ps;

	if (n <= PG_MAX_RUN && mincore(buf, len, vec) == 0) {
		for (size_t i = 0; i < n; i++) {
			if (vec[i] & 1) {
				madvise(buf, len, MADV_DONTNEED);
				break;
			}
		}
	}
	madvise(buf, len, MADV_HUGEPAGE);
}

/*
 * Install the data pages [pg, pg+n) from @src: whole chunks are moved out
 * of staging when @move (the pages leave staging: the next read faults in
 * fresh ones), the rest, and everything after a refused move, copied.
 * Same contract as seg().
 */
static int seg_data(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n,
		    const uint8_t *src, uint32_t flags, bool move, size_t *ret_done)
{
	size_t done = 0, d, head, body, cpp;
	uintptr_t a;
	int e;

	if (!move)
		return seg(c, r, OP_COPY, pg, n, src, flags, ST_COPY, ret_done);
	cpp = r->ps >= PG_MOVE_CHUNK ? 1 : PG_MOVE_CHUNK >> r->shift;
	a = (uintptr_t)page_addr(r, pg);
	head = a % PG_MOVE_CHUNK ? (PG_MOVE_CHUNK - a % PG_MOVE_CHUNK) >> r->shift : 0;
	if (head > n)
		head = n;
	body = (n - head) / cpp * cpp;
	*ret_done = 0;
	if (head) {
		e = seg(c, r, OP_COPY, pg, head, src, flags, ST_COPY, &d);
		done += d;
		if (e || d < head)
			goto out;
	}
	if (body) {
		e = seg(c, r, OP_SMOVE, pg + done, body, src + (done << r->shift), flags, ST_MOVE,
			&d);
		done += d;
		body -= d;
		if (e == -EAGAIN || e == -ESRCH || e == -ESTALE || e == -ENOENT)
			goto out;
		if (e) {
			/* Refused: these pages are still in staging; copy them, and copy from now on. */
			if ((e == -EOPNOTSUPP || e == -EINVAL) &&
			    atomic_exchange(&r->move_ok, false) && !c->in_signal)
				fl__warn("pager: UFFDIO_MOVE out of staging refused (%s): copying "
					 "from now on", strerror(-e));
			e = seg(c, r, OP_COPY, pg + done, body, src + (done << r->shift), flags,
				ST_COPY, &d);
			done += d;
			if (e || d < body)
				goto out;
		}
	}
	e = 0;
	if (done < n) {
		e = seg(c, r, OP_COPY, pg + done, n - done, src + (done << r->shift), flags,
			ST_COPY, &d);
		done += d;
	}
out:
	*ret_done = done;
	return e;
}

/*
 * An event stopped the install of a run whose data was read (x now holds
 * the rest): keep the data, so the retry installs it without reading the
 * store again. CONTINUE runs are in the page cache already.
 */
static void keep_data(struct pg_ctx *c, struct run *x, const uint8_t *buf, const uint64_t *holes,
		      size_t off)
{
	struct fl_region *r = x->r;
	struct pg_kept *k;

	if (r->method == PG_CONTINUE) {
		x->filled = true;
		return;
	}
	if (c->in_signal)
		return;		/* no malloc here: the retry reads again */
	k = malloc(sizeof(*k) + (x->n << r->shift));
	if (k) {
		memset(k->holes, 0, sizeof(k->holes));
		for (size_t i = 0; i < x->n; i++)
			if (fl__bit_test(holes, off + i))
				fl__bit_set(k->holes, i);
		memcpy(k->data, buf + (off << r->shift), x->n << r->shift);
	}
	free(x->kept);	/* buf may have pointed into it: copied first */
	x->kept = k;
}

/* Read [pg, pg+n) from the store (or use what was kept) and install it: COPY or CONTINUE. */
static int run_fill(struct pg_ctx *c, struct run *x)
{
	struct fl_region *r = x->r;
	uint64_t holes[PG_MAX_RUN / 64];
	bool cont = r->method == PG_CONTINUE, any_hole = false, move;
	size_t len = x->n << r->shift, done = 0, pg0 = x->pg;
	uint8_t *buf;
	int e = 0;

	if (x->filled) {
		/* Filled before an event got in the way: only the mapping is left to do. */
		e = seg(c, r, OP_CONTINUE, x->pg, x->n, NULL, 0, ST_CONTINUE, &done);
		return finish(c, x, e, done, false);
	}
	if (x->kept) {
		buf = x->kept->data;
		memcpy(holes, x->kept->holes, sizeof(holes));
	} else {
		buf = cont ? r->alias + (x->pg << r->shift) : staging(c);
		if (!buf)
			return run_failed(c, x, -ENOMEM, true);
		/*
		 * A run with whole chunks to move out of staging: let the read
		 * fill whole transparent huge pages there, which then move as one
		 * PMD each. Only then: staging that only copies stays small.
		 */
		if (!cont && len >= PG_MOVE_CHUNK && stage_ok(r, x->pg, buf))
			stage_huge(buf, len);
		if (c->p->workers && !c->in_signal)
			fl__pager_keep_reading(c->p);
		fl__stat_add(r, ST_READS, 1);
		e = fl_store_read(r->store, store_offset(r, x->pg), buf, len, r->ps, holes);
		if (e < 0) {
			if (cont) {
				/* What the store wrote into the page cache must never be mapped. */
				fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					  (off_t)(r->memfd_off + (x->pg << r->shift)), (off_t)len);
			}
			return run_failed(c, x, e, true);
		}
		fl__stat_add(r, ST_BYTES, len);
	}
	for (size_t w = 0; w < (x->n + 63) / 64; w++) {
		if (x->n - w * 64 < 64)
			holes[w] &= (1ull << (x->n - w * 64)) - 1;
		any_hole |= holes[w] != 0;
	}
	move = !cont && !x->kept && stage_ok(r, x->pg, buf);
	if (!any_hole) {
		if (cont)
			e = seg(c, r, OP_CONTINUE, x->pg, x->n, NULL, 0, ST_CONTINUE, &done);
		else
			e = seg_data(c, r, x->pg, x->n, buf, 0, move, &done);
		e = finish(c, x, e, done, false);
		goto out;
	}
	/* The page cache needs a page to map for each hole: make them zeroed ones, all first. */
	for (size_t i = 0; cont && i < x->n; i++)
		if (fl__bit_test(holes, i))
			memset(buf + (i << r->shift), 0, r->ps);
	/* Alternate data and hole segments, none waking, then one wake for the run. */
	while (done < x->n) {
		bool hole = fl__bit_test(holes, done);
		size_t end = done + 1, d = 0;

		while (end < x->n && fl__bit_test(holes, end) == hole)
			end++;
		if (cont)
			e = seg(c, r, OP_CONTINUE, x->pg + done, end - done, NULL,
				FL_RESOLVE_DONTWAKE, hole ? ST_ZERO : ST_CONTINUE, &d);
		else if (hole)
			e = seg(c, r, OP_ZERO, x->pg + done, end - done, NULL, FL_RESOLVE_DONTWAKE,
				ST_ZERO, &d);
		else
			e = seg_data(c, r, x->pg + done, end - done, buf + (done << r->shift),
				     FL_RESOLVE_DONTWAKE, move, &d);
		done += d;
		if (e)
			break;
	}
	e = finish(c, x, e, done, true);
out:
	if (e == -EAGAIN) {
		keep_data(c, x, buf, holes, x->pg - pg0);
	} else {
		free(x->kept);
		x->kept = NULL;
		/* Discarded meanwhile: the page cache holds the rest, holes get punched. */
		if (e == -ESTALE && cont)
			x->filled = true;
	}
	return e;
}

static void defer(struct pg_ctx *c, struct run *x);

static int run_do(struct pg_ctx *c, struct run *x)
{
	struct fl_region *r = x->r;
	int e;

	for (size_t k = 0; k < x->n; k++) {
		int first = 0;

		if (!(st_load(r, x->pg + k) & PG_ZERO))
			continue;
		if (x->n == 1) {
			free(x->kept);
			x->kept = NULL;
			return run_zero(c, x);
		}
		/*
		 * A REMOVE event hit a deferred run: page by page, zeros where
		 * discarded (what was kept is read again: rare enough).
		 */
		free(x->kept);
		x->kept = NULL;
		for (k = 0; k < x->n; k++) {
			struct run one = {
				.r = r, .pg = x->pg + k, .n = 1, .fpg = x->fpg,
				.move_src = x->move_src ? x->move_src + (k << r->shift) : NULL,
				.filled = x->filled,
			};

			if (x->filled && (st_load(r, one.pg) & PG_ZERO))
				fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					  (off_t)(r->memfd_off + (one.pg << r->shift)), (off_t)r->ps);
			e = run_do(c, &one);
			if (e == -EAGAIN)
				defer(c, &one);
			else if (e < 0 && !first)
				first = e;
		}
		return first;
	}
	if (!x->move_src && r->method == PG_MOVE &&
	    atomic_load_explicit(&r->move_ok, memory_order_relaxed) && !atomic_load(&r->wp)) {
		void *src = NULL;

		/*
		 * A store that cannot hand this range over is read instead (copy per
		 * run); so is every store while a live snapshot watches the region
		 * (it reads from the store the pages not brought in at its instant).
		 */
		if (fl_store_take_pages(r->store, store_offset(r, x->pg), x->n << r->shift,
					&src) == 0)
			x->move_src = src;
	}
	e = x->move_src ? run_move(c, x) : run_fill(c, x);
	/* A page was discarded while it was read: from it on, again (zeros there). */
	return e == -ESTALE ? run_do(c, x) : e;
}

/* --------------------------------------------------------- deferring */

static void defer(struct pg_ctx *c, struct run *x)
{
	if (c->def && c->ndef < PG_DEFER) {
		c->def[c->ndef++] = (struct pg_deferred){
			.r = x->r, .id = x->r->id, .pg = x->pg, .n = x->n, .move_src = x->move_src,
			.kept = x->kept, .filled = x->filled,
		};
		return;
	}
	/*
	 * No list to keep it on (populate), or the list is full: the events
	 * that block the install are read by another resolver; wait for them.
	 */
	for (unsigned int i = 0; i < 2000; i++) {
		int e;

		backoff(i);
		if (atomic_load(&x->r->removing) || atomic_load(&c->p->dead))
			break;
		e = run_do(c, x);
		if (e != -EAGAIN)
			return;
	}
	if (!c->in_signal)
		fl__warn("pager: an event blocks an install for too long; its fault will be retried");
	free(x->kept);
	x->kept = NULL;
	release(c, x->r, x->pg, x->n, true);
}

size_t fl__resolve_retry(struct pg_ctx *c)
{
	size_t n = c->ndef, kept = 0;

	for (size_t i = 0; i < n; i++) {
		struct pg_deferred d = c->def[i];
		struct fl_region *r = fl__region_get_by_id(c->p, d.r, d.id);
		struct run x = { .r = r, .pg = d.pg, .n = d.n, .fpg = d.pg, .move_src = d.move_src,
				 .kept = d.kept, .filled = d.filled };
		int e;

		if (!r) {
			free(d.kept);
			continue;	/* removed meanwhile: its pages were poisoned or unmapped */
		}
		e = run_do(c, &x);
		if (e == -EAGAIN)
			c->def[kept++] = (struct pg_deferred){
				.r = r, .id = d.id, .pg = x.pg, .n = x.n, .move_src = x.move_src,
				.kept = x.kept, .filled = x.filled,
			};
		fl__region_put(r);
		if (e == -ESRCH)
			fl__pager_mark_dead(c->p);
	}
	/* Runs deferred while retrying were appended after n. */
	for (size_t i = n; i < c->ndef; i++)
		c->def[kept++] = c->def[i];
	c->ndef = kept;
	return kept;
}

/* ------------------------------------------------------------- faults */

/* The prefetch window for a fault at @pg, in pages, and the stream's statistics. */
static size_t window(struct fl_region *r, size_t pg)
{
	size_t next, w, last;
	bool seq;

	if (r->prefetch == FL_PREFETCH_NONE)
		return 1;
	next = atomic_load_explicit(&r->next_seq, memory_order_relaxed);
	seq = pg == next;
	last = atomic_exchange_explicit(&r->last_pf, 0, memory_order_relaxed);
	if (last)
		fl__stat_add(r, seq ? ST_PF_USED : ST_PF_WASTED, last);
	if (r->prefetch == FL_PREFETCH_FIXED) {
		w = r->pf_max;
	} else {
		w = atomic_load_explicit(&r->window, memory_order_relaxed);
		w = seq && w ? (w * 2 < r->pf_max ? w * 2 : r->pf_max) : r->pf_min;
		atomic_store_explicit(&r->window, w, memory_order_relaxed);
	}
	return w;
}

/*
 * Staged MOVE moves whole chunks only: a run of at least a chunk is cut
 * to end on a chunk boundary, so that the next one starts on one.
 */
static size_t chunk_window(struct fl_region *r, size_t pg, size_t w)
{
	size_t cpp, q, end;

	if (!r->stage_move || r->ps >= PG_MOVE_CHUNK)
		return w;
	cpp = PG_MOVE_CHUNK >> r->shift;
	if (w < cpp)
		return w;
	q = (size_t)(atomic_load_explicit(&r->base, memory_order_relaxed) >> r->shift);
	end = (q + pg + w) / cpp * cpp - q;
	return end > pg ? end - pg : w;
}

/* Claim up to @w pages from @pg (already ours) on: stop at the edge and at any page not absent. */
static size_t claim_run(struct fl_region *r, size_t pg, size_t w)
{
	size_t n = 1, cap = PG_STAGING >> r->shift;

	if (w > cap)
		w = cap;
	w = chunk_window(r, pg, w);
	while (n < w && pg + n < r->npages) {
		uint8_t s = PG_ABSENT;

		if (!st_claim(r, pg + n, &s, PG_BUSY))
			break;
		n++;
	}
	return n;
}

/* Pages [pg, pg+n) are ours: bring them in, defer on a pending event. */
static int resolve_claimed(struct pg_ctx *c, struct run *x)
{
	int e = run_do(c, x);

	if (e == -EAGAIN) {
		defer(c, x);
		e = 0;
	}
	return e;
}

int fl__resolve_fault(struct pg_ctx *c, struct fl_region *r, uintptr_t start, uintptr_t addr,
		      uint32_t fault_flags, uint64_t t0)
{
	size_t pg = (addr - start) >> r->shift;
	struct run x = { .r = r, .pg = pg, .n = 1, .fpg = pg };
	bool minor = (fault_flags & FL_FAULT_MINOR) && r->method == PG_CONTINUE;
	int e;

	if (pg >= r->npages)
		return 0;
	fl__stat_add(r, ST_FAULTS, 1);
	if (r->ws && !c->populate)
		fl__ws_note(r, pg);
	for (;;) {
		uint8_t s = st_load(r, pg);

		switch (s & PG_STATE) {
		case PG_BUSY:
			/*
			 * In flight: the install wakes every thread waiting on the
			 * page; the mark makes settling wake it once more, in case
			 * the install is done and only its state lags behind.
			 */
			if (!(s & PG_WAITED) && !atomic_compare_exchange_strong(&r->state[pg], &s,
										  s | PG_WAITED))
				continue;
			if (c->p->hooks.fault && !c->populate)
				c->p->hooks.fault(c->p->hooks.arg, r, pg, c->tid, true);
			return 0;
		case PG_GONE:
			return 0;
		case PG_POISONED:
			fl_uffd_wake(c->p->uffd, page_addr(r, pg), r->ps);
			return 0;
		case PG_PRESENT:
			if (!st_claim(r, pg, &s, PG_BUSY))
				continue;
			e = run_refresh(c, &x, addr, minor, s);
			break;
		default:
			if (minor) {
				if (!st_claim(r, pg, &s, PG_BUSY))
					continue;
				e = run_refresh(c, &x, addr, true, s);
				break;
			}
			if (!st_claim(r, pg, &s, (uint8_t)(PG_BUSY | (s & PG_ZERO))))
				continue;
			if (!(s & PG_ZERO) && c->p->hooks.fault && !c->populate)
				c->p->hooks.fault(c->p->hooks.arg, r, pg, c->tid, false);
			if (s & PG_ZERO)
				fl__budget_admit(c, r, 1);
			if (!(s & PG_ZERO)) {
				x.n = claim_run(r, pg, fl__budget_admit(c, r, window(r, pg)));
				if (r->prefetch != FL_PREFETCH_NONE) {
					atomic_store_explicit(&r->next_seq, pg + x.n,
							      memory_order_relaxed);
					atomic_store_explicit(&r->last_pf, x.n - 1,
							      memory_order_relaxed);
					fl__stat_add(r, ST_PREFETCHED, x.n - 1);
				}
			}
			e = resolve_claimed(c, &x);
			break;
		}
		break;
	}
	if (e == -EAGAIN) {
		defer(c, &x);
		e = 0;
	}
	fl__budget_unreserve(c);
	fl__stat_lat(r, fl__now_ns() - t0);
	return e == -ESRCH ? e : 0;
}

/* ---------------------------------------------------------- SIGBUS mode */

bool fl__resolve_sigbus(struct fl_region *r, uintptr_t start, uintptr_t addr)
{
	struct fl_pager *p = r->pager;
	struct pg_ctx ctx = { .p = p, .slot = -1, .in_signal = true };
	size_t pg = (addr - start) >> r->shift;
	uint64_t t0 = fl__now_ns();
	bool waited = false, handled = true;

	if (pg >= r->npages)
		return false;
	for (;;) {
		uint8_t s;

		if (atomic_load(&r->removing) || atomic_load(&p->dead))
			break;	/* the access is retried and meets the removal's poison */
		if (!atomic_load(&p->running)) {
			/* Stopped: the thread waits here, as a handler thread's fault would. */
			uint32_t seq = atomic_load(&p->run_seq);

			if (!atomic_load(&p->running) && !atomic_load(&r->removing))
				fl__wait_seq(&p->run_seq, seq, 50 * 1000 * 1000);
			continue;
		}
		s = st_load(r, pg);
		if ((s & PG_STATE) == PG_POISONED || (s & PG_STATE) == PG_GONE) {
			handled = false;	/* poisoned on purpose: the previous handler decides */
			break;
		}
		if ((s & PG_STATE) == PG_BUSY) {
			fl__wait_page(r, pg, PG_BUSY);
			waited = true;
			continue;
		}
		if ((s & PG_STATE) == PG_PRESENT && waited)
			break;
		/*
		 * Write-protect faults raise SIGBUS too: a present page that is
		 * write-protected. Unprotect it first; if it was not there after
		 * all (dropped behind our back), the refresh below finds that out.
		 */
		if ((s & PG_STATE) == PG_PRESENT && (r->track_dirty || r->on_wp))
			fl__dirty_wp_fault(&ctx, r, pg);
		ctx.blocked = false;
		fl__resolve_fault(&ctx, r, start, addr, 0, t0);
		if ((st_load(r, pg) & PG_STATE) == PG_ABSENT) {
			/*
			 * BLOCK policy: wait for fl_region_populate() (or removal).
			 * Otherwise the page went again (evicted) before the thread
			 * got to it: once more.
			 */
			if (ctx.blocked)
				fl__wait_page(r, pg, PG_ABSENT);
			waited = ctx.blocked;
			continue;
		}
		break;
	}
	fl__ctx_release(&ctx);
	return handled;
}

/* -------------------------------------------------------------- populate */

int fl__resolve_populate(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n)
{
	size_t i = pg, end = pg + n;
	int first = 0;

	while (i < end) {
		uint8_t s = st_load(r, i);
		struct run x = { .r = r, .pg = i, .n = 1, .fpg = SIZE_MAX };
		int e;

		if (atomic_load(&r->removing) || atomic_load(&c->p->dead))
			return first ? first : -ENOENT;
		switch (s & PG_STATE) {
		case PG_PRESENT:
		case PG_GONE:
			i++;
			continue;
		case PG_POISONED:
			if (!first)
				first = -EIO;
			i++;
			continue;
		case PG_BUSY:
			fl__wait_page(r, i, PG_BUSY);
			continue;
		default:
			break;
		}
		if (!st_claim(r, i, &s, (uint8_t)(PG_BUSY | (s & PG_ZERO))))
			continue;
		if (s & PG_ZERO)
			fl__budget_admit(c, r, 1);
		if (!(s & PG_ZERO)) {
			size_t w = end - i < (PG_STAGING >> r->shift) ? end - i
								      : PG_STAGING >> r->shift;

			w = fl__budget_admit(c, r, chunk_window(r, i, w));
			while (x.n < w) {
				uint8_t a = PG_ABSENT;

				if (!st_claim(r, i + x.n, &a, PG_BUSY))
					break;
				x.n++;
			}
		}
		i += x.n;
		e = run_do(c, &x);
		if (e == -EAGAIN) {
			defer(c, &x);
			e = 0;
		}
		fl__budget_unreserve(c);
		if (e == -ESRCH) {
			fl__pager_mark_dead(c->p);
			return e;
		}
		if (e < 0 && !first)
			first = e;
	}
	return first;
}

/* -------------------------------------------------------------- removal */

/* EAGAIN while poisoning: the handler threads read the pending event; give them the CPU. */
static int yield_to_readers(void *arg)
{
	(void)arg;
	sched_yield();
	return 0;
}

void fl__resolve_poison_absent(struct fl_region *r)
{
	struct fl_pager *p = r->pager;
	struct pg_ctx ctx = { .p = p, .slot = -1 }, *c = &ctx;
	struct fl__poison_opts o = {
		.step = r->ps, .drain = yield_to_readers, .own_memory = p->own_memory,
	};
	size_t i = 0;
	bool warned = false;

	while (i < r->npages) {
		uint64_t poisoned = 0;
		size_t j = i;
		int e;

		/* Pages the store still has (absent, or abandoned in flight); not discarded ones. */
		while (j < r->npages && !(st_load(r, j) & PG_ZERO) &&
		       ((st_load(r, j) & PG_STATE) == PG_ABSENT ||
			(st_load(r, j) & PG_STATE) == PG_BUSY))
			j++;
		if (j == i) {
			i++;
			continue;
		}
		e = r->has_poison || p->own_memory
			    ? fl__uffd_poison_absent(p->uffd, (uintptr_t)page_addr(r, i),
						     (j - i) << r->shift, &o, &poisoned)
			    : -EOPNOTSUPP;
		st_set(c, r, i, j - i, PG_POISONED);
		fl__stat_add(r, ST_POISON, poisoned >> r->shift);
		if (e < 0 && !warned) {
			fl__err("pager: cannot poison the absent pages of a removed region (%s); "
				"%s", strerror(-e),
				p->own_memory ? "they are made inaccessible instead"
					    : "they will read as zeros");
			warned = true;
		}
		i = j;
	}
}

/* --------------------------------------------------------------- supply */

static uint8_t supply_outcome(struct fl_region *r, size_t pg)
{
	uint8_t s = st_load(r, pg);

	switch (s & PG_STATE) {
	case PG_PRESENT:
		return FL__SUPPLY_PRESENT;
	case PG_BUSY:
		return FL__SUPPLY_BUSY;
	case PG_ABSENT:
		return s & PG_ZERO ? FL__SUPPLY_DISCARDED : FL__SUPPLY_FAILED;
	default:
		return FL__SUPPLY_GONE;
	}
}

/* Install the claimed run @x from @src (NULL: zeros), waiting out pending events. */
static void supply_run(struct pg_ctx *c, struct run *x, const uint8_t *src)
{
	struct fl_region *r = x->r;
	size_t pg0 = x->pg;

	for (unsigned int tries = 0; x->n;) {
		size_t done = 0;
		int e = seg(c, r, src ? OP_COPY : OP_ZERO, x->pg, x->n,
			    src ? src + ((x->pg - pg0) << r->shift) : NULL, 0, src ? ST_COPY : ST_ZERO,
			    &done);

		if (e == -ENOENT) {
			finish(c, x, 0, done, false);
			x->pg += done;
			x->n -= done;
			/*
			 * Nothing is mapped at the address. The kernel looks the
			 * mapping up before it checks for unread events, so a
			 * program's mremap() or munmap() under way shows as ENOENT,
			 * not EAGAIN, and its event follows. Wait for it, bounded as
			 * for EAGAIN: a move gives the region its new address (the
			 * next try goes there), an unmap marks the pages gone.
			 * Without those events nothing follows: gone now.
			 */
			if ((c->p->feats & (FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_UNMAP)) &&
			    tries < 2000 && !atomic_load(&r->removing) && !atomic_load(&r->gone) &&
			    !atomic_load(&c->p->dead) && (st_load(r, x->pg) & PG_STATE) == PG_BUSY) {
				backoff(tries++);
				continue;
			}
			/* Unmapped under us: those pages will never be here. */
			st_set(c, r, x->pg, x->n, PG_GONE);
			fl__wake_waiters(r);
			return;
		}
		e = finish(c, x, e, done, false);
		if (!e)
			return;
		if (e == -ESTALE) {
			/* Discarded meanwhile: it stays so. */
			release(c, r, x->pg, 1, true);
			x->pg++;
			x->n--;
			continue;
		}
		if (e == -EAGAIN && tries < 2000 && !atomic_load(&r->removing) &&
		    !atomic_load(&c->p->dead)) {
			backoff(tries++);
			continue;
		}
		if (e == -ESRCH)
			fl__pager_mark_dead(c->p);
		/* Given up (or failed, released by finish): a fault still brings it in. */
		if (e == -EAGAIN || e == -ESRCH)
			release(c, r, x->pg, x->n, true);
		return;
	}
}

/* The region of child pager @cp serving what @r serves, counted; or NULL. */
static struct fl_region *child_region(struct fl_pager *cp, struct fl_region *r)
{
	unsigned int e = fl__grace_enter(&cp->grace);
	struct pg_table *t = atomic_load(&cp->table);
	struct fl_region *found = NULL;

	for (size_t i = 0; i < t->n && !found; i++) {
		struct fl_region *cr = t->e[i].r;

		if (cr->store == r->store && cr->store_off == r->store_off && cr->len == r->len) {
			found = cr;
			atomic_fetch_add(&cr->users, 1);
		}
	}
	fl__grace_exit(&cp->grace, e);
	return found;
}

int fl__region_supply(struct fl_region *r, size_t pg, size_t n, const void *src, uint8_t *out)
{
	struct fl_pager *p = r->pager;
	struct pg_ctx ctx = { .p = p, .slot = -1, .populate = true };
	const uint8_t *data = src;
	size_t i = 0, nc;
	int ret = 0;

	if (pg > r->npages || n > r->npages - pg)
		return -EINVAL;
	atomic_fetch_add(&r->users, 1);
	while (i < n) {
		struct run x = { .r = r, .pg = pg + i, .n = 0, .fpg = SIZE_MAX };
		size_t claimed;

		if (atomic_load(&r->removing) || atomic_load(&r->gone) || atomic_load(&p->dead)) {
			for (; out && i < n; i++)
				out[i] = FL__SUPPLY_GONE;
			ret = -ENOENT;
			break;
		}
		/* Claimed under the gate: a discard being applied right now is seen (pager.c). */
		fl__install_enter(p);
		while (i + x.n < n && x.n < (PG_STAGING >> r->shift)) {
			uint8_t s = PG_ABSENT;

			if (!st_claim(r, pg + i + x.n, &s, PG_BUSY))
				break;
			x.n++;
		}
		fl__install_exit(p);
		if (!x.n) {
			uint8_t o = supply_outcome(r, pg + i);

			if (o == FL__SUPPLY_FAILED)
				continue;	/* absent again already: claim it anew */
			if (out)
				out[i] = o;
			i++;
			continue;
		}
		claimed = x.n;
		supply_run(&ctx, &x, data ? data + (i << r->shift) : NULL);
		for (size_t k = 0; out && k < claimed; k++) {
			uint8_t o = supply_outcome(r, pg + i + k);

			out[i + k] = o == FL__SUPPLY_PRESENT ? FL__SUPPLY_INSTALLED : o;
		}
		i += claimed;
	}
	fl__region_put(r);
	fl__ctx_release(&ctx);
	/* Children served by this pager lack what this one lacked at their fork. */
	nc = atomic_load_explicit(&p->nchildren, memory_order_acquire);
	for (size_t k = 0; k < nc; k++) {
		struct fl_pager *cp = p->children[k].p;
		struct fl_region *cr;

		if (atomic_load(&cp->dead) || !(cr = child_region(cp, r)))
			continue;
		fl__region_supply(cr, pg, n, src, NULL);
		fl__region_put(cr);
	}
	return ret;
}

void fl__region_mark_present(struct fl_region *r, size_t pg, size_t n)
{
	struct pg_ctx ctx = { .p = r->pager, .slot = -1 };

	for (size_t i = 0; i < n && pg + i < r->npages; i++) {
		uint8_t s = PG_ABSENT;

		if (st_claim(r, pg + i, &s, PG_BUSY))
			st_set(&ctx, r, pg + i, 1, PG_PRESENT);
	}
}

/*
 * Poison pages [pg, pg+n) of @r, claimed (PG_BUSY) by us. A page found
 * present (written before the region joined the pager) becomes PG_PRESENT;
 * one poisoned PG_POISONED. Returns the first error of the kernel.
 */
static int poison_claimed(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n,
			  const struct fl__poison_opts *o, uint64_t *ret_poisoned)
{
	uint64_t poisoned = 0;
	int e, first = 0;

	e = fl__uffd_poison_absent(c->p->uffd, (uintptr_t)page_addr(r, pg), n << r->shift, o,
				   &poisoned);
	if (poisoned == (uint64_t)n << r->shift || n == 1) {
		st_set(c, r, pg, n, poisoned || e < 0 ? PG_POISONED : PG_PRESENT);
		*ret_poisoned += poisoned;
		return e;
	}
	/* Some were present: page by page, to record which (rare: a failure path). */
	*ret_poisoned += poisoned;
	for (size_t i = 0; i < n; i++) {
		uint64_t one = 0;

		e = fl__uffd_poison_absent(c->p->uffd, (uintptr_t)page_addr(r, pg + i),
					   (uint64_t)1 << r->shift, o, &one);
		st_set(c, r, pg + i, 1, one || e < 0 ? PG_POISONED : PG_PRESENT);
		if (e < 0 && !first)
			first = e;
	}
	return first;
}

int fl__region_poison_absent(struct fl_region *r, uint64_t *ret_poisoned)
{
	struct pg_ctx ctx = { .p = r->pager, .slot = -1 };
	struct fl__poison_opts o = {
		.step = r->ps, .drain = yield_to_readers, .own_memory = r->pager->own_memory,
	};
	uint64_t poisoned = 0;
	size_t i = 0;
	int first = 0;

	/* Before the claims: a page in flight now that fails later is given up too. */
	atomic_store(&r->given_up, true);
	while (i < r->npages) {
		size_t n = 0;
		int e;

		/* Claim a run of pages only the store has (absent, never discarded). */
		while (i + n < r->npages) {
			uint8_t s = PG_ABSENT;

			if (!st_claim(r, i + n, &s, PG_BUSY))
				break;
			n++;
		}
		if (!n) {
			i++;
			continue;
		}
		e = poison_claimed(&ctx, r, i, n, &o, &poisoned);
		if (e < 0 && !first)
			first = e;
		i += n;
	}
	fl__stat_add(r, ST_POISON, poisoned >> r->shift);
	fl__wake_waiters(r);
	if (ret_poisoned)
		*ret_poisoned += poisoned;
	return first;
}
