/* SPDX-License-Identifier: MIT */
/* Memory budgets: resident accounting, eviction queues and the eviction thread. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "pager-int.h"

/*
 * How it fits together (faultline(7), "Budgets", says it for users):
 *
 * - Every page that becomes present gets PG_RES in its state byte and is
 *   charged to the budget (one atomic add per run installed; pages admitted
 *   by fl__budget_admit were reserved before the store read). Every page
 *   that stops being present (evicted, discarded by the program, unmapped,
 *   released after a failed install) loses PG_RES and is uncharged. So the
 *   charge is exact without a lock, also in SIGBUS handlers.
 * - A page that becomes resident is pushed on a queue of the budget (a
 *   bounded lock-free ring of (member slot, generation, page) entries): FIFO
 *   has one, 2Q a probation and a protected one. Entries go stale (the page
 *   left meanwhile); the eviction thread skips those. A page whose push
 *   found the ring full is found by a sweep over the members instead.
 * - The eviction thread of the budget wakes when the charge passes the high
 *   watermark and evicts a batch at a time until it is under the low one:
 *   it claims each victim (PG_PRESENT -> PG_BUSY by CAS: a page someone
 *   else holds is skipped), drops the claimed runs from memory without any
 *   userfaultfd event (see drop_run), sets them PG_ABSENT and wakes whoever
 *   faulted on them meanwhile. Faults on other pages never wait for it.
 * - A fault that would take the charge past bytes + batch waits until an
 *   eviction step makes room (or eviction is stuck: nothing evictable).
 */

#define BQ_SLOTS 1024			/* regions in one budget at once */
#define BQ_MIN 1024			/* smallest ring */
#define BQ_FIRST 4096			/* ring of pages advised DONTNEED */
#define BQ_PG_BITS 40
#define BQ_GEN_BITS 8

enum { Q_PROBATION = 0, Q_PROTECTED = 1, Q_FIRST = 2, Q_COUNT = 3 };

struct bq_cell {
	_Atomic size_t seq;
	_Atomic uint64_t v;
};

/* A bounded multi-producer multi-consumer ring (Vyukov's design); async-signal-safe. */
struct bqueue {
	_Atomic size_t head __attribute__((aligned(64)));
	_Atomic size_t tail __attribute__((aligned(64)));
	size_t mask;
	struct bq_cell *cell;
	size_t map_len;
};

/* A victim claimed for one eviction step. */
struct victim {
	struct fl_region *r;
	size_t pg;
};

struct fl_budget {
	pid_t pid;
	uint64_t bytes, high, low, cap;
	size_t batch;
	enum fl_evict_policy policy;

	_Atomic int64_t charge __attribute__((aligned(64)));	/* resident + reserved bytes */
	_Atomic int64_t reserved;
	_Atomic int64_t hot;		/* bytes of PG_HOT pages (2Q's protected queue) */
	_Atomic uint64_t clock;		/* 4 KiB units evicted so far: the ghost clock */
	_Atomic uint64_t resident_max;
	_Atomic uint64_t evicted, written_back, refaults, passes, waits, skipped;

	struct bqueue q[Q_COUNT];

	pthread_mutex_t lock;		/* members; held for a whole eviction step */
	struct fl_region *slot[BQ_SLOTS];
	uint8_t gen[BQ_SLOTS];
	_Atomic unsigned int nregions;
	unsigned int hand_slot;		/* the sweep's position */
	size_t hand_pg;

	pthread_t thread;
	bool started;
	_Atomic bool stop;
	_Atomic bool kicked;
	_Atomic uint32_t kick_seq;	/* futex: the eviction thread waits for a kick */
	_Atomic uint32_t room_seq;	/* futex: faults wait for room */
	_Atomic int room_waiters;
	_Atomic bool stuck;		/* the last step found nothing to evict */

	struct victim *victims;		/* one step's, batch / 4 KiB entries */
	size_t nvictims_max;
	/*
	 * UFFDIO_MOVE destination. The kernel moves only into a range
	 * registered with the same userfaultfd: registered (MISSING) with the
	 * uffd of the pager being evicted from, filled from scratch_used on,
	 * then unregistered and discarded (which sends no event once
	 * unregistered). Nothing ever touches it.
	 */
	uint8_t *scratch;
	size_t scratch_len, scratch_used;
	struct fl_uffd *scratch_uffd;	/* registered with, or NULL */
};

static uint64_t u64min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------------------------ rings */

static int bq_init(struct bqueue *q, size_t want)
{
	size_t n = BQ_MIN;
	void *m;

	while (n < want)
		n <<= 1;
	q->map_len = n * sizeof(struct bq_cell);
	m = mmap(NULL, q->map_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return -ENOMEM;
	madvise(m, q->map_len, MADV_DONTFORK);
	q->cell = m;
	q->mask = n - 1;
	for (size_t i = 0; i < n; i++)
		atomic_init(&q->cell[i].seq, i);
	atomic_init(&q->head, 0);
	atomic_init(&q->tail, 0);
	return 0;
}

static void bq_free(struct bqueue *q)
{
	if (q->cell)
		munmap(q->cell, q->map_len);
	q->cell = NULL;
}

static bool bq_push(struct bqueue *q, uint64_t v)
{
	size_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);

	if (!q->cell)
		return false;
	for (;;) {
		struct bq_cell *c = &q->cell[pos & q->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)pos;

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				atomic_store_explicit(&c->v, v, memory_order_relaxed);
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false;	/* full: the sweep finds the page */
		} else {
			pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
		}
	}
}

static bool bq_pop(struct bqueue *q, uint64_t *ret)
{
	size_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);

	if (!q->cell)
		return false;
	for (;;) {
		struct bq_cell *c = &q->cell[pos & q->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				*ret = atomic_load_explicit(&c->v, memory_order_relaxed);
				atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false;	/* empty, or a push not finished yet */
		} else {
			pos = atomic_load_explicit(&q->head, memory_order_relaxed);
		}
	}
}

