/* SPDX-License-Identifier: MIT */
/* The pager: its userfaultfd, handler threads, LOOP dispatch and the events it applies. */

/*
 * How the pieces fit (see also resolve.c, region.c, sigbus.c):
 *
 * - Every page of a region has an atomic state byte: absent, in flight
 *   (PG_BUSY, owned by exactly one resolver), present, poisoned, gone. The
 *   resolver that moves a page from absent to in flight reads the store and
 *   installs; a fault on an in-flight page does nothing (the install wakes
 *   every thread waiting there); a fault on a present page only wakes (or
 *   gets zeros, if the program dropped the page). So N threads faulting one
 *   page cause one store read and one install.
 * - Handler threads (THREADS mode) take turns reading the userfaultfd: one
 *   reader at a time holds the read token just long enough to read every
 *   queued message and apply its events, so a fault is never looked at
 *   before an event read ahead of it. The reader keeps the batch's first
 *   fault and pushes the others to a lock-free backlog that idle threads
 *   drain (kicked through an eventfd). The guarantee: a slow store read
 *   occupies one thread; the others keep reading the userfaultfd and
 *   serving faults, including those read in the same batch. Only when all
 *   N threads sit in slow store reads at once do new faults wait.
 * - Region lookups take no lock: a sorted snapshot of the regions is
 *   published atomically and freed after a grace period; a region counts
 *   its users, and removal waits for them after unpublishing it.
 * - In SIGBUS mode the faulting thread does all of the above itself, inside
 *   the signal handler, with a staging buffer from a preallocated pool.
 * - A discard racing a store read (the discard gate): the kernel lets the
 *   thread in madvise(MADV_DONTNEED) go on to zap as soon as its REMOVE
 *   event is read, and refuses installs (EAGAIN) only while the event is
 *   unread. An install that looked at the page before the event was
 *   applied, and whose ioctl lands after the zap, would bring the store's
 *   data back. So a read takes events in only when no install is between
 *   its look at PG_ZERO and the end of its ioctl, and installs wait while a
 *   read's events are being applied: an install then either sees the
 *   discard (and installs zeros), or lands before the event is read (and
 *   the zap, which comes after, removes it), or meets the unread event
 *   (EAGAIN). It holds for memory of other processes too: no zap of ours
 *   is needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "pager-int.h"

#define DEFAULT_SPIN_US 50
#define SPIN_USEFUL_NS 4000
#define EVENT_FEATS (FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE | \
		     FL_FEAT_EVENT_UNMAP)

/* ------------------------------------------------------------- backlog */

static void bl_init(struct pg_backlog *b)
{
	for (size_t i = 0; i < PG_BACKLOG; i++)
		atomic_init(&b->cell[i].seq, i);
	atomic_init(&b->head, 0);
	atomic_init(&b->tail, 0);
}

static bool bl_push(struct pg_backlog *b, const struct fl_event *ev, uint64_t t0)
{
	size_t pos = atomic_load_explicit(&b->tail, memory_order_relaxed);

	for (;;) {
		struct pg_backlog_cell *c = &b->cell[pos % PG_BACKLOG];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)pos;

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&b->tail, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				c->ev = *ev;
				c->t0 = t0;
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false;
		} else {
			pos = atomic_load_explicit(&b->tail, memory_order_relaxed);
		}
	}
}

static bool bl_pop(struct pg_backlog *b, struct fl_event *ev, uint64_t *t0)
{
	size_t pos = atomic_load_explicit(&b->head, memory_order_relaxed);

	for (;;) {
		struct pg_backlog_cell *c = &b->cell[pos % PG_BACKLOG];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&b->head, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				*ev = c->ev;
				*t0 = c->t0;
				atomic_store_explicit(&c->seq, pos + PG_BACKLOG, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false;
		} else {
			pos = atomic_load_explicit(&b->head, memory_order_relaxed);
		}
	}
}

static bool bl_empty(struct pg_backlog *b)
{
	return atomic_load(&b->head) == atomic_load(&b->tail);
}

/* -------------------------------------------------------------- events */

/* Append @fd to a growing array of descriptors. */
static int fds_push(int **arr, size_t *n, int fd)
{
	int *a = realloc(*arr, (*n + 1) * sizeof(int));

	if (!a)
		return -ENOMEM;
	a[(*n)++] = fd;
	*arr = a;
	return 0;
}

/* EAGAIN poisoning a child: read what the child's descriptor has queued (its own events). */
static int drain_child(void *arg)
{
	struct fl_event ev[16];
	int n = fl_uffd_read_events(arg, ev, 16);

	for (int i = 0; i < n; i++)
		if (ev[i].type == FL_EVENT_FORK)
			close(ev[i].fork.fd);	/* a grandchild: unregistered, see pager.h */
	return n > 0 ? n : 0;
}

static const uint8_t *snap_states(const struct pg_fork_snap *t)
{
	return (const uint8_t *)&t->e[t->n];
}

/*
 * The page states of every region as the FORK event is read, with a use
 * of each region counted (removal waits for it). Called by the reader
 * while the forking thread may still hold the malloc and stdio locks: one
 * mmap, no malloc, no lock, no logging. NULL if the mapping failed.
 */
static struct pg_fork_snap *snap_take(struct fl_pager *p)
{
	unsigned int g = fl__grace_enter(&p->grace);
	struct pg_table *t = atomic_load(&p->table);
	size_t pages = 0, len;
	struct pg_fork_snap *sn;
	uint8_t *st;

	for (size_t i = 0; i < t->n; i++)
		pages += t->e[i].r->npages;
	len = sizeof(*sn) + t->n * sizeof(sn->e[0]) + pages;
	sn = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sn == MAP_FAILED) {
		fl__grace_exit(&p->grace, g);
		return NULL;
	}
	madvise(sn, len, MADV_DONTFORK);
	sn->len = len;
	sn->n = t->n;
	st = (uint8_t *)&sn->e[t->n];
	pages = 0;
	for (size_t i = 0; i < t->n; i++) {
		struct fl_region *r = t->e[i].r;

		atomic_fetch_add(&r->users, 1);
		sn->e[i] = (struct pg_snap_ent){ .start = t->e[i].start, .r = r, .off = pages };
		for (size_t pg = 0; pg < r->npages; pg++)
			st[pages + pg] = atomic_load(&r->state[pg]);
		pages += r->npages;
	}
	fl__grace_exit(&p->grace, g);
	return sn;
}

