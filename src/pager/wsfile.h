/* SPDX-License-Identifier: MIT */
/*
 * Working-set and loading-set files (doc/working-set-format.md): parsing
 * and encoding only, no I/O, so that the fuzz target reaches every check.
 */
#ifndef FL_PAGER_WSFILE_H
#define FL_PAGER_WSFILE_H

#include <stddef.h>
#include <stdint.h>

#define FL__WS_MAGIC "FLWORKST"
#define FL__LS_MAGIC "FLLOADST"
#define FL__WS_VERSION 1u
#define FL__WS_HEADER 64u
#define FL__LS_ALIGN 4096u
/* Page sizes a file may name: powers of two from 4 KiB to 1 GiB. */
#define FL__WS_MIN_PAGE 4096u
#define FL__WS_MAX_PAGE (1u << 30)

struct fl__ws_info {
	uint64_t page_size;
	uint64_t region_len;	/* bytes */
	uint64_t count;		/* entries */
	uint8_t id[16];
	const uint8_t *entries;	/* count little-endian u64 page indices, inside the parsed buffer */
};

struct fl__ls_info {
	uint64_t page_size;
	uint64_t count;
	uint8_t id[16];
	uint64_t data_off;	/* file offset of the first page's data */
	const uint8_t *crcs;	/* count little-endian u32 CRC32C, inside the parsed buffer */
};

/*
 * Parse a whole working-set file of @len bytes. Returns 0, or -EINVAL with
 * *@why set to a static reason (bad magic, version, sizes, CRC, an entry
 * out of range or repeated). @seen: scratch of region_len/page_size bits,
 * zeroed, for the repeat check; NULL to skip it (the caller then cannot
 * trust entries to be unique).
 */
int fl__ws_parse(const void *buf, size_t len, struct fl__ws_info *ret, uint64_t *seen,
		 const char **why);
/* The index of entry @i of a parsed file. */
uint64_t fl__ws_entry(const struct fl__ws_info *ws, uint64_t i);

/*
 * Parse the head of a loading-set file: @buf holds its first @len bytes
 * (at least FL__WS_HEADER; the CRC table follows). @file_size: the file's
 * size, which must hold every page. Returns 0; -EAGAIN with *@need set
 * when the head needs more bytes; -EINVAL with *@why.
 */
int fl__ls_parse(const void *buf, size_t len, uint64_t file_size, struct fl__ls_info *ret,
		 size_t *need, const char **why);

/* Encode a working-set header for @count entries already at @buf + FL__WS_HEADER. */
void fl__ws_encode(void *buf, uint64_t page_size, uint64_t region_len, uint64_t count,
		   const uint8_t id[16]);
/* Encode a loading-set head (header and CRC table, @crcs already at @buf + FL__WS_HEADER). */
void fl__ls_encode(void *buf, uint64_t page_size, uint64_t count, const uint8_t id[16],
		   uint64_t data_off);
/* The data offset of a loading set of @count pages. */
uint64_t fl__ls_data_off(uint64_t count);

#endif /* FL_PAGER_WSFILE_H */
