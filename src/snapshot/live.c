/* SPDX-License-Identifier: MIT */
/* Live snapshots: write-protect at one instant, save pages in the background, copy before write. */

/*
 * How it fits together:
 *
 * - Every page of a range has a state byte: IDLE (not part of the snapshot
 *   in progress), pending with its source (MEM: the memory; STORE: a pager
 *   region's store; ZERO; ABSENT: unmapped), SAVING (one thread is saving
 *   it) and DONE (put or marked). Whoever moves a page from pending to
 *   SAVING saves it; the others wait for DONE. So each page is put once.
 * - The instant: the ranges are write-protected under the write side of
 *   `instant`; write-protect faults are handled under its read side. A
 *   thread that writes a page during the instant therefore stays blocked
 *   until every range is protected, and no write that completed before the
 *   end of the instant can depend on one that waited: the saved image is
 *   the memory as it was when the last range was protected. The page states
 *   are set in the same critical section.
 * - The writer thread (fl-snap-writer) saves pending pages in runs. A write
 *   to a page still pending faults; the fault thread (fl-snap) saves that
 *   page first, then unprotects it, which lets the write go on.
 * - Memory is read with process_vm_readv(), never dereferenced: a range the
 *   program unmaps meanwhile gives EFAULT instead of killing the process.
 *   After each copy the page must still be write-protected (its
 *   /proc/self/pagemap entry) and not discarded meanwhile: a private
 *   anonymous page the program zapped with MADV_DONTNEED loses its
 *   protection, and its copy may be torn, so it is recorded as discarded.
 * - Pager regions: the pager keeps the region registered for missing pages;
 *   write-protect mode is added on the same userfaultfd, and the pager hands
 *   the faults (and its discard and unmap events) to us through a hook
 *   (fl__region_wp_attach), never blocking its handler threads: faults are
 *   queued to the fl-snap thread. While a snapshot runs (or tracking is on)
 *   the pager installs pages write-protected. Pages the pager has not
 *   brought in at the instant are read from its store.
 * - Tracking (FL_SNAPSHOT_LIVE_TRACK): pages stay protected after they are
 *   saved; the first write after the instant faults and marks the page
 *   dirty; discards and unmaps mark pages dirty too. An incremental
 *   snapshot saves the dirty pages only. It uses synchronous write-protect
 *   faults: UFFD_FEATURE_WP_ASYNC belongs to a whole userfaultfd, a range
 *   has one userfaultfd, and unregistering drops the protection, so moving
 *   a range between an asynchronous one (tracking) and a synchronous one
 *   (copy before write) leaves a moment where writes are neither blocked
 *   nor recorded (fl_snapshot_live_create(3), "Incremental snapshots").
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "pager/supply.h"
#include "snapshot/live-int.h"
#include "snapshot/snap-int.h"
#include "util.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22	/* 5.14 */
#endif

/*
 * The writer thread saves up to this much at once, in runs that do not
 * cross a multiple of it: unprotecting a whole aligned 2 MiB leaves a
 * transparent huge page whole, where part of it would split it.
 */
#define LV_RUN (2u << 20)
#define LV_EVENTS 64
#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_UFFD_WP (1ull << 57)

/* Page states. */
enum {
	LV_IDLE = 0,
	LV_MEM = 1,
	LV_STORE = 2,
	LV_ZERO = 3,
	LV_ABSENT = 4,
	LV_SAVING = 5,
	LV_DONE = 6,
};

/* Page flags. */
enum {
	LF_DIRTY = 1u << 0,	/* written, discarded or unmapped since the last instant */
	LF_DISCARDED = 1u << 1,	/* discarded since the last instant */
	LF_GONE = 1u << 2,	/* unmapped (or moved away): never read again */
	LF_SPILLED = 1u << 3,	/* a write-protect fault the queue had no room for */
};

/* Write-protect faults outside every range kept without the queue's memory. */
#define LV_SPILL 64

enum lv_stat {
	SS_PAGES,
	SS_WRITTEN,
	SS_STORE,
	SS_ZERO,
	SS_DISCARDED,
	SS_UNMAPPED,
	SS_COUNT,
};

struct fl_snapshot_live;

struct lv_range {
	struct fl_snapshot_live *s;
	uint32_t index;
	_Atomic uintptr_t base;		/* plain memory: follows mremap of the whole range */
	size_t len, ps, npages;
	unsigned int shift;
	enum fl_mem_type mem;
	uint32_t flags;
	struct fl_region *region;	/* or NULL: plain memory */
	struct fl_pager *pager;		/* the region's */
	struct fl_uffd *u;		/* where it is registered for write-protect faults */
	uint32_t modes;			/* pager region: its own registration modes */
	_Atomic uint8_t *st;
	_Atomic uint8_t *pf;
	_Atomic size_t ngone;		/* pages with LF_GONE */
	bool registered, attached;
};

/* A write-protect fault to handle: page @pg of @r, or with @r NULL the page at @addr outside every range. */
struct lv_item {
	struct lv_range *r;
	size_t pg;
	uintptr_t addr;
};

struct fl_snapshot_live {
	pid_t pid;
	uint32_t flags;
	struct fl_uffd *u;		/* ours, for plain memory (NULL if there is none) */
	int pm_fd;			/* /proc/self/pagemap */
	size_t n;
	struct lv_range *r;
	size_t max_ps;

	pthread_rwlock_t instant;	/* faults: read side; the instant: write side */
	_Atomic uint32_t ev_seq;	/* odd while the fault thread reads and applies events */

	pthread_mutex_t lock;		/* what follows, up to the queue */
	pthread_cond_t cv;
	bool running;			/* a snapshot in progress */
	bool hold_writer;		/* tests: the writer thread waits (live-int.h) */
	bool have_base;			/* a snapshot completed: an incremental can follow */
	bool writer_started;
	pthread_t writer;
	struct fl_snapshot_writer *w;
	int error;
	uint64_t t_take;

	pthread_mutex_t qlock;		/* write-protect faults of pager regions */
	struct lv_item *q;
	size_t qn, qcap;
	/*
	 * Faults the queue could not grow for: a range's page is flagged
	 * LF_SPILLED (no memory needed), a fault outside every range goes to
	 * spill[]; `spilled` tells the fault thread to look.
	 */
	_Atomic bool spilled;
	uintptr_t spill[LV_SPILL];
	size_t nspill;
	bool fail_queue;		/* tests: the queue cannot grow (live-int.h) */
	int q_efd;
	int stop_efd;
	pthread_t thread;
	bool thread_started;
	uint8_t *fbuf;			/* the fault thread's buffer: one page of max_ps */
	uint8_t *wbuf;			/* the writer thread's: LV_RUN (or max_ps) */
	size_t wbuf_len;

	_Atomic uint64_t st[SS_COUNT];
	_Atomic uint64_t wp_faults, wait_max, snapshots, pause_ns, duration_ns;
	_Atomic uint64_t handover_waits;	/* tests: pages found on their way from a store */
};

static void stat_add(struct fl_snapshot_live *s, enum lv_stat k, uint64_t v)
{
	atomic_fetch_add_explicit(&s->st[k], v, memory_order_relaxed);
}

static uintptr_t range_base(struct lv_range *r)
{
	if (r->region) {
		struct fl__region_info ri;

		fl__region_info(r->region, &ri);
		return ri.base;
	}
	return atomic_load(&r->base);
}

