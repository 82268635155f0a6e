/* SPDX-License-Identifier: MIT */
/* faultline pager: regions of memory whose pages come from stores, resolved on fault. */
#ifndef FAULTLINE_PAGER_H
#define FAULTLINE_PAGER_H

#include <stddef.h>
#include <stdint.h>

#include <faultline/store.h>
#include <faultline/uffd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A pager: one userfaultfd, its regions and whoever resolves their faults. Opaque. */
struct fl_pager;
/* A range of memory served by a pager from a store. Opaque. */
struct fl_region;

/* Who resolves faults. */
enum fl_pager_mode {
	/*
	 * Handler threads (named fl-handler/N) read every queued message at
	 * once, spin briefly before blocking, and resolve. Default thread count:
	 * FL_THREADS from the environment, else 2; at most FL_PAGER_MAX_THREADS.
	 */
	FL_PAGER_THREADS = 0,
	/*
	 * The faulting thread resolves its own fault in a SIGBUS handler
	 * (UFFD_FEATURE_SIGBUS): no context switch. Only for memory of this
	 * process. SIGBUS for addresses outside faultline regions goes to the
	 * handler that was installed before (or the default action).
	 */
	FL_PAGER_SIGBUS = 1,
	/* The caller's event loop polls fl_pager_fd() and calls fl_pager_dispatch(). */
	FL_PAGER_LOOP = 2,
};

/*
 * The program's own memory calls. THREADS mode asks for REMAP, REMOVE and
 * UNMAP events (they need no privilege) and follows them: a region moved
 * whole by mremap is served at its new address; a part moved away alone is
 * no longer served (its pages absent at the move get SIGBUS when touched
 * there, never zeros; without UFFDIO_POISON, before Linux 6.6, they are
 * made PROT_NONE in the pager's own process (SIGSEGV), but in another
 * process's memory (a borrowed userfaultfd) a fault there stays blocked,
 * logged, until the pager goes); pages discarded with MADV_DONTNEED read
 * zeros afterwards (as the program asked), also when the discard raced a
 * store read in flight for them: once madvise() returned, the store's data
 * never appears there (in memory of another process too, with a borrowed
 * userfaultfd that delivers REMOVE events); munmap drops the range. Events
 * are applied before the faults read with them. LOOP and
 * SIGBUS modes do not ask for them (the loop thread, or a faulting thread,
 * would block in mremap until someone read the event): do not mremap their
 * regions, since the kernel then drops the registration of the moved range.
 *
 * fork(): children are not served. Memory the pager maps is MADV_DONTFORK
 * (a child touching it gets SIGSEGV, never wrong data). In a caller-provided
 * range a child sees what was present at fork time. Its absent pages: with
 * FL_FEAT_EVENT_FORK on the userfaultfd and no on_event callback, the pager
 * poisons them through the child's descriptor before closing it (the child
 * gets SIGBUS there; pages the program had discarded read zeros; where the
 * kernel cannot poison, the descriptor stays open and the child's faults
 * there stay blocked until the pager is destroyed). A grandchild (the
 * child forks while the pager poisons it) is not looked after: its pages
 * not yet poisoned at that fork read zeros. The handler thread
 * that reads a FORK event only notes the child's page states (the forking
 * thread holds the C library's malloc locks until its event is read);
 * in THREADS mode a thread of its own, "fl-fork", then looks after the
 * child, whose faults stay blocked meanwhile; in LOOP mode
 * fl_pager_dispatch() does, after reading (it may then wait for a fork()
 * in progress in another thread to return); without
 * FL_FEAT_EVENT_FORK the kernel unregisters them in the child and they read
 * as zeros: populate first, or use MADV_DONTFORK. Every pager call in a
 * child returns -ECHILD. The out-of-process monitor (monitor.h) serves
 * children: with FL_FEAT_EVENT_FORK on the userfaultfd, a FORK event hands
 * the child's descriptor to fl_pager_opts.on_event.
 */

#define FL_PAGER_DEFAULT_THREADS 2
#define FL_PAGER_MAX_THREADS 64

