/* SPDX-License-Identifier: MIT */
/* Dirty tracking and write-back: which pages were written since they came in, and putting them back. */

/*
 * How it works (synchronous write-protect faults):
 *
 * - A region that tracks dirty pages (or has on_wp) is registered for
 *   write-protect faults as well as missing ones, and every install maps
 *   its pages write-protected (r->wp, the same installs a live snapshot
 *   uses). The first write to a page faults; fl__dirty_wp_fault() claims
 *   the page (PG_PRESENT -> PG_BUSY), sets its dirty bit, calls on_wp,
 *   unprotects it (which wakes the writer) and settles it PG_PRESENT.
 * - The invariant: a present page whose dirty bit is clear is write-
 *   protected. The bit is set before a page is unprotected and cleared
 *   only after it was protected again.
 * - Write-back of pages someone owns (PG_BUSY: eviction's claim, or
 *   fl_region_sync()'s own): protect the dirty ones, clear their bits,
 *   copy them out (from the memfd, or /proc/self/mem: a page the program
 *   discarded or unmapped meanwhile gives EIO, never a fault that waits on
 *   the page we own; see copy_out), write the copy to the store, and only then
 *   let the pages go. A write meanwhile blocks in its write-protect fault
 *   (the page is PG_BUSY: marked PG_WAITED, woken when the owner settles
 *   it), so it lands after the copy, on a page that is dirty again (sync),
 *   or faults the page back in from the store that has the copy
 *   (eviction). Pages stay claimed until the store has the data: a clean
 *   page dropped meanwhile could otherwise be read back from the store
 *   before the write reached it.
 * - A store write that fails leaves the pages dirty (and protected): they
 *   are written again next time.
 *
 * Why not UFFD_FEATURE_WP_ASYNC with PAGEMAP_SCAN: see faultline(7),
 * "Dirty tracking". In short, the kernel resolves asynchronous write-protect
 * faults itself, so between the last scan and the drop of an evicted page
 * a write is neither blocked nor reported.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "pager-int.h"

static uint8_t *pg_addr(struct fl_region *r, size_t pg)
{
	return (uint8_t *)atomic_load_explicit(&r->base, memory_order_relaxed) + (pg << r->shift);
}

static bool dirty_test(struct fl_region *r, size_t pg)
{
	return atomic_load_explicit(&r->dirty[pg / 64], memory_order_acquire) &
	       (1ull << (pg % 64));
}

static void dirty_mark(struct fl_region *r, size_t pg, size_t n, bool on)
{
	for (uint64_t i = pg, k; i < pg + n; i += k) {
		uint64_t m = fl__bits_word_mask(i, pg + n, &k);

		if (on)
			atomic_fetch_or_explicit(&r->dirty[i / 64], m, memory_order_acq_rel);
		else
			atomic_fetch_and_explicit(&r->dirty[i / 64], ~m, memory_order_acq_rel);
	}
}

int fl__dirty_setup(struct fl_region *r)
{
	if (!r->track_dirty && !r->on_wp)
		return 0;
	if (r->track_dirty) {
		r->mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
		if (r->mem_fd < 0) {
			int e = -errno;

			fl__err("pager: opening /proc/self/mem for write-back copies: %s",
				strerror(-e));
			return e;
		}
		r->dirty = calloc((r->npages + 63) / 64, sizeof(*r->dirty));
		if (!r->dirty) {
			close(r->mem_fd);
			return -ENOMEM;
		}
		pthread_mutex_init(&r->wb_lock, NULL);
	}
	/* For good: a live snapshot cannot attach to this region (fl__region_wp_attach). */
	atomic_store(&r->wp, true);
	return 0;
}

void fl__dirty_free(struct fl_region *r)
{
	if (!r->dirty)
		return;
	pthread_mutex_destroy(&r->wb_lock);
	close(r->mem_fd);
	if (r->wb_buf)
		munmap(r->wb_buf, PG_STAGING);
	free((void *)r->dirty);
	r->dirty = NULL;
}

uint32_t fl__dirty_modes(const struct fl_region *r)
{
	return r->track_dirty || r->on_wp ? FL_REGISTER_WP : 0;
}