static void set_error(struct fl_snapshot_live *s, int e)
{
	pthread_mutex_lock(&s->lock);
	if (!s->error)
		s->error = e;
	pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------- saving */

/*
 * Wait until page @pg leaves SAVING: another thread is copying it and
 * putting it into the writer, or reading it from a pager region's store.
 * As long as one such put or store read (a remote store's own deadline
 * bounds it), spinning then yielding: expected in microseconds.
 */
static void wait_saved(struct lv_range *r, size_t pg)
{
	for (unsigned int i = 0; atomic_load(&r->st[pg]) == LV_SAVING; i++)
		if (i > 64)
			sched_yield();
}

/*
 * Whether pages [pg, pg+n), just copied, were still write-protected and
 * not discarded when the copy ended: @ok[i] for each. The pagemap entries
 * say whether the protection survived (a private anonymous page that was
 * zapped lost it); the flags, whether an event said it was discarded
 * (events read during the copy are applied by now: see save_claimed).
 */
static int verify(struct lv_range *r, uintptr_t addr, size_t pg, size_t n, bool *ok)
{
	size_t sub = r->ps / fl__page_size(), total = n * sub, done = 0;
	uint64_t ent[512];

	for (size_t i = 0; i < n; i++)
		ok[i] = !(atomic_load(&r->pf[pg + i]) & LF_DISCARDED);
	while (done < total) {
		size_t k = total - done < 512 ? total - done : 512;
		off_t at = (off_t)((addr / fl__page_size() + done) * sizeof(uint64_t));
		ssize_t got = pread(r->s->pm_fd, ent, k * sizeof(uint64_t), at);

		if (got != (ssize_t)(k * sizeof(uint64_t)))
			return got < 0 ? -errno : -EIO;
		for (size_t j = 0; j < k; j++) {
			uint64_t v = ent[j];

			if (!(v & (PM_PRESENT | PM_SWAPPED)) || !(v & PM_UFFD_WP))
				ok[(done + j) / sub] = false;
		}
		done += k;
	}
	/*
	 * A pager region's discards need no more: the read of a page zapped
	 * under it faults, and the pager serves that fault only after applying
	 * the event, whose hook set LF_DISCARDED.
	 */
	return 0;
}

static void settle(struct lv_range *r, size_t pg, size_t n)
{
	for (size_t i = 0; i < n; i++)
		atomic_store(&r->st[pg + i], LV_DONE);
}

static int mark(struct lv_range *r, size_t pg, size_t n, uint32_t kind)
{
	struct fl_snapshot_live *s = r->s;
	int e = fl_snapshot_writer_mark(s->w, r->index, (uint64_t)pg << r->shift, n << r->shift,
					kind);

	stat_add(s, kind == FL_SNAPSHOT_MARK_ZERO ? SS_DISCARDED : SS_UNMAPPED, n);
	return e;
}

static void read_own_events(struct fl_snapshot_live *s);

/* Set in the fault thread: the one that reads this snapshot's own events. */
static __thread bool lv_reads_events;

/*
 * Wait a moment for an event to be applied: the fault thread reads and
 * applies its own (nobody else would while it waits), others yield to it.
 */
static void let_events_in(struct fl_snapshot_live *s)
{
	if (lv_reads_events)
		read_own_events(s);
	else
		sched_yield();
}

/*
 * Reading pages [pg, pg+n) of @r failed: part of it is not mapped where it
 * was. The program moved the range (mremap) or unmapped it, and the event
 * that says so comes after the fact: wait, a bounded time, until it is
 * applied (the range's address changes, or the pages are gone), then read
 * page by page where the range is now. @absent[i]: page i is not there.
 * Returns the address read from.
 */
static uintptr_t read_moved(struct lv_range *r, size_t pg, size_t n, uint8_t *buf, bool *absent)
{
	uintptr_t old = range_base(r), addr;
	uint64_t until = fl__now_ns() + 200 * 1000000ull;

	while (range_base(r) == old && !(atomic_load(&r->pf[pg]) & LF_GONE) &&
	       fl__now_ns() < until)
		let_events_in(r->s);
	addr = range_base(r) + ((uint64_t)pg << r->shift);
	for (size_t i = 0; i < n; i++) {
		struct iovec l = { buf + (i << r->shift), r->ps };
		struct iovec rm = { (void *)(addr + (i << r->shift)), r->ps };

		absent[i] = process_vm_readv(getpid(), &l, 1, &rm, 1, 0) != (ssize_t)r->ps;
	}
	return addr;
}

#define LV_MOVED_TRIES 100

/*
 * Whether the copy and the look at pages [pg, pg+n) of @r at @addr can
 * be trusted: a page found absent (@absent[i]) is unmapped for good, and
 * one that lost its protection there (@ok[i] false) without a discard is
 * still mapped at @addr. The program may have moved the range (mremap)
 * between the copy and the look, or during the copy, before its event was
 * applied: nothing at the old address then is neither a discard nor an
 * unmap, and the pages are read again where the range is.
 */
static bool look_holds(struct lv_range *r, uintptr_t addr, size_t pg, size_t n, const bool *ok,
			const bool *absent)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t b;
		struct iovec l = { &b, 1 }, rm = { (void *)(addr + (i << r->shift)), 1 };

		uint8_t f = atomic_load(&r->pf[pg + i]);

		if (absent[i] && !(f & LF_GONE))
			return false;	/* not where the range is now, and not unmapped */
		if (ok[i] || absent[i] || (f & LF_DISCARDED))
			continue;
		if (range_base(r) + ((uint64_t)pg << r->shift) != addr ||
		    process_vm_readv(getpid(), &l, 1, &rm, 1, 0) != 1)
			return false;
	}
	return true;
}

/* Save pages [pg, pg+n) of @r from memory (claimed; not settled here). */
static int save_mem(struct lv_range *r, size_t pg, size_t n, uint8_t *buf)
{
	struct fl_snapshot_live *s = r->s;
	uint64_t off = (uint64_t)pg << r->shift;
	size_t len = n << r->shift;
	int e = 0;
	uintptr_t addr;
	uint32_t seq;
	bool ok[LV_RUN / 4096];
	struct iovec local, remote;
	unsigned int tries = 0;
	ssize_t got;

again:
	/* An event being applied may be about these pages: let it finish first. */
	for (unsigned int i = 0; (seq = atomic_load(&s->ev_seq)) & 1; i++)
		if (i > 64)
			sched_yield();
	bool absent[LV_RUN / 4096] = { false };

	addr = range_base(r) + off;
	local = (struct iovec){ .iov_base = buf, .iov_len = len };
	remote = (struct iovec){ .iov_base = (void *)addr, .iov_len = len };
	got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	if (got != (ssize_t)len) {
		if (got < 0 && errno != EFAULT) {
			e = -errno;
			fl__err("snapshot: reading memory at %#lx: %s", (unsigned long)addr,
				strerror(-e));
			return e;
		}
		addr = read_moved(r, pg, n, buf, absent);
	}
	/* Events read during the copy are applied when ev_seq is even again. */
	while (atomic_load(&s->ev_seq) != seq && (atomic_load(&s->ev_seq) & 1))
		sched_yield();
	e = verify(r, addr, pg, n, ok);
	if (e) {
		fl__err("snapshot: reading /proc/self/pagemap: %s", strerror(-e));
		return e;
	}
	if (!look_holds(r, addr, pg, n, ok, absent) && ++tries < LV_MOVED_TRIES) {
		let_events_in(s);
		goto again;
	}
	for (size_t i = 0; i < n && !e;) {
		size_t j = i;
		int what = absent[i] ? 2 : ok[i];

		while (j < n && (absent[j] ? 2 : ok[j]) == what)
			j++;
		if (what == 1) {
			e = fl_snapshot_writer_put(s->w, r->index, off + (i << r->shift),
						   buf + (i << r->shift),
						   (j - i) << r->shift);
			stat_add(s, SS_PAGES, j - i);
		} else {
			e = mark(r, pg + i, j - i,
				 what == 2 ? FL_SNAPSHOT_MARK_ABSENT : FL_SNAPSHOT_MARK_ZERO);
		}
		i = j;
	}
	return e;
}

/* How long a page handed over by its store may stay on its way into the region. */
#define LV_HANDOVER_NS (10 * 1000000000ull)

/*
 * Page @pg of pager region @r reads as a hole from a store that hands its
 * pages over (FL_STORE_MOVE). Either the store holds zeros there, or it
 * gave the page to the pager, which may still be mapping it: it took the
 * page before the instant, and the move lands (or waits behind an event)
 * only now. While a resolver of the pager has the page in hand (busy),
 * wait for it. Mapped then, it is write-protected (mapped before the
 * instant, the instant protected it; after, the pager installs it
 * protected), so the memory holds the instant's data. Discarded or
 * unmapped after the instant, it is recorded as such pages are (zero,
 * absent); poisoned, or still in hand after LV_HANDOVER_NS (a pager that
 * stopped), the snapshot fails: its data is nowhere else to read.
 */