/*
 * fl_pager_event_fn - what a pager tells its owner about the events it read.
 *
 * Called with the events (FORK, REMAP, REMOVE, UNMAP, UNKNOWN; never page
 * faults) of one read of the userfaultfd: @n >= 1 of them, in the order the
 * kernel queued them, after the pager applied them (as described above) and
 * before it handles the faults read with them. Calls never overlap, and no
 * other thread reads the userfaultfd until the callback returns: keep it
 * short. It runs on a handler thread (THREADS mode) or in fl_pager_dispatch()
 * (LOOP mode); SIGBUS mode reads no events.
 * The callback owns the descriptor of every FORK event (ev[i].fork.fd) and
 * must close it (or serve the child through it: a pager of its own with
 * fl_pager_opts.uffd). It may add and remove regions of this pager
 * (fl_region_add(), fl_region_remove()), but must not stop or destroy it.
 */
typedef void (*fl_pager_event_fn)(struct fl_pager *p, const struct fl_event *ev, size_t n,
				  void *userdata);

struct fl_pager_opts {
	size_t sz;			/* sizeof(struct fl_pager_opts) */
	enum fl_pager_mode mode;
	unsigned int threads;		/* THREADS mode; 0 = default (see above) */
	unsigned int spin_us;		/* THREADS mode: poll this long before blocking; 0 = default 50 */
	/*
	 * Serve this userfaultfd instead of opening one: its memory may belong
	 * to another process (received over a socket, or a FORK child's). The
	 * pager then touches that memory only through uffd ioctls. Borrowed: it
	 * must outlive the pager; the pager makes it non-blocking and restores
	 * its flags when destroyed. Not with FL_PAGER_SIGBUS.
	 */
	struct fl_uffd *uffd;
	uint64_t features;		/* extra FL_FEAT_* for the userfaultfd the pager opens */
	/*
	 * THREADS and LOOP modes (-EINVAL with SIGBUS): called with the events
	 * of each read (see fl_pager_event_fn). NULL: the pager applies them
	 * alone; the child of a FORK event is not served: its absent pages are
	 * poisoned, then its descriptor closed (see fork() above).
	 */
	fl_pager_event_fn on_event;
	void *userdata;			/* for on_event; never touched by the library */
};

/*
 * fl_pager_create - a pager with no regions yet, not started.
 * Returns 0, -EINVAL, -ENOSYS/-EPERM/-EOPNOTSUPP (as fl_uffd_open), -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_pager_create(const struct fl_pager_opts *opts, struct fl_pager **ret);

/*
 * fl_pager_start - begin resolving faults (THREADS: start the threads;
 * SIGBUS: install the signal handler; LOOP: nothing to start).
 * fl_pager_stop - stop resolving: threads exit; faults that arrive
 * meanwhile stay blocked (never zero-filled) until the pager starts again
 * or is destroyed. Both return 0 or -errno; -ECHILD in a forked child.
 * Thread safety: the thread that created the pager.
 */
FL_API int fl_pager_start(struct fl_pager *p);
FL_API int fl_pager_stop(struct fl_pager *p);

/*
 * fl_pager_destroy - stop, remove every region (see fl_region_remove) and
 * free. Threads still blocked in faults on a region are released as
 * fl_region_remove() describes. Accepts NULL.
 * Thread safety: the thread that created the pager; no other call may run.
 */
FL_API void fl_pager_destroy(struct fl_pager *p);

/* The userfaultfd the pager serves (for poll in LOOP mode). Thread safety: any thread. */
FL_API int fl_pager_fd(const struct fl_pager *p);
FL_API struct fl_uffd *fl_pager_uffd(struct fl_pager *p);

/*
 * fl_pager_dispatch - LOOP mode: read and handle every queued message
 * (events first, then faults), without blocking.
 * Returns the number of messages handled (0 if none was queued), or -errno.
 * Thread safety: one caller at a time.
 */
FL_API int fl_pager_dispatch(struct fl_pager *p);

/* ---------------------------------------------------------------- budgets */

/*
 * A memory budget: a cap on the bytes that regions sharing it may hold
 * resident, kept by evicting pages in the background. Any number of
 * regions, of one pager or of several, may share one budget. Opaque.
 *
 * "Resident" counts every page the pager installed (or found present) in
 * a region of the budget and has not since evicted, and that the program
 * has not discarded or unmapped: data pages and zero pages alike (a zero
 * page takes memory once written). Pages the program wrote into memory
 * it registered itself before the region was added count once the pager
 * learns of them.
 *
 * Eviction starts when resident bytes pass @high and brings them under
 * @low, @batch bytes per step, on a thread of the budget ("fl-evict"), in
 * every pager mode. A fault (or fl_region_populate()) that would take
 * resident past @bytes + @batch waits for eviction to make room; no other
 * fault waits for it, and a fault on a page being evicted waits only for
 * that page. See faultline(7), "Budgets", for how pages are dropped, what
 * may not be evicted, and the policies' costs.
 */
