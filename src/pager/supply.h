/* SPDX-License-Identifier: MIT */
/*
 * Pager internals for clients inside the library (the migration
 * destination): watching faults and installs, supplying pages that arrive
 * on their own, and serving fork()ed children. Never installed.
 */
#ifndef FL_PAGER_SUPPLY_H
#define FL_PAGER_SUPPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "faultline.h"

/*
 * What a live snapshot hears of a region (see fl__region_wp_attach):
 * FL__WP_FAULT, a write-protect fault on page @pg (@n is 1); FL__WP_DISCARD,
 * pages [pg, pg+n) were discarded (MADV_DONTNEED: they read zeros from now
 * on); FL__WP_GONE, they were unmapped or moved away.
 */
enum { FL__WP_FAULT, FL__WP_DISCARD, FL__WP_GONE };
typedef void (*fl__wp_fn)(void *arg, struct fl_region *r, size_t pg, size_t n, int why);

struct fl__pager_hooks {
	/*
	 * A fault on a page the store has to provide: @shared when it was in
	 * flight already (no new store read). On a handler thread; short.
	 */
	void (*fault)(void *arg, struct fl_region *r, size_t pg, uint32_t tid, bool shared);
	/* Pages [pg, pg+n) of @r are present now (installed, or found present). */
	void (*installed)(void *arg, struct fl_region *r, size_t pg, size_t n);
	void *arg;
	/*
	 * FORK: serve the child with a pager of its own over the same stores
	 * (its pages start as the parent's were at the fork), instead of
	 * poisoning what it lacks. fl__region_supply() reaches children too.
	 */
	bool serve_children;
	bool own_memory;	/* a borrowed userfaultfd of this very process */
};

/* Set before the first region is added; @h is copied. */
void fl__pager_set_hooks(struct fl_pager *p, const struct fl__pager_hooks *h);

/* The opts.userdata of the region. */
void *fl__region_userdata(const struct fl_region *r);

enum fl__supply_outcome {
	FL__SUPPLY_INSTALLED = 0,	/* put in now */
	FL__SUPPLY_PRESENT = 1,		/* there already: never overwritten */
	FL__SUPPLY_DISCARDED = 2,	/* the program discarded it: stays so (zeros) */
	FL__SUPPLY_BUSY = 3,		/* a store read for it is in flight: it will install */
	FL__SUPPLY_GONE = 4,		/* unmapped, moved away, poisoned, or the process exited */
	FL__SUPPLY_FAILED = 5,		/* the install failed */
};

/*
 * fl__region_supply - install pages [pg, pg+n) of @r from @src (n pages
 * back to back; NULL: zero pages), into those that are still absent by
 * the pager's per-page state only: never over a page the program wrote or
 * discarded, or one a store read is bringing in. Waits for pending events
 * like a fault's install does. @out (may be NULL) gets each page's
 * outcome. Children served by this pager (serve_children) get the pages
 * too. Returns 0, or -errno for a region being removed.
 * Thread safety: any thread.
 */
int fl__region_supply(struct fl_region *r, size_t pg, size_t n, const void *src, uint8_t *out);

/*
 * Pages [pg, pg+n) of @r are present though the pager never installed
 * them (written before the region was added): record it, where the state
 * is still "absent". Thread safety: any thread.
 */
void fl__region_mark_present(struct fl_region *r, size_t pg, size_t n);

/*
 * Poison (SIGBUS on access, never zeros) the pages of @r that only its
 * store has: absent by the pager's state and never discarded by the
 * program (those stay zeros), nor present, nor in flight (a store read
 * under way settles its own pages; if it fails, that page is poisoned
 * too, or made inaccessible like the rest where the kernel cannot poison).
 * Each run is claimed first, so no install races the poisoning. Without
 * UFFDIO_POISON, pages of this process are made PROT_NONE (SIGSEGV) and
 * -EOPNOTSUPP is returned. @ret_poisoned (may be NULL) += bytes
 * poisoned. Returns 0 or the first error of the kernel. Thread safety:
 * any thread; handler threads must be able to read events meanwhile.
 */