static uint64_t bq_entry(const struct fl_region *r, size_t pg)
{
	return (uint64_t)r->bslot << (BQ_PG_BITS + BQ_GEN_BITS) |
	       (uint64_t)r->bgen << BQ_PG_BITS | (uint64_t)pg;
}

/* ------------------------------------------------------------ accounting */

static void kick(struct fl_budget *b)
{
	if (!atomic_exchange_explicit(&b->kicked, true, memory_order_acq_rel)) {
		atomic_fetch_add(&b->kick_seq, 1);
		fl__wait_seq_wake(&b->kick_seq);
	}
}

static void note_max(struct fl_budget *b, int64_t now)
{
	uint64_t m = atomic_load_explicit(&b->resident_max, memory_order_relaxed);

	while (now > 0 && (uint64_t)now > m &&
	       !atomic_compare_exchange_weak_explicit(&b->resident_max, &m, (uint64_t)now,
						      memory_order_relaxed, memory_order_relaxed))
		;
}

static void stat_add(struct fl_region *r, enum pg_stat s, uint64_t v)
{
	fl__stat_add(r, s, v);
}

uint8_t fl__budget_page_in(struct pg_ctx *c, struct fl_region *r, size_t pg)
{
	struct fl_budget *b = r->budget;
	uint32_t at, now;

	(void)c;
	if (!b || !r->evict_at)
		return 0;
	at = atomic_exchange_explicit(&r->evict_at[pg], 0, memory_order_relaxed);
	if (!at)
		return 0;
	stat_add(r, ST_REFAULTS, 1);
	atomic_fetch_add_explicit(&b->refaults, r->ps, memory_order_relaxed);
	if (b->policy != FL_EVICT_2Q)
		return 0;
	/* Evicted within about one budget's worth of evictions: it is wanted again soon. */
	now = (uint32_t)atomic_load_explicit(&b->clock, memory_order_relaxed);
	return now - at <= (uint32_t)(b->bytes >> 12) ? PG_HOT : 0;
}

void fl__budget_queue(struct fl_region *r, size_t pg, uint8_t hot)
{
	struct fl_budget *b = r->budget;

	if (!b)
		return;
	if (hot)
		atomic_fetch_add_explicit(&b->hot, (int64_t)r->ps, memory_order_relaxed);
	if (!r->evictable)
		return;
	bq_push(&b->q[hot ? Q_PROTECTED : Q_PROBATION], bq_entry(r, pg));
}

void fl__budget_in(struct pg_ctx *c, struct fl_region *r, size_t n)
{
	struct fl_budget *b = r->budget;
	uint64_t bytes = (uint64_t)n << r->shift, take = 0;
	int64_t now;

	stat_add(r, ST_RES_IN, n);
	if (!b)
		return;
	if (c && c->rb == b) {
		take = u64min(c->resv, bytes);
		c->resv -= take;
		atomic_fetch_sub_explicit(&b->reserved, (int64_t)take, memory_order_relaxed);
	}
	now = atomic_fetch_add_explicit(&b->charge, (int64_t)(bytes - take), memory_order_relaxed) +
	      (int64_t)(bytes - take);
	note_max(b, now - atomic_load_explicit(&b->reserved, memory_order_relaxed));
	if (now > (int64_t)b->high)
		kick(b);
}

void fl__budget_out(struct fl_region *r, size_t n, size_t nhot)
{
	struct fl_budget *b = r->budget;

	stat_add(r, ST_RES_OUT, n);
	if (!b)
		return;
	atomic_fetch_sub_explicit(&b->charge, (int64_t)n << r->shift, memory_order_relaxed);
	if (nhot)
		atomic_fetch_sub_explicit(&b->hot, (int64_t)nhot << r->shift, memory_order_relaxed);
}

static void wake_room(struct fl_budget *b)
{
	/*
	 * A read-modify-write, not a load: it orders the caller's uncharge
	 * before it (pairing with the waiter's increment of room_waiters, so
	 * one of the two sees the other), where a fence would do the same but
	 * ThreadSanitizer cannot follow fences.
	 */
	if (atomic_fetch_add(&b->room_waiters, 0)) {
		atomic_fetch_add(&b->room_seq, 1);
		fl__wait_seq_wake(&b->room_seq);
	}
}

size_t fl__budget_admit(struct pg_ctx *c, struct fl_region *r, size_t want)
{
	struct fl_budget *b = r->budget;
	bool waited = false;

	if (!b || !want)
		return want ? want : 1;
	if (c->rb && c->rb != b)
		fl__budget_unreserve(c);
	for (;;) {
		int64_t cur = atomic_load_explicit(&b->charge, memory_order_relaxed);
		int64_t room = (int64_t)b->cap - cur;
		uint64_t n;

		if (room >= (int64_t)r->ps || atomic_load(&b->stuck) || atomic_load(&b->stop) ||
		    atomic_load(&r->removing) || atomic_load(&r->pager->dead)) {
			/* Stuck (nothing evictable) or going away: let one page through. */
			n = room >= (int64_t)r->ps ? u64min(want, (uint64_t)room >> r->shift) : 1;
			if (!atomic_compare_exchange_weak_explicit(&b->charge, &cur,
								   cur + (int64_t)(n << r->shift),
								   memory_order_relaxed,
								   memory_order_relaxed))
				continue;
			atomic_fetch_add_explicit(&b->reserved, (int64_t)(n << r->shift),
						  memory_order_relaxed);
			c->rb = b;
			c->resv += n << r->shift;
			if (cur + (int64_t)(n << r->shift) > (int64_t)b->high)
				kick(b);
			return (size_t)n;
		}
		/* Full: wait for an eviction step (each one wakes the waiters). */
		if (!waited)
			atomic_fetch_add_explicit(&b->waits, 1, memory_order_relaxed);
		waited = true;
		kick(b);
		atomic_fetch_add(&b->room_waiters, 1);
		{
			uint32_t seq = atomic_load(&b->room_seq);

			if (atomic_load_explicit(&b->charge, memory_order_relaxed) +
				    (int64_t)r->ps > (int64_t)b->cap &&
			    !atomic_load(&b->stuck) && !atomic_load(&b->stop))
				fl__wait_seq(&b->room_seq, seq, 20 * 1000 * 1000);
		}
		atomic_fetch_sub(&b->room_waiters, 1);
	}
}