struct fl_budget;

/* Which resident pages eviction picks. */
enum fl_evict_policy {
	/* First in, first out: the page installed longest ago (umap's policy). */
	FL_EVICT_FIFO = 0,
	/*
	 * Two queues (2Q): pages are installed into a probation queue; a page
	 * that faults back soon after its eviction (within about one budget's
	 * worth of later evictions) is installed into a protected queue, which
	 * is evicted only while the probation queue holds less than a quarter
	 * of the resident pages. A hot set survives scans and random cold
	 * reads that FIFO would let push it out. Learns from faults alone: no
	 * page is unmapped to watch it, so it costs no extra faults.
	 */
	FL_EVICT_2Q = 1,
};

struct fl_budget_opts {
	size_t sz;			/* sizeof(struct fl_budget_opts) */
	uint64_t bytes;			/* the budget; at least 2 pages of 4 KiB */
	/*
	 * Watermarks in bytes, low < high <= bytes. 0: high = bytes - batch,
	 * low = high - batch (at least one 4 KiB page each).
	 */
	uint64_t high, low;
	enum fl_evict_policy policy;
	size_t batch;			/* bytes evicted per step, a multiple of 4096, at most
					   bytes / 2; 0: bytes / 16 rounded down to 4 KiB,
					   between 4 KiB and 4 MiB */
};

/*
 * fl_budget_create - a budget with no regions yet; starts its eviction
 * thread. Regions join it through fl_region_opts.budget. Returns 0,
 * -EINVAL (bad options, logged), -ENOMEM, or pthread_create's -errno.
 * Thread safety: any thread.
 */
FL_API int fl_budget_create(const struct fl_budget_opts *opts, struct fl_budget **ret);

/*
 * fl_budget_destroy - stop the eviction thread and free. Every region of
 * the budget must have been removed first (a region still in it is left
 * alone and the budget is not freed: logged). Accepts NULL.
 * Thread safety: any thread, once no region uses the budget.
 */
FL_API void fl_budget_destroy(struct fl_budget *b);

struct fl_budget_stats {
	size_t sz;			/* the caller sets sizeof(struct fl_budget_stats); on
					   return, the bytes the library filled */
	uint64_t bytes, high, low, batch;	/* as configured (defaults resolved) */
	uint64_t resident;		/* bytes resident now (see above) */
	uint64_t resident_max;		/* the most bytes ever resident at once */
	uint64_t evicted;		/* bytes evicted (dropped, after any write-back) */
	uint64_t written_back;		/* bytes written to a store before being dropped */
	uint64_t refaults;		/* bytes brought in again after their eviction */
	uint64_t passes;		/* eviction steps (each up to one batch) */
	uint64_t waits;			/* faults that waited for eviction to make room */
	uint64_t skipped;		/* pages eviction picked but left: in flight, watched by a
					   live snapshot, or not evictable (faultline(7)) */
	uint64_t regions;		/* regions in the budget now */
};

/*
 * A snapshot of the budget's counters, taken between two eviction steps
 * (it waits for a step under way): the evicted and resident pages of the
 * regions' fl_region_stats() agree with it when read around it while no
 * step ran. Returns 0, -EINVAL or -ECHILD. Thread safety: any thread.
 */
FL_API int fl_budget_stats(const struct fl_budget *b, struct fl_budget_stats *ret);

/*
 * Volatile regions: pages eviction may drop without writing them back,
 * whatever the program wrote into them. What a later access finds:
 */
enum fl_volatile {
	FL_VOLATILE_NONE = 0,	/* not volatile: pages written are written back first
				   (a store that can write, with dirty tracking) */
	FL_VOLATILE_STORE = 1,	/* the store's page, as if never written (a cache) */
	FL_VOLATILE_ZERO = 2,	/* zeros */
	FL_VOLATILE_SIGBUS = 3,	/* SIGBUS at that address (si_addr), so the program can
				   regenerate the page: fl_region_advise(FL_ADVISE_WILLNEED)
				   on it then gives a zero page to write into. Needs
				   UFFDIO_POISON (Linux 6.6) */
};