int fl__region_poison_absent(struct fl_region *r, uint64_t *ret_poisoned);

/*
 * Bring every page of every live served child (and theirs) in: before the
 * stores go away. Returns 0 or the first error. Thread safety: any thread
 * but a handler thread of @p.
 */
int fl__pager_children_populate(struct fl_pager *p);

/* Live children served (and theirs). */
unsigned int fl__pager_children(struct fl_pager *p);

/*
 * Write-protect faults of a region, for the live snapshot (src/snapshot).
 * fl__region_wp_attach: each write-protect fault on @r, and each discard
 * or unmap of its pages, calls @fn (on a handler thread, or in
 * fl_pager_dispatch(); discards and unmaps with the pager's lock held, as
 * the events are applied, before any fault read after them). @fn must not
 * block nor call the pager: it resolves a fault itself, later, by
 * unprotecting the page. The caller registers the range for write-protect
 * faults on the pager's userfaultfd (fl__region_info says how). Only for
 * THREADS and LOOP pagers: -EOPNOTSUPP for SIGBUS; -EBUSY if one is
 * attached already.
 * fl__region_wp_installs: from its return on, every page the pager
 * installs in @r is mapped write-protected (@on), or no longer (!@on).
 * Zeros and moves cannot be: zeros are copied from a zero buffer, and
 * pages that would have been moved (UFFDIO_MOVE) are copied instead.
 * fl__region_wp_detach: @fn is not called any more once it returns (write-
 * protect faults read later are dropped: unprotect the range after).
 * Thread safety: any thread.
 */
int fl__region_wp_attach(struct fl_region *r, fl__wp_fn fn, void *arg);
void fl__region_wp_installs(struct fl_region *r, bool on);
void fl__region_wp_detach(struct fl_region *r);

/*
 * Take the pager's read token (waiting for a reader that holds it to end),
 * so no thread reads its userfaultfd, and thus no event is applied, until
 * fl__pager_release_reading(): faults and events queue meanwhile. For a
 * live snapshot's instant; keep it short. The wait spins, then yields: a
 * reader holds the token for one non-blocking read of the userfaultfd and
 * the applying of its events (after installs under way, never a store
 * read, end), microseconds; an event
 * callback (fl_pager_opts.on_event) runs inside it, so a slow callback
 * makes this wait as long. Thread safety: any thread but the pager's own.
 */
void fl__pager_hold_reading(struct fl_pager *p);
void fl__pager_release_reading(struct fl_pager *p);

/* What a live snapshot needs to know of a region. */
struct fl__region_info {
	struct fl_pager *pager;
	struct fl_uffd *uffd;		/* the pager's */
	uintptr_t base;			/* now (it moves with mremap) */
	size_t len, ps;
	struct fl_store *store;
	uint64_t store_off;
	enum fl_mem_type mem;
	uint32_t modes;			/* FL_REGISTER_* the region registered */
};
void fl__region_info(struct fl_region *r, struct fl__region_info *ret);

/*
 * The pager's state of page @pg: FL__PAGE_PRESENT (mapped, by the pager or
 * the program), FL__PAGE_STORE (only the store has it: absent or being
 * brought in), FL__PAGE_ZERO (the program discarded it: it reads zeros),
 * FL__PAGE_POISONED (the store failed it: it is poisoned, the store may
 * still have it), FL__PAGE_GONE (unmapped). Thread safety: any thread.
 */
enum { FL__PAGE_PRESENT, FL__PAGE_STORE, FL__PAGE_ZERO, FL__PAGE_GONE, FL__PAGE_POISONED };
int fl__region_page(struct fl_region *r, size_t pg);
/*
 * Whether a resolver has page @pg in hand (claimed, being brought in: its
 * store may have handed it over already). Thread safety: any thread.
 */
bool fl__region_page_busy(struct fl_region *r, size_t pg);

#endif /* FL_PAGER_SUPPLY_H */