void fl__budget_unreserve(struct pg_ctx *c)
{
	struct fl_budget *b = c->rb;

	if (!b)
		return;
	if (c->resv) {
		atomic_fetch_sub_explicit(&b->charge, (int64_t)c->resv, memory_order_relaxed);
		atomic_fetch_sub_explicit(&b->reserved, (int64_t)c->resv, memory_order_relaxed);
		c->resv = 0;
		wake_room(b);
	}
	c->rb = NULL;
}

/* --------------------------------------------------------------- eviction */

static uint8_t *page_addr(struct fl_region *r, size_t pg)
{
	return (uint8_t *)atomic_load_explicit(&r->base, memory_order_relaxed) + (pg << r->shift);
}

/* May eviction take pages of @r now? Not while a live snapshot watches it. */
static bool region_open(struct fl_region *r)
{
	return r->evictable && !atomic_load(&r->removing) && !atomic_load(&r->gone) &&
	       !atomic_load(&r->pager->dead) && !atomic_load(&r->wp_fn) &&
	       (!atomic_load(&r->wp) || r->track_dirty || r->on_wp);
}

/* Claim page @pg of @r for eviction: PRESENT and counted, and nobody else's. */
static bool claim(struct fl_region *r, size_t pg, int q)
{
	uint8_t s = atomic_load_explicit(&r->state[pg], memory_order_acquire);

	if ((s & PG_STATE) != PG_PRESENT || !(s & PG_RES) || (s & PG_WAITED))
		return false;
	/* A stale entry of the other 2Q queue (the page came back since). */
	if ((q == Q_PROBATION && (s & PG_HOT)) || (q == Q_PROTECTED && !(s & PG_HOT)))
		return false;
	return atomic_compare_exchange_strong(&r->state[pg], &s,
					      (uint8_t)((s & ~PG_STATE) | PG_BUSY));
}

/* Give claimed pages [pg, pg+n) back as they were (present), waking anyone who faulted. */
static void unclaim(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n, bool requeue)
{
	uint8_t seen = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t s = atomic_load(&r->state[pg + i]), to;

		do {
			/* Unmapped meanwhile (the UNMAP event took it off the budget): stays so. */
			if ((s & PG_STATE) == PG_GONE)
				break;
			to = (uint8_t)((s & ~(PG_STATE | PG_WAITED)) | PG_PRESENT);
		} while (!atomic_compare_exchange_weak(&r->state[pg + i], &s, to));
		seen |= s;
		if ((s & PG_STATE) == PG_GONE)
			continue;
		if (requeue)
			bq_push(&b->q[(s & PG_HOT) ? Q_PROTECTED : Q_PROBATION], bq_entry(r, pg + i));
	}
	if (seen & PG_WAITED)
		fl_uffd_wake(r->pager->uffd, page_addr(r, pg), n << r->shift);
	fl__wake_waiters(r);
}

/* Free what was moved into the scratch: unregister it first (a discard there would be an event). */
static void scratch_flush(struct fl_budget *b)
{
	if (!b->scratch_uffd)
		return;
	fl_uffd_unregister(b->scratch_uffd, b->scratch, b->scratch_len);
	if (b->scratch_used)
		madvise(b->scratch, b->scratch_used, MADV_DONTNEED);
	b->scratch_uffd = NULL;
	b->scratch_used = 0;
}

/*
 * Drop claimed pages [pg, pg+n) of private anonymous @r from memory without
 * the pager taking it for the program's own discard (shared memory: see
 * drop_shared). Returns the pages dropped from @pg on (the rest is still
 * mapped).
 *  - Pager asking for REMOVE events (THREADS):
 *    MADV_DONTNEED would send one (and block until read); UFFDIO_MOVE the
 *    pages out into scratch memory instead, then discard the scratch.
 *  - Otherwise (SIGBUS, LOOP): MADV_DONTNEED.
 */
static size_t drop_run(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n)
{
	struct fl_pager *p = r->pager;
	size_t len = n << r->shift, moved = 0;
	int e;

	if (!p->gate) {
		if (madvise(page_addr(r, pg), len, MADV_DONTNEED) < 0) {
			fl__warn("budget: MADV_DONTNEED of %zu bytes: %s", len, strerror(errno));
			return 0;
		}
		return n;
	}
	if (b->scratch_uffd != p->uffd || b->scratch_used + len > b->scratch_len)
		scratch_flush(b);
	if (!b->scratch_uffd) {
		uint32_t ioctls = 0;

		e = fl_uffd_register(p->uffd, b->scratch, b->scratch_len, FL_REGISTER_MISSING,
				     &ioctls);
		if (e < 0) {
			fl__warn("budget: registering the eviction scratch: %s", strerror(-e));
			return 0;
		}
		b->scratch_uffd = p->uffd;
	}
	e = fl_uffd_move(p->uffd, b->scratch + b->scratch_used, page_addr(r, pg), len,
			 FL_RESOLVE_DONTWAKE | FL_RESOLVE_ALLOW_SRC_HOLES, &moved);
	b->scratch_used += len;
	if (e < 0 && e != -EAGAIN)
		fl__debug("budget: UFFDIO_MOVE out of a region: %s", strerror(-e));
	return moved >> r->shift;
}