static void snap_free(struct pg_fork_snap *sn)
{
	if (!sn)
		return;
	for (size_t i = 0; i < sn->n; i++)
		fl__region_put(sn->e[i].r);
	munmap(sn, sn->len);
}

/*
 * A fork()ed child nobody serves (no on_event callback). Once its
 * descriptor is closed, the kernel unregisters the child's ranges, and
 * their absent pages would read as zeros where the store has data. So,
 * first, through the child's descriptor: pages the program had discarded
 * get zero pages (what they read here), and every other page the child
 * lacks is poisoned (SIGBUS in the child). Present pages are the child's
 * copies. Memory the pager mapped is MADV_DONTFORK: the child has none.
 * Where the kernel cannot poison, the descriptor is kept open instead (the
 * child's faults there stay blocked, never zeros) until the pager is
 * destroyed. @t: the page states when its FORK event was read. Called by
 * fork_take(), never by the reader.
 */
static void unserved_child(struct fl_pager *p, int fd, const struct pg_fork_snap *t)
{
	struct fl__poison_opts o = { .drain = drain_child };
	struct fl_uffd *cu;
	uint64_t poisoned = 0;
	int err = 0;

	if (fl_uffd_adopt(fd, p->feats, 0, &cu) < 0) {
		fl__err("pager: cannot use the userfaultfd of a fork()ed child; closing it: the "
			"child's absent pages read as zeros");
		close(fd);
		return;
	}
	o.arg = cu;
	for (size_t i = 0; i < t->n && !err; i++) {
		struct fl_region *r = t->e[i].r;
		const uint8_t *st = snap_states(t) + t->e[i].off;
		uintptr_t base = t->e[i].start;
		size_t pg = 0;

		if (r->ours)
			continue;
		o.step = r->ps;
		while (pg < r->npages && !err) {
			bool zero = (st[pg] & (PG_ZERO | PG_STATE)) == PG_ZERO;
			size_t end = pg + 1;

			while (end < r->npages && ((st[end] & (PG_ZERO | PG_STATE)) == PG_ZERO) == zero)
				end++;
			if (zero) {
				for (; pg < end; pg++) {
					void *a = (void *)(base + (pg << r->shift));
					int e = r->has_zeropage ? fl_uffd_zeropage(cu, a, r->ps, 0, NULL)
								: fl_uffd_copy(cu, a, p->zeros, r->ps, 0,
									       NULL);

					if (e == -EAGAIN && drain_child(cu) >= 0)
						e = fl__uffd_poison_absent(cu, (uintptr_t)a, r->ps, &o,
									   &poisoned);
					if (e && e != -EEXIST && e != -ENOENT && e != -ESRCH)
						err = e;
				}
				continue;
			}
			err = fl__uffd_poison_absent(cu, base + (pg << r->shift),
						     (end - pg) << r->shift, &o, &poisoned);
			pg = end;
		}
	}
	fl_uffd_close(cu);
	if (err) {
		fl__err("pager: cannot poison the absent pages of a fork()ed child (%s); keeping its "
			"userfaultfd open: the child's faults there stay blocked", strerror(-err));
		if (fds_push(&p->held, &p->nheld, fd) == 0)
			return;
		fl__err("pager: out of memory keeping the descriptor; the child reads zeros");
	} else {
		fl__info("pager: a fork()ed child is not served: its %llu absent bytes of the "
			 "regions are poisoned (SIGBUS there)", (unsigned long long)poisoned);
	}
	close(fd);
}

/*
 * A fork()ed child served like its parent (hooks.serve_children): a pager
 * of its own over the child's descriptor, with the parent's regions at
 * their addresses, stores and the page states @t noted when its FORK event
 * was read (the kernel refused the parent's installs from the fork until
 * then, and that reader applied the events before it). Pages supplied to the
 * parent later reach it too (fl__region_supply). Returns 0, or -errno with
 * @fd untouched.
 */
static int serve_child(struct fl_pager *p, int fd, const struct pg_fork_snap *t)
{
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS, .threads = 2 };
	struct fl__pager_hooks h = { .serve_children = true };
	size_t nc = atomic_load(&p->nchildren);
	struct fl_uffd *cu = NULL;
	struct fl_pager *cp = NULL;
	int e;

	if (nc >= PG_MAX_CHILDREN)
		return -EMFILE;
	if (!p->children) {
		p->children = calloc(PG_MAX_CHILDREN, sizeof(*p->children));
		if (!p->children)
			return -ENOMEM;
	}
	e = fl_uffd_adopt(fd, p->feats, 0, &cu);
	po.uffd = cu;
	if (!e)
		e = fl_pager_create(&po, &cp);
	if (e < 0) {
		fl_uffd_close(cu);
		return e;
	}
	fl__pager_set_hooks(cp, &h);
	for (size_t i = 0; i < t->n && !e; i++) {
		struct fl_region *r = t->e[i].r, *cr;
		const uint8_t *st = snap_states(t) + t->e[i].off;
		struct fl_region_opts o = {
			.sz = sizeof(o), .addr = (void *)t->e[i].start, .len = r->len,
			.store = r->store, .store_off = r->store_off, .page_size = r->ps,
			.mem = FL_MEM_ANON, .memfd = -1, .install = FL_INSTALL_COPY,
			.prefetch = r->prefetch, .prefetch_min = r->pf_min << r->shift,
			.prefetch_max = r->pf_max << r->shift, .on_error = r->on_error,
		};

		/* Children get private anonymous copies only; the pager's own memory not at all. */
		if (r->ours)
			continue;
		if (r->mem != FL_MEM_ANON) {
			e = -EOPNOTSUPP;
			break;
		}
		e = fl_region_add(cp, &o, &cr);
		for (size_t pg = 0; !e && pg < r->npages; pg++) {
			uint8_t s = st[pg], to;

			switch (s & PG_STATE) {
			case PG_PRESENT:
			case PG_POISONED:
			case PG_GONE:
				to = s & PG_STATE;
				break;
			default:
				to = PG_ABSENT | (s & PG_ZERO);
				break;
			}
			atomic_store(&cr->state[pg], to);
		}
	}
	if (!e)
		e = fl_pager_start(cp);
	if (e < 0) {
		fl__warn("pager: cannot serve a fork()ed child (%s): it is not served", strerror(-e));
		fl_pager_destroy(cp);
		fl_uffd_close(cu);
		return e;
	}
	p->children[nc] = (struct pg_child){ .p = cp, .u = cu, .fd = fd };
	atomic_store_explicit(&p->nchildren, nc + 1, memory_order_release);
	fl__info("pager: serving a fork()ed child (fd %d)", fd);
	return 0;
}

