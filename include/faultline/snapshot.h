/* SPDX-License-Identifier: MIT */
/* faultline snapshots: writing and reading snapshot files (doc/snapshot-format.md). */
#ifndef FAULTLINE_SNAPSHOT_H
#define FAULTLINE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include <faultline/uffd.h>
#include <faultline/store.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ writer */

/* A snapshot file being written. Opaque. */
struct fl_snapshot_writer;

enum fl_snapshot_flags {
	FL_SNAPSHOT_ZSTD = 1u << 0,	/* compress data per chunk with zstd (-EOPNOTSUPP when
					   the library was built without libzstd) */
};

struct fl_snapshot_writer_opts {
	size_t sz;			/* sizeof(struct fl_snapshot_writer_opts) */
	uint32_t flags;			/* FL_SNAPSHOT_* */
	int zstd_level;			/* 0: zstd's default */
	const uint8_t *parent_id;	/* 16 bytes: an incremental snapshot over the snapshot
					   with that id; NULL: a full snapshot */
};

/* What fl_snapshot_writer_mark() records for pages the program no longer has. */
enum fl_snapshot_mark {
	FL_SNAPSHOT_MARK_ZERO = 1,	/* zero pages (discarded private anonymous memory) */
	FL_SNAPSHOT_MARK_ABSENT = 2,	/* no memory there at the snapshot instant (unmapped);
					   restored as zero pages, reported apart */
};

/*
 * fl_snapshot_writer_create - create the snapshot file @path (O_EXCL: an
 * existing file is -EEXIST) and a writer for it. @o may be NULL (a full,
 * uncompressed snapshot). Until fl_snapshot_writer_finish() succeeds the
 * file has no valid header and every reader refuses it.
 * Returns 0, -EINVAL, -ENOMEM, -EOPNOTSUPP or open(2)'s -errno.
 * Thread safety: any thread.
 */
FL_API int fl_snapshot_writer_create(const char *path, const struct fl_snapshot_writer_opts *o,
				     struct fl_snapshot_writer **ret);

/*
 * fl_snapshot_writer_add_region - declare a region: @addr and @len multiples
 * of @page_size (a power of two from 4096 to 1 GiB), @len > 0. @addr is
 * recorded (a restore may map elsewhere); @flags are recorded as given.
 * Its index (0, 1, ... in order) goes to *@ret_index (may be NULL). Not
 * after the first put (-EBUSY); at most 4096 regions. An incremental
 * snapshot declares the same regions (count, lengths, page sizes) as its
 * parent, or the chain is refused at restore.
 * Thread safety: not concurrently with other calls on @w.
 */
FL_API int fl_snapshot_writer_add_region(struct fl_snapshot_writer *w, uint64_t addr,
					 uint64_t len, size_t page_size, uint32_t flags,
					 uint32_t *ret_index);

/*
 * fl_snapshot_writer_put - save the bytes of [off, off+len) of region
 * @region (multiples of its page size). @data NULL: those pages are zero
 * pages (so are pages of @data that are all zeros). The bytes are written
 * (or copied) before it returns. Each page at most once: a page already
 * put or marked is -EEXIST, and then nothing of this call is saved.
 * A write error (-ENOSPC, -EIO) is sticky: every later call and finish
 * return it.
 * Thread safety: any number of threads at once, in any order.
 */
FL_API int fl_snapshot_writer_put(struct fl_snapshot_writer *w, uint32_t region, uint64_t off,
				  const void *data, size_t len);

/*
 * fl_snapshot_writer_mark - record [off, off+len) of @region as
 * FL_SNAPSHOT_MARK_ZERO or FL_SNAPSHOT_MARK_ABSENT (@kind) instead of
 * putting it. Same rules as put (-EEXIST for a page already saved).
 * Thread safety: as put.
 */
FL_API int fl_snapshot_writer_mark(struct fl_snapshot_writer *w, uint32_t region, uint64_t off,
				   size_t len, uint32_t kind);

/*
 * fl_snapshot_writer_finish - write the page index and the header, fsync,
 * store the snapshot's 16-byte id in @ret_id (may be NULL), and destroy the
 * writer, whatever the result (on failure the file is removed). Pages never
 * put nor marked: in an incremental snapshot they are the parent's; in a
 * full one they are an error (-EINVAL, logged). No put may still be running.
 * Returns 0, -EINVAL, or the write error.
 */
FL_API int fl_snapshot_writer_finish(struct fl_snapshot_writer *w, uint8_t ret_id[16]);