/*
 * UFFDIO_POISON of [pg, pg+n) of @r, waiting out a pending event (EAGAIN)
 * for a bounded time. The caller is inside the discard gate
 * (fl__install_enter), which an unread event needs it to leave: it does so
 * around each wait. Returns the pages poisoned from @pg on; when fewer
 * than @n, *@err is the error that stopped it (-errno).
 */
static size_t poison_run(struct fl_region *r, size_t pg, size_t n, int *err)
{
	struct fl_pager *p = r->pager;
	size_t done = 0;
	int e = 0;

	for (unsigned int i = 0; done < n; i++) {
		size_t d = 0;

		e = fl_uffd_poison(p->uffd, page_addr(r, pg + done), (n - done) << r->shift,
				   FL_RESOLVE_DONTWAKE, &d);
		done += d >> r->shift;
		if (e != -EAGAIN || i >= 2000)
			break;
		fl__install_exit(p);
		if (i < 10) {
			sched_yield();
		} else {
			struct timespec ts = { .tv_nsec = 500 * 1000 };

			nanosleep(&ts, NULL);
		}
		fl__install_enter(p);
	}
	*err = e;
	return done;
}

/*
 * The most pages of @r evicted as one run: what the scratch holds, and at
 * most PG_MAX_RUN (settle_dropped() keeps a bitmap of that many on its
 * stack; a batch over 4 MiB makes the scratch longer than that).
 */
static size_t run_max(const struct fl_budget *b, const struct fl_region *r)
{
	size_t k = b->scratch_len >> r->shift;

	return k < PG_MAX_RUN ? k : PG_MAX_RUN;
}

/*
 * Dropped pages [pg, pg+n), n <= run_max(): settle them absent (or as the volatile policy
 * says) and wake. Inside the discard gate, so the PG_ZERO marks looked at
 * here are final until the states are set (no event is applied meanwhile;
 * a later one finds the pages absent or poisoned and marks them itself).
 *
 * A page with PG_ZERO was discarded by the program while eviction held it.
 * Private memory: it reads zeros (never poisoned: the zap after the event
 * would take the poison away and leave a fault nobody resolves). Shared
 * memory: drop_shared() left the pages whose discard had removed them
 * (they were holes) to settle_discarded(); the program's discard of the
 * pages punched here only unmapped memory whose data the store now holds,
 * or came after the punch, where MADV_DONTNEED and MADV_REMOVE cannot be
 * told apart: they read the store's data, never zeros by accident.
 */
static void settle_dropped(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n,
			   bool gated)
{
	uint64_t poisoned[PG_MAX_RUN / 64] = { 0 };
	bool shared = r->mem != FL_MEM_ANON;
	uint32_t at;
	uint8_t seen = 0, to;
	size_t hot = 0, out = 0;

	assert(n <= PG_MAX_RUN);	/* run_max(): the bitmap holds PG_MAX_RUN */

	if (!gated)
		fl__install_enter(r->pager);
	if (r->vol == FL_VOLATILE_SIGBUS) {
		/* Poison the runs without PG_ZERO. */
		for (size_t i = 0; i < n;) {
			size_t e = i, k;
			int err;

			while (e < n && !(atomic_load(&r->state[pg + e]) & PG_ZERO))
				e++;
			if (e == i) {
				i++;
				continue;
			}
			k = poison_run(r, pg + i, e - i, &err);
			if (k)
				fl__bitmap_set_range(poisoned, i, k);
			if (k < e - i)
				fl__warn("budget: poisoning evicted pages of a volatile region: %s; "
					 "%zu of %zu read as zeros", strerror(err < 0 ? -err : EIO),
					 e - i - k, e - i);
			i = e;
		}
	}
	at = (uint32_t)atomic_fetch_add_explicit(&b->clock, (n << r->shift) >> 12,
						 memory_order_relaxed);
	if (!at)
		at = 1;
	for (size_t i = 0; i < n; i++) {
		uint8_t s = atomic_load(&r->state[pg + i]);

		atomic_store_explicit(&r->evict_at[pg + i], at, memory_order_relaxed);
		do {
			/*
			 * Unmapped meanwhile: the UNMAP event took it off the budget
			 * already; it stays gone, and is not counted twice.
			 */
			if ((s & PG_STATE) == PG_GONE)
				break;
			/*
			 * A discard applied while poison_run() waited outside the
			 * gate: its zap comes after and takes the poison away.
			 */
			if (fl__bit_test(poisoned, i) && !(s & PG_ZERO))
				to = PG_POISONED | PG_VOLD;
			else if (r->vol == FL_VOLATILE_ZERO || r->vol == FL_VOLATILE_SIGBUS)
				to = PG_ABSENT | PG_ZERO;
			else if ((s & PG_ZERO) && !shared)
				to = PG_ABSENT | PG_ZERO;
			else
				to = PG_ABSENT;
		} while (!atomic_compare_exchange_weak(&r->state[pg + i], &s, to));
		seen |= s;
		if ((s & PG_STATE) == PG_GONE)
			continue;
		out++;
		hot += (s & PG_HOT) != 0;
	}
	if (!gated)
		fl__install_exit(r->pager);
	if (out)
		fl__budget_out(r, out, hot);
	stat_add(r, ST_EVICTED, out);
	atomic_fetch_add_explicit(&b->evicted, (uint64_t)out << r->shift, memory_order_relaxed);
	if (seen & PG_WAITED)
		fl_uffd_wake(r->pager->uffd, page_addr(r, pg), n << r->shift);
	fl__wake_waiters(r);
}

/*
 * Claimed pages [pg, pg+n) of a shared memory region that the program
 * removed while eviction held them (MADV_REMOVE punched them out of the
 * memfd): nothing to drop, and zeros is what they read, as without a budget.
 */
