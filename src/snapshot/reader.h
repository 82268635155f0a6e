/* SPDX-License-Identifier: MIT */
/* The snapshot reader's internals: the parser (fuzzed) and page reads (never installed). */
#ifndef FL_SNAPSHOT_READER_H
#define FL_SNAPSHOT_READER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot/format.h"

/* Where a parsed file's bytes come from: a descriptor, or memory (the fuzz target). */
struct fl__snap_src {
	int fd;			/* -1: read from mem */
	int dfd;		/* the same file with O_DIRECT, for aligned data reads; or -1 */
	const uint8_t *mem;
	uint64_t size;		/* the file's size */
};

/* Scratch memory for one zstd chunk: compressed bytes, decompressed bytes, a context. */
struct fl__snap_scratch {
	atomic_flag busy;
	uint8_t *cbuf, *rbuf;
	void *dctx;
	size_t dctx_size;
	size_t map_len;		/* all three in one mapping of this size */
};

#define FL__SNAP_SCRATCH 4

/* One parsed file. */
struct fl__snap_file {
	struct fl__snap_src src;
	char *name;			/* for messages */
	struct fl__snap_header h;
	struct fl__snap_region *regions;
	struct fl__snap_entry *entries;	/* index_count */
	struct fl__snap_chunk *chunks;	/* chunk_count */
	uint32_t max_clen, max_rlen;
	struct fl__snap_scratch scratch[FL__SNAP_SCRATCH];
};

/* Parser flags. */
#define FL__SNAP_PARSE_NO_CRC 1u	/* skip the tables' CRCs (fuzzing reaches past them) */

/*
 * Parse and check everything but the pages (doc/snapshot-format.md, "What a
 * reader checks"). On failure logs "@name: why" and returns -EINVAL (-ENOMEM,
 * or the read error); @f is then empty and the descriptors are still the
 * caller's. On success @f owns them (fl__snap_file_free closes them).
 */
int fl__snap_parse(const struct fl__snap_src *src, const char *name, uint32_t flags,
		   struct fl__snap_file *f);
void fl__snap_file_free(struct fl__snap_file *f);

/*
 * Read the pages [pg, pg+n) of region @r as this file holds them, into
 * @buf (n * page_size bytes): DATA and ZSTD pages checked against their
 * CRC; the kinds go to @kinds (n bytes; may be NULL); ZERO and ABSENT pages
 * are not written unless @zero_fill; PARENT pages are not written. Returns 0
 * or -EIO (a page failed its CRC, could not be read or decompressed: in
 * *@ret_bad the first such page's index from @pg, if ret_bad is not NULL).
 * Async-signal-safe: pread, memcpy, CRC, and zstd in preallocated scratch
 * (or a fresh mapping when all are busy; without memory for one, it waits
 * for a buffer: a page whose data is there never fails for want of memory).
 */
int fl__snap_read_pages(struct fl__snap_file *f, uint32_t r, uint64_t pg, uint64_t n,
			uint8_t *buf, uint8_t *kinds, bool zero_fill, uint64_t *ret_bad);

static inline const struct fl__snap_entry *fl__snap_entry_of(const struct fl__snap_file *f,
							     uint32_t r, uint64_t pg)
{
	return &f->entries[f->regions[r].first_entry + pg];
}

#endif /* FL_SNAPSHOT_READER_H */