/* How pages are put into the region. */
enum fl_install {
	FL_INSTALL_AUTO = 0,	/* MOVE when the store can hand pages over, CONTINUE for
				   memfd regions with minor faults, else COPY; anonymous
				   regions move whole 2 MiB chunks out of staging the
				   store's read() filled (fl_region_add(3)) */
	FL_INSTALL_COPY = 1,
	FL_INSTALL_MOVE = 2,	/* private anonymous regions and FL_STORE_MOVE stores only */
	FL_INSTALL_CONTINUE = 3,	/* SHMEM/HUGETLB regions: fill the page cache, then map */
};

enum fl_prefetch {
	FL_PREFETCH_NONE = 0,
	FL_PREFETCH_FIXED = 1,		/* always bring prefetch_max bytes from the fault on */
	FL_PREFETCH_ADAPTIVE = 2,	/* double on sequential faults (min to max), back to
					   min on a random one, as CRIU does (64 KiB to 4 MiB) */
};

/* What happens to a fault whose page the store could not deliver. Never zeros. */
enum fl_on_error {
	FL_ON_ERROR_POISON = 0,	/* poison the page: the faulting thread gets SIGBUS */
	FL_ON_ERROR_BLOCK = 1,	/* leave the thread blocked, report through on_error_fn;
				   fl_region_populate() can retry later */
};

enum fl_region_flags {
	FL_REGION_KEEP_ON_REMOVE = 1u << 0,	/* remove: leave absent pages as they are
						   (see fl_region_remove) */
	FL_REGION_KEEP_REGISTERED = 1u << 1,	/* remove: leave the range registered; for a
						   borrowed userfaultfd whose owner keeps the
						   registration (a monitor's client) */
	FL_REGION_WS_RECORD = 1u << 2,		/* record the order of first touches (faults)
						   for fl_region_ws_save() */
	FL_REGION_TRACK_DIRTY = 1u << 3,	/* find the pages written since they were
						   installed, for fl_region_sync() and
						   fl_region_dirty() (fl_region_sync(3));
						   implied by a budget over a writable
						   store, not volatile */
};

/*
 * Called from a handler thread when the store fails for the page at @off
 * (in SIGBUS mode from the faulting thread's signal handler: it must then
 * be async-signal-safe).
 */
typedef void (*fl_region_error_fn)(struct fl_region *r, uint64_t off, int err, void *userdata);

/*
 * Called on the first write to a page at @off of the region since the
 * pager installed it (or since fl_region_sync() wrote it back), while the
 * writing thread waits; the write goes on when it returns. From a handler
 * thread, from fl_pager_dispatch() (LOOP), or in SIGBUS mode from the
 * writing thread's signal handler (then async-signal-safe). It must not
 * call the pager. See fl_region_sync(3).
 */
typedef void (*fl_region_wp_fn)(struct fl_region *r, uint64_t off, void *userdata);

struct fl_region_opts {
	size_t sz;			/* sizeof(struct fl_region_opts) */
	void *addr;			/* an existing page-aligned range, or NULL: the pager maps one */
	size_t len;			/* bytes, a multiple of page_size */
	struct fl_store *store;		/* borrowed: must outlive the region */
	uint64_t store_off;		/* the region's byte 0 is the store's byte store_off */
	size_t page_size;		/* 0: 4 KiB (2 MiB for HUGETLB); a power-of-two multiple of 4 KiB */
	enum fl_mem_type mem;		/* what the pager maps, or what addr is */
	int memfd;			/* SHMEM/HUGETLB existing ranges: the memfd behind addr, for
					   CONTINUE; ignored when the pager maps (set -1 or 0 otherwise) */
	uint64_t memfd_off;		/* offset of addr within memfd */
	enum fl_install install;
	enum fl_prefetch prefetch;
	size_t prefetch_min;		/* bytes; 0: 64 KiB */
	size_t prefetch_max;		/* bytes; 0: 4 MiB */
	enum fl_on_error on_error;
	fl_region_error_fn on_error_fn;	/* may be NULL */
	void *userdata;			/* for on_error_fn; never touched by the library */
	uint32_t flags;			/* FL_REGION_* */
	/*
	 * Working-set replay (fl_region_ws_save(3)): a working-set file that
	 * fl_region_ws_save() wrote for a region of the same length and page
	 * size. From fl_region_add() on, a thread of the region ("fl-ws")
	 * installs its pages in the recorded order, ws_batch bytes at a time,
	 * into pages still absent only; faults never wait for a batch. NULL:
	 * no replay.
	 */
	const char *ws_replay;
	const char *ws_loading_set;	/* that working set's loading set, or NULL: read the
					   pages from the store */
	size_t ws_batch;		/* bytes per batch; 0: 2 MiB */
	/*
	 * Memory budget (0.3; see struct fl_budget): borrowed, must outlive
	 * the region. NULL: the region's pages are never evicted. Needs
	 * memory of this process (not a borrowed userfaultfd's other process),
	 * and for SHMEM/HUGETLB regions the memfd behind the range; not with
	 * ws_replay. -EOPNOTSUPP where this kernel cannot drop pages unseen
	 * (private anonymous memory in THREADS mode needs UFFDIO_MOVE, 6.8).
	 */
	struct fl_budget *budget;
	enum fl_volatile vol;		/* with a budget: see enum fl_volatile */
	/*
	 * 0.3: write-protect faults (fl_region_sync(3)). The pager installs
	 * pages write-protected and calls on_wp (with userdata) on the first
	 * write to each. NULL: none.
	 */
	fl_region_wp_fn on_wp;
};