static int save_handed_over(struct lv_range *r, size_t pg, uint8_t *buf)
{
	uint64_t until = fl__now_ns() + LV_HANDOVER_NS;
	bool busy;
	int st;

	if (fl__region_page_busy(r->region, pg))
		atomic_fetch_add_explicit(&r->s->handover_waits, 1, memory_order_relaxed);
	for (unsigned int i = 0; (busy = fl__region_page_busy(r->region, pg)); i++) {
		if (fl__now_ns() > until)
			break;
		if (i < 64)
			continue;
		if (i < 1024)
			sched_yield();
		else
			poll(NULL, 0, 1);
	}
	st = fl__region_page(r->region, pg);
	if (busy) {
		fl__err("snapshot: page %zu of a pager region, handed over by its store, was not "
			"mapped within %llu s: the pager does not serve its faults", pg,
			LV_HANDOVER_NS / 1000000000ull);
		return -EIO;
	}
	switch (st) {
	case FL__PAGE_PRESENT:
		return save_mem(r, pg, 1, buf);
	case FL__PAGE_STORE: {
		/* Nobody holds it (or the pager gave it back meanwhile): the store, again. */
		struct fl__region_info ri;
		uint64_t hole = 0;
		int e;

		fl__region_info(r->region, &ri);
		e = fl_store_read(ri.store, ri.store_off + ((uint64_t)pg << r->shift), buf, r->ps,
				  r->ps, &hole);
		if (e) {
			fl__err("snapshot: reading the store of a pager region at %llu: %s",
				(unsigned long long)(ri.store_off + ((uint64_t)pg << r->shift)),
				strerror(-e));
			return e;
		}
		stat_add(r->s, hole ? SS_ZERO : SS_STORE, 1);
		stat_add(r->s, SS_PAGES, 1);
		return fl_snapshot_writer_put(r->s->w, r->index, (uint64_t)pg << r->shift,
					      hole ? NULL : buf, r->ps);
	}
	case FL__PAGE_ZERO:
		return mark(r, pg, 1, FL_SNAPSHOT_MARK_ZERO);
	case FL__PAGE_GONE:
		return mark(r, pg, 1, FL_SNAPSHOT_MARK_ABSENT);
	default:
		fl__err("snapshot: page %zu of a pager region, handed over by its store, was "
			"poisoned: its data is lost", pg);
		return -EIO;
	}
}

/*
 * Save pages [pg, pg+n) of @r, which this thread has claimed (SAVING), from
 * @kind's source, through @buf (at least n pages). Settles them (DONE)
 * whatever happens, so no writing thread waits for good. Returns 0 or the
 * error that made the snapshot incomplete.
 */
static int save_claimed(struct lv_range *r, size_t pg, size_t n, int kind, uint8_t *buf)
{
	struct fl_snapshot_live *s = r->s;
	uint64_t off = (uint64_t)pg << r->shift;
	size_t len = n << r->shift;
	int e = 0;

	switch (kind) {
	case LV_ZERO:
		e = fl_snapshot_writer_put(s->w, r->index, off, NULL, len);
		stat_add(s, SS_ZERO, n);
		stat_add(s, SS_PAGES, n);
		break;
	case LV_ABSENT:
		e = mark(r, pg, n, FL_SNAPSHOT_MARK_ABSENT);
		break;
	case LV_STORE: {
		struct fl__region_info ri;
		uint64_t holes[(LV_RUN / 4096 + 63) / 64];

		fl__region_info(r->region, &ri);
		e = fl_store_read(ri.store, ri.store_off + off, buf, len, r->ps, holes);
		if (e) {
			fl__err("snapshot: reading the store of a pager region at %llu: %s",
				(unsigned long long)(ri.store_off + off), strerror(-e));
			break;
		}
		for (size_t i = 0; i < n && !e;) {
			size_t j = i;

			if (!(holes[i / 64] >> (i % 64) & 1)) {
				while (j < n && !(holes[j / 64] >> (j % 64) & 1))
					j++;
				e = fl_snapshot_writer_put(s->w, r->index, off + (i << r->shift),
							   buf + (i << r->shift),
							   (j - i) << r->shift);
				stat_add(s, SS_STORE, j - i);
				stat_add(s, SS_PAGES, j - i);
			} else if (fl_store_caps(ri.store) & FL_STORE_MOVE) {
				/*
				 * A store that hands its pages over has given this one to
				 * the pager: mapped now, or on its way (taken before the
				 * instant, not mapped yet). Never a zero page for it.
				 */
				j = i + 1;
				e = save_handed_over(r, pg + i, buf + (i << r->shift));
			} else {
				/* A hole: the page reads zeros. */
				j = i + 1;
				e = fl_snapshot_writer_put(s->w, r->index, off + (i << r->shift),
							   NULL, r->ps);
				stat_add(s, SS_ZERO, 1);
				stat_add(s, SS_PAGES, 1);
			}
			i = j;
		}
		break;
	}
	case LV_MEM:
		e = save_mem(r, pg, n, buf);
		break;
	default:
		e = -EINVAL;
		break;
	}
	settle(r, pg, n);
	if (e)
		set_error(s, e);
	return e;
}

static size_t claim_run(struct lv_range *r, size_t pg, size_t max, int *ret_kind);

static bool is_pending(int v)
{
	return v >= LV_MEM && v <= LV_ABSENT;
}

/* Save page @pg now if the snapshot still needs it (a write waits for it). */
static void save_page(struct lv_range *r, size_t pg, uint8_t *buf, bool *ret_saved)
{
	uint8_t v = atomic_load(&r->st[pg]);

	*ret_saved = false;
	while (is_pending(v)) {
		if (atomic_compare_exchange_weak(&r->st[pg], &v, LV_SAVING)) {
			save_claimed(r, pg, 1, v, buf);
			*ret_saved = true;
			return;
		}
	}
	if (v == LV_SAVING)
		wait_saved(r, pg);
}

/*
 * A write-protect fault on page @pg of @r (under the read side of the
 * instant): save the page if the snapshot needs it, note it written, and
 * let the write go on.
 */
static bool handle_wp(struct lv_range *r, size_t pg)
{
	struct fl_snapshot_live *s = r->s;
	uint64_t t0 = fl__now_ns(), dt, m;
	bool saved;
	int e;

	atomic_fetch_add_explicit(&s->wp_faults, 1, memory_order_relaxed);
	if (!(s->flags & FL_SNAPSHOT_LIVE_TRACK) && !r->region && r->mem == FL_MEM_ANON &&
	    LV_RUN > r->ps) {
		/*
		 * Not tracking, private anonymous memory: save the rest of the
		 * aligned 2 MiB block too and unprotect it whole, as the writer
		 * thread does, so a transparent huge page is not split (the next
		 * instant would have 512 entries to protect instead of one).
		 */
		size_t blk = LV_RUN >> r->shift, b0 = pg / blk * blk;
		size_t b1 = b0 + blk < r->npages ? b0 + blk : r->npages;

		for (size_t q = b0; q < b1;) {
			int kind = 0;
			size_t k = claim_run(r, q, blk, &kind);

			if (!k) {
				wait_saved(r, q++);
				continue;
			}
			save_claimed(r, q, k, kind, s->fbuf);
			stat_add(s, SS_WRITTEN, k);
			q += k;
		}
		e = fl_uffd_writeprotect(r->u, (void *)(range_base(r) + (b0 << r->shift)),
					 (b1 - b0) << r->shift, 0);
	} else {
		save_page(r, pg, s->fbuf, &saved);
		if (saved)
			stat_add(s, SS_WRITTEN, 1);
		if (s->flags & FL_SNAPSHOT_LIVE_TRACK)
			atomic_fetch_or(&r->pf[pg], LF_DIRTY);
		e = fl_uffd_writeprotect(r->u, (void *)(range_base(r) + (pg << r->shift)), r->ps,
					 0);
	}
	/* An event is pending (the kernel refuses, and wakes nobody): the caller retries. */
	if (e == -EAGAIN)
		return false;
	if (e && e != -ENOENT)
		fl__warn("snapshot: unprotecting a written page: %s", strerror(-e));
	dt = fl__now_ns() - t0;
	m = atomic_load_explicit(&s->wait_max, memory_order_relaxed);
	while (dt > m && !atomic_compare_exchange_weak(&s->wait_max, &m, dt))
		;
	return true;
}