static void settle_discarded(struct fl_region *r, size_t pg, size_t n)
{
	uint8_t seen = 0;
	size_t hot = 0, out = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t s = atomic_load(&r->state[pg + i]);

		do {
			if ((s & PG_STATE) == PG_GONE)
				break;
		} while (!atomic_compare_exchange_weak(&r->state[pg + i], &s, PG_ABSENT | PG_ZERO));
		seen |= s;
		if ((s & PG_STATE) == PG_GONE || !(s & PG_RES))
			continue;
		out++;
		hot += (s & PG_HOT) != 0;
	}
	if (out)
		fl__budget_out(r, out, hot);
	if (seen & PG_WAITED)
		fl_uffd_wake(r->pager->uffd, page_addr(r, pg), n << r->shift);
	fl__wake_waiters(r);
}

/* Whether the memfd of @r holds page @pg (false: a hole). */
static bool memfd_has(struct fl_region *r, size_t pg)
{
	off_t off = (off_t)(r->memfd_off + ((uint64_t)pg << r->shift));
	off_t d = lseek(r->memfd, off, SEEK_DATA);

	/* A file system without SEEK_DATA (hugetlbfs) says data: the safe answer. */
	return d == off || (d < 0 && errno != ENXIO);
}

/*
 * Shared memory (memfd, hugetlbfs): evict claimed pages [pg, pg+n) of @r
 * by punching them out of the memfd (no userfaultfd event; the next access
 * is a missing fault), and settle them. The program may have discarded
 * some meanwhile (PG_ZERO: a REMOVE event), which for shared memory means
 * MADV_DONTNEED (the page cache keeps the data) or MADV_REMOVE (it does
 * not): inside the discard gate, so no event is applied meanwhile, a page
 * marked so that is a hole in the memfd was removed and reads zeros; any
 * other is punched, and reads the store's copy. Returns the bytes evicted.
 */
static uint64_t drop_shared(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n)
{
	uint64_t done = 0;

	fl__install_enter(r->pager);
	for (size_t i = 0; i < n;) {
		bool removed = (atomic_load(&r->state[pg + i]) & PG_ZERO) && !memfd_has(r, pg + i);
		size_t e = i + 1;

		while (e < n && ((atomic_load(&r->state[pg + e]) & PG_ZERO) &&
				 !memfd_has(r, pg + e)) == removed)
			e++;
		if (removed) {
			settle_discarded(r, pg + i, e - i);
		} else if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				     (off_t)(r->memfd_off + ((uint64_t)(pg + i) << r->shift)),
				     (off_t)((e - i) << r->shift)) < 0) {
			fl__warn("budget: punching %zu bytes out of a region's memfd: %s",
				 (e - i) << r->shift, strerror(errno));
			atomic_fetch_add_explicit(&b->skipped, e - i, memory_order_relaxed);
			unclaim(b, r, pg + i, e - i, true);
		} else {
			settle_dropped(b, r, pg + i, e - i, true);
			done += (uint64_t)(e - i) << r->shift;
		}
		i = e;
	}
	fl__install_exit(r->pager);
	return done;
}

static uint64_t drop_settle(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n)
{
	size_t d;

	if (r->mem != FL_MEM_ANON)
		return drop_shared(b, r, pg, n);
	d = drop_run(b, r, pg, n);
	if (d)
		settle_dropped(b, r, pg, d, false);
	if (d < n) {
		atomic_fetch_add_explicit(&b->skipped, n - d, memory_order_relaxed);
		unclaim(b, r, pg + d, n - d, true);
	}
	return (uint64_t)d << r->shift;
}

/*
 * A region that tracks dirty pages (dirty.c): write the dirty ones of the
 * claimed run back first, then drop the pages that are clean; those the
 * store failed to write stay (present, still dirty).
 */
static uint64_t evict_dirty(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n)
{
	uint64_t bits[8], done = 0;

	for (size_t i = 0; i < n;) {
		size_t k = n - i < 512 ? n - i : 512, written = 0;

		memset(bits, 0, sizeof(bits));
		fl__bitmap_set_range(bits, 0, k);
		fl__dirty_flush(r, pg + i, k, bits, &written);
		atomic_fetch_add_explicit(&b->written_back, (uint64_t)written << r->shift,
					  memory_order_relaxed);
		for (size_t j = 0; j < k;) {
			bool keep = !fl__bit_test(bits, j);
			size_t e = j + 1;

			while (e < k && !fl__bit_test(bits, e) == keep)
				e++;
			if (keep) {
				atomic_fetch_add_explicit(&b->skipped, e - j, memory_order_relaxed);
				unclaim(b, r, pg + i + j, e - j, true);
			} else {
				done += drop_settle(b, r, pg + i + j, e - j);
			}
			j = e;
		}
		i += k;
	}
	return done;
}

/* Evict the claimed run [pg, pg+n) of @r. Returns the bytes evicted. */
static uint64_t evict_run(struct fl_budget *b, struct fl_region *r, size_t pg, size_t n)
{
	if (!region_open(r)) {
		atomic_fetch_add_explicit(&b->skipped, n, memory_order_relaxed);
		unclaim(b, r, pg, n, false);
		return 0;
	}
	if (r->track_dirty)
		return evict_dirty(b, r, pg, n);
	return drop_settle(b, r, pg, n);
}

static int victim_cmp(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;

	if (x->r != y->r)
		return (uintptr_t)x->r < (uintptr_t)y->r ? -1 : 1;
	return x->pg < y->pg ? -1 : x->pg > y->pg;
}

/* The queue to take the next victim from. */
static int pick_queue(struct fl_budget *b, bool *empty)
{
	int64_t charge, hot;

	if (!empty[Q_FIRST])
		return Q_FIRST;
	if (b->policy != FL_EVICT_2Q)
		return empty[Q_PROBATION] ? -1 : Q_PROBATION;
	/* 2Q: the protected queue gives pages only while probation holds < 1/4 of the rest. */
	charge = atomic_load_explicit(&b->charge, memory_order_relaxed) -
		 atomic_load_explicit(&b->reserved, memory_order_relaxed);
	hot = atomic_load_explicit(&b->hot, memory_order_relaxed);
	if (!empty[Q_PROBATION] && (empty[Q_PROTECTED] || (charge - hot) * 4 > charge))
		return Q_PROBATION;
	if (!empty[Q_PROTECTED])
		return Q_PROTECTED;
	return empty[Q_PROBATION] ? -1 : Q_PROBATION;
}