/* Abandon the snapshot: the partial file is removed. Accepts NULL. */
FL_API void fl_snapshot_writer_destroy(struct fl_snapshot_writer *w);

/* ------------------------------------------------------------------ reader */

/* An open snapshot: one file, or a chain of incremental files over a full one. Opaque. */
struct fl_snapshot;

enum fl_snapshot_open_flags {
	FL_SNAPSHOT_OPEN_ALONE = 1u << 0,	/* an incremental file alone, without looking for
						   its parents: info and verify work, reads of
						   pages it does not hold are -ENODATA */
	FL_SNAPSHOT_OPEN_DIRECT = 1u << 1,	/* read uncompressed pages with O_DIRECT (when
						   buffer, offset and length are 4096-aligned),
						   past the page cache; -EOPNOTSUPP where the
						   file system has no O_DIRECT */
};

struct fl_snapshot_open_opts {
	size_t sz;			/* sizeof(struct fl_snapshot_open_opts) */
	uint32_t flags;			/* FL_SNAPSHOT_OPEN_* */
	/*
	 * The older files of the chain, NULL-terminated, in any order. NULL:
	 * each parent is looked for by its id among the files in the directory
	 * of @path.
	 */
	const char *const *parents;
};

/*
 * fl_snapshot_open - open the snapshot @path, and, if it is incremental, its
 * parents down to a full snapshot. Everything but the pages is checked (the
 * header, tables and index of every file, that each parent is the one named
 * and has the same regions); a file or chain that fails is refused with a
 * logged reason (-EINVAL; -ENOENT for a parent not found). @o may be NULL.
 * Returns 0, -EINVAL, -ENOENT, -ENOMEM, -EOPNOTSUPP (zstd in a library
 * without it), or open(2)'s -errno. Thread safety: any thread.
 */
FL_API int fl_snapshot_open(const char *path, const struct fl_snapshot_open_opts *o,
			    struct fl_snapshot **ret);

/* Close. Stores made from it keep what they need. Accepts NULL. */
FL_API void fl_snapshot_close(struct fl_snapshot *s);

enum fl_snapshot_info_flags {
	FL_SNAPSHOT_INFO_INCREMENTAL = 1u << 0,	/* the newest file is incremental */
	FL_SNAPSHOT_INFO_ZSTD = 1u << 1,	/* some file of the chain is compressed */
};

struct fl_snapshot_info {
	size_t sz;			/* sizeof(struct fl_snapshot_info), set by the caller */
	uint8_t id[16];			/* the newest file's */
	uint8_t parent_id[16];		/* its parent's (zeros for a full snapshot) */
	uint32_t flags;			/* FL_SNAPSHOT_INFO_* */
	uint32_t regions;
	uint32_t chain;			/* files opened: 1 + parents */
	uint64_t file_size;		/* the newest file's */
	uint64_t created_ns;		/* when it was finished, CLOCK_REALTIME */
};

/* The snapshot's header facts. Returns 0 or -EINVAL. Thread safety: any thread. */
FL_API int fl_snapshot_info(const struct fl_snapshot *s, struct fl_snapshot_info *ret);

struct fl_snapshot_region_info {
	size_t sz;			/* sizeof(struct fl_snapshot_region_info), set by the caller */
	uint64_t addr, len, page_size;
	uint32_t flags;
	/* Pages of the newest file by kind (they add up to len / page_size). */
	uint64_t pages_data;		/* stored (compressed or not) */
	uint64_t pages_zero;
	uint64_t pages_absent;
	uint64_t pages_parent;		/* not in the newest file: its parents' */
	/* The same over the whole chain (what a restore gives). */
	uint64_t chain_data, chain_zero, chain_absent;
};

/* Region @region's facts. Returns 0 or -EINVAL. Thread safety: any thread. */
FL_API int fl_snapshot_region_info(const struct fl_snapshot *s, uint32_t region,
				   struct fl_snapshot_region_info *ret);

/*
 * fl_snapshot_read - the pages [off, off+len) of region @region as the
 * chain holds them, read like a store (fl_store_read(3)): @page_size a
 * power of two, at least the region's page size; off and len multiples of
 * it; bit i of @holes (zeroed by the caller, len/page_size bits) set for a
 * page that is all zero or absent pages, whose bytes are then not written.
 * A page whose CRC fails, or that cannot be read or decompressed, is -EIO
 * (the whole call fails). Async-signal-safe. Thread safety: any thread.
 */