/*
 * The program discarded (@gone: unmapped) pages [pg, pg+n) of @r. Private
 * anonymous pages the snapshot in progress still has to read from memory
 * (any, if unmapped) are lost: they are
 * recorded as zero pages (what the program reads there now) or absent.
 * Store and zero pages keep their source. Never blocks.
 */
static void lose(struct lv_range *r, size_t pg, size_t n, bool gone)
{
	/*
	 * MADV_DONTNEED on shared memory (shmem, hugetlbfs) only unmaps: the
	 * page cache keeps the data and the protection stays (a PTE marker), so
	 * the page is only written for the next incremental. After MADV_REMOVE
	 * the copy reads the zeros the program reads.
	 */
	if (!gone && r->mem != FL_MEM_ANON) {
		for (size_t i = pg; i < pg + n && i < r->npages; i++)
			atomic_fetch_or(&r->pf[i], LF_DIRTY);
		return;
	}
	for (size_t i = pg; i < pg + n && i < r->npages; i++) {
		uint8_t v = LV_MEM;

		if (!(atomic_fetch_or(&r->pf[i], LF_DIRTY | (gone ? LF_GONE : LF_DISCARDED)) &
		      LF_GONE) && gone)
			atomic_fetch_add(&r->ngone, 1);
		if (atomic_compare_exchange_strong(&r->st[i], &v, LV_SAVING)) {
			int e = mark(r, i, 1, gone ? FL_SNAPSHOT_MARK_ABSENT : FL_SNAPSHOT_MARK_ZERO);

			settle(r, i, 1);
			if (e)
				set_error(r->s, e);
		}
	}
}

/* ----------------------------------------------------- pager regions */

/* Queue a write-protect fault for the fault thread (@wake: tell it now). */
static void q_add(struct fl_snapshot_live *s, struct lv_range *r, size_t pg, bool wake)
{
	uint64_t one = 1;

	pthread_mutex_lock(&s->qlock);
	if (s->qn == s->qcap) {
		size_t cap = s->qcap ? s->qcap * 2 : 64;
		struct lv_item *q = s->fail_queue ? NULL : realloc(s->q, cap * sizeof(*q));

		if (!q) {
			/*
			 * No memory: the fault is kept where no allocation is
			 * needed, so its write is still handled (never left
			 * blocked): the page's flag, or a fixed slot.
			 */
			if (r) {
				atomic_fetch_or(&r->pf[pg], LF_SPILLED);
			} else if (s->nspill < LV_SPILL) {
				s->spill[s->nspill++] = (uintptr_t)pg;
			} else {
				pthread_mutex_unlock(&s->qlock);
				/* Only writes to pieces of ranges moved away land here. */
				fl__err("snapshot: out of memory queueing a write-protect fault outside "
					"the ranges: that write waits until the snapshot is destroyed");
				return;
			}
			atomic_store(&s->spilled, true);
			pthread_mutex_unlock(&s->qlock);
			if (write(s->q_efd, &one, sizeof(one)) < 0)
				(void)0;	/* the counter is full: the thread is woken anyway */
			return;
		}
		s->q = q;
		s->qcap = cap;
	}
	s->q[s->qn++] = r ? (struct lv_item){ .r = r, .pg = pg } :
			    (struct lv_item){ .addr = (uintptr_t)pg };
	pthread_mutex_unlock(&s->qlock);
	if (wake && write(s->q_efd, &one, sizeof(one)) < 0)
		(void)0;	/* the counter is full: the thread is woken anyway */
}

static void q_push(struct fl_snapshot_live *s, struct lv_range *r, size_t pg)
{
	q_add(s, r, pg, true);
}

/* The pager's hook: on its handler thread (or in dispatch); never blocks. */
static void region_hook(void *arg, struct fl_region *reg, size_t pg, size_t n, int why)
{
	struct lv_range *r = arg;

	(void)reg;
	switch (why) {
	case FL__WP_FAULT:
		q_push(r->s, r, pg);
		break;
	case FL__WP_DISCARD:
		lose(r, pg, n, false);
		break;
	case FL__WP_GONE:
		lose(r, pg, n, true);
		break;
	}
}

/* ------------------------------------------------- the fault thread */

static struct lv_range *find_plain(struct fl_snapshot_live *s, uintptr_t addr, size_t *ret_pg)
{
	for (size_t i = 0; i < s->n; i++) {
		struct lv_range *r = &s->r[i];
		uintptr_t b = atomic_load(&r->base);

		if (!r->region && addr >= b && addr < b + r->len) {
			*ret_pg = (addr - b) >> r->shift;
			return r;
		}
	}
	return NULL;
}

/* An event on our own userfaultfd (plain memory). */
static void apply_event(struct fl_snapshot_live *s, const struct fl_event *ev)
{
	uintptr_t a, b;

	switch (ev->type) {
	case FL_EVENT_REMOVE:
	case FL_EVENT_UNMAP:
		a = (uintptr_t)ev->range.start;
		b = (uintptr_t)ev->range.end;
		for (size_t i = 0; i < s->n; i++) {
			struct lv_range *r = &s->r[i];
			uintptr_t rb = atomic_load(&r->base), lo, hi;

			if (r->region || b <= rb || a >= rb + r->len)
				continue;
			lo = a > rb ? a : rb;
			hi = b < rb + r->len ? b : rb + r->len;
			lose(r, (lo - rb) >> r->shift, (hi - lo + r->ps - 1) >> r->shift,
			     ev->type == FL_EVENT_UNMAP);
		}
		break;
	case FL_EVENT_REMAP:
		a = (uintptr_t)ev->remap.from;
		b = a + ev->remap.len;
		for (size_t i = 0; i < s->n; i++) {
			struct lv_range *r = &s->r[i];
			uintptr_t rb = atomic_load(&r->base), lo, hi;

			if (r->region || b <= rb || a >= rb + r->len)
				continue;
			if (a <= rb && b >= rb + r->len) {
				/* The whole range moved: follow it. */
				atomic_store(&r->base, (uintptr_t)ev->remap.to + (rb - a));
				continue;
			}
			/* A piece moved away alone: it is not this range any more. */
			lo = a > rb ? a : rb;
			hi = b < rb + r->len ? b : rb + r->len;
			fl__warn("snapshot: part of a range was moved by mremap; its pages not "
				 "saved yet are recorded absent");
			lose(r, (lo - rb) >> r->shift, (hi - lo) >> r->shift, true);
		}
		/*
		 * A write at either place may wait where nothing will wake it:
		 * read before this event (outside every range), or let go at
		 * the other place. Both fault again.
		 */
		fl_uffd_wake(s->u, ev->remap.from, ev->remap.len);
		fl_uffd_wake(s->u, ev->remap.to, ev->remap.len);
		break;
	default:
		break;
	}
}

/*
 * A write-protect fault at @addr outside every range (a piece moved away):
 * no longer ours to save; let the write go on. False if the kernel refused
 * (an event pends).
 */
static bool release_orphan(struct fl_snapshot_live *s, uintptr_t addr)
{
	int e = fl_uffd_writeprotect(s->u, (void *)(addr & ~(uintptr_t)(fl__page_size() - 1)),
				     fl__page_size(), 0);

	if (e == -EINVAL)
		e = fl_uffd_writeprotect(s->u, (void *)(addr & ~(uintptr_t)((2u << 20) - 1)),
					 2u << 20, 0);
	return e != -EAGAIN;
}

/*
 * Read the events of our own userfaultfd once (nobody else reads them) and
 * apply them; the write-protect faults read with them are queued for the
 * fault thread (woken), none dropped. Under either side of the instant.
 */
