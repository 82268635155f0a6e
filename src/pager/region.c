/* SPDX-License-Identifier: MIT */
/* Regions: adding, removing, looking up without locks, populating, statistics, events. */
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

#define HUGE_2M (2u << 20)

/* --------------------------------------------------------------- grace */

unsigned int fl__grace_enter(struct pg_grace *g)
{
	unsigned int e = atomic_load(&g->epoch) & 1;

	atomic_fetch_add(&g->active[e], 1);
	return e;
}

void fl__grace_exit(struct pg_grace *g, unsigned int e)
{
	atomic_fetch_sub_explicit(&g->active[e], 1, memory_order_release);
}

/*
 * Every reader that could still see what was unpublished before this call
 * has left when it returns. Two flips: a reader that read the epoch just
 * before the first flip counts itself in the slot the second wait drains.
 */
void fl__grace_wait(struct pg_grace *g)
{
	for (int i = 0; i < 2; i++) {
		unsigned int e = atomic_fetch_add(&g->epoch, 1) & 1;

		for (unsigned int spin = 0; atomic_load(&g->active[e]); spin++)
			if (spin > 64)
				sched_yield();
	}
}

/* --------------------------------------------------------------- lookup */

struct fl_region *fl__table_find(struct pg_table *t, size_t *hint, uintptr_t addr,
				 uintptr_t *ret_start)
{
	size_t h = *hint, lo = 0, hi = t->n;

	if (h < t->n && addr >= t->e[h].start && addr < t->e[h].end) {
		*ret_start = t->e[h].start;
		return t->e[h].r;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (addr < t->e[mid].start) {
			hi = mid;
		} else if (addr >= t->e[mid].end) {
			lo = mid + 1;
		} else {
			*hint = mid;
			*ret_start = t->e[mid].start;
			return t->e[mid].r;
		}
	}
	return NULL;
}

/* The region holding @addr, with a use counted (fl__region_put), or NULL. */
struct fl_region *fl__region_get(struct fl_pager *p, uintptr_t addr, uintptr_t *ret_start)
{
	unsigned int e = fl__grace_enter(&p->grace);
	struct pg_table *t = atomic_load(&p->table);
	size_t h = atomic_load_explicit(&p->hint, memory_order_relaxed), h0 = h;
	struct fl_region *r = fl__table_find(t, &h, addr, ret_start);

	if (r) {
		atomic_fetch_add(&r->users, 1);
		if (h != h0)
			atomic_store_explicit(&p->hint, h, memory_order_relaxed);
	}
	fl__grace_exit(&p->grace, e);
	return r;
}

/* @r if it is still published with @id (deferred work outliving its region), counted. */
struct fl_region *fl__region_get_by_id(struct fl_pager *p, struct fl_region *r, uint64_t id)
{
	unsigned int e = fl__grace_enter(&p->grace);
	struct pg_table *t = atomic_load(&p->table);
	struct fl_region *found = NULL;

	for (size_t i = 0; i < t->n; i++) {
		if (t->e[i].r == r && r->id == id) {
			found = r;
			atomic_fetch_add(&r->users, 1);
			break;
		}
	}
	fl__grace_exit(&p->grace, e);
	return found;
}

void fl__region_put(struct fl_region *r)
{
	atomic_fetch_sub_explicit(&r->users, 1, memory_order_release);
}

static int cmp_entry(const void *a, const void *b)
{
	const struct pg_entry *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * Publish the table with @add (may be NULL) and without @del (may be NULL),
 * every entry computed from its region's current base; free the old one
 * once no lookup can still use it. Caller holds p->lock.
 */
int fl__table_publish(struct fl_pager *p, struct fl_region *add, struct fl_region *del)
{
	struct pg_table *old = atomic_load(&p->table), *t;
	size_t n = 0;

	t = malloc(sizeof(*t) + (old->n + 1) * sizeof(t->e[0]));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < old->n; i++)
		if (old->e[i].r != del)
			t->e[n++].r = old->e[i].r;
	if (add)
		t->e[n++].r = add;
	for (size_t i = 0; i < n; i++) {
		t->e[i].start = atomic_load(&t->e[i].r->base);
		t->e[i].end = t->e[i].start + t->e[i].r->len;
	}
	t->n = n;
	qsort(t->e, n, sizeof(t->e[0]), cmp_entry);
	atomic_store(&p->table, t);
	fl__grace_wait(&p->grace);
	if (p->mode == FL_PAGER_SIGBUS)
		fl__sigbus_sync();
	free(old);
	return 0;
}

/* --------------------------------------------------------------- events */

/* Pages of @r wholly inside [start, end): first and end page indexes; false if none. */
static bool pages_in(struct fl_region *r, uintptr_t base, uintptr_t start, uintptr_t end,
		     size_t *ret_first, size_t *ret_end)
{
	uintptr_t lo = start > base ? start : base;
	uintptr_t hi = end < base + r->len ? end : base + r->len;
	size_t first, last;

	if (lo >= hi)
		return false;
	first = (lo - base + r->ps - 1) >> r->shift;
	last = (hi - base) >> r->shift;
	if (first >= last)
		return false;
	*ret_first = first;
	*ret_end = last;
	return true;
}

/*
 * REMOVE (MADV_DONTNEED, MADV_REMOVE): the program discarded these pages;
 * later faults there get zeros, never store data. Pages in flight keep
 * their resolver but install zeros if they are retried.
 */
/* Page @pg of a shared memory region that a budget evicted and that is not back yet. */
static bool evicted_shared(struct fl_region *r, size_t pg)
{
	return r->mem != FL_MEM_ANON && r->evict_at &&
	       atomic_load_explicit(&r->evict_at[pg], memory_order_relaxed);
}