/*
 * fl_region_add - serve [addr, addr+len) from @opts->store. Registers the
 * range (MISSING; MINOR too for CONTINUE). With addr NULL the pager maps the
 * memory (private anonymous, a memfd, or a hugetlbfs memfd) and unmaps it
 * on removal. Returns 0, -EINVAL (bad options, range past the store's size,
 * overlap with another region), -EBUSY, -EOPNOTSUPP (the install method or
 * page size cannot work on this memory or kernel), -ENOMEM, -ECHILD.
 * Thread safety: any thread, also after start.
 */
FL_API int fl_region_add(struct fl_pager *p, const struct fl_region_opts *opts,
			 struct fl_region **ret);

/*
 * fl_region_remove - stop serving the region and free it. Pages not yet
 * present are first poisoned (threads blocked in faults, and later
 * accesses, get SIGBUS rather than zeros) unless FL_REGION_KEEP_ON_REMOVE
 * is set; then the range is unregistered (unless FL_REGION_KEEP_REGISTERED
 * is set: its faults then wait for whoever reads the userfaultfd next), and
 * unmapped if the pager mapped it. Returns 0 or -errno. Thread safety: any
 * thread.
 */
FL_API int fl_region_remove(struct fl_region *r);

FL_API void *fl_region_addr(const struct fl_region *r);
FL_API size_t fl_region_len(const struct fl_region *r);

/*
 * fl_region_populate - bring [off, off+len) of the region in now, as a
 * fault would (pages already present are skipped). Needed before passing
 * SIGBUS-mode memory to system calls (which fail with EFAULT on missing
 * pages), and useful as background prefetch. Over the whole region it is
 * the eager restore (everything installed before the program runs, whole
 * 2 MiB chunks moved in where AUTO allows it). Returns 0, or the first
 * error (-EIO from the store, -EINVAL for a range outside the region).
 * Thread safety: any thread.
 */
FL_API int fl_region_populate(struct fl_region *r, uint64_t off, size_t len);

/* Advice for fl_region_advise(). */
enum fl_advice {
	FL_ADVISE_NORMAL = 0,	/* no advice: forget what DONTNEED said */
	FL_ADVISE_WILLNEED = 1,	/* bring the pages in now, in the background of faults
				   (as fl_region_populate, within the budget) */
	FL_ADVISE_DONTNEED = 2,	/* evict these first; a volatile region's pages are
				   dropped at once */
};

/*
 * fl_region_advise - tell the pager how [off, off+len) will be used
 * (offsets in bytes, multiples of the region's page size). WILLNEED
 * populates the range (waiting for eviction to make room where the budget
 * is full) and returns its first error; on pages of a FL_VOLATILE_SIGBUS
 * region that eviction dropped it installs zero pages for the program to
 * regenerate. DONTNEED marks resident pages to be evicted before any other
 * (a region without a budget: -EINVAL); on a volatile region it drops them
 * now (they then read as its fl_volatile says). Returns 0, -EINVAL (bad
 * range or advice, logged), -ECHILD, or populate's error.
 * Thread safety: any thread.
 */
FL_API int fl_region_advise(struct fl_region *r, uint64_t off, size_t len, int advice);