static void read_own_events(struct fl_snapshot_live *s)
{
	struct fl_event evs[LV_EVENTS];
	int n;

	atomic_fetch_add(&s->ev_seq, 1);
	n = fl_uffd_read_events(s->u, evs, LV_EVENTS);
	for (int i = 0; i < n; i++)
		if (evs[i].type != FL_EVENT_PAGEFAULT)
			apply_event(s, &evs[i]);
	atomic_fetch_add(&s->ev_seq, 1);
	for (int i = 0; i < n; i++) {
		uintptr_t a = (uintptr_t)evs[i].fault.addr;
		struct lv_range *fr;
		size_t fpg;

		if (evs[i].type != FL_EVENT_PAGEFAULT || !(evs[i].flags & FL_FAULT_WP))
			continue;
		fr = find_plain(s, a, &fpg);
		q_add(s, fr, fr ? fpg : (size_t)a, true);
	}
}

static void handle_plain_fault(struct fl_snapshot_live *s, const struct fl_event *ev)
{
	uintptr_t addr = (uintptr_t)ev->fault.addr;
	struct lv_range *r;
	size_t pg;

	if (!(ev->flags & FL_FAULT_WP))
		return;
	r = find_plain(s, addr, &pg);
	/*
	 * Unprotecting is refused while an event pends: read the events, apply
	 * them, and try again. After a few tries the fault is queued and
	 * retried by the fault thread's loop.
	 */
	for (int tries = 0; r ? !handle_wp(r, pg) : !release_orphan(s, addr); tries++) {
		if (tries == 16) {
			q_add(s, r, r ? pg : (size_t)addr, false);
			return;
		}
		read_own_events(s);
	}
}

static void read_uffd(struct fl_snapshot_live *s)
{
	struct fl_event ev[LV_EVENTS];
	int n;

	do {
		pthread_rwlock_rdlock(&s->instant);
		atomic_fetch_add(&s->ev_seq, 1);
		n = fl_uffd_read_events(s->u, ev, LV_EVENTS);
		for (int i = 0; i < n; i++)
			if (ev[i].type != FL_EVENT_PAGEFAULT)
				apply_event(s, &ev[i]);
		atomic_fetch_add(&s->ev_seq, 1);
		/* Events first, then the faults read with them. */
		for (int i = 0; i < n; i++)
			if (ev[i].type == FL_EVENT_PAGEFAULT)
				handle_plain_fault(s, &ev[i]);
		pthread_rwlock_unlock(&s->instant);
	} while (n == LV_EVENTS);
	if (n < 0 && n != -EAGAIN && n != -EINTR)
		fl__err("snapshot: reading the userfaultfd: %s", strerror(-n));
}

/*
 * Handle the queued write-protect faults, each once; those whose unprotect
 * met a pending event (EAGAIN) are queued again. Returns whether any was.
 */
static bool drain_queue(struct fl_snapshot_live *s)
{
	size_t todo;
	bool again = false;

	pthread_mutex_lock(&s->qlock);
	todo = s->qn;
	pthread_mutex_unlock(&s->qlock);
	for (; todo; todo--) {
		struct lv_item it;
		bool done;

		pthread_mutex_lock(&s->qlock);
		it = s->q[0];
		memmove(s->q, s->q + 1, (s->qn - 1) * sizeof(*s->q));
		s->qn--;
		pthread_mutex_unlock(&s->qlock);
		pthread_rwlock_rdlock(&s->instant);
		done = it.r ? handle_wp(it.r, it.pg) : release_orphan(s, it.addr);
		pthread_rwlock_unlock(&s->instant);
		if (!done) {
			q_add(s, it.r, it.r ? it.pg : (size_t)it.addr, false);
			again = true;
		}
	}
	return again;
}

/*
 * Handle the faults the queue had no memory for (q_add), each once; those
 * refused again (an event pends) stay spilled. Returns whether any did.
 */
