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

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_SNAPSHOT_H */