void fl__dirty_discarded(struct fl_region *r, size_t pg, size_t n)
{
	if (r->dirty)
		dirty_mark(r, pg, n, true);
}

/*
 * Take page @pg from present to PG_BUSY (its residency bits stay), from
 * the state @*seen. false: it was not present (any more); @*seen is now.
 */
static bool claim(struct fl_region *r, size_t pg, uint8_t *seen)
{
	if ((*seen & PG_STATE) != PG_PRESENT)
		return false;
	return atomic_compare_exchange_strong(&r->state[pg], seen,
					      (uint8_t)((*seen & ~PG_STATE) | PG_BUSY));
}

/*
 * Pages [pg, pg+n) we owned (PG_BUSY) settle as present again, keeping
 * their residency bits; one the program discarded meanwhile (PG_ZERO) is
 * absent and no longer resident.
 */
static void settle(struct fl_region *r, size_t pg, size_t n)
{
	uint8_t seen = 0;
	size_t out = 0, hot = 0;

	for (size_t i = pg; i < pg + n; i++) {
		uint8_t s = atomic_load(&r->state[i]), to;

		do {
			/* Unmapped meanwhile (the UNMAP event took it off the budget): stays so. */
			if ((s & PG_STATE) == PG_GONE)
				break;
			to = s & PG_ZERO ? PG_ABSENT | PG_ZERO
					 : (uint8_t)((s & (PG_RES | PG_HOT)) | PG_PRESENT);
		} while (!atomic_compare_exchange_weak(&r->state[i], &s, to));
		seen |= s;
		if ((s & PG_STATE) == PG_GONE)
			continue;
		/* Discarded while we held it: zeros now, which the store has not. */
		if ((s & PG_ZERO) && r->dirty)
			dirty_mark(r, i, 1, true);
		if ((s & PG_ZERO) && (s & PG_RES)) {
			out++;
			hot += (s & PG_HOT) != 0;
		}
	}
	if (out)
		fl__budget_out(r, out, hot);
	if (seen & PG_WAITED)
		fl_uffd_wake(r->pager->uffd, pg_addr(r, pg), n << r->shift);
	fl__wake_waiters(r);
}

void fl__dirty_wp_fault(struct pg_ctx *c, struct fl_region *r, size_t pg)
{
	struct fl_uffd *u = c->p->uffd;
	uint8_t *a = pg_addr(r, pg);

	for (;;) {
		uint8_t s = atomic_load_explicit(&r->state[pg], memory_order_acquire);
		int e;

		switch (s & PG_STATE) {
		case PG_PRESENT:
			if (!claim(r, pg, &s))
				continue;
			fl__stat_add(r, ST_WP_FAULTS, 1);
			if (r->dirty)
				dirty_mark(r, pg, 1, true);
			if (r->on_wp)
				r->on_wp(r, (uint64_t)pg << r->shift, r->userdata);
			/* Unprotecting wakes the writer. */
			e = fl_uffd_writeprotect(u, a, r->ps, 0);
			if (e < 0) {
				/*
				 * EAGAIN: an event is pending; the writer faults again and
				 * that fault is read after it. The page stays dirty and
				 * protected, which is allowed.
				 */
				if (e != -EAGAIN && e != -ENOENT && e != -ESRCH && !c->in_signal)
					fl__warn("pager: unprotecting the page at offset %#llx: %s",
						 (unsigned long long)((uint64_t)pg << r->shift),
						 strerror(-e));
				fl_uffd_wake(u, a, r->ps);
			}
			settle(r, pg, 1);
			return;
		case PG_BUSY:
			/* Its owner wakes the writer when it settles the page; it faults again. */
			if (!(s & PG_WAITED) &&
			    !atomic_compare_exchange_strong(&r->state[pg], &s, s | PG_WAITED))
				continue;
			return;
		default:
			/*
			 * Not present for the pager (dropped meanwhile, discarded, gone):
			 * lift whatever protection is left there, which wakes the writer;
			 * its access faults again as a missing page if it is one.
			 */
			e = fl_uffd_writeprotect(u, a, r->ps, 0);
			if (e < 0)
				fl_uffd_wake(u, a, r->ps);
			return;
		}
	}
}

