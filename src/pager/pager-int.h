/* SPDX-License-Identifier: MIT */
/* Internal declarations of the pager engine (never installed). */
#ifndef FL_PAGER_INT_H
#define FL_PAGER_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "faultline.h"
#include "supply.h"
#include "util.h"

/*
 * One staging buffer holds the largest run installed at once: prefetch
 * windows are clipped to it, and region page sizes may not exceed it.
 */
#define PG_STAGING (4u << 20)
#define PG_MIN_PAGE 4096u
#define PG_MAX_RUN (PG_STAGING / PG_MIN_PAGE)
/*
 * Staged MOVE (resolve.c): runs of anonymous regions are read into staging
 * and moved in; whole chunks of this size, aligned alike in staging and
 * region, move as one transparent huge page (a PMD).
 */
#define PG_MOVE_CHUNK (2u << 20)
/* Staging buffers shared by SIGBUS handlers, populate and LOOP dispatch. */
#define PG_POOL 16
/* Faults read by one handler thread that it hands to the others (see process_batch). */
#define PG_BACKLOG 1024
/* Faults whose install met a pending event (EAGAIN), waiting for the events to be read. */
#define PG_DEFER 64
/* Counter shards: a handler picks one by CPU, so counters rarely bounce between caches. */
#define PG_SHARDS 8
/* SIGBUS mode: pagers whose regions the process-wide signal handler looks up. */
#define PG_SIG_PAGERS 64
#define PG_READ_BATCH 64

/*
 * Page states, one atomic byte per page of a region. The low bits are the
 * state; PG_ZERO marks a page the program discarded (a REMOVE event): it
 * is filled with zeros, never with store data. PG_WAITED closes a race: a page can be zapped (MADV_DONTNEED)
 * and faulted again after its install woke everyone but before its state
 * said so; that fault is read while the page still looks in flight.
 */
enum {
	PG_ABSENT = 0,		/* never brought in: the store has it */
	PG_BUSY = 1,		/* claimed by one resolver; others wait for its install */
	PG_PRESENT = 2,
	PG_POISONED = 3,	/* poisoned on purpose: accesses get SIGBUS */
	PG_GONE = 4,		/* unmapped: nothing to do any more */
	PG_STATE = 0x07,
	PG_HOT = 0x08,		/* with PG_RES: in the budget's protected queue (2Q) */
	PG_ZERO = 0x10,
	PG_WAITED = 0x20,	/* PG_BUSY: a fault arrived meanwhile; settling wakes the page */
	PG_RES = 0x40,		/* counted resident (budget.c); kept while PG_BUSY */
	PG_VOLD = 0x80,		/* PG_POISONED by a FL_VOLATILE_SIGBUS eviction */
};

enum pg_stat {
	ST_FAULTS,
	ST_COPY,
	ST_ZERO,
	ST_MOVE,
	ST_CONTINUE,
	ST_POISON,
	ST_PREFETCHED,
	ST_PF_USED,
	ST_PF_WASTED,
	ST_READS,
	ST_BYTES,
	ST_ERRORS,
	ST_WS_PREFETCHED,
	ST_WS_SKIPPED,
	ST_WS_ERRORS,
	ST_RES_IN,		/* pages that became resident (resident = in - out) */
	ST_RES_OUT,
	ST_EVICTED,
	ST_EVICT_WB,
	ST_REFAULTS,
	ST_WP_FAULTS,
	ST_SYNCED,		/* written back by fl_region_sync (eviction: ST_EVICT_WB) */
	ST_WB_CALLS,
	ST_WB_ERRORS,
	ST_LAT,
	ST_COUNT = ST_LAT + FL_LAT_BUCKETS,
};

struct pg_shard {
	_Atomic uint64_t v[ST_COUNT];
} __attribute__((aligned(64)));

/* How a region's pages are installed, once options and kernel are settled. */
enum pg_method {
	PG_COPY = 0,
	PG_MOVE = 1,
	PG_CONTINUE = 2,
};

/*
 * A tiny read-copy-update for lookups that may run in signal handlers: no
 * lock, no malloc. Readers count themselves in the current epoch's slot;
 * a writer publishes a new table, flips the epoch twice, and waits for each
 * old slot to drain before freeing what it replaced.
 */
