/* SPDX-License-Identifier: MIT */
/* The snapshot file format's constants and records (doc/snapshot-format.md; never installed). */
#ifndef FL_SNAPSHOT_FORMAT_H
#define FL_SNAPSHOT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FL__SNAP_MAGIC "FLSNAP\r\n"
#define FL__SNAP_VERSION 1u
#define FL__SNAP_HEADER_SIZE 4096u	/* bytes reserved for the header at offset 0 */
#define FL__SNAP_HEADER_USED 128u	/* of which the fields use these (the CRC is the last 4) */
#define FL__SNAP_DATA_ALIGN (2u << 20)	/* each region's data starts on a 2 MiB boundary */
#define FL__SNAP_MAX_REGIONS 4096u
#define FL__SNAP_MIN_PAGE 4096u
#define FL__SNAP_MAX_PAGE (1ull << 30)
#define FL__SNAP_REGION_SIZE 64u	/* bytes of a region table entry */
#define FL__SNAP_ENTRY_SIZE 16u		/* bytes of a page index entry */
#define FL__SNAP_CHUNK_SIZE 24u		/* bytes of a chunk table entry */
#define FL__SNAP_CHUNK_RAW (256u << 10)	/* a zstd chunk holds up to this many bytes of pages */

/* Header flags. */
#define FL__SNAP_F_INCREMENTAL 1u
#define FL__SNAP_F_ZSTD 2u
#define FL__SNAP_F_ALL (FL__SNAP_F_INCREMENTAL | FL__SNAP_F_ZSTD)

/* Page kinds in the index. */
enum fl__snap_kind {
	FL__SNAP_PARENT = 0,	/* not in this file: the parent's page (incremental only) */
	FL__SNAP_DATA = 1,	/* uncompressed at the region's data_off + page * page_size */
	FL__SNAP_ZERO = 2,	/* a zero page: no bytes stored */
	FL__SNAP_ABSENT = 3,	/* no memory there at the snapshot instant: restored as zeros */
	FL__SNAP_ZSTD = 4,	/* in a zstd chunk */
	FL__SNAP_KIND_MAX = 4,
};

/* The header, decoded. */
struct fl__snap_header {
	uint32_t version;
	uint32_t header_size;
	uint32_t flags;
	uint32_t region_count;
	uint8_t id[16];
	uint8_t parent_id[16];
	uint64_t region_table_off;
	uint64_t chunk_table_off;
	uint64_t chunk_count;
	uint64_t index_off;
	uint64_t index_count;
	uint64_t file_size;
	uint64_t created_ns;	/* CLOCK_REALTIME at finish, nanoseconds */
	uint32_t region_table_crc;
	uint32_t chunk_table_crc;
	uint32_t index_crc;
};

struct fl__snap_region {
	uint64_t addr;
	uint64_t len;
	uint64_t page_size;
	uint32_t flags;
	uint64_t data_off;	/* file offset of page 0 (uncompressed layout); 0 in zstd files */
	uint64_t first_entry;	/* its first page's index entry */
	uint64_t pages;		/* len / page_size */
};

struct fl__snap_entry {
	uint32_t kind;		/* enum fl__snap_kind */
	uint32_t crc;		/* CRC32C of the page's bytes (DATA, ZSTD) */
	uint32_t chunk;		/* ZSTD: the chunk */
	uint32_t slot;		/* ZSTD: the page's index within the chunk */
};

struct fl__snap_chunk {
	uint64_t off;		/* file offset of the compressed bytes */
	uint32_t clen;		/* compressed length */
	uint32_t rlen;		/* decompressed length: whole pages */
	uint32_t crc;		/* CRC32C of the compressed bytes */
};

/* Encoders and decoders (format.c). Encoders write exactly the record's size. */
void fl__snap_header_encode(uint8_t out[FL__SNAP_HEADER_USED], const struct fl__snap_header *h);
/* 0, or -EINVAL with *why set to a static message. */
int fl__snap_header_decode(const uint8_t in[FL__SNAP_HEADER_USED], struct fl__snap_header *h,
			   const char **why);
void fl__snap_region_encode(uint8_t *out, const struct fl__snap_region *r);
void fl__snap_region_decode(const uint8_t *in, struct fl__snap_region *r);
void fl__snap_entry_encode(uint8_t *out, const struct fl__snap_entry *e);
void fl__snap_entry_decode(const uint8_t *in, struct fl__snap_entry *e);
void fl__snap_chunk_encode(uint8_t *out, const struct fl__snap_chunk *c);
void fl__snap_chunk_decode(const uint8_t *in, struct fl__snap_chunk *c);

/* Whether @p (@n bytes, a multiple of 8) is all zeros. */
bool fl__snap_is_zero(const void *p, size_t n);

#endif /* FL_SNAPSHOT_FORMAT_H */