void fl__pager_set_hooks(struct fl_pager *p, const struct fl__pager_hooks *h)
{
	p->hooks = *h;
	if (h->own_memory)
		p->own_memory = true;
}

unsigned int fl__pager_children(struct fl_pager *p)
{
	size_t nc = atomic_load_explicit(&p->nchildren, memory_order_acquire);
	unsigned int n = 0;

	for (size_t i = 0; i < nc; i++)
		if (!atomic_load(&p->children[i].p->dead))
			n += 1 + fl__pager_children(p->children[i].p);
	return n;
}

int fl__pager_children_populate(struct fl_pager *p)
{
	size_t nc = atomic_load_explicit(&p->nchildren, memory_order_acquire);
	int first = 0;

	for (size_t i = 0; i < nc; i++) {
		struct fl_pager *cp = p->children[i].p;
		struct fl_region **list;
		size_t n = 0;
		int e;

		if (atomic_load(&cp->dead))
			continue;
		/* Every region of the child, not a fixed number (a migration may have 1024). */
		pthread_mutex_lock(&cp->lock);
		for (struct fl_region *r = cp->regions; r; r = r->next)
			n++;
		list = calloc(n ? n : 1, sizeof(*list));
		if (!list) {
			pthread_mutex_unlock(&cp->lock);
			if (!first)
				first = -ENOMEM;
			continue;
		}
		n = 0;
		for (struct fl_region *r = cp->regions; r; r = r->next) {
			atomic_fetch_add(&r->users, 1);
			list[n++] = r;
		}
		pthread_mutex_unlock(&cp->lock);
		for (size_t k = 0; k < n; k++) {
			e = atomic_load(&cp->dead) ? 0 : fl_region_populate(list[k], 0, list[k]->len);
			fl__region_put(list[k]);
			/* A child that exited, or unmapped the region, needs nothing. */
			if (e < 0 && e != -ENOENT && e != -ESRCH && !first)
				first = e;
		}
		free(list);
		e = fl__pager_children_populate(cp);
		if (e < 0 && !first)
			first = e;
	}
	return first;
}

/*
 * A FORK event read (reader role held): only note the child's descriptor
 * and its page states. The forking thread is released by this read, but
 * glibc's fork() holds the malloc arenas' and stdio's locks until it
 * returns in the parent; a reader blocked on them (in calloc, thread
 * creation, logging) would keep the read token, nobody would read the
 * next fork()'s event, and that fork() would never return. The child's
 * faults stay blocked on its descriptor until fork_take() serves it.
 * Single producer: the read token is held.
 */
static void fork_record(struct fl_pager *p, int fd)
{
	size_t t = atomic_load_explicit(&p->fork_tail, memory_order_relaxed);

	/* Full (PG_FORK_RING children not yet looked after): wait for the consumer. */
	while (t - atomic_load_explicit(&p->fork_head, memory_order_acquire) >= PG_FORK_RING)
		sched_yield();
	p->forks[t % PG_FORK_RING] = (struct pg_fork){ .fd = fd, .snap = snap_take(p) };
	atomic_store_explicit(&p->fork_tail, t + 1, memory_order_release);
}

static bool forks_pending(struct fl_pager *p)
{
	return atomic_load_explicit(&p->fork_head, memory_order_relaxed) !=
	       atomic_load_explicit(&p->fork_tail, memory_order_acquire);
}

/*
 * Look after the children recorded by fork_record(), never as the reader:
 * serve each (hooks.serve_children) or poison its absent pages. With
 * @serve false (destroy), only the latter. Returns the number taken.
 */
static unsigned int fork_take(struct fl_pager *p, bool serve)
{
	unsigned int n = 0;

	pthread_mutex_lock(&p->fork_lock);
	while (forks_pending(p)) {
		size_t h = atomic_load_explicit(&p->fork_head, memory_order_relaxed);
		struct pg_fork f = p->forks[h % PG_FORK_RING];

		atomic_store_explicit(&p->fork_head, h + 1, memory_order_release);
		n++;
		if (!f.snap) {
			fl__err("pager: out of memory noting the pages of a fork()ed child; keeping "
				"its userfaultfd open: the child's faults stay blocked");
			if (fds_push(&p->held, &p->nheld, f.fd) < 0) {
				fl__err("pager: out of memory keeping the descriptor; the child "
					"reads zeros");
				close(f.fd);
			}
			continue;
		}
		if (!(serve && p->hooks.serve_children && serve_child(p, f.fd, f.snap) == 0))
			unserved_child(p, f.fd, f.snap);
		snap_free(f.snap);
	}
	pthread_mutex_unlock(&p->fork_lock);
	return n;
}

/* THREADS mode with FORK events: the thread that looks after fork()ed children. */
static void *fork_main(void *arg)
{
	struct fl_pager *p = arg;
	struct pollfd pf[2] = {
		{ .fd = p->stop_efd, .events = POLLIN },
		{ .fd = p->fork_efd, .events = POLLIN },
	};

	for (;;) {
		uint64_t v;

		fork_take(p, true);
		/* Stopping, or the served process exited (its FORK events are all read). */
		if (!atomic_load(&p->running) || atomic_load(&p->dead))
			break;
		if (poll(pf, 2, -1) > 0 && (pf[1].revents & POLLIN) &&
		    read(p->fork_efd, &v, sizeof(v)) < 0)
			(void)0;	/* nothing to reset */
	}
	return NULL;
}