struct pg_grace {
	_Atomic unsigned int epoch;
	_Atomic long active[2];
};

struct fl_region {
	struct fl_pager *pager;
	struct fl_region *next, *prev;	/* every region of the pager, published or not (lock) */
	uint64_t id;			/* unique in the process, to validate deferred work */
	_Atomic uintptr_t base;		/* moves on a REMAP event */
	size_t len;
	size_t ps;			/* region page size */
	unsigned int shift;		/* log2(ps) */
	size_t npages;
	struct fl_store *store;
	uint64_t store_off;
	enum fl_mem_type mem;
	enum pg_method method;
	_Atomic bool move_ok;		/* cleared once the kernel refused a MOVE */
	bool stage_move;		/* AUTO, anonymous: move whole chunks out of staging */
	bool has_zeropage;		/* UFFDIO_ZEROPAGE allowed (not hugetlb) */
	bool has_poison;
	_Atomic bool given_up;		/* fl__region_poison_absent ran: no page will come any more */
	bool ours;			/* the pager mapped it */
	bool own_memfd;
	int memfd;			/* -1 if none */
	uint64_t memfd_off;
	uint8_t *alias;			/* CONTINUE: a second, unregistered mapping of memfd */
	enum fl_prefetch prefetch;
	size_t pf_min, pf_max;		/* pages */
	enum fl_on_error on_error;
	fl_region_error_fn on_error_fn;
	void *userdata;
	uint32_t flags;
	_Atomic uint8_t *state;
	/* The access stream, for prefetch decisions and their statistics. */
	_Atomic size_t next_seq;	/* the page a sequential fault would hit next */
	_Atomic size_t window;		/* ADAPTIVE: current window, pages */
	_Atomic size_t last_pf;		/* pages prefetched by the last run, not yet judged */
	_Atomic int users;		/* resolvers inside the region: remove waits for 0 */
	_Atomic bool removing;
	_Atomic bool gone;		/* unmapped by the program, or its process exited */
	_Atomic uint32_t wait_seq;	/* futex word: bumped when a waited-on page settles */
	_Atomic int waiters;
	struct pg_shard *shards;
	struct pg_ws *ws;		/* working-set record and replay (ws.c), or NULL */
	/*
	 * A live snapshot watches the region (fl__region_wp_attach): installs
	 * map pages write-protected, and write-protect faults go to wp_fn.
	 * wp_grace: installs read wp inside it, so attaching can wait for
	 * those that read it before.
	 */
	_Atomic bool wp;
	struct pg_grace wp_grace;
	_Atomic(fl__wp_fn) wp_fn;
	void *wp_arg;
	/*
	 * Memory budget (budget.c), or NULL. bslot/bgen: the region's place
	 * among the budget's members (queue entries name it). evict_at: per
	 * page, the budget's eviction clock when it was last evicted (0:
	 * never), to count refaults and find pages that fault back soon.
	 */
	struct fl_budget *budget;
	unsigned int bslot;
	uint8_t bgen;
	enum fl_volatile vol;
	bool evictable;			/* pages may be dropped without write-back */
	_Atomic uint32_t *evict_at;
	/*
	 * Write-protect faults of the region's own (dirty.c): with track_dirty
	 * or on_wp, every install is write-protected (wp is set for good) and
	 * the first write to a page faults. dirty: one bit per page, set
	 * before the page is unprotected and cleared only once it is
	 * protected again, so a present page that is not dirty is protected.
	 */
	bool track_dirty;
	fl_region_wp_fn on_wp;
	_Atomic uint64_t *dirty;	/* npages bits, or NULL */
	pthread_mutex_t wb_lock;	/* one write-back of the region at a time: wb_buf */
	uint8_t *wb_buf;		/* PG_STAGING bytes, mapped on first use */
	int mem_fd;			/* /proc/self/mem, for write-back copies (with dirty) */
};

/* A snapshot of the regions, sorted by start address. Immutable once published. */
struct pg_entry {
	uintptr_t start, end;
	struct fl_region *r;
};

struct pg_table {
	size_t n;
	struct pg_entry e[];
};