FL_API int fl_snapshot_read(struct fl_snapshot *s, uint32_t region, uint64_t off, void *buf,
			    size_t len, size_t page_size, uint64_t *holes);

/*
 * fl_snapshot_verify - read every stored page of every file of the chain
 * and check its CRC (and each zstd chunk). Each bad page is logged (up to
 * 20 lines); their number goes to *@ret_bad (may be NULL). Returns 0 if
 * all are good, -EIO if any is bad, -ENOMEM. Thread safety: any thread.
 */
FL_API int fl_snapshot_verify(struct fl_snapshot *s, uint64_t *ret_bad);

/*
 * fl_snapshot_store - a read-only store over region @region of @s: its size
 * is the region's length, zero and absent pages are holes (installed with
 * ZEROPAGE), a page that fails (CRC, read error, corrupt chunk) is -EIO for
 * the read that covers it, so the pager poisons it, never installs it.
 * Serves regions whose page size is at least the snapshot region's. The
 * store holds a reference: @s may be closed first. Its read is reentrant
 * and async-signal-safe (SIGBUS mode works). Returns 0, -EINVAL, -ENOMEM.
 */
FL_API int fl_snapshot_store(struct fl_snapshot *s, uint32_t region, struct fl_store **ret);

struct fl_store_snapshot_opts {
	size_t sz;			/* sizeof(struct fl_store_snapshot_opts) */
	uint32_t region;		/* which region the store serves (0: the first) */
	uint32_t flags;			/* FL_SNAPSHOT_OPEN_DIRECT (not ALONE) */
	const char *const *parents;	/* as in fl_snapshot_open_opts */
};

/*
 * fl_store_snapshot_open - fl_snapshot_open() then fl_snapshot_store() for
 * one region: a store that restores it lazily. @o may be NULL (region 0,
 * parents found by id). Returns as those two.
 */
FL_API int fl_store_snapshot_open(const char *path, const struct fl_store_snapshot_opts *o,
				  struct fl_store **ret);

/* --------------------------------------------------------- live snapshots */

struct fl_region;

/*
 * A live snapshot (src/snapshot/live.c): a point-in-time image of a set of
 * memory ranges, taken while the program's threads keep running. At the
 * instant every range is write-protected; a writer thread then saves the
 * pages; a thread that writes a page not yet saved waits until that page
 * is saved (copy before write). With FL_SNAPSHOT_LIVE_TRACK the pages
 * written after a snapshot are tracked, and the next one can be
 * incremental: only those pages. See faultline(7), "Snapshot consistency".
 */
struct fl_snapshot_live;

/* One range to snapshot: plain memory of this process, or a pager region. */
struct fl_snapshot_range {
	void *addr;			/* page-aligned start (NULL with @region) */
	size_t len;			/* bytes, a multiple of the page size */
	enum fl_mem_type mem;		/* ANON (private), SHMEM (memfd/shmem, shared) or
					   HUGETLB (hugetlbfs memfd, shared) */
	size_t page_size;		/* 0: the base page size (2 MiB for HUGETLB) */
	/*
	 * A pager region instead of addr/len/mem/page_size (THREADS or LOOP
	 * pager). Its pages not present at the instant are saved from its
	 * store: the snapshot holds the store's data there, never zeros;
	 * pages the program discarded are zeros. While a snapshot needs it,
	 * the pager installs the region's pages write-protected (copying
	 * where it would move them, and zeros instead of the zero page).
	 */
	struct fl_region *region;
	uint32_t flags;			/* recorded as the snapshot region's flags */
};

enum fl_snapshot_live_flags {
	/*
	 * Track the pages written after each snapshot, for incremental ones:
	 * with synchronous write-protect faults (one per page written after an
	 * instant). UFFD_FEATURE_WP_ASYNC cannot serve it: see
	 * fl_snapshot_live_create(3), "Incremental snapshots and WP_ASYNC".
	 */
	FL_SNAPSHOT_LIVE_TRACK = 1u << 0,
	/*
	 * Do without UFFD_FEATURE_WP_UNPOPULATED (6.4) even where the kernel
	 * has it: private anonymous pages never touched are mapped (to the
	 * shared zero page) before each instant instead. For tests; it is
	 * what kernels before 6.4 get.
	 */
	FL_SNAPSHOT_LIVE_NO_UNPOPULATED = 1u << 1,
};