#define FL_LAT_BUCKETS 32

struct fl_region_stats {
	size_t sz;			/* the caller sets sizeof(struct fl_region_stats); on return,
					   the bytes the library filled (see fl_region_stats(3)) */
	uint64_t faults;		/* faults seen on this region */
	uint64_t pages_copy;		/* pages installed by each method */
	uint64_t pages_zero;
	uint64_t pages_move;
	uint64_t pages_continue;
	uint64_t pages_poison;
	uint64_t pages_prefetched;	/* installed ahead of a fault */
	uint64_t prefetch_used;		/* of those, pages the program went on to read
					   (a later fault continued past them) */
	uint64_t prefetch_wasted;	/* of those, pages left behind when accesses jumped away */
	uint64_t store_reads;		/* read() calls on the store */
	uint64_t store_bytes;
	uint64_t errors;		/* store failures and failed installs */
	/* Fault handling time, from reading the fault to its page installed:
	   bucket i counts faults of [2^i, 2^(i+1)) ns. */
	uint64_t lat_hist[FL_LAT_BUCKETS];
	/* Working sets (0.3; see fl_region_ws_save(3)). */
	uint64_t ws_recorded;		/* FL_REGION_WS_RECORD: pages recorded so far */
	uint64_t ws_prefetched;		/* replay: pages installed ahead of any fault */
	uint64_t ws_skipped;		/* replay: pages a fault (or a discard) reached first */
	uint64_t ws_errors;		/* replay: pages not installed (read or CRC failed);
					   their faults read the store */
	uint64_t ws_done_ns;		/* replay: from fl_region_add() to the last batch
					   installed; 0 while it runs */
	/* Budgets (0.3; see struct fl_budget), in pages of the region. */
	uint64_t resident;		/* pages resident now */
	uint64_t evicted;		/* pages evicted */
	uint64_t written_back;		/* of those, written to the store by eviction first */
	uint64_t refaults;		/* pages brought in again after their eviction */
	/* Dirty tracking and write-back (0.3; see fl_region_sync(3)). */
	uint64_t wp_faults;		/* first writes to clean pages (write-protect faults) */
	uint64_t synced;		/* dirty pages fl_region_sync() wrote to the store
					   (eviction's are written_back: no page in both) */
	uint64_t writeback_calls;	/* write() calls on the store (sync and eviction) */
	uint64_t writeback_errors;	/* pages the store failed to write (still dirty) */
};

/* A snapshot of the region's counters. Thread safety: any thread. */
FL_API int fl_region_stats(const struct fl_region *r, struct fl_region_stats *ret);

/*
 * fl_region_ws_save - write the working set FL_REGION_WS_RECORD recorded
 * so far (the pages in the order of their first fault) to @path, and, if
 * @loading_set is not NULL, their data from the region's store, in that
 * order, to @loading_set, so that a replay reads it in one sequential pass.
 * Both files are written whole under a temporary name, then renamed.
 * Format: doc/working-set-format.md. Returns 0, -EINVAL (no recording on
 * this region, NULL path), the store's error, or the file system's -errno.
 * Thread safety: any thread, while faults go on.
 */
FL_API int fl_region_ws_save(struct fl_region *r, const char *path, const char *loading_set);

/*
 * fl_region_sync - write the dirty pages of [off, off+len) to the store
 * now (FL_REGION_TRACK_DIRTY): each is write-protected, copied and
 * written in runs; they stay resident and clean until written again. A
 * write racing the copy is never lost: it makes the page dirty again.
 * Pages another thread is writing back are waited for. Returns 0, the
 * first error of the store (those pages stay dirty), -EINVAL (no
 * tracking, range outside the region), -ENOENT (region gone), -ECHILD.
 * Thread safety: any thread but a handler thread of the pager.
 *
 * fl_region_dirty - which pages of [off, off+len) are dirty now: bit i of
 * @bitmap (may be NULL; the caller's, len/page size bits, rounded up to
 * 64) is set for the i-th page. Returns the number of dirty pages, or
 * -EINVAL. Thread safety: any thread (a snapshot: writes go on).
 */
FL_API int fl_region_sync(struct fl_region *r, uint64_t off, size_t len);
FL_API long fl_region_dirty(const struct fl_region *r, uint64_t off, size_t len,
			    uint64_t *bitmap);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_PAGER_H */