/* A fork()ed child served by a pager of its own (fl__pager_hooks.serve_children). */
#define PG_MAX_CHILDREN 64
struct pg_child {
	struct fl_pager *p;
	struct fl_uffd *u;		/* adopted from fd */
	int fd;				/* the child's descriptor, owned */
};

/*
 * The page states of the regions at the moment a FORK event was read,
 * taken by the reader without malloc or locks (one mmap), with a use of
 * each region counted. The child's pages are what the parent's were then.
 */
struct pg_snap_ent {
	uintptr_t start;
	struct fl_region *r;
	size_t off;			/* index of its first state byte */
};

struct pg_fork_snap {
	size_t len;			/* bytes mapped */
	size_t n;
	struct pg_snap_ent e[];		/* then the state bytes */
};

/* A FORK event read, its child not yet looked after (see fork_record in pager.c). */
#define PG_FORK_RING 64
struct pg_fork {
	int fd;
	struct pg_fork_snap *snap;	/* NULL: could not be taken */
};

/*
 * A piece of a region that mremap() moved away alone: the pager does not
 * serve it, and a fault on one of its absent pages is poisoned (SIGBUS)
 * rather than left blocked.
 */
struct pg_orphan {
	uintptr_t start, end;
	size_t ps;
};

/* Data of a run read from the store whose install an event interrupted. */
struct pg_kept {
	uint64_t holes[PG_MAX_RUN / 64];
	uint8_t data[];
};

/* A run left for later because an event was pending (EAGAIN). */
struct pg_deferred {
	struct fl_region *r;		/* not a reference: validated by id before use */
	uint64_t id;
	size_t pg, n;
	void *move_src;			/* pages already taken from the store, or NULL */
	struct pg_kept *kept;		/* COPY: the data already read (owned), or NULL */
	bool filled;			/* CONTINUE: the page cache holds the run already */
};

/*
 * What one resolver (a handler thread, a SIGBUS handler, a populate call,
 * the LOOP dispatcher) needs: a staging buffer and a list of deferred runs.
 */
struct pg_ctx {
	struct fl_pager *p;
	uint8_t *staging;		/* PG_STAGING bytes; NULL: taken from the pool on demand */
	int slot;			/* pool slot of staging, -1 if not from the pool, -2 mapped */
	struct pg_deferred *def;	/* PG_DEFER entries; NULL: wait for events in place */
	size_t ndef;
	uint32_t tid;			/* the faulting thread of the fault being handled, or 0 */
	bool in_signal;			/* inside a signal handler: no logging, no malloc */
	struct fl_budget *rb;		/* budget of the bytes reserved in resv */
	uint64_t resv;			/* bytes admitted (fl__budget_admit) not yet installed */
	size_t pre_left;		/* pages counted resident before their install (seg) */
	bool populate;			/* failures are returned, the region's policy is not applied */
	bool blocked;			/* a page was left absent by the BLOCK policy (SIGBUS waits) */
};

struct pg_backlog_cell {
	_Atomic size_t seq;
	struct fl_event ev;
	uint64_t t0;
};

/* A bounded multi-producer multi-consumer queue of faults (Vyukov's design). */
struct pg_backlog {
	_Atomic size_t head __attribute__((aligned(64)));
	_Atomic size_t tail __attribute__((aligned(64)));
	struct pg_backlog_cell cell[PG_BACKLOG];
};

struct pg_worker {
	struct fl_pager *p;
	unsigned int index;
	pthread_t thread;
	bool started;
	bool nospin;			/* the last batch was slow: do not spin for the next */
	struct pg_ctx ctx;
};

struct fl_pager {
	pid_t pid;
	enum fl_pager_mode mode;
	struct fl_uffd *uffd;
	bool own_uffd;
	int fd;
	int saved_fd_flags;		/* borrowed fd: its O_NONBLOCK state before us, or -1 */
	uint64_t feats;			/* FL_FEAT_* of the uffd */
	unsigned int nthreads;
	unsigned int spin_us;
	bool pin;			/* readers pinned, one per CPU */
	unsigned int nreaders;		/* threads that poll the userfaultfd (one per CPU) */
	_Atomic int polling;		/* threads able to read the userfaultfd right now */