/* UFFDIO_WRITEPROTECT, waiting out pending events (EAGAIN) for a bounded time. */
static int protect(struct fl_region *r, uint8_t *a, size_t len)
{
	int e = -EAGAIN;

	for (unsigned int i = 0; i < 4000 && e == -EAGAIN; i++) {
		struct timespec ts = { .tv_nsec = i < 10 ? 10000 : 500000 };

		e = fl_uffd_writeprotect(r->pager->uffd, a, len, FL_RESOLVE_WP);
		if (e == -EAGAIN) {
			if (i < 3)
				sched_yield();
			else
				nanosleep(&ts, NULL);
		}
	}
	return e;
}

/*
 * Copy pages [pg, pg+len bytes) of @r into wb_buf. Never through the
 * region's mapping (nor process_vm_readv, which faults the way a load
 * does): a page the program discarded meanwhile would fault there, and a
 * fault on a page we own (PG_BUSY) waits for us, for ever. A memfd's pages
 * come from the memfd (its page cache holds them, mapped or not); private
 * anonymous ones through /proc/self/mem, where a missing page is EIO
 * rather than a wait.
 */
static int copy_out(struct fl_region *r, size_t pg, size_t len)
{
	if (r->memfd >= 0)
		return fl__pread_full(r->memfd, r->wb_buf, len,
				      r->memfd_off + ((uint64_t)pg << r->shift));
	return fl__pread_full(r->mem_fd, r->wb_buf, len, (uint64_t)(uintptr_t)pg_addr(r, pg));
}

/*
 * Write back pages [pg, pg+n) of @r, which the caller owns (PG_BUSY) and
 * which are dirty: protect, clear, copy, write; counted in @st (sync's or
 * eviction's). On failure they are dirty again. Returns 0 or -errno.
 */
static int write_run(struct fl_region *r, size_t pg, size_t n, enum pg_stat st)
{
	size_t len = n << r->shift;
	uint8_t *a = pg_addr(r, pg);
	uint64_t off = r->store_off + ((uint64_t)pg << r->shift);
	int e;

	e = protect(r, a, len);
	if (e < 0) {
		fl__err("pager: write-protecting [%#llx, +%zu) for write-back: %s",
			(unsigned long long)((uint64_t)pg << r->shift), len, strerror(-e));
		fl__stat_add(r, ST_WB_ERRORS, n);
		return e;
	}
	dirty_mark(r, pg, n, false);
	pthread_mutex_lock(&r->wb_lock);
	if (!r->wb_buf) {
		void *m = mmap(NULL, PG_STAGING, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (m == MAP_FAILED) {
			e = -errno;
			goto fail;
		}
		r->wb_buf = m;
	}
	e = copy_out(r, pg, len);
	if (e < 0) {
		fl__err("pager: copying [%#llx, +%zu) out for write-back: %s%s",
			(unsigned long long)((uint64_t)pg << r->shift), len, strerror(-e),
			e == -EIO && r->memfd < 0 ? " (a page the program discarded or unmapped "
						    "meanwhile); the pages stay dirty" : "");
		goto fail;
	}
	e = fl_store_write(r->store, off, r->wb_buf, len);
	if (e < 0) {
		fl__err("pager: the store failed to write [%#llx, +%zu): %s; the pages stay dirty",
			(unsigned long long)off, len, strerror(-e));
		goto fail;
	}
	pthread_mutex_unlock(&r->wb_lock);
	fl__stat_add(r, st, n);
	fl__stat_add(r, ST_WB_CALLS, 1);
	return 0;
fail:
	pthread_mutex_unlock(&r->wb_lock);
	dirty_mark(r, pg, n, true);
	fl__stat_add(r, ST_WB_ERRORS, n);
	return e;
}

int fl__dirty_flush(struct fl_region *r, size_t pg, size_t n, uint64_t *claimed,
		    size_t *ret_written)
{
	size_t cap = PG_STAGING >> r->shift, written = 0;
	int first = 0;

	if (ret_written)
		*ret_written = 0;
	if (!r->dirty)
		return 0;
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		int e;

		if (!fl__bit_test(claimed, i) || !dirty_test(r, pg + i)) {
			i++;
			continue;
		}
		while (j < n && j - i < cap && fl__bit_test(claimed, j) && dirty_test(r, pg + j))
			j++;
		e = write_run(r, pg + i, j - i, ST_EVICT_WB);
		if (e < 0) {
			for (size_t k = i; k < j; k++)
				claimed[k / 64] &= ~(1ull << (k % 64));
			if (!first)
				first = e;
		} else {
			written += j - i;
		}
		i = j;
	}
	if (ret_written)
		*ret_written = written;
	return first;
}