/* Sweep the members for resident pages no queue holds; up to @want bytes. */
static uint64_t sweep(struct fl_budget *b, size_t *nv, uint64_t want)
{
	uint64_t got = 0;
	size_t scanned = 0, limit = 0;

	for (unsigned int i = 0; i < BQ_SLOTS; i++)
		if (b->slot[i])
			limit += b->slot[i]->npages;
	while (got < want && scanned < limit && *nv < b->nvictims_max) {
		struct fl_region *r = b->slot[b->hand_slot % BQ_SLOTS];

		if (!r || b->hand_pg >= r->npages || !region_open(r)) {
			if (r && b->hand_pg < r->npages)
				scanned += r->npages - b->hand_pg;
			b->hand_slot = (b->hand_slot + 1) % BQ_SLOTS;
			b->hand_pg = 0;
			continue;
		}
		if (claim(r, b->hand_pg, -1)) {
			b->victims[(*nv)++] = (struct victim){ r, b->hand_pg };
			got += r->ps;
		}
		b->hand_pg++;
		scanned++;
	}
	return got;
}

/* One eviction step: up to one batch. Returns the bytes evicted. Caller holds b->lock. */
static uint64_t evict_step(struct fl_budget *b)
{
	int64_t over = atomic_load(&b->charge) - atomic_load(&b->reserved) - (int64_t)b->low;
	uint64_t want = over > 0 ? u64min((uint64_t)over, b->batch) : b->batch, got = 0, done = 0;
	bool empty[Q_COUNT] = { false, false, false };
	size_t nv = 0;

	if (b->policy != FL_EVICT_2Q)
		empty[Q_PROTECTED] = true;
	while (got < want && nv < b->nvictims_max) {
		int q = pick_queue(b, empty);
		uint64_t v;
		struct fl_region *r;
		unsigned int sl;
		size_t pg;

		if (q < 0)
			break;
		if (!bq_pop(&b->q[q], &v)) {
			empty[q] = true;
			continue;
		}
		sl = (unsigned int)(v >> (BQ_PG_BITS + BQ_GEN_BITS));
		pg = (size_t)(v & ((1ull << BQ_PG_BITS) - 1));
		r = sl < BQ_SLOTS ? b->slot[sl] : NULL;
		if (!r || b->gen[sl] != (uint8_t)(v >> BQ_PG_BITS) || pg >= r->npages ||
		    !region_open(r))
			continue;
		if (!claim(r, pg, q == Q_FIRST ? -1 : q))
			continue;
		b->victims[nv++] = (struct victim){ r, pg };
		got += r->ps;
	}
	if (got < want)
		got += sweep(b, &nv, want - got);
	if (!nv)
		return 0;
	qsort(b->victims, nv, sizeof(*b->victims), victim_cmp);
	for (size_t i = 0; i < nv;) {
		size_t j = i + 1;

		while (j < nv && b->victims[j].r == b->victims[i].r &&
		       b->victims[j].pg == b->victims[j - 1].pg + 1 &&
		       j - i < run_max(b, b->victims[i].r))
			j++;
		done += evict_run(b, b->victims[i].r, b->victims[i].pg, j - i);
		i = j;
	}
	scratch_flush(b);
	return done;
}