	pthread_mutex_t lock;		/* configuration: table writes, start/stop, pending */
	_Atomic(struct pg_table *) table;
	_Atomic size_t hint;		/* index of the last region found */
	struct pg_grace grace;

	uint64_t next_id;		/* region ids, under lock */
	struct fl_region *regions;	/* every region not yet removed, under lock */
	_Atomic bool reading;		/* the read token: one reader at a time (see read_apply) */
	/*
	 * The discard gate (REMOVE events only, see fl__install_enter): a read
	 * takes events in only while no install is between its look at the
	 * page states and the end of its ioctl, and installs wait while a
	 * read's events are not yet applied.
	 */
	_Atomic bool applying;
	_Atomic int installing;
	bool gate;			/* the uffd delivers REMOVE events */
	_Atomic bool running;
	_Atomic bool dead;		/* the served process exited (ESRCH) */
	_Atomic uint32_t run_seq;	/* futex word: bumped on start and removal (SIGBUS waits) */
	int stop_efd;			/* THREADS: readable while stopping */
	int kick_efd;			/* THREADS: readable when the backlog needs a hand */
	_Atomic int idle;		/* handler threads blocked in poll */
	struct pg_worker *workers;
	struct pg_backlog *backlog;

	/* Runs deferred by threads that stopped, retried on start. Under lock. */
	struct pg_deferred *pending;
	size_t npending, cap_pending;

	uint8_t *buffers;		/* one mapping: the pool, then one buffer per thread */
	size_t buffers_len;
	_Atomic bool pool_busy[PG_POOL];
	uint8_t *zeros;			/* PG_STAGING bytes of read-only zeros (hugetlb holes) */
	struct pg_ctx *loop_ctx;
	int sig_slot;			/* SIGBUS: index in the process-wide table, or -1 */
	unsigned int sig_gen;		/* SIGBUS: fork generation it was attached in */
	fl_pager_event_fn on_event;	/* may be NULL */
	void *event_userdata;

	struct fl__pager_hooks hooks;	/* for clients inside the library (supply.h) */
	bool own_memory;		/* the memory is this process's (own_uffd, or said so) */
	/*
	 * FORK events: the reader only records them here (fork() holds the
	 * malloc locks until its event is read); the fork thread (THREADS
	 * mode) or the dispatcher (LOOP) looks after the children afterwards.
	 */
	struct pg_fork forks[PG_FORK_RING];
	_Atomic size_t fork_head, fork_tail;
	pthread_mutex_t fork_lock;	/* one consumer of forks at a time */
	int fork_efd;			/* THREADS: readable when forks has entries */
	pthread_t fork_thread;
	bool fork_started;
	/* Children served (hooks.serve_children): published by count, freed at destroy only. */
	struct pg_child *children;
	_Atomic size_t nchildren;
	int *held;			/* descriptors of unserved children kept open (no POISON) */
	size_t nheld;

	pthread_mutex_t orphan_lock;	/* orphans: REMAP events write, faults outside regions read */
	struct pg_orphan *orphans;
	size_t norphans, cap_orphans;
};

/* Tell an attached live snapshot (fl__region_wp_attach) about pages of @r. */
void fl__region_wp_tell(struct fl_region *r, size_t pg, size_t n, int why);

/* region.c: grace periods (readers may be signal handlers), the region table, events */
unsigned int fl__grace_enter(struct pg_grace *g);
void fl__grace_exit(struct pg_grace *g, unsigned int e);
void fl__grace_wait(struct pg_grace *g);
struct fl_region *fl__region_get(struct fl_pager *p, uintptr_t addr, uintptr_t *ret_start);
struct fl_region *fl__region_get_by_id(struct fl_pager *p, struct fl_region *r, uint64_t id);
struct fl_region *fl__table_find(struct pg_table *t, size_t *hint, uintptr_t addr,
				 uintptr_t *ret_start);