/* ---------------------------------------------------------------- public */

static int range_pages(const struct fl_region *r, uint64_t off, size_t len, const char *who,
		       size_t *ret_first, size_t *ret_end)
{
	if (!r->dirty)
		return fl__einval(who, "the region does not track dirty pages "
				  "(FL_REGION_TRACK_DIRTY)");
	if (off > r->len || len > r->len - off)
		return fl__einval(who, "[%llu, +%zu) runs past the region's %zu bytes",
				  (unsigned long long)off, len, r->len);
	*ret_first = off >> r->shift;
	*ret_end = (off + len + r->ps - 1) >> r->shift;
	return 0;
}

FL_API int fl_region_sync(struct fl_region *r, uint64_t off, size_t len)
{
	size_t first, end, cap;
	int e, ret = 0;

	if (!r)
		return fl__einval(__func__, "r is NULL");
	if (getpid() != r->pager->pid)
		return -ECHILD;
	e = range_pages(r, off, len, __func__, &first, &end);
	if (e < 0)
		return e;
	if (atomic_load(&r->gone) || atomic_load(&r->pager->dead))
		return -ENOENT;
	cap = PG_STAGING >> r->shift;
	atomic_fetch_add(&r->users, 1);
	for (size_t i = first; i < end;) {
		uint8_t s;
		size_t n;

		if (atomic_load(&r->removing)) {
			ret = ret ? ret : -ENOENT;
			break;
		}
		/* Skip clean words quickly. */
		if (i % 64 == 0 && !atomic_load_explicit(&r->dirty[i / 64], memory_order_acquire)) {
			i += 64;
			continue;
		}
		if (!dirty_test(r, i)) {
			i++;
			continue;
		}
		s = atomic_load(&r->state[i]);
		if ((s & PG_STATE) == PG_BUSY) {
			/* A write-protect fault, an eviction or another sync has it: after them. */
			fl__wait_page(r, i, PG_BUSY);
			continue;
		}
		if (!claim(r, i, &s)) {
			/*
			 * Lost a race: look again. A dirty page that is not present was
			 * discarded by the program: it is written once it is back.
			 */
			if ((s & PG_STATE) != PG_PRESENT && (s & PG_STATE) != PG_BUSY)
				i++;
			continue;
		}
		n = 1;
		while (i + n < end && n < cap && dirty_test(r, i + n)) {
			uint8_t t = atomic_load(&r->state[i + n]);

			if (!claim(r, i + n, &t))
				break;
			n++;
		}
		e = write_run(r, i, n, ST_SYNCED);
		settle(r, i, n);
		if (e < 0 && !ret)
			ret = e;
		i += n;
	}
	fl__region_put(r);
	return ret;
}

FL_API long fl_region_dirty(const struct fl_region *r, uint64_t off, size_t len,
			    uint64_t *bitmap)
{
	struct fl_region *w = (struct fl_region *)r;
	size_t first, end;
	long count = 0;
	int e;

	if (!r)
		return fl__einval(__func__, "r is NULL");
	e = range_pages(r, off, len, __func__, &first, &end);
	if (e < 0)
		return e;
	if (bitmap)
		memset(bitmap, 0, (end - first + 63) / 64 * sizeof(*bitmap));
	for (size_t i = first; i < end; i++) {
		if (!dirty_test(w, i))
			continue;
		count++;
		if (bitmap)
			bitmap[(i - first) / 64] |= 1ull << ((i - first) % 64);
	}
	return count;
}