struct fl_snapshot_live_opts {
	size_t sz;			/* sizeof(struct fl_snapshot_live_opts) */
	uint32_t flags;			/* FL_SNAPSHOT_LIVE_* */
};

/*
 * fl_snapshot_live_create - get @n ranges ready for live snapshots:
 * register them for write-protect faults (plain memory on a userfaultfd of
 * its own, pager regions on their pager's) and start the thread that
 * handles those faults ("fl-snap"). Nothing is protected until the first
 * fl_snapshot_live_take(). The ranges must not overlap, and must stay
 * registered with nothing else (-EBUSY). Pager regions must outlive the
 * object.
 * Returns 0, -EINVAL (logged), -EBUSY, -EOPNOTSUPP (no write-protect
 * support for that memory here, or a pager region that cannot be
 * watched), -ENOSYS/-EPERM (as fl_uffd_open; -EPERM also when only a
 * user-mode-only userfaultfd is available: the kernel's writes into
 * protected memory, as by read(2), would fail with EFAULT), -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_snapshot_live_create(const struct fl_snapshot_range *ranges, size_t n,
				   const struct fl_snapshot_live_opts *opts,
				   struct fl_snapshot_live **ret);

enum fl_snapshot_take_flags {
	/*
	 * Save only the pages written (or discarded) since the last snapshot
	 * instant: needs FL_SNAPSHOT_LIVE_TRACK and a previous snapshot that
	 * completed; @w must have been created with that snapshot's id as
	 * parent_id.
	 */
	FL_SNAPSHOT_TAKE_INCREMENTAL = 1u << 0,
};

/*
 * fl_snapshot_live_take - take a snapshot into @w, which must be fresh
 * (no region added yet): the ranges are added to it in order (region i is
 * range i). The instant is when every range is write-protected: threads
 * that write during it wait until it ends (the pause); the call returns
 * once it has passed, and a writer thread ("fl-snap-writer") saves the
 * pages. @w is borrowed until fl_snapshot_live_wait() returns 0 or an
 * error; then the caller finishes (or destroys) it.
 * Returns 0, -EBUSY (a snapshot is in progress), -EINVAL (logged), or the
 * error of the writer or the kernel (nothing was protected then).
 * Thread safety: any thread, one call at a time.
 */
FL_API int fl_snapshot_live_take(struct fl_snapshot_live *s, struct fl_snapshot_writer *w,
				 uint32_t flags);

/*
 * fl_snapshot_live_wait - wait until every page of the snapshot in progress
 * is saved, at most @timeout_ms milliseconds (-1: unbounded).
 * Returns 0 (saved; also with no snapshot in progress), -ETIMEDOUT, or the
 * first error that made the snapshot incomplete (the writer's put, or
 * reading the memory); the program's threads were released either way.
 * Thread safety: any thread.
 */
FL_API int fl_snapshot_live_wait(struct fl_snapshot_live *s, int timeout_ms);

struct fl_snapshot_live_stats {
	size_t sz;			/* the caller sets sizeof; on return, the bytes filled */
	uint64_t snapshots;		/* takes that completed */
	uint64_t pause_ns;		/* the last instant: write-protecting every range */
	uint64_t duration_ns;		/* the last snapshot, take to its last page saved */
	uint64_t pages;			/* pages the last snapshot saved (put) */
	uint64_t pages_written;		/* of which saved first because a thread wrote them */
	uint64_t pages_store;		/* of which read from a pager region's store */
	uint64_t pages_zero;		/* of which zero pages (discarded before the instant) */
	uint64_t pages_discarded;	/* discarded by the program after the instant, before
					   they were saved: recorded as zero pages */
	uint64_t pages_unmapped;	/* unmapped (or moved away) before they were saved:
					   recorded absent */
	uint64_t wp_faults;		/* write-protect faults handled, since create */
	uint64_t write_wait_max_ns;	/* the longest a write waited for its page to be saved */
};

/* The counters. Returns 0 or -EINVAL. Thread safety: any thread. */
FL_API int fl_snapshot_live_stats(const struct fl_snapshot_live *s,
				  struct fl_snapshot_live_stats *ret);

/*
 * fl_snapshot_live_destroy - wait for a snapshot in progress to end (it
 * still completes), unprotect and unregister the ranges, restore the pager
 * regions as they were, and free. Accepts NULL.
 * Thread safety: no other call on @s may run.
 */
FL_API void fl_snapshot_live_destroy(struct fl_snapshot_live *s);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_SNAPSHOT_H */