void fl__region_put(struct fl_region *r);
/* Regions kept on removal: their evicted pages back, before the handler threads stop. */
void fl__region_keep_all(struct fl_pager *p);
int fl__region_remove(struct fl_region *r);
int fl__table_publish(struct fl_pager *p, struct fl_region *add, struct fl_region *del);
void fl__region_remap(struct fl_pager *p, uintptr_t from, uintptr_t to, uint64_t len);
void fl__region_unmap(struct fl_pager *p, uintptr_t start, uintptr_t end);
void fl__region_discard(struct fl_pager *p, uintptr_t start, uintptr_t end);
/* A fault outside every region: poison it if it lies in a moved-away piece. true: handled. */
bool fl__orphan_fault(struct fl_pager *p, uintptr_t addr);
/*
 * A write-protect fault at @addr, outside every region: a piece of a
 * write-protected region (dirty tracking, a live snapshot) that the
 * program moved away alone, whose pages kept their protection. Nobody
 * tracks it any more: unprotect the page, or wake the writer.
 */
void fl__orphan_wp_fault(struct fl_pager *p, uintptr_t addr);
void fl__pager_mark_dead(struct fl_pager *p);

/* resolve.c */
void fl__stat_add(struct fl_region *r, enum pg_stat s, uint64_t v);
void fl__stat_lat(struct fl_region *r, uint64_t ns);
/* Handle one fault at @addr of @r (region start @start). Returns 0 or -ESRCH. */
int fl__resolve_fault(struct pg_ctx *c, struct fl_region *r, uintptr_t start, uintptr_t addr,
		      uint32_t fault_flags, uint64_t t0);
/* Retry the deferred runs of @c. Returns the number still deferred. */
size_t fl__resolve_retry(struct pg_ctx *c);
/* Bring pages [pg, pg+n) in, waiting for those in flight. Returns 0 or -errno. */
int fl__resolve_populate(struct pg_ctx *c, struct fl_region *r, size_t pg, size_t n);
/* Poison every page of @r that is not present (removal). */
void fl__resolve_poison_absent(struct fl_region *r);
void fl__wake_waiters(struct fl_region *r);
/* Wait until page @pg is no longer in state @busy_state, or the region goes (bounded retries). */
void fl__wait_page(struct fl_region *r, size_t pg, uint8_t busy_state);
void fl__wait_seq(_Atomic uint32_t *seq, uint32_t seen, long ns);
void fl__wait_seq_wake(_Atomic uint32_t *seq);
/* SIGBUS mode: resolve the fault at @addr in the faulting thread. false: not ours, chain. */
bool fl__resolve_sigbus(struct fl_region *r, uintptr_t start, uintptr_t addr);
/*
 * Around an install ioctl: after enter, the PG_ZERO bits of the pages are
 * final until exit (no event can be read meanwhile). See pager.c.
 */
void fl__install_enter(struct fl_pager *p);
void fl__install_exit(struct fl_pager *p);
/* THREADS mode: before a store read, make sure some thread still reads the userfaultfd. */
void fl__pager_keep_reading(struct fl_pager *p);
/* Give back a staging buffer taken from the pool. */
void fl__ctx_release(struct pg_ctx *c);

/* sigbus.c */
int fl__sigbus_attach(struct fl_pager *p);
void fl__sigbus_detach(struct fl_pager *p);
/* After a SIGBUS pager's table changed: wait until no signal handler still reads the old one. */
void fl__sigbus_sync(void);

/* pager.c */
void fl__pager_save_pending(struct fl_pager *p, struct pg_ctx *c);

/*
 * budget.c: memory budgets and eviction. Resident pages carry PG_RES; every
 * change of it goes through fl__budget_in / fl__budget_out, which keep the
 * region's and the budget's counts (lock-free, async-signal-safe).
 */
/* Page @pg of @r becomes resident (PG_RES is being set): queue it; returns PG_HOT or 0. */
uint8_t fl__budget_page_in(struct pg_ctx *c, struct fl_region *r, size_t pg);
/* Queue page @pg (now PRESENT|PG_RES, @hot as returned above) for eviction. */
void fl__budget_queue(struct fl_region *r, size_t pg, uint8_t hot);
/* @n pages of @r became resident (after fl__budget_page_in of each). */
void fl__budget_in(struct pg_ctx *c, struct fl_region *r, size_t n);
/* @n pages of @r stopped being resident, @nhot of them PG_HOT. */
void fl__budget_out(struct fl_region *r, size_t n, size_t nhot);
/*
 * Before installing up to @want pages of @r: reserve room in its budget
 * (into c->resv), waiting for eviction when the budget is full. Returns the
 * pages admitted (1 to @want). Regions without a budget: @want.
 */