void fl__region_discard(struct fl_pager *p, uintptr_t start, uintptr_t end)
{
	struct pg_table *t;

	pthread_mutex_lock(&p->lock);
	t = atomic_load(&p->table);
	for (size_t i = 0; i < t->n; i++) {
		struct fl_region *r = t->e[i].r;
		size_t first, last;

		if (!pages_in(r, t->e[i].start, start, end, &first, &last))
			continue;
		fl__region_wp_tell(r, first, last - first, FL__WP_DISCARD);
		if (r->track_dirty)
			fl__dirty_discarded(r, first, last - first);
		for (size_t pg = first; pg < last; pg++) {
			uint8_t s = atomic_load(&r->state[pg]), to;
			size_t out = 0, hot = 0;

			do {
				switch (s & PG_STATE) {
				case PG_GONE:
					to = s;
					break;
				case PG_ABSENT:
				case PG_BUSY:
					/*
					 * Shared memory whose page a budget evicted (absent, or
					 * being brought back): the store holds its data, and a
					 * discard cannot be told MADV_DONTNEED (which keeps shared
					 * memory's data) from MADV_REMOVE: it stays the store's,
					 * never zeros by accident.
					 */
					if (evicted_shared(r, pg) && !(s & PG_ZERO)) {
						to = s;
						break;
					}
					to = (s & PG_STATE) == PG_BUSY ? (uint8_t)(s | PG_ZERO)
								       : PG_ABSENT | PG_ZERO;
					break;
				default:
					to = PG_ABSENT | PG_ZERO;
					break;
				}
			} while (!atomic_compare_exchange_weak(&r->state[pg], &s, to));
			if ((s & PG_RES) && !(to & PG_RES)) {
				out++;
				hot += (s & PG_HOT) != 0;
			}
			if (out)
				fl__budget_out(r, out, hot);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

/* Remember [start, end) as a moved-away piece (the reader of events only). */
static void orphan_add(struct fl_pager *p, uintptr_t start, uintptr_t end, size_t ps)
{
	pthread_mutex_lock(&p->orphan_lock);
	if (p->norphans == p->cap_orphans) {
		size_t cap = p->cap_orphans ? p->cap_orphans * 2 : 8;
		struct pg_orphan *n = realloc(p->orphans, cap * sizeof(*n));

		if (!n) {
			pthread_mutex_unlock(&p->orphan_lock);
			fl__err("pager: out of memory remembering the moved piece %#lx-%#lx; "
				"faults there stay blocked", (unsigned long)start, (unsigned long)end);
			return;
		}
		p->orphans = n;
		p->cap_orphans = cap;
	}
	p->orphans[p->norphans++] = (struct pg_orphan){ start, end, ps };
	pthread_mutex_unlock(&p->orphan_lock);
}

/* The pieces inside an unmapped range are gone; one moved again is followed. */
static void orphans_event(struct fl_pager *p, uintptr_t from, uintptr_t end, uintptr_t to,
			  bool moved)
{
	size_t k = 0, n;

	pthread_mutex_lock(&p->orphan_lock);
	n = p->norphans;
	for (size_t i = 0; i < n; i++) {
		struct pg_orphan o = p->orphans[i];
		uintptr_t lo = o.start > from ? o.start : from, hi = o.end < end ? o.end : end;

		if (lo < hi && moved) {
			pthread_mutex_unlock(&p->orphan_lock);
			orphan_add(p, to + (lo - from), to + (hi - from), o.ps);
			pthread_mutex_lock(&p->orphan_lock);
		}
		if (!(o.start >= from && o.end <= end))
			p->orphans[k++] = p->orphans[i];
	}
	/* Entries added above went after n: keep them. */
	for (size_t i = n; i < p->norphans; i++)
		p->orphans[k++] = p->orphans[i];
	p->norphans = k;
	pthread_mutex_unlock(&p->orphan_lock);
}

bool fl__orphan_fault(struct fl_pager *p, uintptr_t addr)
{
	size_t ps = 0;
	uint8_t *a;
	int e;

	pthread_mutex_lock(&p->orphan_lock);
	for (size_t i = 0; i < p->norphans && !ps; i++)
		if (addr >= p->orphans[i].start && addr < p->orphans[i].end)
			ps = p->orphans[i].ps;
	pthread_mutex_unlock(&p->orphan_lock);
	if (!ps)
		return false;
	a = (uint8_t *)(addr & ~(uintptr_t)(ps - 1));
	e = p->feats & FL_FEAT_POISON ? fl_uffd_poison(p->uffd, a, ps, 0, NULL) : -EOPNOTSUPP;
	if (!e || e == -ESRCH)
		return true;
	if (e != -EEXIST && e != -ENOENT && e != -EAGAIN) {
		/* Our own memory: an inaccessible page still fails loudly (SIGSEGV). */
		if (p->own_memory && mprotect(a, ps, PROT_NONE) == 0)
			fl__err("pager: cannot poison %#lx in a piece moved away by mremap (%s); "
				"made it inaccessible", (unsigned long)a, strerror(-e));
		else
			fl__err("pager: cannot poison %#lx in a piece moved away by mremap (%s); "
				"its fault stays blocked", (unsigned long)a, strerror(-e));
		if (!p->own_memory)
			return true;
	}
	/* There after all, gone, or an event first: the thread faults again (or not). */
	fl_uffd_wake(p->uffd, a, ps);
	return true;
}

void fl__orphan_wp_fault(struct fl_pager *p, uintptr_t addr)
{
	size_t ps = fl__page_size();
	uint8_t *a;

	pthread_mutex_lock(&p->orphan_lock);
	for (size_t i = 0; i < p->norphans; i++)
		if (addr >= p->orphans[i].start && addr < p->orphans[i].end) {
			ps = p->orphans[i].ps;
			break;
		}
	pthread_mutex_unlock(&p->orphan_lock);
	a = (uint8_t *)(addr & ~(uintptr_t)(ps - 1));
	/* Unprotecting wakes the writer; failing that, it faults again (or not). */
	if (fl_uffd_writeprotect(p->uffd, a, ps, 0) < 0)
		fl_uffd_wake(p->uffd, a, ps);
}

/* Pages [first, last) of @r are unmapped or moved away: no longer resident. */
static void states_gone(struct fl_region *r, size_t first, size_t last)
{
	size_t out = 0, hot = 0;

	for (size_t pg = first; pg < last; pg++) {
		uint8_t s = atomic_exchange(&r->state[pg], PG_GONE);

		if (s & PG_RES) {
			out++;
			hot += (s & PG_HOT) != 0;
		}
	}
	if (out)
		fl__budget_out(r, out, hot);
}

/* UNMAP: regions wholly inside are gone; pages of others inside the range too. */
void fl__region_unmap(struct fl_pager *p, uintptr_t start, uintptr_t end)
{
	struct pg_table *t;
	bool again = true;

	orphans_event(p, start, end, 0, false);
	pthread_mutex_lock(&p->lock);
	while (again) {
		again = false;
		t = atomic_load(&p->table);
		for (size_t i = 0; i < t->n; i++) {
			struct fl_region *r = t->e[i].r;
			size_t first, last;

			if (t->e[i].start >= start && t->e[i].end <= end) {
				fl__region_wp_tell(r, 0, r->npages, FL__WP_GONE);
				atomic_store(&r->gone, true);
				if (fl__table_publish(p, NULL, r) == 0) {
					again = true;
					break;
				}
			}
			if (!pages_in(r, t->e[i].start, start, end, &first, &last))
				continue;
			fl__region_wp_tell(r, first, last - first, FL__WP_GONE);
			states_gone(r, first, last);
			fl__wake_waiters(r);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

/*
 * REMAP (mremap): a region that moved as a whole (alone, or inside a larger
 * range) follows. A piece moved away alone is lost to its region: its
 * pages there are gone, and at the new address its absent pages are
 * poisoned when touched (an orphan), so nothing blocks there for good.
 */
void fl__region_remap(struct fl_pager *p, uintptr_t from, uintptr_t to, uint64_t len)
{
	uintptr_t end = from + len;
	struct pg_table *t;
	bool moved = false;

	/* Moved-away pieces moved again follow (before the new ones are added below). */
	orphans_event(p, from, end, to, true);
	pthread_mutex_lock(&p->lock);
	t = atomic_load(&p->table);
	for (size_t i = 0; i < t->n; i++) {
		struct fl_region *r = t->e[i].r;
		uintptr_t start = t->e[i].start, lo, hi;
		size_t first, last;

		if (start >= from && t->e[i].end <= end) {
			atomic_store(&r->base, to + (start - from));
			moved = true;
			continue;
		}
		if (!pages_in(r, start, from, end, &first, &last))
			continue;
		/* An on_event callback may follow it (the monitor does); else say so. */
		fl__log(p->on_event ? FL_LOG_DEBUG : FL_LOG_ERROR,
			"pager: part of a region was moved by mremap (%#lx -> %#lx); the pager "
			"follows whole regions only: absent pages there get SIGBUS",
			(unsigned long)from, (unsigned long)to);
		fl__region_wp_tell(r, first, last - first, FL__WP_GONE);
		states_gone(r, first, last);
		fl__wake_waiters(r);
		lo = start + (first << r->shift);
		hi = start + (last << r->shift);
		orphan_add(p, to + (lo - from), to + (hi - from), r->ps);
	}
	if (moved && fl__table_publish(p, NULL, NULL) < 0)
		fl__err("pager: out of memory following a region to %#lx", (unsigned long)to);
	pthread_mutex_unlock(&p->lock);
	/*
	 * Threads whose faults cannot be served where they wait fault again:
	 * one that touched the new place before this event was read queued
	 * its fault first (a read returns faults before events), left as
	 * outside every region; one that touched the old place waits on an
	 * address that the install, done at the new one, never wakes.
	 */
	fl_uffd_wake(p->uffd, (void *)to, len);
	fl_uffd_wake(p->uffd, (void *)from, len);
}

/* The served process exited: nothing can be installed any more; stop everything cleanly. */
void fl__pager_mark_dead(struct fl_pager *p)
{
	struct pg_table *t;
	uint64_t one = 1;

	if (atomic_exchange(&p->dead, true))
		return;
	fl__info("pager: the process owning the memory exited; the pager stops serving");
	pthread_mutex_lock(&p->lock);
	t = atomic_load(&p->table);
	for (size_t i = 0; i < t->n; i++) {
		atomic_store(&t->e[i].r->gone, true);
		fl__wake_waiters(t->e[i].r);
	}
	pthread_mutex_unlock(&p->lock);
	if (p->stop_efd >= 0 && write(p->stop_efd, &one, sizeof(one)) < 0)
		fl__debug("pager: waking handler threads: %s", strerror(errno));
	atomic_fetch_add(&p->run_seq, 1);
	fl__wait_seq_wake(&p->run_seq);
}

/* -------------------------------------------------------------- adding */

static bool pow2(size_t v)
{
	return v && !(v & (v - 1));
}

/* Check the options against each other, the store and the kernel; pick the install method. */
static int settle_opts(struct fl_pager *p, struct fl_region_opts *o, struct fl_region *r)
{
	uint64_t f = p->feats, ssize;
	uint32_t caps;
	bool minor = false, have_memfd;
	size_t sys = fl__page_size();

	if ((unsigned int)o->mem >= FL_MEM_TYPE_COUNT || !o->store || !o->len)
		return fl__einval("fl_region_add", "%s", !o->store ? "no store" : !o->len ? "len is 0" :
				  "unknown memory type");
	if ((unsigned int)o->install > FL_INSTALL_CONTINUE ||
	    (unsigned int)o->prefetch > FL_PREFETCH_ADAPTIVE ||
	    (unsigned int)o->on_error > FL_ON_ERROR_BLOCK ||
	    (o->flags & ~(uint32_t)(FL_REGION_KEEP_ON_REMOVE | FL_REGION_KEEP_REGISTERED |
				    FL_REGION_WS_RECORD | FL_REGION_TRACK_DIRTY)))
		return fl__einval("fl_region_add", "unknown install method, prefetch policy, on_error policy "
				  "or flags");
	if (!o->page_size)
		o->page_size = o->mem == FL_MEM_HUGETLB ? HUGE_2M : PG_MIN_PAGE;
	if (!pow2(o->page_size) || o->page_size < PG_MIN_PAGE || o->page_size < sys)
		return fl__einval("fl_region_add", "page_size %zu is not a power of two of at least %zu",
				  o->page_size, sys > PG_MIN_PAGE ? sys : (size_t)PG_MIN_PAGE);
	if (o->page_size > PG_STAGING)
		return -EOPNOTSUPP;
	/* The default huge page size of x86-64 and arm64; hugetlbfs refuses anything unaligned. */
	if (o->mem == FL_MEM_HUGETLB && o->page_size % HUGE_2M)
		return fl__einval("fl_region_add", "hugetlb page_size %zu is not a multiple of 2 MiB",
				  o->page_size);
	if (o->len % o->page_size || (uintptr_t)o->addr % o->page_size)
		return fl__einval("fl_region_add", "addr %p or len %zu is not a multiple of the page size %zu",
				  o->addr, o->len, o->page_size);
	ssize = fl_store_size(o->store);
	if (o->store_off % o->page_size)
		return fl__einval("fl_region_add", "store_off %llu is not a multiple of the page size %zu",
				  (unsigned long long)o->store_off, o->page_size);
	if (o->store_off > ssize || o->len > ssize - o->store_off)
		return fl__einval("fl_region_add", "[store_off %llu, +len %zu) runs past the store's %llu bytes",
				  (unsigned long long)o->store_off, o->len,
				  (unsigned long long)ssize);
	if ((unsigned int)o->vol > FL_VOLATILE_SIGBUS || (o->vol && !o->budget))
		return fl__einval("fl_region_add", "%s", o->vol && !o->budget
				  ? "a volatile region needs a budget" : "unknown volatile policy");
	if (o->budget && o->ws_replay)
		return fl__einval("fl_region_add", "a working-set replay cannot run within a budget");
	if ((o->flags & FL_REGION_TRACK_DIRTY) &&
	    ((fl_store_caps(o->store) & FL_STORE_READONLY) || !p->own_memory))
		return fl__einval("fl_region_add", "FL_REGION_TRACK_DIRTY %s",
				  !p->own_memory ? "needs memory of this process (it copies dirty "
						   "pages out of it)"
						 : "needs a store that can be written");
	if (!o->addr && !p->own_uffd)	/* we cannot map memory in another process */
		return fl__einval("fl_region_add", "no addr, and the pager serves another process's "
				  "userfaultfd (it cannot map memory there)");
	/* A default never contradicts the other bound the caller did set. */
	if (!o->prefetch_max)
		o->prefetch_max = o->prefetch_min > (4u << 20) ? o->prefetch_min : 4u << 20;
	if (!o->prefetch_min)
		o->prefetch_min = o->prefetch_max < (64u << 10) ? o->prefetch_max : 64u << 10;
	if (o->prefetch_min > o->prefetch_max)
		return fl__einval("fl_region_add", "prefetch_min %zu is above prefetch_max %zu",
				  (size_t)o->prefetch_min, (size_t)o->prefetch_max);
	if (o->mem == FL_MEM_SHMEM) {
		if (!(f & FL_FEAT_MISSING_SHMEM))
			return -EOPNOTSUPP;
		minor = f & FL_FEAT_MINOR_SHMEM;
	} else if (o->mem == FL_MEM_HUGETLB) {
		if (!(f & FL_FEAT_MISSING_HUGETLBFS))
			return -EOPNOTSUPP;
		minor = f & FL_FEAT_MINOR_HUGETLBFS;
	}
	have_memfd = !o->addr || o->memfd > 0;
	caps = fl_store_caps(o->store);
	switch (o->install) {
	case FL_INSTALL_AUTO:
		/*
		 * A budget drops pages: the store must keep them (read, never
		 * handed over; see faultline(7), "Budgets").
		 */
		if (o->mem == FL_MEM_ANON && (caps & FL_STORE_MOVE) && (f & FL_FEAT_MOVE) &&
		    p->own_uffd && !o->budget)
			r->method = PG_MOVE;
		else if (o->mem != FL_MEM_ANON && minor && have_memfd)
			r->method = PG_CONTINUE;
		else
			r->method = PG_COPY;
		/* Read into staging, then move whole chunks in (resolve.c). */
		r->stage_move = o->mem == FL_MEM_ANON && (f & FL_FEAT_MOVE) && p->own_uffd;
		break;
	case FL_INSTALL_COPY:
		r->method = PG_COPY;
		break;
	case FL_INSTALL_MOVE:
		/* The kernel moves pages only within one process, between private anonymous ones. */
		if (o->mem != FL_MEM_ANON || !(caps & FL_STORE_MOVE) || !(f & FL_FEAT_MOVE) ||
		    !p->own_uffd)
			return -EOPNOTSUPP;
		if (o->budget)
			return fl__einval("fl_region_add", "FL_INSTALL_MOVE takes pages from the "
					  "store, which a budget's eviction would lose");
		r->method = PG_MOVE;
		break;
	case FL_INSTALL_CONTINUE:
		if (o->mem == FL_MEM_ANON || !minor || !have_memfd)
			return -EOPNOTSUPP;
		r->method = PG_CONTINUE;
		break;
	}
	return 0;
}

/* Map the region's memory ourselves: private anonymous, a memfd or a hugetlbfs memfd. */
static int map_region(struct fl_region *r)
{
	size_t align = r->ps, len = r->len;
	uint8_t *m, *a;
	int fd;

	if (r->mem == FL_MEM_ANON) {
		/* 2 MiB alignment lets whole transparent huge pages be moved in. */
		if (align < HUGE_2M && len >= HUGE_2M)
			align = HUGE_2M;
		m = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED)
			return -errno;
		a = (uint8_t *)(((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1));
		if (a > m)
			munmap(m, (size_t)(a - m));
		if (a + len < m + len + align)
			munmap(a + len, (size_t)(m + len + align - (a + len)));
		atomic_store(&r->base, (uintptr_t)a);
		/*
		 * With 2 MiB pages or MOVE, let the first fault stop at the PMD: the
		 * kernel then installs (or moves in) whole huge pages instead of
		 * splitting them into a page table allocated by the fault.
		 */
		if (r->ps >= HUGE_2M || r->method == PG_MOVE || r->stage_move)
			madvise(a, len, MADV_HUGEPAGE);
	} else {
		fd = memfd_create("faultline", MFD_CLOEXEC |
					       (r->mem == FL_MEM_HUGETLB ? MFD_HUGETLB : 0));
		if (fd < 0)
			return -errno;
		if (ftruncate(fd, (off_t)len) < 0) {
			int e = -errno;

			close(fd);
			return e;
		}
		m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			int e = -errno;

			close(fd);
			return e;
		}
		r->memfd = fd;
		r->own_memfd = true;
		r->memfd_off = 0;
		atomic_store(&r->base, (uintptr_t)m);
	}
	r->ours = true;
	/*
	 * A child after fork() would see this memory unregistered: zeros where
	 * the store has data (and, for shared memory, zeros written into our
	 * page cache). Better it does not get the mapping at all.
	 */
	madvise((void *)atomic_load(&r->base), len, MADV_DONTFORK);
	return 0;
}

static void free_region(struct fl_region *r)
{
	if (!r)
		return;
	if (r->alias)
		munmap(r->alias, r->len);
	if (r->ours && !atomic_load(&r->gone) && atomic_load(&r->base))
		munmap((void *)atomic_load(&r->base), r->len);
	if (r->own_memfd && r->memfd >= 0)
		close(r->memfd);
	if (r->state)
		munmap((void *)r->state, r->npages);
	fl__ws_free(r);
	if (r->evict_at)
		munmap((void *)r->evict_at, r->npages * sizeof(*r->evict_at));
	fl__dirty_free(r);
	free(r->shards);
	free(r);
}

static bool overlaps(struct fl_pager *p, uintptr_t start, size_t len)
{
	struct pg_table *t = atomic_load(&p->table);

	for (size_t i = 0; i < t->n; i++)
		if (start < t->e[i].end && t->e[i].start < start + len)
			return true;
	return false;
}

FL_API int fl_region_add(struct fl_pager *p, const struct fl_region_opts *opts,
			 struct fl_region **ret)
{
	struct fl_region_opts o = { .sz = sizeof(o) };
	struct fl_region *r;
	uint32_t mode, ioctls = 0;
	uintptr_t base;
	int e;

	if (!p || !opts || !ret)
		return fl__einval(__func__, "%s is NULL", !p ? "p" : !opts ? "opts" : "ret");
	if (getpid() != p->pid)
		return -ECHILD;
	e = fl__opts_copy(&o, sizeof(o), opts, "fl_region_add");
	if (e < 0)
		return e;
	if (atomic_load(&p->dead))
		return -ESRCH;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->pager = p;
	r->memfd = -1;
	e = settle_opts(p, &o, r);
	if (e < 0)
		goto fail;
	r->len = o.len;
	r->ps = o.page_size;
	r->shift = (unsigned int)__builtin_ctzll(o.page_size);
	r->npages = o.len >> r->shift;
	r->store = o.store;
	r->store_off = o.store_off;
	r->mem = o.mem;
	r->prefetch = o.prefetch;
	r->pf_min = o.prefetch_min >> r->shift ? o.prefetch_min >> r->shift : 1;
	r->pf_max = o.prefetch_max >> r->shift ? o.prefetch_max >> r->shift : 1;
	if (r->pf_max > PG_STAGING >> r->shift)
		r->pf_max = PG_STAGING >> r->shift;
	if (r->pf_min > r->pf_max)
		r->pf_min = r->pf_max;
	r->on_error = o.on_error;
	r->on_error_fn = o.on_error_fn;
	r->userdata = o.userdata;
	r->flags = o.flags;
	/*
	 * A budget evicts pages: those written since their install go back to
	 * a store that can take them first (dirty.c), unless the region is
	 * volatile.
	 */
	r->track_dirty = (o.flags & FL_REGION_TRACK_DIRTY) ||
			 (o.budget && o.vol == FL_VOLATILE_NONE &&
			  !(fl_store_caps(o.store) & FL_STORE_READONLY));
	r->on_wp = o.on_wp;
	atomic_init(&r->move_ok, r->method == PG_MOVE || r->stage_move);
	r->shards = aligned_alloc(64, PG_SHARDS * sizeof(struct pg_shard));
	r->state = mmap(NULL, r->npages, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!r->shards || r->state == MAP_FAILED) {
		r->state = NULL;
		e = -ENOMEM;
		goto fail;
	}
	memset(r->shards, 0, PG_SHARDS * sizeof(struct pg_shard));
	{
		struct pg_ws_opts wo = {
			.record = o.flags & FL_REGION_WS_RECORD,
			.replay = o.ws_replay,
			.loading_set = o.ws_loading_set,
			.batch = o.ws_batch,
		};

		e = fl__ws_setup(r, &wo);
		if (e < 0)
			goto fail;
	}
	e = fl__dirty_setup(r);
	if (e < 0)
		goto fail;
	if (o.addr) {
		atomic_store(&r->base, (uintptr_t)o.addr);
		if (o.memfd > 0) {
			r->memfd = o.memfd;
			r->memfd_off = o.memfd_off;
		}
	} else {
		e = map_region(r);
		if (e < 0) {
			fl__err("pager: mapping a %s region of %zu bytes: %s", fl_mem_type_name(r->mem),
				r->len, strerror(-e));
			goto fail;
		}
	}
	if (r->method == PG_CONTINUE) {
		/* Filled through this second mapping, which is not registered, then mapped by CONTINUE. */
		r->alias = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd,
				(off_t)r->memfd_off);
		if (r->alias == MAP_FAILED) {
			r->alias = NULL;
			e = -errno;
			goto fail;
		}
	}
	if (o.budget) {
		e = fl__budget_join(r, o.budget, o.vol);
		if (e < 0)
			goto fail;
	}
	base = atomic_load(&r->base);

	pthread_mutex_lock(&p->lock);
	if (overlaps(p, base, r->len)) {
		pthread_mutex_unlock(&p->lock);
		e = fl__einval(__func__, "[%#lx, +%zu) overlaps a region of this pager",
			       (unsigned long)base, r->len);
		goto fail;
	}
	mode = FL_REGISTER_MISSING | (r->method == PG_CONTINUE ? FL_REGISTER_MINOR : 0) |
	       fl__dirty_modes(r);
	e = fl_uffd_register(p->uffd, (void *)base, r->len, mode, &ioctls);
	if (e == -EINVAL && fl__dirty_modes(r)) {
		pthread_mutex_unlock(&p->lock);
		fl__err("pager: write-protect faults on %s memory: not on this kernel",
			fl_mem_type_name(r->mem));
		e = -EOPNOTSUPP;
		goto fail;
	}
	if (e == 0 && r->method == PG_MOVE && !(ioctls & FL_IOCTL_MOVE)) {
		if (o.install == FL_INSTALL_MOVE)
			e = -EOPNOTSUPP;
		r->method = PG_COPY;
		atomic_store(&r->move_ok, false);
	}
	if (e == 0 && !(ioctls & FL_IOCTL_MOVE)) {
		r->stage_move = false;
		atomic_store(&r->move_ok, false);
	}
	if (e == 0 && r->method != PG_CONTINUE && !(ioctls & FL_IOCTL_COPY))
		e = -EOPNOTSUPP;
	if (e < 0) {
		if (e != -EOPNOTSUPP || !ioctls)
			fl__err("pager: registering %#lx+%zu: %s", (unsigned long)base, r->len,
				strerror(-e));
		else
			fl_uffd_unregister(p->uffd, (void *)base, r->len);
		pthread_mutex_unlock(&p->lock);
		goto fail;
	}
	r->has_zeropage = (ioctls & FL_IOCTL_ZEROPAGE) && r->mem != FL_MEM_HUGETLB;
	r->has_poison = (ioctls & FL_IOCTL_POISON) && (p->feats & FL_FEAT_POISON);
	r->id = ++p->next_id;
	e = fl__table_publish(p, r, NULL);
	if (e == 0) {
		r->next = p->regions;
		if (p->regions)
			p->regions->prev = r;
		p->regions = r;
	}
	pthread_mutex_unlock(&p->lock);
	if (e < 0) {
		fl_uffd_unregister(p->uffd, (void *)base, r->len);
		goto fail;
	}
	/* A thread that faulted here before the region existed was not served: let it fault again. */
	fl_uffd_wake(p->uffd, (void *)base, r->len);
	e = fl__ws_start(r);
	if (e < 0)
		fl__warn("pager: cannot start the working-set replay (%s); faults bring the pages in",
			 strerror(-e));
	*ret = r;
	return 0;
fail:
	if (r->budget) {
		fl__budget_leave(r);
		fl__budget_settle(r);
	}
	free_region(r);
	return e;
}

/* ------------------------------------------------------------ removing */

/* Forget deferred work of @r left by stopped handler threads. Caller holds p->lock. */
static void drop_pending(struct fl_pager *p, struct fl_region *r)
{
	size_t k = 0;

	for (size_t i = 0; i < p->npending; i++) {
		if (p->pending[i].r != r || p->pending[i].id != r->id)
			p->pending[k++] = p->pending[i];
		else
			free(p->pending[i].kept);
	}
	p->npending = k;
}

/* Page @pg of @r is absent because its budget evicted it: its data is in the store. */
static bool evicted_absent(struct fl_region *r, size_t pg)
{
	return atomic_load_explicit(&r->evict_at[pg], memory_order_relaxed) &&
	       (atomic_load(&r->state[pg]) & (PG_STATE | PG_ZERO)) == PG_ABSENT;
}

/*
 * Evicted pages among [pg, pg+n) that the store failed to bring back
 * (@err): poisoned, never left to read as zeros (made inaccessible where
 * the kernel cannot poison).
 */
static void keep_failed(struct fl_region *r, size_t pg, size_t n, int err)
{
	struct fl_pager *p = r->pager;
	struct fl__poison_opts o = { .step = r->ps, .own_memory = p->own_memory };

	fl__err("pager: bringing back evicted pages [%#llx, +%zu) before removing a region "
		"kept on removal: %s; they are poisoned", (unsigned long long)((uint64_t)pg << r->shift),
		n << r->shift, strerror(-err));
	for (size_t i = pg; i < pg + n;) {
		size_t end = i + 1;
		uint64_t done = 0;
		int e;

		if (!evicted_absent(r, i)) {
			i++;
			continue;
		}
		while (end < pg + n && evicted_absent(r, end))
			end++;
		e = fl__uffd_poison_absent(p->uffd, atomic_load(&r->base) + ((uint64_t)i << r->shift),
					   (end - i) << r->shift, &o, &done);
		if (e < 0)
			fl__err("pager: poisoning them: %s", strerror(-e));
		i = end;
	}
}

/*
 * FL_REGION_KEEP_ON_REMOVE leaves absent pages to the kernel, which makes
 * them zeros: right for pages that never held data, wrong for those the
 * budget evicted. Before the region goes, it leaves the budget (no more
 * eviction) and brings those back from the store.
 */
static void keep_evicted(struct fl_region *r)
{
	fl__budget_leave(r);
	for (size_t pg = 0; pg < r->npages;) {
		size_t end = pg + 1;
		int e;

		if (!evicted_absent(r, pg)) {
			pg++;
			continue;
		}
		while (end < r->npages && evicted_absent(r, end))
			end++;
		e = fl_region_populate(r, (uint64_t)pg << r->shift, (end - pg) << r->shift);
		if (e < 0)
			keep_failed(r, pg, end - pg, e);
		pg = end;
	}
}

static bool keeps_evicted(struct fl_region *r)
{
	return r->budget && (r->flags & FL_REGION_KEEP_ON_REMOVE) && !atomic_load(&r->gone) &&
	       !atomic_load(&r->pager->dead);
}

/*
 * fl_pager_destroy(), before it stops the handler threads: the regions
 * kept on removal bring their evicted pages back while events are still
 * read (an unread one makes every install fail with EAGAIN).
 */
void fl__region_keep_all(struct fl_pager *p)
{
	struct fl_region **list;
	size_t n = 0;

	pthread_mutex_lock(&p->lock);
	for (struct fl_region *r = p->regions; r; r = r->next)
		n += keeps_evicted(r);
	if (!n) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	list = calloc(n, sizeof(*list));
	if (!list) {
		pthread_mutex_unlock(&p->lock);
		fl__warn("pager: no memory to bring evicted pages back before the handler threads "
			 "stop; each region tries at its removal");
		return;
	}
	n = 0;
	for (struct fl_region *r = p->regions; r; r = r->next) {
		if (!keeps_evicted(r))
			continue;
		atomic_fetch_add(&r->users, 1);
		list[n++] = r;
	}
	pthread_mutex_unlock(&p->lock);
	for (size_t k = 0; k < n; k++) {
		keep_evicted(list[k]);
		fl__region_put(list[k]);
	}
	free(list);
}

int fl__region_remove(struct fl_region *r)
{
	struct fl_pager *p = r->pager;
	uintptr_t base = atomic_load(&r->base);
	bool kept = keeps_evicted(r);
	int e;

	if (kept)
		keep_evicted(r);
	pthread_mutex_lock(&p->lock);
	e = fl__table_publish(p, NULL, r);
	if (e == 0) {
		drop_pending(p, r);
		if (r->prev)
			r->prev->next = r->next;
		else
			p->regions = r->next;
		if (r->next)
			r->next->prev = r->prev;
	}
	pthread_mutex_unlock(&p->lock);
	if (e < 0) {
		/* Still registered, and still charging the budget: back under eviction. */
		if (kept)
			fl__budget_rejoin(r);
		return e;
	}
	/* Nobody finds the region any more; release those who wait inside it. */
	atomic_store(&r->removing, true);
	atomic_fetch_add(&r->wait_seq, 1);
	fl__wait_seq_wake(&r->wait_seq);
	atomic_fetch_add(&p->run_seq, 1);
	fl__wait_seq_wake(&p->run_seq);
	/* The replay sees removing between installs. */
	fl__ws_stop(r);
	/* Eviction lets go of the region (it waits for a step under way). */
	if (r->budget)
		fl__budget_leave(r);
	for (unsigned int i = 0; atomic_load(&r->users); i++) {
		struct timespec ts = { .tv_nsec = 100000 };

		if (i < 100)
			sched_yield();
		else
			nanosleep(&ts, NULL);
	}
	if (!atomic_load(&r->gone) && !atomic_load(&p->dead)) {
		if (!(r->flags & FL_REGION_KEEP_ON_REMOVE))
			fl__resolve_poison_absent(r);
		/* Kept registered: faults queue for the next reader (a monitor's successor). */
		e = r->flags & FL_REGION_KEEP_REGISTERED ? 0
			: fl_uffd_unregister(p->uffd, (void *)base, r->len);
		if (e < 0 && e != -ENOENT && e != -ESRCH && e != -EINVAL)
			fl__warn("pager: unregistering %#lx+%zu: %s", (unsigned long)base, r->len,
				 strerror(-e));
		/*
		 * A fault racing the unregistration can be queued after the
		 * kernel's wake-up (per-VMA locks do not wait for the mmap lock),
		 * and nobody would serve it now: wake it into ordinary memory.
		 */
		if (!(r->flags & FL_REGION_KEEP_REGISTERED))
			fl_uffd_wake(p->uffd, (void *)base, r->len);
	}
	if (r->budget)
		fl__budget_settle(r);
	free_region(r);
	return 0;
}

FL_API int fl_region_remove(struct fl_region *r)
{
	if (!r)
		return fl__einval(__func__, "r is NULL");
	if (getpid() != r->pager->pid)
		return -ECHILD;
	return fl__region_remove(r);
}

void *fl__region_userdata(const struct fl_region *r)
{
	return r->userdata;
}

FL_API void *fl_region_addr(const struct fl_region *r)
{
	if (!r || getpid() != r->pager->pid)
		return NULL;
	return (void *)atomic_load(&((struct fl_region *)r)->base);
}

FL_API size_t fl_region_len(const struct fl_region *r)
{
	if (!r || getpid() != r->pager->pid)
		return 0;
	return r->len;
}

/* ----------------------------------------------------- live snapshots */

int fl__region_wp_attach(struct fl_region *r, fl__wp_fn fn, void *arg)
{
	struct fl_pager *p = r->pager;
	fl__wp_fn none = NULL;

	if (p->mode == FL_PAGER_SIGBUS)
		return -EOPNOTSUPP;
	/* The region's own write-protect faults (dirty tracking, on_wp) exclude a snapshot's. */
	if (r->track_dirty || r->on_wp)
		return -EBUSY;
	pthread_mutex_lock(&p->lock);
	if (atomic_load(&r->wp_fn)) {
		pthread_mutex_unlock(&p->lock);
		return -EBUSY;
	}
	r->wp_arg = arg;
	atomic_compare_exchange_strong(&r->wp_fn, &none, fn);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void fl__region_wp_installs(struct fl_region *r, bool on)
{
	atomic_store(&r->wp, on);
	/* Installs that read the old value have landed once this returns. */
	fl__grace_wait(&r->wp_grace);
}

void fl__region_wp_detach(struct fl_region *r)
{
	atomic_store(&r->wp_fn, NULL);
	fl__grace_wait(&r->wp_grace);
}

void fl__region_wp_tell(struct fl_region *r, size_t pg, size_t n, int why)
{
	unsigned int g = fl__grace_enter(&r->wp_grace);
	fl__wp_fn fn = atomic_load(&r->wp_fn);

	if (fn)
		fn(r->wp_arg, r, pg, n, why);
	fl__grace_exit(&r->wp_grace, g);
}

void fl__region_info(struct fl_region *r, struct fl__region_info *ret)
{
	*ret = (struct fl__region_info){
		.pager = r->pager,
		.uffd = r->pager->uffd,
		.base = atomic_load(&r->base),
		.len = r->len,
		.ps = r->ps,
		.store = r->store,
		.store_off = r->store_off,
		.mem = r->mem,
		.modes = FL_REGISTER_MISSING | (r->method == PG_CONTINUE ? FL_REGISTER_MINOR : 0),
	};
}

int fl__region_page(struct fl_region *r, size_t pg)
{
	uint8_t s = atomic_load(&r->state[pg]);

	switch (s & PG_STATE) {
	case PG_PRESENT:
		return FL__PAGE_PRESENT;
	case PG_POISONED:
		return FL__PAGE_POISONED;
	case PG_GONE:
		return FL__PAGE_GONE;
	default:
		return s & PG_ZERO ? FL__PAGE_ZERO : FL__PAGE_STORE;
	}
}

bool fl__region_page_busy(struct fl_region *r, size_t pg)
{
	return (atomic_load(&r->state[pg]) & PG_STATE) == PG_BUSY;
}

/* ------------------------------------------------------------ populate */

FL_API int fl_region_populate(struct fl_region *r, uint64_t off, size_t len)
{
	struct pg_ctx c;
	size_t first, end;
	int e;

	if (!r)
		return fl__einval(__func__, "r is NULL");
	if (getpid() != r->pager->pid)
		return -ECHILD;
	if (off > r->len || len > r->len - off)
		return fl__einval(__func__, "[%llu, +%zu) runs past the region's %zu bytes",
				  (unsigned long long)off, len, r->len);
	if (!len)
		return 0;
	if (atomic_load(&r->gone) || atomic_load(&r->pager->dead))
		return -ENOENT;
	first = off >> r->shift;
	end = (off + len + r->ps - 1) >> r->shift;
	c = (struct pg_ctx){ .p = r->pager, .slot = -1, .populate = true };
	atomic_fetch_add(&r->users, 1);
	e = fl__resolve_populate(&c, r, first, end - first);
	fl__region_put(r);
	fl__ctx_release(&c);
	return e;
}

/* ---------------------------------------------------------- statistics */

FL_API int fl_region_stats(const struct fl_region *r, struct fl_region_stats *out)
{
	struct fl_region_stats st, *ret = &st;
	uint64_t v[ST_COUNT] = { 0 };

	if (!r || !out)
		return fl__einval(__func__, "%s is NULL", !r ? "r" : "ret");
	if (getpid() != r->pager->pid)
		return -ECHILD;
	for (int s = 0; s < PG_SHARDS; s++)
		for (int i = 0; i < ST_COUNT; i++)
			v[i] += atomic_load_explicit(&r->shards[s].v[i], memory_order_relaxed);
	*ret = (struct fl_region_stats){
		.faults = v[ST_FAULTS],
		.pages_copy = v[ST_COPY],
		.pages_zero = v[ST_ZERO],
		.pages_move = v[ST_MOVE],
		.pages_continue = v[ST_CONTINUE],
		.pages_poison = v[ST_POISON],
		.pages_prefetched = v[ST_PREFETCHED],
		.prefetch_used = v[ST_PF_USED],
		.prefetch_wasted = v[ST_PF_WASTED],
		.store_reads = v[ST_READS],
		.store_bytes = v[ST_BYTES],
		.errors = v[ST_ERRORS],
	};
	for (int i = 0; i < FL_LAT_BUCKETS; i++)
		ret->lat_hist[i] = v[ST_LAT + i];
	ret->ws_prefetched = v[ST_WS_PREFETCHED];
	ret->ws_skipped = v[ST_WS_SKIPPED];
	ret->ws_errors = v[ST_WS_ERRORS];
	ret->wp_faults = v[ST_WP_FAULTS];
	ret->synced = v[ST_SYNCED];
	ret->writeback_calls = v[ST_WB_CALLS];
	ret->writeback_errors = v[ST_WB_ERRORS];
	fl__ws_stats(r, &ret->ws_recorded, &ret->ws_done_ns);
	ret->resident = v[ST_RES_IN] - v[ST_RES_OUT];
	ret->evicted = v[ST_EVICTED];
	ret->written_back = v[ST_EVICT_WB];
	ret->refaults = v[ST_REFAULTS];
	return fl__stats_out(out, ret, sizeof(*ret), __func__);
}

/* ---------------------------------------------------------------- advice */

FL_API int fl_region_advise(struct fl_region *r, uint64_t off, size_t len, int advice)
{
	if (!r)
		return fl__einval(__func__, "r is NULL");
	if (getpid() != r->pager->pid)
		return -ECHILD;
	if (off % r->ps || len % r->ps || off > r->len || len > r->len - off)
		return fl__einval(__func__, "[%llu, +%zu) is not whole pages of %zu bytes inside the "
				  "region's %zu", (unsigned long long)off, len, r->ps, r->len);
	switch (advice) {
	case FL_ADVISE_NORMAL:
		return 0;
	case FL_ADVISE_WILLNEED:
		if (r->budget && r->vol == FL_VOLATILE_SIGBUS) {
			int e = fl__budget_advise(r, off >> r->shift, len >> r->shift, advice);

			if (e < 0)
				return e;
		}
		return len ? fl_region_populate(r, off, len) : 0;
	case FL_ADVISE_DONTNEED:
		if (!r->budget)
			return fl__einval(__func__, "FL_ADVISE_DONTNEED on a region without a budget");
		return fl__budget_advise(r, off >> r->shift, len >> r->shift, advice);
	default:
		return fl__einval(__func__, "unknown advice %d", advice);
	}
}