static void apply_event(struct fl_pager *p, const struct fl_event *ev)
{
	switch (ev->type) {
	case FL_EVENT_REMOVE:
		fl__region_discard(p, (uintptr_t)ev->range.start, (uintptr_t)ev->range.end);
		break;
	case FL_EVENT_UNMAP:
		fl__region_unmap(p, (uintptr_t)ev->range.start, (uintptr_t)ev->range.end);
		break;
	case FL_EVENT_REMAP:
		fl__region_remap(p, (uintptr_t)ev->remap.from, (uintptr_t)ev->remap.to,
				 ev->remap.len);
		break;
	case FL_EVENT_FORK:
		if (p->on_event)
			break;	/* the descriptor is the callback's */
		fork_record(p, ev->fork.fd);
		break;
	default:
		fl__debug("pager: ignoring a %s event", fl_event_type_name(ev->type));
		break;
	}
}

/*
 * Hand the @nev events among the @n messages of one read to the owner's
 * callback, faults left out, still holding the read token: the owner sees
 * them in order, before any fault read with them is handled.
 */
static void tell_events(struct fl_pager *p, const struct fl_event *ev, int n, int nev)
{
	struct fl_event only[PG_READ_BATCH];
	size_t k = 0;

	if (nev == n) {
		p->on_event(p, ev, (size_t)n, p->event_userdata);
		return;
	}
	for (int i = 0; i < n; i++)
		if (ev[i].type != FL_EVENT_PAGEFAULT)
			only[k++] = ev[i];
	p->on_event(p, only, k, p->event_userdata);
}

static void handle_fault(struct pg_ctx *c, const struct fl_event *ev, uint64_t t0)
{
	struct fl_pager *p = c->p;
	uintptr_t addr = (uintptr_t)ev->fault.addr, start;
	struct fl_region *r;
	int e;

	r = fl__region_get(p, addr, &start);
	if (ev->flags & FL_FAULT_WP) {
		/*
		 * Write-protect faults belong to whoever registered WP: the
		 * region's dirty tracking or on_wp (dirty.c), or a live snapshot.
		 */
		if (r && (r->track_dirty || r->on_wp)) {
			fl__dirty_wp_fault(c, r, (addr - start) >> r->shift);
			fl__region_put(r);
		} else if (r) {
			fl__region_wp_tell(r, (addr - start) >> r->shift, 1, FL__WP_FAULT);
			fl__region_put(r);
		} else {
			fl__orphan_wp_fault(p, addr);
		}
		return;
	}
	if (!r) {
		if (fl__orphan_fault(p, addr))
			return;
		/* Not ours (yet): fl_region_add() wakes its range, so such a thread faults again. */
		fl__debug("pager: fault at %#lx outside every region", (unsigned long)addr);
		return;
	}
	c->tid = ev->fault.tid;
	e = fl__resolve_fault(c, r, start, addr, ev->flags, t0);
	fl__region_put(r);
	if (e == -ESRCH)
		fl__pager_mark_dead(p);
}

/*
 * Read every queued message and apply its events at once, in arrival order,
 * while holding the pager's read token: a batch read by another handler
 * thread afterwards therefore never has its faults looked at before these
 * events took effect (a fault after munmap/mremap/MADV_DONTNEED must see
 * them). Returns the number of messages, -EAGAIN (none, or another thread
 * is reading), or -errno.
 */
static int read_apply(struct fl_pager *p, struct fl_event *ev, uint64_t *t0)
{
	int n, nev = 0;

	if (atomic_exchange_explicit(&p->reading, true, memory_order_acquire))
		return -EAGAIN;
	if (p->gate) {
		/* The discard gate (see the top of this file): installs in progress end first. */
		atomic_store(&p->applying, true);
		for (unsigned int i = 0; atomic_load(&p->installing); i++)
			if (i > 64)
				sched_yield();
	}
	n = fl_uffd_read_events(p->uffd, ev, PG_READ_BATCH);
	if (n > 0) {
		*t0 = fl__now_ns();
		for (int i = 0; i < n; i++) {
			if (ev[i].type != FL_EVENT_PAGEFAULT) {
				apply_event(p, &ev[i]);
				nev++;
			}
		}
	}
	if (p->gate)
		atomic_store(&p->applying, false);
	if (nev && p->on_event)
		tell_events(p, ev, n, nev);
	atomic_store_explicit(&p->reading, false, memory_order_release);
	if (nev && forks_pending(p)) {
		uint64_t one = 1;

		if (p->fork_started) {
			if (write(p->fork_efd, &one, sizeof(one)) < 0)
				(void)0;	/* the counter is full: the thread is woken anyway */
		} else {
			fork_take(p, true);	/* LOOP mode: no thread of ours for it */
		}
	}
	return n == -EINTR ? -EAGAIN : n;
}

void fl__pager_hold_reading(struct fl_pager *p)
{
	for (unsigned int i = 0; atomic_exchange_explicit(&p->reading, true, memory_order_acquire);
	     i++)
		if (i > 64)
			sched_yield();
}

void fl__pager_release_reading(struct fl_pager *p)
{
	atomic_store_explicit(&p->reading, false, memory_order_release);
}

void fl__install_enter(struct fl_pager *p)
{
	if (!p->gate)
		return;
	for (unsigned int i = 0;; i++) {
		/* Pairs with read_apply(): it sees us counted, or we see it applying. */
		atomic_fetch_add(&p->installing, 1);
		if (!atomic_load(&p->applying))
			return;
		atomic_fetch_sub(&p->installing, 1);
		while (atomic_load(&p->applying))
			if (++i > 64)
				sched_yield();
	}
}

void fl__install_exit(struct fl_pager *p)
{
	if (p->gate)
		atomic_fetch_sub_explicit(&p->installing, 1, memory_order_release);
}

/*
 * The faults of a batch, in arrival order. With @handoff (handler threads),
 * every fault but the first goes to the backlog, where idle threads take
 * it: a slow store read for one fault never holds up the others read with it.
 */
