/* SPDX-License-Identifier: MIT */
/* Declarations shared by the snapshot sources (never installed). */
#ifndef FL_SNAPSHOT_INT_H
#define FL_SNAPSHOT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* zstd (zstd.c): stubs returning -EOPNOTSUPP when built without libzstd. */
bool fl__snap_zstd_available(void);
/* The largest compressed size of @n bytes. */
size_t fl__snap_zstd_bound(size_t n);
/* Compress @n bytes of @src into @dst (@cap bytes): 0 and *ret_len, or -EIO/-EOPNOTSUPP. */
int fl__snap_zstd_compress(void *dst, size_t cap, const void *src, size_t n, int level,
			   size_t *ret_len);
/*
 * Decompress @clen bytes of @src into exactly @rlen bytes at @dst: 0, or
 * -EIO if the frame is corrupt or does not decompress to exactly @rlen.
 * Async-signal-safe: uses no heap (a context in @ctx_mem, fl__snap_zstd_dctx_size() bytes).
 */
size_t fl__snap_zstd_dctx_size(void);
int fl__snap_zstd_decompress(void *ctx_mem, size_t ctx_size, void *dst, size_t rlen,
			     const void *src, size_t clen);

/*
 * Whether region @i of writer @w was declared with exactly these values
 * and no page was put yet (writer.c): a live take refused with EAGAIN
 * leaves its regions declared, and a retry with the same writer reuses them.
 */
struct fl_snapshot_writer;
bool fl__snap_writer_has_region(const struct fl_snapshot_writer *w, uint32_t i, uint64_t addr,
				uint64_t len, size_t page_size, uint32_t flags);
/* How many regions writer @w has declared. */
uint32_t fl__snap_writer_nregions(const struct fl_snapshot_writer *w);

#endif /* FL_SNAPSHOT_INT_H */