size_t fl__budget_admit(struct pg_ctx *c, struct fl_region *r, size_t want);
/* Give back what c->resv still holds. */
void fl__budget_unreserve(struct pg_ctx *c);
/* fl_region_add: check the options and join @b (before the region is published). */
int fl__budget_join(struct fl_region *r, struct fl_budget *b, enum fl_volatile vol);
/* fl_region_remove: leave the budget (no eviction any more); then, once no resolver is
   left, give its resident pages back (fl__budget_settle). */
void fl__budget_leave(struct fl_region *r);
/* Back into the budget it left (fl__budget_leave) when it stays after all. */
void fl__budget_rejoin(struct fl_region *r);
void fl__budget_settle(struct fl_region *r);
/* fl_region_advise's DONTNEED and WILLNEED parts. */
int fl__budget_advise(struct fl_region *r, size_t pg, size_t n, int advice);
/* dirty.c: dirty tracking and write-back */
/* At fl_region_add(), before publishing: set up tracking if asked. 0 or -errno. */
int fl__dirty_setup(struct fl_region *r);
void fl__dirty_free(struct fl_region *r);
/* FL_REGISTER_* modes the region needs on top of its own. */
uint32_t fl__dirty_modes(const struct fl_region *r);
/*
 * A write-protect fault at page @pg of a region with track_dirty or on_wp
 * (THREADS, LOOP, and SIGBUS through fl__dirty_sigbus). Marks the page
 * dirty, calls on_wp and unprotects it; a page in flight (PG_BUSY) gets
 * PG_WAITED: whoever settles it wakes the writer, which faults again.
 */
void fl__dirty_wp_fault(struct pg_ctx *c, struct fl_region *r, size_t pg);
/*
 * fl__dirty_flush - eviction's write-back. The caller claimed pages
 * [pg, pg+n) of @r that were PG_PRESENT (CAS to PG_BUSY): bit i of
 * @claimed set means page pg+i is claimed. The dirty ones among them are
 * written to the store (in runs); on return every page whose bit is still
 * set is clean and write-protected, so while it stays PG_BUSY no write to
 * it can land (a writer blocks in its write-protect fault, marked
 * PG_WAITED), and the caller may drop it, set it PG_ABSENT and wake the
 * range (fl_uffd_wake if PG_WAITED was seen, and fl__wake_waiters). A
 * page the store failed to write has its bit cleared here: it stays dirty
 * and must not be dropped; the caller sets it back to PG_PRESENT (waking
 * likewise). *@ret_written (may be NULL): the pages written (counted in
 * the region's written_back, eviction's write-back). Returns 0,
 * or the first -errno (some bits were cleared).
 * Regions without track_dirty: returns 0, nothing to write. Must not be
 * called on a handler thread of the pager (the store's write may block).
 */
int fl__dirty_flush(struct fl_region *r, size_t pg, size_t n, uint64_t *claimed,
		    size_t *ret_written);
/* Whether @r tracks dirty pages. */
static inline bool fl__dirty_tracked(const struct fl_region *r)
{
	return r->track_dirty;
}
/* Pages [pg, pg+n) were discarded by the program (they read zeros now): mark them dirty. */
void fl__dirty_discarded(struct fl_region *r, size_t pg, size_t n);

/* ws.c: working sets */
struct pg_ws_opts {
	bool record;
	const char *replay, *loading_set;
	size_t batch;
};
/* Set up recording and/or load the replay's files (before the region is published). */
int fl__ws_setup(struct fl_region *r, const struct pg_ws_opts *o);
/* Start the replay thread (once the region is published). */
int fl__ws_start(struct fl_region *r);
/* Stop the replay thread; r->removing is set already. */
void fl__ws_stop(struct fl_region *r);
void fl__ws_free(struct fl_region *r);
/* A fault at page @pg: note its first touch. Async-signal-safe. */
void fl__ws_note(struct fl_region *r, size_t pg);
/* ws_recorded and ws_done_ns for fl_region_stats. */
void fl__ws_stats(const struct fl_region *r, uint64_t *recorded, uint64_t *done_ns);

#endif /* FL_PAGER_INT_H */