static void process_batch(struct pg_ctx *c, struct fl_event *ev, int n, uint64_t t0,
			  bool handoff)
{
	struct fl_pager *p = c->p;
	int first = -1, left = 0;
	bool pushed = false;

	for (int i = 0; i < n; i++) {
		if (ev[i].type != FL_EVENT_PAGEFAULT)
			continue;
		if (first < 0) {
			first = i;
		} else if (handoff && bl_push(p->backlog, &ev[i], t0)) {
			pushed = true;
			ev[i].type = 0;	/* taken */
		} else {
			left++;
		}
	}
	if (pushed && atomic_load(&p->idle) > 0) {
		uint64_t one = 1;

		if (write(p->kick_efd, &one, sizeof(one)) < 0)
			fl__debug("pager: kicking an idle handler: %s", strerror(errno));
	}
	if (first < 0)
		return;
	handle_fault(c, &ev[first], t0);
	for (int i = first + 1; i < n && left; i++) {
		if (ev[i].type == FL_EVENT_PAGEFAULT) {
			handle_fault(c, &ev[i], t0);
			left--;
		}
	}
}

/* ----------------------------------------------------- handler threads */

/*
 * Read a batch: spin with non-blocking reads for @spin_us (a fault that
 * arrives now costs no wakeup), then block in poll for @block_ms (-1:
 * until a fault, a kick or stop). Returns > 0 messages, 0 for none, or
 * -errno for a broken descriptor.
 *
 * Every fault wakes every thread polling the userfaultfd, so only the
 * first p->nreaders threads (one per CPU) poll it. The others are helpers:
 * they wait for kicks (backlog work), and one of them polls the
 * userfaultfd too while no reader can (all inside store reads).
 */
static int read_batch(struct pg_worker *w, struct fl_event *ev, unsigned int spin_us, int block_ms,
		      uint64_t *t0)
{
	struct fl_pager *p = w->p;
	uint64_t deadline = spin_us ? fl__now_ns() + (uint64_t)spin_us * 1000 : 0;
	struct pollfd pf[3] = {
		{ .fd = p->stop_efd, .events = POLLIN },
		{ .fd = p->kick_efd, .events = POLLIN },
		{ .fd = p->fd, .events = POLLIN },
	};
	bool reader = w->index < p->nreaders || atomic_load(&p->polling) == 0;
	int n = 0, r;

	if (!reader) {
		spin_us = 0;
		deadline = 0;
	} else {
		atomic_fetch_add(&p->polling, 1);
	}
	for (; reader;) {
		n = read_apply(p, ev, t0);
		if (n != -EAGAIN)
			goto out;
		n = 0;
		if (!atomic_load(&p->running) || atomic_load(&p->dead) || !bl_empty(p->backlog))
			goto out;
		if (!deadline || fl__now_ns() >= deadline)
			break;
		/* Yield rather than burn: on a busy CPU, the faulting thread may need it. */
		sched_yield();
	}
	atomic_fetch_add(&p->idle, 1);
	if (!bl_empty(p->backlog)) {
		/* Pairs with the kick in process_batch(): work pushed before we counted ourselves. */
		atomic_fetch_sub(&p->idle, 1);
		goto out;
	}
	r = poll(pf, reader ? 3 : 2, block_ms);
	atomic_fetch_sub(&p->idle, 1);
	if (r > 0 && (pf[1].revents & POLLIN)) {
		uint64_t v;

		if (read(p->kick_efd, &v, sizeof(v)) < 0)
			(void)0;	/* another thread took the kick */
	}
	if (!reader || r <= 0 || !(pf[2].revents & POLLIN)) {
		if (reader && r > 0 && (pf[2].revents & (POLLERR | POLLNVAL)))
			n = -EBADF;
		goto out;
	}
	n = read_apply(p, ev, t0);
	if (n == -EAGAIN) {
		if (atomic_load(&p->reading))
			sched_yield();	/* another thread is reading what woke us */
		n = 0;
	}
out:
	if (reader)
		atomic_fetch_sub(&p->polling, 1);
	return n;
}

/*
 * One reader per CPU (the first threads), each pinned to its own when there
 * is one for every CPU: a fault then finds a reader on the faulting
 * thread's CPU, where waking it and being woken back are cheapest (waking a
 * sleeping CPU costs tens of microseconds on virtual machines). With fewer
 * threads than CPUs, the scheduler places them.
 */
static unsigned int allowed_cpus(void)
{
	cpu_set_t allowed;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0 || CPU_COUNT(&allowed) < 1)
		return 1;
	return (unsigned int)CPU_COUNT(&allowed);
}

static void pin_self(unsigned int index)
{
	cpu_set_t allowed, one;
	int k = 0, want;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0 || !CPU_COUNT(&allowed))
		return;
	want = (int)(index % (unsigned int)CPU_COUNT(&allowed));
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &allowed) || k++ != want)
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
		return;
	}
}

static void *worker_main(void *arg)
{
	struct pg_worker *w = arg;
	struct fl_pager *p = w->p;
	struct pg_ctx *c = &w->ctx;
	struct fl_event ev[PG_READ_BATCH];

	if (p->pin && w->index < p->nreaders)
		pin_self(w->index);
	for (;;) {
		struct fl_event one;
		uint64_t t0 = 0;
		int n;

		if (atomic_load(&p->dead))
			break;
		if (bl_pop(p->backlog, &one, &t0)) {
			handle_fault(c, &one, t0);
			continue;
		}
		/* Stopping: faults already read are served (backlog above), new ones stay queued. */
		if (!atomic_load(&p->running))
			break;
		/* Deferred runs wait for events: look again soon instead of sleeping for good. */
		n = read_batch(w, ev, c->ndef || w->nospin ? 0 : p->spin_us, c->ndef ? 1 : -1, &t0);
		if (n > 0) {
			process_batch(c, ev, n, t0, true);
			/*
			 * Spinning pays when the faulting thread shares our CPU (or its
			 * CPU stays awake). A batch that took longer than this was a
			 * slow store or a wakeup of a sleeping CPU: block at once then,
			 * and leave the next fault to the handler woken beside it.
			 */
			w->nospin = fl__now_ns() - t0 > SPIN_USEFUL_NS;
		} else if (n < 0) {
			fl__err("pager: reading the userfaultfd: %s; handler %u stops", strerror(-n),
				w->index);
			break;
		}
		if (c->ndef)
			fl__resolve_retry(c);
	}
	fl__pager_save_pending(p, c);
	return NULL;
}