static bool drain_spilled(struct fl_snapshot_live *s)
{
	uintptr_t spill[LV_SPILL];
	size_t n;
	bool again = false;

	if (!atomic_exchange(&s->spilled, false))
		return false;
	pthread_mutex_lock(&s->qlock);
	n = s->nspill;
	memcpy(spill, s->spill, n * sizeof(*spill));
	s->nspill = 0;
	pthread_mutex_unlock(&s->qlock);
	pthread_rwlock_rdlock(&s->instant);
	for (size_t i = 0; i < s->n; i++) {
		struct lv_range *r = &s->r[i];

		for (size_t pg = 0; pg < r->npages; pg++) {
			if (!(atomic_load_explicit(&r->pf[pg], memory_order_relaxed) & LF_SPILLED))
				continue;
			atomic_fetch_and(&r->pf[pg], (uint8_t)~LF_SPILLED);
			if (!handle_wp(r, pg)) {
				atomic_fetch_or(&r->pf[pg], LF_SPILLED);
				again = true;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (release_orphan(s, spill[i]))
			continue;
		pthread_mutex_lock(&s->qlock);
		if (s->nspill < LV_SPILL)
			s->spill[s->nspill++] = spill[i];
		pthread_mutex_unlock(&s->qlock);
		again = true;
	}
	pthread_rwlock_unlock(&s->instant);
	if (again)
		atomic_store(&s->spilled, true);
	return again;
}

static void *fault_main(void *arg)
{
	struct fl_snapshot_live *s = arg;
	struct pollfd pf[3] = {
		{ .fd = s->stop_efd, .events = POLLIN },
		{ .fd = s->q_efd, .events = POLLIN },
		{ .fd = s->u ? fl_uffd_fd(s->u) : -1, .events = POLLIN },
	};

	bool again = false;

	lv_reads_events = true;

	for (;;) {
		uint64_t v;

		/*
		 * A write whose unprotect met a pending event is retried every
		 * millisecond until whoever reads that event (this thread for
		 * plain memory, the pager for its regions) has read it.
		 */
		if (poll(pf, s->u ? 3 : 2, again ? 1 : -1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents & POLLIN)
			break;
		if ((pf[1].revents & POLLIN) && read(s->q_efd, &v, sizeof(v)) < 0)
			(void)0;	/* someone else reset it */
		if (s->u && (pf[2].revents & (POLLIN | POLLERR)))
			read_uffd(s);
		again = drain_queue(s);
		again |= drain_spilled(s);
	}
	return NULL;
}

/* ------------------------------------------------- the writer thread */

/*
 * Claim a run of pages from @pg with the same pending state, up to the next
 * multiple of @max pages; returns how many (0: none at pg).
 */
static size_t claim_run(struct lv_range *r, size_t pg, size_t max, int *ret_kind)
{
	uint8_t v = atomic_load(&r->st[pg]);
	size_t n = 0, end = (pg / max + 1) * max;

	if (!is_pending(v) || !atomic_compare_exchange_strong(&r->st[pg], &v, LV_SAVING))
		return 0;
	*ret_kind = v;
	for (n = 1; pg + n < end && pg + n < r->npages; n++) {
		uint8_t w = (uint8_t)*ret_kind;

		if (!atomic_compare_exchange_strong(&r->st[pg + n], &w, LV_SAVING))
			break;
	}
	return n;
}

void fl__snapshot_live_fail_queue_for_test(struct fl_snapshot_live *s, bool fail)
{
	pthread_mutex_lock(&s->qlock);
	s->fail_queue = fail;
	pthread_mutex_unlock(&s->qlock);
}

uint64_t fl__snapshot_live_handover_waits_for_test(struct fl_snapshot_live *s)
{
	return atomic_load(&s->handover_waits);
}

void fl__snapshot_live_hold_writer_for_test(struct fl_snapshot_live *s, bool hold)
{
	pthread_mutex_lock(&s->lock);
	s->hold_writer = hold;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->lock);
}

static void *writer_main(void *arg)
{
	struct fl_snapshot_live *s = arg;
	bool track = s->flags & FL_SNAPSHOT_LIVE_TRACK;

	pthread_mutex_lock(&s->lock);
	while (s->hold_writer)
		pthread_cond_wait(&s->cv, &s->lock);
	pthread_mutex_unlock(&s->lock);

	for (size_t i = 0; i < s->n; i++) {
		struct lv_range *r = &s->r[i];
		size_t max = s->wbuf_len >> r->shift;

		for (size_t pg = 0; pg < r->npages;) {
			int kind = 0;
			size_t n = claim_run(r, pg, max, &kind);

			if (!n) {
				pg++;
				continue;
			}
			save_claimed(r, pg, n, kind, s->wbuf);
			/* Not tracking: the saved pages need no protection any more. */
			if (!track && kind == LV_MEM)
				fl_uffd_writeprotect(r->u, (void *)(range_base(r) + (pg << r->shift)),
						     n << r->shift, 0);
			pg += n;
		}
	}
	/* Pages other threads are saving (a write each). */
	for (size_t i = 0; i < s->n; i++)
		for (size_t pg = 0; pg < s->r[i].npages; pg++)
			wait_saved(&s->r[i], pg);
	for (size_t i = 0; i < s->n && !track; i++) {
		struct lv_range *r = &s->r[i];

		if (r->region)
			fl__region_wp_installs(r->region, false);
		/* Pages the pager installed protected meanwhile: writes need not fault. */
		fl_uffd_writeprotect(r->u, (void *)range_base(r), r->len, 0);
	}
	pthread_mutex_lock(&s->lock);
	atomic_store(&s->duration_ns, fl__now_ns() - s->t_take);
	if (!s->error) {
		s->have_base = true;
		atomic_fetch_add(&s->snapshots, 1);
	}
	s->running = false;
	s->w = NULL;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ------------------------------------------------------------- the API */

static void join_writer(struct fl_snapshot_live *s)
{
	if (s->writer_started) {
		pthread_join(s->writer, NULL);
		s->writer_started = false;
	}
}

static bool pow2(size_t v)
{
	return v && !(v & (v - 1));
}

/* Check range @i and fill s->r[i] (not registered yet). */
static int range_init(struct fl_snapshot_live *s, size_t i, const struct fl_snapshot_range *in)
{
	struct lv_range *r = &s->r[i];
	size_t base_ps = fl__page_size();

	r->s = s;
	r->index = (uint32_t)i;
	r->flags = in->flags;
	if (in->region) {
		struct fl__region_info ri;

		if (in->addr || in->len)
			return fl__einval("fl_snapshot_live_create", "range %zu: a region and an "
					  "address/length at once", i);
		fl__region_info(in->region, &ri);
		r->region = in->region;
		r->pager = ri.pager;
		r->u = ri.uffd;
		atomic_init(&r->base, ri.base);
		r->len = ri.len;
		r->ps = ri.ps;
		r->mem = ri.mem;
		r->modes = ri.modes;
	} else {
		r->ps = in->page_size ? in->page_size
				      : in->mem == FL_MEM_HUGETLB ? (size_t)2 << 20 : base_ps;
		if (!in->addr || !in->len || (unsigned int)in->mem >= FL_MEM_TYPE_COUNT ||
		    !pow2(r->ps) || r->ps < base_ps || (uintptr_t)in->addr % r->ps ||
		    in->len % r->ps)
			return fl__einval("fl_snapshot_live_create", "range %zu: %s", i,
					  !in->addr ? "addr is NULL" : !in->len ? "len is 0" :
					  (unsigned int)in->mem >= FL_MEM_TYPE_COUNT ?
					  "unknown memory type" :
					  "page size not a power of two of at least the base page "
					  "size, or addr/len not multiples of it");
		atomic_init(&r->base, (uintptr_t)in->addr);
		r->len = in->len;
		r->mem = in->mem;
	}
	r->shift = (unsigned int)__builtin_ctzll(r->ps);
	r->npages = r->len >> r->shift;
	r->st = calloc(r->npages, 1);
	r->pf = calloc(r->npages, 1);
	if (!r->st || !r->pf)
		return -ENOMEM;
	if (r->ps > s->max_ps)
		s->max_ps = r->ps;
	for (size_t k = 0; k < i; k++) {
		uintptr_t a = atomic_load(&r->base), b = atomic_load(&s->r[k].base);

		if (a < b + s->r[k].len && b < a + r->len)
			return fl__einval("fl_snapshot_live_create", "ranges %zu and %zu overlap", k,
					  i);
	}
	return 0;
}

/* Register range @r for write-protect faults. */
static int range_register(struct fl_snapshot_live *s, struct lv_range *r)
{
	uint32_t ioctls = 0;
	uintptr_t base = range_base(r);
	int e;

	if (r->region) {
		e = fl__region_wp_attach(r->region, region_hook, r);
		if (e) {
			if (e == -EOPNOTSUPP)
				fl__err("snapshot: a pager region in FL_PAGER_SIGBUS mode cannot be "
					"snapshotted live (its write-protect faults would be SIGBUS)");
			return e;
		}
		r->attached = true;
		e = fl_uffd_register(r->u, (void *)base, r->len, r->modes | FL_REGISTER_WP,
				     &ioctls);
	} else {
		r->u = s->u;
		e = fl_uffd_register(r->u, (void *)base, r->len, FL_REGISTER_WP, &ioctls);
	}
	if (!e && !(ioctls & FL_IOCTL_WRITEPROTECT))
		e = -EOPNOTSUPP;
	if (e) {
		fl__err("snapshot: registering %#lx+%zu (%s) for write-protect faults: %s",
			(unsigned long)base, r->len, fl_mem_type_name(r->mem), strerror(-e));
		return e == -EINVAL ? -EOPNOTSUPP : e;
	}
	r->registered = true;
	if (r->region && (s->flags & FL_SNAPSHOT_LIVE_TRACK))
		fl__region_wp_installs(r->region, true);
	return 0;
}

FL_API int fl_snapshot_live_create(const struct fl_snapshot_range *ranges, size_t n,
				   const struct fl_snapshot_live_opts *opts,
				   struct fl_snapshot_live **ret)
{
	struct fl_snapshot_live_opts o = { .sz = sizeof(o) };
	pthread_rwlockattr_t ra;
	struct fl_snapshot_live *s;
	bool plain = false;
	int e;

	if (!ranges || !n || !ret || n > 4096)
		return fl__einval(__func__, "%s", !ranges ? "ranges is NULL" : !n ? "n is 0" :
				  !ret ? "ret is NULL" : "more than 4096 ranges");
	if (opts) {
		e = fl__opts_copy(&o, sizeof(o), opts, __func__);
		if (e < 0)
			return e;
	}
	if (o.flags & ~(uint32_t)(FL_SNAPSHOT_LIVE_TRACK | FL_SNAPSHOT_LIVE_NO_UNPOPULATED))
		return fl__einval(__func__, "unknown flags %#x", o.flags);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->pid = getpid();
	s->flags = o.flags;
	s->pm_fd = -1;
	s->q_efd = -1;
	s->stop_efd = -1;
	pthread_rwlockattr_init(&ra);
	/* The instant must not wait behind a stream of faults. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->instant, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->qlock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	s->n = n;
	s->r = calloc(n, sizeof(*s->r));
	if (!s->r) {
		e = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		e = range_init(s, i, &ranges[i]);
		if (e)
			goto fail;
		plain |= !ranges[i].region;
	}
	s->pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	s->q_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->pm_fd < 0 || s->q_efd < 0 || s->stop_efd < 0) {
		e = -errno;
		fl__err("snapshot: opening /proc/self/pagemap or an eventfd: %s", strerror(-e));
		goto fail;
	}
	s->wbuf_len = LV_RUN > s->max_ps ? LV_RUN : s->max_ps;
	s->wbuf = malloc(s->wbuf_len);
	s->fbuf = malloc(s->wbuf_len);
	if (!s->wbuf || !s->fbuf) {
		e = -ENOMEM;
		goto fail;
	}
	if (plain) {
		struct fl_uffd_opts uo = {
			.sz = sizeof(uo),
			.features = FL_FEAT_PAGEFAULT_FLAG_WP,
			.optional = FL_FEAT_WP_HUGETLBFS_SHMEM | FL_FEAT_EVENT_REMAP |
				    FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP |
				    (o.flags & FL_SNAPSHOT_LIVE_NO_UNPOPULATED ?
					     0 : FL_FEAT_WP_UNPOPULATED),
			.flags = FL_UFFD_NONBLOCK,
		};

		e = fl_uffd_open(&uo, &s->u);
		if (e)
			goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		struct fl_uffd *u = ranges[i].region ? s->r[i].u : s->u;

		/*
		 * A user-mode-only userfaultfd turns the kernel's writes into
		 * protected memory (read(2) into a buffer) into EFAULT: the
		 * program's system calls would fail while pages are protected.
		 */
		if (fl_uffd_path(u) == FL_UFFD_PATH_USER_ONLY) {
			fl__err("snapshot: only a user-mode-only userfaultfd is available: system "
				"calls writing into protected memory would fail with EFAULT; allow "
				"the userfaultfd(2) system call (vm.unprivileged_userfaultfd=1 or "
				"CAP_SYS_PTRACE) or /dev/userfaultfd");
			e = -EPERM;
			goto fail;
		}
	}
	for (size_t i = 0; i < n; i++) {
		e = range_register(s, &s->r[i]);
		if (e)
			goto fail;
	}
	e = fl__thread_start(&s->thread, NULL, fault_main, s, "fl-snap");
	if (e)
		goto fail;
	s->thread_started = true;
	*ret = s;
	return 0;
fail:
	fl_snapshot_live_destroy(s);
	return e;
}

/* Private anonymous pages never touched cannot be protected without WP_UNPOPULATED: map them. */
static void populate(struct fl_snapshot_live *s, struct lv_range *r)
{
	uintptr_t base = range_base(r);

	if (r->region || r->mem != FL_MEM_ANON || (fl_uffd_features(s->u) & FL_FEAT_WP_UNPOPULATED))
		return;
	if (madvise((void *)base, r->len, MADV_POPULATE_READ) == 0)
		return;
	/* Before 5.14: read it all (faults map the zero page where nothing is). */
	for (size_t off = 0; off < r->len; off += s->wbuf_len) {
		size_t k = r->len - off < s->wbuf_len ? r->len - off : s->wbuf_len;
		struct iovec l = { s->wbuf, k }, rm = { (void *)(base + off), k };

		if (process_vm_readv(getpid(), &l, 1, &rm, 1, 0) < 0)
			break;
	}
}

/* Write-protect (or with !@on unprotect) range @r, leaving out pages unmapped. */
static int protect(struct lv_range *r, bool on)
{
	uintptr_t base = range_base(r);
	int e = fl_uffd_writeprotect(r->u, (void *)base, r->len, on ? FL_RESOLVE_WP : 0);

	if (e != -ENOENT)
		return e;
	/* Part of it was unmapped: page runs that are still there. */
	e = 0;
	for (size_t pg = 0; pg < r->npages;) {
		size_t end = pg;

		while (end < r->npages && !(atomic_load(&r->pf[end]) & LF_GONE))
			end++;
		if (end > pg) {
			int k = fl_uffd_writeprotect(r->u, (void *)(base + (pg << r->shift)),
						     (end - pg) << r->shift, on ? FL_RESOLVE_WP : 0);

			if (k && k != -ENOENT && !e)
				e = k;
		}
		pg = end + 1;
	}
	return e;
}

/*
 * Unprotect all of @r for good. The kernel refuses (EAGAIN) while an event
 * of the range's userfaultfd (fork, mremap, a discard) is unread; whoever
 * reads it (the fl-snap thread for plain memory, the pager's handlers for
 * a region) does so promptly, so try again every millisecond, for at most
 * 10 s: past that (a stopped pager reads nothing) say so; writes waiting
 * there then wait until someone reads the userfaultfd.
 */
static void unprotect_all(struct lv_range *r)
{
	int e = -EAGAIN;

	for (int i = 0; i < 10000 && e == -EAGAIN; i++) {
		e = protect(r, false);
		if (e == -EAGAIN)
			poll(NULL, 0, 1);
	}
	if (e)
		fl__warn("snapshot: unprotecting %#lx (%zu bytes): %s%s", (unsigned long)range_base(r),
			 r->len, strerror(-e),
			 e == -EAGAIN ? " (an event of its userfaultfd stays unread: writes there "
					"wait until it is read)" : "");
}

/* Instants tried while an unread event makes the kernel refuse to protect (about 1 ms apart). */
#define LV_TAKE_TRIES 1000

/* Take (@hold) or give back the read token of each pager with a region among the ranges. */
static void hold_pagers(struct fl_snapshot_live *s, bool hold)
{
	for (size_t i = 0; i < s->n; i++) {
		struct fl_pager *p = s->r[i].pager;
		bool seen = false;

		if (!p)
			continue;
		for (size_t k = 0; k < i && !seen; k++)
			seen = s->r[k].pager == p;
		if (seen)
			continue;
		if (hold)
			fl__pager_hold_reading(p);
		else
			fl__pager_release_reading(p);
	}
}

/*
 * The state of page @pg at the instant: what the snapshot must save, or
 * IDLE. Nothing else touches the page's bytes during the instant (faults
 * and events wait), hence plain loads and stores.
 */
static uint8_t instant_state(struct lv_range *r, size_t pg, bool incremental)
{
	uint8_t f = atomic_load_explicit(&r->pf[pg], memory_order_relaxed);

	atomic_store_explicit(&r->pf[pg], (uint8_t)(f & ~(LF_DIRTY | LF_DISCARDED)),
			      memory_order_relaxed);
	if (incremental && !(f & LF_DIRTY))
		return LV_IDLE;
	if (f & LF_GONE)
		return LV_ABSENT;
	if (!r->region)
		return LV_MEM;
	switch (fl__region_page(r->region, pg)) {
	case FL__PAGE_PRESENT:
		return LV_MEM;
	case FL__PAGE_STORE:
		return LV_STORE;
	case FL__PAGE_ZERO:
		/* Shared memory keeps its page cache across MADV_DONTNEED: what it holds. */
		return r->mem == FL_MEM_ANON ? LV_ZERO : LV_MEM;
	case FL__PAGE_POISONED:
		/* Its store read failed once: again now, or the snapshot fails (never zeros). */
		return LV_STORE;
	default:
		return LV_ABSENT;
	}
}

/* Every page's state at the instant (the pause: keep it cheap). */
static void instant_states(struct lv_range *r, bool incremental)
{
	/* A full snapshot of plain memory with nothing unmapped: every page from memory. */
	if (!r->region && !incremental && !atomic_load(&r->ngone)) {
		memset((uint8_t *)r->st, LV_MEM, r->npages);
		memset((uint8_t *)r->pf, 0, r->npages);
		return;
	}
	for (size_t pg = 0; pg < r->npages; pg++)
		atomic_store_explicit(&r->st[pg], instant_state(r, pg, incremental),
				      memory_order_relaxed);
}

FL_API int fl_snapshot_live_take(struct fl_snapshot_live *s, struct fl_snapshot_writer *w,
				 uint32_t flags)
{
	bool incremental = flags & FL_SNAPSHOT_TAKE_INCREMENTAL, track;
	uint64_t t0;
	size_t i;
	int e = 0;

	if (!s || !w || (flags & ~(uint32_t)FL_SNAPSHOT_TAKE_INCREMENTAL))
		return fl__einval(__func__, "%s", !s ? "s is NULL" : !w ? "w is NULL" :
				  "unknown flags");
	if (getpid() != s->pid)
		return -ECHILD;
	track = s->flags & FL_SNAPSHOT_LIVE_TRACK;
	pthread_mutex_lock(&s->lock);
	if (s->running) {
		pthread_mutex_unlock(&s->lock);
		return -EBUSY;
	}
	if (incremental && (!track || !s->have_base)) {
		pthread_mutex_unlock(&s->lock);
		return fl__einval(__func__, "an incremental snapshot needs FL_SNAPSHOT_LIVE_TRACK "
				  "and a previous snapshot that completed");
	}
	s->running = true;
	pthread_mutex_unlock(&s->lock);
	join_writer(s);

	for (i = 0; i < s->n && !e; i++) {
		struct lv_range *r = &s->r[i];
		uint32_t idx = 0;

		/* Declared by an earlier take of this writer that was refused (EAGAIN). */
		if (fl__snap_writer_has_region(w, (uint32_t)i, range_base(r), r->len, r->ps,
					       r->flags))
			continue;
		e = fl_snapshot_writer_add_region(w, range_base(r), r->len, r->ps, r->flags, &idx);
		if (!e && idx != i)
			e = fl__einval(__func__, "the writer has regions already: give a fresh one");
	}
	if (!e && fl__snap_writer_nregions(w) != s->n)
		e = fl__einval(__func__, "the writer has regions already: give a fresh one");
	for (i = 0; i < s->n && !e; i++) {
		populate(s, &s->r[i]);
		/* Pages the pager brings in from now on arrive protected. */
		if (!track && s->r[i].region)
			fl__region_wp_installs(s->r[i].region, true);
	}
	if (e)
		goto fail;

	/*
	 * The instant. Nobody reads events meanwhile: neither our fault thread
	 * (the write side excludes it) nor the pagers of pager regions (we hold
	 * their read token), so a discard or unmap either was applied before
	 * the instant or happens after it (the kernel lets the thread in
	 * madvise() or munmap() go on only once its event is read).
	 */
	for (int attempt = 1;; attempt++) {
		t0 = fl__now_ns();
		hold_pagers(s, true);
		pthread_rwlock_wrlock(&s->instant);
		for (i = 0; i < s->n && !e; i++) {
			e = protect(&s->r[i], true);
			/*
			 * Plain memory: the event that makes the kernel refuse is
			 * ours to read, inside the instant (it came before it).
			 */
			for (int k = 0; e == -EAGAIN && !s->r[i].region && k < 16; k++) {
				read_own_events(s);
				e = protect(&s->r[i], true);
			}
		}
		if (e != -EAGAIN || attempt == LV_TAKE_TRIES)
			break;
		/*
		 * Another thread's discard, unmap, mremap or fork queued an event
		 * before the instant, unread since: the kernel protects nothing
		 * until it is read. Undo, let it be read, and start again. Tracking
		 * loses nothing: a page written since the last instant keeps its
		 * dirty mark when it is protected again.
		 */
		for (size_t k = 0; k + 1 < i && !track; k++)
			protect(&s->r[k], false);
		pthread_rwlock_unlock(&s->instant);
		hold_pagers(s, false);
		poll(NULL, 0, 1);
		e = 0;
	}
	if (e) {
		fl__err("snapshot: write-protecting range %zu: %s", i - 1, strerror(-e));
		/* Tracking cannot trust what it knows now: the next incremental saves it all. */
		for (size_t k = 0; k < s->n; k++) {
			if (!track)
				protect(&s->r[k], false);
			for (size_t pg = 0; pg < s->r[k].npages; pg++)
				atomic_fetch_or(&s->r[k].pf[pg], LF_DIRTY);
		}
		pthread_rwlock_unlock(&s->instant);
		hold_pagers(s, false);
		goto fail;
	}
	for (i = 0; i < s->n; i++)
		instant_states(&s->r[i], incremental);
	for (int k = 0; k < SS_COUNT; k++)
		atomic_store(&s->st[k], 0);
	pthread_mutex_lock(&s->lock);
	s->w = w;
	s->error = 0;
	s->t_take = t0;
	pthread_mutex_unlock(&s->lock);
	pthread_rwlock_unlock(&s->instant);
	hold_pagers(s, false);
	atomic_store(&s->pause_ns, fl__now_ns() - t0);

	e = fl__thread_start(&s->writer, NULL, writer_main, s, "fl-snap-writer");
	if (!e) {
		s->writer_started = true;
		return 0;
	}
	/* No writer thread: save everything here, so no write stays blocked. */
	fl__warn("snapshot: cannot start the writer thread (%s); saving in the caller",
		 strerror(-e));
	writer_main(s);
	return 0;
fail:
	for (i = 0; i < s->n && !track; i++)
		if (s->r[i].region)
			fl__region_wp_installs(s->r[i].region, false);
	pthread_mutex_lock(&s->lock);
	s->running = false;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->lock);
	return e;
}

FL_API int fl_snapshot_live_wait(struct fl_snapshot_live *s, int timeout_ms)
{
	struct timespec until;
	int e = 0;

	if (!s)
		return fl__einval(__func__, "s is NULL");
	if (getpid() != s->pid)
		return -ECHILD;
	if (timeout_ms >= 0)
		until = fl__abstime_in(CLOCK_MONOTONIC, (uint64_t)timeout_ms * 1000000u);
	pthread_mutex_lock(&s->lock);
	while (s->running && !e) {
		if (timeout_ms < 0)
			pthread_cond_wait(&s->cv, &s->lock);
		else
			e = -pthread_cond_timedwait(&s->cv, &s->lock, &until);
	}
	if (!s->running)
		e = s->error;
	pthread_mutex_unlock(&s->lock);
	return e;
}

FL_API int fl_snapshot_live_stats(const struct fl_snapshot_live *cs,
				  struct fl_snapshot_live_stats *out)
{
	struct fl_snapshot_live *s = (struct fl_snapshot_live *)cs;
	struct fl_snapshot_live_stats st;

	if (!s || !out)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret");
	st = (struct fl_snapshot_live_stats){
		.snapshots = atomic_load(&s->snapshots),
		.pause_ns = atomic_load(&s->pause_ns),
		.duration_ns = atomic_load(&s->duration_ns),
		.pages = atomic_load(&s->st[SS_PAGES]),
		.pages_written = atomic_load(&s->st[SS_WRITTEN]),
		.pages_store = atomic_load(&s->st[SS_STORE]),
		.pages_zero = atomic_load(&s->st[SS_ZERO]),
		.pages_discarded = atomic_load(&s->st[SS_DISCARDED]),
		.pages_unmapped = atomic_load(&s->st[SS_UNMAPPED]),
		.wp_faults = atomic_load(&s->wp_faults),
		.write_wait_max_ns = atomic_load(&s->wait_max),
	};
	return fl__stats_out(out, &st, sizeof(st), __func__);
}

FL_API void fl_snapshot_live_destroy(struct fl_snapshot_live *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	/* A forked child shares the descriptors: touching them would hurt the parent. */
	if (getpid() != s->pid)
		return;
	fl_snapshot_live_wait(s, -1);
	join_writer(s);
	for (size_t i = 0; s->r && i < s->n; i++)
		if (s->r[i].attached)
			fl__region_wp_installs(s->r[i].region, false);
	/*
	 * Unprotecting wakes every write still waiting. While the fl-snap
	 * thread and the hook still run: they read the events that make the
	 * kernel refuse it meanwhile.
	 */
	for (size_t i = 0; s->r && i < s->n; i++)
		if (s->r[i].registered)
			unprotect_all(&s->r[i]);
	for (size_t i = 0; s->r && i < s->n; i++)
		if (s->r[i].attached)
			fl__region_wp_detach(s->r[i].region);
	if (s->thread_started) {
		if (write(s->stop_efd, &one, sizeof(one)) < 0)
			(void)0;
		pthread_join(s->thread, NULL);
	}
	for (size_t i = 0; s->r && i < s->n; i++) {
		struct lv_range *r = &s->r[i];

		/* The pager's modes alone. */
		if (r->registered) {
			if (r->region)
				fl_uffd_register(r->u, (void *)range_base(r), r->len, r->modes, NULL);
			else
				fl_uffd_unregister(r->u, (void *)range_base(r), r->len);
		}
		free(r->st);
		free(r->pf);
	}
	fl_uffd_close(s->u);
	free(s->r);
	free(s->q);
	free(s->wbuf);
	free(s->fbuf);
	fl__safe_close(s->pm_fd);
	fl__safe_close(s->q_efd);
	fl__safe_close(s->stop_efd);
	pthread_rwlock_destroy(&s->instant);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->qlock);
	pthread_cond_destroy(&s->cv);
	free(s);
}