static void *evict_main(void *arg)
{
	struct fl_budget *b = arg;

	while (!atomic_load(&b->stop)) {
		uint32_t seq = atomic_load(&b->kick_seq);
		uint64_t got;

		atomic_store(&b->kicked, false);
		while (!atomic_load(&b->stop) &&
		       atomic_load(&b->charge) - atomic_load(&b->reserved) > (int64_t)b->low) {
			pthread_mutex_lock(&b->lock);
			got = evict_step(b);
			pthread_mutex_unlock(&b->lock);
			atomic_fetch_add_explicit(&b->passes, 1, memory_order_relaxed);
			/* Nothing evictable: faults stop waiting for room until a step finds some. */
			atomic_store(&b->stuck, got == 0);
			wake_room(b);
			if (!got)
				break;
		}
		if (atomic_load(&b->charge) - atomic_load(&b->reserved) <= (int64_t)b->low)
			atomic_store(&b->stuck, false);
		wake_room(b);
		if (atomic_load(&b->stuck)) {
			/* Try again in a while, not at every install's kick. */
			struct timespec ts = { .tv_nsec = 10 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			continue;
		}
		/* Bounded only as a safety net for a missed kick; kicks come from fl__budget_in. */
		if (seq == atomic_load(&b->kick_seq) && !atomic_load(&b->kicked))
			fl__wait_seq(&b->kick_seq, seq, 100 * 1000 * 1000);
	}
	return NULL;
}

/* ---------------------------------------------------------------- members */

int fl__budget_join(struct fl_region *r, struct fl_budget *b, enum fl_volatile vol)
{
	struct fl_pager *p = r->pager;
	unsigned int sl;

	if (getpid() != b->pid)
		return -ECHILD;
	if (!p->own_memory)
		return fl__einval("fl_region_add", "a budget needs memory of this process (the "
				  "pager serves another process's userfaultfd)");
	if (r->mem != FL_MEM_ANON && r->memfd < 0)
		return fl__einval("fl_region_add", "a budget on %s memory needs its memfd",
				  fl_mem_type_name(r->mem));
	if (r->mem == FL_MEM_ANON && p->gate && !(p->feats & FL_FEAT_MOVE)) {
		/* Delete once 6.8 is the oldest kernel supported. */
		fl__err("pager: a budget on private anonymous memory in THREADS mode needs "
			"UFFDIO_MOVE (Linux 6.8) to drop pages unseen");
		return -EOPNOTSUPP;
	}
	if (vol == FL_VOLATILE_SIGBUS && !(p->feats & FL_FEAT_POISON)) {
		fl__err("pager: FL_VOLATILE_SIGBUS needs UFFDIO_POISON (Linux 6.6)");
		return -EOPNOTSUPP;
	}
	if (r->ps > b->cap / 2)
		return fl__einval("fl_region_add", "page size %zu is more than half the budget",
				  r->ps);
	r->evict_at = mmap(NULL, r->npages * sizeof(*r->evict_at), PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->evict_at == MAP_FAILED) {
		r->evict_at = NULL;
		return -ENOMEM;
	}
	madvise((void *)r->evict_at, r->npages * sizeof(*r->evict_at), MADV_DONTFORK);
	r->vol = vol;
	/*
	 * Pages may be dropped only where nothing the program wrote can be
	 * lost that it expects kept: a store that cannot be written holds every
	 * page's data (writes to such a region are a cache's, see faultline(7)),
	 * and a volatile region lets them go by definition; a region over a
	 * writable store tracks its dirty pages and writes them back first
	 * (dirty.c).
	 */
	r->evictable = vol != FL_VOLATILE_NONE || (fl_store_caps(r->store) & FL_STORE_READONLY) ||
		       r->track_dirty;
	if (!r->evictable)
		fl__warn("pager: a region joins a budget with a writable store and no write-back: "
			 "its pages count against the budget but are never evicted");
	pthread_mutex_lock(&b->lock);
	for (sl = 0; sl < BQ_SLOTS && b->slot[sl]; sl++)
		;
	if (sl == BQ_SLOTS) {
		pthread_mutex_unlock(&b->lock);
		fl__err("pager: a budget holds at most %d regions", BQ_SLOTS);
		return -ENOSPC;
	}
	b->gen[sl]++;
	r->bslot = sl;
	r->bgen = b->gen[sl];
	r->budget = b;
	b->slot[sl] = r;
	b->nregions++;
	pthread_mutex_unlock(&b->lock);
	return 0;
}

void fl__budget_rejoin(struct fl_region *r)
{
	struct fl_budget *b = r->budget;
	unsigned int sl;

	pthread_mutex_lock(&b->lock);
	if (b->slot[r->bslot] == r) {
		pthread_mutex_unlock(&b->lock);
		return;
	}
	for (sl = 0; sl < BQ_SLOTS && b->slot[sl]; sl++)
		;
	if (sl == BQ_SLOTS) {
		pthread_mutex_unlock(&b->lock);
		fl__err("pager: a region that stays could not rejoin its budget (%d regions): "
			"its pages count against it but are never evicted", BQ_SLOTS);
		return;
	}
	b->gen[sl]++;
	r->bslot = sl;
	r->bgen = b->gen[sl];
	b->slot[sl] = r;
	b->nregions++;
	pthread_mutex_unlock(&b->lock);
}

void fl__budget_leave(struct fl_region *r)
{
	struct fl_budget *b = r->budget;

	/* Waits for an eviction step under way, which may hold pages of @r. */
	pthread_mutex_lock(&b->lock);
	if (b->slot[r->bslot] == r) {
		b->slot[r->bslot] = NULL;
		b->gen[r->bslot]++;
		b->nregions--;
	}
	pthread_mutex_unlock(&b->lock);
}

void fl__budget_settle(struct fl_region *r)
{
	size_t n = 0, hot = 0;

	for (size_t pg = 0; pg < r->npages && r->state; pg++) {
		uint8_t s = atomic_fetch_and(&r->state[pg], (uint8_t)~(PG_RES | PG_HOT));

		if (s & PG_RES) {
			n++;
			hot += (s & PG_HOT) != 0;
		}
	}
	if (n)
		fl__budget_out(r, n, hot);
	wake_room(r->budget);
}

/* ----------------------------------------------------------------- advice */

int fl__budget_advise(struct fl_region *r, size_t pg, size_t n, int advice)
{
	struct fl_budget *b = r->budget;
	int first = 0;

	if (advice == FL_ADVISE_WILLNEED) {
		/* FL_VOLATILE_SIGBUS: the pages eviction poisoned become zero pages to write. */
		for (size_t i = 0; i < n; i++) {
			uint8_t s = PG_POISONED | PG_VOLD;

			if (!atomic_compare_exchange_strong(&r->state[pg + i], &s, PG_BUSY))
				continue;
			/* Clears the poison marker (in THREADS mode the pager reads the REMOVE). */
			if (madvise(page_addr(r, pg + i), r->ps, MADV_DONTNEED) < 0 && !first)
				first = -errno;
			atomic_store(&r->state[pg + i], PG_ABSENT | PG_ZERO);
			fl__wake_waiters(r);
		}
		return first;
	}
	if (!r->evictable)
		return 0;
	if (r->vol == FL_VOLATILE_NONE) {
		for (size_t i = 0; i < n; i++) {
			uint8_t s = atomic_load(&r->state[pg + i]);

			if ((s & PG_STATE) == PG_PRESENT && (s & PG_RES))
				bq_push(&b->q[Q_FIRST], bq_entry(r, pg + i));
		}
		kick(b);
		return 0;
	}
	/* Volatile: drop now, a run of claimed pages at a time. */
	pthread_mutex_lock(&b->lock);
	for (size_t i = 0; i < n;) {
		size_t k = 0;

		while (i + k < n && k < run_max(b, r) &&
		       region_open(r) && claim(r, pg + i + k, -1))
			k++;
		if (!k) {
			i++;
			continue;
		}
		evict_run(b, r, pg + i, k);
		i += k;
	}
	scratch_flush(b);
	pthread_mutex_unlock(&b->lock);
	wake_room(b);
	return 0;
}

/* ------------------------------------------------------------------ public */

FL_API int fl_budget_create(const struct fl_budget_opts *opts, struct fl_budget **ret)
{
	struct fl_budget_opts o = { .sz = sizeof(o) };
	struct fl_budget *b;
	size_t nring, align = 2u << 20;
	uint8_t *m;
	int e;

	if (!opts || !ret)
		return fl__einval(__func__, "%s is NULL", !opts ? "opts" : "ret");
	e = fl__opts_copy(&o, sizeof(o), opts, __func__);
	if (e < 0)
		return e;
	if (o.bytes < 2 * 4096)
		return fl__einval(__func__, "bytes %llu is less than two pages of 4 KiB",
				  (unsigned long long)o.bytes);
	if ((unsigned int)o.policy > FL_EVICT_2Q)
		return fl__einval(__func__, "unknown eviction policy %d", (int)o.policy);
	if (!o.batch) {
		o.batch = (size_t)(o.bytes / 16) & ~(size_t)4095;
		if (o.batch < 4096)
			o.batch = 4096;
		if (o.batch > (4u << 20))
			o.batch = 4u << 20;
	}
	if (o.batch % 4096 || o.batch > o.bytes / 2)
		return fl__einval(__func__, "batch %zu is not a multiple of 4096 of at most half the "
				  "budget", o.batch);
	if (!o.high && !o.low) {
		o.high = o.bytes - o.batch;
		o.low = o.high > o.batch + 4096 ? o.high - o.batch : 4096;
		if (o.low >= o.high)
			o.low = o.high - 4096 ? o.high - 4096 : 0;
	}
	if (o.low >= o.high || o.high > o.bytes)
		return fl__einval(__func__, "watermarks low %llu, high %llu: need low < high <= bytes "
				  "%llu", (unsigned long long)o.low, (unsigned long long)o.high,
				  (unsigned long long)o.bytes);
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->pid = getpid();
	b->bytes = o.bytes;
	b->high = o.high;
	b->low = o.low;
	b->batch = o.batch;
	b->cap = o.bytes + o.batch;
	b->policy = o.policy;
	pthread_mutex_init(&b->lock, NULL);
	/* Room for every page the cap allows, twice (entries of pages gone linger). */
	nring = (size_t)(b->cap >> 12) * 2;
	e = bq_init(&b->q[Q_PROBATION], nring);
	if (!e && b->policy == FL_EVICT_2Q)
		e = bq_init(&b->q[Q_PROTECTED], nring);
	if (!e)
		e = bq_init(&b->q[Q_FIRST], BQ_FIRST);
	if (e < 0)
		goto fail;
	b->nvictims_max = b->batch >> 12;
	b->victims = calloc(b->nvictims_max, sizeof(*b->victims));
	/* A batch, and at least the largest page (PG_STAGING). */
	b->scratch_len = b->batch > PG_STAGING ? b->batch : PG_STAGING;
	m = mmap(NULL, b->scratch_len + align, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!b->victims || m == MAP_FAILED) {
		e = -ENOMEM;
		goto fail;
	}
	/* Aligned like a huge page, so a whole one moves out as one. */
	b->scratch = (uint8_t *)(((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1));
	if (b->scratch > m)
		munmap(m, (size_t)(b->scratch - m));
	if (b->scratch + b->scratch_len < m + b->scratch_len + align)
		munmap(b->scratch + b->scratch_len,
		       (size_t)(m + b->scratch_len + align - (b->scratch + b->scratch_len)));
	madvise(b->scratch, b->scratch_len, MADV_DONTFORK);
	e = fl__thread_start(&b->thread, NULL, evict_main, b, "fl-evict");
	if (e < 0)
		goto fail;
	b->started = true;
	*ret = b;
	return 0;
fail:
	fl_budget_destroy(b);
	return e;
}

FL_API void fl_budget_destroy(struct fl_budget *b)
{
	if (!b)
		return;
	if (getpid() != b->pid)
		return;
	pthread_mutex_lock(&b->lock);
	if (b->nregions) {
		pthread_mutex_unlock(&b->lock);
		fl__err("fl_budget_destroy: %u regions still use the budget; not destroyed",
			b->nregions);
		return;
	}
	pthread_mutex_unlock(&b->lock);
	if (b->started) {
		atomic_store(&b->stop, true);
		atomic_fetch_add(&b->kick_seq, 1);
		fl__wait_seq_wake(&b->kick_seq);
		pthread_join(b->thread, NULL);
	}
	for (int i = 0; i < Q_COUNT; i++)
		bq_free(&b->q[i]);
	if (b->scratch) {
		scratch_flush(b);
		munmap(b->scratch, b->scratch_len);
	}
	free(b->victims);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

FL_API int fl_budget_stats(const struct fl_budget *b, struct fl_budget_stats *out)
{
	struct fl_budget_stats st;
	struct fl_budget *m = (struct fl_budget *)b;
	int64_t res;

	if (!b || !out)
		return fl__einval(__func__, "%s is NULL", !b ? "b" : "ret");
	if (getpid() != b->pid)
		return -ECHILD;
	/* Between eviction steps, so the regions' counters agree with these. */
	pthread_mutex_lock(&m->lock);
	res = atomic_load(&m->charge) - atomic_load(&m->reserved);
	st = (struct fl_budget_stats){
		.bytes = b->bytes,
		.high = b->high,
		.low = b->low,
		.batch = b->batch,
		.resident = res > 0 ? (uint64_t)res : 0,
		.resident_max = atomic_load(&m->resident_max),
		.evicted = atomic_load(&m->evicted),
		.written_back = atomic_load(&m->written_back),
		.refaults = atomic_load(&m->refaults),
		.passes = atomic_load(&m->passes),
		.waits = atomic_load(&m->waits),
		.skipped = atomic_load(&m->skipped),
		.regions = atomic_load(&m->nregions),
	};
	pthread_mutex_unlock(&m->lock);
	return fl__stats_out(out, &st, sizeof(st), __func__);
}