/*
 * Called before each store read in THREADS mode: if every reader is busy
 * (this one included), kick a helper, which then polls the userfaultfd, so
 * the read that may be slow is never what keeps other faults unread.
 */
void fl__pager_keep_reading(struct fl_pager *p)
{
	uint64_t one = 1;

	if (p->nthreads <= p->nreaders || atomic_load(&p->polling) > 0 ||
	    atomic_load(&p->idle) == 0)
		return;
	if (write(p->kick_efd, &one, sizeof(one)) < 0)
		fl__debug("pager: kicking a helper: %s", strerror(errno));
}

/* Runs a stopping thread could not finish: kept for the next start (or poisoned at removal). */
void fl__pager_save_pending(struct fl_pager *p, struct pg_ctx *c)
{
	if (!c->ndef)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->npending + c->ndef > p->cap_pending) {
		size_t cap = p->npending + c->ndef + PG_DEFER;
		struct pg_deferred *n = realloc(p->pending, cap * sizeof(*n));

		if (!n) {
			pthread_mutex_unlock(&p->lock);
			fl__err("pager: out of memory keeping %zu deferred runs; their faults stay "
				"blocked until the region is removed", c->ndef);
			c->ndef = 0;
			return;
		}
		p->pending = n;
		p->cap_pending = cap;
	}
	memcpy(p->pending + p->npending, c->def, c->ndef * sizeof(*c->def));
	p->npending += c->ndef;
	c->ndef = 0;
	pthread_mutex_unlock(&p->lock);
}

static unsigned int threads_from_env(void)
{
	const char *s = getenv("FL_THREADS");
	char *end;
	unsigned long v;

	if (!s || !*s)
		return FL_PAGER_DEFAULT_THREADS;
	v = strtoul(s, &end, 10);
	if (*end || !v || v > FL_PAGER_MAX_THREADS) {
		fl__warn("pager: FL_THREADS=%s is not a number from 1 to %d; using %d", s,
			 FL_PAGER_MAX_THREADS, FL_PAGER_DEFAULT_THREADS);
		return FL_PAGER_DEFAULT_THREADS;
	}
	return (unsigned int)v;
}

static int start_threads(struct fl_pager *p)
{
	unsigned int ncpu;
	uint64_t v;
	int e = 0;

	/* A stop left the eventfd readable: reset it. */
	while (read(p->stop_efd, &v, sizeof(v)) > 0)
		;
	/* Hand the runs that stopped threads left over to the new ones. */
	pthread_mutex_lock(&p->lock);
	for (unsigned int i = 0; i < p->nthreads && p->npending; i++) {
		struct pg_ctx *c = &p->workers[i].ctx;

		while (p->npending && c->ndef < PG_DEFER)
			c->def[c->ndef++] = p->pending[--p->npending];
	}
	pthread_mutex_unlock(&p->lock);

	ncpu = allowed_cpus();
	p->nreaders = p->nthreads < ncpu ? p->nthreads : ncpu;
	p->pin = ncpu > 1 && p->nthreads >= ncpu;
	/*
	 * Handler threads take no process signals (fl__thread_start): those
	 * belong to the program's threads.
	 */
	atomic_store(&p->running, true);
	/* Before the handler threads: they read fork_started. */
	if ((p->feats & FL_FEAT_EVENT_FORK) && !p->on_event) {
		e = fl__thread_start(&p->fork_thread, NULL, fork_main, p, "fl-fork");
		if (!e)
			p->fork_started = true;
	}
	for (unsigned int i = 0; !e && i < p->nthreads; i++) {
		struct pg_worker *w = &p->workers[i];
		char name[24];

		/* Named by the starter rather than by the thread: visible as soon as start returns. */
		snprintf(name, sizeof(name), "fl-handler/%u", i);
		e = fl__thread_start(&w->thread, NULL, worker_main, w, name);
		if (e)
			break;
		w->started = true;
	}
	return e;
}

static void stop_threads(struct fl_pager *p)
{
	uint64_t one = 1;

	atomic_store(&p->running, false);
	if (write(p->stop_efd, &one, sizeof(one)) < 0)
		fl__debug("pager: waking handler threads: %s", strerror(errno));
	for (unsigned int i = 0; i < p->nthreads; i++) {
		if (!p->workers[i].started)
			continue;
		pthread_join(p->workers[i].thread, NULL);
		p->workers[i].started = false;
	}
	if (p->fork_started) {
		pthread_join(p->fork_thread, NULL);
		p->fork_started = false;
	}
}

/* ------------------------------------------------------------- the API */

