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
	uint32_t flags;			/* FL_SNAPSHOT_OPEN_* (not ALONE) */
	const char *const *parents;	/* as in fl_snapshot_open_opts */
};

/*
 * fl_store_snapshot_open - fl_snapshot_open() then fl_snapshot_store() for
 * one region: a store that restores it lazily. @o may be NULL (region 0,
 * parents found by id). Returns as those two.
 */
FL_API int fl_store_snapshot_open(const char *path, const struct fl_store_snapshot_opts *o,
				  struct fl_store **ret);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_SNAPSHOT_H */