/* The staging buffers: one mapping aligned to PG_MOVE_CHUNK, so each buffer starts on a chunk. */
static uint8_t *map_buffers(size_t len)
{
	uint8_t *m = mmap(NULL, len + PG_MOVE_CHUNK, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *a;

	if (m == MAP_FAILED)
		return MAP_FAILED;
	a = (uint8_t *)(((uintptr_t)m + PG_MOVE_CHUNK - 1) & ~(uintptr_t)(PG_MOVE_CHUNK - 1));
	if (a > m)
		munmap(m, (size_t)(a - m));
	if (a + len < m + len + PG_MOVE_CHUNK)
		munmap(a + len, (size_t)(m + len + PG_MOVE_CHUNK - (a + len)));
	return a;
}

FL_API int fl_pager_create(const struct fl_pager_opts *opts, struct fl_pager **ret)
{
	struct fl_pager_opts o = { .sz = sizeof(o) };
	struct fl_pager *p;
	size_t nbuf;
	int e;

	if (!ret)
		return fl__einval(__func__, "ret is NULL");
	if (opts) {
		e = fl__opts_copy(&o, sizeof(o), opts, "fl_pager_create");
		if (e < 0)
			return e;
	}
	if ((unsigned int)o.mode > FL_PAGER_LOOP || o.threads > FL_PAGER_MAX_THREADS ||
	    (o.features & ~FL_FEAT_ALL))
		return fl__einval(__func__, "unknown mode, more than %d threads, or unknown "
				  "feature bits", FL_PAGER_MAX_THREADS);
	/* SIGBUS mode serves only this process, and nobody would read events: the program would hang. */
	if (o.mode == FL_PAGER_SIGBUS && (o.uffd || (o.features & EVENT_FEATS) || o.on_event))
		return fl__einval(__func__, "FL_PAGER_SIGBUS serves this process only and reads no "
				  "events: no uffd, event features or on_event with it");
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->pid = getpid();
	p->mode = o.mode;
	p->fd = -1;
	p->saved_fd_flags = -1;
	p->stop_efd = -1;
	p->kick_efd = -1;
	p->sig_slot = -1;
	p->fork_efd = -1;
	pthread_mutex_init(&p->fork_lock, NULL);
	p->nthreads = o.mode == FL_PAGER_THREADS ? (o.threads ? o.threads : threads_from_env()) : 0;
	p->spin_us = o.spin_us ? o.spin_us : DEFAULT_SPIN_US;
	p->on_event = o.on_event;
	p->event_userdata = o.userdata;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->orphan_lock, NULL);
	p->table = calloc(1, sizeof(struct pg_table));
	if (!p->table) {
		e = -ENOMEM;
		goto fail;
	}

	if (o.uffd) {
		int fl;

		p->uffd = o.uffd;
		p->fd = fl_uffd_fd(o.uffd);
		p->feats = fl_uffd_features(o.uffd);
		/* Handler threads spin with non-blocking reads; restored by fl_pager_destroy(). */
		fl = fcntl(p->fd, F_GETFL);
		if (fl < 0) {
			e = -errno;
			goto fail;
		}
		if (!(fl & O_NONBLOCK)) {
			if (fcntl(p->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
				e = -errno;
				goto fail;
			}
			p->saved_fd_flags = fl;
		}
	} else {
		struct fl_uffd_opts uo = {
			.sz = sizeof(uo),
			.features = o.features | (o.mode == FL_PAGER_SIGBUS ? FL_FEAT_SIGBUS : 0),
			/*
			 * THREADS mode follows the program's mremap, MADV_DONTNEED and
			 * munmap: without REMAP events the kernel drops the registration
			 * of a moved range, and its absent pages would read as zeros.
			 * LOOP mode does not ask for them by default: the program's own
			 * loop thread would block in mremap until it read the event.
			 */
			.optional = FL_FEAT_MISSING_SHMEM | FL_FEAT_MISSING_HUGETLBFS |
				    FL_FEAT_MINOR_SHMEM | FL_FEAT_MINOR_HUGETLBFS | FL_FEAT_MOVE |
				    FL_FEAT_POISON |
				    (o.mode == FL_PAGER_THREADS ? FL_FEAT_EVENT_REMAP |
					     FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP : 0),
			.flags = FL_UFFD_NONBLOCK,
		};

		e = fl_uffd_open(&uo, &p->uffd);
		if (e < 0)
			goto fail;
		p->own_uffd = true;
		p->own_memory = true;
		p->fd = fl_uffd_fd(p->uffd);
		p->feats = fl_uffd_features(p->uffd);
	}

	p->gate = p->feats & FL_FEAT_EVENT_REMOVE;
	nbuf = PG_POOL + (o.mode == FL_PAGER_THREADS ? p->nthreads : o.mode == FL_PAGER_LOOP);
	p->buffers_len = nbuf * PG_STAGING;
	p->buffers = map_buffers(p->buffers_len);
	p->zeros = mmap(NULL, PG_STAGING, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			-1, 0);
	if (p->buffers == MAP_FAILED || p->zeros == MAP_FAILED) {
		e = -ENOMEM;
		goto fail;
	}
	/* Staging is ours alone; a child after fork() has no use for it. */
	madvise(p->buffers, p->buffers_len, MADV_DONTFORK);

	if (o.mode == FL_PAGER_THREADS) {
		p->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		p->kick_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		p->fork_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		p->backlog = aligned_alloc(64, sizeof(*p->backlog));
		p->workers = calloc(p->nthreads, sizeof(*p->workers));
		if (p->stop_efd < 0 || p->kick_efd < 0 || p->fork_efd < 0 || !p->backlog ||
		    !p->workers) {
			e = -ENOMEM;
			goto fail;
		}
		bl_init(p->backlog);
		for (unsigned int i = 0; i < p->nthreads; i++) {
			struct pg_worker *w = &p->workers[i];

			w->p = p;
			w->index = i;
			w->ctx = (struct pg_ctx){
				.p = p,
				.slot = -1,
				.staging = p->buffers + (size_t)(PG_POOL + i) * PG_STAGING,
				.def = calloc(PG_DEFER, sizeof(struct pg_deferred)),
			};
			if (!w->ctx.def) {
				e = -ENOMEM;
				goto fail;
			}
		}
	} else if (o.mode == FL_PAGER_LOOP) {
		p->loop_ctx = calloc(1, sizeof(*p->loop_ctx));
		if (!p->loop_ctx) {
			e = -ENOMEM;
			goto fail;
		}
		*p->loop_ctx = (struct pg_ctx){
			.p = p,
			.slot = -1,
			.staging = p->buffers + (size_t)PG_POOL * PG_STAGING,
			.def = calloc(PG_DEFER, sizeof(struct pg_deferred)),
		};
		if (!p->loop_ctx->def) {
			e = -ENOMEM;
			goto fail;
		}
	}
	*ret = p;
	return 0;
fail:
	fl_pager_destroy(p);
	return e;
}

FL_API int fl_pager_start(struct fl_pager *p)
{
	int e = 0;

	if (!p)
		return fl__einval(__func__, "p is NULL");
	if (getpid() != p->pid)
		return -ECHILD;
	if (atomic_load(&p->dead))
		return -ESRCH;
	if (atomic_load(&p->running))
		return 0;
	switch (p->mode) {
	case FL_PAGER_THREADS:
		e = start_threads(p);
		if (e) {
			stop_threads(p);
			fl__err("pager: starting handler threads: %s", strerror(-e));
		}
		break;
	case FL_PAGER_SIGBUS:
		e = fl__sigbus_attach(p);
		if (!e) {
			atomic_store(&p->running, true);
			atomic_fetch_add(&p->run_seq, 1);
			fl__wait_seq_wake(&p->run_seq);
		}
		break;
	case FL_PAGER_LOOP:
		atomic_store(&p->running, true);
		break;
	}
	return e;
}

FL_API int fl_pager_stop(struct fl_pager *p)
{
	if (!p)
		return fl__einval(__func__, "p is NULL");
	if (getpid() != p->pid)
		return -ECHILD;
	if (p->mode == FL_PAGER_THREADS)
		stop_threads(p);
	else
		atomic_store(&p->running, false);	/* SIGBUS: faulting threads wait in the handler */
	return 0;
}

FL_API void fl_pager_destroy(struct fl_pager *p)
{
	if (!p)
		return;
	/* A forked child shares the parent's userfaultfd: touching it would hurt the parent. */
	if (getpid() != p->pid)
		return;
	fl__region_keep_all(p);
	if (p->workers)
		stop_threads(p);
	/* Children whose FORK event was read but who were not looked after yet. */
	fork_take(p, false);
	for (size_t i = 0; i < atomic_load(&p->nchildren); i++) {
		fl_pager_destroy(p->children[i].p);
		fl_uffd_close(p->children[i].u);
		close(p->children[i].fd);
	}
	free(p->children);
	p->children = NULL;
	atomic_store(&p->nchildren, 0);
	if (p->workers)
		stop_threads(p);
	atomic_store(&p->running, false);
	for (;;) {
		struct fl_region *r;

		pthread_mutex_lock(&p->lock);
		r = p->regions;
		pthread_mutex_unlock(&p->lock);
		if (!r)
			break;
		if (fl__region_remove(r) < 0) {
			/*
			 * Out of memory for a smaller table: drop it by hand, we are going
			 * away (the region leaks). Its working-set replay, if any, must not
			 * outlive the pager: it stops at removing.
			 */
			pthread_mutex_lock(&p->lock);
			p->regions = r->next;
			if (r->next)
				r->next->prev = NULL;
			pthread_mutex_unlock(&p->lock);
			atomic_store(&r->removing, true);
			fl__ws_stop(r);
		}
	}
	if (p->sig_slot >= 0)
		fl__sigbus_detach(p);
	/* Deferred runs left (their regions are gone by now): only what they kept. */
	if (p->workers) {
		for (unsigned int i = 0; i < p->nthreads; i++) {
			for (size_t k = 0; k < p->workers[i].ctx.ndef; k++)
				free(p->workers[i].ctx.def[k].kept);
			free(p->workers[i].ctx.def);
		}
	}
	free(p->workers);
	if (p->loop_ctx) {
		for (size_t k = 0; k < p->loop_ctx->ndef; k++)
			free(p->loop_ctx->def[k].kept);
		free(p->loop_ctx->def);
	}
	free(p->loop_ctx);
	free(p->backlog);
	for (size_t k = 0; k < p->npending; k++)
		free(p->pending[k].kept);
	free(p->pending);
	if (p->stop_efd >= 0)
		close(p->stop_efd);
	if (p->kick_efd >= 0)
		close(p->kick_efd);
	if (p->fork_efd >= 0)
		close(p->fork_efd);
	if (p->buffers && p->buffers != MAP_FAILED)
		munmap(p->buffers, p->buffers_len);
	if (p->zeros && p->zeros != MAP_FAILED)
		munmap(p->zeros, PG_STAGING);
	if (p->saved_fd_flags >= 0)
		fcntl(p->fd, F_SETFL, p->saved_fd_flags);
	if (p->own_uffd)
		fl_uffd_close(p->uffd);
	free(atomic_load(&p->table));
	free(p->orphans);
	for (size_t i = 0; i < p->nheld; i++)
		close(p->held[i]);
	free(p->held);
	pthread_mutex_destroy(&p->orphan_lock);
	pthread_mutex_destroy(&p->fork_lock);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

FL_API int fl_pager_fd(const struct fl_pager *p)
{
	if (!p)
		return fl__einval(__func__, "p is NULL");
	if (getpid() != p->pid)
		return -ECHILD;
	return p->fd;
}

FL_API struct fl_uffd *fl_pager_uffd(struct fl_pager *p)
{
	if (!p || getpid() != p->pid)
		return NULL;
	return p->uffd;
}

FL_API int fl_pager_dispatch(struct fl_pager *p)
{
	struct fl_event ev[PG_READ_BATCH];
	struct pg_ctx *c;
	int total = 0, n;

	if (!p)
		return fl__einval(__func__, "p is NULL");
	if (getpid() != p->pid)
		return -ECHILD;
	if (p->mode != FL_PAGER_LOOP)
		return fl__einval(__func__, "the pager is not in FL_PAGER_LOOP mode");
	if (atomic_load(&p->dead))
		return -ESRCH;
	c = p->loop_ctx;
	/* Bounded: faults keep coming while we serve; the caller's loop comes back. */
	for (int i = 0; i < 16; i++) {
		uint64_t t0 = 0;

		n = read_apply(p, ev, &t0);
		if (n == -EAGAIN)
			break;
		if (n < 0)
			return total ? total : n;
		process_batch(c, ev, n, t0, false);
		total += n;
		if (n < PG_READ_BATCH)
			break;
	}
	/*
	 * An install that met a pending event: the event is read above, and
	 * the thread that caused it lets go of the range right after; retry a
	 * few times rather than leave the fault until the next message.
	 */
	for (unsigned int i = 0; c->ndef && i < 64; i++) {
		uint64_t t0 = 0;

		if (i)
			sched_yield();
		n = read_apply(p, ev, &t0);
		if (n > 0) {
			process_batch(c, ev, n, t0, false);
			total += n;
		}
		fl__resolve_retry(c);
	}
	return total;
}
